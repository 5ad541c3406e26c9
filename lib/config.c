/*
 * config: INI parsing with inih, driven by one table of keys.
 *
 * inih does not pass line numbers to the handler in Debian's build, so the file is fed through a
 * reader that counts lines; the handler runs right after its line is read, so the count is the
 * line of the key. The same reader rejects lines longer than inih's buffer (which inih would
 * otherwise split silently) and indented lines (which inih would take as a continuation).
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#define INI_LINE_MAX 200 /* Debian's libinih is built with INI_MAX_LINE 200 */
#define API_KEY_MAX 512

enum key_type {
    KEY_STRING,
    KEY_INT,
    KEY_DOUBLE,
    KEY_DURATION,
    KEY_ENUM, /* one of the names in `values`, stored as an int */
    KEY_BOOL,
    KEY_COLUMN, /* a CRM column name: checked for shape here, for existence by migrate */
    KEY_TABLE
};

/* One accepted spelling of an enumerated key (pgbouncer's CF_LOOKUP). */
struct key_value {
    const char *name;
    int value;
};

/*
 * A key's own check, run once `value` is stored: adds an error naming `where` and `label` (the
 * section) and returns non-zero when the value is refused. It may derive other fields.
 */
typedef int (*key_check)(struct config *cfg, const char *value, const char *where,
                         const char *label);

struct key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    const char *default_value;
    int reloadable;
    long long min;
    long long max;
    const struct key_value *values; /* KEY_ENUM: NULL-terminated */
    const char *expected;           /* KEY_ENUM: the names, for messages */
    key_check check;                /* optional */
    const char *field;              /* source keys mapped to Omnidesk: the field's name */
};

#define CFG(field) offsetof(struct config, field)
#define SRC(field) offsetof(struct config_source, field)

/* Enumerated keys are stored as int: their enums must be int-sized. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is not int-sized");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum log_format is not int-sized");
_Static_assert(sizeof(enum config_purge_endpoint) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_on_delete) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_names) == sizeof(int), "enum size");

static const struct key_value purge_endpoints[] = {
    {"v2", CONFIG_PURGE_V2}, {"legacy", CONFIG_PURGE_LEGACY}, {NULL, 0}};
static const struct key_value on_delete_values[] = {
    {"purge", CONFIG_ON_DELETE_PURGE}, {"ignore", CONFIG_ON_DELETE_IGNORE}, {NULL, 0}};
static const struct key_value log_levels[] = {{"error", LOG_LEVEL_ERROR},
                                              {"warn", LOG_LEVEL_WARN},
                                              {"info", LOG_LEVEL_INFO},
                                              {"debug", LOG_LEVEL_DEBUG},
                                              {NULL, 0}};
static const struct key_value names_values[] = {
    {"transliterate", CONFIG_NAMES_TRANSLITERATE}, {"strict", CONFIG_NAMES_STRICT}, {NULL, 0}};
static const struct key_value log_formats[] = {
    {"logfmt", LOG_FORMAT_LOGFMT}, {"json", LOG_FORMAT_JSON}, {NULL, 0}};

static int check_base_url(struct config *cfg, const char *value, const char *where,
                          const char *label);
static int check_listen(struct config *cfg, const char *value, const char *where,
                        const char *label);
static int note_api_key_file(struct config *cfg, const char *value, const char *where,
                             const char *label);
static int check_phone_prefix(struct config *cfg, const char *value, const char *where,
                              const char *label);

#define ENUM(values, expected) values, expected
#define NOENUM NULL, NULL

static const struct key keys[] = {
    {"database", "conninfo", KEY_STRING, CFG(conninfo), "", 0, 0, 0, NOENUM, NULL, NULL},
    {"omnidesk", "base_url", KEY_STRING, CFG(base_url), "", 0, 0, 0, NOENUM, check_base_url, NULL},
    {"omnidesk", "api_key_file", KEY_STRING, CFG(api_key_file), "", 1, 0, 0, NOENUM,
     note_api_key_file, NULL},
    {"omnidesk", "brand_id", KEY_INT, CFG(brand_id), "0", 0, 0, LLONG_MAX, NOENUM, NULL, NULL},
    {"omnidesk", "timeout_ms", KEY_INT, CFG(timeout_ms), "10000", 1, 100, 600000, NOENUM, NULL,
     NULL},
    {"omnidesk", "max_in_flight", KEY_INT, CFG(max_in_flight), "16", 1, 1, 1024, NOENUM, NULL,
     NULL},
    {"omnidesk", "rate_per_sec", KEY_DOUBLE, CFG(rate_per_sec), "10", 1, 0, 1000000, NOENUM, NULL,
     NULL},
    {"omnidesk", "purge_endpoint", KEY_ENUM, CFG(purge_endpoint), "v2", 1, 0, 0,
     ENUM(purge_endpoints, "v2 or legacy"), NULL, NULL},
    {"omnidesk", "max_retry_after", KEY_DURATION, CFG(max_retry_after_ms), "5m", 1, 0, 0, NOENUM,
     NULL, NULL},
    {"delivery", "max_attempts", KEY_INT, CFG(max_attempts), "12", 1, 1, 1000000, NOENUM, NULL,
     NULL},
    {"delivery", "backoff_initial_ms", KEY_INT, CFG(backoff_initial_ms), "1000", 1, 1, 86400000,
     NOENUM, NULL, NULL},
    {"delivery", "backoff_max_ms", KEY_INT, CFG(backoff_max_ms), "900000", 1, 1, 604800000, NOENUM,
     NULL, NULL},
    {"delivery", "batch_size", KEY_INT, CFG(batch_size), "100", 1, 1, 10000, NOENUM, NULL, NULL},
    {"delivery", "on_delete", KEY_ENUM, CFG(on_delete), "purge", 1, 0, 0,
     ENUM(on_delete_values, "purge or ignore"), NULL, NULL},
    {"delivery", "max_purges_per_hour", KEY_INT, CFG(max_purges_per_hour), "100", 1, 0, 100000000,
     NOENUM, NULL, NULL},
    {"delivery", "retention", KEY_DURATION, CFG(retention_ms), "7d", 1, 0, 0, NOENUM, NULL, NULL},
    /* Empty (the default): follows retention, resolved in check_whole(). */
    {"delivery", "payload_retention", KEY_DURATION, CFG(payload_retention_ms), "", 1, 0, 0, NOENUM,
     NULL, NULL},
    {"delivery", "poll_interval", KEY_DURATION, CFG(poll_interval_ms), "5s", 1, 0, 0, NOENUM, NULL,
     NULL},
    {"delivery", "shutdown_timeout", KEY_DURATION, CFG(shutdown_timeout_ms), "30s", 1, 0, 0, NOENUM,
     NULL, NULL},
    {"health", "listen", KEY_STRING, CFG(listen), "127.0.0.1:9187", 0, 0, 0, NOENUM, check_listen,
     NULL},
    /* Empty (the default): reconcile only on demand, resolved in check_whole(). */
    {"reconcile", "interval", KEY_DURATION, CFG(reconcile_interval_ms), "", 1, 0, 0, NOENUM, NULL,
     NULL},
    {"log", "level", KEY_ENUM, CFG(log_level), "info", 1, 0, 0,
     ENUM(log_levels, "error, warn, info or debug"), NULL, NULL},
    {"log", "format", KEY_ENUM, CFG(log_format), "logfmt", 1, 0, 0,
     ENUM(log_formats, "logfmt or json"), NULL, NULL},
};

/*
 * Every key of a [source NAME] section. The table also drives config_free (strings),
 * config_apply_reload (a changed source needs a restart) and config_source_columns (keys with a
 * `field` are mapped columns, in this order: primary id first).
 */
static const struct key source_keys[] = {
    {"source", "table", KEY_TABLE, SRC(table), NULL, 0, 0, 0, NOENUM, NULL, NULL},
    {"source", "primary_id", KEY_COLUMN, SRC(primary_id), NULL, 0, 0, 0, NOENUM, NULL,
     "primary_id"},
    {"source", "firstname", KEY_COLUMN, SRC(firstname), NULL, 0, 0, 0, NOENUM, NULL, "firstname"},
    {"source", "lastname", KEY_COLUMN, SRC(lastname), NULL, 0, 0, 0, NOENUM, NULL, "lastname"},
    {"source", "email", KEY_COLUMN, SRC(email), NULL, 0, 0, 0, NOENUM, NULL, "email"},
    {"source", "telephone", KEY_COLUMN, SRC(telephone), NULL, 0, 0, 0, NOENUM, NULL, "telephone"},
    {"source", "brand_id_column", KEY_COLUMN, SRC(brand_id_column), NULL, 0, 0, 0, NOENUM, NULL,
     "brand_id"},
    {"source", "erase_flag", KEY_COLUMN, SRC(erase_flag), NULL, 0, 0, 0, NOENUM, NULL, "erase"},
    {"source", "normalize_names", KEY_BOOL, SRC(normalize_names), "no", 0, 0, 0, NOENUM, NULL,
     NULL},
    {"source", "phone_default_prefix", KEY_STRING, SRC(phone_default_prefix), NULL, 0, 0, 0, NOENUM,
     check_phone_prefix, NULL},
    {"source", "names", KEY_ENUM, SRC(names), NULL, 0, 0, 0,
     ENUM(names_values, "transliterate or strict"), NULL, NULL}, /* unset: transliterate (0) */
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))
#define NSOURCE_KEYS (sizeof(source_keys) / sizeof(source_keys[0]))

struct parse_state {
    struct config *cfg;
    FILE *file;
    int line;
    int seen[NKEYS];
    struct config_source *source; /* current [source NAME] section, NULL otherwise */
    unsigned char source_seen[CONFIG_MAX_SOURCES][NSOURCE_KEYS];
    int bad_section; /* inside an unknown section: its keys are not reported again */
    char section[128];
};

static void add_error(struct config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Errors quote what the file says, and they go to a terminal, the journal and the log: a control
 * character or a byte that is not well-formed UTF-8 (or a sequence cut at the buffer's end)
 * becomes '?', in place, so an error is always one line of valid UTF-8 (found by fuzz_config).
 */
static void make_printable(char *text)
{
    unsigned char *s = (unsigned char *)text;
    size_t len = strlen(text);

    for (size_t i = 0; i < len;) {
        unsigned char b = s[i];
        size_t n = b >= 0xc2 && b <= 0xdf   ? 2
                   : b >= 0xe0 && b <= 0xef ? 3
                   : b >= 0xf0 && b <= 0xf4 ? 4
                                            : 1;
        int ok = b >= 0x20 && b != 0x7f && (b < 0x80 || n > 1) && i + n <= len;

        for (size_t k = 1; ok && k < n; k++)
            ok = (s[i + k] & 0xc0) == 0x80;
        if (ok && n > 2)
            ok = !((b == 0xe0 && s[i + 1] < 0xa0) || (b == 0xed && s[i + 1] > 0x9f) ||
                   (b == 0xf0 && s[i + 1] < 0x90) || (b == 0xf4 && s[i + 1] > 0x8f));
        if (!ok) {
            s[i++] = '?';
            continue;
        }
        i += n;
    }
}

static void add_error(struct config *cfg, const char *fmt, ...)
{
    if (cfg->nerrors >= CONFIG_MAX_ERRORS) {
        cfg->nerrors_dropped++;
        return;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    make_printable(buf);
    char *copy = strdup(buf);
    if (copy == NULL) {
        cfg->nerrors_dropped++;
        return;
    }
    cfg->errors[cfg->nerrors++] = copy;
}

int config_parse_duration(const char *text, uint64_t *out_ms)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return OMNISYNC_EINVAL;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(p, &end, 10);
    if (errno != 0)
        return OMNISYNC_EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (n > UINT64_MAX / units[i].ms)
                return OMNISYNC_EINVAL;
            *out_ms = n * units[i].ms;
            return OMNISYNC_OK;
        }
    }
    return OMNISYNC_EINVAL;
}

/* A plain identifier: letters, digits, underscore, not starting with a digit, <= 63 bytes. */
static int plain_identifier(const char *s, size_t len)
{
    if (len == 0 || len > CONFIG_NAME_MAX || isdigit((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_' || c >= 0x80))
            return 0;
    }
    return 1;
}

static const char *describe_bad_column(const char *value)
{
    if (*value == '\0')
        return "is empty";
    if (strchr(value, '"'))
        return "contains '\"'";
    if (strchr(value, ';'))
        return "contains ';'";
    for (const char *p = value; *p; p++) {
        if (isspace((unsigned char)*p))
            return "contains a space";
    }
    return "is not a plain column name (letters, digits and _)";
}

static int parse_bool(const char *v, int *out)
{
    if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") ||
             !strcmp(v, "0"))
        *out = 0;
    else
        return OMNISYNC_EINVAL;
    return OMNISYNC_OK;
}

/* Stores a copy of `value` into the string field. */
static int store_string(char *field, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return OMNISYNC_ENOMEM;
    free(*(char **)field);
    *(char **)field = copy;
    return OMNISYNC_OK;
}

static int parse_enum(const struct key *k, const char *value, int *out)
{
    for (const struct key_value *v = k->values; v->name != NULL; v++) {
        if (strcmp(v->name, value) == 0) {
            *out = v->value;
            return OMNISYNC_OK;
        }
    }
    return OMNISYNC_EINVAL;
}

/*
 * Parses `value` for key `k` into its field in the struct at `base`. Returns 0 or adds an error
 * naming `where` ("file:line" or "environment VAR") and `label` (the section) and returns
 * OMNISYNC_ECONFIG.
 */
static int parse_value(struct config *cfg, const struct key *k, void *base, const char *value,
                       const char *where, const char *label)
{
    char *field = (char *)base + k->offset;
    char *end;
    switch (k->type) {
    case KEY_STRING:
        break;
    case KEY_COLUMN:
        if (!plain_identifier(value, strlen(value))) {
            add_error(cfg, "%s: [%s] %s: column \"%s\" %s", where, label, k->name, value,
                      describe_bad_column(value));
            return OMNISYNC_ECONFIG;
        }
        break;
    case KEY_TABLE: {
        const char *dot = strchr(value, '.');
        int ok = dot ? plain_identifier(value, (size_t)(dot - value)) &&
                           plain_identifier(dot + 1, strlen(dot + 1))
                     : plain_identifier(value, strlen(value));
        if (!ok) {
            add_error(cfg, "%s: [%s] %s: table \"%s\" must be table or schema.table of plain names",
                      where, label, k->name, value);
            return OMNISYNC_ECONFIG;
        }
        break;
    }
    case KEY_INT: {
        errno = 0;
        long long n = strtoll(value, &end, 10);
        if (*value == '\0' || *end != '\0' || errno != 0) {
            add_error(cfg, "%s: [%s] %s: bad number \"%s\": expected an integer", where, label,
                      k->name, value);
            return OMNISYNC_ECONFIG;
        }
        if (n < k->min || n > k->max) {
            add_error(cfg, "%s: [%s] %s: %lld is out of range %lld..%lld", where, label, k->name, n,
                      k->min, k->max);
            return OMNISYNC_ECONFIG;
        }
        *(long long *)field = n;
        return OMNISYNC_OK;
    }
    case KEY_DOUBLE: {
        errno = 0;
        double d = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || errno != 0 || !isfinite(d)) {
            add_error(cfg, "%s: [%s] %s: bad number \"%s\"", where, label, k->name, value);
            return OMNISYNC_ECONFIG;
        }
        if (d < (double)k->min || d > (double)k->max) {
            add_error(cfg, "%s: [%s] %s: %g is out of range %lld..%lld", where, label, k->name, d,
                      k->min, k->max);
            return OMNISYNC_ECONFIG;
        }
        *(double *)field = d;
        return OMNISYNC_OK;
    }
    case KEY_DURATION: {
        uint64_t ms;
        if (*value == '\0' && (k->default_value == NULL || *k->default_value == '\0')) {
            *(uint64_t *)field = UINT64_MAX; /* unset, where the key allows it */
            return OMNISYNC_OK;
        }
        if (config_parse_duration(value, &ms) != 0) {
            add_error(cfg,
                      "%s: [%s] %s: bad duration \"%s\": use a number and a unit (500ms, 30s, 15m, "
                      "12h, 7d)",
                      where, label, k->name, value);
            return OMNISYNC_ECONFIG;
        }
        *(uint64_t *)field = ms;
        return OMNISYNC_OK;
    }
    case KEY_ENUM:
        if (parse_enum(k, value, (int *)field) != 0) {
            add_error(cfg, "%s: [%s] %s: bad value \"%s\": expected %s", where, label, k->name,
                      value, k->expected);
            return OMNISYNC_ECONFIG;
        }
        return OMNISYNC_OK;
    case KEY_BOOL:
        if (parse_bool(value, (int *)field) != 0) {
            add_error(cfg, "%s: [%s] %s: bad value \"%s\": expected yes or no", where, label,
                      k->name, value);
            return OMNISYNC_ECONFIG;
        }
        return OMNISYNC_OK;
    }
    /* The string types. */
    if (store_string(field, value) != 0) {
        add_error(cfg, "%s: out of memory", where);
        return OMNISYNC_ENOMEM;
    }
    return OMNISYNC_OK;
}

/* Parses and stores `value`, then runs the key's own check. */
static int store_value(struct config *cfg, const struct key *k, void *base, const char *value,
                       const char *where, const char *label)
{
    int rc = parse_value(cfg, k, base, value, where, label);
    if (rc == 0 && k->check != NULL && k->check(cfg, value, where, label) != 0)
        rc = OMNISYNC_ECONFIG;
    return rc;
}

static int valid_source_name(const char *name)
{
    if (*name == '\0' || strlen(name) > 40)
        return 0;
    for (const char *p = name; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
            return 0;
    }
    return 1;
}

/* Starts a [source NAME] section, or finds the one already started by an earlier header. */
static struct config_source *begin_source(struct parse_state *st, const char *name)
{
    struct config *cfg = st->cfg;
    for (size_t i = 0; i < cfg->nsources; i++) {
        if (strcmp(cfg->sources[i].name, name) == 0) {
            add_error(cfg, "%s:%d: [source %s]: section appears twice", cfg->path, st->line, name);
            return NULL;
        }
    }
    if (!valid_source_name(name)) {
        add_error(cfg,
                  "%s:%d: [source %s]: bad source name: use 1 to 40 lower-case letters, digits "
                  "and _",
                  cfg->path, st->line, name);
        return NULL;
    }
    if (cfg->nsources >= CONFIG_MAX_SOURCES) {
        add_error(cfg, "%s:%d: [source %s]: more than %d sources", cfg->path, st->line, name,
                  CONFIG_MAX_SOURCES);
        return NULL;
    }
    struct config_source *src = &cfg->sources[cfg->nsources];
    src->name = strdup(name);
    if (src->name == NULL)
        return NULL;
    src->line = st->line;
    cfg->nsources++;
    return src;
}

static int handle_source_key(struct parse_state *st, const char *name, const char *value)
{
    struct config *cfg = st->cfg;
    struct config_source *src = st->source;
    char where[600], label[128];
    snprintf(where, sizeof(where), "%s:%d", cfg->path, st->line);
    snprintf(label, sizeof(label), "source %s", src->name);

    if (strncmp(name, "custom.", 7) == 0) {
        const char *field = name + 7;
        if (!plain_identifier(field, strlen(field))) {
            add_error(cfg, "%s: [%s] %s: custom field name must be letters, digits and _", where,
                      label, name);
            return 1;
        }
        for (size_t i = 0; i < src->ncustom; i++) {
            if (strcmp(src->custom[i].field, field) == 0) {
                add_error(cfg, "%s: [%s] %s: duplicate key", where, label, name);
                return 1;
            }
        }
        if (!plain_identifier(value, strlen(value))) {
            add_error(cfg, "%s: [%s] %s: column \"%s\" %s", where, label, name, value,
                      describe_bad_column(value));
            return 1;
        }
        if (src->ncustom >= CONFIG_MAX_CUSTOM) {
            add_error(cfg, "%s: [%s] %s: more than %d custom fields", where, label, name,
                      CONFIG_MAX_CUSTOM);
            return 1;
        }
        struct config_custom *c = &src->custom[src->ncustom];
        c->field = strdup(field);
        c->column = strdup(value);
        if (asprintf(&c->param, "custom_%s", field) < 0)
            c->param = NULL;
        src->ncustom++;
        if (c->field == NULL || c->column == NULL || c->param == NULL)
            add_error(cfg, "%s: out of memory", where);
        return 1;
    }

    for (size_t i = 0; i < NSOURCE_KEYS; i++) {
        if (strcmp(source_keys[i].name, name) != 0)
            continue;
        size_t idx = (size_t)(src - cfg->sources);
        if (st->source_seen[idx][i]) {
            add_error(cfg, "%s: [%s] %s: duplicate key", where, label, name);
            return 1;
        }
        st->source_seen[idx][i] = 1;
        if (*value == '\0' && source_keys[i].type != KEY_BOOL)
            return 1; /* "brand_id_column =" means not set */
        (void)store_value(cfg, &source_keys[i], src, value, where, label);
        return 1;
    }
    add_error(cfg, "%s: [%s] %s: unknown key", where, label, name);
    return 1;
}

/*
 * Starts a section. Called by the reader when it sees the header line, because inih only calls
 * the handler for keys: this way an empty [source NAME] is still seen, and messages about a
 * section name the line of its header.
 */
static void begin_section(struct parse_state *st, const char *section)
{
    struct config *cfg = st->cfg;
    snprintf(st->section, sizeof(st->section), "%s", section);
    st->source = NULL;
    st->bad_section = 0;
    if (strncmp(section, "source ", 7) == 0) {
        const char *sname = section + 7;
        while (*sname == ' ')
            sname++;
        st->source = begin_source(st, sname);
        if (st->source == NULL)
            st->bad_section = 1;
        return;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) == 0)
            return;
    }
    add_error(cfg, "%s:%d: [%s]: unknown section", cfg->path, st->line, section);
    st->bad_section = 1;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *st = user;
    struct config *cfg = st->cfg;

    if (st->bad_section)
        return 1;
    if (st->source != NULL)
        return handle_source_key(st, name, value);
    if (*section == '\0') {
        add_error(cfg, "%s:%d: %s: key outside any section", cfg->path, st->line, name);
        return 1;
    }

    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0 || strcmp(keys[i].name, name) != 0)
            continue;
        char where[600];
        snprintf(where, sizeof(where), "%s:%d", cfg->path, st->line);
        if (st->seen[i]) {
            add_error(cfg, "%s: [%s] %s: duplicate key", where, section, name);
            return 1;
        }
        st->seen[i] = 1;
        (void)store_value(cfg, &keys[i], cfg, value, where, section);
        return 1;
    }
    add_error(cfg, "%s:%d: [%s] %s: unknown key", cfg->path, st->line, section, name);
    return 1;
}

/* inih's reader: fgets that counts lines and refuses what inih would misread. */
static char *reader(char *str, int num, void *stream)
{
    struct parse_state *st = stream;
    for (;;) {
        if (fgets(str, num, st->file) == NULL)
            return NULL;
        st->line++;
        size_t len = strlen(str);
        if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(st->file)) {
            add_error(st->cfg, "%s:%d: line is longer than %d characters", st->cfg->path,
                      st->line, INI_LINE_MAX - 2);
            int c;
            while ((c = fgetc(st->file)) != EOF && c != '\n')
                ;
            continue;
        }
        if (str[0] == '[') {
            char *close = strchr(str, ']');
            if (close != NULL) {
                char name[128];
                size_t n = (size_t)(close - str - 1);
                if (n >= sizeof(name))
                    n = sizeof(name) - 1;
                memcpy(name, str + 1, n);
                name[n] = '\0';
                begin_section(st, name);
            }
        }
        if (str[0] == ' ' || str[0] == '\t') {
            const char *p = str;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p != '\0' && *p != '\n' && *p != '\r' && *p != ';' && *p != '#') {
                add_error(st->cfg, "%s:%d: indented line: keys and sections start in column 1",
                          st->cfg->path, st->line);
                continue;
            }
        }
        return str;
    }
}

static void apply_defaults(struct config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char where[64];
        snprintf(where, sizeof(where), "default");
        (void)store_value(cfg, &keys[i], cfg, keys[i].default_value, where, keys[i].section);
    }
}

static void env_name(char *out, size_t len, const char *section, const char *name)
{
    snprintf(out, len, "OMNISYNC_%s_%s", section, name);
    for (char *p = out; *p; p++) {
        if (*p == '.' || *p == ' ' || *p == '-')
            *p = '_';
        else
            *p = (char)toupper((unsigned char)*p);
    }
}

static void apply_environment(struct config *cfg)
{
    char var[256], where[300];
    for (size_t i = 0; i < NKEYS; i++) {
        env_name(var, sizeof(var), keys[i].section, keys[i].name);
        const char *value = getenv(var);
        if (value == NULL)
            continue;
        snprintf(where, sizeof(where), "environment %s", var);
        (void)store_value(cfg, &keys[i], cfg, value, where, keys[i].section);
    }
    for (size_t s = 0; s < cfg->nsources; s++) {
        struct config_source *src = &cfg->sources[s];
        char section[64], label[128];
        snprintf(section, sizeof(section), "source_%s", src->name);
        snprintf(label, sizeof(label), "source %s", src->name);
        for (size_t i = 0; i < NSOURCE_KEYS; i++) {
            env_name(var, sizeof(var), section, source_keys[i].name);
            const char *value = getenv(var);
            if (value == NULL || (*value == '\0' && source_keys[i].type != KEY_BOOL))
                continue;
            snprintf(where, sizeof(where), "environment %s", var);
            (void)store_value(cfg, &source_keys[i], src, value, where, label);
        }
    }
}

static int is_loopback_host(const char *host, size_t len)
{
    char buf[256];
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, host, len);
    buf[len] = '\0';
    if (strcasecmp(buf, "localhost") == 0)
        return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, buf, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, buf, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* One part of a parsed URL, or NULL when it is absent; the caller frees it with curl_free(). */
static char *url_part(CURLU *url, CURLUPart what)
{
    char *part = NULL;

    if (curl_url_get(url, what, &part, 0) != CURLUE_OK)
        return NULL;
    return part;
}

/*
 * The URL is parsed by libcurl's own parser, the one that picks the host to connect to: a
 * hand-written split took "http://127.0.0.1:80@example.com" for a loopback URL while libcurl
 * connects to example.com with the key (issue 17 item 4). A user name or password would be sent
 * as Basic auth to whoever answers, and a query or fragment would break the request paths
 * appended to the URL: all three are refused.
 */
static int check_base_url(struct config *cfg, const char *value, const char *where,
                          const char *label)
{
    CURLU *url = NULL;
    char *scheme = NULL, *host = NULL, *part;
    CURLUcode rc;
    int has_userinfo = 0;
    size_t len;
    int errors = (int)cfg->nerrors;

    (void)value;
    (void)label;
    if (*cfg->base_url == '\0')
        return 0; /* reported once the whole file is read */
    url = curl_url();
    if (url == NULL) {
        add_error(cfg, "%s: [omnidesk] base_url: out of memory", where);
        return -1;
    }
    rc = curl_url_set(url, CURLUPART_URL, cfg->base_url, 0);
    if (rc != CURLUE_OK) {
        add_error(cfg,
                  "%s: [omnidesk] base_url: not a URL libcurl accepts (%s); expected "
                  "https://host[:port][/path]",
                  where, curl_url_strerror(rc));
        goto done;
    }
    scheme = url_part(url, CURLUPART_SCHEME);
    if (scheme == NULL || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
        add_error(cfg, "%s: [omnidesk] base_url: must start with https:// (or http:// on loopback)",
                  where);
        goto done;
    }
    if ((part = url_part(url, CURLUPART_USER)) != NULL) {
        has_userinfo = 1;
        curl_free(part);
    }
    if ((part = url_part(url, CURLUPART_PASSWORD)) != NULL) {
        has_userinfo = 1;
        curl_free(part);
    }
    if ((part = url_part(url, CURLUPART_OPTIONS)) != NULL) {
        has_userinfo = 1;
        curl_free(part);
    }
    if (has_userinfo) {
        add_error(cfg,
                  "%s: [omnidesk] base_url: must not contain a user name or password (a part "
                  "before @): the host is what follows the @; write https://host[:port][/path] "
                  "and keep the key in api_key_file",
                  where);
        goto done;
    }
    if ((part = url_part(url, CURLUPART_QUERY)) != NULL ||
        (part = url_part(url, CURLUPART_FRAGMENT)) != NULL) {
        curl_free(part);
        add_error(cfg,
                  "%s: [omnidesk] base_url: must not contain a query (?) or a fragment (#); "
                  "write https://host[:port][/path]",
                  where);
        goto done;
    }
    host = url_part(url, CURLUPART_HOST);
    if (host == NULL) {
        add_error(cfg, "%s: [omnidesk] base_url: no host", where);
        goto done;
    }
    if (strcmp(scheme, "http") == 0) {
        /* libcurl spells an IPv6 host in brackets and an IPv4 one in dotted quads. */
        len = strlen(host);
        if (len >= 2 && host[0] == '[' && host[len - 1] == ']'
                ? !is_loopback_host(host + 1, len - 2)
                : !is_loopback_host(host, len))
            add_error(cfg,
                      "%s: [omnidesk] base_url: http:// is refused for a host that is not "
                      "loopback (%s); use https://",
                      where, host);
    }
done:
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(url);
    return (int)cfg->nerrors > errors ? -1 : 0;
}

/* Derives health_host, health_port and health_loopback from the listen address. */
static int check_listen(struct config *cfg, const char *listen, const char *where,
                        const char *label)
{
    (void)label;
    cfg->health_port = -1;
    if (*listen == '\0')
        return 0;
    const char *host = listen, *colon;
    size_t hostlen;
    if (*listen == '[') {
        const char *close = strchr(listen, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        host = listen + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL)
            goto bad;
        hostlen = (size_t)(colon - listen);
    }
    if (hostlen == 0 || hostlen >= sizeof(cfg->health_host))
        goto bad;
    char hostbuf[64];
    memcpy(hostbuf, host, hostlen);
    hostbuf[hostlen] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(hostbuf, "localhost") == 0)
        snprintf(hostbuf, sizeof(hostbuf), "127.0.0.1");
    else if (inet_pton(AF_INET, hostbuf, &a4) != 1 && inet_pton(AF_INET6, hostbuf, &a6) != 1)
        goto bad;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
        goto bad;
    snprintf(cfg->health_host, sizeof(cfg->health_host), "%s", hostbuf);
    cfg->health_port = (int)port;
    cfg->health_loopback = is_loopback_host(hostbuf, strlen(hostbuf));
    return 0;
bad:
    add_error(cfg,
              "%s: [health] listen: bad listen address \"%s\": expected IP:PORT (127.0.0.1:9187, "
              "[::1]:9187), port 0 for any, or empty to disable",
              where, listen);
    return -1;
}

/* Remembers where the key file was named, for the messages of config_load_api_key(). */
static int note_api_key_file(struct config *cfg, const char *value, const char *where,
                             const char *label)
{
    (void)value;
    (void)label;
    snprintf(cfg->api_key_file_where, sizeof(cfg->api_key_file_where), "%s", where);
    return 0;
}

static int check_phone_prefix(struct config *cfg, const char *prefix, const char *where,
                              const char *label)
{
    int ok = prefix[0] == '+' && prefix[1] != '\0';
    for (const char *p = prefix + 1; ok && *p; p++)
        ok = isdigit((unsigned char)*p);
    if (!ok)
        add_error(cfg, "%s: [%s] phone_default_prefix: expected + and digits", where, label);
    return ok ? 0 : -1;
}

static void check_whole(struct config *cfg)
{
    if (*cfg->base_url == '\0')
        add_error(cfg, "%s: [omnidesk] base_url: missing: set the Omnidesk account URL", cfg->path);
    if (cfg->max_retry_after_ms < 1000 || cfg->max_retry_after_ms > 86400000)
        add_error(cfg, "%s: [omnidesk] max_retry_after: must be between 1s and 24h", cfg->path);
    if (cfg->backoff_initial_ms > cfg->backoff_max_ms)
        add_error(cfg, "%s: [delivery] backoff_initial_ms: larger than backoff_max_ms", cfg->path);
    if (cfg->payload_retention_ms == UINT64_MAX)
        cfg->payload_retention_ms = cfg->retention_ms;
    if (cfg->reconcile_interval_ms == UINT64_MAX)
        cfg->reconcile_interval_ms = 0; /* only on demand */
    if (cfg->nsources == 0)
        add_error(cfg, "%s: no [source NAME] section: nothing to sync", cfg->path);
    for (size_t i = 0; i < cfg->nsources; i++) {
        struct config_source *src = &cfg->sources[i];
        if (src->table == NULL)
            add_error(cfg, "%s:%d: [source %s] table: missing: name the CRM table", cfg->path,
                      src->line, src->name);
        if (src->primary_id == NULL)
            add_error(cfg, "%s:%d: [source %s] primary_id: missing: name the customer id column",
                      cfg->path, src->line, src->name);
        if (src->brand_id_column == NULL && cfg->brand_id <= 0)
            add_error(cfg,
                      "%s:%d: [source %s] brand_id_column: missing, and [omnidesk] brand_id is "
                      "not set: every customer needs a brand",
                      cfg->path, src->line, src->name);
    }
}

/*
 * Opens `path` for reading only if it is a regular file: a directory used to give a misleading
 * parse error, and a FIFO made fopen() wait for a writer forever (issue 17 item 9). O_NONBLOCK
 * keeps the open itself from waiting; it is cleared again before the file is read. Returns the
 * stream, or NULL with *why set (a static string or strerror's).
 */
static FILE *open_regular(const char *path, const char **why)
{
    struct stat st;
    FILE *f;
    int fd, flags;

    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *why = strerror(errno);
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        *why = strerror(errno);
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        *why = "is a directory, not a file";
        goto fail;
    }
    if (S_ISFIFO(st.st_mode)) {
        *why = "is a FIFO (named pipe), not a regular file";
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        *why = "is not a regular file (a device or socket)";
        goto fail;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
        (f = fdopen(fd, "r")) == NULL) {
        *why = strerror(errno);
        goto fail;
    }
    return f;
fail:
    close(fd);
    return NULL;
}

int config_load(struct config *cfg, const char *path)
{
    memset(cfg, 0, sizeof(*cfg));
    if (path == NULL)
        path = getenv("OMNISYNC_CONFIG");
    if (path == NULL || *path == '\0')
        path = CONFIG_DEFAULT_PATH;
    cfg->path = strdup(path);
    if (cfg->path == NULL)
        return OMNISYNC_ENOMEM;
    apply_defaults(cfg);

    struct parse_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return OMNISYNC_ENOMEM;
    st->cfg = cfg;
    const char *why = NULL;
    st->file = open_regular(path, &why);
    if (st->file == NULL) {
        add_error(cfg, "%s: cannot open: %s", path, why);
        free(st);
        return OMNISYNC_ECONFIG;
    }
    int rc = ini_parse_stream(reader, st, handler, st);
    fclose(st->file);
    if (rc > 0) {
        /* inih counts lines itself and we skipped none from its view only when no line was
         * refused by the reader; its count is still the best pointer we have. */
        add_error(cfg, "%s:%d: syntax error: expected [section] or key = value", path, rc);
    } else if (rc < 0) {
        add_error(cfg, "%s: cannot parse (error %d)", path, rc);
    }
    free(st);

    apply_environment(cfg);
    check_whole(cfg);
    return cfg->nerrors || cfg->nerrors_dropped ? OMNISYNC_ECONFIG : OMNISYNC_OK;
}

static int read_key_file(struct config *cfg, const char *path, int check_mode)
{
    int rc = OMNISYNC_ECONFIG;
    FILE *f = NULL;
    struct stat st;
    char buf[API_KEY_MAX + 2];

    const char *why = NULL;
    f = open_regular(path, &why);
    if (f == NULL) {
        add_error(cfg, "%s: api key file %s: cannot open: %s", cfg->path, path, why);
        goto fail;
    }
    if (fstat(fileno(f), &st) != 0) {
        add_error(cfg, "%s: api key file %s: %s", cfg->path, path, strerror(errno));
        goto fail;
    }
    if (check_mode && (st.st_mode & (S_IRWXG | S_IRWXO))) {
        add_error(cfg,
                  "%s: [omnidesk] api_key_file: %s is readable by group or others (mode %04o); "
                  "run chmod 600 on it",
                  cfg->api_key_file_where[0] ? cfg->api_key_file_where : cfg->path, path,
                  (unsigned)(st.st_mode & 07777));
        goto fail;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    if (n > API_KEY_MAX) {
        add_error(cfg, "%s: api key file %s: longer than %d bytes", cfg->path, path, API_KEY_MAX);
        goto fail;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n == 0) {
        add_error(cfg, "%s: api key file %s: empty", cfg->path, path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e) {
            add_error(cfg, "%s: api key file %s: contains a control character or space", cfg->path,
                      path);
            goto fail;
        }
    }
    cfg->api_key = strdup(buf);
    rc = cfg->api_key ? OMNISYNC_OK : OMNISYNC_ENOMEM;
fail:
    explicit_bzero(buf, sizeof(buf));
    if (f != NULL)
        fclose(f);
    return rc;
}

int config_load_api_key(struct config *cfg)
{
    if (cfg->api_key != NULL) {
        explicit_bzero(cfg->api_key, strlen(cfg->api_key));
        free(cfg->api_key);
        cfg->api_key = NULL;
    }
    if (cfg->api_key_file != NULL && *cfg->api_key_file != '\0')
        return read_key_file(cfg, cfg->api_key_file, 1);

    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    if (creds != NULL && *creds != '\0') {
        char path[4096];
        snprintf(path, sizeof(path), "%s/omnidesk-api-key", creds);
        if (access(path, F_OK) == 0)
            return read_key_file(cfg, path, 0); /* systemd owns the credential's mode */
    }
    const char *env = getenv("OMNISYNC_API_KEY");
    if (env != NULL && *env != '\0') {
        cfg->api_key = strdup(env);
        return cfg->api_key ? OMNISYNC_OK : OMNISYNC_ENOMEM;
    }
    add_error(cfg,
              "%s: [omnidesk] api_key_file: no API key: set api_key_file, a systemd credential "
              "omnidesk-api-key, or OMNISYNC_API_KEY",
              cfg->path);
    return OMNISYNC_ECONFIG;
}

static int is_string_key(const struct key *k)
{
    return k->type == KEY_STRING || k->type == KEY_COLUMN || k->type == KEY_TABLE;
}

/* Frees the string fields of the keys in `table` within the struct at `base`. */
static void free_strings(const struct key *table, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        if (is_string_key(&table[i])) {
            char **field = (char **)((char *)base + table[i].offset);
            free(*field);
            *field = NULL;
        }
    }
}

static void free_source(struct config_source *src)
{
    free(src->name);
    src->name = NULL;
    free_strings(source_keys, NSOURCE_KEYS, src);
    for (size_t i = 0; i < src->ncustom; i++) {
        free(src->custom[i].field);
        free(src->custom[i].column);
        free(src->custom[i].param);
    }
    src->ncustom = 0;
}

void config_free(struct config *cfg)
{
    free_strings(keys, NKEYS, cfg);
    for (size_t i = 0; i < cfg->nsources; i++)
        free_source(&cfg->sources[i]);
    cfg->nsources = 0;
    if (cfg->api_key != NULL) {
        explicit_bzero(cfg->api_key, strlen(cfg->api_key));
        free(cfg->api_key);
        cfg->api_key = NULL;
    }
    for (size_t i = 0; i < cfg->nerrors; i++)
        free(cfg->errors[i]);
    cfg->nerrors = 0;
    free(cfg->path);
    cfg->path = NULL;
}

void config_print_errors(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nerrors; i++)
        fprintf(stderr, "omnisync: %s\n", cfg->errors[i]);
    if (cfg->nerrors_dropped)
        fprintf(stderr, "omnisync: ... and %zu more errors\n", cfg->nerrors_dropped);
}

static int strings_differ(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    return strcmp(a, b) != 0;
}

static size_t value_size(const struct key *k)
{
    switch (k->type) {
    case KEY_DOUBLE:
        return sizeof(double);
    case KEY_INT:
        return sizeof(long long);
    case KEY_DURATION:
        return sizeof(uint64_t);
    case KEY_ENUM:
    case KEY_BOOL:
        return sizeof(int);
    default:
        return sizeof(char *);
    }
}

/* Whether key `k` has another value in the struct at `a` than in the one at `b`. */
static int key_differs(const struct key *k, const void *a, const void *b)
{
    const char *x = (const char *)a + k->offset, *y = (const char *)b + k->offset;
    if (is_string_key(k))
        return strings_differ(*(char *const *)x, *(char *const *)y);
    return memcmp(x, y, value_size(k)) != 0;
}

static int sources_differ(const struct config *a, const struct config *b)
{
    if (a->nsources != b->nsources)
        return 1;
    for (size_t i = 0; i < a->nsources; i++) {
        const struct config_source *x = &a->sources[i], *y = &b->sources[i];
        if (strings_differ(x->name, y->name) || x->ncustom != y->ncustom)
            return 1;
        for (size_t k = 0; k < NSOURCE_KEYS; k++) {
            if (key_differs(&source_keys[k], x, y))
                return 1;
        }
        for (size_t c = 0; c < x->ncustom; c++) {
            if (strings_differ(x->custom[c].field, y->custom[c].field) ||
                strings_differ(x->custom[c].column, y->custom[c].column))
                return 1;
        }
    }
    return 0;
}

size_t config_reload_notes(const struct config *running, struct config *next)
{
    size_t notes = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->reloadable || !key_differs(k, running, next))
            continue;
        add_error(next, "[%s] %s changed: it takes effect after a restart", k->section, k->name);
        notes++;
    }
    if (sources_differ(running, next)) {
        add_error(next, "[source] sections changed: run omnisync migrate and restart");
        notes++;
    }
    return notes;
}

void config_apply_reload(struct config *running, struct config *next)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (!k->reloadable || !key_differs(k, running, next))
            continue;
        char *dst = (char *)running + k->offset, *src = (char *)next + k->offset;
        if (is_string_key(k)) {
            free(*(char **)dst);
            *(char **)dst = *(char **)src;
            *(char **)src = NULL;
        } else {
            memcpy(dst, src, value_size(k));
        }
    }
    if (next->api_key != NULL) {
        if (running->api_key != NULL) {
            explicit_bzero(running->api_key, strlen(running->api_key));
            free(running->api_key);
        }
        running->api_key = next->api_key;
        next->api_key = NULL;
    }
}

const struct config_source *config_find_source(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nsources; i++) {
        if (strcmp(cfg->sources[i].name, name) == 0)
            return &cfg->sources[i];
    }
    return NULL;
}

size_t config_source_columns(const struct config_source *src, const char **columns,
                             const char **fields, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < NSOURCE_KEYS && n < max; i++) {
        const char *column = *(char *const *)((const char *)src + source_keys[i].offset);
        if (source_keys[i].field == NULL || column == NULL)
            continue;
        columns[n] = column;
        fields[n] = source_keys[i].field;
        n++;
    }
    for (size_t i = 0; i < src->ncustom && n < max; i++) {
        columns[n] = src->custom[i].column;
        fields[n] = src->custom[i].param;
        n++;
    }
    return n;
}
