/*
 * auth: the server side of SMTP AUTH (RFC 4954) through GNU SASL, for every
 * listener that offers it (smtpd on the normal listeners, the ODMR listener
 * of RFC 2645). One exchange is a per-session object the session drives
 * line by line; it does no I/O of its own: it hands back the reply to send
 * (334 challenge, 235, or a refusal with its RFC 4954 code) and, after a
 * success, the account name the session keeps for ETRN/ATRN ownership
 * checks (credentials_owns()).
 *
 * Every step runs on auth's own worker thread (never on the loop, never on
 * libuv's shared threadpool, which the spool's writes use): a crypt(3) check
 * can take a bcrypt's 100 ms, and a hundred of them must not delay anyone's
 * 250. The reply comes back on the loop thread through the callback.
 *
 * Also: the per-client-address failure limit (auth_fail_limit, like
 * Postfix's anvil) and the Postfix-shaped failure log line fail2ban reads:
 *   warning: unknown[192.0.2.1]: SASL PLAIN authentication failed: <reason>
 */
#ifndef RELAYD_AUTH_H
#define RELAYD_AUTH_H

#include <stddef.h>
#include <uv.h>

#include "credentials.h"

struct auth;         /* one per daemon (server->auth): worker thread, failure table */
struct auth_session; /* one AUTH exchange of one client session */
struct config;

/* Start the worker thread and the loop-side wakeup. Negative libuv code on
 * error (nothing started). */
int auth_open(uv_loop_t *loop, struct auth **out);
/* Stop the worker (a check in progress finishes first; queued steps of
 * sessions still open are dropped) and free everything once the loop has
 * closed the wakeup handle. Every auth_session must be freed before. */
void auth_close(struct auth *a);

/* The SASL mechanisms to advertise after "AUTH " in EHLO for a session on a
 * connection with (tls = 1) or without TLS, e.g.
 * "SCRAM-SHA-256-PLUS SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN". PLAIN and LOGIN
 * only with TLS (RFC 4954 §4: no plaintext passwords in the clear), -PLUS
 * only with TLS and channel binding data. Returns the length written, 0 when
 * cfg has no credentials (then do not offer AUTH at all). */
size_t auth_mechanisms(const struct config *cfg, int tls, int have_cb, char *out, size_t outlen);

/* What the session does with an auth_reply. */
enum auth_status {
    AUTH_CONTINUE, /* send "334 text" and feed the client's next line to auth_session_step() */
    AUTH_SUCCESS,  /* send the 235; auth_session_account() is the authenticated account */
    AUTH_FAILURE,  /* send the refusal; the exchange is over (free or restart it) */
};

#define AUTH_REPLY_TEXT_MAX 1024

struct auth_reply {
    enum auth_status status;
    int code;                       /* 334, 235, 454, 501, 504, 534, 535, 538, 421 */
    const char *enh;                /* "2.7.0", "5.7.8", ...; NULL for 334 */
    char text[AUTH_REPLY_TEXT_MAX]; /* 334: the base64 challenge (may be ""); else human text */
    int count_error;                /* a failed attempt: count toward the session's max_errors */
    int close; /* 421: auth_fail_limit reached for this address: send it and close */
};

/* Called on the loop thread with the outcome of one auth_session_start() or
 * auth_session_step(): exactly once per successful call, never from inside
 * the call itself, and never after auth_session_free(). r is valid during
 * the call only. */
typedef void (*auth_cb)(struct auth_session *as, const struct auth_reply *r, void *udata);

/* The client's side of the connection, as the exchange needs it. Strings are
 * copied. */
struct auth_peer {
    const char *addr;    /* numeric client address: logs (and auth_fail_limit without key) */
    const char *key;     /* what auth_fail_limit counts the client as (ipkey: an IPv6
                          * client by its /64), or NULL for addr */
    const char *service; /* log tag of the listener: "smtpd" or "odmr" */
    int tls;             /* TLS is active: PLAIN and LOGIN allowed */
    /* RFC 9266 tls-exporter / RFC 5929 tls-unique channel binding of this TLS
     * connection, base64, for SCRAM-SHA-256-PLUS; NULL when there is none. */
    const char *cb_tls_exporter;
    const char *cb_tls_unique;
};

/* A new exchange for a session whose configuration snapshot is cfg (a
 * reference is taken; the credentials are cfg->credentials). 0 or a
 * negative errno; nothing is called on error. */
int auth_session_new(struct auth *a, struct config *cfg, const struct auth_peer *peer, auth_cb cb,
                     void *udata, struct auth_session **out);

/* Begin with the AUTH command's argument, "MECHANISM [initial-response]"
 * (RFC 4954 §4; "=" is an empty initial response). Returns 0: the outcome
 * comes to cb (504 unknown mechanism, 538 PLAIN/LOGIN without TLS, 501 bad
 * base64, 421 address over auth_fail_limit, or a first 334/235/535). Returns
 * -1 (nothing is called) only when a step is already in progress. */
int auth_session_start(struct auth_session *as, const char *arg, size_t len);

/* Feed the client's reply line to a 334 (without its CRLF). "*" cancels the
 * exchange (501 5.0.0, RFC 4954 §4). Same contract as auth_session_start(). */
int auth_session_step(struct auth_session *as, const char *line, size_t len);

/* After AUTH_SUCCESS: the account's name (as in the credentials file, at most
 * CREDENTIALS_NAME_MAX bytes), and the mechanism used; NULL before. The
 * session copies the name (char auth_account[CREDENTIALS_NAME_MAX + 1]) and
 * later asks credentials_owns(cfg, name, domain). */
const char *auth_session_account(const struct auth_session *as);
const char *auth_session_mechanism(const struct auth_session *as);

/* End the exchange. Safe while a step runs on the worker: its outcome is
 * dropped and the callback is not called. NULL is fine. */
void auth_session_free(struct auth_session *as);

#endif
