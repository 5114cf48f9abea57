/*
 * etrn_access: which relay domains an ETRN client may flush (RFC 1985 with
 * relayd.conf(5)'s etrn_access). One rule for every form of the argument
 * ("dom", "@dom", "#queue"): a queued domain may be flushed by a client when
 * it belongs to a relay domain (config_find_domain) whose etrn_access
 * admits the client: by its address, or (etrn_access = auth) because the
 * account it authenticated as owns the domain (credentials_owns). Pure over
 * a configuration snapshot and the client: no I/O, no queue, no reply text
 * (etrn.c words the replies).
 */
#ifndef RELAYD_ETRN_ACCESS_H
#define RELAYD_ETRN_ACCESS_H

#include <sys/socket.h>

#include "config.h"
#include "smtp_parse.h"

enum etrn_access_verdict {
    ETRN_ACCESS_OK = 0,        /* some relay domain the argument covers is the client's to flush */
    ETRN_ACCESS_NOT_OURS,      /* the name is not a relay domain (nor below one) */
    ETRN_ACCESS_NO_QUEUE,      /* #name: no [queue name] section */
    ETRN_ACCESS_DENIED,        /* ours, but etrn_access admits the client to none of it */
    ETRN_ACCESS_AUTH_REQUIRED, /* not authenticated, and an account could be admitted (530) */
};

/* Who asks. */
struct etrn_client {
    const struct sockaddr *peer; /* its address */
    const char *account;         /* the account it authenticated as (AUTH), or NULL */
};

/* May the client flush domain (normalised), which belongs to relay domain
 * d? etrn_access empty: anyone (RFC 1985's default, safe because the mail
 * goes to the domain's own destination and never to the client that asked);
 * else a listed network, or "auth" and an account that owns domain. */
int etrn_access_may(const struct config *cfg, const struct cfg_domain *d, const char *domain,
                    const struct etrn_client *who);

/* May the client flush the queued (normalised) domain? Only when it is a
 * relay domain, or below one with subdomains = yes, and the section it
 * belongs to admits the client: the same answer whichever form of ETRN
 * reached it. */
int etrn_access_domain(const struct config *cfg, const char *domain, const struct etrn_client *who);

/* Before the queue is counted: is there anything the argument (kind, name
 * as smtp_parse_etrn gives them) covers that the client may flush? "@dom"
 * must name a relay domain itself, so "@com" covers no one's mail. OK
 * does not mean every domain covered may be flushed: etrn.c filters the
 * queued domains through etrn_access_domain. With the global etrn_access
 * naming auth, a client neither authenticated nor in the global networks
 * gets AUTH_REQUIRED whatever it names, so probing tells it nothing about
 * which domains are customers; otherwise AUTH_REQUIRED replaces DENIED for
 * an unauthenticated client when an account could have been admitted. */
enum etrn_access_verdict etrn_access_check(const struct config *cfg, enum smtp_etrn_kind kind,
                                           const char *name, const struct etrn_client *who);

/* What the log says for a verdict ("not a relay domain", ...). The client
 * is told none of this: one 459 text for all of them. */
const char *etrn_access_reason(enum etrn_access_verdict v);

#endif
