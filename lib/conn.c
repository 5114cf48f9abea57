/*
 * conn: one TCP connection on the libuv loop, plain or TLS (through lib/tls.h),
 * delivered to its user as a plaintext byte stream. Owns the socket, its
 * read buffer, the write queue and the TLS session; frees them only after
 * every handle it opened has been closed. Must not include OpenSSL headers
 * and must not parse or time out the protocol above it.
 *
 * Callback rules (the user may call any conn_* function from any callback):
 *  - failures are reported once: on_tls(c, <0) while a handshake runs,
 *    on_eof(c, status) otherwise; after that reading has stopped;
 *  - after conn_close()/conn_abort() only on_closed is ever called;
 *  - a failed conn_accept()/conn_connect() start never calls back.
 */
#include "conn.h"
#include "tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define CONN_RBUF_SIZE        (16 * 1024) /* one TLS record of plaintext */
#define CONN_CLOSE_TIMEOUT_MS 5000        /* how long conn_close waits to flush */

enum {
    CF_WANT_READ = 1 << 0,  /* the user wants on_data (conn_read_start/stop) */
    CF_READING = 1 << 1,    /* uv_read_start is in effect on the socket */
    CF_CONNECTING = 1 << 2, /* uv_tcp_connect has not completed */
    CF_HANDSHAKING = 1 << 3,
    CF_TLS_UP = 1 << 4,    /* handshake finished successfully */
    CF_DEAD = 1 << 5,      /* EOF/error reported: no more reading or reports */
    CF_WFAILED = 1 << 6,   /* a write failed: refuse further writes */
    CF_CLOSING = 1 << 7,   /* conn_close or conn_abort was called */
    CF_SHUTDOWN = 1 << 8,  /* uv_shutdown issued (flushing before close) */
    CF_UVCLOSED = 1 << 9,  /* uv_close issued on our handles */
    CF_SILENT = 1 << 10,   /* failed start: never call the user back */
    CF_PUMP_DUE = 1 << 11, /* the timer will deliver plaintext still inside TLS */
};

/* One queued write: the request and its own copy of the bytes. */
struct conn_wreq {
    uv_write_t req;
    struct conn *c;
    size_t len;
    char data[];
};

struct conn {
    uv_tcp_t tcp;      /* first member: the handle pointer is the conn pointer */
    uv_timer_t timer;  /* deferred TLS delivery, or the conn_close flush bound */
    uv_connect_t creq; /* conn_connect only */
    uv_shutdown_t sreq;
    void *udata;
    struct conn_cbs cbs;
    void (*on_connect)(struct conn *c, int status);
    unsigned flags;
    int open_handles; /* handles whose close callback is still due */

    struct sockaddr_storage peer_sa;
    char peer_addr[64];
    int peer_port;
    char local_addr[64];
    int local_port;

    char *rbuf;       /* owned, CONN_RBUF_SIZE: socket reads, then decrypted text */
    size_t out_bytes; /* memory held by uv_write requests not yet completed:
                       * their copies and the requests themselves */
    char *hs_out;     /* owned: plaintext written while the handshake runs */
    size_t hs_len, hs_cap;
    struct tls_conn *tls; /* owned; NULL until conn_starttls */
};

static void conn_report(struct conn *c, int status);
static void conn_tls_pump(struct conn *c);
static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Start or stop socket reads so they match what the connection needs: the
 * user's wish, or a running handshake (which must read to make progress). */
static int conn_update_reading(struct conn *c)
{
    int want = !(c->flags & (CF_CLOSING | CF_DEAD | CF_CONNECTING | CF_UVCLOSED)) &&
               (c->flags & (CF_HANDSHAKING | CF_WANT_READ));
    int r = 0;

    if (want && !(c->flags & CF_READING)) {
        r = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
        if (r == 0)
            c->flags |= CF_READING;
    } else if (!want && (c->flags & CF_READING)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags &= ~CF_READING;
    }
    return r;
}

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (--c->open_handles > 0)
        return;
    if (!(c->flags & CF_SILENT) && c->cbs.on_closed != NULL)
        c->cbs.on_closed(c);
    tls_conn_free(c->tls);
    free(c->hs_out);
    free(c->rbuf);
    free(c);
}

/* Close both handles now; on_closed runs when both are gone. reset: send an
 * RST instead of a FIN (SO_LINGER 0), which libuv refuses after uv_shutdown. */
static void conn_close_handles(struct conn *c, int reset)
{
    if (c->flags & CF_UVCLOSED)
        return;
    c->flags |= CF_UVCLOSED | CF_CLOSING;
    c->flags &= ~(CF_READING | CF_PUMP_DUE);
    c->open_handles = 2;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
    if (!reset || uv_tcp_close_reset(&c->tcp, conn_close_cb) != 0)
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

/* A new connection with its handles initialised but no socket yet. */
static struct conn *conn_new(uv_loop_t *loop, const struct conn_cbs *cbs, void *udata)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->rbuf = malloc(CONN_RBUF_SIZE);
    if (c->rbuf == NULL || uv_tcp_init(loop, &c->tcp) != 0) {
        free(c->rbuf);
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->cbs = *cbs;
    c->udata = udata;
    return c;
}

/* Numeric text and port of sa; an IPv4-mapped IPv6 address (a dual-stack
 * listener) is turned into plain IPv4, so logs and policy see 192.0.2.1. */
static void conn_sockaddr_text(struct sockaddr_storage *ss, char *text, size_t textlen, int *port)
{
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        struct sockaddr_in s4;
        memset(&s4, 0, sizeof(s4));
        s4.sin_family = AF_INET;
        s4.sin_port = s6->sin6_port;
        memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, &s4, sizeof(s4));
    }
    text[0] = '\0';
    *port = 0;
    if (uv_ip_name((struct sockaddr *)ss, text, textlen) != 0)
        text[0] = '\0';
    if (ss->ss_family == AF_INET)
        *port = ntohs(((struct sockaddr_in *)ss)->sin_port);
    else if (ss->ss_family == AF_INET6)
        *port = ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
}

/* Learn both ends of the connected socket. */
static int conn_fill_addrs(struct conn *c)
{
    struct sockaddr_storage local;
    int len = sizeof(c->peer_sa);
    int r = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer_sa, &len);

    if (r != 0)
        return r;
    conn_sockaddr_text(&c->peer_sa, c->peer_addr, sizeof(c->peer_addr), &c->peer_port);
    len = sizeof(local);
    r = uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &len);
    if (r != 0)
        return r;
    conn_sockaddr_text(&local, c->local_addr, sizeof(c->local_addr), &c->local_port);
    return 0;
}

static void conn_write_cb(uv_write_t *req, int status)
{
    struct conn_wreq *w = (struct conn_wreq *)req;
    struct conn *c = w->c;

    c->out_bytes -= sizeof(*w) + w->len;
    free(w);
    if (status < 0) {
        c->flags |= CF_WFAILED;
        conn_report(c, status);
        return;
    }
    if (c->out_bytes == 0 && c->hs_len == 0 && !(c->flags & (CF_CLOSING | CF_WFAILED)) &&
        c->cbs.on_drain != NULL)
        c->cbs.on_drain(c);
}

/* Hand bytes (copied) to the socket behind anything already queued. When
 * nothing is queued, uv_try_write sends what the kernel takes at once. A
 * write error other than EAGAIN is left to uv_write, which reports it
 * through the write callback rather than inside the caller's stack. */
static int conn_send(struct conn *c, const char *data, size_t len)
{
    struct conn_wreq *w;
    uv_buf_t b;
    int r;

    if (c->out_bytes == 0 && !(c->flags & CF_CONNECTING) && len > 0) {
        b = uv_buf_init((char *)data, (unsigned int)len);
        r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r > 0) {
            data += r;
            len -= (size_t)r;
        }
    }
    if (len == 0)
        return 0;
    w = malloc(sizeof(*w) + len);
    if (w == NULL)
        return UV_ENOMEM;
    memcpy(w->data, data, len);
    w->c = c;
    w->len = len;
    b = uv_buf_init(w->data, (unsigned int)len);
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (r != 0) {
        free(w);
        return r;
    }
    /* count the request too: a client that reads none of its replies leaves
     * one per reply, and a 14-byte "250 2.0.0 Ok" costs some 230 bytes */
    c->out_bytes += sizeof(*w) + len;
    return 0;
}

/* Move all ciphertext TLS has produced to the socket. Called after every
 * TLS step so handshake messages and alerts leave promptly. */
static int conn_tls_flush(struct conn *c)
{
    size_t n = tls_conn_output_pending(c->tls);
    char stackbuf[4096];
    char *p = stackbuf;
    int r;

    if (n == 0)
        return 0;
    if (n > sizeof(stackbuf)) {
        p = malloc(n);
        if (p == NULL)
            return UV_ENOMEM;
    }
    n = tls_conn_take_output(c->tls, p, n);
    r = conn_send(c, p, n);
    if (p != stackbuf)
        free(p);
    return r;
}

/* Report a failure once: to on_tls while a handshake runs, else to on_eof.
 * Reading stops; nothing is reported once the user is closing. */
static void conn_report(struct conn *c, int status)
{
    int handshaking = c->flags & CF_HANDSHAKING;

    if (c->flags & (CF_CLOSING | CF_DEAD))
        return;
    c->flags |= CF_DEAD;
    c->flags &= ~(CF_HANDSHAKING | CF_PUMP_DUE);
    conn_update_reading(c);
    if (handshaking) {
        if (c->cbs.on_tls != NULL)
            c->cbs.on_tls(c, status);
    } else if (c->cbs.on_eof != NULL) {
        c->cbs.on_eof(c, status);
    }
}

/* The handshake is done: send what the user wrote meanwhile, then tell it. */
static void conn_tls_up(struct conn *c)
{
    int r = 0;

    c->flags &= ~CF_HANDSHAKING;
    c->flags |= CF_TLS_UP;
    if (c->hs_len > 0) {
        size_t n = c->hs_len;
        c->hs_len = 0;
        if (tls_conn_write(c->tls, c->hs_out, n) != TLS_OK)
            r = UV_EPROTO;
        else
            r = conn_tls_flush(c);
    }
    if (r != 0) {
        conn_report(c, r);
        return;
    }
    (void)conn_update_reading(c); /* only ever stops: the handshake was reading */
    if (c->cbs.on_tls != NULL)
        c->cbs.on_tls(c, 0);
}

/* Advance the handshake with whatever ciphertext has been fed. */
static void conn_tls_handshake(struct conn *c)
{
    int r = tls_conn_handshake(c->tls);
    int w = conn_tls_flush(c); /* send our flight (or the alert) */

    if (r == TLS_ERR)
        conn_report(c, UV_EPROTO);
    else if (w != 0)
        conn_report(c, w);
    else if (r == TLS_OK)
        conn_tls_up(c);
}

/* Deliver the plaintext TLS can give while the user wants it. What the user
 * does not want yet stays inside the TLS session (undecrypted records in its
 * read BIO), bounded because socket reads stop with the user's. */
static void conn_tls_pump(struct conn *c)
{
    while (c->tls != NULL && (c->flags & (CF_TLS_UP | CF_WANT_READ | CF_CLOSING | CF_DEAD)) ==
                                 (CF_TLS_UP | CF_WANT_READ)) {
        ssize_t n = tls_conn_read(c->tls, c->rbuf, CONN_RBUF_SIZE);
        int w = conn_tls_flush(c); /* post-handshake messages, key updates */
        if (n > 0) {
            if (c->cbs.on_data != NULL)
                c->cbs.on_data(c, c->rbuf, (size_t)n);
        } else if (n == TLS_WANT) {
            break;
        } else {
            conn_report(c, n == TLS_CLOSED ? UV_EOF : UV_EPROTO);
            break;
        }
        if (w != 0) {
            conn_report(c, w);
            break;
        }
    }
    if (!(c->flags & (CF_CLOSING | CF_DEAD))) {
        int r = conn_update_reading(c);
        if (r != 0)
            conn_report(c, r);
    }
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)suggested;
    *buf = uv_buf_init(c->rbuf, CONN_RBUF_SIZE);
}

/* Bytes from the socket. Plain: one on_data with the whole chunk; if the
 * user calls conn_starttls() inside it, the rest of that chunk is gone with
 * the call (CVE-2011-0411: nothing read before the handshake may be taken
 * as protected). TLS: feed, advance the handshake, then deliver plaintext. */
static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    (void)buf;
    if (nread == 0 || (c->flags & (CF_CLOSING | CF_DEAD)))
        return;
    if (nread < 0) {
        conn_report(c, (int)nread);
        return;
    }
    if (c->tls == NULL) {
        if ((c->flags & CF_WANT_READ) && c->cbs.on_data != NULL)
            c->cbs.on_data(c, c->rbuf, (size_t)nread);
        return;
    }
    if (tls_conn_feed(c->tls, c->rbuf, (size_t)nread) != TLS_OK) {
        conn_report(c, UV_EPROTO);
        return;
    }
    if (c->flags & CF_HANDSHAKING)
        conn_tls_handshake(c);
    conn_tls_pump(c);
}

/* One timer, two jobs: while open it delivers plaintext left inside TLS
 * after conn_read_start(); once closing it bounds the flush. */
static void conn_timer_cb(uv_timer_t *t)
{
    struct conn *c = t->data;

    if (c->flags & CF_CLOSING) {
        conn_close_handles(c, 0); /* after uv_shutdown libuv allows no RST */
        return;
    }
    c->flags &= ~CF_PUMP_DUE;
    conn_tls_pump(c);
}

int conn_accept(uv_loop_t *loop, uv_stream_t *server, const struct conn_cbs *cbs, void *udata,
                struct conn **out)
{
    struct conn *c = conn_new(loop, cbs, udata);
    int r;

    if (c == NULL)
        return UV_ENOMEM;
    r = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r == 0)
        r = conn_fill_addrs(c);
    if (r == 0) {
        (void)uv_tcp_nodelay(&c->tcp, 1); /* SMTP replies are small and latency-bound */
        c->flags |= CF_WANT_READ;
        r = conn_update_reading(c);
    }
    if (r != 0) {
        c->flags |= CF_SILENT;
        conn_close_handles(c, 0);
        return r;
    }
    *out = c;
    return 0;
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    struct conn *c = req->data;

    c->flags &= ~CF_CONNECTING;
    if (c->flags & CF_CLOSING)
        return; /* the user gave up first; only on_closed follows */
    if (status == 0)
        status = conn_fill_addrs(c);
    if (status == 0) {
        (void)uv_tcp_nodelay(&c->tcp, 1);
        c->flags |= CF_WANT_READ;
        status = conn_update_reading(c);
    }
    if (c->on_connect != NULL)
        c->on_connect(c, status);
    if (status != 0)
        conn_close(c);
}

int conn_connect(uv_loop_t *loop, const struct sockaddr *addr, const struct conn_cbs *cbs,
                 void (*on_connect)(struct conn *c, int status), void *udata, struct conn **out)
{
    struct conn *c = conn_new(loop, cbs, udata);
    size_t salen =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int r;

    if (c == NULL)
        return UV_ENOMEM;
    c->on_connect = on_connect;
    c->creq.data = c;
    /* Known before the connect completes, so a failure can be logged by it. */
    memcpy(&c->peer_sa, addr, salen);
    conn_sockaddr_text(&c->peer_sa, c->peer_addr, sizeof(c->peer_addr), &c->peer_port);
    r = uv_tcp_connect(&c->creq, &c->tcp, addr, conn_connect_cb);
    if (r != 0) {
        c->flags |= CF_SILENT;
        conn_close_handles(c, 0);
        return r;
    }
    c->flags |= CF_CONNECTING;
    *out = c;
    return 0;
}

void *conn_udata(const struct conn *c)
{
    return c->udata;
}

void conn_set_udata(struct conn *c, void *udata)
{
    c->udata = udata;
}

void conn_set_cbs(struct conn *c, const struct conn_cbs *cbs, void *udata)
{
    c->cbs = *cbs;
    c->udata = udata;
}

const char *conn_peer_addr(const struct conn *c)
{
    return c->peer_addr;
}

int conn_peer_port(const struct conn *c)
{
    return c->peer_port;
}

const struct sockaddr *conn_peer_sockaddr(const struct conn *c)
{
    return (const struct sockaddr *)&c->peer_sa;
}

const char *conn_local_addr(const struct conn *c)
{
    return c->local_addr;
}

int conn_local_port(const struct conn *c)
{
    return c->local_port;
}

void conn_read_stop(struct conn *c)
{
    c->flags &= ~CF_WANT_READ;
    conn_update_reading(c);
}

/* Resume delivery. Under TLS, plaintext may already be waiting inside the
 * session with no more bytes coming from the peer, so a zero timer delivers
 * it from the loop (not from inside the caller's stack). */
int conn_read_start(struct conn *c)
{
    if (c->flags & (CF_CLOSING | CF_UVCLOSED))
        return UV_EINVAL;
    c->flags |= CF_WANT_READ;
    if ((c->flags & (CF_TLS_UP | CF_PUMP_DUE | CF_DEAD)) == CF_TLS_UP) {
        c->flags |= CF_PUMP_DUE;
        uv_timer_start(&c->timer, conn_timer_cb, 0, 0);
    }
    return conn_update_reading(c);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    if (c->flags & (CF_CLOSING | CF_UVCLOSED | CF_WFAILED))
        return UV_EPIPE;
    if (conn_write_pending(c) > CONN_OUT_MAX)
        return -ENOBUFS;
    if (len == 0)
        return 0;
    if (c->tls == NULL)
        return conn_send(c, data, len);
    if (c->flags & CF_HANDSHAKING) {
        /* Held until the handshake is done; encrypted then (conn_tls_up). */
        if (c->hs_len + len > c->hs_cap) {
            size_t cap = c->hs_cap ? c->hs_cap : 1024;
            char *p;
            while (cap < c->hs_len + len)
                cap *= 2;
            p = realloc(c->hs_out, cap);
            if (p == NULL)
                return UV_ENOMEM;
            c->hs_out = p;
            c->hs_cap = cap;
        }
        memcpy(c->hs_out + c->hs_len, data, len);
        c->hs_len += len;
        return 0;
    }
    if (!(c->flags & CF_TLS_UP) || tls_conn_write(c->tls, data, len) != TLS_OK)
        return UV_EPROTO;
    return conn_tls_flush(c);
}

size_t conn_write_pending(const struct conn *c)
{
    return c->out_bytes + c->hs_len;
}

int conn_starttls(struct conn *c, struct tls_ctx *ctx, int server, const char *sni_host)
{
    int r;

    if (c->tls != NULL)
        return UV_EALREADY;
    if (c->flags & (CF_CLOSING | CF_UVCLOSED | CF_DEAD | CF_WFAILED))
        return UV_ENOTCONN;
    c->tls = tls_conn_new(ctx, server, sni_host);
    if (c->tls == NULL)
        return UV_ENOMEM;
    c->flags |= CF_HANDSHAKING;
    if (!server) {
        /* The ClientHello goes out behind the plaintext already queued. */
        r = tls_conn_handshake(c->tls);
        if (r == TLS_ERR || conn_tls_flush(c) != 0) {
            c->flags &= ~CF_HANDSHAKING;
            return UV_EPROTO;
        }
    }
    r = conn_update_reading(c);
    if (r != 0)
        c->flags &= ~CF_HANDSHAKING;
    return r;
}

int conn_tls_active(const struct conn *c)
{
    return (c->flags & CF_TLS_UP) != 0;
}

const char *conn_tls_version(const struct conn *c)
{
    return (c->flags & CF_TLS_UP) ? tls_conn_version(c->tls) : NULL;
}

int conn_tls_channel_binding(const struct conn *c, char *out, size_t outlen)
{
    return (c->flags & CF_TLS_UP) ? tls_conn_channel_binding(c->tls, out, outlen) : -1;
}

const char *conn_tls_cipher(const struct conn *c)
{
    return (c->flags & CF_TLS_UP) ? tls_conn_cipher(c->tls) : NULL;
}

int conn_tls_bits(const struct conn *c)
{
    return (c->flags & CF_TLS_UP) ? tls_conn_cipher_bits(c->tls, NULL) : 0;
}

int conn_tls_peer_verified(const struct conn *c)
{
    return (c->flags & CF_TLS_UP) ? tls_conn_peer_verified(c->tls) : 0;
}

const char *conn_tls_error(const struct conn *c)
{
    return c->tls != NULL ? tls_conn_error(c->tls) : "";
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close_handles(req->data, 0);
}

/* Graceful close: TLS close_notify (RFC 8446 §6.1), then uv_shutdown, which
 * libuv completes after every queued write, then the close. A peer that does
 * not read cannot hold us beyond CONN_CLOSE_TIMEOUT_MS. */
void conn_close(struct conn *c)
{
    if (c->flags & CF_CLOSING)
        return;
    c->flags |= CF_CLOSING;
    c->flags &= ~CF_PUMP_DUE;
    uv_timer_stop(&c->timer);
    conn_update_reading(c);
    if (c->flags & (CF_CONNECTING | CF_WFAILED)) {
        conn_close_handles(c, 0);
        return;
    }
    if (c->flags & CF_TLS_UP) { /* also after the peer's close_notify: answer it */
        tls_conn_shutdown(c->tls);
        (void)conn_tls_flush(c);
    }
    c->hs_len = 0; /* written during a handshake that never finished: unsendable */
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, conn_shutdown_cb) != 0) {
        conn_close_handles(c, 0);
        return;
    }
    c->flags |= CF_SHUTDOWN;
    uv_timer_start(&c->timer, conn_timer_cb, CONN_CLOSE_TIMEOUT_MS, 0);
}

void conn_abort(struct conn *c)
{
    c->flags |= CF_CLOSING;
    c->hs_len = 0;
    conn_close_handles(c, !(c->flags & (CF_CONNECTING | CF_SHUTDOWN)));
}
