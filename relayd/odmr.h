/*
 * odmr: the ODMR service of RFC 2645 on the session machinery of
 * smtpd_session.c: which commands a session on an odmr_listen socket may
 * give (and that SMTP sessions may not give ATRN), its EHLO keywords, the
 * ATRN command (who may pull which domains, whether anything waits, whether
 * a domain is free) and the turn, in which the session's connection is
 * handed to sched/delivery, which deliver down it. It delivers nothing
 * itself and never opens a connection.
 */
#ifndef RELAYD_ODMR_H
#define RELAYD_ODMR_H

#include "smtp_parse.h"

struct smtpd_session;
struct odmr_turn;

/* May session s give verb here? If not, the refusal (502, or 530 for AUTH
 * before STARTTLS under odmr_require_tls) has been sent and 0 is returned. */
int odmr_cmd_check(struct smtpd_session *s, enum smtp_verb verb);
/* The EHLO reply of an ODMR session (RFC 2645 §4.1: AUTH and ATRN). */
void odmr_ehlo(struct smtpd_session *s);
/* "ATRN [domain,...]" in state READY: 250 and the turn, or 450/451/453/
 * 501/530, possibly after the queue has been counted (state SMTPD_ATRN). */
void odmr_atrn_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd);

/* Shutdown: let the message being sent end, then QUIT (bounded by the
 * delivery timeouts). */
void odmr_turn_stop(struct smtpd_session *s);
/* Drop the turn's connection now; what was not acknowledged stays queued. */
void odmr_turn_abort(struct smtpd_session *s);

#endif
