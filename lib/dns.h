/*
 * dns: c-ares on the libuv loop, and the only file that includes ares.h.
 * c-ares 1.18 (Debian 12) has no event thread: each c-ares socket gets one
 * uv_poll_t (socket-state callback) and one uv_timer re-armed from
 * ares_timeout() drives retransmissions. Answers are returned parsed; no
 * caching here (relayd/resolver.c caches by TTL).
 */
#ifndef RELAYD_DNS_H
#define RELAYD_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct dns;

/* Longest 'why' a callback is given: "DNS lookup of AAAA for <253> failed: <detail>". */
#define DNS_WHY_MAX 400

enum dns_status {
    DNS_OK = 0,
    DNS_NXDOMAIN = -1,  /* the name does not exist (permanent) */
    DNS_NODATA = -2,    /* the name exists, no record of that type */
    DNS_TEMPFAIL = -3,  /* SERVFAIL, timeout, refused, no server: try later */
    DNS_CANCELLED = -4, /* dns_close() while the query was in flight */
    DNS_ERR = -5        /* bad name, out of memory */
};

struct dns_mx {
    char host[256]; /* "" for a null MX (RFC 7505: "0 .") */
    unsigned pref;
};

struct dns_addr {
    struct sockaddr_storage addr; /* port 0 */
};

/* Open a channel on loop. servers: "127.0.0.1:5353,[::1]:53" (c-ares CSV), or
 * NULL to use /etc/resolv.conf. 0, or -1 with err set. */
int dns_open(uv_loop_t *loop, const char *servers, struct dns **out, char *err, size_t errlen);
/* Cancel every query (their callbacks run with DNS_CANCELLED), close the
 * handles; memory is freed once the loop has run their close callbacks. */
void dns_close(struct dns *d);
/* Take no new queries; close once every query in flight has its answer
 * (used when a reload brings other servers: nothing asked is cancelled). */
void dns_retire(struct dns *d);

/* Every callback gets why == NULL with DNS_OK, else a phrase naming the
 * query, its type and what went wrong, for logs and DSNs: "DNS lookup of
 * MX for example.org failed: SERVFAIL" (or REFUSED, NXDOMAIN, no records,
 * timed out, truncated answer, bad RDLENGTH in an MX record, answer for
 * another name, ...). An answer that cannot be used as it stands (TC set,
 * a record that does not parse, a record of the asked type for a name
 * that was not asked) is DNS_TEMPFAIL, never NODATA: c-ares would skip
 * such records and report NODATA, and NODATA is an answer relayd acts on
 * (implicit MX). */

/* MX records of name, sorted by preference (stable: ties in answer order;
 * the resolver shuffles them per delivery run). ttl: the smallest TTL of
 * the answer. The array is valid during the callback only. A set of MX
 * records of which none has a usable target is DNS_TEMPFAIL. */
typedef void (*dns_mx_cb)(void *arg, int status, const struct dns_mx *mx, size_t n, uint32_t ttl,
                          const char *why);
int dns_query_mx(struct dns *d, const char *name, dns_mx_cb cb, void *arg);

/* A and/or AAAA records (family AF_INET, AF_INET6 or AF_UNSPEC for both,
 * IPv6 first). A literal IPv4/IPv6 name answers at once (ttl 0), without a query. */
typedef void (*dns_addr_cb)(void *arg, int status, const struct dns_addr *addrs, size_t n,
                            uint32_t ttl, const char *why);
int dns_query_addr(struct dns *d, const char *name, int family, dns_addr_cb cb, void *arg);

/* "no such domain", "temporary DNS failure", ... Static storage. */
const char *dns_strerror(int status);

#endif
