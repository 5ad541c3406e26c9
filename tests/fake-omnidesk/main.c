/*
 * fake-omnidesk: a strict stand-in for the Omnidesk customer API, for tests, the demo and
 * benchmarks.
 *
 * main owns the process: it parses the command line, starts the server, writes the port file
 * once listening, and waits for SIGTERM or SIGINT to stop everything and exit 0 with all memory
 * freed (the suites run it under ASan/LSan). It never prints customer data or the API key.
 */
#include "server.h"
#include "settings.h"
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct options {
    char host[64];
    int port;
    const char *api_key;
    const char *port_file;
    double rate;
    const char *faults;
    size_t log_max;
    uint64_t seed;
    unsigned threads;
};

static void usage(FILE *out)
{
    fputs("usage: fake-omnidesk --api-key KEY [--listen HOST:PORT] [--port-file FILE]\n"
          "                     [--rate N] [--faults JSON] [--log-max N] [--seed N]\n"
          "                     [--threads N]\n"
          "  --listen HOST:PORT  loopback address to listen on (default 127.0.0.1:0;\n"
          "                      port 0 picks a free port)\n"
          "  --api-key KEY       the accepted apiKey header (required)\n"
          "  --port-file FILE    write the bound port there once listening (atomically)\n"
          "  --rate N            token bucket, requests per second (default 0 = off)\n"
          "  --faults JSON       initial settings, as for POST /_fake/faults\n"
          "  --log-max N         request log entries kept in memory (default 500000)\n"
          "  --seed N            seed of the fault dice (default: time and pid)\n"
          "  --threads N         libmicrohttpd worker threads (default 2)\n"
          "Control API (no key): GET /_fake/state, /_fake/log[?since=SEQ], /_fake/stats,\n"
          "/_fake/faults; POST /_fake/faults, /_fake/reset. See docs/testing.md.\n",
          out);
}

static int parse_ull(const char *text, unsigned long long max, unsigned long long *out)
{
    char *end;

    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return (errno != 0 || *end != '\0' || *out > max) ? -1 : 0;
}

/* HOST:PORT with a loopback IPv4 host ("localhost" means 127.0.0.1): a test server with no
   security has no business on any other interface. */
static int parse_listen(const char *text, struct options *opts)
{
    const char *colon = strrchr(text, ':');
    struct in_addr addr;
    unsigned long long port;
    size_t host_len;

    if (colon == NULL || parse_ull(colon + 1, 65535, &port) != 0)
        return -1;
    host_len = (size_t)(colon - text);
    if (host_len == 0 || host_len >= sizeof(opts->host))
        return -1;
    memcpy(opts->host, text, host_len);
    opts->host[host_len] = '\0';
    if (strcmp(opts->host, "localhost") == 0)
        strcpy(opts->host, "127.0.0.1");
    if (inet_pton(AF_INET, opts->host, &addr) != 1 || (ntohl(addr.s_addr) >> 24) != 127)
        return -1;
    opts->port = (int)port;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *opts)
{
    static const struct option long_options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"api-key", required_argument, NULL, 'k'},
        {"port-file", required_argument, NULL, 'p'},
        {"rate", required_argument, NULL, 'r'},
        {"faults", required_argument, NULL, 'f'},
        {"log-max", required_argument, NULL, 'm'},
        {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long long n;
    char *end;
    int c;

    memset(opts, 0, sizeof(*opts));
    strcpy(opts->host, "127.0.0.1");
    opts->log_max = 500000;
    opts->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    opts->threads = 2;
    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (parse_listen(optarg, opts) != 0) {
                fprintf(stderr, "fake-omnidesk: --listen wants 127.x.x.x:PORT or "
                                "localhost:PORT\n");
                return 2;
            }
            break;
        case 'k':
            opts->api_key = optarg;
            break;
        case 'p':
            opts->port_file = optarg;
            break;
        case 'r':
            errno = 0;
            opts->rate = strtod(optarg, &end);
            if (errno != 0 || *end != '\0' || !(opts->rate >= 0.0 && opts->rate <= 1e9)) {
                fprintf(stderr, "fake-omnidesk: --rate wants a number >= 0\n");
                return 2;
            }
            break;
        case 'f':
            opts->faults = optarg;
            break;
        case 'm':
            if (parse_ull(optarg, 100000000ull, &n) != 0) {
                fprintf(stderr, "fake-omnidesk: --log-max wants 0..100000000\n");
                return 2;
            }
            opts->log_max = (size_t)n;
            break;
        case 's':
            if (parse_ull(optarg, ULLONG_MAX, &n) != 0) {
                fprintf(stderr, "fake-omnidesk: --seed wants a non-negative integer\n");
                return 2;
            }
            opts->seed = n;
            break;
        case 't':
            if (parse_ull(optarg, 64, &n) != 0 || n == 0) {
                fprintf(stderr, "fake-omnidesk: --threads wants 1..64\n");
                return 2;
            }
            opts->threads = (unsigned)n;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (opts->api_key == NULL || opts->api_key[0] == '\0' ||
        strlen(opts->api_key) >= SETTINGS_KEY_MAX) {
        fprintf(stderr, "fake-omnidesk: --api-key is required (1..%d bytes)\n",
                SETTINGS_KEY_MAX - 1);
        return 2;
    }
    return 0;
}

/* Writes "PORT\n" to a temporary file and renames it over `path`, so a reader polling for the
   file never sees it half written. */
static int write_port_file(const char *path, int port)
{
    char tmp[PATH_MAX];
    char text[16];
    int len = snprintf(text, sizeof(text), "%d\n", port);
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return -1;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (write(fd, text, (size_t)len) != len) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options opts;
    struct settings initial;
    struct store store;
    struct server server;
    sigset_t stop_signals;
    int sig = 0;
    int rc;

    rc = parse_options(argc, argv, &opts);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    /* /_fake/reset returns to these: the command line's key and rate, no faults. */
    settings_defaults(&initial, opts.api_key);
    initial.rate = opts.rate;

    /* Block the stop signals before any thread exists, so every thread inherits the mask and
       only sigwait below ever sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (store_init(&store, &initial, opts.log_max, opts.seed) != 0) {
        fprintf(stderr, "fake-omnidesk: out of memory\n");
        return 1;
    }
    if (opts.faults != NULL) {
        char err[160];

        if (settings_merge(&store.settings, opts.faults, strlen(opts.faults), err, sizeof(err)) !=
            0) {
            fprintf(stderr, "fake-omnidesk: --faults: %s\n", err);
            store_free(&store);
            return 2;
        }
    }
    if (server_start(&server, &store, opts.host, opts.port, opts.threads) != 0) {
        store_free(&store);
        return 1;
    }
    if (opts.port_file != NULL && write_port_file(opts.port_file, server.port) != 0) {
        fprintf(stderr, "fake-omnidesk: cannot write the port file: %s\n", strerror(errno));
        server_stop(&server);
        store_free(&store);
        return 1;
    }
    fprintf(stderr, "fake-omnidesk: listening on %s:%d\n", opts.host, server.port);
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    server_stop(&server);
    store_free(&store);
    return 0;
}
