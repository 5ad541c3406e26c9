/*
 * recorder: batched outcome writes. See recorder.h.
 *
 * It writes on a connection of its own (the service's second dbloop): a batch of outcomes can
 * take tens of milliseconds, and on a shared connection every claim queued behind it while the
 * request slots ran dry.
 */
#include "recorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define RECORDER_MAX_FAILURES 5

static void start_write(struct recorder *r);


int recorder_init(struct recorder *r, struct dbloop *db, const char *process, recorder_cb cb,
                  void *data)
{
    memset(r, 0, sizeof(*r));
    r->db = db;
    snprintf(r->process, sizeof(r->process), "%s", process);
    r->on_recorded = cb;
    r->data = data;
    r->pending = json_object_new_array();
    return r->pending ? OMNISYNC_OK : OMNISYNC_ENOMEM;
}

void recorder_free(struct recorder *r)
{
    if (recorder_backlog(r) > 0)
        log_warn("exiting with outcomes not recorded; their rows are delivered again once their "
                 "lease expires outcomes=%zu",
                 recorder_backlog(r));
    json_object_put(r->pending);
    json_object_put(r->writing);
    r->pending = r->writing = NULL;
}

int recorder_idle(const struct recorder *r)
{
    return r->writing == NULL && json_object_array_length(r->pending) == 0;
}

size_t recorder_backlog(const struct recorder *r)
{
    size_t n = json_object_array_length(r->pending);
    if (r->writing != NULL)
        n += json_object_array_length(r->writing);
    return n;
}

void recorder_add(struct recorder *r, struct json_object *outcomes)
{
    size_t n = json_object_array_length(outcomes);
    for (size_t i = 0; i < n; i++)
        json_object_array_add(r->pending, json_object_get(json_object_array_get_idx(outcomes, i)));
    json_object_array_del_idx(outcomes, 0, n);
    if (r->writing == NULL)
        start_write(r);
}

/* Puts the batch being written back in front of what queued up meanwhile. */
static void requeue(struct recorder *r)
{
    size_t n = json_object_array_length(r->pending);
    for (size_t i = 0; i < n; i++)
        json_object_array_add(r->writing, json_object_get(json_object_array_get_idx(r->pending, i)));
    json_object_put(r->pending);
    r->pending = r->writing;
    r->writing = NULL;
}

static void on_released(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    (void)db;
    (void)arg;
    if (res == NULL && strcmp(err, "closing") != 0)
        log_error("cannot mark the rows of a dropped outcome batch; they stay leased until the "
                  "process restarts error=\"%s\"",
                  err);
}

/*
 * The rows of a dropped batch must not stay leased to this process: lease renewal would keep
 * them so for as long as it runs. Their lease holder is renamed instead ("<process> (outcome not
 * recorded)"): renewal no longer touches them, the lease runs out, and the claim that takes them
 * again sees a previous holder, so the delivery looks the customer up before it sends anything
 * (an outcome was lost, the API may have applied it). Operators see the name in outbox show.
 * The ids are taken out here rather than by SQL from the batch's JSON: that JSON may be what
 * PostgreSQL refused (jsonb rejects \u0000, for one).
 */
static void release_dropped(struct recorder *r, struct json_object *batch)
{
    size_t cap = 64, len = 0;
    char *ids = malloc(cap);
    if (ids == NULL)
        goto nomem;
    ids[len++] = '{';
    for (size_t i = 0; i < json_object_array_length(batch); i++) {
        struct json_object *rows;
        if (!json_object_object_get_ex(json_object_array_get_idx(batch, i), "rows", &rows))
            continue;
        for (size_t j = 0; j < json_object_array_length(rows); j++) {
            if (cap - len < 24) {
                char *more = realloc(ids, cap * 2);
                if (more == NULL)
                    goto nomem;
                ids = more;
                cap *= 2;
            }
            len += (size_t)snprintf(ids + len, cap - len, "%s%lld", len > 1 ? "," : "",
                                    (long long)json_object_get_int64(
                                        json_object_array_get_idx(rows, j)));
        }
    }
    ids[len++] = '}';
    ids[len] = '\0';
    const char *params[] = {ids, r->process};
    if (dbloop_query(r->db,
                     "UPDATE omnisync.outbox SET locked_by = $2 || ' (outcome not recorded)' "
                     "WHERE id = ANY ($1::bigint[]) AND locked_by = $2 AND status = 'pending'",
                     2, params, DBLOOP_RETRY_ON_RECONNECT, on_released, r) != 0)
        on_released(r->db, NULL, "cannot queue the statement", r);
    free(ids);
    return;
nomem:
    free(ids);
    on_released(r->db, NULL, "out of memory", r);
}

static void written(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct recorder *r = arg;
    (void)db;
    if (r->pending == NULL)
        return; /* recorder_free ran first: the service is exiting and closed the connection */
    size_t n = json_object_array_length(r->writing);
    if (res == NULL) {
        int lost = strcmp(err, "connection lost") == 0 || strcmp(err, "not connected") == 0;
        if (strcmp(err, "closing") == 0) {
            requeue(r);
            return;
        }
        if (!lost && ++r->failures >= RECORDER_MAX_FAILURES) {
            /* The same batch failed again and again: an error in it, not in the database.
             * Dropping it costs a redelivery when the leases expire, never a loss. */
            log_error("cannot record outcomes; dropping the batch, its rows will be delivered "
                      "again after their lease error=\"%s\" outcomes=%zu",
                      err, n);
            release_dropped(r, r->writing);
            json_object_put(r->writing);
            r->writing = NULL;
            r->failures = 0;
            if (r->on_recorded != NULL)
                r->on_recorded(r, n, 1);
        } else {
            log_warn("recording outcomes failed; trying again error=\"%s\" outcomes=%zu", err, n);
            requeue(r);
        }
    } else {
        r->failures = 0;
        json_object_put(r->writing);
        r->writing = NULL;
        if (r->on_recorded != NULL)
            r->on_recorded(r, n, 0);
    }
    if (r->writing == NULL && json_object_array_length(r->pending) > 0)
        start_write(r);
}

void recorder_flush(struct recorder *r)
{
    if (r->writing == NULL)
        start_write(r);
}

static void start_write(struct recorder *r)
{
    if (json_object_array_length(r->pending) == 0)
        return;
    r->writing = r->pending;
    r->pending = json_object_new_array();
    const char *params[] = {r->process,
                            json_object_to_json_string_ext(r->writing, JSON_C_TO_STRING_PLAIN)};
    int rc = dbloop_query(r->db, "SELECT omnisync.record_outcomes($1, $2::jsonb)", 2, params,
                          DBLOOP_RETRY_ON_RECONNECT, written, r);
    if (rc != 0) {
        log_error("cannot queue the outcome write error=\"%s\"", omnisync_strerror(rc));
        requeue(r);
    }
}
