/* omnisync migrate: create or upgrade the schema and install the sources' triggers. */
#include <stdio.h>

#include "cli.h"
#include "schema.h"

static const char usage[] =
    "usage: omnisync [--config FILE] migrate\n\n"
    "Creates or upgrades the omnisync schema and (re)installs the capture triggers of the\n"
    "configured sources; drops the triggers of sources no longer configured. Idempotent: a second\n"
    "run changes nothing. Runs in one transaction: on any error the database is left untouched.\n";

static void report(void *arg, int changed, const char *what)
{
    int *changes = arg;
    *changes += changed;
    printf("%s %s\n", changed ? "changed:" : "ok:     ", what);
}

static int parse(struct cli *cli, int argc, char **argv)
{
    int first;
    return cli_parse_operands(cli, argc, argv, usage, NULL, NULL, NULL, 0, &first);
}

static int run(struct cli *cli)
{
    char err[1024];
    int changes = 0;
    if (schema_migrate(cli->conn, &cli->cfg, report, &changes, err, sizeof(err)) != 0) {
        cli_error(cli, "%s; nothing was changed", err);
        return CLI_ERROR;
    }
    printf("%s\n", changes ? "migrate: done" : "migrate: nothing to change");
    return CLI_OK;
}

const struct cli_command cli_cmd_migrate = {
    .name = "migrate",
    .summary = "create or upgrade the schema and install the triggers of the sources",
    .needs = CLI_NEED_DB,
    .parse = parse,
    .run = run,
};
