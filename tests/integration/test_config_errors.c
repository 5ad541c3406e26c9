/*
 * Every configuration error of issue 3, through the real binary: exit 1 and a message naming
 * the file, the line and the key. All errors of a file are reported in one run.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proc.h"
#include "testutil.h"

static char dir[512];
static char conf[600];
static char keyfile[600];

static const char head[] = "[database]\n"                             /* 1 */
                           "conninfo = host=/nonexistent dbname=x\n"  /* 2 */
                           "[omnidesk]\n"                             /* 3 */
                           "brand_id = 1\n"                           /* 4 */
                           "[source customers]\n"                     /* 5 */
                           "table = public.customers\n"               /* 6 */
                           "primary_id = customer_no\n"               /* 7 */
                           "[omnidesk]\n";                            /* 8 */
/* Line 9 onwards is the test's. */

static void setup(void)
{
    ck_assert_int_eq(testutil_mkdtemp(dir, sizeof(dir)), 0);
    snprintf(conf, sizeof(conf), "%s/omnisync.conf", dir);
    snprintf(keyfile, sizeof(keyfile), "%s/key", dir);
    ck_assert_int_eq(testutil_write_file(keyfile, "k3y-v4lue\n", 0600), 0);
}

static void teardown(void)
{
    testutil_rm_rf(dir);
}

/* Writes head + base_url/key lines + tail and runs `omnisync check`; returns stderr. */
static char *check_with(const char *tail, int *code)
{
    char text[4096];
    snprintf(text, sizeof(text), "%sbase_url = http://127.0.0.1:9\napi_key_file = %s\n%s", head,
             keyfile, tail);
    ck_assert_int_eq(testutil_write_file(conf, text, 0600), 0);
    char *argv[] = {OMNISYNC_BIN, "--config", conf, "check", NULL};
    char *err = NULL;
    *code = proc_run(argv, NULL, 30000, NULL, &err);
    return err;
}

/* The tail starts at line 11 (after base_url and api_key_file). */
static void expect(const char *tail, const char *line, const char *key, const char *what)
{
    int code;
    char *err = check_with(tail, &code);
    char where[700];
    snprintf(where, sizeof(where), "%s:%s:", conf, line);
    ck_assert_msg(code == 1, "exit %d, want 1, for:\n%s\n%s", code, tail, err);
    ck_assert_msg(strstr(err, where) != NULL, "no \"%s\" in: %s", where, err);
    ck_assert_msg(strstr(err, key) != NULL, "no key \"%s\" in: %s", key, err);
    ck_assert_msg(strstr(err, what) != NULL, "no \"%s\" in: %s", what, err);
    ck_assert_ptr_null(strstr(err, "k3y-v4lue"));
    free(err);
}

START_TEST(test_unknown_section)
{
    expect("[plugins]\nx = 1\n", "11", "[plugins]", "unknown section");
}
END_TEST

START_TEST(test_unknown_key)
{
    expect("[delivery]\nmax_attempt = 3\n", "12", "max_attempt", "unknown key");
}
END_TEST

START_TEST(test_bad_number)
{
    expect("[delivery]\nbatch_size = many\n", "12", "batch_size", "bad number");
    expect("[omnidesk]\nmax_in_flight = 0\n", "12", "max_in_flight", "out of range");
}
END_TEST

START_TEST(test_bad_duration)
{
    expect("[delivery]\nretention = 7 days\n", "12", "retention", "bad duration");
}
END_TEST

START_TEST(test_bad_enum)
{
    expect("[omnidesk]\npurge_endpoint = v3\n", "12", "purge_endpoint", "v2 or legacy");
    expect("[log]\nformat = xml\n", "12", "format", "logfmt or json");
}
END_TEST

START_TEST(test_bad_listen)
{
    expect("[health]\nlisten = 0.0.0.0\n", "12", "listen", "bad listen address");
    expect("[health]\nlisten = 127.0.0.1:99999\n", "12", "listen", "bad listen address");
}
END_TEST

START_TEST(test_key_file_readable_by_others)
{
    ck_assert_int_eq(chmod(keyfile, 0644), 0);
    expect("", "10", "api_key_file", "readable by group or others");
}
END_TEST

START_TEST(test_http_base_url_not_loopback)
{
    int code;
    char text[2048];
    snprintf(text, sizeof(text), "%sbase_url = http://acme.omnidesk.com\napi_key_file = %s\n", head,
             keyfile);
    ck_assert_int_eq(testutil_write_file(conf, text, 0600), 0);
    char *argv[] = {OMNISYNC_BIN, "--config", conf, "check", NULL};
    char *err = NULL;
    code = proc_run(argv, NULL, 30000, NULL, &err);
    ck_assert_int_eq(code, 1);
    char where[700];
    snprintf(where, sizeof(where), "%s:9: [omnidesk] base_url", conf);
    ck_assert_msg(strstr(err, where) != NULL, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "not loopback"));
    free(err);
}
END_TEST

START_TEST(test_source_without_table_or_primary_id)
{
    expect("[source leads]\nfirstname = first_name\n", "11", "[source leads] table", "missing");
    expect("[source leads]\ntable = leads\n", "11", "[source leads] primary_id", "missing");
}
END_TEST

START_TEST(test_all_errors_in_one_run)
{
    int code;
    char *err = check_with("[delivery]\nbatch_size = x\nretention = forever\n[log]\nlevel = loud\n",
                           &code);
    ck_assert_int_eq(code, 1);
    ck_assert_ptr_nonnull(strstr(err, ":12: [delivery] batch_size"));
    ck_assert_ptr_nonnull(strstr(err, ":13: [delivery] retention"));
    ck_assert_ptr_nonnull(strstr(err, ":15: [log] level"));
    free(err);
}
END_TEST

START_TEST(test_usage_errors_exit_2)
{
    char *argv1[] = {OMNISYNC_BIN, "frobnicate", NULL};
    ck_assert_int_eq(proc_run(argv1, NULL, 10000, NULL, NULL), 2);
    char *argv2[] = {OMNISYNC_BIN, NULL};
    ck_assert_int_eq(proc_run(argv2, NULL, 10000, NULL, NULL), 2);
    char *argv3[] = {OMNISYNC_BIN, "migrate", "--bogus", NULL};
    ck_assert_int_eq(proc_run(argv3, NULL, 10000, NULL, NULL), 2);
    char *out = NULL;
    char *argv4[] = {OMNISYNC_BIN, "migrate", "--help", NULL};
    ck_assert_int_eq(proc_run(argv4, NULL, 10000, &out, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: omnisync"));
    free(out);
    char *argv5[] = {OMNISYNC_BIN, "version", NULL};
    ck_assert_int_eq(proc_run(argv5, NULL, 10000, &out, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "libuv "));
    ck_assert_ptr_nonnull(strstr(out, "libpq "));
    ck_assert_ptr_nonnull(strstr(out, "libcurl "));
    ck_assert_ptr_nonnull(strstr(out, "json-c "));
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config_errors");
    TCase *tc = tcase_create("config_errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_unknown_section);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_bad_number);
    tcase_add_test(tc, test_bad_duration);
    tcase_add_test(tc, test_bad_enum);
    tcase_add_test(tc, test_bad_listen);
    tcase_add_test(tc, test_key_file_readable_by_others);
    tcase_add_test(tc, test_http_base_url_not_loopback);
    tcase_add_test(tc, test_source_without_table_or_primary_id);
    tcase_add_test(tc, test_all_errors_in_one_run);
    tcase_add_test(tc, test_usage_errors_exit_2);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
