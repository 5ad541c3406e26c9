/*
 * backoff: full-jitter exponential delays and Retry-After parsing.
 *
 * Everything is computed in saturating 64-bit arithmetic: a row on its thousandth attempt, a
 * misconfigured max or a server asking for a century must give a capped delay, never a wrapped
 * one that turns "wait" into "hammer". Randomness and the clock are the caller's.
 */
#include "backoff.h"

#include <string.h>

#include <curl/curl.h>

/* The high 64 bits of a * b, in portable C (no __int128 on every target we build for). */
static uint64_t mul_high(uint64_t a, uint64_t b)
{
    uint64_t a_lo = (uint32_t)a;
    uint64_t a_hi = a >> 32;
    uint64_t b_lo = (uint32_t)b;
    uint64_t b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo;
    uint64_t hi_lo = a_hi * b_lo;
    uint64_t lo_hi = a_lo * b_hi;
    uint64_t hi_hi = a_hi * b_hi;
    /* At most (2^32-1) + (2^32-1) + (2^32-1)^2 = 2^64-1: no carry is lost. */
    uint64_t cross = (lo_lo >> 32) + (uint32_t)hi_lo + lo_hi;

    return hi_hi + (hi_lo >> 32) + (cross >> 32);
}

uint64_t backoff_cap_ms(const struct backoff_policy *p, unsigned attempt)
{
    unsigned shift = attempt > 0 ? attempt - 1 : 0;
    uint64_t grown;

    if (p->initial_ms == 0)
        return 0;
    /* initial << shift saturates instead of wrapping (shifting by >= 64 is undefined, too). */
    if (shift >= 64 || p->initial_ms > (UINT64_MAX >> shift))
        grown = UINT64_MAX;
    else
        grown = p->initial_ms << shift;
    return grown < p->max_ms ? grown : p->max_ms;
}

uint64_t backoff_delay_ms(const struct backoff_policy *p, unsigned attempt, uint64_t random)
{
    uint64_t cap = backoff_cap_ms(p, attempt);

    if (cap == UINT64_MAX)
        return random;
    /*
     * floor(random * (cap + 1) / 2^64) maps [0, 2^64) onto [0, cap] with every result hit
     * floor or ceil of 2^64 / (cap + 1) times: uniform to within 2^-64, monotonic, and without
     * the division a modulo would cost.
     */
    return mul_high(random, cap + 1);
}

static int is_header_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int backoff_parse_retry_after(const char *value, time_t now, uint64_t max_ms, uint64_t *delay_ms)
{
    char date[BACKOFF_RETRY_AFTER_MAX + 1];
    const char *start;
    const char *end;
    uint64_t ms;

    if (!value || !delay_ms)
        return OMNISYNC_EINVAL;
    if (strnlen(value, BACKOFF_RETRY_AFTER_MAX + 1) > BACKOFF_RETRY_AFTER_MAX)
        return OMNISYNC_EINVAL;
    for (start = value; is_header_space(*start); start++)
        ;
    for (end = start + strlen(start); end > start && is_header_space(end[-1]); end--)
        ;
    if (start == end)
        return OMNISYNC_EINVAL;

    if (*start >= '0' && *start <= '9') {
        /* delta-seconds = 1*DIGIT (RFC 9110 10.2.3): no sign, no fraction, no exponent. */
        uint64_t seconds = 0;
        const char *p;

        for (p = start; p < end; p++) {
            unsigned digit;

            if (*p < '0' || *p > '9')
                return OMNISYNC_EINVAL;
            digit = (unsigned)(*p - '0');
            if (seconds > (UINT64_MAX - digit) / 10)
                return OMNISYNC_EINVAL;
            seconds = seconds * 10 + digit;
        }
        ms = seconds > UINT64_MAX / 1000 ? UINT64_MAX : seconds * 1000;
    } else if ((*start >= 'A' && *start <= 'Z') || (*start >= 'a' && *start <= 'z')) {
        /* All three HTTP-date forms start with a day name; curl_getdate() knows them all (and
         * ignores its second argument, so it reads no clock). */
        time_t when;

        memcpy(date, start, (size_t)(end - start));
        date[end - start] = '\0';
        when = curl_getdate(date, NULL);
        if (when == (time_t)-1)
            return OMNISYNC_EINVAL;
        if (when <= now) {
            ms = 0;
        } else {
            /* Unsigned subtraction is exact here: the true difference is positive and fits. */
            uint64_t seconds = (uint64_t)when - (uint64_t)now;

            ms = seconds > UINT64_MAX / 1000 ? UINT64_MAX : seconds * 1000;
        }
    } else {
        return OMNISYNC_EINVAL; /* "-5", "+5", ".5", punctuation */
    }
    *delay_ms = ms < max_ms ? ms : max_ms;
    return 0;
}
