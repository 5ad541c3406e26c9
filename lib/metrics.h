/*
 * metrics: the figures of DESIGN §7, kept in memory and rendered in Prometheus' text format.
 *
 * The engine updates them from the loop (no locks: one thread). Labels never carry ids or
 * customer data: only op, result, endpoint, code and status, each from a small fixed set.
 * Names follow Prometheus' rules: base units (seconds), _total for counters, one HELP and TYPE
 * line per family.
 */
#ifndef OMNISYNC_METRICS_H
#define OMNISYNC_METRICS_H

#include <stddef.h>

#include "errors.h"

/* omnisync_deliveries_total{op,result} */
enum metrics_op {
    METRICS_OP_CREATE,      /* "create" */
    METRICS_OP_UPDATE,      /* "update" */
    METRICS_OP_ADD_CHANNEL, /* "add_channel" */
    METRICS_OP_PURGE,       /* "purge" */
    METRICS_OP_TRUNCATE,    /* "truncate" */
    METRICS_OP_NONE,        /* "none": nothing to send */
    METRICS_OP_COUNT
};
enum metrics_result {
    METRICS_RESULT_DONE,   /* "done" */
    METRICS_RESULT_FAILED, /* "failed" */
    METRICS_RESULT_RETRY,  /* "retry" */
    METRICS_RESULT_HELD,   /* "held" */
    METRICS_RESULT_COUNT
};
/* omnisync_outbox_rows{status} */
enum metrics_status {
    METRICS_STATUS_PENDING,
    METRICS_STATUS_HELD,
    METRICS_STATUS_DONE,
    METRICS_STATUS_FAILED,
    METRICS_STATUS_SKIPPED,
    METRICS_STATUS_COUNT
};

#define METRICS_ENDPOINTS 8 /* omnidesk_endpoint values */
#define METRICS_CODES 16    /* distinct HTTP codes tracked per endpoint; more go to "other" */
#define METRICS_BUCKETS 14
#define METRICS_RECONCILE_SOURCES 32 /* CONFIG_MAX_SOURCES */
#define METRICS_RECONCILE_KINDS 5

struct metrics_histogram {
    unsigned long long buckets[METRICS_BUCKETS]; /* cumulative counts are computed at render */
    unsigned long long count;
    double sum;
};

#define METRICS_SOURCES 32 /* CONFIG_MAX_SOURCES */

/* A counter per configured source; the name is the [source NAME] of the config, not data. */
struct metrics_source_counter {
    char source[64]; /* "" = unused slot */
    unsigned long long total;
};

struct metrics_code_counter {
    int code; /* HTTP status; 0 = no answer (transport error); -1 = unused slot */
    unsigned long long total;
};

struct metrics {
    unsigned long long deliveries[METRICS_OP_COUNT][METRICS_RESULT_COUNT];
    struct metrics_code_counter http[METRICS_ENDPOINTS][METRICS_CODES];
    unsigned long long http_other[METRICS_ENDPOINTS];
    struct metrics_histogram delivery_seconds;           /* claim to outcome, per delivery */
    struct metrics_histogram commit_to_delivery_seconds; /* row created_at to outcome */
    /* Gauges. outbox_rows and oldest_pending_age come from a periodic database query. */
    long long outbox_rows[METRICS_STATUS_COUNT];
    int outbox_rows_known; /* 0 until the first query answered: not rendered before */
    double oldest_pending_age_seconds;
    int db_connected;
    int listening;
    unsigned in_flight;
    int circuit_open;
    int paused; /* some pause flag is set in omnisync.control */
    long long purges_held;
    double last_success_timestamp_seconds; /* 0 = never */
    int api_key_refused;
    /* omnisync_names_transliterated_total{source}: names sent transliterated */
    struct metrics_source_counter names_transliterated[METRICS_SOURCES];
    double api_pause_seconds; /* left of a pause the API asked for (Retry-After); 0 = none */
    double outbox_counted_at; /* Unix time of the last count that answered; 0 = none yet */
    /* The last reconcile run the daemon made ([reconcile] interval): drift per source and kind
     * (missing, different, extra, unsendable, pending). Not rendered before the first. */
    struct metrics_reconcile {
        char source[64];
        long long drift[METRICS_RECONCILE_KINDS];
    } reconcile[METRICS_RECONCILE_SOURCES];
    size_t nreconcile;
    double reconcile_last_success_timestamp_seconds; /* 0 = never */
};

/* The kinds of omnisync_reconcile_drift{kind}, in the order of metrics_reconcile.drift. */
extern const char *const metrics_reconcile_kinds[METRICS_RECONCILE_KINDS];

/* Zeroes everything and marks the code slots unused. */
void metrics_init(struct metrics *m);
void metrics_count_delivery(struct metrics *m, enum metrics_op op, enum metrics_result result);
/* `endpoint` is an enum omnidesk_endpoint value; `code` the HTTP status or 0. */
void metrics_count_request(struct metrics *m, int endpoint, int code);
void metrics_observe(struct metrics_histogram *h, double seconds);
/* Makes `source` (copied) appear in the per-source counters, at 0 until counted. Sources beyond
 * METRICS_SOURCES are not tracked. */
void metrics_add_source(struct metrics *m, const char *source);
/* Adds `names` to omnisync_names_transliterated_total{source} (added if new). */
void metrics_count_transliterated(struct metrics *m, const char *source, unsigned long long names);

/* Names for labels. */
const char *metrics_op_name(enum metrics_op op);
const char *metrics_result_name(enum metrics_result result);
const char *metrics_status_name(enum metrics_status status);

/*
 * Writes `value` into `out` as the shortest decimal text that reads back as the same double
 * ("0.1", "2.5", "1e-05"), or "NaN", "+Inf", "-Inf" as the exposition format spells them.
 * `outlen` must be at least 32. 0 or OMNISYNC_EINVAL (buffer too small).
 */
int metrics_format_double(double value, char *out, size_t outlen) OMNISYNC_MUST_CHECK;

/*
 * Renders the Prometheus text exposition (version 0.0.4) into a malloc'd, NUL-terminated buffer
 * (*out; the caller frees it). `version` is omnisync's version for omnisync_build_info.
 * Returns 0 or OMNISYNC_ENOMEM.
 */
int metrics_render(const struct metrics *m, const char *version, char **out,
                   size_t *len) OMNISYNC_MUST_CHECK;

#endif
