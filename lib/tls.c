/*
 * tls: TLS sessions on OpenSSL 3.0 over a pair of memory BIOs. Owns the
 * SSL_CTX/SSL objects and their error text. Must not touch sockets or libuv:
 * the caller (lib/conn.c) moves the ciphertext. The only file that includes
 * OpenSSL headers.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tls_ctx {
    SSL_CTX *ssl;
    int server;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer; owned by ssl */
    BIO *wbio; /* ciphertext for the peer; owned by ssl */
    int server;
    int done;   /* handshake finished */
    int failed; /* a fatal error happened; the session is unusable */
    char err[256];
};

/* Largest single BIO/SSL call: their lengths are ints. */
#define TLS_CHUNK_MAX (INT_MAX / 2)

/* Copy the oldest queued OpenSSL error (or fallback) into err; clears the queue. */
static void tls_error_text(char *err, size_t errlen, const char *what, const char *fallback)
{
    unsigned long e = ERR_get_error();
    char detail[200];

    if (err == NULL || errlen == 0)
        goto done;
    if (e != 0)
        ERR_error_string_n(e, detail, sizeof(detail));
    else
        snprintf(detail, sizeof(detail), "%s", fallback ? fallback : "unknown error");
    snprintf(err, errlen, "%s: %s", what, detail);
done:
    ERR_clear_error();
}

/* Settings both sides share. RFC 8996 deprecates TLS 1.0 and 1.1;
 * renegotiation and compression are off (CRIME, and renegotiation DoS). */
static int tls_ctx_common(SSL_CTX *ssl)
{
    if (!SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION))
        return -1;
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle SMTP sessions are the common case: give their buffers back. */
    SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

struct tls_ctx *tls_ctx_new_server(const char *cert_file, const char *key_file, char *err,
                                   size_t errlen)
{
    struct tls_ctx *ctx = NULL;
    SSL_CTX *ssl = NULL;

    ERR_clear_error();
    if (cert_file == NULL) {
        snprintf(err, errlen, "no certificate file given");
        goto fail;
    }
    if (key_file == NULL)
        key_file = cert_file;
    ssl = SSL_CTX_new(TLS_server_method());
    if (ssl == NULL) {
        tls_error_text(err, errlen, "SSL_CTX_new", NULL);
        goto fail;
    }
    if (tls_ctx_common(ssl) < 0) {
        tls_error_text(err, errlen, "TLS settings", NULL);
        goto fail;
    }
    SSL_CTX_set_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
        tls_error_text(err, errlen, cert_file, NULL);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_error_text(err, errlen, key_file, NULL);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ssl) != 1) {
        tls_error_text(err, errlen, "key does not match certificate", NULL);
        goto fail;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ctx->ssl = ssl;
    ctx->server = 1;
    return ctx;
fail:
    SSL_CTX_free(ssl);
    return NULL;
}

/* verify = 0 is opportunistic TLS (RFC 7435): any certificate is accepted, but
 * the chain and name are still checked so tls_conn_peer_verified() can say
 * whether the peer would have passed. */
struct tls_ctx *tls_ctx_new_client(int verify, const char *ca_file, char *err, size_t errlen)
{
    struct tls_ctx *ctx = NULL;
    SSL_CTX *ssl = NULL;
    int ok;

    ERR_clear_error();
    ssl = SSL_CTX_new(TLS_client_method());
    if (ssl == NULL) {
        tls_error_text(err, errlen, "SSL_CTX_new", NULL);
        goto fail;
    }
    if (tls_ctx_common(ssl) < 0) {
        tls_error_text(err, errlen, "TLS settings", NULL);
        goto fail;
    }
    if (ca_file != NULL)
        ok = SSL_CTX_load_verify_locations(ssl, ca_file, NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(ssl);
    if (ok != 1) {
        tls_error_text(err, errlen, ca_file ? ca_file : "default CA paths", NULL);
        goto fail;
    }
    SSL_CTX_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ctx->ssl = ssl;
    ctx->server = 0;
    return ctx;
fail:
    SSL_CTX_free(ssl);
    return NULL;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* Name the peer for verification: an IP literal is matched against iPAddress
 * SANs, anything else as a DNS name (RFC 6125). SNI carries only DNS names
 * (RFC 6066 §3: literal addresses are not permitted). */
static int tls_conn_set_peer_name(struct tls_conn *t, const char *host)
{
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;

    if (is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1 ? 0 : -1;
    if (SSL_set_tlsext_host_name(t->ssl, host) != 1)
        return -1;
    /* Wildcards only as the whole leftmost label (RFC 6125 §6.4.3). */
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(t->ssl, host) == 1 ? 0 : -1;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int server, const char *sni_host)
{
    struct tls_conn *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    ERR_clear_error();
    t->server = server;
    t->ssl = SSL_new(ctx->ssl);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL)
        goto fail;
    /* An empty read BIO means "wait for more", never EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (sni_host != NULL && *sni_host != '\0' && tls_conn_set_peer_name(t, sni_host) < 0)
            goto fail_owned;
    }
    return t;
fail:
    BIO_free(t->rbio);
    BIO_free(t->wbio);
fail_owned:
    SSL_free(t->ssl);
    ERR_clear_error();
    free(t);
    return NULL;
}

void tls_conn_free(struct tls_conn *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

int tls_conn_feed(struct tls_conn *t, const void *data, size_t len)
{
    const char *p = data;

    if (t->failed)
        return TLS_ERR;
    while (len > 0) {
        int n = len > TLS_CHUNK_MAX ? TLS_CHUNK_MAX : (int)len;
        ERR_clear_error();
        if (BIO_write(t->rbio, p, n) != n) {
            t->failed = 1;
            tls_error_text(t->err, sizeof(t->err), "BIO_write", "out of memory");
            return TLS_ERR;
        }
        p += n;
        len -= (size_t)n;
    }
    return TLS_OK;
}

/* Record why an SSL_* call failed; ret is its return value. A failed
 * certificate check is named by its verify result, which says more than the
 * generic "certificate verify failed" in the error queue. */
static void tls_conn_fail(struct tls_conn *t, const char *what, int sslerr)
{
    long vr = SSL_get_verify_result(t->ssl);
    char fallback[64];

    t->failed = 1;
    snprintf(fallback, sizeof(fallback), "SSL error %d", sslerr);
    tls_error_text(t->err, sizeof(t->err), what, fallback);
    if (!t->server && vr != X509_V_OK && SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE) {
        size_t used = strlen(t->err);
        snprintf(t->err + used, sizeof(t->err) - used, " (%s)", X509_verify_cert_error_string(vr));
    }
}

int tls_conn_handshake(struct tls_conn *t)
{
    int r, e;

    if (t->failed)
        return TLS_ERR;
    if (t->done)
        return TLS_OK;
    ERR_clear_error();
    r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = 1;
        return TLS_OK;
    }
    e = SSL_get_error(t->ssl, r);
    /* A memory BIO never blocks on write, so WANT_WRITE cannot really happen;
     * treat it like WANT_READ rather than as a failure. */
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return TLS_WANT;
    tls_conn_fail(t, "handshake", e);
    return TLS_ERR;
}

ssize_t tls_conn_read(struct tls_conn *t, void *buf, size_t len)
{
    int r, e;

    if (t->failed)
        return TLS_ERR;
    if (len == 0)
        return TLS_WANT;
    if (len > TLS_CHUNK_MAX)
        len = TLS_CHUNK_MAX;
    ERR_clear_error();
    r = SSL_read(t->ssl, buf, (int)len);
    if (r > 0) {
        t->done = 1; /* SSL_read completes a pending handshake itself */
        return r;
    }
    e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    default:
        tls_conn_fail(t, "read", e);
        return TLS_ERR;
    }
}

int tls_conn_write(struct tls_conn *t, const void *data, size_t len)
{
    const char *p = data;

    if (t->failed || !t->done)
        return TLS_ERR;
    while (len > 0) {
        int n = len > TLS_CHUNK_MAX ? TLS_CHUNK_MAX : (int)len;
        int r;
        ERR_clear_error();
        r = SSL_write(t->ssl, p, n);
        if (r <= 0) {
            tls_conn_fail(t, "write", SSL_get_error(t->ssl, r));
            return TLS_ERR;
        }
        p += r;
        len -= (size_t)r;
    }
    return TLS_OK;
}

/* RFC 8446 §6.1: close_notify. We do not wait for the peer's reply alert;
 * the caller closes the socket after sending ours. */
void tls_conn_shutdown(struct tls_conn *t)
{
    if (t->failed || !t->done)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t tls_conn_output_pending(const struct tls_conn *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t tls_conn_take_output(struct tls_conn *t, void *buf, size_t len)
{
    int n;

    if (len > TLS_CHUNK_MAX)
        len = TLS_CHUNK_MAX;
    if (len == 0)
        return 0;
    n = BIO_read(t->wbio, buf, (int)len);
    return n > 0 ? (size_t)n : 0;
}

const char *tls_conn_version(const struct tls_conn *t)
{
    return t->done ? SSL_get_version(t->ssl) : NULL;
}

int tls_conn_channel_binding(const struct tls_conn *t, char *out, size_t outlen)
{
    static const char label[] = "EXPORTER-Channel-Binding";
    unsigned char key[32];

    /* base64 of 32 bytes: 44 characters and the NUL */
    if (!t->done || outlen < 45 || SSL_version(t->ssl) != TLS1_3_VERSION)
        return -1;
    if (SSL_export_keying_material(t->ssl, key, sizeof(key), label, sizeof(label) - 1, NULL, 0,
                                   0) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, key, sizeof(key));
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
}

const char *tls_conn_cipher(const struct tls_conn *t)
{
    const SSL_CIPHER *c = t->done ? SSL_get_current_cipher(t->ssl) : NULL;

    return c ? SSL_CIPHER_get_name(c) : NULL;
}

int tls_conn_cipher_bits(const struct tls_conn *t, int *alg_bits)
{
    const SSL_CIPHER *c = t->done ? SSL_get_current_cipher(t->ssl) : NULL;
    int alg = 0, bits = 0;

    if (c != NULL)
        bits = SSL_CIPHER_get_bits(c, &alg);
    if (alg_bits != NULL)
        *alg_bits = alg;
    return bits;
}

/* Client side only: the server presented a certificate that chains to a
 * trusted CA and matches the name given to tls_conn_new. */
int tls_conn_peer_verified(const struct tls_conn *t)
{
    X509 *peer;

    if (t->server || !t->done || t->failed)
        return 0;
    peer = SSL_get0_peer_certificate(t->ssl);
    return peer != NULL && SSL_get_verify_result(t->ssl) == X509_V_OK;
}

const char *tls_conn_error(const struct tls_conn *t)
{
    return t->err;
}
