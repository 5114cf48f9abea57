/*
 * delivery: relayd's SMTP client side. A run delivers the queued mail of
 * one recipient domain: it resolves the next hop, opens up to
 * max_site_connections connections to it (shared by every domain with the
 * same next hop, so the limit is per site), sends message after message on
 * each (connection reuse), and records each recipient's outcome in batches.
 * An ATRN turn (RFC 2645 §4) is a next hop of its own whose one connection
 * was opened by the customer. It decides nothing about when to run: that
 * is sched.c's.
 */
#ifndef RELAYD_DELIVERY_H
#define RELAYD_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct server;
struct delivery;
struct delivery_turn;

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

/* ATRN (RFC 2645 §4): deliver the mail of the n domains down c, an open
 * connection whose peer (the customer) is about to greet us as an SMTP
 * server. The client waits for its 220, says EHLO (no STARTTLS of its own:
 * TLS, if active, carries across the turn), sends every queued recipient of
 * those domains whatever its next attempt, and QUITs. Outcomes are
 * committed as in any run, except that a 4xx leaves a recipient's next
 * attempt as it was (a pull adds no backoff). run_done(run_args[i], ...)
 * runs once per domain when its outcomes are committed; over(arg, totals)
 * last, once every run is done and the connection is closed. peer_name
 * shows in relay= ("odmr:ACCOUNT"). Returns 0, or -1 when nothing was
 * started (no callback is called; c is still the caller's). */
typedef void (*delivery_turn_cb)(void *arg, const struct delivery_result *total);
int delivery_turn(struct delivery *dl, struct conn *c, const char *peer_name,
                  char *const *domains, size_t n, delivery_done_cb run_done, void *const *run_args,
                  delivery_turn_cb over, void *arg, struct delivery_turn **out);
/* No more messages: the one being sent ends, then QUIT. */
void delivery_turn_stop(struct delivery_turn *t);
/* Drop the connection now; what was not acknowledged stays queued. */
void delivery_turn_abort(struct delivery_turn *t);

#endif
