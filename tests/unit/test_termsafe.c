/*
 * test_termsafe: lib/termsafe.c, what etrnctl show writes to a terminal.
 * Text and CRLF line ends pass (CRLF as LF); every control character that a
 * terminal would act on comes out visible; input cut anywhere gives the same
 * output as input in one piece.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "termsafe.h"

/* in (n bytes) in one piece, and in every split into two pieces: all the
 * same as want. */
static void check(const char *in, size_t n, const char *want)
{
    char *out = malloc(2 * TERMSAFE_OUT_MAX(n));
    struct termsafe t;
    size_t o;

    assert_non_null(out);
    for (size_t cut = 0; cut <= n; cut++) {
        termsafe_init(&t);
        o = termsafe_put(&t, in, cut, out);
        o += termsafe_put(&t, in + cut, n - cut, out + o);
        o += termsafe_end(&t, out + o);
        assert_true(o <= TERMSAFE_OUT_MAX(n));
        out[o] = '\0';
        if (strcmp(out, want) != 0)
            fail_msg("cut at %zu: got \"%s\", want \"%s\"", cut, out, want);
    }
    free(out);
}

#define CHECK(in, want) check(in, sizeof(in) - 1, want)

static void test_text_passes(void **state)
{
    (void)state;
    CHECK("Subject: hi\r\n\r\nbody\tcol\r\n", "Subject: hi\n\nbody\tcol\n");
    CHECK("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7");
    CHECK("a\\x1b", "a\\x1b");
    CHECK("", "");
}

static void test_c0_and_del(void **state)
{
    (void)state;
    CHECK("\x1b]0;owned\x07", "^[]0;owned^G");
    CHECK("\x1b[2J\x1b[H", "^[[2J^[[H");
    CHECK("over\rwrite", "over^Mwrite");
    CHECK("bare\nlf", "bare^Jlf");
    CHECK("end\r", "end^M");
    CHECK("\r\r\n", "^M\n");
    CHECK("x\x7fy\x08z", "x^?y^Hz");
    check("a\0b", 3, "a^@b");
}

static void test_c1_and_bad_utf8(void **state)
{
    (void)state;
    CHECK("\x9b"
          "31m",
          "\\x9b31m"); /* 8-bit CSI */
    CHECK("\xc2\x9b"
          "31m",
          "\\xc2\\x9b31m");                   /* CSI as UTF-8 (U+009B) */
    CHECK("\xc2\xa0", "\xc2\xa0");            /* U+00A0 is text */
    CHECK("\xc0\xaf", "\\xc0\\xaf");          /* overlong "/" */
    CHECK("\xed\xa0\x80", "\\xed\\xa0\\x80"); /* a surrogate */
    CHECK("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80");
    CHECK("\xe2\x82", "\\xe2\\x82"); /* cut short at the end */
    CHECK("\xe2\x82\x1b", "\\xe2\\x82^[");
    CHECK("\xe2\r\n", "\\xe2\n");
    CHECK("\xff\xfe", "\\xff\\xfe");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_passes),
        cmocka_unit_test(test_c0_and_del),
        cmocka_unit_test(test_c1_and_bad_utf8),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
