/*
 * server: libmicrohttpd glue, the request life cycle and fault injection (see server.h).
 *
 * A request goes: arrival (counted in flight; its latency is drawn) -> body (parsed like PHP:
 * POST takes multipart or urlencoded, PUT and DELETE only urlencoded) -> optional delay
 * (suspended, the waker resumes it) -> decision under the store lock (auth, rate, fault, then the
 * endpoint itself, and the log entry, all in one critical section so the log order is the order
 * of changes) -> action (answer, truncated answer, trickled answer, hang, reset or silent close).
 */
#include "server.h"

#include "api.h"
#include "control.h"
#include "endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

enum request_kind {
    REQUEST_API,     /* under /api/: key, rate and faults apply */
    REQUEST_OTHER,   /* anything else outside /_fake/: 404, logged */
    REQUEST_CONTROL, /* under /_fake/ */
};

enum phase {
    PHASE_RECEIVING, /* headers and body arriving */
    PHASE_DELAYED,   /* body complete; maybe suspended for latency */
    PHASE_HUNG,      /* suspended until the client closes */
};

enum body_kind {
    BODY_IGNORED, /* not parsed, as PHP ignores it */
    BODY_FORM,    /* through libmicrohttpd's post processor */
    BODY_RAW,     /* kept as is (control API JSON) */
};

enum fault {
    FAULT_NONE,
    FAULT_HANG,
    FAULT_RESET,
    FAULT_LOST,
    FAULT_5XX,
    FAULT_HTML502,
    FAULT_429,
    FAULT_TRUNCATED,
    FAULT_SLOW_BODY,
};

static const char *const fault_names[] = {
    [FAULT_NONE] = NULL,
    [FAULT_HANG] = "hang",
    [FAULT_RESET] = "reset",
    [FAULT_LOST] = "lost",
    [FAULT_5XX] = "5xx",
    [FAULT_HTML502] = "html502",
    [FAULT_429] = "429",
    [FAULT_TRUNCATED] = "truncated",
    [FAULT_SLOW_BODY] = "slow_body",
};

enum action {
    ACTION_RESPOND,
    ACTION_TRUNCATED,
    ACTION_SLOW_BODY,
    ACTION_HANG,
    ACTION_RESET,
    ACTION_CLOSE,
};

struct request {
    struct server *server;
    enum request_kind kind;
    enum endpoint endpoint;
    long long path_id;
    char method[16];
    char *path;
    char *content_type; /* media type, no parameters; NULL when absent */
    enum body_kind body_kind;
    struct MHD_PostProcessor *post;
    struct form form;
    char *raw;
    size_t raw_len;
    size_t body_bytes;
    bool too_large;
    bool malformed;
    enum phase phase;
    long delay_ms;
    bool in_flight; /* still counted in stats.in_flight */
    bool gone;      /* set by the waker: the client closed, or we are stopping */
};

struct outcome {
    enum action action;
    int status;
    const char *content_type;
    char *body;
    size_t body_len;
    char retry_after[64];
    long slow_body_ms;
};

/* A slow body's trickle: released in SLOW_STEPS slices over `duration_ns`. */
#define SLOW_STEPS 10

struct slow_body {
    struct waker *waker;
    struct MHD_Connection *connection;
    char *body;
    size_t len;
    uint64_t start_ns;
    uint64_t duration_ns;
    bool gone;
};

static const char html_502[] =
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n";

static bool media_type_is(const char *content_type, const char *media_type)
{
    return content_type != NULL && strcasecmp(content_type, media_type) == 0;
}

/* "multipart/form-data; boundary=x" -> "multipart/form-data". */
static char *media_type(const char *header)
{
    size_t n;

    if (header == NULL)
        return NULL;
    while (*header == ' ' || *header == '\t')
        header++;
    n = strcspn(header, ";");
    while (n > 0 && (header[n - 1] == ' ' || header[n - 1] == '\t'))
        n--;
    if (n > 128)
        n = 128;
    return strndup(header, n);
}

static enum MHD_Result on_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    struct request *rq = cls;

    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    /* PHP puts file parts in $_FILES, not $_POST. */
    if (filename != NULL)
        return MHD_YES;
    if (form_put(&rq->form, key, data, size, off) != 0) {
        rq->malformed = true;
        return MHD_NO;
    }
    return MHD_YES;
}

static enum MHD_Result on_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct request *rq = cls;

    (void)kind;
    if (form_put(&rq->form, key, value ? value : "", value ? strlen(value) : 0, 0) != 0)
        rq->malformed = true;
    return MHD_YES;
}

static bool faults_apply(const struct request *rq, const struct settings *settings)
{
    return rq->kind == REQUEST_API && (settings->paths & (1u << rq->endpoint)) != 0;
}

static void request_free(struct request *rq)
{
    if (rq->post != NULL)
        MHD_destroy_post_processor(rq->post);
    form_free(&rq->form);
    free(rq->path);
    free(rq->content_type);
    free(rq->raw);
    free(rq);
}

static struct request *request_new(struct server *srv, struct MHD_Connection *connection,
                                   const char *url, const char *method)
{
    struct request *rq = calloc(1, sizeof(*rq));
    struct store *store = srv->store;

    if (rq == NULL)
        return NULL;
    rq->server = srv;
    form_init(&rq->form);
    snprintf(rq->method, sizeof(rq->method), "%s", method);
    rq->path = strndup(url, 2048);
    rq->content_type = media_type(
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE));
    if (rq->path == NULL)
        goto fail;
    if (strncmp(url, "/_fake/", 7) == 0) {
        rq->kind = REQUEST_CONTROL;
        rq->endpoint = ENDPOINT_UNKNOWN;
        rq->body_kind = BODY_RAW;
        return rq;
    }
    rq->kind = strncmp(url, "/api/", 5) == 0 ? REQUEST_API : REQUEST_OTHER;
    rq->endpoint = endpoint_route(method, url, &rq->path_id);
    if ((strcmp(method, "POST") == 0 &&
         (media_type_is(rq->content_type, MHD_HTTP_POST_ENCODING_FORM_URLENCODED) ||
          media_type_is(rq->content_type, MHD_HTTP_POST_ENCODING_MULTIPART_FORMDATA))) ||
        ((strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0) &&
         media_type_is(rq->content_type, MHD_HTTP_POST_ENCODING_FORM_URLENCODED))) {
        rq->body_kind = BODY_FORM;
        rq->post = MHD_create_post_processor(connection, 4096, on_form_field, rq);
        if (rq->post == NULL)
            rq->malformed = true; /* e.g. multipart without a boundary */
    } else if (strcmp(method, "GET") == 0) {
        MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, on_query_arg, rq);
    }
    pthread_mutex_lock(&store->lock);
    store->stats.in_flight++;
    if (store->stats.in_flight > store->stats.max_concurrency)
        store->stats.max_concurrency = store->stats.in_flight;
    if (faults_apply(rq, &store->settings)) {
        rq->delay_ms = store->settings.latency_ms;
        if (store->settings.jitter_ms > 0)
            rq->delay_ms += (long)(store_random(store) * (double)(store->settings.jitter_ms + 1));
    }
    pthread_mutex_unlock(&store->lock);
    rq->in_flight = true;
    return rq;
fail:
    request_free(rq);
    return NULL;
}

static void leave_flight_locked(struct request *rq)
{
    if (rq->in_flight) {
        rq->server->store->stats.in_flight--;
        rq->in_flight = false;
    }
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *srv = cls;
    struct request *rq = *con_cls;

    (void)connection;
    (void)toe;
    if (rq == NULL)
        return;
    if (rq->in_flight) {
        pthread_mutex_lock(&srv->store->lock);
        leave_flight_locked(rq);
        pthread_mutex_unlock(&srv->store->lock);
    }
    request_free(rq);
    *con_cls = NULL;
}

static void feed_body(struct request *rq, const char *data, size_t size)
{
    rq->body_bytes += size;
    if (rq->body_bytes > SERVER_BODY_MAX)
        rq->too_large = true;
    if (rq->too_large || rq->malformed)
        return; /* drain and forget */
    if (rq->body_kind == BODY_FORM) {
        if (MHD_post_process(rq->post, data, size) != MHD_YES)
            rq->malformed = true;
    } else if (rq->body_kind == BODY_RAW) {
        char *raw = realloc(rq->raw, rq->raw_len + size + 1);

        if (raw == NULL) {
            rq->malformed = true;
            return;
        }
        memcpy(raw + rq->raw_len, data, size);
        rq->raw_len += size;
        raw[rq->raw_len] = '\0';
        rq->raw = raw;
    }
}

static void finish_body(struct request *rq)
{
    if (rq->post != NULL) {
        /* Destroying flushes the last urlencoded value; MHD_NO means a broken body. */
        if (MHD_destroy_post_processor(rq->post) != MHD_YES && !rq->too_large)
            rq->malformed = true;
        rq->post = NULL;
    }
}

static enum MHD_Result queue_answer(struct MHD_Connection *connection, int status,
                                    const char *content_type, char *body, size_t len,
                                    const char *retry_after)
{
    struct MHD_Response *response;
    enum MHD_Result ret;

    response = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after != NULL && retry_after[0] != '\0')
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    ret = MHD_queue_response(connection, (unsigned)status, response);
    MHD_destroy_response(response);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *connection, int status,
                                   const char *message)
{
    size_t len = 0;
    char *body = api_error_body(message, &len);

    if (body == NULL)
        return MHD_NO;
    return queue_answer(connection, status, "application/json", body, len, NULL);
}

static enum MHD_Result answer_control(struct server *srv, struct MHD_Connection *connection,
                                      struct request *rq)
{
    struct control_answer answer;

    if (rq->too_large)
        return queue_error(connection, 413, "request body too large");
    control_handle(srv->store, connection, rq->method, rq->path, rq->raw, rq->raw_len, &answer);
    if (answer.body == NULL)
        return MHD_NO;
    return queue_answer(connection, answer.status, "application/json", answer.body, answer.body_len,
                        NULL);
}

static bool chance(struct store *store, double p)
{
    if (p <= 0.0)
        return false;
    if (p >= 1.0)
        return true;
    return store_random(store) < p;
}

/* Faults are drawn in this fixed order; the first that fires wins. */
static enum fault draw_fault(struct store *store)
{
    const struct settings *s = &store->settings;

    if (chance(store, s->p_hang))
        return FAULT_HANG;
    if (chance(store, s->p_reset))
        return FAULT_RESET;
    if (chance(store, s->p_lost))
        return FAULT_LOST;
    if (chance(store, s->p_5xx))
        return FAULT_5XX;
    if (chance(store, s->p_html502))
        return FAULT_HTML502;
    if (chance(store, s->p_429))
        return FAULT_429;
    if (chance(store, s->p_truncated))
        return FAULT_TRUNCATED;
    if (chance(store, s->p_slow_body))
        return FAULT_SLOW_BODY;
    return FAULT_NONE;
}

/* The Retry-After text for a setting: "N" as is, "http-date:N" as the date N seconds ahead. */
static void retry_after_text(const char *setting, char *out, size_t size)
{
    static const char prefix[] = "http-date:";

    if (strncmp(setting, prefix, sizeof(prefix) - 1) == 0) {
        time_t when = time(NULL) + (time_t)strtol(setting + sizeof(prefix) - 1, NULL, 10);
        struct tm tm;

        gmtime_r(&when, &tm);
        strftime(out, size, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    } else {
        snprintf(out, size, "%s", setting);
    }
}

static void set_error(struct outcome *out, int status, const char *message)
{
    out->action = ACTION_RESPOND;
    out->status = status;
    out->content_type = "application/json";
    out->body = api_error_body(message, &out->body_len);
}

/* Everything that reads or changes shared state, in one critical section. */
static void decide(struct server *srv, struct request *rq, const char *api_key, struct outcome *out)
{
    struct store *store = srv->store;
    const struct settings *s = &store->settings;
    struct log_entry entry;
    enum fault fault = FAULT_NONE;
    long wait;

    memset(out, 0, sizeof(*out));
    memset(&entry, 0, sizeof(entry));
    pthread_mutex_lock(&store->lock);
    snprintf(entry.method, sizeof(entry.method), "%s", rq->method);
    entry.path = strdup(rq->path);
    entry.endpoint = rq->endpoint;
    entry.content_type = rq->content_type ? strdup(rq->content_type) : NULL;
    entry.customer = api_concerned_customer(store, rq->endpoint, &rq->form, rq->path_id);

    if (rq->too_large) {
        set_error(out, 413, "request body too large");
    } else if (rq->kind == REQUEST_API && (api_key == NULL || strcmp(api_key, s->api_key) != 0)) {
        store->stats.auth_failures++;
        set_error(out, 401, "invalid or missing apiKey");
    } else if (rq->kind == REQUEST_API && (wait = store_take_token(store, clock_mono_ns())) > 0) {
        store->stats.rate_limited++;
        set_error(out, 429, "rate limit exceeded");
        snprintf(out->retry_after, sizeof(out->retry_after), "%ld", wait);
    } else {
        if (faults_apply(rq, s))
            fault = draw_fault(store);
        switch (fault) {
        case FAULT_HANG:
            out->action = ACTION_HANG;
            out->status = -1;
            break;
        case FAULT_RESET:
            out->action = ACTION_RESET;
            out->status = -1;
            break;
        case FAULT_5XX:
            set_error(out, 503, "service temporarily unavailable");
            if (s->retry_after_5xx)
                retry_after_text(s->retry_after, out->retry_after, sizeof(out->retry_after));
            break;
        case FAULT_429:
            set_error(out, 429, "too many requests");
            retry_after_text(s->retry_after, out->retry_after, sizeof(out->retry_after));
            break;
        case FAULT_HTML502:
            out->action = ACTION_RESPOND;
            out->status = 502;
            out->content_type = "text/html";
            out->body = strdup(html_502);
            out->body_len = sizeof(html_502) - 1;
            break;
        case FAULT_NONE:
        case FAULT_LOST:
        case FAULT_TRUNCATED:
        case FAULT_SLOW_BODY: {
            struct api_answer answer;

            if (rq->malformed) {
                store->stats.validation_errors++;
                set_error(out, 400, "malformed request body");
            } else if (api_handle(store, rq->endpoint, &rq->form, rq->path_id, &answer) != 0) {
                set_error(out, 500, "internal error");
            } else {
                out->action = ACTION_RESPOND;
                out->status = answer.status;
                out->content_type = "application/json";
                out->body = answer.body;
                out->body_len = answer.body_len;
            }
            if (fault == FAULT_LOST)
                out->action = ACTION_CLOSE;
            else if (fault == FAULT_TRUNCATED)
                out->action = ACTION_TRUNCATED;
            else if (fault == FAULT_SLOW_BODY) {
                out->action = ACTION_SLOW_BODY;
                out->slow_body_ms = s->slow_body_ms;
            }
            break;
        }
        }
        if (fault != FAULT_NONE)
            store->stats.faults++;
    }
    entry.status = out->status;
    entry.fault = fault_names[fault];
    entry.fields = rq->form; /* moved: the request needs its fields no more */
    form_init(&rq->form);
    store_log_append(store, &entry);
    /* A hang is in flight until the client gives up; everything else is answered now. */
    if (out->action != ACTION_HANG)
        leave_flight_locked(rq);
    pthread_mutex_unlock(&store->lock);
}

static ssize_t slow_body_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct slow_body *sb = cls;
    uint64_t elapsed;
    uint64_t step;
    size_t allowed;
    size_t n;

    if (sb->gone || pos >= sb->len)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    elapsed = clock_mono_ns() - sb->start_ns;
    step = sb->duration_ns ? elapsed * SLOW_STEPS / sb->duration_ns : SLOW_STEPS;
    if (step > SLOW_STEPS)
        step = SLOW_STEPS;
    allowed = sb->len * step / SLOW_STEPS;
    if (allowed <= pos) {
        /* Nothing more may go out yet: sleep until the slice that releases byte `pos`. */
        uint64_t next = step + 1;

        while (next < SLOW_STEPS && sb->len * next / SLOW_STEPS <= pos)
            next++;
        if (waker_suspend(sb->waker, sb->connection,
                          sb->start_ns + sb->duration_ns * next / SLOW_STEPS, -1, &sb->gone) != 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        return 0;
    }
    n = allowed - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(buf, sb->body + pos, n);
    return (ssize_t)n;
}

static void slow_body_free(void *cls)
{
    struct slow_body *sb = cls;

    free(sb->body);
    free(sb);
}

static enum MHD_Result queue_slow(struct server *srv, struct MHD_Connection *connection,
                                  struct outcome *out)
{
    struct slow_body *sb = calloc(1, sizeof(*sb));
    struct MHD_Response *response;
    enum MHD_Result ret;

    if (sb == NULL) {
        free(out->body);
        return MHD_NO;
    }
    sb->waker = &srv->waker;
    sb->connection = connection;
    sb->body = out->body;
    sb->len = out->body_len;
    sb->start_ns = clock_mono_ns();
    sb->duration_ns = (uint64_t)out->slow_body_ms * 1000000u;
    response = MHD_create_response_from_callback(sb->len, 1024, slow_body_read, sb, slow_body_free);
    if (response == NULL) {
        slow_body_free(sb);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, out->content_type);
    ret = MHD_queue_response(connection, (unsigned)out->status, response);
    MHD_destroy_response(response);
    return ret;
}

static int connection_fd(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

    return info ? info->connect_fd : -1;
}

static enum MHD_Result act(struct server *srv, struct MHD_Connection *connection,
                           struct request *rq, struct outcome *out)
{
    int fd;

    if (out->action != ACTION_HANG && out->action != ACTION_RESET && out->body == NULL)
        return MHD_NO; /* out of memory: close */
    switch (out->action) {
    case ACTION_RESPOND:
        return queue_answer(connection, out->status, out->content_type, out->body, out->body_len,
                            out->retry_after);
    case ACTION_TRUNCATED:
        /* Valid HTTP framing, half a JSON document: the client must not trust a 200 blindly. */
        return queue_answer(connection, out->status, out->content_type, out->body,
                            out->body_len > 1 ? out->body_len / 2 : 0, NULL);
    case ACTION_SLOW_BODY:
        return queue_slow(srv, connection, out);
    case ACTION_HANG:
        rq->phase = PHASE_HUNG;
        fd = connection_fd(connection);
        if (fd < 0 || waker_suspend(&srv->waker, connection, WAKER_NEVER, fd, &rq->gone) != 0)
            return MHD_NO;
        return MHD_YES;
    case ACTION_RESET:
        /* Linger 0 makes close() send RST; MHD_USE_TURBO keeps MHD from sending FIN first. */
        fd = connection_fd(connection);
        if (fd >= 0) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};

            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        return MHD_NO;
    case ACTION_CLOSE:
        /* "Applied but the answer was lost": an orderly close with nothing sent. */
        free(out->body);
        return MHD_NO;
    }
    free(out->body);
    return MHD_NO;
}

static enum MHD_Result answer_api(struct server *srv, struct MHD_Connection *connection,
                                  struct request *rq)
{
    struct outcome out;

    if (rq->phase == PHASE_HUNG)
        return MHD_NO; /* resumed only when the client left or we are stopping */
    if (rq->phase == PHASE_RECEIVING) {
        finish_body(rq);
        rq->phase = PHASE_DELAYED;
        if (rq->delay_ms > 0) {
            uint64_t due = clock_mono_ns() + (uint64_t)rq->delay_ms * 1000000u;

            if (waker_suspend(&srv->waker, connection, due, -1, &rq->gone) != 0)
                return MHD_NO;
            return MHD_YES;
        }
    }
    decide(srv, rq, MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "apiKey"), &out);
    return act(srv, connection, rq, &out);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct server *srv = cls;
    struct request *rq = *con_cls;

    (void)version;
    if (rq == NULL) {
        rq = request_new(srv, connection, url, method);
        if (rq == NULL)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        feed_body(rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->gone)
        return MHD_NO;
    if (rq->kind == REQUEST_CONTROL)
        return answer_control(srv, connection, rq);
    return answer_api(srv, connection, rq);
}

int server_start(struct server *srv, struct store *store, const char *host, int port,
                 unsigned threads)
{
    struct sockaddr_in addr;
    const union MHD_DaemonInfo *info;
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;

    memset(srv, 0, sizeof(*srv));
    srv->store = store;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "fake-omnidesk: %s is not an IPv4 address\n", host);
        return -1;
    }
    if (waker_init(&srv->waker) != 0) {
        fprintf(stderr, "fake-omnidesk: cannot start the waker thread\n");
        return -1;
    }
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_THREAD_POOL_SIZE,
        threads > 1 ? threads : 0u, MHD_OPTION_CONNECTION_LIMIT, 4096u,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 0u, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        fprintf(stderr, "fake-omnidesk: cannot listen on %s:%d\n", host, port);
        waker_stop(&srv->waker);
        waker_free(&srv->waker);
        return -1;
    }
    info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : port;
    return 0;
}

void server_stop(struct server *srv)
{
    waker_stop(&srv->waker);
    MHD_stop_daemon(srv->daemon);
    waker_free(&srv->waker);
    srv->daemon = NULL;
}
