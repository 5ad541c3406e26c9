/* omnisync version: our version and those of the libraries we run on. */
#include <curl/curl.h>
#include <json-c/json_c_version.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <stdio.h>
#include <uv.h>

#include "cli.h"

static const char usage[] = "usage: omnisync version\n\n"
                            "Prints omnisync's version and those of libuv, libpq, libcurl, json-c\n"
                            "and libmicrohttpd it runs with.\n";

static int parse(struct cli *cli, int argc, char **argv)
{
    int first;
    return cli_parse_operands(cli, argc, argv, usage, NULL, NULL, NULL, -1, &first);
}

static int run(struct cli *cli)
{
    (void)cli;
    int pq = PQlibVersion();
    printf("omnisync %s\n", OMNISYNC_VERSION);
    printf("libuv %s\n", uv_version_string());
    printf("libpq %d.%d\n", pq / 10000, pq % 100);
    printf("libcurl %s\n", curl_version_info(CURLVERSION_NOW)->version);
    printf("json-c %s\n", json_c_version());
    printf("libmicrohttpd %s\n", MHD_get_version());
    return CLI_OK;
}

const struct cli_command cli_cmd_version = {
    .name = "version",
    .summary = "version and library versions",
    .parse = parse,
    .run = run,
};
