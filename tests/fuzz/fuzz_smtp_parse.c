/*
 * fuzz_smtp_parse: libFuzzer target for lib/smtp_parse and lib/addr (the
 * DATA decoder has its own, fuzz_smtp_data.c). Every input is fed to every
 * parser whole, line by line as an SMTP session, and with its first byte
 * choosing one parser; invariants that must hold for any input (bounds, NUL
 * termination, format/re-parse round trip) abort().
 * No I/O and no state between inputs; replay.c drives it without libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs longer than this are cut: SMTP lines are bounded long before this. */
#define FUZZ_MAX_INPUT 8192
/* Lines looked at per input when it is split on '\n'. */
#define FUZZ_MAX_LINES 64

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* `p` lies in [base, base + len] and p + n does too. */
static int within(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && p <= base + len && n <= (size_t)(base + len - p);
}

static int status_valid(int rc)
{
    return rc >= SMTP_PARSE_OK && rc <= SMTP_PARSE_DUP_PARAM;
}

/*
 * A mailbox the parser accepted: its strings are terminated and within the
 * limits, addr_check_relay gives a verdict, and formatting then parsing the
 * result as a forward-path gives the same local part, domain and literal
 * flag (quoting and the source route may go; they do not change the mailbox).
 */
static void check_mailbox(const struct smtp_mailbox *mb)
{
    char out[SMTP_LOCAL_MAX * 4 + SMTP_DOMAIN_MAX + 8], line[sizeof(out) + 8];
    struct smtp_rcpt_args again;
    enum addr_verdict v;
    size_t llen, dlen;
    int n, rc;

    llen = strnlen(mb->local, sizeof(mb->local));
    dlen = strnlen(mb->domain, sizeof(mb->domain));
    CHECK(llen <= SMTP_LOCAL_MAX && dlen <= SMTP_DOMAIN_MAX);
    v = addr_check_relay(mb);
    CHECK(v >= ADDR_OK && v <= ADDR_BAD_DOMAIN);
    CHECK(addr_verdict_str(v) != NULL);
    CHECK((v == ADDR_NO_DOMAIN) == (dlen == 0) || v == ADDR_SOURCE_ROUTE);
    CHECK(!mb->literal || v == ADDR_IP_LITERAL || v == ADDR_SOURCE_ROUTE);

    n = smtp_mailbox_format(mb, out, sizeof(out));
    CHECK(n > 0 && (size_t)n < sizeof(out) && strlen(out) == (size_t)n);
    /* one byte short must fail cleanly, never write past outlen */
    CHECK(smtp_mailbox_format(mb, line, (size_t)n) == -1);

    memcpy(line, "TO:<", 4);
    memcpy(line + 4, out, (size_t)n);
    line[4 + n] = '>';
    rc = smtp_parse_rcpt(line, (size_t)n + 5, &again);
    CHECK(rc == SMTP_PARSE_OK);
    CHECK(strcmp(again.to.local, mb->local) == 0);
    CHECK(strcmp(again.to.domain, mb->domain) == 0);
    CHECK(again.to.literal == mb->literal);
    CHECK(!again.to.source_route);
}

static void run_mail(const char *s, size_t n)
{
    struct smtp_mail_args m;
    int rc = smtp_parse_mail(s, n, &m);

    CHECK(status_valid(rc) && rc != SMTP_PARSE_EMPTY && rc != SMTP_PARSE_BAD_CHAR);
    CHECK(strnlen(m.envid, sizeof(m.envid)) <= SMTP_ENVID_MAX);
    CHECK(m.param == NULL || within(m.param, m.param_len, s, n));
    CHECK((m.param != NULL) == (rc == SMTP_PARSE_BAD_PARAM || rc == SMTP_PARSE_UNKNOWN_PARAM ||
                                rc == SMTP_PARSE_DUP_PARAM));
    if (rc != SMTP_PARSE_OK) {
        CHECK(!m.null_sender && m.from.local[0] == '\0' && m.from.domain[0] == '\0');
        return;
    }
    if (m.null_sender)
        CHECK(m.from.local[0] == '\0' && m.from.domain[0] == '\0');
    else
        check_mailbox(&m.from);
}

static void run_rcpt(const char *s, size_t n)
{
    struct smtp_rcpt_args r;
    int rc = smtp_parse_rcpt(s, n, &r);

    CHECK(status_valid(rc) && rc != SMTP_PARSE_EMPTY && rc != SMTP_PARSE_BAD_CHAR);
    CHECK(strnlen(r.orcpt, sizeof(r.orcpt)) <= SMTP_ORCPT_MAX);
    CHECK(r.param == NULL || within(r.param, r.param_len, s, n));
    if (rc != SMTP_PARSE_OK)
        return;
    /* NEVER excludes the others (RFC 3461 §4.1) */
    CHECK(!(r.notify & SMTP_NOTIFY_NEVER) || r.notify == SMTP_NOTIFY_NEVER);
    check_mailbox(&r.to);
}

static void run_etrn(const char *s, size_t n)
{
    struct smtp_etrn_arg e;
    char again[SMTP_DOMAIN_MAX + 1];
    int rc = smtp_parse_etrn(s, n, &e);

    CHECK(rc == SMTP_PARSE_OK || rc == SMTP_PARSE_SYNTAX);
    if (rc != SMTP_PARSE_OK)
        return;
    CHECK(e.name[0] != '\0' && strnlen(e.name, sizeof(e.name)) <= 253);
    if (e.kind != SMTP_ETRN_QUEUE) {
        /* a normalised domain is a fixed point of normalisation */
        CHECK(addr_domain_normalize(e.name, strlen(e.name), again, sizeof(again)) == 0);
        CHECK(strcmp(again, e.name) == 0);
        CHECK(addr_domain_matches(e.name, e.name, 0) == 1);
    }
}

static void run_reply(const char *s, size_t n)
{
    struct smtp_reply_line r;
    int rc = smtp_parse_reply_line(s, n, &r);

    CHECK(rc == SMTP_PARSE_OK || rc == SMTP_PARSE_SYNTAX);
    if (rc == SMTP_PARSE_OK) {
        CHECK(r.code >= 200 && r.code <= 599);
        CHECK(within(r.text, r.text_len, s, n));
    }
}

static void run_domain(const char *s, size_t n)
{
    char out[SMTP_DOMAIN_MAX + 1], again[SMTP_DOMAIN_MAX + 1];
    size_t k;

    if (addr_domain_normalize(s, n, out, sizeof(out)) != 0) {
        CHECK(out[0] == '\0');
        return;
    }
    CHECK(strlen(out) <= 253);
    for (k = 0; out[k] != '\0'; k++)
        CHECK(!(out[k] >= 'A' && out[k] <= 'Z'));
    CHECK(addr_domain_normalize(out, strlen(out), again, sizeof(again)) == 0);
    CHECK(strcmp(out, again) == 0);
}

/* The two halves (split at the first ',') as domain and pattern. */
static void run_matches(const char *s, size_t n)
{
    char d[300], p[300];
    const char *comma = memchr(s, ',', n);
    size_t dl, pl;
    int plain, sub;

    if (comma == NULL)
        return;
    dl = (size_t)(comma - s);
    pl = n - dl - 1;
    if (dl >= sizeof(d) || pl >= sizeof(p))
        return;
    memcpy(d, s, dl);
    d[dl] = '\0';
    memcpy(p, comma + 1, pl);
    p[pl] = '\0';
    plain = addr_domain_matches(d, p, 0);
    sub = addr_domain_matches(d, p, 1);
    CHECK(plain == 0 || plain == 1);
    CHECK(sub == 0 || sub == 1);
    CHECK(!plain || sub);                          /* an exact match is also a subdomain match */
    CHECK(!plain || addr_domain_matches(p, d, 0)); /* equality is symmetric */
}

/* One SMTP command line: split it, then hand the argument to its parser. */
static void run_atrn(const char *s, size_t n)
{
    struct smtp_atrn_arg a;
    char again[SMTP_DOMAIN_MAX + 1];
    int rc = smtp_parse_atrn(s, n, &a);

    CHECK(rc == SMTP_PARSE_OK || rc == SMTP_PARSE_SYNTAX || rc == SMTP_PARSE_TOO_LONG);
    if (rc != SMTP_PARSE_OK) {
        CHECK(a.n == 0);
        return;
    }
    CHECK(a.n <= SMTP_ATRN_MAX);
    for (size_t i = 0; i < a.n; i++) {
        /* each name normalised, none twice */
        CHECK(addr_domain_normalize(a.names[i], strlen(a.names[i]), again, sizeof(again)) == 0);
        CHECK(strcmp(again, a.names[i]) == 0);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(a.names[i], a.names[j]) != 0);
    }
}

static void run_command(const char *s, size_t n)
{
    struct smtp_cmd c;
    int rc = smtp_cmd_parse(s, n, &c);

    CHECK(rc == SMTP_PARSE_OK || rc == SMTP_PARSE_EMPTY || rc == SMTP_PARSE_BAD_CHAR);
    CHECK(smtp_parse_strerror(rc) != NULL);
    if (rc != SMTP_PARSE_OK)
        return;
    CHECK(c.verb >= SMTP_CMD_UNKNOWN && c.verb < SMTP_CMD_COUNT);
    CHECK(smtp_verb_name(c.verb) != NULL);
    CHECK(within(c.arg, c.arg_len, s, n));
    if (c.arg_len > 0)
        CHECK(c.arg[0] != ' ' && c.arg[c.arg_len - 1] != ' ');
    switch (c.verb) {
    case SMTP_CMD_MAIL:
        run_mail(c.arg, c.arg_len);
        break;
    case SMTP_CMD_RCPT:
        run_rcpt(c.arg, c.arg_len);
        break;
    case SMTP_CMD_ETRN:
        run_etrn(c.arg, c.arg_len);
        break;
    case SMTP_CMD_ATRN:
        run_atrn(c.arg, c.arg_len);
        break;
    default:
        break;
    }
}

/* Everything on one buffer; copies are exact-size so ASan sees any over-read. */
static void run_all(const char *s, size_t n)
{
    run_command(s, n);
    run_mail(s, n);
    run_rcpt(s, n);
    run_etrn(s, n);
    run_atrn(s, n);
    run_reply(s, n);
    run_domain(s, n);
    run_matches(s, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t start, end, lines = 0;

    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    run_all(s, size);

    /* As a session: one command per line, CR before LF dropped. */
    for (start = 0; start < size && lines < FUZZ_MAX_LINES; start = end + 1, lines++) {
        const char *nl = memchr(s + start, '\n', size - start);
        size_t len;
        end = nl ? (size_t)(nl - s) : size;
        len = end - start;
        if (len > 0 && s[start + len - 1] == '\r')
            len--;
        if (nl == NULL && start == 0)
            break; /* one line: already done above */
        run_command(s + start, len);
        run_reply(s + start, len);
    }

    /* The first byte picks one parser for the rest. */
    if (size > 0) {
        const char *rest = s + 1;
        size_t n = size - 1;
        switch (data[0] % 6) {
        case 0:
            run_mail(rest, n);
            break;
        case 1:
            run_rcpt(rest, n);
            break;
        case 2:
            run_etrn(rest, n);
            break;
        case 3:
            run_reply(rest, n);
            break;
        case 4:
            run_domain(rest, n);
            break;
        default:
            run_matches(rest, n);
            break;
        }
    }
    return 0;
}
