/*
 * retry: the arithmetic of when mail is tried again and when it has waited
 * too long, apart from the timers and the queue that act on it, so it can be
 * tested alone. Pure: no I/O, no clock (the caller passes "now").
 */
#ifndef RELAYD_RETRY_H
#define RELAYD_RETRY_H

#include <stdint.h>

/* A site's backoff after a failed run (RFC 5321 §4.5.4.1: back off the site
 * as a whole): min_backoff after a success (cur = 0), then doubled, never
 * above max_backoff. Milliseconds. */
uint64_t retry_site_backoff(uint64_t cur, uint64_t min_backoff, uint64_t max_backoff);

/* The wait before a recipient deferred `attempts` times before this one is
 * tried again: min_backoff doubled per earlier attempt, at most max_backoff.
 * Milliseconds. */
uint64_t retry_rcpt_delay(int attempts, uint64_t min_backoff, uint64_t max_backoff);

enum retry_due { RETRY_DUE_NONE = 0, RETRY_DUE_WARN, RETRY_DUE_EXPIRE };

/* What a domain whose oldest mail arrived at `oldest` is due at `now`
 * (seconds): expiry once it is older than queue_lifetime, else a delay
 * warning once older than delay_warning; 0 turns either off. */
enum retry_due retry_due(int64_t oldest, int64_t now, int64_t lifetime, int64_t warning);

#endif
