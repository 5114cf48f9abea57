/*
 * etrn_access: which relay domains an ETRN client may flush; see
 * etrn_access.h. Pure over a configuration snapshot: it never reads the
 * queue, the network or a clock, so tests/unit/test_etrn_access.c can ask
 * it everything.
 */
#include <string.h>

#include "credentials.h"
#include "etrn_access.h"

int etrn_access_may(const struct config *cfg, const struct cfg_domain *d, const char *domain,
                    const struct etrn_client *who)
{
    if (d == NULL)
        return 0;
    if (d->netrn_access == 0)
        return 1;
    if (config_net_match(d->etrn_access, d->netrn_access, who->peer))
        return 1;
    return d->etrn_access_auth && who->account != NULL &&
           credentials_owns(cfg, who->account, domain);
}

int etrn_access_domain(const struct config *cfg, const char *domain, const struct etrn_client *who)
{
    return etrn_access_may(cfg, config_find_domain(cfg, domain), domain, who);
}

/* Is d equal to or below parent (both normalised)? */
static int is_under(const char *d, const char *parent)
{
    size_t ld = strlen(d), lp = strlen(parent);

    if (ld == lp)
        return strcmp(d, parent) == 0;
    return ld > lp && d[ld - lp - 1] == '.' && strcmp(d + ld - lp, parent) == 0;
}

/* May the client flush anything of name (and, with sub, the domains below
 * it)? name's own section decides for name and for every domain below it
 * that has no section of its own; a [domain] section below name decides
 * for its part. *auth_could: one of those sections admits owning accounts. */
static int scope_any(const struct config *cfg, const char *name, int sub,
                     const struct etrn_client *who, int *auth_could)
{
    const struct cfg_domain *d = config_find_domain(cfg, name);

    if (d != NULL && d->etrn_access_auth)
        *auth_could = 1;
    if (etrn_access_may(cfg, d, name, who))
        return 1;
    for (size_t i = 0; sub && i < cfg->ndomains; i++) {
        if (!is_under(cfg->domains[i].name, name))
            continue;
        if (cfg->domains[i].etrn_access_auth)
            *auth_could = 1;
        if (etrn_access_may(cfg, &cfg->domains[i], cfg->domains[i].name, who))
            return 1;
    }
    return 0;
}

enum etrn_access_verdict etrn_access_check(const struct config *cfg, enum smtp_etrn_kind kind,
                                           const char *name, const struct etrn_client *who)
{
    const struct cfg_queue *q;
    const struct cfg_domain *d;
    int ours = 0, auth_could = 0;
    enum etrn_access_verdict v;

    /* etrn_access = auth globally: strangers learn nothing (RFC 4954 §6: 530) */
    if (cfg->etrn_access_auth && who->account == NULL &&
        !config_net_match(cfg->etrn_access, cfg->netrn_access, who->peer))
        return ETRN_ACCESS_AUTH_REQUIRED;
    if (kind != SMTP_ETRN_QUEUE) {
        if (config_find_domain(cfg, name) == NULL)
            return ETRN_ACCESS_NOT_OURS;
        v = scope_any(cfg, name, kind == SMTP_ETRN_SUBDOMAINS, who, &auth_could)
                ? ETRN_ACCESS_OK
                : ETRN_ACCESS_DENIED;
    } else {
        if ((q = config_find_queue(cfg, name)) == NULL)
            return ETRN_ACCESS_NO_QUEUE;
        v = ETRN_ACCESS_NOT_OURS;
        /* A member covers its subdomains when its relay domain does (etrn.c
         * counts it that way). */
        for (size_t i = 0; i < q->ndomains && v != ETRN_ACCESS_OK; i++) {
            if ((d = config_find_domain(cfg, q->domains[i])) == NULL)
                continue;
            ours = 1;
            if (scope_any(cfg, q->domains[i], d->subdomains, who, &auth_could))
                v = ETRN_ACCESS_OK;
        }
        if (v != ETRN_ACCESS_OK)
            v = ours ? ETRN_ACCESS_DENIED : ETRN_ACCESS_NOT_OURS;
    }
    if (v == ETRN_ACCESS_DENIED && auth_could && who->account == NULL)
        return ETRN_ACCESS_AUTH_REQUIRED;
    return v;
}

const char *etrn_access_reason(enum etrn_access_verdict v)
{
    switch (v) {
    case ETRN_ACCESS_OK:
        return "allowed";
    case ETRN_ACCESS_NOT_OURS:
        return "not a relay domain";
    case ETRN_ACCESS_NO_QUEUE:
        return "no such queue";
    case ETRN_ACCESS_AUTH_REQUIRED:
        return "authentication required";
    case ETRN_ACCESS_DENIED:
        break;
    }
    return "not authorized for this client";
}
