/*
 * dbloop: one non-blocking libpq connection driven by the libuv loop.
 *
 * The daemon has one thread and one loop (DESIGN §9), so nothing here ever blocks: connecting is
 * PQconnectStartParams + PQconnectPoll, queries are PQsendQueryParams + PQconsumeInput /
 * PQisBusy / PQgetResult, and writes go through PQsetnonblocking + PQflush. The socket sits under
 * a uv_poll that is re-created whenever libpq switches sockets while connecting.
 *
 * The module owns the connection's whole life: it reconnects by itself with exponential backoff
 * and full jitter after a failed attempt or a lost connection (a server restart, a terminated
 * backend, a dead peer noticed through TCP keepalives), and runs an optional setup statement
 * (e.g. "LISTEN omnisync") after every connect before it reports READY. Queries are queued and
 * run one at a time, in order.
 *
 * It never logs the conninfo (it may hold a password) nor query parameters or results (they may
 * hold personal data); query errors go to the caller, who decides what to log.
 */
#ifndef OMNISYNC_DBLOOP_H
#define OMNISYNC_DBLOOP_H

#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#include "backoff.h"
#include "errors.h"
#include "queue.h"

enum dbloop_state { DBLOOP_DISCONNECTED, DBLOOP_CONNECTING, DBLOOP_READY, DBLOOP_CLOSING };

struct dbloop;
struct dbloop_pending; /* one queued query; private to dbloop.c */

/*
 * Why a query failed, for callers to branch on (dbloop_error()); `err` in the callback carries
 * the same as words for the log (dbloop_strerror()), or the server's message for DBLOOP_ESQL.
 */
enum dbloop_error {
    DBLOOP_ENONE = 0, /* the query succeeded (or no query callback is running) */
    DBLOOP_ESQL = 1,  /* the server refused it: `err` is its primary message, see last_sqlstate */
    DBLOOP_ELOST = 2, /* "connection lost": it may or may not have run */
    DBLOOP_ENOTCONN = 3, /* "not connected": DBLOOP_FAIL_FAST while not READY; it never ran */
    DBLOOP_ECLOSING = 4, /* "closing": dbloop_close() was called; it never ran or was abandoned */
    DBLOOP_ENORESULT = 5 /* "no result": the server sent no result at all */
};

/*
 * The outcome of one query. On success `res` is the (last) result and `err` is NULL; `res` is
 * owned by dbloop and cleared after the callback returns. On failure `res` is NULL and `err` (valid
 * only during the call) holds plain words: the server's primary message for an SQL error, or
 * "connection lost", "not connected", "closing". A primary message can quote a parameter value
 * (invalid input syntax for type integer: "..."), so callers must not log it where parameters
 * may hold personal data.
 */
typedef void (*dbloop_query_cb)(struct dbloop *db, const PGresult *res, const char *err, void *arg);

/*
 * Called on every state change. `reason` (valid only during the call) says why the connection
 * went DISCONNECTED; it is NULL for the other states.
 */
typedef void (*dbloop_state_cb)(struct dbloop *db, enum dbloop_state state, const char *reason);

/* One NOTIFY received; both strings are valid only during the call. */
typedef void (*dbloop_notify_cb)(struct dbloop *db, const char *channel, const char *payload);

struct dbloop_options {
    const char *conninfo;          /* copied; may hold a password: never logged */
    const char *application_name;  /* copied, e.g. "omnisync run"; NULL: "omnisync" */
    uint64_t reconnect_initial_ms; /* 0: 100 */
    uint64_t reconnect_max_ms;     /* 0: 10000 */
    uint64_t connect_timeout_ms;   /* 0: 10000; an attempt (setup included) that takes longer is
                                      abandoned and retried */
    const char *on_connect_sql;    /* optional, copied: run after every (re)connect, before READY;
                                      may hold several statements; its failure fails the attempt */
    dbloop_state_cb on_state;      /* optional */
    dbloop_notify_cb on_notify;    /* optional */
    void *data;                    /* user pointer, available as db->data */
};

/* Queries are capped: parameters that add up to more than this are refused (OMNISYNC_ETOOBIG). */
#define DBLOOP_QUERY_MAX_BYTES (64u * 1024 * 1024)
/* The protocol's own limit on the number of parameters. */
#define DBLOOP_MAX_PARAMS 65535

/* All fields are private except `loop` and `data`. */
struct dbloop {
    uv_loop_t *loop;
    void *data;

    enum dbloop_state state;
    char *conninfo;
    char *application_name;
    char *on_connect_sql;
    struct backoff_policy backoff;
    uint64_t connect_timeout_ms;
    dbloop_state_cb on_state;
    dbloop_notify_cb on_notify;

    PGconn *conn;
    unsigned gen;      /* bumped whenever conn is torn down: stale work checks it */
    int connecting;    /* PQconnectPoll has not reported OK yet */
    int setup_running; /* on_connect_sql is in flight */
    int want_write;    /* PQflush left data behind: watch for writability */
    PGresult *result;  /* the result being gathered for the command in flight */
    unsigned attempt;  /* consecutive failed attempts, for the backoff */
    int in_init;       /* no state callbacks from inside dbloop_init */

    uv_poll_t *poll; /* heap-allocated: a fresh one for each socket, freed in its close callback */
    int poll_fd;
    int poll_events;
    int open_polls; /* poll handles not yet through their close callback */

    uv_timer_t timer; /* reconnect delay while DISCONNECTED, attempt deadline while CONNECTING */
    uv_idle_t kick;   /* runs deferred callbacks and starts queued queries from the loop */

    struct dbloop_pending *running;
    struct queue queue; /* struct dbloop_pending waiting to run */
    struct queue done;  /* struct dbloop_pending failed, callback not yet called */

    int closing_handles;
    void (*close_cb)(struct dbloop *db);
    /* The SQLSTATE of the failed query whose callback is running (its five characters name
     * the class of error without quoting any value); empty otherwise. */
    char last_sqlstate[8];
    /* Why the query whose callback is running failed; DBLOOP_ENONE otherwise. */
    enum dbloop_error last_error;
};

/*
 * Starts connecting at once (the first attempt begins before this returns). A host name in the
 * conninfo is resolved by libpq synchronously: use an address (hostaddr) or a socket directory
 * where that could be slow. Copies every string
 * in `opts`. Returns 0, or OMNISYNC_EINVAL (missing argument, unparsable conninfo) or
 * OMNISYNC_ENOMEM; on failure nothing needs releasing. After 0, dbloop_close() must be called.
 * No callback is called from inside dbloop_init.
 */
int dbloop_init(struct dbloop *db, uv_loop_t *loop,
                const struct dbloop_options *opts) OMNISYNC_MUST_CHECK;

/* dbloop_query flags. */
#define DBLOOP_FAIL_FAST 1          /* not READY: fail with "not connected" instead of waiting */
#define DBLOOP_RETRY_ON_RECONNECT 2 /* queued when the connection drops: keep for the next one */
#define DBLOOP_PREPARED 4           /* `sql` names a statement prepared by on_connect_sql */

/*
 * Queues a parameterised query: text parameters (copied; a NULL entry is SQL NULL), text
 * results. Queries run one at a time, in order. While the connection is not READY a query waits
 * for it, unless DBLOOP_FAIL_FAST is set: then its callback gets "not connected".
 *
 * When an established connection drops (or dbloop_reset is called), the query in flight fails
 * with "connection lost" (whether it ran is unknown, so it is never re-sent); queued queries that
 * carry DBLOOP_RETRY_ON_RECONNECT stay queued for the next connection, the others fail with
 * "connection lost" (they may have depended on the old session). Queries queued while no
 * connection was up simply wait. DBLOOP_FAIL_FAST wins over DBLOOP_RETRY_ON_RECONNECT: a
 * FAIL_FAST query never waits for a connection.
 *
 * Returns 0: `cb` will be called exactly once, never before this returns. Or a negative code and
 * `cb` is never called: OMNISYNC_EINVAL, OMNISYNC_ETOOBIG (see DBLOOP_QUERY_MAX_BYTES),
 * OMNISYNC_ENOMEM, OMNISYNC_ECANCELED (dbloop_close was called).
 */
int dbloop_query(struct dbloop *db, const char *sql, int nparams, const char *const *params,
                 int flags, dbloop_query_cb cb, void *arg) OMNISYNC_MUST_CHECK;

enum dbloop_state dbloop_state(const struct dbloop *db);

/* Inside a query callback: why the query failed (DBLOOP_ENONE when it succeeded). */
enum dbloop_error dbloop_error(const struct dbloop *db);
/* The SQLSTATE (five characters, empty when none) of the failure being reported: inside a query
 * callback with DBLOOP_ESQL, and inside on_state(DISCONNECTED) after on_connect_sql failed. */
const char *dbloop_sqlstate(const struct dbloop *db);
/* The words for a code ("connection lost", ...); static, never NULL. */
const char *dbloop_strerror(enum dbloop_error e);

/* 1 if a query is running, queued, or waiting for its callback; else 0. */
int dbloop_busy(const struct dbloop *db);

/*
 * Drops the connection now (e.g. after a query took too long) and reconnects with backoff; the
 * queries are treated as for a lost connection. `reason` (borrowed) is logged and passed to
 * on_state, which may run before this returns. A no-op while DISCONNECTED or CLOSING.
 */
void dbloop_reset(struct dbloop *db, const char *reason);

/*
 * Fails the running and every queued query with "closing", finishes the connection and closes the
 * handles. The query callbacks and then `close_cb` (may be NULL) run from the loop once every
 * handle is closed; after `close_cb` the loop holds nothing of this module and `db` may be freed.
 * Calling it again is a no-op. dbloop_query then returns OMNISYNC_ECANCELED.
 */
void dbloop_close(struct dbloop *db, void (*close_cb)(struct dbloop *db));

#endif
