/*
 * tls: OpenSSL on memory BIOs, with no sockets and no libuv. The caller moves
 * ciphertext between this object and the network; lib/conn.c is that caller.
 * The only file besides tls.c that may include OpenSSL headers is none.
 */
#ifndef RELAYD_TLS_H
#define RELAYD_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct tls_ctx;  /* shared settings: certificate, key, verification */
struct tls_conn; /* one TLS session over memory BIOs */

enum {
    TLS_OK = 0,      /* done / success */
    TLS_WANT = -3,   /* needs more ciphertext from the peer (feed it, call again);
                      * negative so tls_conn_read() cannot confuse it with 1 byte */
    TLS_CLOSED = -2, /* the peer sent close_notify */
    TLS_ERR = -1     /* protocol or verification error; tls_conn_error() says what */
};

/* Server context from PEM files (key may be in the cert file when key_file is
 * NULL). On failure NULL, with a reason in err. */
struct tls_ctx *tls_ctx_new_server(const char *cert_file, const char *key_file, char *err,
                                   size_t errlen);
/* Client context. verify: check the peer against ca_file (or the system store
 * when ca_file is NULL) and the host name given to tls_conn_new. */
struct tls_ctx *tls_ctx_new_client(int verify, const char *ca_file, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/* A new session. server: 1 accept, 0 connect (then sni_host names the peer
 * for SNI and verification; may be NULL). NULL on allocation failure. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int server, const char *sni_host);
void tls_conn_free(struct tls_conn *t);

/* Hand ciphertext that arrived from the network to TLS. TLS_OK or TLS_ERR. */
int tls_conn_feed(struct tls_conn *t, const void *data, size_t len);
/* Advance the handshake: TLS_OK when complete, TLS_WANT, or TLS_ERR. Output
 * to send may be pending afterwards (tls_conn_output_pending). */
int tls_conn_handshake(struct tls_conn *t);
/* Decrypted bytes: returns n > 0, or TLS_WANT (nothing now), TLS_CLOSED or TLS_ERR. */
ssize_t tls_conn_read(struct tls_conn *t, void *buf, size_t len);
/* Encrypt len bytes of plaintext (all of them, or TLS_ERR); the ciphertext is
 * then pending output. */
int tls_conn_write(struct tls_conn *t, const void *data, size_t len);
/* Queue a close_notify alert as pending output. */
void tls_conn_shutdown(struct tls_conn *t);
/* Ciphertext waiting to go to the network. */
size_t tls_conn_output_pending(const struct tls_conn *t);
/* Move up to len bytes of pending ciphertext into buf; returns the count. */
size_t tls_conn_take_output(struct tls_conn *t, void *buf, size_t len);

/* After the handshake: "TLSv1.3", "TLS_AES_256_GCM_SHA384", bits used/of the
 * algorithm; for Received: headers and logs. Static or session storage. */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_cipher(const struct tls_conn *t);
int tls_conn_cipher_bits(const struct tls_conn *t, int *alg_bits);
/* RFC 9266 tls-exporter channel binding of this connection, base64, for
 * SCRAM-SHA-256-PLUS (RFC 7677): 32 bytes exported with the label
 * "EXPORTER-Channel-Binding" and no context. Only for TLS 1.3 (RFC 9266 §3:
 * TLS 1.2 would need the extended master secret, which is not checked):
 * 0 and the text in out, or -1 (then there is no channel binding). */
int tls_conn_channel_binding(const struct tls_conn *t, char *out, size_t outlen);
/* Whether the peer's certificate verified (client side). */
int tls_conn_peer_verified(const struct tls_conn *t);
/* The last error as text ("" if none). Session storage. */
const char *tls_conn_error(const struct tls_conn *t);

#endif
