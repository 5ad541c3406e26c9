/*
 * schema: `omnisync migrate`: the omnisync schema and the capture triggers of each source.
 *
 * Everything happens in one transaction under an advisory lock, so concurrent runs serialize
 * and a failed run leaves the database as it was. Names from the config are checked against the
 * catalog and quoted; nothing from the config is pasted into SQL unquoted. A second run with the
 * same config changes nothing: the generated trigger definition is stored and compared.
 */
#ifndef OMNISYNC_SCHEMA_H
#define OMNISYNC_SCHEMA_H

#include <libpq-fe.h>
#include <stddef.h>

#include "config.h"
#include "errors.h"

/* Called once per change made (or, with changed = 0, per thing found up to date). */
typedef void (*schema_report_cb)(void *arg, int changed, const char *what);

/*
 * Creates or upgrades the schema and (re)installs the triggers of cfg's sources; drops those of
 * sources no longer configured. Returns 0, or a negative code with the reason in err (naming
 * the source and column at fault); on failure nothing was changed.
 */
int schema_migrate(PGconn *conn, const struct config *cfg, schema_report_cb report, void *arg,
                   char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * The source side of backfill and reconcile: SELECTs over src's table that map its rows as the
 * trigger does (names checked against the catalog and quoted, the key cast to its catalog type).
 * page and keyed yield k (the primary id in its own type), data (the mapped columns, jsonb) and
 * brand (the outbox's brand key, bigint); operator.c composes them with the statements on the
 * outbox and sync_state, which this module does not write.
 *  - page: the next keyset page in key order: $1 the last key done (text, NULL to start), $2
 *    the page size.
 *  - keyed: the rows of the listed keys, with p (the key as listed) first: $1 a jsonb array of
 *    objects with "p", a primary id as text (other members are ignored).
 *  - read: reconcile's page read, as page but as text: (key text, mapped columns as jsonb text,
 *    brand bigint).
 * 0 with the three malloc'd (schema_source_rows_free), or a negative code with err set.
 */
struct schema_source_rows {
    char *page;
    char *keyed;
    char *read;
};
int schema_source_rows(PGconn *conn, const struct config_source *src,
                       struct schema_source_rows *rows, char *err,
                       size_t errlen) OMNISYNC_MUST_CHECK;
void schema_source_rows_free(struct schema_source_rows *rows);

/* The highest applied schema version, 0 when omnisync's schema is absent, or a negative code. */
int schema_version(PGconn *conn, char *err, size_t errlen);

/* The newest version this build knows. */
int schema_latest_version(void);

/*
 * The daemon's guard against an old schema: a statement for the setup of a connection that fails
 * with "the omnisync schema is at version N, this omnisync needs M: run omnisync migrate" when
 * the applied schema (N, 0 when absent) is older than this build's (M). Written into `out`;
 * 0, or OMNISYNC_ETOOBIG when it does not fit.
 */
int schema_guard_sql(char *out, size_t len) OMNISYNC_MUST_CHECK;

/* The SQLSTATE the guard raises (object_not_in_prerequisite_state). */
#define SCHEMA_GUARD_SQLSTATE "55000"

/*
 * Is a failed setup the guard's refusal? `sqlstate` (the setup's SQLSTATE, dbloop_sqlstate()
 * during on_state; may be NULL) must be SCHEMA_GUARD_SQLSTATE, and `message` (its reason, may be
 * NULL) carries the applied version: 1 with it in *applied, else 0. The message comes from the
 * server, so only the number is taken.
 */
int schema_guard_refused(const char *sqlstate, const char *message, int *applied);

#endif
