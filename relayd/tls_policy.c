/*
 * tls_policy: the per-domain TLS decisions of delivery (see tls_policy.h).
 * Owns no state and does no I/O; delivery.c describes its connections and
 * acts on the answers.
 */
#include "tls_policy.h"

int tls_policy_satisfied(enum cfg_tls want, const struct tls_policy_conn *c)
{
    switch (want) {
    case CFG_TLS_NONE:
        return 1;
    case CFG_TLS_MAY:
        /* opportunistic: TLS when the site gave it, else a connection that
         * asked for it - one opened for none never tried STARTTLS */
        return c->tls || c->opened_for == CFG_TLS_MAY;
    case CFG_TLS_ENCRYPT:
        return c->tls;
    case CFG_TLS_VERIFY:
        /* an unverified TLS connection (opened for may or encrypt) is not
         * enough, nor one verified with CAs a reload has replaced */
        return c->tls && c->opened_for == CFG_TLS_VERIFY && c->verified_now;
    }
    return 0;
}

int tls_policy_may_satisfy(enum cfg_tls want, const struct tls_policy_conn *c)
{
    if (c->ready)
        return tls_policy_satisfied(want, c);
    if (c->opened_for < want)
        return 0;
    if (c->clear_retry && want > CFG_TLS_MAY)
        return 0; /* it will be clear text */
    return want != CFG_TLS_VERIFY || c->verified_now;
}

const char *tls_policy_name(enum cfg_tls p)
{
    switch (p) {
    case CFG_TLS_NONE:
        return "none";
    case CFG_TLS_MAY:
        return "may";
    case CFG_TLS_ENCRYPT:
        return "encrypt";
    case CFG_TLS_VERIFY:
        return "verify";
    }
    return "?";
}
