/*
 * smtp_client: the client side of one SMTP session (see smtp_client.h) as an
 * explicit state machine over a conn. Owns its timer, its input buffer and
 * the outgoing command and body chunks; borrows each message until on_sent.
 * Judges no reply: every outcome goes back to the caller, which owns the queue.
 */
#include "smtp_client.h"
#include "buf.h"
#include "conn.h"
#include "log.h"
#include "smtp_parse.h"
#include "smtp_reply.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 5321 §4.5.3.2 defaults, used when an option is 0. */
#define CL_CONNECT_TIMEOUT_MS 30000
#define CL_COMMAND_TIMEOUT_MS 300000 /* greeting, MAIL, RCPT: 5 min */
#define CL_DATA_TIMEOUT_MS    600000 /* the final dot: 10 min */

/* Bounds on what a server may send us (a reply's are in smtp_reply.h). */
#define CL_LINE_MAX 2048
#define CL_IN_PIECE 4096 /* input is fed to the line splitter in pieces this big */

/* Body output: stuffed in pieces of CL_CHUNK bytes; more is produced only
 * while less than CL_HIGH_WATER bytes wait in the conn (then on_drain). */
#define CL_CHUNK      (64 * 1024)
#define CL_HIGH_WATER (256 * 1024)
#define CL_CMD_MAX    (8 * 1024 * 1024) /* one pipelined MAIL+RCPT...+DATA group */
/* A streamed body is asked for in pieces of this much: one piece per
 * connection in memory, and few enough questions that the store's reads
 * (each finds its offset in the blob's page chain anew) stay cheap. */
#define CL_STREAM_PIECE (256 * 1024)

#define CL_NAME_MAX 256

/* EHLO keywords we act on: lib/smtp_reply.h */
#define EXT_PIPELINING SMTP_EXT_PIPELINING
#define EXT_SIZE       SMTP_EXT_SIZE
#define EXT_STARTTLS   SMTP_EXT_STARTTLS
#define EXT_8BITMIME   SMTP_EXT_8BITMIME
#define EXT_DSN        SMTP_EXT_DSN

enum cl_state {
    ST_CONNECTING,  /* TCP connect running */
    ST_GREETING,    /* waiting for 220 */
    ST_EHLO,        /* EHLO sent */
    ST_HELO,        /* HELO sent after EHLO was refused */
    ST_STARTTLS,    /* STARTTLS sent, waiting for 220 */
    ST_TLS,         /* TLS handshake running */
    ST_READY,       /* idle: a message may be sent */
    ST_LOCAL,       /* a message refused locally (SIZE); on_sent on the next loop turn */
    ST_MAIL,        /* waiting for the MAIL reply */
    ST_RCPT,        /* waiting for RCPT replies */
    ST_DATA,        /* waiting for the DATA reply (354) */
    ST_BODY,        /* sending the body; no reply expected */
    ST_DOT,         /* waiting for the reply to the final dot */
    ST_DOT_DISCARD, /* ending a DATA nobody should have accepted; reply ignored */
    ST_RSET,        /* RSET sent after a transaction that did not reach the dot */
    ST_QUIT,        /* QUIT sent */
    ST_CLOSING,     /* the conn is closing; only on_closed follows */
    ST_COUNT
};

static const char *const cl_state_names[ST_COUNT] = {
    [ST_CONNECTING] = "CONNECTING",
    [ST_GREETING] = "GREETING",
    [ST_EHLO] = "EHLO",
    [ST_HELO] = "HELO",
    [ST_STARTTLS] = "STARTTLS",
    [ST_TLS] = "TLS",
    [ST_READY] = "READY",
    [ST_LOCAL] = "LOCAL",
    [ST_MAIL] = "MAIL",
    [ST_RCPT] = "RCPT",
    [ST_DATA] = "DATA",
    [ST_BODY] = "BODY",
    [ST_DOT] = "DOT",
    [ST_DOT_DISCARD] = "DOT_DISCARD",
    [ST_RSET] = "RSET",
    [ST_QUIT] = "QUIT",
    [ST_CLOSING] = "CLOSING",
};

/* What we were doing in each state, for "lost connection with X while ...". */
static const char *const cl_state_doing[ST_COUNT] = {
    [ST_CONNECTING] = "connecting",
    [ST_GREETING] = "receiving the initial server greeting",
    [ST_EHLO] = "performing the EHLO handshake",
    [ST_HELO] = "performing the HELO handshake",
    [ST_STARTTLS] = "sending STARTTLS",
    [ST_TLS] = "performing the TLS handshake",
    [ST_READY] = "waiting to send the next message",
    [ST_LOCAL] = "waiting to send the next message",
    [ST_MAIL] = "sending MAIL FROM",
    [ST_RCPT] = "sending RCPT TO",
    [ST_DATA] = "sending DATA command",
    [ST_BODY] = "sending message body",
    [ST_DOT] = "sending end of data -- message may be sent more than once",
    [ST_DOT_DISCARD] = "ending an empty DATA",
    [ST_RSET] = "sending RSET",
    [ST_QUIT] = "sending QUIT",
    [ST_CLOSING] = "closing the connection",
};

#define B(s) (1u << (s))
/* Allowed moves; CLOSING is reachable from everywhere and leads nowhere. */
static const unsigned cl_transitions[ST_COUNT] = {
    [ST_CONNECTING] = B(ST_GREETING),
    [ST_GREETING] = B(ST_EHLO) | B(ST_QUIT),
    [ST_EHLO] = B(ST_HELO) | B(ST_STARTTLS) | B(ST_READY) | B(ST_QUIT),
    [ST_HELO] = B(ST_READY) | B(ST_QUIT), /* HELO announces nothing: no STARTTLS */
    /* READY: tls = may goes on in clear after a refused STARTTLS (RFC 3207 §4) */
    [ST_STARTTLS] = B(ST_TLS) | B(ST_READY) | B(ST_QUIT),
    [ST_TLS] = B(ST_EHLO),
    [ST_READY] = B(ST_MAIL) | B(ST_LOCAL) | B(ST_QUIT),
    [ST_LOCAL] = B(ST_READY),
    [ST_MAIL] = B(ST_RCPT) | B(ST_READY),
    [ST_RCPT] = B(ST_DATA) | B(ST_RSET),
    [ST_DATA] = B(ST_BODY) | B(ST_DOT_DISCARD) | B(ST_RSET) | B(ST_READY),
    [ST_BODY] = B(ST_DOT),
    [ST_DOT] = B(ST_READY),
    [ST_DOT_DISCARD] = B(ST_RSET),
    [ST_RSET] = B(ST_READY),
    [ST_QUIT] = 0,
    [ST_CLOSING] = 0,
};
#undef B

/* Why a session ends early; picks the local reply's wording. */
enum cl_fail_kind { FAIL_LOST, FAIL_TIMEOUT, FAIL_PROTOCOL, FAIL_CANCEL };

struct smtp_client {
    uv_loop_t *loop;
    struct conn *conn; /* NULL once the conn's on_closed ran */
    uv_timer_t timer;  /* the running timeout, or the deferred local on_sent */
    struct smtp_client_cbs cbs;
    void *udata;

    /* opts, with the strings copied; tls_ctx is borrowed for our lifetime */
    enum smtp_client_tls tls;
    struct tls_ctx *tls_ctx;
    char helo_name[CL_NAME_MAX];
    char tls_host[CL_NAME_MAX]; /* "" = none */
    uint64_t connect_timeout, command_timeout, data_timeout;
    char peer[CL_NAME_MAX + 80]; /* "name[addr]:port" */

    enum cl_state state;
    int ready_reported; /* on_ready has been called */
    int hard_close;     /* smtp_client_abort: reset, do not flush */
    int tls_done;       /* STARTTLS completed (RFC 3207) */
    int setup_status;   /* what on_ready gets if set-up fails: SMTP_CLIENT_ERR[_TLS] */
    struct smtp_client_reply tls_refused; /* code 0, or the STARTTLS refusal tls = may got */
    unsigned ext;                         /* EXT_* of the current EHLO */
    uint64_t size_limit;                  /* SIZE n, 0 = none announced */

    struct buf in;               /* owned: received text not yet split into lines */
    struct smtp_reply_reader rp; /* the reply being read, and the last one */

    /* the message in flight (borrowed from the caller until on_sent) */
    struct smtp_client_msg *msg;
    int pipelined;     /* this transaction's commands went out as one group */
    int mail_failed;   /* MAIL was refused: every rcpt has that reply */
    size_t rcpt_next;  /* the RCPT whose reply comes next (or is sent next) */
    size_t naccepted;  /* RCPTs answered 2xx */
    size_t body_off;   /* body bytes already stuffed and written */
    int at_line_start; /* the last body byte written ended a line */
    char tail[2];      /* the last two body bytes written */
    int waiting_drain; /* body output paused until on_drain */
    int body_asked;    /* streamed body: on_body asked for bytes, not answered yet */
    int in_on_body;    /* inside on_body (an answer from there must not recurse) */
    struct buf cmd;    /* owned: commands being composed */
    char *chunk;       /* owned, CL_CHUNK + 2: stuffed body piece */
};

static void cl_fail(struct smtp_client *cl, enum cl_fail_kind kind, const char *detail,
                    const struct smtp_client_reply *server);
static void cl_reply(struct smtp_client *cl, const struct smtp_client_reply *r);
static void cl_ready(struct smtp_client *cl);

/* ---- small helpers -------------------------------------------------------------------- */

/* Move to state next, checking the transition table and tracing old -> new. */
static void cl_enter(struct smtp_client *cl, enum cl_state next)
{
    enum cl_state old = cl->state;

    if (old == next)
        return;
    if (next != ST_CLOSING && !(cl_transitions[old] & (1u << next))) {
        log_error("smtp_client %s: illegal transition %s -> %s", cl->peer, cl_state_names[old],
                  cl_state_names[next]);
        assert(!"illegal smtp_client state transition");
    }
    log_debug("smtp_client %s: %s -> %s", cl->peer, cl_state_names[old], cl_state_names[next]);
    cl->state = next;
}

static void cl_set_reply(struct smtp_client_reply *r, int code, const char *enh, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

/* Fill a locally made reply. */
static void cl_set_reply(struct smtp_client_reply *r, int code, const char *enh, const char *fmt,
                         ...)
{
    va_list ap;

    r->local = 1;
    r->code = code;
    snprintf(r->enh, sizeof(r->enh), "%s", enh);
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
}

static void cl_timeout_cb(uv_timer_t *t);

static void cl_arm(struct smtp_client *cl, uint64_t ms)
{
    uv_timer_start(&cl->timer, cl_timeout_cb, ms, 0);
}

/* Queue bytes for the server; a failure ends the session (reported by the caller). */
static int cl_write(struct smtp_client *cl, const void *data, size_t len)
{
    int r = cl->conn != NULL ? conn_write(cl->conn, data, len) : UV_ENOTCONN;

    if (r < 0)
        log_debug("smtp_client %s: write failed: %s", cl->peer, uv_strerror(r));
    return r;
}

/* Write a short command and wait for its reply with timeout ms. */
static int cl_command(struct smtp_client *cl, const char *text, enum cl_state next, uint64_t ms)
{
    int r = cl_write(cl, text, strlen(text));

    if (r < 0) {
        cl_fail(cl, FAIL_LOST, NULL, NULL);
        return r;
    }
    cl_enter(cl, next);
    cl_arm(cl, ms);
    return 0;
}

/* Start closing the conn; on_closed follows from the conn's close. hard:
 * reset rather than flush (a server that stopped answering or lied). */
static void cl_close(struct smtp_client *cl, int hard)
{
    if (cl->state == ST_CLOSING)
        return;
    cl_enter(cl, ST_CLOSING);
    uv_timer_stop(&cl->timer);
    if (cl->conn != NULL) {
        if (hard || cl->hard_close)
            conn_abort(cl->conn);
        else
            conn_close(cl->conn);
    }
}

/* Hand the message back: state READY first, so the caller may send the next
 * one from inside on_sent. */
static void cl_finish_msg(struct smtp_client *cl, int status)
{
    struct smtp_client_msg *m = cl->msg;

    cl->msg = NULL;
    uv_timer_stop(&cl->timer);
    if (status == 0)
        cl_enter(cl, ST_READY);
    if (m != NULL && cl->cbs.on_sent != NULL)
        cl->cbs.on_sent(cl, m, status);
}

/* Report whatever the caller still waits for after a failure: on_ready if it
 * has not come, else on_sent for the message in flight, where every
 * recipient without a final reply (none yet, or only its 2xx RCPT reply)
 * gets r. Recipients the server already refused keep that reply. */
static void cl_report_failure(struct smtp_client *cl, const struct smtp_client_reply *r)
{
    if (!cl->ready_reported) {
        cl->ready_reported = 1;
        if (cl->cbs.on_ready != NULL)
            cl->cbs.on_ready(cl, cl->setup_status, r);
        return;
    }
    if (cl->msg != NULL) {
        for (size_t i = 0; i < cl->msg->nrcpts; i++) {
            struct smtp_client_rcpt *rc = &cl->msg->rcpts[i];
            if (rc->reply.code == 0 || rc->reply.code / 100 == 2)
                rc->reply = *r;
        }
        cl_finish_msg(cl, -1);
    }
}

/* The session cannot go on: make the local 4xx reply, close the conn and
 * report. server: a 4xx/5xx reply the server sent where none was due (it
 * said why before closing); accepted recipients get it instead. */
static void cl_fail(struct smtp_client *cl, enum cl_fail_kind kind, const char *detail,
                    const struct smtp_client_reply *server)
{
    struct smtp_client_reply r;
    enum cl_state was = cl->state;
    const char *doing = cl_state_doing[was];

    if (was == ST_CLOSING)
        return;
    if (was == ST_TLS)
        cl->setup_status = SMTP_CLIENT_ERR_TLS; /* e.g. a handshake that never ends */
    memset(&r, 0, sizeof(r));
    if (server != NULL)
        r = *server;
    else if (kind == FAIL_TIMEOUT)
        cl_set_reply(&r, 421, "4.4.2", "conversation with %s timed out while %s", cl->peer, doing);
    else if (kind == FAIL_PROTOCOL)
        cl_set_reply(&r, 421, "4.5.0", "protocol error with %s while %s: %s", cl->peer, doing,
                     detail ? detail : "");
    else if (kind == FAIL_CANCEL)
        cl_set_reply(&r, 421, "4.3.0", "session with %s cancelled while %s", cl->peer, doing);
    else if (was == ST_CONNECTING)
        cl_set_reply(&r, 421, "4.4.1", "connect to %s failed: %s", cl->peer,
                     detail ? detail : "connection closed");
    else
        cl_set_reply(&r, 421, "4.4.2", "lost connection with %s while %s", cl->peer, doing);

    if (was == ST_QUIT || (was == ST_READY && kind == FAIL_LOST))
        log_debug("smtp_client %s: %s", cl->peer, r.text); /* nothing was at stake */
    else if (kind == FAIL_PROTOCOL)
        log_warn("smtp_client %s: %s", cl->peer, r.text);
    else
        log_debug("smtp_client %s: %s", cl->peer, r.text);
    cl_close(cl, kind != FAIL_LOST && kind != FAIL_CANCEL);
    cl_report_failure(cl, &r);
}

/* The session could not be set up, but the connection works: say so, then
 * end it politely with QUIT (RFC 5321 §3.1 after a 554 greeting). */
static void cl_setup_failed(struct smtp_client *cl, const struct smtp_client_reply *why)
{
    log_debug("smtp_client %s: setup failed: %d %s %s", cl->peer, why->code, why->enh, why->text);
    if (cl_write(cl, "QUIT\r\n", 6) == 0) {
        cl_enter(cl, ST_QUIT);
        cl_arm(cl, cl->command_timeout);
    } else {
        cl_close(cl, 1);
    }
    cl->ready_reported = 1;
    if (cl->cbs.on_ready != NULL)
        cl->cbs.on_ready(cl, cl->setup_status, why);
}

/* ---- reading replies ------------------------------------------------------------------ */

/* One reply line (without its line end); lib/smtp_reply.c reads the
 * reply. Returns 0, or -1 when the session ended. */
static int cl_line(struct smtp_client *cl, const char *line, size_t len)
{
    struct smtp_client_reply r;

    switch (smtp_reply_line(&cl->rp, line, len, cl->state == ST_EHLO)) {
    case SMTP_REPLY_MORE:
        return 0;
    case SMTP_REPLY_DONE:
        break;
    case SMTP_REPLY_TOO_LONG:
        cl_fail(cl, FAIL_PROTOCOL, "reply too long", NULL);
        return -1;
    default:
        cl_fail(cl, FAIL_PROTOCOL, "malformed reply line", NULL);
        return -1;
    }
    _Static_assert(sizeof(r.enh) == sizeof(cl->rp.enh), "enhanced code sizes differ");
    _Static_assert(sizeof(r.text) == sizeof(cl->rp.text), "reply text sizes differ");
    memset(&r, 0, sizeof(r));
    r.code = cl->rp.code;
    memcpy(r.enh, cl->rp.enh, sizeof(r.enh));
    memcpy(r.text, cl->rp.text, sizeof(r.text));
    cl_reply(cl, &r);
    return cl->state == ST_CLOSING ? -1 : 0;
}

/* Split the input into lines and act on each. Stops when the session ends
 * or STARTTLS starts (then everything buffered is dropped: RFC 3207 §5 and
 * CVE-2011-0411, nothing read in the clear may count after the switch). */
static void cl_process_lines(struct smtp_client *cl)
{
    char line[CL_LINE_MAX + 2];

    while (cl->state != ST_CLOSING && cl->in.len > 0) {
        char *nl = memchr(cl->in.data, '\n', cl->in.len);
        size_t len, used;
        if (nl == NULL) {
            if (cl->in.len > CL_LINE_MAX + 1)
                cl_fail(cl, FAIL_PROTOCOL, "reply line too long", NULL);
            return;
        }
        len = (size_t)(nl - cl->in.data);
        used = len + 1;
        if (len > 0 && cl->in.data[len - 1] == '\r')
            len--;
        if (len > CL_LINE_MAX) {
            cl_fail(cl, FAIL_PROTOCOL, "reply line too long", NULL);
            return;
        }
        memcpy(line, cl->in.data, len);
        buf_consume(&cl->in, used);
        if (cl_line(cl, line, len) < 0)
            return;
        if (cl->state == ST_TLS) {
            buf_reset(&cl->in);
            return;
        }
    }
}

static void cl_on_data(struct conn *c, const char *data, size_t len)
{
    struct smtp_client *cl = conn_udata(c);

    while (len > 0 && cl->state != ST_CLOSING && cl->state != ST_TLS) {
        size_t n = len < CL_IN_PIECE ? len : CL_IN_PIECE;
        if (buf_append(&cl->in, data, n) != 0) {
            cl_fail(cl, FAIL_PROTOCOL, "out of memory", NULL);
            return;
        }
        data += n;
        len -= n;
        cl_process_lines(cl);
    }
}

static void cl_on_eof(struct conn *c, int status)
{
    struct smtp_client *cl = conn_udata(c);

    cl_fail(cl, FAIL_LOST, status == UV_EOF ? NULL : uv_strerror(status), NULL);
}

static void cl_timeout_cb(uv_timer_t *t)
{
    struct smtp_client *cl = t->data;

    if (cl->state == ST_CONNECTING)
        cl_fail(cl, FAIL_LOST, "timed out", NULL);
    else if (cl->state == ST_QUIT)
        cl_close(cl, 1); /* RFC 5321 §4.1.1.10: we have said goodbye; enough */
    else
        cl_fail(cl, FAIL_TIMEOUT, NULL, NULL);
}

/* ---- session set-up ------------------------------------------------------------------- */

static void cl_send_ehlo(struct smtp_client *cl)
{
    char cmd[CL_NAME_MAX + 8];

    snprintf(cmd, sizeof(cmd), "EHLO %s\r\n", cl->helo_name);
    cl_command(cl, cmd, ST_EHLO, cl->command_timeout);
}

/* EHLO or HELO succeeded: STARTTLS per policy, or ready. */
static void cl_after_hello(struct smtp_client *cl)
{
    struct smtp_client_reply why;

    if (!cl->tls_done && cl->tls != SMTP_TLS_NONE) {
        if ((cl->ext & EXT_STARTTLS) && cl->tls_ctx != NULL) {
            cl_command(cl, "STARTTLS\r\n", ST_STARTTLS, cl->command_timeout);
            return;
        }
        if (cl->tls != SMTP_TLS_MAY) {
            /* RFC 3207 §4: a client that requires TLS must not go on without it. */
            cl_set_reply(&why, 451, "4.7.4", "TLS is required but was not offered by the server");
            cl->setup_status = SMTP_CLIENT_ERR_TLS;
            cl_setup_failed(cl, &why);
            return;
        }
    }
    cl_ready(cl);
}

/* The session is set up: messages may be sent. */
static void cl_ready(struct smtp_client *cl)
{
    uv_timer_stop(&cl->timer);
    cl_enter(cl, ST_READY);
    cl->ready_reported = 1;
    if (cl->cbs.on_ready != NULL)
        cl->cbs.on_ready(cl, 0, NULL);
}

static void cl_on_tls(struct conn *c, int status)
{
    struct smtp_client *cl = conn_udata(c);
    struct smtp_client_reply why;
    const char *err = conn_tls_error(c);

    if (cl->state != ST_TLS)
        return;
    if (status == 0 && cl->tls == SMTP_TLS_VERIFY && !conn_tls_peer_verified(c)) {
        status = -1;
        err = "certificate not verified";
    }
    if (status < 0) {
        if (cl->tls == SMTP_TLS_VERIFY && strstr(err, "verif") != NULL)
            cl_set_reply(&why, 451, "4.7.5", "server certificate not trusted: %s", err);
        else
            cl_set_reply(&why, 451, "4.7.5", "TLS handshake with %s failed: %s", cl->peer,
                         *err ? err : uv_strerror(status));
        log_debug("smtp_client %s: %s", cl->peer, why.text);
        /* No QUIT: the stream is in no state to carry one. */
        cl->setup_status = SMTP_CLIENT_ERR_TLS;
        cl_close(cl, 1);
        cl_report_failure(cl, &why);
        return;
    }
    /* RFC 3207 §4.2: forget what we knew and ask again over TLS. */
    cl->tls_done = 1;
    cl->ext = 0;
    cl->size_limit = 0;
    log_debug("smtp_client %s: TLS %s %s", cl->peer, conn_tls_version(c), conn_tls_cipher(c));
    cl_send_ehlo(cl);
}

/* ---- the mail transaction ------------------------------------------------------------- */

/* Text that goes into a command: printable, no CR/LF to smuggle a command in. */
static int cl_safe(const char *s, int allow_space)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f || (!allow_space && ch == ' '))
            return 0;
    }
    return 1;
}

/* Compose "RCPT TO:<a> [NOTIFY=..] [ORCPT=..]" (RFC 3461 §4.1, §4.2). */
static int cl_add_rcpt(struct smtp_client *cl, const struct smtp_client_rcpt *rc)
{
    int r = buf_appendf(&cl->cmd, "RCPT TO:<%s>", rc->address);

    if (r == 0 && (cl->ext & EXT_DSN) && rc->notify != 0) {
        if (rc->notify & SMTP_NOTIFY_NEVER) {
            r = buf_appendf(&cl->cmd, " NOTIFY=NEVER");
        } else {
            const char *sep = "";
            r = buf_appendf(&cl->cmd, " NOTIFY=");
            if (r == 0 && (rc->notify & SMTP_NOTIFY_SUCCESS)) {
                r = buf_appendf(&cl->cmd, "SUCCESS");
                sep = ",";
            }
            if (r == 0 && (rc->notify & SMTP_NOTIFY_FAILURE)) {
                r = buf_appendf(&cl->cmd, "%sFAILURE", sep);
                sep = ",";
            }
            if (r == 0 && (rc->notify & SMTP_NOTIFY_DELAY))
                r = buf_appendf(&cl->cmd, "%sDELAY", sep);
        }
    }
    if (r == 0 && (cl->ext & EXT_DSN) && rc->orcpt != NULL && *rc->orcpt)
        r = buf_appendf(&cl->cmd, " ORCPT=%s", rc->orcpt);
    if (r == 0)
        r = buf_append(&cl->cmd, "\r\n", 2);
    return r;
}

/* Compose "MAIL FROM:<s> [SIZE=] [BODY=] [RET=] [ENVID=]". */
static int cl_add_mail(struct smtp_client *cl, const struct smtp_client_msg *m)
{
    int r = buf_appendf(&cl->cmd, "MAIL FROM:<%s>", m->sender);

    if (r == 0 && (cl->ext & EXT_SIZE)) /* RFC 1870 §6 */
        r = buf_appendf(&cl->cmd, " SIZE=%zu", m->body_len);
    if (r == 0 && m->body_8bit && (cl->ext & EXT_8BITMIME)) /* RFC 6152 §3 */
        r = buf_appendf(&cl->cmd, " BODY=8BITMIME");
    if (r == 0 && (cl->ext & EXT_DSN) && m->ret != SMTP_RET_UNSET)
        r = buf_appendf(&cl->cmd, " RET=%s", m->ret == SMTP_RET_HDRS ? "HDRS" : "FULL");
    if (r == 0 && (cl->ext & EXT_DSN) && m->envid != NULL && *m->envid)
        r = buf_appendf(&cl->cmd, " ENVID=%s", m->envid);
    if (r == 0)
        r = buf_append(&cl->cmd, "\r\n", 2);
    return r;
}

static int cl_send_buffered(struct smtp_client *cl)
{
    int r = cl_write(cl, cl->cmd.data, cl->cmd.len);

    buf_reset(&cl->cmd);
    return r;
}

/* Write the next RCPT alone (no PIPELINING). */
static void cl_send_rcpt(struct smtp_client *cl)
{
    buf_reset(&cl->cmd);
    if (cl_add_rcpt(cl, &cl->msg->rcpts[cl->rcpt_next]) != 0 || cl_send_buffered(cl) < 0) {
        cl_fail(cl, FAIL_LOST, NULL, NULL);
        return;
    }
    cl_enter(cl, ST_RCPT);
    cl_arm(cl, cl->command_timeout);
}

/* The transaction will not reach the dot: RSET it (RFC 5321 §4.1.1.5), then
 * hand the message back. dot_first: the server said 354 to a DATA that had
 * no recipient left, so an empty message is ended first (RFC 2920 §3.1). */
static void cl_abandon(struct smtp_client *cl, int dot_first)
{
    if (dot_first) {
        if (cl_write(cl, ".\r\nRSET\r\n", 9) < 0) {
            cl_fail(cl, FAIL_LOST, NULL, NULL);
            return;
        }
        cl_enter(cl, ST_DOT_DISCARD);
        cl_arm(cl, cl->data_timeout);
        return;
    }
    cl_command(cl, "RSET\r\n", ST_RSET, cl->command_timeout);
}

/* Stuff len body bytes and write them, in pieces of at most CL_CHUNK
 * bytes; RFC 5321 §4.5.2: a line that starts with '.' gets one more.
 * 0, or -1 when the write failed (the session has ended then). */
static int cl_stuff_write(struct smtp_client *cl, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t n = 0;
        while (n < CL_CHUNK && i < len) {
            char ch = data[i++];
            if (cl->at_line_start && ch == '.')
                cl->chunk[n++] = '.';
            cl->chunk[n++] = ch;
            cl->at_line_start = ch == '\n';
            cl->tail[0] = cl->tail[1];
            cl->tail[1] = ch;
        }
        if (cl_write(cl, cl->chunk, n) < 0) {
            cl_fail(cl, FAIL_LOST, NULL, NULL);
            return -1;
        }
    }
    cl->body_off += len;
    return 0;
}

/* The body is out: the end is CRLF.CRLF, whose first CRLF ends the last
 * line; a body without a final line end gets one (RFC 5321 §4.1.1.4). */
static void cl_end_body(struct smtp_client *cl)
{
    int crlf = cl->tail[0] == '\r' && cl->tail[1] == '\n';

    cl_command(cl, cl->msg->body_len == 0 || crlf ? ".\r\n" : "\r\n.\r\n", ST_DOT,
               cl->data_timeout);
}

/* Send the body on. In memory: write pieces until it is out or the conn
 * holds CL_HIGH_WATER bytes (then on_drain). Streamed: ask for the next
 * piece only once everything written so far has reached the kernel, so
 * a slow server costs one piece of memory, not the message. */
static void cl_pump_body(struct smtp_client *cl)
{
    const struct smtp_client_msg *m = cl->msg;

    cl->waiting_drain = 0;
    while (cl->state == ST_BODY && !cl->body_asked) {
        size_t want = m->body_len - cl->body_off;
        if (want == 0) {
            cl_end_body(cl);
            return;
        }
        if (m->body != NULL ? conn_write_pending(cl->conn) >= CL_HIGH_WATER
                            : conn_write_pending(cl->conn) > 0) {
            cl->waiting_drain = 1;
            cl_arm(cl, cl->data_timeout);
            return;
        }
        if (want > (m->body != NULL ? CL_CHUNK : CL_STREAM_PIECE))
            want = m->body != NULL ? CL_CHUNK : CL_STREAM_PIECE;
        if (m->body != NULL) {
            if (cl_stuff_write(cl, m->body + cl->body_off, want) < 0)
                return;
            continue;
        }
        /* The answer (smtp_client_body) may come from inside on_body; the
         * loop then goes on here instead of recursing. */
        cl->body_asked = 1;
        cl->in_on_body = 1;
        cl_arm(cl, cl->data_timeout);
        cl->cbs.on_body(cl, cl->msg, cl->body_off, want);
        cl->in_on_body = 0; /* the client is freed only from the loop */
    }
}

static void cl_on_drain(struct conn *c)
{
    struct smtp_client *cl = conn_udata(c);

    if (cl->state == ST_BODY && cl->waiting_drain)
        cl_pump_body(cl);
}

/* Give reply r to every recipient the server accepted. */
static void cl_reply_accepted(struct smtp_client *cl, const struct smtp_client_reply *r)
{
    for (size_t i = 0; i < cl->msg->nrcpts; i++)
        if (cl->msg->rcpts[i].reply.code / 100 == 2)
            cl->msg->rcpts[i].reply = *r;
}

/* One complete reply, judged by the state it answers. */
static void cl_reply(struct smtp_client *cl, const struct smtp_client_reply *r)
{
    struct smtp_client_msg *m = cl->msg;
    int ok = r->code / 100 == 2;

    switch (cl->state) {
    case ST_GREETING:
        if (r->code == 220)
            cl_send_ehlo(cl);
        else
            cl_setup_failed(cl, r);
        break;
    case ST_EHLO:
        if (ok) {
            cl->ext = cl->rp.ext;
            cl->size_limit = (cl->ext & EXT_SIZE) ? cl->rp.size : 0;
            cl_after_hello(cl);
        } else if (r->code / 100 == 5) {
            /* RFC 5321 §3.2: a server that does not know EHLO gets HELO. */
            char cmd[CL_NAME_MAX + 8];
            snprintf(cmd, sizeof(cmd), "HELO %s\r\n", cl->helo_name);
            cl_command(cl, cmd, ST_HELO, cl->command_timeout);
        } else {
            cl_setup_failed(cl, r);
        }
        break;
    case ST_HELO:
        cl->ext = 0;
        cl->size_limit = 0;
        if (ok)
            cl_after_hello(cl);
        else
            cl_setup_failed(cl, r);
        break;
    case ST_STARTTLS:
        if (r->code == 220) {
            int rc = conn_starttls(cl->conn, cl->tls_ctx, 0, cl->tls_host[0] ? cl->tls_host : NULL);
            if (rc < 0) {
                struct smtp_client_reply why;
                cl_set_reply(&why, 451, "4.7.5", "cannot start TLS with %s: %s", cl->peer,
                             uv_strerror(rc));
                cl->setup_status = SMTP_CLIENT_ERR_TLS;
                cl_close(cl, 1);
                cl_report_failure(cl, &why);
                break;
            }
            cl_enter(cl, ST_TLS);
            cl_arm(cl, cl->command_timeout);
        } else if (cl->tls == SMTP_TLS_MAY && (r->code / 100 == 4 || r->code / 100 == 5)) {
            /* RFC 3207 §4: after a refused STARTTLS the session is as it was
             * after EHLO (same extensions); opportunistic TLS (RFC 7435 §3)
             * goes on in clear, and the caller learns why. */
            cl->tls_refused = *r;
            log_debug("smtp_client %s: STARTTLS refused: %d %s; going on in clear", cl->peer,
                      r->code, r->text);
            cl_ready(cl);
        } else {
            cl->setup_status = SMTP_CLIENT_ERR_TLS;
            cl_setup_failed(cl, r);
        }
        break;
    case ST_MAIL:
        if (!ok) {
            cl->mail_failed = 1;
            for (size_t i = 0; i < m->nrcpts; i++)
                m->rcpts[i].reply = *r;
        }
        cl->rcpt_next = 0;
        if (cl->pipelined) {
            cl_enter(cl, ST_RCPT);
            cl_arm(cl, cl->command_timeout);
        } else if (ok) {
            cl_send_rcpt(cl);
        } else {
            cl_finish_msg(cl, 0); /* nothing was started: nothing to reset */
        }
        break;
    case ST_RCPT:
        if (!cl->mail_failed) {
            m->rcpts[cl->rcpt_next].reply = *r;
            if (ok)
                cl->naccepted++;
        }
        cl->rcpt_next++;
        if (cl->pipelined) {
            if (cl->rcpt_next == m->nrcpts)
                cl_enter(cl, ST_DATA);
            cl_arm(cl, cl->command_timeout);
        } else if (cl->rcpt_next < m->nrcpts) {
            cl_send_rcpt(cl);
        } else if (cl->naccepted > 0) {
            cl_command(cl, "DATA\r\n", ST_DATA, cl->command_timeout);
        } else {
            cl_abandon(cl, 0);
        }
        break;
    case ST_DATA:
        if (r->code == 354 && cl->naccepted > 0 && !cl->mail_failed) {
            cl_enter(cl, ST_BODY);
            cl->body_off = 0;
            cl->at_line_start = 1;
            cl->tail[0] = cl->tail[1] = '\0';
            cl->body_asked = cl->in_on_body = 0;
            cl_pump_body(cl);
        } else if (r->code == 354) {
            cl_abandon(cl, 1);
        } else {
            if (!cl->mail_failed)
                cl_reply_accepted(cl, r);
            if (cl->mail_failed)
                cl_finish_msg(cl, 0);
            else
                cl_abandon(cl, 0);
        }
        break;
    case ST_BODY:
        /* A server may refuse mid-body and hang up; its words beat ours. */
        if (r->code / 100 == 4 || r->code / 100 == 5)
            cl_fail(cl, FAIL_PROTOCOL, NULL, r);
        else
            cl_fail(cl, FAIL_PROTOCOL, "reply before the end of data", NULL);
        break;
    case ST_DOT:
        cl_reply_accepted(cl, r);
        cl_finish_msg(cl, 0);
        break;
    case ST_DOT_DISCARD:
        cl_enter(cl, ST_RSET); /* RSET went out with the dot */
        cl_arm(cl, cl->command_timeout);
        break;
    case ST_RSET:
        cl_finish_msg(cl, 0);
        break;
    case ST_QUIT:
        cl_close(cl, 0);
        break;
    case ST_READY:
    case ST_LOCAL:
        /* RFC 5321 §3.8: a 421 may come at any time, then the server
         * closes. Anything else means replies and commands no longer pair
         * up: the connection is not fit for another message. */
        if (r->code != 421)
            log_warn("smtp_client %s: unexpected reply while idle: %d %s", cl->peer, r->code,
                     r->text);
        cl_close(cl, 0);
        break;
    case ST_CONNECTING:
    case ST_TLS:
    case ST_CLOSING:
    case ST_COUNT:
        break;
    }
}

/* ---- connect / attach / close --------------------------------------------------------- */

static void cl_timer_closed(uv_handle_t *h)
{
    struct smtp_client *cl = h->data;

    if (cl->cbs.on_closed != NULL)
        cl->cbs.on_closed(cl);
    buf_free(&cl->in);
    buf_free(&cl->cmd);
    free(cl->chunk);
    free(cl);
}

/* The conn is gone; after our timer is closed too, on_closed and free. */
static void cl_on_closed(struct conn *c)
{
    struct smtp_client *cl = conn_udata(c);
    struct smtp_client_reply r;

    cl->conn = NULL;
    if (cl->state != ST_CLOSING) {
        cl_enter(cl, ST_CLOSING);
        uv_timer_stop(&cl->timer);
    }
    if (!cl->ready_reported || cl->msg != NULL) {
        cl_set_reply(&r, 421, "4.4.2", "lost connection with %s", cl->peer);
        cl_report_failure(cl, &r);
    }
    uv_close((uv_handle_t *)&cl->timer, cl_timer_closed);
}

static const struct conn_cbs cl_conn_cbs = {
    .on_data = cl_on_data,
    .on_eof = cl_on_eof,
    .on_tls = cl_on_tls,
    .on_drain = cl_on_drain,
    .on_closed = cl_on_closed,
};

static void cl_on_connect(struct conn *c, int status)
{
    struct smtp_client *cl = conn_udata(c);

    if (status < 0) {
        /* The conn closes itself; on_closed follows. */
        cl_fail(cl, FAIL_LOST, uv_strerror(status), NULL);
        return;
    }
    cl_enter(cl, ST_GREETING);
    cl_arm(cl, cl->command_timeout); /* RFC 5321 §4.5.3.2.1 */
}

/* A client with the options copied, not yet attached to a conn. */
static struct smtp_client *cl_new(uv_loop_t *loop, const struct smtp_client_opts *opts,
                                  const struct smtp_client_cbs *cbs, void *udata)
{
    struct smtp_client *cl;

    if (loop == NULL || opts == NULL || cbs == NULL || opts->helo_name == NULL ||
        !*opts->helo_name || strlen(opts->helo_name) >= CL_NAME_MAX ||
        !cl_safe(opts->helo_name, 0) ||
        (opts->tls_host != NULL && strlen(opts->tls_host) >= CL_NAME_MAX) ||
        (opts->tls >= SMTP_TLS_ENCRYPT && opts->tls_ctx == NULL))
        return NULL;
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    cl->chunk = malloc(CL_CHUNK + 2);
    if (cl->chunk == NULL) {
        free(cl);
        return NULL;
    }
    cl->loop = loop;
    cl->setup_status = SMTP_CLIENT_ERR;
    cl->cbs = *cbs;
    cl->udata = udata;
    cl->tls = opts->tls;
    cl->tls_ctx = opts->tls_ctx;
    snprintf(cl->helo_name, sizeof(cl->helo_name), "%s", opts->helo_name);
    snprintf(cl->tls_host, sizeof(cl->tls_host), "%s", opts->tls_host ? opts->tls_host : "");
    snprintf(cl->peer, sizeof(cl->peer), "%.*s", CL_NAME_MAX - 1,
             opts->peer_name ? opts->peer_name : "");
    cl->connect_timeout = opts->connect_timeout ? opts->connect_timeout : CL_CONNECT_TIMEOUT_MS;
    cl->command_timeout = opts->command_timeout ? opts->command_timeout : CL_COMMAND_TIMEOUT_MS;
    cl->data_timeout = opts->data_timeout ? opts->data_timeout : CL_DATA_TIMEOUT_MS;
    buf_init(&cl->in, CL_LINE_MAX + CL_IN_PIECE + 2);
    buf_init(&cl->cmd, CL_CMD_MAX);
    return cl;
}

/* "name[addr]:port" once the address is known; the address when no name. */
static void cl_set_peer(struct smtp_client *cl, struct conn *c)
{
    char name[CL_NAME_MAX];
    const char *addr = conn_peer_addr(c);

    snprintf(name, sizeof(name), "%.*s", CL_NAME_MAX - 1, cl->peer[0] ? cl->peer : addr);
    if (snprintf(cl->peer, sizeof(cl->peer), "%s[%s]:%d", name, addr, conn_peer_port(c)) >=
        (int)sizeof(cl->peer))
        log_debug("smtp_client: peer name truncated: %s", cl->peer);
}

int smtp_client_connect(uv_loop_t *loop, const struct sockaddr *addr,
                        const struct smtp_client_opts *opts, const struct smtp_client_cbs *cbs,
                        void *udata, struct smtp_client **out)
{
    struct smtp_client *cl;
    int r;

    if (addr == NULL || out == NULL)
        return -EINVAL;
    cl = cl_new(loop, opts, cbs, udata);
    if (cl == NULL)
        return -EINVAL;
    r = conn_connect(loop, addr, &cl_conn_cbs, cl_on_connect, cl, &cl->conn);
    if (r < 0) {
        free(cl->chunk);
        free(cl);
        return r;
    }
    cl_set_peer(cl, cl->conn);
    uv_timer_init(loop, &cl->timer);
    cl->timer.data = cl;
    cl->state = ST_CONNECTING;
    log_debug("smtp_client %s: connecting", cl->peer);
    cl_arm(cl, cl->connect_timeout);
    *out = cl;
    return 0;
}

int smtp_client_attach(uv_loop_t *loop, struct conn *c, const struct smtp_client_opts *opts,
                       const struct smtp_client_cbs *cbs, void *udata, struct smtp_client **out)
{
    struct smtp_client *cl;
    int r;

    if (c == NULL || out == NULL)
        return -EINVAL;
    cl = cl_new(loop, opts, cbs, udata);
    if (cl == NULL)
        return -EINVAL;
    r = conn_read_start(c);
    if (r < 0) {
        free(cl->chunk);
        free(cl);
        return r;
    }
    cl->conn = c;
    conn_set_cbs(c, &cl_conn_cbs, cl);
    cl_set_peer(cl, c);
    cl->tls_done = conn_tls_active(c);
    uv_timer_init(loop, &cl->timer);
    cl->timer.data = cl;
    cl->state = ST_GREETING; /* RFC 2645 §4: after the turn, the other side greets */
    log_debug("smtp_client %s: attached, waiting for the greeting", cl->peer);
    cl_arm(cl, cl->command_timeout);
    *out = cl;
    return 0;
}

/* The deferred on_sent of a message refused locally. */
static void cl_local_done(uv_timer_t *t)
{
    struct smtp_client *cl = t->data;

    if (cl->state == ST_LOCAL)
        cl_finish_msg(cl, 0);
}

int smtp_client_send(struct smtp_client *cl, struct smtp_client_msg *msg)
{
    int r;

    if (cl->state != ST_READY || cl->msg != NULL)
        return -EBUSY;
    if (msg == NULL || msg->sender == NULL || msg->nrcpts == 0 || msg->rcpts == NULL ||
        (msg->body == NULL && msg->body_len > 0 && cl->cbs.on_body == NULL) ||
        !cl_safe(msg->sender, 1) || (msg->envid != NULL && !cl_safe(msg->envid, 0)))
        return -EINVAL;
    for (size_t i = 0; i < msg->nrcpts; i++) {
        const struct smtp_client_rcpt *rc = &msg->rcpts[i];
        if (rc->address == NULL || !*rc->address || !cl_safe(rc->address, 1) ||
            (rc->orcpt != NULL && !cl_safe(rc->orcpt, 0)))
            return -EINVAL;
    }
    for (size_t i = 0; i < msg->nrcpts; i++)
        memset(&msg->rcpts[i].reply, 0, sizeof(msg->rcpts[i].reply));
    cl->msg = msg;
    cl->mail_failed = 0;
    cl->naccepted = 0;
    cl->rcpt_next = 0;
    cl->waiting_drain = 0;

    /* RFC 1870 §6.1: do not offer what the server has said it will refuse. */
    if (cl->size_limit > 0 && msg->body_len > cl->size_limit) {
        for (size_t i = 0; i < msg->nrcpts; i++)
            cl_set_reply(&msg->rcpts[i].reply, 552, "5.3.4",
                         "message too big for the server's SIZE limit (%zu > %llu)", msg->body_len,
                         (unsigned long long)cl->size_limit);
        cl_enter(cl, ST_LOCAL);
        uv_timer_start(&cl->timer, cl_local_done, 0, 0); /* never inside send */
        return 0;
    }

    /* RFC 2920 §3.1: with PIPELINING, MAIL, every RCPT and DATA go as one
     * group (DATA last); the replies are then read in order. */
    buf_reset(&cl->cmd);
    cl->pipelined = (cl->ext & EXT_PIPELINING) != 0;
    r = cl_add_mail(cl, msg);
    for (size_t i = 0; r == 0 && cl->pipelined && i < msg->nrcpts; i++)
        r = cl_add_rcpt(cl, &msg->rcpts[i]);
    if (r == 0 && cl->pipelined)
        r = buf_append(&cl->cmd, "DATA\r\n", 6);
    if (r == 0)
        r = cl_send_buffered(cl);
    buf_reset(&cl->cmd);
    if (r < 0) {
        cl->msg = NULL;
        return r;
    }
    if (msg->body_8bit && !(cl->ext & EXT_8BITMIME))
        log_debug("smtp_client %s: 8-bit body, server lacks 8BITMIME", cl->peer);
    cl_enter(cl, ST_MAIL);
    cl_arm(cl, cl->command_timeout);
    return 0;
}

/* QUIT when idle (RFC 5321 §4.1.1.10); otherwise end at once. A message
 * refused locally and not yet reported is reported first. */
void smtp_client_quit(struct smtp_client *cl)
{
    if (cl->state == ST_LOCAL)
        cl_finish_msg(cl, 0);
    if (cl->state == ST_READY) {
        cl_command(cl, "QUIT\r\n", ST_QUIT, cl->command_timeout);
        return;
    }
    if (cl->state == ST_QUIT || cl->state == ST_CLOSING)
        return;
    cl_fail(cl, FAIL_CANCEL, NULL, NULL);
}

void smtp_client_abort(struct smtp_client *cl)
{
    if (cl->state == ST_CLOSING)
        return;
    cl->hard_close = 1;
    if (cl->state == ST_LOCAL)
        cl_finish_msg(cl, 0);
    if (cl->state == ST_READY || cl->state == ST_QUIT)
        cl_close(cl, 1);
    else
        cl_fail(cl, FAIL_CANCEL, NULL, NULL);
}

void *smtp_client_udata(const struct smtp_client *cl)
{
    return cl->udata;
}

const char *smtp_client_peer(const struct smtp_client *cl)
{
    return cl->peer;
}

int smtp_client_tls_active(const struct smtp_client *cl)
{
    return cl->tls_done;
}

int smtp_client_offers_dsn(const struct smtp_client *cl)
{
    return (cl->ext & EXT_DSN) != 0;
}

int smtp_client_body(struct smtp_client *cl, const char *data, size_t len)
{
    int nested;

    if (cl->state != ST_BODY || !cl->body_asked || data == NULL || len == 0 ||
        len > cl->msg->body_len - cl->body_off)
        return -EINVAL;
    nested = cl->in_on_body;
    cl->body_asked = 0;
    if (cl_stuff_write(cl, data, len) < 0)
        return 0; /* the session ended: on_sent has reported it */
    if (!nested)
        cl_pump_body(cl);
    return 0;
}

void smtp_client_body_fail(struct smtp_client *cl, const char *why)
{
    struct smtp_client_reply r;

    if (cl->state != ST_BODY || !cl->body_asked)
        return;
    cl->body_asked = 0;
    /* RFC 5321 §4.1.1.4: only the final dot completes the mail data, so a
     * connection that ends before it ends the transaction with nothing
     * delivered. Nothing more is sent: no dot, no RSET. */
    cl_set_reply(&r, 451, "4.3.0", "%s", why != NULL ? why : "message body not available");
    log_debug("smtp_client %s: body not available: %s", cl->peer, r.text);
    cl->hard_close = 1;
    cl_close(cl, 1);
    cl_report_failure(cl, &r);
}

const struct smtp_client_reply *smtp_client_starttls_refused(const struct smtp_client *cl)
{
    return cl->tls_refused.code != 0 ? &cl->tls_refused : NULL;
}
