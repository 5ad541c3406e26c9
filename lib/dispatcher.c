/*
 * dispatcher: claim, pipeline, pacing. See dispatcher.h.
 *
 * Callback discipline: a delivery is only ever touched from the loop, by one of: the claim
 * result (creates it), pump() (sends its next request), the HTTP answer or the reservation
 * answer (feeds it, then pump()). It is freed in pump() once it says DONE, never inside the
 * omnidesk callback chain that is still using its request.
 */
#include "dispatcher.h"

#include <inttypes.h>
#include <sanitizer/asan_interface.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "backoff.h"
#include "log.h"
#include "outbox.h"

#define AUTH_PROBE_MIN_MS 5000
#define AUTH_PROBE_MAX_MS 300000

static void pump(struct dispatcher *d);
static void claim(struct dispatcher *d);
static void arm_wake(struct dispatcher *d, uint64_t delay_ms);

static uint64_t now_ms(struct dispatcher *d)
{
    return uv_now(d->loop);
}

static double epoch_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

uint64_t dispatcher_lease_ms(const struct config *cfg)
{
    /* Longer than any request can take, renewed at a third of it while rows are held. */
    return (uint64_t)cfg->timeout_ms * 3 + 5000;
}

int dispatcher_ready_api(const struct dispatcher *d)
{
    return !d->auth_paused;
}

uint64_t dispatcher_api_pause_ms(const struct dispatcher *d)
{
    uint64_t now = uv_now(d->loop);

    return d->rate.paused_until_ms > now ? d->rate.paused_until_ms - now : 0;
}

void dispatcher_end_api_pause(struct dispatcher *d, const char *why)
{
    if (dispatcher_api_pause_ms(d) == 0)
        return;
    d->rate.paused_until_ms = 0;
    log_info("the pause asked by the API (Retry-After) ended early by %s; requests resume", why);
    dispatcher_wake(d);
}

unsigned dispatcher_in_flight(const struct dispatcher *d)
{
    return d->nactive;
}

/* ---- queue ---- */

static void push_back(struct dispatcher *d, struct delivery *dl)
{
    queue_insert_tail(&d->ready, &dl->node);
    d->nready++;
}

static void push_front(struct dispatcher *d, struct delivery *dl)
{
    queue_insert_head(&d->ready, &dl->node);
    d->nready++;
}

static struct delivery *pop(struct dispatcher *d)
{
    struct queue *q = queue_pop(&d->ready);
    if (q == NULL)
        return NULL;
    d->nready--;
    return queue_data(q, struct delivery, node);
}

/*
 * Claim scheduling. Claims come in batches. A claim is a transaction with its WAL flush and about
 * a millisecond of the server's CPU however few customers it returns, and topping up after every
 * finished delivery made that one claim per delivered row at one request slot (bench/drain). So
 * the dispatcher holds up to a high-water mark of customers (claimed, waiting for a slot or in
 * flight): max_in_flight to keep every slot busy plus up to batch_size waiting, and claims again
 * when it holds no more than the low-water mark, half a batch below it. Each claim then brings at
 * least half a batch, and the half batch still waiting keeps the slots busy while the claim is on
 * its way (at 5 ms per request and 64 slots, 50 customers last 4 ms; a claim takes 1-3 ms). A
 * wake-up (NOTIFY, poll, reconnect) claims below the high-water mark when no rows are known to be
 * due, so a lone change is not kept waiting for the pipeline to empty (see claim_wanted).
 *
 * Claiming after every recorded outcome (it may make its customer's later rows due) was one
 * claim per delivered row at one slot, most finding nothing: 1,120 per 1,000 rows at L = 100 ms.
 * A plain `done` makes nothing due by itself: the customer's rows that were due came with the
 * delivery, and a row committed since rang. So besides a wake-up, these say rows may be due
 * (more_due), each something no wake-up announces:
 * - the claim came back full (it took `limit` customers: more may wait), or left captured rows
 *   in omnisync.capture (outbox_claim_left: it moves at most 2,000, and their ring was heard);
 * - the claim passed over rows behind rows this process holds (outbox_claim_passed_over: a
 *   change committed while its customer was in flight, which the wake-up's claim found blocked):
 *   each recorded outcome may release them, so every outcome claims until a claim passes none
 *   over; and when outcomes were recorded while that claim ran, it claims again at once;
 * - a recorded outcome that is not a plain `done` (a failure releases the customer's later rows,
 *   released rows are due again), or of a delivery that came with DELIVERY_MAX_ROWS rows (the
 *   claim may have left more of that customer);
 * - a retry outcome's wait running out (the wake timer, armed once it is recorded).
 * A row that becomes due otherwise (another process's lease running out) waits for the poll.
 * A poll tick while customers wait for a slot (more held than max_in_flight) claims once none
 * waits (poll_pending): what it finds would queue behind them anyway, and a claim each tick
 * through a held backlog was most of PostgreSQL's CPU per row left at one slot and L = 100 ms
 * (bench/drain: an empty claim walks the held rows, ~1 ms a tick, ten rows a second).
 *
 * Claims that look. A claim that may move first looks whether omnisync.capture holds a row, and
 * that table has no index (the CRM would pay for one): the look reads every page the last moves
 * emptied until a vacuum gives them back (service.c, vacuum_capture). After a move of 20,000
 * rows that was 0.35 ms a claim, 6 us a delivered row at 64 slots (bench/drain STATEMENTS=1);
 * after 1,000,000, about 20 ms a claim until that vacuum. A capture's commit rings, or commits
 * close enough to a ring for the trailing look 50 ms after it (service.c); so only the claim of a
 * wake-up (ring, trailing look, poll, reconnect) looks, and the one after a claim that left
 * captured rows or failed (capture_due). The refills between them take what is already in the
 * outbox. A transaction still open at the trailing look waits for the next ring or the poll, as
 * it did for an idle daemon before (sql/trigger_template.sql, the doorbell).
 */

/*
 * The recorder's linger (recorder.h): plain `done` outcomes wait up to this long, or until this
 * many are queued, to share one record_outcomes transaction. At one request slot each outcome
 * was a transaction of its own (bench/drain: ~0.3 ms of PostgreSQL's CPU per row, at L = 100 ms
 * ten a second). The time bound is what a slow flow pays: at ten outcomes a second a 1 s linger
 * wrote ten a transaction, and those writes were most of PostgreSQL's CPU per row left at
 * L = 100 ms, M = 1 (bench/drain STATEMENTS=1: record_outcomes 2.3 ms a call of ten, woken cold
 * once a second); 5 s gathers 50. The rows stay leased meanwhile (the lease, timeout_ms * 3 +
 * 5 s, is renewed every third of it while the recorder is not idle). Outcomes a claim waits for
 * skip it (finish, on_claimed, claim), as do drain, reload and shutdown.
 */
#define DISPATCHER_LINGER_MS 5000
#define DISPATCHER_LINGER_MAX 64

/* Customers waiting for a slot, at most, whatever batch_size says: a delivery takes ~30 KB plus
 * its rows' payloads, and this many keep even 1,024 slots fed. */
#define DISPATCHER_MAX_AHEAD 1000

static unsigned held(const struct dispatcher *d)
{
    return d->nready + d->nactive;
}

static unsigned ahead(const struct dispatcher *d)
{
    long long n = d->cfg->batch_size;
    return n > DISPATCHER_MAX_AHEAD ? DISPATCHER_MAX_AHEAD : (unsigned)n;
}

static unsigned high_water(const struct dispatcher *d)
{
    return (unsigned)d->cfg->max_in_flight + ahead(d);
}

static unsigned low_water(const struct dispatcher *d)
{
    return (unsigned)d->cfg->max_in_flight + ahead(d) / 2;
}

/*
 * Whether a claim is wanted now (not whether it is allowed: see claim()). While rows may be due
 * in the outbox (more_due), claims wait for the low-water mark, wake-ups included: a claim takes
 * the oldest due rows, so a ring's own row is behind those anyway, and a claim per ring under
 * steady writes took the backlog a few rows at a time (262 claims instead of 68 for 800
 * customers in test_backlog_claimed_in_batches, a commit every 10 ms). When nothing is known to
 * be due, a wake-up claims at once: that is the lone change's latency. Below the low-water mark
 * both claim, so an idle daemon answers a ring as before.
 */
static int claim_wanted(const struct dispatcher *d)
{
    unsigned n = held(d);
    if (n >= high_water(d))
        return 0;
    if (d->more_due)
        return n <= low_water(d);
    if (d->wake_pending)
        return 1;
    return d->poll_pending && n <= (unsigned)d->cfg->max_in_flight;
}

static void maybe_closed(struct dispatcher *d);

static void maybe_drained(struct dispatcher *d)
{
    if (d->closing)
        return;
    if (d->draining && d->nready == 0 && d->nactive == 0 && !d->claiming &&
        recorder_idle(&d->recorder) && d->drained_cb != NULL) {
        void (*cb)(struct dispatcher *) = d->drained_cb;
        d->drained_cb = NULL;
        cb(d);
    }
}

/* ---- outcomes ---- */

static void on_recorded(struct recorder *r, size_t n, int dropped)
{
    struct dispatcher *d = r->data;
    (void)n;
    if (d->closing)
        return;
    /* Health says so: the database's own error may quote a value, so only the log has it. */
    if (dropped == RECORDER_DROPPED)
        snprintf(d->stats.last_error, sizeof(d->stats.last_error),
                 "the database refused to record delivery outcomes; their rows are delivered "
                 "again after their lease (see the log)");
    else if (dropped == RECORDER_REFUSED)
        snprintf(d->stats.last_error, sizeof(d->stats.last_error),
                 "the database refused the outcome of outbox row %lld; the row is marked failed "
                 "(see omnisync outbox show)",
                 r->refused_id);
    /* A dropped batch leaves the recorder idle too: a drain may be waiting for that. */
    maybe_drained(d);
    /* Rows may be due (see "Claim scheduling"). An outcome that leaves rows due (finish) is
     * recorded now or in a batch still to come: the flag stays until the recorder has written
     * everything it was given. A dropped or refused batch changes rows in ways only a claim
     * sees. Claims still wait for the low-water mark while a backlog is held: that claim finds
     * these rows too. */
    d->records++;
    if (d->due_on_record || d->passed_over || dropped != RECORDER_COMMITTED)
        d->more_due = 1;
    if (recorder_idle(&d->recorder)) {
        d->due_on_record = 0;
        if (d->retry_ms > 0)
            arm_wake(d, d->retry_ms);
        d->retry_ms = 0;
    }
    claim(d);
}

/* Metrics of one outcome: its op and result, how long the delivery took and how long the
 * oldest change it carried waited since its commit. Released rows (no attempt) are not counted. */
static void observe_outcome(struct dispatcher *d, const struct delivery *dl,
                            const struct delivery_outcome *o)
{
    if (d->metrics == NULL)
        return;
    enum metrics_result result;
    switch (o->status) {
    case OUTBOX_DONE:
        result = METRICS_RESULT_DONE;
        break;
    case OUTBOX_FAILED:
        result = METRICS_RESULT_FAILED;
        break;
    case OUTBOX_HELD:
        result = METRICS_RESULT_HELD;
        break;
    case OUTBOX_RETRY:
    default:
        if (!o->spend)
            return;
        result = METRICS_RESULT_RETRY;
        break;
    }
    metrics_count_delivery(d->metrics, o->op, result);
    double now = epoch_now();
    metrics_observe(&d->metrics->delivery_seconds, now - dl->started);
    if (result == METRICS_RESULT_DONE)
        metrics_observe(&d->metrics->commit_to_delivery_seconds, now - o->first_created);
}

static void count_outcomes(struct dispatcher *d, const struct delivery *dl)
{
    for (size_t i = 0; i < dl->noutcomes; i++) {
        const struct delivery_outcome *o = &dl->outcomes[i];
        observe_outcome(d, dl, o);
        if (o->status == OUTBOX_DONE) {
            d->stats.last_success_at = epoch_now();
            if (d->metrics != NULL && o->names_transliterated > 0)
                metrics_count_transliterated(d->metrics, dl->source_name,
                                             (unsigned long long)o->names_transliterated);
        } else if (o->status == OUTBOX_FAILED) {
            /* The row's error may quote a value: health names the row, not the error. */
            snprintf(d->stats.last_error, sizeof(d->stats.last_error),
                     "outbox row %lld failed; see omnisync outbox show", o->sent_id);
        }
    }
}

/* Whether rows of the delivery's customer may be due once its outcomes are recorded, rows no
 * wake-up will announce (see "Claim scheduling" above). */
static int leaves_rows_due(const struct delivery *dl)
{
    if (dl->nrows >= DELIVERY_MAX_ROWS)
        return 1;
    for (size_t i = 0; i < dl->noutcomes; i++) {
        if (dl->outcomes[i].status != OUTBOX_DONE)
            return 1;
    }
    return 0;
}

/*
 * A finished delivery's memory goes back to the dispatcher's spares (after delivery_free): a
 * steady drain would otherwise malloc and free 30 kB per customer, and glibc consolidates its
 * fast bins before every such malloc. Up to DISPATCHER_SPARE_MAX are kept, none once closing.
 * A spare is poisoned for AddressSanitizer (a no-op in other builds), so a use of a delivery
 * after its release is still reported as it was when it was freed.
 */
static void keep_spare(struct dispatcher *d, struct delivery *dl)
{
    if (dl == NULL)
        return;
    if (d->closing || d->nspare >= DISPATCHER_SPARE_MAX) {
        free(dl);
        return;
    }
    ASAN_POISON_MEMORY_REGION(dl, sizeof(*dl));
    d->spare[d->nspare++] = dl;
}

/* Memory for a delivery (uninitialised: delivery_init sets it up); NULL when out of memory. */
static struct delivery *take_spare(struct dispatcher *d)
{
    if (d->nspare == 0)
        return malloc(sizeof(struct delivery));
    struct delivery *dl = d->spare[--d->nspare];
    ASAN_UNPOISON_MEMORY_REGION(dl, sizeof(*dl));
    return dl;
}

static void free_spares(struct dispatcher *d)
{
    while (d->nspare > 0) {
        struct delivery *dl = d->spare[--d->nspare];
        ASAN_UNPOISON_MEMORY_REGION(dl, sizeof(*dl));
        free(dl);
    }
}

static void finish(struct dispatcher *d, struct delivery *dl)
{
    if (leaves_rows_due(dl))
        d->due_on_record = 1;
    for (size_t i = 0; i < dl->noutcomes; i++) {
        const struct delivery_outcome *o = &dl->outcomes[i];
        /* Due again after delay_ms from its record (on_recorded arms the wake-up then). */
        if (o->status == OUTBOX_RETRY && o->delay_ms > 0 &&
            (d->retry_ms == 0 || (uint64_t)o->delay_ms < d->retry_ms))
            d->retry_ms = (uint64_t)o->delay_ms;
    }
    count_outcomes(d, dl);
    /* Plain outcomes may wait for the recorder's linger, unless a claim needs them recorded:
     * rows that the last claim passed over wait for this customer's outcome, and rows left due
     * are found by the claim after the record (see "Claim scheduling"). */
    if (d->passed_over || d->due_on_record || d->draining)
        recorder_add_now(&d->recorder, dl->outcomes, dl->noutcomes);
    else
        recorder_add(&d->recorder, dl->outcomes, dl->noutcomes);
    delivery_free(dl);
    keep_spare(d, dl);
}

/* ---- HTTP ---- */

static enum breaker_outcome breaker_outcome_of(const struct omnidesk_response *r)
{
    switch (r->class) {
    case OMNIDESK_TRANSIENT:
        /* 429 is pacing, not failure. */
        return r->http_status == 429 ? BREAKER_SUCCESS : BREAKER_TRANSIENT;
    case OMNIDESK_OK:
    case OMNIDESK_NOT_FOUND:
        return BREAKER_SUCCESS;
    default:
        return BREAKER_PERMANENT;
    }
}

/*
 * The key was refused. Answers of requests that were in flight when it happened refuse it too:
 * they are one event, not several, so only the first enters the pause and only a refused probe
 * lengthens the wait before the next probe.
 */
static void enter_auth_pause(struct dispatcher *d, const struct omnidesk_response *r,
                             int from_probe)
{
    if (!d->auth_paused) {
        log_error("api key refused (%ld); delivery paused, no row fails meanwhile; fix the key "
                  "file and send SIGHUP (systemctl reload), or restart the service when the key "
                  "is a systemd credential",
                  r->http_status);
        d->auth_paused = 1;
        d->auth_probes = 0;
    } else if (!from_probe) {
        return;
    }
    snprintf(d->stats.last_error, sizeof(d->stats.last_error),
             "api key refused (HTTP %ld): delivery paused", r->http_status);
    struct backoff_policy p = {AUTH_PROBE_MIN_MS, AUTH_PROBE_MAX_MS};
    uint64_t delay = backoff_cap_ms(&p, ++d->auth_probes);
    d->auth_probe_at = now_ms(d) + delay;
    arm_wake(d, delay);
}

/* Records the answer's effect on the breaker and the pacing; logs state changes. */
static void observe(struct dispatcher *d, const struct omnidesk_response *r)
{
    uint64_t now = now_ms(d);
    if (r->class == OMNIDESK_AUTH) {
        enter_auth_pause(d, r, 0);
        return;
    }
    if (r->http_status == 429 || (r->http_status == 503 && r->retry_after_ms > 0)) {
        /* omnidesk has capped the server's word at [omnidesk] max_retry_after already. */
        uint64_t wait = r->retry_after_ms > 0 ? (uint64_t)r->retry_after_ms : 1000;
        ratelimit_pause_until(&d->rate, now + wait);
        if (r->retry_after_capped)
            log_warn("the API asked to wait longer than [omnidesk] max_retry_after (HTTP %ld); "
                     "pausing requests for the maximum instead retry_after_ms=%" PRIu64,
                     r->http_status, wait);
        else if (r->http_status == 429)
            log_warn("rate limited by the API (429); pausing requests retry_after_ms=%" PRIu64,
                     wait);
        /* Health and status show the pause; these words are what an operator reads. */
        snprintf(d->stats.last_error, sizeof(d->stats.last_error),
                 "the API asked to wait (HTTP %ld, Retry-After%s): requests paused for %" PRIu64
                 " s; omnisync resume or SIGHUP ends the pause",
                 r->http_status, r->retry_after_capped ? " capped at max_retry_after" : "",
                 (wait + 999) / 1000);
    }
    enum breaker_state before = breaker_get_state(&d->breaker);
    enum breaker_state after =
        breaker_record(&d->breaker, breaker_outcome_of(r), now, delivery_random());
    if (before != BREAKER_OPEN && after == BREAKER_OPEN) {
        /* Health shows this: the status only, never what the API echoed of a value. */
        snprintf(d->stats.last_error, sizeof(d->stats.last_error),
                 "the API is failing (last HTTP status %ld): circuit open", r->http_status);
        log_warn("most recent requests failed: circuit open; claiming stopped, probing in "
                 "%" PRIu64 " ms last_status=%ld",
                 breaker_next_probe_ms(&d->breaker) - now, r->http_status);
        arm_wake(d, breaker_next_probe_ms(&d->breaker) - now);
    } else if (before != BREAKER_CLOSED && after == BREAKER_CLOSED) {
        log_info("the API answers again: circuit closed; delivery resumes");
    }
}

static void on_response(struct omnidesk *client, const struct omnidesk_response *r)
{
    struct delivery *dl = r->data;
    struct dispatcher *d = dl->owner;
    (void)client;
    d->nactive--;
    if (d->closing) {
        /* An answer the closing client gave back: nobody records it any more; the row stays
         * leased and is delivered again after its lease. */
        delivery_free(dl);
        keep_spare(d, dl);
        maybe_closed(d);
        return;
    }
    if (d->metrics)
        metrics_count_request(d->metrics, (int)r->endpoint, (int)r->http_status);
    observe(d, r);
    delivery_on_response(dl, r);
    if (dbloop_state(d->db) != DBLOOP_READY)
        delivery_release(dl, "database unavailable");
    else if (d->auth_paused)
        delivery_release(dl, "api key refused");
    else if (r->class == OMNIDESK_TRANSIENT && !breaker_allows_delivery(&d->breaker))
        delivery_release(dl, "circuit open");
    else if (d->draining)
        delivery_release(dl, "shutting down");
    push_front(d, dl);
    pump(d);
}

static void on_probe(struct omnidesk *client, const struct omnidesk_response *r)
{
    struct dispatcher *d = r->data;
    (void)client;
    d->probe_in_flight = 0;
    if (d->closing) {
        maybe_closed(d);
        return;
    }
    if (d->metrics)
        metrics_count_request(d->metrics, (int)r->endpoint, (int)r->http_status);
    if (r->class == OMNIDESK_AUTH) {
        enter_auth_pause(d, r, 1);
        return;
    }
    if (d->auth_paused && r->class != OMNIDESK_AUTH) {
        log_info("api key accepted again; delivery resumes");
        d->auth_paused = 0;
        d->auth_probes = 0;
        d->stats.last_error[0] = '\0';
    }
    if (breaker_get_state(&d->breaker) == BREAKER_HALF_OPEN)
        observe(d, r);
    dispatcher_wake(d);
    if (!breaker_allows_delivery(&d->breaker))
        arm_wake(d, breaker_next_probe_ms(&d->breaker) - now_ms(d));
}

static void send_probe(struct dispatcher *d)
{
    if (d->probe_in_flight || d->draining)
        return;
    int rc = omnidesk_send(d->client, OMNIDESK_PROBE, 0, NULL, 0, on_probe, d);
    if (rc == 0)
        d->probe_in_flight = 1;
    else
        arm_wake(d, 1000);
}

/* ---- the purge guard ---- */

static void on_reserved(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct delivery *dl = arg;
    struct dispatcher *d = dl->owner;
    (void)db;
    d->nactive--;
    if (d->closing) {
        /* The work connection closed under it ("closing"); any reservation taken is released
         * with the lease. */
        delivery_free(dl);
        keep_spare(d, dl);
        maybe_closed(d);
        return;
    }
    if (res == NULL) {
        log_warn("purge guard query failed; the purge waits error=\"%s\"", err);
        delivery_release(dl, "database unavailable");
    } else {
        delivery_on_reservation(dl, outbox_reservation_granted(res));
    }
    push_front(d, dl);
    pump(d);
}

static int reserve_purge(struct dispatcher *d, struct delivery *dl)
{
    int rc = outbox_reserve_purge(d->db, dl->plans[dl->current].sent_id,
                                  d->cfg->max_purges_per_hour, d->process, on_reserved, dl);
    if (rc == 0)
        d->nactive++;
    return rc;
}

/* ---- the pipeline ---- */

static void pump(struct dispatcher *d)
{
    struct delivery *dl;
    while ((dl = pop(d)) != NULL) {
        /* Held customers are a batch ahead of the slots: once the circuit opens they must not
         * go out one by one to a failing API (nor spend their attempts there). */
        if (d->draining)
            delivery_release(dl, "shutting down");
        else if (d->auth_paused)
            delivery_release(dl, "api key refused");
        else if (!breaker_allows_delivery(&d->breaker))
            delivery_release(dl, "circuit open");
        struct delivery_request req;
        enum delivery_next next = delivery_next(dl, &req);
        if (next == DELIVERY_DONE) {
            finish(d, dl);
            continue;
        }
        if (next == DELIVERY_RESERVE_PURGE) {
            if (reserve_purge(d, dl) != 0) {
                delivery_release(dl, "database unavailable");
                push_front(d, dl);
            }
            continue;
        }
        uint64_t now = now_ms(d);
        if (omnidesk_in_flight(d->client) >= (unsigned)d->cfg->max_in_flight) {
            push_front(d, dl);
            break; /* a response will pump again */
        }
        if (!ratelimit_take(&d->rate, now)) {
            push_front(d, dl);
            arm_wake(d, ratelimit_wait_ms(&d->rate, now));
            break;
        }
        int rc = omnidesk_send(d->client, req.endpoint, req.customer_id, req.fields, req.nfields,
                               on_response, dl);
        if (rc != 0)
            ratelimit_refund(&d->rate); /* no request went out: its token is not spent */
        if (rc == OMNISYNC_EBUSY) {
            push_front(d, dl);
            break;
        }
        if (rc != 0) {
            log_error("cannot start a request error=\"%s\"", omnisync_strerror(rc));
            delivery_release(dl, "request could not start");
            push_front(d, dl);
            arm_wake(d, 1000);
            break;
        }
        d->nactive++;
    }
    if (d->draining)
        maybe_drained(d);
    else
        claim(d);
}

/* ---- claiming ---- */

static int parse_json(const char *text, struct json_object **out)
{
    *out = NULL;
    if (text == NULL)
        return 0;
    *out = json_tokener_parse(text);
    return *out ? 0 : -1;
}

struct claimed {
    struct outbox_row row;
};

static int by_customer(const void *a, const void *b)
{
    const struct outbox_row *x = &((const struct claimed *)a)->row;
    const struct outbox_row *y = &((const struct claimed *)b)->row;
    if (x->head_id != y->head_id)
        return x->head_id < y->head_id ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void start_delivery(struct dispatcher *d, const struct claimed *c, size_t n)
{
    const struct outbox_row *first = &c[0].row;
    const char *source = first->source;
    const struct config_source *src = config_find_source(d->cfg, source);
    struct delivery_row *rows = calloc(n, sizeof(*rows));
    struct delivery *dl = take_spare(d); /* delivery_init zeroes what it reads */
    if (src == NULL || rows == NULL || dl == NULL) {
        /* Leave the rows leased: they are claimed again after the lease, once memory is back. */
        log_error("cannot start a delivery: %s source=%s",
                  src ? "out of memory" : "source not configured", source);
        free(rows);
        keep_spare(d, dl);
        return;
    }
    size_t nrows = 0;
    for (size_t i = 0; i < n && nrows < DELIVERY_MAX_ROWS; i++) {
        const struct outbox_row *r = &c[i].row;
        struct delivery_row *row = &rows[nrows];
        row->id = r->id;
        snprintf(row->op, sizeof(row->op), "%s", r->op);
        row->attempts = r->attempts;
        row->orphaned = r->orphaned;
        row->created_epoch = r->created_epoch;
        if (parse_json(r->old_data, &row->old_data) != 0 ||
            parse_json(r->new_data, &row->new_data) != 0)
            log_error("unparsable payload outbox_id=%lld", row->id);
        nrows++;
    }
    struct outbox_sync sync;
    if (outbox_sync_parse(first->sync, &sync) != 0)
        log_error("unparsable sync state outbox_id=%lld", first->id);
    int rc = delivery_init(dl, d->cfg, src, first->brand_id, first->primary_id, rows, nrows, &sync);
    outbox_sync_clear(&sync);
    free(rows);
    if (rc != 0) {
        log_error("cannot start a delivery: out of memory outbox_id=%lld", first->id);
        keep_spare(d, dl);
        return;
    }
    dl->owner = d;
    push_back(d, dl);
}

/*
 * Moves apart. A claim that finds captured rows first moves up to OUTBOX_MOVE_MAX of them, in its
 * own transaction: a lone change costs one round trip. Behind a backlog of captured rows (a
 * burst, a bulk statement, the start after an outage) that made every claim a move, each reading
 * the whole capture table to pick its 2,000 rows (it has no index: the CRM would pay for one),
 * while the request slots ran dry behind it: bench/drain --backlog 1000000 delivered 40,000 rows
 * in its first 150 s. So once a claim says it left captured rows, the moves go to move_db, the
 * listener's connection, which otherwise only waits for notifications: move after move while each
 * fills its batch, a claim at the low-water mark after each, and meanwhile the claims do not move
 * (sql/012_moves_apart.sql). Off the claims' path a move can take DISPATCHER_MOVE_APART rows, a
 * fifth of the reads: the same drain took 250 s instead of 352 (2,000 a move apart: 288), and
 * PostgreSQL 0.26 ms of CPU per row instead of 0.33. When another process holds the move (its
 * own moves apart, an older daemon's claim) the move is tried again after DISPATCHER_MOVE_RETRY_MS
 * and the claims still do not move: a claim that moves would wait up to 200 ms for the lock each
 * time, while the other process fills the outbox anyway. A move that takes less than a batch (the
 * backlog is gone) or fails, or one that cannot start, ends it: claims move again, and the next
 * one counts as a wake-up, so a ring heard while claims did not move is answered by a claim that
 * moves. Notifications wait behind a move on that connection (PostgreSQL sends them
 * between transactions): a move of 10,000 took 0.23 s beside a 20,000-row capture and 0.6 s
 * beside 1,000,000 (one of 2,000 0.07 and 0.46 s), while rows are known to be due anyway.
 */
static void on_moved(struct dbloop *db, const PGresult *res, const char *err, void *arg);

#define DISPATCHER_MOVE_APART 10000
#define DISPATCHER_MOVE_RETRY_MS 100

/* Captured rows are moved on move_db (a move in flight, or its retry due): claims do not move. */
static int moving_apart(const struct dispatcher *d)
{
    return d->moving || uv_is_active((const uv_handle_t *)&d->move_timer);
}

/* The next move apart: 1 when it is on its way, else 0 (nothing changed). */
static int move_apart(struct dispatcher *d)
{
    if (d->moving || d->draining || d->move_db == NULL ||
        dbloop_state(d->move_db) != DBLOOP_READY)
        return 0;
    if (outbox_move(d->move_db, DISPATCHER_MOVE_APART, on_moved, d) != 0)
        return 0;
    d->moving = 1;
    return 1;
}

/* The claims move again (nothing moves apart now); the next one is sent as for a wake-up. */
static void moves_back(struct dispatcher *d)
{
    d->wake_pending = 1;
    claim(d);
}

static void on_move_timer(uv_timer_t *t)
{
    struct dispatcher *d = t->data;
    if (!move_apart(d))
        moves_back(d);
}

static void on_moved(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct dispatcher *d = arg;
    d->moving = 0;
    if (d->closing) {
        maybe_closed(d);
        return;
    }
    if (res == NULL && dbloop_error(db) != DBLOOP_ECLOSING)
        log_warn("moving captured rows failed; claims move them error=\"%s\"", err);
    int moved = outbox_moved(res);
    if (moved > 0)
        d->more_due = 1;
    if (moved >= DISPATCHER_MOVE_APART && move_apart(d)) {
        claim(d);
        return;
    }
    if (moved == OUTBOX_MOVE_BUSY && !d->draining) {
        log_debug("another process is moving captured rows; moving again in %d ms",
                  DISPATCHER_MOVE_RETRY_MS);
        uv_timer_start(&d->move_timer, on_move_timer, DISPATCHER_MOVE_RETRY_MS, 0);
        claim(d);
        return;
    }
    moves_back(d);
}

static void on_claimed(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    struct dispatcher *d = arg;
    (void)db;
    d->claiming = 0;
    if (d->closing) {
        /* A claim answered after the close began (slow database, then "closing"): whatever it
         * claimed stays leased and is claimed again after the lease. */
        maybe_closed(d);
        return;
    }
    if (res == NULL) {
        if (dbloop_error(db) != DBLOOP_ECLOSING)
            log_warn("claiming rows failed; trying again error=\"%s\"", err);
        d->capture_due = 1; /* its move, if it made one, rolled back with it */
        /* Not more_due: that would claim again at once. The wake-up retries in a second. */
        if (!d->draining)
            arm_wake(d, 1000);
        pump(d);
        return;
    }
    int n = PQntuples(res);
    struct claimed *c = n ? calloc((size_t)n, sizeof(*c)) : NULL;
    size_t customers = 0;
    if (n > 0 && c == NULL) {
        log_error("out of memory reading claimed rows; they are claimed again after the lease");
        n = 0;
    }
    struct outbox_claim_columns cols;
    if (n > 0 && outbox_claim_columns(res, &cols) != 0) {
        log_error("the claim's answer lacks a column; its rows are claimed again after the lease");
        n = 0;
    }
    /* What the claim left behind (see "Claim scheduling"). */
    if (n > 0) {
        if (outbox_claim_left(res, &cols)) {
            d->more_due = 1;
            d->capture_due = 1;
            (void)move_apart(d); /* or the claims go on moving */
        }
        d->passed_over = outbox_claim_passed_over(res, &cols);
        if (d->passed_over && d->records != d->claim_records)
            d->more_due = 1;
        /* The rows passed over wait for outcomes of this process: those waiting for the
         * recorder's linger are written now (a customer's change committed after its delivery
         * must not wait for the linger). */
        if (d->passed_over)
            recorder_flush(&d->recorder);
    }
    int rows = 0;
    for (int i = 0; i < n; i++)
        rows += outbox_claim_row(res, &cols, i, &c[rows].row); /* not the status row */
    n = rows;
    if (n > 0)
        qsort(c, (size_t)n, sizeof(*c), by_customer);
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && c[j].row.head_id == c[i].row.head_id)
            j++;
        start_delivery(d, &c[i], (size_t)(j - i));
        customers++;
        i = j;
    }
    free(c);
    /* A full claim may have left more behind. Or-ed in: outcomes recorded while the claim ran
     * (on the recorder's connection) may have unblocked rows its snapshot did not see. */
    if (customers > 0 && customers >= d->last_claim_limit)
        d->more_due = 1;
    if (n > 0)
        log_debug("claimed rows=%d customers=%zu", n, customers);
    pump(d);
}

/*
 * Outcomes not yet recorded count against the pipeline: a recorder that falls behind (its
 * connection lost, a slow server) stops new claims instead of piling up delivered rows that
 * only memory knows about.
 */
static int recorder_keeps_up(const struct dispatcher *d)
{
    return dbloop_state(d->recorder.db) == DBLOOP_READY &&
           recorder_backlog(&d->recorder) <= high_water(d);
}

/* Claims when one is wanted and allowed; the flags stay set while it is not allowed, and
 * whatever lifts the block (probe, breaker, reconnect, a recorded batch) calls here again. */
static void claim(struct dispatcher *d)
{
    if (d->claiming || d->draining || !claim_wanted(d))
        return;
    /* A claim wanted but held back by outcomes waiting for the linger: write them now. */
    if (recorder_lingering(&d->recorder) && recorder_backlog(&d->recorder) > high_water(d))
        recorder_flush(&d->recorder);
    if (d->auth_paused || !breaker_allows_delivery(&d->breaker) ||
        dbloop_state(d->db) != DBLOOP_READY || !recorder_keeps_up(d))
        return;
    unsigned limit = high_water(d) - held(d);
    if ((long long)limit > d->cfg->batch_size)
        limit = (unsigned)d->cfg->batch_size;
    /* Only a wake-up's claim looks into omnisync.capture (see "Claims that look"). */
    int look = d->wake_pending || d->poll_pending || d->capture_due;
    d->wake_pending = 0;
    d->poll_pending = 0;
    d->more_due = 0;
    d->last_claim_limit = limit;
    d->claim_records = d->records;

    const char *names[CONFIG_MAX_SOURCES];
    size_t nsources = 0;
    for (size_t i = 0; i < d->cfg->nsources && i < CONFIG_MAX_SOURCES; i++)
        names[nsources++] = d->cfg->sources[i].name;
    /* A claim looks at no more than `scan` rows: blocked customers (in backoff, leased by
     * another process) are skipped, and a backlog of them must not make each claim slow. */
    struct outbox_claim c = {
        .limit = limit,
        .lease_ms = dispatcher_lease_ms(d->cfg),
        .process = d->process,
        .per_customer = DELIVERY_MAX_ROWS,
        .sources = names,
        .nsources = nsources,
        .scan = 10000,
        .move = moving_apart(d) || !look ? 0 : OUTBOX_MOVE_MAX,
    };
    int rc = outbox_claim(d->db, &c, on_claimed, d);
    if (rc == 0) {
        d->claiming = 1;
        if (c.move > 0)
            d->capture_due = 0;
    } else if (look) {
        d->capture_due = 1;
    }
}

int dispatcher_prepare_sql(char *out, size_t len)
{
    return outbox_claim_prepare_sql(out, len);
}

void dispatcher_wake(struct dispatcher *d)
{
    d->wake_pending = 1;
    claim(d);
}

/* ---- timers ---- */

static void on_wake_timer(uv_timer_t *t)
{
    struct dispatcher *d = t->data;
    uint64_t now = now_ms(d);
    if (d->auth_paused) {
        /* An earlier wake-up (the rate limit, a retry) may come first: wait for the probe. */
        if (now >= d->auth_probe_at)
            send_probe(d);
        else
            arm_wake(d, d->auth_probe_at - now);
        return;
    }
    if (breaker_get_state(&d->breaker) == BREAKER_OPEN) {
        if (breaker_take_probe(&d->breaker, now))
            send_probe(d);
        else
            arm_wake(d, breaker_next_probe_ms(&d->breaker) - now);
        return;
    }
    pump(d);
    /* A retry after a failed claim, or the rate limit's next token: claim at the low-water mark,
     * not one customer per token. */
    d->more_due = 1;
    claim(d);
}

static void arm_wake(struct dispatcher *d, uint64_t delay_ms)
{
    if (d->draining)
        return;
    uint64_t due = uv_timer_get_due_in(&d->wake_timer);
    /* Keep an earlier wake-up that is already armed. */
    if (uv_is_active((uv_handle_t *)&d->wake_timer) && due <= delay_ms)
        return;
    uv_timer_start(&d->wake_timer, on_wake_timer, delay_ms ? delay_ms : 1, 0);
}

static void on_poll_timer(uv_timer_t *t)
{
    struct dispatcher *d = t->data;
    if (held(d) > (unsigned)d->cfg->max_in_flight) {
        d->poll_pending = 1; /* see "Claim scheduling" */
        claim(d);
    } else {
        dispatcher_wake(d);
    }
    recorder_retry(&d->recorder); /* a write that could not start; a linger keeps its time */
}

static void on_renewed(struct dbloop *db, const PGresult *res, const char *err, void *arg)
{
    (void)db;
    (void)arg;
    if (res == NULL && dbloop_error(db) != DBLOOP_ECLOSING)
        log_warn("renewing leases failed error=\"%s\"", err);
}

static void on_renew_timer(uv_timer_t *t)
{
    struct dispatcher *d = t->data;
    if (d->nready + d->nactive == 0 && recorder_idle(&d->recorder))
        return;
    if (outbox_renew_leases(d->db, d->process, dispatcher_lease_ms(d->cfg), on_renewed, d) != 0)
        log_warn("cannot queue the lease renewal");
}

static void start_timers(struct dispatcher *d)
{
    uint64_t poll = d->cfg->poll_interval_ms ? d->cfg->poll_interval_ms : 5000;
    uv_timer_start(&d->poll_timer, on_poll_timer, poll, poll);
    uint64_t renew = dispatcher_lease_ms(d->cfg) / 3;
    uv_timer_start(&d->renew_timer, on_renew_timer, renew, renew);
}

int dispatcher_init(struct dispatcher *d, uv_loop_t *loop, struct config *cfg, struct dbloop *db,
                    struct dbloop *record_db, struct dbloop *move_db, struct omnidesk *client,
                    const char *process)
{
    memset(d, 0, sizeof(*d));
    queue_init(&d->ready);
    d->loop = loop;
    d->capture_due = 1;
    d->cfg = cfg;
    d->db = db;
    d->move_db = move_db;
    d->client = client;
    snprintf(d->process, sizeof(d->process), "%s", process);
    int rc = recorder_init(&d->recorder, record_db, process, on_recorded, d);
    if (rc != 0)
        return rc;
    ratelimit_init(&d->rate, cfg->rate_per_sec, 0, uv_now(loop));
    breaker_init(&d->breaker, NULL);
    uv_timer_init(loop, &d->poll_timer);
    uv_timer_init(loop, &d->wake_timer);
    uv_timer_init(loop, &d->renew_timer);
    uv_timer_init(loop, &d->move_timer);
    d->poll_timer.data = d->wake_timer.data = d->renew_timer.data = d->move_timer.data = d;
    d->handles_open = 4;
    /* The recorder's linger (see recorder.h): its timer is the fifth handle. */
    rc = recorder_linger(&d->recorder, loop, DISPATCHER_LINGER_MS, DISPATCHER_LINGER_MAX);
    if (rc == 0)
        d->handles_open++;
    else
        log_warn("cannot set up the outcome linger; every outcome is written at once error=\"%s\"",
                 uv_strerror(rc));
    start_timers(d);
    return OMNISYNC_OK;
}

void dispatcher_reload(struct dispatcher *d)
{
    recorder_flush(&d->recorder);
    dispatcher_end_api_pause(d, "SIGHUP");
    ratelimit_set_rate(&d->rate, d->cfg->rate_per_sec, 0, now_ms(d));
    uv_timer_stop(&d->poll_timer);
    uv_timer_stop(&d->renew_timer);
    start_timers(d);
    if (d->auth_paused) {
        d->auth_probe_at = 0;
        send_probe(d);
    }
    dispatcher_wake(d);
}

void dispatcher_db_lost(struct dispatcher *d)
{
    /* Leases cannot be renewed now: rows not yet sent must not outlive them in memory, or
     * another process could claim and send them too. They are claimed again after the lease. */
    unsigned dropped = 0;
    struct delivery *dl;
    while ((dl = pop(d)) != NULL) {
        delivery_free(dl);
        keep_spare(d, dl);
        dropped++;
    }
    if (dropped)
        log_warn("database connection lost: %u claimed customers not yet sent are left to their "
                 "lease",
                 dropped);
}

void dispatcher_drain(struct dispatcher *d, void (*drained_cb)(struct dispatcher *d))
{
    d->draining = 1;
    d->drained_cb = drained_cb;
    /* Outcomes waiting for the linger are written now, and every later one at once. */
    if (recorder_linger(&d->recorder, d->loop, 0, 1) != 0)
        recorder_flush(&d->recorder); /* not reached: turning it off cannot fail */
    uv_timer_stop(&d->wake_timer);
    uv_timer_stop(&d->poll_timer);
    uv_timer_stop(&d->move_timer);
    pump(d);
    maybe_drained(d);
}

/*
 * The last step of the close: every timer closed and every callback the dispatcher is owed (a
 * claim, a purge reservation, a request or a probe) has come back. Only then is the recorder's
 * memory freed and closed_cb called, so no late callback ever reads freed state.
 */
static void maybe_closed(struct dispatcher *d)
{
    if (d->closing != 1 || d->handles_open > 0 || d->claiming || d->moving || d->nactive > 0 ||
        d->probe_in_flight)
        return;
    d->closing = 2;
    recorder_free(&d->recorder);
    free_spares(d);
    if (d->closed_cb)
        d->closed_cb(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct dispatcher *d = h->data;
    d->handles_open--;
    maybe_closed(d);
}

static void on_recorder_closed(struct recorder *r)
{
    struct dispatcher *d = r->data;
    d->handles_open--;
    maybe_closed(d);
}

void dispatcher_close(struct dispatcher *d, void (*closed_cb)(struct dispatcher *d))
{
    if (d->closing)
        return;
    d->closing = 1;
    d->draining = 1;
    d->drained_cb = NULL;
    d->closed_cb = closed_cb;
    struct delivery *dl;
    while ((dl = pop(d)) != NULL) {
        delivery_free(dl);
        keep_spare(d, dl);
    }
    uv_close((uv_handle_t *)&d->poll_timer, on_timer_closed);
    uv_close((uv_handle_t *)&d->wake_timer, on_timer_closed);
    uv_close((uv_handle_t *)&d->renew_timer, on_timer_closed);
    uv_close((uv_handle_t *)&d->move_timer, on_timer_closed);
    if (d->recorder.linger_init)
        recorder_close(&d->recorder, on_recorder_closed);
}
