/*
 * fuzz_retry_after: backoff_parse_retry_after() on any header value.
 *
 * Properties beyond "no crash": the result is either 0 with a delay within the cap or EINVAL
 * with the output untouched; delta-seconds give exactly min(seconds * 1000, cap); a later `now`
 * never gives a longer wait for the same date; surrounding spaces do not change the answer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "errors.h"

#define CAP_MS (3600ULL * 1000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char value[BACKOFF_RETRY_AFTER_MAX + 8];
    char padded[sizeof(value) + 4];
    uint64_t early = 12345, late = 12345, big = 0, again = 0;
    time_t now = 1767225600; /* 2026-01-01 */
    int rc;

    if (size >= sizeof(value))
        size = sizeof(value) - 1;
    memcpy(value, data, size);
    value[size] = '\0';

    rc = backoff_parse_retry_after(value, now, CAP_MS, &early);
    if (rc != 0) {
        if (rc != OMNISYNC_EINVAL || early != 12345)
            abort();
        return 0;
    }
    if (early > CAP_MS)
        abort();
    /* The same value, an hour later: never a longer wait. */
    if (backoff_parse_retry_after(value, now + 3600, CAP_MS, &late) != 0 || late > early)
        abort();
    /* Without a cap the delay is still defined (no overflow), and the cap is a plain min. */
    if (backoff_parse_retry_after(value, now, UINT64_MAX, &big) != 0)
        abort();
    if (early != (big < CAP_MS ? big : CAP_MS))
        abort();
    /* delta-seconds: exactly the number. */
    if (value[strspn(value, " \t")] >= '0' && value[strspn(value, " \t")] <= '9') {
        unsigned long long s = strtoull(value + strspn(value, " \t"), NULL, 10);
        if (s < UINT64_MAX / 1000 && big != s * 1000)
            abort();
    }
    /* Spaces around the value are not part of it (when the result still fits the limit). */
    if (strlen(value) + 2 <= BACKOFF_RETRY_AFTER_MAX) {
        snprintf(padded, sizeof(padded), " %s\t", value);
        if (backoff_parse_retry_after(padded, now, CAP_MS, &again) != 0 || again != early)
            abort();
    }
    return 0;
}
