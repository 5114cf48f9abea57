/*
 * bounce: return what cannot be delivered. Builds an RFC 3464 DSN with
 * lib/dsn.c and queues it like any message, from <> to the original
 * sender, through the store; the scheduler then delivers it by MX. Never
 * to the null sender, never for NOTIFY=NEVER, and a bounce is never bounced
 * (its own sender is <>).
 */
#ifndef RELAYD_BOUNCE_H
#define RELAYD_BOUNCE_H

#include <stddef.h>

#include "dsn.h"
#include "store.h"

struct server;

/* One failed (or delayed) recipient of msg and why. */
struct bounce_rcpt {
    const struct store_drcpt *rcpt;
    int code;               /* the reply code that decided it (or 0) */
    const char *enh;        /* "5.1.1" or NULL */
    const char *text;       /* reply text or the local reason */
    const char *remote_mta; /* or NULL */
};

/* Queue a DSN of kind for rcpts of msg unless none is due (null sender,
 * NOTIFY=NEVER, NOTIFY without FAILURE/DELAY, or for DSN_RELAYED without SUCCESS). The DSN is
 * committed before cb(arg, status) runs (cb may be NULL); status 0 also when nothing was due, or
 * when msg left the queue meanwhile. r is read during the call only. msg's body may be in memory
 * (read during the call), or not (msg->body NULL, size > 0: a fetch that left it for
 * store_read_chunk): then its head is read from the queue, at most what bounce_size_limit lets the
 * DSN return or 64 KiB, and msg is borrowed until cb runs. 0, or < 0 and cb never runs. Loop
 * thread. */
int bounce_send(struct server *srv, const struct store_dmsg *msg, const struct bounce_rcpt *r,
                size_t n, enum dsn_kind kind, void (*cb)(void *arg, int status), void *arg);

#endif
