/*
 * recorder: writes delivery outcomes back to the outbox, in batches (DESIGN §1).
 *
 * Outcomes queue up while a write is running and go together in the next one: one statement,
 * omnisync.record_outcomes(), per batch, whatever its size. A write lost with the connection is
 * written again once it is back; record_outcomes only touches rows still leased by this process,
 * so writing a batch twice changes nothing.
 *
 * Linger (recorder_linger, off unless asked for): with nothing being written, outcomes that are
 * all plain `done` (not purged, no sync reset) wait up to linger_ms, or until linger_max of them
 * are queued, so that several go in one transaction: at one request slot every outcome was a
 * transaction of its own, ~0.3 ms of the server's CPU each. A linger that fills within 50 ms
 * makes the lingers of the next second 8 ms long: that fast, a full linger cost rate, and none
 * at all a write per few outcomes. Any other outcome, recorder_flush() and recorder_add_now()
 * start the write at once. A plain done makes no row due by itself (see
 * the dispatcher's "Claim scheduling"), and its rows stay leased (and renewed) meanwhile; a crash
 * within the linger sends those rows again after their lease (at-least-once on the wire, DESIGN
 * §3: creates become lookups).
 */
#ifndef OMNISYNC_RECORDER_H
#define OMNISYNC_RECORDER_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dbloop.h"
#include "errors.h"
#include "outbox.h"

struct recorder;
/* What became of a batch, for the callback. */
enum { RECORDER_COMMITTED = 0, RECORDER_DROPPED = 1, RECORDER_REFUSED = 2 };
/*
 * Called after each batch is committed (RECORDER_COMMITTED); dropped (RECORDER_DROPPED: refused
 * five times in a row for a reason about the database rather than the data, or even the failure
 * that replaced a refused outcome was refused five times; its rows are delivered again once their
 * lease runs out); or when one outcome the database refused five times alone is replaced by the
 * failure of its rows (RECORDER_REFUSED, outcomes = 1, refused_id its row). `outcomes` is the
 * number concerned. A batch refused for its data is written again in halves, so one refused
 * outcome never takes the others down.
 */
typedef void (*recorder_cb)(struct recorder *r, size_t outcomes, int dropped);

struct recorder {
    struct dbloop *db;
    char process[128];
    struct json_object *pending; /* outcomes waiting for the next write */
    struct json_object *writing; /* the batch being written, or NULL */
    struct json_object *alone;   /* parts of refused batches: each written alone, first */
    int writing_alone;           /* `writing` came from `alone` */
    unsigned failures;           /* consecutive SQL errors on the current batch */
    recorder_cb on_recorded;
    void *data;
    unsigned long long dropped;  /* outcomes dropped since start (their rows are re-sent) */
    unsigned long long refused;  /* outcomes refused and replaced by their rows' failure */
    long long refused_id;        /* the row of the last refused outcome */
    uv_timer_t linger_timer;     /* set up by recorder_linger */
    int linger_init;             /* linger_timer is initialised (and must be closed) */
    uint64_t linger_ms;          /* 0: every write starts at once */
    size_t linger_max;
    int pending_plain;           /* `pending` holds plain done outcomes only */
    uint64_t linger_started;     /* loop time the running linger began */
    uint64_t fast_until;         /* loop time: outcomes came fast, short lingers before it */
    unsigned long long lingered; /* writes that waited for the linger */
    void (*closed_cb)(struct recorder *r);
};

/* `db` (a connection for the recorder alone: nothing else should queue behind its batches)
 * must outlive the recorder; it may be closed after recorder_free(). Returns 0 or
 * OMNISYNC_ENOMEM (nothing to release then). */
int recorder_init(struct recorder *r, struct dbloop *db, const char *process, recorder_cb cb,
                  void *data) OMNISYNC_MUST_CHECK;
/* Queues outcomes[0..n) (copied: the caller keeps and frees them) and starts a write if none is
 * running. An outcome that cannot be queued (out of memory) is logged; its rows stay leased and
 * are delivered again after their lease. */
void recorder_add(struct recorder *r, const struct delivery_outcome *outcomes, size_t n);
/* As recorder_add, then starts the write at once, without the linger. */
void recorder_add_now(struct recorder *r, const struct delivery_outcome *outcomes, size_t n);
/* Starts a write of what is queued, if none is running (e.g. once the database is back), cutting
 * the linger short. */
void recorder_flush(struct recorder *r);
/* As recorder_flush, but leaves a linger running: what is queued waits for its end. */
void recorder_retry(struct recorder *r);
/*
 * Lets writes of plain `done` outcomes wait up to `ms` (0: never again; what waits is written
 * now), or until `max` are queued, on a timer of `loop`. 0 or a libuv error code. Once called,
 * recorder_close() must close the timer before recorder_free().
 */
int recorder_linger(struct recorder *r, uv_loop_t *loop, uint64_t ms, size_t max) OMNISYNC_MUST_CHECK;
/* Whether queued outcomes wait for the linger now. */
int recorder_lingering(const struct recorder *r);
/* Closes the linger timer (no write starts after this); closed_cb runs once it is closed, at
 * once when recorder_linger was never called. Queued outcomes stay queued for recorder_free. */
void recorder_close(struct recorder *r, void (*closed_cb)(struct recorder *r));
/* Nothing queued and nothing being written. */
int recorder_idle(const struct recorder *r);
/* Outcomes not yet committed. */
size_t recorder_backlog(const struct recorder *r);
/* Releases what is queued (the rows stay leased until their lease expires). */
void recorder_free(struct recorder *r);

#endif
