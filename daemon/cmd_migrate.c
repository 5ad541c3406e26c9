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

int cmd_migrate(struct cli *cli, int argc, char **argv)
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
    if (cli_load_config(cli, &cfg, 0) != CLI_OK) {
        config_free(&cfg);
        return CLI_ERROR;
    }
    int rc = CLI_ERROR;
    PGconn *conn = cli_connect(&cfg, "migrate");
    if (conn != NULL) {
        char err[1024];
        int changes = 0;
        if (schema_migrate(conn, &cfg, report, &changes, err, sizeof(err)) != 0) {
            cli_error(cli, "%s; nothing was changed", err);
        } else {
            printf("%s\n", changes ? "migrate: done" : "migrate: nothing to change");
            rc = CLI_OK;
        }
        PQfinish(conn);
    }
    config_free(&cfg);
    return rc;
}
