/*
 * queue_lock: one relayd per queue. An exclusive flock(2) on
 * "<database>.lock", taken before relayd listens and held by an open file
 * descriptor for the daemon's whole life (it survives the privilege drop, as
 * a lock belongs to the open file, not to a user). The file holds the
 * holder's pid, so a second relayd can say whom it found. Readers of the
 * queue (sqlite3 -readonly, etrnctl through the control socket) never take
 * this lock and are not affected. Does not open the queue itself.
 */
#ifndef RELAYD_QUEUE_LOCK_H
#define RELAYD_QUEUE_LOCK_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Take the lock on the queue whose file is `name` in the directory open as
 * dirfd (the lock file is "<name>.lock" there, created mode 0640, never
 * through a symbolic link). display is the database path for messages.
 * When the file is created by root for a daemon that will run as uid:gid,
 * it is given to that user ((uid_t)-1: leave it).
 * Returns 0 and the descriptor in *fd (close-on-exec; keep it open), or a
 * sysexits status with a message in err: EX_TEMPFAIL when another process
 * holds the lock (the message names its pid), EX_CANTCREAT otherwise.
 */
int queue_lock_take(int dirfd, const char *name, const char *display, uid_t uid, gid_t gid, int *fd,
                    char *err, size_t errlen);

#endif
