/*
 * test_lru: lib/lru.c, the bounded tables' order and lookups. The owner's
 * view: entries are found by key, the one chosen to go is the least recently
 * used that is not in use, and nothing is lost or duplicated as the hash
 * grows or entries come and go.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lru.h"

struct ent {
    struct lru_node node;
    char key[32];
    int busy;
};

static struct ent *ent_new(struct lru *l, const char *key)
{
    struct ent *e = calloc(1, sizeof(*e));

    assert_non_null(e);
    snprintf(e->key, sizeof(e->key), "%s", key);
    lru_add(l, &e->node, e->key);
    return e;
}

static struct ent *get(struct lru *l, const char *key)
{
    struct lru_node *n = lru_get(l, key);

    return n ? LRU_ENTRY(n, struct ent, node) : NULL;
}

static int busy(const struct lru_node *n, void *arg)
{
    (void)arg;
    return LRU_ENTRY(n, struct ent, node)->busy;
}

static void drain(struct lru *l)
{
    struct lru_node *n;

    while ((n = lru_victim(l, NULL, NULL)) != NULL) {
        lru_remove(l, n);
        free(LRU_ENTRY(n, struct ent, node));
    }
    assert_int_equal(lru_count(l), 0);
    lru_fini(l);
}

static void test_least_recently_used_goes_first(void **state)
{
    struct lru l;
    struct ent *a, *b, *c;

    (void)state;
    assert_int_equal(lru_init(&l, 3), 0);
    a = ent_new(&l, "a");
    b = ent_new(&l, "b");
    assert_false(lru_full(&l));
    c = ent_new(&l, "c");
    assert_true(lru_full(&l));
    assert_ptr_equal(lru_victim(&l, NULL, NULL), &a->node);
    /* a used again: b is now the oldest */
    assert_ptr_equal(get(&l, "a"), a);
    assert_ptr_equal(lru_victim(&l, NULL, NULL), &b->node);
    /* lru_find looks without changing the order */
    assert_ptr_equal(lru_find(&l, "b"), &b->node);
    assert_ptr_equal(lru_victim(&l, NULL, NULL), &b->node);
    assert_null(lru_find(&l, "d"));
    assert_null(get(&l, "d"));
    (void)c;
    drain(&l);
}

static void test_entries_in_use_are_never_chosen(void **state)
{
    struct lru l;
    struct ent *a, *b, *c;

    (void)state;
    assert_int_equal(lru_init(&l, 2), 0);
    a = ent_new(&l, "a");
    b = ent_new(&l, "b");
    a->busy = 1;
    assert_ptr_equal(lru_victim(&l, busy, NULL), &b->node);
    b->busy = 1;
    assert_null(lru_victim(&l, busy, NULL)); /* every entry in use */
    /* the owner adds anyway: over capacity only while they are in use */
    c = ent_new(&l, "c");
    assert_int_equal(lru_count(&l), 3);
    assert_ptr_equal(lru_victim(&l, busy, NULL), &c->node);
    a->busy = 0;
    assert_ptr_equal(lru_victim(&l, busy, NULL), &a->node);
    drain(&l);
}

/* Many keys: the hash grows, every key is still found exactly once, and
 * removing in any order keeps the list and the chains consistent. */
static void test_growth_and_removal(void **state)
{
    enum { N = 5000 };
    static struct ent *e[N];
    struct lru l;
    struct lru_node *n;
    char key[32];
    size_t seen = 0;

    (void)state;
    assert_int_equal(lru_init(&l, 100), 0);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "site%d.test", i);
        e[i] = ent_new(&l, key);
    }
    assert_int_equal(lru_count(&l), N);
    assert_true(lru_full(&l));
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "site%d.test", i);
        assert_ptr_equal(lru_find(&l, key), &e[i]->node);
    }
    for (n = lru_newest(&l); n != NULL; n = lru_older(n))
        seen++;
    assert_int_equal(seen, N);
    /* every third, from the middle of chains and list */
    for (int i = 0; i < N; i += 3) {
        lru_remove(&l, &e[i]->node);
        free(e[i]);
        e[i] = NULL;
    }
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "site%d.test", i);
        assert_ptr_equal(lru_find(&l, key), e[i] ? &e[i]->node : NULL);
    }
    /* the oldest left is site1 */
    assert_ptr_equal(lru_victim(&l, NULL, NULL), &e[1]->node);
    lru_set_cap(&l, 10);
    assert_true(lru_full(&l));
    drain(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_least_recently_used_goes_first),
        cmocka_unit_test(test_entries_in_use_are_never_chosen),
        cmocka_unit_test(test_growth_and_removal),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
