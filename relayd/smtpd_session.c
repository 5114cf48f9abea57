/*
 * smtpd_session: one inbound SMTP connection (RFC 5321) as an explicit state
 * machine over a conn byte stream, plain or TLS (the session never knows
 * which, except to say so in Received:). It owns the input buffer, the
 * timers, the DATA decoding into a spool and the hand-over to the store.
 * Command semantics live in smtpd_cmd.c; relay policy in policy.c; this file
 * must not block: disk work goes through spool (thread pool) and store
 * (its own thread).
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "conn.h"
#include "listener.h"
#include "quota.h"
#include "sched.h"
#include "log.h"
#include "notify.h"
#include "odmr.h"
#include "server.h"
#include "smtpd.h"
#include "smtpd_session.h"
#include "spool.h"
#include "stats.h"

/* Unprocessed input is bounded: past this we stop reading until the session
 * has caught up (pipelining floods, or input while a commit is pending). */
#define SMTPD_IN_MAX   (256 * 1024)
#define SMTPD_IN_PAUSE (64 * 1024)

static const char *const state_names[SMTPD_NSTATES] = {
    [SMTPD_GREETED] = "GREETED", [SMTPD_READY] = "READY", [SMTPD_MAIL] = "MAIL",
    [SMTPD_RCPT] = "RCPT",       [SMTPD_DATA] = "DATA",   [SMTPD_COMMIT] = "COMMIT",
    [SMTPD_TLS] = "TLS",         [SMTPD_ETRN] = "ETRN",   [SMTPD_AUTH] = "AUTH",
    [SMTPD_ATRN] = "ATRN",       [SMTPD_TURN] = "TURN",   [SMTPD_CLOSING] = "CLOSING",
};

#define B(s) SMTPD_STATE_BIT(SMTPD_##s)
/* Allowed transitions (dqlite-style checked state machine). Any state may go
 * to CLOSING; everything else is listed. */
static const unsigned state_next[SMTPD_NSTATES] = {
    [SMTPD_GREETED] = B(GREETED) | B(READY) | B(TLS),
    [SMTPD_READY] = B(READY) | B(MAIL) | B(TLS) | B(ETRN) | B(AUTH) | B(ATRN),
    [SMTPD_MAIL] = B(READY) | B(RCPT),
    [SMTPD_RCPT] = B(READY) | B(RCPT) | B(DATA),
    [SMTPD_DATA] = B(READY) | B(COMMIT),
    [SMTPD_COMMIT] = B(READY),
    [SMTPD_TLS] = B(GREETED),
    [SMTPD_ETRN] = B(READY),
    [SMTPD_AUTH] = B(READY),
    [SMTPD_ATRN] = B(READY) | B(TURN),
    [SMTPD_TURN] = 0,
    [SMTPD_CLOSING] = 0,
};
#undef B

static const struct conn_cbs session_cbs;
static void spool_resume(void *arg);
static void process_input(struct smtpd_session *s);
static void session_maybe_free(struct smtpd_session *s);
static void on_timeout(uv_timer_t *t);
static void on_timer_closed(uv_handle_t *h);

static int reading_commands(enum smtpd_state st)
{
    /* an AUTH exchange reads lines under command_timeout too */
    return st == SMTPD_GREETED || st == SMTPD_READY || st == SMTPD_MAIL || st == SMTPD_RCPT ||
           st == SMTPD_AUTH;
}

/*
 * A new deadline: command_timeout for the next command line (or a TLS
 * handshake), data_timeout for DATA. Called when a command has been read and
 * when a state that reads starts; never for bytes that merely arrive, so a
 * client cannot hold its slot by sending one byte at a time.
 */
static void deadline_start(struct smtpd_session *s)
{
    uint64_t now = uv_now(s->srv->loop);

    if (s->state == SMTPD_DATA) {
        s->data_started = now;
        s->data_bytes = 0;
        s->deadline = now + s->cfg->data_timeout;
    } else {
        s->deadline = now + s->cfg->command_timeout;
    }
}

/*
 * n bytes of DATA were read. As Postfix's smtpd_min_data_rate: each byte buys
 * 1/min_data_rate seconds beyond the first data_timeout, so the message must
 * arrive at that average rate; and no gap between reads may exceed
 * data_timeout, however much was bought.
 */
static void deadline_data(struct smtpd_session *s, size_t n)
{
    uint64_t idle = uv_now(s->srv->loop) + s->cfg->data_timeout, due;

    s->data_bytes += n;
    if (s->cfg->min_data_rate == 0) {
        s->deadline = idle;
        return;
    }
    due = s->data_started + s->cfg->data_timeout + s->data_bytes * 1000 / s->cfg->min_data_rate;
    s->deadline = due < idle ? due : idle;
}

void smtpd_enter_state(struct smtpd_session *s, enum smtpd_state next)
{
    enum smtpd_state prev = s->state;

    if (next != SMTPD_CLOSING && !(state_next[s->state] & SMTPD_STATE_BIT(next))) {
        /* a bug, not a peer's doing: say so loudly and end the session */
        log_error("session %s: illegal transition %s -> %s", s->id, state_names[s->state],
                  state_names[next]);
        next = SMTPD_CLOSING;
    }
    if (s->state != next)
        log_debug("session %s: %s -> %s", s->id, state_names[s->state], state_names[next]);
    s->state = next;
    /* DATA, a TLS handshake, or commands again after one of those: a new deadline */
    if (next != prev && (next == SMTPD_DATA || next == SMTPD_TLS ||
                         (reading_commands(next) && !reading_commands(prev))))
        deadline_start(s);
}

/* Run the timer to the earlier of the current deadline and the session's
 * end. It only moves when one of those does. */
static void timer_arm(struct smtpd_session *s)
{
    uint64_t now, end, due;

    if (!s->timer_open || s->state == SMTPD_CLOSING)
        return;
    if (s->state == SMTPD_COMMIT || s->state == SMTPD_ETRN || s->state == SMTPD_ATRN ||
        s->state == SMTPD_TURN || (s->state == SMTPD_AUTH && s->auth_pending)) {
        /* waiting for our own disk or auth worker, not for the client: a
         * reply that is due is not lost to session_timeout, which is
         * checked again after (RFC 2645 §4.3: the client gives ATRN a long
         * timeout while the queue is read); a turn is delivery's to time */
        uv_timer_stop(&s->timer);
        return;
    }
    now = uv_now(s->srv->loop);
    end = s->started + s->cfg->session_timeout;
    due = s->deadline < end ? s->deadline : end;
    uv_timer_start(&s->timer, on_timeout, due > now ? due - now : 0, 0);
}

static void session_close(struct smtpd_session *s)
{
    if (s->closed)
        return;
    smtpd_enter_state(s, SMTPD_CLOSING);
    s->closed = 1;
    if (s->timer_open)
        uv_timer_stop(&s->timer);
    conn_close(s->conn);
}

void smtpd_reply_raw(struct smtpd_session *s, const char *line)
{
    int rc;

    if (s->closed)
        return;
    rc = conn_write(s->conn, line, strlen(line));
    if (rc != 0) {
        /* the client does not read its replies: nothing sensible is left */
        log_warn("write to %s failed: %s", s->peer,
                 rc == -ENOBUFS ? "output backlog" : uv_strerror(rc));
        s->closed = 1;
        smtpd_enter_state(s, SMTPD_CLOSING);
        if (s->timer_open)
            uv_timer_stop(&s->timer);
        conn_abort(s->conn);
    }
}

void smtpd_reply(struct smtpd_session *s, int code, const char *enh, const char *fmt, ...)
{
    char line[1024];
    size_t n;
    va_list ap;

    if (enh != NULL)
        n = (size_t)snprintf(line, sizeof(line), "%d %s ", code, enh);
    else
        n = (size_t)snprintf(line, sizeof(line), "%d ", code);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n - 2, fmt, ap);
    va_end(ap);
    n = strlen(line);
    memcpy(line + n, "\r\n", 3);
    smtpd_reply_raw(s, line);
}

void smtpd_close_421(struct smtpd_session *s, const char *enh, const char *text)
{
    smtpd_reply(s, 421, enh, "%s %s", s->cfg->hostname, text);
    session_close(s);
}

void smtpd_protocol_error(struct smtpd_session *s)
{
    s->n.errors++;
    if (s->n.errors >= s->cfg->max_errors && !s->closed) {
        /* Postfix logs this at info, in these words: fail2ban's postfix
         * filter (mode errors/more) matches them */
        log_info("too many errors after %s from %s", s->last_verb ? s->last_verb : "CONNECT",
                 s->peer);
        smtpd_close_421(s, "4.7.0", "Error: too many errors");
    }
}

void smtpd_log_reject(struct smtpd_session *s, const char *cmd, const char *reply, const char *to)
{
    const char *proto = s->esmtp ? "ESMTP" : "SMTP";

    log_info("NOQUEUE: reject: %s from %s: %s; from=<%s> to=<%s> proto=%s helo=<%s>", cmd, s->peer,
             reply, s->txn.msg.sender != NULL ? s->txn.msg.sender : "", to != NULL ? to : "", proto,
             s->helo);
}

/* Give back what the transaction held against the quotas. */
static void txn_release_quota(struct server *srv, struct smtpd_txn *t)
{
    if (srv->quota != NULL) {
        quota_mail_end(srv->quota, t->reserve_bytes);
        for (size_t i = 0; i < t->nquota_sections; i++)
            quota_release(srv->quota, t->quota_sections[i], t->size_declared);
    }
    for (size_t i = 0; i < t->nquota_sections; i++)
        free(t->quota_sections[i]);
    free(t->quota_sections);
    t->quota_sections = NULL;
    t->nquota_sections = 0;
    t->reserve_bytes = 0;
}

static void txn_free_fields(struct smtpd_txn *t)
{
    size_t i;

    for (i = 0; i < t->msg.nrcpts; i++) {
        free(t->msg.rcpts[i].address);
        free(t->msg.rcpts[i].domain);
        free(t->msg.rcpts[i].orcpt);
    }
    free(t->msg.rcpts);
    free(t->msg.sender);
    free(t->msg.envid);
    free(t->msg.client_addr);
    free(t->msg.client_helo);
    free(t->msg.body_mem);
    free(t->msg.spool_path); /* the store removed the file; only the name is ours */
    spool_free(t->spool);
    memset(t, 0, sizeof(*t));
}

void smtpd_txn_reset(struct smtpd_session *s)
{
    txn_release_quota(s->srv, &s->txn);
    txn_free_fields(&s->txn);
}

/* ---- DATA ------------------------------------------------------------------------ */

static void format_date(char *out, size_t outlen)
{
    time_t now = time(NULL);
    struct tm tm;

    localtime_r(&now, &tm);
    /* RFC 5322 §3.3 date-time */
    strftime(out, outlen, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/*
 * The trace header (RFC 5321 §4.4): who handed us the message, when, and how
 * (protocol, TLS parameters), so the site can trace every hop.
 */
static int write_received(struct smtpd_session *s)
{
    struct buf h;
    char date[64];
    const char *proto;
    int rc = 0;

    buf_init(&h, 4096);
    format_date(date, sizeof(date));
    proto = !s->esmtp ? "SMTP" : s->tls ? "ESMTPS" : "ESMTP";
    rc |= buf_appendf(&h, "Received: from %s ([%s])\r\n", s->helo, s->addr);
    if (s->tls)
        /* Postfix's shape: (bits used/bits of the algorithm); equal for
         * every cipher TLS 1.2+ offers */
        rc |= buf_appendf(&h, "\t(using %s with cipher %s (%d/%d bits))\r\n",
                          conn_tls_version(s->conn), conn_tls_cipher(s->conn),
                          conn_tls_bits(s->conn), conn_tls_bits(s->conn));
    rc |= buf_appendf(&h, "\tby %s (relayd) with %s id %s", s->cfg->hostname, proto,
                      s->txn.msg.queue_id);
    if (s->txn.msg.nrcpts == 1)
        rc |= buf_appendf(&h, "\r\n\tfor <%s>", s->txn.msg.rcpts[0].address);
    rc |= buf_appendf(&h, "; %s\r\n", date);
    if (rc == 0)
        rc = spool_append(s->txn.spool, h.data, h.len);
    buf_free(&h);
    return rc;
}

int smtpd_data_begin(struct smtpd_session *s)
{
    struct smtpd_txn *t = &s->txn;

    t->spool = spool_new(s->srv->loop, s->srv->spool_dir, t->msg.queue_id);
    if (t->spool == NULL || write_received(s) != 0) {
        smtpd_reply(s, 451, "4.3.0", "Error: queue file write error");
        smtpd_txn_reset(s);
        smtpd_enter_state(s, SMTPD_READY);
        return -1;
    }
    smtp_data_init(&t->dec);
    t->body_bytes = 0;
    header_scan_init(&t->msgid, "Message-ID");
    smtpd_enter_state(s, SMTPD_DATA);
    smtpd_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
    return 0;
}

static void data_done_reply(struct smtpd_session *s, int code, const char *enh, const char *text)
{
    char reply[256];

    snprintf(reply, sizeof(reply), "%d %s %s", code, enh, text);
    smtpd_reply(s, code, enh, "%s", text);
    smtpd_log_reject(s, "DATA", reply, s->txn.msg.nrcpts > 0 ? s->txn.msg.rcpts[0].address : NULL);
    smtpd_txn_reset(s);
    smtpd_enter_state(s, SMTPD_READY);
    /* SIGTERM came during DATA: the message is answered, now the session ends */
    if (s->close_after_commit)
        smtpd_close_421(s, "4.3.2", "Service shutting down");
}

/* Tell the scheduler which domains have new mail (retry domains start). */
static void notify_sched(struct server *srv, const struct store_msg *msg)
{
    size_t i, j;

    for (i = 0; i < msg->nrcpts; i++)
        if (srv->stats != NULL)
            stats_add(srv->stats, msg->rcpts[i].domain, STATS_RECEIVED, 1);
    if (srv->sched == NULL)
        return;
    for (i = 0; i < msg->nrcpts; i++) {
        for (j = 0; j < i; j++)
            if (strcmp(msg->rcpts[j].domain, msg->rcpts[i].domain) == 0)
                break;
        if (j == i) {
            sched_queued(srv->sched, msg->rcpts[i].domain);
            notify_queued(srv->notify, msg->rcpts[i].domain);
        }
    }
}

/* Mail for a hold domain waits for its site to ask: logged once, at
 * arrival, as Postfix's ETRN relay logs its "deferred transport", so the
 * log tools count it as deferred (and it is never given a retry time). */
static void log_waiting(const struct smtpd_session *s, const struct store_msg *msg)
{
    for (size_t i = 0; i < msg->nrcpts; i++) {
        const struct cfg_domain *d = config_delivery_domain(s->cfg, msg->rcpts[i].domain);
        if (d->mode != CFG_MODE_HOLD)
            continue;
        log_emit("qmgr", LOGL_INFO,
                 "%s: to=<%s>, relay=none, delay=0, delays=0/0/0/0, dsn=4.0.0, "
                 "status=deferred (waiting for %s)",
                 msg->queue_id, msg->rcpts[i].address, d->route_odmr ? "ATRN" : "ETRN");
    }
}

static void commit_done(struct store_msg *msg, int status, void *arg)
{
    struct smtpd_session *s = arg;

    s->commit_pending = 0;
    if (status == STORE_OK) {
        s->n.data_ok++;
        /* Postfix's shape: cleanup names the message, qmgr takes it in */
        {
            const char *mid = header_scan_value(&s->txn.msgid);
            log_emit("cleanup", LOGL_INFO, "%s: message-id=%s", msg->queue_id, mid ? mid : "<>");
        }
        log_emit("qmgr", LOGL_INFO, "%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)",
                 msg->queue_id, msg->sender, (unsigned long long)msg->size, msg->nrcpts);
        log_waiting(s, msg);
        if (!s->closed)
            smtpd_reply(s, 250, "2.0.0", "Ok: queued as %s", msg->queue_id);
        notify_sched(s->srv, msg);
    } else if (!s->closed) {
        if (status == STORE_ERR_FULL)
            smtpd_reply(s, 452, "4.3.1", "Insufficient system storage");
        else
            smtpd_reply(s, 451, "4.3.0", "Error: queue file write error");
        log_warn("%s: not queued: %s", msg->queue_id,
                 status == STORE_ERR_FULL ? "queue storage full" : "queue write error");
    }
    smtpd_txn_reset(s);
    if (s->closed) {
        session_maybe_free(s);
        return;
    }
    smtpd_enter_state(s, SMTPD_READY);
    if (s->close_after_commit) {
        smtpd_close_421(s, "4.3.2", "Service shutting down");
        return;
    }
    timer_arm(s);
    process_input(s);
}

static void spool_ready(void *arg, int status)
{
    struct smtpd_session *s = arg;
    struct smtpd_txn *t = &s->txn;
    struct store_msg *m = &t->msg;

    if (status == 0)
        status = spool_take(t->spool, &m->body_mem, &m->spool_path);
    if (status == 0) {
        m->size = spool_size(t->spool);
        spool_free(t->spool);
        t->spool = NULL;
        m->arrival = (int64_t)time(NULL);
        if (m->client_addr == NULL)
            m->client_addr = strdup(s->addr);
        if (m->client_helo == NULL)
            m->client_helo = strdup(s->helo);
        if (m->client_addr == NULL || m->client_helo == NULL)
            status = -ENOMEM;
    }
    if (status == 0)
        status = store_submit(s->srv->store, m, commit_done, s);
    if (status != 0) {
        s->commit_pending = 1;
        commit_done(m, status == UV_ENOSPC ? STORE_ERR_FULL : STORE_ERR_IO, s);
        return;
    }
    s->commit_pending = 1;
}

/* The terminating <CRLF>.<CRLF> arrived: decide, then commit or refuse. */
static void data_finish(struct smtpd_session *s)
{
    struct smtpd_txn *t = &s->txn;

    s->n.data++;
    if (t->too_big) {
        data_done_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
        smtpd_protocol_error(s);
        return;
    }
    if (smtp_data_received_count(&t->dec) > s->cfg->hopcount_limit) {
        /* RFC 5321 §6.3: a loop; refusing is better than feeding it */
        data_done_reply(s, 554, "5.4.6", "Too many hops");
        return;
    }
    if (t->write_error == UV_ENOSPC) {
        /* RFC 3463 X.3.1: the spool's file system is full, as for the store */
        log_warn("%s: not queued: queue storage full", t->msg.queue_id);
        data_done_reply(s, 452, "4.3.1", "Insufficient system storage");
        return;
    }
    if (t->write_error) {
        log_warn("%s: not queued: queue write error", t->msg.queue_id);
        data_done_reply(s, 451, "4.3.0", "Error: queue file write error");
        return;
    }
    smtpd_enter_state(s, SMTPD_COMMIT);
    timer_arm(s);
    spool_when_ready(t->spool, spool_ready, s);
}

/* Feed buffered input to the DATA decoder. Returns 1 to go on processing. */
static int data_consume(struct smtpd_session *s)
{
    struct smtpd_txn *t = &s->txn;
    size_t chunk = s->in.len < SMTPD_DATA_CHUNK ? s->in.len : SMTPD_DATA_CHUNK;
    size_t out_len = 0, used;
    int done = 0;

    if (spool_busy(t->spool))
        return 0; /* resumed from spool_resume() */
    used = smtp_data_feed(&t->dec, s->in.data, chunk, s->data_out, &out_len, &done);
    buf_consume(&s->in, used);
    deadline_data(s, used);
    if (out_len > 0 && !t->too_big) {
        t->body_bytes += out_len;
        header_scan_feed(&t->msgid, s->data_out, out_len);
        if (t->body_bytes > s->cfg->max_message_size)
            t->too_big = 1; /* keep reading to the end, store nothing more */
        else if (!t->write_error)
            t->write_error = spool_append(t->spool, s->data_out, out_len);
    }
    if (done)
        data_finish(s);
    return 1;
}

/* ---- input ----------------------------------------------------------------------- */

static void update_reading(struct smtpd_session *s)
{
    int want;

    if (s->closed)
        return;
    want = s->state != SMTPD_COMMIT && s->state != SMTPD_ETRN && s->state != SMTPD_ATRN &&
           s->state != SMTPD_TURN && s->state != SMTPD_CLOSING &&
           !(s->state == SMTPD_AUTH && s->auth_pending) && s->in.len < SMTPD_IN_PAUSE &&
           !(s->state == SMTPD_DATA && spool_busy(s->txn.spool));
    if (!want && s->state == SMTPD_DATA && spool_busy(s->txn.spool))
        spool_on_drain(s->txn.spool, spool_resume, s); /* the disk caught up: read on */
    if (want && s->read_paused) {
        s->read_paused = 0;
        conn_read_start(s->conn);
    } else if (!want && !s->read_paused && s->state != SMTPD_TLS) {
        s->read_paused = 1;
        conn_read_stop(s->conn);
    }
}

static void spool_resume(void *arg)
{
    process_input(arg);
}

/*
 * Work through buffered input: command lines one at a time (pipelined
 * commands are answered in order because each reply is queued before the
 * next command is looked at), or message bytes during DATA. Stops when the
 * session must wait (commit, TLS handshake, spool write) or is closing.
 */
static void process_input(struct smtpd_session *s)
{
    char line[SMTPD_LINE_MAX + 1];

    if (s->processing)
        return;
    s->processing = 1;
    while (s->in.len > 0 && !s->closed) {
        const char *nl;
        size_t len;

        if (s->state == SMTPD_DATA) {
            if (!data_consume(s)) {
                /* spool write in flight: continue when it is done */
                spool_on_drain(s->txn.spool, spool_resume, s);
                break;
            }
            continue;
        }
        if (s->state != SMTPD_GREETED && s->state != SMTPD_READY && s->state != SMTPD_MAIL &&
            s->state != SMTPD_RCPT && !(s->state == SMTPD_AUTH && !s->auth_pending))
            break;
        nl = memchr(s->in.data, '\n', s->in.len);
        if (s->discarding_line) {
            if (nl == NULL) {
                buf_reset(&s->in);
                break;
            }
            buf_consume(&s->in, (size_t)(nl - s->in.data) + 1);
            s->discarding_line = 0;
            if (s->state == SMTPD_AUTH)
                smtpd_enter_state(s, SMTPD_READY); /* the exchange is abandoned */
            smtpd_reply(s, 500, "5.5.2", "Error: line too long");
            smtpd_protocol_error(s);
            continue;
        }
        if (nl == NULL) {
            if (s->in.len > SMTPD_LINE_MAX) {
                s->discarding_line = 1;
                buf_reset(&s->in);
            }
            break;
        }
        len = (size_t)(nl - s->in.data);
        if (len > SMTPD_LINE_MAX) {
            buf_consume(&s->in, len + 1);
            if (s->state == SMTPD_AUTH)
                smtpd_enter_state(s, SMTPD_READY);
            smtpd_reply(s, 500, "5.5.2", "Error: line too long");
            smtpd_protocol_error(s);
            continue;
        }
        /* a command ends at CRLF; a bare LF is tolerated as Postfix does, the
         * CR before it is not part of the command */
        memcpy(line, s->in.data, len);
        buf_consume(&s->in, len + 1);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        line[len] = '\0';
        if (s->state == SMTPD_AUTH)
            smtpd_auth_line(s, line, len); /* an answer to a 334, not a command */
        else
            smtpd_cmd_dispatch(s, line, len);
        explicit_bzero(line, len); /* it may have been a password */
        /* the next command line starts its own deadline */
        if (reading_commands(s->state))
            deadline_start(s);
    }
    s->processing = 0;
    timer_arm(s);
    update_reading(s);
}

static void on_data(struct conn *c, const char *data, size_t len)
{
    struct smtpd_session *s = conn_udata(c);

    if (s->closed || s->state == SMTPD_CLOSING)
        return;
    if (buf_append(&s->in, data, len) != 0) {
        /* cannot happen while update_reading() pauses in time; be safe */
        smtpd_close_421(s, "4.7.0", "Error: too much pipelined input");
        return;
    }
    /* no timer_arm() here: bytes alone never extend a deadline */
    process_input(s);
}

static void on_eof(struct conn *c, int status)
{
    struct smtpd_session *s = conn_udata(c);

    if (s->closed)
        return;
    if (s->state == SMTPD_DATA)
        log_info("lost connection after DATA (%llu bytes) from %s",
                 (unsigned long long)s->txn.body_bytes, s->peer);
    else if (status != UV_EOF)
        log_info("lost connection from %s: %s", s->peer, uv_strerror(status));
    session_close(s);
}

void smtpd_starttls_begin(struct smtpd_session *s)
{
    /* RFC 3207 §4.2 and CVE-2011-0411: nothing the client sent before the
     * handshake may be taken as a command afterwards. */
    buf_reset(&s->in);
    smtpd_enter_state(s, SMTPD_TLS);
    if (conn_starttls(s->conn, s->srv->tls, 1, NULL) != 0) {
        log_warn("STARTTLS setup failed for %s", s->peer);
        session_close(s);
    }
}

static void on_tls(struct conn *c, int status)
{
    struct smtpd_session *s = conn_udata(c);

    if (s->closed)
        return;
    if (status != 0) {
        log_warn("TLS handshake with %s failed", s->peer);
        session_close(s);
        return;
    }
    s->tls = 1;
    /* RFC 3207 §4.2: forget everything learnt before; the client must EHLO */
    smtpd_auth_reset(s);
    s->helo[0] = '\0';
    s->esmtp = 0;
    smtpd_txn_reset(s);
    smtpd_enter_state(s, SMTPD_GREETED);
    log_info("TLS connection established from %s: %s with cipher %s (%d bits)", s->peer,
             conn_tls_version(c), conn_tls_cipher(c), conn_tls_bits(c));
    timer_arm(s);
    process_input(s);
}

void smtpd_async_done(struct smtpd_session *s)
{
    s->etrn_pending = 0;
    if (s->closed) {
        session_maybe_free(s);
        return;
    }
    if (s->close_after_commit) {
        smtpd_close_421(s, "4.3.2", "Service shutting down");
        return;
    }
    /* the client has waited for us (a queue count, a hash check): its
     * next line gets a whole command_timeout from our reply */
    if (reading_commands(s->state))
        deadline_start(s);
    timer_arm(s);
    process_input(s);
}

struct conn *smtpd_turn_begin(struct smtpd_session *s)
{
    /* RFC 2645 §4: from here on the client is the server; nothing it sent
     * before our 250 may be read as a reply in the new role */
    buf_reset(&s->in);
    s->etrn_pending = 0;
    smtpd_enter_state(s, SMTPD_TURN);
    s->closed = 1; /* no more replies of ours */
    if (s->timer_open) {
        uv_timer_stop(&s->timer);
        uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    }
    return s->conn;
}

void smtpd_turn_over(struct smtpd_session *s)
{
    s->turn = NULL;
    s->conn = NULL;
    s->conn_gone = 1;
    session_maybe_free(s);
}

void smtpd_quit(struct smtpd_session *s)
{
    smtpd_reply(s, 221, "2.0.0", "Bye");
    session_close(s);
}

static void log_disconnect(struct smtpd_session *s)
{
    char line[512];
    size_t n = 0;
    const struct smtpd_counts *k = &s->n;

#define ADD(name, v)                                                                               \
    if ((v) > 0 && n < sizeof(line))                                                               \
    n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%u", name, (v))
#define ADD2(name, ok, v)                                                                          \
    if ((v) > 0 && n < sizeof(line)) {                                                             \
        if ((ok) == (v))                                                                           \
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%u", name, (v));                \
        else                                                                                       \
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%u/%u", name, (ok), (v));       \
    }
    line[0] = '\0';
    ADD("helo", k->helo);
    ADD("ehlo", k->ehlo);
    ADD("starttls", k->starttls);
    ADD2("auth", k->auth_ok, k->auth);
    ADD2("mail", k->mail_ok, k->mail);
    ADD2("rcpt", k->rcpt_ok, k->rcpt);
    ADD2("data", k->data_ok, k->data);
    ADD("rset", k->rset);
    ADD("noop", k->noop);
    ADD("vrfy", k->vrfy);
    ADD("etrn", k->etrn);
    ADD("atrn", k->atrn);
    ADD("quit", k->quit);
    ADD("unknown", k->unknown);
    ADD("commands", k->commands);
#undef ADD
#undef ADD2
    log_info("disconnect from %s%s", s->peer, line);
}

static void session_maybe_free(struct smtpd_session *s)
{
    struct server *srv = s->srv;

    if (!s->conn_gone || s->timer_open || s->commit_pending || s->etrn_pending || s->turn != NULL)
        return;
    if (s->admitted) {
        listener_release(srv->listener, s->ipkey);
        log_disconnect(s);
    }
    smtpd_auth_reset(s); /* a step still on the worker is dropped */
    txn_release_quota(srv, &s->txn);
    txn_free_fields(&s->txn);
    buf_free(&s->in);
    free(s->data_out);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    srv->nsessions--;
    config_unref(s->cfg);
    free(s);
    if (srv->nsessions == 0 && srv->on_sessions_gone != NULL)
        srv->on_sessions_gone(srv);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct smtpd_session *s = h->data;

    s->timer_open = 0;
    session_maybe_free(s);
}

static void on_closed(struct conn *c)
{
    struct smtpd_session *s = conn_udata(c);

    s->closed = 1;
    s->conn_gone = 1;
    if (s->timer_open)
        uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    else
        session_maybe_free(s);
}

static void on_timeout(uv_timer_t *t)
{
    struct smtpd_session *s = t->data;
    const struct config *cfg = s->cfg;
    uint64_t now = uv_now(s->srv->loop);
    char why[128];

    if (s->closed)
        return;
    if (now >= s->started + cfg->session_timeout)
        snprintf(why, sizeof(why), "session longer than %llu s",
                 (unsigned long long)(cfg->session_timeout / 1000));
    else if (s->state == SMTPD_DATA && cfg->min_data_rate > 0 &&
             now >= s->data_started + cfg->data_timeout + s->data_bytes * 1000 / cfg->min_data_rate)
        snprintf(why, sizeof(why), "DATA slower than %u bytes/s", cfg->min_data_rate);
    else if (s->state == SMTPD_DATA)
        snprintf(why, sizeof(why), "no DATA for %llu s",
                 (unsigned long long)(cfg->data_timeout / 1000));
    else if (s->state == SMTPD_TLS)
        snprintf(why, sizeof(why), "TLS handshake not complete in %llu s",
                 (unsigned long long)(cfg->command_timeout / 1000));
    else
        snprintf(why, sizeof(why), "no complete command in %llu s",
                 (unsigned long long)(cfg->command_timeout / 1000));
    if (s->state == SMTPD_DATA)
        log_info("timeout after DATA (%llu bytes) from %s: %s", (unsigned long long)s->data_bytes,
                 s->peer, why);
    else
        log_info("timeout after %s from %s: %s", state_names[s->state], s->peer, why);
    smtpd_reply(s, 421, "4.4.2", "%s Error: timeout exceeded: %s", cfg->hostname, why);
    session_close(s);
}

static const struct conn_cbs session_cbs = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_tls = on_tls,
    .on_drain = NULL,
    .on_closed = on_closed,
};

void smtpd_session_accept(struct server *srv, uv_stream_t *stream, int odmr)
{
    struct smtpd_session *s = calloc(1, sizeof(*s));
    enum listener_verdict v;
    int rc;

    if (s == NULL) {
        log_warn("out of memory accepting a connection");
        return;
    }
    s->srv = srv;
    s->odmr = odmr;
    s->cfg = config_ref(srv->cfg);
    snprintf(s->id, sizeof(s->id), "%llx", ++srv->next_session_id);
    buf_init(&s->in, SMTPD_IN_MAX);
    rc = conn_accept(srv->loop, stream, &session_cbs, s, &s->conn);
    if (rc != 0) {
        log_warn("accept failed: %s", uv_strerror(rc));
        config_unref(s->cfg);
        free(s);
        return;
    }
    snprintf(s->addr, sizeof(s->addr), "%s", conn_peer_addr(s->conn));
    /* host[addr]:port as Postfix logs it with smtpd_client_port_logging (no
     * reverse lookup here: unknown), so pflogsumm and fail2ban's postfix
     * filters read relayd's lines, and a session is told from another */
    snprintf(s->peer, sizeof(s->peer), "unknown[%s]:%d", s->addr, conn_peer_port(s->conn));
    s->next = srv->sessions;
    if (srv->sessions != NULL)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;

    uv_timer_init(srv->loop, &s->timer);
    s->timer.data = s;
    s->timer_open = 1;
    s->started = uv_now(srv->loop);
    deadline_start(s);
    timer_arm(s);

    if (srv->stopping) {
        smtpd_close_421(s, "4.3.2", "Service shutting down");
        return;
    }
    v = listener_admit(srv->listener, conn_peer_sockaddr(s->conn), s->ipkey, sizeof(s->ipkey));
    if (v == LISTENER_TOO_MANY) {
        log_warn("too many connections from %s", s->peer);
        smtpd_close_421(s, "4.7.0", "Error: too many connections");
        return;
    }
    if (v != LISTENER_ADMIT && strchr(s->ipkey, '/') != NULL) {
        /* an IPv6 client counts with its whole network (ipv6_prefix_length) */
        char text[128];
        log_warn("too many connections from one address from %s (network %s)", s->peer, s->ipkey);
        snprintf(text, sizeof(text), "Error: too many connections from your network %s", s->ipkey);
        smtpd_close_421(s, "4.7.0", text);
        return;
    }
    if (v != LISTENER_ADMIT) {
        log_warn("too many connections from one address from %s", s->peer);
        smtpd_close_421(s, "4.7.0", "Error: too many connections from your address");
        return;
    }
    s->admitted = 1;
    s->data_out = malloc(SMTP_DATA_OUT_MAX(SMTPD_DATA_CHUNK));
    if (s->data_out == NULL) {
        smtpd_close_421(s, "4.3.0", "Error: out of memory");
        return;
    }
    log_info("%sconnect from %s", s->odmr ? "ODMR " : "", s->peer);
    smtpd_reply(s, 220, NULL, "%s ESMTP relayd", s->cfg->hostname);
}

void smtpd_session_shutdown_all(struct server *srv)
{
    struct smtpd_session *s, *next;

    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        if (s->state == SMTPD_TURN) {
            /* the message being sent ends, then the turn QUITs */
            odmr_turn_stop(s);
            continue;
        }
        if (s->closed)
            continue;
        if (s->state == SMTPD_DATA || s->state == SMTPD_COMMIT || s->state == SMTPD_ETRN ||
            s->state == SMTPD_ATRN)
            s->close_after_commit = 1;
        else if (s->state == SMTPD_TLS)
            session_close(s);
        else
            smtpd_close_421(s, "4.3.2", "Service shutting down");
    }
}

void smtpd_session_abort_all(struct server *srv)
{
    struct smtpd_session *s, *next;

    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        if (s->state == SMTPD_TURN) {
            log_warn("shutdown: dropping the ATRN turn with %s", s->peer);
            odmr_turn_abort(s);
            continue;
        }
        if (!s->closed) {
            log_warn("shutdown: dropping session %s in state %s", s->peer, state_names[s->state]);
            s->closed = 1;
            smtpd_enter_state(s, SMTPD_CLOSING);
            if (s->timer_open)
                uv_timer_stop(&s->timer);
            conn_abort(s->conn);
        }
    }
}
