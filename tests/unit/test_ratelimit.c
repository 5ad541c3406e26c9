/*
 * test_ratelimit: the token bucket with exact clock values: burst, refill to the millisecond,
 * fractional rates, the wait_ms promise, unlimited rate, reload and the Retry-After pause.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>

#include "ratelimit.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Takes every token available at `now`; returns how many that was (bounded, for safety). */
static unsigned drain(struct ratelimit *rl, uint64_t now)
{
    unsigned n = 0;

    while (n < 1000000 && ratelimit_take(rl, now))
        n++;
    return n;
}

START_TEST(init_burst_defaults)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 0);
    ck_assert_double_eq(rl.rate, 10);
    ck_assert_double_eq(rl.burst, 10);
    ck_assert_double_eq(rl.tokens, 10); /* starts full */
    ratelimit_init(&rl, 10, 3, 0);
    ck_assert_double_eq(rl.burst, 3);
    ratelimit_init(&rl, 0.5, 0, 0);
    ck_assert_double_eq(rl.burst, 1); /* max(1, rate) */
    ratelimit_init(&rl, 10, 0.25, 0);
    ck_assert_double_eq(rl.burst, 1); /* below one token nothing could ever be sent */
    ratelimit_init(&rl, 10, -4, 0);
    ck_assert_double_eq(rl.burst, 10);
    ratelimit_init(&rl, 10, NAN, 0);
    ck_assert_double_eq(rl.burst, 10);
    ratelimit_init(&rl, 10, INFINITY, 0);
    ck_assert_double_eq(rl.burst, 10);
    ratelimit_init(&rl, -1, 0, 0);
    ck_assert_double_eq(rl.rate, 0);
    ratelimit_init(&rl, NAN, 0, 0);
    ck_assert_double_eq(rl.rate, 0);
    ratelimit_init(&rl, INFINITY, 0, 0);
    ck_assert_double_eq(rl.rate, 0);
}
END_TEST

START_TEST(burst_then_refill_exactly)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 1000);
    ck_assert_uint_eq(drain(&rl, 1000), 10);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 100);
    ck_assert_int_eq(ratelimit_take(&rl, 1099), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1099), 1);
    ck_assert_int_eq(ratelimit_take(&rl, 1100), 1);
    ck_assert_int_eq(ratelimit_take(&rl, 1100), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1100), 100);
    /* 450 ms later: 4.5 tokens, so four takes and a 50 ms wait for the fifth. */
    ck_assert_uint_eq(drain(&rl, 1550), 4);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1550), 50);
    /* A full second refills the whole burst, and a long idle refills no more than that. */
    ck_assert_uint_eq(drain(&rl, 2550), 10);
    ck_assert_uint_eq(drain(&rl, 1000000000), 10);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000000000), 100);
}
END_TEST

START_TEST(explicit_burst_smaller_than_rate)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 100, 5, 0);
    ck_assert_uint_eq(drain(&rl, 0), 5);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 0), 10);
    ck_assert_uint_eq(drain(&rl, 10), 1);
    ck_assert_uint_eq(drain(&rl, 1000), 5); /* capped at the burst, not at the rate */
}
END_TEST

/* A sender that tries every millisecond for 10 s at 3/s, after spending its burst of 3, gets
 * exactly 30 more tokens, the k-th at ceil(1000 k / 3) ms: 334, 667, 1000, ... */
START_TEST(fractional_rate_schedule)
{
    struct ratelimit rl;
    unsigned taken = 0;
    uint64_t t;

    ratelimit_init(&rl, 3, 0, 0);
    ck_assert_double_eq(rl.burst, 3);
    ck_assert_uint_eq(drain(&rl, 0), 3);
    for (t = 1; t <= 10000; t++) {
        if (ratelimit_take(&rl, t)) {
            uint64_t expect = ((uint64_t)(taken + 1) * 1000 + 2) / 3; /* ceil(1000 k / 3) */

            ck_assert_uint_eq(t, expect);
            taken++;
        }
    }
    ck_assert_uint_eq(taken, 30);
}
END_TEST

/* Half a token per second: two seconds per request. */
START_TEST(slow_rate)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 0.5, 0, 0);
    ck_assert_int_eq(ratelimit_take(&rl, 0), 1);
    ck_assert_int_eq(ratelimit_take(&rl, 0), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 0), 2000);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1500), 500);
    ck_assert_int_eq(ratelimit_take(&rl, 1999), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 2000), 1);
}
END_TEST

/*
 * The promise the sender's timer relies on, over many rates and irregular call times: when a take
 * fails, wait_ms() is positive, a take that much later succeeds, and one millisecond earlier it
 * would not have. Over the whole run no more than burst + rate * elapsed tokens are handed out.
 */
START_TEST(wait_ms_is_exact)
{
    static const double rates[] = {0.1, 0.5, 1, 3, 7, 10, 33.3, 99.9, 250, 1000, 12345.6};
    static const double bursts[] = {0, 1, 2.5, 50};
    size_t r, b;

    for (r = 0; r < ARRAY_SIZE(rates); r++) {
        for (b = 0; b < ARRAY_SIZE(bursts); b++) {
            struct ratelimit rl;
            uint64_t now = 5000;
            uint64_t start = now;
            uint64_t state = 1;
            unsigned taken = 0;
            double burst;
            int i;

            ratelimit_init(&rl, rates[r], bursts[b], now);
            burst = rl.burst;
            for (i = 0; i < 400; i++) {
                uint64_t w;

                if (ratelimit_take(&rl, now)) {
                    taken++;
                } else {
                    w = ratelimit_wait_ms(&rl, now);
                    ck_assert_msg(w > 0, "rate %g burst %g: wait 0 but take failed", rates[r],
                                  bursts[b]);
                    if (w > 1) {
                        struct ratelimit probe = rl;

                        ck_assert_msg(!ratelimit_take(&probe, now + w - 1),
                                      "rate %g: took a token 1 ms before the wait ended", rates[r]);
                    }
                    now += w;
                    ck_assert_msg(ratelimit_take(&rl, now),
                                  "rate %g burst %g: waited %llu ms, "
                                  "still no token",
                                  rates[r], bursts[b], (unsigned long long)w);
                    taken++;
                }
                /* Irregular gaps between attempts: 0 to 6 ms. */
                state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                now += (state >> 61) % 7;
            }
            ck_assert_msg((double)taken <= burst + rates[r] * (double)(now - start) / 1000 + 1e-6,
                          "rate %g burst %g: %u tokens in %llu ms", rates[r], bursts[b], taken,
                          (unsigned long long)(now - start));
        }
    }
}
END_TEST

START_TEST(rate_zero_is_unlimited)
{
    struct ratelimit rl;
    int i;

    ratelimit_init(&rl, 0, 0, 0);
    for (i = 0; i < 100000; i++)
        ck_assert_int_eq(ratelimit_take(&rl, 7), 1);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 7), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, UINT64_MAX), 0);
}
END_TEST

START_TEST(tiny_rate_saturates_wait)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 1e-300, 0, 1000);
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 1);
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 0);
    /* 1e303 ms does not fit in 64 bits: the wait saturates rather than wrapping. */
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), UINT64_MAX - 1000);
    ratelimit_init(&rl, 1e-6, 0, 0);
    ck_assert_int_eq(ratelimit_take(&rl, 0), 1);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 0), 1000000000ULL); /* 1e9 ms, about 11.6 days */
}
END_TEST

START_TEST(clock_going_backwards_earns_nothing)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 1, 1000);
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 1);
    ck_assert_int_eq(ratelimit_take(&rl, 500), 0);
    ck_assert_uint_eq(rl.last_ms, 1000);
    ck_assert_int_eq(ratelimit_take(&rl, 1099), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 1100), 1);
}
END_TEST

/* ---- reload --------------------------------------------------------------------------------- */

START_TEST(set_rate_keeps_tokens_capped)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 0);
    ck_assert_uint_eq(drain(&rl, 0), 10);
    /* 500 ms at the old rate earned 5 tokens; the new burst of 2 keeps 2 of them. */
    ratelimit_set_rate(&rl, 2, 0, 500);
    ck_assert_double_eq(rl.rate, 2);
    ck_assert_double_eq(rl.burst, 2);
    ck_assert_uint_eq(drain(&rl, 500), 2);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 500), 500);
    /* Raising the rate keeps the empty bucket empty but refills faster. */
    ratelimit_set_rate(&rl, 100, 0, 600);
    ck_assert_double_eq(rl.burst, 100);
    ck_assert_uint_eq(drain(&rl, 600), 0); /* 0.2 tokens earned at 2/s */
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 600), 8);
    ck_assert_uint_eq(drain(&rl, 608), 1);
    /* Raising the burst does not hand out tokens nobody earned. */
    ratelimit_init(&rl, 10, 0, 0);
    ck_assert_uint_eq(drain(&rl, 0), 10);
    ratelimit_set_rate(&rl, 10, 50, 0);
    ck_assert_uint_eq(drain(&rl, 0), 0);
    ck_assert_uint_eq(drain(&rl, 5000), 50);
}
END_TEST

START_TEST(set_rate_between_limited_and_unlimited)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 0);
    ck_assert_uint_eq(drain(&rl, 0), 10);
    ratelimit_set_rate(&rl, 0, 0, 10);
    ck_assert_uint_eq(drain(&rl, 10), 1000000); /* unlimited: drain() stops at its bound */
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 10), 0);
    /* Back to limited: the bucket starts full, since unlimited never ran dry. */
    ratelimit_set_rate(&rl, 5, 0, 20000);
    ck_assert_uint_eq(rl.last_ms, 20000);
    ck_assert_uint_eq(drain(&rl, 20000), 5);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 20000), 200);
}
END_TEST

START_TEST(set_rate_keeps_pause)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 0);
    ratelimit_pause_until(&rl, 3000);
    ratelimit_set_rate(&rl, 20, 0, 1000);
    ck_assert_int_eq(ratelimit_take(&rl, 2999), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 2000);
    ck_assert_int_eq(ratelimit_take(&rl, 3000), 1);
}
END_TEST

/* A take whose request the HTTP client refused (busy, or it could not start) costs nothing: the
 * dispatcher refunds it, and the next request goes at once instead of a whole period later. */
START_TEST(refund_restores_the_token_of_a_refused_send)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 1, 1, 1000);
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 1); /* omnidesk_send answers OMNISYNC_EBUSY */
    ratelimit_refund(&rl);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 1); /* accepted: this one is spent */
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 1000);

    /* Never above the burst, so refunds cannot build a burst nobody earned. */
    ratelimit_init(&rl, 10, 3, 0);
    ratelimit_refund(&rl);
    ratelimit_refund(&rl);
    ck_assert_double_eq(rl.tokens, 3);
    ck_assert_uint_eq(drain(&rl, 0), 3);

    /* A refund does not open a pause in force, and unlimited stays unlimited. */
    ratelimit_init(&rl, 10, 0, 0);
    ck_assert_int_eq(ratelimit_take(&rl, 0), 1);
    ratelimit_pause_until(&rl, 5000);
    ratelimit_refund(&rl);
    ck_assert_int_eq(ratelimit_take(&rl, 4999), 0);
    ck_assert_uint_eq(drain(&rl, 5000), 1); /* still one probe at the end of the pause */
    ratelimit_init(&rl, 0, 0, 0);
    ratelimit_refund(&rl);
    ck_assert_double_eq(rl.rate, 0);
    ck_assert_int_eq(ratelimit_take(&rl, 0), 1);
}
END_TEST

/* ---- Retry-After pause ---------------------------------------------------------------------- */

START_TEST(pause_blocks_then_lets_one_through)
{
    struct ratelimit rl;
    uint64_t t;

    ratelimit_init(&rl, 10, 0, 0);
    ratelimit_pause_until(&rl, 5000);
    for (t = 0; t < 5000; t += 250)
        ck_assert_int_eq(ratelimit_take(&rl, t), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 4999), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 0), 5000);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 4000), 1000);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 4999), 1);
    /* At the end of the pause one request goes, not a burst of ten; then the normal rate. */
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 5000), 0);
    ck_assert_uint_eq(drain(&rl, 5000), 1);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 5000), 100);
    ck_assert_int_eq(ratelimit_take(&rl, 5099), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 5100), 1);
    ck_assert_uint_eq(drain(&rl, 6100), 10);
}
END_TEST

START_TEST(pause_is_never_shortened)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 0);
    ratelimit_pause_until(&rl, 5000);
    ratelimit_pause_until(&rl, 3000); /* a later 429 with a shorter Retry-After */
    ck_assert_int_eq(ratelimit_take(&rl, 4000), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 4000), 1000);
    ratelimit_pause_until(&rl, 8000); /* ...and one with a longer one extends it */
    ck_assert_int_eq(ratelimit_take(&rl, 5000), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 7999), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 5000), 3000);
    ck_assert_uint_eq(drain(&rl, 8000), 1);
}
END_TEST

START_TEST(pause_in_the_past_changes_nothing)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 10, 0, 1000);
    ratelimit_pause_until(&rl, 500);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 0);
    ck_assert_uint_eq(drain(&rl, 1000), 10);
}
END_TEST

START_TEST(pause_does_not_grant_unearned_tokens)
{
    struct ratelimit rl;

    /* 0.5 tokens per second, drained: a one-second pause earns half a token, not a whole one. */
    ratelimit_init(&rl, 0.5, 5, 0);
    ck_assert_uint_eq(drain(&rl, 0), 5);
    ratelimit_pause_until(&rl, 1000);
    ck_assert_int_eq(ratelimit_take(&rl, 1000), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 1000);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 0), 2000); /* the pause and the bucket, combined */
    ck_assert_int_eq(ratelimit_take(&rl, 1999), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 2000), 1);
}
END_TEST

START_TEST(pause_applies_when_unlimited)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 0, 0, 0);
    ratelimit_pause_until(&rl, 2500);
    ck_assert_int_eq(ratelimit_take(&rl, 0), 0);
    ck_assert_int_eq(ratelimit_take(&rl, 2499), 0);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 1000), 1500);
    ck_assert_uint_eq(drain(&rl, 2500), 1000000);
    ck_assert_uint_eq(ratelimit_wait_ms(&rl, 2500), 0);
}
END_TEST

static Suite *ratelimit_suite(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc;

    tc = tcase_create("bucket");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, init_burst_defaults);
    tcase_add_test(tc, burst_then_refill_exactly);
    tcase_add_test(tc, explicit_burst_smaller_than_rate);
    tcase_add_test(tc, fractional_rate_schedule);
    tcase_add_test(tc, slow_rate);
    tcase_add_test(tc, wait_ms_is_exact);
    tcase_add_test(tc, rate_zero_is_unlimited);
    tcase_add_test(tc, tiny_rate_saturates_wait);
    tcase_add_test(tc, clock_going_backwards_earns_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("reload");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, set_rate_keeps_tokens_capped);
    tcase_add_test(tc, set_rate_between_limited_and_unlimited);
    tcase_add_test(tc, set_rate_keeps_pause);
    tcase_add_test(tc, refund_restores_the_token_of_a_refused_send);
    suite_add_tcase(s, tc);

    tc = tcase_create("pause");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, pause_blocks_then_lets_one_through);
    tcase_add_test(tc, pause_is_never_shortened);
    tcase_add_test(tc, pause_in_the_past_changes_nothing);
    tcase_add_test(tc, pause_does_not_grant_unearned_tokens);
    tcase_add_test(tc, pause_applies_when_unlimited);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ratelimit_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
