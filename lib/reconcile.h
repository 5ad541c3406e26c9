/*
 * reconcile: the comparison of the CRM with what Omnidesk holds (DESIGN §5, issue 19).
 *
 * Pure: no I/O, no clock. The CRM side is what omnisync would send for a row: the row goes
 * through mapping_plan_rows() (and so through validate.c, with whatever normalisation or
 * transliteration the source configures) exactly as a delivery would, so a value that delivery
 * would change before sending is compared changed. The Omnidesk side is an entry of the index
 * endpoint (GET /api/v2/customer) or of the item endpoint, parsed defensively here.
 *
 * Kinds of drift per customer: missing (in the CRM, not at Omnidesk), different (the fields
 * named), extra (an external primary id at Omnidesk that the CRM does not have), unsendable (the
 * CRM row fails validation: the field and the rule), and pending (the customer has outbox rows
 * not yet delivered: not drift, delivery is on its way). Values (names, emails, phones) are kept
 * in a report entry only when it was asked to keep them (--show-data).
 */
#ifndef OMNISYNC_RECONCILE_H
#define OMNISYNC_RECONCILE_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "errors.h"
#include "mapping.h"

/* The API's largest page (itemLimit maximum 99). */
#define RECONCILE_PAGE_LIMIT 99
/* The longest primary id, name or channel value kept from an answer; longer is a wrong shape. */
#define RECONCILE_VALUE_MAX 1024
#define RECONCILE_MAX_FIELDS (4 + CONFIG_MAX_CUSTOM)

enum reconcile_kind {
    RECONCILE_IN_STEP,
    RECONCILE_MISSING,
    RECONCILE_DIFFERENT,
    RECONCILE_EXTRA,
    RECONCILE_UNSENDABLE,
    RECONCILE_PENDING,
    RECONCILE_NKINDS
};

/* "in_step", "missing", "different", "extra", "unsendable", "pending". Never NULL. */
const char *reconcile_kind_name(enum reconcile_kind kind);

struct reconcile_pair {
    char *name; /* channel type ("email", "telephone", ...) or custom field name (no prefix) */
    char *value;
};

/* One customer as Omnidesk holds it. */
struct reconcile_remote {
    long long id;
    long long brand_id; /* 0 when the entry does not say */
    char *primary_id;   /* NULL when the entry has none: not omnisync's */
    char *firstname;    /* NULL when absent or null */
    char *lastname;
    struct reconcile_pair *channels;
    size_t nchannels;
    int custom_known; /* the entry listed its custom fields (an object "custom") */
    struct reconcile_pair *custom;
    size_t ncustom;
    int seen; /* matched by a CRM row */
};

/*
 * Parses one customer entry (an element of an index page's "items", or an item answer's
 * "customer"). `item` is borrowed. Required: an integer (or digit string) "id"; optional
 * "external_primary_id" (string or number; null/absent/"" means not omnisync's), "brand_id",
 * "firstname", "lastname" (string or null), "channels" (array of {"type","value"}: entries of
 * another shape are ignored), "custom" (object of strings). Returns 0, OMNISYNC_EINVAL with the
 * field at fault in err (never a value), or OMNISYNC_ENOMEM. On failure `out` holds nothing.
 */
int reconcile_remote_parse(struct json_object *item, struct reconcile_remote *out, char *err,
                           size_t errlen) OMNISYNC_MUST_CHECK;
void reconcile_remote_free(struct reconcile_remote *r);

/* One index page's envelope. `items` is borrowed from the parsed root. */
struct reconcile_page {
    long long item_start;
    long long item_total;
    struct json_object *items;
    size_t nitems;
};

/*
 * Checks an index page against the request (itemStart `start`, itemLimit `limit`) and what the
 * earlier pages said (`first_total`, -1 for the first page): an object with integer "itemTotal"
 * and an array "items"; "itemStart", when present, must echo `start`; a page short of `limit`
 * before itemTotal is reached, a page beyond it that is not empty, or an itemTotal that changed
 * since the first page (the list moved under the read, or it never ends) are errors. Returns 0 or
 * OMNISYNC_EINVAL with the reason in err.
 */
int reconcile_page_check(struct json_object *root, long long start, long long limit,
                         long long first_total, struct reconcile_page *page, char *err,
                         size_t errlen) OMNISYNC_MUST_CHECK;

/* What one CRM customer's comparison found. */
struct reconcile_diff {
    enum reconcile_kind kind;
    const char *fields[RECONCILE_MAX_FIELDS]; /* static or the plan's param: valid while it is */
    size_t nfields;
    char rule[256]; /* unsendable: "invalid <field>: <rule>", never the value */
};

/*
 * 1 when `remote`'s entry cannot settle the custom fields `plan` would send (the index does not
 * list them): the item endpoint must be read for this customer. 0 otherwise.
 */
int reconcile_needs_item(const struct mapping_plan *plan, const struct reconcile_remote *remote);

/*
 * Compares what omnisync would send (`plan`, from mapping_plan_rows of the CRM row as one
 * 'reconcile' row) with `remote` (NULL: Omnidesk has no such customer). A name or custom field
 * the CRM leaves empty is not compared (omnisync does not send it on create); channels are
 * compared as "Omnidesk has the CRM's current email and telephone" (omnisync never removes
 * channels, so more at Omnidesk is not drift); emails compare without regard to case.
 * Returns the kind, also stored in diff->kind.
 */
enum reconcile_kind reconcile_compare(const struct mapping_plan *plan,
                                      const struct reconcile_remote *remote,
                                      struct reconcile_diff *diff);

/* One drifting customer in a report. */
struct reconcile_entry {
    char *primary_id;
    long long brand_id; /* the outbox's brand: 0 = the configured brand */
    enum reconcile_kind kind;
    char *fields[RECONCILE_MAX_FIELDS];
    size_t nfields;
    char *rule;                 /* unsendable: field and rule, or NULL */
    struct json_object *values; /* --show-data: {"crm":{...},"omnidesk":{...}}, else NULL */
    /* --repair: the sync_state facts to correct before the repair row is delivered. */
    int forget_created;       /* missing: Omnidesk no longer has the customer */
    char *forget_channels[2]; /* channels sync_state knows that Omnidesk lacks */
};

struct reconcile_report {
    char source[CONFIG_NAME_MAX + 1];
    long long crm_customers;
    long long omnidesk_customers;
    long long in_step;
    long long counts[RECONCILE_NKINDS];
    struct reconcile_entry *entries;
    size_t nentries, cap;
    long long pages;          /* index pages read */
    long long items;          /* item answers read */
    long long enqueued;       /* --repair: rows enqueued */
    long long repair_skipped; /* --repair: changed in the CRM during the run: left to delivery */
};

void reconcile_report_init(struct reconcile_report *r, const char *source);
void reconcile_report_free(struct reconcile_report *r);

/*
 * Adds one drifting customer (copies everything). `values` (may be NULL) is taken over. For
 * kinds other than in_step; counts[kind] is incremented. 0 or OMNISYNC_ENOMEM.
 */
int reconcile_report_add(struct reconcile_report *r, const char *primary_id, long long brand_id,
                         const struct reconcile_diff *diff,
                         struct json_object *values) OMNISYNC_MUST_CHECK;

/*
 * The values behind a diff, for --show-data: {"crm":{field:value},"omnidesk":{field:value}} for
 * the fields named (channels: the CRM's value and Omnidesk's list of that type). New reference.
 */
struct json_object *reconcile_values(const struct mapping_plan *plan,
                                     const struct reconcile_remote *remote,
                                     const struct reconcile_diff *diff);

/* Marks entry `i` as pending (its customer has undelivered outbox rows), moving its count. */
void reconcile_report_set_pending(struct reconcile_report *r, size_t i);

/* 1 when any customer is missing, different or unsendable (exit status 3). */
int reconcile_report_drifts(const struct reconcile_report *r);

/* The report as one JSON object (DESIGN §5, issue 19). New reference. */
struct json_object *reconcile_report_json(const struct reconcile_report *r);

/* Writes the report as a table: counts per kind, then one line per drifting customer. */
void reconcile_report_print(const struct reconcile_report *r, FILE *out);

#endif
