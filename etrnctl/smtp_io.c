/*
 * smtp_io: SMTP over one socket with poll() deadlines, for etrnctl's site
 * side (etrn_cmd.c, atrn_cmd.c): connect, commands and replies, STARTTLS
 * through lib/tls, raw plaintext for the server role after an ATRN turn.
 * Nothing here knows ETRN or ATRN; nothing here is used by relayd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "smtp_io.h"
#include "smtp_parse.h"
#include "tls.h"

double smtp_io_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(const struct smtp_io *io, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const struct smtp_io *io, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!io->verbose)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "etrnctl: %s\n", line);
}

void smtp_io_init(struct smtp_io *io, const char *label, double timeout, int verbose)
{
    memset(io, 0, sizeof(*io));
    io->fd = -1;
    io->label = label;
    io->peer_name = "the relay";
    io->timeout = timeout;
    io->verbose = verbose;
}

/* A port number 1..65535 with nothing after it. */
static int parse_port(const char *s, int *out)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

/* "host", "host:port", "[v6]", "[v6]:port", "v6" (two or more colons: no
 * port). 0, or -1 when it does not parse. */
int smtp_io_parse_hostport(const char *spec, int defport, char *host, size_t hostlen, int *port)
{
    const char *colon;
    size_t n;
    int p = defport;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL)
            return -1;
        n = (size_t)(close - spec - 1);
        if (close[1] == ':') {
            if (parse_port(close + 2, &p) != 0)
                return -1;
        } else if (close[1] != '\0') {
            return -1;
        }
        spec++;
    } else {
        colon = strchr(spec, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            n = (size_t)(colon - spec);
            if (parse_port(colon + 1, &p) != 0)
                return -1;
        } else {
            n = strlen(spec);
        }
    }
    if (n == 0 || n >= hostlen || p < 1 || p > 65535)
        return -1;
    memcpy(host, spec, n);
    host[n] = '\0';
    *port = p;
    return 0;
}

/* ---- SMTP over a socket, with deadlines ------------------------------------------------- */

/* Wait until fd is ready for events or the deadline passes. 0 or -1 (err set). */
static int io_wait(struct smtp_io *io, short events, double deadline)
{
    struct pollfd pfd = {.fd = io->fd, .events = events};

    for (;;) {
        double left = deadline - smtp_io_now();
        int rc;

        if (left <= 0) {
            snprintf(io->err, sizeof(io->err), "timed out after %.0fs", io->timeout);
            return -1;
        }
        rc = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR) {
            snprintf(io->err, sizeof(io->err), "poll: %s", strerror(errno));
            return -1;
        }
    }
}

static int io_send_raw(struct smtp_io *io, const char *p, size_t n, double deadline)
{
    while (n > 0) {
        ssize_t w = send(io->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (io_wait(io, POLLOUT, deadline) != 0)
                return -1;
            continue;
        }
        snprintf(io->err, sizeof(io->err), "send: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Send whatever ciphertext TLS has pending. */
static int io_flush_tls(struct smtp_io *io, double deadline)
{
    char buf[16384];

    while (tls_conn_output_pending(io->tls) > 0) {
        size_t n = tls_conn_take_output(io->tls, buf, sizeof(buf));
        if (io_send_raw(io, buf, n, deadline) != 0)
            return -1;
    }
    return 0;
}

/* Read ciphertext or plaintext from the socket: n > 0, or -1 (err set; EOF too). */
static ssize_t io_recv(struct smtp_io *io, char *buf, size_t len, double deadline)
{
    for (;;) {
        ssize_t n = recv(io->fd, buf, len, 0);
        if (n > 0)
            return n;
        if (n == 0) {
            snprintf(io->err, sizeof(io->err), "connection closed by %s", io->peer_name);
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (io_wait(io, POLLIN, deadline) != 0)
                return -1;
            continue;
        }
        snprintf(io->err, sizeof(io->err), "recv: %s", strerror(errno));
        return -1;
    }
}

/* Get more plaintext into io->in. 0 or -1. */
int smtp_io_fill(struct smtp_io *io, double deadline)
{
    size_t space = sizeof(io->in) - io->inlen;

    if (space == 0) {
        snprintf(io->err, sizeof(io->err), "reply line too long");
        return -1;
    }
    if (io->tls == NULL) {
        ssize_t n = io_recv(io, io->in + io->inlen, space, deadline);
        if (n < 0)
            return -1;
        io->inlen += (size_t)n;
        return 0;
    }
    for (;;) {
        char cipher[16384];
        ssize_t n = tls_conn_read(io->tls, io->in + io->inlen, space);
        if (n > 0) {
            io->inlen += (size_t)n;
            return 0;
        }
        if (n != TLS_WANT) {
            snprintf(io->err, sizeof(io->err), "TLS: %s",
                     n == TLS_CLOSED ? "closed by the peer" : tls_conn_error(io->tls));
            return -1;
        }
        if (io_flush_tls(io, deadline) != 0)
            return -1;
        n = io_recv(io, cipher, sizeof(cipher), deadline);
        if (n < 0 || tls_conn_feed(io->tls, cipher, (size_t)n) != TLS_OK) {
            if (n >= 0)
                snprintf(io->err, sizeof(io->err), "TLS: %s", tls_conn_error(io->tls));
            return -1;
        }
    }
}

int smtp_io_cmd(struct smtp_io *io, const char *line)
{
    char buf[1100];
    double deadline = smtp_io_now() + io->timeout;
    int n;

    say(io, "%s: -> %s", io->label, line);
    n = snprintf(buf, sizeof(buf), "%s\r\n", line);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        snprintf(io->err, sizeof(io->err), "command too long");
        return -1;
    }
    if (io->tls == NULL)
        return io_send_raw(io, buf, (size_t)n, deadline);
    if (tls_conn_write(io->tls, buf, (size_t)n) != TLS_OK) {
        snprintf(io->err, sizeof(io->err), "TLS: %s", tls_conn_error(io->tls));
        return -1;
    }
    return io_flush_tls(io, deadline);
}

/* Read one complete reply (RFC 5321 §4.2: continuation lines "xyz-", the
 * last "xyz "). 0, or -1 with err set (timeout, EOF, malformed). */
int smtp_io_read_reply(struct smtp_io *io, struct smtp_io_reply *r)
{
    double deadline = smtp_io_now() + io->timeout;
    size_t tlen = 0;

    memset(r, 0, sizeof(*r));
    for (int nlines = 0; nlines < SMTP_IO_REPLY_MAX_LINES;) {
        char *nl = memchr(io->in, '\n', io->inlen);
        struct smtp_reply_line rl;
        size_t len;

        if (nl == NULL) {
            if (smtp_io_fill(io, deadline) != 0)
                return -1;
            continue;
        }
        len = (size_t)(nl - io->in);
        if (len > 0 && io->in[len - 1] == '\r')
            len--;
        if (smtp_parse_reply_line(io->in, len, &rl) != SMTP_PARSE_OK ||
            (nlines > 0 && rl.code != r->code)) {
            snprintf(io->err, sizeof(io->err), "malformed reply line: %.*s",
                     (int)(len > 100 ? 100 : len), io->in);
            return -1;
        }
        r->code = rl.code;
        snprintf(r->line, sizeof(r->line), "%.*s", (int)len, io->in);
        for (char *p = r->line; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
                *p = '?';
        if (tlen + rl.text_len + 2 < sizeof(r->texts)) {
            memcpy(r->texts + tlen, rl.text, rl.text_len);
            tlen += rl.text_len;
            r->texts[tlen++] = '\n';
            r->texts[tlen] = '\0';
        }
        say(io, "%s: <- %s", io->label, r->line);
        nlines++;
        io->inlen -= (size_t)(nl - io->in) + 1;
        memmove(io->in, nl + 1, io->inlen);
        if (rl.last)
            return 0;
    }
    snprintf(io->err, sizeof(io->err), "reply of more than %d lines", SMTP_IO_REPLY_MAX_LINES);
    return -1;
}

/* Whether an EHLO reply advertises keyword (RFC 5321 §4.1.1.1: one per line
 * after the first, keyword first, case-insensitive). */
int smtp_io_has_keyword(const struct smtp_io_reply *r, const char *kw)
{
    const char *p = strchr(r->texts, '\n'); /* skip the greeting line */
    size_t kl = strlen(kw);

    while (p != NULL && p[1] != '\0') {
        p++;
        if (strncasecmp(p, kw, kl) == 0 && (p[kl] == '\n' || p[kl] == ' ' || p[kl] == '\0'))
            return 1;
        p = strchr(p, '\n');
    }
    return 0;
}

static int connect_addr(struct smtp_io *io, const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);

    if (fd < 0) {
        snprintf(io->err, sizeof(io->err), "socket: %s", strerror(errno));
        return -1;
    }
    io->fd = fd;
    /* commands and replies are small writes answered at once: no Nagle
     * delay (it meets the peer's delayed ACK: 40 ms per message) */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    if (connect(fd, sa, salen) == 0)
        return 0;
    if (errno != EINPROGRESS) {
        snprintf(io->err, sizeof(io->err), "connect: %s", strerror(errno));
        goto fail;
    }
    if (io_wait(io, POLLOUT, smtp_io_now() + io->timeout) != 0) {
        char t[sizeof(io->err)];
        snprintf(t, sizeof(t), "connect: %.240s", io->err);
        snprintf(io->err, sizeof(io->err), "%s", t);
        goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        snprintf(io->err, sizeof(io->err), "connect: %s", strerror(soerr ? soerr : errno));
        goto fail;
    }
    return 0;
fail:
    close(fd);
    io->fd = -1;
    return -1;
}

/* Connect to host:port (numeric or a name for the system resolver), or to
 * the addresses given. 0 or -1 (err set). */
int smtp_io_connect(struct smtp_io *io, const char *host, int port,
                    const struct sockaddr_storage *addrs, size_t naddrs)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ports[8];
    int rc;

    io->fd = -1;
    if (addrs != NULL) {
        for (size_t i = 0; i < naddrs; i++) {
            struct sockaddr_storage ss = addrs[i];
            socklen_t len =
                ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
            if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
            else
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
            if (connect_addr(io, (struct sockaddr *)&ss, len) == 0)
                return 0;
        }
        return -1;
    }
    snprintf(ports, sizeof(ports), "%d", port);
    rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0) {
        snprintf(io->err, sizeof(io->err), "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    rc = -1;
    for (struct addrinfo *ai = res; ai != NULL && rc != 0; ai = ai->ai_next)
        rc = connect_addr(io, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(res);
    return rc;
}

void smtp_io_close(struct smtp_io *io)
{
    if (io->tls != NULL) {
        tls_conn_free(io->tls);
        io->tls = NULL;
    }
    if (io->fd >= 0) {
        close(io->fd);
        io->fd = -1;
    }
}

/* STARTTLS (RFC 3207) after a 220: plaintext the relay sent beyond its 220
 * is discarded unread (CVE-2011-0411 style injection). 0 or -1. */
int smtp_io_starttls(struct smtp_io *io, struct tls_ctx *ctx, const char *sni, int verify)
{
    double deadline = smtp_io_now() + io->timeout;
    struct in6_addr a6;
    struct in_addr a4;
    int numeric = inet_pton(AF_INET, sni, &a4) == 1 || inet_pton(AF_INET6, sni, &a6) == 1;

    if (io->inlen > 0) {
        snprintf(io->err, sizeof(io->err), "%s sent data after its STARTTLS reply", io->peer_name);
        return -1;
    }
    io->tls = tls_conn_new(ctx, 0, verify || !numeric ? sni : NULL);
    if (io->tls == NULL) {
        snprintf(io->err, sizeof(io->err), "TLS: out of memory");
        return -1;
    }
    for (;;) {
        char cipher[16384];
        ssize_t n;
        int rc = tls_conn_handshake(io->tls);

        if (io_flush_tls(io, deadline) != 0)
            return -1;
        if (rc == TLS_OK)
            break;
        if (rc != TLS_WANT) {
            snprintf(io->err, sizeof(io->err), "TLS handshake: %s", tls_conn_error(io->tls));
            return -1;
        }
        n = io_recv(io, cipher, sizeof(cipher), deadline);
        if (n < 0)
            return -1;
        if (tls_conn_feed(io->tls, cipher, (size_t)n) != TLS_OK) {
            snprintf(io->err, sizeof(io->err), "TLS handshake: %s", tls_conn_error(io->tls));
            return -1;
        }
    }
    if (verify && !tls_conn_peer_verified(io->tls)) {
        snprintf(io->err, sizeof(io->err), "TLS: the certificate of %s did not verify",
                 io->peer_name);
        return -1;
    }
    say(io, "%s: TLS %s %s", io->label, tls_conn_version(io->tls), tls_conn_cipher(io->tls));
    return 0;
}

int smtp_io_keyword_params(const struct smtp_io_reply *r, const char *kw, char *out, size_t outlen)
{
    const char *p = strchr(r->texts, '\n');
    size_t kl = strlen(kw);

    if (outlen > 0)
        out[0] = '\0';
    while (p != NULL && p[1] != '\0') {
        p++;
        if (strncasecmp(p, kw, kl) == 0 && (p[kl] == '\n' || p[kl] == ' ' || p[kl] == '\0')) {
            const char *v = p + kl, *e;
            while (*v == ' ')
                v++;
            e = strchr(v, '\n');
            if (e == NULL)
                e = v + strlen(v);
            snprintf(out, outlen, "%.*s", (int)(e - v), v);
            return 1;
        }
        p = strchr(p, '\n');
    }
    return 0;
}

int smtp_io_write(struct smtp_io *io, const void *data, size_t len)
{
    double deadline = smtp_io_now() + io->timeout;

    if (io->tls == NULL)
        return io_send_raw(io, data, len, deadline);
    if (tls_conn_write(io->tls, data, len) != TLS_OK) {
        snprintf(io->err, sizeof(io->err), "TLS: %s", tls_conn_error(io->tls));
        return -1;
    }
    return io_flush_tls(io, deadline);
}

void smtp_io_consume(struct smtp_io *io, size_t n)
{
    if (n > io->inlen)
        n = io->inlen;
    io->inlen -= n;
    memmove(io->in, io->in + n, io->inlen);
}
