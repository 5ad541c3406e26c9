/*
 * omnidesk_answer: what an answer of the Omnidesk API means, without a socket (issue 13 item 7).
 *
 * Pure functions: a status and a body (or the facts of a failed transfer) in, a classified
 * struct omnidesk_response out. omnidesk.c gathers the inputs from curl and calls these; tests
 * and fuzz targets call them directly. Nothing here logs, allocates beyond json-c's parse, or
 * reads the clock.
 */
#ifndef OMNISYNC_OMNIDESK_ANSWER_H
#define OMNISYNC_OMNIDESK_ANSWER_H

#include <stddef.h>

#include "omnidesk.h"

/* Raw (non-JSON) error bodies are quoted up to this many bytes (DESIGN §2). */
#define RAW_BODY_QUOTE 200
/* JSON nesting deeper than this in an answer is not an Omnidesk answer. */
#define OMNIDESK_JSON_MAX_DEPTH 16

/*
 * Classifies a complete HTTP answer to a request to `endpoint`: r->http_status must be set; `body`
 * (may be NULL, `body_len` bytes, need not be NUL-terminated) is read, never kept. Sets r->class,
 * r->error and, for a lookup that found the customer, r->customer_id and r->customer (a new
 * reference the caller puts). Leaves the other fields alone.
 */
void omnidesk_answer_classify(enum omnidesk_endpoint endpoint, const char *body, size_t body_len,
                              struct omnidesk_response *r);

/* What curl knew of a transfer that failed below HTTP (gathered by omnidesk.c). */
struct omnidesk_transport_facts {
    int curl_code;        /* the CURLcode */
    long os_errno;        /* CURLINFO_OS_ERRNO, 0 unknown */
    int connected;        /* a connection was made (or reused) and sending began */
    int received;         /* header or body bytes came back */
    long long downloaded; /* body bytes received */
    long status;          /* CURLINFO_RESPONSE_CODE, 0 none */
    long long elapsed_ms;
    long timeout_ms;   /* the request's timeout */
    int body_overflow; /* the body passed max_body */
    int body_nomem;
    size_t max_body;
    const char *errbuf; /* curl's CURLOPT_ERRORBUFFER text, may be NULL */
};

/* Words a failed transfer: r->class (always transient), r->transport_error, r->http_status = 0
 * and r->error in plain words that quote nothing of the request. */
void omnidesk_answer_transport(const struct omnidesk_transport_facts *f,
                               struct omnidesk_response *r);

/*
 * Copies at most `max_in` bytes of `in` into `out` (size `outsz`, always NUL-terminated) as
 * valid UTF-8 without control characters, a cut marked "..." (see omnidesk_answer.c).
 */
void omnidesk_answer_printable(char *out, size_t outsz, const char *in, size_t inlen,
                               size_t max_in);

#endif
