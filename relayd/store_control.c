/*
 * store_control: what the operators' commands ask of the queue (issue 4):
 * listing messages (store_list), the per-domain report (store_report) and
 * changes by queue id, domain or everything (store_op: hold, release,
 * delete, requeue, due-now). Runs on the store's threads; owns no
 * connection or thread of its own (store.c) and knows nothing of the
 * control protocol.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_int.h"

/* Empty a report, keeping the struct itself. */
void store_report_clear(struct store_report *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->d[i].domain);
        free(r->d[i].last_error);
    }
    free(r->d);
    memset(r, 0, sizeof *r);
}

void store_report_free(struct store_report *r)
{
    if (!r)
        return;
    store_report_clear(r);
    free(r);
}

void store_opres_clear(struct store_op_result *r)
{
    for (size_t i = 0; i < r->ndomains; i++)
        free(r->domains[i]);
    free(r->domains);
    memset(r, 0, sizeof *r);
}

void store_op_result_free(struct store_op_result *r)
{
    if (!r)
        return;
    store_opres_clear(r);
    free(r);
}

/* ---- operator changes (issue 4) ---- */

const char *store_op_name(enum store_op op)
{
    static const char *const names[] = {
        [STORE_OP_HOLD] = "hold",       [STORE_OP_RELEASE] = "release",
        [STORE_OP_DELETE] = "delete",   [STORE_OP_REQUEUE] = "requeue",
        [STORE_OP_DUE_NOW] = "due-now",
    };

    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "unknown";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Statements of one operator change, prepared per request on the write
 * connection: the scope decides the WHERE clause, so each shape gets the
 * plan that uses its index (recipient_message for ids, recipient_rdomain
 * for a domain). */
struct op_stmts {
    sqlite3_stmt *find;    /* ids: message id of a queue id */
    sqlite3_stmt *domains; /* the distinct domains in scope */
    sqlite3_stmt *count;   /* the distinct messages in scope */
    sqlite3_stmt *mids;    /* DELETE by domain: those messages' ids */
    sqlite3_stmt *change;  /* the UPDATE or DELETE */
};

/* Bind the scope's parameters (?1.. as op_prepare wrote them): a message
 * id, or the reversed domain and its subdomain range. */
static void op_bind(sqlite3_stmt *s, const struct store_req *r, int64_t mid, const char *rev,
                    const char *lo, const char *hi)
{
    if (!s)
        return;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (r->oo.queue_ids) {
        sqlite3_bind_int64(s, 1, mid);
    } else if (r->oo.domain) {
        store_bind_str(s, 1, rev);
        if (r->oo.subdomains) {
            store_bind_str(s, 2, lo);
            store_bind_str(s, 3, hi);
        }
    }
}

static int op_prepare(struct store *st, const struct store_req *r, struct op_stmts *p)
{
    const char *scope, *state = "", *set = NULL;
    char sql[512];
    int rc;

    if (r->oo.queue_ids)
        scope = "message_id = ?1";
    else if (r->oo.domain && r->oo.subdomains)
        scope = "(rdomain = ?1 OR (rdomain >= ?2 AND rdomain < ?3))";
    else if (r->oo.domain)
        scope = "rdomain = ?1";
    else
        scope = "1";
    switch (r->oo.op) {
    case STORE_OP_HOLD:
        state = " AND state = 0";
        set = "state = 1";
        break;
    case STORE_OP_RELEASE:
        state = " AND state = 1";
        set = "state = 0";
        break;
    case STORE_OP_DUE_NOW:
        state = " AND state = 0";
        set = "next_attempt = 0";
        break;
    case STORE_OP_REQUEUE:
        set = "attempts = 0, next_attempt = 0, last_reply = NULL";
        break;
    case STORE_OP_DELETE:
        break;
    }
    if (r->oo.queue_ids &&
        (rc = sqlite3_prepare_v2(st->db, "SELECT id FROM message WHERE queue_id = ?1", -1, &p->find,
                                 NULL)) != SQLITE_OK)
        return rc;
    snprintf(sql, sizeof sql, "SELECT DISTINCT domain FROM recipient WHERE %s%s", scope, state);
    if ((rc = sqlite3_prepare_v2(st->db, sql, -1, &p->domains, NULL)) != SQLITE_OK)
        return rc;
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT message_id) FROM recipient WHERE %s%s", scope,
             state);
    if ((rc = sqlite3_prepare_v2(st->db, sql, -1, &p->count, NULL)) != SQLITE_OK)
        return rc;
    if (set)
        snprintf(sql, sizeof sql, "UPDATE recipient SET %s WHERE %s%s", set, scope, state);
    else if (r->oo.queue_ids) /* ON DELETE CASCADE takes recipients and body along */
        snprintf(sql, sizeof sql, "DELETE FROM message WHERE id = ?1");
    else if (r->oo.all)
        snprintf(sql, sizeof sql, "DELETE FROM message");
    else
        snprintf(sql, sizeof sql, "DELETE FROM recipient WHERE %s", scope);
    if ((rc = sqlite3_prepare_v2(st->db, sql, -1, &p->change, NULL)) != SQLITE_OK)
        return rc;
    if (!set && r->oo.domain) {
        snprintf(sql, sizeof sql, "SELECT DISTINCT message_id FROM recipient WHERE %s", scope);
        rc = sqlite3_prepare_v2(st->db, sql, -1, &p->mids, NULL);
    }
    return rc;
}

/* One unit of scope (a message, or the domain, or everything): note its
 * domains and messages, then change it. Store thread, inside the savepoint. */
static int op_unit(struct store *st, struct store_req *r, struct op_stmts *p, int64_t mid,
                   const char *rev, const char *lo, const char *hi, size_t *dcap)
{
    struct store_op_result *res = r->opres;
    int64_t *ids = NULL;
    size_t nids = 0, icap = 0;
    char *d;
    int rc;

    op_bind(p->domains, r, mid, rev, lo, hi);
    while ((rc = sqlite3_step(p->domains)) == SQLITE_ROW) {
        if ((rc = store_grow((void **)&res->domains, dcap, res->ndomains, sizeof *res->domains)) !=
                SQLITE_OK ||
            (rc = store_col_dup(p->domains, 0, &d)) != SQLITE_OK)
            goto done;
        if (d)
            res->domains[res->ndomains++] = d;
    }
    if (rc != SQLITE_DONE)
        goto done;
    op_bind(p->count, r, mid, rev, lo, hi);
    if ((rc = sqlite3_step(p->count)) != SQLITE_ROW)
        goto done;
    res->messages += sqlite3_column_int64(p->count, 0);
    if (p->mids) {
        op_bind(p->mids, r, mid, rev, lo, hi);
        while ((rc = sqlite3_step(p->mids)) == SQLITE_ROW) {
            if ((rc = store_grow((void **)&ids, &icap, nids, sizeof *ids)) != SQLITE_OK)
                goto done;
            ids[nids++] = sqlite3_column_int64(p->mids, 0);
        }
        if (rc != SQLITE_DONE)
            goto done;
    }
    op_bind(p->change, r, mid, rev, lo, hi);
    if ((rc = sqlite3_step(p->change)) != SQLITE_DONE)
        goto done;
    rc = SQLITE_OK;
    /* DELETE by domain: the messages it left without recipients go. */
    for (size_t i = 0; i < nids && rc == SQLITE_OK; i++) {
        sqlite3_bind_int64(st->stmt[SS_DEL_MSG_IF_DONE], 1, ids[i]);
        rc = store_stmt_run(st, SS_DEL_MSG_IF_DONE);
    }
done:
    free(ids);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* An operator change (store_op) inside the batch's transaction, under a
 * savepoint: all of it or nothing. Store thread. */
int store_op_apply(struct store *st, struct store_req *r, char *why, size_t whylen)
{
    struct op_stmts p = {NULL, NULL, NULL, NULL, NULL};
    struct store_op_result *res = r->opres;
    char *rev = NULL, *lo = NULL, *hi = NULL;
    size_t dcap = 0, i, n;
    int rc, status = STORE_ERR_IO, have_sp = 0;
    int64_t mid;

    rc = store_stmt_run(st, SS_SAVEPOINT);
    if (rc != SQLITE_OK)
        goto sql_fail;
    have_sp = 1;
    if (r->oo.domain && (!(rev = store_domain_reversed(r->oo.domain, "")) ||
                         !(lo = store_domain_reversed(r->oo.domain, ".")) ||
                         !(hi = store_domain_reversed(r->oo.domain, "/")))) {
        rc = SQLITE_NOMEM;
        goto sql_fail;
    }
    if ((rc = op_prepare(st, r, &p)) != SQLITE_OK)
        goto sql_fail;
    if (r->oo.queue_ids) {
        for (i = 0; i < r->oo.nids; i++) {
            sqlite3_reset(p.find);
            store_bind_str(p.find, 1, r->oo.queue_ids[i]);
            rc = sqlite3_step(p.find);
            if (rc == SQLITE_DONE)
                continue; /* not (or no longer) in the queue */
            if (rc != SQLITE_ROW)
                goto sql_fail;
            mid = sqlite3_column_int64(p.find, 0);
            sqlite3_reset(p.find);
            res->found++;
            if ((rc = op_unit(st, r, &p, mid, NULL, NULL, NULL, &dcap)) != SQLITE_OK)
                goto sql_fail;
        }
    } else {
        if ((rc = op_unit(st, r, &p, 0, rev, lo, hi, &dcap)) != SQLITE_OK)
            goto sql_fail;
        res->found = res->messages;
    }
    /* The domains once each, sorted. */
    if (res->ndomains > 1) {
        qsort(res->domains, res->ndomains, sizeof *res->domains, cmp_str);
        for (i = 1, n = 1; i < res->ndomains; i++) {
            if (strcmp(res->domains[i], res->domains[n - 1]) == 0)
                free(res->domains[i]);
            else
                res->domains[n++] = res->domains[i];
        }
        res->ndomains = n;
    }
    rc = store_stmt_run(st, SS_RELEASE);
    if (rc != SQLITE_OK)
        goto sql_fail;
    status = STORE_OK;
    goto done;

sql_fail:
    status = store_status_of(st->db, rc);
    snprintf(why, whylen, "%s: %s", store_op_name(r->oo.op),
             rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(st->db));
    store_savepoint_undo(st, have_sp);
    store_opres_clear(res);
done:
    sqlite3_finalize(p.find);
    sqlite3_finalize(p.domains);
    sqlite3_finalize(p.count);
    sqlite3_finalize(p.mids);
    sqlite3_finalize(p.change);
    free(rev);
    free(lo);
    free(hi);
    return status;
}

/* ---- operator reads (issue 4) ---- */

/* A one-shot reader statement (its SQL depends on the request), counted
 * like the others by rfinal. Reader thread. */
static int rprep(struct store *st, const char *sql, sqlite3_stmt **out)
{
    return sqlite3_prepare_v2(st->xdb, sql, -1, out, NULL);
}

static void rfinal(struct store *st, sqlite3_stmt *s)
{
    if (s) {
        store_rdone(st, s);
        sqlite3_finalize(s);
    }
}

/* ASCII lower case copy: what SQLite's lower() does without ICU, so a
 * needle and lower(column) agree. */
static char *ascii_lower(const char *s)
{
    char *out = strdup(s);

    for (char *p = out; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return out;
}

/* Every recipient of message m, any state. */
static int list_rcpts(struct store *st, struct store_dmsg *m)
{
    sqlite3_stmt *s = store_rstmt_get(st, RS_LIST_RCPTS);
    struct store_drcpt *d;
    size_t cap = 0;
    int rc;

    if (!s)
        return sqlite3_errcode(st->xdb);
    sqlite3_bind_int64(s, 1, m->id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if ((rc = store_grow((void **)&m->rcpts, &cap, m->nrcpts, sizeof *m->rcpts)) != SQLITE_OK)
            break;
        d = &m->rcpts[m->nrcpts++];
        memset(d, 0, sizeof *d);
        d->id = sqlite3_column_int64(s, 0);
        d->notify = (unsigned)sqlite3_column_int64(s, 4);
        d->attempts = sqlite3_column_int(s, 5);
        d->next_attempt = sqlite3_column_int64(s, 6);
        d->warned = sqlite3_column_int(s, 7);
        d->state = sqlite3_column_int(s, 9);
        if ((rc = store_col_dup(s, 1, &d->address)) != SQLITE_OK ||
            (rc = store_col_dup(s, 2, &d->domain)) != SQLITE_OK ||
            (rc = store_col_dup(s, 3, &d->orcpt)) != SQLITE_OK ||
            (rc = store_col_dup(s, 8, &d->last_reply)) != SQLITE_OK)
            break;
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    store_rdone(st, s);
    return rc;
}

/*
 * store_list: the messages that pass the filters, in id order past the
 * cursor. Each filter on recipients is an IN (subquery) on its own index
 * (recipient_rdomain for a domain, schema 003's recipient_held for held
 * mail; "message_id > ?1" in each makes SQLite take the partial index),
 * and SQLite drives the messages from that list by primary key, so a page
 * costs what its filters select, not the whole queue. Reader thread.
 */
int store_job_list(struct store *st, struct store_req *r)
{
    const struct store_list_opts *o = &r->lo;
    struct store_batch *b = r->batch;
    struct store_dmsg *m;
    sqlite3_stmt *s = NULL;
    char sql[1024], *rev = NULL, *lo = NULL, *hi = NULL;
    const unsigned char *qid;
    size_t cap = 0, nrcpts = 0, off;
    int rc = SQLITE_NOMEM;

    off = (size_t)snprintf(sql, sizeof sql,
                           "SELECT m.id, m.queue_id, m.sender, m.envid, m.dsn_ret, m.body_8bit,"
                           " m.arrival, m.size, m.client_addr, m.client_helo FROM message AS m"
                           " WHERE m.id > ?1 AND m.arrival < ?2");
    if (o->queue_id)
        off += (size_t)snprintf(sql + off, sizeof sql - off, " AND m.queue_id = ?3");
    if (o->sender)
        off += (size_t)snprintf(sql + off, sizeof sql - off, " AND instr(lower(m.sender), ?4) > 0");
    if (o->recipient)
        off += (size_t)snprintf(sql + off, sizeof sql - off,
                                " AND m.id IN (SELECT message_id FROM recipient"
                                " WHERE message_id > ?1 AND instr(lower(address), ?5) > 0)");
    if (o->domain)
        off += (size_t)snprintf(sql + off, sizeof sql - off,
                                o->subdomains
                                    ? " AND m.id IN (SELECT message_id FROM recipient"
                                      " WHERE message_id > ?1"
                                      " AND (rdomain = ?6 OR (rdomain >= ?7 AND rdomain < ?8)))"
                                    : " AND m.id IN (SELECT message_id FROM recipient"
                                      " WHERE message_id > ?1 AND rdomain = ?6)");
    if (o->held)
        off += (size_t)snprintf(sql + off, sizeof sql - off,
                                " AND m.id IN (SELECT message_id FROM recipient"
                                " WHERE message_id > ?1 AND state = 1)");
    snprintf(sql + off, sizeof sql - off, " ORDER BY m.id LIMIT ?9");
    if (o->domain && (!(rev = store_domain_reversed(o->domain, "")) ||
                      !(lo = store_domain_reversed(o->domain, ".")) ||
                      !(hi = store_domain_reversed(o->domain, "/"))))
        goto done;
    if ((rc = rprep(st, sql, &s)) != SQLITE_OK)
        goto done;
    /* Parameters a clause did not write are out of range or unused: binding
     * them is harmless, and their errors are ignored. */
    sqlite3_bind_int64(s, 1, o->after_id);
    sqlite3_bind_int64(s, 2, o->arrived_before);
    store_bind_str(s, 3, o->queue_id);
    store_bind_str(s, 4, o->sender);
    store_bind_str(s, 5, o->recipient);
    store_bind_str(s, 6, rev);
    store_bind_str(s, 7, lo);
    store_bind_str(s, 8, hi);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)(o->max_msgs > INT64_MAX ? INT64_MAX : o->max_msgs));
    while (nrcpts < STORE_LIST_MAX_RCPTS && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        if ((rc = store_grow((void **)&b->msgs, &cap, b->n, sizeof *b->msgs)) != SQLITE_OK)
            break;
        m = &b->msgs[b->n++];
        memset(m, 0, sizeof *m);
        m->id = sqlite3_column_int64(s, 0);
        qid = sqlite3_column_text(s, 1);
        snprintf(m->queue_id, sizeof m->queue_id, "%s", qid ? (const char *)qid : "");
        m->dsn_ret = sqlite3_column_int(s, 4);
        m->body_8bit = sqlite3_column_int(s, 5);
        m->arrival = sqlite3_column_int64(s, 6);
        m->size = (uint64_t)sqlite3_column_int64(s, 7);
        b->last_id = m->id;
        if ((rc = store_col_dup(s, 2, &m->sender)) != SQLITE_OK ||
            (rc = store_col_dup(s, 3, &m->envid)) != SQLITE_OK ||
            (rc = store_col_dup(s, 8, &m->client_addr)) != SQLITE_OK ||
            (rc = store_col_dup(s, 9, &m->client_helo)) != SQLITE_OK ||
            (rc = list_rcpts(st, m)) != SQLITE_OK ||
            (o->with_body && (rc = store_read_body(st, m)) != SQLITE_OK))
            break;
        nrcpts += m->nrcpts;
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        rc = SQLITE_OK;
done:
    rfinal(st, s);
    free(rev);
    free(lo);
    free(hi);
    return rc;
}

/* Is d (normalised) domain, or with sub also a domain below it? */
static int domain_in(const char *d, const char *domain, int sub)
{
    size_t ld = strlen(d), lp = strlen(domain);

    if (ld == lp)
        return strcmp(d, domain) == 0;
    return sub && ld > lp && d[ld - lp - 1] == '.' && strcmp(d + ld - lp, domain) == 0;
}

static int cmp_report(const void *a, const void *b)
{
    return strcmp(((const struct store_domain_report *)a)->domain,
                  ((const struct store_domain_report *)b)->domain);
}

/* The domain_state rows in scope, into the report: onto the domain's entry
 * when it has mail (the first nmail entries, sorted), else a new entry. */
static int report_state(struct store *st, struct store_req *r, size_t nmail, size_t *cap)
{
    struct store_report *rep = r->report;
    struct store_domain_report key, *e;
    sqlite3_stmt *s = store_rstmt_get(st, RS_STATE);
    const unsigned char *name;
    int rc;

    if (!s)
        return sqlite3_errcode(st->xdb);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        name = sqlite3_column_text(s, 0);
        if (!name || (r->domain && !domain_in((const char *)name, r->domain, r->subdomains)))
            continue;
        key.domain = (char *)name;
        e = nmail ? bsearch(&key, rep->d, nmail, sizeof *rep->d, cmp_report) : NULL;
        if (!e) {
            if ((rc = store_grow((void **)&rep->d, cap, rep->n, sizeof *rep->d)) != SQLITE_OK)
                break;
            e = &rep->d[rep->n++];
            memset(e, 0, sizeof *e);
            if (!(e->domain = strdup((const char *)name))) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        e->last_etrn = sqlite3_column_int64(s, 1);
        e->last_delivery = sqlite3_column_int64(s, 2);
        e->last_error_at = sqlite3_column_int64(s, 4);
        free(e->last_error);
        if ((rc = store_col_dup(s, 3, &e->last_error)) != SQLITE_OK)
            break;
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    store_rdone(st, s);
    return rc;
}

/* The id from which on every message arrived after t: the smallest id whose
 * message has arrival > t, or hi + 1 when there is none. A binary search
 * over the ids in [lo, hi], one primary-key seek per step, that relies on
 * ids growing with arrival (store.c hands them out in commit order); gaps
 * left by delivered messages are stepped over by the seek. Reader thread. */
static int age_cutoff(struct store *st, int64_t lo, int64_t hi, int64_t t, int64_t *out)
{
    sqlite3_stmt *s = store_rstmt_get(st, RS_ID_AT);
    int64_t end = hi + 1, mid, id;
    int rc = SQLITE_OK;

    if (!s)
        return sqlite3_errcode(st->xdb);
    while (lo < end) {
        mid = lo + (end - lo) / 2;
        sqlite3_bind_int64(s, 1, mid);
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
            store_rdone(st, s);
            if (rc != SQLITE_DONE)
                return rc;
            end = mid; /* nothing from mid on */
            continue;
        }
        id = sqlite3_column_int64(s, 0);
        if (sqlite3_column_int64(s, 1) > t)
            end = mid; /* no message in [mid, id) */
        else
            lo = id + 1;
        store_rdone(st, s);
    }
    *out = end;
    return SQLITE_OK;
}

/* schema 005's domain_age: messages per domain and 5-minute arrival slot.
 * Every STORE_AGE_LIMIT is a multiple of it. */
#define AGE_SLOT 300

/* The slot of time t (floor division, as SQLite's arrival / 300 for the
 * times after 1970 that it is given). */
static int64_t age_slot(int64_t t)
{
    return t >= 0 ? t / AGE_SLOT : (t - AGE_SLOT + 1) / AGE_SLOT;
}

/*
 * The age buckets of every domain in the report (issue 9). A message is
 * younger than a bucket's limit L when it arrived after now - L. Whole
 * 5-minute slots after that instant are summed from domain_age (at most
 * 257 rows per domain); the slot the instant falls in is counted message by
 * message on the domain's index, between the message ids where that slot's
 * part after the instant begins and ends (found once for the whole queue by
 * age_cutoff). The oldest bucket is the domain's messages (schema 004) less
 * the younger ones. So a report costs the domains, their recent slots and
 * at most five minutes of mail per bucket, not the queue. Reader thread.
 */
static int report_ages(struct store *st, struct store_req *r, size_t n)
{
    enum { NB = STORE_AGE_BUCKETS - 1 }; /* the limits */
    struct store_report *rep = r->report;
    sqlite3_stmt *ids = store_rstmt_get(st, RS_ID_RANGE), *slots, *cnt;
    int64_t edge[NB], slot[NB], plo[NB], phi[NB], young[NB], minid, maxid, sl, v;
    int rc, b;
    char *rev;

    if (!ids)
        return sqlite3_errcode(st->xdb);
    rc = sqlite3_step(ids);
    minid = rc == SQLITE_ROW ? sqlite3_column_int64(ids, 0) : 0;
    maxid = rc == SQLITE_ROW ? sqlite3_column_int64(ids, 1) : 0;
    store_rdone(st, ids);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    for (b = 0; b < NB; b++) {
        edge[b] = r->now - STORE_AGE_LIMIT(b); /* younger: arrival > edge */
        slot[b] = age_slot(edge[b]);
        /* the part of slot[b] after edge[b]: ids [plo, phi) */
        if ((rc = age_cutoff(st, minid, maxid, edge[b], &plo[b])) != SQLITE_OK ||
            (rc = age_cutoff(st, minid, maxid, slot[b] * AGE_SLOT + AGE_SLOT - 1, &phi[b])) !=
                SQLITE_OK)
            return rc;
    }
    if (!(slots = store_rstmt_get(st, RS_AGE_SLOTS)) || !(cnt = store_rstmt_get(st, RS_AGE_COUNT)))
        return sqlite3_errcode(st->xdb);
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        struct store_domain_report *e = &rep->d[i];

        memset(young, 0, sizeof young);
        store_bind_str(slots, 1, e->domain);
        sqlite3_bind_int64(slots, 2, slot[NB - 1]);
        while ((rc = sqlite3_step(slots)) == SQLITE_ROW) {
            sl = sqlite3_column_int64(slots, 0);
            v = sqlite3_column_int64(slots, 1);
            for (b = 0; b < NB; b++)
                if (sl > slot[b])
                    young[b] += v;
        }
        store_rdone(st, slots);
        if (rc != SQLITE_DONE)
            return rc;
        rc = SQLITE_OK;
        if (!(rev = store_domain_reversed(e->domain, "")))
            return SQLITE_NOMEM;
        for (b = 0; b < NB && rc == SQLITE_OK; b++) {
            if (plo[b] >= phi[b])
                continue;
            store_bind_str(cnt, 1, rev);
            sqlite3_bind_int64(cnt, 2, plo[b]);
            sqlite3_bind_int64(cnt, 3, phi[b]);
            if ((rc = sqlite3_step(cnt)) == SQLITE_ROW) {
                young[b] += sqlite3_column_int64(cnt, 0);
                rc = SQLITE_OK;
            }
            store_rdone(st, cnt);
        }
        free(rev);
        e->ages[0] = young[0];
        for (b = 1; b < NB; b++)
            e->ages[b] = young[b] - young[b - 1];
        e->ages[NB] = e->messages - young[NB - 1];
    }
    return rc;
}

/* One int64 from reader statement which bound to text param; *out stays
 * as it is when the result is NULL. Reader thread. */
static int rone(struct store *st, enum store_rstmt which, const char *param, int64_t *out)
{
    sqlite3_stmt *s = store_rstmt_get(st, which);
    int rc;

    if (!s)
        return sqlite3_errcode(st->xdb);
    store_bind_str(s, 1, param);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        *out = sqlite3_column_int64(s, 0);
    store_rdone(st, s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The earliest arrival of each domain's mail: that of its message with the
 * smallest id, among its queued and among its held recipients (two index
 * seeks), since ids grow with arrival (as the scheduler's expiry assumes,
 * store.c RS_SCAN_OLDEST). When domain_age has an earlier 5-minute slot for
 * the domain than that message's - the clock went back - its messages are
 * read to find the earliest. Reader thread. */
static int report_oldest(struct store *st, struct store_req *r, size_t n)
{
    struct store_domain_report *e;
    int64_t first;
    char *rev;
    int rc = SQLITE_OK;

    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        e = &r->report->d[i];
        first = INT64_MAX;
        if (!(rev = store_domain_reversed(e->domain, "")))
            return SQLITE_NOMEM;
        if ((rc = rone(st, RS_OLDEST, rev, &e->oldest)) == SQLITE_OK &&
            (rc = rone(st, RS_AGE_FIRST, e->domain, &first)) == SQLITE_OK &&
            first < age_slot(e->oldest))
            rc = rone(st, RS_OLDEST_SCAN, rev, &e->oldest);
        free(rev);
    }
    return rc;
}

/*
 * store_report: the domains in scope with mail, from domain_usage (kept by
 * schema 004/005's triggers in the transactions that change the queue), so
 * a report costs the number of domains, not of messages (issue 9); their
 * oldest arrival and age buckets (above); then domain_state; then the
 * totals of the whole queue from queue_totals (005). Reader thread.
 */
int store_job_report(struct store *st, struct store_req *r)
{
    struct store_report *rep = r->report;
    struct store_domain_report *e;
    sqlite3_stmt *s = NULL;
    const unsigned char *name;
    size_t cap = 0, nmail = 0;
    int rc = SQLITE_OK;

    if (r->domain && !r->domain[0])
        goto totals; /* "": the totals only */
    if (!(s = store_rstmt_get(st, RS_USAGE)))
        return sqlite3_errcode(st->xdb);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        name = sqlite3_column_text(s, 0);
        if (!name || (r->domain && !domain_in((const char *)name, r->domain, r->subdomains)))
            continue;
        if ((rc = store_grow((void **)&rep->d, &cap, rep->n, sizeof *rep->d)) != SQLITE_OK)
            break;
        e = &rep->d[rep->n];
        memset(e, 0, sizeof *e);
        if (!(e->domain = strdup((const char *)name))) {
            rc = SQLITE_NOMEM;
            break;
        }
        rep->n++;
        e->messages = sqlite3_column_int64(s, 1);
        e->recipients = sqlite3_column_int64(s, 2);
        e->bytes = (uint64_t)sqlite3_column_int64(s, 3);
        e->queued_messages = sqlite3_column_int64(s, 4);
        e->held_messages = sqlite3_column_int64(s, 5);
    }
    store_rdone(st, s);
    if (rc != SQLITE_DONE)
        goto done;
    nmail = rep->n;
    if ((rc = report_oldest(st, r, nmail)) != SQLITE_OK ||
        (rc = report_ages(st, r, nmail)) != SQLITE_OK ||
        (rc = report_state(st, r, nmail, &cap)) != SQLITE_OK)
        goto done;
    if (rep->n > nmail)
        qsort(rep->d, rep->n, sizeof *rep->d, cmp_report);
totals : {
    sqlite3_stmt *t = store_rstmt_get(st, RS_TOTALS);

    if (!t) {
        rc = sqlite3_errcode(st->xdb);
        goto done;
    }
    rc = sqlite3_step(t);
    if (rc == SQLITE_ROW) {
        rep->messages = sqlite3_column_int64(t, 0);
        rep->bytes = (uint64_t)sqlite3_column_int64(t, 1);
        rc = SQLITE_OK;
    }
    store_rdone(st, t);
}
done:
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ---- operator commands (issue 4) ------------------------------------------------- */

int store_list(struct store *st, const struct store_list_opts *o, store_fetch_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !o || !cb || o->max_msgs == 0)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_LIST, arg)))
        return UV_ENOMEM;
    r->cb.fetch = cb;
    r->lo = *o;
    r->batch = calloc(1, sizeof *r->batch);
    if (!r->batch || (o->queue_id && !(r->lo_qid = strdup(o->queue_id))) ||
        (o->domain && !(r->domain = strdup(o->domain))) ||
        (o->sender && !(r->lo_sender = ascii_lower(o->sender))) ||
        (o->recipient && !(r->lo_rcpt = ascii_lower(o->recipient)))) {
        store_req_free(r);
        return UV_ENOMEM;
    }
    r->lo.queue_id = r->lo_qid;
    r->lo.domain = r->domain;
    r->lo.sender = r->lo_sender;
    r->lo.recipient = r->lo_rcpt;
    return store_req_queue(st, r, 1);
}

int store_report(struct store *st, const char *domain, int subdomains, int64_t now,
                 store_report_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !cb)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_REPORT, arg)))
        return UV_ENOMEM;
    r->cb.report = cb;
    r->now = now;
    r->subdomains = domain && subdomains;
    r->report = calloc(1, sizeof *r->report);
    if (!r->report || (domain && !(r->domain = strdup(domain)))) {
        store_req_free(r);
        return UV_ENOMEM;
    }
    return store_req_queue(st, r, 1);
}

int store_op(struct store *st, const struct store_op_opts *o, store_op_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !o || !cb || (unsigned)o->op > STORE_OP_DUE_NOW ||
        (o->queue_ids != NULL) + (o->domain != NULL) + (o->all != 0) != 1 ||
        (o->queue_ids && o->nids == 0))
        return UV_EINVAL;
    for (size_t i = 0; o->queue_ids && i < o->nids; i++)
        if (!o->queue_ids[i])
            return UV_EINVAL;
    if (!(r = store_req_new(REQ_OP, arg)))
        return UV_ENOMEM;
    r->cb.op = cb;
    r->oo = *o;
    r->oo.all = o->all != 0;
    r->oo.subdomains = o->domain && o->subdomains;
    r->opres = calloc(1, sizeof *r->opres);
    if (!r->opres || (o->domain && !(r->domain = strdup(o->domain))))
        goto nomem;
    if (o->queue_ids) {
        if (!(r->ids = calloc(o->nids, sizeof *r->ids)))
            goto nomem;
        for (; r->nids < o->nids; r->nids++)
            if (!(r->ids[r->nids] = strdup(o->queue_ids[r->nids])))
                goto nomem;
    }
    r->oo.queue_ids = (const char *const *)r->ids;
    r->oo.domain = r->domain;
    return store_req_queue(st, r, 0);
nomem:
    store_req_free(r);
    return UV_ENOMEM;
}
