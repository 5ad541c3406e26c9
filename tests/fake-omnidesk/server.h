/*
 * server: the fake's HTTP side, libmicrohttpd glue and fault injection.
 *
 * libmicrohttpd runs a pool of worker threads, each with its own epoll loop; handlers never
 * block: latency, slow bodies and hangs suspend the connection and leave it to the waker thread.
 * State lives in the store behind its mutex. Faults apply only to /api/ routes, never /_fake/.
 */
#ifndef FAKE_SERVER_H
#define FAKE_SERVER_H

#include "store.h"
#include "waker.h"

#include <microhttpd.h>

/* Bodies beyond this answer 413. */
#define SERVER_BODY_MAX (64 * 1024)

struct server {
    struct store *store; /* not owned */
    struct waker waker;
    struct MHD_Daemon *daemon;
    int port; /* the bound port, also when 0 was asked for */
};

/* Listens on host:port (an IPv4 literal; port 0 picks a free one) with `threads` workers.
   0, or -1 with a message on stderr (nothing to release then). */
int server_start(struct server *server, struct store *store, const char *host, int port,
                 unsigned threads);

/* Resumes suspended connections, stops the workers, closes every connection. */
void server_stop(struct server *server);

#endif
