/*
 * delivery: the per-customer state machine. See delivery.h.
 *
 * Every decision is taken from what is known now (plans + sync), never from a script fixed at
 * claim time, so an answer that changes what we know (a create refused because the customer
 * exists, an update answered 404 because it was deleted at Omnidesk) changes the next step.
 */
#include "delivery.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "backoff.h"
#include "log.h"
#include "textcut.h"
#include "validate.h"


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

/* ---- the state ---- */

static const char *const state_names[DELIVERY_STATE_COUNT] = {
    [DELIVERY_STATE_NEXT] = "next",
    [DELIVERY_STATE_LOOKUP] = "lookup",
    [DELIVERY_STATE_CREATE] = "create",
    [DELIVERY_STATE_UPDATE] = "update",
    [DELIVERY_STATE_ADD_CHANNEL] = "add_channel",
    [DELIVERY_STATE_RESERVE] = "reserve",
    [DELIVERY_STATE_PURGE] = "purge",
    [DELIVERY_STATE_DONE] = "done",
    [DELIVERY_STATE_FAILED] = "failed",
    [DELIVERY_STATE_STOPPED] = "stopped",
    [DELIVERY_STATE_HELD] = "held",
    [DELIVERY_STATE_FINISHED] = "finished",
};

const char *delivery_state_name(enum delivery_state state)
{
    return (unsigned)state < DELIVERY_STATE_COUNT ? state_names[state] : "?";
}

/* Every change of state goes through here (as curl's multi.c mstate()), traced at debug level
 * with the row the current plan sends. */
static void set_state(struct delivery *d, enum delivery_state state)
{
    if (d->state == state)
        return;
    long long id = d->current < d->nplans ? d->plans[d->current].sent_id
                   : d->nrows > 0         ? d->rows[0].id
                                          : 0;
    log_debug("delivery state outbox_id=%lld from=%s to=%s", id, delivery_state_name(d->state),
              delivery_state_name(state));
    d->state = state;
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

static void sync_load(struct delivery_sync *s, const struct outbox_sync *from)
{
    if (from == NULL)
        return;
    s->created = from->created;
    s->create_unknown = from->create_unknown;
    s->omnidesk_id = from->omnidesk_id;
    for (size_t i = 0; i < from->nchannels; i++)
        sync_add(s, from->channels[i]);
}

/* A copy of what is known now, for an outcome; NULL when out of memory. */
static struct outbox_sync *sync_copy(const struct delivery_sync *s, int reset)
{
    struct outbox_sync *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->reset = reset;
    c->created = s->created;
    c->create_unknown = s->create_unknown;
    c->omnidesk_id = s->omnidesk_id;
    c->channels = s->nchannels ? calloc(s->nchannels, sizeof(*c->channels)) : NULL;
    for (size_t i = 0; c->channels != NULL && i < s->nchannels; i++) {
        if ((c->channels[i] = strdup(s->channels[i])) != NULL)
            c->nchannels++;
    }
    return c;
}

static void start_plan(struct delivery *d);

/* ---- set up ---- */

/* snprintf(out, outlen, "%s", s) without the format machinery (per row). outlen > 0. */
static void copy_into(char *out, size_t outlen, const char *s)
{
    size_t n = strlen(s);

    if (n > outlen - 1)
        n = outlen - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

#define END_OF(member) (offsetof(struct delivery, member) + sizeof(((struct delivery *)0)->member))

static void zero_range(struct delivery *d, size_t from, size_t to)
{
    memset((char *)d + from, 0, to - from);
}

int delivery_init(struct delivery *d, const struct config *cfg, const struct config_source *src,
                  long long brand_id, const char *primary_id, struct delivery_row *rows,
                  size_t nrows, const struct outbox_sync *sync)
{
    /* Zero everything but the three arrays (30 kB, a memset that cost 5 % of the daemon's CPU
     * per row): rows[0..nrows) are copied below, mapping fills each plan it makes, add_outcome
     * clears each outcome it adds, and nothing reads past nrows, nplans or noutcomes. */
    zero_range(d, 0, offsetof(struct delivery, rows));
    zero_range(d, END_OF(rows), offsetof(struct delivery, plans));
    zero_range(d, END_OF(plans), offsetof(struct delivery, outcomes));
    zero_range(d, END_OF(outcomes), sizeof(*d));
    d->cfg = cfg;
    d->source = src;
    copy_into(d->source_name, sizeof(d->source_name), src->name);
    d->brand_id = brand_id;
    d->send_brand = brand_id > 0 ? brand_id : cfg->brand_id;
    snprintf(d->brand_text, sizeof(d->brand_text), "%lld", d->send_brand);
    d->primary_id = strdup(primary_id);
    d->started = now_epoch();
    if (nrows > DELIVERY_MAX_ROWS)
        nrows = DELIVERY_MAX_ROWS;
    memcpy(d->rows, rows, nrows * sizeof(rows[0]));
    d->nrows = nrows;
    sync_load(&d->sync, sync);
    if (d->primary_id == NULL)
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
    free(d->attempts);
    d->attempts = NULL;
    d->nattempts = d->attempts_cap = 0;
    for (size_t i = 0; i < d->noutcomes; i++)
        delivery_outcome_free(&d->outcomes[i]);
    d->noutcomes = 0;
    free(d->primary_id);
    d->primary_id = NULL;
}

/* ---- outcomes ---- */

/* Starts plan d->current (or nothing past the last): fresh progress. */
static void start_plan(struct delivery *d)
{
    d->verify_first = 0;
    d->searched = d->created_now = d->create_rejected = d->update_done = d->recreated = 0;
    d->purge_reserved = d->purge_done = 0;
    d->channels_added = 0;
    d->last_status = 0;
    d->last_error[0] = '\0';
    d->retry_after_ms = -1;
    d->stop = DELIVERY_STOP_NONE;
    d->nattempts = 0;
    if (d->current >= d->nplans)
        return;
    set_state(d, DELIVERY_STATE_NEXT);
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

/* The operation an outcome of the current plan stands for, as a metrics label. */
static enum metrics_op outcome_op(const struct delivery *d)
{
    if (d->current >= d->nplans)
        return METRICS_OP_NONE;
    const struct mapping_plan *p = &d->plans[d->current];
    switch (p->kind) {
    case MAPPING_PURGE:
        return METRICS_OP_PURGE;
    case MAPPING_TRUNCATE:
        return METRICS_OP_TRUNCATE;
    case MAPPING_NOTHING:
        return METRICS_OP_NONE;
    default:
        if (d->created_now)
            return METRICS_OP_CREATE;
        if (d->update_done)
            return METRICS_OP_UPDATE;
        if (d->channels_added > 0 && d->sync.created)
            return METRICS_OP_ADD_CHANNEL;
        return d->sync.created ? METRICS_OP_UPDATE : METRICS_OP_CREATE;
    }
}

static char *copy_text(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/*
 * Appends the outcome of rows[first..last] with `status`, spending an attempt or not; the
 * caller fills in what else it says (result, error, delay, sync). It carries the current plan's
 * requests. Never NULL: an outcome that cannot be allocated in full still names its rows if it
 * can (a row it cannot name stays leased and is delivered again after its lease).
 */
static struct delivery_outcome *add_outcome(struct delivery *d, size_t first, size_t last,
                                            enum outbox_status status, int spend)
{
    static struct delivery_outcome lost; /* never recorded: only when the bound is wrong */
    if (d->noutcomes >= DELIVERY_MAX_OUTCOMES) {
        log_error("too many outcomes for one delivery outbox_id=%lld", d->rows[last].id);
        delivery_outcome_free(&lost);
        return &lost;
    }
    struct delivery_outcome *o = &d->outcomes[d->noutcomes++];
    memset(o, 0, sizeof(*o));
    o->status = status;
    o->op = outcome_op(d);
    o->source = d->source_name;
    o->brand_id = d->brand_id;
    o->primary_id = d->primary_id;
    o->rows = malloc((last - first + 1) * sizeof(*o->rows));
    for (size_t i = first; o->rows != NULL && i <= last && i < d->nrows; i++)
        o->rows[o->nrows++] = d->rows[i].id;
    o->sent_id = d->rows[last].id;
    o->first_created = d->rows[first].created_epoch;
    o->spend = spend;
    if (d->nattempts > 0 && (o->attempts = malloc(d->nattempts * sizeof(*o->attempts))) != NULL) {
        memcpy(o->attempts, d->attempts, d->nattempts * sizeof(*o->attempts));
        o->nattempts = d->nattempts;
    }
    return o;
}

/* The outcome says what is known of the customer now (reset: it is gone). */
static void with_sync(const struct delivery *d, struct delivery_outcome *o, int reset)
{
    o->sync = sync_copy(&d->sync, reset);
}

/*
 * The attempts already spent on what the plan sends: those of its newest row, which carries the
 * customer's latest state. Older rows coalesced into it ride along; taking their count instead
 * made a change captured a minute ago fail with a row that had been retrying for hours (the
 * soak's finding: fresh email and telephone never sent).
 */
static int plan_attempts(const struct delivery *d, const struct mapping_plan *p)
{
    const struct delivery_row *newest = &d->rows[p->first];
    for (size_t i = p->first + 1; i <= p->last; i++) {
        if (d->rows[i].id > newest->id)
            newest = &d->rows[i];
    }
    return newest->attempts;
}

/* Releases plans from `from` on, and rows beyond the planned ones, spending no attempt. */
static void release_rest(struct delivery *d, size_t from, long long delay_ms)
{
    if (from < d->nplans) {
        struct delivery_outcome *o =
            add_outcome(d, d->plans[from].first, d->plans[d->nplans - 1].last, OUTBOX_RETRY, 0);
        o->delay_ms = delay_ms;
    }
    if (d->nplanned_rows < d->nrows)
        add_outcome(d, d->nplanned_rows, d->nrows - 1, OUTBOX_RETRY, 0);
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

/* Whether rows[first..] hold one a dead process held (its lease ran out with no outcome). */
static int holds_orphan(const struct delivery *d, size_t first)
{
    for (size_t i = first; i < d->nrows; i++) {
        if (d->rows[i].orphaned)
            return 1;
    }
    return 0;
}

/* The current plan stopped early (transient error or release). */
static void finish_stopped(struct delivery *d, const struct mapping_plan *p)
{
    long long delay = d->retry_after_ms > 0 ? d->retry_after_ms : 0;
    struct delivery_outcome *o;
    /* The lookup this plan owed first (a retry, rows a dead process held, an unknown create) has
     * not happened: sync_state keeps it owed, whatever comes of the rows. A release spends no
     * attempt and clears the lease, so the rows, this plan's and the later ones', come back with
     * nothing else that says so (the soak's finding: a lookup answered 429, then the channel a
     * dead process had added was added again); a replay resets a failed row's attempts. */
    if (!d->searched && (d->verify_first || holds_orphan(d, p->first)))
        d->sync.create_unknown = 1;
    if (d->stop == DELIVERY_STOP_TRANSIENT) {
        int attempts = plan_attempts(d, p) + 1;
        if (attempts >= d->cfg->max_attempts) {
            char error[700];
            textcut_printf(error, sizeof(error), "gave up after %d attempts: %s", attempts,
                     d->last_error);
            log_warn("delivery failed: attempts exhausted outbox_id=%lld primary_id=%s "
                     "attempts=%d status=%d",
                     p->sent_id, d->primary_id, attempts, d->last_status);
            o = add_outcome(d, p->first, p->last, OUTBOX_FAILED, 1);
            o->error = copy_text(error);
            o->http_status = d->last_status;
            with_sync(d, o, 0);
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
        o = add_outcome(d, p->first, p->last, OUTBOX_RETRY, 1);
        o->error = copy_text(d->last_error);
        o->http_status = d->last_status;
        o->delay_ms = delay;
        with_sync(d, o, 0);
    } else {
        o = add_outcome(d, p->first, p->last, OUTBOX_RETRY, 0);
        o->delay_ms = delay;
        with_sync(d, o, 0);
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

static void search(struct delivery *d, const struct mapping_plan *p, struct delivery_request *r)
{
    begin_request(r, OMNIDESK_SEARCH);
    add_field(r, "primary_id", p->primary_id);
    add_field(r, "brand_id", d->brand_text);
    set_state(d, DELIVERY_STATE_LOOKUP);
}

static const char *nonempty(const char *s)
{
    return s != NULL && *s != '\0' ? s : NULL;
}

static void create(struct delivery *d, const struct mapping_plan *p, struct delivery_request *r)
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
    set_state(d, DELIVERY_STATE_CREATE);
}

static void update(struct delivery *d, const struct mapping_plan *p, struct delivery_request *r)
{
    if (nonempty(p->firstname) == NULL || nonempty(p->lastname) == NULL) {
        textcut_printf(d->last_error, sizeof(d->last_error),
                 "updateCustomer requires firstname and lastname; the CRM row has %s",
                 nonempty(p->firstname) ? "no lastname" : "no firstname");
        d->last_status = 0;
        set_state(d, DELIVERY_STATE_FAILED);
        return;
    }
    begin_request(r, OMNIDESK_UPDATE);
    add_field(r, "externalPrimaryID", p->primary_id);
    add_field(r, "brandID", d->brand_text);
    add_field(r, "firstname", p->firstname);
    add_field(r, "lastname", p->lastname);
    /* Full state: a custom field emptied in the CRM is emptied at Omnidesk. */
    for (size_t i = 0; i < p->ncustom; i++)
        add_field(r, p->custom[i].param, p->custom[i].value ? p->custom[i].value : "");
    set_state(d, DELIVERY_STATE_UPDATE);
}

/* From NEXT, an upsert: what is known of the customer decides the next request or the end. */
static void next_upsert(struct delivery *d, const struct mapping_plan *p,
                        struct delivery_request *r)
{
    if (d->verify_first && !d->searched) {
        search(d, p, r);
        return;
    }
    if (!d->sync.created) {
        if (d->create_rejected && d->searched) {
            /* Refused, and not there: the create's own answer is the reason to report. */
            textcut_printf(d->last_error, sizeof(d->last_error), "%s", d->reject_error);
            d->last_status = d->reject_status;
            set_state(d, DELIVERY_STATE_FAILED);
        } else if (d->create_rejected) {
            search(d, p, r);
        } else {
            create(d, p, r);
        }
        return;
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
    if (need_update && !d->update_done && !d->created_now) {
        update(d, p, r);
        return;
    }
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
        set_state(d, DELIVERY_STATE_ADD_CHANNEL);
        return;
    }
    set_state(d, DELIVERY_STATE_DONE);
}

/* From NEXT, a purge: the guard first, then the purge by id (a lookup finds the id). */
static void next_purge(struct delivery *d, const struct mapping_plan *p, struct delivery_request *r)
{
    if (d->cfg->max_purges_per_hour > 0 && !d->purge_reserved) {
        set_state(d, DELIVERY_STATE_RESERVE);
        return;
    }
    if (d->cfg->purge_endpoint == CONFIG_PURGE_LEGACY) {
        begin_request(r, OMNIDESK_PURGE_LEGACY);
        add_field(r, "external_id", p->primary_id);
        add_field(r, "brand_id", d->brand_text);
        set_state(d, DELIVERY_STATE_PURGE);
        return;
    }
    if (d->sync.omnidesk_id <= 0) {
        if (d->searched)
            set_state(d, DELIVERY_STATE_DONE); /* not there: already gone */
        else
            search(d, p, r);
        return;
    }
    begin_request(r, OMNIDESK_PURGE);
    r->customer_id = d->sync.omnidesk_id;
    set_state(d, DELIVERY_STATE_PURGE);
}

static void count_result(const struct delivery *d, const struct mapping_plan *p, char *out,
                         size_t outlen)
{
    size_t added = 0;
    (void)p;
    /* channels_added walked every planned channel; count those the request log shows sent. */
    for (size_t i = 0; i < d->nattempts; i++) {
        if (d->attempts[i].endpoint == OMNIDESK_ADD_CHANNEL && d->attempts[i].class == OMNIDESK_OK)
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
    size_t n = d->noutcomes;
    unsigned sent = sent_transliterated(d, p);
    int names = (sent & MAPPING_NAME_FIRSTNAME ? 1 : 0) + (sent & MAPPING_NAME_LASTNAME ? 1 : 0);
    if (names > 0 && n > 0)
        d->outcomes[n - 1].names_transliterated = names;
}

/* DONE: the plan's outcome, and on to the next plan. */
static void record_done(struct delivery *d, const struct mapping_plan *p)
{
    char result[200];
    struct delivery_outcome *o;
    if (p->kind == MAPPING_PURGE) {
        snprintf(result, sizeof(result), "%s",
                 d->purge_done ? "purged" : "already gone at Omnidesk");
        sync_forget(&d->sync);
        log_info("customer purged outbox_id=%lld primary_id=%s result=\"%s\"", p->sent_id,
                 d->primary_id, result);
        o = add_outcome(d, p->first, p->last, OUTBOX_DONE, 1);
        o->result = copy_text(result);
        o->http_status = d->last_status;
        o->purged = 1;
        with_sync(d, o, 1);
    } else {
        count_result(d, p, result, sizeof(result));
        note_transliterated(d, p, result, sizeof(result));
        if (p->primary_id_changed)
            warn_primary_id_changed(d, p);
        log_info("delivered outbox_id=%lld primary_id=%s rows=%zu result=\"%s\"", p->sent_id,
                 d->primary_id, p->last - p->first + 1, result);
        o = add_outcome(d, p->first, p->last, OUTBOX_DONE, 1);
        o->result = copy_text(result);
        o->http_status = d->last_status;
        with_sync(d, o, 0);
        count_transliterated(d, p);
    }
    advance(d);
}

/* FAILED: a permanent answer (or a row the API cannot take); on to the next plan. */
static void record_failed(struct delivery *d, const struct mapping_plan *p)
{
    log_warn("delivery failed outbox_id=%lld primary_id=%s status=%d", p->sent_id, d->primary_id,
             d->last_status);
    struct delivery_outcome *o = add_outcome(d, p->first, p->last, OUTBOX_FAILED, 1);
    o->error = copy_text(d->last_error);
    o->http_status = d->last_status;
    with_sync(d, o, 0);
    advance(d);
}

/* A plan with nothing to send: its outcome at once. */
static void record_unsent(struct delivery *d, const struct mapping_plan *p)
{
    struct delivery_outcome *o;
    switch (p->kind) {
    case MAPPING_TRUNCATE:
        log_warn("TRUNCATE of the CRM table seen: no purges sent; run omnisync backfill to "
                 "resync outbox_id=%lld source=%s",
                 p->sent_id, d->source_name);
        set_state(d, DELIVERY_STATE_DONE);
        o = add_outcome(d, p->first, p->last, OUTBOX_DONE, 1);
        o->result = copy_text("truncate: no purges sent; resync with omnisync backfill");
        break;
    case MAPPING_NOTHING:
        set_state(d, DELIVERY_STATE_DONE);
        o = add_outcome(d, p->first, p->last, OUTBOX_DONE, 1);
        o->result = copy_text("nothing to send (delete ignored: on_delete = ignore)");
        break;
    case MAPPING_INVALID:
    default:
        log_warn("row not sent: %s outbox_id=%lld primary_id=%s", p->log_error, p->sent_id,
                 d->primary_id);
        set_state(d, DELIVERY_STATE_FAILED);
        o = add_outcome(d, p->first, p->last, OUTBOX_FAILED, 1);
        o->error = copy_text(p->error);
        break;
    }
    advance(d);
}

/*
 * The loop of the state machine: ends of plans are recorded here, and from NEXT the plan's kind
 * and what is known choose the next request. A request state seen here (the dispatcher asks
 * again without an answer) decides afresh, as NEXT does.
 */
enum delivery_next delivery_next(struct delivery *d, struct delivery_request *r)
{
    while (d->current < d->nplans) {
        struct mapping_plan *p = &d->plans[d->current];
        switch (d->state) {
        case DELIVERY_STATE_STOPPED:
            finish_stopped(d, p);
            continue;
        case DELIVERY_STATE_DONE:
            record_done(d, p);
            continue;
        case DELIVERY_STATE_FAILED:
            record_failed(d, p);
            continue;
        default:
            break;
        }
        switch (p->kind) {
        case MAPPING_TRUNCATE:
        case MAPPING_NOTHING:
        case MAPPING_INVALID:
            record_unsent(d, p);
            continue;
        case MAPPING_UPSERT:
            next_upsert(d, p, r);
            break;
        case MAPPING_PURGE:
        default:
            next_purge(d, p, r);
            break;
        }
        switch (d->state) {
        case DELIVERY_STATE_LOOKUP:
        case DELIVERY_STATE_CREATE:
        case DELIVERY_STATE_UPDATE:
        case DELIVERY_STATE_ADD_CHANNEL:
        case DELIVERY_STATE_PURGE:
            return DELIVERY_SEND;
        case DELIVERY_STATE_RESERVE:
            return DELIVERY_RESERVE_PURGE;
        default:
            continue; /* DONE or FAILED: recorded at the top */
        }
    }
    if (d->state != DELIVERY_STATE_FINISHED) {
        release_rest(d, d->nplans, 0);
        set_state(d, DELIVERY_STATE_FINISHED);
    }
    return DELIVERY_DONE;
}

void delivery_on_reservation(struct delivery *d, int granted)
{
    struct mapping_plan *p = &d->plans[d->current];
    if (granted) {
        d->purge_reserved = 1;
        set_state(d, DELIVERY_STATE_NEXT);
        return;
    }
    char result[200];
    snprintf(result, sizeof(result),
             "held by the purge guard (max_purges_per_hour = %lld); release with omnisync "
             "purges release",
             d->cfg->max_purges_per_hour);
    log_warn("purge held by the guard outbox_id=%lld primary_id=%s max_per_hour=%lld", p->sent_id,
             d->primary_id, d->cfg->max_purges_per_hour);
    set_state(d, DELIVERY_STATE_HELD);
    struct delivery_outcome *o = add_outcome(d, p->first, p->last, OUTBOX_HELD, 0);
    o->result = copy_text(result);
    release_rest(d, d->current + 1, 0);
}

void delivery_release(struct delivery *d, const char *why)
{
    if (d->current >= d->nplans)
        return;
    d->stop = DELIVERY_STOP_RELEASE;
    textcut_printf(d->last_error, sizeof(d->last_error), "%s", why);
    set_state(d, DELIVERY_STATE_STOPPED);
}

static void log_attempt(struct delivery *d, const struct omnidesk_response *resp)
{
    if (d->nattempts == d->attempts_cap) {
        size_t cap = d->attempts_cap ? d->attempts_cap * 2 : 4;
        struct outbox_attempt *more = realloc(d->attempts, cap * sizeof(*more));
        if (more == NULL)
            return; /* the request goes unlogged in omnisync.delivery_attempt; delivery goes on */
        d->attempts = more;
        d->attempts_cap = cap;
    }
    struct outbox_attempt *a = &d->attempts[d->nattempts++];
    a->at = now_epoch() - resp->seconds;
    a->endpoint = resp->endpoint;
    a->class = resp->class;
    a->http_status = resp->http_status > 0 ? (int)resp->http_status : 0;
    a->duration_ms = (int)(resp->seconds * 1000);
    copy_into(a->error, sizeof(a->error), resp->error);
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
        mapping_key(key, sizeof(key), type, value);
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

/* A transient answer or a release: the plan stops, and delivery_next() records why. */
static void stop(struct delivery *d, enum delivery_stop how)
{
    d->stop = how;
    set_state(d, DELIVERY_STATE_STOPPED);
}

void delivery_on_response(struct delivery *d, const struct omnidesk_response *resp)
{
    struct mapping_plan *p = &d->plans[d->current];
    log_attempt(d, resp);
    d->last_status = (int)resp->http_status;
    textcut_printf(d->last_error, sizeof(d->last_error), "%s", resp->error);

    if (resp->class == OMNIDESK_TRANSIENT) {
        /* A create or a channel add may have been applied although its answer was lost, cut,
         * late or a 5xx (a 429 was refused before anything happened). The flag goes to
         * sync_state with the outcome, whatever happens to the rows next (a retry, or a replay
         * after they failed, which resets their attempts): the next delivery looks the customer
         * up first. */
        if ((resp->endpoint == OMNIDESK_CREATE || resp->endpoint == OMNIDESK_ADD_CHANNEL) &&
            resp->http_status != 429)
            d->sync.create_unknown = 1;
        d->retry_after_ms = resp->retry_after_ms;
        /* A 429 says we were too fast, not that this row is at fault. */
        stop(d, resp->http_status == 429 ? DELIVERY_STOP_RELEASE : DELIVERY_STOP_TRANSIENT);
        return;
    }
    if (resp->class == OMNIDESK_AUTH) {
        stop(d, DELIVERY_STOP_RELEASE);
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
            stop(d, DELIVERY_STOP_TRANSIENT); /* a 4xx to a lookup: retry rather than guess */
            return;
        }
        set_state(d, DELIVERY_STATE_NEXT);
        break;
    case OMNIDESK_CREATE:
        if (resp->class == OMNIDESK_OK) {
            d->sync.created = 1;
            d->sync.create_unknown = 0;
            d->created_now = 1;
            char key[1100];
            if (p->email) {
                mapping_key(key, sizeof(key), "email", p->email);
                sync_add(&d->sync, key);
            }
            if (p->telephone && strlen(p->telephone) >= VALIDATE_TELEPHONE_MIN_CREATE) {
                mapping_key(key, sizeof(key), "telephone", p->telephone);
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
        set_state(d, DELIVERY_STATE_NEXT);
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
            /* Permanent: delivery_next() reports the failure. */
            d->create_rejected = 0;
            set_state(d, DELIVERY_STATE_FAILED);
            break;
        }
        set_state(d, DELIVERY_STATE_NEXT);
        break;
    case OMNIDESK_PURGE:
    case OMNIDESK_PURGE_LEGACY:
        if (resp->class == OMNIDESK_OK) {
            d->purge_done = 1;
            set_state(d, DELIVERY_STATE_DONE);
        } else if (resp->class == OMNIDESK_NOT_FOUND) {
            if (resp->endpoint == OMNIDESK_PURGE && !d->searched) {
                /* A stale id: look the customer up once before calling it gone. */
                d->sync.omnidesk_id = 0;
                set_state(d, DELIVERY_STATE_NEXT);
            } else {
                set_state(d, DELIVERY_STATE_DONE); /* already gone */
            }
        } else {
            set_state(d, DELIVERY_STATE_FAILED);
        }
        break;
    case OMNIDESK_PROBE:
        break;
    }
}
