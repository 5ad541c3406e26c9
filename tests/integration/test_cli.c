/*
 * The operator's commands through the real binary: table and --json output, errors, and the
 * exit codes of DESIGN §5 (0 success, 1 error, 2 usage).
 */
#include <check.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static char *out, *err;

/* Runs `omnisync --config <sc> args...`; returns the exit code, output in out/err. */
static int run(const char *first, ...)
{
    char *argv[32];
    int n = 0;
    argv[n++] = OMNISYNC_BIN;
    argv[n++] = "--config";
    argv[n++] = sc.config;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    free(out);
    free(err);
    out = err = NULL;
    return proc_run(argv, NULL, 30000, &out, &err);
}

static struct json_object *json_out(void)
{
    struct json_object *obj = json_tokener_parse(out);
    ck_assert_msg(obj != NULL, "not JSON: %s", out);
    return obj;
}

static void setup(void)
{
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    /* Rows without a daemon: three captured changes, then statuses set by hand. */
    ck_assert_int_eq(pgrig_exec(sc.conn,
                                "INSERT INTO customers (customer_no, first_name, last_name) VALUES "
                                "('A1', 'Ann', 'Lee'), ('B2', 'Bob', 'Li'), ('C3', 'Cy', 'Ng');"
                                "SELECT omnisync.move_captured();" /* what a claim does */
                                "UPDATE omnisync.outbox SET status = 'failed', attempts = 12, "
                                " last_error = 'HTTP 400: bad', last_http_status = 400 "
                                " WHERE primary_id = 'A1';"
                                "UPDATE omnisync.outbox SET status = 'held', op = 'delete' "
                                " WHERE primary_id = 'B2';"
                                "UPDATE omnisync.outbox SET status = 'skipped', superseded_by = 99 "
                                " WHERE primary_id = 'C3'"),
                     0);
}

static void teardown(void)
{
    scenario_teardown(&sc);
    free(out);
    free(err);
    out = err = NULL;
}

static long long id_of(const char *primary_id)
{
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT id FROM omnisync.outbox WHERE primary_id = '%s'",
             primary_id);
    return pgrig_query_int(sc.conn, sql);
}

START_TEST(test_status)
{
    ck_assert_int_eq(run("status", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "customers"));
    ck_assert_ptr_nonnull(strstr(out, "recent failures"));
    ck_assert_ptr_nonnull(strstr(out, "HTTP 400: bad"));
    ck_assert_int_eq(run("status", "--json", NULL), 0);
    struct json_object *obj = json_out(), *sources, *row, *v;
    ck_assert(json_object_object_get_ex(obj, "sources", &sources));
    row = json_object_array_get_idx(sources, 0);
    ck_assert(json_object_object_get_ex(row, "failed", &v));
    ck_assert_int_eq(json_object_get_int(v), 1);
    ck_assert(json_object_object_get_ex(row, "held", &v));
    ck_assert_int_eq(json_object_get_int(v), 1);
    json_object_put(obj);
    ck_assert_int_eq(run("status", "extra", NULL), 2);
}
END_TEST

START_TEST(test_outbox_list_and_show)
{
    ck_assert_int_eq(run("outbox", "list", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "A1"));
    ck_assert_ptr_nonnull(strstr(out, "B2"));
    ck_assert_int_eq(run("outbox", "list", "--status", "failed", "--json", NULL), 0);
    struct json_object *obj = json_out();
    ck_assert_uint_eq(json_object_array_length(obj), 1);
    json_object_put(obj);
    ck_assert_int_eq(run("outbox", "list", "--primary-id", "B2", "--since", "1h", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "held"));
    ck_assert_int_eq(run("outbox", "list", "--status", "lost", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "--status lost"));
    ck_assert_int_eq(run("outbox", "list", "--since", "last tuesday-ish", NULL), 2);
    ck_assert_int_eq(run("outbox", "list", "--limit", "0", NULL), 2);

    char id[24];
    snprintf(id, sizeof(id), "%lld", id_of("A1"));
    ck_assert_int_eq(run("outbox", "show", id, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "HTTP 400: bad"));
    /* Without --show-data, the payload's values stay hidden. */
    ck_assert_ptr_null(strstr(out, "Ann"));
    ck_assert_ptr_nonnull(strstr(out, "firstname"));
    ck_assert_int_eq(run("outbox", "show", id, "--show-data", "--json", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "Ann"));
    obj = json_out();
    json_object_put(obj);
    ck_assert_int_eq(run("outbox", "show", "999999", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "no outbox row 999999"));
    ck_assert_int_eq(run("outbox", "show", "abc", NULL), 2);
    ck_assert_int_eq(run("outbox", NULL), 2);
}
END_TEST

START_TEST(test_replay)
{
    char a1[24], c3[24];
    snprintf(a1, sizeof(a1), "%lld", id_of("A1"));
    snprintf(c3, sizeof(c3), "%lld", id_of("C3"));
    /* A superseded row is refused: it would send stale data. */
    ck_assert_int_eq(run("replay", c3, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "superseded by 99"));
    ck_assert_int_eq(run("replay", "999999", NULL), 1);
    ck_assert_int_eq(run("replay", NULL), 2);
    ck_assert_int_eq(run("replay", a1, "--failed", NULL), 2);
    ck_assert_int_eq(run("replay", "--failed", "--since", "nonsense", NULL), 2);
    ck_assert_int_eq(run("replay", "--failed", "--dry-run", "--json", NULL), 0);
    struct json_object *obj = json_out();
    ck_assert_uint_eq(json_object_array_length(obj), 1);
    json_object_put(obj);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                              "status = 'failed'"),
                     1);
    ck_assert_int_eq(run("replay", "--failed", "--error", "HTTP 400", "--reason", "fixed", NULL),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "replayed 1 row"));
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                              "status = 'pending' AND attempts = 0 AND action = "
                                              "'replay' AND action_reason = 'fixed' AND action_by "
                                              "IS NOT NULL"),
                     1);
    ck_assert_int_eq(run("replay", "--failed", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "nothing to replay"));
}
END_TEST

/* Issue 17 item 9: an id out of range or not a number is a usage error naming it; it used to
 * become the largest id silently. Every command that takes ids. */
START_TEST(test_ids_out_of_range_are_refused)
{
    static const char *const bad[] = {
        "99999999999999999999", "9223372036854775808", "+5", " 5", "5x", "0", "0x10", ""};
    char reason[] = "--reason";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[80];
        snprintf(want, sizeof(want), "\"%s\" is not an outbox id", bad[i]);
        ck_assert_int_eq(run("replay", bad[i], NULL), 2);
        ck_assert_msg(strstr(err, want) != NULL, "replay %s: %s", bad[i], err);
        ck_assert_int_eq(run("skip", bad[i], reason, "x", NULL), 2);
        ck_assert_msg(strstr(err, want) != NULL, "skip %s: %s", bad[i], err);
        ck_assert_int_eq(run("outbox", "show", bad[i], NULL), 2);
        ck_assert_msg(strstr(err, want) != NULL, "outbox show %s: %s", bad[i], err);
        ck_assert_int_eq(run("purges", "release", bad[i], NULL), 2);
        ck_assert_msg(strstr(err, want) != NULL, "purges release %s: %s", bad[i], err);
    }
    ck_assert_int_eq(run("outbox", "list", "--limit", "99999999999999999999", NULL), 2);
    ck_assert_int_eq(run("replay", "-1", NULL), 2); /* taken for an option, named as one */
    /* The largest id is still an id: nothing has it. */
    ck_assert_int_eq(run("replay", "9223372036854775807", NULL), 1);
}
END_TEST

START_TEST(test_skip)
{
    char a1[24];
    snprintf(a1, sizeof(a1), "%lld", id_of("A1"));
    ck_assert_int_eq(run("skip", a1, NULL), 2); /* --reason is required */
    ck_assert_int_eq(run("skip", a1, "--reason", "test data", "--json", NULL), 0);
    struct json_object *obj = json_out();
    ck_assert_uint_eq(json_object_array_length(obj), 1);
    json_object_put(obj);
    ck_assert_int_eq(run("skip", a1, "--reason", "again", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "is skipped already"));
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.operator_action "
                                              "WHERE action = 'skip' AND reason = 'test data'"),
                     1);
}
END_TEST

/* skip --source: every pending, failed and held row of one source (one removed from the config). */
START_TEST(test_skip_source)
{
    ck_assert_int_eq(pgrig_exec(sc.conn, "INSERT INTO customers (customer_no) VALUES ('D4')"), 0);
    ck_assert_int_eq(run("skip", "--source", "customers", NULL), 2); /* --reason is required */
    ck_assert_int_eq(run("skip", "1", "--source", "customers", "--reason", "r", NULL), 2);
    ck_assert_int_eq(run("skip", "--source", "customers", "--status", "done", "--reason", "r",
                         NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--status done"));
    ck_assert_int_eq(run("skip", "--source", "nosuch", "--reason", "r", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "no row matches"));

    ck_assert_int_eq(run("skip", "--source", "customers", "--status", "pending", "--reason",
                         "gone", "--dry-run", "--json", NULL),
                     0);
    struct json_object *obj = json_out();
    ck_assert_uint_eq(json_object_array_length(obj), 1);
    json_object_put(obj);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                              "WHERE status = 'skipped'"),
                     1);

    ck_assert_int_eq(run("skip", "--source", "customers", "--reason", "source removed", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "skipped 3 rows"));
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                              "WHERE status = 'skipped'"),
                     4);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.operator_action "
                                              "WHERE action = 'skip' AND reason = 'source removed'"),
                     3);
}
END_TEST

START_TEST(test_purges)
{
    ck_assert_int_eq(run("purges", "list", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "B2"));
    ck_assert_int_eq(run("purges", "list", "--json", NULL), 0);
    struct json_object *obj = json_out();
    ck_assert_uint_eq(json_object_array_length(obj), 1);
    json_object_put(obj);
    ck_assert_int_eq(run("purges", "skip", "--all", NULL), 2); /* needs a reason */
    ck_assert_int_eq(run("purges", "release", NULL), 2);
    ck_assert_int_eq(run("purges", "release", "123456", NULL), 1);
    ck_assert_int_eq(run("purges", "frobnicate", NULL), 2);
    ck_assert_int_eq(run("purges", "release", "--all", "--reason", "intended", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "released 1 held purge"));
    ck_assert_int_eq(run("purges", "list", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "no purge is held"));
}
END_TEST

START_TEST(test_pause_resume)
{
    ck_assert_int_eq(run("pause", "--reason", "maintenance", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "paused: all sources"));
    ck_assert_int_eq(run("pause", "--source", "nope", NULL), 1);
    ck_assert_int_eq(run("pause", "--source", "customers", "--json", NULL), 0);
    struct json_object *obj = json_out();
    ck_assert_uint_eq(json_object_array_length(obj), 2);
    json_object_put(obj);
    ck_assert_int_eq(run("status", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "paused"));
    ck_assert_int_eq(run("resume", NULL), 0);
    ck_assert_int_eq(run("resume", "--source", "customers", NULL), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.control WHERE "
                                              "paused"),
                     0);
}
END_TEST

START_TEST(test_check)
{
    ck_assert_int_eq(run("check", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "accepts the key"));
    ck_assert_ptr_null(strstr(out, SCENARIO_API_KEY));
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"api_key\":\"rotated\"}"), 0);
    ck_assert_int_eq(run("check", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err, "refuses the key"));
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    /* Like every other command, check refuses what it does not take, before doing anything. */
    ck_assert_int_eq(run("check", "now", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "unexpected argument \"now\""));
    ck_assert_ptr_null(strstr(out, "config:"));
}
END_TEST

/* Issue 17 item 4: "http://127.0.0.1:<fake>@127.0.0.1:<other>" looked like a loopback URL to a
 * hand-written check, while libcurl connects to the host after the @ with the key. The config is
 * refused with its line, and the other server never sees a request. */
START_TEST(test_base_url_userinfo_never_reaches_another_host)
{
    struct fake_omnidesk other;
    char *text, *line, *rest, conf[700], where[760], *argv[5];
    char rewritten[8192];
    int code, lineno = 1;

    ck_assert_int_eq(fake_start(&other, SCENARIO_API_KEY, NULL), 0);
    text = testutil_read_file(sc.config);
    ck_assert_ptr_nonnull(text);
    line = strstr(text, "base_url = ");
    ck_assert_ptr_nonnull(line);
    for (const char *p = text; p < line; p++)
        lineno += *p == '\n';
    rest = strchr(line, '\n');
    ck_assert_ptr_nonnull(rest);
    snprintf(rewritten, sizeof(rewritten), "%.*sbase_url = http://127.0.0.1:%d@127.0.0.1:%d%s",
             (int)(line - text), text, sc.fake.port, other.port, rest);
    free(text);
    snprintf(conf, sizeof(conf), "%s/userinfo.conf", sc.dir);
    ck_assert_int_eq(testutil_write_file(conf, rewritten, 0600), 0);
    argv[0] = OMNISYNC_BIN;
    argv[1] = "--config";
    argv[2] = conf;
    argv[3] = "check";
    argv[4] = NULL;
    free(out);
    free(err);
    out = err = NULL;
    code = proc_run(argv, NULL, 30000, &out, &err);
    ck_assert_int_eq(fake_stat(&other, "requests"), 0);
    ck_assert_msg(code == 1, "exit %d: %s%s", code, out, err);
    snprintf(where, sizeof(where), "%s:%d:", conf, lineno);
    ck_assert_msg(strstr(err, where) != NULL, "no \"%s\" in: %s", where, err);
    ck_assert_msg(strstr(err, "user name or password") != NULL, "%s", err);
    ck_assert_ptr_null(strstr(err, SCENARIO_API_KEY));
    ck_assert_int_eq(fake_stop(&other), 0);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_status);
    tcase_add_test(tc, test_outbox_list_and_show);
    tcase_add_test(tc, test_replay);
    tcase_add_test(tc, test_ids_out_of_range_are_refused);
    tcase_add_test(tc, test_skip);
    tcase_add_test(tc, test_skip_source);
    tcase_add_test(tc, test_purges);
    tcase_add_test(tc, test_pause_resume);
    tcase_add_test(tc, test_check);
    tcase_add_test(tc, test_base_url_userinfo_never_reaches_another_host);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
