/*
 * syncspy: an LD_PRELOAD shim for test_durability.py. It records, in one
 * ordered log ($SYNCSPY_LOG), the events that decide whether a 250 can be
 * trusted: a message's bytes reaching a file (pwrite/write of a buffer that
 * holds a "syncmark-" token), fsync/fdatasync of a file (start and end), and
 * "250 2.0.0 Ok: queued as ID" leaving on a socket. When relayd closes its
 * read-write SQLite connection it also logs that connection's PRAGMA
 * synchronous and journal_mode as SQLite itself reports them.
 *
 * It changes nothing it intercepts: every call goes on to the next
 * definition (libc, or the sanitizer's interceptor). It is test code, never
 * linked into relayd, and built without sanitizers (it may run before they
 * are initialised).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* SQLite's API, declared here so the shim needs no sqlite3.h (and so no
 * dependency on the library at build time: the calls are looked up). */
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
#define SQ_OPEN_READWRITE 0x00000002
#define SQ_ROW            100
int sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs);
int sqlite3_close(sqlite3 *db);
int sqlite3_close_v2(sqlite3 *db);

static int log_fd = -1;
static unsigned long seq;
static sqlite3 *writer; /* the read-write connection relayd opened */

__attribute__((constructor)) static void spy_init(void)
{
    const char *path = getenv("SYNCSPY_LOG");

    if (path != NULL && path[0] != '\0')
        log_fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                              0600);
}

/* One line per event, written with one write(2) to an O_APPEND file, so
 * lines of concurrent threads never mix; the sequence number orders them. */
static void spy_log(const char *fmt, ...)
{
    char line[512];
    int n, m;
    va_list ap;

    if (log_fd < 0)
        return;
    n = snprintf(line, sizeof line, "%lu %ld ", __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST),
                 (long)syscall(SYS_gettid));
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2; /* cut, but still one line */
    line[n++] = '\n';
    (void)syscall(SYS_write, log_fd, line, (size_t)n);
}

static void *next(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);

    if (p == NULL)
        abort(); /* the program could not have called it either */
    return p;
}

static int fd_path(int fd, char *out, size_t outlen)
{
    char link[64];
    ssize_t n;

    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, out, outlen - 1);
    if (n < 0)
        return -1;
    out[n] = '\0';
    return 0;
}

static int fd_kind(int fd)
{
    struct stat sb;

    if (fd == log_fd || fstat(fd, &sb) < 0)
        return 0;
    return S_ISSOCK(sb.st_mode) ? 's' : S_ISREG(sb.st_mode) ? 'f' : 0;
}

/* Every "syncmark-TOKEN" in a buffer written to a regular file. */
static void note_file_write(int fd, const void *buf, size_t len)
{
    static const char mark[] = "syncmark-";
    const char *p = buf, *end = p + len;
    char path[256];

    if (log_fd < 0 || len < sizeof mark || fd_kind(fd) != 'f')
        return;
    while ((p = memmem(p, (size_t)(end - p), mark, sizeof mark - 1)) != NULL) {
        const char *t = p + sizeof mark - 1, *e = t;

        while (e < end && e - t < 32 && ((*e >= '0' && *e <= '9') || (*e >= 'a' && *e <= 'z')))
            e++;
        if (e > t && fd_path(fd, path, sizeof path) == 0)
            spy_log("W %.*s %s", (int)(e - t), t, path);
        p = e;
    }
}

/* Every "250 2.0.0 Ok: queued as ID" in a buffer about to go to a socket. */
static void note_socket_write(int fd, const void *buf, size_t len)
{
    static const char reply[] = "250 2.0.0 Ok: queued as ";
    const char *p = buf, *end = p + len;

    if (log_fd < 0 || len < sizeof reply || fd_kind(fd) != 's')
        return;
    while ((p = memmem(p, (size_t)(end - p), reply, sizeof reply - 1)) != NULL) {
        const char *t = p + sizeof reply - 1, *e = t;

        while (e < end && e - t < 32 && ((*e >= '0' && *e <= '9') || (*e >= 'A' && *e <= 'Z')))
            e++;
        spy_log("R %.*s", (int)(e - t), t);
        p = e;
    }
}

static void note_iov(int fd, const struct iovec *iov, int n, int to_socket)
{
    for (int i = 0; i < n; i++) {
        if (to_socket)
            note_socket_write(fd, iov[i].iov_base, iov[i].iov_len);
        else
            note_file_write(fd, iov[i].iov_base, iov[i].iov_len);
    }
}

/* ---- writes: files are noted after they returned, replies before they left ---- */

ssize_t write(int fd, const void *buf, size_t len)
{
    static ssize_t (*real)(int, const void *, size_t);
    ssize_t rc;

    if (real == NULL)
        real = next("write");
    note_socket_write(fd, buf, len);
    rc = real(fd, buf, len);
    if (rc > 0)
        note_file_write(fd, buf, (size_t)rc);
    return rc;
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    static ssize_t (*real)(int, const struct iovec *, int);
    ssize_t rc;

    if (real == NULL)
        real = next("writev");
    note_iov(fd, iov, n, 1);
    rc = real(fd, iov, n);
    if (rc > 0)
        note_iov(fd, iov, n, 0);
    return rc;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    ssize_t rc;

    if (real == NULL)
        real = next("pwrite");
    rc = real(fd, buf, len, off);
    if (rc > 0)
        note_file_write(fd, buf, (size_t)rc);
    return rc;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off64_t);
    ssize_t rc;

    if (real == NULL)
        real = next("pwrite64");
    rc = real(fd, buf, len, off);
    if (rc > 0)
        note_file_write(fd, buf, (size_t)rc);
    return rc;
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*real)(int, const void *, size_t, int);

    if (real == NULL)
        real = next("send");
    note_socket_write(fd, buf, len);
    return real(fd, buf, len, flags);
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
               socklen_t tolen)
{
    static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);

    if (real == NULL)
        real = next("sendto");
    note_socket_write(fd, buf, len);
    return real(fd, buf, len, flags, to, tolen);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    static ssize_t (*real)(int, const struct msghdr *, int);

    if (real == NULL)
        real = next("sendmsg");
    note_iov(fd, msg->msg_iov, (int)msg->msg_iovlen, 1);
    return real(fd, msg, flags);
}

/* ---- syncs: start and end, so "completed before" can be checked ---------------- */

static int spy_sync(const char *name, int fd)
{
    int (*real)(int) = next(name);
    char path[256];
    int rc, saved;

    if (log_fd < 0 || fd_path(fd, path, sizeof path) < 0)
        return real(fd);
    spy_log("S+ %s %s", name, path);
    rc = real(fd);
    saved = errno;
    spy_log("S- %s %s %d", name, path, rc);
    errno = saved;
    return rc;
}

int fsync(int fd)
{
    return spy_sync("fsync", fd);
}

int fdatasync(int fd)
{
    return spy_sync("fdatasync", fd);
}

/* ---- SQLite: which connection writes, and what it ended up configured as -------- */

int sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs)
{
    int (*real)(const char *, sqlite3 **, int, const char *) = next("sqlite3_open_v2");
    int rc = real(name, db, flags, vfs);

    if (rc == 0 && (flags & SQ_OPEN_READWRITE)) {
        writer = *db;
        spy_log("O %s", name);
    }
    return rc;
}

static void pragma_value(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    int (*prepare)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **) =
        next("sqlite3_prepare_v2");
    int (*step)(sqlite3_stmt *) = next("sqlite3_step");
    const unsigned char *(*text)(sqlite3_stmt *, int) = next("sqlite3_column_text");
    int (*finalize)(sqlite3_stmt *) = next("sqlite3_finalize");
    sqlite3_stmt *st = NULL;

    snprintf(out, outlen, "?");
    if (prepare(db, sql, -1, &st, NULL) == 0 && step(st) == SQ_ROW && text(st, 0) != NULL)
        snprintf(out, outlen, "%s", (const char *)text(st, 0));
    if (st != NULL)
        finalize(st);
}

static void note_close(sqlite3 *db)
{
    char sync[32], mode[32];

    if (db == NULL || db != writer)
        return;
    pragma_value(db, "PRAGMA synchronous", sync, sizeof sync);
    pragma_value(db, "PRAGMA journal_mode", mode, sizeof mode);
    spy_log("P synchronous=%s journal_mode=%s", sync, mode);
    writer = NULL;
}

int sqlite3_close(sqlite3 *db)
{
    int (*real)(sqlite3 *) = next("sqlite3_close");

    note_close(db);
    return real(db);
}

int sqlite3_close_v2(sqlite3 *db)
{
    int (*real)(sqlite3 *) = next("sqlite3_close_v2");

    note_close(db);
    return real(db);
}
