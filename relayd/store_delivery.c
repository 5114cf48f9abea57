/*
 * store_delivery: what delivery and the scheduler ask of the queue (issue
 * 3): a domain's due recipients with the bodies that are small enough
 * (store_fetch), the other bodies chunk by chunk as the site takes them
 * (store_read_chunk, issue 7), counts for ETRN (store_count), the domains
 * to schedule (store_scan_domains), the
 * outcome of a delivery (store_update) and a domain's last events
 * (store_domain_event). Runs on the store's threads; owns no connection or
 * thread of its own (store.c) and knows nothing of SMTP.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_int.h"

void store_count_free(struct store_count *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->ndomains; i++)
        free(c->domains[i]);
    free(c->domains);
    free(c->domain_messages);
    free(c);
}

void store_scan_free(struct store_domain_info *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(d[i].domain);
    free(d);
}

/* Apply the outcomes of one store_update inside the batch's transaction,
 * under a savepoint, so that either all of them or none apply; then delete
 * the messages they left without recipients (the body goes by ON DELETE
 * CASCADE). A recipient that is gone already (delivered by an earlier,
 * overlapping flush) is no error. Store thread. */
int store_upd_apply(struct store *st, const struct store_req *r, char *why, size_t whylen)
{
    sqlite3 *db = st->db;
    sqlite3_stmt *s;
    enum store_stmt which;
    int rc, status = STORE_ERR_IO, have_sp = 0;
    size_t i;

    rc = store_stmt_run(st, SS_SAVEPOINT);
    if (rc != SQLITE_OK)
        goto sql_fail;
    have_sp = 1;
    for (i = 0; i < r->nupd; i++) {
        const struct store_update *u = &r->upd[i];

        switch (u->outcome) {
        case STORE_DELIVERED:
        case STORE_FAILED:
            which = SS_DEL_RCPT;
            s = st->stmt[which];
            sqlite3_bind_int64(s, 1, u->rcpt_id);
            sqlite3_bind_int64(s, 2, u->msg_id);
            break;
        case STORE_DEFERRED:
            which = SS_DEFER_RCPT;
            s = st->stmt[which];
            sqlite3_bind_int64(s, 1, u->next_attempt);
            store_bind_str(s, 2, u->reply);
            sqlite3_bind_int64(s, 3, u->rcpt_id);
            sqlite3_bind_int64(s, 4, u->msg_id);
            break;
        case STORE_WARNED:
            which = SS_WARN_RCPT;
            s = st->stmt[which];
            sqlite3_bind_int64(s, 1, u->rcpt_id);
            sqlite3_bind_int64(s, 2, u->msg_id);
            break;
        default:
            snprintf(why, whylen, "update %zu: unknown outcome %d", i, (int)u->outcome);
            status = STORE_ERR_INVALID;
            goto rollback;
        }
        rc = store_stmt_run(st, which);
        if (rc != SQLITE_OK)
            goto sql_fail;
    }
    for (i = 0; i < r->nupd; i++) {
        if (r->upd[i].outcome != STORE_DELIVERED && r->upd[i].outcome != STORE_FAILED)
            continue;
        sqlite3_bind_int64(st->stmt[SS_DEL_MSG_IF_DONE], 1, r->upd[i].msg_id);
        rc = store_stmt_run(st, SS_DEL_MSG_IF_DONE);
        if (rc != SQLITE_OK)
            goto sql_fail;
    }
    rc = store_stmt_run(st, SS_RELEASE);
    if (rc != SQLITE_OK)
        goto sql_fail;
    return STORE_OK;

sql_fail:
    status = store_status_of(db, rc);
    snprintf(why, whylen, "update: %s", sqlite3_errmsg(db));
rollback:
    store_savepoint_undo(st, have_sp);
    return status;
}

/* Record a domain event in domain_state (an upsert). Store thread. */
int store_event_apply(struct store *st, const struct store_req *r, char *why, size_t whylen)
{
    enum store_stmt which;
    sqlite3_stmt *s;
    int rc;

    switch (r->ev) {
    case STORE_EV_ETRN:
        which = SS_EV_ETRN;
        break;
    case STORE_EV_DELIVERY:
        which = SS_EV_DELIVERY;
        break;
    case STORE_EV_ERROR:
        which = SS_EV_ERROR;
        break;
    default:
        snprintf(why, whylen, "unknown domain event %d", (int)r->ev);
        return STORE_ERR_IO;
    }
    s = st->stmt[which];
    store_bind_str(s, 1, r->domain);
    sqlite3_bind_int64(s, 2, r->when);
    if (which == SS_EV_ERROR)
        store_bind_str(s, 3, r->text);
    rc = store_stmt_run(st, which);
    if (rc != SQLITE_OK) {
        snprintf(why, whylen, "domain event: %s", sqlite3_errmsg(st->db));
        return store_status_of(st->db, rc);
    }
    return STORE_OK;
}

/*
 * store_fetch: one domain's queued recipients that are due, message by
 * message in id order past the cursor, at most max_msgs messages. The query
 * walks recipient_rdomain from (domain, queued, after_id) onwards, so it
 * reads this domain's rows only and stops as soon as the batch is full.
 * Reader thread, inside the job's read transaction.
 */
int store_job_fetch(struct store *st, struct store_req *r)
{
    struct store_batch *b = r->batch;
    struct store_dmsg *m = NULL;
    struct store_drcpt *d;
    sqlite3_stmt *s;
    size_t cap = 0, rcap = 0, i;
    uint64_t inlined = 0; /* body bytes in the batch (body_inline_total) */
    char *rev;
    const unsigned char *qid;
    int64_t mid;
    int rc;

    rev = store_domain_reversed(r->domain, "");
    if (!rev)
        return SQLITE_NOMEM;
    s = store_rstmt_get(st, RS_FETCH);
    if (!s) {
        free(rev);
        return sqlite3_errcode(st->xdb);
    }
    store_bind_str(s, 1, rev);
    sqlite3_bind_int64(s, 2, r->fo.after_id);
    sqlite3_bind_int64(s, 3, r->fo.due_before);
    sqlite3_bind_int64(s, 4, r->fo.arrived_before);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        mid = sqlite3_column_int64(s, 0);
        if (!m || m->id != mid) {
            if (b->n == r->fo.max_msgs)
                break;
            if ((rc = store_grow((void **)&b->msgs, &cap, b->n, sizeof *b->msgs)) != SQLITE_OK)
                break;
            m = &b->msgs[b->n++];
            memset(m, 0, sizeof *m);
            rcap = 0;
            m->id = mid;
            qid = sqlite3_column_text(s, 10);
            snprintf(m->queue_id, sizeof m->queue_id, "%s", qid ? (const char *)qid : "");
            if ((rc = store_col_dup(s, 11, &m->sender)) != SQLITE_OK ||
                (rc = store_col_dup(s, 12, &m->envid)) != SQLITE_OK)
                break;
            m->dsn_ret = sqlite3_column_int(s, 13);
            m->body_8bit = sqlite3_column_int(s, 14);
            m->arrival = sqlite3_column_int64(s, 15);
            m->size = (uint64_t)sqlite3_column_int64(s, 16);
            b->last_id = mid;
        }
        if ((rc = store_grow((void **)&m->rcpts, &rcap, m->nrcpts, sizeof *m->rcpts)) != SQLITE_OK)
            break;
        d = &m->rcpts[m->nrcpts++];
        memset(d, 0, sizeof *d);
        d->id = sqlite3_column_int64(s, 1);
        d->notify = (unsigned)sqlite3_column_int64(s, 5);
        d->attempts = sqlite3_column_int(s, 6);
        d->next_attempt = sqlite3_column_int64(s, 7);
        d->warned = sqlite3_column_int(s, 8);
        if ((rc = store_col_dup(s, 2, &d->address)) != SQLITE_OK ||
            (rc = store_col_dup(s, 3, &d->domain)) != SQLITE_OK ||
            (rc = store_col_dup(s, 4, &d->orcpt)) != SQLITE_OK ||
            (rc = store_col_dup(s, 9, &d->last_reply)) != SQLITE_OK)
            break;
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        rc = SQLITE_OK;
    store_rdone(st, s);
    free(rev);
    for (i = 0; rc == SQLITE_OK && i < b->n; i++) {
        uint64_t size = b->msgs[i].size;
        if (!r->fo.with_body &&
            (size > r->fo.body_inline_max || size > r->fo.body_inline_total - inlined))
            continue; /* streamed by store_read_chunk when it is delivered */
        rc = store_read_body(st, &b->msgs[i]);
        inlined += b->msgs[i].size;
    }
    return rc;
}

/*
 * store_read_chunk: one chunk of one body with the incremental blob API.
 * The blob handle lives only inside this job's read transaction, so
 * nothing is held while the site takes the bytes. A message that is not
 * there (any more) is told apart from a failure by looking its row up.
 * Reader thread, inside the job's read transaction.
 */
int store_job_chunk(struct store *st, struct store_req *r)
{
    sqlite3_blob *blob = NULL;
    int rc, total;

    rc = sqlite3_blob_open(st->xdb, "main", "message_body", "data", r->chunk_id, 0, &blob);
    if (rc != SQLITE_OK) {
        sqlite3_stmt *s = store_rstmt_get(st, RS_MSG_EXISTS);
        int found;
        if (!s)
            return rc;
        sqlite3_bind_int64(s, 1, r->chunk_id);
        found = sqlite3_step(s) == SQLITE_ROW;
        store_rdone(st, s);
        if (found)
            return rc;
        r->status = STORE_ERR_GONE;
        return SQLITE_OK;
    }
    total = sqlite3_blob_bytes(blob);
    if (r->chunk_off < (uint64_t)total) {
        size_t n = (size_t)((uint64_t)total - r->chunk_off);
        if (n > r->chunk_len)
            n = r->chunk_len;
        r->chunk_data = malloc(n);
        rc = r->chunk_data == NULL
                 ? SQLITE_NOMEM
                 : sqlite3_blob_read(blob, r->chunk_data, (int)n, (int)r->chunk_off);
        if (rc == SQLITE_OK)
            r->chunk_got = n;
    }
    sqlite3_blob_close(blob);
    return rc;
}

/* The domain parameters of an RS_*_EXACT / RS_*_SUB statement: the domain
 * reversed, and for its subdomains too the range below it. */
static void bind_domain(sqlite3_stmt *s, const char *rev, const char *lo, const char *hi,
                        int subdomains)
{
    store_bind_str(s, 1, rev);
    if (subdomains) {
        store_bind_str(s, 2, lo);
        store_bind_str(s, 3, hi);
    }
}

/* store_count: totals, then the distinct domains (each read back from a
 * row, not un-reversed). Reader thread, inside the job's read transaction. */
int store_job_count(struct store *st, struct store_req *r)
{
    struct store_count *c = r->count;
    char *rev = NULL, *lo = NULL, *hi = NULL, *dom;
    sqlite3_stmt *s;
    size_t cap = 0, mcap = 0;
    int rc = SQLITE_NOMEM;

    if (!(rev = store_domain_reversed(r->domain, "")) ||
        !(lo = store_domain_reversed(r->domain, ".")) ||
        !(hi = store_domain_reversed(r->domain, "/")))
        goto done;
    s = store_rstmt_get(st, r->subdomains ? RS_COUNT_SUB : RS_COUNT_EXACT);
    if (!s) {
        rc = sqlite3_errcode(st->xdb);
        goto done;
    }
    bind_domain(s, rev, lo, hi, r->subdomains);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        c->messages = sqlite3_column_int64(s, 0);
        c->recipients = sqlite3_column_int64(s, 1);
        rc = SQLITE_OK;
    }
    store_rdone(st, s);
    if (rc != SQLITE_OK || c->recipients == 0)
        goto done;

    s = store_rstmt_get(st, r->subdomains ? RS_DOMAINS_SUB : RS_DOMAINS_EXACT);
    if (!s) {
        rc = sqlite3_errcode(st->xdb);
        goto done;
    }
    bind_domain(s, rev, lo, hi, r->subdomains);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if ((rc = store_grow((void **)&c->domains, &cap, c->ndomains, sizeof *c->domains)) !=
                SQLITE_OK ||
            (rc = store_grow((void **)&c->domain_messages, &mcap, c->ndomains,
                             sizeof *c->domain_messages)) != SQLITE_OK ||
            (rc = store_col_dup(s, 0, &dom)) != SQLITE_OK)
            break;
        if (dom) {
            /* one domain exactly: its count is the total above */
            c->domain_messages[c->ndomains] =
                r->subdomains ? sqlite3_column_int64(s, 1) : c->messages;
            c->domains[c->ndomains++] = dom;
        }
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    store_rdone(st, s);
done:
    free(rev);
    free(lo);
    free(hi);
    return rc;
}

/* store_scan_domains: one row per domain with queued recipients, found by
 * seeking from one domain to the next in the (domain, state, next_attempt)
 * index; see struct store_domain_info for what that costs and gives. */
int store_job_scan(struct store *st, struct store_req *r)
{
    sqlite3_stmt *next = store_rstmt_get(st, RS_SCAN), *due = store_rstmt_get(st, RS_SCAN_DUE),
                 *old = store_rstmt_get(st, RS_SCAN_OLDEST);
    char *last = strdup(""), *rev = NULL;
    size_t cap = 0;
    int rc = SQLITE_OK;

    if (!next || !due || !old) {
        free(last);
        return sqlite3_errcode(st->xdb);
    }
    if (!last)
        return SQLITE_NOMEM;
    for (;;) {
        struct store_domain_info *d;
        char *dom = NULL;

        sqlite3_bind_text(next, 1, last, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(next);
        if (rc == SQLITE_ROW)
            rc = store_col_dup(next, 0, &dom);
        else if (rc == SQLITE_DONE)
            rc = SQLITE_DONE;
        store_rdone(st, next);
        if (rc != SQLITE_OK || !dom)
            break;
        free(last);
        last = dom;
        sqlite3_bind_text(due, 1, dom, -1, SQLITE_STATIC);
        rc = sqlite3_step(due);
        if (rc != SQLITE_ROW || sqlite3_column_type(due, 0) == SQLITE_NULL) {
            /* only held mail there */
            store_rdone(st, due);
            if (rc != SQLITE_ROW)
                break;
            continue;
        }
        if ((rc = store_grow((void **)&r->scan, &cap, r->nscan, sizeof *r->scan)) != SQLITE_OK) {
            store_rdone(st, due);
            break;
        }
        d = &r->scan[r->nscan++];
        memset(d, 0, sizeof *d);
        d->next_attempt = sqlite3_column_int64(due, 0);
        store_rdone(st, due);
        d->recipients = 1;
        if (!(d->domain = strdup(dom)) || !(rev = store_domain_reversed(dom, ""))) {
            rc = SQLITE_NOMEM;
            break;
        }
        sqlite3_bind_text(old, 1, rev, -1, SQLITE_STATIC);
        if ((rc = sqlite3_step(old)) == SQLITE_ROW)
            d->oldest = sqlite3_column_int64(old, 0);
        store_rdone(st, old);
        free(rev);
        rev = NULL;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            break;
        rc = SQLITE_OK;
    }
    free(rev);
    free(last);
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    return rc;
}

/* ---- delivery (issue 3) ----------------------------------------------------------- */

int store_fetch(struct store *st, const struct store_fetch_opts *o, store_fetch_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !o || !o->domain || !cb || o->max_msgs == 0)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_FETCH, arg)))
        return UV_ENOMEM;
    r->cb.fetch = cb;
    r->fo = *o;
    r->domain = strdup(o->domain);
    r->fo.domain = r->domain;
    r->batch = calloc(1, sizeof *r->batch);
    if (!r->domain || !r->batch) {
        store_req_free(r);
        return UV_ENOMEM;
    }
    return store_req_queue(st, r, 1);
}

int store_read_chunk(struct store *st, int64_t msg_id, uint64_t offset, size_t len,
                     store_chunk_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !cb || len == 0 || len > STORE_CHUNK_MAX)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_CHUNK, arg)))
        return UV_ENOMEM;
    r->cb.chunk = cb;
    r->chunk_id = msg_id;
    r->chunk_off = offset;
    r->chunk_len = len;
    return store_req_queue(st, r, 1);
}

int store_count(struct store *st, const char *domain, int subdomains, store_count_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !domain || !cb)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_COUNT, arg)))
        return UV_ENOMEM;
    r->cb.count = cb;
    r->subdomains = subdomains != 0;
    r->domain = strdup(domain);
    r->count = calloc(1, sizeof *r->count);
    if (!r->domain || !r->count) {
        store_req_free(r);
        return UV_ENOMEM;
    }
    return store_req_queue(st, r, 1);
}

int store_scan_domains(struct store *st, store_scan_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !cb)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_SCAN, arg)))
        return UV_ENOMEM;
    r->cb.scan = cb;
    return store_req_queue(st, r, 1);
}

int store_update(struct store *st, const struct store_update *u, size_t n, store_update_cb cb,
                 void *arg)
{
    struct store_req *r;

    if (!st || (n > 0 && !u))
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_UPDATE, arg)))
        return UV_ENOMEM;
    r->cb.update = cb;
    r->upd = calloc(n ? n : 1, sizeof *r->upd);
    if (!r->upd) {
        store_req_free(r);
        return UV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        r->upd[i] = u[i];
        r->upd[i].reply = NULL;
        r->nupd = i + 1; /* req_free frees the replies copied so far */
        if (u[i].reply && !(r->upd[i].reply = strdup(u[i].reply))) {
            store_req_free(r);
            return UV_ENOMEM;
        }
    }
    return store_req_queue(st, r, 0);
}

void store_domain_event(struct store *st, const char *domain, enum store_domain_event ev,
                        int64_t when, const char *text)
{
    struct store_req *r;
    int rc = UV_ENOMEM;

    if (!st || !domain)
        return;
    r = store_req_new(REQ_EVENT, NULL);
    if (r) {
        r->ev = ev;
        r->when = when;
        r->domain = strdup(domain);
        r->text = text ? strdup(text) : NULL;
        if (!r->domain || (text && !r->text))
            store_req_free(r);
        else
            rc = store_req_queue(st, r, 0);
    }
    if (rc != 0 && rc != UV_ECANCELED)
        log_warn("store: %s: domain event not recorded: %s", domain, uv_strerror(rc));
}
