/*
 * notify: "mail is waiting" for held domains (mode hold, or route = odmr).
 * A domain is announced once when its queue goes from empty to non-empty
 * (the first message committed while it was not waiting), then again at
 * most every notify_interval while mail still waits; a periodic check
 * reads the queue (store_report) to see whether it has emptied, which
 * re-arms the announcement. An announcement is a short message from <> to
 * the domain's notify address (queued like a bounce; relayd -t refuses an
 * address in a held domain, so it can never wait beside what it announces)
 * and/or notify_command run without a shell (uv_spawn) with RELAYD_DOMAIN,
 * RELAYD_MESSAGES, RELAYD_BYTES, RELAYD_OLDEST (and RELAYD_QUOTA_PERCENT for
 * a domain with a quota) in its environment, killed after
 * NOTIFY_CMD_TIMEOUT_MS. The message says when the domain's quota is over
 * QUOTA_WARN_PERCENT full (issue 11: the site should collect before relayd
 * starts refusing its mail). It never delivers the waiting mail.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "notify.h"
#include "quota.h"
#include "sched.h"
#include "server.h"
#include "smtp_parse.h"
#include "store.h"

#define NOTIFY_BUCKETS        256
#define NOTIFY_CMD_TIMEOUT_MS 30000 /* a command that takes longer is killed */
#define NOTIFY_MAX_CHILDREN   8     /* commands running at once */
#define NOTIFY_TICK_MAX_MS    60000 /* how often waiting domains are looked at, at most */

struct nt_domain {
    struct nt_domain *next;
    char *name;
    int waiting;   /* announced (or found waiting at start): no new announcement */
    int busy;      /* a store_report for it is out */
    uint64_t last; /* uv_now() of the last announcement */
};

struct notify {
    struct server *srv;
    struct nt_domain *buckets[NOTIFY_BUCKETS];
    uv_timer_t tick;
    int tick_open;
    int closing;
    unsigned children;
    struct nt_child *running; /* commands still running, for shutdown */
};

/* One command run. Freed when both handles are closed. */
struct nt_child {
    struct nt_child *next, *prev;
    struct notify *n;
    uv_process_t proc;
    uv_timer_t timer;
    int open;
    char domain[SMTP_DOMAIN_MAX + 1];
};

/* One notification message until its commit. */
struct nt_mail {
    struct server *srv;
    struct store_msg m;
    struct store_rcpt rcpt;
    char domain[SMTP_DOMAIN_MAX + 1];
};

/* One store_report until it answers. */
struct nt_job {
    struct notify *n;
    struct nt_domain *d;
    int reminder; /* a periodic check: announce only when notify_interval has passed */
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;

    while (*s != '\0')
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % NOTIFY_BUCKETS;
}

static struct nt_domain *get(struct notify *n, const char *name)
{
    struct nt_domain **pp = &n->buckets[hash(name)], *d;

    for (d = *pp; d != NULL; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    d = calloc(1, sizeof(*d));
    if (d == NULL || (d->name = strdup(name)) == NULL) {
        free(d);
        return NULL;
    }
    d->next = *pp;
    *pp = d;
    return d;
}

/* Is domain one to announce, under the current configuration? */
static int wanted(const struct config *cfg, const char *domain)
{
    const struct cfg_domain *d = config_find_domain(cfg, domain);

    if (d == NULL || (d->mode != CFG_MODE_HOLD && !d->route_odmr))
        return 0; /* mail that is not held does not wait for the site */
    return d->notify != NULL || cfg->notify_command != NULL;
}

/* ---- the command ------------------------------------------------------------------- */

static void child_closed(uv_handle_t *h)
{
    struct nt_child *c = h->data;

    if (--c->open == 0) {
        c->n->children--;
        free(c);
    }
}

static void child_exit(uv_process_t *p, int64_t status, int sig)
{
    struct nt_child *c = p->data;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->n->running = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;

    if (sig != 0)
        log_warn("notify: %s: %s killed by signal %d", c->domain, "notify_command", sig);
    else if (status != 0)
        log_warn("notify: %s: notify_command exited with status %" PRId64, c->domain, status);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->proc, child_closed);
    uv_close((uv_handle_t *)&c->timer, child_closed);
}

static void child_timeout(uv_timer_t *t)
{
    struct nt_child *c = t->data;

    log_warn("notify: %s: notify_command still running after %d s; killing it", c->domain,
             NOTIFY_CMD_TIMEOUT_MS / 1000);
    (void)uv_process_kill(&c->proc, SIGKILL);
}

/* pct: quota_percent() of the domain's section, -1 without a quota */
static void run_command(struct notify *n, const char *path, const char *domain,
                        const struct store_domain_report *r, int pct)
{
    char e_dom[300], e_msgs[64], e_bytes[64], e_oldest[64], e_pct[64];
    char *env[] = {e_dom, e_msgs, e_bytes, e_oldest, "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                   NULL,  NULL};
    char *args[] = {(char *)path, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE}, {.flags = UV_IGNORE}, {.flags = UV_IGNORE}};
    uv_process_options_t o;
    struct nt_child *c;
    int rc;

    if (n->children >= NOTIFY_MAX_CHILDREN) {
        log_warn("notify: %s: %u notify_commands running already; not starting another", domain,
                 n->children);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    snprintf(e_dom, sizeof(e_dom), "RELAYD_DOMAIN=%s", domain);
    snprintf(e_msgs, sizeof(e_msgs), "RELAYD_MESSAGES=%" PRId64, r->messages);
    snprintf(e_bytes, sizeof(e_bytes), "RELAYD_BYTES=%" PRIu64, r->bytes);
    snprintf(e_oldest, sizeof(e_oldest), "RELAYD_OLDEST=%" PRId64, r->oldest);
    if (pct >= 0) {
        snprintf(e_pct, sizeof(e_pct), "RELAYD_QUOTA_PERCENT=%d", pct);
        env[5] = e_pct;
    }
    snprintf(c->domain, sizeof(c->domain), "%s", domain);
    c->n = n;
    memset(&o, 0, sizeof(o));
    o.file = path;
    o.args = args;
    o.env = env; /* nothing of relayd's own environment */
    o.cwd = "/";
    o.stdio = stdio;
    o.stdio_count = 3;
    o.exit_cb = child_exit;
    c->proc.data = c;
    rc = uv_spawn(n->srv->loop, &c->proc, &o);
    if (rc != 0) {
        /* libuv: the handle must still be closed */
        log_warn("notify: %s: cannot run %s: %s", domain, path, uv_strerror(rc));
        c->open = 1;
        n->children++;
        uv_close((uv_handle_t *)&c->proc, child_closed);
        return;
    }
    uv_timer_init(n->srv->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, child_timeout, NOTIFY_CMD_TIMEOUT_MS, 0);
    c->open = 2;
    n->children++;
    c->next = n->running;
    if (n->running != NULL)
        n->running->prev = c;
    n->running = c;
}

/* ---- the message ------------------------------------------------------------------- */

static void mail_committed(struct store_msg *m, int status, void *arg)
{
    struct nt_mail *j = arg;

    if (status == STORE_OK) {
        log_info("%s: notification to <%s> that mail waits for %s", m->queue_id, j->rcpt.address,
                 j->domain);
        if (j->srv->sched != NULL)
            sched_queued(j->srv->sched, j->rcpt.domain);
    } else {
        log_warn("notify: %s: the notification to <%s> could not be queued", j->domain,
                 j->rcpt.address);
    }
    free(j->rcpt.address);
    free(j->rcpt.domain);
    free(j->m.body_mem);
    free(j->m.client_helo);
    free(j);
}

static void send_mail(struct notify *n, const char *to, const char *domain,
                      const struct store_domain_report *r, const struct cfg_domain *section,
                      int pct)
{
    struct server *srv = n->srv;
    const char *host = srv->cfg->hostname;
    struct nt_mail *j = calloc(1, sizeof(*j));
    struct buf b;
    char date[64], since[64];
    time_t now = time(NULL), oldest = (time_t)r->oldest;
    struct tm tm;
    int rc = 0;

    if (j == NULL)
        return;
    buf_init(&b, 16 * 1024);
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm); /* RFC 5322 §3.3 */
    gmtime_r(&oldest, &tm);
    strftime(since, sizeof(since), "%Y-%m-%d %H:%M:%S UTC", &tm);
    store_new_queue_id(srv->store, j->m.queue_id);
    /* RFC 3834: an automatic message, from the null sender (RFC 5321 §4.5.5)
     * so that nothing ever answers it */
    rc |= buf_appendf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
    rc |= buf_appendf(&b, "To: <%s>\r\n", to);
    rc |= buf_appendf(&b, "Subject: %" PRId64 " message%s waiting for %s at %s\r\n", r->messages,
                      r->messages == 1 ? "" : "s", domain, host);
    rc |= buf_appendf(&b, "Date: %s\r\nMessage-ID: <%s.notify@%s>\r\n", date, j->m.queue_id, host);
    rc |= buf_appendf(&b, "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
                          "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    rc |= buf_appendf(&b,
                      "%" PRId64 " message%s (%" PRIu64 " bytes) for %s %s waiting at %s,\r\n"
                      "the oldest since %s.\r\n\r\n"
                      "Collect them by asking the relay: etrnctl etrn or etrnctl atrn\r\n"
                      "(see etrnctl(8)), or fetchmail's ETRN or ODMR mode.\r\n",
                      r->messages, r->messages == 1 ? "" : "s", r->bytes, domain,
                      r->messages == 1 ? "is" : "are", host, since);
    if (pct >= QUOTA_WARN_PERCENT)
        rc |=
            buf_appendf(&b,
                        "\r\n%s is at %d%% of its queue quota here (max_queue_messages = %u,\r\n"
                        "max_queue_bytes = %" PRIu64 "; 0 is no limit). Once it is full, new\r\n"
                        "mail for it is refused (452 4.2.2) until the site collects.\r\n",
                        section->name, pct, section->max_queue_messages, section->max_queue_bytes);
    j->srv = srv;
    snprintf(j->domain, sizeof(j->domain), "%s", domain);
    j->rcpt.address = strdup(to);
    j->rcpt.domain = strdup(strrchr(to, '@') + 1); /* normalised by the config */
    j->rcpt.notify = SMTP_NOTIFY_NEVER;
    j->m.sender = "";
    j->m.dsn_ret = SMTP_RET_UNSET;
    j->m.client_addr = "localhost";
    j->m.client_helo = strdup(host);
    j->m.arrival = (int64_t)now;
    j->m.rcpts = &j->rcpt;
    j->m.nrcpts = 1;
    if (rc != 0 || j->rcpt.address == NULL || j->rcpt.domain == NULL || j->m.client_helo == NULL)
        goto fail;
    j->m.size = b.len;
    j->m.body_mem = b.data;
    b.data = NULL;
    if (store_submit(srv->store, &j->m, mail_committed, j) == 0)
        return;
fail:
    log_warn("notify: %s: cannot queue the notification to <%s>", domain, to);
    buf_free(&b);
    free(j->rcpt.address);
    free(j->rcpt.domain);
    free(j->m.body_mem);
    free(j->m.client_helo);
    free(j);
}

/* ---- announcing -------------------------------------------------------------------- */

static void reported(struct store_report *r, int status, void *arg)
{
    struct nt_job *job = arg;
    struct notify *n = job->n;
    struct nt_domain *d = job->d;
    const struct config *cfg = n->srv->cfg;
    const struct store_domain_report *dr = NULL;
    uint64_t now = uv_now(n->srv->loop);
    size_t i;

    d->busy = 0;
    for (i = 0; status == 0 && i < r->n; i++)
        if (strcmp(r->d[i].domain, d->name) == 0)
            dr = &r->d[i];
    if (status != 0 || n->closing) {
        /* unknown: try again at the next tick */
    } else if (dr == NULL || dr->queued_messages == 0) {
        if (job->reminder)
            log_info("notify: %s: nothing waits any more", d->name);
        d->waiting = 0; /* empty: the next message is news again */
    } else if (!job->reminder || now >= d->last + cfg->notify_interval) {
        const struct cfg_domain *cd = config_find_domain(cfg, d->name);
        int pct = cd != NULL && n->srv->quota != NULL ? quota_percent(n->srv->quota, cd) : -1;
        d->waiting = 1;
        d->last = now;
        log_info("notify: %s: %" PRId64 " message%s (%" PRIu64 " bytes) waiting%s", d->name,
                 dr->messages, dr->messages == 1 ? "" : "s", dr->bytes,
                 job->reminder ? " (reminder)" : "");
        if (cd != NULL && cd->notify != NULL)
            send_mail(n, cd->notify, d->name, dr, cd, pct);
        if (cfg->notify_command != NULL)
            run_command(n, cfg->notify_command, d->name, dr, pct);
    }
    store_report_free(r);
    free(job);
}

static void look(struct notify *n, struct nt_domain *d, int reminder)
{
    struct nt_job *job = malloc(sizeof(*job));

    if (job == NULL)
        return;
    job->n = n;
    job->d = d;
    job->reminder = reminder;
    d->busy = 1;
    if (store_report(n->srv->store, d->name, 0, (int64_t)time(NULL), reported, job) != 0) {
        d->busy = 0;
        free(job);
    }
}

void notify_queued(struct notify *n, const char *domain)
{
    struct nt_domain *d;

    if (n == NULL || n->closing || !wanted(n->srv->cfg, domain))
        return;
    d = get(n, domain);
    if (d == NULL || d->waiting || d->busy)
        return;
    d->waiting = 1; /* one announcement, however many messages arrive meanwhile */
    look(n, d, 0);
}

/* Every waiting domain: empty now (re-arm), or due a reminder. */
static void on_tick(uv_timer_t *t)
{
    struct notify *n = t->data;
    const struct config *cfg = n->srv->cfg;
    uint64_t every = cfg->notify_interval / 4;
    size_t i;

    if (every > NOTIFY_TICK_MAX_MS)
        every = NOTIFY_TICK_MAX_MS;
    if (every < 1000)
        every = 1000;
    uv_timer_set_repeat(t, every); /* notify_interval may change on SIGHUP */
    for (i = 0; i < NOTIFY_BUCKETS; i++) {
        struct nt_domain *d;
        for (d = n->buckets[i]; d != NULL; d = d->next) {
            if (!d->waiting || d->busy)
                continue;
            if (!wanted(cfg, d->name))
                d->waiting = 0; /* no longer held, or no one to tell */
            else
                look(n, d, 1);
        }
    }
}

/* At start: what is waiting already was announced by an earlier run (or
 * never will be news); remember it, announce nothing. */
static void seeded(struct store_domain_info *di, size_t nd, int status, void *arg)
{
    struct notify *n = arg;
    uint64_t now = uv_now(n->srv->loop);
    size_t i;

    for (i = 0; status == 0 && i < nd; i++) {
        struct nt_domain *d;
        if (!wanted(n->srv->cfg, di[i].domain) || (d = get(n, di[i].domain)) == NULL)
            continue;
        d->waiting = 1;
        d->last = now;
    }
    if (di != NULL)
        store_scan_free(di, nd);
}

int notify_open(struct server *srv, struct notify **out)
{
    struct notify *n = calloc(1, sizeof(*n));

    if (n == NULL)
        return -1;
    n->srv = srv;
    uv_timer_init(srv->loop, &n->tick);
    n->tick.data = n;
    n->tick_open = 1;
    uv_timer_start(&n->tick, on_tick, 1000, 1000);
    if (store_scan_domains(srv->store, seeded, n) != 0)
        log_warn("notify: cannot read the queue; mail waiting now will be announced again");
    *out = n;
    return 0;
}

void notify_close(struct notify *n)
{
    if (n == NULL || n->closing)
        return;
    n->closing = 1;
    /* a command still running would hold the loop (and the exit) for up to
     * NOTIFY_CMD_TIMEOUT_MS: ask it to end now */
    for (struct nt_child *c = n->running; c != NULL; c = c->next)
        (void)uv_process_kill(&c->proc, SIGTERM);
    if (n->tick_open) {
        n->tick_open = 0;
        uv_close((uv_handle_t *)&n->tick, NULL);
    }
}

void notify_free(struct notify *n)
{
    size_t i;

    if (n == NULL)
        return;
    for (i = 0; i < NOTIFY_BUCKETS; i++) {
        while (n->buckets[i] != NULL) {
            struct nt_domain *d = n->buckets[i];
            n->buckets[i] = d->next;
            free(d->name);
            free(d);
        }
    }
    free(n);
}
