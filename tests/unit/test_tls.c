/*
 * test_tls: lib/tls.c (two sessions pumping bytes in memory) and lib/conn.c
 * (real loopback sockets on a libuv loop: echo, STARTTLS injection, TLS
 * back-pressure, failures). The test key and certificate are made with
 * OpenSSL here, in a temporary directory, so no fixture files are needed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <uv.h>

#include "conn.h"
#include "tls.h"

/* ---- test certificate ----------------------------------------------------------- */

static char tmpdir[64];
static char cert_pem[128], key_pem[128], combined_pem[128], other_key_pem[128];

static EVP_PKEY *make_key(void)
{
    return EVP_EC_gen("P-256");
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(path, "w");
    int ok = f != NULL;

    if (ok && cert != NULL)
        ok = PEM_write_X509(f, cert) == 1;
    if (ok && key != NULL)
        ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* A self-signed certificate for CN=localhost, SAN DNS:localhost, IP:127.0.0.1,
 * valid for two days; its key; the two in one file; and an unrelated key. */
static int make_cert_files(void)
{
    EVP_PKEY *key = make_key(), *other = make_key();
    X509 *x = X509_new();
    X509_NAME *name;
    X509_EXTENSION *ext;
    X509V3_CTX v3;
    int rc = -1;

    if (key == NULL || other == NULL || x == NULL)
        goto done;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 2 * 86400);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    if (ext == NULL)
        goto done;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (X509_sign(x, key, EVP_sha256()) == 0)
        goto done;
    if (write_pem(cert_pem, x, NULL) < 0 || write_pem(key_pem, NULL, key) < 0 ||
        write_pem(combined_pem, x, key) < 0 || write_pem(other_key_pem, NULL, other) < 0)
        goto done;
    rc = 0;
done:
    X509_free(x);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    return rc;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_tls.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(cert_pem, sizeof(cert_pem), "%s/cert.pem", tmpdir);
    snprintf(key_pem, sizeof(key_pem), "%s/key.pem", tmpdir);
    snprintf(combined_pem, sizeof(combined_pem), "%s/combined.pem", tmpdir);
    snprintf(other_key_pem, sizeof(other_key_pem), "%s/other-key.pem", tmpdir);
    return make_cert_files();
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(cert_pem);
    unlink(key_pem);
    unlink(combined_pem);
    unlink(other_key_pem);
    rmdir(tmpdir);
    return 0;
}

static struct tls_ctx *server_ctx(void)
{
    char err[256] = "";
    struct tls_ctx *ctx = tls_ctx_new_server(cert_pem, key_pem, err, sizeof(err));

    if (ctx == NULL)
        fail_msg("server ctx: %s", err);
    return ctx;
}

static struct tls_ctx *client_ctx(int verify, const char *ca)
{
    char err[256] = "";
    struct tls_ctx *ctx = tls_ctx_new_client(verify, ca, err, sizeof(err));

    if (ctx == NULL)
        fail_msg("client ctx: %s", err);
    return ctx;
}

/* ---- pure TLS in memory ------------------------------------------------------------- */

/* Move all pending ciphertext from one session into the other. */
static void move_bytes(struct tls_conn *from, struct tls_conn *to)
{
    char buf[4096];
    size_t n;

    while ((n = tls_conn_take_output(from, buf, sizeof(buf))) > 0)
        assert_int_equal(tls_conn_feed(to, buf, n), TLS_OK);
    assert_int_equal(tls_conn_output_pending(from), 0);
}

/* Run both handshakes until both finish or one fails; returns the client's result. */
static int handshake_pair(struct tls_conn *cli, struct tls_conn *srv, int *srv_rc)
{
    int rc = TLS_WANT, rs = TLS_WANT;

    for (int i = 0; i < 10 && !(rc == TLS_OK && rs == TLS_OK); i++) {
        rc = tls_conn_handshake(cli);
        move_bytes(cli, srv);
        if (rc == TLS_ERR)
            break;
        rs = tls_conn_handshake(srv);
        move_bytes(srv, cli);
        if (rs == TLS_ERR)
            break;
    }
    if (srv_rc != NULL)
        *srv_rc = rs;
    return rc;
}

/* Read everything available (up to cap) from t into out. */
static size_t read_all(struct tls_conn *t, char *out, size_t cap, ssize_t *last)
{
    size_t got = 0;
    ssize_t n;

    while (got < cap && (n = tls_conn_read(t, out + got, cap - got)) > 0)
        got += (size_t)n;
    if (last != NULL)
        *last = got < cap ? tls_conn_read(t, out + got, cap - got) : 0;
    return got;
}

static void test_tls_memory_session(void **state)
{
    struct tls_ctx *sctx = server_ctx(), *cctx = client_ctx(0, NULL);
    struct tls_conn *srv = tls_conn_new(sctx, 1, NULL);
    struct tls_conn *cli = tls_conn_new(cctx, 0, "localhost");
    char buf[256];
    ssize_t last;
    int srv_rc, bits, alg = -1;

    (void)state;
    assert_non_null(srv);
    assert_non_null(cli);
    /* Nothing is readable, writable or reported before the handshake. */
    assert_null(tls_conn_version(cli));
    assert_null(tls_conn_cipher(srv));
    assert_int_equal(tls_conn_write(cli, "x", 1), TLS_ERR);
    assert_int_equal(tls_conn_read(srv, buf, sizeof(buf)), TLS_WANT);
    assert_string_equal(tls_conn_error(srv), "");

    assert_int_equal(handshake_pair(cli, srv, &srv_rc), TLS_OK);
    assert_int_equal(srv_rc, TLS_OK);
    assert_string_equal(tls_conn_version(cli), "TLSv1.3");
    assert_string_equal(tls_conn_version(srv), "TLSv1.3");
    assert_non_null(tls_conn_cipher(cli));
    assert_string_equal(tls_conn_cipher(cli), tls_conn_cipher(srv));
    bits = tls_conn_cipher_bits(srv, &alg);
    assert_true(bits >= 128);
    assert_int_equal(alg, bits);
    /* verify = 0: accepted, but an untrusted self-signed peer is not "verified". */
    assert_int_equal(tls_conn_peer_verified(cli), 0);
    assert_int_equal(tls_conn_peer_verified(srv), 0);

    /* Client to server, then server to client. */
    assert_int_equal(tls_conn_write(cli, "EHLO client\r\n", 13), TLS_OK);
    assert_true(tls_conn_output_pending(cli) > 13); /* ciphertext, not plaintext */
    move_bytes(cli, srv);
    assert_int_equal(read_all(srv, buf, sizeof(buf), &last), 13);
    assert_int_equal(last, TLS_WANT);
    assert_memory_equal(buf, "EHLO client\r\n", 13);
    assert_int_equal(tls_conn_write(srv, "250 ok\r\n", 8), TLS_OK);
    move_bytes(srv, cli);
    assert_int_equal(read_all(cli, buf, sizeof(buf), &last), 8);
    assert_memory_equal(buf, "250 ok\r\n", 8);

    /* close_notify: the server sees TLS_CLOSED after the data sent before it. */
    assert_int_equal(tls_conn_write(cli, "QUIT\r\n", 6), TLS_OK);
    tls_conn_shutdown(cli);
    move_bytes(cli, srv);
    assert_int_equal(read_all(srv, buf, sizeof(buf), &last), 6);
    assert_memory_equal(buf, "QUIT\r\n", 6);
    assert_int_equal(last, TLS_CLOSED);

    tls_conn_free(cli);
    tls_conn_free(srv);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* Many records in one direction, read back in small pieces. */
/* RFC 9266 tls-exporter: both ends of one connection get the same binding,
 * another connection a different one, nothing before the handshake. */
static void test_tls_channel_binding(void **state)
{
    struct tls_ctx *sctx = server_ctx(), *cctx = client_ctx(0, NULL);
    char a[64], b[64], c[64], d[64];

    (void)state;
    for (int round = 0; round < 2; round++) {
        struct tls_conn *srv = tls_conn_new(sctx, 1, NULL);
        struct tls_conn *cli = tls_conn_new(cctx, 0, "localhost");
        assert_int_equal(tls_conn_channel_binding(cli, a, sizeof(a)), -1);
        assert_int_equal(handshake_pair(cli, srv, NULL), TLS_OK);
        assert_string_equal(tls_conn_version(cli), "TLSv1.3");
        assert_int_equal(tls_conn_channel_binding(round ? cli : srv, round ? c : a, 64), 0);
        assert_int_equal(tls_conn_channel_binding(round ? srv : cli, round ? d : b, 64), 0);
        {
            char small[44]; /* no room for 44 characters and the NUL */
            assert_int_equal(tls_conn_channel_binding(cli, small, sizeof(small)), -1);
        }
        tls_conn_free(cli);
        tls_conn_free(srv);
    }
    assert_int_equal(strlen(a), 44); /* base64 of 32 bytes */
    assert_string_equal(a, b);
    assert_string_equal(c, d);
    assert_string_not_equal(a, c);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_tls_memory_bulk(void **state)
{
    struct tls_ctx *sctx = server_ctx(), *cctx = client_ctx(0, NULL);
    struct tls_conn *srv = tls_conn_new(sctx, 1, NULL);
    struct tls_conn *cli = tls_conn_new(cctx, 0, NULL);
    size_t total = 200000, got = 0;
    char *out = malloc(total), *in = malloc(total);
    char piece[1000];

    (void)state;
    assert_non_null(out);
    assert_non_null(in);
    for (size_t i = 0; i < total; i++)
        out[i] = (char)(i * 131 + i / 251);
    assert_int_equal(handshake_pair(cli, srv, NULL), TLS_OK);
    assert_int_equal(tls_conn_write(srv, out, total), TLS_OK);
    move_bytes(srv, cli);
    for (;;) {
        ssize_t n = tls_conn_read(cli, piece, sizeof(piece));
        if (n == TLS_WANT)
            break;
        assert_true(n > 0);
        assert_true(got + (size_t)n <= total);
        memcpy(in + got, piece, (size_t)n);
        got += (size_t)n;
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    free(in);
    free(out);
    tls_conn_free(cli);
    tls_conn_free(srv);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* Client that verifies: passes for the right DNS name and IP literal. */
static void test_tls_verify_ok(void **state)
{
    const char *names[] = {"localhost", "127.0.0.1"};
    struct tls_ctx *sctx = server_ctx(), *cctx = client_ctx(1, cert_pem);

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        struct tls_conn *srv = tls_conn_new(sctx, 1, NULL);
        struct tls_conn *cli = tls_conn_new(cctx, 0, names[i]);
        int srv_rc;
        assert_int_equal(handshake_pair(cli, srv, &srv_rc), TLS_OK);
        assert_int_equal(srv_rc, TLS_OK);
        assert_int_equal(tls_conn_peer_verified(cli), 1);
        tls_conn_free(cli);
        tls_conn_free(srv);
    }
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* Wrong name, or an untrusted issuer, fails the handshake with a reason; the
 * same wrong name under opportunistic TLS connects but is not "verified". */
static void test_tls_verify_fails(void **state)
{
    struct tls_ctx *sctx = server_ctx();
    struct tls_ctx *strict = client_ctx(1, cert_pem);
    struct tls_ctx *system_ca = client_ctx(1, NULL);
    struct tls_ctx *lax = client_ctx(0, cert_pem);
    struct tls_conn *srv, *cli;
    int srv_rc;

    (void)state;
    srv = tls_conn_new(sctx, 1, NULL);
    cli = tls_conn_new(strict, 0, "mail.example.org");
    assert_int_equal(handshake_pair(cli, srv, &srv_rc), TLS_ERR);
    assert_non_null(strstr(tls_conn_error(cli), "hostname mismatch"));
    assert_int_equal(tls_conn_peer_verified(cli), 0);
    assert_null(tls_conn_version(cli));
    assert_int_equal(tls_conn_write(cli, "x", 1), TLS_ERR);
    /* The client's alert reaches the server, which fails too. */
    assert_int_equal(tls_conn_handshake(srv), TLS_ERR);
    assert_true(strlen(tls_conn_error(srv)) > 0);
    tls_conn_free(cli);
    tls_conn_free(srv);

    srv = tls_conn_new(sctx, 1, NULL);
    cli = tls_conn_new(system_ca, 0, "localhost");
    assert_int_equal(handshake_pair(cli, srv, NULL), TLS_ERR);
    assert_non_null(strstr(tls_conn_error(cli), "self-signed"));
    tls_conn_free(cli);
    tls_conn_free(srv);

    srv = tls_conn_new(sctx, 1, NULL);
    cli = tls_conn_new(lax, 0, "mail.example.org");
    assert_int_equal(handshake_pair(cli, srv, NULL), TLS_OK);
    assert_int_equal(tls_conn_peer_verified(cli), 0);
    tls_conn_free(cli);
    tls_conn_free(srv);

    tls_ctx_free(lax);
    tls_ctx_free(system_ca);
    tls_ctx_free(strict);
    tls_ctx_free(sctx);
}

/* Plaintext SMTP sent to a TLS server is a protocol error, not a hang. */
static void test_tls_garbage(void **state)
{
    struct tls_ctx *sctx = server_ctx(), *cctx = client_ctx(0, NULL);
    struct tls_conn *srv = tls_conn_new(sctx, 1, NULL);
    struct tls_conn *cli;
    static const char junk[] = "EHLO attacker.example\r\nMAIL FROM:<a@b>\r\n";
    char buf[64];

    (void)state;
    assert_int_equal(tls_conn_feed(srv, junk, sizeof(junk) - 1), TLS_OK);
    assert_int_equal(tls_conn_handshake(srv), TLS_ERR);
    assert_true(strlen(tls_conn_error(srv)) > 0);
    assert_int_equal(tls_conn_feed(srv, "x", 1), TLS_ERR);
    assert_int_equal(tls_conn_read(srv, buf, sizeof(buf)), TLS_ERR);
    tls_conn_free(srv);

    /* Garbage after a good handshake fails the reader too. */
    srv = tls_conn_new(sctx, 1, NULL);
    cli = tls_conn_new(cctx, 0, NULL);
    assert_int_equal(handshake_pair(cli, srv, NULL), TLS_OK);
    memset(buf, 0x17, sizeof(buf)); /* looks like an application_data header */
    assert_int_equal(tls_conn_feed(srv, buf, sizeof(buf)), TLS_OK);
    assert_int_equal(tls_conn_read(srv, buf, sizeof(buf)), TLS_ERR);
    assert_true(strlen(tls_conn_error(srv)) > 0);
    tls_conn_free(cli);
    tls_conn_free(srv);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

static void test_tls_ctx_errors(void **state)
{
    char err[256];
    struct tls_ctx *ctx;
    char missing[160];

    (void)state;
    snprintf(missing, sizeof(missing), "%s/missing.pem", tmpdir);
    err[0] = '\0';
    assert_null(tls_ctx_new_server(missing, key_pem, err, sizeof(err)));
    assert_non_null(strstr(err, missing));

    err[0] = '\0';
    assert_null(tls_ctx_new_server(cert_pem, other_key_pem, err, sizeof(err)));
    assert_non_null(strstr(err, other_key_pem));
    assert_non_null(strstr(err, "mismatch"));

    err[0] = '\0';
    assert_null(tls_ctx_new_server(cert_pem, NULL, err, sizeof(err))); /* no key in it */
    assert_true(strlen(err) > 0);

    err[0] = '\0';
    assert_null(tls_ctx_new_server(NULL, NULL, err, sizeof(err)));
    assert_true(strlen(err) > 0);

    err[0] = '\0';
    assert_null(tls_ctx_new_client(1, missing, err, sizeof(err)));
    assert_non_null(strstr(err, missing));

    ctx = tls_ctx_new_server(combined_pem, NULL, err, sizeof(err)); /* key in cert file */
    assert_non_null(ctx);
    tls_ctx_free(ctx);
    tls_ctx_free(NULL);
}

/* ---- conn over a real loop ------------------------------------------------------------ */

struct bytes {
    char *data;
    size_t len, cap;
};

static void bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static int bytes_is(const struct bytes *b, const char *s)
{
    return b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

struct side {
    struct conn *c;
    struct bytes plain, tls; /* what on_data delivered before / after TLS */
    int eof_status, eof_calls;
    int tls_status, tls_calls;
    int closed;
};

enum mode { M_ECHO, M_STARTTLS, M_TLS_PRESSURE, M_TLS_BADNAME, M_REFUSED };

struct fx {
    uv_loop_t loop;
    uv_tcp_t lis;
    uv_timer_t dog, resume;
    struct sockaddr_in addr;
    enum mode mode;
    struct side srv, cli;
    int expect_closed, nclosed, timed_out;
    struct tls_ctx *sctx, *cctx;
    unsigned char *payload;
    size_t total, sent;
    int paused, stops, drains, data_calls;
};

#define PAYLOAD (1024 * 1024)

static void fx_finish(struct fx *f)
{
    uv_close((uv_handle_t *)&f->lis, NULL);
    uv_close((uv_handle_t *)&f->dog, NULL);
    uv_close((uv_handle_t *)&f->resume, NULL);
}

static void on_closed(struct conn *c)
{
    struct fx *f = conn_udata(c);
    struct side *s = c == f->srv.c ? &f->srv : &f->cli;

    assert_ptr_equal(s->c, c);
    s->closed++;
    s->c = NULL;
    if (++f->nclosed == f->expect_closed)
        fx_finish(f);
}

static void dog_cb(uv_timer_t *t)
{
    struct fx *f = t->data;

    f->timed_out = 1;
    if (f->srv.c != NULL)
        conn_abort(f->srv.c);
    if (f->cli.c != NULL)
        conn_abort(f->cli.c);
    if (f->srv.c == NULL && f->cli.c == NULL)
        fx_finish(f);
}

/* Client writes the payload in 1000-byte pieces while less than 256 KiB waits,
 * then continues from on_drain: many small TLS records per socket read. */
static void cli_send_more(struct fx *f)
{
    while (f->sent < f->total && conn_write_pending(f->cli.c) <= 256 * 1024) {
        size_t n = f->total - f->sent < 1000 ? f->total - f->sent : 1000;
        assert_int_equal(conn_write(f->cli.c, f->payload + f->sent, n), 0);
        f->sent += n;
    }
}

/* Back-pressure off again: the server wants data (from a timer, or on_drain). */
static void resume_cb(uv_timer_t *t)
{
    struct fx *f = t->data;

    if (f->srv.c == NULL)
        return;
    f->paused = 0;
    assert_int_equal(conn_read_start(f->srv.c), 0);
}

static void srv_on_data(struct conn *c, const char *data, size_t len)
{
    struct fx *f = conn_udata(c);

    f->data_calls++;
    switch (f->mode) {
    case M_ECHO:
        bytes_add(&f->srv.plain, data, len);
        assert_int_equal(conn_write(c, data, len), 0);
        if (conn_write_pending(c) > 256 * 1024 && !f->paused) {
            f->paused = 1;
            f->stops++;
            conn_read_stop(c);
        }
        break;
    case M_STARTTLS:
        if (!conn_tls_active(c)) {
            /* A session would parse the first line, answer it and drop its own
             * buffer; the rest of this chunk must never come back. */
            bytes_add(&f->srv.plain, data, len);
            assert_true(len >= 10 && memcmp(data, "STARTTLS\r\n", 10) == 0);
            assert_int_equal(conn_write(c, "220 go\r\n250 injected\r\n", 22), 0);
            assert_int_equal(conn_starttls(c, f->sctx, 1, NULL), 0);
            assert_int_equal(conn_starttls(c, f->sctx, 1, NULL), UV_EALREADY);
            return;
        }
        bytes_add(&f->srv.tls, data, len);
        if (f->srv.tls.len >= 7)
            assert_int_equal(conn_write(c, "250 ok\r\n", 8), 0);
        break;
    case M_TLS_PRESSURE:
        assert_false(f->paused); /* nothing may arrive while stopped */
        bytes_add(&f->srv.tls, data, len);
        if (f->srv.tls.len == f->total) {
            conn_close(c); /* close_notify reaches the client as EOF */
            return;
        }
        f->paused = 1;
        f->stops++;
        conn_read_stop(c);
        uv_timer_start(&f->resume, resume_cb, 1, 0);
        break;
    default:
        fail_msg("unexpected server data");
    }
}

static void srv_on_eof(struct conn *c, int status)
{
    struct fx *f = conn_udata(c);

    f->srv.eof_status = status;
    f->srv.eof_calls++;
    conn_close(c);
}

static void srv_on_tls(struct conn *c, int status)
{
    struct fx *f = conn_udata(c);

    f->srv.tls_status = status;
    f->srv.tls_calls++;
    if (status < 0)
        conn_close(c);
}

static void srv_on_drain(struct conn *c)
{
    struct fx *f = conn_udata(c);

    f->drains++;
    if (f->mode == M_ECHO && f->paused) {
        f->paused = 0;
        assert_int_equal(conn_read_start(c), 0);
    }
}

static const struct conn_cbs srv_cbs = {
    .on_data = srv_on_data,
    .on_eof = srv_on_eof,
    .on_tls = srv_on_tls,
    .on_drain = srv_on_drain,
    .on_closed = on_closed,
};

static void on_connection(uv_stream_t *server, int status)
{
    struct fx *f = server->data;
    struct conn *c = NULL;

    assert_int_equal(status, 0);
    assert_null(f->srv.c); /* one connection per test */
    assert_int_equal(conn_accept(&f->loop, server, &srv_cbs, f, &c), 0);
    f->srv.c = c;
    assert_string_equal(conn_peer_addr(c), "127.0.0.1");
    assert_string_equal(conn_local_addr(c), "127.0.0.1");
    assert_int_equal(conn_local_port(c), ntohs(f->addr.sin_port));
    assert_int_equal(conn_peer_sockaddr(c)->sa_family, AF_INET);
    assert_int_equal(conn_tls_active(c), 0);
    assert_null(conn_tls_version(c));
    if (f->mode == M_TLS_PRESSURE || f->mode == M_TLS_BADNAME)
        assert_int_equal(conn_starttls(c, f->sctx, 1, NULL), 0);
}

static void cli_on_data(struct conn *c, const char *data, size_t len)
{
    struct fx *f = conn_udata(c);

    switch (f->mode) {
    case M_ECHO:
        bytes_add(&f->cli.plain, data, len);
        assert_true(f->cli.plain.len <= f->total);
        if (f->cli.plain.len == f->total) {
            conn_close(c);
            conn_close(c); /* twice is harmless */
        }
        break;
    case M_STARTTLS:
        if (!conn_tls_active(c)) {
            /* Reply injected behind the 220 must be dropped on this side too. */
            bytes_add(&f->cli.plain, data, len);
            assert_true(len >= 8 && memcmp(data, "220 go\r\n", 8) == 0);
            assert_int_equal(conn_starttls(c, f->cctx, 0, "localhost"), 0);
            return;
        }
        bytes_add(&f->cli.tls, data, len);
        if (bytes_is(&f->cli.tls, "250 ok\r\n"))
            conn_close(c);
        break;
    default:
        fail_msg("unexpected client data");
    }
}

static void cli_on_eof(struct conn *c, int status)
{
    struct fx *f = conn_udata(c);

    f->cli.eof_status = status;
    f->cli.eof_calls++;
    conn_close(c);
}

static void cli_on_tls(struct conn *c, int status)
{
    struct fx *f = conn_udata(c);

    f->cli.tls_status = status;
    f->cli.tls_calls++;
    switch (f->mode) {
    case M_STARTTLS:
        assert_int_equal(status, 0);
        assert_int_equal(conn_tls_active(c), 1);
        assert_int_equal(conn_tls_peer_verified(c), 1);
        assert_string_equal(conn_tls_version(c), "TLSv1.3");
        assert_non_null(conn_tls_cipher(c));
        assert_true(conn_tls_bits(c) >= 128);
        assert_string_equal(conn_tls_error(c), "");
        assert_int_equal(conn_write(c, "HELLO\r\n", 7), 0);
        break;
    case M_TLS_PRESSURE:
        assert_int_equal(status, 0);
        cli_send_more(f);
        break;
    case M_TLS_BADNAME:
        assert_true(status < 0);
        assert_int_equal(conn_tls_active(c), 0);
        assert_non_null(strstr(conn_tls_error(c), "hostname mismatch"));
        conn_close(c);
        conn_abort(c); /* abort after close is harmless */
        break;
    default:
        fail_msg("unexpected on_tls");
    }
}

static void cli_on_drain(struct conn *c)
{
    struct fx *f = conn_udata(c);

    if (f->mode == M_TLS_PRESSURE && conn_tls_active(c))
        cli_send_more(f);
}

static const struct conn_cbs cli_cbs = {
    .on_data = cli_on_data,
    .on_eof = cli_on_eof,
    .on_tls = cli_on_tls,
    .on_drain = cli_on_drain,
    .on_closed = on_closed,
};

static void cli_on_connect(struct conn *c, int status)
{
    struct fx *f = conn_udata(c);

    assert_ptr_equal(c, f->cli.c);
    if (f->mode == M_REFUSED) {
        f->cli.eof_status = status;
        f->cli.eof_calls++;
        return;
    }
    assert_int_equal(status, 0);
    assert_string_equal(conn_peer_addr(c), "127.0.0.1");
    assert_int_equal(conn_peer_port(c), ntohs(f->addr.sin_port));
    assert_true(conn_local_port(c) > 0);
    switch (f->mode) {
    case M_ECHO:
        assert_int_equal(conn_write(c, f->payload, f->total), 0);
        /* More than CONN_OUT_MAX already waiting is refused, or all went out. */
        if (conn_write_pending(c) > CONN_OUT_MAX)
            assert_int_equal(conn_write(c, "x", 1), -ENOBUFS);
        break;
    case M_STARTTLS:
        /* One write, so the injected line arrives in the same read. */
        assert_int_equal(conn_write(c, "STARTTLS\r\nINJECTED\r\n", 20), 0);
        break;
    case M_TLS_PRESSURE:
        assert_int_equal(conn_starttls(c, f->cctx, 0, "localhost"), 0);
        /* Written during the handshake: held, then sent encrypted. */
        assert_int_equal(conn_write(c, f->payload, 65536), 0);
        assert_true(conn_write_pending(c) >= 65536);
        f->sent = 65536;
        break;
    case M_TLS_BADNAME:
        assert_int_equal(conn_starttls(c, f->cctx, 0, "wrong.example"), 0);
        break;
    default:
        break;
    }
}

/* Run one scenario: a listener on 127.0.0.1:<ephemeral>, one client
 * connection, a 20 s watchdog. The loop must end with nothing left open. */
static void fx_run(struct fx *f, enum mode mode)
{
    struct sockaddr_in any;
    int len = sizeof(f->addr);
    uint32_t x = 2463534242u;

    f->mode = mode;
    f->expect_closed = mode == M_REFUSED ? 1 : 2;
    if (mode == M_ECHO || mode == M_TLS_PRESSURE) {
        f->total = PAYLOAD;
        f->payload = malloc(f->total);
        assert_non_null(f->payload);
        for (size_t i = 0; i < f->total; i++) { /* xorshift32: no short period */
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            f->payload[i] = (unsigned char)x;
        }
    }
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->lis), 0);
    f->lis.data = f;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &any), 0);
    assert_int_equal(uv_tcp_bind(&f->lis, (struct sockaddr *)&any, 0), 0);
    if (mode != M_REFUSED) /* bound but not listening: connect is refused */
        assert_int_equal(uv_listen((uv_stream_t *)&f->lis, 8, on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&f->lis, (struct sockaddr *)&f->addr, &len), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->dog), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->resume), 0);
    f->dog.data = f;
    f->resume.data = f;
    assert_int_equal(uv_timer_start(&f->dog, dog_cb, 20000, 0), 0);
    assert_int_equal(
        conn_connect(&f->loop, (struct sockaddr *)&f->addr, &cli_cbs, cli_on_connect, f, &f->cli.c),
        0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_false(f->timed_out);
    assert_int_equal(f->nclosed, f->expect_closed);
}

static void fx_free(struct fx *f)
{
    free(f->payload);
    free(f->srv.plain.data);
    free(f->srv.tls.data);
    free(f->cli.plain.data);
    free(f->cli.tls.data);
    tls_ctx_free(f->sctx);
    tls_ctx_free(f->cctx);
}

static void test_conn_echo(void **state)
{
    struct fx f = {0};

    (void)state;
    fx_run(&f, M_ECHO);
    assert_int_equal(f.srv.plain.len, f.total);
    assert_int_equal(f.cli.plain.len, f.total);
    assert_memory_equal(f.cli.plain.data, f.payload, f.total);
    assert_int_equal(f.srv.eof_calls, 1);
    assert_int_equal(f.srv.eof_status, UV_EOF);
    assert_int_equal(f.cli.eof_calls, 0);
    assert_int_equal(f.srv.closed, 1);
    assert_int_equal(f.cli.closed, 1);
    fx_free(&f);
}

/* CVE-2011-0411: plaintext pipelined behind STARTTLS (either direction)
 * must never surface as data received under TLS. */
static void test_conn_starttls_injection(void **state)
{
    struct fx f = {0};

    (void)state;
    f.sctx = server_ctx();
    f.cctx = client_ctx(1, cert_pem);
    fx_run(&f, M_STARTTLS);
    assert_true(bytes_is(&f.srv.plain, "STARTTLS\r\nINJECTED\r\n"));
    assert_true(bytes_is(&f.srv.tls, "HELLO\r\n"));
    assert_true(bytes_is(&f.cli.plain, "220 go\r\n250 injected\r\n"));
    assert_true(bytes_is(&f.cli.tls, "250 ok\r\n"));
    assert_int_equal(f.srv.tls_calls, 1);
    assert_int_equal(f.srv.tls_status, 0);
    assert_int_equal(f.cli.tls_calls, 1);
    assert_int_equal(f.srv.eof_calls, 1);
    assert_int_equal(f.srv.eof_status, UV_EOF); /* the client's close_notify */
    fx_free(&f);
}

/* The server stops reading after every chunk and resumes from a timer; the
 * client's small records pile up inside TLS meanwhile. Nothing is lost,
 * nothing arrives while stopped, and close_notify ends it as EOF. */
static void test_conn_tls_backpressure(void **state)
{
    struct fx f = {0};

    (void)state;
    f.sctx = server_ctx();
    f.cctx = client_ctx(0, NULL);
    fx_run(&f, M_TLS_PRESSURE);
    assert_int_equal(f.sent, f.total);
    assert_int_equal(f.srv.tls.len, f.total);
    assert_memory_equal(f.srv.tls.data, f.payload, f.total);
    assert_true(f.stops > 60); /* at least one stop per 16 KiB */
    assert_int_equal(f.srv.tls_status, 0);
    assert_int_equal(f.cli.tls_status, 0);
    assert_int_equal(f.cli.eof_calls, 1);
    assert_int_equal(f.cli.eof_status, UV_EOF);
    fx_free(&f);
}

/* A failed handshake is reported to both sides through on_tls, not on_eof. */
static void test_conn_tls_verify_failure(void **state)
{
    struct fx f = {0};

    (void)state;
    f.sctx = server_ctx();
    f.cctx = client_ctx(1, cert_pem);
    fx_run(&f, M_TLS_BADNAME);
    assert_int_equal(f.cli.tls_calls, 1);
    assert_true(f.cli.tls_status < 0);
    assert_int_equal(f.srv.tls_calls, 1);
    assert_true(f.srv.tls_status < 0);
    assert_int_equal(f.cli.eof_calls, 0);
    assert_int_equal(f.srv.eof_calls, 0);
    fx_free(&f);
}

static void test_conn_refused(void **state)
{
    struct fx f = {0};

    (void)state;
    fx_run(&f, M_REFUSED);
    assert_int_equal(f.cli.eof_calls, 1); /* on_connect once, with the error */
    assert_int_equal(f.cli.eof_status, UV_ECONNREFUSED);
    assert_int_equal(f.cli.closed, 1);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_memory_session),
        cmocka_unit_test(test_tls_channel_binding),
        cmocka_unit_test(test_tls_memory_bulk),
        cmocka_unit_test(test_tls_verify_ok),
        cmocka_unit_test(test_tls_verify_fails),
        cmocka_unit_test(test_tls_garbage),
        cmocka_unit_test(test_tls_ctx_errors),
        cmocka_unit_test(test_conn_echo),
        cmocka_unit_test(test_conn_starttls_injection),
        cmocka_unit_test(test_conn_tls_backpressure),
        cmocka_unit_test(test_conn_tls_verify_failure),
        cmocka_unit_test(test_conn_refused),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
