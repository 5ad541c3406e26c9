/*
 * delivery: one customer's claimed rows, delivered step by step (DESIGN §3).
 *
 * A delivery owns the rows the dispatcher claimed for one customer and the plans mapping made of
 * them. It decides each next request from the plans and what it knows of the customer
 * (sync_state, updated by every answer), so a retry never repeats a step that is known done:
 * a create is preceded by a lookup whenever an earlier attempt may have applied it, a channel
 * already known is not added again, a purge of a customer already gone counts as done.
 *
 * It performs no I/O itself: the dispatcher asks delivery_next() for the next request, sends it
 * and feeds the answer to delivery_on_response(). When delivery_next() says DELIVERY_DONE, the
 * outcomes (one per segment) are ready for the recorder in delivery->outcomes[0..noutcomes).
 */
#ifndef OMNISYNC_DELIVERY_H
#define OMNISYNC_DELIVERY_H

#include <json-c/json.h>
#include <stdint.h>

#include "config.h"
#include "mapping.h"
#include "omnidesk.h"
#include "outbox.h"

#define DELIVERY_MAX_ROWS 256
#define DELIVERY_MAX_KNOWN 64
/* One per plan, and the release of the rest (plans, and rows beyond the planned ones). */
#define DELIVERY_MAX_OUTCOMES (MAPPING_MAX_PLANS + 2)

struct delivery_row {
    long long id;
    char op[12];
    int attempts;
    int orphaned; /* the previous holder's lease ran out with no outcome recorded */
    double created_epoch;
    struct json_object *old_data;
    struct json_object *new_data;
};

/* What is known of the customer at Omnidesk: the sync_state row, kept current. */
struct delivery_sync {
    int created;
    int create_unknown; /* look up before any other request: a create's or a channel add's
                         * outcome is unknown, or rows a dead process held were released first */
    long long omnidesk_id;
    char *channels[DELIVERY_MAX_KNOWN]; /* "email:<addr>", "telephone:<e164>" */
    size_t nchannels;
};

enum delivery_next {
    DELIVERY_SEND,          /* *request holds the next request */
    DELIVERY_RESERVE_PURGE, /* ask the purge guard, then delivery_on_reservation() */
    DELIVERY_DONE           /* outcomes are ready */
};

struct delivery_request {
    enum omnidesk_endpoint endpoint;
    long long customer_id;
    struct omnidesk_field fields[OMNIDESK_MAX_FIELDS];
    size_t nfields;
};

/*
 * Where the current plan is (modelled on curl's multi.c: one field, changed in one function,
 * set_state(), which traces every change at debug level). From NEXT, what is known of the
 * customer (sync) and the plan's progress choose a request state or an end; an answer moves a
 * request state back to NEXT, or to an end. delivery_next() records the ends DONE, FAILED and
 * STOPPED as outcomes and starts the next plan in NEXT; HELD (the purge guard said no) and
 * STOPPED release the plans after the current one; FINISHED: every row has its outcome.
 *
 *   NEXT -> LOOKUP | CREATE | UPDATE | ADD_CHANNEL | RESERVE | PURGE | DONE | FAILED
 *   LOOKUP | CREATE | UPDATE | ADD_CHANNEL -> NEXT | FAILED | STOPPED
 *   PURGE -> DONE | NEXT (a stale id: look it up) | FAILED | STOPPED
 *   RESERVE -> NEXT (granted) | HELD | STOPPED (the database did not answer)
 *   any state of a plan -> STOPPED (delivery_release)
 *   DONE | FAILED | STOPPED -> NEXT (next plan) ; last plan -> FINISHED
 */
enum delivery_state {
    DELIVERY_STATE_NEXT,        /* deciding the current plan's next step */
    DELIVERY_STATE_LOOKUP,      /* searchCustomer sent */
    DELIVERY_STATE_CREATE,      /* createCustomer sent */
    DELIVERY_STATE_UPDATE,      /* updateCustomer sent */
    DELIVERY_STATE_ADD_CHANNEL, /* addChannelOnly sent (channels[channels_added]) */
    DELIVERY_STATE_RESERVE,     /* the purge guard asked */
    DELIVERY_STATE_PURGE,       /* a purge sent */
    DELIVERY_STATE_DONE,        /* the plan is done; its outcome is due */
    DELIVERY_STATE_FAILED,      /* a permanent answer; its outcome is due */
    DELIVERY_STATE_STOPPED,     /* retry later (see stop); its outcome is due */
    DELIVERY_STATE_HELD,        /* the purge guard holds the plan; the rest is released */
    DELIVERY_STATE_FINISHED,    /* every row has its outcome */
    DELIVERY_STATE_COUNT
};

const char *delivery_state_name(enum delivery_state state);

/* How the delivery of the current segment ended, when it ended early. */
enum delivery_stop {
    DELIVERY_STOP_NONE,
    DELIVERY_STOP_TRANSIENT, /* retry later, spending an attempt */
    DELIVERY_STOP_RELEASE,   /* retry later without spending one: circuit open, 429, key refused, shutdown */
};

struct delivery {
    struct queue node;     /* in the dispatcher's queue */
    void *owner;           /* the dispatcher holding it */
    const struct config *cfg;
    const struct config_source *source;
    char source_name[64];
    long long brand_id;     /* as stored in the outbox (0 = configured brand) */
    long long send_brand;   /* the brand sent to Omnidesk */
    char brand_text[24];
    char *primary_id;       /* the customer key's primary id */

    struct delivery_row rows[DELIVERY_MAX_ROWS];
    size_t nrows;
    struct delivery_sync sync;

    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t nplans;
    size_t nplanned_rows; /* rows beyond are released for a later claim */
    size_t current;       /* plan in progress */

    enum delivery_state state; /* of the current plan; change it with set_state() only */
    /* What is known of the current plan's progress (facts, not where it is: see state). */
    int verify_first;    /* look the customer up before creating: an earlier attempt may have */
    int searched;
    int created_now;     /* this plan created the customer */
    int create_rejected; /* the create got a 4xx: look up before giving up */
    int reject_status;
    char reject_error[512];
    int update_done;
    int known_created;   /* sync_state said the customer exists when the plan started */
    int recreated;       /* the customer vanished at Omnidesk once already: do not loop */
    int purge_reserved;
    int purge_done;      /* DONE by a purge (else the customer was already gone) */
    size_t channels_added;
    int last_status;     /* HTTP status of the last answer */
    char last_error[512];
    long long retry_after_ms;
    enum delivery_stop stop;

    struct outbox_attempt *attempts; /* this plan's requests, for omnisync.delivery_attempt */
    size_t nattempts, attempts_cap;
    struct delivery_outcome outcomes[DELIVERY_MAX_OUTCOMES]; /* for the recorder */
    size_t noutcomes;
    double started;               /* when the delivery was claimed (epoch seconds) */
};

/*
 * Prepares `d` for the customer of rows[0..nrows) (already parsed; `d` takes ownership of the
 * rows' JSON). `sync` is what the customer's sync_state row says (copied), or NULL. Returns 0 or a
 * negative code (OMNISYNC_ENOMEM); on failure the rows' JSON has been released.
 */
int delivery_init(struct delivery *d, const struct config *cfg, const struct config_source *src,
                  long long brand_id, const char *primary_id, struct delivery_row *rows,
                  size_t nrows, const struct outbox_sync *sync) OMNISYNC_MUST_CHECK;

/* Decides what happens next. Never blocks. */
enum delivery_next delivery_next(struct delivery *d, struct delivery_request *request);

/* Feeds the answer to the request returned by the last delivery_next(). */
void delivery_on_response(struct delivery *d, const struct omnidesk_response *response);

/* Feeds the purge guard's answer. */
void delivery_on_reservation(struct delivery *d, int granted);

/*
 * Ends the delivery now without spending attempts (shutdown, key refused, circuit open): the
 * current and remaining plans are released for a later claim. delivery_next() then says DONE.
 */
void delivery_release(struct delivery *d, const char *why);

/* Random source for backoff jitter; replaceable in tests. */
extern uint64_t (*delivery_random)(void);

void delivery_free(struct delivery *d);

#endif
