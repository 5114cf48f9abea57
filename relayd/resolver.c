/*
 * resolver: where a domain's mail goes (RFC 5321 §5.1): MX, then A/AAAA of
 * each MX host, implicit MX, null MX (RFC 7505), or an explicit route;
 * what is left after pruning this relay is targets.c's to order. Final
 * answers are cached for their TTL, unshuffled and uncut, so every lookup
 * gets its own order. Asks lib/dns only; never blocks, never connects,
 * never touches the queue.
 */
#define LOG_SERVICE "smtp" /* log lines are tagged relayd/smtp */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "config.h"
#include "dns.h"
#include "log.h"
#include "me.h"
#include "resolver.h"

#define RESOLVER_MAX_MX      16     /* MX hosts whose addresses are looked up (after pruning) */
#define RESOLVER_CACHE_MAX   4096   /* cached answers; beyond, expired ones are dropped first */
#define RESOLVER_CACHE_SLOTS 1024   /* hash buckets */
#define RESOLVER_TTL_MAX     86400u /* seconds: no answer is trusted for longer */

/* One cached final answer for (domain, route, port). */
struct rcache {
    char *key;
    uint64_t expires; /* uv_now() ms */
    int status;       /* RESOLVER_OK or RESOLVER_PERMFAIL: temporary failures are not kept */
    struct resolver_error err;
    struct resolver_target *targets; /* by preference, before shuffling and the cap */
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
    char why[DNS_WHY_MAX];
    struct sockaddr_storage *addrs; /* port 0 */
    size_t naddrs;
};

/* A lookup in flight. What it needs from the config is copied in, so the
 * snapshot may be released before the answer comes. */
struct rlookup {
    struct resolver *r;
    resolver_cb cb;
    void *arg;
    char domain[256];
    char *key;
    int route_mx;
    int implicit;     /* no MX records: the domain is its own MX */
    unsigned port;    /* for every target */
    unsigned mypref;  /* our preference found by name, ~0u if none */
    size_t max_addrs; /* max_mx_addresses */
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
    char *servers; /* as given to dns_open, NULL for resolv.conf */
    const struct me *me;
    uint64_t rng; /* xorshift64* state for the per-lookup shuffle */
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
                      const struct resolver_target *t, size_t n, const struct resolver_error *err)
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
    if (err != NULL)
        e->err = *err;
    e->expires = uv_now(r->loop) + (uint64_t)ttl * 1000;
    e->next = r->slots[slot];
    r->slots[slot] = e;
    r->ncache++;
}

/* ---- answers ----------------------------------------------------------------------------- */

static void set_err(struct resolver_error *e, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_err(struct resolver_error *e, int code, const char *enh, const char *fmt, ...)
{
    va_list ap;

    memset(e, 0, sizeof(*e));
    e->code = code;
    snprintf(e->enh, sizeof(e->enh), "%s", enh);
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof(e->why), fmt, ap);
    va_end(ap);
}

/* Hand targets to cb in this run's order: shuffled among equal
 * preferences and cut to max addresses. t is the caller's to free. */
static void answer_ok(struct resolver *r, resolver_cb cb, void *arg,
                      const struct resolver_target *t, size_t n, size_t max)
{
    struct resolver_target *copy = malloc(n * sizeof(*copy));
    struct resolver_error e;

    if (copy == NULL) {
        set_err(&e, 451, "4.3.0", "out of memory");
        cb(arg, RESOLVER_TEMPFAIL, NULL, 0, &e);
        return;
    }
    memcpy(copy, t, n * sizeof(*copy));
    n = targets_order(copy, n, max, &r->rng);
    cb(arg, RESOLVER_OK, copy, n, NULL);
    free(copy);
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
    free(lk->key);
    free(lk);
    /* The last lookup out turns off the lights after resolver_close(). */
    if (r->closing && !r->in_close && r->lookups == NULL) {
        free(r->servers);
        free(r);
    }
}

static void note_ttl(struct rlookup *lk, uint32_t ttl)
{
    if (ttl < lk->ttl)
        lk->ttl = ttl;
}

/* Answer the caller once; cache what is final. The lookup is freed when no
 * query of its own is still in flight. */
static void finish(struct rlookup *lk, int status, const struct resolver_target *t, size_t n,
                   const struct resolver_error *err)
{
    if (!lk->answered) {
        lk->answered = 1;
        if (status != RESOLVER_TEMPFAIL && !lk->r->closing)
            cache_put(lk->r, lk->key, lk->ttl, status, t, n, err);
        if (status == RESOLVER_OK)
            answer_ok(lk->r, lk->cb, lk->arg, t, n, lk->max_addrs);
        else
            lk->cb(lk->arg, status, NULL, 0, err);
    }
    if (lk->queries == 0)
        lookup_free(lk);
}

static void fail(struct rlookup *lk, int status, int code, const char *enh, const char *why)
{
    struct resolver_error e;

    set_err(&e, code, enh, "%s", why);
    finish(lk, status, NULL, 0, &e);
}

/* targets.c asks: is this address us, on the port this lookup delivers to? */
static int lookup_is_me(void *arg, const struct sockaddr_storage *addr)
{
    struct rlookup *lk = arg;

    return me_is_addr(lk->r->me, (const struct sockaddr *)addr, lk->port, lk->route_mx);
}

/* Every address lookup is in: targets.c prunes and orders. */
static void hosts_done(struct rlookup *lk)
{
    struct targets_host *th = NULL;
    struct resolver_target *t = NULL;
    struct resolver_error e;
    size_t n = 0, blame = SIZE_MAX;
    int rc;

    if (lk->r->closing) {
        fail(lk, RESOLVER_TEMPFAIL, 451, "4.4.3", "resolver shutting down");
        return;
    }
    th = calloc(lk->nhosts ? lk->nhosts : 1, sizeof(*th));
    if (th == NULL) {
        fail(lk, RESOLVER_TEMPFAIL, 451, "4.3.0", "out of memory");
        return;
    }
    for (size_t i = 0; i < lk->nhosts; i++) {
        const struct rhost *h = &lk->hosts[i];
        th[i].name = h->name;
        th[i].pref = h->pref;
        th[i].addrs = h->addrs;
        th[i].naddrs = h->naddrs;
        if (h->status == DNS_OK && h->naddrs > 0)
            th[i].lookup = TARGETS_FOUND;
        else if (h->status == DNS_NXDOMAIN || h->status == DNS_NODATA)
            th[i].lookup = TARGETS_ABSENT;
        else
            th[i].lookup = TARGETS_TEMP;
    }
    rc = targets_plan(th, lk->nhosts, lk->route_mx, lk->mypref, lookup_is_me, lk, lk->port,
                      lk->max_addrs, &t, &n, &blame);
    free(th);
    if (rc == TARGETS_OK) {
        /* A partial answer is not kept: the host that failed may be back
         * on the next attempt. */
        for (size_t i = 0; i < lk->nhosts; i++)
            if (lk->hosts[i].status != DNS_OK && lk->hosts[i].status != DNS_NXDOMAIN &&
                lk->hosts[i].status != DNS_NODATA)
                lk->ttl = 0;
        finish(lk, RESOLVER_OK, t, n, NULL);
    } else if (rc == TARGETS_LOOP) {
        /* RFC 5321 §5.1: nothing better than ourselves. Deferred, not
         * bounced: a DNS slip must not return a site's mail. */
        set_err(&e, 451, "4.4.6", "mail for %s loops back to myself", lk->domain);
        log_warn("%s", e.why);
        finish(lk, RESOLVER_TEMPFAIL, NULL, 0, &e);
    } else if (rc == TARGETS_NONE && blame < lk->nhosts) {
        const struct rhost *h = &lk->hosts[blame];
        if (lk->implicit && h->status == DNS_NXDOMAIN) {
            /* the domain's own NXDOMAIN: it does not exist */
            set_err(&e, 550, "5.4.4", "Host or domain name not found (%s)", h->why);
            finish(lk, RESOLVER_PERMFAIL, NULL, 0, &e);
        } else {
            set_err(&e, 451, "4.4.3", "%s",
                    h->why[0] ? h->why : "no address for the mail exchanger");
            finish(lk, RESOLVER_TEMPFAIL, NULL, 0, &e);
        }
    } else {
        fail(lk, RESOLVER_TEMPFAIL, 451, rc < 0 ? "4.3.0" : "4.4.3",
             rc < 0 ? "out of memory" : "no mail exchanger left to try");
    }
    free(t);
}

static void on_host_addr(void *arg, int status, const struct dns_addr *addrs, size_t n,
                         uint32_t ttl, const char *why)
{
    struct rhost *h = arg;
    struct rlookup *lk = h->lk;

    lk->queries--;
    h->status = status;
    snprintf(h->why, sizeof(h->why), "%s", why != NULL ? why : "");
    if (status == DNS_OK && n > 0) {
        h->addrs = calloc(n, sizeof(*h->addrs));
        if (h->addrs != NULL) {
            for (size_t i = 0; i < n; i++)
                h->addrs[i] = addrs[i].addr;
            h->naddrs = n;
        } else {
            h->status = DNS_ERR;
            snprintf(h->why, sizeof(h->why), "out of memory");
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
            snprintf(h->why, sizeof(h->why), "DNS lookup of A for %.253s could not be started",
                     h->name);
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

static void on_mx(void *arg, int status, const struct dns_mx *mx, size_t n, uint32_t ttl,
                  const char *why)
{
    struct rlookup *lk = arg;
    struct resolver_error e;
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
        /* the domain's own NXDOMAIN: the one DNS answer that bounces */
        set_err(&e, 550, "5.4.4", "Host or domain name not found (%s)", why);
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, &e);
        return;
    case DNS_NODATA:
        /* RFC 5321 §5.1: no MX records at all: the domain itself,
         * preference 0. Only here; an MX set whose hosts fail defers. */
        lk->implicit = 1;
        if (add_host(lk, lk->domain, 0) < 0) {
            fail(lk, RESOLVER_TEMPFAIL, 451, "4.3.0", "out of memory");
            return;
        }
        resolve_hosts(lk);
        return;
    default:
        fail(lk, RESOLVER_TEMPFAIL, 451, "4.4.3", why != NULL ? why : "DNS lookup failed");
        return;
    }
    /* RFC 7505 §3: "0 ." alone means the domain takes no mail. A null MX
     * among others is a misconfiguration; it is skipped like any host
     * that cannot take mail. */
    for (size_t i = 0; i < n; i++) {
        if (mx[i].host[0] == '\0')
            nnull++;
        else if (me_is_name(lk->r->me, mx[i].host) && mx[i].pref < lk->mypref)
            lk->mypref = mx[i].pref;
    }
    if (nnull == n) {
        /* RFC 7505 §4.2: 556 5.1.10 */
        set_err(&e, 556, "5.1.10", "Domain %s does not accept mail (null MX)", lk->domain);
        finish(lk, RESOLVER_PERMFAIL, NULL, 0, &e);
        return;
    }
    /* Hosts at or after our own preference are not even looked up
     * (targets.c drops them too, and those found by address). */
    for (size_t i = 0; i < n; i++) {
        if (mx[i].host[0] == '\0' || mx[i].pref >= lk->mypref)
            continue;
        if (lk->nhosts == RESOLVER_MAX_MX)
            break;
        if (add_host(lk, mx[i].host, mx[i].pref) < 0) {
            fail(lk, RESOLVER_TEMPFAIL, 451, "4.3.0", "out of memory");
            return;
        }
    }
    resolve_hosts(lk); /* none left: targets.c says loop */
}

int resolver_open(uv_loop_t *loop, const char *servers, const struct me *me, struct resolver **out,
                  char *err, size_t errlen)
{
    struct resolver *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL || (servers != NULL && (r->servers = strdup(servers)) == NULL)) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->loop = loop;
    r->me = me;
    if (getrandom(&r->rng, sizeof(r->rng), GRND_NONBLOCK) != (ssize_t)sizeof(r->rng))
        r->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32);
    if (r->rng == 0)
        r->rng = 0x9E3779B97F4A7C15ull;
    if (dns_open(loop, servers, &r->dns, err, errlen) != 0) {
        free(r->servers);
        free(r);
        return -1;
    }
    *out = r;
    return 0;
}

int resolver_set_servers(struct resolver *r, const char *servers, char *err, size_t errlen)
{
    struct dns *d = NULL;
    char *copy = NULL;

    if ((servers == NULL && r->servers == NULL) ||
        (servers != NULL && r->servers != NULL && strcmp(servers, r->servers) == 0))
        return 0;
    if (servers != NULL && (copy = strdup(servers)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (dns_open(r->loop, servers, &d, err, errlen) != 0) {
        free(copy);
        return -1;
    }
    /* Queries already asked finish with the servers they went to. */
    dns_retire(r->dns);
    r->dns = d;
    free(r->servers);
    r->servers = copy;
    cache_purge(r, 1);
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
    struct resolver_error e;
    size_t len = strlen(domain);
    size_t max_addrs = cfg->max_mx_addresses ? cfg->max_mx_addresses : 1;
    char name[256];

    if (dom == NULL)
        dom = config_delivery_domain(cfg, domain);
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0 || len > 253) {
        set_err(&e, 550, "5.1.2", "Host or domain name not found (not a domain name)");
        cb(arg, RESOLVER_PERMFAIL, NULL, 0, &e);
        return;
    }
    for (size_t i = 0; i < len; i++)
        name[i] = (char)tolower((unsigned char)domain[i]);
    name[len] = '\0';
    if (r->closing) {
        set_err(&e, 451, "4.4.3", "resolver shutting down");
        cb(arg, RESOLVER_TEMPFAIL, NULL, 0, &e);
        return;
    }
    lk = calloc(1, sizeof(*lk));
    if (lk == NULL || asprintf(&lk->key, "%s %s %u", name,
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
        int status = c->status;
        size_t n = c->n;
        e = c->err;
        free(lk->key);
        free(lk);
        if (n > 0 && t == NULL)
            goto nomem_nolk;
        if (n > 0)
            memcpy(t, c->targets, n * sizeof(*t));
        if (status == RESOLVER_OK)
            answer_ok(r, cb, arg, t, n, max_addrs);
        else
            cb(arg, status, NULL, 0, &e);
        free(t);
        return;
    }
    lk->r = r;
    lk->cb = cb;
    lk->arg = arg;
    memcpy(lk->domain, name, len + 1);
    lk->route_mx = dom->route_mx || dom->route_host == NULL;
    lk->port = dom->route_port;
    lk->mypref = ~0u;
    lk->max_addrs = max_addrs;
    lk->ttl = RESOLVER_TTL_MAX;
    lk->next = r->lookups;
    if (lk->next != NULL)
        lk->next->prevp = &lk->next;
    lk->prevp = &r->lookups;
    r->lookups = lk;

    if (!lk->route_mx) {
        /* route = host[:port]: no MX, no pruning by preference (RFC 5321
         * §5.1 applies to MX only); a route to ourselves is still refused. */
        if (add_host(lk, dom->route_host, 0) < 0) {
            fail(lk, RESOLVER_TEMPFAIL, 451, "4.3.0", "out of memory");
            return;
        }
        resolve_hosts(lk);
        return;
    }
    lk->queries++;
    if (dns_query_mx(r->dns, lk->domain, on_mx, lk) != 0) {
        lk->queries--;
        fail(lk, RESOLVER_TEMPFAIL, 451, "4.4.3", "DNS lookup could not be started");
    }
    return;
nomem:
    if (lk != NULL)
        free(lk);
nomem_nolk:
    set_err(&e, 451, "4.3.0", "out of memory");
    cb(arg, RESOLVER_TEMPFAIL, NULL, 0, &e);
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
    struct resolver_error e;

    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    r->in_close = 1;
    cache_purge(r, 1);
    dns_close(r->dns);
    set_err(&e, 451, "4.4.3", "resolver shutting down");
    /* dns_close is deferred when called from inside a DNS callback: answer
     * now anyway; the lookups are freed when their queries come back. */
    for (lk = r->lookups; lk != NULL; lk = next) {
        next = lk->next;
        if (!lk->answered) {
            lk->answered = 1;
            lk->cb(lk->arg, RESOLVER_TEMPFAIL, NULL, 0, &e);
        }
    }
    r->in_close = 0;
    if (r->lookups == NULL) {
        free(r->servers);
        free(r);
    }
}
