/*
 * listener: LISTEN omnisync on a dedicated connection (DESIGN §1).
 *
 * Any notification on the channel wakes the owner (the dispatcher). NOTIFY is only a doorbell,
 * never the data: notifications sent while the connection was down are lost, so after every
 * (re)connect, once LISTEN is in place, on_ready(l, 1) tells the owner to poll the outbox once.
 * Several notifications read in one turn of the loop give one on_wake call.
 *
 * The connection is a dbloop (application_name "omnisync listener") that reconnects by itself
 * with backoff; this module adds the LISTEN and the coalescing.
 */
#ifndef OMNISYNC_LISTENER_H
#define OMNISYNC_LISTENER_H

#include <uv.h>

#include "dbloop.h"
#include "errors.h"

/* The channel the outbox triggers notify (pg_notify('omnisync', '')). */
#define LISTENER_CHANNEL "omnisync"
#define LISTENER_APPLICATION_NAME "omnisync listener"

/* All fields are private except `on_wake`, `on_ready` and `data`. */
struct listener {
    struct dbloop db;
    void (*on_wake)(struct listener *l);
    void (*on_ready)(struct listener *l, int ready);
    void *data;

    uv_check_t batch; /* runs after the loop's poll phase: one on_wake per batch read */
    int wake_pending;
    int resume_pending; /* `omnisync resume` rang; see listener_take_resume() */
    int ready;
    int closing;
    int closing_parts;
    void (*close_cb)(struct listener *l);
};

/*
 * Starts connecting at once (conninfo copied, never logged). on_wake (required) runs after
 * notifications arrived; on_ready (optional) runs with 1 each time LISTEN is in place after a
 * (re)connect and with 0 when that connection is lost. Neither runs from inside listener_init or
 * listener_close. `data` is the owner's pointer. 0, or OMNISYNC_EINVAL / OMNISYNC_ENOMEM; on
 * failure nothing needs releasing, after 0 listener_close() must be called.
 */
int listener_init(struct listener *l, uv_loop_t *loop, const char *conninfo,
                  void (*on_wake)(struct listener *l),
                  void (*on_ready)(struct listener *l, int ready), void *data) OMNISYNC_MUST_CHECK;

/* The connection, for another module's statements between notifications (the dispatcher's
 * moves of captured rows): PostgreSQL holds notifications back while one runs. Owned by the
 * listener: valid until listener_close(), which answers a statement still owed as "closing". */
struct dbloop *listener_dbloop(struct listener *l);

/* 1 while the connection is up and LISTEN is in place, else 0. */
int listener_is_listening(const struct listener *l);

/*
 * Closes the connection and handles; `close_cb` (may be NULL) runs from the loop when all are
 * released, after which `l` may be freed. No on_wake / on_ready after this call. A second call is a
 * no-op.
 */
void listener_close(struct listener *l, void (*close_cb)(struct listener *l));

/* 1 once after `omnisync resume` rang (then on_wake runs too), else 0. */
int listener_take_resume(struct listener *l);

#endif
