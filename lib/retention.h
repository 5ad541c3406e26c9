/*
 * retention: finished rows do not stay forever, and personal data not longer than needed
 * (DESIGN §4). Delivered and skipped rows are deleted after `retention`; their payloads are
 * scrubbed earlier when `payload_retention` is shorter. Work goes in small batches (one
 * statement each, on the work connection) so no long lock or transaction ever forms; a full
 * batch schedules the next one at once.
 */
#ifndef OMNISYNC_RETENTION_H
#define OMNISYNC_RETENTION_H

#include <uv.h>

#include "config.h"
#include "dbloop.h"
#include "errors.h"

#define RETENTION_BATCH 1000

struct retention {
    uv_timer_t timer;
    struct dbloop *db;
    const struct config *cfg; /* read at each run: a reload applies */
    int running;
    unsigned long long pruned;
    unsigned long long scrubbed;
    int closing; /* 1: retention_close was called; 2: close_cb has run */
    int timer_open;
    void (*close_cb)(struct retention *r);
};

/* Starts the timer on `loop`; `db` and `cfg` must outlive the module. */
int retention_init(struct retention *r, uv_loop_t *loop, struct dbloop *db,
                   const struct config *cfg) OMNISYNC_MUST_CHECK;
/* The interval between runs for this config: a quarter of the shorter retention, 1 s..60 s. */
uint64_t retention_interval_ms(const struct config *cfg);
/* Closes the timer; close_cb (may be NULL) runs once the timer is closed and a run in flight has
 * come back (close the work connection too: it fails the run with "closing"). A no-op when
 * called again. */
void retention_close(struct retention *r, void (*close_cb)(struct retention *r));

#endif
