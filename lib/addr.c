/*
 * addr: pure judgements on parsed mailboxes and hostnames (see addr.h):
 * hostname normalisation, relay-domain matching and the classic relay tricks.
 * No I/O, no configuration, no allocation; policy.c decides what to do.
 */
#include "addr.h"

#include <string.h>

/* Room for any normalised hostname (RFC 1123 total <= 253) and its NUL. */
#define ADDR_HOST_BUF 256

static int is_letdig(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/*
 * Lower-case and check a hostname: one trailing dot (the root) is dropped,
 * then every label is 1..63 letters, digits and hyphens, not starting or
 * ending with a hyphen (RFC 1123 §2.1, RFC 952), and the whole is at most 253
 * octets (RFC 1035 §2.3.4 less the root). Underscores, spaces, '%' and
 * anything 8-bit fail. On failure out is "" when it has room.
 */
int addr_domain_normalize(const char *in, size_t len, char *out, size_t outlen)
{
    size_t i, label = 0;
    int rc = -1;

    if (outlen > 0)
        out[0] = '\0';
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > 253 || outlen < len + 1)
        goto done;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0 || in[i - 1] == '-')
                goto done;
            label = 0;
            continue;
        }
        if (!is_letdig(c) && c != '-')
            goto done;
        if (label == 0 && c == '-')
            goto done;
        if (++label > 63)
            goto done;
    }
    if (label == 0 || in[len - 1] == '-')
        goto done;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    rc = 0;
done:
    if (rc != 0 && outlen > 0)
        out[0] = '\0';
    return rc;
}

/*
 * Both sides are normalised first, so "Example.ORG." matches "example.org".
 * A subdomain match needs a label boundary: "a.example.org" is under
 * "example.org", "badexample.org" is not. Anything that is not a valid
 * hostname matches nothing.
 */
int addr_domain_matches(const char *domain, const char *pattern, int subdomains)
{
    char d[ADDR_HOST_BUF], p[ADDR_HOST_BUF];
    size_t dl, pl;

    if (domain == NULL || pattern == NULL)
        return 0;
    if (addr_domain_normalize(domain, strlen(domain), d, sizeof(d)) < 0 ||
        addr_domain_normalize(pattern, strlen(pattern), p, sizeof(p)) < 0)
        return 0;
    if (strcmp(d, p) == 0)
        return 1;
    if (!subdomains)
        return 0;
    dl = strlen(d);
    pl = strlen(p);
    return dl > pl + 1 && d[dl - pl - 1] == '.' && strcmp(d + dl - pl, p) == 0;
}

/*
 * The order matters only for which reason is logged; any non-OK verdict
 * refuses relaying. Routing syntax first (source routes, RFC 5321 §3.6.1 and
 * Appendix C; address literals), then the local-part tricks that make a relay
 * forward to a host other than the one named after the last '@' (RFC 5321
 * §3.6.1 on '%' and '!'), then the hostname itself.
 */
enum addr_verdict addr_check_relay(const struct smtp_mailbox *mb)
{
    char norm[ADDR_HOST_BUF];
    size_t llen = strnlen(mb->local, sizeof(mb->local));
    size_t dlen = strnlen(mb->domain, sizeof(mb->domain));

    if (mb->source_route)
        return ADDR_SOURCE_ROUTE;
    if (mb->literal || (dlen > 0 && mb->domain[0] == '['))
        return ADDR_IP_LITERAL;
    if (dlen == 0)
        return ADDR_NO_DOMAIN;
    if (mb->quoted && memchr(mb->local, '@', llen) != NULL)
        return ADDR_QUOTED_AT;
    if (memchr(mb->local, '%', llen) != NULL)
        return ADDR_PERCENT_HACK;
    if (memchr(mb->local, '!', llen) != NULL)
        return ADDR_BANG_PATH;
    /* a Dot-string cannot hold '@'; a hand-built mailbox might */
    if (memchr(mb->local, '@', llen) != NULL)
        return ADDR_QUOTED_AT;
    if (dlen == sizeof(mb->domain) ||
        addr_domain_normalize(mb->domain, dlen, norm, sizeof(norm)) < 0)
        return ADDR_BAD_DOMAIN;
    return ADDR_OK;
}

/* The REASON texts of "550 5.7.1 <addr>: Relay access denied (REASON)". */
const char *addr_verdict_str(enum addr_verdict v)
{
    switch (v) {
    case ADDR_OK:
        return "ok";
    case ADDR_PERCENT_HACK:
        return "percent hack";
    case ADDR_BANG_PATH:
        return "bang path";
    case ADDR_SOURCE_ROUTE:
        return "source route";
    case ADDR_QUOTED_AT:
        return "quoted local part contains @";
    case ADDR_IP_LITERAL:
        return "address literal";
    case ADDR_NO_DOMAIN:
        return "no domain";
    case ADDR_BAD_DOMAIN:
        return "invalid domain";
    }
    return "unknown verdict";
}
