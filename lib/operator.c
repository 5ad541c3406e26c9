/*
 * operator: operator actions. See operator.h. Never deletes a row and never touches a row a daemon
 * holds in flight (pending rows are not operator business here; held rows are never leased).
 */
#include "operator.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "schema.h"

static int begin(PGconn *conn, char *err, size_t errlen)
{
    return db_exec(conn, "BEGIN", err, errlen);
}

int operator_commit(PGconn *conn, char *err, size_t errlen)
{
    return db_exec(conn, "SELECT pg_notify('omnisync', ''); COMMIT", err, errlen);
}

static int finish(PGconn *conn, int rc, char *err, size_t errlen)
{
    char ignored[128];
    if (rc == 0)
        return operator_commit(conn, err, errlen);
    if (db_exec(conn, "ROLLBACK", ignored, sizeof(ignored)) != 0) {
        /* The session is unusable anyway; the server rolls back when it closes. */
    }
    return rc;
}

int outbox_set_paused(PGconn *conn, const char *source, int paused, const char *reason,
                      char *err, size_t errlen)
{
    const char *params[] = {source ? source : "*", paused ? "true" : "false", reason};
    int rc = begin(conn, err, errlen);
    if (rc != 0)
        return rc;
    rc = db_query(conn,
                  "INSERT INTO omnisync.control AS c (scope, paused, reason) VALUES ($1, $2, $3) "
                  "ON CONFLICT (scope) DO UPDATE SET paused = EXCLUDED.paused, "
                  "changed_by = session_user, changed_at = now(), reason = EXCLUDED.reason",
                  3, params, NULL, err, errlen);
    /* A running daemon ends a pause the API asked for (Retry-After) on this ring: it lives in
     * memory only. Delivered at commit, so only a recorded resume rings. */
    if (rc == 0 && !paused)
        rc = db_query(conn, "SELECT pg_notify('omnisync', 'resume')", 0, NULL, NULL, err, errlen);
    if (rc == 0) {
        const char *p2[] = {paused ? "pause" : "resume", source, reason};
        rc = db_query(conn,
                      "INSERT INTO omnisync.operator_action (action, source, reason) "
                      "VALUES ($1, $2, $3)",
                      3, p2, NULL, err, errlen);
    }
    return finish(conn, rc, err, errlen);
}

int outbox_pause_flags(PGconn *conn, PGresult **out, char *err, size_t errlen)
{
    return db_query(conn,
                    "SELECT CASE scope WHEN '*' THEN 'all sources' ELSE scope END AS scope, "
                    "paused, changed_by, date_trunc('second', changed_at) AS changed_at, reason "
                    "FROM omnisync.control ORDER BY scope",
                    0, NULL, out, err, errlen);
}

int outbox_held_purges(PGconn *conn, PGresult **out, char *err, size_t errlen)
{
    return db_query(conn,
                    "SELECT id, source, primary_id, op, "
                    "date_trunc('second', created_at) AS created_at, result AS why "
                    "FROM omnisync.outbox WHERE status = 'held' ORDER BY id",
                    0, NULL, out, err, errlen);
}

/* "{1,2,3}" for ids[0..n): a bigint[] literal passed as one parameter, never pasted into SQL. */
static char *id_array(const long long *ids, size_t n)
{
    size_t cap = 3 + n * 21;
    char *text = malloc(cap);
    if (text == NULL)
        return NULL;
    size_t len = 0;
    text[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s%lld", i ? "," : "", ids[i]);
    snprintf(text + len, cap - len, "}");
    return text;
}

int outbox_release_purges(PGconn *conn, const long long *ids, size_t n, int all, int skip,
                          const char *reason, long long *changed, char **not_held, char *err,
                          size_t errlen)
{
    PGresult *res = NULL;
    char *array = id_array(ids, n);
    *changed = 0;
    *not_held = NULL;
    if (array == NULL)
        return OMNISYNC_ENOMEM;
    int rc = begin(conn, err, errlen);
    if (rc != 0)
        goto out;
    if (!all) {
        const char *p[] = {array};
        rc = db_query(conn,
                      "SELECT string_agg(i::text, ', ' ORDER BY i) FROM unnest($1::bigint[]) i "
                      "WHERE NOT EXISTS (SELECT 1 FROM omnisync.outbox o WHERE o.id = i AND "
                      "o.status = 'held')",
                      1, p, &res, err, errlen);
        if (rc == 0 && !PQgetisnull(res, 0, 0)) {
            *not_held = strdup(PQgetvalue(res, 0, 0));
            rc = OMNISYNC_ENOTFOUND;
            snprintf(err, errlen, "not held: %s", *not_held ? *not_held : "some ids");
        }
        PQclear(res);
        res = NULL;
        if (rc != 0)
            goto done;
    }
    /* A released purge waits for the guard again only if the budget is still spent: the
     * operator's release is the decision, so it bypasses the guard by reserving for it now. */
    const char *p[] = {all ? NULL : array, skip ? "skip" : "release", reason};
    rc = db_query(conn,
                  "WITH moved AS ("
                  " UPDATE omnisync.outbox SET "
                  "  status = CASE WHEN $2 = 'skip' THEN 'skipped' ELSE 'pending' END, "
                  "  next_attempt_at = now(), action = $2, action_by = session_user, "
                  "  action_at = now(), action_reason = $3, "
                  "  result = CASE WHEN $2 = 'skip' THEN 'skipped by ' || session_user "
                  "                ELSE 'released by ' || session_user END "
                  " WHERE status = 'held' AND ($1::bigint[] IS NULL OR id = ANY ($1::bigint[])) "
                  " RETURNING id, source), "
                  "logged AS (INSERT INTO omnisync.operator_action (action, outbox_id, source, reason) "
                  " SELECT 'purge ' || $2, id, source, $3 FROM moved), "
                  "reserved AS (INSERT INTO omnisync.delivery_attempt (outbox_id, step, outcome, error) "
                  " SELECT id, 'purge_reserved', 'ok', 'released by an operator' FROM moved "
                  " WHERE $2 = 'release') "
                  "SELECT count(*) FROM moved",
                  3, p, &res, err, errlen);
    if (rc == 0)
        *changed = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
done:
    rc = finish(conn, rc, err, errlen);
out:
    free(array);
    return rc;
}

int outbox_check_filter(PGconn *conn, const struct outbox_filter *f, char **since_sql, char *err,
                        size_t errlen)
{
    static const char *const statuses[] = {"pending", "held", "done", "failed", "skipped"};
    *since_sql = NULL;
    if (f->status != NULL) {
        int ok = 0;
        for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
            ok |= strcmp(f->status, statuses[i]) == 0;
        if (!ok) {
            snprintf(err, errlen,
                     "--status %s: expected pending, held, done, failed or skipped", f->status);
            return OMNISYNC_EINVAL;
        }
    }
    if (f->limit < 0) {
        snprintf(err, errlen, "--limit must be a positive number");
        return OMNISYNC_EINVAL;
    }
    if (f->since == NULL)
        return OMNISYNC_OK;
    /* "2h" means two hours ago; anything else must be a timestamp PostgreSQL understands. */
    uint64_t ms;
    PGresult *res = NULL;
    char buf[64];
    const char *params[1];
    const char *sql;
    if (config_parse_duration(f->since, &ms) == 0) {
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)ms);
        params[0] = buf;
        sql = "SELECT (now() - $1::bigint * interval '1 millisecond')::text";
    } else {
        params[0] = f->since;
        sql = "SELECT $1::timestamptz::text";
    }
    char sub[256];
    if (db_query(conn, sql, 1, params, &res, sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "--since %s: not a time (use 2026-11-23 10:00, or a duration: 2h, 7d)",
                 f->since);
        return OMNISYNC_EINVAL;
    }
    *since_sql = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return *since_sql ? OMNISYNC_OK : OMNISYNC_ENOMEM;
}

/* The WHERE clause shared by list and replay --failed: parameters $1..$5. */
#define FILTER_SQL                                                                                 \
    "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR source = $2) AND "               \
    "($3::text IS NULL OR primary_id = $3) AND ($4::timestamptz IS NULL OR created_at >= $4) "   \
    "AND ($5::text IS NULL OR strpos(last_error, $5) > 0)"

int outbox_list(PGconn *conn, const struct outbox_filter *f, PGresult **out, char *err,
                size_t errlen)
{
    char *since = NULL;
    int rc = outbox_check_filter(conn, f, &since, err, errlen);
    if (rc != 0)
        return rc;
    char limit[24];
    snprintf(limit, sizeof(limit), "%lld", f->limit > 0 ? f->limit : 50);
    const char *params[] = {f->status, f->source, f->primary_id, since, f->error, limit};
    rc = db_query(conn,
                  "SELECT id, source, primary_id, op, status, attempts, "
                  "date_trunc('second', created_at) AS created_at, "
                  "left(coalesce(last_error, result, ''), 120) AS outcome "
                  "FROM omnisync.outbox WHERE " FILTER_SQL " ORDER BY id DESC LIMIT $6",
                  6, params, out, err, errlen);
    free(since);
    return rc;
}

int outbox_show(PGconn *conn, long long id, int show_data, PGresult **row, PGresult **attempts,
                char *err, size_t errlen)
{
    char idtext[24];
    snprintf(idtext, sizeof(idtext), "%lld", id);
    const char *params[] = {idtext, show_data ? "t" : "f"};
    *row = *attempts = NULL;
    /* Without --show-data the payload shows which fields changed, never their values. */
    int rc = db_query(
        conn,
        "SELECT id, source, brand_id, primary_id, op, status, attempts, txid, created_at, "
        "next_attempt_at, locked_until, locked_by, last_http_status, last_error, delivered_at, "
        "result, coalesced_into, superseded_by, scrubbed_at, action, action_by, action_at, "
        "action_reason, "
        "CASE WHEN $2::boolean THEN old_data ELSE (SELECT jsonb_object_agg(k, '***') FROM "
        " jsonb_object_keys(old_data) k) END AS old_data, "
        "CASE WHEN $2::boolean THEN new_data ELSE (SELECT jsonb_object_agg(k, '***') FROM "
        " jsonb_object_keys(new_data) k) END AS new_data "
        "FROM omnisync.outbox WHERE id = $1",
        2, params, row, err, errlen);
    if (rc != 0)
        return rc;
    if (PQntuples(*row) == 0) {
        PQclear(*row);
        *row = NULL;
        snprintf(err, errlen, "no outbox row %lld", id);
        return OMNISYNC_ENOTFOUND;
    }
    return db_query(conn,
                    "SELECT at, step, http_status, outcome, error, duration_ms, process "
                    "FROM omnisync.delivery_attempt WHERE outbox_id = $1 ORDER BY at, id",
                    1, params, attempts, err, errlen);
}

/* Acts on the rows of `ids` (or the filter when n = 0) that `applies` selects; rows named by id
 * that it does not select make the action fail, each with why. */
static int act(PGconn *conn, const char *action, const long long *ids, size_t n,
               const struct outbox_filter *f, const char *applies, const char *why_not,
               const char *set, const char *reason, int dry_run, PGresult **rows, char *err,
               size_t errlen)
{
    char *array = NULL, *since = NULL, *sql = NULL;
    PGresult *res = NULL;
    *rows = NULL;
    int rc = OMNISYNC_ENOMEM;
    if ((array = id_array(ids, n)) == NULL)
        goto out;
    if (n == 0 && (rc = outbox_check_filter(conn, f, &since, err, errlen)) != 0)
        goto out;
    if ((rc = begin(conn, err, errlen)) != 0)
        goto out;
    if (n > 0) {
        /* Every id must exist and be in a state the action applies to. */
        const char *p[] = {array};
        if (asprintf(&sql,
                     "SELECT string_agg(CASE WHEN o.id IS NULL THEN i || ': no such row' "
                     "ELSE i || ': ' || %s END, '; ' ORDER BY i) "
                     "FROM unnest($1::bigint[]) i LEFT JOIN omnisync.outbox o ON o.id = i "
                     "WHERE o.id IS NULL OR NOT (%s)",
                     why_not, applies) < 0) {
            sql = NULL;
            rc = OMNISYNC_ENOMEM;
            goto done;
        }
        rc = db_query(conn, sql, 1, p, &res, err, errlen);
        free(sql);
        sql = NULL;
        if (rc == 0 && !PQgetisnull(res, 0, 0)) {
            snprintf(err, errlen, "%s", PQgetvalue(res, 0, 0));
            rc = strstr(err, "no such row") ? OMNISYNC_ENOTFOUND : OMNISYNC_EINVAL;
        }
        PQclear(res);
        res = NULL;
        if (rc != 0)
            goto done;
    }
    const char *params[] = {f ? f->status : NULL, f ? f->source : NULL, f ? f->primary_id : NULL,
                            since, f ? f->error : NULL, n ? array : NULL, action, reason,
                            dry_run ? "t" : "f"};
    if (asprintf(&sql,
                 "WITH target AS (SELECT id FROM omnisync.outbox WHERE (%s) AND "
                 " CASE WHEN $6::bigint[] IS NOT NULL THEN id = ANY ($6::bigint[]) ELSE " FILTER_SQL
                 " END FOR UPDATE), "
                 "changed AS (UPDATE omnisync.outbox o SET %s, action = $7, "
                 " action_by = session_user, action_at = now(), action_reason = $8 "
                 " FROM target WHERE o.id = target.id AND NOT $9::boolean "
                 " RETURNING o.id, o.source, o.primary_id, o.status), "
                 "logged AS (INSERT INTO omnisync.operator_action (action, outbox_id, source, reason) "
                 " SELECT $7, id, source, $8 FROM changed) "
                 "SELECT id, source, primary_id, status FROM changed WHERE NOT $9::boolean "
                 "UNION ALL SELECT o.id, o.source, o.primary_id, o.status FROM omnisync.outbox o "
                 " JOIN target USING (id) WHERE $9::boolean ORDER BY 1",
                 applies, set) < 0) {
        sql = NULL;
        rc = OMNISYNC_ENOMEM;
        goto done;
    }
    rc = db_query(conn, sql, 9, params, rows, err, errlen);
    if (rc == 0 && PQntuples(*rows) == 0) {
        snprintf(err, errlen, "nothing to %s: no row matches", action);
        rc = OMNISYNC_ENOTFOUND;
    }
done:
    if (rc == 0 && dry_run) {
        char ignored[128];
        if (db_exec(conn, "ROLLBACK", ignored, sizeof(ignored)) != 0)
            rc = OMNISYNC_EDB;
    } else {
        rc = finish(conn, rc, err, errlen);
    }
out:
    if (rc != 0) {
        PQclear(*rows);
        *rows = NULL;
    }
    free(sql);
    free(array);
    free(since);
    return rc;
}

int outbox_replay(PGconn *conn, const long long *ids, size_t n, const struct outbox_filter *f,
                  const char *reason, int dry_run, PGresult **rows, char *err, size_t errlen)
{
    struct outbox_filter failed = f ? *f : (struct outbox_filter){0};
    failed.status = "failed";
    return act(conn, "replay", ids, n, &failed, "status = 'failed'",
               "CASE WHEN o.superseded_by IS NOT NULL THEN 'superseded by ' || o.superseded_by "
               "|| ': replaying it would send stale data' ELSE 'is ' || o.status || ', not failed' "
               "END",
               "status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL, "
               "last_http_status = NULL",
               reason, dry_run, rows, err, errlen);
}

int outbox_skip(PGconn *conn, const long long *ids, size_t n, const struct outbox_filter *f,
                const char *reason, int dry_run, PGresult **rows, char *err, size_t errlen)
{
    /* By filter only a whole source, so that a typo cannot give up every row of the outbox. */
    if (n == 0 && (f == NULL || f->source == NULL)) {
        snprintf(err, errlen, "give the ids of the rows to skip, or --source NAME");
        return OMNISYNC_EINVAL;
    }
    if (n == 0 && f->status != NULL && strcmp(f->status, "pending") != 0 &&
        strcmp(f->status, "failed") != 0 && strcmp(f->status, "held") != 0) {
        snprintf(err, errlen, "--status %s: skip gives up pending, failed or held rows",
                 f->status);
        return OMNISYNC_EINVAL;
    }
    return act(conn, "skip", ids, n, f,
               "status IN ('failed', 'held') OR (status = 'pending' AND (locked_until IS NULL "
               "OR locked_until < now()))",
               "CASE WHEN o.status = 'pending' THEN 'is being delivered right now' "
               "ELSE 'is ' || o.status || ' already' END",
               "status = 'skipped', result = 'skipped by ' || session_user, locked_until = NULL, "
               "locked_by = NULL",
               reason, dry_run, rows, err, errlen);
}

void operator_move_captured(PGconn *conn)
{
    /* A role that may not move them (or a schema older than version 3) still gets its answer:
     * status counts captured rows anyway, and the daemon moves them at its next claim. */
    PQclear(PQexec(conn, "DO $omnisync$ BEGIN "
                         "IF to_regproc('omnisync.move_captured') IS NOT NULL THEN "
                         "PERFORM omnisync.move_captured(); END IF; END $omnisync$"));
}

/* The counts of `status` over the rows `o` (a table or a subquery with source, status,
 * created_at). */
#define STATUS_COUNTS(o)                                                                           \
    "SELECT s.source, "                                                                            \
    " count(*) FILTER (WHERE o.status = 'pending') AS pending, "                                   \
    " count(*) FILTER (WHERE o.status = 'held') AS held, "                                         \
    " count(*) FILTER (WHERE o.status = 'failed') AS failed, "                                     \
    " count(*) FILTER (WHERE o.status = 'done') AS done, "                                         \
    " count(*) FILTER (WHERE o.status = 'skipped') AS skipped, "                                   \
    " coalesce(extract(epoch FROM now() - min(o.created_at) FILTER (WHERE o.status = "             \
    "  'pending'))::bigint, 0) AS oldest_pending_s, "                                              \
    " CASE WHEN EXISTS (SELECT 1 FROM omnisync.control c WHERE c.paused AND c.scope IN "           \
    "  ('*', s.source)) THEN 'paused' ELSE 'active' END AS sending "                               \
    "FROM (SELECT source FROM omnisync.installed_source UNION SELECT DISTINCT source FROM "        \
    " omnisync.outbox) s LEFT JOIN " o " o ON o.source = s.source "                                \
    "GROUP BY s.source ORDER BY s.source"

int outbox_status(PGconn *conn, PGresult **counts, PGresult **failures, PGresult **processes,
                  char *err, size_t errlen)
{
    *counts = *failures = *processes = NULL;
    /* Captured rows not yet moved into the outbox (sql/003_capture.sql) are pending too, a
     * multi-row DELETE's row once per key (sql/007_statement_deletes.sql), a multi-row UPDATE's
     * once per customer it updated (sql/010_statement_updates.sql; those whose mapped values
     * did not change leave when it is moved). A schema older than version 3 has no capture
     * table, one older than 10 no statement rows of UPDATEs: `status` right after a package
     * upgrade, before `migrate`, still answers. */
    PGresult *has = NULL;
    int rc = db_query(conn,
                      "SELECT to_regclass('omnisync.capture') IS NOT NULL, "
                      "to_regtype('omnisync.captured_row') IS NOT NULL",
                      0, NULL, &has, err, errlen);
    if (rc != 0)
        return rc;
    int capture = strcmp(PQgetvalue(has, 0, 0), "t") == 0;
    int statement_updates = strcmp(PQgetvalue(has, 0, 1), "t") == 0;
    PQclear(has);
#define STATUS_CAPTURED(n)                                                                         \
    STATUS_COUNTS("(SELECT source, status, created_at FROM omnisync.outbox UNION ALL SELECT "      \
                  "c.source, 'pending', c.captured_at FROM omnisync.capture c, "                  \
                  "generate_series(1, " n "))")
    rc = db_query(conn,
                  statement_updates
                      ? STATUS_CAPTURED("omnisync.captured_changes(c.op, c.old_values, c.new_rows)")
                  : capture ? STATUS_CAPTURED("CASE WHEN c.op = 'delete_many' THEN "
                                              "cardinality(c.old_values) ELSE 1 END")
                            : STATUS_COUNTS("omnisync.outbox"),
                  0, NULL, counts, err, errlen);
#undef STATUS_CAPTURED
    if (rc == 0)
        rc = db_query(conn,
                      "SELECT id, source, primary_id, last_http_status AS http, "
                      "left(last_error, 100) AS error FROM omnisync.outbox "
                      "WHERE status = 'failed' ORDER BY id DESC LIMIT 5",
                      0, NULL, failures, err, errlen);
    if (rc == 0)
        rc = db_query(conn,
                      "SELECT name AS process, date_trunc('second', started_at) AS started_at, "
                      "extract(epoch FROM now() - seen_at)::int AS seen_s_ago, circuit, api, "
                      "in_flight FROM omnisync.process WHERE seen_at > now() - interval '1 minute' "
                      "ORDER BY name",
                      0, NULL, processes, err, errlen);
    if (rc != 0) {
        PQclear(*counts);
        PQclear(*failures);
        PQclear(*processes);
        *counts = *failures = *processes = NULL;
    }
    return rc;
}

/* ---- backfill's bookkeeping (backfill.c runs the batches) ---- */

int operator_backfill_begin(PGconn *conn, const char *source, int restart, char **last_key,
                            long long *enqueued, char *err, size_t errlen)
{
    PGresult *res = NULL;
    const char *params[] = {source, restart ? "t" : "f"};
    *last_key = NULL;
    *enqueued = 0;
    int rc = db_query(conn,
                      "INSERT INTO omnisync.backfill AS b (source) VALUES ($1) "
                      "ON CONFLICT (source) DO UPDATE SET "
                      " started_at = CASE WHEN b.finished_at IS NOT NULL OR $2::boolean "
                      "  THEN now() ELSE b.started_at END, "
                      " last_key = CASE WHEN b.finished_at IS NOT NULL OR $2::boolean "
                      "  THEN NULL ELSE b.last_key END, "
                      " rows_enqueued = CASE WHEN b.finished_at IS NOT NULL OR $2::boolean "
                      "  THEN 0 ELSE b.rows_enqueued END, "
                      " finished_at = NULL "
                      "RETURNING last_key, rows_enqueued",
                      2, params, &res, err, errlen);
    if (rc != 0)
        return rc;
    if (!PQgetisnull(res, 0, 0))
        *last_key = strdup(PQgetvalue(res, 0, 0));
    *enqueued = atoll(PQgetvalue(res, 0, 1));
    PQclear(res);
    const char *p2[] = {"backfill", source};
    return db_query(conn,
                    "INSERT INTO omnisync.operator_action (action, source, reason) "
                    "VALUES ($1, $2, 'backfill started or resumed')",
                    2, p2, NULL, err, errlen);
}

long long operator_backfill_pending(PGconn *conn, const char *source, char *err, size_t errlen)
{
    PGresult *res = NULL;
    const char *params[] = {source};
    if (db_query(conn,
                 "SELECT count(*) FROM omnisync.outbox WHERE status = 'pending' "
                 "AND op = 'backfill' AND source = $1",
                 1, params, &res, err, errlen) != 0)
        return -1;
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

int operator_backfill_progress(PGconn *conn, const char *source, const char *last_key,
                               long long added, char *err, size_t errlen)
{
    char count[24];
    snprintf(count, sizeof(count), "%lld", added);
    const char *params[] = {source, last_key, count};
    return db_query(conn,
                    "UPDATE omnisync.backfill SET last_key = $2, "
                    "rows_enqueued = rows_enqueued + $3::bigint WHERE source = $1",
                    3, params, NULL, err, errlen);
}

int operator_backfill_finished(PGconn *conn, const char *source, char *err, size_t errlen)
{
    const char *params[] = {source};
    return db_query(conn, "UPDATE omnisync.backfill SET finished_at = now() WHERE source = $1", 1,
                    params, NULL, err, errlen);
}

/* ---- backfill's and reconcile's statements on the outbox ---- */

int operator_backfill_sql(PGconn *conn, const struct config_source *src, char **sql, char *err,
                          size_t errlen)
{
    struct schema_source_rows rows;
    *sql = NULL;
    int rc = schema_source_rows(conn, src, &rows, err, errlen);
    if (rc != 0)
        return rc;
    char *source_lit = PQescapeLiteral(conn, src->name, strlen(src->name));
    if (source_lit == NULL ||
        asprintf(sql,
                 "WITH batch AS (%s), "
                 "enqueued AS ("
                 " INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, new_data)"
                 " SELECT %s, brand, coalesce(k::text, ''), 'backfill', data FROM batch ORDER BY k"
                 " RETURNING 1) "
                 "SELECT (SELECT count(*) FROM enqueued), (SELECT max(k)::text FROM batch)",
                 rows.page, source_lit) < 0) {
        *sql = NULL;
        rc = OMNISYNC_ENOMEM;
    }
    PQfreemem(source_lit);
    schema_source_rows_free(&rows);
    return rc;
}

int operator_reconcile_sql(PGconn *conn, const struct config_source *src, char **read,
                           char **repair, char *err, size_t errlen)
{
    struct schema_source_rows rows;
    *read = *repair = NULL;
    int rc = schema_source_rows(conn, src, &rows, err, errlen);
    if (rc != 0)
        return rc;
    char *source_lit = PQescapeLiteral(conn, src->name, strlen(src->name));
    /* One statement: the state enqueued is the row as it is now, in this transaction, and the
     * sync_state corrections apply only to the customers actually enqueued. */
    if (source_lit == NULL ||
        asprintf(
            repair,
            "WITH want AS ("
            " SELECT w.p, coalesce(w.reset, false) AS reset, coalesce(w.forget, '{}') AS forget"
            " FROM jsonb_to_recordset($1::jsonb) AS w(p text, reset boolean, forget text[])), "
            "listed AS (%s), "
            "fresh AS ("
            " SELECT l.k, l.data, l.brand, w.reset, w.forget"
            " FROM listed l JOIN want w ON w.p = l.p"
            " WHERE NOT EXISTS (SELECT 1 FROM omnisync.outbox o WHERE o.source = %s"
            "  AND o.brand_id = l.brand AND o.primary_id = l.k::text AND o.id > $2::bigint)"
            /* a change captured and not yet moved into the outbox (sql/003) is newer too, a
             * key of a multi-row DELETE's row (sql/007) or a customer of a multi-row UPDATE's
             * (sql/010) included */
            "  AND NOT EXISTS (SELECT 1 FROM omnisync.capture c WHERE c.source = %s"
            "  AND (c.brand_id = l.brand AND (c.primary_id = l.k::text"
            "  OR c.op = 'delete_many' AND l.k::text = ANY (c.old_values))"
            "  OR c.op = 'update_many' AND EXISTS (SELECT 1 FROM unnest(c.new_rows) r"
            "  WHERE r.primary_id = l.k::text AND r.brand_id = l.brand)))), "
            "corrected AS ("
            " UPDATE omnisync.sync_state s SET"
            "  created = CASE WHEN f.reset THEN false ELSE s.created END,"
            "  omnidesk_id = CASE WHEN f.reset THEN NULL ELSE s.omnidesk_id END,"
            "  channels = CASE WHEN f.reset THEN '{}'::text[] ELSE"
            "   ARRAY(SELECT c FROM unnest(s.channels) c WHERE c <> ALL (f.forget)) END,"
            "  updated_at = now()"
            " FROM fresh f WHERE s.source = %s AND s.brand_id = f.brand"
            "  AND s.primary_id = f.k::text RETURNING 1), "
            "enqueued AS ("
            " INSERT INTO omnisync.outbox (source, brand_id, primary_id, op, new_data)"
            " SELECT %s, brand, k::text, 'reconcile', data FROM fresh ORDER BY k"
            " RETURNING primary_id) "
            "SELECT primary_id, (SELECT count(*) FROM corrected) FROM enqueued",
            rows.keyed, source_lit, source_lit, source_lit, source_lit) < 0) {
        *repair = NULL;
        rc = OMNISYNC_ENOMEM;
    } else {
        *read = rows.read; /* the source alone: nothing of the outbox */
        rows.read = NULL;
    }
    PQfreemem(source_lit);
    schema_source_rows_free(&rows);
    return rc;
}

int operator_reconcile_repair(PGconn *conn, const char *sql, const struct operator_repair *items,
                              size_t n, const char *start_id, long long *enqueued, char *err,
                              size_t errlen)
{
    *enqueued = 0;
    struct json_object *list = json_object_new_array();
    if (list == NULL)
        return OMNISYNC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct json_object *w = json_object_new_object(), *forget = json_object_new_array();
        if (w == NULL || forget == NULL) {
            json_object_put(w);
            json_object_put(forget);
            json_object_put(list);
            return OMNISYNC_ENOMEM;
        }
        json_object_object_add(w, "p", json_object_new_string(items[i].primary_id));
        json_object_object_add(w, "reset", json_object_new_boolean(items[i].reset));
        for (int c = 0; c < 2; c++) {
            if (items[i].forget[c] != NULL)
                json_object_array_add(forget, json_object_new_string(items[i].forget[c]));
        }
        json_object_object_add(w, "forget", forget);
        json_object_array_add(list, w);
    }
    PGresult *res = NULL;
    const char *params[] = {json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN), start_id};
    int rc = begin(conn, err, errlen);
    if (rc == 0)
        rc = db_query(conn, sql, 2, params, &res, err, errlen);
    if (rc == 0)
        *enqueued = PQntuples(res);
    PQclear(res);
    rc = finish(conn, rc, err, errlen);
    if (rc != 0)
        *enqueued = 0;
    json_object_put(list);
    return rc;
}

int operator_outbox_last_id(PGconn *conn, char *out, size_t outlen, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int rc = db_query(conn, "SELECT coalesce(max(id), 0) FROM omnisync.outbox", 0, NULL, &res, err,
                      errlen);
    if (rc == 0)
        snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

int operator_open_customers(PGconn *conn, const char *source, PGresult **out, char *err,
                            size_t errlen)
{
    const char *params[] = {source};
    /* Changes still in omnisync.capture (sql/003) are open too: into the outbox first. */
    operator_move_captured(conn);
    /* One status per branch, so each is read from its partial index (outbox_pending,
     * outbox_failed) instead of a scan of every delivered row: 13 ms at 20,000 rows, and
     * growing with the outbox's history. UNION makes each customer appear once. */
    return db_query(conn,
                    "SELECT brand_id, primary_id FROM omnisync.outbox "
                    "WHERE source = $1 AND status = 'pending' "
                    "UNION SELECT brand_id, primary_id FROM omnisync.outbox "
                    "WHERE source = $1 AND status = 'held'",
                    1, params, out, err, errlen);
}

int operator_reconcile_record(PGconn *conn, const char *source, const char *figures, char *err,
                              size_t errlen)
{
    const char *params[] = {source, figures};
    return db_query(conn,
                    "INSERT INTO omnisync.operator_action (action, source, reason) "
                    "VALUES ('reconcile', $1, $2)",
                    2, params, NULL, err, errlen);
}

int operator_reconcile_last_runs(PGconn *conn, PGresult **out, char *err, size_t errlen)
{
    return db_query(conn,
                    "SELECT DISTINCT ON (source) source, at AS finished_at, db_user, reason AS "
                    "figures FROM omnisync.operator_action WHERE action = 'reconcile' "
                    "ORDER BY source, at DESC",
                    0, NULL, out, err, errlen);
}
