/*
 * test_addr: the relay tricks each on their own (percent hack, bang path,
 * source route, quoted '@', address literal, user@other@dom), hostname
 * normalisation and its limits, and relay-domain matching.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "smtp_parse.h"

/* Parse "TO:<path>" (which must succeed) and judge it. */
static enum addr_verdict judge(const char *path)
{
    char line[600];
    struct smtp_rcpt_args r;
    int rc;

    snprintf(line, sizeof(line), "TO:<%s>", path);
    rc = smtp_parse_rcpt(line, strlen(line), &r);
    if (rc != SMTP_PARSE_OK)
        fail_msg("<%s> should parse, got %d", path, rc);
    return addr_check_relay(&r.to);
}

static char *fill(char *out, char ch, size_t n)
{
    memset(out, ch, n);
    out[n] = '\0';
    return out;
}

static int norm(const char *in, char *out, size_t outlen)
{
    return addr_domain_normalize(in, strlen(in), out, outlen);
}

static void test_plain_ok(void **state)
{
    (void)state;
    assert_int_equal(judge("user@relay.example"), ADDR_OK);
    assert_int_equal(judge("First.Last+tag@Relay.Example"), ADDR_OK);
}

static void test_percent_hack(void **state)
{
    (void)state;
    assert_int_equal(judge("user%other.example@relay.example"), ADDR_PERCENT_HACK);
    assert_int_equal(judge("user%other.example%third.example@relay.example"), ADDR_PERCENT_HACK);
    assert_int_equal(judge("\"user%other.example\"@relay.example"), ADDR_PERCENT_HACK);
    assert_string_equal(addr_verdict_str(ADDR_PERCENT_HACK), "percent hack");
}

static void test_bang_path(void **state)
{
    (void)state;
    assert_int_equal(judge("other.example!user@relay.example"), ADDR_BANG_PATH);
    assert_int_equal(judge("a!b!user@relay.example"), ADDR_BANG_PATH);
    assert_int_equal(judge("\"other!user\"@relay.example"), ADDR_BANG_PATH);
    assert_string_equal(addr_verdict_str(ADDR_BANG_PATH), "bang path");
}

static void test_source_route(void **state)
{
    (void)state;
    assert_int_equal(judge("@relay.example:user@other.example"), ADDR_SOURCE_ROUTE);
    assert_int_equal(judge("@a.example,@b.example:user@relay.example"), ADDR_SOURCE_ROUTE);
    /* the route is what is reported even when the rest is also a trick */
    assert_int_equal(judge("@a.example:user%x@[192.0.2.1]"), ADDR_SOURCE_ROUTE);
    assert_string_equal(addr_verdict_str(ADDR_SOURCE_ROUTE), "source route");
}

static void test_quoted_at(void **state)
{
    char line[80];
    struct smtp_rcpt_args r;

    (void)state;
    assert_int_equal(judge("\"user@other.example\"@relay.example"), ADDR_QUOTED_AT);
    /* quoted '@' is reported before '%' */
    assert_int_equal(judge("\"u%v@other.example\"@relay.example"), ADDR_QUOTED_AT);
    /* quoting by itself is no trick */
    assert_int_equal(judge("\"John Doe\"@relay.example"), ADDR_OK);
    /* user@other@dom does not even parse: a Dot-string cannot hold '@' */
    snprintf(line, sizeof(line), "TO:<user@other.example@relay.example>");
    assert_int_equal(smtp_parse_rcpt(line, strlen(line), &r), SMTP_PARSE_BAD_ADDRESS);
    assert_string_equal(addr_verdict_str(ADDR_QUOTED_AT), "quoted local part contains @");
}

static void test_ip_literal(void **state)
{
    (void)state;
    assert_int_equal(judge("user@[192.0.2.1]"), ADDR_IP_LITERAL);
    assert_int_equal(judge("user@[IPv6:2001:db8::1]"), ADDR_IP_LITERAL);
    assert_int_equal(judge("user%x@[192.0.2.1]"), ADDR_IP_LITERAL);
    assert_int_equal(judge("user@[x-tag:whatever]"), ADDR_IP_LITERAL);
    assert_string_equal(addr_verdict_str(ADDR_IP_LITERAL), "address literal");
}

static void test_no_and_bad_domain(void **state)
{
    char label[80], path[200];

    (void)state;
    assert_int_equal(judge("postmaster"), ADDR_NO_DOMAIN);
    /* the parser allows long labels; the hostname rule does not */
    snprintf(path, sizeof(path), "user@%s.example", fill(label, 'a', 63));
    assert_int_equal(judge(path), ADDR_OK);
    snprintf(path, sizeof(path), "user@%s.example", fill(label, 'a', 64));
    assert_int_equal(judge(path), ADDR_BAD_DOMAIN);
    assert_string_equal(addr_verdict_str(ADDR_OK), "ok");
    assert_true(strlen(addr_verdict_str(ADDR_NO_DOMAIN)) > 0);
    assert_true(strlen(addr_verdict_str(ADDR_BAD_DOMAIN)) > 0);
}

/* Mailboxes built by hand, as other code might: the checks must not rely on the parser. */
static void test_hand_built(void **state)
{
    struct smtp_mailbox mb;

    (void)state;
    memset(&mb, 0, sizeof(mb));
    strcpy(mb.local, "user@other.example"); /* unquoted '@': defensive check */
    strcpy(mb.domain, "relay.example");
    assert_int_equal(addr_check_relay(&mb), ADDR_QUOTED_AT);
    strcpy(mb.local, "user");
    strcpy(mb.domain, "bad_host.example");
    assert_int_equal(addr_check_relay(&mb), ADDR_BAD_DOMAIN);
    strcpy(mb.domain, "[192.0.2.1]"); /* literal flag forgotten */
    assert_int_equal(addr_check_relay(&mb), ADDR_IP_LITERAL);
    strcpy(mb.domain, "");
    assert_int_equal(addr_check_relay(&mb), ADDR_NO_DOMAIN);
    strcpy(mb.domain, "Relay.Example.");
    assert_int_equal(addr_check_relay(&mb), ADDR_OK);
}

static void test_normalize(void **state)
{
    char out[300], in[300], label[80];

    (void)state;
    assert_int_equal(norm("Example.ORG", out, sizeof(out)), 0);
    assert_string_equal(out, "example.org");
    assert_int_equal(norm("example.org.", out, sizeof(out)), 0);
    assert_string_equal(out, "example.org");
    assert_int_equal(norm("a-b.c0.123", out, sizeof(out)), 0);
    assert_string_equal(out, "a-b.c0.123");
    assert_int_equal(norm("localhost", out, sizeof(out)), 0);
    /* exactly one trailing dot goes */
    assert_int_equal(norm("example.org..", out, sizeof(out)), -1);
    assert_string_equal(out, "");
    assert_int_equal(norm(".", out, sizeof(out)), -1);
    assert_int_equal(norm("", out, sizeof(out)), -1);
    assert_int_equal(norm(".example.org", out, sizeof(out)), -1);
    assert_int_equal(norm("a..b", out, sizeof(out)), -1);
    assert_int_equal(norm("-a.example", out, sizeof(out)), -1);
    assert_int_equal(norm("a-.example", out, sizeof(out)), -1);
    assert_int_equal(norm("a.example-", out, sizeof(out)), -1);
    assert_int_equal(norm("a_b.example", out, sizeof(out)), -1);
    assert_int_equal(norm("a b.example", out, sizeof(out)), -1);
    assert_int_equal(norm(" a.example", out, sizeof(out)), -1);
    assert_int_equal(norm("a%b.example", out, sizeof(out)), -1);
    assert_int_equal(norm("a@b.example", out, sizeof(out)), -1);
    assert_int_equal(norm("[192.0.2.1]", out, sizeof(out)), -1);
    assert_int_equal(norm("b\xc3\xa4r.example", out, sizeof(out)), -1);
    assert_int_equal(addr_domain_normalize("a\0b.example", 11, out, sizeof(out)), -1);
    /* only len bytes are read */
    assert_int_equal(addr_domain_normalize("example.org;junk", 11, out, sizeof(out)), 0);
    assert_string_equal(out, "example.org");
    /* labels: 63 yes, 64 no */
    snprintf(in, sizeof(in), "%s.example", fill(label, 'L', 63));
    assert_int_equal(norm(in, out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 63 + 8);
    assert_true(out[0] == 'l');
    snprintf(in, sizeof(in), "%s.example", fill(label, 'L', 64));
    assert_int_equal(norm(in, out, sizeof(out)), -1);
    snprintf(in, sizeof(in), "%s", fill(label, 'a', 64));
    assert_int_equal(norm(in, out, sizeof(out)), -1);
    /* total: 253 yes (254 with the root dot), 254 no */
    memset(in, 'a', 253);
    in[63] = in[127] = in[191] = '.';
    in[253] = '\0';
    assert_int_equal(norm(in, out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 253);
    in[253] = '.';
    in[254] = '\0';
    assert_int_equal(norm(in, out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 253);
    in[253] = 'a';
    assert_int_equal(norm(in, out, sizeof(out)), -1);
    /* the output buffer: exactly enough, one short */
    assert_int_equal(norm("Example.org.", out, 12), 0);
    assert_string_equal(out, "example.org");
    assert_int_equal(norm("example.org", out, 11), -1);
    assert_int_equal(norm("example.org", out, 0), -1);
}

static void test_matches(void **state)
{
    char big[300];

    (void)state;
    assert_true(addr_domain_matches("example.org", "example.org", 0));
    assert_true(addr_domain_matches("Example.ORG", "example.org", 0));
    assert_true(addr_domain_matches("example.org", "EXAMPLE.org", 1));
    assert_true(addr_domain_matches("example.org.", "example.org", 0));
    assert_true(addr_domain_matches("example.org", "example.org.", 0));
    assert_false(addr_domain_matches("a.example.org", "example.org", 0));
    assert_true(addr_domain_matches("a.example.org", "example.org", 1));
    assert_true(addr_domain_matches("A.B.Example.Org.", "example.org", 1));
    assert_false(addr_domain_matches("badexample.org", "example.org", 1));
    assert_false(addr_domain_matches("badexample.org", "example.org", 0));
    assert_false(addr_domain_matches("example.org", "a.example.org", 1));
    assert_false(addr_domain_matches("example.org.evil", "example.org", 1));
    assert_false(addr_domain_matches("example.com", "example.org", 1));
    assert_false(addr_domain_matches("org", "example.org", 1));
    /* invalid names match nothing, not even themselves */
    assert_false(addr_domain_matches(".example.org", "example.org", 1));
    assert_false(addr_domain_matches("a..example.org", "example.org", 1));
    assert_false(addr_domain_matches("bad_x.example.org", "example.org", 1));
    assert_false(addr_domain_matches("bad_x", "bad_x", 0));
    assert_false(addr_domain_matches("", "", 0));
    assert_false(addr_domain_matches("example.org", "", 1));
    assert_false(addr_domain_matches(NULL, "example.org", 1));
    memset(big, 'a', 299);
    big[299] = '\0';
    assert_false(addr_domain_matches(big, big, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_ok),          cmocka_unit_test(test_percent_hack),
        cmocka_unit_test(test_bang_path),         cmocka_unit_test(test_source_route),
        cmocka_unit_test(test_quoted_at),         cmocka_unit_test(test_ip_literal),
        cmocka_unit_test(test_no_and_bad_domain), cmocka_unit_test(test_hand_built),
        cmocka_unit_test(test_normalize),         cmocka_unit_test(test_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
