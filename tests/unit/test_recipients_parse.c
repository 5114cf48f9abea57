/*
 * test_recipients_parse: the lines of a recipients file (mailboxes, whole
 * domains, comments, blanks) and what each bad line is refused for, and the
 * RCPT-side key matching the file's key whatever the case or quoting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "recipients_parse.h"

static enum recipients_line parse(const char *line, char *key)
{
    const char *why = NULL;
    enum recipients_line r;

    r = recipients_parse_line(line, strlen(line), key, RECIPIENTS_KEY_MAX, &why);
    if (r == RECIPIENTS_LINE_ERROR)
        assert_non_null(why);
    else
        assert_null(why);
    return r;
}

static void expect_key(const char *line, enum recipients_line kind, const char *want)
{
    char key[RECIPIENTS_KEY_MAX];

    assert_int_equal(parse(line, key), kind);
    assert_string_equal(key, want);
    assert_true(strlen(key) <= strlen(line));
}

static void expect_error(const char *line, const char *why_part)
{
    char key[RECIPIENTS_KEY_MAX];
    const char *why = NULL;

    assert_int_equal(recipients_parse_line(line, strlen(line), key, sizeof(key), &why),
                     RECIPIENTS_LINE_ERROR);
    assert_non_null(why);
    if (strstr(why, why_part) == NULL)
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", line, why, why_part);
}

static void test_mailbox(void **state)
{
    (void)state;
    expect_key("bob@example.org", RECIPIENTS_LINE_MAILBOX, "bob@example.org");
    expect_key("Bob.Smith+tag@Example.ORG", RECIPIENTS_LINE_MAILBOX, "bob.smith+tag@example.org");
    expect_key("  alice@example.org\t", RECIPIENTS_LINE_MAILBOX, "alice@example.org");
    expect_key("alice@example.org.\r", RECIPIENTS_LINE_MAILBOX, "alice@example.org");
    expect_key("carol@example.org   # the boss", RECIPIENTS_LINE_MAILBOX, "carol@example.org");
    /* a quoted local part means its content, as in RCPT TO */
    expect_key("\"Dave\"@example.org", RECIPIENTS_LINE_MAILBOX, "dave@example.org");
    expect_key("\"a b\"@example.org # spaces", RECIPIENTS_LINE_MAILBOX, "a b@example.org");
    expect_key("\"x\\\"y\"@example.org", RECIPIENTS_LINE_MAILBOX, "x\"y@example.org");
    /* '#' inside an address is a character, not a comment */
    expect_key("a#b@example.org", RECIPIENTS_LINE_MAILBOX, "a#b@example.org");
}

static void test_domain(void **state)
{
    (void)state;
    expect_key("@example.org", RECIPIENTS_LINE_DOMAIN, "@example.org");
    expect_key(" @Sub.Example.Org. # all of them", RECIPIENTS_LINE_DOMAIN, "@sub.example.org");
}

static void test_blank(void **state)
{
    char key[RECIPIENTS_KEY_MAX];

    (void)state;
    assert_int_equal(parse("", key), RECIPIENTS_LINE_BLANK);
    assert_int_equal(parse("   \t ", key), RECIPIENTS_LINE_BLANK);
    assert_int_equal(parse("\r", key), RECIPIENTS_LINE_BLANK);
    assert_int_equal(parse("# comment bob@example.org", key), RECIPIENTS_LINE_BLANK);
    assert_int_equal(parse("   #indented", key), RECIPIENTS_LINE_BLANK);
}

static void test_errors(void **state)
{
    char longline[RECIPIENTS_LINE_MAX + 10];
    char longlocal[100];

    (void)state;
    expect_error("bob", "not an address");
    expect_error("bob@", "not an address");
    expect_error("@", "no domain");
    expect_error("@exa mple.org", "unexpected text");
    expect_error("@-bad-.org", "not a valid domain");
    expect_error("bob@example.org alice@example.org", "unexpected text");
    expect_error("bob@example.org OK", "unexpected text");
    expect_error("<bob@example.org>", "not an address");
    expect_error("bob@[192.0.2.1]", "literal");
    expect_error("\"\"@example.org", "empty local part");
    expect_error("@a,@b:bob@example.org", "not a valid domain");
    expect_error("bob@exa_mple.org", "not an address");
    expect_error("b\x01ob@example.org", "not an address");
    expect_error("\"unterminated@example.org", "not an address");
    memset(longlocal, 'a', 65);
    strcpy(longlocal + 65, "@example.org");
    expect_error(longlocal, "too long");
    memset(longline, 'a', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    expect_error(longline, "line too long");
    {
        /* a NUL inside the line (recipients_parse_line takes a length) */
        static const char nul[] = "bob\0x@example.org";
        char key[RECIPIENTS_KEY_MAX];
        const char *why = NULL;
        assert_int_equal(recipients_parse_line(nul, sizeof(nul) - 1, key, sizeof(key), &why),
                         RECIPIENTS_LINE_ERROR);
    }
}

static void test_key_small_buffer(void **state)
{
    char key[8];
    const char *why = NULL;

    (void)state;
    assert_int_equal(recipients_parse_line("bob@example.org", 15, key, sizeof(key), &why),
                     RECIPIENTS_LINE_ERROR);
    assert_int_equal(recipients_key("bob", "example.org", key, sizeof(key)), -1);
}

static void test_rcpt_key_matches_file(void **state)
{
    char key[RECIPIENTS_KEY_MAX], fkey[RECIPIENTS_KEY_MAX];

    (void)state;
    assert_int_equal(recipients_key("BoB", "example.org", key, sizeof(key)), 15);
    assert_string_equal(key, "bob@example.org");
    assert_int_equal(parse("bob@EXAMPLE.org", fkey), RECIPIENTS_LINE_MAILBOX);
    assert_string_equal(key, fkey);
    assert_int_equal(recipients_key("", "example.org", key, sizeof(key)), 12);
    assert_string_equal(key, "@example.org");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailbox),
        cmocka_unit_test(test_domain),
        cmocka_unit_test(test_blank),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_key_small_buffer),
        cmocka_unit_test(test_rcpt_key_matches_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
