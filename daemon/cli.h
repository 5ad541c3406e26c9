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

struct cli {
    const char *config_path; /* --config, NULL for the default */
    const char *command;
};

struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(struct cli *cli, int argc, char **argv);
};

extern const struct cli_command cli_commands[];

/* Loads the config (and the API key when need_key); prints every error. CLI_OK or CLI_ERROR. */
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

/* Prints a result as an aligned table, or as a JSON array of objects; `empty` (may be NULL) is
 * printed instead of an empty table. */
void cli_print_result(const PGresult *res, int as_json, const char *empty);
/* Parses argv[first..argc) as outbox ids into a malloc'd array: CLI_OK, CLI_USAGE or CLI_ERROR. */
int cli_parse_ids(struct cli *cli, int argc, char **argv, int first, long long **ids, size_t *n);

int cmd_run(struct cli *cli, int argc, char **argv);
int cmd_pause(struct cli *cli, int argc, char **argv);
int cmd_resume(struct cli *cli, int argc, char **argv);
int cmd_purges(struct cli *cli, int argc, char **argv);
int cmd_status(struct cli *cli, int argc, char **argv);
int cmd_outbox(struct cli *cli, int argc, char **argv);
int cmd_replay(struct cli *cli, int argc, char **argv);
int cmd_skip(struct cli *cli, int argc, char **argv);
int cmd_backfill(struct cli *cli, int argc, char **argv);
int cmd_reconcile(struct cli *cli, int argc, char **argv);
int cmd_migrate(struct cli *cli, int argc, char **argv);
int cmd_check(struct cli *cli, int argc, char **argv);
int cmd_version(struct cli *cli, int argc, char **argv);

#endif
