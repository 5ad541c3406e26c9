/*
 * schema: migrations and capture triggers.
 *
 * Owns the DDL of omnisync. It must never change the database partly: every statement runs in
 * the transaction opened by schema_migrate, which rolls back on the first error.
 */
#include "schema.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "sql.h"

#define QNAME_MAX 300
#define MAPPED_MAX (8 + CONFIG_MAX_CUSTOM)

/* A growable string for generated SQL; sizes come from the config, which is bounded. */
struct sbuf {
    char *text;
    size_t len;
    size_t cap;
    int failed;
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *text = realloc(b->text, cap);
        if (text == NULL) {
            b->failed = 1;
            return;
        }
        b->text = text;
        b->cap = cap;
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = '\0';
}

static void sbuf_str(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

struct slot {
    const char *name;
    const char *value;
};

/* Fills ${name} slots of `template`; an unknown slot is a broken build, reported as EINVAL. */
static int expand(const char *template, const struct slot *slots, size_t nslots, struct sbuf *out)
{
    const char *p = template;
    while (*p) {
        const char *open = strstr(p, "${");
        if (open == NULL) {
            sbuf_str(out, p);
            break;
        }
        sbuf_add(out, p, (size_t)(open - p));
        const char *close = strchr(open, '}');
        if (close == NULL)
            return OMNISYNC_EINVAL;
        size_t n = (size_t)(close - open - 2);
        size_t i;
        for (i = 0; i < nslots; i++) {
            if (strlen(slots[i].name) == n && strncmp(slots[i].name, open + 2, n) == 0)
                break;
        }
        if (i == nslots)
            return OMNISYNC_EINVAL;
        sbuf_str(out, slots[i].value);
        p = close + 1;
    }
    return out->failed ? OMNISYNC_ENOMEM : OMNISYNC_OK;
}

int schema_latest_version(void)
{
    int latest = 0;
    for (const struct sql_file *f = sql_files; f->name != NULL; f++) {
        if (isdigit((unsigned char)f->name[0]) && atoi(f->name) > latest)
            latest = atoi(f->name);
    }
    return latest;
}

int schema_version(PGconn *conn, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int rc = db_query(conn,
                      "SELECT CASE WHEN to_regclass('omnisync.schema_version') IS NULL THEN 0 "
                      "ELSE (SELECT coalesce(max(version), 0) FROM omnisync.schema_version) END",
                      0, NULL, &res, err, errlen);
    if (rc != 0)
        return rc;
    int version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return version;
}

#define GUARD_MESSAGE "the omnisync schema is at version "

int schema_guard_sql(char *out, size_t len)
{
    /* PL/pgSQL plans a statement only when it runs: the SELECT is never planned without the
     * table. The error class says a prerequisite is missing, not that the query is wrong. */
    int n = snprintf(out, len,
                     "DO $omnisync_guard$ DECLARE applied integer := 0; BEGIN "
                     "IF to_regclass('omnisync.schema_version') IS NOT NULL THEN "
                     "SELECT coalesce(max(version), 0) INTO applied FROM omnisync.schema_version; "
                     "END IF; "
                     "IF applied < %d THEN RAISE EXCEPTION '" GUARD_MESSAGE
                     "%%, this omnisync needs %d: run omnisync migrate', applied "
                     "USING ERRCODE = '" SCHEMA_GUARD_SQLSTATE "'; END IF; "
                     "END $omnisync_guard$;",
                     schema_latest_version(), schema_latest_version());
    return n < 0 || (size_t)n >= len ? OMNISYNC_ETOOBIG : OMNISYNC_OK;
}

int schema_guard_refused(const char *sqlstate, const char *message, int *applied)
{
    if (sqlstate == NULL || strcmp(sqlstate, SCHEMA_GUARD_SQLSTATE) != 0)
        return 0;
    const char *at = message != NULL ? strstr(message, GUARD_MESSAGE) : NULL;
    int version, end = 0;
    if (at == NULL)
        return 0;
    if (sscanf(at + strlen(GUARD_MESSAGE), "%d, this omnisync needs %*d%n", &version, &end) != 1 ||
        end == 0)
        return 0;
    *applied = version;
    return 1;
}

static int apply_migrations(PGconn *conn, schema_report_cb report, void *arg, char *err,
                            size_t errlen)
{
    int rc = db_exec(conn,
                     "CREATE SCHEMA IF NOT EXISTS omnisync;"
                     "CREATE TABLE IF NOT EXISTS omnisync.schema_version ("
                     " version integer PRIMARY KEY,"
                     " name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     err, errlen);
    if (rc != 0)
        return rc;
    int current = schema_version(conn, err, errlen);
    if (current < 0)
        return current;
    if (current > schema_latest_version()) {
        snprintf(err, errlen,
                 "the database has schema version %d but this omnisync knows only up to %d; "
                 "upgrade omnisync",
                 current, schema_latest_version());
        return OMNISYNC_EINVAL;
    }
    for (const struct sql_file *f = sql_files; f->name != NULL; f++) {
        if (!isdigit((unsigned char)f->name[0]) || atoi(f->name) <= current)
            continue;
        char sub[200];
        if (db_exec(conn, f->text, sub, sizeof(sub)) != 0) {
            snprintf(err, errlen, "sql/%s: %s", f->name, sub);
            return OMNISYNC_EDB;
        }
        char version[16];
        snprintf(version, sizeof(version), "%d", atoi(f->name));
        const char *params[] = {version, f->name};
        rc = db_query(conn, "INSERT INTO omnisync.schema_version (version, name) VALUES ($1, $2)",
                      2, params, NULL, err, errlen);
        if (rc != 0)
            return rc;
        char what[300];
        snprintf(what, sizeof(what), "applied sql/%s", f->name);
        report(arg, 1, what);
    }
    if (current == schema_latest_version()) {
        char what[100];
        snprintf(what, sizeof(what), "schema version %d is current", current);
        report(arg, 0, what);
    }
    return OMNISYNC_OK;
}

/*
 * The triggers of a source: the four of sql/trigger_template.sql, then those of earlier versions
 * that a migrate must drop ("insdel": the row trigger of schema versions 1 and 2).
 */
#define NTRIGGERS 5

/* The generated SQL of one source and what it needs to be dropped again. */
struct source_sql {
    char table[QNAME_MAX]; /* resolved "schema"."table" */
    char pk[QNAME_MAX];    /* the primary id column, quoted */
    char pk_type[128];     /* its type, from the catalog */
    char brand_row[QNAME_MAX + 64]; /* the brand of a table row t, as SQL */
    struct sbuf row_pairs; /* jsonb_build_object arguments for a table row t (backfill) */
    char function[128];    /* quoted function name, without schema */
    char triggers[NTRIGGERS][128]; /* quoted trigger names */
    struct sbuf ddl;
};

static void trigger_names(PGconn *conn, const char *source, char function[128],
                          char triggers[NTRIGGERS][128])
{
    static const char *const suffixes[NTRIGGERS] = {"insert", "update", "delete", "truncate",
                                                    "insdel"};
    char raw[128];
    snprintf(raw, sizeof(raw), "capture_%s", source);
    char *q = PQescapeIdentifier(conn, raw, strlen(raw));
    snprintf(function, 128, "%s", q ? q : "");
    PQfreemem(q);
    for (int i = 0; i < NTRIGGERS; i++) {
        snprintf(raw, sizeof(raw), "omnisync_%s_%s", source, suffixes[i]);
        q = PQescapeIdentifier(conn, raw, strlen(raw));
        snprintf(triggers[i], 128, "%s", q ? q : "");
        PQfreemem(q);
    }
}

/* Looks `name` up in the catalog: writes its schema-qualified quoted name, or fails naming it. */
static int resolve_table(PGconn *conn, const struct config_source *src, char *qualified,
                         char *oid, size_t oidlen, char *err, size_t errlen)
{
    char quoted[QNAME_MAX];
    if (db_quote_qualified(conn, src->table, quoted, sizeof(quoted)) != 0) {
        snprintf(err, errlen, "[source %s] table: name too long", src->name);
        return OMNISYNC_EINVAL;
    }
    const char *params[] = {quoted};
    PGresult *res = NULL;
    int rc = db_query(conn,
                      "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
                      "c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE c.oid = to_regclass($1)",
                      1, params, &res, err, errlen);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 0) {
        snprintf(err, errlen, "[source %s] table: table %s does not exist", src->name, src->table);
        PQclear(res);
        return OMNISYNC_ENOTFOUND;
    }
    const char *kind = PQgetvalue(res, 0, 2);
    if (strcmp(kind, "r") != 0 && strcmp(kind, "p") != 0) {
        snprintf(err, errlen, "[source %s] table: %s is not a table", src->name, src->table);
        PQclear(res);
        return OMNISYNC_EINVAL;
    }
    snprintf(oid, oidlen, "%s", PQgetvalue(res, 0, 0));
    snprintf(qualified, QNAME_MAX, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    return OMNISYNC_OK;
}

static const char *column_type(PGresult *cols, const char *column)
{
    for (int i = 0; i < PQntuples(cols); i++) {
        if (strcmp(PQgetvalue(cols, i, 0), column) == 0)
            return PQgetvalue(cols, i, 1);
    }
    return NULL;
}

/*
 * Builds `key', n."col", ... for jsonb_build_object over the new rows n (o: the old rows), and
 * the filter on mapped columns of the update trigger's SELECT.
 */
static int build_source_sql(PGconn *conn, const struct config_source *src, struct source_sql *out,
                            char *err, size_t errlen)
{
    int rc;
    char oid[32];
    PGresult *cols = NULL;
    struct sbuf old_pairs = {0}, new_pairs = {0}, changed = {0}, keys = {0}, old_values = {0},
                new_values = {0};
    char *source_lit = NULL, *pk = NULL;
    char brand_new[QNAME_MAX + 64], brand_old[QNAME_MAX + 64];

    rc = resolve_table(conn, src, out->table, oid, sizeof(oid), err, errlen);
    if (rc != 0)
        goto fail;
    const char *params[] = {oid};
    rc = db_query(conn,
                  "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                  "WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped",
                  1, params, &cols, err, errlen);
    if (rc != 0)
        goto fail;

    const char *columns[MAPPED_MAX], *fields[MAPPED_MAX];
    size_t n = config_source_columns(src, columns, fields, MAPPED_MAX);
    for (size_t i = 0; i < n; i++) {
        const char *type = column_type(cols, columns[i]);
        if (type == NULL) {
            snprintf(err, errlen, "[source %s] %s: column \"%s\" does not exist in %s", src->name,
                     strcmp(fields[i], "erase") == 0      ? "erase_flag"
                     : strcmp(fields[i], "brand_id") == 0 ? "brand_id_column"
                     : strncmp(fields[i], "custom_", 7) == 0 ? "custom field"
                                                              : fields[i],
                     columns[i], src->table);
            rc = OMNISYNC_ENOTFOUND;
            goto fail;
        }
        if (strcmp(fields[i], "erase") == 0 && strcmp(type, "boolean") != 0) {
            snprintf(err, errlen, "[source %s] erase_flag: column \"%s\" is %s, not boolean",
                     src->name, columns[i], type);
            rc = OMNISYNC_EINVAL;
            goto fail;
        }
        if (strcmp(fields[i], "brand_id") == 0 && strcmp(type, "integer") != 0 &&
            strcmp(type, "bigint") != 0 && strcmp(type, "smallint") != 0) {
            snprintf(err, errlen,
                     "[source %s] brand_id_column: column \"%s\" is %s, not an integer type",
                     src->name, columns[i], type);
            rc = OMNISYNC_EINVAL;
            goto fail;
        }
        char *col = PQescapeIdentifier(conn, columns[i], strlen(columns[i]));
        char *key = PQescapeLiteral(conn, fields[i], strlen(fields[i]));
        if (col == NULL || key == NULL) {
            PQfreemem(col);
            PQfreemem(key);
            rc = OMNISYNC_ENOMEM;
            goto fail;
        }
        const char *sep = i ? ", " : "";
        sbuf_str(&old_pairs, sep);
        sbuf_str(&old_pairs, key);
        sbuf_str(&old_pairs, ", o.");
        sbuf_str(&old_pairs, col);
        sbuf_str(&new_pairs, sep);
        sbuf_str(&new_pairs, key);
        sbuf_str(&new_pairs, ", n.");
        sbuf_str(&new_pairs, col);
        /* The capture's text[] payload (sql/trigger_template.sql): text as it is, any other
         * type as its jsonb payload read it. */
        int is_text = strcmp(type, "text") == 0 || strncmp(type, "character", 9) == 0;
        sbuf_str(&keys, i ? ", " : "ARRAY[");
        sbuf_str(&keys, key);
        sbuf_str(&old_values, sep);
        sbuf_str(&old_values, is_text ? "(o." : "to_jsonb(o.");
        sbuf_str(&old_values, col);
        sbuf_str(&old_values, is_text ? ")::text" : ") #>> '{}'");
        sbuf_str(&new_values, sep);
        sbuf_str(&new_values, is_text ? "(n." : "to_jsonb(n.");
        sbuf_str(&new_values, col);
        sbuf_str(&new_values, is_text ? ")::text" : ") #>> '{}'");
        sbuf_str(&out->row_pairs, sep);
        sbuf_str(&out->row_pairs, key);
        sbuf_str(&out->row_pairs, ", t.");
        sbuf_str(&out->row_pairs, col);
        sbuf_str(&changed, i ? " OR o." : "o.");
        sbuf_str(&changed, col);
        sbuf_str(&changed, " IS DISTINCT FROM n.");
        sbuf_str(&changed, col);
        if (strcmp(fields[i], "primary_id") == 0) {
            pk = strdup(col);
            snprintf(out->pk, sizeof(out->pk), "%s", col);
            snprintf(out->pk_type, sizeof(out->pk_type), "%s", type);
        }
        if (strcmp(fields[i], "brand_id") == 0) {
            snprintf(brand_new, sizeof(brand_new), "coalesce((n.%s)::bigint, 0)", col);
            snprintf(brand_old, sizeof(brand_old), "coalesce((o.%s)::bigint, 0)", col);
            snprintf(out->brand_row, sizeof(out->brand_row), "coalesce((t.%s)::bigint, 0)", col);
        }
        PQfreemem(col);
        PQfreemem(key);
    }
    if (src->brand_id_column == NULL) {
        snprintf(brand_new, sizeof(brand_new), "0");
        snprintf(brand_old, sizeof(brand_old), "0");
        snprintf(out->brand_row, sizeof(out->brand_row), "0");
    }
    sbuf_str(&keys, "]::text[]");
    source_lit = PQescapeLiteral(conn, src->name, strlen(src->name));
    if (pk == NULL || source_lit == NULL || old_pairs.failed || new_pairs.failed ||
        changed.failed || keys.failed || old_values.failed || new_values.failed) {
        rc = OMNISYNC_ENOMEM;
        goto fail;
    }

    trigger_names(conn, src->name, out->function, out->triggers);
    const struct slot slots[] = {
        {"function", out->function},         {"source", source_lit},
        {"table", out->table},               {"pk", pk},
        {"brand_new", brand_new},            {"brand_old", brand_old},
        {"old_pairs", old_pairs.text},       {"new_pairs", new_pairs.text},
        {"changed", changed.text},           {"trigger_insert", out->triggers[0]},
        {"trigger_update", out->triggers[1]}, {"trigger_delete", out->triggers[2]},
        {"trigger_truncate", out->triggers[3]}, {"keys", keys.text},
        {"old_values", old_values.text},      {"new_values", new_values.text},
    };
    rc = expand(sql_text("trigger_template.sql"), slots, sizeof(slots) / sizeof(slots[0]),
                &out->ddl);
    if (rc != 0)
        snprintf(err, errlen, "trigger template: %s", omnisync_strerror(rc));
fail:
    PQclear(cols);
    free(old_pairs.text);
    free(new_pairs.text);
    free(changed.text);
    free(keys.text);
    free(old_values.text);
    free(new_values.text);
    free(pk);
    PQfreemem(source_lit);
    return rc;
}

/* Drops the triggers and function of `source` installed on `table` (either may be gone). */
static int drop_source(PGconn *conn, const char *source, const char *table, char *err,
                       size_t errlen)
{
    char function[128], triggers[NTRIGGERS][128];
    trigger_names(conn, source, function, triggers);
    struct sbuf sql = {0};
    const char *params[] = {table};
    PGresult *res = NULL;
    int rc = db_query(conn, "SELECT to_regclass($1) IS NOT NULL", 1, params, &res, err, errlen);
    if (rc != 0)
        return rc;
    int table_exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (table_exists) {
        for (int i = 0; i < NTRIGGERS; i++) {
            sbuf_str(&sql, "DROP TRIGGER IF EXISTS ");
            sbuf_str(&sql, triggers[i]);
            sbuf_str(&sql, " ON ");
            sbuf_str(&sql, table);
            sbuf_str(&sql, ";");
        }
    }
    sbuf_str(&sql, "DROP FUNCTION IF EXISTS omnisync.");
    sbuf_str(&sql, function);
    sbuf_str(&sql, "()");
    rc = sql.failed ? OMNISYNC_ENOMEM : db_exec(conn, sql.text, err, errlen);
    free(sql.text);
    return rc;
}

/* Is the installed definition the one we would install, with all its parts still present? */
static int source_up_to_date(PGconn *conn, const char *source, const struct source_sql *want,
                             char *err, size_t errlen, int *up_to_date, char *installed_table)
{
    const char *params[] = {source};
    PGresult *res = NULL;
    *up_to_date = 0;
    installed_table[0] = '\0';
    int rc = db_query(conn,
                      "SELECT table_name, definition FROM omnisync.installed_source "
                      "WHERE source = $1",
                      1, params, &res, err, errlen);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return OMNISYNC_OK;
    }
    snprintf(installed_table, QNAME_MAX, "%s", PQgetvalue(res, 0, 0));
    int same = strcmp(PQgetvalue(res, 0, 0), want->table) == 0 &&
               strcmp(PQgetvalue(res, 0, 1), want->ddl.text) == 0;
    PQclear(res);
    if (!same)
        return OMNISYNC_OK;

    /* Someone may have dropped a trigger by hand: count what is really there. */
    char function[QNAME_MAX];
    snprintf(function, sizeof(function), "omnisync.%s()", want->function);
    const char *p2[] = {want->table,       function,          want->triggers[0],
                        want->triggers[1], want->triggers[2], want->triggers[3]};
    rc = db_query(conn,
                  "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND "
                  "quote_ident(tgname) IN (quote_ident(trim(both '\"' from $3)), "
                  "quote_ident(trim(both '\"' from $4)), quote_ident(trim(both '\"' from $5)), "
                  "quote_ident(trim(both '\"' from $6)))) = 4 "
                  "AND to_regprocedure($2) IS NOT NULL",
                  6, p2, &res, err, errlen);
    if (rc != 0)
        return rc;
    *up_to_date = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return OMNISYNC_OK;
}

static int install_sources(PGconn *conn, const struct config *cfg, schema_report_cb report,
                           void *arg, char *err, size_t errlen)
{
    int rc = OMNISYNC_OK;
    char what[600];
    struct source_sql *want = calloc(cfg->nsources ? cfg->nsources : 1, sizeof(*want));
    if (want == NULL)
        return OMNISYNC_ENOMEM;

    /* Check every source against the catalog before changing anything. */
    for (size_t i = 0; i < cfg->nsources; i++) {
        rc = build_source_sql(conn, &cfg->sources[i], &want[i], err, errlen);
        if (rc != 0)
            goto out;
    }

    for (size_t i = 0; i < cfg->nsources; i++) {
        const struct config_source *src = &cfg->sources[i];
        int up_to_date;
        char installed_table[QNAME_MAX];
        rc = source_up_to_date(conn, src->name, &want[i], err, errlen, &up_to_date,
                               installed_table);
        if (rc != 0)
            goto out;
        if (up_to_date) {
            snprintf(what, sizeof(what), "source %s: triggers on %s are current", src->name,
                     want[i].table);
            report(arg, 0, what);
            continue;
        }
        rc = drop_source(conn, src->name, installed_table[0] ? installed_table : want[i].table,
                         err, errlen);
        if (rc != 0)
            goto out;
        if (installed_table[0] && strcmp(installed_table, want[i].table) != 0) {
            rc = drop_source(conn, src->name, want[i].table, err, errlen);
            if (rc != 0)
                goto out;
        }
        char sub[400];
        rc = db_exec(conn, want[i].ddl.text, sub, sizeof(sub));
        if (rc != 0) {
            snprintf(err, errlen, "[source %s] installing the trigger on %s: %s", src->name,
                     want[i].table, sub);
            goto out;
        }
        const char *params[] = {src->name, want[i].table, want[i].ddl.text};
        rc = db_query(conn,
                      "INSERT INTO omnisync.installed_source (source, table_name, definition) "
                      "VALUES ($1, $2, $3) ON CONFLICT (source) DO UPDATE SET "
                      "table_name = EXCLUDED.table_name, definition = EXCLUDED.definition, "
                      "installed_at = now()",
                      3, params, NULL, err, errlen);
        if (rc != 0)
            goto out;
        snprintf(what, sizeof(what), "source %s: installed triggers on %s", src->name,
                 want[i].table);
        report(arg, 1, what);
    }

    /* Sources that left the config lose their triggers. */
    PGresult *res = NULL;
    rc = db_query(conn, "SELECT source, table_name FROM omnisync.installed_source ORDER BY source",
                  0, NULL, &res, err, errlen);
    if (rc != 0)
        goto out;
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        const char *source = PQgetvalue(res, r, 0);
        if (config_find_source(cfg, source) != NULL)
            continue;
        rc = drop_source(conn, source, PQgetvalue(res, r, 1), err, errlen);
        if (rc != 0)
            break;
        const char *params[] = {source};
        rc = db_query(conn, "DELETE FROM omnisync.installed_source WHERE source = $1", 1, params,
                      NULL, err, errlen);
        snprintf(what, sizeof(what), "source %s: removed its triggers from %s (no longer configured)",
                 source, PQgetvalue(res, r, 1));
        if (rc == 0)
            report(arg, 1, what);
    }
    PQclear(res);
out:
    for (size_t i = 0; i < cfg->nsources; i++) {
        free(want[i].ddl.text);
        free(want[i].row_pairs.text);
    }
    free(want);
    return rc;
}

void schema_source_rows_free(struct schema_source_rows *rows)
{
    free(rows->page);
    free(rows->keyed);
    free(rows->read);
    memset(rows, 0, sizeof(*rows));
}

int schema_source_rows(PGconn *conn, const struct config_source *src,
                       struct schema_source_rows *rows, char *err, size_t errlen)
{
    struct source_sql want = {0};
    memset(rows, 0, sizeof(*rows));
    int rc = build_source_sql(conn, src, &want, err, errlen);
    if (rc != 0)
        goto out;
    if (want.row_pairs.failed) {
        rc = OMNISYNC_ENOMEM;
        goto out;
    }
    /* Keyset pagination on the primary id column in its own type: each batch is an index range
     * scan, and the last key is all it takes to resume. The type name comes from the catalog. */
    if (asprintf(&rows->page,
                 "SELECT t.%s AS k, jsonb_build_object(%s) AS data, %s AS brand FROM %s t"
                 " WHERE $1::text IS NULL OR t.%s > ($1::text)::%s"
                 " ORDER BY t.%s LIMIT $2",
                 want.pk, want.row_pairs.text, want.brand_row, want.table, want.pk, want.pk_type,
                 want.pk) < 0) {
        rows->page = NULL;
        rc = OMNISYNC_ENOMEM;
        goto out;
    }
    /* The listed keys, cast to the column's type so that the primary key's index finds them. */
    if (asprintf(&rows->keyed,
                 "SELECT w.p, t.%s AS k, jsonb_build_object(%s) AS data, %s AS brand"
                 " FROM %s t JOIN jsonb_to_recordset($1::jsonb) AS w(p text)"
                 " ON t.%s = (w.p)::%s",
                 want.pk, want.row_pairs.text, want.brand_row, want.table, want.pk,
                 want.pk_type) < 0) {
        rows->keyed = NULL;
        rc = OMNISYNC_ENOMEM;
        goto out;
    }
    /* Keyset pages, never one huge result. The page is chosen first and its rows mapped after:
     * a plan that scans and sorts (no statistics yet, a small table) then builds the JSON of
     * one page, not of every row after the key (that made a 20,000-row read take seconds). */
    if (asprintf(&rows->read,
                 "SELECT coalesce(t.%s::text, ''), jsonb_build_object(%s)::text, %s FROM ("
                 " SELECT * FROM %s t WHERE $1::text IS NULL OR t.%s > ($1::text)::%s"
                 " ORDER BY t.%s LIMIT $2) t ORDER BY t.%s",
                 want.pk, want.row_pairs.text, want.brand_row, want.table, want.pk, want.pk_type,
                 want.pk, want.pk) < 0) {
        rows->read = NULL;
        rc = OMNISYNC_ENOMEM;
    }
out:
    if (rc != 0)
        schema_source_rows_free(rows);
    free(want.ddl.text);
    free(want.row_pairs.text);
    return rc;
}

int schema_migrate(PGconn *conn, const struct config *cfg, schema_report_cb report, void *arg,
                   char *err, size_t errlen)
{
    char ignored[256];
    int rc = db_exec(conn, "BEGIN", err, errlen);
    if (rc != 0)
        return rc;
    /* Two concurrent migrates would race on CREATE ... IF NOT EXISTS; the lock serializes them. */
    rc = db_exec(conn,
                 "SET LOCAL client_min_messages = warning;"
                 "SELECT pg_advisory_xact_lock(hashtext('omnisync migrate'))",
                 err, errlen);
    if (rc == 0)
        rc = apply_migrations(conn, report, arg, err, errlen);
    if (rc == 0)
        rc = install_sources(conn, cfg, report, arg, err, errlen);
    if (rc == 0)
        rc = db_exec(conn, "COMMIT", err, errlen);
    if (rc != 0 && db_exec(conn, "ROLLBACK", ignored, sizeof(ignored)) != 0) {
        /* The connection is going away anyway; the server rolls back when it does. */
    }
    return rc;
}
