/* backfill: see backfill.h. */
#include "backfill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "schema.h"

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads where an unfinished backfill stopped; starts a new one otherwise. */
static int begin_run(PGconn *conn, const char *source, int restart, char **last_key,
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

static long long pending_rows(PGconn *conn, const char *source, char *err, size_t errlen)
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

int backfill_run(PGconn *conn, const struct config_source *src, const struct backfill_options *o,
                 long long *enqueued, char *err, size_t errlen)
{
    char *sql = NULL, *last_key = NULL;
    long long batch = o->batch > 0 ? o->batch : 1000;
    /* window: 0 means the default (one batch), negative means no limit. A live change waits
     * behind at most this many rows: about a second at the drain rates of bench/drain. */
    long long window = o->window < 0 ? 0 : o->window ? o->window : batch;
    char batch_text[24];
    snprintf(batch_text, sizeof(batch_text), "%lld", batch);

    int rc = schema_backfill_sql(conn, src, &sql, err, errlen);
    if (rc == 0)
        rc = begin_run(conn, src->name, o->restart, &last_key, enqueued, err, errlen);
    while (rc == 0) {
        if (o->stop != NULL && *o->stop) {
            rc = OMNISYNC_ECANCELED;
            break;
        }
        if (window > 0) {
            long long pending = pending_rows(conn, src->name, err, errlen);
            if (pending < 0) {
                rc = OMNISYNC_EDB;
                break;
            }
            if (pending >= window) {
                if (o->progress)
                    o->progress(o->arg, *enqueued, pending, 1);
                nap(50);
                continue;
            }
        }
        /* One batch, one transaction: its rows and its progress commit together. */
        PGresult *res = NULL;
        const char *params[] = {last_key, batch_text};
        rc = db_exec(conn, "BEGIN", err, errlen);
        if (rc == 0)
            rc = db_query(conn, sql, 2, params, &res, err, errlen);
        long long n = rc == 0 ? atoll(PQgetvalue(res, 0, 0)) : 0;
        if (rc == 0 && n > 0) {
            char *next = strdup(PQgetvalue(res, 0, 1));
            free(last_key);
            last_key = next;
            char count[24];
            snprintf(count, sizeof(count), "%lld", n);
            const char *p2[] = {src->name, last_key, count};
            rc = db_query(conn,
                          "UPDATE omnisync.backfill SET last_key = $2, "
                          "rows_enqueued = rows_enqueued + $3::bigint WHERE source = $1",
                          3, p2, NULL, err, errlen);
        }
        if (rc == 0 && n < batch) {
            const char *p3[] = {src->name};
            rc = db_query(conn, "UPDATE omnisync.backfill SET finished_at = now() WHERE source = $1",
                          1, p3, NULL, err, errlen);
        }
        PQclear(res);
        if (rc == 0)
            rc = db_exec(conn, "SELECT pg_notify('omnisync', ''); COMMIT", err, errlen);
        if (rc != 0) {
            char ignored[128];
            if (db_exec(conn, "ROLLBACK", ignored, sizeof(ignored)) != 0) {
                /* the connection is gone; the server rolled back */
            }
            break;
        }
        *enqueued += n;
        if (o->progress)
            o->progress(o->arg, *enqueued, -1, 0);
        if (n < batch)
            break; /* done */
    }
    free(sql);
    free(last_key);
    return rc;
}
