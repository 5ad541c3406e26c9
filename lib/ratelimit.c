/*
 * ratelimit: a token bucket over a caller-supplied millisecond clock.
 *
 * Tokens are doubles because rates may be fractional ("0.5" per second). Comparisons allow a
 * tolerance of TOKEN_EPSILON so that ratelimit_wait_ms()'s promise holds despite rounding: after
 * waiting the time it returns, ratelimit_take() succeeds, never one millisecond later.
 */
#include "ratelimit.h"

#include <math.h>

/* A take succeeds from 1 - TOKEN_EPSILON tokens; waits aim at 1 - TOKEN_EPSILON / 2, leaving
 * margin for the rounding of tokens + elapsed * rate, which is ~1e-16 relative. */
#define TOKEN_EPSILON 1e-9

static double sane_rate(double rate_per_sec)
{
    return rate_per_sec > 0 && isfinite(rate_per_sec) ? rate_per_sec : 0;
}

static double sane_burst(double rate, double burst)
{
    double b = burst > 0 && isfinite(burst) ? burst : rate;

    return b > 1 ? b : 1;
}

/* Credits the tokens earned between last_ms and now. A `now` before last_ms (a pause moved
 * last_ms ahead) earns nothing and leaves last_ms alone. */
static void refill(struct ratelimit *rl, uint64_t now_ms)
{
    if (now_ms <= rl->last_ms)
        return;
    rl->tokens += (double)(now_ms - rl->last_ms) * rl->rate / 1000.0;
    if (rl->tokens > rl->burst)
        rl->tokens = rl->burst;
    rl->last_ms = now_ms;
}

void ratelimit_init(struct ratelimit *rl, double rate_per_sec, double burst, uint64_t now_ms)
{
    rl->rate = sane_rate(rate_per_sec);
    rl->burst = sane_burst(rl->rate, burst);
    rl->tokens = rl->burst;
    rl->last_ms = now_ms;
    rl->paused_until_ms = 0;
}

void ratelimit_set_rate(struct ratelimit *rl, double rate_per_sec, double burst, uint64_t now_ms)
{
    int was_unlimited = rl->rate == 0;

    if (!was_unlimited)
        refill(rl, now_ms); /* tokens earned at the old rate are kept */
    rl->rate = sane_rate(rate_per_sec);
    rl->burst = sane_burst(rl->rate, burst);
    /* An unlimited bucket does not track tokens; it never ran dry, so it becomes a full one. */
    if (was_unlimited)
        rl->tokens = rl->burst;
    if (rl->tokens > rl->burst)
        rl->tokens = rl->burst;
    if (now_ms > rl->last_ms)
        rl->last_ms = now_ms;
}

int ratelimit_take(struct ratelimit *rl, uint64_t now_ms)
{
    if (now_ms < rl->paused_until_ms)
        return 0;
    if (rl->rate == 0)
        return 1;
    refill(rl, now_ms);
    if (rl->tokens < 1.0 - TOKEN_EPSILON)
        return 0;
    rl->tokens -= 1.0;
    if (rl->tokens < 0)
        rl->tokens = 0; /* the tolerance must not turn into a debt */
    return 1;
}

void ratelimit_refund(struct ratelimit *rl)
{
    if (rl->rate == 0)
        return; /* unlimited: nothing was taken */
    /* While a pause is pending the bucket already holds its one probe token (pause_until moved
     * last_ms to the pause's end): a refund must not turn the probe into two requests. */
    double cap = rl->paused_until_ms != 0 && rl->last_ms <= rl->paused_until_ms ? 1.0 : rl->burst;
    rl->tokens += 1.0;
    if (rl->tokens > cap)
        rl->tokens = cap;
}

uint64_t ratelimit_wait_ms(struct ratelimit *rl, uint64_t now_ms)
{
    uint64_t ready = now_ms;

    if (rl->rate > 0) {
        refill(rl, now_ms);
        if (rl->last_ms > ready)
            ready = rl->last_ms;
        if (rl->tokens < 1.0 - TOKEN_EPSILON) {
            double ms = ceil((1.0 - TOKEN_EPSILON / 2 - rl->tokens) * 1000.0 / rl->rate);

            /* A tiny rate can ask for more than 64 bits of milliseconds: saturate. */
            if (ms >= 18446744073709551616.0 || UINT64_MAX - ready < (uint64_t)ms)
                ready = UINT64_MAX;
            else
                ready += (uint64_t)ms;
        }
    }
    if (rl->paused_until_ms > ready)
        ready = rl->paused_until_ms;
    return ready - now_ms;
}

void ratelimit_pause_until(struct ratelimit *rl, uint64_t until_ms)
{
    if (until_ms <= rl->paused_until_ms)
        return;
    rl->paused_until_ms = until_ms;
    if (rl->rate > 0 && until_ms > rl->last_ms) {
        /* Tokens accrue through the pause as usual, but only one may be waiting at its end. */
        refill(rl, until_ms);
        if (rl->tokens > 1.0)
            rl->tokens = 1.0;
    }
}
