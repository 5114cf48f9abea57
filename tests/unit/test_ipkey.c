/*
 * test_ipkey: the key per-client limits count by: IPv4 as is, IPv6 masked
 * to the prefix (a whole /64 is one client), v4-mapped IPv6 as IPv4, odd
 * prefixes, and the refusals (other families, short buffers).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "ipkey.h"

static const char *key6(const char *addr, unsigned prefix, char *out, size_t outlen)
{
    struct sockaddr_in6 sa;

    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, addr, &sa.sin6_addr), 1);
    if (ipkey_format((struct sockaddr *)&sa, prefix, out, outlen) != 0)
        return NULL;
    return out;
}

static void test_ipv4(void **state)
{
    struct sockaddr_in sa;
    char out[IPKEY_MAX];

    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, "192.0.2.77", &sa.sin_addr), 1);
    /* the IPv6 prefix never touches IPv4 */
    assert_int_equal(ipkey_format((struct sockaddr *)&sa, 64, out, sizeof(out)), 0);
    assert_string_equal(out, "192.0.2.77");
}

static void test_ipv6_prefix(void **state)
{
    char a[IPKEY_MAX], b[IPKEY_MAX], c[IPKEY_MAX];

    (void)state;
    assert_string_equal(key6("2001:db8:1:2::1", 64, a, sizeof(a)), "2001:db8:1:2::/64");
    assert_string_equal(key6("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, b, sizeof(b)),
                        "2001:db8:1:2::/64");
    assert_string_equal(a, b);
    assert_string_equal(key6("2001:db8:1:3::1", 64, c, sizeof(c)), "2001:db8:1:3::/64");
    assert_string_equal(key6("2001:db8:1:2::1", 128, a, sizeof(a)), "2001:db8:1:2::1");
    assert_string_equal(key6("2001:db8:1:2::1", 200, a, sizeof(a)), "2001:db8:1:2::1");
    assert_string_equal(key6("2001:db8:1:2::1", 48, a, sizeof(a)), "2001:db8:1::/48");
    /* a prefix that is not a multiple of 8 keeps exactly its bits */
    assert_string_equal(key6("2001:db8:1:ffff::1", 60, a, sizeof(a)), "2001:db8:1:fff0::/60");
    assert_string_equal(key6("ffff::1", 0, a, sizeof(a)), "::/0");
    assert_string_equal(key6("::1", 64, a, sizeof(a)), "::/64");
}

static void test_v4_mapped(void **state)
{
    char a[IPKEY_MAX];

    (void)state;
    assert_string_equal(key6("::ffff:198.51.100.7", 64, a, sizeof(a)), "198.51.100.7");
}

static void test_refusals(void **state)
{
    struct sockaddr_un un;
    char small[8];

    (void)state;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    assert_int_equal(ipkey_format((struct sockaddr *)&un, 64, small, sizeof(small)), -1);
    assert_int_equal(ipkey_format(NULL, 64, small, sizeof(small)), -1);
    assert_null(key6("2001:db8:1:2::1", 64, small, sizeof(small)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6_prefix),
        cmocka_unit_test(test_v4_mapped),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
