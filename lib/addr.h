/*
 * addr: pure checks on domains and mailboxes: normalisation for comparison,
 * matching a domain against a configured relay domain, and recognising the
 * classic relay tricks (%-hack, !-paths, source routes, quoted '@', address
 * literals). No I/O and no configuration: relayd/policy.c applies these.
 */
#ifndef RELAYD_ADDR_H
#define RELAYD_ADDR_H

#include <stddef.h>

#include "smtp_parse.h"

enum addr_verdict {
    ADDR_OK = 0,
    ADDR_PERCENT_HACK, /* '%' in the local part: user%other@relay */
    ADDR_BANG_PATH,    /* '!' in the local part: host!user@relay */
    ADDR_SOURCE_ROUTE, /* <@a,@b:user@relay> */
    ADDR_QUOTED_AT,    /* "user@other"@relay */
    ADDR_IP_LITERAL,   /* user@[192.0.2.1] */
    ADDR_NO_DOMAIN,    /* no domain at all */
    ADDR_BAD_DOMAIN    /* not a valid hostname (RFC 1123 labels) */
};

/* Judge whether a parsed recipient is plainly a mailbox at a hostname, as a
 * relay requires before it looks at the domain at all. */
enum addr_verdict addr_check_relay(const struct smtp_mailbox *mb);
/* A short phrase for logs and replies ("percent hack"...). Static storage. */
const char *addr_verdict_str(enum addr_verdict v);

/* Normalise a hostname for comparison: lower-case ASCII, one trailing dot
 * removed; checks RFC 1123 label syntax (letters, digits, hyphens, labels of
 * 1..63, total <= 253). Writes NUL-terminated into out. 0 or -1 (invalid or
 * does not fit). */
int addr_domain_normalize(const char *in, size_t len, char *out, size_t outlen);

/* Does normalised domain equal normalised pattern, or (subdomains != 0) end
 * with "." pattern? */
int addr_domain_matches(const char *domain, const char *pattern, int subdomains);

#endif
