/*
 * sched: per-domain delivery state. hold domains wait for ETRN, an operator
 * flush or a probe; retry domains (and mail to other destinations, such as
 * bounces) are tried with backoff per site, not per message. An ETRN for a
 * domain already being flushed joins that flush. Expiry and delay warnings
 * are found by periodic scans. The actual SMTP work is delivery.c's.
 */
#ifndef RELAYD_SCHED_H
#define RELAYD_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "delivery.h"

struct conn;
struct server;
struct sched;

int sched_open(struct server *srv, struct sched **out);
/* Deliver domain's mail now (ETRN, operator flush): clears its backoff.
 * Joins a flush already running. */
void sched_flush(struct sched *sc, const char *domain, const char *why);
/* ETRN (RFC 1985): sched_flush, but a site backed off has its backoff
 * cleared at most once per min_backoff (relayd(8) ETRN). */
void sched_etrn(struct sched *sc, const char *domain);
/* A message was queued with recipients in domain (retry domains start). */
void sched_queued(struct sched *sc, const char *domain);
/* Is a flush of domain running? */
int sched_flushing(struct sched *sc, const char *domain);
/* Is domain being delivered (a run, an ATRN turn) or its expired mail being
 * returned? Then an ATRN for it must wait (RFC 2645 §4.3: 451). */
int sched_busy(struct sched *sc, const char *domain);
/* ATRN: deliver the n domains' mail down the customer's connection c (see
 * delivery_turn). The domains count as running until their part of the
 * turn is committed, so no ETRN, retry or operator flush delivers them at
 * the same time, and nothing of the turn backs a domain off. over runs
 * once the turn is over and c closed. 0; 1 when a domain is busy (nothing
 * started); -1 on failure (nothing started; c is still the caller's). */
int sched_turn(struct sched *sc, struct conn *c, const char *peer_name, char *const *domains,
               size_t n, delivery_turn_cb over, void *arg, struct delivery_turn **out);
/* Stop starting work; running deliveries end (bounded). cb when all is idle. */
void sched_stop(struct sched *sc, void (*cb)(struct server *srv));
void sched_free(struct sched *sc);

#endif
