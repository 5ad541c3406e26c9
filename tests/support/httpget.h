/* httpget: one GET over loopback, for the tests that read the daemon's health endpoint. */
#ifndef OMNISYNC_TEST_HTTPGET_H
#define OMNISYNC_TEST_HTTPGET_H

#include <stddef.h>

/* What a GET received: the body, cut to fit (always NUL-terminated). */
struct http_body {
    char text[262144];
    size_t len;
};

/*
 * GETs http://127.0.0.1:PORT/PATH (5 s timeout) into `b`. Returns the HTTP status, 0 when no
 * answer came.
 */
long http_get(int port, const char *path, struct http_body *b);

#endif
