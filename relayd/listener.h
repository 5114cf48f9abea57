/*
 * listener: the listening sockets and the connection limits (global and per
 * client address). It accepts nothing itself: each new connection goes to
 * smtpd_session_accept(), which asks listener_admit() whether it may stay.
 */
#ifndef RELAYD_LISTENER_H
#define RELAYD_LISTENER_H

#include <stddef.h>

struct server;
struct listener;

enum listener_verdict { LISTENER_ADMIT = 0, LISTENER_TOO_MANY, LISTENER_TOO_MANY_FROM_IP };

/* Bind and listen on every address of srv->cfg. Blocking binds happen before
 * the loop runs. 0, or -1 with err set (nothing left open). */
int listener_start(struct server *srv, struct listener **out, char *err, size_t errlen);
/* Count a new connection from ip against the limits of the current config.
 * On LISTENER_ADMIT the caller must call listener_release(ip) when it ends. */
enum listener_verdict listener_admit(struct listener *l, const char *ip);
void listener_release(struct listener *l, const char *ip);
/* Stop accepting (SIGTERM) and close the sockets; the counters stay usable. */
void listener_stop(struct listener *l);
/* Free what is left after listener_stop once the loop has closed the handles. */
void listener_free(struct listener *l);

#endif
