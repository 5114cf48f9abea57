/*
 * test_smtp_reply: lib/smtp_reply.c, a site's reply as the delivery client
 * reads it: multiline replies (RFC 5321 §4.2.1) and their limits, the
 * enhanced status code of the reply's class (RFC 2034 §3), EHLO keywords
 * and SIZE (RFC 1870 §4), and control characters kept out of the text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp_reply.h"

static enum smtp_reply_status line(struct smtp_reply_reader *rd, const char *s, int ehlo)
{
    return smtp_reply_line(rd, s, strlen(s), ehlo);
}

static void test_multiline(void **state)
{
    struct smtp_reply_reader rd;

    (void)state;
    smtp_reply_init(&rd);
    assert_int_equal(line(&rd, "250-mx.example.org hello", 1), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250-PIPELINING", 1), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250-size 10240000", 1), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250-STARTTLS", 1), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250-DSN\tx", 1), SMTP_REPLY_MORE); /* not "DSN" */
    assert_int_equal(line(&rd, "250 8BITMIME", 1), SMTP_REPLY_DONE);
    assert_int_equal(rd.code, 250);
    assert_int_equal(rd.ext,
                     SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_STARTTLS | SMTP_EXT_8BITMIME);
    assert_int_equal(rd.size, 10240000);
    assert_string_equal(rd.text, "8BITMIME");
    /* the next reply starts afresh, and is no EHLO reply */
    assert_int_equal(line(&rd, "250-first", 0), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250 PIPELINING", 0), SMTP_REPLY_DONE);
    assert_int_equal(rd.ext, 0);
    assert_int_equal(rd.size, 0);
}

static void test_size(void **state)
{
    struct smtp_reply_reader rd;

    (void)state;
    smtp_reply_init(&rd);
    line(&rd, "250-mx", 1);
    assert_int_equal(line(&rd, "250 SIZE", 1), SMTP_REPLY_DONE);
    assert_int_equal(rd.ext, SMTP_EXT_SIZE);
    assert_int_equal(rd.size, 0); /* no fixed limit */
    line(&rd, "250-mx", 1);
    assert_int_equal(line(&rd, "250 SIZE 99999999999999999999999", 1), SMTP_REPLY_DONE);
    assert_int_equal(rd.size, 0); /* absurd: no limit, never a wrapped small one */
    line(&rd, "250-mx", 1);
    assert_int_equal(line(&rd, "250 SIZE 18446744073709551609", 1), SMTP_REPLY_DONE);
    assert_true(rd.size == UINT64_C(18446744073709551609));
}

static void test_enhanced(void **state)
{
    struct smtp_reply_reader rd;

    (void)state;
    smtp_reply_init(&rd);
    assert_int_equal(line(&rd, "550 5.1.1  <bob@example.org>: unknown", 0), SMTP_REPLY_DONE);
    assert_string_equal(rd.enh, "5.1.1");
    assert_string_equal(rd.text, "<bob@example.org>: unknown");
    /* another class, too many digits, no space after: text, not a code */
    line(&rd, "550 4.1.1 wrong class", 0);
    assert_string_equal(rd.enh, "");
    assert_string_equal(rd.text, "4.1.1 wrong class");
    line(&rd, "250 2.0.1234 long", 0);
    assert_string_equal(rd.enh, "");
    line(&rd, "250 2.0.0ok", 0);
    assert_string_equal(rd.enh, "");
    line(&rd, "250 2.0.0", 0);
    assert_string_equal(rd.enh, "2.0.0");
    assert_string_equal(rd.text, "");
}

static void test_text_is_safe(void **state)
{
    struct smtp_reply_reader rd;
    char big[1000];

    (void)state;
    smtp_reply_init(&rd);
    line(&rd, "421 bye\x1b[2J\x7f\tnow", 0);
    assert_string_equal(rd.text, "bye?[2J?\tnow");
    memset(big, 'x', sizeof(big) - 1);
    memcpy(big, "250 ", 4);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(line(&rd, big, 0), SMTP_REPLY_DONE);
    assert_int_equal(strlen(rd.text), SMTP_REPLY_TEXT_SIZE - 1);
}

static void test_limits(void **state)
{
    struct smtp_reply_reader rd;
    char big[1100];
    int i;

    (void)state;
    smtp_reply_init(&rd);
    assert_int_equal(line(&rd, "25O ok", 0), SMTP_REPLY_MALFORMED);
    smtp_reply_init(&rd);
    for (i = 1; i < SMTP_REPLY_MAX_LINES; i++)
        assert_int_equal(line(&rd, "250-more", 0), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250 last", 0), SMTP_REPLY_DONE); /* line 100 */
    for (i = 0; i < SMTP_REPLY_MAX_LINES; i++)
        assert_int_equal(line(&rd, "250-more", 0), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, "250 last", 0), SMTP_REPLY_TOO_LONG); /* line 101 */

    /* bytes: 62 lines of 1000 + 2 fit in 64 KiB, a 66th line does not */
    smtp_reply_init(&rd);
    memset(big, 'y', 1000);
    memcpy(big, "250-", 4);
    big[1000] = '\0';
    for (i = 0; i < 65; i++)
        assert_int_equal(line(&rd, big, 0), SMTP_REPLY_MORE);
    assert_int_equal(line(&rd, big, 0), SMTP_REPLY_TOO_LONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multiline), cmocka_unit_test(test_size),
        cmocka_unit_test(test_enhanced),  cmocka_unit_test(test_text_is_safe),
        cmocka_unit_test(test_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
