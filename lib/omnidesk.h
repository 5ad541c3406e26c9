/*
 * omnidesk: the HTTP client for Omnidesk's customer API.
 *
 * It owns one libcurl multi handle driven by the caller's libuv loop (curl_multi_socket_action
 * with one uv_poll per socket and one uv_timer, the pattern of curl's docs/examples/multi-uv.c),
 * so connections are kept alive and reused and up to `max_in_flight` requests run at once in one
 * thread. It sends exactly one request per omnidesk_send() and reports exactly one outcome,
 * already classified (ok / transient / permanent / auth / not found, DESIGN §3). Deciding what to
 * send, when to retry and what to record is the engine's business, not this module's.
 *
 * It never logs or reports the API key, and never logs field values (names, emails and phones
 * are personal data): log lines carry the endpoint, the status and the duration only.
 *
 * curl_global_init(CURL_GLOBAL_DEFAULT) is the program's job, once, at start-up before any other
 * thread exists; omnidesk_init() does not call it.
 */
#ifndef OMNISYNC_OMNIDESK_H
#define OMNISYNC_OMNIDESK_H

#include <stddef.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <uv.h>

#include "errors.h"
#include "queue.h"

enum omnidesk_endpoint {
    OMNIDESK_CREATE,       /* POST   /api/v2/customer                          multipart */
    OMNIDESK_UPDATE,       /* PUT    /api/v2/customer/updateCustomer           urlencoded */
    OMNIDESK_ADD_CHANNEL,  /* POST   /api/v2/customer/addChannelOnly           multipart */
    OMNIDESK_PURGE,        /* DELETE /api/v2/customer/purgeData/{id}           no body */
    OMNIDESK_PURGE_LEGACY, /* DELETE /api/v2/customer/purgedata                urlencoded */
    OMNIDESK_SEARCH,       /* POST   /api/v2/customer/SearchByPrimaryExternalID multipart */
    OMNIDESK_PROBE         /* GET    /api/v2/customer?itemStart=0&itemLimit=1  read-only */
};

/* "create", "updateCustomer", "addChannelOnly", "purgeData", "purgedata", "search", "probe":
 * stable, used as a metrics label. Never NULL. */
const char *omnidesk_endpoint_name(enum omnidesk_endpoint e);

/* DESIGN §3: transport errors, timeouts, 408, 425, 429 and 5xx are transient; 401/403 auth; 404
 * not found; other 4xx permanent; 2xx ok. A 2xx whose body is not JSON is still OK, except for
 * search, where a 2xx without a usable id is TRANSIENT ("unparseable answer") unless it is an
 * explicitly empty result (`"items":[]`, `"customer":null`, `[]`), which is NOT_FOUND. A status
 * the API never documents (1xx, 3xx: redirects are not followed) is TRANSIENT, so a misconfigured
 * base_url opens the circuit instead of failing rows. */
enum omnidesk_class {
    OMNIDESK_OK,
    OMNIDESK_TRANSIENT,
    OMNIDESK_PERMANENT,
    OMNIDESK_AUTH,
    OMNIDESK_NOT_FOUND
};

/* "ok", "transient", "permanent", "auth", "not_found". Never NULL. */
const char *omnidesk_class_name(enum omnidesk_class cls);

struct omnidesk_options {
    const char *base_url;    /* copied; http:// or https://, trailing slashes are dropped */
    const char *api_key;     /* copied into memory that is explicit_bzero'd on close/replace */
    long timeout_ms;         /* total per request, > 0 */
    long connect_timeout_ms; /* 0 = min(timeout_ms, 5000) */
    unsigned max_in_flight;  /* >= 1 */
    size_t max_body;         /* cap on a response body; 0 = 65536 */
    /* Cap on a Retry-After, whatever the server asks ([omnidesk] max_retry_after); 0 = 5 min. */
    uint64_t max_retry_after_ms;
};

#define OMNIDESK_MAX_FIELDS 32
/* Easy handles kept for reuse; beyond it (max_in_flight is larger) they are made per request. */
#define OMNIDESK_SPARE_MAX 256
#define OMNIDESK_DEFAULT_MAX_BODY 65536
#define OMNIDESK_DEFAULT_MAX_RETRY_AFTER_MS 300000u

struct omnidesk_field {
    const char *name;  /* form field name, not NULL */
    const char *value; /* NULL means "omit this field" */
};

struct omnidesk;
struct omnidesk_headers;
struct omnidesk_request; /* opaque, owned by the client from send until the callback returns */

struct omnidesk_response {
    enum omnidesk_endpoint endpoint;
    enum omnidesk_class class;
    long http_status;    /* 0 when there is no (complete) answer: transport_error != 0 */
    int transport_error; /* CURLcode, 0 if none */
    /* Plain words: "connection reset", "timeout after 10000 ms", "HTTP 400: <API message>" (the
     * API's JSON "message", else the raw body truncated to 200 bytes with control characters
     * replaced), "" on success. Always valid UTF-8. It may contain what the API said (which could
     * echo a value): store it, but log only status and class. Never contains the API key. */
    char error[512];
    long long retry_after_ms; /* parsed Retry-After (seconds or HTTP-date), capped; -1 if none */
    int retry_after_capped;   /* the server asked for longer than max_retry_after_ms */
    long long customer_id;    /* search: the Omnidesk id (top-level "id", "customer"."id" or
                                 "items"[0]."id"; integer or digit string); 0 if absent */
    /* search: the customer object the id was found in (it may list "channels"); valid only
     * during the callback. NULL otherwise. */
    struct json_object *customer;
    double seconds; /* total time of the request */
    void *data;     /* the caller's pointer from omnidesk_send */
};

/* Called once per request, from the loop, never from inside omnidesk_send(). `response` is valid
 * only during the call. The callback may call omnidesk_send() and omnidesk_close(). */
typedef void (*omnidesk_cb)(struct omnidesk *client, const struct omnidesk_response *response);

/* The client. Embed it anywhere that outlives close_cb; all fields are private. */
struct omnidesk {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;  /* curl's one timeout (CURLMOPT_TIMERFUNCTION) */
    uv_timer_t reaper; /* runs close/abort work outside every callback chain */
    char *base_url;
    struct omnidesk_headers *headers; /* apiKey and the other fixed lines: wiped when freed */
    long timeout_ms;
    long connect_timeout_ms;
    unsigned max_in_flight;
    size_t max_body;
    uint64_t max_retry_after_ms;
    unsigned in_flight;
    CURL *spare[OMNIDESK_SPARE_MAX]; /* easy handles of finished requests, reset, for reuse */
    unsigned nspare;
    uint64_t boundary_seq; /* the next multipart boundary (omnidesk_request_multipart) */
    struct queue requests;             /* struct omnidesk_request in flight */
    struct queue sockets;              /* struct omnidesk_socket: open uv_poll contexts */
    unsigned handles_open;             /* uv handles not yet through their close callback */
    int closing;
    int aborting;
    int torn_down;
    void (*close_cb)(struct omnidesk *c);
};

/*
 * Initialises `c` on `loop`; copies everything in `opts`. Returns 0, OMNISYNC_EINVAL (bad option:
 * no base_url or not http(s), empty key or key with control characters, timeout <= 0,
 * max_in_flight 0), OMNISYNC_ENOMEM or OMNISYNC_EHTTP (libcurl refused). On failure nothing needs
 * releasing; on success omnidesk_close() must be called.
 */
int omnidesk_init(struct omnidesk *c, uv_loop_t *loop,
                  const struct omnidesk_options *opts) OMNISYNC_MUST_CHECK;

/*
 * Replaces timeout_ms, connect_timeout_ms, api_key, max_in_flight and max_body for requests
 * started after the call (SIGHUP reload); requests in flight keep what they started with.
 * base_url is ignored (changing it needs a restart). Copies the key and wipes the old one. On
 * failure (same codes as init) the old settings stay.
 */
int omnidesk_reconfigure(struct omnidesk *c,
                         const struct omnidesk_options *opts) OMNISYNC_MUST_CHECK;

/*
 * Starts one request. `fields` (name/value pairs; a NULL value means "omit") are copied; they are
 * ignored by OMNIDESK_PURGE and OMNIDESK_PROBE, which carry no body. `customer_id` (> 0) is used
 * only by OMNIDESK_PURGE. Returns 0 and later calls `cb` exactly once (never before returning),
 * or returns a negative code and never calls `cb`: OMNISYNC_EBUSY when max_in_flight requests are
 * already running, OMNISYNC_ECANCELED after omnidesk_close(), OMNISYNC_EINVAL (bad endpoint or
 * id, more than OMNIDESK_MAX_FIELDS fields, a field without name), OMNISYNC_ENOMEM,
 * OMNISYNC_EHTTP (libcurl refused the request).
 */
int omnidesk_send(struct omnidesk *c, enum omnidesk_endpoint endpoint, long long customer_id,
                  const struct omnidesk_field *fields, size_t nfields, omnidesk_cb cb,
                  void *data) OMNISYNC_MUST_CHECK;

/* Requests started and not yet reported. */
unsigned omnidesk_in_flight(const struct omnidesk *c);

/*
 * Stops accepting requests. If `abort` is nonzero, requests in flight are aborted (their callback
 * runs with class TRANSIENT, error "canceled", from the loop, not from inside this call);
 * otherwise they finish normally. `close_cb` (may be NULL) runs once every handle is closed and
 * all memory is freed; after it the loop holds no handle of this module and `c` may be freed.
 * May be called again, e.g. from a drain deadline, with `abort` nonzero to abort what still runs;
 * the first close_cb is kept.
 */
void omnidesk_close(struct omnidesk *c, int abort, void (*close_cb)(struct omnidesk *c));

#endif
