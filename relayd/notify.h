/*
 * notify: tells a held domain's site that mail is waiting - the pull that
 * needs no protocol at all. When a held domain's queue goes from empty to
 * non-empty, and then at most every notify_interval while mail waits, it
 * mails the domain's notify address and/or runs notify_command. It never
 * delivers the waiting mail itself.
 */
#ifndef RELAYD_NOTIFY_H
#define RELAYD_NOTIFY_H

struct server;
struct notify;

/* Start the reminder timer and learn which domains already have mail (so a
 * restart does not announce it again). 0 or -1. */
int notify_open(struct server *srv, struct notify **out);
/* A message with recipients in domain was committed. */
void notify_queued(struct notify *n, const char *domain);
/* Shutdown: stop the timer, kill commands still running; close callbacks
 * run in the loop. */
void notify_close(struct notify *n);
/* After the loop has ended. NULL is fine. */
void notify_free(struct notify *n);

#endif
