/*
 * backfill: enqueue every existing row of a source (the initial sync, or a resync after a
 * TRUNCATE), in batches, resumable, without starving live changes (DESIGN §5).
 *
 * Each batch is one transaction that inserts the rows into the outbox and records the last key
 * in omnisync.backfill, so an interrupted backfill resumes after the last committed batch and
 * never enqueues a row twice. Live changes are not starved because the backfill only adds a
 * batch while fewer than `window` of its rows wait undelivered: a live change never queues
 * behind more than that.
 */
#ifndef OMNISYNC_BACKFILL_H
#define OMNISYNC_BACKFILL_H

#include <libpq-fe.h>
#include <signal.h>

#include "config.h"
#include "errors.h"

struct backfill_options {
    long long batch;     /* rows per batch (default 1000) */
    long long window;    /* at most this many of its rows pending; 0 = one batch; < 0 = no limit */
    int restart;         /* start over even if an unfinished backfill could resume */
    volatile sig_atomic_t *stop; /* set by a signal handler: stop after the current batch */
    /* Progress, called after each batch and while waiting; may be NULL. */
    void (*progress)(void *arg, long long enqueued, long long pending, int waiting);
    void *arg;
};

/*
 * Runs the backfill of `src` to the end (0), or until *stop is set (OMNISYNC_ECANCELED: resume by
 * running it again), or fails with a negative code and err set.
 */
int backfill_run(PGconn *conn, const struct config_source *src, const struct backfill_options *o,
                 long long *enqueued, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

#endif
