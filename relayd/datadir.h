/*
 * datadir: the directory that holds the queue, checked before relayd trusts
 * it. Started as root, relayd opens it without following a symbolic link
 * and checks its owner and mode on the open descriptor; every later step at
 * start-up (the lock, the spool) works relative to that descriptor, so no
 * path can be swapped under it. Does not open the queue (store does) or
 * create the spool (spool does).
 */
#ifndef RELAYD_DATADIR_H
#define RELAYD_DATADIR_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

struct datadir {
    int fd;                  /* the directory, O_DIRECTORY (and O_NOFOLLOW as root) */
    char path[PATH_MAX];     /* the directory, for messages */
    char name[NAME_MAX + 1]; /* the database's file name in it */
};

/*
 * Open the directory of database path db, creating it (mode 0750, the last
 * component only) when it is missing. As root it must be a real directory
 * (not a symbolic link), owned by root or by uid (the user relayd will run
 * as; (uid_t)-1: root stays), and writable by nobody else: not by every
 * user, not by a group other than root's or gid. Root's own directory that
 * no group or other user may write to (what systemd's StateDirectory=
 * makes, or what we just created) is given to uid:gid, and so are the
 * queue files and spool an earlier relayd made there as root (root's plain
 * files with one link, root's directory no one else may write to).
 * Not root: only opened. Returns 0, or EX_CANTCREAT with the reason in err.
 */
int datadir_open(const char *db, uid_t uid, gid_t gid, struct datadir *dd, char *err,
                 size_t errlen);

/*
 * After the privilege drop, before the queue is opened: the database and
 * its -wal and -shm files, where they exist, must be plain files (not
 * symbolic links) owned by the user relayd now runs as; any access for
 * other users (files from a run without relayd's umask) is removed.
 * Returns 0, or EX_CANTCREAT with the reason in err.
 */
int datadir_check_queue(const struct datadir *dd, char *err, size_t errlen);

void datadir_close(struct datadir *dd);

#endif
