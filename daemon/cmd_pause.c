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

static struct pause_opts opts;

static const char pause_usage[] =
    "usage: omnisync [--config FILE] pause [--source NAME] [--reason TEXT] [--json]\n\n"
    "Stops sending for every running omnisync process, within a second: no new rows are\n"
    "claimed, requests in flight finish. Changes keep queueing in the outbox. Without\n"
    "--source, every source is paused. Undo with omnisync resume.\n";

static const char resume_usage[] =
    "usage: omnisync [--config FILE] resume [--source NAME] [--reason TEXT] [--json]\n\n"
    "Clears a pause set by omnisync pause (for --source NAME, or the pause of all sources);\n"
    "running processes start claiming at once.\n";

static int parse_pause(struct cli *cli, int argc, char **argv)
{
    int first;
    return cli_parse_operands(cli, argc, argv, pause_usage, options, on_option, &opts, 0, &first);
}

static int parse_resume(struct cli *cli, int argc, char **argv)
{
    int first;
    return cli_parse_operands(cli, argc, argv, resume_usage, options, on_option, &opts, 0, &first);
}

static int prepare(struct cli *cli)
{
    if (opts.source != NULL && config_find_source(&cli->cfg, opts.source) == NULL) {
        cli_error(cli, "no source \"%s\" in %s", opts.source, cli->cfg.path);
        return CLI_ERROR;
    }
    return CLI_OK;
}

static int set_paused(struct cli *cli, int paused)
{
    char err[512];
    PGresult *res = NULL;
    int rc = CLI_ERROR;
    if (outbox_set_paused(cli->conn, opts.source, paused, opts.reason, err, sizeof(err)) != 0 ||
        outbox_pause_flags(cli->conn, &res, err, sizeof(err)) != 0) {
        cli_error(cli, "%s", err);
    } else {
        if (!opts.as_json)
            printf("%s: %s\n", paused ? "paused" : "resumed",
                   opts.source ? opts.source : "all sources");
        cli_print_result(res, opts.as_json, NULL);
        rc = CLI_OK;
    }
    PQclear(res);
    return rc;
}

static int run_pause(struct cli *cli)
{
    return set_paused(cli, 1);
}

static int run_resume(struct cli *cli)
{
    return set_paused(cli, 0);
}

const struct cli_command cli_cmd_pause = {
    .name = "pause",
    .summary = "stop sending (every process, within a second); changes keep queueing",
    .needs = CLI_NEED_DB,
    .parse = parse_pause,
    .prepare = prepare,
    .run = run_pause,
};

const struct cli_command cli_cmd_resume = {
    .name = "resume",
    .summary = "start sending again after a pause",
    .needs = CLI_NEED_DB,
    .parse = parse_resume,
    .prepare = prepare,
    .run = run_resume,
};
