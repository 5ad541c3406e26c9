/* retention: see retention.h. */
#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "outbox.h"

static void run(struct retention *r);

uint64_t retention_interval_ms(const struct config *cfg)
{
    uint64_t shortest = cfg->payload_retention_ms < cfg->retention_ms ? cfg->payload_retention_ms
                                                                      : cfg->retention_ms;
    uint64_t every = shortest / 4;
    if (every < 1000)
        every = 1000;
    if (every > 60000)
        every = 60000;
    return every;
}

static void on_timer(uv_timer_t *t)
{
    run(t->data);
}

static void maybe_closed(struct retention *r)
{
    if (r->closing != 1 || r->timer_open || r->running)
        return;
    r->closing = 2;
    if (r->close_cb != NULL)
        r->close_cb(r);
}

static void arm(struct retention *r, uint64_t delay)
{
    if (!r->closing)
        uv_timer_start(&r->timer, on_timer, delay, 0);
}

static void on_batch(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct retention *r = arg;
    (void)db;
    r->running = 0;
    if (r->closing) {
        maybe_closed(r);
        return;
    }
    if (res == NULL) {
        if (dbloop_error(db) != DBLOOP_ECLOSING && dbloop_error(db) != DBLOOP_ENOTCONN)
            log_warn("retention run failed; trying again later error=\"%s\"", err);
        arm(r, retention_interval_ms(r->cfg));
        return;
    }
    long long pruned = 0, scrubbed = 0;
    if (outbox_prune_read(res, &pruned, &scrubbed) != 0)
        log_warn("retention run answered no counts");
    r->pruned += (unsigned long long)pruned;
    r->scrubbed += (unsigned long long)scrubbed;
    if (pruned || scrubbed)
        log_debug("retention pruned=%lld scrubbed=%lld", pruned, scrubbed);
    /* A full batch means more is waiting: go on at once, one short statement at a time. */
    int full = pruned >= RETENTION_BATCH || scrubbed >= RETENTION_BATCH;
    arm(r, full ? 10 : retention_interval_ms(r->cfg));
}

static void run(struct retention *r)
{
    if (r->running)
        return;
    int rc = outbox_prune(r->db, r->cfg->retention_ms, r->cfg->payload_retention_ms,
                          RETENTION_BATCH, on_batch, r);
    if (rc == 0)
        r->running = 1;
    else
        arm(r, retention_interval_ms(r->cfg));
}

int retention_init(struct retention *r, uv_loop_t *loop, struct dbloop *db,
                   const struct config *cfg)
{
    memset(r, 0, sizeof(*r));
    r->db = db;
    r->cfg = cfg;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->timer_open = 1;
    arm(r, retention_interval_ms(cfg));
    return OMNISYNC_OK;
}

static void on_closed(uv_handle_t *h)
{
    struct retention *r = h->data;
    r->timer_open = 0;
    maybe_closed(r);
}

void retention_close(struct retention *r, void (*close_cb)(struct retention *r))
{
    if (r->closing)
        return;
    r->closing = 1;
    r->close_cb = close_cb;
    uv_close((uv_handle_t *)&r->timer, on_closed);
}
