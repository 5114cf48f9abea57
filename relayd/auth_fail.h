/*
 * auth_fail: failed AUTH attempts per client (auth_fail_limit), as Postfix's
 * anvil counts them: a window per client that starts with its first failure
 * and lasts the period. Bounded memory: past AUTH_FAIL_MAX clients, windows
 * that have passed are forgotten first, then the oldest. Pure: the caller
 * gives the time (loop milliseconds), so it is unit-tested without a loop.
 * Loop thread only.
 */
#ifndef RELAYD_AUTH_FAIL_H
#define RELAYD_AUTH_FAIL_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_FAIL_MAX     65536 /* clients remembered at once */
#define AUTH_FAIL_KEY_MAX 64    /* "2001:db8:1:2::/64", an address: longer keys are cut */

struct auth_fail;

struct auth_fail *auth_fail_new(void);
void auth_fail_free(struct auth_fail *f);

/* Failures of the client key in its current window at time now (ms): 0
 * when it has none or its window of period ms has passed. */
unsigned auth_fail_count(struct auth_fail *f, const char *key, uint64_t now, uint64_t period);
/* One more failure of key at now. A client whose window has passed starts
 * a new one. Out of memory: the failure is not counted. */
void auth_fail_add(struct auth_fail *f, const char *key, uint64_t now, uint64_t period);
/* Clients remembered (for tests and limits). */
size_t auth_fail_size(const struct auth_fail *f);

#endif
