/*
 * targets: the pure part of routing (RFC 5321 §5.1). Turns MX hosts (or a
 * route host) and their addresses into the list of addresses to try, in
 * order: this relay and every MX host at or after its own preference
 * dropped, then, per delivery run, equal preferences shuffled and the list
 * cut to max_mx_addresses. No DNS, no sockets, no config: unit-tested.
 */
#ifndef RELAYD_TARGETS_H
#define RELAYD_TARGETS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct resolver_target {
    char host[256];               /* MX host or route host, for relay=host[addr]:port */
    struct sockaddr_storage addr; /* with the port set */
    unsigned pref;
};

/* How a host's address lookup went. */
enum targets_lookup {
    TARGETS_FOUND = 0, /* addrs/naddrs hold its addresses */
    TARGETS_TEMP,      /* failed for now (SERVFAIL, timeout, broken answer) */
    TARGETS_ABSENT     /* no such host, or no address records */
};

struct targets_host {
    const char *name;
    unsigned pref;
    enum targets_lookup lookup;
    const struct sockaddr_storage *addrs; /* port ignored */
    size_t naddrs;
};

enum targets_outcome {
    TARGETS_OK = 0, /* *out has n > 0 targets */
    TARGETS_LOOP,   /* nothing left but this relay: mail would loop */
    TARGETS_NONE    /* no host left that has an address; *blame names one */
};

/* Is addr (port ignored) this relay when reached on the delivery port? */
typedef int (*targets_is_me)(void *arg, const struct sockaddr_storage *addr);

/* Build the targets. mx: the hosts are MX hosts (prune by preference, RFC
 * 5321 §5.1); otherwise one route host (an address of ours is just
 * dropped). mypref: the preference at which this relay appears by name
 * (~0u if it does not); finding one of our addresses under a host lowers
 * it. Each host contributes at most per_host addresses; the result is
 * sorted by preference (stable: the order of hosts and addresses within
 * one preference is kept) with port set on every address. On TARGETS_NONE
 * *blame is the index of the first host kept whose lookup failed for now,
 * else of the first host kept, else SIZE_MAX. -1 when out of memory. */
int targets_plan(const struct targets_host *hosts, size_t nhosts, int mx, unsigned mypref,
                 targets_is_me is_me, void *arg, unsigned port, size_t per_host,
                 struct resolver_target **out, size_t *nout, size_t *blame);

/* For one delivery run: shuffle the hosts of each preference (a host's
 * addresses stay together and in order; RFC 5321 §5.1 asks for random
 * order among equal preferences to spread the load), then keep at most max
 * addresses (as Postfix's smtp_mx_address_limit). Returns the new count.
 * rng: xorshift state, never 0. */
size_t targets_order(struct resolver_target *t, size_t n, size_t max, uint64_t *rng);

#endif
