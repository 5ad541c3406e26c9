/*
 * omnisync migrate and the capture triggers, on a real throwaway PostgreSQL:
 * idempotence (the catalog is unchanged by a second run), rows captured per kind of change,
 * refusal of bad column names with the database untouched, mapping changes, removed sources,
 * concurrent runs, a CRM role without grants on schema omnisync, and the doorbell (NOTIFY).
 */
#include <check.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgrig.h"
#include "proc.h"
#include "testutil.h"

static char dir[512];
static char conf[600];
static char conninfo[512];
static PGconn *conn;

static const char crm_table[] =
    "CREATE TABLE public.customers ("
    " customer_no text PRIMARY KEY, first_name text, last_name text, email text, phone text,"
    " loyalty_tier text, notes text, gdpr_erase boolean NOT NULL DEFAULT false)";

static void write_config(const char *source_extra)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "[database]\nconninfo = %s\n"
             "[omnidesk]\nbase_url = http://127.0.0.1:9\nbrand_id = 1\n"
             "[source customers]\n"
             "table = public.customers\n"
             "primary_id = customer_no\n"
             "firstname = first_name\n"
             "lastname = last_name\n"
             "email = email\n"
             "telephone = phone\n"
             "custom.tier = loyalty_tier\n"
             "%s",
             conninfo, source_extra ? source_extra : "");
    ck_assert_int_eq(testutil_write_file(conf, text, 0600), 0);
}

static int migrate(char **out, char **err)
{
    char *argv[] = {OMNISYNC_BIN, "--config", conf, "migrate", NULL};
    return proc_run(argv, NULL, 60000, out, err);
}

static void setup(void)
{
    static int n;
    char db[64];
    snprintf(db, sizeof(db), "migrate_%d_%d", (int)getpid(), n++);
    ck_assert_int_eq(testutil_mkdtemp(dir, sizeof(dir)), 0);
    snprintf(conf, sizeof(conf), "%s/omnisync.conf", dir);
    struct pgrig *pg = pgrig_global();
    ck_assert_ptr_nonnull(pg);
    ck_assert_int_eq(pgrig_createdb(pg, db, conninfo, sizeof(conninfo)), 0);
    conn = pgrig_connect(pg, db);
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_exec(conn, crm_table), 0);
}

static void teardown(void)
{
    PQfinish(conn);
    conn = NULL;
    testutil_rm_rf(dir);
}

/* Everything of omnisync's in the catalog, with xmin so that a rewrite shows. */
static char *catalog_snapshot(void)
{
    return pgrig_query_text(
        conn,
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM ("
        " SELECT 'class ' || c.oid || ' ' || c.relname || ' ' || c.xmin::text AS x"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname IN ('omnisync', 'public')"
        " UNION ALL SELECT 'proc ' || p.oid || ' ' || p.proname || ' ' || p.xmin::text"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'omnisync'"
        " UNION ALL SELECT 'trigger ' || t.oid || ' ' || t.tgname || ' ' || t.xmin::text"
        "  FROM pg_trigger t WHERE NOT t.tgisinternal"
        " UNION ALL SELECT 'row ' || s.source || ' ' || s.xmin::text FROM omnisync.installed_source s"
        " UNION ALL SELECT 'version ' || v.version || ' ' || v.xmin::text FROM omnisync.schema_version v"
        ") q");
}

/* Issue 17 item 9: before migrate, every command said `schema "omnisync" does not exist`; it now
 * says what is missing where and what to run. */
START_TEST(test_unmigrated_database_says_run_migrate)
{
    static const char *const commands[][3] = {{"status", NULL, NULL}, {"outbox", "list", NULL},
                                              {"replay", "1", NULL},  {"purges", "list", NULL},
                                              {"pause", NULL, NULL},  {"check", NULL, NULL}};
    char want[200], *out = NULL, *err = NULL;

    write_config(NULL);
    snprintf(want, sizeof(want),
             "the omnisync schema is missing in database \"%s\": run omnisync "
             "migrate",
             PQdb(conn));
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        char *argv[] = {OMNISYNC_BIN,           "--config", conf, (char *)commands[i][0],
                        (char *)commands[i][1], NULL};
        char *env[] = {"OMNISYNC_API_KEY=k", NULL};
        int code = proc_run(argv, env, 30000, &out, &err);
        ck_assert_msg(code == 1, "%s: exit %d: %s", commands[i][0], code, err);
        ck_assert_msg(strstr(err, want) != NULL, "%s: %s", commands[i][0], err);
        free(out);
        free(err);
        out = err = NULL;
    }
}
END_TEST

START_TEST(test_migrate_twice_changes_nothing)
{
    char *out = NULL, *err = NULL;
    write_config(NULL);
    ck_assert_msg(migrate(&out, &err) == 0, "first migrate failed: %s", err);
    ck_assert_ptr_nonnull(strstr(out, "applied sql/001_schema.sql"));
    ck_assert_ptr_nonnull(strstr(out, "installed triggers on public.customers"));
    free(out);
    free(err);
    char *before = catalog_snapshot();
    ck_assert_ptr_nonnull(before);

    ck_assert_msg(migrate(&out, &err) == 0, "second migrate failed: %s", err);
    ck_assert_ptr_nonnull(strstr(out, "nothing to change"));
    ck_assert_ptr_null(strstr(out, "changed:"));
    char *after = catalog_snapshot();
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    free(out);
    free(err);
}
END_TEST

static long long count_outbox(const char *where)
{
    char sql[512];
    /* What the triggers captured reaches the outbox when a daemon's claim moves it there. */
    if (pgrig_exec(conn, "SELECT omnisync.move_captured()") != 0)
        return -1;
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM omnisync.outbox WHERE %s", where);
    return pgrig_query_int(conn, sql);
}

START_TEST(test_rows_per_kind_of_change)
{
    write_config(NULL);
    ck_assert_int_eq(migrate(NULL, NULL), 0);

    ck_assert_int_eq(pgrig_exec(conn, "INSERT INTO customers VALUES "
                                      "('C1', 'Ann', 'Lee', 'ann@example.nl', '+31612345678', "
                                      "'gold', 'private note')"),
                     0);
    ck_assert_int_eq(count_outbox("true"), 1);
    ck_assert_int_eq(count_outbox("op = 'insert' AND old_data IS NULL AND primary_id = 'C1'"), 1);

    ck_assert_int_eq(pgrig_exec(conn, "UPDATE customers SET first_name = 'Anne'"), 0);
    ck_assert_int_eq(count_outbox("true"), 2);
    ck_assert_int_eq(count_outbox("op = 'update' AND old_data->>'firstname' = 'Ann' "
                                  "AND new_data->>'firstname' = 'Anne'"),
                     1);

    /* Unmapped columns only: the WHEN clause keeps the trigger from firing. */
    ck_assert_int_eq(pgrig_exec(conn, "UPDATE customers SET notes = 'other', gdpr_erase = false"),
                     0);
    ck_assert_int_eq(pgrig_exec(conn, "UPDATE customers SET first_name = first_name"), 0);
    ck_assert_int_eq(count_outbox("true"), 2);

    ck_assert_int_eq(pgrig_exec(conn, "DELETE FROM customers"), 0);
    ck_assert_int_eq(count_outbox("true"), 3);
    ck_assert_int_eq(count_outbox("op = 'delete' AND new_data IS NULL AND "
                                  "old_data->>'primary_id' = 'C1'"),
                     1);

    ck_assert_int_eq(pgrig_exec(conn, "INSERT INTO customers (customer_no) VALUES ('C2')"), 0);
    ck_assert_int_eq(pgrig_exec(conn, "TRUNCATE customers"), 0);
    ck_assert_int_eq(count_outbox("op = 'truncate'"), 1);
    ck_assert_int_eq(count_outbox("true"), 5);

    /* OLD/NEW carry the mapped columns only, under their Omnidesk field names. */
    char *keys = pgrig_query_text(
        conn, "SELECT string_agg(k, ',' ORDER BY k) FROM (SELECT DISTINCT jsonb_object_keys("
              "coalesce(new_data, old_data)) AS k FROM omnisync.outbox WHERE op <> 'truncate') q");
    ck_assert_str_eq(keys, "custom_tier,email,firstname,lastname,primary_id,telephone");
    free(keys);
    ck_assert_int_eq(count_outbox("(coalesce(new_data, old_data))::text LIKE '%private note%'"),
                     0);
    ck_assert_int_eq(count_outbox("status = 'pending' AND attempts = 0"), 5);
}
END_TEST

START_TEST(test_crm_role_without_grants)
{
    write_config(NULL);
    ck_assert_int_eq(migrate(NULL, NULL), 0);
    ck_assert_int_eq(pgrig_exec(conn, "CREATE ROLE crm_app LOGIN;"
                                      "GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO crm_app;"
                                      "REVOKE ALL ON SCHEMA omnisync FROM PUBLIC"),
                     0);
    ck_assert_int_eq(pgrig_exec(conn, "SET ROLE crm_app;"
                                      "INSERT INTO customers (customer_no, first_name) VALUES "
                                      "('R1', 'Rita');"
                                      "UPDATE customers SET first_name = 'Rie' WHERE customer_no = "
                                      "'R1';"
                                      "DELETE FROM customers WHERE customer_no = 'R1';"
                                      "RESET ROLE"),
                     0);
    ck_assert_int_eq(count_outbox("primary_id = 'R1'"), 3);
    /* Multi-row statements take the same triggers' set-based path. */
    ck_assert_int_eq(pgrig_exec(conn, "SET ROLE crm_app;"
                                      "INSERT INTO customers (customer_no, first_name) SELECT "
                                      "'M' || i, 'Mia' FROM generate_series(1, 3) i;"
                                      "UPDATE customers SET first_name = 'Mo' WHERE customer_no "
                                      "LIKE 'M%';"
                                      "DELETE FROM customers WHERE customer_no LIKE 'M%';"
                                      "RESET ROLE"),
                     0);
    ck_assert_int_eq(count_outbox("primary_id LIKE 'M%' AND op = 'insert'"), 3);
    ck_assert_int_eq(count_outbox("primary_id LIKE 'M%' AND op = 'update' AND "
                                  "old_data->>'firstname' = 'Mia' AND new_data->>'firstname' = "
                                  "'Mo'"),
                     3);
    ck_assert_int_eq(count_outbox("primary_id LIKE 'M%' AND op = 'delete'"), 3);
    /* ...and cannot read or write the outbox directly. */
    ck_assert_int_ne(pgrig_exec(conn, "SET ROLE crm_app; SELECT count(*) FROM omnisync.outbox"),
                     0);
    ck_assert_int_eq(pgrig_exec(conn, "RESET ROLE; DROP OWNED BY crm_app; DROP ROLE crm_app"), 0);
}
END_TEST

/* Notifications on channel omnisync that reached `listener`, until one with payload "end" (sent
 * last by the writing session, so every earlier ring of it has arrived) or `timeout_ms`. Returns
 * the number with an empty payload, or -1 when "end" never came. */
static int rings_until_end(PGconn *listener, int timeout_ms)
{
    int rings = 0;
    uint64_t deadline = testutil_now_ms() + (uint64_t)timeout_ms;
    while (testutil_now_ms() < deadline) {
        if (!PQconsumeInput(listener))
            return -1;
        PGnotify *n;
        while ((n = PQnotifies(listener)) != NULL) {
            int end = strcmp(n->extra, "end") == 0;
            rings += strcmp(n->relname, "omnisync") == 0 && n->extra[0] == '\0';
            PQfreemem(n);
            if (end)
                return rings;
        }
        struct pollfd pfd = {.fd = PQsocket(listener), .events = POLLIN};
        poll(&pfd, 1, 100);
    }
    return -1;
}

START_TEST(test_doorbell)
{
    write_config(NULL);
    ck_assert_int_eq(migrate(NULL, NULL), 0);
    PGconn *listener = pgrig_connect(pgrig_global(), PQdb(conn));
    ck_assert_ptr_nonnull(listener);
    ck_assert_int_eq(pgrig_exec(listener, "LISTEN omnisync"), 0);

    /* A captured change rings at its commit. */
    ck_assert_int_eq(pgrig_exec(conn, "INSERT INTO customers (customer_no) VALUES ('D1')"), 0);
    ck_assert_int_eq(pgrig_exec(conn, "NOTIFY omnisync, 'end'"), 0);
    ck_assert_int_eq(rings_until_end(listener, 10000), 1);

    /* A ring that rolled back is forgotten: the next change rings, even in the same 10 ms. (The
     * session's last ring is cleared first, so only the rolled-back one could silence it.) */
    ck_assert_int_eq(pgrig_exec(conn, "SELECT set_config('omnisync.rang', '', false)"), 0);
    ck_assert_int_eq(pgrig_exec(conn, "BEGIN; UPDATE customers SET first_name = 'x'; ROLLBACK"), 0);
    ck_assert_int_eq(pgrig_exec(conn, "UPDATE customers SET first_name = 'y'"), 0);
    ck_assert_int_eq(pgrig_exec(conn, "NOTIFY omnisync, 'end'"), 0);
    ck_assert_int_eq(rings_until_end(listener, 10000), 1);

    /* Many small transactions of one session ring at most once per 10 ms (NOTIFY's commit lock
     * would otherwise serialize the CRM's writers), and at least once. */
    uint64_t start = testutil_now_ms();
    for (int i = 0; i < 300; i++)
        ck_assert_int_eq(pgrig_execf(conn, "UPDATE customers SET first_name = 'n%d'", i), 0);
    uint64_t elapsed = testutil_now_ms() - start;
    ck_assert_int_eq(pgrig_exec(conn, "NOTIFY omnisync, 'end'"), 0);
    int rings = rings_until_end(listener, 10000);
    ck_assert_msg(rings >= 1 && (uint64_t)rings <= elapsed / 10 + 2,
                  "%d rings for 300 commits in %llu ms", rings, (unsigned long long)elapsed);
    PQfinish(listener);
}
END_TEST

static void assert_refused(const char *key_line, const char *column)
{
    char *out = NULL, *err = NULL;
    write_config(key_line);
    int code = migrate(&out, &err);
    ck_assert_msg(code == 1, "migrate exit %d for %s", code, key_line);
    ck_assert_msg(strstr(err, column) != NULL, "message does not name %s: %s", column, err);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = "
                                           "'omnisync'"),
                     0);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM pg_trigger WHERE NOT "
                                           "tgisinternal"),
                     0);
    free(out);
    free(err);
}

START_TEST(test_bad_columns_leave_database_untouched)
{
    assert_refused("erase_flag = no_such_column\n", "no_such_column");
    assert_refused("custom.segment = segmnt\n", "segmnt");
    assert_refused("erase_flag = weird\"name\n", "weird\"name");
    assert_refused("erase_flag = x;DROP TABLE customers\n", "x;DROP TABLE customers");
    assert_refused("erase_flag = has space\n", "has space");
    assert_refused("erase_flag = notes\n", "notes"); /* exists, but is not boolean */
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM customers"), 0);
}
END_TEST

START_TEST(test_mapping_change_and_removed_source)
{
    write_config(NULL);
    ck_assert_int_eq(migrate(NULL, NULL), 0);

    /* Map one more column: the trigger is replaced and fires on it. */
    char *out = NULL, *err = NULL;
    write_config("erase_flag = gdpr_erase\n");
    ck_assert_msg(migrate(&out, &err) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(out, "installed triggers"));
    free(out);
    free(err);
    ck_assert_int_eq(pgrig_exec(conn, "INSERT INTO customers (customer_no) VALUES ('E1');"
                                      "UPDATE customers SET gdpr_erase = true"),
                     0);
    ck_assert_int_eq(count_outbox("op = 'update' AND (new_data->>'erase')::boolean"), 1);

    /* A trigger dropped by hand is put back. */
    ck_assert_int_eq(pgrig_exec(conn, "DROP TRIGGER omnisync_customers_update ON customers"), 0);
    ck_assert_int_eq(migrate(&out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "installed triggers"));
    free(out);
    free(err);

    /* The source leaves the config: its triggers and function go. */
    char text[1024];
    snprintf(text, sizeof(text),
             "[database]\nconninfo = %s\n[omnidesk]\nbase_url = http://127.0.0.1:9\nbrand_id = 1\n"
             "[source other]\ntable = public.others\nprimary_id = id\n",
             conninfo);
    ck_assert_int_eq(pgrig_exec(conn, "CREATE TABLE public.others (id int PRIMARY KEY)"), 0);
    ck_assert_int_eq(testutil_write_file(conf, text, 0600), 0);
    ck_assert_int_eq(migrate(&out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "source customers: removed its triggers"));
    free(out);
    free(err);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                                           "'public.customers'::regclass AND NOT tgisinternal"),
                     0);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM pg_proc WHERE proname = "
                                           "'capture_customers'"),
                     0);
    long long before = count_outbox("true");
    ck_assert_int_eq(pgrig_exec(conn, "INSERT INTO customers (customer_no) VALUES ('E2')"), 0);
    ck_assert_int_eq(count_outbox("true"), before);
}
END_TEST

START_TEST(test_concurrent_migrates)
{
    write_config(NULL);
    struct proc a, b;
    char *argv[] = {OMNISYNC_BIN, "--config", conf, "migrate", NULL};
    ck_assert_int_eq(proc_spawn(&a, argv, NULL), 0);
    ck_assert_int_eq(proc_spawn(&b, argv, NULL), 0);
    int ca = proc_wait(&a, 60000), cb = proc_wait(&b, 60000);
    char *ea = proc_stderr(&a), *eb = proc_stderr(&b);
    ck_assert_msg(ca == 0 && cb == 0, "exit %d (%s) and %d (%s)", ca, ea, cb, eb);
    free(ea);
    free(eb);
    proc_free(&a);
    proc_free(&b);
    /* Every migration once: two concurrent runs apply none twice. */
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM omnisync.schema_version"),
                     pgrig_query_int(conn, "SELECT max(version) FROM omnisync.schema_version"));
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                                           "'public.customers'::regclass AND NOT tgisinternal"),
                     4);
}
END_TEST

START_TEST(test_password_not_printed)
{
    char *out = NULL, *err = NULL;
    char text[1024];
    snprintf(text, sizeof(text),
             "[database]\nconninfo = host=/nonexistent-socket-dir dbname=x password=hunter2\n"
             "[omnidesk]\nbase_url = http://127.0.0.1:9\nbrand_id = 1\n"
             "[source customers]\ntable = customers\nprimary_id = customer_no\n");
    ck_assert_int_eq(testutil_write_file(conf, text, 0600), 0);
    ck_assert_int_eq(migrate(&out, &err), 1);
    ck_assert_ptr_nonnull(strstr(err, "cannot connect to the database"));
    ck_assert_ptr_nonnull(strstr(err, "password=***"));
    ck_assert_ptr_null(strstr(err, "hunter2"));
    ck_assert_ptr_null(strstr(out, "hunter2"));
    free(out);
    free(err);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("migrate");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_unmigrated_database_says_run_migrate);
    tcase_add_test(tc, test_migrate_twice_changes_nothing);
    tcase_add_test(tc, test_rows_per_kind_of_change);
    tcase_add_test(tc, test_crm_role_without_grants);
    tcase_add_test(tc, test_doorbell);
    tcase_add_test(tc, test_bad_columns_leave_database_untouched);
    tcase_add_test(tc, test_mapping_change_and_removed_source);
    tcase_add_test(tc, test_concurrent_migrates);
    tcase_add_test(tc, test_password_not_printed);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
