/*
 * test_backoff: full-jitter delays (bounds, exact ends, uniformity, no overflow at any attempt)
 * and Retry-After parsing (delta-seconds, the three HTTP-date forms, past dates, garbage,
 * clamping). Randomness comes from a seeded splitmix64, so every run draws the same values.
 */
#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "backoff.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The delivery defaults of DESIGN §6. */
static const struct backoff_policy delivery = {.initial_ms = 1000, .max_ms = 900000};

/* splitmix64: a tiny, well-mixed generator; the seed makes the test reproducible. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ---- caps ----------------------------------------------------------------------------------- */

START_TEST(cap_doubles_then_stops_at_max)
{
    static const uint64_t expect[] = {1000,  2000,   4000,   8000,   16000,  32000,
                                      64000, 128000, 256000, 512000, 900000, 900000};
    unsigned attempt;

    for (attempt = 1; attempt <= ARRAY_SIZE(expect); attempt++)
        ck_assert_uint_eq(backoff_cap_ms(&delivery, attempt), expect[attempt - 1]);
    /* Attempt 0 is treated as the first retry. */
    ck_assert_uint_eq(backoff_cap_ms(&delivery, 0), 1000);
}
END_TEST

START_TEST(cap_never_overflows)
{
    static const unsigned attempts[] = {56,  63,   64,     65,           66,      127,
                                        128, 1000, 100000, UINT_MAX - 1, UINT_MAX};
    const struct backoff_policy huge_max = {.initial_ms = 1000, .max_ms = UINT64_MAX};
    const struct backoff_policy huge_initial = {.initial_ms = UINT64_MAX / 2 + 1,
                                                .max_ms = UINT64_MAX};
    size_t i;

    for (i = 0; i < ARRAY_SIZE(attempts); i++) {
        ck_assert_uint_eq(backoff_cap_ms(&delivery, attempts[i]), 900000);
        /* With no max to stop it the cap saturates at 2^64-1 instead of wrapping to something
         * small: 1000 * 2^63 must not come out as 0. */
        ck_assert_uint_eq(backoff_cap_ms(&huge_max, attempts[i]), UINT64_MAX);
    }
    /* The last doubling that still fits: 1000 * 2^54 < 2^64 <= 1000 * 2^55. */
    ck_assert_uint_eq(backoff_cap_ms(&huge_max, 40), 1000ULL << 39);
    ck_assert_uint_eq(backoff_cap_ms(&huge_max, 55), 1000ULL << 54);
    ck_assert_uint_eq(backoff_cap_ms(&huge_max, 56), UINT64_MAX);
    ck_assert_uint_eq(backoff_cap_ms(&huge_initial, 1), UINT64_MAX / 2 + 1);
    ck_assert_uint_eq(backoff_cap_ms(&huge_initial, 2), UINT64_MAX);
}
END_TEST

START_TEST(cap_degenerate_policies)
{
    const struct backoff_policy zero = {.initial_ms = 0, .max_ms = 1000};
    const struct backoff_policy max_below_initial = {.initial_ms = 5000, .max_ms = 300};
    const struct backoff_policy zero_max = {.initial_ms = 1000, .max_ms = 0};

    ck_assert_uint_eq(backoff_cap_ms(&zero, 1), 0);
    ck_assert_uint_eq(backoff_cap_ms(&zero, 1000), 0);
    ck_assert_uint_eq(backoff_delay_ms(&zero, 7, UINT64_MAX), 0);
    ck_assert_uint_eq(backoff_cap_ms(&max_below_initial, 1), 300);
    ck_assert_uint_eq(backoff_delay_ms(&max_below_initial, 1, UINT64_MAX), 300);
    ck_assert_uint_eq(backoff_delay_ms(&zero_max, 3, UINT64_MAX), 0);
}
END_TEST

/* ---- draws ---------------------------------------------------------------------------------- */

START_TEST(delay_ends_are_exact)
{
    unsigned attempt;

    for (attempt = 0; attempt <= 1000; attempt++) {
        uint64_t cap = backoff_cap_ms(&delivery, attempt);

        ck_assert_uint_eq(backoff_delay_ms(&delivery, attempt, 0), 0);
        ck_assert_uint_eq(backoff_delay_ms(&delivery, attempt, UINT64_MAX), cap);
        ck_assert_uint_le(backoff_delay_ms(&delivery, attempt, UINT64_MAX / 2), cap / 2 + 1);
        ck_assert_uint_ge(backoff_delay_ms(&delivery, attempt, UINT64_MAX / 2), cap / 2 - 1);
    }
}
END_TEST

START_TEST(delay_within_bounds_over_many_draws)
{
    static const struct backoff_policy policies[] = {
        {1000, 900000},           {1, 1}, {1, 2}, {7, 1000}, {250, 60000}, {1000, UINT64_MAX},
        {UINT64_MAX, UINT64_MAX},
    };
    static const unsigned attempts[] = {0, 1, 2, 3, 5, 10, 11, 20, 63, 64, 65, 1000, UINT_MAX};
    uint64_t state = 42;
    size_t p, a;
    int i;

    for (p = 0; p < ARRAY_SIZE(policies); p++) {
        for (a = 0; a < ARRAY_SIZE(attempts); a++) {
            uint64_t cap = backoff_cap_ms(&policies[p], attempts[a]);

            for (i = 0; i < 2000; i++) {
                uint64_t d = backoff_delay_ms(&policies[p], attempts[a], splitmix64(&state));

                ck_assert_msg(d <= cap, "policy %zu attempt %u: %llu > cap %llu", p, attempts[a],
                              (unsigned long long)d, (unsigned long long)cap);
            }
        }
    }
}
END_TEST

START_TEST(delay_is_monotonic_in_random)
{
    uint64_t previous = 0;
    uint64_t r;
    int i;

    /* Walk the whole 64-bit range in uneven steps. */
    for (i = 0, r = 0; i < 100000; i++) {
        uint64_t d = backoff_delay_ms(&delivery, 11, r);

        ck_assert_uint_ge(d, previous);
        previous = d;
        if (UINT64_MAX - r < 184467440737095ULL + (uint64_t)i)
            break;
        r += 184467440737095ULL + (uint64_t)i;
    }
    ck_assert_uint_eq(backoff_delay_ms(&delivery, 11, UINT64_MAX), 900000);
}
END_TEST

/* The mapping is floor(random * (cap + 1) / 2^64); where the compiler has 128-bit integers,
 * check that against them directly. */
START_TEST(delay_matches_128_bit_reference)
{
#ifdef __SIZEOF_INT128__
    static const uint64_t caps[] = {1,
                                    2,
                                    3,
                                    9,
                                    1000,
                                    900000,
                                    0xFFFFFFFFULL,
                                    0x100000000ULL,
                                    0x123456789ABCDEFULL,
                                    UINT64_MAX - 1};
    uint64_t state = 7;
    size_t c;
    int i;

    for (c = 0; c < ARRAY_SIZE(caps); c++) {
        const struct backoff_policy p = {.initial_ms = caps[c], .max_ms = caps[c]};

        for (i = 0; i < 5000; i++) {
            uint64_t r = i == 0 ? 0 : i == 1 ? UINT64_MAX : splitmix64(&state);
            uint64_t expect =
                (uint64_t)(((unsigned __int128)r * ((unsigned __int128)caps[c] + 1)) >> 64);

            ck_assert_uint_eq(backoff_delay_ms(&p, 1, r), expect);
        }
    }
#endif
    /* Without 128 bits: cap 1 splits the range exactly in half. */
    {
        const struct backoff_policy one = {.initial_ms = 1, .max_ms = 1};

        ck_assert_uint_eq(backoff_delay_ms(&one, 1, (1ULL << 63) - 1), 0);
        ck_assert_uint_eq(backoff_delay_ms(&one, 1, 1ULL << 63), 1);
    }
}
END_TEST

START_TEST(delay_full_cap_returns_random)
{
    const struct backoff_policy all = {.initial_ms = UINT64_MAX, .max_ms = UINT64_MAX};

    ck_assert_uint_eq(backoff_delay_ms(&all, 1, 12345), 12345);
    ck_assert_uint_eq(backoff_delay_ms(&all, 1000, UINT64_MAX), UINT64_MAX);
    ck_assert_uint_eq(backoff_delay_ms(&all, 1000, 0), 0);
}
END_TEST

/* Full jitter is uniform over [0, cap]: each of 10 values gets its tenth of 100000 draws. */
START_TEST(delay_is_uniform)
{
    const struct backoff_policy p = {.initial_ms = 9, .max_ms = 9};
    const struct backoff_policy wide = {.initial_ms = 1000, .max_ms = 900000};
    unsigned counts[10] = {0};
    uint64_t state = 2024;
    double sum = 0;
    int i;

    for (i = 0; i < 100000; i++)
        counts[backoff_delay_ms(&p, 1, splitmix64(&state))]++;
    for (i = 0; i < 10; i++)
        ck_assert_msg(counts[i] > 9500 && counts[i] < 10500, "value %d drawn %u times", i,
                      counts[i]);
    /* The mean of a wide draw sits at half the cap. */
    for (i = 0; i < 100000; i++)
        sum += (double)backoff_delay_ms(&wide, 20, splitmix64(&state));
    ck_assert_double_eq_tol(sum / 100000, 450000, 450000 * 0.01);
}
END_TEST

/* ---- Retry-After ---------------------------------------------------------------------------- */

/* 2015-10-21 07:28:00 UTC, the instant of "Wed, 21 Oct 2015 07:28:00 GMT". */
#define OCT21 ((time_t)1445412480)
#define HOUR_MS (3600ULL * 1000)

START_TEST(retry_after_delta_seconds)
{
    static const struct {
        const char *value;
        uint64_t ms;
    } cases[] = {
        {"120", 120000},   {"0", 0},         {"1", 1000},         {"007", 7000},
        {" 120", 120000},  {"120 ", 120000}, {"\t120\t", 120000}, {"120\r\n", 120000},
        {"3600", 3600000},
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        uint64_t ms = 12345;

        ck_assert_msg(backoff_parse_retry_after(cases[i].value, OCT21, UINT64_MAX, &ms) == 0,
                      "cases[%zu] refused", i);
        ck_assert_uint_eq(ms, cases[i].ms);
    }
}
END_TEST

START_TEST(retry_after_clamps_to_max)
{
    uint64_t ms = 0;

    ck_assert_int_eq(backoff_parse_retry_after("3600", OCT21, 60000, &ms), 0);
    ck_assert_uint_eq(ms, 60000);
    ck_assert_int_eq(backoff_parse_retry_after("60", OCT21, 60000, &ms), 0);
    ck_assert_uint_eq(ms, 60000);
    ck_assert_int_eq(backoff_parse_retry_after("59", OCT21, 60000, &ms), 0);
    ck_assert_uint_eq(ms, 59000);
    ck_assert_int_eq(backoff_parse_retry_after("5", OCT21, 0, &ms), 0);
    ck_assert_uint_eq(ms, 0);
    /* The largest 64-bit number of seconds is valid; its milliseconds saturate, then clamp. */
    ck_assert_int_eq(backoff_parse_retry_after("18446744073709551615", OCT21, 900000, &ms), 0);
    ck_assert_uint_eq(ms, 900000);
    ck_assert_int_eq(backoff_parse_retry_after("18446744073709551615", OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, UINT64_MAX);
    /* UINT64_MAX / 1000 = 18446744073709551: one second more must saturate, not wrap. */
    ck_assert_int_eq(backoff_parse_retry_after("18446744073709552", OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, UINT64_MAX);
    ck_assert_int_eq(backoff_parse_retry_after("18446744073709551", OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, 18446744073709551000ULL);
    /* A date an hour ahead, with a one-minute max. */
    ck_assert_int_eq(
        backoff_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", OCT21 - 3600, 60000, &ms), 0);
    ck_assert_uint_eq(ms, 60000);
}
END_TEST

START_TEST(retry_after_http_dates)
{
    static const char *const forms[] = {
        "Wed, 21 Oct 2015 07:28:00 GMT",     /* IMF-fixdate */
        "Wednesday, 21-Oct-15 07:28:00 GMT", /* obsolete RFC 850 */
        "Wed Oct 21 07:28:00 2015",          /* obsolete asctime */
        "  Wed, 21 Oct 2015 07:28:00 GMT  ", /* optional whitespace around it */
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(forms); i++) {
        uint64_t ms = 1;

        ck_assert_msg(backoff_parse_retry_after(forms[i], OCT21 - 120, UINT64_MAX, &ms) == 0,
                      "forms[%zu] refused", i);
        ck_assert_uint_eq(ms, 120000);
        ck_assert_int_eq(backoff_parse_retry_after(forms[i], OCT21 - 86400, UINT64_MAX, &ms), 0);
        ck_assert_uint_eq(ms, 24 * HOUR_MS);
    }
    /* asctime pads a one-digit day with a space. */
    {
        uint64_t ms = 0;

        ck_assert_int_eq(
            backoff_parse_retry_after("Sun Nov  6 08:49:37 1994", 784111777 - 5, UINT64_MAX, &ms),
            0);
        ck_assert_uint_eq(ms, 5000);
        ck_assert_int_eq(backoff_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", 784111777 - 5,
                                                   UINT64_MAX, &ms),
                         0);
        ck_assert_uint_eq(ms, 5000);
    }
}
END_TEST

START_TEST(retry_after_past_dates_give_zero)
{
    uint64_t ms = 99;

    ck_assert_int_eq(
        backoff_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, 0); /* exactly now */
    ms = 99;
    ck_assert_int_eq(
        backoff_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", OCT21 + 1, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, 0);
    ms = 99;
    ck_assert_int_eq(
        backoff_parse_retry_after("Thu, 01 Jan 1970 00:00:01 GMT", OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, 0);
    ms = 99;
    ck_assert_int_eq(backoff_parse_retry_after("Sun Nov  6 08:49:37 1994", OCT21, 60000, &ms), 0);
    ck_assert_uint_eq(ms, 0);
}
END_TEST

START_TEST(retry_after_far_future_date)
{
    uint64_t ms = 0;
    const time_t y9999 = (time_t)253402300799; /* Fri, 31 Dec 9999 23:59:59 GMT */

    if (sizeof(time_t) < 8)
        return; /* a 32-bit time_t cannot name the date */
    ck_assert_int_eq(
        backoff_parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, (uint64_t)(y9999 - OCT21) * 1000);
    ck_assert_int_eq(backoff_parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", OCT21, 900000, &ms),
                     0);
    ck_assert_uint_eq(ms, 900000);
}
END_TEST

START_TEST(retry_after_garbage)
{
    static const char *const garbage[] = {
        "",
        " ",
        "\t\r\n",
        "-1",
        "-0",
        "+120",
        "1.5",
        ".5",
        "1e3",
        "0x10",
        "12 34",
        "120s",
        "120abc",
        "abc",
        "Wed",
        "now",
        "soon",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 25:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 XYZ",
        "\xD9\xA1\xD9\xA2\xD9\xA0",   /* Arabic-Indic digits */
        "18446744073709551616",       /* 2^64 seconds: beyond 64 bits */
        "99999999999999999999999999", /* far beyond */
        ",120",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(garbage); i++) {
        uint64_t ms = 4242;

        ck_assert_msg(backoff_parse_retry_after(garbage[i], OCT21, UINT64_MAX, &ms) ==
                          OMNISYNC_EINVAL,
                      "garbage[%zu] accepted", i);
        ck_assert_uint_eq(ms, 4242); /* untouched on failure */
    }
}
END_TEST

START_TEST(retry_after_length_cap_and_arguments)
{
    char value[BACKOFF_RETRY_AFTER_MAX + 2];
    uint64_t ms = 4242;

    /* 128 bytes of leading zeros and a 5 is still a number... */
    memset(value, '0', BACKOFF_RETRY_AFTER_MAX - 1);
    value[BACKOFF_RETRY_AFTER_MAX - 1] = '5';
    value[BACKOFF_RETRY_AFTER_MAX] = '\0';
    ck_assert_int_eq(backoff_parse_retry_after(value, OCT21, UINT64_MAX, &ms), 0);
    ck_assert_uint_eq(ms, 5000);
    /* ...one byte more is beyond the cap, whatever it says. */
    memset(value, '0', BACKOFF_RETRY_AFTER_MAX);
    value[BACKOFF_RETRY_AFTER_MAX] = '5';
    value[BACKOFF_RETRY_AFTER_MAX + 1] = '\0';
    ms = 4242;
    ck_assert_int_eq(backoff_parse_retry_after(value, OCT21, UINT64_MAX, &ms), OMNISYNC_EINVAL);
    ck_assert_uint_eq(ms, 4242);
    ck_assert_int_eq(backoff_parse_retry_after(NULL, OCT21, UINT64_MAX, &ms), OMNISYNC_EINVAL);
    ck_assert_int_eq(backoff_parse_retry_after("120", OCT21, UINT64_MAX, NULL), OMNISYNC_EINVAL);
}
END_TEST

static Suite *backoff_suite(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc;

    tc = tcase_create("delay");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, cap_doubles_then_stops_at_max);
    tcase_add_test(tc, cap_never_overflows);
    tcase_add_test(tc, cap_degenerate_policies);
    tcase_add_test(tc, delay_ends_are_exact);
    tcase_add_test(tc, delay_within_bounds_over_many_draws);
    tcase_add_test(tc, delay_is_monotonic_in_random);
    tcase_add_test(tc, delay_matches_128_bit_reference);
    tcase_add_test(tc, delay_full_cap_returns_random);
    tcase_add_test(tc, delay_is_uniform);
    suite_add_tcase(s, tc);

    tc = tcase_create("retry_after");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, retry_after_delta_seconds);
    tcase_add_test(tc, retry_after_clamps_to_max);
    tcase_add_test(tc, retry_after_http_dates);
    tcase_add_test(tc, retry_after_past_dates_give_zero);
    tcase_add_test(tc, retry_after_far_future_date);
    tcase_add_test(tc, retry_after_garbage);
    tcase_add_test(tc, retry_after_length_cap_and_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(backoff_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
