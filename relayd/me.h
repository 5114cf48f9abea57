/*
 * me: who "this relay" is, for the rule that relayd never delivers to
 * itself (RFC 5321 §5.1: an SMTP client that finds itself among the MX
 * hosts drops itself and every host at or after its own preference). Owns
 * the list of this host's addresses (getifaddrs, re-read on reload) and
 * what the configuration adds (listen addresses, my_addresses, hostname).
 * Answers questions only: it resolves nothing and connects nowhere.
 */
#ifndef RELAYD_ME_H
#define RELAYD_ME_H

#include <stddef.h>
#include <sys/socket.h>

struct config;
struct me;

struct me *me_new(void);
void me_free(struct me *m);

/* Take what cfg says about us (my_addresses, hostname, delivery_port; the
 * listen addresses from the first call only, since a reload does not
 * rebind) and this host's interface addresses from getifaddrs().
 * On a getifaddrs() failure the interface list is left empty (loopback and
 * the configured addresses still count), err says why, and -1 is returned;
 * everything else is in place either way. */
int me_refresh(struct me *m, const struct config *cfg, char *err, size_t errlen);
/* The same with the interface addresses given (port ignored): the pure
 * part of me_refresh, for tests. 0, or -1 when out of memory. */
int me_set(struct me *m, const struct config *cfg, const struct sockaddr_storage *ifaddrs,
           size_t nif);

/* Is an SMTP connection to addr:port a connection to this relay? Always for
 * an unspecified address (0.0.0.0, ::, and their v4-mapped forms), which
 * is never a place to deliver to. Otherwise for an address of this host
 * (loopback, an interface address, a specific listen address) on a port
 * relayd listens on for SMTP, and for my_addresses (this relay as others
 * see it, e.g. behind NAT) on any port when mx is set (an MX host is a
 * host, not a port) and on delivery_port otherwise. v4-mapped IPv6
 * addresses (::ffff:a.b.c.d) count as the IPv4 address they carry. */
int me_is_addr(const struct me *m, const struct sockaddr *addr, unsigned port, int mx);
/* Is host (an MX target name) this relay's own hostname? Case and one
 * trailing dot do not matter. */
int me_is_name(const struct me *m, const char *host);
/* How many interface addresses are known (for the log). */
size_t me_count(const struct me *m);

#endif
