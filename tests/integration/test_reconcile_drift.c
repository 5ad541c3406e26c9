/*
 * omnisync reconcile (issue 19): drift made behind omnisync's back through the fake's control API
 * is reported exactly (kinds and fields), --repair and a drain put every CRM customer back, and a
 * read that cannot be completed (bad pages, a key refused mid-run, a 503 storm) is an error that
 * enqueues nothing. OMNISYNC_RECONCILE_ROWS sets the size of the first test (2,000).
 */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "httpget.h"
#include "operator.h"
#include "promtool.h"
#include "scenario.h"
#include "schema.h"
#include "testutil.h"

static struct scenario sc;

static long long q(const char *sql)
{
    return pgrig_query_int(sc.conn, sql);
}

/* Customers R00001.. with names, an email, a phone and a tier; delivered by the triggers. */
static void insert_customers(int n)
{
    scenario_execf(&sc,
                   "INSERT INTO customers (customer_no, first_name, last_name, email, phone, "
                   "loyalty_tier) SELECT 'R' || lpad(i::text, 5, '0'), 'Ann', 'Lee', "
                   "'r' || i || '@example.com', '+3161' || lpad(i::text, 7, '0'), 'gold' "
                   "FROM generate_series(1, %d) i",
                   n);
}

static void control(const char *action, const char *json)
{
    char path[64];
    struct json_object *out = NULL;
    snprintf(path, sizeof(path), "/_fake/customers/%s", action);
    ck_assert_msg(fake_post_json(&sc.fake, path, json, &out) == 0, "%s %s failed", path, json);
    json_object_put(out);
}

static void controlf(const char *action, const char *fmt, int i)
{
    char json[512];
    snprintf(json, sizeof(json), fmt, i);
    control(action, json);
}

/* Runs reconcile with `extra` arguments; returns the exit code; out and err receive the streams. */
static int reconcile(const char *const *extra, char **out, char **err)
{
    char *argv[16] = {OMNISYNC_BIN, "--config", sc.config, "reconcile"};
    int n = 4;
    for (; extra != NULL && *extra != NULL && n < 15; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    return proc_run(argv, NULL, 300000, out, err);
}

static struct json_object *entry_of(struct json_object *report, const char *primary_id)
{
    struct json_object *drift = json_object_object_get(report, "drift");
    for (size_t i = 0; i < json_object_array_length(drift); i++) {
        struct json_object *e = json_object_array_get_idx(drift, i);
        if (strcmp(json_object_get_string(json_object_object_get(e, "primary_id")), primary_id) ==
            0)
            return e;
    }
    return NULL;
}

static long long count_of(struct json_object *report, const char *kind)
{
    return json_object_get_int64(
        json_object_object_get(json_object_object_get(report, "counts"), kind));
}

/* The entry of `id` has `kind` and exactly the one field `field` (NULL: no field). */
static void assert_entry(struct json_object *report, const char *id, const char *kind,
                         const char *field)
{
    struct json_object *e = entry_of(report, id);
    ck_assert_msg(e != NULL, "%s is not in the report", id);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(e, "kind")), kind);
    struct json_object *fields = json_object_object_get(e, "fields");
    ck_assert_int_eq(json_object_array_length(fields), field ? 1 : 0);
    if (field)
        ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(fields, 0)), field);
}

static long long rows_wanted(void)
{
    const char *env = getenv("OMNISYNC_RECONCILE_ROWS");
    long long n = env ? atoll(env) : 0;
    return n >= 300 ? n : 2000;
}

START_TEST(test_reconcile_reports_and_repairs_drift)
{
    int n = (int)rows_wanted();
    struct proc daemon;
    char *out = NULL, *err = NULL, id[16];
    ck_assert_int_eq(scenario_setup(&sc, "[log]\nlevel = info\n", NULL), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &daemon), 0);
    insert_customers(n);
    ck_assert_msg(scenario_wait_quiet(&sc, 300000), "%lld rows still open",
                  scenario_open_rows(&sc));
    ck_assert_int_eq(fake_stat(&sc.fake, "customers"), n);

    /* In step: exit 0, nothing listed. */
    int code = reconcile((const char *[]){"--json", NULL}, &out, &err);
    ck_assert_msg(code == 0, "exit %d: %s %s", code, out, err);
    free(out);
    free(err);

    /* Drift behind omnisync's back: 20 deleted, 20 renamed, 20 without their email, 20 added
     * that the CRM does not have. */
    for (int i = 1; i <= 20; i++) {
        controlf("delete", "{\"brand_id\":1,\"external_primary_id\":\"R%05d\"}", i);
        controlf("change",
                 "{\"brand_id\":1,\"external_primary_id\":\"R%05d\",\"firstname\":\"Renamed\"}",
                 100 + i);
        controlf("change",
                 "{\"brand_id\":1,\"external_primary_id\":\"R%05d\",\"drop_channels\":[\"email\"]}",
                 200 + i);
        controlf("add",
                 "{\"brand_id\":1,\"external_primary_id\":\"X%05d\",\"firstname\":\"Hand\","
                 "\"lastname\":\"Made\"}",
                 i);
    }
    /* Customers without an external id and of another brand are not omnisync's. */
    control("add", "{\"brand_id\":2,\"external_primary_id\":\"R00050\",\"firstname\":\"Other\"}");

    code = reconcile((const char *[]){"--json", NULL}, &out, &err);
    ck_assert_msg(code == 3, "exit %d: %s %s", code, out, err);
    struct json_object *report = json_tokener_parse(out);
    ck_assert_msg(report != NULL, "not JSON: %s", out);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(report, "source")), "customers");
    ck_assert_int_eq(json_object_get_int64(json_object_object_get(report, "crm_customers")), n);
    ck_assert_int_eq(json_object_get_int64(json_object_object_get(report, "omnidesk_customers")),
                     n);
    ck_assert_int_eq(json_object_get_int64(json_object_object_get(report, "in_step")), n - 60);
    ck_assert_int_eq(count_of(report, "missing"), 20);
    ck_assert_int_eq(count_of(report, "different"), 40);
    ck_assert_int_eq(count_of(report, "extra"), 20);
    ck_assert_int_eq(count_of(report, "unsendable"), 0);
    ck_assert_int_eq(count_of(report, "pending"), 0);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(report, "drift")), 80);
    for (int i = 1; i <= 20; i++) {
        snprintf(id, sizeof(id), "R%05d", i);
        assert_entry(report, id, "missing", NULL);
        snprintf(id, sizeof(id), "R%05d", 100 + i);
        assert_entry(report, id, "different", "firstname");
        snprintf(id, sizeof(id), "R%05d", 200 + i);
        assert_entry(report, id, "different", "email");
        snprintf(id, sizeof(id), "X%05d", i);
        assert_entry(report, id, "extra", NULL);
    }
    /* No values without --show-data. */
    ck_assert_ptr_null(strstr(out, "Renamed"));
    ck_assert_ptr_null(strstr(out, "@example.com"));
    json_object_put(report);
    free(out);
    free(err);

    /* --show-data shows them. */
    ck_assert_int_eq(reconcile((const char *[]){"--json", "--show-data", NULL}, &out, &err), 3);
    ck_assert_ptr_nonnull(strstr(out, "Renamed"));
    free(out);
    free(err);

    /* Repair: one reconcile row per missing or different customer, delivered by the daemon. */
    code = reconcile((const char *[]){"--repair", NULL}, &out, &err);
    ck_assert_msg(code == 3, "exit %d: %s %s", code, out, err);
    ck_assert_msg(strstr(out, "repair: 60 customers enqueued") != NULL, "%s", out);
    free(out);
    free(err);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile'"), 60);
    ck_assert_msg(scenario_wait_quiet(&sc, 120000), "%lld rows still open",
                  scenario_open_rows(&sc));
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile' AND "
                       "status <> 'done'"),
                     0);

    /* In step again; the extra customers are still listed, and are no reason for exit 3. */
    code = reconcile((const char *[]){"--json", NULL}, &out, &err);
    ck_assert_msg(code == 0, "exit %d: %s %s", code, out, err);
    report = json_tokener_parse(out);
    ck_assert_int_eq(count_of(report, "extra"), 20);
    ck_assert_int_eq(count_of(report, "missing") + count_of(report, "different"), 0);
    json_object_put(report);
    free(out);
    free(err);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);

    /* Omnidesk equals the CRM for every CRM customer, once the hand-made ones are gone. */
    for (int i = 1; i <= 20; i++)
        controlf("delete", "{\"brand_id\":1,\"external_primary_id\":\"X%05d\"}", i);
    control("delete", "{\"brand_id\":2,\"external_primary_id\":\"R00050\"}");
    char why[512];
    ck_assert_msg(scenario_compare(&sc, NULL, why, sizeof(why)) == 0, "%s", why);

    ck_assert_int_eq(proc_stop(&daemon, 20000), 0);
    proc_free(&daemon);
    scenario_teardown(&sc);
}
END_TEST

/* Exit 1, the message in stderr, and nothing enqueued. */
static void assert_fails(const char *faults, const char *message)
{
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(fake_set_faults(&sc.fake, faults), 0);
    int code = reconcile((const char *[]){"--repair", NULL}, &out, &err);
    ck_assert_msg(code == 1 && strstr(err, message) != NULL && strstr(err, "nothing was enqueued"),
                  "%s: exit %d, stderr: %s", faults, code, err);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile'"), 0);
    free(out);
    free(err);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"index_fault\":\"none\",\"p_5xx\":0,"
                                               "\"latency_ms\":0,\"paths\":null}"),
                     0);
}

START_TEST(test_reconcile_incomplete_read_is_an_error)
{
    struct proc daemon;
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(scenario_setup(&sc, "[log]\nlevel = info\n", NULL), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &daemon), 0);
    insert_customers(300);
    ck_assert(scenario_wait_quiet(&sc, 120000));
    ck_assert_int_eq(proc_stop(&daemon, 20000), 0);
    proc_free(&daemon);
    /* Drift a repair would act on, if a partial read were trusted. */
    control("delete", "{\"brand_id\":1,\"external_primary_id\":\"R00007\"}");

    assert_fails("{\"index_fault\":\"wrong_shape\",\"index_fault_from\":99}",
                 "itemStart=99 has no array \"items\"");
    assert_fails("{\"index_fault\":\"missing_field\",\"index_fault_from\":198}",
                 "itemStart=198 has no integer \"itemTotal\"");
    assert_fails("{\"index_fault\":\"growing_total\"}", "itemTotal changed from");
    assert_fails("{\"p_5xx\":1.0,\"paths\":[\"index\"]}", "could not be read after 6 attempts");

    /* The key refused after the first pages. */
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"latency_ms\":300}"), 0);
    struct proc run;
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, "reconcile", "--repair", NULL};
    long long before = fake_stat(&sc.fake, "by_endpoint.index");
    ck_assert_int_eq(proc_spawn(&run, argv, NULL), 0);
    ck_assert(fake_wait_stat(&sc.fake, "by_endpoint.index", before + 1, 20000) == 0);
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"api_key\":\"another-key\"}"), 0);
    int code = proc_wait(&run, 60000);
    err = proc_stderr(&run);
    ck_assert_msg(code == 1 && strstr(err, "refused the API key (HTTP 401)"), "exit %d: %s", code,
                  err);
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    free(err);
    proc_free(&run);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile'"), 0);
    ck_assert_int_eq(fake_reset(&sc.fake), 0);

    /* Usage. */
    ck_assert_int_eq(reconcile((const char *[]){"--rate", "x", NULL}, NULL, NULL), 2);
    ck_assert_int_eq(reconcile((const char *[]){"extra-arg", NULL}, NULL, NULL), 2);
    ck_assert_int_eq(reconcile((const char *[]){"--source", "nope", NULL}, NULL, &err), 1);
    free(err);
    (void)out;
    scenario_teardown(&sc);
}
END_TEST

START_TEST(test_reconcile_custom_fields_unsendable_and_pending)
{
    struct proc daemon;
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(scenario_setup(&sc, "[log]\nlevel = info\n", NULL), 0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &daemon), 0);
    insert_customers(150);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) "
                       "VALUES ('BAD1', 'R2D2', 'Droid')");
    ck_assert(scenario_wait_quiet(&sc, 120000));
    ck_assert_int_eq(proc_stop(&daemon, 20000), 0);
    proc_free(&daemon);

    /* The index as the API document shows it: no custom fields; the item endpoint settles them,
     * for the customers the CRM maps a custom field for. */
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"index_custom\":false}"), 0);
    control("change",
            "{\"brand_id\":1,\"external_primary_id\":\"R00003\",\"custom\":{\"tier\":\"tin\"}}");
    /* Changed in the CRM while the daemon is down: pending, not drift, and not repaired. */
    control("delete", "{\"brand_id\":1,\"external_primary_id\":\"R00004\"}");
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Fresh' WHERE customer_no = 'R00004'");

    long long items_before = fake_stat(&sc.fake, "by_endpoint.item");
    int code = reconcile((const char *[]){"--json", "--repair", NULL}, &out, &err);
    ck_assert_msg(code == 3, "exit %d: %s %s", code, out, err);
    struct json_object *report = json_tokener_parse(out);
    ck_assert_ptr_nonnull(report);
    assert_entry(report, "R00003", "different", "custom_tier");
    assert_entry(report, "R00004", "pending", NULL);
    assert_entry(report, "BAD1", "unsendable", "firstname");
    const char *rule =
        json_object_get_string(json_object_object_get(entry_of(report, "BAD1"), "rule"));
    ck_assert_msg(rule != NULL && strstr(rule, "must match") && !strstr(rule, "R2D2"), "%s", rule);
    ck_assert_int_eq(count_of(report, "different"), 1);
    ck_assert_int_eq(count_of(report, "missing"), 0);
    json_object_put(report);
    free(out);
    free(err);
    ck_assert_int_ge(fake_stat(&sc.fake, "by_endpoint.item") - items_before, 149);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile'"), 1);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile' AND "
                       "primary_id = 'R00003'"),
                     1);

    /* The table form names the kinds and fields, without values. */
    code = reconcile(NULL, &out, &err);
    ck_assert_int_eq(code, 3);
    ck_assert_msg(strstr(out, "unsendable") && strstr(out, "custom_tier") && !strstr(out, "R2D2"),
                  "%s", out);
    free(out);
    free(err);
    scenario_teardown(&sc);
}
END_TEST

/* [reconcile] interval: the daemon reconciles by itself; the figures are metrics and part of
 * status; nothing is repaired without an operator. */
START_TEST(test_reconcile_in_the_daemon)
{
    static struct http_body b;
    struct proc daemon;
    ck_assert_int_eq(scenario_setup(&sc,
                                    "[omnidesk]\nrate_per_sec = 50\n[health]\nlisten = "
                                    "127.0.0.1:0\n[reconcile]\ninterval = 1s\n[log]\nlevel = "
                                    "info\n",
                                    NULL),
                     0);
    ck_assert_int_eq(scenario_start_daemon(&sc, &daemon), 0);
    int port = scenario_health_port(&daemon);
    ck_assert_int_gt(port, 0);
    insert_customers(50);
    ck_assert(scenario_wait_quiet(&sc, 60000));
    control("delete", "{\"brand_id\":1,\"external_primary_id\":\"R00001\"}");
    control("delete", "{\"brand_id\":1,\"external_primary_id\":\"R00002\"}");
    control("add", "{\"brand_id\":1,\"external_primary_id\":\"X00001\"}");

    ck_assert_msg(
        WAIT_UNTIL(http_get(port, "/metrics", &b) == 200 &&
                       strstr(b.text, "omnisync_reconcile_drift{source=\"customers\",kind="
                                      "\"missing\"} 2\n") != NULL &&
                       strstr(b.text, "omnisync_reconcile_drift{source=\"customers\",kind="
                                      "\"extra\"} 1\n") != NULL,
                   30000),
        "%.3000s", b.text);
    ck_assert_ptr_null(strstr(b.text, "omnisync_reconcile_last_success_timestamp_seconds 0\n"));
    static char report[8192];
    ck_assert_msg(promtool_check_metrics(b.text, b.len, report, sizeof(report)) == 0, "%s", report);
    /* Reported, never repaired by the schedule. */
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile'"), 0);
    ck_assert(proc_stderr_contains(&daemon, "source=customers missing=2 different=0 extra=1"));

    char *out = NULL;
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, "status", "--json", NULL};
    ck_assert_int_eq(proc_run(argv, NULL, 30000, &out, NULL), 0);
    ck_assert_msg(strstr(out, "\"reconcile\"") && strstr(out, "missing=2"), "%s", out);
    free(out);

    ck_assert_int_eq(proc_stop(&daemon, 20000), 0);
    proc_free(&daemon);
    scenario_teardown(&sc);
}
END_TEST

/* The repair statement itself: a customer with an outbox row newer than the run's start (changed
 * in the CRM while reconcile read) is not repaired; the others are enqueued with their current
 * state, and sync_state learns what reconcile saw. */
START_TEST(test_repair_skips_customers_changed_during_the_run)
{
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    insert_customers(4);
    scenario_exec(&sc, "UPDATE customers SET last_name = 'Now' WHERE customer_no = 'R00001'");
    /* What a daemon's claim does: the captured changes into the outbox, delivered. */
    scenario_exec(&sc, "SELECT omnisync.move_captured()");
    scenario_exec(&sc, "UPDATE omnisync.outbox SET status = 'done'");
    scenario_exec(&sc, "INSERT INTO omnisync.sync_state (source, brand_id, primary_id, created, "
                       "omnidesk_id, channels) VALUES "
                       "('customers', 0, 'R00001', true, 11, '{email:r1@example.com}'), "
                       "('customers', 0, 'R00003', true, 13, "
                       "'{email:r3@example.com,telephone:+31610000003}')");
    long long start = q("SELECT max(id) FROM omnisync.outbox");
    /* R00002 changes after the run started: its own row carries the newer state, still in
     * omnisync.capture (no daemon has moved it) or already in the outbox. Changed with another
     * customer in one statement, it is in a multi-row UPDATE's statement row (sql/010). */
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Fresh' "
                       "WHERE customer_no IN ('R00002', 'R00004')");
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.capture WHERE op = 'update_many'"), 1);

    struct config cfg;
    ck_assert_int_eq(config_load(&cfg, sc.config), 0);
    char *read = NULL, *repair = NULL, err[512];
    ck_assert_int_eq(
        operator_reconcile_sql(sc.conn, &cfg.sources[0], &read, &repair, err, sizeof(err)), 0);
    char start_text[32];
    snprintf(start_text, sizeof(start_text), "%lld", start);
    const char *params[] = {
        "[{\"p\":\"R00001\",\"reset\":true,\"forget\":[]},"
        "{\"p\":\"R00002\",\"reset\":true,\"forget\":[]},"
        "{\"p\":\"R00003\",\"reset\":false,\"forget\":[\"email:r3@example.com\"]}]",
        start_text};
    PGresult *res = PQexecParams(sc.conn, repair, 2, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(sc.conn));
    ck_assert_int_eq(PQntuples(res), 2); /* R00001 and R00003, not R00002 */
    PQclear(res);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile' AND "
                       "primary_id = 'R00002'"),
                     0);
    /* The state enqueued is the row as it is now. */
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.outbox WHERE op = 'reconcile' AND "
                       "primary_id = 'R00001' AND new_data->>'lastname' = 'Now'"),
                     1);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.sync_state WHERE primary_id = 'R00001' "
                       "AND NOT created AND omnidesk_id IS NULL AND channels = '{}'"),
                     1);
    ck_assert_int_eq(q("SELECT count(*) FROM omnisync.sync_state WHERE primary_id = 'R00003' "
                       "AND created AND channels = '{telephone:+31610000003}'"),
                     1);
    free(read);
    free(repair);
    config_free(&cfg);
    scenario_teardown(&sc);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("reconcile");
    TCase *tc = tcase_create("reconcile");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_reconcile_custom_fields_unsendable_and_pending);
    tcase_add_test(tc, test_reconcile_incomplete_read_is_an_error);
    tcase_add_test(tc, test_repair_skips_customers_changed_during_the_run);
    tcase_add_test(tc, test_reconcile_in_the_daemon);
    tcase_add_test(tc, test_reconcile_reports_and_repairs_drift);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
