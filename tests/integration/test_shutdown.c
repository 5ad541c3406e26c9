/*
 * The life of the process at its ends (issue 13 item 3): a shutdown while the database is slow
 * and a start-up that fails half-way. A real `omnisync run`, a real PostgreSQL, the fake Omnidesk.
 *
 * - A claim (or a purge guard reservation) still running when shutdown_timeout passes is answered
 * ("closing") after the dispatcher began to close: the late answer must be honoured as such, not
 * drive a drain that reads freed recorder state (it aborted in json-c, SIGABRT instead of exit 0).
 * - A health endpoint that cannot bind stops the start-up: exit 1, one log line saying so, and
 *   everything started before it is closed again (under ASan: no leak report).
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc omnisync_daemon;

/* Replaces omnisync.claim_batch (the daemon's claim) by a wrapper that sleeps while
 * public.slow_claim has a row. Done before the daemon starts: it prepares its claim statement
 * against the function's name at connect. */
static void install_slow_claim(void)
{
    scenario_exec(&sc, "CREATE TABLE public.slow_claim (seconds integer NOT NULL)");
    scenario_exec(&sc, "ALTER FUNCTION omnisync.claim_batch(integer, bigint, text, integer, "
                       "text[], integer, integer) RENAME TO claim_real");
    scenario_exec(
        &sc, "CREATE FUNCTION omnisync.claim_batch(p_limit integer, p_lease_ms bigint, "
             "p_process text, p_per_customer integer, p_sources text[], p_scan integer, "
             "p_move integer) "
             "RETURNS TABLE (id bigint, head_id bigint, source text, brand_id bigint, "
             "primary_id text, op text, old_data text, new_data text, attempts integer, "
             "orphaned boolean, created_epoch double precision, sync text, "
             "captured_left boolean, passed_over boolean) "
             "LANGUAGE plpgsql AS $$ BEGIN "
             "PERFORM pg_sleep(coalesce((SELECT max(seconds) FROM public.slow_claim), 0)); "
             "RETURN QUERY SELECT * FROM omnisync.claim_real(p_limit, p_lease_ms, p_process, "
             "p_per_customer, p_sources, p_scan, p_move); END $$");
}

static long long sleeping_claims(void)
{
    return pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_stat_activity "
                                    "WHERE application_name = 'omnisync run' AND state = 'active' "
                                    "AND wait_event = 'PgSleep' "
                                    "AND datname = current_database()");
}

START_TEST(test_slow_claim_at_shutdown_exits_0)
{
    ck_assert_int_eq(scenario_setup(&sc, "[delivery]\nshutdown_timeout = 1s\n", NULL), 0);
    install_slow_claim();
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    scenario_exec(&sc, "INSERT INTO public.slow_claim VALUES (60)");
    /* A change rings the doorbell: the claim it starts sleeps in the database. */
    scenario_exec(&sc, "INSERT INTO public.customers (customer_no, first_name, email) "
                       "VALUES ('S1', 'Slow', 's1@example.com')");
    ck_assert_msg(WAIT_UNTIL(sleeping_claims() == 1, 15000), "the slow claim did not start");
    ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGTERM), 0);
    /* shutdown_timeout (1 s), then 2 s for aborted requests, then the close. */
    int code = proc_wait(&omnisync_daemon, 20000);
    if (code != 0)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 40);
    ck_assert_msg(code == 0, "omnisync run exited %d after SIGTERM during a slow claim", code);
    ck_assert(!proc_stderr_contains(&omnisync_daemon, "ERROR: AddressSanitizer"));
    ck_assert(!proc_stderr_contains(&omnisync_daemon, "ERROR: LeakSanitizer"));
    proc_free(&omnisync_daemon);
    scenario_exec(&sc, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                       "WHERE wait_event = 'PgSleep' AND pid <> pg_backend_pid()");
    scenario_teardown(&sc);
}
END_TEST

/* The purge guard's reservation, made slow the same way (it runs as a plain statement). */
static void install_slow_reserve(void)
{
    scenario_exec(&sc, "CREATE TABLE public.slow_reserve (seconds integer NOT NULL)");
    scenario_exec(&sc, "ALTER FUNCTION omnisync.reserve_purge(bigint, integer, text) "
                       "RENAME TO reserve_purge_real");
    scenario_exec(&sc, "CREATE FUNCTION omnisync.reserve_purge(p_outbox_id bigint, "
                       "p_per_hour integer, p_process text) RETURNS boolean LANGUAGE plpgsql AS "
                       "$$ BEGIN "
                       "PERFORM pg_sleep(coalesce((SELECT max(seconds) FROM public.slow_reserve), "
                       "0)); RETURN omnisync.reserve_purge_real(p_outbox_id, p_per_hour, "
                       "p_process); END $$");
}

START_TEST(test_slow_purge_guard_at_shutdown_exits_0)
{
    ck_assert_int_eq(scenario_setup(&sc, "[delivery]\nshutdown_timeout = 1s\n", NULL), 0);
    install_slow_reserve();
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    scenario_exec(&sc, "INSERT INTO public.customers (customer_no, first_name, email) "
                       "VALUES ('P1', 'Purged', 'p1@example.com')");
    ck_assert_msg(
        WAIT_UNTIL(fake_customer_count(&sc.fake) == 1 && scenario_open_rows(&sc) == 0, 20000),
        "the customer was not delivered");
    scenario_exec(&sc, "INSERT INTO public.slow_reserve VALUES (60)");
    /* The delete is a purge: its reservation sleeps in the database. */
    scenario_exec(&sc, "DELETE FROM public.customers WHERE customer_no = 'P1'");
    ck_assert_msg(WAIT_UNTIL(sleeping_claims() == 1, 15000), "the slow reservation did not start");
    ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGTERM), 0);
    int code = proc_wait(&omnisync_daemon, 20000);
    if (code != 0)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 40);
    ck_assert_msg(code == 0, "omnisync run exited %d after SIGTERM during a slow reservation",
                  code);
    ck_assert(!proc_stderr_contains(&omnisync_daemon, "ERROR: AddressSanitizer"));
    ck_assert(!proc_stderr_contains(&omnisync_daemon, "ERROR: LeakSanitizer"));
    proc_free(&omnisync_daemon);
    scenario_exec(&sc, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                       "WHERE wait_event = 'PgSleep' AND pid <> pg_backend_pid()");
    scenario_teardown(&sc);
}
END_TEST

/* A listening socket on a loopback port the kernel chose; its port in *port. */
static int taken_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

START_TEST(test_health_port_taken_unwinds_start)
{
    int port;
    int fd = taken_port(&port);
    char extra[128];
    snprintf(extra, sizeof(extra), "[health]\nlisten = 127.0.0.1:%d\n", port);
    ck_assert_int_eq(scenario_setup(&sc, extra, NULL), 0);
    ck_assert_int_eq(scenario_spawn_daemon(&sc, &omnisync_daemon), 0);
    int code = proc_wait(&omnisync_daemon, 20000);
    char *err = proc_stderr(&omnisync_daemon);
    if (code != 1 || strstr(err, "Sanitizer") != NULL)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 60);
    ck_assert_msg(code == 1, "omnisync run exited %d, not 1", code);
    /* One line says what failed and what to do; libmicrohttpd's own words stay at debug. */
    ck_assert_msg(proc_count_lines(&omnisync_daemon, "health", "level=error") == 1 &&
                      proc_count_lines(&omnisync_daemon, "level=error", NULL) == 1 &&
                      proc_count_lines(&omnisync_daemon, "health", "level=warn") == 0,
                  "not one line about the health endpoint:\n%.1000s", err);
    ck_assert_msg(strstr(err, "LeakSanitizer") == NULL, "leaks at a failed start (log above)");
    ck_assert_msg(strstr(err, "AddressSanitizer") == NULL, "ASan report (log above)");
    free(err);
    proc_free(&omnisync_daemon);
    close(fd);
    scenario_teardown(&sc);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("shutdown");
    TCase *tc = tcase_create("shutdown");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_slow_claim_at_shutdown_exits_0);
    tcase_add_test(tc, test_slow_purge_guard_at_shutdown_exits_0);
    tcase_add_test(tc, test_health_port_taken_unwinds_start);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
