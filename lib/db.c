/* db: blocking helpers; see db.h. */
#include "db.h"

#include <stdio.h>
#include <string.h>

#include "textcut.h"

int db_schema_missing(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *dbname = conn ? PQdb(conn) : NULL;

    if (sqlstate == NULL || errlen == 0)
        return 0;
    /* 3F000 invalid_schema_name; 42P01 undefined_table and 42883 undefined_function only when
     * they name one of ours (a CRM table missing is another problem with its own words). */
    if (strcmp(sqlstate, "3F000") != 0 &&
        ((strcmp(sqlstate, "42P01") != 0 && strcmp(sqlstate, "42883") != 0) || primary == NULL ||
         strstr(primary, "omnisync") == NULL))
        return 0;
    /* A database name is the operator's own config, never personal data; cut, not escaped. */
    snprintf(err, errlen,
             "the omnisync schema is missing in database \"%.63s\": run omnisync migrate",
             dbname != NULL && *dbname != '\0' ? dbname : "?");
    return 1;
}

void db_error_message(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    if (errlen == 0)
        return;
    if (db_schema_missing(conn, res, err, errlen))
        return;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (primary == NULL) {
        primary = res ? PQresultErrorMessage(res) : NULL;
        if (primary == NULL || *primary == '\0')
            primary = conn ? PQerrorMessage(conn) : "no connection";
    }
    if (detail != NULL)
        textcut_printf(err, errlen, "%s (%s)", primary, detail);
    else
        textcut_printf(err, errlen, "%s", primary);
    /* libpq messages end in a newline and may hold several lines: keep one line. */
    for (char *p = err; *p; p++) {
        if (*p == '\n') {
            if (p[1] == '\0')
                *p = '\0';
            else
                *p = ' ';
        }
    }
}

PGconn *db_connect(const char *conninfo, const char *application_name, char *err, size_t errlen)
{
    const char *keywords[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *values[] = {conninfo, application_name, "10", NULL};
    /* expand_dbname=1: dbname may itself be a full conninfo or URI, which then wins over the
     * other pairs; application_name and the timeout fill in what it leaves unset. */
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        db_error_message(conn, NULL, err, errlen);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

int db_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        db_error_message(conn, res, err, errlen);
        PQclear(res);
        return OMNISYNC_EDB;
    }
    PQclear(res);
    return OMNISYNC_OK;
}

int db_query(PGconn *conn, const char *sql, int nparams, const char *const *params, PGresult **out,
             char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        db_error_message(conn, res, err, errlen);
        PQclear(res);
        return OMNISYNC_EDB;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return OMNISYNC_OK;
}

int db_quote_qualified(PGconn *conn, const char *name, char *out, size_t outlen)
{
    const char *dot = strchr(name, '.');
    char *first = NULL, *second = NULL;
    int rc = OMNISYNC_ENOMEM;
    if (dot != NULL) {
        first = PQescapeIdentifier(conn, name, (size_t)(dot - name));
        second = PQescapeIdentifier(conn, dot + 1, strlen(dot + 1));
        if (first == NULL || second == NULL)
            goto fail;
        rc = (size_t)snprintf(out, outlen, "%s.%s", first, second) < outlen ? OMNISYNC_OK
                                                                             : OMNISYNC_ETOOBIG;
    } else {
        first = PQescapeIdentifier(conn, name, strlen(name));
        if (first == NULL)
            goto fail;
        rc = (size_t)snprintf(out, outlen, "%s", first) < outlen ? OMNISYNC_OK : OMNISYNC_ETOOBIG;
    }
fail:
    PQfreemem(first);
    PQfreemem(second);
    return rc;
}
