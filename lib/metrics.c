/*
 * metrics: counting and the Prometheus text exposition (format 0.0.4) of DESIGN §7.
 *
 * Everything here runs on the loop thread and touches only the caller's struct: no locks, no
 * globals, no clock. Rendering writes every family with exactly one HELP and one TYPE line, even
 * when it has no sample yet, so a scrape always sees the same set of names; the only exceptions
 * are the outbox figures, which are left out entirely until the first count has come back from
 * the database, because a 0 there would claim an empty outbox nobody has looked at.
 *
 * Label values come from fixed tables (op, result, status, endpoint names, HTTP codes); the one
 * free-text value, the build version, is escaped as the format requires. No label ever carries an
 * id or customer data.
 */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnidesk.h"
#include "textbuf.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Upper bounds of the histogram buckets, in seconds; the label text is written out so it is
 * exactly what an operator would type into a query (le="0.25", not "0.25000000000000000"). */
static const double bucket_bounds[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                      0.25,  0.5,    1,     2.5,  5,     10,   30};
static const char *const bucket_labels[METRICS_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",   "30"};

_Static_assert(OMNIDESK_PROBE < METRICS_ENDPOINTS,
               "METRICS_ENDPOINTS must cover omnidesk_endpoint");

/* The number of omnidesk_endpoint values; slots above it stay unused. */
#define ENDPOINTS_USED ((int)OMNIDESK_PROBE + 1)

void metrics_init(struct metrics *m)
{
    int e, c;

    memset(m, 0, sizeof(*m));
    for (e = 0; e < METRICS_ENDPOINTS; e++)
        for (c = 0; c < METRICS_CODES; c++)
            m->http[e][c].code = -1;
}

static struct metrics_source_counter *source_counter(struct metrics_source_counter *slots,
                                                     const char *source)
{
    for (int i = 0; i < METRICS_SOURCES; i++) {
        if (slots[i].source[0] == '\0') {
            snprintf(slots[i].source, sizeof(slots[i].source), "%s", source);
            return &slots[i];
        }
        if (strcmp(slots[i].source, source) == 0)
            return &slots[i];
    }
    return NULL;
}

void metrics_add_source(struct metrics *m, const char *source)
{
    if (source != NULL && source[0] != '\0')
        (void)source_counter(m->names_transliterated, source);
}

void metrics_count_transliterated(struct metrics *m, const char *source, unsigned long long names)
{
    struct metrics_source_counter *c;

    if (source == NULL || source[0] == '\0')
        return;
    if ((c = source_counter(m->names_transliterated, source)) != NULL)
        c->total += names;
}

void metrics_count_delivery(struct metrics *m, enum metrics_op op, enum metrics_result result)
{
    if ((unsigned)op >= METRICS_OP_COUNT || (unsigned)result >= METRICS_RESULT_COUNT)
        return;
    m->deliveries[op][result]++;
}

void metrics_count_request(struct metrics *m, int endpoint, int code)
{
    struct metrics_code_counter *slots;

    if (endpoint < 0 || endpoint >= ENDPOINTS_USED)
        return;
    slots = m->http[endpoint];
    /* Only real status codes get a slot of their own; -1 marks a free slot and must never be
     * matched as a code, and anything else outside 0..999 is nonsense worth no series. */
    if (code >= 0 && code <= 999) {
        for (int i = 0; i < METRICS_CODES; i++) {
            if (slots[i].code == code) {
                slots[i].total++;
                return;
            }
            if (slots[i].code == -1) {
                slots[i].code = code;
                slots[i].total = 1;
                return;
            }
        }
    }
    m->http_other[endpoint]++;
}

void metrics_observe(struct metrics_histogram *h, double seconds)
{
    int i;

    /* A NaN or infinite duration is a bug upstream; it would poison _sum forever. */
    if (!isfinite(seconds))
        return;
    /* commit_to_delivery compares the database's clock with ours: a small skew must not make
     * _sum go down, which Prometheus would read as a counter reset. */
    if (seconds < 0)
        seconds = 0;
    for (i = 0; i < METRICS_BUCKETS; i++) {
        if (seconds <= bucket_bounds[i]) {
            h->buckets[i]++;
            break;
        }
    }
    h->count++;
    h->sum += seconds;
}

const char *metrics_op_name(enum metrics_op op)
{
    switch (op) {
    case METRICS_OP_CREATE:
        return "create";
    case METRICS_OP_UPDATE:
        return "update";
    case METRICS_OP_ADD_CHANNEL:
        return "add_channel";
    case METRICS_OP_PURGE:
        return "purge";
    case METRICS_OP_TRUNCATE:
        return "truncate";
    case METRICS_OP_NONE:
        return "none";
    case METRICS_OP_COUNT:
        break;
    }
    return "unknown";
}

const char *metrics_result_name(enum metrics_result result)
{
    switch (result) {
    case METRICS_RESULT_DONE:
        return "done";
    case METRICS_RESULT_FAILED:
        return "failed";
    case METRICS_RESULT_RETRY:
        return "retry";
    case METRICS_RESULT_HELD:
        return "held";
    case METRICS_RESULT_COUNT:
        break;
    }
    return "unknown";
}

const char *metrics_status_name(enum metrics_status status)
{
    switch (status) {
    case METRICS_STATUS_PENDING:
        return "pending";
    case METRICS_STATUS_HELD:
        return "held";
    case METRICS_STATUS_DONE:
        return "done";
    case METRICS_STATUS_FAILED:
        return "failed";
    case METRICS_STATUS_SKIPPED:
        return "skipped";
    case METRICS_STATUS_COUNT:
        break;
    }
    return "unknown";
}

int metrics_format_double(double value, char *out, size_t outlen)
{
    int precision;

    if (outlen < 32)
        return OMNISYNC_EINVAL;
    if (isnan(value)) {
        snprintf(out, outlen, "NaN");
        return 0;
    }
    if (isinf(value)) {
        snprintf(out, outlen, value > 0 ? "+Inf" : "-Inf");
        return 0;
    }
    /* The shortest text that reads back as the same double: 0.1 stays "0.1" instead of %.17g's
     * "0.10000000000000001", and nothing is lost. 17 digits always round-trip. */
    for (precision = 1; precision < 17; precision++) {
        snprintf(out, outlen, "%.*g", precision, value);
        if (strtod(out, NULL) == value)
            return 0;
    }
    snprintf(out, outlen, "%.17g", value);
    return 0;
}

/* ---- the output buffer ---------------------------------------------------------------------- */

/* The exposition is written into a struct textbuf (lib/textbuf.c); a failed allocation makes
 * metrics_render return ENOMEM. */

static void put(struct textbuf *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct textbuf *r, const char *fmt, ...)
{
    va_list ap, again;
    int n;

    if (r->failed)
        return;
    /* Most lines fit what is left; only the others are formatted a second time. */
    va_start(ap, fmt);
    va_copy(again, ap);
    n = vsnprintf(r->p + r->len, r->cap - r->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= r->cap - r->len && textbuf_reserve(r, (size_t)n) == 0)
        n = vsnprintf(r->p + r->len, r->cap - r->len, fmt, again);
    va_end(again);
    if (n < 0 || r->failed) {
        r->failed = 1;
        return;
    }
    r->len += (size_t)n;
}

/* A label value per the text format: backslash, double quote and line feed are escaped. */
static void put_label_value(struct textbuf *r, const char *value)
{
    const char *p;

    for (p = value; *p != '\0'; p++) {
        if (textbuf_reserve(r, 2) != 0)
            return;
        switch (*p) {
        case '\\':
            r->p[r->len++] = '\\';
            r->p[r->len++] = '\\';
            break;
        case '"':
            r->p[r->len++] = '\\';
            r->p[r->len++] = '"';
            break;
        case '\n':
            r->p[r->len++] = '\\';
            r->p[r->len++] = 'n';
            break;
        default:
            r->p[r->len++] = *p;
        }
    }
    r->p[r->len] = '\0';
}

static void put_double(struct textbuf *r, double value)
{
    char text[40];

    if (metrics_format_double(value, text, sizeof(text)) != 0)
        snprintf(text, sizeof(text), "NaN");
    put(r, "%s", text);
}

static void put_family(struct textbuf *r, const char *name, const char *type, const char *help)
{
    put(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_gauge_int(struct textbuf *r, const char *name, const char *help, long long value)
{
    put_family(r, name, "gauge", help);
    put(r, "%s %lld\n", name, value);
}

static void put_gauge_double(struct textbuf *r, const char *name, const char *help, double value)
{
    put_family(r, name, "gauge", help);
    put(r, "%s ", name);
    put_double(r, value);
    put(r, "\n");
}

static void put_histogram(struct textbuf *r, const char *name, const char *help,
                          const struct metrics_histogram *h)
{
    unsigned long long cumulative = 0;
    int i;

    put_family(r, name, "histogram", help);
    for (i = 0; i < METRICS_BUCKETS; i++) {
        cumulative += h->buckets[i];
        put(r, "%s_bucket{le=\"%s\"} %llu\n", name, bucket_labels[i], cumulative);
    }
    /* +Inf is the count by definition; observations above the last bound live only there. */
    put(r, "%s_bucket{le=\"+Inf\"} %llu\n", name, h->count);
    put(r, "%s_sum ", name);
    put_double(r, h->sum);
    put(r, "\n%s_count %llu\n", name, h->count);
}

static void put_http_requests(struct textbuf *r, const struct metrics *m)
{
    struct metrics_code_counter used[METRICS_CODES], slot;
    int e, i, j;

    put_family(r, "omnisync_http_requests_total", "counter",
               "Requests sent to the Omnidesk API, by endpoint and HTTP status (code \"0\": no "
               "answer, \"other\": codes beyond the tracked set).");
    for (e = 0; e < ENDPOINTS_USED; e++) {
        const char *endpoint = omnidesk_endpoint_name((enum omnidesk_endpoint)e);
        int n = 0;

        /* Slots fill in order of first sight; sorting makes the output stable between scrapes. */
        for (i = 0; i < METRICS_CODES; i++)
            if (m->http[e][i].code >= 0)
                used[n++] = m->http[e][i];
        for (i = 1; i < n; i++) {
            slot = used[i];
            for (j = i; j > 0 && used[j - 1].code > slot.code; j--)
                used[j] = used[j - 1];
            used[j] = slot;
        }
        for (i = 0; i < n; i++)
            put(r, "omnisync_http_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n", endpoint,
                used[i].code, used[i].total);
        if (m->http_other[e] > 0)
            put(r, "omnisync_http_requests_total{endpoint=\"%s\",code=\"other\"} %llu\n", endpoint,
                m->http_other[e]);
    }
}

const char *const metrics_reconcile_kinds[METRICS_RECONCILE_KINDS] = {
    "missing", "different", "extra", "unsendable", "pending",
};

static void put_reconcile(struct textbuf *r, const struct metrics *m)
{
    /* The family is announced before the first run too: no series until then. */
    put_family(r, "omnisync_reconcile_drift", "gauge",
               "Customers by kind of drift found by the last reconcile run, per source.");
    for (size_t i = 0; i < m->nreconcile; i++) {
        for (int k = 0; k < METRICS_RECONCILE_KINDS; k++) {
            put(r, "omnisync_reconcile_drift{source=\"");
            put_label_value(r, m->reconcile[i].source);
            put(r, "\",kind=\"%s\"} %lld\n", metrics_reconcile_kinds[k],
                m->reconcile[i].drift[k]);
        }
    }
    put_gauge_double(r, "omnisync_reconcile_last_success_timestamp_seconds",
                     "Unix time the last reconcile run of this process completed; 0 before the "
                     "first.",
                     m->reconcile_last_success_timestamp_seconds);
}

int metrics_render(const struct metrics *m, const char *version, char **out, size_t *len)
{
    struct textbuf r = {.first = 8192};
    int op, result;

    *out = NULL;
    *len = 0;
    if (textbuf_reserve(&r, 0) != 0)
        return OMNISYNC_ENOMEM;
    r.p[0] = '\0';

    if (m->outbox_rows_known) {
        put_family(&r, "omnisync_outbox_rows", "gauge",
                   "Outbox rows by status, as of the last periodic count.");
        for (int status = 0; status < METRICS_STATUS_COUNT; status++)
            put(&r, "omnisync_outbox_rows{status=\"%s\"} %lld\n",
                metrics_status_name((enum metrics_status)status), m->outbox_rows[status]);
    }

    put_family(&r, "omnisync_deliveries_total", "counter",
               "Delivery outcomes by operation and result.");
    for (op = 0; op < METRICS_OP_COUNT; op++)
        for (result = 0; result < METRICS_RESULT_COUNT; result++)
            put(&r, "omnisync_deliveries_total{op=\"%s\",result=\"%s\"} %llu\n",
                metrics_op_name((enum metrics_op)op),
                metrics_result_name((enum metrics_result)result), m->deliveries[op][result]);

    put_http_requests(&r, m);

    put_family(&r, "omnisync_names_transliterated_total", "counter",
               "Names sent transliterated because the API's pattern refuses them as written.");
    for (int i = 0; i < METRICS_SOURCES && m->names_transliterated[i].source[0] != '\0'; i++) {
        put(&r, "omnisync_names_transliterated_total{source=\"");
        put_label_value(&r, m->names_transliterated[i].source);
        put(&r, "\"} %llu\n", m->names_transliterated[i].total);
    }

    put_histogram(&r, "omnisync_delivery_seconds",
                  "Time from claiming an outbox row to the outcome of its delivery.",
                  &m->delivery_seconds);
    put_histogram(&r, "omnisync_commit_to_delivery_seconds",
                  "Time from the CRM change entering the outbox to the outcome of its delivery.",
                  &m->commit_to_delivery_seconds);

    if (m->outbox_rows_known)
        put_gauge_double(&r, "omnisync_oldest_pending_age_seconds",
                         "Age of the oldest pending outbox row, as of the last periodic count.",
                         m->oldest_pending_age_seconds);
    put_gauge_int(&r, "omnisync_db_connected",
                  "1 while the work and recorder connections to the database are up.",
                  m->db_connected ? 1 : 0);
    put_gauge_int(&r, "omnisync_listening", "1 while LISTEN on the outbox channel is active.",
                  m->listening ? 1 : 0);
    put_gauge_int(&r, "omnisync_in_flight", "Deliveries with a request to Omnidesk in flight.",
                  (long long)m->in_flight);
    put_gauge_int(&r, "omnisync_circuit_open",
                  "1 while the circuit breaker holds deliveries back because the API is failing.",
                  m->circuit_open ? 1 : 0);
    put_gauge_int(&r, "omnisync_paused", "1 while a pause flag is set in omnisync.control.",
                  m->paused ? 1 : 0);
    put_gauge_int(&r, "omnisync_purges_held", "Purges held back by the purge guard.",
                  m->purges_held);
    put_gauge_double(&r, "omnisync_api_pause_seconds",
                     "Seconds left of a pause the Omnidesk API asked for (429/503 with "
                     "Retry-After, capped at max_retry_after); 0 when requests are not paused.",
                     m->api_pause_seconds);
    put_gauge_int(&r, "omnisync_api_key_refused",
                  "1 while the Omnidesk API refuses the key (401/403) and delivery is paused.",
                  m->api_key_refused ? 1 : 0);
    put_gauge_double(&r, "omnisync_last_success_timestamp_seconds",
                     "Unix time of the last successful delivery; 0 before the first.",
                     m->last_success_timestamp_seconds);
    put_reconcile(&r, m);

    put_family(&r, "omnisync_build_info", "gauge", "The running omnisync version; always 1.");
    put(&r, "omnisync_build_info{version=\"");
    put_label_value(&r, version != NULL ? version : "");
    put(&r, "\"} 1\n");

    if (r.failed) {
        free(r.p);
        return OMNISYNC_ENOMEM;
    }
    *out = r.p;
    *len = r.len;
    return 0;
}
