/*
 * Unit tests for lib/smtp_client.c: the client against a scripted fake SMTP
 * server (conn_accept on 127.0.0.1:0) on a real libuv loop. The fake answers
 * per a per-test script (struct fake_cfg) and records what it received.
 * Loopback only; every run is bounded by a watchdog timer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "buf.h"
#include "conn.h"
#include "log.h"
#include "smtp_client.h"
#include "smtp_parse.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <strings.h>
#include <unistd.h>

#define WATCHDOG_MS 20000

/* ---- the fake server ------------------------------------------------------------------ */

/* The script: what the fake answers. NULL fields take the defaults below. */
struct fake_cfg {
    const char *greeting; /* whole reply text, CRLFs included */
    const char *ehlo;     /* reply to EHLO before TLS */
    const char *ehlo_tls; /* reply to EHLO after STARTTLS (default: ehlo) */
    const char *helo;     /* reply to HELO */
    const char *data;     /* reply to DATA (default: 354 if a RCPT was accepted, else 554) */
    const char *dot;      /* reply to the final dot */
    int data_354_always;  /* 354 even with no accepted recipient (a broken server) */
    int hold_until_data;  /* answer MAIL/RCPT only when DATA/RSET/QUIT arrives (RFC 2920 §3.1) */
    int drop_in_body;     /* reset the connection when the first body bytes arrive */
    int ignore_dot;       /* never answer the final dot */
    int pause_in_body;    /* stop reading for 200 ms when the body starts */
    struct tls_ctx *tls;  /* server context: STARTTLS is accepted when set */
    const char *starttls; /* reply to STARTTLS (default "220 2.0.0 Ready to start TLS") */
};

#define DEFAULT_GREETING "220 fake.test ESMTP\r\n"
#define DEFAULT_EHLO     "250-fake.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
#define DEFAULT_HELO     "250 fake.test\r\n"
#define DEFAULT_DOT      "250 2.0.0 Ok: queued as FAKE1\r\n"

struct fake {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t pause; /* pause_in_body */
    int paused;
    int port;
    struct fake_cfg cfg;
    struct conn *conn;
    struct buf in;   /* received, not yet processed */
    struct buf raw;  /* the last body as it came (stuffed), without the final ".\r\n" */
    struct buf body; /* the last body, unstuffed */
    struct buf cmds; /* every command line, each followed by "\n" */
    struct buf held; /* replies held back (hold_until_data) */
    int in_data;
    int group_lines;        /* lines since MAIL */
    int lines_before_reply; /* group_lines when the first reply to a MAIL group left */
    int overlap;            /* a command arrived before the previous one was answered */
    int accepted;           /* RCPTs accepted in this transaction */
    int in_mail;            /* MAIL was accepted: a transaction is open */
    int accepts, messages, ehlo_count, tls_up, quit_seen, rset_seen, mail_seen;
};

static void fake_write(struct fake *f, const char *text)
{
    if (f->conn != NULL)
        assert_int_equal(conn_write(f->conn, text, strlen(text)), 0);
}

/* A reply to a command of the MAIL group: held or sent. */
static void fake_group_reply(struct fake *f, const char *text)
{
    if (f->cfg.hold_until_data) {
        assert_int_equal(buf_append(&f->held, text, strlen(text)), 0);
        return;
    }
    if (f->lines_before_reply < 0)
        f->lines_before_reply = f->group_lines;
    fake_write(f, text);
}

/* A reply that ends a group: the held ones go first. */
static void fake_flush_reply(struct fake *f, const char *text)
{
    if (f->lines_before_reply < 0)
        f->lines_before_reply = f->group_lines;
    if (f->held.len > 0 && f->conn != NULL)
        assert_int_equal(conn_write(f->conn, f->held.data, f->held.len), 0);
    buf_reset(&f->held);
    fake_write(f, text);
}

/* "<tag-NNN@..." in a line scripts the reply code NNN; else dflt. */
static const char *fake_coded(const char *line, const char *tag, const char *dflt, char *out,
                              size_t outlen)
{
    const char *p = strstr(line, tag);
    int code;

    if (p == NULL || sscanf(p + strlen(tag), "%3d", &code) != 1)
        return dflt;
    snprintf(out, outlen, "%d %d.0.0 scripted %d\r\n", code, code / 100, code);
    return out;
}

static void fake_command(struct fake *f, const char *line)
{
    char tmp[128];
    const char *r;

    assert_int_equal(buf_appendf(&f->cmds, "%s\n", line), 0);
    f->group_lines++;
    if (strncasecmp(line, "EHLO ", 5) == 0) {
        f->ehlo_count++;
        r = f->cfg.ehlo ? f->cfg.ehlo : DEFAULT_EHLO;
        if (f->tls_up && f->cfg.ehlo_tls != NULL)
            r = f->cfg.ehlo_tls;
        fake_write(f, r);
    } else if (strncasecmp(line, "HELO ", 5) == 0) {
        fake_write(f, f->cfg.helo ? f->cfg.helo : DEFAULT_HELO);
    } else if (strcasecmp(line, "STARTTLS") == 0) {
        if (f->cfg.tls == NULL || f->tls_up) {
            fake_write(f, "454 4.7.0 TLS not available\r\n");
            return;
        }
        fake_write(f, f->cfg.starttls ? f->cfg.starttls : "220 2.0.0 Ready to start TLS\r\n");
        buf_reset(&f->in); /* RFC 3207 §5: nothing read in the clear counts */
        assert_int_equal(conn_starttls(f->conn, f->cfg.tls, 1, NULL), 0);
    } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
        f->mail_seen++;
        f->accepted = 0;
        f->group_lines = 1;
        f->lines_before_reply = -1;
        r = fake_coded(line, "<mail-", "250 2.1.0 Ok\r\n", tmp, sizeof(tmp));
        f->in_mail = r[0] == '2';
        fake_group_reply(f, r);
    } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
        r = fake_coded(line, "<rcpt-", "250 2.1.5 Ok\r\n", tmp, sizeof(tmp));
        if (!f->in_mail)
            r = "503 5.5.1 Error: need MAIL command\r\n";
        if (r[0] == '2')
            f->accepted++;
        fake_group_reply(f, r);
    } else if (strcasecmp(line, "DATA") == 0) {
        r = f->cfg.data;
        if (r == NULL)
            r = f->accepted > 0 || f->cfg.data_354_always
                    ? "354 End data with <CR><LF>.<CR><LF>\r\n"
                    : "554 5.5.1 Error: no valid recipients\r\n";
        if (strncmp(r, "354", 3) == 0) {
            f->in_data = 1;
            buf_reset(&f->raw);
            buf_reset(&f->body);
        }
        fake_flush_reply(f, r);
    } else if (strcasecmp(line, "RSET") == 0) {
        f->rset_seen++;
        f->accepted = 0;
        f->in_mail = 0;
        fake_flush_reply(f, "250 2.0.0 Ok\r\n");
    } else if (strcasecmp(line, "QUIT") == 0) {
        f->quit_seen++;
        fake_flush_reply(f, "221 2.0.0 Bye\r\n");
        conn_close(f->conn);
    } else if (strcasecmp(line, "NOOP") == 0) {
        fake_write(f, "250 2.0.0 Ok\r\n");
    } else {
        fake_write(f, "502 5.5.2 Error: command not recognized\r\n");
    }
}

/* Body lines until "." alone; returns the bytes used, or 0 for "need more". */
static size_t fake_data(struct fake *f, const char *p, size_t len)
{
    size_t used = 0;

    while (used < len) {
        const char *nl = memchr(p + used, '\n', len - used);
        size_t ll;
        if (nl == NULL)
            break;
        ll = (size_t)(nl - (p + used)) + 1;
        assert_true(ll >= 2 && p[used + ll - 2] == '\r'); /* the client sends CRLF only */
        if (ll == 3 && p[used] == '.') {
            used += ll;
            f->in_data = 0;
            f->in_mail = 0;
            f->accepted = 0;
            f->messages++;
            if (!f->cfg.ignore_dot)
                fake_write(f, f->cfg.dot ? f->cfg.dot : DEFAULT_DOT);
            return used;
        }
        assert_int_equal(buf_append(&f->raw, p + used, ll), 0);
        if (p[used] == '.') /* RFC 5321 §4.5.2 */
            assert_int_equal(buf_append(&f->body, p + used + 1, ll - 1), 0);
        else
            assert_int_equal(buf_append(&f->body, p + used, ll), 0);
        used += ll;
    }
    return used;
}

static void fake_resume(uv_timer_t *t)
{
    struct fake *f = t->data;

    if (f->conn != NULL)
        assert_int_equal(conn_read_start(f->conn), 0);
}

static void fake_on_data(struct conn *c, const char *data, size_t len)
{
    struct fake *f = conn_udata(c);
    size_t off = 0;

    if (f->in_data && f->cfg.drop_in_body) {
        conn_abort(c);
        return;
    }
    if (f->in_data && f->cfg.pause_in_body && !f->paused) {
        f->paused = 1; /* this chunk is kept; nothing more is read for a while */
        conn_read_stop(c);
        uv_timer_start(&f->pause, fake_resume, 200, 0);
    }
    assert_int_equal(buf_append(&f->in, data, len), 0);
    while (f->conn != NULL && off < f->in.len) {
        if (f->in_data) {
            size_t n = fake_data(f, f->in.data + off, f->in.len - off);
            if (n == 0)
                break;
            off += n;
        } else {
            char line[4096];
            const char *nl = memchr(f->in.data + off, '\n', f->in.len - off);
            size_t ll;
            if (nl == NULL)
                break;
            ll = (size_t)(nl - (f->in.data + off));
            assert_true(ll > 0 && ll < sizeof(line) && f->in.data[off + ll - 1] == '\r');
            memcpy(line, f->in.data + off, ll - 1);
            line[ll - 1] = '\0';
            off += ll + 1;
            if (memchr(f->in.data + off, '\n', f->in.len - off) != NULL)
                f->overlap++;
            fake_command(f, line);
            if (strcasecmp(line, "STARTTLS") == 0 && f->in.len == 0)
                return; /* the buffer was dropped for the handshake */
        }
    }
    buf_consume(&f->in, off);
}

static void fake_on_eof(struct conn *c, int status)
{
    (void)status;
    conn_close(c);
}

static void fake_on_tls(struct conn *c, int status)
{
    struct fake *f = conn_udata(c);

    if (status == 0)
        f->tls_up = 1;
    else
        conn_close(c);
}

static void fake_on_closed(struct conn *c)
{
    struct fake *f = conn_udata(c);

    f->conn = NULL;
}

static const struct conn_cbs fake_cbs = {
    .on_data = fake_on_data,
    .on_eof = fake_on_eof,
    .on_tls = fake_on_tls,
    .on_closed = fake_on_closed,
};

static void fake_on_connection(uv_stream_t *s, int status)
{
    struct fake *f = s->data;

    assert_int_equal(status, 0);
    assert_null(f->conn); /* one client at a time */
    assert_int_equal(conn_accept(f->loop, s, &fake_cbs, f, &f->conn), 0);
    f->accepts++;
    f->in_data = 0;
    f->tls_up = 0;
    buf_reset(&f->in);
    fake_write(f, f->cfg.greeting ? f->cfg.greeting : DEFAULT_GREETING);
}

static void fake_start(struct fake *f, uv_loop_t *loop)
{
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    f->loop = loop;
    f->lines_before_reply = -1;
    buf_init(&f->in, 32 << 20);
    buf_init(&f->raw, 32 << 20);
    buf_init(&f->body, 32 << 20);
    buf_init(&f->cmds, 1 << 20);
    buf_init(&f->held, 1 << 20);
    assert_int_equal(uv_tcp_init(loop, &f->listener), 0);
    f->listener.data = f;
    assert_int_equal(uv_timer_init(loop, &f->pause), 0);
    f->pause.data = f;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sa), 0);
    assert_int_equal(uv_tcp_bind(&f->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 8, fake_on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&f->listener, (struct sockaddr *)&ss, &len), 0);
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void fake_stop(struct fake *f)
{
    if (!uv_is_closing((uv_handle_t *)&f->listener)) {
        uv_close((uv_handle_t *)&f->listener, NULL);
        uv_close((uv_handle_t *)&f->pause, NULL);
    }
    if (f->conn != NULL)
        conn_close(f->conn);
}

static void fake_free(struct fake *f)
{
    buf_free(&f->in);
    buf_free(&f->raw);
    buf_free(&f->body);
    buf_free(&f->cmds);
    buf_free(&f->held);
}

/* NUL-terminated view of a buf (for string asserts). */
static const char *bstr(struct buf *b)
{
    assert_int_equal(buf_append(b, "", 1), 0);
    b->len--;
    return b->data;
}

/* ---- the client side of a run --------------------------------------------------------- */

#define MAX_MSGS 4

struct run {
    uv_loop_t loop;
    struct fake f;
    int no_server; /* connect to a closed port */
    int attach;    /* connect with conn_connect, then smtp_client_attach */
    uv_timer_t watchdog;
    struct smtp_client_opts opts;
    struct smtp_client *cl;
    struct smtp_client_msg *msgs[MAX_MSGS];
    int nmsgs, next;
    int abort_after_send;            /* smtp_client_abort right after the first send */
    struct smtp_client_msg *bad_msg; /* must be refused (-EINVAL) in on_ready */
    int bad_refused;
    int ready_calls, ready_status;
    struct smtp_client_reply why;
    int tls_at_ready;
    char peer[300];
    int sent_calls;
    int sent_status[MAX_MSGS];
    int in_send, sent_inside_send;
    int closed;
    uint64_t t_start, t_end;
    /* streamed bodies (on_body): msgs[0]'s body is handed over in pieces */
    int stream;       /* use on_body */
    int stream_sync;  /* answer from inside on_body, not from a timer */
    const char *src;  /* the body to hand over */
    size_t fail_at;   /* answer smtp_client_body_fail at this offset (0: never) */
    uv_timer_t feed;  /* answers asynchronously, as a store read would */
    int asking;       /* an on_body is waiting for its answer */
    uint64_t ask_off; /* what it asked for */
    size_t ask_len;
    int asks;
};

static void run_send_next(struct run *r)
{
    r->in_send = 1;
    assert_int_equal(smtp_client_send(r->cl, r->msgs[r->next++]), 0);
    r->in_send = 0;
    if (r->abort_after_send)
        smtp_client_abort(r->cl);
}

static void on_ready(struct smtp_client *cl, int status, const struct smtp_client_reply *why)
{
    struct run *r = smtp_client_udata(cl);

    r->ready_calls++;
    r->ready_status = status;
    snprintf(r->peer, sizeof(r->peer), "%s", smtp_client_peer(cl));
    r->tls_at_ready = smtp_client_tls_active(cl);
    if (status < 0) {
        assert_non_null(why);
        r->why = *why;
        return;
    }
    if (r->bad_msg != NULL) {
        struct smtp_client_msg m = *r->bad_msg;
        r->bad_refused += smtp_client_send(cl, &m) == -EINVAL;
        m.sender = "a\nb@example.org"; /* a line break in the sender */
        m.rcpts = r->msgs[0]->rcpts;
        r->bad_refused += smtp_client_send(cl, &m) == -EINVAL;
        m.sender = "s@example.org";
        m.envid = "has space"; /* ENVID is xtext: no spaces */
        r->bad_refused += smtp_client_send(cl, &m) == -EINVAL;
        m.envid = NULL;
        m.nrcpts = 0;
        r->bad_refused += smtp_client_send(cl, &m) == -EINVAL;
    }
    if (r->next < r->nmsgs)
        run_send_next(r);
    else
        smtp_client_quit(cl);
}

static void on_sent(struct smtp_client *cl, struct smtp_client_msg *msg, int status)
{
    struct run *r = smtp_client_udata(cl);

    assert_ptr_equal(msg, r->msgs[r->sent_calls]);
    if (r->in_send)
        r->sent_inside_send = 1;
    r->sent_status[r->sent_calls++] = status;
    r->t_end = uv_now(&r->loop);
    if (status < 0)
        return;
    if (r->next < r->nmsgs)
        run_send_next(r);
    else
        smtp_client_quit(cl);
}

static void on_closed(struct smtp_client *cl)
{
    struct run *r = smtp_client_udata(cl);

    assert_int_equal(r->closed, 0);
    assert_int_equal(r->ready_calls, 1); /* on_ready exactly once, and before */
    r->closed = 1;
    if (!r->no_server)
        fake_stop(&r->f);
    uv_close((uv_handle_t *)&r->watchdog, NULL);
}

static const struct smtp_client_cbs client_cbs = {on_ready, on_sent, on_closed, NULL};

/* Answer the pending on_body: a short piece (at most 1000 bytes less than
 * asked, to check partial answers), or the failure at fail_at. */
static void feed_answer(struct run *r)
{
    size_t n = r->ask_len > 1000 ? r->ask_len - 1000 : r->ask_len;

    r->asking = 0;
    if (r->fail_at != 0 && r->ask_off >= r->fail_at) {
        smtp_client_body_fail(r->cl, "message removed from the queue");
        return;
    }
    assert_int_equal(smtp_client_body(r->cl, r->src + r->ask_off, n), 0);
}

static void feed_cb(uv_timer_t *t)
{
    feed_answer(t->data);
}

static void on_body(struct smtp_client *cl, struct smtp_client_msg *msg, uint64_t offset,
                    size_t max)
{
    struct run *r = smtp_client_udata(cl);

    assert_ptr_equal(msg, r->msgs[0]);
    assert_int_equal(r->asking, 0); /* one question at a time */
    assert_true(max > 0 && max <= 256 * 1024 && offset + max <= msg->body_len);
    r->asking = 1;
    r->asks++;
    r->ask_off = offset;
    r->ask_len = max;
    if (r->stream_sync)
        feed_answer(r);
    else
        uv_timer_start(&r->feed, feed_cb, 0, 0);
}

static void on_closed_stream(struct smtp_client *cl)
{
    struct run *r = smtp_client_udata(cl);

    uv_close((uv_handle_t *)&r->feed, NULL);
    on_closed(cl);
}

static const struct smtp_client_cbs stream_cbs = {on_ready, on_sent, on_closed_stream, on_body};

static void watchdog_cb(uv_timer_t *t)
{
    (void)t;
    fail_msg("watchdog: the run did not finish in %d ms", WATCHDOG_MS);
}

static void attach_on_connect(struct conn *c, int status)
{
    struct run *r = conn_udata(c);

    assert_int_equal(status, 0);
    assert_int_equal(smtp_client_attach(&r->loop, c, &r->opts, &client_cbs, r, &r->cl), 0);
}

static void attach_on_eof(struct conn *c, int status)
{
    (void)status;
    fail_msg("the attached conn still called its old owner");
    conn_close(c);
}

static void attach_on_closed(struct conn *c)
{
    (void)c;
    fail_msg("the attached conn still called its old owner");
}

static const struct conn_cbs attach_cbs = {.on_eof = attach_on_eof, .on_closed = attach_on_closed};

static void run_init(struct run *r)
{
    memset(r, 0, sizeof(*r));
    r->opts.helo_name = "client.test";
    r->opts.tls = SMTP_TLS_NONE;
    r->opts.connect_timeout = 5000;
    r->opts.command_timeout = 5000;
    r->opts.data_timeout = 5000;
}

/* Run the loop until the client has closed and everything is gone. */
static void run_go(struct run *r)
{
    struct sockaddr_in sa;
    struct smtp_client_msg dummy;

    assert_int_equal(uv_loop_init(&r->loop), 0);
    if (r->no_server) {
        /* A port nobody listens on: bind one, learn it, close it. */
        uv_tcp_t t;
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        assert_int_equal(uv_tcp_init(&r->loop, &t), 0);
        assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sa), 0);
        assert_int_equal(uv_tcp_bind(&t, (struct sockaddr *)&sa, 0), 0);
        assert_int_equal(uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len), 0);
        r->f.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(&r->loop, UV_RUN_NOWAIT);
    } else {
        fake_start(&r->f, &r->loop);
    }
    assert_int_equal(uv_timer_init(&r->loop, &r->watchdog), 0);
    uv_timer_start(&r->watchdog, watchdog_cb, WATCHDOG_MS, 0);
    assert_int_equal(uv_ip4_addr("127.0.0.1", r->f.port, &sa), 0);
    r->t_start = uv_now(&r->loop);
    if (r->attach) {
        struct conn *c;
        assert_int_equal(
            conn_connect(&r->loop, (struct sockaddr *)&sa, &attach_cbs, attach_on_connect, r, &c),
            0);
    } else {
        if (r->stream) {
            assert_int_equal(uv_timer_init(&r->loop, &r->feed), 0);
            r->feed.data = r;
        }
        assert_int_equal(smtp_client_connect(&r->loop, (struct sockaddr *)&sa, &r->opts,
                                             r->stream ? &stream_cbs : &client_cbs, r, &r->cl),
                         0);
        /* Nothing may be sent before on_ready. */
        memset(&dummy, 0, sizeof(dummy));
        assert_int_equal(smtp_client_send(r->cl, &dummy), -EBUSY);
    }
    assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(r->closed, 1);
    assert_int_equal(uv_loop_close(&r->loop), 0);
}

static void run_done(struct run *r)
{
    fake_free(&r->f);
}

/* A message with n recipients (addresses borrowed). */
struct tmsg {
    struct smtp_client_msg m;
    struct smtp_client_rcpt rc[4];
};

static void tmsg_init(struct tmsg *t, const char *sender, const char *body, size_t n,
                      const char *const *rcpts)
{
    memset(t, 0, sizeof(*t));
    t->m.sender = sender;
    t->m.body = body;
    t->m.body_len = strlen(body);
    t->m.rcpts = t->rc;
    t->m.nrcpts = n;
    for (size_t i = 0; i < n; i++)
        t->rc[i].address = rcpts[i];
}

static void assert_reply(const struct smtp_client_reply *r, int code, const char *enh)
{
    if (r->code != code || strcmp(r->enh, enh) != 0)
        fail_msg("reply %d %s %s, expected %d %s", r->code, r->enh, r->text, code, enh);
}

/* ---- TLS material ----------------------------------------------------------------------- */

static char tmpdir[64], cert_pem[128], key_pem[128];
static struct tls_ctx *srv_ctx, *cli_ctx, *verify_ctx, *untrusting_ctx;

static int group_setup(void **state)
{
    char cmd[512], err[256];

    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_smtp_client.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(cert_pem, sizeof(cert_pem), "%s/cert.pem", tmpdir);
    snprintf(key_pem, sizeof(key_pem), "%s/key.pem", tmpdir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout '%s' -out '%s' -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost >/dev/null 2>&1",
             key_pem, cert_pem);
    if (system(cmd) != 0)
        return -1;
    srv_ctx = tls_ctx_new_server(cert_pem, key_pem, err, sizeof(err));
    cli_ctx = tls_ctx_new_client(0, NULL, err, sizeof(err));
    verify_ctx = tls_ctx_new_client(1, cert_pem, err, sizeof(err));
    untrusting_ctx = tls_ctx_new_client(1, NULL, err, sizeof(err));
    return srv_ctx && cli_ctx && verify_ctx && untrusting_ctx ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tls_ctx_free(srv_ctx);
    tls_ctx_free(cli_ctx);
    tls_ctx_free(verify_ctx);
    tls_ctx_free(untrusting_ctx);
    unlink(cert_pem);
    unlink(key_pem);
    rmdir(tmpdir);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static const char *const two_rcpts[] = {"a@example.net", "b@example.net"};

/* PIPELINING: MAIL, both RCPTs and DATA reach the server before it answers
 * anything (it holds its replies until DATA, which a lock-step client would
 * never send: it would time out instead). */
static void test_pipelining_happy(void **state)
{
    struct run r;
    struct tmsg t;
    char expect[512];

    (void)state;
    run_init(&r);
    r.opts.peer_name = "mx.test";
    r.f.cfg.ehlo = "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
                   "250 ENHANCEDSTATUSCODES\r\n";
    r.f.cfg.hold_until_data = 1;
    tmsg_init(&t, "s@example.org", "Subject: hi\r\n\r\nhello\r\n", 2, two_rcpts);
    t.m.body_8bit = 1;
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.ready_status, 0);
    assert_int_equal(r.sent_calls, 1);
    assert_int_equal(r.sent_status[0], 0);
    for (int i = 0; i < 2; i++) {
        assert_reply(&t.rc[i].reply, 250, "2.0.0");
        assert_string_equal(t.rc[i].reply.text, "Ok: queued as FAKE1");
    }
    assert_int_equal(r.f.lines_before_reply, 4);
    assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                         "MAIL FROM:<s@example.org> SIZE=22 BODY=8BITMIME\n"
                                         "RCPT TO:<a@example.net>\n"
                                         "RCPT TO:<b@example.net>\n"
                                         "DATA\n"
                                         "QUIT\n");
    assert_string_equal(bstr(&r.f.body), t.m.body);
    snprintf(expect, sizeof(expect), "mx.test[127.0.0.1]:%d", r.f.port);
    assert_string_equal(r.peer, expect);
    assert_int_equal(r.tls_at_ready, 0);
    run_done(&r);
}

/* Without PIPELINING every command waits for its reply. */
static void test_no_pipelining(void **state)
{
    static const char *const rcpts[] = {"a@example.net", "b@example.net", "c@example.net"};
    struct run r;
    struct tmsg t;
    char expect[64];

    (void)state;
    run_init(&r);
    r.f.cfg.ehlo = "250-fake.test\r\n250 8BITMIME\r\n";
    tmsg_init(&t, "s@example.org", "x\r\n", 3, rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.sent_status[0], 0);
    assert_int_equal(r.f.overlap, 0);
    assert_int_equal(r.f.lines_before_reply, 1);
    assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                         "MAIL FROM:<s@example.org>\n"
                                         "RCPT TO:<a@example.net>\n"
                                         "RCPT TO:<b@example.net>\n"
                                         "RCPT TO:<c@example.net>\n"
                                         "DATA\n"
                                         "QUIT\n");
    for (int i = 0; i < 3; i++)
        assert_reply(&t.rc[i].reply, 250, "2.0.0");
    snprintf(expect, sizeof(expect), "127.0.0.1[127.0.0.1]:%d", r.f.port);
    assert_string_equal(r.peer, expect);
    run_done(&r);
}

/* Lines starting with '.' arrive stuffed; the server's unstuffing restores them. */
static void test_dot_stuffing(void **state)
{
    static const char body[] = ".first\r\nline\r\n.\r\n..x\r\n.a\r\nmid.dle\r\n.\r\n";
    struct run r;
    struct tmsg t;

    (void)state;
    run_init(&r);
    tmsg_init(&t, "", body, 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.sent_status[0], 0);
    assert_string_equal(bstr(&r.f.raw),
                        "..first\r\nline\r\n..\r\n...x\r\n..a\r\nmid.dle\r\n..\r\n");
    assert_string_equal(bstr(&r.f.body), body);
    assert_non_null(strstr(bstr(&r.f.cmds), "MAIL FROM:<>\n")); /* the null sender */
    run_done(&r);
}

/* A body without a final CRLF gets one before the dot; so does one ending in ".". */
static void test_no_final_crlf(void **state)
{
    struct run r;
    struct tmsg t1, t2, t3;

    (void)state;
    run_init(&r);
    tmsg_init(&t1, "s@example.org", "Subject: x\r\n\r\nno line end", 1, two_rcpts);
    tmsg_init(&t2, "s@example.org", "a\r\n.", 1, two_rcpts);
    tmsg_init(&t3, "s@example.org", "", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t1.m;
    r.msgs[r.nmsgs++] = &t2.m;
    r.msgs[r.nmsgs++] = &t3.m;
    /* The fake keeps the last body only: run the three and check the last,
     * the first two through their own runs below. */
    run_go(&r);
    assert_int_equal(r.sent_calls, 3);
    assert_int_equal(r.f.messages, 3);
    assert_int_equal(r.f.body.len, 0); /* empty body: just the dot */
    run_done(&r);

    run_init(&r);
    tmsg_init(&t1, "s@example.org", "Subject: x\r\n\r\nno line end", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t1.m;
    run_go(&r);
    assert_string_equal(bstr(&r.f.body), "Subject: x\r\n\r\nno line end\r\n");
    run_done(&r);

    run_init(&r);
    tmsg_init(&t2, "s@example.org", "a\r\n.", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t2.m;
    run_go(&r);
    assert_string_equal(bstr(&r.f.raw), "a\r\n..\r\n");
    assert_string_equal(bstr(&r.f.body), "a\r\n.\r\n");
    run_done(&r);
}

/* Per-recipient replies: one accepted, one 550, one 450; DATA still goes. */
static void test_mixed_rcpts(void **state)
{
    static const char *const rcpts[] = {"ok@example.net", "rcpt-550@example.net",
                                        "rcpt-450@example.net"};
    struct run r;
    struct tmsg t;

    (void)state;
    run_init(&r);
    tmsg_init(&t, "s@example.org", "hello\r\n", 3, rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.sent_status[0], 0);
    assert_reply(&t.rc[0].reply, 250, "2.0.0");
    assert_reply(&t.rc[1].reply, 550, "5.0.0");
    assert_string_equal(t.rc[1].reply.text, "scripted 550");
    assert_reply(&t.rc[2].reply, 450, "4.0.0");
    assert_int_equal(r.f.messages, 1);
    assert_string_equal(bstr(&r.f.body), "hello\r\n");
    assert_int_equal(r.f.rset_seen, 0);
    run_done(&r);
}

/* Every RCPT refused: no body, RSET, on_sent(0) with the refusals. Pipelined
 * (DATA got 554), pipelined against a server that says 354 anyway (an empty
 * message is ended with "."), and lock-step (DATA never sent). */
static void test_all_refused(void **state)
{
    static const char *const rcpts[] = {"rcpt-550@example.net", "rcpt-551@example.net"};
    struct run r;
    struct tmsg t;

    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        run_init(&r);
        if (variant == 1)
            r.f.cfg.data_354_always = 1;
        if (variant == 2)
            r.f.cfg.ehlo = "250 fake.test\r\n";
        tmsg_init(&t, "s@example.org", "body\r\n", 2, rcpts);
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        assert_int_equal(r.sent_calls, 1);
        assert_int_equal(r.sent_status[0], 0);
        assert_reply(&t.rc[0].reply, 550, "5.0.0");
        assert_reply(&t.rc[1].reply, 551, "5.0.0");
        assert_int_equal(r.f.rset_seen, 1);
        assert_int_equal(r.f.raw.len, 0); /* no body line reached the server */
        assert_int_equal(r.f.messages, variant == 1 ? 1 : 0);
        assert_int_equal(strstr(bstr(&r.f.cmds), "DATA\n") != NULL, variant != 2);
        assert_int_equal(r.f.quit_seen, 1);
        run_done(&r);
    }
}

/* MAIL 452: every recipient gets it, nothing else happens; pipelined and not. */
static void test_mail_refused(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    for (int pipelining = 0; pipelining < 2; pipelining++) {
        run_init(&r);
        r.f.cfg.ehlo = pipelining ? "250-fake.test\r\n250 PIPELINING\r\n" : "250 fake.test\r\n";
        tmsg_init(&t, "mail-452@example.org", "body\r\n", 2, two_rcpts);
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        assert_int_equal(r.sent_status[0], 0);
        assert_reply(&t.rc[0].reply, 452, "4.0.0");
        assert_reply(&t.rc[1].reply, 452, "4.0.0");
        assert_int_equal(r.f.messages, 0);
        assert_int_equal(r.f.raw.len, 0);
        assert_int_equal(r.f.rset_seen, 0); /* no transaction was open */
        if (!pipelining)
            assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                                 "MAIL FROM:<mail-452@example.org>\n"
                                                 "QUIT\n");
        assert_int_equal(r.f.quit_seen, 1);
        run_done(&r);
    }
}

/* A 554 greeting (multi-line): on_ready fails with it, then QUIT, no EHLO. */
static void test_greeting_554(void **state)
{
    struct run r;

    (void)state;
    run_init(&r);
    r.f.cfg.greeting = "554-5.7.1 fake.test\r\n554 5.7.1 go away\r\n";
    run_go(&r);

    assert_int_equal(r.ready_calls, 1);
    assert_true(r.ready_status < 0);
    assert_reply(&r.why, 554, "5.7.1");
    assert_string_equal(r.why.text, "go away");
    assert_int_equal(r.f.ehlo_count, 0);
    assert_int_equal(r.f.quit_seen, 1);
    assert_int_equal(r.sent_calls, 0);
    run_done(&r);
}

/* EHLO 502: HELO, no extensions used (no ESMTP parameters on MAIL). */
static void test_ehlo_502_helo(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    run_init(&r);
    r.f.cfg.ehlo = "502 5.5.2 Error: command not recognized\r\n";
    tmsg_init(&t, "s@example.org", "hi\r\n", 1, two_rcpts);
    t.m.body_8bit = 1;
    t.m.ret = SMTP_RET_FULL;
    t.m.envid = "ENV1";
    t.rc[0].notify = SMTP_NOTIFY_FAILURE;
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.ready_status, 0);
    assert_int_equal(r.sent_status[0], 0);
    assert_reply(&t.rc[0].reply, 250, "2.0.0");
    assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                         "HELO client.test\n"
                                         "MAIL FROM:<s@example.org>\n"
                                         "RCPT TO:<a@example.net>\n"
                                         "DATA\n"
                                         "QUIT\n");
    run_done(&r);
}

/* SIZE 100 and a 200-byte body: local 552 5.3.4 without MAIL, reported on a
 * later loop turn; the next, small message goes out normally with SIZE=. */
static void test_size_limit(void **state)
{
    struct run r;
    struct tmsg big, small;
    char body[201];

    (void)state;
    memset(body, 'x', 198);
    memcpy(body + 198, "\r\n", 3);
    run_init(&r);
    r.f.cfg.ehlo = "250-fake.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
    tmsg_init(&big, "s@example.org", body, 2, two_rcpts);
    tmsg_init(&small, "s@example.org", "small\r\n", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &big.m;
    r.msgs[r.nmsgs++] = &small.m;
    run_go(&r);

    assert_int_equal(r.sent_calls, 2);
    assert_int_equal(r.sent_inside_send, 0);
    assert_int_equal(r.sent_status[0], 0);
    assert_reply(&big.rc[0].reply, 552, "5.3.4");
    assert_reply(&big.rc[1].reply, 552, "5.3.4");
    assert_non_null(strstr(big.rc[0].reply.text, "SIZE"));
    assert_int_equal(r.f.mail_seen, 1);
    assert_non_null(strstr(bstr(&r.f.cmds), "MAIL FROM:<s@example.org> SIZE=7\n"));
    assert_reply(&small.rc[0].reply, 250, "2.0.0");
    run_done(&r);
}

/* DSN parameters go out when DSN is offered, and only then. */
static void test_dsn_params(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    for (int offered = 0; offered < 2; offered++) {
        run_init(&r);
        r.f.cfg.ehlo = offered ? "250-fake.test\r\n250-PIPELINING\r\n250 DSN\r\n"
                               : "250-fake.test\r\n250 PIPELINING\r\n";
        tmsg_init(&t, "s@example.org", "hi\r\n", 2, two_rcpts);
        t.m.ret = SMTP_RET_HDRS;
        t.m.envid = "QID+2B123";
        t.rc[0].notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY;
        t.rc[0].orcpt = "rfc822;a@example.net";
        t.rc[1].notify = SMTP_NOTIFY_NEVER;
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        assert_int_equal(r.sent_status[0], 0);
        if (offered)
            assert_string_equal(bstr(&r.f.cmds),
                                "EHLO client.test\n"
                                "MAIL FROM:<s@example.org> RET=HDRS ENVID=QID+2B123\n"
                                "RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE,DELAY "
                                "ORCPT=rfc822;a@example.net\n"
                                "RCPT TO:<b@example.net> NOTIFY=NEVER\n"
                                "DATA\n"
                                "QUIT\n");
        else
            assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                                 "MAIL FROM:<s@example.org>\n"
                                                 "RCPT TO:<a@example.net>\n"
                                                 "RCPT TO:<b@example.net>\n"
                                                 "DATA\n"
                                                 "QUIT\n");
        run_done(&r);
    }
}

/* tls = may: STARTTLS when offered, EHLO again over TLS (RFC 3207 §4.2),
 * the message goes through encrypted; not offered: plaintext. */
static void test_starttls_may(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    for (int offered = 0; offered < 2; offered++) {
        run_init(&r);
        r.opts.tls = SMTP_TLS_MAY;
        r.opts.tls_ctx = cli_ctx;
        r.opts.tls_host = "localhost";
        r.f.cfg.tls = srv_ctx;
        r.f.cfg.ehlo = offered ? "250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
                               : "250-fake.test\r\n250 PIPELINING\r\n";
        r.f.cfg.ehlo_tls = "250-fake.test\r\n250 SIZE 1000\r\n"; /* no PIPELINING now */
        tmsg_init(&t, "s@example.org", "secret\r\n", 1, two_rcpts);
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        assert_int_equal(r.ready_status, 0);
        assert_int_equal(r.sent_status[0], 0);
        assert_reply(&t.rc[0].reply, 250, "2.0.0");
        assert_int_equal(r.tls_at_ready, offered);
        assert_int_equal(r.f.tls_up, offered);
        assert_string_equal(bstr(&r.f.body), "secret\r\n");
        if (offered)
            assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                                 "STARTTLS\n"
                                                 "EHLO client.test\n"
                                                 "MAIL FROM:<s@example.org> SIZE=8\n"
                                                 "RCPT TO:<a@example.net>\n"
                                                 "DATA\n"
                                                 "QUIT\n");
        else
            assert_int_equal(r.f.ehlo_count, 1);
        run_done(&r);
    }
}

/* Plaintext the server sends behind its 220 to STARTTLS must not be read as
 * the answer to the EHLO that follows over TLS (RFC 3207 §5, CVE-2011-0411):
 * here it would announce SIZE 5 and get the message refused locally. */
static void test_starttls_injection(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    run_init(&r);
    r.opts.tls = SMTP_TLS_ENCRYPT;
    r.opts.tls_ctx = cli_ctx;
    r.f.cfg.tls = srv_ctx;
    r.f.cfg.ehlo = "250-fake.test\r\n250 STARTTLS\r\n";
    r.f.cfg.starttls = "220 2.0.0 Ready\r\n250-injected\r\n250 SIZE 5\r\n";
    r.f.cfg.ehlo_tls = "250-fake.test\r\n250 SIZE 1000\r\n";
    tmsg_init(&t, "s@example.org", "longer than five\r\n", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.ready_status, 0);
    assert_int_equal(r.tls_at_ready, 1);
    assert_int_equal(r.sent_status[0], 0);
    assert_reply(&t.rc[0].reply, 250, "2.0.0");
    assert_non_null(strstr(bstr(&r.f.cmds), "MAIL FROM:<s@example.org> SIZE=18\n"));
    run_done(&r);
}

/* tls = verify: a trusted certificate with the right name passes; a wrong
 * name or an untrusted issuer fails with 4.7.5 and nothing is sent. */
static void test_starttls_verify(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        run_init(&r);
        r.opts.tls = SMTP_TLS_VERIFY;
        r.opts.tls_ctx = variant == 2 ? untrusting_ctx : verify_ctx;
        r.opts.tls_host = variant == 1 ? "wrong.example" : "localhost";
        r.f.cfg.tls = srv_ctx;
        r.f.cfg.ehlo = "250-fake.test\r\n250 STARTTLS\r\n";
        r.f.cfg.ehlo_tls = "250 fake.test\r\n";
        tmsg_init(&t, "s@example.org", "secret\r\n", 1, two_rcpts);
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        if (variant == 0) {
            assert_int_equal(r.ready_status, 0);
            assert_int_equal(r.tls_at_ready, 1);
            assert_reply(&t.rc[0].reply, 250, "2.0.0");
        } else {
            assert_true(r.ready_status < 0);
            assert_int_equal(r.why.code / 100, 4);
            assert_string_equal(r.why.enh, "4.7.5");
            assert_int_equal(r.sent_calls, 0);
            assert_int_equal(r.f.mail_seen, 0);
        }
        run_done(&r);
    }
}

/* tls = encrypt and no STARTTLS offered: on_ready fails with 4.7.4, QUIT. */
static void test_encrypt_not_offered(void **state)
{
    struct run r;

    (void)state;
    run_init(&r);
    r.opts.tls = SMTP_TLS_ENCRYPT;
    r.opts.tls_ctx = cli_ctx;
    r.f.cfg.tls = srv_ctx;
    r.f.cfg.ehlo = "250-fake.test\r\n250 PIPELINING\r\n";
    run_go(&r);

    assert_true(r.ready_status < 0);
    assert_int_equal(r.why.code / 100, 4);
    assert_string_equal(r.why.enh, "4.7.4");
    assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\nQUIT\n");
    run_done(&r);
}

/* Two messages on one connection. */
static void test_reuse(void **state)
{
    struct run r;
    struct tmsg t1, t2;

    (void)state;
    run_init(&r);
    tmsg_init(&t1, "one@example.org", "first\r\n", 2, two_rcpts);
    tmsg_init(&t2, "two@example.org", "second\r\n", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t1.m;
    r.msgs[r.nmsgs++] = &t2.m;
    run_go(&r);

    assert_int_equal(r.sent_calls, 2);
    assert_int_equal(r.sent_status[0], 0);
    assert_int_equal(r.sent_status[1], 0);
    assert_int_equal(r.f.accepts, 1);
    assert_int_equal(r.f.messages, 2);
    assert_int_equal(r.f.mail_seen, 2);
    assert_reply(&t1.rc[1].reply, 250, "2.0.0");
    assert_reply(&t2.rc[0].reply, 250, "2.0.0");
    assert_string_equal(bstr(&r.f.body), "second\r\n");
    run_done(&r);
}

/* The server resets the connection as the body starts: accepted recipients
 * get a local 421 4.4.2, the refused one keeps its 550, on_closed follows. */
static void test_drop_mid_body(void **state)
{
    static const char *const rcpts[] = {"ok@example.net", "rcpt-550@example.net"};
    size_t len = 8u << 20;
    char *body = malloc(len + 1);
    struct run r;
    struct tmsg t;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = i % 64 == 62 ? '\r' : i % 64 == 63 ? '\n' : 'b';
    body[len] = '\0';
    run_init(&r);
    r.f.cfg.drop_in_body = 1;
    tmsg_init(&t, "s@example.org", body, 2, rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.sent_calls, 1);
    assert_true(r.sent_status[0] < 0);
    assert_reply(&t.rc[0].reply, 421, "4.4.2");
    assert_non_null(strstr(t.rc[0].reply.text, "lost connection"));
    assert_reply(&t.rc[1].reply, 550, "5.0.0");
    assert_int_equal(r.f.messages, 0);
    free(body);
    run_done(&r);
}

/* No reply to the final dot: data_timeout (300 ms) gives a local 4xx. */
static void test_dot_timeout(void **state)
{
    struct run r;
    struct tmsg t;

    (void)state;
    run_init(&r);
    r.opts.data_timeout = 300;
    r.f.cfg.ignore_dot = 1;
    tmsg_init(&t, "s@example.org", "hello\r\n", 2, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_true(r.sent_status[0] < 0);
    assert_reply(&t.rc[0].reply, 421, "4.4.2");
    assert_reply(&t.rc[1].reply, 421, "4.4.2");
    assert_non_null(strstr(t.rc[0].reply.text, "timed out"));
    assert_non_null(strstr(t.rc[0].reply.text, "end of data"));
    assert_int_equal(r.f.messages, 1);
    assert_true(r.t_end - r.t_start >= 300);
    assert_true(r.t_end - r.t_start < 5000); /* not the command timeout */
    run_done(&r);
}

/* 1 MiB with many dot-led lines arrives byte for byte (several drain rounds). */
static void test_big_body(void **state)
{
    size_t len = 1u << 20, i = 0, dots = 0;
    char *body = malloc(len + 1);
    uint32_t seed = 12345;
    struct run r;
    struct tmsg t;

    (void)state;
    assert_non_null(body);
    while (i < len) {
        size_t ll;
        seed = seed * 1103515245u + 12345u;
        ll = 1 + (seed >> 16) % 200;
        for (size_t k = 0; k < ll && i < len; k++) {
            seed = seed * 1103515245u + 12345u;
            body[i++] = k == 0 && (seed >> 20) % 5 == 0 ? '.' : (char)('!' + (seed >> 16) % 90);
        }
        for (int k = 0; k < 2 && i < len; k++)
            body[i++] = k == 0 ? '\r' : '\n';
    }
    body[len - 2] = '\r';
    body[len - 1] = '\n';
    for (i = 0; i < len; i++)
        dots += body[i] == '.' && (i == 0 || body[i - 1] == '\n');
    body[len] = '\0';
    assert_true(dots > 100);
    run_init(&r);
    tmsg_init(&t, "s@example.org", body, 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.sent_status[0], 0);
    assert_reply(&t.rc[0].reply, 250, "2.0.0");
    assert_int_equal(r.f.body.len, len);
    assert_memory_equal(r.f.body.data, body, len);
    assert_int_equal(r.f.raw.len, r.f.body.len + dots); /* stuffed on the wire */
    free(body);
    run_done(&r);
}

/* A server that stops reading for a while as an 8 MB body starts: the
 * client must wait for on_drain instead of overrunning the conn's output
 * limit (conn_write's -ENOBUFS), and the body still arrives intact. */
static void test_slow_reader(void **state)
{
    size_t len = 8000000; /* whole 100-byte lines, each led by a dot */
    char *body = malloc(len + 1);
    struct run r;
    struct tmsg t;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = i % 100 == 98 ? '\r' : i % 100 == 99 ? '\n' : i % 100 == 0 ? '.' : 'q';
    body[len] = '\0';
    run_init(&r);
    r.f.cfg.pause_in_body = 1;
    tmsg_init(&t, "s@example.org", body, 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.f.paused, 1);
    assert_int_equal(r.sent_status[0], 0);
    assert_reply(&t.rc[0].reply, 250, "2.0.0");
    assert_int_equal(r.f.body.len, len);
    assert_memory_equal(r.f.body.data, body, len);
    assert_int_equal(r.f.raw.len, len + len / 100);
    free(body);
    run_done(&r);
}

/* A streamed body (msg->body NULL) handed over in pieces through on_body,
 * answered later (as the store does) and from inside on_body: it arrives
 * byte for byte, stuffed across piece boundaries, one question at a time. */
static void test_streamed_body(void **state)
{
    size_t len = 3000000; /* 100-byte lines, every one led by a dot */
    char *body = malloc(len + 1);

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = i % 100 == 98 ? '\r' : i % 100 == 99 ? '\n' : i % 100 == 0 ? '.' : 's';
    body[len] = '\0';
    for (int sync = 0; sync < 2; sync++) {
        struct run r;
        struct tmsg t;
        run_init(&r);
        r.stream = 1;
        r.stream_sync = sync;
        r.src = body;
        r.f.cfg.pause_in_body = !sync;
        tmsg_init(&t, "s@example.org", body, 1, two_rcpts);
        t.m.body = NULL; /* streamed */
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        assert_int_equal(r.sent_status[0], 0);
        assert_reply(&t.rc[0].reply, 250, "2.0.0");
        assert_int_equal(r.f.body.len, len);
        assert_memory_equal(r.f.body.data, body, len);
        assert_int_equal(r.f.raw.len, len + len / 100);
        assert_true(r.asks >= (int)(len / (256 * 1024)));
        run_done(&r);
    }
    free(body);
}

/* The message leaves the queue mid-transfer: the transaction ends with no
 * final dot (the connection is reset), the server records nothing, and
 * every recipient gets the local 451 4.3.0. */
static void test_streamed_body_fail(void **state)
{
    size_t len = 1000000;
    char *body = malloc(len + 1);
    struct run r;
    struct tmsg t;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = i % 50 == 48 ? '\r' : i % 50 == 49 ? '\n' : 'f';
    body[len] = '\0';
    run_init(&r);
    r.stream = 1;
    r.src = body;
    r.fail_at = 200000;
    tmsg_init(&t, "s@example.org", body, 2, two_rcpts);
    t.m.body = NULL;
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.sent_calls, 1);
    assert_true(r.sent_status[0] < 0);
    assert_reply(&t.rc[0].reply, 451, "4.3.0");
    assert_reply(&t.rc[1].reply, 451, "4.3.0");
    assert_non_null(strstr(t.rc[0].reply.text, "removed"));
    assert_int_equal(r.f.messages, 0);
    assert_true(r.f.body.len < len);
    free(body);
    run_done(&r);
}

/* tls = may and a 454 to STARTTLS: the same session goes on in clear with
 * the extensions of the first EHLO (RFC 3207 §4); encrypt gives up with
 * SMTP_CLIENT_ERR_TLS and sends no MAIL. */
static void test_starttls_refused(void **state)
{
    (void)state;
    for (int encrypt = 0; encrypt < 2; encrypt++) {
        struct run r;
        struct tmsg t;
        run_init(&r);
        r.opts.tls = encrypt ? SMTP_TLS_ENCRYPT : SMTP_TLS_MAY;
        r.opts.tls_ctx = cli_ctx;
        r.f.cfg.ehlo = "250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"; /* no cfg.tls: 454 */
        tmsg_init(&t, "s@example.org", "clear\r\n", 1, two_rcpts);
        r.msgs[r.nmsgs++] = &t.m;
        run_go(&r);

        assert_int_equal(r.f.tls_up, 0);
        if (encrypt) {
            assert_int_equal(r.ready_status, SMTP_CLIENT_ERR_TLS);
            assert_int_equal(r.why.code, 454);
            assert_int_equal(r.why.local, 0);
            assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\nSTARTTLS\nQUIT\n");
        } else {
            assert_int_equal(r.ready_status, 0);
            assert_int_equal(r.sent_status[0], 0);
            assert_string_equal(bstr(&r.f.body), "clear\r\n");
            assert_string_equal(bstr(&r.f.cmds), "EHLO client.test\n"
                                                 "STARTTLS\n"
                                                 "MAIL FROM:<s@example.org>\n"
                                                 "RCPT TO:<a@example.net>\n"
                                                 "DATA\n"
                                                 "QUIT\n");
        }
        run_done(&r);
    }
}

/* Attach to an open connection (ATRN): the client waits for the greeting. */
static void test_attach(void **state)
{
    struct run r;
    struct tmsg t;
    char expect[64];

    (void)state;
    run_init(&r);
    r.attach = 1;
    r.opts.peer_name = "site.test";
    tmsg_init(&t, "s@example.org", "over atrn\r\n", 1, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    run_go(&r);

    assert_int_equal(r.ready_status, 0);
    assert_int_equal(r.sent_status[0], 0);
    assert_string_equal(bstr(&r.f.body), "over atrn\r\n");
    snprintf(expect, sizeof(expect), "site.test[127.0.0.1]:%d", r.f.port);
    assert_string_equal(r.peer, expect);
    run_done(&r);
}

/* Nothing listens: on_ready fails with a local 4.4.1, on_closed follows. */
static void test_connect_refused(void **state)
{
    struct run r;

    (void)state;
    run_init(&r);
    r.no_server = 1;
    run_go(&r);

    assert_true(r.ready_status < 0);
    assert_int_equal(r.why.code / 100, 4);
    assert_string_equal(r.why.enh, "4.4.1");
    assert_non_null(strstr(r.why.text, "connect to"));
}

/* Bad server input: an over-long line, a reply of too many lines, a line
 * that is no reply at all. Each one ends the session with a local 4xx. */
static void test_bad_replies(void **state)
{
    char longline[3100], many[2000], *flood = malloc(20001);
    const char *greetings[4];
    size_t n = 0;
    struct run r;

    (void)state;
    memset(longline, 'x', sizeof(longline));
    memcpy(longline, "220 ", 4);
    memcpy(longline + sizeof(longline) - 3, "\r\n", 3);
    for (int i = 0; i < 150; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "220-x\r\n");
    snprintf(many + n, sizeof(many) - n, "220 x\r\n");
    greetings[0] = longline;
    greetings[1] = many;
    greetings[2] = "hello there\r\n";
    assert_non_null(flood);
    memset(flood, 'y', 20000); /* no line end at all */
    memcpy(flood, "220 ", 4);
    flood[20000] = '\0';
    greetings[3] = flood;
    for (int i = 0; i < 4; i++) {
        run_init(&r);
        r.f.cfg.greeting = greetings[i];
        run_go(&r);
        assert_true(r.ready_status < 0);
        assert_int_equal(r.why.code / 100, 4);
        assert_non_null(strstr(r.why.text, "protocol error"));
        assert_non_null(strstr(r.why.text, i == 2 ? "malformed" : "too long"));
        assert_int_equal(r.f.ehlo_count, 0);
        run_done(&r);
    }
    free(flood);
}

/* Bad messages are refused by smtp_client_send, no callback, the session
 * still usable; abort in mid-transaction reports on_sent(<0), then on_closed. */
static void test_bad_send_and_abort(void **state)
{
    static const char *const evil[] = {"a@example.net>\r\nRSET\r\nRCPT TO:<b@example.net"};
    struct run r;
    struct tmsg t, e;

    (void)state;
    run_init(&r);
    r.abort_after_send = 1;
    tmsg_init(&e, "s@example.org", "hi\r\n", 1, evil);
    r.bad_msg = &e.m;
    tmsg_init(&t, "s@example.org", "hi\r\n", 2, two_rcpts);
    r.msgs[r.nmsgs++] = &t.m;
    r.f.cfg.hold_until_data = 1;
    run_go(&r);

    assert_int_equal(r.bad_refused, 4);
    assert_int_equal(r.sent_calls, 1);
    assert_true(r.sent_status[0] < 0);
    assert_reply(&t.rc[0].reply, 421, "4.3.0");
    assert_reply(&t.rc[1].reply, 421, "4.3.0");
    assert_null(strstr(bstr(&r.f.cmds), "RSET"));
    run_done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelining_happy),
        cmocka_unit_test(test_no_pipelining),
        cmocka_unit_test(test_dot_stuffing),
        cmocka_unit_test(test_no_final_crlf),
        cmocka_unit_test(test_mixed_rcpts),
        cmocka_unit_test(test_all_refused),
        cmocka_unit_test(test_mail_refused),
        cmocka_unit_test(test_greeting_554),
        cmocka_unit_test(test_ehlo_502_helo),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_dsn_params),
        cmocka_unit_test(test_starttls_may),
        cmocka_unit_test(test_starttls_injection),
        cmocka_unit_test(test_starttls_verify),
        cmocka_unit_test(test_encrypt_not_offered),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_drop_mid_body),
        cmocka_unit_test(test_dot_timeout),
        cmocka_unit_test(test_big_body),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_streamed_body),
        cmocka_unit_test(test_streamed_body_fail),
        cmocka_unit_test(test_starttls_refused),
        cmocka_unit_test(test_attach),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_bad_replies),
        cmocka_unit_test(test_bad_send_and_abort),
    };

    signal(SIGPIPE, SIG_IGN);
    /* The client logs protocol errors as warnings; RELAYD_TEST_DEBUG=1 shows
     * every state change instead. */
    log_open("test_smtp_client", 1);
    log_set_level(getenv("RELAYD_TEST_DEBUG") ? LOGL_DEBUG : LOGL_ERROR);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
