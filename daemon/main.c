/*
 * omnisync: one binary, one subcommand per job (DESIGN §5).
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "cli.h"
#include "validate.h"

/* The commands, in the order --help lists them. */
static const struct cli_command *const commands[] = {
    &cli_cmd_run,       &cli_cmd_migrate, &cli_cmd_check,  &cli_cmd_status,
    &cli_cmd_outbox,    &cli_cmd_replay,  &cli_cmd_skip,   &cli_cmd_backfill,
    &cli_cmd_reconcile, &cli_cmd_pause,   &cli_cmd_resume, &cli_cmd_purges,
    &cli_cmd_version,
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out, "usage: omnisync [--config FILE] COMMAND [OPTIONS]\n\n"
                 "Keeps Omnidesk's customer records in step with a CRM database.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out, "\nOptions:\n"
                 "  --config FILE  configuration file (default $OMNISYNC_CONFIG, then %s)\n"
                 "  --help         this text; COMMAND --help describes a command\n",
            CONFIG_DEFAULT_PATH);
}

/*
 * Runs one command: its options and operands first (a usage error never needs the config), then
 * what it declared it needs, once, here: the config, the API key, the database. Whatever the
 * command returns, what was set up is released.
 */
static int run_command(const struct cli_command *c, struct cli *cli, int argc, char **argv)
{
    unsigned needs = c->needs;
    int rc = c->parse(cli, argc, argv);
    if (rc == CLI_DONE)
        return CLI_OK;
    if (rc != CLI_OK)
        goto out;
    if (needs & (CLI_NEED_KEY | CLI_NEED_DB))
        needs |= CLI_NEED_CONFIG;
    if ((needs & CLI_NEED_CONFIG) &&
        (rc = cli_load_config(cli, &cli->cfg, (needs & CLI_NEED_KEY) != 0)) != CLI_OK)
        goto out;
    if (c->prepare != NULL && (rc = c->prepare(cli)) != CLI_OK)
        goto out;
    if (needs & CLI_NEED_DB) {
        cli->conn = cli_connect(&cli->cfg, cli->command);
        if (cli->conn == NULL) {
            rc = CLI_ERROR;
            goto out;
        }
    }
    rc = c->run(cli);
out:
    if (cli->conn != NULL)
        PQfinish(cli->conn);
    cli->conn = NULL;
    if (needs & CLI_NEED_CONFIG)
        config_free(&cli->cfg); /* safe after a command that freed it (run) */
    free(cli->ids);
    cli->ids = NULL;
    return rc;
}

int main(int argc, char **argv)
{
    struct cli cli = {0};

    /* The API key lives in this process' memory: no core dumps, no ptrace by other users. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* The transliterator of names, if a command opened one: released so a leak check is clean. */
    atexit(validate_close);

    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, "+hc:V", options, NULL);
        if (opt == -1)
            break;
        switch (opt) {
        case 'c':
            cli.config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        case 'V':
            cli.command = "version";
            return run_command(&cli_cmd_version, &cli, 1, (char *[]){"version", NULL});
        default:
            fprintf(stderr, "omnisync: unknown option or missing value: %s\n", argv[optind - 1]);
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "omnisync: no command given\n");
        usage(stderr);
        return CLI_USAGE;
    }
    cli.command = argv[optind];
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i]->name, cli.command) == 0)
            return run_command(commands[i], &cli, argc - optind, argv + optind);
    }
    fprintf(stderr, "omnisync: unknown command \"%s\"\n", cli.command);
    usage(stderr);
    return CLI_USAGE;
}
