/*
 * spool: where a message body accumulates during DATA. Small bodies stay in
 * memory; past SPOOL_MEM_MAX the bytes go to a file in a spool directory
 * beside the database, written through libuv's thread pool so the loop
 * never blocks on disk. Memory per session stays bounded whatever the size.
 * Does not decode anything (lib/smtp_data.c does) and does not commit
 * (relayd/store.c does).
 */
#ifndef RELAYD_SPOOL_H
#define RELAYD_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SPOOL_MEM_MAX (128 * 1024)

struct spool;

/* A new, empty body. dir: the spool directory (created by spool_dir_init).
 * NULL on allocation failure. */
struct spool *spool_new(uv_loop_t *loop, const char *dir, const char *queue_id);
/* Append bytes (copied). 0, or < 0 after a write error (sticky). */
int spool_append(struct spool *sp, const void *data, size_t len);
/* True when the disk is behind: SPOOL_MEM_MAX bytes wait for the write in
 * flight. The caller stops reading until spool_on_drain's callback runs. */
int spool_busy(const struct spool *sp);
/* Call cb(arg) once, when spool_busy() is no longer true. */
void spool_on_drain(struct spool *sp, void (*cb)(void *arg), void *arg);
/* Call cb(arg, status) once every byte appended so far is written and the
 * file closed. When the body is in memory only, cb runs before this returns. */
void spool_when_ready(struct spool *sp, void (*cb)(void *arg, int status), void *arg);
uint64_t spool_size(const struct spool *sp);
/* Hand the body over: either *mem (malloc'd, caller frees) or *path (malloc'd,
 * the file is the caller's). Only when !spool_busy(). 0 or < 0. */
int spool_take(struct spool *sp, char **mem, char **path);
/* Discard (removing the file, if any; through the thread pool). */
void spool_free(struct spool *sp);

/* Create the spool directory for database path db, whose file is name in
 * the directory open as dirfd ("queue.db" -> "queue.db.spool/", mode 0700),
 * and remove files left by a previous run. Refuses (logged) a spool that is
 * a symbolic link, not a directory, or not owned by the user relayd runs
 * as; never follows a symbolic link. Call after the privilege drop.
 * Blocking: start-up only. Writes the directory's path into out. 0 or -1. */
int spool_dir_init(int dirfd, const char *name, const char *db, char *out, size_t outlen);

#endif
