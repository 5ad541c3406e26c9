/*
 * db: blocking PostgreSQL helpers for the CLI commands (migrate, status, replay, ...).
 *
 * The daemon's loop uses non-blocking connections of its own (listener, dispatcher); this module
 * is for short commands where blocking is what the operator wants. Errors are copied into a
 * caller buffer as the server's primary message; a conninfo is never part of a message.
 */
#ifndef OMNISYNC_DB_H
#define OMNISYNC_DB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "errors.h"

/* Connects with application_name set; NULL on failure with the reason in err. */
PGconn *db_connect(const char *conninfo, const char *application_name, char *err, size_t errlen);

/* Runs a command (no parameters, may hold several statements): 0 or OMNISYNC_EDB with err set. */
int db_exec(PGconn *conn, const char *sql, char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/*
 * Runs a parameterised statement. On success returns 0 and hands the result to *out (when out is
 * not NULL; the caller PQclear()s it). On failure returns OMNISYNC_EDB with err set.
 */
int db_query(PGconn *conn, const char *sql, int nparams, const char *const *params, PGresult **out,
             char *err, size_t errlen) OMNISYNC_MUST_CHECK;

/* Copies the primary message (and the detail, if any) of a failed result or connection. */
void db_error_message(PGconn *conn, const PGresult *res, char *err, size_t errlen);

/*
 * When `res` failed because the omnisync schema, or one of its tables or functions, does not
 * exist (SQLSTATE 3F000, or 42P01 / 42883 naming omnisync), writes "the omnisync schema is
 * missing in database X: run omnisync migrate" into err and returns 1; else 0, err untouched.
 * `conn` (may be NULL) names the database.
 */
int db_schema_missing(PGconn *conn, const PGresult *res, char *err, size_t errlen);

/* Writes `name` quoted as an identifier ("schema"."table" when it holds a dot) into out:
 * 0, or OMNISYNC_ETOOBIG / OMNISYNC_ENOMEM. */
int db_quote_qualified(PGconn *conn, const char *name, char *out, size_t outlen) OMNISYNC_MUST_CHECK;

#endif
