/*
 * ctl_cmd: the operator's commands over relayd's control socket: dispatch,
 * and what every command shares (JSON field access, the text table, the
 * call through ctl_client.c, times and counts). Each command turns its
 * arguments into one control request and prints the records as text or,
 * with --json, the lines exactly as relayd sent them. It never opens the queue.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "ctl_cmd.h"

/* ---- JSON field access ------------------------------------------------------------------ */

const char *ctl_jstr(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || v == NULL ||
        json_object_is_type(v, json_type_null))
        return NULL;
    return json_object_get_string(v);
}

const char *ctl_jstr0(struct json_object *o, const char *key)
{
    const char *s = ctl_jstr(o, key);
    return s ? s : "";
}

/* An integer field; -1 when missing or null. */
int64_t ctl_jint(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || v == NULL ||
        json_object_is_type(v, json_type_null))
        return -1;
    return json_object_get_int64(v);
}

int ctl_jbool(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) && v != NULL && json_object_get_boolean(v);
}

/* Printable: control characters in text from the queue (a sender, a reply)
 * must not reach the operator's terminal. */
void ctl_put_clean(FILE *fp, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, fp);
}

/* ---- a small aligned text table ------------------------------------------------------------ */

void ctl_table_init(struct table *t, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
}

int ctl_table_row(struct table *t, const char *const *cols)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
        if (c == NULL)
            return -1;
        t->cells = c;
        t->cap = cap;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        t->cells[t->nrows * t->ncols + i] = strdup(cols[i] ? cols[i] : "");
        if (t->cells[t->nrows * t->ncols + i] == NULL)
            return -1;
        for (char *p = t->cells[t->nrows * t->ncols + i]; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    t->nrows++;
    return 0;
}

void ctl_table_print(const struct table *t, FILE *fp, size_t width)
{
    size_t w[TABLE_MAX_COLS] = {0}, total = 0;
    int shown[TABLE_MAX_COLS], last_shown = -1;

    for (size_t c = 0; c < t->ncols; c++) {
        shown[c] = width == 0 || !t->wide_only[c];
        for (size_t r = 0; shown[c] && r < t->nrows; r++) {
            size_t l = strlen(t->cells[r * t->ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
        if (shown[c]) {
            total += w[c] + (last_shown >= 0 ? 2 : 0);
            last_shown = (int)c;
        }
    }
    /* Cut the widest shrinkable column, one column at a time, down to its
     * header's width at least, until the rows fit. */
    while (width > 0 && total > width) {
        int widest = -1;
        for (size_t c = 0; c < t->ncols; c++)
            if (shown[c] && t->shrink[c] && w[c] > strlen(t->cells[c]) && w[c] > 4 &&
                (widest < 0 || w[c] > w[widest]))
                widest = (int)c;
        if (widest < 0)
            break;
        w[widest]--;
        total--;
    }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            int last = (int)c == last_shown;
            size_t len = strlen(s);
            if (!shown[c])
                continue;
            if (len > w[c]) {
                fprintf(fp, "%.*s~", (int)w[c] - 1, s);
                len = w[c];
            } else if (t->right[c]) {
                fprintf(fp, "%*s", (int)w[c], s);
                len = w[c];
            } else {
                fputs(s, fp);
            }
            if (last)
                break;
            fprintf(fp, "%*s", (int)(w[c] - len + 2), "");
        }
        fputc('\n', fp);
    }
}

void ctl_table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- shared plumbing ------------------------------------------------------------------------ */

/* Print every record as relayd sent it (--json) or keep it for later. */
int ctl_keep_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;

    cx->count++;
    if (cx->o->json && cx->mode == 0) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    if (cx->all != NULL)
        json_object_array_add(cx->all, json_object_get(rec));
    return 0;
}

int ctl_call(struct ctx *cx, const struct ctl_client_req *req, ctl_client_record_cb cb)
{
    int st = ctl_client_call(cx->o->socket, req, CTL_TIMEOUT, cx->o->verbose, cb, cx, NULL, 0);
    fflush(stdout);
    return st;
}

/* Build and send a request with no arguments beyond the command. */
int ctl_simple_call(struct ctx *cx, const char *command, ctl_client_record_cb cb)
{
    struct ctl_client_req req;
    int st;

    if (ctl_client_req_init(&req, command) != 0) {
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = ctl_call(cx, &req, cb);
    ctl_client_req_free(&req);
    return st;
}

void ctl_fmt_time(int64_t t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t < 0 || localtime_r(&tt, &tm) == NULL)
        snprintf(out, outlen, "-");
    else
        strftime(out, outlen, "%a %b %e %H:%M:%S", &tm);
}

/* "-" for a missing time, else how long ago ("5m") or, for a future time,
 * "in 5m". */
void ctl_fmt_rel(const struct ctx *cx, int64_t t, char *out, size_t outlen)
{
    char a[32];

    if (t < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    if ((time_t)t > cx->now) {
        etrnctl_format_age((double)((time_t)t - cx->now), a, sizeof(a));
        snprintf(out, outlen, "in %s", a);
    } else {
        etrnctl_format_age((double)(cx->now - (time_t)t), a, sizeof(a));
        snprintf(out, outlen, "%s ago", a);
    }
}

void ctl_fmt_i64(int64_t v, char *out, size_t outlen)
{
    if (v < 0)
        snprintf(out, outlen, "-");
    else
        snprintf(out, outlen, "%" PRId64, v);
}

int ctl_usage_error(void (*usage)(FILE *), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int ctl_usage_error(void (*usage)(FILE *), const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    etrnctl_warn("%s", msg);
    usage(stderr);
    return EX_USAGE;
}

/* A queue id as relayd makes them: letters and digits only. Checked here so
 * a typo is a usage error rather than a request relayd has to refuse. */
int ctl_valid_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= 'a' && s[n] <= 'z')))
            return 0;
    return n > 0 && n <= 64;
}

double ctl_quota_percent(struct json_object *rec)
{
    int64_t qm = ctl_jint(rec, "quota_messages"), qb = ctl_jint(rec, "quota_bytes");
    double pct = -1;

    if (qm > 0)
        pct = 100.0 * (double)ctl_jint(rec, "quota_used_messages") / (double)qm;
    if (qb > 0) {
        double p = 100.0 * (double)ctl_jint(rec, "quota_used_bytes") / (double)qb;
        if (p > pct)
            pct = p;
    }
    return pct;
}

int ctl_no_args(struct ctx *cx, int argc, char **argv, void (*usage)(FILE *))
{
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (!etrnctl_global_opt(c, optarg, cx->o, usage)) {
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind < argc)
        return ctl_usage_error(usage, "unexpected argument: %s", argv[optind]);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static const char *const commands[] = {
    "queue",  "summary", "domains", "show",   "flush", "hold",  "release", "delete",
    "bounce", "requeue", "stats",   "reload", "check", "mailq", "qshape",  "backup"};

int ctl_cmd_known(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(name, commands[i]) == 0)
            return 1;
    return 0;
}

void ctl_cmd_usage(FILE *fp)
{
    fprintf(
        fp,
        "  queue [DOMAIN] [--domain D] [--sender S] [--recipient R] [--older-than T]\n"
        "        [--held] [--limit N] [--ids-only | --count]   list messages (mailq)\n"
        "  summary [--senders]          messages per domain (or sender domain) and age (qshape)\n"
        "  domains                      per domain: mode, route, queue, last ETRN/delivery/error\n"
        "  show [--raw] [--headers] [--body] QUEUEID\n"
        "                               envelope and message (escaped on a terminal)\n"
        "  flush DOMAIN | --id QUEUEID | --all\n"
        "                               start delivery now (as an ETRN would)\n"
        "  hold QUEUEID... | - | ALL | --domain D | --held      keep from delivery\n"
        "  release QUEUEID... | - | ALL | --domain D | --held   undo hold\n"
        "  delete QUEUEID... | - | ALL | --domain D | --held    remove without notice\n"
        "  bounce QUEUEID... | -         return to the sender\n"
        "  requeue [QUEUEID... | - | --all]       forget retry times and attempts\n"
        "  stats [--prometheus]         counters since relayd started\n"
        "  reload                       reread relayd.conf\n"
        "  check [--warn-age T] [--crit-age T] [--warn-count N] [--crit-count N]\n"
        "                               Nagios-style health check\n"
        "  backup [--force] FILE        an online copy of the queue (root, relayd's user)\n");
}

int ctl_cmd_main(int argc, char **argv, struct etrnctl_opts *o)
{
    struct ctx cx = {.o = o, .now = time(NULL)};
    const char *cmd = argv[0];

    if (strcmp(cmd, "queue") == 0 || strcmp(cmd, "mailq") == 0)
        return ctl_queue(&cx, argc, argv);
    if (strcmp(cmd, "summary") == 0 || strcmp(cmd, "qshape") == 0)
        return ctl_summary(&cx, argc, argv);
    if (strcmp(cmd, "domains") == 0)
        return ctl_domains(&cx, argc, argv);
    if (strcmp(cmd, "show") == 0)
        return ctl_show(&cx, argc, argv);
    if (strcmp(cmd, "flush") == 0)
        return ctl_flush(&cx, argc, argv);
    if (strcmp(cmd, "stats") == 0)
        return ctl_stats(&cx, argc, argv);
    if (strcmp(cmd, "reload") == 0)
        return ctl_reload(&cx, argc, argv);
    if (strcmp(cmd, "check") == 0)
        return ctl_check(&cx, argc, argv);
    if (strcmp(cmd, "backup") == 0)
        return ctl_backup(&cx, argc, argv);
    {
        int st = ctl_ids_command(&cx, cmd, argc, argv);
        if (st >= 0)
            return st;
    }
    etrnctl_warn("unknown command %s", cmd);
    return EX_USAGE;
}
