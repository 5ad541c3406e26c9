/*
 * breaker: a count-based circuit breaker with jittered, growing probe intervals.
 *
 * The window counts outcomes, not time: at low traffic a time window would hold too few requests
 * to judge, and at high traffic a count of 20 fills in well under a second anyway. The window is
 * judged only while CLOSED and cleared on every close, so the history of one outage never
 * weighs on the verdict about the next.
 */
#include "breaker.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define DEFAULT_WINDOW 20
#define DEFAULT_MIN_REQUESTS 10
#define DEFAULT_FAILURE_RATIO 0.8
#define DEFAULT_PROBE_INITIAL_MS 1000
#define DEFAULT_PROBE_MAX_MS 60000

/* Slack for the ratio comparison: 8 of 10 at 0.8 must open despite 0.8 not being exact. */
#define RATIO_EPSILON 1e-9

void breaker_config_default(struct breaker_config *cfg)
{
    cfg->window = DEFAULT_WINDOW;
    cfg->min_requests = DEFAULT_MIN_REQUESTS;
    cfg->failure_ratio = DEFAULT_FAILURE_RATIO;
    cfg->probe.initial_ms = DEFAULT_PROBE_INITIAL_MS;
    cfg->probe.max_ms = DEFAULT_PROBE_MAX_MS;
}

static void normalise_config(struct breaker_config *cfg)
{
    if (cfg->window == 0)
        cfg->window = DEFAULT_WINDOW;
    if (cfg->window > BREAKER_WINDOW_MAX)
        cfg->window = BREAKER_WINDOW_MAX;
    if (cfg->min_requests == 0)
        cfg->min_requests = 1;
    if (cfg->min_requests > cfg->window)
        cfg->min_requests = cfg->window; /* else it could never open at all */
    if (isnan(cfg->failure_ratio))
        cfg->failure_ratio = DEFAULT_FAILURE_RATIO;
    if (cfg->failure_ratio < 0)
        cfg->failure_ratio = 0;
    if (cfg->failure_ratio > 1)
        cfg->failure_ratio = 1;
    if (cfg->probe.initial_ms == 0)
        cfg->probe.initial_ms = DEFAULT_PROBE_INITIAL_MS;
    if (cfg->probe.max_ms < cfg->probe.initial_ms)
        cfg->probe.max_ms = cfg->probe.initial_ms;
}

static void clear_window(struct breaker *b)
{
    memset(b->transient, 0, sizeof(b->transient));
    b->count = 0;
    b->next = 0;
    b->failures = 0;
}

void breaker_init(struct breaker *b, const struct breaker_config *cfg)
{
    memset(b, 0, sizeof(*b));
    if (cfg)
        b->cfg = *cfg;
    else
        breaker_config_default(&b->cfg);
    normalise_config(&b->cfg);
    clear_window(b);
    b->state = BREAKER_CLOSED;
}

static void push_outcome(struct breaker *b, int transient)
{
    if (b->count == b->cfg.window)
        b->failures -= b->transient[b->next]; /* the oldest outcome leaves the window */
    else
        b->count++;
    b->transient[b->next] = (unsigned char)transient;
    b->failures += (unsigned)transient;
    b->next = (b->next + 1) % b->cfg.window;
}

static int window_says_down(const struct breaker *b)
{
    if (b->count < b->cfg.min_requests || b->failures == 0)
        return 0;
    return (double)b->failures >= b->cfg.failure_ratio * (double)b->count - RATIO_EPSILON;
}

static void open_circuit(struct breaker *b, uint64_t now_ms, uint64_t random)
{
    uint64_t delay;
    uint64_t floor_ms = b->cfg.probe.initial_ms / 2;

    if (b->opens < UINT_MAX)
        b->opens++;
    b->opened_total++;
    /*
     * Full jitter could draw 0 and probe at once, straight into the outage just seen; the floor
     * keeps a first breath between opening and probing, without exceeding the configured max.
     */
    delay = backoff_delay_ms(&b->cfg.probe, b->opens, random);
    if (floor_ms > b->cfg.probe.max_ms)
        floor_ms = b->cfg.probe.max_ms;
    if (delay < floor_ms)
        delay = floor_ms;
    b->next_probe_ms = UINT64_MAX - now_ms < delay ? UINT64_MAX : now_ms + delay;
    b->state = BREAKER_OPEN;
    b->probe_in_flight = 0;
}

static void close_circuit(struct breaker *b)
{
    clear_window(b);
    b->state = BREAKER_CLOSED;
    b->opens = 0;
    b->next_probe_ms = 0;
    b->probe_in_flight = 0;
}

enum breaker_state breaker_record(struct breaker *b, enum breaker_outcome o, uint64_t now_ms,
                                  uint64_t random)
{
    int transient = o == BREAKER_TRANSIENT;

    switch (b->state) {
    case BREAKER_CLOSED:
        push_outcome(b, transient);
        if (window_says_down(b))
            open_circuit(b, now_ms, random);
        break;
    case BREAKER_HALF_OPEN:
        if (transient)
            open_circuit(b, now_ms, random);
        else
            close_circuit(b);
        break;
    case BREAKER_OPEN:
        break;
    }
    return b->state;
}

int breaker_allows_delivery(const struct breaker *b)
{
    return b->state == BREAKER_CLOSED;
}

int breaker_take_probe(struct breaker *b, uint64_t now_ms)
{
    if (b->state != BREAKER_OPEN || now_ms < b->next_probe_ms)
        return 0;
    b->state = BREAKER_HALF_OPEN;
    b->probe_in_flight = 1;
    return 1;
}

uint64_t breaker_next_probe_ms(const struct breaker *b)
{
    return b->state == BREAKER_CLOSED ? 0 : b->next_probe_ms;
}

enum breaker_state breaker_get_state(const struct breaker *b)
{
    return b->state;
}

const char *breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half-open";
    }
    return "unknown";
}
