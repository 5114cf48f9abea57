/*
 * test_buf: the bounded buffer (cap enforced, contents unchanged on failure,
 * consume, CRLF search, appendf), plus the stderr format of lib/log, which
 * has no test program of its own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

static void test_init_empty(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 100);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 100);
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_int_equal(buf_find_crlf(&b), -1);
    buf_free(&b);
}

static void test_append_to_max(void **state)
{
    struct buf b;
    char chunk[37];

    (void)state;
    memset(chunk, 'x', sizeof(chunk));
    buf_init(&b, 1000);
    /* Grows by doubling through many reallocations, never past max. */
    for (int i = 0; i < 27; i++) {
        chunk[0] = (char)('a' + i % 26);
        assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
        assert_true(b.cap >= b.len);
        assert_true(b.cap <= b.max);
    }
    assert_int_equal(b.len, 999);
    for (int i = 0; i < 27; i++)
        assert_int_equal(b.data[i * 37], 'a' + i % 26);

    /* One more byte fits exactly; then nothing more. */
    assert_int_equal(buf_append(&b, "!", 1), 0);
    assert_int_equal(b.len, 1000);
    assert_int_equal(b.cap, 1000);
    assert_int_equal(buf_append(&b, "?", 1), -ENOBUFS);
    assert_int_equal(b.len, 1000);
    assert_int_equal(b.data[999], '!');
    buf_free(&b);
}

static void test_append_over_max_unchanged(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_append(&b, "world!", 6), -ENOBUFS);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "hello", 5);
    assert_true(b.cap <= 10);
    /* A size that would overflow len + n is refused, not wrapped. */
    assert_int_equal(buf_append(&b, "x", SIZE_MAX), -ENOBUFS);
    assert_int_equal(b.len, 5);
    assert_int_equal(buf_append(&b, "world", 5), 0);
    assert_memory_equal(b.data, "helloworld", 10);
    buf_free(&b);

    /* A first append larger than max allocates nothing. */
    buf_init(&b, 4);
    assert_int_equal(buf_append(&b, "hello", 5), -ENOBUFS);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_consume(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 64);
    assert_int_equal(buf_append(&b, "EHLO a\r\nNOOP\r\n", 14), 0);
    buf_consume(&b, 0);
    assert_int_equal(b.len, 14);
    buf_consume(&b, 8);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "NOOP\r\n", 6);
    buf_consume(&b, 6);
    assert_int_equal(b.len, 0);
    /* The freed room is usable up to max again. */
    assert_int_equal(buf_append(&b, b.data, 0), 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(buf_append(&b, "z", 1), 0);
    assert_int_equal(buf_append(&b, "z", 1), -ENOBUFS);
    buf_consume(&b, 63);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.data[0], 'z');
    buf_free(&b);
}

static void test_reset_free_reuse(void **state)
{
    struct buf b;
    char *data;

    (void)state;
    buf_init(&b, 32);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    data = b.data;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data); /* allocation kept */
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 32);
    assert_int_equal(buf_append(&b, "def", 3), 0);
    assert_memory_equal(b.data, "def", 3);
    buf_free(&b);
    buf_free(&b); /* twice is harmless */
}

static long find_in(const char *s, size_t n)
{
    struct buf b;
    long r;

    buf_init(&b, 256);
    assert_int_equal(buf_append(&b, s, n), 0);
    r = buf_find_crlf(&b);
    buf_free(&b);
    return r;
}

static void test_find_crlf(void **state)
{
    (void)state;
    assert_int_equal(find_in("NOOP", 4), -1);
    assert_int_equal(find_in("NOOP\r", 5), -1);      /* CR at the end: LF not here yet */
    assert_int_equal(find_in("NOOP\n", 5), -1);      /* bare LF is not a line end */
    assert_int_equal(find_in("NO\rOP\n", 6), -1);    /* nor bare CR then LF later */
    assert_int_equal(find_in("\r\nNOOP\r\n", 8), 0); /* CRLF at 0: an empty line */
    assert_int_equal(find_in("NOOP\r\nQUIT\r\n", 12), 4);
    assert_int_equal(find_in("A\r\r\n", 4), 2);
    assert_int_equal(find_in("A\0B\r\n", 5), 3); /* NUL does not stop the search */
    assert_int_equal(find_in("\r", 1), -1);
    assert_int_equal(find_in("\n", 1), -1);
}

static void test_appendf(void **state)
{
    struct buf b;
    char big[300];

    (void)state;
    buf_init(&b, 600);
    assert_int_equal(buf_appendf(&b, "250-%s %d\r\n", "SIZE", 1024), 0);
    assert_int_equal(b.len, 15);
    assert_memory_equal(b.data, "250-SIZE 1024\r\n", 15);
    assert_int_equal(buf_appendf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 15);

    /* Longer than the first allocation: grows. */
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(buf_appendf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 15 + 301);
    assert_int_equal(b.data[15], '[');
    assert_int_equal(b.data[15 + 300], ']');

    /* Over max: refused, contents unchanged. */
    assert_int_equal(buf_appendf(&b, "%s", big), -ENOBUFS);
    assert_int_equal(b.len, 316);
    buf_free(&b);

    /* Exactly to max (no room for vsnprintf's NUL in place). */
    buf_init(&b, 8);
    assert_int_equal(buf_appendf(&b, "%d", 1234), 0);
    assert_int_equal(buf_appendf(&b, "%s", "5678"), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "12345678", 8);
    assert_true(b.cap <= 8);
    assert_int_equal(buf_appendf(&b, "%c", 'x'), -ENOBUFS);
    assert_memory_equal(b.data, "12345678", 8);
    buf_free(&b);
}

/* --- lib/log, stderr mode ---------------------------------------------------------------- */

/* Run fn with stderr redirected to a temporary file; return what it wrote. */
static size_t capture_stderr(void (*fn)(void), char *out, size_t size)
{
    char path[] = "/tmp/test_buf_log.XXXXXX";
    int fd = mkstemp(path), saved;
    ssize_t n;

    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    fn();
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    n = pread(fd, out, size - 1, 0);
    close(fd);
    assert_true(n >= 0);
    out[n] = '\0';
    return (size_t)n;
}

static void emit_levels(void)
{
    log_open("relayd-test", 1);
    log_set_level(LOGL_INFO);
    log_info("%s: from=<%s>", "Q1", "a@b");
    log_warn("w %d", 1);
    log_error("e");
    log_debug("dropped");
}

static void emit_long(void)
{
    static char big[5000];

    memset(big, 'x', sizeof(big) - 1);
    log_info("%s", big);
    log_info("evil\nFAKE\r\x1b line");
}

static void test_log_stderr(void **state)
{
    char got[8192], want[128], *line2, *line3;
    size_t n, tl = strlen("2024-01-01T00:00:00.000Z ");

    (void)state;
    n = capture_stderr(emit_levels, got, sizeof(got));
    /* "YYYY-mm-ddTHH:MM:SS.mmmZ ident[pid]: ..." */
    assert_true(n > tl);
    assert_int_equal(got[4], '-');
    assert_int_equal(got[10], 'T');
    assert_int_equal(got[19], '.');
    assert_int_equal(got[23], 'Z');
    snprintf(want, sizeof(want), "relayd-test[%ld]: Q1: from=<a@b>\n", (long)getpid());
    assert_memory_equal(got + tl, want, strlen(want));
    line2 = strchr(got, '\n') + 1;
    snprintf(want, sizeof(want), "relayd-test[%ld]: warning: w 1\n", (long)getpid());
    assert_memory_equal(line2 + tl, want, strlen(want));
    line3 = strchr(line2, '\n') + 1;
    snprintf(want, sizeof(want), "relayd-test[%ld]: error: e\n", (long)getpid());
    assert_memory_equal(line3 + tl, want, strlen(want));
    assert_int_equal(strchr(line3, '\n')[1], '\0'); /* debug was dropped */

    n = capture_stderr(emit_long, got, sizeof(got));
    line2 = strchr(got, '\n') + 1;
    assert_true(line2 - got <= 2048);
    assert_memory_equal(line2 - 4, "...\n", 4);
    assert_non_null(strstr(line2, "evil?FAKE?? line\n"));
    assert_ptr_equal(strchr(line2, '\n') + 1, got + n); /* still one line */
}

static void test_log_levels(void **state)
{
    enum log_level l = LOGL_ERROR;

    (void)state;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOGL_DEBUG);
    assert_int_equal(log_level_parse("warning", &l), 0);
    assert_int_equal(l, LOGL_WARN);
    assert_int_equal(log_level_parse("warn", &l), 0);
    assert_int_equal(l, LOGL_WARN);
    assert_int_equal(log_level_parse("error", &l), 0);
    assert_int_equal(l, LOGL_ERROR);
    assert_int_equal(log_level_parse("info", &l), 0);
    assert_int_equal(l, LOGL_INFO);
    assert_int_equal(log_level_parse("verbose", &l), -1);
    assert_int_equal(log_level_parse("", &l), -1);
    assert_int_equal(l, LOGL_INFO); /* untouched on error */
    assert_string_equal(log_level_name(LOGL_WARN), "warn");
    log_set_level(LOGL_DEBUG);
    assert_int_equal(log_get_level(), LOGL_DEBUG);
    log_set_level(LOGL_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_empty),
        cmocka_unit_test(test_append_to_max),
        cmocka_unit_test(test_append_over_max_unchanged),
        cmocka_unit_test(test_consume),
        cmocka_unit_test(test_reset_free_reuse),
        cmocka_unit_test(test_find_crlf),
        cmocka_unit_test(test_appendf),
        cmocka_unit_test(test_log_stderr),
        cmocka_unit_test(test_log_levels),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
