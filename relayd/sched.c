/*
 * sched: when each domain's mail is delivered. A site (recipient domain) in
 * mode hold waits for ETRN, an operator flush or a probe; a site in mode
 * retry - and mail to other destinations, such as bounces - is tried when
 * mail arrives and then with exponential backoff for the site as a whole
 * (min_backoff .. max_backoff), one run at a time: while a site is down it
 * gets one probe per interval, not one connection per message. An ETRN for
 * a site being flushed joins the flush. A periodic scan of the queue finds
 * expired mail (bounced) and mail due a delay warning. The SMTP work itself
 * is delivery.c's; the DSNs are bounce.c's. An ATRN turn (odmr.c) marks
 * its domains running like a flush, so the two never deliver one domain at
 * once. A route = odmr domain is never started here: only a turn takes it.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounce.h"
#include "config.h"
#include "delivery.h"
#include "log.h"
#include "lru.h"
#include "retry.h"
#include "sched.h"
#include "server.h"
#include "store.h"

#define TICK_MS     1000
#define MAINT_BATCH 100
/* Bodies fetched with a maintenance batch: small ones only (the DSN needs
 * at most bounce_size_limit of them), the others read by bounce.c. */
#define MAINT_INLINE_MAX   (64 * 1024)
#define MAINT_INLINE_TOTAL (512 * 1024)

/* What the scheduler knows of one site. Sites live in a table of at most
 * site_table_size entries (lib/lru): when it is full, the least recently
 * used site that is not busy (no run, no maintenance pass: nothing points
 * to it) is forgotten. A forgotten site with mail comes back with the next
 * scan of the queue. */
struct site {
    struct lru_node node; /* key: domain */
    char *domain;
    int running;
    int64_t run_due;   /* due_before of the running run */
    int again;         /* run again (all mail) when this run ends */
    int asked;         /* an ETRN came while this run was going: the site says it is up */
    int has_mail;      /* as far as we know something is queued */
    int maint;         /* an expiry or warning pass is running */
    uint64_t backoff;  /* ms; 0 = the site is fine */
    uint64_t next_try; /* uv_now() ms when a retry site may be tried */
    uint64_t last_probe;
    uint64_t etrn_reset; /* uv_now() ms when an ETRN last cleared backoff; 0 never */
};

struct sched {
    struct server *srv;
    struct delivery *dl;
    struct lru sites;
    uv_timer_t tick;
    uv_timer_t scan;
    int timers_open;
    int scanning;
    int stopping;
    unsigned busy; /* runs and maintenance passes in progress */
    void (*stop_cb)(struct server *srv);
};

static void site_start(struct sched *sc, struct site *st, int64_t due_before, const char *why);

static int64_t now_unix(void)
{
    return (int64_t)time(NULL);
}

static struct site *site_of(struct lru_node *n)
{
    return n != NULL ? LRU_ENTRY(n, struct site, node) : NULL;
}

/* A run or a maintenance pass holds a pointer to the site. */
static int site_busy(const struct lru_node *n, void *arg)
{
    const struct site *st = LRU_ENTRY(n, struct site, node);

    (void)arg;
    return st->running || st->maint;
}

static void site_free(struct site *st)
{
    free(st->domain);
    free(st);
}

/* The site of domain, made the most recently used; a new one if it is not
 * known, after forgetting idle sites while the table is full. NULL only
 * when out of memory. */
static struct site *site_get(struct sched *sc, const char *domain)
{
    struct site *st = site_of(lru_get(&sc->sites, domain));
    struct site *old;

    if (st != NULL)
        return st;
    lru_set_cap(&sc->sites, sc->srv->cfg->site_table_size);
    while (lru_full(&sc->sites) &&
           (old = site_of(lru_victim(&sc->sites, site_busy, NULL))) != NULL) {
        log_debug("%s: site state forgotten (site_table_size %u)", old->domain,
                  sc->srv->cfg->site_table_size);
        lru_remove(&sc->sites, &old->node);
        site_free(old);
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->domain = strdup(domain)) == NULL) {
        free(st);
        return NULL;
    }
    lru_add(&sc->sites, &st->node, st->domain);
    return st;
}

static void sched_check_stopped(struct sched *sc);

static void delivery_stopped(void *arg)
{
    struct sched *sc = arg;
    void (*cb)(struct server *) = sc->stop_cb;

    sc->stop_cb = NULL;
    if (cb != NULL)
        cb(sc->srv);
}

static void sched_check_stopped(struct sched *sc)
{
    if (!sc->stopping || sc->busy > 0 || sc->stop_cb == NULL)
        return;
    delivery_stop(sc->dl, delivery_stopped, sc);
}

/* ---- runs ------------------------------------------------------------------------ */

struct run_ctx {
    struct sched *sc;
    struct site *st;
};

static void run_done(void *arg, const struct delivery_result *r)
{
    struct run_ctx *rc = arg;
    struct sched *sc = rc->sc;
    struct site *st = rc->st;
    const struct config *cfg = sc->srv->cfg;
    uint64_t now = uv_now(sc->srv->loop);

    free(rc);
    st->running = 0;
    sc->busy--;
    /* RFC 1985: an ETRN says the site is up now. One that came while this
     * run found the site down (the run had given up and was writing its
     * deferrals) gets a run of its own, not a silent merge into a failure. */
    if (r->site_down && st->asked)
        st->again = 1;
    st->asked = 0;
    if (r->site_down || (r->deferred > 0 && r->delivered == 0)) {
        /* RFC 5321 §4.5.4.1: back off the site as a whole */
        st->backoff = retry_site_backoff(st->backoff, cfg->min_backoff, cfg->max_backoff);
        st->next_try = now + st->backoff;
        store_domain_event(sc->srv->store, st->domain, STORE_EV_ERROR, now_unix(), r->why);
        /* a hold domain is not retried on a schedule: say what it waits for */
        if (config_delivery_domain(cfg, st->domain)->mode == CFG_MODE_RETRY)
            log_info("%s: delivery deferred (%s); next try in %" PRIu64 "s", st->domain,
                     r->why[0] ? r->why : "temporary failure", st->backoff / 1000);
        else
            log_info("%s: delivery deferred (%s); waiting for ETRN", st->domain,
                     r->why[0] ? r->why : "temporary failure");
    } else {
        st->backoff = 0;
        st->next_try = 0;
        if (r->delivered > 0)
            store_domain_event(sc->srv->store, st->domain, STORE_EV_DELIVERY, now_unix(), NULL);
        if (r->delivered + r->deferred + r->bounced == 0)
            st->has_mail = st->again; /* nothing was due */
    }
    if (st->again && !sc->stopping) {
        st->again = 0;
        site_start(sc, st, INT64_MAX, "again");
        return;
    }
    st->again = 0;
    sched_check_stopped(sc);
}

static void site_start(struct sched *sc, struct site *st, int64_t due_before, const char *why)
{
    struct run_ctx *rc;

    if (st->running || st->maint || sc->stopping)
        return;
    if (config_delivery_domain(sc->srv->cfg, st->domain)->route_odmr)
        return; /* RFC 2645: fetched by ATRN only; no connection of ours, ever */
    rc = malloc(sizeof(*rc));
    if (rc == NULL)
        return;
    rc->sc = sc;
    rc->st = st;
    st->running = 1;
    st->run_due = due_before;
    st->last_probe = uv_now(sc->srv->loop);
    sc->busy++;
    log_debug("%s: delivery run (%s)", st->domain, why);
    delivery_run(sc->dl, st->domain, due_before, run_done, rc);
}

void sched_flush(struct sched *sc, const char *domain, const char *why)
{
    struct site *st = site_get(sc, domain);

    if (st == NULL)
        return;
    st->has_mail = 1;
    st->backoff = 0; /* ETRN says the site is up now */
    st->next_try = 0;
    if (st->running) {
        /* join the flush in progress; a run that only took due mail is
         * followed by one that takes everything */
        if (st->run_due != INT64_MAX)
            st->again = 1;
        st->asked = 1;
        return;
    }
    if (st->maint) {
        st->again = 1;
        return;
    }
    site_start(sc, st, INT64_MAX, why);
}

/* RFC 1985: an ETRN says the site is up, so it clears the site's backoff -
 * but at most once per min_backoff (issue 9). `etrnctl etrn --wait` polls
 * with repeated ETRNs, and a burst of them must give a site that still
 * fails one extra attempt, not one each. Within min_backoff of the ETRN
 * that last cleared it, the backoff stands: the mail waits for next_try
 * (retry) or for an ETRN after min_backoff (hold). The same holds for an
 * ETRN while a run is going (which would run again if that run found the
 * site down). A site that is neither backed off nor running takes every
 * ETRN. */
void sched_etrn(struct sched *sc, const char *domain)
{
    struct site *st = site_get(sc, domain);
    uint64_t now = uv_now(sc->srv->loop);

    if (st == NULL)
        return;
    if (st->backoff > 0 || st->running) {
        if (st->etrn_reset != 0 && now - st->etrn_reset < sc->srv->cfg->min_backoff) {
            st->has_mail = 1;
            log_debug("%s: ETRN within min_backoff of the last that cleared the backoff: "
                      "next try in %" PRIu64 "s",
                      domain, st->next_try > now ? (st->next_try - now) / 1000 : 0);
            return;
        }
        st->etrn_reset = now;
    }
    sched_flush(sc, domain, "ETRN");
}

void sched_queued(struct sched *sc, const char *domain)
{
    struct site *st = site_get(sc, domain);
    const struct cfg_domain *dom;

    if (st == NULL)
        return;
    st->has_mail = 1;
    dom = config_delivery_domain(sc->srv->cfg, domain);
    if (dom->mode != CFG_MODE_RETRY)
        return;
    if (st->running) {
        st->again = 1;
        return;
    }
    if (uv_now(sc->srv->loop) >= st->next_try)
        site_start(sc, st, now_unix(), "new mail");
}

int sched_flushing(struct sched *sc, const char *domain)
{
    struct site *st = site_of(lru_find(&sc->sites, domain));

    return st != NULL && st->running;
}

int sched_busy(struct sched *sc, const char *domain)
{
    struct site *st = site_of(lru_find(&sc->sites, domain));

    return st != NULL && (st->running || st->maint);
}

/* One domain's part of an ATRN turn is committed. Unlike run_done, nothing
 * here backs the site off: the customer's connection failing says nothing
 * about the site's own server. */
static void turn_run_done(void *arg, const struct delivery_result *r)
{
    struct run_ctx *rc = arg;
    struct sched *sc = rc->sc;
    struct site *st = rc->st;

    free(rc);
    st->running = 0;
    sc->busy--;
    if (r->delivered > 0)
        store_domain_event(sc->srv->store, st->domain, STORE_EV_DELIVERY, now_unix(), NULL);
    if (st->again && !sc->stopping) {
        st->again = 0;
        site_start(sc, st, INT64_MAX, "ETRN during ATRN");
        return;
    }
    st->again = 0;
    sched_check_stopped(sc);
}

int sched_turn(struct sched *sc, struct conn *c, const char *peer_name, char *const *domains,
               size_t n, delivery_turn_cb over, void *arg, struct delivery_turn **out)
{
    struct run_ctx **rcs;
    size_t i, got = 0;

    if (sc->stopping || n == 0)
        return -1;
    for (i = 0; i < n; i++)
        if (sched_busy(sc, domains[i]))
            return 1;
    rcs = calloc(n, sizeof(*rcs));
    if (rcs == NULL)
        return -1;
    /* each site is marked running as soon as it is got: a running site is
     * never the one site_get forgets to make room for the next */
    for (got = 0; got < n; got++) {
        if ((rcs[got] = malloc(sizeof(*rcs[got]))) == NULL ||
            (rcs[got]->st = site_get(sc, domains[got])) == NULL) {
            free(rcs[got]);
            goto fail;
        }
        rcs[got]->sc = sc;
        rcs[got]->st->running = 1;
        rcs[got]->st->run_due = INT64_MAX; /* an ETRN meanwhile joins the turn */
        rcs[got]->st->has_mail = 1;
    }
    sc->busy += (unsigned)n;
    if (delivery_turn(sc->dl, c, peer_name, domains, n, turn_run_done, (void *const *)rcs, over,
                      arg, out) != 0) {
        sc->busy -= (unsigned)n;
        goto fail;
    }
    free(rcs); /* the run contexts are the runs' now */
    return 0;
fail:
    for (i = 0; i < got; i++) {
        rcs[i]->st->running = 0;
        free(rcs[i]);
    }
    free(rcs);
    return -1;
}

/* ---- timers ---------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct sched *sc = t->data;
    uint64_t now = uv_now(sc->srv->loop);
    struct lru_node *n;

    if (sc->stopping)
        return;
    /* a walk that does not reorder: starting a run adds and forgets no site */
    for (n = lru_newest(&sc->sites); n != NULL; n = lru_older(n)) {
        struct site *st = site_of(n);
        const struct cfg_domain *dom;

        if (st->running || st->maint || !st->has_mail)
            continue;
        dom = config_delivery_domain(sc->srv->cfg, st->domain);
        if (dom->mode == CFG_MODE_RETRY) {
            if (now >= st->next_try)
                site_start(sc, st, now_unix(), "retry");
        } else if (dom->probe_interval > 0 && now >= st->last_probe + dom->probe_interval &&
                   now >= st->next_try) {
            site_start(sc, st, INT64_MAX, "probe");
        }
    }
}

/* Expiry and delay warnings for one site: fetch old mail in batches, queue
 * the DSNs, then remove (expiry) or mark (warning) the recipients. */
struct maint {
    struct sched *sc;
    struct site *st;
    enum dsn_kind kind;
    int64_t cutoff;      /* arrived before this */
    int64_t retry_until; /* for warnings */
    int64_t after_id;
    struct store_batch *b;
    size_t idx; /* next message of b */
};

static void maint_fetch(struct maint *mt);
static void maint_next(struct maint *mt);

static void maint_end(struct maint *mt)
{
    struct sched *sc = mt->sc;
    struct site *st = mt->st;

    if (mt->b != NULL)
        store_batch_free(mt->b);
    free(mt);
    st->maint = 0;
    sc->busy--;
    if (st->again && !sc->stopping) {
        st->again = 0;
        site_start(sc, st, INT64_MAX, "ETRN after expiry");
    }
    sched_check_stopped(sc);
}

static void maint_dsn_done(void *arg, int status)
{
    struct maint *mt = arg;
    const struct store_dmsg *m = &mt->b->msgs[mt->idx];
    struct store_update *u = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(*u));
    size_t i, n = 0;

    if (status == 0 && u != NULL) {
        for (i = 0; i < m->nrcpts; i++) {
            if (mt->kind == DSN_DELAY && m->rcpts[i].warned)
                continue;
            u[n].rcpt_id = m->rcpts[i].id;
            u[n].msg_id = m->id;
            u[n].outcome = mt->kind == DSN_FAILURE ? STORE_FAILED : STORE_WARNED;
            n++;
        }
        if (n > 0)
            store_update(mt->sc->srv->store, u, n, NULL, NULL);
    }
    free(u);
    mt->idx++;
    maint_next(mt);
}

static void maint_next(struct maint *mt)
{
    const struct config *cfg = mt->sc->srv->cfg;

    while (mt->b != NULL && mt->idx < mt->b->n) {
        const struct store_dmsg *m = &mt->b->msgs[mt->idx];
        struct bounce_rcpt *br = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(*br));
        int null_sender = m->sender == NULL || m->sender[0] == '\0';
        size_t i, n = 0;

        if (br == NULL) {
            mt->idx++;
            continue;
        }
        for (i = 0; i < m->nrcpts; i++) {
            const struct store_drcpt *r = &m->rcpts[i];
            if (mt->kind == DSN_DELAY && r->warned)
                continue;
            br[n].rcpt = r;
            /* RFC 3463 X.4.7: delivery time expired; no reply code of
             * our own, the last one the site gave (if any) is the text */
            br[n].code = 0;
            br[n].enh = "4.4.7";
            br[n].text = r->last_reply != NULL ? r->last_reply
                                               : (mt->kind == DSN_FAILURE
                                                      ? "delivery time expired"
                                                      : "the site has not collected its mail yet");
            n++;
            /* a bounce (sender <>) is never bounced: it is dropped */
            log_info("%s: to=<%s>, relay=none, delay=%" PRId64 ", delays=0/%" PRId64
                     "/0/0, dsn=4.4.7, status=%s (%s)",
                     m->queue_id, r->address, now_unix() - m->arrival, now_unix() - m->arrival,
                     mt->kind == DSN_DELAY ? (null_sender ? "delayed" : "delayed, warning sent")
                     : null_sender         ? "expired, dropped"
                                           : "expired, returned to sender",
                     r->last_reply != NULL ? r->last_reply : "no delivery yet");
        }
        if (n == 0) {
            free(br);
            mt->idx++;
            continue;
        }
        (void)cfg;
        if (bounce_send(mt->sc->srv, m, br, n, mt->kind, maint_dsn_done, mt) != 0) {
            free(br);
            mt->idx++;
            continue;
        }
        free(br);
        return; /* maint_dsn_done continues */
    }
    if (mt->b != NULL) {
        int more = mt->b->n == MAINT_BATCH;
        store_batch_free(mt->b);
        mt->b = NULL;
        if (more && !mt->sc->stopping) {
            maint_fetch(mt);
            return;
        }
    }
    maint_end(mt);
}

static void maint_fetched(struct store_batch *b, int status, void *arg)
{
    struct maint *mt = arg;

    if (status != 0 || b == NULL || b->n == 0) {
        if (b != NULL)
            store_batch_free(b);
        maint_end(mt);
        return;
    }
    mt->b = b;
    mt->idx = 0;
    mt->after_id = b->last_id;
    maint_next(mt);
}

static void maint_fetch(struct maint *mt)
{
    struct store_fetch_opts o;

    memset(&o, 0, sizeof(o));
    o.domain = mt->st->domain;
    o.after_id = mt->after_id;
    o.max_msgs = MAINT_BATCH;
    o.due_before = INT64_MAX;
    o.arrived_before = mt->cutoff;
    /* bounded bytes, not messages (issue 7): large bodies stay in the
     * queue and bounce.c reads only the head a DSN returns */
    o.body_inline_max = MAINT_INLINE_MAX;
    o.body_inline_total = MAINT_INLINE_TOTAL;
    if (store_fetch(mt->sc->srv->store, &o, maint_fetched, mt) != 0)
        maint_end(mt);
}

static void maint_start(struct sched *sc, struct site *st, enum dsn_kind kind, int64_t cutoff,
                        int64_t retry_until)
{
    struct maint *mt;

    if (st->running || st->maint || sc->stopping)
        return;
    mt = calloc(1, sizeof(*mt));
    if (mt == NULL)
        return;
    mt->sc = sc;
    mt->st = st;
    mt->kind = kind;
    mt->cutoff = cutoff;
    mt->retry_until = retry_until;
    st->maint = 1;
    sc->busy++;
    maint_fetch(mt);
}

static void scanned(struct store_domain_info *d, size_t n, int status, void *arg)
{
    struct sched *sc = arg;
    int64_t now = now_unix();
    size_t i;

    sc->scanning = 0;
    sc->busy--;
    if (status == 0 && !sc->stopping) {
        for (i = 0; i < n; i++) {
            struct site *st = site_get(sc, d[i].domain);
            const struct cfg_domain *dom = config_delivery_domain(sc->srv->cfg, d[i].domain);
            int64_t life = (int64_t)(dom->queue_lifetime / 1000);
            int64_t warn = (int64_t)(dom->delay_warning / 1000);

            if (st == NULL)
                continue;
            st->has_mail = 1;
            switch (retry_due(d[i].oldest, now, life, warn)) {
            case RETRY_DUE_EXPIRE:
                maint_start(sc, st, DSN_FAILURE, now - life, 0);
                break;
            case RETRY_DUE_WARN:
                maint_start(sc, st, DSN_DELAY, now - warn, d[i].oldest + life);
                break;
            default:
                break;
            }
        }
    }
    if (d != NULL)
        store_scan_free(d, n);
    sched_check_stopped(sc);
}

static void on_scan(uv_timer_t *t)
{
    struct sched *sc = t->data;

    if (sc->stopping || sc->scanning)
        return;
    sc->scanning = 1;
    sc->busy++;
    if (store_scan_domains(sc->srv->store, scanned, sc) != 0) {
        sc->scanning = 0;
        sc->busy--;
    }
}

/* Scan often enough that the shortest lifetime or warning configured is
 * honoured within a tenth of itself: 1 s .. 60 s. */
static uint64_t scan_interval(const struct config *cfg)
{
    uint64_t m = cfg->queue_lifetime;
    size_t i;

    if (cfg->delay_warning > 0 && cfg->delay_warning < m)
        m = cfg->delay_warning;
    for (i = 0; i < cfg->ndomains; i++) {
        if (cfg->domains[i].queue_lifetime > 0 && cfg->domains[i].queue_lifetime < m)
            m = cfg->domains[i].queue_lifetime;
        if (cfg->domains[i].delay_warning > 0 && cfg->domains[i].delay_warning < m)
            m = cfg->domains[i].delay_warning;
    }
    m /= 10;
    if (m < 1000)
        m = 1000;
    if (m > 60000)
        m = 60000;
    return m;
}

int sched_open(struct server *srv, struct sched **out)
{
    struct sched *sc = calloc(1, sizeof(*sc));
    uint64_t every;

    if (sc == NULL)
        return -1;
    sc->srv = srv;
    if (lru_init(&sc->sites, srv->cfg->site_table_size) != 0) {
        free(sc);
        return -1;
    }
    if (delivery_open(srv, &sc->dl) != 0) {
        lru_fini(&sc->sites);
        free(sc);
        return -1;
    }
    uv_timer_init(srv->loop, &sc->tick);
    uv_timer_init(srv->loop, &sc->scan);
    sc->tick.data = sc->scan.data = sc;
    sc->timers_open = 1;
    uv_timer_start(&sc->tick, on_tick, TICK_MS, TICK_MS);
    every = scan_interval(srv->cfg);
    /* the first scan at once: retry sites and bounces left from before */
    uv_timer_start(&sc->scan, on_scan, 0, every);
    *out = sc;
    return 0;
}

void sched_stop(struct sched *sc, void (*cb)(struct server *srv))
{
    sc->stopping = 1;
    sc->stop_cb = cb;
    if (sc->timers_open) {
        sc->timers_open = 0;
        uv_close((uv_handle_t *)&sc->tick, NULL);
        uv_close((uv_handle_t *)&sc->scan, NULL);
    }
    /* runs in progress end early: delivery_stop stops handing out messages */
    if (sc->busy > 0)
        delivery_stop(sc->dl, NULL, NULL);
    sched_check_stopped(sc);
}

void sched_free(struct sched *sc)
{
    struct lru_node *n;

    if (sc == NULL)
        return;
    while ((n = lru_victim(&sc->sites, NULL, NULL)) != NULL) {
        lru_remove(&sc->sites, n);
        site_free(site_of(n));
    }
    lru_fini(&sc->sites);
    delivery_free(sc->dl);
    free(sc);
}
