/*
 * bounce: decide whether a DSN is due (RFC 3461 §4.1), build it with
 * lib/dsn.c and queue it through the store like any message, from <> to
 * the original sender. It delivers nothing itself (the scheduler does) and
 * never bounces a bounce: its own sender is <> and its recipient NOTIFY=NEVER.
 */
#define LOG_SERVICE "bounce" /* log lines are tagged relayd/bounce */
#include "bounce.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "sched.h"
#include "server.h"
#include "smtp_parse.h"

/* Room for the DSN's own text on top of the returned message. */
#define BOUNCE_OVERHEAD (1024 * 1024)
/* What is read of a body that is not in memory (a streamed message, issue
 * 7) when it is too big to come back whole: enough for its header. */
#define BOUNCE_HEAD (64 * 1024)

/* One DSN from bounce_send until its commit callback has run: the message
 * handed to the store and everything it points to. */
struct bounce_job {
    struct store_msg m;
    struct store_rcpt rcpt;
    struct server *srv;
    char orig_qid[STORE_QID_LEN + 1];
    enum dsn_kind kind;
    void (*cb)(void *arg, int status);
    void *arg;
    uv_timer_t *timer; /* only when nothing was due: the deferred callback */
};

/* What the log calls a notification of kind (Postfix's words). */
static const char *kind_name(enum dsn_kind kind)
{
    return kind == DSN_DELAY ? "delay" : kind == DSN_RELAYED ? "delivery status" : "non-delivery";
}

static void job_free(struct bounce_job *j)
{
    free(j->rcpt.address);
    free(j->rcpt.domain);
    free(j->m.body_mem);
    free(j->m.client_helo);
    free(j);
}

/* The diagnostic as the remote (or we) said it: "550 5.1.1 text", without
 * repeating an enhanced code the text already starts with. */
static void diag_text(const struct bounce_rcpt *r, char *out, size_t outlen)
{
    const char *text = r->text ? r->text : "";
    size_t elen = r->enh ? strlen(r->enh) : 0;

    if (r->code <= 0 && elen && strncmp(text, r->enh, elen) != 0)
        snprintf(out, outlen, "%s %s", r->enh, text); /* our own verdict, e.g. expiry */
    else if (r->code <= 0)
        snprintf(out, outlen, "%s", text);
    else if (elen && strncmp(text, r->enh, elen) != 0)
        snprintf(out, outlen, "%d %s %s", r->code, r->enh, text);
    else
        snprintf(out, outlen, "%d %s", r->code, text);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct bounce_job *j = h->data;

    free(h);
    job_free(j);
}

/* Nothing was due: the callback still runs, from the loop, not from inside
 * bounce_send (callers need not be re-entrant). */
static void on_nothing_due(uv_timer_t *t)
{
    struct bounce_job *j = t->data;

    if (j->cb)
        j->cb(j->arg, 0);
    uv_close((uv_handle_t *)t, on_timer_closed);
}

/* The DSN is committed (or not): log it Postfix's way, wake the scheduler
 * for the sender's domain, tell the caller. Loop thread. */
static void on_committed(struct store_msg *m, int status, void *arg)
{
    struct bounce_job *j = arg;
    const char *what = kind_name(j->kind);

    (void)m;
    if (status == STORE_OK) {
        log_info("%s: sender %s notification: %s", j->orig_qid, what, j->m.queue_id);
        /* the notification is a message of its own, logged as one arriving */
        log_emit("qmgr", LOGL_INFO, "%s: from=<>, size=%llu, nrcpt=1 (queue active)", j->m.queue_id,
                 (unsigned long long)j->m.size);
        if (j->srv->sched)
            sched_queued(j->srv->sched, j->rcpt.domain);
    } else {
        log_warn("%s: sender %s notification %s could not be queued (%s)", j->orig_qid, what,
                 j->m.queue_id, status == STORE_ERR_FULL ? "queue storage full" : "queue error");
    }
    if (j->cb)
        j->cb(j->arg, status);
    job_free(j);
}

/* The sender's domain, lower case (the part after the last '@': a quoted
 * local part may hold '@' too). NULL when there is none. */
static char *sender_domain(const char *sender)
{
    const char *at = strrchr(sender, '@');
    char *d;

    if (!at || !at[1])
        return NULL;
    d = strdup(at + 1);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* Defer cb(arg, 0) to the loop: nothing was due. */
static int nothing_due(struct server *srv, void (*cb)(void *arg, int status), void *arg)
{
    struct bounce_job *j = calloc(1, sizeof *j);
    int rc = UV_ENOMEM;

    if (!j || !(j->timer = malloc(sizeof *j->timer)))
        goto fail;
    j->cb = cb;
    j->arg = arg;
    rc = uv_timer_init(srv->loop, j->timer);
    if (rc != 0)
        goto fail;
    j->timer->data = j;
    rc = uv_timer_start(j->timer, on_nothing_due, 0, 0);
    if (rc != 0) {
        uv_close((uv_handle_t *)j->timer, on_timer_closed);
        return rc;
    }
    return 0;
fail:
    if (j)
        free(j->timer);
    free(j);
    return rc;
}

/*
 * Build the DSN for the recipients of r that asked for one and submit it.
 * msg (with its body in memory) and r are read during the call only.
 * Returns 0, after which cb runs exactly once on the loop thread (status 0
 * when the DSN is committed or nothing was due, a store_status otherwise);
 * or < 0 (UV_ENOMEM, UV_EINVAL, what dsn_build or store_submit returned)
 * and cb never runs.
 */
static int bounce_build(struct server *srv, const struct store_dmsg *msg,
                        const struct bounce_rcpt *r, size_t n, enum dsn_kind kind,
                        void (*cb)(void *arg, int status), void *arg)
{
    struct dsn_rcpt *dr = NULL;
    char(*status)[16] = NULL, (*diag)[1024] = NULL;
    const struct cfg_domain *cd;
    struct bounce_job *j = NULL;
    struct dsn_info info;
    struct buf out;
    size_t i, nd = 0;
    int64_t now = (int64_t)time(NULL);
    int rc = UV_ENOMEM;

    buf_init(&out, 0);
    if (!srv || !srv->cfg || !srv->store || !msg || (n > 0 && !r))
        return UV_EINVAL;
    /* RFC 3461 §6.2 / RFC 5321 §4.5.5: never to the null sender: what cannot
     * be delivered of a bounce is dropped, with this line to say so. */
    if (!msg->sender || !msg->sender[0]) {
        if (kind == DSN_FAILURE)
            log_info("%s: sender non-delivery notification: none, dropped (the sender is <>: "
                     "a bounce is never bounced)",
                     msg->queue_id);
        return nothing_due(srv, cb, arg);
    }
    dr = calloc(n ? n : 1, sizeof *dr);
    status = calloc(n ? n : 1, sizeof *status);
    diag = calloc(n ? n : 1, sizeof *diag);
    if (!dr || !status || !diag)
        goto done;
    for (i = 0; i < n; i++) {
        const struct bounce_rcpt *b = &r[i];

        if (!b->rcpt || !dsn_notify_wants(b->rcpt->notify, kind))
            continue;
        if (b->code == 0 && !b->enh)
            snprintf(status[nd], sizeof status[nd], "%s",
                     kind == DSN_DELAY     ? "4.0.0"
                     : kind == DSN_RELAYED ? "2.0.0"
                                           : "5.0.0");
        else
            dsn_status_from_reply(b->code, b->enh, status[nd]);
        diag_text(b, diag[nd], sizeof diag[nd]);
        dr[nd].address = b->rcpt->address;
        dr[nd].orcpt = b->rcpt->orcpt;
        dr[nd].status = status[nd];
        dr[nd].remote_mta = b->remote_mta;
        dr[nd].diagnostic = diag[nd][0] ? diag[nd] : NULL;
        dr[nd].last_attempt = b->code > 0 || b->remote_mta ? now : 0;
        nd++;
    }
    if (nd == 0) {
        log_debug("%s: no %s notification: NOTIFY does not ask for one", msg->queue_id,
                  kind_name(kind));
        rc = nothing_due(srv, cb, arg);
        goto done;
    }

    memset(&info, 0, sizeof info);
    info.kind = kind;
    info.reporting_mta = srv->cfg->hostname;
    info.queue_id = msg->queue_id;
    info.envid = msg->envid;
    info.sender = msg->sender;
    info.arrival = msg->arrival;
    info.now = now;
    /* Will-Retry-Until: arrival plus the lifetime of the recipients' domain
     * (a fetch is per domain, so the first one speaks for all). */
    cd = config_delivery_domain(srv->cfg, r[0].rcpt && r[0].rcpt->domain ? r[0].rcpt->domain : "");
    info.retry_until = msg->arrival + (int64_t)(cd->queue_lifetime / 1000);
    info.return_full = msg->dsn_ret != SMTP_RET_HDRS; /* RFC 3461 §4.3: FULL or unset */
    info.original = msg->body;
    info.original_len = msg->body ? (size_t)msg->size : 0;
    /* RFC 6522 §3: a message over bounce_size_limit comes back as its
     * header section (text/rfc822-headers), so backscatter that gets through
     * carries no payload and a DSN stays small */
    info.max_original = (size_t)srv->cfg->bounce_size_limit;
    buf_init(&out, info.max_original + BOUNCE_OVERHEAD);
    rc = dsn_build(&info, dr, nd, &out);
    if (rc < 0) {
        log_warn("%s: cannot build the %s notification: %s", msg->queue_id, kind_name(kind),
                 strerror(-rc));
        rc = rc == -ENOMEM ? UV_ENOMEM : UV_EINVAL;
        goto done;
    }

    rc = UV_ENOMEM;
    j = calloc(1, sizeof *j);
    if (!j)
        goto done;
    j->srv = srv;
    j->kind = kind;
    j->cb = cb;
    j->arg = arg;
    snprintf(j->orig_qid, sizeof j->orig_qid, "%s", msg->queue_id);
    j->rcpt.address = strdup(msg->sender);
    j->rcpt.domain = sender_domain(msg->sender);
    j->rcpt.notify = SMTP_NOTIFY_NEVER; /* a bounce is never bounced */
    j->m.client_helo = strdup(srv->cfg->hostname);
    if (!j->rcpt.address || !j->m.client_helo)
        goto done;
    if (!j->rcpt.domain) {
        log_warn("%s: no notification: sender <%s> has no domain", msg->queue_id, msg->sender);
        rc = UV_EINVAL;
        goto done;
    }
    store_new_queue_id(srv->store, j->m.queue_id);
    j->m.sender = ""; /* RFC 3461 §6.2: the null reverse-path */
    j->m.envid = NULL;
    j->m.dsn_ret = SMTP_RET_UNSET;
    j->m.client_addr = "localhost";
    j->m.arrival = now;
    j->m.rcpts = &j->rcpt;
    j->m.nrcpts = 1;
    j->m.size = out.len;
    j->m.body_mem = out.data; /* the job owns it now */
    out.data = NULL;
    for (i = 0; i < j->m.size && !j->m.body_8bit; i++)
        j->m.body_8bit = (unsigned char)j->m.body_mem[i] >= 0x80; /* RFC 6152 */
    rc = store_submit(srv->store, &j->m, on_committed, j);
    if (rc < 0) {
        log_warn("%s: cannot queue the %s notification: %s", msg->queue_id, kind_name(kind),
                 uv_strerror(rc));
        goto done;
    }
    j = NULL; /* on_committed frees it */
done:
    if (j)
        job_free(j);
    buf_free(&out);
    free(dr);
    free(status);
    free(diag);
    return rc;
}

/* A DSN for a message whose body is not in memory, while its head is read. */
struct bounce_head {
    struct server *srv;
    const struct store_dmsg *msg; /* borrowed until cb */
    struct bounce_rcpt *r;        /* copies */
    size_t n;
    enum dsn_kind kind;
    void (*cb)(void *arg, int status);
    void *arg;
};

static void head_free(struct bounce_head *h)
{
    for (size_t i = 0; h->r != NULL && i < h->n; i++) {
        free((char *)h->r[i].enh);
        free((char *)h->r[i].text);
        free((char *)h->r[i].remote_mta);
    }
    free(h->r);
    free(h);
}

static char *dup_or_null(const char *s, int *ok)
{
    char *d = s != NULL ? strdup(s) : NULL;

    if (s != NULL && d == NULL)
        *ok = 0;
    return d;
}

/* The head of the body came from the queue: build the DSN from it. A cut
 * head is over bounce_size_limit, so lib/dsn.c returns its header section
 * (RFC 6522 text/rfc822-headers) and says the message was too large. */
static void head_read(const char *data, size_t len, int status, void *arg)
{
    struct bounce_head *h = arg;
    struct store_dmsg m = *h->msg;
    void (*cb)(void *, int) = h->cb;
    void *cbarg = h->arg;
    int rc;

    if (status == STORE_ERR_GONE) {
        /* deleted meanwhile (etrnctl delete): nobody is left to tell */
        log_info("%s: no %s notification: the message has left the queue", m.queue_id,
                 kind_name(h->kind));
        head_free(h);
        if (cb)
            cb(cbarg, 0);
        return;
    }
    rc = STORE_ERR_IO;
    if (status == STORE_OK && len > 0) {
        m.body = (char *)data;
        if (len < m.size && len <= h->srv->cfg->bounce_size_limit)
            m.dsn_ret = SMTP_RET_HDRS; /* a cut body is never returned as whole */
        m.size = len;
        rc = bounce_build(h->srv, &m, h->r, h->n, h->kind, cb, cbarg);
    }
    head_free(h);
    if (rc != 0 && cb)
        cb(cbarg, STORE_ERR_IO); /* the recipients stay queued: tried again */
}

/*
 * A message whose body is in memory is built into its DSN at once. One
 * whose body is not (msg->body NULL: delivery streams bodies, issue 7) has
 * its head read first with store_read_chunk - all of it when
 * bounce_size_limit lets the DSN return it whole, else a head over the
 * limit - so no DSN ever holds more of a message than the limit (or 64
 * KiB); msg is then borrowed until cb runs, r is copied.
 */
int bounce_send(struct server *srv, const struct store_dmsg *msg, const struct bounce_rcpt *r,
                size_t n, enum dsn_kind kind, void (*cb)(void *arg, int status), void *arg)
{
    struct bounce_head *h;
    uint64_t limit, want;
    int ok = 1, rc;

    if (!srv || !srv->cfg || !srv->store || !msg || (n > 0 && !r))
        return UV_EINVAL;
    if (msg->body != NULL || msg->size == 0 || !msg->sender || !msg->sender[0])
        return bounce_build(srv, msg, r, n, kind, cb, arg);
    limit = srv->cfg->bounce_size_limit;
    want = msg->size <= limit ? msg->size : limit + 1 > BOUNCE_HEAD ? limit + 1 : BOUNCE_HEAD;
    if (want > STORE_CHUNK_MAX)
        want = STORE_CHUNK_MAX;
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->r = calloc(n ? n : 1, sizeof(*h->r))) == NULL) {
        free(h);
        return UV_ENOMEM;
    }
    h->srv = srv;
    h->msg = msg;
    h->n = n;
    h->kind = kind;
    h->cb = cb;
    h->arg = arg;
    for (size_t i = 0; i < n; i++) {
        h->r[i] = r[i];
        h->r[i].enh = dup_or_null(r[i].enh, &ok);
        h->r[i].text = dup_or_null(r[i].text, &ok);
        h->r[i].remote_mta = dup_or_null(r[i].remote_mta, &ok);
    }
    rc = ok ? store_read_chunk(srv->store, msg->id, 0, (size_t)want, head_read, h) : UV_ENOMEM;
    if (rc != 0)
        head_free(h);
    return rc;
}
