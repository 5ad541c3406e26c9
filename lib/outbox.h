/*
 * outbox: what operators do to the outbox and the pause flags (DESIGN §4, §5).
 *
 * Every action runs in one transaction, is recorded in omnisync.operator_action with the
 * database user, the time and the reason, and rings the doorbell (NOTIFY omnisync) so running
 * daemons act on it at once. Results are handed out as PGresult for the CLI to print; the caller
 * PQclear()s them.
 */
#ifndef OMNISYNC_OUTBOX_H
#define OMNISYNC_OUTBOX_H

#include <libpq-fe.h>
#include <stddef.h>

#include "errors.h"

/* Sets (paused = 1) or clears the pause flag of `source`, or of every source when NULL. */
int outbox_set_paused(PGconn *conn, const char *source, int paused, const char *reason,
                      char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* The pause flags in force: scope, paused, changed_by, changed_at, reason. */
int outbox_pause_flags(PGconn *conn, PGresult **out, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* Held purges: id, source, primary_id, created_at, held_reason, oldest first. */
int outbox_held_purges(PGconn *conn, PGresult **out, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * Moves held rows back to pending (release) or to skipped (skip), ids[0..n) or every held row
 * when all is set. Ids that are not held are reported in *not_held (a malloc'd, comma-separated
 * list, or NULL) and nothing is changed then. *changed receives the number of rows moved.
 */
int outbox_release_purges(PGconn *conn, const long long *ids, size_t n, int all, int skip,
                          const char *reason, long long *changed, char **not_held, char *err,
                          size_t errlen) OMNISYNC_MUST_CHECK;

#endif
