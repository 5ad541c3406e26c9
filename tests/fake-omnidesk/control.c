/*
 * control: /_fake/state, /_fake/log, /_fake/stats, /_fake/faults, /_fake/reset and
 * /_fake/customers/{add,change,delete} (see control.h).
 */
#include "control.h"

#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct json_object *string_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static struct json_object *state_json(struct store *store)
{
    struct json_object *o = json_object_new_object();
    struct json_object *customers = json_object_new_array();

    for (struct customer *c = store_next(store, 0); c != NULL; c = store_next(store, c->id + 1))
        json_object_array_add(customers, customer_to_json(c));
    json_object_object_add(o, "customers", customers);
    return o;
}

static struct json_object *entry_json(const struct log_entry *e)
{
    struct json_object *o = json_object_new_object();
    struct json_object *fields = json_object_new_object();
    char time_text[32];

    snprintf(time_text, sizeof(time_text), "%.3f", e->time);
    json_object_object_add(o, "seq", json_object_new_int64((int64_t)e->seq));
    json_object_object_add(o, "time", json_object_new_double_s(e->time, time_text));
    json_object_object_add(o, "method", json_object_new_string(e->method));
    json_object_object_add(o, "path", json_object_new_string(e->path ? e->path : ""));
    json_object_object_add(o, "endpoint", json_object_new_string(endpoint_name(e->endpoint)));
    json_object_object_add(o, "content_type", string_or_null(e->content_type));
    for (size_t i = 0; i < e->fields.count; i++)
        json_object_object_add(fields, e->fields.fields[i].name,
                               json_object_new_string_len(e->fields.fields[i].value,
                                                          (int)e->fields.fields[i].value_len));
    json_object_object_add(o, "fields", fields);
    json_object_object_add(o, "customer", string_or_null(e->customer));
    json_object_object_add(o, "status", e->status >= 0 ? json_object_new_int(e->status) : NULL);
    json_object_object_add(o, "fault", string_or_null(e->fault));
    return o;
}

/* A non-negative decimal query argument; `fallback` when absent. -1 when malformed. */
static int query_number(struct MHD_Connection *connection, const char *name,
                        unsigned long long fallback, unsigned long long *out)
{
    const char *text = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, name);
    char *end;

    *out = fallback;
    if (text == NULL)
        return 0;
    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return (errno != 0 || *end != '\0') ? -1 : 0;
}

static struct json_object *log_json(struct store *store, unsigned long long since,
                                    unsigned long long limit)
{
    struct json_object *o = json_object_new_object();
    struct json_object *requests = json_object_new_array();
    size_t lo = 0;
    size_t hi = store->log_count;

    /* Sequence numbers increase along the ring: find the first one after `since`. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (store->log[(store->log_head + mid) % store->log_cap].seq <= since)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < store->log_count && limit > 0; i++, limit--)
        json_object_array_add(requests,
                              entry_json(&store->log[(store->log_head + i) % store->log_cap]));
    json_object_object_add(o, "requests", requests);
    return o;
}

static struct json_object *stats_json(struct store *store)
{
    const struct stats *s = &store->stats;
    struct json_object *o = json_object_new_object();
    struct json_object *by_endpoint = json_object_new_object();

    json_object_object_add(o, "requests", json_object_new_int64((int64_t)s->requests));
    for (int ep = 0; ep < ENDPOINT_COUNT; ep++)
        json_object_object_add(by_endpoint, endpoint_name((enum endpoint)ep),
                               json_object_new_int64((int64_t)s->by_endpoint[ep]));
    json_object_object_add(o, "by_endpoint", by_endpoint);
    json_object_object_add(o, "duplicate_creates",
                           json_object_new_int64((int64_t)s->duplicate_creates));
    json_object_object_add(o, "duplicate_channels",
                           json_object_new_int64((int64_t)s->duplicate_channels));
    json_object_object_add(o, "validation_errors",
                           json_object_new_int64((int64_t)s->validation_errors));
    json_object_object_add(o, "auth_failures", json_object_new_int64((int64_t)s->auth_failures));
    json_object_object_add(o, "rate_limited", json_object_new_int64((int64_t)s->rate_limited));
    json_object_object_add(o, "faults", json_object_new_int64((int64_t)s->faults));
    json_object_object_add(o, "max_concurrency", json_object_new_int64(s->max_concurrency));
    json_object_object_add(o, "in_flight", json_object_new_int64(s->in_flight));
    json_object_object_add(o, "customers", json_object_new_int64((int64_t)store->customer_count));
    return o;
}

static void answer_json(struct control_answer *answer, int status, struct json_object *o)
{
    answer->status = status;
    answer->body = api_take_json(o, &answer->body_len);
}

static void answer_error(struct control_answer *answer, int status, const char *message)
{
    answer->status = status;
    answer->body = api_error_body(message, &answer->body_len);
}

/* `len` bytes of JSON text parsed whole, or NULL. */
static struct json_object *parse_body(const char *body, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;

    if (o != NULL && (tok->char_offset != (int)len || !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
    }
    if (tok != NULL)
        json_tokener_free(tok);
    return o;
}

/* A string member of `o`, or NULL. */
static const char *member_text(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Names, custom fields, channels of `o` applied to `c`; -1 with a message on a bad member. */
static int apply_changes(struct customer *c, struct json_object *o, const char **why)
{
    struct json_object *v;
    const char *text;

    if ((text = member_text(o, "firstname")) != NULL && customer_set_firstname(c, text))
        return *why = "out of memory", -1;
    if ((text = member_text(o, "lastname")) != NULL && customer_set_lastname(c, text))
        return *why = "out of memory", -1;
    if (json_object_object_get_ex(o, "drop_channels", &v)) {
        if (!json_object_is_type(v, json_type_array))
            return *why = "drop_channels must be an array of channel types", -1;
        for (size_t i = 0; i < json_object_array_length(v); i++)
            customer_drop_channels(c, json_object_get_string(json_object_array_get_idx(v, i)));
    }
    if (json_object_object_get_ex(o, "channels", &v)) {
        if (!json_object_is_type(v, json_type_array))
            return *why = "channels must be an array of {type, value}", -1;
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            struct json_object *ch = json_object_array_get_idx(v, i);
            const char *type = member_text(ch, "type");
            const char *value = member_text(ch, "value");

            if (type == NULL || value == NULL)
                return *why = "channels must be an array of {type, value}", -1;
            if (customer_add_channel(c, type, value) < 0)
                return *why = "too many channels", -1;
        }
    }
    if (json_object_object_get_ex(o, "custom", &v)) {
        if (!json_object_is_type(v, json_type_object))
            return *why = "custom must be an object of strings", -1;
        json_object_object_foreach(v, name, value)
        {
            if (customer_set_custom(c, name, json_object_get_string(value)) != 0)
                return *why = "too many custom fields", -1;
        }
    }
    return 0;
}

/*
 * Changes behind omnisync's back, as an agent or another integration would: add a customer,
 * change one (names, custom fields, "drop_channels": types to remove, "channels" to add), delete
 * one. The body is a JSON object naming the customer by "brand_id" and "external_primary_id".
 */
static void customers_route(struct store *store, const char *action, const char *body, size_t len,
                            struct control_answer *answer)
{
    struct json_object *o = parse_body(body, len);
    struct json_object *v;
    const char *external_id = o ? member_text(o, "external_primary_id") : NULL;
    const char *why = NULL;
    long long brand = 0;
    struct customer *c;

    if (o == NULL || external_id == NULL || external_id[0] == '\0' ||
        !json_object_object_get_ex(o, "brand_id", &v) || !json_object_is_type(v, json_type_int)) {
        answer_error(answer, 400, "a JSON object with brand_id and external_primary_id is needed");
        json_object_put(o);
        return;
    }
    brand = json_object_get_int64(v);
    c = store_find(store, brand, external_id);
    if (strcmp(action, "add") == 0) {
        if (c != NULL) {
            answer_error(answer, 409, "that customer exists");
        } else if ((c = store_add(store, brand, external_id)) == NULL) {
            answer_error(answer, 500, "out of memory");
        } else if (apply_changes(c, o, &why) != 0) {
            answer_error(answer, 400, why);
        } else {
            answer_json(answer, 200, customer_to_json(c));
        }
    } else if (c == NULL) {
        answer_error(answer, 404, "no such customer");
    } else if (strcmp(action, "delete") == 0) {
        store_remove(store, c);
        answer_json(answer, 200, json_object_new_object());
    } else if (strcmp(action, "change") == 0) {
        if (apply_changes(c, o, &why) != 0)
            answer_error(answer, 400, why);
        else
            answer_json(answer, 200, customer_to_json(c));
    } else {
        answer_error(answer, 404, "unknown control route");
    }
    json_object_put(o);
}

void control_handle(struct store *store, struct MHD_Connection *connection, const char *method,
                    const char *path, const char *body, size_t len, struct control_answer *answer)
{
    bool get = strcmp(method, "GET") == 0;
    bool post = strcmp(method, "POST") == 0;

    memset(answer, 0, sizeof(*answer));
    pthread_mutex_lock(&store->lock);
    if (get && strcmp(path, "/_fake/state") == 0) {
        answer_json(answer, 200, state_json(store));
    } else if (get && strcmp(path, "/_fake/log") == 0) {
        unsigned long long since;
        unsigned long long limit;

        if (query_number(connection, "since", 0, &since) != 0 ||
            query_number(connection, "limit", ~0ull, &limit) != 0)
            answer_error(answer, 400, "since and limit must be non-negative integers");
        else
            answer_json(answer, 200, log_json(store, since, limit));
    } else if (get && strcmp(path, "/_fake/stats") == 0) {
        answer_json(answer, 200, stats_json(store));
    } else if (get && strcmp(path, "/_fake/faults") == 0) {
        answer_json(answer, 200, settings_to_json(&store->settings));
    } else if (post && strcmp(path, "/_fake/faults") == 0) {
        char err[160];

        if (settings_merge(&store->settings, body ? body : "", len, err, sizeof(err)) != 0)
            answer_error(answer, 400, err);
        else
            answer_json(answer, 200, settings_to_json(&store->settings));
    } else if (post && strcmp(path, "/_fake/reset") == 0) {
        struct json_object *o = json_object_new_object();

        store_reset(store);
        json_object_object_add(o, "type", json_object_new_string("result"));
        json_object_object_add(o, "message", json_object_new_string("reset"));
        answer_json(answer, 200, o);
    } else if (post && strncmp(path, "/_fake/customers/", 17) == 0) {
        customers_route(store, path + 17, body ? body : "", len, answer);
    } else {
        answer_error(answer, 404, "unknown control route");
    }
    pthread_mutex_unlock(&store->lock);
}
