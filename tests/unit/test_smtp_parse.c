/*
 * test_smtp_parse: command splitting, MAIL/RCPT paths (every odd form of
 * RFC 5321 §4.1.2), ESMTP parameters, ETRN arguments, reply lines and the
 * mailbox formatter, with the bad input that a relay sees every day.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp_parse.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static int cmd(const char *s, struct smtp_cmd *c)
{
    return smtp_cmd_parse(s, strlen(s), c);
}

static int mail(const char *s, struct smtp_mail_args *m)
{
    return smtp_parse_mail(s, strlen(s), m);
}

static int rcpt(const char *s, struct smtp_rcpt_args *r)
{
    return smtp_parse_rcpt(s, strlen(s), r);
}

static int etrn(const char *s, struct smtp_etrn_arg *e)
{
    return smtp_parse_etrn(s, strlen(s), e);
}

static int atrn(const char *s, struct smtp_atrn_arg *a)
{
    return smtp_parse_atrn(s, strlen(s), a);
}

static int reply(const char *s, struct smtp_reply_line *r)
{
    return smtp_parse_reply_line(s, strlen(s), r);
}

/* RCPT status of "TO:<path>". */
static int rcpt_path(const char *path)
{
    char buf[1200];
    struct smtp_rcpt_args r;

    snprintf(buf, sizeof(buf), "TO:<%s>", path);
    return rcpt(buf, &r);
}

/* n copies of ch into out (NUL-terminated). */
static char *fill(char *out, char ch, size_t n)
{
    memset(out, ch, n);
    out[n] = '\0';
    return out;
}

/* A syntactically valid domain of exactly n octets: labels of 'a', a dot every 50. */
static char *make_domain(char *out, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        out[i] = (i % 50 == 49 && i != n - 1) ? '.' : 'a';
    out[n] = '\0';
    return out;
}

#define assert_arg(c, s)                                                                           \
    do {                                                                                           \
        assert_int_equal((c).arg_len, strlen(s));                                                  \
        assert_memory_equal((c).arg, (s), strlen(s));                                              \
    } while (0)

/* ---- command lines ---------------------------------------------------------------------- */

static void test_verbs_case(void **state)
{
    struct smtp_cmd c;
    char line[32];
    int v;
    size_t i;

    (void)state;
    assert_int_equal(cmd("MAIL FROM:<a@b>", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_MAIL);
    assert_arg(c, "FROM:<a@b>");
    assert_int_equal(cmd("mail from:<a@b>", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_MAIL);
    assert_arg(c, "from:<a@b>");
    assert_int_equal(cmd("QuIt", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_QUIT);
    assert_int_equal(c.arg_len, 0);
    /* every verb, in lower case, round-trips through its name */
    for (v = SMTP_CMD_UNKNOWN + 1; v < SMTP_CMD_COUNT; v++) {
        const char *name = smtp_verb_name((enum smtp_verb)v);
        for (i = 0; name[i] != '\0' && i < sizeof(line) - 1; i++)
            line[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
        line[i] = '\0';
        assert_int_equal(cmd(line, &c), SMTP_PARSE_OK);
        assert_int_equal(c.verb, v);
    }
    assert_string_equal(smtp_verb_name(SMTP_CMD_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_name(SMTP_CMD_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name(SMTP_CMD_COUNT), "UNKNOWN");
}

static void test_verbs_unknown(void **state)
{
    struct smtp_cmd c;

    (void)state;
    assert_int_equal(cmd("MAILX FROM:<a@b>", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    assert_int_equal(cmd("MAI", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    assert_int_equal(cmd("MAIL:FROM:<a@b>", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    assert_int_equal(cmd("STARTTLSX", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    assert_int_equal(cmd("GET / HTTP/1.0", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    /* the verb must be followed by SP: no leading space, no HTAB separator */
    assert_int_equal(cmd(" MAIL FROM:<a@b>", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    assert_int_equal(cmd("MAIL\tFROM:<a@b>", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
    /* 8-bit verbs are simply unknown */
    assert_int_equal(cmd("\xc3\x89HLO x", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_UNKNOWN);
}

static void test_verbs_bad_chars(void **state)
{
    struct smtp_cmd c;
    static const char nul[] = "MAIL FROM:<a@b>\0x";
    static const char nul_verb[] = "MA\0L FROM:<a@b>";

    (void)state;
    assert_int_equal(smtp_cmd_parse(nul, sizeof(nul) - 1, &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(smtp_cmd_parse(nul_verb, sizeof(nul_verb) - 1, &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(smtp_cmd_parse("\0", 1, &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(cmd("MAIL FROM:<a@b>\rRCPT TO:<c@d>", &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(cmd("DATA\n.", &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(cmd("NOOP \x01", &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(cmd("NOOP \x1b[0m", &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(cmd("NOOP \x7f", &c), SMTP_PARSE_BAD_CHAR);
    assert_int_equal(cmd("\x1f", &c), SMTP_PARSE_BAD_CHAR);
    /* HTAB is allowed, and 8-bit bytes pass at this layer */
    assert_int_equal(cmd("NOOP a\tb", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_NOOP);
    assert_arg(c, "a\tb");
    assert_int_equal(cmd("VRFY j\xc3\xbcrgen", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_VRFY);
    assert_arg(c, "j\xc3\xbcrgen");
}

static void test_verbs_empty_and_spaces(void **state)
{
    struct smtp_cmd c;

    (void)state;
    assert_int_equal(smtp_cmd_parse("", 0, &c), SMTP_PARSE_EMPTY);
    assert_int_equal(cmd("   ", &c), SMTP_PARSE_EMPTY);
    assert_int_equal(cmd(" \t ", &c), SMTP_PARSE_EMPTY);
    /* trailing spaces go, whatever the verb */
    assert_int_equal(cmd("QUIT   ", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_QUIT);
    assert_int_equal(c.arg_len, 0);
    assert_int_equal(cmd("RCPT TO:<a@b>  \t ", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_RCPT);
    assert_arg(c, "TO:<a@b>");
    /* several separating spaces are skipped */
    assert_int_equal(cmd("EHLO    client.example", &c), SMTP_PARSE_OK);
    assert_int_equal(c.verb, SMTP_CMD_EHLO);
    assert_arg(c, "client.example");
    assert_int_equal(cmd("HELP me please", &c), SMTP_PARSE_OK);
    assert_arg(c, "me please");
}

/* ---- MAIL / RCPT paths ------------------------------------------------------------------ */

static void test_mail_good(void **state)
{
    struct smtp_mail_args m;

    (void)state;
    assert_int_equal(mail("FROM:<user@example.org>", &m), SMTP_PARSE_OK);
    assert_false(m.null_sender);
    assert_string_equal(m.from.local, "user");
    assert_string_equal(m.from.domain, "example.org");
    assert_false(m.from.quoted);
    assert_false(m.from.source_route);
    assert_false(m.from.literal);
    assert_false(m.has_size);
    assert_int_equal(m.body, SMTP_BODY_UNSET);
    assert_int_equal(m.ret, SMTP_RET_UNSET);
    assert_string_equal(m.envid, "");
    assert_null(m.param);
    /* case of FROM: is free; the domain is kept as written */
    assert_int_equal(mail("from:<First.Last@Example.ORG>", &m), SMTP_PARSE_OK);
    assert_string_equal(m.from.local, "First.Last");
    assert_string_equal(m.from.domain, "Example.ORG");
    /* one space after the colon is tolerated */
    assert_int_equal(mail("FROM: <a@b.example>", &m), SMTP_PARSE_OK);
    assert_string_equal(m.from.domain, "b.example");
    /* every atext special in a Dot-string; digits-only labels are LDH too */
    assert_int_equal(mail("FROM:<!#$%&'*+-/=?^_`{|}~.x@1.2-3.example>", &m), SMTP_PARSE_OK);
    assert_string_equal(m.from.local, "!#$%&'*+-/=?^_`{|}~.x");
    assert_string_equal(m.from.domain, "1.2-3.example");
    assert_int_equal(mail("FROM:<a@localhost>", &m), SMTP_PARSE_OK);
    /* the relay tricks parse; lib/addr judges them */
    assert_int_equal(mail("FROM:<user%other@dom.example>", &m), SMTP_PARSE_OK);
    assert_string_equal(m.from.local, "user%other");
    assert_int_equal(mail("FROM:<host!user@dom.example>", &m), SMTP_PARSE_OK);
    assert_string_equal(m.from.local, "host!user");
}

static void test_mail_bad_syntax(void **state)
{
    struct smtp_mail_args m;

    (void)state;
    assert_int_equal(smtp_parse_mail("", 0, &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM<a@b>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM :<a@b>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("TO:<a@b>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROMAGE:<a@b>", &m), SMTP_PARSE_SYNTAX);
    /* missing angle brackets: strict */
    assert_int_equal(mail("FROM:a@b", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM: a@b", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:  <a@b>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:\t<a@b>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:<a@b", &m), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(mail("FROM:<", &m), SMTP_PARSE_BAD_ADDRESS);
    /* trailing garbage after '>' that is not " param" */
    assert_int_equal(mail("FROM:<a@b>x", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:<a@b>>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:<a@b>SIZE=1", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:<a@b>\tSIZE=1", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:<a@b> <c@d>", &m), SMTP_PARSE_SYNTAX);
    assert_int_equal(mail("FROM:<>x", &m), SMTP_PARSE_SYNTAX);
    /* a failure leaves nothing half-filled */
    assert_string_equal(m.from.local, "");
    assert_false(m.null_sender);
}

static void test_mail_null_sender(void **state)
{
    struct smtp_mail_args m;
    struct smtp_rcpt_args r;

    (void)state;
    assert_int_equal(mail("FROM:<>", &m), SMTP_PARSE_OK);
    assert_true(m.null_sender);
    assert_string_equal(m.from.local, "");
    assert_string_equal(m.from.domain, "");
    assert_int_equal(mail("FROM: <> SIZE=100 RET=HDRS", &m), SMTP_PARSE_OK);
    assert_true(m.null_sender);
    assert_true(m.has_size);
    assert_int_equal(m.size, 100);
    assert_int_equal(m.ret, SMTP_RET_HDRS);
    /* a recipient is never null */
    assert_int_equal(rcpt("TO:<>", &r), SMTP_PARSE_BAD_ADDRESS);
    /* "<@a:>" is not a null path */
    assert_int_equal(mail("FROM:<@a.example:>", &m), SMTP_PARSE_BAD_ADDRESS);
}

static void test_rcpt_good_and_postmaster(void **state)
{
    struct smtp_rcpt_args r;
    struct smtp_mail_args m;

    (void)state;
    assert_int_equal(rcpt("TO:<user@example.org>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "user");
    assert_string_equal(r.to.domain, "example.org");
    assert_int_equal(r.notify, 0);
    assert_string_equal(r.orcpt, "");
    assert_int_equal(rcpt("to: <user@example.org>", &r), SMTP_PARSE_OK);
    assert_int_equal(rcpt("TO:<postmaster>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "postmaster");
    assert_string_equal(r.to.domain, "");
    assert_int_equal(rcpt("TO:<PostMaster> NOTIFY=NEVER", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "PostMaster");
    assert_string_equal(r.to.domain, "");
    assert_int_equal(r.notify, SMTP_NOTIFY_NEVER);
    assert_int_equal(rcpt("TO:<postmaster@example.org>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.domain, "example.org");
    /* only the bare Dot-string "postmaster" goes without a domain */
    assert_int_equal(rcpt("TO:<user>", &r), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt("TO:<postmaster2>", &r), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt("TO:<\"postmaster\">", &r), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt("TO:<@a.example:postmaster>", &r), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(mail("FROM:<postmaster>", &m), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt("FROM:<a@b>", &r), SMTP_PARSE_SYNTAX);
    assert_int_equal(rcpt("TO:a@b", &r), SMTP_PARSE_SYNTAX);
    assert_int_equal(rcpt("TO:<a@b> x", &r), SMTP_PARSE_UNKNOWN_PARAM);
}

static void test_path_bad_addresses(void **state)
{
    static const char *const bad[] = {
        "user@other@dom.example", /* a Dot-string cannot hold '@' */
        "@dom.example",
        "user@",
        "user",
        "@",
        ".user@dom.example",
        "user.@dom.example",
        "us..er@dom.example",
        "us er@dom.example",
        "us(er)@dom.example",
        "us,er@dom.example",
        "us[er@dom.example",
        "us\\er@dom.example",
        "user@.dom.example",
        "user@dom.example..",
        "user@dom..example",
        "user@-dom.example",
        "user@dom-.example",
        "user@dom_x.example",
        "user@dom example",
        "user@dom.example ",
        "user@d\xc3\xb6m.example",
        "\xc3\xbcser@dom.example",
        "user@dom.example;x",
        "\"unterminated@dom.example",
        "\"a\"b@dom.example",
        "\"a\"\"b\"@dom.example",
        "\"a\tb\"@dom.example",
        "\"a\x01\"@dom.example",
        "\"a\xc3\xa9\"@dom.example",
        "\"a\\\xc3\"@dom.example",
        "\"a\\",
        "\"a\"",
        "user@[192.0.2.1",
        "user@[]",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = rcpt_path(bad[i]);
        if (rc != SMTP_PARSE_BAD_ADDRESS)
            fail_msg("path <%s>: got %d, want BAD_ADDRESS", bad[i], rc);
    }
}

/* One trailing dot (an absolute name) is tolerated; the addr layer drops it. */
static void test_path_trailing_dot(void **state)
{
    struct smtp_rcpt_args a;
    const char *arg = "TO:<user@dom.example.>";

    (void)state;
    assert_int_equal(smtp_parse_rcpt(arg, strlen(arg), &a), SMTP_PARSE_OK);
    assert_string_equal(a.to.domain, "dom.example.");
    arg = "TO:<user@dom.example..>";
    assert_int_equal(smtp_parse_rcpt(arg, strlen(arg), &a), SMTP_PARSE_BAD_ADDRESS);
    arg = "TO:<user@.>";
    assert_int_equal(smtp_parse_rcpt(arg, strlen(arg), &a), SMTP_PARSE_BAD_ADDRESS);
}

static void test_path_quoted(void **state)
{
    struct smtp_rcpt_args r;

    (void)state;
    assert_int_equal(rcpt("TO:<\"a b\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "a b");
    assert_true(r.to.quoted);
    assert_int_equal(rcpt("TO:<\"a\\\"b\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "a\"b");
    assert_int_equal(rcpt("TO:<\"a\\\\b\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "a\\b");
    assert_int_equal(rcpt("TO:<\"\\a\\ \\~\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "a ~");
    assert_int_equal(rcpt("TO:<\"user@other\"@dom.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "user@other");
    assert_string_equal(r.to.domain, "dom.example");
    assert_true(r.to.quoted);
    assert_int_equal(rcpt("TO:<\"<>,;:[]()\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "<>,;:[]()");
    assert_int_equal(rcpt("TO:<\"\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "");
    assert_true(r.to.quoted);
    assert_int_equal(rcpt("TO:<\"plain\"@x.example>", &r), SMTP_PARSE_OK);
    assert_string_equal(r.to.local, "plain");
    assert_true(r.to.quoted);
}

static void test_path_source_route(void **state)
{
    struct smtp_rcpt_args r;
    struct smtp_mail_args m;

    (void)state;
    assert_int_equal(rcpt("TO:<@a.example,@b.example:user@dom.example>", &r), SMTP_PARSE_OK);
    assert_true(r.to.source_route);
    assert_string_equal(r.to.local, "user");
    assert_string_equal(r.to.domain, "dom.example");
    assert_int_equal(mail("FROM:<@a.example:\"q u\"@dom.example>", &m), SMTP_PARSE_OK);
    assert_true(m.from.source_route);
    assert_true(m.from.quoted);
    assert_string_equal(m.from.local, "q u");
    assert_int_equal(rcpt_path("@a.example,b.example:user@dom.example"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@a.example;user@dom.example"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@:user@dom.example"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@a.example,:user@dom.example"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@a.example,@b.example:"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@a.example:@b.example:u@d.example"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@[192.0.2.1]:user@dom.example"), SMTP_PARSE_BAD_ADDRESS);
    assert_int_equal(rcpt_path("@a..example:user@dom.example"), SMTP_PARSE_BAD_ADDRESS);
}

static void test_path_literals(void **state)
{
    static const char *const good[] = {
        "[192.0.2.1]",
        "[0.0.0.0]",
        "[255.255.255.255]",
        "[IPv6:2001:db8::1]",
        "[ipv6:::1]",
        "[IPv6:::]",
        "[IPv6:1:2:3:4:5:6:7:8]",
        "[IPv6:1:2:3:4:5:6::]",
        "[IPv6:::1:2:3:4:5:6]",
        "[IPv6:ffff:FFFF::abcd]",
        "[IPv6:::ffff:192.0.2.1]",
        "[IPv6:1:2:3:4:5:6:192.0.2.1]",
        "[IPv6:1:2:3:4::192.0.2.1]",
        "[x-tag:any~content!here]",
    };
    static const char *const bad[] = {
        "[256.0.0.1]",
        "[1.2.3]",
        "[1.2.3.4.5]",
        "[0001.2.3.4]",
        "[1.2.3.]",
        "[1..2.3]",
        "[a.b.c.d]",
        "[IPv6:1:2:3:4:5:6:7]",
        "[IPv6:1:2:3:4:5:6:7:8:9]",
        "[IPv6:1::2::3]",
        "[IPv6:1:2:3:4:5:6:7::]",
        "[IPv6:12345::]",
        "[IPv6:g::]",
        "[IPv6:1:]",
        "[IPv6::1]",
        "[IPv6:]",
        "[IPv6:1:2:3:4:5:6:7:192.0.2.1]",
        "[IPv6:1:2:3:4:5::192.0.2.1]",
        "[IPv6:::1.2.3.4:5]",
        "[IPv6:::256.0.0.1]",
        "[tag:]",
        "[:abc]",
        "[tag-:x]",
        "[ta_g:x]",
        "[tag:a b]",
        "[tag:a\\b]",
        "[tag:a[b]",
        "[192.0.2.1]x",
        "[[192.0.2.1]]",
        "[192.0.2.1].example",
    };
    char path[300];
    struct smtp_rcpt_args r;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(path, sizeof(path), "TO:<user@%s>", good[i]);
        if (rcpt(path, &r) != SMTP_PARSE_OK)
            fail_msg("literal %s should parse", good[i]);
        assert_true(r.to.literal);
        assert_string_equal(r.to.domain, good[i]);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(path, sizeof(path), "user@%s", bad[i]);
        if (rcpt_path(path) != SMTP_PARSE_BAD_ADDRESS)
            fail_msg("literal %s should not parse", bad[i]);
    }
}

static void test_length_limits(void **state)
{
    char local[80], dom[300], path[700];
    struct smtp_rcpt_args r;

    (void)state;
    /* local part: 64 octets as written (RFC 5321 §4.5.3.1.1) */
    snprintf(path, sizeof(path), "%s@x.example", fill(local, 'l', 64));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_OK);
    snprintf(path, sizeof(path), "%s@x.example", fill(local, 'l', 65));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    snprintf(path, sizeof(path), "%s@x.example", fill(local, 'l', 79));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    /* quoted: the quotes count, and so do quoted-pair backslashes */
    snprintf(path, sizeof(path), "\"%s\"@x.example", fill(local, 'q', 62));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_OK);
    snprintf(path, sizeof(path), "\"%s\"@x.example", fill(local, 'q', 63));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    snprintf(path, sizeof(path), "\"\\\\%s\"@x.example", fill(local, 'q', 60));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_OK);
    snprintf(path, sizeof(path), "\"\\\\%s\"@x.example", fill(local, 'q', 61));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    /* whole path: 256 with its brackets (RFC 5321 §4.5.3.1.3) */
    snprintf(path, sizeof(path), "%s@%s", fill(local, 'l', 64), make_domain(dom, 189));
    assert_int_equal(strlen(path) + 2, 256);
    assert_int_equal(rcpt_path(path), SMTP_PARSE_OK);
    snprintf(path, sizeof(path), "TO:<%s@%s>", local, dom);
    assert_int_equal(rcpt(path, &r), SMTP_PARSE_OK);
    assert_int_equal(strlen(r.to.domain), 189);
    snprintf(path, sizeof(path), "%s@%s", local, make_domain(dom, 190));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    /* a source route counts towards the path */
    snprintf(path, sizeof(path), "@r.example:%s@%s", local, make_domain(dom, 178));
    assert_int_equal(strlen(path) + 2, 256);
    assert_int_equal(rcpt_path(path), SMTP_PARSE_OK);
    snprintf(path, sizeof(path), "@r.example:%s@%s", local, make_domain(dom, 179));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    /* domain over 255 octets */
    snprintf(path, sizeof(path), "a@%s", make_domain(dom, 256));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
    snprintf(path, sizeof(path), "a@%s", make_domain(dom, 255));
    assert_int_equal(rcpt_path(path), SMTP_PARSE_TOO_LONG);
}

/* ---- ESMTP parameters ------------------------------------------------------------------- */

static void test_mail_params_good(void **state)
{
    struct smtp_mail_args m;

    (void)state;
    assert_int_equal(mail("FROM:<a@b.example> SIZE=12345", &m), SMTP_PARSE_OK);
    assert_true(m.has_size);
    assert_int_equal(m.size, 12345);
    assert_int_equal(mail("FROM:<a@b.example> size=0", &m), SMTP_PARSE_OK);
    assert_true(m.has_size);
    assert_int_equal(m.size, 0);
    assert_int_equal(mail("FROM:<a@b.example> SIZE=18446744073709551615", &m), SMTP_PARSE_OK);
    assert_true(m.size == UINT64_MAX);
    assert_int_equal(mail("FROM:<a@b.example> SIZE=00000000000000000001", &m), SMTP_PARSE_OK);
    assert_int_equal(m.size, 1);
    assert_int_equal(mail("FROM:<a@b.example> BODY=7bit", &m), SMTP_PARSE_OK);
    assert_int_equal(m.body, SMTP_BODY_7BIT);
    assert_int_equal(mail("FROM:<a@b.example> body=8BITMIME", &m), SMTP_PARSE_OK);
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    assert_int_equal(mail("FROM:<a@b.example> RET=full", &m), SMTP_PARSE_OK);
    assert_int_equal(m.ret, SMTP_RET_FULL);
    assert_int_equal(mail("FROM:<a@b.example> RET=HDRS", &m), SMTP_PARSE_OK);
    assert_int_equal(m.ret, SMTP_RET_HDRS);
    assert_int_equal(mail("FROM:<a@b.example> ENVID=QQ314159+2Bx", &m), SMTP_PARSE_OK);
    assert_string_equal(m.envid, "QQ314159+2Bx");
    assert_false(m.has_auth);
    /* RFC 4954 §5: a server offering AUTH takes AUTH=<> and AUTH=mailbox */
    assert_int_equal(mail("FROM:<a@b.example> AUTH=<>", &m), SMTP_PARSE_OK);
    assert_true(m.has_auth);
    assert_int_equal(mail("FROM:<a@b.example> auth=e+3Dmc2@example.com SIZE=5", &m), SMTP_PARSE_OK);
    assert_true(m.has_auth);
    assert_int_equal(m.size, 5);
    /* all together, extra spaces between and after */
    assert_int_equal(mail("FROM:<a@b.example> SIZE=10  BODY=8BITMIME RET=HDRS ENVID=e1 ", &m),
                     SMTP_PARSE_OK);
    assert_int_equal(m.size, 10);
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    assert_int_equal(m.ret, SMTP_RET_HDRS);
    assert_string_equal(m.envid, "e1");
    assert_string_equal(m.from.local, "a");
    assert_null(m.param);
    assert_int_equal(m.param_len, 0);
}

/* MAIL status for "FROM:<a@b.example> " + params; the offending token must be `tok`. */
static void check_mail_param(const char *params, int want, const char *tok)
{
    char line[700];
    struct smtp_mail_args m;
    int rc;

    snprintf(line, sizeof(line), "FROM:<a@b.example> %s", params);
    rc = mail(line, &m);
    if (rc != want)
        fail_msg("MAIL params \"%s\": got %d, want %d", params, rc, want);
    if (tok != NULL) {
        assert_non_null(m.param);
        assert_int_equal(m.param_len, strlen(tok));
        assert_memory_equal(m.param, tok, strlen(tok));
    }
}

static void test_mail_params_bad(void **state)
{
    char envid[120], big[140];

    (void)state;
    check_mail_param("SIZE=18446744073709551616", SMTP_PARSE_BAD_PARAM,
                     "SIZE=18446744073709551616");
    check_mail_param("SIZE=99999999999999999999", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("SIZE=000000000000000000001", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("SIZE=", SMTP_PARSE_BAD_PARAM, "SIZE=");
    check_mail_param("SIZE", SMTP_PARSE_BAD_PARAM, "SIZE");
    check_mail_param("SIZE=-1", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("SIZE=+1", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("SIZE=1k", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("SIZE=1=1", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("BODY=BINARYMIME", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("BODY=", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("BODY=8BIT", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("RET=NONE", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("RET", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("ENVID=a+2b", SMTP_PARSE_BAD_PARAM, NULL); /* hex must be upper case */
    check_mail_param("ENVID=a+2", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("ENVID=a+", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("ENVID=a\xc3\xa9", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("ENVID=", SMTP_PARSE_BAD_PARAM, NULL);
    snprintf(big, sizeof(big), "ENVID=%s", fill(envid, 'e', 100));
    check_mail_param(big, SMTP_PARSE_OK, NULL);
    snprintf(big, sizeof(big), "ENVID=%s", fill(envid, 'e', 101));
    check_mail_param(big, SMTP_PARSE_BAD_PARAM, NULL);
    /* duplicates, even with the same value */
    check_mail_param("SIZE=1 SIZE=1", SMTP_PARSE_DUP_PARAM, "SIZE=1");
    check_mail_param("BODY=7BIT body=8BITMIME", SMTP_PARSE_DUP_PARAM, "body=8BITMIME");
    check_mail_param("RET=FULL RET=HDRS", SMTP_PARSE_DUP_PARAM, NULL);
    check_mail_param("ENVID=a ENVID=b", SMTP_PARSE_DUP_PARAM, NULL);
    /* RFC 4954 §5 AUTH=: xtext, once */
    check_mail_param("AUTH=<> AUTH=<>", SMTP_PARSE_DUP_PARAM, NULL);
    check_mail_param("AUTH=", SMTP_PARSE_BAD_PARAM, "AUTH=");
    check_mail_param("AUTH=a+2", SMTP_PARSE_BAD_PARAM, NULL);
    check_mail_param("AUTH=a\xc3\xa9", SMTP_PARSE_BAD_PARAM, NULL);
    /* what we do not offer */
    check_mail_param("SMTPUTF8", SMTP_PARSE_UNKNOWN_PARAM, "SMTPUTF8");
    check_mail_param("SIZE=10 XFOO=bar", SMTP_PARSE_UNKNOWN_PARAM, "XFOO=bar");
    check_mail_param("NOTIFY=NEVER", SMTP_PARSE_UNKNOWN_PARAM, NULL);
    check_mail_param("ORCPT=rfc822;a@b", SMTP_PARSE_UNKNOWN_PARAM, NULL);
    check_mail_param("ENVID=a b", SMTP_PARSE_UNKNOWN_PARAM, "b");
    /* the first problem wins */
    check_mail_param("FOO SIZE=x", SMTP_PARSE_UNKNOWN_PARAM, "FOO");
    check_mail_param("SIZE=x FOO", SMTP_PARSE_BAD_PARAM, "SIZE=x");
    /* not an esmtp-keyword at all */
    check_mail_param("=1", SMTP_PARSE_SYNTAX, NULL);
    check_mail_param("-SIZE=1", SMTP_PARSE_SYNTAX, NULL);
    check_mail_param("SI_ZE=1", SMTP_PARSE_SYNTAX, NULL);
    check_mail_param("SIZE\t=1", SMTP_PARSE_SYNTAX, NULL);
}

/* RCPT status for "TO:<a@b.example> " + params. */
static int rcpt_params(const char *params, struct smtp_rcpt_args *r)
{
    char line[900];

    snprintf(line, sizeof(line), "TO:<a@b.example> %s", params);
    return rcpt(line, r);
}

static void test_rcpt_params(void **state)
{
    struct smtp_rcpt_args r;
    char x[600], big[700];

    (void)state;
    assert_int_equal(rcpt_params("NOTIFY=NEVER", &r), SMTP_PARSE_OK);
    assert_int_equal(r.notify, SMTP_NOTIFY_NEVER);
    assert_int_equal(rcpt_params("NOTIFY=SUCCESS,FAILURE,DELAY", &r), SMTP_PARSE_OK);
    assert_int_equal(r.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    assert_int_equal(rcpt_params("notify=delay,Failure", &r), SMTP_PARSE_OK);
    assert_int_equal(r.notify, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    assert_int_equal(rcpt_params("ORCPT=rfc822;user+40example.org", &r), SMTP_PARSE_OK);
    assert_string_equal(r.orcpt, "rfc822;user+40example.org");
    assert_int_equal(rcpt_params("NOTIFY=FAILURE ORCPT=rfc822;a@b.example", &r), SMTP_PARSE_OK);
    assert_int_equal(r.notify, SMTP_NOTIFY_FAILURE);
    assert_string_equal(r.orcpt, "rfc822;a@b.example");
    assert_null(r.param);

    assert_int_equal(rcpt_params("NOTIFY=NEVER,SUCCESS", &r), SMTP_PARSE_BAD_PARAM);
    assert_memory_equal(r.param, "NOTIFY=NEVER,SUCCESS", r.param_len);
    assert_int_equal(rcpt_params("NOTIFY=SUCCESS,NEVER", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=SUCCESS,SUCCESS", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=SUCCESS,", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=,SUCCESS", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=SUCCESS,,DELAY", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=ALWAYS", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("NOTIFY=NEVER NOTIFY=NEVER", &r), SMTP_PARSE_DUP_PARAM);
    assert_int_equal(r.notify, 0); /* nothing half-filled on failure */
    assert_int_equal(rcpt_params("ORCPT=rfc822", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("ORCPT=;a@b", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("ORCPT=rfc822;", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("ORCPT=rfc822;a+zz", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("ORCPT=rfc[822;a", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("ORCPT=rfc822;a=b", &r), SMTP_PARSE_BAD_PARAM);
    assert_int_equal(rcpt_params("ORCPT=rfc822;a ORCPT=rfc822;b", &r), SMTP_PARSE_DUP_PARAM);
    /* ORCPT at most 500 octets */
    fill(x, 'x', 500 - 7);
    snprintf(big, sizeof(big), "ORCPT=rfc822;%s", x);
    assert_int_equal(rcpt_params(big, &r), SMTP_PARSE_OK);
    assert_int_equal(strlen(r.orcpt), 500);
    fill(x, 'x', 500 - 6);
    snprintf(big, sizeof(big), "ORCPT=rfc822;%s", x);
    assert_int_equal(rcpt_params(big, &r), SMTP_PARSE_BAD_PARAM);
    /* MAIL parameters and what we do not offer are unknown on RCPT */
    assert_int_equal(rcpt_params("SIZE=1", &r), SMTP_PARSE_UNKNOWN_PARAM);
    assert_int_equal(rcpt_params("BODY=8BITMIME", &r), SMTP_PARSE_UNKNOWN_PARAM);
    assert_int_equal(rcpt_params("XRCPTFORWARD=x", &r), SMTP_PARSE_UNKNOWN_PARAM);
    assert_memory_equal(r.param, "XRCPTFORWARD=x", r.param_len);
    assert_int_equal(rcpt_params("=x", &r), SMTP_PARSE_SYNTAX);
}

/* ---- ETRN ------------------------------------------------------------------------------- */

static void test_etrn_good(void **state)
{
    struct smtp_etrn_arg e;
    char name[80], line[300];

    (void)state;
    assert_int_equal(etrn("example.org", &e), SMTP_PARSE_OK);
    assert_int_equal(e.kind, SMTP_ETRN_DOMAIN);
    assert_string_equal(e.name, "example.org");
    assert_int_equal(etrn("Example.ORG.", &e), SMTP_PARSE_OK);
    assert_int_equal(e.kind, SMTP_ETRN_DOMAIN);
    assert_string_equal(e.name, "example.org");
    assert_int_equal(etrn("@Sub.Example.org", &e), SMTP_PARSE_OK);
    assert_int_equal(e.kind, SMTP_ETRN_SUBDOMAINS);
    assert_string_equal(e.name, "sub.example.org");
    assert_int_equal(etrn("#Queue_1.x-y", &e), SMTP_PARSE_OK);
    assert_int_equal(e.kind, SMTP_ETRN_QUEUE);
    assert_string_equal(e.name, "Queue_1.x-y");
    snprintf(line, sizeof(line), "#%s", fill(name, 'q', 64));
    assert_int_equal(etrn(line, &e), SMTP_PARSE_OK);
    assert_string_equal(e.name, name);
    snprintf(line, sizeof(line), "%s.example", fill(name, 'l', 63));
    assert_int_equal(etrn(line, &e), SMTP_PARSE_OK);
    assert_int_equal(etrn("localhost", &e), SMTP_PARSE_OK);
}

static void test_etrn_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "@",
        "#",
        "@@example.org",
        "#a b",
        "#q%",
        "#q;drop",
        "#\"q\"",
        "exa mple.org",
        "\"example.org\"",
        "a%b.org",
        "a;b.org",
        "a_b.org",
        "-a.org",
        "a-.org",
        "a..org",
        ".",
        "..",
        "example.org..",
        ".example.org",
        "[192.0.2.1]",
        "@#q",
        "#@q",
        "ex\xc3\xa4mple.org",
        "user@example.org",
        "example.org extra",
        "'example.org'",
    };
    struct smtp_etrn_arg e;
    char name[80], line[300];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (etrn(bad[i], &e) != SMTP_PARSE_SYNTAX)
            fail_msg("ETRN \"%s\" should be a syntax error", bad[i]);
    assert_int_equal(smtp_parse_etrn("exa\0mple.org", 12, &e), SMTP_PARSE_SYNTAX);
    snprintf(line, sizeof(line), "#%s", fill(name, 'q', 65));
    assert_int_equal(etrn(line, &e), SMTP_PARSE_SYNTAX);
    snprintf(line, sizeof(line), "%s.example", fill(name, 'l', 64));
    assert_int_equal(etrn(line, &e), SMTP_PARSE_SYNTAX);
    assert_string_equal(e.name, "");
}

/* ---- replies ---------------------------------------------------------------------------- */

static void test_reply_lines(void **state)
{
    static const char *const bad[] = {
        "",     "2",      "25",      "abc",     "199 x",   "600 x",  "099 x",          "2500",
        "250x", "25a ok", " 250 ok", "250\tok", "-250 ok", "250_ok", "\xb2\x35\x30 x",
    };
    struct smtp_reply_line r;
    size_t i;

    (void)state;
    assert_int_equal(reply("250-PIPELINING", &r), SMTP_PARSE_OK);
    assert_int_equal(r.code, 250);
    assert_false(r.last);
    assert_int_equal(r.text_len, 10);
    assert_memory_equal(r.text, "PIPELINING", 10);
    assert_int_equal(reply("250 ok", &r), SMTP_PARSE_OK);
    assert_true(r.last);
    assert_memory_equal(r.text, "ok", 2);
    assert_int_equal(r.text_len, 2);
    assert_int_equal(reply("250", &r), SMTP_PARSE_OK);
    assert_int_equal(r.code, 250);
    assert_true(r.last);
    assert_int_equal(r.text_len, 0);
    assert_int_equal(reply("354-", &r), SMTP_PARSE_OK);
    assert_false(r.last);
    assert_int_equal(r.text_len, 0);
    assert_int_equal(reply("550 5.7.1 <a@b>: Relay access denied", &r), SMTP_PARSE_OK);
    assert_int_equal(r.code, 550);
    assert_int_equal(reply("200 x", &r), SMTP_PARSE_OK);
    assert_int_equal(reply("599 x", &r), SMTP_PARSE_OK);
    assert_int_equal(r.code, 599);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (reply(bad[i], &r) != SMTP_PARSE_SYNTAX)
            fail_msg("reply \"%s\" should be a syntax error", bad[i]);
}

/* ---- formatting ------------------------------------------------------------------------- */

/* Parse RCPT "TO:<in>", format it, expect `want`, and re-parse to the same mailbox. */
static void check_round_trip(const char *in, const char *want)
{
    char line[600], out[600];
    struct smtp_rcpt_args r, r2;
    int n;

    snprintf(line, sizeof(line), "TO:<%s>", in);
    if (rcpt(line, &r) != SMTP_PARSE_OK)
        fail_msg("<%s> should parse", in);
    n = smtp_mailbox_format(&r.to, out, sizeof(out));
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
    /* exactly enough room, and one byte short */
    assert_int_equal(smtp_mailbox_format(&r.to, out, (size_t)n + 1), n);
    assert_string_equal(out, want);
    assert_int_equal(smtp_mailbox_format(&r.to, out, (size_t)n), -1);
    snprintf(line, sizeof(line), "TO:<%s>", want);
    assert_int_equal(rcpt(line, &r2), SMTP_PARSE_OK);
    assert_string_equal(r2.to.local, r.to.local);
    assert_string_equal(r2.to.domain, r.to.domain);
    assert_int_equal(r2.to.literal, r.to.literal);
}

static void test_mailbox_format(void **state)
{
    struct smtp_mailbox mb;
    char out[300];

    (void)state;
    check_round_trip("user@example.org", "user@example.org");
    check_round_trip("First.Last@Example.ORG", "First.Last@Example.ORG");
    check_round_trip("\"a b\"@x.example", "\"a b\"@x.example");
    check_round_trip("\"a\\\"b\"@x.example", "\"a\\\"b\"@x.example");
    check_round_trip("\"a\\\\b\"@x.example", "\"a\\\\b\"@x.example");
    check_round_trip("\"\\a\\b\\c\"@x.example", "abc@x.example");
    check_round_trip("\"plain\"@x.example", "plain@x.example");
    check_round_trip("\"user@other\"@dom.example", "\"user@other\"@dom.example");
    check_round_trip("\"\"@x.example", "\"\"@x.example");
    check_round_trip("\".a\"@x.example", "\".a\"@x.example");
    check_round_trip("\"a.\"@x.example", "\"a.\"@x.example");
    check_round_trip("\"a..b\"@x.example", "\"a..b\"@x.example");
    check_round_trip("postmaster", "postmaster");
    check_round_trip("@r.example,@s.example:u@d.example", "u@d.example");
    check_round_trip("u@[192.0.2.1]", "u@[192.0.2.1]");
    check_round_trip("u@[IPv6:2001:db8::1]", "u@[IPv6:2001:db8::1]");
    check_round_trip("user%other@dom.example", "user%other@dom.example");

    /* a hand-built mailbox: quoted alone when there is no domain */
    memset(&mb, 0, sizeof(mb));
    strcpy(mb.local, "a b");
    assert_int_equal(smtp_mailbox_format(&mb, out, sizeof(out)), 5);
    assert_string_equal(out, "\"a b\"");
    /* bytes no path can carry are refused, not written */
    strcpy(mb.local, "a\r\nRCPT TO:<x@y>");
    strcpy(mb.domain, "x.example");
    assert_int_equal(smtp_mailbox_format(&mb, out, sizeof(out)), -1);
    strcpy(mb.local, "a");
    strcpy(mb.domain, "x.example\r\n");
    assert_int_equal(smtp_mailbox_format(&mb, out, sizeof(out)), -1);
    strcpy(mb.domain, "x.example");
    assert_int_equal(smtp_mailbox_format(&mb, out, 0), -1);
    assert_int_equal(smtp_mailbox_format(&mb, out, 1), -1);
}

static void test_strerror(void **state)
{
    int s, t;

    (void)state;
    for (s = SMTP_PARSE_OK; s <= SMTP_PARSE_DUP_PARAM; s++) {
        assert_true(strlen(smtp_parse_strerror(s)) > 0);
        for (t = SMTP_PARSE_OK; t < s; t++)
            assert_string_not_equal(smtp_parse_strerror(s), smtp_parse_strerror(t));
    }
    assert_non_null(smtp_parse_strerror(-1));
    assert_non_null(smtp_parse_strerror(1000));
}

/* RFC 2645 §4.3: ATRN [domain *("," domain)] */
static void test_atrn(void **state)
{
    static const char *const bad[] = {
        ",",      "a.org,", ",a.org",      "a.org,,b.org", "a.org b.org", "a..org",
        "@a.org", "#q",     "a.org;b.org", "[192.0.2.1]",  "-a.org",      "user@a.org",
    };
    struct smtp_atrn_arg a;
    char line[SMTP_ATRN_MAX * 8 + 16];
    size_t i, n = 0;

    (void)state;
    assert_int_equal(atrn("", &a), SMTP_PARSE_OK);
    assert_int_equal(a.n, 0);
    assert_int_equal(atrn("Example.ORG.", &a), SMTP_PARSE_OK);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.names[0], "example.org");
    assert_int_equal(atrn("a.example, b.example ,c.example", &a), SMTP_PARSE_OK);
    assert_int_equal(a.n, 3);
    assert_string_equal(a.names[1], "b.example");
    assert_string_equal(a.names[2], "c.example");
    /* the same domain twice is pulled once */
    assert_int_equal(atrn("a.example,A.example.", &a), SMTP_PARSE_OK);
    assert_int_equal(a.n, 1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (atrn(bad[i], &a) != SMTP_PARSE_SYNTAX)
            fail_msg("ATRN \"%s\" should be a syntax error", bad[i]);
        assert_int_equal(a.n, 0);
    }
    for (i = 0; i < SMTP_ATRN_MAX; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%sd%zu.org", i ? "," : "", i);
    assert_int_equal(atrn(line, &a), SMTP_PARSE_OK);
    assert_int_equal(a.n, SMTP_ATRN_MAX);
    snprintf(line + n, sizeof(line) - n, ",one.more");
    assert_int_equal(atrn(line, &a), SMTP_PARSE_TOO_LONG);
    assert_int_equal(a.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs_case),         cmocka_unit_test(test_verbs_unknown),
        cmocka_unit_test(test_verbs_bad_chars),    cmocka_unit_test(test_verbs_empty_and_spaces),
        cmocka_unit_test(test_mail_good),          cmocka_unit_test(test_mail_bad_syntax),
        cmocka_unit_test(test_mail_null_sender),   cmocka_unit_test(test_rcpt_good_and_postmaster),
        cmocka_unit_test(test_path_bad_addresses), cmocka_unit_test(test_path_trailing_dot),
        cmocka_unit_test(test_path_quoted),        cmocka_unit_test(test_path_source_route),
        cmocka_unit_test(test_path_literals),      cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_mail_params_good),   cmocka_unit_test(test_mail_params_bad),
        cmocka_unit_test(test_rcpt_params),        cmocka_unit_test(test_etrn_good),
        cmocka_unit_test(test_etrn_bad),           cmocka_unit_test(test_atrn),
        cmocka_unit_test(test_reply_lines),        cmocka_unit_test(test_mailbox_format),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
