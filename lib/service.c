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
#include "retention.h"
#include "schema.h"

/* Longer than the doorbell's quiet time per session (10 ms, sql/trigger_template.sql) plus
 * margin. */
#define SERVICE_TRAILING_CLAIM_MS 50

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

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
    int health_on;
    int counting;       /* the outbox count query is running */
    uint64_t counted_at; /* loop time of the last count */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t shutdown_timer;
    uv_timer_t status_timer; /* systemd STATUS= and WATCHDOG=1 */
    uv_timer_t trailing_timer; /* the claim that follows every doorbell */
    uint64_t watchdog_usec;
    int stopping;
    int aborted;
    int closing;
    int client_gone; /* the HTTP client finished closing (it may before the rest: aborted) */
    int ready_sent;
    int exit_code; /* 0, or SERVICE_EXIT_SCHEMA_TOO_OLD */
    unsigned open; /* components still to close */
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

static void component_closed(struct service *s)
{
    if (--s->open > 0)
        return;
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
    uv_close((uv_handle_t *)&s->status_timer, NULL);
    uv_close((uv_handle_t *)&s->trailing_timer, NULL);
}

static void db_closed(struct dbloop *db)
{
    component_closed(container_of(db, struct service, db));
}

static void record_db_closed(struct dbloop *db)
{
    component_closed(container_of(db, struct service, record_db));
}

static void listener_closed(struct listener *l)
{
    component_closed(container_of(l, struct service, listener));
}

static void health_closed(struct health *h)
{
    component_closed(container_of(h, struct service, health));
}

static void retention_closed(struct retention *r)
{
    component_closed(container_of(r, struct service, retention));
}

static void client_closed(struct omnidesk *c)
{
    struct service *s = container_of(c, struct service, client);
    s->client_gone = 1;
    /* Aborted at the drain deadline, the client may be gone before close_all() counts it. */
    if (s->closing)
        component_closed(s);
}

static void dispatcher_closed(struct dispatcher *d)
{
    struct service *s = container_of(d, struct service, dispatcher);
    /* The dispatcher and its recorder used both connections until now: close them only now. */
    dbloop_close(&s->db, db_closed);
    dbloop_close(&s->record_db, record_db_closed);
    component_closed(s);
}

static void close_all(struct service *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->dispatcher.drained_cb = NULL;
    /* dispatcher, listener, retention, the work and recorder connections (closed after the
     * dispatcher) and the client, unless it is already gone */
    s->open = s->client_gone ? 5 : 6;
    uv_timer_stop(&s->shutdown_timer);
    uv_timer_stop(&s->status_timer);
    uv_timer_stop(&s->trailing_timer);
    if (s->health_on) {
        s->open++;
        health_close(&s->health, health_closed);
    }
    retention_close(&s->retention, retention_closed);
    if (!s->client_gone)
        omnidesk_close(&s->client, 1, client_closed);
    listener_close(&s->listener, listener_closed);
    dispatcher_close(&s->dispatcher, dispatcher_closed);
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
    const char *params[] = {s->process};
    if (dbloop_query(&s->db, "DELETE FROM omnisync.process WHERE name = $1", 1, params,
                     DBLOOP_FAIL_FAST, on_farewell, s) != 0)
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
    /* With its close callback now: omnidesk_close keeps the first one it is given, and the
     * client must be counted closed whichever way the shutdown ends. */
    omnidesk_close(&s->client, 1, client_closed);
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

static void on_counts(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct service *s = arg;
    (void)db;
    (void)err;
    s->counting = 0;
    if (res == NULL)
        return; /* the gauges keep their last values; db_connected tells the rest */
    for (int i = 0; i < METRICS_STATUS_COUNT; i++)
        s->metrics.outbox_rows[i] = atoll(PQgetvalue(res, 0, i));
    s->metrics.oldest_pending_age_seconds = atof(PQgetvalue(res, 0, 5));
    s->metrics.paused = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    s->metrics.purges_held = s->metrics.outbox_rows[METRICS_STATUS_HELD];
    s->metrics.outbox_rows_known = 1;
    s->metrics.outbox_counted_at = (double)time(NULL);
}

/* The outbox gauges come from the database: a count over the table, so at most every 15 s. */
static void count_outbox(struct service *s)
{
    uint64_t now = uv_now(&s->loop);
    if (s->counting || s->stopping || (s->counted_at && now - s->counted_at < 15000))
        return;
    s->counted_at = now;
    if (dbloop_query(&s->db,
                     "SELECT count(*) FILTER (WHERE status = 'pending'), "
                     "count(*) FILTER (WHERE status = 'held'), "
                     "count(*) FILTER (WHERE status = 'done'), "
                     "count(*) FILTER (WHERE status = 'failed'), "
                     "count(*) FILTER (WHERE status = 'skipped'), "
                     "coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = "
                     "'pending')), 0), "
                     "EXISTS (SELECT 1 FROM omnisync.control WHERE paused) "
                     /* captured rows not yet moved (sql/003_capture.sql) are pending too */
                     "FROM (SELECT status, created_at FROM omnisync.outbox UNION ALL "
                     "SELECT 'pending', captured_at FROM omnisync.capture) o",
                     0, NULL, DBLOOP_FAIL_FAST, on_counts, s) == 0)
        s->counting = 1;
}

static void on_db_state(struct dbloop *db, enum dbloop_state state, const char *reason)
{
    struct service *s = container_of(db, struct service, db);
    int applied;
    if (state == DBLOOP_DISCONNECTED)
        dispatcher_db_lost(&s->dispatcher);
    /* The work connection's setup checks the schema first: an old one is no reason to retry. */
    if (state == DBLOOP_DISCONNECTED && !s->stopping && schema_guard_refused(reason, &applied)) {
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
    if (res == NULL && strcmp(err, "closing") != 0 && strcmp(err, "not connected") != 0)
        log_debug("heartbeat failed error=\"%s\"", err);
}

/* The process' row in omnisync.process: what only memory knows (circuit, key) for status. */
static void heartbeat(struct service *s)
{
    char in_flight[16], api[96];
    uint64_t pause_ms = dispatcher_api_pause_ms(&s->dispatcher);
    snprintf(in_flight, sizeof(in_flight), "%u", dispatcher_in_flight(&s->dispatcher));
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
    const char *params[] = {
        s->process, breaker_state_name(breaker_get_state(&s->dispatcher.breaker)), api, in_flight};
    if (dbloop_query(&s->db,
                     "WITH gone AS (DELETE FROM omnisync.process "
                     " WHERE seen_at < now() - interval '1 hour') "
                     "INSERT INTO omnisync.process (name, circuit, api, in_flight) "
                     "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET seen_at = now(), "
                     "circuit = EXCLUDED.circuit, api = EXCLUDED.api, in_flight = EXCLUDED.in_flight",
                     4, params, DBLOOP_FAIL_FAST, on_heartbeat, s) != 0)
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

    struct omnidesk_options opts = {
        .base_url = cfg->base_url,
        .api_key = cfg->api_key,
        .timeout_ms = (long)cfg->timeout_ms,
        .max_retry_after_ms = cfg->max_retry_after_ms,
        .max_in_flight = (unsigned)cfg->max_in_flight,
    };
    if (omnidesk_init(&s->client, &s->loop, &opts) != 0) {
        log_error("cannot start the HTTP client; check [omnidesk] base_url");
        goto out;
    }
    char prepare[12288];
    /* The schema guard runs first on every connect of the work connection. */
    size_t guard_len = 0;
    if (schema_guard_sql(prepare, sizeof(prepare)) == 0)
        guard_len = strlen(prepare);
    if (guard_len == 0 ||
        dispatcher_prepare_sql(prepare + guard_len, sizeof(prepare) - guard_len) != 0) {
        log_error("the claim statement does not fit its buffer");
        goto out;
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
        omnidesk_close(&s->client, 1, NULL);
        goto out;
    }
    struct dbloop_options recordopts = {
        .conninfo = cfg->conninfo,
        .application_name = "omnisync recorder",
        .on_state = on_record_db_state,
        .data = s,
    };
    if (dbloop_init(&s->record_db, &s->loop, &recordopts) != 0 ||
        listener_init(&s->listener, &s->loop, cfg->conninfo, on_wake, on_listening, s) != 0 ||
        dispatcher_init(&s->dispatcher, &s->loop, cfg, &s->db, &s->record_db, &s->client,
                        s->process) != 0 ||
        retention_init(&s->retention, &s->loop, &s->db, cfg) != 0) {
        log_error("cannot start: out of memory");
        goto out; /* start-up failure: the process exits, the kernel reclaims */
    }

    metrics_init(&s->metrics);
    for (size_t i = 0; i < cfg->nsources; i++)
        metrics_add_source(&s->metrics, cfg->sources[i].name);
    s->dispatcher.metrics = &s->metrics;
    if (cfg->health_port >= 0) {
        struct health_source src = {
            .metrics = &s->metrics,
            .refresh = refresh_gauges,
            .last_error = last_error,
            .arg = s,
        };
        if (health_init(&s->health, &s->loop, cfg->health_host, cfg->health_port, &src) != 0) {
            log_error("cannot serve the health endpoint on [health] listen = %s; set another "
                      "address or leave it empty to disable it",
                      cfg->listen);
            goto out;
        }
        s->health_on = 1;
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
    if (uv_loop_close(&s->loop) != 0) {
        log_warn("handles still open at exit");
    }
out:
    curl_global_cleanup();
    config_free(cfg);
    free(s);
    return rc;
}
