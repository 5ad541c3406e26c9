/* retention: see retention.h. */
#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

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
    long long pruned = atoll(PQgetvalue(res, 0, 0));
    long long scrubbed = atoll(PQgetvalue(res, 0, 1));
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
    char retention[24], payload[24], batch[16];
    snprintf(retention, sizeof(retention), "%" PRIu64, r->cfg->retention_ms);
    snprintf(payload, sizeof(payload), "%" PRIu64, r->cfg->payload_retention_ms);
    snprintf(batch, sizeof(batch), "%d", RETENTION_BATCH);
    const char *params[] = {retention, payload, batch};
    int rc = dbloop_query(
        r->db,
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
        "SELECT (SELECT count(*) FROM pruned), (SELECT count(*) FROM scrubbed)",
        3, params, DBLOOP_FAIL_FAST, on_batch, r);
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
