/*
 * listener: the listening sockets and the connection limits (global and per
 * client address). It accepts nothing itself: each new connection goes to
 * smtpd_session_accept(), which asks listener_admit() whether it may stay.
 */
#ifndef RELAYD_LISTENER_H
#define RELAYD_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

struct server;
struct listener;

enum listener_verdict { LISTENER_ADMIT = 0, LISTENER_TOO_MANY, LISTENER_TOO_MANY_FROM_IP };

/* Bind and listen on every address of srv->cfg. Blocking binds happen before
 * the loop runs. 0, or -1 with err set (nothing left open). */
int listener_start(struct server *srv, struct listener **out, char *err, size_t errlen);
/* Count a new connection from peer against the limits of the current
 * config. The per-address limit counts by lib/ipkey.h's key (an IPv6
 * client by its ipv6_prefix_length network), written into key (keylen >=
 * IPKEY_MAX) in every case. On LISTENER_ADMIT the caller must call
 * listener_release(key) when the connection ends. */
enum listener_verdict listener_admit(struct listener *l, const struct sockaddr *peer, char *key,
                                     size_t keylen);
void listener_release(struct listener *l, const char *key);
/* Stop accepting (SIGTERM) and close the sockets; the counters stay usable. */
void listener_stop(struct listener *l);
/* Free what is left after listener_stop once the loop has closed the handles. */
void listener_free(struct listener *l);

#endif
