/*
 * tls_policy: which delivery connection may carry which domain's mail
 * (relayd.conf(5) tls, issue 7). Domains that share a next hop share its
 * connections, so a connection is judged by what it achieved, never by the
 * domain that happened to open it. Pure decisions: no I/O, no OpenSSL; the
 * caller says what the connection is (delivery.c).
 */
#ifndef RELAYD_TLS_POLICY_H
#define RELAYD_TLS_POLICY_H

#include "config.h"

/* What a delivery connection is, as far as TLS goes. */
struct tls_policy_conn {
    enum cfg_tls opened_for; /* the policy it was opened with */
    int ready;               /* set up: tls below is known */
    int tls;                 /* STARTTLS succeeded (RFC 3207) */
    int verified_now;        /* opened as verify with the CAs in use now */
    int clear_retry;         /* the retry in clear after a failed handshake (may) */
};

/* May a ready connection carry mail of a domain whose policy is want?
 * none: any; may: TLS, or a connection that tried STARTTLS and went on in
 * clear (RFC 7435 §3); encrypt: TLS; verify: TLS verified with the CAs of
 * now. 1 or 0. */
int tls_policy_satisfied(enum cfg_tls want, const struct tls_policy_conn *c);
/* The same for a connection still being set up: could it, once ready?
 * (Its policy is at least want, and it is not a retry in clear.) */
int tls_policy_may_satisfy(enum cfg_tls want, const struct tls_policy_conn *c);
/* "none", "may", "encrypt", "verify": the configuration's words, for logs. */
const char *tls_policy_name(enum cfg_tls p);

#endif
