/*
 * test_ctl_request: lib/ctl_request.c, the control socket's request line.
 * Where a request ends (LF, EOF, a CR before it), what is refused (NUL,
 * more than CTL_REQUEST_MAX bytes), how it splits into words and
 * percent-decoded key=value arguments, and the keys-list test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ctl_request.h"

static enum ctl_request_frame frame(const char *in, size_t n, int eof, char *buf, size_t *len)
{
    memcpy(buf, in, n);
    return ctl_request_frame(buf, n, eof, len);
}

static void test_frame(void **state)
{
    char buf[64];
    size_t len = 99;

    (void)state;
    assert_int_equal(frame("queue", 5, 0, buf, &len), CTL_REQUEST_MORE);
    assert_int_equal(frame("queue\n", 6, 0, buf, &len), CTL_REQUEST_LINE);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "queue");
    assert_int_equal(frame("queue\r\nrest", 11, 0, buf, &len), CTL_REQUEST_LINE);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "queue");
    /* EOF ends the request too; only one CR goes */
    assert_int_equal(frame("stats\r\r", 7, 1, buf, &len), CTL_REQUEST_LINE);
    assert_string_equal(buf, "stats\r");
    assert_int_equal(frame("", 0, 1, buf, &len), CTL_REQUEST_LINE);
    assert_int_equal(len, 0);
    /* a NUL before the line end is refused, after it is not looked at */
    assert_int_equal(frame("que\0ue\n", 7, 0, buf, &len), CTL_REQUEST_NUL);
    assert_int_equal(frame("queue\n\0", 7, 0, buf, &len), CTL_REQUEST_LINE);
}

static void test_frame_limit(void **state)
{
    size_t n = CTL_REQUEST_MAX + 2, len = 0;
    char *buf = malloc(n + 1);

    (void)state;
    assert_non_null(buf);
    memset(buf, 'a', n);
    /* exactly the limit, with CRLF: a line */
    buf[CTL_REQUEST_MAX] = '\r';
    buf[CTL_REQUEST_MAX + 1] = '\n';
    assert_int_equal(ctl_request_frame(buf, n, 0, &len), CTL_REQUEST_LINE);
    assert_int_equal(len, CTL_REQUEST_MAX);
    /* one byte more and no LF in all the room there is: too long */
    memset(buf, 'a', n);
    assert_int_equal(ctl_request_frame(buf, n - 1, 0, &len), CTL_REQUEST_MORE);
    assert_int_equal(ctl_request_frame(buf, n, 0, &len), CTL_REQUEST_TOO_LONG);
    assert_int_equal(ctl_request_frame(buf, CTL_REQUEST_MAX + 1, 1, &len), CTL_REQUEST_TOO_LONG);
    free(buf);
}

static void test_words_and_args(void **state)
{
    char line[] = "  hold id=A%20B  domain=.Example.org flag= =x %3d=%25 ";
    char *pos = line, *w, *key, *value;

    (void)state;
    assert_int_equal(ctl_request_max_words(line), 10);
    w = ctl_request_word(&pos);
    assert_string_equal(w, "hold");
    w = ctl_request_word(&pos);
    assert_int_equal(ctl_request_arg(w, &key, &value), CTL_REQUEST_ARG_OK);
    assert_string_equal(key, "id");
    assert_string_equal(value, "A B");
    w = ctl_request_word(&pos);
    assert_int_equal(ctl_request_arg(w, &key, &value), CTL_REQUEST_ARG_OK);
    assert_string_equal(value, ".Example.org");
    w = ctl_request_word(&pos);
    assert_int_equal(ctl_request_arg(w, &key, &value), CTL_REQUEST_ARG_OK);
    assert_string_equal(key, "flag");
    assert_string_equal(value, "");
    w = ctl_request_word(&pos);
    assert_int_equal(ctl_request_arg(w, &key, &value), CTL_REQUEST_ARG_OK);
    assert_string_equal(key, "");
    w = ctl_request_word(&pos);
    assert_int_equal(ctl_request_arg(w, &key, &value), CTL_REQUEST_ARG_OK);
    assert_string_equal(key, "=");
    assert_string_equal(value, "%");
    assert_null(ctl_request_word(&pos));
    assert_null(ctl_request_word(&pos));
}

static void test_bad_args(void **state)
{
    char noeq[] = "domain", bad1[] = "id=%4", bad2[] = "id=%zz", nul[] = "id=%00", ok[] = "a%4a";
    char *key, *value;

    (void)state;
    assert_int_equal(ctl_request_arg(noeq, &key, &value), CTL_REQUEST_ARG_NO_EQUALS);
    assert_int_equal(ctl_request_arg(bad1, &key, &value), CTL_REQUEST_ARG_BAD_ESCAPE);
    assert_int_equal(ctl_request_arg(bad2, &key, &value), CTL_REQUEST_ARG_BAD_ESCAPE);
    /* values are C strings: %00 would cut one short */
    assert_int_equal(ctl_request_arg(nul, &key, &value), CTL_REQUEST_ARG_BAD_ESCAPE);
    assert_int_equal(ctl_request_decode(ok), 0);
    assert_string_equal(ok, "aJ");
}

static void test_in_list(void **state)
{
    (void)state;
    assert_true(ctl_request_in_list("domain id all", "id"));
    assert_true(ctl_request_in_list("domain id all", "all"));
    assert_false(ctl_request_in_list("domain id all", "i"));
    assert_false(ctl_request_in_list("domain id all", "domain id"));
    assert_false(ctl_request_in_list("", "id"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame),          cmocka_unit_test(test_frame_limit),
        cmocka_unit_test(test_words_and_args), cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_in_list),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
