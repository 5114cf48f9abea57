/*
 * recipients: the per-domain lists of valid recipients (relayd.conf(5)
 * `recipients = FILE`), so that RCPT TO for an unknown user is refused with
 * 550 5.1.1 instead of being accepted, refused later by the site, and
 * bounced to a forged sender (backscatter). Each file becomes an immutable
 * hash table hung on the configuration snapshot; policy.c asks it.
 * Lines are parsed by lib/recipients_parse.c.
 */
#ifndef RELAYD_RECIPIENTS_H
#define RELAYD_RECIPIENTS_H

#include <stddef.h>
#include <uv.h>

struct config;
struct recipients;

/* A file bigger than this is refused (offsets in the table are 32 bits). */
#define RECIPIENTS_FILE_MAX ((size_t)1 << 30)

/* Read and index one file. Blocking: call it at start-up or on a worker
 * thread. 0, or -1 with "path:line: problem" in err. */
int recipients_load(const char *path, struct recipients **out, char *err, size_t errlen);
/* References are taken and dropped on the loop thread only. */
struct recipients *recipients_ref(struct recipients *r);
void recipients_unref(struct recipients *r);
/* Is local@domain listed, itself or as "@domain"? local is the decoded local
 * part (struct smtp_mailbox), domain normalised. 1 or 0. Thread-safe: the
 * table does not change after recipients_load. */
int recipients_match(const struct recipients *r, const char *local, const char *domain);
/* Entries (mailboxes and domains, duplicates counted once). */
size_t recipients_count(const struct recipients *r);

/*
 * Give each domain of cfg that names a recipients file its table. A file that
 * is unchanged since old loaded it (same inode, size and mtime) is shared,
 * not re-read. A file that cannot be read or parsed keeps old's table for it
 * (by path, else by domain) with a warning; with no table to keep, the whole
 * attach fails: 0, or -1 with "path:line: problem" in err (nothing attached).
 * old may be NULL (start-up). Synchronous: start-up and relayd -t.
 */
int recipients_attach(struct config *cfg, const struct config *old, char *err, size_t errlen);

/* The same with the reading on libuv's thread pool, for SIGHUP: the loop
 * goes on serving with the old snapshot meanwhile. cb runs on the loop
 * thread with status 0 (cfg ready to swap in) or -1 and err. cfg and old must
 * stay referenced until then. 0, or a negative uv error (cb never called). */
typedef void (*recipients_attach_cb)(struct config *cfg, int status, const char *err, void *arg);
int recipients_attach_async(uv_loop_t *loop, struct config *cfg, const struct config *old,
                            recipients_attach_cb cb, void *arg);

#endif
