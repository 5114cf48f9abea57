/*
 * atrn_cmd: the customer side of On-Demand Mail Relay (RFC 2645),
 * `etrnctl atrn`. It makes sure the site's own MTA answers, then connects
 * to the relay's ODMR port, authenticates (SMTP AUTH through
 * lib/sasl_client.c, after STARTTLS when asked) and sends ATRN. After the
 * relay's 250 the roles turn round: etrnctl is the SMTP server the relay
 * delivers to, and it hands every command and message on to the local MTA
 * as it comes, answering the relay with exactly what the local MTA
 * answered: the relay removes a message from its queue only once the site
 * has stored it (end to end, nothing acknowledged that is not on the
 * site's disk). Bodies pass through byte for byte, dot-stuffing included.
 * Sockets are smtp_io's (poll deadlines); it never talks to relayd's
 * control socket.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "defaults.h"
#include "etrnctl.h"
#include "smtp_auth.h"
#include "smtp_io.h"
#include "smtp_parse.h"
#include "tls.h"

#define MAX_RELAYS     16
#define MAX_DOMAINS    32
#define ATRN_PORT      366   /* RFC 2645 §3 */
#define ATRN_WAIT_MIN  600.0 /* RFC 2645 §4.3: the relay may take a while to answer ATRN */
#define SERVER_TIMEOUT 300.0 /* RFC 5321 §4.5.3.2.7: waiting for the relay's next command */
#define OUT_BUF        (64 * 1024)
#define GROUP_MAX      1024         /* commands of one pipelined group (RFC 2920) */
#define GROUP_BUF      (256 * 1024) /* their bytes */
#define HEAD_KEEP      2048         /* bytes of a message kept to find the relay's queue id */

/* One transaction the relay sent after the turn. */
struct txn_result {
    char relay_id[32];     /* the relay's queue id, from its Received: field */
    char local_reply[256]; /* what the local MTA said to the end of data (cut at 250) */
    uint64_t bytes;
    int stored; /* the local MTA answered 250 */
};

struct relay_result {
    char label[300];
    int status;    /* exit status this relay stands for */
    int code;      /* reply to ATRN, 0 = none */
    char what[64]; /* "delivered", "nothing waiting", "refused", ... */
    char why[600]; /* the reply or error */
    uint64_t messages, bytes, refused;
    struct txn_result *txns;
    size_t ntxns, captxns;
};

struct atrn {
    struct etrnctl_opts *o;
    const char *relay_args[MAX_RELAYS];
    size_t nrelay_args;
    const char *user;
    const char *password_file;
    const char *deliver_to;
    int starttls; /* 0 no, 1 required, 2 required and verified */
    const char *tls_ca;
    const char *mech;
    const char *helo;
    double timeout;
    int retries;
    double retry_delay;
    const char *domains[MAX_DOMAINS];
    size_t ndomains;
    /* state */
    char password[SMTP_AUTH_PASSWORD_MAX + 1];
    char local_host[256];
    int local_port;
    struct tls_ctx *tls;
    char helo_buf[256];
    /* from /etc/default/etrnctl */
    char *def_relays, *def_user, *def_password_file, *def_deliver_to;
    /* the local MTA */
    struct smtp_io local;
    int local_up;
    struct smtp_io_reply local_ehlo;
    /* output to the local MTA, batched */
    char *out;
    size_t outlen;
    /* replies to the relay, batched until we wait for it again */
    char *rout;
    size_t routlen;
    /* one pipelined group of commands for the local MTA */
    char *grp;
    enum smtp_verb verbs[GROUP_MAX];
    size_t nverbs;
};

static void say(const struct atrn *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct atrn *a, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (a->o->verbose == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "etrnctl: %s\n", line);
}

/* ---- the local MTA ----------------------------------------------------------------------- */

static void local_close(struct atrn *a)
{
    if (a->local_up && smtp_io_cmd(&a->local, "QUIT") == 0) {
        struct smtp_io_reply r;
        (void)smtp_io_read_reply(&a->local, &r);
    }
    smtp_io_close(&a->local);
    a->local_up = 0;
}

/* Connect to the local MTA and say EHLO. 0, or -1 with local.err set. */
static int local_open(struct atrn *a)
{
    struct smtp_io_reply r;
    char line[300];

    smtp_io_close(&a->local);
    smtp_io_init(&a->local, a->deliver_to, a->timeout, a->o->verbose > 0);
    a->local.peer_name = "the local MTA";
    a->local_up = 0;
    if (smtp_io_connect(&a->local, a->local_host, a->local_port, NULL, 0) != 0 ||
        smtp_io_read_reply(&a->local, &r) != 0)
        goto fail;
    if (r.code != 220) {
        snprintf(a->local.err, sizeof(a->local.err), "greeting: %.200s", r.line);
        goto fail;
    }
    snprintf(line, sizeof(line), "EHLO %s", a->helo);
    if (smtp_io_cmd(&a->local, line) != 0 || smtp_io_read_reply(&a->local, &a->local_ehlo) != 0)
        goto fail;
    if (a->local_ehlo.code != 250) {
        snprintf(a->local.err, sizeof(a->local.err), "EHLO: %.200s", a->local_ehlo.line);
        goto fail;
    }
    a->local_up = 1;
    return 0;
fail:
    smtp_io_close(&a->local);
    return -1;
}

static int local_flush(struct atrn *a)
{
    int rc = 0;

    if (a->outlen > 0)
        rc = smtp_io_write(&a->local, a->out, a->outlen);
    a->outlen = 0;
    return rc;
}

static int local_put(struct atrn *a, const char *p, size_t n)
{
    while (n > 0) {
        size_t k = OUT_BUF - a->outlen < n ? OUT_BUF - a->outlen : n;
        memcpy(a->out + a->outlen, p, k);
        a->outlen += k;
        p += k;
        n -= k;
        if (a->outlen == OUT_BUF && local_flush(a) != 0)
            return -1;
    }
    return 0;
}

/* ---- the relay, as its SMTP server after the turn ---------------------------------------- */

/* Send the replies collected for the relay. Called before we wait for the
 * relay again, so a pipelined group gets its replies in one write. */
static int relay_flush(struct atrn *a, struct smtp_io *r)
{
    int rc = 0;

    if (a->routlen > 0)
        rc = smtp_io_write(r, a->rout, a->routlen);
    a->routlen = 0;
    return rc;
}

static int relay_send(struct atrn *a, struct smtp_io *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int relay_send(struct atrn *a, struct smtp_io *r, const char *fmt, ...)
{
    char line[1100];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        n = (int)strlen(line);
    memcpy(line + n, "\r\n", 2);
    if (a->routlen + (size_t)n + 2 > OUT_BUF && relay_flush(a, r) != 0)
        return -1;
    memcpy(a->rout + a->routlen, line, (size_t)n + 2);
    a->routlen += (size_t)n + 2;
    return 0;
}

/* Hand a local MTA reply to the relay line for line (every line of a
 * multi-line reply, RFC 5321 §4.2.1). */
static int relay_send_reply(struct atrn *a, struct smtp_io *r, const struct smtp_io_reply *rep)
{
    const char *t = rep->texts;
    int rc = 0;

    while (*t != '\0' && rc == 0) {
        const char *nl = strchr(t, '\n');
        size_t n = nl ? (size_t)(nl - t) : strlen(t);
        int last = nl == NULL || nl[1] == '\0';
        rc = relay_send(a, r, "%03d%c%.*s", rep->code, last ? ' ' : '-', (int)n, t);
        t += n + (nl ? 1 : 0);
    }
    if (rep->texts[0] == '\0')
        rc = relay_send(a, r, "%03d ", rep->code);
    return rc;
}

/* One command line from the relay into line (without CRLF). 0, or -1 (the
 * relay went away, timed out, or sent a line that does not fit). */
static int relay_line(struct atrn *a, struct smtp_io *r, char *line, size_t max)
{
    double deadline = smtp_io_now() + SERVER_TIMEOUT;

    for (;;) {
        char *nl = memchr(r->in, '\n', r->inlen);
        if (nl != NULL) {
            size_t n = (size_t)(nl - r->in);
            size_t keep = n > 0 && r->in[n - 1] == '\r' ? n - 1 : n;
            if (keep >= max) {
                snprintf(r->err, sizeof(r->err), "command line too long");
                return -1;
            }
            memcpy(line, r->in, keep);
            line[keep] = '\0';
            smtp_io_consume(r, n + 1);
            return 0;
        }
        if (r->inlen >= sizeof(r->in)) {
            snprintf(r->err, sizeof(r->err), "command line too long");
            return -1;
        }
        if (relay_flush(a, r) != 0 || smtp_io_fill(r, deadline) != 0)
            return -1;
    }
}

/* The relay's queue id from the first Received: field it put on the
 * message ("... with ESMTP id 0123456789ABCD; date"). */
static void find_relay_id(const char *head, size_t n, char *out, size_t outlen)
{
    const char *end = head + n, *p = head;

    out[0] = '\0';
    if (n < 9 || strncasecmp(head, "Received:", 9) != 0)
        return;
    /* the field ends at a line end not followed by folding white space */
    while (p + 2 < end && !(p[0] == '\r' && p[1] == '\n' && p[2] != ' ' && p[2] != '\t'))
        p++;
    for (const char *q = head; q + 4 < p; q++) {
        if ((q[0] == ' ' || q[0] == '\t') && q[1] == 'i' && q[2] == 'd' && q[3] == ' ') {
            size_t k = 0;
            q += 4;
            while (q + k < p && k + 1 < outlen && isalnum((unsigned char)q[k]))
                k++;
            memcpy(out, q, k);
            out[k] = '\0';
            return;
        }
    }
}

static struct txn_result *add_txn(struct relay_result *res)
{
    if (res->ntxns == res->captxns) {
        size_t cap = res->captxns ? res->captxns * 2 : 16;
        struct txn_result *n = realloc(res->txns, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        res->txns = n;
        res->captxns = cap;
    }
    memset(&res->txns[res->ntxns], 0, sizeof(res->txns[0]));
    return &res->txns[res->ntxns++];
}

/*
 * The message after our 354: bytes from the relay, passed on to the local
 * MTA as they are (dot-stuffed, CRLF), up to and including the end-of-data
 * line. RFC 5321 §4.1.1.4: the end is CRLF "." CRLF, nothing else. When the
 * local MTA fails in the middle the rest is still read (and dropped) so the
 * relay can be answered. Returns 0 with *local_ok, or -1 (the relay failed).
 */
static int relay_body(struct atrn *a, struct smtp_io *r, int *local_ok, char *head, size_t *headlen,
                      uint64_t *bytes)
{
    double deadline = smtp_io_now() + SERVER_TIMEOUT;
    int bol = 1; /* at the start of a line (after CRLF) */
    char last = '\n';

    *headlen = 0;
    *bytes = 0;
    for (;;) {
        size_t n, i;

        if (r->inlen == 0 || (bol && r->inlen < 3 && r->in[0] == '.')) {
            if (relay_flush(a, r) != 0 || smtp_io_fill(r, deadline) != 0)
                return -1;
            deadline = smtp_io_now() + SERVER_TIMEOUT;
            continue;
        }
        if (bol && r->inlen >= 3 && memcmp(r->in, ".\r\n", 3) == 0) {
            if (*local_ok && (local_put(a, ".\r\n", 3) != 0 || local_flush(a) != 0))
                *local_ok = 0;
            smtp_io_consume(r, 3);
            return 0;
        }
        /* up to and including the next LF, or everything there is */
        for (i = 0; i < r->inlen && r->in[i] != '\n'; i++)
            ;
        n = i < r->inlen ? i + 1 : r->inlen;
        if (i < r->inlen)
            bol = (i > 0 ? r->in[i - 1] : last) == '\r';
        else
            bol = 0;
        last = r->in[n - 1];
        if (*headlen < HEAD_KEEP) {
            size_t k = HEAD_KEEP - *headlen < n ? HEAD_KEEP - *headlen : n;
            memcpy(head + *headlen, r->in, k);
            *headlen += k;
        }
        *bytes += n;
        if (*local_ok && local_put(a, r->in, n) != 0)
            *local_ok = 0;
        smtp_io_consume(r, n);
    }
}

/* The next complete command line in the relay's input, if it is one that
 * may follow in the same pipelined group (RFC 2920 §3.1: RCPT, then DATA
 * last): its length with the line end (0: none), the command's in *keep. */
static size_t group_next(const struct smtp_io *r, size_t *keep, enum smtp_verb *verb)
{
    const char *nl = memchr(r->in, '\n', r->inlen);
    struct smtp_cmd cmd;
    size_t n;

    if (nl == NULL)
        return 0;
    n = (size_t)(nl - r->in);
    *keep = n > 0 && r->in[n - 1] == '\r' ? n - 1 : n;
    if (*keep >= 4096 || smtp_cmd_parse(r->in, *keep, &cmd) != SMTP_PARSE_OK ||
        (cmd.verb != SMTP_CMD_RCPT && cmd.verb != SMTP_CMD_DATA))
        return 0;
    *verb = cmd.verb;
    return n + 1;
}

/* Answer the n commands of a group that never reached the local MTA. */
static int group_fail(struct atrn *a, struct smtp_io *r, size_t from, const char *why)
{
    for (size_t i = from; i < a->nverbs; i++)
        if (relay_send(a, r, "%s", why) != 0)
            return -1;
    return 0;
}

/*
 * A command of a transaction, with the commands the relay pipelined after
 * it, to the local MTA - in one write when the local MTA offers PIPELINING
 * (RFC 2920) - and each reply, in order, to the relay. A local MTA that
 * cannot be reached or fails is answered for with 4xx, never 2xx. A
 * transaction starts on a fresh connection when the one we hold has been
 * closed by the local MTA meanwhile (its own idle timeout). *last_code:
 * the reply to the group's last command (354: the message follows).
 * -1: the relay's connection failed.
 */
static int forward_group(struct atrn *a, struct smtp_io *r, const char *line, enum smtp_verb verb,
                         int *last_code)
{
    struct smtp_io_reply rep;
    size_t glen, i;
    int pipelining = smtp_io_has_keyword(&a->local_ehlo, "PIPELINING");
    char why[300];

    *last_code = 451;
    glen = (size_t)snprintf(a->grp, GROUP_BUF, "%s\r\n", line);
    a->nverbs = 0;
    a->verbs[a->nverbs++] = verb;
    say(a, "%s: -> %s", a->deliver_to, line);
    while (pipelining && verb != SMTP_CMD_DATA && a->nverbs < GROUP_MAX) {
        size_t keep, take = group_next(r, &keep, &verb);
        if (take == 0 || glen + keep + 2 > GROUP_BUF)
            break;
        say(a, "relay: <- %.*s", (int)keep, r->in);
        say(a, "%s: -> %.*s", a->deliver_to, (int)keep, r->in);
        memcpy(a->grp + glen, r->in, keep);
        memcpy(a->grp + glen + keep, "\r\n", 2);
        glen += keep + 2;
        a->verbs[a->nverbs++] = verb;
        smtp_io_consume(r, take);
    }
    for (int attempt = 0;; attempt++) {
        if (!a->local_up && local_open(a) != 0) {
            say(a, "local MTA: %s", a->local.err);
            snprintf(why, sizeof(why), "451 4.4.1 local MTA unreachable: %.200s", a->local.err);
            return group_fail(a, r, 0, why);
        }
        if (smtp_io_write(&a->local, a->grp, glen) == 0 && smtp_io_read_reply(&a->local, &rep) == 0)
            break;
        say(a, "local MTA: %s", a->local.err);
        smtp_io_close(&a->local);
        a->local_up = 0;
        if (attempt == 1 || a->verbs[0] != SMTP_CMD_MAIL)
            return group_fail(a, r, 0, "451 4.4.2 lost connection with the local MTA");
    }
    for (i = 0;;) {
        if (relay_send_reply(a, r, &rep) != 0)
            return -1;
        *last_code = rep.code;
        if (++i == a->nverbs)
            return 0;
        if (smtp_io_read_reply(&a->local, &rep) != 0) {
            say(a, "local MTA: %s", a->local.err);
            smtp_io_close(&a->local);
            a->local_up = 0;
            *last_code = 451;
            return group_fail(a, r, i, "451 4.4.2 lost connection with the local MTA");
        }
    }
}

/* The EHLO reply we give the relay: what the local MTA can take, so the
 * relay never uses an extension the site would refuse. */
static int relay_ehlo(struct atrn *a, struct smtp_io *r)
{
    static const char *const mirror[] = {"8BITMIME", "SIZE", "DSN", "SMTPUTF8"};
    char params[256];
    int rc = relay_send(a, r, "250-%s", a->helo);

    if (rc == 0)
        rc = relay_send(a, r, "250-PIPELINING");
    for (size_t i = 0; rc == 0 && i < sizeof(mirror) / sizeof(mirror[0]); i++) {
        if (!smtp_io_keyword_params(&a->local_ehlo, mirror[i], params, sizeof(params)))
            continue;
        rc = params[0] ? relay_send(a, r, "250-%s %s", mirror[i], params)
                       : relay_send(a, r, "250-%s", mirror[i]);
    }
    if (rc == 0)
        rc = relay_send(a, r, "250 ENHANCEDSTATUSCODES");
    return rc;
}

/*
 * After the relay's 250: greet, then serve the relay until it QUITs.
 * RFC 2645 §4.4: the relay now is the SMTP client. Every outcome lands in
 * res; returns the exit status of the turn.
 */
static int serve_turn(struct atrn *a, struct smtp_io *r, struct relay_result *res)
{
    char line[4096];
    char head[HEAD_KEEP];
    int quit = 0;

    /* nothing the relay sent before our greeting is a command of this role */
    if (relay_send(a, r, "220 %s ESMTP etrnctl ready", a->helo) != 0)
        goto relay_lost;
    while (!quit) {
        struct smtp_cmd cmd;
        struct smtp_io_reply rep;

        if (relay_line(a, r, line, sizeof(line)) != 0)
            goto relay_lost;
        say(a, "%s: <- %s", res->label, line);
        if (smtp_cmd_parse(line, strlen(line), &cmd) != SMTP_PARSE_OK) {
            if (relay_send(a, r, "500 5.5.2 Error: bad syntax") != 0)
                goto relay_lost;
            continue;
        }
        switch (cmd.verb) {
        case SMTP_CMD_EHLO:
            if (relay_ehlo(a, r) != 0)
                goto relay_lost;
            break;
        case SMTP_CMD_HELO:
            if (relay_send(a, r, "250 %s", a->helo) != 0)
                goto relay_lost;
            break;
        case SMTP_CMD_MAIL:
        case SMTP_CMD_RCPT:
        case SMTP_CMD_RSET:
        case SMTP_CMD_DATA: {
            struct txn_result *t;
            size_t headlen = 0;
            uint64_t bytes = 0;
            int local_ok, code;

            if (forward_group(a, r, line, cmd.verb, &code) != 0)
                goto relay_lost;
            /* the body follows only a 354 to a DATA (the group's last) */
            if (a->verbs[a->nverbs - 1] != SMTP_CMD_DATA || code != 354)
                break;
            local_ok = 1;
            if (relay_body(a, r, &local_ok, head, &headlen, &bytes) != 0)
                goto relay_lost;
            t = add_txn(res);
            if (t != NULL) {
                find_relay_id(head, headlen, t->relay_id, sizeof(t->relay_id));
                t->bytes = bytes;
            }
            if (!local_ok || smtp_io_read_reply(&a->local, &rep) != 0) {
                /* the site has not said it stored it: the relay keeps it */
                say(a, "local MTA: %s", a->local.err);
                smtp_io_close(&a->local);
                a->local_up = 0;
                if (t != NULL)
                    snprintf(t->local_reply, sizeof(t->local_reply), "(no reply: %.200s)",
                             a->local.err);
                res->refused++;
                if (relay_send(a, r, "451 4.4.2 lost connection with the local MTA") != 0)
                    goto relay_lost;
                break;
            }
            if (t != NULL) {
                snprintf(t->local_reply, sizeof(t->local_reply), "%.250s", rep.line);
                t->stored = rep.code / 100 == 2;
            }
            if (rep.code / 100 == 2) {
                res->messages++;
                res->bytes += bytes;
            } else {
                res->refused++;
            }
            /* the relay hears exactly what the site said */
            if (relay_send_reply(a, r, &rep) != 0)
                goto relay_lost;
            break;
        }
        case SMTP_CMD_NOOP:
            if (relay_send(a, r, "250 2.0.0 Ok") != 0)
                goto relay_lost;
            break;
        case SMTP_CMD_QUIT:
            (void)relay_send(a, r, "221 2.0.0 Bye");
            (void)relay_flush(a, r);
            quit = 1;
            break;
        default:
            if (relay_send(a, r, "502 5.5.1 Error: command not implemented") != 0)
                goto relay_lost;
            break;
        }
    }
    return 0;
relay_lost:
    snprintf(res->why, sizeof(res->why), "the relay's connection failed during the turn: %s",
             r->err);
    return EX_TEMPFAIL;
}

/* ---- one relay --------------------------------------------------------------------------- */

/* What a reply to ATRN means (RFC 2645 §4.3). */
static void classify_atrn(struct relay_result *res, const struct smtp_io_reply *r)
{
    res->code = r->code;
    snprintf(res->why, sizeof(res->why), "%s", r->line);
    switch (r->code) {
    case 250:
        res->status = 0;
        snprintf(res->what, sizeof(res->what), "delivered");
        break;
    case 453:
        res->status = 0;
        snprintf(res->what, sizeof(res->what), "nothing waiting");
        break;
    case 450:
    case 530:
        res->status = EX_NOPERM;
        snprintf(res->what, sizeof(res->what), "refused");
        break;
    case 451:
        res->status = EX_TEMPFAIL;
        snprintf(res->what, sizeof(res->what), "busy, try later");
        break;
    default:
        res->status = r->code / 100 == 4 ? EX_TEMPFAIL : EX_UNAVAILABLE;
        snprintf(res->what, sizeof(res->what), "%s",
                 r->code == 502 || r->code == 500 ? "relay does not offer ATRN" : "failed");
        break;
    }
}

static void fail(struct relay_result *res, int status, const char *what, const char *why)
{
    res->status = status;
    snprintf(res->what, sizeof(res->what), "%s", what);
    snprintf(res->why, sizeof(res->why), "%s", why);
}

/* AUTH (RFC 4954) with the account, through smtp_auth.c as etrn does it.
 * 0, or -1 with res filled in. */
static int authenticate(struct atrn *a, struct smtp_io *r, const struct smtp_io_reply *ehlo,
                        struct relay_result *res)
{
    char why[400];
    int st = smtp_auth(r, ehlo, a->user, a->password, a->mech, why, sizeof(why));

    if (st == 0)
        return 0;
    fail(res, st,
         st == EX_NOPERM        ? "AUTH refused"
         : st == EX_UNAVAILABLE ? "no usable AUTH"
         : st == EX_TEMPFAIL    ? "session failed"
                                : "AUTH failed",
         why);
    return -1;
}

/* One ODMR session with one relay. */
static void session(struct atrn *a, const char *spec, struct relay_result *res)
{
    struct smtp_io *r = calloc(1, sizeof(*r));
    struct smtp_io_reply rep;
    char host[256], line[1200];
    int port;
    double t;

    snprintf(res->label, sizeof(res->label), "%s", spec);
    if (r == NULL) {
        fail(res, EX_SOFTWARE, "internal error", "out of memory");
        return;
    }
    if (smtp_io_parse_hostport(spec, ATRN_PORT, host, sizeof(host), &port) != 0) {
        fail(res, EX_USAGE, "bad relay", spec);
        free(r);
        return;
    }
    snprintf(res->label, sizeof(res->label), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    smtp_io_init(r, res->label, a->timeout, a->o->verbose > 0);
    if (smtp_io_connect(r, host, port, NULL, 0) != 0) {
        fail(res, EX_TEMPFAIL, "cannot connect", r->err);
        goto done;
    }
    if (smtp_io_read_reply(r, &rep) != 0) {
        fail(res, EX_TEMPFAIL, "no greeting", r->err);
        goto done;
    }
    if (rep.code != 220) {
        fail(res, rep.code / 100 == 4 ? EX_TEMPFAIL : EX_UNAVAILABLE,
             "relay refused the connection", rep.line);
        goto done;
    }
    snprintf(line, sizeof(line), "EHLO %s", a->helo);
    if (smtp_io_cmd(r, line) != 0 || smtp_io_read_reply(r, &rep) != 0) {
        fail(res, EX_TEMPFAIL, "session failed", r->err);
        goto done;
    }
    if (rep.code != 250) {
        fail(res, rep.code / 100 == 4 ? EX_TEMPFAIL : EX_UNAVAILABLE, "EHLO failed", rep.line);
        goto done;
    }
    if (a->starttls) {
        if (!smtp_io_has_keyword(&rep, "STARTTLS")) {
            fail(res, EX_UNAVAILABLE, "relay does not offer STARTTLS",
                 "STARTTLS not in the EHLO reply");
            goto done;
        }
        if (smtp_io_cmd(r, "STARTTLS") != 0 || smtp_io_read_reply(r, &rep) != 0) {
            fail(res, EX_TEMPFAIL, "session failed", r->err);
            goto done;
        }
        if (rep.code != 220) {
            fail(res, rep.code / 100 == 4 ? EX_TEMPFAIL : EX_UNAVAILABLE, "STARTTLS refused",
                 rep.line);
            goto done;
        }
        if (smtp_io_starttls(r, a->tls, host, a->starttls == 2) != 0) {
            fail(res, EX_PROTOCOL, "TLS failed", r->err);
            goto done;
        }
        /* RFC 3207 §4.2: ask again over TLS */
        if (smtp_io_cmd(r, line) != 0 || smtp_io_read_reply(r, &rep) != 0) {
            fail(res, EX_TEMPFAIL, "session failed", r->err);
            goto done;
        }
        if (rep.code != 250) {
            fail(res, EX_PROTOCOL, "EHLO failed", rep.line);
            goto done;
        }
    }
    if (!smtp_io_has_keyword(&rep, "ATRN")) {
        fail(res, EX_UNAVAILABLE, "relay does not offer ATRN", "ATRN not in the EHLO reply");
        goto done;
    }
    if (authenticate(a, r, &rep, res) != 0)
        goto done;
    {
        size_t n = (size_t)snprintf(line, sizeof(line), "ATRN");
        for (size_t i = 0; i < a->ndomains && n < sizeof(line); i++)
            n += (size_t)snprintf(line + n, sizeof(line) - n, "%c%s", i ? ',' : ' ', a->domains[i]);
        if (n >= sizeof(line)) {
            fail(res, EX_USAGE, "too many domains", "the ATRN line would be too long");
            goto done;
        }
    }
    /* RFC 2645 §4.3: the relay reads its queue before it answers */
    t = r->timeout;
    r->timeout = a->timeout > ATRN_WAIT_MIN ? a->timeout : ATRN_WAIT_MIN;
    if (smtp_io_cmd(r, line) != 0 || smtp_io_read_reply(r, &rep) != 0) {
        fail(res, EX_TEMPFAIL, "session failed", r->err);
        goto done;
    }
    r->timeout = t;
    classify_atrn(res, &rep);
    if (rep.code != 250) {
        if (smtp_io_cmd(r, "QUIT") == 0)
            (void)smtp_io_read_reply(r, &rep);
        goto done;
    }
    if (r->inlen > 0) {
        /* RFC 2645 §4.4: the relay waits for our greeting first */
        fail(res, EX_PROTOCOL, "protocol error", "the relay sent data before our greeting");
        goto done;
    }
    /* a fresh connection to the local MTA for the transactions: the one
     * opened first only proved it answers, and may have timed out since */
    if (local_open(a) != 0)
        say(a, "local MTA: %s (each transaction will try again)", a->local.err);
    res->status = serve_turn(a, r, res);
    if (res->status != 0)
        snprintf(res->what, sizeof(res->what), "turn interrupted");
done:
    smtp_io_close(r);
    free(r);
}

/* ---- output ------------------------------------------------------------------------------ */

static void json_str(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(fp, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(fp, "\\u%04x", *p);
        else
            fputc(*p, fp);
    }
    fputc('"', fp);
}

static void report(const struct atrn *a, const struct relay_result *res)
{
    FILE *fp = stdout;

    if (a->o->json) {
        fprintf(fp, "{\"relay\":");
        json_str(fp, res->label);
        fprintf(fp, ",\"deliver_to\":");
        json_str(fp, a->deliver_to);
        fprintf(fp, ",\"status\":%d,\"result\":", res->status);
        json_str(fp, res->what);
        fprintf(fp, ",\"code\":%d,\"reply\":", res->code);
        json_str(fp, res->why);
        fprintf(fp, ",\"messages\":%llu,\"bytes\":%llu,\"refused\":%llu,\"transactions\":[",
                (unsigned long long)res->messages, (unsigned long long)res->bytes,
                (unsigned long long)res->refused);
        for (size_t i = 0; i < res->ntxns; i++) {
            fprintf(fp, "%s{\"relay_id\":", i ? "," : "");
            json_str(fp, res->txns[i].relay_id);
            fprintf(fp, ",\"bytes\":%llu,\"stored\":%s,\"local_reply\":",
                    (unsigned long long)res->txns[i].bytes, res->txns[i].stored ? "true" : "false");
            json_str(fp, res->txns[i].local_reply);
            fputc('}', fp);
        }
        fprintf(fp, "]}\n");
        fflush(fp);
        return;
    }
    if (a->o->quiet && res->status == 0)
        return;
    fp = res->status == 0 ? stdout : stderr;
    if (res->code == 250) {
        char refused[64] = "";
        if (res->refused > 0)
            snprintf(refused, sizeof(refused), ", %llu not taken by it",
                     (unsigned long long)res->refused);
        fprintf(fp, "%s: %llu message%s (%llu bytes) delivered to %s%s%s%s\n", res->label,
                (unsigned long long)res->messages, res->messages == 1 ? "" : "s",
                (unsigned long long)res->bytes, a->deliver_to, refused, res->status ? "; " : "",
                res->status ? res->why : "");
    } else
        fprintf(fp, "%s: %s (%s)\n", res->label, res->what, res->why);
    if (a->o->verbose)
        for (size_t i = 0; i < res->ntxns; i++)
            fprintf(stderr, "etrnctl: %s: %s -> %s\n", res->label,
                    res->txns[i].relay_id[0] ? res->txns[i].relay_id : "?",
                    res->txns[i].local_reply);
    fflush(fp);
}

/* ---- arguments --------------------------------------------------------------------------- */

void atrn_cmd_usage(FILE *fp)
{
    fprintf(fp,
            "  atrn -H RELAY[:PORT] --user NAME --password-file FILE --deliver-to HOST[:PORT]\n"
            "       [--starttls[=verify]] [--tls-ca FILE] [--mech MECH] [--helo NAME]\n"
            "       [--retry N] [--retry-delay D] [--timeout D] [--json] [-q|-v] [DOMAIN...]\n"
            "      pull the domains' mail from the relay (ODMR, RFC 2645) and hand it to the\n"
            "      local MTA; no DOMAIN: every domain of the account; defaults: ETRN_RELAYS,\n"
            "      ETRN_USER, ETRN_PASSWORD_FILE, ATRN_DELIVER_TO in " ETRNCTL_DEFAULTS_FILE "\n");
}

static void usage_atrn(FILE *fp)
{
    fprintf(fp, "usage: etrnctl atrn [options] [DOMAIN...]\n");
    atrn_cmd_usage(fp);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    etrnctl_warn("atrn: %s", line);
    usage_atrn(stderr);
    return EX_USAGE;
}

enum {
    OPT_USER = ETRNCTL_OPT_FIRST_LOCAL,
    OPT_PASSWORD_FILE,
    OPT_DELIVER_TO,
    OPT_STARTTLS,
    OPT_TLS_CA,
    OPT_MECH,
    OPT_HELO,
    OPT_RETRY,
    OPT_RETRY_DELAY,
    OPT_TIMEOUT,
};

static void take_default(void *arg, const char *name, char *value)
{
    struct atrn *a = arg;
    char **slot = strcmp(name, "ETRN_RELAYS") == 0          ? &a->def_relays
                  : strcmp(name, "ETRN_USER") == 0          ? &a->def_user
                  : strcmp(name, "ETRN_PASSWORD_FILE") == 0 ? &a->def_password_file
                  : strcmp(name, "ATRN_DELIVER_TO") == 0    ? &a->def_deliver_to
                                                            : NULL;

    if (slot == NULL) {
        free(value);
        return;
    }
    free(*slot);
    *slot = value;
}

/* The password (smtp_auth.c: the file's first line without its line end). */
static int read_password(struct atrn *a)
{
    char why[300];
    int st = smtp_auth_read_password(a->password_file, a->password, sizeof(a->password), why,
                                     sizeof(why));

    if (st != 0)
        etrnctl_warn("atrn: %s", why);
    return st;
}

static int parse_args(struct atrn *a, int argc, char **argv)
{
    static const struct option longopts[] = {
        ETRNCTL_GLOBAL_LONGOPTS,
        {"relay", required_argument, NULL, 'H'},
        {"user", required_argument, NULL, OPT_USER},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"deliver-to", required_argument, NULL, OPT_DELIVER_TO},
        {"starttls", optional_argument, NULL, OPT_STARTTLS},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"mech", required_argument, NULL, OPT_MECH},
        {"helo", required_argument, NULL, OPT_HELO},
        {"retry", required_argument, NULL, OPT_RETRY},
        {"retry-delay", required_argument, NULL, OPT_RETRY_DELAY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "+" ETRNCTL_GLOBAL_SHORTOPTS "H:", longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, a->o, usage_atrn))
            continue;
        switch (c) {
        case 'H':
            if (a->nrelay_args == MAX_RELAYS)
                return usage_error("at most %d relays", MAX_RELAYS);
            a->relay_args[a->nrelay_args++] = optarg;
            break;
        case OPT_USER:
            a->user = optarg;
            break;
        case OPT_PASSWORD_FILE:
            a->password_file = optarg;
            break;
        case OPT_DELIVER_TO:
            a->deliver_to = optarg;
            break;
        case OPT_STARTTLS:
            if (optarg == NULL)
                a->starttls = 1;
            else if (strcmp(optarg, "verify") == 0)
                a->starttls = 2;
            else
                return usage_error("--starttls takes no value or =verify");
            break;
        case OPT_TLS_CA:
            a->tls_ca = optarg;
            break;
        case OPT_MECH:
            a->mech = optarg;
            break;
        case OPT_HELO:
            a->helo = optarg;
            break;
        case OPT_RETRY:
            if (etrnctl_parse_uint(optarg, &a->retries) != 0 || a->retries > 100)
                return usage_error("--retry takes a number from 0 to 100");
            break;
        case OPT_RETRY_DELAY:
            if (etrnctl_parse_duration(optarg, &a->retry_delay) != 0)
                return usage_error("bad --retry-delay: %s", optarg);
            break;
        case OPT_TIMEOUT:
            if (etrnctl_parse_duration(optarg, &a->timeout) != 0 || a->timeout <= 0)
                return usage_error("bad --timeout: %s", optarg);
            break;
        default:
            usage_atrn(stderr);
            return EX_USAGE;
        }
    }
    for (int i = optind; i < argc; i++) {
        struct smtp_atrn_arg one;
        if (a->ndomains == MAX_DOMAINS)
            return usage_error("at most %d domains", MAX_DOMAINS);
        if (smtp_parse_atrn(argv[i], strlen(argv[i]), &one) != SMTP_PARSE_OK || one.n != 1)
            return usage_error("not a domain: %s", argv[i]);
        a->domains[a->ndomains++] = argv[i];
    }
    return 0;
}

/* Fill what the command line left open from the defaults file. */
static int settle_args(struct atrn *a)
{
    int st = etrnctl_defaults_read(take_default, a);
    char err[256];

    if (st != 0)
        return st;
    if (a->nrelay_args == 0 && a->def_relays != NULL) {
        char *save = NULL;
        for (char *w = strtok_r(a->def_relays, " ,\t", &save); w != NULL;
             w = strtok_r(NULL, " ,\t", &save)) {
            if (a->nrelay_args == MAX_RELAYS)
                return usage_error("at most %d relays", MAX_RELAYS);
            a->relay_args[a->nrelay_args++] = w;
        }
    }
    if (a->user == NULL)
        a->user = a->def_user;
    if (a->password_file == NULL)
        a->password_file = a->def_password_file;
    if (a->deliver_to == NULL)
        a->deliver_to = a->def_deliver_to;
    if (a->nrelay_args == 0)
        return usage_error("no relay (-H, or ETRN_RELAYS in %s)", ETRNCTL_DEFAULTS_FILE);
    if (a->user == NULL || *a->user == '\0')
        return usage_error("no account (--user, or ETRN_USER in %s)", ETRNCTL_DEFAULTS_FILE);
    if (a->password_file == NULL || *a->password_file == '\0')
        return usage_error("no password file (--password-file, or ETRN_PASSWORD_FILE in %s)",
                           ETRNCTL_DEFAULTS_FILE);
    if (a->deliver_to == NULL || *a->deliver_to == '\0')
        return usage_error("no local MTA (--deliver-to, or ATRN_DELIVER_TO in %s)",
                           ETRNCTL_DEFAULTS_FILE);
    if (smtp_io_parse_hostport(a->deliver_to, 25, a->local_host, sizeof(a->local_host),
                               &a->local_port) != 0)
        return usage_error("bad --deliver-to: %s", a->deliver_to);
    if (a->helo == NULL) {
        if (gethostname(a->helo_buf, sizeof(a->helo_buf) - 1) != 0 || a->helo_buf[0] == '\0')
            snprintf(a->helo_buf, sizeof(a->helo_buf), "localhost");
        a->helo = a->helo_buf;
    }
    for (const char *p = a->helo; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
            return usage_error("bad --helo: %s", a->helo);
    st = read_password(a);
    if (st != 0)
        return st;
    if (a->starttls) {
        a->tls = tls_ctx_new_client(a->starttls == 2, a->tls_ca, err, sizeof(err));
        if (a->tls == NULL) {
            etrnctl_warn("atrn: TLS: %s", err);
            return EX_SOFTWARE;
        }
    }
    return 0;
}

static void sleep_for(double s)
{
    if (s > 0)
        usleep((useconds_t)(s * 1e6));
}

int atrn_cmd_main(int argc, char **argv, struct etrnctl_opts *o)
{
    struct atrn *a = calloc(1, sizeof(*a));
    int st = 0;

    if (a == NULL) {
        etrnctl_warn("out of memory");
        return EX_OSERR;
    }
    a->o = o;
    a->timeout = 30;
    a->retry_delay = 10;
    smtp_io_init(&a->local, "", a->timeout, 0);
    st = parse_args(a, argc, argv);
    if (st == 0)
        st = settle_args(a);
    if (st != 0)
        goto done;
    a->out = malloc(OUT_BUF);
    a->rout = malloc(OUT_BUF);
    a->grp = malloc(GROUP_BUF);
    if (a->out == NULL || a->rout == NULL || a->grp == NULL) {
        st = EX_OSERR;
        goto done;
    }
    /* the site's MTA first: pulling mail it cannot take would only move
     * it from the relay's queue into a 451 */
    if (local_open(a) != 0) {
        etrnctl_warn("atrn: local MTA %s: %s; not asking the relay", a->deliver_to, a->local.err);
        st = EX_TEMPFAIL;
        goto done;
    }
    say(a, "local MTA %s answers", a->deliver_to);
    for (size_t i = 0; i < a->nrelay_args; i++) {
        struct relay_result res;
        int attempt = 0;

        for (;;) {
            memset(&res, 0, sizeof(res));
            session(a, a->relay_args[i], &res);
            /* a turn that began may have delivered: never repeat it blindly */
            if (res.status != EX_TEMPFAIL || res.code == 250 || attempt >= a->retries)
                break;
            attempt++;
            say(a, "%s: %s (%s); attempt %d of %d in %.0fs", res.label, res.what, res.why,
                attempt + 1, a->retries + 1, a->retry_delay);
            free(res.txns);
            sleep_for(a->retry_delay);
        }
        report(a, &res);
        st = etrnctl_worse(st, res.status);
        free(res.txns);
    }
done:
    local_close(a);
    if (a->tls != NULL)
        tls_ctx_free(a->tls);
    explicit_bzero(a->password, sizeof(a->password));
    free(a->out);
    free(a->rout);
    free(a->grp);
    free(a->def_relays);
    free(a->def_user);
    free(a->def_password_file);
    free(a->def_deliver_to);
    free(a);
    return st;
}
