/*
 * fuzz_body: the request bodies omnisync builds (lib/omnidesk.c's build_form and build_mime,
 * compiled into this target unchanged) never let a value change the request's structure.
 *
 * Input: byte 0 picks the body (urlencoded, multipart, multipart sent at most once);
 * the rest is split at NUL bytes into up to 8 field values (a value may hold CR, LF, '&', '=',
 * '%', '+', quotes, "--" and anything else). The body is then decoded the way a server would
 * and every field must come back with its own name and exactly its own value, in order:
 *  - urlencoded: split at '&' and the first '=', percent-decoded;
 *  - multipart: libcurl sends the real request to a small server thread on loopback, which keeps
 *    the bytes; the boundary is taken from Content-Type and the parts split on it.
 */
#include "../../lib/omnidesk.c"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_FIELDS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const field_names[FUZZ_FIELDS] = {
    "brand_id",    "primary_id",      "firstname",   "lastname",
    "extra_email", "extra_telephone", "custom_tier", "externalPrimaryID"};

struct decoded {
    char *name[FUZZ_FIELDS];
    char *value[FUZZ_FIELDS];
    size_t value_len[FUZZ_FIELDS];
    size_t n;
};

static void decoded_free(struct decoded *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->name[i]);
        free(d->value[i]);
    }
    d->n = 0;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+len) into a new buffer; the body must hold nothing but unreserved
 * characters and %XX escapes (curl_easy_escape's output), else the structure is broken. */
static char *url_decode(const char *s, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0)
                abort();
            out[o++] = (char)(hex(s[i + 1]) << 4 | hex(s[i + 2]));
            i += 2;
        } else if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~",
                          s[i]) != NULL &&
                   s[i] != '\0') {
            out[o++] = s[i];
        } else {
            abort(); /* '&', '=', '+', space, CR, LF... raw in a value: structure broken */
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static void decode_form(const char *form, struct decoded *d)
{
    const char *p = form;

    if (*p == '\0')
        return;
    for (;;) {
        const char *amp = strchr(p, '&');
        size_t len = amp != NULL ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t ignored;

        if (eq == NULL || d->n == FUZZ_FIELDS)
            abort();
        d->name[d->n] = url_decode(p, (size_t)(eq - p), &ignored);
        d->value[d->n] = url_decode(eq + 1, len - (size_t)(eq - p) - 1, &d->value_len[d->n]);
        d->n++;
        if (amp == NULL)
            return;
        p = amp + 1;
    }
}

/* ---- multipart through a real libcurl request ---------------------------------------------- */

/* A one-connection-at-a-time HTTP server on loopback, in a thread: it reads one request (headers,
 * then Content-Length bytes), keeps it in `wire`, answers 200 and closes. */
static int listen_fd = -1;
static int listen_port;
static pthread_mutex_t wire_lock = PTHREAD_MUTEX_INITIALIZER;
static char *wire;
static size_t wire_len;

static void *serve(void *arg)
{
    static const char answer[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    (void)arg;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        size_t cap = 65536, n = 0;
        char *buf;

        if (fd < 0)
            continue;
        buf = malloc(cap + 1);
        for (;;) {
            ssize_t got = read(fd, buf + n, cap - n);
            const char *end;

            if (got <= 0)
                break;
            n += (size_t)got;
            if (n == cap) {
                cap *= 2;
                buf = realloc(buf, cap + 1);
            }
            buf[n] = '\0';
            end = memmem(buf, n, "\r\n\r\n", 4);
            if (end != NULL) {
                const char *cl = memmem(buf, (size_t)(end - buf), "Content-Length: ", 16);
                size_t body = cl != NULL ? (size_t)strtoull(cl + 16, NULL, 10) : 0;
                if (n >= (size_t)(end - buf) + 4 + body)
                    break;
            }
        }
        buf[n] = '\0';
        pthread_mutex_lock(&wire_lock);
        free(wire);
        wire = buf;
        wire_len = n;
        pthread_mutex_unlock(&wire_lock);
        if (write(fd, answer, sizeof(answer) - 1) < 0)
            abort();
        close(fd);
    }
    return NULL;
}

static void start_server(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    pthread_t thread;

    if (listen_fd >= 0)
        return;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(listen_fd, 16) != 0 || getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0)
        abort();
    listen_port = ntohs(addr.sin_port);
    if (pthread_create(&thread, NULL, serve, NULL) != 0)
        abort();
    pthread_detach(thread);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *arg)
{
    (void)ptr;
    (void)arg;
    return size * nmemb;
}

/* Takes what the server thread read: the whole request. */
static char *read_request(size_t *len)
{
    char *buf;

    pthread_mutex_lock(&wire_lock);
    buf = wire;
    *len = wire_len;
    wire = NULL;
    pthread_mutex_unlock(&wire_lock);
    if (buf == NULL)
        abort();
    return buf;
}

static const char *find(const char *hay, size_t hay_len, const char *needle, size_t needle_len)
{
    return memmem(hay, hay_len, needle, needle_len);
}

static void decode_multipart(const char *req, size_t len, struct decoded *d)
{
    const char *end_headers = find(req, len, "\r\n\r\n", 4);
    const char *ct, *b, *body, *p, *stop;
    char boundary[128], delim[140];
    size_t blen, dlen;
    unsigned long long content_length;
    const char *cl;

    if (end_headers == NULL)
        abort();
    ct = find(req, (size_t)(end_headers - req), "Content-Type: multipart/form-data; boundary=", 44);
    if (ct == NULL)
        abort();
    b = ct + 44;
    blen = strcspn(b, "\r");
    if (blen == 0 || blen >= sizeof(boundary))
        abort();
    memcpy(boundary, b, blen);
    boundary[blen] = '\0';
    cl = find(req, (size_t)(end_headers - req), "Content-Length: ", 16);
    if (cl == NULL)
        abort();
    content_length = strtoull(cl + 16, NULL, 10);
    body = end_headers + 4;
    if ((size_t)(req + len - body) != content_length)
        abort();
    stop = req + len;

    /* The body: "--B\r\n" part ("\r\n--B\r\n" part)* "\r\n--B--\r\n". */
    dlen = (size_t)snprintf(delim, sizeof(delim), "--%s", boundary);
    if ((size_t)(stop - body) < dlen + 2 || memcmp(body, delim, dlen) != 0)
        abort();
    p = body + dlen;
    if (stop - p >= 4 && memcmp(p, "--\r\n", 4) == 0 && p + 4 == stop)
        return; /* no parts */
    dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
    for (;;) {
        const char *hdr_end, *next, *name;
        size_t name_len;

        if (stop - p < 2 || memcmp(p, "\r\n", 2) != 0)
            abort();
        p += 2;
        hdr_end = find(p, (size_t)(stop - p), "\r\n\r\n", 4);
        if (hdr_end == NULL || d->n == FUZZ_FIELDS)
            abort();
        name = find(p, (size_t)(hdr_end - p), "Content-Disposition: form-data; name=\"", 38);
        if (name == NULL)
            abort();
        name += 38;
        name_len = strcspn(name, "\"");
        d->name[d->n] = strndup(name, name_len);
        next = find(hdr_end + 4, (size_t)(stop - hdr_end - 4), delim, dlen);
        if (next == NULL)
            abort();
        d->value_len[d->n] = (size_t)(next - hdr_end - 4);
        d->value[d->n] = malloc(d->value_len[d->n] + 1);
        memcpy(d->value[d->n], hdr_end + 4, d->value_len[d->n]);
        d->value[d->n][d->value_len[d->n]] = '\0';
        d->n++;
        p = next + dlen;
        if (stop - p == 4 && memcmp(p, "--\r\n", 4) == 0)
            return;
    }
}

static void send_multipart(const struct omnidesk_field *fields, size_t nfields, int once,
                           struct decoded *d)
{
    static struct omnidesk client; /* build_mime takes the boundary sequence from it */
    struct omnidesk_request req;
    char *request, url[64];
    size_t request_len;
    CURLcode rc;

    memset(&req, 0, sizeof(req));
    req.client = &client;
    req.easy = curl_easy_init();
    req.headers = omnidesk_request_headers_new("fuzz-key", 8); /* apiKey, Accept, Expect: */
    if (req.easy == NULL || req.headers == NULL || build_mime(&req, fields, nfields, once) != 0)
        abort();
    start_server();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v2/customer", listen_port);
    curl_easy_setopt(req.easy, CURLOPT_URL, url);
    curl_easy_setopt(req.easy, CURLOPT_HTTPHEADER, request_headers(&req));
    curl_easy_setopt(req.easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(req.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(req.easy, CURLOPT_VERBOSE, getenv("FUZZ_VERBOSE") ? 1L : 0L);
    curl_easy_setopt(req.easy, CURLOPT_TIMEOUT_MS, 5000L);
    rc = curl_easy_perform(req.easy);
    if (rc != CURLE_OK) {
        fprintf(stderr, "curl: %s\n", curl_easy_strerror(rc));
        abort();
    }
    request = read_request(&request_len);
    decode_multipart(request, request_len, d);
    free(request);
    curl_easy_cleanup(req.easy);
    omnidesk_request_headers_unref(req.headers);
    free(req.post);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct omnidesk_field fields[FUZZ_FIELDS];
    char *copy;
    size_t nfields = 0, kept = 0;
    struct decoded d;
    int kind;

    if (size < 1 || size > 16384)
        return 0;
    kind = data[0] % 3;
    copy = malloc(size);
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    /* Values are the NUL-separated pieces; an empty piece stands for "omit" (NULL). */
    for (char *p = copy; nfields < FUZZ_FIELDS && p < copy + size;) {
        size_t len = strlen(p);
        fields[nfields].name = field_names[nfields];
        fields[nfields].value = len > 0 ? p : NULL;
        nfields++;
        p += len + 1;
    }
    memset(&d, 0, sizeof(d));
    if (kind == 0) {
        CURL *easy = curl_easy_init();
        char *form = build_form(fields, nfields, easy);
        if (form == NULL)
            abort();
        decode_form(form, &d);
        free(form);
        curl_easy_cleanup(easy);
    } else {
        send_multipart(fields, nfields, kind == 2, &d);
    }
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].value == NULL)
            continue;
        if (kept >= d.n || strcmp(d.name[kept], fields[i].name) != 0 ||
            d.value_len[kept] != strlen(fields[i].value) ||
            memcmp(d.value[kept], fields[i].value, d.value_len[kept]) != 0) {
            fprintf(stderr, "field %zu (%s) did not come back intact\n", i, fields[i].name);
            abort();
        }
        kept++;
    }
    if (kept != d.n)
        abort();
    decoded_free(&d);
    free(copy);
    return 0;
}
