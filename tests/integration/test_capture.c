/*
 * The capture path of issue 14 (sql/003_capture.sql, sql/trigger_template.sql): statement-level
 * triggers append to omnisync.capture in the CRM's transaction, and claims move what committed
 * into the outbox. What may not be lost: a transaction that commits late is not skipped, a
 * rolled-back statement leaves nothing, and per customer the outbox (and so Omnidesk) gets the
 * changes in commit order, a 100,000-row UPDATE racing single-row updates included.
 */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

static struct scenario sc;
static struct proc omnisync_daemon;
static int daemon_running;

static void setup(void)
{
    ck_assert_msg(scenario_setup(&sc, NULL, NULL) == 0, "scenario setup failed");
    daemon_running = 0;
}

static void teardown(void)
{
    if (daemon_running) {
        ck_assert_int_eq(proc_stop(&omnisync_daemon, 20000), 0);
        proc_free(&omnisync_daemon);
    }
    scenario_teardown(&sc);
}

static void start_daemon(void)
{
    ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0, "daemon did not start");
    daemon_running = 1;
}

static void assert_in_step(void)
{
    char why[512];
    ck_assert_msg(scenario_wait_quiet(&sc, 60000), "not quiet: %lld open rows",
                  scenario_open_rows(&sc));
    ck_assert_msg(scenario_compare(&sc, NULL, why, sizeof(why)) == 0, "%s", why);
}

static PGconn *connect_crm(void)
{
    PGconn *c = pgrig_connect(sc.pg, sc.db);
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Another session holding the move's lock (sql/003_capture.sql), as a process moving would. */
static PGconn *hold_the_move(void)
{
    PGconn *mover = connect_crm();
    ck_assert_int_eq(pgrig_exec(mover, "BEGIN; SELECT pg_advisory_xact_lock("
                                       "hashtext('omnisync capture move'))"),
                     0);
    return mover;
}

/* Lets the move's lock go before returning: a closed connection's backend lets its locks go only
 * as it exits, after PQfinish() has returned. */
static void release_the_move(PGconn *mover)
{
    ck_assert_int_eq(pgrig_exec(mover, "ROLLBACK"), 0);
    PQfinish(mover);
}

/* A transaction still open while the daemon claims (and moves) several times: its change is
 * delivered once it commits, after changes that committed before it. */
START_TEST(test_late_commit_not_skipped)
{
    start_daemon();
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email) VALUES "
                       "('L1', 'Ann', 'Lee', 'l1@example.org')");
    assert_in_step();

    PGconn *late = connect_crm();
    ck_assert_int_eq(pgrig_exec(late, "BEGIN; UPDATE customers SET first_name = 'Anna' "
                                      "WHERE customer_no = 'L1'"),
                     0);
    /* Committed while the late transaction is open: each commit rings, the daemon claims. */
    for (int i = 2; i <= 6; i++) {
        scenario_execf(&sc,
                       "INSERT INTO customers (customer_no, first_name, last_name, email) "
                       "VALUES ('L%d', 'Bob', 'Li', 'l%d@example.org')",
                       i, i);
        ck_assert_msg(fake_wait_stat(&sc.fake, "by_endpoint.create", i, 10000) == 0,
                      "L%d was not delivered while a transaction was open", i);
    }
    /* The late row is still captured, not moved: the daemon's moves did not see it. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                              "WHERE primary_id = 'L1' AND op = 'update'"),
                     0);
    ck_assert_int_eq(pgrig_exec(late, "COMMIT"), 0);
    PQfinish(late);
    /* No new ring from this session needed: a later claim (poll or another ring) moves it. */
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) VALUES "
                       "('L7', 'Cy', 'Ng')");
    assert_in_step();
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                              "WHERE primary_id = 'L1' AND op = 'update' AND "
                                              "status = 'done'"),
                     1);
}
END_TEST

/* A rolled-back statement (and a rolled-back single row) leaves nothing anywhere. */
START_TEST(test_rollback_leaves_nothing)
{
    scenario_exec(&sc, "SET session_replication_role = replica;"
                       "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'R' || i, 'Ann', 'Lee' FROM generate_series(1, 1000) i;"
                       "RESET session_replication_role");
    scenario_exec(&sc, "BEGIN; UPDATE customers SET first_name = 'Bo';"
                       "INSERT INTO customers (customer_no, first_name) VALUES ('R0', 'X');"
                       "DELETE FROM customers WHERE customer_no = 'R5'; ROLLBACK");
    /* A multi-row DELETE: one captured row of keys (sql/007), gone with the rollback. */
    scenario_exec(&sc, "BEGIN; DELETE FROM customers WHERE customer_no LIKE 'R1%'; ROLLBACK");
    scenario_exec(&sc, "BEGIN; TRUNCATE customers; ROLLBACK");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured()"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 0);
    /* An update of unmapped columns only moves nothing either: of one row it captures nothing,
     * of many its statement rows (sql/010), which the move drops. */
    scenario_exec(&sc, "UPDATE customers SET notes = 'n' WHERE customer_no = 'R7'");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 0);
    scenario_exec(&sc, "UPDATE customers SET notes = 'n'");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured()"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 0);
    /* ...and one that changes a mapped column of some rows captures exactly those. */
    scenario_exec(&sc, "UPDATE customers SET first_name = CASE WHEN right(customer_no, -1)::int "
                       "<= 10 THEN 'Bo' ELSE first_name END, notes = 'm'");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured()"), 10);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                              "op = 'update' AND old_data->>'firstname' = 'Ann' "
                                              "AND new_data->>'firstname' = 'Bo' AND "
                                              "old_data->>'primary_id' = primary_id AND "
                                              "new_data->'erase' = 'false'::jsonb"),
                     10);
}
END_TEST

/* A session's single-row and small UPDATEs come first, then a large one in the same session:
 * PL/pgSQL keeps the capture query's plan, and the large statement must not be paired by a
 * plan made for one or two rows (a nested loop took 10 s for 5,000 rows, hours for 200,000).
 * Either way each row is paired with its own old version, a changed primary id included. */
START_TEST(test_update_pairs_rows_at_any_size)
{
    scenario_exec(&sc, "SET session_replication_role = replica;"
                       "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'P' || i, 'Ann', 'Lee' || i FROM generate_series(1, 20000) i;"
                       "RESET session_replication_role");
    PGconn *c = connect_crm();
    ck_assert_int_eq(pgrig_exec(c, "SET statement_timeout = '60s'"), 0);
    for (int i = 1; i <= 8; i++) {
        char sql[200];
        snprintf(sql, sizeof(sql),
                 "UPDATE customers SET first_name = 'One' WHERE customer_no = 'P%d'", i);
        ck_assert_int_eq(pgrig_exec(c, sql), 0);
        snprintf(sql, sizeof(sql),
                 "UPDATE customers SET first_name = 'Two' WHERE customer_no IN ('P%d', 'P%d')",
                 100 + i, 200 + i);
        ck_assert_int_eq(pgrig_exec(c, sql), 0);
    }
    /* One row whose primary id changes, alone and within a larger statement. */
    ck_assert_int_eq(pgrig_exec(c, "UPDATE customers SET customer_no = 'Q1' "
                                   "WHERE customer_no = 'P1'"),
                     0);
    ck_assert_int_eq(pgrig_exec(c, "UPDATE customers SET first_name = 'All', customer_no = "
                                   "CASE customer_no WHEN 'P2' THEN 'Q2' ELSE customer_no END "
                                   "WHERE customer_no LIKE 'P%'"),
                     0);
    PQfinish(c);
    /* The two-row statements and the large one wrote statement rows (sql/010): one each, the
     * large one's 19,999 customers in two. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture WHERE "
                                              "op = 'update_many'"),
                     8 + 2);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured()"),
                     8 + 16 + 1 + 19999);
    /* Every captured update carries its own row's old and new values. */
    ck_assert_int_eq(
        pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE op = 'update' AND "
                                 "(old_data->>'lastname' IS DISTINCT FROM new_data->>'lastname' "
                                 "OR new_data->>'primary_id' <> primary_id)"),
        0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                              "old_data->>'primary_id' <> primary_id"),
                     2);
    ck_assert_int_eq(pgrig_query_int(sc.conn,
                                     "SELECT count(*) FROM omnisync.outbox WHERE "
                                     "primary_id = 'Q2' AND old_data->>'primary_id' = 'P2' "
                                     "AND new_data->>'firstname' = 'All'"),
                     1);
}
END_TEST

/* Multi-row statements are captured as statement rows (sql/007, sql/010) that the move expands
 * into a row per customer, each in its own customer's brand (brand_id_column), leaving out the
 * customers whose mapped values did not change; `status` counts each customer of a statement
 * row as pending before the move. */
START_TEST(test_statement_rows_keep_each_brand)
{
    scenario_exec(&sc, "ALTER TABLE customers ADD COLUMN brand integer NOT NULL DEFAULT 1");
    ck_assert_int_eq(scenario_write_config(&sc, "brand_id_column = brand\n"), 0);
    char *migrate[] = {OMNISYNC_BIN, "--config", sc.config, "migrate", NULL};
    ck_assert_int_eq(proc_run(migrate, NULL, 60000, NULL, NULL), 0);
    scenario_exec(&sc, "SET session_replication_role = replica;"
                       "INSERT INTO customers (customer_no, first_name, last_name, brand) "
                       "SELECT 'B' || i, 'Ann', 'Lee', 1 + i % 3 FROM generate_series(1, 30000) i;"
                       "RESET session_replication_role");
    /* 30,000 customers updated, the 20,000 of brands 2 and 3 in a mapped column. */
    scenario_exec(&sc, "UPDATE customers SET notes = 'n', "
                       "first_name = CASE WHEN brand = 1 THEN first_name ELSE 'Bo' END");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture WHERE "
                                              "op = 'update_many'"),
                     3);
    /* `status` moves first; with the move's lock held elsewhere it counts what capture holds. */
    PGconn *mover = hold_the_move();
    char *status[] = {OMNISYNC_BIN, "--config", sc.config, "status", "--json", NULL};
    char *out = NULL;
    ck_assert_int_eq(proc_run(status, NULL, 30000, &out, NULL), 0);
    release_the_move(mover); /* before the moves below */
    struct json_object *obj = json_tokener_parse(out), *sources, *pending;
    ck_assert_msg(obj != NULL, "not JSON: %s", out);
    ck_assert(json_object_object_get_ex(obj, "sources", &sources));
    ck_assert(json_object_object_get_ex(json_object_array_get_idx(sources, 0), "pending",
                                        &pending));
    ck_assert_int_eq(json_object_get_int(pending), 30000);
    json_object_put(obj);
    free(out);

    int moved = 0, n;
    while ((n = pgrig_query_int(sc.conn, "SELECT omnisync.move_captured(5000)")) > 0)
        moved += n;
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(moved, 20000);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn,
                                     "SELECT count(*) FROM omnisync.outbox o JOIN customers c "
                                     "ON c.customer_no = o.primary_id WHERE o.op = 'update' AND "
                                     "o.brand_id = c.brand AND c.brand <> 1 AND "
                                     "o.new_data->>'firstname' = 'Bo' AND "
                                     "o.old_data->>'firstname' = 'Ann'"),
                     20000);

    /* A multi-row DELETE: a row of keys per brand. B1, B10 - B19, ..., B10000 - B19999. */
    scenario_exec(&sc, "DELETE FROM customers WHERE customer_no LIKE 'B1%'");
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture WHERE "
                                              "op = 'delete_many'"),
                     3);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured()"), 11111);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox WHERE "
                                              "op = 'delete' AND brand_id = "
                                              "1 + right(primary_id, -1)::int % 3"),
                     11111);
}
END_TEST

/*
 * A claim moves at most 2,000 captured rows, the lowest seqs first: a customer's later change
 * stays behind its earlier one, and the next claims move the rest. Each claim says whether it
 * left captured rows (the daemon claims again then: no ring will come for them); the claim of
 * an older daemon (omnisync.claim) moves the same way.
 */
START_TEST(test_claim_moves_in_batches)
{
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'B' || i, 'Ann', 'Lee' FROM generate_series(1, 4500) i");
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Bo' WHERE customer_no = 'B1'");
    /* The claimed rows, and the status row's captured_left as 10 (left) or 0. */
    const char *claim = "SELECT count(id) + 10 * count(*) FILTER (WHERE captured_left) "
                        "FROM omnisync.claim_batch(1, 60000, 'test', 1, '{customers}', 10)";
    /* A claim that leaves the move to another connection (sql/012_moves_apart.sql, move 0)
     * neither moves nor says what capture holds. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(id) + 10 * count(*) FILTER (WHERE "
                                              "captured_left) FROM omnisync.claim_batch(1, "
                                              "60000, 'test', 1, '{customers}', 10, 0)"),
                     0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 4501);
    /* The daemon's move apart says -1 while another process holds the move, and moves nothing. */
    PGconn *mover = hold_the_move();
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_apart(10)"), -1);
    release_the_move(mover);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 4501);
    ck_assert_int_eq(pgrig_query_int(sc.conn, claim), 11);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"), 2000);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 2501);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox "
                                              "WHERE op = 'update'"),
                     0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, claim), 11);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.claim(1, 60000, "
                                              "'older', 1, '{customers}', 10)"),
                     1);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture"), 0);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"), 4501);
    /* Nothing captured: nothing left, and no move. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, claim), 1);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox u JOIN "
                                              "omnisync.outbox i ON i.primary_id = u.primary_id "
                                              "AND i.op = 'insert' WHERE u.op = 'update' AND "
                                              "u.primary_id = 'B1' AND u.id > i.id"),
                     1);
}
END_TEST

/*
 * A large move leaves the capture table empty but long, and each claim's look into it read every
 * page until something gave them back: autovacuum does so only when nobody holds the table,
 * which back-to-back claims never allowed. The daemon vacuums it itself (lib/service.c,
 * vacuum_capture). Autovacuum is off for the table here, so only the daemon can shorten it.
 */
START_TEST(test_emptied_capture_given_back)
{
    scenario_exec(&sc, "ALTER TABLE omnisync.capture SET (autovacuum_enabled = false)");
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'V' || i, 'Ann', 'Lee' FROM generate_series(1, 60000) i");
    const char *length = "SELECT pg_relation_size('omnisync.capture')";
    long long before = pgrig_query_int(sc.conn, length);
    ck_assert_int_gt(before, 8LL << 20);
    start_daemon();
    ck_assert_msg(WAIT_UNTIL(pgrig_query_int(sc.conn, length) < (1LL << 20), 90000),
                  "the capture table is still %lld bytes long (%lld before the move)",
                  pgrig_query_int(sc.conn, length), before);
    ck_assert(proc_wait_stderr(&omnisync_daemon, "vacuuming it so that claims stop", 1000));
}
END_TEST

/* A customer's outbox rows' ops in id order, comma-separated, as the test's count: 1 if they
 * are `ops`. */
static long long ops_are(const char *primary_id, const char *ops)
{
    char sql[300];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM (SELECT string_agg(op, ',' ORDER BY id) AS ops FROM "
             "omnisync.outbox WHERE primary_id = '%s') q WHERE ops = '%s'",
             primary_id, ops);
    return pgrig_query_int(sc.conn, sql);
}

/*
 * A backlog of captured rows larger than a claim moves: the daemon moves it on the listener's
 * connection, batch after batch, while its claims deliver what the moves put in the outbox
 * (lib/dispatcher.c, "Moves apart"). Every customer arrives once, a later change after its
 * create, and a change made after the backlog is gone is moved by a claim again.
 */
START_TEST(test_backlog_moved_apart)
{
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'M' || i, 'Ann', 'Lee' FROM generate_series(1, 7000) i");
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Bo' WHERE customer_no IN ('M1', "
                       "'M6999')");
    start_daemon();
    assert_in_step();
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.create"), 7000);
    ck_assert_int_eq(ops_are("M6999", "insert,update"), 1);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_stat_activity WHERE "
                                              "application_name = 'omnisync listener' AND "
                                              "query LIKE '%move_apart%' AND "
                                              "datname = current_database()"),
                     1);
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Cy' WHERE customer_no = 'M7'");
    assert_in_step();
    ck_assert_int_eq(ops_are("M7", "insert,update"), 1);
}
END_TEST

/*
 * Two daemons and a backlog that takes several moves: while one moves, the other finds the move
 * held (omnisync.move_apart() says -1), keeps its claims off the lock and delivers what the first
 * moved. Every customer arrives once, each later change after its create.
 */
START_TEST(test_backlog_moved_apart_by_two_daemons)
{
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'N' || i, 'Ann', 'Lee' FROM generate_series(1, 24000) i");
    scenario_exec(&sc, "UPDATE customers SET first_name = 'Bo' WHERE customer_no IN ('N1', "
                       "'N23999')");
    struct proc second;
    start_daemon();
    ck_assert_msg(scenario_start_daemon(&sc, &second) == 0, "second daemon did not start");
    assert_in_step();
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.create"), 24000);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    ck_assert_int_eq(ops_are("N23999", "insert,update"), 1);
    fprintf(stderr, "capture: two daemons, 24,000 captured rows; one found the move held: %s\n",
            proc_stderr_contains(&omnisync_daemon, "another process is moving") ||
                    proc_stderr_contains(&second, "another process is moving")
                ? "yes"
                : "no");
    ck_assert_int_eq(proc_stop(&second, 20000), 0);
    proc_free(&second);
}
END_TEST

/*
 * A multi-row DELETE is captured as one row of its keys (sql/007_statement_deletes.sql), which the
 * move expands in slices of 50,000 keys. It commits while moves run (they must not skip it), and
 * changes of the same customers that wait for its locks (a re-insert), then come after it (an
 * update, another multi-row DELETE, a single-row insert), land after its delete in the outbox,
 * a key beyond the first slice included.
 */
START_TEST(test_bulk_delete_then_changes_in_order)
{
    scenario_exec(&sc, "SET session_replication_role = replica;"
                       "INSERT INTO customers (customer_no, first_name, last_name) "
                       "SELECT 'D' || i, 'Ann', 'Lee' FROM generate_series(1, 60000) i;"
                       "RESET session_replication_role");
    PGconn *bulk = connect_crm(), *single = connect_crm();
    ck_assert_int_eq(pgrig_exec(bulk, "BEGIN; DELETE FROM customers WHERE customer_no LIKE 'D%'"),
                     0);
    /* One row for the statement, not yet committed: the move sees nothing. */
    ck_assert_int_eq(pgrig_query_int(bulk, "SELECT count(*) FROM omnisync.capture WHERE op = "
                                           "'delete_many' AND cardinality(old_values) = 60000"),
                     1);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured(5000)"), 0);
    /* A re-insert of D5 waits for the DELETE's lock on its key. */
    ck_assert_int_eq(PQsendQuery(single, "INSERT INTO customers (customer_no, first_name, "
                                         "last_name) VALUES ('D5', 'Re', 'Born')"),
                     1);
    ck_assert(WAIT_UNTIL(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_stat_activity "
                                                  "WHERE wait_event_type = 'Lock' AND query "
                                                  "LIKE 'INSERT INTO customers%'") == 1,
                         10000));
    ck_assert_int_eq(pgrig_exec(bulk, "COMMIT"), 0);
    PGresult *res;
    while ((res = PQgetResult(single)) != NULL) {
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "re-insert: %s",
                      PQresultErrorMessage(res));
        PQclear(res);
    }
    ck_assert_int_eq(pgrig_exec(single, "INSERT INTO customers (customer_no, first_name, "
                                        "last_name) VALUES ('D60000', 'Re', 'Born')"),
                     0);
    /* A first batch moves while changes go on: the slice expanded, the rest still one row. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured(5000)"), 5000);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT cardinality(old_values) FROM "
                                              "omnisync.capture WHERE op = 'delete_many'"),
                     10000);
    ck_assert_int_eq(pgrig_exec(single, "UPDATE customers SET first_name = 'Cy' "
                                        "WHERE customer_no = 'D5'"),
                     0);
    ck_assert_int_eq(pgrig_exec(single, "DELETE FROM customers WHERE customer_no IN "
                                        "('D5', 'D60000')"),
                     0);
    ck_assert_int_eq(pgrig_exec(single, "INSERT INTO customers (customer_no, first_name, "
                                        "last_name) VALUES ('D5', 'Di', 'Born')"),
                     0);
    /* Status counts a row of keys once per key: 55,000, 2 inserts, an update, 2 keys, 1 insert. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture c, "
                                              "generate_series(1, CASE WHEN c.op = "
                                              "'delete_many' THEN cardinality(c.old_values) "
                                              "ELSE 1 END)"),
                     55006);
    ck_assert(WAIT_UNTIL(pgrig_query_int(sc.conn, "SELECT omnisync.move_captured(5000)") == 0 &&
                             pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.capture") == 0,
                         60000));
    PQfinish(bulk);
    PQfinish(single);

    /* Every deleted customer once, as version 3 wrote it; then the later changes, in order. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(DISTINCT primary_id) FROM "
                                              "omnisync.outbox WHERE op = 'delete' AND "
                                              "old_data = jsonb_build_object('primary_id', "
                                              "primary_id) AND new_data IS NULL"),
                     60000);
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"), 60006);
    ck_assert_int_eq(ops_are("D5", "delete,insert,update,delete,insert"), 1);
    ck_assert_int_eq(ops_are("D60000", "delete,insert,delete"), 1);
    ck_assert_int_eq(ops_are("D7", "delete"), 1);
}
END_TEST

/* The customers' tiers "v<NNN>": each change adds one, so per customer the values in commit
 * order are consecutive. */
#define NEXT_TIER "'v' || lpad((right(loyalty_tier, -1)::int + 1)::text, 3, '0')"

/*
 * One statement over `n` customers racing single-row updates of the first `hot` of them from
 * another session, while a third session moves captured rows into the outbox as fast as it can
 * (`move`: what claims do, or all at once as operator commands do): per customer, the outbox rows
 * in id order carry consecutive tiers, ending at the customer's tier in the table. Returns the
 * number of single-row updates made.
 */
static int race(int n, int hot, int rounds, const char *move)
{
    scenario_execf(&sc,
                   "SET session_replication_role = replica;"
                   "INSERT INTO customers (customer_no, first_name, last_name, email, "
                   "loyalty_tier) SELECT 'T' || i, 'Ann', 'Lee', 't' || i || '@example.org', "
                   "'v000' FROM generate_series(1, %d) i;"
                   "RESET session_replication_role",
                   n);
    PGconn *bulk = connect_crm(), *single = connect_crm(), *mover = connect_crm();
    int singles = 0;
    for (int r = 0; r < rounds; r++) {
        /* Single-row updates of the hot customers in a transaction the bulk statement must
         * wait for (it locks rows as it goes and reaches these first)... */
        ck_assert_int_eq(pgrig_exec(single, "BEGIN"), 0);
        for (int k = 1; k <= hot; k++) {
            ck_assert_int_eq(pgrig_execf(single,
                                         "UPDATE customers SET loyalty_tier = " NEXT_TIER
                                         " WHERE customer_no = 'T%d'",
                                         k),
                             0);
            singles++;
        }
        ck_assert_int_eq(PQsendQuery(bulk, "UPDATE customers SET loyalty_tier = " NEXT_TIER), 1);
        ck_assert(WAIT_UNTIL(pgrig_query_int(sc.conn, "SELECT count(*) FROM pg_stat_activity "
                                                      "WHERE wait_event_type = 'Lock' AND query "
                                                      "LIKE 'UPDATE customers SET%'") == 1,
                             10000));
        ck_assert_int_eq(pgrig_exec(mover, move), 0);
        ck_assert_int_eq(pgrig_exec(single, "COMMIT"), 0);
        /* ...then more, which wait for the bulk statement's locks. */
        /* Single-row updates go on until the bulk statement is done, then a few more. */
        int after = 0;
        for (int k = 0; after < 3; k++) {
            ck_assert_int_eq(PQconsumeInput(bulk), 1);
            if (!PQisBusy(bulk))
                after++;
            ck_assert_int_eq(pgrig_execf(single,
                                         "UPDATE customers SET loyalty_tier = " NEXT_TIER
                                         " WHERE customer_no = 'T%d'",
                                         1 + k % hot),
                             0);
            singles++;
            ck_assert_int_eq(pgrig_exec(mover, move), 0);
        }
        PGresult *res;
        while ((res = PQgetResult(bulk)) != NULL) {
            ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "bulk update: %s",
                          PQresultErrorMessage(res));
            PQclear(res);
        }
    }
    /* A daemon's claim may be moving right now (our try-lock then skips): until all moved. */
    ck_assert(WAIT_UNTIL(pgrig_exec(mover, move) == 0 &&
                             pgrig_query_int(mover, "SELECT count(*) FROM omnisync.capture") == 0,
                         120000));
    PQfinish(bulk);
    PQfinish(single);
    PQfinish(mover);

    /* Every change captured once: one row per increment of each customer's tier. */
    ck_assert_int_eq(pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"),
                     pgrig_query_int(sc.conn, "SELECT sum(right(loyalty_tier, -1)::int) "
                                              "FROM customers"));
    long long out_of_order = pgrig_query_int(
        sc.conn, "SELECT count(*) FROM (SELECT right(new_data->>'custom_tier', -1)::int AS t, "
                 "lag(right(new_data->>'custom_tier', -1)::int, 1, 0) OVER (PARTITION BY "
                 "primary_id ORDER BY id) AS prev FROM omnisync.outbox) q WHERE t <> prev + 1");
    ck_assert_msg(out_of_order == 0, "%lld outbox rows out of commit order", out_of_order);
    ck_assert_int_eq(pgrig_query_int(sc.conn,
                                     "SELECT count(*) FROM customers c LEFT JOIN (SELECT "
                                     "DISTINCT ON (primary_id) primary_id, new_data->>"
                                     "'custom_tier' AS tier FROM omnisync.outbox ORDER BY "
                                     "primary_id, id DESC) o ON o.primary_id = c.customer_no "
                                     "WHERE o.tier IS DISTINCT FROM c.loyalty_tier"),
                     0);
    return singles;
}

/* 100,000 rows: the order holds in the outbox, from which delivery takes each customer's rows
 * in id order (test_processes.c checks that part at Omnidesk). */
START_TEST(test_bulk_update_races_single_rows_in_order)
{
    /* In batches of the lowest seqs, as a claim moves (sql/003_capture.sql). */
    int singles = race(100000, 50, 1, "SELECT omnisync.move_captured(5000)");
    fprintf(stderr, "capture: one 100,000-row UPDATE raced %d single-row updates\n", singles);
    ck_assert_int_gt(singles, 3);
}
END_TEST

/* The same race with the daemon delivering: per customer, Omnidesk gets the tiers in order. */
START_TEST(test_bulk_update_races_single_rows_delivered_in_order)
{
    start_daemon();
    int n = 2000;
    race(n, 50, 3, "SELECT omnisync.move_captured()");
    assert_in_step();
    /* The fake's log: custom_tier values per customer never go back in time. The final values
     * differ per customer (hot ones were updated more), so check against each one's own. */
    struct json_object *log = NULL, *requests;
    ck_assert_int_eq(fake_get_json(&sc.fake, "/_fake/log", &log), 0);
    ck_assert(json_object_object_get_ex(log, "requests", &requests));
    int *last = calloc((size_t)n + 1, sizeof(*last));
    ck_assert_ptr_nonnull(last);
    for (size_t i = 0; i < json_object_array_length(requests); i++) {
        struct json_object *r = json_object_array_get_idx(requests, i), *fields, *cust, *tier;
        if (!json_object_object_get_ex(r, "customer", &cust) || cust == NULL ||
            !json_object_object_get_ex(r, "fields", &fields) ||
            !json_object_object_get_ex(fields, "custom_tier", &tier))
            continue;
        int k = atoi(json_object_get_string(cust) + 1), t = atoi(json_object_get_string(tier) + 1);
        ck_assert_msg(k >= 1 && k <= n, "unexpected customer %s", json_object_get_string(cust));
        ck_assert_msg(t >= last[k], "customer T%d got v%03d after v%03d", k, t, last[k]);
        last[k] = t;
    }
    for (int k = 1; k <= n; k++) {
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "SELECT right(loyalty_tier, -1)::int FROM customers WHERE customer_no = 'T%d'", k);
        ck_assert_msg(last[k] == pgrig_query_int(sc.conn, sql), "T%d ended at v%03d", k, last[k]);
    }
    free(last);
    json_object_put(log);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("capture");
    TCase *tc = tcase_create("capture");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_late_commit_not_skipped);
    tcase_add_test(tc, test_rollback_leaves_nothing);
    tcase_add_test(tc, test_bulk_delete_then_changes_in_order);
    tcase_add_test(tc, test_update_pairs_rows_at_any_size);
    tcase_add_test(tc, test_statement_rows_keep_each_brand);
    tcase_add_test(tc, test_claim_moves_in_batches);
    tcase_add_test(tc, test_emptied_capture_given_back);
    tcase_add_test(tc, test_backlog_moved_apart);
    tcase_add_test(tc, test_backlog_moved_apart_by_two_daemons);
    tcase_add_test(tc, test_bulk_update_races_single_rows_in_order);
    tcase_add_test(tc, test_bulk_update_races_single_rows_delivered_in_order);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
