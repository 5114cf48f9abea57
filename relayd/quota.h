/*
 * quota: the storage limits an ISP plans with (issue 11), decided on the loop
 * thread in constant time per command. Per domain section (a customer: the
 * [domain] section and, with subdomains = yes, every domain below it) the
 * messages and bytes queued, plus what sessions are receiving for it now,
 * against max_queue_messages and max_queue_bytes; and a free-space reserve,
 * queue_minfree, against the free space of the queue's file system (statfs
 * off the loop, every second) plus the database's free pages, minus what
 * sessions in progress may still write. It sends no reply and reads no
 * socket: smtpd_cmd.c asks and answers.
 */
#ifndef RELAYD_QUOTA_H
#define RELAYD_QUOTA_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct config;
struct cfg_domain;
struct quota;

/* Reads the queue's usage (store_usage_walk) and its file system once; then
 * follows both. srv->store and srv->cfg must be open. 0 or -1. */
int quota_open(struct server *srv, struct quota **out);
void quota_free(struct quota *q);
/* After a reload swapped srv->cfg: sections may have changed; recount. */
void quota_reload(struct quota *q);

/* A transaction may start only while the reserve is kept. 0, or -1 (452
 * 4.3.1: the caller answers). cfg: the session's snapshot. */
int quota_mail_check(struct quota *q, const struct config *cfg);
/* What an open transaction may still write (its SIZE, else the largest
 * message), counted against the reserve from MAIL until quota_mail_end. */
void quota_mail_begin(struct quota *q, uint64_t bytes);
void quota_mail_end(struct quota *q, uint64_t bytes);

/* May one more message of size bytes (0: not declared) be queued for the
 * section dom? 0, or -1 with the reply text (after "452 4.2.2 ") in why. */
int quota_rcpt_check(struct quota *q, const struct cfg_domain *dom, uint64_t size, char *why,
                     size_t whylen);
/* A transaction's claim on a section, from its first accepted RCPT there
 * until commit or abort (then the queue's own count takes over). */
void quota_reserve(struct quota *q, const char *section, uint64_t size);
void quota_release(struct quota *q, const char *section, uint64_t size);

/* What the section holds now (queued, without reservations). */
void quota_usage(const struct quota *q, const char *section, int64_t *messages, int64_t *bytes);
/* How full the section dom is: the higher of its messages and bytes as a
 * percentage of max_queue_messages and max_queue_bytes (rounded down; over
 * 100 when sessions overshot it), or -1 when it has no quota. */
int quota_percent(const struct quota *q, const struct cfg_domain *dom);
/* Where a quota counts as nearly full: etrnctl check's WARNING, and the
 * line in a "mail is waiting" notification (issue 11). */
#define QUOTA_WARN_PERCENT 80

/* Free bytes as the reserve counts them, and the reserve itself. */
void quota_storage(const struct quota *q, uint64_t *free_bytes, uint64_t *minfree);

#endif
