/*
 * sched: per-domain delivery state. hold domains wait for ETRN, an operator
 * flush or a probe; retry domains (and mail to other destinations, such as
 * bounces) are tried with backoff per site, not per message. An ETRN for a
 * domain already being flushed joins that flush. Expiry and delay warnings
 * are found by periodic scans. The actual SMTP work is delivery.c's.
 */
#ifndef RELAYD_SCHED_H
#define RELAYD_SCHED_H

#include <stdint.h>

struct server;
struct sched;

int sched_open(struct server *srv, struct sched **out);
/* Deliver domain's mail now (ETRN, operator flush): clears its backoff.
 * Joins a flush already running. */
void sched_flush(struct sched *sc, const char *domain, const char *why);
/* A message was queued with recipients in domain (retry domains start). */
void sched_queued(struct sched *sc, const char *domain);
/* Is a flush of domain running? */
int sched_flushing(struct sched *sc, const char *domain);
/* Stop starting work; running deliveries end (bounded). cb when all is idle. */
void sched_stop(struct sched *sc, void (*cb)(struct server *srv));
void sched_free(struct sched *sc);

#endif
