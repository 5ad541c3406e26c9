/*
 * Unit tests of lib/reconcile_page: the one-pass reader of index pages and CRM rows takes what
 * the API and PostgreSQL send (escapes, surrogate pairs, numbers as ids and as text, nulls, any
 * other members) and reads it exactly as json-c with reconcile_page_check and
 * reconcile_remote_parse would; everything else (a failing check, a wrong type, json-c's
 * leniencies, duplicates, \u0000, a lone surrogate) is left to json-c. tests/fuzz/fuzz_index_page
 * checks the same property on any bytes.
 */
#include <check.h>
#include <json-c/json.h>
#include <string.h>

#include "reconcile_page.h"

/* A CRM row as jsonb_build_object(...)::text gives it. */
#define CRM_ROW                                                                                    \
    "{\"email\": \"c1@example.com\", \"lastname\": \"Smith\", \"firstname\": \"Ann\", "            \
    "\"telephone\": \"+31610000001\", \"custom.tier\": \"gold\"}"

static void same_text(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        ck_assert_ptr_eq(a, b);
    else
        ck_assert_str_eq(a, b);
}

static void same_pairs(const struct reconcile_pair *a, size_t na, const struct reconcile_pair *b,
                       size_t nb)
{
    ck_assert_uint_eq(na, nb);
    for (size_t i = 0; i < na; i++) {
        same_text(a[i].name, b[i].name);
        same_text(a[i].value, b[i].value);
    }
}

/* The page through both paths: the fast one must take it and agree with json-c's. */
static void fast_as_json_c(const char *text, long long start, long long limit,
                           long long first_total, struct reconcile_page_items *fast)
{
    char err[256];
    struct reconcile_page page;
    ck_assert_msg(reconcile_page_parse(text, strlen(text), start, limit, first_total, fast) == 0,
                  "fast path gave up on %s", text);
    struct json_object *root = json_tokener_parse(text);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(reconcile_page_check(root, start, limit, first_total, &page, err, sizeof(err)),
                     0);
    ck_assert_int_eq(page.item_total, fast->item_total);
    ck_assert_uint_eq(page.nitems, fast->n);
    for (size_t i = 0; i < page.nitems; i++) {
        struct reconcile_remote r;
        const struct reconcile_remote *f = &fast->v[i];
        ck_assert_int_eq(
            reconcile_remote_parse(json_object_array_get_idx(page.items, i), &r, err, sizeof(err)),
            0);
        ck_assert_int_eq(r.id, f->id);
        ck_assert_int_eq(r.brand_id, f->brand_id);
        ck_assert_int_eq(r.custom_known, f->custom_known);
        same_text(r.primary_id, f->primary_id);
        same_text(r.firstname, f->firstname);
        same_text(r.lastname, f->lastname);
        same_pairs(r.channels, r.nchannels, f->channels, f->nchannels);
        same_pairs(r.custom, r.ncustom, f->custom, f->ncustom);
        reconcile_remote_free(&r);
    }
    json_object_put(root);
}

START_TEST(test_fast_pages_read_as_json_c)
{
    struct reconcile_page_items p;
    /* The fake's page, as the bench reads it 203 times. */
    fast_as_json_c(
        "{\"type\":\"result\",\"itemStart\":0,\"itemTotal\":2,\"itemLimit\":2,\"items\":["
        "{\"id\":1,\"external_primary_id\":\"C000001\",\"brand_id\":1,\"firstname\":\"Ann\","
        "\"lastname\":\"Smith\",\"custom\":{\"tier\":\"gold\"},\"channels\":[{\"type\":\"email\","
        "\"value\":\"c1@example.com\"},{\"type\":\"telephone\",\"value\":\"+31610000001\"}]},"
        "{\"id\":2,\"external_primary_id\":\"C000002\",\"brand_id\":1,\"firstname\":\"Ann\","
        "\"lastname\":\"Smith\",\"custom\":{\"tier\":\"gold\"},\"channels\":[]}]}",
        0, 2, -1, &p);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_str_eq(p.v[0].channels[1].value, "+31610000001");
    reconcile_page_items_free(&p);

    /* Escapes as PHP's json_encode writes them (\u for every non-ASCII letter, a surrogate pair
     * for an emoji, an escaped slash), whitespace anywhere, ids as digit strings, a numeric
     * external id, nulls, members reconcile does not read (nested, numbers of every form). */
    fast_as_json_c(" {\"itemTotal\" : \"3\" , \"items\" : [ {\"id\":\"5\", \"firstname\":"
                   "\"\\u0141ukasz \\u0160 \\ud83d\\ude00 \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\","
                   "\"lastname\":null,\"brand_id\":null,\"x\":{\"y\":[true,false,null,-1,0,1.5,"
                   "-0.0e+1,1E9,123456789012345678901234]}} , {\"id\":6,\"external_primary_id\":"
                   "\"\"}, {\"id\":7,\"external_primary_id\":1234,\"brand_id\":\"2\"} ],"
                   " \"itemStart\": null}\r\n",
                   0, 99, -1, &p);
    ck_assert_str_eq(p.v[0].firstname, "\xc5\x81ukasz \xc5\xa0 \xf0\x9f\x98\x80 \"q\" \\ / "
                                       "\b\f\n\r\t");
    ck_assert_ptr_null(p.v[1].primary_id); /* "" is none: not omnisync's */
    ck_assert_str_eq(p.v[2].primary_id, "1234");
    ck_assert_int_eq(p.v[2].brand_id, 2);
    reconcile_page_items_free(&p);

    /* Channels: "address" when there is no "value"; a null "value" hides an "address"; entries
     * of another shape and oversized values skipped. Custom fields: ints and booleans as text,
     * null not set, an empty object still says "custom fields known". */
    char big[RECONCILE_VALUE_MAX + 1024];
    snprintf(big, sizeof(big),
             "{\"itemTotal\":4,\"itemStart\":2,\"items\":[{\"id\":1,"
             "\"channels\":[{\"type\":\"email\",\"address\":\"a@b\"},{\"address\":\"x\","
             "\"type\":\"email\",\"value\":null},[1],\"s\",{},{\"type\":1,\"value\":\"v\"},"
             "{\"type\":\"t\",\"value\":\"%0*d\"}],\"custom\":{\"a\":null,\"b\":7,\"c\":true,"
             "\"d\":false,\"e\":\"x\",\"f\":-3}},{\"id\":2,\"custom\":{}}]}",
             RECONCILE_VALUE_MAX + 1, 0);
    fast_as_json_c(big, 2, 2, 4, &p);
    ck_assert_uint_eq(p.v[0].nchannels, 1);
    ck_assert_uint_eq(p.v[0].ncustom, 5);
    ck_assert_str_eq(p.v[0].custom[1].value, "true");
    ck_assert_int_eq(p.v[1].custom_known, 1);
    reconcile_page_items_free(&p);

    /* A last page and a page beyond the end. */
    fast_as_json_c("{\"itemTotal\":3,\"items\":[{\"id\":3}]}", 2, 2, 3, &p);
    reconcile_page_items_free(&p);
    fast_as_json_c("{\"itemTotal\":3,\"items\":[]}", 4, 2, 3, &p);
    reconcile_page_items_free(&p);
}
END_TEST

START_TEST(test_left_to_json_c)
{
    static const char *const slow[] = {
        /* What reconcile_page_check or reconcile_remote_parse refuse: json-c words the error. */
        "[]",
        "{\"items\":[]}",
        "{\"itemTotal\":1,\"items\":{}}",
        "{\"itemTotal\":1,\"itemStart\":5,\"items\":[{\"id\":1}]}",
        "{\"itemTotal\":7,\"items\":[]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1},{\"id\":2}]}",
        "{\"itemTotal\":1,\"items\":[{}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":0}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"brand_id\":\"one\"}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"firstname\":[1]}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"channels\":{}}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"custom\":[]}]}",
        "{\"itemTotal\":1,\"items\":[1]}",
        /* Numbers json-c would convert (and print) its own way. */
        "{\"itemTotal\":1.0,\"items\":[{\"id\":1}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"external_primary_id\":-0}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1234567890123456789}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"custom\":{\"a\":1.5}}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"custom\":{\"a\":{}}}]}",
        /* Duplicates (json-c keeps the last), NULs, lone surrogates, control characters. */
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"id\":2}]}",
        "{\"itemTotal\":1,\"itemTotal\":1,\"items\":[{\"id\":1}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"custom\":{\"a\":null,\"a\":\"x\"}}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"channels\":[{\"type\":\"a\",\"type\":\"b\"}]}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"firstname\":\"a\\u0000b\"}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"firstname\":\"\\udc00\"}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"firstname\":\"\\ud800x\"}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"firstname\":\"a\tb\"}]}",
        /* json-c's leniencies: comments, single quotes, trailing bytes, capitals, NaN. */
        "{\"itemTotal\":1,\"items\":[{\"id\":1}]} x",
        "{/* c */\"itemTotal\":1,\"items\":[{\"id\":1}]}",
        "{'itemTotal':1,\"items\":[{\"id\":1}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"x\":True}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":1,\"x\":NaN}]}",
        "{\"itemTotal\":1,\"items\":[{\"id\":01}]}",
        "",
    };
    for (size_t i = 0; i < sizeof(slow) / sizeof(slow[0]); i++) {
        struct reconcile_page_items p;
        ck_assert_msg(reconcile_page_parse(slow[i], strlen(slow[i]), 0, 1, -1, &p) ==
                          RECONCILE_PAGE_SLOW,
                      "fast path took %s", slow[i]);
        ck_assert_ptr_null(p.v);
        ck_assert_uint_eq(p.n, 0);
    }
    /* The length is the text's: a NUL inside is not the end json-c would see. */
    struct reconcile_page_items p;
    const char nul[] = "{\"itemTotal\":0,\"items\":[]}\0 ";
    ck_assert_int_eq(reconcile_page_parse(nul, sizeof(nul) - 1, 0, 1, -1, &p), RECONCILE_PAGE_SLOW);
}
END_TEST

START_TEST(test_crm_rows)
{
    static const char *const fast[] = {
        CRM_ROW,
        "{\"a\": null, \"b\": 12, \"c\": true, \"d\": false, \"e\": \"\\u00e9\\n\", \"f\": -7}",
        "{}",
    };
    const int flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;
    for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
        struct json_object *mine = NULL, *theirs = json_tokener_parse(fast[i]);
        ck_assert_int_eq(reconcile_row_parse(fast[i], strlen(fast[i]), &mine), 0);
        ck_assert_str_eq(json_object_to_json_string_ext(mine, flags),
                         json_object_to_json_string_ext(theirs, flags));
        json_object_object_foreach(mine, key, value)
        {
            struct json_object *other = NULL;
            ck_assert(json_object_object_get_ex(theirs, key, &other));
            ck_assert_int_eq(json_object_get_type(value), json_object_get_type(other));
        }
        json_object_put(mine);
        json_object_put(theirs);
    }
    static const char *const slow[] = {
        "{\"a\": 1.5}",
        "{\"a\": {\"b\": 1}}",
        "{\"a\": [1]}",
        "{\"a\": 1, \"a\": 2}",
        "{\"a\": \"\\u0000\"}",
        "[]",
        "",
        "{} x",
        "{\"a\": 1} x",
    };
    for (size_t i = 0; i < sizeof(slow) / sizeof(slow[0]); i++) {
        struct json_object *mine = NULL;
        ck_assert_msg(reconcile_row_parse(slow[i], strlen(slow[i]), &mine) == RECONCILE_PAGE_SLOW,
                      "fast path took %s", slow[i]);
        ck_assert_ptr_null(mine);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reconcile_page");
    TCase *tc = tcase_create("reconcile_page");
    tcase_add_test(tc, test_fast_pages_read_as_json_c);
    tcase_add_test(tc, test_left_to_json_c);
    tcase_add_test(tc, test_crm_rows);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
