/*
 * dns_answer: the raw answer message, read with explicit bounds at every
 * step (RFC 1035 §4.1): names with compression pointers followed a bounded
 * number of times, every record's RDLENGTH within the message. Says whether
 * an answer may be acted on and which TTLs it carries; knows nothing of
 * c-ares, sockets or the loop.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dns_answer.h"

#define DNS_HDR_LEN   12
#define DNS_MSG_MAX   65535 /* RFC 1035 §4.2.2: a TCP message's length is 16 bits */
#define DNS_FLAG_TC   0x02  /* in the third header octet (RFC 1035 §4.1.1) */
#define DNS_CNAME_MAX 8     /* CNAMEs followed in one answer */
#define DNS_NAME_MAX  DNS_ANSWER_NAME_MAX

/* The name at off, decompressed, into out (dotted, no trailing dot, at
 * most DNS_NAME_MAX + 1 octets with the NUL); the offset just past it in
 * the record, or -1 for a name that does not parse (RFC 1035 §4.1.4). */
static int read_name(const unsigned char *m, int len, int off, char *out)
{
    int end = -1, o = 0;

    for (int hops = 0; hops < 128; hops++) {
        unsigned c;
        if (off < 0 || off >= len)
            return -1;
        c = m[off];
        if (c == 0) {
            out[o] = '\0';
            return end >= 0 ? end : off + 1;
        }
        if ((c & 0xc0) == 0xc0) {
            if (off + 2 > len)
                return -1;
            if (end < 0)
                end = off + 2;
            off = (int)((c & 0x3f) << 8 | m[off + 1]);
            continue;
        }
        if ((c & 0xc0) != 0 || off + 1 + (int)c > len || o + (int)c + 1 > DNS_NAME_MAX + 1)
            return -1;
        if (o > 0)
            out[o++] = '.';
        memcpy(out + o, m + off + 1, c);
        o += (int)c;
        off += 1 + (int)c;
    }
    return -1;
}

/* Names compare without case and without one trailing dot. */
static int same_name(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

/* Can this NOERROR answer to (qname, qtype) be used as it stands? c-ares
 * 1.18 silently skips records it does not like (a wrong owner name, an A
 * record whose RDLENGTH is not 4) and then reports NODATA, and takes a
 * truncated answer over TCP as it comes. Each of these is a broken server
 * or a forged answer, not a statement that the name has no such records:
 * 0, or -1 with detail set. */
static int check(const unsigned char *m, int len, const char *qname, int qtype, const char **detail)
{
    char owner[DNS_NAME_MAX + 2], chain[DNS_NAME_MAX + 2], target[DNS_NAME_MAX + 2];
    int off = DNS_HDR_LEN, qd, an, cnames = 0;

    if (m == NULL || len < DNS_HDR_LEN) {
        *detail = "malformed answer";
        return -1;
    }
    if (m[2] & DNS_FLAG_TC) {
        /* RFC 1035 §4.1.1, RFC 7766: a truncated answer is incomplete,
         * and one that is still truncated over TCP will not get better. */
        *detail = "truncated answer (TC set)";
        return -1;
    }
    qd = m[4] << 8 | m[5];
    an = m[6] << 8 | m[7];
    snprintf(chain, sizeof(chain), "%s", qname);
    for (int i = 0; i < qd; i++) {
        off = read_name(m, len, off, owner);
        if (off < 0 || off + 4 > len) {
            *detail = "malformed answer";
            return -1;
        }
        off += 4;
    }
    for (int i = 0; i < an; i++) {
        int rtype, rclass, rdlen;
        off = read_name(m, len, off, owner);
        if (off < 0 || off + 10 > len) {
            *detail = "malformed answer";
            return -1;
        }
        rtype = m[off] << 8 | m[off + 1];
        rclass = m[off + 2] << 8 | m[off + 3];
        rdlen = m[off + 8] << 8 | m[off + 9];
        off += 10;
        if (off + rdlen > len) {
            *detail = "malformed answer (record runs past the end)";
            return -1;
        }
        if (rclass == DNS_CLASS_IN && rtype == DNS_TYPE_CNAME && same_name(owner, chain)) {
            if (read_name(m, off + rdlen, off, target) != off + rdlen || ++cnames > DNS_CNAME_MAX) {
                *detail = "malformed answer (CNAME)";
                return -1;
            }
            memcpy(chain, target, sizeof(chain));
        } else if (rclass == DNS_CLASS_IN && rtype == qtype) {
            int ok;
            if (!same_name(owner, chain)) {
                *detail = "answer for another name";
                return -1;
            }
            if (qtype == DNS_TYPE_A)
                ok = rdlen == 4;
            else if (qtype == DNS_TYPE_AAAA)
                ok = rdlen == 16;
            else /* MX: preference, then a name that fills the rest exactly */
                ok = rdlen >= 3 && read_name(m, off + rdlen, off + 2, target) == off + rdlen;
            if (!ok) {
                *detail = qtype == DNS_TYPE_MX  ? "bad RDLENGTH in an MX record"
                          : qtype == DNS_TYPE_A ? "bad RDLENGTH in an A record"
                                                : "bad RDLENGTH in an AAAA record";
                return -1;
            }
        }
        off += rdlen;
    }
    return 0;
}

/* Offset just past the (possibly compressed) name at off, or -1. */
static int skip_name(const unsigned char *m, int len, int off)
{
    for (int hops = 0; hops < 128 && off < len; hops++) {
        unsigned c = m[off];
        if (c == 0)
            return off + 1;
        if ((c & 0xc0) == 0xc0)
            return off + 2 <= len ? off + 2 : -1;
        if ((c & 0xc0) != 0)
            return -1;
        off += 1 + (int)c;
    }
    return -1;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* RFC 2181 §8: a TTL with the top bit set is taken as zero. */
static uint32_t sane_ttl(uint32_t ttl)
{
    return (ttl & 0x80000000u) ? 0 : ttl;
}

/* The smallest TTL of the answer records of type (0 if none), and the
 * negative-caching TTL of an authority SOA, min(SOA TTL, MINIMUM) as RFC
 * 2308 §5 defines it (0 without one). c-ares 1.18 parses MX records
 * without their TTLs, hence this walk. */
static void ttls(const unsigned char *m, int len, int type, uint32_t *ans, uint32_t *neg)
{
    int off = DNS_HDR_LEN, qd, an, ns;
    int have = 0;

    *ans = 0;
    *neg = 0;
    if (m == NULL || len < DNS_HDR_LEN)
        return;
    qd = m[4] << 8 | m[5];
    an = m[6] << 8 | m[7];
    ns = m[8] << 8 | m[9];
    for (int i = 0; i < qd; i++) {
        off = skip_name(m, len, off);
        if (off < 0 || off + 4 > len)
            return;
        off += 4;
    }
    for (int i = 0; i < an + ns; i++) {
        int rtype, rclass, rdlen;
        uint32_t ttl;
        off = skip_name(m, len, off);
        if (off < 0 || off + 10 > len)
            return;
        rtype = m[off] << 8 | m[off + 1];
        rclass = m[off + 2] << 8 | m[off + 3];
        ttl = sane_ttl(get32(m + off + 4));
        rdlen = m[off + 8] << 8 | m[off + 9];
        off += 10;
        if (off + rdlen > len)
            return;
        if (i < an && rtype == type && rclass == DNS_CLASS_IN) {
            if (!have || ttl < *ans)
                *ans = ttl;
            have = 1;
        } else if (i >= an && rtype == DNS_TYPE_SOA && rclass == DNS_CLASS_IN) {
            int p = skip_name(m, off + rdlen, off); /* MNAME */
            if (p >= 0)
                p = skip_name(m, off + rdlen, p); /* RNAME */
            if (p >= 0 && p + 20 <= off + rdlen) {
                uint32_t minimum = sane_ttl(get32(m + p + 16));
                *neg = ttl < minimum ? ttl : minimum;
            }
        }
        off += rdlen;
    }
}

int dns_answer_check(const unsigned char *m, size_t len, const char *qname, int qtype,
                     const char **detail)
{
    if (len > DNS_MSG_MAX) {
        *detail = "malformed answer (too long)";
        return -1;
    }
    return check(m, (int)len, qname, qtype, detail);
}

void dns_answer_ttls(const unsigned char *m, size_t len, int type, uint32_t *ans, uint32_t *neg)
{
    ttls(m, len > DNS_MSG_MAX ? 0 : (int)len, type, ans, neg);
}
