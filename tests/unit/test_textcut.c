/* Unit tests of lib/textcut: cuts of outside text never split a UTF-8 character (issue 17.1). */
#include <check.h>
#include <string.h>

#include "textcut.h"

START_TEST(test_boundary)
{
    /* "aé€😀": 1 + 2 + 3 + 4 bytes. */
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    static const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};
    for (size_t len = 0; len <= 10; len++)
        ck_assert_msg(textcut_boundary(s, len) == want[len], "len %zu: %zu", len,
                      textcut_boundary(s, len));
    /* Stray bytes are left alone: the cut makes nothing worse. */
    ck_assert_int_eq(textcut_boundary("ab\x80\x80", 4), 4);
    ck_assert_int_eq(textcut_boundary("\x80\x80\x80\x80", 4), 4);
}
END_TEST

START_TEST(test_prefix_and_printf)
{
    const char *s = "\xc3\xa9\xc3\xa9\xc3\xa9"; /* "ééé" */
    ck_assert_int_eq(textcut_prefix(s, 3), 2);
    ck_assert_int_eq(textcut_prefix(s, 4), 4);
    ck_assert_int_eq(textcut_prefix(s, 100), 6);
    ck_assert_int_eq(textcut_prefix("abc", 3), 3);

    char out[6];
    ck_assert_int_eq(textcut_printf(out, sizeof(out), "x%s", s), 7);
    ck_assert_str_eq(out, "x\xc3\xa9\xc3\xa9"); /* 5 bytes fit: no half é at the end */
    char small[5];
    textcut_printf(small, sizeof(small), "x%s", s);
    ck_assert_str_eq(small, "x\xc3\xa9");
    textcut_printf(small, sizeof(small), "%s", "abcdefgh");
    ck_assert_str_eq(small, "abcd");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("textcut");
    TCase *tc = tcase_create("cuts");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, test_boundary);
    tcase_add_test(tc, test_prefix_and_printf);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
