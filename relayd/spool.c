/*
 * spool: a message body while DATA is being read. Up to SPOOL_MEM_MAX bytes
 * stay in memory; beyond that the body goes to a file in the spool directory
 * through libuv's thread pool, one write in flight at a time, so the loop
 * thread never blocks on the disk and a session never holds more than about
 * SPOOL_MEM_MAX plus one read in RAM. No fsync here: the store copies the
 * file into SQLite and that commit is what makes the message durable.
 */
#define LOG_SERVICE "cleanup" /* log lines are tagged relayd/cleanup */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "spool.h"

enum spool_file { SPOOL_NOFILE = 0, SPOOL_OPENING, SPOOL_OPEN, SPOOL_CLOSING, SPOOL_CLOSED };

struct spool {
    uv_loop_t *loop;
    char *path;     /* owned */
    struct buf mem; /* body in memory, or bytes waiting for the file */
    char *inflight; /* owned copy being written */
    size_t inflight_len;
    uint64_t size;     /* bytes appended in total */
    uint64_t file_off; /* bytes written to the file */
    uv_file fd;
    enum spool_file file;
    int busy;      /* a uv_fs request is in flight */
    int error;     /* sticky write error (negative errno) */
    int freed;     /* spool_free called while busy */
    int finishing; /* spool_when_ready wants the file closed */
    void (*ready_cb)(void *arg, int status);
    void (*drain_cb)(void *arg);
    void *drain_arg;
    void *ready_arg;
    uv_fs_t req;
};

static void spool_pump(struct spool *sp);

static void spool_destroy(struct spool *sp)
{
    buf_free(&sp->mem);
    free(sp->inflight);
    free(sp->path);
    free(sp);
}

static void unlink_done(uv_fs_t *req)
{
    uv_fs_req_cleanup(req);
    free(req);
}

static void unlink_async(uv_loop_t *loop, const char *path)
{
    uv_fs_t *req = malloc(sizeof(*req));

    if (req == NULL || uv_fs_unlink(loop, req, path, unlink_done) != 0) {
        free(req);
        log_warn("spool: cannot remove %s", path);
    }
}

/* The final step of spool_free: nothing is in flight any more. */
static void spool_finish_free(struct spool *sp)
{
    if (sp->file == SPOOL_OPEN) {
        uv_fs_t req;
        /* close(2) of a regular file does not wait for the disk */
        uv_fs_close(NULL, &req, sp->fd, NULL);
        uv_fs_req_cleanup(&req);
        sp->file = SPOOL_CLOSED;
    }
    if (sp->file != SPOOL_NOFILE)
        unlink_async(sp->loop, sp->path);
    spool_destroy(sp);
}

static void spool_call_ready(struct spool *sp, int status)
{
    void (*cb)(void *, int) = sp->ready_cb;

    sp->ready_cb = NULL;
    sp->finishing = 0;
    if (cb != NULL)
        cb(sp->ready_arg, status);
}

static void fs_done(uv_fs_t *req)
{
    struct spool *sp = req->data;
    ssize_t result = req->result;
    uv_fs_type type = req->fs_type;

    uv_fs_req_cleanup(req);
    sp->busy = 0;
    switch (type) {
    case UV_FS_OPEN:
        if (result < 0) {
            sp->error = (int)result;
            sp->file = SPOOL_NOFILE;
            log_warn("spool: cannot create %s: %s", sp->path, uv_strerror((int)result));
        } else {
            sp->fd = (uv_file)result;
            sp->file = SPOOL_OPEN;
        }
        break;
    case UV_FS_WRITE:
        if (result < 0) {
            sp->error = (int)result;
            log_warn("spool: write to %s failed: %s", sp->path, uv_strerror((int)result));
        } else if ((size_t)result < sp->inflight_len) {
            /* short write: keep the rest in flight and go again */
            memmove(sp->inflight, sp->inflight + result, sp->inflight_len - (size_t)result);
            sp->inflight_len -= (size_t)result;
            sp->file_off += (uint64_t)result;
            spool_pump(sp);
            return;
        } else {
            sp->file_off += (uint64_t)result;
        }
        free(sp->inflight);
        sp->inflight = NULL;
        sp->inflight_len = 0;
        break;
    case UV_FS_CLOSE:
        sp->file = SPOOL_CLOSED;
        if (result < 0 && sp->error == 0)
            sp->error = (int)result;
        break;
    default:
        break;
    }
    if (sp->freed) {
        spool_finish_free(sp);
        return;
    }
    if (sp->finishing) {
        /* the ready callback may free sp: touch nothing after it */
        spool_pump(sp);
        return;
    }
    spool_pump(sp);
    if (sp->drain_cb != NULL && !spool_busy(sp)) {
        void (*cb)(void *) = sp->drain_cb;
        sp->drain_cb = NULL;
        cb(sp->drain_arg);
    }
}

/*
 * Start the next file operation if one is due: open once the memory part is
 * too big, write what accumulated, and close when the caller is finishing.
 * Calls the ready callback when everything asked for is done.
 */
static void spool_pump(struct spool *sp)
{
    int rc = 0;

    if (sp->busy)
        return;
    if (sp->error != 0) {
        if (sp->finishing)
            spool_call_ready(sp, sp->error);
        return;
    }
    sp->req.data = sp;
    if (sp->file == SPOOL_NOFILE && sp->mem.len > SPOOL_MEM_MAX) {
        sp->busy = 1;
        sp->file = SPOOL_OPENING;
        rc = uv_fs_open(sp->loop, &sp->req, sp->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600,
                        fs_done);
    } else if (sp->file == SPOOL_OPEN && sp->inflight == NULL && sp->mem.len > 0) {
        uv_buf_t b;
        /* hand the whole buffer to the write and start a new one */
        sp->inflight = sp->mem.data;
        sp->inflight_len = sp->mem.len;
        sp->mem.data = NULL;
        sp->mem.len = sp->mem.cap = 0;
        b = uv_buf_init(sp->inflight, (unsigned)sp->inflight_len);
        sp->busy = 1;
        rc = uv_fs_write(sp->loop, &sp->req, sp->fd, &b, 1, (int64_t)sp->file_off, fs_done);
    } else if (sp->file == SPOOL_OPEN && sp->inflight != NULL) {
        uv_buf_t b = uv_buf_init(sp->inflight, (unsigned)sp->inflight_len);
        sp->busy = 1;
        rc = uv_fs_write(sp->loop, &sp->req, sp->fd, &b, 1, (int64_t)sp->file_off, fs_done);
    } else if (sp->finishing && sp->file == SPOOL_OPEN) {
        sp->busy = 1;
        rc = uv_fs_close(sp->loop, &sp->req, sp->fd, fs_done);
    } else if (sp->finishing) {
        spool_call_ready(sp, 0);
        return;
    }
    if (rc != 0) {
        sp->busy = 0;
        sp->error = rc;
        if (sp->finishing)
            spool_call_ready(sp, rc);
    }
}

struct spool *spool_new(uv_loop_t *loop, const char *dir, const char *queue_id)
{
    struct spool *sp = calloc(1, sizeof(*sp));

    if (sp == NULL)
        return NULL;
    sp->loop = loop;
    if (asprintf(&sp->path, "%s/%s", dir, queue_id) < 0) {
        free(sp);
        return NULL;
    }
    /* the memory part may grow a little past SPOOL_MEM_MAX before the file
     * opens; the session stops reading while busy, which bounds it */
    buf_init(&sp->mem, (size_t)64 * 1024 * 1024);
    sp->fd = -1;
    return sp;
}

int spool_append(struct spool *sp, const void *data, size_t len)
{
    int rc;

    if (sp->error != 0)
        return sp->error;
    rc = buf_append(&sp->mem, data, len);
    if (rc != 0) {
        sp->error = rc;
        return rc;
    }
    sp->size += len;
    spool_pump(sp);
    return sp->error;
}

int spool_busy(const struct spool *sp)
{
    return sp->busy && sp->mem.len >= SPOOL_MEM_MAX;
}

void spool_on_drain(struct spool *sp, void (*cb)(void *arg), void *arg)
{
    sp->drain_cb = cb;
    sp->drain_arg = arg;
}

void spool_when_ready(struct spool *sp, void (*cb)(void *arg, int status), void *arg)
{
    sp->ready_cb = cb;
    sp->ready_arg = arg;
    sp->finishing = 1;
    if (sp->busy)
        return; /* fs_done will pump */
    if (sp->file == SPOOL_OPEN || sp->error != 0) {
        spool_pump(sp);
        return;
    }
    /* in memory only: nothing to wait for */
    spool_call_ready(sp, 0);
}

uint64_t spool_size(const struct spool *sp)
{
    return sp->size;
}

int spool_take(struct spool *sp, char **mem, char **path)
{
    *mem = NULL;
    *path = NULL;
    if (sp->busy || sp->error != 0)
        return sp->error != 0 ? sp->error : -EBUSY;
    if (sp->file == SPOOL_NOFILE) {
        if (sp->mem.data == NULL) {
            /* an empty body still needs a buffer the store can bind */
            sp->mem.data = malloc(1);
            if (sp->mem.data == NULL)
                return -ENOMEM;
        }
        *mem = sp->mem.data;
        sp->mem.data = NULL;
        sp->mem.len = sp->mem.cap = 0;
        return 0;
    }
    if (sp->file != SPOOL_CLOSED)
        return -EBUSY;
    *path = sp->path;
    sp->path = NULL;
    sp->file = SPOOL_NOFILE; /* the file is the caller's now */
    return 0;
}

void spool_free(struct spool *sp)
{
    if (sp == NULL)
        return;
    sp->ready_cb = NULL;
    sp->drain_cb = NULL;
    if (sp->busy) {
        sp->freed = 1;
        return;
    }
    spool_finish_free(sp);
}

/* Open the spool directory: never through a symbolic link, and only when it
 * belongs to the user relayd runs as (it is private to relayd, 0700). */
static int open_spool_dir(int dirfd, const char *sname, const char *path)
{
    struct stat st;
    int fd;

    if (mkdirat(dirfd, sname, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create spool directory %s: %s", path, strerror(errno));
        return -1;
    }
    fd = openat(dirfd, sname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            log_error("spool directory %s is a symbolic link or not a directory: refused", path);
        else
            log_error("cannot open spool directory %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid()) {
        log_error(
            "spool directory %s belongs to uid %lu, not to uid %lu that relayd runs as: refused",
            path, (unsigned long)st.st_uid, (unsigned long)geteuid());
        close(fd);
        return -1;
    }
    if ((st.st_mode & 077) != 0 && fchmod(fd, 0700) != 0) {
        log_error("cannot make spool directory %s private: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int spool_dir_init(int dirfd, const char *name, const char *db, char *out, size_t outlen)
{
    char sname[NAME_MAX + 8];
    DIR *d;
    struct dirent *de;
    int fd, n = snprintf(out, outlen, "%s.spool", db);

    if (n < 0 || (size_t)n >= outlen ||
        snprintf(sname, sizeof(sname), "%s.spool", name) >= (int)sizeof(sname))
        return -1;
    fd = open_spool_dir(dirfd, sname, out);
    if (fd < 0)
        return -1;
    /* Files left by a crash belong to messages that never got their 250.
     * unlinkat relative to the checked descriptor: an entry that is a
     * symbolic link is removed itself, never what it points to. */
    d = fdopendir(fd);
    if (d == NULL) {
        log_error("cannot read spool directory %s: %s", out, strerror(errno));
        close(fd);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (unlinkat(fd, de->d_name, 0) != 0)
            log_warn("cannot remove stale spool file %s/%s: %s", out, de->d_name, strerror(errno));
    }
    closedir(d);
    return 0;
}
