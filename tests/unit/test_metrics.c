/*
 * test_metrics: counting (deliveries, request codes with their overflow slot, histogram buckets)
 * and the Prometheus exposition: exact sample lines for known figures, one HELP and one TYPE per
 * family, label escaping, cumulative histograms whose +Inf bucket equals _count, and the whole
 * output accepted by `promtool check metrics`, Prometheus' own parser and linter.
 */
#include <check.h>

#include "promtool.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "omnidesk.h"

extern char **environ;

/* ---- helpers -------------------------------------------------------------------------------- */


static void assert_promtool_clean(const char *text, size_t len)
{
    char report[4096];
    int rc = promtool_check_metrics(text, len, report, sizeof(report));

    /* Check caps its messages at a few KiB: the input goes to stderr, the verdict in the message.
     */
    if (rc != 0)
        fprintf(stderr, "--- input to promtool ---\n%.*s--- end ---\n", (int)len, text);
    ck_assert_msg(rc == 0, "promtool check metrics exited %d: %.2000s", rc, report);
}

/* Is `line` one whole line of `text`? */
static int has_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[len] == '\n')
            return 1;
        p++;
    }
    return 0;
}

/* The exposition itself is too long for a Check message: it goes to stderr. */
#define ck_assert_line(text, line)                                                                 \
    do {                                                                                           \
        if (!has_line((text), (line)))                                                             \
            fprintf(stderr, "--- exposition ---\n%s--- end ---\n", (text));                        \
        ck_assert_msg(has_line((text), (line)), "missing line \"%s\"", (line));                    \
    } while (0)

static unsigned count_prefixed_lines(const char *text, const char *prefix)
{
    size_t len = strlen(prefix);
    const char *p = text;
    unsigned n = 0;

    while (*p != '\0') {
        if (strncmp(p, prefix, len) == 0)
            n++;
        p = strchr(p, '\n');
        if (p == NULL)
            break;
        p++;
    }
    return n;
}

static char *render(const struct metrics *m, const char *version, size_t *len)
{
    char *text = NULL;
    size_t n = 0;

    ck_assert_int_eq(metrics_render(m, version, &text, &n), 0);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(strlen(text), n);
    ck_assert_msg(n > 0 && text[n - 1] == '\n', "the exposition must end with a newline");
    if (len != NULL)
        *len = n;
    return text;
}

/* A struct with something in every figure. */
static void fill(struct metrics *m)
{
    metrics_init(m);
    metrics_count_delivery(m, METRICS_OP_CREATE, METRICS_RESULT_DONE);
    metrics_count_delivery(m, METRICS_OP_CREATE, METRICS_RESULT_DONE);
    metrics_count_delivery(m, METRICS_OP_UPDATE, METRICS_RESULT_RETRY);
    metrics_count_delivery(m, METRICS_OP_PURGE, METRICS_RESULT_HELD);
    metrics_count_request(m, OMNIDESK_CREATE, 200);
    metrics_count_request(m, OMNIDESK_CREATE, 200);
    metrics_count_request(m, OMNIDESK_CREATE, 503);
    metrics_count_request(m, OMNIDESK_UPDATE, 0);
    metrics_count_request(m, OMNIDESK_PROBE, 401);
    metrics_observe(&m->delivery_seconds, 0.02);
    metrics_observe(&m->delivery_seconds, 0.3);
    metrics_observe(&m->commit_to_delivery_seconds, 1.5);
    metrics_add_source(m, "customers");
    metrics_add_source(m, "leads");
    metrics_count_transliterated(m, "customers", 2);
    metrics_count_transliterated(m, "customers", 1);
    m->outbox_rows_known = 1;
    m->outbox_rows[METRICS_STATUS_PENDING] = 12;
    m->outbox_rows[METRICS_STATUS_HELD] = 1;
    m->outbox_rows[METRICS_STATUS_DONE] = 3000;
    m->outbox_rows[METRICS_STATUS_FAILED] = 2;
    m->outbox_rows[METRICS_STATUS_SKIPPED] = 5;
    m->oldest_pending_age_seconds = 12.5;
    m->db_connected = 1;
    m->listening = 1;
    m->in_flight = 3;
    m->circuit_open = 0;
    m->paused = 1;
    m->purges_held = 1;
    m->api_key_refused = 0;
    m->last_success_timestamp_seconds = 1700000000.25;
    m->nreconcile = 1;
    snprintf(m->reconcile[0].source, sizeof(m->reconcile[0].source), "customers");
    m->reconcile[0].drift[0] = 20; /* missing */
    m->reconcile[0].drift[2] = 3;  /* extra */
    m->reconcile_last_success_timestamp_seconds = 1700000100.5;
}

/* Every family of DESIGN §7, with its type. */
static const struct {
    const char *name;
    const char *type;
} families[] = {
    {"omnisync_outbox_rows", "gauge"},
    {"omnisync_deliveries_total", "counter"},
    {"omnisync_http_requests_total", "counter"},
    {"omnisync_names_transliterated_total", "counter"},
    {"omnisync_delivery_seconds", "histogram"},
    {"omnisync_commit_to_delivery_seconds", "histogram"},
    {"omnisync_oldest_pending_age_seconds", "gauge"},
    {"omnisync_db_connected", "gauge"},
    {"omnisync_listening", "gauge"},
    {"omnisync_in_flight", "gauge"},
    {"omnisync_circuit_open", "gauge"},
    {"omnisync_paused", "gauge"},
    {"omnisync_purges_held", "gauge"},
    {"omnisync_api_key_refused", "gauge"},
    {"omnisync_api_pause_seconds", "gauge"},
    {"omnisync_last_success_timestamp_seconds", "gauge"},
    {"omnisync_reconcile_drift", "gauge"},
    {"omnisync_reconcile_last_success_timestamp_seconds", "gauge"},
    {"omnisync_build_info", "gauge"},
};

/* ---- rendering ------------------------------------------------------------------------------ */

START_TEST(render_known_values_exactly)
{
    struct metrics m;
    char *text;

    fill(&m);
    text = render(&m, "1.2.3", NULL);
    ck_assert_line(text, "omnisync_outbox_rows{status=\"pending\"} 12");
    ck_assert_line(text, "omnisync_outbox_rows{status=\"held\"} 1");
    ck_assert_line(text, "omnisync_outbox_rows{status=\"done\"} 3000");
    ck_assert_line(text, "omnisync_outbox_rows{status=\"failed\"} 2");
    ck_assert_line(text, "omnisync_outbox_rows{status=\"skipped\"} 5");
    ck_assert_line(text, "omnisync_deliveries_total{op=\"create\",result=\"done\"} 2");
    ck_assert_line(text, "omnisync_deliveries_total{op=\"update\",result=\"retry\"} 1");
    ck_assert_line(text, "omnisync_deliveries_total{op=\"purge\",result=\"held\"} 1");
    /* Every op x result pair is there from the start, so rate() sees the first increment. */
    ck_assert_line(text, "omnisync_deliveries_total{op=\"truncate\",result=\"failed\"} 0");
    ck_assert_line(text, "omnisync_deliveries_total{op=\"none\",result=\"done\"} 0");
    ck_assert_line(text, "omnisync_deliveries_total{op=\"add_channel\",result=\"retry\"} 0");
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_deliveries_total{"),
                      METRICS_OP_COUNT * METRICS_RESULT_COUNT);
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"create\",code=\"200\"} 2");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"create\",code=\"503\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"updateCustomer\",code=\"0\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"probe\",code=\"401\"} 1");
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_http_requests_total{"), 4);
    ck_assert_line(text, "omnisync_names_transliterated_total{source=\"customers\"} 3");
    /* A configured source is there at 0 before its first name, so rate() sees the first one. */
    ck_assert_line(text, "omnisync_names_transliterated_total{source=\"leads\"} 0");
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_names_transliterated_total{"), 2);
    ck_assert_line(text, "omnisync_oldest_pending_age_seconds 12.5");
    ck_assert_line(text, "omnisync_db_connected 1");
    ck_assert_line(text, "omnisync_listening 1");
    ck_assert_line(text, "omnisync_in_flight 3");
    ck_assert_line(text, "omnisync_circuit_open 0");
    ck_assert_line(text, "omnisync_paused 1");
    ck_assert_line(text, "omnisync_purges_held 1");
    ck_assert_line(text, "omnisync_api_key_refused 0");
    ck_assert_line(text, "omnisync_api_pause_seconds 0");
    ck_assert_line(text, "omnisync_last_success_timestamp_seconds 1700000000.25");
    ck_assert_line(text, "omnisync_build_info{version=\"1.2.3\"} 1");
    ck_assert_line(text, "omnisync_reconcile_drift{source=\"customers\",kind=\"missing\"} 20");
    ck_assert_line(text, "omnisync_reconcile_drift{source=\"customers\",kind=\"extra\"} 3");
    ck_assert_line(text, "omnisync_reconcile_drift{source=\"customers\",kind=\"pending\"} 0");
    ck_assert_line(text, "omnisync_reconcile_last_success_timestamp_seconds 1700000100.5");
    ck_assert_line(text, "omnisync_delivery_seconds_bucket{le=\"0.01\"} 0");
    ck_assert_line(text, "omnisync_delivery_seconds_bucket{le=\"0.025\"} 1");
    ck_assert_line(text, "omnisync_delivery_seconds_bucket{le=\"0.5\"} 2");
    ck_assert_line(text, "omnisync_delivery_seconds_bucket{le=\"+Inf\"} 2");
    ck_assert_line(text, "omnisync_delivery_seconds_sum 0.32");
    ck_assert_line(text, "omnisync_delivery_seconds_count 2");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_bucket{le=\"1\"} 0");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_bucket{le=\"2.5\"} 1");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_sum 1.5");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_count 1");
    free(text);
}
END_TEST

START_TEST(one_help_and_type_per_family)
{
    char line[160];
    struct metrics m;
    size_t i;
    char *text;

    fill(&m);
    text = render(&m, "1.2.3", NULL);
    for (i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        snprintf(line, sizeof(line), "# HELP %s ", families[i].name);
        ck_assert_msg(count_prefixed_lines(text, line) == 1, "%s: not exactly one HELP",
                      families[i].name);
        snprintf(line, sizeof(line), "# TYPE %s %s", families[i].name, families[i].type);
        ck_assert_line(text, line);
        snprintf(line, sizeof(line), "# TYPE %s ", families[i].name);
        ck_assert_msg(count_prefixed_lines(text, line) == 1, "%s: not exactly one TYPE",
                      families[i].name);
    }
    ck_assert_uint_eq(count_prefixed_lines(text, "# HELP "),
                      sizeof(families) / sizeof(families[0]));
    ck_assert_uint_eq(count_prefixed_lines(text, "# TYPE "),
                      sizeof(families) / sizeof(families[0]));
    free(text);
}
END_TEST

START_TEST(outbox_figures_only_once_known)
{
    struct metrics m;
    char *text;

    metrics_init(&m);
    text = render(&m, "1.2.3", NULL);
    /* Nobody has counted the outbox yet: no family at all rather than a made-up 0. */
    ck_assert_ptr_null(strstr(text, "omnisync_outbox_rows"));
    ck_assert_ptr_null(strstr(text, "omnisync_oldest_pending_age_seconds"));
    ck_assert_line(text, "omnisync_db_connected 0");
    ck_assert_line(text, "omnisync_last_success_timestamp_seconds 0");
    free(text);

    m.outbox_rows_known = 1;
    text = render(&m, "1.2.3", NULL);
    ck_assert_line(text, "# TYPE omnisync_outbox_rows gauge");
    ck_assert_line(text, "omnisync_outbox_rows{status=\"pending\"} 0");
    ck_assert_line(text, "omnisync_oldest_pending_age_seconds 0");
    free(text);
}
END_TEST

START_TEST(version_label_is_escaped)
{
    struct metrics m;
    char *text;

    metrics_init(&m);
    text = render(&m, "1.0\"beta\\2\nx", NULL);
    ck_assert_line(text, "omnisync_build_info{version=\"1.0\\\"beta\\\\2\\nx\"} 1");
    free(text);
    text = render(&m, NULL, NULL);
    ck_assert_line(text, "omnisync_build_info{version=\"\"} 1");
    free(text);
}
END_TEST

START_TEST(histogram_is_cumulative_and_consistent)
{
    static const char *const le[] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                     "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                     "2.5",   "5",      "10",    "30",   "+Inf"};
    /* Expected cumulative counts for the observations below. */
    static const unsigned long long expect[] = {3, 3, 4, 4, 4, 4, 4, 4, 5, 6, 6, 6, 6, 7, 9};
    char line[160];
    struct metrics m;
    unsigned long long previous = 0;
    size_t i;
    char *text;

    metrics_init(&m);
    metrics_observe(&m.delivery_seconds, 0.0005);
    metrics_observe(&m.delivery_seconds, 0.001); /* a bound belongs to its own bucket (le) */
    metrics_observe(&m.delivery_seconds, -2);    /* clock skew: counted as 0, sum unchanged */
    metrics_observe(&m.delivery_seconds, 0.003);
    metrics_observe(&m.delivery_seconds, 0.5);
    metrics_observe(&m.delivery_seconds, 1);
    metrics_observe(&m.delivery_seconds, 30);
    metrics_observe(&m.delivery_seconds, 30.5); /* above the last bound: only +Inf */
    metrics_observe(&m.delivery_seconds, 1000);
    metrics_observe(&m.delivery_seconds, NAN); /* ignored: it would poison _sum */
    metrics_observe(&m.delivery_seconds, INFINITY);
    ck_assert_uint_eq(m.delivery_seconds.count, 9);

    text = render(&m, "x", NULL);
    for (i = 0; i < sizeof(le) / sizeof(le[0]); i++) {
        ck_assert_uint_ge(expect[i], previous);
        previous = expect[i];
        snprintf(line, sizeof(line), "omnisync_delivery_seconds_bucket{le=\"%s\"} %llu", le[i],
                 expect[i]);
        ck_assert_line(text, line);
    }
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_delivery_seconds_bucket{"),
                      METRICS_BUCKETS + 1);
    ck_assert_line(text, "omnisync_delivery_seconds_count 9");
    ck_assert_line(text, "omnisync_delivery_seconds_sum 1062.0045");
    /* The untouched histogram is all zeros, still complete. */
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_bucket{le=\"0.001\"} 0");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_bucket{le=\"+Inf\"} 0");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_sum 0");
    ck_assert_line(text, "omnisync_commit_to_delivery_seconds_count 0");
    free(text);
}
END_TEST

START_TEST(code_slots_overflow_into_other)
{
    char line[160];
    struct metrics m;
    int code;
    char *text;

    metrics_init(&m);
    /* Fill the slots in descending order: the output must still come sorted. */
    for (code = 500 + METRICS_CODES - 1; code >= 500; code--)
        metrics_count_request(&m, OMNIDESK_SEARCH, code);
    metrics_count_request(&m, OMNIDESK_SEARCH, 200); /* a 17th code: no slot left */
    metrics_count_request(&m, OMNIDESK_SEARCH, 0);
    metrics_count_request(&m, OMNIDESK_SEARCH, 500); /* known codes still count in their slot */
    metrics_count_request(&m, OMNIDESK_SEARCH, 500);
    metrics_count_request(&m, OMNIDESK_SEARCH, -1); /* -1 marks free slots: never a code */
    metrics_count_request(&m, OMNIDESK_SEARCH, 1000);
    metrics_count_request(&m, OMNIDESK_PURGE_LEGACY, -1);
    /* Out of range endpoints are dropped, not written somewhere else. */
    metrics_count_request(&m, -1, 200);
    metrics_count_request(&m, (int)OMNIDESK_PROBE + 1, 200);
    metrics_count_request(&m, METRICS_ENDPOINTS, 200);
    metrics_count_delivery(&m, METRICS_OP_COUNT, METRICS_RESULT_DONE);
    metrics_count_delivery(&m, METRICS_OP_CREATE, METRICS_RESULT_COUNT);

    text = render(&m, "x", NULL);
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"search\",code=\"500\"} 3");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"search\",code=\"515\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"search\",code=\"other\"} 4");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"purgedata\",code=\"other\"} 1");
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_http_requests_total{"),
                      METRICS_CODES + 2);
    ck_assert_ptr_null(strstr(text, "code=\"200\""));
    ck_assert_ptr_null(strstr(text, "code=\"0\""));
    ck_assert_ptr_null(strstr(text, "code=\"-1\""));
    /* Sorted by code within the endpoint. */
    for (code = 501; code < 500 + METRICS_CODES; code++) {
        char previous[160];

        snprintf(previous, sizeof(previous),
                 "endpoint=\"search\",code=\"%d\"} %d\nomnisync_http_requests_total{endpoint="
                 "\"search\",code=\"%d\"} 1\n",
                 code - 1, code - 1 == 500 ? 3 : 1, code);
        ck_assert_msg(strstr(text, previous) != NULL, "codes out of order around %d", code);
    }
    snprintf(line, sizeof(line), "omnisync_deliveries_total{op=\"create\",result=\"done\"} 0");
    ck_assert_line(text, line);
    assert_promtool_clean(text, strlen(text));
    free(text);
}
END_TEST

START_TEST(endpoint_labels_follow_omnidesk)
{
    struct metrics m;
    char line[160];
    int e;
    char *text;

    metrics_init(&m);
    for (e = OMNIDESK_CREATE; e <= OMNIDESK_PROBE; e++)
        metrics_count_request(&m, e, 204);
    text = render(&m, "x", NULL);
    for (e = OMNIDESK_CREATE; e <= OMNIDESK_PROBE; e++) {
        snprintf(line, sizeof(line), "omnisync_http_requests_total{endpoint=\"%s\",code=\"204\"} 1",
                 omnidesk_endpoint_name((enum omnidesk_endpoint)e));
        ck_assert_line(text, line);
    }
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"create\",code=\"204\"} 1");
    ck_assert_line(text,
                   "omnisync_http_requests_total{endpoint=\"updateCustomer\",code=\"204\"} 1");
    ck_assert_line(text,
                   "omnisync_http_requests_total{endpoint=\"addChannelOnly\",code=\"204\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"purgeData\",code=\"204\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"purgedata\",code=\"204\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"search\",code=\"204\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"probe\",code=\"204\"} 1");
    free(text);
}
END_TEST

START_TEST(transliterated_per_source)
{
    struct metrics m;
    char name[16];
    char *text;

    metrics_init(&m);
    metrics_add_source(&m, "customers");
    metrics_add_source(&m, "customers");         /* once per source, however often it is added */
    metrics_count_transliterated(&m, "late", 4); /* counted even if not added first */
    metrics_count_transliterated(&m, NULL, 1);
    metrics_count_transliterated(&m, "", 1);
    for (int i = 0; i < METRICS_SOURCES + 5; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        metrics_add_source(&m, name); /* beyond METRICS_SOURCES: not tracked, no overflow */
    }
    metrics_count_transliterated(&m, "s40", 1);
    text = render(&m, "1", NULL);
    ck_assert_line(text, "omnisync_names_transliterated_total{source=\"customers\"} 0");
    ck_assert_line(text, "omnisync_names_transliterated_total{source=\"late\"} 4");
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_names_transliterated_total{"),
                      METRICS_SOURCES);
    free(text);
}
END_TEST

START_TEST(label_names)
{
    ck_assert_str_eq(metrics_op_name(METRICS_OP_ADD_CHANNEL), "add_channel");
    ck_assert_str_eq(metrics_op_name(METRICS_OP_COUNT), "unknown");
    ck_assert_str_eq(metrics_result_name(METRICS_RESULT_HELD), "held");
    ck_assert_str_eq(metrics_result_name((enum metrics_result)99), "unknown");
    ck_assert_str_eq(metrics_status_name(METRICS_STATUS_SKIPPED), "skipped");
    ck_assert_str_eq(metrics_status_name((enum metrics_status) - 1), "unknown");
}
END_TEST

START_TEST(doubles_are_shortest_round_trip)
{
    char text[40];

    ck_assert_int_eq(metrics_format_double(0.1, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "0.1");
    ck_assert_int_eq(metrics_format_double(0.1 + 0.2, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "0.30000000000000004");
    ck_assert_int_eq(metrics_format_double(1e-5, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "1e-05");
    ck_assert_int_eq(metrics_format_double(0, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "0");
    ck_assert_int_eq(metrics_format_double(-3, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "-3");
    ck_assert_int_eq(metrics_format_double(1700000000.123, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "1700000000.123");
    ck_assert_int_eq(metrics_format_double(NAN, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "NaN");
    ck_assert_int_eq(metrics_format_double(INFINITY, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "+Inf");
    ck_assert_int_eq(metrics_format_double(-INFINITY, text, sizeof(text)), 0);
    ck_assert_str_eq(text, "-Inf");
    ck_assert_int_eq(metrics_format_double(1, text, 8), OMNISYNC_EINVAL);
}
END_TEST

START_TEST(promtool_accepts_the_exposition)
{
    struct metrics m;
    size_t len;
    char *text;

    /* Fresh: families without samples, no outbox figures. */
    metrics_init(&m);
    text = render(&m, "0.1.0", &len);
    assert_promtool_clean(text, len);
    free(text);

    /* Busy, with odd values in gauges and an escaped version. */
    fill(&m);
    m.oldest_pending_age_seconds = 1e-7;
    m.last_success_timestamp_seconds = 1.7e9 + 0.1;
    metrics_observe(&m.delivery_seconds, 123456.789);
    text = render(&m, "0.1.0-\"rc\"\\\n", &len);
    assert_promtool_clean(text, len);
    free(text);
}
END_TEST

START_TEST(large_exposition_is_complete)
{
    struct metrics m;
    size_t len;
    int e, code;
    char *text;

    /* Every slot of every endpoint in use, plus overflow: well past the first buffer size, so
     * lines are written across a reallocation. */
    metrics_init(&m);
    for (e = OMNIDESK_CREATE; e <= OMNIDESK_PROBE; e++)
        for (code = 100; code < 100 + METRICS_CODES + 3; code++)
            metrics_count_request(&m, e, code);
    text = render(&m, "1.2.3", &len);
    ck_assert_uint_gt(len, 8192);
    ck_assert_uint_eq(count_prefixed_lines(text, "omnisync_http_requests_total{"),
                      (OMNIDESK_PROBE + 1) * (METRICS_CODES + 1));
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"probe\",code=\"115\"} 1");
    ck_assert_line(text, "omnisync_http_requests_total{endpoint=\"probe\",code=\"other\"} 3");
    ck_assert_line(text, "omnisync_build_info{version=\"1.2.3\"} 1");
    assert_promtool_clean(text, len);
    free(text);
}
END_TEST

START_TEST(promtool_rejects_a_broken_exposition)
{
    /* The check above is only worth something if promtool does fail on a real mistake. */
    static const char broken[] = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
                                 "# HELP a_total A.\n# TYPE a_total counter\n";
    char report[4096];

    ck_assert_int_ne(promtool_check_metrics(broken, sizeof(broken) - 1, report, sizeof(report)), 0);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("render");

    tcase_add_test(tc, render_known_values_exactly);
    tcase_add_test(tc, one_help_and_type_per_family);
    tcase_add_test(tc, outbox_figures_only_once_known);
    tcase_add_test(tc, version_label_is_escaped);
    tcase_add_test(tc, histogram_is_cumulative_and_consistent);
    tcase_add_test(tc, code_slots_overflow_into_other);
    tcase_add_test(tc, endpoint_labels_follow_omnidesk);
    tcase_add_test(tc, label_names);
    tcase_add_test(tc, transliterated_per_source);
    tcase_add_test(tc, doubles_are_shortest_round_trip);
    tcase_add_test(tc, promtool_accepts_the_exposition);
    tcase_add_test(tc, large_exposition_is_complete);
    tcase_add_test(tc, promtool_rejects_a_broken_exposition);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
