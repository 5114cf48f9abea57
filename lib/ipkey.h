/*
 * ipkey: the name under which per-client limits count a peer address
 * (max_connections_per_ip, the ETRN rate). An IPv4 address counts as
 * itself; an IPv6 address counts as its network of ipv6_prefix_length bits,
 * because one customer line or host gets a whole /64 (RFC 6177, RFC 7421)
 * and could otherwise open as many "clients" as it likes; an IPv4-mapped
 * IPv6 address (::ffff:192.0.2.1) counts as the IPv4 address it is.
 * Pure: no I/O, no configuration.
 */
#ifndef RELAYD_IPKEY_H
#define RELAYD_IPKEY_H

#include <stddef.h>
#include <sys/socket.h>

/* "192.0.2.1", "2001:db8:1:2::/64" or a whole IPv6 address for /128. */
#define IPKEY_MAX 56

/* Write the key of sa (AF_INET or AF_INET6; prefix 0..128 for IPv6) into
 * out. 0, or -1 for another family or too small an out. */
int ipkey_format(const struct sockaddr *sa, unsigned v6_prefix, char *out, size_t outlen);

#endif
