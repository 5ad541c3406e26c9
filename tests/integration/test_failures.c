/*
 * Failure semantics against the API (issue 6): a real `omnisync run`, a real PostgreSQL and the
 * fake Omnidesk misbehaving on purpose. A fault soak that must still converge exactly once, an
 * outage that must end in delivery (circuit breaker, no attempts spent), a refused API key that
 * pauses delivery until SIGHUP brings the new one, answers the daemon cannot foresee (the API's
 * own cap on channels, HTML error pages) and a reload with errors that keeps the running config.
 *
 * Every wait has a deadline; the only plain sleeps are windows that must pass for the test to
 * mean something (an outage, a paused API), and each is followed by an assertion about it.
 */
#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpget.h"
#include "scenario.h"
#include "testutil.h"

/* The soak's fault mix: 25 % of all requests fail one way or another. */
#define SOAK_FAULTS                                                                                \
    "{\"p_5xx\": 0.1, \"p_429\": 0.05, \"p_lost\": 0.05, \"p_reset\": 0.03, \"p_html502\": 0.02}"
/* The key the API is switched to in the wrong-key test: it must never reach the log either. */
#define ROTATED_KEY "rotated-key-5b1e2d9a"

static struct scenario sc;
static struct proc omnisync_daemon;
static uint64_t test_started_ms;

/* ---- helpers ---- */

static void start(const char *extra, const char *faults)
{
    test_started_ms = testutil_now_ms();
    ck_assert_msg(scenario_setup(&sc, extra, faults) == 0, "scenario setup failed");
    ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0, "daemon did not start");
}

static void finish(void)
{
    int code = proc_stop(&omnisync_daemon, 20000);
    if (code != 0)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 60);
    ck_assert_msg(code == 0, "omnisync run exited %d after SIGTERM", code);
    char *err = proc_stderr(&omnisync_daemon);
    /* Keys and personal data never reach the log. */
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    ck_assert_ptr_null(strstr(err, ROTATED_KEY));
    ck_assert_ptr_null(strstr(err, "@example.com"));
    ck_assert_ptr_null(strstr(err, "+3161"));
    free(err);
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
    fprintf(stderr, "%s: %.1f s\n", tcase_name(), (testutil_now_ms() - test_started_ms) / 1000.0);
}

/* Waits for an empty queue and compares the fake with the CRM; dumps what helps on failure. */
static void assert_in_step(int timeout_ms)
{
    char why[512];
    if (!scenario_wait_quiet(&sc, timeout_ms)) {
        scenario_dump_outbox(&sc);
        proc_dump_tail(&omnisync_daemon, "omnisync run", 40);
        ck_abort_msg("outbox not quiet after %d ms: %lld pending rows", timeout_ms,
                     scenario_open_rows(&sc));
    }
    if (scenario_compare(&sc, NULL, why, sizeof(why)) != 0) {
        scenario_dump_outbox(&sc);
        ck_abort_msg("fake and CRM differ: %s", why);
    }
}

/* Deliveries with a request in flight, from the daemon's /readyz (503 while the key is refused);
 * -1 when it did not answer. */
static long long daemon_in_flight(int port)
{
    static struct http_body b;
    if (http_get(port, "/readyz", &b) == 0)
        return -1;
    const char *p = strstr(b.text, "\"in_flight\"");
    p = p ? strchr(p, ':') : NULL;
    return p ? strtoll(p + 1, NULL, 10) : -1;
}

/* ---- 1. fault soak ---- */

START_TEST(test_fault_soak_converges_exactly_once)
{
    start(NULL, SOAK_FAULTS);
    /* 320 customers with an email and a phone each. */
    scenario_exec(&sc, 
        "INSERT INTO customers (customer_no, first_name, last_name, email, phone, loyalty_tier) "
        "SELECT 'S' || lpad(i::text, 3, '0'), (ARRAY['Ann','Bob','Zoë','José','Ševa'])[1 + i % 5], "
        " (ARRAY['Lee','de Vries','O''Brien','Müller'])[1 + i % 4], 's' || i || '@example.com', "
        " '+3161' || lpad(i::text, 7, '0'), 'bronze' FROM generate_series(1, 320) i");
    /* Let delivery get going, so that most later changes meet customers that exist. */
    ck_assert_msg(WAIT_UNTIL(fake_customer_count(&sc.fake) >= 100, 60000),
                  "fewer than 100 customers created in 60 s under faults");
    scenario_exec(&sc, "UPDATE customers SET last_name = 'Smith' WHERE right(customer_no, 3)::int % 3 = 0");
    scenario_exec(&sc, "UPDATE customers SET loyalty_tier = 'gold' WHERE right(customer_no, 3)::int % 4 = 0");
    scenario_exec(&sc, "UPDATE customers SET email = 'new' || customer_no || '@example.com' "
         "WHERE right(customer_no, 3)::int % 5 = 0");
    scenario_exec(&sc, "UPDATE customers SET phone = '+3162' || lpad(right(customer_no, 3), 7, '0') "
         "WHERE right(customer_no, 3)::int % 6 = 0");
    scenario_exec(&sc, "DELETE FROM customers WHERE right(customer_no, 3)::int % 13 = 0");
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Anna', loyalty_tier = 'silver' "
         "WHERE right(customer_no, 3)::int % 7 = 0");
    scenario_exec(&sc, "UPDATE customers SET email = 'third' || customer_no || '@example.com' "
         "WHERE right(customer_no, 3)::int % 10 = 0");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email, loyalty_tier) "
         "SELECT 'S' || i, 'Late', 'Comer', 'late' || i || '@example.com', 'bronze' "
         "FROM generate_series(321, 340) i");

    /* Bounded: everything within 120 s of the start, faults and all. */
    int left = 120000 - (int)(testutil_now_ms() - test_started_ms);
    assert_in_step(left > 0 ? left : 1);
    fprintf(stderr, "soak: converged after %.1f s, %lld requests, %lld faults\n",
            (testutil_now_ms() - test_started_ms) / 1000.0, fake_stat(&sc.fake, "requests"),
            fake_stat(&sc.fake, "faults"));
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "held"), 0);
    /* The faults really happened, and none of them doubled anything. */
    ck_assert_int_ge(fake_stat(&sc.fake, "faults"), 50);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_channels"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "validation_errors"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), pgrig_query_int(sc.conn, "SELECT count(*) FROM customers"));
    finish();
}
END_TEST

/* ---- 2. outage ---- */

START_TEST(test_outage_ends_in_delivery)
{
    start("[delivery]\nmax_attempts = 3\n", NULL);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_5xx\": 1}"), 0);
    uint64_t outage_start = testutil_now_ms();
    long long before = fake_stat(&sc.fake, "requests");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email, loyalty_tier) "
         "SELECT 'O' || i, 'Ann', 'Lee', 'o' || i || '@example.com', 'gold' "
         "FROM generate_series(1, 100) i");
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, "circuit open", 10000),
                  "the circuit breaker did not open although every request failed");
    /* The outage lasts 15 s: time has to pass for the breaker's restraint to show. */
    uint64_t elapsed = testutil_now_ms() - outage_start;
    if (elapsed < 15000)
        testutil_sleep_ms((unsigned)(15000 - elapsed));
    long long during = fake_stat(&sc.fake, "requests") - before;
    long long failed = scenario_count_status(&sc, "failed");
    long long max_attempts = pgrig_query_int(sc.conn, "SELECT max(attempts) FROM omnisync.outbox");
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_5xx\": 0}"), 0);
    fprintf(stderr, "outage: %lld requests in 15 s, max attempts %lld\n", during, max_attempts);

    ck_assert_msg(failed == 0, "%lld rows failed during the outage", failed);
    ck_assert_msg(during < 100, "%lld requests reached the API during a 15 s outage", during);
    ck_assert_msg(max_attempts < 3, "rows spent %lld attempts during the outage", max_attempts);
    assert_in_step(90000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 100);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert(proc_wait_stderr(&omnisync_daemon, "circuit closed", 1000));
    finish();
}
END_TEST

/* ---- 3. wrong key ---- */

START_TEST(test_wrong_key_pauses_until_sighup)
{
    /* Four requests in flight at most: the burst before the first 401 is known and small. */
    start("[omnidesk]\nmax_in_flight = 4\n[health]\nlisten = 127.0.0.1:0\n", NULL);
    int port = scenario_health_port(&omnisync_daemon);
    ck_assert_int_gt(port, 0);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"api_key\": \"" ROTATED_KEY "\"}"), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'W' || i, 'Ann', 'Lee', 'w' || i || '@example.com' FROM generate_series(1, 50) i");
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, "api key refused", 10000),
                  "the daemon did not report the refused key");
    /*
     * While paused, only probes reach the API: watch it for 6 s, from when the requests that
     * were in flight with the first refusal have been answered (refused too). The daemon's own
     * count says so: the fake's cannot, as a request libcurl still connects has not reached it.
     */
    ck_assert_msg(WAIT_UNTIL(daemon_in_flight(port) == 0, 10000),
                  "requests stayed in flight after the key was refused");
    long long at_pause = fake_stat(&sc.fake, "auth_failures");
    testutil_sleep_ms(6000);
    long long after = fake_stat(&sc.fake, "auth_failures");
    fprintf(stderr, "wrong key: %lld refusals before the pause settled, %lld more in 6 s\n",
            at_pause, after - at_pause);
    ck_assert_msg(after - at_pause <= 3, "%lld requests refused in 6 s of pause", after - at_pause);
    ck_assert_msg(after <= 10, "%lld requests refused in all", after);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 0);
    /* Nothing failed and no row spent an attempt on the key. */
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "pending"), 50);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT max(attempts) FROM omnisync.outbox"), 0);

    ck_assert_int_eq(testutil_write_file(sc.keyfile, ROTATED_KEY "\n", 0600), 0);
    ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGHUP), 0);
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, "api key accepted again", 10000),
                  "the new key was not taken after SIGHUP");
    assert_in_step(30000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 50);
    finish();
}
END_TEST

/*
 * The key is refused, then accepted again without any change on our side (permissions restored
 * at Omnidesk, or a key rotation undone there): the next probe must find out, and probes start
 * at a few seconds (AUTH_PROBE_MIN_MS, doubling per refused probe). With the scenario's default
 * of 16 requests in flight, 16 refusals arrive at once when the key goes bad; those are one
 * event, not 16 refused probes.
 */
START_TEST(test_key_accepted_again_resumes_without_reload)
{
    start(NULL, NULL);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"api_key\": \"" ROTATED_KEY "\"}"), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'A' || i, 'Ann', 'Lee', 'a' || i || '@example.com' FROM generate_series(1, 50) i");
    ck_assert(proc_wait_stderr(&omnisync_daemon, "api key refused", 10000));
    uint64_t paused_at = testutil_now_ms();
    fprintf(stderr, "key accepted again: %lld requests refused at once\n",
            fake_stat(&sc.fake, "auth_failures"));
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"api_key\": \"" SCENARIO_API_KEY "\"}"), 0);
    /* The first probe is due 5 s after the pause, the second 10 s after that. */
    int resumed = proc_wait_stderr(&omnisync_daemon, "api key accepted again", 20000);
    fprintf(stderr, "key accepted again: %s after %.1f s\n", resumed ? "resumed" : "not resumed",
            (testutil_now_ms() - paused_at) / 1000.0);
    if (!resumed)
        proc_dump_tail(&omnisync_daemon, "omnisync run", 15);
    ck_assert_msg(resumed, "no probe found the key accepted within 20 s of the pause");
    assert_in_step(30000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    finish();
}
END_TEST

/* ---- 9. answers the daemon cannot foresee, and a broken reload ---- */

/*
 * The fake keeps at most 256 channels per customer (docs/testing.md) and answers 400
 * "too many channels" beyond that; the daemon's validation has no such cap, nor can it have
 * one. The refused row must fail with the API's words, the other customers must not notice,
 * and a later change of the customer must still be delivered.
 */
START_TEST(test_api_refusal_fails_one_row_only)
{
    /* The API's cap on a customer's channels, lowered from the fake's 256 so that it is reached
     * in the third batch (2 + 14 + 14 channels fit, 14 more do not) rather than the nineteenth. */
    start(NULL, "{\"max_channels\": 40}");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email, phone) "
         "VALUES ('B1', 'Ann', 'Lee', 'b1.0@example.com', '+31610000000')");
    ck_assert(WAIT_UNTIL(fake_customer_count(&sc.fake) == 1, 10000));
    /* Batches of 7 new emails and phones (14 channels: fewer than one delivery coalesces), each
     * delivered before the next, until the API refuses. */
    int refused = 0, batch;
    for (batch = 0; batch < 5 && !refused; batch++) {
        for (int i = 1; i <= 7; i++) {
            int n = batch * 7 + i;
            scenario_execf(&sc, "UPDATE customers SET email = 'b1.%d@example.com', phone = '+3161%07d' "
                  "WHERE customer_no = 'B1'",
                  n, n);
        }
        scenario_execf(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
              "VALUES ('BX%d', 'Bob', 'Day', 'bx%d@example.com')",
              batch, batch);
        ck_assert_msg(scenario_wait_quiet(&sc, 20000), "batch %d not delivered", batch);
        refused = scenario_count_status(&sc, "failed") > 0;
    }
    ck_assert_msg(refused, "the API never refused a channel");
    /* The refused row failed with the API's status and message; nothing else did. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE status = 'failed' AND "
                           "(primary_id <> 'B1' OR last_http_status <> 400 OR "
                           " last_error NOT LIKE '%too many channels%')"),
                     0);
    ck_assert_int_ge(proc_count_lines(&omnisync_daemon, "delivery failed", "primary_id=B1"), 1);
    ck_assert_int_eq(proc_count_lines(&omnisync_daemon, "delivery failed", "status=400"),
                     proc_count_lines(&omnisync_daemon, "delivery failed", NULL));
    /* A later change that keeps the refused email still carries it (full state): the name is
     * updated, but the channel the API refuses is reported again, not hidden by superseding. */
    long long failed_before = scenario_count_status(&sc, "failed");
    scenario_exec(&sc, "UPDATE customers SET last_name = 'Lee-Jones' WHERE customer_no = 'B1'");
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), failed_before + 1);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE status = 'skipped'"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT status = 'failed' AND last_error LIKE '%too many channels%' "
                           "FROM omnisync.outbox WHERE primary_id = 'B1' ORDER BY id DESC LIMIT 1"),
                     1);
    /* The customer is not stuck: back to the channels of the last batch that was accepted (the
     * daemon remembers the most recent ones) with a new name is delivered, and the refused rows
     * are superseded. */
    int last_ok = (batch - 1) * 7; /* the loop's last batch was refused */
    scenario_execf(&sc, "UPDATE customers SET email = 'b1.%d@example.com', phone = '+3161%07d', "
          "last_name = 'Lee-Smith' WHERE customer_no = 'B1'",
          last_ok, last_ok);
    assert_in_step(20000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_ge(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE status = 'skipped' "
                           "AND result LIKE 'superseded by %' AND primary_id = 'B1'"),
                     1);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_channels"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    finish();
}
END_TEST

/* 502 with an HTML page on every request for a while: transient, so rows wait, never fail. */
START_TEST(test_html_errors_keep_rows_pending)
{
    start("[delivery]\nmax_attempts = 3\n", NULL);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_html502\": 1}"), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'H' || i, 'Ann', 'Lee', 'h' || i || '@example.com' FROM generate_series(1, 40) i");
    ck_assert_msg(WAIT_UNTIL(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                   "last_http_status = 502") > 0,
                             10000),
                  "no 502 was recorded");
    ck_assert(proc_wait_stderr(&omnisync_daemon, "circuit open", 10000));
    /* Five seconds of HTML answers: time to spend attempts, if the daemon wrongly did. */
    testutil_sleep_ms(5000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "pending"), 40);
    ck_assert_int_lt(pgrig_query_int(sc.conn, "SELECT max(attempts) FROM omnisync.outbox"), 3);
    /* The error keeps the status and a quote of the page that is not JSON. */
    char *error = pgrig_query_text(sc.conn, "SELECT last_error FROM omnisync.outbox WHERE "
                                            "last_http_status = 502 LIMIT 1");
    ck_assert_ptr_nonnull(error);
    ck_assert_msg(strstr(error, "502") != NULL && strstr(error, "Bad Gateway") != NULL,
                  "unhelpful error for an HTML 502: %s", error);
    free(error);

    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_html502\": 0}"), 0);
    assert_in_step(60000);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 40);
    finish();
}
END_TEST

/* Line number (1-based) of the first line of `path` that contains `needle`, 0 if none. */
static int line_of(const char *path, const char *needle)
{
    char *text = testutil_read_file(path);
    int line = 1, found = 0;
    if (text == NULL)
        return 0;
    for (char *p = text; *p != '\0' && !found; line++) {
        char *end = strchr(p, '\n');
        if (end != NULL)
            *end = '\0';
        if (strstr(p, needle) != NULL) {
            found = line;
            break;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    free(text);
    return found;
}

START_TEST(test_reload_with_errors_keeps_running_config)
{
    start(NULL, NULL);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) VALUES ('R0', 'Ann', 'Lee')");
    ck_assert(WAIT_UNTIL(fake_customer_count(&sc.fake) == 1, 10000));
    /* A config with one bad value and a quieter log level: neither may take effect. */
    ck_assert_int_eq(scenario_write_config(&sc, "[delivery]\nmax_attempts = many\n"
                                                "[log]\nlevel = error\n"),
                     0);
    int line = line_of(sc.config, "max_attempts = many");
    ck_assert_int_gt(line, 0);
    int claimed_before = proc_count_lines(&omnisync_daemon, "msg=\"claimed\" rows=", NULL);
    ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGHUP), 0);
    char expected[700];
    snprintf(expected, sizeof(expected), "reload refused: %s:%d: [delivery] max_attempts",
             sc.config, line);
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, expected, 10000),
                  "the log does not say \"%s\"", expected);
    ck_assert_int_eq(proc_count_lines(&omnisync_daemon, "configuration reloaded", NULL), 0);

    /* Still running, still delivering, still at level debug. */
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) "
         "SELECT 'R' || i, 'Ann', 'Lee' FROM generate_series(1, 20) i");
    assert_in_step(20000);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 21);
    ck_assert_int_gt(proc_count_lines(&omnisync_daemon, "msg=\"claimed\" rows=", NULL), claimed_before);
    ck_assert_int_eq(proc_wait(&omnisync_daemon, 0), -1);
    finish();
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("failures");
    TCase *tc = tcase_create("failures");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_fault_soak_converges_exactly_once);
    tcase_add_test(tc, test_outage_ends_in_delivery);
    tcase_add_test(tc, test_wrong_key_pauses_until_sighup);
    tcase_add_test(tc, test_key_accepted_again_resumes_without_reload);
    tcase_add_test(tc, test_api_refusal_fails_one_row_only);
    tcase_add_test(tc, test_html_errors_keep_rows_pending);
    tcase_add_test(tc, test_reload_with_errors_keeps_running_config);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
