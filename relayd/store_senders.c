/*
 * store_senders: the queue per sender domain, for `etrnctl summary
 * --senders` (Postfix's qshape -s). The message table has no index by
 * sender domain, and keeping one current would cost every intake, so this
 * report reads every message row once, grouped in SQL, on the reader
 * thread: its cost grows with the queue (see etrnctl(8)), unlike the
 * per-recipient-domain summary. It changes nothing and never runs on the
 * loop thread.
 */
#include "store.h"
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

/* ?1..?9: the age limits' edges (arrival > edge: younger than the limit);
 * ?10: the most domains. The domain is what follows the first '@' (a
 * sender's local part may be quoted and hold '@', rarely; SQLite has no
 * "last" instr), lower case. The sums are cumulative: younger than limit i. */
static const char senders_sql[] =
    "SELECT lower(CASE WHEN instr(sender, '@') > 0 THEN substr(sender, instr(sender, '@') + 1)"
    " ELSE '' END) AS d, count(*) AS n, sum(size), min(arrival),"
    " sum(arrival > ?1), sum(arrival > ?2), sum(arrival > ?3), sum(arrival > ?4),"
    " sum(arrival > ?5), sum(arrival > ?6), sum(arrival > ?7), sum(arrival > ?8),"
    " sum(arrival > ?9)"
    " FROM message GROUP BY d ORDER BY n DESC, d LIMIT ?10";

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct store_domain_report *)a)->domain,
                  ((const struct store_domain_report *)b)->domain);
}

int store_job_senders(struct store *st, struct store_req *r)
{
    enum { NB = STORE_AGE_BUCKETS - 1 };
    struct store_report *rep = r->report;
    struct store_domain_report *e;
    sqlite3_stmt *s = NULL, *t = NULL;
    const unsigned char *name;
    int64_t young[NB];
    size_t cap = 0;
    int rc, b;

    rc = sqlite3_prepare_v2(st->xdb, senders_sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        goto done;
    for (b = 0; b < NB; b++)
        sqlite3_bind_int64(s, b + 1, r->now - STORE_AGE_LIMIT(b));
    sqlite3_bind_int64(s, NB + 1, STORE_SENDERS_MAX);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if ((rc = store_grow((void **)&rep->d, &cap, rep->n, sizeof *rep->d)) != SQLITE_OK)
            goto done;
        e = &rep->d[rep->n];
        memset(e, 0, sizeof *e);
        name = sqlite3_column_text(s, 0);
        if (!(e->domain = strdup(name ? (const char *)name : ""))) {
            rc = SQLITE_NOMEM;
            goto done;
        }
        rep->n++;
        e->messages = sqlite3_column_int64(s, 1);
        e->bytes = (uint64_t)sqlite3_column_int64(s, 2);
        e->oldest = sqlite3_column_int64(s, 3);
        for (b = 0; b < NB; b++)
            young[b] = sqlite3_column_int64(s, 4 + b);
        e->ages[0] = young[0];
        for (b = 1; b < NB; b++)
            e->ages[b] = young[b] - young[b - 1];
        e->ages[NB] = e->messages - young[NB - 1];
    }
    if (rc != SQLITE_DONE)
        goto done;
    qsort(rep->d, rep->n, sizeof *rep->d, cmp_domain); /* as store_report: by name */
    rc = sqlite3_prepare_v2(st->xdb, "SELECT count(*), coalesce(sum(size), 0) FROM message", -1, &t,
                            NULL);
    if (rc != SQLITE_OK)
        goto done;
    if ((rc = sqlite3_step(t)) == SQLITE_ROW) {
        rep->messages = sqlite3_column_int64(t, 0);
        rep->bytes = (uint64_t)sqlite3_column_int64(t, 1);
        rc = SQLITE_OK;
    }
done:
    sqlite3_finalize(s);
    sqlite3_finalize(t);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int store_report_senders(struct store *st, int64_t now, store_report_cb cb, void *arg)
{
    struct store_req *r;

    if (!st || !cb)
        return UV_EINVAL;
    if (!(r = store_req_new(REQ_REPORT, arg)))
        return UV_ENOMEM;
    r->cb.report = cb;
    r->now = now;
    r->by_sender = 1;
    r->report = calloc(1, sizeof *r->report);
    if (!r->report) {
        store_req_free(r);
        return UV_ENOMEM;
    }
    return store_req_queue(st, r, 1);
}
