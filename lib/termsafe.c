/*
 * termsafe: bytes made safe to write to a terminal; see termsafe.h for the
 * rules. A small state machine over one byte at a time; it never reads or
 * writes anything but its arguments.
 */
#include "termsafe.h"

static const char hex[] = "0123456789abcdef";

void termsafe_init(struct termsafe *t)
{
    t->npend = 0;
}

static size_t put_hex(unsigned char b, char *out)
{
    out[0] = '\\';
    out[1] = 'x';
    out[2] = hex[b >> 4];
    out[3] = hex[b & 15];
    return 4;
}

/* The length of the UTF-8 sequence lead byte b starts, or 0 if b cannot
 * start one (RFC 3629 §4: C0 and C1 would be overlong, F5..FF too large). */
static size_t utf8_need(unsigned char b)
{
    return b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
}

/* May b follow the held bytes of a sequence started by lead? The second
 * byte of E0, ED, F0 and F4 sequences is narrower (RFC 3629 §4): that
 * keeps out overlong forms, surrogates and code points above U+10FFFF. */
static int utf8_next_ok(unsigned char lead, size_t have, unsigned char b)
{
    unsigned char lo = 0x80, hi = 0xbf;

    if (have == 1) {
        if (lead == 0xe0)
            lo = 0xa0;
        else if (lead == 0xed)
            hi = 0x9f;
        else if (lead == 0xf0)
            lo = 0x90;
        else if (lead == 0xf4)
            hi = 0x8f;
    }
    return b >= lo && b <= hi;
}

/* Let the held bytes out, escaped: the sequence did not complete. */
static size_t flush_pend(struct termsafe *t, char *out)
{
    size_t o = 0;

    if (t->npend == 1 && t->pend[0] == '\r') {
        out[o++] = '^';
        out[o++] = 'M';
    } else {
        for (size_t i = 0; i < t->npend; i++)
            o += put_hex(t->pend[i], out + o);
    }
    t->npend = 0;
    return o;
}

/* One byte with nothing held. */
static size_t put_plain(struct termsafe *t, unsigned char b, char *out)
{
    if (b == '\r' || utf8_need(b) > 0) {
        t->pend[0] = b;
        t->npend = 1;
        return 0;
    }
    if (b == '\t' || (b >= 0x20 && b < 0x7f)) {
        out[0] = (char)b;
        return 1;
    }
    if (b < 0x20 || b == 0x7f) {
        out[0] = '^';
        out[1] = (char)(b ^ 0x40);
        return 2;
    }
    return put_hex(b, out);
}

size_t termsafe_put(struct termsafe *t, const char *in, size_t n, char *out)
{
    size_t o = 0, need;

    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)in[i];

        if (t->npend == 1 && t->pend[0] == '\r') {
            t->npend = 0;
            if (b == '\n') {
                out[o++] = '\n';
                continue;
            }
            out[o++] = '^';
            out[o++] = 'M';
        } else if (t->npend > 0) {
            need = utf8_need(t->pend[0]);
            if (utf8_next_ok(t->pend[0], t->npend, b)) {
                t->pend[t->npend++] = b;
                if (t->npend < need)
                    continue;
                /* C1 controls are U+0080..U+009F: C2 80..C2 9F */
                if (t->pend[0] == 0xc2 && t->pend[1] < 0xa0) {
                    o += flush_pend(t, out + o);
                } else {
                    for (size_t k = 0; k < t->npend; k++)
                        out[o++] = (char)t->pend[k];
                    t->npend = 0;
                }
                continue;
            }
            o += flush_pend(t, out + o);
        }
        o += put_plain(t, b, out + o);
    }
    return o;
}

size_t termsafe_end(struct termsafe *t, char *out)
{
    return flush_pend(t, out);
}
