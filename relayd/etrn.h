/*
 * etrn: the ETRN command (RFC 1985) as the site sees it: which domains the
 * argument names, whether this client may ask, how much mail is waiting
 * (the true count, from the queue), and the flush it starts (sched.c).
 * Also the per-client ETRN rate limit.
 */
#ifndef RELAYD_ETRN_H
#define RELAYD_ETRN_H

#include "smtp_parse.h"

struct server;
struct smtpd_session;
struct etrn;

int etrn_open(struct server *srv, struct etrn **out);
void etrn_free(struct etrn *e);

/* Handle "ETRN arg" in session s (state READY). Replies 251/253/458/459/501,
 * possibly after the queue has been counted (the session waits in
 * SMTPD_ETRN meanwhile). */
void etrn_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd);

#endif
