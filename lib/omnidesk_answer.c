/*
 * omnidesk_answer: the classification of Omnidesk's answers (omnidesk_answer.h). Pure: no socket,
 * no loop, no log. The lookup answer is not documented (DESIGN §2), so its shapes are accepted
 * here and nowhere else; an id is never clamped into a valid one.
 */
#include "omnidesk_answer.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define JSON_MAX_DEPTH OMNIDESK_JSON_MAX_DEPTH

const char *omnidesk_endpoint_name(enum omnidesk_endpoint e)
{
    switch (e) {
    case OMNIDESK_CREATE:
        return "create";
    case OMNIDESK_UPDATE:
        return "updateCustomer";
    case OMNIDESK_ADD_CHANNEL:
        return "addChannelOnly";
    case OMNIDESK_PURGE:
        return "purgeData";
    case OMNIDESK_PURGE_LEGACY:
        return "purgedata";
    case OMNIDESK_SEARCH:
        return "search";
    case OMNIDESK_PROBE:
        return "probe";
    }
    return "unknown";
}

const char *omnidesk_class_name(enum omnidesk_class cls)
{
    switch (cls) {
    case OMNIDESK_OK:
        return "ok";
    case OMNIDESK_TRANSIENT:
        return "transient";
    case OMNIDESK_PERMANENT:
        return "permanent";
    case OMNIDESK_AUTH:
        return "auth";
    case OMNIDESK_NOT_FOUND:
        return "not_found";
    }
    return "unknown";
}

/*
 * Copies at most `max_in` bytes of `in` into `out` (size `outsz`, always NUL-terminated) as valid
 * UTF-8: control characters (NUL and newlines included) become spaces, bytes that are not part
 * of a well-formed sequence become '?', and a cut is marked with "...". The result goes into the
 * database as text, which must be valid UTF-8 without NUL.
 */
void omnidesk_answer_printable(char *out, size_t outsz, const char *in, size_t inlen, size_t max_in)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;
    int cut = 0;

    if (outsz == 0)
        return;
    while (i < inlen) {
        size_t n = 1;
        unsigned char b = s[i];
        int valid = 1;

        if (b >= 0xc2 && b <= 0xdf)
            n = 2;
        else if (b >= 0xe0 && b <= 0xef)
            n = 3;
        else if (b >= 0xf0 && b <= 0xf4)
            n = 4;
        else if (b >= 0x80)
            valid = 0;
        if (valid && n > 1) {
            if (i + n > inlen) {
                valid = 0;
            } else {
                for (size_t k = 1; k < n; k++)
                    if ((s[i + k] & 0xc0) != 0x80)
                        valid = 0;
                /* Overlong forms, surrogates and code points beyond U+10FFFF. */
                if (valid && ((b == 0xe0 && s[i + 1] < 0xa0) || (b == 0xed && s[i + 1] > 0x9f) ||
                              (b == 0xf0 && s[i + 1] < 0x90) || (b == 0xf4 && s[i + 1] > 0x8f)))
                    valid = 0;
            }
            if (!valid)
                n = 1;
        }
        if (i + n > max_in || o + n + 4 > outsz) {
            cut = 1;
            break;
        }
        if (!valid)
            out[o++] = '?';
        else if (n == 1 && (b < 0x20 || b == 0x7f))
            out[o++] = ' ';
        else
            for (size_t k = 0; k < n; k++)
                out[o++] = (char)s[i + k];
        i += n;
    }
    if (cut && o + 4 <= outsz) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Parses a whole body as JSON (trailing whitespace allowed); NULL when it is not JSON. */
static json_object *parse_json(const char *body, size_t len)
{
    json_tokener *tok;
    json_object *root;
    size_t end;

    if (body == NULL || len == 0)
        return NULL;
    tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (tok == NULL)
        return NULL;
    root = json_tokener_parse_ex(tok, body, (int)len);
    if (root == NULL || json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(root);
        json_tokener_free(tok);
        return NULL;
    }
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    for (; end < len; end++)
        if (body[end] != ' ' && body[end] != '\t' && body[end] != '\r' && body[end] != '\n') {
            json_object_put(root);
            return NULL;
        }
    return root;
}

/*
 * An id is a positive integer that fits int64 (json-c clamps a larger number to INT64_MAX or
 * UINT64_MAX without a word: the unsigned value tells) or a string of 1..18 digits. Returns the
 * id, or -1 for anything else: an id that is there but malformed is never clamped into a valid
 * one (a later purge would target it).
 */
static long long id_value(json_object *v)
{
    if (v == NULL)
        return -1;
    if (json_object_is_type(v, json_type_int)) {
        int64_t n = json_object_get_int64(v);
        if (n <= 0 || json_object_get_uint64(v) > (uint64_t)INT64_MAX)
            return -1;
        return (long long)n;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        size_t len = (size_t)json_object_get_string_len(v);
        long long n = 0;

        if (len == 0 || len > 18)
            return -1;
        for (size_t i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9')
                return -1;
            n = n * 10 + (s[i] - '0');
        }
        return n > 0 ? n : -1;
    }
    return -1;
}

/* The id of object `o`: > 0, 0 when `o` is no object or has no "id", -1 when malformed. */
static long long object_id(json_object *o)
{
    json_object *v = NULL;

    if (o == NULL || !json_object_is_type(o, json_type_object))
        return 0;
    if (!json_object_object_get_ex(o, "id", &v))
        return 0;
    return id_value(v);
}

static int is_empty(json_object *v)
{
    if (v == NULL)
        return 1;
    if (json_object_is_type(v, json_type_array))
        return json_object_array_length(v) == 0;
    if (json_object_is_type(v, json_type_object))
        return json_object_object_length(v) == 0;
    return 0;
}

/*
 * The lookup answer is not documented (DESIGN §2): an id at the top level, under "customer" or
 * in "items"[0]. Returns the id (> 0), 0 for an explicitly empty result, -2 when an id is there
 * but malformed (beyond int64, negative, not an integer), -1 for anything else.
 */
static long long search_id(json_object *root)
{
    json_object *v = NULL;
    long long id;

    if (root == NULL)
        return -1;
    if (json_object_is_type(root, json_type_array))
        return json_object_array_length(root) == 0 ? 0 : -1;
    if (!json_object_is_type(root, json_type_object))
        return -1;
    if ((id = object_id(root)) != 0)
        return id > 0 ? id : -2;
    if (json_object_object_get_ex(root, "customer", &v)) {
        if ((id = object_id(v)) != 0)
            return id > 0 ? id : -2;
        if (is_empty(v))
            return 0;
    }
    if (json_object_object_get_ex(root, "items", &v) && json_object_is_type(v, json_type_array)) {
        if (json_object_array_length(v) == 0)
            return 0;
        if ((id = object_id(json_object_array_get_idx(v, 0))) != 0)
            return id > 0 ? id : -2;
    }
    return -1;
}

/* The customer object of a search answer that search_id() found an id in. */
static json_object *search_customer(json_object *root)
{
    json_object *v;
    if (object_id(root) > 0)
        return root;
    if (json_object_object_get_ex(root, "customer", &v) && object_id(v) > 0)
        return v;
    if (json_object_object_get_ex(root, "items", &v) && json_object_is_type(v, json_type_array))
        return json_object_array_get_idx(v, 0);
    return NULL;
}

/* "HTTP 400: <message>": the API's JSON message if there is one, else the raw body, cut. */
static void http_error(struct omnidesk_response *r, long status, const char *body, size_t len,
                       json_object *root)
{
    json_object *msg = NULL;
    int n;

    n = snprintf(r->error, sizeof(r->error), "HTTP %ld", status);
    if (n < 0 || (size_t)n + 3 >= sizeof(r->error))
        return;
    if (root != NULL && json_object_is_type(root, json_type_object) &&
        json_object_object_get_ex(root, "message", &msg) &&
        json_object_is_type(msg, json_type_string) && json_object_get_string_len(msg) > 0) {
        memcpy(r->error + n, ": ", 3);
        omnidesk_answer_printable(r->error + n + 2, sizeof(r->error) - (size_t)n - 2,
                                  json_object_get_string(msg),
                                  (size_t)json_object_get_string_len(msg), SIZE_MAX);
    } else if (len > 0) {
        memcpy(r->error + n, ": ", 3);
        omnidesk_answer_printable(r->error + n + 2, sizeof(r->error) - (size_t)n - 2, body, len,
                                  RAW_BODY_QUOTE);
    }
}

/* A JSON object body whose "type" is "error": the API's own words for a failure. A JSON string
 * may hold a NUL: the comparison takes its length, so "error\u0000x" is not "error". */
static int error_body(json_object *root)
{
    json_object *v;
    return root != NULL && json_object_is_type(root, json_type_object) &&
           json_object_object_get_ex(root, "type", &v) &&
           json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 5 &&
           memcmp(json_object_get_string(v), "error", 5) == 0;
}

void omnidesk_answer_classify(enum omnidesk_endpoint endpoint, const char *body, size_t body_len,
                              struct omnidesk_response *r)
{
    long status = r->http_status;
    json_object *root = parse_json(body, body_len);

    if (status >= 200 && status <= 299 && error_body(root)) {
        /* The API says it failed whatever the status: permanent, like the 4xx it should have
         * been (a create then looks the customer up before its row fails; a lookup is retried). */
        json_object *msg = NULL;
        r->class = OMNIDESK_PERMANENT;
        int n = snprintf(r->error, sizeof(r->error), "answered %ld with an error body: ", status);
        if (json_object_object_get_ex(root, "message", &msg) &&
            json_object_is_type(msg, json_type_string) && json_object_get_string_len(msg) > 0)
            omnidesk_answer_printable(r->error + n, sizeof(r->error) - (size_t)n,
                                      json_object_get_string(msg),
                                      (size_t)json_object_get_string_len(msg), SIZE_MAX);
        else
            omnidesk_answer_printable(r->error + n, sizeof(r->error) - (size_t)n, body, body_len,
                                      RAW_BODY_QUOTE);
        json_object_put(root);
        return;
    }
    if (status >= 200 && status <= 299) {
        r->class = OMNIDESK_OK;
        if (endpoint == OMNIDESK_SEARCH) {
            long long id = search_id(root);
            if (id > 0) {
                r->customer_id = id;
                r->customer = json_object_get(search_customer(root));
            } else if (id == 0) {
                r->class = OMNIDESK_NOT_FOUND;
                snprintf(r->error, sizeof(r->error), "HTTP %ld: no such customer", status);
            } else if (id == -2) {
                r->class = OMNIDESK_TRANSIENT;
                snprintf(r->error, sizeof(r->error),
                         "HTTP %ld: malformed answer: the customer id is not an integer from 1 "
                         "to 9223372036854775807",
                         status);
            } else {
                r->class = OMNIDESK_TRANSIENT;
                snprintf(r->error, sizeof(r->error), "HTTP %ld: unparseable answer", status);
            }
        }
        json_object_put(root);
        return;
    }
    if (status == 401 || status == 403)
        r->class = OMNIDESK_AUTH;
    else if (status == 404)
        r->class = OMNIDESK_NOT_FOUND;
    else if (status == 408 || status == 425 || status == 429 || status >= 500)
        r->class = OMNIDESK_TRANSIENT;
    else if (status >= 400)
        r->class = OMNIDESK_PERMANENT;
    else
        /* 1xx/3xx are not answers of this API (redirects are not followed): most likely a wrong
         * base_url; transient keeps rows out of "failed" while the circuit breaker reports it. */
        r->class = OMNIDESK_TRANSIENT;
    http_error(r, status, body, body_len, root);
    json_object_put(root);
}

void omnidesk_answer_transport(const struct omnidesk_transport_facts *f,
                               struct omnidesk_response *r)
{
    CURLcode rc = (CURLcode)f->curl_code;
    long os_errno = f->os_errno;
    long long elapsed_ms = f->elapsed_ms;
    int connected = f->connected, received = f->received;
    curl_off_t downloaded = (curl_off_t)f->downloaded;
    const char *errbuf = f->errbuf != NULL ? f->errbuf : "";

    r->class = OMNIDESK_TRANSIENT;
    r->transport_error = (int)rc;
    r->http_status = 0;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        if (!connected)
            snprintf(r->error, sizeof(r->error), "connect timeout after %lld ms", elapsed_ms);
        else if (received)
            snprintf(r->error, sizeof(r->error),
                     "timeout after %ld ms while receiving the answer (it came too slowly)",
                     f->timeout_ms);
        else if (elapsed_ms + 50 >= f->timeout_ms)
            snprintf(r->error, sizeof(r->error), "timeout after %ld ms", f->timeout_ms);
        else
            snprintf(r->error, sizeof(r->error), "timeout: no data for %lld ms", elapsed_ms);
        break;
    case CURLE_WRITE_ERROR:
        if (f->body_overflow)
            snprintf(r->error, sizeof(r->error), "response body exceeds %zu bytes", f->max_body);
        else if (f->body_nomem)
            snprintf(r->error, sizeof(r->error), "out of memory reading the answer");
        else
            snprintf(r->error, sizeof(r->error), "failed to store the answer");
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(r->error, sizeof(r->error), "could not resolve host");
        break;
    case CURLE_COULDNT_CONNECT:
        snprintf(r->error, sizeof(r->error), "could not connect: %s",
                 os_errno ? strerror((int)os_errno) : "connection failed");
        break;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        /* curl sets CURLINFO_OS_ERRNO for connects only; its message names the errno. */
        if (os_errno == ECONNRESET || strcasestr(errbuf, "reset") != NULL)
            snprintf(r->error, sizeof(r->error), "connection reset");
        else if (os_errno == EPIPE || strcasestr(errbuf, "broken pipe") != NULL)
            snprintf(r->error, sizeof(r->error), "connection closed while sending");
        else
            snprintf(r->error, sizeof(r->error), "connection lost while %s",
                     rc == CURLE_RECV_ERROR ? "receiving" : "sending");
        break;
    case CURLE_GOT_NOTHING:
        snprintf(r->error, sizeof(r->error), "connection closed without an answer");
        break;
    case CURLE_SEND_FAIL_REWIND:
        /* See build_mime: curl wanted to send the request a second time. */
        snprintf(r->error, sizeof(r->error),
                 "connection closed without an answer; not sent again (it may have been applied)");
        break;
    case CURLE_PARTIAL_FILE:
        snprintf(r->error, sizeof(r->error), "connection closed before the answer was complete");
        break;
    case CURLE_WEIRD_SERVER_REPLY:
        snprintf(r->error, sizeof(r->error), "malformed answer from server");
        break;
#if LIBCURL_VERSION_NUM >= 0x080600
    case CURLE_TOO_LARGE: /* what libcurl 8.6 and later say instead */
#endif
    case CURLE_OUT_OF_MEMORY: {
        /* libcurl before 8.6 reports a header line beyond CURL_MAX_HTTP_HEADER (100 kB) as out of
         * memory, with no message: an answer whose status line came but whose headers never
         * ended is that case (issue 17 item 9). */
        long status = f->status;

        if (strcasestr(errbuf, "header") != NULL || (received && downloaded == 0))
            snprintf(r->error, sizeof(r->error),
                     "response header too large (libcurl takes at most %d bytes a header)",
                     CURL_MAX_HTTP_HEADER);
        else if (status == 0 && connected)
            snprintf(r->error, sizeof(r->error),
                     "response header too large or out of memory while reading the answer");
        else
            snprintf(r->error, sizeof(r->error), "out of memory");
        break;
    }
    default: {
        /* curl's detail names hosts and TLS problems, never headers or bodies. */
        char detail[CURL_ERROR_SIZE];
        omnidesk_answer_printable(detail, sizeof(detail), errbuf, strlen(errbuf), 200);
        if (detail[0] != '\0')
            snprintf(r->error, sizeof(r->error), "%s: %s", curl_easy_strerror(rc), detail);
        else
            snprintf(r->error, sizeof(r->error), "%s", curl_easy_strerror(rc));
        break;
    }
    }
}
