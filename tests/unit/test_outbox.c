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

/* The outcome's JSON as record_outcomes() receives it, parsed back into a tree. */
static struct json_object *outcome_tree(const struct delivery_outcome *o)
{
    struct json_object *j = outbox_outcome_json(o);
    ck_assert_ptr_nonnull(j);
    struct json_object *tree =
        json_tokener_parse(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
    ck_assert_ptr_nonnull(tree);
    return tree;
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
    struct json_object *j = outcome_tree(&o), *v;
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
    j = outcome_tree(&done);
    ck_assert_str_eq(str(j, "status"), "done");
    ck_assert_str_eq(str(j, "op"), "none");
    ck_assert_str_eq(str(j, "result"), "nothing new to send");
    ck_assert(!has(j, "error") && !has(j, "sync") && !has(j, "http_status"));
    ck_assert(!has(j, "names_transliterated"));
    json_object_put(j);
}
END_TEST

/* The outcome as the daemon built it before its text was written directly: a json-c tree. The
 * text must be byte for byte what this tree prints. */
static const char *const status_names[] = {"done", "failed", "held", "retry"};

static struct json_object *reference_json(const struct delivery_outcome *d)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "source", json_object_new_string(d->source));
    json_object_object_add(o, "brand_id", json_object_new_int64(d->brand_id));
    json_object_object_add(o, "primary_id", json_object_new_string(d->primary_id));
    struct json_object *rows = json_object_new_array();
    for (size_t i = 0; i < d->nrows; i++)
        json_object_array_add(rows, json_object_new_int64(d->rows[i]));
    json_object_object_add(o, "rows", rows);
    json_object_object_add(o, "sent_id", json_object_new_int64(d->sent_id));
    json_object_object_add(o, "status", json_object_new_string(status_names[d->status]));
    json_object_object_add(o, "op", json_object_new_string(metrics_op_name(d->op)));
    json_object_object_add(o, "first_created", json_object_new_double(d->first_created));
    if (d->result != NULL)
        json_object_object_add(o, "result", json_object_new_string(d->result));
    if (d->error != NULL && *d->error != '\0')
        json_object_object_add(o, "error", json_object_new_string(d->error));
    if (d->http_status > 0)
        json_object_object_add(o, "http_status", json_object_new_int(d->http_status));
    json_object_object_add(o, "delay_ms", json_object_new_int64(d->delay_ms));
    json_object_object_add(o, "spend", json_object_new_int(d->spend));
    json_object_object_add(o, "purged", json_object_new_boolean(d->purged));
    struct json_object *attempts = json_object_new_array();
    for (size_t i = 0; i < d->nattempts; i++) {
        const struct outbox_attempt *a = &d->attempts[i];
        struct json_object *x = json_object_new_object();
        json_object_object_add(x, "at", json_object_new_double(a->at));
        json_object_object_add(x, "step",
                               json_object_new_string(omnidesk_endpoint_name(a->endpoint)));
        if (a->http_status > 0)
            json_object_object_add(x, "http_status", json_object_new_int(a->http_status));
        json_object_object_add(x, "outcome", json_object_new_string(omnidesk_class_name(a->class)));
        if (a->error[0])
            json_object_object_add(x, "error", json_object_new_string(a->error));
        json_object_object_add(x, "duration_ms", json_object_new_int(a->duration_ms));
        json_object_array_add(attempts, x);
    }
    json_object_object_add(o, "attempts", attempts);
    if (d->sync != NULL) {
        const struct outbox_sync *y = d->sync;
        struct json_object *x = json_object_new_object();
        json_object_object_add(x, "reset", json_object_new_boolean(y->reset));
        json_object_object_add(x, "created", json_object_new_boolean(y->created));
        json_object_object_add(x, "create_unknown", json_object_new_boolean(y->create_unknown));
        json_object_object_add(x, "omnidesk_id",
                               y->omnidesk_id > 0 ? json_object_new_int64(y->omnidesk_id) : NULL);
        struct json_object *channels = json_object_new_array();
        for (size_t i = 0; i < y->nchannels; i++)
            json_object_array_add(channels, json_object_new_string(y->channels[i]));
        json_object_object_add(x, "channels", channels);
        json_object_object_add(o, "sync", x);
    }
    if (d->names_transliterated > 0)
        json_object_object_add(o, "names_transliterated",
                               json_object_new_int(d->names_transliterated));
    return o;
}

/* The text equals the reference tree's, and parses back to an equal tree. */
static void same_as_reference(const struct delivery_outcome *o)
{
    struct json_object *ref = reference_json(o);
    struct json_object *j = outbox_outcome_json(o);
    ck_assert_ptr_nonnull(j);
    const char *want = json_object_to_json_string_ext(ref, JSON_C_TO_STRING_PLAIN);
    ck_assert_str_eq(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN), want);
    ck_assert_str_eq(json_object_get_string(j), want);
    struct json_object *back = json_tokener_parse(json_object_get_string(j));
    ck_assert_ptr_nonnull(back);
    ck_assert(json_object_equal(back, ref));
    /* In a batch, as the recorder sends it. */
    struct json_object *batch = json_object_new_array(), *refbatch = json_object_new_array();
    json_object_array_add(batch, j);
    json_object_array_add(batch, json_object_get(j));
    json_object_array_add(refbatch, json_object_get(ref));
    json_object_array_add(refbatch, json_object_get(ref));
    ck_assert_str_eq(json_object_to_json_string_ext(batch, JSON_C_TO_STRING_PLAIN),
                     json_object_to_json_string_ext(refbatch, JSON_C_TO_STRING_PLAIN));
    json_object_put(back);
    json_object_put(batch);
    json_object_put(refbatch);
    json_object_put(ref);
}

START_TEST(outcome_text_as_json_c_printed_it)
{
    /* Every control character, quotes, backslashes, slashes, DEL and C1, UTF-8 of every length
     * (and a byte sequence that is not UTF-8: passed through, as json-c did). */
    char controls[40];
    for (int c = 1; c < 0x20; c++)
        controls[c - 1] = (char)c;
    memcpy(controls + 31, "\"\\/\x7f", 5);
    const char *hostile[] = {
        "",
        controls,
        "\"quoted\" back\\slash /path/ \\u0000 \\\\\"",
        "\xc5\x81ukasz Dvo\xc5\x99\xc3\xa1k \xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd \xe2\x80\xa8 "
        "\xf0\x9f\x98\x80",
        "\xc2\x85\xc2\x9f \xff\xfe\x80 bad",
        "</script>\r\n\t\b\f end",
    };
    char long_text[5000];
    for (size_t i = 0; i < sizeof(long_text) - 1; i++)
        long_text[i] = "a\"\\\n\x01/\xc3\xa9"[i % 8];
    long_text[sizeof(long_text) - 1] = '\0';
    long long rows[] = {1, -2, 0, 9223372036854775807LL, -9223372036854775807LL - 1};
    double times[] = {0, 1, 1764755000.123456, -3.5, 1e21, 1e-7, 1764755000.0};
    struct outbox_attempt attempts[3] = {
        {.at = 1764755000.5,
         .endpoint = OMNIDESK_CREATE,
         .class = OMNIDESK_OK,
         .http_status = 201,
         .duration_ms = 12},
        {.at = 1764755001,
         .endpoint = OMNIDESK_UPDATE,
         .class = OMNIDESK_PERMANENT,
         .http_status = 422,
         .duration_ms = 0},
        {.at = 0, .endpoint = OMNIDESK_PURGE, .class = OMNIDESK_TRANSIENT},
    };
    char *channels[] = {"email:a\"b@example.org", "telephone:+4912345", ""};
    struct outbox_sync sync = {
        .created = 1, .omnidesk_id = 42, .channels = channels, .nchannels = 3};
    struct outbox_sync none = {.reset = 1};
    size_t nhostile = sizeof(hostile) / sizeof(hostile[0]);
    for (size_t i = 0; i <= nhostile; i++) {
        const char *h = i < nhostile ? hostile[i] : long_text;
        size_t cut =
            strlen(h) < sizeof(attempts[1].error) ? strlen(h) : sizeof(attempts[1].error) - 1;
        memcpy(attempts[1].error, h, cut); /* cut, as the delivery cuts an answer's text */
        attempts[1].error[cut] = '\0';
        channels[2] = (char *)h;
        struct delivery_outcome o = {
            .status = (enum outbox_status)(i % 4),
            .op = METRICS_OP_CREATE,
            .source = h,
            .brand_id = (long long)i - 2,
            .primary_id = h,
            .rows = rows,
            .nrows = i % 6,
            .sent_id = rows[i % 5],
            .first_created = times[i % 7],
            .result = i % 2 ? (char *)h : NULL,
            .error = (char *)h,
            .http_status = (int)(i % 3) * 250,
            .delay_ms = (long long)i * 1000,
            .spend = (int)(i % 2),
            .purged = (int)(i % 3 == 0),
            .sync = i % 3 == 1   ? &sync
                    : i % 3 == 2 ? &none
                                 : NULL,
            .attempts = attempts,
            .nattempts = i % 4,
            .names_transliterated = (int)(i % 2),
        };
        same_as_reference(&o);
    }
    /* The readers of a batch take the text too. */
    struct delivery_outcome o = {.status = OUTBOX_DONE,
                                 .source = "s",
                                 .primary_id = "p",
                                 .rows = rows,
                                 .nrows = 3,
                                 .sent_id = -2};
    struct json_object *batch = json_object_new_array();
    json_object_array_add(batch, outbox_outcome_json(&o));
    json_object_array_add(batch, json_tokener_parse("{\"rows\":[5]}"));
    char *ids = outbox_batch_row_ids(batch);
    ck_assert_str_eq(ids, "{1,-2,0,5}");
    free(ids);
    ck_assert_int_eq(outbox_outcome_sent_id(json_object_array_get_idx(batch, 0)), -2);
    json_object_put(batch);
}
END_TEST

/* Epoch times (2004 - 2038) are printed without printf: every such double, ties and carries
 * into the integer part included, reads as json-c printed it. */
START_TEST(outcome_times_as_json_c_printed_them)
{
    long long rows[] = {1};
    struct outbox_attempt attempt = {.endpoint = OMNIDESK_CREATE, .class = OMNIDESK_OK};
    struct delivery_outcome o = {.status = OUTBOX_DONE,
                                 .source = "s",
                                 .primary_id = "p",
                                 .rows = rows,
                                 .nrows = 1,
                                 .sent_id = 1,
                                 .attempts = &attempt,
                                 .nattempts = 1};
    const double ulp = 1.0 / 4194304.0; /* 2^-22, the spacing of doubles in [2^30, 2^31) */
    double fixed[] = {1073741824.0,
                      1073741824.0 - ulp / 2,
                      1073741824.0 + ulp,
                      2147483648.0 - ulp,
                      2147483648.0,
                      1073741824.0 + 1.0 / 256, /* 7 decimals then exactly half: a tie */
                      1073741824.0 + 3.0 / 256,
                      1764755000.0 + 1.0 / 256,
                      1764755001.0 + 1.0 / 256,
                      1764755000.0 - ulp, /* rounds up into the next second */
                      1764755000.123456,
                      1764755000.9999999,
                      1764755000.5,
                      1764755000.1,
                      1e9,
                      0.0,
                      -1764755000.25};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        o.first_created = fixed[i];
        attempt.at = fixed[i] + ulp * (double)i;
        same_as_reference(&o);
    }
    unsigned long long x = 88172645463325252ULL; /* xorshift64: the same values every run */
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* Any double of the range: m / 2^22 with m in [2^52, 2^53). */
        o.first_created = (double)((x >> 12) | (1ULL << 52)) * ulp;
        /* Multiples of 2^-14: many exact ties at the seventh decimal. */
        attempt.at = (double)(((x >> 20) | (1ULL << 44)) & ~0ULL) / 16384.0;
        same_as_reference(&o);
    }
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
    const char *params[] = {"10", "60000", "p1", "256", "{customers}", "10000", "2000"};
    PGresult *res = PQexecPrepared(c, OUTBOX_CLAIM_STATEMENT, 7, params, NULL, NULL, 0);
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
    /* A move's answer: the rows it took (none when nothing is captured), or another process
     * holds the move. */
    res = PQexec(c, "SELECT omnisync.move_apart(2000)");
    ck_assert_int_eq(outbox_moved(res), 0);
    PQclear(res);
    res = PQexec(c, "SELECT -1");
    ck_assert_int_eq(outbox_moved(res), OUTBOX_MOVE_BUSY);
    PQclear(res);
    res = PQexec(c, "SELECT 1 WHERE false");
    ck_assert_int_eq(outbox_moved(res), OUTBOX_MOVE_UNKNOWN);
    PQclear(res);
    ck_assert_int_eq(outbox_moved(NULL), OUTBOX_MOVE_UNKNOWN);
    PQfinish(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("pure");
    tcase_add_test(tc, outcome_to_json);
    tcase_add_test(tc, outcome_text_as_json_c_printed_it);
    tcase_add_test(tc, outcome_times_as_json_c_printed_them);
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
