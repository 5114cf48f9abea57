/*
 * test_policy: the relay decision at RCPT (relayd/policy.c) over a
 * configuration loaded from a temporary file, without a daemon: which
 * mailboxes are ours, which routing tricks are refused and with which reason
 * (relayd(8) RELAY POLICY), and that a domain whose recipients list is not
 * loaded yet is deferred (451 4.3.0), never guessed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* By path: a bare "config.h" would find autoconf's config.h. */
#include "../../relayd/config.h"
#include "../../relayd/policy.h"

static const char conf_text[] =
    "listen = 127.0.0.1:2525\n"
    "database = /tmp/test_policy.db\n"
    "[domain example.org]\n"
    "[domain sub.test]\nsubdomains = yes\n"
    "[domain listed.test]\nrecipients = /nonexistent/relayd-test-list\n";

static struct config *cfg;

static int setup(void **state)
{
    char path[] = "/tmp/test_policy.XXXXXX", err[512] = "";
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
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    config_unref(cfg);
    return 0;
}

/* RCPT TO:<path> through the real parser, then the policy: the reply line. */
static int check(const char *path, char *line, size_t linelen, char *norm, size_t normlen)
{
    struct smtp_rcpt_args r;
    const struct cfg_domain *dom = NULL;
    struct policy_reply out;
    char cmd[600];
    int rc;

    snprintf(cmd, sizeof(cmd), "TO:<%s>", path);
    assert_int_equal(smtp_parse_rcpt(cmd, strlen(cmd), &r), SMTP_PARSE_OK);
    norm[0] = '\0';
    rc = policy_check_rcpt(cfg, &r.to, &dom, norm, normlen, &out);
    snprintf(line, linelen, "%d %s %s", out.code, out.enh, out.text);
    assert_true((rc == 0) == (out.code == 250));
    assert_true((rc == 0) == (dom != NULL));
    return rc;
}

static void ours_are_accepted(void **state)
{
    static const struct {
        const char *path, *norm;
    } ok[] = {{"u@example.org", "example.org"},   {"U@EXAMPLE.ORG", "example.org"},
              {"u@example.org.", "example.org"},  {"u@sub.test", "sub.test"},
              {"u@a.b.sub.test", "a.b.sub.test"}, {"\"john smith\"@example.org", "example.org"}};
    char line[256], norm[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(check(ok[i].path, line, sizeof(line), norm, sizeof(norm)), 0);
        assert_string_equal(line, "250 2.1.5 Ok");
        assert_string_equal(norm, ok[i].norm);
    }
}

static void tricks_and_strangers_are_refused(void **state)
{
    static const struct {
        const char *path, *reason;
    } bad[] = {{"u%evil.test@example.org", "percent hack"},
               {"evil.test!u@example.org", "bang path"},
               {"@example.org:u@evil.test", "source route"},
               {"\"u@evil.test\"@example.org", "quoted local part contains @"},
               {"u@[127.0.0.1]", "address literal"},
               {"u@evil.test", "not a relay domain"},
               {"u@x.example.org", "not a relay domain"}, /* no subdomains = yes */
               {"u@notsub.test", "not a relay domain"},
               {"u@org", "not a relay domain"},
               {"postmaster", "no domain"}};
    char line[256], norm[256], want[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(check(bad[i].path, line, sizeof(line), norm, sizeof(norm)), -1);
        snprintf(want, sizeof(want), "550 5.7.1 Relay access denied (%s)", bad[i].reason);
        assert_string_equal(line, want);
    }
}

static void unloaded_recipients_list_defers(void **state)
{
    char line[256], norm[256];

    (void)state;
    assert_int_equal(check("u@listed.test", line, sizeof(line), norm, sizeof(norm)), -1);
    assert_string_equal(line, "451 4.3.0 Recipient list not available, try again later");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ours_are_accepted),
        cmocka_unit_test(tricks_and_strangers_are_refused),
        cmocka_unit_test(unloaded_recipients_list_defers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
