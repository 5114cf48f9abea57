/*
 * test_targets: the pure parts of routing. relayd/targets.c (RFC 5321 §5.1:
 * MX order, pruning of this relay and of everything at or after its
 * preference, the per-run shuffle of equal preferences, the
 * max_mx_addresses cut) and relayd/me.c (which addresses are this relay:
 * unspecified, loopback, v4-mapped, interface and listen addresses,
 * my_addresses), with hand-made inputs: no DNS, no sockets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* By path: a bare "config.h" would find autoconf's config.h (-I. comes first). */
#include "../../relayd/config.h"
#include "../../relayd/me.h"
#include "../../relayd/targets.h"

/* "192.0.2.1" or "2001:db8::1" into a sockaddr_storage with port. */
static struct sockaddr_storage sa(const char *text, unsigned port)
{
    struct sockaddr_storage s;

    memset(&s, 0, sizeof(s));
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&s;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&s;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
    }
    return s;
}

static const char *addr_text(const struct sockaddr_storage *s, char *buf, size_t len)
{
    if (s->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)s)->sin_addr, buf, (socklen_t)len);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)s)->sin6_addr, buf, (socklen_t)len);
    return buf;
}

/* "host=addr pref|..." */
static const char *list_text(const struct resolver_target *t, size_t n, char *buf, size_t len)
{
    size_t used = 0;
    char a[64];

    buf[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s=%s %u", i ? "|" : "", t[i].host,
                                 addr_text(&t[i].addr, a, sizeof(a)), t[i].pref);
    return buf;
}

/* ---- targets_plan ------------------------------------------------------------------------ */

/* "Me" for these tests: any address in the list below. */
static const char *me_list[4];

static int is_me(void *arg, const struct sockaddr_storage *addr)
{
    char a[64];

    (void)arg;
    addr_text(addr, a, sizeof(a));
    for (size_t i = 0; i < 4 && me_list[i] != NULL; i++)
        if (strcmp(me_list[i], a) == 0)
            return 1;
    return 0;
}

struct hostdef {
    const char *name;
    unsigned pref;
    enum targets_lookup lookup;
    const char *addrs[4];
};

/* Plan defs (up to 8 hosts) and return the outcome; the list as text. */
static int plan(const struct hostdef *defs, size_t n, int mx, unsigned mypref, size_t per_host,
                char *text, size_t textlen, size_t *blame)
{
    struct targets_host h[8];
    struct sockaddr_storage a[8][4];
    struct resolver_target *t = NULL;
    size_t nt = 0, b;
    int rc;

    assert_true(n <= 8);
    memset(h, 0, sizeof(h));
    for (size_t i = 0; i < n; i++) {
        h[i].name = defs[i].name;
        h[i].pref = defs[i].pref;
        h[i].lookup = defs[i].lookup;
        h[i].addrs = a[i];
        for (size_t j = 0; j < 4 && defs[i].addrs[j] != NULL; j++) {
            a[i][j] = sa(defs[i].addrs[j], 0);
            h[i].naddrs++;
        }
    }
    rc = targets_plan(h, n, mx, mypref, is_me, NULL, 25, per_host, &t, &nt, &b);
    assert_true(rc >= 0);
    list_text(t, nt, text, textlen);
    for (size_t i = 0; i < nt; i++)
        assert_int_equal(ntohs(((struct sockaddr_in *)&t[i].addr)->sin_port), 25);
    if (blame != NULL)
        *blame = b;
    free(t);
    return rc;
}

/* RFC 5321 §5.1: lower preference first, whatever order the answer had;
 * within one preference the order given is kept (the shuffle is a
 * separate step, per run). */
static void test_plan_order(void **state)
{
    const struct hostdef d[] = {
        {"c", 30, TARGETS_FOUND, {"192.0.2.30"}},
        {"a", 10, TARGETS_FOUND, {"2001:db8::10", "192.0.2.10"}},
        {"b", 20, TARGETS_FOUND, {"192.0.2.20"}},
        {"a2", 10, TARGETS_FOUND, {"192.0.2.11"}},
    };
    char text[512];

    (void)state;
    memset(me_list, 0, sizeof(me_list));
    assert_int_equal(plan(d, 4, 1, ~0u, 5, text, sizeof(text), NULL), TARGETS_OK);
    assert_string_equal(text, "a=2001:db8::10 10|a=192.0.2.10 10|a2=192.0.2.11 10|"
                              "b=192.0.2.20 20|c=192.0.2.30 30");
    /* per host at most per_host addresses */
    assert_int_equal(plan(d, 4, 1, ~0u, 1, text, sizeof(text), NULL), TARGETS_OK);
    assert_string_equal(text, "a=2001:db8::10 10|a2=192.0.2.11 10|b=192.0.2.20 20|c=192.0.2.30 30");
}

/* This relay found by name (mypref) or by address: it and every host at
 * or after its preference go; nothing left is a loop. */
static void test_plan_prune_self(void **state)
{
    const struct hostdef d[] = {
        {"low", 5, TARGETS_FOUND, {"192.0.2.5"}},
        {"me", 10, TARGETS_FOUND, {"198.51.100.1"}},
        {"peer", 10, TARGETS_FOUND, {"192.0.2.10"}},
        {"high", 20, TARGETS_FOUND, {"192.0.2.20"}},
    };
    char text[512];

    (void)state;
    memset(me_list, 0, sizeof(me_list));
    /* by name at 10 */
    assert_int_equal(plan(d, 4, 1, 10, 5, text, sizeof(text), NULL), TARGETS_OK);
    assert_string_equal(text, "low=192.0.2.5 5");
    /* by address */
    me_list[0] = "198.51.100.1";
    assert_int_equal(plan(d, 4, 1, ~0u, 5, text, sizeof(text), NULL), TARGETS_OK);
    assert_string_equal(text, "low=192.0.2.5 5");
    /* we are the best: nothing left, a loop */
    assert_int_equal(plan(d + 1, 3, 1, ~0u, 5, text, sizeof(text), NULL), TARGETS_LOOP);
    /* our address under a worse host sets our preference too: the better
     * ones are kept */
    me_list[0] = "192.0.2.20";
    assert_int_equal(plan(d, 4, 1, ~0u, 5, text, sizeof(text), NULL), TARGETS_OK);
    assert_string_equal(text, "low=192.0.2.5 5|me=198.51.100.1 10|peer=192.0.2.10 10");
    /* a route (not MX): only our own address goes */
    me_list[0] = "198.51.100.1";
    assert_int_equal(plan(d + 1, 1, 0, ~0u, 5, text, sizeof(text), NULL), TARGETS_LOOP);
    memset(me_list, 0, sizeof(me_list));
}

/* No address anywhere: TARGETS_NONE naming the host to blame, a temporary
 * failure before a host that does not exist; a better host that failed
 * for now outranks a loop (the answer may be better next time). */
static void test_plan_none(void **state)
{
    const struct hostdef d[] = {
        {"gone", 5, TARGETS_ABSENT, {NULL}},
        {"flaky", 10, TARGETS_TEMP, {NULL}},
        {"me", 20, TARGETS_FOUND, {"198.51.100.1"}},
    };
    char text[512];
    size_t blame;

    (void)state;
    memset(me_list, 0, sizeof(me_list));
    assert_int_equal(plan(d, 2, 1, ~0u, 5, text, sizeof(text), &blame), TARGETS_NONE);
    assert_int_equal(blame, 1);
    assert_int_equal(plan(d, 1, 1, ~0u, 5, text, sizeof(text), &blame), TARGETS_NONE);
    assert_int_equal(blame, 0);
    me_list[0] = "198.51.100.1";
    assert_int_equal(plan(d, 3, 1, ~0u, 5, text, sizeof(text), &blame), TARGETS_NONE);
    assert_int_equal(blame, 1);
    /* only a host that does not exist is better than us (by name, then by
     * address): a loop */
    assert_int_equal(plan(d, 1, 1, 20, 5, text, sizeof(text), &blame), TARGETS_LOOP);
    {
        const struct hostdef e[] = {{"gone", 5, TARGETS_ABSENT, {NULL}},
                                    {"me", 20, TARGETS_FOUND, {"198.51.100.1"}}};
        assert_int_equal(plan(e, 2, 1, ~0u, 5, text, sizeof(text), &blame), TARGETS_LOOP);
    }
    memset(me_list, 0, sizeof(me_list));
    /* nothing at all */
    assert_int_equal(plan(d, 0, 1, ~0u, 5, text, sizeof(text), &blame), TARGETS_NONE);
    assert_int_equal(blame, SIZE_MAX);
}

/* ---- targets_order ----------------------------------------------------------------------- */

static void fill(struct resolver_target *t, const char *host, unsigned pref, const char *addr)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->pref = pref;
    t->addr = sa(addr, 25);
}

/* Equal preferences in both orders over many runs, a host's addresses
 * together and in order, preferences never mixed. 1 in 2^39 to fail by
 * chance. */
static void test_order_shuffle(void **state)
{
    struct resolver_target t[5];
    uint64_t rng = 42;
    int a_first = 0, b_first = 0;
    char text[512];

    (void)state;
    for (int i = 0; i < 40; i++) {
        fill(&t[0], "a", 10, "192.0.2.1");
        fill(&t[1], "a", 10, "192.0.2.2");
        fill(&t[2], "b", 10, "192.0.2.3");
        fill(&t[3], "c", 20, "192.0.2.4");
        fill(&t[4], "d", 20, "192.0.2.5");
        assert_int_equal(targets_order(t, 5, 5, &rng), 5);
        list_text(t, 5, text, sizeof(text));
        if (strncmp(text, "a=192.0.2.1 10|a=192.0.2.2 10|b=192.0.2.3 10|", 45) == 0)
            a_first++;
        else if (strncmp(text, "b=192.0.2.3 10|a=192.0.2.1 10|a=192.0.2.2 10|", 45) == 0)
            b_first++;
        else
            fail_msg("pref 10 hosts out of shape: %s", text);
        assert_int_equal(t[3].pref, 20);
        assert_int_equal(t[4].pref, 20);
    }
    assert_true(a_first > 0);
    assert_true(b_first > 0);
}

/* max_mx_addresses: at most max addresses, the best ones. */
static void test_order_cap(void **state)
{
    struct resolver_target t[8];
    uint64_t rng = 7;
    char name[8], addr[32];

    (void)state;
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof(name), "h%d", i);
        snprintf(addr, sizeof(addr), "192.0.2.%d", i + 1);
        fill(&t[i], name, (unsigned)(10 * (i / 2)), addr);
    }
    assert_int_equal(targets_order(t, 8, 5, &rng), 5);
    for (int i = 0; i < 4; i++)
        assert_true(t[i].pref <= 10);
    assert_int_equal(t[4].pref, 20);
    assert_int_equal(targets_order(t, 3, 5, &rng), 3);
    assert_int_equal(targets_order(t, 0, 5, &rng), 0);
}

/* ---- me ---------------------------------------------------------------------------------- */

/* A config as me_set reads it: hostname, delivery_port, listen, my_addresses. */
struct mecfg {
    struct config cfg;
    struct cfg_listen listen[2];
    struct cfg_net mine[1];
};

static void mecfg_init(struct mecfg *c, const char *listen, unsigned port, const char *mine)
{
    memset(c, 0, sizeof(*c));
    c->cfg.hostname = (char *)"relay.test";
    c->cfg.delivery_port = 25;
    c->cfg.listen = c->listen;
    if (strcmp(listen, "*") == 0) {
        c->listen[0].addr = sa("0.0.0.0", port);
        c->listen[1].addr = sa("::", port);
        c->cfg.nlisten = 2;
    } else {
        c->listen[0].addr = sa(listen, port);
        c->cfg.nlisten = 1;
    }
    if (mine != NULL) {
        c->mine[0].addr = sa(mine, 0);
        c->mine[0].prefix = strchr(mine, ':') ? 128 : 32;
        c->cfg.my_addresses = c->mine;
        c->cfg.nmy_addresses = 1;
    }
}

static int me_at(const struct me *m, const char *addr, unsigned port, int mx)
{
    struct sockaddr_storage s = sa(addr, port);

    return me_is_addr(m, (const struct sockaddr *)&s, port, mx);
}

/* Unspecified addresses are never a peer: "me" on every port, in every
 * form (RFC 4291 §2.5.5.2 v4-mapped included). */
static void test_me_unspecified(void **state)
{
    struct mecfg c;
    struct me *m = me_new();

    (void)state;
    assert_non_null(m);
    mecfg_init(&c, "127.0.0.1", 2525, NULL);
    assert_int_equal(me_set(m, &c.cfg, NULL, 0), 0);
    assert_true(me_at(m, "0.0.0.0", 25, 1));
    assert_true(me_at(m, "::", 25, 1));
    assert_true(me_at(m, "::ffff:0.0.0.0", 9999, 0));
    /* a site on another port of this host is not us: tests and local
     * MTAs live there */
    assert_false(me_at(m, "127.0.0.2", 25, 1));
    assert_false(me_at(m, "192.0.2.1", 2525, 1));
    me_free(m);
}

/* A specific listen address: it, and loopback, on its port (also written
 * as ::ffff:127.0.0.1). */
static void test_me_listen_specific(void **state)
{
    struct mecfg c;
    struct me *m = me_new();

    (void)state;
    mecfg_init(&c, "192.0.2.1", 25, NULL);
    assert_int_equal(me_set(m, &c.cfg, NULL, 0), 0);
    assert_true(me_at(m, "192.0.2.1", 25, 1));
    assert_true(me_at(m, "::ffff:192.0.2.1", 25, 1));
    assert_true(me_at(m, "127.0.0.1", 25, 1));
    assert_true(me_at(m, "::ffff:127.0.0.1", 25, 1));
    assert_true(me_at(m, "::1", 25, 1));
    assert_false(me_at(m, "192.0.2.1", 26, 1));
    assert_false(me_at(m, "192.0.2.2", 25, 1));
    me_free(m);
}

/* A wildcard listen: every interface address of this host on that port;
 * an address the host lost at the next refresh is no longer us, one it
 * gained is. */
static void test_me_listen_wildcard(void **state)
{
    struct mecfg c;
    struct me *m = me_new();
    struct sockaddr_storage ifs[2] = {sa("203.0.113.7", 0), sa("2001:db8::7", 0)};

    (void)state;
    mecfg_init(&c, "*", 25, NULL);
    assert_int_equal(me_set(m, &c.cfg, ifs, 2), 0);
    assert_int_equal(me_count(m), 2);
    assert_true(me_at(m, "203.0.113.7", 25, 1));
    assert_true(me_at(m, "::ffff:203.0.113.7", 25, 1));
    assert_true(me_at(m, "2001:db8::7", 25, 1));
    assert_true(me_at(m, "127.0.0.53", 25, 1));
    assert_false(me_at(m, "203.0.113.8", 25, 1));
    assert_false(me_at(m, "203.0.113.7", 587, 1));
    ifs[0] = sa("203.0.113.8", 0);
    assert_int_equal(me_set(m, &c.cfg, ifs, 1), 0);
    assert_false(me_at(m, "203.0.113.7", 25, 1));
    assert_true(me_at(m, "203.0.113.8", 25, 1));
    me_free(m);
}

/* my_addresses (this relay as others see it): any port for an MX host,
 * delivery_port for a route; the host name compares without case. */
static void test_me_my_addresses_and_name(void **state)
{
    struct mecfg c;
    struct me *m = me_new();

    (void)state;
    mecfg_init(&c, "127.0.0.1", 2525, "198.51.100.25");
    assert_int_equal(me_set(m, &c.cfg, NULL, 0), 0);
    assert_true(me_at(m, "198.51.100.25", 2600, 1));
    assert_true(me_at(m, "::ffff:198.51.100.25", 2600, 1));
    assert_false(me_at(m, "198.51.100.25", 2600, 0));
    assert_true(me_at(m, "198.51.100.25", 25, 0));
    assert_true(me_is_name(m, "RELAY.test."));
    assert_false(me_is_name(m, "relay.test.example"));
    assert_false(me_is_name(m, ""));
    me_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_order),
        cmocka_unit_test(test_plan_prune_self),
        cmocka_unit_test(test_plan_none),
        cmocka_unit_test(test_order_shuffle),
        cmocka_unit_test(test_order_cap),
        cmocka_unit_test(test_me_unspecified),
        cmocka_unit_test(test_me_listen_specific),
        cmocka_unit_test(test_me_listen_wildcard),
        cmocka_unit_test(test_me_my_addresses_and_name),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
