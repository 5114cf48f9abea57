/*
 * resolver: where a domain's mail goes (RFC 5321 §5.1): MX, then A/AAAA of
 * each MX host, implicit MX, null MX (RFC 7505), MX self-pruning, or an
 * explicit route; final answers cached for their TTL. Asks lib/dns only;
 * never blocks, never connects, never touches the queue.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "dns.h"
#include "log.h"
#include "resolver.h"

#define RESOLVER_MAX_MX      16     /* MX hosts whose addresses are looked up (after pruning) */
#define RESOLVER_CACHE_MAX   4096   /* cached answers; beyond, expired ones are dropped first */
#define RESOLVER_CACHE_SLOTS 1024   /* hash buckets */
#define RESOLVER_TTL_MAX     86400u /* seconds: no answer is trusted for longer */
#define RESOLVER_WHY_MAX     400

/* One cached final answer for (domain, route, port). */
struct rcache {
    char *key;
    uint64_t expires; /* uv_now() ms */
    int status;       /* RESOLVER_OK or RESOLVER_PERMFAIL: temporary failures are not kept */
    char why[RESOLVER_WHY_MAX];
    struct resolver_target *targets;
    size_t n;
    struct rcache *next;
};

/* One MX host (or the route host, or the domain itself as implicit MX)
 * and the outcome of its address lookup. */
struct rhost {
    struct rlookup *lk;
    char name[256];
    unsigned pref;
    int status; /* enum dns_status */
    struct dns_addr *addrs;
    size_t naddrs;
};

/* A lookup in flight. What self-pruning needs from the config is copied in,
 * so the snapshot may be released before the answer comes. */
struct rlookup {
    struct resolver *r;
    resolver_cb cb;
    void *arg;
    char domain[256];
    char *key;
    int route_mx;
    unsigned port;          /* for every target */
    unsigned delivery_port; /* my_addresses only count on this port for routes */
    char hostname[256];     /* ours, lower case */
    struct cfg_net *mine;   /* my_addresses */
    size_t nmine;
    struct sockaddr_storage *listen; /* our specific (not wildcard) listen addresses, with ports */
    size_t nlisten;
    struct rhost *hosts;
    size_t nhosts;
    size_t pending;   /* address lookups not answered yet (+1 while starting them) */
    unsigned queries; /* dns queries in flight: the lookup lives until they return */
    uint32_t ttl;     /* smallest TTL seen so far */
    int answered;
    struct rlookup *next, **prevp;
};

struct resolver {
    uv_loop_t *loop;
    struct dns *dns;
    struct rlookup *lookups;
    struct rcache *slots[RESOLVER_CACHE_SLOTS];
    size_t ncache;
    int closing;
    int in_close; /* resolver_close() is running: it frees r itself */
};

/* ---- the cache ------------------------------------------------------------------------- */

static unsigned hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h % RESOLVER_CACHE_SLOTS;
}

static void free_entry(struct rcache *e)
{
    free(e->key);
    free(e->targets);
    free(e);
}

/* Drop entries that have expired (all when all is set). */
static void cache_purge(struct resolver *r, int all)
{
    uint64_t now = uv_now(r->loop);

    for (size_t i = 0; i < RESOLVER_CACHE_SLOTS; i++) {
        for (struct rcache **pp = &r->slots[i]; *pp != NULL;) {
            struct rcache *e = *pp;
            if (all || e->expires <= now) {
                *pp = e->next;
                free_entry(e);
                r->ncache--;
            } else {
                pp = &e->next;
            }
        }
    }
}

static const struct rcache *cache_get(struct resolver *r, const char *key)
{
    uint64_t now = uv_now(r->loop);

    for (struct rcache **pp = &r->slots[hash_key(key)]; *pp != NULL; pp = &(*pp)->next) {
        struct rcache *e = *pp;
        if (strcmp(e->key, key) != 0)
            continue;
        if (e->expires > now)
            return e;
        *pp = e->next;
        free_entry(e);
        r->ncache--;
        return NULL;
    }
    return NULL;
}

/* Keep a final answer for ttl seconds (0: not at all). Out of memory just
 * means no caching. */
static void cache_put(struct resolver *r, const char *key, uint32_t ttl, int status,
                      const struct resolver_target *t, size_t n, const char *why)
{
    struct rcache *e;
    unsigned slot = hash_key(key);

    if (ttl == 0 || key == NULL)
        return;
    if (ttl > RESOLVER_TTL_MAX)
        ttl = RESOLVER_TTL_MAX;
    for (struct rcache **pp = &r->slots[slot]; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            e = *pp;
            *pp = e->next;
            free_entry(e);
            r->ncache--;
            break;
        }
    }
    if (r->ncache >= RESOLVER_CACHE_MAX)
        cache_purge(r, 0);
    if (r->ncache >= RESOLVER_CACHE_MAX)
        cache_purge(r, 1);
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    e->key = strdup(key);
    if (n > 0)
        e->targets = malloc(n * sizeof(*t));
    if (e->key == NULL || (n > 0 && e->targets == NULL)) {
        free_entry(e);
        return;
    }
    if (n > 0)
        memcpy(e->targets, t, n * sizeof(*t));
    e->n = n;
    e->status = status;
    snprintf(e->why, sizeof(e->why), "%s", why ? why : "");
    e->expires = uv_now(r->loop) + (uint64_t)ttl * 1000;
    e->next = r->slots[slot];
    r->slots[slot] = e;
    r->ncache++;
}

/* ---- who we are -------------------------------------------------------------------------- */

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return 0;
}

static unsigned port_of(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return 0;
}

static void set_port(struct sockaddr_storage *a, unsigned port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
    else if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
}

static int is_wildcard(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &in6addr_any,
                      sizeof(in6addr_any)) == 0;
    return 1;
}

/* Is delivering to addr:port delivering to ourselves? Our specific listen
 * addresses count with their port; my_addresses (our addresses as others
 * see them, e.g. behind NAT) count on the MX delivery port, and for MX
 * hosts on any port, since an MX host is a host, not a port. */
static int is_me(const struct rlookup *lk, const struct dns_addr *a, unsigned port)
{
    for (size_t i = 0; i < lk->nlisten; i++) {
        if (port_of(&lk->listen[i]) == port && same_addr(&lk->listen[i], &a->addr))
            return 1;
    }
    if ((lk->route_mx || port == lk->delivery_port) &&
        config_net_match(lk->mine, lk->nmine, (const struct sockaddr *)&a->addr))
        return 1;
    return 0;
}

/* Host names compare without case and without one trailing dot. */
static int same_host(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    return la > 0 && la == lb && strncasecmp(a, b, la) == 0;
}

/* ---- lookups ----------------------------------------------------------------------------- */

static void lookup_free(struct rlookup *lk)
{
    struct resolver *r = lk->r;

    if (lk->prevp != NULL) {
        *lk->prevp = lk->next;
        if (lk->next != NULL)
            lk->next->prevp = lk->prevp;
    }
    for (size_t i = 0; i < lk->nhosts; i++)
        free(lk->hosts[i].addrs);
    free(lk->hosts);
    free(lk->mine);
    free(lk->listen);
    free(lk->key);
    free(lk);
    /* The last lookup out turns off the lights after resolver_close(). */
    if (r->closing && !r->in_close && r->lookups == NULL)
        free(r);
}

static void note_ttl(struct rlookup *lk, uint32_t ttl)
{
    if (ttl < lk->ttl)
        lk->ttl = ttl;
}

/* Answer the caller once; cache what is final. The lookup is freed when no
 * query of its own is still in flight. */
static void finish(struct rlookup *lk, int status, const struct resolver_target *t, size_t n,
                   const char *why)
{
    if (!lk->answered) {
        lk->answered = 1;
        if (status != RESOLVER_TEMPFAIL && !lk->r->closing)
            cache_put(lk->r, lk->key, lk->ttl, status, t, n, why);
        lk->cb(lk->arg, status, status == RESOLVER_OK ? t : NULL, status == RESOLVER_OK ? n : 0,
               status == RESOLVER_OK ? NULL : why);
    }
    if (lk->queries == 0)
        lookup_free(lk);
}

/* Every address lookup is in: prune ourselves by address, then list the
 * targets in MX order. */
static void hosts_done(struct rlookup *lk)
{
    struct resolver_target *t = NULL;
    size_t n = 0, cap = 0, usable = 0;
    unsigned mypref = ~0u;
    int any_temp = 0, self = 0, cut = 0;
    char why[RESOLVER_WHY_MAX];

    if (lk->r->closing) {
        finish(lk, RESOLVER_TEMPFAIL, NULL, 0, "resolver shutting down");
        return;
    }
    /* RFC 5321 §5.1: an MX host that is us, found by one of its addresses,
     * sets our preference like a match by name did before the lookups. */
    for (size_t i = 0; i < lk->nhosts; i++) {
        const struct rhost *h = &lk->hosts[i];
        for (size_t j = 0; j < h->naddrs; j++) {
            if (is_me(lk, &h->addrs[j], lk->port)) {
                if (h->pref < mypref)
                    mypref = h->pref;
                self = 1;
            }
        }
    }
    for (size_t i = 0; i < lk->nhosts; i++) {
        const struct rhost *h = &lk->hosts[i];
        if (lk->route_mx && h->pref >= mypref) {
            cut = 1;
            continue;
        }
        if (h->status == DNS_TEMPFAIL || h->status == DNS_ERR || h->status == DNS_CANCELLED)
            any_temp = 1;
        for (size_t j = 0; j < h->naddrs; j++) {
            if (is_me(lk, &h->addrs[j], lk->port)) {
                self = 1; /* a route to ourselves */
                continue;
            }
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 8;
                struct resolver_target *nt = realloc(t, nc * sizeof(*t));
                if (nt == NULL) {
                    free(t);
                    finish(lk, RESOLVER_TEMPFAIL, NULL, 0, "out of memory");
                    return;
                }
                t = nt;
                cap = nc;
            }
            memset(&t[n], 0, sizeof(t[n]));
            snprintf(t[n].host, sizeof(t[n].host), "%s", h->name);
            t[n].addr = h->addrs[j].addr;
            set_port(&t[n].addr, lk->port);
            t[n].pref = h->pref;
            n++;
        }
        usable++;
    }
    if (n > 0) {
        /* A partial answer is not kept: the host that failed may be back
         * on the next attempt. */
        if (any_temp)
            lk->ttl = 0;
        finish(lk, RESOLVER_OK, t, n, NULL);
    } else if ((usable == 0 && cut) || (self && !any_temp)) {
        snprintf(why, sizeof(why), "mail for %s loops back to myself", lk->domain);
        log_error("%s", why);
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, why);
    } else if (any_temp) {
        snprintf(why, sizeof(why), "temporary DNS failure looking up the address of %s%s",
                 lk->route_mx ? "the mail exchangers for " : "",
                 lk->route_mx ? lk->domain : lk->hosts[0].name);
        finish(lk, RESOLVER_TEMPFAIL, NULL, 0, why);
    } else {
        /* Every host is NXDOMAIN or has no address: nothing to retry. */
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, "Host or domain name not found");
    }
    free(t);
}

static void on_host_addr(void *arg, int status, const struct dns_addr *addrs, size_t n,
                         uint32_t ttl)
{
    struct rhost *h = arg;
    struct rlookup *lk = h->lk;

    lk->queries--;
    h->status = status;
    if (status == DNS_OK && n > 0) {
        h->addrs = malloc(n * sizeof(*addrs));
        if (h->addrs != NULL) {
            memcpy(h->addrs, addrs, n * sizeof(*addrs));
            h->naddrs = n;
        } else {
            h->status = DNS_ERR;
        }
    }
    if (status == DNS_OK || status == DNS_NXDOMAIN || status == DNS_NODATA)
        note_ttl(lk, ttl);
    /* Every host is counted in pending until its answer is in, so the
     * last answer (even after resolver_close answered early) ends here. */
    if (--lk->pending == 0)
        hosts_done(lk);
}

/* Look up the addresses of every host, in parallel. The +1 on pending keeps
 * an answer that arrives while we are still starting others (a literal)
 * from finishing the lookup early. */
static void resolve_hosts(struct rlookup *lk)
{
    lk->pending = lk->nhosts + 1;
    for (size_t i = 0; i < lk->nhosts; i++) {
        struct rhost *h = &lk->hosts[i];
        h->lk = lk;
        lk->queries++;
        if (lk->r->closing ||
            dns_query_addr(lk->r->dns, h->name, AF_UNSPEC, on_host_addr, h) != 0) {
            lk->queries--;
            h->status = DNS_TEMPFAIL;
            lk->pending--;
        }
    }
    if (--lk->pending == 0)
        hosts_done(lk);
}

static int add_host(struct rlookup *lk, const char *name, unsigned pref)
{
    struct rhost *h;

    h = realloc(lk->hosts, (lk->nhosts + 1) * sizeof(*h));
    if (h == NULL)
        return -1;
    lk->hosts = h;
    h = &lk->hosts[lk->nhosts++];
    memset(h, 0, sizeof(*h));
    snprintf(h->name, sizeof(h->name), "%s", name);
    h->pref = pref;
    h->status = DNS_TEMPFAIL;
    return 0;
}

static void on_mx(void *arg, int status, const struct dns_mx *mx, size_t n, uint32_t ttl)
{
    struct rlookup *lk = arg;
    char why[RESOLVER_WHY_MAX];
    unsigned mypref = ~0u;
    size_t nnull = 0;

    lk->queries--;
    if (lk->answered) {
        finish(lk, RESOLVER_TEMPFAIL, NULL, 0, NULL); /* frees it */
        return;
    }
    if (status == DNS_OK || status == DNS_NXDOMAIN || status == DNS_NODATA)
        note_ttl(lk, ttl);
    switch (status) {
    case DNS_OK:
        break;
    case DNS_NXDOMAIN:
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, "Host or domain name not found");
        return;
    case DNS_NODATA:
        /* RFC 5321 §5.1: no MX records: the domain itself, preference 0. */
        if (add_host(lk, lk->domain, 0) < 0) {
            finish(lk, RESOLVER_TEMPFAIL, NULL, 0, "out of memory");
            return;
        }
        resolve_hosts(lk);
        return;
    default:
        snprintf(why, sizeof(why), "DNS lookup of the mail exchangers for %s failed: %s",
                 lk->domain, dns_strerror(status));
        finish(lk, RESOLVER_TEMPFAIL, NULL, 0, why);
        return;
    }
    /* RFC 7505 §3: "0 ." alone means the domain takes no mail. A null MX
     * among others is a misconfiguration; it is skipped like any host
     * that cannot take mail. */
    for (size_t i = 0; i < n; i++) {
        if (mx[i].host[0] == '\0')
            nnull++;
        else if (same_host(mx[i].host, lk->hostname) && mx[i].pref < mypref)
            mypref = mx[i].pref;
    }
    if (nnull == n) {
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, "Domain does not accept mail (null MX)");
        return;
    }
    /* RFC 5321 §5.1: drop ourselves and every MX host of equal or worse
     * preference; those would hand the mail back or to a peer that
     * forwards it to the better hosts anyway. */
    for (size_t i = 0; i < n; i++) {
        if (mx[i].host[0] == '\0' || mx[i].pref >= mypref)
            continue;
        if (lk->nhosts == RESOLVER_MAX_MX)
            break;
        if (add_host(lk, mx[i].host, mx[i].pref) < 0) {
            finish(lk, RESOLVER_TEMPFAIL, NULL, 0, "out of memory");
            return;
        }
    }
    if (lk->nhosts == 0) {
        snprintf(why, sizeof(why), "mail for %s loops back to myself", lk->domain);
        log_error("%s", why);
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, why);
        return;
    }
    resolve_hosts(lk);
}

/* Copy what self-pruning needs out of cfg. */
static int copy_self(struct rlookup *lk, const struct config *cfg)
{
    const char *hn = cfg->hostname ? cfg->hostname : "";

    for (size_t i = 0; hn[i] != '\0' && i + 1 < sizeof(lk->hostname); i++)
        lk->hostname[i] = (char)tolower((unsigned char)hn[i]);
    lk->delivery_port = cfg->delivery_port;
    if (cfg->nmy_addresses > 0) {
        lk->mine = malloc(cfg->nmy_addresses * sizeof(*lk->mine));
        if (lk->mine == NULL)
            return -1;
        memcpy(lk->mine, cfg->my_addresses, cfg->nmy_addresses * sizeof(*lk->mine));
        lk->nmine = cfg->nmy_addresses;
    }
    if (cfg->nlisten > 0) {
        lk->listen = calloc(cfg->nlisten, sizeof(*lk->listen));
        if (lk->listen == NULL)
            return -1;
        for (size_t i = 0; i < cfg->nlisten; i++) {
            if (!is_wildcard(&cfg->listen[i].addr))
                lk->listen[lk->nlisten++] = cfg->listen[i].addr;
        }
    }
    return 0;
}

int resolver_open(uv_loop_t *loop, const char *servers, struct resolver **out, char *err,
                  size_t errlen)
{
    struct resolver *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->loop = loop;
    if (dns_open(loop, servers, &r->dns, err, errlen) != 0) {
        free(r);
        return -1;
    }
    *out = r;
    return 0;
}

/* cb runs exactly once. It runs before this returns on a cache hit, for a
 * route to an IP address, and on errors found at once (bad domain, out of
 * memory, closing); otherwise from the loop. Callers must not hold state
 * they only set up after the call. */
void resolver_lookup(struct resolver *r, const struct config *cfg, const struct cfg_domain *dom,
                     const char *domain, resolver_cb cb, void *arg)
{
    struct rlookup *lk = NULL;
    const struct rcache *c;
    size_t len = strlen(domain);
    char name[256];

    if (dom == NULL)
        dom = config_delivery_domain(cfg, domain);
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0 || len > 253) {
        cb(arg, RESOLVER_PERMFAIL, NULL, 0, "Host or domain name not found");
        return;
    }
    for (size_t i = 0; i < len; i++)
        name[i] = (char)tolower((unsigned char)domain[i]);
    name[len] = '\0';
    if (r->closing) {
        cb(arg, RESOLVER_TEMPFAIL, NULL, 0, "resolver shutting down");
        return;
    }
    lk = calloc(1, sizeof(*lk));
    if (lk == NULL || copy_self(lk, cfg) < 0 ||
        asprintf(&lk->key, "%s %s %u", name,
                 dom->route_mx || dom->route_host == NULL ? "mx" : dom->route_host,
                 dom->route_port) < 0) {
        if (lk != NULL)
            lk->key = NULL;
        goto nomem;
    }
    c = cache_get(r, lk->key);
    if (c != NULL) {
        /* A copy: the callback may flush or refill the cache. */
        struct resolver_target *t = c->n ? malloc(c->n * sizeof(*t)) : NULL;
        char why[RESOLVER_WHY_MAX];
        int status = c->status;
        size_t n = c->n;
        free(lk->mine);
        free(lk->listen);
        free(lk->key);
        free(lk);
        if (n > 0 && t == NULL) {
            cb(arg, RESOLVER_TEMPFAIL, NULL, 0, "out of memory");
            return;
        }
        if (n > 0)
            memcpy(t, c->targets, n * sizeof(*t));
        snprintf(why, sizeof(why), "%s", c->why);
        cb(arg, status, status == RESOLVER_OK ? t : NULL, status == RESOLVER_OK ? n : 0,
           status == RESOLVER_OK ? NULL : why);
        free(t);
        return;
    }
    lk->r = r;
    lk->cb = cb;
    lk->arg = arg;
    memcpy(lk->domain, name, len + 1);
    lk->route_mx = dom->route_mx || dom->route_host == NULL;
    lk->port = dom->route_port;
    lk->ttl = RESOLVER_TTL_MAX;
    lk->next = r->lookups;
    if (lk->next != NULL)
        lk->next->prevp = &lk->next;
    lk->prevp = &r->lookups;
    r->lookups = lk;

    if (!dom->route_mx && dom->route_host != NULL) {
        /* route = host[:port]: no MX, no pruning by preference (RFC 5321
         * §5.1 applies to MX only); a route to ourselves is still refused. */
        if (add_host(lk, dom->route_host, 0) < 0) {
            finish(lk, RESOLVER_TEMPFAIL, NULL, 0, "out of memory");
            return;
        }
        resolve_hosts(lk);
        return;
    }
    lk->queries++;
    if (dns_query_mx(r->dns, lk->domain, on_mx, lk) != 0) {
        lk->queries--;
        finish(lk, RESOLVER_TEMPFAIL, NULL, 0, "DNS lookup could not be started");
    }
    return;
nomem:
    if (lk != NULL) {
        free(lk->mine);
        free(lk->listen);
        free(lk);
    }
    cb(arg, RESOLVER_TEMPFAIL, NULL, 0, "out of memory");
}

void resolver_flush_cache(struct resolver *r)
{
    cache_purge(r, 1);
}

/* Close the DNS channel (its queries come back cancelled, and their
 * lookups answer TEMPFAIL), answer any lookup still waiting, and free r
 * once the last lookup has let go of it. */
void resolver_close(struct resolver *r)
{
    struct rlookup *lk, *next;

    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    r->in_close = 1;
    cache_purge(r, 1);
    dns_close(r->dns);
    /* dns_close is deferred when called from inside a DNS callback: answer
     * now anyway; the lookups are freed when their queries come back. */
    for (lk = r->lookups; lk != NULL; lk = next) {
        next = lk->next;
        if (!lk->answered) {
            lk->answered = 1;
            lk->cb(lk->arg, RESOLVER_TEMPFAIL, NULL, 0, "resolver shutting down");
        }
    }
    r->in_close = 0;
    if (r->lookups == NULL)
        free(r);
}
