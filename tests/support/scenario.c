/* scenario: see scenario.h. */
#include "scenario.h"

#include <check.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* The defaults a scenario runs with; a key given in the extra text replaces its default. */
static const char *const defaults[][3] = {
    {"omnidesk", "brand_id", "1"},
    {"omnidesk", "timeout_ms", "3000"},
    {"omnidesk", "rate_per_sec", "0"},
    {"omnidesk", "max_in_flight", "16"},
    {"delivery", "backoff_initial_ms", "50"},
    {"delivery", "backoff_max_ms", "1000"},
    {"delivery", "poll_interval", "1s"},
    {"delivery", "shutdown_timeout", "10s"},
    {"health", "listen", ""},
    {"log", "level", "debug"},
};

static int overridden(const char *extra, const char *key)
{
    char needle[80];
    size_t n = (size_t)snprintf(needle, sizeof(needle), "%s =", key);
    for (const char *p = extra; (p = strstr(p, needle)) != NULL; p += n) {
        if (p == extra || p[-1] == '\n')
            return 1;
    }
    return 0;
}

int scenario_write_config(struct scenario *s, const char *extra_config)
{
    char text[8192];
    size_t len = 0;
    snprintf(s->extra, sizeof(s->extra), "%s", extra_config ? extra_config : "");
    len += (size_t)snprintf(text + len, sizeof(text) - len,
                            "[database]\nconninfo = %s\n[omnidesk]\nbase_url = %s\n"
                            "api_key_file = %s\n",
                            s->conninfo, s->fake.url, s->keyfile);
    const char *section = "omnidesk";
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (overridden(s->extra, defaults[i][1]))
            continue;
        if (strcmp(section, defaults[i][0]) != 0) {
            section = defaults[i][0];
            len += (size_t)snprintf(text + len, sizeof(text) - len, "[%s]\n", section);
        }
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s = %s\n", defaults[i][1],
                                defaults[i][2]);
    }
    snprintf(text + len, sizeof(text) - len,
             "[source customers]\ntable = public.customers\nprimary_id = customer_no\n"
             "firstname = first_name\nlastname = last_name\nemail = email\ntelephone = phone\n"
             "custom.tier = loyalty_tier\nerase_flag = gdpr_erase\n"
             "%s",
             s->extra);
    return testutil_write_file(s->config, text, 0600);
}

int scenario_setup(struct scenario *s, const char *extra_config, const char *faults)
{
    static int counter;
    memset(s, 0, sizeof(*s));
    s->pg = pgrig_global();
    if (s->pg == NULL)
        return -1;
    snprintf(s->db, sizeof(s->db), "crm_%d_%d", (int)getpid(), counter++);
    if (pgrig_createdb(s->pg, s->db, s->conninfo, sizeof(s->conninfo)) != 0)
        return -1;
    s->conn = pgrig_connect(s->pg, s->db);
    if (s->conn == NULL || pgrig_exec(s->conn, SCENARIO_TABLE) != 0)
        return -1;
    if (testutil_mkdtemp(s->dir, sizeof(s->dir)) != 0)
        return -1;
    snprintf(s->config, sizeof(s->config), "%s/omnisync.conf", s->dir);
    snprintf(s->keyfile, sizeof(s->keyfile), "%s/api-key", s->dir);
    if (testutil_write_file(s->keyfile, SCENARIO_API_KEY "\n", 0600) != 0)
        return -1;
    if (fake_start(&s->fake, SCENARIO_API_KEY, faults) != 0)
        return -1;
    if (scenario_write_config(s, extra_config) != 0)
        return -1;
    char *argv[] = {OMNISYNC_BIN, "--config", s->config, "migrate", NULL};
    char *err = NULL;
    int rc = proc_run(argv, NULL, 60000, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "scenario: migrate failed (%d): %s\n", rc, err ? err : "");
    free(err);
    return rc == 0 ? 0 : -1;
}

int scenario_spawn_daemon(struct scenario *s, struct proc *p)
{
    char *argv[] = {OMNISYNC_BIN, "--config", s->config, "run", NULL};
    return proc_spawn(p, argv, NULL);
}

int scenario_start_daemon(struct scenario *s, struct proc *p)
{
    if (scenario_spawn_daemon(s, p) != 0)
        return -1;
    if (!proc_wait_stderr(p, "listening for changes", 15000)) {
        proc_dump(p, "omnisync run (not ready)");
        return -1;
    }
    return 0;
}

int scenario_health_port(struct proc *p)
{
    if (!proc_wait_stderr(p, "health endpoint listening", 5000))
        return 0;
    char *log = proc_stderr(p);
    const char *at = strstr(log, "health endpoint listening");
    at = at ? strstr(at, "port=") : NULL;
    int port = at ? atoi(at + 5) : 0;
    free(log);
    return port;
}

long long scenario_open_rows(struct scenario *s)
{
    /* Captured rows the daemon has not moved into the outbox yet are open too. */
    return pgrig_query_int(s->conn,
                           "SELECT (SELECT count(*) FROM omnisync.outbox WHERE status IN "
                           "('pending')) + (SELECT count(*) FROM omnisync.capture)");
}

int scenario_wait_quiet(struct scenario *s, int timeout_ms)
{
    return WAIT_UNTIL(scenario_open_rows(s) == 0, timeout_ms);
}

static const char *json_str(struct json_object *obj, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL)
        return NULL;
    return json_object_get_string(v);
}

static int same(const char *crm, const char *fake)
{
    /* NULL in the CRM is "not set": Omnidesk shows it as absent or empty. */
    if (crm == NULL || *crm == '\0')
        return fake == NULL || *fake == '\0';
    return fake != NULL && strcmp(crm, fake) == 0;
}

static int has_channel(struct json_object *customer, const char *type, const char *value)
{
    struct json_object *channels;
    if (!json_object_object_get_ex(customer, "channels", &channels))
        return 0;
    for (size_t i = 0; i < json_object_array_length(channels); i++) {
        struct json_object *c = json_object_array_get_idx(channels, i);
        const char *t = json_str(c, "type"), *v = json_str(c, "value");
        if (t && v && strcmp(t, type) == 0 && strcmp(v, value) == 0)
            return 1;
    }
    return 0;
}

static int listed(const char *const *list, const char *id)
{
    for (; list != NULL && *list != NULL; list++) {
        if (strcmp(*list, id) == 0)
            return 1;
    }
    return 0;
}

int scenario_compare(struct scenario *s, const char *const *absent, char *why, size_t len)
{
    struct json_object *state = NULL, *customers;
    int rc = -1;
    PGresult *res = NULL;
    if (fake_get_json(&s->fake, "/_fake/state", &state) != 0 ||
        !json_object_object_get_ex(state, "customers", &customers)) {
        snprintf(why, len, "cannot read the fake's state");
        goto out;
    }
    res = PQexec(s->conn, "SELECT customer_no, first_name, last_name, email, phone, loyalty_tier "
                          "FROM customers ORDER BY customer_no");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(why, len, "cannot read the CRM: %s", PQerrorMessage(s->conn));
        goto out;
    }
    size_t expected = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        const char *v[6];
        for (int c = 0; c < 6; c++)
            v[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
        struct json_object *found = NULL;
        for (size_t i = 0; i < json_object_array_length(customers); i++) {
            struct json_object *c = json_object_array_get_idx(customers, i);
            const char *pid = json_str(c, "external_primary_id");
            if (pid && strcmp(pid, id) == 0)
                found = c;
        }
        if (listed(absent, id)) {
            if (found != NULL) {
                snprintf(why, len, "customer %s should be absent at Omnidesk", id);
                goto out;
            }
            continue;
        }
        expected++;
        if (found == NULL) {
            snprintf(why, len, "customer %s is missing at Omnidesk", id);
            goto out;
        }
        struct json_object *custom = NULL;
        json_object_object_get_ex(found, "custom", &custom);
        if (!same(v[1], json_str(found, "firstname")) || !same(v[2], json_str(found, "lastname")) ||
            !same(v[5], custom ? json_str(custom, "tier") : NULL)) {
            snprintf(why, len, "customer %s: names or tier differ", id);
            goto out;
        }
        if ((v[3] && *v[3] && !has_channel(found, "email", v[3])) ||
            (v[4] && *v[4] && !has_channel(found, "telephone", v[4]))) {
            snprintf(why, len, "customer %s: a current channel is missing", id);
            goto out;
        }
    }
    if (json_object_array_length(customers) != expected) {
        snprintf(why, len, "Omnidesk holds %zu customers, the CRM %zu",
                 json_object_array_length(customers), expected);
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    json_object_put(state);
    return rc;
}

void scenario_teardown(struct scenario *s)
{
    if (s->fake.pid > 0 && fake_stop(&s->fake) != 0)
        fprintf(stderr, "scenario: the fake did not exit cleanly\n");
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = NULL;
    if (s->dir[0])
        testutil_rm_rf(s->dir);
}

void scenario_exec(struct scenario *s, const char *sql)
{
    ck_assert_msg(pgrig_exec(s->conn, sql) == 0, "SQL failed: %s", sql);
}

void scenario_execf(struct scenario *s, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    scenario_exec(s, sql);
}

long long scenario_count_status(struct scenario *s, const char *status)
{
    const char *params[] = {status};
    PGresult *res = PQexecParams(s->conn,
                                 "SELECT (SELECT count(*) FROM omnisync.outbox WHERE status = "
                                 "$1) + CASE WHEN $1 = 'pending' THEN (SELECT count(*) FROM "
                                 "omnisync.capture) ELSE 0 END",
                                 1,
                                 NULL, params, NULL, NULL, 0);
    long long n = PQresultStatus(res) == PGRES_TUPLES_OK ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return n;
}

void scenario_dump_outbox(struct scenario *s)
{
    PGresult *res =
        PQexec(s->conn, "SELECT status, count(*), max(attempts), "
                        "string_agg(DISTINCT left(coalesce(last_error, ''), 80), ' | ') "
                        "FROM omnisync.outbox GROUP BY status ORDER BY status");
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(res); i++)
            fprintf(stderr, "outbox: status=%s rows=%s max_attempts=%s errors=%s\n",
                    PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                    PQgetvalue(res, i, 3));
    }
    PQclear(res);
}

void scenario_assert_tier_order(struct scenario *s, int n, int final, int *creates)
{
    struct json_object *log = NULL, *requests;
    ck_assert_int_eq(fake_get_json(&s->fake, "/_fake/log", &log), 0);
    ck_assert(json_object_object_get_ex(log, "requests", &requests));
    int *last = calloc((size_t)n + 1, sizeof(*last));
    ck_assert_ptr_nonnull(last);
    if (creates != NULL)
        memset(creates, 0, ((size_t)n + 1) * sizeof(*creates));
    int checked = 0;
    for (size_t i = 0; i < json_object_array_length(requests); i++) {
        struct json_object *r = json_object_array_get_idx(requests, i), *fields, *cust, *tier, *v;
        if (!json_object_object_get_ex(r, "customer", &cust) || cust == NULL ||
            !json_object_object_get_ex(r, "fields", &fields))
            continue;
        const char *id = json_object_get_string(cust);
        int k = atoi(id + 1);
        ck_assert_msg(k >= 1 && k <= n, "unexpected customer %s in the log", id);
        if (creates != NULL && json_object_object_get_ex(r, "endpoint", &v) &&
            strcmp(json_object_get_string(v), "create") == 0 &&
            json_object_object_get_ex(r, "status", &v) && json_object_get_int(v) == 200)
            creates[k]++;
        if (!json_object_object_get_ex(fields, "custom_tier", &tier))
            continue;
        int t = atoi(json_object_get_string(tier) + 1);
        ck_assert_msg(t >= last[k], "customer %s got v%02d after v%02d (log seq %d)", id, t,
                      last[k], json_object_object_get_ex(r, "seq", &v) ? json_object_get_int(v) : -1);
        last[k] = t;
        checked++;
    }
    ck_assert_int_ge(checked, n);
    for (int k = 1; k <= n; k++)
        ck_assert_msg(last[k] == final, "customer %d ended at v%02d, not v%02d", k, last[k], final);
    free(last);
    json_object_put(log);
}
