/*
 * test_fake_omnidesk: pins the fake Omnidesk's behaviour, over real HTTP with libcurl.
 *
 * The fake is the oracle every other integration test trusts, so each rule it enforces (the
 * API document's patterns, content types, the key), each fault it injects and each control
 * endpoint has a test here with a valid and an invalid case. Each test starts its own fake (a
 * checked fixture, so in the forked child) and ends by stopping it with exit status 0, which
 * under ASan also proves it freed everything.
 */
#include "fake.h"

#include <check.h>
#include <stdbool.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY "test-key-1"
#define NAME_PATTERN "^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$"
#define FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define CUSTOMER "/api/v2/customer"
#define SEARCH "/api/v2/customer/SearchByPrimaryExternalID"
#define UPDATE "/api/v2/customer/updateCustomer"
#define ADD_CHANNEL "/api/v2/customer/addChannelOnly"

static struct fake_omnidesk fake;

static void setup(void)
{
    ck_assert_int_eq(fake_start(&fake, KEY, NULL), 0);
}

static void teardown(void)
{
    ck_assert_int_eq(fake_stop(&fake), 0);
}

/* ---- helpers ---- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A value inside a JSON document by dotted path; array indexes are numbers ("items.0.id"). */
static struct json_object *jget(struct json_object *o, const char *path)
{
    char buf[256];
    char *save = NULL;

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *part = strtok_r(buf, ".", &save); part && o; part = strtok_r(NULL, ".", &save)) {
        if (json_object_is_type(o, json_type_array))
            o = json_object_array_get_idx(o, (size_t)atoi(part));
        else if (!json_object_object_get_ex(o, part, &o))
            return NULL;
    }
    return o;
}

static long long jint(struct json_object *o, const char *path)
{
    struct json_object *v = jget(o, path);

    ck_assert_msg(v != NULL && json_object_is_type(v, json_type_int), "no integer at %s in %s",
                  path, json_object_to_json_string(o));
    return json_object_get_int64(v);
}

/* The string at `path`, or NULL for JSON null or absent. */
static const char *jstr(struct json_object *o, const char *path)
{
    struct json_object *v = jget(o, path);

    return v ? json_object_get_string(v) : NULL;
}

static bool jnull(struct json_object *o, const char *path)
{
    struct json_object *v = NULL;
    char buf[256];
    char *dot;

    /* Distinguish "present and null" from "absent": look the last key up in its parent. */
    snprintf(buf, sizeof(buf), "%s", path);
    dot = strrchr(buf, '.');
    if (dot != NULL) {
        *dot = '\0';
        o = jget(o, buf);
        path = path + (dot - buf) + 1;
    }
    return o != NULL && json_object_object_get_ex(o, path, &v) && v == NULL;
}

static struct fake_reply call(const char *method, const char *path, enum fake_body body,
                              const char *const *fields)
{
    struct fake_reply reply;

    ck_assert_int_eq(fake_api(&fake, method, path, body, fields, &reply), 0);
    ck_assert_msg(reply.curl_code == 0, "%s %s: curl %d %s", method, path, reply.curl_code,
                  reply.curl_error);
    return reply;
}

/* Sends and checks the status and, unless NULL, the JSON message. */
static void expect(const char *method, const char *path, enum fake_body body,
                   const char *const *fields, long status, const char *message)
{
    struct fake_reply reply = call(method, path, body, fields);

    ck_assert_msg(reply.status == status, "%s %s: status %ld, wanted %ld; body %s", method, path,
                  reply.status, status, reply.body);
    ck_assert_msg(reply.json != NULL, "%s %s: body is not JSON: %s", method, path, reply.body);
    if (message != NULL)
        ck_assert_str_eq(fake_reply_message(&reply), message);
    fake_reply_free(&reply);
}

static void create(const char *primary_id)
{
    expect(
        "POST", CUSTOMER, FAKE_BODY_MULTIPART,
        FIELDS("brand_id", "1", "primary_id", primary_id, "firstname", "Ann", "lastname", "Smith"),
        200, "User created and channel linked.");
}

static long long customer_id(const char *primary_id)
{
    struct fake_reply reply = call("POST", SEARCH, FAKE_BODY_MULTIPART,
                                   FIELDS("brand_id", "1", "primary_id", primary_id));
    long long id;

    ck_assert_int_eq(reply.status, 200);
    id = jint(reply.json, "customer.id");
    fake_reply_free(&reply);
    return id;
}

static struct json_object *get_json(const char *path)
{
    struct json_object *o = NULL;

    ck_assert_int_eq(fake_get_json(&fake, path, &o), 0);
    return o;
}

/* The newest request log entry (a new reference). */
static struct json_object *last_log_entry(void)
{
    struct json_object *log = get_json("/_fake/log");
    struct json_object *requests = jget(log, "requests");
    struct json_object *last;
    size_t n;

    ck_assert_ptr_nonnull(requests);
    n = json_object_array_length(requests);
    ck_assert_uint_gt(n, 0);
    last = json_object_get(json_object_array_get_idx(requests, n - 1));
    json_object_put(log);
    return last;
}

static void set_faults(const char *json)
{
    ck_assert_int_eq(fake_set_faults(&fake, json), 0);
}

static void expect_customers(long long count)
{
    ck_assert_int_eq(fake_customer_count(&fake), count);
}

/* Polls a stat until it equals `want` (deadline 5 s). */
static void wait_stat_eq(struct fake_omnidesk *f, const char *name, long long want)
{
    double deadline = now_s() + 5.0;
    long long value;

    while ((value = fake_stat(f, name)) != want) {
        ck_assert_msg(now_s() < deadline, "%s stayed %lld, wanted %lld", name, value, want);
        usleep(10000);
    }
}

/* ---- control API ---- */

START_TEST(test_control_initial)
{
    struct json_object *o;

    o = get_json("/_fake/state");
    ck_assert_uint_eq(json_object_array_length(jget(o, "customers")), 0);
    json_object_put(o);
    o = get_json("/_fake/log");
    ck_assert_uint_eq(json_object_array_length(jget(o, "requests")), 0);
    json_object_put(o);
    o = get_json("/_fake/stats");
    ck_assert_int_eq(jint(o, "requests"), 0);
    ck_assert_int_eq(jint(o, "by_endpoint.create"), 0);
    ck_assert_int_eq(jint(o, "by_endpoint.searchByChannel"), 0);
    ck_assert_int_eq(jint(o, "by_endpoint.unknown"), 0);
    ck_assert_int_eq(jint(o, "duplicate_creates"), 0);
    ck_assert_int_eq(jint(o, "duplicate_channels"), 0);
    ck_assert_int_eq(jint(o, "validation_errors"), 0);
    ck_assert_int_eq(jint(o, "auth_failures"), 0);
    ck_assert_int_eq(jint(o, "rate_limited"), 0);
    ck_assert_int_eq(jint(o, "faults"), 0);
    ck_assert_int_eq(jint(o, "max_concurrency"), 0);
    ck_assert_int_eq(jint(o, "in_flight"), 0);
    ck_assert_int_eq(jint(o, "customers"), 0);
    json_object_put(o);
    o = get_json("/_fake/faults");
    ck_assert_int_eq(jint(o, "latency_ms"), 0);
    ck_assert_str_eq(jstr(o, "retry_after"), "1");
    ck_assert_str_eq(jstr(o, "search_shape"), "customer");
    ck_assert(jnull(o, "paths"));
    ck_assert_ptr_null(jget(o, "api_key")); /* write-only */
    json_object_put(o);

    /* Unknown control routes are JSON 404s too. */
    {
        struct json_object *out = NULL;

        ck_assert_int_eq(fake_get_json(&fake, "/_fake/nothing", &out), -1);
    }
}
END_TEST

START_TEST(test_create_multipart_state_and_log)
{
    struct json_object *o;
    struct json_object *entry;

    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "firstname", "Zoë", "lastname", "Smith",
                  "extra_email", "a@b.nl", "extra_telephone", "+31612345678", "custom_tier",
                  "gold"),
           200, "User created and channel linked.");
    o = get_json("/_fake/state");
    ck_assert_int_eq(jint(o, "customers.0.id"), 1);
    ck_assert_str_eq(jstr(o, "customers.0.external_primary_id"), "C1");
    ck_assert_int_eq(jint(o, "customers.0.brand_id"), 1);
    ck_assert_str_eq(jstr(o, "customers.0.firstname"), "Zoë");
    ck_assert_str_eq(jstr(o, "customers.0.lastname"), "Smith");
    ck_assert_str_eq(jstr(o, "customers.0.custom.tier"), "gold");
    ck_assert_str_eq(jstr(o, "customers.0.channels.0.type"), "email");
    ck_assert_str_eq(jstr(o, "customers.0.channels.0.value"), "a@b.nl");
    ck_assert_str_eq(jstr(o, "customers.0.channels.1.type"), "telephone");
    ck_assert_str_eq(jstr(o, "customers.0.channels.1.value"), "+31612345678");
    json_object_put(o);

    entry = last_log_entry();
    ck_assert_int_eq(jint(entry, "seq"), 1);
    ck_assert(json_object_get_double(jget(entry, "time")) > 1e9);
    ck_assert_str_eq(jstr(entry, "method"), "POST");
    ck_assert_str_eq(jstr(entry, "path"), CUSTOMER);
    ck_assert_str_eq(jstr(entry, "endpoint"), "create");
    ck_assert_str_eq(jstr(entry, "content_type"), "multipart/form-data");
    ck_assert_str_eq(jstr(entry, "fields.primary_id"), "C1");
    ck_assert_str_eq(jstr(entry, "fields.custom_tier"), "gold");
    ck_assert_str_eq(jstr(entry, "customer"), "C1");
    ck_assert_int_eq(jint(entry, "status"), 200);
    ck_assert(jnull(entry, "fault"));
    json_object_put(entry);
    ck_assert_int_eq(fake_stat(&fake, "by_endpoint.create"), 1);
    ck_assert_int_eq(fake_stat(&fake, "customers"), 1);
    ck_assert_int_eq(fake_stat(&fake, "max_concurrency"), 1);
}
END_TEST

START_TEST(test_create_urlencoded_and_link_channel)
{
    struct json_object *c = NULL;

    expect("POST", CUSTOMER, FAKE_BODY_URLENCODED,
           FIELDS("brand_id", "1", "primary_id", "C1", "channel_id", "telephone",
                  "customer_link_channel", "+31612345678"),
           200, "User created and channel linked.");
    ck_assert_int_eq(fake_find_customer(&fake, 1, "C1", &c), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(jstr(c, "channels.0.type"), "telephone");
    ck_assert_str_eq(jstr(c, "channels.0.value"), "+31612345678");
    ck_assert(jnull(c, "firstname"));
    json_object_put(c);

    /* A numeric channel id is kept as the channel's type. */
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C2", "channel_id", "7", "customer_link_channel",
                  "someone"),
           200, NULL);
    ck_assert_int_eq(fake_find_customer(&fake, 1, "C2", &c), 0);
    ck_assert_str_eq(jstr(c, "channels.0.type"), "7");
    json_object_put(c);

    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C3", "customer_link_channel", "a@b.nl"), 400,
           "channel_id is required with customer_link_channel");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C3", "channel_id", "email",
                  "customer_link_channel", "not-an-email"),
           400, "customer_link_channel must be a valid email address");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C3", "channel_id", "telephone",
                  "customer_link_channel", "0612345678"),
           400, "customer_link_channel must match ^\\+[0-9]+$");
    expect_customers(2);
}
END_TEST

START_TEST(test_duplicate_create)
{
    create("C1");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 400,
           "customer with this primary id already exists");
    ck_assert_int_eq(fake_stat(&fake, "duplicate_creates"), 1);
    ck_assert_int_eq(fake_stat(&fake, "validation_errors"), 0);
    expect_customers(1);
    /* The same primary id in another brand is another customer. */
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "2", "primary_id", "C1"), 200,
           NULL);
    expect_customers(2);
}
END_TEST

/* ---- validation ---- */

START_TEST(test_required_fields)
{
    create("C1");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("primary_id", "C2"), 400,
           "brand_id is required");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1"), 400,
           "primary_id is required");
    /* An empty value is a missing value. */
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "", "primary_id", "C2"), 400,
           "brand_id is required");
    /* updateCustomer requires all four, reported in the document's order. */
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("brandID", "1", "firstname", "Ann", "lastname", "Smith"), 400,
           "externalPrimaryID is required");
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "firstname", "Ann", "lastname", "Smith"), 400,
           "brandID is required");
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "1", "lastname", "Smith"), 400,
           "firstname is required");
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "1", "firstname", "Ann"), 400,
           "lastname is required");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("primary_id", "C1", "extra_email", "a@b.nl"), 400, "brand_id is required");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "extra_email", "a@b.nl"), 400,
           "primary_id or customer_id is required");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"),
           400, "one of extra_email, extra_telephone, extra_twitter, extra_facebook is required");
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1"), 400,
           "primary_id is required");
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("primary_id", "C1"), 400,
           "brand_id is required");
    expect("POST", "/api/v2/customer/SearchByCustomerChannelValue", FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1"), 400, "customerChannelValue is required");
    expect("DELETE", "/api/v2/customer/purgedata", FAKE_BODY_URLENCODED, FIELDS("brand_id", "1"),
           400, "external_id is required");
    ck_assert_int_eq(fake_stat(&fake, "validation_errors"), 14);
    expect_customers(1);
}
END_TEST

struct name_case {
    const char *name;
    bool valid;
};

START_TEST(test_name_rule)
{
    static const struct name_case cases[] = {
        {"Zoë", true},   /* ë U+00EB: in ß-ö */
        {"Šimon", true}, /* Š U+0160 */
        {"šárka", true}, /* š U+0161, á U+00E1 */
        {"Müller", true},        {"O'Brien", true},  {"Anne-Marie", true},
        {"J.R. Smith", true},    {"ÀÖØÞßöøÿ", true}, {"Ægir", true},
        {"Ševčík", false}, /* č U+010D is not in the class */
        {"Łukasz", false}, /* U+0141 */
        {"Žofie", false},  /* Ž U+017D: only Š and š are */
        {"A×B", false},    /* × U+00D7, the gap between Ö and Ø */
        {"a÷b", false},    /* ÷ U+00F7, the gap between ö and ø */
        {"R2D2", false},         {"Bob!", false},    {"a\tb", false},
        {"Zo\xC3", false},       /* truncated UTF-8 */
        {"\xC1\x81", false},     /* overlong 'A' */
        {"\xC3\xAB\xFF", false}, /* invalid byte */
        {"\xE2\x80\x8B", false}, /* zero-width space */
    };
    char primary[32];
    char message[128];

    snprintf(message, sizeof(message), "firstname must match %s", NAME_PATTERN);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(primary, sizeof(primary), "N%zu", i);
        expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
               FIELDS("brand_id", "1", "primary_id", primary, "firstname", cases[i].name),
               cases[i].valid ? 200 : 400, cases[i].valid ? NULL : message);
    }
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "E1", "firstname", ""), 400,
           "firstname must be at least 1 character long");
    snprintf(message, sizeof(message), "lastname must match %s", NAME_PATTERN);
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "E2", "lastname", "Ševčík"), 400, message);

    /* The same rule on updateCustomer. */
    create("U1");
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "U1", "brandID", "1", "firstname", "Šárka", "lastname",
                  "Ševčík"),
           400, message);
    expect(
        "PUT", UPDATE, FAKE_BODY_URLENCODED,
        FIELDS("externalPrimaryID", "U1", "brandID", "1", "firstname", "Šárka", "lastname", "Zoë"),
        200, "Customer updated.");
}
END_TEST

START_TEST(test_telephone_rule)
{
    create("C1");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "T1", "extra_telephone", "+31612345678"), 200,
           NULL);
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "T2", "extra_telephone", "+3161234567"), 400,
           "extra_telephone must be at least 12 characters long");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "T2", "extra_telephone", "0031612345678"), 400,
           "extra_telephone must match ^\\+[0-9]+$");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "T2", "extra_telephone", "+31 6123 45678"), 400,
           "extra_telephone must match ^\\+[0-9]+$");
    /* addChannelOnly only asks minLength 1. */
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_telephone", "+1"), 200,
           "Channel added to the customer.");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_telephone", "+"), 400,
           "extra_telephone must match ^\\+[0-9]+$");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_telephone", "+31-6"), 400,
           "extra_telephone must match ^\\+[0-9]+$");
}
END_TEST

START_TEST(test_email_rule)
{
    static const char *const valid[] = {"a@b.nl", "first.last+tag@sub.example.com", "x_y@a-b.co"};
    static const char *const invalid[] = {
        "ab.nl",   "a@b@c.nl", "@b.nl",      "a@bnl",  "a@.nl",   "a@b.",
        "a@b..nl", "a b@c.nl", "a\x01@b.nl", "ä@b.nl", "a@b.nl ", "",
    };
    char primary[32];

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        snprintf(primary, sizeof(primary), "V%zu", i);
        expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
               FIELDS("brand_id", "1", "primary_id", primary, "extra_email", valid[i]), 200, NULL);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        struct fake_reply reply =
            call("POST", CUSTOMER, FAKE_BODY_URLENCODED,
                 FIELDS("brand_id", "1", "primary_id", "X", "extra_email", invalid[i]));

        ck_assert_msg(reply.status == 400, "email case %zu accepted", i);
        ck_assert_str_eq(fake_reply_message(&reply), "extra_email must be a valid email address");
        fake_reply_free(&reply);
    }
    /* addChannelOnly: minLength 1 first. */
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "V0", "extra_email", ""), 400,
           "extra_email must be at least 1 character long");
    expect_customers(3);
}
END_TEST

START_TEST(test_channel_id_and_twitter_rules)
{
    static const char *const valid[] = {"email", "telephone", "facebook", "twitter", "12"};
    static const char *const invalid[] = {"fax", "Email", "1a", " 1", "email "};
    char primary[32];

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        snprintf(primary, sizeof(primary), "V%zu", i);
        expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
               FIELDS("brand_id", "1", "primary_id", primary, "channel_id", valid[i]), 200, NULL);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
               FIELDS("brand_id", "1", "primary_id", "X", "channel_id", invalid[i]), 400,
               "channel_id must match ^([0-9]+|email|telephone|facebook|twitter)$");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "X", "channel_id", ""), 400,
           "channel_id must be at least 1 character long");

    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "V0", "extra_twitter", "john_doe 1"), 200, NULL);
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "V0", "extra_twitter", "john-doe"), 400,
           "extra_twitter must match ^[a-zA-Z0-9_ ]+$");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "V0", "extra_twitter", "@john"), 400,
           "extra_twitter must match ^[a-zA-Z0-9_ ]+$");
}
END_TEST

START_TEST(test_number_rule)
{
    create("C1");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "abc", "primary_id", "X"), 400,
           "brand_id must be a number");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "0x10", "primary_id", "X"),
           400, "brand_id must be a number");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", " 1", "primary_id", "X"), 400,
           "brand_id must be a number");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "X", "ticket_id", "t1"), 400,
           "ticket_id must be a number");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "2.0", "primary_id", "X", "ticket_id", "17"), 200, NULL);
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "one", "firstname", "A", "lastname", "B"),
           400, "brandID must be a number");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "customer_id", "x", "extra_email", "a@b.nl"), 400,
           "customer_id must be a number");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_facebook", "fb"), 400,
           "extra_facebook must be a number");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_facebook", "12345"), 200, NULL);
    expect("GET", CUSTOMER "?itemStart=a", FAKE_BODY_NONE, NULL, 400, "itemStart must be a number");
    expect("GET", CUSTOMER "/1?brandID=b", FAKE_BODY_NONE, NULL, 400, "brandID must be a number");
}
END_TEST

START_TEST(test_content_types)
{
    struct fake_request request = {.method = "POST",
                                   .path = CUSTOMER,
                                   .body = FAKE_BODY_RAW,
                                   .raw = "{\"brand_id\":1,\"primary_id\":\"C9\"}",
                                   .content_type = "application/json"};
    struct fake_reply reply;
    struct json_object *entry;

    /* POST: multipart and urlencoded are parsed, JSON is not (PHP's $_POST). */
    create("C1");
    expect("POST", CUSTOMER, FAKE_BODY_URLENCODED, FIELDS("brand_id", "1", "primary_id", "C2"), 200,
           NULL);
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 400);
    ck_assert_str_eq(fake_reply_message(&reply), "brand_id is required");
    fake_reply_free(&reply);
    request.raw = "brand_id=1&primary_id=C3";
    request.content_type = "application/x-www-form-urlencoded; charset=UTF-8";
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 200);
    fake_reply_free(&reply);

    /* PUT: a multipart body is not parsed, so the first required field is missing. */
    expect(
        "PUT", UPDATE, FAKE_BODY_MULTIPART,
        FIELDS("externalPrimaryID", "C1", "brandID", "1", "firstname", "Ann", "lastname", "Smith"),
        400, "externalPrimaryID is required");
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "content_type"), "multipart/form-data");
    ck_assert_int_eq(json_object_object_length(jget(entry, "fields")), 0);
    ck_assert(jnull(entry, "customer"));
    json_object_put(entry);
    expect(
        "PUT", UPDATE, FAKE_BODY_URLENCODED,
        FIELDS("externalPrimaryID", "C1", "brandID", "1", "firstname", "Ann", "lastname", "Smith"),
        200, "Customer updated.");
    request.method = "PUT";
    request.path = UPDATE;
    request.raw = "externalPrimaryID=C1&brandID=1&firstname=Ann&lastname=Smith";
    request.content_type = "text/plain";
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 400);
    ck_assert_str_eq(fake_reply_message(&reply), "externalPrimaryID is required");
    fake_reply_free(&reply);

    /* DELETE: urlencoded only as well. */
    expect("DELETE", "/api/v2/customer/purgedata", FAKE_BODY_MULTIPART,
           FIELDS("external_id", "C1", "brand_id", "1"), 400, "external_id is required");
    expect_customers(3);

    /* A multipart body without a boundary is malformed. */
    request.method = "POST";
    request.path = CUSTOMER;
    request.raw = "brand_id=1";
    request.content_type = "multipart/form-data";
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 400);
    ck_assert_str_eq(fake_reply_message(&reply), "malformed request body");
    fake_reply_free(&reply);
}
END_TEST

START_TEST(test_body_cap)
{
    size_t len = 100 * 1024;
    char *big = malloc(len + 1);
    struct fake_request request = {.method = "POST",
                                   .path = CUSTOMER,
                                   .body = FAKE_BODY_RAW,
                                   .content_type = "application/x-www-form-urlencoded"};
    struct fake_reply reply;

    ck_assert_ptr_nonnull(big);
    memcpy(big, "brand_id=1&primary_id=C1&custom_x=", 34);
    memset(big + 34, 'a', len - 34);
    big[len] = '\0';
    request.raw = big;
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.curl_code, 0);
    ck_assert_int_eq(reply.status, 413);
    ck_assert_str_eq(fake_reply_message(&reply), "request body too large");
    fake_reply_free(&reply);
    free(big);
    expect_customers(0);
}
END_TEST

/* ---- endpoints ---- */

START_TEST(test_update_customer)
{
    struct json_object *c = NULL;
    struct json_object *entry;

    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "firstname", "Ann", "lastname", "Smith",
                  "custom_tier", "gold", "custom_region", "north"),
           200, NULL);
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "1", "firstname", "Šárka", "lastname",
                  "O'Neil", "custom_tier", "silver", "custom_since", "2020"),
           200, "Customer updated.");
    ck_assert_int_eq(fake_find_customer(&fake, 1, "C1", &c), 0);
    ck_assert_str_eq(jstr(c, "firstname"), "Šárka");
    ck_assert_str_eq(jstr(c, "lastname"), "O'Neil");
    ck_assert_str_eq(jstr(c, "custom.tier"), "silver");
    ck_assert_str_eq(jstr(c, "custom.region"), "north");
    ck_assert_str_eq(jstr(c, "custom.since"), "2020");
    json_object_put(c);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "endpoint"), "updateCustomer");
    ck_assert_str_eq(jstr(entry, "customer"), "C1");
    ck_assert_str_eq(jstr(entry, "content_type"), "application/x-www-form-urlencoded");
    json_object_put(entry);
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C2", "brandID", "1", "firstname", "A", "lastname", "B"),
           404, "customer not found");
    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "2", "firstname", "A", "lastname", "B"),
           404, "customer not found");
}
END_TEST

START_TEST(test_add_channel)
{
    struct json_object *c = NULL;
    char id[32];

    create("C1");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "2", "primary_id", "B2"), 200,
           NULL);
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_email", "a@b.nl"), 200,
           "Channel added to the customer.");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_email", "a@b.nl"), 200, NULL);
    ck_assert_int_eq(fake_stat(&fake, "duplicate_channels"), 1);
    /* The older guide's lower-case path, and a lookup by customer_id. */
    snprintf(id, sizeof(id), "%lld", customer_id("C1"));
    expect("POST", "/api/v2/customer/addchannelonly", FAKE_BODY_URLENCODED,
           FIELDS("brand_id", "1", "customer_id", id, "extra_telephone", "+31612345678",
                  "extra_twitter", "ann_s", "extra_facebook", "1234"),
           200, NULL);
    ck_assert_int_eq(fake_find_customer(&fake, 1, "C1", &c), 0);
    ck_assert_uint_eq(json_object_array_length(jget(c, "channels")), 4);
    ck_assert_str_eq(jstr(c, "channels.1.type"), "telephone");
    ck_assert_str_eq(jstr(c, "channels.2.type"), "twitter");
    ck_assert_str_eq(jstr(c, "channels.3.type"), "facebook");
    ck_assert_str_eq(jstr(c, "channels.3.value"), "1234");
    json_object_put(c);
    /* customer_id of another brand, unknown customers. */
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "2", "customer_id", id, "extra_email", "x@y.nl"), 404,
           "customer not found");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C9", "extra_email", "x@y.nl"), 404,
           "customer not found");
    ck_assert_int_eq(fake_stat(&fake, "by_endpoint.addChannelOnly"), 5);
}
END_TEST

/* max_channels: addChannelOnly refuses what would take a customer past the cap, adds nothing. */
START_TEST(test_add_channel_cap)
{
    struct json_object *c = NULL, *out = NULL;

    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"max_channels\":0}", &out), -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"max_channels\":257}", &out), -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"max_channels\":3}", &out), 0);
    ck_assert_int_eq(jint(out, "max_channels"), 3);
    json_object_put(out);
    create("C1");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_email", "a@b.nl"), 200, NULL);
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_email", "c@d.nl", "extra_telephone",
                  "+31612345678", "extra_twitter", "ann_s"),
           400, "too many channels");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_email", "c@d.nl", "extra_telephone",
                  "+31612345678"),
           200, NULL);
    ck_assert_int_eq(fake_find_customer(&fake, 1, "C1", &c), 0);
    ck_assert_uint_eq(json_object_array_length(jget(c, "channels")), 3);
    json_object_put(c);
}
END_TEST

START_TEST(test_purge_by_id)
{
    char path[64];
    long long id;
    struct json_object *entry;

    create("C1");
    create("C2");
    id = customer_id("C1");
    snprintf(path, sizeof(path), "/api/v2/customer/purgeData/%lld", id);
    expect("DELETE", path, FAKE_BODY_NONE, NULL, 200, "Customer data purged.");
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "endpoint"), "purgeData");
    ck_assert_str_eq(jstr(entry, "customer"), "C1");
    json_object_put(entry);
    expect_customers(1);
    ck_assert_int_eq(customer_id("C2"), 2);
    expect("DELETE", path, FAKE_BODY_NONE, NULL, 404, "customer not found");
    entry = last_log_entry();
    ck_assert(jnull(entry, "customer"));
    json_object_put(entry);
    expect("DELETE", "/api/v2/customer/purgeData/abc", FAKE_BODY_NONE, NULL, 404, "unknown route");
    /* Ids are never reused. */
    create("C3");
    ck_assert_int_eq(customer_id("C3"), 3);
}
END_TEST

START_TEST(test_purge_legacy)
{
    struct json_object *entry;

    create("C1");
    expect("DELETE", "/api/v2/customer/purgedata", FAKE_BODY_URLENCODED,
           FIELDS("external_id", "C1", "brand_id", "2"), 404, "customer not found");
    expect("DELETE", "/api/v2/customer/purgedata", FAKE_BODY_URLENCODED,
           FIELDS("external_id", "C1", "brand_id", "1"), 200, "Customer data purged.");
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "endpoint"), "purgedata");
    ck_assert_str_eq(jstr(entry, "customer"), "C1");
    json_object_put(entry);
    expect_customers(0);
    expect("DELETE", "/api/v2/customer/purgedata", FAKE_BODY_URLENCODED,
           FIELDS("external_id", "C1", "brand_id", "1"), 404, "customer not found");
    ck_assert_int_eq(fake_stat(&fake, "by_endpoint.purgedata"), 3);
}
END_TEST

START_TEST(test_search_shapes)
{
    struct fake_reply reply;

    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_email", "a@b.nl"), 200, NULL);
    reply = call("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"));
    ck_assert_int_eq(reply.status, 200);
    ck_assert_str_eq(jstr(reply.json, "type"), "result");
    ck_assert_int_eq(jint(reply.json, "customer.id"), 1);
    ck_assert_str_eq(jstr(reply.json, "customer.external_primary_id"), "C1");
    fake_reply_free(&reply);

    set_faults("{\"search_shape\":\"top\"}");
    reply = call("POST", SEARCH, FAKE_BODY_URLENCODED, FIELDS("brand_id", "1", "primary_id", "C1"));
    ck_assert_int_eq(reply.status, 200);
    ck_assert_str_eq(jstr(reply.json, "type"), "result");
    ck_assert_int_eq(jint(reply.json, "id"), 1);
    ck_assert_ptr_null(jget(reply.json, "customer"));
    fake_reply_free(&reply);

    set_faults("{\"search_shape\":\"items\"}");
    reply = call("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"));
    ck_assert_int_eq(reply.status, 200);
    ck_assert_int_eq(jint(reply.json, "items.0.id"), 1);
    fake_reply_free(&reply);

    /* Search by channel value answers in the same shape. */
    reply = call("POST", "/api/v2/customer/SearchByCustomerChannelValue", FAKE_BODY_MULTIPART,
                 FIELDS("brand_id", "1", "customerChannelValue", "a@b.nl"));
    ck_assert_int_eq(reply.status, 200);
    ck_assert_int_eq(jint(reply.json, "items.0.id"), 1);
    fake_reply_free(&reply);
    expect("POST", "/api/v2/customer/SearchByCustomerChannelValue", FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "2", "customerChannelValue", "a@b.nl"), 404, "customer not found");

    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C2"), 404,
           "customer not found");
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "2", "primary_id", "C1"), 404,
           "customer not found");
    ck_assert_int_eq(fake_set_faults(&fake, "{\"search_shape\":\"flat\"}"), -1);
}
END_TEST

START_TEST(test_index_paging_and_item)
{
    struct fake_reply reply;
    char primary[8];
    struct json_object *entry;

    for (int i = 1; i <= 5; i++) {
        snprintf(primary, sizeof(primary), "C%d", i);
        create(primary);
    }
    reply = call("GET", CUSTOMER, FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(reply.status, 200);
    ck_assert_str_eq(jstr(reply.json, "type"), "result");
    ck_assert_int_eq(jint(reply.json, "itemStart"), 0);
    ck_assert_int_eq(jint(reply.json, "itemTotal"), 5);
    ck_assert_int_eq(jint(reply.json, "itemLimit"), 15);
    ck_assert_uint_eq(json_object_array_length(jget(reply.json, "items")), 5);
    ck_assert_str_eq(jstr(reply.json, "items.0.external_primary_id"), "C1");
    ck_assert_int_eq(jint(reply.json, "items.0.brand_id"), 1);
    ck_assert_str_eq(jstr(reply.json, "items.0.firstname"), "Ann");
    ck_assert_ptr_nonnull(jget(reply.json, "items.0.channels"));
    fake_reply_free(&reply);

    reply = call("GET", CUSTOMER "?itemStart=1&itemLimit=2", FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(reply.status, 200);
    ck_assert_int_eq(jint(reply.json, "itemTotal"), 5);
    ck_assert_uint_eq(json_object_array_length(jget(reply.json, "items")), 2);
    ck_assert_int_eq(jint(reply.json, "items.0.id"), 2);
    ck_assert_int_eq(jint(reply.json, "items.1.id"), 3);
    fake_reply_free(&reply);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "endpoint"), "index");
    ck_assert_str_eq(jstr(entry, "fields.itemLimit"), "2");
    ck_assert(jnull(entry, "content_type"));
    json_object_put(entry);

    expect("GET", CUSTOMER "?itemLimit=99", FAKE_BODY_NONE, NULL, 200, NULL);
    expect("GET", CUSTOMER "?itemLimit=100", FAKE_BODY_NONE, NULL, 400,
           "itemLimit must be at most 99");
    reply = call("GET", CUSTOMER "?query=C3", FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(jint(reply.json, "itemTotal"), 1);
    ck_assert_int_eq(jint(reply.json, "items.0.id"), 3);
    fake_reply_free(&reply);

    reply = call("GET", CUSTOMER "/2", FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(reply.status, 200);
    ck_assert_int_eq(jint(reply.json, "customer.id"), 2);
    ck_assert_str_eq(jstr(reply.json, "customer.external_primary_id"), "C2");
    fake_reply_free(&reply);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "endpoint"), "item");
    ck_assert_str_eq(jstr(entry, "customer"), "C2");
    json_object_put(entry);
    expect("GET", CUSTOMER "/2?brandID=1", FAKE_BODY_NONE, NULL, 200, NULL);
    expect("GET", CUSTOMER "/2?brandID=7", FAKE_BODY_NONE, NULL, 404, "customer not found");
    expect("GET", CUSTOMER "/999", FAKE_BODY_NONE, NULL, 404, "customer not found");
}
END_TEST

/* The index and item answers are spliced from each customer's cached JSON text: every kind of
   change, through the API or the control API, must show in the next answer. */
static struct json_object *index_entry(const char *query)
{
    struct fake_reply reply = call("GET", query, FAKE_BODY_NONE, NULL);
    struct json_object *entry;

    ck_assert_int_eq(reply.status, 200);
    ck_assert_int_eq(jint(reply.json, "itemTotal"), 1);
    entry = json_object_get(jget(reply.json, "items.0"));
    fake_reply_free(&reply);
    return entry;
}

START_TEST(test_index_and_item_follow_changes)
{
    struct json_object *e;
    struct json_object *out = NULL;
    struct fake_reply reply;

    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "firstname", "Ann", "lastname", "Smith",
                  "custom_tier", "gold", "extra_email", "ann@example.com"),
           200, NULL);
    e = index_entry(CUSTOMER);
    ck_assert_str_eq(jstr(e, "firstname"), "Ann");
    ck_assert_str_eq(jstr(e, "custom.tier"), "gold");
    ck_assert_uint_eq(json_object_array_length(jget(e, "channels")), 1);
    json_object_put(e);
    expect("GET", CUSTOMER "/1", FAKE_BODY_NONE, NULL, 200, NULL);

    expect("PUT", UPDATE, FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "1", "firstname", "Šárka", "lastname",
                  "O'Neil", "custom_tier", "silver"),
           200, "Customer updated.");
    expect("POST", ADD_CHANNEL, FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1", "extra_telephone", "+31612345678"), 200,
           NULL);
    e = index_entry(CUSTOMER "?itemLimit=99");
    ck_assert_str_eq(jstr(e, "firstname"), "Šárka");
    ck_assert_str_eq(jstr(e, "lastname"), "O'Neil");
    ck_assert_str_eq(jstr(e, "custom.tier"), "silver");
    ck_assert_str_eq(jstr(e, "channels.1.value"), "+31612345678");
    json_object_put(e);

    ck_assert_int_eq(fake_post_json(&fake, "/_fake/customers/change",
                                    "{\"brand_id\":1,\"external_primary_id\":\"C1\","
                                    "\"lastname\":\"Behind\",\"drop_channels\":[\"email\"],"
                                    "\"custom\":{\"tier\":\"bronze\"}}",
                                    &out),
                     0);
    json_object_put(out);
    reply = call("GET", CUSTOMER "/1", FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(reply.status, 200);
    ck_assert_str_eq(jstr(reply.json, "customer.lastname"), "Behind");
    ck_assert_str_eq(jstr(reply.json, "customer.custom.tier"), "bronze");
    ck_assert_uint_eq(json_object_array_length(jget(reply.json, "customer.channels")), 1);
    ck_assert_str_eq(jstr(reply.json, "customer.channels.0.type"), "telephone");
    fake_reply_free(&reply);
    e = index_entry(CUSTOMER "?query=C1");
    ck_assert_str_eq(jstr(e, "lastname"), "Behind");
    ck_assert_str_eq(jstr(e, "custom.tier"), "bronze");
    json_object_put(e);

    set_faults("{\"index_custom\":false}");
    e = index_entry(CUSTOMER);
    ck_assert_ptr_null(jget(e, "custom"));
    ck_assert_str_eq(jstr(e, "lastname"), "Behind");
    json_object_put(e);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/customers/change",
                                    "{\"brand_id\":1,\"external_primary_id\":\"C1\","
                                    "\"firstname\":\"Again\"}",
                                    &out),
                     0);
    json_object_put(out);
    e = index_entry(CUSTOMER);
    ck_assert_str_eq(jstr(e, "firstname"), "Again");
    json_object_put(e);
    set_faults("{\"index_custom\":true}");
    e = index_entry(CUSTOMER);
    ck_assert_str_eq(jstr(e, "firstname"), "Again");
    ck_assert_str_eq(jstr(e, "custom.tier"), "bronze");
    json_object_put(e);

    ck_assert_int_eq(fake_post_json(&fake, "/_fake/customers/delete",
                                    "{\"brand_id\":1,\"external_primary_id\":\"C1\"}", &out),
                     0);
    json_object_put(out);
    reply = call("GET", CUSTOMER, FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(jint(reply.json, "itemTotal"), 0);
    ck_assert_uint_eq(json_object_array_length(jget(reply.json, "items")), 0);
    fake_reply_free(&reply);
    expect("GET", CUSTOMER "/1", FAKE_BODY_NONE, NULL, 404, "customer not found");
}
END_TEST

START_TEST(test_unknown_routes)
{
    expect("GET", "/api/v2/nothing", FAKE_BODY_NONE, NULL, 404, "unknown route");
    expect("GET", UPDATE, FAKE_BODY_NONE, NULL, 404, "unknown route");
    expect("PUT", "/api/v2/customer/updatecustomer", FAKE_BODY_URLENCODED,
           FIELDS("externalPrimaryID", "C1", "brandID", "1", "firstname", "A", "lastname", "B"),
           404, "unknown route");
    expect("POST", "/api/v2/customer/searchbyprimaryexternalid", FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1"), 404, "unknown route");
    expect("POST", "/api/v2/customer/", FAKE_BODY_MULTIPART,
           FIELDS("brand_id", "1", "primary_id", "C1"), 404, "unknown route");
    expect("DELETE", "/api/v2/customer/purgeData", FAKE_BODY_NONE, NULL, 404, "unknown route");
    ck_assert_int_eq(fake_stat(&fake, "by_endpoint.unknown"), 6);
    expect_customers(0);
}
END_TEST

START_TEST(test_api_key)
{
    struct fake_request request = {.method = "POST",
                                   .path = SEARCH,
                                   .body = FAKE_BODY_MULTIPART,
                                   .fields = FIELDS("brand_id", "1", "primary_id", "C1"),
                                   .api_key = FAKE_NO_KEY};
    struct fake_reply reply;
    struct json_object *entry;

    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 401);
    ck_assert_str_eq(jstr(reply.json, "type"), "error");
    ck_assert_str_eq(fake_reply_message(&reply), "invalid or missing apiKey");
    fake_reply_free(&reply);
    request.api_key = "wrong";
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 401);
    fake_reply_free(&reply);
    ck_assert_int_eq(fake_stat(&fake, "auth_failures"), 2);
    entry = last_log_entry();
    ck_assert_int_eq(jint(entry, "status"), 401);
    ck_assert_str_eq(jstr(entry, "endpoint"), "search");
    json_object_put(entry);
    /* Unknown /api/ routes are behind the key too. */
    request.path = "/api/v2/nothing";
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 401);
    fake_reply_free(&reply);

    /* The accepted key changes at run time. */
    set_faults("{\"api_key\":\"key-2\"}");
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 401,
           NULL);
    request.path = SEARCH;
    request.api_key = "key-2";
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.status, 404); /* past the key: the customer does not exist */
    fake_reply_free(&reply);
    /* Reset keeps the command line's key. */
    ck_assert_int_eq(fake_reset(&fake), 0);
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 404,
           NULL);
    ck_assert_int_eq(fake_set_faults(&fake, "{\"api_key\":\"\"}"), -1);
}
END_TEST

/* ---- faults ---- */

START_TEST(test_fault_5xx)
{
    struct fake_reply reply;
    struct json_object *entry;

    set_faults("{\"p_5xx\":1}");
    reply =
        call("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"));
    ck_assert_int_eq(reply.status, 503);
    ck_assert_str_eq(jstr(reply.json, "type"), "error");
    ck_assert_str_eq(reply.retry_after, "");
    fake_reply_free(&reply);
    expect_customers(0);
    ck_assert_int_eq(fake_stat(&fake, "faults"), 1);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "fault"), "5xx");
    ck_assert_int_eq(jint(entry, "status"), 503);
    json_object_put(entry);
    /* The control API is never faulted (these calls would fail otherwise). */
    set_faults("{\"retry_after_5xx\":true,\"retry_after\":\"3\"}");
    reply = call("GET", CUSTOMER, FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(reply.status, 503);
    ck_assert_str_eq(reply.retry_after, "3");
    fake_reply_free(&reply);
}
END_TEST

START_TEST(test_fault_429)
{
    struct fake_reply reply;
    time_t when;
    time_t now;

    set_faults("{\"p_429\":1,\"retry_after\":\"7\"}");
    reply =
        call("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"));
    ck_assert_int_eq(reply.status, 429);
    ck_assert_str_eq(reply.retry_after, "7");
    ck_assert_str_eq(jstr(reply.json, "type"), "error");
    fake_reply_free(&reply);
    expect_customers(0);

    set_faults("{\"retry_after\":\"http-date:30\"}");
    reply =
        call("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"));
    now = time(NULL);
    ck_assert_int_eq(reply.status, 429);
    ck_assert_msg(strstr(reply.retry_after, " GMT") != NULL, "not an HTTP-date: %s",
                  reply.retry_after);
    when = curl_getdate(reply.retry_after, NULL);
    ck_assert_msg(when >= now + 25 && when <= now + 35, "Retry-After %s is not ~30 s ahead",
                  reply.retry_after);
    fake_reply_free(&reply);
    ck_assert_int_eq(fake_stat(&fake, "faults"), 2);
    expect_customers(0);
}
END_TEST

START_TEST(test_fault_hang)
{
    struct fake_request request = {.method = "POST",
                                   .path = CUSTOMER,
                                   .body = FAKE_BODY_MULTIPART,
                                   .fields = FIELDS("brand_id", "1", "primary_id", "C1"),
                                   .timeout_ms = 300};
    struct fake_reply reply;
    struct json_object *entry;

    set_faults("{\"p_hang\":1}");
    ck_assert_int_eq(fake_send(&fake, &request, &reply), 0);
    ck_assert_int_eq(reply.curl_code, CURLE_OPERATION_TIMEDOUT);
    ck_assert(reply.seconds >= 0.29);
    ck_assert_int_eq(reply.status, 0);
    fake_reply_free(&reply);
    /* The client gave up and closed: the fake notices and lets go of the request. */
    wait_stat_eq(&fake, "in_flight", 0);
    expect_customers(0);
    ck_assert_int_eq(fake_stat(&fake, "faults"), 1);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "fault"), "hang");
    ck_assert(jnull(entry, "status"));
    json_object_put(entry);
}
END_TEST

START_TEST(test_fault_reset)
{
    struct fake_reply reply;
    struct json_object *entry;

    set_faults("{\"p_reset\":1}");
    ck_assert_int_eq(fake_api(&fake, "POST", CUSTOMER, FAKE_BODY_MULTIPART,
                              FIELDS("brand_id", "1", "primary_id", "C1"), &reply),
                     0);
    ck_assert_msg(reply.curl_code == CURLE_RECV_ERROR, "curl %d: %s", reply.curl_code,
                  reply.curl_error);
    ck_assert_msg(strstr(reply.curl_error, "reset") != NULL, "%s", reply.curl_error);
    ck_assert_int_eq(reply.status, 0);
    fake_reply_free(&reply);
    expect_customers(0);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "fault"), "reset");
    ck_assert(jnull(entry, "status"));
    json_object_put(entry);
    wait_stat_eq(&fake, "in_flight", 0);
}
END_TEST

START_TEST(test_fault_lost)
{
    struct fake_reply reply;
    struct json_object *c = NULL;
    struct json_object *entry;

    set_faults("{\"p_lost\":1}");
    ck_assert_int_eq(fake_api(&fake, "POST", CUSTOMER, FAKE_BODY_MULTIPART,
                              FIELDS("brand_id", "1", "primary_id", "C1"), &reply),
                     0);
    ck_assert_msg(reply.curl_code == CURLE_GOT_NOTHING, "curl %d: %s", reply.curl_code,
                  reply.curl_error);
    fake_reply_free(&reply);
    /* Applied although the client never heard. */
    ck_assert_int_eq(fake_find_customer(&fake, 1, "C1", &c), 0);
    ck_assert_ptr_nonnull(c);
    json_object_put(c);
    entry = last_log_entry();
    ck_assert_str_eq(jstr(entry, "fault"), "lost");
    ck_assert_int_eq(jint(entry, "status"), 200);
    json_object_put(entry);
    /* A retry of the create now meets the duplicate rule. */
    set_faults("{\"p_lost\":0}");
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 400,
           "customer with this primary id already exists");
}
END_TEST

START_TEST(test_fault_html502)
{
    struct fake_reply reply;

    set_faults("{\"p_html502\":1}");
    ck_assert_int_eq(fake_api(&fake, "POST", CUSTOMER, FAKE_BODY_MULTIPART,
                              FIELDS("brand_id", "1", "primary_id", "C1"), &reply),
                     0);
    ck_assert_int_eq(reply.curl_code, 0);
    ck_assert_int_eq(reply.status, 502);
    ck_assert_str_eq(reply.content_type, "text/html");
    ck_assert(strncmp(reply.body, "<html>", 6) == 0);
    ck_assert_ptr_null(reply.json);
    fake_reply_free(&reply);
    expect_customers(0);
}
END_TEST

START_TEST(test_fault_truncated)
{
    struct fake_reply reply;
    static const char full[] =
        "{\"type\":\"result\",\"message\":\"User created and channel linked.\"}";

    set_faults("{\"p_truncated\":1}");
    ck_assert_int_eq(fake_api(&fake, "POST", CUSTOMER, FAKE_BODY_MULTIPART,
                              FIELDS("brand_id", "1", "primary_id", "C1"), &reply),
                     0);
    ck_assert_int_eq(reply.curl_code, 0);
    ck_assert_int_eq(reply.status, 200);
    ck_assert_ptr_null(reply.json);
    ck_assert_uint_gt(reply.body_len, 0);
    ck_assert_uint_lt(reply.body_len, sizeof(full) - 1);
    ck_assert(strncmp(reply.body, full, reply.body_len) == 0);
    fake_reply_free(&reply);
    expect_customers(1);
}
END_TEST

START_TEST(test_fault_slow_body)
{
    struct fake_reply reply;

    set_faults("{\"p_slow_body\":1,\"slow_body_ms\":400}");
    ck_assert_int_eq(fake_api(&fake, "POST", CUSTOMER, FAKE_BODY_MULTIPART,
                              FIELDS("brand_id", "1", "primary_id", "C1"), &reply),
                     0);
    ck_assert_int_eq(reply.curl_code, 0);
    ck_assert_int_eq(reply.status, 200);
    ck_assert_msg(reply.seconds >= 0.38, "body came in %.3f s", reply.seconds);
    ck_assert_ptr_nonnull(reply.json);
    ck_assert_str_eq(fake_reply_message(&reply), "User created and channel linked.");
    fake_reply_free(&reply);
    expect_customers(1);
    ck_assert_int_eq(fake_stat(&fake, "faults"), 1);
}
END_TEST

static size_t discard(char *data, size_t size, size_t nmemb, void *userdata)
{
    (void)data;
    (void)userdata;
    return size * nmemb;
}

START_TEST(test_latency_does_not_serialize)
{
    enum { N = 64 };
    CURLM *multi = curl_multi_init();
    CURL *handles[N];
    struct curl_slist *headers = curl_slist_append(NULL, "apiKey: " KEY);
    char url[128];
    int running = 0;
    int done = 0;
    double start;
    double elapsed;
    CURLMsg *msg;
    int left;

    create("C1");
    set_faults("{\"latency_ms\":100}");
    snprintf(url, sizeof(url), "%s/api/v2/customer/1", fake.url);
    for (int i = 0; i < N; i++) {
        handles[i] = curl_easy_init();
        curl_easy_setopt(handles[i], CURLOPT_URL, url);
        curl_easy_setopt(handles[i], CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(handles[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(handles[i], CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(handles[i], CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, handles[i]);
    }
    start = now_s();
    do {
        ck_assert_int_eq(curl_multi_perform(multi, &running), CURLM_OK);
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            long status = 0;

            ck_assert_int_eq(msg->msg, CURLMSG_DONE);
            ck_assert_int_eq(msg->data.result, CURLE_OK);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            ck_assert_int_eq(status, 200);
            done++;
        }
        if (running)
            ck_assert_int_eq(curl_multi_poll(multi, NULL, 0, 100, NULL), CURLM_OK);
    } while (running);
    elapsed = now_s() - start;
    ck_assert_int_eq(done, N);
    fprintf(stderr, "test_latency_does_not_serialize: %d requests with 100 ms latency in %.0f ms\n",
            N, elapsed * 1000);
    ck_assert_msg(elapsed >= 0.099, "finished in %.3f s, before the latency", elapsed);
    /* Serialised they would take 6.4 s, two at a time 3.2 s. The bound leaves room for a
       loaded machine and sanitizer builds; on an idle one this takes 110-170 ms. */
    ck_assert_msg(elapsed < 1.5, "64 requests took %.3f s: latency serialises requests", elapsed);
    /* All 64 usually overlap; connecting 64 sockets on a loaded machine can outlast 100 ms, so
       only half are required to prove the overlap. */
    ck_assert_int_ge(fake_stat(&fake, "max_concurrency"), N / 2);
    ck_assert_int_eq(fake_stat(&fake, "in_flight"), 0);
    for (int i = 0; i < N; i++) {
        curl_multi_remove_handle(multi, handles[i]);
        curl_easy_cleanup(handles[i]);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
}
END_TEST

START_TEST(test_latency_and_jitter)
{
    struct fake_reply reply;

    set_faults("{\"latency_ms\":50,\"jitter_ms\":50}");
    for (int i = 0; i < 5; i++) {
        reply = call("GET", CUSTOMER, FAKE_BODY_NONE, NULL);
        ck_assert_int_eq(reply.status, 200);
        ck_assert_msg(reply.seconds >= 0.049 && reply.seconds < 2.0, "took %.3f s", reply.seconds);
        fake_reply_free(&reply);
    }
    /* Latency is not a fault. */
    ck_assert_int_eq(fake_stat(&fake, "faults"), 0);
}
END_TEST

START_TEST(test_fault_paths)
{
    struct json_object *o;

    set_faults("{\"p_5xx\":1,\"paths\":[\"create\",\"updateCustomer\"]}");
    o = get_json("/_fake/faults");
    ck_assert_uint_eq(json_object_array_length(jget(o, "paths")), 2);
    ck_assert_str_eq(jstr(o, "paths.0"), "create");
    json_object_put(o);
    expect("POST", CUSTOMER, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 503,
           NULL);
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 404,
           "customer not found");
    ck_assert_int_eq(fake_stat(&fake, "faults"), 1);
    set_faults("{\"paths\":null}");
    expect("POST", SEARCH, FAKE_BODY_MULTIPART, FIELDS("brand_id", "1", "primary_id", "C1"), 503,
           NULL);
    ck_assert_int_eq(fake_set_faults(&fake, "{\"paths\":[\"creat\"]}"), -1);
}
END_TEST

START_TEST(test_fault_probability)
{
    int failed = 0;

    set_faults("{\"p_5xx\":0.5}");
    for (int i = 0; i < 40; i++) {
        struct fake_reply reply = call("GET", CUSTOMER, FAKE_BODY_NONE, NULL);

        ck_assert(reply.status == 200 || reply.status == 503);
        failed += reply.status == 503;
        fake_reply_free(&reply);
    }
    /* 40 fair coin flips all landing one way has odds of 2^-39. */
    ck_assert_int_gt(failed, 0);
    ck_assert_int_lt(failed, 40);
    ck_assert_int_eq(fake_stat(&fake, "faults"), failed);
}
END_TEST

START_TEST(test_faults_setting_validation)
{
    struct json_object *out = NULL;

    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"p_typo\":1}", &out), -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"p_5xx\":2}", &out), -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"latency_ms\":-1}", &out), -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"retry_after\":\"a\\r\\nb\"}", &out),
                     -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "not json", &out), -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "[1]", &out), -1);
    /* All or nothing: a bad key leaves the good one unapplied. */
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"p_5xx\":0.5,\"bogus\":1}", &out),
                     -1);
    ck_assert_int_eq(fake_post_json(&fake, "/_fake/faults", "{\"latency_ms\":5}", &out), 0);
    ck_assert(json_object_get_double(jget(out, "p_5xx")) == 0.0);
    ck_assert_int_eq(jint(out, "latency_ms"), 5);
    json_object_put(out);
}
END_TEST

START_TEST(test_rate_limit)
{
    struct fake_reply reply;

    set_faults("{\"rate\":2}");
    expect("GET", CUSTOMER, FAKE_BODY_NONE, NULL, 200, NULL);
    expect("GET", CUSTOMER, FAKE_BODY_NONE, NULL, 200, NULL);
    reply = call("GET", CUSTOMER, FAKE_BODY_NONE, NULL);
    ck_assert_int_eq(reply.status, 429);
    ck_assert_str_eq(reply.retry_after, "1");
    ck_assert_str_eq(fake_reply_message(&reply), "rate limit exceeded");
    fake_reply_free(&reply);
    ck_assert_int_eq(fake_stat(&fake, "rate_limited"), 1);
    /* Rate limiting is not a fault, and the control API is not limited. */
    ck_assert_int_eq(fake_stat(&fake, "faults"), 0);
    set_faults("{\"rate\":0}");
    expect("GET", CUSTOMER, FAKE_BODY_NONE, NULL, 200, NULL);
}
END_TEST

START_TEST(test_rate_and_faults_at_start)
{
    struct fake_omnidesk f2;
    struct fake_reply reply;
    struct json_object *o = NULL;

    ck_assert_int_eq(fake_start_args(&f2, "k2", "{\"p_5xx\":1}",
                                     (const char *const[]){"--rate", "1", "--seed", "7", NULL}),
                     0);
    ck_assert_int_eq(fake_api(&f2, "GET", CUSTOMER, FAKE_BODY_NONE, NULL, &reply), 0);
    ck_assert_int_eq(reply.status, 503);
    fake_reply_free(&reply);
    ck_assert_int_eq(fake_api(&f2, "GET", CUSTOMER, FAKE_BODY_NONE, NULL, &reply), 0);
    ck_assert_int_eq(reply.status, 429);
    ck_assert_str_eq(reply.retry_after, "1");
    fake_reply_free(&reply);
    /* Reset clears the start-up faults, keeps the command line's key and rate. */
    ck_assert_int_eq(fake_reset(&f2), 0);
    ck_assert_int_eq(fake_get_json(&f2, "/_fake/faults", &o), 0);
    ck_assert(json_object_get_double(jget(o, "p_5xx")) == 0.0);
    ck_assert(json_object_get_double(jget(o, "rate")) == 1.0);
    json_object_put(o);
    ck_assert_int_eq(fake_stop(&f2), 0);
}
END_TEST

START_TEST(test_bad_command_lines)
{
    struct fake_omnidesk f2;

    ck_assert_int_eq(fake_start_args(&f2, "k", NULL, (const char *const[]){"--rate", "x", NULL}),
                     -1);
    ck_assert_int_eq(fake_start_args(&f2, "k", "{\"p_5xx\":7}", NULL), -1);
    ck_assert_int_eq(
        fake_start_args(&f2, "k", NULL, (const char *const[]){"--listen", "0.0.0.0:0", NULL}), -1);
    ck_assert_int_eq(fake_start_args(&f2, "", NULL, NULL), -1);
}
END_TEST

/* ---- log, stats, reset ---- */

START_TEST(test_log_since_and_limit)
{
    struct json_object *o;

    create("C1");
    create("C2");
    create("C3");
    o = get_json("/_fake/log?since=1");
    ck_assert_uint_eq(json_object_array_length(jget(o, "requests")), 2);
    ck_assert_int_eq(jint(o, "requests.0.seq"), 2);
    ck_assert_int_eq(jint(o, "requests.1.seq"), 3);
    json_object_put(o);
    o = get_json("/_fake/log?since=1&limit=1");
    ck_assert_uint_eq(json_object_array_length(jget(o, "requests")), 1);
    ck_assert_int_eq(jint(o, "requests.0.seq"), 2);
    json_object_put(o);
    o = get_json("/_fake/log?since=3");
    ck_assert_uint_eq(json_object_array_length(jget(o, "requests")), 0);
    json_object_put(o);
    {
        struct json_object *out = NULL;

        ck_assert_int_eq(fake_get_json(&fake, "/_fake/log?since=x", &out), -1);
    }
}
END_TEST

START_TEST(test_log_cap)
{
    struct fake_omnidesk f2;
    struct fake_reply reply;
    struct json_object *o = NULL;

    ck_assert_int_eq(fake_start_args(&f2, KEY, NULL, (const char *const[]){"--log-max", "2", NULL}),
                     0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fake_api(&f2, "GET", CUSTOMER, FAKE_BODY_NONE, NULL, &reply), 0);
        fake_reply_free(&reply);
    }
    ck_assert_int_eq(fake_get_json(&f2, "/_fake/log", &o), 0);
    ck_assert_uint_eq(json_object_array_length(jget(o, "requests")), 2);
    ck_assert_int_eq(jint(o, "requests.0.seq"), 2);
    ck_assert_int_eq(jint(o, "requests.1.seq"), 3);
    json_object_put(o);
    ck_assert_int_eq(fake_stat(&f2, "requests"), 3);
    ck_assert_int_eq(fake_stop(&f2), 0);
}
END_TEST

START_TEST(test_reset)
{
    struct json_object *o;

    create("C1");
    set_faults("{\"latency_ms\":5,\"search_shape\":\"top\"}");
    ck_assert_int_eq(fake_reset(&fake), 0);
    expect_customers(0);
    o = get_json("/_fake/log");
    ck_assert_uint_eq(json_object_array_length(jget(o, "requests")), 0);
    json_object_put(o);
    ck_assert_int_eq(fake_stat(&fake, "requests"), 0);
    ck_assert_int_eq(fake_stat(&fake, "by_endpoint.create"), 0);
    o = get_json("/_fake/faults");
    ck_assert_int_eq(jint(o, "latency_ms"), 0);
    ck_assert_str_eq(jstr(o, "search_shape"), "customer");
    json_object_put(o);
    /* Ids and sequence numbers keep counting, so nothing stale can point at new data. */
    create("C2");
    ck_assert_int_eq(customer_id("C2"), 2);
    o = get_json("/_fake/log");
    ck_assert_int_eq(jint(o, "requests.0.seq"), 2);
    json_object_put(o);
}
END_TEST

/* ---- shutdown with requests in every suspended state ---- */

static void stop_while_suspended(const char *faults, const char *stat, long long min)
{
    struct fake_omnidesk f2;
    CURLM *multi;
    CURL *curl;
    struct curl_slist *headers;
    char url[128];
    int running = 1;
    double deadline;
    CURLMsg *msg;
    int left;

    ck_assert_int_eq(fake_start(&f2, KEY, faults), 0);
    multi = curl_multi_init();
    curl = curl_easy_init();
    headers = curl_slist_append(NULL, "apiKey: " KEY);
    snprintf(url, sizeof(url), "%s/api/v2/customer", f2.url);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_multi_add_handle(multi, curl);
    /* Drive the request until the fake holds it suspended. */
    deadline = now_s() + 5.0;
    while (fake_stat(&f2, stat) < min) {
        ck_assert_msg(now_s() < deadline, "the request never reached the fake");
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    ck_assert_int_eq(fake_stop(&f2), 0);
    deadline = now_s() + 5.0;
    while (running) {
        ck_assert_msg(now_s() < deadline, "the client never saw the fake go");
        curl_multi_perform(multi, &running);
        if (running)
            curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    msg = curl_multi_info_read(multi, &left);
    ck_assert_ptr_nonnull(msg);
    ck_assert_int_ne(msg->data.result, CURLE_OK);
    curl_multi_remove_handle(multi, curl);
    curl_easy_cleanup(curl);
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
}

START_TEST(test_stop_while_hung)
{
    stop_while_suspended("{\"p_hang\":1}", "in_flight", 1);
}
END_TEST

START_TEST(test_stop_during_latency)
{
    stop_while_suspended("{\"latency_ms\":60000}", "in_flight", 1);
}
END_TEST

START_TEST(test_stop_during_slow_body)
{
    stop_while_suspended("{\"p_slow_body\":1,\"slow_body_ms\":60000}", "requests", 1);
}
END_TEST

static Suite *fake_suite(void)
{
    Suite *s = suite_create("fake_omnidesk");
    TCase *control = tcase_create("control");
    TCase *rules = tcase_create("rules");
    TCase *endpoints = tcase_create("endpoints");
    TCase *faults = tcase_create("faults");
    TCase *process = tcase_create("process");

    tcase_add_checked_fixture(control, setup, teardown);
    tcase_add_checked_fixture(rules, setup, teardown);
    tcase_add_checked_fixture(endpoints, setup, teardown);
    tcase_add_checked_fixture(faults, setup, teardown);
    tcase_set_timeout(control, 60);
    tcase_set_timeout(rules, 60);
    tcase_set_timeout(endpoints, 60);
    tcase_set_timeout(faults, 60);
    tcase_set_timeout(process, 60);

    tcase_add_test(control, test_control_initial);
    tcase_add_test(control, test_log_since_and_limit);
    tcase_add_test(control, test_reset);
    tcase_add_test(control, test_faults_setting_validation);

    tcase_add_test(rules, test_required_fields);
    tcase_add_test(rules, test_name_rule);
    tcase_add_test(rules, test_telephone_rule);
    tcase_add_test(rules, test_email_rule);
    tcase_add_test(rules, test_channel_id_and_twitter_rules);
    tcase_add_test(rules, test_number_rule);
    tcase_add_test(rules, test_content_types);
    tcase_add_test(rules, test_body_cap);
    tcase_add_test(rules, test_api_key);

    tcase_add_test(endpoints, test_create_multipart_state_and_log);
    tcase_add_test(endpoints, test_create_urlencoded_and_link_channel);
    tcase_add_test(endpoints, test_duplicate_create);
    tcase_add_test(endpoints, test_update_customer);
    tcase_add_test(endpoints, test_add_channel);
    tcase_add_test(endpoints, test_add_channel_cap);
    tcase_add_test(endpoints, test_purge_by_id);
    tcase_add_test(endpoints, test_purge_legacy);
    tcase_add_test(endpoints, test_search_shapes);
    tcase_add_test(endpoints, test_index_paging_and_item);
    tcase_add_test(endpoints, test_index_and_item_follow_changes);
    tcase_add_test(endpoints, test_unknown_routes);

    tcase_add_test(faults, test_fault_5xx);
    tcase_add_test(faults, test_fault_429);
    tcase_add_test(faults, test_fault_hang);
    tcase_add_test(faults, test_fault_reset);
    tcase_add_test(faults, test_fault_lost);
    tcase_add_test(faults, test_fault_html502);
    tcase_add_test(faults, test_fault_truncated);
    tcase_add_test(faults, test_fault_slow_body);
    tcase_add_test(faults, test_latency_does_not_serialize);
    tcase_add_test(faults, test_latency_and_jitter);
    tcase_add_test(faults, test_fault_paths);
    tcase_add_test(faults, test_fault_probability);
    tcase_add_test(faults, test_rate_limit);

    tcase_add_test(process, test_rate_and_faults_at_start);
    tcase_add_test(process, test_bad_command_lines);
    tcase_add_test(process, test_log_cap);
    tcase_add_test(process, test_stop_while_hung);
    tcase_add_test(process, test_stop_during_latency);
    tcase_add_test(process, test_stop_during_slow_body);

    suite_add_tcase(s, control);
    suite_add_tcase(s, rules);
    suite_add_tcase(s, endpoints);
    suite_add_tcase(s, faults);
    suite_add_tcase(s, process);
    return s;
}

int main(void)
{
    SRunner *runner = srunner_create(fake_suite());
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    srunner_run_all(runner, CK_NORMAL);
    failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
