/*
 * omnidesk_request: building one request to the Omnidesk API (issue 13 item 7): the endpoint's
 * path, its headers (with the key) and its body. Used by omnidesk.c; no I/O here.
 */
#ifndef OMNISYNC_OMNIDESK_REQUEST_H
#define OMNISYNC_OMNIDESK_REQUEST_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

#include "omnidesk.h"

/* Length of a multipart boundary (libcurl's shape: 24 dashes and 16 hex digits). */
#define OMNIDESK_BOUNDARY_LEN 40

/* The path of `e` (static), or NULL for an unknown endpoint. */
const char *omnidesk_request_path(enum omnidesk_endpoint e);

/* The urlencoded body of `fields` (NULL values left out), escaped with `easy`; malloc'd, NULL
 * when out of memory. */
char *omnidesk_request_form(const struct omnidesk_field *fields, size_t nfields, CURL *easy);

/*
 * The multipart/form-data body of `fields` (NULL values left out) as one buffer, byte for byte
 * what libcurl's mime API sends for the same parts (each part only a Content-Disposition with
 * the name; the value raw), with the boundary taken from the sequence at *seq (advanced) such
 * that no value contains it. *body is malloc'd (NUL-terminated, *body_len bytes without the
 * NUL), the caller frees it; `boundary` receives the boundary for the Content-Type header.
 * 0, OMNISYNC_EINVAL (more than OMNIDESK_MAX_FIELDS fields) or OMNISYNC_ENOMEM (nothing to free).
 */
int omnidesk_request_multipart(const struct omnidesk_field *fields, size_t nfields, uint64_t *seq,
                               char **body, size_t *body_len,
                               char boundary[OMNIDESK_BOUNDARY_LEN + 1]);

/*
 * The header lines every request of a client carries: apiKey, Accept and an empty Expect (no
 * 100-continue round trip). Built once per key (omnidesk_init, omnidesk_reconfigure) and shared,
 * by reference, by the requests started with that key: a list built per request cost ten
 * allocations, their frees and a wipe. A request's Content-Type line goes in front of it, in a
 * node of the request's own (omnidesk.c). Never changed once built.
 */
struct omnidesk_headers {
    unsigned refs;
    struct curl_slist *list;
};

/* Builds the lines for `api_key` (copied) with one reference; NULL when out of memory. */
struct omnidesk_headers *omnidesk_request_headers_new(const char *api_key, size_t api_key_len);

/* Takes a reference; returns `h`. */
struct omnidesk_headers *omnidesk_request_headers_ref(struct omnidesk_headers *h);

/* Drops a reference (NULL: nothing); the last wipes every line (one holds the key) and frees
 * them. */
void omnidesk_request_headers_unref(struct omnidesk_headers *h);

#endif
