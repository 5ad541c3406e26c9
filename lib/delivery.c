/*
 * delivery: the per-customer state machine. See delivery.h.
 *
 * Every decision is taken from what is known now (plans + sync), never from a script fixed at
 * claim time, so an answer that changes what we know (a create refused because the customer
 * exists, an update answered 404 because it was deleted at Omnidesk) changes the next step.
 */
#include "delivery.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "backoff.h"
#include "log.h"
#include "textcut.h"
#include "validate.h"

enum plan_step { STEP_SEND, STEP_RESERVE, STEP_DONE, STEP_FAILED, STEP_HELD };

static uint64_t default_random(void)
{
    return ((uint64_t)random() << 33) ^ ((uint64_t)random() << 2) ^ (uint64_t)random();
}

uint64_t (*delivery_random)(void) = default_random;

static double now_epoch(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* ---- what we know of the customer ---- */

static int sync_knows(const struct delivery_sync *s, const char *key)
{
    for (size_t i = 0; i < s->nchannels; i++) {
        if (strcmp(s->channels[i], key) == 0)
            return 1;
    }
    return 0;
}

static void sync_add(struct delivery_sync *s, const char *key)
{
    if (sync_knows(s, key))
        return;
    if (s->nchannels >= DELIVERY_MAX_KNOWN) {
        free(s->channels[0]);
        memmove(&s->channels[0], &s->channels[1], sizeof(s->channels[0]) * (DELIVERY_MAX_KNOWN - 1));
        s->nchannels--;
    }
    char *copy = strdup(key);
    if (copy == NULL)
        return; /* costs at most a repeated addChannelOnly, which Omnidesk tolerates */
    s->channels[s->nchannels++] = copy;
}

static void sync_forget(struct delivery_sync *s)
{
    for (size_t i = 0; i < s->nchannels; i++)
        free(s->channels[i]);
    s->nchannels = 0;
    s->created = 0;
    s->create_unknown = 0;
    s->omnidesk_id = 0;
}

static void sync_parse(struct delivery_sync *s, const char *json)
{
    if (json == NULL)
        return;
    struct json_object *obj = json_tokener_parse(json), *v;
    if (obj == NULL)
        return;
    if (json_object_object_get_ex(obj, "created", &v))
        s->created = json_object_get_boolean(v);
    if (json_object_object_get_ex(obj, "create_unknown", &v))
        s->create_unknown = json_object_get_boolean(v);
    if (json_object_object_get_ex(obj, "omnidesk_id", &v) && v != NULL)
        s->omnidesk_id = json_object_get_int64(v);
    if (json_object_object_get_ex(obj, "channels", &v) && json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++)
            sync_add(s, json_object_get_string(json_object_array_get_idx(v, i)));
    }
    json_object_put(obj);
}

static struct json_object *sync_json(const struct delivery_sync *s, int reset)
{
    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "reset", json_object_new_boolean(reset));
    json_object_object_add(obj, "created", json_object_new_boolean(s->created));
    json_object_object_add(obj, "create_unknown", json_object_new_boolean(s->create_unknown));
    json_object_object_add(obj, "omnidesk_id",
                           s->omnidesk_id > 0 ? json_object_new_int64(s->omnidesk_id) : NULL);
    struct json_object *channels = json_object_new_array();
    for (size_t i = 0; i < s->nchannels; i++)
        json_object_array_add(channels, json_object_new_string(s->channels[i]));
    json_object_object_add(obj, "channels", channels);
    return obj;
}

static void start_plan(struct delivery *d);

/* ---- set up ---- */

int delivery_init(struct delivery *d, const struct config *cfg, const struct config_source *src,
                  long long brand_id, const char *primary_id, struct delivery_row *rows,
                  size_t nrows, const char *sync_text)
{
    memset(d, 0, sizeof(*d));
    d->cfg = cfg;
    d->source = src;
    snprintf(d->source_name, sizeof(d->source_name), "%s", src->name);
    d->brand_id = brand_id;
    d->send_brand = brand_id > 0 ? brand_id : cfg->brand_id;
    snprintf(d->brand_text, sizeof(d->brand_text), "%lld", d->send_brand);
    d->primary_id = strdup(primary_id);
    d->started = now_epoch();
    if (nrows > DELIVERY_MAX_ROWS)
        nrows = DELIVERY_MAX_ROWS;
    memcpy(d->rows, rows, nrows * sizeof(rows[0]));
    d->nrows = nrows;
    sync_parse(&d->sync, sync_text);
    d->outcomes = json_object_new_array();
    d->attempts = json_object_new_array();
    if (d->primary_id == NULL || d->outcomes == NULL || d->attempts == NULL)
        goto fail;

    struct mapping_row mrows[DELIVERY_MAX_ROWS];
    for (size_t i = 0; i < nrows; i++) {
        mrows[i].id = rows[i].id;
        mrows[i].op = d->rows[i].op;
        mrows[i].old_data = d->rows[i].old_data;
        mrows[i].new_data = d->rows[i].new_data;
    }
    int n = mapping_plan_rows(cfg, src, mrows, nrows, d->plans, &d->nplanned_rows);
    if (n < 0)
        goto fail;
    d->nplans = (size_t)n;
    start_plan(d);
    return OMNISYNC_OK;
fail:
    delivery_free(d);
    return OMNISYNC_ENOMEM;
}

void delivery_free(struct delivery *d)
{
    for (size_t i = 0; i < d->nplans; i++)
        mapping_plan_free(&d->plans[i]);
    d->nplans = 0;
    for (size_t i = 0; i < d->nrows; i++) {
        json_object_put(d->rows[i].old_data);
        json_object_put(d->rows[i].new_data);
    }
    d->nrows = 0;
    sync_forget(&d->sync);
    json_object_put(d->attempts);
    json_object_put(d->outcomes);
    d->attempts = d->outcomes = NULL;
    free(d->primary_id);
    d->primary_id = NULL;
}

/* ---- outcomes ---- */

/* Starts plan d->current (or nothing past the last): fresh progress. */
static void start_plan(struct delivery *d)
{
    d->verify_first = 0;
    d->current_failed = 0;
    d->searched = d->created_now = d->create_rejected = d->update_done = d->recreated = 0;
    d->purge_reserved = d->purge_gone = d->purge_done = 0;
    d->channels_added = 0;
    d->last_status = 0;
    d->last_error[0] = '\0';
    d->retry_after_ms = -1;
    d->stop = DELIVERY_STOP_NONE;
    json_object_put(d->attempts);
    d->attempts = json_object_new_array();
    if (d->current >= d->nplans)
        return;
    /* A retry, rows a dead process held, or a create whose outcome is unknown (whatever
     * released its rows afterwards: a breaker, a drain, the database away) may find that an
     * earlier attempt applied: look the customer up first instead of trusting sync_state. */
    const struct mapping_plan *p = &d->plans[d->current];
    d->known_created = d->sync.created;
    if (d->sync.create_unknown)
        d->verify_first = 1;
    for (size_t i = p->first; i <= p->last; i++) {
        if (d->rows[i].attempts > 0 || d->rows[i].orphaned)
            d->verify_first = 1;
    }
}

static void advance(struct delivery *d)
{
    d->current++;
    start_plan(d);
}

static struct json_object *row_ids(const struct delivery *d, size_t first, size_t last)
{
    struct json_object *ids = json_object_new_array();
    for (size_t i = first; i <= last && i < d->nrows; i++)
        json_object_array_add(ids, json_object_new_int64(d->rows[i].id));
    return ids;
}

/* The operation an outcome of the current plan stands for, as a metrics label. */
static const char *outcome_op(const struct delivery *d)
{
    if (d->current >= d->nplans)
        return "none";
    const struct mapping_plan *p = &d->plans[d->current];
    switch (p->kind) {
    case MAPPING_PURGE:
        return "purge";
    case MAPPING_TRUNCATE:
        return "truncate";
    case MAPPING_NOTHING:
        return "none";
    default:
        if (d->created_now)
            return "create";
        if (d->update_done)
            return "update";
        if (d->channels_added > 0 && d->sync.created)
            return "add_channel";
        return d->sync.created ? "update" : "create";
    }
}

/* Appends one outcome for rows[first..last]. */
static void add_outcome(struct delivery *d, size_t first, size_t last, const char *status,
                        const char *result, const char *error, int http_status, long long delay_ms,
                        int spend, int purged, int with_sync)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "source", json_object_new_string(d->source_name));
    json_object_object_add(o, "brand_id", json_object_new_int64(d->brand_id));
    json_object_object_add(o, "primary_id", json_object_new_string(d->primary_id));
    json_object_object_add(o, "rows", row_ids(d, first, last));
    json_object_object_add(o, "sent_id", json_object_new_int64(d->rows[last].id));
    json_object_object_add(o, "status", json_object_new_string(status));
    /* For metrics only (record_outcomes ignores them): what was done, and since when the
     * oldest change of these rows waited. */
    json_object_object_add(o, "op", json_object_new_string(outcome_op(d)));
    json_object_object_add(o, "first_created", json_object_new_double(d->rows[first].created_epoch));
    if (result != NULL)
        json_object_object_add(o, "result", json_object_new_string(result));
    if (error != NULL && *error != '\0')
        json_object_object_add(o, "error", json_object_new_string(error));
    if (http_status > 0)
        json_object_object_add(o, "http_status", json_object_new_int(http_status));
    json_object_object_add(o, "delay_ms", json_object_new_int64(delay_ms));
    json_object_object_add(o, "spend", json_object_new_int(spend));
    json_object_object_add(o, "purged", json_object_new_boolean(purged));
    json_object_object_add(o, "attempts", json_object_get(d->attempts));
    if (with_sync)
        json_object_object_add(o, "sync", sync_json(&d->sync, purged));
    json_object_array_add(d->outcomes, o);
}

static int plan_max_attempts(const struct delivery *d, const struct mapping_plan *p)
{
    int max = 0;
    for (size_t i = p->first; i <= p->last; i++) {
        if (d->rows[i].attempts > max)
            max = d->rows[i].attempts;
    }
    return max;
}

/* Releases plans from `from` on, and rows beyond the planned ones, spending no attempt. */
static void release_rest(struct delivery *d, size_t from, long long delay_ms)
{
    if (from < d->nplans) {
        size_t first = d->plans[from].first;
        add_outcome(d, first, d->plans[d->nplans - 1].last, "retry", NULL, NULL, 0, delay_ms, 0, 0,
                    0);
    }
    if (d->nplanned_rows < d->nrows)
        add_outcome(d, d->nplanned_rows, d->nrows - 1, "retry", NULL, NULL, 0, 0, 0, 0, 0);
    d->current = d->nplans;
    d->nplanned_rows = d->nrows; /* recorded */
}

/*
 * DESIGN: the warning names both outbox ids, the row whose UPDATE changed the primary id and the
 * row sent (they differ when later rows were merged into the same request), and the old id, which
 * the operator may want to remove at Omnidesk by hand (issue 17 item 9).
 */
static void warn_primary_id_changed(const struct delivery *d, const struct mapping_plan *p)
{
    long long changed_in = p->sent_id;
    const char *old_id = "?";

    for (size_t i = p->first; i <= p->last && i < d->nrows; i++) {
        const struct delivery_row *row = &d->rows[i];
        struct json_object *before = NULL, *after = NULL;
        if (row->old_data == NULL || row->new_data == NULL ||
            !json_object_object_get_ex(row->old_data, "primary_id", &before) ||
            !json_object_object_get_ex(row->new_data, "primary_id", &after) ||
            strcmp(json_object_get_string(before), json_object_get_string(after)) == 0)
            continue;
        changed_in = row->id;
        old_id = json_object_get_string(before);
        break;
    }
    log_warn("primary id changed: delivered as a new customer; the old id is left alone at "
             "Omnidesk changed_in_outbox_id=%lld outbox_id=%lld old_primary_id=%s primary_id=%s",
             changed_in, p->sent_id, old_id, d->primary_id);
}

/* The current plan stopped early (transient error or release). */
static void finish_stopped(struct delivery *d, const struct mapping_plan *p)
{
    long long delay = d->retry_after_ms > 0 ? d->retry_after_ms : 0;
    if (d->stop == DELIVERY_STOP_TRANSIENT) {
        int attempts = plan_max_attempts(d, p) + 1;
        if (attempts >= d->cfg->max_attempts) {
            char error[700];
            textcut_printf(error, sizeof(error), "gave up after %d attempts: %s", attempts,
                     d->last_error);
            log_warn("delivery failed: attempts exhausted outbox_id=%lld primary_id=%s "
                     "attempts=%d status=%d",
                     p->sent_id, d->primary_id, attempts, d->last_status);
            add_outcome(d, p->first, p->last, "failed", NULL, error, d->last_status, 0, 1, 0, 1);
            advance(d);
            return;
        }
        struct backoff_policy policy = {(uint64_t)d->cfg->backoff_initial_ms,
                                        (uint64_t)d->cfg->backoff_max_ms};
        long long backoff = (long long)backoff_delay_ms(&policy, (unsigned)attempts, delivery_random());
        if (backoff > delay)
            delay = backoff;
        log_info("delivery will be retried outbox_id=%lld primary_id=%s attempt=%d status=%d "
                 "retry_in_ms=%lld",
                 p->sent_id, d->primary_id, attempts, d->last_status, delay);
        add_outcome(d, p->first, p->last, "retry", NULL, d->last_error, d->last_status, delay, 1,
                    0, 1);
    } else {
        add_outcome(d, p->first, p->last, "retry", NULL, NULL, 0, delay, 0, 0, 1);
    }
    /* Later plans of this customer wait behind this one, whatever happens to it. */
    release_rest(d, d->current + 1, 0);
}

/* ---- the next request of each kind of plan ---- */

static void add_field(struct delivery_request *r, const char *name, const char *value)
{
    if (value == NULL || r->nfields >= OMNIDESK_MAX_FIELDS)
        return;
    r->fields[r->nfields].name = name;
    r->fields[r->nfields].value = value;
    r->nfields++;
}

static void begin_request(struct delivery_request *r, enum omnidesk_endpoint endpoint)
{
    r->endpoint = endpoint;
    r->customer_id = 0;
    r->nfields = 0;
}

static enum plan_step search(struct delivery *d, const struct mapping_plan *p,
                             struct delivery_request *r)
{
    begin_request(r, OMNIDESK_SEARCH);
    add_field(r, "primary_id", p->primary_id);
    add_field(r, "brand_id", d->brand_text);
    return STEP_SEND;
}

static const char *nonempty(const char *s)
{
    return s != NULL && *s != '\0' ? s : NULL;
}

static enum plan_step create(struct delivery *d, const struct mapping_plan *p,
                             struct delivery_request *r)
{
    begin_request(r, OMNIDESK_CREATE);
    add_field(r, "brand_id", d->brand_text);
    add_field(r, "primary_id", p->primary_id);
    add_field(r, "firstname", nonempty(p->firstname));
    add_field(r, "lastname", nonempty(p->lastname));
    add_field(r, "extra_email", p->email);
    /* create requires 12 characters; a shorter valid number goes through addChannelOnly. */
    if (p->telephone != NULL && strlen(p->telephone) >= VALIDATE_TELEPHONE_MIN_CREATE)
        add_field(r, "extra_telephone", p->telephone);
    for (size_t i = 0; i < p->ncustom; i++)
        add_field(r, p->custom[i].param, p->custom[i].value);
    return STEP_SEND;
}

static enum plan_step update(struct delivery *d, const struct mapping_plan *p,
                             struct delivery_request *r)
{
    if (nonempty(p->firstname) == NULL || nonempty(p->lastname) == NULL) {
        textcut_printf(d->last_error, sizeof(d->last_error),
                 "updateCustomer requires firstname and lastname; the CRM row has %s",
                 nonempty(p->firstname) ? "no lastname" : "no firstname");
        d->last_status = 0;
        return STEP_FAILED;
    }
    begin_request(r, OMNIDESK_UPDATE);
    add_field(r, "externalPrimaryID", p->primary_id);
    add_field(r, "brandID", d->brand_text);
    add_field(r, "firstname", p->firstname);
    add_field(r, "lastname", p->lastname);
    /* Full state: a custom field emptied in the CRM is emptied at Omnidesk. */
    for (size_t i = 0; i < p->ncustom; i++)
        add_field(r, p->custom[i].param, p->custom[i].value ? p->custom[i].value : "");
    return STEP_SEND;
}

static enum plan_step next_upsert(struct delivery *d, const struct mapping_plan *p,
                                  struct delivery_request *r)
{
    if (d->current_failed)
        return STEP_FAILED;
    if (d->verify_first && !d->searched)
        return search(d, p, r);
    if (!d->sync.created) {
        if (d->create_rejected && d->searched) {
            /* Refused, and not there: the create's own answer is the reason to report. */
            textcut_printf(d->last_error, sizeof(d->last_error), "%s", d->reject_error);
            d->last_status = d->reject_status;
            return STEP_FAILED;
        }
        if (d->create_rejected)
            return search(d, p, r);
        return create(d, p, r);
    }
    int need_update = p->names_changed || d->create_rejected || d->verify_first;
    /* updateCustomer takes only both names. A customer the lookup found although sync_state
     * did not know it (a create of ours whose answer was lost) got everything a create carries:
     * without both names there is nothing an update could add, and demanding them would fail a
     * row the create did not fail. An existing customer whose names or fields changed still
     * needs them (update() says so). */
    int nameless = nonempty(p->firstname) == NULL || nonempty(p->lastname) == NULL;
    if (nameless && !d->create_rejected && !(p->names_changed && d->known_created))
        need_update = 0;
    if (need_update && !d->update_done && !d->created_now)
        return update(d, p, r);
    for (; d->channels_added < p->nchannels; d->channels_added++) {
        const struct mapping_channel *c = &p->channels[d->channels_added];
        char key[1100];
        mapping_channel_key(c, key, sizeof(key));
        if (sync_knows(&d->sync, key))
            continue;
        begin_request(r, OMNIDESK_ADD_CHANNEL);
        add_field(r, "brand_id", d->brand_text);
        add_field(r, "primary_id", p->primary_id);
        add_field(r, strcmp(c->type, "email") == 0 ? "extra_email" : "extra_telephone", c->value);
        return STEP_SEND;
    }
    return STEP_DONE;
}

static enum plan_step next_purge(struct delivery *d, const struct mapping_plan *p,
                                 struct delivery_request *r)
{
    if (d->current_failed)
        return STEP_FAILED;
    if (d->purge_done || d->purge_gone)
        return STEP_DONE;
    if (d->cfg->max_purges_per_hour > 0 && !d->purge_reserved)
        return STEP_RESERVE;
    if (d->cfg->purge_endpoint == CONFIG_PURGE_LEGACY) {
        begin_request(r, OMNIDESK_PURGE_LEGACY);
        add_field(r, "external_id", p->primary_id);
        add_field(r, "brand_id", d->brand_text);
        return STEP_SEND;
    }
    if (d->sync.omnidesk_id <= 0) {
        if (d->searched) {
            d->purge_gone = 1;
            return STEP_DONE;
        }
        return search(d, p, r);
    }
    begin_request(r, OMNIDESK_PURGE);
    r->customer_id = d->sync.omnidesk_id;
    return STEP_SEND;
}

static void count_result(const struct delivery *d, const struct mapping_plan *p, char *out,
                         size_t outlen)
{
    size_t added = 0;
    (void)p;
    /* channels_added walked every planned channel; count those the request log shows sent. */
    for (size_t i = 0; i < json_object_array_length(d->attempts); i++) {
        struct json_object *a = json_object_array_get_idx(d->attempts, i), *v;
        if (json_object_object_get_ex(a, "step", &v) &&
            strcmp(json_object_get_string(v), "addChannelOnly") == 0 &&
            json_object_object_get_ex(a, "outcome", &v) &&
            strcmp(json_object_get_string(v), "ok") == 0)
            added++;
    }
    const char *base = d->created_now   ? "created"
                       : d->update_done ? "updated"
                       : d->searched && !d->known_created && d->sync.created
                           ? "found at Omnidesk by lookup"
                           : NULL;
    if (base && added)
        snprintf(out, outlen, "%s, %zu channel%s added", base, added, added == 1 ? "" : "s");
    else if (base)
        snprintf(out, outlen, "%s", base);
    else if (added)
        snprintf(out, outlen, "%zu channel%s added", added, added == 1 ? "" : "s");
    else
        snprintf(out, outlen, "nothing new to send");
}

/* The names of the plan this delivery sent transliterated: by a create or an update only. A
 * change of channels alone sends no name, and the names at Omnidesk stay as they were. */
static unsigned sent_transliterated(const struct delivery *d, const struct mapping_plan *p)
{
    return d->created_now || d->update_done ? p->transliterated : 0;
}

/* The row's result says which names were sent transliterated, never their values. */
static void note_transliterated(const struct delivery *d, const struct mapping_plan *p, char *out,
                                size_t outlen)
{
    size_t len = strlen(out);
    unsigned names = sent_transliterated(d, p);
    if (names == 0 || len >= outlen)
        return;
    snprintf(out + len, outlen - len, "; %s%s%s transliterated",
             names & MAPPING_NAME_FIRSTNAME ? "firstname" : "",
             names == (MAPPING_NAME_FIRSTNAME | MAPPING_NAME_LASTNAME) ? ", " : "",
             names & MAPPING_NAME_LASTNAME ? "lastname" : "");
}

/* For omnisync_names_transliterated_total: the names the outcome just added sent transliterated
 * (record_outcomes ignores the key). */
static void count_transliterated(struct delivery *d, const struct mapping_plan *p)
{
    size_t n = json_object_array_length(d->outcomes);
    unsigned sent = sent_transliterated(d, p);
    int names = (sent & MAPPING_NAME_FIRSTNAME ? 1 : 0) + (sent & MAPPING_NAME_LASTNAME ? 1 : 0);
    if (names > 0 && n > 0)
        json_object_object_add(json_object_array_get_idx(d->outcomes, n - 1),
                               "names_transliterated", json_object_new_int(names));
}

enum delivery_next delivery_next(struct delivery *d, struct delivery_request *r)
{
    while (d->current < d->nplans) {
        struct mapping_plan *p = &d->plans[d->current];
        if (d->stop != DELIVERY_STOP_NONE) {
            finish_stopped(d, p);
            continue;
        }
        enum plan_step step;
        char result[200];
        switch (p->kind) {
        case MAPPING_TRUNCATE:
            log_warn("TRUNCATE of the CRM table seen: no purges sent; run omnisync backfill to "
                     "resync outbox_id=%lld source=%s",
                     p->sent_id, d->source_name);
            add_outcome(d, p->first, p->last, "done",
                        "truncate: no purges sent; resync with omnisync backfill", NULL, 0, 0, 1,
                        0, 0);
            advance(d);
            continue;
        case MAPPING_NOTHING:
            add_outcome(d, p->first, p->last, "done",
                        "nothing to send (delete ignored: on_delete = ignore)", NULL, 0, 0, 1, 0,
                        0);
            advance(d);
            continue;
        case MAPPING_INVALID:
            log_warn("row not sent: %s outbox_id=%lld primary_id=%s", p->log_error, p->sent_id,
                     d->primary_id);
            add_outcome(d, p->first, p->last, "failed", NULL, p->error, 0, 0, 1, 0, 0);
            advance(d);
            continue;
        case MAPPING_UPSERT:
            step = next_upsert(d, p, r);
            break;
        case MAPPING_PURGE:
        default:
            step = next_purge(d, p, r);
            break;
        }
        switch (step) {
        case STEP_SEND:
            return DELIVERY_SEND;
        case STEP_RESERVE:
            return DELIVERY_RESERVE_PURGE;
        case STEP_DONE:
            if (p->kind == MAPPING_PURGE) {
                snprintf(result, sizeof(result), "%s",
                         d->purge_done ? "purged" : "already gone at Omnidesk");
                sync_forget(&d->sync);
                log_info("customer purged outbox_id=%lld primary_id=%s result=\"%s\"", p->sent_id,
                         d->primary_id, result);
                add_outcome(d, p->first, p->last, "done", result, NULL, d->last_status, 0, 1, 1, 1);
            } else {
                count_result(d, p, result, sizeof(result));
                note_transliterated(d, p, result, sizeof(result));
                if (p->primary_id_changed)
                    warn_primary_id_changed(d, p);
                log_info("delivered outbox_id=%lld primary_id=%s rows=%zu result=\"%s\"",
                         p->sent_id, d->primary_id, p->last - p->first + 1, result);
                add_outcome(d, p->first, p->last, "done", result, NULL, d->last_status, 0, 1, 0, 1);
                count_transliterated(d, p);
            }
            break;
        case STEP_FAILED:
            log_warn("delivery failed outbox_id=%lld primary_id=%s status=%d", p->sent_id,
                     d->primary_id, d->last_status);
            add_outcome(d, p->first, p->last, "failed", NULL, d->last_error, d->last_status, 0, 1,
                        0, 1);
            break;
        case STEP_HELD:
            snprintf(result, sizeof(result),
                     "held by the purge guard (max_purges_per_hour = %lld); release with "
                     "omnisync purges release",
                     d->cfg->max_purges_per_hour);
            log_warn("purge held by the guard outbox_id=%lld primary_id=%s max_per_hour=%lld",
                     p->sent_id, d->primary_id, d->cfg->max_purges_per_hour);
            add_outcome(d, p->first, p->last, "held", result, NULL, 0, 0, 0, 0, 0);
            release_rest(d, d->current + 1, 0);
            continue;
        }
        advance(d);
    }
    if (!d->finished) {
        release_rest(d, d->nplans, 0);
        d->finished = 1;
    }
    return DELIVERY_DONE;
}

void delivery_on_reservation(struct delivery *d, int granted)
{
    struct mapping_plan *p = &d->plans[d->current];
    if (granted) {
        d->purge_reserved = 1;
        return;
    }
    char result[200];
    snprintf(result, sizeof(result),
             "held by the purge guard (max_purges_per_hour = %lld); release with omnisync "
             "purges release",
             d->cfg->max_purges_per_hour);
    log_warn("purge held by the guard outbox_id=%lld primary_id=%s max_per_hour=%lld", p->sent_id,
             d->primary_id, d->cfg->max_purges_per_hour);
    add_outcome(d, p->first, p->last, "held", result, NULL, 0, 0, 0, 0, 0);
    release_rest(d, d->current + 1, 0);
}

void delivery_release(struct delivery *d, const char *why)
{
    if (d->current >= d->nplans)
        return;
    d->stop = DELIVERY_STOP_RELEASE;
    textcut_printf(d->last_error, sizeof(d->last_error), "%s", why);
}

static void log_attempt(struct delivery *d, const struct omnidesk_response *resp)
{
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, "at", json_object_new_double(now_epoch() - resp->seconds));
    json_object_object_add(a, "step", json_object_new_string(omnidesk_endpoint_name(resp->endpoint)));
    if (resp->http_status > 0)
        json_object_object_add(a, "http_status", json_object_new_int((int)resp->http_status));
    json_object_object_add(a, "outcome", json_object_new_string(omnidesk_class_name(resp->class)));
    if (resp->error[0])
        json_object_object_add(a, "error", json_object_new_string(resp->error));
    json_object_object_add(a, "duration_ms", json_object_new_int((int)(resp->seconds * 1000)));
    json_object_array_add(d->attempts, a);
}

/*
 * A lookup may list the customer's channels (the API document does not say): whatever it lists
 * is known to be there, so an add whose answer was lost is not repeated. Accepted shapes: an
 * array of {"type","value"} objects, of {"channel","address"}-like pairs, or of plain strings
 * (then the type is guessed from the value: '@' is email, '+' is telephone).
 */
static void learn_channels(struct delivery *d, struct json_object *customer)
{
    struct json_object *channels, *v;
    if (customer == NULL || !json_object_object_get_ex(customer, "channels", &channels) ||
        !json_object_is_type(channels, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(channels); i++) {
        struct json_object *c = json_object_array_get_idx(channels, i);
        const char *type = NULL, *value = NULL;
        if (json_object_is_type(c, json_type_string)) {
            value = json_object_get_string(c);
        } else if (json_object_is_type(c, json_type_object)) {
            if (json_object_object_get_ex(c, "value", &v))
                value = json_object_get_string(v);
            if (json_object_object_get_ex(c, "type", &v))
                type = json_object_get_string(v);
        }
        if (value == NULL || *value == '\0')
            continue;
        if (type == NULL)
            type = strchr(value, '@') ? "email" : value[0] == '+' ? "telephone" : NULL;
        if (type == NULL || (strcmp(type, "email") != 0 && strcmp(type, "telephone") != 0))
            continue;
        char key[1100];
        snprintf(key, sizeof(key), "%s:%s", type, value);
        sync_add(&d->sync, key);
    }
}

/* The customer is gone at Omnidesk although we thought it existed: create it again, once. */
static int vanished(struct delivery *d)
{
    if (d->recreated)
        return 0;
    d->recreated = 1;
    sync_forget(&d->sync);
    d->update_done = d->created_now = 0;
    d->channels_added = 0;
    return 1;
}

void delivery_on_response(struct delivery *d, const struct omnidesk_response *resp)
{
    struct mapping_plan *p = &d->plans[d->current];
    log_attempt(d, resp);
    d->last_status = (int)resp->http_status;
    textcut_printf(d->last_error, sizeof(d->last_error), "%s", resp->error);

    if (resp->class == OMNIDESK_TRANSIENT) {
        /* A create may have been applied although its answer was lost, cut, late or a 5xx
         * (a 429 was refused before anything happened). The flag goes to sync_state with the
         * outcome, whatever releases the rows: the next delivery looks the customer up first. */
        if (resp->endpoint == OMNIDESK_CREATE && resp->http_status != 429)
            d->sync.create_unknown = 1;
        d->retry_after_ms = resp->retry_after_ms;
        /* A 429 says we were too fast, not that this row is at fault. */
        d->stop = resp->http_status == 429 ? DELIVERY_STOP_RELEASE : DELIVERY_STOP_TRANSIENT;
        return;
    }
    if (resp->class == OMNIDESK_AUTH) {
        d->stop = DELIVERY_STOP_RELEASE;
        return;
    }

    switch (resp->endpoint) {
    case OMNIDESK_SEARCH:
        d->searched = 1;
        if (resp->class == OMNIDESK_OK && resp->customer_id > 0) {
            d->sync.created = 1;
            d->sync.create_unknown = 0;
            d->sync.omnidesk_id = resp->customer_id;
            learn_channels(d, resp->customer);
        } else if (resp->class == OMNIDESK_NOT_FOUND) {
            if (d->sync.created || d->sync.omnidesk_id)
                sync_forget(&d->sync);
            d->sync.create_unknown = 0; /* not there: the lost create did not apply */
        } else {
            d->stop = DELIVERY_STOP_TRANSIENT; /* a 4xx to a lookup: retry rather than guess */
        }
        break;
    case OMNIDESK_CREATE:
        if (resp->class == OMNIDESK_OK) {
            d->sync.created = 1;
            d->sync.create_unknown = 0;
            d->created_now = 1;
            char key[1100];
            if (p->email) {
                snprintf(key, sizeof(key), "email:%s", p->email);
                sync_add(&d->sync, key);
            }
            if (p->telephone && strlen(p->telephone) >= VALIDATE_TELEPHONE_MIN_CREATE) {
                snprintf(key, sizeof(key), "telephone:%s", p->telephone);
                sync_add(&d->sync, key);
            }
        } else {
            /* Any 4xx: maybe it exists already (status undocumented). Look it up before
             * deciding; a second search happens even after a verify search, because the
             * customer may have been created meanwhile. */
            d->create_rejected = 1;
            d->reject_status = (int)resp->http_status;
            textcut_printf(d->reject_error, sizeof(d->reject_error), "%s", resp->error);
            d->searched = 0;
            d->verify_first = 0;
        }
        break;
    case OMNIDESK_UPDATE:
    case OMNIDESK_ADD_CHANNEL:
        if (resp->class == OMNIDESK_OK) {
            if (resp->endpoint == OMNIDESK_UPDATE) {
                d->update_done = 1;
            } else {
                char key[1100];
                mapping_channel_key(&p->channels[d->channels_added], key, sizeof(key));
                sync_add(&d->sync, key);
                d->channels_added++;
            }
        } else if (resp->class == OMNIDESK_NOT_FOUND && vanished(d)) {
            log_warn("customer not found at Omnidesk although it was synced; creating it again "
                     "outbox_id=%lld primary_id=%s",
                     p->sent_id, d->primary_id);
        } else {
            /* Permanent: the next delivery_next() reports the failure. */
            d->create_rejected = 0;
            d->current_failed = 1;
        }
        break;
    case OMNIDESK_PURGE:
    case OMNIDESK_PURGE_LEGACY:
        if (resp->class == OMNIDESK_OK) {
            d->purge_done = 1;
        } else if (resp->class == OMNIDESK_NOT_FOUND) {
            if (resp->endpoint == OMNIDESK_PURGE && !d->searched) {
                /* A stale id: look the customer up once before calling it gone. */
                d->sync.omnidesk_id = 0;
            } else {
                d->purge_gone = 1;
            }
        } else {
            d->current_failed = 1;
        }
        break;
    case OMNIDESK_PROBE:
        break;
    }
}
