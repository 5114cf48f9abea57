/*
 * resolver: where a domain's mail goes (RFC 5321 §5.1, RFC 7505). MX
 * records, then the A/AAAA of each MX host; implicit MX only when the
 * domain has no MX records; this relay (me.c) and every MX host at or
 * after its preference dropped; or route = host[:port] without MX. The
 * order of the targets is targets.c's. Answers are cached for their TTL
 * and reordered per lookup (equal preferences shuffled per delivery run).
 * Uses lib/dns.c; never blocks, never connects.
 */
#ifndef RELAYD_RESOLVER_H
#define RELAYD_RESOLVER_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "targets.h"

struct config;
struct cfg_domain;
struct me;
struct resolver;

enum resolver_status {
    RESOLVER_OK = 0,
    /* defer: any DNS answer relayd cannot use (4.4.3), or only this relay
     * left (4.4.6): a DNS slip must not return a site's mail */
    RESOLVER_TEMPFAIL = -1,
    /* bounce: the domain's own NXDOMAIN (5.4.4), a null MX (556 5.1.10) */
    RESOLVER_PERMFAIL = -2
};

/* Why a lookup did not give targets, as the delivery reports it per
 * recipient: a reply code, an enhanced status (RFC 3463) and a phrase
 * naming the query ("DNS lookup of MX for example.org failed: SERVFAIL",
 * "mail for example.org loops back to myself"). */
struct resolver_error {
    int code;     /* 451, 550, 556 */
    char enh[12]; /* "4.4.3", "4.4.6", "5.4.4", "5.1.10" */
    char why[400];
};

/* targets: in the order to try them, at most max_mx_addresses; valid
 * during the callback only. err: NULL when status == RESOLVER_OK. */
typedef void (*resolver_cb)(void *arg, int status, const struct resolver_target *targets, size_t n,
                            const struct resolver_error *err);

/* servers as config dns_servers (NULL: resolv.conf). me: who this relay
 * is; it must outlive the resolver. 0 or -1 with err. */
int resolver_open(uv_loop_t *loop, const char *servers, const struct me *me, struct resolver **out,
                  char *err, size_t errlen);
/* Ask other servers from now on (reload): lookups in flight finish with
 * the old ones. The same servers as now: nothing happens. 0, or -1 with
 * err and the old servers kept. */
int resolver_set_servers(struct resolver *r, const char *servers, char *err, size_t errlen);
/* Find the targets for domain under cfg's settings for it (route,
 * delivery_port, max_mx_addresses). cb runs exactly once, possibly before
 * this returns (cache hit, route by IP). */
void resolver_lookup(struct resolver *r, const struct config *cfg, const struct cfg_domain *dom,
                     const char *domain, resolver_cb cb, void *arg);
/* Forget cached answers (reload). */
void resolver_flush_cache(struct resolver *r);
/* Pending lookups are answered RESOLVER_TEMPFAIL; memory freed after the loop
 * closes the handles. */
void resolver_close(struct resolver *r);

#endif
