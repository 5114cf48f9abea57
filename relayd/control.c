/*
 * control: the operators' unix socket (etrnctl queue, flush, hold, ...).
 * Owns the listening socket and its connections: one request line per
 * connection, JSON lines back, then close. Who may do what comes from the
 * peer's credentials. The commands themselves are in control_cmd.c (queue
 * work through store.c's threads, flushes through sched.c, bounces through
 * bounce.c): nothing here touches SQLite or SMTP, and the loop never waits
 * on the disk.
 *
 * The protocol (brief CONTROL-PROTO.md; etrnctl(8) is its client; the
 * request line's framing and words are lib/ctl_request.c, fuzzed):
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
#define LOG_SERVICE "control" /* log lines are tagged relayd/control */
#include "control.h"
#include "control_int.h"

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

#include "buf.h"
#include "config.h"
#include "ctl_request.h"
#include "log.h"
#include "server.h"
#include "store.h"

#define CTL_MAX_CONNS   32    /* connections served at once */
#define CTL_TIMEOUT_MS  10000 /* for the request, and for each write */
#define CTL_BACKLOG     16
#define CTL_WRITE_CHUNK (64 * 1024)       /* bytes per uv_write */
#define CTL_OUT_MAX     ((size_t)1 << 31) /* one response record (show of a big body) */

static void on_timeout(uv_timer_t *t);
static void linger(struct ctl_conn *k);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

int64_t ctl_now_unix(void)
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

/* Is p (n bytes, n >= 1) the start of a well-formed UTF-8 sequence that
 * needs more bytes than n? (RFC 3629 §4, as utf8_len checks it.) */
static int utf8_incomplete(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t need = c >= 0xc2 && c <= 0xdf   ? 2
                  : c >= 0xe0 && c <= 0xef ? 3
                  : c >= 0xf0 && c <= 0xf4 ? 4
                                           : 0;

    if (need == 0 || n >= need)
        return 0;
    if (n > 1 &&
        ((p[1] & 0xc0) != 0x80 || (c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) ||
         (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f)))
        return 0;
    return n < 3 || (p[2] & 0xc0) == 0x80;
}

/* Append s (len bytes) JSON-escaped, without the quotes (RFC 8259 §7):
 * quotes, backslash and control characters escaped, valid UTF-8 as it is,
 * any other byte as \u00XX. Runs of plain bytes go in one append. With
 * more set, s is a piece of a longer string: a UTF-8 sequence cut at its
 * end is left for the next piece, so it is not taken for bad bytes.
 * *used says how much of s went out. 0 or a buf error. */
static int json_escape(struct buf *b, const char *s, size_t len, int more, size_t *used)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0, l;
    char esc[8];
    int rc = 0;

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
        if (more && c >= 0x80 && utf8_incomplete(p + i, len - i))
            break;
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
    *used = i;
    return rc;
}

/* Append s (len bytes) as a JSON string, quotes and all. 0 or a buf error. */
static int json_string(struct buf *b, const char *s, size_t len)
{
    size_t used;
    int rc = buf_append(b, "\"", 1);

    if (rc == 0)
        rc = json_escape(b, s, len, 0, &used);
    if (rc == 0)
        rc = buf_append(b, "\"", 1);
    return rc;
}

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

void jw_open(struct jw *w, const char *key, char ch)
{
    if (w->depth > 0 || key)
        jw_key(w, key);
    jw_raw(w, &ch, 1);
    w->first[++w->depth] = 1;
}

void jw_close(struct jw *w, char ch)
{
    jw_raw(w, &ch, 1);
    w->depth--;
}

void jw_begin(struct jw *w, struct ctl_conn *k)
{
    memset(w, 0, sizeof *w);
    w->k = k;
    w->first[0] = 1;
    jw_open(w, NULL, '{');
}

void jw_end(struct jw *w)
{
    jw_close(w, '}');
    jw_raw(w, "\n", 1);
}

void jw_strn(struct jw *w, const char *key, const char *s, size_t len)
{
    jw_key(w, key);
    if (!s)
        jw_raw(w, "null", 4);
    else if (json_string(&w->k->out, s, len) != 0)
        w->k->out_failed = 1;
}

/* A string member written in pieces (a message body read chunk by
 * chunk): jw_str_open, jw_str_part as often as needed, jw_str_close. */
void jw_str_open(struct jw *w, const char *key)
{
    jw_key(w, key);
    jw_raw(w, "\"", 1);
}

size_t jw_str_part(struct jw *w, const char *s, size_t len, int more)
{
    size_t used = 0;

    if (json_escape(&w->k->out, s, len, more, &used) != 0)
        w->k->out_failed = 1;
    return used;
}

void jw_str_close(struct jw *w)
{
    jw_raw(w, "\"", 1);
}

void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_strn(w, key, s, s ? strlen(s) : 0);
}

void jw_int(struct jw *w, const char *key, int64_t v)
{
    char n[24];

    jw_key(w, key);
    snprintf(n, sizeof n, "%" PRId64, v);
    jw_raw(w, n, strlen(n));
}

/* A unix time, or null for 0 (never). */
void jw_time(struct jw *w, const char *key, int64_t v)
{
    if (v == 0) {
        jw_key(w, key);
        jw_raw(w, "null", 4);
    } else {
        jw_int(w, key, v);
    }
}

void jw_bool(struct jw *w, const char *key, int v)
{
    jw_key(w, key);
    jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

/* ---- connections: the end of a response ---------------------------------------- */

/* The final line; the connection closes once everything is written.
 * code NULL: {"ok":true}. */
void ctl_finish(struct ctl_conn *k, const char *code, const char *fmt, ...)
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
    ctl_pump(k);
}

static void on_written(uv_write_t *req, int status);

/* Write what is waiting, one chunk at a time (the timeout counts per
 * chunk, so a slow reader of a long listing is fine, a stuck one is not);
 * when all is written, go on with the command (on_drain) or close. */
void ctl_pump(struct ctl_conn *k)
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
    ctl_pump(k);
}

/* ---- connections: life cycle --------------------------------------------------- */

static void control_maybe_free(struct control *c)
{
    if (c->closing && !c->pipe_open && c->nconns == 0) {
        free(c->path);
        free(c);
    }
}

void ctl_conn_maybe_free(struct ctl_conn *k)
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
    store_backup_free(k->backup);
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
    ctl_conn_maybe_free(k);
}

/* End the connection now; callbacks still outstanding find k->closed. */
void ctl_close(struct ctl_conn *k)
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
int ctl_back(struct ctl_conn *k)
{
    k->busy--;
    if (k->closed) {
        ctl_conn_maybe_free(k);
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

const char *ctl_arg_value(const struct ctl_conn *k, const char *key)
{
    for (size_t i = 0; i < k->nargs; i++)
        if (strcmp(k->args[i].key, key) == 0)
            return k->args[i].value;
    return NULL;
}

/* A non-negative decimal integer. */
int ctl_parse_num(const char *s, int64_t *v)
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
int ctl_parse_flag(const char *s)
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
int ctl_take_domain(struct ctl_conn *k, const char *d)
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
        ctl_finish(k, "usage", "bad domain");
        return -1;
    }
    if (!(k->domain = strndup(d, len))) {
        ctl_finish(k, "internal", "out of memory");
        return -1;
    }
    for (char *p = k->domain; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return 0;
}

/* Parse the request line (in k->req, NUL-terminated, without its LF) and
 * run the command, or answer usage / denied. */
static void dispatch(struct ctl_conn *k, char *line)
{
    char *pos = line, *word, *key, *value;
    const char *name;
    size_t n = ctl_request_max_words(line);

    k->args = calloc(n, sizeof *k->args);
    k->ids = calloc(n, sizeof *k->ids);
    if (!k->args || !k->ids) {
        ctl_finish(k, "internal", "out of memory");
        return;
    }
    word = ctl_request_word(&pos);
    if (!word || ctl_request_decode(word) < 0) {
        ctl_finish(k, "usage", "empty request");
        return;
    }
    name = word;
    k->cmd = ctl_cmd_find(name);
    if (!k->cmd) {
        ctl_finish(k, "usage", "unknown command");
        return;
    }
    /* Refused before the arguments are looked at: a denied user learns
     * nothing from the answer. */
    if (k->cmd->root_only && !k->privileged) {
        log_info("control: %s refused to uid %u (pid %d)", k->cmd->name, (unsigned)k->uid,
                 (int)k->pid);
        ctl_finish(k, "denied", "%s is for root and the relayd user only", k->cmd->name);
        return;
    }
    while ((word = ctl_request_word(&pos))) {
        enum ctl_request_arg rc = ctl_request_arg(word, &key, &value);
        if (rc == CTL_REQUEST_ARG_NO_EQUALS) {
            ctl_finish(k, "usage", "expected key=value");
            return;
        }
        if (rc != CTL_REQUEST_ARG_OK) {
            ctl_finish(k, "usage", "bad percent-encoding");
            return;
        }
        if (!ctl_request_in_list(k->cmd->keys, key)) {
            ctl_finish(k, "usage", "%s takes no %.64s", k->cmd->name, key);
            return;
        }
        if (strcmp(key, "id") == 0) {
            k->ids[k->nids++] = value;
        } else if (ctl_arg_value(k, key)) {
            ctl_finish(k, "usage", "%s given twice", key);
            return;
        }
        k->args[k->nargs].key = key;
        k->args[k->nargs++].value = value;
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
        k->req = malloc(CTL_REQUEST_MAX + 3);
    /* room for the line, CR, LF; one byte more to see that it is too long */
    b->base = k->req ? k->req + k->reqlen : NULL;
    b->len = k->req ? CTL_REQUEST_MAX + 2 - k->reqlen : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ctl_conn *k = s->data;
    enum ctl_request_frame frame;
    size_t len;

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
    frame = k->req ? ctl_request_frame(k->req, k->reqlen, nread < 0, &len) : CTL_REQUEST_MORE;
    if (frame == CTL_REQUEST_MORE && nread > 0)
        return; /* more to come */
    k->reading = 0;
    uv_read_stop(s);
    if (frame == CTL_REQUEST_NUL) {
        ctl_finish(k, "usage", "NUL byte in the request");
        return;
    }
    if (frame != CTL_REQUEST_LINE) {
        ctl_finish(k, "usage", "request longer than %d bytes", CTL_REQUEST_MAX);
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
        ctl_finish(k, "internal", "too many control connections; try again");
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
    mode_t um;
    int rc, bound = 0;

    *out = NULL;
    if (!cfg->control_socket)
        return 0; /* control_socket = (empty): none */
    if (strlen(cfg->control_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen, "control_socket %s: path too long for a unix socket",
                 cfg->control_socket);
        return -1;
    }
    /* relayd's umask (027, main) would close the directories to the
     * socket's group; they are made 0755 as documented. Start-up runs
     * before any other thread exists, so the process-wide umask is ours. */
    um = umask(022);
    rc = make_dir(cfg->control_socket, err, errlen);
    umask(um);
    if (rc < 0 || socket_owner(cfg, &uid, &gid, err, errlen) < 0 ||
        clear_stale(cfg->control_socket, err, errlen) < 0)
        return -1;
    c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(cfg->control_socket))) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return -1;
    }
    c->srv = srv;
    c->started = ctl_now_unix();
    c->pipe.data = c;
    if ((rc = uv_pipe_init(srv->loop, &c->pipe, 0)) != 0) {
        snprintf(err, errlen, "control socket: %s", uv_strerror(rc));
        free(c->path);
        free(c);
        return -1;
    }
    c->pipe_open = 1;
    /* bind(2) makes the socket with the mode the umask leaves: set it so
     * that the mode comes out right, instead of a chmod by name as root that
     * a symbolic link swapped in meanwhile would redirect. */
    um = umask(~(mode_t)cfg->control_socket_mode & 0777);
    rc = uv_pipe_bind(&c->pipe, c->path);
    umask(um);
    if (rc != 0) {
        snprintf(err, errlen, "cannot bind %s: %s", c->path, uv_strerror(rc));
        goto fail;
    }
    bound = 1;
    /* Not yet listening: nobody can connect before mode and owner are right.
     * lchown: never the target of a symbolic link. */
    if (((uid != (uid_t)-1 || gid != (gid_t)-1) && lchown(c->path, uid, gid) != 0) ||
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
