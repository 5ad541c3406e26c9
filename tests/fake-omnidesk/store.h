/*
 * store: everything the fake remembers, behind one mutex.
 *
 * Customers (numeric ids 1, 2, 3, ... never reused, not even across /_fake/reset, so a stale id
 * can never hit a newer customer), the request log (a ring capped at --log-max entries, oldest
 * dropped), the counters of /_fake/stats, the settings, the token bucket and the random source
 * for faults. Every function here expects the caller to hold `lock`, except init and free.
 */
#ifndef FAKE_STORE_H
#define FAKE_STORE_H

#include "endpoint.h"
#include "form.h"
#include "settings.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* Caps on what one customer accumulates over many requests. */
#define STORE_MAX_CHANNELS SETTINGS_CHANNELS_MAX
#define STORE_MAX_CUSTOM 256

struct channel {
    char *type; /* email | telephone | twitter | facebook | a numeric channel id */
    char *value;
};

struct custom_field {
    char *name; /* without the custom_ prefix */
    char *value;
};

struct customer {
    long long id;
    long long brand_id;
    char *external_id;
    char *firstname; /* NULL until set */
    char *lastname;
    struct custom_field *custom;
    size_t custom_count;
    struct channel *channels;
    size_t channel_count;
    struct customer *next_in_bucket; /* (brand, external id) hash chain */
    /* The customer's JSON text, made on first use and dropped by every change below:
       [CUSTOMER_JSON_FULL] as customer_to_json gives it, [CUSTOMER_JSON_NO_CUSTOM] without
       "custom" (an index entry when index_custom is off). NULL until asked for. */
    char *json[2];
    size_t json_len[2];
};

enum customer_json {
    CUSTOMER_JSON_FULL,
    CUSTOMER_JSON_NO_CUSTOM,
};

/* How every answer's JSON is printed (api_take_json and the cached customer texts alike, so a
   page spliced from cached texts is byte for byte what json-c prints for the whole page). */
#define STORE_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

struct log_entry {
    unsigned long long seq;
    double time; /* Unix time when the request was decided */
    char method[16];
    char *path;
    enum endpoint endpoint;
    char *content_type; /* media type without parameters, or NULL */
    struct form fields;
    char *customer;    /* external id the request concerns, or NULL */
    int status;        /* status sent (for fault "lost": generated, then dropped); -1: none */
    const char *fault; /* static name of the injected fault, or NULL */
};

struct stats {
    unsigned long long requests;
    unsigned long long by_endpoint[ENDPOINT_COUNT];
    unsigned long long duplicate_creates;
    unsigned long long duplicate_channels;
    unsigned long long validation_errors;
    unsigned long long auth_failures;
    unsigned long long rate_limited;
    unsigned long long faults;
    long long max_concurrency;
    long long in_flight;
};

struct store {
    pthread_mutex_t lock;

    struct customer **by_id; /* by_id[i] is customer id_base + i, or NULL once purged */
    size_t by_id_len;
    size_t by_id_cap;
    long long id_base;
    long long next_id;
    size_t customer_count;
    struct customer **buckets;
    size_t bucket_count;

    struct log_entry *log; /* ring: log_count entries from log_head */
    size_t log_cap;
    size_t log_head;
    size_t log_count;
    size_t log_max;
    unsigned long long next_seq;

    struct stats stats;

    struct settings settings;
    struct settings initial; /* what /_fake/reset returns to: CLI key and rate, no faults */
    double tokens;           /* < 0: refill on next use */
    double tokens_rate;      /* the rate the bucket was filled for */
    uint64_t tokens_at_ns;
    uint64_t rng;
};

/* Prepares an empty store. `initial` is copied: the settings at start and after reset. */
int store_init(struct store *store, const struct settings *initial, size_t log_max, uint64_t seed);
void store_free(struct store *store);

/* Forgets customers, log and counters (in_flight stays: those requests are still running) and
   restores the initial settings. Ids and sequence numbers keep counting. */
void store_reset(struct store *store);

struct customer *store_find(struct store *store, long long brand_id, const char *external_id);
struct customer *store_find_id(struct store *store, long long id);
/* Iteration in id order: the first customer with id >= `from`, or NULL. */
struct customer *store_next(struct store *store, long long from);

/* A new customer with the next id (copies `external_id`), or NULL without memory. */
struct customer *store_add(struct store *store, long long brand_id, const char *external_id);
void store_remove(struct store *store, struct customer *customer);

/* Every change to a customer goes through these, which drop its cached JSON text. */
/* Sets the first or last name to a copy of `value`. 0 or -1 (no memory; name unchanged). */
int customer_set_firstname(struct customer *customer, const char *value);
int customer_set_lastname(struct customer *customer, const char *value);
/* Sets custom field `name`. 0, or -1 (no memory or the cap is reached). */
int customer_set_custom(struct customer *customer, const char *name, const char *value);
/* Adds channel (type, value): 1 added, 0 already there, -1 no memory or the cap is reached. */
int customer_add_channel(struct customer *customer, const char *type, const char *value);
/* Removes every channel of `type` ("*" for all). */
void customer_drop_channels(struct customer *customer, const char *type);

/* The customer as JSON: id, external_primary_id, brand_id, firstname, lastname, custom,
   channels. The caller puts it. */
struct json_object *customer_to_json(const struct customer *customer);
/* The same printed with STORE_JSON_FLAGS (`which`: with or without "custom"), cached in the
   customer until it changes; valid until then. NULL without memory. */
const char *customer_json_text(struct customer *customer, enum customer_json which, size_t *len);

/* Appends an entry, taking ownership of its strings and fields; assigns seq and counts it. */
void store_log_append(struct store *store, struct log_entry *entry);
/* Frees what an entry owns. */
void log_entry_clear(struct log_entry *entry);

/* Takes one token of the bucket. Returns 0, or the whole seconds (>= 1) until the next token. */
long store_take_token(struct store *store, uint64_t now_ns);
/* Uniform in [0, 1). */
double store_random(struct store *store);

/* Monotonic and wall clock helpers. */
uint64_t clock_mono_ns(void);
double clock_wall(void);

#endif
