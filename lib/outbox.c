/*
 * outbox: the daemon's statements on the omnisync tables. See outbox.h.
 *
 * The only file of the daemon with SQL text on omnisync.outbox, process, control and sync_state,
 * and the only one that knows the keys of an outcome's JSON (sql/ reads the same keys in
 * omnisync.record_outcomes()).
 */
#include "outbox.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textbuf.h"

/* ---- outcomes ---- */

void outbox_sync_clear(struct outbox_sync *s)
{
    for (size_t i = 0; i < s->nchannels; i++)
        free(s->channels[i]);
    free(s->channels);
    memset(s, 0, sizeof(*s));
}

int outbox_sync_parse(const char *json, struct outbox_sync *s)
{
    memset(s, 0, sizeof(*s));
    if (json == NULL)
        return OMNISYNC_OK;
    struct json_object *obj = json_tokener_parse(json), *v;
    if (obj == NULL)
        return OMNISYNC_EINVAL;
    int rc = OMNISYNC_OK;
    if (json_object_object_get_ex(obj, "created", &v))
        s->created = json_object_get_boolean(v);
    if (json_object_object_get_ex(obj, "create_unknown", &v))
        s->create_unknown = json_object_get_boolean(v);
    if (json_object_object_get_ex(obj, "omnidesk_id", &v) && v != NULL)
        s->omnidesk_id = json_object_get_int64(v);
    if (json_object_object_get_ex(obj, "channels", &v) && json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        s->channels = n ? calloc(n, sizeof(*s->channels)) : NULL;
        if (n && s->channels == NULL)
            rc = OMNISYNC_ENOMEM;
        for (size_t i = 0; s->channels != NULL && i < n; i++) {
            const char *c = json_object_get_string(json_object_array_get_idx(v, i));
            if (c == NULL)
                continue;
            if ((s->channels[s->nchannels] = strdup(c)) == NULL) {
                rc = OMNISYNC_ENOMEM;
                break;
            }
            s->nchannels++;
        }
    }
    json_object_put(obj);
    return rc;
}

void delivery_outcome_free(struct delivery_outcome *o)
{
    free(o->rows);
    free(o->result);
    free(o->error);
    if (o->sync != NULL) {
        outbox_sync_clear(o->sync);
        free(o->sync);
    }
    free(o->attempts);
    memset(o, 0, sizeof(*o));
}

static const char *status_name(enum outbox_status s)
{
    switch (s) {
    case OUTBOX_DONE:
        return "done";
    case OUTBOX_FAILED:
        return "failed";
    case OUTBOX_HELD:
        return "held";
    case OUTBOX_RETRY:
    default:
        return "retry";
    }
}

/*
 * The outcome's text is written straight into a growing buffer, byte for byte what json-c's
 * tree of it printed (JSON_C_TO_STRING_PLAIN; tests/unit/test_outbox.c compares the two): a
 * tree of some thirty json-c objects per outcome, built and printed once, was almost a quarter of
 * the daemon's instructions per row (callgrind, L = 20 ms, M = 1: 51 k of 214 k). The first
 * allocation stays below glibc's large-chunk size: a larger malloc first consolidates the fast
 * bins (some 600 instructions, every outcome).
 */
#define OUTCOME_TEXT_FIRST 960

#define PUT_LITERAL(t, s) textbuf_put((t), (s), sizeof(s) - 1)

/* `s` as a JSON string, escaped as json-c escapes it: the two-character escapes, "\/" too,
 * other control characters as \u00XX; bytes from 0x7f up as they are. */
static void put_string(struct textbuf *t, const char *s)
{
    const char *run = s;
    PUT_LITERAL(t, "\"");
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '\b':
            esc[1] = 'b';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '"':
        case '\\':
        case '/':
            esc[1] = (char)c;
            break;
        default:
            if (c >= 0x20)
                continue;
            memcpy(esc + 1, "u00", 3);
            esc[4] = "0123456789abcdef"[c >> 4];
            esc[5] = "0123456789abcdef"[c & 0xf];
            n = 6;
        }
        textbuf_put(t, run, (size_t)(s - run));
        textbuf_put(t, esc, n);
        run = s + 1;
    }
    textbuf_put(t, run, (size_t)(s - run));
    PUT_LITERAL(t, "\"");
}

static void put_int(struct textbuf *t, long long v)
{
    char digits[24], *p = digits + sizeof(digits);
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        *--p = '-';
    textbuf_put(t, p, (size_t)(digits + sizeof(digits) - p));
}

/*
 * An epoch time in [2^30, 2^31) s (2004 - 2038) as %.17g prints it, without printf: such a double
 * is m / 2^22 exactly, so its 10 integer digits and 7 decimals (17 significant digits) come from
 * integer arithmetic, rounded to nearest, ties to even, as glibc rounds. printf's conversion of
 * the two times per outcome cost 4,500 instructions each. 0 when `v` is outside that range.
 */
static size_t epoch_text(double v, char *buf)
{
    if (!(v >= 1073741824.0 && v < 2147483648.0))
        return 0;
    uint64_t m = (uint64_t)(v * 4194304.0); /* exact: v has no bits below 2^-22 */
    uint64_t whole = m >> 22, t = (m & 0x3fffff) * 10000000u;
    uint64_t frac = t >> 22, rest = t & 0x3fffff;
    if (rest > 0x200000 || (rest == 0x200000 && (frac & 1)))
        frac++;
    if (frac == 10000000u) {
        whole++;
        frac = 0;
    }
    size_t n = 10;
    for (int i = 9; i >= 0; i--, whole /= 10)
        buf[i] = (char)('0' + whole % 10);
    buf[n++] = '.';
    if (frac == 0) {
        buf[n++] = '0'; /* json-c's ".0" after an integral value */
        return n;
    }
    int digits = 7;
    while (frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    for (int i = digits - 1; i >= 0; i--, frac /= 10)
        buf[n + (size_t)i] = (char)('0' + frac % 10);
    return n + (size_t)digits;
}

/* As json-c prints a double: %.17g, a decimal point (never the locale's comma), ".0" after an
 * integral value, and its words for what JSON has no number for. */
static void put_double(struct textbuf *t, double v)
{
    char buf[64];
    size_t len = epoch_text(v, buf);
    if (len > 0) {
        textbuf_put(t, buf, len);
        return;
    }
    if (isnan(v)) {
        PUT_LITERAL(t, "NaN");
        return;
    }
    if (isinf(v)) {
        if (v > 0)
            PUT_LITERAL(t, "Infinity");
        else
            PUT_LITERAL(t, "-Infinity");
        return;
    }
    int n = snprintf(buf, sizeof(buf), "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(buf) - 2) {
        t->failed = 1;
        return;
    }
    char *comma = strchr(buf, ',');
    if (comma != NULL)
        *comma = '.';
    int numeric =
        isdigit((unsigned char)buf[0]) || (buf[0] == '-' && isdigit((unsigned char)buf[1]));
    if (numeric && strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    textbuf_put(t, buf, (size_t)n);
}

static void put_bool(struct textbuf *t, int v)
{
    if (v)
        PUT_LITERAL(t, "true");
    else
        PUT_LITERAL(t, "false");
}

/* The member name `key` (no character to escape), after a comma unless it is the first. */
static void put_key(struct textbuf *t, const char *key)
{
    size_t n = strlen(key);
    if (textbuf_reserve(t, n + 4) != 0)
        return;
    char *p = t->p + t->len;
    if (t->len > 0 && p[-1] != '{')
        *p++ = ',';
    *p++ = '"';
    memcpy(p, key, n);
    p += n;
    *p++ = '"';
    *p++ = ':';
    *p = '\0';
    t->len = (size_t)(p - t->p);
}

static void put_attempt(struct textbuf *t, const struct outbox_attempt *a)
{
    PUT_LITERAL(t, "{");
    put_key(t, "at");
    put_double(t, a->at);
    put_key(t, "step");
    put_string(t, omnidesk_endpoint_name(a->endpoint));
    if (a->http_status > 0) {
        put_key(t, "http_status");
        put_int(t, a->http_status);
    }
    put_key(t, "outcome");
    put_string(t, omnidesk_class_name(a->class));
    if (a->error[0]) {
        put_key(t, "error");
        put_string(t, a->error);
    }
    put_key(t, "duration_ms");
    put_int(t, a->duration_ms);
    PUT_LITERAL(t, "}");
}

static void put_sync(struct textbuf *t, const struct outbox_sync *s)
{
    PUT_LITERAL(t, "{");
    put_key(t, "reset");
    put_bool(t, s->reset);
    put_key(t, "created");
    put_bool(t, s->created);
    put_key(t, "create_unknown");
    put_bool(t, s->create_unknown);
    put_key(t, "omnidesk_id");
    if (s->omnidesk_id > 0)
        put_int(t, s->omnidesk_id);
    else
        PUT_LITERAL(t, "null");
    put_key(t, "channels");
    PUT_LITERAL(t, "[");
    for (size_t i = 0; i < s->nchannels; i++) {
        if (i > 0)
            PUT_LITERAL(t, ",");
        put_string(t, s->channels[i]);
    }
    PUT_LITERAL(t, "]}");
}

static void put_outcome(struct textbuf *t, const struct delivery_outcome *d)
{
    PUT_LITERAL(t, "{");
    put_key(t, "source");
    put_string(t, d->source);
    put_key(t, "brand_id");
    put_int(t, d->brand_id);
    put_key(t, "primary_id");
    put_string(t, d->primary_id);
    put_key(t, "rows");
    PUT_LITERAL(t, "[");
    for (size_t i = 0; i < d->nrows; i++) {
        if (i > 0)
            PUT_LITERAL(t, ",");
        put_int(t, d->rows[i]);
    }
    PUT_LITERAL(t, "]");
    put_key(t, "sent_id");
    put_int(t, d->sent_id);
    put_key(t, "status");
    put_string(t, status_name(d->status));
    /* For metrics only (record_outcomes ignores them): what was done, and since when the
     * oldest change of these rows waited. */
    put_key(t, "op");
    put_string(t, metrics_op_name(d->op));
    put_key(t, "first_created");
    put_double(t, d->first_created);
    if (d->result != NULL) {
        put_key(t, "result");
        put_string(t, d->result);
    }
    if (d->error != NULL && *d->error != '\0') {
        put_key(t, "error");
        put_string(t, d->error);
    }
    if (d->http_status > 0) {
        put_key(t, "http_status");
        put_int(t, d->http_status);
    }
    put_key(t, "delay_ms");
    put_int(t, d->delay_ms);
    put_key(t, "spend");
    put_int(t, d->spend);
    put_key(t, "purged");
    put_bool(t, d->purged);
    put_key(t, "attempts");
    PUT_LITERAL(t, "[");
    for (size_t i = 0; i < d->nattempts; i++) {
        if (i > 0)
            PUT_LITERAL(t, ",");
        put_attempt(t, &d->attempts[i]);
    }
    PUT_LITERAL(t, "]");
    if (d->sync != NULL) {
        put_key(t, "sync");
        put_sync(t, d->sync);
    }
    if (d->names_transliterated > 0) {
        put_key(t, "names_transliterated");
        put_int(t, d->names_transliterated);
    }
    PUT_LITERAL(t, "}");
}

/* Prints an outcome carrier: its string is already the outcome's JSON text. */
static int print_text(struct json_object *o, struct printbuf *pb, int level, int flags)
{
    (void)level;
    (void)flags;
    return printbuf_memappend(pb, json_object_get_string(o), json_object_get_string_len(o));
}

struct json_object *outbox_outcome_json(const struct delivery_outcome *d)
{
    struct textbuf t = {.first = OUTCOME_TEXT_FIRST};
    put_outcome(&t, d);
    struct json_object *o = t.failed ? NULL : json_object_new_string_len(t.p, (int)t.len);
    free(t.p);
    if (o != NULL)
        json_object_set_serializer(o, print_text, NULL, NULL);
    return o;
}

/* The outcome `o` as a tree (a new reference): outbox_outcome_json's carrier parsed, or `o`
 * itself (a refusal is built as a tree). NULL if the text does not parse. */
static struct json_object *outcome_tree(struct json_object *o)
{
    if (json_object_is_type(o, json_type_string))
        return json_tokener_parse(json_object_get_string(o));
    return json_object_get(o);
}

/* A copy of field `key` of `from` into `to`, if there. */
static void copy_field(struct json_object *to, struct json_object *from, const char *key)
{
    struct json_object *v;
    if (json_object_object_get_ex(from, key, &v))
        json_object_object_add(to, key, json_object_get(v));
}

struct json_object *outbox_outcome_refusal(struct json_object *outcome, const char *sqlstate)
{
    struct json_object *refused = outcome_tree(outcome);
    struct json_object *o = refused != NULL ? json_object_new_object() : NULL, *v;
    if (o == NULL) {
        json_object_put(refused);
        return NULL;
    }
    static const char *const keys[] = {"source",  "brand_id", "primary_id",   "rows",
                                       "sent_id", "op",       "first_created"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        copy_field(o, refused, keys[i]);
    char error[160];
    snprintf(error, sizeof(error), "the database refused this row's outcome: SQLSTATE %s",
             *sqlstate ? sqlstate : "unknown");
    json_object_object_add(o, "status", json_object_new_string("failed"));
    json_object_object_add(o, "error", json_object_new_string(error));
    json_object_object_add(o, "delay_ms", json_object_new_int64(0));
    json_object_object_add(o, "spend", json_object_new_int(1));
    json_object_object_add(o, "purged", json_object_new_boolean(0));
    json_object_object_add(o, "refused", json_object_new_boolean(1));
    struct json_object *sync;
    if (json_object_object_get_ex(refused, "sync", &sync) && sync != NULL &&
        !(json_object_object_get_ex(sync, "reset", &v) && json_object_get_boolean(v))) {
        struct json_object *s = json_object_new_object();
        json_object_object_add(s, "reset", json_object_new_boolean(0));
        copy_field(s, sync, "created");
        copy_field(s, sync, "omnidesk_id");
        json_object_object_add(s, "channels", json_object_new_array());
        json_object_object_add(s, "create_unknown", json_object_new_boolean(1));
        json_object_object_add(o, "sync", s);
    }
    json_object_put(refused);
    return o;
}

int outbox_outcome_is_refusal(struct json_object *o)
{
    struct json_object *tree = outcome_tree(o), *v;
    int refusal = json_object_object_get_ex(tree, "refused", &v) && json_object_get_boolean(v);
    json_object_put(tree);
    return refusal;
}

long long outbox_outcome_sent_id(struct json_object *o)
{
    struct json_object *tree = outcome_tree(o), *v;
    long long id =
        json_object_object_get_ex(tree, "sent_id", &v) ? (long long)json_object_get_int64(v) : 0;
    json_object_put(tree);
    return id;
}

/* Appends the ids of `rows` (a JSON array) to ids[0..*len) ("{" first); 0 or -1 out of memory. */
static int append_ids(char **ids, size_t *cap, size_t *len, struct json_object *rows)
{
    for (size_t j = 0; j < json_object_array_length(rows); j++) {
        if (*cap - *len < 24) {
            char *more = realloc(*ids, *cap * 2);
            if (more == NULL)
                return -1;
            *ids = more;
            *cap *= 2;
        }
        *len +=
            (size_t)snprintf(*ids + *len, *cap - *len, "%s%lld", *len > 1 ? "," : "",
                             (long long)json_object_get_int64(json_object_array_get_idx(rows, j)));
    }
    return 0;
}

char *outbox_batch_row_ids(struct json_object *batch)
{
    size_t cap = 64, len = 0;
    char *ids = malloc(cap);
    if (ids == NULL)
        return NULL;
    ids[len++] = '{';
    for (size_t i = 0; i < json_object_array_length(batch); i++) {
        struct json_object *tree = outcome_tree(json_object_array_get_idx(batch, i)), *rows;
        int rc = 0;
        if (json_object_object_get_ex(tree, "rows", &rows))
            rc = append_ids(&ids, &cap, &len, rows);
        json_object_put(tree);
        if (rc != 0) {
            free(ids);
            return NULL;
        }
    }
    ids[len++] = '}';
    ids[len] = '\0';
    return ids;
}

/* ---- asynchronous statements ---- */

int outbox_record_outcomes(struct dbloop *db, const char *process, struct json_object *batch,
                           dbloop_query_cb cb, void *arg)
{
    const char *params[] = {process, json_object_to_json_string_ext(batch, JSON_C_TO_STRING_PLAIN)};
    return dbloop_query(db, "SELECT omnisync.record_outcomes($1, $2::jsonb)", 2, params,
                        DBLOOP_RETRY_ON_RECONNECT, cb, arg);
}

int outbox_mark_unrecorded(struct dbloop *db, const char *process, const char *ids,
                           dbloop_query_cb cb, void *arg)
{
    const char *params[] = {ids, process};
    return dbloop_query(db,
                        "UPDATE omnisync.outbox SET locked_by = $2 || ' (outcome not recorded)' "
                        "WHERE id = ANY ($1::bigint[]) AND locked_by = $2 AND status = 'pending'",
                        2, params, DBLOOP_RETRY_ON_RECONNECT, cb, arg);
}

int outbox_renew_leases(struct dbloop *db, const char *process, unsigned long long lease_ms,
                        dbloop_query_cb cb, void *arg)
{
    char lease[24];
    snprintf(lease, sizeof(lease), "%llu", lease_ms);
    const char *params[] = {process, lease};
    /* SKIP LOCKED: the recorder, on its own connection, may be writing outcomes of these rows
     * right now, in another order; waiting for its row locks could deadlock. A row skipped is
     * being recorded, and if that fails it is renewed next time: a third of the lease later,
     * with two thirds of it left. */
    return dbloop_query(db,
                        "UPDATE omnisync.outbox SET locked_until = now() + $2::bigint * "
                        "interval '1 millisecond' WHERE id IN (SELECT id FROM omnisync.outbox "
                        "WHERE locked_by = $1 AND status = 'pending' FOR UPDATE SKIP LOCKED)",
                        2, params, DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_reserve_purge(struct dbloop *db, long long sent_id, long long max_per_hour,
                         const char *process, dbloop_query_cb cb, void *arg)
{
    char id[24], limit[24];
    snprintf(id, sizeof(id), "%lld", sent_id);
    snprintf(limit, sizeof(limit), "%lld", max_per_hour);
    const char *params[] = {id, limit, process};
    return dbloop_query(db, "SELECT omnisync.reserve_purge($1, $2, $3)", 3, params,
                        DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_reservation_granted(const PGresult *res)
{
    return PQntuples(res) > 0 && PQnfields(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
}

/* ---- the claim ---- */

int outbox_claim_prepare_sql(char *out, size_t len)
{
    /* Prepared once per connection: the claim runs at every wake-up, and planning it each time
     * would cost more than running it. claim_batch (sql/005_claim_batch.sql) is claim() with a
     * status row: what the claim left behind. */
    int n = snprintf(out, len,
                     "PREPARE " OUTBOX_CLAIM_STATEMENT
                     " (integer, bigint, text, integer, text[], integer, integer) AS "
                     "SELECT * FROM omnisync.claim_batch($1, $2, $3, $4, $5, $6, $7)");
    return n > 0 && (size_t)n < len ? OMNISYNC_OK : OMNISYNC_ETOOBIG;
}

int outbox_claim(struct dbloop *db, const struct outbox_claim *c, dbloop_query_cb cb, void *arg)
{
    char limit[16], lease[24], per_customer[16], scan[16], move[16];
    snprintf(limit, sizeof(limit), "%u", c->limit);
    snprintf(lease, sizeof(lease), "%llu", c->lease_ms);
    snprintf(per_customer, sizeof(per_customer), "%d", c->per_customer);
    snprintf(scan, sizeof(scan), "%d", c->scan);
    snprintf(move, sizeof(move), "%d", c->move);
    char sources[4096];
    size_t len = 0;
    sources[len++] = '{';
    for (size_t i = 0; i < c->nsources && len < sizeof(sources) - 64; i++)
        len += (size_t)snprintf(sources + len, sizeof(sources) - len, "%s%s", i ? "," : "",
                                c->sources[i]);
    snprintf(sources + len, sizeof(sources) - len, "}");
    const char *params[] = {limit, lease, c->process, per_customer, sources, scan, move};
    return dbloop_query(db, OUTBOX_CLAIM_STATEMENT, 7, params, DBLOOP_FAIL_FAST | DBLOOP_PREPARED,
                        cb, arg);
}

int outbox_move(struct dbloop *db, int limit, dbloop_query_cb cb, void *arg)
{
    char n[16];
    snprintf(n, sizeof(n), "%d", limit);
    const char *params[] = {n};
    return dbloop_query(db, "SELECT omnisync.move_apart($1)", 1, params, DBLOOP_FAIL_FAST, cb,
                        arg);
}

int outbox_moved(const PGresult *res)
{
    if (res == NULL || PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0))
        return OUTBOX_MOVE_UNKNOWN;
    int n = atoi(PQgetvalue(res, 0, 0));
    return n < 0 ? OUTBOX_MOVE_BUSY : n;
}

int outbox_claim_columns(const PGresult *res, struct outbox_claim_columns *c)
{
    c->id = PQfnumber(res, "id");
    c->head_id = PQfnumber(res, "head_id");
    c->source = PQfnumber(res, "source");
    c->brand_id = PQfnumber(res, "brand_id");
    c->primary_id = PQfnumber(res, "primary_id");
    c->op = PQfnumber(res, "op");
    c->old_data = PQfnumber(res, "old_data");
    c->new_data = PQfnumber(res, "new_data");
    c->attempts = PQfnumber(res, "attempts");
    c->orphaned = PQfnumber(res, "orphaned");
    c->created_epoch = PQfnumber(res, "created_epoch");
    c->sync = PQfnumber(res, "sync");
    c->captured_left = PQfnumber(res, "captured_left");
    c->passed_over = PQfnumber(res, "passed_over");
    const int all[] = {c->id,         c->head_id,  c->source,        c->brand_id,
                       c->primary_id, c->op,       c->old_data,      c->new_data,
                       c->attempts,   c->orphaned, c->created_epoch, c->sync,
                       c->captured_left, c->passed_over};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] < 0)
            return OMNISYNC_EINVAL;
    }
    return OMNISYNC_OK;
}

static const char *text_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

int outbox_claim_row(const PGresult *res, const struct outbox_claim_columns *c, int row,
                     struct outbox_row *out)
{
    /* The status row: no id (sql/005_claim_batch.sql). */
    if (PQgetisnull(res, row, c->id))
        return 0;
    out->id = atoll(PQgetvalue(res, row, c->id));
    out->head_id = atoll(PQgetvalue(res, row, c->head_id));
    out->source = PQgetvalue(res, row, c->source);
    out->brand_id = atoll(PQgetvalue(res, row, c->brand_id));
    out->primary_id = PQgetvalue(res, row, c->primary_id);
    out->op = PQgetvalue(res, row, c->op);
    out->old_data = text_or_null(res, row, c->old_data);
    out->new_data = text_or_null(res, row, c->new_data);
    out->attempts = atoi(PQgetvalue(res, row, c->attempts));
    out->orphaned = strcmp(PQgetvalue(res, row, c->orphaned), "t") == 0;
    out->created_epoch = atof(PQgetvalue(res, row, c->created_epoch));
    out->sync = text_or_null(res, row, c->sync);
    return 1;
}

/* Column `col` of the claim's status row (it comes last; looked for, not assumed there): true
 * unless it says false, so that an answer without it is read as "maybe". */
static int status_flag(const PGresult *res, const struct outbox_claim_columns *c, int col)
{
    for (int row = PQntuples(res) - 1; row >= 0; row--) {
        if (PQgetisnull(res, row, c->id))
            return PQgetisnull(res, row, col) || strcmp(PQgetvalue(res, row, col), "f") != 0;
    }
    return 1;
}

int outbox_claim_left(const PGresult *res, const struct outbox_claim_columns *c)
{
    return status_flag(res, c, c->captured_left);
}

int outbox_claim_passed_over(const PGresult *res, const struct outbox_claim_columns *c)
{
    return status_flag(res, c, c->passed_over);
}

/* ---- the service's statements ---- */

/* The status of each count column: the columns are named after the statuses, and read by name. */
int outbox_count(struct dbloop *db, dbloop_query_cb cb, void *arg)
{
    /* Captured rows not yet moved (sql/003_capture.sql) are pending too, a multi-row DELETE's
     * row once per key, a multi-row UPDATE's once per customer (omnisync.captured_changes(),
     * sql/010_statement_updates.sql): summed per capture row, not expanded
     * with generate_series. Expanded, the planner guessed 1,000 rows per captured row (320,000
     * for an empty, never analyzed capture table) and ran every count, every 15 s, as a
     * parallel plan with two workers: 9 - 14 ms of PostgreSQL's CPU on empty tables. */
    return dbloop_query(db,
                        "WITH o AS (SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
                        "count(*) FILTER (WHERE status = 'held') AS held, "
                        "count(*) FILTER (WHERE status = 'done') AS done, "
                        "count(*) FILTER (WHERE status = 'failed') AS failed, "
                        "count(*) FILTER (WHERE status = 'skipped') AS skipped, "
                        "min(created_at) FILTER (WHERE status = 'pending') AS oldest "
                        "FROM omnisync.outbox), "
                        "k AS (SELECT omnisync.captured_changes(op, old_values, new_rows) AS n, "
                        "captured_at FROM omnisync.capture), "
                        "c AS (SELECT coalesce(sum(n), 0) AS pending, count(*) AS rows, "
                        "min(captured_at) FILTER (WHERE n >= 1) AS oldest FROM k) "
                        "SELECT o.pending + c.pending AS pending, o.held, o.done, o.failed, "
                        "o.skipped, coalesce(extract(epoch FROM now() - least(o.oldest, "
                        "c.oldest)), 0) AS oldest_pending_age, "
                        "EXISTS (SELECT 1 FROM omnisync.control WHERE paused) AS paused, "
                        "c.rows AS capture_rows, "
                        "pg_relation_size('omnisync.capture'::regclass) AS capture_bytes "
                        "FROM o, c",
                        0, NULL, DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_counts_read(const PGresult *res, struct outbox_counts *out)
{
    if (PQntuples(res) < 1)
        return OMNISYNC_EINVAL;
    for (int i = 0; i < METRICS_STATUS_COUNT; i++) {
        int col = PQfnumber(res, metrics_status_name((enum metrics_status)i));
        if (col < 0)
            return OMNISYNC_EINVAL;
        out->rows[i] = atoll(PQgetvalue(res, 0, col));
    }
    int age = PQfnumber(res, "oldest_pending_age"), paused = PQfnumber(res, "paused");
    int capture_rows = PQfnumber(res, "capture_rows");
    int capture_bytes = PQfnumber(res, "capture_bytes");
    if (age < 0 || paused < 0 || capture_rows < 0 || capture_bytes < 0)
        return OMNISYNC_EINVAL;
    out->oldest_pending_age_seconds = atof(PQgetvalue(res, 0, age));
    out->paused = strcmp(PQgetvalue(res, 0, paused), "t") == 0;
    out->capture_rows = atoll(PQgetvalue(res, 0, capture_rows));
    out->capture_bytes = atoll(PQgetvalue(res, 0, capture_bytes));
    return OMNISYNC_OK;
}

int outbox_vacuum_capture(struct dbloop *db, dbloop_query_cb cb, void *arg)
{
    /* VACUUM gives back the empty pages at the table's end under an exclusive lock it only
     * takes when nobody holds the table, and gives way to a waiting writer. A role that does not
     * own the table gets a warning, not an error, and the table stays as it is. */
    return dbloop_query(db, "VACUUM omnisync.capture", 0, NULL, DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_heartbeat(struct dbloop *db, const struct outbox_heartbeat *h, dbloop_query_cb cb,
                     void *arg)
{
    char in_flight[16];
    snprintf(in_flight, sizeof(in_flight), "%u", h->in_flight);
    const char *params[] = {h->process, h->circuit, h->api, in_flight};
    return dbloop_query(db,
                        "WITH gone AS (DELETE FROM omnisync.process "
                        " WHERE seen_at < now() - interval '1 hour') "
                        "INSERT INTO omnisync.process (name, circuit, api, in_flight) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET seen_at = now(), "
                        "circuit = EXCLUDED.circuit, api = EXCLUDED.api, "
                        "in_flight = EXCLUDED.in_flight",
                        4, params, DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_farewell(struct dbloop *db, const char *process, dbloop_query_cb cb, void *arg)
{
    const char *params[] = {process};
    return dbloop_query(db, "DELETE FROM omnisync.process WHERE name = $1", 1, params,
                        DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_prune(struct dbloop *db, unsigned long long retention_ms, unsigned long long payload_ms,
                 int batch, dbloop_query_cb cb, void *arg)
{
    char retention[24], payload[24], limit[16];
    snprintf(retention, sizeof(retention), "%llu", retention_ms);
    snprintf(payload, sizeof(payload), "%llu", payload_ms);
    snprintf(limit, sizeof(limit), "%d", batch);
    const char *params[] = {retention, payload, limit};
    return dbloop_query(
        db,
        "WITH pruned AS ("
        " DELETE FROM omnisync.outbox WHERE id IN ("
        "  SELECT id FROM omnisync.outbox WHERE status IN ('done', 'skipped') "
        "  AND coalesce(delivered_at, action_at, created_at) < "
        "      now() - $1::bigint * interval '1 millisecond' LIMIT $3) RETURNING 1), "
        "scrubbed AS ("
        " UPDATE omnisync.outbox SET old_data = NULL, new_data = NULL, scrubbed_at = now() "
        " WHERE id IN ("
        "  SELECT id FROM omnisync.outbox WHERE status IN ('done', 'skipped') "
        "  AND scrubbed_at IS NULL AND $2::bigint < $1::bigint "
        "  AND coalesce(delivered_at, action_at, created_at) < "
        "      now() - $2::bigint * interval '1 millisecond' LIMIT $3) RETURNING 1) "
        "SELECT (SELECT count(*) FROM pruned) AS pruned, "
        "(SELECT count(*) FROM scrubbed) AS scrubbed",
        3, params, DBLOOP_FAIL_FAST, cb, arg);
}

int outbox_prune_read(const PGresult *res, long long *pruned, long long *scrubbed)
{
    int p = PQfnumber(res, "pruned"), s = PQfnumber(res, "scrubbed");
    if (PQntuples(res) < 1 || p < 0 || s < 0)
        return OMNISYNC_EINVAL;
    *pruned = atoll(PQgetvalue(res, 0, p));
    *scrubbed = atoll(PQgetvalue(res, 0, s));
    return OMNISYNC_OK;
}
