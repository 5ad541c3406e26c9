/*
 * recorder: batched outcome writes. See recorder.h.
 *
 * It writes on a connection of its own (the service's second dbloop): a batch of outcomes can
 * take tens of milliseconds, and on a shared connection every claim queued behind it while the
 * request slots ran dry.
 */
#include "recorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define RECORDER_MAX_FAILURES 5
/* A linger that fills up (linger_max queued) this soon after it began means outcomes come fast:
 * for the next RECORDER_FAST_MS a linger lasts RECORDER_FAST_LINGER_MS instead of linger_ms.
 * Gathering for the whole linger (up to linger_max) cost rate where the cores are the limit
 * (bench/drain, L = 0 and L = 5 ms with M = 16 and 64: 10 - 45 % fewer rows a second); writing
 * at once instead made a write per 3 - 4 outcomes (280 - 300 writes per 1,000 rows at 3,000 rows
 * a second, each ~0.5 ms of PostgreSQL's CPU, however few outcomes it carries). 2 ms still made
 * 77 - 87 writes per 1,000 rows at 3,000 a second (L = 5 ms, M = 16; L = 20 ms, M = 64); 8 ms
 * makes 27 - 31 and took PostgreSQL's CPU per row there from 0.143 - 0.178 ms to 0.117 - 0.132,
 * the rate unchanged (bench/README.md, "linger8"). It delays no claim (recorder_add_now and
 * recorder_flush still write at once). */
#define RECORDER_LINGER_FULL_MS 50
#define RECORDER_FAST_MS 1000
#define RECORDER_FAST_LINGER_MS 8

static void start_write(struct recorder *r);
static void linger_or_write(struct recorder *r, int plain);


int recorder_init(struct recorder *r, struct dbloop *db, const char *process, recorder_cb cb,
                  void *data)
{
    memset(r, 0, sizeof(*r));
    r->db = db;
    snprintf(r->process, sizeof(r->process), "%s", process);
    r->on_recorded = cb;
    r->data = data;
    r->pending = json_object_new_array();
    r->alone = json_object_new_array();
    if (r->pending == NULL || r->alone == NULL) {
        json_object_put(r->pending);
        json_object_put(r->alone);
        return OMNISYNC_ENOMEM;
    }
    return OMNISYNC_OK;
}

void recorder_free(struct recorder *r)
{
    if (recorder_backlog(r) > 0)
        log_warn("exiting with outcomes not recorded; their rows are delivered again once their "
                 "lease expires outcomes=%zu",
                 recorder_backlog(r));
    json_object_put(r->pending);
    json_object_put(r->writing);
    json_object_put(r->alone);
    r->pending = r->writing = r->alone = NULL;
}

int recorder_idle(const struct recorder *r)
{
    return r->writing == NULL && json_object_array_length(r->pending) == 0 &&
           json_object_array_length(r->alone) == 0;
}

size_t recorder_backlog(const struct recorder *r)
{
    size_t n = json_object_array_length(r->pending);
    if (r->writing != NULL)
        n += json_object_array_length(r->writing);
    for (size_t i = 0; i < json_object_array_length(r->alone); i++)
        n += json_object_array_length(json_object_array_get_idx(r->alone, i));
    return n;
}

/* A plain `done`: record_outcomes' set-based path (sql/006), and no row of its customer due
 * because of it. Only these may wait for the linger. */
static int plain_done(const struct delivery_outcome *o)
{
    return o->status == OUTBOX_DONE && !o->purged && (o->sync == NULL || !o->sync->reset);
}

static void queue_outcomes(struct recorder *r, const struct delivery_outcome *outcomes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = outbox_outcome_json(&outcomes[i]);
        if (o == NULL || json_object_array_add(r->pending, o) != 0) {
            json_object_put(o);
            log_error("out of memory queueing an outcome; its rows are delivered again after "
                      "their lease outbox_id=%lld",
                      outcomes[i].sent_id);
        }
    }
}

void recorder_add(struct recorder *r, const struct delivery_outcome *outcomes, size_t n)
{
    if (json_object_array_length(r->pending) == 0)
        r->pending_plain = 1;
    for (size_t i = 0; i < n && r->pending_plain; i++)
        r->pending_plain = plain_done(&outcomes[i]);
    queue_outcomes(r, outcomes, n);
    linger_or_write(r, r->pending_plain);
}

void recorder_add_now(struct recorder *r, const struct delivery_outcome *outcomes, size_t n)
{
    r->pending_plain = 0;
    queue_outcomes(r, outcomes, n);
    recorder_flush(r);
}

static void on_linger(uv_timer_t *t)
{
    struct recorder *r = t->data;
    start_write(r);
}

/*
 * After outcomes were queued, or a write ended with outcomes queued meanwhile: a write of plain
 * outcomes only waits for the linger (armed by the first of them, so the wait is bounded from the
 * first; a short one while outcomes come fast) until linger_max are queued; anything else starts
 * it now. (An outcome that arrived while a write ran was written alone at once: one write in ten
 * at L = 100 ms, M = 1.)
 */
static void linger_or_write(struct recorder *r, int plain)
{
    if (r->writing != NULL)
        return;
    size_t n = json_object_array_length(r->pending);
    if (n > 0 && plain && r->linger_ms > 0 && r->linger_init &&
        json_object_array_length(r->alone) == 0) {
        uint64_t now = uv_now(r->linger_timer.loop);
        int active = uv_is_active((uv_handle_t *)&r->linger_timer);
        if (n >= r->linger_max) {
            if (active && now - r->linger_started < RECORDER_LINGER_FULL_MS)
                r->fast_until = now + RECORDER_FAST_MS;
        } else {
            if (!active) {
                uint64_t ms = now < r->fast_until && r->linger_ms > RECORDER_FAST_LINGER_MS
                                  ? RECORDER_FAST_LINGER_MS
                                  : r->linger_ms;
                uv_timer_start(&r->linger_timer, on_linger, ms, 0);
                r->linger_started = now;
                r->lingered++;
            }
            return;
        }
    }
    start_write(r);
}

int recorder_linger(struct recorder *r, uv_loop_t *loop, uint64_t ms, size_t max)
{
    if (ms == 0) {
        r->linger_ms = 0;
        recorder_flush(r);
        return 0;
    }
    if (!r->linger_init) {
        int rc = uv_timer_init(loop, &r->linger_timer);
        if (rc != 0)
            return rc;
        r->linger_timer.data = r;
        r->linger_init = 1;
    }
    r->linger_ms = ms;
    r->linger_max = max > 0 ? max : 1;
    return 0;
}

int recorder_lingering(const struct recorder *r)
{
    return r->linger_init && uv_is_active((const uv_handle_t *)&r->linger_timer);
}

static void on_linger_closed(uv_handle_t *h)
{
    struct recorder *r = h->data;
    if (r->closed_cb != NULL)
        r->closed_cb(r);
}

void recorder_close(struct recorder *r, void (*closed_cb)(struct recorder *r))
{
    r->linger_ms = 0;
    r->closed_cb = closed_cb;
    if (!r->linger_init) {
        if (closed_cb != NULL)
            closed_cb(r);
        return;
    }
    r->linger_init = 0; /* no write and no timer start from here on */
    uv_close((uv_handle_t *)&r->linger_timer, on_linger_closed);
}

/* Puts `batches` (taken over) in front of the batches written alone. */
static void alone_front(struct recorder *r, struct json_object *batches)
{
    for (size_t i = 0; i < json_object_array_length(r->alone); i++)
        json_object_array_add(batches, json_object_get(json_object_array_get_idx(r->alone, i)));
    json_object_put(r->alone);
    r->alone = batches;
}

/* Puts the batch being written back in front of what queued up meanwhile. */
static void requeue(struct recorder *r)
{
    if (r->writing_alone) {
        struct json_object *batches = json_object_new_array();
        json_object_array_add(batches, r->writing);
        r->writing = NULL;
        alone_front(r, batches);
        return;
    }
    size_t n = json_object_array_length(r->pending);
    for (size_t i = 0; i < n; i++)
        json_object_array_add(r->writing, json_object_get(json_object_array_get_idx(r->pending, i)));
    json_object_put(r->pending);
    r->pending = r->writing;
    r->writing = NULL;
    r->pending_plain = 0; /* written again at once */
}

/* Elements [from, to) of `batch` as a new array. */
static struct json_object *slice(struct json_object *batch, size_t from, size_t to)
{
    struct json_object *part = json_object_new_array();
    for (size_t i = from; i < to; i++)
        json_object_array_add(part, json_object_get(json_object_array_get_idx(batch, i)));
    return part;
}

static void on_released(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    (void)db;
    (void)arg;
    if (res == NULL && dbloop_error(db) != DBLOOP_ECLOSING)
        log_error("cannot mark the rows of a dropped outcome batch; they stay leased until the "
                  "process restarts error=\"%s\"",
                  err);
}

/*
 * The rows of a dropped batch must not stay leased to this process: lease renewal would keep
 * them so for as long as it runs. Their lease holder is renamed instead ("<process> (outcome not
 * recorded)"): renewal no longer touches them, the lease runs out, and the claim that takes them
 * again sees a previous holder, so the delivery looks the customer up before it sends anything
 * (an outcome was lost, the API may have applied it). Operators see the name in outbox show.
 * The ids are taken out here rather than by SQL from the batch's JSON: that JSON may be what
 * PostgreSQL refused (jsonb rejects \u0000, for one).
 */
static void release_dropped(struct recorder *r, struct json_object *batch)
{
    char *ids = outbox_batch_row_ids(batch);
    if (ids == NULL)
        on_released(r->db, NULL, "out of memory", r);
    else if (outbox_mark_unrecorded(r->db, r->process, ids, on_released, r) != 0)
        on_released(r->db, NULL, "cannot queue the statement", r);
    free(ids);
}

static void dropped(struct recorder *r, size_t n, const char *err)
{
    log_error("cannot record outcomes; dropping the batch, its rows will be delivered "
              "again after their lease error=\"%s\" outcomes=%zu",
              err, n);
    release_dropped(r, r->writing);
    json_object_put(r->writing);
    r->writing = NULL;
    r->failures = 0;
    r->dropped += n;
    if (r->on_recorded != NULL)
        r->on_recorded(r, n, RECORDER_DROPPED);
}

/* Errors about the data of an outcome (classes 22 data exception, 23 integrity, P0 raised by
 * record_outcomes), or of no known class: worth finding the outcome at fault. Anything else (a
 * read-only standby, a deadlock, no disk) is about the database: the whole batch is retried. */
static int about_the_data(const char *sqlstate)
{
    return *sqlstate == '\0' || strncmp(sqlstate, "22", 2) == 0 ||
           strncmp(sqlstate, "23", 2) == 0 || strncmp(sqlstate, "P0", 2) == 0;
}

/*
 * The database refused a batch (an SQL error, not a lost connection). One refused outcome must
 * not take the others down (errors about the database itself excepted, see about_the_data): a
 * batch of several is written again in two halves, each alone, until the outcome at fault is
 * alone; that one is tried a few times (the error may pass), then replaced by the failure of its
 * rows. Only when even that is refused are its rows dropped.
 */
static void refused(struct recorder *r, size_t n, const char *err, const char *sqlstate)
{
    struct json_object *batches;
    if (!about_the_data(sqlstate)) {
        if (++r->failures < RECORDER_MAX_FAILURES) {
            log_warn("recording outcomes failed; trying again error=\"%s\" sqlstate=%s "
                     "outcomes=%zu",
                     err, sqlstate, n);
            requeue(r);
        } else {
            dropped(r, n, err);
        }
        return;
    }
    if (n > 1) {
        log_warn("the database refused a batch of outcomes; writing it in parts sqlstate=%s "
                 "outcomes=%zu",
                 *sqlstate ? sqlstate : "unknown", n);
        batches = json_object_new_array();
        json_object_array_add(batches, slice(r->writing, 0, n / 2));
        json_object_array_add(batches, slice(r->writing, n / 2, n));
        json_object_put(r->writing);
        r->writing = NULL;
        r->failures = 0;
        alone_front(r, batches);
        return;
    }
    if (++r->failures < RECORDER_MAX_FAILURES) {
        log_warn("recording an outcome failed; trying again sqlstate=%s",
                 *sqlstate ? sqlstate : "unknown");
        requeue(r);
        return;
    }
    struct json_object *o = json_object_array_get_idx(r->writing, 0);
    if (n == 0 || outbox_outcome_is_refusal(o)) {
        dropped(r, n, err);
        return;
    }
    r->refused_id = outbox_outcome_sent_id(o);
    log_error("the database refused a row's outcome; the row is marked failed outbox_id=%lld "
              "sqlstate=%s",
              r->refused_id, *sqlstate ? sqlstate : "unknown");
    batches = json_object_new_array();
    struct json_object *one = json_object_new_array();
    json_object_array_add(one, outbox_outcome_refusal(o, sqlstate));
    json_object_array_add(batches, one);
    json_object_put(r->writing);
    r->writing = NULL;
    r->failures = 0;
    r->refused++;
    alone_front(r, batches);
    if (r->on_recorded != NULL)
        r->on_recorded(r, 1, RECORDER_REFUSED);
}

static void written(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct recorder *r = arg;
    if (r->pending == NULL)
        return; /* recorder_free ran first: the service is exiting and closed the connection */
    size_t n = json_object_array_length(r->writing);
    if (res == NULL) {
        int lost = dbloop_error(db) == DBLOOP_ELOST || dbloop_error(db) == DBLOOP_ENOTCONN;
        if (dbloop_error(db) == DBLOOP_ECLOSING) {
            requeue(r);
            return;
        }
        if (lost) {
            log_warn("recording outcomes failed; trying again error=\"%s\" outcomes=%zu", err,
                     n);
            requeue(r);
        } else {
            refused(r, n, err, db->last_sqlstate);
        }
    } else {
        r->failures = 0;
        json_object_put(r->writing);
        r->writing = NULL;
        if (r->on_recorded != NULL)
            r->on_recorded(r, n, RECORDER_COMMITTED);
        linger_or_write(r, r->pending_plain);
        return;
    }
    if (r->writing == NULL)
        start_write(r);
}

void recorder_flush(struct recorder *r)
{
    if (r->writing == NULL)
        start_write(r);
}

void recorder_retry(struct recorder *r)
{
    if (r->writing == NULL && !recorder_lingering(r))
        start_write(r);
}

static void start_write(struct recorder *r)
{
    if (r->writing != NULL)
        return;
    if (r->linger_init)
        uv_timer_stop(&r->linger_timer); /* this write takes what waited */
    if (json_object_array_length(r->alone) > 0) {
        r->writing = json_object_get(json_object_array_get_idx(r->alone, 0));
        json_object_array_del_idx(r->alone, 0, 1);
        r->writing_alone = 1;
    } else {
        if (json_object_array_length(r->pending) == 0)
            return;
        r->writing = r->pending;
        r->pending = json_object_new_array();
        r->writing_alone = 0;
    }
    log_debug("writing outcomes outcomes=%zu alone=%d",
              json_object_array_length(r->writing), r->writing_alone);
    int rc = outbox_record_outcomes(r->db, r->process, r->writing, written, r);
    if (rc != 0) {
        log_error("cannot queue the outcome write error=\"%s\"", omnisync_strerror(rc));
        requeue(r);
    }
}
