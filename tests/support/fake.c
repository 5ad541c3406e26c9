/*
 * fake: start, stop and talk to the fake Omnidesk from tests (see fake.h).
 *
 * Waiting is always for a condition with a deadline (the port file, the process exit, a stat),
 * polled every 10 ms: a slow machine makes a test slower, never flaky.
 */
#include "fake.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAKE_DEADLINE_MS 10000
#define FAKE_POLL_MS 10
#define FAKE_MAX_ARGS 64
/* Replies are read into memory; the request log of a long test can be large, not unbounded. */
#define FAKE_REPLY_MAX (256u * 1024u * 1024u)

extern char **environ;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void port_file_path(const struct fake_omnidesk *f, char *out, size_t size)
{
    snprintf(out, size, "%s/port", f->dir);
}

static void remove_dir(struct fake_omnidesk *f)
{
    char path[320];

    if (f->dir[0] == '\0')
        return;
    port_file_path(f, path, sizeof(path));
    unlink(path);
    rmdir(f->dir);
    f->dir[0] = '\0';
}

/* The port, once the fake wrote its port file (atomically, so a partial read cannot happen). */
static int read_port(const struct fake_omnidesk *f)
{
    char path[320];
    FILE *file;
    int port = 0;

    port_file_path(f, path, sizeof(path));
    file = fopen(path, "r");
    if (file == NULL)
        return 0;
    if (fscanf(file, "%d", &port) != 1)
        port = 0;
    fclose(file);
    return port;
}

/* Waits for `pid` to exit for at most `timeout_ms`; 0 with *status, or -1 on timeout. */
static int wait_exit(pid_t pid, long timeout_ms, int *status)
{
    long long deadline = now_ms() + timeout_ms;

    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);

        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(FAKE_POLL_MS);
    }
}

int fake_start_args(struct fake_omnidesk *f, const char *api_key, const char *faults_json,
                    const char *const *extra_args)
{
    const char *tmpdir = getenv("TMPDIR");
    char port_file[320];
    const char *argv[FAKE_MAX_ARGS];
    size_t argc = 0;
    long long deadline;
    int status;
    int rc;

    memset(f, 0, sizeof(*f));
    if (api_key == NULL || strlen(api_key) >= sizeof(f->api_key)) {
        fprintf(stderr, "fake_start: the API key is missing or too long\n");
        return -1;
    }
    snprintf(f->api_key, sizeof(f->api_key), "%s", api_key);
    snprintf(f->dir, sizeof(f->dir), "%s/fake-omnidesk-XXXXXX",
             (tmpdir && tmpdir[0]) ? tmpdir : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        fprintf(stderr, "fake_start: mkdtemp: %s\n", strerror(errno));
        f->dir[0] = '\0';
        return -1;
    }
    port_file_path(f, port_file, sizeof(port_file));
    argv[argc++] = FAKE_OMNIDESK_BIN;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--api-key";
    argv[argc++] = f->api_key;
    argv[argc++] = "--port-file";
    argv[argc++] = port_file;
    if (faults_json != NULL) {
        argv[argc++] = "--faults";
        argv[argc++] = faults_json;
    }
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        if (argc + 2 > FAKE_MAX_ARGS) {
            fprintf(stderr, "fake_start: too many arguments\n");
            goto fail;
        }
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;

    rc = posix_spawn(&f->pid, FAKE_OMNIDESK_BIN, NULL, NULL, (char *const *)argv, environ);
    if (rc != 0) {
        fprintf(stderr, "fake_start: cannot run %s: %s\n", FAKE_OMNIDESK_BIN, strerror(rc));
        f->pid = 0;
        goto fail;
    }
    deadline = now_ms() + FAKE_DEADLINE_MS;
    while ((f->port = read_port(f)) <= 0) {
        if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
            fprintf(stderr, "fake_start: the fake exited before listening (%s %d)\n",
                    WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            f->pid = 0;
            goto fail;
        }
        if (now_ms() >= deadline) {
            fprintf(stderr, "fake_start: no port file after %d ms\n", FAKE_DEADLINE_MS);
            goto fail;
        }
        sleep_ms(FAKE_POLL_MS);
    }
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
    return 0;
fail:
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &status, 0);
        f->pid = 0;
    }
    remove_dir(f);
    return -1;
}

int fake_start(struct fake_omnidesk *f, const char *api_key, const char *faults_json)
{
    return fake_start_args(f, api_key, faults_json, NULL);
}

int fake_stop(struct fake_omnidesk *f)
{
    int status = 0;
    int rc = 0;

    if (f->pid <= 0) {
        fprintf(stderr, "fake_stop: the fake is not running\n");
        remove_dir(f);
        return -1;
    }
    kill(f->pid, SIGTERM);
    if (wait_exit(f->pid, FAKE_DEADLINE_MS, &status) != 0) {
        fprintf(stderr, "fake_stop: the fake did not exit within %d ms; killing it\n",
                FAKE_DEADLINE_MS);
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &status, 0);
        rc = -1;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFSIGNALED(status))
            fprintf(stderr, "fake_stop: the fake died of signal %d\n", WTERMSIG(status));
        else
            fprintf(stderr, "fake_stop: the fake exited with status %d\n", WEXITSTATUS(status));
        rc = -1;
    }
    f->pid = 0;
    remove_dir(f);
    return rc;
}

struct reply_buffer {
    struct fake_reply *reply;
    size_t cap;
    bool overflow;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct reply_buffer *buf = userdata;
    struct fake_reply *reply = buf->reply;
    size_t n = size * nmemb;

    if (reply->body_len + n + 1 > FAKE_REPLY_MAX) {
        buf->overflow = true;
        return 0;
    }
    if (reply->body_len + n + 1 > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 4096;
        char *body;

        while (cap < reply->body_len + n + 1)
            cap *= 2;
        body = realloc(reply->body, cap);
        if (body == NULL)
            return 0;
        reply->body = body;
        buf->cap = cap;
    }
    memcpy(reply->body + reply->body_len, data, n);
    reply->body_len += n;
    reply->body[reply->body_len] = '\0';
    return n;
}

/* Copies the value of header `name` from one header line, if it is that header. */
static void take_header(const char *line, size_t len, const char *name, char *out, size_t size)
{
    size_t name_len = strlen(name);
    size_t start;
    size_t end = len;

    if (len <= name_len || strncasecmp(line, name, name_len) != 0 || line[name_len] != ':')
        return;
    start = name_len + 1;
    while (start < len && (line[start] == ' ' || line[start] == '\t'))
        start++;
    while (end > start && (line[end - 1] == '\r' || line[end - 1] == '\n' || line[end - 1] == ' '))
        end--;
    if (end - start >= size)
        end = start + size - 1;
    memcpy(out, line + start, end - start);
    out[end - start] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct fake_reply *reply = userdata;
    size_t n = size * nmemb;

    take_header(data, n, "Content-Type", reply->content_type, sizeof(reply->content_type));
    take_header(data, n, "Retry-After", reply->retry_after, sizeof(reply->retry_after));
    return n;
}

/* name=value&... with both sides percent-encoded; malloc'd, or NULL. */
static char *urlencode_fields(CURL *curl, const char *const *fields)
{
    size_t cap = 256;
    size_t len = 0;
    char *out = malloc(cap);

    if (out == NULL)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; fields != NULL && fields[i] != NULL && fields[i + 1] != NULL; i += 2) {
        char *name = curl_easy_escape(curl, fields[i], 0);
        char *value = curl_easy_escape(curl, fields[i + 1], 0);
        size_t need;

        if (name == NULL || value == NULL) {
            curl_free(name);
            curl_free(value);
            free(out);
            return NULL;
        }
        need = len + strlen(name) + strlen(value) + 3;
        if (need > cap) {
            char *bigger;

            while (cap < need)
                cap *= 2;
            bigger = realloc(out, cap);
            if (bigger == NULL) {
                curl_free(name);
                curl_free(value);
                free(out);
                return NULL;
            }
            out = bigger;
        }
        len += (size_t)sprintf(out + len, "%s%s=%s", len ? "&" : "", name, value);
        curl_free(name);
        curl_free(value);
    }
    return out;
}

int fake_send(struct fake_omnidesk *f, const struct fake_request *request, struct fake_reply *reply)
{
    CURL *curl = NULL;
    struct curl_slist *headers = NULL;
    struct curl_slist *more;
    curl_mime *mime = NULL;
    char *form = NULL;
    char *url = NULL;
    char header[256];
    struct reply_buffer buf = {.reply = reply};
    struct json_tokener *tok;
    const char *method = request->method ? request->method : "GET";
    size_t url_len;
    int rc = -1;

    memset(reply, 0, sizeof(*reply));
    curl = curl_easy_init();
    url_len = strlen(f->url) + strlen(request->path) + 1;
    url = malloc(url_len);
    if (curl == NULL || url == NULL)
        goto fail;
    snprintf(url, url_len, "%s%s", f->url, request->path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     request->timeout_ms > 0 ? request->timeout_ms : (long)FAKE_DEADLINE_MS);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, reply);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, reply->curl_error);

    /* No "Expect: 100-continue" round trip: it only slows tests down. */
    if ((more = curl_slist_append(headers, "Expect:")) == NULL)
        goto fail;
    headers = more;
    if (request->api_key != FAKE_NO_KEY) {
        snprintf(header, sizeof(header), "apiKey: %s",
                 request->api_key ? request->api_key : f->api_key);
        if ((more = curl_slist_append(headers, header)) == NULL)
            goto fail;
        headers = more;
    }
    switch (request->body) {
    case FAKE_BODY_NONE:
        if (strcmp(method, "POST") == 0) {
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
        }
        break;
    case FAKE_BODY_URLENCODED:
        form = urlencode_fields(curl, request->fields);
        if (form == NULL)
            goto fail;
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, form);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(form));
        if ((more = curl_slist_append(headers,
                                      "Content-Type: application/x-www-form-urlencoded")) == NULL)
            goto fail;
        headers = more;
        break;
    case FAKE_BODY_MULTIPART:
        mime = curl_mime_init(curl);
        if (mime == NULL)
            goto fail;
        for (size_t i = 0; request->fields && request->fields[i] && request->fields[i + 1];
             i += 2) {
            curl_mimepart *part = curl_mime_addpart(mime);

            if (part == NULL)
                goto fail;
            curl_mime_name(part, request->fields[i]);
            curl_mime_data(part, request->fields[i + 1], CURL_ZERO_TERMINATED);
        }
        curl_easy_setopt(curl, CURLOPT_MIMEPOST, mime);
        break;
    case FAKE_BODY_RAW:
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request->raw ? request->raw : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                         (long)(request->raw_len ? request->raw_len
                                                 : (request->raw ? strlen(request->raw) : 0)));
        if (request->content_type)
            snprintf(header, sizeof(header), "Content-Type: %s", request->content_type);
        else
            snprintf(header, sizeof(header), "Content-Type:");
        if ((more = curl_slist_append(headers, header)) == NULL)
            goto fail;
        headers = more;
        break;
    }
    if (strcmp(method, "GET") == 0 && request->body == FAKE_BODY_NONE)
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

    reply->curl_code = (int)curl_easy_perform(curl);
    if (buf.overflow)
        fprintf(stderr, "fake_send: reply larger than %u bytes\n", FAKE_REPLY_MAX);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
    curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &reply->seconds);
    if (reply->body == NULL) {
        reply->body = calloc(1, 1);
        if (reply->body == NULL)
            goto fail;
    }
    tok = json_tokener_new();
    if (tok != NULL && reply->body_len > 0) {
        reply->json = json_tokener_parse_ex(tok, reply->body, (int)reply->body_len);
        if (reply->json != NULL && (size_t)tok->char_offset != reply->body_len) {
            json_object_put(reply->json);
            reply->json = NULL;
        }
    }
    json_tokener_free(tok);
    rc = 0;
fail:
    if (rc != 0)
        fprintf(stderr, "fake_send: cannot set up %s %s\n", method, request->path);
    curl_mime_free(mime);
    curl_slist_free_all(headers);
    if (curl != NULL)
        curl_easy_cleanup(curl);
    free(form);
    free(url);
    return rc;
}

int fake_api(struct fake_omnidesk *f, const char *method, const char *path, enum fake_body body,
             const char *const *fields, struct fake_reply *reply)
{
    struct fake_request request = {.method = method, .path = path, .body = body, .fields = fields};

    return fake_send(f, &request, reply);
}

const char *fake_reply_message(const struct fake_reply *reply)
{
    struct json_object *message;

    if (reply->json == NULL || !json_object_object_get_ex(reply->json, "message", &message))
        return "";
    return json_object_get_string(message);
}

void fake_reply_free(struct fake_reply *reply)
{
    free(reply->body);
    json_object_put(reply->json);
    memset(reply, 0, sizeof(*reply));
}

static int control(struct fake_omnidesk *f, const char *method, const char *path, const char *body,
                   struct json_object **out)
{
    struct fake_request request = {.method = method,
                                   .path = path,
                                   .body = body ? FAKE_BODY_RAW : FAKE_BODY_NONE,
                                   .raw = body,
                                   .content_type = "application/json",
                                   .api_key = FAKE_NO_KEY};
    struct fake_reply reply;

    if (out != NULL)
        *out = NULL;
    if (fake_send(f, &request, &reply) != 0)
        return -1;
    if (reply.curl_code != 0 || reply.status < 200 || reply.status > 299 || reply.json == NULL) {
        fprintf(stderr, "fake: %s %s failed: curl %d (%s), status %ld, body %.200s\n", method, path,
                reply.curl_code, reply.curl_error, reply.status, reply.body);
        fake_reply_free(&reply);
        return -1;
    }
    if (out != NULL) {
        *out = reply.json;
        reply.json = NULL;
    }
    fake_reply_free(&reply);
    return 0;
}

int fake_get_json(struct fake_omnidesk *f, const char *path, struct json_object **out)
{
    return control(f, "GET", path, NULL, out);
}

int fake_post_json(struct fake_omnidesk *f, const char *path, const char *body,
                   struct json_object **out)
{
    return control(f, "POST", path, body ? body : "{}", out);
}

int fake_set_faults(struct fake_omnidesk *f, const char *json)
{
    return fake_post_json(f, "/_fake/faults", json, NULL);
}

int fake_reset(struct fake_omnidesk *f)
{
    return fake_post_json(f, "/_fake/reset", "{}", NULL);
}

long long fake_stat(struct fake_omnidesk *f, const char *name)
{
    struct json_object *stats = NULL;
    struct json_object *node;
    char key[128];
    const char *dot = strchr(name, '.');
    long long value = -1;

    if (fake_get_json(f, "/_fake/stats", &stats) != 0)
        return -1;
    node = stats;
    if (dot != NULL) {
        snprintf(key, sizeof(key), "%.*s", (int)(dot - name), name);
        if (!json_object_object_get_ex(node, key, &node))
            goto out;
        name = dot + 1;
    }
    if (json_object_object_get_ex(node, name, &node) && json_object_is_type(node, json_type_int))
        value = json_object_get_int64(node);
    else
        fprintf(stderr, "fake_stat: no number %s in /_fake/stats\n", name);
out:
    json_object_put(stats);
    return value;
}

int fake_wait_stat(struct fake_omnidesk *f, const char *name, long long min, long timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    long long value;

    for (;;) {
        value = fake_stat(f, name);
        if (value >= min)
            return 0;
        if (now_ms() >= deadline) {
            fprintf(stderr, "fake_wait_stat: %s is %lld, wanted >= %lld within %ld ms\n", name,
                    value, min, timeout_ms);
            return -1;
        }
        sleep_ms(FAKE_POLL_MS);
    }
}

int fake_find_customer(struct fake_omnidesk *f, long long brand_id, const char *primary_id,
                       struct json_object **out)
{
    struct json_object *state = NULL;
    struct json_object *customers;
    size_t n;

    *out = NULL;
    if (fake_get_json(f, "/_fake/state", &state) != 0)
        return -1;
    if (!json_object_object_get_ex(state, "customers", &customers)) {
        json_object_put(state);
        return -1;
    }
    n = json_object_array_length(customers);
    for (size_t i = 0; i < n; i++) {
        struct json_object *c = json_object_array_get_idx(customers, i);
        struct json_object *brand;
        struct json_object *ext;

        if (json_object_object_get_ex(c, "brand_id", &brand) &&
            json_object_object_get_ex(c, "external_primary_id", &ext) &&
            json_object_get_int64(brand) == brand_id &&
            strcmp(json_object_get_string(ext), primary_id) == 0) {
            *out = json_object_get(c);
            break;
        }
    }
    json_object_put(state);
    return 0;
}

long long fake_customer_count(struct fake_omnidesk *f)
{
    struct json_object *state = NULL;
    struct json_object *customers;
    long long n = -1;

    if (fake_get_json(f, "/_fake/state", &state) != 0)
        return -1;
    if (json_object_object_get_ex(state, "customers", &customers))
        n = (long long)json_object_array_length(customers);
    json_object_put(state);
    return n;
}
