/* omnisync check: is this configuration ready to run? */
#include <stdio.h>

#include "cli.h"
#include "log.h"
#include "schema.h"

static const char usage[] =
    "usage: omnisync [--config FILE] check\n\n"
    "Validates the configuration (every error with its line), reads the API key, connects to\n"
    "the database and reports the schema version. Exit 0 when everything is ready.\n";

int cmd_check(struct cli *cli, int argc, char **argv)
{
    int first = cli_parse(cli, argc, argv, usage, NULL, NULL, NULL);
    if (first == -2)
        return CLI_OK;
    if (first < 0)
        return CLI_USAGE;
    struct config cfg;
    if (cli_load_config(cli, &cfg, 1) != CLI_OK) {
        config_free(&cfg);
        return CLI_ERROR;
    }
    printf("config: %s is valid (%zu source%s)\n", cfg.path, cfg.nsources,
           cfg.nsources == 1 ? "" : "s");
    printf("api key: loaded\n");

    int rc = CLI_ERROR;
    PGconn *conn = cli_connect(&cfg, "check");
    if (conn != NULL) {
        char where[512], err[512];
        log_conninfo_redacted(cfg.conninfo, where, sizeof(where));
        printf("database: connected (%s)\n", where[0] ? where : "libpq defaults");
        int version = schema_version(conn, err, sizeof(err));
        if (version < 0) {
            cli_error(cli, "reading the schema version: %s", err);
        } else if (version < schema_latest_version()) {
            cli_error(cli, "schema version %d, this omnisync needs %d: run omnisync migrate",
                      version, schema_latest_version());
        } else {
            printf("schema: version %d\n", version);
            rc = CLI_OK;
        }
        PQfinish(conn);
    }
    config_free(&cfg);
    return rc;
}
