/*
 * store_usage: what each recipient domain holds in the queue, for quotas
 * and the free-space reserve (issue 11). The triggers of schema 004 keep
 * domain_usage current inside every transaction that changes the queue; this
 * file keeps a copy of that table in memory, reads back the rows a batch
 * changed (SQLite's update hook names them) once the batch is over, and hands
 * the changes to the loop as deltas before that batch's callbacks run, so a
 * session that gets its 250 already sees its message counted. It also keeps
 * the bytes of the database's free pages, which the reserve counts as free.
 * Nothing here decides a quota: that is quota.c's.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include "store.h"
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "log.h"

/* One row of domain_usage, by id (ids are never reused: rows stay at zero). */
struct usage_row {
    char *domain; /* NULL: no such row (yet) */
    int64_t messages;
    int64_t bytes;
    int dirty; /* changed in the current batch */
};

/* A change for the loop: the domain's new values minus the old. */
struct usage_delta {
    struct usage_delta *next;
    int64_t messages;
    int64_t bytes;
    char domain[];
};

struct store_usage_state {
    struct usage_row *rows; /* indexed by id; the store thread's (walks hold mu) */
    size_t nrows;
    int64_t *dirty; /* ids changed since the last batch ended: the store thread's */
    size_t ndirty, dirtycap;
    sqlite3_stmt *row_stmt;    /* the write connection's */
    uv_mutex_t *mu;            /* the store's: rows are walked by the loop */
    struct usage_delta *out;   /* for the loop (mu) */
    struct usage_delta **tail; /* (mu) */
    uint64_t free_bytes;       /* (mu) */
    store_usage_cb cb;         /* the loop's */
    void *cb_arg;
};

static int grow_rows(struct store_usage_state *u, int64_t id)
{
    size_t n = u->nrows ? u->nrows : 64;
    struct usage_row *p;

    if (id < 0 || (uint64_t)id >= (uint64_t)SIZE_MAX / sizeof(*p) / 2)
        return -1;
    while (n <= (size_t)id)
        n *= 2;
    if (n == u->nrows)
        return 0;
    uv_mutex_lock(u->mu);
    p = realloc(u->rows, n * sizeof(*p));
    if (p != NULL) {
        memset(p + u->nrows, 0, (n - u->nrows) * sizeof(*p));
        u->rows = p;
        u->nrows = n;
    }
    uv_mutex_unlock(u->mu);
    return p != NULL ? 0 : -1;
}

/* SQLite calls this for every row a statement (or a trigger) changes on the
 * write connection. It may not touch the connection: just note the id. */
static void on_update(void *arg, int op, const char *db, const char *table, sqlite3_int64 id)
{
    struct store_usage_state *u = arg;

    (void)op;
    (void)db;
    if (strcmp(table, "domain_usage") != 0)
        return;
    if ((size_t)id < u->nrows && u->rows[id].dirty)
        return;
    if (grow_rows(u, id) < 0)
        return; /* the next walk from zero (reload) puts it right */
    if (u->ndirty == u->dirtycap) {
        size_t cap = u->dirtycap ? u->dirtycap * 2 : 64;
        int64_t *p = realloc(u->dirty, cap * sizeof(*p));
        if (p == NULL)
            return;
        u->dirty = p;
        u->dirtycap = cap;
    }
    u->rows[id].dirty = 1;
    u->dirty[u->ndirty++] = id;
}

static uint64_t free_page_bytes(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    uint64_t pages = 0, size = 0;

    if (sqlite3_prepare_v2(db, "PRAGMA freelist_count", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        pages = (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        size = (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return pages * size;
}

int store_usage_open(struct store *st, char *err, size_t errlen)
{
    struct store_usage_state *u = calloc(1, sizeof(*u));
    sqlite3_stmt *all = NULL;
    int rc;

    if (u == NULL) {
        snprintf(err, errlen, "%s: out of memory", st->path);
        return -1;
    }
    u->tail = &u->out;
    u->mu = &st->mu;
    st->usage = u;
    rc =
        sqlite3_prepare_v3(st->db, "SELECT domain, messages, bytes FROM domain_usage WHERE id = ?1",
                           -1, SQLITE_PREPARE_PERSISTENT, &u->row_stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(st->db, "SELECT id, domain, messages, bytes FROM domain_usage", -1,
                                &all, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(all)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(all, 0);
        const char *d = (const char *)sqlite3_column_text(all, 1);
        if (grow_rows(u, id) < 0 || (u->rows[id].domain = strdup(d ? d : "")) == NULL) {
            rc = SQLITE_NOMEM;
            break;
        }
        u->rows[id].messages = sqlite3_column_int64(all, 2);
        u->rows[id].bytes = sqlite3_column_int64(all, 3);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(all);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s: reading domain_usage: %s", st->path, sqlite3_errmsg(st->db));
        return -1;
    }
    u->free_bytes = free_page_bytes(st->db);
    sqlite3_update_hook(st->db, on_update, u);
    return 0;
}

void store_usage_close(struct store *st)
{
    struct store_usage_state *u = st->usage;
    struct usage_delta *d;

    if (u == NULL)
        return;
    if (st->db != NULL)
        sqlite3_update_hook(st->db, NULL, NULL);
    sqlite3_finalize(u->row_stmt);
    for (size_t i = 0; i < u->nrows; i++)
        free(u->rows[i].domain);
    while ((d = u->out) != NULL) {
        u->out = d->next;
        free(d);
    }
    free(u->rows);
    free(u->dirty);
    free(u);
    st->usage = NULL;
}

/* After a batch, committed or not: read back the rows it touched (what is
 * committed now) and queue the differences for the loop. The rows and the
 * queue change together under mu, so a walk (which starts from zero) never
 * sees a row's new value and its delta both. Store thread. */
void store_usage_after_batch(struct store *st)
{
    struct store_usage_state *u = st->usage;
    uint64_t free_bytes;

    if (u == NULL)
        return;
    for (size_t i = 0; i < u->ndirty; i++) {
        int64_t id = u->dirty[i];
        struct usage_row *row = &u->rows[id];
        int64_t m = 0, b = 0;
        const char *d = NULL;
        char *name = NULL;
        struct usage_delta *delta = NULL;

        row->dirty = 0;
        sqlite3_bind_int64(u->row_stmt, 1, id);
        if (sqlite3_step(u->row_stmt) == SQLITE_ROW) {
            d = (const char *)sqlite3_column_text(u->row_stmt, 0);
            m = sqlite3_column_int64(u->row_stmt, 1);
            b = sqlite3_column_int64(u->row_stmt, 2);
            if (d != NULL && row->domain == NULL)
                name = strdup(d);
        }
        sqlite3_reset(u->row_stmt);
        uv_mutex_lock(&st->mu);
        if (name != NULL)
            row->domain = name;
        if (row->domain != NULL && (m != row->messages || b != row->bytes) &&
            (delta = malloc(sizeof(*delta) + strlen(row->domain) + 1)) != NULL) {
            delta->next = NULL;
            delta->messages = m - row->messages;
            delta->bytes = b - row->bytes;
            strcpy(delta->domain, row->domain);
            *u->tail = delta;
            u->tail = &delta->next;
            row->messages = m;
            row->bytes = b;
        }
        uv_mutex_unlock(&st->mu);
    }
    u->ndirty = 0;
    free_bytes = free_page_bytes(st->db);
    uv_mutex_lock(&st->mu);
    u->free_bytes = free_bytes;
    uv_mutex_unlock(&st->mu);
}

/* Hand the queued changes to the loop's callback. Loop thread, from on_async
 * before the callbacks of the batches they came from. */
void store_usage_publish(struct store *st)
{
    struct store_usage_state *u = st->usage;
    struct usage_delta *d, *next;

    if (u == NULL)
        return;
    uv_mutex_lock(&st->mu);
    d = u->out;
    u->out = NULL;
    u->tail = &u->out;
    uv_mutex_unlock(&st->mu);
    for (; d != NULL; d = next) {
        next = d->next;
        if (u->cb != NULL)
            u->cb(u->cb_arg, d->domain, d->messages, d->bytes);
        free(d);
    }
}

void store_set_usage_cb(struct store *st, store_usage_cb cb, void *arg)
{
    st->usage->cb = cb;
    st->usage->cb_arg = arg;
}

void store_usage_walk(struct store *st, store_usage_cb cb, void *arg)
{
    struct store_usage_state *u = st->usage;
    struct usage_delta *d;

    /* The copy already holds every queued change: drop them, the caller
     * starts from zero. */
    uv_mutex_lock(&st->mu);
    for (size_t i = 0; i < u->nrows; i++)
        if (u->rows[i].domain != NULL && (u->rows[i].messages != 0 || u->rows[i].bytes != 0))
            cb(arg, u->rows[i].domain, u->rows[i].messages, u->rows[i].bytes);
    while ((d = u->out) != NULL) {
        u->out = d->next;
        free(d);
    }
    u->tail = &u->out;
    uv_mutex_unlock(&st->mu);
}

uint64_t store_free_bytes(struct store *st)
{
    uint64_t v;

    uv_mutex_lock(&st->mu);
    v = st->usage->free_bytes;
    uv_mutex_unlock(&st->mu);
    return v;
}
