/*
 * api: the customer endpoints, over the store.
 *
 * Each request is validated as the OpenAPI document says (required fields first, in the
 * document's order, then each field's rule), then applied to the store, and answered with the
 * status and JSON body the real API gives or, where it is silent, a JSON error
 * {"type":"error","message":"..."} naming the field and the rule. The caller holds store->lock.
 */
#ifndef FAKE_API_H
#define FAKE_API_H

#include "endpoint.h"
#include "form.h"
#include "store.h"

struct api_answer {
    int status;
    char *body; /* malloc'd JSON text; owned by the caller after api_handle */
    size_t body_len;
};

/* Runs one request: `fields` are the parsed body (or query, for GET), `path_id` the id in the
   path. Fills *answer; returns 0, or -1 without memory (answer empty). */
int api_handle(struct store *store, enum endpoint ep, const struct form *fields, long long path_id,
               struct api_answer *answer);

/* The external primary id a request concerns, for the log: from primary_id, externalPrimaryID
   or external_id, or for purgeData/{id}, item and addChannelOnly by customer_id the external id
   of that customer now. malloc'd, or NULL when unknown. */
char *api_concerned_customer(struct store *store, enum endpoint ep, const struct form *fields,
                             long long path_id);

/* {"type":"error","message":message} as malloc'd text (NULL without memory). */
char *api_error_body(const char *message, size_t *len);

/* Serialises and puts `o`; malloc'd text, or NULL without memory. */
char *api_take_json(struct json_object *o, size_t *len);

#endif
