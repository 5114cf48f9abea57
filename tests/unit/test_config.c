/*
 * test_config: relayd.conf parsing (relayd/config.c) with the good and bad
 * files in tests/unit/configs (TEST_CONFIG_DIR) and small files written to
 * a temporary directory. Checks values, defaults, error locations, the
 * config_print round trip and that relayd.conf(5) documents every key.
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
#include <sys/stat.h>
#include <unistd.h>

/* By path: a bare "config.h" would find autoconf's config.h (-I. comes first). */
#include "../../relayd/config.h"
#include "../../relayd/credentials.h"

#ifndef TEST_CONFIG_DIR
#error "TEST_CONFIG_DIR must name tests/unit/configs"
#endif
#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR "/var"
#endif
#ifndef RUNSTATEDIR
#define RUNSTATEDIR "/run"
#endif

#define DIR_     TEST_CONFIG_DIR "/"
#define MAN_PAGE TEST_CONFIG_DIR "/../../../man/relayd.conf.5"

static struct config *load_ok(const char *path)
{
    struct config *cfg = NULL;
    char err[512] = "";

    if (config_load(path, &cfg, err, sizeof(err)) != 0)
        fail_msg("config_load(%s) failed: %s", path, err);
    assert_non_null(cfg);
    assert_int_equal(cfg->refs, 1);
    return cfg;
}

/* A temporary directory for configs written by the tests; removed at the end. */
static char tmpdir[64];

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write text to tmpdir/name and return the full path (static buffer). */
static const char *write_tmp(const char *name, const char *text)
{
    static char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
    assert_int_equal(fclose(fp), 0);
    return path;
}

/* Load text from a temporary file. Returns config_load's result. */
static int load_text(const char *text, struct config **cfg, char *err, size_t errlen)
{
    return config_load(write_tmp("t.conf", text), cfg, err, errlen);
}

static char *print_to_string(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);

    assert_non_null(fp);
    config_print(cfg, fp, 1);
    assert_int_equal(fclose(fp), 0);
    return buf;
}

/* ---- good files --------------------------------------------------------------------- */

static void test_full(void **state)
{
    struct config *cfg = load_ok(DIR_ "full.conf");
    const struct sockaddr_in *sin;
    const struct sockaddr_in6 *sin6;
    struct in6_addr loop6 = IN6ADDR_LOOPBACK_INIT;
    const struct cfg_domain *d;
    const struct cfg_queue *q;

    (void)state;
    assert_string_equal(cfg->path, DIR_ "full.conf");
    assert_string_equal(cfg->hostname, "mx1.relay.example.net");
    assert_int_equal(cfg->nlisten, 2);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:2525");
    sin = (const struct sockaddr_in *)&cfg->listen[0].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 2525);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_string_equal(cfg->listen[1].text, "[::1]:2525");
    sin6 = (const struct sockaddr_in6 *)&cfg->listen[1].addr;
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 2525);
    assert_memory_equal(&sin6->sin6_addr, &loop6, sizeof(loop6));
    /* relative to the file's directory; '#' not after white space is data */
    assert_string_equal(cfg->database, DIR_ "queue/relay#1.db");
    assert_int_equal(cfg->max_message_size, 25 * 1024 * 1024);
    assert_int_equal(cfg->max_connections, 300);
    assert_int_equal(cfg->max_connections_per_ip, 20);
    assert_int_equal(cfg->max_recipients, 500);
    assert_int_equal(cfg->max_errors, 5);
    assert_int_equal(cfg->command_timeout, 120000);
    assert_int_equal(cfg->data_timeout, 900000);
    assert_int_equal(cfg->shutdown_timeout, 45000);
    assert_int_equal(cfg->hopcount_limit, 50);
    assert_string_equal(cfg->tls_cert, DIR_ "tls/cert.pem");
    assert_string_equal(cfg->tls_key, DIR_ "tls/key.pem"); /* "./tls//key.pem" cleaned */
    assert_string_equal(cfg->user, "nobody");
    assert_int_equal(cfg->log_level, LOGL_DEBUG);
    /* delivery, resolver, ETRN */
    assert_string_equal(cfg->dns_servers, "127.0.0.1:5353,[::1]:53,[2001:db8::53]:53");
    assert_int_equal(cfg->nmy_addresses, 2);
    assert_int_equal(cfg->my_addresses[0].addr.ss_family, AF_INET);
    assert_int_equal(cfg->my_addresses[0].prefix, 32);
    assert_int_equal(cfg->my_addresses[1].addr.ss_family, AF_INET6);
    assert_int_equal(cfg->my_addresses[1].prefix, 128);
    assert_int_equal(cfg->delivery_port, 2526);
    assert_int_equal(cfg->max_site_connections, 4);
    assert_int_equal(cfg->min_backoff, 30000);
    assert_int_equal(cfg->max_backoff, 2 * 3600000);
    assert_int_equal(cfg->queue_lifetime, 7ull * 86400000);
    assert_int_equal(cfg->delay_warning, 4 * 3600000);
    assert_int_equal(cfg->connect_timeout, 10000);
    assert_int_equal(cfg->delivery_timeout, 120000);
    assert_int_equal(cfg->delivery_data_timeout, 900000);
    assert_int_equal(cfg->etrn_rate, 10);
    assert_int_equal(cfg->etrn_rate_period, 30000);
    assert_string_equal(cfg->tls_ca_file, DIR_ "tls/cert.pem");

    /* sorted by name */
    assert_int_equal(cfg->ndomains, 2);
    d = &cfg->domains[0];
    assert_string_equal(d->name, "example.net");
    assert_int_equal(d->mode, CFG_MODE_HOLD);
    assert_string_equal(d->route, "[2001:db8::25]");
    assert_int_equal(d->route_mx, 0);
    assert_string_equal(d->route_host, "2001:db8::25");
    assert_int_equal(d->route_port, 2526); /* no port: delivery_port */
    assert_int_equal(d->subdomains, 0);
    assert_string_equal(d->file, DIR_ "full.conf");
    assert_int_equal(d->line, 45);
    /* not set in the section: the global values */
    assert_int_equal(d->tls, CFG_TLS_MAY);
    assert_int_equal(d->queue_lifetime, 7ull * 86400000);
    assert_int_equal(d->delay_warning, 4 * 3600000);
    assert_int_equal(d->probe_interval, 0);
    assert_int_equal(d->max_site_connections, 4);
    assert_null(d->etrn_access);
    assert_int_equal(d->netrn_access, 0);
    d = &cfg->domains[1];
    assert_string_equal(d->name, "example.org"); /* from "Example.ORG." */
    assert_int_equal(d->mode, CFG_MODE_RETRY);
    assert_string_equal(d->route, "smtp.example.org:2525");
    assert_int_equal(d->route_mx, 0);
    assert_string_equal(d->route_host, "smtp.example.org");
    assert_int_equal(d->route_port, 2525);
    assert_int_equal(d->subdomains, 1);
    assert_int_equal(d->line, 32);
    assert_int_equal(d->tls, CFG_TLS_VERIFY);
    assert_int_equal(d->queue_lifetime, 30ull * 86400000);
    assert_int_equal(d->delay_warning, 0); /* off here although the global is 4h */
    assert_int_equal(d->probe_interval, 15 * 60000);
    assert_int_equal(d->max_site_connections, 1);
    assert_int_equal(d->netrn_access, 3);
    assert_int_equal(d->etrn_access[0].prefix, 24);
    assert_int_equal(d->etrn_access[1].prefix, 32);
    assert_int_equal(d->etrn_access[1].addr.ss_family, AF_INET6);
    assert_int_equal(d->etrn_access[2].prefix, 32);
    assert_int_equal(d->etrn_access[2].addr.ss_family, AF_INET);

    /* everything else: retry, by MX, with the global limits */
    d = config_delivery_domain(cfg, "elsewhere.example");
    assert_ptr_equal(d, &cfg->other);
    assert_string_equal(d->name, "");
    assert_int_equal(d->mode, CFG_MODE_RETRY);
    assert_int_equal(d->route_mx, 1);
    assert_null(d->route_host);
    assert_int_equal(d->route_port, 2526);
    assert_int_equal(d->tls, CFG_TLS_MAY);
    assert_int_equal(d->queue_lifetime, 7ull * 86400000);
    assert_int_equal(d->delay_warning, 4 * 3600000);
    assert_int_equal(d->max_site_connections, 4);
    assert_null(d->etrn_access);
    assert_ptr_equal(config_delivery_domain(cfg, "mail.Example.ORG"), &cfg->domains[1]);
    assert_ptr_equal(config_delivery_domain(cfg, "example.net"), &cfg->domains[0]);
    assert_ptr_equal(config_delivery_domain(cfg, "mail.example.net"), &cfg->other);

    assert_int_equal(cfg->nqueues, 1);
    q = config_find_queue(cfg, "customers");
    assert_non_null(q);
    assert_string_equal(q->name, "customers");
    assert_int_equal(q->ndomains, 2);
    assert_string_equal(q->domains[0], "example.org");
    assert_string_equal(q->domains[1], "example.net");
    assert_null(config_find_queue(cfg, "Customers"));
    assert_null(config_find_queue(cfg, "nope"));
    config_unref(cfg);
}

static void test_defaults(void **state)
{
    struct config *cfg = load_ok(DIR_ "minimal.conf");
    char host[256];
    const struct sockaddr_in *sin;
    const struct sockaddr_in6 *sin6;

    (void)state;
    /* The system's name, or localhost when that is not a usable host name. */
    assert_non_null(cfg->hostname);
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    if (strcmp(cfg->hostname, "localhost") != 0)
        assert_string_equal(cfg->hostname, host);
    /* "*:25" is every IPv4 and every IPv6 address */
    assert_int_equal(cfg->nlisten, 2);
    assert_string_equal(cfg->listen[0].text, "0.0.0.0:25");
    assert_string_equal(cfg->listen[1].text, "[::]:25");
    sin = (const struct sockaddr_in *)&cfg->listen[0].addr;
    sin6 = (const struct sockaddr_in6 *)&cfg->listen[1].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(sin->sin_port), 25);
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
    assert_int_equal(ntohs(sin6->sin6_port), 25);
    assert_string_equal(cfg->database, LOCALSTATEDIR "/lib/relayd/queue.db");
    assert_int_equal(cfg->max_message_size, 10485760);
    assert_int_equal(cfg->max_connections, 200);
    assert_int_equal(cfg->max_connections_per_ip, 50);
    assert_int_equal(cfg->max_recipients, 1000);
    assert_int_equal(cfg->max_errors, 10);
    assert_int_equal(cfg->command_timeout, 5 * 60 * 1000);
    assert_int_equal(cfg->data_timeout, 10 * 60 * 1000);
    assert_int_equal(cfg->shutdown_timeout, 30 * 1000);
    assert_int_equal(cfg->hopcount_limit, 100);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_null(cfg->user);
    assert_int_equal(cfg->log_level, LOGL_INFO);
    assert_null(cfg->dns_servers);
    assert_null(cfg->my_addresses);
    assert_int_equal(cfg->nmy_addresses, 0);
    assert_int_equal(cfg->delivery_port, 25);
    assert_int_equal(cfg->max_site_connections, 2);
    assert_int_equal(cfg->min_backoff, 5 * 60000);
    assert_int_equal(cfg->max_backoff, 4 * 3600000);
    assert_int_equal(cfg->queue_lifetime, 5ull * 86400000);
    assert_int_equal(cfg->delay_warning, 0);
    assert_int_equal(cfg->connect_timeout, 30000);
    assert_int_equal(cfg->delivery_timeout, 5 * 60000);
    assert_int_equal(cfg->delivery_data_timeout, 10 * 60000);
    assert_int_equal(cfg->etrn_rate, 120);
    assert_int_equal(cfg->etrn_rate_period, 60000);
    assert_null(cfg->tls_ca_file);
    assert_string_equal(cfg->control_socket, RUNSTATEDIR "/relayd/control.sock");
    assert_int_equal(cfg->control_socket_mode, 0660);
    assert_null(cfg->control_socket_group);
    assert_int_equal(cfg->ndomains, 1);
    assert_string_equal(cfg->domains[0].name, "example.org");
    assert_int_equal(cfg->domains[0].mode, CFG_MODE_HOLD);
    assert_string_equal(cfg->domains[0].route, "mx");
    assert_int_equal(cfg->domains[0].route_mx, 1);
    assert_null(cfg->domains[0].route_host);
    assert_int_equal(cfg->domains[0].route_port, 25);
    assert_int_equal(cfg->domains[0].subdomains, 0);
    assert_int_equal(cfg->domains[0].tls, CFG_TLS_MAY);
    assert_int_equal(cfg->domains[0].queue_lifetime, 5ull * 86400000);
    assert_int_equal(cfg->domains[0].delay_warning, 0);
    assert_int_equal(cfg->domains[0].probe_interval, 0);
    assert_int_equal(cfg->domains[0].max_site_connections, 2);
    assert_null(cfg->domains[0].etrn_access);
    assert_int_equal(cfg->domains[0].netrn_access, 0);
    assert_string_equal(cfg->other.name, "");
    assert_int_equal(cfg->other.mode, CFG_MODE_RETRY);
    assert_int_equal(cfg->other.route_port, 25);
    assert_int_equal(cfg->nqueues, 0);
    assert_null(config_find_queue(cfg, "x"));
    config_unref(cfg);
}

static void test_include_dir(void **state)
{
    struct config *cfg = load_ok(DIR_ "include-dir.conf");
    const struct cfg_domain *d;

    (void)state;
    assert_string_equal(cfg->hostname, "relay.example.net");
    assert_int_equal(cfg->log_level, LOGL_WARN);
    /* README, .hidden.conf and 30-off.conf.disabled are not read */
    assert_int_equal(cfg->ndomains, 3);
    assert_string_equal(cfg->domains[0].name, "alpha.example");
    assert_string_equal(cfg->domains[0].file, DIR_ "customers.d/10-alpha.conf");
    assert_int_equal(cfg->domains[0].line, 2);
    assert_int_equal(cfg->domains[0].subdomains, 1);
    assert_string_equal(cfg->domains[1].name, "beta.example");
    assert_int_equal(cfg->domains[1].mode, CFG_MODE_RETRY);
    assert_string_equal(cfg->domains[1].route, "mail.beta.example:587");
    assert_string_equal(cfg->domains[2].name, "gamma.example");
    assert_string_equal(cfg->domains[2].file, DIR_ "customers.d/20-beta.conf");
    assert_int_equal(cfg->domains[2].line, 6);
    assert_string_equal(cfg->domains[2].route, "mx");
    assert_null(config_find_domain(cfg, "disabled.example"));
    d = config_find_domain(cfg, "www.alpha.example");
    assert_non_null(d);
    assert_string_equal(d->name, "alpha.example");
    assert_int_equal(cfg->nqueues, 1);
    assert_int_equal(cfg->queues[0].ndomains, 3);
    config_unref(cfg);
}

/* load -> print -> load -> print gives the same text, and the reloaded
 * snapshot has the same values (checked through the text). */
static void round_trip(const char *path)
{
    struct config *a = load_ok(path), *b, *c;
    char *t1 = print_to_string(a), *t2, *t3;
    char err[512] = "";
    FILE *fp;
    const char *p2 = write_tmp("printed.conf", "");

    fp = fopen(p2, "w");
    assert_non_null(fp);
    config_print(a, fp, 1);
    assert_int_equal(fclose(fp), 0);
    if (config_load(p2, &b, err, sizeof(err)) != 0)
        fail_msg("reloading the printed config failed: %s\n%s", err, t1);
    t2 = print_to_string(b);
    assert_string_equal(t1, t2);
    /* once more, through the file written from the reloaded snapshot */
    fp = fopen(p2, "w");
    assert_non_null(fp);
    config_print(b, fp, 1);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(config_load(p2, &c, err, sizeof(err)), 0);
    t3 = print_to_string(c);
    assert_string_equal(t1, t3);
    free(t1);
    free(t2);
    free(t3);
    config_unref(a);
    config_unref(b);
    config_unref(c);
}

static void test_round_trip(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "", *t;

    (void)state;
    round_trip(DIR_ "full.conf");
    round_trip(DIR_ "minimal.conf");
    round_trip(DIR_ "include-dir.conf");

    /* values that do not fall on a unit print in a smaller one, exactly */
    round_trip(write_tmp("odd.conf", "command_timeout = 1001ms\ndata_timeout = 90\n"
                                     "shutdown_timeout = 0\nmax_message_size = 1025\n"
                                     "hopcount_limit = 1000\nmax_connections = 1\n"
                                     "listen = *:2525 [2001:db8::1]:25\n[queue q]\n"
                                     "domains = b.example a.example\n[domain b.example]\n"
                                     "[domain a.example]\nroute = 192.0.2.1\n"));
    assert_int_equal(config_load(write_tmp("odd2.conf", "command_timeout = 1001ms\n"
                                                        "data_timeout = 90\n"
                                                        "shutdown_timeout = 0\n"
                                                        "max_message_size = 1536k\n"
                                                        "max_recipients = 2048\n"),
                                 &cfg, err, sizeof(err)),
                     0);
    t = print_to_string(cfg);
    assert_non_null(strstr(t, "\ncommand_timeout = 1001ms\n"));
    assert_non_null(strstr(t, "\ndata_timeout = 90s\n"));
    assert_non_null(strstr(t, "\nshutdown_timeout = 0s\n"));
    assert_non_null(strstr(t, "\nmax_message_size = 1536K\n"));
    assert_non_null(strstr(t, "\nmax_recipients = 2048\n"));
    free(t);
    config_unref(cfg);
}

static void test_print_contents(void **state)
{
    struct config *cfg = load_ok(DIR_ "full.conf");
    char *t = print_to_string(cfg);
    char *globals_end = strstr(t, "\n[domain example.net]\n");
    char *org = strstr(t, "\n[domain example.org]\n");
    char *queue = strstr(t, "\n[queue customers]\n");

    (void)state;
    assert_non_null(strstr(t, "\nlisten = 127.0.0.1:2525, [::1]:2525\n"));
    assert_non_null(strstr(t, "\nmax_message_size = 25M\n"));
    assert_non_null(strstr(t, "\ncommand_timeout = 2m\n"));
    assert_non_null(strstr(t, "\nshutdown_timeout = 45s\n"));
    assert_non_null(strstr(t, "\nsubdomains = yes\n"));
    assert_non_null(strstr(t, "\ndomains = example.org, example.net\n"));
    /* globals, then domains sorted by name, then queues */
    assert_non_null(globals_end);
    assert_non_null(org);
    assert_non_null(queue);
    assert_true(strstr(t, "\nlog_level = debug\n") < globals_end);
    assert_true(globals_end < org);
    assert_true(org < queue);
    free(t);
    config_unref(cfg);

    /* unset optional keys print as empty values that read back as unset */
    cfg = load_ok(DIR_ "minimal.conf");
    t = print_to_string(cfg);
    assert_non_null(strstr(t, "\ntls_cert =\n"));
    assert_non_null(strstr(t, "\nuser =\n"));
    assert_non_null(strstr(t, "\nlisten = 0.0.0.0:25, [::]:25\n"));
    free(t);
    config_unref(cfg);
}

/* relayd.conf(5) has an entry (.It Cm key) for every key config_print
 * prints, i.e. for every key in the tables. */
static void test_man_page_lists_every_key(void **state)
{
    struct config *cfg = load_ok(DIR_ "full.conf");
    char *t = print_to_string(cfg), *save = NULL, *man, *line;
    FILE *fp = fopen(MAN_PAGE, "r");
    size_t len, nkeys = 0;

    (void)state;
    assert_non_null(fp);
    man = calloc(1, 1 << 20);
    assert_non_null(man);
    len = fread(man, 1, (1 << 20) - 1, fp);
    assert_true(len > 0);
    fclose(fp);
    for (line = strtok_r(t, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char want[96];
        size_t klen = strcspn(line, " ");
        if (line[0] == '#' || line[0] == '[' || line[0] == '\0')
            continue;
        snprintf(want, sizeof(want), "\n.It Cm %.*s No = ", (int)klen, line);
        if (strstr(man, want) == NULL)
            fail_msg("relayd.conf.5 has no '%s' entry", want + 1);
        nkeys++;
    }
    assert_int_equal(nkeys, 50 + 2 * 13 + 1); /* globals, 2 domains, 1 queue */
    assert_non_null(strstr(man, "\n.It Ic include No = "));
    free(man);
    free(t);
    config_unref(cfg);
}

/* etc/relayd.conf, which the README's Quick start runs, stays loadable. */
static void test_quick_start_config(void **state)
{
    struct config *cfg = load_ok(TEST_CONFIG_DIR "/../../../etc/relayd.conf");
    const char *db = cfg->database, *want = "/etc/../run/queue.db";
    size_t n = strlen(db);

    (void)state;
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:2525");
    /* relative to etc/, so the queue is in run/ at the top of the tree */
    assert_true(db[0] == '/' && n > strlen(want));
    assert_string_equal(db + n - strlen(want), want);
    assert_int_equal(cfg->log_level, LOGL_INFO);
    assert_int_equal(cfg->ndomains, 1);
    assert_string_equal(cfg->domains[0].name, "example.org");
    assert_int_equal(cfg->domains[0].mode, CFG_MODE_HOLD);
    config_unref(cfg);
}

static void test_ref_unref(void **state)
{
    struct config *cfg = load_ok(DIR_ "minimal.conf");

    (void)state;
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(cfg->refs, 2);
    config_unref(cfg);
    assert_int_equal(cfg->refs, 1);
    assert_string_equal(cfg->domains[0].name, "example.org"); /* still alive */
    config_unref(cfg);                                        /* freed: ASan/valgrind */
    config_unref(NULL);
}

/* ---- bad files ---------------------------------------------------------------------- */

struct bad_case {
    const char *file;  /* in TEST_CONFIG_DIR */
    const char *where; /* "file:line:" expected in the message */
    const char *what;  /* and this text */
};

static const struct bad_case bad_cases[] = {
    {"bad-unknown-key.conf", "bad-unknown-key.conf:3: ", "unknown key 'max_mesage_size'"},
    {"bad-unknown-section.conf", "bad-unknown-section.conf:2: ", "unknown section type"},
    {"bad-key-in-domain.conf",
     "bad-key-in-domain.conf:4: ", "'hostname' is not valid in [domain example.org]"},
    {"bad-key-at-global.conf", "bad-key-at-global.conf:3: ", "'mode' is not valid at global"},
    {"bad-missing-equals.conf", "bad-missing-equals.conf:4: ", "no '='"},
    {"bad-size.conf", "bad-size.conf:2: ", "expected a size"},
    {"bad-range.conf", "bad-range.conf:2: ", "from 100 to"},
    {"bad-duration.conf", "bad-duration.conf:2: ", "expected a duration"},
    {"bad-bool.conf", "bad-bool.conf:3: ", "expected yes or no"},
    {"bad-route.conf", "bad-route.conf:4: ", "port must be a number from 1 to 65535"},
    {"bad-mode.conf", "bad-mode.conf:2: ", "expected hold or retry"},
    {"bad-loglevel.conf", "bad-loglevel.conf:1: ", "expected error, warn, info or debug"},
    {"bad-hostname.conf", "bad-hostname.conf:1: ", "expected a host name"},
    {"bad-dup-key.conf", "bad-dup-key.conf:4: ", "duplicate key 'listen'"},
    {"bad-dup-key.conf", "bad-dup-key.conf:4: ", "first set at " DIR_ "bad-dup-key.conf:2"},
    {"bad-dup-key-domain.conf", "bad-dup-key-domain.conf:4: ", "duplicate key 'mode'"},
    {"bad-dup-domain.conf", "bad-dup-domain.conf:5: ", "duplicate [domain example.org]"},
    {"bad-dup-domain.conf", "bad-dup-domain.conf:5: ", "first at " DIR_ "bad-dup-domain.conf:2"},
    {"bad-dup-queue.conf", "bad-dup-queue.conf:4: ", "duplicate [queue q1]"},
    {"bad-listen-empty.conf", "bad-listen-empty.conf:2: ", "at least one addr:port"},
    {"bad-listen-port.conf", "bad-listen-port.conf:1: ", "'127.0.0.1:0': port must be"},
    {"bad-listen-noport.conf", "bad-listen-noport.conf:2: ", "missing port"},
    {"bad-queue-domain.conf",
     "bad-queue-domain.conf:5: ", "names example.com, which has no [domain] section"},
    {"bad-queue-nodomains.conf", "bad-queue-nodomains.conf:2: ", "needs a domains key"},
    {"bad-include-missing.conf",
     "bad-include-missing.conf:3: ", DIR_ "does-not-exist.conf: No such file or directory"},
    {"bad-include-loop.conf", "loop/b.conf:3: ", "include loop: " DIR_ "loop/a.conf"},
    {"bad-in-include.conf", "bad-inc/broken.conf:2: ", "bad value 'not_a_host' for route"},
    {"bad-section-leak.conf", "bad-section-leak.conf:4: ", "'mode' is not valid at global"},
    {"bad-tls-half.conf", "bad-tls-half.conf:3: ", "tls_cert is set but tls_key is not"},
    {"bad-tls-missing.conf",
     "bad-tls-missing.conf:2: ", "tls_cert " DIR_ "tls/missing.pem: No such file or directory"},
    {"bad-section-syntax.conf", "bad-section-syntax.conf:2: ", "expected ']'"},
    {"bad-domain-name.conf", "bad-domain-name.conf:2: ", "'exa_mple.org' is not a domain name"},
    {"bad-backoff.conf", "bad-backoff.conf:3: ", "max_backoff (5m) is less than min_backoff (10m)"},
    {"bad-backoff-default.conf",
     "bad-backoff-default.conf:3: ", "max_backoff (4h) is less than min_backoff (5h)"},
    {"bad-etrn-access.conf", "bad-etrn-access.conf:3: ", "'198.51.100.1/24' has bits set"},
    {"bad-dns-servers.conf", "bad-dns-servers.conf:2: ", "'dns.example.net': expected an IPv4"},
    {"bad-etrn-rate.conf", "bad-etrn-rate.conf:2: ", "expected count/duration such as 120/1m"},
    {"bad-tls-policy.conf", "bad-tls-policy.conf:2: ", "expected none, may, encrypt or verify"},
    {"bad-ca-missing.conf",
     "bad-ca-missing.conf:1: ", "tls_ca_file " DIR_ "tls/no-such-ca.pem: No such file"},
};

static void test_bad_files(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        struct config *cfg = (struct config *)1;
        char path[512], err[512] = "";
        snprintf(path, sizeof(path), DIR_ "%s", c->file);
        if (config_load(path, &cfg, err, sizeof(err)) != -1)
            fail_msg("%s loaded but should not", c->file);
        assert_null(cfg);
        /* file name and line at the start of the message, then the problem */
        if (strstr(err, c->where) == NULL || strstr(err, c->what) == NULL ||
            strncmp(err, TEST_CONFIG_DIR, strlen(TEST_CONFIG_DIR)) != 0)
            fail_msg("%s: got \"%s\", want \"%s\" and \"%s\"", c->file, err, c->where, c->what);
    }
}

static void test_unreadable(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "";

    (void)state;
    assert_int_equal(config_load(DIR_ "no-such-file.conf", &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, DIR_ "no-such-file.conf: No such file or directory");
    assert_null(cfg);
    assert_int_equal(config_load(TEST_CONFIG_DIR, &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, TEST_CONFIG_DIR ": Is a directory");
    /* a tiny buffer is not overrun, and a NULL one is allowed */
    assert_int_equal(config_load(DIR_ "bad-unknown-key.conf", &cfg, err, 8), -1);
    assert_int_equal(strlen(err), 7);
    assert_int_equal(config_load(DIR_ "bad-unknown-key.conf", &cfg, NULL, 0), -1);
}

/* depth1.conf includes depth2.conf ... includes depth9.conf: 8 levels of
 * include are allowed, a 9th is not. */
static void test_include_depth(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "", name[128], text[64], want[192];

    (void)state;
    for (int i = 1; i <= 9; i++) {
        snprintf(name, sizeof(name), "depth%d.conf", i);
        if (i < 9)
            snprintf(text, sizeof(text), "# level %d\ninclude = depth%d.conf\n", i, i + 1);
        else
            snprintf(text, sizeof(text), "hostname = deep.example\n");
        write_tmp(name, text);
    }
    snprintf(name, sizeof(name), "%s/depth8.conf", tmpdir);
    assert_int_equal(config_load(name, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->hostname, "deep.example");
    config_unref(cfg);
    snprintf(name, sizeof(name), "%s/depth1.conf", tmpdir);
    assert_int_equal(config_load(name, &cfg, err, sizeof(err)), 0); /* 8 levels: allowed */
    config_unref(cfg);

    write_tmp("depth9.conf", "include = depth10.conf\n");
    write_tmp("depth10.conf", "hostname = deeper.example\n");
    assert_int_equal(config_load(name, &cfg, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s/depth9.conf:1: include nested more than 8", tmpdir);
    if (strstr(err, want) == NULL)
        fail_msg("got \"%s\"", err);
    /* including oneself is a loop, not a depth problem */
    write_tmp("self.conf", "\n\ninclude = self.conf\n");
    snprintf(name, sizeof(name), "%s/self.conf", tmpdir);
    assert_int_equal(config_load(name, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "self.conf:3: include loop"));
}

/* Small files written on the fly: the lexical rules. */
static void test_syntax(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "";
    char longline[9000];

    (void)state;
    /* CRLF, tabs, trailing comments, comment after a section header */
    assert_int_equal(load_text("# c\r\n\thostname\t=\ta.example   # why\r\n\r\n"
                               "[domain X.example]  # customer x\r\nmode=retry\r\n",
                               &cfg, err, sizeof(err)),
                     0);
    assert_string_equal(cfg->hostname, "a.example");
    assert_string_equal(cfg->domains[0].name, "x.example");
    assert_int_equal(cfg->domains[0].mode, CFG_MODE_RETRY);
    config_unref(cfg);

    /* '=' with nothing before it */
    assert_int_equal(load_text("\n = x\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:2: missing key"));
    /* a lone CR inside a line, a NUL byte */
    assert_int_equal(load_text("hostname = a\rb.example\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:1: control character"));
    {
        const char *p = write_tmp("nul.conf", "");
        FILE *fp = fopen(p, "w");
        assert_non_null(fp);
        fwrite("log_level = info\nhostname = a\0b\n", 1, 32, fp);
        fclose(fp);
        assert_int_equal(config_load(p, &cfg, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "nul.conf:2: control character or NUL"));
    }
    /* an overlong line */
    memset(longline, 'a', sizeof(longline));
    memcpy(longline, "# ", 2);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    assert_int_equal(load_text(longline, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:1: line longer than 8192"));
    /* section headers */
    assert_int_equal(load_text("[domain]\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:1: expected [domain NAME]"));
    assert_int_equal(load_text("[domain a.example b.example]\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "expected [domain NAME]"));
    assert_int_equal(load_text("[queue bad/name]\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "queue name 'bad/name'"));
    /* include is not a key of any scope: allowed inside a section too, and
     * the section continues after it */
    write_tmp("inc.conf", "log_level = error\n[domain inc.example]\n");
    assert_int_equal(load_text("[domain a.example]\ninclude = inc.conf\nsubdomains = yes\n", &cfg,
                               err, sizeof(err)),
                     0);
    assert_int_equal(cfg->log_level, LOGL_ERROR);
    assert_int_equal(cfg->domains[0].subdomains, 1); /* a.example */
    assert_int_equal(cfg->domains[1].subdomains, 0); /* inc.example */
    config_unref(cfg);
    assert_int_equal(load_text("include =\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:1: include needs"));
    /* the same global key in two files is still a duplicate */
    write_tmp("inc.conf", "log_level = error\n");
    assert_int_equal(load_text("log_level = info\ninclude = inc.conf\n", &cfg, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "inc.conf:1: duplicate key 'log_level'"));
    /* optional keys may be empty: not set */
    assert_int_equal(load_text("user =\ntls_cert =\ntls_key = \n", &cfg, err, sizeof(err)), 0);
    assert_null(cfg->user);
    assert_null(cfg->tls_cert);
    config_unref(cfg);
    /* ...but tls_key alone is as wrong as tls_cert alone */
    assert_int_equal(load_text("tls_key = tls.key\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:1: tls_key is set but tls_cert is not"));
    assert_int_equal(load_text("user = -x\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "expected a user name"));
    /* a [queue] whose domain is covered only via subdomains still needs a section */
    assert_int_equal(load_text("[domain example.org]\nsubdomains = yes\n[queue q]\n"
                               "domains = a.example.org\n",
                               &cfg, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "t.conf:4: [queue q] names a.example.org"));
    assert_int_equal(load_text("[domain example.org]\n[queue q]\ndomains = example.org "
                               "EXAMPLE.org\n",
                               &cfg, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "example.org is listed twice"));
}

/* The control socket's keys (issue 4): a path made absolute, or empty for
 * none; octal permission bits without special bits; a group name. */
static void test_control_socket(void **state)
{
    static const struct {
        const char *text;
        int ok;
        unsigned mode;
    } modes[] = {
        {"0660", 1, 0660},   {"640", 1, 0640}, {"0", 1, 0},     {"0777", 1, 0777},
        {"0000", 1, 0},      {"1777", 0, 0},   {"4660", 0, 0},  {"0800", 0, 0},
        {"0x1f", 0, 0},      {"-660", 0, 0},   {"00660", 0, 0}, {"660 ", 1, 0660},
        {"rw-rw----", 0, 0},
    };
    struct config *cfg = NULL;
    char err[512] = "", text[128], *t;

    (void)state;
    assert_int_equal(load_text("control_socket = run/ctl.sock\ncontrol_socket_mode = 0640\n"
                               "control_socket_group = mail-ops\n",
                               &cfg, err, sizeof(err)),
                     0);
    assert_non_null(cfg->control_socket);
    assert_true(strncmp(cfg->control_socket, tmpdir, strlen(tmpdir)) == 0);
    assert_string_equal(cfg->control_socket + strlen(tmpdir), "/run/ctl.sock");
    assert_int_equal(cfg->control_socket_mode, 0640);
    assert_string_equal(cfg->control_socket_group, "mail-ops");
    /* relayd -n writes them back as they are read */
    t = print_to_string(cfg);
    assert_non_null(strstr(t, "\ncontrol_socket_mode = 0640\n"));
    assert_non_null(strstr(t, "\ncontrol_socket_group = mail-ops\n"));
    free(t);
    config_unref(cfg);

    /* empty: no control socket; an unset group prints as empty */
    assert_int_equal(
        load_text("control_socket =\ncontrol_socket_group =\n", &cfg, err, sizeof(err)), 0);
    assert_null(cfg->control_socket);
    assert_null(cfg->control_socket_group);
    assert_int_equal(cfg->control_socket_mode, 0660);
    t = print_to_string(cfg);
    assert_non_null(strstr(t, "\ncontrol_socket =\n"));
    assert_non_null(strstr(t, "\ncontrol_socket_mode = 0660\n"));
    assert_non_null(strstr(t, "\ncontrol_socket_group =\n"));
    config_unref(cfg);
    /* ... and reads back as none, not as the default */
    assert_int_equal(config_load(write_tmp("print.conf", t), &cfg, err, sizeof(err)), 0);
    assert_null(cfg->control_socket);
    free(t);
    config_unref(cfg);

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        int rc;

        cfg = NULL;
        snprintf(text, sizeof(text), "control_socket_mode = %s\n", modes[i].text);
        rc = load_text(text, &cfg, err, sizeof(err));
        if ((rc == 0) != modes[i].ok)
            fail_msg("mode '%s': rc %d (%s)", modes[i].text, rc, rc ? err : "");
        if (rc == 0)
            assert_int_equal(cfg->control_socket_mode, modes[i].mode);
        else
            assert_non_null(strstr(err, "t.conf:1: bad value"));
        config_unref(cfg);
    }
    assert_int_equal(load_text("control_socket_group = -ops\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "expected a group name"));
    assert_int_equal(load_text("control_socket_group = ops/x\n", &cfg, err, sizeof(err)), -1);
    assert_int_equal(load_text("[domain a.example]\ncontrol_socket = x\n", &cfg, err, sizeof(err)),
                     -1);
}

static void test_tls_ok(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "", text[512];

    (void)state;
    /* absolute paths stay as they are */
    snprintf(text, sizeof(text), "tls_cert = %s\ntls_key = %s\n", DIR_ "tls/cert.pem",
             DIR_ "tls/key.pem");
    assert_int_equal(load_text(text, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->tls_cert, DIR_ "tls/cert.pem");
    config_unref(cfg);
    /* a directory is not a key file */
    snprintf(text, sizeof(text), "tls_cert = %s\ntls_key = %s\n", DIR_ "tls/cert.pem",
             TEST_CONFIG_DIR "/tls");
    assert_int_equal(load_text(text, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:2: tls_key"));
    assert_non_null(strstr(err, "Is a directory"));
}

/* ---- values ------------------------------------------------------------------------- */

static void test_durations(void **state)
{
    static const struct {
        const char *in;
        uint64_t ms;
    } good[] = {
        {"0", 0},
        {"30", 30000},
        {"250ms", 250},
        {"30s", 30000},
        {"5m", 300000},
        {"5M", 300000},
        {"4h", 14400000},
        {"5d", 432000000},
        {"2w", 1209600000},
        {"1MS", 1},
        {"007s", 7000},
        {"18446744073709551615ms", UINT64_MAX},
        {"18446744073709551s", 18446744073709551000u},
        {"30500568904w", 18446744073139200000u},
    };
    static const char *const bad[] = {
        "",
        "s",
        "ms",
        "-1s",
        "+1s",
        " 5m",
        "5m ",
        "5 m",
        "5x",
        "5mm",
        "1.5h",
        "5y",
        "0x10",
        "18446744073709551616ms", /* > UINT64_MAX */
        "18446744073709552s",     /* *1000 overflows */
        "30500568905w",           /* *604800000 overflows */
    };
    uint64_t v;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 42;
        if (config_parse_duration(good[i].in, &v) != 0 || v != good[i].ms)
            fail_msg("duration '%s' -> %llu", good[i].in, (unsigned long long)v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        if (config_parse_duration(bad[i], &v) != -1 || v != 42)
            fail_msg("duration '%s' accepted", bad[i]);
    }
}

static void test_sizes(void **state)
{
    static const struct {
        const char *in;
        uint64_t bytes;
    } good[] = {
        {"0", 0},
        {"1048576", 1048576},
        {"512k", 524288},
        {"512K", 524288},
        {"10M", 10485760},
        {"10m", 10485760},
        {"1G", 1073741824},
        {"17179869183G", 17179869183ull << 30},
        {"18446744073709551615", UINT64_MAX},
    };
    static const char *const bad[] = {
        "",
        "M",
        "-1",
        "10MB",
        "10 M",
        "1.5M",
        "10T",
        " 1",
        "17179869184G", /* 2^64 */
        "18446744073709551616",
        "99999999999999999999999",
    };
    uint64_t v;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 42;
        if (config_parse_size(good[i].in, &v) != 0 || v != good[i].bytes)
            fail_msg("size '%s' -> %llu", good[i].in, (unsigned long long)v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        if (config_parse_size(bad[i], &v) != -1 || v != 42)
            fail_msg("size '%s' accepted", bad[i]);
    }
}

/* Range checks of the numeric keys, at the edges. */
static void test_ranges(void **state)
{
    static const struct {
        const char *text;
        int ok;
    } cases[] = {
        {"max_message_size = 1k\n", 1},
        {"max_message_size = 1023\n", 0},
        {"max_message_size = 512M\n", 1},
        {"max_message_size = 1G\n", 0},
        {"max_recipients = 100\n", 1},
        {"max_recipients = 99\n", 0},
        {"max_connections = 0\n", 0},
        {"max_connections = 4294967297\n", 0}, /* would wrap an unsigned */
        {"max_connections = -1\n", 0},
        {"max_connections = 1e3\n", 0},
        {"max_errors = 1\n", 1},
        {"hopcount_limit = 0\n", 0},
        {"command_timeout = 999ms\n", 0},
        {"command_timeout = 1s\n", 1},
        {"command_timeout = 1d\n", 1},
        {"command_timeout = 25h\n", 0},
        {"shutdown_timeout = 0\n", 1},
        {"shutdown_timeout = 2h\n", 0},
        {"data_timeout = 99999999999999999999\n", 0},
    };
    struct config *cfg;
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg = NULL;
        int rc = load_text(cases[i].text, &cfg, err, sizeof(err));
        if ((rc == 0) != cases[i].ok)
            fail_msg("'%.*s': rc %d (%s)", (int)strlen(cases[i].text) - 1, cases[i].text, rc,
                     rc ? err : "");
        if (rc != 0)
            assert_non_null(strstr(err, "t.conf:1: bad value"));
        config_unref(cfg);
    }
}

static void test_listen(void **state)
{
    static const struct {
        const char *value;
        const char *texts; /* expected entries joined by '|', or NULL: error */
        const char *why;   /* part of the error */
    } cases[] = {
        {"127.0.0.1:25", "127.0.0.1:25", NULL},
        {"[::1]:2525", "[::1]:2525", NULL},
        {"[0:0::1]:25", "[::1]:25", NULL},
        {"*:587", "0.0.0.0:587|[::]:587", NULL},
        {"127.0.0.1:25,[::1]:25", "127.0.0.1:25|[::1]:25", NULL},
        {"127.0.0.1:25 127.0.0.2:25,, 10.0.0.1:25", "127.0.0.1:25|127.0.0.2:25|10.0.0.1:25", NULL},
        {"[2001:db8::1]:65535", "[2001:db8::1]:65535", NULL},
        {"127.0.0.1", NULL, "missing port"},
        {"[::1]", NULL, "missing port"},
        {"127.0.0.1:", NULL, "port must be"},
        {"127.0.0.1:0", NULL, "port must be"},
        {"127.0.0.1:65536", NULL, "port must be"},
        {"127.0.0.1:smtp", NULL, "port must be"},
        {"127.0.0.1:-25", NULL, "port must be"},
        {"::1:25", NULL, "must be written [addr]:port"},
        {"[::1:25", NULL, "missing ']'"},
        {"[127.0.0.1]:25", NULL, "not an IPv6 address"},
        {"localhost:25", NULL, "expected an IPv4 address"},
        {"127.1:25", NULL, "expected an IPv4 address"},
        {"256.0.0.1:25", NULL, "expected an IPv4 address"},
        {"*:25, 0.0.0.0:25", NULL, "0.0.0.0:25 is listed twice"},
        {"[::1]:25 [0::1]:25", NULL, "[::1]:25 is listed twice"},
        {"", NULL, "at least one"},
    };
    struct config *cfg;
    char err[512], text[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg = NULL;
        snprintf(text, sizeof(text), "hostname = a.example\nlisten = %s\n", cases[i].value);
        int rc = load_text(text, &cfg, err, sizeof(err));
        if (cases[i].texts == NULL) {
            if (rc != -1 || strstr(err, "t.conf:2: bad value") == NULL ||
                strstr(err, cases[i].why) == NULL)
                fail_msg("listen '%s': rc %d, \"%s\"", cases[i].value, rc, rc ? err : "");
            continue;
        }
        if (rc != 0)
            fail_msg("listen '%s': %s", cases[i].value, err);
        char joined[256] = "";
        for (size_t j = 0; j < cfg->nlisten; j++) {
            const struct sockaddr *sa = (const struct sockaddr *)&cfg->listen[j].addr;
            assert_true(sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
            assert_int_equal(sa->sa_family == AF_INET6, cfg->listen[j].text[0] == '[');
            if (j)
                strcat(joined, "|");
            strcat(joined, cfg->listen[j].text);
        }
        assert_string_equal(joined, cases[i].texts);
        config_unref(cfg);
    }
}

static void test_routes(void **state)
{
    static const struct {
        const char *value;
        const char *stored; /* NULL: error */
    } cases[] = {
        {"mx", "mx"},
        {"MX", "mx"},
        {"mail.example.org", "mail.example.org"},
        {"Mail.Example.ORG:2525", "Mail.Example.ORG:2525"},
        {"192.0.2.1", "192.0.2.1"},
        {"192.0.2.1:25", "192.0.2.1:25"},
        {"[2001:db8::1]", "[2001:db8::1]"},
        {"[2001:db8::1]:587", "[2001:db8::1]:587"},
        {"localhost:1", "localhost:1"},
        {"mx:25", NULL},
        {"2001:db8::1", NULL},
        {"[2001:db8::1", NULL},
        {"[2001:db8::1]x", NULL},
        {"[mail.example.org]:25", NULL},
        {"mail.example.org:0", NULL},
        {"mail.example.org:", NULL},
        {"-mail.example.org", NULL},
        {"mail..example.org", NULL},
        {"mail.example.org.", NULL},
        {"mail_x.example.org", NULL},
        {"10.1.2", NULL},
        {"", NULL},
    };
    struct config *cfg;
    char err[512], text[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg = NULL;
        snprintf(text, sizeof(text), "[domain example.org]\nroute = %s\n", cases[i].value);
        int rc = load_text(text, &cfg, err, sizeof(err));
        if (cases[i].stored == NULL) {
            if (rc != -1 || strstr(err, "t.conf:2: bad value") == NULL)
                fail_msg("route '%s' accepted", cases[i].value);
            continue;
        }
        if (rc != 0)
            fail_msg("route '%s': %s", cases[i].value, err);
        assert_string_equal(cfg->domains[0].route, cases[i].stored);
        config_unref(cfg);
    }
}

static void test_domain_names(void **state)
{
    static const struct {
        const char *name;
        const char *norm; /* NULL: error */
    } cases[] = {
        {"example.org", "example.org"},
        {"EXAMPLE.Org.", "example.org"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example"},
        {"localdomain", "localdomain"},
        {"a-b.c1.example", "a-b.c1.example"},
        {"123.example", "123.example"},
        {"example.org..", NULL},
        {".example.org", NULL},
        {"-a.example", NULL},
        {"a-.example", NULL},
        {"ex ample.org", NULL},
        {"b\xc3\xbc"
         "cher.example",
         NULL},
        {"192.0.2.1", NULL},
        {"[192.0.2.1]", NULL},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", NULL},
    };
    struct config *cfg;
    char err[512], text[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg = NULL;
        snprintf(text, sizeof(text), "\n[domain %s]\n", cases[i].name);
        int rc = load_text(text, &cfg, err, sizeof(err));
        if (cases[i].norm == NULL) {
            if (rc != -1 || strstr(err, "t.conf:2: ") == NULL)
                fail_msg("[domain %s] accepted", cases[i].name);
            continue;
        }
        if (rc != 0)
            fail_msg("[domain %s]: %s", cases[i].name, err);
        assert_string_equal(cfg->domains[0].name, cases[i].norm);
        config_unref(cfg);
    }
}

static void test_find_domain(void **state)
{
    struct config *cfg = NULL;
    char err[512];
    const struct cfg_domain *d;

    (void)state;
    assert_int_equal(load_text("[domain example.org]\nsubdomains = yes\n"
                               "[domain example.net]\nsubdomains = no\n"
                               "[domain example.com]\nsubdomains = on\n"
                               "[domain sub.example.com]\nsubdomains = off\n"
                               "[domain b.example]\n[domain a.example]\n[domain c.example]\n",
                               &cfg, err, sizeof(err)),
                     0);
    /* exact, case, trailing dot */
    d = config_find_domain(cfg, "example.org");
    assert_non_null(d);
    assert_string_equal(d->name, "example.org");
    assert_ptr_equal(config_find_domain(cfg, "EXAMPLE.ORG"), d);
    assert_ptr_equal(config_find_domain(cfg, "Example.Org."), d);
    assert_null(config_find_domain(cfg, "example.org.."));
    /* subdomains on */
    assert_ptr_equal(config_find_domain(cfg, "mail.example.org"), d);
    assert_ptr_equal(config_find_domain(cfg, "a.b.c.Example.ORG."), d);
    /* whole labels only */
    assert_null(config_find_domain(cfg, "badexample.org"));
    assert_null(config_find_domain(cfg, "example.org.evil"));
    assert_null(config_find_domain(cfg, "org"));
    assert_null(config_find_domain(cfg, ".example.org"));
    assert_null(config_find_domain(cfg, "a..example.org"));
    assert_null(config_find_domain(cfg, ""));
    assert_null(config_find_domain(cfg, "."));
    /* subdomains off */
    d = config_find_domain(cfg, "example.net");
    assert_non_null(d);
    assert_string_equal(d->name, "example.net");
    assert_null(config_find_domain(cfg, "mail.example.net"));
    /* the closest parent with subdomains = yes, skipping one without */
    d = config_find_domain(cfg, "sub.example.com");
    assert_non_null(d);
    assert_string_equal(d->name, "sub.example.com");
    d = config_find_domain(cfg, "x.sub.example.com");
    assert_non_null(d);
    assert_string_equal(d->name, "example.com");
    /* every one of several sorted names is found */
    assert_string_equal(config_find_domain(cfg, "a.example")->name, "a.example");
    assert_string_equal(config_find_domain(cfg, "b.example")->name, "b.example");
    assert_string_equal(config_find_domain(cfg, "c.example")->name, "c.example");
    assert_null(config_find_domain(cfg, "d.example"));
    config_unref(cfg);

    /* no domains at all */
    assert_int_equal(load_text("hostname = a.example\n", &cfg, err, sizeof(err)), 0);
    assert_null(config_find_domain(cfg, "example.org"));
    config_unref(cfg);
}

/* ---- delivery, resolver and ETRN keys -------------------------------------------------- */

/* Each value of a new key, accepted or refused, and what it is stored as. */
static void test_delivery_values(void **state)
{
    static const struct {
        const char *text;
        int ok;
    } cases[] = {
        {"delivery_port = 1\n", 1},
        {"delivery_port = 65535\n", 1},
        {"delivery_port = 0\n", 0},
        {"delivery_port = 65536\n", 0},
        {"max_site_connections = 1000\n", 1},
        {"max_site_connections = 0\n", 0},
        {"max_site_connections = 1001\n", 0},
        {"min_backoff = 100ms\n", 1},
        {"min_backoff = 99ms\n", 0},
        {"max_backoff = 30d\n", 1},
        {"max_backoff = 31d\n", 0},
        {"min_backoff = 1h\nmax_backoff = 1h\n", 1}, /* equal is fine */
        {"queue_lifetime = 1s\n", 1},
        {"queue_lifetime = 0\n", 0},
        {"queue_lifetime = 366d\n", 0},
        {"delay_warning = 0\n", 1},
        {"delay_warning = OFF\n", 1},
        {"delay_warning = 500ms\n", 0},
        {"delay_warning = never\n", 0},
        {"delay_warning = \n", 0},
        {"connect_timeout = 100ms\n", 1},
        {"connect_timeout = 2h\n", 0},
        {"delivery_timeout = 0\n", 0},
        {"delivery_data_timeout = 1h\n", 1},
        {"etrn_rate = 1/1s\n", 1},
        {"etrn_rate = 1000000/1d\n", 1},
        {"etrn_rate = 0/1m\n", 0},
        {"etrn_rate = 1000001/1m\n", 0},
        {"etrn_rate = 5/0s\n", 0},
        {"etrn_rate = 5/2d\n", 0},
        {"etrn_rate = 5/\n", 0},
        {"etrn_rate = /1m\n", 0},
        {"etrn_rate = 5 / 1m\n", 0},
        {"etrn_rate = -5/1m\n", 0},
        {"dns_servers =\n", 1},
        {"dns_servers = 127.0.0.1:0\n", 0},
        {"dns_servers = 127.0.0.1:65536\n", 0},
        {"dns_servers = [::1\n", 0},
        {"dns_servers = [127.0.0.1]:53\n", 0},
        {"dns_servers = 127.1\n", 0},
        {"dns_servers = localhost\n", 0},
        {"my_addresses =\n", 1},
        {"my_addresses = 192.0.2.0/24\n", 0}, /* addresses, not networks */
        {"my_addresses = any\n", 0},
        {"my_addresses = 192.0.2.1 192.0.2.1\n", 0},
        {"my_addresses = [2001:db8::1]\n", 0},
        {"[domain a.example]\ntls = none\n", 1},
        {"[domain a.example]\ntls = ENCRYPT\n", 1},
        {"[domain a.example]\ntls = yes\n", 0},
        {"[domain a.example]\nprobe_interval = 30d\n", 1},
        {"[domain a.example]\nprobe_interval = 31d\n", 0},
        {"[domain a.example]\nqueue_lifetime = 0\n", 0},
        {"[domain a.example]\nmax_site_connections = 0\n", 0},
        {"[domain a.example]\netrn_access = any\n", 1},
        {"[domain a.example]\netrn_access = ANY\n", 1},
        {"[domain a.example]\netrn_access =\n", 0},
        {"[domain a.example]\netrn_access = any, 192.0.2.0/24\n", 0},
        {"[domain a.example]\netrn_access = 192.0.2.0/33\n", 0},
        {"[domain a.example]\netrn_access = 2001:db8::/129\n", 0},
        {"[domain a.example]\netrn_access = 2001:db8::/128\n", 1},
        {"[domain a.example]\netrn_access = 0.0.0.0/0\n", 1},
        {"[domain a.example]\netrn_access = 192.0.2.0/\n", 0},
        {"[domain a.example]\netrn_access = 192.0.2.0/x\n", 0},
        {"[domain a.example]\netrn_access = 192.0.2.0/24, 192.0.2.0/24\n", 0},
        {"[domain a.example]\netrn_access = client.example.net\n", 0},
        {"[domain a.example]\netrn_access = 2001:db8::1/64\n", 0},
        /* global-only and domain-only keys stay where they belong */
        {"[domain a.example]\ndelivery_port = 25\n", 0},
        {"[domain a.example]\nmin_backoff = 1m\n", 0},
        {"probe_interval = 1h\n", 0},
        {"etrn_access = any\n", 1}, /* global too since issue 8: each domain's default */
        {"etrn_access = auth\n", 1},
        {"[domain a.example]\netrn_access = auth\n", 1},
        {"[domain a.example]\netrn_access = AUTH, 192.0.2.0/24\n", 1},
        {"[domain a.example]\netrn_access = auth, auth\n", 0},
        {"[domain a.example]\netrn_access = any, auth\n", 0},
        {"my_addresses = auth\n", 0},
        {"tls = may\n", 0},
    };
    struct config *cfg;
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg = NULL;
        int rc = load_text(cases[i].text, &cfg, err, sizeof(err));
        if ((rc == 0) != cases[i].ok)
            fail_msg("'%.*s': rc %d (%s)", (int)strlen(cases[i].text) - 1, cases[i].text, rc,
                     rc ? err : "");
        if (rc != 0 && strstr(err, "t.conf:") == NULL)
            fail_msg("'%s': no location in \"%s\"", cases[i].text, err);
        if (rc == 0)
            round_trip(write_tmp("rt.conf", cases[i].text));
        config_unref(cfg);
    }

    /* what the accepted values are stored as */
    assert_int_equal(load_text("delay_warning = 0\nmy_addresses = 2001:DB8:0::1\n"
                               "dns_servers = ::1 [fe80::1]:5353, 10.0.0.1\n"
                               "[domain a.example]\ndelay_warning = 2d\nprobe_interval = 0\n"
                               "etrn_access = ::ffff:192.0.2.0/120, 0.0.0.0/0\ntls = ENCRYPT\n",
                               &cfg, err, sizeof(err)),
                     0);
    assert_int_equal(cfg->delay_warning, 0);
    assert_int_equal(cfg->nmy_addresses, 1);
    assert_string_equal(cfg->dns_servers, "[::1]:53,[fe80::1]:5353,10.0.0.1:53");
    assert_int_equal(cfg->domains[0].delay_warning, 2 * 86400000);
    assert_int_equal(cfg->domains[0].probe_interval, 0);
    assert_int_equal(cfg->domains[0].tls, CFG_TLS_ENCRYPT);
    assert_int_equal(cfg->domains[0].netrn_access, 2);
    assert_int_equal(cfg->domains[0].etrn_access[0].prefix, 120);
    assert_int_equal(cfg->domains[0].etrn_access[1].prefix, 0);
    {
        char *t = print_to_string(cfg);
        assert_non_null(strstr(t, "\ndelay_warning = off\n"));
        assert_non_null(strstr(t, "\ndelay_warning = 2d\n"));
        assert_non_null(strstr(t, "\nprobe_interval = off\n"));
        assert_non_null(strstr(t, "\nmy_addresses = 2001:db8::1\n"));
        assert_non_null(strstr(t, "\netrn_access = ::ffff:192.0.2.0/120, 0.0.0.0/0\n"));
        assert_non_null(strstr(t, "\ntls = encrypt\n"));
        assert_non_null(strstr(t, "\netrn_rate = 120/1m\n"));
        free(t);
    }
    config_unref(cfg);
}

/* A domain key the section does not set takes the global value, even when
 * the global line comes later (here: from a file included inside the
 * section, which starts at global level). Routes take delivery_port. */
static void test_inherit_and_routes(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "";
    const struct cfg_domain *d;

    (void)state;
    write_tmp("globals.conf", "queue_lifetime = 14d\ndelay_warning = 6h\n"
                              "max_site_connections = 7\ndelivery_port = 2525\n");
    assert_int_equal(load_text("[domain a.example]\ninclude = globals.conf\n"
                               "[domain b.example]\nqueue_lifetime = 1d\ndelay_warning = off\n"
                               "max_site_connections = 1\nroute = 192.0.2.1\n"
                               "[domain c.example]\nroute = [2001:db8::1]:587\n"
                               "[domain d.example]\nroute = Mail.D.Example\n"
                               "[domain e.example]\nroute = MX\n",
                               &cfg, err, sizeof(err)),
                     0);
    d = config_find_domain(cfg, "a.example");
    assert_int_equal(d->queue_lifetime, 14ull * 86400000);
    assert_int_equal(d->delay_warning, 6 * 3600000);
    assert_int_equal(d->max_site_connections, 7);
    assert_int_equal(d->route_mx, 1);
    assert_null(d->route_host);
    assert_int_equal(d->route_port, 2525);
    d = config_find_domain(cfg, "b.example");
    assert_int_equal(d->queue_lifetime, 86400000);
    assert_int_equal(d->delay_warning, 0);
    assert_int_equal(d->max_site_connections, 1);
    assert_int_equal(d->route_mx, 0);
    assert_string_equal(d->route_host, "192.0.2.1");
    assert_int_equal(d->route_port, 2525);
    d = config_find_domain(cfg, "c.example");
    assert_string_equal(d->route_host, "2001:db8::1");
    assert_int_equal(d->route_port, 587);
    assert_int_equal(d->queue_lifetime, 14ull * 86400000);
    d = config_find_domain(cfg, "d.example");
    assert_string_equal(d->route_host, "Mail.D.Example");
    assert_int_equal(d->route_port, 2525);
    d = config_find_domain(cfg, "e.example");
    assert_int_equal(d->route_mx, 1);
    assert_string_equal(d->route, "mx");
    assert_int_equal(cfg->other.queue_lifetime, 14ull * 86400000);
    assert_int_equal(cfg->other.delay_warning, 6 * 3600000);
    assert_int_equal(cfg->other.max_site_connections, 7);
    assert_int_equal(cfg->other.route_port, 2525);
    config_unref(cfg);

    /* a global set twice is still a duplicate, wherever the second one is */
    assert_int_equal(load_text("queue_lifetime = 1d\n[domain a.example]\ninclude = globals.conf\n",
                               &cfg, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "globals.conf:1: duplicate key 'queue_lifetime'"));
    /* the domain's own value is checked against the same range */
    assert_int_equal(
        load_text("[domain a.example]\nmax_site_connections = 1001\n", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:2: bad value '1001' for max_site_connections"));
}

static void set4(struct sockaddr_storage *ss, const char *a)
{
    memset(ss, 0, sizeof(*ss));
    ss->ss_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, a, &((struct sockaddr_in *)ss)->sin_addr), 1);
}

static void set6(struct sockaddr_storage *ss, const char *a)
{
    memset(ss, 0, sizeof(*ss));
    ss->ss_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, a, &((struct sockaddr_in6 *)ss)->sin6_addr), 1);
}

static int match(const struct cfg_domain *d, const char *addr)
{
    struct sockaddr_storage ss;

    if (strchr(addr, ':') != NULL)
        set6(&ss, addr);
    else
        set4(&ss, addr);
    return config_net_match(d->etrn_access, d->netrn_access, (const struct sockaddr *)&ss);
}

static void test_net_match(void **state)
{
    struct config *cfg = NULL;
    char err[512] = "";
    const struct cfg_domain *d, *all, *mapped, *none;
    struct sockaddr_storage ss;

    (void)state;
    assert_int_equal(load_text("my_addresses = 192.0.2.25, 2001:db8::25\n"
                               "[domain a.example]\n"
                               "etrn_access = 192.0.2.0/24, 2001:db8::/32, 198.51.100.7, "
                               "203.0.113.128/25, 2001:db9:ffff::/127\n"
                               "[domain b.example]\netrn_access = 0.0.0.0/0\n"
                               "[domain c.example]\netrn_access = ::ffff:10.1.0.0/112\n"
                               "[domain d.example]\n",
                               &cfg, err, sizeof(err)),
                     0);
    d = config_find_domain(cfg, "a.example");
    all = config_find_domain(cfg, "b.example");
    mapped = config_find_domain(cfg, "c.example");
    none = config_find_domain(cfg, "d.example");
    /* IPv4 prefixes, at the edges */
    assert_true(match(d, "192.0.2.0"));
    assert_true(match(d, "192.0.2.255"));
    assert_false(match(d, "192.0.3.0"));
    assert_false(match(d, "192.0.1.255"));
    assert_true(match(d, "198.51.100.7"));
    assert_false(match(d, "198.51.100.8"));
    assert_true(match(d, "203.0.113.128"));
    assert_true(match(d, "203.0.113.255"));
    assert_false(match(d, "203.0.113.127"));
    /* IPv6 */
    assert_true(match(d, "2001:db8::1"));
    assert_true(match(d, "2001:db8:ffff:ffff::1"));
    assert_false(match(d, "2001:db9::1"));
    assert_true(match(d, "2001:db9:ffff::1"));
    assert_false(match(d, "2001:db9:ffff::2"));
    /* an IPv4 client on a dual-stack socket matches the IPv4 block */
    assert_true(match(d, "::ffff:192.0.2.77"));
    assert_true(match(d, "::ffff:198.51.100.7"));
    assert_false(match(d, "::ffff:198.51.100.8"));
    /* ...but an IPv6 address whose low bits look like one does not */
    assert_false(match(d, "::192.0.2.77"));
    assert_false(match(d, "64:ff9b::192.0.2.77"));
    /* IPv4 blocks never match IPv6 clients and the other way round */
    assert_true(match(all, "255.255.255.255"));
    assert_true(match(all, "::ffff:1.2.3.4"));
    assert_false(match(all, "::1"));
    /* a block written IPv4-mapped matches plain IPv4 clients too */
    assert_true(match(mapped, "10.1.200.3"));
    assert_true(match(mapped, "::ffff:10.1.0.1"));
    assert_false(match(mapped, "10.2.0.1"));
    /* etrn_access = any is an empty list: nothing to match (callers treat
     * "no list" as "anyone") */
    assert_null(none->etrn_access);
    assert_false(match(none, "192.0.2.1"));
    /* my_addresses is a list of full-length blocks */
    set4(&ss, "192.0.2.25");
    assert_true(config_net_match(cfg->my_addresses, cfg->nmy_addresses, (struct sockaddr *)&ss));
    set4(&ss, "192.0.2.26");
    assert_false(config_net_match(cfg->my_addresses, cfg->nmy_addresses, (struct sockaddr *)&ss));
    set6(&ss, "2001:db8::25");
    assert_true(config_net_match(cfg->my_addresses, cfg->nmy_addresses, (struct sockaddr *)&ss));
    /* not an address family we know; no address */
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    assert_false(config_net_match(all->etrn_access, all->netrn_access, (struct sockaddr *)&ss));
    assert_false(config_net_match(all->etrn_access, all->netrn_access, NULL));
    config_unref(cfg);
}

/* credentials: read with the snapshot; a bad line refuses the configuration
 * at file:line without the secret; ownership follows subdomains = yes. */
static void test_credentials(void **state)
{
    static const char conf[] = "credentials = creds\n"
                               "[domain a.example]\nsubdomains = yes\n"
                               "[domain b.example]\n"
                               "[domain own.a.example]\n";
    struct config *cfg = NULL;
    const struct cred_account *a;
    char err[512] = "";

    (void)state;
    write_tmp("creds",
              "# accounts\n\nsite1:{plain}s3cret:a.example, B.Example.\n"
              "site2:$y$j9T$abcdefgh$0123456789abcdefghijklmnopqrstuvwxyzABCDE:c.example\n");
    assert_int_equal(load_text(conf, &cfg, err, sizeof(err)), 0);
    assert_non_null(cfg->credentials);
    assert_int_equal(credentials_count(cfg->credentials), 2);
    a = credentials_find(cfg->credentials, "site1");
    assert_non_null(a);
    assert_string_equal(a->plain, "s3cret");
    assert_int_equal(a->line, 3);
    assert_int_equal(a->ndomains, 2);
    assert_string_equal(a->domains[1], "b.example");
    assert_null(credentials_find(cfg->credentials, "SITE1"));
    assert_null(credentials_find(cfg->credentials, "nobody"));
    assert_int_equal(credentials_find(cfg->credentials, "site2")->mechs,
                     CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN);
    /* own domains, subdomains where the section takes them, never others */
    assert_true(credentials_owns(cfg, "site1", "a.example"));
    assert_true(credentials_owns(cfg, "site1", "A.EXAMPLE."));
    assert_true(credentials_owns(cfg, "site1", "x.y.a.example"));
    assert_true(credentials_owns(cfg, "site1", "b.example"));
    assert_false(credentials_owns(cfg, "site1", "x.b.example"));   /* no subdomains = yes */
    assert_false(credentials_owns(cfg, "site1", "own.a.example")); /* a section of its own */
    assert_false(credentials_owns(cfg, "site1", "xa.example"));
    assert_false(credentials_owns(cfg, "site1", "c.example"));
    assert_false(credentials_owns(cfg, "site2", "a.example"));
    assert_false(credentials_owns(cfg, "nobody", "a.example"));
    assert_false(credentials_owns(cfg, NULL, "a.example"));
    config_unref(cfg);

    /* a bad line: the configuration is refused, the place named, no secret shown */
    write_tmp("creds", "site1:{plain}s3cret:a.example\nsite3:t0psecret:a.example\n");
    assert_int_not_equal(load_text(conf, &cfg, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "creds:2:"));
    assert_null(strstr(err, "t0psecret"));
    write_tmp("creds", "a:{plain}x:a.example\nb:{plain}y:b.example\na:{plain}z:b.example\n");
    assert_int_not_equal(load_text(conf, &cfg, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "creds:3: account a already defined on line 1"));
    assert_int_not_equal(load_text("credentials = missing\n", &cfg, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "missing"));

    /* without the key: no table, nobody owns anything */
    assert_int_equal(load_text("[domain a.example]\n", &cfg, err, sizeof(err)), 0);
    assert_null(cfg->credentials);
    assert_false(credentials_owns(cfg, "site1", "a.example"));
    config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_include_dir),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_print_contents),
        cmocka_unit_test(test_man_page_lists_every_key),
        cmocka_unit_test(test_quick_start_config),
        cmocka_unit_test(test_ref_unref),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_include_depth),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_tls_ok),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_domain_names),
        cmocka_unit_test(test_find_domain),
        cmocka_unit_test(test_delivery_values),
        cmocka_unit_test(test_inherit_and_routes),
        cmocka_unit_test(test_net_match),
        cmocka_unit_test(test_control_socket),
        cmocka_unit_test(test_credentials),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
