/* backfill: see backfill.h. */
#include "backfill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "operator.h"

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

    int rc = operator_backfill_sql(conn, src, &sql, err, errlen);
    if (rc == 0)
        rc = operator_backfill_begin(conn, src->name, o->restart, &last_key, enqueued, err, errlen);
    while (rc == 0) {
        if (o->stop != NULL && *o->stop) {
            rc = OMNISYNC_ECANCELED;
            break;
        }
        if (window > 0) {
            long long pending = operator_backfill_pending(conn, src->name, err, errlen);
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
            rc = operator_backfill_progress(conn, src->name, last_key, n, err, errlen);
        }
        if (rc == 0 && n < batch) {
            rc = operator_backfill_finished(conn, src->name, err, errlen);
        }
        PQclear(res);
        if (rc == 0)
            rc = operator_commit(conn, err, errlen);
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
