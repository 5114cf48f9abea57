/*
 * dns_answer: reads a raw DNS answer message (RFC 1035 §4.1) as the
 * resolver library hands it over, for what the library does not say: is it
 * fit to act on (not truncated, every record of the asked type well formed
 * and for the name asked or its CNAME chain), and which TTLs it carries
 * (RFC 2181 §8, RFC 2308 §5). Pure: no I/O, no allocation; fuzzed.
 */
#ifndef RELAYD_DNS_ANSWER_H
#define RELAYD_DNS_ANSWER_H

#include <stddef.h>
#include <stdint.h>

/* RFC 1035 §3.2.2, §3.2.4; RFC 3596 §2.1 */
#define DNS_TYPE_A     1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_SOA   6
#define DNS_TYPE_MX    15
#define DNS_TYPE_AAAA  28
#define DNS_CLASS_IN   1

#define DNS_ANSWER_NAME_MAX 253 /* RFC 1035 §2.3.4, without the trailing dot */

/* Can this NOERROR answer to (qname, qtype) be used as it stands? 0, or -1
 * with *detail set to a phrase for the log ("truncated answer (TC set)",
 * "bad RDLENGTH in an A record", "answer for another name", "malformed
 * answer ..."). qtype is DNS_TYPE_A, _AAAA or _MX; qname may end in a dot
 * and compares without case. A truncated answer (TC) is refused even over
 * TCP: it will not get better by asking again. */
int dns_answer_check(const unsigned char *m, size_t len, const char *qname, int qtype,
                     const char **detail);

/* The smallest TTL of the answer records of type (0 if none) in *ans, and
 * the negative-caching TTL of an authority SOA, min(SOA TTL, MINIMUM) (0
 * without one) in *neg. A TTL with the top bit set counts as 0. A message
 * that stops parsing gives what was read before that point. */
void dns_answer_ttls(const unsigned char *m, size_t len, int type, uint32_t *ans, uint32_t *neg);

#endif
