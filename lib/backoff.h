/*
 * backoff: how long to wait before trying again.
 *
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * the delay is a uniform draw from [0, min(max, initial * 2^(attempt-1))], which spreads the
 * retries of many rows that failed together instead of sending them back in lockstep. The draw
 * comes from a value the caller supplies, so this module holds no random state and tests can pin
 * the result. Also parses Retry-After, which the server's word overrides our own schedule with.
 *
 * Pure functions: no I/O, no globals, no clock reads.
 */
#ifndef OMNISYNC_BACKOFF_H
#define OMNISYNC_BACKOFF_H

#include <stdint.h>
#include <time.h>

#include "errors.h"

struct backoff_policy {
    uint64_t initial_ms; /* the cap for the first retry */
    uint64_t max_ms;     /* the cap never grows beyond this */
};

/* Retry-After values longer than this are garbage, not a date (a date is 24 to 33 bytes). */
#define BACKOFF_RETRY_AFTER_MAX 128

/*
 * The delay before attempt number `attempt` (1 = the first retry; 0 is treated as 1): a uniform
 * draw from [0, min(max_ms, initial_ms * 2^(attempt-1))] mapped from `random`, a uniform 64-bit
 * value the caller draws. random = 0 gives 0 and random = UINT64_MAX gives the cap exactly; the
 * mapping is monotonic. Never overflows, whatever `attempt` is.
 */
uint64_t backoff_delay_ms(const struct backoff_policy *p, unsigned attempt, uint64_t random);

/* min(max_ms, initial_ms * 2^(attempt-1)), saturating: the upper bound of backoff_delay_ms(). */
uint64_t backoff_cap_ms(const struct backoff_policy *p, unsigned attempt);

/*
 * Parses a Retry-After header value (`value` borrowed; surrounding spaces and tabs ignored):
 * delta-seconds ("120") or an HTTP-date in the IMF-fixdate, obsolete RFC 850 or asctime form
 * (parsed by libcurl's curl_getdate()), taken relative to `now` (seconds since the epoch). A date
 * in the past gives 0. The result is clamped to `max_ms`. Returns 0 and sets *delay_ms, or
 * OMNISYNC_EINVAL for garbage (empty, negative, non-numeric, a number beyond 64 bits, a value
 * longer than BACKOFF_RETRY_AFTER_MAX); *delay_ms is then left alone.
 */
int backoff_parse_retry_after(const char *value, time_t now, uint64_t max_ms,
                              uint64_t *delay_ms) OMNISYNC_MUST_CHECK;

#endif
