/* Unit tests of lib/config: keys, types, durations, overrides, errors naming file:line and key. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "testutil.h"

static char dir[512];
static char path[600];

static const char base[] = "[database]\n"
                           "conninfo = host=/tmp dbname=crm\n"
                           "[omnidesk]\n"
                           "base_url = https://acme.omnidesk.com\n"
                           "brand_id = 7\n"
                           "[source customers]\n"
                           "table = public.customers\n"
                           "primary_id = customer_no\n";

static void setup(void)
{
    ck_assert_int_eq(testutil_mkdtemp(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/omnisync.conf", dir);
}

static void teardown(void)
{
    testutil_rm_rf(dir);
}

/* Loads `text` and returns the result; the caller frees cfg. */
static int load(struct config *cfg, const char *text)
{
    ck_assert_int_eq(testutil_write_file(path, text, 0600), 0);
    return config_load(cfg, path);
}

/* Asserts one error mentions every needle. */
static void assert_error(const struct config *cfg, const char *a, const char *b, const char *c)
{
    for (size_t i = 0; i < cfg->nerrors; i++) {
        const char *e = cfg->errors[i];
        if (strstr(e, a) && (b == NULL || strstr(e, b)) && (c == NULL || strstr(e, c)))
            return;
    }
    for (size_t i = 0; i < cfg->nerrors; i++)
        fprintf(stderr, "  error: %s\n", cfg->errors[i]);
    ck_abort_msg("no error mentions \"%s\" / \"%s\" / \"%s\"", a, b ? b : "", c ? c : "");
}

/* fuzz_config found it: an error quoted a value's escape sequence and invalid UTF-8 raw, to a
 * terminal and the journal. Every error is one printable line of valid UTF-8. */
START_TEST(test_errors_quote_values_printably)
{
    struct config cfg;
    char text[512];

    snprintf(text, sizeof(text), "%s[omnidesk]\ntimeout_ms = 9\x1b[2J\xff\xc3\n", base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "omnisync.conf:10:", "timeout_ms", "\"9?[2J??\"");
    for (size_t i = 0; i < cfg.nerrors; i++)
        for (const char *p = cfg.errors[i]; *p; p++)
            ck_assert((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
    config_free(&cfg);
}
END_TEST

START_TEST(test_minimal_defaults)
{
    struct config cfg;
    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_str_eq(cfg.conninfo, "host=/tmp dbname=crm");
    ck_assert_int_eq(cfg.brand_id, 7);
    ck_assert_int_eq(cfg.timeout_ms, 10000);
    ck_assert_int_eq(cfg.max_in_flight, 16);
    ck_assert(cfg.rate_per_sec == 10.0);
    ck_assert_int_eq(cfg.purge_endpoint, CONFIG_PURGE_V2);
    ck_assert_int_eq(cfg.max_attempts, 12);
    ck_assert_int_eq(cfg.backoff_initial_ms, 1000);
    ck_assert_int_eq(cfg.backoff_max_ms, 900000);
    ck_assert_int_eq(cfg.batch_size, 100);
    ck_assert_int_eq(cfg.on_delete, CONFIG_ON_DELETE_PURGE);
    ck_assert_int_eq(cfg.max_purges_per_hour, 100);
    ck_assert_uint_eq(cfg.retention_ms, 7ULL * 86400000);
    ck_assert_uint_eq(cfg.payload_retention_ms, cfg.retention_ms);
    ck_assert_uint_eq(cfg.reconcile_interval_ms, 0); /* reconcile only on demand */
    ck_assert_str_eq(cfg.health_host, "127.0.0.1");
    ck_assert_int_eq(cfg.health_port, 9187);
    ck_assert_int_eq(cfg.health_loopback, 1);
    ck_assert_int_eq(cfg.log_level, LOG_LEVEL_INFO);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_LOGFMT);
    ck_assert_uint_eq(cfg.nsources, 1);
    ck_assert_str_eq(cfg.sources[0].name, "customers");
    ck_assert_str_eq(cfg.sources[0].table, "public.customers");
    ck_assert_ptr_null(cfg.sources[0].firstname);
    config_free(&cfg);
}
END_TEST

START_TEST(test_full_design_example)
{
    struct config cfg;
    const char *text =
        "; the example of DESIGN section 6\n"
        "[database]\n"
        "conninfo = host=/run/postgresql dbname=crm user=omnisync   ; libpq conninfo or URI\n"
        "[omnidesk]\n"
        "base_url = https://account.omnidesk.com\n"
        "api_key_file = /run/credentials/omnisync.service/omnidesk-api-key\n"
        "brand_id = 1\n"
        "timeout_ms = 10000\n"
        "max_in_flight = 16\n"
        "rate_per_sec = 10              ; 0 = no limit\n"
        "purge_endpoint = legacy\n"
        "[delivery]\n"
        "max_attempts = 12\n"
        "backoff_initial_ms = 1000\n"
        "backoff_max_ms = 900000\n"
        "batch_size = 100\n"
        "on_delete = ignore\n"
        "max_purges_per_hour = 0\n"
        "retention = 12h\n"
        "payload_retention = 15m\n"
        "[health]\n"
        "listen = [::1]:0\n"
        "[reconcile]\n"
        "interval = 24h\n"
        "[log]\n"
        "level = debug\n"
        "format = json\n"
        "# a comment\n"
        "[source customers]\n"
        "table = public.customers\n"
        "primary_id = customer_no\n"
        "firstname = first_name\n"
        "lastname = last_name\n"
        "email = email\n"
        "telephone = phone\n"
        "custom.tier = loyalty_tier\n"
        "custom.segment = segment\n"
        "brand_id_column =\n"
        "erase_flag = gdpr_erase\n"
        "[source leads]\n"
        "table = leads\n"
        "primary_id = id\n";
    ck_assert_int_eq(load(&cfg, text), 0);
    ck_assert_str_eq(cfg.conninfo, "host=/run/postgresql dbname=crm user=omnisync");
    ck_assert_int_eq(cfg.purge_endpoint, CONFIG_PURGE_LEGACY);
    ck_assert_int_eq(cfg.on_delete, CONFIG_ON_DELETE_IGNORE);
    ck_assert_int_eq(cfg.max_purges_per_hour, 0);
    ck_assert_uint_eq(cfg.retention_ms, 12ULL * 3600000);
    ck_assert_uint_eq(cfg.payload_retention_ms, 15ULL * 60000);
    ck_assert_uint_eq(cfg.reconcile_interval_ms, 24ULL * 3600000);
    ck_assert_str_eq(cfg.health_host, "::1");
    ck_assert_int_eq(cfg.health_port, 0);
    ck_assert_int_eq(cfg.health_loopback, 1);
    ck_assert_int_eq(cfg.log_level, LOG_LEVEL_DEBUG);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_JSON);
    ck_assert_uint_eq(cfg.nsources, 2);
    const struct config_source *s = config_find_source(&cfg, "customers");
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s->telephone, "phone");
    ck_assert_ptr_null(s->brand_id_column);
    ck_assert_str_eq(s->erase_flag, "gdpr_erase");
    ck_assert_uint_eq(s->ncustom, 2);
    ck_assert_str_eq(s->custom[0].field, "tier");
    ck_assert_str_eq(s->custom[0].column, "loyalty_tier");
    ck_assert_str_eq(s->custom[0].param, "custom_tier");
    const char *columns[40], *fields[40];
    size_t n = config_source_columns(s, columns, fields, 40);
    ck_assert_uint_eq(n, 8);
    ck_assert_str_eq(columns[0], "customer_no");
    ck_assert_str_eq(fields[0], "primary_id");
    ck_assert_str_eq(fields[7], "custom_segment");
    ck_assert_ptr_nonnull(config_find_source(&cfg, "leads"));
    ck_assert_ptr_null(config_find_source(&cfg, "nope"));
    config_free(&cfg);
}
END_TEST

START_TEST(test_durations)
{
    uint64_t ms;
    ck_assert_int_eq(config_parse_duration("500ms", &ms), 0);
    ck_assert_uint_eq(ms, 500);
    ck_assert_int_eq(config_parse_duration("30s", &ms), 0);
    ck_assert_uint_eq(ms, 30000);
    ck_assert_int_eq(config_parse_duration("15m", &ms), 0);
    ck_assert_uint_eq(ms, 900000);
    ck_assert_int_eq(config_parse_duration("12h", &ms), 0);
    ck_assert_uint_eq(ms, 43200000);
    ck_assert_int_eq(config_parse_duration("7d", &ms), 0);
    ck_assert_uint_eq(ms, 604800000);
    ck_assert_int_eq(config_parse_duration("0s", &ms), 0);
    ck_assert_uint_eq(ms, 0);
    const char *bad[] = {"", "7", "d", "-1s", "1.5h", "7 d", "7days", "1w", "s7", "99999999999999999999d", "184467440737095516d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(config_parse_duration(bad[i], &ms) != 0, "accepted \"%s\"", bad[i]);
}
END_TEST

START_TEST(test_errors_name_line_and_key)
{
    struct config cfg;
    char text[4096];
    snprintf(text, sizeof(text),
             "%s"                                  /* lines 1-8 */
             "[omnidesk]\n"                        /* 9: a second [omnidesk] header is fine */
             "timeout_ms = soon\n"                 /* 10: bad number */
             "[delivery]\n"                        /* 11 */
             "retention = 7 days\n"                /* 12: bad duration */
             "on_delete = shred\n"                 /* 13: bad enum */
             "colour = blue\n"                     /* 14: unknown key */
             "[health]\n"                          /* 15 */
             "listen = localhost\n"                /* 16: bad listen address */
             "[plugins]\n"                         /* 17: unknown section */
             "x = 1\n"                             /* 18: not reported again */
             "[log]\n"                             /* 19 */
             "level = loud\n"                      /* 20 */
             "[source broken]\n"                   /* 21: no table, no primary_id */
             "firstname = first name\n",           /* 22: space in column */
             base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "omnisync.conf:10:", "timeout_ms", "bad number");
    assert_error(&cfg, "omnisync.conf:12:", "retention", "bad duration");
    assert_error(&cfg, "omnisync.conf:13:", "on_delete", "purge or ignore");
    assert_error(&cfg, "omnisync.conf:14:", "colour", "unknown key");
    assert_error(&cfg, "omnisync.conf:16:", "listen", "bad listen address");
    assert_error(&cfg, "omnisync.conf:17:", "[plugins]", "unknown section");
    assert_error(&cfg, "omnisync.conf:20:", "level", "error, warn, info or debug");
    assert_error(&cfg, "omnisync.conf:21:", "[source broken] table", "missing");
    assert_error(&cfg, "omnisync.conf:21:", "[source broken] primary_id", "missing");
    assert_error(&cfg, "omnisync.conf:22:", "firstname", "contains a space");
    ck_assert_uint_eq(cfg.nerrors, 10);
    config_free(&cfg);
}
END_TEST

START_TEST(test_http_base_url)
{
    struct config cfg;
    char text[2048];
    static const char no_url[] = "[omnidesk]\nbrand_id = 1\n[source customers]\n"
                               "table = customers\nprimary_id = id\n";
    const char *ok[] = {"http://127.0.0.1:8080", "http://localhost", "http://[::1]:9/x",
                        "https://anything.example"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(text, sizeof(text), "%s[omnidesk]\nbase_url = %s\n", no_url, ok[i]);
        ck_assert_msg(load(&cfg, text) == 0, "refused %s", ok[i]);
        config_free(&cfg);
    }
    const char *bad[] = {"http://acme.omnidesk.com", "http://10.0.0.1", "ftp://x", "acme.com"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "%s[omnidesk]\nbase_url = %s\n", no_url, bad[i]);
        ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
        assert_error(&cfg, "base_url", NULL, NULL);
        config_free(&cfg);
    }
}
END_TEST

/* Any address is accepted; whether it is loopback decides the start-up warning. */
/* Issue 17 item 4: the host is the one libcurl connects to, and a URL with a user name, password,
 * query or fragment is refused with its line. */
START_TEST(test_base_url_parsed_as_libcurl_does)
{
    struct config cfg;
    char text[2048];
    static const char no_url[] = "[omnidesk]\nbrand_id = 1\n[source customers]\n"
                                 "table = customers\nprimary_id = id\n";
    static const struct {
        const char *url;
        const char *what;
    } bad[] = {
        {"http://127.0.0.1:80@example.com", "user name or password"},
        {"http://127.0.0.1@example.com/", "user name or password"},
        {"http://localhost:x@10.0.0.1", "user name or password"},
        {"https://user:secret@acme.omnidesk.com", "user name or password"},
        {"https://user@acme.omnidesk.com", "user name or password"},
        {"http://[::1]:1@example.com", "user name or password"},
        {"https://acme.omnidesk.com/?x=1", "query"},
        {"https://acme.omnidesk.com/#frag", "fragment"},
        {"http://127.0.0.1.example.com", "not loopback"},
        {"http://localhost.example.com:80/", "not loopback"},
        {"https://", "not a URL"},
        {"https://acme omnidesk.com", "not a URL"},
    };
    const char *ok[] = {"http://127.0.0.2:9/api", "http://[0:0:0:0:0:0:0:1]:9", "HTTP://127.0.0.1",
                        "https://acme.omnidesk.com/", "http://127.1:8080"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "%s[omnidesk]\nbase_url = %s\n", no_url, bad[i].url);
        ck_assert_msg(load(&cfg, text) == OMNISYNC_ECONFIG, "accepted %s", bad[i].url);
        assert_error(&cfg, "omnisync.conf:7:", "base_url", bad[i].what);
        config_free(&cfg);
    }
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(text, sizeof(text), "%s[omnidesk]\nbase_url = %s\n", no_url, ok[i]);
        ck_assert_msg(load(&cfg, text) == 0, "refused %s: %s", ok[i],
                      cfg.nerrors > 0 ? cfg.errors[0] : "");
        config_free(&cfg);
    }
}
END_TEST

/* Issue 17 item 5: [omnidesk] max_retry_after, 5 min unless set, 1 s .. 24 h. */
START_TEST(test_max_retry_after)
{
    struct config cfg;
    char text[4096];

    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_uint_eq(cfg.max_retry_after_ms, 300000);
    config_free(&cfg);
    snprintf(text, sizeof(text), "%s[omnidesk]\nmax_retry_after = 90s\n", base);
    ck_assert_int_eq(load(&cfg, text), 0);
    ck_assert_uint_eq(cfg.max_retry_after_ms, 90000);
    config_free(&cfg);
    snprintf(text, sizeof(text), "%s[omnidesk]\nmax_retry_after = 0s\n", base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "max_retry_after", "between 1s and 24h", NULL);
    config_free(&cfg);
    snprintf(text, sizeof(text), "%s[omnidesk]\nmax_retry_after = 2d\n", base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "max_retry_after", "between 1s and 24h", NULL);
    config_free(&cfg);
}
END_TEST

START_TEST(test_health_listen_loopback)
{
    struct config cfg;
    char text[2048];
    const struct {
        const char *listen;
        const char *host;
        int loopback;
    } cases[] = {{"127.0.0.1:9187", "127.0.0.1", 1}, {"localhost:0", "127.0.0.1", 1},
                 {"127.3.4.5:1", "127.3.4.5", 1},    {"[::1]:0", "::1", 1},
                 {"0.0.0.0:9187", "0.0.0.0", 0},     {"10.1.2.3:9187", "10.1.2.3", 0},
                 {"[::]:9187", "::", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s[health]\nlisten = %s\n", base, cases[i].listen);
        ck_assert_msg(load(&cfg, text) == 0, "refused %s", cases[i].listen);
        ck_assert_str_eq(cfg.health_host, cases[i].host);
        ck_assert_msg(cfg.health_loopback == cases[i].loopback, "%s: loopback %d", cases[i].listen,
                      cfg.health_loopback);
        config_free(&cfg);
    }
}
END_TEST

START_TEST(test_columns_refused)
{
    struct config cfg;
    char text[2048];
    const char *bad[][2] = {{"name\"x", "contains '\"'"}, {"a;drop", "contains ';'"},
                            {"first name", "contains a space"}, {"1abc", "plain column name"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "%slastname = %s\n", base, bad[i][0]);
        ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
        assert_error(&cfg, "omnisync.conf:9:", "lastname", bad[i][1]);
        config_free(&cfg);
    }
    snprintf(text, sizeof(text), "%stable = public.cust;omers\n", base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    config_free(&cfg);
}
END_TEST

START_TEST(test_environment_overrides)
{
    struct config cfg;
    setenv("OMNISYNC_OMNIDESK_TIMEOUT_MS", "2500", 1);
    setenv("OMNISYNC_DELIVERY_RETENTION", "2s", 1);
    setenv("OMNISYNC_SOURCE_CUSTOMERS_FIRSTNAME", "fname", 1);
    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_int_eq(cfg.timeout_ms, 2500);
    ck_assert_uint_eq(cfg.retention_ms, 2000);
    ck_assert_str_eq(cfg.sources[0].firstname, "fname");
    config_free(&cfg);

    setenv("OMNISYNC_OMNIDESK_TIMEOUT_MS", "fast", 1);
    ck_assert_int_eq(load(&cfg, base), OMNISYNC_ECONFIG);
    assert_error(&cfg, "environment OMNISYNC_OMNIDESK_TIMEOUT_MS", "timeout_ms", "bad number");
    config_free(&cfg);
    unsetenv("OMNISYNC_OMNIDESK_TIMEOUT_MS");
    unsetenv("OMNISYNC_DELIVERY_RETENTION");
    unsetenv("OMNISYNC_SOURCE_CUSTOMERS_FIRSTNAME");
}
END_TEST

START_TEST(test_api_key_sources)
{
    struct config cfg;
    char keyfile[700], text[2048];
    snprintf(keyfile, sizeof(keyfile), "%s/key", dir);
    ck_assert_int_eq(testutil_write_file(keyfile, "s3cret-key\n", 0600), 0);
    snprintf(text, sizeof(text), "%s[omnidesk]\napi_key_file = %s\n", base, keyfile);
    ck_assert_int_eq(load(&cfg, text), 0);
    ck_assert_int_eq(config_load_api_key(&cfg), 0);
    ck_assert_str_eq(cfg.api_key, "s3cret-key");
    config_free(&cfg);

    /* Readable by group: refused, and the message never shows the key. */
    ck_assert_int_eq(chmod(keyfile, 0640), 0);
    ck_assert_int_eq(load(&cfg, text), 0);
    ck_assert_int_eq(config_load_api_key(&cfg), OMNISYNC_ECONFIG);
    assert_error(&cfg, "api_key_file", "readable by group or others", "0640");
    for (size_t i = 0; i < cfg.nerrors; i++)
        ck_assert_ptr_null(strstr(cfg.errors[i], "s3cret"));
    config_free(&cfg);

    /* $CREDENTIALS_DIRECTORY, then OMNISYNC_API_KEY. */
    char creds[700];
    snprintf(creds, sizeof(creds), "%s/omnidesk-api-key", dir);
    ck_assert_int_eq(testutil_write_file(creds, "from-credentials", 0400), 0);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_int_eq(config_load_api_key(&cfg), 0);
    ck_assert_str_eq(cfg.api_key, "from-credentials");
    config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");

    setenv("OMNISYNC_API_KEY", "from-env", 1);
    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_int_eq(config_load_api_key(&cfg), 0);
    ck_assert_str_eq(cfg.api_key, "from-env");
    config_free(&cfg);
    unsetenv("OMNISYNC_API_KEY");

    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_int_eq(config_load_api_key(&cfg), OMNISYNC_ECONFIG);
    assert_error(&cfg, "no API key", NULL, NULL);
    config_free(&cfg);
}
END_TEST

START_TEST(test_line_shapes)
{
    struct config cfg;
    char text[2048];
    char longline[400];
    memset(longline, 'x', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    snprintf(text, sizeof(text), "%s  lastname = indented\nnot a key line\nemail = %s\n", base,
             longline);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "omnisync.conf:9:", "indented", NULL);
    assert_error(&cfg, "omnisync.conf:11:", "longer than", NULL);
    config_free(&cfg);

    snprintf(text, sizeof(text), "%sprimary_id = again\n", base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "omnisync.conf:9:", "primary_id", "duplicate key");
    config_free(&cfg);

    ck_assert_int_eq(config_load(&cfg, "/nonexistent/omnisync.conf"), OMNISYNC_ECONFIG);
    assert_error(&cfg, "/nonexistent/omnisync.conf", "cannot open", NULL);
    config_free(&cfg);
}
END_TEST

/* Issue 17 item 9: a directory or a FIFO as the config or key file is named as such; a FIFO
 * with no writer used to hang the command for good. */
START_TEST(test_config_not_a_regular_file)
{
    struct config cfg;
    char sub[600], fifo[700], text[4096];

    snprintf(sub, sizeof(sub), "%s/a-directory", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);

    ck_assert_int_eq(config_load(&cfg, sub), OMNISYNC_ECONFIG);
    assert_error(&cfg, sub, "is a directory", NULL);
    config_free(&cfg);
    ck_assert_int_eq(config_load(&cfg, fifo), OMNISYNC_ECONFIG);
    assert_error(&cfg, fifo, "is a FIFO", NULL);
    config_free(&cfg);
    ck_assert_int_eq(config_load(&cfg, "/dev/null"), OMNISYNC_ECONFIG);
    assert_error(&cfg, "/dev/null", "not a regular file", NULL);
    config_free(&cfg);

    snprintf(text, sizeof(text), "%s[omnidesk]\napi_key_file = %s\n", base, fifo);
    ck_assert_int_eq(load(&cfg, text), 0);
    ck_assert_int_eq(config_load_api_key(&cfg), OMNISYNC_ECONFIG);
    assert_error(&cfg, fifo, "is a FIFO", NULL);
    config_free(&cfg);
    rmdir(sub);
    unlink(fifo);
}
END_TEST

START_TEST(test_reload_keeps_unreloadable)
{
    struct config running, next;
    char text[2048];
    ck_assert_int_eq(load(&running, base), 0);
    snprintf(text, sizeof(text),
             "%s[omnidesk]\nrate_per_sec = 3\ntimeout_ms = 500\n[log]\nlevel = debug\n[health]\n"
             "listen = 127.0.0.1:1234\n",
             base);
    ck_assert_int_eq(load(&next, text), 0);
    size_t notes = config_reload_notes(&running, &next);
    ck_assert_uint_eq(notes, 1);
    assert_error(&next, "[health] listen", "restart", NULL);
    /* Nothing is applied before every part of the daemon has accepted the new values. */
    ck_assert(running.rate_per_sec == 10.0);
    config_apply_reload(&running, &next);
    ck_assert(running.rate_per_sec == 3.0);
    ck_assert_int_eq(running.timeout_ms, 500);
    ck_assert_int_eq(running.log_level, LOG_LEVEL_DEBUG);
    ck_assert_str_eq(running.listen, "127.0.0.1:9187");
    config_free(&running);
    config_free(&next);
}
END_TEST

/* [source] names: transliterate (the default) or strict; anything else names its line. */
START_TEST(test_source_names)
{
    struct config cfg, next;
    char text[2048];

    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_int_eq(cfg.sources[0].names, CONFIG_NAMES_TRANSLITERATE);
    config_free(&cfg);

    snprintf(text, sizeof(text),
             "%snames = strict\n[source leads]\ntable = leads\n"
             "primary_id = id\nnames = transliterate\n[source b]\ntable = b\nprimary_id = id\n"
             "names =\n",
             base);
    ck_assert_int_eq(load(&cfg, text), 0);
    ck_assert_int_eq(config_find_source(&cfg, "customers")->names, CONFIG_NAMES_STRICT);
    ck_assert_int_eq(config_find_source(&cfg, "leads")->names, CONFIG_NAMES_TRANSLITERATE);
    ck_assert_int_eq(config_find_source(&cfg, "b")->names, CONFIG_NAMES_TRANSLITERATE);

    /* A change needs a restart, like every [source] key. */
    ck_assert_int_eq(load(&next, base), OMNISYNC_OK);
    ck_assert_uint_eq(config_reload_notes(&cfg, &next), 1);
    assert_error(&next, "[source] sections changed", "restart", NULL);
    config_free(&next);
    config_free(&cfg);

    snprintf(text, sizeof(text), "%snames = ascii\n", base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "omnisync.conf:9:", "[source customers] names",
                 "expected transliterate or strict");
    ck_assert_uint_eq(cfg.nerrors, 1);
    config_free(&cfg);

    setenv("OMNISYNC_SOURCE_CUSTOMERS_NAMES", "strict", 1);
    ck_assert_int_eq(load(&cfg, base), 0);
    ck_assert_int_eq(cfg.sources[0].names, CONFIG_NAMES_STRICT);
    config_free(&cfg);
    unsetenv("OMNISYNC_SOURCE_CUSTOMERS_NAMES");
}
END_TEST

/* The source-key table drives the reload diff: any changed source key needs a restart. */
START_TEST(test_reload_source_key_changed)
{
    static const char *changes[] = {
        "normalize_names = yes\n", "phone_default_prefix = +31\n", "email = mail\n",
        "erase_flag = gone\n",     "custom.tier = tier\n",
    };
    struct config running, next;
    char text[2048];
    ck_assert_int_eq(load(&running, base), 0);
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        snprintf(text, sizeof(text), "%s%s", base, changes[i]);
        ck_assert_int_eq(load(&next, text), 0);
        ck_assert_uint_eq(config_reload_notes(&running, &next), 1);
        assert_error(&next, "[source] sections changed", "restart", NULL);
        config_free(&next);
    }
    ck_assert_int_eq(load(&next, base), 0);
    ck_assert_uint_eq(config_reload_notes(&running, &next), 0);
    config_free(&next);
    config_free(&running);
}
END_TEST

/* Enumerated keys name every accepted value; a per-key check names the key's own line. */
START_TEST(test_enum_and_key_checks)
{
    struct config cfg;
    char text[2048];
    snprintf(text, sizeof(text),
             "%sphone_default_prefix = 31\n[log]\nlevel = verbose\nformat = xml\n[omnidesk]\n"
             "purge_endpoint = v3\n",
             base);
    ck_assert_int_eq(load(&cfg, text), OMNISYNC_ECONFIG);
    assert_error(&cfg, "omnisync.conf:9:", "[source customers] phone_default_prefix",
                 "expected + and digits");
    assert_error(&cfg, "omnisync.conf:11:", "[log] level", "expected error, warn, info or debug");
    assert_error(&cfg, "omnisync.conf:12:", "[log] format", "expected logfmt or json");
    assert_error(&cfg, "omnisync.conf:14:", "[omnidesk] purge_endpoint", "expected v2 or legacy");
    ck_assert_uint_eq(cfg.nerrors, 4);
    config_free(&cfg);
}
END_TEST

/* Mapped columns come from the source-key table, primary id first, then the custom fields. */
START_TEST(test_source_columns_order)
{
    struct config cfg;
    char text[2048];
    snprintf(text, sizeof(text),
             "%serase_flag = gone\ncustom.tier = loyalty\nemail = mail\nfirstname = fn\n", base);
    ck_assert_int_eq(load(&cfg, text), 0);
    const char *columns[16], *fields[16];
    size_t n = config_source_columns(&cfg.sources[0], columns, fields, 16);
    ck_assert_uint_eq(n, 5);
    const char *want_columns[] = {"customer_no", "fn", "mail", "gone", "loyalty"};
    const char *want_fields[] = {"primary_id", "firstname", "email", "erase", "custom_tier"};
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(columns[i], want_columns[i]);
        ck_assert_str_eq(fields[i], want_fields[i]);
    }
    ck_assert_uint_eq(config_source_columns(&cfg.sources[0], columns, fields, 2), 2);
    config_free(&cfg);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_minimal_defaults);
    tcase_add_test(tc, test_full_design_example);
    tcase_add_test(tc, test_durations);
    tcase_add_test(tc, test_errors_name_line_and_key);
    tcase_add_test(tc, test_http_base_url);
    tcase_add_test(tc, test_base_url_parsed_as_libcurl_does);
    tcase_add_test(tc, test_max_retry_after);
    tcase_add_test(tc, test_config_not_a_regular_file);
    tcase_add_test(tc, test_health_listen_loopback);
    tcase_add_test(tc, test_columns_refused);
    tcase_add_test(tc, test_environment_overrides);
    tcase_add_test(tc, test_api_key_sources);
    tcase_add_test(tc, test_line_shapes);
    tcase_add_test(tc, test_reload_keeps_unreloadable);
    tcase_add_test(tc, test_source_names);
    tcase_add_test(tc, test_reload_source_key_changed);
    tcase_add_test(tc, test_enum_and_key_checks);
    tcase_add_test(tc, test_source_columns_order);
    tcase_add_test(tc, test_errors_quote_values_printably);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
