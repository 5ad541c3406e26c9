/*
 * Hostile inputs of issue 17 that reach delivery (items 1, 2 and 6), with a real `omnisync run`,
 * a real PostgreSQL and the fake Omnidesk:
 *  - a name whose error text a 200-byte cut would split inside a UTF-8 character: the row
 *    fails, its batch neighbours are delivered, each customer is sent once (no livelock);
 *  - a create whose outcome is unknown (answer lost, slow body past timeout_ms, SIGTERM during
 *    slow creates) is always followed by a lookup, whatever released its row: no duplicate;
 *  - a customer without names whose create answer was lost ends done, not failed.
 * Every wait has a deadline.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc daemon_proc;

static void start(const char *extra, const char *faults)
{
    ck_assert_msg(scenario_setup(&sc, extra, faults) == 0, "scenario setup failed");
    ck_assert_msg(scenario_start_daemon(&sc, &daemon_proc) == 0, "daemon did not start");
}

static void stop_daemon(void)
{
    int code = proc_stop(&daemon_proc, 20000);
    if (code != 0)
        proc_dump_tail(&daemon_proc, "omnisync run", 60);
    ck_assert_msg(code == 0, "omnisync run exited %d after SIGTERM", code);
}

static void finish(void)
{
    stop_daemon();
    char *err = proc_stderr(&daemon_proc);
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    ck_assert_ptr_null(strstr(err, "@example.com"));
    free(err);
    proc_free(&daemon_proc);
    scenario_teardown(&sc);
}

static void wait_quiet(int timeout_ms)
{
    if (!scenario_wait_quiet(&sc, timeout_ms)) {
        scenario_dump_outbox(&sc);
        proc_dump_tail(&daemon_proc, "omnisync run", 40);
        ck_abort_msg("outbox not quiet after %d ms: %lld open rows", timeout_ms,
                     scenario_open_rows(&sc));
    }
}

static void assert_in_step(void)
{
    char why[512];
    if (scenario_compare(&sc, NULL, why, sizeof(why)) != 0) {
        scenario_dump_outbox(&sc);
        ck_abort_msg("fake and CRM differ: %s", why);
    }
}

/* ---- 1. an error text cut inside a character ---- */

START_TEST(test_long_multibyte_name_fails_alone)
{
    start(NULL, NULL);
    /* One transaction: the three rows are claimed together. */
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) VALUES "
                       "('U1', 'a' || repeat('é', 600), 'Lee', 'u1@example.com'), "
                       "('U2', 'Bob', 'Day', 'u2@example.com'), "
                       "('U3', 'Cy', 'Ng', 'u3@example.com')");
    wait_quiet(20000);
    char *st = pgrig_query_text(sc.conn, "SELECT string_agg(status, '/' ORDER BY primary_id) "
                                         "FROM omnisync.outbox");
    ck_assert_str_eq(st, "failed/done/done");
    free(st);
    /* The error quotes the value cut on a character boundary (valid text, or PostgreSQL would
     * have refused it) and says what is wrong. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                              "primary_id = 'U1' AND last_error LIKE "
                                              "'invalid firstname \"aé%é\": is too long'"),
                     1);
    /* Each sent once: two creates, nothing else, and it stays so. */
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.create"), 2);
    ck_assert_int_eq(fake_stat(&sc.fake, "requests"), 2);
    ck_assert_int_eq(proc_count_lines(&daemon_proc, "cannot record outcomes", NULL), 0);
    ck_assert_int_eq(proc_count_lines(&daemon_proc, "refused", "outcome"), 0);
    stop_daemon();
    ck_assert_int_eq(proc_count_lines(&daemon_proc,
                                      "every request in flight finished and its "
                                      "outcome is recorded",
                                      NULL),
                     1);
    ck_assert_int_eq(fake_stat(&sc.fake, "requests"), 2);
    proc_free(&daemon_proc);
    scenario_teardown(&sc);
}
END_TEST

/* ---- 2. a create whose outcome is unknown ---- */

/* The fault stays on until the breaker has opened (rows released without an attempt spent) and
 * some deliveries have come back after it; then the API heals and everything must converge
 * without a second create of any customer. */
static void unknown_creates_then_heal(const char *faults, int n)
{
    ck_assert_int_eq(fake_set_faults(&sc.fake, faults), 0);
    scenario_execf(&sc,
                   "INSERT INTO customers (customer_no, first_name, last_name, email, "
                   "loyalty_tier) SELECT 'L' || i, 'Ann', 'Lee', 'l' || i || '@example.com', "
                   "'gold' FROM generate_series(1, %d) i",
                   n);
    ck_assert_msg(proc_wait_stderr(&daemon_proc, "circuit open", 30000),
                  "the circuit breaker did not open");
    ck_assert_msg(proc_wait_stderr(&daemon_proc, "circuit closed", 30000),
                  "the circuit never closed again");
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_lost\": 0, \"p_slow_body\": 0}"), 0);
    wait_quiet(90000);
    assert_in_step();
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), n);
    long long dup = fake_stat(&sc.fake, "duplicate_creates");
    fprintf(stderr, "%s: creates %lld, searches %lld, duplicate creates %lld\n", tcase_name(),
            fake_stat(&sc.fake, "by_endpoint.create"), fake_stat(&sc.fake, "by_endpoint.search"),
            dup);
    ck_assert_int_eq(dup, 0);
}

START_TEST(test_lost_create_answers_looked_up)
{
    start(NULL, NULL);
    unknown_creates_then_heal("{\"p_lost\": 0.9, \"paths\": [\"create\"]}", 30);
    finish();
}
END_TEST

START_TEST(test_slow_create_past_timeout_looked_up)
{
    start("[omnidesk]\ntimeout_ms = 300\n", NULL);
    unknown_creates_then_heal(
        "{\"p_slow_body\": 1, \"slow_body_ms\": 1500, \"paths\": [\"create\"]}", 30);
    finish();
}
END_TEST

START_TEST(test_sigterm_during_slow_creates_looked_up)
{
    start("[delivery]\nshutdown_timeout = 1s\n",
          "{\"p_slow_body\": 1, \"slow_body_ms\": 4000, \"paths\": [\"create\"]}");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email, "
                       "loyalty_tier) SELECT 'T' || i, 'Ann', 'Lee', 't' || i || '@example.com', "
                       "'gold' FROM generate_series(1, 8) i");
    ck_assert_msg(fake_wait_stat(&sc.fake, "by_endpoint.create", 8, 15000) == 0,
                  "the creates never reached the API");
    /* The creates are applied and their bodies trickle: SIGTERM now, past shutdown_timeout. */
    stop_daemon();
    proc_free(&daemon_proc);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_slow_body\": 0}"), 0);
    ck_assert_msg(scenario_start_daemon(&sc, &daemon_proc) == 0, "daemon did not restart");
    wait_quiet(60000);
    assert_in_step();
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 8);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_ge(fake_stat(&sc.fake, "by_endpoint.search"), 8);
    finish();
}
END_TEST

/* ---- 6. a customer without names, create answer lost ---- */

START_TEST(test_nameless_lost_create_ends_done)
{
    start(NULL, "{\"p_lost\": 1, \"paths\": [\"create\"]}");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, email) VALUES ('N1', "
                       "'n1@example.com')");
    ck_assert(fake_wait_stat(&sc.fake, "by_endpoint.create", 1, 15000) == 0);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_lost\": 0}"), 0);
    wait_quiet(30000);
    char *st = pgrig_query_text(sc.conn, "SELECT status || ' ' || coalesce(last_error, '-') "
                                         "FROM omnisync.outbox WHERE primary_id = 'N1'");
    ck_assert_str_eq(st, "done -");
    free(st);
    st = pgrig_query_text(sc.conn, "SELECT result FROM omnisync.outbox WHERE primary_id = 'N1'");
    ck_assert_str_eq(st, "found at Omnidesk by lookup");
    free(st);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 1);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.updateCustomer"), 0);
    finish();
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("hostile_delivery");
    TCase *tc = tcase_create("issue17");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_long_multibyte_name_fails_alone);
    tcase_add_test(tc, test_lost_create_answers_looked_up);
    tcase_add_test(tc, test_slow_create_past_timeout_looked_up);
    tcase_add_test(tc, test_sigterm_during_slow_creates_looked_up);
    tcase_add_test(tc, test_nameless_lost_create_ends_done);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
