/*
 * health: /healthz, /readyz and /metrics served by libmicrohttpd on the daemon's libuv loop.
 *
 * MHD is started without a thread of its own (MHD_USE_EPOLL, external polling): its epoll fd,
 * which becomes readable whenever a socket inside needs work, sits under one uv_poll, and the
 * uv_timer is re-armed from MHD_get_timeout() after every MHD_run(). The timer matters as much as
 * the poll: MHD watches its connections edge-triggered and keeps those that still have buffered
 * work on a private list, which it only announces through a zero timeout; and idle connections are
 * only closed when MHD_run() is called after their timeout.
 *
 * Requests are answered on the first call of the access handler, before any body is read, so a
 * body is never buffered; headers are capped by the per-connection memory limit (MHD answers 431
 * beyond it) and connections by number and idle time. The handler never blocks: /readyz and
 * /metrics only read the in-memory figures.
 */
#include "health.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "log.h"

#ifndef OMNISYNC_VERSION
#define OMNISYNC_VERSION "unknown"
#endif

/* Scrapers and probes open a handful of connections; anything beyond is not a monitoring system,
 * and each connection costs its memory limit (256 x 16 kB = 4 MB at most). The limit is high on
 * purpose: libmicrohttpd 0.9.x watches a connection edge-triggered from the moment it accepts it,
 * so a client that sent part of a request and closed while still queued behind the limit is only
 * noticed at its timeout. A flood that fits under the limit is dropped as soon as its clients
 * close; a larger one drains at HEALTH_MAX_CONNECTIONS per HEALTH_CONNECTION_TIMEOUT. */
#define HEALTH_MAX_CONNECTIONS 256u
/* Headers and the request line must fit in this; MHD refuses larger requests itself. */
#define HEALTH_CONNECTION_MEMORY (16u * 1024u)
/* Seconds an idle (or slow) connection is kept: a probe or scrape on loopback sends its request
 * in milliseconds, and a scraper's kept-alive connection is cheap to open again. */
#define HEALTH_CONNECTION_TIMEOUT 5u
/* Outbox counts older than this are reported stale: two missed counts (15 s apart) and slack. */
#define HEALTH_COUNT_STALE_S 40.0
/* Longest wait between two MHD_run() calls while any connection is open (see run_mhd()). */
#define HEALTH_RUN_INTERVAL_MS 1000u

#define CONTENT_TYPE_JSON "application/json"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"

static void run_mhd(struct health *h);

/* ---- answers -------------------------------------------------------------------------------- */

/*
 * Queues one answer. `body` is either static (must_free 0) or malloc'd and handed over
 * (must_free 1): it is freed here if the response cannot be made.
 */
static enum MHD_Result answer(struct MHD_Connection *connection, unsigned status,
                              const char *content_type, char *body, size_t len, int must_free)
{
    struct MHD_Response *response;
    enum MHD_Result ret;

    response = MHD_create_response_from_buffer(
        len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (response == NULL) {
        if (must_free)
            free(body);
        return MHD_NO; /* MHD closes the connection */
    }
    if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
        MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
         MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)) {
        MHD_destroy_response(response);
        return MHD_NO;
    }
    ret = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return ret;
}

static enum MHD_Result answer_static(struct MHD_Connection *connection, unsigned status,
                                     const char *content_type, const char *body)
{
    /* PERSISTENT: MHD never writes to or frees the buffer. */
    return answer(connection, status, content_type, (char *)(uintptr_t)body, strlen(body), 0);
}

static enum MHD_Result answer_oom(struct MHD_Connection *connection)
{
    log_warn("health: out of memory while answering a request");
    return answer_static(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, CONTENT_TYPE_TEXT,
                         "out of memory\n");
}

/* Adds `name`: value or null; returns 0 or -1 (out of memory). json-c takes `value` over. */
static int add(struct json_object *obj, const char *name, struct json_object *value)
{
    if (json_object_object_add(obj, name, value) != 0) {
        json_object_put(value);
        return -1;
    }
    return 0;
}

/* A double as JSON, spelled as metrics spells it (12.5, not 12.500000000000002), or null. */
static struct json_object *json_seconds(double seconds)
{
    char text[40];

    if (!isfinite(seconds) || metrics_format_double(seconds, text, sizeof(text)) != 0)
        return NULL;
    return json_object_new_double_s(seconds, text);
}

/* "2024-05-01T12:00:00Z" for a positive Unix time, null for "never". */
static struct json_object *json_utc(double unix_seconds)
{
    char text[32];
    struct tm tm;
    time_t t;

    if (!isfinite(unix_seconds) || unix_seconds <= 0 || unix_seconds > 253402300799.0)
        return NULL;
    t = (time_t)unix_seconds;
    if (gmtime_r(&t, &tm) == NULL || strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return NULL;
    return json_object_new_string(text);
}

/* The source's last error, cut at HEALTH_LAST_ERROR_MAX bytes on a UTF-8 character boundary so
 * the cut never leaves half a character in the JSON; null when there is none. */
static struct json_object *json_last_error(const struct health_source *src)
{
    const char *text;
    size_t len;

    if (src->last_error == NULL)
        return NULL;
    text = src->last_error(src->arg);
    if (text == NULL || *text == '\0')
        return NULL;
    len = strnlen(text, HEALTH_LAST_ERROR_MAX + 1);
    if (len > HEALTH_LAST_ERROR_MAX) {
        len = HEALTH_LAST_ERROR_MAX;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
            len--;
    }
    return json_object_new_string_len(text, (int)len);
}

static const char *api_state(const struct metrics *m)
{
    if (m->api_key_refused)
        return "key refused";
    if (m->api_pause_seconds > 0)
        return "paused_by_retry_after";
    if (m->circuit_open)
        return "circuit open";
    return "ok";
}

static enum MHD_Result answer_readyz(struct health *h, struct MHD_Connection *connection)
{
    const struct metrics *m = h->src.metrics;
    struct json_object *doc = NULL;
    const char *text;
    char *body = NULL;
    int known, ready, paused, stale;

    if (h->src.refresh != NULL)
        h->src.refresh(h->src.arg);
    /* Circuit open is not "not ready": the daemon is doing its job of waiting the outage out,
     * and restarting it (what a failing readiness often leads to) would not help. */
    ready = m->db_connected && m->listening && !m->api_key_refused;
    known = m->outbox_rows_known;
    paused = m->api_pause_seconds > 0;
    /* The counts come from a query at most every 15 s that waits behind a table lock or a busy
     * connection: past this age they are old news, and readyz says so instead of passing a stale
     * "pending: 0" for the truth (issue 17 item 9). */
    stale = known && (m->outbox_counted_at <= 0 ||
                      (double)time(NULL) - m->outbox_counted_at > HEALTH_COUNT_STALE_S);

    doc = json_object_new_object();
    if (doc == NULL)
        goto fail;
    if (add(doc, "status", json_object_new_string(ready ? "ready" : "not ready")) != 0 ||
        add(doc, "db", json_object_new_string(m->db_connected ? "connected" : "disconnected")) !=
            0 ||
        add(doc, "listening", json_object_new_boolean(m->listening ? 1 : 0)) != 0 ||
        add(doc, "api", json_object_new_string(api_state(m))) != 0 ||
        add(doc, "api_paused_until",
            paused ? json_utc((double)time(NULL) + ceil(m->api_pause_seconds)) : NULL) != 0 ||
        add(doc, "api_pause_s", paused ? json_seconds(ceil(m->api_pause_seconds)) : NULL) != 0 ||
        add(doc, "in_flight", json_object_new_int64((int64_t)m->in_flight)) != 0 ||
        add(doc, "pending",
            known ? json_object_new_int64(m->outbox_rows[METRICS_STATUS_PENDING]) : NULL) != 0 ||
        add(doc, "failed",
            known ? json_object_new_int64(m->outbox_rows[METRICS_STATUS_FAILED]) : NULL) != 0 ||
        add(doc, "oldest_pending_age_s",
            known ? json_seconds(m->oldest_pending_age_seconds) : NULL) != 0 ||
        add(doc, "pending_as_of", known ? json_utc(m->outbox_counted_at) : NULL) != 0 ||
        add(doc, "pending_stale", known ? json_object_new_boolean(stale) : NULL) != 0 ||
        add(doc, "last_success_at", json_utc(m->last_success_timestamp_seconds)) != 0 ||
        add(doc, "last_error", json_last_error(&h->src)) != 0)
        goto fail;
    text = json_object_to_json_string_ext(doc,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (text == NULL || (body = strdup(text)) == NULL)
        goto fail;
    json_object_put(doc);
    return answer(connection, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, CONTENT_TYPE_JSON,
                  body, strlen(body), 1);
fail:
    json_object_put(doc);
    return answer_oom(connection);
}

static enum MHD_Result answer_metrics(struct health *h, struct MHD_Connection *connection)
{
    const char *version = h->src.version != NULL ? h->src.version : OMNISYNC_VERSION;
    char *body;
    size_t len;

    if (h->src.refresh != NULL)
        h->src.refresh(h->src.arg);
    if (metrics_render(h->src.metrics, version, &body, &len) != 0)
        return answer_oom(connection);
    return answer(connection, MHD_HTTP_OK, CONTENT_TYPE_METRICS, body, len, 1);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct health *h = cls;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    /* Answering on the first call, before MHD has read any body, is what keeps bodies unread:
     * MHD then discards the rest of the request and closes the connection after the answer.
     * HEAD gets GET's headers; MHD leaves the body out. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer_static(connection, MHD_HTTP_METHOD_NOT_ALLOWED, CONTENT_TYPE_TEXT,
                             "method not allowed\n");
    if (strcmp(url, "/healthz") == 0)
        return answer_static(connection, MHD_HTTP_OK, CONTENT_TYPE_JSON, "{\"status\":\"ok\"}");
    if (strcmp(url, "/readyz") == 0)
        return answer_readyz(h, connection);
    if (strcmp(url, "/metrics") == 0)
        return answer_metrics(h, connection);
    return answer_static(connection, MHD_HTTP_NOT_FOUND, CONTENT_TYPE_TEXT, "not found\n");
}

/* ---- the loop ------------------------------------------------------------------------------- */

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t len;

    struct health *h = cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    /* While starting, the failure is told once, by health_init, with MHD's words in it. */
    if (h != NULL && h->starting) {
        size_t keep = len < sizeof(h->start_error) - 1 ? len : sizeof(h->start_error) - 1;
        memcpy(h->start_error, line, keep);
        h->start_error[keep] = '\0';
        return;
    }
    log_warn("health: libmicrohttpd: %s", line);
}

static void on_timer(uv_timer_t *timer)
{
    run_mhd(timer->data);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct health *h = poll->data;

    (void)events;
    /* An error on the epoll fd itself is not expected; MHD_run() still does what it can. */
    if (status < 0)
        log_warn("health: poll error on the server's epoll fd: %s", uv_strerror(status));
    run_mhd(h);
}

static unsigned current_connections(struct health *h)
{
    const union MHD_DaemonInfo *info;

    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info != NULL ? info->num_connections : 0;
}

static void run_mhd(struct health *h)
{
    MHD_UNSIGNED_LONG_LONG timeout;
    uint64_t delay_ms;
    unsigned before, after;
    int have_timeout;

    if (h->daemon == NULL)
        return;
    before = h->connections;
    if (MHD_run(h->daemon) != MHD_YES)
        log_debug("health: MHD_run failed");
    after = current_connections(h);
    h->connections = after;
    have_timeout = MHD_get_timeout(h->daemon, &timeout) == MHD_YES;
    /* Re-armed after every run: each run may change what MHD waits for. A zero timeout means
     * "call again at once" (work left on its ready list) and fires on the next loop turn. */
    delay_ms = have_timeout ? (uint64_t)timeout : UINT64_MAX;
    /* At the connection limit MHD takes its listening socket out of its epoll set and only puts it
     * back at the start of a later MHD_run(). When connections closed in this run, no event may
     * ever come for the clients queued meanwhile, and with no connection left MHD reports no
     * timeout: without another run now the server would stay deaf for good (issue 17 item 3). */
    if (after < before)
        delay_ms = 0;
    /* While connections exist, or the listening socket may be out of the set, MHD is run at least
     * this often, whatever it reports: a bounded safety net, never the only wake-up. */
    else if (after > 0 && delay_ms > HEALTH_RUN_INTERVAL_MS)
        delay_ms = HEALTH_RUN_INTERVAL_MS;
    if (delay_ms != UINT64_MAX)
        uv_timer_start(&h->timer, on_timer, delay_ms, 0);
    else
        uv_timer_stop(&h->timer);
}

static int parse_host(const char *host, int port, struct sockaddr_storage *addr)
{
    char literal[INET6_ADDRSTRLEN + 2];
    size_t len;
    struct sockaddr_in *in4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;

    if (host == NULL || port < 0 || port > 65535)
        return OMNISYNC_EINVAL;
    len = strnlen(host, sizeof(literal));
    if (len >= sizeof(literal))
        return OMNISYNC_EINVAL;
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        memcpy(literal, host + 1, len - 2);
        literal[len - 2] = '\0';
    } else {
        memcpy(literal, host, len + 1);
    }
    memset(addr, 0, sizeof(*addr));
    if (inet_pton(AF_INET, literal, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, literal, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    return OMNISYNC_EINVAL;
}

static int bound_port(struct MHD_Daemon *daemon)
{
    const union MHD_DaemonInfo *info;
    struct sockaddr_storage addr = {0};
    socklen_t len = sizeof(addr);

    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info != NULL && info->port != 0)
        return info->port;
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_LISTEN_FD);
    if (info == NULL || getsockname(info->listen_fd, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    if (addr.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&addr)->sin_port);
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return -1;
}

int health_init(struct health *h, uv_loop_t *loop, const char *host, int port,
                const struct health_source *src)
{
    struct sockaddr_storage addr;
    const union MHD_DaemonInfo *info;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    struct MHD_Daemon *daemon = NULL;
    int err;

    memset(h, 0, sizeof(*h));
    if (src == NULL || src->metrics == NULL)
        return OMNISYNC_EINVAL;
    err = parse_host(host, port, &addr);
    if (err != 0) {
        log_error("health: bad listen address: expected an IPv4 or IPv6 literal and a port in "
                  "0..65535; fix [health] listen port=%d",
                  port);
        return err;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES) {
        log_error("health: this libmicrohttpd has no epoll support, which the server needs to "
                  "run on the loop; install a libmicrohttpd built with epoll");
        return OMNISYNC_EIO;
    }
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->loop = loop;
    h->src = *src;

    /* The logger goes first: MHD prints messages about earlier options with its own logger. */
    h->starting = 1;
    daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        HEALTH_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, HEALTH_CONNECTION_TIMEOUT,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEALTH_CONNECTION_MEMORY, MHD_OPTION_END);
    h->starting = 0;
    if (daemon == NULL) {
        log_error("health: cannot listen; is the address in use or not local? change [health] "
                  "listen, or leave it empty to disable the endpoint host=%s port=%d error=%s",
                  host, port, h->start_error[0] ? h->start_error : "unknown");
        err = OMNISYNC_EIO;
        goto fail;
    }
    h->port = bound_port(daemon);
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (h->port <= 0 || info == NULL || info->epoll_fd < 0) {
        log_error("health: libmicrohttpd gave no port or epoll fd");
        err = OMNISYNC_EIO;
        goto fail;
    }
    /* uv_poll_init is the last step that can fail: once a handle is initialised it can only be
     * undone asynchronously, which "nothing to release on failure" would not allow. */
    err = uv_poll_init(loop, &h->poll, info->epoll_fd);
    if (err != 0) {
        log_error("health: cannot watch the server's epoll fd: %s", uv_strerror(err));
        err = OMNISYNC_EIO;
        goto fail;
    }
    uv_timer_init(loop, &h->timer);
    h->poll.data = h;
    h->timer.data = h;
    h->handles_open = 2;
    h->daemon = daemon;
    /* uv_poll_start only fails for a closing handle or a bad event mask, neither possible here. */
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    run_mhd(h);
    return 0;
fail:
    if (daemon != NULL)
        MHD_stop_daemon(daemon);
    memset(h, 0, sizeof(*h));
    return err;
}

int health_port(const struct health *h)
{
    return h->port;
}

static void on_handle_closed(uv_handle_t *handle)
{
    struct health *h = handle->data;

    if (--h->handles_open == 0 && h->close_cb != NULL)
        h->close_cb(h);
}

void health_close(struct health *h, void (*close_cb)(struct health *h))
{
    if (h->closing)
        return;
    h->closing = 1;
    h->close_cb = close_cb;
    /* The poll must let go of the epoll fd before MHD closes it: uv_close stops watching at once,
     * so the fd number is never watched after it could be reused. */
    uv_close((uv_handle_t *)&h->poll, on_handle_closed);
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
}
