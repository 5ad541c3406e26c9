/*
 * test_health: the health server on a real libuv loop, asked by real HTTP clients over loopback.
 *
 * The loop runs on the test's main thread, exactly as in the daemon; the clients are libcurl easy
 * handles in their own threads (only the test has threads). When the last client is done it wakes
 * the loop through a uv_async, the server is closed, and every test ends with
 * uv_loop_close(loop) == 0: nothing was left on the loop. A watchdog timer bounds every run.
 * /metrics is checked by `promtool check metrics`.
 */
#include <check.h>

#include "promtool.h"
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <uv.h>

#include "errors.h"
#include "health.h"
#include "metrics.h"
#include "omnidesk.h"
#include "testutil.h"

extern char **environ;

#define RUN_DEADLINE_MS 20000
#define MAX_BODY (1024 * 1024)

/* ---- promtool ------------------------------------------------------------------------------- */

/* ---- the source the server reads ------------------------------------------------------------ */

struct fake_source {
    struct metrics metrics;
    const char *last_error;
    int refreshes; /* touched on the loop thread only; read after the run */
};

static void fake_refresh(void *arg)
{
    struct fake_source *fs = arg;

    fs->refreshes++;
}

static const char *fake_last_error(void *arg)
{
    struct fake_source *fs = arg;

    return fs->last_error;
}

static void fake_init(struct fake_source *fs, struct health_source *src)
{
    memset(fs, 0, sizeof(*fs));
    metrics_init(&fs->metrics);
    fs->metrics.db_connected = 1;
    fs->metrics.listening = 1;
    *src = (struct health_source){.metrics = &fs->metrics,
                                  .refresh = fake_refresh,
                                  .last_error = fake_last_error,
                                  .arg = fs,
                                  .version = "9.9.9-test"};
}

/* ---- clients -------------------------------------------------------------------------------- */

struct job {
    const char *method; /* GET, HEAD, POST, ... */
    const char *path;
    const char *extra_header; /* NULL or one "Name: value" line */
    /* results */
    CURLcode curl_rc;
    long status;
    char content_type[128];
    char allow[64];
    char *body;
    size_t body_len;
};

struct run;

struct client {
    pthread_t thread;
    struct run *run;
    struct job *jobs;
    size_t njobs;
    /* Instead of jobs: a hand-written client (raw sockets), reporting in `outcome`. */
    void (*custom)(struct client *client, int port);
    char outcome[256];
};

struct run {
    uv_loop_t loop;
    struct health health;
    uv_async_t done;
    uv_timer_t watchdog;
    int port;
    int nclients;
    atomic_int finished;
    int timed_out;
    int health_closing;
    int health_closed;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct job *job = arg;
    size_t n = size * nmemb;
    char *grown;

    if (job->body_len + n > MAX_BODY)
        return 0;
    grown = realloc(job->body, job->body_len + n + 1);
    if (grown == NULL)
        return 0;
    job->body = grown;
    memcpy(job->body + job->body_len, data, n);
    job->body_len += n;
    job->body[job->body_len] = '\0';
    return n;
}

static void perform(CURL *easy, int port, struct job *job)
{
    struct curl_slist *headers = NULL;
    struct curl_header *header;
    char url[256];
    char *type = NULL;

    curl_easy_reset(easy);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, job->path);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, job);
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    if (strcmp(job->method, "HEAD") == 0) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (strcmp(job->method, "POST") == 0) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, "name=value&other=1");
    } else if (strcmp(job->method, "GET") != 0) {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, job->method);
    }
    if (job->extra_header != NULL) {
        headers = curl_slist_append(NULL, job->extra_header);
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    }
    job->curl_rc = curl_easy_perform(easy);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &job->status);
    if (curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type != NULL)
        snprintf(job->content_type, sizeof(job->content_type), "%s", type);
    if (curl_easy_header(easy, "Allow", 0, CURLH_HEADER, -1, &header) == CURLHE_OK)
        snprintf(job->allow, sizeof(job->allow), "%s", header->value);
    curl_slist_free_all(headers);
}

static void *client_main(void *arg)
{
    struct client *client = arg;
    CURL *easy;
    size_t i;

    if (client->custom != NULL) {
        client->custom(client, client->run->port);
        goto done;
    }
    easy = curl_easy_init();
    /* One easy handle for all jobs: its connection is kept alive and reused between them. */
    for (i = 0; i < client->njobs; i++) {
        if (easy == NULL)
            client->jobs[i].curl_rc = CURLE_FAILED_INIT;
        else
            perform(easy, client->run->port, &client->jobs[i]);
    }
    curl_easy_cleanup(easy);
done:
    atomic_fetch_add(&client->run->finished, 1);
    uv_async_send(&client->run->done);
    return NULL;
}

static void on_health_closed(struct health *h)
{
    struct run *run = (struct run *)((char *)h - offsetof(struct run, health));

    run->health_closed++;
}

static void close_health(struct run *run)
{
    if (run->health_closing)
        return;
    run->health_closing = 1;
    health_close(&run->health, on_health_closed);
}

static void on_clients_done(uv_async_t *async)
{
    struct run *run = async->data;

    if (atomic_load(&run->finished) < run->nclients)
        return;
    close_health(run);
    uv_close((uv_handle_t *)&run->done, NULL);
    uv_close((uv_handle_t *)&run->watchdog, NULL);
}

/* The clients may still be blocked in curl: the server goes first, so they fail fast and the
 * async above then closes the rest. */
static void on_watchdog(uv_timer_t *timer)
{
    struct run *run = timer->data;

    run->timed_out = 1;
    close_health(run);
}

/*
 * Serves `src` on 127.0.0.1:0 and runs `nclients` clients, each doing its jobs in order, to
 * completion; then closes everything and checks the loop is empty.
 */
static void run_clients(const struct health_source *src, struct client *clients, int nclients)
{
    struct run run;
    int i;

    memset(&run, 0, sizeof(run));
    ck_assert_int_eq(uv_loop_init(&run.loop), 0);
    ck_assert_int_eq(health_init(&run.health, &run.loop, "127.0.0.1", 0, src), 0);
    run.port = health_port(&run.health);
    ck_assert_int_gt(run.port, 0);
    ck_assert_int_lt(run.port, 65536);
    run.nclients = nclients;
    ck_assert_int_eq(uv_async_init(&run.loop, &run.done, on_clients_done), 0);
    run.done.data = &run;
    ck_assert_int_eq(uv_timer_init(&run.loop, &run.watchdog), 0);
    run.watchdog.data = &run;
    ck_assert_int_eq(uv_timer_start(&run.watchdog, on_watchdog, RUN_DEADLINE_MS, 0), 0);
    for (i = 0; i < nclients; i++) {
        clients[i].run = &run;
        ck_assert_int_eq(pthread_create(&clients[i].thread, NULL, client_main, &clients[i]), 0);
    }
    ck_assert_int_eq(uv_run(&run.loop, UV_RUN_DEFAULT), 0);
    for (i = 0; i < nclients; i++)
        ck_assert_int_eq(pthread_join(clients[i].thread, NULL), 0);
    ck_assert_msg(!run.timed_out, "the clients did not finish within %d ms", RUN_DEADLINE_MS);
    ck_assert_int_eq(run.health_closed, 1);
    ck_assert_int_eq(uv_loop_close(&run.loop), 0);
}

static void run_jobs(const struct health_source *src, struct job *jobs, size_t njobs)
{
    struct client client = {.jobs = jobs, .njobs = njobs};

    run_clients(src, &client, 1);
}

static void jobs_free(struct job *jobs, size_t njobs)
{
    size_t i;

    for (i = 0; i < njobs; i++)
        free(jobs[i].body);
}

static void assert_answer(const struct job *job, long status, const char *content_type)
{
    ck_assert_msg(job->curl_rc == CURLE_OK, "%s %s: %s", job->method, job->path,
                  curl_easy_strerror(job->curl_rc));
    ck_assert_msg(job->status == status, "%s %s: status %ld, expected %ld", job->method, job->path,
                  job->status, status);
    if (content_type != NULL)
        ck_assert_str_eq(job->content_type, content_type);
}

/* Parses a /readyz body, failing the test when it is not a JSON object. */
static struct json_object *parse_object(const struct job *job)
{
    struct json_object *doc;

    ck_assert_ptr_nonnull(job->body);
    doc = json_tokener_parse(job->body);
    ck_assert_msg(doc != NULL && json_object_is_type(doc, json_type_object), "not JSON: %s",
                  job->body);
    return doc;
}

static struct json_object *field(struct json_object *doc, const char *name)
{
    struct json_object *value = NULL;

    ck_assert_msg(json_object_object_get_ex(doc, name, &value), "readyz: no field \"%s\"", name);
    return value; /* NULL for JSON null */
}

static void assert_string_field(struct json_object *doc, const char *name, const char *expect)
{
    struct json_object *value = field(doc, name);

    ck_assert_msg(value != NULL && json_object_is_type(value, json_type_string),
                  "readyz: \"%s\" is not a string", name);
    ck_assert_str_eq(json_object_get_string(value), expect);
}

static void assert_null_field(struct json_object *doc, const char *name)
{
    ck_assert_msg(field(doc, name) == NULL, "readyz: \"%s\" is not null", name);
}

static void assert_int_field(struct json_object *doc, const char *name, int64_t expect)
{
    struct json_object *value = field(doc, name);

    ck_assert_msg(value != NULL && json_object_is_type(value, json_type_int),
                  "readyz: \"%s\" is not an integer", name);
    ck_assert_int_eq(json_object_get_int64(value), expect);
}

static void assert_bool_field(struct json_object *doc, const char *name, int expect)
{
    struct json_object *value = field(doc, name);

    ck_assert_msg(value != NULL && json_object_is_type(value, json_type_boolean),
                  "readyz: \"%s\" is not a boolean", name);
    ck_assert_int_eq(json_object_get_boolean(value), expect);
}

#define CT_JSON "application/json"
#define CT_TEXT "text/plain; charset=utf-8"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* ---- tests ---------------------------------------------------------------------------------- */

START_TEST(serves_every_endpoint)
{
    struct job jobs[] = {
        {.method = "GET", .path = "/healthz"},
        {.method = "HEAD", .path = "/healthz"},
        {.method = "GET", .path = "/readyz"},
        {.method = "GET", .path = "/metrics"},
        {.method = "GET", .path = "/healthz?verbose=1"},
        {.method = "GET", .path = "/"},
        {.method = "GET", .path = "/healthz/"},
        {.method = "GET", .path = "/metricsx"},
        {.method = "POST", .path = "/metrics"},
        {.method = "PUT", .path = "/healthz"},
        {.method = "DELETE", .path = "/readyz"},
        {.method = "OPTIONS", .path = "/nowhere"},
        {.method = "HEAD", .path = "/readyz"},
        {.method = "GET", .path = "/healthz"},
    };
    const size_t njobs = sizeof(jobs) / sizeof(jobs[0]);
    struct health_source src;
    struct fake_source fs;
    struct json_object *doc;
    char report[4096];
    size_t i;
    int rc;

    fake_init(&fs, &src);
    fs.metrics.in_flight = 2;
    metrics_count_request(&fs.metrics, OMNIDESK_CREATE, 201);
    metrics_count_delivery(&fs.metrics, METRICS_OP_CREATE, METRICS_RESULT_DONE);
    metrics_observe(&fs.metrics.delivery_seconds, 0.042);
    run_jobs(&src, jobs, njobs);

    assert_answer(&jobs[0], 200, CT_JSON);
    ck_assert_str_eq(jobs[0].body, "{\"status\":\"ok\"}");
    assert_answer(&jobs[1], 200, CT_JSON);
    ck_assert_ptr_null(jobs[1].body); /* HEAD: headers only */

    assert_answer(&jobs[2], 200, CT_JSON);
    doc = parse_object(&jobs[2]);
    assert_string_field(doc, "db", "connected");
    assert_bool_field(doc, "listening", 1);
    assert_string_field(doc, "api", "ok");
    assert_int_field(doc, "in_flight", 2);
    json_object_put(doc);

    assert_answer(&jobs[3], 200, CT_METRICS);
    ck_assert_ptr_nonnull(strstr(jobs[3].body, "\nomnisync_in_flight 2\n"));
    ck_assert_ptr_nonnull(
        strstr(jobs[3].body, "\nomnisync_build_info{version=\"9.9.9-test\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(
        jobs[3].body, "\nomnisync_http_requests_total{endpoint=\"create\",code=\"201\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(jobs[3].body, "\nomnisync_delivery_seconds_count 1\n"));
    rc = promtool_check_metrics(jobs[3].body, jobs[3].body_len, report, sizeof(report));
    if (rc != 0)
        fprintf(stderr, "--- /metrics ---\n%s--- end ---\n", jobs[3].body);
    ck_assert_msg(rc == 0, "promtool check metrics exited %d: %.2000s", rc, report);

    assert_answer(&jobs[4], 200, CT_JSON); /* the query string does not change the path */
    for (i = 5; i <= 7; i++) {
        assert_answer(&jobs[i], 404, CT_TEXT);
        ck_assert_str_eq(jobs[i].body, "not found\n");
    }
    for (i = 8; i <= 11; i++) {
        assert_answer(&jobs[i], 405, CT_TEXT);
        ck_assert_str_eq(jobs[i].allow, "GET, HEAD");
    }
    assert_answer(&jobs[12], 200, CT_JSON);
    ck_assert_ptr_null(jobs[12].body);
    /* The server still answers after a refused body. */
    assert_answer(&jobs[13], 200, CT_JSON);

    /* refresh ran before each /readyz and /metrics answer, and for nothing else. */
    ck_assert_int_eq(fs.refreshes, 3);
    jobs_free(jobs, njobs);
}
END_TEST

START_TEST(readyz_reports_every_field)
{
    struct job jobs[] = {{.method = "GET", .path = "/readyz"}};
    struct health_source src;
    struct fake_source fs;
    struct json_object *doc, *age;

    fake_init(&fs, &src);
    fs.metrics.outbox_rows_known = 1;
    fs.metrics.outbox_rows[METRICS_STATUS_PENDING] = 17;
    fs.metrics.outbox_rows[METRICS_STATUS_FAILED] = 3;
    fs.metrics.oldest_pending_age_seconds = 4.25;
    fs.metrics.in_flight = 5;
    fs.metrics.last_success_timestamp_seconds = 1700000000.75;
    fs.last_error = "api answered 503 \"Service Unavailable\"\nretrying";
    run_jobs(&src, jobs, 1);

    assert_answer(&jobs[0], 200, CT_JSON);
    doc = parse_object(&jobs[0]);
    assert_string_field(doc, "db", "connected");
    assert_bool_field(doc, "listening", 1);
    assert_string_field(doc, "api", "ok");
    assert_int_field(doc, "in_flight", 5);
    assert_int_field(doc, "pending", 17);
    assert_int_field(doc, "failed", 3);
    age = field(doc, "oldest_pending_age_s");
    ck_assert_ptr_nonnull(age);
    ck_assert(json_object_is_type(age, json_type_double));
    ck_assert_double_eq(json_object_get_double(age), 4.25);
    assert_string_field(doc, "last_success_at", "2023-11-14T22:13:20Z");
    assert_string_field(doc, "last_error", "api answered 503 \"Service Unavailable\"\nretrying");
    json_object_put(doc);
    ck_assert_ptr_nonnull(strstr(jobs[0].body, "\"oldest_pending_age_s\":4.25"));
    jobs_free(jobs, 1);
}
END_TEST

/* Readiness against the state of the database, LISTEN and the API. */
static const struct readiness_case {
    int db_connected;
    int listening;
    int key_refused;
    int circuit_open;
    long status;
    const char *db;
    const char *api;
} readiness_cases[] = {
    {1, 1, 0, 0, 200, "connected", "ok"},
    {0, 0, 0, 0, 503, "disconnected", "ok"},
    {0, 1, 0, 0, 503, "disconnected", "ok"},
    {1, 0, 0, 0, 503, "connected", "ok"},
    {1, 1, 1, 0, 503, "connected", "key refused"},
    /* An open circuit is an outage being waited out, not a reason to restart: still ready. */
    {1, 1, 0, 1, 200, "connected", "circuit open"},
    {1, 1, 1, 1, 503, "connected", "key refused"},
};

START_TEST(readyz_follows_the_source)
{
    const struct readiness_case *c = &readiness_cases[_i];
    struct job jobs[] = {{.method = "GET", .path = "/readyz"},
                         {.method = "HEAD", .path = "/readyz"},
                         {.method = "GET", .path = "/healthz"}};
    struct health_source src;
    struct fake_source fs;
    struct json_object *doc;

    fake_init(&fs, &src);
    fs.metrics.db_connected = c->db_connected;
    fs.metrics.listening = c->listening;
    fs.metrics.api_key_refused = c->key_refused;
    fs.metrics.circuit_open = c->circuit_open;
    fs.metrics.in_flight = 1;
    run_jobs(&src, jobs, 3);

    assert_answer(&jobs[0], c->status, CT_JSON);
    assert_answer(&jobs[1], c->status, CT_JSON);
    assert_answer(&jobs[2], 200, CT_JSON); /* liveness does not care */
    doc = parse_object(&jobs[0]);
    assert_string_field(doc, "db", c->db);
    assert_bool_field(doc, "listening", c->listening);
    assert_string_field(doc, "api", c->api);
    assert_int_field(doc, "in_flight", 1);
    /* Nothing counted yet, never succeeded, no error: nulls, not made-up zeros. */
    assert_null_field(doc, "pending");
    assert_null_field(doc, "failed");
    assert_null_field(doc, "oldest_pending_age_s");
    assert_null_field(doc, "last_success_at");
    assert_null_field(doc, "last_error");
    assert_null_field(doc, "api_paused_until");
    assert_null_field(doc, "api_pause_s");
    assert_null_field(doc, "pending_as_of");
    assert_null_field(doc, "pending_stale");
    json_object_put(doc);
    jobs_free(jobs, 3);
}
END_TEST

/* Issue 17 item 5: a pause the API asked for (Retry-After) is visible, with its end. */
START_TEST(readyz_shows_a_pause_by_the_api)
{
    struct job jobs[] = {{.method = "GET", .path = "/readyz"},
                         {.method = "GET", .path = "/metrics"}};
    struct health_source src;
    struct fake_source fs;
    struct json_object *doc, *until;

    fake_init(&fs, &src);
    fs.metrics.api_pause_seconds = 120.4;
    fs.last_error = "the API asked to wait (HTTP 429, Retry-After capped at max_retry_after)";
    run_jobs(&src, jobs, 2);

    assert_answer(&jobs[0], 200, CT_JSON); /* waiting is the daemon's job: still ready */
    doc = parse_object(&jobs[0]);
    assert_string_field(doc, "api", "paused_by_retry_after");
    until = field(doc, "api_paused_until");
    ck_assert_msg(until != NULL && json_object_is_type(until, json_type_string) &&
                      strlen(json_object_get_string(until)) == 20,
                  "api_paused_until: %s", jobs[0].body);
    ck_assert_ptr_nonnull(strstr(jobs[0].body, "\"api_pause_s\":121"));
    json_object_put(doc);
    assert_answer(&jobs[1], 200, CT_METRICS);
    ck_assert_ptr_nonnull(strstr(jobs[1].body, "\nomnisync_api_pause_seconds 120.4\n"));
    jobs_free(jobs, 2);
}
END_TEST

/* Issue 17 item 9: readyz said "pending":0 long after the last count (circuit open, the outbox
 * locked): the count carries its time, and is called stale when old. */
START_TEST(readyz_says_when_counts_are_stale)
{
    struct job jobs[] = {{.method = "GET", .path = "/readyz"}};
    struct health_source src;
    struct fake_source fs;
    struct json_object *doc, *as_of;

    fake_init(&fs, &src);
    fs.metrics.outbox_rows_known = 1;
    fs.metrics.outbox_counted_at = (double)time(NULL) - (_i == 0 ? 2 : 600);
    run_jobs(&src, jobs, 1);
    doc = parse_object(&jobs[0]);
    assert_int_field(doc, "pending", 0);
    assert_bool_field(doc, "pending_stale", _i == 0 ? 0 : 1);
    as_of = field(doc, "pending_as_of");
    ck_assert_msg(as_of != NULL && json_object_is_type(as_of, json_type_string), "%s",
                  jobs[0].body);
    json_object_put(doc);
    jobs_free(jobs, 1);
}
END_TEST

START_TEST(readyz_caps_last_error)
{
    struct job jobs[] = {{.method = "GET", .path = "/readyz"}};
    struct health_source src;
    struct fake_source fs;
    struct json_object *doc, *value;
    char message[2 * HEALTH_LAST_ERROR_MAX + 8];
    size_t i, len;

    /* "x" then two-byte characters: the cap falls in the middle of one, which must be dropped
     * whole. */
    message[0] = 'x';
    for (i = 1; i + 2 < sizeof(message); i += 2) {
        message[i] = (char)0xC3;
        message[i + 1] = (char)0xA9; /* é */
    }
    message[i] = '\0';
    fake_init(&fs, &src);
    fs.last_error = message;
    run_jobs(&src, jobs, 1);

    assert_answer(&jobs[0], 200, CT_JSON);
    doc = parse_object(&jobs[0]);
    value = field(doc, "last_error");
    ck_assert_ptr_nonnull(value);
    len = (size_t)json_object_get_string_len(value);
    ck_assert_uint_eq(len, HEALTH_LAST_ERROR_MAX - 1);
    ck_assert_int_eq(memcmp(json_object_get_string(value), message, len), 0);
    json_object_put(doc);
    jobs_free(jobs, 1);
}
END_TEST

START_TEST(oversized_headers_are_refused)
{
    struct job jobs[] = {
        {.method = "GET", .path = "/healthz"},
        {.method = "GET", .path = "/healthz"},
    };
    struct health_source src;
    struct fake_source fs;
    static char big[64 * 1024];

    snprintf(big, sizeof(big), "X-Padding: ");
    memset(big + strlen(big), 'a', sizeof(big) - strlen(big) - 1);
    big[sizeof(big) - 1] = '\0';
    jobs[0].extra_header = big;
    fake_init(&fs, &src);
    run_jobs(&src, jobs, 2);

    /* MHD refuses what does not fit the per-connection memory; either an error status or a
     * closed connection is a refusal, a 200 is not. */
    ck_assert_msg(jobs[0].curl_rc != CURLE_OK || jobs[0].status >= 400,
                  "a 64 KiB header was accepted (status %ld)", jobs[0].status);
    assert_answer(&jobs[1], 200, CT_JSON);
    jobs_free(jobs, 2);
}
END_TEST

#define CLIENTS 4
#define JOBS_PER_CLIENT 40

START_TEST(concurrent_clients)
{
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics", "/missing"};
    static const long statuses[] = {200, 200, 200, 404};
    struct job jobs[CLIENTS][JOBS_PER_CLIENT];
    struct client clients[CLIENTS];
    struct health_source src;
    struct fake_source fs;
    int c, j;

    memset(jobs, 0, sizeof(jobs));
    memset(clients, 0, sizeof(clients));
    for (c = 0; c < CLIENTS; c++) {
        for (j = 0; j < JOBS_PER_CLIENT; j++) {
            jobs[c][j].method = "GET";
            jobs[c][j].path = paths[(c + j) % 4];
        }
        clients[c].jobs = jobs[c];
        clients[c].njobs = JOBS_PER_CLIENT;
    }
    fake_init(&fs, &src);
    run_clients(&src, clients, CLIENTS);

    for (c = 0; c < CLIENTS; c++) {
        for (j = 0; j < JOBS_PER_CLIENT; j++)
            assert_answer(&jobs[c][j], statuses[(c + j) % 4], NULL);
        jobs_free(jobs[c], JOBS_PER_CLIENT);
    }
    ck_assert_int_eq(fs.refreshes, CLIENTS * JOBS_PER_CLIENT / 2);
}
END_TEST

/* ---- raw clients: what curl will not do ------------------------------------------------------ */

static int connect_loopback(int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static int send_all(int fd, const char *text)
{
    size_t off = 0, len = strlen(text);
    ssize_t n;

    while (off < len) {
        n = send(fd, text + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

/* Reads until the peer closes or `timeout_ms` passes; returns the bytes read, -1 on timeout. */
static ssize_t read_until_closed(int fd, char *buf, size_t len, int timeout_ms)
{
    uint64_t deadline = testutil_now_ms() + (uint64_t)timeout_ms;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    size_t used = 0;
    ssize_t n;
    uint64_t now;

    for (;;) {
        now = testutil_now_ms();
        if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0)
            return -1;
        n = recv(fd, buf + used, len - 1 - used, 0);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        used += (size_t)n;
        if (used == len - 1)
            break;
    }
    buf[used] = '\0';
    return (ssize_t)used;
}

/* A request that arrives in pieces is answered once it is whole. */
static void split_request(struct client *client, int port)
{
    char answer[4096];
    int fd = connect_loopback(port);

    if (fd < 0 || send_all(fd, "GET /hea") != 0 ||
        send_all(fd, "lthz HTTP/1.1\r\nHost: 127.0.0.1\r\n") != 0 ||
        send_all(fd, "Connection: close\r\n\r\n") != 0) {
        snprintf(client->outcome, sizeof(client->outcome), "cannot send: %s", strerror(errno));
    } else if (read_until_closed(fd, answer, sizeof(answer), 10000) < 0) {
        snprintf(client->outcome, sizeof(client->outcome), "no complete answer");
    } else if (strncmp(answer, "HTTP/1.1 200 ", 13) != 0 ||
               strstr(answer, "\r\n\r\n{\"status\":\"ok\"}") == NULL) {
        snprintf(client->outcome, sizeof(client->outcome), "unexpected answer: %.200s", answer);
    } else {
        snprintf(client->outcome, sizeof(client->outcome), "ok");
    }
    if (fd >= 0)
        close(fd);
}

/* A client that stops mid-request is dropped after the connection timeout. Only MHD_run() from
 * the uv_timer armed by MHD_get_timeout() can do that: no socket event comes. */
static void stalled_request(struct client *client, int port)
{
    char answer[256];
    uint64_t start = testutil_now_ms();
    int fd = connect_loopback(port);
    ssize_t n;

    if (fd < 0 || send_all(fd, "GET /hea") != 0) {
        snprintf(client->outcome, sizeof(client->outcome), "cannot send: %s", strerror(errno));
    } else if ((n = read_until_closed(fd, answer, sizeof(answer), 10000)) != 0) {
        snprintf(client->outcome, sizeof(client->outcome),
                 n < 0 ? "the stalled connection was never closed"
                       : "the stalled connection got an answer");
    } else if (testutil_now_ms() - start < 4500) {
        snprintf(client->outcome, sizeof(client->outcome),
                 "closed after %llu ms, before the timeout",
                 (unsigned long long)(testutil_now_ms() - start));
    } else {
        snprintf(client->outcome, sizeof(client->outcome), "ok");
    }
    if (fd >= 0)
        close(fd);
}

START_TEST(raw_clients)
{
    struct job jobs[] = {{.method = "GET", .path = "/healthz"}};
    struct client clients[] = {
        {.custom = split_request},
        {.custom = stalled_request},
        {.jobs = jobs, .njobs = 1}, /* served while the stalled one waits */
    };
    struct health_source src;
    struct fake_source fs;

    fake_init(&fs, &src);
    run_clients(&src, clients, 3);
    ck_assert_str_eq(clients[0].outcome, "ok");
    ck_assert_str_eq(clients[1].outcome, "ok");
    assert_answer(&jobs[0], 200, CT_JSON);
    jobs_free(jobs, 1);
}
END_TEST

/* Issue 17 item 3: a flood of connections that never finish their request, held past the
 * connection limit, then dropped all at once. Before the fix MHD had taken its listening socket out
 * of its epoll set at the limit and, with no connection left, reported no timeout: MHD_run() was
 * never called again and the server stayed deaf. `hold_ms` is how long the flood is held. */
#define FLOOD_CONNECTIONS 300

static void flood_then_ask(struct client *client, int port, int count, int hold_ms)
{
    static int fds[FLOOD_CONNECTIONS];
    char answer[4096];
    uint64_t start, ended;
    int i, opened = 0, fd = -1;

    for (i = 0; i < count; i++) {
        fds[i] = connect_loopback(port);
        if (fds[i] >= 0) {
            opened++;
            /* An unfinished request line: MHD keeps the connection waiting for the rest. */
            (void)send_all(fds[i], "GET /hea");
        }
    }
    /* The flood is the hostile input: it lasts this long whatever the server does. */
    start = testutil_now_ms();
    while (testutil_now_ms() - start < (uint64_t)hold_ms)
        poll(NULL, 0, 50);
    for (i = 0; i < count; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    ended = testutil_now_ms();
    if (opened == 0) {
        snprintf(client->outcome, sizeof(client->outcome), "no connection could be opened");
        return;
    }
    fd = connect_loopback(port);
    if (fd < 0 || send_all(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Connection: close\r\n\r\n") != 0) {
        snprintf(client->outcome, sizeof(client->outcome), "cannot ask after the flood: %s",
                 strerror(errno));
    } else if (read_until_closed(fd, answer, sizeof(answer), 1000) < 0) {
        snprintf(client->outcome, sizeof(client->outcome),
                 "/healthz did not answer within 1 s of the flood ending");
    } else if (strncmp(answer, "HTTP/1.1 200 ", 13) != 0) {
        snprintf(client->outcome, sizeof(client->outcome), "unexpected answer: %.200s", answer);
    } else if (testutil_now_ms() - ended > 1000) {
        snprintf(client->outcome, sizeof(client->outcome), "answered %llu ms after the flood",
                 (unsigned long long)(testutil_now_ms() - ended));
    } else {
        snprintf(client->outcome, sizeof(client->outcome), "ok");
    }
    if (fd >= 0)
        close(fd);
}

static void flood_200_for_3s(struct client *client, int port)
{
    flood_then_ask(client, port, 200, 3000);
}

/* 40 connections kept past the server's 5 s connection timeout. */
static void flood_40_past_timeout(struct client *client, int port)
{
    flood_then_ask(client, port, 40, 6500);
}

/* More than the server's connection limit (256): the rest wait in the listen queue. */
static void flood_300_for_3s(struct client *client, int port)
{
    flood_then_ask(client, port, FLOOD_CONNECTIONS, 3000);
}

START_TEST(flood_of_unfinished_requests_does_not_wedge_the_server)
{
    static void (*const floods[])(struct client *, int) = {flood_200_for_3s, flood_40_past_timeout,
                                                           flood_300_for_3s};
    struct client clients[] = {{.custom = floods[_i]}};
    struct health_source src;
    struct fake_source fs;

    fake_init(&fs, &src);
    run_clients(&src, clients, 1);
    ck_assert_str_eq(clients[0].outcome, "ok");
}
END_TEST

static int closed_count;

static void count_close(struct health *h)
{
    (void)h;
    closed_count++;
}

START_TEST(close_without_requests)
{
    struct health_source src;
    struct fake_source fs;
    struct health h;
    uv_loop_t loop;

    fake_init(&fs, &src);
    closed_count = 0;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(health_init(&h, &loop, "127.0.0.1", 0, &src), 0);
    ck_assert_int_gt(health_port(&h), 0);
    health_close(&h, count_close);
    health_close(&h, count_close);     /* a second close is ignored */
    ck_assert_int_eq(closed_count, 0); /* never before the handles are closed */
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(closed_count, 1);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(bad_arguments_leave_nothing)
{
    static const struct {
        const char *host;
        int port;
    } bad[] = {
        {"localhost", 0},  {"127.0.0.256", 0},   {"", 0}, {"127.0.0.1:80", 0}, {"[127.0.0.1", 0},
        {"127.0.0.1", -1}, {"127.0.0.1", 65536},
    };
    struct health_source src, no_metrics;
    struct fake_source fs;
    struct health h;
    uv_loop_t loop;
    size_t i;

    fake_init(&fs, &src);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(health_init(&h, &loop, bad[i].host, bad[i].port, &src), OMNISYNC_EINVAL);
    ck_assert_int_eq(health_init(&h, &loop, NULL, 0, &src), OMNISYNC_EINVAL);
    no_metrics = src;
    no_metrics.metrics = NULL;
    ck_assert_int_eq(health_init(&h, &loop, "127.0.0.1", 0, &no_metrics), OMNISYNC_EINVAL);
    ck_assert_int_eq(health_init(&h, &loop, "127.0.0.1", 0, NULL), OMNISYNC_EINVAL);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(port_in_use_fails_cleanly_and_is_reusable_after_close)
{
    struct health_source src;
    struct fake_source fs;
    struct health first, second;
    uv_loop_t loop;
    int port;

    fake_init(&fs, &src);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(health_init(&first, &loop, "127.0.0.1", 0, &src), 0);
    port = health_port(&first);
    ck_assert_int_eq(health_init(&second, &loop, "127.0.0.1", port, &src), OMNISYNC_EIO);
    /* The bracketed form is accepted too. */
    ck_assert_int_eq(health_init(&second, &loop, "[127.0.0.1]", port, &src), OMNISYNC_EIO);
    health_close(&first, NULL);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);

    /* Closed means the socket is gone: the same port can be listened on again at once. */
    ck_assert_int_eq(health_init(&second, &loop, "127.0.0.1", port, &src), 0);
    ck_assert_int_eq(health_port(&second), port);
    health_close(&second, NULL);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("server");

    tcase_add_test(tc, serves_every_endpoint);
    tcase_add_test(tc, readyz_reports_every_field);
    tcase_add_loop_test(tc, readyz_follows_the_source, 0,
                        (int)(sizeof(readiness_cases) / sizeof(readiness_cases[0])));
    tcase_add_test(tc, readyz_caps_last_error);
    tcase_add_loop_test(tc, readyz_says_when_counts_are_stale, 0, 2);
    tcase_add_test(tc, readyz_shows_a_pause_by_the_api);
    tcase_add_test(tc, oversized_headers_are_refused);
    tcase_add_test(tc, concurrent_clients);
    tcase_add_test(tc, raw_clients);
    tcase_add_loop_test(tc, flood_of_unfinished_requests_does_not_wedge_the_server, 0, 3);
    tcase_add_test(tc, close_without_requests);
    tcase_add_test(tc, bad_arguments_leave_nothing);
    tcase_add_test(tc, port_in_use_fails_cleanly_and_is_reusable_after_close);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    /* Before any thread exists, as libcurl requires. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return EXIT_FAILURE;
    }
    sr = srunner_create(health_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
