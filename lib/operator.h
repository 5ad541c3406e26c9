/*
 * operator: what operators do to the outbox and the pause flags (DESIGN §4, §5).
 *
 * Every action runs in one transaction, is recorded in omnisync.operator_action with the
 * database user, the time and the reason, and rings the doorbell (NOTIFY omnisync) so running
 * daemons act on it at once. Results are handed out as PGresult for the CLI to print; the caller
 * PQclear()s them.
 */
#ifndef OMNISYNC_OPERATOR_H
#define OMNISYNC_OPERATOR_H

#include <libpq-fe.h>
#include <stddef.h>

#include "errors.h"

struct config_source;

/* Rings the doorbell (pg_notify('omnisync', ''): running daemons poll the outbox at once) and
 * commits; every transaction that enqueues or changes rows ends here. */
int operator_commit(PGconn *conn, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* Sets (paused = 1) or clears the pause flag of `source`, or of every source when NULL. */
int outbox_set_paused(PGconn *conn, const char *source, int paused, const char *reason,
                      char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* The pause flags in force: scope, paused, changed_by, changed_at, reason. */
int outbox_pause_flags(PGconn *conn, PGresult **out, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* Held purges: id, source, primary_id, created_at, held_reason, oldest first. */
int outbox_held_purges(PGconn *conn, PGresult **out, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * Moves held rows back to pending (release) or to skipped (skip), ids[0..n) or every held row
 * when all is set. Ids that are not held are reported in *not_held (a malloc'd, comma-separated
 * list, or NULL) and nothing is changed then. *changed receives the number of rows moved.
 */
int outbox_release_purges(PGconn *conn, const long long *ids, size_t n, int all, int skip,
                          const char *reason, long long *changed, char **not_held, char *err,
                          size_t errlen) OMNISYNC_MUST_CHECK;

/* Filters of outbox list and replay --failed; NULL fields are not applied. */
struct outbox_filter {
    const char *status;     /* pending, held, done, failed, skipped */
    const char *source;
    const char *primary_id;
    const char *since;      /* a timestamp, or a duration ago ("2h", "7d") */
    const char *error;      /* substring of last_error */
    long long limit;        /* 0 = no limit */
};

/* Checks a filter's values; returns 0 or OMNISYNC_EINVAL with the reason in err. The since
 * value is rewritten into *since_sql (a timestamptz literal for the query; caller frees). */
int outbox_check_filter(PGconn *conn, const struct outbox_filter *f, char **since_sql, char *err,
                        size_t errlen) OMNISYNC_MUST_CHECK;

/* Rows matching the filter, newest first: id, source, primary_id, op, status, attempts,
 * created_at, outcome (result or last_error). */
int outbox_list(PGconn *conn, const struct outbox_filter *f, PGresult **out, char *err,
                size_t errlen) OMNISYNC_MUST_CHECK;

/* One row in full (*row; payload columns only when show_data) and its attempts (*attempts).
 * OMNISYNC_ENOTFOUND when there is no such row. */
int outbox_show(PGconn *conn, long long id, int show_data, PGresult **row, PGresult **attempts,
                char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * replay: failed rows back to pending with attempts reset (ids, or every failed row matching
 * the filter); skip: rows given up on purpose (failed, held, or pending and not leased; ids, or
 * every such row of f->source, of f->status if set).
 * A row that is not in a state the action applies to (e.g. superseded) makes the whole action
 * fail with the reason, naming the row; nothing changes then. dry_run lists what would change.
 * *rows receives id, source, primary_id, status of the rows acted on.
 */
int outbox_replay(PGconn *conn, const long long *ids, size_t n, const struct outbox_filter *f,
                  const char *reason, int dry_run, PGresult **rows, char *err,
                  size_t errlen) OMNISYNC_MUST_CHECK;
int outbox_skip(PGconn *conn, const long long *ids, size_t n, const struct outbox_filter *f,
                const char *reason, int dry_run, PGresult **rows, char *err,
                size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * Moves the changes the CRM committed that no daemon has moved into the outbox yet
 * (omnisync.capture, sql/003_capture.sql) into it, so that an operator command sees and acts on
 * all of them. Best effort: a failure (no right to move, an older schema) changes nothing.
 */
void operator_move_captured(PGconn *conn);

/* status: counts by source and status, oldest pending age; pause flags; recent failures;
 * processes seen lately. Four results, each to be PQclear()ed. */
int outbox_status(PGconn *conn, PGresult **counts, PGresult **failures, PGresult **processes,
                  char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* Backfill's bookkeeping in omnisync.backfill (backfill.c runs the batches, in its own
 * transactions). begin: where an unfinished backfill of `source` stopped (*last_key malloc'd, or
 * NULL to start from the first key), or a new run (restart, or the last one finished), recorded
 * as an operator action. pending: its rows still pending (-1 on error). progress: a batch of
 * `added` rows up to `last_key` committed with it. finished: the run reached the end. */
int operator_backfill_begin(PGconn *conn, const char *source, int restart, char **last_key,
                            long long *enqueued, char *err, size_t errlen) OMNISYNC_MUST_CHECK;
long long operator_backfill_pending(PGconn *conn, const char *source, char *err, size_t errlen);
int operator_backfill_progress(PGconn *conn, const char *source, const char *last_key,
                               long long added, char *err, size_t errlen) OMNISYNC_MUST_CHECK;
int operator_backfill_finished(PGconn *conn, const char *source, char *err,
                               size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * The statement that enqueues the next backfill batch of `src` as outbox rows of op 'backfill'
 * carrying the mapped columns, exactly as the trigger would (the source's rows: schema.c's
 * page): $1 the last key done (NULL to start), $2 the batch size; it returns (rows enqueued, last
 * key of the batch). *sql is malloc'd; 0 or a negative code with err set.
 */
int operator_backfill_sql(PGconn *conn, const struct config_source *src, char **sql, char *err,
                          size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * The two statements of `omnisync reconcile` for `src` (*read and *repair malloc'd; 0 or a
 * negative code with err set):
 *  - *read: the next page of CRM rows in primary id order ($1 the last key done, NULL to start;
 *    $2 the page size): (key text, mapped columns as jsonb text, brand bigint); schema.c's read.
 *  - *repair: enqueues op 'reconcile' rows carrying each listed customer's current state, read
 *    in the same statement: $1 a jsonb array of {"p": primary id, "reset": bool, "forget":
 *    [channel keys]}, each key listed once, $2 the highest outbox id when the run started. A
 *    customer with an outbox row newer than $2 (changed in the CRM meanwhile) is left alone: that
 *    row carries newer data. For those enqueued, sync_state learns what reconcile saw (reset: the
 *    customer is gone at Omnidesk; forget: channels it lacks), so delivery creates or re-adds
 *    them. It returns one row per enqueued customer.
 */
int operator_reconcile_sql(PGconn *conn, const struct config_source *src, char **read,
                           char **repair, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* One customer for the repair statement: forget_created (reset) and the channel keys
 * ("email:…", "telephone:…", or NULL) Omnidesk lacks. Borrowed strings. */
struct operator_repair {
    const char *primary_id;
    int reset;
    const char *forget[2];
};

/* Runs `sql` (operator_reconcile_sql's *repair) for items[0..n) in one transaction that rings the
 * doorbell; *enqueued receives the customers enqueued (0 on failure: nothing was). */
int operator_reconcile_repair(PGconn *conn, const char *sql, const struct operator_repair *items,
                              size_t n, const char *start_id, long long *enqueued, char *err,
                              size_t errlen) OMNISYNC_MUST_CHECK;

/* The highest outbox id so far ("0" when empty) into out: rows above it are newer. */
int operator_outbox_last_id(PGconn *conn, char *out, size_t outlen, char *err,
                            size_t errlen) OMNISYNC_MUST_CHECK;

/* The customers of `source` with outbox rows not yet delivered (pending or held; captured changes
 * are moved into the outbox first): brand_id,
 * primary_id, each once. *out is the caller's to PQclear. */
int operator_open_customers(PGconn *conn, const char *source, PGresult **out, char *err,
                            size_t errlen) OMNISYNC_MUST_CHECK;

/* Records a reconcile run of `source` and its figures (no values) as an operator action. */
int operator_reconcile_record(PGconn *conn, const char *source, const char *figures, char *err,
                              size_t errlen) OMNISYNC_MUST_CHECK;

/* The last completed reconcile run per source (source, finished_at, db_user, figures), for
 * `status`. *out is the caller's to PQclear. 0 or OMNISYNC_EDB with err set. */
int operator_reconcile_last_runs(PGconn *conn, PGresult **out, char *err,
                                 size_t errlen) OMNISYNC_MUST_CHECK;

#endif
