/*
 * test_header_scan: lib/header_scan finds a field's value in a message fed
 * in pieces of any size, unfolds it, stops at the end of the header section
 * and never reads a body line as a header.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "header_scan.h"

/* The value found when msg is fed in pieces of step bytes (0: whole). */
static const char *scan(struct header_scan *h, const char *msg, size_t step)
{
    size_t n = strlen(msg);

    header_scan_init(h, "Message-ID");
    if (step == 0)
        step = n ? n : 1;
    for (size_t i = 0; i < n; i += step)
        header_scan_feed(h, msg + i, n - i < step ? n - i : step);
    return header_scan_value(h);
}

/* Every split of msg gives the same answer. */
static void expect(const char *msg, const char *want)
{
    struct header_scan h;

    for (size_t step = 0; step <= strlen(msg) + 1; step++) {
        const char *v = scan(&h, msg, step);
        if (want == NULL) {
            if (v != NULL)
                fail_msg("step %zu: found \"%s\" in %s", step, v, msg);
        } else {
            if (v == NULL)
                fail_msg("step %zu: nothing found in %s", step, msg);
            assert_string_equal(v, want);
        }
    }
}

static void test_found(void **state)
{
    (void)state;
    expect("From: a@b\r\nMessage-ID: <1@x.test>\r\nSubject: s\r\n\r\nbody\r\n", "<1@x.test>");
    expect("message-id:<2@x.test>\r\n\r\n", "<2@x.test>");
    expect("Subject: s\nMessage-Id:   <3@x.test>  \n\nbody\n", "<3@x.test>");
    /* folded onto a second line (RFC 5322 §2.2.3) */
    expect("Message-ID:\r\n <4@x.test>\r\nTo: t\r\n\r\n", "<4@x.test>");
    expect("Message-ID: <5@\r\n\tx.test>\r\n\r\n", "<5@ x.test>");
    /* the first one counts; the message may end inside it */
    expect("Message-ID: <6@x>\r\nMessage-ID: <7@x>\r\n\r\n", "<6@x>");
    expect("Message-ID: <8@x>", "<8@x>");
}

static void test_not_found(void **state)
{
    (void)state;
    expect("From: a@b\r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n", NULL);
    expect("", NULL);
    /* a continuation line of another field is not a field */
    expect("Subject: s\r\n Message-ID: <no@x>\r\n\r\n", NULL);
    expect("X-Message-ID: <no@x>\r\n\r\n", NULL);
    expect("Message-ID-Not: <no@x>\r\n\r\n", NULL);
}

static void test_bounded(void **state)
{
    char msg[2000], name[200];
    struct header_scan h;
    const char *v;

    (void)state;
    /* a long value is cut, control characters cannot reach the log */
    memset(msg, 0, sizeof(msg));
    strcpy(msg, "Message-ID: <");
    memset(msg + strlen(msg), 'a', 1000);
    strcat(msg, ">\r\n\r\n");
    v = scan(&h, msg, 7);
    assert_non_null(v);
    assert_int_equal(strlen(v), HEADER_SCAN_VALUE_MAX);
    expect("Message-ID: <a\x1b[31m@x>\r\n\r\n", "<a?[31m@x>");
    /* an over-long field name is skipped, not overrun */
    memset(name, 'N', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(msg, sizeof(msg), "%s: v\r\nMessage-ID: <9@x>\r\n\r\n", name);
    expect(msg, "<9@x>");
}

/* A NUL inside a field name (found by fuzz_header_scan): the name is
 * "Message-ID\0x", not Message-ID, so its value is not the Message-ID. */
static void test_nul_in_name(void **state)
{
    static const char msg[] = "Message-ID\0x: <no@x>\r\nMessage-ID: <10@x>\r\n\r\n";
    struct header_scan h;
    const char *v;

    (void)state;
    for (size_t step = 1; step <= sizeof(msg) - 1; step++) {
        header_scan_init(&h, "Message-ID");
        for (size_t i = 0; i < sizeof(msg) - 1; i += step)
            header_scan_feed(&h, msg + i, sizeof(msg) - 1 - i < step ? sizeof(msg) - 1 - i : step);
        v = header_scan_value(&h);
        assert_non_null(v);
        assert_string_equal(v, "<10@x>");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_nul_in_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
