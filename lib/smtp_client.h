/*
 * smtp_client: the client side of SMTP (RFC 5321) over a conn, as an explicit
 * state machine: greeting, EHLO (HELO fallback), STARTTLS per policy
 * (RFC 3207), then any number of messages on the same connection (MAIL,
 * RCPT..., DATA pipelined when the server offers PIPELINING, RFC 2920),
 * then QUIT. It dot-stuffs the body on the way out. It decides nothing
 * about the queue: each reply is handed back for the caller to judge.
 * Used by relayd's delivery and, over an already open connection, by ATRN.
 */
#ifndef RELAYD_SMTP_CLIENT_H
#define RELAYD_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct conn;
struct tls_ctx;
struct smtp_client;

enum smtp_client_tls {
    SMTP_TLS_NONE = 0, /* never STARTTLS */
    SMTP_TLS_MAY,      /* STARTTLS when offered, no verification (RFC 7435) */
    SMTP_TLS_ENCRYPT,  /* STARTTLS required, no verification */
    SMTP_TLS_VERIFY    /* STARTTLS required, certificate and name verified */
};

struct smtp_client_opts {
    const char *helo_name; /* our name in EHLO/HELO */
    enum smtp_client_tls tls;
    struct tls_ctx *tls_ctx;  /* client context (verifying for SMTP_TLS_VERIFY) */
    const char *tls_host;     /* server name for SNI and verification */
    const char *peer_name;    /* host name for logs: relay=NAME[addr]:port */
    uint64_t connect_timeout; /* ms */
    uint64_t command_timeout; /* ms: greeting, EHLO, MAIL, RCPT, DATA, QUIT */
    uint64_t data_timeout;    /* ms: the reply to the final dot */
};

/* A reply as the server gave it (the last line's text for multi-line ones),
 * or made up locally (code 4xx/5xx with text saying so) when the connection
 * failed or the server cannot take the message (SIZE). */
struct smtp_client_reply {
    int code;     /* 0 = no reply */
    char enh[16]; /* "5.1.1" or "" */
    char text[400];
    int local; /* made up here (no reply, or a local failure), not the server's */
};

struct smtp_client_rcpt {
    const char *address;            /* without <> */
    const char *orcpt;              /* ORCPT value or NULL */
    unsigned notify;                /* SMTP_NOTIFY_* bits, 0 = not given */
    struct smtp_client_reply reply; /* filled in: the RCPT reply, or the
                                       DATA/final reply for accepted ones */
};

struct smtp_client_msg {
    const char *sender; /* "" = null sender */
    const char *envid;  /* or NULL */
    int ret;            /* enum smtp_ret */
    int body_8bit;
    const char *body; /* stored form: CRLF line ends, not dot-stuffed; NULL with
                       * body_len > 0: streamed through on_body */
    size_t body_len;
    struct smtp_client_rcpt *rcpts;
    size_t nrcpts;
    void *udata; /* the caller's */
};

/* on_ready's status when the session could not be set up. */
enum {
    SMTP_CLIENT_ERR = -1,    /* connect, greeting, EHLO, timeout, lost connection */
    SMTP_CLIENT_ERR_TLS = -2 /* the TLS policy could not be met: STARTTLS not offered
                              * or refused (encrypt, verify), the handshake failed or
                              * timed out, the certificate did not verify */
};

struct smtp_client_cbs {
    /* The session is ready for messages (status 0), or could not be set up
     * (status SMTP_CLIENT_ERR or SMTP_CLIENT_ERR_TLS; why says what
     * happened, e.g. a 4xx/5xx greeting, TLS required but not offered,
     * connect failure). After a failure the client closes itself and
     * on_closed follows. With SMTP_TLS_MAY a 4xx/5xx reply to STARTTLS is
     * no failure: the session goes on in clear (smtp_client_starttls_refused
     * says so). A failed handshake is one: the caller may try again with
     * SMTP_TLS_NONE, as opportunistic TLS does (RFC 7435 §3). */
    void (*on_ready)(struct smtp_client *cl, int status, const struct smtp_client_reply *why);
    /* The transaction for msg ended. Every rcpt's reply is filled in:
     * 2xx delivered, 4xx try later, 5xx failed. status < 0 means the
     * connection broke (each reply then is a local 4xx) and on_closed follows. */
    void (*on_sent)(struct smtp_client *cl, struct smtp_client_msg *msg, int status);
    /* Last call; the client's memory is freed after it returns. */
    void (*on_closed)(struct smtp_client *cl);
    /* Streamed bodies only (msg->body NULL): send me body bytes from
     * offset, at most max (> 0) of them. Asked only after the server's 354
     * and only once every byte written before has reached the kernel
     * (back-pressure: a slow server holds one piece in memory, never the
     * message). Answer once, now or later, with smtp_client_body or
     * smtp_client_body_fail; the data timeout runs meanwhile. */
    void (*on_body)(struct smtp_client *cl, struct smtp_client_msg *msg, uint64_t offset,
                    size_t max);
};

/* Connect to addr and set up the session. On error returns < 0 and calls
 * nothing; otherwise on_ready comes exactly once. */
int smtp_client_connect(uv_loop_t *loop, const struct sockaddr *addr,
                        const struct smtp_client_opts *opts, const struct smtp_client_cbs *cbs,
                        void *udata, struct smtp_client **out);
/* The same over a connection that is already open (ATRN turns the
 * connection around, RFC 2645 §4): the client takes the conn over and
 * waits for the server's greeting on it. */
int smtp_client_attach(uv_loop_t *loop, struct conn *c, const struct smtp_client_opts *opts,
                       const struct smtp_client_cbs *cbs, void *udata, struct smtp_client **out);

/* Send one message. Only after on_ready(0) and when the previous on_sent has
 * come; msg (and what it points to) is borrowed until on_sent. 0 or < 0. */
int smtp_client_send(struct smtp_client *cl, struct smtp_client_msg *msg);
/* The answer to on_body: len bytes (0 < len <= max) of the body from the
 * offset asked for; data is copied before this returns. 0, or -EINVAL
 * when nothing was asked (e.g. the session ended meanwhile). */
int smtp_client_body(struct smtp_client *cl, const char *data, size_t len);
/* The other answer: the body cannot be had (the message left the queue).
 * The transaction ends without its final dot - the connection is reset,
 * nothing more is sent, so the server delivers nothing (RFC 5321 §4.1.1.4)
 * - and on_sent reports every recipient with a local 451 4.3.0 why, status
 * < 0; on_closed follows. Ignored when nothing was asked. */
void smtp_client_body_fail(struct smtp_client *cl, const char *why);
/* QUIT and close (or close at once if nothing can be sent); on_closed follows. */
void smtp_client_quit(struct smtp_client *cl);
void smtp_client_abort(struct smtp_client *cl);

void *smtp_client_udata(const struct smtp_client *cl);
/* "mx.example.org[192.0.2.5]:25", for relay= in logs and Remote-MTA in DSNs. */
const char *smtp_client_peer(const struct smtp_client *cl);
int smtp_client_tls_active(const struct smtp_client *cl);
/* Whether the server's last EHLO reply offered DSN (RFC 3461 §4): then the
 * NOTIFY of each recipient was passed on and the next hop reports success
 * itself; without it a NOTIFY=SUCCESS earns a "relayed" DSN (§5.2.2). */
int smtp_client_offers_dsn(const struct smtp_client *cl);
/* The server's reply to a STARTTLS it refused, when the session went on in
 * clear under SMTP_TLS_MAY; NULL otherwise. */
const struct smtp_client_reply *smtp_client_starttls_refused(const struct smtp_client *cl);

#endif
