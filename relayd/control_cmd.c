/*
 * control_cmd: the commands of the operators' socket (etrnctl queue, show,
 * summary, domains, stats, integrity, flush, hold, release, delete, requeue, bounce,
 * reload) and the table that names them and says which are for root and
 * relayd's user only. Each command reads its arguments, asks store.c,
 * sched.c or bounce.c, and writes JSON records through control.c, which
 * owns the socket, the connections, the framing and the permission check.
 * Nothing here touches SQLite or SMTP, and the loop never waits on the disk.
 */
#define LOG_SERVICE "control" /* log lines are tagged relayd/control */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounce.h"
#include "config.h"
#include "control_int.h"
#include "log.h"
#include "quota.h"
#include "sched.h"
#include "server.h"
#include "stats.h"
#include "store.h"

#define CTL_PAGE        200          /* messages per store_list call */
#define CTL_HIGH_WATER  (256 * 1024) /* output waiting before the next page */
#define CTL_BOUNCE_TEXT "returned by the operator"
#define CTL_SHOW_CHUNK  (64 * 1024) /* body bytes per store_read_chunk for show */

/* ---- records -------------------------------------------------------------------- */

/* What a recipient's mail waits for when its domain is not retried on a
 * schedule (issue 9): "ETRN" for a hold domain, "ATRN" for route = odmr;
 * NULL for a retry domain, whose next_attempt is a real time. The stored
 * next_attempt of a hold domain's recipient is only a backoff that no
 * timer acts on, so it is never shown as a retry time. */
static const char *rcpt_waits_for(const struct config *cfg, const struct store_drcpt *r)
{
    const struct cfg_domain *cd = config_delivery_domain(cfg, r->domain);

    if (cd->route_odmr)
        return "ATRN";
    return cd->mode == CFG_MODE_HOLD ? "ETRN" : NULL;
}

/* A message's members as `queue` and `show` write them: Postfix's
 * postqueue -j names, plus domain (the first recipient's), attempts (most)
 * and next_attempt (soonest among the recipients that are retried on a
 * schedule; null when every one waits for ETRN or ATRN, then waiting says
 * which). Each recipient: its last reason (delay_reason), attempts, and
 * next_attempt or waiting. full adds the envelope details; show then
 * streams the body after them. */
static void message_fields(struct jw *w, const struct store_dmsg *m, int full)
{
    const struct config *cfg = w->k->c->srv->cfg;
    int held = 0, attempts = 0, timed = 0;
    int64_t next = INT64_MAX;
    const char *waits = NULL, *rw;

    for (size_t i = 0; i < m->nrcpts; i++) {
        held |= m->rcpts[i].state == STORE_RCPT_HELD;
        if (m->rcpts[i].attempts > attempts)
            attempts = m->rcpts[i].attempts;
        if ((rw = rcpt_waits_for(cfg, &m->rcpts[i])) != NULL) {
            if (!waits)
                waits = rw;
            continue;
        }
        timed = 1;
        if (m->rcpts[i].next_attempt < next)
            next = m->rcpts[i].next_attempt;
    }
    jw_str(w, "queue_name", held ? "hold" : "deferred");
    jw_str(w, "queue_id", m->queue_id);
    jw_int(w, "arrival_time", m->arrival);
    jw_int(w, "message_size", (int64_t)m->size);
    jw_str(w, "sender", m->sender ? m->sender : "");
    jw_str(w, "domain", m->nrcpts ? m->rcpts[0].domain : "");
    jw_int(w, "attempts", attempts);
    if (timed || !waits)
        jw_int(w, "next_attempt", m->nrcpts ? next : 0);
    else
        jw_time(w, "next_attempt", 0); /* null: nothing is scheduled */
    jw_str(w, "waiting", timed ? NULL : waits);
    jw_open(w, "recipients", '[');
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct store_drcpt *r = &m->rcpts[i];

        rw = rcpt_waits_for(cfg, r);
        jw_open(w, NULL, '{');
        jw_str(w, "address", r->address);
        jw_str(w, "domain", r->domain);
        jw_str(w, "delay_reason", r->last_reply ? r->last_reply : "");
        jw_int(w, "attempts", r->attempts);
        if (rw)
            jw_time(w, "next_attempt", 0);
        else
            jw_int(w, "next_attempt", r->next_attempt);
        jw_str(w, "waiting", rw);
        jw_bool(w, "held", r->state == STORE_RCPT_HELD);
        jw_close(w, '}');
    }
    jw_close(w, ']');
    if (full) {
        jw_str(w, "envid", m->envid);
        jw_int(w, "dsn_ret", m->dsn_ret);
        jw_str(w, "client_addr", m->client_addr);
        jw_str(w, "client_helo", m->client_helo);
    }
}

/* A message as `queue` lists it: one record. */
static void write_message(struct ctl_conn *k, const struct store_dmsg *m)
{
    struct jw w;

    jw_begin(&w, k);
    message_fields(&w, m, 0);
    jw_end(&w);
}

/* ---- queue and show ---------------------------------------------------------------- */

static void list_page(struct ctl_conn *k);

static void on_list_page(struct store_batch *b, int status, void *arg)
{
    struct ctl_conn *k = arg;
    size_t nrcpts = 0, i;
    int more;

    if (!ctl_back(k)) {
        store_batch_free(b);
        return;
    }
    if (status != STORE_OK) {
        store_batch_free(b);
        ctl_finish(k, "internal", "cannot read the queue");
        return;
    }
    for (i = 0; i < b->n && k->remaining > 0; i++, k->remaining--) {
        write_message(k, &b->msgs[i]);
        nrcpts += b->msgs[i].nrcpts;
    }
    /* A short page is the end, unless the store's recipient cap cut it. */
    more =
        b->n > 0 && k->remaining > 0 && (b->n == k->lo.max_msgs || nrcpts >= STORE_LIST_MAX_RCPTS);
    k->lo.after_id = b->last_id;
    store_batch_free(b);
    if (!more) {
        ctl_finish(k, NULL, NULL);
        return;
    }
    if (k->out.len + k->wout.len - k->woff > CTL_HIGH_WATER) {
        k->on_drain = list_page; /* let the client catch up first */
        ctl_pump(k);
        return;
    }
    ctl_pump(k);
    list_page(k);
}

static void list_page(struct ctl_conn *k)
{
    struct store *st = k->c->srv->store;
    int rc;

    k->lo.max_msgs = k->remaining < CTL_PAGE ? (size_t)k->remaining : CTL_PAGE;
    rc = st ? store_list(st, &k->lo, on_list_page, k) : UV_ECANCELED;
    if (rc != 0) {
        ctl_finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
        return;
    }
    k->busy++;
}

static void cmd_queue(struct ctl_conn *k)
{
    const char *v;
    int64_t n;
    int held;

    memset(&k->lo, 0, sizeof k->lo);
    k->lo.arrived_before = INT64_MAX;
    k->remaining = INT64_MAX;
    if ((v = ctl_arg_value(k, "domain"))) {
        if (ctl_take_domain(k, v) < 0)
            return;
        k->lo.domain = k->domain;
        k->lo.subdomains = k->subdomains;
    }
    k->lo.sender = ctl_arg_value(k, "sender");
    k->lo.recipient = ctl_arg_value(k, "recipient");
    if ((v = ctl_arg_value(k, "older_than"))) {
        if (ctl_parse_num(v, &n) < 0) {
            ctl_finish(k, "usage", "older_than needs a number of seconds");
            return;
        }
        k->lo.arrived_before = ctl_now_unix() - n;
    }
    if ((held = ctl_parse_flag(ctl_arg_value(k, "held"))) < 0) {
        ctl_finish(k, "usage", "held takes 1 or 0");
        return;
    }
    k->lo.held = held;
    if ((v = ctl_arg_value(k, "limit"))) {
        if (ctl_parse_num(v, &n) < 0 || n == 0) {
            ctl_finish(k, "usage", "limit needs a positive number");
            return;
        }
        k->remaining = n;
    }
    list_page(k);
}

static void show_next(struct ctl_conn *k);

/* The body ends early (the message left the queue, or the queue could not
 * be read): the record is closed as valid JSON with "truncated":true, and
 * the final line says why, so a client never takes a part for the whole. */
static void show_cut(struct ctl_conn *k)
{
    jw_str_close(&k->sw);
    jw_bool(&k->sw, "truncated", 1);
    jw_end(&k->sw);
}

/* One chunk of the message: escape the part asked for into the record,
 * and ask for the next once the client has taken what is written
 * (ctl_pump's on_drain), so a connection holds one escaped chunk, never the
 * whole message. For part=header the record ends at the empty line; for
 * part=body the bytes before it are read and passed over. */
static void on_show_chunk(const char *data, size_t len, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct header_end *he = &k->show_he;
    const char *p = data;
    uint64_t off = k->show_off, skip = 0;
    size_t used, n = len;
    int more;

    if (!ctl_back(k))
        return;
    if (status == STORE_ERR_GONE) {
        show_cut(k);
        ctl_finish(k, "notfound", "message %s left the queue while being shown", k->ids[0]);
        return;
    }
    if (status != STORE_OK) {
        show_cut(k);
        ctl_finish(k, "internal", "cannot read the queue");
        return;
    }
    /* fewer bytes than asked for: the end of the message */
    more = len == CTL_SHOW_CHUNK;
    if (k->show_part != CTL_SHOW_ALL && !he->found && off + len > he->pos)
        header_end_feed(&k->show_he, data + (he->pos - off), (size_t)(off + len - he->pos));
    if (k->show_part == CTL_SHOW_HEADER && he->found && he->hdr_len <= off + len) {
        n = he->hdr_len > off ? (size_t)(he->hdr_len - off) : 0;
        more = 0;
    } else if (k->show_part == CTL_SHOW_BODY) {
        /* no empty line yet: nothing of the body; none at the end: no body */
        skip = !he->found ? len : he->body_off > off ? he->body_off - off : 0;
        if (skip > len)
            skip = len;
        p += skip;
        n -= (size_t)skip;
    }
    used = n > 0 ? jw_str_part(&k->sw, p, n, more) : 0;
    if (more && n > 0 && used == 0) { /* cannot happen: a chunk holds more than one sequence */
        more = 0;
        used = jw_str_part(&k->sw, p, n, 0);
    }
    k->show_off += skip + used;
    if (!more) {
        jw_str_close(&k->sw);
        jw_end(&k->sw);
        ctl_finish(k, NULL, NULL);
        return;
    }
    k->on_drain = show_next;
    ctl_pump(k);
}

/* Read the next chunk, each in a short read transaction of its own
 * (store_read_chunk): nothing is held while the client reads. */
static void show_next(struct ctl_conn *k)
{
    struct store *st = k->c->srv->store;
    int rc;

    rc = st ? store_read_chunk(st, k->show_id, k->show_off, CTL_SHOW_CHUNK, on_show_chunk, k)
            : UV_ECANCELED;
    if (rc != 0) {
        show_cut(k);
        ctl_finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
        return;
    }
    k->busy++;
}

static void on_show(struct store_batch *b, int status, void *arg)
{
    struct ctl_conn *k = arg;

    if (!ctl_back(k)) {
        store_batch_free(b);
        return;
    }
    if (status != STORE_OK) {
        ctl_finish(k, "internal", "cannot read the queue");
    } else if (b->n == 0) {
        ctl_finish(k, "notfound", "no message %s in the queue", k->ids[0]);
    } else {
        /* the envelope now, the body as the client takes it */
        jw_begin(&k->sw, k);
        message_fields(&k->sw, &b->msgs[0], 1);
        if (k->show_part != CTL_SHOW_ALL)
            jw_str(&k->sw, "part", k->show_part == CTL_SHOW_HEADER ? "header" : "body");
        jw_str_open(&k->sw, "body");
        k->show_id = b->msgs[0].id;
        k->show_off = 0;
        show_next(k);
    }
    store_batch_free(b);
}

/* One message by queue id, with its body or without: reader thread, like
 * a listing. */
static int read_message(struct ctl_conn *k, const char *qid, int with_body, store_fetch_cb cb)
{
    struct store *st = k->c->srv->store;
    struct store_list_opts o;
    int rc;

    memset(&o, 0, sizeof o);
    o.queue_id = qid;
    o.arrived_before = INT64_MAX;
    o.max_msgs = 1;
    o.with_body = with_body;
    rc = st ? store_list(st, &o, cb, k) : UV_ECANCELED;
    if (rc == 0)
        k->busy++;
    return rc;
}

static void cmd_show(struct ctl_conn *k)
{
    int rc;

    const char *part = ctl_arg_value(k, "part");

    if (k->nids != 1) {
        ctl_finish(k, "usage", "show needs one id=QUEUE_ID");
        return;
    }
    if (part == NULL || strcmp(part, "all") == 0) {
        k->show_part = CTL_SHOW_ALL;
    } else if (strcmp(part, "header") == 0) {
        k->show_part = CTL_SHOW_HEADER;
    } else if (strcmp(part, "body") == 0) {
        k->show_part = CTL_SHOW_BODY;
    } else {
        ctl_finish(k, "usage", "part is all, header or body");
        return;
    }
    header_end_init(&k->show_he);
    if ((rc = read_message(k, k->ids[0], 0, on_show)) != 0)
        ctl_finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
}

/* ---- summary and domains ---------------------------------------------------------- */

static int start_report(struct ctl_conn *k, const char *domain, int sub, store_report_cb cb)
{
    struct store *st = k->c->srv->store;
    int rc = st ? store_report(st, domain, sub, ctl_now_unix(), cb, k) : UV_ECANCELED;

    if (rc == 0)
        k->busy++;
    else
        ctl_finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
    return rc;
}

/* The common start of a report callback: 0 (r freed, the client answered
 * or gone) when there is nothing to format. */
static int report_usable(struct ctl_conn *k, struct store_report *r, int status)
{
    if (!ctl_back(k)) {
        store_report_free(r);
        return 0;
    }
    if (status != STORE_OK) {
        store_report_free(r);
        ctl_finish(k, "internal", "cannot read the queue");
        return 0;
    }
    return 1;
}

static void on_summary(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    struct jw w;

    if (!report_usable(k, r, status))
        return;
    for (size_t i = 0; i < r->n; i++) {
        const struct store_domain_report *d = &r->d[i];

        if (d->messages == 0)
            continue;
        jw_begin(&w, k);
        jw_str(&w, "domain", d->domain);
        jw_int(&w, "messages", d->messages);
        jw_int(&w, "bytes", (int64_t)d->bytes);
        jw_open(&w, "ages", '[');
        for (int b = 0; b < STORE_AGE_BUCKETS; b++)
            jw_int(&w, NULL, d->ages[b]);
        jw_close(&w, ']');
        jw_open(&w, "bucket_limits", '[');
        for (int b = 0; b < STORE_AGE_BUCKETS - 1; b++)
            jw_int(&w, NULL, STORE_AGE_LIMIT(b));
        jw_close(&w, ']');
        jw_end(&w);
    }
    store_report_free(r);
    ctl_finish(k, NULL, NULL);
}

static void cmd_summary(struct ctl_conn *k)
{
    struct store *st = k->c->srv->store;
    int senders = ctl_parse_flag(ctl_arg_value(k, "senders")), rc;

    if (senders < 0) {
        ctl_finish(k, "usage", "senders takes 1 or 0");
        return;
    }
    if (!senders) {
        start_report(k, NULL, 0, on_summary);
        return;
    }
    /* qshape -s: the same records, by the envelope sender's domain */
    rc = st ? store_report_senders(st, ctl_now_unix(), on_summary, k) : UV_ECANCELED;
    if (rc == 0)
        k->busy++;
    else
        ctl_finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
}

/* One `domains` record: d from the queue (NULL for a configured domain
 * without mail or history). */
static void write_domain(struct ctl_conn *k, const char *name, const struct store_domain_report *d)
{
    const struct server *srv = k->c->srv;
    const struct cfg_domain *cd = config_delivery_domain(srv->cfg, name);
    struct jw w;

    jw_begin(&w, k);
    jw_str(&w, "domain", name);
    /* route = odmr: nothing of ours ever delivers it; the site pulls (ATRN) */
    jw_str(&w, "mode", cd->route_odmr ? "pulled" : cd->mode == CFG_MODE_RETRY ? "retry" : "hold");
    jw_str(&w, "route", cd->route ? cd->route : "mx");
    jw_int(&w, "messages", d ? d->messages : 0);
    jw_int(&w, "bytes", d ? (int64_t)d->bytes : 0);
    jw_time(&w, "oldest", d ? d->oldest : 0);
    jw_time(&w, "last_etrn", d ? d->last_etrn : 0);
    jw_time(&w, "last_delivery", d ? d->last_delivery : 0);
    jw_str(&w, "last_error", d ? d->last_error : NULL);
    jw_time(&w, "last_error_at", d ? d->last_error_at : 0);
    jw_time(&w, "next_expiry",
            d && d->oldest ? d->oldest + (int64_t)(cd->queue_lifetime / 1000) : 0);
    jw_int(&w, "held_messages", d ? d->held_messages : 0);
    jw_bool(&w, "configured", config_find_domain(srv->cfg, name) != NULL);
    jw_bool(&w, "flushing", srv->sched && sched_flushing(srv->sched, name));
    /* A section's quota covers it and, with subdomains, all below it: the
     * figures are the section's, on the section's own line only. */
    if (srv->quota != NULL && strcmp(cd->name, name) == 0 &&
        (cd->max_queue_messages || cd->max_queue_bytes)) {
        int64_t qm, qb;
        quota_usage(srv->quota, name, &qm, &qb);
        jw_int(&w, "quota_messages", cd->max_queue_messages);
        jw_int(&w, "quota_bytes", (int64_t)cd->max_queue_bytes);
        jw_int(&w, "quota_used_messages", qm);
        jw_int(&w, "quota_used_bytes", qb);
    }
    jw_end(&w);
}

/* Domains with mail, and configured domains, merged in name order. */
static void on_domains(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct config *cfg;
    size_t i = 0, j = 0;
    int cmp;

    if (!report_usable(k, r, status))
        return;
    cfg = k->c->srv->cfg;
    while (i < r->n || j < cfg->ndomains) {
        if (i < r->n && r->d[i].messages == 0 && !config_find_domain(cfg, r->d[i].domain)) {
            i++; /* history only: no mail, no configuration */
            continue;
        }
        cmp = i == r->n            ? 1
              : j == cfg->ndomains ? -1
                                   : strcmp(r->d[i].domain, cfg->domains[j].name);
        if (cmp < 0) {
            write_domain(k, r->d[i].domain, &r->d[i]);
            i++;
        } else if (cmp > 0) {
            write_domain(k, cfg->domains[j].name, NULL);
            j++;
        } else {
            write_domain(k, r->d[i].domain, &r->d[i]);
            i++;
            j++;
        }
    }
    store_report_free(r);
    ctl_finish(k, NULL, NULL);
}

static void cmd_domains(struct ctl_conn *k)
{
    start_report(k, NULL, 0, on_domains);
}

/* ---- flush ------------------------------------------------------------------------ */

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Has any domain in the report mail queued (held or not)? */
static int report_has_mail(const struct store_report *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->d[i].messages > 0)
            return 1;
    return 0;
}

/* Start a flush (the path ETRN takes: sched_flush) of every domain in the
 * report that has mail not held; for flush id=, only the domains of the
 * named messages. One record per domain started. */
static void on_flush_report(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    struct server *srv;
    struct jw w;
    int64_t n = 0, ndom = 0;

    if (!report_usable(k, r, status))
        return;
    srv = k->c->srv;
    if (k->domain && !config_find_domain(srv->cfg, k->domain) && !report_has_mail(r)) {
        /* neither a relay domain nor anything queued for it (issue 9) */
        store_report_free(r);
        ctl_finish(k, "notfound", "%s is not a relay domain and has nothing queued", k->domain);
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct store_domain_report *d = &r->d[i];
        char *key = d->domain;

        if (d->queued_messages == 0 || (k->fdomains && !bsearch(&key, k->fdomains, k->nfdomains,
                                                                sizeof *k->fdomains, cmp_strp)))
            continue;
        if (srv->sched && !srv->stopping)
            sched_flush(srv->sched, d->domain, "operator flush");
        jw_begin(&w, k);
        jw_str(&w, "domain", d->domain);
        jw_int(&w, "messages", d->queued_messages);
        jw_end(&w);
        n += d->queued_messages;
        ndom++;
    }
    log_info("control: flush by uid %u: %" PRId64 " domains, %" PRId64 " messages",
             (unsigned)k->uid, ndom, n);
    store_report_free(r);
    ctl_finish(k, NULL, NULL);
}

/* flush id=: the named messages are now due; their domains are flushed. */
static void on_flush_due(struct store_op_result *r, int status, void *arg)
{
    struct ctl_conn *k = arg;

    if (!ctl_back(k)) {
        store_op_result_free(r);
        return;
    }
    if (status != STORE_OK) {
        ctl_finish(k, "internal", "cannot update the queue");
    } else if (r->found == 0) {
        ctl_finish(k, "notfound", "no such message in the queue");
    } else if (r->ndomains == 0) {
        ctl_finish(k, NULL, NULL); /* every recipient is held: nothing to start */
    } else {
        k->fdomains = r->domains; /* sorted by the store */
        k->nfdomains = r->ndomains;
        r->domains = NULL;
        r->ndomains = 0;
        start_report(k, k->nfdomains == 1 ? k->fdomains[0] : NULL, 0, on_flush_report);
    }
    store_op_result_free(r);
}

static int start_op(struct ctl_conn *k, enum store_op op, int all, store_op_cb cb);

static void cmd_flush(struct ctl_conn *k)
{
    const char *d = ctl_arg_value(k, "domain");
    const struct cfg_domain *cd;
    int all = ctl_parse_flag(ctl_arg_value(k, "all"));

    if (all < 0 || (d != NULL) + (k->nids > 0) + all != 1) {
        ctl_finish(k, "usage", "flush needs domain=DOMAIN, id=QUEUE_ID... or all=1");
        return;
    }
    if (k->nids > 0) {
        start_op(k, STORE_OP_DUE_NOW, 0, on_flush_due);
        return;
    }
    if (d) {
        if (ctl_take_domain(k, d) < 0)
            return;
        /* As ETRN does: a relay domain with subdomains = yes takes them along. */
        cd = config_find_domain(k->c->srv->cfg, k->domain);
        if (cd && cd->subdomains && strcmp(cd->name, k->domain) == 0)
            k->subdomains = 1;
    }
    start_report(k, k->domain, k->subdomains, on_flush_report);
}

/* ---- hold, release, delete, requeue ------------------------------------------------ */

static const char *op_record(enum store_op op)
{
    switch (op) {
    case STORE_OP_HOLD:
        return "held";
    case STORE_OP_RELEASE:
        return "released";
    case STORE_OP_DELETE:
        return "deleted";
    case STORE_OP_REQUEUE:
        return "requeued";
    case STORE_OP_DUE_NOW:
        break;
    }
    return "changed";
}

/* The store has applied the change: {"held": n} and so on. Released and
 * requeued mail is due now: retry domains start at once (hold domains
 * still wait for their ETRN). */
static void on_op(struct store_op_result *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    struct server *srv;
    struct jw w;

    if (!ctl_back(k)) {
        store_op_result_free(r);
        return;
    }
    srv = k->c->srv;
    if (status != STORE_OK) {
        ctl_finish(k, "internal", "cannot update the queue");
    } else if (k->nids > 0 && r->found == 0) {
        ctl_finish(k, "notfound", "no such message in the queue");
    } else {
        if ((k->op == STORE_OP_RELEASE || k->op == STORE_OP_REQUEUE) && srv->sched &&
            !srv->stopping)
            for (size_t i = 0; i < r->ndomains; i++)
                sched_queued(srv->sched, r->domains[i]);
        log_info("control: %s by uid %u: %" PRId64 " messages%s%s%s", k->cmd->name,
                 (unsigned)k->uid, r->messages, k->domain ? " of " : "",
                 k->domain ? (k->subdomains ? "." : "") : "", k->domain ? k->domain : "");
        jw_begin(&w, k);
        jw_int(&w, op_record(k->op), r->messages);
        jw_end(&w);
        ctl_finish(k, NULL, NULL);
    }
    store_op_result_free(r);
}

/* Hand the change to the store: the ids, or k->domain, or everything. */
static int start_op(struct ctl_conn *k, enum store_op op, int all, store_op_cb cb)
{
    struct store *st = k->c->srv->store;
    struct store_op_opts o;
    int rc;

    memset(&o, 0, sizeof o);
    o.op = op;
    if (k->nids > 0) {
        o.queue_ids = k->ids;
        o.nids = k->nids;
    } else if (k->domain) {
        o.domain = k->domain;
        o.subdomains = k->subdomains;
    } else {
        o.all = all;
    }
    k->op = op;
    rc = st ? store_op(st, &o, cb, k) : UV_ECANCELED;
    if (rc != 0) {
        ctl_finish(k, "internal", "cannot update the queue: %s", uv_strerror(rc));
        return rc;
    }
    k->busy++;
    return 0;
}

/* id=..., domain=D or all=1: exactly one of them (requeue alone: all). */
static void run_op(struct ctl_conn *k, enum store_op op, int bare_is_all)
{
    const char *d = ctl_arg_value(k, "domain");
    int all = ctl_parse_flag(ctl_arg_value(k, "all"));

    if (all < 0) {
        ctl_finish(k, "usage", "all takes 1");
        return;
    }
    if (bare_is_all && !d && k->nids == 0)
        all = 1;
    if ((d != NULL) + (k->nids > 0) + all != 1) {
        ctl_finish(k, "usage", "%s needs id=QUEUE_ID..., domain=DOMAIN or all=1", k->cmd->name);
        return;
    }
    if (d && ctl_take_domain(k, d) < 0)
        return;
    start_op(k, op, all, on_op);
}

static void cmd_hold(struct ctl_conn *k)
{
    run_op(k, STORE_OP_HOLD, 0);
}

static void cmd_release(struct ctl_conn *k)
{
    run_op(k, STORE_OP_RELEASE, 0);
}

static void cmd_delete(struct ctl_conn *k)
{
    run_op(k, STORE_OP_DELETE, 0);
}

static void cmd_requeue(struct ctl_conn *k)
{
    run_op(k, STORE_OP_REQUEUE, 1);
}

/* ---- bounce ----------------------------------------------------------------------- */

/* Each named message in turn: read it with its body, queue a DSN for every
 * recipient (RFC 3464, 5.0.0 "returned by the operator"; bounce.c skips
 * the null sender and NOTIFY=NEVER), then remove the recipients as failed
 * - only once the DSN is committed, so a crash cannot lose both. */
static void bounce_next(struct ctl_conn *k);

static void on_bounce_removed(int status, void *arg)
{
    struct ctl_conn *k = arg;

    if (status == STORE_OK)
        log_info("%s: removed (returned to the sender by uid %u)", k->batch->msgs[0].queue_id,
                 (unsigned)k->uid);
    if (!ctl_back(k))
        return;
    k->count += status == STORE_OK;
    store_batch_free(k->batch);
    k->batch = NULL;
    if (status != STORE_OK) {
        ctl_finish(k, "internal", "cannot update the queue");
        return;
    }
    k->idx++;
    bounce_next(k);
}

/* The DSN is committed (or nothing was due): remove the recipients. This
 * goes on even if the operator's connection has gone meanwhile, so that a
 * message whose DSN went out does not stay queued. */
static void on_bounce_queued(void *arg, int status)
{
    struct ctl_conn *k = arg;
    struct store *st = k->c->srv->store;
    const struct store_dmsg *m = &k->batch->msgs[0];
    struct store_update *u = NULL;
    int rc = UV_ECANCELED;

    k->busy--;
    if (status == 0 && st && (u = calloc(m->nrcpts, sizeof *u))) {
        for (size_t i = 0; i < m->nrcpts; i++) {
            u[i].rcpt_id = m->rcpts[i].id;
            u[i].msg_id = m->id;
            u[i].outcome = STORE_FAILED;
        }
        rc = store_update(st, u, m->nrcpts, on_bounce_removed, k);
        free(u);
    }
    if (rc == 0) {
        k->busy++;
        return;
    }
    if (status != 0)
        log_warn("%s: not removed: the delivery status notification could not be queued",
                 m->queue_id);
    else
        log_warn("%s: not removed after its bounce: %s", m->queue_id, uv_strerror(rc));
    if (k->closed) {
        ctl_conn_maybe_free(k);
        return;
    }
    ctl_finish(k, "internal", "%s: %s", m->queue_id,
               status != 0 ? "the delivery status notification could not be queued"
                           : "cannot update the queue");
}

static void on_bounce_read(struct store_batch *b, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct store_dmsg *m;
    struct bounce_rcpt *br;
    int rc;

    if (!ctl_back(k)) {
        store_batch_free(b);
        return;
    }
    if (status != STORE_OK) {
        store_batch_free(b);
        ctl_finish(k, "internal", "cannot read the queue");
        return;
    }
    if (b->n == 0 || b->msgs[0].nrcpts == 0) {
        store_batch_free(b); /* gone meanwhile, or never there */
        k->idx++;
        bounce_next(k);
        return;
    }
    k->found++;
    k->batch = b;
    m = &b->msgs[0];
    br = calloc(m->nrcpts, sizeof *br);
    if (!br) {
        ctl_finish(k, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        br[i].rcpt = &m->rcpts[i];
        br[i].code = 0;
        br[i].enh = "5.0.0"; /* RFC 3463 X.0.0: other undefined status */
        br[i].text = CTL_BOUNCE_TEXT;
        log_info("%s: to=<%s>, relay=none, delay=%" PRId64 ", delays=0/%" PRId64
                 "/0/0, dsn=5.0.0, status=bounced (%s)",
                 m->queue_id, m->rcpts[i].address, ctl_now_unix() - m->arrival,
                 ctl_now_unix() - m->arrival, CTL_BOUNCE_TEXT);
    }
    rc = bounce_send(k->c->srv, m, br, m->nrcpts, DSN_FAILURE, on_bounce_queued, k);
    free(br);
    if (rc != 0) {
        ctl_finish(k, "internal", "%s: cannot queue the delivery status notification: %s",
                   m->queue_id, uv_strerror(rc));
        return;
    }
    k->busy++;
}

static void bounce_next(struct ctl_conn *k)
{
    struct jw w;
    int rc;

    if (k->idx < k->nids) {
        if ((rc = read_message(k, k->ids[k->idx], 1, on_bounce_read)) != 0)
            ctl_finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
        return;
    }
    if (k->found == 0) {
        ctl_finish(k, "notfound", "no such message in the queue");
        return;
    }
    jw_begin(&w, k);
    jw_int(&w, "bounced", k->count);
    jw_end(&w);
    ctl_finish(k, NULL, NULL);
}

static void cmd_bounce(struct ctl_conn *k)
{
    if (k->nids == 0) {
        ctl_finish(k, "usage", "bounce needs id=QUEUE_ID...");
        return;
    }
    bounce_next(k);
}

/* ---- stats and reload ------------------------------------------------------------- */

static const char *const counter_names[STATS_NCOUNTERS] = {
    [STATS_RECEIVED] = "received",
    [STATS_DELIVERED] = "delivered",
    [STATS_DEFERRED] = "deferred",
    [STATS_BOUNCED] = "bounced",
    [STATS_ETRN] = "etrn",
    [STATS_QUOTA] = "quota_refused",
    [STATS_NOSPACE] = "nospace_refused",
};

/* A domain's counters; the totals (under "") also the reserve's refusals. */
static void write_counters(struct jw *w, const uint64_t *counters, int totals)
{
    static const enum stats_counter order[] = {STATS_DELIVERED, STATS_DEFERRED, STATS_BOUNCED,
                                               STATS_ETRN,      STATS_RECEIVED, STATS_QUOTA};

    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        jw_int(w, counter_names[order[i]], (int64_t)counters[order[i]]);
    if (totals)
        jw_int(w, counter_names[STATS_NOSPACE], (int64_t)counters[STATS_NOSPACE]);
}

struct stats_walker {
    struct ctl_conn *k;
    int has_totals; /* counters kept under "": they go into the last record */
};

static void stats_record(void *arg, const char *domain, const uint64_t *counters)
{
    struct stats_walker *sw = arg;
    struct jw w;

    if (!domain[0]) {
        sw->has_totals = 1;
        return;
    }
    jw_begin(&w, sw->k);
    jw_str(&w, "domain", domain);
    write_counters(&w, counters, 0);
    jw_end(&w);
}

static void stats_totals(void *arg, const char *domain, const uint64_t *counters)
{
    struct jw *w = arg;

    if (!domain[0])
        write_counters(w, counters, 1);
}

static void on_stats(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct server *srv;
    struct stats_walker sw = {k, 0};
    struct jw w;

    if (!report_usable(k, r, status))
        return;
    srv = k->c->srv;
    stats_walk(srv->stats, stats_record, &sw);
    jw_begin(&w, k);
    jw_str(&w, "domain", "");
    jw_int(&w, "queue_messages", r->messages);
    jw_int(&w, "queue_bytes", (int64_t)r->bytes);
    jw_int(&w, "connections", srv->nsessions);
    jw_int(&w, "uptime", ctl_now_unix() - k->c->started);
    if (srv->quota != NULL) {
        uint64_t free_bytes, minfree;
        quota_storage(srv->quota, &free_bytes, &minfree);
        jw_int(&w, "free_bytes", (int64_t)free_bytes);
        jw_int(&w, "queue_minfree", (int64_t)minfree);
    }
    if (sw.has_totals)
        stats_walk(srv->stats, stats_totals, &w);
    jw_end(&w);
    store_report_free(r);
    ctl_finish(k, NULL, NULL);
}

static void cmd_stats(struct ctl_conn *k)
{
    start_report(k, "", 0, on_stats); /* "": the queue's totals only */
}

/* ---- integrity (etrnctl check --deep, issue 9) ----------------------------------- */

static void on_integrity(int status, const char *detail, void *arg)
{
    struct ctl_conn *k = arg;
    struct server *srv;
    struct jw w;

    if (!ctl_back(k))
        return;
    srv = k->c->srv;
    if (status == STORE_ERR_IO) {
        ctl_finish(k, "internal", "the integrity check did not run: %s", detail);
        return;
    }
    jw_begin(&w, k);
    jw_str(&w, "integrity", status == STORE_OK ? "ok" : "damaged");
    jw_str(&w, "detail", detail);
    jw_end(&w);
    ctl_finish(k, NULL, NULL);
    /* As at start-up: relayd does not go on with a damaged queue. */
    if (status == STORE_CHECK_DAMAGED && srv->queue_damaged)
        srv->queue_damaged(srv, detail);
}

static void cmd_integrity(struct ctl_conn *k)
{
    struct store *st = k->c->srv->store;
    int rc = st ? store_check_start(st, on_integrity, k) : UV_ECANCELED;

    if (rc == 0)
        k->busy++;
    else
        ctl_finish(k, "internal", "cannot check the queue: %s", uv_strerror(rc));
}

static void cmd_reload(struct ctl_conn *k)
{
    struct server *srv = k->c->srv;
    struct jw w;

    if (!srv->reload || srv->stopping) {
        ctl_finish(k, "internal", "reload is not available now");
        return;
    }
    log_info("control: reload by uid %u", (unsigned)k->uid);
    srv->reload(srv);
    jw_begin(&w, k);
    jw_bool(&w, "reloaded", 1);
    jw_end(&w);
    ctl_finish(k, NULL, NULL);
}

/* ---- dispatch --------------------------------------------------------------------- */

static const struct ctl_cmd commands[] = {
    {"queue", 0, "domain sender recipient older_than held limit", cmd_queue},
    {"summary", 0, "senders", cmd_summary},
    {"domains", 0, "", cmd_domains},
    {"show", 0, "id part", cmd_show},
    {"stats", 0, "", cmd_stats},
    {"flush", 0, "domain id all", cmd_flush},
    {"hold", 1, "id domain all", cmd_hold},
    {"release", 1, "id domain all", cmd_release},
    {"delete", 1, "id domain all", cmd_delete},
    {"bounce", 1, "id", cmd_bounce},
    {"requeue", 1, "id domain all", cmd_requeue},
    {"reload", 1, "", cmd_reload},
    {"backup", 1, "", ctl_cmd_backup},
    {"integrity", 0, "", cmd_integrity},
};

const struct ctl_cmd *ctl_cmd_find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}
