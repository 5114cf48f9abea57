/*
 * test_resolver: relayd/resolver.c and lib/dns.c against a real resolver.
 * Starts dnsmasq (/usr/sbin/dnsmasq) on 127.0.0.1 and a free port with the
 * records below, builds configs with config_load, and runs every lookup on
 * a real uv loop, which must close cleanly. dnsmasq is killed by its PID.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

/* By path: a bare "config.h" would find autoconf's config.h (-I. comes first). */
#include "../../relayd/config.h"
#include "../../relayd/me.h"
#include "../../relayd/resolver.h"

#define DNSMASQ       "/usr/sbin/dnsmasq"
#define DELIVERY_PORT 2526
#define RUN_LIMIT_MS  15000 /* no lookup in these tests may take longer */

/* The zone every test but the cache test asks. TTLs are dnsmasq's default
 * for local data: 0, so nothing from here is cached. */
static const char zone[] = "local=/test/\n"
                           /* ordering: written out of order on purpose */
                           "mx-host=order.test,mx20.order.test,20\n"
                           "mx-host=order.test,mx10.order.test,10\n"
                           "mx-host=order.test,mx30.order.test,30\n"
                           "host-record=mx10.order.test,127.0.0.10\n"
                           "host-record=mx20.order.test,127.0.0.20\n"
                           "host-record=mx30.order.test,127.0.0.30\n"
                           /* equal preferences */
                           "mx-host=equal.test,a.equal.test,10\n"
                           "mx-host=equal.test,b.equal.test,10\n"
                           "host-record=a.equal.test,127.0.1.1\n"
                           "host-record=b.equal.test,127.0.1.2\n"
                           /* no MX: the domain's own address (implicit MX) */
                           "host-record=implicit.test,127.0.2.1\n"
                           /* RFC 7505 null MX: 0 . */
                           "mx-host=nullmx.test,.,0\n"
                           /* we (relay.test) are the pref-10 MX */
                           "mx-host=self.test,low.self.test,5\n"
                           "mx-host=self.test,relay.test,10\n"
                           "mx-host=self.test,high.self.test,20\n"
                           "host-record=low.self.test,127.0.3.5\n"
                           "host-record=high.self.test,127.0.3.20\n"
                           "host-record=relay.test,127.0.3.10\n"
                           /* we are the best MX */
                           "mx-host=best.test,relay.test,10\n"
                           "mx-host=best.test,backup.best.test,20\n"
                           "host-record=backup.best.test,127.0.4.20\n"
                           /* an MX host that is us by address (my_addresses = 192.0.2.25) */
                           "mx-host=byaddr.test,primary.byaddr.test,5\n"
                           "mx-host=byaddr.test,alias.byaddr.test,10\n"
                           "mx-host=byaddr.test,other.byaddr.test,30\n"
                           "host-record=primary.byaddr.test,127.0.5.5\n"
                           "host-record=alias.byaddr.test,192.0.2.25\n"
                           "host-record=other.byaddr.test,127.0.5.30\n"
                           /* the only MX is us by address */
                           "mx-host=onlyme.test,nat.onlyme.test,10\n"
                           "host-record=nat.onlyme.test,192.0.2.25\n"
                           /* an MX host on our listen address */
                           "mx-host=listen.test,me.listen.test,10\n"
                           "mx-host=listen.test,far.listen.test,20\n"
                           "host-record=me.listen.test,127.0.0.1\n"
                           "host-record=far.listen.test,127.0.9.20\n"
                           /* route = host by name, with IPv6 and IPv4 */
                           "host-record=site.route.test,127.0.6.1,::1\n"
                           /* one MX host does not exist, the other does */
                           "mx-host=partial.test,missing.partial.test,5\n"
                           "mx-host=partial.test,ok.partial.test,10\n"
                           "host-record=ok.partial.test,127.0.7.10\n"
                           /* the domain is a CNAME; its target has the MX (RFC 5321 §5.1) */
                           "mx-host=real.cname.test,mx.real.cname.test,10\n"
                           "host-record=mx.real.cname.test,127.0.10.1\n"
                           "host-record=real.cname.test,127.0.10.2\n"
                           "cname=alias.cname.test,real.cname.test\n"
                           /* no MX host exists */
                           "mx-host=nohost.test,missing1.nohost.test,10\n"
                           "mx-host=nohost.test,missing2.nohost.test,20\n";

/* For the cache test: its own server, stopped in the middle. */
static const char cache_zone[] = "local=/test/\n"
                                 "local-ttl=60\n"
                                 "mx-host=cache.test,mx.cache.test,10\n"
                                 "host-record=mx.cache.test,127.0.8.1\n"
                                 "host-record=nocache.cache.test,127.0.8.2,0\n";

struct dnsmasq {
    pid_t pid;
    int port;
    char servers[64]; /* "127.0.0.1:PORT" */
};

static char tmpdir[64];
static struct dnsmasq main_dns = {-1, 0, ""};

/* ---- dnsmasq --------------------------------------------------------------------------- */

/* A port nobody uses on 127.0.0.1 right now, for UDP and TCP. */
static int free_port(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM, 0), port;

    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

/* Does something answer DNS on 127.0.0.1:port within 100 ms? */
static int dns_answers(int port)
{
    static const unsigned char q[] = {0x12, 0x34, 0x01, 0x00, 0,   1,   0,   0,   0, 0,
                                      0,    0,    5,    'p',  'r', 'o', 'b', 'e', 4, 't',
                                      'e',  's',  't',  0,    0,   1,   0,   1};
    struct sockaddr_in sin;
    unsigned char buf[512];
    struct pollfd pfd;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), ok = 0;

    if (fd < 0)
        return 0;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sin, sizeof(sin)) == (ssize_t)sizeof(q)) {
        pfd.fd = fd;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) >= 12)
            ok = buf[0] == 0x12 && buf[1] == 0x34;
    }
    close(fd);
    return ok;
}

/* Start dnsmasq serving text (a conf file) and wait until it answers. A few
 * tries with fresh ports, in case another process takes ours first. */
static int dnsmasq_start(struct dnsmasq *dm, const char *name, const char *text)
{
    char conf[128], log[128], portarg[32], confarg[160];
    FILE *fp;

    snprintf(conf, sizeof(conf), "%s/%s.conf", tmpdir, name);
    snprintf(log, sizeof(log), "%s/%s.log", tmpdir, name);
    fp = fopen(conf, "w");
    if (fp == NULL || fputs(text, fp) < 0 || fclose(fp) != 0)
        return -1;
    for (int attempt = 0; attempt < 5; attempt++) {
        pid_t pid;
        int status;
        dm->port = free_port();
        snprintf(portarg, sizeof(portarg), "--port=%d", dm->port);
        snprintf(confarg, sizeof(confarg), "--conf-file=%s", conf);
        pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execl(DNSMASQ, DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--no-poll",
                  "--bind-interfaces", "--listen-address=127.0.0.1", "--interface=lo",
                  "--cache-size=0", portarg, confarg, (char *)NULL);
            _exit(127);
        }
        dm->pid = pid;
        for (int i = 0; i < 100; i++) { /* up to about 10 s */
            if (waitpid(pid, &status, WNOHANG) == pid) {
                dm->pid = -1;
                break;
            }
            if (dns_answers(dm->port)) {
                snprintf(dm->servers, sizeof(dm->servers), "127.0.0.1:%d", dm->port);
                return 0;
            }
            usleep(20000);
        }
        if (dm->pid > 0) {
            kill(dm->pid, SIGKILL);
            waitpid(dm->pid, &status, 0);
            dm->pid = -1;
        }
    }
    return -1;
}

static void dnsmasq_stop(struct dnsmasq *dm)
{
    int status;

    if (dm->pid <= 0)
        return;
    kill(dm->pid, SIGTERM);
    waitpid(dm->pid, &status, 0);
    dm->pid = -1;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_resolver.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    if (access(DNSMASQ, X_OK) != 0) {
        fprintf(stderr, "test_resolver: %s is needed (Debian package dnsmasq-base)\n", DNSMASQ);
        return -1;
    }
    return dnsmasq_start(&main_dns, "main", zone);
}

static int group_teardown(void **state)
{
    char cmd[128];

    (void)state;
    dnsmasq_stop(&main_dns);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- a loop, a config, a resolver ------------------------------------------------------ */

struct fixture {
    uv_loop_t loop;
    struct config *cfg;
    struct me *me; /* from cfg, without interface addresses: the same on every machine */
    struct resolver *r;
};

struct result {
    int done; /* how many times the callback ran */
    int status;
    struct resolver_target t[32];
    size_t n;
    char why[512];
    char enh[12];
    int code;
    struct fixture *close_in_cb; /* resolver_close from inside the callback */
};

static void on_result(void *arg, int status, const struct resolver_target *t, size_t n,
                      const struct resolver_error *err)
{
    struct result *res = arg;

    res->done++;
    res->status = status;
    res->n = n < 32 ? n : 32;
    if (res->n > 0)
        memcpy(res->t, t, res->n * sizeof(*t));
    snprintf(res->why, sizeof(res->why), "%s", err ? err->why : "");
    snprintf(res->enh, sizeof(res->enh), "%s", err ? err->enh : "");
    res->code = err ? err->code : 0;
    if (status == RESOLVER_OK) {
        assert_non_null(t);
        assert_null(err);
    } else {
        assert_int_equal(n, 0);
        assert_non_null(err);
        /* RFC 3463: a temporary failure is 4.x.x with a 4yz reply, a
         * permanent one 5.x.x with 5yz */
        assert_int_equal(err->enh[0], status == RESOLVER_TEMPFAIL ? '4' : '5');
        assert_int_equal(err->code / 100, status == RESOLVER_TEMPFAIL ? 4 : 5);
    }
    if (res->close_in_cb != NULL) {
        resolver_close(res->close_in_cb->r);
        res->close_in_cb->r = NULL;
    }
}

/* Config text + "hostname = relay.test" etc. into fx, and a resolver
 * pointed at servers. */
static void fx_open(struct fixture *fx, const char *servers, const char *extra)
{
    char path[128], err[512] = "", text[2048];
    FILE *fp;

    memset(fx, 0, sizeof(*fx));
    snprintf(path, sizeof(path), "%s/relayd.conf", tmpdir);
    snprintf(text, sizeof(text),
             "hostname = relay.test\nlisten = 127.0.0.1:2525\ndelivery_port = %d\n"
             "dns_servers = %s\n%s",
             DELIVERY_PORT, servers, extra ? extra : "");
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    if (config_load(path, &fx->cfg, err, sizeof(err)) != 0)
        fail_msg("config_load: %s", err);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->me = me_new();
    assert_non_null(fx->me);
    assert_int_equal(me_set(fx->me, fx->cfg, NULL, 0), 0);
    if (resolver_open(&fx->loop, fx->cfg->dns_servers, fx->me, &fx->r, err, sizeof(err)) != 0)
        fail_msg("resolver_open: %s", err);
}

/* A test changed fx->cfg by hand: who we are follows, with a new resolver. */
static void fx_reset_me(struct fixture *fx)
{
    char err[512] = "";

    resolver_close(fx->r);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    me_free(fx->me);
    fx->me = me_new();
    assert_non_null(fx->me);
    assert_int_equal(me_set(fx->me, fx->cfg, NULL, 0), 0);
    if (resolver_open(&fx->loop, fx->cfg->dns_servers, fx->me, &fx->r, err, sizeof(err)) != 0)
        fail_msg("resolver_open: %s", err);
}

static void fx_close(struct fixture *fx)
{
    if (fx->r != NULL)
        resolver_close(fx->r);
    fx->r = NULL;
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    me_free(fx->me);
    config_unref(fx->cfg);
}

static void on_guard(uv_timer_t *t)
{
    *(int *)t->data = 1;
    uv_stop(t->loop);
}

/* Run the loop until every result is in, or fail after RUN_LIMIT_MS. */
static void run_until(struct fixture *fx, struct result **res, size_t nres)
{
    uv_timer_t guard;
    int expired = 0, all;

    uv_timer_init(&fx->loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_guard, RUN_LIMIT_MS, 0);
    uv_unref((uv_handle_t *)&guard);
    for (;;) {
        all = 1;
        for (size_t i = 0; i < nres; i++)
            all = all && res[i]->done > 0;
        if (all || expired)
            break;
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    if (!all)
        fail_msg("lookup not answered within %d ms", RUN_LIMIT_MS);
    for (size_t i = 0; i < nres; i++)
        assert_int_equal(res[i]->done, 1);
}

/* One lookup of domain under the domain's settings from fx->cfg. */
static void lookup(struct fixture *fx, const char *domain, struct result *res)
{
    struct result *one[1] = {res};

    memset(res, 0, sizeof(*res));
    resolver_lookup(fx->r, fx->cfg, config_delivery_domain(fx->cfg, domain), domain, on_result,
                    res);
    run_until(fx, one, 1);
}

/* "127.0.0.10:2526" or "[::1]:2526" */
static const char *target_text(const struct resolver_target *t, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN] = "?";

    if (t->addr.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&t->addr;
        inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
        snprintf(buf, len, "%s:%u", a, ntohs(sin->sin_port));
    } else if (t->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&t->addr;
        inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
        snprintf(buf, len, "[%s]:%u", a, ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, len, "family %d", t->addr.ss_family);
    }
    return buf;
}

/* The targets as "host=addr:port pref|..." for one comparison. */
static const char *targets_text(const struct result *res, char *buf, size_t len)
{
    size_t used = 0;
    char a[80];

    buf[0] = '\0';
    for (size_t i = 0; i < res->n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s=%s %u", i ? "|" : "", res->t[i].host,
                                 target_text(&res->t[i], a, sizeof(a)), res->t[i].pref);
    return buf;
}

static void expect_targets(const struct result *res, const char *want)
{
    char buf[2048];

    if (res->status != RESOLVER_OK)
        fail_msg("status %d (%s), want targets %s", res->status, res->why, want);
    assert_string_equal(targets_text(res, buf, sizeof(buf)), want);
}

static void expect_fail(const struct result *res, int status, const char *why)
{
    if (res->status != status || strstr(res->why, why) == NULL)
        fail_msg("got status %d (%s), want %d (%s)", res->status, res->why, status, why);
}

/* The same, and the enhanced status code (RFC 3463) it is reported with. */
static void expect_fail_enh(const struct result *res, int status, const char *enh, const char *why)
{
    expect_fail(res, status, why);
    if (strcmp(res->enh, enh) != 0)
        fail_msg("got %s (%s), want %s", res->enh, res->why, enh);
}

/* ---- MX ---------------------------------------------------------------------------------- */

static void test_mx_order(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "order.test", &res);
    expect_targets(&res, "mx10.order.test=127.0.0.10:2526 10|mx20.order.test=127.0.0.20:2526 20|"
                         "mx30.order.test=127.0.0.30:2526 30");
    /* case and a trailing dot make no difference */
    lookup(&fx, "Order.TEST.", &res);
    assert_int_equal(res.status, RESOLVER_OK);
    assert_int_equal(res.n, 3);
    fx_close(&fx);
}

/* Equal preferences: both hosts every time, in both orders over many tries
 * (RFC 5321 §5.1: randomise among equals). 1 in 2^39 to fail by chance. */
static void test_mx_equal_shuffled(void **state)
{
    struct fixture fx;
    struct result res;
    int a_first = 0, b_first = 0;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    for (int i = 0; i < 40; i++) {
        lookup(&fx, "equal.test", &res);
        assert_int_equal(res.status, RESOLVER_OK);
        assert_int_equal(res.n, 2);
        assert_int_equal(res.t[0].pref, 10);
        assert_int_equal(res.t[1].pref, 10);
        if (strcmp(res.t[0].host, "a.equal.test") == 0) {
            assert_string_equal(res.t[1].host, "b.equal.test");
            a_first++;
        } else {
            assert_string_equal(res.t[0].host, "b.equal.test");
            assert_string_equal(res.t[1].host, "a.equal.test");
            b_first++;
        }
    }
    assert_true(a_first > 0);
    assert_true(b_first > 0);
    fx_close(&fx);
}

/* RFC 5321 §5.1: no MX records: the domain itself, preference 0. */
static void test_implicit_mx(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "implicit.test", &res);
    expect_targets(&res, "implicit.test=127.0.2.1:2526 0");
    fx_close(&fx);
}

static void test_null_mx(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "nullmx.test", &res);
    /* RFC 7505 §4.2 */
    expect_fail_enh(&res, RESOLVER_PERMFAIL, "5.1.10", "does not accept mail (null MX)");
    assert_int_equal(res.code, 556);
    fx_close(&fx);
}

static void test_nxdomain(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "no-such-domain.test", &res);
    /* the domain's own NXDOMAIN: the one DNS answer that bounces */
    expect_fail_enh(&res, RESOLVER_PERMFAIL, "5.4.4", "Host or domain name not found");
    /* every MX host missing: the domain has MX records, so no implicit MX
     * and no bounce (a DNS slip must not return a site's mail): deferred,
     * naming the query that failed */
    lookup(&fx, "nohost.test", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.3", "for missing1.nohost.test failed: NXDOMAIN");
    /* one MX host missing: the other one is used */
    lookup(&fx, "partial.test", &res);
    expect_targets(&res, "ok.partial.test=127.0.7.10:2526 10");
    /* a domain the server will not answer for (REFUSED): try later */
    lookup(&fx, "outside.example", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.3",
                    "DNS lookup of MX for outside.example failed: REFUSED");
    fx_close(&fx);
}

/* RFC 5321 §5.1: "If a CNAME record is found instead, the resulting name
 * is processed as if it were the initial name": the MX of the CNAME's
 * target, never the target's address as an implicit MX. */
static void test_mx_via_cname(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "alias.cname.test", &res);
    expect_targets(&res, "mx.real.cname.test=127.0.10.1:2526 10");
    fx_close(&fx);
}

/* ---- self-pruning ------------------------------------------------------------------------ */

static void test_self_by_name(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    /* relay.test at 10, others at 5 and 20: only the pref-5 host is left */
    lookup(&fx, "self.test", &res);
    expect_targets(&res, "low.self.test=127.0.3.5:2526 5");
    fx_close(&fx);
    /* the host name compares without case */
    fx_open(&fx, main_dns.servers, NULL);
    free(fx.cfg->hostname);
    fx.cfg->hostname = strdup("RELAY.Test");
    assert_non_null(fx.cfg->hostname);
    fx_reset_me(&fx);
    lookup(&fx, "self.test", &res);
    expect_targets(&res, "low.self.test=127.0.3.5:2526 5");
    fx_close(&fx);
}

static void test_self_best_mx_loops(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "best.test", &res);
    /* deferred, never bounced, never delivered */
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.6", "mail for best.test loops back to myself");
    /* another host name: we are not in the list, everything is used */
    fx_close(&fx);
    fx_open(&fx, main_dns.servers, NULL);
    free(fx.cfg->hostname);
    fx.cfg->hostname = strdup("other-relay.test");
    assert_non_null(fx.cfg->hostname);
    fx_reset_me(&fx);
    lookup(&fx, "best.test", &res);
    expect_targets(&res, "relay.test=127.0.3.10:2526 10|backup.best.test=127.0.4.20:2526 20");
    fx_close(&fx);
}

static void test_self_by_address(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    /* without my_addresses the alias is just another MX host */
    fx_open(&fx, main_dns.servers, NULL);
    lookup(&fx, "byaddr.test", &res);
    expect_targets(&res, "primary.byaddr.test=127.0.5.5:2526 5|"
                         "alias.byaddr.test=192.0.2.25:2526 10|"
                         "other.byaddr.test=127.0.5.30:2526 30");
    fx_close(&fx);
    /* with it, the alias is us: it and everything worse goes */
    fx_open(&fx, main_dns.servers, "my_addresses = 2001:db8::25, 192.0.2.25\n");
    lookup(&fx, "byaddr.test", &res);
    expect_targets(&res, "primary.byaddr.test=127.0.5.5:2526 5");
    lookup(&fx, "onlyme.test", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.6", "mail for onlyme.test loops back to myself");
    fx_close(&fx);
}

/* Our listen address counts with its port: 127.0.0.1:2526 is us when we
 * listen there, not when we listen on 127.0.0.1:2525 only. */
static void test_self_by_listen(void **state)
{
    struct fixture fx;
    struct result res;
    char extra[64];

    (void)state;
    fx_open(&fx, main_dns.servers, NULL); /* listen = 127.0.0.1:2525 */
    lookup(&fx, "listen.test", &res);
    expect_targets(&res, "me.listen.test=127.0.0.1:2526 10|far.listen.test=127.0.9.20:2526 20");
    fx_close(&fx);
    fx_open(&fx, main_dns.servers, NULL);
    snprintf(extra, sizeof(extra), "127.0.0.1:%d", DELIVERY_PORT);
    strcpy(fx.cfg->listen[0].text, extra);
    ((struct sockaddr_in *)&fx.cfg->listen[0].addr)->sin_port = htons(DELIVERY_PORT);
    fx_reset_me(&fx);
    lookup(&fx, "listen.test", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.6", "loops back to myself");
    fx_close(&fx);
}

/* ---- routes ------------------------------------------------------------------------------ */

static void test_route_literal(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers,
            "[domain lit.test]\nroute = 192.0.2.7:2600\n"
            "[domain lit6.test]\nroute = [2001:db8::7]\n");
    /* an IP literal answers before resolver_lookup returns */
    memset(&res, 0, sizeof(res));
    resolver_lookup(fx.r, fx.cfg, config_find_domain(fx.cfg, "lit.test"), "lit.test", on_result,
                    &res);
    assert_int_equal(res.done, 1);
    expect_targets(&res, "192.0.2.7=192.0.2.7:2600 0");
    memset(&res, 0, sizeof(res));
    resolver_lookup(fx.r, fx.cfg, config_find_domain(fx.cfg, "lit6.test"), "lit6.test", on_result,
                    &res);
    assert_int_equal(res.done, 1);
    expect_targets(&res, "2001:db8::7=[2001:db8::7]:2526 0"); /* no port: delivery_port */
    fx_close(&fx);
}

static void test_route_name(void **state)
{
    struct fixture fx;
    struct result res;

    (void)state;
    fx_open(&fx, main_dns.servers,
            "[domain r.test]\nroute = site.route.test:2601\n"
            "[domain sub.r.test]\nroute = site.route.test\n"
            "[domain gone.test]\nroute = missing.route.test:25\n"
            "[domain me.test]\nroute = 127.0.0.1:2525\n"
            "[domain notme.test]\nroute = 127.0.0.1:2527\n");
    /* no MX lookup (r.test has none); IPv6 first, then IPv4 */
    lookup(&fx, "r.test", &res);
    expect_targets(&res, "site.route.test=[::1]:2601 0|site.route.test=127.0.6.1:2601 0");
    lookup(&fx, "sub.r.test", &res);
    expect_targets(&res, "site.route.test=[::1]:2526 0|site.route.test=127.0.6.1:2526 0");
    /* a route host that does not exist is the operator's to fix, not the
     * sender's problem: deferred */
    lookup(&fx, "gone.test", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.3", "for missing.route.test failed: NXDOMAIN");
    /* a route to our own listen address is a loop (deferred, as every
     * loop), another port is not */
    lookup(&fx, "me.test", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.6", "mail for me.test loops back to myself");
    lookup(&fx, "notme.test", &res);
    expect_targets(&res, "127.0.0.1=127.0.0.1:2527 0");
    fx_close(&fx);
}

/* ---- cache ------------------------------------------------------------------------------- */

static void test_cache(void **state)
{
    struct dnsmasq dm = {-1, 0, ""};
    struct fixture fx;
    struct result res;
    const char *want = "mx.cache.test=127.0.8.1:2526 10";

    (void)state;
    assert_int_equal(dnsmasq_start(&dm, "cache", cache_zone), 0);
    fx_open(&fx, dm.servers, "[domain nocache.test]\nroute = nocache.cache.test:2602\n");
    lookup(&fx, "cache.test", &res);
    expect_targets(&res, want);
    lookup(&fx, "nocache.test", &res); /* the address has TTL 0 */
    expect_targets(&res, "nocache.cache.test=127.0.8.2:2602 0");
    dnsmasq_stop(&dm);
    /* the server is gone: the cached answer still comes, at once */
    memset(&res, 0, sizeof(res));
    resolver_lookup(fx.r, fx.cfg, config_delivery_domain(fx.cfg, "cache.test"), "CACHE.test.",
                    on_result, &res);
    assert_int_equal(res.done, 1);
    expect_targets(&res, want);
    /* TTL 0 was not kept */
    lookup(&fx, "nocache.test", &res);
    expect_fail(&res, RESOLVER_TEMPFAIL, "for nocache.cache.test failed:");
    /* a different route for the same domain is a different answer */
    {
        struct cfg_domain d = *config_delivery_domain(fx.cfg, "cache.test");
        d.route_port = 2999;
        memset(&res, 0, sizeof(res));
        resolver_lookup(fx.r, fx.cfg, &d, "cache.test", on_result, &res);
        struct result *one[1] = {&res};
        run_until(&fx, one, 1);
        expect_fail(&res, RESOLVER_TEMPFAIL, "DNS lookup of MX for cache.test failed:");
    }
    /* a reload forgets everything */
    resolver_flush_cache(fx.r);
    lookup(&fx, "cache.test", &res);
    expect_fail(&res, RESOLVER_TEMPFAIL, "DNS lookup of MX for cache.test failed:");
    fx_close(&fx);
}

/* ---- failures ---------------------------------------------------------------------------- */

/* Nothing listens on the port: the ICMP error ends it quickly. */
static void test_server_refused(void **state)
{
    struct fixture fx;
    struct result res;
    char servers[64];
    uint64_t t0;

    (void)state;
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", free_port());
    fx_open(&fx, servers, NULL);
    t0 = uv_hrtime();
    lookup(&fx, "order.test", &res);
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.3",
                    "DNS lookup of MX for order.test failed: connection refused");
    assert_true(uv_hrtime() - t0 < 8000000000ull);
    fx_close(&fx);
}

/* A server that never answers: c-ares' timeouts end it, in bounded time. */
static void test_server_silent(void **state)
{
    struct fixture fx;
    struct result res;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    char servers[64];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    uint64_t t0, ms;

    (void)state;
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", ntohs(sin.sin_port));
    fx_open(&fx, servers, NULL);
    t0 = uv_hrtime();
    lookup(&fx, "order.test", &res);
    ms = (uv_hrtime() - t0) / 1000000;
    expect_fail_enh(&res, RESOLVER_TEMPFAIL, "4.4.3",
                    "DNS lookup of MX for order.test failed: timed out");
    assert_true(ms >= 500);  /* it did wait for an answer */
    assert_true(ms < 10000); /* but not for ever */
    fx_close(&fx);
    close(fd);
}

/* Several servers in c-ares' CSV form, IPv6 first: the first refuses (or
 * cannot be reached at all), the second answers. A list c-ares cannot read
 * fails resolver_open with a message, and nothing is left to close. */
static void test_servers_list(void **state)
{
    struct fixture fx;
    struct result res;
    struct resolver *r = NULL;
    uv_loop_t loop;
    char servers[96], err[256] = "";

    (void)state;
    snprintf(servers, sizeof(servers), "[::1]:%d, 127.0.0.1:%d", free_port(), main_dns.port);
    fx_open(&fx, servers, NULL);
    assert_non_null(strstr(fx.cfg->dns_servers, "[::1]:"));
    lookup(&fx, "implicit.test", &res);
    expect_targets(&res, "implicit.test=127.0.2.1:2526 0");
    fx_close(&fx);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(resolver_open(&loop, "dns.example", NULL, &r, err, sizeof(err)), -1);
    assert_null(r);
    assert_non_null(strstr(err, "dns.example"));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* resolver_close answers what is pending with TEMPFAIL, once, and the loop
 * still closes cleanly; also when called from inside a callback. */
static void test_close_pending(void **state)
{
    struct fixture fx;
    struct result a, b;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    char servers[64];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    (void)state;
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", ntohs(sin.sin_port));
    fx_open(&fx, servers, "[domain r.test]\nroute = site.route.test\n");
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    resolver_lookup(fx.r, fx.cfg, NULL, "order.test", on_result, &a);
    resolver_lookup(fx.r, fx.cfg, NULL, "r.test", on_result, &b);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    assert_int_equal(a.done, 0);
    assert_int_equal(b.done, 0);
    resolver_close(fx.r);
    fx.r = NULL;
    assert_int_equal(a.done, 1);
    assert_int_equal(b.done, 1);
    assert_int_equal(a.status, RESOLVER_TEMPFAIL);
    assert_int_equal(b.status, RESOLVER_TEMPFAIL);
    fx_close(&fx);
    assert_int_equal(a.done, 1);
    assert_int_equal(b.done, 1);
    close(fd);

    /* from inside the first answer, with another lookup still going */
    fx_open(&fx, main_dns.servers, NULL);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    a.close_in_cb = &fx;
    resolver_lookup(fx.r, fx.cfg, NULL, "implicit.test", on_result, &a);
    resolver_lookup(fx.r, fx.cfg, NULL, "order.test", on_result, &b);
    {
        struct result *both[2] = {&a, &b};
        run_until(&fx, both, 2);
    }
    assert_null(fx.r);
    /* after close: nothing more is asked */
    fx_close(&fx);
    assert_int_equal(a.done, 1);
    assert_int_equal(b.done, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_order),        cmocka_unit_test(test_mx_equal_shuffled),
        cmocka_unit_test(test_implicit_mx),     cmocka_unit_test(test_mx_via_cname),
        cmocka_unit_test(test_null_mx),         cmocka_unit_test(test_nxdomain),
        cmocka_unit_test(test_self_by_name),    cmocka_unit_test(test_self_best_mx_loops),
        cmocka_unit_test(test_self_by_address), cmocka_unit_test(test_self_by_listen),
        cmocka_unit_test(test_route_literal),   cmocka_unit_test(test_route_name),
        cmocka_unit_test(test_cache),           cmocka_unit_test(test_server_refused),
        cmocka_unit_test(test_server_silent),   cmocka_unit_test(test_servers_list),
        cmocka_unit_test(test_close_pending),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
