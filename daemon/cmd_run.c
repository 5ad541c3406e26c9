/* omnisync run: the daemon, in the foreground. */
#include <stdio.h>

#include "cli.h"
#include "service.h"

static const char usage[] =
    "usage: omnisync [--config FILE] run\n\n"
    "Runs the daemon in the foreground: listens for changes, delivers the outbox to Omnidesk.\n"
    "SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the configuration (a configuration with\n"
    "errors is refused and the running one kept). Logs go to stderr.\n"
    "Refuses to start, with exit status 78, when the database schema is older than this\n"
    "omnisync needs: run omnisync migrate first (after every upgrade).\n";

static int parse(struct cli *cli, int argc, char **argv)
{
    int first;
    return cli_parse_operands(cli, argc, argv, usage, NULL, NULL, NULL, 0, &first);
}

static int run(struct cli *cli)
{
    /* The service takes the config over and frees it. */
    int rc = service_run(&cli->cfg, cli->config_path);
    return rc == 0 || rc == SERVICE_EXIT_SCHEMA_TOO_OLD ? rc : CLI_ERROR;
}

const struct cli_command cli_cmd_run = {
    .name = "run",
    .summary = "the daemon, in the foreground (systemd runs this)",
    .needs = CLI_NEED_CONFIG | CLI_NEED_KEY,
    .parse = parse,
    .run = run,
};
