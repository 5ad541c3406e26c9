/*
 * omnidesk_request: the multipart body built as one buffer, without a socket. Its layout is
 * libcurl's mime layout byte for byte (checked against a real curl request by fuzz_body, which
 * also decodes every field back); here: the exact bytes, the name escaping, and a boundary that
 * a value holds is never used.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "omnidesk_request.h"

START_TEST(test_multipart_layout)
{
    const struct omnidesk_field fields[] = {
        {"brand_id", "1"}, {"firstname", NULL}, {"primary_id", "C\r\n1"}, {"we\"ird\r\n", "x"}};
    char boundary[OMNIDESK_BOUNDARY_LEN + 1];
    char expected[1024];
    uint64_t seq = 7;
    char *body = NULL;
    size_t len = 0;

    ck_assert_int_eq(omnidesk_request_multipart(fields, 4, &seq, &body, &len, boundary), 0);
    ck_assert_uint_eq(seq, 8);
    ck_assert_uint_eq(strlen(boundary), OMNIDESK_BOUNDARY_LEN);
    ck_assert(strncmp(boundary, "------------------------", 24) == 0);
    for (size_t i = 24; i < OMNIDESK_BOUNDARY_LEN; i++)
        ck_assert(strchr("0123456789abcdef", boundary[i]) != NULL);
    snprintf(expected, sizeof(expected),
             "--%s\r\nContent-Disposition: form-data; name=\"brand_id\"\r\n\r\n1\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"primary_id\"\r\n\r\nC\r\n1\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"we%%22ird%%0D%%0A\"\r\n\r\nx\r\n"
             "--%s--\r\n",
             boundary, boundary, boundary, boundary);
    ck_assert_uint_eq(len, strlen(expected));
    ck_assert_str_eq(body, expected);
    free(body);
}
END_TEST

START_TEST(test_multipart_no_fields)
{
    char boundary[OMNIDESK_BOUNDARY_LEN + 1];
    char expected[64];
    uint64_t seq = 0;
    char *body = NULL;
    size_t len = 0;

    ck_assert_int_eq(omnidesk_request_multipart(NULL, 0, &seq, &body, &len, boundary), 0);
    snprintf(expected, sizeof(expected), "--%s--\r\n", boundary);
    ck_assert_str_eq(body, expected);
    free(body);
}
END_TEST

/* A value that holds the next boundary of the sequence (and the one after) moves it on. */
START_TEST(test_multipart_boundary_not_in_values)
{
    char first[OMNIDESK_BOUNDARY_LEN + 1], second[OMNIDESK_BOUNDARY_LEN + 1];
    char boundary[OMNIDESK_BOUNDARY_LEN + 1];
    char value[2 * OMNIDESK_BOUNDARY_LEN + 8];
    uint64_t seq = 100;
    char *body = NULL;
    size_t len = 0;
    const struct omnidesk_field none[] = {{"a", "b"}};

    /* The boundaries at 100 and 101, as the builder would draw them. */
    ck_assert_int_eq(omnidesk_request_multipart(none, 1, &seq, &body, &len, first), 0);
    free(body);
    ck_assert_int_eq(omnidesk_request_multipart(none, 1, &seq, &body, &len, second), 0);
    free(body);
    ck_assert_str_ne(first, second);

    snprintf(value, sizeof(value), "x%sy%s", first, second);
    const struct omnidesk_field fields[] = {{"primary_id", "P1"}, {"notes", value}};
    seq = 100;
    ck_assert_int_eq(omnidesk_request_multipart(fields, 2, &seq, &body, &len, boundary), 0);
    ck_assert_uint_eq(seq, 103);
    ck_assert_str_ne(boundary, first);
    ck_assert_str_ne(boundary, second);
    ck_assert_ptr_null(strstr(value, boundary));
    free(body);
}
END_TEST

START_TEST(test_multipart_too_many_fields)
{
    struct omnidesk_field fields[OMNIDESK_MAX_FIELDS + 1];
    char boundary[OMNIDESK_BOUNDARY_LEN + 1];
    uint64_t seq = 0;
    char *body = NULL;
    size_t len = 0;

    for (size_t i = 0; i < OMNIDESK_MAX_FIELDS + 1; i++)
        fields[i] = (struct omnidesk_field){"f", "v"};
    ck_assert_int_eq(
        omnidesk_request_multipart(fields, OMNIDESK_MAX_FIELDS + 1, &seq, &body, &len, boundary),
        OMNISYNC_EINVAL);
    ck_assert_ptr_null(body);
}
END_TEST

/* The shared lines: apiKey first, then Accept and the empty Expect; a reference keeps them. */
START_TEST(test_headers_shared)
{
    struct omnidesk_headers *h = omnidesk_request_headers_new("k3y", 3);
    struct curl_slist *l;

    ck_assert_ptr_nonnull(h);
    l = h->list;
    ck_assert_str_eq(l->data, "apiKey: k3y");
    ck_assert_str_eq(l->next->data, "Accept: application/json");
    ck_assert_str_eq(l->next->next->data, "Expect:");
    ck_assert_ptr_null(l->next->next->next);
    ck_assert_ptr_eq(omnidesk_request_headers_ref(h), h);
    ck_assert_uint_eq(h->refs, 2);
    omnidesk_request_headers_unref(h);
    ck_assert_str_eq(h->list->data, "apiKey: k3y");
    omnidesk_request_headers_unref(h);
    omnidesk_request_headers_unref(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("omnidesk_request");
    TCase *tc = tcase_create("omnidesk_request");
    tcase_add_test(tc, test_multipart_layout);
    tcase_add_test(tc, test_multipart_no_fields);
    tcase_add_test(tc, test_multipart_boundary_not_in_values);
    tcase_add_test(tc, test_multipart_too_many_fields);
    tcase_add_test(tc, test_headers_shared);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
