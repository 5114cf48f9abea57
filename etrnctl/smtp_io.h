/*
 * smtp_io: etrnctl's SMTP over one blocking-style socket with deadlines:
 * connect (numeric address, system resolver, or addresses found by MX),
 * commands and multi-line replies (RFC 5321 §4.2), STARTTLS (RFC 3207,
 * lib/tls on memory BIOs), and raw plaintext lines and bytes for the side
 * that plays the server after an ATRN turn (RFC 2645 §4). Every wait is a
 * poll() bounded by the io's timeout; every buffer has a fixed size.
 * It is a short-lived client's I/O: the daemon never uses it.
 */
#ifndef RELAYD_SMTP_IO_H
#define RELAYD_SMTP_IO_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

struct tls_ctx;
struct tls_conn;

#define SMTP_IO_REPLY_MAX_LINES 200

struct smtp_io {
    int fd;
    struct tls_conn *tls;
    char in[8192]; /* plaintext received, not yet parsed */
    size_t inlen;
    double timeout;        /* seconds per connect, command and reply */
    int verbose;           /* print the dialogue on stderr */
    const char *label;     /* "relay:25" in the dialogue and errors */
    const char *peer_name; /* "the relay": who closed, in err */
    char err[256];         /* why the last call failed */
};

struct smtp_io_reply {
    int code;
    char line[512];   /* "253 2.0.0 ..." (the last line, control characters as '?') */
    char texts[4096]; /* every line's text, '\n'-separated (EHLO keywords) */
};

/* Monotonic seconds. */
double smtp_io_now(void);

/* Ready to connect: fd -1, nothing buffered. */
void smtp_io_init(struct smtp_io *io, const char *label, double timeout, int verbose);

/* "host", "host:port", "[v6]", "[v6]:port", "v6" (two or more colons: no
 * port). 0, or -1 when it does not parse. */
int smtp_io_parse_hostport(const char *spec, int defport, char *host, size_t hostlen, int *port);

/* Connect to host:port (numeric or a name for the system resolver), or to
 * the addresses given (their port replaced by port). 0 or -1 (err set). */
int smtp_io_connect(struct smtp_io *io, const char *host, int port,
                    const struct sockaddr_storage *addrs, size_t naddrs);
void smtp_io_close(struct smtp_io *io);

/* Send "line\r\n". 0 or -1 (err set). */
int smtp_io_cmd(struct smtp_io *io, const char *line);
/* Read one complete reply (continuation lines "xyz-", the last "xyz ").
 * 0, or -1 with err set (timeout, EOF, malformed). */
int smtp_io_read_reply(struct smtp_io *io, struct smtp_io_reply *r);
/* Whether an EHLO reply advertises keyword (RFC 5321 §4.1.1.1: one per line
 * after the first, keyword first, case-insensitive). */
int smtp_io_has_keyword(const struct smtp_io_reply *r, const char *kw);
/* The parameters after keyword in an EHLO reply ("PLAIN SCRAM-SHA-256" for
 * AUTH), copied into out; 1 if the keyword is there, else 0. */
int smtp_io_keyword_params(const struct smtp_io_reply *r, const char *kw, char *out, size_t outlen);

/* STARTTLS after a 220: plaintext the peer sent beyond its 220 is refused
 * (CVE-2011-0411 style injection). verify: the certificate must verify for
 * sni. 0 or -1. */
int smtp_io_starttls(struct smtp_io *io, struct tls_ctx *ctx, const char *sni, int verify);

/* Send len plaintext bytes as they are. 0 or -1 (err set). */
int smtp_io_write(struct smtp_io *io, const void *data, size_t len);
/* Get more plaintext into io->in, waiting until deadline (smtp_io_now()
 * based). 0 or -1 (err set; EOF too). */
int smtp_io_fill(struct smtp_io *io, double deadline);
/* Take up to max bytes from the front of io->in. */
void smtp_io_consume(struct smtp_io *io, size_t n);

#endif
