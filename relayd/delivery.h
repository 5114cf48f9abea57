/*
 * delivery: relayd's SMTP client side. A run delivers the queued mail of
 * one recipient domain: it resolves the next hop, opens up to
 * max_site_connections connections to it (shared by every domain with the
 * same next hop, so the limit is per site), sends message after message on
 * each (connection reuse), and records each recipient's outcome in batches.
 * It decides nothing about when to run: that is sched.c's.
 */
#ifndef RELAYD_DELIVERY_H
#define RELAYD_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct delivery;

struct delivery_result {
    uint64_t delivered, deferred, bounced; /* recipients */
    int site_down;                         /* no connection could be made or kept: back off */
    char why[256];                         /* the last error, for logs and domain_state */
};

typedef void (*delivery_done_cb)(void *arg, const struct delivery_result *r);

int delivery_open(struct server *srv, struct delivery **out);
/* Deliver domain's recipients with next_attempt <= due_before (INT64_MAX:
 * all of them, as for ETRN). done runs once, after every outcome of the run
 * is committed to the queue, so a following run never sees a stale row. */
void delivery_run(struct delivery *dl, const char *domain, int64_t due_before,
                  delivery_done_cb done, void *arg);
/* Runs in progress for domain (0 or 1 under sched). */
int delivery_running(const struct delivery *dl, const char *domain);
/* Close idle connections, let running transactions end; cb when nothing is
 * left (bounded by the delivery timeouts). */
void delivery_stop(struct delivery *dl, void (*cb)(void *arg), void *arg);
void delivery_free(struct delivery *dl);

#endif
