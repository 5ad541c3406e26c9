/* Unit tests of lib/log: formats, levels, the journal prefix, caps, conninfo redaction. */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static char captured[16384];

/* Runs fn with stderr redirected to a temp file, then reads what was written into captured. */
static void capture(void (*fn)(void))
{
    char path[] = "/tmp/omnisync-log-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, captured, sizeof(captured) - 1, 0);
    captured[n < 0 ? 0 : n] = '\0';
    close(fd);
    unlink(path);
}

static void write_info(void)
{
    log_info("row delivered outbox_id=%d primary_id=%s op=%s", 42, "C-1", "create");
}

START_TEST(test_logfmt_line)
{
    unsetenv("JOURNAL_STREAM");
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
    capture(write_info);
    ck_assert_msg(strncmp(captured, "ts=", 3) == 0, "%s", captured);
    ck_assert_ptr_nonnull(strstr(captured, " level=info msg=\"row delivered\" outbox_id=42 "
                                           "primary_id=C-1 op=create\n"));
    ck_assert_ptr_eq(strchr(captured, '\n'), captured + strlen(captured) - 1);
}
END_TEST

static void write_json(void)
{
    log_warn("api said \"no\" outbox_id=7 error=\"HTTP 400: bad\" ratio=0.5 name=x");
}

START_TEST(test_json_line)
{
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture(write_json);
    struct json_object *obj = json_tokener_parse(captured);
    ck_assert_msg(obj != NULL, "not JSON: %s", captured);
    struct json_object *v;
    ck_assert(json_object_object_get_ex(obj, "level", &v));
    ck_assert_str_eq(json_object_get_string(v), "warn");
    ck_assert(json_object_object_get_ex(obj, "msg", &v));
    ck_assert_str_eq(json_object_get_string(v), "api said \"no\"");
    ck_assert(json_object_object_get_ex(obj, "outbox_id", &v));
    ck_assert(json_object_is_type(v, json_type_int));
    ck_assert_int_eq(json_object_get_int(v), 7);
    ck_assert(json_object_object_get_ex(obj, "error", &v));
    ck_assert_str_eq(json_object_get_string(v), "HTTP 400: bad");
    ck_assert(json_object_object_get_ex(obj, "ratio", &v));
    ck_assert(json_object_is_type(v, json_type_double));
    ck_assert(json_object_object_get_ex(obj, "name", &v));
    ck_assert_str_eq(json_object_get_string(v), "x");
    json_object_put(obj);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
}
END_TEST

static void write_levels(void)
{
    log_debug("hidden debug");
    log_info("hidden info");
    log_warn("shown warn");
    log_error("shown error");
}

START_TEST(test_level_filter)
{
    log_configure(LOG_LEVEL_WARN, LOG_FORMAT_LOGFMT);
    capture(write_levels);
    ck_assert_ptr_null(strstr(captured, "hidden"));
    ck_assert_ptr_nonnull(strstr(captured, "shown warn"));
    ck_assert_ptr_nonnull(strstr(captured, "shown error"));
    enum log_level level;
    ck_assert_int_eq(log_level_parse("debug", &level), 0);
    ck_assert_int_eq(level, LOG_LEVEL_DEBUG);
    ck_assert_int_ne(log_level_parse("verbose", &level), 0);
    enum log_format format;
    ck_assert_int_eq(log_format_parse("json", &format), 0);
    ck_assert_int_ne(log_format_parse("xml", &format), 0);
}
END_TEST

static void write_control_chars(void)
{
    log_error("line one\nline two\ttab");
}

START_TEST(test_one_line_per_event)
{
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
    capture(write_control_chars);
    ck_assert_ptr_nonnull(strstr(captured, "line one\\nline two\\ttab"));
    ck_assert_ptr_eq(strchr(captured, '\n'), captured + strlen(captured) - 1);
}
END_TEST

static void write_huge(void)
{
    char big[10000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_error("%s", big);
}

START_TEST(test_line_is_capped)
{
    capture(write_huge);
    ck_assert_uint_le(strlen(captured), 4096);
    ck_assert_int_eq(captured[strlen(captured) - 1], '\n');
}
END_TEST

START_TEST(test_journal_prefix)
{
    char path[] = "/tmp/omnisync-journal-XXXXXX";
    int fd = mkstemp(path);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    char env[64];
    snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
    log_warn("to the journal");
    log_error("an error");
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, captured, sizeof(captured) - 1, 0);
    captured[n < 0 ? 0 : n] = '\0';
    close(fd);
    unlink(path);
    ck_assert_msg(strncmp(captured, "<4>ts=", 6) == 0, "%s", captured);
    ck_assert_ptr_nonnull(strstr(captured, "\n<3>ts="));
}
END_TEST

START_TEST(test_conninfo_redacted)
{
    char out[512];
    log_conninfo_redacted("host=/run/postgresql dbname=crm user=omnisync password=hunter2", out,
                          sizeof(out));
    ck_assert_ptr_null(strstr(out, "hunter2"));
    ck_assert_ptr_nonnull(strstr(out, "password=***"));
    ck_assert_ptr_nonnull(strstr(out, "dbname=crm"));
    ck_assert_ptr_nonnull(strstr(out, "user=omnisync"));

    log_conninfo_redacted("postgresql://omnisync:hunter2@db.example/crm?sslmode=require", out,
                          sizeof(out));
    ck_assert_ptr_null(strstr(out, "hunter2"));
    ck_assert_ptr_nonnull(strstr(out, "host=db.example"));

    /* Unparsable input may contain a password: print nothing of it. */
    log_conninfo_redacted("host=x password='hunter2", out, sizeof(out));
    ck_assert_str_eq(out, "(unparsable conninfo)");

    /* A tiny buffer is cut, never overrun, and still holds no secret. */
    char tiny[12];
    log_conninfo_redacted("password=hunter2 host=x", tiny, sizeof(tiny));
    ck_assert_ptr_null(strstr(tiny, "hunter"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_test(tc, test_logfmt_line);
    tcase_add_test(tc, test_json_line);
    tcase_add_test(tc, test_level_filter);
    tcase_add_test(tc, test_one_line_per_event);
    tcase_add_test(tc, test_line_is_capped);
    tcase_add_test(tc, test_journal_prefix);
    tcase_add_test(tc, test_conninfo_redacted);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
