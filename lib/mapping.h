/*
 * mapping: what a customer's claimed outbox rows mean for Omnidesk (DESIGN §2, §3).
 *
 * Pure: no I/O, no clock. It turns the rows of one customer, oldest first, into segments, each
 * the net effect of consecutive rows (coalescing): an upsert of the latest state plus every new
 * channel seen, or a purge. A purge ends a segment, so "delete then insert again" is delivered
 * as a purge followed by a create, never folded into one update. It validates the state to be
 * sent with the API document's rules; an invalid segment is never sent.
 *
 * The caller owns the rows' JSON; a plan copies the strings it keeps.
 */
#ifndef OMNISYNC_MAPPING_H
#define OMNISYNC_MAPPING_H

#include <json-c/json.h>
#include <stddef.h>

#include "config.h"

#define MAPPING_MAX_CHANNELS 16
#define MAPPING_MAX_PLANS 8

/* Bits of mapping_plan.transliterated. */
#define MAPPING_NAME_FIRSTNAME 1u
#define MAPPING_NAME_LASTNAME 2u

struct mapping_row {
    long long id;
    const char *op;                /* insert, update, delete, truncate, backfill */
    struct json_object *old_data;  /* NULL when absent */
    struct json_object *new_data;  /* NULL when absent */
};

enum mapping_kind {
    MAPPING_UPSERT,   /* create or update the customer, add new channels */
    MAPPING_PURGE,    /* purge the customer */
    MAPPING_NOTHING,  /* nothing to send (an ignored delete) */
    MAPPING_TRUNCATE, /* a TRUNCATE: never turned into purges */
    MAPPING_INVALID   /* the data breaks an API rule: never sent */
};

struct mapping_channel {
    const char *type; /* "email" or "telephone" (static) */
    char *value;
};

struct mapping_custom {
    const char *param; /* "custom_<name>", points into the row's JSON key: valid while rows are */
    char *value;       /* NULL: the CRM value is NULL */
};

struct mapping_plan {
    enum mapping_kind kind;
    size_t first, last;  /* the rows of this segment: rows[first..last] */
    long long sent_id;   /* rows[last].id: the row the outcome is recorded against */
    char *primary_id;
    char *firstname;     /* NULL or "" when the CRM has none */
    char *lastname;
    char *email;         /* the current email, normalised and valid, or NULL */
    char *telephone;     /* the current telephone, E.164, or NULL */
    struct mapping_custom custom[CONFIG_MAX_CUSTOM];
    size_t ncustom;
    int names_changed;   /* names or custom fields may differ from Omnidesk: send updateCustomer */
    int primary_id_changed; /* an UPDATE changed the primary id: delivered as a new customer */
    unsigned transliterated; /* MAPPING_NAME_* bits: names sent transliterated */
    struct mapping_channel channels[MAPPING_MAX_CHANNELS]; /* every valid channel seen, in order */
    size_t nchannels;
    char error[512];     /* MAPPING_INVALID: field, value and rule, for last_error */
    char log_error[256]; /* the same without the value, for the log */
};

/*
 * Plans the delivery of rows[0..nrows) (one customer, oldest first). Fills at most
 * MAPPING_MAX_PLANS plans; rows beyond the last planned segment are left for a later delivery
 * (*nplanned_rows tells how many rows the plans cover). Returns the number of plans, or a
 * negative code (OMNISYNC_ENOMEM). Every plan must be released with mapping_plan_free().
 */
int mapping_plan_rows(const struct config *cfg, const struct config_source *src,
                      const struct mapping_row *rows, size_t nrows, struct mapping_plan *plans,
                      size_t *nplanned_rows) OMNISYNC_MUST_CHECK;

void mapping_plan_free(struct mapping_plan *plan);

/* "email:<value>" / "telephone:<value>": the form channels take in sync_state. */
void mapping_channel_key(const struct mapping_channel *c, char *out, size_t outlen);

/* "type:value" into out[outlen], cut like snprintf when it does not fit. */
void mapping_key(char *out, size_t outlen, const char *type, const char *value);

#endif
