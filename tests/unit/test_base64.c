/*
 * test_base64: lib/base64.c against RFC 4648 §10's test vectors, a round
 * trip of every byte value at every length remainder, and the strict
 * decoder's refusals.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base64.h"

static void test_rfc4648_vectors(void **state)
{
    static const char *const v[][2] = {{"", ""},
                                       {"f", "Zg=="},
                                       {"fo", "Zm8="},
                                       {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg=="},
                                       {"fooba", "Zm9vYmE="},
                                       {"foobar", "Zm9vYmFy"}};
    char enc[32];
    unsigned char dec[32];

    (void)state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_int_equal(base64_encode(v[i][0], strlen(v[i][0]), enc), strlen(v[i][1]));
        assert_string_equal(enc, v[i][1]);
        assert_int_equal(base64_decode(v[i][1], strlen(v[i][1]), dec), (long)strlen(v[i][0]));
        assert_memory_equal(dec, v[i][0], strlen(v[i][0]));
    }
}

static void test_round_trip(void **state)
{
    unsigned char in[258], out[258];
    char enc[BASE64_ENCODED_LEN(258) + 1];

    (void)state;
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(255 - i);
    for (size_t n = 256; n <= 258; n++) {
        size_t e = base64_encode(in, n, enc);

        assert_int_equal(e, BASE64_ENCODED_LEN(n));
        assert_int_equal(base64_decode(enc, e, out), (long)n);
        assert_memory_equal(in, out, n);
    }
}

static void test_refused(void **state)
{
    static const char *const bad[] = {"Zg=",  "Zg===",  "Z===", "Zh==", "Zm9=", "Zg==Zm9v",
                                      "Zm 9", "Zm9v\n", "Zm-v", "=Zm9", "Zm=v"};
    unsigned char dec[16];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(base64_decode(bad[i], strlen(bad[i]), dec), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
