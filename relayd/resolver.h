/*
 * resolver: where a domain's mail goes. RFC 5321 §5.1: MX records sorted by
 * preference (random among equals), then the A/AAAA of each host; implicit
 * MX when there is none; null MX (RFC 7505) is a permanent failure; MX hosts
 * of equal or worse preference than this relay itself (hostname or
 * my_addresses) are dropped, and nothing left is an error, never a loop.
 * route = host[:port] skips MX. Answers are cached for their TTL. Uses
 * lib/dns.c; never blocks.
 */
#ifndef RELAYD_RESOLVER_H
#define RELAYD_RESOLVER_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

struct config;
struct cfg_domain;
struct resolver;

enum resolver_status {
    RESOLVER_OK = 0,
    RESOLVER_TEMPFAIL = -1, /* DNS trouble: defer */
    RESOLVER_PERMFAIL = -2  /* null MX, no such domain, only ourselves left: bounce */
};

struct resolver_target {
    char host[256];               /* MX host or route host, for relay=host[addr]:port */
    struct sockaddr_storage addr; /* with the port set */
    unsigned pref;
};

/* targets: in the order to try them; valid during the callback only. why:
 * a phrase for logs and DSNs when status != OK ("Null MX", "mail for
 * example.org loops back to myself", "Host not found"). */
typedef void (*resolver_cb)(void *arg, int status, const struct resolver_target *targets,
                            size_t n, const char *why);

/* servers as config dns_servers (NULL: resolv.conf). 0 or -1 with err. */
int resolver_open(uv_loop_t *loop, const char *servers, struct resolver **out, char *err,
                  size_t errlen);
/* Find the targets for domain under cfg's settings for it (route, delivery_port,
 * hostname and my_addresses for self-pruning). cb runs exactly once, possibly
 * before this returns (cache hit, route by IP). */
void resolver_lookup(struct resolver *r, const struct config *cfg, const struct cfg_domain *dom,
                     const char *domain, resolver_cb cb, void *arg);
/* Forget cached answers (reload). */
void resolver_flush_cache(struct resolver *r);
/* Pending lookups are answered RESOLVER_TEMPFAIL; memory freed after the loop
 * closes the handles. */
void resolver_close(struct resolver *r);

#endif
