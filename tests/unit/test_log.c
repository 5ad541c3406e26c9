/* Unit tests of lib/log: formats, levels, the journal prefix, caps, conninfo redaction. */
#include <check.h>
#include <json-c/json.h>
#include <locale.h>
#include <wchar.h>
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

/* ---- hostile values: every path, both formats, parsed back by strict readers ---- */

#define MARKER "...[truncated]"
#define FIELDS_MAX 16

struct field {
    char key[64];
    char value[8192];
    int quoted; /* logfmt: written in quotes; JSON: a string */
};

/* Appends code point cp as UTF-8. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* Is s valid UTF-8? The test's own oracle: glibc's decoder in a UTF-8 locale. */
static int valid_utf8(const char *s, size_t n)
{
    mbstate_t st;
    memset(&st, 0, sizeof(st));
    for (size_t i = 0; i < n;) {
        wchar_t wc;
        size_t k = mbrtowc(&wc, s + i, n - i, &st);
        if (k == (size_t)-1 || k == (size_t)-2 || (unsigned long)wc > 0x10ffff)
            return 0;
        i += k == 0 ? 1 : k;
    }
    return 1;
}

/* What a value must read back as: each byte not part of a valid UTF-8 character is U+FFFD. */
static void expected_value(const char *s, size_t n, char *out)
{
    size_t o = 0;
    mbstate_t st;
    for (size_t i = 0; i < n;) {
        memset(&st, 0, sizeof(st));
        wchar_t wc;
        size_t k = mbrtowc(&wc, s + i, n - i, &st);
        /* glibc takes F4 90 80 80 for U+110000; RFC 3629 ends at U+10FFFF. */
        if (k == (size_t)-1 || k == (size_t)-2 || (unsigned long)wc > 0x10ffff) {
            o += put_utf8(out + o, 0xfffd);
            i++;
        } else {
            k = k == 0 ? 1 : k;
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
}

/*
 * A strict logfmt reader: `key=value` pairs separated by one space, keys [a-z0-9_.]+, a value
 * either bare (printable ASCII without space, quote, '=' or backslash) or a quoted string with
 * the escapes \" \\ \n \r \t \uXXXX, no raw control byte, valid UTF-8; the line ends with its
 * only newline. Returns the number of fields, or -1 with the reason in *why.
 */
static int read_logfmt(const char *line, struct field *f, const char **why)
{
    const char *p = line;
    int nf = 0;
    for (;;) {
        if (nf == FIELDS_MAX)
            return *why = "too many fields", -1;
        struct field *cur = &f[nf];
        size_t k = 0;
        while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.') {
            if (k + 1 < sizeof(cur->key))
                cur->key[k++] = *p;
            p++;
        }
        cur->key[k] = '\0';
        if (k == 0 || *p != '=')
            return *why = "no key=", -1;
        p++;
        size_t v = 0;
        cur->quoted = *p == '"';
        if (cur->quoted) {
            p++;
            while (*p != '"') {
                unsigned char c = (unsigned char)*p;
                if (c == '\0' || c < 0x20 || c == 0x7f)
                    return *why = "raw control byte or end inside quotes", -1;
                if (v + 8 >= sizeof(cur->value))
                    return *why = "value too long", -1;
                if (c != '\\') {
                    cur->value[v++] = *p++;
                    continue;
                }
                p++;
                switch (*p) {
                case '"':
                    cur->value[v++] = '"';
                    break;
                case '\\':
                    cur->value[v++] = '\\';
                    break;
                case 'n':
                    cur->value[v++] = '\n';
                    break;
                case 'r':
                    cur->value[v++] = '\r';
                    break;
                case 't':
                    cur->value[v++] = '\t';
                    break;
                case 'u': {
                    unsigned cp;
                    char hex[5] = {0};
                    memcpy(hex, p + 1, 4);
                    if (strlen(hex) != 4 || strspn(hex, "0123456789abcdefABCDEF") != 4)
                        return *why = "bad \\u escape", -1;
                    cp = (unsigned)strtoul(hex, NULL, 16);
                    if (cp >= 0xd800 && cp <= 0xdfff)
                        return *why = "surrogate escape", -1;
                    v += put_utf8(cur->value + v, cp);
                    p += 4;
                    break;
                }
                default:
                    return *why = "unknown escape", -1;
                }
                p++;
            }
            p++;
        } else {
            while (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '=' && *p != '\\') {
                if (v + 1 >= sizeof(cur->value))
                    return *why = "value too long", -1;
                cur->value[v++] = *p++;
            }
            if (v == 0)
                return *why = "empty bare value", -1;
        }
        cur->value[v] = '\0';
        if (!valid_utf8(cur->value, v))
            return *why = "invalid UTF-8 in a value", -1;
        nf++;
        if (*p == '\n')
            return p[1] == '\0' ? nf : (*why = "more than one line", -1);
        if (*p != ' ')
            return *why = "no single space between pairs", -1;
        p++;
    }
}

/* The same fields out of one JSON line, read with json-c in strict mode with UTF-8 checks. */
static int read_json(const char *line, struct field *f, const char **why)
{
    size_t len = strlen(line);
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL)
        return *why = "not exactly one line", -1;
    struct json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, line, (int)len - 1);
    int ok = obj != NULL && json_tokener_get_error(tok) == json_tokener_success &&
             json_tokener_get_parse_end(tok) == len - 1 &&
             json_object_is_type(obj, json_type_object);
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(obj);
        return *why = "not one strict JSON object", -1;
    }
    int nf = 0;
    json_object_object_foreach(obj, key, val)
    {
        if (nf == FIELDS_MAX)
            break;
        snprintf(f[nf].key, sizeof(f[nf].key), "%s", key);
        snprintf(f[nf].value, sizeof(f[nf].value), "%s", json_object_get_string(val));
        f[nf].quoted = json_object_is_type(val, json_type_string);
        nf++;
    }
    json_object_put(obj);
    return nf;
}

static const struct field *find_field(const struct field *f, int nf, const char *key)
{
    for (int i = 0; i < nf; i++)
        if (strcmp(f[i].key, key) == 0)
            return &f[i];
    return NULL;
}

/* got equals want, or is a marked cut of it: a non-empty prefix ending on a character. */
static void assert_round_trip(const char *got, const char *want, const char *what)
{
    if (strcmp(got, want) == 0)
        return;
    size_t glen = strlen(got), mlen = strlen(MARKER);
    ck_assert_msg(glen > mlen && strcmp(got + glen - mlen, MARKER) == 0,
                  "%s: value neither round-trips nor is marked cut: [%s] wanted [%.200s]", what,
                  got, want);
    size_t keep = glen - mlen;
    ck_assert_msg(keep >= 64 && strncmp(got, want, keep) == 0,
                  "%s: the cut value is not a prefix of the original: [%s]", what, got);
}

static const char forged[] = "X\nts=2026-01-01T00:00:00.000Z level=error msg=\"FORGED\"";
static char hostile_big[10241];
static char hostile_big_utf8[10241];
static char hostile_big_utf8_odd[10242]; /* "x" then 2-byte characters: cuts fall inside one */
static const char *const hostile[] = {
    forged,
    "Ok 2",
    "cr\rlf\r\n",
    "say \"hi\" \"",
    "back\\slash\\",
    "a=b c=d",
    " error=x",
    "ctl \x01\x02\x1b[31m\x7f\x08 end",
    "bad utf8 \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80",
    "separators \xe2\x80\xa8 \xe2\x80\xa9 nel \xc2\x85",
    "caf\xc3\xa9 \xf0\x9f\x99\x82",
    "",
    hostile_big,
    hostile_big_utf8,
    hostile_big_utf8_odd,
};
#define NHOSTILE (sizeof(hostile) / sizeof(hostile[0]))

static enum log_level hostile_level;
static int hostile_path;
static const char *hostile_value;
#define NPATHS 4

/* The shapes callers use: a value in the message, a bare pair in the middle, a quoted pair,
 * a last pair. */
static void write_hostile(void)
{
    const char *v = hostile_value;
    switch (hostile_path) {
    case 0:
        log_write(hostile_level, "row not sent: %s outbox_id=%lld primary_id=%s", v, 7LL, "P-1");
        break;
    case 1:
        log_write(hostile_level, "delivered outbox_id=%lld primary_id=%s rows=%zu", 7LL, v,
                  (size_t)2);
        break;
    case 2:
        log_write(hostile_level, "claiming rows failed error=\"%s\" outcomes=%zu", v, (size_t)2);
        break;
    default:
        log_write(hostile_level, "database notice conn=%s severity=%s sqlstate=%s", "work",
                  "NOTICE", v);
        break;
    }
}

START_TEST(test_hostile_values_never_forge_or_break_a_line)
{
    setlocale(LC_CTYPE, "C.UTF-8");
    unsetenv("JOURNAL_STREAM");
    memset(hostile_big, 'a', sizeof(hostile_big) - 1);
    for (size_t i = 0; i + 2 < sizeof(hostile_big_utf8); i += 2)
        memcpy(hostile_big_utf8 + i, "\xc3\xa9", 2);
    hostile_big[5000] = '\n';
    hostile_big_utf8_odd[0] = 'x';
    memcpy(hostile_big_utf8_odd + 1, hostile_big_utf8, strlen(hostile_big_utf8));
    static const char *const level_text[] = {"error", "warn", "info", "debug"};
    static const char *const path_key[NPATHS] = {"msg", "primary_id", "error", "sqlstate"};
    static const char *const path_next[NPATHS] = {"outbox_id", "rows", "outcomes", NULL};
    static char want[65536], want_msg[65536];
    static struct field f[FIELDS_MAX];
    for (int format = 0; format < 2; format++) {
        log_configure(LOG_LEVEL_DEBUG, format ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT);
        for (int level = LOG_LEVEL_ERROR; level <= LOG_LEVEL_DEBUG; level++) {
            for (int path = 0; path < NPATHS; path++) {
                for (size_t h = 0; h < NHOSTILE; h++) {
                    hostile_level = (enum log_level)level;
                    hostile_path = path;
                    hostile_value = hostile[h];
                    capture(write_hostile);
                    const char *why = "";
                    int nf = format ? read_json(captured, f, &why) : read_logfmt(captured, f, &why);
                    ck_assert_msg(nf > 0, "format %d path %d value %zu: %s: %.600s", format, path,
                                  h, why, captured);
                    ck_assert_uint_le(strlen(captured), 4096);
                    const struct field *lv = find_field(f, nf, "level");
                    ck_assert_ptr_nonnull(lv);
                    ck_assert_str_eq(lv->value, level_text[level]);
                    expected_value(hostile[h], strlen(hostile[h]), want);
                    const char *got_key = path_key[path];
                    if (path == 0) {
                        memcpy(want_msg, "row not sent: ", 14);
                        memcpy(want_msg + 14, want, strlen(want) + 1);
                        memcpy(want, want_msg, strlen(want_msg) + 1);
                    }
                    const struct field *got = find_field(f, nf, got_key);
                    ck_assert_msg(got != NULL, "no %s in %.300s", got_key, captured);
                    char what[64];
                    snprintf(what, sizeof(what), "format %d path %d value %zu", format, path, h);
                    assert_round_trip(got->value, want, what);
                    /* The pairs after the hostile one are still there, whole. */
                    if (path_next[path] != NULL)
                        ck_assert_msg(find_field(f, nf, path_next[path]) != NULL,
                                      "%s: %s lost: %.300s", what, path_next[path], captured);
                    /* Nothing but the writer's own keys. */
                    for (int i = 0; i < nf; i++)
                        ck_assert_msg(strchr("tlmpoerscd", f[i].key[0]) != NULL &&
                                          strcmp(f[i].key, "c") != 0,
                                      "%s: unexpected key %s", what, f[i].key);
                    ck_assert_msg(nf <= 7, "%s: %d fields: %.300s", what, nf, captured);
                }
            }
        }
    }
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
}
END_TEST

/* A value the format quotes (`error="%s"`) and a number keep their types in JSON; a numeric-
 * looking string from outside never becomes invalid JSON ("0x10", "1.", "01"). */
static void write_types(void)
{
    log_info("typed outbox_id=%lld ratio=%.1f hexish=%s dot=%s lead=%s quoted=\"%d\"", 7LL, 0.5,
             "0x10", "1.", "01", 3);
}

START_TEST(test_json_types)
{
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture(write_types);
    struct field f[FIELDS_MAX];
    const char *why = "";
    int nf = read_json(captured, f, &why);
    ck_assert_msg(nf > 0, "%s: %s", why, captured);
    ck_assert(!find_field(f, nf, "outbox_id")->quoted);
    ck_assert(!find_field(f, nf, "ratio")->quoted);
    ck_assert_str_eq(find_field(f, nf, "hexish")->value, "0x10");
    ck_assert_str_eq(find_field(f, nf, "dot")->value, "1.");
    ck_assert_str_eq(find_field(f, nf, "lead")->value, "01");
    ck_assert(find_field(f, nf, "quoted")->quoted);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
}
END_TEST

/*
 * A string conversion is a string in JSON whatever its bytes: a CRM primary id "12345", a
 * SQLSTATE "23505" or "1e5" from outside never turns into a JSON number (a reader would get
 * 100000 for "1e5", lose digits of a long id, and see one key change type from line to line).
 * Numbers come from numeric conversions and from the format's own text only (found by fuzz_log).
 */
static void write_numeric_strings(void)
{
    log_info("delivered outbox_id=%lld primary_id=%s sqlstate=%s exp=%s big=%s neg=%s ch=%c "
             "count=%d literal=12",
             7LL, "12345", "23505", "1e5", "123456789012345678901234567890", "-0", '5', 3);
}

START_TEST(test_json_string_conversions_stay_strings)
{
    static const char *const strings[][2] = {
        {"primary_id", "12345"}, {"sqlstate", "23505"},
        {"exp", "1e5"},          {"big", "123456789012345678901234567890"},
        {"neg", "-0"},           {"ch", "5"}};
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture(write_numeric_strings);
    struct field f[FIELDS_MAX];
    const char *why = "";
    int nf = read_json(captured, f, &why);
    ck_assert_msg(nf > 0, "%s: %s", why, captured);
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        const struct field *got = find_field(f, nf, strings[i][0]);
        ck_assert_msg(got != NULL, "no %s in %s", strings[i][0], captured);
        ck_assert_msg(got->quoted, "%s is not a string: %s", strings[i][0], captured);
        ck_assert_str_eq(got->value, strings[i][1]);
    }
    ck_assert(!find_field(f, nf, "outbox_id")->quoted);
    ck_assert(!find_field(f, nf, "count")->quoted);
    ck_assert(!find_field(f, nf, "literal")->quoted);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
}
END_TEST

/* Many long values: the line stays under its cap, parses, and says pairs were left out. */
static void write_many_long(void)
{
    log_warn("many a=%s b=%s c=%s d=%s e=%s f=%s", hostile_big, hostile_big, hostile_big,
             hostile_big, hostile_big, hostile_big);
}

START_TEST(test_line_cap_keeps_the_line_whole)
{
    memset(hostile_big, '\x01', sizeof(hostile_big) - 1);
    for (int format = 0; format < 2; format++) {
        log_configure(LOG_LEVEL_INFO, format ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT);
        capture(write_many_long);
        ck_assert_uint_le(strlen(captured), 4096);
        struct field f[FIELDS_MAX];
        const char *why = "";
        int nf = format ? read_json(captured, f, &why) : read_logfmt(captured, f, &why);
        ck_assert_msg(nf > 0, "%s: %s", why, captured);
        ck_assert_ptr_nonnull(find_field(f, nf, "log_truncated"));
    }
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, test_logfmt_line);
    tcase_add_test(tc, test_json_line);
    tcase_add_test(tc, test_level_filter);
    tcase_add_test(tc, test_one_line_per_event);
    tcase_add_test(tc, test_line_is_capped);
    tcase_add_test(tc, test_journal_prefix);
    tcase_add_test(tc, test_conninfo_redacted);
    tcase_add_test(tc, test_hostile_values_never_forge_or_break_a_line);
    tcase_add_test(tc, test_json_types);
    tcase_add_test(tc, test_json_string_conversions_stay_strings);
    tcase_add_test(tc, test_line_cap_keeps_the_line_whole);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
