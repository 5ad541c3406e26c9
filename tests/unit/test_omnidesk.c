/*
 * test_omnidesk: the Omnidesk HTTP client against the fake Omnidesk over loopback.
 *
 * Every test starts its own fake (tests/fake-omnidesk) and its own libuv loop, drives the client
 * only through the loop, checks what the fake really received through its request log, and ends
 * with uv_loop_close() == 0: no handle of the client may outlive close_cb. Waiting is always for
 * a condition with a deadline (a guard timer on the loop), never a sleep.
 */
#include <arpa/inet.h>
#include <check.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake.h"
#include "omnidesk.h"
#include "testutil.h"

#define KEY "unit-test-key-7f3a9c"
#define WRONG_KEY "not-the-key-51d2"
#define DEADLINE_MS 10000

/* ---- harness ------------------------------------------------------------------------------- */

struct outcome {
    int done;
    struct omnidesk_response r;
};

struct rig {
    struct fake_omnidesk fake;
    uv_loop_t loop;
    struct omnidesk client;
    int closed;
    int done_at_close; /* responses seen when close_cb ran */
    int responses;     /* all responses of this rig */
};

/* Set while omnidesk_send runs: a callback from inside it would break the libuv contract. */
static int in_send;
static struct rig *current;

static void on_response(struct omnidesk *c, const struct omnidesk_response *r)
{
    struct outcome *o = r->data;

    ck_assert_msg(!in_send, "callback ran inside omnidesk_send");
    ck_assert_ptr_eq(c, &current->client);
    o->r = *r;
    o->done++;
    current->responses++;
    /* The answer may come from the timer phase of an iteration: without this, UV_RUN_ONCE would
     * go on to block in poll until the next timer (the guard) before run_until saw it. */
    uv_stop(c->loop);
}

static void on_closed(struct omnidesk *c)
{
    struct rig *t = current;

    ck_assert_ptr_eq(c, &t->client);
    ck_assert_int_eq(t->closed, 0);
    t->closed = 1;
    t->done_at_close = t->responses;
    uv_stop(&t->loop);
}

static void on_guard(uv_timer_t *timer)
{
    *(int *)timer->data = 1;
    uv_stop(timer->loop);
}

/* Turns the loop until cond(arg) holds or `timeout_ms` passes; returns cond(arg). */
static int run_until(uv_loop_t *loop, int (*cond)(void *), void *arg, uint64_t timeout_ms)
{
    uv_timer_t guard;
    int expired = 0;
    int ok;

    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_guard, timeout_ms, 0);
    while (!(ok = cond(arg)) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static int outcome_done(void *arg)
{
    return ((struct outcome *)arg)->done > 0;
}

struct many {
    struct outcome *o;
    int n;
};

static int all_done(void *arg)
{
    struct many *m = arg;

    for (int i = 0; i < m->n; i++)
        if (m->o[i].done == 0)
            return 0;
    return 1;
}

static int rig_closed(void *arg)
{
    return ((struct rig *)arg)->closed;
}

static struct omnidesk_options default_options(struct rig *t)
{
    struct omnidesk_options o = {
        .base_url = t->fake.url,
        .api_key = KEY,
        .timeout_ms = 5000,
        .connect_timeout_ms = 0,
        .max_in_flight = 16,
        .max_body = 0,
    };
    return o;
}

static void rig_start_with(struct rig *t, const char *faults, const struct omnidesk_options *opts)
{
    struct omnidesk_options o;

    memset(t, 0, sizeof(*t));
    current = t;
    ck_assert_int_eq(fake_start(&t->fake, KEY, faults), 0);
    ck_assert_int_eq(uv_loop_init(&t->loop), 0);
    o = opts ? *opts : default_options(t);
    if (o.base_url == NULL)
        o.base_url = t->fake.url;
    ck_assert_int_eq(omnidesk_init(&t->client, &t->loop, &o), 0);
}

static void rig_start(struct rig *t, const char *faults)
{
    rig_start_with(t, faults, NULL);
}

/* Closes the client (draining), proves nothing of it is left on the loop, stops the fake. */
static void rig_stop(struct rig *t)
{
    omnidesk_close(&t->client, 0, on_closed);
    ck_assert_msg(run_until(&t->loop, rig_closed, t, DEADLINE_MS), "close_cb never ran");
    ck_assert_int_eq(uv_loop_close(&t->loop), 0);
    ck_assert_int_eq(fake_stop(&t->fake), 0);
}

static int send_req(struct rig *t, enum omnidesk_endpoint e, long long id,
                    const struct omnidesk_field *fields, size_t n, struct outcome *o)
{
    int rc;

    memset(o, 0, sizeof(*o));
    in_send = 1;
    rc = omnidesk_send(&t->client, e, id, fields, n, on_response, o);
    in_send = 0;
    return rc;
}

/* Sends one request and waits for its outcome. */
static void call(struct rig *t, enum omnidesk_endpoint e, long long id,
                 const struct omnidesk_field *fields, size_t n, struct outcome *o)
{
    ck_assert_int_eq(send_req(t, e, id, fields, n, o), 0);
    ck_assert_int_eq(o->done, 0);
    ck_assert_msg(run_until(&t->loop, outcome_done, o, DEADLINE_MS), "no answer from %s",
                  omnidesk_endpoint_name(e));
    ck_assert_int_eq(o->done, 1);
}

#define NF(a) (sizeof(a) / sizeof((a)[0]))

/* The last request the fake logged, as a new reference. */
static struct json_object *last_logged(struct rig *t)
{
    struct json_object *root = NULL, *requests, *entry;
    size_t n;

    ck_assert_int_eq(fake_get_json(&t->fake, "/_fake/log", &root), 0);
    ck_assert(json_object_object_get_ex(root, "requests", &requests));
    n = json_object_array_length(requests);
    ck_assert_uint_gt(n, 0);
    entry = json_object_get(json_object_array_get_idx(requests, n - 1));
    json_object_put(root);
    return entry;
}

static const char *str_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static const char *logged_field(struct json_object *entry, const char *name)
{
    struct json_object *fields;

    ck_assert(json_object_object_get_ex(entry, "fields", &fields));
    return str_of(fields, name);
}

static void assert_logged(struct rig *t, const char *method, const char *path,
                          const char *content_type_prefix)
{
    struct json_object *e = last_logged(t);
    const char *ct = str_of(e, "content_type");

    ck_assert_str_eq(str_of(e, "method"), method);
    ck_assert_str_eq(str_of(e, "path"), path);
    if (content_type_prefix == NULL)
        ck_assert_msg(ct == NULL || ct[0] == '\0', "unexpected content type %s", ct);
    else
        ck_assert_msg(ct != NULL &&
                          strncmp(ct, content_type_prefix, strlen(content_type_prefix)) == 0,
                      "content type %s, wanted %s", ct ? ct : "(none)", content_type_prefix);
    json_object_put(e);
}

static long long fake_customer_id(struct rig *t, const char *primary_id)
{
    struct json_object *c = NULL, *id;
    long long v;

    ck_assert_int_eq(fake_find_customer(&t->fake, 1, primary_id, &c), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert(json_object_object_get_ex(c, "id", &id));
    v = json_object_get_int64(id);
    json_object_put(c);
    return v;
}

static void create_customer(struct rig *t, const char *primary_id)
{
    const struct omnidesk_field f[] = {{"brand_id", "1"},
                                       {"primary_id", primary_id},
                                       {"firstname", "Anne"},
                                       {"lastname", "Smith"}};
    struct outcome o;

    call(t, OMNIDESK_CREATE, 0, f, NF(f), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "create: %ld %s", o.r.http_status, o.r.error);
}

/* ---- names and argument checks -------------------------------------------------------------- */

START_TEST(names)
{
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_CREATE), "create");
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_UPDATE), "updateCustomer");
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_ADD_CHANNEL), "addChannelOnly");
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_PURGE), "purgeData");
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_PURGE_LEGACY), "purgedata");
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_SEARCH), "search");
    ck_assert_str_eq(omnidesk_endpoint_name(OMNIDESK_PROBE), "probe");
    ck_assert_str_eq(omnidesk_class_name(OMNIDESK_OK), "ok");
    ck_assert_str_eq(omnidesk_class_name(OMNIDESK_TRANSIENT), "transient");
    ck_assert_str_eq(omnidesk_class_name(OMNIDESK_PERMANENT), "permanent");
    ck_assert_str_eq(omnidesk_class_name(OMNIDESK_AUTH), "auth");
    ck_assert_str_eq(omnidesk_class_name(OMNIDESK_NOT_FOUND), "not_found");
}
END_TEST

/* A failed init leaves nothing on the loop; bad options are refused. */
START_TEST(init_refuses_bad_options)
{
    uv_loop_t loop;
    struct omnidesk c;
    const struct omnidesk_options good = {"http://127.0.0.1:9", KEY, 1000, 0, 4, 0, 0};
    struct omnidesk_options o;

    ck_assert_int_eq(uv_loop_init(&loop), 0);
    o = good, o.base_url = NULL;
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.base_url = "ftp://127.0.0.1/";
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.base_url = "127.0.0.1:80";
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.api_key = "";
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.api_key = NULL;
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.api_key = "key\r\nX-Injected: 1";
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.timeout_ms = 0;
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    o = good, o.max_in_flight = 0;
    ck_assert_int_eq(omnidesk_init(&c, &loop, &o), OMNISYNC_EINVAL);
    ck_assert_int_eq(omnidesk_init(&c, &loop, NULL), OMNISYNC_EINVAL);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* Refused sends return an error and never call back; nothing reaches the server. */
START_TEST(send_refuses_bad_requests)
{
    struct rig t;
    struct outcome o;
    struct omnidesk_field many[OMNIDESK_MAX_FIELDS + 1];
    const struct omnidesk_field nameless[] = {{NULL, "x"}};

    rig_start(&t, NULL);
    for (size_t i = 0; i < NF(many); i++)
        many[i] = (struct omnidesk_field){"custom_x", "1"};
    ck_assert_int_eq(send_req(&t, OMNIDESK_PURGE, 0, NULL, 0, &o), OMNISYNC_EINVAL);
    ck_assert_int_eq(send_req(&t, OMNIDESK_PURGE, -5, NULL, 0, &o), OMNISYNC_EINVAL);
    ck_assert_int_eq(send_req(&t, OMNIDESK_CREATE, 0, many, NF(many), &o), OMNISYNC_EINVAL);
    ck_assert_int_eq(send_req(&t, OMNIDESK_UPDATE, 0, nameless, 1, &o), OMNISYNC_EINVAL);
    ck_assert_int_eq(send_req(&t, (enum omnidesk_endpoint)99, 0, NULL, 0, &o), OMNISYNC_EINVAL);
    ck_assert_int_eq(omnidesk_in_flight(&t.client), 0);
    uv_run(&t.loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(t.responses, 0);
    ck_assert_int_eq(fake_stat(&t.fake, "requests"), 0);
    rig_stop(&t);
}
END_TEST

/* ---- request shapes ------------------------------------------------------------------------ */

/* DESIGN §2: multipart for the POSTs, urlencoded for the PUT and the legacy DELETE. */
START_TEST(content_type_per_endpoint)
{
    struct rig t;
    struct outcome o;
    struct json_object *e;
    char path[96];
    long long id;
    const struct omnidesk_field create[] = {
        {"brand_id", "1"},     {"primary_id", "C1"},  {"firstname", "Anne"},
        {"lastname", "Smith"}, {"custom_tier", NULL}, {"extra_email", "anne@example.com"}};
    const struct omnidesk_field search[] = {{"brand_id", "1"}, {"primary_id", "C1"}};
    const struct omnidesk_field add[] = {
        {"brand_id", "1"}, {"primary_id", "C1"}, {"extra_telephone", "+31612345678"}};
    const struct omnidesk_field update[] = {{"externalPrimaryID", "C1"},
                                            {"brandID", "1"},
                                            {"firstname", "Anna"},
                                            {"lastname", "Smith"}};
    const struct omnidesk_field legacy[] = {{"external_id", "C2"}, {"brand_id", "1"}};

    rig_start(&t, NULL);

    call(&t, OMNIDESK_CREATE, 0, create, NF(create), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    ck_assert_int_eq(o.r.http_status, 200);
    ck_assert_str_eq(o.r.error, "");
    ck_assert_int_eq(o.r.endpoint, OMNIDESK_CREATE);
    ck_assert(o.r.seconds > 0.0);
    assert_logged(&t, "POST", "/api/v2/customer", "multipart/form-data");
    e = last_logged(&t);
    ck_assert_str_eq(logged_field(e, "primary_id"), "C1");
    ck_assert_str_eq(logged_field(e, "extra_email"), "anne@example.com");
    ck_assert_ptr_null(logged_field(e, "custom_tier")); /* NULL value: omitted */
    json_object_put(e);

    call(&t, OMNIDESK_SEARCH, 0, search, NF(search), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    id = fake_customer_id(&t, "C1");
    ck_assert_int_eq(o.r.customer_id, id);
    assert_logged(&t, "POST", "/api/v2/customer/SearchByPrimaryExternalID", "multipart/form-data");

    call(&t, OMNIDESK_ADD_CHANNEL, 0, add, NF(add), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    assert_logged(&t, "POST", "/api/v2/customer/addChannelOnly", "multipart/form-data");

    call(&t, OMNIDESK_UPDATE, 0, update, NF(update), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    assert_logged(&t, "PUT", "/api/v2/customer/updateCustomer",
                  "application/x-www-form-urlencoded");
    e = last_logged(&t);
    ck_assert_str_eq(logged_field(e, "firstname"), "Anna");
    json_object_put(e);

    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    assert_logged(&t, "GET", "/api/v2/customer", NULL);

    call(&t, OMNIDESK_PURGE, id, NULL, 0, &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    snprintf(path, sizeof(path), "/api/v2/customer/purgeData/%lld", id);
    assert_logged(&t, "DELETE", path, NULL);
    ck_assert_int_eq(fake_customer_count(&t.fake), 0);

    create_customer(&t, "C2");
    call(&t, OMNIDESK_PURGE_LEGACY, 0, legacy, NF(legacy), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    assert_logged(&t, "DELETE", "/api/v2/customer/purgedata", "application/x-www-form-urlencoded");
    e = last_logged(&t);
    ck_assert_str_eq(logged_field(e, "external_id"), "C2");
    json_object_put(e);
    ck_assert_int_eq(fake_customer_count(&t.fake), 0);

    rig_stop(&t);
}
END_TEST

/* A request with no body of its own, after one whose body had the field `before`. */
static void assert_logged_bare(struct rig *t, const char *method, const char *path,
                               const char *before)
{
    struct json_object *e;

    assert_logged(t, method, path, NULL);
    e = last_logged(t);
    ck_assert_msg(logged_field(e, before) == NULL, "%s %s carried the last request's %s", method,
                  path, before);
    json_object_put(e);
}

/*
 * Requests run one at a time reuse one easy handle (the client's spare): nothing of a request
 * (its body, its verb, its Content-Type) may reach the next one. Each request here follows one
 * whose body or verb it must not inherit.
 */
START_TEST(spare_handle_carries_nothing_over)
{
    struct rig t;
    struct outcome o;
    char path[96];
    long long id;
    const struct omnidesk_field update[] = {{"externalPrimaryID", "C1"},
                                            {"brandID", "1"},
                                            {"firstname", "Anna"},
                                            {"lastname", "Smith"}};
    const struct omnidesk_field legacy[] = {{"external_id", "C2"}, {"brand_id", "1"}};

    rig_start(&t, NULL);
    create_customer(&t, "C1");
    id = fake_customer_id(&t, "C1");
    snprintf(path, sizeof(path), "/api/v2/customer/purgeData/%lld", id);

    call(&t, OMNIDESK_UPDATE, 0, update, NF(update), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o); /* after a PUT with a body */
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    assert_logged_bare(&t, "GET", "/api/v2/customer", "externalPrimaryID");

    call(&t, OMNIDESK_UPDATE, 0, update, NF(update), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    call(&t, OMNIDESK_PURGE, id, NULL, 0, &o); /* after a PUT with a body */
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    assert_logged_bare(&t, "DELETE", path, "externalPrimaryID");

    create_customer(&t, "C2"); /* a POST after a DELETE: a POST again, multipart */
    assert_logged(&t, "POST", "/api/v2/customer", "multipart/form-data");
    call(&t, OMNIDESK_PURGE_LEGACY, 0, legacy, NF(legacy), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o); /* after a DELETE with a body */
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    assert_logged_bare(&t, "GET", "/api/v2/customer", "external_id");

    create_customer(&t, "C3");
    call(&t, OMNIDESK_UPDATE, 0, update, NF(update), &o); /* a PUT after a multipart POST */
    assert_logged(&t, "PUT", "/api/v2/customer/updateCustomer",
                  "application/x-www-form-urlencoded");
    ck_assert_int_eq(fake_customer_count(&t.fake), 1);

    rig_stop(&t);
}
END_TEST

/* The key travels in the apiKey header; a wrong one is AUTH, and the key is in no message. */
START_TEST(api_key_header)
{
    struct rig t;
    struct outcome o;
    struct omnidesk_options opts;

    rig_start(&t, NULL);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    ck_assert_int_eq(o.r.http_status, 200);

    opts = default_options(&t);
    opts.api_key = WRONG_KEY;
    ck_assert_int_eq(omnidesk_reconfigure(&t.client, &opts), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_AUTH);
    ck_assert_int_eq(o.r.http_status, 401);
    ck_assert_int_eq(o.r.transport_error, 0);
    ck_assert_msg(strncmp(o.r.error, "HTTP 401: ", 10) == 0, "error: %s", o.r.error);
    ck_assert_ptr_null(strstr(o.r.error, WRONG_KEY));
    ck_assert_ptr_null(strstr(o.r.error, KEY));
    ck_assert_int_eq(fake_stat(&t.fake, "auth_failures"), 1);

    /* Reload back to the right key: requests started after it use it. */
    opts.api_key = KEY;
    ck_assert_int_eq(omnidesk_reconfigure(&t.client, &opts), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);

    /* A reload with a bad key is refused and changes nothing. */
    opts.api_key = "bad\nkey";
    ck_assert_int_eq(omnidesk_reconfigure(&t.client, &opts), OMNISYNC_EINVAL);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    rig_stop(&t);
}
END_TEST

/* Values with spaces, '&', '=', '+', '%' and UTF-8 arrive as sent, in both encodings. */
START_TEST(field_escaping)
{
    static const char tricky[] = "a b&c=d+e%20f/?#;ü€ 'x' \"y\"";
    struct rig t;
    struct outcome o;
    struct json_object *e;
    const struct omnidesk_field create[] = {{"brand_id", "1"},
                                            {"primary_id", "C 1&2=3+4"},
                                            {"firstname", "Anne Marie"},
                                            {"lastname", "O'Neil-Zoë"},
                                            {"custom_note", tricky}};
    const struct omnidesk_field update[] = {{"externalPrimaryID", "C 1&2=3+4"},
                                            {"brandID", "1"},
                                            {"firstname", "Anne Marie"},
                                            {"lastname", "Zoë Öberg"},
                                            {"custom_note", tricky}};

    rig_start(&t, NULL);
    call(&t, OMNIDESK_CREATE, 0, create, NF(create), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    e = last_logged(&t);
    ck_assert_str_eq(logged_field(e, "primary_id"), "C 1&2=3+4");
    ck_assert_str_eq(logged_field(e, "firstname"), "Anne Marie");
    ck_assert_str_eq(logged_field(e, "lastname"), "O'Neil-Zoë");
    ck_assert_str_eq(logged_field(e, "custom_note"), tricky);
    json_object_put(e);

    call(&t, OMNIDESK_UPDATE, 0, update, NF(update), &o);
    ck_assert_msg(o.r.class == OMNIDESK_OK, "%ld %s", o.r.http_status, o.r.error);
    e = last_logged(&t);
    ck_assert_str_eq(str_of(e, "content_type"), "application/x-www-form-urlencoded");
    ck_assert_str_eq(logged_field(e, "externalPrimaryID"), "C 1&2=3+4");
    ck_assert_str_eq(logged_field(e, "firstname"), "Anne Marie");
    ck_assert_str_eq(logged_field(e, "lastname"), "Zoë Öberg");
    ck_assert_str_eq(logged_field(e, "custom_note"), tricky);
    json_object_put(e);
    rig_stop(&t);
}
END_TEST

/* ---- classification ------------------------------------------------------------------------ */

START_TEST(classify_400_permanent_with_api_message)
{
    struct rig t;
    struct outcome o;
    const struct omnidesk_field no_brand[] = {{"primary_id", "C1"}};

    rig_start(&t, NULL);
    call(&t, OMNIDESK_CREATE, 0, no_brand, NF(no_brand), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_PERMANENT);
    ck_assert_int_eq(o.r.http_status, 400);
    ck_assert_int_eq(o.r.transport_error, 0);
    /* The API's JSON message, not the raw JSON. */
    ck_assert_str_eq(o.r.error, "HTTP 400: brand_id is required");
    ck_assert_int_eq(o.r.retry_after_ms, -1);
    rig_stop(&t);
}
END_TEST

START_TEST(classify_404_not_found)
{
    struct rig t;
    struct outcome o;
    const struct omnidesk_field search[] = {{"brand_id", "1"}, {"primary_id", "nobody"}};

    rig_start(&t, NULL);
    call(&t, OMNIDESK_SEARCH, 0, search, NF(search), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_NOT_FOUND);
    ck_assert_int_eq(o.r.http_status, 404);
    ck_assert_int_eq(o.r.customer_id, 0);
    ck_assert_str_eq(o.r.error, "HTTP 404: customer not found");

    call(&t, OMNIDESK_PURGE, 987654321, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_NOT_FOUND);
    ck_assert_int_eq(o.r.http_status, 404);
    rig_stop(&t);
}
END_TEST

START_TEST(classify_429_retry_after_seconds)
{
    struct rig t;
    struct outcome o;

    rig_start(&t, "{\"p_429\":1,\"retry_after\":\"2\"}");
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 429);
    ck_assert_int_eq(o.r.transport_error, 0);
    ck_assert_int_eq(o.r.retry_after_ms, 2000);
    ck_assert_msg(strncmp(o.r.error, "HTTP 429", 8) == 0, "error: %s", o.r.error);
    rig_stop(&t);
}
END_TEST

START_TEST(classify_429_retry_after_date)
{
    struct rig t;
    struct outcome o;

    rig_start(&t, "{\"p_429\":1,\"retry_after\":\"http-date:120\"}");
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 429);
    /* An HTTP-date has whole seconds: allow for the second boundaries and a slow machine. */
    ck_assert_msg(o.r.retry_after_ms >= 110000 && o.r.retry_after_ms <= 121000,
                  "retry_after_ms %lld", o.r.retry_after_ms);
    rig_stop(&t);
}
END_TEST

/* Issue 17 item 5: a Retry-After of 31 700 years or a date ten years ahead is capped at
 * max_retry_after (5 min when not set), and the answer says it was. */
START_TEST(classify_429_retry_after_is_capped)
{
    static const char *const faults[] = {
        "{\"p_429\":1,\"retry_after\":\"1000000000000\"}",
        "{\"p_429\":1,\"retry_after\":\"http-date:315360000\"}",
        "{\"p_429\":1,\"retry_after\":\"99999999999999999999999\"}",
    };
    struct omnidesk_options opts;
    struct rig t;
    struct outcome o;

    rig_start(&t, faults[_i]);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.http_status, 429);
    if (_i == 2) {
        /* Beyond 64 bits is garbage, not a Retry-After: the caller's own pacing applies. */
        ck_assert_int_eq(o.r.retry_after_ms, -1);
        ck_assert_int_eq(o.r.retry_after_capped, 0);
    } else {
        ck_assert_int_eq(o.r.retry_after_ms, 300000);
        ck_assert_int_eq(o.r.retry_after_capped, 1);
    }
    rig_stop(&t);

    opts = (struct omnidesk_options){
        .api_key = KEY, .timeout_ms = 5000, .max_in_flight = 4, .max_retry_after_ms = 3000};
    rig_start_with(&t, faults[0], &opts);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.retry_after_ms, 3000);
    ck_assert_int_eq(o.r.retry_after_capped, 1);
    rig_stop(&t);
}
END_TEST

START_TEST(classify_503_transient)
{
    struct rig t;
    struct outcome o;

    rig_start(&t, "{\"p_5xx\":1}");
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 503);
    ck_assert_int_eq(o.r.transport_error, 0);
    ck_assert_int_eq(o.r.retry_after_ms, -1);
    ck_assert_msg(strncmp(o.r.error, "HTTP 503: ", 10) == 0, "error: %s", o.r.error);

    /* Retry-After on a 503 is honoured too. */
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"retry_after_5xx\":true,\"retry_after\":\"7\"}"),
                     0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.http_status, 503);
    ck_assert_int_eq(o.r.retry_after_ms, 7000);
    rig_stop(&t);
}
END_TEST

/* A proxy's HTML page: transient, quoted raw, cut at 200 bytes, no control characters. */
START_TEST(classify_html_502)
{
    struct rig t;
    struct outcome o;

    rig_start(&t, "{\"p_html502\":1}");
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 502);
    ck_assert_msg(strncmp(o.r.error, "HTTP 502: <", 11) == 0, "error: %s", o.r.error);
    ck_assert_uint_le(strlen(o.r.error), strlen("HTTP 502: ") + 200 + 3);
    for (const char *p = o.r.error; *p; p++)
        ck_assert_msg((unsigned char)*p >= 0x20 && *p != 0x7f, "control character in error");
    rig_stop(&t);
}
END_TEST

START_TEST(classify_reset)
{
    struct rig t;
    struct outcome o;

    rig_start(&t, "{\"p_reset\":1}");
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 0);
    ck_assert_int_ne(o.r.transport_error, 0);
    ck_assert_str_eq(o.r.error, "connection reset");
    rig_stop(&t);
}
END_TEST

/* "Applied, then the connection closed without an answer": transient, and the fake has it. */
START_TEST(classify_lost_answer)
{
    struct rig t;
    struct outcome o;
    const struct omnidesk_field create[] = {
        {"brand_id", "1"}, {"primary_id", "L1"}, {"firstname", "Anne"}, {"lastname", "Smith"}};

    rig_start(&t, "{\"p_lost\":1}");
    call(&t, OMNIDESK_CREATE, 0, create, NF(create), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 0);
    ck_assert_int_eq(o.r.transport_error, CURLE_GOT_NOTHING);
    ck_assert_str_eq(o.r.error, "connection closed without an answer");
    ck_assert_int_eq(fake_customer_count(&t.fake), 1);
    rig_stop(&t);
}
END_TEST

/*
 * The same on a kept-alive connection: libcurl would send the request again on a new connection
 * (it does so when a reused connection closes before any byte of the answer). A create or a
 * channel add the API applied must not go out twice; the engine decides after a lookup.
 */
START_TEST(lost_answer_on_reused_connection_not_sent_again)
{
    struct rig t;
    struct outcome o;
    const struct omnidesk_field create[] = {
        {"brand_id", "1"}, {"primary_id", "R1"}, {"firstname", "Anne"}, {"lastname", "Smith"}};
    const struct omnidesk_field add[] = {
        {"brand_id", "1"}, {"primary_id", "R1"}, {"extra_email", "r1@example.com"}};

    rig_start(&t, NULL);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o); /* opens the connection the next requests reuse */
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"p_lost\":1}"), 0);

    call(&t, OMNIDESK_CREATE, 0, create, NF(create), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.transport_error, CURLE_SEND_FAIL_REWIND);
    ck_assert_str_eq(o.r.error,
                     "connection closed without an answer; not sent again (it may have been applied)");
    ck_assert_int_eq(fake_stat(&t.fake, "by_endpoint.create"), 1);
    ck_assert_int_eq(fake_customer_count(&t.fake), 1);

    /* A fresh connection for the lost one; kept alive after a good answer, then lost again. */
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"p_lost\":0}"), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"p_lost\":1}"), 0);
    call(&t, OMNIDESK_ADD_CHANNEL, fake_customer_id(&t, "R1"), add, NF(add), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.transport_error, CURLE_SEND_FAIL_REWIND);
    ck_assert_int_eq(fake_stat(&t.fake, "by_endpoint.addChannelOnly"), 1);
    ck_assert_int_eq(fake_stat(&t.fake, "duplicate_channels"), 0);
    rig_stop(&t);
}
END_TEST

/* A server that never answers is given up on after timeout_ms, not after a TCP timeout. */
START_TEST(classify_timeout)
{
    struct rig t;
    struct outcome o;
    struct omnidesk_options opts;

    memset(&opts, 0, sizeof(opts));
    opts.api_key = KEY;
    opts.timeout_ms = 300;
    opts.max_in_flight = 4;
    rig_start_with(&t, "{\"p_hang\":1}", &opts);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 0);
    ck_assert_int_eq(o.r.transport_error, CURLE_OPERATION_TIMEDOUT);
    ck_assert_str_eq(o.r.error, "timeout after 300 ms");
    ck_assert_msg(o.r.seconds >= 0.29 && o.r.seconds < 3.0, "took %.3f s", o.r.seconds);

    /* A reload changes the timeout of the next request. */
    opts.base_url = t.fake.url;
    opts.timeout_ms = 600;
    ck_assert_int_eq(omnidesk_reconfigure(&t.client, &opts), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_str_eq(o.r.error, "timeout after 600 ms");
    ck_assert_msg(o.r.seconds >= 0.59 && o.r.seconds < 3.5, "took %.3f s", o.r.seconds);
    rig_stop(&t);
}
END_TEST

/* Issue 17 item 9: a body too slow on a kept-alive connection was "connect timeout": no connect
 * happened on it, so curl's connect time was 0. */
START_TEST(slow_body_on_a_reused_connection_is_not_a_connect_timeout)
{
    struct rig t;
    struct outcome o;
    struct omnidesk_options opts;

    memset(&opts, 0, sizeof(opts));
    opts.api_key = KEY;
    opts.timeout_ms = 500;
    opts.max_in_flight = 1;
    rig_start_with(&t, NULL, &opts);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o); /* opens the connection kept alive */
    ck_assert_int_eq(o.r.http_status, 200);
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"p_slow_body\":1,\"slow_body_ms\":3000}"), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.transport_error, CURLE_OPERATION_TIMEDOUT);
    ck_assert_msg(strstr(o.r.error, "connect") == NULL, "error: %s", o.r.error);
    ck_assert_str_eq(o.r.error, "timeout after 500 ms while receiving the answer (it came too "
                                "slowly)");
    rig_stop(&t);
}
END_TEST

/* A one-connection server on 127.0.0.1 answering with a 110 kB header line. */
struct big_header_server {
    int listen_fd;
    int port;
    pthread_t thread;
};

static void *big_header_main(void *arg)
{
    struct big_header_server *srv = arg;
    static char header[110 * 1024 + 128];
    char request[4096];
    int fd = accept(srv->listen_fd, NULL, NULL);
    size_t len;

    if (fd < 0)
        return NULL;
    (void)recv(fd, request, sizeof(request), 0);
    len = (size_t)snprintf(header, sizeof(header), "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(header + len, 'a', 110 * 1024);
    len += 110 * 1024;
    len += (size_t)snprintf(header + len, sizeof(header) - len, "\r\nContent-Length: 2\r\n\r\n{}");
    (void)send(fd, header, len, MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    while (recv(fd, request, sizeof(request), 0) > 0)
        ;
    close(fd);
    return NULL;
}

/* Issue 17 item 9: a 100 kB response header was reported as "Out of memory". */
START_TEST(huge_response_header_is_named)
{
    struct big_header_server srv;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t addr_len = sizeof(addr);
    struct omnidesk_options opts;
    char url[64];
    struct rig t;
    struct outcome o;

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(srv.listen_fd, 0);
    ck_assert_int_eq(bind(srv.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    ck_assert_int_eq(listen(srv.listen_fd, 4), 0);
    ck_assert_int_eq(getsockname(srv.listen_fd, (struct sockaddr *)&addr, &addr_len), 0);
    srv.port = ntohs(addr.sin_port);
    ck_assert_int_eq(pthread_create(&srv.thread, NULL, big_header_main, &srv), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv.port);

    memset(&opts, 0, sizeof(opts));
    opts.base_url = url;
    opts.api_key = KEY;
    opts.timeout_ms = 5000;
    opts.max_in_flight = 1;
    rig_start_with(&t, NULL, &opts);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_msg(strstr(o.r.error, "response header too large") != NULL, "error: %s (%s)",
                  o.r.error, curl_easy_strerror((CURLcode)o.r.transport_error));
    rig_stop(&t);
    ck_assert_int_eq(pthread_join(srv.thread, NULL), 0);
    close(srv.listen_fd);
}
END_TEST

/* Nothing listening: a transport error, transient, with plain words. */
START_TEST(classify_connection_refused)
{
    struct rig t;
    struct outcome o;
    struct omnidesk_options opts;
    char url[64];

    rig_start(&t, NULL);
    /* The fake's port, after the fake is gone, has nobody listening. */
    snprintf(url, sizeof(url), "%s", t.fake.url);
    ck_assert_int_eq(fake_stop(&t.fake), 0);
    omnidesk_close(&t.client, 0, on_closed);
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    t.closed = 0;
    opts = default_options(&t);
    opts.base_url = url;
    ck_assert_int_eq(omnidesk_init(&t.client, &t.loop, &opts), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 0);
    ck_assert_int_eq(o.r.transport_error, CURLE_COULDNT_CONNECT);
    ck_assert_msg(strncmp(o.r.error, "could not connect", 17) == 0, "error: %s", o.r.error);
    omnidesk_close(&t.client, 0, on_closed);
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
}
END_TEST

/* ---- search answers ------------------------------------------------------------------------ */

START_TEST(search_id_in_every_shape)
{
    static const char *const shapes[] = {"customer", "top", "items"};
    struct rig t;
    struct outcome o;
    const struct omnidesk_field search[] = {{"brand_id", "1"}, {"primary_id", "S1"}};
    long long id;

    rig_start(&t, NULL);
    create_customer(&t, "S1");
    id = fake_customer_id(&t, "S1");
    ck_assert_int_gt(id, 0);
    for (size_t i = 0; i < NF(shapes); i++) {
        char faults[64];

        snprintf(faults, sizeof(faults), "{\"search_shape\":\"%s\"}", shapes[i]);
        ck_assert_int_eq(fake_set_faults(&t.fake, faults), 0);
        call(&t, OMNIDESK_SEARCH, 0, search, NF(search), &o);
        ck_assert_msg(o.r.class == OMNIDESK_OK, "shape %s: %s", shapes[i], o.r.error);
        ck_assert_msg(o.r.customer_id == id, "shape %s: id %lld, wanted %lld", shapes[i],
                      o.r.customer_id, id);
    }
    rig_stop(&t);
}
END_TEST

/* A 2xx search answer without a usable id is not "found" and not "not found": transient. */
START_TEST(search_truncated_answer_is_transient)
{
    struct rig t;
    struct outcome o;
    const struct omnidesk_field search[] = {{"brand_id", "1"}, {"primary_id", "S1"}};

    rig_start(&t, NULL);
    create_customer(&t, "S1");
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"p_truncated\":1}"), 0);
    call(&t, OMNIDESK_SEARCH, 0, search, NF(search), &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.customer_id, 0);
    ck_assert_msg(o.r.error[0] != '\0', "a transient outcome says why");
    rig_stop(&t);
}
END_TEST

/* ---- hostile answers (issue 17) --------------------------------------------------------- */

/*
 * A server that answers every request with one fixed body (status 200, JSON), for answers the
 * fake never gives. A forked child on a loopback port; canned_stop kills and reaps it.
 */
struct canned {
    pid_t pid;
    char url[64];
};

static void canned_serve(int lfd, const char *body)
{
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(0);
        char buf[65536];
        size_t len = 0;
        long clen = -1;
        char *end = NULL;
        /* Headers, then Content-Length bytes of body. */
        while (len < sizeof(buf) - 1) {
            ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
                char *cl = strcasestr(buf, "\r\ncontent-length:");
                clen = cl != NULL && cl < end ? strtol(cl + 17, NULL, 10) : 0;
            }
            if (end != NULL && len >= (size_t)(end + 4 - buf) + (size_t)clen)
                break;
        }
        char head[256];
        int hn = snprintf(head, sizeof(head),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          strlen(body));
        if (write(fd, head, (size_t)hn) < 0 || write(fd, body, strlen(body)) < 0)
            _exit(1);
        close(fd);
    }
}

static void canned_start(struct canned *c, const char *body)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(lfd, 16), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0)
        canned_serve(lfd, body);
    close(lfd);
}

static void canned_stop(struct canned *c)
{
    kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
}

/* One request of `e` against a server answering `body`: its outcome in *o. */
static void canned_call(const char *body, enum omnidesk_endpoint e, struct outcome *o)
{
    struct canned c;
    struct rig t;
    const struct omnidesk_field fields[] = {{"brand_id", "1"}, {"primary_id", "S1"}};

    canned_start(&c, body);
    memset(&t, 0, sizeof(t));
    current = &t;
    ck_assert_int_eq(uv_loop_init(&t.loop), 0);
    struct omnidesk_options opts = {.base_url = c.url, .api_key = KEY, .timeout_ms = 5000,
                                    .max_in_flight = 4};
    ck_assert_int_eq(omnidesk_init(&t.client, &t.loop, &opts), 0);
    call(&t, e, 0, fields, NF(fields), o);
    omnidesk_close(&t.client, 0, on_closed);
    ck_assert_msg(run_until(&t.loop, rig_closed, &t, DEADLINE_MS), "close_cb never ran");
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    canned_stop(&c);
}

/* 200 {"type":"error"} is a failure whatever the status, and the error says so. */
START_TEST(error_body_with_2xx_is_a_failure)
{
    static const enum omnidesk_endpoint endpoints[] = {OMNIDESK_CREATE, OMNIDESK_UPDATE,
                                                       OMNIDESK_ADD_CHANNEL, OMNIDESK_SEARCH};
    struct outcome o;
    for (size_t i = 0; i < NF(endpoints); i++) {
        canned_call("{\"type\":\"error\",\"message\":\"Customer \\u00e9 not \\n saved\"}",
                    endpoints[i], &o);
        ck_assert_msg(o.r.class == OMNIDESK_PERMANENT, "%s: class %s",
                      omnidesk_endpoint_name(endpoints[i]), omnidesk_class_name(o.r.class));
        ck_assert_int_eq(o.r.customer_id, 0);
        ck_assert_msg(strcmp(o.r.error, "answered 200 with an error body: Customer \xc3\xa9 not "
                                        "  saved") == 0,
                      "error: %s", o.r.error);
    }
    /* Without a message the body itself is quoted, cut and on one line. */
    canned_call("{\"type\":\"error\"}", OMNIDESK_CREATE, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_PERMANENT);
    ck_assert_str_eq(o.r.error, "answered 200 with an error body: {\"type\":\"error\"}");
}
END_TEST

/* A lookup id beyond int64, negative, zero or not an integer is a malformed answer: never
 * clamped into an id that a later purge would target. */
START_TEST(search_id_beyond_int64_is_malformed)
{
    static const char *const bodies[] = {
        "{\"type\":\"result\",\"customer\":{\"id\":9223372036854775808}}",
        "{\"type\":\"result\",\"customer\":{\"id\":123456789012345678901234567890}}",
        "{\"type\":\"result\",\"id\":18446744073709551615}",
        "{\"type\":\"result\",\"items\":[{\"id\":-7}]}",
        "{\"type\":\"result\",\"customer\":{\"id\":0}}",
        "{\"type\":\"result\",\"customer\":{\"id\":12.5}}",
        "{\"type\":\"result\",\"customer\":{\"id\":\"-12\"}}",
        "{\"type\":\"result\",\"customer\":{\"id\":\"1234567890123456789012345678901\"}}",
    };
    struct outcome o;
    for (size_t i = 0; i < NF(bodies); i++) {
        canned_call(bodies[i], OMNIDESK_SEARCH, &o);
        ck_assert_msg(o.r.class == OMNIDESK_TRANSIENT && o.r.customer_id == 0,
                      "%s: class %s id %lld", bodies[i], omnidesk_class_name(o.r.class),
                      o.r.customer_id);
        ck_assert_msg(strstr(o.r.error, "malformed answer") != NULL, "%s: %s", bodies[i],
                      o.r.error);
    }
    /* The largest id that fits is still an id. */
    canned_call("{\"type\":\"result\",\"customer\":{\"id\":9223372036854775807}}", OMNIDESK_SEARCH,
                &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    ck_assert_int_eq(o.r.customer_id, 9223372036854775807LL);
}
END_TEST

/* ---- limits -------------------------------------------------------------------------------- */

/* Beyond max_body the answer is not read: a transient transport error. */
START_TEST(body_cap)
{
    struct rig t;
    struct outcome o;
    struct omnidesk_options opts;

    memset(&opts, 0, sizeof(opts));
    opts.api_key = KEY;
    opts.timeout_ms = 5000;
    opts.max_in_flight = 2;
    opts.max_body = 16;
    rig_start_with(&t, NULL, &opts);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_TRANSIENT);
    ck_assert_int_eq(o.r.http_status, 0);
    ck_assert_int_eq(o.r.transport_error, CURLE_WRITE_ERROR);
    ck_assert_str_eq(o.r.error, "response body exceeds 16 bytes");

    /* The same answer fits the default cap. */
    opts.base_url = t.fake.url;
    opts.max_body = 0;
    ck_assert_int_eq(omnidesk_reconfigure(&t.client, &opts), 0);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o);
    ck_assert_int_eq(o.r.class, OMNIDESK_OK);
    rig_stop(&t);
}
END_TEST

START_TEST(max_in_flight_busy)
{
    struct rig t;
    struct outcome o[3];
    struct omnidesk_options opts;
    struct many m = {o, 2};

    memset(&opts, 0, sizeof(opts));
    opts.api_key = KEY;
    opts.timeout_ms = 5000;
    opts.max_in_flight = 2;
    rig_start_with(&t, "{\"latency_ms\":200}", &opts);
    ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[0]), 0);
    ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[1]), 0);
    ck_assert_int_eq(omnidesk_in_flight(&t.client), 2);
    ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[2]), OMNISYNC_EBUSY);
    ck_assert(run_until(&t.loop, all_done, &m, DEADLINE_MS));
    ck_assert_int_eq(o[0].r.class, OMNIDESK_OK);
    ck_assert_int_eq(o[1].r.class, OMNIDESK_OK);
    ck_assert_int_eq(o[2].done, 0); /* the refused one never calls back */
    ck_assert_int_eq(omnidesk_in_flight(&t.client), 0);
    ck_assert_int_le(fake_stat(&t.fake, "max_concurrency"), 2);
    call(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[2]);
    ck_assert_int_eq(o[2].r.class, OMNIDESK_OK);
    rig_stop(&t);
}
END_TEST

/* 16 requests of 100 ms each run side by side on one thread. */
START_TEST(parallel_requests)
{
    enum { N = 16 };
    struct rig t;
    struct outcome o[N];
    struct many m = {o, N};
    uint64_t start, elapsed;

    rig_start(&t, "{\"latency_ms\":100}");
    start = testutil_now_ms();
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[i]), 0);
    ck_assert_int_eq(omnidesk_in_flight(&t.client), N);
    ck_assert(run_until(&t.loop, all_done, &m, DEADLINE_MS));
    elapsed = testutil_now_ms() - start;
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(o[i].r.class, OMNIDESK_OK);
    ck_assert_msg(elapsed < N * 100 / 2, "16 x 100 ms took %llu ms", (unsigned long long)elapsed);
    ck_assert_int_ge(fake_stat(&t.fake, "max_concurrency"), N / 2);

    /* A second wave reuses the kept-alive connections and is just as parallel. */
    start = testutil_now_ms();
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[i]), 0);
    ck_assert(run_until(&t.loop, all_done, &m, DEADLINE_MS));
    elapsed = testutil_now_ms() - start;
    ck_assert_msg(elapsed < N * 100 / 2, "second wave took %llu ms", (unsigned long long)elapsed);
    rig_stop(&t);
}
END_TEST

/* ---- callbacks and closing ----------------------------------------------------------------- */

struct chain {
    struct rig *t;
    int sent;
    int left;
    struct outcome o;
};

static void on_chain(struct omnidesk *c, const struct omnidesk_response *r)
{
    struct chain *ch = r->data;

    ck_assert_int_eq(r->class, OMNIDESK_OK);
    ch->o.done++;
    uv_stop(c->loop);
    if (--ch->left > 0) {
        in_send = 1;
        ck_assert_int_eq(omnidesk_send(c, OMNIDESK_PROBE, 0, NULL, 0, on_chain, ch), 0);
        in_send = 0;
        ch->sent++;
    }
}

static int chain_done(void *arg)
{
    return ((struct chain *)arg)->left == 0;
}

/* A callback may start the next request. */
START_TEST(send_from_callback)
{
    struct rig t;
    struct chain ch = {&t, 1, 5, {0}};

    rig_start(&t, NULL);
    ck_assert_int_eq(omnidesk_send(&t.client, OMNIDESK_PROBE, 0, NULL, 0, on_chain, &ch), 0);
    ck_assert(run_until(&t.loop, chain_done, &ch, DEADLINE_MS));
    ck_assert_int_eq(ch.o.done, 5);
    ck_assert_int_eq(fake_stat(&t.fake, "requests"), 5);
    rig_stop(&t);
}
END_TEST

/* Close without abort lets requests in flight finish, then close_cb runs. */
START_TEST(close_drains)
{
    struct rig t;
    struct outcome o[3], late;
    struct many m = {o, 3};

    rig_start(&t, "{\"latency_ms\":200}");
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[i]), 0);
    omnidesk_close(&t.client, 0, on_closed);
    ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &late), OMNISYNC_ECANCELED);
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert(all_done(&m));
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(o[i].done, 1);
        ck_assert_int_eq(o[i].r.class, OMNIDESK_OK);
    }
    ck_assert_int_eq(late.done, 0);
    ck_assert_int_eq(t.done_at_close, 3);
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    ck_assert_int_eq(fake_stop(&t.fake), 0);
}
END_TEST

/* Close with abort cancels what runs, from the loop, and closes promptly. */
START_TEST(close_aborts)
{
    struct rig t;
    struct outcome o[3];
    uint64_t start;

    rig_start(&t, "{\"p_hang\":1}");
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[i]), 0);
    /* Let the requests reach the server first. */
    ck_assert(WAIT_UNTIL((uv_run(&t.loop, UV_RUN_NOWAIT), fake_stat(&t.fake, "in_flight") == 3),
                         DEADLINE_MS));
    start = testutil_now_ms();
    omnidesk_close(&t.client, 1, on_closed);
    ck_assert_int_eq(t.responses, 0); /* never from inside omnidesk_close */
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert_uint_lt(testutil_now_ms() - start, 2000);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(o[i].done, 1);
        ck_assert_int_eq(o[i].r.class, OMNIDESK_TRANSIENT);
        ck_assert_int_eq(o[i].r.http_status, 0);
        ck_assert_str_eq(o[i].r.error, "canceled");
    }
    ck_assert_int_eq(t.done_at_close, 3);
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    ck_assert_int_eq(fake_stop(&t.fake), 0);
}
END_TEST

/* A drain that takes too long can be turned into an abort. */
START_TEST(close_drain_then_abort)
{
    struct rig t;
    struct outcome o[2];

    rig_start(&t, "{\"p_hang\":1}");
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(send_req(&t, OMNIDESK_PROBE, 0, NULL, 0, &o[i]), 0);
    omnidesk_close(&t.client, 0, on_closed);
    ck_assert(WAIT_UNTIL((uv_run(&t.loop, UV_RUN_NOWAIT), fake_stat(&t.fake, "in_flight") == 2),
                         DEADLINE_MS));
    ck_assert_int_eq(t.closed, 0);
    omnidesk_close(&t.client, 1, NULL);
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert_str_eq(o[0].r.error, "canceled");
    ck_assert_str_eq(o[1].r.error, "canceled");
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    ck_assert_int_eq(fake_stop(&t.fake), 0);
}
END_TEST

static void on_response_then_close(struct omnidesk *c, const struct omnidesk_response *r)
{
    on_response(c, r);
    omnidesk_close(c, 0, on_closed);
}

/* A callback may close its own client while another request is still running. */
START_TEST(close_from_callback)
{
    struct rig t;
    struct outcome fast, slow;

    rig_start(&t, NULL);
    memset(&fast, 0, sizeof(fast));
    memset(&slow, 0, sizeof(slow));
    ck_assert_int_eq(
        omnidesk_send(&t.client, OMNIDESK_PROBE, 0, NULL, 0, on_response_then_close, &fast), 0);
    ck_assert(run_until(&t.loop, outcome_done, &fast, DEADLINE_MS));
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);

    /* Again, with a second request in flight when the first one's callback closes. */
    t.closed = 0;
    t.responses = 0;
    ck_assert_int_eq(uv_loop_init(&t.loop), 0);
    ck_assert_int_eq(fake_set_faults(&t.fake, "{\"latency_ms\":300,\"paths\":[\"search\"]}"), 0);
    {
        struct omnidesk_options opts = default_options(&t);
        const struct omnidesk_field search[] = {{"brand_id", "1"}, {"primary_id", "x"}};

        ck_assert_int_eq(omnidesk_init(&t.client, &t.loop, &opts), 0);
        memset(&fast, 0, sizeof(fast));
        ck_assert_int_eq(send_req(&t, OMNIDESK_SEARCH, 0, search, NF(search), &slow), 0);
        ck_assert_int_eq(
            omnidesk_send(&t.client, OMNIDESK_PROBE, 0, NULL, 0, on_response_then_close, &fast), 0);
    }
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert_int_eq(fast.done, 1);
    ck_assert_int_eq(slow.done, 1);
    ck_assert_int_eq(slow.r.class, OMNIDESK_NOT_FOUND);
    ck_assert_int_eq(t.done_at_close, 2);
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    ck_assert_int_eq(fake_stop(&t.fake), 0);
}
END_TEST

/* Close of an idle client still closes through the loop. */
START_TEST(close_idle)
{
    struct rig t;

    rig_start(&t, NULL);
    omnidesk_close(&t.client, 1, on_closed);
    ck_assert_int_eq(t.closed, 0);
    ck_assert(run_until(&t.loop, rig_closed, &t, DEADLINE_MS));
    ck_assert_int_eq(uv_loop_close(&t.loop), 0);
    ck_assert_int_eq(fake_stop(&t.fake), 0);
}
END_TEST

static Suite *omnidesk_suite(void)
{
    Suite *s = suite_create("omnidesk");
    TCase *tc;

    tc = tcase_create("api");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, names);
    tcase_add_test(tc, init_refuses_bad_options);
    tcase_add_test(tc, send_refuses_bad_requests);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, content_type_per_endpoint);
    tcase_add_test(tc, spare_handle_carries_nothing_over);
    tcase_add_test(tc, api_key_header);
    tcase_add_test(tc, field_escaping);
    suite_add_tcase(s, tc);

    tc = tcase_create("classification");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, classify_400_permanent_with_api_message);
    tcase_add_test(tc, classify_404_not_found);
    tcase_add_test(tc, classify_429_retry_after_seconds);
    tcase_add_test(tc, classify_429_retry_after_date);
    tcase_add_loop_test(tc, classify_429_retry_after_is_capped, 0, 3);
    tcase_add_test(tc, classify_503_transient);
    tcase_add_test(tc, classify_html_502);
    tcase_add_test(tc, classify_reset);
    tcase_add_test(tc, classify_lost_answer);
    tcase_add_test(tc, lost_answer_on_reused_connection_not_sent_again);
    tcase_add_test(tc, classify_timeout);
    tcase_add_test(tc, slow_body_on_a_reused_connection_is_not_a_connect_timeout);
    tcase_add_test(tc, huge_response_header_is_named);
    tcase_add_test(tc, classify_connection_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("search");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, search_id_in_every_shape);
    tcase_add_test(tc, search_truncated_answer_is_transient);
    tcase_add_test(tc, error_body_with_2xx_is_a_failure);
    tcase_add_test(tc, search_id_beyond_int64_is_malformed);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, body_cap);
    tcase_add_test(tc, max_in_flight_busy);
    tcase_add_test(tc, parallel_requests);
    suite_add_tcase(s, tc);

    tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, send_from_callback);
    tcase_add_test(tc, close_drains);
    tcase_add_test(tc, close_aborts);
    tcase_add_test(tc, close_drain_then_abort);
    tcase_add_test(tc, close_from_callback);
    tcase_add_test(tc, close_idle);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    /* The program's job (see omnidesk.h): once, before anything else. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    sr = srunner_create(omnidesk_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed != 0;
}
