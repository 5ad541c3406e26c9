/* queue: the intrusive list every module uses (lib/queue.h). */
#include <check.h>
#include <stdlib.h>

#include "queue.h"

struct item {
    int value;
    struct queue node;
};

static int values(struct queue *h, int *out, int max)
{
    struct queue *q;
    int n = 0;
    queue_foreach(q, h)
    {
        if (n < max)
            out[n] = queue_data(q, struct item, node)->value;
        n++;
    }
    return n;
}

START_TEST(test_empty)
{
    struct queue h;
    queue_init(&h);
    ck_assert(queue_empty(&h));
    ck_assert_ptr_null(queue_head(&h));
    ck_assert_ptr_null(queue_pop(&h));
}
END_TEST

START_TEST(test_fifo_and_front)
{
    struct queue h;
    struct item it[4] = {{1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}};
    int v[4];
    queue_init(&h);
    queue_insert_tail(&h, &it[1].node);
    queue_insert_tail(&h, &it[2].node);
    queue_insert_head(&h, &it[0].node);
    queue_insert_tail(&h, &it[3].node);
    ck_assert_int_eq(values(&h, v, 4), 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(v[i], i + 1);
    for (int i = 0; i < 4; i++) {
        struct queue *q = queue_pop(&h);
        ck_assert_ptr_nonnull(q);
        ck_assert_int_eq(queue_data(q, struct item, node)->value, i + 1);
    }
    ck_assert(queue_empty(&h));
}
END_TEST

START_TEST(test_remove_middle_and_twice)
{
    struct queue h;
    struct item it[3] = {{1, {0}}, {2, {0}}, {3, {0}}};
    int v[3];
    queue_init(&h);
    for (int i = 0; i < 3; i++)
        queue_insert_tail(&h, &it[i].node);
    queue_remove(&it[1].node);
    queue_remove(&it[1].node); /* a removed node points at itself: harmless */
    ck_assert_int_eq(values(&h, v, 3), 2);
    ck_assert_int_eq(v[0], 1);
    ck_assert_int_eq(v[1], 3);
    queue_remove(&it[0].node);
    queue_remove(&it[2].node);
    ck_assert(queue_empty(&h));
}
END_TEST

START_TEST(test_append)
{
    struct queue a, b;
    struct item it[5] = {{1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}, {5, {0}}};
    int v[5];
    queue_init(&a);
    queue_init(&b);
    queue_append(&a, &b); /* both empty */
    ck_assert(queue_empty(&a));
    for (int i = 0; i < 2; i++)
        queue_insert_tail(&a, &it[i].node);
    for (int i = 2; i < 5; i++)
        queue_insert_tail(&b, &it[i].node);
    queue_append(&a, &b);
    ck_assert(queue_empty(&b));
    ck_assert_int_eq(values(&a, v, 5), 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(v[i], i + 1);
    /* Into an empty head. */
    queue_append(&b, &a);
    ck_assert(queue_empty(&a));
    ck_assert_int_eq(values(&b, v, 5), 5);
    ck_assert_int_eq(v[4], 5);
    ck_assert_ptr_eq(b.prev, &it[4].node);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("queue");
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_fifo_and_front);
    tcase_add_test(tc, test_remove_middle_and_twice);
    tcase_add_test(tc, test_append);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
