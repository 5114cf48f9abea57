/*
 * fuzz_smtp_data: libFuzzer target for lib/smtp_data (the DATA decoder:
 * what an SMTP client sends after 354). Every input is decoded whole, byte
 * by byte and in input-chosen chunks, and the results must agree with each
 * other and with a plain line-by-line model of the rule in lib/smtp_data.c
 * and relayd(8) DATA: only <CRLF>.<CRLF> (or ".<CRLF>" at the start) ends
 * the data; bare CR and bare LF become CRLF; only a line after a real CRLF
 * loses a leading dot. Violations abort(). No I/O and no state between
 * inputs; replay.c drives it without libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bytes of one input decoded here; DATA is a stream, so a prefix is enough. */
#define FUZZ_DATA_MAX 4096

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

struct decoded {
    char out[SMTP_DATA_OUT_MAX(FUZZ_DATA_MAX)];
    size_t out_len;
    size_t consumed;
    int done;
    unsigned received;
};

/* Feed `in` in chunks of the sizes step(k) gives, as a session's reads would. */
static void decode(const char *in, size_t n, size_t (*step)(size_t k, const char *in, size_t n),
                   struct decoded *r)
{
    struct smtp_data_dec d;
    size_t pos = 0, k = 0;

    smtp_data_init(&d);
    r->out_len = 0;
    r->done = 0;
    while (pos < n && !r->done) {
        size_t len = step(k++, in, n), got = 0, used;
        char *o = r->out + r->out_len;

        if (len == 0 || len > n - pos)
            len = n - pos;
        used = smtp_data_feed(&d, in + pos, len, o, &got, &r->done);
        CHECK(used <= len && got <= SMTP_DATA_OUT_MAX(len));
        CHECK(used == len || r->done); /* all of it, or up to the terminator */
        r->out_len += got;
        pos += used;
    }
    r->consumed = pos;
    r->received = smtp_data_received_count(&d);
}

static size_t whole(size_t k, const char *in, size_t n)
{
    (void)k, (void)in;
    return n;
}

static size_t bytewise(size_t k, const char *in, size_t n)
{
    (void)k, (void)in, (void)n;
    return 1;
}

/* 1..16 bytes, chosen by the input itself, so splits land everywhere. */
static size_t chosen(size_t k, const char *in, size_t n)
{
    return 1 + (size_t)((unsigned char)in[k % n] % 16);
}

/*
 * The model: line by line over the raw input. Returns the decoded bytes'
 * length in `out` (complete lines only, when the data did not end), sets
 * *consumed and *done.
 */
static size_t model(const char *in, size_t n, char *out, size_t *consumed, int *done)
{
    size_t pos = 0, len = 0;
    int real = 1; /* the line starts after a real CRLF (or at the start) */

    *done = 0;
    while (pos < n) {
        size_t end = pos, next;
        int crlf = 0;

        while (end < n && in[end] != '\r' && in[end] != '\n')
            end++;
        if (end == n || (in[end] == '\r' && end + 1 == n))
            break; /* an unfinished line (a final CR may yet be a CRLF) */
        crlf = in[end] == '\r' && in[end + 1] == '\n';
        next = end + (crlf ? 2 : 1);
        if (real && end - pos == 1 && in[pos] == '.' && crlf) {
            *done = 1;
            pos = next;
            break;
        }
        if (real && end > pos && in[pos] == '.')
            pos++; /* RFC 5321 §4.5.2 */
        memcpy(out + len, in + pos, end - pos);
        len += end - pos;
        out[len++] = '\r';
        out[len++] = '\n';
        real = crlf;
        pos = next;
    }
    *consumed = pos;
    return len;
}

/* Only CRLF line ends in what would be stored. */
static int only_crlf(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n'))
            return 0;
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t n = size;
    static struct decoded a, b, c;
    static char m[SMTP_DATA_OUT_MAX(FUZZ_DATA_MAX)];
    size_t mlen, mconsumed;
    int mdone;

    if (n > FUZZ_DATA_MAX)
        n = FUZZ_DATA_MAX;
    if (n == 0)
        return 0;
    decode(in, n, whole, &a);
    decode(in, n, bytewise, &b);
    decode(in, n, chosen, &c);

    /* however the input was split, the same message */
    CHECK(a.done == b.done && a.done == c.done);
    CHECK(a.consumed == b.consumed && a.consumed == c.consumed);
    CHECK(a.received == b.received && a.received == c.received);
    CHECK(a.out_len == b.out_len && a.out_len == c.out_len);
    CHECK(memcmp(a.out, b.out, a.out_len) == 0 && memcmp(a.out, c.out, a.out_len) == 0);

    mlen = model(in, n, m, &mconsumed, &mdone);
    CHECK(a.done == mdone);
    if (a.done) {
        /* only <CRLF>.<CRLF>, or ".<CRLF>" at the very start, ends it */
        CHECK(a.consumed == mconsumed);
        CHECK((a.consumed == 3 && memcmp(in, ".\r\n", 3) == 0) ||
              (a.consumed >= 5 && memcmp(in + a.consumed - 5, "\r\n.\r\n", 5) == 0));
        CHECK(a.out_len == mlen && memcmp(a.out, m, mlen) == 0);
        CHECK(only_crlf(a.out, a.out_len));
    } else {
        /* everything was taken; the finished lines are decoded as the model
         * says, the unfinished one at most held back */
        CHECK(a.consumed == n);
        CHECK(a.out_len >= mlen && memcmp(a.out, m, mlen) == 0);
        CHECK(a.out_len <= mlen + (n - mconsumed) + 2);
    }
    return 0;
}
