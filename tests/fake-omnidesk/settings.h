/*
 * settings: the fake's run-time knobs (faults, key, rate, answer shapes).
 *
 * Set at start with --faults JSON and at run time with POST /_fake/faults; both merge a JSON
 * object into the current settings, all or nothing: one bad key refuses the whole object, so a
 * test with a typo fails loudly instead of running without its fault.
 */
#ifndef FAKE_SETTINGS_H
#define FAKE_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#define SETTINGS_KEY_MAX 256
#define SETTINGS_RETRY_AFTER_MAX 64
#define SETTINGS_CHANNELS_MAX 256 /* the store's cap on one customer's channels */

enum search_shape {
    SEARCH_SHAPE_CUSTOMER, /* {"type":"result","customer":{"id":N,...}} */
    SEARCH_SHAPE_TOP,      /* {"type":"result","id":N,...} */
    SEARCH_SHAPE_ITEMS     /* {"type":"result","items":[{"id":N,...}]} */
};

/* Bad index pages, for reconcile's tests (from the page at itemStart >= index_fault_from). */
enum index_fault {
    INDEX_FAULT_NONE,
    INDEX_FAULT_WRONG_SHAPE,   /* "items" is an object, not an array */
    INDEX_FAULT_MISSING_FIELD, /* no "itemTotal" */
    INDEX_FAULT_GROWING_TOTAL  /* itemTotal grows with every page: an index that never ends */
};

struct settings {
    long latency_ms;    /* fixed delay before an API request is looked at */
    long jitter_ms;     /* uniform extra delay in [0, jitter_ms] */
    long slow_body_ms;  /* how long p_slow_body trickles a body */
    double p_5xx;       /* 503 JSON error, nothing applied */
    double p_429;       /* 429 with Retry-After, nothing applied */
    double p_hang;      /* no answer until the client closes, nothing applied */
    double p_reset;     /* TCP reset, nothing applied */
    double p_lost;      /* applied, then the connection closed without an answer */
    double p_html502;   /* 502 with an HTML body, nothing applied */
    double p_truncated; /* applied, 200 with half a JSON body */
    double p_slow_body; /* applied, body trickled over slow_body_ms */
    char retry_after[SETTINGS_RETRY_AFTER_MAX]; /* "N" seconds or "http-date:N" */
    bool retry_after_5xx;                       /* also send Retry-After on p_5xx answers */
    char api_key[SETTINGS_KEY_MAX];             /* the accepted apiKey header */
    double rate;                                /* token bucket, requests per second; 0 = off */
    enum search_shape search_shape;
    bool index_custom;             /* index entries list "custom" (the API document's omit it) */
    enum index_fault index_fault;
    long long index_fault_from;    /* itemStart from which index_fault applies */
    long max_channels; /* addChannelOnly refuses a customer more (1..SETTINGS_CHANNELS_MAX) */
    unsigned paths; /* bit (1u << endpoint) for each endpoint faults apply to */
};

/* No faults, no rate limit, shape "customer", every endpoint, the given key (copied). */
void settings_defaults(struct settings *settings, const char *api_key);

/* Merges the JSON object in `json` (`len` bytes) into *settings. On error returns -1, leaves
 *settings unchanged and writes a message naming the key to `err`. */
int settings_merge(struct settings *settings, const char *json, size_t len, char *err,
                   size_t err_size);

/* The settings as a JSON object (the caller puts it). The API key is write-only: never shown. */
struct json_object *settings_to_json(const struct settings *settings);

#endif
