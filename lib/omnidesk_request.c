/*
 * omnidesk_request: a request in the exact shape the API document gives for its endpoint
 * (omnidesk_request.h): the path, the headers with the key, a multipart body for POST and a
 * urlencoded one for PUT and the legacy DELETE. No socket, no loop: omnidesk.c runs what is
 * built here.
 */
#include "omnidesk_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"

void omnidesk_request_headers_free(struct curl_slist *headers)
{
    /* The list holds "apiKey: ...": wipe every line, curl_slist_free_all does not. */
    for (struct curl_slist *h = headers; h != NULL; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(headers);
}

char *omnidesk_request_form(const struct omnidesk_field *fields, size_t nfields, CURL *easy)
{
    char *form = NULL;
    size_t len = 0, cap = 0;

    form = malloc(1);
    if (form == NULL)
        return NULL;
    form[0] = '\0';
    cap = 1;
    for (size_t i = 0; i < nfields; i++) {
        char *name, *value;
        size_t need;

        if (fields[i].value == NULL)
            continue;
        name = curl_easy_escape(easy, fields[i].name, 0);
        value = curl_easy_escape(easy, fields[i].value, 0);
        if (name == NULL || value == NULL) {
            curl_free(name);
            curl_free(value);
            free(form);
            return NULL;
        }
        need = len + (len ? 1 : 0) + strlen(name) + 1 + strlen(value) + 1;
        if (need > cap) {
            char *grown = realloc(form, need * 2);
            if (grown == NULL) {
                curl_free(name);
                curl_free(value);
                free(form);
                return NULL;
            }
            form = grown;
            cap = need * 2;
        }
        len += (size_t)sprintf(form + len, "%s%s=%s", len ? "&" : "", name, value);
        curl_free(name);
        curl_free(value);
    }
    return form;
}

static size_t read_once(char *buffer, size_t size, size_t nitems, void *arg)
{
    struct omnidesk_once *once = arg;
    size_t n = once->len - once->pos;
    if (n > size * nitems)
        n = size * nitems;
    memcpy(buffer, once->data + once->pos, n);
    once->pos += n;
    return n;
}

/* curl asks only when the part was read before, i.e. to send the body a second time. */
static int refuse_rewind(void *arg, curl_off_t offset, int origin)
{
    (void)arg;
    (void)offset;
    (void)origin;
    return CURL_SEEKFUNC_CANTSEEK;
}

/*
 * Multipart body. With `once`, the body goes out at most once per request: libcurl silently
 * sends a request again on a new connection when a reused keep-alive connection died before any
 * byte of the answer came back (Curl_retry_request), and for a create or a channel add that the
 * API may already have applied, the second copy is a duplicate at Omnidesk. Sending it again
 * needs the body rewound; the first part is read through a callback whose seek refuses, so the
 * resend fails (CURLE_SEND_FAIL_REWIND) and the engine sees a lost answer and decides (it looks
 * the customer up first). A body not read yet needs no rewind, so a request that never left
 * goes out normally. This keeps keep-alive for every endpoint: a fresh TCP connection per create
 * cost the daemon and the API a connect, an accept and a close each.
 */
int omnidesk_request_mime(CURL *easy, const struct omnidesk_field *fields, size_t nfields,
                          struct omnidesk_once *once, curl_mime **mime)
{
    *mime = curl_mime_init(easy);
    if (*mime == NULL)
        return OMNISYNC_ENOMEM;
    for (size_t i = 0; i < nfields; i++) {
        curl_mimepart *part;

        if (fields[i].value == NULL)
            continue;
        part = curl_mime_addpart(*mime);
        if (part == NULL || curl_mime_name(part, fields[i].name) != CURLE_OK)
            return OMNISYNC_ENOMEM;
        if (once != NULL && once->data == NULL) {
            once->len = strlen(fields[i].value);
            once->pos = 0;
            once->data = malloc(once->len + 1);
            if (once->data == NULL)
                return OMNISYNC_ENOMEM;
            memcpy(once->data, fields[i].value, once->len + 1);
            if (curl_mime_data_cb(part, (curl_off_t)once->len, read_once, refuse_rewind, NULL,
                                  once) != CURLE_OK)
                return OMNISYNC_ENOMEM;
        } else if (curl_mime_data(part, fields[i].value, CURL_ZERO_TERMINATED) != CURLE_OK) {
            return OMNISYNC_ENOMEM;
        }
    }
    return 0;
}

static int add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *grown = curl_slist_append(*list, line);

    if (grown == NULL)
        return OMNISYNC_ENOMEM;
    *list = grown;
    return 0;
}

int omnidesk_request_headers(const char *api_key, size_t api_key_len, int urlencoded,
                             struct curl_slist **headers)
{
    static const char prefix[] = "apiKey: ";
    size_t len = sizeof(prefix) - 1 + api_key_len + 1;
    char *line = malloc(len);
    int rc;

    if (line == NULL)
        return OMNISYNC_ENOMEM;
    memcpy(line, prefix, sizeof(prefix) - 1);
    memcpy(line + sizeof(prefix) - 1, api_key, api_key_len + 1);
    rc = add_header(headers, line);
    explicit_bzero(line, len);
    free(line);
    if (rc != 0)
        return rc;
    if ((rc = add_header(headers, "Accept: application/json")) != 0)
        return rc;
    /* No "Expect: 100-continue" round trip: bodies are small and the server is not a proxy. */
    if ((rc = add_header(headers, "Expect:")) != 0)
        return rc;
    if (urlencoded &&
        (rc = add_header(headers, "Content-Type: application/x-www-form-urlencoded")) != 0)
        return rc;
    return 0;
}

const char *omnidesk_request_path(enum omnidesk_endpoint e)
{
    switch (e) {
    case OMNIDESK_CREATE:
        return "/api/v2/customer";
    case OMNIDESK_UPDATE:
        return "/api/v2/customer/updateCustomer";
    case OMNIDESK_ADD_CHANNEL:
        return "/api/v2/customer/addChannelOnly";
    case OMNIDESK_PURGE:
        return "/api/v2/customer/purgeData/";
    case OMNIDESK_PURGE_LEGACY:
        return "/api/v2/customer/purgedata";
    case OMNIDESK_SEARCH:
        return "/api/v2/customer/SearchByPrimaryExternalID";
    case OMNIDESK_PROBE:
        return "/api/v2/customer?itemStart=0&itemLimit=1";
    }
    return NULL;
}
