/*
 * omnidesk_request: a request in the exact shape the API document gives for its endpoint
 * (omnidesk_request.h): the path, the headers with the key, a multipart body for POST and a
 * urlencoded one for PUT and the legacy DELETE. No socket, no loop: omnidesk.c runs what is
 * built here.
 */
#include "omnidesk_request.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"

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

/* A field name as curl's mime API writes it into Content-Disposition (WHATWG HTML's form
 * encoding: '"', CR and LF become %22, %0D and %0A; nothing else is escaped). */
static size_t name_escaped_len(const char *name)
{
    size_t n = 0;

    for (const char *p = name; *p != '\0'; p++)
        n += (*p == '"' || *p == '\r' || *p == '\n') ? 3 : 1;
    return n;
}

static char *put_name(char *out, const char *name)
{
    for (const char *p = name; *p != '\0'; p++) {
        if (*p == '"' || *p == '\r' || *p == '\n') {
            memcpy(out, *p == '"' ? "%22" : *p == '\r' ? "%0D" : "%0A", 3);
            out += 3;
        } else {
            *out++ = *p;
        }
    }
    return out;
}

static char *put(char *out, const char *s, size_t len)
{
    memcpy(out, s, len);
    return out + len;
}

/* splitmix64: a bijection, so consecutive counters give distinct boundaries. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* "------------------------" and 16 hex digits: the shape of libcurl's own boundaries. */
static void make_boundary(uint64_t seq, char out[OMNIDESK_BOUNDARY_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    uint64_t x = mix(seq);

    memset(out, '-', 24);
    for (int i = 0; i < 16; i++)
        out[24 + i] = digits[(x >> (60 - 4 * i)) & 0xf];
    out[OMNIDESK_BOUNDARY_LEN] = '\0';
}

int omnidesk_request_multipart(const struct omnidesk_field *fields, size_t nfields, uint64_t *seq,
                               char **body, size_t *body_len,
                               char boundary[OMNIDESK_BOUNDARY_LEN + 1])
{
    static const char disposition[] = "Content-Disposition: form-data; name=\"";
    size_t value_len[OMNIDESK_MAX_FIELDS];
    size_t len = 0;
    char *out;

    if (nfields > OMNIDESK_MAX_FIELDS)
        return OMNISYNC_EINVAL;
    /* A boundary no value contains (RFC 2046 §5.1.1): libcurl draws a random one and never
     * looks; we take the next one of the sequence until none of the values holds it. The
     * sequence is a bijection and a value of n bytes holds at most n / 40 boundaries, so this
     * ends, in practice at the first try. */
    for (;;) {
        size_t i;

        make_boundary((*seq)++, boundary);
        for (i = 0; i < nfields; i++)
            if (fields[i].value != NULL && strstr(fields[i].value, boundary) != NULL)
                break;
        if (i == nfields)
            break;
    }
    /* Per part: "--B\r\n" disposition NAME "\"\r\n\r\n" VALUE "\r\n"; then "--B--\r\n". */
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].value == NULL)
            continue;
        value_len[i] = strlen(fields[i].value);
        len += 2 + OMNIDESK_BOUNDARY_LEN + 2 + sizeof(disposition) - 1 +
               name_escaped_len(fields[i].name) + 5 + value_len[i] + 2;
    }
    len += 2 + OMNIDESK_BOUNDARY_LEN + 4;
    *body = malloc(len + 1);
    if (*body == NULL)
        return OMNISYNC_ENOMEM;
    out = *body;
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].value == NULL)
            continue;
        out = put(out, "--", 2);
        out = put(out, boundary, OMNIDESK_BOUNDARY_LEN);
        out = put(out, "\r\n", 2);
        out = put(out, disposition, sizeof(disposition) - 1);
        out = put_name(out, fields[i].name);
        out = put(out, "\"\r\n\r\n", 5);
        out = put(out, fields[i].value, value_len[i]);
        out = put(out, "\r\n", 2);
    }
    out = put(out, "--", 2);
    out = put(out, boundary, OMNIDESK_BOUNDARY_LEN);
    out = put(out, "--\r\n", 4);
    *out = '\0';
    *body_len = (size_t)(out - *body);
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

static void headers_free(struct omnidesk_headers *h)
{
    /* The list holds "apiKey: ...": wipe every line, curl_slist_free_all does not. */
    for (struct curl_slist *l = h->list; l != NULL; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(h->list);
    free(h);
}

struct omnidesk_headers *omnidesk_request_headers_new(const char *api_key, size_t api_key_len)
{
    static const char prefix[] = "apiKey: ";
    size_t len = sizeof(prefix) - 1 + api_key_len + 1;
    struct omnidesk_headers *h = calloc(1, sizeof(*h));
    char *line = malloc(len);
    int rc = OMNISYNC_ENOMEM;

    if (h == NULL || line == NULL)
        goto fail;
    h->refs = 1;
    memcpy(line, prefix, sizeof(prefix) - 1);
    memcpy(line + sizeof(prefix) - 1, api_key, api_key_len + 1);
    if ((rc = add_header(&h->list, line)) != 0)
        goto fail;
    if ((rc = add_header(&h->list, "Accept: application/json")) != 0)
        goto fail;
    /* No "Expect: 100-continue" round trip: bodies are small and the server is not a proxy. */
    if ((rc = add_header(&h->list, "Expect:")) != 0)
        goto fail;
    explicit_bzero(line, len);
    free(line);
    return h;

fail:
    if (line != NULL)
        explicit_bzero(line, len);
    free(line);
    if (h != NULL)
        headers_free(h);
    return NULL;
}

struct omnidesk_headers *omnidesk_request_headers_ref(struct omnidesk_headers *h)
{
    h->refs++;
    return h;
}

void omnidesk_request_headers_unref(struct omnidesk_headers *h)
{
    if (h != NULL && --h->refs == 0)
        headers_free(h);
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
