/*
 * retry: backoff and expiry arithmetic (see retry.h). The scheduler and the
 * delivery client call it; it never touches a timer, a socket or the queue.
 */
#include "retry.h"

uint64_t retry_site_backoff(uint64_t cur, uint64_t min_backoff, uint64_t max_backoff)
{
    uint64_t b;

    if (cur == 0)
        b = min_backoff;
    else
        b = cur > max_backoff / 2 ? max_backoff : cur * 2; /* no overflow */
    return b > max_backoff ? max_backoff : b;
}

uint64_t retry_rcpt_delay(int attempts, uint64_t min_backoff, uint64_t max_backoff)
{
    uint64_t b = min_backoff;
    int i;

    for (i = 0; i < attempts && b < max_backoff; i++)
        b = b > max_backoff / 2 ? max_backoff : b * 2;
    return b > max_backoff ? max_backoff : b;
}

enum retry_due retry_due(int64_t oldest, int64_t now, int64_t lifetime, int64_t warning)
{
    if (lifetime > 0 && oldest < now - lifetime)
        return RETRY_DUE_EXPIRE;
    if (warning > 0 && oldest < now - warning)
        return RETRY_DUE_WARN;
    return RETRY_DUE_NONE;
}
