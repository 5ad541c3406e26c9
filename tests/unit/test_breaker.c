/*
 * test_breaker: when the circuit opens (and when it must not), how probes are spaced while it is
 * open, and how a probe's outcome closes or reopens it. Time and randomness are passed in, so
 * every schedule below is exact.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "breaker.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Jitter values: MAX_DRAW gives the full backoff cap, MIN_DRAW gives 0 (so the floor applies). */
#define MAX_DRAW UINT64_MAX
#define MIN_DRAW 0

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void init_default(struct breaker *b)
{
    struct breaker_config cfg;

    breaker_config_default(&cfg);
    breaker_init(b, &cfg);
}

/* Records `n` outcomes `o` at `now`; returns the state after the last. */
static enum breaker_state record_n(struct breaker *b, enum breaker_outcome o, unsigned n,
                                   uint64_t now)
{
    enum breaker_state s = breaker_get_state(b);

    while (n-- > 0)
        s = breaker_record(b, o, now, MAX_DRAW);
    return s;
}

/* Opens a default breaker at `now` with ten transient failures (the minimum to judge). */
static void open_default(struct breaker *b, uint64_t now, uint64_t random)
{
    init_default(b);
    record_n(b, BREAKER_TRANSIENT, 9, now);
    ck_assert_int_eq(breaker_get_state(b), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_record(b, BREAKER_TRANSIENT, now, random), BREAKER_OPEN);
}

/* ---- config --------------------------------------------------------------------------------- */

START_TEST(config_defaults)
{
    struct breaker_config cfg;
    struct breaker b;

    memset(&cfg, 0xAB, sizeof(cfg));
    breaker_config_default(&cfg);
    ck_assert_uint_eq(cfg.window, 20);
    ck_assert_uint_eq(cfg.min_requests, 10);
    ck_assert_double_eq(cfg.failure_ratio, 0.8);
    ck_assert_uint_eq(cfg.probe.initial_ms, 1000);
    ck_assert_uint_eq(cfg.probe.max_ms, 60000);

    /* NULL means the defaults. */
    breaker_init(&b, NULL);
    ck_assert_uint_eq(b.cfg.window, 20);
    ck_assert_uint_eq(b.cfg.min_requests, 10);
    ck_assert_int_eq(breaker_get_state(&b), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_allows_delivery(&b), 1);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 0);
    ck_assert_int_eq(breaker_take_probe(&b, 123456), 0); /* nothing to probe while closed */
}
END_TEST

START_TEST(config_is_normalised)
{
    struct breaker_config cfg;
    struct breaker b;

    breaker_config_default(&cfg);
    cfg.window = 0;
    cfg.min_requests = 0;
    cfg.failure_ratio = NAN;
    cfg.probe.initial_ms = 0;
    cfg.probe.max_ms = 0;
    breaker_init(&b, &cfg);
    ck_assert_uint_eq(b.cfg.window, 20);
    ck_assert_uint_eq(b.cfg.min_requests, 1);
    ck_assert_double_eq(b.cfg.failure_ratio, 0.8);
    ck_assert_uint_eq(b.cfg.probe.initial_ms, 1000); /* never a busy probe loop */
    ck_assert_uint_eq(b.cfg.probe.max_ms, 1000);

    cfg.window = 1000;
    cfg.min_requests = 500;
    cfg.failure_ratio = 2;
    cfg.probe.initial_ms = 5000;
    cfg.probe.max_ms = 10;
    breaker_init(&b, &cfg);
    ck_assert_uint_eq(b.cfg.window, BREAKER_WINDOW_MAX);
    ck_assert_uint_eq(b.cfg.min_requests, BREAKER_WINDOW_MAX); /* else it could never open */
    ck_assert_double_eq(b.cfg.failure_ratio, 1);
    ck_assert_uint_eq(b.cfg.probe.max_ms, 5000);

    cfg.failure_ratio = -3;
    breaker_init(&b, &cfg);
    ck_assert_double_eq(b.cfg.failure_ratio, 0);
}
END_TEST

START_TEST(state_names)
{
    ck_assert_str_eq(breaker_state_name(BREAKER_CLOSED), "closed");
    ck_assert_str_eq(breaker_state_name(BREAKER_OPEN), "open");
    ck_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
    ck_assert_str_eq(breaker_state_name((enum breaker_state)42), "unknown");
}
END_TEST

/* ---- when it opens -------------------------------------------------------------------------- */

START_TEST(scattered_failures_do_not_open)
{
    struct breaker b;
    int i;

    init_default(&b);
    /* One in five failing, for a long time: one customer's bad luck, not an outage. */
    for (i = 0; i < 1000; i++) {
        enum breaker_outcome o = i % 5 == 0 ? BREAKER_TRANSIENT : BREAKER_SUCCESS;

        ck_assert_int_eq(breaker_record(&b, o, (uint64_t)i, MAX_DRAW), BREAKER_CLOSED);
    }
    /* Seven of ten (below 0.8) does not open either. */
    init_default(&b);
    record_n(&b, BREAKER_TRANSIENT, 7, 0);
    ck_assert_int_eq(record_n(&b, BREAKER_SUCCESS, 3, 0), BREAKER_CLOSED);
    /* Alternating, the share stays at one half. */
    init_default(&b);
    for (i = 0; i < 200; i++)
        ck_assert_int_eq(
            breaker_record(&b, i & 1 ? BREAKER_TRANSIENT : BREAKER_SUCCESS, (uint64_t)i, MAX_DRAW),
            BREAKER_CLOSED);
    ck_assert_int_eq(breaker_allows_delivery(&b), 1);
    ck_assert_uint_eq(b.opened_total, 0);
}
END_TEST

START_TEST(too_few_requests_to_judge)
{
    struct breaker b;

    init_default(&b);
    /* Nine failures in a row is below min_requests: no verdict yet. */
    ck_assert_int_eq(record_n(&b, BREAKER_TRANSIENT, 9, 0), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_allows_delivery(&b), 1);
    /* The tenth gives ten of ten. */
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 0, MAX_DRAW), BREAKER_OPEN);
}
END_TEST

START_TEST(threshold_is_inclusive)
{
    struct breaker b;

    /* Exactly 8 of 10 = 0.8: opens on the outcome that completes it. */
    init_default(&b);
    record_n(&b, BREAKER_SUCCESS, 2, 0);
    ck_assert_int_eq(record_n(&b, BREAKER_TRANSIENT, 7, 0), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 0, MAX_DRAW), BREAKER_OPEN);
    /* 16 of 20: 0.8 again, with a full window. */
    init_default(&b);
    record_n(&b, BREAKER_SUCCESS, 4, 0);
    ck_assert_int_eq(record_n(&b, BREAKER_TRANSIENT, 15, 0), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 0, MAX_DRAW), BREAKER_OPEN);
}
END_TEST

/* Healthy traffic, then the API goes down: with a window full of successes, the sixteenth
 * failure in a row makes 16 of the last 20. */
START_TEST(burst_of_failures_opens)
{
    struct breaker b;
    int i;

    init_default(&b);
    record_n(&b, BREAKER_SUCCESS, 60, 0);
    for (i = 1; i <= 15; i++)
        ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 1000, MAX_DRAW), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 1000, MAX_DRAW), BREAKER_OPEN);
    ck_assert_int_eq(breaker_allows_delivery(&b), 0);
    ck_assert_uint_eq(b.opened_total, 1);
    ck_assert_uint_eq(b.opens, 1);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 1000 + 1000);
}
END_TEST

START_TEST(permanent_failures_never_open)
{
    struct breaker b;
    int i;

    init_default(&b);
    /* A CRM full of invalid rows: every answer a 4xx. The API is up. */
    for (i = 0; i < 1000; i++)
        ck_assert_int_eq(breaker_record(&b, BREAKER_PERMANENT, (uint64_t)i, MAX_DRAW),
                         BREAKER_CLOSED);
    /* Permanent failures count as successes in the share: 15 transient + 5 permanent = 0.75. */
    init_default(&b);
    for (i = 0; i < 200; i++) {
        enum breaker_outcome o = i % 4 == 0 ? BREAKER_PERMANENT : BREAKER_TRANSIENT;

        ck_assert_int_eq(breaker_record(&b, o, (uint64_t)i, MAX_DRAW), BREAKER_CLOSED);
    }
    ck_assert_uint_eq(b.opened_total, 0);
}
END_TEST

/* A failure ratio of 0 still needs a transient failure: successes alone never open. */
START_TEST(zero_ratio_needs_a_failure)
{
    struct breaker_config cfg;
    struct breaker b;

    breaker_config_default(&cfg);
    cfg.failure_ratio = 0;
    breaker_init(&b, &cfg);
    ck_assert_int_eq(record_n(&b, BREAKER_SUCCESS, 100, 0), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 0, MAX_DRAW), BREAKER_OPEN);
}
END_TEST

/*
 * The ring against a brute-force model: for several window sizes and ratios, long random streams
 * of outcomes. The breaker must open exactly when the last `window` outcomes (since the last
 * close) hold at least min_requests entries and the transient share reaches the ratio.
 */
START_TEST(ring_matches_brute_force_model)
{
    static const struct {
        unsigned window, min_requests;
        double ratio;
        unsigned failure_percent;
    } cases[] = {
        {1, 1, 1.0, 30},   {2, 2, 0.5, 30},   {5, 3, 0.6, 40},   {20, 10, 0.8, 60},
        {20, 20, 0.8, 75}, {64, 64, 0.9, 85}, {64, 10, 0.5, 45}, {7, 4, 0.75, 55},
    };
    enum { STREAM = 20000 };
    static unsigned char history[STREAM];
    uint64_t state = 99;
    size_t c;

    for (c = 0; c < ARRAY_SIZE(cases); c++) {
        struct breaker_config cfg;
        struct breaker b;
        size_t since_close = 0; /* index in history where the current CLOSED period began */
        size_t n;
        unsigned opened = 0;

        breaker_config_default(&cfg);
        cfg.window = cases[c].window;
        cfg.min_requests = cases[c].min_requests;
        cfg.failure_ratio = cases[c].ratio;
        breaker_init(&b, &cfg);
        for (n = 0; n < STREAM; n++) {
            int transient = splitmix64(&state) % 100 < cases[c].failure_percent;
            size_t count = n + 1 - since_close;
            size_t failures = 0;
            size_t k;
            int expect_open;
            enum breaker_state s;

            history[n] = (unsigned char)transient;
            if (count > cases[c].window)
                count = cases[c].window;
            for (k = n + 1 - count; k <= n; k++)
                failures += history[k];
            expect_open = count >= cases[c].min_requests && failures > 0 &&
                          (double)failures >= cases[c].ratio * (double)count - 1e-9;

            s = breaker_record(&b, transient ? BREAKER_TRANSIENT : BREAKER_PERMANENT, n, MAX_DRAW);
            ck_assert_msg(s == (expect_open ? BREAKER_OPEN : BREAKER_CLOSED),
                          "case %zu outcome %zu: %d failures of %zu, state %s", c, n, (int)failures,
                          count, breaker_state_name(s));
            if (s == BREAKER_OPEN) {
                /* Close it through a successful probe; the model starts over, as must the ring. */
                opened++;
                ck_assert_int_eq(breaker_take_probe(&b, UINT64_MAX), 1);
                ck_assert_int_eq(breaker_record(&b, BREAKER_SUCCESS, n, MAX_DRAW), BREAKER_CLOSED);
                since_close = n + 1;
            }
        }
        ck_assert_msg(opened > 0, "case %zu never opened: the model test proves nothing", c);
    }
}
END_TEST

/* ---- while open ----------------------------------------------------------------------------- */

START_TEST(open_allows_no_delivery_and_ignores_stragglers)
{
    struct breaker b;
    uint64_t next;

    open_default(&b, 5000, MAX_DRAW);
    next = breaker_next_probe_ms(&b);
    ck_assert_uint_eq(next, 6000);
    ck_assert_int_eq(breaker_allows_delivery(&b), 0);
    /* Requests that were in flight when it opened finish now: none of them changes anything. */
    ck_assert_int_eq(record_n(&b, BREAKER_SUCCESS, 50, 5100), BREAKER_OPEN);
    ck_assert_int_eq(record_n(&b, BREAKER_PERMANENT, 5, 5200), BREAKER_OPEN);
    ck_assert_int_eq(record_n(&b, BREAKER_TRANSIENT, 50, 5300), BREAKER_OPEN);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), next);
    ck_assert_uint_eq(b.opens, 1);
    ck_assert_uint_eq(b.opened_total, 1);
    ck_assert_int_eq(breaker_allows_delivery(&b), 0);
}
END_TEST

START_TEST(probe_only_when_due_and_only_one)
{
    struct breaker b;

    open_default(&b, 5000, MAX_DRAW);
    ck_assert_int_eq(breaker_take_probe(&b, 5000), 0);
    ck_assert_int_eq(breaker_take_probe(&b, 5999), 0);
    ck_assert_int_eq(breaker_get_state(&b), BREAKER_OPEN);
    ck_assert_int_eq(breaker_take_probe(&b, 6000), 1);
    ck_assert_int_eq(breaker_get_state(&b), BREAKER_HALF_OPEN);
    ck_assert_int_eq(b.probe_in_flight, 1);
    /* One probe at a time, and still no normal delivery while it is out. */
    ck_assert_int_eq(breaker_take_probe(&b, 6000), 0);
    ck_assert_int_eq(breaker_take_probe(&b, 100000), 0);
    ck_assert_int_eq(breaker_allows_delivery(&b), 0);
}
END_TEST

/* Failed probe after failed probe: the intervals double, 1 s, 2 s, 4 s ... and stop at 60 s. */
START_TEST(probe_intervals_grow_to_the_cap)
{
    static const uint64_t expect[] = {1000,  2000,  4000,  8000,  16000, 32000,
                                      60000, 60000, 60000, 60000, 60000};
    struct breaker b;
    uint64_t now = 10000;
    size_t i;

    open_default(&b, now, MAX_DRAW);
    for (i = 0; i < ARRAY_SIZE(expect); i++) {
        uint64_t next = breaker_next_probe_ms(&b);

        ck_assert_msg(next - now == expect[i], "interval %zu: %llu ms", i,
                      (unsigned long long)(next - now));
        ck_assert_int_eq(breaker_take_probe(&b, next - 1), 0);
        now = next;
        ck_assert_int_eq(breaker_take_probe(&b, now), 1);
        now += 300; /* the probe's round trip */
        ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, now, MAX_DRAW), BREAKER_OPEN);
        ck_assert_int_eq(breaker_allows_delivery(&b), 0);
    }
    ck_assert_uint_eq(b.opens, ARRAY_SIZE(expect) + 1);
    ck_assert_uint_eq(b.opened_total, ARRAY_SIZE(expect) + 1);
}
END_TEST

/* With real jitter each interval lies in [initial / 2, min(max, initial * 2^(n-1))]. */
START_TEST(probe_intervals_jittered_within_bounds)
{
    struct breaker b;
    uint64_t state = 5;
    uint64_t now = 0;
    unsigned n;

    open_default(&b, now, splitmix64(&state));
    for (n = 1; n <= 200; n++) {
        uint64_t interval = breaker_next_probe_ms(&b) - now;
        uint64_t cap = n >= 7 ? 60000 : 1000ULL << (n - 1);

        ck_assert_msg(interval >= 500 && interval <= cap, "probe %u: %llu ms", n,
                      (unsigned long long)interval);
        now = breaker_next_probe_ms(&b);
        ck_assert_int_eq(breaker_take_probe(&b, now), 1);
        ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, now, splitmix64(&state)),
                         BREAKER_OPEN);
    }
}
END_TEST

/* A zero draw would probe at once, into the outage just seen: the floor is initial / 2. */
START_TEST(probe_interval_floor)
{
    struct breaker b;

    open_default(&b, 7000, MIN_DRAW);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 7500);
    ck_assert_int_eq(breaker_take_probe(&b, 7500), 1);
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 7600, MIN_DRAW), BREAKER_OPEN);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 8100);
}
END_TEST

START_TEST(probe_time_saturates)
{
    struct breaker b;

    open_default(&b, UINT64_MAX - 10, MAX_DRAW);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), UINT64_MAX);
    ck_assert_int_eq(breaker_take_probe(&b, UINT64_MAX - 1), 0);
    ck_assert_int_eq(breaker_take_probe(&b, UINT64_MAX), 1);
}
END_TEST

/* ---- probe outcomes ------------------------------------------------------------------------- */

START_TEST(successful_probe_closes_and_clears_history)
{
    struct breaker b;

    open_default(&b, 0, MAX_DRAW);
    /* Two failed probes first, so the interval has grown. */
    ck_assert_int_eq(breaker_take_probe(&b, breaker_next_probe_ms(&b)), 1);
    breaker_record(&b, BREAKER_TRANSIENT, 1000, MAX_DRAW);
    ck_assert_int_eq(breaker_take_probe(&b, breaker_next_probe_ms(&b)), 1);
    breaker_record(&b, BREAKER_TRANSIENT, 3000, MAX_DRAW);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 3000 + 4000);
    ck_assert_int_eq(breaker_take_probe(&b, 7000), 1);
    ck_assert_int_eq(breaker_record(&b, BREAKER_SUCCESS, 7100, MAX_DRAW), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_allows_delivery(&b), 1);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 0);
    ck_assert_uint_eq(b.count, 0);
    ck_assert_uint_eq(b.failures, 0);
    ck_assert_int_eq(b.probe_in_flight, 0);
    /* History is gone: the ten failures that opened it do not count against the next nine. */
    ck_assert_int_eq(record_n(&b, BREAKER_TRANSIENT, 9, 8000), BREAKER_CLOSED);
    /* And the probe backoff starts over at one second when it opens again. */
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 8000, MAX_DRAW), BREAKER_OPEN);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 9000);
    ck_assert_uint_eq(b.opens, 1);
    ck_assert_uint_eq(b.opened_total, 4);
}
END_TEST

START_TEST(permanent_probe_answer_closes)
{
    struct breaker b;

    open_default(&b, 0, MAX_DRAW);
    ck_assert_int_eq(breaker_take_probe(&b, 1000), 1);
    /* A 4xx about the probed row: the API answered, so it is up. */
    ck_assert_int_eq(breaker_record(&b, BREAKER_PERMANENT, 1100, MAX_DRAW), BREAKER_CLOSED);
    ck_assert_int_eq(breaker_allows_delivery(&b), 1);
}
END_TEST

START_TEST(failed_probe_reopens)
{
    struct breaker b;

    open_default(&b, 0, MAX_DRAW);
    ck_assert_int_eq(breaker_take_probe(&b, 1000), 1);
    ck_assert_int_eq(breaker_record(&b, BREAKER_TRANSIENT, 1200, MAX_DRAW), BREAKER_OPEN);
    ck_assert_int_eq(breaker_allows_delivery(&b), 0);
    ck_assert_int_eq(b.probe_in_flight, 0);
    ck_assert_uint_eq(breaker_next_probe_ms(&b), 1200 + 2000);
    ck_assert_int_eq(breaker_take_probe(&b, 3199), 0);
    ck_assert_int_eq(breaker_take_probe(&b, 3200), 1);
}
END_TEST

/* A whole outage: open, a day of failed probes, then recovery and normal traffic. */
START_TEST(outage_of_a_day)
{
    const uint64_t day = 24ULL * 3600 * 1000;
    struct breaker b;
    uint64_t state = 11;
    uint64_t now = 0;
    unsigned probes = 0;

    open_default(&b, now, splitmix64(&state));
    while (now < day) {
        now = breaker_next_probe_ms(&b);
        ck_assert_int_eq(breaker_allows_delivery(&b), 0);
        ck_assert_int_eq(breaker_take_probe(&b, now), 1);
        probes++;
        breaker_record(&b, BREAKER_TRANSIENT, now + 10000, splitmix64(&state));
        now += 10000; /* each probe times out after 10 s */
    }
    /* Each interval is 0.5 to 60 s of jittered backoff plus the 10 s timeout. */
    ck_assert_uint_ge(probes, day / 70000);
    ck_assert_uint_le(probes, day / 10500);
    now = breaker_next_probe_ms(&b);
    ck_assert_int_eq(breaker_take_probe(&b, now), 1);
    ck_assert_int_eq(breaker_record(&b, BREAKER_SUCCESS, now + 50, 0), BREAKER_CLOSED);
    ck_assert_int_eq(record_n(&b, BREAKER_SUCCESS, 100, now + 100), BREAKER_CLOSED);
}
END_TEST

static Suite *breaker_suite(void)
{
    Suite *s = suite_create("breaker");
    TCase *tc;

    tc = tcase_create("config");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, config_defaults);
    tcase_add_test(tc, config_is_normalised);
    tcase_add_test(tc, state_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("opening");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, scattered_failures_do_not_open);
    tcase_add_test(tc, too_few_requests_to_judge);
    tcase_add_test(tc, threshold_is_inclusive);
    tcase_add_test(tc, burst_of_failures_opens);
    tcase_add_test(tc, permanent_failures_never_open);
    tcase_add_test(tc, zero_ratio_needs_a_failure);
    tcase_add_test(tc, ring_matches_brute_force_model);
    suite_add_tcase(s, tc);

    tc = tcase_create("open");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, open_allows_no_delivery_and_ignores_stragglers);
    tcase_add_test(tc, probe_only_when_due_and_only_one);
    tcase_add_test(tc, probe_intervals_grow_to_the_cap);
    tcase_add_test(tc, probe_intervals_jittered_within_bounds);
    tcase_add_test(tc, probe_interval_floor);
    tcase_add_test(tc, probe_time_saturates);
    suite_add_tcase(s, tc);

    tc = tcase_create("probe");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, successful_probe_closes_and_clears_history);
    tcase_add_test(tc, permanent_probe_answer_closes);
    tcase_add_test(tc, failed_probe_reopens);
    tcase_add_test(tc, outage_of_a_day);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(breaker_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
