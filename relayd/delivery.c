/*
 * delivery: relayd's outbound SMTP. A run delivers one recipient domain's
 * queued mail; runs whose domains share a next hop (the same route host, or
 * the same MX domain) share that next hop's connections, at most
 * max_site_connections of them, and every connection sends message after
 * message (connection reuse) until no run of its next hop has work left.
 * Messages come from the store in batches (reader thread); outcomes go back
 * in batches (writer thread's group commit), and a run reports done only
 * once they are committed. A 5xx is bounced (the DSN committed) before the
 * recipient is removed, so a crash can repeat a delivery, never lose one.
 * An ATRN turn (RFC 2645) is a next hop whose one connection the customer
 * opened: never resolved, never reopened, and a pull adds no backoff.
 * It does not decide when to run (sched.c) nor build DSNs (bounce.c).
 */
#define LOG_SERVICE "smtp" /* log lines are tagged relayd/smtp */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounce.h"
#include "config.h"
#include "delivery.h"
#include "retry.h"
#include "dsn.h"
#include "log.h"
#include "resolver.h"
#include "server.h"
#include "smtp_client.h"
#include "stats.h"
#include "store.h"
#include "tls_policy.h"

#define FETCH_BATCH  100 /* messages per store_fetch */
#define UPDATE_FLUSH 256 /* outcomes per store_update */

/* Memory per run is bounded in bytes, not messages (issue 7): a fetch
 * brings envelopes, and bodies only up to INLINE_MAX bytes each and
 * INLINE_TOTAL in all (a run holds at most two fetches); every other body
 * streams from the queue to the socket in pieces of at most the client's
 * 256 KiB, each read in a short read transaction of its own, the next only
 * once the previous one has reached the kernel. A streamed message that
 * is bounced has its head read by bounce.c, never its whole body. */
#define INLINE_MAX   (64 * 1024)
#define INLINE_TOTAL (512 * 1024)

struct dl_batch {
    struct store_batch *b;
    size_t left; /* messages not finished yet */
};

struct dl_item {
    struct store_dmsg *m;
    struct dl_batch *owner;
};

struct dl_nexthop;

struct dl_run {
    struct dl_run *next; /* in the next hop's FIFO */
    struct delivery *dl;
    struct dl_nexthop *nh;
    char *domain;
    enum cfg_tls tls; /* the domain's policy: which connections may carry its mail */
    int64_t due_before;
    int64_t after_id; /* fetch cursor */
    struct dl_item *items;
    size_t head, nitems, cap;
    int fetching;
    int exhausted;     /* nothing more to fetch */
    unsigned inflight; /* messages taken and not finished */
    struct store_update *upd;
    char **upd_text; /* replies owned for the updates */
    size_t nupd, updcap;
    unsigned updating; /* store_update calls outstanding */
    /* The next hop could not be resolved (RESOLVER_PERMFAIL: bounce each
     * recipient; RESOLVER_TEMPFAIL: defer each, with the reason, so
     * etrnctl queue shows why): the run only walks its queue. */
    int unroutable;
    struct resolver_error route_err;
    int turn; /* part of an ATRN turn: a 4xx keeps the next attempt */
    struct delivery_result res;
    delivery_done_cb done;
    void *arg;
};

struct dl_conn {
    struct dl_conn *next, *prev;
    struct dl_nexthop *nh;
    struct smtp_client *cl;
    size_t target;                    /* index into nh->targets */
    enum cfg_tls policy;              /* what it was opened for (the run that asked for it) */
    const struct tls_ctx *verify_ctx; /* tls = verify: the CAs it was verified with */
    int clear_retry; /* tls = may: the one retry in clear after a failed handshake */
    int ready;
    int busy;    /* a message is being sent */
    int waiting; /* ready, waiting for a fetch */
    int setup_failed;
    int setup_tls_failed; /* the TLS policy could not be met (SMTP_CLIENT_ERR_TLS) */
    int body_reading;     /* a store_read_body for the message in flight is out */
    int orphan;           /* closed while body_reading: body_read frees it */
    int gone;             /* the message in flight left the queue mid-transfer */
    char setup_why[700];
    /* for delays=a/b/c/d (ms, uv_now): when it was opened, when it was
     * ready to send, when the message in flight was handed over; setup is
     * charged to the first message only, as Postfix does */
    uint64_t t_open, t_ready, t_send;
    int setup_charged;
    struct dl_run *run;
    struct dl_item item;
    struct smtp_client_msg msg;
    struct smtp_client_rcpt *rcpts;
    size_t rcap;
};

struct dl_nexthop {
    struct dl_nexthop *next;
    struct delivery *dl;
    char key[300];
    char *lookup_domain; /* the domain the lookup is made for */
    struct resolver_target *targets;
    size_t ntargets;
    unsigned char *failed; /* per target: could not be reached in this run */
    int resolved, resolving;
    int up; /* a connection got ready since the last failure */
    unsigned nconns;
    unsigned limit;
    struct dl_run *runs; /* FIFO */
    struct dl_conn *conns;
    /* an ATRN turn: its connection came from the customer (delivery_turn) */
    int turn;
    delivery_turn_cb turn_over;
    void *turn_arg;
    struct delivery_result turn_total;
};

struct delivery {
    struct server *srv;
    struct dl_nexthop *hops;
    int stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

static void run_check(struct dl_run *run);
static void nh_kick(struct dl_nexthop *nh);
static void conn_take_work(struct dl_conn *dc);
static void turn_conn_closed(struct dl_conn *dc);

static int64_t now_unix(void)
{
    return (int64_t)time(NULL);
}

/* ---- next hops ------------------------------------------------------------------- */

static void nh_key(const struct cfg_domain *dom, const char *domain, char *out, size_t outlen)
{
    if (dom->route_host != NULL)
        snprintf(out, outlen, "[%s]:%u", dom->route_host, dom->route_port);
    else
        snprintf(out, outlen, "mx:%s:%u", domain, dom->route_port);
}

static struct dl_nexthop *nh_get(struct delivery *dl, const char *domain)
{
    const struct cfg_domain *dom = config_delivery_domain(dl->srv->cfg, domain);
    char key[300];
    struct dl_nexthop *nh;

    nh_key(dom, domain, key, sizeof(key));
    for (nh = dl->hops; nh != NULL; nh = nh->next)
        if (strcmp(nh->key, key) == 0)
            return nh;
    nh = calloc(1, sizeof(*nh));
    if (nh == NULL)
        return NULL;
    nh->lookup_domain = strdup(domain);
    if (nh->lookup_domain == NULL) {
        free(nh);
        return NULL;
    }
    nh->dl = dl;
    snprintf(nh->key, sizeof(nh->key), "%s", key);
    nh->limit = dom->max_site_connections ? dom->max_site_connections : 1;
    nh->next = dl->hops;
    dl->hops = nh;
    return nh;
}

static void delivery_check_stopped(struct delivery *dl)
{
    void (*cb)(void *);

    if (!dl->stopping || dl->hops != NULL || dl->stop_cb == NULL)
        return;
    cb = dl->stop_cb;
    dl->stop_cb = NULL;
    cb(dl->stop_arg);
}

/* Free a next hop nobody uses any more. */
static void nh_maybe_free(struct dl_nexthop *nh)
{
    struct delivery *dl = nh->dl;
    struct dl_nexthop **pp;

    if (nh->runs != NULL || nh->conns != NULL || nh->resolving)
        return;
    for (pp = &dl->hops; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == nh) {
            *pp = nh->next;
            break;
        }
    }
    free(nh->targets);
    free(nh->failed);
    free(nh->lookup_domain);
    if (nh->turn) {
        delivery_turn_cb over = nh->turn_over;
        void *arg = nh->turn_arg;
        struct delivery_result total = nh->turn_total;
        free(nh);
        over(arg, &total);
    } else {
        free(nh);
    }
    delivery_check_stopped(dl);
}

/* Messages run could still hand to a connection. A run whose fetch is out
 * counts when it comes back (fetch_done kicks the next hop): no connection
 * is opened to a site only to find that there is nothing to send. */
static size_t run_work(const struct dl_run *r)
{
    if (r->unroutable)
        return 0;
    return r->nitems - r->head + (!r->exhausted && !r->fetching ? 1 : 0);
}

/* Messages some run of nh could still hand to a connection. */
static size_t nh_work(const struct dl_nexthop *nh)
{
    const struct dl_run *r;
    size_t n = 0;

    for (r = nh->runs; r != NULL; r = r->next)
        n += run_work(r);
    return n;
}

/* ---- TLS policy per domain ----------------------------------------------------------
 * Domains whose route names the same host share its connections, but each
 * keeps its own tls policy: a connection carries a run's mail only when
 * what it achieved satisfies that run's domain (tls_policy.c), whichever
 * domain opened it and in whatever order the runs came. A next hop is one
 * host name, so the name verified is the same for every domain on it; the
 * CAs are those of now (tls_ca_file is read again on SIGHUP). */

static void conn_tls_state(const struct dl_conn *dc, struct tls_policy_conn *out)
{
    out->opened_for = dc->policy;
    out->ready = dc->ready;
    out->tls = dc->cl != NULL && smtp_client_tls_active(dc->cl);
    out->verified_now =
        dc->verify_ctx != NULL && dc->verify_ctx == dc->nh->dl->srv->tls_client_verify;
    out->clear_retry = dc->clear_retry;
}

/* May ready dc carry run's mail? */
static int conn_serves(const struct dl_conn *dc, const struct dl_run *run)
{
    struct tls_policy_conn t;

    conn_tls_state(dc, &t);
    return tls_policy_satisfied(run->tls, &t);
}

/* Could dc carry run's mail, now or once it is ready? */
static int conn_may_serve(const struct dl_conn *dc, const struct dl_run *run)
{
    struct tls_policy_conn t;

    conn_tls_state(dc, &t);
    return tls_policy_may_satisfy(run->tls, &t);
}

/* The first run with work that no open or opening connection may serve
 * (its domain asks for another tls policy), or NULL. */
static struct dl_run *nh_unserved_run(struct dl_nexthop *nh)
{
    struct dl_run *r;
    struct dl_conn *dc;

    for (r = nh->runs; r != NULL; r = r->next) {
        if (run_work(r) == 0)
            continue;
        for (dc = nh->conns; dc != NULL; dc = dc->next)
            if (dc->cl != NULL && conn_may_serve(dc, r))
                break;
        if (dc == NULL)
            return r;
    }
    return NULL;
}

/* The run a new connection should be opened for: the first with work that
 * no connection can serve, else the first with work. */
static struct dl_run *nh_run_to_open_for(struct dl_nexthop *nh)
{
    struct dl_run *r = nh_unserved_run(nh);

    for (r = r != NULL ? r : nh->runs; r != NULL; r = r->next)
        if (run_work(r) > 0)
            return r;
    return NULL;
}

/* ---- outcomes -------------------------------------------------------------------- */

static void run_updated(int status, void *arg)
{
    struct dl_run *run = arg;
    struct dl_nexthop *nh = run->nh;

    if (status != 0)
        log_warn("%s: could not record delivery results in the queue", run->domain);
    run->updating--;
    run_check(run);
    nh_maybe_free(nh);
}

static void run_flush_updates(struct dl_run *run)
{
    size_t i;

    if (run->nupd == 0)
        return;
    if (store_update(run->dl->srv->store, run->upd, run->nupd, run_updated, run) == 0)
        run->updating++;
    else
        log_warn("%s: could not record delivery results in the queue", run->domain);
    for (i = 0; i < run->nupd; i++)
        free(run->upd_text[i]);
    run->nupd = 0;
}

static void run_add_update(struct dl_run *run, const struct store_drcpt *r, int64_t msg_id,
                           enum store_outcome outcome, int64_t next_attempt, const char *reply)
{
    struct store_update *u;

    if (run->nupd == run->updcap) {
        size_t cap = run->updcap ? run->updcap * 2 : 64;
        struct store_update *nu = realloc(run->upd, cap * sizeof(*nu));
        char **nt;
        if (nu == NULL)
            return; /* the recipient stays queued: delivered twice at worst */
        run->upd = nu;
        nt = realloc(run->upd_text, cap * sizeof(*nt));
        if (nt == NULL)
            return;
        run->upd_text = nt;
        run->updcap = cap;
    }
    u = &run->upd[run->nupd];
    u->rcpt_id = r->id;
    u->msg_id = msg_id;
    u->outcome = outcome;
    u->next_attempt = next_attempt;
    run->upd_text[run->nupd] = reply != NULL ? strdup(reply) : NULL;
    u->reply = run->upd_text[run->nupd];
    run->nupd++;
    if (run->nupd >= UPDATE_FLUSH)
        run_flush_updates(run);
}

static void item_release(struct dl_run *run, struct dl_item *it)
{
    if (it->owner != NULL && --it->owner->left == 0) {
        store_batch_free(it->owner->b);
        free(it->owner);
    }
    it->owner = NULL;
    it->m = NULL;
}

/* Exponential backoff for one recipient, from min_backoff to max_backoff. */
static int64_t retry_at(const struct config *cfg, int attempts)
{
    return now_unix() +
           (int64_t)(retry_rcpt_delay(attempts, cfg->min_backoff, cfg->max_backoff) / 1000);
}

/* Seconds with one decimal under 10 and whole above, as Postfix prints
 * delay= and each part of delays=. */
static void fmt_secs(double s, char *out, size_t len)
{
    if (s < 0)
        s = 0;
    if (s < 10)
        snprintf(out, len, "%.2g", s < 0.01 ? 0 : s);
    else
        snprintf(out, len, "%.0f", s);
}

/* One line per recipient and attempt, in Postfix's shape (pflogsumm reads
 * it): delay is since arrival; delays are a = before the queue (0: the
 * message is stored before the client gets its 250), b = waiting in the
 * queue, c = connection setup (DNS, greeting, EHLO, TLS; only for the
 * first message of a connection), d = the transaction. */
static void log_outcome(const struct dl_conn *dc, const struct store_dmsg *m,
                        const struct store_drcpt *r, const char *relay,
                        const struct smtp_client_reply *rep, const char *status)
{
    uint64_t now = uv_now(dc->nh->dl->srv->loop);
    double total = (double)(now_unix() - m->arrival);
    double c = dc->setup_charged ? 0 : (double)(dc->t_ready - dc->t_open) / 1000.0;
    double d = (double)(now - dc->t_send) / 1000.0;
    double b = total - c - d;
    char dsn[16], sb[16], sc[16], sd[16], st[16];

    dsn_status_from_reply(rep->code, rep->enh, dsn);
    fmt_secs(b, sb, sizeof(sb));
    fmt_secs(c, sc, sizeof(sc));
    fmt_secs(d, sd, sizeof(sd));
    fmt_secs(total, st, sizeof(st));
    log_emit("smtp", LOGL_INFO,
             "%s: to=<%s>, relay=%s, delay=%s, delays=0/%s/%s/%s, dsn=%s, status=%s (%d %s%s%s)",
             m->queue_id, r->address, relay, st, sb, sc, sd, dsn, status, rep->code, rep->enh,
             rep->enh[0] ? " " : "", rep->text);
}

static void count(struct dl_run *run, const struct store_drcpt *r, enum stats_counter c)
{
    if (run->dl->srv->stats != NULL)
        stats_add(run->dl->srv->stats, r->domain != NULL ? r->domain : run->domain, c, 1);
}

/* A failed recipient whose DSN waits for the "relayed" one of the same
 * message: the reply is copied, the client's is reused by the next message. */
struct dl_note {
    const struct store_drcpt *rcpt;
    struct smtp_client_reply rep;
};

/* What is left of a message after its DSN was queued (or failed): the
 * recipients it reports, and the failures to bounce after a "relayed" DSN
 * (one DSN per kind, as Postfix sends them). */
struct dl_bounce {
    struct dl_run *run;
    struct dl_item item;
    enum dsn_kind kind;
    size_t n;
    const struct store_drcpt **rcpts;
    struct dl_note *later;
    size_t nlater;
    char relay[320];
};

static void bounce_committed(void *arg, int status);

/* Send the failures kept for after the "relayed" DSN. 0, or < 0 when
 * none was sent (b unchanged). */
static int bounce_later(struct dl_bounce *b)
{
    struct bounce_rcpt *br = calloc(b->nlater, sizeof(*br));
    const struct store_drcpt **rcpts = calloc(b->nlater, sizeof(*rcpts));
    size_t i;
    int rc = UV_ENOMEM;

    if (br == NULL || rcpts == NULL)
        goto done;
    for (i = 0; i < b->nlater; i++) {
        rcpts[i] = b->later[i].rcpt;
        br[i].rcpt = b->later[i].rcpt;
        br[i].code = b->later[i].rep.code;
        br[i].enh = b->later[i].rep.enh;
        br[i].text = b->later[i].rep.text;
        br[i].remote_mta = b->relay;
    }
    free(b->rcpts);
    b->rcpts = rcpts;
    rcpts = NULL;
    b->n = b->nlater;
    b->nlater = 0;
    b->kind = DSN_FAILURE;
    /* bounce.c copies br when it reads the head, else reads it in the call */
    rc = bounce_send(b->run->dl->srv, b->item.m, br, b->n, DSN_FAILURE, bounce_committed, b);
done:
    free(br);
    free(rcpts);
    return rc;
}

static void bounce_finish(struct dl_bounce *b, int status)
{
    struct dl_run *run = b->run;
    size_t i;

    for (i = 0; i < b->n; i++) {
        if (b->kind == DSN_RELAYED) /* delivered whatever became of the notice */
            run_add_update(run, b->rcpts[i], b->item.m->id, STORE_DELIVERED, 0, NULL);
        else if (status == 0)
            run_add_update(run, b->rcpts[i], b->item.m->id, STORE_FAILED, 0, NULL);
        else /* no DSN on disk: keep the recipient rather than lose the news */
            run_add_update(run, b->rcpts[i], b->item.m->id, STORE_DEFERRED,
                           retry_at(run->dl->srv->cfg, b->rcpts[i]->attempts), "bounce failed");
    }
    if (b->nlater > 0) {
        if (bounce_later(b) == 0)
            return;
        for (i = 0; i < b->nlater; i++) /* kept, and bounced on a later attempt */
            run_add_update(run, b->later[i].rcpt, b->item.m->id, STORE_DEFERRED,
                           retry_at(run->dl->srv->cfg, b->later[i].rcpt->attempts),
                           "bounce failed");
    }
    item_release(run, &b->item);
    run->inflight--;
    free(b->rcpts);
    free(b->later);
    free(b);
    run_flush_updates(run);
    run_check(run);
}

static void bounce_committed(void *arg, int status)
{
    struct dl_bounce *b = arg;
    struct dl_nexthop *nh = b->run->nh;

    bounce_finish(b, status);
    nh_maybe_free(nh);
}

/* Queue a DSN of kind for the recipients br of an item - failed ones, or
 * relayed ones (then the failures in later follow in a DSN of their own)
 * - and finish the item once it is committed. The item must not be
 * released by the caller. */
static void bounce_item(struct dl_run *run, struct dl_item *it, struct bounce_rcpt *br, size_t n,
                        enum dsn_kind kind, const struct bounce_rcpt *later, size_t nlater,
                        const char *relay)
{
    struct dl_bounce *b = calloc(1, sizeof(*b));
    size_t i;

    if (b == NULL || (b->rcpts = calloc(n, sizeof(*b->rcpts))) == NULL ||
        (nlater > 0 && (b->later = calloc(nlater, sizeof(*b->later))) == NULL)) {
        if (b != NULL)
            free(b->rcpts);
        free(b);
        item_release(run, it);
        run->inflight--;
        return;
    }
    b->run = run;
    b->item = *it;
    b->kind = kind;
    b->n = n;
    for (i = 0; i < n; i++)
        b->rcpts[i] = br[i].rcpt;
    for (i = 0; i < nlater; i++) {
        b->later[i].rcpt = later[i].rcpt;
        b->later[i].rep.code = later[i].code;
        snprintf(b->later[i].rep.enh, sizeof(b->later[i].rep.enh), "%s",
                 later[i].enh != NULL ? later[i].enh : "");
        snprintf(b->later[i].rep.text, sizeof(b->later[i].rep.text), "%s",
                 later[i].text != NULL ? later[i].text : "");
    }
    b->nlater = nlater;
    snprintf(b->relay, sizeof(b->relay), "%s", relay != NULL ? relay : "");
    /* a streamed body (it->m->body NULL) has its head read by bounce.c:
     * the item, and so the message, lives until bounce_committed */
    if (bounce_send(run->dl->srv, it->m, br, n, kind, bounce_committed, b) != 0)
        bounce_finish(b, -1);
}

/* ---- runs ------------------------------------------------------------------------ */

static void run_finish(struct dl_run *run)
{
    struct dl_nexthop *nh = run->nh;
    struct dl_run **pp;
    delivery_done_cb done = run->done;
    void *arg = run->arg;
    struct delivery_result res = run->res;

    if (nh->turn) {
        nh->turn_total.delivered += res.delivered;
        nh->turn_total.deferred += res.deferred;
        nh->turn_total.bounced += res.bounced;
        if (res.why[0] != '\0')
            memcpy(nh->turn_total.why, res.why, sizeof(res.why));
    }
    for (pp = &nh->runs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == run) {
            *pp = run->next;
            break;
        }
    }
    free(run->items);
    free(run->upd);
    free(run->upd_text);
    free(run->domain);
    free(run);
    done(arg, &res);
    /* idle connections of this next hop may have nothing left to do */
    {
        struct dl_conn *dc, *next;
        for (dc = nh->conns; dc != NULL; dc = next) {
            next = dc->next;
            if (dc->ready && !dc->busy)
                conn_take_work(dc);
        }
    }
    /* the entry point that got us here frees nh if it is unused now */
}

static void run_check(struct dl_run *run)
{
    if (!run->exhausted || run->head < run->nitems || run->inflight > 0 || run->fetching)
        return;
    run_flush_updates(run);
    if (run->updating > 0)
        return;
    run_finish(run);
}

/* Drop what was fetched and not started: it stays queued for a later run. */
/* What is left of the run's batch is deferred, each recipient logged as
 * Postfix logs a deferral (relay=none) and given reply as its last reason,
 * so the queue and the log both say why mail waits. */
static void run_defer_rest(struct dl_run *run, const char *enh, const char *reply, const char *why)
{
    const struct config *cfg = run->dl->srv->cfg;

    while (run->head < run->nitems) {
        struct dl_item it = run->items[run->head++];
        char st[16];
        fmt_secs((double)(now_unix() - it.m->arrival), st, sizeof(st));
        for (size_t i = 0; i < it.m->nrcpts; i++) {
            const struct store_drcpt *r = &it.m->rcpts[i];
            log_emit("smtp", LOGL_INFO,
                     "%s: to=<%s>, relay=none, delay=%s, delays=0/%s/0/0, dsn=%s, "
                     "status=deferred (%s)",
                     it.m->queue_id, r->address, st, st, enh, why);
            run_add_update(run, r, it.m->id, STORE_DEFERRED, retry_at(cfg, r->attempts), reply);
            count(run, r, STATS_DEFERRED);
        }
        run->res.deferred += it.m->nrcpts;
        item_release(run, &it);
    }
    run_flush_updates(run);
}

/* The attempt reached no server: the recipients it covered (the fetched
 * batch) are deferred with the connection's reason. */
static void run_defer_unreachable(struct dl_run *run, const char *why)
{
    char dsn[16] = "4.4.1", text[400];

    /* a reason that carries its own enhanced code keeps it */
    if (why[0] == '4' && why[1] == '.' && strcspn(why, " ") < sizeof(dsn))
        snprintf(dsn, sizeof(dsn), "%.*s", (int)strcspn(why, " "), why);
    snprintf(text, sizeof(text), "%.390s", why);
    run_defer_rest(run, dsn, text, text);
}

static void run_abort(struct dl_run *run, int site_down, const char *why)
{
    run->exhausted = 1;
    if (site_down)
        run_defer_unreachable(run, why);
    while (run->head < run->nitems)
        item_release(run, &run->items[run->head++]);
    if (site_down) {
        run->res.site_down = 1;
        snprintf(run->res.why, sizeof(run->res.why), "%.250s", why);
    }
    run_check(run);
}

/* A next hop that cannot be resolved: each recipient is deferred with the
 * resolver's reason (4.4.3 DNS trouble, 4.4.6 only ourselves left), so
 * nothing is lost and etrnctl queue says why. */
static void run_defer_items(struct dl_run *run)
{
    const struct resolver_error *e = &run->route_err;
    char text[sizeof(e->why) + 32];

    snprintf(text, sizeof(text), "%d %s %s", e->code, e->enh, e->why);
    run_defer_rest(run, e->enh, text, e->why);
}

static void run_bounce_items(struct dl_run *run)
{
    const struct resolver_error *e = &run->route_err;

    if (run->unroutable == RESOLVER_TEMPFAIL) {
        run_defer_items(run);
        return;
    }
    while (run->head < run->nitems) {
        struct dl_item it = run->items[run->head++];
        struct bounce_rcpt *br = calloc(it.m->nrcpts ? it.m->nrcpts : 1, sizeof(*br));
        size_t i;

        run->inflight++;
        if (br == NULL) {
            item_release(run, &it);
            run->inflight--;
            continue;
        }
        for (i = 0; i < it.m->nrcpts; i++) {
            br[i].rcpt = &it.m->rcpts[i];
            br[i].code = e->code;
            br[i].enh = e->enh;
            br[i].text = e->why;
            log_info("%s: to=<%s>, relay=none, delay=%" PRId64 ", delays=0/%" PRId64
                     "/0/0, dsn=%s, status=bounced (%s)",
                     it.m->queue_id, it.m->rcpts[i].address, now_unix() - it.m->arrival,
                     now_unix() - it.m->arrival, e->enh, e->why);
        }
        run->res.bounced += it.m->nrcpts;
        for (i = 0; i < it.m->nrcpts; i++)
            count(run, &it.m->rcpts[i], STATS_BOUNCED);
        bounce_item(run, &it, br, it.m->nrcpts, DSN_FAILURE, NULL, 0, NULL);
        free(br);
    }
}

static void run_fetch(struct dl_run *run);

static void fetch_done_inner(struct store_batch *b, int status, struct dl_run *run)
{
    struct dl_nexthop *nh = run->nh;
    struct dl_batch *owner = NULL;
    size_t i;
    int late_defer;

    run->fetching = 0;
    /* The site went down while this fetch was out (another run on the same
     * next hop found it unreachable): the batch is the attempt's, so its
     * recipients are deferred with the reason like any the attempt covered,
     * rather than left without one. */
    late_defer = run->exhausted && run->res.site_down && status == 0 && b != NULL && b->n > 0 &&
                 !run->dl->stopping;
    if (!late_defer &&
        (status != 0 || b == NULL || b->n == 0 || run->dl->stopping || run->exhausted)) {
        if (status != 0)
            snprintf(run->res.why, sizeof(run->res.why), "cannot read the queue");
        if (b != NULL)
            store_batch_free(b);
        run->exhausted = 1;
        run_check(run);
        return;
    }
    run->after_id = b->last_id;
    owner = calloc(1, sizeof(*owner));
    if (owner == NULL || run->nitems - run->head + b->n > SIZE_MAX / 2) {
        free(owner);
        store_batch_free(b);
        run->exhausted = 1;
        run_check(run);
        return;
    }
    /* compact the FIFO before appending */
    if (run->head > 0) {
        memmove(run->items, run->items + run->head,
                (run->nitems - run->head) * sizeof(*run->items));
        run->nitems -= run->head;
        run->head = 0;
    }
    if (run->nitems + b->n > run->cap) {
        size_t cap = run->nitems + b->n;
        struct dl_item *ni = realloc(run->items, cap * sizeof(*ni));
        if (ni == NULL) {
            free(owner);
            store_batch_free(b);
            run->exhausted = 1;
            run_check(run);
            return;
        }
        run->items = ni;
        run->cap = cap;
    }
    owner->b = b;
    owner->left = b->n;
    for (i = 0; i < b->n; i++) {
        run->items[run->nitems].m = &b->msgs[i];
        run->items[run->nitems].owner = owner;
        run->nitems++;
    }
    if (b->n < FETCH_BATCH)
        run->exhausted = 1;
    if (late_defer) {
        run_defer_unreachable(run, run->res.why);
        run_check(run);
        return;
    }
    if (run->unroutable) {
        run_bounce_items(run);
        if (!run->exhausted)
            run_fetch(run);
        run_check(run);
        return;
    }
    nh_kick(nh);
    /* connections that were waiting for this fetch */
    {
        struct dl_conn *dc, *next;
        for (dc = nh->conns; dc != NULL; dc = next) {
            next = dc->next;
            if (dc->ready && !dc->busy && dc->waiting)
                conn_take_work(dc);
        }
    }
    run_check(run);
}

static void fetch_done(struct store_batch *b, int status, void *arg)
{
    struct dl_run *run = arg;
    struct dl_nexthop *nh = run->nh;

    fetch_done_inner(b, status, run);
    nh_maybe_free(nh);
}

static void run_fetch(struct dl_run *run)
{
    struct store_fetch_opts o;

    if (run->fetching || run->exhausted)
        return;
    memset(&o, 0, sizeof(o));
    o.domain = run->domain;
    o.after_id = run->after_id;
    o.max_msgs = FETCH_BATCH;
    o.due_before = run->due_before;
    o.arrived_before = INT64_MAX;
    o.body_inline_max = INLINE_MAX;
    o.body_inline_total = INLINE_TOTAL;
    run->fetching = 1;
    if (store_fetch(run->dl->srv->store, &o, fetch_done, run) != 0) {
        run->fetching = 0;
        run->exhausted = 1;
        snprintf(run->res.why, sizeof(run->res.why), "cannot read the queue");
    }
}

/* ---- connections ----------------------------------------------------------------- */

static const struct smtp_client_cbs client_cbs;

static void conn_unlink(struct dl_conn *dc)
{
    struct dl_nexthop *nh = dc->nh;

    if (dc->prev != NULL)
        dc->prev->next = dc->next;
    else
        nh->conns = dc->next;
    if (dc->next != NULL)
        dc->next->prev = dc->prev;
    nh->nconns--;
}

/* Connect dc to its target with its policy (in clear for the retry after a
 * failed handshake under tls = may). */
static int conn_start(struct dl_conn *dc)
{
    struct dl_nexthop *nh = dc->nh;
    struct server *srv = nh->dl->srv;
    const struct resolver_target *t = &nh->targets[dc->target];
    struct smtp_client_opts o;

    memset(&o, 0, sizeof(o));
    dc->t_open = uv_now(srv->loop);
    o.helo_name = srv->cfg->hostname;
    o.tls = dc->clear_retry ? SMTP_TLS_NONE : (enum smtp_client_tls)dc->policy;
    o.tls_ctx = dc->policy == CFG_TLS_VERIFY ? srv->tls_client_verify : srv->tls_client;
    dc->verify_ctx = dc->policy == CFG_TLS_VERIFY ? o.tls_ctx : NULL;
    if (o.tls_ctx == NULL && o.tls == SMTP_TLS_MAY)
        o.tls = SMTP_TLS_NONE;
    o.tls_host = t->host;
    o.peer_name = t->host;
    o.connect_timeout = srv->cfg->connect_timeout;
    o.command_timeout = srv->cfg->delivery_timeout;
    o.data_timeout = srv->cfg->delivery_data_timeout;
    dc->ready = dc->busy = dc->waiting = dc->setup_failed = dc->setup_tls_failed = 0;
    return smtp_client_connect(srv->loop, (const struct sockaddr *)&t->addr, &o, &client_cbs, dc,
                               &dc->cl);
}

/* Start dc on the first target from index first on that is not known to
 * have failed in this run: RFC 5321 §5.1 makes the preference an order,
 * so a backup MX sees mail only once every better address has failed (the
 * resolver has already put equal preferences in random order and cut the
 * list to max_mx_addresses). 0, or -1 when no target is left. */
static int conn_start_from(struct dl_conn *dc, size_t first)
{
    struct dl_nexthop *nh = dc->nh;

    for (size_t i = first; i < nh->ntargets; i++) {
        if (nh->failed[i])
            continue;
        dc->target = i;
        dc->clear_retry = 0;
        if (conn_start(dc) == 0)
            return 0;
        nh->failed[i] = 1;
    }
    return -1;
}

/* Open one more connection to nh for policy, at its best target. */
static int conn_open(struct dl_nexthop *nh, enum cfg_tls policy)
{
    struct dl_conn *dc = calloc(1, sizeof(*dc));

    if (dc == NULL)
        return -1;
    dc->nh = nh;
    dc->policy = policy;
    dc->next = nh->conns;
    if (nh->conns != NULL)
        nh->conns->prev = dc;
    nh->conns = dc;
    nh->nconns++;
    if (conn_start_from(dc, 0) == 0)
        return 0;
    conn_unlink(dc);
    free(dc);
    return -1;
}

/* The site cannot be reached: every run of nh gives up for now. */
static void nh_down(struct dl_nexthop *nh, const char *why)
{
    struct dl_run *r, *next;

    log_info("%s: site unreachable: %s", nh->key, why);
    nh->up = 0;
    /* the next run starts again from the best target */
    if (nh->failed != NULL)
        memset(nh->failed, 0, nh->ntargets);
    for (r = nh->runs; r != NULL; r = next) {
        next = r->next;
        if (!r->unroutable)
            run_abort(r, 1, why);
    }
}

/* No target gave a connection opened for policy the TLS it needs (RFC 3207
 * §4: a client that requires TLS does not go on without it). The runs that
 * need that much, and that no other connection can serve, give up for now:
 * their mail stays queued and the domain backs off. Runs content with less
 * go on over connections of their own. */
static void nh_tls_down(struct dl_nexthop *nh, enum cfg_tls policy, const char *why)
{
    struct dl_run *r, *next;
    struct dl_conn *dc;

    for (r = nh->runs; r != NULL; r = next) {
        next = r->next;
        if (run_work(r) == 0 || r->tls < policy)
            continue;
        for (dc = nh->conns; dc != NULL; dc = dc->next)
            if (dc->cl != NULL && conn_may_serve(dc, r))
                break;
        if (dc != NULL)
            continue;
        log_warn("%s: TLS required (tls = %s) but not available from %s: %s", r->domain,
                 tls_policy_name(r->tls), nh->key, why);
        run_abort(r, 1, why);
    }
}

/* Open connections while there is work and the limit allows. While the site
 * has not answered yet, one connection probes it (no storm on a dead site). */
static void nh_spawn(struct dl_nexthop *nh)
{
    struct delivery *dl = nh->dl;
    size_t work = nh_work(nh);
    unsigned want;

    if (dl->stopping || !nh->resolved || nh->ntargets == 0)
        return;
    want = work < nh->limit ? (unsigned)work : nh->limit;
    if (!nh->up && want > 1)
        want = 1;
    while (nh->nconns < want) {
        struct dl_run *r = nh_run_to_open_for(nh);
        if (r == NULL)
            break;
        if (conn_open(nh, r->tls) != 0) {
            if (nh->nconns == 0)
                nh_down(nh, "cannot open a connection");
            return;
        }
    }
    /* mail that no connection may carry (its domain's tls policy asks for
     * more) gets a connection of its own while the limit allows, rather
     * than waiting for the others to finish */
    while (nh->nconns < nh->limit && nh->up) {
        struct dl_run *r = nh_unserved_run(nh);
        if (r == NULL || conn_open(nh, r->tls) != 0)
            break;
    }
}

static void resolved(void *arg, int status, const struct resolver_target *t, size_t n,
                     const struct resolver_error *err)
{
    struct dl_nexthop *nh = arg;
    struct dl_run *r, *next;
    struct resolver_error e;

    nh->resolving = 0;
    if (status == RESOLVER_OK && n > 0) {
        struct resolver_target *copy = malloc(n * sizeof(*copy));
        unsigned char *failed = calloc(n, 1);
        if (copy != NULL && failed != NULL) {
            memcpy(copy, t, n * sizeof(*copy));
            free(nh->targets);
            free(nh->failed);
            nh->targets = copy;
            nh->failed = failed;
            nh->ntargets = n;
            nh->resolved = 1;
            nh_spawn(nh);
            nh_maybe_free(nh);
            return;
        }
        free(copy);
        free(failed);
        status = RESOLVER_TEMPFAIL;
        err = NULL;
    }
    if (err == NULL) {
        memset(&e, 0, sizeof(e));
        e.code = 451;
        snprintf(e.enh, sizeof(e.enh), "%s", status == RESOLVER_OK ? "4.4.3" : "4.3.0");
        snprintf(e.why, sizeof(e.why), "%s",
                 status == RESOLVER_OK ? "no address to deliver to" : "out of memory");
        status = RESOLVER_TEMPFAIL;
        err = &e;
    }
    /* Each recipient gets the reason (bounced for a permanent one, deferred
     * for a temporary one); the site as a whole backs off as for any
     * temporary failure. */
    for (r = nh->runs; r != NULL; r = next) {
        next = r->next;
        r->unroutable = status;
        r->route_err = *err;
        snprintf(r->res.why, sizeof(r->res.why), "%s %.240s", err->enh, err->why);
        if (status == RESOLVER_TEMPFAIL)
            r->res.site_down = 1;
        run_bounce_items(r);
        if (!r->exhausted)
            run_fetch(r);
        run_check(r);
    }
    nh_maybe_free(nh);
}

static void nh_kick(struct dl_nexthop *nh)
{
    struct delivery *dl = nh->dl;

    if (nh->resolved) {
        nh_spawn(nh);
        return;
    }
    if (nh->resolving || nh->runs == NULL)
        return;
    nh->resolving = 1;
    resolver_lookup(dl->srv->resolver, dl->srv->cfg,
                    config_delivery_domain(dl->srv->cfg, nh->lookup_domain), nh->lookup_domain,
                    resolved, nh);
}

static void conn_send(struct dl_conn *dc, struct dl_run *run, struct dl_item it)
{
    const struct store_dmsg *m = it.m;
    size_t i;

    if (m->nrcpts > dc->rcap) {
        struct smtp_client_rcpt *nr = realloc(dc->rcpts, m->nrcpts * sizeof(*nr));
        if (nr == NULL) {
            item_release(run, &it);
            run->inflight--;
            run_check(run);
            return;
        }
        dc->rcpts = nr;
        dc->rcap = m->nrcpts;
    }
    memset(dc->rcpts, 0, m->nrcpts * sizeof(*dc->rcpts));
    for (i = 0; i < m->nrcpts; i++) {
        dc->rcpts[i].address = m->rcpts[i].address;
        dc->rcpts[i].orcpt = m->rcpts[i].orcpt;
        dc->rcpts[i].notify = m->rcpts[i].notify;
    }
    memset(&dc->msg, 0, sizeof(dc->msg));
    dc->msg.sender = m->sender;
    dc->msg.envid = m->envid;
    dc->msg.ret = m->dsn_ret;
    dc->msg.body_8bit = m->body_8bit;
    dc->msg.body = m->body;
    dc->msg.body_len = (size_t)m->size;
    dc->msg.rcpts = dc->rcpts;
    dc->msg.nrcpts = m->nrcpts;
    dc->msg.udata = dc;
    dc->run = run;
    dc->item = it;
    dc->busy = 1;
    dc->gone = 0;
    dc->waiting = 0;
    dc->t_send = uv_now(dc->nh->dl->srv->loop);
    if (smtp_client_send(dc->cl, &dc->msg) != 0) {
        /* the client refused: the message stays queued for the next run */
        dc->busy = 0;
        dc->run = NULL;
        item_release(run, &it);
        run->inflight--;
        run_check(run);
        smtp_client_quit(dc->cl);
    }
}

/* Give a ready connection its next message, wait for a fetch, or end it. */
static void conn_take_work(struct dl_conn *dc)
{
    struct dl_nexthop *nh = dc->nh;
    struct dl_run *run;
    int pending = 0;

    if (!dc->ready || dc->busy)
        return;
    if (!nh->dl->stopping) {
        for (run = nh->runs; run != NULL; run = run->next) {
            /* never another domain's mail below its own tls policy */
            if (run->unroutable || !conn_serves(dc, run))
                continue;
            if (run->head < run->nitems) {
                struct dl_item it = run->items[run->head++];
                run->inflight++;
                /* fetch ahead so the next batch is there when this one ends */
                if (run->nitems - run->head < FETCH_BATCH / 2)
                    run_fetch(run);
                conn_send(dc, run, it);
                return;
            }
            if (run->fetching) {
                pending = 1; /* a later run may have messages already */
                continue;
            }
            if (!run->exhausted) {
                /* one new fetch per idle connection: runs queued behind
                 * the ones being sent hold no bodies in memory yet */
                run_fetch(run);
                pending = 1;
                break;
            }
        }
    }
    if (pending) {
        dc->waiting = 1;
        return;
    }
    /* nothing this connection may carry: it ends, and frees its place for
     * one that can carry what is left (on_closed opens it) */
    dc->ready = 0;
    smtp_client_quit(dc->cl);
}

static void on_ready(struct smtp_client *cl, int status, const struct smtp_client_reply *why)
{
    struct dl_conn *dc = smtp_client_udata(cl);
    const struct smtp_client_reply *refused;

    if (status != 0) {
        dc->setup_failed = 1;
        dc->setup_tls_failed = status == SMTP_CLIENT_ERR_TLS;
        if (why != NULL && why->code != 0 && why->local)
            snprintf(dc->setup_why, sizeof(dc->setup_why), "%s: %d %s %s", smtp_client_peer(cl),
                     why->code, why->enh, why->text);
        else if (why != NULL && why->code != 0)
            snprintf(dc->setup_why, sizeof(dc->setup_why), "%s said: %d %s %s",
                     smtp_client_peer(cl), why->code, why->enh, why->text);
        else
            snprintf(dc->setup_why, sizeof(dc->setup_why), "connect to %s failed%s%s",
                     smtp_client_peer(cl), why != NULL && why->text[0] ? ": " : "",
                     why != NULL ? why->text : "");
        log_info("%s: %s", dc->nh->key, dc->setup_why);
        return; /* on_closed follows */
    }
    refused = smtp_client_starttls_refused(cl);
    if (refused != NULL)
        log_warn("%s: %s refused STARTTLS (%d %s%s%s); delivering in clear (tls = may)",
                 dc->nh->key, smtp_client_peer(cl), refused->code, refused->enh,
                 refused->enh[0] ? " " : "", refused->text);
    dc->ready = 1;
    dc->t_ready = uv_now(dc->nh->dl->srv->loop);
    dc->nh->up = 1;
    conn_take_work(dc);
    /* the site answers: open the rest of max_site_connections for the work
     * left (until now one connection probed it, see nh_spawn) */
    nh_spawn(dc->nh);
    nh_maybe_free(dc->nh);
}

static void on_sent(struct smtp_client *cl, struct smtp_client_msg *msg, int status)
{
    struct dl_conn *dc = smtp_client_udata(cl);
    struct dl_nexthop *nh = dc->nh;
    struct dl_run *run = dc->run;
    struct dl_item it = dc->item;
    const struct store_dmsg *m = it.m;
    const struct config *cfg = dc->nh->dl->srv->cfg;
    const char *relay = smtp_client_peer(cl);
    int turn = run->turn;
    struct bounce_rcpt *br = NULL, *rl = NULL;
    size_t i, nb = 0, nrl = 0;
    /* RFC 3461 §5.2.2: NOTIFY=SUCCESS could not be passed on */
    int no_dsn = !smtp_client_offers_dsn(cl);

    dc->busy = 0;
    dc->run = NULL;
    dc->item.m = NULL;
    if (dc->gone) {
        /* its recipients are gone from the queue: nothing to record */
        dc->gone = 0;
        log_info("%s: removed from the queue during delivery to %s; transfer abandoned",
                 m->queue_id, relay);
        item_release(run, &it);
        run->inflight--;
        run_check(run);
        nh_maybe_free(nh);
        return;
    }
    for (i = 0; i < msg->nrcpts; i++) {
        const struct smtp_client_reply *rep = &msg->rcpts[i].reply;
        const struct store_drcpt *r = &m->rcpts[i];
        char text[sizeof(rep->text) + 32];

        snprintf(text, sizeof(text), "%d %s%s%s", rep->code, rep->enh, rep->enh[0] ? " " : "",
                 rep->text);
        if (rep->code >= 200 && rep->code < 300) {
            log_outcome(dc, m, r, relay, rep, "sent");
            run->res.delivered++;
            count(run, r, STATS_DELIVERED);
            if (no_dsn && dsn_notify_wants(r->notify, DSN_RELAYED)) {
                if (rl == NULL)
                    rl = calloc(msg->nrcpts, sizeof(*rl));
                if (rl != NULL) {
                    /* marked delivered once the "relayed" DSN is queued:
                     * the message must still be there to quote */
                    rl[nrl].rcpt = r;
                    rl[nrl].code = rep->code;
                    rl[nrl].enh = rep->enh;
                    rl[nrl].text = rep->text;
                    rl[nrl].remote_mta = relay;
                    nrl++;
                    continue;
                }
            }
            run_add_update(run, r, m->id, STORE_DELIVERED, 0, NULL);
        } else if (rep->code >= 500 && rep->code < 600) {
            log_outcome(dc, m, r, relay, rep, "bounced");
            if (br == NULL)
                br = calloc(msg->nrcpts, sizeof(*br));
            if (br == NULL) {
                run_add_update(run, r, m->id, STORE_DEFERRED,
                               turn ? r->next_attempt : retry_at(cfg, r->attempts), text);
                continue;
            }
            br[nb].rcpt = r;
            br[nb].code = rep->code;
            br[nb].enh = rep->enh;
            br[nb].text = rep->text;
            br[nb].remote_mta = relay;
            nb++;
            run->res.bounced++;
            count(run, r, STATS_BOUNCED);
        } else {
            log_outcome(dc, m, r, relay, rep, "deferred");
            /* a pull adds no backoff: the next ATRN or ETRN takes it anyway,
             * and a retry domain keeps the schedule it had */
            run_add_update(run, r, m->id, STORE_DEFERRED,
                           turn ? r->next_attempt : retry_at(cfg, r->attempts), text);
            run->res.deferred++;
            count(run, r, STATS_DEFERRED);
            snprintf(run->res.why, sizeof(run->res.why), "%.250s", text);
        }
    }
    dc->setup_charged = 1;
    if (nrl > 0) {
        bounce_item(run, &it, rl, nrl, DSN_RELAYED, br, nb, relay);
    } else if (nb > 0) {
        bounce_item(run, &it, br, nb, DSN_FAILURE, NULL, 0, relay);
    } else {
        item_release(run, &it);
        run->inflight--;
    }
    free(br);
    free(rl);
    /* commit outcomes as they come (the writer batches them with everything
     * else pending), so an ETRN during the flush counts what is still left */
    run_flush_updates(run);
    if (status == 0)
        conn_take_work(dc);
    run_check(run);
    nh_maybe_free(nh);
}

/* Free an unlinked connection, or leave that to body_read while a read
 * for it is out. */
static void conn_free(struct dl_conn *dc)
{
    if (dc->body_reading) {
        dc->orphan = 1;
        return;
    }
    free(dc->rcpts);
    free(dc);
}

static void on_closed(struct smtp_client *cl)
{
    struct dl_conn *dc = smtp_client_udata(cl);
    struct dl_nexthop *nh = dc->nh;

    dc->cl = NULL;
    if (nh->turn) {
        turn_conn_closed(dc);
        return;
    }
    /* a connection that never got ready tries the next target itself; a
     * target that could not be reached is skipped by every connection of
     * this run, one whose TLS fell short only by this one (its policy) */
    if (dc->setup_failed && !dc->setup_tls_failed)
        nh->failed[dc->target] = 1;
    if (dc->setup_failed && !nh->dl->stopping && nh_work(nh) > 0) {
        /* tls = may: a failed handshake is tried once more in clear, as
         * opportunistic TLS does (RFC 7435 §3; Postfix's smtp_tls_security_level
         * = may) - the session before STARTTLS cannot be reused (RFC 3207 §4.1) */
        if (dc->setup_tls_failed && dc->policy == CFG_TLS_MAY && !dc->clear_retry) {
            log_warn("%s: %s; retrying in clear (tls = may)", nh->key, dc->setup_why);
            dc->clear_retry = 1;
            if (conn_start(dc) == 0)
                return;
        }
        if (conn_start_from(dc, dc->setup_tls_failed ? dc->target + 1 : 0) == 0)
            return;
        conn_unlink(dc);
        if (dc->setup_tls_failed && dc->policy > CFG_TLS_MAY) {
            /* the site is up; only the mail that needs this much TLS waits */
            nh->up = 1;
            nh_tls_down(nh, dc->policy, dc->setup_why);
            if (nh_work(nh) > 0)
                nh_spawn(nh);
        } else if (nh->nconns == 0) {
            nh_down(nh, dc->setup_why);
        }
        conn_free(dc);
        nh_maybe_free(nh);
        return;
    }
    conn_unlink(dc);
    conn_free(dc);
    /* replace a connection lost in the middle of the work */
    if (!nh->dl->stopping && nh_work(nh) > 0 && nh->up)
        nh_spawn(nh);
    nh_maybe_free(nh);
}

/* A piece of the body in flight came from the queue (reader thread). */
static void body_read(const char *data, size_t len, int status, void *arg)
{
    struct dl_conn *dc = arg;

    dc->body_reading = 0;
    if (dc->orphan) {
        free(dc->rcpts);
        free(dc);
        return;
    }
    if (dc->cl == NULL || !dc->busy)
        return; /* the transaction ended meanwhile (timeout, lost connection) */
    if (status == STORE_ERR_GONE) {
        /* an operator deleted it: end the transaction with no final dot,
         * so the site delivers nothing, and send nothing more */
        dc->gone = 1;
        smtp_client_body_fail(dc->cl, "message removed from the queue during delivery");
    } else if (status != STORE_OK || len == 0) {
        smtp_client_body_fail(dc->cl, "cannot read the message from the queue");
    } else if (smtp_client_body(dc->cl, data, len) != 0) {
        smtp_client_body_fail(dc->cl, "message body out of step with the queue");
    }
}

/* The client asks for the next piece of a streamed body: it has written
 * the last one to the kernel (back-pressure), so reading it now holds one
 * piece per connection, whatever the site's speed. */
static void on_body(struct smtp_client *cl, struct smtp_client_msg *msg, uint64_t offset,
                    size_t max)
{
    struct dl_conn *dc = smtp_client_udata(cl);

    (void)msg;
    if (store_read_chunk(dc->nh->dl->srv->store, dc->item.m->id, offset, max, body_read, dc) != 0) {
        smtp_client_body_fail(cl, "cannot read the message from the queue");
        return;
    }
    dc->body_reading = 1;
}

static const struct smtp_client_cbs client_cbs = {
    .on_ready = on_ready,
    .on_sent = on_sent,
    .on_closed = on_closed,
    .on_body = on_body,
};

/* ---- ATRN turns (RFC 2645 §4) ---------------------------------------------------- */

/* The customer's connection is gone (QUIT, a drop, a timeout): every run of
 * the turn ends; what was fetched and not acknowledged stays queued for the
 * next ATRN or ETRN, and no backoff is recorded (site_down stays 0). */
static void turn_conn_closed(struct dl_conn *dc)
{
    struct dl_nexthop *nh = dc->nh;
    struct dl_run *r, *next;

    if (dc->setup_failed)
        log_info("%s: ATRN turn failed: %s", nh->key, dc->setup_why);
    conn_unlink(dc);
    conn_free(dc); /* or body_read, when a piece of a body is still being read */
    for (r = nh->runs; r != NULL; r = next) {
        next = r->next;
        run_abort(r, 0, "connection closed");
    }
    nh_maybe_free(nh);
}

int delivery_turn(struct delivery *dl, struct conn *c, const char *peer_name, char *const *domains,
                  size_t n, delivery_done_cb run_done, void *const *run_args, delivery_turn_cb over,
                  void *arg, struct delivery_turn **out)
{
    const struct config *cfg = dl->srv->cfg;
    struct dl_nexthop *nh = NULL;
    struct dl_conn *dc = NULL;
    struct dl_run **runs = NULL, **pp;
    struct smtp_client_opts o;
    size_t i;
    int rc = -1;

    if (dl->stopping || n == 0)
        return -1;
    nh = calloc(1, sizeof(*nh));
    dc = calloc(1, sizeof(*dc));
    runs = calloc(n, sizeof(*runs));
    if (nh == NULL || dc == NULL || runs == NULL ||
        (nh->lookup_domain = strdup(domains[0])) == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        runs[i] = calloc(1, sizeof(*runs[i]));
        if (runs[i] == NULL || (runs[i]->domain = strdup(domains[i])) == NULL)
            goto done;
    }
    nh->dl = dl;
    /* "odmr:..." is never a resolved next hop's key: nh_get cannot find it */
    nh->resolved = 1; /* nothing to resolve, and no targets: nh_spawn opens nothing */
    nh->limit = 1;
    nh->up = 1;
    nh->turn = 1;
    nh->turn_over = over;
    nh->turn_arg = arg;
    dc->nh = nh;
    memset(&o, 0, sizeof(o));
    o.helo_name = cfg->hostname;
    o.tls = SMTP_TLS_NONE; /* a pull is protected by the account, not the domain's tls */
    o.peer_name = peer_name;
    o.command_timeout = cfg->delivery_timeout;
    o.data_timeout = cfg->delivery_data_timeout;
    if (smtp_client_attach(dl->srv->loop, c, &o, &client_cbs, dc, &dc->cl) != 0)
        goto done;
    snprintf(nh->key, sizeof(nh->key), "%s", smtp_client_peer(dc->cl));
    nh->conns = dc;
    nh->nconns = 1;
    nh->next = dl->hops;
    dl->hops = nh;
    for (i = 0, pp = &nh->runs; i < n; i++, pp = &(*pp)->next) {
        runs[i]->dl = dl;
        runs[i]->nh = nh;
        runs[i]->due_before = INT64_MAX;
        runs[i]->turn = 1;
        runs[i]->done = run_done;
        runs[i]->arg = run_args[i];
        *pp = runs[i];
    }
    /* read the queue while the customer greets; each run ends on its own
     * when its fetch finds nothing */
    for (i = 0; i < n; i++)
        run_fetch(runs[i]);
    for (i = 0; i < n; i++)
        if (!runs[i]->fetching)
            run_check(runs[i]);
    *out = (struct delivery_turn *)nh;
    nh = NULL;
    dc = NULL;
    n = 0;
    rc = 0;
done:
    for (i = 0; i < n && runs != NULL; i++) {
        if (runs[i] != NULL)
            free(runs[i]->domain);
        free(runs[i]);
    }
    free(runs);
    if (nh != NULL)
        free(nh->lookup_domain);
    free(nh);
    free(dc);
    return rc;
}

void delivery_turn_stop(struct delivery_turn *t)
{
    struct dl_nexthop *nh = (struct dl_nexthop *)t;
    struct dl_run *r, *next;

    for (r = nh->runs; r != NULL; r = next) {
        next = r->next;
        run_abort(r, 0, "shutting down");
    }
    if (nh->conns != NULL && nh->conns->cl != NULL && nh->conns->ready && !nh->conns->busy) {
        nh->conns->ready = 0;
        smtp_client_quit(nh->conns->cl);
    }
}

void delivery_turn_abort(struct delivery_turn *t)
{
    struct dl_nexthop *nh = (struct dl_nexthop *)t;

    if (nh->conns != NULL && nh->conns->cl != NULL)
        smtp_client_abort(nh->conns->cl);
}

/* ---- interface ------------------------------------------------------------------- */

int delivery_open(struct server *srv, struct delivery **out)
{
    struct delivery *dl = calloc(1, sizeof(*dl));

    if (dl == NULL)
        return -1;
    dl->srv = srv;
    *out = dl;
    return 0;
}

void delivery_run(struct delivery *dl, const char *domain, int64_t due_before,
                  delivery_done_cb done, void *arg)
{
    struct dl_nexthop *nh;
    struct dl_run *run, **pp;
    int first;

    nh = dl->stopping ? NULL : nh_get(dl, domain);
    run = nh != NULL ? calloc(1, sizeof(*run)) : NULL;
    if (run == NULL || (run->domain = strdup(domain)) == NULL) {
        struct delivery_result res;
        free(run);
        memset(&res, 0, sizeof(res));
        snprintf(res.why, sizeof(res.why), "%s", dl->stopping ? "shutting down" : "out of memory");
        if (nh != NULL)
            nh_maybe_free(nh);
        done(arg, &res);
        return;
    }
    run->dl = dl;
    run->nh = nh;
    run->tls = config_delivery_domain(dl->srv->cfg, domain)->tls;
    run->due_before = due_before;
    run->done = done;
    run->arg = arg;
    first = nh->runs == NULL;
    if (first && nh->failed != NULL)
        memset(nh->failed, 0, nh->ntargets); /* a new run starts at the best target */
    for (pp = &nh->runs; *pp != NULL; pp = &(*pp)->next)
        ;
    *pp = run;
    if (!first) {
        /* the next hop's connections fetch for it when they get to it */
        nh_kick(nh);
        return;
    }
    /* read the queue while the connection is being set up */
    run_fetch(run);
    if (!run->fetching) {
        run_check(run);
        nh_maybe_free(nh);
        return;
    }
    nh_kick(nh); /* may answer at once; run stays alive while its fetch is out */
}

int delivery_running(const struct delivery *dl, const char *domain)
{
    const struct dl_nexthop *nh;
    const struct dl_run *r;

    for (nh = dl->hops; nh != NULL; nh = nh->next)
        for (r = nh->runs; r != NULL; r = r->next)
            if (strcmp(r->domain, domain) == 0)
                return 1;
    return 0;
}

void delivery_stop(struct delivery *dl, void (*cb)(void *arg), void *arg)
{
    struct dl_nexthop *nh, *nhnext;

    dl->stopping = 1;
    dl->stop_cb = cb;
    dl->stop_arg = arg;
    for (nh = dl->hops; nh != NULL; nh = nhnext) {
        struct dl_run *r, *rnext;
        struct dl_conn *dc, *dnext;
        nhnext = nh->next;
        for (dc = nh->conns; dc != NULL; dc = dnext) {
            dnext = dc->next;
            if (dc->cl != NULL && !dc->busy) {
                dc->ready = 0;
                smtp_client_quit(dc->cl);
            }
        }
        for (r = nh->runs; r != NULL; r = rnext) {
            rnext = r->next;
            run_abort(r, 0, "shutting down");
        }
    }
    delivery_check_stopped(dl);
}

void delivery_free(struct delivery *dl)
{
    free(dl);
}
