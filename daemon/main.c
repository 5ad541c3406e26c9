/*
 * omnisync: one binary, one subcommand per job (DESIGN §5).
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "cli.h"
#include "db.h"
#include "log.h"
#include "validate.h"

const struct cli_command cli_commands[] = {
    {"run", "the daemon, in the foreground (systemd runs this)", cmd_run},
    {"migrate", "create or upgrade the schema and install the triggers of the sources", cmd_migrate},
    {"check", "validate the config, reach the database, prove the API key", cmd_check},
    {"status", "counts by state, oldest pending age, last errors, processes; --json", cmd_status},
    {"outbox", "outbox list / outbox show ID: the rows and their attempts", cmd_outbox},
    {"replay", "failed rows back to pending (ids or --failed); --dry-run", cmd_replay},
    {"skip", "give rows up on purpose, with --reason", cmd_skip},
    {"backfill", "enqueue every existing row of a source (initial sync), resumable", cmd_backfill},
    {"reconcile", "read Omnidesk back and compare with the CRM; --repair enqueues the drift",
     cmd_reconcile},
    {"pause", "stop sending (every process, within a second); changes keep queueing", cmd_pause},
    {"resume", "start sending again after a pause", cmd_resume},
    {"purges", "list, release or skip purges held by the purge guard", cmd_purges},
    {"version", "version and library versions", cmd_version},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: omnisync [--config FILE] COMMAND [OPTIONS]\n\n"
                 "Keeps Omnidesk's customer records in step with a CRM database.\n\n"
                 "Commands:\n");
    for (const struct cli_command *c = cli_commands; c->name != NULL; c++)
        fprintf(out, "  %-10s %s\n", c->name, c->summary);
    fprintf(out, "\nOptions:\n"
                 "  --config FILE  configuration file (default $OMNISYNC_CONFIG, then %s)\n"
                 "  --help         this text; COMMAND --help describes a command\n",
            CONFIG_DEFAULT_PATH);
}

void cli_error(const struct cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "omnisync %s: ", cli->command ? cli->command : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_load_config(struct cli *cli, struct config *cfg, int need_key)
{
    int rc = config_load(cfg, cli->config_path);
    if (rc == 0 && need_key)
        rc = config_load_api_key(cfg);
    if (rc != 0) {
        config_print_errors(cfg);
        fprintf(stderr, "omnisync %s: the configuration has errors; nothing was done\n",
                cli->command);
        return CLI_ERROR;
    }
    log_configure(cfg->log_level, cfg->log_format);
    return CLI_OK;
}

PGconn *cli_connect(const struct config *cfg, const char *purpose)
{
    char err[512], where[512];
    char appname[64];
    snprintf(appname, sizeof(appname), "omnisync %s", purpose);
    PGconn *conn = db_connect(cfg->conninfo, appname, err, sizeof(err));
    if (conn == NULL) {
        log_conninfo_redacted(cfg->conninfo, where, sizeof(where));
        fprintf(stderr, "omnisync %s: cannot connect to the database (%s): %s\n", purpose,
                where[0] ? where : "libpq defaults", err);
    }
    return conn;
}

int cli_parse(struct cli *cli, int argc, char **argv, const char *usage_text,
              const struct option *extra, int (*on_option)(int opt, const char *value, void *arg),
              void *arg)
{
    struct option options[32];
    /* Options may follow operands ("skip 12 --reason x"): let getopt permute. */
    char shortopts[64] = "h";
    size_t n = 0;
    options[n++] = (struct option){"help", no_argument, NULL, 'h'};
    options[n++] = (struct option){"config", required_argument, NULL, 'c'};
    for (const struct option *o = extra; o != NULL && o->name != NULL && n < 31; o++)
        options[n++] = *o;
    options[n] = (struct option){NULL, 0, NULL, 0};

    /* 0, not 1: GNU getopt only forgets the previous scan's mode ("+") when reinitialised. */
    optind = 0;
    opterr = 0;
    for (;;) {
        int longindex = 0;
        int opt = getopt_long(argc, argv, shortopts, options, &longindex);
        if (opt == -1)
            break;
        if (opt == 'h') {
            printf("%s", usage_text);
            return -2;
        }
        if (opt == 'c') {
            cli->config_path = optarg;
            continue;
        }
        if (opt == '?' || opt == ':' || on_option == NULL || on_option(opt, optarg, arg) != 0) {
            if (opt == '?' || opt == ':')
                cli_error(cli, "unknown option or missing value: %s", argv[optind - 1]);
            fprintf(stderr, "%s", usage_text);
            return -1;
        }
    }
    return optind;
}

int main(int argc, char **argv)
{
    struct cli cli = {0};

    /* The API key lives in this process' memory: no core dumps, no ptrace by other users. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* The transliterator of names, if a command opened one: released so a leak check is clean. */
    atexit(validate_close);

    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, "+hc:V", options, NULL);
        if (opt == -1)
            break;
        switch (opt) {
        case 'c':
            cli.config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        case 'V':
            return cmd_version(&cli, 1, (char *[]){"version", NULL});
        default:
            fprintf(stderr, "omnisync: unknown option or missing value: %s\n", argv[optind - 1]);
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "omnisync: no command given\n");
        usage(stderr);
        return CLI_USAGE;
    }
    cli.command = argv[optind];
    for (const struct cli_command *c = cli_commands; c->name != NULL; c++) {
        if (strcmp(c->name, cli.command) == 0)
            return c->run(&cli, argc - optind, argv + optind);
    }
    fprintf(stderr, "omnisync: unknown command \"%s\"\n", cli.command);
    usage(stderr);
    return CLI_USAGE;
}
