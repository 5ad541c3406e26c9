/*
 * store: customers, request log, counters, settings and the token bucket (see store.h).
 */
#include "store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t clock_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double clock_wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int store_init(struct store *store, const struct settings *initial, size_t log_max, uint64_t seed)
{
    memset(store, 0, sizeof(*store));
    if (pthread_mutex_init(&store->lock, NULL) != 0)
        return -1;
    store->bucket_count = 64;
    store->buckets = calloc(store->bucket_count, sizeof(*store->buckets));
    if (store->buckets == NULL) {
        pthread_mutex_destroy(&store->lock);
        return -1;
    }
    store->id_base = 1;
    store->next_id = 1;
    store->next_seq = 1;
    store->log_max = log_max;
    store->settings = *initial;
    store->initial = *initial;
    store->tokens = -1; /* filled on first use */
    store->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    return 0;
}

static void forget_json(struct customer *c)
{
    for (size_t i = 0; i < 2; i++) {
        free(c->json[i]);
        c->json[i] = NULL;
        c->json_len[i] = 0;
    }
}

static void customer_free(struct customer *c)
{
    forget_json(c);
    for (size_t i = 0; i < c->custom_count; i++) {
        free(c->custom[i].name);
        free(c->custom[i].value);
    }
    for (size_t i = 0; i < c->channel_count; i++) {
        free(c->channels[i].type);
        free(c->channels[i].value);
    }
    free(c->custom);
    free(c->channels);
    free(c->external_id);
    free(c->firstname);
    free(c->lastname);
    free(c);
}

static void free_customers(struct store *store)
{
    for (size_t i = 0; i < store->by_id_len; i++)
        if (store->by_id[i] != NULL)
            customer_free(store->by_id[i]);
    free(store->by_id);
    store->by_id = NULL;
    store->by_id_len = 0;
    store->by_id_cap = 0;
    store->id_base = store->next_id;
    store->customer_count = 0;
    memset(store->buckets, 0, store->bucket_count * sizeof(*store->buckets));
}

void log_entry_clear(struct log_entry *entry)
{
    free(entry->path);
    free(entry->content_type);
    free(entry->customer);
    form_free(&entry->fields);
    memset(entry, 0, sizeof(*entry));
}

static void free_log(struct store *store)
{
    for (size_t i = 0; i < store->log_count; i++)
        log_entry_clear(&store->log[(store->log_head + i) % store->log_cap]);
    free(store->log);
    store->log = NULL;
    store->log_cap = 0;
    store->log_head = 0;
    store->log_count = 0;
}

void store_free(struct store *store)
{
    free_customers(store);
    free(store->buckets);
    free_log(store);
    pthread_mutex_destroy(&store->lock);
}

void store_reset(struct store *store)
{
    long long in_flight = store->stats.in_flight;

    free_customers(store);
    free_log(store);
    memset(&store->stats, 0, sizeof(store->stats));
    store->stats.in_flight = in_flight;
    store->stats.max_concurrency = in_flight;
    store->settings = store->initial;
    store->tokens = -1;
}

static uint64_t key_hash(long long brand_id, const char *external_id)
{
    uint64_t h = 1469598103934665603ull;
    uint64_t brand = (uint64_t)brand_id;

    for (int i = 0; i < 8; i++) {
        h ^= (brand >> (8 * i)) & 0xFF;
        h *= 1099511628211ull;
    }
    for (const unsigned char *p = (const unsigned char *)external_id; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

struct customer *store_find(struct store *store, long long brand_id, const char *external_id)
{
    struct customer *c = store->buckets[key_hash(brand_id, external_id) % store->bucket_count];

    for (; c != NULL; c = c->next_in_bucket)
        if (c->brand_id == brand_id && strcmp(c->external_id, external_id) == 0)
            return c;
    return NULL;
}

struct customer *store_find_id(struct store *store, long long id)
{
    if (id < store->id_base || (size_t)(id - store->id_base) >= store->by_id_len)
        return NULL;
    return store->by_id[id - store->id_base];
}

struct customer *store_next(struct store *store, long long from)
{
    size_t i = from <= store->id_base ? 0 : (size_t)(from - store->id_base);

    for (; i < store->by_id_len; i++)
        if (store->by_id[i] != NULL)
            return store->by_id[i];
    return NULL;
}

/* Keeps chains short: doubles the table when it holds more customers than buckets. A failed
   grow is harmless, the chains just get longer. */
static void maybe_grow_buckets(struct store *store)
{
    size_t count = store->bucket_count * 2;
    struct customer **buckets;

    if (store->customer_count <= store->bucket_count)
        return;
    buckets = calloc(count, sizeof(*buckets));
    if (buckets == NULL)
        return;
    for (size_t i = 0; i < store->bucket_count; i++) {
        struct customer *c = store->buckets[i];

        while (c != NULL) {
            struct customer *next = c->next_in_bucket;
            size_t b = key_hash(c->brand_id, c->external_id) % count;

            c->next_in_bucket = buckets[b];
            buckets[b] = c;
            c = next;
        }
    }
    free(store->buckets);
    store->buckets = buckets;
    store->bucket_count = count;
}

struct customer *store_add(struct store *store, long long brand_id, const char *external_id)
{
    struct customer *c = calloc(1, sizeof(*c));
    size_t b;

    if (c == NULL)
        return NULL;
    c->external_id = strdup(external_id);
    if (c->external_id == NULL)
        goto fail;
    if (store->by_id_len == store->by_id_cap) {
        size_t cap = store->by_id_cap ? store->by_id_cap * 2 : 64;
        struct customer **by_id = realloc(store->by_id, cap * sizeof(*by_id));

        if (by_id == NULL)
            goto fail;
        store->by_id = by_id;
        store->by_id_cap = cap;
    }
    /* Ids are dense from id_base: the new one goes at the end. */
    c->id = store->id_base + (long long)store->by_id_len;
    store->next_id = c->id + 1;
    c->brand_id = brand_id;
    store->by_id[store->by_id_len++] = c;
    b = key_hash(brand_id, external_id) % store->bucket_count;
    c->next_in_bucket = store->buckets[b];
    store->buckets[b] = c;
    store->customer_count++;
    maybe_grow_buckets(store);
    return c;
fail:
    free(c->external_id);
    free(c);
    return NULL;
}

void store_remove(struct store *store, struct customer *customer)
{
    size_t b = key_hash(customer->brand_id, customer->external_id) % store->bucket_count;
    struct customer **link = &store->buckets[b];

    while (*link != NULL && *link != customer)
        link = &(*link)->next_in_bucket;
    if (*link == customer)
        *link = customer->next_in_bucket;
    store->by_id[customer->id - store->id_base] = NULL;
    store->customer_count--;
    customer_free(customer);
}

static int replace_text(char **slot, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

int customer_set_firstname(struct customer *c, const char *value)
{
    forget_json(c);
    return replace_text(&c->firstname, value);
}

int customer_set_lastname(struct customer *c, const char *value)
{
    forget_json(c);
    return replace_text(&c->lastname, value);
}

int customer_set_custom(struct customer *c, const char *name, const char *value)
{
    struct custom_field *custom;

    forget_json(c);
    for (size_t i = 0; i < c->custom_count; i++)
        if (strcmp(c->custom[i].name, name) == 0)
            return replace_text(&c->custom[i].value, value);
    if (c->custom_count == STORE_MAX_CUSTOM)
        return -1;
    custom = realloc(c->custom, (c->custom_count + 1) * sizeof(*custom));
    if (custom == NULL)
        return -1;
    c->custom = custom;
    custom = &c->custom[c->custom_count];
    custom->name = strdup(name);
    custom->value = strdup(value);
    if (custom->name == NULL || custom->value == NULL) {
        free(custom->name);
        free(custom->value);
        return -1;
    }
    c->custom_count++;
    return 0;
}

int customer_add_channel(struct customer *c, const char *type, const char *value)
{
    struct channel *channels;
    struct channel *channel;

    for (size_t i = 0; i < c->channel_count; i++)
        if (strcmp(c->channels[i].type, type) == 0 && strcmp(c->channels[i].value, value) == 0)
            return 0;
    if (c->channel_count == STORE_MAX_CHANNELS)
        return -1;
    forget_json(c);
    channels = realloc(c->channels, (c->channel_count + 1) * sizeof(*channels));
    if (channels == NULL)
        return -1;
    c->channels = channels;
    channel = &c->channels[c->channel_count];
    channel->type = strdup(type);
    channel->value = strdup(value);
    if (channel->type == NULL || channel->value == NULL) {
        free(channel->type);
        free(channel->value);
        return -1;
    }
    c->channel_count++;
    return 1;
}

void customer_drop_channels(struct customer *c, const char *type)
{
    size_t kept = 0;

    forget_json(c);
    for (size_t i = 0; i < c->channel_count; i++) {
        if (strcmp(type, "*") == 0 || strcmp(c->channels[i].type, type) == 0) {
            free(c->channels[i].type);
            free(c->channels[i].value);
        } else {
            c->channels[kept++] = c->channels[i];
        }
    }
    c->channel_count = kept;
}

static struct json_object *string_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

struct json_object *customer_to_json(const struct customer *c)
{
    struct json_object *o = json_object_new_object();
    struct json_object *custom = json_object_new_object();
    struct json_object *channels = json_object_new_array();

    json_object_object_add(o, "id", json_object_new_int64(c->id));
    json_object_object_add(o, "external_primary_id", json_object_new_string(c->external_id));
    json_object_object_add(o, "brand_id", json_object_new_int64(c->brand_id));
    json_object_object_add(o, "firstname", string_or_null(c->firstname));
    json_object_object_add(o, "lastname", string_or_null(c->lastname));
    for (size_t i = 0; i < c->custom_count; i++)
        json_object_object_add(custom, c->custom[i].name,
                               json_object_new_string(c->custom[i].value));
    json_object_object_add(o, "custom", custom);
    for (size_t i = 0; i < c->channel_count; i++) {
        struct json_object *ch = json_object_new_object();

        json_object_object_add(ch, "type", json_object_new_string(c->channels[i].type));
        json_object_object_add(ch, "value", json_object_new_string(c->channels[i].value));
        json_object_array_add(channels, ch);
    }
    json_object_object_add(o, "channels", channels);
    return o;
}

const char *customer_json_text(struct customer *c, enum customer_json which, size_t *len)
{
    struct json_object *o;
    const char *text;

    if (c->json[which] == NULL) {
        o = customer_to_json(c);
        if (which == CUSTOMER_JSON_NO_CUSTOM)
            json_object_object_del(o, "custom");
        text = json_object_to_json_string_ext(o, STORE_JSON_FLAGS);
        if (text != NULL && (c->json[which] = strdup(text)) != NULL)
            c->json_len[which] = strlen(text);
        json_object_put(o);
        if (c->json[which] == NULL)
            return NULL;
    }
    *len = c->json_len[which];
    return c->json[which];
}

/* Makes room for one more entry: drops the oldest at the cap, else grows the ring (linearised
   into a new array). Returns the slot, or NULL when the entry cannot be kept. */
static struct log_entry *log_slot(struct store *store)
{
    if (store->log_max == 0)
        return NULL;
    if (store->log_count == store->log_max) {
        struct log_entry *oldest = &store->log[store->log_head];

        log_entry_clear(oldest);
        store->log_head = (store->log_head + 1) % store->log_cap;
        store->log_count--;
    } else if (store->log_count == store->log_cap) {
        size_t cap = store->log_cap ? store->log_cap * 2 : 1024;
        struct log_entry *log;

        if (cap > store->log_max)
            cap = store->log_max;
        log = malloc(cap * sizeof(*log));
        if (log == NULL)
            return NULL;
        for (size_t i = 0; i < store->log_count; i++)
            log[i] = store->log[(store->log_head + i) % store->log_cap];
        free(store->log);
        store->log = log;
        store->log_cap = cap;
        store->log_head = 0;
    }
    return &store->log[(store->log_head + store->log_count) % store->log_cap];
}

void store_log_append(struct store *store, struct log_entry *entry)
{
    struct log_entry *slot;

    entry->seq = store->next_seq++;
    entry->time = clock_wall();
    store->stats.requests++;
    if ((int)entry->endpoint >= 0 && entry->endpoint < ENDPOINT_COUNT)
        store->stats.by_endpoint[entry->endpoint]++;
    slot = log_slot(store);
    if (slot == NULL) {
        log_entry_clear(entry);
        return;
    }
    *slot = *entry;
    store->log_count++;
    memset(entry, 0, sizeof(*entry));
}

long store_take_token(struct store *store, uint64_t now_ns)
{
    double rate = store->settings.rate;
    double capacity = rate < 1.0 ? 1.0 : rate; /* a burst of one second */
    double wait;

    if (rate <= 0.0)
        return 0;
    if (store->tokens < 0 || store->tokens_rate != rate) {
        /* First use, or the rate was changed at run time: start full. */
        store->tokens = capacity;
        store->tokens_rate = rate;
        store->tokens_at_ns = now_ns;
    }
    store->tokens += (double)(now_ns - store->tokens_at_ns) / 1e9 * rate;
    if (store->tokens > capacity)
        store->tokens = capacity;
    store->tokens_at_ns = now_ns;
    if (store->tokens >= 1.0) {
        store->tokens -= 1.0;
        return 0;
    }
    wait = ceil((1.0 - store->tokens) / rate);
    return wait < 1.0 ? 1 : (long)wait;
}

double store_random(struct store *store)
{
    /* splitmix64: small, seedable, good enough to pick faults. */
    uint64_t z = (store->rng += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}
