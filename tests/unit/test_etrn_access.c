/*
 * test_etrn_access: which relay domains an ETRN client may flush
 * (relayd/etrn_access.c) over a configuration loaded from a temporary file.
 * The property: one rule for every form of ETRN - a queued domain may be
 * flushed when the relay domain it belongs to admits the client - and the
 * check before counting says yes exactly when some domain the argument
 * covers is the client's.
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
#include <unistd.h>

/* By path: a bare "config.h" would find autoconf's config.h. */
#include "../../relayd/config.h"
#include "../../relayd/etrn_access.h"

/*
 * top.test and its subdomains are open to anyone, except in.top.test (and
 * what is below it: its own subdomains = yes), which only 192.0.2.7 may
 * flush; locked.test is 192.0.2.0/24's; plain.test is not below anything.
 */
static const char conf_text[] = "listen = 127.0.0.1:2525\n"
                                "database = /tmp/test_etrn_access.db\n"
                                "[domain top.test]\nsubdomains = yes\n"
                                "[domain in.top.test]\nsubdomains = yes\netrn_access = 192.0.2.7\n"
                                "[domain locked.test]\netrn_access = 192.0.2.0/24\n"
                                "[domain plain.test]\n"
                                "[queue mixed]\ndomains = top.test, locked.test\n"
                                "[queue lockedonly]\ndomains = locked.test, in.top.test\n";

static struct config *cfg;
static struct sockaddr_in stranger, insider, locker;

static void addr4(struct sockaddr_in *sin, const char *ip)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static int setup(void **state)
{
    char path[] = "/tmp/test_etrn_access.XXXXXX", err[512] = "";
    int fd = mkstemp(path);
    FILE *fp;

    (void)state;
    if (fd < 0 || (fp = fdopen(fd, "w")) == NULL)
        return -1;
    fputs(conf_text, fp);
    fclose(fp);
    if (config_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "config_load: %s\n", err);
        unlink(path);
        return -1;
    }
    unlink(path);
    addr4(&stranger, "203.0.113.9");
    addr4(&insider, "192.0.2.7");
    addr4(&locker, "192.0.2.99");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    config_unref(cfg);
    return 0;
}

#define SA(x) (&(const struct etrn_client){(const struct sockaddr *)&(x), NULL})
/* the same client, authenticated as account */
#define AS(x, account) (&(const struct etrn_client){(const struct sockaddr *)&(x), (account)})

/* A queued domain is judged by the relay domain it belongs to, so the same
 * domain gets the same answer whichever ETRN form reached it. */
static void test_domain_rule(void **state)
{
    (void)state;
    assert_true(etrn_access_domain(cfg, "top.test", SA(stranger)));
    assert_true(etrn_access_domain(cfg, "a.top.test", SA(stranger)));
    assert_false(etrn_access_domain(cfg, "in.top.test", SA(stranger)));
    assert_false(etrn_access_domain(cfg, "deep.in.top.test", SA(stranger)));
    assert_true(etrn_access_domain(cfg, "deep.in.top.test", SA(insider)));
    assert_false(etrn_access_domain(cfg, "locked.test", SA(stranger)));
    assert_true(etrn_access_domain(cfg, "locked.test", SA(locker)));
    assert_false(etrn_access_domain(cfg, "notours.test", SA(insider)));
    assert_false(etrn_access_domain(cfg, "sub.plain.test", SA(insider))); /* no subdomains */
    assert_false(etrn_access_may(cfg, NULL, "x.test", SA(insider)));
}

static void test_check_name(void **state)
{
    (void)state;
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_DOMAIN, "top.test", SA(stranger)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_DOMAIN, "in.top.test", SA(stranger)),
                     ETRN_ACCESS_DENIED);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_DOMAIN, "x.in.top.test", SA(stranger)),
                     ETRN_ACCESS_DENIED);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_DOMAIN, "x.in.top.test", SA(insider)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_DOMAIN, "notours.test", SA(insider)),
                     ETRN_ACCESS_NOT_OURS);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_DOMAIN, "test", SA(insider)),
                     ETRN_ACCESS_NOT_OURS);
}

/* "@dom": allowed when any part is the client's; the parts that are not
 * are left to etrn_access_domain. "@dom" must itself be ours. */
static void test_check_subdomains(void **state)
{
    (void)state;
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_SUBDOMAINS, "top.test", SA(stranger)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_SUBDOMAINS, "in.top.test", SA(stranger)),
                     ETRN_ACCESS_DENIED);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_SUBDOMAINS, "in.top.test", SA(insider)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_SUBDOMAINS, "test", SA(insider)),
                     ETRN_ACCESS_NOT_OURS);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_SUBDOMAINS, "locked.test", SA(stranger)),
                     ETRN_ACCESS_DENIED);
}

/* "#queue": members as their relay domain says, with the same rule. */
static void test_check_queue(void **state)
{
    (void)state;
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_QUEUE, "mixed", SA(stranger)),
                     ETRN_ACCESS_OK);
    /* in.top.test is below top.test, a subdomains = yes member of mixed, but
     * its own section decides for it: no different from ETRN in.top.test */
    assert_false(etrn_access_domain(cfg, "in.top.test", SA(stranger)));
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_QUEUE, "lockedonly", SA(stranger)),
                     ETRN_ACCESS_DENIED);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_QUEUE, "lockedonly", SA(insider)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_QUEUE, "lockedonly", SA(locker)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(cfg, SMTP_ETRN_QUEUE, "nosuch", SA(insider)),
                     ETRN_ACCESS_NO_QUEUE);
}

/* A configuration with accounts (credentials), from text; NULL on error. */
static struct config *load_with_accounts(const char *text)
{
    char dir[] = "/tmp/test_etrn_access.XXXXXX", conf[96], creds[96], err[512] = "";
    struct config *c = NULL;
    FILE *fp;

    if (mkdtemp(dir) == NULL)
        return NULL;
    snprintf(conf, sizeof(conf), "%s/relayd.conf", dir);
    snprintf(creds, sizeof(creds), "%s/credentials", dir);
    if ((fp = fopen(creds, "w")) != NULL) {
        fputs("site1:{plain}x:own.test\nsite2:{plain}y:other.test,mix.test\n", fp);
        fclose(fp);
    }
    if ((fp = fopen(conf, "w")) != NULL) {
        fprintf(fp,
                "listen = 127.0.0.1:2525\ndatabase = /tmp/test_etrn_access.db\n"
                "credentials = %s\n%s",
                creds, text);
        fclose(fp);
    }
    if (config_load(conf, &c, err, sizeof(err)) != 0)
        fprintf(stderr, "config_load: %s\n", err);
    unlink(conf);
    unlink(creds);
    rmdir(dir);
    return c;
}

/* etrn_access = auth per domain: the owning account (and its subdomains
 * where subdomains = yes), or a listed network; an unauthenticated client
 * is told to authenticate (530), another account is refused (459). */
static void test_auth_per_domain(void **state)
{
    struct config *c = load_with_accounts("[domain own.test]\nsubdomains = yes\n"
                                          "etrn_access = auth\n"
                                          "[domain other.test]\netrn_access = auth\n"
                                          "[domain mix.test]\netrn_access = auth, 192.0.2.0/24\n"
                                          "[domain open.test]\n");

    (void)state;
    assert_non_null(c);
    assert_true(c->domains[0].etrn_access_auth || c->domains[1].etrn_access_auth);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "own.test", AS(stranger, "site1")),
                     ETRN_ACCESS_OK);
    assert_true(etrn_access_domain(c, "a.b.own.test", AS(stranger, "site1")));
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "own.test", SA(stranger)),
                     ETRN_ACCESS_AUTH_REQUIRED);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "own.test", AS(stranger, "site2")),
                     ETRN_ACCESS_DENIED);
    assert_false(etrn_access_domain(c, "own.test", AS(stranger, "nobody")));
    /* auth and networks: either admits */
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "mix.test", SA(locker)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "mix.test", AS(stranger, "site2")),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "mix.test", SA(stranger)),
                     ETRN_ACCESS_AUTH_REQUIRED);
    /* no auth on the domain: as before, for anyone */
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "open.test", SA(stranger)),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "notours.test", SA(stranger)),
                     ETRN_ACCESS_NOT_OURS);
    config_unref(c);
}

/* etrn_access = auth globally: every domain's default, and an
 * unauthenticated client outside the global networks gets 530 whatever it
 * names, ours or not. */
static void test_auth_global(void **state)
{
    struct config *c = load_with_accounts("etrn_access = auth, 192.0.2.7\n"
                                          "[domain own.test]\n"
                                          "[domain other.test]\n"
                                          "[domain open.test]\netrn_access = any\n");

    (void)state;
    assert_non_null(c);
    assert_true(c->etrn_access_auth);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "notours.test", SA(stranger)),
                     ETRN_ACCESS_AUTH_REQUIRED);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "open.test", SA(stranger)),
                     ETRN_ACCESS_AUTH_REQUIRED);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_QUEUE, "nosuch", SA(stranger)),
                     ETRN_ACCESS_AUTH_REQUIRED);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "own.test", AS(stranger, "site1")),
                     ETRN_ACCESS_OK);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "other.test", AS(stranger, "site1")),
                     ETRN_ACCESS_DENIED);
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "notours.test", AS(stranger, "site1")),
                     ETRN_ACCESS_NOT_OURS);
    /* a globally listed network needs no account (domains inherit it) */
    assert_int_equal(etrn_access_check(c, SMTP_ETRN_DOMAIN, "own.test", SA(insider)),
                     ETRN_ACCESS_OK);
    config_unref(c);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(etrn_access_reason(ETRN_ACCESS_NOT_OURS), "not a relay domain");
    assert_string_equal(etrn_access_reason(ETRN_ACCESS_NO_QUEUE), "no such queue");
    assert_string_equal(etrn_access_reason(ETRN_ACCESS_DENIED), "not authorized for this client");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_rule),      cmocka_unit_test(test_check_name),
        cmocka_unit_test(test_check_subdomains), cmocka_unit_test(test_check_queue),
        cmocka_unit_test(test_auth_per_domain),  cmocka_unit_test(test_auth_global),
        cmocka_unit_test(test_reasons),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
