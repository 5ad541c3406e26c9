/*
 * breaker: the circuit breaker that tells "the API is down" from "one customer's data is bad".
 *
 * The outcomes of the most recent requests sit in a small ring. When enough of them failed
 * transiently (network errors, timeouts, 408/425/429/5xx) the breaker opens: the dispatcher stops
 * claiming rows, so an outage spends no row's attempts, and a single probe request is let through
 * at growing, jittered intervals. A probe that gets any answer from the API other than a
 * transient failure closes it again with a clean history. A permanent failure (a 4xx about one
 * row) proves the API is up and counts as a success: bad data alone never opens the breaker.
 *
 * Time and randomness are passed in, so the breaker reads no clock and tests are exact.
 * No I/O, no globals, no allocation.
 */
#ifndef OMNISYNC_BREAKER_H
#define OMNISYNC_BREAKER_H

#include <stdint.h>

#include "backoff.h"

/* The ring is a fixed array: a longer window would only make the breaker slower to react. */
#define BREAKER_WINDOW_MAX 64

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

/* PERMANENT (a 4xx about one row) proves the API is up: it counts as a success. */
enum breaker_outcome { BREAKER_SUCCESS, BREAKER_TRANSIENT, BREAKER_PERMANENT };

struct breaker_config {
    unsigned window;             /* how many recent outcomes are judged, 1..BREAKER_WINDOW_MAX */
    unsigned min_requests;       /* no verdict on fewer outcomes than this */
    double failure_ratio;        /* opens when the transient share reaches this */
    struct backoff_policy probe; /* spacing of probes while open */
};

struct breaker {
    struct breaker_config cfg;                   /* normalised copy of the caller's config */
    unsigned char transient[BREAKER_WINDOW_MAX]; /* ring of outcomes: 1 = transient failure */
    unsigned count;                              /* outcomes in the ring, <= cfg.window */
    unsigned next;                               /* ring slot the next outcome goes to */
    unsigned failures;                           /* transient outcomes in the ring */
    enum breaker_state state;
    unsigned opens;         /* opens since the last close: the probe backoff's attempt number */
    uint64_t opened_total;  /* opens since init, for metrics */
    uint64_t next_probe_ms; /* while OPEN: when the next probe may start; 0 when CLOSED */
    int probe_in_flight;    /* HALF_OPEN: the probe has been handed out, its outcome awaited */
};

/* window 20, min_requests 10, failure_ratio 0.8, probe backoff 1000 ms initial, 60000 ms max. */
void breaker_config_default(struct breaker_config *cfg);

/*
 * Starts CLOSED with an empty history. `cfg` is copied (NULL = the defaults) and normalised:
 * window 0 becomes the default and is capped at BREAKER_WINDOW_MAX, min_requests is kept within
 * 1..window, failure_ratio within 0..1 (NaN = the default), a zero probe.initial_ms becomes the
 * default and probe.max_ms is at least probe.initial_ms, so probing can never become a busy loop.
 */
void breaker_init(struct breaker *b, const struct breaker_config *cfg);

/*
 * Records the outcome of a normal request (CLOSED) or of the probe (HALF_OPEN); `random` is a
 * uniform 64-bit value for the probe delay's jitter. Returns the new state.
 *  CLOSED: opens when at least min_requests outcomes are in the window, at least one of them is
 *          transient and their share is >= failure_ratio; the next probe is then due at
 *          now + backoff_delay_ms(probe, opens, random), but at least probe.initial_ms / 2 later.
 *  HALF_OPEN: success or permanent -> CLOSED with the window cleared; transient -> OPEN again
 *          with the next, longer probe delay (capped at probe.max_ms).
 *  OPEN:   ignored: these are requests that were already in flight when it opened.
 * While HALF_OPEN any recorded outcome is taken to be the probe's. A straggler from before the
 * opening that lands there does no harm: its success does prove the API is up, and its failure
 * only reopens the breaker for longer.
 */
enum breaker_state breaker_record(struct breaker *b, enum breaker_outcome o, uint64_t now_ms,
                                  uint64_t random);

/* May a normal delivery start now? True only when CLOSED. */
int breaker_allows_delivery(const struct breaker *b);

/*
 * When OPEN and now_ms >= the next probe time: switches to HALF_OPEN and returns 1 (the caller
 * sends exactly one probe request and records its outcome); otherwise 0, which includes
 * HALF_OPEN with the probe still in flight.
 */
int breaker_take_probe(struct breaker *b, uint64_t now_ms);

/* While OPEN: when the next probe may start (for arming a timer). 0 when CLOSED. */
uint64_t breaker_next_probe_ms(const struct breaker *b);

enum breaker_state breaker_get_state(const struct breaker *b);

/* "closed", "open", "half-open"; "unknown" for a value outside the enum. */
const char *breaker_state_name(enum breaker_state s);

#endif
