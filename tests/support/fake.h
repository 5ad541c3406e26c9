/*
 * fake: the integration tests' handle on the fake Omnidesk (tests/fake-omnidesk).
 *
 * Starts the binary FAKE_OMNIDESK_BIN on 127.0.0.1 with port 0 and a port file in a private
 * temporary directory, talks to its control API (/_fake/...) and, for the fake's own tests, sends
 * raw API requests. Every function returns 0 or -1 (with a message on stderr that never carries
 * the API key) unless its comment says otherwise; nothing here calls Check's assertions, so the
 * helpers can run in fixtures and in forked children alike.
 */
#ifndef OMNISYNC_TEST_FAKE_H
#define OMNISYNC_TEST_FAKE_H

#include <stddef.h>
#include <sys/types.h>

struct json_object;

struct fake_omnidesk {
    pid_t pid;         /* the fake's process, 0 when not running */
    int port;          /* the port it listens on */
    char url[64];      /* "http://127.0.0.1:PORT", no trailing slash */
    char api_key[128]; /* the key given to fake_start */
    char dir[256];     /* private temporary directory (port file) */
};

/* Starts the fake with `api_key` (copied) and optional start-up settings `faults_json` (NULL for
   none), waits up to 10 s for its port file. On failure nothing is left running. */
int fake_start(struct fake_omnidesk *f, const char *api_key, const char *faults_json);

/* As fake_start, with extra command line arguments (NULL-terminated, may be NULL), e.g.
   (const char *[]){"--rate", "5", "--log-max", "100", NULL}. */
int fake_start_args(struct fake_omnidesk *f, const char *api_key, const char *faults_json,
                    const char *const *extra_args);

/* SIGTERM, waits up to 10 s (then SIGKILL), removes the directory. 0 only when the fake exited
   with status 0 (under ASan that also means no leak). */
int fake_stop(struct fake_omnidesk *f);

/* GET / POST (application/json body) on the control API; `path` like "/_fake/stats". *out
   receives the parsed answer, which the caller puts. -1 unless the status is 2xx and the body is
   JSON. */
int fake_get_json(struct fake_omnidesk *f, const char *path, struct json_object **out);
int fake_post_json(struct fake_omnidesk *f, const char *path, const char *body,
                   struct json_object **out);

/* POST /_fake/faults with a JSON object merged into the settings. */
int fake_set_faults(struct fake_omnidesk *f, const char *json);

/* POST /_fake/reset: no customers, empty log and counters, settings as at start. */
int fake_reset(struct fake_omnidesk *f);

/* One number from /_fake/stats; "by_endpoint.create" reaches into the nested object. -1 on
   error. */
long long fake_stat(struct fake_omnidesk *f, const char *name);

/* Waits until fake_stat(name) >= min, polling every 10 ms, for at most timeout_ms. */
int fake_wait_stat(struct fake_omnidesk *f, const char *name, long long min, long timeout_ms);

/* The customer (brand_id, external primary id) from /_fake/state as a new reference in *out
   (the caller puts it), or *out = NULL when absent. -1 only when the state cannot be read. */
int fake_find_customer(struct fake_omnidesk *f, long long brand_id, const char *primary_id,
                       struct json_object **out);

/* Number of customers in /_fake/state, -1 on error. */
long long fake_customer_count(struct fake_omnidesk *f);

/* ---- Raw requests, for the fake's own tests ---- */

enum fake_body {
    FAKE_BODY_NONE,       /* no body */
    FAKE_BODY_URLENCODED, /* `fields` as application/x-www-form-urlencoded */
    FAKE_BODY_MULTIPART,  /* `fields` as multipart/form-data (curl_mime) */
    FAKE_BODY_RAW,        /* `raw` as is, with `content_type` */
};

/* Pass as fake_request.api_key to send no apiKey header at all. */
#define FAKE_NO_KEY ((const char *)1)

struct fake_request {
    const char *method; /* "GET", "POST", "PUT", "DELETE" */
    const char *path;   /* "/api/v2/customer", may carry "?query" */
    enum fake_body body;
    const char *const *fields; /* name, value, name, value, ..., NULL */
    const char *raw;           /* FAKE_BODY_RAW */
    size_t raw_len;            /* 0: strlen(raw) */
    const char *content_type;  /* FAKE_BODY_RAW; NULL sends none */
    const char *api_key;       /* NULL: the fake's key; FAKE_NO_KEY: no header */
    long timeout_ms;           /* 0: 10 s */
};

struct fake_reply {
    int curl_code;        /* CURLcode: 0 when an HTTP answer arrived in full */
    char curl_error[256]; /* curl's message when curl_code != 0 */
    long status;          /* HTTP status, 0 when none arrived */
    char *body;           /* NUL-terminated, owned (fake_reply_free) */
    size_t body_len;
    char content_type[128];
    char retry_after[128];    /* the Retry-After header, "" when absent */
    double seconds;           /* total time of the exchange */
    struct json_object *json; /* the body parsed, or NULL when it is not JSON */
};

/* Sends one request to the fake. Returns 0 when curl ran (check reply->curl_code for transport
   errors such as resets and timeouts), -1 when the request could not be set up. The reply is
   always initialised; free it with fake_reply_free. */
int fake_send(struct fake_omnidesk *f, const struct fake_request *request,
              struct fake_reply *reply);

/* fake_send with the fake's key and a form body: e.g.
   fake_api(f, "POST", "/api/v2/customer", FAKE_BODY_MULTIPART,
            (const char *[]){"brand_id", "1", "primary_id", "C1", NULL}, &reply). */
int fake_api(struct fake_omnidesk *f, const char *method, const char *path, enum fake_body body,
             const char *const *fields, struct fake_reply *reply);

/* The "message" of a JSON error reply, or "" when there is none. */
const char *fake_reply_message(const struct fake_reply *reply);

void fake_reply_free(struct fake_reply *reply);

#endif
