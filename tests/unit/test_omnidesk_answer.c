/*
 * omnidesk_answer: Omnidesk's answers classified without a socket (issue 13 item 7). A table of
 * (endpoint, status, body) and what they mean; the transfer failures from curl's facts.
 */
#include <check.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "omnidesk_answer.h"

struct answer_case {
    enum omnidesk_endpoint endpoint;
    long status;
    const char *body;
    enum omnidesk_class class;
    long long customer_id;
    const char *error_part; /* a piece r.error must hold; NULL: empty */
};

static const struct answer_case cases[] = {
    {OMNIDESK_CREATE, 200, "{\"customer\":{\"id\":5}}", OMNIDESK_OK, 0, NULL},
    {OMNIDESK_SEARCH, 200, "{\"customer\":{\"id\":42}}", OMNIDESK_OK, 42, NULL},
    {OMNIDESK_SEARCH, 200, "{\"id\":\"77\"}", OMNIDESK_OK, 77, NULL},
    {OMNIDESK_SEARCH, 200, "{\"items\":[{\"id\":9}]}", OMNIDESK_OK, 9, NULL},
    {OMNIDESK_SEARCH, 200, "{\"items\":[]}", OMNIDESK_NOT_FOUND, 0, "no such customer"},
    {OMNIDESK_SEARCH, 200, "[]", OMNIDESK_NOT_FOUND, 0, "no such customer"},
    {OMNIDESK_SEARCH, 200, "{\"customer\":{\"id\":99999999999999999999}}", OMNIDESK_TRANSIENT, 0,
     "malformed answer"},
    {OMNIDESK_SEARCH, 200, "<html>", OMNIDESK_TRANSIENT, 0, "unparseable answer"},
    {OMNIDESK_UPDATE, 200, "{\"type\":\"error\",\"message\":\"nope\"}", OMNIDESK_PERMANENT, 0,
     "answered 200 with an error body: nope"},
    /* "type" is exactly "error": a JSON string with a NUL after "error" is not (strcmp said it
     * was, and a 200 that was applied failed its row). */
    {OMNIDESK_UPDATE, 200, "{\"type\":\"error\\u0000x\",\"message\":\"m\"}", OMNIDESK_OK, 0, NULL},
    {OMNIDESK_SEARCH, 200, "{\"type\":\"error\",\"id\":5}", OMNIDESK_PERMANENT, 0,
     "answered 200 with an error body: {"},
    {OMNIDESK_UPDATE, 401, "", OMNIDESK_AUTH, 0, "HTTP 401"},
    {OMNIDESK_UPDATE, 403, "", OMNIDESK_AUTH, 0, "HTTP 403"},
    {OMNIDESK_UPDATE, 404, "{\"message\":\"gone\"}", OMNIDESK_NOT_FOUND, 0, "HTTP 404: gone"},
    {OMNIDESK_CREATE, 400, "{\"message\":\"bad\\nemail\"}", OMNIDESK_PERMANENT, 0,
     "HTTP 400: bad email"},
    {OMNIDESK_CREATE, 429, "", OMNIDESK_TRANSIENT, 0, "HTTP 429"},
    {OMNIDESK_CREATE, 502, "<html>bad gateway</html>", OMNIDESK_TRANSIENT, 0,
     "HTTP 502: <html>bad gateway</html>"},
    {OMNIDESK_CREATE, 302, "", OMNIDESK_TRANSIENT, 0, "HTTP 302"},
};

START_TEST(test_answer_table)
{
    const struct answer_case *c = &cases[_i];
    struct omnidesk_response r;
    memset(&r, 0, sizeof(r));
    r.http_status = c->status;
    omnidesk_answer_classify(c->endpoint, c->body, strlen(c->body), &r);
    ck_assert_msg(r.class == c->class, "case %d: class %s, expected %s", _i,
                  omnidesk_class_name(r.class), omnidesk_class_name(c->class));
    ck_assert_int_eq(r.customer_id, c->customer_id);
    if (c->customer_id > 0)
        ck_assert_ptr_nonnull(r.customer);
    if (c->error_part == NULL)
        ck_assert_str_eq(r.error, "");
    else
        ck_assert_msg(strstr(r.error, c->error_part) != NULL, "case %d: error \"%s\"", _i, r.error);
    json_object_put(r.customer);
}
END_TEST

START_TEST(test_raw_body_is_cut_and_printable)
{
    char body[1000];
    memset(body, 'x', sizeof(body));
    body[3] = '\n';
    body[4] = (char)0xff;
    struct omnidesk_response r;
    memset(&r, 0, sizeof(r));
    r.http_status = 500;
    omnidesk_answer_classify(OMNIDESK_CREATE, body, sizeof(body), &r);
    ck_assert_int_eq(r.class, OMNIDESK_TRANSIENT);
    ck_assert_ptr_null(strchr(r.error, '\n'));
    ck_assert_ptr_nonnull(strstr(r.error, "xxx ?xxx"));
    ck_assert_ptr_nonnull(strstr(r.error, "..."));
    ck_assert_uint_le(strlen(r.error), strlen("HTTP 500: ") + RAW_BODY_QUOTE + 3);
}
END_TEST

START_TEST(test_transport_words)
{
    struct omnidesk_response r;
    struct omnidesk_transport_facts f = {
        .curl_code = CURLE_OPERATION_TIMEDOUT, .elapsed_ms = 1000, .timeout_ms = 1000};
    memset(&r, 0, sizeof(r));
    omnidesk_answer_transport(&f, &r);
    ck_assert_int_eq(r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(r.transport_error, CURLE_OPERATION_TIMEDOUT);
    ck_assert_str_eq(r.error, "connect timeout after 1000 ms");

    f.connected = 1;
    f.received = 1;
    memset(&r, 0, sizeof(r));
    omnidesk_answer_transport(&f, &r);
    ck_assert_ptr_nonnull(strstr(r.error, "while receiving the answer"));

    struct omnidesk_transport_facts reset = {.curl_code = CURLE_RECV_ERROR,
                                             .errbuf = "Connection reset by peer"};
    memset(&r, 0, sizeof(r));
    omnidesk_answer_transport(&reset, &r);
    ck_assert_str_eq(r.error, "connection reset");

    struct omnidesk_transport_facts big = {
        .curl_code = CURLE_WRITE_ERROR, .body_overflow = 1, .max_body = 1024};
    memset(&r, 0, sizeof(r));
    omnidesk_answer_transport(&big, &r);
    ck_assert_str_eq(r.error, "response body exceeds 1024 bytes");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("omnidesk_answer");
    TCase *tc = tcase_create("omnidesk_answer");
    tcase_add_loop_test(tc, test_answer_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, test_raw_body_is_cut_and_printable);
    tcase_add_test(tc, test_transport_words);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
