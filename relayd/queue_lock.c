/*
 * queue_lock: the exclusive lock that makes one relayd the only owner of a
 * queue (see queue_lock.h). Start-up only, blocking calls are fine here.
 * It never waits for the lock: a second daemon must fail at once, before it
 * binds anything, instead of delivering the same messages twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "queue_lock.h"

/* The pid written by the holder, or 0 when the file does not hold one yet
 * (the holder is between its flock and its write). */
static long holder_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    char *end;
    long pid;

    if (n <= 0)
        return 0;
    buf[n] = '\0';
    pid = strtol(buf, &end, 10);
    if (end == buf || (*end != '\n' && *end != '\0') || pid <= 0)
        return 0;
    return pid;
}

/*
 * Open "<name>.lock" in dirfd without following a symbolic link. O_NONBLOCK
 * so that a FIFO planted under that name cannot hang the start; the fstat
 * then refuses anything but a plain file with one link (a hard link to
 * another file would make us truncate that file).
 */
static int open_lock_file(int dirfd, const char *lname, const char *display, uid_t uid, gid_t gid,
                          int *created, char *err, size_t errlen)
{
    const int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    struct stat st;
    int fd;

    *created = 0;
    fd = openat(dirfd, lname, flags | O_CREAT | O_EXCL, 0640);
    if (fd >= 0)
        *created = 1;
    else if (errno == EEXIST)
        fd = openat(dirfd, lname, flags);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open the lock file %s.lock: %s%s", display, strerror(errno),
                 errno == ELOOP ? " (a symbolic link: refused)" : "");
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        snprintf(err, errlen, "the lock file %s.lock is not a plain file with one link: refused",
                 display);
        close(fd);
        return -1;
    }
    if (geteuid() == 0 && st.st_uid != 0 && (uid == (uid_t)-1 || st.st_uid != uid)) {
        snprintf(err, errlen,
                 "the lock file %s.lock belongs to uid %lu, not to root or relayd's user: refused",
                 display, (unsigned long)st.st_uid);
        close(fd);
        return -1;
    }
    /* what we created is ours to give to the user we will run as */
    if (*created && geteuid() == 0 && uid != (uid_t)-1 && uid != 0 && fchown(fd, uid, gid) != 0) {
        snprintf(err, errlen, "cannot give the lock file %s.lock to uid %lu: %s", display,
                 (unsigned long)uid, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int queue_lock_take(int dirfd, const char *name, const char *display, uid_t uid, gid_t gid,
                    int *fdp, char *err, size_t errlen)
{
    char lname[4096], pid[32];
    int fd, created, n, status = EX_CANTCREAT;

    *fdp = -1;
    if (snprintf(lname, sizeof(lname), "%s.lock", name) >= (int)sizeof(lname)) {
        snprintf(err, errlen, "database name %s is too long", name);
        return EX_CANTCREAT;
    }
    fd = open_lock_file(dirfd, lname, display, uid, gid, &created, err, errlen);
    if (fd < 0)
        return EX_CANTCREAT;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            long holder = holder_pid(fd);
            status = EX_TEMPFAIL;
            if (holder > 0)
                snprintf(err, errlen,
                         "queue %s is in use by another relayd (pid %ld, lock %s.lock)", display,
                         holder, display);
            else
                snprintf(err, errlen,
                         "queue %s is in use by another relayd (pid not yet known, lock %s.lock)",
                         display, display);
        } else {
            snprintf(err, errlen, "cannot lock %s.lock: %s", display, strerror(errno));
        }
        goto fail;
    }
    /* ours now: record who holds it for the next one that tries */
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        snprintf(err, errlen, "cannot write the pid into %s.lock: %s", display, strerror(errno));
        goto fail;
    }
    *fdp = fd;
    return 0;
fail:
    close(fd);
    return status;
}
