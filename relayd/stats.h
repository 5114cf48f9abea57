/*
 * stats: counters since start, per domain, for `etrnctl stats`. Loop thread
 * only; a small hash table owned by the server. No I/O.
 */
#ifndef RELAYD_STATS_H
#define RELAYD_STATS_H

#include <stdint.h>

struct stats;

enum stats_counter {
    STATS_RECEIVED = 0, /* recipients accepted by the SMTP server */
    STATS_DELIVERED,
    STATS_DEFERRED,
    STATS_BOUNCED,
    STATS_ETRN,    /* ETRN commands naming the domain */
    STATS_QUOTA,   /* recipients refused by the section's queue quota (issue 11) */
    STATS_NOSPACE, /* transactions refused by the free-space reserve (under "") */
    STATS_NCOUNTERS
};

struct stats *stats_new(void);
void stats_free(struct stats *st);
/* Add n to a domain's counter (domain normalised; "" for totals). */
void stats_add(struct stats *st, const char *domain, enum stats_counter c, uint64_t n);
/* Walk every domain: cb(arg, domain, counters[STATS_NCOUNTERS]). */
void stats_walk(const struct stats *st,
                void (*cb)(void *arg, const char *domain, const uint64_t *counters), void *arg);

#endif
