/*
 * omnisync reconcile reads the index pages after the first with several requests in flight
 * (issue 19 point 3: the rate, not the latency, sets the pace), and a server that answers part of
 * them 429 with Retry-After still gets every page read, each once in the report.
 */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "testutil.h"

#define CUSTOMERS 800 /* 9 index pages of 99 */

static struct scenario sc;

/* CUSTOMERS customers at the fake that the CRM does not have: all `extra`, exit 0. */
static void add_customers(void)
{
    for (int i = 1; i <= CUSTOMERS; i++) {
        char json[256];
        struct json_object *out = NULL;
        snprintf(json, sizeof(json),
                 "{\"brand_id\":1,\"external_primary_id\":\"P%05d\",\"firstname\":\"Ann\","
                 "\"lastname\":\"Lee\"}",
                 i);
        ck_assert_int_eq(fake_post_json(&sc.fake, "/_fake/customers/add", json, &out), 0);
        json_object_put(out);
    }
}

static void run_reconcile(void)
{
    char *out = NULL, *err = NULL;
    char *argv[] = {OMNISYNC_BIN, "--config", sc.config, "reconcile", "--json", NULL};
    int code = proc_run(argv, NULL, 120000, &out, &err);
    ck_assert_msg(code == 0, "exit %d: %s %s", code, out, err);
    char want[96];
    snprintf(want, sizeof(want), "\"crm_customers\":0,\"omnidesk_customers\":%d,", CUSTOMERS);
    ck_assert_msg(out != NULL && strstr(out, want) != NULL, "report: %.400s", out);
    free(out);
    free(err);
}

START_TEST(test_reconcile_reads_pages_concurrently)
{
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    add_customers();
    /* Each page held 200 ms: a reader one page at a time never has two in flight. */
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"latency_ms\":200}"), 0);
    long long index0 = fake_stat(&sc.fake, "by_endpoint.index");
    run_reconcile();
    ck_assert_int_eq(fake_stat(&sc.fake, "by_endpoint.index") - index0, 9);
    long long most = fake_stat(&sc.fake, "max_concurrency");
    ck_assert_msg(most >= 2 && most <= 8, "max_concurrency %lld", most);
    scenario_teardown(&sc);
}
END_TEST

START_TEST(test_reconcile_pages_through_429_retry_after)
{
    ck_assert_int_eq(scenario_setup(&sc, NULL, NULL), 0);
    add_customers();
    /* 3 requests a second, then 429 with Retry-After: most of the 8 in flight are refused. */
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"rate\":3}"), 0);
    run_reconcile();
    ck_assert_int_gt(fake_stat(&sc.fake, "rate_limited"), 0);
    scenario_teardown(&sc);
}
END_TEST

int main(void)
{
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("reconcile_pages");
    TCase *tc = tcase_create("reconcile_pages");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_reconcile_reads_pages_concurrently);
    tcase_add_test(tc, test_reconcile_pages_through_429_retry_after);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
