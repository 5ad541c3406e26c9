/*
 * The claim's contract, at the database (omnisync.claim_batch(), sql/013_claim_walk.sql): the
 * rows it leases as heads and members, the rows that wait behind an earlier row of their
 * customer, when it says passed_over, its scan bound, paused sources, and rows another session
 * holds locked. The rows are written straight into the outbox, and the claims are called as the
 * daemon calls them (moves left to another connection).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;

static void setup(void)
{
    ck_assert_msg(scenario_setup(&sc, NULL, NULL) == 0, "scenario setup failed");
}

static void teardown(void)
{
    scenario_teardown(&sc);
}

/* A pending row of customer `who`, named `name` (its new_data) so the claims can be read. */
static void add_row(const char *who, const char *name)
{
    scenario_execf(&sc,
                   "INSERT INTO omnisync.outbox (source, primary_id, op, new_data) "
                   "VALUES ('customers', '%s', 'insert', jsonb_build_object('n', '%s'))",
                   who, name);
}

static void set_row(const char *name, const char *assignments)
{
    scenario_execf(&sc, "UPDATE omnisync.outbox SET %s WHERE new_data->>'n' = '%s'", assignments,
                   name);
}

/*
 * One claim by `process`: "heads / members / passed_over", each list the rows' names in id
 * order, e.g. "A1,B1 / A2 / f". Checked against `want`.
 */
static void assert_claim(const char *process, int limit, int per_customer, int scan,
                         const char *want)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(string_agg(new_data::jsonb->>'n', ',' ORDER BY id) "
             "FILTER (WHERE id = head_id), '') || ' / ' || "
             "coalesce(string_agg(new_data::jsonb->>'n', ',' ORDER BY id) "
             "FILTER (WHERE id <> head_id), '') || ' / ' || "
             "CASE WHEN bool_or(passed_over) THEN 't' ELSE 'f' END "
             "FROM omnisync.claim_batch(%d, 60000, '%s', %d, '{customers}', %d, 0)",
             limit, process, per_customer, scan);
    char *got = pgrig_query_text(sc.conn, sql);
    ck_assert_ptr_nonnull(got);
    ck_assert_msg(strcmp(got, want) == 0,
                  "claim by %s (limit %d, scan %d): got \"%s\", want \"%s\"", process, limit, scan,
                  got, want);
    free(got);
}

/* A customer's later row waits while an earlier one is pending; passed_over says so to the
 * process that holds the earlier row, and only to it. */
START_TEST(test_later_row_waits_for_the_earlier)
{
    add_row("A", "A1");
    add_row("B", "B1");
    assert_claim("p1", 1, 1, 100, "A1 /  / f");
    add_row("A", "A2");
    add_row("C", "C1");
    /* A2 is due but waits behind A1, which p1 holds. */
    assert_claim("p1", 10, 1, 100, "B1,C1 /  / t");
    assert_claim("p2", 10, 1, 100, " /  / f");
    /* A1 delivered: A2 is a head now. */
    set_row("A1", "status = 'done', locked_by = NULL, locked_until = NULL");
    assert_claim("p2", 10, 1, 100, "A2 /  / f");
}
END_TEST

/* A head brings its customer's next pending rows (up to p_per_customer) as members. */
START_TEST(test_head_brings_its_customers_rows)
{
    add_row("A", "A1");
    add_row("B", "B1");
    add_row("A", "A2");
    add_row("A", "A3");
    assert_claim("p1", 10, 2, 100, "A1,B1 / A2 / f");
    assert_claim("p1", 10, 2, 100, " /  / t");
}
END_TEST

/* A held row (the purge guard's) holds its customer's later rows back; a failed one does not:
 * a later delivery carries the customer's whole state and supersedes it. */
START_TEST(test_held_row_blocks_failed_row_does_not)
{
    add_row("E", "E1");
    add_row("E", "E2");
    add_row("F", "F1");
    add_row("F", "F2");
    set_row("E1", "status = 'held'");
    set_row("F1", "status = 'failed'");
    assert_claim("p1", 10, 1, 100, "F2 /  / f");
}
END_TEST

/* The walk stops after p_scan due rows, and says passed_over then: more may be due beyond. */
START_TEST(test_scan_bound)
{
    add_row("G", "G1");
    for (int i = 2; i <= 6; i++) {
        char name[8];
        snprintf(name, sizeof(name), "G%d", i);
        add_row("G", name);
    }
    add_row("H", "H1");
    set_row("G1", "locked_by = 'other', locked_until = now() + interval '1 hour'");
    assert_claim("p1", 10, 1, 3, " /  / t");
    assert_claim("p1", 10, 1, 100, "H1 /  / f");
}
END_TEST

/* A paused source (or everything paused) is not claimed. */
START_TEST(test_paused_source_not_claimed)
{
    add_row("A", "A1");
    scenario_exec(&sc, "INSERT INTO omnisync.control (scope, paused) VALUES ('customers', true)");
    assert_claim("p1", 10, 1, 100, " /  / f");
    scenario_exec(&sc, "UPDATE omnisync.control SET scope = '*'");
    assert_claim("p1", 10, 1, 100, " /  / f");
    scenario_exec(&sc, "UPDATE omnisync.control SET paused = false");
    assert_claim("p1", 10, 1, 100, "A1 /  / f");
}
END_TEST

/* A row another session holds locked (another process's claim) is passed by, and the claim fills
 * its limit from the rows after it. */
START_TEST(test_row_locked_elsewhere_skipped)
{
    add_row("I", "I1");
    add_row("J", "J1");
    add_row("K", "K1");
    add_row("L", "L1");
    PGconn *other = pgrig_connect(sc.pg, sc.db);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(pgrig_exec(other, "BEGIN; SELECT 1 FROM omnisync.outbox "
                                       "WHERE new_data->>'n' = 'J1' FOR UPDATE"),
                     0);
    assert_claim("p1", 2, 1, 100, "I1,K1 /  / f");
    ck_assert_int_eq(pgrig_exec(other, "ROLLBACK"), 0);
    PQfinish(other);
    assert_claim("p1", 10, 1, 100, "J1,L1 /  / f");
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("claim");
    TCase *tc = tcase_create("claim");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_later_row_waits_for_the_earlier);
    tcase_add_test(tc, test_head_brings_its_customers_rows);
    tcase_add_test(tc, test_held_row_blocks_failed_row_does_not);
    tcase_add_test(tc, test_scan_bound);
    tcase_add_test(tc, test_paused_source_not_claimed);
    tcase_add_test(tc, test_row_locked_elsewhere_skipped);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
