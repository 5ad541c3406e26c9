/* omnisync outbox list|show, replay, skip, status: the operator's view of the outbox. */
#include <getopt.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "operator.h"

struct outbox_opts {
    struct outbox_filter filter;
    int as_json;
    int show_data;
    int dry_run;
    int failed;
    const char *reason;
    int bad_limit;
};

static int on_option(int opt, const char *value, void *arg)
{
    struct outbox_opts *o = arg;
    char *end;
    switch (opt) {
    case 'S':
        o->filter.status = value;
        break;
    case 's':
        o->filter.source = value;
        break;
    case 'p':
        o->filter.primary_id = value;
        break;
    case 't':
        o->filter.since = value;
        break;
    case 'e':
        o->filter.error = value;
        break;
    case 'l':
        errno = 0;
        o->filter.limit = strtoll(value, &end, 10);
        if (*value < '0' || *value > '9' || *end != '\0' || errno == ERANGE || o->filter.limit <= 0)
            o->bad_limit = 1;
        break;
    case 'j':
        o->as_json = 1;
        break;
    case 'd':
        o->show_data = 1;
        break;
    case 'n':
        o->dry_run = 1;
        break;
    case 'f':
        o->failed = 1;
        break;
    case 'r':
        o->reason = value;
        break;
    default:
        return -1;
    }
    return 0;
}

static const struct option list_options[] = {
    {"status", required_argument, NULL, 'S'}, {"source", required_argument, NULL, 's'},
    {"primary-id", required_argument, NULL, 'p'}, {"since", required_argument, NULL, 't'},
    {"limit", required_argument, NULL, 'l'},  {"json", no_argument, NULL, 'j'},
    {NULL, 0, NULL, 0},
};
static const struct option show_options[] = {
    {"json", no_argument, NULL, 'j'}, {"show-data", no_argument, NULL, 'd'}, {NULL, 0, NULL, 0},
};
static const struct option replay_options[] = {
    {"failed", no_argument, NULL, 'f'},      {"since", required_argument, NULL, 't'},
    {"error", required_argument, NULL, 'e'}, {"source", required_argument, NULL, 's'},
    {"dry-run", no_argument, NULL, 'n'},     {"reason", required_argument, NULL, 'r'},
    {"json", no_argument, NULL, 'j'},        {NULL, 0, NULL, 0},
};
static const struct option skip_options[] = {
    {"reason", required_argument, NULL, 'r'}, {"dry-run", no_argument, NULL, 'n'},
    {"source", required_argument, NULL, 's'}, {"status", required_argument, NULL, 'S'},
    {"json", no_argument, NULL, 'j'},         {NULL, 0, NULL, 0},
};
static const struct option status_options[] = {
    {"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0},
};

/* The options of the command this process runs, and which one it is. */
static struct outbox_opts opts;
static enum { ACT_LIST, ACT_SHOW, ACT_REPLAY, ACT_SKIP } action;

/* CLI exit code for a library error: a missing row or nothing to do is 1, as is the rest. */
static int fail(struct cli *cli, const char *err)
{
    cli_error(cli, "%s", err);
    return CLI_ERROR;
}

static const char list_usage[] =
    "usage: omnisync [--config FILE] outbox list [--status STATUS] [--source NAME]\n"
    "                [--primary-id ID] [--since TIME] [--limit N] [--json]\n"
    "       omnisync [--config FILE] outbox show ID [--show-data] [--json]\n\n"
    "list: outbox rows, newest first (default limit 50). STATUS is pending, held, done, failed\n"
    "or skipped; TIME is a timestamp (2026-11-23 10:00) or a duration ago (2h, 7d).\n"
    "show: one row in full and every attempt's outcome. The payload's values (personal data)\n"
    "are shown only with --show-data.\n";

static int parse_list(struct cli *cli, int argc, char **argv)
{
    int first = cli_parse(cli, argc, argv, list_usage, list_options, on_option, &opts);
    if (first == -2)
        return CLI_DONE;
    if (first < 0)
        return CLI_USAGE;
    if (first < argc || opts.bad_limit) {
        cli_error(cli, opts.bad_limit ? "--limit must be a positive number"
                                      : "outbox list takes no arguments, only options");
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int run_list(struct cli *cli)
{
    char err[512];
    PGresult *res = NULL;
    int rc;
    int lrc = outbox_list(cli->conn, &opts.filter, &res, err, sizeof(err));
    if (lrc == OMNISYNC_EINVAL) {
        cli_error(cli, "%s", err);
        rc = CLI_USAGE;
    } else if (lrc != 0) {
        rc = fail(cli, err);
    } else {
        cli_print_result(res, opts.as_json, "no row matches");
        rc = CLI_OK;
    }
    PQclear(res);
    return rc;
}

static void print_row_vertical(const PGresult *row)
{
    for (int c = 0; c < PQnfields(row); c++)
        printf("%-17s %s\n", PQfname(row, c), PQgetisnull(row, 0, c) ? "" : PQgetvalue(row, 0, c));
}

static int parse_show(struct cli *cli, int argc, char **argv)
{
    int first = cli_parse(cli, argc, argv, list_usage, show_options, on_option, &opts);
    if (first == -2)
        return CLI_DONE;
    if (first < 0)
        return CLI_USAGE;
    int prc = cli_parse_ids(cli, argc, argv, first, &cli->ids, &cli->nids);
    if (prc != CLI_OK)
        return prc;
    if (cli->nids != 1) {
        cli_error(cli, "outbox show takes exactly one id");
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int run_show(struct cli *cli)
{
    char err[512];
    PGresult *row = NULL, *attempts = NULL;
    int rc;
    if (outbox_show(cli->conn, cli->ids[0], opts.show_data, &row, &attempts, err, sizeof(err)) !=
        0) {
        rc = fail(cli, err);
    } else if (opts.as_json) {
        /* One object: the row's fields plus "attempts": [...]. */
        printf("{\"row\":\n");
        cli_print_result(row, 1, NULL);
        printf(",\"attempts\":\n");
        cli_print_result(attempts, 1, NULL);
        printf("}\n");
        rc = CLI_OK;
    } else {
        print_row_vertical(row);
        printf("\nattempts:\n");
        cli_print_result(attempts, 0, "  (none)");
        rc = CLI_OK;
    }
    PQclear(row);
    PQclear(attempts);
    return rc;
}

/* outbox list | outbox show: the action word picks the parse and the run. */
static int parse_outbox(struct cli *cli, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        action = ACT_LIST;
        return parse_list(cli, argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "show") == 0) {
        action = ACT_SHOW;
        return parse_show(cli, argc - 1, argv + 1);
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s", list_usage);
        return CLI_DONE;
    }
    cli_error(cli, "which action: list or show?");
    fprintf(stderr, "%s", list_usage);
    return CLI_USAGE;
}

static int run_outbox(struct cli *cli)
{
    operator_move_captured(cli->conn);
    return action == ACT_LIST ? run_list(cli) : run_show(cli);
}

const struct cli_command cli_cmd_outbox = {
    .name = "outbox",
    .summary = "outbox list / outbox show ID: the rows and their attempts",
    .needs = CLI_NEED_DB,
    .parse = parse_outbox,
    .run = run_outbox,
};

/* replay and skip share the shape: ids or a filter, a reason, --dry-run, a table of rows. */
static int parse_act(struct cli *cli, int argc, char **argv, int skip, const char *usage,
                     const struct option *options)
{
    struct outbox_opts *o = &opts;
    action = skip ? ACT_SKIP : ACT_REPLAY;
    int first = cli_parse(cli, argc, argv, usage, options, on_option, o);
    if (first == -2)
        return CLI_DONE;
    if (first < 0)
        return CLI_USAGE;
    int prc = cli_parse_ids(cli, argc, argv, first, &cli->ids, &cli->nids);
    if (prc != CLI_OK)
        return prc;
    size_t n = cli->nids;
    if (skip && (n > 0) == (o->filter.source != NULL)) {
        cli_error(cli, "give the ids of the rows to skip, or --source NAME, not both");
        return CLI_USAGE;
    }
    if (skip && n > 0 && o->filter.status != NULL) {
        cli_error(cli, "--status goes with --source, not with ids");
        return CLI_USAGE;
    }
    if (skip && (o->reason == NULL || *o->reason == '\0')) {
        cli_error(cli, "skip needs --reason TEXT: why the row is given up");
        return CLI_USAGE;
    }
    if (!skip && (n > 0) == o->failed) {
        cli_error(cli, "give ids, or --failed (with optional --since/--error/--source), not both");
        return CLI_USAGE;
    }
    if (!skip && n > 0 && (o->filter.since || o->filter.error || o->filter.source)) {
        cli_error(cli, "--since, --error and --source go with --failed, not with ids");
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int run_act(struct cli *cli)
{
    /* Captured changes first (sql/003): the command acts on every committed change. */
    operator_move_captured(cli->conn);
    const struct outbox_opts *o = &opts;
    int skip = action == ACT_SKIP;
    size_t n = cli->nids;
    char err[1024];
    PGresult *rows = NULL;
    int rc = CLI_ERROR;
    int arc = skip ? outbox_skip(cli->conn, cli->ids, n, &o->filter, o->reason, o->dry_run, &rows,
                                 err, sizeof(err))
                   : outbox_replay(cli->conn, cli->ids, n, &o->filter, o->reason, o->dry_run, &rows,
                                   err, sizeof(err));
    if (arc == OMNISYNC_EINVAL && n == 0) {
        cli_error(cli, "%s", err);
        rc = CLI_USAGE;
    } else if (arc != 0) {
        cli_error(cli, "%s; nothing was changed", err);
    } else {
        if (!o->as_json)
            printf("%s %d row%s%s:\n",
                   o->dry_run ? "would"
                   : skip     ? "skipped"
                              : "replayed",
                   PQntuples(rows), PQntuples(rows) == 1 ? "" : "s",
                   o->dry_run ? (skip ? " be skipped" : " be replayed") : "");
        cli_print_result(rows, o->as_json, NULL);
        rc = CLI_OK;
    }
    PQclear(rows);
    return rc;
}

static int parse_replay(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: omnisync [--config FILE] replay ID... [--reason TEXT] [--dry-run] [--json]\n"
        "       omnisync [--config FILE] replay --failed [--since TIME] [--error TEXT]\n"
        "                [--source NAME] [--reason TEXT] [--dry-run] [--json]\n\n"
        "Puts failed rows back to pending with their attempts reset. A row superseded by a later\n"
        "delivery is refused: replaying it would send stale data. --dry-run lists what would\n"
        "change. Every replay is recorded with the database user, the time and the reason.\n";
    return parse_act(cli, argc, argv, 0, usage, replay_options);
}

static int parse_skip(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: omnisync [--config FILE] skip ID... --reason TEXT [--dry-run] [--json]\n"
        "       omnisync [--config FILE] skip --source NAME [--status pending|failed|held]\n"
        "                --reason TEXT [--dry-run] [--json]\n\n"
        "Gives rows up on purpose (failed, held, or pending and not being delivered): they become\n"
        "skipped and are never sent. --source takes every such row of one source (say, one\n"
        "removed from the configuration), --status narrows it. Recorded with the database user,\n"
        "the time and the reason.\n";
    return parse_act(cli, argc, argv, 1, usage, skip_options);
}

const struct cli_command cli_cmd_replay = {
    .name = "replay",
    .summary = "failed rows back to pending (ids or --failed); --dry-run",
    .needs = CLI_NEED_DB,
    .parse = parse_replay,
    .run = run_act,
};

const struct cli_command cli_cmd_skip = {
    .name = "skip",
    .summary = "give rows up on purpose, with --reason",
    .needs = CLI_NEED_DB,
    .parse = parse_skip,
    .run = run_act,
};

static int parse_status(struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: omnisync [--config FILE] status [--json]\n\n"
        "Counts by source and status, the oldest pending row's age, whether sending is paused,\n"
        "the latest failures, and the running processes with their circuit and API state.\n";
    int first;
    return cli_parse_operands(cli, argc, argv, usage, status_options, on_option, &opts, 0, &first);
}

static int run_status(struct cli *cli)
{
    operator_move_captured(cli->conn);
    char err[512];
    PGresult *counts = NULL, *failures = NULL, *processes = NULL, *reconciled = NULL;
    int rc;
    if (outbox_status(cli->conn, &counts, &failures, &processes, err, sizeof(err)) != 0 ||
        operator_reconcile_last_runs(cli->conn, &reconciled, err, sizeof(err)) != 0) {
        rc = fail(cli, err);
    } else if (opts.as_json) {
        printf("{\"sources\":\n");
        cli_print_result(counts, 1, NULL);
        printf(",\"recent_failures\":\n");
        cli_print_result(failures, 1, NULL);
        printf(",\"processes\":\n");
        cli_print_result(processes, 1, NULL);
        printf(",\"reconcile\":\n");
        cli_print_result(reconciled, 1, NULL);
        printf("}\n");
        rc = CLI_OK;
    } else {
        cli_print_result(counts, 0, "no source installed: run omnisync migrate");
        printf("\nprocesses:\n");
        cli_print_result(processes, 0, "  none running (none seen in the last minute)");
        printf("\nrecent failures:\n");
        cli_print_result(failures, 0, "  none");
        printf("\nlast reconcile:\n");
        cli_print_result(reconciled, 0, "  never run: see omnisync reconcile --help");
        rc = CLI_OK;
    }
    PQclear(counts);
    PQclear(failures);
    PQclear(processes);
    PQclear(reconciled);
    return rc;
}

const struct cli_command cli_cmd_status = {
    .name = "status",
    .summary = "counts by state, oldest pending age, last errors, processes; --json",
    .needs = CLI_NEED_DB,
    .parse = parse_status,
    .run = run_status,
};
