/*
 * What the people on call see: /healthz, /readyz and /metrics of a running daemon (scraped and
 * checked by promtool), readiness following the database, and a log that holds no personal
 * value, no API key and no database password after a full workload.
 */
#include <check.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "httpget.h"
#include "promtool.h"
#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc omnisync_daemon;
static int port;

/* GET path on the health port: returns the HTTP status (0 when no answer). */
static long get(const char *path, struct http_body *b)
{
    return http_get(port, path, b);
}

static long readyz(void)
{
    static struct http_body b;
    return get("/readyz", &b);
}

#define BEYOND_LOOPBACK "the health endpoint is reachable from other hosts"

/* The daemon with its health endpoint on `listen` (the port is read from its log). */
static void start_on(const char *listen)
{
    char health[128];
    snprintf(health, sizeof(health), "[health]\nlisten = %s\n", listen);
    ck_assert_int_eq(scenario_setup(&sc, health, NULL), 0);
    /* A password in the conninfo (trust auth ignores it): it must never be printed. */
    strncat(sc.conninfo, " password=pg-s3cret-pw", sizeof(sc.conninfo) - strlen(sc.conninfo) - 1);
    ck_assert_int_eq(scenario_write_config(&sc, health), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
    port = scenario_health_port(&omnisync_daemon);
    ck_assert_int_gt(port, 0);
}

static void start(void)
{
    start_on("127.0.0.1:0");
}

static void finish(void)
{
    int code = proc_stop(&omnisync_daemon, 20000);
    if (code != 0)
        proc_dump(&omnisync_daemon, "omnisync run");
    ck_assert_int_eq(code, 0);
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
}

static int promtool_accepts(const char *text)
{
    static char report[8192];
    int rc = promtool_check_metrics(text, strlen(text), report, sizeof(report));
    if (rc != 0)
        fprintf(stderr, "promtool: %s\n", report);
    return rc == 0;
}

START_TEST(test_endpoints_and_metrics)
{
    static struct http_body b;
    start();
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name, email) SELECT 'M' || i, 'Ann', 'Lee', 'm' || i "
                                         "|| '@example.com' FROM generate_series(1, 30) i"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 30000));
    ck_assert_int_eq(get("/healthz", &b), 200);
    ck_assert_int_eq(get("/readyz", &b), 200);
    ck_assert_ptr_nonnull(strstr(b.text, "\"db\":\"connected\""));
    ck_assert_ptr_nonnull(strstr(b.text, "\"listening\":true"));
    /* The outbox gauges come from a count at most every 15 s: wait for one that saw them. */
    ck_assert(WAIT_UNTIL(get("/metrics", &b) == 200 &&
                             strstr(b.text, "omnisync_outbox_rows{status=\"done\"} 30") != NULL,
                         25000));
    ck_assert_msg(promtool_accepts(b.text), "promtool refused:\n%s", b.text);
    ck_assert_ptr_nonnull(strstr(b.text, "omnisync_deliveries_total{op=\"create\",result=\"done\"} 30"));
    ck_assert_ptr_nonnull(strstr(b.text, "omnisync_http_requests_total{endpoint=\"create\",code=\"200\"} 30"));
    ck_assert_ptr_nonnull(strstr(b.text, "omnisync_commit_to_delivery_seconds_count 30"));
    ck_assert_ptr_nonnull(strstr(b.text, "omnisync_db_connected 1"));
    ck_assert_ptr_nonnull(strstr(b.text, "omnisync_build_info{version="));
    /* No id or personal value in any label. */
    ck_assert_ptr_null(strstr(b.text, "M1"));
    ck_assert_ptr_null(strstr(b.text, "example.com"));
    ck_assert_int_eq(get("/nope", &b), 404);
    finish();
}
END_TEST

START_TEST(test_readyz_follows_the_database)
{
    start();
    ck_assert_int_eq(readyz(), 200);
    ck_assert_int_eq(pgrig_server_stop(sc.pg, "fast"), 0);
    ck_assert_msg(WAIT_UNTIL(readyz() == 503, 15000), "readyz stayed up without a database");
    static struct http_body b;
    ck_assert_int_eq(get("/readyz", &b), 503);
    ck_assert_ptr_nonnull(strstr(b.text, "\"db\":\"disconnected\""));
    ck_assert_int_eq(get("/healthz", &b), 200); /* alive all the same */
    ck_assert_int_eq(pgrig_server_start(sc.pg), 0);
    ck_assert_msg(WAIT_UNTIL(readyz() == 200, 30000), "readyz did not come back");
    PQfinish(sc.conn);
    sc.conn = pgrig_connect(sc.pg, sc.db);
    ck_assert_ptr_nonnull(sc.conn);
    finish();
}
END_TEST

START_TEST(test_log_holds_no_secret_or_personal_value)
{
    start();
    ck_assert_int_eq(pgrig_exec(sc.conn,
                                "INSERT INTO customers VALUES "
                                "('P-1', 'Wilhelmina', 'Vanderbilt', 'wilhelmina@example.org', "
                                " '+31687650001', 'platinum', NULL, false), "
                                "('P-2', 'R2D2', 'Droid', 'r2@example.org', '+31687650002', NULL, "
                                " NULL, false), "
                                "('P-3', 'Quentin', 'Zwolsman', 'not-an-email', NULL, NULL, NULL, "
                                " false)"),
                     0);
    ck_assert_int_eq(pgrig_exec(sc.conn, "UPDATE customers SET email = 'w.v@example.org', "
                                         "phone = '+31687659999' WHERE customer_no = 'P-1'"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 30000));
    ck_assert_int_eq(pgrig_exec(sc.conn, "DELETE FROM customers WHERE customer_no = 'P-1'"), 0);
    ck_assert(scenario_wait_quiet(&sc, 30000));

    int code = proc_stop(&omnisync_daemon, 20000);
    ck_assert_int_eq(code, 0);
    char *log = proc_stderr(&omnisync_daemon);
    static const char *const secrets[] = {
        "Wilhelmina", "Vanderbilt", "wilhelmina@example.org", "+31687650001", "w.v@example.org",
        "+31687659999", "platinum", "R2D2", "Droid", "r2@example.org", "+31687650002", "Quentin",
        "Zwolsman", "not-an-email", SCENARIO_API_KEY, "pg-s3cret-pw"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        ck_assert_msg(strstr(log, secrets[i]) == NULL, "the log holds \"%s\"", secrets[i]);
    /* It does name what happened, by id. */
    ck_assert_ptr_nonnull(strstr(log, "primary_id=P-2"));
    ck_assert_ptr_nonnull(strstr(log, "invalid firstname"));
    free(log);
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
}
END_TEST

/* Outcomes the database refuses (here, a broken record_outcomes whose error quotes a customer
 * id) are dropped after five tries; readyz says so in plain words, without the database's
 * error text, and the daemon still stops cleanly. */
START_TEST(test_readyz_names_outcomes_not_recorded)
{
    static struct http_body b;
    start();
    ck_assert_int_eq(pgrig_exec(sc.conn, "CREATE OR REPLACE FUNCTION omnisync.record_outcomes("
                                         "p_process text, p_outcomes jsonb) RETURNS integer "
                                         "LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'refused %', "
                                         "p_outcomes->0->>'primary_id'; END$$"),
                     0);
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name, email) VALUES ('R1', 'Ann', 'Lee', "
                                         "'r1@example.com')"),
                     0);
    ck_assert_msg(WAIT_UNTIL(get("/readyz", &b) == 200 &&
                                 strstr(b.text, "refused to record delivery outcomes") != NULL,
                             20000),
                  "readyz does not name the dropped outcomes: %s", b.text);
    ck_assert_ptr_null(strstr(b.text, "R1"));
    ck_assert(proc_wait_stderr(&omnisync_daemon, "dropping the batch", 5000));
    finish();
}
END_TEST

/*
 * A CRM primary id is data from outside: one holding a newline and a whole forged log line, and
 * one with a space, go through the real daemon in both log formats. Every line of its stderr is
 * one event of its own making (logfmt lines start with the real timestamp, JSON lines parse as
 * one strict object), and the ids come back escaped, inside their pair.
 */
START_TEST(test_hostile_primary_id_forges_no_log_line)
{
    static const char *const formats[] = {"logfmt", "json"};
    for (int f = 0; f < 2; f++) {
        char extra[128];
        snprintf(extra, sizeof(extra), "[log]\nformat = %s\n", formats[f]);
        ck_assert_int_eq(scenario_setup(&sc, extra, NULL), 0);
        ck_assert_int_eq(scenario_start_daemon(&sc, &omnisync_daemon), 0);
        ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                             "last_name, email) VALUES "
                                             "(E'X\\nts=1999-01-01T00:00:00.000Z level=error "
                                             "msg=\"FORGED\" \\\\ \"', 'Ann', 'Lee', "
                                             "'x1@example.com'), "
                                             "('Ok 2', 'Bob', 'Lee', 'x2@example.com')"),
                         0);
        ck_assert(scenario_wait_quiet(&sc, 30000));
        ck_assert_int_eq(proc_stop(&omnisync_daemon, 20000), 0);
        char *log = proc_stderr(&omnisync_daemon);
        int lines = 0, hostile_seen = 0, ok2_seen = 0;
        for (char *line = log, *nl; *line != '\0'; line = nl + 1) {
            nl = strchr(line, '\n');
            ck_assert_msg(nl != NULL, "a line without its newline: %s", line);
            *nl = '\0';
            lines++;
            if (f == 0) {
                ck_assert_msg(strncmp(line, "ts=20", 5) == 0 && strncmp(line, "ts=1999", 7) != 0,
                              "a line the daemon did not write: %s", line);
                if (strstr(line, " primary_id=\"X\\nts=1999-01-01T00:00:00.000Z level=error "
                                 "msg=\\\"FORGED\\\" \\\\ \\\"\"") != NULL)
                    hostile_seen++;
                if (strstr(line, " primary_id=\"Ok 2\"") != NULL)
                    ok2_seen++;
                continue;
            }
            struct json_tokener *tok = json_tokener_new();
            json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
            struct json_object *obj = json_tokener_parse_ex(tok, line, (int)strlen(line));
            ck_assert_msg(obj != NULL && json_tokener_get_parse_end(tok) == strlen(line) &&
                              json_object_is_type(obj, json_type_object),
                          "not one JSON object: %s", line);
            json_tokener_free(tok);
            struct json_object *id;
            if (json_object_object_get_ex(obj, "primary_id", &id)) {
                const char *v = json_object_get_string(id);
                if (strcmp(v, "X\nts=1999-01-01T00:00:00.000Z level=error msg=\"FORGED\" \\ "
                              "\"") == 0)
                    hostile_seen++;
                if (strcmp(v, "Ok 2") == 0)
                    ok2_seen++;
            }
            json_object_put(obj);
        }
        ck_assert_msg(hostile_seen >= 1 && ok2_seen >= 1,
                      "%s: the ids are not in their pairs (%d, %d) in %d lines", formats[f],
                      hostile_seen, ok2_seen, lines);
        free(log);
        proc_free(&omnisync_daemon);
        scenario_teardown(&sc);
    }
}
END_TEST

/* `omnisync <command> [arg]` on the scenario's config; returns the exit code, stdout in *out. */
static int cli(const char *command, const char *arg, char **out)
{
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, (char *)command, (char *)arg, NULL};
    char *err = NULL;
    int code = proc_run(argv, NULL, 30000, out, &err);

    free(err);
    return code;
}

static int status_shows(const char *arg, const char *needle)
{
    char *out = NULL;
    int found = cli("status", arg, &out) == 0 && out != NULL && strstr(out, needle) != NULL;

    free(out);
    return found;
}

/* Issue 17 item 5: "Retry-After: 1000000000000" used to pause every request for 24 h while
 * /readyz said "api":"ok". The pause is capped at max_retry_after (5 min by default), shown in
 * /readyz, the metric and `omnisync status` (text and --json), and `omnisync resume` (_i 0) or
 * SIGHUP (_i 1) ends it. */
START_TEST(test_api_pause_is_capped_shown_and_ended)
{
    static struct http_body b;
    const char *p;
    double pause_s;
    char *out = NULL;

    start();
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_429\":1,\"retry_after\":\"1000000000000\"}"),
                     0);
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) VALUES ('P1', 'Ann', 'Lee')"),
                     0);
    ck_assert_msg(WAIT_UNTIL(get("/readyz", &b) == 200 &&
                                 strstr(b.text, "\"api\":\"paused_by_retry_after\"") != NULL,
                             20000),
                  "readyz does not show the pause: %s", b.text);
    ck_assert_ptr_nonnull(strstr(b.text, "\"api_paused_until\":\"20"));
    p = strstr(b.text, "\"api_pause_s\":");
    ck_assert_ptr_nonnull(p);
    pause_s = atof(p + strlen("\"api_pause_s\":"));
    ck_assert_msg(pause_s > 200 && pause_s <= 300, "pause of %g s, not capped at 5 min", pause_s);
    ck_assert_ptr_nonnull(strstr(b.text, "capped at max_retry_after"));
    ck_assert_int_eq(get("/metrics", &b), 200);
    p = strstr(b.text, "\nomnisync_api_pause_seconds ");
    ck_assert_ptr_nonnull(p);
    pause_s = atof(p + strlen("\nomnisync_api_pause_seconds "));
    ck_assert_msg(pause_s > 200 && pause_s <= 300, "metric says %g s", pause_s);
    /* status reads each process' heartbeat, written every status tick (5 s here). */
    ck_assert_msg(WAIT_UNTIL(status_shows(NULL, "paused by Retry-After until 20"), 15000),
                  "status does not show the pause");
    ck_assert(status_shows("--json", "\"paused by Retry-After until 20"));

    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"p_429\":0}"), 0);
    if (_i == 0) {
        ck_assert_int_eq(cli("resume", NULL, &out), 0);
        free(out);
    } else {
        ck_assert_int_eq(proc_signal(&omnisync_daemon, SIGHUP), 0);
    }
    ck_assert_msg(
        WAIT_UNTIL(get("/readyz", &b) == 200 && strstr(b.text, "\"api\":\"ok\"") != NULL, 5000),
        "the pause did not end: %s", b.text);
    ck_assert(proc_wait_stderr(&omnisync_daemon,
                               _i == 0 ? "ended early by omnisync resume" : "ended early by SIGHUP",
                               5000));
    ck_assert_int_eq(get("/metrics", &b), 200);
    ck_assert_ptr_nonnull(strstr(b.text, "\nomnisync_api_pause_seconds 0\n"));
    /* Requests go again: a new customer is delivered at once. */
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) VALUES ('P2', 'Bo', 'Li')"),
                     0);
    ck_assert_msg(
        WAIT_UNTIL(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                            "WHERE primary_id = 'P2' AND status = 'done'") == 1,
                   10000),
        "delivery did not resume");
    finish();
}
END_TEST

/* Issue 17 item 9 (DESIGN §2): a change of the primary id is delivered as a new customer, and
 * the warning names both outbox ids (the row that changed the id and the row sent, here merged
 * into one request) and the old id. */
START_TEST(test_primary_id_change_warning_names_both_rows)
{
    char *out = NULL, want[160], *log, *line;
    long long changed_in, sent;

    start();
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) VALUES ('K1', 'Ann', 'Lee')"),
                     0);
    ck_assert(scenario_wait_quiet(&sc, 20000));
    ck_assert_int_eq(cli("pause", NULL, &out), 0);
    free(out);
    ck_assert_int_eq(pgrig_exec(sc.conn, "UPDATE customers SET customer_no = 'K2' "
                                         "WHERE customer_no = 'K1'"),
                     0);
    ck_assert_int_eq(pgrig_exec(sc.conn, "UPDATE customers SET first_name = 'Bo' "
                                         "WHERE customer_no = 'K2'"),
                     0);
    /* What a claim does first: captured rows into the outbox, where they get their ids. */
    ck_assert(WAIT_UNTIL(pgrig_exec(sc.conn, "SELECT omnisync.move_captured()") == 0 &&
                             pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture") == 0,
                         10000));
    changed_in = pgrig_query_int(sc.conn, "SELECT min(id) FROM omnisync.outbox "
                                          "WHERE primary_id = 'K2'");
    sent = pgrig_query_int(sc.conn, "SELECT max(id) FROM omnisync.outbox WHERE primary_id = 'K2'");
    ck_assert_int_lt(changed_in, sent);
    out = NULL;
    ck_assert_int_eq(cli("resume", NULL, &out), 0);
    free(out);
    snprintf(want, sizeof(want), "changed_in_outbox_id=%lld outbox_id=%lld", changed_in, sent);
    ck_assert_msg(proc_wait_stderr(&omnisync_daemon, want, 20000), "no \"%s\" in the log", want);
    log = proc_stderr(&omnisync_daemon);
    line = strstr(log, want);
    ck_assert_ptr_nonnull(line);
    ck_assert_ptr_nonnull(strstr(line, "old_primary_id="));
    ck_assert_msg(strncmp(strstr(line, "old_primary_id=") + 15, "K1", 2) == 0 ||
                      strncmp(strstr(line, "old_primary_id=") + 15, "\"K1\"", 4) == 0,
                  "%.200s", line);
    free(log);
    finish();
}
END_TEST

/* Another address works, with a warning at start; on loopback there is none. */
START_TEST(test_health_beyond_loopback_warns)
{
    start_on("0.0.0.0:0");
    ck_assert(proc_wait_stderr(&omnisync_daemon, BEYOND_LOOPBACK, 5000));
    static struct http_body b;
    ck_assert_int_eq(get("/healthz", &b), 200);
    finish();

    start();
    ck_assert(proc_wait_stderr(&omnisync_daemon, "listening for changes", 10000));
    char *log = proc_stderr(&omnisync_daemon);
    ck_assert_msg(strstr(log, BEYOND_LOOPBACK) == NULL, "a loopback endpoint was warned about");
    free(log);
    finish();
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("observability");
    TCase *tc = tcase_create("observability");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_endpoints_and_metrics);
    tcase_add_test(tc, test_readyz_follows_the_database);
    tcase_add_test(tc, test_log_holds_no_secret_or_personal_value);
    tcase_add_test(tc, test_readyz_names_outcomes_not_recorded);
    tcase_add_test(tc, test_health_beyond_loopback_warns);
    tcase_add_test(tc, test_hostile_primary_id_forges_no_log_line);
    tcase_add_loop_test(tc, test_api_pause_is_capped_shown_and_ended, 0, 2);
    tcase_add_test(tc, test_primary_id_change_warning_names_both_rows);
    suite_add_tcase(s, tc);
    int rc = pgrig_run_suite(s);
    curl_global_cleanup();
    return rc;
}
