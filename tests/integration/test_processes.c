/*
 * Failure semantics of processes and connections (issue 6): daemons killed with SIGKILL under
 * load, three daemons sharing one database, leases that must be renewed while a slow API works,
 * PostgreSQL restarted or its connections terminated under load, a shutdown whose requests never
 * answer or whose recorder is stuck behind a lock, and a database that is not there when the
 * daemon starts. After each, the fake Omnidesk must hold exactly the CRM's state with nothing
 * created twice.
 *
 * Load comes from a writer: a forked child with its own connection that commits a stream of
 * inserts, updates and a few deletes for a given time, riding out connection losses. Plain sleeps
 * appear only where time must pass (a random moment to kill at, a writer to get ahead).
 */
#include <check.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scenario.h"
#include "testutil.h"

/* Leases of 3 * 1000 + 5000 = 8 s: rows of a killed daemon come back soon enough to test. */
#define SHORT_LEASE "[omnidesk]\ntimeout_ms = 1000\n"

static struct scenario sc;
static struct proc omnisync_daemon;
static uint64_t test_started_ms;

/* ---- helpers ---- */

/* Keys and personal data never reach a daemon's log, however it ended. */
static void assert_log_clean(struct proc *p)
{
    char *err = proc_stderr(p);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    ck_assert_ptr_null(strstr(err, "@example.com"));
    ck_assert_ptr_null(strstr(err, "+3161"));
    free(err);
}

static void setup(const char *extra, const char *faults)
{
    test_started_ms = testutil_now_ms();
    ck_assert_msg(scenario_setup(&sc, extra, faults) == 0, "scenario setup failed");
}

static void start(const char *extra, const char *faults)
{
    setup(extra, faults);
    ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0, "daemon did not start");
}

static void stop_daemon(struct proc *p, const char *label)
{
    int code = proc_stop(p, 20000);
    if (code != 0)
        proc_dump_tail(p, label, 60);
    ck_assert_msg(code == 0, "%s exited %d after SIGTERM", label, code);
    assert_log_clean(p);
    proc_free(p);
}

/* SIGKILL: no drain, no outcome written, leases left behind. */
static void kill_daemon(struct proc *p)
{
    ck_assert_int_eq(proc_signal(p, SIGKILL), 0);
    ck_assert_int_eq(proc_wait(p, 5000), 128 + SIGKILL);
    assert_log_clean(p);
    proc_free(p);
}

static void finish_scenario(void)
{
    scenario_teardown(&sc);
    fprintf(stderr, "%s: %.1f s\n", tcase_name(), (testutil_now_ms() - test_started_ms) / 1000.0);
}

static void finish(void)
{
    stop_daemon(&omnisync_daemon, "omnisync run");
    finish_scenario();
}

static void assert_in_step(struct proc *p, int timeout_ms)
{
    char why[512];
    if (!scenario_wait_quiet(&sc, timeout_ms)) {
        scenario_dump_outbox(&sc);
        proc_dump_tail(p, "omnisync run", 40);
        ck_abort_msg("outbox not quiet after %d ms: %lld pending rows", timeout_ms,
                     scenario_open_rows(&sc));
    }
    if (scenario_compare(&sc, NULL, why, sizeof(why)) != 0) {
        scenario_dump_outbox(&sc);
        ck_abort_msg("fake and CRM differ: %s", why);
    }
}

/* Reconnects the test's own connection after the server went away. */
static void reconnect(void)
{
    PQreset(sc.conn);
    ck_assert_msg(PQstatus(sc.conn) == CONNECTION_OK, "cannot reconnect: %s",
                  PQerrorMessage(sc.conn));
    pgrig_exec(sc.conn, "SET client_min_messages = warning");
}

/* ---- the writer ---- */

static const char *const writer_names[] = {"Ann", "Bob", "Zoë", "Eve", "José", "Max"};

/*
 * Forks a child that, for `duration_ms`, commits one change every few milliseconds to customers
 * named <prefix>1, <prefix>2, ...: inserts (with email and phone), updates of names and tier,
 * new emails and phones, and at most 20 deletes (well under the purge guard). Statements that
 * fail because the connection went away are not retried: the CRM table is the truth either way.
 * The child dies with the test (PR_SET_PDEATHSIG). Returns its pid.
 */
static pid_t writer_start(const char *prefix, int duration_ms, unsigned seed)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid > 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(3);
    PGconn *c = PQconnectdb(sc.conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        _exit(4);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    srand(seed);
    uint64_t end = testutil_now_ms() + (uint64_t)duration_ms;
    int inserted = 0, deletes = 0, n = 0;
    while (testutil_now_ms() < end) {
        char sql[512];
        int r = rand() % 12, j = inserted > 0 ? 1 + rand() % inserted : 0;
        const char *name = writer_names[rand() % 6];
        n++;
        if (inserted < 10 || r < 4) {
            inserted++;
            snprintf(sql, sizeof(sql),
                     "INSERT INTO customers (customer_no, first_name, last_name, email, phone, "
                     "loyalty_tier) VALUES ('%s%d', '%s', 'Lee', '%s%d@example.com', "
                     "'+3161%07d', 'bronze')",
                     prefix, inserted, name, prefix, inserted, inserted);
        } else if (r < 6) {
            snprintf(sql, sizeof(sql),
                     "UPDATE customers SET loyalty_tier = 't%d' WHERE customer_no = '%s%d'", n,
                     prefix, j);
        } else if (r < 7) {
            snprintf(sql, sizeof(sql),
                     "UPDATE customers SET first_name = '%s', last_name = 'Day' "
                     "WHERE customer_no = '%s%d'",
                     name, prefix, j);
        } else if (r < 9) {
            snprintf(sql, sizeof(sql),
                     "UPDATE customers SET email = '%s%d.%d@example.com' WHERE customer_no = "
                     "'%s%d'",
                     prefix, j, n, prefix, j);
        } else if (r < 10) {
            snprintf(sql, sizeof(sql),
                     "UPDATE customers SET phone = '+3162%07d' WHERE customer_no = '%s%d'", n,
                     prefix, j);
        } else if (r < 11 && deletes < 20) {
            deletes++;
            snprintf(sql, sizeof(sql), "DELETE FROM customers WHERE customer_no = '%s%d'", prefix,
                     j);
        } else {
            snprintf(sql, sizeof(sql),
                     "UPDATE customers SET last_name = 'O''Brien', loyalty_tier = 'gold' "
                     "WHERE customer_no = '%s%d'",
                     prefix, j);
        }
        PGresult *res = PQexec(c, sql);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok && PQstatus(c) != CONNECTION_OK) {
            /* The server restarts or dropped us: try again until it is back. */
            while (testutil_now_ms() < end) {
                testutil_sleep_ms(100);
                PQreset(c);
                if (PQstatus(c) == CONNECTION_OK)
                    break;
            }
            PQclear(PQexec(c, "SET client_min_messages = warning"));
        }
        testutil_sleep_ms(3 + (unsigned)(rand() % 12));
    }
    PQfinish(c);
    _exit(0);
}

static void writer_wait(pid_t pid, int timeout_ms)
{
    int status = 0;
    pid_t got = 0;
    ck_assert(WAIT_UNTIL((got = waitpid(pid, &status, WNOHANG)) != 0, timeout_ms));
    ck_assert_int_eq(got, pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer failed (status %d)",
                  status);
}

static unsigned make_seed(void)
{
    unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8);
    fprintf(stderr, "%s: seed %u\n", tcase_name(), seed);
    return seed;
}

/* Rows leased right now (claimed by some process and not yet recorded). */
static long long leased_rows(void)
{
    return pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE status = 'pending' "
                 "AND locked_until > now()");
}

/* ---- 4. kill -9 under load ---- */

START_TEST(test_kill9_under_load_loses_and_doubles_nothing)
{
    unsigned seed = make_seed();
    srand(seed);
    start(SHORT_LEASE, "{\"latency_ms\": 5, \"jitter_ms\": 40}");
    pid_t writer = writer_start("K", 16000, seed);
    long long leased_at_kills = 0;
    for (int k = 0; k < 5; k++) {
        /* A random moment under load: time has to pass for one to come. */
        testutil_sleep_ms(500 + (unsigned)(rand() % 2000));
        long long leased = leased_rows();
        leased_at_kills += leased;
        fprintf(stderr, "kill %d: %lld rows leased\n", k + 1, leased);
        kill_daemon(&omnisync_daemon);
        testutil_sleep_ms((unsigned)(rand() % 500));
        ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0,
                      "daemon did not start after kill %d", k + 1);
    }
    writer_wait(writer, 30000);
    ck_assert_msg(leased_at_kills > 0,
                  "no kill hit a daemon holding rows: the test proved nothing");
    /* Rows of killed daemons come back after their 8 s lease. */
    assert_in_step(&omnisync_daemon, 90000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "held"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_channels"), 0);
    fprintf(stderr, "kill -9: %lld customers, %lld requests\n", fake_customer_count(&sc.fake),
            fake_stat(&sc.fake, "requests"));
    finish();
}
END_TEST

/* ---- 4b. a dead holder's row released before its lookup ---- */

/*
 * The chaos soak's finding (bench/soak at 0a076bc): a daemon added a customer's new email and was
 * killed while the outcome lingered. After the lease the next holder owed a lookup first (the
 * row was orphaned), but the lookup was answered 429, which releases the row without spending an
 * attempt; the claim after that no longer knew the row had been held, trusted sync_state and
 * added the email again. A lookup still owed now goes to sync_state with the release.
 */
START_TEST(test_dead_holders_row_released_before_lookup_adds_nothing_twice)
{
    start(SHORT_LEASE, NULL);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
                       "VALUES ('L1', 'Ann', 'Lee', 'l1@example.com')");
    assert_in_step(&omnisync_daemon, 20000);
    scenario_exec(&sc, "UPDATE customers SET email = 'l1.new@example.com' WHERE customer_no = 'L1'");
    /* Added at Omnidesk: the plain done outcome lingers (up to 5 s) as the daemon dies. */
    ck_assert(fake_wait_stat(&sc.fake, "by_endpoint.addChannelOnly", 1, 10000) == 0);
    kill_daemon(&omnisync_daemon);
    ck_assert_msg(scenario_open_rows(&sc) == 1, "the outcome was written before the kill: the test "
                                                "proved nothing");
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_429\": 1, \"paths\": [\"search\"]}"), 0);
    ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0, "daemon did not start");
    /* Once the 8 s lease has run out: the lookup the orphaned row owes, refused. */
    ck_assert(fake_wait_stat(&sc.fake, "by_endpoint.search", 1, 30000) == 0);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_429\": 0}"), 0);
    assert_in_step(&omnisync_daemon, 30000);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_channels"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.addChannelOnly"), 1);
    ck_assert_int_ge(fake_stat(&sc.fake, "by_endpoint.search"), 2);
    finish();
}
END_TEST

/* ---- 5. three processes, one killed ---- */

/* The index of the proc whose process name (host:pid:x) holds the most leased rows, or -1. */
static int busiest(struct proc *procs, int n)
{
    char *name = pgrig_query_text(sc.conn, "SELECT locked_by FROM omnisync.outbox "
                                           "WHERE status = 'pending' AND locked_until > now() "
                                           "GROUP BY locked_by ORDER BY count(*) DESC LIMIT 1");
    int found = -1;
    if (name == NULL)
        return -1;
    const char *colon = strchr(name, ':');
    int pid = colon ? atoi(colon + 1) : 0;
    for (int i = 0; i < n; i++) {
        if (procs[i].pid == pid)
            found = i;
    }
    free(name);
    return found;
}

START_TEST(test_three_processes_keep_order)
{
    setup(SHORT_LEASE, "{\"latency_ms\": 2, \"jitter_ms\": 20}");
    struct proc procs[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(scenario_start_daemon(&sc, &procs[i]), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email, loyalty_tier) "
         "SELECT 'P' || i, 'Ann', 'Lee', 'p' || i || '@example.com', 'v00' "
         "FROM generate_series(1, 200) i");
    int killed = -1;
    for (int v = 1; v <= 10; v++) {
        for (int chunk = 0; chunk < 4; chunk++)
            scenario_execf(&sc, "UPDATE customers SET loyalty_tier = 'v%02d' "
                  "WHERE right(customer_no, -1)::int BETWEEN %d AND %d",
                  v, chunk * 50 + 1, chunk * 50 + 50);
        testutil_sleep_ms(50); /* let deliveries interleave with commits */
        if (v == 5) {
            /* Mid-way: kill the process holding the most rows. */
            ck_assert(WAIT_UNTIL((killed = busiest(procs, 3)) >= 0, 5000));
            fprintf(stderr, "three processes: killing one holding %lld leased rows in all\n",
                    leased_rows());
            kill_daemon(&procs[killed]);
        }
    }
    struct proc *alive = &procs[killed == 0 ? 1 : 0];
    assert_in_step(alive, 60000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);

    /* Per customer, the tier values arrive in commit order, and there is one create each. */
    int creates[201];
    scenario_assert_tier_order(&sc, 200, 10, creates);
    for (int k = 1; k <= 200; k++)
        ck_assert_msg(creates[k] == 1, "customer P%d created %d times", k, creates[k]);
    for (int i = 0; i < 3; i++) {
        if (i != killed)
            stop_daemon(&procs[i], "omnisync run");
    }
    finish_scenario();
}
END_TEST

/* ---- 7. a slow API: leases are renewed while requests are in flight ---- */

START_TEST(test_slow_api_leases_are_renewed)
{
    /*
     * timeout_ms 1500: the lease is 3 * 1500 + 5000 = 9.5 s, renewed about every 3.2 s. Each of
     * four customers needs twelve sequential requests of 1.2 s (one create and eleven channels),
     * so a delivery takes about 14 s: longer than the lease it started with. Without renewal the
     * second process would claim the rows when it runs out and send them again.
     */
    setup("[omnidesk]\ntimeout_ms = 1500\n", NULL);
    for (int c = 1; c <= 4; c++) {
        scenario_execf(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
              "VALUES ('L%d', 'Ann', 'Lee', 'l%d.0@example.com')",
              c, c);
        for (int e = 1; e <= 11; e++)
            scenario_execf(&sc, "UPDATE customers SET email = 'l%d.%d@example.com' WHERE customer_no = 'L%d'", c,
                  e, c);
    }
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"latency_ms\": 1200}"), 0);
    struct proc second;
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &second), 0);

    ck_assert_msg(WAIT_UNTIL(leased_rows() == 48, 10000), "the rows were not claimed");
    char *first_lease = pgrig_query_text(sc.conn, "SELECT max(locked_until) FROM omnisync.outbox");
    char *owners = pgrig_query_text(sc.conn, "SELECT string_agg(primary_id || '=' || locked_by, "
                                             "',' ORDER BY primary_id) FROM (SELECT DISTINCT "
                                             "primary_id, locked_by FROM omnisync.outbox) o");
    ck_assert_ptr_nonnull(first_lease);
    ck_assert_ptr_nonnull(owners);
    /* Until the first lease has run out by a second, no pending row's lease ever lapses (a
     * lapsed lease may be claimed by anyone, even by its own process a second time)... */
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT now() > '%s'::timestamptz + interval '1 second'",
             first_lease);
    struct testutil_backoff wait;
    int past = 0, lapsed = 0, samples = 0;
    testutil_backoff_start(&wait, 20000);
    do {
        lapsed += pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE status = 'pending' "
                        "AND locked_until < now()") > 0;
        samples++;
        past = pgrig_query_int(sc.conn, sql) == 1;
    } while (!past && testutil_backoff_sleep(&wait));
    ck_assert_msg(past, "the first lease never ended");
    ck_assert_msg(lapsed == 0, "leases lapsed in %d of %d samples while requests were in flight",
                  lapsed, samples);
    /* ...while the deliveries are still under way: their rows are leased, by the same owners. */
    long long pending = scenario_count_status(&sc, "pending");
    fprintf(stderr, "slow API: %lld rows still pending 1 s after their first lease ended\n",
            pending);
    ck_assert_msg(pending > 0, "the deliveries ended within the lease: the test proved nothing");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE status = 'pending' AND "
                           "(locked_until IS NULL OR locked_until <= now())"),
                     0);
    /* The leases moved forward while the requests were in flight. */
    snprintf(sql, sizeof(sql),
             "SELECT min(locked_until) > '%s'::timestamptz FROM omnisync.outbox "
             "WHERE status = 'pending'",
             first_lease);
    ck_assert_int_eq(pgrig_query_int(sc.conn, sql), 1);
    char *owners_now =
        pgrig_query_text(sc.conn, "SELECT string_agg(primary_id || '=' || locked_by, "
                                  "',' ORDER BY primary_id) FROM (SELECT DISTINCT "
                                  "primary_id, locked_by FROM omnisync.outbox "
                                  "WHERE status = 'pending') o");
    ck_assert_ptr_nonnull(owners_now);
    /* Every customer still pending is held by the process that first claimed it. */
    for (char *tok = strtok(owners_now, ","); tok != NULL; tok = strtok(NULL, ","))
        ck_assert_msg(strstr(owners, tok) != NULL, "a row changed hands: %s (first: %s)", tok,
                      owners);
    free(owners_now);
    free(owners);
    free(first_lease);

    assert_in_step(&omnisync_daemon, 30000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    /* Nothing was sent twice: one create and eleven channels per customer. */
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.create"), 4);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.addChannelOnly"), 44);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_channels"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM (SELECT o.primary_id FROM omnisync.outbox o "
                           "JOIN omnisync.delivery_attempt a ON a.outbox_id = o.id "
                           "GROUP BY o.primary_id HAVING count(DISTINCT a.process) > 1) x"),
                     0);
    stop_daemon(&second, "omnisync run (2nd)");
    finish();
}
END_TEST

/* ---- 6. PostgreSQL restarted, connections terminated ---- */

/* The daemon's three connections: work, listener and recorder. */
#define DAEMON_CONNECTIONS "('omnisync run', 'omnisync listener', 'omnisync recorder')"

static int connections_up(void)
{
    return pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                    "IN " DAEMON_CONNECTIONS) == 3;
}

static int lost_lines(const char *conn)
{
    return proc_count_lines(&omnisync_daemon, "database connection lost", conn);
}

START_TEST(test_database_restart_and_terminated_connections)
{
    unsigned seed = make_seed();
    start(NULL, "{\"latency_ms\": 5, \"jitter_ms\": 20}");
    pid_t writer = writer_start("G", 12000, seed);
    ck_assert(WAIT_UNTIL(fake_customer_count(&sc.fake) >= 20, 20000));

    /* A crash-like restart of the server under load. */
    ck_assert_int_eq(pgrig_restart(sc.pg, "immediate"), 0);
    reconnect();
    ck_assert_msg(WAIT_UNTIL(connections_up(), 30000), "the daemon did not reconnect");
    ck_assert_msg(WAIT_UNTIL(lost_lines("conn=\"omnisync run\"") >= 1 &&
                                 lost_lines("conn=\"omnisync listener\"") >= 1 &&
                                 lost_lines("conn=\"omnisync recorder\"") >= 1,
                             5000),
                  "the log does not name every lost connection (run %d, listener %d, recorder %d)",
                  lost_lines("conn=\"omnisync run\""), lost_lines("conn=\"omnisync listener\""),
                  lost_lines("conn=\"omnisync recorder\""));
    long long requests = fake_stat(&sc.fake, "requests");
    ck_assert_msg(fake_wait_stat(&sc.fake, "requests", requests + 10, 20000) == 0,
                  "delivery did not resume after the restart");

    /* Then every connection is terminated under load. */
    scenario_exec(&sc, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
         "WHERE application_name IN " DAEMON_CONNECTIONS);
    ck_assert_msg(WAIT_UNTIL(lost_lines("conn=\"omnisync run\"") >= 2 &&
                                 lost_lines("conn=\"omnisync listener\"") >= 2 &&
                                 lost_lines("conn=\"omnisync recorder\"") >= 2,
                             10000),
                  "the log does not name every terminated connection");
    ck_assert_msg(WAIT_UNTIL(connections_up(), 30000), "the daemon did not reconnect");

    /* Then the recorder's connection alone, twice: claims and leases carry on over the work
     * connection, and the outcomes the recorder held are written once it is back. */
    for (int k = 3; k <= 4; k++) {
        scenario_exec(&sc, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE application_name = 'omnisync recorder'");
        ck_assert_msg(WAIT_UNTIL(lost_lines("conn=\"omnisync recorder\"") >= k, 10000),
                      "the log does not name the terminated recorder connection");
        ck_assert_msg(WAIT_UNTIL(connections_up(), 30000), "the recorder did not reconnect");
    }

    writer_wait(writer, 30000);
    assert_in_step(&omnisync_daemon, 60000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_channels"), 0);
    finish();
}
END_TEST

/* ---- shutdown deadlines: requests that never answer, outcomes that cannot be written ---- */

START_TEST(test_requests_hanging_at_shutdown)
{
    start("[omnidesk]\ntimeout_ms = 20000\n[delivery]\nshutdown_timeout = 1s\n",
          "{\"p_hang\": 1}");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'H' || i, 'Ann', 'Lee', 'h' || i || '@example.com' FROM generate_series(1, 5) i");
    ck_assert_msg(fake_wait_stat(&sc.fake, "in_flight", 5, 10000) == 0, "the requests did not start");

    /* The deadline aborts them; their rows are released, and the daemon exits cleanly. */
    ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGTERM), 0);
    int code = proc_wait(&omnisync_daemon, 15000);
    if (code != 0)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 30);
    ck_assert_msg(code == 0, "omnisync run exited %d after aborting its requests", code);
    ck_assert(proc_wait_stderr(&omnisync_daemon, "aborting requests still in flight", 1000));
    assert_log_clean(&omnisync_daemon);
    proc_free(&omnisync_daemon);
    ck_assert_int_eq(scenario_count_status(&sc, "pending"), 5);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                              "WHERE locked_by IS NULL AND attempts = 0"),
                     5);

    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_hang\": 0}"), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    assert_in_step(&omnisync_daemon, 30000);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    finish();
}
END_TEST

START_TEST(test_recorder_stuck_at_shutdown)
{
    start(SHORT_LEASE "[delivery]\nshutdown_timeout = 1s\n", NULL);
    /* A transaction holds sync_state against writes: the recorder's statement waits for it;
     * claims, which only read it, do not. */
    PGconn *blocker = PQconnectdb(sc.conninfo);
    ck_assert_int_eq(PQstatus(blocker), CONNECTION_OK);
    ck_assert_int_eq(pgrig_exec(blocker, "BEGIN"), 0);
    ck_assert_int_eq(pgrig_exec(blocker, "LOCK TABLE omnisync.sync_state IN EXCLUSIVE MODE"), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'R' || i, 'Ann', 'Lee', 'r' || i || '@example.com' FROM generate_series(1, 20) i");
    ck_assert_msg(fake_wait_stat(&sc.fake, "by_endpoint.create", 20, 10000) == 0,
                  "the customers were not sent");
    ck_assert_int_eq(scenario_count_status(&sc, "done"), 0);

    /* The shutdown gives up on the outcomes after its deadline and still exits cleanly. */
    ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGTERM), 0);
    int code = proc_wait(&omnisync_daemon, 15000);
    if (code != 0)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 30);
    ck_assert_msg(code == 0, "omnisync run exited %d with its recorder stuck", code);
    ck_assert(proc_wait_stderr(&omnisync_daemon, "outcomes could not be recorded in time", 1000));
    assert_log_clean(&omnisync_daemon);
    proc_free(&omnisync_daemon);
    ck_assert_int_eq(pgrig_exec(blocker, "ROLLBACK"), 0);
    PQfinish(blocker);

    /* Nothing was recorded, nothing is lost: after the lease the rows are delivered again, a
     * lookup first, so nobody is created twice. */
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    assert_in_step(&omnisync_daemon, 60000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 20);
    finish();
}
END_TEST

/* ---- 8b. a batch of outcomes the database refuses ---- */

START_TEST(test_recorder_drops_a_batch_it_cannot_write)
{
    start(SHORT_LEASE, NULL);
    /* record_outcomes fails for every batch until its definition is put back. */
    char *definition = pgrig_query_text(sc.conn, "SELECT pg_get_functiondef("
                                                 "'omnisync.record_outcomes(text, jsonb)'::regprocedure)");
    ck_assert_ptr_nonnull(definition);
    scenario_exec(&sc, "CREATE OR REPLACE FUNCTION omnisync.record_outcomes(p_process text, "
         "p_outcomes jsonb) RETURNS integer LANGUAGE plpgsql AS "
         "$$BEGIN RAISE EXCEPTION 'outcomes refused by the test'; END$$");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'D' || i, 'Ann', 'Lee', 'd' || i || '@example.com' FROM generate_series(1, 10) i");
    ck_assert_msg(fake_wait_stat(&sc.fake, "by_endpoint.create", 10, 10000) == 0,
                  "the customers were not sent");
    ck_assert(proc_wait_stderr(&omnisync_daemon, "dropping the batch", 10000));

    /* Their rows leave this process's lease renewal (which would otherwise keep them for as long
     * as it runs) and say why; nothing is lost. */
    ck_assert_msg(WAIT_UNTIL(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                   "status = 'pending' AND locked_by LIKE '% (outcome not recorded)'") == 10,
                             10000),
                  "the rows of the dropped batches were not marked");
    scenario_exec(&sc, definition);
    free(definition);

    /* After the lease they are claimed again, looked up first (the API has them), not created
     * twice. */
    assert_in_step(&omnisync_daemon, 60000);
    ck_assert_int_eq(scenario_count_status(&sc, "done"), 10);
    ck_assert_int_ge(fake_stat(&sc.fake, "by_endpoint.search"), 10);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.create"), 10);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    assert_log_clean(&omnisync_daemon);
    finish();
}
END_TEST

/* ---- 9. the database unreachable at start ---- */

START_TEST(test_database_unreachable_at_start)
{
    setup(NULL, NULL);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'U' || i, 'Ann', 'Lee', 'u' || i || '@example.com' FROM generate_series(1, 30) i");
    ck_assert_int_eq(pgrig_server_stop(sc.pg, "fast"), 0);
    ck_assert_int_eq(scenario_spawn_daemon(&sc, &omnisync_daemon), 0);
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, "database connection failed", 10000),
                  "no \"database connection failed\" in the log");
    /* It keeps running and keeps trying. */
    ck_assert_msg(
        WAIT_UNTIL(proc_count_lines(&omnisync_daemon, "database connection failed", "attempt=2") >= 1,
                   15000),
        "the daemon did not try again");
    ck_assert_int_eq(proc_wait(&omnisync_daemon, 0), -1);
    ck_assert_int_eq(fake_stat(&sc.fake, "requests"), 0);

    ck_assert_int_eq(pgrig_server_start(sc.pg), 0);
    reconnect();
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, "listening for changes", 60000),
                  "the daemon did not connect once the server was up");
    assert_in_step(&omnisync_daemon, 30000);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 30);
    finish();
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("processes");
    TCase *tc = tcase_create("processes");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_kill9_under_load_loses_and_doubles_nothing);
    tcase_add_test(tc, test_dead_holders_row_released_before_lookup_adds_nothing_twice);
    tcase_add_test(tc, test_three_processes_keep_order);
    tcase_add_test(tc, test_slow_api_leases_are_renewed);
    tcase_add_test(tc, test_database_restart_and_terminated_connections);
    tcase_add_test(tc, test_requests_hanging_at_shutdown);
    tcase_add_test(tc, test_recorder_stuck_at_shutdown);
    tcase_add_test(tc, test_recorder_drops_a_batch_it_cannot_write);
    tcase_add_test(tc, test_database_unreachable_at_start);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
