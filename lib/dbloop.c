/*
 * dbloop: a non-blocking libpq connection on the libuv loop; see dbloop.h.
 *
 * This file owns one PGconn, the uv_poll that watches its socket, a timer (reconnect delay, or
 * the deadline of an attempt) and an idle handle that runs deferred work from the loop. It must
 * never block the loop: no PQexec, no PQconnectdb, no PQgetResult while PQisBusy.
 *
 * Re-entrancy is the trap here: user callbacks may queue, reset or close from inside any
 * callback. Every teardown of the connection bumps `gen`, and code that called out checks it
 * before touching the connection again. Query callbacks for failures that do not come from the
 * server are never called from inside an API call: they go to the `done` list and are delivered
 * from the idle handle (or, when closing, once every handle is closed).
 */
#include "dbloop.h"
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "textcut.h"

#define DEFAULT_RECONNECT_INITIAL_MS 100
#define DEFAULT_RECONNECT_MAX_MS 10000
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_APPLICATION_NAME "omnisync"
#define REASON_MAX 256
#define ERR_MAX 512
/* Past this many failures the backoff is at its cap anyway; keeps the counter from wrapping. */
#define ATTEMPT_CAP 64

struct dbloop_pending {
    struct queue node; /* in db->queue or db->done */
    dbloop_query_cb cb;
    void *arg;
    int flags;
    int nparams;
    enum dbloop_error err; /* set once it failed without a server answer */
    char *sql;
    char **params;
    /* the params array, the SQL text and the parameter values follow in the same block */
};

static void on_poll(uv_poll_t *handle, int status, int events);
static void on_timer(uv_timer_t *timer);
static void on_kick(uv_idle_t *idle);
static void start_connect(struct dbloop *db);
static void drop(struct dbloop *db, const char *reason);
static void dispatch(struct dbloop *db);

/* ---- small helpers ---- */

static char *copy_string(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *out = malloc(n);
    if (out != NULL)
        memcpy(out, s, n);
    return out;
}

/* A uniform 64-bit draw for the backoff's jitter. */
static uint64_t jitter_random(void)
{
    uint64_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
        return r;
    /* No entropy yet (early boot): any spread is better than retrying in lockstep. */
    r = uv_hrtime() * 0x9E3779B97F4A7C15ull;
    return r ^ (r >> 29);
}

/* Copies the first line of a libpq message, without its trailing newline, into out. */
static void first_line(const char *msg, char *out, size_t len)
{
    if (msg == NULL || *msg == '\0')
        msg = "unknown error";
    size_t n = strcspn(msg, "\r\n");
    if (n >= len)
        n = textcut_boundary(msg, len - 1);
    memcpy(out, msg, n);
    out[n] = '\0';
}

static const char *conn_error(const struct dbloop *db)
{
    return db->conn != NULL ? PQerrorMessage(db->conn) : "no connection";
}

static int result_failed(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR || st == PGRES_FATAL_ERROR;
}

/* The server's primary message of a failed result, on one line. */
static void result_error(const PGresult *res, char *out, size_t len)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (primary == NULL && res != NULL)
        primary = PQresultErrorMessage(res);
    first_line(primary != NULL && *primary != '\0' ? primary : "query failed", out, len);
}

static void set_state(struct dbloop *db, enum dbloop_state state, const char *reason)
{
    db->state = state;
    if (db->on_state != NULL && !db->in_init)
        db->on_state(db, state, reason);
}

/* ---- the pending queue ---- */

static void push(struct queue *list, struct dbloop_pending *q)
{
    queue_insert_tail(list, &q->node);
}

static struct dbloop_pending *pop(struct queue *list)
{
    struct queue *node = queue_pop(list);
    return node != NULL ? queue_data(node, struct dbloop_pending, node) : NULL;
}

static void kick(struct dbloop *db)
{
    if (db->state != DBLOOP_CLOSING)
        (void)uv_idle_start(&db->kick, on_kick);
}

static const char *const error_words[] = {
    [DBLOOP_ENONE] = "no error",        [DBLOOP_ESQL] = "the server refused the statement",
    [DBLOOP_ELOST] = "connection lost", [DBLOOP_ENOTCONN] = "not connected",
    [DBLOOP_ECLOSING] = "closing",      [DBLOOP_ENORESULT] = "no result",
};

const char *dbloop_strerror(enum dbloop_error e)
{
    if ((unsigned)e >= sizeof(error_words) / sizeof(error_words[0]))
        return "unknown error";
    return error_words[e];
}

enum dbloop_error dbloop_error(const struct dbloop *db)
{
    return db->last_error;
}

const char *dbloop_sqlstate(const struct dbloop *db)
{
    return db->last_sqlstate;
}

/* Calls q's callback with a failure: `err` the words for the log (the server's message for an SQL
 * error, else the code's words), the code readable through dbloop_error() during the call. */
static void call_failed(struct dbloop *db, struct dbloop_pending *q, enum dbloop_error code,
                        const char *err)
{
    db->last_error = code;
    q->cb(db, NULL, err != NULL ? err : dbloop_strerror(code), q->arg);
    db->last_error = DBLOOP_ENONE;
}

/* Fails `q` without a server answer; its callback runs later from the loop. */
static void fail_later(struct dbloop *db, struct dbloop_pending *q, enum dbloop_error err)
{
    q->err = err;
    push(&db->done, q);
    kick(db);
}

static void deliver_failure(struct dbloop *db, struct dbloop_pending *q)
{
    call_failed(db, q, q->err, NULL);
    free(q);
}

/* ---- the socket watch ---- */

static void on_poll_closed(uv_handle_t *handle);

static void close_poll(struct dbloop *db)
{
    if (db->poll == NULL)
        return;
    /* uv_close stops the watch at once (EPOLL_CTL_DEL while libpq's fd is still open, when it
     * is); the memory goes in the close callback. */
    uv_close((uv_handle_t *)db->poll, on_poll_closed);
    db->poll = NULL;
    db->poll_fd = -1;
    db->poll_events = 0;
}

/*
 * Watches libpq's current socket for `events`. libpq may switch sockets while connecting (next
 * address, next host, SSL fallback): a different fd gets a fresh handle, the old one is closed
 * first. A replaced socket can also come back under the same fd number, which epoll would not
 * notice, so while connecting (`rearm`) the watch is stopped and started again at every step.
 * 0, or a negative code (the caller drops the connection).
 */
static int watch(struct dbloop *db, int events, int rearm)
{
    int fd = PQsocket(db->conn);
    int rc;

    if (fd < 0)
        return OMNISYNC_EIO;
    if (db->poll != NULL && db->poll_fd != fd)
        close_poll(db);
    if (db->poll == NULL) {
        uv_poll_t *p = malloc(sizeof(*p));
        if (p == NULL)
            return OMNISYNC_ENOMEM;
        rc = uv_poll_init(db->loop, p, fd);
        if (rc != 0) {
            free(p); /* a failed init registers nothing */
            log_warn("database socket cannot be watched conn=%s error=%s", db->application_name,
                     uv_err_name(rc));
            return OMNISYNC_EIO;
        }
        p->data = db;
        db->poll = p;
        db->poll_fd = fd;
        db->poll_events = 0;
        db->open_polls++;
    } else if (rearm && db->poll_events != 0) {
        (void)uv_poll_stop(db->poll);
        db->poll_events = 0;
    }
    if (events != db->poll_events) {
        rc = uv_poll_start(db->poll, events, on_poll);
        if (rc != 0) {
            log_warn("database socket cannot be watched conn=%s error=%s", db->application_name,
                     uv_err_name(rc));
            return OMNISYNC_EIO;
        }
        db->poll_events = events;
    }
    return 0;
}

/* Pushes out what libpq buffered and watches for what comes next. 0, or -1 after a drop. */
static int flush_and_watch(struct dbloop *db)
{
    int r = PQflush(db->conn);
    if (r < 0) {
        drop(db, conn_error(db));
        return -1;
    }
    db->want_write = (r == 1);
    if (watch(db, UV_READABLE | (db->want_write ? UV_WRITABLE : 0), 0) != 0) {
        drop(db, "cannot watch the database socket");
        return -1;
    }
    return 0;
}

/* ---- connection life ---- */

/* Releases the connection and everything tied to it; later callbacks of the old one are stale. */
static void teardown(struct dbloop *db)
{
    close_poll(db);
    if (db->result != NULL) {
        PQclear(db->result);
        db->result = NULL;
    }
    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    db->connecting = 0;
    db->setup_running = 0;
    db->want_write = 0;
    db->gen++;
}

/*
 * The connection (or the attempt) is gone: fail what must fail, schedule the next attempt and
 * report DISCONNECTED. `reason` may point into libpq's buffers, so it is copied first.
 */
static void drop(struct dbloop *db, const char *reason)
{
    enum dbloop_state was = db->state;
    char why[REASON_MAX];
    struct dbloop_pending *q;
    struct queue keep;

    first_line(reason, why, sizeof(why));
    teardown(db);

    if (db->running != NULL) {
        /* It may or may not have run: only the caller can tell whether to try again. */
        fail_later(db, db->running, DBLOOP_ELOST);
        db->running = NULL;
    }
    if (was == DBLOOP_READY) {
        queue_init(&keep);
        while ((q = pop(&db->queue)) != NULL) {
            /* FAIL_FAST wins over RETRY_ON_RECONNECT: such a query never waits for a connection. */
            if ((q->flags & (DBLOOP_RETRY_ON_RECONNECT | DBLOOP_FAIL_FAST)) ==
                DBLOOP_RETRY_ON_RECONNECT)
                push(&keep, q);
            else
                fail_later(db, q, DBLOOP_ELOST);
        }
        queue_append(&db->queue, &keep);
    }

    if (db->attempt < ATTEMPT_CAP)
        db->attempt++;
    uint64_t delay = backoff_delay_ms(&db->backoff, db->attempt, jitter_random());
    (void)uv_timer_start(&db->timer, on_timer, delay, 0);

    /* The log writer quotes and escapes both values (a server message is outside text). */
    if (was == DBLOOP_READY)
        log_warn("database connection lost; reconnecting in %llu ms conn=%s reason=%s",
                 (unsigned long long)delay, db->application_name, why);
    else
        log_warn("database connection failed; reconnecting in %llu ms conn=%s attempt=%u reason=%s",
                 (unsigned long long)delay, db->application_name, db->attempt, why);
    set_state(db, DBLOOP_DISCONNECTED, why);
}

static void on_notice(void *arg, const PGresult *res)
{
    struct dbloop *db = arg;
    /* Notice texts may quote row values: only their class is logged. */
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!log_enabled(LOG_LEVEL_DEBUG))
        return;
    log_debug("database notice conn=%s severity=%s sqlstate=%s", db->application_name,
              severity != NULL ? severity : "unknown", sqlstate != NULL ? sqlstate : "unknown");
}

static void start_connect(struct dbloop *db)
{
    /*
     * Our defaults come before dbname, so a conninfo that sets them wins (libpq: later entries
     * override earlier ones, and an expanded dbname sits in between). Keepalives make a dead
     * peer over TCP show up as a read error within about 25 s; libpq ignores them on Unix
     * sockets. application_name comes after: it names the connection in pg_stat_activity and
     * our logs. PQconnectStartParams does the first, non-blocking step of the attempt.
     */
    const char *keywords[] = {
        "keepalives",      "keepalives_idle", "keepalives_interval", "keepalives_count",
        "client_encoding", "dbname",          "application_name",    NULL};
    const char *values[] = {"1", "10", "5", "3", "UTF8", db->conninfo, db->application_name, NULL};

    set_state(db, DBLOOP_CONNECTING, NULL);
    if (db->state != DBLOOP_CONNECTING)
        return; /* the state callback reset or closed us */

    db->conn = PQconnectStartParams(keywords, values, 1);
    if (db->conn == NULL) {
        drop(db, "out of memory");
        return;
    }
    PQsetNoticeReceiver(db->conn, on_notice, db);
    if (PQstatus(db->conn) == CONNECTION_BAD) {
        drop(db, conn_error(db));
        return;
    }
    db->connecting = 1;
    /* The loop's clock is cached at the start of its turn (or at uv_loop_init): refresh it so
     * the deadline counts from now. */
    uv_update_time(db->loop);
    (void)uv_timer_start(&db->timer, on_timer, db->connect_timeout_ms, 0);
    /* libpq's contract: before the first PQconnectPoll, act as if it returned WRITING. */
    if (watch(db, UV_WRITABLE, 1) != 0)
        drop(db, "cannot watch the database socket");
}

static void become_ready(struct dbloop *db)
{
    unsigned gen = db->gen;
    db->attempt = 0;
    (void)uv_timer_stop(&db->timer);
    log_info("database connection ready conn=%s", db->application_name);
    set_state(db, DBLOOP_READY, NULL);
    if (gen == db->gen)
        dispatch(db);
}

/* PQconnectPoll said OK: switch to non-blocking writes and run the setup statement. */
static void connected(struct dbloop *db)
{
    db->connecting = 0;
    if (PQsetnonblocking(db->conn, 1) != 0) {
        drop(db, conn_error(db));
        return;
    }
    if (db->on_connect_sql == NULL) {
        if (watch(db, UV_READABLE, 1) != 0) {
            drop(db, "cannot watch the database socket");
            return;
        }
        become_ready(db);
        return;
    }
    /* PQsendQuery (not ...Params): the setup may hold several statements. */
    if (!PQsendQuery(db->conn, db->on_connect_sql)) {
        drop(db, conn_error(db));
        return;
    }
    db->setup_running = 1;
    (void)flush_and_watch(db);
}

static void continue_connect(struct dbloop *db)
{
    switch (PQconnectPoll(db->conn)) {
    case PGRES_POLLING_READING:
        if (watch(db, UV_READABLE, 1) != 0)
            drop(db, "cannot watch the database socket");
        break;
    case PGRES_POLLING_WRITING:
        if (watch(db, UV_WRITABLE, 1) != 0)
            drop(db, "cannot watch the database socket");
        break;
    case PGRES_POLLING_OK:
        connected(db);
        break;
    default:
        drop(db, conn_error(db));
        break;
    }
}

static void setup_done(struct dbloop *db, PGresult *res)
{
    char err[ERR_MAX], reason[ERR_MAX + 32];

    if (res != NULL && result_failed(res)) {
        if (!db_schema_missing(db->conn, res, err, sizeof(err)))
            result_error(res, err, sizeof(err));
        snprintf(reason, sizeof(reason), "setup statement failed: %s", err);
        /* The SQLSTATE says what failed without parsing words (dbloop_sqlstate in on_state). */
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(db->last_sqlstate, sizeof(db->last_sqlstate), "%s", state ? state : "");
        drop(db, reason);
        db->last_sqlstate[0] = '\0';
        return;
    }
    become_ready(db);
}

/* ---- queries ---- */

static void dispatch(struct dbloop *db)
{
    struct dbloop_pending *q;

    if (db->state != DBLOOP_READY || db->running != NULL || queue_empty(&db->queue))
        return;
    q = pop(&db->queue);
    db->running = q;
    int sent = (q->flags & DBLOOP_PREPARED)
                   ? PQsendQueryPrepared(db->conn, q->sql, q->nparams,
                                         (const char *const *)q->params, NULL, NULL, 0)
                   : PQsendQueryParams(db->conn, q->sql, q->nparams, NULL,
                                       (const char *const *)q->params, NULL, NULL, 0);
    if (!sent) {
        drop(db, conn_error(db));
        return;
    }
    (void)flush_and_watch(db);
}

/* The command in flight is complete: hand its result over. */
static void complete(struct dbloop *db, PGresult *res)
{
    char err[ERR_MAX];

    if (db->setup_running) {
        db->setup_running = 0;
        setup_done(db, res);
        PQclear(res);
        return;
    }
    struct dbloop_pending *q = db->running;
    db->running = NULL;
    if (q == NULL) {
        PQclear(res);
        return;
    }
    if (res == NULL) {
        call_failed(db, q, DBLOOP_ENORESULT, NULL);
    } else if (result_failed(res)) {
        if (!db_schema_missing(db->conn, res, err, sizeof(err)))
            result_error(res, err, sizeof(err));
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(db->last_sqlstate, sizeof(db->last_sqlstate), "%s", state ? state : "");
        call_failed(db, q, DBLOOP_ESQL, err);
        db->last_sqlstate[0] = '\0';
    } else {
        q->cb(db, res, NULL, q->arg);
    }
    PQclear(res);
    free(q);
}

/*
 * Takes what libpq has parsed: results of the command in flight, then notifications. Every call
 * out may have torn the connection down (gen changes), after which nothing here touches it.
 */
static void process_input(struct dbloop *db)
{
    unsigned gen = db->gen;

    while ((db->running != NULL || db->setup_running) && !PQisBusy(db->conn)) {
        PGresult *res = PQgetResult(db->conn);
        if (res != NULL) {
            ExecStatusType st = PQresultStatus(res);
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
                PQclear(res);
                drop(db, "COPY is not supported on this connection");
                return;
            }
            /* Keep the first error, else the last result (a setup may return several). */
            if (db->result == NULL) {
                db->result = res;
            } else if (result_failed(db->result)) {
                PQclear(res);
            } else {
                PQclear(db->result);
                db->result = res;
            }
            continue;
        }
        if (PQstatus(db->conn) == CONNECTION_BAD) {
            drop(db, conn_error(db));
            return;
        }
        res = db->result;
        db->result = NULL;
        complete(db, res);
        if (gen != db->gen)
            return;
        dispatch(db);
        if (gen != db->gen)
            return;
    }

    PGnotify *n;
    while ((n = PQnotifies(db->conn)) != NULL) {
        if (db->on_notify != NULL)
            db->on_notify(db, n->relname, n->extra);
        PQfreemem(n);
        if (gen != db->gen)
            return;
    }

    if (PQstatus(db->conn) == CONNECTION_BAD)
        drop(db, conn_error(db));
}

/* ---- loop callbacks ---- */

static void on_poll(uv_poll_t *handle, int status, int events)
{
    struct dbloop *db = handle->data;

    if (handle != db->poll || db->conn == NULL)
        return; /* a handle on its way out */
    if (db->connecting) {
        /* PQconnectPoll finds out about a socket error by itself. */
        continue_connect(db);
        return;
    }
    if (status < 0) {
        char reason[REASON_MAX];
        snprintf(reason, sizeof(reason), "socket error: %s", uv_strerror(status));
        drop(db, reason);
        return;
    }
    /* Read before flushing: the server may be waiting for us to read before it takes more. */
    if ((events & UV_READABLE) && !PQconsumeInput(db->conn)) {
        drop(db, conn_error(db));
        return;
    }
    if (db->want_write && flush_and_watch(db) != 0)
        return;
    process_input(db);
}

static void on_timer(uv_timer_t *timer)
{
    struct dbloop *db = timer->data;
    char reason[REASON_MAX];

    if (db->state == DBLOOP_DISCONNECTED) {
        start_connect(db);
    } else if (db->state == DBLOOP_CONNECTING) {
        snprintf(reason, sizeof(reason), "connect timed out after %llu ms",
                 (unsigned long long)db->connect_timeout_ms);
        drop(db, reason);
    }
}

static void on_kick(uv_idle_t *idle)
{
    struct dbloop *db = idle->data;
    struct dbloop_pending *q;

    (void)uv_idle_stop(idle);
    while (db->state != DBLOOP_CLOSING && (q = pop(&db->done)) != NULL)
        deliver_failure(db, q);
    dispatch(db);
}

/* ---- closing ---- */

static void maybe_finish_close(struct dbloop *db)
{
    struct dbloop_pending *q;

    if (db->state != DBLOOP_CLOSING || db->closing_handles > 0 || db->open_polls > 0)
        return;
    while ((q = pop(&db->done)) != NULL)
        deliver_failure(db, q);
    free(db->conninfo);
    free(db->application_name);
    free(db->on_connect_sql);
    db->conninfo = db->application_name = db->on_connect_sql = NULL;
    if (db->close_cb != NULL)
        db->close_cb(db); /* may free db: nothing after this */
}

static void on_poll_closed(uv_handle_t *handle)
{
    struct dbloop *db = handle->data;
    free(handle);
    db->open_polls--;
    maybe_finish_close(db);
}

static void on_handle_closed(uv_handle_t *handle)
{
    struct dbloop *db = handle->data;
    db->closing_handles--;
    maybe_finish_close(db);
}

/* ---- public API ---- */

int dbloop_init(struct dbloop *db, uv_loop_t *loop, const struct dbloop_options *opts)
{
    char *errmsg = NULL;
    PQconninfoOption *parsed = NULL;

    if (db == NULL || loop == NULL || opts == NULL || opts->conninfo == NULL)
        return OMNISYNC_EINVAL;
    memset(db, 0, sizeof(*db));
    queue_init(&db->queue);
    queue_init(&db->done);

    /* Refuse a conninfo that can never work now rather than retrying it forever. Its parse
     * error may quote a fragment of it (a password, even), so only the fact is logged. */
    if (strchr(opts->conninfo, '=') != NULL || strncmp(opts->conninfo, "postgresql://", 13) == 0 ||
        strncmp(opts->conninfo, "postgres://", 11) == 0) {
        parsed = PQconninfoParse(opts->conninfo, &errmsg);
        if (parsed == NULL) {
            if (errmsg != NULL)
                PQfreemem(errmsg);
            log_error("database conninfo cannot be parsed; check its syntax conn=\"%s\"",
                      opts->application_name != NULL ? opts->application_name
                                                     : DEFAULT_APPLICATION_NAME);
            return OMNISYNC_EINVAL;
        }
        PQconninfoFree(parsed);
    }

    db->loop = loop;
    db->data = opts->data;
    db->conninfo = copy_string(opts->conninfo);
    db->application_name = copy_string(opts->application_name != NULL ? opts->application_name
                                                                      : DEFAULT_APPLICATION_NAME);
    db->on_connect_sql = copy_string(opts->on_connect_sql);
    if (db->conninfo == NULL || db->application_name == NULL ||
        (opts->on_connect_sql != NULL && db->on_connect_sql == NULL))
        goto fail;
    db->backoff.initial_ms =
        opts->reconnect_initial_ms ? opts->reconnect_initial_ms : DEFAULT_RECONNECT_INITIAL_MS;
    db->backoff.max_ms = opts->reconnect_max_ms ? opts->reconnect_max_ms : DEFAULT_RECONNECT_MAX_MS;
    if (db->backoff.max_ms < db->backoff.initial_ms)
        db->backoff.max_ms = db->backoff.initial_ms;
    db->connect_timeout_ms =
        opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    db->on_state = opts->on_state;
    db->on_notify = opts->on_notify;
    db->poll_fd = -1;
    db->state = DBLOOP_DISCONNECTED;

    /* Neither init can fail on Unix (they only fill the struct in), so nothing is left to close
     * on the failure path above. */
    (void)uv_timer_init(loop, &db->timer);
    db->timer.data = db;
    (void)uv_idle_init(loop, &db->kick);
    db->kick.data = db;

    db->in_init = 1;
    start_connect(db);
    db->in_init = 0;
    return 0;

fail:
    free(db->conninfo);
    free(db->application_name);
    free(db->on_connect_sql);
    memset(db, 0, sizeof(*db));
    queue_init(&db->queue);
    queue_init(&db->done);
    return OMNISYNC_ENOMEM;
}

int dbloop_query(struct dbloop *db, const char *sql, int nparams, const char *const *params,
                 int flags, dbloop_query_cb cb, void *arg)
{
    size_t sql_len, total, lens_total = 0;
    struct dbloop_pending *q;
    char *p;

    if (db == NULL || sql == NULL || cb == NULL || nparams < 0 || nparams > DBLOOP_MAX_PARAMS ||
        (nparams > 0 && params == NULL))
        return OMNISYNC_EINVAL;
    if (db->state == DBLOOP_CLOSING)
        return OMNISYNC_ECANCELED;

    sql_len = strlen(sql) + 1;
    for (int i = 0; i < nparams; i++) {
        if (params[i] != NULL)
            lens_total += strlen(params[i]) + 1;
        if (lens_total > DBLOOP_QUERY_MAX_BYTES)
            return OMNISYNC_ETOOBIG;
    }
    if (sql_len > DBLOOP_QUERY_MAX_BYTES)
        return OMNISYNC_ETOOBIG;
    /* Both parts are capped, so the sum cannot overflow. */
    total = sizeof(*q) + (size_t)nparams * sizeof(char *) + sql_len + lens_total;
    q = malloc(total);
    if (q == NULL)
        return OMNISYNC_ENOMEM;

    memset(q, 0, sizeof(*q));
    q->cb = cb;
    q->arg = arg;
    q->flags = flags;
    q->nparams = nparams;
    q->params = (char **)(q + 1);
    p = (char *)(q->params + nparams);
    q->sql = p;
    memcpy(p, sql, sql_len);
    p += sql_len;
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL) {
            q->params[i] = NULL;
            continue;
        }
        size_t n = strlen(params[i]) + 1;
        q->params[i] = p;
        memcpy(p, params[i], n);
        p += n;
    }

    if ((flags & DBLOOP_FAIL_FAST) && db->state != DBLOOP_READY)
        fail_later(db, q, DBLOOP_ENOTCONN);
    else
        push(&db->queue, q);
    /* Sending happens from the loop, so that nothing here can call back. */
    kick(db);
    return 0;
}

enum dbloop_state dbloop_state(const struct dbloop *db)
{
    return db->state;
}

int dbloop_busy(const struct dbloop *db)
{
    return db->running != NULL || !queue_empty(&db->queue) || !queue_empty(&db->done);
}

void dbloop_reset(struct dbloop *db, const char *reason)
{
    char why[REASON_MAX];

    if (db->state != DBLOOP_CONNECTING && db->state != DBLOOP_READY)
        return;
    snprintf(why, sizeof(why), "reset: %s", reason != NULL ? reason : "requested");
    drop(db, why);
}

void dbloop_close(struct dbloop *db, void (*close_cb)(struct dbloop *db))
{
    struct dbloop_pending *q;

    if (db->state == DBLOOP_CLOSING)
        return;
    db->close_cb = close_cb;
    db->state = DBLOOP_CLOSING;
    teardown(db);
    if (db->running != NULL) {
        db->running->err = DBLOOP_ECLOSING;
        push(&db->done, db->running);
        db->running = NULL;
    }
    while ((q = pop(&db->queue)) != NULL) {
        q->err = DBLOOP_ECLOSING;
        push(&db->done, q);
    }
    db->closing_handles = 2;
    uv_close((uv_handle_t *)&db->timer, on_handle_closed);
    uv_close((uv_handle_t *)&db->kick, on_handle_closed);
    if (db->on_state != NULL)
        db->on_state(db, DBLOOP_CLOSING, NULL);
}
