/* omnisync reconcile: read Omnidesk back, compare with the CRM, report (and repair) drift. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "reconcile_run.h"

#define CLI_DRIFT 3

static const char usage[] =
    "usage: omnisync [--config FILE] reconcile [--source NAME] [--repair] [--json] [--show-data]\n"
    "                [--rate N]\n\n"
    "Reads every customer of the configured brand back from Omnidesk (the index endpoint, page\n"
    "by page) and compares each CRM row with it on what omnisync sends: names, the email and\n"
    "telephone channels and custom fields. Reports per customer: missing (not at Omnidesk),\n"
    "different (the fields named), extra (at Omnidesk, not in the CRM: never purged by\n"
    "reconcile), unsendable (the CRM row fails validation: field and rule) and pending (outbox\n"
    "rows not yet delivered). Values appear only with --show-data.\n\n"
    "  --source NAME  the source to reconcile (default: every configured source)\n"
    "  --repair       enqueue the CRM's full current state for missing and different customers;\n"
    "                 a running omnisync run delivers them like any change\n"
    "  --json         one JSON object per source instead of the table\n"
    "  --show-data    include names, emails and phones in the report\n"
    "  --rate N       API requests per second for the read (default [omnidesk] rate_per_sec;\n"
    "                 0 = no limit); give it less while omnisync run is delivering\n\n"
    "Exit status: 0 every CRM customer in step, 3 drift found (missing, different or\n"
    "unsendable; with --repair: and the repairs enqueued), 1 error (nothing enqueued when\n"
    "Omnidesk could not be read in full), 2 usage.\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

struct reconcile_cli {
    const char *source;
    int repair, json, show_data;
    double rate;
    int rate_set;
    int bad_number;
    int tty;
};

static int on_option(int opt, const char *value, void *arg)
{
    struct reconcile_cli *o = arg;
    char *end;
    switch (opt) {
    case 's':
        o->source = value;
        return 0;
    case 'r':
        o->repair = 1;
        return 0;
    case 'j':
        o->json = 1;
        return 0;
    case 'd':
        o->show_data = 1;
        return 0;
    case 'R':
        o->rate = strtod(value, &end);
        o->rate_set = 1;
        o->bad_number |= *value == '\0' || *end != '\0' || !isfinite(o->rate) || o->rate < 0;
        return 0;
    }
    return -1;
}

/* On a terminal only: one line rewritten in place. */
static void progress(void *arg, const struct reconcile_progress *p)
{
    const struct reconcile_cli *o = arg;
    if (!o->tty)
        return;
    if (p->eta_seconds >= 0 && p->pages_read < p->pages_total)
        fprintf(stderr, "\rreconcile: %lld/%lld pages read, about %.0f s left   ", p->pages_read,
                p->pages_total, p->eta_seconds);
    else
        fprintf(stderr, "\rreconcile: %lld pages read, %lld customers compared   ", p->pages_read,
                p->compared);
    fflush(stderr);
}

static int reconcile_source(struct cli *cli, struct reconcile_cli *o, const struct config *cfg,
                            const struct config_source *src, PGconn *conn, int *drift)
{
    struct reconcile_options ro = {
        .cfg = cfg,
        .src = src,
        .rate = o->rate_set ? o->rate : cfg->rate_per_sec,
        .repair = o->repair,
        .show_data = o->show_data,
        .stop = &stop_requested,
        .progress = progress,
        .arg = o,
    };
    struct reconcile_report report;
    char err[1024] = "";
    reconcile_report_init(&report, src->name);
    int rc = reconcile_run(conn, &ro, &report, err, sizeof(err));
    if (o->tty)
        fprintf(stderr, "\r%60s\r", "");
    if (rc != 0) {
        cli_error(cli, "source %s: %s; nothing was enqueued", src->name, err);
        reconcile_report_free(&report);
        return CLI_ERROR;
    }
    if (o->json) {
        struct json_object *j = reconcile_report_json(&report);
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
    } else {
        reconcile_report_print(&report, stdout);
        if (o->repair)
            printf("repair: %lld customers enqueued%s\n", report.enqueued,
                   report.repair_skipped ? "; some changed in the CRM during the run and are "
                                           "left to their own outbox rows"
                                         : "");
        else if (reconcile_report_drifts(&report))
            printf("run omnisync reconcile --repair to enqueue the CRM's state for missing and "
                   "different customers\n");
    }
    if (reconcile_report_drifts(&report))
        *drift = 1;
    reconcile_report_free(&report);
    return CLI_OK;
}

static struct reconcile_cli opts;

static int parse(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"source", required_argument, NULL, 's'}, {"repair", no_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},         {"show-data", no_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'R'},   {NULL, 0, NULL, 0},
    };
    struct reconcile_cli *o = &opts;
    int first = cli_parse(cli, argc, argv, usage, options, on_option, o);
    if (first == -2)
        return CLI_DONE;
    if (first < 0)
        return CLI_USAGE;
    if (first < argc || o->bad_number) {
        cli_error(cli,
                  o->bad_number ? "--rate must be a number, 0 or more" : "unexpected argument: %s",
                  first < argc ? argv[first] : "");
        fprintf(stderr, "%s", usage);
        return CLI_USAGE;
    }
    o->tty = isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
    return CLI_OK;
}

static int prepare(struct cli *cli)
{
    if (opts.source != NULL && config_find_source(&cli->cfg, opts.source) == NULL) {
        cli_error(cli, "no source \"%s\" in %s", opts.source, cli->cfg.path);
        return CLI_ERROR;
    }
    return CLI_OK;
}

static int run(struct cli *cli)
{
    struct reconcile_cli *o = &opts;
    const struct config *cfg = &cli->cfg;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = CLI_OK, drift = 0;
    for (size_t i = 0; i < cfg->nsources && rc == CLI_OK; i++) {
        if (o->source == NULL || strcmp(cfg->sources[i].name, o->source) == 0)
            rc = reconcile_source(cli, o, cfg, &cfg->sources[i], cli->conn, &drift);
    }
    return rc == CLI_OK && drift ? CLI_DRIFT : rc;
}

const struct cli_command cli_cmd_reconcile = {
    .name = "reconcile",
    .summary = "read Omnidesk back and compare with the CRM; --repair enqueues the drift",
    .needs = CLI_NEED_KEY | CLI_NEED_DB,
    .parse = parse,
    .prepare = prepare,
    .run = run,
};
