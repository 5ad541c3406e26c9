/*
 * cli: what the subcommands share. daemon/ stays thin: argument parsing and calls into lib/.
 * Exit codes (DESIGN §5): 0 success, 1 error, 2 usage.
 */
#ifndef OMNISYNC_CLI_H
#define OMNISYNC_CLI_H

#include <libpq-fe.h>

#include "config.h"

#define CLI_OK 0
#define CLI_ERROR 1
#define CLI_USAGE 2

/* What a command needs before it runs (struct cli_command.needs): main.c sets it up once, in
 * this order, and tears it down after the command, whatever it returns. */
#define CLI_NEED_CONFIG 1u /* cli->cfg: the config, loaded and checked; errors printed, exit 1 */
#define CLI_NEED_KEY 2u    /* the API key too (implies the config) */
#define CLI_NEED_DB 4u     /* cli->conn: connected to [database] conninfo (implies the config) */

/* A parse hook's answer besides CLI_OK and CLI_USAGE: --help was printed, exit 0. */
#define CLI_DONE (-1)

struct cli {
    const char *config_path; /* --config, NULL for the default */
    const char *command;
    struct config cfg; /* CLI_NEED_CONFIG: loaded by main.c, freed after the command */
    PGconn *conn;      /* CLI_NEED_DB: connected by main.c, closed after the command */
    long long *ids;    /* operands as outbox ids (cli_parse_ids), freed by main.c */
    size_t nids;
};

/*
 * One command (OpenSMTPD smtpctl's way): what it needs, and its steps. A command's own options
 * live in a file-static struct of its file (the process runs one command). To add a command,
 * write daemon/cmd_NAME.c defining `const struct cli_command cli_cmd_NAME`, declare it below and
 * list it in main.c's table.
 */
struct cli_command {
    const char *name;
    const char *summary;
    unsigned needs; /* CLI_NEED_* */
    /* Options and operands (argv[0] is the command's name), before any set-up: CLI_OK to go on,
     * CLI_USAGE (after printing why) or CLI_DONE (after --help). */
    int (*parse)(struct cli *cli, int argc, char **argv);
    /* Optional: checks that need the config (a source's name), before connecting; CLI_OK or an
     * exit code. */
    int (*prepare)(struct cli *cli);
    /* The work, with what `needs` asked for set up; returns the exit code. */
    int (*run)(struct cli *cli);
};

/* Loads the config (and the API key when need_key); prints every error. CLI_OK or CLI_ERROR;
 * `cfg` must be freed with config_free() either way. */
int cli_load_config(struct cli *cli, struct config *cfg, int need_key);
/* Connects to the configured database; prints a redacted reason on failure. */
PGconn *cli_connect(const struct config *cfg, const char *purpose);
/* Prints "omnisync COMMAND: message" to stderr. */
void cli_error(const struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Parses the options every command accepts (--help, --config FILE) plus `extra` getopt_long
 * options; for each extra option found calls on_option(opt, optarg, arg). Returns the index of
 * the first operand, -1 after printing usage (exit CLI_USAGE), or -2 after --help (exit CLI_OK).
 */
struct option;
int cli_parse(struct cli *cli, int argc, char **argv, const char *usage,
              const struct option *extra, int (*on_option)(int opt, const char *value, void *arg),
              void *arg);
/*
 * cli_parse for a command that takes at most `max_operands` operands (-1: any): CLI_OK with the
 * index of the first operand in *first, CLI_USAGE (an unknown option, or "unexpected argument"),
 * or CLI_DONE after --help.
 */
int cli_parse_operands(struct cli *cli, int argc, char **argv, const char *usage,
                       const struct option *extra,
                       int (*on_option)(int opt, const char *value, void *arg), void *arg,
                       int max_operands, int *first);

/* Prints a result as an aligned table, or as a JSON array of objects; `empty` (may be NULL) is
 * printed instead of an empty table. */
void cli_print_result(const PGresult *res, int as_json, const char *empty);
/* Parses argv[first..argc) as outbox ids into a malloc'd array: CLI_OK, CLI_USAGE or CLI_ERROR. */
int cli_parse_ids(struct cli *cli, int argc, char **argv, int first, long long **ids, size_t *n);

/* The commands (daemon/cmd_*.c), listed in main.c. */
extern const struct cli_command cli_cmd_run;
extern const struct cli_command cli_cmd_migrate;
extern const struct cli_command cli_cmd_check;
extern const struct cli_command cli_cmd_status;
extern const struct cli_command cli_cmd_outbox;
extern const struct cli_command cli_cmd_replay;
extern const struct cli_command cli_cmd_skip;
extern const struct cli_command cli_cmd_backfill;
extern const struct cli_command cli_cmd_reconcile;
extern const struct cli_command cli_cmd_pause;
extern const struct cli_command cli_cmd_resume;
extern const struct cli_command cli_cmd_purges;
extern const struct cli_command cli_cmd_version;

#endif
