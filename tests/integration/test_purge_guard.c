/*
 * The purge guard (issue 6, DESIGN §2): a mistaken DELETE of every customer must not wipe the help
 * desk. With the default max_purges_per_hour = 100, deleting 150 customers purges 100 and holds
 * 50 in status 'held'; `omnisync purges release --all` sends them, `purges skip --all` gives
 * them up. The budget is counted in the database, so two daemons share one budget.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc omnisync_daemon;
static uint64_t test_started_ms;

static long long purged(void)
{
    return pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE op = 'delete' AND status = 'done' "
                 "AND result = 'purged'");
}

static void stop_daemon(struct proc *p, const char *label)
{
    int code = proc_stop(p, 20000);
    if (code != 0)
        proc_dump(p, label);
    ck_assert_msg(code == 0, "%s exited %d after SIGTERM", label, code);
    char *err = proc_stderr(p);
    /* Keys and personal data never reach the log. */
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    ck_assert_ptr_null(strstr(err, "@example.com"));
    free(err);
    proc_free(p);
}

static void finish(void)
{
    stop_daemon(&omnisync_daemon, "omnisync run");
    scenario_teardown(&sc);
    fprintf(stderr, "%s: %.1f s\n", tcase_name(), (testutil_now_ms() - test_started_ms) / 1000.0);
}

/* 150 customers, delivered; then all of them deleted in one statement. */
static void create_and_delete_150(void)
{
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
         "SELECT 'D' || i, 'Ann', 'Lee', 'd' || i || '@example.com' "
         "FROM generate_series(1, 150) i");
    ck_assert_msg(scenario_wait_quiet(&sc, 30000) && fake_customer_count(&sc.fake) == 150,
                  "the 150 customers were not created");
    /* One statement: captured as one row of its 150 keys (sql/007_statement_deletes.sql), which
     * the move expands into a delete row per customer, the rows the guard counts. */
    scenario_exec(&sc, "DELETE FROM customers");
    /* Every purge either went out or is held. */
    if (!WAIT_UNTIL(scenario_count_status(&sc, "pending") == 0 && purged() + scenario_count_status(&sc, "held") == 150, 30000)) {
        scenario_dump_outbox(&sc);
        ck_abort_msg("the deletes did not settle: %lld pending, %lld purged, %lld held",
                     scenario_count_status(&sc, "pending"), purged(), scenario_count_status(&sc, "held"));
    }
}

/* Runs `omnisync --config FILE purges <args...>`; returns its exit code, stdout in *out. */
static int purges_cli(const char *action, const char *extra, char **out)
{
    char *argv[] = {OMNISYNC_BIN,   "--config", sc.config,     "purges",
                    (char *)action, "--all",    (char *)extra, NULL};
    char *err = NULL;
    int rc = proc_run(argv, NULL, 30000, out, &err);
    if (rc != 0)
        fprintf(stderr, "omnisync purges %s: exit %d: %s\n", action, rc, err ? err : "");
    free(err);
    return rc;
}

START_TEST(test_guard_holds_beyond_budget_until_released)
{
    test_started_ms = testutil_now_ms();
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    create_and_delete_150();
    ck_assert_int_eq(purged(), 100);
    ck_assert_int_eq(scenario_count_status(&sc, "held"), 50);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 50);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.purgeData"), 100);
    /* The 150 delete rows came from that one statement's row: one transaction, one seq. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(DISTINCT (txid, created_at)) FROM "
                                              "omnisync.outbox WHERE op = 'delete'"),
                     1);
    ck_assert(proc_wait_stderr(&omnisync_daemon, "purge held by the guard", 1000));
    /* Held rows stay held: two poll intervals pass without a purge. */
    testutil_sleep_ms(2500);
    ck_assert_int_eq(scenario_count_status(&sc, "held"), 50);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.purgeData"), 100);

    char *out = NULL;
    ck_assert_int_eq(purges_cli("release", NULL, &out), 0);
    ck_assert_msg(out != NULL && strstr(out, "released 50 held purges") != NULL,
                  "unexpected output: %s", out ? out : "(none)");
    free(out);
    if (!WAIT_UNTIL(scenario_count_status(&sc, "held") == 0 && scenario_count_status(&sc, "pending") == 0 &&
                        fake_customer_count(&sc.fake) == 0,
                    30000)) {
        scenario_dump_outbox(&sc);
        ck_abort_msg("released purges were not sent: %lld held, %lld pending, %lld at Omnidesk",
                     scenario_count_status(&sc, "held"), scenario_count_status(&sc, "pending"), fake_customer_count(&sc.fake));
    }
    ck_assert_int_eq(purged(), 150);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    /* Each customer was purged once, and the release is on record. */
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.purgeData"), 150);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.operator_action "
                           "WHERE action = 'purge release'"),
                     50);
    /* Purged customers' payloads are scrubbed. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                           "WHERE old_data IS NOT NULL OR new_data IS NOT NULL"),
                     0);
    char why[256];
    ck_assert_msg(scenario_compare(&sc, NULL, why, sizeof(why)) == 0, "%s", why);
    finish();
}
END_TEST

/* Two daemons, one budget: still exactly 100 purges; then the operator skips the rest. */
START_TEST(test_guard_budget_is_shared_by_processes)
{
    test_started_ms = testutil_now_ms();
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    struct proc second;
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &second), 0);
    create_and_delete_150();
    ck_assert_int_eq(purged(), 100);
    ck_assert_int_eq(scenario_count_status(&sc, "held"), 50);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 50);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.purgeData"), 100);
    /* Both processes purged: the budget was shared, not doubled. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(DISTINCT process) FROM omnisync.delivery_attempt "
                           "WHERE step = 'purgeData'"),
                     2);

    char *out = NULL;
    ck_assert_int_eq(purges_cli("skip", "--reason=kept on purpose", &out), 0);
    ck_assert_msg(out != NULL && strstr(out, "skipped 50 held purges") != NULL,
                  "unexpected output: %s", out ? out : "(none)");
    free(out);
    ck_assert_int_eq(scenario_count_status(&sc, "held"), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "skipped"), 50);
    /* Skipped purges are never sent. */
    testutil_sleep_ms(2500);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 50);
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.purgeData"), 100);
    stop_daemon(&second, "omnisync run (2nd)");
    finish();
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("purge_guard");
    TCase *tc = tcase_create("purge_guard");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_guard_holds_beyond_budget_until_released);
    tcase_add_test(tc, test_guard_budget_is_shared_by_processes);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
