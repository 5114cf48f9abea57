/*
 * test_retry: the decisions the scheduler and the bounce code take from the
 * clock, tested without one: a site's backoff (relayd/retry.c: min_backoff,
 * doubling, max_backoff, no overflow), a recipient's next attempt, when a
 * domain's oldest mail is due a delay warning or expiry (relayd.conf(5)
 * queue_lifetime, delay_warning), and which NOTIFY settings get which DSN
 * (lib/dsn.c, RFC 3461 §4.1).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../relayd/retry.h"
#include "dsn.h"
#include "smtp_parse.h"

#define S 1000ull /* ms */

static void site_backoff_doubles_from_min_to_max(void **state)
{
    uint64_t b = 0, seen[8];
    int i;

    (void)state;
    for (i = 0; i < 8; i++)
        seen[i] = b = retry_site_backoff(b, 60 * S, 600 * S);
    assert_int_equal(seen[0], 60 * S); /* the first failure after a success */
    assert_int_equal(seen[1], 120 * S);
    assert_int_equal(seen[2], 240 * S);
    assert_int_equal(seen[3], 480 * S);
    assert_int_equal(seen[4], 600 * S); /* capped, not 960 */
    assert_int_equal(seen[7], 600 * S);
}

static void site_backoff_edges(void **state)
{
    (void)state;
    /* min = max: always that */
    assert_int_equal(retry_site_backoff(0, 5 * S, 5 * S), 5 * S);
    assert_int_equal(retry_site_backoff(5 * S, 5 * S, 5 * S), 5 * S);
    /* a backoff above a max lowered by a reload comes down at once */
    assert_int_equal(retry_site_backoff(3600 * S, 60 * S, 600 * S), 600 * S);
    /* no overflow near the top of the range */
    assert_int_equal(retry_site_backoff(UINT64_MAX / 2 + 1, 1, UINT64_MAX), UINT64_MAX);
    assert_int_equal(retry_site_backoff(UINT64_MAX, 1, UINT64_MAX), UINT64_MAX);
}

static void rcpt_delay_grows_with_attempts(void **state)
{
    (void)state;
    assert_int_equal(retry_rcpt_delay(0, 300 * S, 3600 * S), 300 * S);
    assert_int_equal(retry_rcpt_delay(1, 300 * S, 3600 * S), 600 * S);
    assert_int_equal(retry_rcpt_delay(3, 300 * S, 3600 * S), 2400 * S);
    assert_int_equal(retry_rcpt_delay(4, 300 * S, 3600 * S), 3600 * S);
    assert_int_equal(retry_rcpt_delay(1000000, 300 * S, 3600 * S), 3600 * S);
    assert_int_equal(retry_rcpt_delay(-1, 300 * S, 3600 * S), 300 * S);
    assert_int_equal(retry_rcpt_delay(70, 1, UINT64_MAX), UINT64_MAX);
}

static void due_expiry_before_warning(void **state)
{
    const int64_t now = 1000000, life = 5 * 86400, warn = 4 * 3600;

    (void)state;
    /* just arrived; at the warning age exactly: not yet (strictly older) */
    assert_int_equal(retry_due(now, now, life, warn), RETRY_DUE_NONE);
    assert_int_equal(retry_due(now - warn, now, life, warn), RETRY_DUE_NONE);
    assert_int_equal(retry_due(now - warn - 1, now, life, warn), RETRY_DUE_WARN);
    assert_int_equal(retry_due(now - life, now, life, warn), RETRY_DUE_WARN);
    assert_int_equal(retry_due(now - life - 1, now, life, warn), RETRY_DUE_EXPIRE);
    /* 0 turns each off */
    assert_int_equal(retry_due(now - life - 1, now, 0, warn), RETRY_DUE_WARN);
    assert_int_equal(retry_due(now - life - 1, now, life, 0), RETRY_DUE_EXPIRE);
    assert_int_equal(retry_due(now - warn - 1, now, life, 0), RETRY_DUE_NONE);
    assert_int_equal(retry_due(0, now, 0, 0), RETRY_DUE_NONE);
    /* a warning configured longer than the lifetime never comes first */
    assert_int_equal(retry_due(now - 11, now, 10, 20), RETRY_DUE_EXPIRE);
    /* a clock set back: mail "from the future" is not due */
    assert_int_equal(retry_due(now + 3600, now, life, warn), RETRY_DUE_NONE);
}

static void notify_decides_the_dsn(void **state)
{
    (void)state;
    /* no NOTIFY: failures and delays */
    assert_true(dsn_notify_wants(0, DSN_FAILURE));
    assert_true(dsn_notify_wants(0, DSN_DELAY));
    /* NEVER: nothing, whatever else is set */
    assert_false(dsn_notify_wants(SMTP_NOTIFY_NEVER, DSN_FAILURE));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_NEVER, DSN_DELAY));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_NEVER | SMTP_NOTIFY_FAILURE, DSN_FAILURE));
    /* a list: exactly what it names */
    assert_true(dsn_notify_wants(SMTP_NOTIFY_FAILURE, DSN_FAILURE));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_FAILURE, DSN_DELAY));
    assert_true(dsn_notify_wants(SMTP_NOTIFY_DELAY, DSN_DELAY));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_DELAY, DSN_FAILURE));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_SUCCESS, DSN_FAILURE));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_SUCCESS, DSN_DELAY));
    assert_true(
        dsn_notify_wants(SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, DSN_DELAY));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(site_backoff_doubles_from_min_to_max),
        cmocka_unit_test(site_backoff_edges),
        cmocka_unit_test(rcpt_delay_grows_with_attempts),
        cmocka_unit_test(due_expiry_before_warning),
        cmocka_unit_test(notify_decides_the_dsn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
