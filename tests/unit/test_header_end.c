/*
 * test_header_end: lib/header_end.c finds the end of the header section
 * whole and when the message comes one byte at a time, for a message with
 * a body, one without an empty line, one with no header fields, and an
 * empty line split across pieces.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "header_end.h"

static void check(const char *msg, int found, uint64_t hdr_len, uint64_t body_off)
{
    struct header_end h;
    size_t n = strlen(msg);

    header_end_init(&h);
    header_end_feed(&h, msg, n);
    assert_int_equal(h.found, found);
    if (found) {
        assert_int_equal(h.hdr_len, hdr_len);
        assert_int_equal(h.body_off, body_off);
    }
    header_end_init(&h);
    for (size_t i = 0; i < n; i++)
        header_end_feed(&h, msg + i, 1);
    assert_int_equal(h.found, found);
    if (found) {
        assert_int_equal(h.hdr_len, hdr_len);
        assert_int_equal(h.body_off, body_off);
    }
}

static void test_cases(void **state)
{
    (void)state;
    check("Subject: a\r\nTo: b\r\n\r\nbody\r\n\r\nmore\r\n", 1, 19, 21);
    check("Subject: a\r\n", 0, 0, 0);
    check("\r\nonly a body\r\n", 1, 0, 2);
    check("", 0, 0, 0);
    check("A: b\r\n\r\n", 1, 6, 8);
    /* a bare LF is not a line end (the stored form has CRLF) */
    check("A: b\n\nB: c\r\n\r\nx", 1, 12, 14);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cases)};

    return cmocka_run_group_tests(tests, NULL, NULL);
}
