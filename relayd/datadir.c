/*
 * datadir: opens and checks the queue's directory (see datadir.h). Start-up
 * only, so blocking calls are fine. Whoever owns the user relayd runs as
 * can write in this directory; what root does here must therefore never go
 * through a name that user could have planted: one open with O_NOFOLLOW,
 * then fstat/fchown on that descriptor, and nothing else by path.
 */
#define LOG_SERVICE "master" /* log lines are tagged relayd/master */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "datadir.h"
#include "log.h"

/* Split db into its directory ("." when it has none) and file name. */
static int split_path(const char *db, struct datadir *dd, char *err, size_t errlen)
{
    const char *slash = strrchr(db, '/');
    const char *name = slash ? slash + 1 : db;
    size_t dlen = slash ? (size_t)(slash - db) : 0;

    if (*name == '\0' || strlen(name) >= sizeof(dd->name) || dlen >= sizeof(dd->path)) {
        snprintf(err, errlen, "database %s: not a usable file name", db);
        return -1;
    }
    if (slash == NULL)
        memcpy(dd->path, ".", 2);
    else if (dlen == 0)
        memcpy(dd->path, "/", 2);
    else {
        memcpy(dd->path, db, dlen);
        dd->path[dlen] = '\0';
    }
    memcpy(dd->name, name, strlen(name) + 1);
    return 0;
}

/*
 * As root: may this directory hold a queue root will write to? Anyone else
 * who can write in it could plant a symbolic link for root to follow.
 */
static int check_owner(const struct datadir *dd, const struct stat *st, uid_t ruid, gid_t rgid,
                       char *err, size_t errlen)
{
    if (!S_ISDIR(st->st_mode)) {
        snprintf(err, errlen, "%s is not a directory", dd->path);
        return -1;
    }
    if (st->st_uid != 0 && st->st_uid != ruid) {
        snprintf(
            err, errlen,
            "%s belongs to uid %lu, neither root nor the user relayd runs as (uid %lu): refused",
            dd->path, (unsigned long)st->st_uid, (unsigned long)ruid);
        return -1;
    }
    if (st->st_mode & S_IWOTH) {
        snprintf(err, errlen, "%s is writable by every user: refused", dd->path);
        return -1;
    }
    if ((st->st_mode & S_IWGRP) && st->st_gid != 0 && st->st_gid != rgid) {
        snprintf(err, errlen, "%s is writable by group %lu, not relayd's: refused", dd->path,
                 (unsigned long)st->st_gid);
        return -1;
    }
    return 0;
}

/*
 * Queue files an earlier relayd made as root (started without `user`): the
 * user relayd will run as must own them to open them. Only what is plainly
 * ours is taken: root's, in the directory just checked, a plain file with
 * one link (a hard link would hand over another file) or a directory only
 * root may write to. O_PATH|O_NOFOLLOW opens without side effects and
 * fchownat(AT_EMPTY_PATH) acts on that very inode, whatever the name
 * points to by then.
 */
static int adopt_queue_files(const struct datadir *dd, uid_t ruid, gid_t rgid, char *err,
                             size_t errlen)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", ".spool"};
    char name[NAME_MAX + 8];
    struct stat st;
    size_t i;
    int fd, ours;

    for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", dd->name, suffixes[i]);
        fd = openat(dd->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue; /* missing, or refused with its reason later */
        ours = fstat(fd, &st) == 0 && st.st_uid == 0 &&
               ((S_ISREG(st.st_mode) && st.st_nlink == 1) ||
                (S_ISDIR(st.st_mode) && !(st.st_mode & (S_IWGRP | S_IWOTH))));
        if (ours && fchownat(fd, "", ruid, rgid, AT_EMPTY_PATH) != 0) {
            snprintf(err, errlen, "cannot give %s/%s to uid %lu: %s", dd->path, name,
                     (unsigned long)ruid, strerror(errno));
            close(fd);
            return -1;
        }
        if (ours)
            log_info("gave %s/%s, made by root, to uid %lu", dd->path, name, (unsigned long)ruid);
        close(fd);
    }
    return 0;
}

int datadir_open(const char *db, uid_t uid, gid_t gid, struct datadir *dd, char *err, size_t errlen)
{
    const int root = geteuid() == 0;
    uid_t ruid = uid != (uid_t)-1 ? uid : geteuid();
    gid_t rgid = uid != (uid_t)-1 ? gid : getegid();
    struct stat st;
    int e;

    dd->fd = -1;
    if (split_path(db, dd, err, errlen) != 0)
        return EX_CANTCREAT;
    if (mkdir(dd->path, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the directory %s: %s", dd->path, strerror(errno));
        return EX_CANTCREAT;
    }
    /* mkdir never follows a symbolic link; as root, neither does this open */
    dd->fd = open(dd->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (root ? O_NOFOLLOW : 0));
    if (dd->fd < 0) {
        e = errno;
        if (root && (e == ELOOP || e == ENOTDIR))
            snprintf(err, errlen,
                     "%s is a symbolic link or not a directory: refused (name the real directory "
                     "in database)",
                     dd->path);
        else
            snprintf(err, errlen, "cannot open the directory %s: %s", dd->path, strerror(e));
        return EX_CANTCREAT;
    }
    if (!root)
        return 0;
    if (fstat(dd->fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", dd->path, strerror(errno));
        goto fail;
    }
    if (check_owner(dd, &st, ruid, rgid, err, errlen) != 0)
        goto fail;
    /* root's directory that only root may write to: systemd's StateDirectory=
     * (root-owned when User= is unset) or the one we just created. The queue
     * is created after the privilege drop, so its user needs the directory. */
    if (st.st_uid == 0 && ruid != 0 && (st.st_mode & S_IWGRP) && st.st_gid != rgid) {
        snprintf(err, errlen, "%s: only root may write in it, not the user relayd runs as",
                 dd->path);
        goto fail;
    }
    if (st.st_uid == 0 && ruid != 0 && !(st.st_mode & S_IWGRP)) {
        if (fchown(dd->fd, ruid, rgid) != 0) {
            snprintf(err, errlen, "cannot give %s to uid %lu: %s", dd->path, (unsigned long)ruid,
                     strerror(errno));
            goto fail;
        }
        log_info("gave the queue directory %s to uid %lu", dd->path, (unsigned long)ruid);
    }
    if (ruid != 0 && adopt_queue_files(dd, ruid, rgid, err, errlen) != 0)
        goto fail;
    return 0;
fail:
    datadir_close(dd);
    return EX_CANTCREAT;
}

int datadir_check_queue(const struct datadir *dd, char *err, size_t errlen)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    char name[NAME_MAX + 8];
    struct stat st;
    size_t i;
    int fd, rc = 0;

    for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]) && rc == 0; i++) {
        snprintf(name, sizeof(name), "%s%s", dd->name, suffixes[i]);
        fd = openat(dd->fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue;
            snprintf(err, errlen, "%s/%s: %s", dd->path, name,
                     errno == ELOOP ? "a symbolic link: refused" : strerror(errno));
            return EX_CANTCREAT;
        }
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "%s/%s is not a plain file: refused", dd->path, name);
            rc = EX_CANTCREAT;
        } else if (st.st_uid != geteuid()) {
            snprintf(err, errlen, "%s/%s belongs to uid %lu, not to uid %lu that relayd runs as",
                     dd->path, name, (unsigned long)st.st_uid, (unsigned long)geteuid());
            rc = EX_CANTCREAT;
        } else if ((st.st_mode & S_IRWXO) != 0) {
            /* a queue from before the umask: every message readable by all */
            if (fchmod(fd, st.st_mode & 0770) != 0) {
                snprintf(err, errlen, "%s/%s: cannot remove access for others: %s", dd->path, name,
                         strerror(errno));
                rc = EX_CANTCREAT;
            } else {
                log_info("removed access for other users from %s/%s", dd->path, name);
            }
        }
        close(fd);
    }
    return rc;
}

void datadir_close(struct datadir *dd)
{
    if (dd->fd >= 0)
        close(dd->fd);
    dd->fd = -1;
}
