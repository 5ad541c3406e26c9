/*
 * config: the INI file of DESIGN §6 parsed into a typed struct.
 *
 * One declarative table lists every key: its section, type, default and whether SIGHUP may change
 * it. Parsing is all-or-nothing: every error is collected (each naming file:line and the key),
 * and a config with errors is never handed out, so a failed reload keeps the running config.
 * Environment variables OMNISYNC_<SECTION>_<KEY> override file values.
 *
 * Secrets: the API key is read from a file or the environment into memory that config_free wipes;
 * it is never part of an error message. conninfo may hold a password and is never echoed.
 */
#ifndef OMNISYNC_CONFIG_H
#define OMNISYNC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "log.h"

#define CONFIG_DEFAULT_PATH "/etc/omnisync/omnisync.conf"
#define CONFIG_MAX_SOURCES 32
#define CONFIG_MAX_CUSTOM 32
#define CONFIG_MAX_ERRORS 64
#define CONFIG_NAME_MAX 63 /* PostgreSQL's identifier limit */

enum config_purge_endpoint { CONFIG_PURGE_V2 = 0, CONFIG_PURGE_LEGACY };
enum config_on_delete { CONFIG_ON_DELETE_PURGE = 0, CONFIG_ON_DELETE_IGNORE };
/* [source] names: what to do with a name the API's pattern refuses (DESIGN §2). */
enum config_names { CONFIG_NAMES_TRANSLITERATE = 0, CONFIG_NAMES_STRICT };

struct config_custom {
    char *field;  /* Omnidesk custom field name, sent as custom_<field> */
    char *column; /* CRM column */
    char *param;  /* "custom_<field>", the API parameter and the outbox payload key */
};

struct config_source {
    char *name;  /* from [source NAME]: [a-z0-9_]+ */
    int line;    /* line of the section header, for messages */
    char *table; /* "schema.table" or "table" */
    char *primary_id;
    char *firstname;
    char *lastname;
    char *email;
    char *telephone;
    char *brand_id_column;
    char *erase_flag;
    int normalize_names;        /* trim and collapse spaces before validating */
    char *phone_default_prefix; /* e.g. "+31": normalise phones to E.164; NULL = off */
    enum config_names names;    /* transliterate (default) or strict */
    struct config_custom custom[CONFIG_MAX_CUSTOM];
    size_t ncustom;
};

struct config {
    char *path; /* the file read, for messages */

    /* [database] */
    char *conninfo;

    /* [omnidesk] */
    char *base_url;
    char *api_key_file;
    char api_key_file_where[300]; /* "file:line" of api_key_file, for messages */
    long long brand_id;
    long long timeout_ms;
    long long max_in_flight;
    double rate_per_sec;
    enum config_purge_endpoint purge_endpoint;

    /* [delivery] */
    long long max_attempts;
    long long backoff_initial_ms;
    long long backoff_max_ms;
    long long batch_size;
    enum config_on_delete on_delete;
    long long max_purges_per_hour;
    uint64_t retention_ms;
    uint64_t payload_retention_ms;
    uint64_t poll_interval_ms;
    uint64_t shutdown_timeout_ms;
    uint64_t max_retry_after_ms; /* [omnidesk] max_retry_after: the longest pause a 429 gets */

    /* [health] */
    char *listen; /* as written; "" = disabled */
    char health_host[64];
    int health_port; /* -1 when disabled */
    int health_loopback; /* health_host is a loopback address */

    /* [reconcile] */
    uint64_t reconcile_interval_ms; /* 0 = only on demand */

    /* [log] */
    enum log_level log_level;
    enum log_format log_format;

    struct config_source sources[CONFIG_MAX_SOURCES];
    size_t nsources;

    /* Loaded by config_load_api_key(); wiped by config_free(). */
    char *api_key;

    /* Every problem found, "file:line: [section] key: what is wrong". */
    char *errors[CONFIG_MAX_ERRORS];
    size_t nerrors;
    size_t nerrors_dropped;
};

/*
 * Parses `path` (NULL: $OMNISYNC_CONFIG, then CONFIG_DEFAULT_PATH) into `cfg`, then applies
 * environment overrides and checks the whole. Returns 0, or OMNISYNC_ECONFIG with every problem in
 * cfg->errors. In both cases config_free(cfg) must be called.
 */
int config_load(struct config *cfg, const char *path) OMNISYNC_MUST_CHECK;

/*
 * Reads the API key: api_key_file, else $CREDENTIALS_DIRECTORY/omnidesk-api-key, else
 * $OMNISYNC_API_KEY. A key file readable by group or others is refused. Returns 0 or
 * OMNISYNC_ECONFIG with the reason appended to cfg->errors.
 */
int config_load_api_key(struct config *cfg) OMNISYNC_MUST_CHECK;

/* Releases everything `cfg` owns and wipes the API key. Safe on a zeroed struct. */
void config_free(struct config *cfg);

/* Prints every error to stderr, one per line, prefixed with "omnisync: ". */
void config_print_errors(const struct config *cfg);

/*
 * For SIGHUP, before anything is applied: appends to `next->errors` a note for each changed key
 * that needs a restart (they keep their running value when applied). Returns the number of notes.
 */
size_t config_reload_notes(const struct config *running, struct config *next);

/*
 * For SIGHUP, once every part of the daemon has accepted `next`: moves the reloadable keys
 * (rates, timeouts, log level and format, attempts, backoff, guard, retention, the API key) from
 * `next` into `running`. Cannot fail, so a reload is all or nothing.
 */
void config_apply_reload(struct config *running, struct config *next);

/* Parses "500ms", "30s", "15m", "12h", "7d" into milliseconds: 0 or OMNISYNC_EINVAL. */
int config_parse_duration(const char *text, uint64_t *out_ms) OMNISYNC_MUST_CHECK;

/* Finds a source by name, or NULL. */
const struct config_source *config_find_source(const struct config *cfg, const char *name);

/* A source's mapped columns in a fixed order (primary id first), for triggers and mapping.
 * Fills `columns` with up to `max` column names and `fields` with the matching Omnidesk field
 * names ("primary_id", "firstname", ..., "custom_<name>", "brand_id", "erase"). Returns the count. */
size_t config_source_columns(const struct config_source *src, const char **columns,
                             const char **fields, size_t max);

#endif
