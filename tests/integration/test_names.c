/*
 * Names the API's pattern refuses (issue 19): with `[source] names = transliterate`, the default,
 * a CRM of Romanian, Polish, Czech, Turkish, Greek, Cyrillic and Chinese names syncs every
 * customer, the fake Omnidesk (whose own pattern check stays strict) holds the transliterated
 * names, creates, updates and backfill send the same value, each row's result names the fields
 * transliterated and the counter counts them; digits and names of which nothing is left still
 * fail naming the field and the rule. With `names = strict` those rows fail as before.
 * The names are synthetic.
 */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpget.h"
#include "scenario.h"
#include "testutil.h"

#define NAME_RULE "must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$"

static struct scenario sc;
static struct proc omnisync_daemon;

/* A CRM customer, what Omnidesk must end up holding, and which names had to be transliterated. */
struct person {
    const char *id;
    const char *first, *last;
    const char *sent_first, *sent_last;
    const char *note; /* the fields the row's result names, "" for none */
};

static const struct person people[] = {
    {"N01", "Ştefan", "Popescu", "Stefan", "Popescu", "firstname"},
    {"N02", "Łukasz", "Wójcik", "Lukasz", "Wójcik", "firstname"},
    {"N03", "Antonín", "Dvořák", "Antonín", "Dvorák", "lastname"},
    {"N04", "Gül", "Şahin", "Gül", "Sahin", "lastname"},
    {"N05", "Σοφία", "Παπαδοπούλου", "Sofia", "Papadopoulou", "firstname, lastname"},
    {"N06", "Иван", "Петров", "Ivan", "Petrov", "firstname, lastname"},
    {"N07", "王小明", "王", "wang xiao ming", "wang", "firstname, lastname"},
    {"N08", "Jiří", "Řezníček", "Jirí", "Reznícek", "firstname, lastname"},
    {"N09", "Mihăiță", "Țepeș", "Mihaita", "Tepes", "firstname, lastname"},
    {"N10", "Ana-Maria", "Ștefănescu", "Ana-Maria", "Stefanescu", "lastname"},
    {"N11", "Ayşe", "Ağaoğlu", "Ayse", "Agaoglu", "firstname, lastname"},
    {"N12", "İlker", "Yılmaz", "Ilker", "Yilmaz", "firstname, lastname"},
    {"N13", "Małgorzata", "Świątek", "Malgorzata", "Swiatek", "firstname, lastname"},
    {"N14", "Zofia", "Wójcik-Łęcka", "Zofia", "Wójcik-Lecka", "lastname"},
    {"N15", "Ann \xF0\x9F\x98\x80", "O’Brien", "Ann", "O'Brien", "firstname, lastname"},
    {"N16", "Zoë", "Müller", "Zoë", "Müller", ""}, /* allowed as written: untouched */
};
#define NPEOPLE (sizeof(people) / sizeof(people[0]))

/* Rows no mode can send: a digit, and a name of which nothing is left. */
static const char *const broken_rows =
    "('F01', 'R2D2', 'Droid'), ('F02', 'Ann', '\xF0\x9F\x98\x80')";

static void insert_people(void)
{
    char sql[8192];
    size_t len = (size_t)snprintf(sql, sizeof(sql),
                                  "INSERT INTO customers (customer_no, first_name, last_name) "
                                  "VALUES %s",
                                  broken_rows);
    for (size_t i = 0; i < NPEOPLE; i++)
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, ", ('%s', '%s', '%s')", people[i].id,
                                people[i].first, people[i].last);
    ck_assert_uint_lt(len, sizeof(sql));
    scenario_exec(&sc, sql);
}

static void start(const char *extra)
{
    ck_assert_msg(scenario_setup(&sc, extra, NULL) == 0, "scenario setup failed");
    ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0, "daemon did not start");
}

static void wait_quiet(void)
{
    if (!scenario_wait_quiet(&sc, 60000))
        scenario_dump_outbox(&sc);
    ck_assert_msg(scenario_open_rows(&sc) == 0, "outbox not quiet: %lld open rows",
                  scenario_open_rows(&sc));
}

/* The one text of a query, or "" (freed by the caller). */
static char *query_text(const char *fmt, const char *arg)
{
    char sql[1024];
    snprintf(sql, sizeof(sql), fmt, arg);
    char *text = pgrig_query_text(sc.conn, sql);
    return text != NULL ? text : strdup("");
}

static void assert_fake_holds(const char *id, const char *first, const char *last)
{
    struct json_object *c = NULL, *v;
    ck_assert_int_eq(fake_find_customer(&sc.fake, 1, id, &c), 0);
    ck_assert_msg(c != NULL, "%s is not at Omnidesk", id);
    ck_assert(json_object_object_get_ex(c, "firstname", &v));
    ck_assert_msg(strcmp(json_object_get_string(v), first) == 0, "%s: firstname \"%s\", not \"%s\"",
                  id, json_object_get_string(v), first);
    ck_assert(json_object_object_get_ex(c, "lastname", &v));
    ck_assert_msg(strcmp(json_object_get_string(v), last) == 0, "%s: lastname \"%s\", not \"%s\"",
                  id, json_object_get_string(v), last);
    json_object_put(c);
}

/* The last row of customer `id` with `op` failed with exactly `error`. */
static void assert_failed(const char *id, const char *error)
{
    char *got = query_text("SELECT status || ': ' || coalesce(last_error, '') FROM omnisync.outbox "
                           "WHERE primary_id = '%s' ORDER BY id DESC LIMIT 1",
                           id);
    char want[512];
    snprintf(want, sizeof(want), "failed: %s", error);
    ck_assert_msg(strcmp(got, want) == 0, "%s: \"%s\", expected \"%s\"", id, got, want);
    free(got);
}

/* The fake's pattern check is the API document's, and strict: it refuses the CRM's spelling. */
static void assert_fake_refuses(const char *first)
{
    struct fake_reply reply;
    ck_assert_int_eq(
        fake_api(&sc.fake, "POST", "/api/v2/customer", FAKE_BODY_MULTIPART,
                 (const char *[]){"brand_id", "2", "primary_id", "PROBE", "firstname", first, NULL},
                 &reply),
        0);
    ck_assert_msg(reply.status == 400, "the fake took \"%s\": %ld", first, reply.status);
    fake_reply_free(&reply);
}

/* omnisync_names_transliterated_total{source="customers"} from the daemon's /metrics, or -1. */
static long long names_counter(int port)
{
    static struct http_body b;
    long status = http_get(port, "/metrics", &b);
    const char *line =
        strstr(b.text, "\nomnisync_names_transliterated_total{source=\"customers\"} ");
    return status == 200 && line ? atoll(strchr(line, '}') + 2) : -1;
}

static void assert_log_clean(void)
{
    static const char *const values[] = {"Łukasz",    "Lukasz",   "Παπαδοπούλου", "Papadopoulou",
                                         "wang xiao", "Reznícek", "Shchukin",     "R2D2",
                                         "Droid",     "O'Brien",  "O’Brien"};
    char *log = proc_stderr(&omnisync_daemon);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        ck_assert_msg(strstr(log, values[i]) == NULL, "the log holds a name: %s", values[i]);
    free(log);
}

static void finish(void)
{
    int code = proc_stop(&omnisync_daemon, 20000);
    if (code != 0)
        proc_dump(&omnisync_daemon, "omnisync run");
    ck_assert_msg(code == 0, "omnisync run exited %d after SIGTERM", code);
    assert_log_clean();
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
}

START_TEST(test_transliterate_syncs_every_customer)
{
    start("[health]\nlisten = 127.0.0.1:0\n"); /* names: the default, transliterate */
    int port = scenario_health_port(&omnisync_daemon);
    ck_assert_int_gt(port, 0);
    insert_people();
    wait_quiet();

    /* Every customer arrived, under the names the fake's strict check took. */
    for (size_t i = 0; i < NPEOPLE; i++)
        assert_fake_holds(people[i].id, people[i].sent_first, people[i].sent_last);
    ck_assert_int_eq(fake_customer_count(&sc.fake), (long long)NPEOPLE);
    ck_assert_int_eq(fake_stat(&sc.fake, "validation_errors"), 0);

    /* Each row's result says which names were transliterated, never the value. */
    for (size_t i = 0; i < NPEOPLE; i++) {
        char want[128];
        if (people[i].note[0] != '\0')
            snprintf(want, sizeof(want), "done: created; %s transliterated", people[i].note);
        else
            snprintf(want, sizeof(want), "done: created");
        char *got = query_text("SELECT status || ': ' || coalesce(result, '') FROM omnisync.outbox "
                               "WHERE primary_id = '%s'",
                               people[i].id);
        ck_assert_msg(strcmp(got, want) == 0, "%s: \"%s\", expected \"%s\"", people[i].id, got,
                      want);
        free(got);
    }
    /* A digit and a name of which nothing is left fail, naming the field and the rule. */
    assert_failed("F01", "invalid firstname \"R2D2\": " NAME_RULE);
    assert_failed("F02", "invalid lastname \"\xF0\x9F\x98\x80\": " NAME_RULE
                         " (nothing sendable is left after transliteration)");
    ck_assert(
        proc_stderr_contains(&omnisync_daemon, "row not sent: invalid firstname: must match"));
    ck_assert(proc_stderr_contains(&omnisync_daemon, "firstname, lastname transliterated"));

    /* An operator sees it in outbox show. */
    char *id = query_text("SELECT id FROM omnisync.outbox WHERE primary_id = '%s'", "N05");
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, "outbox", "show", id, NULL};
    char *out = NULL;
    ck_assert_int_eq(proc_run(argv, NULL, 30000, &out, NULL), 0);
    ck_assert_msg(strstr(out, "created; firstname, lastname transliterated") != NULL, "%s", out);
    free(out);
    free(id);

    /* An update sends the transliteration too. */
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Николай', last_name = 'Щукин' "
                       "WHERE customer_no = 'N06'");
    wait_quiet();
    assert_fake_holds("N06", "Nikolay", "Shchukin");
    char *got = query_text("SELECT result FROM omnisync.outbox WHERE primary_id = '%s' AND op = "
                           "'update'",
                           "N06");
    ck_assert_str_eq(got, "updated; firstname, lastname transliterated");
    free(got);

    /* A new email alone sends no name: nothing is said or counted as transliterated. */
    scenario_exec(&sc, "UPDATE customers SET email = 'n02@example.org' WHERE customer_no = 'N02'");
    wait_quiet();
    got = query_text("SELECT result FROM omnisync.outbox WHERE primary_id = '%s' AND op = 'update'",
                     "N02");
    ck_assert_str_eq(got, "1 channel added");
    free(got);

    /* Backfill goes the same way: the same names, no second customer. */
    char *backfill[] = {OMNISYNC_BIN, "--config",  sc.config, "backfill",
                        "--source",   "customers", NULL};
    ck_assert_int_eq(proc_run(backfill, NULL, 60000, NULL, NULL), 0);
    wait_quiet();
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE op = "
                                              "'backfill' AND status = 'done' AND result LIKE "
                                              "'%transliterated'"),
                     (long long)NPEOPLE - 1);
    for (size_t i = 0; i < NPEOPLE; i++) {
        if (strcmp(people[i].id, "N06") != 0)
            assert_fake_holds(people[i].id, people[i].sent_first, people[i].sent_last);
    }
    assert_fake_holds("N06", "Nikolay", "Shchukin");
    ck_assert_int_eq(fake_customer_count(&sc.fake), (long long)NPEOPLE);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(fake_stat(&sc.fake, "validation_errors"), 0);
    assert_failed("F01", "invalid firstname \"R2D2\": " NAME_RULE);

    /* The counter counts every name sent transliterated. */
    long long sent = pgrig_query_int(
        sc.conn, "SELECT sum((result LIKE '%firstname%transliterated')::int + "
                 "(result LIKE '%lastname transliterated')::int) FROM omnisync.outbox "
                 "WHERE status = 'done'");
    ck_assert_int_gt(sent, 2 * (long long)NPEOPLE);
    ck_assert(WAIT_UNTIL(names_counter(port) == sent, 5000));

    /* The fake's check is no softer than the API's: the CRM's own spelling is refused. */
    assert_fake_refuses("Łukasz");
    assert_fake_refuses("Σοφία");
    assert_fake_refuses("王小明");
    finish();
}
END_TEST

START_TEST(test_strict_fails_them_as_before)
{
    start("names = strict\n");
    insert_people();
    wait_quiet();

    for (size_t i = 0; i < NPEOPLE; i++) {
        const struct person *p = &people[i];
        char want[512];
        if (p->note[0] == '\0') {
            assert_fake_holds(p->id, p->first, p->last);
            continue;
        }
        /* The first field refused is named, with its value, as for any invalid name. */
        int first = strcmp(p->first, p->sent_first) != 0;
        snprintf(want, sizeof(want), "invalid %s \"%s\": " NAME_RULE,
                 first ? "firstname" : "lastname", first ? p->first : p->last);
        assert_failed(p->id, want);
    }
    assert_failed("F01", "invalid firstname \"R2D2\": " NAME_RULE);
    assert_failed("F02", "invalid lastname \"\xF0\x9F\x98\x80\": " NAME_RULE);
    ck_assert_int_eq(fake_customer_count(&sc.fake), 1);
    ck_assert_int_eq(fake_stat(&sc.fake, "validation_errors"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE result "
                                              "LIKE '%transliterated%'"),
                     0);
    finish();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("names");
    TCase *tc = tcase_create("names");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_transliterate_syncs_every_customer);
    tcase_add_test(tc, test_strict_fails_them_as_before);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
