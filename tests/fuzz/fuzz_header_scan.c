/*
 * fuzz_header_scan: libFuzzer target for lib/header_scan (the Message-ID
 * of a message as the SMTP server stores it, for the log). The input is a
 * message; it is fed whole, byte by byte and in input-chosen pieces, and
 * the three must agree with each other and with a plain line-by-line model
 * of header_scan.h: the first field named Message-ID (any case) in the
 * header section (RFC 5322 §2.2, up to the first empty line), its value
 * unfolded, white space runs as one space and trimmed, control characters
 * as '?', at most HEADER_SCAN_VALUE_MAX bytes. No I/O and no state between
 * inputs; replay.c drives it without libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "header_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT 8192
#define WANT           "Message-ID"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Feed in pieces of the sizes step gives; the value or NULL, copied to out. */
static int scan(const char *in, size_t n, size_t (*step)(size_t k, const char *in, size_t n),
                char *out)
{
    struct header_scan h;
    const char *v;
    size_t pos = 0, k = 0;

    header_scan_init(&h, WANT);
    while (pos < n) {
        size_t len = step(k++, in, n);
        if (len == 0 || len > n - pos)
            len = n - pos;
        header_scan_feed(&h, in + pos, len);
        pos += len;
    }
    v = header_scan_value(&h);
    if (v == NULL)
        return 0;
    CHECK(strlen(v) <= HEADER_SCAN_VALUE_MAX);
    strcpy(out, v);
    return 1;
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

static size_t chosen(size_t k, const char *in, size_t n)
{
    return 1 + (size_t)((unsigned char)in[k % n] % 16);
}

/* Append one byte of a value as the header says values are kept. */
static void model_char(char *v, size_t *len, unsigned char c)
{
    if (c == '\r' || c == '\n')
        return;
    if (c == '\t')
        c = ' ';
    if (c < 0x20 || c == 0x7f)
        c = '?';
    if (c == ' ' && (*len == 0 || v[*len - 1] == ' '))
        return;
    if (*len < HEADER_SCAN_VALUE_MAX)
        v[(*len)++] = (char)c;
}

/* The model, line by line. 1 and the value in out, or 0. */
static int model(const char *in, size_t n, char *out)
{
    size_t pos = 0, want_len = strlen(WANT);

    while (pos < n) {
        const char *nl = memchr(in + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - in) : n, colon, vlen = 0;

        /* the empty line (LF or CRLF), or a line the scanner cannot read */
        if (end == pos || in[pos] == '\r')
            return 0;
        if (in[pos] == ' ' || in[pos] == '\t') { /* continues a field not sought */
            pos = end + 1;
            continue;
        }
        for (colon = pos; colon < end && in[colon] != ':'; colon++)
            ;
        if (colon == end || colon - pos > HEADER_SCAN_NAME_MAX || colon - pos != want_len ||
            strncasecmp(in + pos, WANT, want_len) != 0 ||
            memchr(in + pos, '\0', want_len) != NULL) {
            pos = end + 1;
            continue;
        }
        /* the field sought: this line's value and the continuation lines */
        for (size_t i = colon + 1; i < end; i++)
            model_char(out, &vlen, (unsigned char)in[i]);
        pos = end + 1;
        while (nl != NULL && pos < n && (in[pos] == ' ' || in[pos] == '\t')) {
            nl = memchr(in + pos, '\n', n - pos);
            end = nl ? (size_t)(nl - in) : n;
            model_char(out, &vlen, ' ');
            for (size_t i = pos + 1; i < end; i++)
                model_char(out, &vlen, (unsigned char)in[i]);
            pos = end + 1;
        }
        while (vlen > 0 && out[vlen - 1] == ' ')
            vlen--;
        out[vlen] = '\0';
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char a[HEADER_SCAN_VALUE_MAX + 1], b[sizeof(a)], c[sizeof(a)], m[sizeof(a)];
    const char *in = (const char *)data;
    int fa, fb, fc, fm;

    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    fa = scan(in, size, whole, a);
    fb = scan(in, size, bytewise, b);
    fc = size > 0 ? scan(in, size, chosen, c) : fa;
    CHECK(fa == fb && fa == fc);
    CHECK(!fa || (strcmp(a, b) == 0 && (size == 0 || strcmp(a, c) == 0)));
    fm = model(in, size, m);
    CHECK(fa == fm);
    if (fa) {
        CHECK(strcmp(a, m) == 0);
        for (const char *p = a; *p; p++)
            CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
        CHECK(a[0] != ' ' && (a[0] == '\0' || a[strlen(a) - 1] != ' '));
        CHECK(strstr(a, "  ") == NULL);
    }
    return 0;
}
