/*
 * commit-times: the client side of bench/drain's latency measurement.
 *
 * Inserts COUNT new customers into the CRM table `customers`, one at a time, each in its own
 * transaction (autocommit), and prints for each one line "primary_id<TAB>sent<TAB>committed":
 * the CLOCK_REALTIME epoch seconds just before the INSERT was sent and just after PQexec
 * returned, that is after the server confirmed the commit. bench/drain matches the second time
 * against the arrival time the fake Omnidesk logged for that customer; the fake and this tool
 * read the same clock on the same machine.
 *
 * Between inserts it sleeps a pseudo-random gap in [MIN_GAP_MS, MAX_GAP_MS] (fixed seed), long
 * enough for the daemon to be idle again, so each figure is the latency of a lone change and
 * not of a queue.
 *
 * Usage: commit-times CONNINFO COUNT PREFIX MIN_GAP_MS MAX_GAP_MS
 * Exits 0 when every insert committed, 1 otherwise (the error goes to stderr).
 */
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COUNT_MAX 100000
#define GAP_MAX_MS 10000

static double epoch_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0)
        ; /* interrupted: sleep the rest */
}

static int parse_count(const char *text, long max, long *out)
{
    char *end = NULL;
    long v = strtol(text, &end, 10);

    if (end == text || *end != '\0' || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    PGconn *conn = NULL;
    PGresult *res = NULL;
    long count, min_gap, max_gap;
    int rc = 1;

    if (argc != 6 || parse_count(argv[2], COUNT_MAX, &count) != 0 ||
        parse_count(argv[4], GAP_MAX_MS, &min_gap) != 0 ||
        parse_count(argv[5], GAP_MAX_MS, &max_gap) != 0 || max_gap < min_gap ||
        strlen(argv[3]) > 32) {
        fprintf(stderr, "usage: commit-times CONNINFO COUNT PREFIX MIN_GAP_MS MAX_GAP_MS\n");
        return 2;
    }
    conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "commit-times: cannot connect: %s", PQerrorMessage(conn));
        goto fail;
    }
    srand(42);
    for (long i = 1; i <= count; i++) {
        char primary_id[64], email[96];
        const char *params[2] = {primary_id, email};
        double sent, committed;

        snprintf(primary_id, sizeof(primary_id), "%s-%ld", argv[3], i);
        snprintf(email, sizeof(email), "%s-%ld@example.com", argv[3], i);
        sent = epoch_now();
        res = PQexecParams(conn,
                           "INSERT INTO customers (customer_no, first_name, last_name, email) "
                           "VALUES ($1, 'Ann', 'Smith', $2)",
                           2, NULL, params, NULL, NULL, 0);
        committed = epoch_now();
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "commit-times: insert %ld failed: %s", i, PQerrorMessage(conn));
            goto fail;
        }
        PQclear(res);
        res = NULL;
        printf("%s\t%.6f\t%.6f\n", primary_id, sent, committed);
        fflush(stdout);
        if (i < count)
            sleep_ms(min_gap + (max_gap > min_gap ? rand() % (max_gap - min_gap + 1) : 0));
    }
    rc = 0;
fail:
    PQclear(res);
    PQfinish(conn);
    return rc;
}
