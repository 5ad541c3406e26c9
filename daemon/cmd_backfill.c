/* omnisync backfill --source NAME: enqueue every existing row of a source. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backfill.h"
#include "cli.h"

static const char usage[] =
    "usage: omnisync [--config FILE] backfill --source NAME [--batch N] [--window N]\n"
    "                [--restart]\n\n"
    "Enqueues every existing row of a source into the outbox (the initial sync, or a resync\n"
    "after a TRUNCATE); a running omnisync run delivers them. Works in batches (--batch, default\n"
    "1000), each committed with its progress, so an interrupted backfill (Ctrl-C, SIGTERM)\n"
    "resumes where it stopped when run again, without enqueueing a row twice; --restart starts\n"
    "over. It adds a batch only while fewer than --window (default: one batch; 0 = no limit) of\n"
    "its rows wait undelivered, so live changes never queue behind the backfill.\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

struct backfill_cli {
    const char *source;
    long long batch;
    long long window;
    int window_set;
    int restart;
    int bad_number;
    time_t last_report;
};

static int on_option(int opt, const char *value, void *arg)
{
    struct backfill_cli *o = arg;
    char *end;
    switch (opt) {
    case 's':
        o->source = value;
        return 0;
    case 'b':
        o->batch = strtoll(value, &end, 10);
        o->bad_number |= *value == '\0' || *end != '\0' || o->batch <= 0 || o->batch > 100000;
        return 0;
    case 'w':
        o->window = strtoll(value, &end, 10);
        o->window_set = 1;
        o->bad_number |= *value == '\0' || *end != '\0' || o->window < 0;
        return 0;
    case 'r':
        o->restart = 1;
        return 0;
    }
    return -1;
}

static void progress(void *arg, long long enqueued, long long pending, int waiting)
{
    struct backfill_cli *o = arg;
    time_t now = time(NULL);
    if (now - o->last_report < 5 && !(waiting == 0 && enqueued == 0))
        return;
    o->last_report = now;
    if (waiting)
        printf("backfill: %lld rows enqueued; waiting for omnisync run to deliver (%lld pending)\n",
               enqueued, pending);
    else
        printf("backfill: %lld rows enqueued\n", enqueued);
    fflush(stdout);
}

static struct backfill_cli opts;

static int parse(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"source", required_argument, NULL, 's'}, {"batch", required_argument, NULL, 'b'},
        {"window", required_argument, NULL, 'w'}, {"restart", no_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    struct backfill_cli *o = &opts;
    int first = cli_parse(cli, argc, argv, usage, options, on_option, o);
    if (first == -2)
        return CLI_DONE;
    if (first < 0)
        return CLI_USAGE;
    if (first < argc || o->source == NULL || o->bad_number) {
        cli_error(cli, o->bad_number ? "--batch must be 1..100000 and --window 0 or more"
                                     : "give --source NAME (and no other argument)");
        fprintf(stderr, "%s", usage);
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int prepare(struct cli *cli)
{
    if (config_find_source(&cli->cfg, opts.source) == NULL) {
        cli_error(cli, "no source \"%s\" in %s", opts.source, cli->cfg.path);
        return CLI_ERROR;
    }
    return CLI_OK;
}

static int run(struct cli *cli)
{
    struct backfill_cli *o = &opts;
    const struct config_source *src = config_find_source(&cli->cfg, o->source);
    int rc = CLI_ERROR;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct backfill_options bo = {
        .batch = o->batch,
        .window = o->window_set ? o->window : 0,
        .restart = o->restart,
        .stop = &stop_requested,
        .progress = progress,
        .arg = o,
    };
    if (o->window_set && o->window == 0)
        bo.window = -1; /* no limit */
    long long enqueued = 0;
    char err[512];
    int brc = backfill_run(cli->conn, src, &bo, &enqueued, err, sizeof(err));
    if (brc == 0) {
        printf("backfill: done, %lld rows enqueued for source %s\n", enqueued, src->name);
        rc = CLI_OK;
    } else if (brc == OMNISYNC_ECANCELED) {
        printf("backfill: interrupted after %lld rows; run it again to resume\n", enqueued);
        rc = CLI_ERROR;
    } else {
        cli_error(cli, "%s (%lld rows enqueued; run it again to resume)", err, enqueued);
    }
    return rc;
}

const struct cli_command cli_cmd_backfill = {
    .name = "backfill",
    .summary = "enqueue every existing row of a source (initial sync), resumable",
    .needs = CLI_NEED_DB,
    .parse = parse,
    .prepare = prepare,
    .run = run,
};
