/*
 * etrn: ETRN (RFC 1985) for relayd. It turns the argument into relay domains
 * ("dom", "@dom" for the domain and its subdomains, "#queue" for a named
 * group), refuses what the client may not ask for (459), limits how often a
 * client may ask (etrn_rate), counts what is waiting with the store's reader
 * (so 253 carries the true number) and hands the domains to sched, which
 * joins a flush already running. It never delivers anything itself, and the
 * mail always goes to the domain's own destination, never to the asker.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conn.h"
#include "etrn.h"
#include "log.h"
#include "sched.h"
#include "server.h"
#include "smtpd.h"
#include "stats.h"
#include "store.h"

#define RATE_BUCKETS 256

struct rate_entry {
    struct rate_entry *next;
    char ip[64];
    double tokens;
    uint64_t last; /* uv_now ms */
};

struct etrn {
    struct server *srv;
    struct rate_entry *rates[RATE_BUCKETS];
    size_t nrates;
};

int etrn_open(struct server *srv, struct etrn **out)
{
    struct etrn *e = calloc(1, sizeof(*e));

    if (e == NULL)
        return -1;
    e->srv = srv;
    *out = e;
    return 0;
}

static void rates_clear(struct etrn *e)
{
    size_t i;

    for (i = 0; i < RATE_BUCKETS; i++) {
        while (e->rates[i] != NULL) {
            struct rate_entry *r = e->rates[i];
            e->rates[i] = r->next;
            free(r);
        }
    }
    e->nrates = 0;
}

void etrn_free(struct etrn *e)
{
    if (e == NULL)
        return;
    rates_clear(e);
    free(e);
}

/*
 * A token bucket per client address: etrn_rate tokens, refilled at that
 * many per etrn_rate_period. A site repeating ETRN until it gets 251 stays
 * well inside it; a flood does not.
 */
static int rate_allow(struct etrn *e, const char *ip)
{
    const struct config *cfg = e->srv->cfg;
    uint64_t now = uv_now(e->srv->loop);
    unsigned h = 5381;
    const char *p;
    struct rate_entry *r;
    double cap = (double)cfg->etrn_rate;

    if (cfg->etrn_rate == 0 || cfg->etrn_rate_period == 0)
        return 1;
    for (p = ip; *p != '\0'; p++)
        h = h * 33u + (unsigned char)*p;
    h %= RATE_BUCKETS;
    for (r = e->rates[h]; r != NULL; r = r->next)
        if (strcmp(r->ip, ip) == 0)
            break;
    if (r == NULL) {
        if (e->nrates > 100000)
            rates_clear(e); /* bounded memory: forget everyone at once */
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return 1;
        snprintf(r->ip, sizeof(r->ip), "%s", ip);
        r->tokens = cap;
        r->last = now;
        r->next = e->rates[h];
        e->rates[h] = r;
        e->nrates++;
    }
    r->tokens += (double)(now - r->last) * cap / (double)cfg->etrn_rate_period;
    if (r->tokens > cap)
        r->tokens = cap;
    r->last = now;
    if (r->tokens < 1.0)
        return 0;
    r->tokens -= 1.0;
    return 1;
}

/* One ETRN while the queue is counted. */
struct etrn_req {
    struct smtpd_session *s;
    char arg[SMTP_DOMAIN_MAX + 8];
    size_t pending;
    int failed;
    int64_t messages;
    char **flush;
    size_t nflush;
};

static void req_add_domain(struct etrn_req *q, const char *d)
{
    size_t i;
    char **nf;

    for (i = 0; i < q->nflush; i++)
        if (strcmp(q->flush[i], d) == 0)
            return;
    nf = realloc(q->flush, (q->nflush + 1) * sizeof(*nf));
    if (nf == NULL)
        return;
    q->flush = nf;
    if ((q->flush[q->nflush] = strdup(d)) != NULL)
        q->nflush++;
}

static void etrn_log(struct smtpd_session *s, const char *arg, int code, int64_t count,
                     const char *why)
{
    log_info("ETRN from %s: arg=<%s> result=%d count=%" PRId64 "%s%s", s->peer, arg, code, count,
             why != NULL ? " reason=" : "", why != NULL ? why : "");
}

static void req_finish(struct etrn_req *q)
{
    struct smtpd_session *s = q->s;
    struct server *srv = s->srv;
    size_t i;

    if (!s->closed) {
        if (q->failed) {
            smtpd_reply(s, 458, "4.3.0", "Unable to queue messages for node <%s>", q->arg);
            etrn_log(s, q->arg, 458, 0, "queue not readable");
        } else if (q->messages == 0) {
            smtpd_reply(s, 251, "2.0.0", "OK, no messages waiting for node <%s>", q->arg);
            etrn_log(s, q->arg, 251, 0, NULL);
        } else {
            smtpd_reply(s, 253, "2.0.0", "%" PRId64 " pending messages for node <%s> started",
                        q->messages, q->arg);
            etrn_log(s, q->arg, 253, q->messages, NULL);
        }
        smtpd_enter_state(s, SMTPD_READY);
    }
    /* the flush goes on even if the client has gone: it asked for it */
    if (!q->failed && srv->sched != NULL && !srv->stopping) {
        for (i = 0; i < q->nflush; i++) {
            if (srv->stats != NULL)
                stats_add(srv->stats, q->flush[i], STATS_ETRN, 1);
            sched_flush(srv->sched, q->flush[i], "ETRN");
            store_domain_event(srv->store, q->flush[i], STORE_EV_ETRN, (int64_t)time(NULL), NULL);
        }
    }
    for (i = 0; i < q->nflush; i++)
        free(q->flush[i]);
    free(q->flush);
    free(q);
    smtpd_async_done(s);
}

static void counted(struct store_count *c, int status, void *arg)
{
    struct etrn_req *q = arg;
    size_t i;

    if (status != 0 || c == NULL) {
        q->failed = 1;
    } else {
        q->messages += c->messages;
        for (i = 0; i < c->ndomains; i++)
            req_add_domain(q, c->domains[i]);
    }
    if (c != NULL)
        store_count_free(c);
    if (--q->pending == 0)
        req_finish(q);
}

static void refuse(struct smtpd_session *s, const char *arg, const char *why)
{
    smtpd_reply(s, 459, "4.7.1", "Node <%s> not allowed: %s", arg, why);
    etrn_log(s, arg, 459, 0, why);
}

/* May this client ETRN the relay domain d? (etrn_access, default anyone:
 * the mail goes to the domain's own server, never to the asker.) */
static int access_ok(const struct smtpd_session *s, const struct cfg_domain *d)
{
    if (d->netrn_access == 0)
        return 1;
    return config_net_match(d->etrn_access, d->netrn_access, conn_peer_sockaddr(s->conn));
}

/* Is d equal to or below parent (both normalised)? */
static int is_under(const char *d, const char *parent)
{
    size_t ld = strlen(d), lp = strlen(parent);

    if (ld == lp)
        return strcmp(d, parent) == 0;
    return ld > lp && d[ld - lp - 1] == '.' && strcmp(d + ld - lp, parent) == 0;
}

void etrn_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    struct server *srv = s->srv;
    const struct config *cfg = s->cfg;
    struct smtp_etrn_arg ea;
    struct etrn_req *q;
    char shown[SMTP_DOMAIN_MAX + 8];
    size_t i, n;

    s->n.etrn++;
    if (smtp_parse_etrn(cmd->arg, cmd->arg_len, &ea) != SMTP_PARSE_OK) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: ETRN domain | @domain | #queue");
        smtpd_protocol_error(s);
        return;
    }
    snprintf(shown, sizeof(shown), "%s%s",
             ea.kind == SMTP_ETRN_SUBDOMAINS ? "@"
             : ea.kind == SMTP_ETRN_QUEUE    ? "#"
                                             : "",
             ea.name);
    if (srv->stopping || srv->sched == NULL) {
        smtpd_reply(s, 458, "4.3.0", "Unable to queue messages for node <%s>", shown);
        etrn_log(s, shown, 458, 0, "shutting down");
        return;
    }
    /* per client as the connection limits count it: an IPv6 network, not each address */
    if (!rate_allow(srv->etrn, s->ipkey)) {
        smtpd_reply(s, 458, "4.7.0",
                    "Unable to queue messages for node <%s>: too many ETRN requests, try later",
                    shown);
        etrn_log(s, shown, 458, 0, "rate limit");
        return;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        smtpd_reply(s, 458, "4.3.0", "Unable to queue messages for node <%s>", shown);
        return;
    }
    q->s = s;
    snprintf(q->arg, sizeof(q->arg), "%s", shown);

    if (ea.kind == SMTP_ETRN_QUEUE) {
        const struct cfg_queue *cq = config_find_queue(cfg, ea.name);
        if (cq == NULL) {
            refuse(s, shown, "no such queue");
            free(q);
            return;
        }
        for (i = 0; i < cq->ndomains; i++) {
            const struct cfg_domain *d = config_find_domain(cfg, cq->domains[i]);
            if (d == NULL || !access_ok(s, d)) {
                refuse(s, shown, "not authorized for this client");
                free(q);
                return;
            }
        }
        n = cq->ndomains;
        q->pending = n;
        smtpd_enter_state(s, SMTPD_ETRN);
        s->etrn_pending = 1;
        for (i = 0; i < cq->ndomains; i++) {
            const struct cfg_domain *d = config_find_domain(cfg, cq->domains[i]);
            if (store_count(srv->store, cq->domains[i], d->subdomains, counted, q) != 0) {
                q->failed = 1;
                if (--q->pending == 0)
                    req_finish(q);
            }
        }
        return;
    }

    {
        /* "dom" must be ours (a [domain] or below one with subdomains);
         * "@dom" too, so "@com" cannot reach every customer at once */
        const struct cfg_domain *d = config_find_domain(cfg, ea.name);
        if (d == NULL) {
            refuse(s, shown,
                   ea.kind == SMTP_ETRN_SUBDOMAINS
                       ? "not a relay domain of ours (a pattern must name one)"
                       : "not a relay domain");
            free(q);
            return;
        }
        if (!access_ok(s, d)) {
            refuse(s, shown, "not authorized for this client");
            free(q);
            return;
        }
        if (ea.kind == SMTP_ETRN_SUBDOMAINS) {
            for (i = 0; i < cfg->ndomains; i++) {
                if (is_under(cfg->domains[i].name, ea.name) && !access_ok(s, &cfg->domains[i])) {
                    refuse(s, shown, "not authorized for this client");
                    free(q);
                    return;
                }
            }
        }
    }
    q->pending = 1;
    smtpd_enter_state(s, SMTPD_ETRN);
    s->etrn_pending = 1;
    if (store_count(srv->store, ea.name, ea.kind == SMTP_ETRN_SUBDOMAINS, counted, q) != 0) {
        q->failed = 1;
        q->pending = 0;
        req_finish(q);
    }
}
