/*
 * conn: one TCP connection on the libuv loop, plain or TLS, seen by its user
 * as a byte stream. TLS lives below this interface (lib/tls.c), so protocol
 * code never knows whether it is encrypted. Owns its socket, buffers and
 * TLS state; frees them only from the uv_close callback (on_closed).
 * Does not parse anything and does not time out on its own: sessions run
 * their own timers.
 */
#ifndef RELAYD_CONN_H
#define RELAYD_CONN_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

struct conn;
struct tls_ctx;

struct conn_cbs {
    /* Plaintext arrived. data is valid only during the call; copy what you keep.
     * May call conn_starttls(), conn_read_stop() or conn_close(). */
    void (*on_data)(struct conn *c, const char *data, size_t len);
    /* The peer closed (UV_EOF) or a read, write or TLS error happened (< 0).
     * Reading has stopped; the owner decides when to conn_close(). */
    void (*on_eof)(struct conn *c, int status);
    /* The TLS handshake started by conn_starttls() finished: 0 or < 0. */
    void (*on_tls)(struct conn *c, int status);
    /* Everything written so far has reached the kernel. Optional (may be NULL). */
    void (*on_drain)(struct conn *c);
    /* Last call: the connection is closed and about to be freed. */
    void (*on_closed)(struct conn *c);
};

/* Accept a pending connection on server and start reading. On error returns a
 * negative libuv code and no callback is ever called. */
int conn_accept(uv_loop_t *loop, uv_stream_t *server, const struct conn_cbs *cbs, void *udata,
                struct conn **out);
/* Connect to addr. on_connect(c, status) is called once; status < 0 means the
 * connection failed and c is already closing (on_closed follows). On error
 * returns < 0 and nothing is called. Reading starts after a successful connect. */
int conn_connect(uv_loop_t *loop, const struct sockaddr *addr, const struct conn_cbs *cbs,
                 void (*on_connect)(struct conn *c, int status), void *udata, struct conn **out);

void *conn_udata(const struct conn *c);
void conn_set_udata(struct conn *c, void *udata);
/* Hand an open connection to a new owner: its callbacks and udata replace
 * the old ones from the next event on (ATRN turns a server session into a
 * client, RFC 2645 §4). Reading is not started or stopped by this call. */
void conn_set_cbs(struct conn *c, const struct conn_cbs *cbs, void *udata);
/* Numeric peer address ("192.0.2.1", "2001:db8::1") and port. */
const char *conn_peer_addr(const struct conn *c);
int conn_peer_port(const struct conn *c);
const struct sockaddr *conn_peer_sockaddr(const struct conn *c);
/* Numeric local address ("127.0.0.1") and port. */
const char *conn_local_addr(const struct conn *c);
int conn_local_port(const struct conn *c);

/* Stop / resume delivering on_data (back-pressure). */
void conn_read_stop(struct conn *c);
int conn_read_start(struct conn *c);

/* Queue bytes for the peer (copied; encrypted if TLS is on). 0, or -ENOBUFS
 * when more than CONN_OUT_MAX bytes of memory already wait for the peer (the
 * copies and each write request's own size), or a libuv error. */
#define CONN_OUT_MAX (1024 * 1024)
int conn_write(struct conn *c, const void *data, size_t len);
/* Memory queued for the peer and not yet handed to the kernel (the bytes
 * and their write requests). */
size_t conn_write_pending(const struct conn *c);

/* Switch to TLS now. Output already queued is sent in the clear first; every
 * byte read from now on is ciphertext. Plaintext the peer sent before the
 * handshake and that on_data has not delivered yet is discarded (the caller
 * discards what it buffered itself: CVE-2011-0411). on_tls reports the end of
 * the handshake. server: 1 accept, 0 connect (sni_host for the client side). */
int conn_starttls(struct conn *c, struct tls_ctx *ctx, int server, const char *sni_host);
int conn_tls_active(const struct conn *c);
/* Protocol, cipher and bits once TLS is up (NULL/0 otherwise). */
const char *conn_tls_version(const struct conn *c);
const char *conn_tls_cipher(const struct conn *c);
/* tls_conn_channel_binding() of the connection's TLS: 0 or -1. */
int conn_tls_channel_binding(const struct conn *c, char *out, size_t outlen);
int conn_tls_bits(const struct conn *c);
int conn_tls_peer_verified(const struct conn *c);
/* Why TLS failed (handshake or later), for logs; "" when nothing failed.
 * Valid until on_closed returns. */
const char *conn_tls_error(const struct conn *c);

/* Close: queued output is flushed first (bounded to a few seconds), then the
 * socket is closed and on_closed runs. Safe to call more than once. */
void conn_close(struct conn *c);
/* Close at once, dropping queued output (reset the connection). */
void conn_abort(struct conn *c);

#endif
