/*
 * etrn: ETRN (RFC 1985) for relayd. It turns the argument into relay domains
 * ("dom", "@dom" for the domain and its subdomains, "#queue" for a named
 * group), refuses what the client may not ask for and flushes only the
 * domains it may (459; the decision is etrn_access.c's), limits how often a
 * client may ask (etrn_rate), counts what is waiting with the store's reader
 * (so 253 carries the true number) and hands the domains to sched, which
 * joins a flush already running. It never delivers anything itself, and the
 * mail always goes to the domain's own destination, never to the asker.
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conn.h"
#include "etrn.h"
#include "etrn_access.h"
#include "log.h"
#include "lru.h"
#include "sched.h"
#include "server.h"
#include "smtpd.h"
#include "stats.h"
#include "store.h"

/* One client's token bucket, in a table of at most etrn_rate_table_size
 * (lib/lru): when it is full the client seen least recently is forgotten,
 * and only that one (it comes back with a full allowance). */
struct rate_entry {
    struct lru_node node; /* key: ip */
    char ip[64];
    double tokens;
    uint64_t last; /* uv_now ms */
};

struct etrn {
    struct server *srv;
    struct lru rates;
};

int etrn_open(struct server *srv, struct etrn **out)
{
    struct etrn *e = calloc(1, sizeof(*e));

    if (e == NULL)
        return -1;
    if (lru_init(&e->rates, srv->cfg->etrn_rate_table_size) != 0) {
        free(e);
        return -1;
    }
    e->srv = srv;
    *out = e;
    return 0;
}

/* Forget the least recently seen client. 0 when the table was empty. */
static int rate_forget_one(struct etrn *e)
{
    struct lru_node *n = lru_victim(&e->rates, NULL, NULL);

    if (n == NULL)
        return 0;
    lru_remove(&e->rates, n);
    free(LRU_ENTRY(n, struct rate_entry, node));
    return 1;
}

void etrn_free(struct etrn *e)
{
    if (e == NULL)
        return;
    while (rate_forget_one(e))
        ;
    lru_fini(&e->rates);
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
    struct lru_node *n;
    struct rate_entry *r;
    double cap = (double)cfg->etrn_rate;

    if (cfg->etrn_rate == 0 || cfg->etrn_rate_period == 0)
        return 1;
    n = lru_get(&e->rates, ip);
    r = n != NULL ? LRU_ENTRY(n, struct rate_entry, node) : NULL;
    if (r == NULL) {
        lru_set_cap(&e->rates, cfg->etrn_rate_table_size);
        while (lru_full(&e->rates) && rate_forget_one(e))
            ;
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return 1;
        snprintf(r->ip, sizeof(r->ip), "%s", ip);
        r->tokens = cap;
        r->last = now;
        lru_add(&e->rates, &r->node, r->ip);
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

/* One ETRN while the queue is counted. cfg and peer are what the counted
 * domains are checked against: the session's snapshot and address. */
struct etrn_req {
    struct smtpd_session *s;
    const struct config *cfg;
    struct sockaddr_storage peer;
    char account[CREDENTIALS_NAME_MAX + 1]; /* after AUTH, else "" */
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
    log_info("ETRN from %s: arg=<%s> result=%d count=%" PRId64 "%s%s%s%s", s->peer, arg, code,
             count, s->auth_account[0] ? " sasl_username=" : "", s->auth_account,
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
            sched_etrn(srv->sched, q->flush[i]);
            store_domain_event(srv->store, q->flush[i], STORE_EV_ETRN, (int64_t)time(NULL), NULL);
        }
    }
    for (i = 0; i < q->nflush; i++)
        free(q->flush[i]);
    free(q->flush);
    free(q);
    smtpd_async_done(s);
}

/* One scope counted: flush the queued domains the client may flush and
 * count only their messages (etrn_access: the same check whichever form of
 * ETRN covered them). When every domain passes, the scope's own count
 * holds (a message for two of them counts once). */
static void counted(struct store_count *c, int status, void *arg)
{
    struct etrn_req *q = arg;
    const struct etrn_client who = {(const struct sockaddr *)&q->peer,
                                    q->account[0] != '\0' ? q->account : NULL};
    int64_t mine = 0;
    size_t i, n = 0;

    if (status != 0 || c == NULL) {
        q->failed = 1;
    } else {
        for (i = 0; i < c->ndomains; i++) {
            if (!etrn_access_domain(q->cfg, c->domains[i], &who))
                continue;
            req_add_domain(q, c->domains[i]);
            mine += c->domain_messages[i];
            n++;
        }
        q->messages += n == c->ndomains ? c->messages : mine;
    }
    if (c != NULL)
        store_count_free(c);
    if (--q->pending == 0)
        req_finish(q);
}

/* RFC 1985 §5: 459 "Node %s not allowed: <reason>". One text whether the
 * name is not ours, no such queue or not this client's, so that probing
 * with ETRN does not list the relay's customers; the log says which. */
static void refuse(struct smtpd_session *s, const char *arg, const char *why)
{
    smtpd_reply(s, 459, "4.7.1", "Node <%s> not allowed: not a relay domain this client may flush",
                arg);
    etrn_log(s, arg, 459, 0, why);
}

/* route = odmr (RFC 2645): the domain's mail is only collected with ATRN;
 * no connection of ours could deliver it, so ETRN could never be done. */
static int collected_by_atrn(const struct config *cfg, const struct smtp_etrn_arg *ea)
{
    const struct cfg_queue *cq;
    const struct cfg_domain *d;
    size_t i;

    if (ea->kind != SMTP_ETRN_QUEUE)
        return (d = config_find_domain(cfg, ea->name)) != NULL && d->route_odmr;
    cq = config_find_queue(cfg, ea->name);
    for (i = 0; cq != NULL && i < cq->ndomains; i++)
        if ((d = config_find_domain(cfg, cq->domains[i])) != NULL && d->route_odmr)
            return 1;
    return 0;
}

void etrn_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    struct server *srv = s->srv;
    const struct config *cfg = s->cfg;
    struct smtp_etrn_arg ea;
    const struct cfg_queue *cq;
    const struct sockaddr *peer;
    enum etrn_access_verdict verdict;
    struct etrn_client who;
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
    who.peer = conn_peer_sockaddr(s->conn);
    who.account = s->auth_account[0] != '\0' ? s->auth_account : NULL;
    verdict = etrn_access_check(cfg, ea.kind, ea.name, &who);
    if (verdict == ETRN_ACCESS_AUTH_REQUIRED) {
        /* RFC 4954 §6; the same reply whatever the name (with etrn_access =
         * auth globally, even for one that is not ours) */
        smtpd_reply(s, 530, "5.7.0", "Authentication required");
        etrn_log(s, shown, 530, 0, etrn_access_reason(verdict));
        return;
    }
    if (verdict != ETRN_ACCESS_OK) {
        refuse(s, shown, etrn_access_reason(verdict));
        return;
    }
    if (collected_by_atrn(cfg, &ea)) {
        smtpd_reply(s, 459, "4.7.1",
                    "Node <%s> not allowed: its mail is collected with ATRN (RFC 2645), use ATRN",
                    shown);
        etrn_log(s, shown, 459, 0, "route = odmr");
        return;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        smtpd_reply(s, 458, "4.3.0", "Unable to queue messages for node <%s>", shown);
        return;
    }
    q->s = s;
    q->cfg = s->cfg; /* the session outlives q (smtpd_async_done) */
    peer = conn_peer_sockaddr(s->conn);
    if (peer != NULL)
        memcpy(&q->peer, peer,
               peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in));
    snprintf(q->arg, sizeof(q->arg), "%s", shown);
    snprintf(q->account, sizeof(q->account), "%s", s->auth_account);

    /* The scopes the argument covers: "dom" alone, "@dom" with everything
     * below it, each member of a queue as its relay domain says. */
    cq = ea.kind == SMTP_ETRN_QUEUE ? config_find_queue(cfg, ea.name) : NULL;
    n = cq != NULL ? cq->ndomains : 1;
    q->pending = n + 1; /* held until every count is asked for */
    smtpd_enter_state(s, SMTPD_ETRN);
    s->etrn_pending = 1;
    for (i = 0; i < n; i++) {
        const char *name = cq != NULL ? cq->domains[i] : ea.name;
        const struct cfg_domain *d = config_find_domain(cfg, name);
        int sub = cq != NULL ? d != NULL && d->subdomains : ea.kind == SMTP_ETRN_SUBDOMAINS;

        if (d == NULL || store_count(srv->store, name, sub, counted, q) != 0) {
            if (d != NULL)
                q->failed = 1;
            q->pending--;
        }
    }
    if (--q->pending == 0)
        req_finish(q);
}
