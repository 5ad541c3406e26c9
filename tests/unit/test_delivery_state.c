/*
 * test_delivery_state: the delivery state machine (lib/delivery.c) without I/O. Each scenario
 * claims rows for one customer, then alternates: delivery_next() must ask for the expected
 * request (or the purge guard), and the recorded answer is fed back; at the end the outcomes
 * must be the expected ones. (Named _state: tests/integration/test_delivery.c has the name.)
 */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery.h"
#include "outbox.h"

/* The table reads best one scenario to a few lines. */
// clang-format off
#define ANN "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"a@x.nl\",\"telephone\":\"+31612345678\"}"
#define ANNE "{\"primary_id\":\"C1\",\"firstname\":\"Anne\",\"lastname\":\"Lee\",\"email\":\"a@x.nl\",\"telephone\":\"+31612345678\"}"
#define ANN_NEW_MAIL "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"b@x.nl\",\"telephone\":\"+31612345678\"}"
#define ANN_C9 "{\"primary_id\":\"C9\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"a@x.nl\",\"telephone\":\"+31612345678\"}"
/* sync_state of a customer created earlier, both channels known */
#define KNOWN "{\"created\":true,\"omnidesk_id\":55,\"channels\":[\"email:a@x.nl\",\"telephone:+31612345678\"]}"

#define RESERVE 100 /* expect: the purge guard is asked */
#define END -1

struct row {
    const char *op, *old_json, *new_json;
    int attempts;
    int orphaned; /* a dead process held it: its lease ran out with no outcome */
};

/* One request the delivery must ask for, and the answer it gets. */
struct step {
    int expect;                 /* an enum omnidesk_endpoint, RESERVE, or END */
    enum omnidesk_class class;  /* the answer (for RESERVE: OK granted, else refused) */
    long http_status;
    long long customer_id;      /* a lookup's answer */
};

struct want {
    enum outbox_status status;
    int spend;
    const char *text;           /* in the result (done, held) or the error (failed, retry) */
    int nrows;
    int create_unknown;         /* -1: no sync in the outcome */
};

struct scenario {
    const char *name;
    struct row rows[4];
    const char *sync;
    long long max_purges_per_hour;
    enum config_purge_endpoint purge_endpoint;
    struct step steps[10];
    struct want outcomes[3];
};

#define OK(ep) {ep, OMNIDESK_OK, 200, 0}
#define FOUND(id) {OMNIDESK_SEARCH, OMNIDESK_OK, 200, id}
#define NOT_FOUND(ep) {ep, OMNIDESK_NOT_FOUND, 404, 0}
#define REJECTED(ep) {ep, OMNIDESK_PERMANENT, 400, 0}
#define LOST(ep) {ep, OMNIDESK_TRANSIENT, 0, 0}
#define TOO_FAST(ep) {ep, OMNIDESK_TRANSIENT, 429, 0}
#define SERVER(ep) {ep, OMNIDESK_TRANSIENT, 503, 0}
#define KEY_REFUSED(ep) {ep, OMNIDESK_AUTH, 401, 0}
#define GRANTED {RESERVE, OMNIDESK_OK, 0, 0}
#define REFUSED {RESERVE, OMNIDESK_PERMANENT, 0, 0}
#define FINISHED {END, OMNIDESK_OK, 0, 0}

static const struct scenario scenarios[] = {
    {"create: 200",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {OK(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_DONE, 1, "created", 1, 0}}},
    {"create: 4xx, lookup not found: the create's answer fails the row",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {REJECTED(OMNIDESK_CREATE), NOT_FOUND(OMNIDESK_SEARCH), FINISHED},
     {{OUTBOX_FAILED, 1, "HTTP 400", 1, 0}}},
    {"create: 4xx, lookup found: update, then the channels",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {REJECTED(OMNIDESK_CREATE), FOUND(77), OK(OMNIDESK_UPDATE), OK(OMNIDESK_ADD_CHANNEL),
      OK(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_DONE, 1, "updated, 2 channels added", 1, 0}}},
    {"create: lost answer: retry, looked up first next time",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {LOST(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_RETRY, 1, "HTTP", 1, 1}}},
    {"create: 5xx: retry spending an attempt",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {SERVER(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_RETRY, 1, "HTTP", 1, 1}}},
    {"create: 429: released, no attempt spent, no lookup needed",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {TOO_FAST(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_RETRY, 0, NULL, 1, 0}}},
    {"create: key refused: released",
     {{"insert", NULL, ANN, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {KEY_REFUSED(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_RETRY, 0, NULL, 1, 0}}},
    {"retry: lookup first, not found: create",
     {{"insert", NULL, ANN, 1, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {NOT_FOUND(OMNIDESK_SEARCH), OK(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_DONE, 1, "created", 1, 0}}},
    {"create unknown: lookup found: update, channels",
     {{"insert", NULL, ANN, 0, 0}},
     "{\"created\":false,\"create_unknown\":true}", 0, CONFIG_PURGE_V2,
     {FOUND(78), OK(OMNIDESK_UPDATE), OK(OMNIDESK_ADD_CHANNEL), OK(OMNIDESK_ADD_CHANNEL),
      FINISHED},
     {{OUTBOX_DONE, 1, "updated, 2 channels added", 1, 0}}},
    {"lookup: 4xx: retry rather than guess",
     {{"insert", NULL, ANN, 1, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {REJECTED(OMNIDESK_SEARCH), FINISHED},
     {{OUTBOX_RETRY, 1, "HTTP 400", 1, 0}}},
    {"lookup: lost answer, attempts exhausted: failed, the lookup still owed after a replay",
     {{"insert", NULL, ANN, 4, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {LOST(OMNIDESK_SEARCH), FINISHED},
     {{OUTBOX_FAILED, 1, "gave up after 5 attempts", 1, 1}}},
    {"update: 200",
     {{"update", ANN, ANNE, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {OK(OMNIDESK_UPDATE), FINISHED},
     {{OUTBOX_DONE, 1, "updated", 1, 0}}},
    {"update: 4xx: failed",
     {{"update", ANN, ANNE, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {REJECTED(OMNIDESK_UPDATE), FINISHED},
     {{OUTBOX_FAILED, 1, "HTTP 400", 1, 0}}},
    {"update: 404: the customer vanished, created again",
     {{"update", ANN, ANNE, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {NOT_FOUND(OMNIDESK_UPDATE), OK(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_DONE, 1, "created", 1, 0}}},
    {"update: 404 twice: failed, no loop",
     {{"update", ANN, ANNE, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {NOT_FOUND(OMNIDESK_UPDATE), REJECTED(OMNIDESK_CREATE), FOUND(9), NOT_FOUND(OMNIDESK_UPDATE),
      FINISHED},
     {{OUTBOX_FAILED, 1, "HTTP 404", 1, 0}}},
    {"channel add: 200",
     {{"update", ANN, ANN_NEW_MAIL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {OK(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_DONE, 1, "1 channel added", 1, 0}}},
    {"channel add: 4xx: failed",
     {{"update", ANN, ANN_NEW_MAIL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {REJECTED(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_FAILED, 1, "HTTP 400", 1, 0}}},
    {"channel add: 5xx: retry, looked up first next time (also after a replay resets attempts)",
     {{"update", ANN, ANN_NEW_MAIL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {SERVER(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_RETRY, 1, "HTTP", 1, 1}}},
    {"channel add: 429: released, nothing was applied, no lookup needed",
     {{"update", ANN, ANN_NEW_MAIL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {TOO_FAST(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_RETRY, 0, NULL, 1, 0}}},
    {"orphaned: a dead process held the row: lookup first, then update and the channel",
     {{"update", ANN, ANN_NEW_MAIL, 0, 1}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {FOUND(55), OK(OMNIDESK_UPDATE), OK(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_DONE, 1, "updated, 1 channel added", 1, 0}}},
    {"orphaned: the lookup answered 429: released, the lookup still owed goes to sync_state",
     {{"update", ANN, ANN_NEW_MAIL, 0, 1}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {TOO_FAST(OMNIDESK_SEARCH), FINISHED},
     {{OUTBOX_RETRY, 0, NULL, 1, 1}}},
    {"orphaned: the key refused at the lookup: released, the lookup still owed",
     {{"insert", NULL, ANN, 0, 1}},
     NULL, 0, CONFIG_PURGE_V2,
     {KEY_REFUSED(OMNIDESK_SEARCH), FINISHED},
     {{OUTBOX_RETRY, 0, NULL, 1, 1}}},
    {"orphaned rows in a later plan, released with the first: the lookup still owed",
     {{"delete", ANN, NULL, 0, 0}, {"insert", NULL, ANN, 0, 1}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {TOO_FAST(OMNIDESK_PURGE), FINISHED},
     {{OUTBOX_RETRY, 0, NULL, 1, 1}, {OUTBOX_RETRY, 0, NULL, 1, -1}}},
    {"nothing new: no request",
     {{"update", ANN, ANN, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {FINISHED},
     {{OUTBOX_DONE, 1, "nothing new to send", 1, 0}}},
    {"purge: 200",
     {{"delete", ANN, NULL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {OK(OMNIDESK_PURGE), FINISHED},
     {{OUTBOX_DONE, 1, "purged", 1, 0}}},
    {"purge: stale id (404): lookup, not found: already gone",
     {{"delete", ANN, NULL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {NOT_FOUND(OMNIDESK_PURGE), NOT_FOUND(OMNIDESK_SEARCH), FINISHED},
     {{OUTBOX_DONE, 1, "already gone at Omnidesk", 1, 0}}},
    {"purge: id unknown: lookup found, purge",
     {{"delete", ANN, NULL, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {FOUND(56), OK(OMNIDESK_PURGE), FINISHED},
     {{OUTBOX_DONE, 1, "purged", 1, 0}}},
    {"purge: 4xx: failed",
     {{"delete", ANN, NULL, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {REJECTED(OMNIDESK_PURGE), FINISHED},
     {{OUTBOX_FAILED, 1, "HTTP 400", 1, 0}}},
    {"purge: legacy endpoint",
     {{"delete", ANN, NULL, 0, 0}},
     NULL, 0, CONFIG_PURGE_LEGACY,
     {OK(OMNIDESK_PURGE_LEGACY), FINISHED},
     {{OUTBOX_DONE, 1, "purged", 1, 0}}},
    {"purge: held by the guard; later rows wait",
     {{"delete", ANN, NULL, 0, 0}, {"insert", NULL, ANN, 0, 0}},
     KNOWN, 10, CONFIG_PURGE_V2,
     {REFUSED, FINISHED},
     {{OUTBOX_HELD, 0, "held by the purge guard", 1, -1}, {OUTBOX_RETRY, 0, NULL, 1, -1}}},
    {"purge: released by the guard, then the customer is created anew",
     {{"delete", ANN, NULL, 0, 0}, {"insert", NULL, ANN, 0, 0}},
     KNOWN, 10, CONFIG_PURGE_V2,
     {GRANTED, OK(OMNIDESK_PURGE), OK(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_DONE, 1, "purged", 1, 0}, {OUTBOX_DONE, 1, "created", 1, 0}}},
    {"primary id change: delivered as a new customer",
     {{"update", ANN, ANN_C9, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {OK(OMNIDESK_CREATE), FINISHED},
     {{OUTBOX_DONE, 1, "created", 1, 0}}},
    {"superseded rows: three changes, one request, every row in the outcome",
     {{"insert", NULL, ANN, 0, 0}, {"update", ANN, ANNE, 0, 0}, {"update", ANNE, ANN_NEW_MAIL, 0, 0}},
     NULL, 0, CONFIG_PURGE_V2,
     {OK(OMNIDESK_CREATE), OK(OMNIDESK_ADD_CHANNEL), FINISHED},
     {{OUTBOX_DONE, 1, "created, 1 channel added", 3, 0}}},
    {"coalesced rows: the attempts are the newest row's, so a fresh change is not failed with an old one",
     {{"update", ANN, ANNE, 4, 0}, {"update", ANNE, ANN, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {FOUND(55), SERVER(OMNIDESK_UPDATE), FINISHED},
     {{OUTBOX_RETRY, 1, "HTTP", 2, 0}}},
    {"coalesced rows: the newest row's attempts exhausted: every row fails",
     {{"update", ANN, ANNE, 0, 0}, {"update", ANNE, ANN, 4, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {FOUND(55), SERVER(OMNIDESK_UPDATE), FINISHED},
     {{OUTBOX_FAILED, 1, "gave up after 5 attempts", 2, 0}}},
    {"a transient answer releases the later plans without spending their attempts",
     {{"delete", ANN, NULL, 0, 0}, {"insert", NULL, ANN, 0, 0}},
     KNOWN, 0, CONFIG_PURGE_V2,
     {SERVER(OMNIDESK_PURGE), FINISHED},
     {{OUTBOX_RETRY, 1, "HTTP", 1, 0}, {OUTBOX_RETRY, 0, NULL, 1, -1}}},
};

// clang-format on

static const char *endpoint_name(int e)
{
    return e == RESERVE ? "reserve" : e == END ? "end" : omnidesk_endpoint_name(e);
}

static void run(const struct scenario *sc)
{
    struct config cfg;
    struct config_source src;
    memset(&cfg, 0, sizeof(cfg));
    memset(&src, 0, sizeof(src));
    src.name = "customers";
    src.names = CONFIG_NAMES_STRICT;
    cfg.on_delete = CONFIG_ON_DELETE_PURGE;
    cfg.brand_id = 1;
    cfg.max_attempts = 5;
    cfg.backoff_initial_ms = 1000;
    cfg.backoff_max_ms = 60000;
    cfg.max_purges_per_hour = sc->max_purges_per_hour;
    cfg.purge_endpoint = sc->purge_endpoint;

    struct delivery_row rows[4];
    size_t nrows = 0;
    memset(rows, 0, sizeof(rows));
    for (; nrows < 4 && sc->rows[nrows].op != NULL; nrows++) {
        rows[nrows].id = 10 + (long long)nrows;
        snprintf(rows[nrows].op, sizeof(rows[nrows].op), "%s", sc->rows[nrows].op);
        rows[nrows].attempts = sc->rows[nrows].attempts;
        rows[nrows].orphaned = sc->rows[nrows].orphaned;
        rows[nrows].created_epoch = 1700000000;
        if (sc->rows[nrows].old_json)
            rows[nrows].old_data = json_tokener_parse(sc->rows[nrows].old_json);
        if (sc->rows[nrows].new_json)
            rows[nrows].new_data = json_tokener_parse(sc->rows[nrows].new_json);
    }
    struct outbox_sync sync;
    ck_assert_int_eq(outbox_sync_parse(sc->sync, &sync), 0);
    struct delivery *d = calloc(1, sizeof(*d));
    ck_assert_int_eq(delivery_init(d, &cfg, &src, 0, "C1", rows, nrows, &sync), 0);
    outbox_sync_clear(&sync);

    for (size_t i = 0; i < sizeof(sc->steps) / sizeof(sc->steps[0]); i++) {
        const struct step *st = &sc->steps[i];
        struct delivery_request req;
        enum delivery_next next = delivery_next(d, &req);
        int got = next == DELIVERY_DONE            ? END
                  : next == DELIVERY_RESERVE_PURGE ? RESERVE
                                                   : (int)req.endpoint;
        ck_assert_msg(got == st->expect, "%s: step %zu: asked for %s, expected %s", sc->name, i,
                      endpoint_name(got), endpoint_name(st->expect));
        if (got == END)
            break;
        if (got == RESERVE) {
            ck_assert_int_eq(d->state, DELIVERY_STATE_RESERVE);
            delivery_on_reservation(d, st->class == OMNIDESK_OK);
            continue;
        }
        struct omnidesk_response resp;
        memset(&resp, 0, sizeof(resp));
        resp.endpoint = req.endpoint;
        resp.class = st->class;
        resp.http_status = st->http_status;
        resp.customer_id = st->customer_id;
        resp.retry_after_ms = -1;
        if (st->class != OMNIDESK_OK)
            snprintf(resp.error, sizeof(resp.error), "HTTP %ld: answer", st->http_status);
        delivery_on_response(d, &resp);
    }
    ck_assert_int_eq(d->state, DELIVERY_STATE_FINISHED);

    size_t nwant = 0;
    while (nwant < 3 && sc->outcomes[nwant].nrows > 0)
        nwant++;
    ck_assert_msg(d->noutcomes == nwant, "%s: %zu outcomes, expected %zu", sc->name, d->noutcomes,
                  nwant);
    for (size_t i = 0; i < nwant; i++) {
        const struct want *w = &sc->outcomes[i];
        const struct delivery_outcome *o = &d->outcomes[i];
        ck_assert_msg(o->status == w->status, "%s: outcome %zu: status %d, expected %d", sc->name,
                      i, o->status, w->status);
        ck_assert_msg(o->spend == w->spend, "%s: outcome %zu: spend %d", sc->name, i, o->spend);
        ck_assert_msg((int)o->nrows == w->nrows, "%s: outcome %zu: %zu rows", sc->name, i,
                      o->nrows);
        ck_assert_int_eq(o->sent_id, o->rows[o->nrows - 1]);
        const char *text =
            o->status == OUTBOX_DONE || o->status == OUTBOX_HELD ? o->result : o->error;
        if (w->text != NULL)
            ck_assert_msg(text != NULL && strstr(text, w->text) != NULL,
                          "%s: outcome %zu: \"%s\", expected \"%s\"", sc->name, i,
                          text ? text : "(null)", w->text);
        else
            ck_assert_msg(text == NULL || *text == '\0', "%s: outcome %zu: \"%s\"", sc->name, i,
                          text);
        if (w->create_unknown < 0)
            ck_assert_msg(o->sync == NULL, "%s: outcome %zu carries sync", sc->name, i);
        else
            ck_assert_msg(o->sync != NULL && o->sync->create_unknown == w->create_unknown,
                          "%s: outcome %zu: create_unknown", sc->name, i);
    }
    delivery_free(d);
    free(d);
}

START_TEST(scenario)
{
    run(&scenarios[_i]);
}
END_TEST

/* Released before anything was sent (circuit open, shutdown): no attempt spent, no request;
 * a row a dead process held (_i 1) is looked up first next time. */
START_TEST(released_before_sending)
{
    struct config cfg;
    struct config_source src;
    memset(&cfg, 0, sizeof(cfg));
    memset(&src, 0, sizeof(src));
    src.name = "customers";
    cfg.max_attempts = 5;
    struct delivery_row row = {
        .id = 5, .op = "insert", .new_data = json_tokener_parse(ANN), .orphaned = _i};
    struct delivery d;
    ck_assert_int_eq(delivery_init(&d, &cfg, &src, 0, "C1", &row, 1, NULL), 0);
    delivery_release(&d, "circuit open");
    ck_assert_int_eq(d.state, DELIVERY_STATE_STOPPED);
    struct delivery_request req;
    ck_assert_int_eq(delivery_next(&d, &req), DELIVERY_DONE);
    ck_assert_int_eq(d.noutcomes, 1);
    ck_assert_int_eq(d.outcomes[0].status, OUTBOX_RETRY);
    ck_assert_int_eq(d.outcomes[0].spend, 0);
    ck_assert_int_eq(d.outcomes[0].nattempts, 0);
    ck_assert_ptr_nonnull(d.outcomes[0].sync);
    ck_assert_int_eq(d.outcomes[0].sync->create_unknown, _i);
    /* A second call changes nothing. */
    ck_assert_int_eq(delivery_next(&d, &req), DELIVERY_DONE);
    ck_assert_int_eq(d.noutcomes, 1);
    delivery_free(&d);
}
END_TEST

START_TEST(state_names)
{
    for (int s = 0; s < DELIVERY_STATE_COUNT; s++)
        ck_assert_str_ne(delivery_state_name((enum delivery_state)s), "?");
    ck_assert_str_eq(delivery_state_name(DELIVERY_STATE_COUNT), "?");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("delivery_state");
    TCase *tc = tcase_create("table");
    tcase_add_loop_test(tc, scenario, 0, (int)(sizeof(scenarios) / sizeof(scenarios[0])));
    tcase_add_loop_test(tc, released_before_sending, 0, 2);
    tcase_add_test(tc, state_names);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
