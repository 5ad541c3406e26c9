/*
 * omnisync backfill (issue 7): every existing row of a source is enqueued and delivered once;
 * interrupted by SIGTERM and run again it resumes without enqueueing a row twice; a live change
 * made meanwhile is delivered within seconds. OMNISYNC_BACKFILL_ROWS sets the size (100,000).
 */
#include <check.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc omnisync_daemon;

static long long rows_wanted(void)
{
    const char *env = getenv("OMNISYNC_BACKFILL_ROWS");
    long long n = env ? atoll(env) : 0;
    return n > 0 ? n : 100000;
}

static long long q(const char *sql)
{
    return pgrig_query_int(sc.conn, sql);
}

static void spawn_backfill(struct proc *p)
{
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, "backfill", "--source", "customers",
                    NULL};
    ck_assert_int_eq(proc_spawn(p, argv, NULL), 0);
}

START_TEST(test_backfill_resumes_and_spares_live_changes)
{
    long long n = rows_wanted();
    char sql[512];
    ck_assert_int_eq(scenario_setup(&sc, "[log]\nlevel = info\n", NULL), 0);
    /* Existing rows: written with the capture triggers off, as before omnisync was installed. */
    snprintf(sql, sizeof(sql),
             "ALTER TABLE customers DISABLE TRIGGER USER;"
             "INSERT INTO customers (customer_no, first_name, last_name, email) "
             "SELECT 'E' || lpad(i::text, 7, '0'), 'Ann', 'Lee', 'e' || i || '@example.com' "
             "FROM generate_series(1, %lld) i;"
             "ALTER TABLE customers ENABLE TRIGGER USER",
             n);
    ck_assert_int_eq(pgrig_exec(sc.conn, sql), 0);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox"), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);

    /* First run, interrupted by SIGTERM part-way. */
    struct proc first;
    spawn_backfill(&first);
    ck_assert_msg(WAIT_UNTIL(q("SELECT coalesce(max(rows_enqueued), 0) FROM omnisync.backfill") >=
                                 3000,
                             60000),
                  "the backfill did not start");
    ck_assert_int_eq(proc_signal(&first, SIGTERM), 0);
    int code = proc_wait(&first, 30000);
    char *out = proc_stdout(&first);
    ck_assert_msg(code == 1 && strstr(out, "interrupted") != NULL, "exit %d: %s", code, out);
    free(out);
    proc_free(&first);
    /* What it recorded as done is exactly what it enqueued: no half batch. */
    long long recorded = q("SELECT rows_enqueued FROM omnisync.backfill");
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'backfill'"), recorded);
    ck_assert_int_lt(recorded, n);

    /* Resume; a live change made meanwhile goes through within seconds. */
    struct proc second;
    spawn_backfill(&second);
    ck_assert(WAIT_UNTIL(q("SELECT rows_enqueued FROM omnisync.backfill") > recorded + 2000,
                         60000));
    uint64_t t0 = testutil_now_ms();
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) VALUES ('LIVE-1', 'Liv', 'Ely')"),
                     0);
    struct json_object *found = NULL;
    ck_assert(WAIT_UNTIL(fake_find_customer(&sc.fake, 1, "LIVE-1", &found) == 0 && found != NULL,
                         30000));
    json_object_put(found);
    uint64_t live_ms = testutil_now_ms() - t0;
    fprintf(stderr, "test_backfill: live change delivered %llu ms after its commit, during "
                    "the backfill\n",
            (unsigned long long)live_ms);
    ck_assert_msg(live_ms < 10000, "the live change waited %llu ms", (unsigned long long)live_ms);
    ck_assert_msg(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'backfill' AND status = "
                    "'pending'") > 0,
                  "the backfill was already over: the live change proved nothing");

    code = proc_wait(&second, 600000);
    out = proc_stdout(&second);
    ck_assert_msg(code == 0 && strstr(out, "done") != NULL, "exit %d: %s", code, out);
    free(out);
    proc_free(&second);

    /* Every row enqueued exactly once, all delivered, nothing created twice. */
    snprintf(sql, sizeof(sql), "SELECT count(*) = %lld AND count(DISTINCT primary_id) = %lld "
                               "FROM omnisync.outbox WHERE op = 'backfill' AND primary_id LIKE 'E%%'",
             n, n);
    ck_assert_int_eq(q(sql), 1);
    ck_assert_msg(scenario_wait_quiet(&sc, 600000), "%lld rows still pending",
                  scenario_open_rows(&sc));
    /* The stats count, not /_fake/state: rendering 100,000 customers is slow under ASan. */
    ck_assert_int_eq(fake_stat(&sc.fake, "customers"), n + 1);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.backfill WHERE finished_at IS NOT NULL"), 1);

    ck_assert_int_eq(proc_stop(&omnisync_daemon, 20000), 0);
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
}
END_TEST

START_TEST(test_backfill_usage_errors)
{
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    char *argv1[] = {OMNISYNC_BIN, "--config", sc.config, "backfill", NULL};
    ck_assert_int_eq(proc_run(argv1, NULL, 30000, NULL, NULL), 2);
    char *argv2[] = {OMNISYNC_BIN, "--config", sc.config, "backfill", "--source", "nope", NULL};
    char *err = NULL;
    ck_assert_int_eq(proc_run(argv2, NULL, 30000, NULL, &err), 1);
    ck_assert_ptr_nonnull(strstr(err, "no source \"nope\""));
    free(err);
    char *argv3[] = {OMNISYNC_BIN, "--config", sc.config, "backfill", "--source", "customers",
                     "--batch", "0", NULL};
    ck_assert_int_eq(proc_run(argv3, NULL, 30000, NULL, NULL), 2);
    /* An empty table: done at once, nothing enqueued. */
    char *argv4[] = {OMNISYNC_BIN, "--config", sc.config, "backfill", "--source", "customers",
                     NULL};
    char *out = NULL;
    ck_assert_int_eq(proc_run(argv4, NULL, 30000, &out, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "done, 0 rows"));
    free(out);
    scenario_teardown(&sc);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("backfill");
    TCase *tc = tcase_create("backfill");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_backfill_usage_errors);
    tcase_add_test(tc, test_backfill_resumes_and_spares_live_changes);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
