/*
 * waker: the timer thread that resumes suspended connections (see waker.h).
 *
 * A plain array scanned on each wake-up: the fake holds at most a few thousand suspended
 * connections, and the scan is cheaper than keeping a heap honest under removals.
 */
#include "waker.h"

#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <time.h>

/* How often a hung connection's socket is checked for a closed peer. */
#define WATCH_INTERVAL_NS (20u * 1000u * 1000u)

/* POLLRDHUP rather than a peeking recv: it reports the peer's FIN even when the peer sent more
   bytes first (a pipelined request) that nobody will read. */
static bool peer_closed(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};

    if (poll(&pfd, 1, 0) < 0)
        return errno != EINTR;
    return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void *waker_main(void *arg)
{
    struct waker *waker = arg;
    uint64_t next_watch = 0;

    /* Linux lets a sleep overrun by the thread's timer slack, 50 us by default: every latency
       would be that much longer than asked, and at 5 ms that is 1 % of the API's time. */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    pthread_mutex_lock(&waker->lock);
    while (!waker->stopping) {
        uint64_t now = clock_mono_ns();
        uint64_t next = WAKER_NEVER;
        bool watch_now = now >= next_watch;
        bool watching = false;

        for (size_t i = 0; i < waker->count;) {
            struct waker_entry *e = &waker->entries[i];
            bool fire = e->due_ns <= now;

            if (!fire && e->watch_fd >= 0) {
                watching = true;
                if (watch_now && peer_closed(e->watch_fd)) {
                    *e->gone = true;
                    fire = true;
                }
            }
            if (fire) {
                MHD_resume_connection(e->connection);
                waker->entries[i] = waker->entries[--waker->count];
                continue;
            }
            if (e->due_ns < next)
                next = e->due_ns;
            i++;
        }
        if (watch_now)
            next_watch = now + WATCH_INTERVAL_NS;
        if (watching && next_watch < next)
            next = next_watch;
        if (next == WAKER_NEVER) {
            pthread_cond_wait(&waker->cond, &waker->lock);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                                  .tv_nsec = (long)(next % 1000000000u)};

            pthread_cond_timedwait(&waker->cond, &waker->lock, &ts);
        }
    }
    pthread_mutex_unlock(&waker->lock);
    return NULL;
}

int waker_init(struct waker *waker)
{
    pthread_condattr_t attr;

    memset(waker, 0, sizeof(*waker));
    if (pthread_mutex_init(&waker->lock, NULL) != 0)
        return -1;
    /* Deadlines are monotonic: a wall clock step must not stretch a latency. */
    if (pthread_condattr_init(&attr) != 0)
        goto fail_mutex;
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&waker->cond, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        goto fail_mutex;
    }
    pthread_condattr_destroy(&attr);
    if (pthread_create(&waker->thread, NULL, waker_main, waker) != 0)
        goto fail_cond;
    return 0;
fail_cond:
    pthread_cond_destroy(&waker->cond);
fail_mutex:
    pthread_mutex_destroy(&waker->lock);
    return -1;
}

int waker_suspend(struct waker *waker, struct MHD_Connection *connection, uint64_t due_ns,
                  int watch_fd, bool *gone)
{
    int rc = -1;

    pthread_mutex_lock(&waker->lock);
    if (waker->stopping)
        goto out;
    if (waker->count == waker->cap) {
        size_t cap = waker->cap ? waker->cap * 2 : 64;
        struct waker_entry *entries = realloc(waker->entries, cap * sizeof(*entries));

        if (entries == NULL)
            goto out;
        waker->entries = entries;
        waker->cap = cap;
    }
    /* Suspend before the entry becomes visible: the waker must never resume a connection that
       is not suspended (undefined behaviour in libmicrohttpd). */
    MHD_suspend_connection(connection);
    waker->entries[waker->count++] = (struct waker_entry){
        .due_ns = due_ns, .connection = connection, .watch_fd = watch_fd, .gone = gone};
    pthread_cond_signal(&waker->cond);
    rc = 0;
out:
    pthread_mutex_unlock(&waker->lock);
    return rc;
}

void waker_stop(struct waker *waker)
{
    pthread_mutex_lock(&waker->lock);
    waker->stopping = true;
    for (size_t i = 0; i < waker->count; i++) {
        *waker->entries[i].gone = true;
        MHD_resume_connection(waker->entries[i].connection);
    }
    waker->count = 0;
    pthread_cond_signal(&waker->cond);
    pthread_mutex_unlock(&waker->lock);
    pthread_join(waker->thread, NULL);
}

void waker_free(struct waker *waker)
{
    free(waker->entries);
    pthread_cond_destroy(&waker->cond);
    pthread_mutex_destroy(&waker->lock);
}
