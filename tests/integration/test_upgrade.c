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
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
