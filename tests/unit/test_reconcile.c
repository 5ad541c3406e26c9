/*
 * Unit tests of lib/reconcile: the comparison of what omnisync would send with an Omnidesk entry
 * (missing, different with field names, unsendable with field and rule, in step), the parsing of
 * index pages and entries (wrong shapes, customers that are not omnisync's), and the report
 * (counts, pending, JSON without values unless asked).
 */
#include <check.h>
#include <json-c/json.h>
#include <string.h>

#include "reconcile.h"

static struct config cfg;
static struct config_source src;

static void setup(void)
{
    memset(&cfg, 0, sizeof(cfg));
    memset(&src, 0, sizeof(src));
    cfg.on_delete = CONFIG_ON_DELETE_PURGE;
    cfg.brand_id = 1;
    src.name = "customers";
}

#define ANN                                                                                        \
    "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"a@x.nl\","      \
    "\"telephone\":\"+31612345678\",\"custom_tier\":\"gold\"}"

#define REMOTE_ANN                                                                                 \
    "{\"id\":7,\"external_primary_id\":\"C1\",\"brand_id\":1,\"firstname\":\"Ann\","               \
    "\"lastname\":\"Lee\",\"custom\":{\"tier\":\"gold\"},\"channels\":["                           \
    "{\"type\":\"email\",\"value\":\"A@X.nl\"},{\"type\":\"telephone\",\"value\":\"+"              \
    "31612345678\"},"                                                                              \
    "{\"type\":\"email\",\"value\":\"old@x.nl\"}]}"

static void remote_of(const char *json, struct reconcile_remote *r)
{
    char err[256];
    struct json_object *o = json_tokener_parse(json);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(reconcile_remote_parse(o, r, err, sizeof(err)), 0);
    json_object_put(o);
}

START_TEST(test_in_step_and_missing)
{
    struct mapping_plan plan;
    struct reconcile_remote r;
    struct reconcile_diff diff;
    struct json_object *data = json_tokener_parse(ANN);
    struct mapping_row row = {.op = "reconcile", .new_data = data};
    size_t covered;
    ck_assert_int_eq(mapping_plan_rows(&cfg, &src, &row, 1, &plan, &covered), 1);
    /* A reconcile row is a full-state upsert: names are sent, channels added. */
    ck_assert_int_eq(plan.kind, MAPPING_UPSERT);
    ck_assert_int_eq(plan.names_changed, 1);
    ck_assert_uint_eq(plan.nchannels, 2);
    remote_of(REMOTE_ANN, &r);
    /* Emails compare without case; more channels at Omnidesk are not drift. */
    ck_assert_int_eq(reconcile_compare(&plan, &r, &diff), RECONCILE_IN_STEP);
    ck_assert_uint_eq(diff.nfields, 0);
    ck_assert_int_eq(reconcile_needs_item(&plan, &r), 0);
    ck_assert_int_eq(reconcile_compare(&plan, NULL, &diff), RECONCILE_MISSING);
    reconcile_remote_free(&r);
    mapping_plan_free(&plan);
    json_object_put(data);
}
END_TEST

START_TEST(test_different_names_fields)
{
    struct mapping_plan plan;
    struct reconcile_remote r;
    struct reconcile_diff diff;
    struct json_object *data = json_tokener_parse(ANN);
    struct mapping_row row = {.op = "reconcile", .new_data = data};
    size_t covered;
    ck_assert_int_eq(mapping_plan_rows(&cfg, &src, &row, 1, &plan, &covered), 1);
    remote_of("{\"id\":7,\"external_primary_id\":\"C1\",\"firstname\":\"Anne\",\"lastname\":null,"
              "\"custom\":{\"tier\":\"tin\"},\"channels\":[{\"type\":\"telephone\",\"value\":"
              "\"+31600000000\"},{\"type\":\"twitter\",\"value\":\"a@x.nl\"}]}",
              &r);
    ck_assert_int_eq(reconcile_compare(&plan, &r, &diff), RECONCILE_DIFFERENT);
    ck_assert_uint_eq(diff.nfields, 5);
    ck_assert_str_eq(diff.fields[0], "firstname");
    ck_assert_str_eq(diff.fields[1], "lastname");
    ck_assert_str_eq(diff.fields[2], "email");
    ck_assert_str_eq(diff.fields[3], "telephone");
    ck_assert_str_eq(diff.fields[4], "custom_tier");

    /* --show-data values: both sides; without it the report keeps none. */
    struct json_object *values = reconcile_values(&plan, &r, &diff);
    const char *text = json_object_to_json_string(values);
    ck_assert_ptr_nonnull(strstr(text, "\"Anne\""));
    ck_assert_ptr_nonnull(strstr(text, "\"Ann\""));
    json_object_put(values);
    reconcile_remote_free(&r);
    mapping_plan_free(&plan);
    json_object_put(data);
}
END_TEST

START_TEST(test_custom_fields_need_the_item)
{
    struct mapping_plan plan;
    struct reconcile_remote r;
    struct reconcile_diff diff;
    struct json_object *data = json_tokener_parse(ANN);
    struct mapping_row row = {.op = "reconcile", .new_data = data};
    size_t covered;
    ck_assert_int_eq(mapping_plan_rows(&cfg, &src, &row, 1, &plan, &covered), 1);
    /* The API document's index entry: no custom fields. */
    remote_of("{\"id\":7,\"external_primary_id\":\"C1\",\"brand_name\":\"Shop\",\"firstname\":"
              "\"Ann\",\"lastname\":\"Lee\",\"channels\":[{\"type\":\"email\",\"value\":"
              "\"a@x.nl\"},{\"type\":\"telephone\",\"value\":\"+31612345678\"}]}",
              &r);
    ck_assert_int_eq(reconcile_needs_item(&plan, &r), 1);
    /* Without custom fields known, they are not compared (not guessed as different). */
    ck_assert_int_eq(reconcile_compare(&plan, &r, &diff), RECONCILE_IN_STEP);
    reconcile_remote_free(&r);
    /* A CRM NULL matches a field that is absent or empty at Omnidesk. */
    mapping_plan_free(&plan);
    json_object_put(data);
    data = json_tokener_parse("{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\","
                              "\"custom_tier\":null}");
    row.new_data = data;
    ck_assert_int_eq(mapping_plan_rows(&cfg, &src, &row, 1, &plan, &covered), 1);
    remote_of("{\"id\":7,\"external_primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\","
              "\"custom\":{}}",
              &r);
    ck_assert_int_eq(reconcile_compare(&plan, &r, &diff), RECONCILE_IN_STEP);
    reconcile_remote_free(&r);
    mapping_plan_free(&plan);
    json_object_put(data);
}
END_TEST

START_TEST(test_unsendable_names_field_and_rule)
{
    struct mapping_plan plan;
    struct reconcile_diff diff;
    struct json_object *data =
        json_tokener_parse("{\"primary_id\":\"C2\",\"firstname\":\"R2D2\",\"lastname\":\"Lee\"}");
    struct mapping_row row = {.op = "reconcile", .new_data = data};
    size_t covered;
    ck_assert_int_eq(mapping_plan_rows(&cfg, &src, &row, 1, &plan, &covered), 1);
    ck_assert_int_eq(reconcile_compare(&plan, NULL, &diff), RECONCILE_UNSENDABLE);
    ck_assert_uint_eq(diff.nfields, 1);
    ck_assert_str_eq(diff.fields[0], "firstname");
    ck_assert_ptr_nonnull(strstr(diff.rule, "invalid firstname: "));
    ck_assert_ptr_null(strstr(diff.rule, "R2D2"));
    mapping_plan_free(&plan);
    json_object_put(data);

    data = json_tokener_parse("{\"primary_id\":\"C3\",\"firstname\":\"Ann\",\"email\":\"nope\"}");
    row.new_data = data;
    ck_assert_int_eq(mapping_plan_rows(&cfg, &src, &row, 1, &plan, &covered), 1);
    ck_assert_int_eq(reconcile_compare(&plan, NULL, &diff), RECONCILE_UNSENDABLE);
    ck_assert_str_eq(diff.fields[0], "email");
    mapping_plan_free(&plan);
    json_object_put(data);
}
END_TEST

START_TEST(test_entries_not_omnisyncs_and_bad_shapes)
{
    struct reconcile_remote r;
    char err[256];
    /* No external id: not omnisync's (primary_id NULL). */
    remote_of("{\"id\":3,\"external_primary_id\":\"\"}", &r);
    ck_assert_ptr_null(r.primary_id);
    reconcile_remote_free(&r);
    remote_of("{\"id\":\"4\",\"external_primary_id\":null,\"brand_id\":2}", &r);
    ck_assert_ptr_null(r.primary_id);
    ck_assert_int_eq(r.brand_id, 2);
    reconcile_remote_free(&r);
    /* A numeric external id is text. */
    remote_of("{\"id\":5,\"external_primary_id\":1234}", &r);
    ck_assert_str_eq(r.primary_id, "1234");
    reconcile_remote_free(&r);

    static const char *const bad[] = {
        "[]",
        "{\"external_primary_id\":\"C1\"}",
        "{\"id\":\"x\",\"external_primary_id\":\"C1\"}",
        "{\"id\":1,\"external_primary_id\":{}}",
        "{\"id\":1,\"firstname\":[1]}",
        "{\"id\":1,\"channels\":{}}",
        "{\"id\":1,\"custom\":[]}",
        "{\"id\":1,\"brand_id\":\"one\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct json_object *o = json_tokener_parse(bad[i]);
        ck_assert_msg(reconcile_remote_parse(o, &r, err, sizeof(err)) == OMNISYNC_EINVAL, "%s",
                      bad[i]);
        json_object_put(o);
    }
}
END_TEST

static int check_page(const char *json, long long start, long long first_total, char *err)
{
    struct reconcile_page page;
    struct json_object *o = json_tokener_parse(json);
    int rc = reconcile_page_check(o, start, 2, first_total, &page, err, 256);
    json_object_put(o);
    return rc;
}

START_TEST(test_page_checks)
{
    char err[256];
    ck_assert_int_eq(check_page("{\"itemStart\":0,\"itemTotal\":3,\"items\":[{},{}]}", 0, -1, err),
                     0);
    ck_assert_int_eq(check_page("{\"itemTotal\":3,\"items\":[{}]}", 2, 3, err), 0);
    ck_assert_int_eq(check_page("{\"itemTotal\":0,\"items\":[]}", 0, -1, err), 0);
    /* Wrong shape, missing field, an itemStart that is not the one asked. */
    ck_assert_int_eq(check_page("{\"itemTotal\":3,\"items\":{}}", 0, -1, err), OMNISYNC_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "no array \"items\""));
    ck_assert_int_eq(check_page("{\"items\":[]}", 0, -1, err), OMNISYNC_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "itemTotal"));
    ck_assert_int_eq(check_page("[]", 0, -1, err), OMNISYNC_EINVAL);
    ck_assert_int_eq(check_page("{\"itemStart\":5,\"itemTotal\":3,\"items\":[{},{}]}", 0, -1, err),
                     OMNISYNC_EINVAL);
    /* itemTotal growing: the list moved, or it never ends. */
    ck_assert_int_eq(check_page("{\"itemTotal\":5,\"items\":[{},{}]}", 2, 3, err), OMNISYNC_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "itemTotal changed from 3 to 5"));
    /* A short page before the end, a page beyond the end with items. */
    ck_assert_int_eq(check_page("{\"itemTotal\":5,\"items\":[{}]}", 0, -1, err), OMNISYNC_EINVAL);
    ck_assert_int_eq(check_page("{\"itemTotal\":2,\"items\":[{}]}", 2, 2, err), OMNISYNC_EINVAL);
}
END_TEST

START_TEST(test_report_counts_pending_json)
{
    struct reconcile_report rep;
    struct reconcile_diff missing = {.kind = RECONCILE_MISSING};
    struct reconcile_diff different = {.kind = RECONCILE_DIFFERENT, .nfields = 1};
    struct reconcile_diff extra = {.kind = RECONCILE_EXTRA};
    different.fields[0] = "email";
    reconcile_report_init(&rep, "customers");
    rep.crm_customers = 3;
    rep.omnidesk_customers = 3;
    rep.in_step = 1;
    ck_assert_int_eq(reconcile_report_add(&rep, "C1", 0, &missing, NULL), 0);
    ck_assert_int_eq(reconcile_report_add(&rep, "C2", 0, &different, NULL), 0);
    ck_assert_int_eq(reconcile_report_add(&rep, "X1", 0, &extra, NULL), 0);
    ck_assert_int_eq(reconcile_report_drifts(&rep), 1);
    /* A customer with undelivered rows is pending, not drift. */
    reconcile_report_set_pending(&rep, 0);
    reconcile_report_set_pending(&rep, 1);
    ck_assert_int_eq(rep.counts[RECONCILE_MISSING], 0);
    ck_assert_int_eq(rep.counts[RECONCILE_PENDING], 2);
    /* Extra alone is no reason for exit 3. */
    ck_assert_int_eq(reconcile_report_drifts(&rep), 0);
    struct json_object *j = reconcile_report_json(&rep);
    ck_assert_str_eq(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
                     "{\"source\":\"customers\",\"crm_customers\":3,\"omnidesk_customers\":3,"
                     "\"in_step\":1,\"counts\":{\"missing\":0,\"different\":0,\"extra\":1,"
                     "\"unsendable\":0,\"pending\":2},\"drift\":[{\"primary_id\":\"C1\",\"kind\":"
                     "\"pending\",\"fields\":[]},{\"primary_id\":\"C2\",\"kind\":\"pending\","
                     "\"fields\":[\"email\"]},{\"primary_id\":\"X1\",\"kind\":\"extra\","
                     "\"fields\":[]}]}");
    json_object_put(j);
    reconcile_report_free(&rep);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reconcile");
    TCase *tc = tcase_create("reconcile");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_in_step_and_missing);
    tcase_add_test(tc, test_different_names_fields);
    tcase_add_test(tc, test_custom_fields_need_the_item);
    tcase_add_test(tc, test_unsendable_names_field_and_rule);
    tcase_add_test(tc, test_entries_not_omnisyncs_and_bad_shapes);
    tcase_add_test(tc, test_page_checks);
    tcase_add_test(tc, test_report_counts_pending_json);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
