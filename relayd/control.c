/*
 * control: the operators' unix socket (etrnctl queue, flush, hold, ...).
 * Owns the listening socket and its connections: one request line per
 * connection, JSON lines back, then close. Who may do what comes from the
 * peer's credentials. Queue work goes through store.c's reader and writer
 * threads, flushes through sched.c, bounces through bounce.c: nothing here
 * touches SQLite or SMTP, and the loop never waits on the disk.
 *
 * The protocol (brief CONTROL-PROTO.md; etrnctl(8) is its client):
 *
 *   request   COMMAND [key=value ...] LF   words separated by single spaces,
 *             keys and values percent-encoded (%XX) for space, '%', '=',
 *             bytes < 0x21 and >= 0x7f; a key may repeat (id=A id=B);
 *             at most 64 KiB; a CR before the LF is ignored.
 *   response  zero or more records, each one JSON object on a line, then
 *             {"ok":true} or {"ok":false,"code":"usage|denied|notfound|
 *             internal","error":"text"}; strings are JSON-escaped, bytes
 *             that are not UTF-8 as \u00XX. Then the server closes.
 *
 * Root and the user relayd runs as may run every command; any other user
 * who can connect (the socket's mode and group decide that) only those
 * that read and `flush`. A domain argument with a leading '.' also means
 * the domains below it.
 */
#include "control.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bounce.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "sched.h"
#include "server.h"
#include "stats.h"
#include "store.h"

#define CTL_MAX_CONNS   32          /* connections served at once */
#define CTL_MAX_REQUEST (64 * 1024) /* bytes in a request line, LF excluded */
#define CTL_TIMEOUT_MS  10000       /* for the request, and for each write */
#define CTL_BACKLOG     16
#define CTL_PAGE        200               /* messages per store_list call */
#define CTL_HIGH_WATER  (256 * 1024)      /* output waiting before the next page */
#define CTL_WRITE_CHUNK (64 * 1024)       /* bytes per uv_write */
#define CTL_OUT_MAX     ((size_t)1 << 31) /* one response record (show of a big body) */
#define CTL_BOUNCE_TEXT "returned by the operator"

struct ctl_conn;

/* One command: its name, whether only root (and relayd's own user) may run
 * it, the keys it takes (space separated), and what runs it. */
struct ctl_cmd {
    const char *name;
    int root_only;
    const char *keys;
    void (*run)(struct ctl_conn *k);
};

struct ctl_arg {
    char *key; /* decoded, NUL-terminated, inside the request buffer */
    char *value;
};

struct control {
    struct server *srv;
    uv_pipe_t pipe;
    int pipe_open; /* the listening handle is not yet closed */
    int closing;   /* control_close was called */
    char *path;
    dev_t dev; /* the socket file we made: unlinked at close only if */
    ino_t ino; /* it is still ours */
    struct ctl_conn *conns;
    unsigned nconns;
    unsigned long long next_id;
    int64_t started; /* for `stats` uptime */
};

/* One connection, from accept until both handles are closed and no store
 * or bounce callback is outstanding (busy). */
struct ctl_conn {
    struct ctl_conn *next, *prev;
    struct control *c;
    unsigned long long id;
    uv_pipe_t pipe;
    uv_timer_t timer;
    int handles; /* open handles: the conn is freed when 0 and busy is 0 */
    int busy;    /* callbacks outstanding (store, bounce) */
    int closed;  /* ctl_close ran: nothing new may start */
    int reading;
    int working; /* the command runs: no timeout */
    uid_t uid;
    pid_t pid;
    int privileged;
    /* the request: req is malloc'd, args point into it */
    char *req;
    size_t reqlen;
    const struct ctl_cmd *cmd;
    struct ctl_arg *args;
    size_t nargs;
    /* output: records are appended to out; wout is being written */
    struct buf out, wout;
    size_t woff, wlen;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int writing;
    int lingering; /* all written: reading what is left until the client closes */
    int finished;  /* the final line is in out: close once it is written */
    int out_failed;
    void (*on_drain)(struct ctl_conn *k); /* continue once out is written */
    /* command state */
    const char **ids; /* the id= values */
    size_t nids, idx;
    struct store_list_opts lo;
    int64_t remaining; /* records a listing may still write */
    char *domain;      /* normalised domain argument (malloc'd) */
    int subdomains;
    enum store_op op; /* hold, release, delete, requeue */
    char **fdomains;  /* flush id=: the domains of the named messages, sorted */
    size_t nfdomains;
    int64_t count;
    int64_t found;
    struct store_batch *batch; /* bounce: the message being returned */
};

static void ctl_close(struct ctl_conn *k);
static void pump(struct ctl_conn *k);
static void on_timeout(uv_timer_t *t);
static void linger(struct ctl_conn *k);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static int64_t now_unix(void)
{
    return (int64_t)time(NULL);
}

/* ---- JSON ------------------------------------------------------------------------ */

/* The length of the well-formed UTF-8 sequence at p (n bytes left), or 0:
 * no overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629 §4). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
#define CONT(x) (((x)&0xc0) == 0x80)
    unsigned c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && CONT(p[1]) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || !CONT(p[1]) || !CONT(p[2]) || (c == 0xe0 && p[1] < 0xa0) ||
            (c == 0xed && p[1] > 0x9f))
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || !CONT(p[1]) || !CONT(p[2]) || !CONT(p[3]) || (c == 0xf0 && p[1] < 0x90) ||
            (c == 0xf4 && p[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
#undef CONT
}

/* Append s (len bytes) as a JSON string (RFC 8259 §7): quotes, backslash
 * and control characters escaped, valid UTF-8 as it is, any other byte as
 * \u00XX. Runs of plain bytes go in one append. 0 or a buf error. */
static int json_string(struct buf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0, l;
    char esc[8];
    int rc = buf_append(b, "\"", 1);

    while (rc == 0 && i < len) {
        unsigned c = p[i];

        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80 && (l = utf8_len(p + i, len - i)) > 0) {
            i += l;
            continue;
        }
        if (i > run)
            rc = buf_append(b, s + run, i - run);
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n')
            snprintf(esc, sizeof esc, "\\n");
        else if (c == '\r')
            snprintf(esc, sizeof esc, "\\r");
        else if (c == '\t')
            snprintf(esc, sizeof esc, "\\t");
        else
            snprintf(esc, sizeof esc, "\\u%04x", c);
        if (rc == 0)
            rc = buf_append(b, esc, strlen(esc));
        run = ++i;
    }
    if (rc == 0 && i > run)
        rc = buf_append(b, s + run, i - run);
    if (rc == 0)
        rc = buf_append(b, "\"", 1);
    return rc;
}

/* A record being written: commas between members come from first. */
struct jw {
    struct ctl_conn *k;
    int first[4];
    int depth;
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
    if (buf_append(&w->k->out, s, n) != 0)
        w->k->out_failed = 1;
}

/* The comma and "key": in front of the next member (key NULL: an array
 * element). */
static void jw_key(struct jw *w, const char *key)
{
    if (!w->first[w->depth])
        jw_raw(w, ",", 1);
    w->first[w->depth] = 0;
    if (key) {
        if (json_string(&w->k->out, key, strlen(key)) != 0)
            w->k->out_failed = 1;
        jw_raw(w, ":", 1);
    }
}

static void jw_open(struct jw *w, const char *key, char ch)
{
    if (w->depth > 0 || key)
        jw_key(w, key);
    jw_raw(w, &ch, 1);
    w->first[++w->depth] = 1;
}

static void jw_close(struct jw *w, char ch)
{
    jw_raw(w, &ch, 1);
    w->depth--;
}

static void jw_begin(struct jw *w, struct ctl_conn *k)
{
    memset(w, 0, sizeof *w);
    w->k = k;
    w->first[0] = 1;
    jw_open(w, NULL, '{');
}

static void jw_end(struct jw *w)
{
    jw_close(w, '}');
    jw_raw(w, "\n", 1);
}

static void jw_strn(struct jw *w, const char *key, const char *s, size_t len)
{
    jw_key(w, key);
    if (!s)
        jw_raw(w, "null", 4);
    else if (json_string(&w->k->out, s, len) != 0)
        w->k->out_failed = 1;
}

static void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_strn(w, key, s, s ? strlen(s) : 0);
}

static void jw_int(struct jw *w, const char *key, int64_t v)
{
    char n[24];

    jw_key(w, key);
    snprintf(n, sizeof n, "%" PRId64, v);
    jw_raw(w, n, strlen(n));
}

/* A unix time, or null for 0 (never). */
static void jw_time(struct jw *w, const char *key, int64_t v)
{
    if (v == 0) {
        jw_key(w, key);
        jw_raw(w, "null", 4);
    } else {
        jw_int(w, key, v);
    }
}

static void jw_bool(struct jw *w, const char *key, int v)
{
    jw_key(w, key);
    jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

/* ---- connections: the end of a response ---------------------------------------- */

/* The final line; the connection closes once everything is written.
 * code NULL: {"ok":true}. */
static void finish(struct ctl_conn *k, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct ctl_conn *k, const char *code, const char *fmt, ...)
{
    struct jw w;
    char text[512];
    va_list ap;

    if (k->finished || k->closed)
        return;
    k->finished = 1;
    k->working = 0;
    k->on_drain = NULL;
    jw_begin(&w, k);
    jw_bool(&w, "ok", code == NULL);
    if (code) {
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        jw_str(&w, "code", code);
        jw_str(&w, "error", text);
        log_debug("control #%llu: uid=%u %s: %s: %s", k->id, (unsigned)k->uid,
                  k->cmd ? k->cmd->name : "-", code, text);
    }
    jw_end(&w);
    pump(k);
}

static void on_written(uv_write_t *req, int status);

/* Write what is waiting, one chunk at a time (the timeout counts per
 * chunk, so a slow reader of a long listing is fine, a stuck one is not);
 * when all is written, go on with the command (on_drain) or close. */
static void pump(struct ctl_conn *k)
{
    uv_buf_t ub;
    struct buf tmp;
    void (*next)(struct ctl_conn *);
    int rc;

    if (k->closed || k->writing)
        return;
    if (k->out_failed) {
        log_warn("control #%llu: response too large or out of memory; closing", k->id);
        ctl_close(k);
        return;
    }
    if (k->woff == k->wout.len) {
        if (k->out.len == 0) {
            if (k->finished) {
                linger(k);
            } else if (k->on_drain) {
                next = k->on_drain;
                k->on_drain = NULL;
                next(k);
            }
            return;
        }
        /* out becomes the buffer being written; records go on into the other */
        buf_reset(&k->wout);
        tmp = k->wout;
        k->wout = k->out;
        k->out = tmp;
        k->woff = 0;
    }
    k->wlen = k->wout.len - k->woff < CTL_WRITE_CHUNK ? k->wout.len - k->woff : CTL_WRITE_CHUNK;
    ub = uv_buf_init(k->wout.data + k->woff, (unsigned)k->wlen);
    rc = uv_write(&k->wreq, (uv_stream_t *)&k->pipe, &ub, 1, on_written);
    if (rc != 0) {
        log_debug("control #%llu: write: %s", k->id, uv_strerror(rc));
        ctl_close(k);
        return;
    }
    k->writing = 1;
    uv_timer_start(&k->timer, on_timeout, CTL_TIMEOUT_MS, 0);
}

static void on_written(uv_write_t *req, int status)
{
    struct ctl_conn *k = req->data;

    k->writing = 0;
    if (status < 0) {
        log_debug("control #%llu: write: %s", k->id, uv_strerror(status));
        ctl_close(k);
        return;
    }
    k->woff += k->wlen;
    if (!k->closed)
        uv_timer_start(&k->timer, on_timeout, CTL_TIMEOUT_MS, 0);
    pump(k);
}

/* ---- connections: life cycle --------------------------------------------------- */

static void control_maybe_free(struct control *c)
{
    if (c->closing && !c->pipe_open && c->nconns == 0) {
        free(c->path);
        free(c);
    }
}

static void conn_maybe_free(struct ctl_conn *k)
{
    struct control *c = k->c;

    if (k->handles > 0 || k->busy > 0)
        return;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    c->nconns--;
    buf_free(&k->out);
    buf_free(&k->wout);
    store_batch_free(k->batch);
    free(k->req);
    free(k->args);
    free(k->ids);
    free(k->domain);
    for (size_t i = 0; i < k->nfdomains; i++)
        free(k->fdomains[i]);
    free(k->fdomains);
    free(k);
    control_maybe_free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct ctl_conn *k = h->data;

    k->handles--;
    conn_maybe_free(k);
}

/* End the connection now; callbacks still outstanding find k->closed. */
static void ctl_close(struct ctl_conn *k)
{
    if (k->closed)
        return;
    k->closed = 1;
    k->on_drain = NULL;
    uv_close((uv_handle_t *)&k->pipe, on_conn_closed);
    uv_close((uv_handle_t *)&k->timer, on_conn_closed);
}

/* No request within the timeout, or a write that made no progress. A
 * command waiting for the queue is not timed out: its callbacks always
 * come (store.h). */
static void on_timeout(uv_timer_t *t)
{
    struct ctl_conn *k = t->data;

    if (k->working && !k->writing) {
        uv_timer_start(&k->timer, on_timeout, CTL_TIMEOUT_MS, 0);
        return;
    }
    log_debug("control #%llu: timed out %s", k->id,
              k->writing     ? "writing"
              : k->lingering ? "waiting for the close"
                             : "reading");
    ctl_close(k);
}

/* A store or bounce callback arrived: 1 if the command may go on, 0 if the
 * connection is gone (then k may have been freed: do not touch it). */
static int back(struct ctl_conn *k)
{
    k->busy--;
    if (k->closed) {
        conn_maybe_free(k);
        return 0;
    }
    return 1;
}

/* The response is written: say so (shutdown, the client reads EOF) and
 * read whatever the client sent beyond its request until it closes
 * (bounded by the timeout). Closing with unread bytes would make the
 * kernel reset the connection (unix(7)), and a client could lose the
 * response it has not read yet. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct ctl_conn *k = req->data;

    if (k->closed)
        return;
    if (status < 0 || uv_read_start((uv_stream_t *)&k->pipe, on_alloc, on_read) != 0) {
        ctl_close(k);
        return;
    }
    uv_timer_start(&k->timer, on_timeout, CTL_TIMEOUT_MS, 0);
}

static void linger(struct ctl_conn *k)
{
    if (k->lingering)
        return;
    k->lingering = 1;
    k->reading = 0;
    k->reqlen = 0;
    uv_read_stop((uv_stream_t *)&k->pipe);
    k->sreq.data = k;
    if (uv_shutdown(&k->sreq, (uv_stream_t *)&k->pipe, on_shutdown) != 0)
        ctl_close(k);
}

/* ---- request parsing ------------------------------------------------------------ */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decode %XX in place. -1 on a bad escape or a NUL byte (values are C
 * strings). */
static int pct_decode(char *s)
{
    char *o = s;
    int hi, lo;

    for (; *s; s++) {
        if (*s != '%') {
            *o++ = *s;
            continue;
        }
        if ((hi = hexval(s[1])) < 0 || (lo = hexval(s[2])) < 0 || (hi == 0 && lo == 0))
            return -1;
        *o++ = (char)(hi * 16 + lo);
        s += 2;
    }
    *o = '\0';
    return 0;
}

/* Is word one of the space separated words of list? */
static int in_list(const char *list, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = list; *p;) {
        size_t l = strcspn(p, " ");
        if (l == n && strncmp(p, word, n) == 0)
            return 1;
        p += l;
        p += *p == ' ';
    }
    return 0;
}

static const char *arg(const struct ctl_conn *k, const char *key)
{
    for (size_t i = 0; i < k->nargs; i++)
        if (strcmp(k->args[i].key, key) == 0)
            return k->args[i].value;
    return NULL;
}

/* A non-negative decimal integer. */
static int parse_num(const char *s, int64_t *v)
{
    int64_t n = 0;

    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > (INT64_MAX - (*s - '0')) / 10)
            return -1;
        n = n * 10 + (*s - '0');
    }
    *v = n;
    return 0;
}

/* "1" or "0" (a flag such as all=1, held=1); -1 otherwise. */
static int parse_flag(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, "1") == 0)
        return 1;
    if (strcmp(s, "0") == 0)
        return 0;
    return -1;
}

/* The domain argument into k->domain: lower case, without a trailing dot;
 * a leading dot means the domains below it as well. 0, or -1 after
 * answering usage. */
static int take_domain(struct ctl_conn *k, const char *d)
{
    size_t len;

    if (d[0] == '.') {
        k->subdomains = 1;
        d++;
    }
    len = strlen(d);
    if (len > 0 && d[len - 1] == '.')
        len--;
    if (len == 0 || len > 255 || memchr(d, '/', len)) {
        finish(k, "usage", "bad domain");
        return -1;
    }
    if (!(k->domain = strndup(d, len))) {
        finish(k, "internal", "out of memory");
        return -1;
    }
    for (char *p = k->domain; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return 0;
}

/* ---- records -------------------------------------------------------------------- */

/* A message as `queue` and `show` write it: Postfix's postqueue -j names,
 * plus domain (the first recipient's), attempts (most) and next_attempt
 * (soonest). full adds the envelope details and the body. */
static void write_message(struct ctl_conn *k, const struct store_dmsg *m, int full)
{
    struct jw w;
    int held = 0, attempts = 0;
    int64_t next = INT64_MAX;

    for (size_t i = 0; i < m->nrcpts; i++) {
        held |= m->rcpts[i].state == STORE_RCPT_HELD;
        if (m->rcpts[i].attempts > attempts)
            attempts = m->rcpts[i].attempts;
        if (m->rcpts[i].next_attempt < next)
            next = m->rcpts[i].next_attempt;
    }
    jw_begin(&w, k);
    jw_str(&w, "queue_name", held ? "hold" : "deferred");
    jw_str(&w, "queue_id", m->queue_id);
    jw_int(&w, "arrival_time", m->arrival);
    jw_int(&w, "message_size", (int64_t)m->size);
    jw_str(&w, "sender", m->sender ? m->sender : "");
    jw_str(&w, "domain", m->nrcpts ? m->rcpts[0].domain : "");
    jw_int(&w, "attempts", attempts);
    jw_int(&w, "next_attempt", m->nrcpts ? next : 0);
    jw_open(&w, "recipients", '[');
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct store_drcpt *r = &m->rcpts[i];

        jw_open(&w, NULL, '{');
        jw_str(&w, "address", r->address);
        jw_str(&w, "domain", r->domain);
        jw_str(&w, "delay_reason", r->last_reply ? r->last_reply : "");
        jw_int(&w, "attempts", r->attempts);
        jw_int(&w, "next_attempt", r->next_attempt);
        jw_bool(&w, "held", r->state == STORE_RCPT_HELD);
        jw_close(&w, '}');
    }
    jw_close(&w, ']');
    if (full) {
        jw_str(&w, "envid", m->envid);
        jw_int(&w, "dsn_ret", m->dsn_ret);
        jw_str(&w, "client_addr", m->client_addr);
        jw_str(&w, "client_helo", m->client_helo);
        jw_strn(&w, "body", m->body ? m->body : "", m->body ? (size_t)m->size : 0);
    }
    jw_end(&w);
}

/* ---- queue and show ---------------------------------------------------------------- */

static void list_page(struct ctl_conn *k);

static void on_list_page(struct store_batch *b, int status, void *arg)
{
    struct ctl_conn *k = arg;
    size_t nrcpts = 0, i;
    int more;

    if (!back(k)) {
        store_batch_free(b);
        return;
    }
    if (status != STORE_OK) {
        store_batch_free(b);
        finish(k, "internal", "cannot read the queue");
        return;
    }
    for (i = 0; i < b->n && k->remaining > 0; i++, k->remaining--) {
        write_message(k, &b->msgs[i], 0);
        nrcpts += b->msgs[i].nrcpts;
    }
    /* A short page is the end, unless the store's recipient cap cut it. */
    more =
        b->n > 0 && k->remaining > 0 && (b->n == k->lo.max_msgs || nrcpts >= STORE_LIST_MAX_RCPTS);
    k->lo.after_id = b->last_id;
    store_batch_free(b);
    if (!more) {
        finish(k, NULL, NULL);
        return;
    }
    if (k->out.len + k->wout.len - k->woff > CTL_HIGH_WATER) {
        k->on_drain = list_page; /* let the client catch up first */
        pump(k);
        return;
    }
    pump(k);
    list_page(k);
}

static void list_page(struct ctl_conn *k)
{
    struct store *st = k->c->srv->store;
    int rc;

    k->lo.max_msgs = k->remaining < CTL_PAGE ? (size_t)k->remaining : CTL_PAGE;
    rc = st ? store_list(st, &k->lo, on_list_page, k) : UV_ECANCELED;
    if (rc != 0) {
        finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
        return;
    }
    k->busy++;
}

static void cmd_queue(struct ctl_conn *k)
{
    const char *v;
    int64_t n;
    int held;

    memset(&k->lo, 0, sizeof k->lo);
    k->lo.arrived_before = INT64_MAX;
    k->remaining = INT64_MAX;
    if ((v = arg(k, "domain"))) {
        if (take_domain(k, v) < 0)
            return;
        k->lo.domain = k->domain;
        k->lo.subdomains = k->subdomains;
    }
    k->lo.sender = arg(k, "sender");
    k->lo.recipient = arg(k, "recipient");
    if ((v = arg(k, "older_than"))) {
        if (parse_num(v, &n) < 0) {
            finish(k, "usage", "older_than needs a number of seconds");
            return;
        }
        k->lo.arrived_before = now_unix() - n;
    }
    if ((held = parse_flag(arg(k, "held"))) < 0) {
        finish(k, "usage", "held takes 1 or 0");
        return;
    }
    k->lo.held = held;
    if ((v = arg(k, "limit"))) {
        if (parse_num(v, &n) < 0 || n == 0) {
            finish(k, "usage", "limit needs a positive number");
            return;
        }
        k->remaining = n;
    }
    list_page(k);
}

static void on_show(struct store_batch *b, int status, void *arg)
{
    struct ctl_conn *k = arg;

    if (!back(k)) {
        store_batch_free(b);
        return;
    }
    if (status != STORE_OK)
        finish(k, "internal", "cannot read the queue");
    else if (b->n == 0)
        finish(k, "notfound", "no message %s in the queue", k->ids[0]);
    else {
        write_message(k, &b->msgs[0], 1);
        finish(k, NULL, NULL);
    }
    store_batch_free(b);
}

/* One message by queue id, with the body: reader thread, like a listing. */
static int read_message(struct ctl_conn *k, const char *qid, store_fetch_cb cb)
{
    struct store *st = k->c->srv->store;
    struct store_list_opts o;
    int rc;

    memset(&o, 0, sizeof o);
    o.queue_id = qid;
    o.arrived_before = INT64_MAX;
    o.max_msgs = 1;
    o.with_body = 1;
    rc = st ? store_list(st, &o, cb, k) : UV_ECANCELED;
    if (rc == 0)
        k->busy++;
    return rc;
}

static void cmd_show(struct ctl_conn *k)
{
    int rc;

    if (k->nids != 1) {
        finish(k, "usage", "show needs one id=QUEUE_ID");
        return;
    }
    if ((rc = read_message(k, k->ids[0], on_show)) != 0)
        finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
}

/* ---- summary and domains ---------------------------------------------------------- */

static int start_report(struct ctl_conn *k, const char *domain, int sub, store_report_cb cb)
{
    struct store *st = k->c->srv->store;
    int rc = st ? store_report(st, domain, sub, now_unix(), cb, k) : UV_ECANCELED;

    if (rc == 0)
        k->busy++;
    else
        finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
    return rc;
}

/* The common start of a report callback: 0 (r freed, the client answered
 * or gone) when there is nothing to format. */
static int report_usable(struct ctl_conn *k, struct store_report *r, int status)
{
    if (!back(k)) {
        store_report_free(r);
        return 0;
    }
    if (status != STORE_OK) {
        store_report_free(r);
        finish(k, "internal", "cannot read the queue");
        return 0;
    }
    return 1;
}

static void on_summary(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    struct jw w;

    if (!report_usable(k, r, status))
        return;
    for (size_t i = 0; i < r->n; i++) {
        const struct store_domain_report *d = &r->d[i];

        if (d->messages == 0)
            continue;
        jw_begin(&w, k);
        jw_str(&w, "domain", d->domain);
        jw_int(&w, "messages", d->messages);
        jw_int(&w, "bytes", (int64_t)d->bytes);
        jw_open(&w, "ages", '[');
        for (int b = 0; b < STORE_AGE_BUCKETS; b++)
            jw_int(&w, NULL, d->ages[b]);
        jw_close(&w, ']');
        jw_open(&w, "bucket_limits", '[');
        for (int b = 0; b < STORE_AGE_BUCKETS - 1; b++)
            jw_int(&w, NULL, STORE_AGE_LIMIT(b));
        jw_close(&w, ']');
        jw_end(&w);
    }
    store_report_free(r);
    finish(k, NULL, NULL);
}

static void cmd_summary(struct ctl_conn *k)
{
    start_report(k, NULL, 0, on_summary);
}

/* One `domains` record: d from the queue (NULL for a configured domain
 * without mail or history). */
static void write_domain(struct ctl_conn *k, const char *name, const struct store_domain_report *d)
{
    const struct server *srv = k->c->srv;
    const struct cfg_domain *cd = config_delivery_domain(srv->cfg, name);
    struct jw w;

    jw_begin(&w, k);
    jw_str(&w, "domain", name);
    jw_str(&w, "mode", cd->mode == CFG_MODE_RETRY ? "retry" : "hold");
    jw_str(&w, "route", cd->route ? cd->route : "mx");
    jw_int(&w, "messages", d ? d->messages : 0);
    jw_int(&w, "bytes", d ? (int64_t)d->bytes : 0);
    jw_time(&w, "oldest", d ? d->oldest : 0);
    jw_time(&w, "last_etrn", d ? d->last_etrn : 0);
    jw_time(&w, "last_delivery", d ? d->last_delivery : 0);
    jw_str(&w, "last_error", d ? d->last_error : NULL);
    jw_time(&w, "last_error_at", d ? d->last_error_at : 0);
    jw_time(&w, "next_expiry",
            d && d->oldest ? d->oldest + (int64_t)(cd->queue_lifetime / 1000) : 0);
    jw_int(&w, "held_messages", d ? d->held_messages : 0);
    jw_bool(&w, "configured", config_find_domain(srv->cfg, name) != NULL);
    jw_bool(&w, "flushing", srv->sched && sched_flushing(srv->sched, name));
    jw_end(&w);
}

/* Domains with mail, and configured domains, merged in name order. */
static void on_domains(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct config *cfg;
    size_t i = 0, j = 0;
    int cmp;

    if (!report_usable(k, r, status))
        return;
    cfg = k->c->srv->cfg;
    while (i < r->n || j < cfg->ndomains) {
        if (i < r->n && r->d[i].messages == 0 && !config_find_domain(cfg, r->d[i].domain)) {
            i++; /* history only: no mail, no configuration */
            continue;
        }
        cmp = i == r->n            ? 1
              : j == cfg->ndomains ? -1
                                   : strcmp(r->d[i].domain, cfg->domains[j].name);
        if (cmp < 0) {
            write_domain(k, r->d[i].domain, &r->d[i]);
            i++;
        } else if (cmp > 0) {
            write_domain(k, cfg->domains[j].name, NULL);
            j++;
        } else {
            write_domain(k, r->d[i].domain, &r->d[i]);
            i++;
            j++;
        }
    }
    store_report_free(r);
    finish(k, NULL, NULL);
}

static void cmd_domains(struct ctl_conn *k)
{
    start_report(k, NULL, 0, on_domains);
}

/* ---- flush ------------------------------------------------------------------------ */

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Start a flush (the path ETRN takes: sched_flush) of every domain in the
 * report that has mail not held; for flush id=, only the domains of the
 * named messages. One record per domain started. */
static void on_flush_report(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    struct server *srv;
    struct jw w;
    int64_t n = 0, ndom = 0;

    if (!report_usable(k, r, status))
        return;
    srv = k->c->srv;
    for (size_t i = 0; i < r->n; i++) {
        const struct store_domain_report *d = &r->d[i];
        char *key = d->domain;

        if (d->queued_messages == 0 || (k->fdomains && !bsearch(&key, k->fdomains, k->nfdomains,
                                                                sizeof *k->fdomains, cmp_strp)))
            continue;
        if (srv->sched && !srv->stopping)
            sched_flush(srv->sched, d->domain, "operator flush");
        jw_begin(&w, k);
        jw_str(&w, "domain", d->domain);
        jw_int(&w, "messages", d->queued_messages);
        jw_end(&w);
        n += d->queued_messages;
        ndom++;
    }
    log_info("control: flush by uid %u: %" PRId64 " domains, %" PRId64 " messages",
             (unsigned)k->uid, ndom, n);
    store_report_free(r);
    finish(k, NULL, NULL);
}

/* flush id=: the named messages are now due; their domains are flushed. */
static void on_flush_due(struct store_op_result *r, int status, void *arg)
{
    struct ctl_conn *k = arg;

    if (!back(k)) {
        store_op_result_free(r);
        return;
    }
    if (status != STORE_OK) {
        finish(k, "internal", "cannot update the queue");
    } else if (r->found == 0) {
        finish(k, "notfound", "no such message in the queue");
    } else if (r->ndomains == 0) {
        finish(k, NULL, NULL); /* every recipient is held: nothing to start */
    } else {
        k->fdomains = r->domains; /* sorted by the store */
        k->nfdomains = r->ndomains;
        r->domains = NULL;
        r->ndomains = 0;
        start_report(k, k->nfdomains == 1 ? k->fdomains[0] : NULL, 0, on_flush_report);
    }
    store_op_result_free(r);
}

static int start_op(struct ctl_conn *k, enum store_op op, int all, store_op_cb cb);

static void cmd_flush(struct ctl_conn *k)
{
    const char *d = arg(k, "domain");
    const struct cfg_domain *cd;
    int all = parse_flag(arg(k, "all"));

    if (all < 0 || (d != NULL) + (k->nids > 0) + all != 1) {
        finish(k, "usage", "flush needs domain=DOMAIN, id=QUEUE_ID... or all=1");
        return;
    }
    if (k->nids > 0) {
        start_op(k, STORE_OP_DUE_NOW, 0, on_flush_due);
        return;
    }
    if (d) {
        if (take_domain(k, d) < 0)
            return;
        /* As ETRN does: a relay domain with subdomains = yes takes them along. */
        cd = config_find_domain(k->c->srv->cfg, k->domain);
        if (cd && cd->subdomains && strcmp(cd->name, k->domain) == 0)
            k->subdomains = 1;
    }
    start_report(k, k->domain, k->subdomains, on_flush_report);
}

/* ---- hold, release, delete, requeue ------------------------------------------------ */

static const char *op_record(enum store_op op)
{
    switch (op) {
    case STORE_OP_HOLD:
        return "held";
    case STORE_OP_RELEASE:
        return "released";
    case STORE_OP_DELETE:
        return "deleted";
    case STORE_OP_REQUEUE:
        return "requeued";
    case STORE_OP_DUE_NOW:
        break;
    }
    return "changed";
}

/* The store has applied the change: {"held": n} and so on. Released and
 * requeued mail is due now: retry domains start at once (hold domains
 * still wait for their ETRN). */
static void on_op(struct store_op_result *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    struct server *srv;
    struct jw w;

    if (!back(k)) {
        store_op_result_free(r);
        return;
    }
    srv = k->c->srv;
    if (status != STORE_OK) {
        finish(k, "internal", "cannot update the queue");
    } else if (k->nids > 0 && r->found == 0) {
        finish(k, "notfound", "no such message in the queue");
    } else {
        if ((k->op == STORE_OP_RELEASE || k->op == STORE_OP_REQUEUE) && srv->sched &&
            !srv->stopping)
            for (size_t i = 0; i < r->ndomains; i++)
                sched_queued(srv->sched, r->domains[i]);
        log_info("control: %s by uid %u: %" PRId64 " messages%s%s%s", k->cmd->name,
                 (unsigned)k->uid, r->messages, k->domain ? " of " : "",
                 k->domain ? (k->subdomains ? "." : "") : "", k->domain ? k->domain : "");
        jw_begin(&w, k);
        jw_int(&w, op_record(k->op), r->messages);
        jw_end(&w);
        finish(k, NULL, NULL);
    }
    store_op_result_free(r);
}

/* Hand the change to the store: the ids, or k->domain, or everything. */
static int start_op(struct ctl_conn *k, enum store_op op, int all, store_op_cb cb)
{
    struct store *st = k->c->srv->store;
    struct store_op_opts o;
    int rc;

    memset(&o, 0, sizeof o);
    o.op = op;
    if (k->nids > 0) {
        o.queue_ids = k->ids;
        o.nids = k->nids;
    } else if (k->domain) {
        o.domain = k->domain;
        o.subdomains = k->subdomains;
    } else {
        o.all = all;
    }
    k->op = op;
    rc = st ? store_op(st, &o, cb, k) : UV_ECANCELED;
    if (rc != 0) {
        finish(k, "internal", "cannot update the queue: %s", uv_strerror(rc));
        return rc;
    }
    k->busy++;
    return 0;
}

/* id=..., domain=D or all=1: exactly one of them (requeue alone: all). */
static void run_op(struct ctl_conn *k, enum store_op op, int bare_is_all)
{
    const char *d = arg(k, "domain");
    int all = parse_flag(arg(k, "all"));

    if (all < 0) {
        finish(k, "usage", "all takes 1");
        return;
    }
    if (bare_is_all && !d && k->nids == 0)
        all = 1;
    if ((d != NULL) + (k->nids > 0) + all != 1) {
        finish(k, "usage", "%s needs id=QUEUE_ID..., domain=DOMAIN or all=1", k->cmd->name);
        return;
    }
    if (d && take_domain(k, d) < 0)
        return;
    start_op(k, op, all, on_op);
}

static void cmd_hold(struct ctl_conn *k)
{
    run_op(k, STORE_OP_HOLD, 0);
}

static void cmd_release(struct ctl_conn *k)
{
    run_op(k, STORE_OP_RELEASE, 0);
}

static void cmd_delete(struct ctl_conn *k)
{
    run_op(k, STORE_OP_DELETE, 0);
}

static void cmd_requeue(struct ctl_conn *k)
{
    run_op(k, STORE_OP_REQUEUE, 1);
}

/* ---- bounce ----------------------------------------------------------------------- */

/* Each named message in turn: read it with its body, queue a DSN for every
 * recipient (RFC 3464, 5.0.0 "returned by the operator"; bounce.c skips
 * the null sender and NOTIFY=NEVER), then remove the recipients as failed
 * - only once the DSN is committed, so a crash cannot lose both. */
static void bounce_next(struct ctl_conn *k);

static void on_bounce_removed(int status, void *arg)
{
    struct ctl_conn *k = arg;

    if (status == STORE_OK)
        log_info("%s: removed (returned to the sender by uid %u)", k->batch->msgs[0].queue_id,
                 (unsigned)k->uid);
    if (!back(k))
        return;
    k->count += status == STORE_OK;
    store_batch_free(k->batch);
    k->batch = NULL;
    if (status != STORE_OK) {
        finish(k, "internal", "cannot update the queue");
        return;
    }
    k->idx++;
    bounce_next(k);
}

/* The DSN is committed (or nothing was due): remove the recipients. This
 * goes on even if the operator's connection has gone meanwhile, so that a
 * message whose DSN went out does not stay queued. */
static void on_bounce_queued(void *arg, int status)
{
    struct ctl_conn *k = arg;
    struct store *st = k->c->srv->store;
    const struct store_dmsg *m = &k->batch->msgs[0];
    struct store_update *u = NULL;
    int rc = UV_ECANCELED;

    k->busy--;
    if (status == 0 && st && (u = calloc(m->nrcpts, sizeof *u))) {
        for (size_t i = 0; i < m->nrcpts; i++) {
            u[i].rcpt_id = m->rcpts[i].id;
            u[i].msg_id = m->id;
            u[i].outcome = STORE_FAILED;
        }
        rc = store_update(st, u, m->nrcpts, on_bounce_removed, k);
        free(u);
    }
    if (rc == 0) {
        k->busy++;
        return;
    }
    if (status != 0)
        log_warn("%s: not removed: the delivery status notification could not be queued",
                 m->queue_id);
    else
        log_warn("%s: not removed after its bounce: %s", m->queue_id, uv_strerror(rc));
    if (k->closed) {
        conn_maybe_free(k);
        return;
    }
    finish(k, "internal", "%s: %s", m->queue_id,
           status != 0 ? "the delivery status notification could not be queued"
                       : "cannot update the queue");
}

static void on_bounce_read(struct store_batch *b, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct store_dmsg *m;
    struct bounce_rcpt *br;
    int rc;

    if (!back(k)) {
        store_batch_free(b);
        return;
    }
    if (status != STORE_OK) {
        store_batch_free(b);
        finish(k, "internal", "cannot read the queue");
        return;
    }
    if (b->n == 0 || b->msgs[0].nrcpts == 0) {
        store_batch_free(b); /* gone meanwhile, or never there */
        k->idx++;
        bounce_next(k);
        return;
    }
    k->found++;
    k->batch = b;
    m = &b->msgs[0];
    br = calloc(m->nrcpts, sizeof *br);
    if (!br) {
        finish(k, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        br[i].rcpt = &m->rcpts[i];
        br[i].code = 0;
        br[i].enh = "5.0.0"; /* RFC 3463 X.0.0: other undefined status */
        br[i].text = CTL_BOUNCE_TEXT;
        log_info("%s: to=<%s>, relay=none, delay=%" PRId64 ", dsn=5.0.0, status=bounced (%s)",
                 m->queue_id, m->rcpts[i].address, now_unix() - m->arrival, CTL_BOUNCE_TEXT);
    }
    rc = bounce_send(k->c->srv, m, br, m->nrcpts, DSN_FAILURE, on_bounce_queued, k);
    free(br);
    if (rc != 0) {
        finish(k, "internal", "%s: cannot queue the delivery status notification: %s", m->queue_id,
               uv_strerror(rc));
        return;
    }
    k->busy++;
}

static void bounce_next(struct ctl_conn *k)
{
    struct jw w;
    int rc;

    if (k->idx < k->nids) {
        if ((rc = read_message(k, k->ids[k->idx], on_bounce_read)) != 0)
            finish(k, "internal", "cannot read the queue: %s", uv_strerror(rc));
        return;
    }
    if (k->found == 0) {
        finish(k, "notfound", "no such message in the queue");
        return;
    }
    jw_begin(&w, k);
    jw_int(&w, "bounced", k->count);
    jw_end(&w);
    finish(k, NULL, NULL);
}

static void cmd_bounce(struct ctl_conn *k)
{
    if (k->nids == 0) {
        finish(k, "usage", "bounce needs id=QUEUE_ID...");
        return;
    }
    bounce_next(k);
}

/* ---- stats and reload ------------------------------------------------------------- */

static const char *const counter_names[STATS_NCOUNTERS] = {
    [STATS_RECEIVED] = "received", [STATS_DELIVERED] = "delivered", [STATS_DEFERRED] = "deferred",
    [STATS_BOUNCED] = "bounced",   [STATS_ETRN] = "etrn",
};

static void write_counters(struct jw *w, const uint64_t *counters)
{
    static const enum stats_counter order[] = {STATS_DELIVERED, STATS_DEFERRED, STATS_BOUNCED,
                                               STATS_ETRN, STATS_RECEIVED};

    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        jw_int(w, counter_names[order[i]], (int64_t)counters[order[i]]);
}

struct stats_walker {
    struct ctl_conn *k;
    int has_totals; /* counters kept under "": they go into the last record */
};

static void stats_record(void *arg, const char *domain, const uint64_t *counters)
{
    struct stats_walker *sw = arg;
    struct jw w;

    if (!domain[0]) {
        sw->has_totals = 1;
        return;
    }
    jw_begin(&w, sw->k);
    jw_str(&w, "domain", domain);
    write_counters(&w, counters);
    jw_end(&w);
}

static void stats_totals(void *arg, const char *domain, const uint64_t *counters)
{
    struct jw *w = arg;

    if (!domain[0])
        write_counters(w, counters);
}

static void on_stats(struct store_report *r, int status, void *arg)
{
    struct ctl_conn *k = arg;
    const struct server *srv;
    struct stats_walker sw = {k, 0};
    struct jw w;

    if (!report_usable(k, r, status))
        return;
    srv = k->c->srv;
    stats_walk(srv->stats, stats_record, &sw);
    jw_begin(&w, k);
    jw_str(&w, "domain", "");
    jw_int(&w, "queue_messages", r->messages);
    jw_int(&w, "queue_bytes", (int64_t)r->bytes);
    jw_int(&w, "connections", srv->nsessions);
    jw_int(&w, "uptime", now_unix() - k->c->started);
    if (sw.has_totals)
        stats_walk(srv->stats, stats_totals, &w);
    jw_end(&w);
    store_report_free(r);
    finish(k, NULL, NULL);
}

static void cmd_stats(struct ctl_conn *k)
{
    start_report(k, "", 0, on_stats); /* "": the queue's totals only */
}

static void cmd_reload(struct ctl_conn *k)
{
    struct server *srv = k->c->srv;
    struct jw w;

    if (!srv->reload || srv->stopping) {
        finish(k, "internal", "reload is not available now");
        return;
    }
    log_info("control: reload by uid %u", (unsigned)k->uid);
    srv->reload(srv);
    jw_begin(&w, k);
    jw_bool(&w, "reloaded", 1);
    jw_end(&w);
    finish(k, NULL, NULL);
}

/* ---- dispatch --------------------------------------------------------------------- */

static const struct ctl_cmd commands[] = {
    {"queue", 0, "domain sender recipient older_than held limit", cmd_queue},
    {"summary", 0, "", cmd_summary},
    {"domains", 0, "", cmd_domains},
    {"show", 0, "id", cmd_show},
    {"stats", 0, "", cmd_stats},
    {"flush", 0, "domain id all", cmd_flush},
    {"hold", 1, "id domain all", cmd_hold},
    {"release", 1, "id domain all", cmd_release},
    {"delete", 1, "id domain all", cmd_delete},
    {"bounce", 1, "id", cmd_bounce},
    {"requeue", 1, "id domain all", cmd_requeue},
    {"reload", 1, "", cmd_reload},
};

/* Parse the request line (in k->req, NUL-terminated, without its LF) and
 * run the command, or answer usage / denied. */
static void dispatch(struct ctl_conn *k, char *line)
{
    char *save = NULL, *word, *eq;
    const char *name;
    size_t n = 1, i;

    for (char *p = line; *p; p++)
        n += *p == ' ';
    k->args = calloc(n, sizeof *k->args);
    k->ids = calloc(n, sizeof *k->ids);
    if (!k->args || !k->ids) {
        finish(k, "internal", "out of memory");
        return;
    }
    word = strtok_r(line, " ", &save);
    if (!word || pct_decode(word) < 0) {
        finish(k, "usage", "empty request");
        return;
    }
    name = word;
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            k->cmd = &commands[i];
    if (!k->cmd) {
        finish(k, "usage", "unknown command");
        return;
    }
    /* Refused before the arguments are looked at: a denied user learns
     * nothing from the answer. */
    if (k->cmd->root_only && !k->privileged) {
        log_info("control: %s refused to uid %u (pid %d)", k->cmd->name, (unsigned)k->uid,
                 (int)k->pid);
        finish(k, "denied", "%s is for root and the relayd user only", k->cmd->name);
        return;
    }
    while ((word = strtok_r(NULL, " ", &save))) {
        if (!(eq = strchr(word, '='))) {
            finish(k, "usage", "expected key=value");
            return;
        }
        *eq = '\0';
        if (pct_decode(word) < 0 || pct_decode(eq + 1) < 0) {
            finish(k, "usage", "bad percent-encoding");
            return;
        }
        if (!in_list(k->cmd->keys, word)) {
            finish(k, "usage", "%s takes no %.64s", k->cmd->name, word);
            return;
        }
        if (strcmp(word, "id") == 0) {
            k->ids[k->nids++] = eq + 1;
        } else if (arg(k, word)) {
            finish(k, "usage", "%s given twice", word);
            return;
        }
        k->args[k->nargs].key = word;
        k->args[k->nargs++].value = eq + 1;
    }
    log_debug("control #%llu: uid=%u %s", k->id, (unsigned)k->uid, k->cmd->name);
    k->working = 1;
    k->cmd->run(k);
}

/* ---- reading the request ---------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct ctl_conn *k = h->data;

    (void)suggested;
    if (!k->req)
        k->req = malloc(CTL_MAX_REQUEST + 3);
    /* room for the line, CR, LF; one byte more to see that it is too long */
    b->base = k->req ? k->req + k->reqlen : NULL;
    b->len = k->req ? CTL_MAX_REQUEST + 2 - k->reqlen : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ctl_conn *k = s->data;
    char *nl;

    (void)b;
    if (k->closed)
        return;
    if (k->lingering) {
        k->reqlen = 0; /* discarded */
        if (nread < 0)
            ctl_close(k);
        return;
    }
    if (!k->reading)
        return;
    if (nread == 0)
        return;
    if (nread < 0 && (nread != UV_EOF || k->reqlen == 0)) {
        ctl_close(k); /* gone before asking anything */
        return;
    }
    if (nread > 0)
        k->reqlen += (size_t)nread;
    nl = k->req ? memchr(k->req, '\n', k->reqlen) : NULL;
    if (!nl && nread > 0 && k->reqlen < CTL_MAX_REQUEST + 2)
        return; /* more to come */
    k->reading = 0;
    uv_read_stop(s);
    if (!nl && nread > 0) {
        finish(k, "usage", "request longer than %d bytes", CTL_MAX_REQUEST);
        return;
    }
    if (!nl) /* EOF without LF: the request is what came */
        nl = k->req + k->reqlen;
    if (memchr(k->req, '\0', (size_t)(nl - k->req))) {
        finish(k, "usage", "NUL byte in the request");
        return;
    }
    *nl = '\0';
    if (nl > k->req && nl[-1] == '\r')
        *--nl = '\0';
    if ((size_t)(nl - k->req) > CTL_MAX_REQUEST) {
        finish(k, "usage", "request longer than %d bytes", CTL_MAX_REQUEST);
        return;
    }
    dispatch(k, k->req);
}

/* The peer's credentials, from the kernel (SO_PEERCRED, unix(7)). */
static int peer_cred(struct ctl_conn *k)
{
    struct ucred uc;
    socklen_t len = sizeof uc;
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)&k->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0 || len != sizeof uc)
        return -1;
    k->uid = uc.uid;
    k->pid = uc.pid;
    /* uid 0 and the user relayd runs as (after dropping privileges) */
    k->privileged = uc.uid == 0 || uc.uid == geteuid();
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct control *c = server->data;
    struct ctl_conn *k;
    int rc;

    if (status < 0) {
        log_warn("control: accept: %s", uv_strerror(status));
        return;
    }
    k = calloc(1, sizeof *k);
    if (!k) {
        log_warn("control: out of memory for a connection");
        return; /* it stays in the backlog until memory is back */
    }
    k->c = c;
    k->id = ++c->next_id;
    k->uid = (uid_t)-1;
    buf_init(&k->out, CTL_OUT_MAX);
    buf_init(&k->wout, CTL_OUT_MAX);
    k->pipe.data = k->timer.data = k->wreq.data = k;
    uv_pipe_init(server->loop, &k->pipe, 0);
    uv_timer_init(server->loop, &k->timer);
    k->handles = 2;
    k->next = c->conns;
    if (c->conns)
        c->conns->prev = k;
    c->conns = k;
    c->nconns++;
    if ((rc = uv_accept(server, (uv_stream_t *)&k->pipe)) != 0) {
        log_warn("control: accept: %s", uv_strerror(rc));
        ctl_close(k);
        return;
    }
    uv_timer_start(&k->timer, on_timeout, CTL_TIMEOUT_MS, 0);
    if (peer_cred(k) < 0) {
        log_warn("control: cannot read the peer's credentials: %s", strerror(errno));
        ctl_close(k);
        return;
    }
    if (c->nconns > CTL_MAX_CONNS) {
        finish(k, "internal", "too many control connections; try again");
        return;
    }
    k->reading = 1;
    if ((rc = uv_read_start((uv_stream_t *)&k->pipe, on_alloc, on_read)) != 0) {
        log_warn("control: read: %s", uv_strerror(rc));
        ctl_close(k);
    }
}

/* ---- the listening socket ------------------------------------------------------- */

/* Make the directory that holds the socket if it is missing, with its
 * parents (a --prefix build puts it under PREFIX/var/run, which a fresh
 * machine does not have). */
static int make_dir(const char *path, char *err, size_t errlen)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *slash, *p;

    snprintf(dir, sizeof dir, "%s", path);
    slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (p = strchr(dir + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* A socket file already at path: another relayd's (it answers: refuse to
 * start), or one left by a relayd that is gone (nobody listens: remove
 * it). Anything that is not a socket is not ours to remove. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    struct stat sb;
    int fd, rc, e;

    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(sb.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", path);
        return -1;
    }
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN) {
        snprintf(err, errlen, "another relayd is answering on %s", path);
        return -1;
    }
    if (e != ECONNREFUSED) {
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove the stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    log_info("control: removed the stale socket %s", path);
    return 0;
}

/* Who owns the socket: the relayd user (we are root now, about to drop to
 * it) and control_socket_group, else that user's primary group. */
static int socket_owner(const struct config *cfg, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    struct passwd *pw;
    struct group *gr;

    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (cfg->user && geteuid() == 0) {
        if (!(pw = getpwnam(cfg->user))) {
            snprintf(err, errlen, "unknown user %s", cfg->user);
            return -1;
        }
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    }
    if (cfg->control_socket_group) {
        if (!(gr = getgrnam(cfg->control_socket_group))) {
            snprintf(err, errlen, "control_socket_group: unknown group %s",
                     cfg->control_socket_group);
            return -1;
        }
        *gid = gr->gr_gid;
    }
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct control *c = h->data;

    c->pipe_open = 0;
    control_maybe_free(c);
}

int control_open(struct server *srv, struct control **out, char *err, size_t errlen)
{
    const struct config *cfg = srv->cfg;
    struct control *c = NULL;
    struct stat sb;
    uid_t uid;
    gid_t gid;
    int rc, bound = 0;

    *out = NULL;
    if (!cfg->control_socket)
        return 0; /* control_socket = (empty): none */
    if (strlen(cfg->control_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen, "control_socket %s: path too long for a unix socket",
                 cfg->control_socket);
        return -1;
    }
    if (socket_owner(cfg, &uid, &gid, err, errlen) < 0 ||
        make_dir(cfg->control_socket, err, errlen) < 0 ||
        clear_stale(cfg->control_socket, err, errlen) < 0)
        return -1;
    c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(cfg->control_socket))) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return -1;
    }
    c->srv = srv;
    c->started = now_unix();
    c->pipe.data = c;
    if ((rc = uv_pipe_init(srv->loop, &c->pipe, 0)) != 0) {
        snprintf(err, errlen, "control socket: %s", uv_strerror(rc));
        free(c->path);
        free(c);
        return -1;
    }
    c->pipe_open = 1;
    if ((rc = uv_pipe_bind(&c->pipe, c->path)) != 0) {
        snprintf(err, errlen, "cannot bind %s: %s", c->path, uv_strerror(rc));
        goto fail;
    }
    bound = 1;
    /* Not yet listening: nobody can connect before mode and owner are right. */
    if (chmod(c->path, (mode_t)cfg->control_socket_mode) != 0 ||
        ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(c->path, uid, gid) != 0) ||
        lstat(c->path, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
        goto fail;
    }
    c->dev = sb.st_dev;
    c->ino = sb.st_ino;
    if ((rc = uv_listen((uv_stream_t *)&c->pipe, CTL_BACKLOG, on_connection)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", c->path, uv_strerror(rc));
        goto fail;
    }
    log_info("control: listening on %s (mode %04o)", c->path, cfg->control_socket_mode);
    *out = c;
    return 0;
fail:
    if (bound)
        unlink(c->path);
    c->closing = 1;
    uv_close((uv_handle_t *)&c->pipe, on_listener_closed);
    return -1;
}

void control_close(struct control *c)
{
    struct stat sb;
    struct ctl_conn *k, *next;

    if (!c || c->closing)
        return;
    c->closing = 1;
    /* Remove the socket if it is still the one we made (a new relayd may
     * have replaced it); after dropping privileges this may be refused,
     * and the next start removes it as stale. */
    if (lstat(c->path, &sb) == 0 && sb.st_dev == c->dev && sb.st_ino == c->ino &&
        unlink(c->path) != 0)
        log_debug("control: cannot remove %s: %s", c->path, strerror(errno));
    uv_close((uv_handle_t *)&c->pipe, on_listener_closed);
    for (k = c->conns; k; k = next) {
        next = k->next;
        ctl_close(k);
    }
}
