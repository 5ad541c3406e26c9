/*
 * outbox: operator actions. See outbox.h. Never deletes a row and never touches a row a daemon
 * holds in flight (pending rows are not operator business here; held rows are never leased).
 */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

static int begin(PGconn *conn, char *err, size_t errlen)
{
    return db_exec(conn, "BEGIN", err, errlen);
}

static int finish(PGconn *conn, int rc, char *err, size_t errlen)
{
    char ignored[128];
    if (rc == 0)
        return db_exec(conn, "SELECT pg_notify('omnisync', ''); COMMIT", err, errlen);
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
