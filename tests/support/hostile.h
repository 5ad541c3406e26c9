/*
 * hostile: a small HTTP server in the test process that answers the way no sane API does.
 *
 * It is not the fake Omnidesk (which models the API); it only says what a test tells it to, per
 * path: a 50 MB body, a chunked body that never ends, invalid UTF-8 or JSON, ids of the wrong
 * type, redirects, odd Retry-After values, huge or many headers. It records every request it
 * gets (method, path, the apiKey header, the raw bytes' size) so a test can check what reached
 * it, and it counts the bytes it managed to send, so a test can tell that the client stopped
 * reading. A second instance with no answers set is the "other host" of the redirect tests: it
 * must receive nothing.
 *
 * One thread accepts; each connection gets its own thread and "Connection: close". Loopback only.
 */
#ifndef OMNISYNC_TEST_HOSTILE_H
#define OMNISYNC_TEST_HOSTILE_H

#include <pthread.h>
#include <stddef.h>

#define HOSTILE_MAX_ANSWERS 8
#define HOSTILE_MAX_RECORDS 512

enum hostile_body {
    HOSTILE_BODY_FIXED, /* `body` with its Content-Length */
    HOSTILE_BODY_FLOOD, /* Content-Length `flood_bytes`, that many bytes of JSON-ish text */
    HOSTILE_BODY_CHUNKED_FOREVER, /* chunked, chunk after chunk until the client goes away */
};

struct hostile_answer {
    const char *method;      /* "POST", "GET", ...; NULL matches any */
    const char *path_prefix; /* matched against the request path (query included) */
    const char *contains;    /* the raw request must contain this (e.g. a primary id); NULL = any */
    const char *status_line; /* "HTTP/1.1 200 OK" */
    const char *headers;     /* extra header lines, each ending "\r\n"; may be NULL */
    enum hostile_body kind;
    const char *body;      /* HOSTILE_BODY_FIXED; NULL = empty */
    size_t flood_bytes;    /* HOSTILE_BODY_FLOOD */
    unsigned many_headers; /* adds this many "X-Filler-N: ..." lines */
    size_t huge_header;    /* adds one header line of this many bytes */
};

struct hostile_record {
    char method[16];
    char path[256];
    char api_key[128]; /* the apiKey header's value, "" when absent */
    size_t bytes;      /* the whole request as received */
};

struct hostile {
    int listen_fd;
    int port;
    char url[64]; /* "http://127.0.0.1:PORT" */
    pthread_t acceptor;
    pthread_mutex_t lock;
    struct hostile_answer answers[HOSTILE_MAX_ANSWERS];
    size_t nanswers;
    struct hostile_record records[HOSTILE_MAX_RECORDS];
    size_t nrecords;
    unsigned long long requests;    /* every request, also beyond HOSTILE_MAX_RECORDS */
    unsigned long long connections; /* every accepted connection */
    unsigned long long body_bytes_sent;
    unsigned active; /* connection threads running */
    int stopping;
    char keys_seen[4096]; /* every distinct apiKey value received, "\n"-separated */
};

/* Starts listening on 127.0.0.1 (a free port). 0, or -1 with a message on stderr. */
int hostile_start(struct hostile *h);

/* Adds an answer (copied by value: the strings must outlive the server). The first answer whose
 * method and path prefix match is used; a request nothing matches gets 200 "{}". Thread-safe. */
void hostile_add(struct hostile *h, const struct hostile_answer *answer);

/* Requests received, with method and path prefix (NULL = any); thread-safe. */
unsigned long long hostile_count(struct hostile *h, const char *method, const char *path_prefix);

/* Stops accepting, waits (up to 10 s) for connection threads, closes. Idempotent. */
void hostile_stop(struct hostile *h);

#endif
