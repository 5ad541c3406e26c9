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
 * outcomes (one per segment) are ready for the recorder in delivery->outcomes.
 */
#ifndef OMNISYNC_DELIVERY_H
#define OMNISYNC_DELIVERY_H

#include <json-c/json.h>
#include <stdint.h>

#include "config.h"
#include "mapping.h"
#include "omnidesk.h"

#define DELIVERY_MAX_ROWS 256
#define DELIVERY_MAX_KNOWN 64

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
    int create_unknown; /* a create was sent and its outcome is unknown: look up before any other */
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

    /* Progress of the current plan. */
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
    int purge_gone;      /* the purge found the customer already gone */
    int purge_done;
    int current_failed;  /* a permanent answer: the plan ends in failed */
    size_t channels_added;
    int last_status;     /* HTTP status of the last answer */
    char last_error[512];
    long long retry_after_ms;
    enum delivery_stop stop;

    struct json_object *attempts; /* this plan's requests, for delivery_attempt */
    struct json_object *outcomes; /* array of outcomes for omnisync.record_outcomes() */
    double started;               /* when the delivery was claimed (epoch seconds) */
    int finished;
};

/*
 * Prepares `d` for the customer of rows[0..nrows) (already parsed; `d` takes ownership of the
 * rows' JSON). `sync_json` is the customer's sync_state row as JSON text, or NULL. Returns 0 or a
 * negative code (OMNISYNC_ENOMEM); on failure the rows' JSON has been released.
 */
int delivery_init(struct delivery *d, const struct config *cfg, const struct config_source *src,
                  long long brand_id, const char *primary_id, struct delivery_row *rows,
                  size_t nrows, const char *sync_json) OMNISYNC_MUST_CHECK;

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
