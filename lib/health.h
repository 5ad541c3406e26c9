/*
 * health: the small HTTP server for /healthz, /readyz and /metrics (DESIGN §7).
 *
 * libmicrohttpd runs in external-poll epoll mode on the caller's libuv loop (DESIGN §9): its
 * epoll fd sits under a uv_poll and MHD_get_timeout() arms a uv_timer, both of which call
 * MHD_run(). No thread is started. Every answer is computed on the loop from a health_source at
 * the moment of the request, so it is never staler than the figures themselves.
 *
 * It reads nothing from a client but the request line and headers (capped by MHD's per-connection
 * memory limit); request bodies are never read. It never writes ids or personal data: the only
 * free text it serves is the source's last_error, which must already be plain words.
 */
#ifndef OMNISYNC_HEALTH_H
#define OMNISYNC_HEALTH_H

#include <uv.h>

#include "errors.h"
#include "metrics.h"

struct MHD_Daemon;

/* Where the answers come from. Everything is called on the loop thread, during a request. */
struct health_source {
    const struct metrics *metrics; /* not NULL; read at each request; must outlive the server */
    /* Optional: called before /readyz and /metrics are answered, so the owner can bring gauges
     * (in_flight, db_connected, ...) up to date just in time. Must not call health_close(). */
    void (*refresh)(void *arg);
    /* Optional: the last error in plain words, or NULL/"" for none. The string only has to stay
     * valid until the call returns to the server; it is capped at HEALTH_LAST_ERROR_MAX bytes. */
    const char *(*last_error)(void *arg);
    void *arg;           /* passed to refresh and last_error */
    const char *version; /* for omnisync_build_info; NULL = OMNISYNC_VERSION */
};

#define HEALTH_LAST_ERROR_MAX 512

struct health {
    uv_loop_t *loop;
    struct MHD_Daemon *daemon; /* NULL once stopped */
    uv_poll_t poll;            /* MHD's epoll fd: readable = work for MHD_run() */
    uv_timer_t timer;          /* MHD_get_timeout(): connection timeouts, buffered data */
    struct health_source src;
    int port;
    unsigned connections; /* MHD's count after the last MHD_run() */
    unsigned handles_open;
    int closing;
    int starting;          /* in health_init: MHD's messages go to start_error, not the log */
    char start_error[192]; /* MHD's last message while starting, for the one error line */
    void (*close_cb)(struct health *h);
};

/*
 * Starts listening on `host` (an IPv4 or IPv6 literal; "[::1]" is accepted too) and `port`
 * (0..65535; 0 picks a free port, see health_port()). `src` is copied; the pointers in it must
 * outlive the server. Returns 0, OMNISYNC_EINVAL (bad host or port, NULL metrics), or
 * OMNISYNC_EIO (epoll unsupported, cannot listen: the cause is logged). On failure nothing needs
 * releasing; on success health_close() must be called before the loop is closed.
 */
int health_init(struct health *h, uv_loop_t *loop, const char *host, int port,
                const struct health_source *src) OMNISYNC_MUST_CHECK;

/* The port actually listened on (the chosen one when init was given 0). */
int health_port(const struct health *h);

/*
 * Stops the server: open connections are closed at once, the listening socket with them, and the
 * loop handles are closed. `close_cb` (may be NULL) runs after the last close callback; only then
 * may `h` be freed. Must not be called from inside a health_source callback.
 */
void health_close(struct health *h, void (*close_cb)(struct health *h));

#endif
