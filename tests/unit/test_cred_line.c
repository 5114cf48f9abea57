/*
 * test_cred_line: the credentials line parser (lib/cred_line.c): every
 * secret form, several forms in one SECRET, the mechanisms each allows,
 * comments and blanks, and the malformed lines relayd -t must refuse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cred_line.h"

#define SCRAM                                                                                      \
    "{SCRAM-SHA-256}4096,J3UZKf6xIff8vlFI,r6K3gb9LFUXO11YRMbLvz1d9arBqd+Z3qYqN/3zguVU=,"           \
    "Gnt6IO50l62CpfbOsQDdOW2fRZoyaoOtKFIDfANcLVE="
#define YESCRYPT "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"

static int parse(const char *text, struct cred_line *out, char *buf, size_t len, const char **why)
{
    snprintf(buf, len, "%s", text);
    return cred_line_parse(buf, out, why);
}

static void test_blank_and_comment(void **state)
{
    struct cred_line c;
    const char *why;
    char buf[256];

    (void)state;
    assert_int_equal(parse("", &c, buf, sizeof(buf), &why), 0);
    assert_int_equal(parse("   \t\r", &c, buf, sizeof(buf), &why), 0);
    assert_int_equal(parse("# site:{plain}x:example.org", &c, buf, sizeof(buf), &why), 0);
    assert_int_equal(parse("  #x", &c, buf, sizeof(buf), &why), 0);
}

static void test_crypt(void **state)
{
    struct cred_line c;
    const char *why;
    char buf[512];

    (void)state;
    assert_int_equal(
        parse("site1:" YESCRYPT ":example.org, Example.NET ", &c, buf, sizeof(buf), &why), 1);
    assert_string_equal(c.name, "site1");
    assert_string_equal(c.crypt_hash, YESCRYPT);
    assert_null(c.plain);
    assert_null(c.scram_salt);
    assert_int_equal(c.ndomains, 2);
    assert_string_equal(c.domains[0], "example.org");
    assert_string_equal(c.domains[1], "Example.NET");
    assert_int_equal(c.mechs, CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN);
    assert_int_equal(parse("a:$6$rounds=5000$salt$hash/./:example.org", &c, buf, sizeof(buf), &why),
                     1);
    assert_string_equal(c.crypt_hash, "$6$rounds=5000$salt$hash/./");
}

static void test_plain(void **state)
{
    struct cred_line c;
    const char *why;
    char buf[256];

    (void)state;
    /* the shared secret runs to the last ':' and may hold ';' and ':' */
    assert_int_equal(parse("odmr:{plain}pa;ss:w rd:example.org", &c, buf, sizeof(buf), &why), 1);
    assert_string_equal(c.plain, "pa;ss:w rd");
    assert_int_equal(c.mechs, CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN |
                                  CRED_LINE_MECH_CRAM_MD5 | CRED_LINE_MECH_SCRAM_SHA_256);
    assert_int_equal(parse("odmr:{PLAIN}x:example.org", &c, buf, sizeof(buf), &why), 1);
    assert_string_equal(c.plain, "x");
}

static void test_scram_and_several_forms(void **state)
{
    struct cred_line c;
    const char *why;
    char buf[512];

    (void)state;
    assert_int_equal(parse("s:" SCRAM ":example.org", &c, buf, sizeof(buf), &why), 1);
    assert_int_equal(c.scram_iter, 4096);
    assert_string_equal(c.scram_salt, "J3UZKf6xIff8vlFI");
    assert_string_equal(c.scram_stored_key, "r6K3gb9LFUXO11YRMbLvz1d9arBqd+Z3qYqN/3zguVU=");
    assert_string_equal(c.scram_server_key, "Gnt6IO50l62CpfbOsQDdOW2fRZoyaoOtKFIDfANcLVE=");
    assert_int_equal(c.mechs, CRED_LINE_MECH_SCRAM_SHA_256);
    /* what etrnctl credentials writes: SCRAM keys and a yescrypt hash */
    assert_int_equal(
        parse("s:" SCRAM ";" YESCRYPT ":a.example,b.example", &c, buf, sizeof(buf), &why), 1);
    assert_non_null(c.scram_salt);
    assert_string_equal(c.crypt_hash, YESCRYPT);
    assert_int_equal(c.mechs,
                     CRED_LINE_MECH_SCRAM_SHA_256 | CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN);
    assert_int_equal(c.ndomains, 2);
    assert_int_equal(parse("s:" YESCRYPT ";{plain}z:example.org", &c, buf, sizeof(buf), &why), 1);
    assert_string_equal(c.plain, "z");
    assert_non_null(c.crypt_hash);
}

static void test_bad_lines(void **state)
{
    static const char *bad[] = {
        "justaname",
        "name:example.org",
        ":{plain}x:example.org",
        "a b:{plain}x:example.org",
        "a:{plain}:example.org",
        "a::example.org",
        "a:secret:example.org",
        "a:{MD5}abc:example.org",
        "a:{plain}x:",
        "a:{plain}x:exa mple.org",
        "a:{plain}x:example..org",
        "a:{plain}x:example.org,,b.org",
        "a:$y$:example.org",
        "a:$y$j9T$a b$c:example.org",
        "a:" YESCRYPT ";" YESCRYPT ":example.org",
        "a:{SCRAM-SHA-256}4096,salt,key:example.org",
        "a:{SCRAM-SHA-256}100,J3UZKf6xIff8vlFI,r6K3gb9LFUXO11YRMbLvz1d9arBqd+Z3qYqN/3zguVU=,"
        "Gnt6IO50l62CpfbOsQDdOW2fRZoyaoOtKFIDfANcLVE=:example.org",
        "a:{SCRAM-SHA-256}4096,J3UZ!f6xIff8vlFI,r6K3gb9LFUXO11YRMbLvz1d9arBqd+Z3qYqN/3zguVU=,"
        "Gnt6IO50l62CpfbOsQDdOW2fRZoyaoOtKFIDfANcLVE=:example.org",
        "a:{SCRAM-SHA-256}4096,J3UZKf6xIff8vlFI,r6K3gb9LFUXO11YRM,"
        "Gnt6IO50l62CpfbOsQDdOW2fRZoyaoOtKFIDfANcLVE=:example.org",
        "a:{SCRAM-SHA-256}4096x,J3UZKf6xIff8vlFI,r6K3gb9LFUXO11YRMbLvz1d9arBqd+Z3qYqN/3zguVU=,"
        "Gnt6IO50l62CpfbOsQDdOW2fRZoyaoOtKFIDfANcLVE=:example.org",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:{plain}x:example.org",
    };
    struct cred_line c;
    const char *why;
    char buf[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (parse(bad[i], &c, buf, sizeof(buf), &why) != -1)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(why);
        /* a reason never repeats the secret */
        assert_null(strstr(why, "x:"));
    }
}

static void test_mech_names(void **state)
{
    char out[128];

    (void)state;
    cred_line_mech_names(CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN, out, sizeof(out));
    assert_string_equal(out, "PLAIN LOGIN");
    cred_line_mech_names(CRED_LINE_MECH_SCRAM_SHA_256 | CRED_LINE_MECH_CRAM_MD5, out, sizeof(out));
    assert_string_equal(out, "SCRAM-SHA-256 SCRAM-SHA-256-PLUS CRAM-MD5");
    cred_line_mech_names(0, out, sizeof(out));
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blank_and_comment),
        cmocka_unit_test(test_crypt),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_scram_and_several_forms),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_mech_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
