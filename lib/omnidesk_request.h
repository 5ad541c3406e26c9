/*
 * omnidesk_request: building one request to the Omnidesk API (issue 13 item 7): the endpoint's
 * path, its headers (with the key) and its body. Used by omnidesk.c; no I/O here.
 */
#ifndef OMNISYNC_OMNIDESK_REQUEST_H
#define OMNISYNC_OMNIDESK_REQUEST_H

#include <curl/curl.h>
#include <stddef.h>

#include "omnidesk.h"

/* The one multipart part sent through a callback that refuses a rewind (see
 * omnidesk_request_mime); owned by the request, `data` freed with it. */
struct omnidesk_once {
    char *data;
    size_t len;
    size_t pos;
};

/* The path of `e` (static), or NULL for an unknown endpoint. */
const char *omnidesk_request_path(enum omnidesk_endpoint e);

/* The urlencoded body of `fields` (NULL values left out), escaped with `easy`; malloc'd, NULL
 * when out of memory. */
char *omnidesk_request_form(const struct omnidesk_field *fields, size_t nfields, CURL *easy);

/*
 * The multipart body of `fields` (NULL values left out) into *mime, which the caller frees with
 * curl_mime_free even on failure. With `once`, the first part goes out at most once per
 * request (its copy kept in *once). 0 or OMNISYNC_ENOMEM.
 */
int omnidesk_request_mime(CURL *easy, const struct omnidesk_field *fields, size_t nfields,
                          struct omnidesk_once *once, curl_mime **mime);

/* Appends apiKey, Accept, an empty Expect and, when `urlencoded`, the form Content-Type to
 * *headers. 0 or OMNISYNC_ENOMEM (what was appended stays in *headers). */
int omnidesk_request_headers(const char *api_key, size_t api_key_len, int urlencoded,
                             struct curl_slist **headers);

/* Wipes every line (one holds the key) and frees the list. */
void omnidesk_request_headers_free(struct curl_slist *headers);

#endif
