/*
 * test_dsn: lib/dsn.c. Every DSN built here is taken apart again the way a
 * mail reader would (header, boundary, parts, the delivery-status blocks)
 * and checked field by field, plus the line rules (CRLF only, nothing over
 * 998 octets) and dsn_status_from_reply.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "smtp_parse.h"
#include "dsn.h"

#define T_NOW     1700000000 /* Tue, 14 Nov 2023 22:13:20 +0000 */
#define T_ARRIVAL 1699990000 /* Tue, 14 Nov 2023 19:26:40 +0000 */
#define T_RETRY   1700400000
#define T_LAST    1699999000

static const char original[] = "Received: from c.example.net by relay.example.net;\r\n"
                               "\tTue, 14 Nov 2023 19:26:40 +0000\r\n"
                               "From: <a@example.net>\r\n"
                               "To: <u@example.org>\r\n"
                               "Subject: hello\r\n"
                               "\r\n"
                               "the body\r\n"
                               "second line\r\n";
#define ORIG_HDR_LEN (sizeof original - 1 - strlen("\r\nthe body\r\nsecond line\r\n"))

/* --- a small MIME reader -------------------------------------------------- */

struct part {
    const char *hdr; /* header section, lines with CRLF, without the empty line */
    size_t hlen;
    const char *body;
    size_t blen;
};

struct msg {
    char *text; /* NUL-terminated copy of the DSN */
    size_t len;
    struct part top;
    char boundary[128];
    struct part parts[8];
    int nparts;
};

/* Split at the first empty line. */
static void split(const char *p, size_t len, struct part *out)
{
    const char *e;

    if (len >= 2 && p[0] == '\r' && p[1] == '\n') {
        out->hdr = p;
        out->hlen = 0;
        out->body = p + 2;
        out->blen = len - 2;
        return;
    }
    e = memmem(p, len, "\r\n\r\n", 4);
    assert_non_null(e);
    out->hdr = p;
    out->hlen = (size_t)(e - p) + 2;
    out->body = e + 4;
    out->blen = len - out->hlen - 2;
}

/* The unfolded value of field name in a header section (malloc'd, NULL if
 * absent); *count is how many times it occurs. */
static char *hget_n(const char *hdr, size_t hlen, const char *name, int *count)
{
    const char *p = hdr, *end = hdr + hlen, *eol, *v, *stop;
    size_t nlen = strlen(name);
    char *out = NULL;
    size_t o;

    *count = 0;
    while (p < end) {
        /* the field runs to a CRLF not followed by WSP */
        stop = p;
        for (;;) {
            eol = memmem(stop, (size_t)(end - stop), "\r\n", 2);
            assert_non_null(eol);
            if (eol + 2 < end && (eol[2] == ' ' || eol[2] == '\t'))
                stop = eol + 2;
            else
                break;
        }
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            (*count)++;
            if (!out) {
                v = p + nlen + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                out = malloc((size_t)(eol - v) + 1);
                assert_non_null(out);
                for (o = 0; v < eol; v++) {
                    if (v[0] == '\r' && v[1] == '\n') {
                        v++;
                        continue;
                    }
                    out[o++] = *v;
                }
                out[o] = '\0';
            }
        }
        p = eol + 2;
    }
    return out;
}

static char *hget(const char *hdr, size_t hlen, const char *name)
{
    int n;
    char *v = hget_n(hdr, hlen, name, &n);

    if (n > 1)
        fail_msg("field %s occurs %d times", name, n);
    return v;
}

static void assert_field(const struct part *p, const char *name, const char *want)
{
    char *v = hget(p->hdr, p->hlen, name);

    if (!v)
        fail_msg("field %s missing", name);
    if (strcmp(v, want) != 0)
        fail_msg("field %s is \"%s\", want \"%s\"", name, v, want);
    free(v);
}

static void assert_no_field(const struct part *p, const char *name)
{
    char *v = hget(p->hdr, p->hlen, name);

    if (v)
        fail_msg("field %s present (\"%s\") but should not be", name, v);
}

/* Line rules for the whole message: CR only before LF, LF only after CR,
 * no line longer than 998 octets (RFC 5322 §2.1.1). */
static void assert_lines(const char *t, size_t len)
{
    size_t col = 0;

    for (size_t i = 0; i < len; i++) {
        if (t[i] == '\r') {
            if (i + 1 >= len || t[i + 1] != '\n')
                fail_msg("bare CR at %zu", i);
        } else if (t[i] == '\n') {
            if (i == 0 || t[i - 1] != '\r')
                fail_msg("bare LF at %zu", i);
            col = 0;
            continue;
        } else {
            col++;
        }
        if (col > 998)
            fail_msg("line longer than 998 octets ending near %zu", i);
    }
    assert_true(len >= 2 && t[len - 2] == '\r' && t[len - 1] == '\n');
}

/* Take a DSN apart: header, boundary, parts. */
static void parse(const struct buf *b, struct msg *m)
{
    char *ct, *bp, *q, delim[140];
    const char *p, *end, *next;
    size_t dlen;

    memset(m, 0, sizeof *m);
    m->text = malloc(b->len + 1);
    assert_non_null(m->text);
    memcpy(m->text, b->data, b->len);
    m->text[b->len] = '\0';
    m->len = b->len;
    assert_lines(m->text, m->len);
    split(m->text, m->len, &m->top);

    ct = hget(m->top.hdr, m->top.hlen, "Content-Type");
    assert_non_null(ct);
    assert_true(strncasecmp(ct, "multipart/report;", 17) == 0);
    assert_non_null(strstr(ct, "report-type=delivery-status"));
    bp = strstr(ct, "boundary=\"");
    assert_non_null(bp);
    bp += 10;
    q = strchr(bp, '"');
    assert_non_null(q);
    assert_true(q - bp > 0 && q - bp <= 70);
    memcpy(m->boundary, bp, (size_t)(q - bp));
    m->boundary[q - bp] = '\0';
    free(ct);

    /* The boundary occurs only in the 3 delimiters and the close delimiter. */
    {
        int n = 0;

        for (p = m->top.body; (p = strstr(p, m->boundary)); p++)
            n++;
        assert_int_equal(n, 4);
    }
    snprintf(delim, sizeof delim, "\r\n--%s", m->boundary);
    dlen = strlen(delim);
    end = m->top.body + m->top.blen;
    p = strstr(m->top.body, delim);
    assert_non_null(p);
    for (;;) {
        p += dlen;
        if (p[0] == '-' && p[1] == '-') {
            assert_string_equal(p, "--\r\n");
            break;
        }
        assert_true(p[0] == '\r' && p[1] == '\n');
        p += 2;
        next = strstr(p, delim);
        assert_non_null(next);
        assert_true(m->nparts < 8);
        split(p, (size_t)(next - p), &m->parts[m->nparts++]);
        p = next;
    }
    assert_true(p < end);
}

static void msg_free(struct msg *m)
{
    free(m->text);
}

/* The blank-line separated blocks of a message/delivery-status body. */
static int status_blocks(const struct part *p, struct part *blocks, int max)
{
    const char *s = p->body, *end = p->body + p->blen, *e;
    int n = 0;

    while (s < end && n < max) {
        e = memmem(s, (size_t)(end - s), "\r\n\r\n", 4);
        blocks[n].hdr = s;
        blocks[n].hlen = e ? (size_t)(e - s) + 2 : (size_t)(end - s);
        n++;
        s = e ? e + 4 : end;
    }
    return n;
}

/* --- fixtures -------------------------------------------------------------- */

static void info_init(struct dsn_info *i, enum dsn_kind kind)
{
    memset(i, 0, sizeof *i);
    i->kind = kind;
    i->reporting_mta = "relay.example.net";
    i->queue_id = "0HOE03R8RPC000";
    i->envid = NULL;
    i->sender = "a@example.net";
    i->arrival = T_ARRIVAL;
    i->now = T_NOW;
    i->retry_until = T_RETRY;
    i->return_full = 1;
    i->original = original;
    i->original_len = sizeof original - 1;
    i->max_original = 1024 * 1024;
}

static void build(const struct dsn_info *info, const struct dsn_rcpt *r, size_t n, struct msg *m)
{
    struct buf b;

    buf_init(&b, 64 * 1024 * 1024);
    assert_int_equal(dsn_build(info, r, n, &b), 0);
    parse(&b, m);
    buf_free(&b);
}

/* --- tests ------------------------------------------------------------------ */

static void test_failure(void **state)
{
    struct dsn_info info;
    struct dsn_rcpt r[2] = {
        {"u@example.org", "rfc822;u@example.org", "5.1.1", "mx.example.org",
         "550 5.1.1 <u@example.org>: no such user", T_LAST},
        {"v@example.org", NULL, "5.4.7", NULL, "delivery time expired", 0},
    };
    struct part blk[8];
    struct msg m;

    (void)state;
    info_init(&info, DSN_FAILURE);
    info.envid = "ENV+2B1";
    build(&info, r, 2, &m);

    assert_field(&m.top, "From", "Mail Delivery System <MAILER-DAEMON@relay.example.net>");
    assert_field(&m.top, "To", "<a@example.net>");
    assert_field(&m.top, "Subject", "Undelivered Mail Returned to Sender");
    assert_field(&m.top, "Date", "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_field(&m.top, "Message-ID", "<0HOE03R8RPC000.1700000000@relay.example.net>");
    assert_field(&m.top, "Auto-Submitted", "auto-replied");
    assert_field(&m.top, "MIME-Version", "1.0");
    assert_no_field(&m.top, "Received");
    assert_int_equal(m.nparts, 3);

    /* Part 1: for people. */
    assert_field(&m.parts[0], "Content-Type", "text/plain; charset=us-ascii");
    {
        char *t = strndup(m.parts[0].body, m.parts[0].blen);

        assert_non_null(strstr(t, "<u@example.org>: host mx.example.org said: 550 5.1.1"));
        assert_non_null(strstr(t, "<v@example.org>: delivery time expired"));
        assert_non_null(strstr(t, "relay.example.net"));
        assert_null(strstr(t, "WARNING"));
        free(t);
    }

    /* Part 2: the report. */
    assert_field(&m.parts[1], "Content-Type", "message/delivery-status");
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 3);
    assert_field(&blk[0], "Reporting-MTA", "dns; relay.example.net");
    assert_field(&blk[0], "Original-Envelope-Id", "ENV+1"); /* xtext decoded */
    assert_field(&blk[0], "Arrival-Date", "Tue, 14 Nov 2023 19:26:40 +0000");
    assert_no_field(&blk[0], "Final-Recipient");

    assert_field(&blk[1], "Original-Recipient", "rfc822;u@example.org");
    assert_field(&blk[1], "Final-Recipient", "rfc822; u@example.org");
    assert_field(&blk[1], "Action", "failed");
    assert_field(&blk[1], "Status", "5.1.1");
    assert_field(&blk[1], "Remote-MTA", "dns; mx.example.org");
    assert_field(&blk[1], "Diagnostic-Code", "smtp; 550 5.1.1 <u@example.org>: no such user");
    assert_field(&blk[1], "Last-Attempt-Date", "Tue, 14 Nov 2023 21:56:40 +0000");
    assert_no_field(&blk[1], "Will-Retry-Until");

    assert_no_field(&blk[2], "Original-Recipient");
    assert_field(&blk[2], "Final-Recipient", "rfc822; v@example.org");
    assert_field(&blk[2], "Action", "failed");
    assert_field(&blk[2], "Status", "5.4.7");
    assert_no_field(&blk[2], "Remote-MTA");
    assert_field(&blk[2], "Diagnostic-Code", "X-Relayd; delivery time expired");
    assert_no_field(&blk[2], "Last-Attempt-Date");
    assert_no_field(&blk[2], "Will-Retry-Until");

    /* Part 3: the whole original. */
    assert_field(&m.parts[2], "Content-Type", "message/rfc822");
    assert_no_field(&m.parts[2], "Content-Transfer-Encoding");
    assert_int_equal(m.parts[2].blen, sizeof original - 1);
    assert_memory_equal(m.parts[2].body, original, sizeof original - 1);
    msg_free(&m);
}

static void test_delay(void **state)
{
    struct dsn_info info;
    struct dsn_rcpt r[1] = {
        {"u@example.org", NULL, "4.4.1", "mx.example.org", "421 4.4.1 try later", T_LAST},
    };
    struct part blk[8];
    struct msg m;

    (void)state;
    info_init(&info, DSN_DELAY);
    build(&info, r, 1, &m);
    assert_field(&m.top, "Subject", "Delayed Mail (still being retried)");
    assert_field(&m.top, "Auto-Submitted", "auto-replied");
    {
        char *t = strndup(m.parts[0].body, m.parts[0].blen);

        assert_non_null(strstr(t, "WARNING ONLY"));
        assert_non_null(strstr(t, "retry until Sun, 19 Nov 2023 13:20:00 +0000"));
        free(t);
    }
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 2);
    assert_no_field(&blk[0], "Original-Envelope-Id");
    assert_field(&blk[1], "Action", "delayed");
    assert_field(&blk[1], "Status", "4.4.1");
    assert_field(&blk[1], "Diagnostic-Code", "smtp; 421 4.4.1 try later");
    assert_field(&blk[1], "Will-Retry-Until", "Sun, 19 Nov 2023 13:20:00 +0000");
    /* The default status follows the kind when none is given. */
    msg_free(&m);
    r[0].status = NULL;
    r[0].diagnostic = NULL;
    r[0].remote_mta = NULL;
    build(&info, r, 1, &m);
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 2);
    assert_field(&blk[1], "Status", "4.0.0");
    assert_no_field(&blk[1], "Diagnostic-Code");
    assert_no_field(&blk[1], "Remote-MTA");
    msg_free(&m);
    info.kind = DSN_FAILURE;
    build(&info, r, 1, &m);
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 2);
    assert_field(&blk[1], "Status", "5.0.0");
    assert_field(&blk[1], "Action", "failed");
    msg_free(&m);
}

/* RET=HDRS, or an original over max_original: the header section only. */
/* RFC 3461 §5.2.2: a "relayed" report says so in every part and returns
 * the header section only, even when RET=FULL was asked. */
static void test_relayed(void **state)
{
    struct dsn_info info;
    struct dsn_rcpt r[1] = {
        {"u@example.org", "rfc822;U@example.org", "2.0.0", "mx.example.org[192.0.2.5]:25",
         "250 2.0.0 Ok: queued as 4Zx", T_LAST},
    };
    struct part blk[8];
    struct msg m;

    (void)state;
    info_init(&info, DSN_RELAYED);
    build(&info, r, 1, &m);
    assert_field(&m.top, "Subject", "Successful Mail Delivery Report");
    {
        char *t = strndup(m.parts[0].body, m.parts[0].blen);

        assert_non_null(strstr(t, "was relayed"));
        assert_null(strstr(t, "could not be delivered"));
        free(t);
    }
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 2);
    assert_field(&blk[1], "Action", "relayed");
    assert_field(&blk[1], "Status", "2.0.0");
    assert_field(&blk[1], "Original-Recipient", "rfc822;U@example.org");
    assert_field(&blk[1], "Remote-MTA", "dns; mx.example.org[192.0.2.5]:25");
    assert_field(&blk[1], "Diagnostic-Code", "smtp; 250 2.0.0 Ok: queued as 4Zx");
    assert_no_field(&blk[1], "Will-Retry-Until");
    assert_field(&m.parts[2], "Content-Type", "text/rfc822-headers");
    assert_int_equal(m.parts[2].blen, ORIG_HDR_LEN);
    assert_null(memmem(m.parts[2].body, m.parts[2].blen, "the body", 8));
    msg_free(&m);
    /* without a status of its own, the class default of the kind */
    r[0].status = NULL;
    build(&info, r, 1, &m);
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 2);
    assert_field(&blk[1], "Status", "2.0.0");
    msg_free(&m);
    /* only NOTIFY=SUCCESS asks for it; NEVER wins */
    assert_false(dsn_notify_wants(0, DSN_RELAYED));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, DSN_RELAYED));
    assert_true(dsn_notify_wants(SMTP_NOTIFY_SUCCESS, DSN_RELAYED));
    assert_false(dsn_notify_wants(SMTP_NOTIFY_SUCCESS, DSN_FAILURE));
    assert_true(dsn_notify_wants(0, DSN_FAILURE));
}

static void test_headers_only(void **state)
{
    struct dsn_info info;
    struct dsn_rcpt r = {"u@example.org", NULL, "5.1.1", NULL, NULL, 0};
    struct msg m;

    (void)state;
    for (int c = 0; c < 3; c++) {
        info_init(&info, DSN_FAILURE);
        if (c == 0)
            info.return_full = 0; /* RET=HDRS */
        else if (c == 1)
            info.max_original = sizeof original - 2; /* one octet short */
        else
            info.max_original = sizeof original - 1; /* fits exactly: full */
        build(&info, &r, 1, &m);
        assert_int_equal(m.nparts, 3);
        /* the text says why the body is missing only when size was the reason */
        if (c == 1)
            assert_non_null(memmem(m.parts[0].body, m.parts[0].blen, "was larger than", 15));
        else
            assert_null(memmem(m.parts[0].body, m.parts[0].blen, "was larger than", 15));
        if (c == 2) {
            assert_field(&m.parts[2], "Content-Type", "message/rfc822");
            assert_int_equal(m.parts[2].blen, sizeof original - 1);
        } else {
            assert_field(&m.parts[2], "Content-Type", "text/rfc822-headers");
            assert_int_equal(m.parts[2].blen, ORIG_HDR_LEN);
            assert_memory_equal(m.parts[2].body, original, ORIG_HDR_LEN);
            assert_null(memmem(m.parts[2].body, m.parts[2].blen, "the body", 8));
        }
        msg_free(&m);
    }
    /* Headers longer than max_original are cut at a line end. */
    info_init(&info, DSN_FAILURE);
    info.max_original = 60;
    build(&info, &r, 1, &m);
    assert_field(&m.parts[2], "Content-Type", "text/rfc822-headers");
    assert_true(m.parts[2].blen <= 60 && m.parts[2].blen > 0);
    assert_memory_equal(m.parts[2].body, original, m.parts[2].blen);
    assert_memory_equal(m.parts[2].body + m.parts[2].blen - 2, "\r\n", 2);
    msg_free(&m);
    /* A message that is all header (no empty line), and one without header. */
    info_init(&info, DSN_FAILURE);
    info.return_full = 0;
    info.original = "Subject: x\r\nFrom: <a@b>\r\n";
    info.original_len = strlen(info.original);
    build(&info, &r, 1, &m);
    assert_int_equal(m.parts[2].blen, info.original_len);
    msg_free(&m);
    info.original = "\r\nbody only\r\n";
    info.original_len = strlen(info.original);
    build(&info, &r, 1, &m);
    assert_int_equal(m.parts[2].blen, 0);
    msg_free(&m);
    /* No original at all. */
    info.original = NULL;
    info.original_len = 0;
    info.return_full = 1;
    build(&info, &r, 1, &m);
    assert_int_equal(m.parts[2].blen, 0);
    msg_free(&m);
}

static void test_orcpt_and_envid_forms(void **state)
{
    struct dsn_info info;
    struct dsn_rcpt r[3] = {
        {"u@example.org", "rfc822;a+2Bb@example.org", "5.1.1", NULL, NULL, 0},
        {"v@example.org", "rfc822;bad+ZZ@example.org", "5.1.1", NULL, NULL, 0},
        {"w@example.org", "", "5.1.1", NULL, NULL, 0},
    };
    struct part blk[8];
    struct msg m;

    (void)state;
    info_init(&info, DSN_FAILURE);
    info.envid = "x+01y"; /* decodes to a control character: kept as given */
    build(&info, r, 3, &m);
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 4);
    assert_field(&blk[0], "Original-Envelope-Id", "x+01y");
    assert_field(&blk[1], "Original-Recipient", "rfc822;a+b@example.org");
    assert_field(&blk[2], "Original-Recipient", "rfc822;bad+ZZ@example.org");
    assert_no_field(&blk[3], "Original-Recipient");
    assert_field(&blk[3], "Final-Recipient", "rfc822; w@example.org");
    msg_free(&m);
}

/* Long, multi-line and 8-bit diagnostics: lines stay legal, text is cut. */
static void test_long_and_dirty_text(void **state)
{
    static char longword[5000], longwords[5000];
    struct dsn_info info;
    struct dsn_rcpt r[3] = {
        {"u@example.org", NULL, "5.0.0", "mx.example.org", longword, 0},
        {"v@example.org", NULL, "5.0.0", "mx.example.org", longwords, 0},
        {"w@example.org", NULL, "5.0.0", "mx\r\n.example.org",
         "550-5.7.1 first line\r\n550 5.7.1 second \xc3\xa9 line\tend", 0},
    };
    struct part blk[8];
    struct msg m;
    char *v;

    (void)state;
    memset(longword, 'x', sizeof longword - 1);
    memcpy(longword, "550 ", 4);
    for (size_t i = 0; i < sizeof longwords - 1; i++)
        longwords[i] = i % 7 == 6 ? ' ' : 'y';
    memcpy(longwords, "550 ", 4);
    info_init(&info, DSN_FAILURE);
    build(&info, r, 3, &m); /* assert_lines ran in parse */
    assert_int_equal(status_blocks(&m.parts[1], blk, 8), 4);
    v = hget(blk[1].hdr, blk[1].hlen, "Diagnostic-Code");
    assert_non_null(v);
    assert_true(strlen(v) < 998 && strlen(v) > 800);
    assert_true(strncmp(v, "smtp; 550 xxxx", 14) == 0);
    assert_string_equal(v + strlen(v) - 3, "...");
    free(v);
    /* Folded at spaces: the field spans several short lines. */
    assert_non_null(memmem(blk[2].hdr, blk[2].hlen, "\r\n y", 4));
    v = hget(blk[2].hdr, blk[2].hlen, "Diagnostic-Code");
    assert_true(strlen(v) < 998);
    free(v);
    assert_field(&blk[3], "Diagnostic-Code",
                 "smtp; 550-5.7.1 first line 550 5.7.1 second ?? line end");
    assert_field(&blk[3], "Remote-MTA", "dns; mx .example.org");
    msg_free(&m);
}

/* The boundary is changed when the content holds it. */
static void test_boundary_collision(void **state)
{
    static const char alpha[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "abcdefghijklmnopqrstuvwxyz'()";
    struct dsn_info info;
    struct dsn_rcpt r = {"u@example.org", NULL, "5.1.1", NULL, NULL, 0};
    struct msg m;
    char natural[128], *orig;
    size_t off = 0, cap = 64 * 1024;

    (void)state;
    info_init(&info, DSN_FAILURE);
    build(&info, &r, 1, &m);
    snprintf(natural, sizeof natural, "%s", m.boundary);
    msg_free(&m);

    /* The natural boundary in the original, followed by every character a
     * first extension could use, and in the diagnostic: parse() checks the
     * boundary occurs only as delimiters. */
    orig = malloc(cap);
    assert_non_null(orig);
    off += (size_t)snprintf(orig + off, cap - off, "Subject: %s\r\n\r\n", natural);
    for (size_t i = 0; alpha[i]; i++)
        off += (size_t)snprintf(orig + off, cap - off, "--%s%c\r\n", natural, alpha[i]);
    for (size_t i = 0; alpha[i]; i++)
        off += (size_t)snprintf(orig + off, cap - off, "%s0%c\r\n", natural, alpha[i]);
    info.original = orig;
    info.original_len = off;
    r.diagnostic = natural;
    build(&info, &r, 1, &m);
    assert_string_not_equal(m.boundary, natural);
    assert_true(strncmp(m.boundary, natural, strlen(natural)) == 0);
    assert_memory_equal(m.parts[2].body, orig, off);
    msg_free(&m);
    free(orig);
}

static void test_8bit_original(void **state)
{
    static const char o8[] = "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n";
    struct dsn_info info;
    struct dsn_rcpt r = {"u@example.org", NULL, "5.1.1", NULL, NULL, 0};
    struct msg m;

    (void)state;
    info_init(&info, DSN_FAILURE);
    info.original = o8;
    info.original_len = sizeof o8 - 1;
    build(&info, &r, 1, &m);
    assert_field(&m.parts[2], "Content-Transfer-Encoding", "8bit");
    assert_memory_equal(m.parts[2].body, o8, sizeof o8 - 1);
    /* Only the 8-bit part is marked, and no header of ours carries 8-bit. */
    assert_null(memchr(m.top.hdr, 0xc3, m.top.hlen));
    assert_no_field(&m.parts[1], "Content-Transfer-Encoding");
    msg_free(&m);
    /* An original without a final CRLF still ends its line before the
     * delimiter. */
    info.original = "Subject: x\r\n\r\nno newline";
    info.original_len = strlen(info.original);
    build(&info, &r, 1, &m);
    assert_int_equal(m.parts[2].blen, info.original_len + 2);
    msg_free(&m);
}

static void test_errors(void **state)
{
    struct dsn_info info;
    struct dsn_rcpt r = {"u@example.org", NULL, "5.1.1", NULL, NULL, 0};
    struct buf b;

    (void)state;
    info_init(&info, DSN_FAILURE);
    buf_init(&b, 200); /* far too small */
    assert_int_equal(dsn_build(&info, &r, 1, &b), -ENOBUFS);
    buf_free(&b);
    buf_init(&b, 1 << 20);
    assert_int_equal(dsn_build(NULL, &r, 1, &b), -EINVAL);
    assert_int_equal(dsn_build(&info, NULL, 1, &b), -EINVAL);
    info.sender = NULL;
    assert_int_equal(dsn_build(&info, &r, 1, &b), -EINVAL);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_status_from_reply(void **state)
{
    static const struct {
        int code;
        const char *enh;
        const char *want;
    } cases[] = {
        {550, "5.1.1", "5.1.1"},
        {550, "5.7.26", "5.7.26"},
        {552, "5.3.4 message too big", "5.3.4"},
        {550, "4.1.1", "5.0.0"}, /* class does not match the code */
        {450, "5.1.1", "4.0.0"},
        {450, NULL, "4.0.0"},
        {421, "4.4.2", "4.4.2"},
        {554, NULL, "5.0.0"},
        {250, "2.0.0", "2.0.0"},
        {250, NULL, "2.0.0"},
        {550, "5.1", "5.0.0"},
        {550, "5.1.1234", "5.0.0"},
        {550, "5.1111.1", "5.0.0"},
        {550, "5..1", "5.0.0"},
        {550, "x.1.1", "5.0.0"},
        {550, "", "5.0.0"},
        {550, "5.1.1x", "5.0.0"},
        {0, "4.4.7", "4.4.7"}, /* no code (a local reason): the enhanced code stands */
        {0, "2.0.0", "5.0.0"},
        {0, NULL, "5.0.0"},
        {354, "3.0.0", "5.0.0"},
        {999, NULL, "5.0.0"},
        {-450, "4.0.0", "4.0.0"},
    };
    char out[16];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(out, 'Z', sizeof out);
        dsn_status_from_reply(cases[i].code, cases[i].enh, out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: %d \"%s\" gave \"%s\", want \"%s\"", i, cases[i].code,
                     cases[i].enh ? cases[i].enh : "(null)", out, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failure),
        cmocka_unit_test(test_delay),
        cmocka_unit_test(test_relayed),
        cmocka_unit_test(test_headers_only),
        cmocka_unit_test(test_orcpt_and_envid_forms),
        cmocka_unit_test(test_long_and_dirty_text),
        cmocka_unit_test(test_boundary_collision),
        cmocka_unit_test(test_8bit_original),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_status_from_reply),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
