/*
 * listener: LISTEN omnisync on its own dbloop connection; see listener.h.
 *
 * It owns the dbloop and a uv_check handle. dbloop reports each notification separately; the
 * check handle, which runs right after the loop's poll phase in the same turn, folds all that
 * one read delivered into a single on_wake, so a burst of commits costs the dispatcher one poll.
 * It never runs queries of its own beyond the LISTEN (the dbloop's setup statement, repeated after
 * every reconnect); the dispatcher moves captured backlogs on the connection (listener_dbloop).
 */
#include "listener.h"

#include <stddef.h>
#include <string.h>

#define LISTEN_SQL "LISTEN " LISTENER_CHANNEL

static struct listener *from_db(struct dbloop *db)
{
    return db->data;
}

static void on_batch(uv_check_t *check)
{
    struct listener *l = check->data;

    (void)uv_check_stop(check);
    if (!l->wake_pending || l->closing)
        return;
    l->wake_pending = 0;
    l->on_wake(l);
}

static void on_notify(struct dbloop *db, const char *channel, const char *payload)
{
    struct listener *l = from_db(db);

    /* The payload is not read, but for `omnisync resume`'s: the outbox is the truth, the
     * notification only rings. */
    (void)channel;
    if (l->closing)
        return;
    if (payload != NULL && strcmp(payload, "resume") == 0)
        l->resume_pending = 1;
    if (!l->wake_pending) {
        l->wake_pending = 1;
        (void)uv_check_start(&l->batch, on_batch);
    }
}

static void on_state(struct dbloop *db, enum dbloop_state state, const char *reason)
{
    struct listener *l = from_db(db);

    (void)reason; /* dbloop has logged it */
    if (l->closing)
        return;
    if (state == DBLOOP_READY) {
        l->ready = 1;
        if (l->on_ready != NULL)
            l->on_ready(l, 1);
    } else if (l->ready && state == DBLOOP_DISCONNECTED) {
        l->ready = 0;
        if (l->on_ready != NULL)
            l->on_ready(l, 0);
    }
}

int listener_init(struct listener *l, uv_loop_t *loop, const char *conninfo,
                  void (*on_wake)(struct listener *l),
                  void (*on_ready)(struct listener *l, int ready), void *data)
{
    struct dbloop_options opts = {0};
    int rc;

    if (l == NULL || loop == NULL || conninfo == NULL || on_wake == NULL)
        return OMNISYNC_EINVAL;
    l->on_wake = on_wake;
    l->on_ready = on_ready;
    l->data = data;
    l->wake_pending = 0;
    l->ready = 0;
    l->closing = 0;
    l->closing_parts = 0;
    l->close_cb = NULL;

    opts.conninfo = conninfo;
    opts.application_name = LISTENER_APPLICATION_NAME;
    opts.on_connect_sql = LISTEN_SQL;
    opts.on_state = on_state;
    opts.on_notify = on_notify;
    opts.data = l;
    rc = dbloop_init(&l->db, loop, &opts);
    if (rc != 0)
        return rc;
    /* uv_check_init cannot fail; it comes second so a failed dbloop_init leaves nothing open. */
    (void)uv_check_init(loop, &l->batch);
    l->batch.data = l;
    return 0;
}

struct dbloop *listener_dbloop(struct listener *l)
{
    return &l->db;
}

int listener_is_listening(const struct listener *l)
{
    return dbloop_state(&l->db) == DBLOOP_READY;
}

static void part_closed(struct listener *l)
{
    if (--l->closing_parts == 0 && l->close_cb != NULL)
        l->close_cb(l); /* may free l */
}

static void on_batch_closed(uv_handle_t *handle)
{
    part_closed(handle->data);
}

static void on_db_closed(struct dbloop *db)
{
    part_closed(from_db(db));
}

void listener_close(struct listener *l, void (*close_cb)(struct listener *l))
{
    if (l->closing)
        return;
    l->closing = 1;
    l->ready = 0;
    l->wake_pending = 0;
    l->close_cb = close_cb;
    l->closing_parts = 2;
    uv_close((uv_handle_t *)&l->batch, on_batch_closed);
    dbloop_close(&l->db, on_db_closed);
}

int listener_take_resume(struct listener *l)
{
    int resume = l->resume_pending;

    l->resume_pending = 0;
    return resume;
}
