/*
 * test_dns_answer: lib/dns_answer.c on hand-built messages (RFC 1035 §4.1):
 * what may be acted on (well-formed records of the asked type for the name
 * asked or its CNAME chain) and what may not (TC set, an RDLENGTH that does
 * not fit the type, a record for another name, records running past the
 * end, compression loops), and the TTLs read for caching (RFC 2181 §8,
 * RFC 2308 §5). No network.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dns_answer.h"

struct msg {
    unsigned char b[1024];
    size_t n;
};

static void put(struct msg *m, const void *p, size_t n)
{
    assert_true(m->n + n <= sizeof(m->b));
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void put16(struct msg *m, unsigned v)
{
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    put(m, b, 2);
}

static void put32(struct msg *m, uint32_t v)
{
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

static void name(struct msg *m, const char *dotted)
{
    const char *p = dotted;

    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        unsigned char c = (unsigned char)l;
        put(m, &c, 1);
        put(m, p, l);
        p += l + (dot ? 1 : 0);
    }
    put(m, "", 1);
}

/* Header (flags, counts) and the question for qname/qtype. */
static void start(struct msg *m, unsigned flags, unsigned an, unsigned ns, const char *qname,
                  unsigned qtype)
{
    memset(m, 0, sizeof(*m));
    put16(m, 0x1234);
    put16(m, flags);
    put16(m, 1);
    put16(m, an);
    put16(m, ns);
    put16(m, 0);
    name(m, qname);
    put16(m, qtype);
    put16(m, DNS_CLASS_IN);
}

/* A record's fixed part; the caller adds rdlen bytes of RDATA. */
static void rr(struct msg *m, const char *owner, unsigned type, uint32_t ttl, unsigned rdlen)
{
    if (owner == NULL) {
        put16(m, 0xc00c); /* a pointer to the question name */
    } else {
        name(m, owner);
    }
    put16(m, type);
    put16(m, DNS_CLASS_IN);
    put32(m, ttl);
    put16(m, rdlen);
}

#define QR_RD_RA 0x8180

static int check(const struct msg *m, const char *qname, int qtype, const char **detail)
{
    *detail = NULL;
    return dns_answer_check(m->b, m->n, qname, qtype, detail);
}

static void test_good_answers(void **state)
{
    struct msg m;
    const char *d;
    uint32_t ans, neg;

    (void)state;
    /* two A records, the owner compressed and written out, TTLs 300 and 60 */
    start(&m, QR_RD_RA, 2, 0, "mx.example.org", DNS_TYPE_A);
    rr(&m, NULL, DNS_TYPE_A, 300, 4);
    put(&m, "\xc0\x00\x02\x01", 4);
    rr(&m, "MX.Example.ORG", DNS_TYPE_A, 60, 4);
    put(&m, "\xc0\x00\x02\x02", 4);
    assert_int_equal(check(&m, "mx.example.org.", DNS_TYPE_A, &d), 0);
    dns_answer_ttls(m.b, m.n, DNS_TYPE_A, &ans, &neg);
    assert_int_equal(ans, 60);
    assert_int_equal(neg, 0);
    /* an MX whose target points back into the question */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_MX);
    rr(&m, NULL, DNS_TYPE_MX, 3600, 2 + 3 + 2);
    put16(&m, 10);
    put(&m, "\x02mx\xc0\x0c", 5);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_MX, &d), 0);
    /* a null MX (RFC 7505): preference 0, the root */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_MX);
    rr(&m, NULL, DNS_TYPE_MX, 3600, 3);
    put(&m, "\x00\x00\x00", 3);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_MX, &d), 0);
    /* a CNAME chain, then the address of its target */
    start(&m, QR_RD_RA, 2, 0, "www.example.org", DNS_TYPE_AAAA);
    rr(&m, NULL, DNS_TYPE_CNAME, 300, 13 + 1);
    name(&m, "host.example");
    rr(&m, "host.example", DNS_TYPE_AAAA, 300, 16);
    put(&m, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    assert_int_equal(check(&m, "www.example.org", DNS_TYPE_AAAA, &d), 0);
    /* records of other types for other names are no reason to refuse */
    start(&m, QR_RD_RA, 2, 0, "example.org", DNS_TYPE_A);
    rr(&m, "other.example", 16 /* TXT */, 300, 2);
    put(&m, "\x01x", 2);
    rr(&m, NULL, DNS_TYPE_A, 300, 4);
    put(&m, "\xc0\x00\x02\x01", 4);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_A, &d), 0);
}

/* NODATA with an SOA: usable, and the negative TTL is min(TTL, MINIMUM). */
static void test_nodata_and_ttls(void **state)
{
    struct msg m;
    const char *d;
    uint32_t ans, neg;

    (void)state;
    start(&m, QR_RD_RA, 0, 1, "example.org", DNS_TYPE_MX);
    rr(&m, "example.org", DNS_TYPE_SOA, 900, 3 + 3 + 20);
    put(&m, "\x01n\x00\x01h\x00", 6);
    put32(&m, 1);
    put32(&m, 2);
    put32(&m, 3);
    put32(&m, 4);
    put32(&m, 120); /* MINIMUM */
    assert_int_equal(check(&m, "example.org", DNS_TYPE_MX, &d), 0);
    dns_answer_ttls(m.b, m.n, DNS_TYPE_MX, &ans, &neg);
    assert_int_equal(ans, 0);
    assert_int_equal(neg, 120);
    /* RFC 2181 §8: a TTL with the top bit set is 0 */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_A);
    rr(&m, NULL, DNS_TYPE_A, 0x80000010u, 4);
    put(&m, "\xc0\x00\x02\x01", 4);
    dns_answer_ttls(m.b, m.n, DNS_TYPE_A, &ans, &neg);
    assert_int_equal(ans, 0);
}

/* What c-ares 1.18 would have skipped and called NODATA. */
static void test_broken_records(void **state)
{
    struct msg m;
    const char *d;

    (void)state;
    start(&m, QR_RD_RA, 1, 0, "mx.example.org", DNS_TYPE_A);
    rr(&m, NULL, DNS_TYPE_A, 300, 5);
    put(&m, "\xc0\x00\x02\x01\x00", 5);
    assert_int_equal(check(&m, "mx.example.org", DNS_TYPE_A, &d), -1);
    assert_string_equal(d, "bad RDLENGTH in an A record");

    start(&m, QR_RD_RA, 1, 0, "mx.example.org", DNS_TYPE_AAAA);
    rr(&m, NULL, DNS_TYPE_AAAA, 300, 4);
    put(&m, "\xc0\x00\x02\x01", 4);
    assert_int_equal(check(&m, "mx.example.org", DNS_TYPE_AAAA, &d), -1);
    assert_string_equal(d, "bad RDLENGTH in an AAAA record");

    /* an MX target followed by a stray byte inside RDLENGTH */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_MX);
    rr(&m, NULL, DNS_TYPE_MX, 300, 2 + 5 + 1);
    put16(&m, 10);
    put(&m, "\x02mx\xc0\x0c\x00", 6);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_MX, &d), -1);
    assert_string_equal(d, "bad RDLENGTH in an MX record");

    /* an MX record for another owner */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_MX);
    rr(&m, "attacker.example", DNS_TYPE_MX, 300, 2 + 1);
    put(&m, "\x00\x0a\x00", 3);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_MX, &d), -1);
    assert_string_equal(d, "answer for another name");
}

static void test_malformed_messages(void **state)
{
    struct msg m;
    const char *d;

    (void)state;
    /* TC set, also on an answer that came over TCP */
    start(&m, QR_RD_RA | 0x0200, 0, 0, "example.org", DNS_TYPE_MX);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_MX, &d), -1);
    assert_string_equal(d, "truncated answer (TC set)");
    /* shorter than a header */
    assert_int_equal(dns_answer_check((const unsigned char *)"\x12\x34", 2, "x", DNS_TYPE_A, &d),
                     -1);
    assert_int_equal(dns_answer_check(NULL, 0, "x", DNS_TYPE_A, &d), -1);
    /* a record whose RDLENGTH runs past the end */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_A);
    rr(&m, NULL, DNS_TYPE_A, 300, 40);
    put(&m, "\xc0\x00\x02\x01", 4);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_A, &d), -1);
    assert_non_null(strstr(d, "malformed answer"));
    /* more records announced than present */
    start(&m, QR_RD_RA, 3, 0, "example.org", DNS_TYPE_A);
    rr(&m, NULL, DNS_TYPE_A, 300, 4);
    put(&m, "\xc0\x00\x02\x01", 4);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_A, &d), -1);
    /* a compression pointer that points at itself: bounded, refused */
    start(&m, QR_RD_RA, 1, 0, "example.org", DNS_TYPE_A);
    {
        unsigned off = (unsigned)m.n;
        put16(&m, 0xc000 | off);
    }
    put16(&m, DNS_TYPE_A);
    put16(&m, DNS_CLASS_IN);
    put32(&m, 300);
    put16(&m, 4);
    put(&m, "\xc0\x00\x02\x01", 4);
    assert_int_equal(check(&m, "example.org", DNS_TYPE_A, &d), -1);
    /* a CNAME loop longer than any real chain */
    start(&m, QR_RD_RA, 10, 0, "a.example", DNS_TYPE_A);
    for (int i = 0; i < 10; i++) {
        rr(&m, i % 2 ? "b.example" : "a.example", DNS_TYPE_CNAME, 300, 11);
        name(&m, i % 2 ? "a.example" : "b.example");
    }
    assert_int_equal(check(&m, "a.example", DNS_TYPE_A, &d), -1);
    assert_string_equal(d, "malformed answer (CNAME)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_answers),
        cmocka_unit_test(test_nodata_and_ttls),
        cmocka_unit_test(test_broken_records),
        cmocka_unit_test(test_malformed_messages),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
