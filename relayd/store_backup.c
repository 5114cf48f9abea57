/*
 * store_backup: an online copy of the queue for `etrnctl backup`, made with
 * SQLite's backup API (sqlite3_backup_*) from a read connection of its own,
 * in steps of STORE_BACKUP_PAGES pages on libuv's thread pool, never on the
 * loop thread; the copy goes to a private file (0600, O_EXCL) beside the
 * queue, which is unlinked as soon as it is complete and then read back in
 * pieces for the control socket. It decides nothing about who may ask
 * (control.c does) and never holds more than one piece in memory.
 */
#include "store.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

/* Pages per step (4 MiB at the default 4 KiB page): a step is short, so a
 * cancelled backup stops soon and the thread pool is shared fairly. */
#define STORE_BACKUP_PAGES    1024
#define STORE_BACKUP_BUSY_MS  5000
#define STORE_BACKUP_READ_MAX (1024 * 1024)

enum bk_phase { BK_OPEN, BK_COPY, BK_READY, BK_FAILED };

struct store_backup {
    uv_loop_t *loop;
    char *src_path;
    char *tmp_path; /* the copy, until it is unlinked */
    sqlite3 *src, *dst;
    sqlite3_backup *bk;
    enum bk_phase phase;
    int created;   /* tmp_path is ours: unlink it on failure */
    int fd;        /* the complete copy, open for reading, unlinked */
    uint64_t size; /* its bytes */
    char why[256]; /* what failed */
    atomic_int cancel;
    int in_work; /* a step is on the thread pool */
    int reading; /* a read is out */
    int freed;   /* store_backup_free ran: free once nothing is out */
    uv_work_t work;
    uv_fs_t fs;
    char *rbuf;
    store_backup_done_cb done;
    store_backup_read_cb rcb;
    void *arg, *rarg;
};

static void bk_close_db(struct store_backup *b)
{
    if (b->bk != NULL)
        sqlite3_backup_finish(b->bk);
    b->bk = NULL;
    if (b->src != NULL) {
        sqlite3_exec(b->src, "ROLLBACK", NULL, NULL, NULL); /* the read snapshot */
        sqlite3_close(b->src);
    }
    b->src = NULL;
    if (b->dst != NULL)
        sqlite3_close(b->dst);
    b->dst = NULL;
}

static void bk_fail(struct store_backup *b, const char *what, sqlite3 *db)
{
    snprintf(b->why, sizeof(b->why), "%s: %s", what,
             db != NULL ? sqlite3_errmsg(db) : strerror(errno));
    b->phase = BK_FAILED;
}

/* Open both ends: the copy's file first, private and new (O_EXCL: nothing
 * of anyone else's is followed or reused), then the source with a read
 * transaction held across every step. In WAL mode that pins one snapshot:
 * the copy is the queue as of this moment, commits go on meanwhile (to the
 * WAL; a checkpoint stops short of the snapshot), and the backup never has
 * to restart because another connection wrote. */
static void bk_open(struct store_backup *b)
{
    int fd = open(b->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0) {
        bk_fail(b, "cannot create the copy", NULL);
        return;
    }
    close(fd);
    b->created = 1;
    if (sqlite3_open_v2(b->src_path, &b->src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        bk_fail(b, "cannot open the queue", b->src);
        return;
    }
    sqlite3_busy_timeout(b->src, STORE_BACKUP_BUSY_MS);
    if (sqlite3_exec(b->src, "BEGIN; SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) !=
        SQLITE_OK) {
        bk_fail(b, "cannot read the queue", b->src);
        return;
    }
    if (sqlite3_open_v2(b->tmp_path, &b->dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        bk_fail(b, "cannot open the copy", b->dst);
        return;
    }
    /* the copy is a scratch file until it is complete: no journal, no
     * fsync (etrnctl makes the file that counts durable) */
    sqlite3_exec(b->dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL, NULL);
    b->bk = sqlite3_backup_init(b->dst, "main", b->src, "main");
    if (b->bk == NULL) {
        bk_fail(b, "cannot start the backup", b->dst);
        return;
    }
    b->phase = BK_COPY;
}

/* One step; at the end, open the copy for reading and unlink it, so it
 * goes away with the descriptor whatever happens next. */
static void bk_step(struct store_backup *b)
{
    struct stat sb;
    int rc = sqlite3_backup_step(b->bk, STORE_BACKUP_PAGES);

    if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return; /* more to copy (or try again) */
    if (rc != SQLITE_DONE) {
        snprintf(b->why, sizeof(b->why), "backup step: %s", sqlite3_errstr(rc));
        b->phase = BK_FAILED;
        return;
    }
    bk_close_db(b);
    b->fd = open(b->tmp_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (b->fd < 0 || fstat(b->fd, &sb) != 0) {
        bk_fail(b, "cannot reopen the copy", NULL);
        return;
    }
    unlink(b->tmp_path);
    b->created = 0;
    b->size = (uint64_t)sb.st_size;
    b->phase = BK_READY;
}

/* Thread pool: the next piece of work. */
static void bk_work(uv_work_t *w)
{
    struct store_backup *b = w->data;

    if (atomic_load(&b->cancel)) {
        snprintf(b->why, sizeof(b->why), "cancelled");
        b->phase = BK_FAILED;
    } else if (b->phase == BK_OPEN) {
        bk_open(b);
    } else if (b->phase == BK_COPY) {
        bk_step(b);
    }
    if (b->phase == BK_FAILED) {
        bk_close_db(b);
        if (b->created)
            unlink(b->tmp_path);
        b->created = 0;
    }
}

static void bk_free_now(struct store_backup *b)
{
    if (b->fd >= 0)
        close(b->fd);
    free(b->tmp_path);
    free(b->src_path);
    free(b->rbuf);
    free(b);
}

static void bk_after(uv_work_t *w, int status)
{
    struct store_backup *b = w->data;
    int rc;

    b->in_work = 0;
    if (status == UV_ECANCELED && b->phase != BK_FAILED) {
        bk_close_db(b); /* never ran: nothing opened after the last step */
        if (b->created)
            unlink(b->tmp_path);
        b->created = 0;
        b->phase = BK_FAILED;
        snprintf(b->why, sizeof(b->why), "cancelled");
    }
    if (b->freed) {
        if (b->phase == BK_OPEN || b->phase == BK_COPY) {
            atomic_store(&b->cancel, 1); /* one more trip to close it off-loop */
            b->in_work = uv_queue_work(b->loop, &b->work, bk_work, bk_after) == 0;
            if (b->in_work)
                return;
            bk_close_db(b);
        }
        bk_free_now(b);
        return;
    }
    if (b->phase == BK_OPEN || b->phase == BK_COPY) {
        rc = uv_queue_work(b->loop, &b->work, bk_work, bk_after);
        if (rc == 0) {
            b->in_work = 1;
            return;
        }
        snprintf(b->why, sizeof(b->why), "cannot queue the next step: %s", uv_strerror(rc));
        b->phase = BK_FAILED;
        bk_close_db(b);
        if (b->created)
            unlink(b->tmp_path);
        b->created = 0;
    }
    if (b->phase == BK_READY)
        b->done(b, STORE_OK, b->size, NULL, b->arg);
    else
        b->done(b, STORE_ERR_IO, 0, b->why, b->arg);
}

int store_backup_start(struct store *st, store_backup_done_cb cb, void *arg,
                       struct store_backup **out)
{
    static unsigned long serial;
    struct store_backup *b;
    size_t n;
    int rc;

    if (st == NULL || st->path == NULL || cb == NULL || out == NULL)
        return UV_EINVAL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return UV_ENOMEM;
    b->loop = st->loop;
    b->fd = -1;
    b->done = cb;
    b->arg = arg;
    b->work.data = b;
    b->src_path = strdup(st->path);
    n = strlen(st->path) + 64;
    b->tmp_path = malloc(n);
    if (b->src_path == NULL || b->tmp_path == NULL) {
        bk_free_now(b);
        return UV_ENOMEM;
    }
    /* beside the queue: the same file system, relayd's own directory */
    snprintf(b->tmp_path, n, "%s.backup-%ld-%lu", st->path, (long)getpid(), ++serial);
    rc = uv_queue_work(b->loop, &b->work, bk_work, bk_after);
    if (rc != 0) {
        free(b->tmp_path);
        b->tmp_path = NULL; /* nothing was created */
        bk_free_now(b);
        return rc;
    }
    b->in_work = 1;
    *out = b;
    return 0;
}

static void bk_read_done(uv_fs_t *req)
{
    struct store_backup *b = req->data;
    ssize_t n = req->result;

    uv_fs_req_cleanup(req);
    b->reading = 0;
    if (b->freed) {
        bk_free_now(b);
        return;
    }
    if (n < 0)
        b->rcb(NULL, 0, STORE_ERR_IO, b->rarg);
    else
        b->rcb(b->rbuf, (size_t)n, STORE_OK, b->rarg);
}

int store_backup_read(struct store_backup *b, uint64_t offset, size_t max, store_backup_read_cb cb,
                      void *arg)
{
    uv_buf_t ub;
    int rc;

    if (b == NULL || b->phase != BK_READY || b->reading || cb == NULL || max == 0 ||
        max > STORE_BACKUP_READ_MAX)
        return UV_EINVAL;
    if (b->rbuf == NULL && (b->rbuf = malloc(STORE_BACKUP_READ_MAX)) == NULL)
        return UV_ENOMEM;
    b->rcb = cb;
    b->rarg = arg;
    b->fs.data = b;
    ub = uv_buf_init(b->rbuf, (unsigned)max);
    /* uv_fs_read runs on the thread pool: the loop never waits on the disk */
    rc = uv_fs_read(b->loop, &b->fs, b->fd, &ub, 1, (int64_t)offset, bk_read_done);
    if (rc == 0)
        b->reading = 1;
    return rc;
}

void store_backup_free(struct store_backup *b)
{
    if (b == NULL)
        return;
    b->freed = 1;
    if (b->in_work) {
        atomic_store(&b->cancel, 1);
        uv_cancel((uv_req_t *)&b->work); /* a step not yet started never runs */
        return;
    }
    if (b->reading)
        return; /* bk_read_done frees it */
    bk_free_now(b);
}
