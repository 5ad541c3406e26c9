/*
 * fuzz_index_page: lib/reconcile_page.c's one-pass reader held to json-c, on any bytes.
 *
 * Input: byte 0 picks the request (itemStart = (b & 3) * limit, itemLimit = 1 + (b >> 2 & 3),
 * the first page's itemTotal -1 when b >> 4 is 15, else b >> 4); the rest is the page's text.
 * The same text also goes through reconcile_row_parse as a CRM row.
 *
 * Properties: whenever reconcile_page_parse takes a page, json_tokener_parse of the same text
 * followed by reconcile_page_check and reconcile_remote_parse of every entry succeeds too, with
 * the same itemTotal and entry for entry the same customer (id, brand, external id, names,
 * channels and custom fields in the same order, custom_known); whenever reconcile_row_parse
 * takes a row, json-c builds an object that prints the same. The fast path may give up on
 * anything (json-c then decides), but what it takes it reads exactly as json-c.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reconcile_page.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_text(const char *a, const char *b)
{
    if ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0))
        abort();
}

static void same_pairs(const struct reconcile_pair *a, size_t na, const struct reconcile_pair *b,
                       size_t nb)
{
    if (na != nb)
        abort();
    for (size_t i = 0; i < na; i++) {
        same_text(a[i].name, b[i].name);
        same_text(a[i].value, b[i].value);
    }
}

static void same_remote(const struct reconcile_remote *a, const struct reconcile_remote *b)
{
    if (a->id != b->id || a->brand_id != b->brand_id || a->custom_known != b->custom_known ||
        a->seen != b->seen)
        abort();
    same_text(a->primary_id, b->primary_id);
    same_text(a->firstname, b->firstname);
    same_text(a->lastname, b->lastname);
    same_pairs(a->channels, a->nchannels, b->channels, b->nchannels);
    same_pairs(a->custom, a->ncustom, b->custom, b->ncustom);
}

static void check_page(const char *text, size_t len, long long start, long long limit,
                       long long first_total)
{
    struct reconcile_page_items fast;
    if (reconcile_page_parse(text, len, start, limit, first_total, &fast) != 0) {
        if (fast.v != NULL || fast.n != 0)
            abort(); /* given up: nothing left behind */
        return;
    }
    /* json-c reads the text as a C string, as classify() hands it over. */
    struct json_object *root = json_tokener_parse(text);
    struct reconcile_page page;
    char err[256];
    if (root == NULL ||
        reconcile_page_check(root, start, limit, first_total, &page, err, sizeof(err)) != 0 ||
        page.item_total != fast.item_total || page.nitems != fast.n)
        abort();
    for (size_t i = 0; i < page.nitems; i++) {
        struct reconcile_remote r;
        if (reconcile_remote_parse(json_object_array_get_idx(page.items, i), &r, err,
                                   sizeof(err)) != 0)
            abort();
        same_remote(&fast.v[i], &r);
        reconcile_remote_free(&r);
    }
    json_object_put(root);
    reconcile_page_items_free(&fast);
}

static void check_row(const char *text, size_t len)
{
    struct json_object *fast = NULL;
    if (reconcile_row_parse(text, len, &fast) != 0) {
        if (fast != NULL)
            abort();
        return;
    }
    struct json_object *slow = json_tokener_parse(text);
    if (slow == NULL)
        abort();
    const int flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;
    /* Printed strings would hide a type that differs (1 and "1" print apart, but an int64 and
     * a double of the same text would not): compare the types member by member too. */
    if (strcmp(json_object_to_json_string_ext(fast, flags),
               json_object_to_json_string_ext(slow, flags)) != 0)
        abort();
    json_object_object_foreach(fast, key, value)
    {
        struct json_object *other = NULL;
        if (!json_object_object_get_ex(slow, key, &other) ||
            json_object_get_type(value) != json_object_get_type(other))
            abort();
    }
    json_object_put(fast);
    json_object_put(slow);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    long long limit = 1 + ((data[0] >> 2) & 3);
    long long start = (data[0] & 3) * limit;
    long long first_total = (data[0] >> 4) == 15 ? -1 : data[0] >> 4;
    size_t len = size - 1;
    char *text = malloc(len + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, len);
    text[len] = '\0';
    check_page(text, len, start, limit, first_total);
    check_row(text, len);
    free(text);
    return 0;
}
