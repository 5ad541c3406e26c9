/*
 * fuzz_answer: an HTTP answer of the API, as the fuzzer writes it, through the client's own
 * header, body and classification code (lib/omnidesk.c is compiled into this target so its
 * static functions run unchanged: on_header, on_body with the body cap, parse_retry_after,
 * parse_json, search_id and classify_status).
 *
 * Input: byte 0-1 the status (mod 600), byte 2 the endpoint, then header lines up to an empty
 * line ("\n\n"), then the body, fed in chunks of at most 257 bytes.
 *
 * Properties: a 2xx whose body is an error body (below) is a permanent failure for every endpoint
 * and its error says "answered <status> with an error body"; any other answer's class follows
 * DESIGN §3 from the status alone, except search's 2xx (found, not found or malformed); the
 * error text is NUL-terminated, valid UTF-8 without control characters (it is stored as text and
 * shown to operators); a search OK carries an id > 0 and its customer object; Retry-After is -1
 * or within a day; the body kept never exceeds the cap.
 */
#include "../../lib/omnidesk.c"

#include "utf8.h"

#define FUZZ_MAX_BODY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void feed_headers(struct omnidesk_request *req, const char *p, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t n = nl != NULL ? (size_t)(nl - p) + 1 : len;
        char line[1024];
        size_t copy = n < sizeof(line) - 3 ? n : sizeof(line) - 3;

        /* curl hands over whole lines with their CRLF. */
        memcpy(line, p, copy);
        if (copy == 0 || line[copy - 1] != '\n') {
            line[copy++] = '\r';
            line[copy++] = '\n';
        }
        if (on_header(line, 1, copy, req) != copy)
            abort();
        p += n;
        len -= n;
    }
}

/*
 * The oracle's own statement of an error body, from the contract and not from the classifier:
 * DESIGN §2 assumes error bodies are JSON `{"type":"error","message":"..."}`, and issue 17 item 7
 * makes a body whose `type` is `error` a failure whatever the status. JSON is what the packaged
 * parser reads (json-c, nested at most OMNIDESK_JSON_MAX_DEPTH deep, the documented limit of an
 * Omnidesk answer), the whole body with only RFC 8259 whitespace after it; the body must be an
 * object whose "type" is a string of exactly the five bytes `error` ("error\u0000x" is not).
 */
static int expected_error_body(const char *body, size_t len)
{
    json_tokener *tok;
    json_object *root, *type;
    int is_error = 0;

    if (body == NULL || len == 0)
        return 0;
    tok = json_tokener_new_ex(OMNIDESK_JSON_MAX_DEPTH);
    if (tok == NULL)
        abort();
    root = json_tokener_parse_ex(tok, body, (int)len);
    if (root != NULL && json_tokener_get_error(tok) == json_tokener_success) {
        size_t end = json_tokener_get_parse_end(tok);
        while (end < len && strchr(" \t\r\n", body[end]) != NULL && body[end] != '\0')
            end++;
        is_error = end == len && json_object_is_type(root, json_type_object) &&
                   json_object_object_get_ex(root, "type", &type) &&
                   json_object_is_type(type, json_type_string) &&
                   json_object_get_string_len(type) == 5 &&
                   memcmp(json_object_get_string(type), "error", 5) == 0;
    }
    json_object_put(root);
    json_tokener_free(tok);
    return is_error;
}

/* DESIGN §3 from the status alone (2xx: success). */
static enum omnidesk_class expected_class(long status)
{
    if (status >= 200 && status <= 299)
        return OMNIDESK_OK;
    if (status == 401 || status == 403)
        return OMNIDESK_AUTH;
    if (status == 404)
        return OMNIDESK_NOT_FOUND;
    if (status >= 400 && status <= 499 && status != 408 && status != 425 && status != 429)
        return OMNIDESK_PERMANENT;
    return OMNIDESK_TRANSIENT;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct omnidesk_request req;
    struct omnidesk_response r;
    const char *in = (const char *)data;
    const char *split;
    size_t hlen, off;

    if (size < 3)
        return 0;
    memset(&req, 0, sizeof(req));
    memset(&r, 0, sizeof(r));
    req.max_body = FUZZ_MAX_BODY;
    req.endpoint = (enum omnidesk_endpoint)(data[2] % (OMNIDESK_PROBE + 1));
    r.endpoint = req.endpoint;
    r.http_status = (long)(((unsigned)data[0] << 8 | data[1]) % 600);
    r.retry_after_ms = -1;
    in += 3;
    size -= 3;

    split = memmem(in, size, "\n\n", 2);
    hlen = split != NULL ? (size_t)(split - in) + 1 : 0;
    feed_headers(&req, in, hlen);
    off = split != NULL ? hlen + 1 : 0;
    while (off < size && !req.body_overflow) {
        size_t n = size - off < 257 ? size - off : 257;
        size_t took = on_body((char *)in + off, 1, n, &req);
        if (took != n && !req.body_overflow)
            abort();
        off += n;
    }
    if (req.body_len > FUZZ_MAX_BODY || (req.body != NULL && req.body[req.body_len] != '\0'))
        abort();

    /* The cap is the client's max_retry_after (default 5 minutes). */
    struct omnidesk capped = {.max_retry_after_ms = 300000};
    r.retry_after_ms = -1;
    if (req.retry_after[0] != '\0')
        parse_retry_after(&capped, req.retry_after, &r);
    if (r.retry_after_ms < -1 || r.retry_after_ms > 300000)
        abort();
    classify_status(&req, &r);

    if (memchr(r.error, '\0', sizeof(r.error)) == NULL)
        abort();
    if (!fuzz_utf8_valid((const unsigned char *)r.error, strlen(r.error)))
        abort();
    for (const char *p = r.error; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            abort();
    if (r.http_status >= 200 && r.http_status <= 299 &&
        expected_error_body(req.body, req.body_len)) {
        char said[64];
        snprintf(said, sizeof(said), "answered %ld with an error body", r.http_status);
        if (r.class != OMNIDESK_PERMANENT || strncmp(r.error, said, strlen(said)) != 0 ||
            r.customer_id != 0 || r.customer != NULL)
            abort();
    } else if (req.endpoint == OMNIDESK_SEARCH && r.http_status >= 200 && r.http_status <= 299) {
        if (r.class == OMNIDESK_OK && (r.customer_id <= 0 || r.customer == NULL))
            abort();
        if (r.class != OMNIDESK_OK && (r.customer_id != 0 || r.customer != NULL))
            abort();
        if (r.class == OMNIDESK_PERMANENT || r.class == OMNIDESK_AUTH)
            abort();
    } else if (r.class != expected_class(r.http_status)) {
        abort();
    }
    if (r.customer_id < 0)
        abort();
    if (r.class != OMNIDESK_OK && r.error[0] == '\0')
        abort();
    json_object_put(r.customer);
    free(req.body);
    return 0;
}
