/*
 * test_tls_policy: which delivery connection may carry which domain's mail
 * (relayd/tls_policy.c, relayd.conf(5) tls, issue 7), as a table: every
 * policy a domain may ask for against every kind of connection a shared
 * next hop may hold. The one rule behind it: an encrypt or verify domain's
 * mail never goes over a connection that is not (verified) TLS, whichever
 * domain opened it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../relayd/tls_policy.h"

/* The connections: opened_for, ready, tls, verified_now, clear_retry. */
enum {
    C_NONE_CLEAR,     /* opened for none: never tried STARTTLS */
    C_NONE_TLS,       /* cannot happen today (none never STARTTLSes); judged by what it is */
    C_MAY_TLS,        /* may, the site gave TLS (unverified) */
    C_MAY_CLEAR,      /* may, STARTTLS not offered or refused (454): clear */
    C_MAY_RETRY,      /* may, the retry in clear after a failed handshake */
    C_ENCRYPT_TLS,    /* encrypt: TLS, unverified */
    C_VERIFY_TLS,     /* verify: TLS verified with the CAs of now */
    C_VERIFY_OLD_CAS, /* verify: TLS verified with CAs a reload replaced */
    C_COUNT
};

static const struct tls_policy_conn conns[C_COUNT] = {
    [C_NONE_CLEAR] = {CFG_TLS_NONE, 1, 0, 0, 0},
    [C_NONE_TLS] = {CFG_TLS_NONE, 1, 1, 0, 0},
    [C_MAY_TLS] = {CFG_TLS_MAY, 1, 1, 0, 0},
    [C_MAY_CLEAR] = {CFG_TLS_MAY, 1, 0, 0, 0},
    [C_MAY_RETRY] = {CFG_TLS_MAY, 1, 0, 0, 1},
    [C_ENCRYPT_TLS] = {CFG_TLS_ENCRYPT, 1, 1, 0, 0},
    [C_VERIFY_TLS] = {CFG_TLS_VERIFY, 1, 1, 1, 0},
    [C_VERIFY_OLD_CAS] = {CFG_TLS_VERIFY, 1, 1, 0, 0},
};

/* expected[want][conn]: may it carry the mail? */
static const int expected[4][C_COUNT] = {
    /*                  none  noneTLS mayTLS mayClr mayRetry enc ver verOld */
    [CFG_TLS_NONE] = {1, 1, 1, 1, 1, 1, 1, 1},
    [CFG_TLS_MAY] = {0, 1, 1, 1, 1, 1, 1, 1},
    [CFG_TLS_ENCRYPT] = {0, 1, 1, 0, 0, 1, 1, 1},
    [CFG_TLS_VERIFY] = {0, 0, 0, 0, 0, 0, 1, 0},
};

static void ready_connections(void **state)
{
    (void)state;
    for (int want = CFG_TLS_NONE; want <= CFG_TLS_VERIFY; want++)
        for (int c = 0; c < C_COUNT; c++)
            if (tls_policy_satisfied((enum cfg_tls)want, &conns[c]) != expected[want][c])
                fail_msg("tls = %s, connection %d: got %d, expected %d",
                         tls_policy_name((enum cfg_tls)want), c,
                         tls_policy_satisfied((enum cfg_tls)want, &conns[c]), expected[want][c]);
}

/* Encrypt and verify never go in clear, whatever opened the connection. */
static void never_in_clear(void **state)
{
    (void)state;
    for (int c = 0; c < C_COUNT; c++) {
        if (conns[c].tls)
            continue;
        assert_false(tls_policy_satisfied(CFG_TLS_ENCRYPT, &conns[c]));
        assert_false(tls_policy_satisfied(CFG_TLS_VERIFY, &conns[c]));
    }
}

/* A connection still being set up counts for the runs it could serve once
 * ready: its policy is at least theirs and it is not the retry in clear. */
static void connections_being_set_up(void **state)
{
    struct tls_policy_conn c = {CFG_TLS_ENCRYPT, 0, 0, 0, 0};

    (void)state;
    assert_true(tls_policy_may_satisfy(CFG_TLS_NONE, &c));
    assert_true(tls_policy_may_satisfy(CFG_TLS_MAY, &c));
    assert_true(tls_policy_may_satisfy(CFG_TLS_ENCRYPT, &c));
    assert_false(tls_policy_may_satisfy(CFG_TLS_VERIFY, &c));
    c.opened_for = CFG_TLS_NONE;
    assert_true(tls_policy_may_satisfy(CFG_TLS_NONE, &c));
    assert_false(tls_policy_may_satisfy(CFG_TLS_MAY, &c));
    c.opened_for = CFG_TLS_MAY;
    c.clear_retry = 1;
    assert_true(tls_policy_may_satisfy(CFG_TLS_MAY, &c));
    assert_false(tls_policy_may_satisfy(CFG_TLS_ENCRYPT, &c));
    c.opened_for = CFG_TLS_VERIFY;
    c.clear_retry = 0;
    assert_false(tls_policy_may_satisfy(CFG_TLS_VERIFY, &c)); /* old CAs */
    c.verified_now = 1;
    assert_true(tls_policy_may_satisfy(CFG_TLS_VERIFY, &c));
    /* once ready it is judged by what it achieved */
    c.ready = 1;
    assert_false(tls_policy_may_satisfy(CFG_TLS_VERIFY, &c)); /* no TLS after all */
    c.tls = 1;
    assert_true(tls_policy_may_satisfy(CFG_TLS_VERIFY, &c));
}

static void names(void **state)
{
    (void)state;
    assert_string_equal(tls_policy_name(CFG_TLS_NONE), "none");
    assert_string_equal(tls_policy_name(CFG_TLS_MAY), "may");
    assert_string_equal(tls_policy_name(CFG_TLS_ENCRYPT), "encrypt");
    assert_string_equal(tls_policy_name(CFG_TLS_VERIFY), "verify");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ready_connections),
        cmocka_unit_test(never_in_clear),
        cmocka_unit_test(connections_being_set_up),
        cmocka_unit_test(names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
