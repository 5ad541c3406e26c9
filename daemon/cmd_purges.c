/* omnisync purges list|release|skip: decide about purges held by the purge guard. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "operator.h"

static const char usage[] =
    "usage: omnisync [--config FILE] purges list [--json]\n"
    "       omnisync [--config FILE] purges release ID... | --all [--reason TEXT]\n"
    "       omnisync [--config FILE] purges skip ID... | --all --reason TEXT\n\n"
    "Purges beyond max_purges_per_hour wait in status held instead of being sent (purging is\n"
    "irreversible at Omnidesk). list shows them; release sends them (the operator's decision\n"
    "overrides the guard); skip gives them up, with a reason. Every action is recorded with the\n"
    "database user, the time and the reason.\n";

struct purges_opts {
    int all;
    int as_json;
    const char *reason;
};

static int on_option(int opt, const char *value, void *arg)
{
    struct purges_opts *o = arg;
    if (opt == 'a')
        o->all = 1;
    else if (opt == 'j')
        o->as_json = 1;
    else if (opt == 'r')
        o->reason = value;
    else
        return -1;
    return 0;
}

static const struct option options[] = {
    {"all", no_argument, NULL, 'a'},
    {"json", no_argument, NULL, 'j'},
    {"reason", required_argument, NULL, 'r'},
    {NULL, 0, NULL, 0},
};

static struct purges_opts opts;
static int list, skip;

static int parse(struct cli *cli, int argc, char **argv)
{
    struct purges_opts *o = &opts;
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            printf("%s", usage);
            return CLI_DONE;
        }
        cli_error(cli, "which action: list, release or skip?");
        fprintf(stderr, "%s", usage);
        return CLI_USAGE;
    }
    const char *action = argv[1];
    int release = strcmp(action, "release") == 0;
    list = strcmp(action, "list") == 0;
    skip = strcmp(action, "skip") == 0;
    if (!list && !release && !skip) {
        cli_error(cli, "unknown action \"%s\": list, release or skip", action);
        fprintf(stderr, "%s", usage);
        return CLI_USAGE;
    }
    int first = cli_parse(cli, argc - 1, argv + 1, usage, options, on_option, o);
    if (first == -2)
        return CLI_DONE;
    if (first < 0)
        return CLI_USAGE;
    first += 1;
    if (list && first < argc) {
        cli_error(cli, "purges list takes no ids");
        return CLI_USAGE;
    }
    if (!list) {
        int prc = cli_parse_ids(cli, argc, argv, first, &cli->ids, &cli->nids);
        if (prc != CLI_OK)
            return prc;
        if ((cli->nids == 0) == !o->all) {
            cli_error(cli, "give the ids of held purges, or --all (not both)");
            return CLI_USAGE;
        }
        if (skip && (o->reason == NULL || *o->reason == '\0')) {
            cli_error(cli, "skipping a purge needs --reason TEXT");
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}

static int run(struct cli *cli)
{
    char err[512];
    int rc = CLI_ERROR;
    if (list) {
        PGresult *res = NULL;
        if (outbox_held_purges(cli->conn, &res, err, sizeof(err)) != 0) {
            cli_error(cli, "%s", err);
        } else {
            cli_print_result(res, opts.as_json, "no purge is held");
            rc = CLI_OK;
        }
        PQclear(res);
        return rc;
    }
    long long changed = 0;
    char *not_held = NULL;
    if (outbox_release_purges(cli->conn, cli->ids, cli->nids, opts.all, skip, opts.reason, &changed,
                              &not_held, err, sizeof(err)) != 0) {
        cli_error(cli, "%s; nothing was changed", err);
    } else {
        printf("%s %lld held purge%s\n", skip ? "skipped" : "released", changed,
               changed == 1 ? "" : "s");
        rc = CLI_OK;
    }
    free(not_held);
    return rc;
}

const struct cli_command cli_cmd_purges = {
    .name = "purges",
    .summary = "list, release or skip purges held by the purge guard",
    .needs = CLI_NEED_DB,
    .parse = parse,
    .run = run,
};
