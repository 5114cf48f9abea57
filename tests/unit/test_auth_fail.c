/*
 * test_auth_fail: the auth_fail_limit table (relayd/auth_fail.c): a window
 * per client from its first failure, a new one once the period has passed,
 * clients apart from each other, and memory bounded under a flood of
 * clients without forgetting the ones still inside their window first.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "../../relayd/auth_fail.h"

#define MIN (60 * 1000ull)

static void test_window(void **state)
{
    struct auth_fail *f = auth_fail_new();

    (void)state;
    assert_non_null(f);
    assert_int_equal(auth_fail_count(f, "192.0.2.1", 0, 10 * MIN), 0);
    for (int i = 0; i < 5; i++)
        auth_fail_add(f, "192.0.2.1", 1000 + (uint64_t)i * MIN, 10 * MIN);
    assert_int_equal(auth_fail_count(f, "192.0.2.1", 5 * MIN, 10 * MIN), 5);
    assert_int_equal(auth_fail_count(f, "192.0.2.2", 5 * MIN, 10 * MIN), 0);
    /* the window started with the first failure, at 1000 ms */
    assert_int_equal(auth_fail_count(f, "192.0.2.1", 1000 + 10 * MIN - 1, 10 * MIN), 5);
    assert_int_equal(auth_fail_count(f, "192.0.2.1", 1000 + 10 * MIN, 10 * MIN), 0);
    /* a failure after it starts a new window */
    auth_fail_add(f, "192.0.2.1", 11 * MIN, 10 * MIN);
    assert_int_equal(auth_fail_count(f, "192.0.2.1", 11 * MIN, 10 * MIN), 1);
    assert_int_equal(auth_fail_size(f), 1);
    /* a /64 key counts as one client, a long key is cut, not overrun */
    auth_fail_add(f, "2001:db8:1:2::/64", 0, 10 * MIN);
    auth_fail_add(f, "2001:db8:1:2::/64", 1, 10 * MIN);
    assert_int_equal(auth_fail_count(f, "2001:db8:1:2::/64", 2, 10 * MIN), 2);
    {
        char longkey[200];
        for (size_t i = 0; i < sizeof(longkey) - 1; i++)
            longkey[i] = 'a';
        longkey[sizeof(longkey) - 1] = '\0';
        auth_fail_add(f, longkey, 0, 10 * MIN);
        assert_int_equal(auth_fail_count(f, longkey, 1, 10 * MIN), 1);
    }
    auth_fail_free(f);
}

static void test_bounded(void **state)
{
    struct auth_fail *f = auth_fail_new();
    char key[32];

    (void)state;
    assert_non_null(f);
    /* a flood whose windows will have passed, a client inside its window,
     * then more of the flood */
    for (unsigned i = 0; i < AUTH_FAIL_MAX - 1; i++) {
        snprintf(key, sizeof(key), "k%u", i);
        auth_fail_add(f, key, 0, 10 * MIN);
    }
    auth_fail_add(f, "198.51.100.7", 5 * MIN, 10 * MIN);
    assert_int_equal(auth_fail_size(f), AUTH_FAIL_MAX);
    for (unsigned i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "n%u", i);
        auth_fail_add(f, key, 11 * MIN, 10 * MIN);
        assert_true(auth_fail_size(f) <= AUTH_FAIL_MAX);
    }
    /* passed windows went first: the live client is still counted */
    assert_int_equal(auth_fail_count(f, "198.51.100.7", 12 * MIN, 10 * MIN), 1);
    assert_int_equal(auth_fail_size(f), 5001);
    /* all live: the oldest go, memory stays bounded */
    for (unsigned i = 0; i < AUTH_FAIL_MAX + 100; i++) {
        snprintf(key, sizeof(key), "live%u", i);
        auth_fail_add(f, key, 200 * MIN + i, 1000 * MIN);
        assert_true(auth_fail_size(f) <= AUTH_FAIL_MAX);
    }
    auth_fail_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
