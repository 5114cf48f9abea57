/*
 * test_smtp_data: the DATA decoder against RFC 5321 §4.1.1.4/§4.5.2 and the
 * SMTP smuggling variants, plus split-invariance over every feed boundary and
 * a seeded random comparison with a simple independent reference decoder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_data.h"

#define MAX_IN  512
#define MAX_OUT (2 * MAX_IN + 16)

/* What one decode of a whole input produced. */
struct result {
    char out[MAX_OUT];
    size_t out_len;
    size_t consumed;
    int done;
    unsigned received;
};

/*
 * Decode in[0..len) fed as chunks of the given sizes (the last chunk takes
 * the rest). Each call gets an output buffer of exactly
 * SMTP_DATA_OUT_MAX(chunk), heap-allocated so ASan catches any overrun of
 * the documented bound. Once done, the remaining chunks are not fed: the
 * caller (the session) would treat them as commands.
 */
static void decode_chunks(const char *in, size_t len, const size_t *sizes, size_t nsizes,
                          struct result *r)
{
    struct smtp_data_dec d;
    size_t pos = 0;

    memset(r, 0, sizeof(*r));
    smtp_data_init(&d);
    for (size_t k = 0; k <= nsizes && !r->done; k++) {
        size_t n = (k < nsizes) ? sizes[k] : len - pos;
        char *out;
        size_t out_len = 12345, used;
        int done = -1;

        assert_true(n <= len - pos);
        out = malloc(SMTP_DATA_OUT_MAX(n));
        assert_non_null(out);
        used = smtp_data_feed(&d, in + pos, n, out, &out_len, &done);
        assert_true(used <= n);
        assert_true(done == 0 || done == 1);
        assert_true(out_len <= SMTP_DATA_OUT_MAX(n));
        if (!done)
            assert_int_equal(used, n); /* not done: everything is consumed */
        assert_true(r->out_len + out_len <= sizeof(r->out));
        memcpy(r->out + r->out_len, out, out_len);
        r->out_len += out_len;
        free(out);
        pos += used;
        r->done = done;
        if (done) {
            /* After the end, feeding again consumes and produces nothing. */
            char tail[SMTP_DATA_OUT_MAX(MAX_IN)];
            size_t tail_len = 99;
            int tail_done = 0;

            assert_int_equal(smtp_data_feed(&d, in + pos, len - pos, tail, &tail_len, &tail_done),
                             0);
            assert_int_equal(tail_len, 0);
            assert_int_equal(tail_done, 1);
        }
    }
    r->consumed = pos;
    r->received = smtp_data_received_count(&d);
}

static void decode_all(const char *in, size_t len, struct result *r)
{
    decode_chunks(in, len, NULL, 0, r);
}

static void decode_bytewise(const char *in, size_t len, struct result *r)
{
    size_t ones[MAX_IN];

    assert_true(len <= MAX_IN);
    for (size_t i = 0; i < len; i++)
        ones[i] = 1;
    decode_chunks(in, len, ones, len, r);
}

static void assert_same(const struct result *a, const struct result *b)
{
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->received, b->received);
    assert_int_equal(a->out_len, b->out_len);
    assert_memory_equal(a->out, b->out, a->out_len);
}

/* Every CR is followed by LF and every LF preceded by CR. */
static void assert_crlf_only(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r')
            assert_true(i + 1 < n && s[i + 1] == '\n');
        if (s[i] == '\n')
            assert_true(i > 0 && s[i - 1] == '\r');
    }
}

/* Split-invariance: every two-chunk split and one byte per call give exactly
 * what a single call gives. */
static void assert_split_invariant(const char *in, size_t len)
{
    struct result whole, part;

    decode_all(in, len, &whole);
    for (size_t cut = 0; cut <= len; cut++) {
        decode_chunks(in, len, &cut, 1, &part);
        assert_same(&whole, &part);
    }
    decode_bytewise(in, len, &part);
    assert_same(&whole, &part);
}

/* Decode a C string input all at once and compare with the expectations. */
static void check(const char *in, const char *want_out, int want_done, size_t want_consumed)
{
    struct result r;
    size_t len = strlen(in);

    decode_all(in, len, &r);
    assert_int_equal(r.done, want_done);
    assert_int_equal(r.consumed, want_consumed);
    assert_int_equal(r.out_len, strlen(want_out));
    assert_memory_equal(r.out, want_out, r.out_len);
    assert_crlf_only(r.out, r.out_len);
    assert_split_invariant(in, len);
}

static void test_plain(void **state)
{
    (void)state;
    check("Subject: hi\r\n\r\nhello\r\nworld\r\n.\r\n", "Subject: hi\r\n\r\nhello\r\nworld\r\n", 1,
          32);
}

static void test_unstuff(void **state)
{
    (void)state;
    check("a\r\n..\r\n.\r\n", "a\r\n.\r\n", 1, 10);
    check("a\r\n...\r\n.\r\n", "a\r\n..\r\n", 1, 11);
    check("a\r\n..x\r\n.\r\n", "a\r\n.x\r\n", 1, 11);
    check("a\r\n.x\r\n.\r\n", "a\r\nx\r\n", 1, 10);
    /* The stream start is a line start. */
    check(".abc\r\n.\r\n", "abc\r\n", 1, 9);
    check("..\r\n.\r\n", ".\r\n", 1, 7);
    /* Only the first dot of a line, and only at the line start. */
    check("a.b\r\nx..\r\n.\r\n", "a.b\r\nx..\r\n", 1, 13);
}

static void test_empty(void **state)
{
    (void)state;
    check(".\r\n", "", 1, 3);
    check(".\r\nQUIT\r\n", "", 1, 3);
    check("\r\n.\r\n", "\r\n", 1, 5);
    check("", "", 0, 0);
}

static void test_end_and_pipelining(void **state)
{
    (void)state;
    /* The CRLF before the dot belongs to the message; the rest is commands. */
    check("abc\r\n.\r\nQUIT\r\n", "abc\r\n", 1, 8);
    check("abc\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", "abc\r\n", 1, 8);
    check("abc\r\n.\r\n.\r\n", "abc\r\n", 1, 8);
    /* Not yet complete: everything consumed, nothing about the end decided. */
    check("abc\r\n.\r", "abc\r\n", 0, 7);
    check("abc\r\n.", "abc\r\n", 0, 6);
    check("abc\r\n", "abc\r\n", 0, 5);
}

/* The SMTP smuggling variants: none ends data, all are normalised, and a
 * real <CRLF>.<CRLF> afterwards still ends it. */
static void test_smuggling(void **state)
{
    static const struct {
        const char *variant;
        const char *out_alone; /* "abc" + variant + "MAIL FROM:<x>\r\n" */
        const char *out_ended; /* "abc" + variant + "\r\n.\r\nNOOP\r\n" */
    } cases[] = {
        {"\n.\n", "abc\r\n.\r\nMAIL FROM:<x>\r\n", "abc\r\n.\r\n\r\n"},
        {"\r.\r", "abc\r\n.\r\nMAIL FROM:<x>\r\n", "abc\r\n.\r\n\r\n"},
        {"\n.\r\n", "abc\r\n.\r\nMAIL FROM:<x>\r\n", "abc\r\n.\r\n\r\n"},
        {"\r\n.\n", "abc\r\n\r\nMAIL FROM:<x>\r\n", "abc\r\n\r\n\r\n"},
        {"\r\n.\rX", "abc\r\n\r\nXMAIL FROM:<x>\r\n", "abc\r\n\r\nX\r\n"},
        {"\r.\n", "abc\r\n.\r\nMAIL FROM:<x>\r\n", "abc\r\n.\r\n\r\n"},
        {"\n.\r", "abc\r\n.\r\nMAIL FROM:<x>\r\n", "abc\r\n.\r\n\r\n"},
        {"\r\n.\r\r\n", "abc\r\n\r\n\r\nMAIL FROM:<x>\r\n", "abc\r\n\r\n\r\n\r\n"},
        {"\r\n.\r.\r\n", "abc\r\n\r\n.\r\nMAIL FROM:<x>\r\n", "abc\r\n\r\n.\r\n\r\n"},
        {"\r\n. \r\n", "abc\r\n \r\nMAIL FROM:<x>\r\n", "abc\r\n \r\n\r\n"},
    };
    char in[MAX_IN];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(in, sizeof(in), "abc%sMAIL FROM:<x>\r\n", cases[i].variant);
        check(in, cases[i].out_alone, 0, strlen(in));

        snprintf(in, sizeof(in), "abc%s\r\n.\r\nNOOP\r\n", cases[i].variant);
        check(in, cases[i].out_ended, 1, strlen(in) - strlen("NOOP\r\n"));
    }
    /* These do contain a real CRLF.CRLF (the CR right before the LF). */
    check("abc\r\r\n.\r\nX", "abc\r\n\r\n", 1, 9);
    check("abc\n\r\n.\r\nX", "abc\r\n\r\n", 1, 9);
    check("abc\n.\r\n.\r\nX", "abc\r\n.\r\n", 1, 10);
}

static void test_bare_normalised(void **state)
{
    (void)state;
    check("a\nb\rc\r\r\nd\n\n.\r\n", "a\r\nb\r\nc\r\n\r\nd\r\n\r\n.\r\n", 0, 14);
    /* A dot after a bare LF/CR is not at a real line start: kept. */
    check("a\n..\r\n.\r\n", "a\r\n..\r\n", 1, 9);
    check("a\r.x\r\n.\r\n", "a\r\n.x\r\n", 1, 9);
}

static void test_cr_split(void **state)
{
    struct smtp_data_dec d;
    char out[64];
    size_t out_len;
    int done;

    (void)state;
    /* A CR at the end of a call waits for the next byte. */
    smtp_data_init(&d);
    assert_int_equal(smtp_data_feed(&d, "abc\r", 4, out, &out_len, &done), 4);
    assert_int_equal(done, 0);
    assert_int_equal(out_len, 3);
    assert_memory_equal(out, "abc", 3);
    assert_int_equal(smtp_data_feed(&d, "\nxy", 3, out, &out_len, &done), 3);
    assert_int_equal(out_len, 4);
    assert_memory_equal(out, "\r\nxy", 4);

    /* ...and becomes CRLF when it turns out to be bare. */
    smtp_data_init(&d);
    smtp_data_feed(&d, "abc\r", 4, out, &out_len, &done);
    assert_int_equal(smtp_data_feed(&d, "x", 1, out, &out_len, &done), 1);
    assert_int_equal(out_len, 3);
    assert_memory_equal(out, "\r\nx", 3);

    /* The terminator split around its CR. */
    smtp_data_init(&d);
    assert_int_equal(smtp_data_feed(&d, "abc\r\n.\r", 7, out, &out_len, &done), 7);
    assert_int_equal(done, 0);
    assert_int_equal(out_len, 5);
    assert_int_equal(smtp_data_feed(&d, "\nQUIT\r\n", 7, out, &out_len, &done), 1);
    assert_int_equal(done, 1);
    assert_int_equal(out_len, 0);

    /* Split after the dot, then a bare CR: not the end. */
    smtp_data_init(&d);
    smtp_data_feed(&d, "abc\r\n.", 6, out, &out_len, &done);
    assert_int_equal(smtp_data_feed(&d, "\r", 1, out, &out_len, &done), 1);
    assert_int_equal(out_len, 0);
    assert_int_equal(smtp_data_feed(&d, "\r\n", 2, out, &out_len, &done), 2);
    assert_int_equal(done, 0);
    assert_int_equal(out_len, 4);
    assert_memory_equal(out, "\r\n\r\n", 4);

    /* An empty feed changes nothing. */
    assert_int_equal(smtp_data_feed(&d, "", 0, out, &out_len, &done), 0);
    assert_int_equal(out_len, 0);
    assert_int_equal(done, 0);
}

static void test_binary(void **state)
{
    static const char in[] = "a\0b\xff\x80\r\n\0.\r\n.\r\n";
    static const char want[] = "a\0b\xff\x80\r\n\0.\r\n";
    struct result r;

    (void)state;
    decode_all(in, sizeof(in) - 1, &r);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.consumed, sizeof(in) - 1);
    assert_int_equal(r.out_len, sizeof(want) - 1);
    assert_memory_equal(r.out, want, r.out_len);
    assert_split_invariant(in, sizeof(in) - 1);
}

static unsigned received_of(const char *in)
{
    struct result r;

    assert_split_invariant(in, strlen(in)); /* incl. the header split across calls */
    decode_all(in, strlen(in), &r);
    return r.received;
}

static void test_received(void **state)
{
    (void)state;
    assert_int_equal(received_of("Subject: x\r\n\r\nbody\r\n.\r\n"), 0);
    assert_int_equal(received_of("Received: a\r\nReceived: b\r\nSubject: x\r\nReceived: c\r\n"
                                 "\r\nbody\r\n.\r\n"),
                     3);
    assert_int_equal(received_of("RECEIVED: a\r\nreceived: b\r\nrEcEiVeD:c\r\n\r\n.\r\n"), 3);
    assert_int_equal(received_of("Received : a\r\nReceived\t:b\r\nReceived \t :c\r\n\r\n.\r\n"), 3);
    /* Continuations and look-alikes are not Received: fields. */
    assert_int_equal(received_of("Received: a\r\n Received: b\r\n\tReceived: c\r\n\r\n.\r\n"), 1);
    assert_int_equal(received_of("Received-SPF: pass\r\nX-Received: a\r\nReceived a:\r\n"
                                 "Receive: a\r\nReceivedd: a\r\nReceived\r\n\r\n.\r\n"),
                     0);
    /* In the body, after the first empty line: not counted. */
    assert_int_equal(received_of("Received: a\r\n\r\nReceived: b\r\nReceived: c\r\n.\r\n"), 1);
    assert_int_equal(received_of("\r\nReceived: b\r\n.\r\n"), 0);
    /* Counted on the stored (normalised, unstuffed) text. */
    assert_int_equal(received_of("X: y\nReceived: a\rReceived: b\r\n\r\n.\r\n"), 2);
    assert_int_equal(received_of("X: y\n\nReceived: a\r\n.\r\n"), 0);
    assert_int_equal(received_of(".Received: a\r\n\r\n.\r\n"), 1);
    /* Unterminated data still counts what it has seen. */
    assert_int_equal(received_of("Received: a\r\nRece"), 1);
}

static void test_received_split(void **state)
{
    static const char *chunks[] = {"Rec",  "eiv",   "ed",       " ",    ":",
                                   " x\r", "\nREC", "EIVED:\r", "\n\r", "\nReceived: no\r\n",
                                   ".\r\n"};
    struct smtp_data_dec d;
    char out[64];
    size_t out_len;
    int done = 0;

    (void)state;
    smtp_data_init(&d);
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        size_t n = strlen(chunks[i]);

        assert_int_equal(smtp_data_feed(&d, chunks[i], n, out, &out_len, &done), n);
    }
    assert_int_equal(done, 1);
    assert_int_equal(smtp_data_received_count(&d), 2);
}

/* --- the reference decoder for the random tests ---------------------------------------- */

/*
 * An independent statement of the rule: the data ends right after the first
 * ".\r\n" at the start or "\r\n.\r\n" anywhere; the message is what comes
 * before that dot, cut into real lines at each "\r\n"; each real line loses
 * one leading dot, and its bare CR/LF become CRLF. Only used on input that
 * has a terminator. Returns the consumed count, or 0 if there is none.
 */
static size_t reference(const char *in, size_t len, char *out, size_t *out_len)
{
    size_t body_end, consumed, o = 0, i = 0;

    if (len >= 3 && memcmp(in, ".\r\n", 3) == 0) {
        body_end = 0;
        consumed = 3;
    } else {
        const char *t = memmem(in, len, "\r\n.\r\n", 5);

        if (t == NULL)
            return 0;
        body_end = (size_t)(t - in) + 2;
        consumed = body_end + 3;
    }
    while (i < body_end) {
        /* One real line: [i, eol), where eol is the next "\r\n". */
        size_t eol = i;

        while (!(in[eol] == '\r' && in[eol + 1] == '\n'))
            eol++;
        if (in[i] == '.')
            i++;
        for (; i < eol; i++) {
            if (in[i] == '\r' || in[i] == '\n') {
                out[o++] = '\r';
                out[o++] = '\n';
            } else {
                out[o++] = in[i];
            }
        }
        out[o++] = '\r';
        out[o++] = '\n';
        i = eol + 2;
    }
    *out_len = o;
    return consumed;
}

/* Received: fields in the header section of a decoded (CRLF-only) message. */
static unsigned reference_received(const char *m, size_t n)
{
    unsigned count = 0;
    size_t i = 0;

    while (i < n) {
        const char *eol = memmem(m + i, n - i, "\r\n", 2);
        size_t line_len = eol ? (size_t)(eol - (m + i)) : n - i;
        size_t j = 8;

        if (line_len == 0 && eol)
            break; /* the empty line ends the header section */
        if (line_len >= 8 && strncasecmp(m + i, "received", 8) == 0) {
            while (j < line_len && (m[i + j] == ' ' || m[i + j] == '\t'))
                j++;
            if (j < line_len && m[i + j] == ':')
                count++;
        }
        if (!eol)
            break;
        i += line_len + 2;
    }
    return count;
}

/* A fixed-seed generator, so every run checks the same inputs. */
static uint32_t rng_state;

static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 16;
}

/* Check one random input: split-invariance, CRLF-only output, and agreement
 * with the reference (directly, or after appending a terminator). */
static void check_random(const char *in, size_t len)
{
    char ext[MAX_IN + 8];
    char ref[MAX_OUT];
    size_t ref_len = 0, ref_consumed;
    struct result r;

    assert_split_invariant(in, len);
    decode_all(in, len, &r);
    assert_crlf_only(r.out, r.out_len);

    ref_consumed = reference(in, len, ref, &ref_len);
    if (ref_consumed) {
        assert_int_equal(r.done, 1);
        assert_int_equal(r.consumed, ref_consumed);
        assert_int_equal(r.out_len, ref_len);
        assert_memory_equal(r.out, ref, ref_len);
        assert_int_equal(r.received, reference_received(ref, ref_len));
        return;
    }
    /* No terminator: all consumed, and the output so far is a prefix of
     * what the message is once a terminator arrives. */
    assert_int_equal(r.done, 0);
    assert_int_equal(r.consumed, len);
    memcpy(ext, in, len);
    memcpy(ext + len, "\r\n.\r\n", 5);
    ref_consumed = reference(ext, len + 5, ref, &ref_len);
    assert_true(ref_consumed > 0);
    assert_true(r.out_len <= ref_len);
    assert_memory_equal(r.out, ref, r.out_len);
}

static void test_random_alphabet(void **state)
{
    static const char alphabet[] = {'\r', '\n', '.', 'a', 'R', ':'};
    char in[64];

    (void)state;
    rng_state = 20240601u;
    for (int n = 0; n < 3000; n++) {
        size_t len = rng() % sizeof(in);

        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng() % sizeof(alphabet)];
        check_random(in, len);
    }
}

/* Random messages from header-ish tokens, so Received: counting and the
 * header/body boundary are exercised as well as the line ends. */
static void test_random_tokens(void **state)
{
    static const char *tokens[] = {
        "Received:", "received :", "RECEIVED\t:", "Received", "Received-SPF:",
        "X: y",      " ",          "\t",          ".",        "..",
        "\r\n",      "\n",         "\r",          "\r\n.",    "\r\n.\r\n",
        "a",         ":",          "\r\n\r\n",
    };
    char in[MAX_IN];

    (void)state;
    rng_state = 7u;
    for (int n = 0; n < 1500; n++) {
        size_t len = 0, ntok = rng() % 24;

        for (size_t k = 0; k < ntok; k++) {
            const char *t = tokens[rng() % (sizeof(tokens) / sizeof(tokens[0]))];
            size_t tl = strlen(t);

            memcpy(in + len, t, tl);
            len += tl;
        }
        check_random(in, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),           cmocka_unit_test(test_unstuff),
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_end_and_pipelining),
        cmocka_unit_test(test_smuggling),       cmocka_unit_test(test_bare_normalised),
        cmocka_unit_test(test_cr_split),        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_received),        cmocka_unit_test(test_received_split),
        cmocka_unit_test(test_random_alphabet), cmocka_unit_test(test_random_tokens),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
