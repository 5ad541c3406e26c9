/* omnisync check: is this configuration ready to run? */
#include <stdio.h>

#include <curl/curl.h>
#include <uv.h>

#include "cli.h"
#include "log.h"
#include "omnidesk.h"
#include "schema.h"

struct probe {
    int done;
    enum omnidesk_class cls;
    long status;
    char error[512];
};

static void on_probe(struct omnidesk *client, const struct omnidesk_response *r)
{
    struct probe *p = r->data;
    p->done = 1;
    p->cls = r->class;
    p->status = r->http_status;
    snprintf(p->error, sizeof(p->error), "%s", r->error);
    omnidesk_close(client, 0, NULL);
}

/* One read-only request (the customer index, one item) proves the URL and the key. */
static int probe_api(const struct config *cfg)
{
    uv_loop_t loop;
    struct omnidesk client;
    struct probe p = {0};
    struct omnidesk_options opts = {
        .base_url = cfg->base_url,
        .api_key = cfg->api_key,
        .timeout_ms = (long)cfg->timeout_ms,
        .max_in_flight = 1,
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&loop);
    int rc = -1;
    if (omnidesk_init(&client, &loop, &opts) != 0) {
        fprintf(stderr, "omnisync check: cannot start the HTTP client for %s\n", cfg->base_url);
    } else if (omnidesk_send(&client, OMNIDESK_PROBE, 0, NULL, 0, on_probe, &p) != 0) {
        fprintf(stderr, "omnisync check: cannot start the request\n");
        omnidesk_close(&client, 1, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "omnisync check: handles left open\n");
    curl_global_cleanup();
    if (!p.done)
        return -1;
    switch (p.cls) {
    case OMNIDESK_OK:
        printf("api: %s answers and accepts the key (HTTP %ld)\n", cfg->base_url, p.status);
        rc = 0;
        break;
    case OMNIDESK_AUTH:
        fprintf(stderr, "omnisync check: the API refuses the key (HTTP %ld): check the key file "
                        "and the key's CUSTOMER_READ/CUSTOMER_CUD permissions\n",
                p.status);
        break;
    default:
        fprintf(stderr, "omnisync check: the API probe failed: %s\n", p.error);
        break;
    }
    return rc;
}

static const char usage[] =
    "usage: omnisync [--config FILE] check\n\n"
    "Validates the configuration (every error with its line), reads the API key, connects to\n"
    "the database, reports the schema version, and makes one read-only API call (the customer\n"
    "index, one item) to prove the URL and the key. Exit 0 when everything is ready.\n";

static int parse(struct cli *cli, int argc, char **argv)
{
    int first;
    return cli_parse_operands(cli, argc, argv, usage, NULL, NULL, NULL, 0, &first);
}

/* Connects itself: what is fine (config, key) is printed before the database is tried. */
static int run(struct cli *cli)
{
    const struct config *cfg = &cli->cfg;
    printf("config: %s is valid (%zu source%s)\n", cfg->path, cfg->nsources,
           cfg->nsources == 1 ? "" : "s");
    printf("api key: loaded\n");

    int rc = CLI_ERROR;
    PGconn *conn = cli_connect(cfg, "check");
    if (conn != NULL) {
        char where[512], err[512];
        log_conninfo_redacted(cfg->conninfo, where, sizeof(where));
        printf("database: connected (%s)\n", where[0] ? where : "libpq defaults");
        int version = schema_version(conn, err, sizeof(err));
        if (version < 0) {
            cli_error(cli, "reading the schema version: %s", err);
        } else if (version < schema_latest_version()) {
            cli_error(cli, "schema version %d, this omnisync needs %d: run omnisync migrate",
                      version, schema_latest_version());
        } else {
            printf("schema: version %d\n", version);
            rc = probe_api(cfg) == 0 ? CLI_OK : CLI_ERROR;
        }
        PQfinish(conn);
    }
    return rc;
}

const struct cli_command cli_cmd_check = {
    .name = "check",
    .summary = "validate the config, reach the database, prove the API key",
    .needs = CLI_NEED_CONFIG | CLI_NEED_KEY,
    .parse = parse,
    .run = run,
};
