/*
 * dsn: delivery status notifications as message text (RFC 3464 fields in an
 * RFC 6522 multipart/report, RFC 3461 §6 rules for what is returned). Pure:
 * no I/O, no clock, no queue; every value that reaches a header line is
 * cleaned (7-bit, no controls) and kept below the RFC 5322 line limit.
 */
#include "dsn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "smtp_parse.h"

#define DSN_FOLD      78  /* RFC 5322 §2.1.1: lines SHOULD stay within 78 */
#define DSN_VALUE_MAX 900 /* longest value text kept: a field stays < 998 octets */
#define DSN_BOUNDARY  70  /* RFC 2046 §5.1.1: at most 70 characters */

/* A writer with a sticky error: once an append fails, the rest are no-ops
 * and dsn_build returns the first error. */
struct w {
    struct buf *b;
    int err;
};

static void put(struct w *w, const void *p, size_t n)
{
    if (w->err == 0)
        w->err = buf_append(w->b, p, n);
}

static void puts_(struct w *w, const char *s)
{
    put(w, s, strlen(s));
}

static void putf(struct w *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct w *w, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        if (w->err == 0)
            w->err = -EINVAL; /* callers format short, cleaned values only */
        return;
    }
    put(w, tmp, (size_t)n);
}

/* RFC 5322 §3.3 date-time in UTC: "Tue, 14 Nov 2023 22:13:20 +0000". */
static void fmt_date(int64_t t, char out[40])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1900) {
        tt = 0;
        gmtime_r(&tt, &tm);
    }
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Copy in into out (outlen bytes) as one line of printable US-ASCII: CR,
 * LF and TAB become spaces (a multi-line reply reads as one), other control
 * characters and 8-bit bytes become '?', and text beyond DSN_VALUE_MAX is
 * cut with "...". out must hold DSN_VALUE_MAX + 4 bytes. */
static void clean(const char *in, char *out, size_t outlen)
{
    size_t o = 0, max = outlen - 4 < DSN_VALUE_MAX ? outlen - 4 : DSN_VALUE_MAX;
    unsigned char c;

    for (; in && *in && o < max; in++) {
        c = (unsigned char)*in;
        if (c == '\r' || c == '\n' || c == '\t')
            c = ' ';
        else if (c < 0x20 || c > 0x7e)
            c = '?';
        out[o++] = (char)c;
    }
    if (in && *in) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Decode RFC 3461 §4 xtext ("+2B" is '+'). The decoded text must be
 * printable US-ASCII (RFC 3461 §4.2); otherwise, or when the +XX escapes
 * are malformed, out is the input as given. */
static void xtext_decode(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    const char *p;
    unsigned v;
    int ok = 1;

    for (p = in; *p && o + 1 < outlen; p++) {
        if (*p == '+') {
            if (!p[1] || !p[2] || !strchr("0123456789ABCDEFabcdef", p[1]) ||
                !strchr("0123456789ABCDEFabcdef", p[2]) || sscanf(p + 1, "%2x", &v) != 1 ||
                v < 0x20 || v > 0x7e) {
                ok = 0;
                break;
            }
            out[o++] = (char)v;
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    if (!ok || *p)
        snprintf(out, outlen, "%s", in);
    else
        out[o] = '\0';
}

/*
 * Write prefix then text, breaking the text at spaces so lines stay within
 * DSN_FOLD where the words allow; continuation lines start with indent
 * (" " for a header field: RFC 5322 §2.2.3 folding, undone by unfolding).
 * Runs of spaces become one. text is clean (see clean()), so no line can
 * exceed prefix + indent + DSN_VALUE_MAX + 3 octets.
 */
static void put_wrapped(struct w *w, const char *prefix, const char *text, const char *indent)
{
    size_t col = strlen(prefix), len, first = 1;
    const char *p = text, *e;

    puts_(w, prefix);
    for (;;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        e = strchr(p, ' ');
        len = e ? (size_t)(e - p) : strlen(p);
        if (!first && col + 1 + len > DSN_FOLD) {
            puts_(w, "\r\n");
            puts_(w, indent);
            col = strlen(indent);
        } else if (!first || col > 0) {
            puts_(w, " "); /* "Name: value": the first word stays on the name's line */
            col++;
        }
        put(w, p, len);
        col += len;
        first = 0;
        p += len;
    }
    puts_(w, "\r\n");
}

/* A header field "Name: value" with value cleaned and folded. */
static void put_field(struct w *w, const char *name, const char *value)
{
    char prefix[64], v[DSN_VALUE_MAX + 4];

    snprintf(prefix, sizeof prefix, "%s:", name);
    clean(value, v, sizeof v);
    if (!v[0]) {
        puts_(w, prefix);
        puts_(w, "\r\n");
        return;
    }
    put_wrapped(w, prefix, v, " ");
}

/* Is the reply text an SMTP reply ("550 ...", "4xx-...")? Then its
 * diagnostic type is smtp (RFC 3464 §2.3.6); local reasons get our own. */
static int is_smtp_reply(const char *s)
{
    return s && (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] >= '0' && s[1] <= '9' &&
           s[2] >= '0' && s[2] <= '9' && (s[3] == ' ' || s[3] == '-' || s[3] == '\0');
}

/* The status to report for r: its own, or the class default. */
static const char *rcpt_status(const struct dsn_info *info, const struct dsn_rcpt *r)
{
    if (r->status && r->status[0])
        return r->status;
    return info->kind == DSN_DELAY ? "4.0.0" : info->kind == DSN_RELAYED ? "2.0.0" : "5.0.0";
}

/* RFC 3464 §2.3.3 action-value of a kind. */
static const char *kind_action(enum dsn_kind kind)
{
    return kind == DSN_DELAY ? "delayed" : kind == DSN_RELAYED ? "relayed" : "failed";
}

/* Part 1: what a person reads (RFC 6522 §3: the first part). */
static void part_text(struct w *w, const struct dsn_info *info, const struct dsn_rcpt *rcpts,
                      size_t n)
{
    char host[DSN_VALUE_MAX + 4], d[40], diag[DSN_VALUE_MAX + 4], addr[DSN_VALUE_MAX + 4];
    char line[3 * DSN_VALUE_MAX + 64];
    size_t i;

    clean(info->reporting_mta, host, sizeof host);
    puts_(w, "Content-Description: Notification\r\n"
             "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    putf(w, "This is the mail system at host %s.\r\n\r\n", host);
    fmt_date(info->arrival, d);
    if (info->kind == DSN_FAILURE) {
        putf(w, "Your message of %s could not be delivered\r\n", d);
        puts_(w, "to one or more of its recipients, and no further attempts will be\r\n"
                 "made. The reasons are below. The message, or its header, is\r\n"
                 "attached.\r\n\r\n");
    } else if (info->kind == DSN_RELAYED) {
        /* RFC 3461 §5.2.2: the next hop takes no DSN request, so this is
         * the last news the sender gets unless something fails later */
        putf(w, "Your message of %s was relayed to the recipients\r\n", d);
        puts_(w, "below. The next mail system does not support delivery status\r\n"
                 "notifications, so no further success notice will follow; you may\r\n"
                 "still be told of a failure by systems further on.\r\n\r\n");
    } else {
        puts_(w, "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\r\n\r\n");
        putf(w, "Your message of %s has not yet been delivered\r\n", d);
        puts_(w, "to the recipients below. The mail system is still trying.\r\n");
        if (info->retry_until > 0) {
            fmt_date(info->retry_until, d);
            putf(w, "It will retry until %s;\r\n", d);
            puts_(w, "you will be told if delivery fails by then.\r\n");
        }
        puts_(w, "\r\n");
    }
    if (info->return_full && info->original != NULL && info->original_len > info->max_original) {
        /* RFC 3461 §4.3 lets the MTA return less than RET=FULL asks; say so,
         * and why (Postfix's bounce_size_limit) */
        putf(w, "The message was larger than %zu bytes, so only its header is\r\n",
             info->max_original);
        puts_(w, "attached.\r\n\r\n");
    }
    for (i = 0; i < n; i++) {
        const struct dsn_rcpt *r = &rcpts[i];

        clean(r->address, addr, sizeof addr);
        clean(r->remote_mta, host, sizeof host);
        clean(r->diagnostic, diag, sizeof diag);
        if (host[0] && diag[0])
            snprintf(line, sizeof line, "<%s>: host %s said: %s", addr, host, diag);
        else if (diag[0])
            snprintf(line, sizeof line, "<%s>: %s", addr, diag);
        else if (info->kind == DSN_RELAYED)
            snprintf(line, sizeof line, "<%s>: relayed (status %s)", addr, rcpt_status(info, r));
        else if (host[0])
            snprintf(line, sizeof line, "<%s>: delivery to host %s %s (status %s)", addr, host,
                     info->kind == DSN_DELAY ? "is delayed" : "failed", rcpt_status(info, r));
        else
            snprintf(line, sizeof line, "<%s>: %s (status %s)", addr,
                     info->kind == DSN_DELAY ? "delivery is delayed" : "delivery failed",
                     rcpt_status(info, r));
        put_wrapped(w, "", line, "    ");
        puts_(w, "\r\n");
    }
}

/* Part 2: message/delivery-status (RFC 3464 §2): the per-message fields,
 * then one block of per-recipient fields each, blocks separated by blank
 * lines. */
static void part_status(struct w *w, const struct dsn_info *info, const struct dsn_rcpt *rcpts,
                        size_t n)
{
    char v[DSN_VALUE_MAX + 64], t[DSN_VALUE_MAX + 4], d[40];
    size_t i;

    puts_(w, "Content-Description: Delivery report\r\n"
             "Content-Type: message/delivery-status\r\n\r\n");
    clean(info->reporting_mta, t, sizeof t);
    snprintf(v, sizeof v, "dns; %s", t);
    put_field(w, "Reporting-MTA", v);
    if (info->queue_id)
        put_field(w, "X-Relayd-Queue-ID", info->queue_id);
    if (info->envid && info->envid[0]) {
        /* RFC 3464 §2.2.1: the envelope id as the sender gave it, not xtext */
        xtext_decode(info->envid, t, sizeof t);
        put_field(w, "Original-Envelope-Id", t);
    }
    fmt_date(info->arrival, d);
    put_field(w, "Arrival-Date", d);
    for (i = 0; i < n; i++) {
        const struct dsn_rcpt *r = &rcpts[i];

        puts_(w, "\r\n");
        if (r->orcpt && r->orcpt[0]) {
            /* RFC 3464 §2.3.1, RFC 3461 §4.2: addr-type ";" the decoded address */
            xtext_decode(r->orcpt, t, sizeof t);
            put_field(w, "Original-Recipient", t);
        }
        clean(r->address, t, sizeof t);
        snprintf(v, sizeof v, "rfc822; %s", t);
        put_field(w, "Final-Recipient", v);
        put_field(w, "Action", kind_action(info->kind));
        put_field(w, "Status", rcpt_status(info, r));
        if (r->remote_mta && r->remote_mta[0]) {
            clean(r->remote_mta, t, sizeof t);
            snprintf(v, sizeof v, "dns; %s", t);
            put_field(w, "Remote-MTA", v);
        }
        if (r->diagnostic && r->diagnostic[0]) {
            clean(r->diagnostic, t, sizeof t);
            snprintf(v, sizeof v, "%s; %s", is_smtp_reply(r->diagnostic) ? "smtp" : "X-Relayd", t);
            put_field(w, "Diagnostic-Code", v);
        }
        if (r->last_attempt > 0) {
            fmt_date(r->last_attempt, d);
            put_field(w, "Last-Attempt-Date", d);
        }
        if (info->kind == DSN_DELAY && info->retry_until > 0) {
            fmt_date(info->retry_until, d);
            put_field(w, "Will-Retry-Until", d);
        }
    }
}

/* The header section of msg: up to and including the CRLF of the last
 * header line (the empty line ending it is not part of it); all of msg when
 * there is no body. */
static size_t header_len(const char *msg, size_t len)
{
    const char *p;

    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
        return 0;
    p = memmem(msg, len, "\r\n\r\n", 4);
    return p ? (size_t)(p - msg) + 2 : len;
}

/* Part 3 (RFC 3461 §6.2, RFC 6522 §3): the whole original as message/rfc822
 * when it was asked for and is not too big, else its header section as
 * text/rfc822-headers, itself cut at a line end to fit max_original. */
static void part_original(struct w *w, const struct dsn_info *info)
{
    const char *msg = info->original ? info->original : "";
    size_t len = info->original ? info->original_len : 0;
    /* RFC 3461 §4.3: RET=FULL asks for the content of a "failed" DSN; a
     * success report carries the header section only (as Postfix does) */
    int full = info->return_full && info->kind != DSN_RELAYED && len <= info->max_original;
    size_t i;
    int eight = 0;

    if (!full) {
        len = header_len(msg, len);
        if (len > info->max_original) {
            len = info->max_original;
            while (len > 0 && !(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n'))
                len--;
        }
    }
    for (i = 0; i < len && !eight; i++)
        eight = (unsigned char)msg[i] >= 0x80;
    puts_(w, full                        ? "Content-Description: Undelivered Message\r\n"
                                           "Content-Type: message/rfc822\r\n"
             : info->kind == DSN_RELAYED ? "Content-Description: Message Headers\r\n"
                                           "Content-Type: text/rfc822-headers\r\n"
                                         : "Content-Description: Undelivered Message Headers\r\n"
                                           "Content-Type: text/rfc822-headers\r\n");
    if (eight)
        puts_(w, "Content-Transfer-Encoding: 8bit\r\n");
    puts_(w, "\r\n");
    put(w, msg, len);
    if (len > 0 && !(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n'))
        puts_(w, "\r\n");
}

/*
 * A boundary that occurs nowhere in the parts (RFC 2046 §5.1.1). Start from
 * one made of the queue id and the time; while it occurs, look at the
 * characters that follow its occurrences and append one that follows none
 * (then it cannot occur), or, when all 64 do (64 occurrences and more),
 * append one and look again. Each round is one pass over the parts.
 */
static int choose_boundary(const struct dsn_info *info, const struct buf *parts, char *out,
                           size_t outlen)
{
    static const char alpha[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "abcdefghijklmnopqrstuvwxyz'()";
    unsigned char seen[256];
    const char *p, *end = parts->data + parts->len;
    size_t blen;
    int found, k;

    snprintf(out, outlen, "%.20s.%lld/relayd", info->queue_id ? info->queue_id : "",
             (long long)info->now);
    for (;;) {
        blen = strlen(out);
        memset(seen, 0, sizeof seen);
        found = 0;
        for (p = parts->data; p && (p = memmem(p, (size_t)(end - p), out, blen)); p++) {
            found = 1;
            if (p + blen < end)
                seen[(unsigned char)p[blen]] = 1;
        }
        if (!found)
            return 0;
        if (blen + 1 >= outlen || blen + 1 > DSN_BOUNDARY)
            return -EINVAL; /* 64^k occurrences: not a message anyone sends */
        for (k = 0; alpha[k] && seen[(unsigned char)alpha[k]]; k++)
            ;
        out[blen] = alpha[k] ? alpha[k] : alpha[0];
        out[blen + 1] = '\0';
        if (alpha[k])
            return 0;
    }
}

int dsn_build(const struct dsn_info *info, const struct dsn_rcpt *rcpts, size_t n, struct buf *out)
{
    struct buf parts;
    struct w w;
    char boundary[DSN_BOUNDARY + 8], d[40], t[DSN_VALUE_MAX + 4], v[DSN_VALUE_MAX + 64];
    size_t start[4];
    int rc;

    if (!info || !out || (n > 0 && !rcpts) || !info->reporting_mta || !info->sender)
        return -EINVAL;
    /* The parts first, without their delimiters, to pick a boundary that is
     * in none of them. start[] remembers where each part begins. */
    buf_init(&parts, out->max);
    w.b = &parts;
    w.err = 0;
    start[0] = parts.len;
    part_text(&w, info, rcpts, n);
    start[1] = parts.len;
    part_status(&w, info, rcpts, n);
    start[2] = parts.len;
    part_original(&w, info);
    start[3] = parts.len;
    rc = w.err;
    if (rc == 0)
        rc = choose_boundary(info, &parts, boundary, sizeof boundary);
    if (rc < 0)
        goto done;

    w.b = out;
    clean(info->reporting_mta, t, sizeof t);
    snprintf(v, sizeof v, "Mail Delivery System <MAILER-DAEMON@%s>", t);
    put_field(&w, "From", v);
    clean(info->sender, t, sizeof t);
    snprintf(v, sizeof v, "<%s>", t);
    put_field(&w, "To", v);
    put_field(&w, "Subject",
              info->kind == DSN_DELAY     ? "Delayed Mail (still being retried)"
              : info->kind == DSN_RELAYED ? "Successful Mail Delivery Report"
                                          : "Undelivered Mail Returned to Sender");
    fmt_date(info->now, d);
    put_field(&w, "Date", d);
    clean(info->reporting_mta, t, sizeof t);
    snprintf(v, sizeof v, "<%.20s.%lld@%s>", info->queue_id ? info->queue_id : "dsn",
             (long long)info->now, t);
    put_field(&w, "Message-ID", v);
    put_field(&w, "Auto-Submitted", "auto-replied"); /* RFC 3834 §5 */
    put_field(&w, "MIME-Version", "1.0");
    putf(&w,
         "Content-Type: multipart/report; report-type=delivery-status;\r\n"
         "\tboundary=\"%s\"\r\n",
         boundary);
    puts_(&w, "\r\nThis is a MIME-encapsulated message.\r\n");
    for (int i = 0; i < 3; i++) {
        putf(&w, "\r\n--%s\r\n", boundary);
        put(&w, parts.data + start[i], start[i + 1] - start[i]);
    }
    putf(&w, "\r\n--%s--\r\n", boundary);
    rc = w.err;
done:
    buf_free(&parts);
    return rc;
}

/* RFC 3463 §2: class "." subject "." detail, 1-3 digits each. */
static int enh_ok(const char *s, char cls)
{
    int digits;

    if (!s || s[0] != cls || s[1] != '.')
        return 0;
    s += 2;
    for (int part = 0; part < 2; part++) {
        for (digits = 0; *s >= '0' && *s <= '9'; s++)
            digits++;
        if (digits < 1 || digits > 3)
            return 0;
        if (part == 0 && *s++ != '.')
            return 0;
    }
    return *s == '\0' || *s == ' ' || *s == '\t';
}

void dsn_status_from_reply(int code, const char *enh, char *out)
{
    char cls = code / 100 == 2 || code / 100 == 4 || code / 100 == 5 ? (char)('0' + code / 100) : 0;
    size_t n;

    if (cls == 0 && enh && (enh_ok(enh, '4') || enh_ok(enh, '5')))
        cls = enh[0]; /* no usable code: a well-formed 4.x.x or 5.x.x stands */
    if (cls && enh_ok(enh, cls)) {
        n = strcspn(enh, " \t");
        memcpy(out, enh, n);
        out[n] = '\0';
        return;
    }
    snprintf(out, 16, "%c.0.0", cls == '2' || cls == '4' ? cls : '5');
}

int dsn_notify_wants(unsigned notify, enum dsn_kind kind)
{
    if (notify & SMTP_NOTIFY_NEVER)
        return 0;
    if (kind == DSN_RELAYED)
        return (notify & SMTP_NOTIFY_SUCCESS) != 0;
    if (notify == 0)
        return 1;
    return kind == DSN_DELAY ? (notify & SMTP_NOTIFY_DELAY) != 0
                             : (notify & SMTP_NOTIFY_FAILURE) != 0;
}
