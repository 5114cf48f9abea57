/*
 * smtpd_session: the server side of one SMTP connection (RFC 5321) as an
 * explicit state machine over a conn byte stream. Commands are dispatched by
 * relayd/smtpd_cmd.c; the message goes to relayd/store.c.
 */
#ifndef RELAYD_SMTPD_SESSION_H
#define RELAYD_SMTPD_SESSION_H

#include <uv.h>

struct server;

/* Accept a connection pending on stream and start a session for it (or turn
 * it away with 421 when a limit is reached). odmr: it came to an
 * odmr_listen socket: an ODMR session (RFC 2645: AUTH and ATRN only). */
void smtpd_session_accept(struct server *srv, uv_stream_t *stream, int odmr);

/* SIGTERM: idle sessions get 421 and are closed; a session inside DATA or
 * waiting for its commit finishes that message first. */
void smtpd_session_shutdown_all(struct server *srv);
/* shutdown_timeout passed: drop whatever is left. */
void smtpd_session_abort_all(struct server *srv);

#endif
