/*
 * omnidesk: one libcurl multi handle driven by the daemon's libuv loop.
 *
 * This module owns the HTTP side of a delivery: it builds one request in the exact shape the API
 * document gives for its endpoint (multipart for POST, urlencoded for PUT and the legacy DELETE),
 * runs it on the shared multi handle (keep-alive connections are reused across requests), reads
 * at most `max_body` bytes of the answer and turns the outcome into one classified response.
 * It never decides about retries and never touches the database.
 *
 * The loop integration is curl's multi-uv pattern: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION, one uv_poll per socket) and when to wake it up
 * (CURLMOPT_TIMERFUNCTION, one uv_timer); we hand every event back with curl_multi_socket_action
 * and collect finished transfers with curl_multi_info_read. Nothing here blocks. A connection's
 * uv_poll lives as long as the connection (open_connection to close_connection), not from one
 * CURL_POLL_REMOVE to the next: a poll made and closed per request cost five epoll_ctl calls and
 * an ioctl each time.
 *
 * Lifetimes follow libuv: a poll context is freed only in its close callback; callers' callbacks
 * run outside every curl callback, and close/abort work that would tear down the multi handle is
 * deferred to the `reaper` timer so it never runs inside a callback chain still using it.
 *
 * Its three jobs live in three files: this one is the loop glue and the life cycle; the request's
 * shape (path, headers, body) is built in omnidesk_request.c; what an answer means is decided in
 * omnidesk_answer.c, pure, testable without a socket.
 *
 * Secrets: the API key lives in one header list per key (omnidesk_request_headers_new), shared
 * by reference by the requests started with it and wiped when the last one lets go. Nothing written
 * to the log carries the key or a field value.
 */
#include "omnidesk.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "log.h"
#include "omnidesk_answer.h"
#include "omnidesk_request.h"

#ifndef OMNISYNC_VERSION
#define OMNISYNC_VERSION "unknown"
#endif

/* A Retry-After value longer than this is not a number of seconds nor an HTTP-date. */
#define RETRY_AFTER_MAX 64
#define API_KEY_MAX 4096

struct omnidesk_socket {
    uv_poll_t poll;
    curl_socket_t fd;
    int events;     /* UV_READABLE/UV_WRITABLE the poll watches (curl asked for them last) */
    int connection; /* a connection socket: curl closes it through close_connection */
    int wanted;     /* curl watches it now (between its IN/OUT and its REMOVE) */
    struct omnidesk *client;
    struct queue node; /* in client->sockets until uv_close is called */
};

struct omnidesk_request {
    struct omnidesk *client;
    struct queue node; /* in client->requests while in flight */
    CURL *easy;
    struct omnidesk_headers *headers; /* the client's lines when it started (a reference) */
    struct curl_slist content_type;   /* this body's Content-Type, in front of headers->list */
    char content_type_line[96];
    char *post; /* the body (urlencoded or multipart), owned */
    size_t post_len;
    int send_once; /* never sent a second time (see on_prereq) */
    int sends;     /* times curl was about to send it */
    int resend_refused;
    enum omnidesk_endpoint endpoint;
    long timeout_ms; /* settings this request started with (reload-safe) */
    long connect_timeout_ms;
    size_t max_body;
    char *body; /* answer, NUL-terminated, at most max_body bytes */
    size_t body_len;
    size_t body_cap;
    int body_overflow;
    int body_nomem;
    char retry_after[RETRY_AFTER_MAX];
    uint64_t started_ms;
    omnidesk_cb cb;
    void *data;
    char errbuf[CURL_ERROR_SIZE];
};

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- options ------------------------------------------------------------------------------ */

static int check_key(const char *key)
{
    size_t len;

    if (key == NULL)
        return OMNISYNC_EINVAL;
    len = strlen(key);
    if (len == 0 || len > API_KEY_MAX)
        return OMNISYNC_EINVAL;
    /* A CR or LF would let the key inject header lines. */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch < 0x20 || ch == 0x7f)
            return OMNISYNC_EINVAL;
    }
    return 0;
}

static int check_options(const struct omnidesk_options *opts, int need_base_url)
{
    if (opts == NULL)
        return OMNISYNC_EINVAL;
    if (need_base_url) {
        const char *u = opts->base_url;
        if (u == NULL || (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0))
            return OMNISYNC_EINVAL;
        for (const char *p = u; *p != '\0'; p++)
            if ((unsigned char)*p <= 0x20 || *p == 0x7f)
                return OMNISYNC_EINVAL;
    }
    if (check_key(opts->api_key) != 0)
        return OMNISYNC_EINVAL;
    if (opts->timeout_ms <= 0 || opts->connect_timeout_ms < 0 || opts->max_in_flight == 0)
        return OMNISYNC_EINVAL;
    return 0;
}

static long effective_connect_timeout(const struct omnidesk_options *opts)
{
    if (opts->connect_timeout_ms > 0)
        return opts->connect_timeout_ms;
    return opts->timeout_ms < 5000 ? opts->timeout_ms : 5000;
}

static int apply_limits(CURLM *multi, unsigned max_in_flight)
{
    /* One connection per request in flight, all of them kept alive for reuse. */
    long n = (long)max_in_flight;

    if (curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, n) != CURLM_OK ||
        curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n) != CURLM_OK ||
        curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, n) != CURLM_OK)
        return OMNISYNC_EHTTP;
    return 0;
}

/* ---- loop glue (curl's multi-uv pattern) --------------------------------------------------- */

static void check_multi_info(struct omnidesk *c);
static void on_reap(uv_timer_t *timer);

static void maybe_done(struct omnidesk *c)
{
    void (*cb)(struct omnidesk *) = c->close_cb;

    if (!c->torn_down || c->handles_open != 0)
        return;
    c->close_cb = NULL;
    /* Last touch of `c`: the callback may free it. */
    if (cb != NULL)
        cb(c);
}

static void on_handle_closed(uv_handle_t *handle)
{
    struct omnidesk *c = handle->data;

    c->handles_open--;
    maybe_done(c);
}

static void on_socket_closed(uv_handle_t *handle)
{
    struct omnidesk_socket *s = handle->data;
    struct omnidesk *c = s->client;

    free(s);
    c->handles_open--;
    maybe_done(c);
}

static void socket_close(struct omnidesk_socket *s)
{
    queue_remove(&s->node);
    /* uv_close stops the poll and drops the fd from epoll now, before curl closes the fd. */
    uv_close((uv_handle_t *)&s->poll, on_socket_closed);
}

static struct omnidesk_socket *socket_find(struct omnidesk *c, curl_socket_t fd)
{
    struct queue *q;

    queue_foreach(q, &c->sockets) {
        struct omnidesk_socket *s = queue_data(q, struct omnidesk_socket, node);
        if (s->fd == fd)
            return s;
    }
    return NULL;
}

static struct omnidesk_socket *socket_open(struct omnidesk *c, curl_socket_t fd, int connection)
{
    struct omnidesk_socket *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL)
        return NULL;
    rc = uv_poll_init_socket(c->loop, &s->poll, fd);
    if (rc != 0) {
        log_warn("omnidesk cannot watch a socket: %s", uv_strerror(rc));
        free(s);
        return NULL;
    }
    s->fd = fd;
    s->connection = connection;
    s->client = c;
    s->poll.data = s;
    queue_insert_head(&c->sockets, &s->node);
    c->handles_open++;
    return s;
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct omnidesk_socket *s = poll->data;
    struct omnidesk *c = s->client;
    int flags = 0;
    int running;

    /* An idle keep-alive connection still watched (see on_curl_socket) that became readable:
     * the server closed it or sent something unasked. curl is not watching it and will find
     * out itself when it next picks the connection; stop, so a level-triggered EOF cannot spin. */
    if (!s->wanted) {
        uv_poll_stop(poll);
        s->events = 0;
        return;
    }

    /*
     * On POLLERR (a reset, for one) libuv reports UV_EBADF and stops the handle. Passing
     * CURL_CSELECT_ERR would make curl fail with a bare "select/poll returned error"; letting it
     * read and write instead surfaces the real cause ("connection reset").
     */
    if (status < 0)
        flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    /* `s` may be closing now (CURL_POLL_REMOVE), but its memory lives until its close callback.
     * If curl still wants the socket, watch it again: curl will not ask twice. */
    if (status < 0 && !uv_is_closing((uv_handle_t *)poll) && !uv_is_active((uv_handle_t *)poll))
        uv_poll_start(poll, s->events, on_poll);
    check_multi_info(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
    struct omnidesk *c = userp;
    struct omnidesk_socket *s = socketp;
    int events = 0;
    int rc;

    (void)easy;
    /* During teardown every context is already closing: nothing to watch any more. */
    if (c->torn_down)
        return 0;
    if (action == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(c->multi, fd, NULL);
            s->wanted = 0;
            /*
             * A connection curl keeps alive for the next request stays watched for reading, as
             * it is: curl asks for the same again when it reuses the connection, and stopping
             * and starting the poll cost libuv five epoll_ctl calls and an ioctl per request.
             * Its poll is closed with the connection (close_connection); one watched for
             * writing is stopped (a writable socket would wake the loop at once). Any other
             * socket (a resolver's) is closed now: curl closes it without telling us.
             */
            if (!s->connection) {
                socket_close(s);
            } else if (s->events != UV_READABLE) {
                uv_poll_stop(&s->poll);
                s->events = 0;
            }
        }
        return 0;
    }
    if (s == NULL) {
        /* A connection's context outlives curl's REMOVE: find it by its descriptor. */
        s = socket_find(c, fd);
        if (s == NULL && (s = socket_open(c, fd, 0)) == NULL)
            return -1;
        curl_multi_assign(c->multi, fd, s);
    }
    s->wanted = 1;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    if (events == s->events && uv_is_active((uv_handle_t *)&s->poll))
        return 0;
    s->events = events;
    rc = uv_poll_start(&s->poll, events, on_poll);
    if (rc != 0) {
        log_warn("omnidesk cannot watch a socket: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void on_timeout(uv_timer_t *timer)
{
    struct omnidesk *c = timer->data;
    int running;

    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct omnidesk *c = userp;

    (void)multi;
    if (c->torn_down)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        /* 0 means "as soon as possible": the next loop iteration, never from inside curl. */
        uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- closing connections ------------------------------------------------------------------ */

/*
 * Every connection libcurl opens for us is closed here (CURLOPT_CLOSESOCKETFUNCTION).
 *
 * A request that times out (timeout_ms) or is aborted (a drain cut short at shutdown) is given
 * up together with its connection: libcurl closes the socket inside curl_multi_socket_action
 * (multi_done with `premature` set), before CURLMSG_DONE reports the failure, so nothing after the
 * fact can change how it closes. A plain close() does not take back what the kernel has not
 * delivered yet: the socket lives on as an orphan and the kernel keeps retransmitting the
 * unacknowledged request (0.2, 0.6, 1.4, 3.0, 6.2 ... s after it was first sent). When a network
 * block was dropping the packets, that copy reaches the API once the path is back, after the daemon
 * has retried with the customer's newer state: an older update overwrites the newer one, a create
 * or a channel add arrives twice, a create brings back a customer purged meanwhile, and every
 * row is `done` (bench/README.md, soak Finding 1; tests/integration/test_late_request.c).
 *
 * So when the kernel still holds bytes the API has not acknowledged (SIOCOUTQ > 0: unsent or
 * unacknowledged), SO_LINGER {1, 0} makes close() discard them and send RST instead of FIN;
 * the given-up request is gone for good. If we cannot tell, we reset too. A connection with
 * nothing outstanding (an idle keep-alive connection, one whose answer came in full) closes
 * with the usual FIN, so the API sees no resets in normal operation (over TLS, a close_notify
 * written just before the close may make it a reset, which costs nothing). The question is asked
 * here, at the close, rather than by resetting every socket from CURLOPT_SOCKOPTFUNCTION or by
 * remembering which transfer failed: the callback's pointer belongs to the transfer that opened
 * the connection, not the one that gave it up, and the kernel knows exactly what is left.
 *
 * What no client can prevent: a request the API's side has already acknowledged (in the
 * server's socket buffer, or taken by a proxy or load balancer in front of it) is processed
 * whenever the server gets to it, and segments already on the wire are not recalled. Only a
 * version check at the API could order those.
 */
/* A new connection socket (CURLOPT_SOCKOPTFUNCTION): its poll context lives until curl closes
 * it (close_connection), across the requests that reuse it. Without one (out of memory),
 * on_curl_socket makes a context that is closed at curl's REMOVE, as for any other socket. */
static int open_connection(void *clientp, curl_socket_t fd, curlsocktype purpose)
{
    struct omnidesk *c = clientp;

    if (purpose == CURLSOCKTYPE_IPCXN && c != NULL && !c->torn_down && socket_find(c, fd) == NULL)
        (void)socket_open(c, fd, 1);
    return CURL_SOCKOPT_OK;
}

static int close_connection(void *clientp, curl_socket_t fd)
{
    struct omnidesk *c = clientp;
    struct tcp_info info;
    socklen_t info_len = sizeof(info);
    int unacked = 0;

    /* Stop watching before the descriptor is closed (and its number perhaps reused). During
     * teardown every context is closed already. */
    if (c != NULL && !c->torn_down) {
        struct omnidesk_socket *s = socket_find(c, fd);
        if (s != NULL)
            socket_close(s);
    }
    /* A connection the peer (or a firewall's REJECT) has reset already holds nothing the
     * kernel would still send, whatever its stale send counters say. */
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &info_len) == 0 &&
        info.tcpi_state == TCP_CLOSE)
        return close(fd);
    if (ioctl(fd, SIOCOUTQ, &unacked) != 0 || unacked > 0) {
        struct linger reset = {.l_onoff = 1, .l_linger = 0};

        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) != 0)
            log_warn("omnidesk cannot reset a connection that holds a request given up; the "
                     "kernel may still deliver it later error=\"%s\"",
                     strerror(errno));
        else
            log_debug("omnidesk connection reset unacked_bytes=%d", unacked);
    }
    return close(fd);
}

/* ---- answers ------------------------------------------------------------------------------ */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct omnidesk_request *req = userdata;
    size_t n = size * nmemb;

    if (n > req->max_body - req->body_len) {
        /* Returning short makes curl stop reading: CURLE_WRITE_ERROR. */
        req->body_overflow = 1;
        return 0;
    }
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap * 2 : 1024;
        char *grown;

        while (cap < req->body_len + n + 1)
            cap *= 2;
        if (cap > req->max_body + 1)
            cap = req->max_body + 1;
        grown = realloc(req->body, cap);
        if (grown == NULL) {
            req->body_nomem = 1;
            return 0;
        }
        req->body = grown;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, ptr, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return n;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    struct omnidesk_request *req = userdata;
    size_t len = size * nitems;
    static const char name[] = "retry-after:";
    size_t name_len = sizeof(name) - 1;

    /* A new status line (after a 100 Continue) starts a new set of headers. */
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
        req->retry_after[0] = '\0';
    if (len > name_len && strncasecmp(line, name, name_len) == 0) {
        const char *v = line + name_len;
        size_t vlen = len - name_len;

        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ' ||
                            v[vlen - 1] == '\t'))
            vlen--;
        if (vlen < sizeof(req->retry_after)) {
            memcpy(req->retry_after, v, vlen);
            req->retry_after[vlen] = '\0';
        } else {
            req->retry_after[0] = '\0';
        }
    }
    return len;
}

/* The answer's meaning (omnidesk_answer.c) from what this request gathered. Kept under this name
 * for tests/fuzz/fuzz_answer.c, which compiles this file in. */
static void classify_status(struct omnidesk_request *req, struct omnidesk_response *r)
{
    omnidesk_answer_classify(req->endpoint, req->body, req->body_len, r);
}

/* Gathers what curl knows of a failed transfer; omnidesk_answer_transport words it. */
static void transport_error(struct omnidesk_request *req, CURLcode rc, struct omnidesk_response *r)
{
    long os_errno = 0;
    long connect_us = 0;
    long header_bytes = 0;
    curl_off_t connect_time = 0, pretransfer_time = 0, downloaded = 0;
    long long elapsed_ms = (long long)(r->seconds * 1000.0);
    int connected, received;

    curl_easy_getinfo(req->easy, CURLINFO_OS_ERRNO, &os_errno);
    if (curl_easy_getinfo(req->easy, CURLINFO_CONNECT_TIME_T, &connect_time) == CURLE_OK)
        connect_us = (long)connect_time;
    /* A kept-alive connection that is reused has no connect time at all: the request got as far
     * as sending once pretransfer is set, whether the connection is new or reused. A slow body
     * on a reused connection was reported as a connect timeout (issue 17 item 9). */
    if (curl_easy_getinfo(req->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_time) != CURLE_OK)
        pretransfer_time = 0;
    if (curl_easy_getinfo(req->easy, CURLINFO_HEADER_SIZE, &header_bytes) != CURLE_OK)
        header_bytes = 0;
    if (curl_easy_getinfo(req->easy, CURLINFO_SIZE_DOWNLOAD_T, &downloaded) != CURLE_OK)
        downloaded = 0;
    connected = connect_us > 0 || pretransfer_time > 0;
    received = header_bytes > 0 || downloaded > 0;
    struct omnidesk_transport_facts f = {
        .curl_code = (int)rc,
        .os_errno = os_errno,
        .connected = connected,
        .received = received,
        .downloaded = (long long)downloaded,
        .elapsed_ms = elapsed_ms,
        .timeout_ms = req->timeout_ms,
        .body_overflow = req->body_overflow,
        .body_nomem = req->body_nomem,
        .max_body = req->max_body,
        .errbuf = req->errbuf,
    };
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &f.status);
    omnidesk_answer_transport(&f, r);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void request_unlink(struct omnidesk_request *req)
{
    struct omnidesk *c = req->client;

    queue_remove(&req->node);
    c->in_flight--;
}

/*
 * The easy handle goes back to the client's spares, reset (curl_easy_reset drops every option,
 * so nothing of this request, least of all its pointers into the headers and the body, reaches
 * the next one): a handle made and destroyed per request cost an allocation of libcurl's
 * whole transfer state and its teardown each time. Spares are kept up to max_in_flight.
 */
static void easy_release(struct omnidesk *c, CURL *easy)
{
    if (easy == NULL)
        return;
    if (c->torn_down || c->nspare >= OMNIDESK_SPARE_MAX || c->nspare >= c->max_in_flight) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    c->spare[c->nspare++] = easy;
}

static CURL *easy_take(struct omnidesk *c)
{
    if (c->nspare > 0)
        return c->spare[--c->nspare];
    return curl_easy_init();
}

static void request_free(struct omnidesk_request *req)
{
    if (req == NULL)
        return;
    /* The easy handle goes first: it points into the headers and the body. */
    easy_release(req->client, req->easy);
    omnidesk_request_headers_unref(req->headers);
    free(req->post);
    free(req->body);
    free(req);
}

/*
 * Retry-After is delay-seconds or an HTTP-date (RFC 9110 §10.2.3), parsed by the one tested parser
 * in backoff.c. Whatever the server asks ("1000000000000", a date years ahead) is capped at
 * max_retry_after_ms: one answer must not stall delivery for longer than the operator accepts
 * (issue 17 item 5). Garbage is no Retry-After at all.
 */
static void parse_retry_after(const struct omnidesk *c, const char *value,
                              struct omnidesk_response *r)
{
    uint64_t asked = 0;

    if (backoff_parse_retry_after(value, time(NULL), UINT64_MAX, &asked) != 0)
        return;
    if (asked > c->max_retry_after_ms) {
        r->retry_after_capped = 1;
        asked = c->max_retry_after_ms;
    }
    r->retry_after_ms = asked > (uint64_t)LLONG_MAX ? LLONG_MAX : (long long)asked;
}

/* Reports the outcome of a request already removed from the multi handle, then frees it. */
static void request_finish(struct omnidesk_request *req, CURLcode rc, int canceled)
{
    struct omnidesk *c = req->client;
    struct omnidesk_response r;
    curl_off_t total_us = 0;

    memset(&r, 0, sizeof(r));
    r.endpoint = req->endpoint;
    r.data = req->data;
    r.retry_after_ms = -1;
    if (canceled) {
        r.class = OMNIDESK_TRANSIENT;
        r.transport_error = CURLE_ABORTED_BY_CALLBACK;
        r.seconds = (double)(monotonic_ms() - req->started_ms) / 1000.0;
        snprintf(r.error, sizeof(r.error), "canceled");
    } else {
        if (curl_easy_getinfo(req->easy, CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK)
            r.seconds = (double)total_us / 1e6;
        else
            r.seconds = (double)(monotonic_ms() - req->started_ms) / 1000.0;
        /* on_prereq refused a resend: the code libcurl gives a body it cannot send again. */
        if (req->resend_refused && rc == CURLE_ABORTED_BY_CALLBACK)
            rc = CURLE_SEND_FAIL_REWIND;
        if (rc != CURLE_OK) {
            transport_error(req, rc, &r);
        } else {
            curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &r.http_status);
            if (req->retry_after[0] != '\0')
                parse_retry_after(c, req->retry_after, &r);
            classify_status(req, &r);
        }
    }
    request_unlink(req);
    log_debug("omnidesk request done endpoint=%s status=%ld class=%s duration_ms=%.0f",
              omnidesk_endpoint_name(r.endpoint), r.http_status, omnidesk_class_name(r.class),
              r.seconds * 1000.0);
    req->cb(c, &r);
    json_object_put(r.customer);
    request_free(req);
    /* A drain waits for the last request; tear down outside this callback chain. */
    if (c->closing && c->in_flight == 0 && !c->torn_down)
        uv_timer_start(&c->reaper, on_reap, 0, 0);
}

static void check_multi_info(struct omnidesk *c)
{
    CURLMsg *msg;
    int pending;

    while (c->multi != NULL && (msg = curl_multi_info_read(c->multi, &pending)) != NULL) {
        char *priv = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;

        if (msg->msg != CURLMSG_DONE)
            continue;
        /* `msg` is invalid once the handle is removed: everything was copied above. */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        curl_multi_remove_handle(c->multi, easy);
        if (priv != NULL)
            request_finish((struct omnidesk_request *)priv, rc, 0);
    }
}

/*
 * A create or a channel add goes out at most once per request: libcurl silently sends a request
 * again on a new connection when a reused keep-alive connection died before any byte of the
 * answer came back (Curl_retry_request), and for a create or a channel add that the API may
 * already have applied, the second copy is a duplicate at Omnidesk. libcurl calls this before
 * each time it sends the request, on the connection it will use; the second call is that resend,
 * and refusing it fails the transfer before a byte goes out, reported as CURLE_SEND_FAIL_REWIND
 * (request_finish): the engine sees a lost answer and decides (it looks the customer up first).
 * A request that never left goes out normally. This keeps keep-alive for every endpoint: a fresh
 * TCP connection per create cost the daemon and the API a connect, an accept and a close each.
 */
static int on_prereq(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    struct omnidesk_request *req = arg;

    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (req->send_once && req->sends++ > 0) {
        req->resend_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* The body and headers in the shape of each endpoint: lib/omnidesk_request.c. These two keep
 * their names for tests/fuzz/fuzz_body.c, which compiles this file in. */
static char *build_form(const struct omnidesk_field *fields, size_t nfields, CURL *easy)
{
    return omnidesk_request_form(fields, nfields, easy);
}

/*
 * The multipart body as one buffer, sent with CURLOPT_POSTFIELDS: libcurl then writes the
 * headers and the body with one send, where its mime API made two, and drew a random boundary
 * (a RAND_bytes call) and formatted every part's headers with its printf, per request. The
 * Content-Type line names the boundary (request_headers). With `once`, the request is never
 * sent twice (on_prereq).
 */
static int build_mime(struct omnidesk_request *req, const struct omnidesk_field *fields,
                      size_t nfields, int once)
{
    static const char prefix[] = "Content-Type: multipart/form-data; boundary=";
    char boundary[OMNIDESK_BOUNDARY_LEN + 1];
    int rc;

    _Static_assert(sizeof(prefix) + OMNIDESK_BOUNDARY_LEN <= sizeof(req->content_type_line),
                   "room for the multipart Content-Type line");
    rc = omnidesk_request_multipart(fields, nfields, &req->client->boundary_seq, &req->post,
                                    &req->post_len, boundary);
    if (rc != 0)
        return rc;
    memcpy(req->content_type_line, prefix, sizeof(prefix) - 1);
    memcpy(req->content_type_line + sizeof(prefix) - 1, boundary, OMNIDESK_BOUNDARY_LEN + 1);
    req->send_once = once;
    if (curl_easy_setopt(req->easy, CURLOPT_PREREQFUNCTION, on_prereq) != CURLE_OK ||
        curl_easy_setopt(req->easy, CURLOPT_PREREQDATA, req) != CURLE_OK ||
        curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->post) != CURLE_OK ||
        curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->post_len) !=
            CURLE_OK)
        return OMNISYNC_EHTTP;
    return 0;
}

/* The request's header lines: its Content-Type, if its body has one, then the client's. */
static struct curl_slist *request_headers(struct omnidesk_request *req)
{
    struct curl_slist *shared = req->headers != NULL ? req->headers->list : NULL;

    if (req->content_type_line[0] == '\0')
        return shared;
    req->content_type.data = req->content_type_line;
    req->content_type.next = shared;
    return &req->content_type;
}

#define SETOPT(easy, opt, val)                                                                     \
    do {                                                                                           \
        if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) {                                  \
            rc = OMNISYNC_EHTTP;                                                                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

int omnidesk_send(struct omnidesk *c, enum omnidesk_endpoint endpoint, long long customer_id,
                  const struct omnidesk_field *fields, size_t nfields, omnidesk_cb cb, void *data)
{
    struct omnidesk_request *req = NULL;
    const char *path = omnidesk_request_path(endpoint);
    char url[2048];
    int urlencoded = endpoint == OMNIDESK_UPDATE || endpoint == OMNIDESK_PURGE_LEGACY;
    int multipart = endpoint == OMNIDESK_CREATE || endpoint == OMNIDESK_ADD_CHANNEL ||
                    endpoint == OMNIDESK_SEARCH;
    long low_speed_s;
    int n;
    int rc;

    if (c == NULL || cb == NULL || path == NULL)
        return OMNISYNC_EINVAL;
    if (c->closing)
        return OMNISYNC_ECANCELED;
    if (endpoint == OMNIDESK_PURGE && customer_id <= 0)
        return OMNISYNC_EINVAL;
    if (nfields > OMNIDESK_MAX_FIELDS || (nfields > 0 && fields == NULL))
        return OMNISYNC_EINVAL;
    if (urlencoded || multipart)
        for (size_t i = 0; i < nfields; i++)
            if (fields[i].name == NULL || fields[i].name[0] == '\0')
                return OMNISYNC_EINVAL;
    if (c->in_flight >= c->max_in_flight)
        return OMNISYNC_EBUSY;

    if (endpoint == OMNIDESK_PURGE)
        n = snprintf(url, sizeof(url), "%s%s%lld", c->base_url, path, customer_id);
    else
        n = snprintf(url, sizeof(url), "%s%s", c->base_url, path);
    if (n < 0 || (size_t)n >= sizeof(url))
        return OMNISYNC_EINVAL;

    req = calloc(1, sizeof(*req));
    if (req == NULL)
        return OMNISYNC_ENOMEM;
    req->client = c;
    req->endpoint = endpoint;
    req->timeout_ms = c->timeout_ms;
    req->connect_timeout_ms = c->connect_timeout_ms;
    req->max_body = c->max_body;
    req->cb = cb;
    req->data = data;
    req->easy = easy_take(c);
    if (req->easy == NULL) {
        rc = OMNISYNC_ENOMEM;
        goto fail;
    }
    req->headers = omnidesk_request_headers_ref(c->headers);
    if (urlencoded)
        snprintf(req->content_type_line, sizeof(req->content_type_line), "%s",
                 "Content-Type: application/x-www-form-urlencoded");

    SETOPT(req->easy, CURLOPT_URL, url);
    SETOPT(req->easy, CURLOPT_PRIVATE, (char *)req);
    SETOPT(req->easy, CURLOPT_USERAGENT, "omnisync/" OMNISYNC_VERSION);
    SETOPT(req->easy, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(req->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SETOPT(req->easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SETOPT(req->easy, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(req->easy, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(req->easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    SETOPT(req->easy, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
    /* A server that stops sending is given up on well before a TCP timeout would notice. */
    low_speed_s = req->timeout_ms / 1000 > 1 ? req->timeout_ms / 1000 : 1;
    SETOPT(req->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(req->easy, CURLOPT_LOW_SPEED_TIME, low_speed_s);
    SETOPT(req->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(req->easy, CURLOPT_SOCKOPTFUNCTION, open_connection);
    SETOPT(req->easy, CURLOPT_SOCKOPTDATA, c);
    SETOPT(req->easy, CURLOPT_CLOSESOCKETFUNCTION, close_connection);
    SETOPT(req->easy, CURLOPT_CLOSESOCKETDATA, c);
    SETOPT(req->easy, CURLOPT_ERRORBUFFER, req->errbuf);
    SETOPT(req->easy, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(req->easy, CURLOPT_WRITEDATA, req);
    SETOPT(req->easy, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(req->easy, CURLOPT_HEADERDATA, req);

    switch (endpoint) {
    case OMNIDESK_CREATE:
    case OMNIDESK_ADD_CHANNEL:
    case OMNIDESK_SEARCH:
        if ((rc = build_mime(req, fields, nfields,
                             endpoint == OMNIDESK_CREATE || endpoint == OMNIDESK_ADD_CHANNEL)) != 0)
            goto fail;
        break;
    case OMNIDESK_UPDATE:
    case OMNIDESK_PURGE_LEGACY:
        req->post = build_form(fields, nfields, req->easy);
        if (req->post == NULL) {
            rc = OMNISYNC_ENOMEM;
            goto fail;
        }
        req->post_len = strlen(req->post);
        SETOPT(req->easy, CURLOPT_POSTFIELDS, req->post);
        SETOPT(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->post_len);
        SETOPT(req->easy, CURLOPT_CUSTOMREQUEST, endpoint == OMNIDESK_UPDATE ? "PUT" : "DELETE");
        break;
    case OMNIDESK_PURGE:
        SETOPT(req->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
        break;
    case OMNIDESK_PROBE:
        SETOPT(req->easy, CURLOPT_HTTPGET, 1L);
        break;
    }
    /* After the body: a multipart body adds its Content-Type line. */
    SETOPT(req->easy, CURLOPT_HTTPHEADER, request_headers(req));

    req->started_ms = monotonic_ms();
    /* Adding only arms the timer (CURLMOPT_TIMERFUNCTION): the transfer, and so the callback,
     * starts from the loop, after this function has returned. */
    if (curl_multi_add_handle(c->multi, req->easy) != CURLM_OK) {
        rc = OMNISYNC_EHTTP;
        goto fail;
    }
    queue_insert_head(&c->requests, &req->node);
    c->in_flight++;
    return 0;

fail:
    request_free(req);
    return rc;
}

/* ---- life cycle --------------------------------------------------------------------------- */

static int copy_base_url(const char *in, char **out)
{
    size_t len = strlen(in);
    char *url;

    while (len > 0 && in[len - 1] == '/')
        len--;
    url = malloc(len + 1);
    if (url == NULL)
        return OMNISYNC_ENOMEM;
    memcpy(url, in, len);
    url[len] = '\0';
    *out = url;
    return 0;
}

int omnidesk_init(struct omnidesk *c, uv_loop_t *loop, const struct omnidesk_options *opts)
{
    char *base_url = NULL;
    struct omnidesk_headers *headers = NULL;
    CURLM *multi = NULL;
    int rc;

    if (c == NULL || loop == NULL)
        return OMNISYNC_EINVAL;
    if ((rc = check_options(opts, 1)) != 0)
        return rc;
    if ((rc = copy_base_url(opts->base_url, &base_url)) != 0)
        goto fail;
    headers = omnidesk_request_headers_new(opts->api_key, strlen(opts->api_key));
    if (headers == NULL) {
        rc = OMNISYNC_ENOMEM;
        goto fail;
    }
    multi = curl_multi_init();
    if (multi == NULL) {
        rc = OMNISYNC_EHTTP;
        goto fail;
    }
    rc = OMNISYNC_EHTTP;
    if (curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
        curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(multi, CURLMOPT_TIMERDATA, c) != CURLM_OK)
        goto fail;
    if ((rc = apply_limits(multi, opts->max_in_flight)) != 0)
        goto fail;

    memset(c, 0, sizeof(*c));
    queue_init(&c->requests);
    queue_init(&c->sockets);
    c->loop = loop;
    c->multi = multi;
    c->base_url = base_url;
    c->headers = headers;
    c->timeout_ms = opts->timeout_ms;
    c->max_retry_after_ms = opts->max_retry_after_ms > 0 ? opts->max_retry_after_ms
                                                         : OMNIDESK_DEFAULT_MAX_RETRY_AFTER_MS;
    c->connect_timeout_ms = effective_connect_timeout(opts);
    c->max_in_flight = opts->max_in_flight;
    c->max_body = opts->max_body ? opts->max_body : OMNIDESK_DEFAULT_MAX_BODY;
    /* Last, because they cannot fail: a failed init must leave no handle on the loop. */
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->reaper);
    c->timer.data = c;
    c->reaper.data = c;
    c->handles_open = 2;
    return 0;

fail:
    if (multi != NULL)
        curl_multi_cleanup(multi);
    omnidesk_request_headers_unref(headers);
    free(base_url);
    return rc;
}

int omnidesk_reconfigure(struct omnidesk *c, const struct omnidesk_options *opts)
{
    struct omnidesk_headers *headers;
    int rc;

    if (c == NULL || c->closing)
        return OMNISYNC_EINVAL;
    if ((rc = check_options(opts, 0)) != 0)
        return rc;
    headers = omnidesk_request_headers_new(opts->api_key, strlen(opts->api_key));
    if (headers == NULL)
        return OMNISYNC_ENOMEM;
    if ((rc = apply_limits(c->multi, opts->max_in_flight)) != 0) {
        omnidesk_request_headers_unref(headers);
        /* Put the old limits back so the multi handle matches what we enforce. */
        if (apply_limits(c->multi, c->max_in_flight) != 0)
            log_warn("omnidesk could not restore connection limits max_in_flight=%u",
                     c->max_in_flight);
        return rc;
    }
    /* Requests in flight keep their reference to the old lines; the last one wipes them. */
    omnidesk_request_headers_unref(c->headers);
    c->headers = headers;
    c->timeout_ms = opts->timeout_ms;
    c->max_retry_after_ms = opts->max_retry_after_ms > 0 ? opts->max_retry_after_ms
                                                         : OMNIDESK_DEFAULT_MAX_RETRY_AFTER_MS;
    c->connect_timeout_ms = effective_connect_timeout(opts);
    c->max_in_flight = opts->max_in_flight;
    c->max_body = opts->max_body ? opts->max_body : OMNIDESK_DEFAULT_MAX_BODY;
    return 0;
}

unsigned omnidesk_in_flight(const struct omnidesk *c)
{
    return c->in_flight;
}

static void teardown(struct omnidesk *c)
{
    struct queue *q;

    c->torn_down = 1;
    /* Stop watching every socket while its fd is still open; curl closes them below. */
    while ((q = queue_head(&c->sockets)) != NULL)
        socket_close(queue_data(q, struct omnidesk_socket, node));
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->nspare > 0)
        curl_easy_cleanup(c->spare[--c->nspare]);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->reaper, on_handle_closed);
    omnidesk_request_headers_unref(c->headers);
    c->headers = NULL;
    free(c->base_url);
    c->base_url = NULL;
}

static void on_reap(uv_timer_t *timer)
{
    struct omnidesk *c = timer->data;

    if (c->torn_down)
        return;
    if (c->aborting) {
        struct omnidesk_request *req;
        struct queue *q;

        /* Callbacks may run omnidesk_send(); it refuses (closing), so this loop ends. */
        while ((q = queue_head(&c->requests)) != NULL) {
            req = queue_data(q, struct omnidesk_request, node);
            curl_multi_remove_handle(c->multi, req->easy);
            request_finish(req, CURLE_OK, 1);
        }
    }
    if (c->in_flight == 0)
        teardown(c);
}

void omnidesk_close(struct omnidesk *c, int abort, void (*close_cb)(struct omnidesk *c))
{
    if (c == NULL || c->torn_down)
        return;
    if (!c->closing) {
        c->closing = 1;
        c->close_cb = close_cb;
    }
    if (abort)
        c->aborting = 1;
    /* Never tear down from here: we may be inside a response callback of this client. */
    if (c->aborting || c->in_flight == 0)
        uv_timer_start(&c->reaper, on_reap, 0, 0);
}
