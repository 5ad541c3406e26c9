/*
 * control: the fake's own API under /_fake/ (no key, never faulted).
 *
 * GET state, log, stats and faults; POST faults (merge settings) and reset. Tests use it to set
 * the scene and to check what the client really sent. Answers are JSON.
 */
#ifndef FAKE_CONTROL_H
#define FAKE_CONTROL_H

#include "store.h"

#include <microhttpd.h>
#include <stddef.h>

struct control_answer {
    int status;
    char *body; /* malloc'd JSON text, or NULL without memory */
    size_t body_len;
};

/* Answers one control request; `body` is the raw request body (`len` bytes, may be NULL).
   Takes store->lock itself. */
void control_handle(struct store *store, struct MHD_Connection *connection, const char *method,
                    const char *path, const char *body, size_t len, struct control_answer *answer);

#endif
