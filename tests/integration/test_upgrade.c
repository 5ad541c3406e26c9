/*
 * The upgrade story (docs/install.md, "Upgrades"): the package never touches the database, the
 * operator runs `omnisync migrate` after an upgrade, and until then the daemon refuses to run
 * against the older schema, saying exactly that, with exit status 78 (the unit does not restart
 * on it). Checked on a real throwaway PostgreSQL: no schema at all, a schema one version behind,
 * and a schema that becomes older while the daemon runs (it is checked on every reconnect).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "schema.h"
#include "service.h"
#include "sql.h"
#include "testutil.h"

#define REFUSE_DEADLINE_MS 30000

static struct scenario sc;

static void setup(void)
{
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
}

static void teardown(void)
{
    scenario_teardown(&sc);
}

/* The daemon must exit 78 with the exact message, without ever being ready. */
static void assert_refuses(struct proc *p, int applied)
{
    char expected[200];
    snprintf(expected, sizeof(expected),
             "the omnisync schema is at version %d, this omnisync needs %d: run omnisync migrate",
             applied, schema_latest_version());
    int rc = proc_wait(p, REFUSE_DEADLINE_MS);
    if (rc != SERVICE_EXIT_SCHEMA_TOO_OLD || !proc_stderr_contains(p, expected))
        proc_dump(p, "omnisync run");
    ck_assert_msg(rc == SERVICE_EXIT_SCHEMA_TOO_OLD, "omnisync run exited %d, want %d", rc,
                  SERVICE_EXIT_SCHEMA_TOO_OLD);
    ck_assert_msg(proc_stderr_contains(p, expected), "no \"%s\" in the log", expected);
    ck_assert_int_eq(proc_count_lines(p, "level=error", expected), 1);
}

static void migrate(void)
{
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, "migrate", NULL};
    char *err = NULL;
    int rc = proc_run(argv, NULL, 60000, NULL, &err);
    ck_assert_msg(rc == 0, "migrate exited %d: %s", rc, err ? err : "");
    free(err);
}

/* What an older release left: the newest version's row gone (and its objects, for no schema). */
static void make_schema_older(void)
{
    /* The newest migration's row goes: renumbering it would collide with the one before. */
    scenario_exec(&sc, "DELETE FROM omnisync.schema_version "
                       "WHERE version = (SELECT max(version) FROM omnisync.schema_version)");
}

/* An outbox row's status by its customer. */
static void assert_status(const char *primary_id, const char *status)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM omnisync.outbox WHERE primary_id = '%s' AND status = '%s'",
             primary_id, status);
    ck_assert_msg(pgrig_query_int(sc.conn, sql) == 1, "%s is not %s", primary_id, status);
}

/* The migrations of schema versions 1 to 8, as released. */
static const char *const released[] = {"001_schema.sql",
                                       "002_create_unknown.sql",
                                       "003_capture.sql",
                                       "004_claim_plans.sql",
                                       "005_claim_batch.sql",
                                       "006_plain_batches.sql",
                                       "007_statement_deletes.sql",
                                       "008_hot_leases.sql"};

/*
 * Schema version 1 to 8 as released: its migrations, and the triggers of the time under their
 * names. Versions 1 and 2 (before issue 14): row triggers writing straight into the outbox (the
 * outbox columns they filled; the payload is the scenario's mapping). Versions 3 to 8: triggers
 * appending to omnisync.capture (its columns; row triggers here, which write the same rows as the
 * statement triggers of the time for single-row statements).
 */
static void install_version(int version)
{
    scenario_exec(&sc, "DROP SCHEMA omnisync CASCADE; CREATE SCHEMA omnisync;"
                       "CREATE TABLE omnisync.schema_version (version integer PRIMARY KEY, "
                       "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    for (int v = 1; v <= version; v++) {
        scenario_exec(&sc, sql_text(released[v - 1]));
        scenario_execf(&sc, "INSERT INTO omnisync.schema_version (version, name) VALUES "
                            "(%d, '%s')",
                       v, released[v - 1]);
    }
    if (version >= 3) {
        scenario_exec(
            &sc, "CREATE FUNCTION omnisync.capture_customers() RETURNS trigger LANGUAGE plpgsql "
                 "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$ BEGIN "
                 "INSERT INTO omnisync.capture (source, brand_id, primary_id, op, keys, "
                 " old_values, new_values) VALUES ('customers', 0, NEW.customer_no, "
                 " lower(TG_OP), '{primary_id,firstname,lastname,email,telephone}', "
                 " CASE WHEN TG_OP = 'UPDATE' THEN ARRAY[OLD.customer_no, OLD.first_name, "
                 " OLD.last_name, OLD.email, OLD.phone] END, ARRAY[NEW.customer_no, "
                 " NEW.first_name, NEW.last_name, NEW.email, NEW.phone]); "
                 "PERFORM pg_notify('omnisync', ''); RETURN NULL; END $f$;"
                 "CREATE TRIGGER omnisync_customers_insert AFTER INSERT ON public.customers "
                 " FOR EACH ROW EXECUTE FUNCTION omnisync.capture_customers();"
                 "CREATE TRIGGER omnisync_customers_update AFTER UPDATE ON public.customers "
                 " FOR EACH ROW EXECUTE FUNCTION omnisync.capture_customers();"
                 "INSERT INTO omnisync.installed_source (source, table_name, definition) VALUES "
                 " ('customers', 'public.customers', 'before issue 15')");
        return;
    }
    scenario_exec(
        &sc, "CREATE FUNCTION omnisync.capture_customers() RETURNS trigger LANGUAGE plpgsql "
             "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$ BEGIN "
             "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
             " INSERT INTO omnisync.outbox (source, primary_id, op, old_data, new_data) VALUES "
             " ('customers', NEW.customer_no, lower(TG_OP), CASE WHEN TG_OP = 'UPDATE' THEN "
             " jsonb_build_object('primary_id', OLD.customer_no, 'firstname', OLD.first_name, "
             " 'lastname', OLD.last_name, 'email', OLD.email, 'telephone', OLD.phone) END, "
             " jsonb_build_object('primary_id', NEW.customer_no, 'firstname', NEW.first_name, "
             " 'lastname', NEW.last_name, 'email', NEW.email, 'telephone', NEW.phone)); "
             "END IF; RETURN NULL; END $f$;"
             "CREATE TRIGGER omnisync_customers_insdel AFTER INSERT OR DELETE ON public.customers "
             " FOR EACH ROW EXECUTE FUNCTION omnisync.capture_customers();"
             "CREATE TRIGGER omnisync_customers_update AFTER UPDATE ON public.customers "
             " FOR EACH ROW EXECUTE FUNCTION omnisync.capture_customers();"
             "CREATE TRIGGER omnisync_customers_truncate AFTER TRUNCATE ON public.customers "
             " FOR EACH STATEMENT EXECUTE FUNCTION omnisync.capture_customers();"
             "INSERT INTO omnisync.installed_source (source, table_name, definition) VALUES "
             " ('customers', 'public.customers', 'before issue 14')");
}

/* Rows in every status (and, from version 3 on, a captured change not yet moved) survive
 * `omnisync migrate` from each released version (the loop's _i), and the new daemon delivers the
 * pending ones and those an operator replays. */
START_TEST(test_upgrade_with_rows)
{
    int from = _i;
    install_version(from);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT max(version) FROM omnisync.schema_version"),
                     from);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
                       "SELECT 'v' || i, 'Ann', 'Lee', 'v' || i || '@example.org' "
                       "FROM generate_series(1, 5) i");
    if (from >= 3) /* what a claim of the time did first */
        ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured()"), 5);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"), 5);
    scenario_exec(&sc, "UPDATE omnisync.outbox SET status = 'held', result = 'held by test' "
                       "WHERE primary_id = 'v2';"
                       "UPDATE omnisync.outbox SET status = 'failed', attempts = 10, "
                       "last_error = 'HTTP 500' WHERE primary_id = 'v3';"
                       "UPDATE omnisync.outbox SET status = 'done', delivered_at = now() "
                       "WHERE primary_id = 'v4';"
                       "UPDATE omnisync.outbox SET status = 'skipped', action = 'skip' "
                       "WHERE primary_id = 'v5'");

    /* `status` from the new binary before `migrate` (right after a package upgrade) still
     * answers, with the rows of the older schema. */
    char *status[] = {OMNISYNC_BIN, "--config", sc.config, "status", "--json", NULL};
    char *out = NULL, *serr = NULL;
    int src = proc_run(status, NULL, 30000, &out, &serr);
    ck_assert_msg(src == 0, "status before migrate exited %d: %s", src, serr ? serr : "");
    ck_assert_msg(out != NULL && strstr(out, "\"pending\"") != NULL, "%s", out ? out : "");
    free(out);
    free(serr);

    if (from >= 3) {
        /* A change still captured (status moved what was there): it stays through `migrate`. */
        scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
                           "VALUES ('v7', 'Cy', 'Lee', 'v7@example.org')");
        /* And a multi-row DELETE as versions 3 to 6 captured it, a row per customer (w1, w2
         * inserted, then deleted in one statement, both still captured): sql/007 captures such
         * a statement as one row of keys, and must still move rows of the old shape. */
        scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
                           "SELECT 'w' || i, 'Di', 'Lee', 'w' || i || '@example.org' "
                           "FROM generate_series(1, 2) i;"
                           "SET session_replication_role = replica;"
                           "DELETE FROM customers WHERE customer_no LIKE 'w%';"
                           "RESET session_replication_role;"
                           "INSERT INTO omnisync.capture (source, brand_id, primary_id, op, keys, "
                           "old_values) SELECT 'customers', 0, 'w' || i, 'delete', "
                           "'{primary_id}', ARRAY['w' || i] FROM generate_series(1, 2) i");
        ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 5);
    }
    migrate();
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT max(version) FROM omnisync.schema_version"),
                     schema_latest_version());
    /* Every migration from `from` on applied in order: claim_batch() moves captured rows (003),
     * claims with the member lookup of 004 and answers what it left (005); claim() of an older
     * daemon is claim_batch() without that answer, and claim_outbox() is gone. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.schema_version"),
                     schema_latest_version());
    ck_assert_int_eq(pgrig_query_int(sc.conn,
                                     "SELECT count(*) FROM pg_proc WHERE pronamespace = "
                                     "'omnisync'::regnamespace AND ((proname = 'claim_batch' AND "
                                     "prosrc LIKE '%move_captured%' AND prosrc LIKE "
                                     "'%status || '''' = ''pending''%') OR (proname = 'claim' AND "
                                     "prosrc LIKE '%claim_batch%') OR proname = 'claim_outbox')"),
                     3);
    /* 008: the outbox's new pages leave room for HOT leases, and the move's captured_data() is
     * one expression, inlined (its answers, the payloads, are checked by delivery below). */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_class WHERE oid = "
                                              "'omnisync.outbox'::regclass AND reloptions = "
                                              "'{fillfactor=50}'"),
                     1);
    /* 009: the claim and the outcome write plan their statements once a session (generic
     * plans); the move inside the claim keeps the plan cache's own choice. */
    ck_assert_int_eq(pgrig_query_int(sc.conn,
                                     "SELECT count(*) FROM pg_proc WHERE pronamespace = "
                                     "'omnisync'::regnamespace AND ((proname IN ('claim_batch', "
                                     "'record_outcomes') AND 'plan_cache_mode=force_generic_plan' "
                                     "= ANY (proconfig)) OR (proname = 'move_captured' AND "
                                     "'plan_cache_mode=auto' = ANY (proconfig)))"),
                     4);
    /* 010: a multi-row UPDATE's statement rows, and the move that expands them. */
    ck_assert_int_eq(pgrig_query_int(sc.conn,
                                     "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                                     "'omnisync.capture'::regclass AND attname IN ('old_rows', "
                                     "'new_rows') AND atttypid = "
                                     "'omnisync.captured_row[]'::regtype"),
                     2);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_proc WHERE proname = "
                                              "'move_captured' AND prosrc LIKE "
                                              "'%captured_expand%'"),
                     1);
    /* 011: an attempt no longer checks its outbox row by a foreign key; a statement trigger
     * deletes the attempts of deleted rows (test_retention: none left after the prune). */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_constraint WHERE "
                                              "conrelid = 'omnisync.delivery_attempt'::regclass "
                                              "AND contype = 'f'"),
                     0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                                              "'omnisync.outbox'::regclass AND tgname = "
                                              "'outbox_deleted'"),
                     1);
    /* 012: a claim that leaves the move to another connection (move 0); the claim of a daemon
     * of 5 - 11, six arguments, stays. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_proc WHERE proname = "
                                              "'claim_batch' AND pronargs IN (6, 7)"),
                     2);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_apart(0)"), 0);
    /* Changes captured before the upgrade are still there, for the new daemon to move. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"),
                     from >= 3 ? 5 : 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                                              "'public.customers'::regclass AND NOT tgisinternal "
                                              "AND tgname = 'omnisync_customers_insdel'"),
                     0);
    assert_status("v1", "pending");
    assert_status("v2", "held");
    assert_status("v3", "failed");
    assert_status("v4", "done");
    assert_status("v5", "skipped");

    struct proc p;
    ck_assert_int_eq(scenario_start_daemon(&sc, &p), 0);
    /* A change after the upgrade goes through the capture table. */
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
                       "VALUES ('v6', 'Bea', 'Lee', 'v6@example.org')");
    ck_assert_msg(scenario_wait_quiet(&sc, 20000), "pending rows were not delivered");
    assert_status("v1", "done");
    assert_status("v6", "done");
    if (from >= 3) {
        assert_status("v7", "done");
        /* The old-shape deletes were moved after the inserts they follow, and went out. */
        ck_assert_int_eq(pgrig_query_int(sc.conn,
                                         "SELECT count(*) FROM omnisync.outbox d JOIN "
                                         "omnisync.outbox i ON i.primary_id = d.primary_id AND "
                                         "i.op = 'insert' AND i.id < d.id WHERE d.op = 'delete' "
                                         "AND d.primary_id LIKE 'w%' AND d.status = 'done'"),
                         2);
    }
    int created = from >= 3 ? 3 : 2;
    ck_assert_int_eq(fake_customer_count(&sc.fake), created);

    /* Held and failed rows kept what an operator needs: released and replayed, they go out. */
    const char *ids[] = {"v2", "v3"};
    for (int i = 0; i < 2; i++) {
        char sql[200], id[32];
        snprintf(sql, sizeof(sql), "SELECT id FROM omnisync.outbox WHERE primary_id = '%s'",
                 ids[i]);
        snprintf(id, sizeof(id), "%lld", pgrig_query_int(sc.conn, sql));
        char *replay[] = {OMNISYNC_BIN, "--config", sc.config, "replay", id, NULL};
        char *release[] = {OMNISYNC_BIN, "--config", sc.config, "purges", "release",
                           id,           "--reason", "upgrade", NULL};
        char **argv = i == 0 ? release : replay;
        char *err = NULL;
        int rc = proc_run(argv, NULL, 30000, NULL, &err);
        ck_assert_msg(rc == 0, "%s %s exited %d: %s", argv[3], ids[i], rc, err ? err : "");
        free(err);
    }
    ck_assert_msg(scenario_wait_quiet(&sc, 20000), "replayed rows were not delivered");
    assert_status("v2", "done");
    assert_status("v3", "done");
    ck_assert_int_eq(fake_customer_count(&sc.fake), created + 2);
    ck_assert_int_eq(proc_stop(&p, 20000), 0);
    proc_free(&p);
}
END_TEST

START_TEST(test_no_schema_refused_until_migrate)
{
    scenario_exec(&sc, "DROP SCHEMA omnisync CASCADE");
    struct proc p;
    ck_assert_int_eq(scenario_spawn_daemon(&sc, &p), 0);
    assert_refuses(&p, 0);
    ck_assert(!proc_stderr_contains(&p, "listening for changes"));
    proc_free(&p);

    /* What the message says to do is all it takes. */
    migrate();
    ck_assert_int_eq(scenario_start_daemon(&sc, &p), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) "
                       "VALUES ('u1', 'Ann', 'Lee', 'ann@example.org')");
    ck_assert_msg(scenario_wait_quiet(&sc, 20000), "the row was not delivered after migrate");
    ck_assert_int_eq(proc_stop(&p, 20000), 0);
    proc_free(&p);
}
END_TEST

START_TEST(test_older_schema_refused)
{
    make_schema_older();
    struct proc p;
    ck_assert_int_eq(scenario_spawn_daemon(&sc, &p), 0);
    assert_refuses(&p, schema_latest_version() - 1);
    ck_assert(!proc_stderr_contains(&p, "listening for changes"));
    ck_assert_int_eq(scenario_open_rows(&sc), 0);
    proc_free(&p);
}
END_TEST

/* A database restored from an older backup under a running daemon: the reconnect refuses it. */
START_TEST(test_older_schema_after_reconnect)
{
    struct proc p;
    ck_assert_int_eq(scenario_start_daemon(&sc, &p), 0);
    make_schema_older();
    scenario_exec(&sc, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name LIKE 'omnisync%'");
    assert_refuses(&p, schema_latest_version() - 1);
    proc_free(&p);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("upgrade");
    TCase *tc = tcase_create("upgrade");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_no_schema_refused_until_migrate);
    tcase_add_test(tc, test_older_schema_refused);
    tcase_add_test(tc, test_older_schema_after_reconnect);
    tcase_add_loop_test(tc, test_upgrade_with_rows, 1, 9); /* from each version 1 to 8 */
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
