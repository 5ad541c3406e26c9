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

int cmd_run(struct cli *cli, int argc, char **argv)
{
    int first = cli_parse(cli, argc, argv, usage, NULL, NULL, NULL);
    if (first == -2)
        return CLI_OK;
    if (first < 0)
        return CLI_USAGE;
    if (first < argc) {
        cli_error(cli, "unexpected argument \"%s\"", argv[first]);
        return CLI_USAGE;
    }
    struct config cfg;
    if (cli_load_config(cli, &cfg, 1) != CLI_OK) {
        config_free(&cfg);
        return CLI_ERROR;
    }
    /* The service takes the config over and frees it. */
    int rc = service_run(&cfg, cli->config_path);
    return rc == 0 || rc == SERVICE_EXIT_SCHEMA_TOO_OLD ? rc : CLI_ERROR;
}
