/*
 * cli: the helpers every command shares (daemon/cli.h). main.c owns the command table and the
 * set-up; the commands call only these.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "db.h"
#include "log.h"

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

int cli_parse_operands(struct cli *cli, int argc, char **argv, const char *usage,
                       const struct option *extra,
                       int (*on_option)(int opt, const char *value, void *arg), void *arg,
                       int max_operands, int *first)
{
    int at = cli_parse(cli, argc, argv, usage, extra, on_option, arg);
    if (at == -2)
        return CLI_DONE;
    if (at < 0)
        return CLI_USAGE;
    if (max_operands >= 0 && argc - at > max_operands) {
        cli_error(cli, "unexpected argument \"%s\"", argv[at + max_operands]);
        return CLI_USAGE;
    }
    *first = at;
    return CLI_OK;
}
