/*
 * Personal data does not outlive its purpose (DESIGN §4): finished rows are pruned after
 * `retention`, payloads scrubbed after `payload_retention`, and a delivered purge scrubs every
 * payload of that customer at once.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc omnisync_daemon;

static void run_with(const char *extra)
{
    ck_assert_int_eq(scenario_setup(&sc, extra, NULL), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
}

static void finish(void)
{
    int code = proc_stop(&omnisync_daemon, 20000);
    if (code != 0)
        proc_dump(&omnisync_daemon, "omnisync run");
    ck_assert_int_eq(code, 0);
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
}

static long long count(const char *where)
{
    char sql[300];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM omnisync.outbox WHERE %s", where);
    return pgrig_query_int(sc.conn, sql);
}

START_TEST(test_done_rows_pruned)
{
    run_with("[delivery]\nretention = 2s\n");
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) SELECT 'R' || i, 'Ann', 'Lee' FROM "
                                         "generate_series(1, 20) i"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_int_eq(fake_customer_count(&sc.fake), 20);
    /* Gone within retention plus one interval (1 s), with their attempts. */
    ck_assert_msg(WAIT_UNTIL(count("true") == 0, 10000), "%lld rows left", count("true"));
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.delivery_attempt"),
                     0);
    finish();
}
END_TEST

START_TEST(test_payload_scrubbed_early)
{
    run_with("[delivery]\nretention = 1h\npayload_retention = 1s\n");
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) VALUES ('P1', 'Ann', 'Lee')"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_msg(WAIT_UNTIL(count("new_data IS NULL AND scrubbed_at IS NOT NULL") == 1, 10000),
                  "payload not scrubbed");
    ck_assert_int_eq(count("status = 'done'"), 1);
    finish();
}
END_TEST

START_TEST(test_purge_scrubs_customer)
{
    run_with(NULL);
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name, email) VALUES ('G1', 'Ann', 'Lee', "
                                         "'ann@example.com'), ('G2', 'Bob', 'Li', NULL)"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_int_eq(pgrig_exec(sc.conn, "UPDATE customers SET last_name = 'Lee-Smith' WHERE "
                                         "customer_no = 'G1'"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_int_eq(pgrig_exec(sc.conn, "DELETE FROM customers WHERE customer_no = 'G1'"), 0);
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_int_eq(count("primary_id = 'G1' AND result = 'purged'"), 1);
    /* Every G1 row is scrubbed; G2 keeps its payload. */
    ck_assert_int_eq(count("primary_id = 'G1' AND (old_data IS NOT NULL OR new_data IS NOT NULL)"),
                     0);
    ck_assert_int_eq(count("primary_id = 'G1'"), 3);
    ck_assert_int_eq(count("primary_id = 'G2' AND new_data IS NOT NULL"), 1);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.sync_state WHERE "
                                             "primary_id = 'G1'"),
                     0);
    struct json_object *found = NULL;
    ck_assert_int_eq(fake_find_customer(&sc.fake, 1, "G1", &found), 0);
    ck_assert_ptr_null(found);
    finish();
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("retention");
    TCase *tc = tcase_create("retention");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_done_rows_pruned);
    tcase_add_test(tc, test_payload_scrubbed_early);
    tcase_add_test(tc, test_purge_scrubs_customer);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
