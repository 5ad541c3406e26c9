/*
 * settings: parsing and showing the fake's run-time knobs (see settings.h).
 */
#include "settings.h"

#include "endpoint.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALL_PATHS ((1u << ENDPOINT_COUNT) - 1)
#define MAX_DELAY_MS (10L * 60 * 1000)

static const char *const shape_names[] = {
    [SEARCH_SHAPE_CUSTOMER] = "customer",
    [SEARCH_SHAPE_TOP] = "top",
    [SEARCH_SHAPE_ITEMS] = "items",
};

static const char *const index_fault_names[] = {
    [INDEX_FAULT_NONE] = "none",
    [INDEX_FAULT_WRONG_SHAPE] = "wrong_shape",
    [INDEX_FAULT_MISSING_FIELD] = "missing_field",
    [INDEX_FAULT_GROWING_TOTAL] = "growing_total",
};

void settings_defaults(struct settings *settings, const char *api_key)
{
    memset(settings, 0, sizeof(*settings));
    settings->slow_body_ms = 1000;
    strcpy(settings->retry_after, "1");
    snprintf(settings->api_key, sizeof(settings->api_key), "%s", api_key);
    settings->search_shape = SEARCH_SHAPE_CUSTOMER;
    settings->paths = ALL_PATHS;
    settings->index_custom = true;
    settings->max_channels = SETTINGS_CHANNELS_MAX;
}

/* A header value we are willing to send or compare: printable ASCII, no CR/LF. */
static bool header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7E)
            return false;
    return true;
}

static int get_probability(struct json_object *value, double *out)
{
    double p;

    if (!json_object_is_type(value, json_type_double) && !json_object_is_type(value, json_type_int))
        return -1;
    p = json_object_get_double(value);
    if (!(p >= 0.0 && p <= 1.0))
        return -1;
    *out = p;
    return 0;
}

/* A JSON integer in [min, max]. */
static int get_integer(struct json_object *value, int64_t min, int64_t max, int64_t *out)
{
    int64_t n;

    if (!json_object_is_type(value, json_type_int))
        return -1;
    n = json_object_get_int64(value);
    if (n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

static int valid_retry_after(const char *s)
{
    static const char prefix[] = "http-date:";
    const char *digits = s;

    if (strlen(s) == 0 || strlen(s) >= SETTINGS_RETRY_AFTER_MAX || !header_safe(s))
        return -1;
    if (strncmp(s, prefix, sizeof(prefix) - 1) == 0) {
        digits = s + sizeof(prefix) - 1;
        if (*digits == '\0' || strlen(digits) > 9 || strspn(digits, "0123456789") != strlen(digits))
            return -1;
    }
    return 0;
}

static int get_paths(struct json_object *value, unsigned *out)
{
    unsigned paths = 0;
    size_t n;

    if (value == NULL) {
        *out = ALL_PATHS;
        return 0;
    }
    if (!json_object_is_type(value, json_type_array))
        return -1;
    n = json_object_array_length(value);
    for (size_t i = 0; i < n; i++) {
        struct json_object *item = json_object_array_get_idx(value, i);
        int ep;

        if (!json_object_is_type(item, json_type_string))
            return -1;
        ep = endpoint_from_name(json_object_get_string(item));
        if (ep < 0)
            return -1;
        paths |= 1u << ep;
    }
    *out = paths;
    return 0;
}

static int merge_key(struct settings *s, const char *key, struct json_object *value, char *err,
                     size_t err_size)
{
    int64_t n;
    struct {
        const char *name;
        double *field;
    } probabilities[] = {
        {"p_5xx", &s->p_5xx},
        {"p_429", &s->p_429},
        {"p_hang", &s->p_hang},
        {"p_reset", &s->p_reset},
        {"p_lost", &s->p_lost},
        {"p_html502", &s->p_html502},
        {"p_truncated", &s->p_truncated},
        {"p_slow_body", &s->p_slow_body},
    };
    struct {
        const char *name;
        long *field;
    } delays[] = {
        {"latency_ms", &s->latency_ms},
        {"jitter_ms", &s->jitter_ms},
        {"slow_body_ms", &s->slow_body_ms},
    };

    for (size_t i = 0; i < sizeof(probabilities) / sizeof(probabilities[0]); i++) {
        if (strcmp(key, probabilities[i].name) == 0) {
            if (get_probability(value, probabilities[i].field) != 0)
                goto bad;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof(delays) / sizeof(delays[0]); i++) {
        if (strcmp(key, delays[i].name) == 0) {
            if (get_integer(value, 0, MAX_DELAY_MS, &n) != 0)
                goto bad;
            *delays[i].field = (long)n;
            return 0;
        }
    }
    if (strcmp(key, "retry_after") == 0) {
        const char *text;

        if (!json_object_is_type(value, json_type_string))
            goto bad;
        text = json_object_get_string(value);
        if (valid_retry_after(text) != 0)
            goto bad;
        snprintf(s->retry_after, sizeof(s->retry_after), "%s", text);
        return 0;
    }
    if (strcmp(key, "retry_after_5xx") == 0) {
        if (!json_object_is_type(value, json_type_boolean))
            goto bad;
        s->retry_after_5xx = json_object_get_boolean(value);
        return 0;
    }
    if (strcmp(key, "api_key") == 0) {
        const char *text;

        if (!json_object_is_type(value, json_type_string))
            goto bad;
        text = json_object_get_string(value);
        if (text[0] == '\0' || strlen(text) >= sizeof(s->api_key) || !header_safe(text))
            goto bad;
        snprintf(s->api_key, sizeof(s->api_key), "%s", text);
        return 0;
    }
    if (strcmp(key, "rate") == 0) {
        double rate;

        if (!json_object_is_type(value, json_type_double) &&
            !json_object_is_type(value, json_type_int))
            goto bad;
        rate = json_object_get_double(value);
        if (!(rate >= 0.0 && rate <= 1e9))
            goto bad;
        s->rate = rate;
        return 0;
    }
    if (strcmp(key, "search_shape") == 0) {
        const char *text;

        if (!json_object_is_type(value, json_type_string))
            goto bad;
        text = json_object_get_string(value);
        for (size_t i = 0; i < sizeof(shape_names) / sizeof(shape_names[0]); i++) {
            if (strcmp(text, shape_names[i]) == 0) {
                s->search_shape = (enum search_shape)i;
                return 0;
            }
        }
        goto bad;
    }
    if (strcmp(key, "paths") == 0) {
        if (get_paths(value, &s->paths) != 0)
            goto bad;
        return 0;
    }
    if (strcmp(key, "index_custom") == 0) {
        if (!json_object_is_type(value, json_type_boolean))
            goto bad;
        s->index_custom = json_object_get_boolean(value);
        return 0;
    }
    if (strcmp(key, "index_fault") == 0) {
        const char *text;

        if (!json_object_is_type(value, json_type_string))
            goto bad;
        text = json_object_get_string(value);
        for (size_t i = 0; i < sizeof(index_fault_names) / sizeof(index_fault_names[0]); i++) {
            if (strcmp(text, index_fault_names[i]) == 0) {
                s->index_fault = (enum index_fault)i;
                return 0;
            }
        }
        goto bad;
    }
    if (strcmp(key, "index_fault_from") == 0) {
        if (get_integer(value, 0, INT64_MAX, &n) != 0)
            goto bad;
        s->index_fault_from = n;
        return 0;
    }
    if (strcmp(key, "max_channels") == 0) {
        if (get_integer(value, 1, SETTINGS_CHANNELS_MAX, &n) != 0)
            goto bad;
        s->max_channels = (long)n;
        return 0;
    }
    snprintf(err, err_size, "unknown setting %s", key);
    return -1;
bad:
    snprintf(err, err_size, "invalid value for setting %s", key);
    return -1;
}

int settings_merge(struct settings *settings, const char *json, size_t len, char *err,
                   size_t err_size)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = NULL;
    struct settings next = *settings;
    int rc = -1;

    if (tok == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    root = json_tokener_parse_ex(tok, json, (int)len);
    if (root == NULL || tok->char_offset != (int)len) {
        snprintf(err, err_size, "settings must be one JSON object");
        goto fail;
    }
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(err, err_size, "settings must be a JSON object");
        goto fail;
    }
    json_object_object_foreach(root, key, value)
    {
        if (merge_key(&next, key, value, err, err_size) != 0)
            goto fail;
    }
    *settings = next;
    rc = 0;
fail:
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

struct json_object *settings_to_json(const struct settings *s)
{
    struct json_object *o = json_object_new_object();
    struct json_object *paths;

    json_object_object_add(o, "latency_ms", json_object_new_int64(s->latency_ms));
    json_object_object_add(o, "jitter_ms", json_object_new_int64(s->jitter_ms));
    json_object_object_add(o, "p_5xx", json_object_new_double(s->p_5xx));
    json_object_object_add(o, "p_429", json_object_new_double(s->p_429));
    json_object_object_add(o, "retry_after", json_object_new_string(s->retry_after));
    json_object_object_add(o, "retry_after_5xx", json_object_new_boolean(s->retry_after_5xx));
    json_object_object_add(o, "p_hang", json_object_new_double(s->p_hang));
    json_object_object_add(o, "p_reset", json_object_new_double(s->p_reset));
    json_object_object_add(o, "p_lost", json_object_new_double(s->p_lost));
    json_object_object_add(o, "p_html502", json_object_new_double(s->p_html502));
    json_object_object_add(o, "p_truncated", json_object_new_double(s->p_truncated));
    json_object_object_add(o, "p_slow_body", json_object_new_double(s->p_slow_body));
    json_object_object_add(o, "slow_body_ms", json_object_new_int64(s->slow_body_ms));
    json_object_object_add(o, "rate", json_object_new_double(s->rate));
    json_object_object_add(o, "search_shape", json_object_new_string(shape_names[s->search_shape]));
    if (s->paths == ALL_PATHS) {
        paths = NULL;
    } else {
        paths = json_object_new_array();
        for (int ep = 0; ep < ENDPOINT_COUNT; ep++)
            if (s->paths & (1u << ep))
                json_object_array_add(paths,
                                      json_object_new_string(endpoint_name((enum endpoint)ep)));
    }
    json_object_object_add(o, "paths", paths);
    json_object_object_add(o, "index_custom", json_object_new_boolean(s->index_custom));
    json_object_object_add(o, "index_fault",
                           json_object_new_string(index_fault_names[s->index_fault]));
    json_object_object_add(o, "index_fault_from", json_object_new_int64(s->index_fault_from));
    json_object_object_add(o, "max_channels", json_object_new_int64(s->max_channels));
    return o;
}
