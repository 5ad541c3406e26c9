/*
 * test_recorder: outcome batches against a real PostgreSQL (issue 17.1). One outcome the
 * database refuses must not take its batch down: the others are recorded, the refused row fails
 * with the SQLSTATE only, and nothing is dropped.
 */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbloop.h"
#include "pgrig.h"
#include "recorder.h"
#include "sql_files.h"
#include "testutil.h"

static uv_loop_t loop;
static uv_timer_t ticker;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

#define RUN_UNTIL(expr, timeout_ms)                                                                \
    __extension__({                                                                                \
        uint64_t run_deadline_ = testutil_now_ms() + (uint64_t)(timeout_ms);                       \
        int run_ok_;                                                                               \
        uv_timer_start(&ticker, on_tick, 5, 5);                                                    \
        while (!(run_ok_ = !!(expr)) && testutil_now_ms() < run_deadline_)                         \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        uv_timer_stop(&ticker);                                                                    \
        run_ok_;                                                                                   \
    })

static int closed;
static void on_closed(struct dbloop *db)
{
    (void)db;
    closed = 1;
}

static size_t committed, refused_calls, dropped_calls;
static void on_recorded(struct recorder *r, size_t n, int dropped)
{
    (void)r;
    if (dropped == RECORDER_COMMITTED)
        committed += n;
    else if (dropped == RECORDER_REFUSED)
        refused_calls++;
    else
        dropped_calls++;
}

/* A database with the omnisync schema and `n` pending rows leased by "p1", ids 1..n. */
static PGconn *setup_db(const char *name, char *conninfo, size_t len, int n)
{
    struct pgrig *pg = pgrig_global();
    ck_assert_ptr_nonnull(pg);
    ck_assert_int_eq(pgrig_createdb(pg, name, conninfo, len), 0);
    PGconn *c = pgrig_connect(pg, name);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(pgrig_exec(c, "CREATE SCHEMA omnisync"), 0);
    for (const struct sql_file *f = sql_files; f->name != NULL; f++) {
        if (f->name[0] >= '0' && f->name[0] <= '9')
            ck_assert_msg(pgrig_exec(c, f->text) == 0, "%s", f->name);
    }
    ck_assert_int_eq(
        pgrig_execf(c,
                    "INSERT INTO omnisync.outbox (source, primary_id, op, new_data, "
                    "locked_by, locked_until) SELECT 'customers', 'C' || i, 'insert', "
                    "'{}', 'p1', now() + interval '1 hour' FROM generate_series(1, %d) i",
                    n),
        0);
    return c;
}

/* A done outcome of row `id` (customer "C<id>"); `error` (or NULL) its text. */
static void outcome(struct delivery_outcome *o, long long *row, int id, const char *error)
{
    static char primary[8][16];
    snprintf(primary[id % 8], sizeof(primary[0]), "C%d", id);
    memset(o, 0, sizeof(*o));
    *row = id;
    o->status = OUTBOX_DONE;
    o->op = METRICS_OP_CREATE;
    o->source = "customers";
    o->primary_id = primary[id % 8];
    o->rows = row;
    o->nrows = 1;
    o->sent_id = id;
    o->result = (char *)"created";
    o->error = (char *)error;
    o->spend = 1;
    static struct outbox_sync sync[8];
    sync[id % 8] = (struct outbox_sync){.created = 1, .omnidesk_id = 100 + id};
    o->sync = &sync[id % 8];
}

/* The loop, a database of `n` leased rows (setup_db) and a dbloop on it, ready. */
static PGconn *start(struct dbloop *db, const char *name, int n)
{
    char conninfo[1024];
    PGconn *c = setup_db(name, conninfo, sizeof(conninfo), n);
    committed = refused_calls = dropped_calls = 0;
    closed = 0;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(uv_timer_init(&loop, &ticker), 0);
    struct dbloop_options opts = {.conninfo = conninfo, .application_name = "test_recorder"};
    ck_assert_int_eq(dbloop_init(db, &loop, &opts), 0);
    ck_assert(RUN_UNTIL(dbloop_state(db) == DBLOOP_READY, 10000));
    return c;
}

/* Closes what start() opened; the loop must end with nothing left on it. */
static void finish(struct dbloop *db, PGconn *c)
{
    dbloop_close(db, on_closed);
    ck_assert(RUN_UNTIL(closed, 10000));
    uv_close((uv_handle_t *)&ticker, NULL);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    PQfinish(c);
}

START_TEST(one_refused_outcome_fails_its_row_only)
{
    struct dbloop db;
    PGconn *c = start(&db, "recorder_refused", 5);

    struct recorder r;
    ck_assert_int_eq(recorder_init(&r, &db, "p1", on_recorded, NULL), 0);
    /* Five outcomes in one batch; the third carries a text PostgreSQL refuses (bytes that are
     * not UTF-8): the statement fails for the whole batch. */
    struct delivery_outcome batch[5];
    long long rows[5];
    for (int i = 0; i < 5; i++)
        outcome(&batch[i], &rows[i], i + 1, i == 2 ? "x\xffy" : NULL);
    recorder_add(&r, batch, 5);
    ck_assert_msg(RUN_UNTIL(recorder_idle(&r), 20000), "the recorder never became idle");

    ck_assert_int_eq(dropped_calls, 0);
    ck_assert_int_eq(refused_calls, 1);
    ck_assert_int_eq(r.dropped, 0);
    ck_assert_int_eq(r.refused, 1);
    ck_assert_int_eq(r.refused_id, 3);
    ck_assert_int_eq(committed, 5); /* four outcomes and the failure that replaced the fifth */
    ck_assert_int_eq(pgrig_query_int(c, "SELECT count(*) FROM omnisync.outbox WHERE status = "
                                        "'done' AND id <> 3 AND locked_by IS NULL"),
                     4);
    char *err = pgrig_query_text(c, "SELECT status || ' ' || last_error || ' ' || attempts "
                                    "FROM omnisync.outbox WHERE id = 3");
    ck_assert_str_eq(err, "failed the database refused this row's outcome: SQLSTATE 22021 1");
    free(err);
    /* The customer's next delivery looks it up before it creates anything. */
    ck_assert_int_eq(pgrig_query_int(c, "SELECT count(*) FROM omnisync.sync_state WHERE "
                                        "primary_id = 'C3' AND create_unknown"),
                     1);
    ck_assert_int_eq(pgrig_query_int(c, "SELECT count(*) FROM omnisync.sync_state WHERE "
                                        "create_unknown"),
                     1);

    recorder_free(&r);
    finish(&db, c);
}
END_TEST

static int recorder_closed;
static void on_recorder_closed(struct recorder *r)
{
    (void)r;
    recorder_closed = 1;
}

/*
 * The linger (5 s or 4 outcomes here): outcomes that fill it within 50 ms go at once, and for
 * the next second a lone plain outcome lingers only briefly (RECORDER_FAST_LINGER_MS), where
 * before that it would wait the whole 5 s.
 */
START_TEST(fast_outcomes_linger_briefly)
{
    struct dbloop db;
    PGconn *c = start(&db, "recorder_linger", 5);

    struct recorder r;
    recorder_closed = 0;
    ck_assert_int_eq(recorder_init(&r, &db, "p1", on_recorded, NULL), 0);
    ck_assert_int_eq(recorder_linger(&r, &loop, 5000, 4), 0);
    struct delivery_outcome o[5];
    long long rows[5];
    for (int i = 0; i < 5; i++)
        outcome(&o[i], &rows[i], i + 1, NULL);

    /* The first lingers; the fourth fills the linger at once and the four are written. */
    recorder_add(&r, &o[0], 1);
    ck_assert(recorder_lingering(&r));
    for (int i = 1; i < 4; i++)
        recorder_add(&r, &o[i], 1);
    ck_assert(!recorder_lingering(&r));
    ck_assert_msg(RUN_UNTIL(committed == 4, 10000), "%zu of 4 outcomes recorded", committed);

    /* Outcomes come fast now: the next one lingers, but not for 5 s. */
    recorder_add(&r, &o[4], 1);
    ck_assert(recorder_lingering(&r));
    uint64_t t0 = testutil_now_ms();
    ck_assert_msg(RUN_UNTIL(committed == 5, 10000), "%zu of 5 outcomes recorded", committed);
    uint64_t waited = testutil_now_ms() - t0;
    ck_assert_msg(waited < 2500, "a lone outcome after a fast burst waited %llu ms",
                  (unsigned long long)waited);
    ck_assert_int_eq(pgrig_query_int(c, "SELECT count(*) FROM omnisync.outbox WHERE status = "
                                        "'done' AND locked_by IS NULL"),
                     5);
    ck_assert_int_eq(refused_calls + dropped_calls, 0);

    recorder_close(&r, on_recorder_closed);
    ck_assert(RUN_UNTIL(recorder_closed, 10000));
    recorder_free(&r);
    finish(&db, c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("recorder");
    TCase *tc = tcase_create("batches");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, one_refused_outcome_fails_its_row_only);
    tcase_add_test(tc, fast_outcomes_linger_briefly);
    suite_add_tcase(s, tc);
    if (pgrig_global() == NULL) {
        fprintf(stderr, "test_recorder: cannot start the test PostgreSQL\n");
        return 1;
    }
    return pgrig_run_suite(s);
}
