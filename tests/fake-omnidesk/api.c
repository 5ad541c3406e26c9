/*
 * api: the customer endpoints, validated as the OpenAPI document says (see api.h).
 *
 * Where the document is silent the fake picks the strict reading and says so in docs/testing.md:
 * create requires primary_id (the fake keys customers by it), addChannelOnly must add at least
 * one channel, a customer_link_channel needs its channel_id. A client that passes here passes
 * the real API; the reverse is not promised.
 */
#include "api.h"

#include "rules.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum check {
    CHECK_STRING,
    CHECK_NUMBER,
    CHECK_NAME,
    CHECK_EMAIL,
    CHECK_E164,
    CHECK_CHANNEL_ID,
    CHECK_TWITTER,
    CHECK_QUERY,
};

struct field_rule {
    const char *name;
    enum check check;
    bool required;
    unsigned min_length; /* in code points, JSON Schema's minLength; 0 = none */
};

#define RULES(table) (table), (sizeof(table) / sizeof((table)[0]))

static const struct field_rule create_rules[] = {
    {"brand_id", CHECK_NUMBER, true, 0},
    {"primary_id", CHECK_STRING, true, 1},
    {"channel_id", CHECK_CHANNEL_ID, false, 1},
    {"search_customer_channel_value", CHECK_STRING, false, 1},
    {"firstname", CHECK_NAME, false, 1},
    {"lastname", CHECK_NAME, false, 1},
    {"ticket_id", CHECK_NUMBER, false, 0},
    {"extra_email", CHECK_EMAIL, false, 0},
    {"extra_telephone", CHECK_E164, false, 12},
};

static const struct field_rule update_rules[] = {
    {"externalPrimaryID", CHECK_STRING, true, 1},
    {"brandID", CHECK_NUMBER, true, 0},
    {"firstname", CHECK_NAME, true, 1},
    {"lastname", CHECK_NAME, true, 1},
};

static const struct field_rule add_channel_rules[] = {
    {"brand_id", CHECK_NUMBER, true, 0},        {"customer_id", CHECK_NUMBER, false, 0},
    {"primary_id", CHECK_STRING, false, 1},     {"extra_email", CHECK_EMAIL, false, 1},
    {"extra_telephone", CHECK_E164, false, 1},  {"extra_twitter", CHECK_TWITTER, false, 1},
    {"extra_facebook", CHECK_NUMBER, false, 0},
};

static const struct field_rule search_rules[] = {
    {"primary_id", CHECK_STRING, true, 1},
    {"brand_id", CHECK_NUMBER, true, 0},
};

static const struct field_rule search_channel_rules[] = {
    {"customerChannelValue", CHECK_STRING, true, 1},
    {"brand_id", CHECK_NUMBER, true, 0},
};

static const struct field_rule purge_legacy_rules[] = {
    {"external_id", CHECK_STRING, true, 1},
    {"brand_id", CHECK_NUMBER, true, 0},
};

static const struct field_rule index_rules[] = {
    {"query", CHECK_QUERY, false, 1},
    {"itemStart", CHECK_NUMBER, false, 0},
    {"itemLimit", CHECK_NUMBER, false, 0},
};

static const struct field_rule item_rules[] = {
    {"brandID", CHECK_NUMBER, false, 0},
};

/* Checks `value` of field `name` against one rule; on failure writes the message. */
static int check_value(const char *name, enum check check, const char *value, char *msg,
                       size_t size)
{
    switch (check) {
    case CHECK_STRING:
        return 0;
    case CHECK_NUMBER:
        if (rules_is_number(value))
            return 0;
        snprintf(msg, size, "%s must be a number", name);
        return -1;
    case CHECK_NAME:
        if (rules_is_name(value))
            return 0;
        snprintf(msg, size, "%s must match %s", name, RULES_NAME_PATTERN);
        return -1;
    case CHECK_EMAIL:
        if (rules_is_email(value))
            return 0;
        snprintf(msg, size, "%s must be a valid email address", name);
        return -1;
    case CHECK_E164:
        if (rules_is_e164(value))
            return 0;
        snprintf(msg, size, "%s must match %s", name, RULES_E164_PATTERN);
        return -1;
    case CHECK_CHANNEL_ID:
        if (rules_is_channel_id(value))
            return 0;
        snprintf(msg, size, "%s must match %s", name, RULES_CHANNEL_ID_PATTERN);
        return -1;
    case CHECK_TWITTER:
        if (rules_is_twitter(value))
            return 0;
        snprintf(msg, size, "%s must match %s", name, RULES_TWITTER_PATTERN);
        return -1;
    case CHECK_QUERY:
        if (rules_is_query(value))
            return 0;
        snprintf(msg, size, "%s must match %s", name, RULES_QUERY_PATTERN);
        return -1;
    }
    return 0;
}

/* Required fields first, in the document's order (so the message names the first one missing),
   then each present field's minLength and rule. An empty value counts as missing. */
static int validate(const struct form *fields, const struct field_rule *rules, size_t count,
                    char *msg, size_t size)
{
    for (size_t i = 0; i < count; i++) {
        if (rules[i].required && form_get_nonempty(fields, rules[i].name) == NULL) {
            snprintf(msg, size, "%s is required", rules[i].name);
            return -1;
        }
    }
    for (size_t i = 0; i < count; i++) {
        const char *value = form_get(fields, rules[i].name);

        if (value == NULL)
            continue;
        if (rules[i].min_length > 0 && rules_utf8_length(value) < rules[i].min_length) {
            snprintf(msg, size, "%s must be at least %u character%s long", rules[i].name,
                     rules[i].min_length, rules[i].min_length == 1 ? "" : "s");
            return -1;
        }
        if (check_value(rules[i].name, rules[i].check, value, msg, size) != 0)
            return -1;
    }
    return 0;
}

/* A number field as an integer, the way PHP's (int) cast reads it. */
static long long to_integer(const char *value)
{
    double d = strtod(value, NULL);

    if (d >= (double)LLONG_MAX)
        return LLONG_MAX;
    if (d <= (double)LLONG_MIN)
        return LLONG_MIN;
    return (long long)d;
}

char *api_take_json(struct json_object *o, size_t *len)
{
    const char *text;
    char *copy = NULL;
    size_t n;

    if (o == NULL)
        return NULL;
    text = json_object_to_json_string_ext(o, STORE_JSON_FLAGS);
    if (text != NULL) {
        n = strlen(text);
        copy = malloc(n + 1);
        if (copy != NULL) {
            memcpy(copy, text, n + 1);
            if (len)
                *len = n;
        }
    }
    json_object_put(o);
    return copy;
}

static struct json_object *message_json(const char *type, const char *message)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "type", json_object_new_string(type));
    json_object_object_add(o, "message", json_object_new_string(message));
    return o;
}

char *api_error_body(const char *message, size_t *len)
{
    return api_take_json(message_json("error", message), len);
}

static int answer_json(struct api_answer *answer, int status, struct json_object *o)
{
    answer->status = status;
    answer->body = api_take_json(o, &answer->body_len);
    return answer->body ? 0 : -1;
}

static int answer_error(struct api_answer *answer, int status, const char *message)
{
    return answer_json(answer, status, message_json("error", message));
}

static int answer_result(struct api_answer *answer, const char *message)
{
    return answer_json(answer, 200, message_json("result", message));
}

static int answer_invalid(struct store *store, struct api_answer *answer, const char *message)
{
    store->stats.validation_errors++;
    return answer_error(answer, 400, message);
}

static int answer_not_found(struct api_answer *answer)
{
    return answer_error(answer, 404, "customer not found");
}

/*
 * An answer spliced from text: the fixed parts are written as json-c prints them with
 * STORE_JSON_FLAGS ({"a":1,"b":[x,y]}: no spaces), the customers are their cached texts, so a
 * page of 99 costs copies, not 99 trees built and printed (which, under the store lock, made
 * the fake the limit of a reader with 8 index requests in flight).
 */
struct text {
    char *buf;
    size_t len;
    size_t cap;
    bool failed;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        char *buf;

        while (cap < t->len + n + 1)
            cap *= 2;
        if ((buf = realloc(t->buf, cap)) == NULL) {
            t->failed = true;
            return;
        }
        t->buf = buf;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_add(t, s, strlen(s));
}

/* A member `"name":N,` as json-c prints an int64. */
static void text_int_member(struct text *t, const char *name, long long value)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "\"%s\":%lld,", name, value);

    text_add(t, buf, (size_t)n);
}

static void text_customer(struct text *t, struct customer *c, enum customer_json which)
{
    size_t len = 0;
    const char *json = customer_json_text(c, which, &len);

    if (json == NULL)
        t->failed = true;
    else
        text_add(t, json, len);
}

static int answer_text(struct api_answer *answer, int status, struct text *t)
{
    if (t->failed) {
        free(t->buf);
        return -1;
    }
    answer->status = status;
    answer->body = t->buf;
    answer->body_len = t->len;
    return 0;
}

/* A found customer, in the shape the test asked for with "search_shape". */
static int answer_customer(struct store *store, struct api_answer *answer,
                           struct customer *customer)
{
    struct text t = {0};
    struct json_object *o;
    struct json_object *c;

    switch (store->settings.search_shape) {
    case SEARCH_SHAPE_CUSTOMER:
        text_str(&t, "{\"type\":\"result\",\"customer\":");
        text_customer(&t, customer, CUSTOMER_JSON_FULL);
        text_str(&t, "}");
        return answer_text(answer, 200, &t);
    case SEARCH_SHAPE_ITEMS:
        text_str(&t, "{\"type\":\"result\",\"items\":[");
        text_customer(&t, customer, CUSTOMER_JSON_FULL);
        text_str(&t, "]}");
        return answer_text(answer, 200, &t);
    case SEARCH_SHAPE_TOP:
        break;
    }
    o = json_object_new_object();
    c = customer_to_json(customer);
    json_object_object_add(o, "type", json_object_new_string("result"));
    json_object_object_foreach(c, key, value)
    {
        json_object_object_add(o, key, json_object_get(value));
    }
    json_object_put(c);
    return answer_json(answer, 200, o);
}

/* The value of a customer_link_channel must suit its channel_id. */
static int check_link(const char *channel_id, const char *link, char *msg, size_t size)
{
    enum check check;

    if (strcmp(channel_id, "email") == 0)
        check = CHECK_EMAIL;
    else if (strcmp(channel_id, "telephone") == 0)
        check = CHECK_E164;
    else if (strcmp(channel_id, "twitter") == 0)
        check = CHECK_TWITTER;
    else if (strcmp(channel_id, "facebook") == 0)
        check = CHECK_NUMBER;
    else
        check = CHECK_STRING; /* a numeric channel id: its kind is not known here */
    return check_value("customer_link_channel", check, link, msg, size);
}

static int is_custom(const char *name)
{
    return strncmp(name, "custom_", 7) == 0 && name[7] != '\0';
}

static size_t new_custom_count(const struct customer *customer, const struct form *fields)
{
    size_t count = 0;

    for (size_t i = 0; i < fields->count; i++) {
        const char *name = fields->fields[i].name;
        bool known = false;

        if (!is_custom(name))
            continue;
        for (size_t j = 0; customer && j < customer->custom_count; j++)
            if (strcmp(customer->custom[j].name, name + 7) == 0)
                known = true;
        count += !known;
    }
    return count;
}

static int set_customs(struct customer *customer, const struct form *fields)
{
    for (size_t i = 0; i < fields->count; i++)
        if (is_custom(fields->fields[i].name) &&
            customer_set_custom(customer, fields->fields[i].name + 7, fields->fields[i].value) != 0)
            return -1;
    return 0;
}

static int do_create(struct store *store, const struct form *fields, struct api_answer *answer)
{
    char msg[256];
    const char *link = form_get_nonempty(fields, "customer_link_channel");
    const char *channel_id = form_get_nonempty(fields, "channel_id");
    const char *primary_id;
    const char *value;
    long long brand_id;
    struct customer *customer;

    if (validate(fields, RULES(create_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    if (link != NULL && channel_id == NULL)
        return answer_invalid(store, answer, "channel_id is required with customer_link_channel");
    if (link != NULL && check_link(channel_id, link, msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    if (new_custom_count(NULL, fields) > STORE_MAX_CUSTOM)
        return answer_invalid(store, answer, "too many custom fields");
    brand_id = to_integer(form_get(fields, "brand_id"));
    primary_id = form_get(fields, "primary_id");
    if (store_find(store, brand_id, primary_id) != NULL) {
        store->stats.duplicate_creates++;
        return answer_error(answer, 400, "customer with this primary id already exists");
    }
    customer = store_add(store, brand_id, primary_id);
    if (customer == NULL)
        return -1;
    if ((value = form_get(fields, "firstname")) && customer_set_firstname(customer, value))
        goto fail;
    if ((value = form_get(fields, "lastname")) && customer_set_lastname(customer, value))
        goto fail;
    if (set_customs(customer, fields) != 0)
        goto fail;
    if ((value = form_get_nonempty(fields, "extra_email")) &&
        customer_add_channel(customer, "email", value) < 0)
        goto fail;
    if ((value = form_get_nonempty(fields, "extra_telephone")) &&
        customer_add_channel(customer, "telephone", value) < 0)
        goto fail;
    if (link != NULL && customer_add_channel(customer, channel_id, link) < 0)
        goto fail;
    return answer_result(answer, "User created and channel linked.");
fail:
    store_remove(store, customer);
    return -1;
}

static int do_update(struct store *store, const struct form *fields, struct api_answer *answer)
{
    char msg[256];
    struct customer *customer;

    if (validate(fields, RULES(update_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    customer = store_find(store, to_integer(form_get(fields, "brandID")),
                          form_get(fields, "externalPrimaryID"));
    if (customer == NULL)
        return answer_not_found(answer);
    if (customer->custom_count + new_custom_count(customer, fields) > STORE_MAX_CUSTOM)
        return answer_invalid(store, answer, "too many custom fields");
    if (customer_set_firstname(customer, form_get(fields, "firstname")) != 0 ||
        customer_set_lastname(customer, form_get(fields, "lastname")) != 0 ||
        set_customs(customer, fields) != 0)
        return -1;
    return answer_result(answer, "Customer updated.");
}

static int do_add_channel(struct store *store, const struct form *fields, struct api_answer *answer)
{
    static const struct {
        const char *field;
        const char *type;
    } kinds[] = {
        {"extra_email", "email"},
        {"extra_telephone", "telephone"},
        {"extra_twitter", "twitter"},
        {"extra_facebook", "facebook"},
    };
    char msg[256];
    const char *primary_id = form_get_nonempty(fields, "primary_id");
    const char *customer_id = form_get_nonempty(fields, "customer_id");
    long long brand_id;
    struct customer *customer;
    size_t given = 0;

    if (validate(fields, RULES(add_channel_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    if (primary_id == NULL && customer_id == NULL)
        return answer_invalid(store, answer, "primary_id or customer_id is required");
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        given += form_get_nonempty(fields, kinds[i].field) != NULL;
    if (given == 0)
        return answer_invalid(store, answer,
                              "one of extra_email, extra_telephone, extra_twitter, "
                              "extra_facebook is required");
    brand_id = to_integer(form_get(fields, "brand_id"));
    if (primary_id != NULL) {
        customer = store_find(store, brand_id, primary_id);
    } else {
        customer = store_find_id(store, to_integer(customer_id));
        if (customer != NULL && customer->brand_id != brand_id)
            customer = NULL;
    }
    if (customer == NULL)
        return answer_not_found(answer);
    if (customer->channel_count + given > (size_t)store->settings.max_channels)
        return answer_invalid(store, answer, "too many channels");
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const char *value = form_get_nonempty(fields, kinds[i].field);
        int added;

        if (value == NULL)
            continue;
        added = customer_add_channel(customer, kinds[i].type, value);
        if (added < 0)
            return -1;
        if (added == 0)
            store->stats.duplicate_channels++;
    }
    return answer_result(answer, "Channel added to the customer.");
}

/* The first customer (lowest id) of the brand with a channel of this value. */
static struct customer *find_by_channel(struct store *store, long long brand_id, const char *value)
{
    for (struct customer *c = store_next(store, 0); c != NULL; c = store_next(store, c->id + 1)) {
        if (c->brand_id != brand_id)
            continue;
        for (size_t i = 0; i < c->channel_count; i++)
            if (strcmp(c->channels[i].value, value) == 0)
                return c;
    }
    return NULL;
}

static int do_search(struct store *store, const struct form *fields, struct api_answer *answer)
{
    char msg[256];
    struct customer *customer;

    if (validate(fields, RULES(search_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    customer =
        store_find(store, to_integer(form_get(fields, "brand_id")), form_get(fields, "primary_id"));
    if (customer == NULL)
        return answer_not_found(answer);
    return answer_customer(store, answer, customer);
}

static int do_search_channel(struct store *store, const struct form *fields,
                             struct api_answer *answer)
{
    char msg[256];
    struct customer *customer;

    if (validate(fields, RULES(search_channel_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    customer = find_by_channel(store, to_integer(form_get(fields, "brand_id")),
                               form_get(fields, "customerChannelValue"));
    if (customer == NULL)
        return answer_not_found(answer);
    return answer_customer(store, answer, customer);
}

static int do_purge_id(struct store *store, long long id, struct api_answer *answer)
{
    struct customer *customer = store_find_id(store, id);

    if (customer == NULL)
        return answer_not_found(answer);
    store_remove(store, customer);
    return answer_result(answer, "Customer data purged.");
}

static int do_purge_legacy(struct store *store, const struct form *fields,
                           struct api_answer *answer)
{
    char msg[256];
    struct customer *customer;

    if (validate(fields, RULES(purge_legacy_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    customer = store_find(store, to_integer(form_get(fields, "brand_id")),
                          form_get(fields, "external_id"));
    if (customer == NULL)
        return answer_not_found(answer);
    store_remove(store, customer);
    return answer_result(answer, "Customer data purged.");
}

static bool matches_query(const struct customer *c, const char *query)
{
    return query == NULL || strcasestr(c->external_id, query) != NULL ||
           (c->firstname && strcasestr(c->firstname, query) != NULL) ||
           (c->lastname && strcasestr(c->lastname, query) != NULL);
}

static int do_index(struct store *store, const struct form *fields, struct api_answer *answer)
{
    char msg[256];
    const char *query = form_get(fields, "query");
    const char *value;
    enum customer_json which =
        store->settings.index_custom ? CUSTOMER_JSON_FULL : CUSTOMER_JSON_NO_CUSTOM;
    long long start = 0;
    long long limit = 15;
    long long total = 0;
    long long listed = 0;
    struct customer *first = NULL;
    struct text items = {0};
    struct text t = {0};
    enum index_fault fault;

    if (validate(fields, RULES(index_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    if ((value = form_get(fields, "itemStart")) != NULL)
        start = to_integer(value);
    if ((value = form_get(fields, "itemLimit")) != NULL)
        limit = to_integer(value);
    if (limit > 99)
        return answer_invalid(store, answer, "itemLimit must be at most 99");
    if (limit < 0)
        return answer_invalid(store, answer, "itemLimit must be at least 0");
    if (start < 0)
        return answer_invalid(store, answer, "itemStart must be at least 0");
    /* items.buf holds the entries comma-separated, without the brackets. */
    text_str(&items, "");
    if (query == NULL) {
        /* Without a query the total is the count and the page is found in the id table, whose
           pointers are read without visiting a customer: a page costs a scan of pointers, not
           a cache miss per customer (20,000 of them made each page take 40 ms). */
        long long seen = 0;

        total = (long long)store->customer_count;
        for (size_t i = 0; i < store->by_id_len && seen < start + limit; i++) {
            if (store->by_id[i] == NULL)
                continue;
            if (seen >= start) {
                if (listed++ > 0)
                    text_str(&items, ",");
                else
                    first = store->by_id[i];
                text_customer(&items, store->by_id[i], which);
            }
            seen++;
        }
    } else {
        for (struct customer *c = store_next(store, 0); c != NULL;
             c = store_next(store, c->id + 1)) {
            if (!matches_query(c, query))
                continue;
            if (total >= start && total < start + limit) {
                if (listed++ > 0)
                    text_str(&items, ",");
                else
                    first = c;
                text_customer(&items, c, which);
            }
            total++;
        }
    }
    fault = start >= store->settings.index_fault_from ? store->settings.index_fault
                                                      : INDEX_FAULT_NONE;
    if (fault == INDEX_FAULT_GROWING_TOTAL) {
        /* Each page says there is one page more than the last: it never ends. The page is
           filled up with its first entry again (null when it has none). */
        total = start + limit + 1;
        for (; listed < limit; listed++) {
            if (listed > 0)
                text_str(&items, ",");
            if (first != NULL)
                text_customer(&items, first, which);
            else
                text_str(&items, "null");
        }
    }
    text_str(&t, "{\"type\":\"result\",");
    text_int_member(&t, "itemStart", start);
    if (fault != INDEX_FAULT_MISSING_FIELD)
        text_int_member(&t, "itemTotal", total);
    text_int_member(&t, "itemLimit", limit);
    text_str(&t, fault == INDEX_FAULT_WRONG_SHAPE ? "\"items\":{\"list\":[" : "\"items\":[");
    if (items.failed)
        t.failed = true;
    else
        text_add(&t, items.buf, items.len);
    free(items.buf);
    text_str(&t, fault == INDEX_FAULT_WRONG_SHAPE ? "]}}" : "]}");
    return answer_text(answer, 200, &t);
}

static int do_item(struct store *store, const struct form *fields, long long id,
                   struct api_answer *answer)
{
    char msg[256];
    const char *brand = form_get(fields, "brandID");
    struct customer *customer;
    struct text t = {0};

    if (validate(fields, RULES(item_rules), msg, sizeof(msg)) != 0)
        return answer_invalid(store, answer, msg);
    customer = store_find_id(store, id);
    if (customer == NULL || (brand != NULL && customer->brand_id != to_integer(brand)))
        return answer_not_found(answer);
    text_str(&t, "{\"type\":\"result\",\"customer\":");
    text_customer(&t, customer, CUSTOMER_JSON_FULL);
    text_str(&t, "}");
    return answer_text(answer, 200, &t);
}

int api_handle(struct store *store, enum endpoint ep, const struct form *fields, long long path_id,
               struct api_answer *answer)
{
    memset(answer, 0, sizeof(*answer));
    switch (ep) {
    case ENDPOINT_CREATE:
        return do_create(store, fields, answer);
    case ENDPOINT_UPDATE:
        return do_update(store, fields, answer);
    case ENDPOINT_ADD_CHANNEL:
        return do_add_channel(store, fields, answer);
    case ENDPOINT_PURGE_ID:
        return do_purge_id(store, path_id, answer);
    case ENDPOINT_PURGE_LEGACY:
        return do_purge_legacy(store, fields, answer);
    case ENDPOINT_SEARCH:
        return do_search(store, fields, answer);
    case ENDPOINT_SEARCH_CHANNEL:
        return do_search_channel(store, fields, answer);
    case ENDPOINT_INDEX:
        return do_index(store, fields, answer);
    case ENDPOINT_ITEM:
        return do_item(store, fields, path_id, answer);
    case ENDPOINT_UNKNOWN:
    case ENDPOINT_COUNT:
        break;
    }
    return answer_error(answer, 404, "unknown route");
}

static char *dup_or_null(const char *s)
{
    return (s != NULL && s[0] != '\0') ? strdup(s) : NULL;
}

char *api_concerned_customer(struct store *store, enum endpoint ep, const struct form *fields,
                             long long path_id)
{
    const struct customer *customer = NULL;
    const char *value;

    switch (ep) {
    case ENDPOINT_CREATE:
    case ENDPOINT_SEARCH:
        return dup_or_null(form_get(fields, "primary_id"));
    case ENDPOINT_ADD_CHANNEL:
        if ((value = form_get_nonempty(fields, "primary_id")) != NULL)
            return strdup(value);
        if ((value = form_get_nonempty(fields, "customer_id")) != NULL && rules_is_number(value))
            customer = store_find_id(store, to_integer(value));
        break;
    case ENDPOINT_UPDATE:
        return dup_or_null(form_get(fields, "externalPrimaryID"));
    case ENDPOINT_PURGE_LEGACY:
        return dup_or_null(form_get(fields, "external_id"));
    case ENDPOINT_PURGE_ID:
    case ENDPOINT_ITEM:
        customer = store_find_id(store, path_id);
        break;
    case ENDPOINT_SEARCH_CHANNEL:
        if ((value = form_get_nonempty(fields, "customerChannelValue")) != NULL &&
            (value = form_get_nonempty(fields, "brand_id")) != NULL && rules_is_number(value))
            customer =
                find_by_channel(store, to_integer(value), form_get(fields, "customerChannelValue"));
        break;
    case ENDPOINT_INDEX:
    case ENDPOINT_UNKNOWN:
    case ENDPOINT_COUNT:
        break;
    }
    return customer ? strdup(customer->external_id) : NULL;
}
