/*
 * ratelimit: the token bucket behind [omnidesk] rate_per_sec, plus the client-wide pause a 429
 * or 503 Retry-After imposes.
 *
 * Omnidesk documents no rate limit, so the operator sets one; the bucket lets `burst` requests go
 * at once and then `rate` per second. A Retry-After is about the whole API key, not one request,
 * so it stops every send until it has passed, and the bucket holds at most one token when it
 * does: the first request after a 429 is a lone probe, not a full burst into a server that just
 * said it was overloaded.
 *
 * Time is passed in (`now_ms`, a monotonic millisecond clock such as uv_now()), so the bucket
 * reads no clock and tests are exact. No I/O, no globals, no allocation.
 */
#ifndef OMNISYNC_RATELIMIT_H
#define OMNISYNC_RATELIMIT_H

#include <stdint.h>

struct ratelimit {
    double rate;              /* tokens per second; 0 = unlimited */
    double burst;             /* bucket size, at least 1 */
    double tokens;            /* tokens available as of last_ms */
    uint64_t last_ms;         /* when `tokens` was last brought up to date */
    uint64_t paused_until_ms; /* nothing is sent before this (Retry-After); 0 = never paused */
};

/*
 * rate_per_sec 0 (or negative, NaN, infinite) = unlimited. burst = max(1, rate) tokens unless
 * given (> 0); a given burst below 1 is raised to 1, or no request could ever go. Starts full.
 */
void ratelimit_init(struct ratelimit *rl, double rate_per_sec, double burst, uint64_t now_ms);

/*
 * Changes the rate (on SIGHUP) keeping the tokens earned so far, capped to the new burst. Coming
 * from unlimited, the bucket starts full. A pause in force stays in force.
 */
void ratelimit_set_rate(struct ratelimit *rl, double rate_per_sec, double burst, uint64_t now_ms);

/* Takes one token if one is available and no pause is in force: 1 taken, 0 not. */
int ratelimit_take(struct ratelimit *rl, uint64_t now_ms);

/*
 * Gives back the token of a take whose request never went out (the HTTP client answered busy or
 * could not start it): the bucket is as it was before the take, never above its burst.
 */
void ratelimit_refund(struct ratelimit *rl);

/* Milliseconds until ratelimit_take() will succeed (0 if now); for arming a timer. */
uint64_t ratelimit_wait_ms(struct ratelimit *rl, uint64_t now_ms);

/*
 * Stops all sending until `until_ms` (a 429's Retry-After applies to the whole client). A later
 * call with an earlier time does not shorten a pause in force. When the pause ends at most one
 * token is waiting; the rest of the bucket refills at the normal rate.
 */
void ratelimit_pause_until(struct ratelimit *rl, uint64_t until_ms);

#endif
