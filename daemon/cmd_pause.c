/* omnisync pause / resume: stored in the database, so every running process obeys. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "operator.h"

struct pause_opts {
    const char *source;
    const char *reason;
    int as_json;
};

static int on_option(int opt, const char *value, void *arg)
{
    struct pause_opts *o = arg;
    if (opt == 's')
        o->source = value;
    else if (opt == 'r')
        o->reason = value;
    else if (opt == 'j')
        o->as_json = 1;
    else
        return -1;
    return 0;
}

static const struct option options[] = {
    {"source", required_argument, NULL, 's'},
    {"reason", required_argument, NULL, 'r'},
    {"json", no_argument, NULL, 'j'},
    {NULL, 0, NULL, 0},
};

static int set_paused(struct cli *cli, int argc, char **argv, int paused, const char *usage)
{
    struct pause_opts o = {0};
    int first = cli_parse(cli, argc, argv, usage, options, on_option, &o);
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
    if (o.source != NULL && config_find_source(&cfg, o.source) == NULL) {
        cli_error(cli, "no source \"%s\" in %s", o.source, cfg.path);
        config_free(&cfg);
        return CLI_ERROR;
    }
    PGconn *conn = cli_connect(&cfg, cli->command);
    if (conn != NULL) {
        char err[512];
        PGresult *res = NULL;
        if (outbox_set_paused(conn, o.source, paused, o.reason, err, sizeof(err)) != 0 ||
            outbox_pause_flags(conn, &res, err, sizeof(err)) != 0) {
            cli_error(cli, "%s", err);
        } else {
            if (!o.as_json)
                printf("%s: %s\n", paused ? "paused" : "resumed",
                       o.source ? o.source : "all sources");
            cli_print_result(res, o.as_json, NULL);
            rc = CLI_OK;
        }
        PQclear(res);
        PQfinish(conn);
    }
    config_free(&cfg);
    return rc;
}

int cmd_pause(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: omnisync [--config FILE] pause [--source NAME] [--reason TEXT] [--json]\n\n"
        "Stops sending for every running omnisync process, within a second: no new rows are\n"
        "claimed, requests in flight finish. Changes keep queueing in the outbox. Without\n"
        "--source, every source is paused. Undo with omnisync resume.\n";
    return set_paused(cli, argc, argv, 1, usage);
}

int cmd_resume(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: omnisync [--config FILE] resume [--source NAME] [--reason TEXT] [--json]\n\n"
        "Clears a pause set by omnisync pause (for --source NAME, or the pause of all sources);\n"
        "running processes start claiming at once.\n";
    return set_paused(cli, argc, argv, 0, usage);
}
