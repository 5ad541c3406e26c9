/*
 * test_dbloop: the non-blocking connection (lib/dbloop) and LISTEN omnisync (lib/listener)
 * against a real PostgreSQL from the test rig.
 *
 * Each test has its own database and its own loop, and ends by closing everything and asserting
 * uv_loop_close() == 0: nothing of the modules is left on the loop. Outages are real: the server
 * is stopped, restarted with -m immediate, or the backend is killed with pg_terminate_backend().
 * Waiting is done by turning the loop until a condition holds or a deadline passes (RUN_UNTIL).
 */
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "dbloop.h"
#include "listener.h"
#include "pgrig.h"
#include "testutil.h"

/* ---- the loop each test turns ---- */

static uv_loop_t loop;
static uv_timer_t ticker; /* keeps uv_run(UV_RUN_ONCE) from blocking past a deadline */

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void loop_setup(void)
{
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(uv_timer_init(&loop, &ticker), 0);
}

/* Turns the loop until `expr` holds or `timeout_ms` passes; yields 1 or 0. */
#define RUN_UNTIL(expr, timeout_ms)                                                                \
    __extension__({                                                                                \
        uint64_t run_deadline_ = testutil_now_ms() + (uint64_t)(timeout_ms);                       \
        int run_ok_;                                                                               \
        uv_timer_start(&ticker, on_tick, 5, 5);                                                    \
        while (!(run_ok_ = !!(expr)) && testutil_now_ms() < run_deadline_)                         \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        uv_timer_stop(&ticker);                                                                    \
        run_ok_;                                                                                   \
    })

/* After the modules are closed: the loop must run dry and close cleanly. */
static void loop_finish(void)
{
    uv_close((uv_handle_t *)&ticker, NULL);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}

/* ---- the database ---- */

static struct pgrig *pg;
static char conninfo[1024];
static char dbname[64];

static void db_setup(const char *name)
{
    pg = pgrig_global();
    ck_assert_ptr_nonnull(pg);
    snprintf(dbname, sizeof(dbname), "%s", name);
    ck_assert_int_eq(pgrig_createdb(pg, dbname, conninfo, sizeof(conninfo)), 0);
    loop_setup();
}

/* How many backends of `app` in our database match `extra` (an SQL condition, or "true"). */
static long long backends(PGconn *c, const char *app, const char *extra)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'"
             " AND datname = '%s' AND %s",
             app, dbname, extra);
    return pgrig_query_int(c, sql);
}

static long long terminate(PGconn *c, const char *app)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE application_name = '%s' AND datname = '%s'",
             app, dbname);
    return pgrig_query_int(c, sql);
}

/* ---- recording what the callbacks saw ---- */

struct qrec {
    int called;
    int order;
    int returned; /* dbloop_query has returned */
    int early;    /* the callback ran before dbloop_query returned */
    int failed;
    enum dbloop_error code; /* dbloop_error() during the callback */
    char err[256];
    int ntuples;
    int nfields;
    char value[4][256];
    int isnull[4];
};

static int order_counter;

static void on_query(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct qrec *r = arg;
    (void)db;
    r->called++;
    r->order = ++order_counter;
    if (!r->returned)
        r->early = 1;
    r->code = dbloop_error(db);
    if (err != NULL) {
        ck_assert_int_ne(r->code, DBLOOP_ENONE);
        ck_assert_ptr_null(res);
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", err);
        return;
    }
    ck_assert_ptr_nonnull(res);
    r->ntuples = PQntuples(res);
    r->nfields = PQnfields(res);
    for (int i = 0; i < r->nfields && i < 4 && r->ntuples > 0; i++) {
        r->isnull[i] = PQgetisnull(res, 0, i);
        snprintf(r->value[i], sizeof(r->value[i]), "%s", PQgetvalue(res, 0, i));
    }
}

static void query(struct dbloop *db, const char *sql, int nparams, const char *const *params,
                  int flags, struct qrec *r)
{
    memset(r, 0, sizeof(*r));
    ck_assert_int_eq(dbloop_query(db, sql, nparams, params, flags, on_query, r), 0);
    r->returned = 1;
}

struct srec {
    int n[4]; /* transitions into each state */
    enum dbloop_state last;
    char reason[256];
    struct qrec *retry_on_disconnect; /* queued from inside the DISCONNECTED callback */
    struct qrec *plain_on_disconnect;
};

static void on_state(struct dbloop *db, enum dbloop_state state, const char *reason)
{
    struct srec *s = db->data;
    s->n[state]++;
    s->last = state;
    if (state == DBLOOP_DISCONNECTED) {
        ck_assert_ptr_nonnull(reason);
        snprintf(s->reason, sizeof(s->reason), "%s", reason);
        if (s->retry_on_disconnect != NULL) {
            query(db, "SELECT 'after outage'", 0, NULL, DBLOOP_RETRY_ON_RECONNECT,
                  s->retry_on_disconnect);
            s->retry_on_disconnect = NULL;
        }
        if (s->plain_on_disconnect != NULL) {
            query(db, "SELECT 'plain after outage'", 0, NULL, 0, s->plain_on_disconnect);
            s->plain_on_disconnect = NULL;
        }
    }
}

static int closed_calls;
static int closed_at_order;

static void on_closed(struct dbloop *db)
{
    (void)db;
    closed_calls++;
    closed_at_order = ++order_counter;
}

static void db_open(struct dbloop *db, struct srec *s, const char *app, const char *conn)
{
    struct dbloop_options o = {0};
    memset(s, 0, sizeof(*s));
    o.conninfo = conn;
    o.application_name = app;
    o.reconnect_initial_ms = 20;
    o.reconnect_max_ms = 200;
    o.connect_timeout_ms = 5000;
    o.on_state = on_state;
    o.data = s;
    ck_assert_int_eq(dbloop_init(db, &loop, &o), 0);
}

static void db_close_and_finish(struct dbloop *db)
{
    closed_calls = 0;
    dbloop_close(db, on_closed);
    dbloop_close(db, on_closed); /* a second call is a no-op */
    ck_assert_msg(RUN_UNTIL(closed_calls == 1, 5000), "close_cb never ran");
    loop_finish();
    ck_assert_int_eq(closed_calls, 1);
}

/* ---- dbloop ---- */

START_TEST(queries_run_in_order_with_params)
{
    struct dbloop db;
    struct srec s;
    struct qrec q1, q2, q3, q4;
    const char *p1[] = {"41"};
    const char *p2[] = {NULL, "Zoë ✓ 日本"};

    db_setup("dbloop_order");
    order_counter = 0;
    db_open(&db, &s, "dbloop-order", conninfo);
    ck_assert_int_ne(dbloop_state(&db), DBLOOP_READY); /* init only starts */
    ck_assert_int_eq(s.n[DBLOOP_CONNECTING], 0);       /* no callbacks from inside init */

    /* Queued before the connection is up: they wait for it. */
    query(&db, "SELECT $1::int + 1", 1, p1, 0, &q1);
    query(&db, "SELECT $1::text IS NULL, $2::text, octet_length($2::text)", 2, p2, 0, &q2);
    query(&db, "SELECT generate_series(1, 3)", 0, NULL, 0, &q3);
    ck_assert_int_eq(dbloop_busy(&db), 1);
    ck_assert_int_eq(q1.called + q2.called + q3.called, 0);

    ck_assert(RUN_UNTIL(q1.called && q2.called && q3.called, 5000));
    ck_assert_int_eq(dbloop_state(&db), DBLOOP_READY);
    ck_assert_int_eq(s.n[DBLOOP_READY], 1);
    ck_assert_int_eq(s.n[DBLOOP_DISCONNECTED], 0);
    ck_assert_int_eq(q1.order, 1);
    ck_assert_int_eq(q2.order, 2);
    ck_assert_int_eq(q3.order, 3);
    ck_assert(!q1.early && !q2.early && !q3.early);
    ck_assert(!q1.failed && !q2.failed && !q3.failed);
    ck_assert_str_eq(q1.value[0], "42");
    ck_assert_str_eq(q2.value[0], "t");
    ck_assert_str_eq(q2.value[1], "Zoë ✓ 日本");
    ck_assert_int_eq(atoi(q2.value[2]), (int)strlen("Zoë ✓ 日本"));
    ck_assert_int_eq(q3.ntuples, 3);

    /* Once READY, a FAIL_FAST query runs like any other. */
    query(&db, "SELECT current_setting('application_name')", 0, NULL, DBLOOP_FAIL_FAST, &q4);
    ck_assert(RUN_UNTIL(q4.called, 5000));
    ck_assert(!q4.failed && !q4.early);
    ck_assert_str_eq(q4.value[0], "dbloop-order");
    ck_assert_int_eq(dbloop_busy(&db), 0);

    db_close_and_finish(&db);
    ck_assert_int_eq(s.n[DBLOOP_CLOSING], 1);
}
END_TEST

START_TEST(sql_error_then_next_query_works)
{
    struct dbloop db;
    struct srec s;
    struct qrec q1, q2, q3;
    const char *bad[] = {"not a number"};

    db_setup("dbloop_sqlerror");
    db_open(&db, &s, "dbloop-sqlerror", conninfo);
    query(&db, "SELECT 1/0", 0, NULL, 0, &q1);
    query(&db, "SELECT $1::int", 1, bad, 0, &q2);
    query(&db, "SELECT 42", 0, NULL, 0, &q3);
    ck_assert(RUN_UNTIL(q1.called && q2.called && q3.called, 5000));
    ck_assert(q1.failed);
    ck_assert_str_eq(q1.err, "division by zero");
    ck_assert_int_eq(q1.code, DBLOOP_ESQL);
    ck_assert(q2.failed);
    ck_assert_msg(strstr(q2.err, "invalid input syntax") != NULL, "err: %s", q2.err);
    ck_assert(!q3.failed);
    ck_assert_str_eq(q3.value[0], "42");
    ck_assert_int_eq(s.n[DBLOOP_DISCONNECTED], 0); /* an SQL error is not a lost connection */

    /* Arguments are checked before anything is queued; the callback is then never called. */
    ck_assert_int_eq(dbloop_query(&db, NULL, 0, NULL, 0, on_query, &q1), OMNISYNC_EINVAL);
    ck_assert_int_eq(dbloop_query(&db, "SELECT 1", 1, NULL, 0, on_query, &q1), OMNISYNC_EINVAL);
    ck_assert_int_eq(dbloop_query(&db, "SELECT 1", 0, NULL, 0, NULL, &q1), OMNISYNC_EINVAL);

    db_close_and_finish(&db);
    /* After close, queries are refused. */
    ck_assert_int_eq(dbloop_query(&db, "SELECT 1", 0, NULL, 0, on_query, &q1), OMNISYNC_ECANCELED);
}
END_TEST

START_TEST(waits_for_a_server_that_starts_later)
{
    struct dbloop db;
    struct srec s;
    struct qrec fast, waiting;

    db_setup("dbloop_late");
    ck_assert_int_eq(pgrig_server_stop(pg, "fast"), 0);

    db_open(&db, &s, "dbloop-late", conninfo);
    query(&db, "SELECT 1", 0, NULL, DBLOOP_FAIL_FAST, &fast);
    query(&db, "SELECT 'waited'", 0, NULL, 0, &waiting);

    /* No socket: attempts fail and are retried; FAIL_FAST fails, the other query waits. */
    ck_assert(RUN_UNTIL(fast.called && s.n[DBLOOP_DISCONNECTED] >= 3, 5000));
    ck_assert(fast.failed && !fast.early);
    ck_assert_str_eq(fast.err, "not connected");
    ck_assert_int_eq(fast.code, DBLOOP_ENOTCONN);
    ck_assert_int_eq(waiting.called, 0);
    ck_assert_int_ne(dbloop_state(&db), DBLOOP_READY);
    ck_assert_int_eq(s.n[DBLOOP_READY], 0);
    ck_assert_int_ge(s.n[DBLOOP_CONNECTING], 3);
    ck_assert_int_eq(dbloop_busy(&db), 1);

    ck_assert_int_eq(pgrig_server_start(pg), 0);
    ck_assert(RUN_UNTIL(waiting.called, 10000));
    ck_assert(!waiting.failed);
    ck_assert_str_eq(waiting.value[0], "waited");
    ck_assert_int_eq(dbloop_state(&db), DBLOOP_READY);
    ck_assert_int_eq(s.n[DBLOOP_READY], 1);

    db_close_and_finish(&db);
}
END_TEST

/*
 * Shared by the two outage tests: a long query runs, two more wait behind it (one may be retried),
 * then `outage` kills the connection. The running one and the plain queued one fail with
 * "connection lost"; the retryable one and the two queued during the outage complete.
 */
static void outage_test(const char *name, const char *app, void (*outage)(PGconn *c))
{
    struct dbloop db;
    struct srec s;
    struct qrec sleeping, plain, retry, fast_retry, during_retry, during_plain;
    PGconn *c;

    db_setup(name);
    c = pgrig_connect(pg, dbname);
    ck_assert_ptr_nonnull(c);
    db_open(&db, &s, app, conninfo);
    ck_assert(RUN_UNTIL(dbloop_state(&db) == DBLOOP_READY, 5000));

    query(&db, "SELECT pg_sleep(30)", 0, NULL, 0, &sleeping);
    query(&db, "SELECT 'plain'", 0, NULL, 0, &plain);
    query(&db, "SELECT 'retried'", 0, NULL, DBLOOP_RETRY_ON_RECONNECT, &retry);
    query(&db, "SELECT 'fast'", 0, NULL, DBLOOP_RETRY_ON_RECONNECT | DBLOOP_FAIL_FAST, &fast_retry);
    ck_assert(RUN_UNTIL(backends(c, app, "state = 'active' AND query LIKE 'SELECT pg_sleep%'") == 1,
                        5000));

    s.retry_on_disconnect = &during_retry;
    s.plain_on_disconnect = &during_plain;
    outage(c);
    ck_assert(RUN_UNTIL(sleeping.called && plain.called && retry.called && fast_retry.called &&
                            during_retry.called && during_plain.called,
                        15000));
    ck_assert_int_ge(s.n[DBLOOP_DISCONNECTED], 1);
    ck_assert_int_ge(s.n[DBLOOP_READY], 2);
    ck_assert_int_eq(dbloop_state(&db), DBLOOP_READY);
    ck_assert(sleeping.failed);
    ck_assert_str_eq(sleeping.err, "connection lost");
    ck_assert(plain.failed);
    ck_assert_str_eq(plain.err, "connection lost");
    ck_assert_int_eq(plain.code, DBLOOP_ELOST);
    ck_assert_str_eq(fast_retry.err, "connection lost"); /* FAIL_FAST never waits */
    ck_assert_int_lt(fast_retry.order, retry.order);
    ck_assert_msg(!retry.failed, "retry err: %s", retry.err);
    ck_assert_str_eq(retry.value[0], "retried");
    ck_assert_msg(!during_retry.failed, "err: %s", during_retry.err);
    ck_assert_str_eq(during_retry.value[0], "after outage");
    ck_assert_msg(!during_plain.failed, "err: %s", during_plain.err);
    ck_assert_str_eq(during_plain.value[0], "plain after outage");
    ck_assert(!sleeping.early && !plain.early && !retry.early && !during_retry.early);
    /* Exactly one backend: the old one is gone, the new one is ours. */
    ck_assert_int_eq(backends(c, app, "true"), 1);

    PQfinish(c);
    db_close_and_finish(&db);
}

static void terminate_outage(PGconn *c)
{
    ck_assert_int_eq(terminate(c, "dbloop-term"), 1);
}

static void restart_outage(PGconn *c)
{
    (void)c;
    ck_assert_int_eq(pgrig_restart(pg, "immediate"), 0);
}

START_TEST(terminated_backend_reconnects)
{
    outage_test("dbloop_term", "dbloop-term", terminate_outage);
}
END_TEST

START_TEST(immediate_restart_reconnects)
{
    /* The test's own connection dies with the server; outage_test only uses it before. */
    struct dbloop db;
    struct srec s;
    struct qrec sleeping, retry, during;
    PGconn *c;

    db_setup("dbloop_restart");
    c = pgrig_connect(pg, dbname);
    ck_assert_ptr_nonnull(c);
    db_open(&db, &s, "dbloop-restart", conninfo);
    ck_assert(RUN_UNTIL(dbloop_state(&db) == DBLOOP_READY, 5000));
    query(&db, "SELECT pg_sleep(30)", 0, NULL, 0, &sleeping);
    query(&db, "SELECT 'retried'", 0, NULL, DBLOOP_RETRY_ON_RECONNECT, &retry);
    ck_assert(RUN_UNTIL(
        backends(c, "dbloop-restart", "state = 'active' AND query LIKE 'SELECT pg_sleep%'") == 1,
        5000));
    PQfinish(c);

    s.retry_on_disconnect = &during;
    restart_outage(NULL);
    ck_assert(RUN_UNTIL(sleeping.called && retry.called && during.called, 15000));
    ck_assert_int_ge(s.n[DBLOOP_DISCONNECTED], 1);
    ck_assert_int_ge(s.n[DBLOOP_READY], 2);
    ck_assert_int_eq(dbloop_state(&db), DBLOOP_READY);
    ck_assert_str_eq(sleeping.err, "connection lost");
    ck_assert_msg(!retry.failed, "err: %s", retry.err);
    ck_assert_msg(!during.failed, "err: %s", during.err);
    ck_assert_str_eq(during.value[0], "after outage");

    db_close_and_finish(&db);
}
END_TEST

START_TEST(reset_drops_and_reconnects)
{
    struct dbloop db;
    struct srec s;
    struct qrec sleeping, after;

    db_setup("dbloop_reset");
    db_open(&db, &s, "dbloop-reset", conninfo);
    ck_assert(RUN_UNTIL(dbloop_state(&db) == DBLOOP_READY, 5000));
    query(&db, "SELECT pg_sleep(0.5)", 0, NULL, 0, &sleeping);
    ck_assert(RUN_UNTIL(dbloop_busy(&db) && db.running != NULL, 5000));
    dbloop_reset(&db, "query took too long");
    ck_assert_int_eq(dbloop_state(&db), DBLOOP_DISCONNECTED);
    ck_assert_int_eq(sleeping.called, 0); /* its callback comes from the loop */
    ck_assert_msg(strstr(s.reason, "query took too long") != NULL, "reason: %s", s.reason);
    query(&db, "SELECT 'again'", 0, NULL, 0, &after);
    ck_assert(RUN_UNTIL(sleeping.called && after.called, 5000));
    ck_assert_str_eq(sleeping.err, "connection lost");
    ck_assert_str_eq(after.value[0], "again");
    ck_assert_int_eq(s.n[DBLOOP_READY], 2);
    dbloop_reset(&db, NULL);
    ck_assert(RUN_UNTIL(dbloop_state(&db) == DBLOOP_READY, 5000));
    db_close_and_finish(&db);
}
END_TEST

START_TEST(close_fails_queued_queries)
{
    struct dbloop db;
    struct srec s;
    struct qrec running, queued, retry;
    PGconn *c;

    db_setup("dbloop_close");
    order_counter = 0;
    c = pgrig_connect(pg, dbname);
    ck_assert_ptr_nonnull(c);
    db_open(&db, &s, "dbloop-close", conninfo);
    ck_assert(RUN_UNTIL(dbloop_state(&db) == DBLOOP_READY, 5000));
    query(&db, "SELECT pg_sleep(2)", 0, NULL, 0, &running);
    query(&db, "SELECT 1", 0, NULL, 0, &queued);
    query(&db, "SELECT 2", 0, NULL, DBLOOP_RETRY_ON_RECONNECT, &retry);
    ck_assert(RUN_UNTIL(
        backends(c, "dbloop-close", "state = 'active' AND query LIKE 'SELECT pg_sleep%'") == 1,
        5000));
    PQfinish(c);

    closed_calls = 0;
    dbloop_close(&db, on_closed);
    ck_assert_int_eq(running.called + queued.called + retry.called, 0); /* later, from the loop */
    ck_assert(RUN_UNTIL(closed_calls == 1, 5000));
    ck_assert_int_eq(running.called, 1);
    ck_assert_int_eq(queued.called, 1);
    ck_assert_int_eq(retry.called, 1);
    ck_assert_str_eq(running.err, "closing");
    ck_assert_int_eq(running.code, DBLOOP_ECLOSING);
    ck_assert_str_eq(dbloop_strerror(DBLOOP_ECLOSING), "closing");
    ck_assert_str_eq(queued.err, "closing");
    ck_assert_str_eq(retry.err, "closing");
    ck_assert_int_lt(retry.order, closed_at_order); /* every callback before close_cb */
    loop_finish();
}
END_TEST

START_TEST(close_while_connecting)
{
    struct dbloop db;
    struct srec s;
    struct qrec q;

    pg = pgrig_global();
    loop_setup();
    db_open(&db, &s, "dbloop-nowhere", "host=/nonexistent/omnisync-dbloop dbname=x user=x");
    query(&db, "SELECT 1", 0, NULL, 0, &q);
    /* Closed before the loop ever ran: the first attempt and the queued query are abandoned. */
    closed_calls = 0;
    dbloop_close(&db, on_closed);
    ck_assert(RUN_UNTIL(closed_calls == 1, 5000));
    ck_assert_str_eq(q.err, "closing");
    loop_finish();

    /* The same after a few failed attempts. */
    loop_setup();
    db_open(&db, &s, "dbloop-nowhere", "host=/nonexistent/omnisync-dbloop dbname=x user=x");
    ck_assert(RUN_UNTIL(s.n[DBLOOP_DISCONNECTED] >= 2, 5000));
    ck_assert_msg(strstr(s.reason, "omnisync-dbloop") != NULL, "reason: %s", s.reason);
    db_close_and_finish(&db);
}
END_TEST

START_TEST(connect_timeout_abandons_the_attempt)
{
    struct dbloop db;
    struct srec s;
    struct dbloop_options o = {0};
    struct sockaddr_in addr;
    socklen_t alen = sizeof(addr);
    char conn[256];
    int fd;

    /* A loopback port that completes the TCP handshake (the kernel's backlog) but never speaks. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
    snprintf(conn, sizeof(conn),
             "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable gssencmode=disable",
             ntohs(addr.sin_port));

    loop_setup();
    memset(&s, 0, sizeof(s));
    o.conninfo = conn;
    o.application_name = "dbloop-timeout";
    o.reconnect_initial_ms = 10;
    o.reconnect_max_ms = 20;
    o.connect_timeout_ms = 100;
    o.on_state = on_state;
    o.data = &s;
    uint64_t t0 = testutil_now_ms();
    ck_assert_int_eq(dbloop_init(&db, &loop, &o), 0);
    ck_assert(RUN_UNTIL(s.n[DBLOOP_DISCONNECTED] >= 2, 5000));
    ck_assert_msg(strstr(s.reason, "timed out") != NULL, "reason: %s", s.reason);
    ck_assert_uint_ge(testutil_now_ms() - t0, 190); /* two whole attempts */
    ck_assert_int_eq(s.n[DBLOOP_READY], 0);
    db_close_and_finish(&db);
    close(fd);
}
END_TEST

START_TEST(init_refuses_bad_conninfo)
{
    struct dbloop db;
    struct dbloop_options o = {0};

    loop_setup();
    o.conninfo = "host=/tmp password=hunter2 no_such_option=1";
    ck_assert_int_eq(dbloop_init(&db, &loop, &o), OMNISYNC_EINVAL);
    o.conninfo = "postgresql://[broken";
    ck_assert_int_eq(dbloop_init(&db, &loop, &o), OMNISYNC_EINVAL);
    o.conninfo = "postgres://host/db?no_such_option=1";
    ck_assert_int_eq(dbloop_init(&db, &loop, &o), OMNISYNC_EINVAL);
    o.conninfo = NULL;
    ck_assert_int_eq(dbloop_init(&db, &loop, &o), OMNISYNC_EINVAL);
    /* A bare database name is a valid conninfo. */
    o.conninfo = "postgres";
    o.application_name = "dbloop-bare";
    ck_assert_int_eq(dbloop_init(&db, &loop, &o), 0);
    db_close_and_finish(&db); /* and nothing else was left on the loop */
}
END_TEST

/* ---- listener ---- */

struct lrec {
    int wakes;
    int ready;
    int unready;
    uint64_t wake_at;
    int closed;
};

static void on_wake(struct listener *l)
{
    struct lrec *r = l->data;
    r->wakes++;
    r->wake_at = testutil_now_ms();
}

static void on_ready(struct listener *l, int ready)
{
    struct lrec *r = l->data;
    if (ready)
        r->ready++;
    else
        r->unready++;
    ck_assert_int_eq(listener_is_listening(l), ready);
}

static void on_listener_closed(struct listener *l)
{
    struct lrec *r = l->data;
    r->closed++;
}

static int bytes_waiting(int fd)
{
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) != 0)
        return -1;
    return n;
}

/* Sends a NOTIFY from another connection and asserts the wake-up comes quickly. */
static void notify_and_expect_wake(PGconn *c, struct lrec *r)
{
    int before = r->wakes;
    uint64_t t0 = testutil_now_ms();
    ck_assert_int_eq(pgrig_exec(c, "NOTIFY omnisync"), 0);
    ck_assert_msg(RUN_UNTIL(r->wakes > before, 2000), "no wake-up");
    ck_assert_int_eq(r->wakes, before + 1);
    uint64_t latency = r->wake_at - t0;
    fprintf(stderr, "listener wake-up latency: %llu ms\n", (unsigned long long)latency);
    ck_assert_uint_lt(latency, 1000);
}

START_TEST(listener_wakes_and_recovers)
{
    struct listener l;
    struct lrec r = {0};
    PGconn *c;

    db_setup("dbloop_listener");
    c = pgrig_connect(pg, dbname);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(listener_init(&l, &loop, conninfo, on_wake, on_ready, &r), 0);
    ck_assert_int_eq(listener_is_listening(&l), 0);
    ck_assert(RUN_UNTIL(r.ready == 1, 5000));
    ck_assert_int_eq(listener_is_listening(&l), 1);
    ck_assert_int_eq(r.wakes, 0);

    notify_and_expect_wake(c, &r);

    /* Five commits that land in the socket while the loop is not turning: one read, one wake.
     * Each NotificationResponse for "omnisync" with no payload is 19 bytes. */
    int fd = PQsocket(l.db.conn);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(pgrig_exec(c, "NOTIFY omnisync"), 0);
    ck_assert(WAIT_UNTIL(bytes_waiting(fd) >= 5 * 19, 2000));
    int before = r.wakes;
    ck_assert(RUN_UNTIL(r.wakes > before, 2000));
    uv_run(&loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(r.wakes, before + 1);

    /* Kill the listener's backend: on_ready(0), then on_ready(1) once LISTEN is back. */
    ck_assert_int_eq(terminate(c, LISTENER_APPLICATION_NAME), 1);
    ck_assert(RUN_UNTIL(r.unready == 1 && r.ready == 2, 10000));
    ck_assert_int_eq(listener_is_listening(&l), 1);
    ck_assert_int_eq(backends(c, LISTENER_APPLICATION_NAME, "query = 'LISTEN omnisync'"), 1);
    notify_and_expect_wake(c, &r);

    PQfinish(c);
    listener_close(&l, on_listener_closed);
    listener_close(&l, on_listener_closed);
    ck_assert(RUN_UNTIL(r.closed == 1, 5000));
    ck_assert_int_eq(r.unready, 1); /* closing is not reported as a lost connection */
    loop_finish();
}
END_TEST

static Suite *dbloop_suite(void)
{
    Suite *s = suite_create("dbloop");
    TCase *tc;

    tc = tcase_create("queries");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, queries_run_in_order_with_params);
    tcase_add_test(tc, sql_error_then_next_query_works);
    tcase_add_test(tc, init_refuses_bad_conninfo);
    suite_add_tcase(s, tc);

    tc = tcase_create("outages");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, waits_for_a_server_that_starts_later);
    tcase_add_test(tc, terminated_backend_reconnects);
    tcase_add_test(tc, immediate_restart_reconnects);
    tcase_add_test(tc, reset_drops_and_reconnects);
    tcase_add_test(tc, connect_timeout_abandons_the_attempt);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, close_fails_queued_queries);
    tcase_add_test(tc, close_while_connecting);
    suite_add_tcase(s, tc);

    tc = tcase_create("listener");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, listener_wakes_and_recovers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dbloop_suite());
    int failed;

    if (pgrig_global() == NULL) {
        fprintf(stderr, "test_dbloop: cannot start the test PostgreSQL\n");
        return 1;
    }
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    pgrig_stop(pgrig_global());
    return failed != 0;
}
