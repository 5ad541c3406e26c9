/*
 * service: the daemon's wiring. It owns the loop and every long-lived handle; modules own their
 * own state. Three database connections: the listener's, the work connection (claims, leases,
 * the purge guard, heartbeat, counts, retention) and the recorder's, so a claim never queues
 * behind a batch of outcomes. Shutdown order matters: stop claiming, let requests in flight
 * finish and their outcomes be written, then close the HTTP client, the listener and the
 * database connections (the work and recorder connections after the dispatcher).
 */
#include "service.h"

#include <curl/curl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifdef OMNISYNC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "dbloop.h"
#include "dispatcher.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "omnidesk.h"
#include "outbox.h"
#include "ratelimit.h"
#include "reconcile_sched.h"
#include "retention.h"
#include "schema.h"

/* Longer than the doorbell's quiet time per session (10 ms, sql/trigger_template.sql) plus
 * margin. */
#define SERVICE_TRAILING_CLAIM_MS 50

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

enum service_part {
    PART_CLIENT,
    PART_WORK_DB,
    PART_RECORD_DB,
    PART_LISTENER,
    PART_DISPATCHER,
    PART_RETENTION,
    PART_HEALTH,
    PART_RECONCILE,
    PART_COUNT
};

struct service {
    uv_loop_t loop;
    struct config *cfg;
    const char *config_path;
    char process[128];
    struct dbloop db;        /* the work connection */
    struct dbloop record_db; /* the recorder's connection */
    struct listener listener;
    struct omnidesk client;
    struct dispatcher dispatcher;
    struct retention retention;
    struct metrics metrics;
    struct health health;
    struct reconcile_sched reconcile; /* [reconcile] interval: runs as a child process */
    int counting;       /* the outbox count query is running */
    uint64_t counted_at; /* loop time of the last count */
    long long capture_vacuumed_bytes; /* the capture table's length when last vacuumed */
    uint64_t capture_vacuumed_at;     /* loop time of that vacuum */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t shutdown_timer;
    uv_timer_t status_timer; /* systemd STATUS= and WATCHDOG=1 */
    uv_timer_t trailing_timer; /* the claim that follows every doorbell */
    uint64_t watchdog_usec;
    int stopping;
    int aborted;
    int closing;
    int handles_on; /* the signal handlers and the service's timers are initialised */
    int ready_sent;
    int exit_code; /* 0, or SERVICE_EXIT_SCHEMA_TOO_OLD */
    /* each component's life: see enum service_part */
    enum { PART_OFF, PART_STARTED, PART_CLOSING, PART_CLOSED } part[PART_COUNT];
};

static void notify(const char *state)
{
#ifdef OMNISYNC_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

static void notify_status(struct service *s)
{
    char status[256], backlog[48] = "backlog unknown";
    if (s->metrics.outbox_rows_known)
        snprintf(backlog, sizeof(backlog), "%lld pending, %lld failed",
                 s->metrics.outbox_rows[METRICS_STATUS_PENDING],
                 s->metrics.outbox_rows[METRICS_STATUS_FAILED]);
    snprintf(status, sizeof(status), "STATUS=%s; %s; %u in flight; circuit %s; api key %s",
             s->stopping                             ? "stopping"
             : listener_is_listening(&s->listener) ? "listening"
                                                     : "waiting for the database",
             backlog, dispatcher_in_flight(&s->dispatcher),
             breaker_state_name(breaker_get_state(&s->dispatcher.breaker)),
             dispatcher_ready_api(&s->dispatcher) ? "accepted" : "refused");
    notify(status);
}

/* ---- closing ---- */

/*
 * The components the service starts, in start order, each with its close. They close together
 * (libuv's way: each module has a closing state its late callbacks honour and frees its memory in
 * its last close callback, so no order is needed), and the service's own handles close once every
 * component that was started has reported closed. A start-up failure closes what was started the
 * same way, so a failed start unwinds everything.
 */

static void close_client(struct service *s);
static void close_work_db(struct service *s);
static void close_record_db(struct service *s);
static void close_listener(struct service *s);
static void close_dispatcher(struct service *s);
static void close_retention(struct service *s);
static void close_health(struct service *s);
static void close_reconcile(struct service *s);

static const struct service_part_def {
    const char *name;
    void (*close)(struct service *s);
} parts[PART_COUNT] = {
    [PART_CLIENT] = {"HTTP client", close_client},
    [PART_WORK_DB] = {"work connection", close_work_db},
    [PART_RECORD_DB] = {"recorder connection", close_record_db},
    [PART_LISTENER] = {"listener", close_listener},
    [PART_DISPATCHER] = {"dispatcher", close_dispatcher},
    [PART_RETENTION] = {"retention", close_retention},
    [PART_HEALTH] = {"health endpoint", close_health},
    [PART_RECONCILE] = {"reconcile timer", close_reconcile},
};

static int all_closed(const struct service *s)
{
    for (int i = 0; i < PART_COUNT; i++)
        if (s->part[i] == PART_STARTED || s->part[i] == PART_CLOSING)
            return 0;
    return 1;
}

static void close_own_handles(struct service *s)
{
    if (!s->handles_on)
        return;
    s->handles_on = 0;
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
    uv_close((uv_handle_t *)&s->status_timer, NULL);
    uv_close((uv_handle_t *)&s->trailing_timer, NULL);
}

static void part_closed(struct service *s, enum service_part p)
{
    s->part[p] = PART_CLOSED;
    log_debug("closed %s", parts[p].name);
    if (s->closing && all_closed(s))
        close_own_handles(s);
}

/* Closes one component, if it was started and is not closing yet. */
static void close_part(struct service *s, enum service_part p)
{
    if (s->part[p] != PART_STARTED)
        return;
    s->part[p] = PART_CLOSING;
    parts[p].close(s);
}

static void reconcile_closed(struct reconcile_sched *r)
{
    part_closed(container_of(r, struct service, reconcile), PART_RECONCILE);
}

static void close_reconcile(struct service *s)
{
    reconcile_sched_close(&s->reconcile, reconcile_closed);
}

/* While a scheduled reconcile reads, deliveries leave it its share of the rate. */
static void set_delivery_rate(void *arg, double rate_per_sec)
{
    struct service *s = arg;
    ratelimit_set_rate(&s->dispatcher.rate, rate_per_sec, 0, uv_now(&s->loop));
}

static void client_closed(struct omnidesk *c)
{
    part_closed(container_of(c, struct service, client), PART_CLIENT);
}

static void close_client(struct service *s)
{
    omnidesk_close(&s->client, 1, client_closed);
}

static void db_closed(struct dbloop *db)
{
    part_closed(container_of(db, struct service, db), PART_WORK_DB);
}

static void close_work_db(struct service *s)
{
    dbloop_close(&s->db, db_closed);
}

static void record_db_closed(struct dbloop *db)
{
    part_closed(container_of(db, struct service, record_db), PART_RECORD_DB);
}

static void close_record_db(struct service *s)
{
    dbloop_close(&s->record_db, record_db_closed);
}

static void listener_closed(struct listener *l)
{
    part_closed(container_of(l, struct service, listener), PART_LISTENER);
}

static void close_listener(struct service *s)
{
    listener_close(&s->listener, listener_closed);
}

static void dispatcher_closed(struct dispatcher *d)
{
    part_closed(container_of(d, struct service, dispatcher), PART_DISPATCHER);
}

static void close_dispatcher(struct service *s)
{
    dispatcher_close(&s->dispatcher, dispatcher_closed);
}

static void retention_closed(struct retention *r)
{
    part_closed(container_of(r, struct service, retention), PART_RETENTION);
}

static void close_retention(struct service *s)
{
    retention_close(&s->retention, retention_closed);
}

static void health_closed(struct health *h)
{
    part_closed(container_of(h, struct service, health), PART_HEALTH);
}

static void close_health(struct service *s)
{
    health_close(&s->health, health_closed);
}

static void close_all(struct service *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->stopping = 1;
    if (s->handles_on) {
        uv_timer_stop(&s->shutdown_timer);
        uv_timer_stop(&s->status_timer);
        uv_timer_stop(&s->trailing_timer);
    }
    /* The dispatcher and retention are owed callbacks by both connections and the client: they
     * come back as "closing" (late callbacks the modules honour), so all close together. */
    for (int i = 0; i < PART_COUNT; i++)
        close_part(s, (enum service_part)i);
    if (all_closed(s))
        close_own_handles(s);
}

static void on_farewell(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    (void)db;
    (void)res;
    (void)err;
    close_all(arg);
}

static void drained(struct dispatcher *d)
{
    struct service *s = container_of(d, struct service, dispatcher);
    const struct recorder *r = &s->dispatcher.recorder;
    if (r->dropped > 0)
        log_warn("stopped: every request in flight finished, but the outcomes of %llu were "
                 "dropped; their rows are delivered again after their lease",
                 r->dropped);
    else if (r->refused > 0)
        log_warn("stopped: every request in flight finished; %llu outcomes were refused by the "
                 "database and their rows marked failed instead",
                 r->refused);
    else
        log_info("stopped: every request in flight finished and its outcome is recorded");
    /* Leave omnisync status' list of processes, then close. */
    if (outbox_farewell(&s->db, s->process, on_farewell, s) != 0)
        close_all(s);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct service *s = t->data;
    if (s->aborted) {
        log_warn("outcomes could not be recorded in time; their rows are delivered again after "
                 "their lease outcomes=%zu",
                 recorder_backlog(&s->dispatcher.recorder));
        close_all(s);
        return;
    }
    s->aborted = 1;
    log_warn("shutdown_timeout passed: aborting requests still in flight in_flight=%u",
             dispatcher_in_flight(&s->dispatcher));
    /* The client closes now (aborting its requests); close_all() will not close it twice. */
    close_part(s, PART_CLIENT);
    /* Aborted requests release their rows; give that one more moment to be recorded. */
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, 2000, 0);
}

static void stop(struct service *s, const char *why)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    log_info("stopping (%s): no new claims; waiting for requests in flight in_flight=%u", why,
             dispatcher_in_flight(&s->dispatcher));
    notify("STOPPING=1");
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout,
                   s->cfg->shutdown_timeout_ms ? s->cfg->shutdown_timeout_ms : 1, 0);
    dispatcher_drain(&s->dispatcher, drained);
}

/* ---- signals ---- */

static void on_stop_signal(uv_signal_t *h, int signum)
{
    stop(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void reload(struct service *s)
{
    struct config next;
    int rc = config_load(&next, s->config_path);
    if (rc == 0)
        rc = config_load_api_key(&next);
    if (rc != 0) {
        for (size_t i = 0; i < next.nerrors; i++)
            log_error("reload refused: %s", next.errors[i]);
        log_error("reload refused: the configuration has errors; keeping the running one "
                  "errors=%zu",
                  next.nerrors);
        config_free(&next);
        return;
    }
    size_t notes = config_reload_notes(s->cfg, &next);
    for (size_t i = 0; i < next.nerrors; i++)
        log_warn("reload: %s", next.errors[i]);
    /* The HTTP client is the one part that can refuse new values: ask it first, so that a
     * refusal keeps the whole running config and the dispatcher never sees limits the client
     * does not enforce. */
    struct omnidesk_options opts = {
        .base_url = s->cfg->base_url, /* not reloadable */
        .api_key = next.api_key,
        .timeout_ms = (long)next.timeout_ms,
        .max_retry_after_ms = next.max_retry_after_ms,
        .max_in_flight = (unsigned)next.max_in_flight,
    };
    if (omnidesk_reconfigure(&s->client, &opts) != 0) {
        log_error("reload refused: the HTTP client refused the new settings; keeping the running "
                  "configuration");
        config_free(&next);
        return;
    }
    config_apply_reload(s->cfg, &next);
    config_free(&next);
    log_configure(s->cfg->log_level, s->cfg->log_format);
    dispatcher_reload(&s->dispatcher);
    reconcile_sched_reload(&s->reconcile);
    log_info("configuration reloaded restart_needed=%zu", notes);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    reload(h->data);
}

/* ---- the database and the doorbell ---- */

static void heartbeat(struct service *s);

/* Ready (systemd's READY=1, the log line) once all three connections are up for the first time:
 * the listener's, the work connection and the recorder's. They connect in parallel, in any
 * order, and /readyz answers 200 only with all of them. */
static void announce_ready(struct service *s)
{
    if (s->ready_sent || !listener_is_listening(&s->listener) ||
        dbloop_state(&s->db) != DBLOOP_READY || dbloop_state(&s->record_db) != DBLOOP_READY)
        return;
    s->ready_sent = 1;
    notify("READY=1");
    log_info("listening for changes; ready process=%s", s->process);
}

/* Copies what lives in memory into the gauges, just before /readyz or /metrics answers. */
static void refresh_gauges(void *arg)
{
    struct service *s = arg;
    struct metrics *m = &s->metrics;
    /* Either connection down stops delivery: no claims without the work connection, no
     * outcomes written (and so no claims either) without the recorder's. */
    m->db_connected =
        dbloop_state(&s->db) == DBLOOP_READY && dbloop_state(&s->record_db) == DBLOOP_READY;
    m->listening = listener_is_listening(&s->listener);
    m->in_flight = dispatcher_in_flight(&s->dispatcher);
    m->circuit_open = breaker_get_state(&s->dispatcher.breaker) != BREAKER_CLOSED;
    m->api_key_refused = !dispatcher_ready_api(&s->dispatcher);
    m->api_pause_seconds = (double)dispatcher_api_pause_ms(&s->dispatcher) / 1000.0;
    m->last_success_timestamp_seconds = s->dispatcher.stats.last_success_at;
}

static const char *last_error(void *arg)
{
    struct service *s = arg;
    return s->dispatcher.stats.last_error;
}

static void on_capture_vacuumed(struct dbloop *db, const PGresult *res, const char *err,
                                void *arg)
{
    (void)arg;
    if (res == NULL && dbloop_error(db) != DBLOOP_ECLOSING && dbloop_error(db) != DBLOOP_ENOTCONN)
        log_warn("vacuuming the capture table failed; claims keep reading its empty pages until "
                 "autovacuum shortens it error=\"%s\"",
                 err);
}

/*
 * The capture table is (nearly) empty but long. A large move emptied it (a bulk statement's
 * rows, sql/007_statement_deletes.sql), and autovacuum, which removes the dead rows, gives the
 * empty pages back only under an exclusive lock it takes when nobody holds the table, which the
 * claims' look into it, back to back while they drain what was moved, never left. Each claim
 * then read every empty page (bench/drain --backlog 1000000: 289 MB, 255 ms a claim, a
 * sixth of the drain rate), and with its rows gone autovacuum had no reason to come back.
 * The daemon vacuums it itself on the work connection, where none of its own claims can hold
 * the table meanwhile (a CRM writer still can: VACUUM then gives way and keeps the pages).
 * Fewer rows than pages counts as empty. A table that stays as long (a writer always there, or
 * a role that does not own it) is vacuumed again after CAPTURE_VACUUM_AGAIN_MS, not at every
 * count.
 */
#define CAPTURE_VACUUM_BYTES (8LL * 1024 * 1024)
#define CAPTURE_PAGE_BYTES 8192
#define CAPTURE_VACUUM_AGAIN_MS (10 * 60 * 1000)

static void vacuum_capture(struct service *s, const struct outbox_counts *counts)
{
    uint64_t now = uv_now(&s->loop);
    if (counts->capture_bytes < CAPTURE_VACUUM_BYTES ||
        counts->capture_rows >= counts->capture_bytes / CAPTURE_PAGE_BYTES || s->stopping ||
        (counts->capture_bytes == s->capture_vacuumed_bytes &&
         now - s->capture_vacuumed_at < CAPTURE_VACUUM_AGAIN_MS))
        return;
    s->capture_vacuumed_bytes = counts->capture_bytes;
    s->capture_vacuumed_at = now;
    log_info("the capture table is long but nearly empty; vacuuming it so that claims stop "
             "reading empty pages capture_mb=%lld capture_rows=%lld",
             counts->capture_bytes / (1024 * 1024), counts->capture_rows);
    if (outbox_vacuum_capture(&s->db, on_capture_vacuumed, s) != 0)
        log_warn("could not queue the capture table's vacuum");
}

static void on_counts(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct service *s = arg;
    (void)db;
    (void)err;
    s->counting = 0;
    if (res == NULL)
        return; /* the gauges keep their last values; db_connected tells the rest */
    struct outbox_counts counts;
    if (outbox_counts_read(res, &counts) != 0)
        return;
    for (int i = 0; i < METRICS_STATUS_COUNT; i++)
        s->metrics.outbox_rows[i] = counts.rows[i];
    s->metrics.oldest_pending_age_seconds = counts.oldest_pending_age_seconds;
    s->metrics.paused = counts.paused;
    s->metrics.purges_held = s->metrics.outbox_rows[METRICS_STATUS_HELD];
    s->metrics.outbox_rows_known = 1;
    s->metrics.outbox_counted_at = (double)time(NULL);
    vacuum_capture(s, &counts);
}

/*
 * Heap that is free again goes back to the kernel, at every status tick (15 s under systemd's
 * watchdog, 5 s without). A burst (the rows released after an outage, a large claim) grows
 * glibc's heap, and the chunks still in use afterwards pin the freed pages between them: glibc
 * returns only the free space at the heap's top by itself. In a chaos soak the heap in use stayed
 * at 2.7 - 3.8 MB while the heap grew in steps from 4.3 to 5.3 MB in 20 minutes, and the RSS with
 * it (bench/README.md, soak, "The heap in a long soak"). malloc_trim(0) gives every free page
 * back, wherever it is: on a soak daemon it took RSS from 18.7 to 17.3 MB in 0.4 ms of CPU, and
 * 0.12 ms when there was little to give back. It needs nothing of the database, so it does not
 * wait for the outbox count, which a lock on the outbox can hold up.
 */
static void trim_heap(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* The outbox gauges come from the database: a count over the table, so at most every 15 s. */
static void count_outbox(struct service *s)
{
    uint64_t now = uv_now(&s->loop);
    if (s->counting || s->stopping || (s->counted_at && now - s->counted_at < 15000))
        return;
    s->counted_at = now;
    if (outbox_count(&s->db, on_counts, s) == 0)
        s->counting = 1;
}

static void on_db_state(struct dbloop *db, enum dbloop_state state, const char *reason)
{
    struct service *s = container_of(db, struct service, db);
    int applied;
    if (s->closing)
        return;
    if (state == DBLOOP_DISCONNECTED)
        dispatcher_db_lost(&s->dispatcher);
    /* The work connection's setup checks the schema first: an old one is no reason to retry. */
    if (state == DBLOOP_DISCONNECTED && !s->stopping &&
        schema_guard_refused(dbloop_sqlstate(db), reason, &applied)) {
        log_error("the omnisync schema is at version %d, this omnisync needs %d: run omnisync "
                  "migrate",
                  applied, schema_latest_version());
        s->exit_code = SERVICE_EXIT_SCHEMA_TOO_OLD;
        stop(s, "schema too old");
    }
    if (state == DBLOOP_READY) {
        heartbeat(s);
        count_outbox(s);
        dispatcher_wake(&s->dispatcher);
        announce_ready(s);
    }
}

static void on_record_db_state(struct dbloop *db, enum dbloop_state state, const char *reason)
{
    struct service *s = container_of(db, struct service, record_db);
    (void)reason; /* dbloop has logged it */
    if (s->closing)
        return;
    /* A lost recorder connection costs no lease (they are renewed on the work connection): the
     * recorder keeps its outcomes and writes them again once it is back, and claims wait. */
    if (state == DBLOOP_READY) {
        recorder_flush(&s->dispatcher.recorder);
        dispatcher_wake(&s->dispatcher);
        announce_ready(s);
    }
}

static void on_trailing(uv_timer_t *t)
{
    struct service *s = t->data;
    dispatcher_wake(&s->dispatcher);
}

static void on_wake(struct listener *l)
{
    struct service *s = container_of(l, struct service, listener);
    if (listener_take_resume(l))
        dispatcher_end_api_pause(&s->dispatcher, "omnisync resume");
    dispatcher_wake(&s->dispatcher);
    /* A transaction that changed a customer just after its session rang may have skipped
     * ringing itself (at most one ring per 10 ms per session): look once more a little after
     * the last ring. Restarted by every ring, so the look always follows the latest one; while
     * rings keep coming, each one claims anyway. */
    uv_timer_start(&s->trailing_timer, on_trailing, SERVICE_TRAILING_CLAIM_MS, 0);
}

static void on_listening(struct listener *l, int ready)
{
    struct service *s = container_of(l, struct service, listener);
    if (!ready)
        return;
    /* NOTIFY is only a doorbell: whatever was committed while we were not listening is found
     * by one poll now. */
    dispatcher_wake(&s->dispatcher);
    announce_ready(s);
    notify_status(s);
}

static void on_heartbeat(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    (void)db;
    (void)arg;
    if (res == NULL && dbloop_error(db) != DBLOOP_ECLOSING && dbloop_error(db) != DBLOOP_ENOTCONN)
        log_debug("heartbeat failed error=\"%s\"", err);
}

/* The process' row in omnisync.process: what only memory knows (circuit, key) for status. */
static void heartbeat(struct service *s)
{
    char api[96];
    uint64_t pause_ms = dispatcher_api_pause_ms(&s->dispatcher);
    if (!dispatcher_ready_api(&s->dispatcher)) {
        snprintf(api, sizeof(api), "key refused");
    } else if (pause_ms > 0) {
        /* A pause the API asked for (Retry-After) lives in memory only: status shows it here. */
        time_t until = time(NULL) + (time_t)((pause_ms + 999) / 1000);
        struct tm tm;
        char when[32] = "";
        if (gmtime_r(&until, &tm) != NULL)
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(api, sizeof(api), "paused by Retry-After until %s", when);
    } else {
        snprintf(api, sizeof(api), "ok");
    }
    struct outbox_heartbeat h = {
        .process = s->process,
        .circuit = breaker_state_name(breaker_get_state(&s->dispatcher.breaker)),
        .api = api,
        .in_flight = dispatcher_in_flight(&s->dispatcher),
    };
    if (outbox_heartbeat(&s->db, &h, on_heartbeat, s) != 0)
        log_debug("heartbeat not queued");
}

static void on_status_timer(uv_timer_t *t)
{
    struct service *s = t->data;
    notify_status(s);
    if (!s->stopping) {
        heartbeat(s);
        count_outbox(s);
    }
    trim_heap();
    if (s->watchdog_usec)
        notify("WATCHDOG=1");
}

/* ---- start ---- */

static void make_process_name(char *out, size_t len)
{
    char host[64] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, len, "%s:%d:%lx", host, (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ((unsigned long)ts.tv_sec << 20)));
}

int service_run(struct config *cfg, const char *config_path)
{
    struct service *s = calloc(1, sizeof(*s));
    int rc = 1;
    if (s == NULL) {
        log_error("out of memory");
        return 1;
    }
    s->cfg = cfg;
    s->config_path = config_path;
    make_process_name(s->process, sizeof(s->process));
    srandom((unsigned)(getpid() ^ time(NULL)));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&s->loop);

    /* Every component started is marked so: a failure further on closes exactly those. */
    struct omnidesk_options opts = {
        .base_url = cfg->base_url,
        .api_key = cfg->api_key,
        .timeout_ms = (long)cfg->timeout_ms,
        .max_retry_after_ms = cfg->max_retry_after_ms,
        .max_in_flight = (unsigned)cfg->max_in_flight,
    };
    if (omnidesk_init(&s->client, &s->loop, &opts) != 0) {
        log_error("cannot start the HTTP client; check [omnidesk] base_url");
        goto unwind;
    }
    s->part[PART_CLIENT] = PART_STARTED;
    char prepare[12288];
    /* The schema guard runs first on every connect of the work connection. */
    size_t guard_len = 0;
    if (schema_guard_sql(prepare, sizeof(prepare)) == 0)
        guard_len = strlen(prepare);
    if (guard_len == 0 ||
        dispatcher_prepare_sql(prepare + guard_len, sizeof(prepare) - guard_len) != 0) {
        log_error("the claim statement does not fit its buffer");
        goto unwind;
    }
    struct dbloop_options dbopts = {
        .conninfo = cfg->conninfo,
        .application_name = "omnisync run",
        .on_connect_sql = prepare,
        .on_state = on_db_state,
        .data = s,
    };
    if (dbloop_init(&s->db, &s->loop, &dbopts) != 0) {
        log_error("cannot start the database connection; check [database] conninfo");
        goto unwind;
    }
    s->part[PART_WORK_DB] = PART_STARTED;
    struct dbloop_options recordopts = {
        .conninfo = cfg->conninfo,
        .application_name = "omnisync recorder",
        .on_state = on_record_db_state,
        .data = s,
    };
    if (dbloop_init(&s->record_db, &s->loop, &recordopts) != 0)
        goto out_of_memory;
    s->part[PART_RECORD_DB] = PART_STARTED;
    if (listener_init(&s->listener, &s->loop, cfg->conninfo, on_wake, on_listening, s) != 0)
        goto out_of_memory;
    s->part[PART_LISTENER] = PART_STARTED;
    if (dispatcher_init(&s->dispatcher, &s->loop, cfg, &s->db, &s->record_db,
                        listener_dbloop(&s->listener), &s->client, s->process) != 0)
        goto out_of_memory;
    s->part[PART_DISPATCHER] = PART_STARTED;
    if (retention_init(&s->retention, &s->loop, &s->db, cfg) != 0)
        goto out_of_memory;
    s->part[PART_RETENTION] = PART_STARTED;

    metrics_init(&s->metrics);
    for (size_t i = 0; i < cfg->nsources; i++)
        metrics_add_source(&s->metrics, cfg->sources[i].name);
    s->dispatcher.metrics = &s->metrics;
    if (reconcile_sched_init(&s->reconcile, &s->loop, cfg, config_path, &s->metrics) != 0) {
        log_error("cannot start: the reconcile timer");
        goto unwind;
    }
    s->part[PART_RECONCILE] = PART_STARTED;
    s->reconcile.set_delivery_rate = set_delivery_rate;
    s->reconcile.arg = s;
    if (cfg->health_port >= 0) {
        struct health_source src = {
            .metrics = &s->metrics,
            .refresh = refresh_gauges,
            .last_error = last_error,
            .arg = s,
        };
        /* health_init logs why, with the address and what to change. */
        if (health_init(&s->health, &s->loop, cfg->health_host, cfg->health_port, &src) != 0)
            goto unwind;
        s->part[PART_HEALTH] = PART_STARTED;
        log_info("health endpoint listening address=%s port=%d", cfg->health_host,
                 health_port(&s->health));
        if (!cfg->health_loopback)
            log_warn("the health endpoint is reachable from other hosts and has no "
                     "authentication; its answers carry no key and no customer data, but keep it "
                     "behind a firewall or set [health] listen = 127.0.0.1:PORT address=%s",
                     cfg->health_host);
    }

    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sighup);
    s->sigterm.data = s->sigint.data = s->sighup.data = s;
    uv_signal_start(&s->sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_stop_signal, SIGINT);
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_timer_init(&s->loop, &s->shutdown_timer);
    uv_timer_init(&s->loop, &s->status_timer);
    uv_timer_init(&s->loop, &s->trailing_timer);
    s->handles_on = 1;
    s->shutdown_timer.data = s->status_timer.data = s->trailing_timer.data = s;
#ifdef OMNISYNC_HAVE_SYSTEMD
    if (sd_watchdog_enabled(0, &s->watchdog_usec) <= 0)
        s->watchdog_usec = 0;
#endif
    uint64_t every = s->watchdog_usec ? s->watchdog_usec / 2000 : 5000;
    uv_timer_start(&s->status_timer, on_status_timer, every ? every : 1, every ? every : 1);

    char where[512];
    log_conninfo_redacted(cfg->conninfo, where, sizeof(where));
    log_info("omnisync %s starting process=%s sources=%zu database=\"%s\"", OMNISYNC_VERSION,
             s->process, cfg->nsources, where);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    rc = s->exit_code;
    goto done;

out_of_memory:
    log_error("cannot start: out of memory");
unwind:
    /* A failed start closes what it started, the same way a shutdown does. */
    rc = 1;
    close_all(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
done:
    if (uv_loop_close(&s->loop) != 0)
        log_warn("handles still open at exit");
    curl_global_cleanup();
    config_free(cfg);
    free(s);
    return rc;
}
