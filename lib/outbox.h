/*
 * outbox: every statement the daemon runs on the omnisync tables (DESIGN §1), behind structs.
 *
 * The claim, the outcomes written back by omnisync.record_outcomes(), lease renewal, the
 * renaming of leases whose outcome was lost, the purge guard's reservation, the status counts,
 * retention and the process row. Nothing else in the daemon knows SQL text on these tables or
 * the JSON keys of an outcome: modules pass `struct delivery_outcome` and `struct outbox_row`,
 * and this module turns them into statements and parameters, and result columns (found by name,
 * once per result) back into structs. The operator commands' SQL is in operator.c; the DDL in
 * sql/ and schema.c.
 *
 * The asynchronous calls queue one statement on a dbloop and return 0 or a negative code;
 * their callback is the dbloop's (res NULL and err set on failure), with typed readers below.
 */
#ifndef OMNISYNC_OUTBOX_H
#define OMNISYNC_OUTBOX_H

#include <json-c/json.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "dbloop.h"
#include "errors.h"
#include "metrics.h"
#include "omnidesk.h"

/* ---- outcomes: what delivery decided for a segment of rows, for record_outcomes() ---- */

enum outbox_status {
    OUTBOX_DONE,   /* delivered (or nothing to send): the rows are done */
    OUTBOX_FAILED, /* a permanent answer or attempts exhausted */
    OUTBOX_HELD,   /* a purge the guard holds */
    OUTBOX_RETRY   /* back to pending, next attempt after delay_ms; an attempt spent or not */
};

/* One request of the plan, for omnisync.delivery_attempt. */
struct outbox_attempt {
    double at; /* epoch seconds, when it was sent */
    enum omnidesk_endpoint endpoint;
    enum omnidesk_class class;
    int http_status; /* 0: no (complete) answer */
    int duration_ms;
    char error[512]; /* "" none */
};

/* What the outcome says sync_state now is (the customer as known at Omnidesk). */
struct outbox_sync {
    int reset; /* the customer is gone (purged): sync_state forgets it */
    int created;
    int create_unknown;    /* look up before any other request (delivery.h) */
    long long omnidesk_id; /* 0 unknown */
    char **channels;       /* "email:<addr>", "telephone:<e164>" */
    size_t nchannels;
};

/* Reads a claimed row's sync text (outbox_row.sync) into *out (zeroed first; NULL text leaves
 * it so). 0, or OMNISYNC_EINVAL (not JSON: *out stays empty) or OMNISYNC_ENOMEM. */
int outbox_sync_parse(const char *json, struct outbox_sync *out) OMNISYNC_MUST_CHECK;
/* Releases what *s holds (not s itself). */
void outbox_sync_clear(struct outbox_sync *s);

struct delivery_outcome {
    enum outbox_status status;
    enum metrics_op op;     /* for metrics only */
    const char *source;     /* borrowed from the delivery */
    long long brand_id;     /* as stored in the outbox (0 = configured brand) */
    const char *primary_id; /* borrowed from the delivery */
    long long *rows;        /* outbox ids of the segment, ascending (owned) */
    size_t nrows;
    long long sent_id;               /* the row whose data was sent (the segment's last) */
    double first_created;            /* epoch of the oldest change, for metrics only */
    char *result;                    /* done/held: plain words, or NULL (owned) */
    char *error;                     /* failed/retry: the answer's text, or NULL (owned) */
    int http_status;                 /* 0: none */
    long long delay_ms;              /* retry: next attempt after this */
    int spend;                       /* the outcome spends an attempt of its rows */
    int purged;                      /* the customer was purged */
    int names_transliterated;        /* for metrics only: names sent transliterated */
    struct outbox_sync *sync;        /* NULL: sync_state unchanged (owned) */
    struct outbox_attempt *attempts; /* the plan's requests (owned) */
    size_t nattempts;
};

/* Releases what the outcome owns (not the struct itself). */
void delivery_outcome_free(struct delivery_outcome *o);

/*
 * The outcome as record_outcomes() reads it, NULL when out of memory; the caller owns the
 * reference. Its text is written directly, not built as a json-c tree: the result is a JSON
 * string object holding that text (json_object_get_string) that prints as the text itself, so
 * an array of them prints as the batch. The readers below take it or a tree.
 */
struct json_object *outbox_outcome_json(const struct delivery_outcome *o);

/*
 * The outcome that replaces one the database refused (`outcome`, JSON from
 * outbox_outcome_json): its rows failed, with the SQLSTATE only (the refused text may be what
 * broke it, and the server's message may quote a value), none of the refused outcome's texts,
 * and a sync state that makes the customer's next delivery look it up before it creates
 * anything. NULL when out of memory.
 */
struct json_object *outbox_outcome_refusal(struct json_object *outcome, const char *sqlstate);
/* Whether the JSON outcome is already such a replacement. */
int outbox_outcome_is_refusal(struct json_object *o);
/* The JSON outcome's sent row. */
long long outbox_outcome_sent_id(struct json_object *o);
/* The ids of every row of a batch of JSON outcomes as a PostgreSQL array literal ("{1,2}");
 * malloc'd, NULL when out of memory. */
char *outbox_batch_row_ids(struct json_object *batch);

/* ---- asynchronous statements of the daemon ---- */

/* Writes a batch (a JSON array of outcomes) for `process`. */
int outbox_record_outcomes(struct dbloop *db, const char *process, struct json_object *batch,
                           dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
/* Renames the lease holder of rows `ids` (outbox_batch_row_ids) still pending and leased by
 * `process` to "<process> (outcome not recorded)": renewal leaves them, the lease runs out. */
int outbox_mark_unrecorded(struct dbloop *db, const char *process, const char *ids,
                           dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
/* Extends the lease of every pending row `process` holds to now + lease_ms. */
int outbox_renew_leases(struct dbloop *db, const char *process, unsigned long long lease_ms,
                        dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
/* Asks the purge guard for one purge of row `sent_id`; read the answer with
 * outbox_reservation_granted(). */
int outbox_reserve_purge(struct dbloop *db, long long sent_id, long long max_per_hour,
                         const char *process, dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
int outbox_reservation_granted(const PGresult *res);

/* ---- the claim ---- */

#define OUTBOX_CLAIM_STATEMENT "omnisync_claim"
/* The PREPARE of the claim, to run after each connect of the connection that claims. */
int outbox_claim_prepare_sql(char *out, size_t len) OMNISYNC_MUST_CHECK;

struct outbox_claim {
    unsigned limit; /* customers at most */
    unsigned long long lease_ms;
    const char *process;
    int per_customer;           /* rows per customer at most */
    const char *const *sources; /* configured source names */
    size_t nsources;
    int scan; /* rows looked at, at most */
    int move; /* captured rows moved into the outbox first, at most (0: none, and no look) */
};
int outbox_claim(struct dbloop *db, const struct outbox_claim *c, dbloop_query_cb cb,
                 void *arg) OMNISYNC_MUST_CHECK;

/* Captured rows a claim or a move takes into the outbox at most (sql/005_claim_batch.sql). */
#define OUTBOX_MOVE_MAX 2000
/*
 * Moves up to `limit` captured rows into the outbox, on a connection that does not claim
 * (omnisync.move_apart(), sql/012_moves_apart.sql), without waiting for another process's move;
 * read the answer with outbox_moved().
 */
int outbox_move(struct dbloop *db, int limit, dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
#define OUTBOX_MOVE_BUSY (-1)    /* another process holds the move: nothing moved */
#define OUTBOX_MOVE_UNKNOWN (-2) /* no answer (the statement failed) */
/* Rows the move took, OUTBOX_MOVE_BUSY or OUTBOX_MOVE_UNKNOWN. */
int outbox_moved(const PGresult *res);

/* The claim result's columns, found by name once per result. */
struct outbox_claim_columns {
    int id, head_id, source, brand_id, primary_id, op, old_data, new_data, attempts, orphaned,
        created_epoch, sync, captured_left, passed_over;
};
/* 0, or OMNISYNC_EINVAL when a column is missing. */
int outbox_claim_columns(const PGresult *res,
                         struct outbox_claim_columns *cols) OMNISYNC_MUST_CHECK;

/* One claimed row; the strings point into the PGresult. */
struct outbox_row {
    long long id;
    long long head_id; /* the customer's first claimed row: rows of one customer share it */
    const char *source;
    long long brand_id;
    const char *primary_id;
    const char *op;
    const char *old_data; /* JSON text or NULL */
    const char *new_data;
    int attempts;
    int orphaned; /* the previous holder's lease ran out with no outcome recorded */
    double created_epoch;
    const char *sync; /* the customer's sync_state as JSON text, or NULL */
};
/* Reads result row `row` into *out: 1, or 0 when it is the claim's status row (no claimed row;
 * *out untouched). */
int outbox_claim_row(const PGresult *res, const struct outbox_claim_columns *cols, int row,
                     struct outbox_row *out);
/*
 * What the claim's status row says it left behind (sql/005_claim_batch.sql), rows no wake-up
 * will announce; an answer without a status row says yes to both.
 * left: captured rows may still be in omnisync.capture (its move filled its batch of
 * OUTBOX_MOVE_MAX, or another process was moving); never after a claim with move 0.
 * passed_over: it passed over due rows behind an earlier row of their customer that this
 * process holds (claimable once that row's outcome is recorded), or stopped at its scan limit.
 */
int outbox_claim_left(const PGresult *res, const struct outbox_claim_columns *cols);
int outbox_claim_passed_over(const PGresult *res, const struct outbox_claim_columns *cols);

/* ---- the service's statements ---- */

/* Rows by status, the oldest pending change's age, whether a pause flag is set, and the
 * capture table's rows and length. */
struct outbox_counts {
    long long rows[METRICS_STATUS_COUNT]; /* by enum metrics_status */
    double oldest_pending_age_seconds;
    int paused;
    long long capture_rows;  /* rows in omnisync.capture (a DELETE's row of keys is one) */
    long long capture_bytes; /* its length on disk */
};
int outbox_count(struct dbloop *db, dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
/* 0, or OMNISYNC_EINVAL when the result is not a count's. */
int outbox_counts_read(const PGresult *res, struct outbox_counts *out) OMNISYNC_MUST_CHECK;
/* VACUUM omnisync.capture (not in a transaction: the connection must be idle in none). */
int outbox_vacuum_capture(struct dbloop *db, dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;

/* The process' row in omnisync.process (what only memory knows, for omnisync status); rows
 * unseen for an hour go. */
struct outbox_heartbeat {
    const char *process;
    const char *circuit;
    const char *api;
    unsigned in_flight;
};
int outbox_heartbeat(struct dbloop *db, const struct outbox_heartbeat *h, dbloop_query_cb cb,
                     void *arg) OMNISYNC_MUST_CHECK;
/* Removes the process' row (a clean stop). */
int outbox_farewell(struct dbloop *db, const char *process, dbloop_query_cb cb,
                    void *arg) OMNISYNC_MUST_CHECK;

/* Retention: deletes done/skipped rows older than retention_ms and clears the payload of those
 * older than payload_ms, `batch` rows each at most. */
int outbox_prune(struct dbloop *db, unsigned long long retention_ms, unsigned long long payload_ms,
                 int batch, dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;
/* The numbers pruned and scrubbed; 0 or OMNISYNC_EINVAL. */
int outbox_prune_read(const PGresult *res, long long *pruned,
                      long long *scrubbed) OMNISYNC_MUST_CHECK;

#endif
