/*
 * store_check: the whole-file integrity check of the queue (PRAGMA
 * quick_check) on a connection and a libuv pool thread of its own, so that
 * relayd is ready before it ends (issue 9: 1.7 s of start-up at a million
 * messages) and `etrnctl check --deep` can run it on demand. It reports what
 * it found; what to do about damage (relayd stops with 70) is main.c's.
 * The start-up check of the header and the schema stays in store.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_int.h"

struct store_check {
    uv_work_t work;
    struct store_check *next; /* the store's list (loop thread) */
    struct store *st;         /* NULL once store_close let go of it */
    uv_mutex_t mu;            /* db and cancelled, shared with the pool thread */
    sqlite3 *db;
    int cancelled;
    char *path;
    int status; /* STORE_OK, STORE_CHECK_DAMAGED or STORE_ERR_IO */
    char detail[512];
    store_check_cb cb;
    void *arg;
};

/* Pool thread: open, check, close. Only c is touched here. */
static void check_work(uv_work_t *w)
{
    struct store_check *c = w->data;
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    size_t off = 0;
    int rc, lines = 0;

    rc = sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
        uv_mutex_lock(&c->mu);
        c->db = db;
        if (c->cancelled)
            sqlite3_interrupt(db);
        uv_mutex_unlock(&c->mu);
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL);
    }
    /* "ok" alone, or one line per problem found: kept as one log line. */
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);

        if (off < sizeof c->detail - 1)
            off += (size_t)snprintf(c->detail + off, sizeof c->detail - off, "%s%s",
                                    lines++ ? "; " : "", t ? (const char *)t : "");
        rc = SQLITE_OK;
    }
    if (rc == SQLITE_DONE)
        c->status = strcmp(c->detail, "ok") == 0 ? STORE_OK : STORE_CHECK_DAMAGED;
    else if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
        c->status = STORE_CHECK_DAMAGED; /* too damaged to be checked */
        snprintf(c->detail, sizeof c->detail, "%s", sqlite3_errstr(rc));
    } else {
        c->status = STORE_ERR_IO;
        snprintf(c->detail, sizeof c->detail, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
    sqlite3_finalize(s);
    uv_mutex_lock(&c->mu);
    c->db = NULL;
    uv_mutex_unlock(&c->mu);
    sqlite3_close(db);
}

/* Loop thread: off the store's list, then the caller's callback. */
static void check_done(uv_work_t *w, int status)
{
    struct store_check *c = w->data, **pp;

    if (c->st)
        for (pp = &c->st->checks; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
    if (status == UV_ECANCELED || c->cancelled) {
        c->status = STORE_ERR_IO;
        snprintf(c->detail, sizeof c->detail, "cancelled: relayd is stopping");
    }
    c->cb(c->status, c->detail, c->arg);
    uv_mutex_destroy(&c->mu);
    free(c->path);
    free(c);
}

int store_check_start(struct store *st, store_check_cb cb, void *arg)
{
    struct store_check *c;
    int rc;

    if (!st || !cb)
        return UV_EINVAL;
    if (!(c = calloc(1, sizeof *c)) || !(c->path = strdup(st->path))) {
        free(c);
        return UV_ENOMEM;
    }
    if (uv_mutex_init(&c->mu) != 0) {
        free(c->path);
        free(c);
        return UV_ENOMEM;
    }
    c->st = st;
    c->cb = cb;
    c->arg = arg;
    c->work.data = c;
    if ((rc = uv_queue_work(st->loop, &c->work, check_work, check_done)) != 0) {
        uv_mutex_destroy(&c->mu);
        free(c->path);
        free(c);
        return rc;
    }
    c->next = st->checks;
    st->checks = c;
    return 0;
}

/* store_close: stop the checks still running; their callbacks run from the
 * loop once their threads are back, with STORE_ERR_IO. Loop thread. */
void store_check_cancel_all(struct store *st)
{
    for (struct store_check *c = st->checks; c; c = c->next) {
        uv_cancel((uv_req_t *)&c->work); /* not started yet: never will */
        uv_mutex_lock(&c->mu);
        c->cancelled = 1;
        if (c->db)
            sqlite3_interrupt(c->db);
        uv_mutex_unlock(&c->mu);
        c->st = NULL;
    }
    st->checks = NULL;
}
