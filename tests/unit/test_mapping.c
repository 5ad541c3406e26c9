/* Unit tests of lib/mapping: segments, coalescing, purges, validation, channels. */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "mapping.h"
#include "validate.h"

static struct config cfg;
static struct config_source src;

static void setup(void)
{
    memset(&cfg, 0, sizeof(cfg));
    memset(&src, 0, sizeof(src));
    cfg.on_delete = CONFIG_ON_DELETE_PURGE;
    src.name = "customers";
}

struct fixture {
    struct mapping_row rows[16];
    size_t n;
};

static void add(struct fixture *f, long long id, const char *op, const char *old_json,
                const char *new_json)
{
    struct mapping_row *r = &f->rows[f->n++];
    r->id = id;
    r->op = op;
    r->old_data = old_json ? json_tokener_parse(old_json) : NULL;
    r->new_data = new_json ? json_tokener_parse(new_json) : NULL;
}

static void release(struct fixture *f, struct mapping_plan *plans, int n)
{
    for (int i = 0; i < n; i++)
        mapping_plan_free(&plans[i]);
    for (size_t i = 0; i < f->n; i++) {
        json_object_put(f->rows[i].old_data);
        json_object_put(f->rows[i].new_data);
    }
}

static int plan(struct fixture *f, struct mapping_plan *plans, size_t *covered)
{
    int n = mapping_plan_rows(&cfg, &src, f->rows, f->n, plans, covered);
    ck_assert_int_ge(n, 0);
    return n;
}

#define ANN "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"a@x.nl\",\"telephone\":\"+31612345678\",\"custom_tier\":\"gold\"}"
#define ANNE "{\"primary_id\":\"C1\",\"firstname\":\"Anne\",\"lastname\":\"Lee\",\"email\":\"b@x.nl\",\"telephone\":\"+31612345678\",\"custom_tier\":\"gold\"}"

START_TEST(test_coalesced_upsert)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 10, "insert", NULL, ANN);
    add(&f, 11, "update", ANN, ANNE);
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(covered, 2);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_int_eq(plans[0].sent_id, 11);
    ck_assert_str_eq(plans[0].firstname, "Anne");
    ck_assert_str_eq(plans[0].email, "b@x.nl");
    ck_assert_int_eq(plans[0].names_changed, 1);
    /* Every channel seen, in order, once. */
    ck_assert_uint_eq(plans[0].nchannels, 3);
    ck_assert_str_eq(plans[0].channels[0].value, "a@x.nl");
    ck_assert_str_eq(plans[0].channels[1].value, "+31612345678");
    ck_assert_str_eq(plans[0].channels[2].value, "b@x.nl");
    ck_assert_uint_eq(plans[0].ncustom, 1);
    ck_assert_str_eq(plans[0].custom[0].param, "custom_tier");
    ck_assert_str_eq(plans[0].custom[0].value, "gold");
    release(&f, plans, n);
}
END_TEST

START_TEST(test_channel_only_change_needs_no_update)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "update", ANN,
        "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"new@x.nl\","
        "\"telephone\":\"+31612345678\",\"custom_tier\":\"gold\"}");
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_int_eq(plans[0].names_changed, 0);
    release(&f, plans, n);
}
END_TEST

START_TEST(test_purge_ends_a_segment)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "insert", NULL, ANN);
    add(&f, 2, "delete", ANN, NULL);
    add(&f, 3, "insert", NULL, ANNE);
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(plans[0].kind, MAPPING_PURGE);
    ck_assert_uint_eq(plans[0].first, 0);
    ck_assert_uint_eq(plans[0].last, 1);
    ck_assert_str_eq(plans[0].primary_id, "C1");
    ck_assert_int_eq(plans[1].kind, MAPPING_UPSERT);
    ck_assert_int_eq(plans[1].sent_id, 3);
    release(&f, plans, n);
}
END_TEST

START_TEST(test_erase_flag_is_a_purge)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "update", ANN,
        "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"erase\":true}");
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(plans[0].kind, MAPPING_PURGE);
    release(&f, plans, n);
}
END_TEST

START_TEST(test_delete_ignored)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    cfg.on_delete = CONFIG_ON_DELETE_IGNORE;
    add(&f, 1, "delete", ANN, NULL);
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(plans[0].kind, MAPPING_NOTHING);
    release(&f, plans, n);

    struct fixture g = {0};
    add(&g, 1, "update", ANN, ANNE);
    add(&g, 2, "delete", ANNE, NULL);
    n = plan(&g, plans, &covered);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_str_eq(plans[0].firstname, "Anne");
    ck_assert_int_eq(plans[0].sent_id, 2);
    release(&g, plans, n);
}
END_TEST

START_TEST(test_truncate_stands_alone)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "truncate", NULL, NULL);
    add(&f, 2, "truncate", NULL, NULL);
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(plans[0].kind, MAPPING_TRUNCATE);
    ck_assert_int_eq(plans[1].kind, MAPPING_TRUNCATE);
    release(&f, plans, n);
}
END_TEST

/* names = transliterate (the default): the plan carries the transliterated names and says which;
 * strict refuses the row as before. */
START_TEST(test_names_transliterated_or_strict)
{
    static const char *const row =
        "{\"primary_id\":\"C1\",\"firstname\":\"\u0141ukasz\",\"lastname\":\"W\u00f3jcik\"}";
    static const char *const both =
        "{\"primary_id\":\"C1\",\"firstname\":\"\u0418\u0432\u0430\u043d\","
        "\"lastname\":\"\u041f\u0435\u0442\u0440\u043e\u0432\"}";
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;

    struct fixture f = {0};
    add(&f, 1, "insert", NULL, row);
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_str_eq(plans[0].firstname, "Lukasz");
    ck_assert_str_eq(plans[0].lastname, "Wójcik"); /* allowed as it is */
    ck_assert_uint_eq(plans[0].transliterated, MAPPING_NAME_FIRSTNAME);
    release(&f, plans, n);

    struct fixture g = {0};
    add(&g, 2, "update", row, both);
    n = plan(&g, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_str_eq(plans[0].firstname, "Ivan");
    ck_assert_str_eq(plans[0].lastname, "Petrov");
    ck_assert_uint_eq(plans[0].transliterated, MAPPING_NAME_FIRSTNAME | MAPPING_NAME_LASTNAME);
    release(&g, plans, n);

    /* A name with nothing left fails as any invalid name, field and rule in the log. */
    struct fixture e = {0};
    add(&e, 3, "insert", NULL,
        "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"\xF0\x9F\x98\x80\"}");
    n = plan(&e, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_INVALID);
    ck_assert_str_eq(
        plans[0].log_error,
        "invalid lastname: must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$ (nothing sendable "
        "is left after transliteration)");
    release(&e, plans, n);

    src.names = CONFIG_NAMES_STRICT;
    struct fixture h = {0};
    add(&h, 4, "insert", NULL, row);
    n = plan(&h, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_INVALID);
    ck_assert_str_eq(plans[0].error,
                     "invalid firstname \"Łukasz\": must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$");
    ck_assert_str_eq(plans[0].log_error,
                     "invalid firstname: must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$");
    ck_assert_uint_eq(plans[0].transliterated, 0);
    release(&h, plans, n);
}
END_TEST

START_TEST(test_invalid_values_never_planned)
{
    static const struct {
        const char *json;
        const char *error;
        const char *log;
    } cases[] = {
        {"{\"primary_id\":\"C1\",\"firstname\":\"R2D2\",\"lastname\":\"Lee\"}",
         "invalid firstname \"R2D2\": must match", "invalid firstname: must match"},
        {"{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"email\":\"ann@\"}",
         "invalid email \"ann@\"", "invalid email: "},
        {"{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"telephone\":\"06-1234\"}",
         "invalid telephone \"06-1234\"", "invalid telephone: "},
        {"{\"primary_id\":\"\",\"firstname\":\"Ann\"}", "invalid primary_id", "invalid primary_id"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fixture f = {0};
        struct mapping_plan plans[MAPPING_MAX_PLANS];
        size_t covered;
        add(&f, 1, "insert", NULL, cases[i].json);
        int n = plan(&f, plans, &covered);
        ck_assert_int_eq(plans[0].kind, MAPPING_INVALID);
        ck_assert_msg(strstr(plans[0].error, cases[i].error) != NULL, "%s", plans[0].error);
        ck_assert_msg(strstr(plans[0].log_error, cases[i].log) != NULL, "%s", plans[0].log_error);
        /* The log text never holds the value. */
        ck_assert_ptr_null(strstr(plans[0].log_error, "R2D2"));
        ck_assert_ptr_null(strstr(plans[0].log_error, "06-1234"));
        release(&f, plans, n);
    }
}
END_TEST

/* Issue 17.1: the value in the error is cut at 200 bytes, never inside a character (PostgreSQL
 * refused the split text and with it the whole batch of outcomes). */
START_TEST(test_invalid_value_cut_on_a_character_boundary)
{
    char json[2048], want[512];
    size_t len = (size_t)snprintf(json, sizeof(json), "{\"primary_id\":\"C1\",\"firstname\":\"a");
    for (int i = 0; i < 600; i++)
        len += (size_t)snprintf(json + len, sizeof(json) - len, "\xc3\xa9");
    snprintf(json + len, sizeof(json) - len, "\",\"lastname\":\"Lee\"}");
    len = (size_t)snprintf(want, sizeof(want), "invalid firstname \"a");
    for (int i = 0; i < 99; i++) /* 1 + 99 x 2 = 199 bytes: a 100th would end at 201 */
        len += (size_t)snprintf(want + len, sizeof(want) - len, "\xc3\xa9");
    snprintf(want + len, sizeof(want) - len, "\": is too long");

    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "insert", NULL, json);
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_INVALID);
    ck_assert_str_eq(plans[0].error, want);
    ck_assert_str_eq(plans[0].log_error, "invalid firstname: is too long");
    release(&f, plans, n);
}
END_TEST

START_TEST(test_historic_invalid_channel_skipped_fixed_state_valid)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "insert", NULL,
        "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"telephone\":\"06 12\"}");
    add(&f, 2, "update",
        "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"telephone\":\"06 12\"}",
        "{\"primary_id\":\"C1\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"telephone\":\"+31612345678\"}");
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_uint_eq(plans[0].nchannels, 1);
    ck_assert_str_eq(plans[0].channels[0].value, "+31612345678");
    release(&f, plans, n);
}
END_TEST

START_TEST(test_normalisation_when_configured)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    src.normalize_names = 1;
    src.phone_default_prefix = "+31";
    add(&f, 1, "insert", NULL,
        "{\"primary_id\":\"C1\",\"firstname\":\"  Ann   Marie \",\"lastname\":\"Lee\","
        "\"telephone\":\"06-1234 5678\"}");
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_str_eq(plans[0].firstname, "Ann Marie");
    ck_assert_str_eq(plans[0].telephone, "+31612345678");
    release(&f, plans, n);
}
END_TEST

START_TEST(test_primary_id_change)
{
    struct fixture f = {0};
    struct mapping_plan plans[MAPPING_MAX_PLANS];
    size_t covered;
    add(&f, 1, "update", ANN,
        "{\"primary_id\":\"C9\",\"firstname\":\"Ann\",\"lastname\":\"Lee\"}");
    int n = plan(&f, plans, &covered);
    ck_assert_int_eq(plans[0].kind, MAPPING_UPSERT);
    ck_assert_int_eq(plans[0].primary_id_changed, 1);
    ck_assert_str_eq(plans[0].primary_id, "C9");
    release(&f, plans, n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mapping");
    TCase *tc = tcase_create("mapping");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_checked_fixture(tc, setup, validate_close);
    tcase_add_test(tc, test_coalesced_upsert);
    tcase_add_test(tc, test_channel_only_change_needs_no_update);
    tcase_add_test(tc, test_purge_ends_a_segment);
    tcase_add_test(tc, test_erase_flag_is_a_purge);
    tcase_add_test(tc, test_delete_ignored);
    tcase_add_test(tc, test_truncate_stands_alone);
    tcase_add_test(tc, test_invalid_values_never_planned);
    tcase_add_test(tc, test_names_transliterated_or_strict);
    tcase_add_test(tc, test_invalid_value_cut_on_a_character_boundary);
    tcase_add_test(tc, test_historic_invalid_channel_skipped_fixed_state_valid);
    tcase_add_test(tc, test_normalisation_when_configured);
    tcase_add_test(tc, test_primary_id_change);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
