/*
 * waker: resumes suspended libmicrohttpd connections at their time.
 *
 * Latency, slow bodies and hangs must not hold a worker thread: the handler suspends its
 * connection and hands it to the waker, whose one thread resumes it when its time comes (latency,
 * the next slice of a slow body) or when the peer closed the socket (a hang lasts until the
 * client gives up). So 64 requests with 100 ms latency all finish after about 100 ms.
 *
 * An entry exists only while its connection is suspended, so the waker never touches a
 * connection libmicrohttpd may have freed. waker_stop resumes every connection with its `gone`
 * flag set, which libmicrohttpd requires before MHD_stop_daemon.
 */
#ifndef FAKE_WAKER_H
#define FAKE_WAKER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WAKER_NEVER UINT64_MAX

struct waker_entry {
    uint64_t due_ns; /* CLOCK_MONOTONIC; WAKER_NEVER for watch-only entries */
    struct MHD_Connection *connection;
    int watch_fd; /* >= 0: also resume once the peer closed this socket */
    bool *gone;   /* set before resuming for a closed peer or shutdown */
};

struct waker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct waker_entry *entries;
    size_t count;
    size_t cap;
    bool stopping;
    pthread_t thread;
};

/* Starts the waker thread. 0 or -1 (nothing to release then). */
int waker_init(struct waker *waker);

/* Suspends `connection` (call only from its access handler or content reader) and resumes it
   at `due_ns`, or when `watch_fd` >= 0 and the peer closed it. `gone` must stay valid while the
   connection is suspended. Returns 0, or -1 when stopping or out of memory: then nothing was
   suspended and the caller should close the connection. */
int waker_suspend(struct waker *waker, struct MHD_Connection *connection, uint64_t due_ns,
                  int watch_fd, bool *gone);

/* Resumes every waiting connection with *gone = true, refuses new ones, joins the thread. Call
   before MHD_stop_daemon. */
void waker_stop(struct waker *waker);

/* Frees what is left; after waker_stop. */
void waker_free(struct waker *waker);

#endif
