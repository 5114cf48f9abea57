/*
 * policy: may a recipient be relayed? Pure over a configuration snapshot:
 * lib/addr.c recognises the tricks, the config says which domains are ours
 * and, for a domain with a recipients list, which of its users exist.
 * It never looks at the network and never changes anything.
 */
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "policy.h"
#include "recipients.h"

static void refuse(struct policy_reply *out, const char *reason)
{
    out->code = 550;
    out->enh = "5.7.1";
    snprintf(out->text, sizeof(out->text), "Relay access denied (%s)", reason);
}

/*
 * A relay accepts a recipient only when it is plainly a mailbox at one of the
 * configured domains (RFC 5321 §3.6.2: a relay must not be open). Routing
 * syntax of any kind - %, !, source routes, quoted '@', address literals - is
 * refused before the domain is looked at, because a downstream MTA may honour
 * it and turn us into an open relay.
 */
int policy_check_rcpt(const struct config *cfg, const struct smtp_mailbox *mb,
                      const struct cfg_domain **dom, char *norm_domain, size_t normlen,
                      struct policy_reply *out)
{
    enum addr_verdict v = addr_check_relay(mb);
    const struct cfg_domain *d;

    if (v != ADDR_OK) {
        refuse(out, addr_verdict_str(v));
        return -1;
    }
    if (addr_domain_normalize(mb->domain, strlen(mb->domain), norm_domain, normlen) != 0) {
        refuse(out, addr_verdict_str(ADDR_BAD_DOMAIN));
        return -1;
    }
    d = config_find_domain(cfg, norm_domain);
    if (d == NULL) {
        refuse(out, "not a relay domain");
        return -1;
    }
    /* A listed domain knows its users: refuse the others now, at RCPT, rather
     * than accept, have the site refuse and bounce to a sender who is likely
     * forged (backscatter). RFC 3463 §3.2: 5.1.1 bad destination mailbox. */
    if (d->recipients_file != NULL && d->recipients == NULL) {
        /* not attached yet: cannot happen for a live snapshot; never guess */
        out->code = 451;
        out->enh = "4.3.0";
        snprintf(out->text, sizeof(out->text), "Recipient list not available, try again later");
        return -1;
    }
    if (d->recipients != NULL && !recipients_match(d->recipients, mb->local, norm_domain)) {
        out->code = 550;
        out->enh = "5.1.1";
        snprintf(out->text, sizeof(out->text),
                 "Recipient address rejected: User unknown in relay recipient table");
        return -1;
    }
    *dom = d;
    out->code = 250;
    out->enh = "2.1.5";
    snprintf(out->text, sizeof(out->text), "Ok");
    return 0;
}
