/*
 * smtpd: what smtpd_session.c (I/O, states, DATA, commit) and smtpd_cmd.c
 * (the command table and handlers) share about one session. Private to
 * those two files.
 */
#ifndef RELAYD_SMTPD_H
#define RELAYD_SMTPD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "header_scan.h"
#include "credentials.h"
#include "ipkey.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "store.h"

struct auth_session;
struct conn;
struct config;
struct server;
struct spool;

/* RFC 5321 §4.1.4 command order, as states. Changed only by smtpd_enter_state(). */
enum smtpd_state {
    SMTPD_GREETED = 0, /* greeting sent, waiting for HELO/EHLO */
    SMTPD_READY,       /* HELO/EHLO done, no transaction */
    SMTPD_MAIL,        /* MAIL accepted */
    SMTPD_RCPT,        /* at least one RCPT accepted */
    SMTPD_DATA,        /* 354 sent, reading the message */
    SMTPD_COMMIT,      /* message handed to the store, waiting for the commit */
    SMTPD_TLS,         /* STARTTLS handshake in progress */
    SMTPD_ETRN,        /* ETRN is counting the queue; input waits */
    SMTPD_AUTH,        /* an AUTH exchange (RFC 4954): lines are its answers, not
                        * commands; input waits while a step runs (auth_pending) */
    SMTPD_ATRN,        /* ATRN is counting the queue; input waits (RFC 2645) */
    SMTPD_TURN,        /* ATRN turned the connection: delivery owns it (odmr.c) */
    SMTPD_CLOSING,     /* QUIT, 421 or error: no more input is read */
    SMTPD_NSTATES
};

#define SMTPD_STATE_BIT(s) (1u << (s))

/* Counters for the disconnect line, like Postfix's "ehlo=1 mail=1 ...". */
struct smtpd_counts {
    unsigned helo, ehlo, starttls, auth, mail, rcpt, data, rset, noop, vrfy, etrn, atrn, quit,
        unknown, commands;
    unsigned auth_ok, mail_ok, rcpt_ok, data_ok, quit_ok, errors;
};

/* The mail transaction: built by MAIL/RCPT, handed to the store after DATA. */
struct smtpd_txn {
    struct store_msg msg; /* sender, rcpts, ... as the store wants them */
    size_t rcpt_cap;
    struct spool *spool; /* the body while it is being read */
    struct smtp_data_dec dec;
    uint64_t body_bytes; /* decoded bytes of the client's message */
    struct header_scan msgid; /* its Message-ID, for the log (as Postfix's cleanup) */
    int client_logged;        /* "QUEUEID: client=" was logged (first RCPT) */
    int too_big;         /* over max_message_size: discard, answer 552 */
    int write_error;     /* spool write failed (< 0): 452 if the disk is full, else 451 */
    int protocol_8bit;
    /* issue 11: what the transaction holds against the quotas until it
     * ends (commit or abort); see quota.h */
    uint64_t reserve_bytes; /* counted against queue_minfree since MAIL */
    uint64_t size_declared; /* SIZE=, 0 when not given */
    char **quota_sections;  /* sections a message is reserved in */
    size_t nquota_sections;
};

struct smtpd_session {
    struct smtpd_session *next, *prev; /* in server->sessions */
    struct server *srv;
    struct config *cfg; /* snapshot taken at connect (a reference) */
    struct conn *conn;
    uv_timer_t timer; /* fires at the earlier of deadline and the session's end */
    int timer_open;
    /* Deadlines, not idle timers: bytes that trickle in do not move them
     * (slowloris). Times are uv_now() milliseconds. */
    uint64_t started;      /* accept: session_timeout counts from here */
    uint64_t deadline;     /* the current command line, or DATA, must be done by then */
    uint64_t data_started; /* 354 sent */
    uint64_t data_bytes;   /* bytes of DATA read since (they buy min_data_rate time) */
    enum smtpd_state state;
    char id[16];            /* session id for debug logs */
    char peer[80];          /* "[192.0.2.1]:1234" for logs */
    char addr[64];          /* "192.0.2.1" */
    char ipkey[IPKEY_MAX];  /* what per-client limits count it as: "2001:db8:1:2::/64" */
    char helo[256];         /* argument of HELO/EHLO */
    int esmtp;              /* EHLO (not HELO) was used */
    int admitted;           /* counted by listener_admit */
    int tls;                /* TLS is active */
    int discarding_line;    /* inside an over-long command line */
    int processing;         /* re-entrancy guard for smtpd_process_input */
    int close_after_commit; /* SIGTERM came during DATA/COMMIT */
    int read_paused;
    int closed;                /* conn is closing: no more replies */
    int conn_gone;             /* on_closed ran: the conn is freed */
    int commit_pending;        /* the store holds txn.msg until commit_done */
    int etrn_pending;          /* an ETRN or ATRN count holds the session */
    const char *last_verb;     /* the last command's name (static), for logs */
    struct auth_session *auth; /* the AUTH exchange, or NULL */
    int auth_pending;          /* a step of it runs on the auth worker */
    /* after a successful AUTH: the account (credentials); "" otherwise.
     * ETRN (etrn_access = auth) and ATRN ask credentials_owns() about it. */
    char auth_account[CREDENTIALS_NAME_MAX + 1];
    int odmr;                  /* came to an odmr_listen socket: an ODMR session (RFC 2645) */
    struct odmr_turn *turn;    /* set from ATRN's 250 until the turn is over */
    struct buf in;             /* unprocessed input (bounded) */
    char *data_out;            /* decoder output scratch, SMTPD_DATA_CHUNK-sized */
    struct smtpd_txn txn;
    struct smtpd_counts n;
};

/* Input bigger than this without a line end is an over-long command line.
 * RFC 5321 §4.5.3.1.4 says 512; real clients send longer (AUTH, many params). */
#define SMTPD_LINE_MAX   2048
#define SMTPD_DATA_CHUNK (16 * 1024)

/* smtpd_session.c */
void smtpd_enter_state(struct smtpd_session *s, enum smtpd_state next);
/* Send one reply line: "code enh text". A multi-line reply is several calls
 * with last = 0 for all but the final line. */
void smtpd_reply(struct smtpd_session *s, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void smtpd_reply_raw(struct smtpd_session *s, const char *line);
/* Send 421 with text and close the session. */
void smtpd_close_421(struct smtpd_session *s, const char *enh, const char *text);
void smtpd_txn_reset(struct smtpd_session *s);
/* Start reading the message (after 354). 0 or -1 (reply already sent). */
int smtpd_data_begin(struct smtpd_session *s);
void smtpd_starttls_begin(struct smtpd_session *s);
void smtpd_quit(struct smtpd_session *s);
/* Count a 4xx/5xx reply to a command; past max_errors the session ends. */
void smtpd_protocol_error(struct smtpd_session *s);
/* The "from=<...> to=<...> proto=... helo=<...>" tail of a reject log line. */
void smtpd_log_reject(struct smtpd_session *s, const char *cmd, const char *reply, const char *to);

/* An asynchronous step that held the session (ETRN) is over: go on reading,
 * or free the session if it was closed meanwhile. */
void smtpd_async_done(struct smtpd_session *s);

/* smtpd_auth.c */
/* The AUTH command (state READY). */
void smtpd_auth_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd);
/* The client's answer to a 334 (state AUTH, no step running). */
void smtpd_auth_line(struct smtpd_session *s, const char *line, size_t len);
/* Is AUTH offered to this session (credentials, smtpd_auth)? Writes the
 * mechanisms for the EHLO keyword into mechs. 1 or 0. */
int smtpd_auth_offered(const struct smtpd_session *s, char *mechs, size_t len);
/* The session ends or TLS starts: drop the exchange and the account. */
void smtpd_auth_reset(struct smtpd_session *s);

/* smtpd_session.c, for odmr.c */
/* ATRN's 250 is queued: the connection goes to the turn (RFC 2645 §4).
 * The session stops reading, replying and timing; what it had read and not
 * processed is dropped (it was sent in the other role). Returns the conn. */
struct conn *smtpd_turn_begin(struct smtpd_session *s);
/* The turn is over and its connection closed: the session ends. */
void smtpd_turn_over(struct smtpd_session *s);

/* smtpd_cmd.c */
/* Run one command line (without its line end). */
void smtpd_cmd_dispatch(struct smtpd_session *s, const char *line, size_t len);

#endif
