/*
 * test_outbox: the daemon's boundary to the omnisync tables. An outcome becomes the JSON
 * omnisync.record_outcomes() reads, a refused one its replacement; result columns are found by
 * name whatever their order; and the claim's columns are those of the real
 * omnisync.claim_batch().
 */
#include <check.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox.h"
#include "pgrig.h"
#include "sql_files.h"

static const char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static int has(struct json_object *o, const char *key)
{
    return json_object_object_get_ex(o, key, NULL);
}

START_TEST(outcome_to_json)
{
    long long rows[] = {7, 8, 9};
    struct outbox_attempt attempts[2] = {
        {.at = 1000.5,
         .endpoint = OMNIDESK_CREATE,
         .class = OMNIDESK_OK,
         .http_status = 201,
         .duration_ms = 12},
        {.at = 1001,
         .endpoint = OMNIDESK_ADD_CHANNEL,
         .class = OMNIDESK_TRANSIENT,
         .error = "timeout after 10000 ms"},
    };
    char *channels[] = {"email:a@example.org"};
    struct outbox_sync sync = {
        .created = 1, .omnidesk_id = 42, .channels = channels, .nchannels = 1};
    struct delivery_outcome o = {
        .status = OUTBOX_RETRY,
        .op = METRICS_OP_ADD_CHANNEL,
        .source = "customers",
        .brand_id = 3,
        .primary_id = "C\"1\n",
        .rows = rows,
        .nrows = 3,
        .sent_id = 9,
        .first_created = 999.25,
        .error = "HTTP 503: busy",
        .http_status = 503,
        .delay_ms = 1500,
        .spend = 1,
        .sync = &sync,
        .attempts = attempts,
        .nattempts = 2,
        .names_transliterated = 1,
    };
    struct json_object *j = outbox_outcome_json(&o), *v;
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(str(j, "status"), "retry");
    ck_assert_str_eq(str(j, "op"), "add_channel");
    ck_assert_str_eq(str(j, "source"), "customers");
    ck_assert_str_eq(str(j, "primary_id"), "C\"1\n");
    ck_assert_str_eq(str(j, "error"), "HTTP 503: busy");
    ck_assert_str_eq(str(j, "sent_id"), "9");
    ck_assert_str_eq(str(j, "delay_ms"), "1500");
    ck_assert_str_eq(str(j, "http_status"), "503");
    ck_assert_str_eq(str(j, "spend"), "1");
    ck_assert_str_eq(str(j, "names_transliterated"), "1");
    ck_assert(!has(j, "result"));
    ck_assert(!has(j, "refused"));
    ck_assert(json_object_object_get_ex(j, "rows", &v));
    ck_assert_int_eq(json_object_array_length(v), 3);
    ck_assert_int_eq(json_object_get_int64(json_object_array_get_idx(v, 2)), 9);
    ck_assert(json_object_object_get_ex(j, "sync", &v));
    ck_assert_str_eq(str(v, "created"), "true");
    ck_assert_str_eq(str(v, "create_unknown"), "false");
    ck_assert_str_eq(str(v, "reset"), "false");
    ck_assert_str_eq(str(v, "omnidesk_id"), "42");
    ck_assert(json_object_object_get_ex(j, "attempts", &v));
    ck_assert_int_eq(json_object_array_length(v), 2);
    struct json_object *a = json_object_array_get_idx(v, 0);
    ck_assert_str_eq(str(a, "step"), "create");
    ck_assert_str_eq(str(a, "outcome"), "ok");
    ck_assert_str_eq(str(a, "http_status"), "201");
    ck_assert(!has(a, "error"));
    a = json_object_array_get_idx(v, 1);
    ck_assert_str_eq(str(a, "step"), "addChannelOnly");
    ck_assert(!has(a, "http_status"));
    ck_assert_str_eq(str(a, "error"), "timeout after 10000 ms");
    json_object_put(j);

    /* No sync, no error text, no status: the keys are left out (record_outcomes keeps what the
     * row had). An empty error is no error. */
    struct delivery_outcome done = {.status = OUTBOX_DONE,
                                    .op = METRICS_OP_NONE,
                                    .source = "s",
                                    .primary_id = "p",
                                    .rows = rows,
                                    .nrows = 1,
                                    .sent_id = 7,
                                    .result = "nothing new to send",
                                    .error = ""};
    j = outbox_outcome_json(&done);
    ck_assert_str_eq(str(j, "status"), "done");
    ck_assert_str_eq(str(j, "op"), "none");
    ck_assert_str_eq(str(j, "result"), "nothing new to send");
    ck_assert(!has(j, "error") && !has(j, "sync") && !has(j, "http_status"));
    ck_assert(!has(j, "names_transliterated"));
    json_object_put(j);
}
END_TEST

START_TEST(refusal_replaces_an_outcome)
{
    long long rows[] = {5};
    char *channels[] = {"email:a@example.org"};
    struct outbox_sync sync = {
        .created = 1, .omnidesk_id = 8, .channels = channels, .nchannels = 1};
    struct delivery_outcome o = {.status = OUTBOX_DONE,
                                 .op = METRICS_OP_CREATE,
                                 .source = "s",
                                 .primary_id = "p",
                                 .rows = rows,
                                 .nrows = 1,
                                 .sent_id = 5,
                                 .result = "created",
                                 .sync = &sync};
    struct json_object *j = outbox_outcome_json(&o);
    ck_assert(!outbox_outcome_is_refusal(j));
    ck_assert_int_eq(outbox_outcome_sent_id(j), 5);
    struct json_object *r = outbox_outcome_refusal(j, "22021"), *s;
    ck_assert(outbox_outcome_is_refusal(r));
    ck_assert_str_eq(str(r, "status"), "failed");
    ck_assert_str_eq(str(r, "error"), "the database refused this row's outcome: SQLSTATE 22021");
    ck_assert(!has(r, "result"));
    ck_assert_str_eq(str(r, "spend"), "1");
    ck_assert(json_object_object_get_ex(r, "sync", &s));
    ck_assert_str_eq(str(s, "create_unknown"), "true");
    ck_assert_str_eq(str(s, "omnidesk_id"), "8");
    ck_assert(json_object_object_get_ex(s, "channels", &s));
    ck_assert_int_eq(json_object_array_length(s), 0);
    json_object_put(r);
    r = outbox_outcome_refusal(j, "");
    ck_assert_str_eq(str(r, "error"), "the database refused this row's outcome: SQLSTATE unknown");
    json_object_put(r);
    json_object_put(j);

    /* A purge's outcome resets sync_state: its replacement leaves sync_state alone. */
    sync.reset = 1;
    j = outbox_outcome_json(&o);
    r = outbox_outcome_refusal(j, "23505");
    ck_assert(!has(r, "sync"));
    json_object_put(r);
    json_object_put(j);
}
END_TEST

START_TEST(batch_row_ids)
{
    struct json_object *batch = json_tokener_parse(
        "[{\"rows\":[1,2]},{\"rows\":[]},{\"no\":1},{\"rows\":[9223372036854775807]}]");
    char *ids = outbox_batch_row_ids(batch);
    ck_assert_str_eq(ids, "{1,2,9223372036854775807}");
    free(ids);
    json_object_put(batch);
    batch = json_object_new_array();
    for (int i = 0; i < 500; i++)
        json_object_array_add(batch, json_tokener_parse("{\"rows\":[1234567890123]}"));
    ids = outbox_batch_row_ids(batch);
    ck_assert_uint_eq(strlen(ids), 2 + 500 * 13 + 499);
    free(ids);
    json_object_put(batch);
}
END_TEST

/* A result with `names` as columns (in that order) and one row of `values`. */
static PGresult *result(const char *const *names, const char *const *values, int n)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[16];
    memset(attrs, 0, sizeof(attrs));
    for (int i = 0; i < n; i++) {
        attrs[i].name = (char *)names[i];
        attrs[i].typlen = -1;
    }
    ck_assert(PQsetResultAttrs(res, n, attrs));
    for (int i = 0; i < n; i++) {
        if (values[i] != NULL)
            ck_assert(PQsetvalue(res, 0, i, (char *)values[i], (int)strlen(values[i])));
        else
            ck_assert(PQsetvalue(res, 0, i, NULL, -1));
    }
    return res;
}

START_TEST(claim_row_read_by_name)
{
    /* The function's order reversed: every field still lands where it belongs. */
    const char *names[] = {"passed_over", "captured_left", "sync",     "created_epoch",
                           "orphaned",    "attempts",      "new_data", "old_data",
                           "op",          "primary_id",    "brand_id", "source",
                           "head_id",     "id"};
    const char *values[] = {NULL,        NULL,     "{\"created\":true}", "1700000000.5", "t",
                            "3",         "{\"a\":1}", NULL,                "update",       "C-1",
                            "12",        "customers",  "40",               "41"};
    PGresult *res = result(names, values, 14);
    struct outbox_claim_columns cols;
    ck_assert_int_eq(outbox_claim_columns(res, &cols), 0);
    struct outbox_row row;
    ck_assert_int_eq(outbox_claim_row(res, &cols, 0, &row), 1);
    ck_assert_int_eq(row.id, 41);
    ck_assert_int_eq(row.head_id, 40);
    ck_assert_str_eq(row.source, "customers");
    ck_assert_int_eq(row.brand_id, 12);
    ck_assert_str_eq(row.primary_id, "C-1");
    ck_assert_str_eq(row.op, "update");
    ck_assert_ptr_null(row.old_data);
    ck_assert_str_eq(row.new_data, "{\"a\":1}");
    ck_assert_int_eq(row.attempts, 3);
    ck_assert_int_eq(row.orphaned, 1);
    ck_assert(row.created_epoch == 1700000000.5);
    ck_assert_str_eq(row.sync, "{\"created\":true}");

    /* No status row: read as "maybe" both. */
    ck_assert_int_eq(outbox_claim_left(res, &cols), 1);
    ck_assert_int_eq(outbox_claim_passed_over(res, &cols), 1);
    PQclear(res);

    /* The status row is no claimed row, and says what it says. */
    const char *status[] = {"t", "f", NULL, NULL, NULL, NULL, NULL,
                            NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    res = result(names, status, 14);
    ck_assert_int_eq(outbox_claim_columns(res, &cols), 0);
    row.id = 7;
    ck_assert_int_eq(outbox_claim_row(res, &cols, 0, &row), 0);
    ck_assert_int_eq(row.id, 7);
    ck_assert_int_eq(outbox_claim_left(res, &cols), 0);
    ck_assert_int_eq(outbox_claim_passed_over(res, &cols), 1);
    PQclear(res);

    /* A column missing is an error, not a read of another column. */
    res = result(names + 1, values + 1, 13); /* no passed_over */
    ck_assert_int_eq(outbox_claim_columns(res, &cols), OMNISYNC_EINVAL);
    PQclear(res);
    res = result(names, values, 13); /* no id */
    ck_assert_int_eq(outbox_claim_columns(res, &cols), OMNISYNC_EINVAL);
    PQclear(res);
}
END_TEST

START_TEST(counts_read_by_name)
{
    const char *names[] = {"paused",  "skipped",            "failed",       "done",
                           "held",    "pending",            "capture_rows", "oldest_pending_age",
                           "capture_bytes"};
    const char *values[] = {"t", "5", "4", "3", "2", "1", "6", "12.5", "303120384"};
    PGresult *res = result(names, values, 9);
    struct outbox_counts c;
    ck_assert_int_eq(outbox_counts_read(res, &c), 0);
    ck_assert_int_eq(c.rows[METRICS_STATUS_PENDING], 1);
    ck_assert_int_eq(c.rows[METRICS_STATUS_HELD], 2);
    ck_assert_int_eq(c.rows[METRICS_STATUS_DONE], 3);
    ck_assert_int_eq(c.rows[METRICS_STATUS_FAILED], 4);
    ck_assert_int_eq(c.rows[METRICS_STATUS_SKIPPED], 5);
    ck_assert(c.oldest_pending_age_seconds == 12.5);
    ck_assert_int_eq(c.paused, 1);
    ck_assert_int_eq(c.capture_rows, 6);
    ck_assert_int_eq(c.capture_bytes, 303120384);
    PQclear(res);
    res = result(names, values, 8);
    ck_assert_int_eq(outbox_counts_read(res, &c), OMNISYNC_EINVAL);
    PQclear(res);
    res = result(names, values, 6);
    ck_assert_int_eq(outbox_counts_read(res, &c), OMNISYNC_EINVAL);
    PQclear(res);

    const char *pnames[] = {"scrubbed", "pruned"};
    const char *pvalues[] = {"7", "9"};
    long long pruned, scrubbed;
    res = result(pnames, pvalues, 2);
    ck_assert_int_eq(outbox_prune_read(res, &pruned, &scrubbed), 0);
    ck_assert_int_eq(pruned, 9);
    ck_assert_int_eq(scrubbed, 7);
    PQclear(res);
}
END_TEST

START_TEST(sync_parse)
{
    struct outbox_sync s;
    ck_assert_int_eq(outbox_sync_parse(NULL, &s), 0);
    ck_assert_int_eq(s.created, 0);
    ck_assert_int_eq(s.nchannels, 0);
    ck_assert_int_eq(outbox_sync_parse("{\"created\":true,\"create_unknown\":true,"
                                       "\"omnidesk_id\":9007199254740993,\"channels\":"
                                       "[\"email:a@b.c\",\"telephone:+79990000000\"]}",
                                       &s),
                     0);
    ck_assert_int_eq(s.created, 1);
    ck_assert_int_eq(s.create_unknown, 1);
    ck_assert_int_eq(s.omnidesk_id, 9007199254740993LL);
    ck_assert_int_eq(s.nchannels, 2);
    ck_assert_str_eq(s.channels[1], "telephone:+79990000000");
    outbox_sync_clear(&s);
    ck_assert_int_eq(outbox_sync_parse("{\"omnidesk_id\":null}", &s), 0);
    ck_assert_int_eq(s.omnidesk_id, 0);
    outbox_sync_clear(&s);
    ck_assert_int_eq(outbox_sync_parse("{not json", &s), OMNISYNC_EINVAL);
    ck_assert_int_eq(s.nchannels, 0);
}
END_TEST

/* The claim's column names are those omnisync.claim_batch() returns, and its rows parse. */
START_TEST(claim_against_the_schema)
{
    struct pgrig *pg = pgrig_global();
    ck_assert_ptr_nonnull(pg);
    char conninfo[1024];
    ck_assert_int_eq(pgrig_createdb(pg, "outbox_claim", conninfo, sizeof(conninfo)), 0);
    PGconn *c = pgrig_connect(pg, "outbox_claim");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(pgrig_exec(c, "CREATE SCHEMA omnisync"), 0);
    for (const struct sql_file *f = sql_files; f->name != NULL; f++) {
        if (f->name[0] >= '0' && f->name[0] <= '9')
            ck_assert_msg(pgrig_exec(c, f->text) == 0, "%s", f->name);
    }
    ck_assert_int_eq(pgrig_exec(c, "INSERT INTO omnisync.outbox (source, primary_id, op, "
                                   "new_data) VALUES ('customers', 'C1', 'insert', "
                                   "'{\"primary_id\":\"C1\"}'), ('customers', 'C1', 'update', "
                                   "'{\"primary_id\":\"C1\"}')"),
                     0);
    char prepare[512];
    ck_assert_int_eq(outbox_claim_prepare_sql(prepare, sizeof(prepare)), 0);
    ck_assert_int_eq(pgrig_exec(c, prepare), 0);
    const char *params[] = {"10", "60000", "p1", "256", "{customers}", "10000"};
    PGresult *res = PQexecPrepared(c, OUTBOX_CLAIM_STATEMENT, 6, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(res), 3); /* two rows and the status row */
    struct outbox_claim_columns cols;
    ck_assert_int_eq(outbox_claim_columns(res, &cols), 0);
    struct outbox_row a, b, none;
    ck_assert_int_eq(outbox_claim_row(res, &cols, 0, &a), 1);
    ck_assert_int_eq(outbox_claim_row(res, &cols, 1, &b), 1);
    ck_assert_int_eq(outbox_claim_row(res, &cols, 2, &none), 0);
    ck_assert_int_eq(outbox_claim_left(res, &cols), 0);
    ck_assert_int_eq(outbox_claim_passed_over(res, &cols), 0);
    ck_assert_int_eq(a.head_id, b.head_id);
    ck_assert_str_eq(a.source, "customers");
    ck_assert_str_eq(a.primary_id, "C1");
    ck_assert_int_eq(a.attempts, 0);
    ck_assert_int_eq(a.orphaned, 0);
    ck_assert_ptr_null(a.old_data);
    ck_assert(a.created_epoch > 1e9);
    PQclear(res);
    PQfinish(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("pure");
    tcase_add_test(tc, outcome_to_json);
    tcase_add_test(tc, refusal_replaces_an_outcome);
    tcase_add_test(tc, batch_row_ids);
    tcase_add_test(tc, claim_row_read_by_name);
    tcase_add_test(tc, counts_read_by_name);
    tcase_add_test(tc, sync_parse);
    suite_add_tcase(s, tc);
    TCase *db = tcase_create("database");
    tcase_set_timeout(db, 120);
    tcase_add_test(db, claim_against_the_schema);
    suite_add_tcase(s, db);
    if (pgrig_global() == NULL) {
        fprintf(stderr, "test_outbox: cannot start the test PostgreSQL\n");
        return 1;
    }
    return pgrig_run_suite(s);
}
