/*
 * policy: the questions the SMTP server asks of the configuration: may this
 * recipient be relayed? The answer is an SMTP reply the session can send.
 * Pure over a config snapshot: no I/O.
 */
#ifndef RELAYD_POLICY_H
#define RELAYD_POLICY_H

#include <stddef.h>

#include "config.h"
#include "smtp_parse.h"

struct policy_reply {
    int code;        /* 250 when accepted */
    const char *enh; /* "2.1.5", "5.7.1", ... */
    char text[160];  /* human part of the reply, also logged */
};

/* Decide on RCPT. On acceptance returns 0, sets *dom to the relay domain and
 * writes the normalised domain of the recipient into norm_domain. Otherwise
 * returns -1 and fills out with the refusal (550 5.7.1 relay denied, with the
 * reason: not our domain, percent hack, ...; 550 5.1.1 when the domain has a
 * recipients list that does not hold the address). */
int policy_check_rcpt(const struct config *cfg, const struct smtp_mailbox *mb,
                      const struct cfg_domain **dom, char *norm_domain, size_t normlen,
                      struct policy_reply *out);

#endif
