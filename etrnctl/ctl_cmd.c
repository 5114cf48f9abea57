/*
 * ctl_cmd: the operator's commands (queue, summary, domains, show, flush,
 * hold, release, delete, bounce, requeue, stats, reload, check). Each turns
 * its arguments into one control request (ctl_client.c) and prints the
 * records: as text tables (mailq/qshape/Nagios/Prometheus shapes) or, with
 * --json, the lines exactly as relayd sent them. It never opens the queue.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "ctl_client.h"
#include "etrnctl.h"

#define CTL_TIMEOUT 60.0 /* seconds of silence from relayd before giving up */
/* Ids per request for `delete -` and friends: well under the 64 KiB line. */
#define IDS_PER_REQUEST_BYTES 60000

/* ---- JSON field access ------------------------------------------------------------------ */

static const char *jstr(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || v == NULL ||
        json_object_is_type(v, json_type_null))
        return NULL;
    return json_object_get_string(v);
}

static const char *jstr0(struct json_object *o, const char *key)
{
    const char *s = jstr(o, key);
    return s ? s : "";
}

/* An integer field; -1 when missing or null. */
static int64_t jint(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || v == NULL ||
        json_object_is_type(v, json_type_null))
        return -1;
    return json_object_get_int64(v);
}

static int jbool(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) && v != NULL && json_object_get_boolean(v);
}

/* Printable: control characters in text from the queue (a sender, a reply)
 * must not reach the operator's terminal. */
static void put_clean(FILE *fp, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, fp);
}

/* ---- a small aligned text table ------------------------------------------------------------ */

#define TABLE_MAX_COLS 16

struct table {
    size_t ncols;
    size_t nrows;
    size_t cap;
    char **cells;              /* nrows * ncols, owned */
    int right[TABLE_MAX_COLS]; /* right-align this column (numbers) */
};

static void table_init(struct table *t, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
}

static int table_row(struct table *t, const char *const *cols)
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

static void table_print(const struct table *t, FILE *fp)
{
    size_t w[TABLE_MAX_COLS] = {0};

    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t l = strlen(t->cells[r * t->ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            int last = c + 1 == t->ncols;
            if (t->right[c])
                fprintf(fp, "%*s", (int)w[c], s);
            else if (last)
                fputs(s, fp);
            else
                fprintf(fp, "%-*s", (int)w[c], s);
            fputs(last ? "\n" : "  ", fp);
        }
    }
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- shared plumbing ------------------------------------------------------------------------ */

struct table;
struct idcmd;

struct ctx {
    struct etrnctl_opts *o;
    int count;               /* records seen */
    struct json_object *all; /* records kept for a second pass (array), or NULL */
    int mode;                /* per command */
    int64_t sum;
    time_t now;
    struct table *table;       /* domains: rows collected while records arrive */
    const struct idcmd *idcmd; /* hold/release/...: which counter to add up */
};

/* Print every record as relayd sent it (--json) or keep it for later. */
static int keep_cb(void *arg, struct json_object *rec, const char *raw)
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

static int call(struct ctx *cx, const struct ctl_client_req *req, ctl_client_record_cb cb)
{
    int st = ctl_client_call(cx->o->socket, req, CTL_TIMEOUT, cx->o->verbose, cb, cx, NULL, 0);
    fflush(stdout);
    return st;
}

/* Build and send a request with no arguments beyond the command. */
static int simple_call(struct ctx *cx, const char *command, ctl_client_record_cb cb)
{
    struct ctl_client_req req;
    int st;

    if (ctl_client_req_init(&req, command) != 0) {
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = call(cx, &req, cb);
    ctl_client_req_free(&req);
    return st;
}

static void fmt_time(int64_t t, char *out, size_t outlen)
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
static void fmt_rel(const struct ctx *cx, int64_t t, char *out, size_t outlen)
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

static void fmt_i64(int64_t v, char *out, size_t outlen)
{
    if (v < 0)
        snprintf(out, outlen, "-");
    else
        snprintf(out, outlen, "%" PRId64, v);
}

static int usage_error(void (*usage)(FILE *), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(void (*usage)(FILE *), const char *fmt, ...)
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
static int valid_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= 'a' && s[n] <= 'z')))
            return 0;
    return n > 0 && n <= 64;
}

/* ---- queue ---------------------------------------------------------------------------------- */

enum { Q_TEXT = 0, Q_IDS, Q_COUNT };

static void queue_print_text(struct ctx *cx, struct json_object *rec)
{
    struct json_object *rcpts;
    char when[64];
    const char *sender = jstr0(rec, "sender");
    const char *qname = jstr0(rec, "queue_name");
    int held = strcmp(qname, "hold") == 0;
    size_t n;

    if (cx->count == 1)
        printf("-Queue ID-----  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    fmt_time(jint(rec, "arrival_time"), when, sizeof(when));
    /* Postfix marks a held message with '!' after its id */
    printf("%-14s%c %8" PRId64 " %-20s  ", jstr0(rec, "queue_id"), held ? '!' : ' ',
           jint(rec, "message_size"), when);
    put_clean(stdout, *sender ? sender : "MAILER-DAEMON");
    fputc('\n', stdout);
    if (!json_object_object_get_ex(rec, "recipients", &rcpts) ||
        !json_object_is_type(rcpts, json_type_array))
        return;
    n = json_object_array_length(rcpts);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(rcpts, i);
        const char *why = jstr0(r, "delay_reason");
        if (*why) {
            printf("%47s", "(");
            put_clean(stdout, why);
            printf(")\n");
        }
        printf("%46s", "");
        put_clean(stdout, jstr0(r, "address"));
        if (jbool(r, "held") && !held)
            printf(" (held)");
        fputc('\n', stdout);
    }
    fputc('\n', stdout);
}

static int queue_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;

    cx->count++;
    if (cx->mode == Q_COUNT)
        return 0;
    if (cx->mode == Q_IDS) {
        put_clean(stdout, jstr0(rec, "queue_id"));
        fputc('\n', stdout);
        return 0;
    }
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    cx->sum += jint(rec, "message_size") > 0 ? jint(rec, "message_size") : 0;
    queue_print_text(cx, rec);
    return 0;
}

static void usage_queue(FILE *fp)
{
    fprintf(fp,
            "usage: etrnctl queue [DOMAIN] [--domain D] [--sender S] [--recipient R]\n"
            "                     [--older-than T] [--held] [--limit N] [--ids-only | --count]\n");
}

static int cmd_queue(struct ctx *cx, int argc, char **argv)
{
    enum {
        O_DOMAIN = ETRNCTL_OPT_FIRST_LOCAL,
        O_SENDER,
        O_RCPT,
        O_OLDER,
        O_HELD,
        O_IDS,
        O_COUNT,
        O_LIMIT
    };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"domain", required_argument, NULL, O_DOMAIN},
                                             {"sender", required_argument, NULL, O_SENDER},
                                             {"recipient", required_argument, NULL, O_RCPT},
                                             {"older-than", required_argument, NULL, O_OLDER},
                                             {"held", no_argument, NULL, O_HELD},
                                             {"ids-only", no_argument, NULL, O_IDS},
                                             {"count", no_argument, NULL, O_COUNT},
                                             {"limit", required_argument, NULL, O_LIMIT},
                                             {NULL, 0, NULL, 0}};
    struct ctl_client_req req;
    const char *domain = NULL, *sender = NULL, *rcpt = NULL;
    char older[32] = "", limit[32] = "";
    int held = 0, c, st;

    cx->mode = Q_TEXT;
    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        double d;
        int n;
        if (etrnctl_global_opt(c, optarg, cx->o, usage_queue))
            continue;
        switch (c) {
        case O_DOMAIN:
            domain = optarg;
            break;
        case O_SENDER:
            sender = optarg;
            break;
        case O_RCPT:
            rcpt = optarg;
            break;
        case O_OLDER:
            if (etrnctl_parse_duration(optarg, &d) != 0)
                return usage_error(usage_queue, "bad --older-than: %s", optarg);
            snprintf(older, sizeof(older), "%.0f", d);
            break;
        case O_HELD:
            held = 1;
            break;
        case O_IDS:
            cx->mode = Q_IDS;
            break;
        case O_COUNT:
            cx->mode = Q_COUNT;
            break;
        case O_LIMIT:
            if (etrnctl_parse_uint(optarg, &n) != 0 || n < 1)
                return usage_error(usage_queue, "bad --limit: %s", optarg);
            snprintf(limit, sizeof(limit), "%d", n);
            break;
        default:
            usage_queue(stderr);
            return EX_USAGE;
        }
    }
    if (optind < argc && domain == NULL)
        domain = argv[optind++];
    if (optind < argc)
        return usage_error(usage_queue, "unexpected argument: %s", argv[optind]);
    if (ctl_client_req_init(&req, "queue") != 0 ||
        (domain && ctl_client_req_add(&req, "domain", domain) != 0) ||
        (sender && ctl_client_req_add(&req, "sender", sender) != 0) ||
        (rcpt && ctl_client_req_add(&req, "recipient", rcpt) != 0) ||
        (*older && ctl_client_req_add(&req, "older_than", older) != 0) ||
        (held && ctl_client_req_add(&req, "held", "1") != 0) ||
        (*limit && ctl_client_req_add(&req, "limit", limit) != 0)) {
        ctl_client_req_free(&req);
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = call(cx, &req, queue_cb);
    ctl_client_req_free(&req);
    if (st != 0)
        return st;
    if (cx->mode == Q_COUNT) {
        if (cx->o->json)
            printf("{\"count\":%d}\n", cx->count);
        else
            printf("%d\n", cx->count);
    } else if (cx->mode == Q_TEXT && !cx->o->json) {
        if (cx->count == 0)
            printf("Mail queue is empty\n");
        else
            printf("-- %" PRId64 " Kbytes in %d Request%s.\n", (cx->sum + 1023) / 1024, cx->count,
                   cx->count == 1 ? "" : "s");
    }
    return 0;
}

/* ---- summary (qshape) -------------------------------------------------------------------- */

static void usage_summary(FILE *fp)
{
    fprintf(fp, "usage: etrnctl summary [--json]\n");
}

static int no_args(struct ctx *cx, int argc, char **argv, void (*usage)(FILE *))
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
        return usage_error(usage, "unexpected argument: %s", argv[optind]);
    return 0;
}

static void bucket_label(int64_t limit, char *out, size_t outlen)
{
    if (limit % 86400 == 0 && limit >= 86400 * 2)
        snprintf(out, outlen, "%" PRId64 "d", limit / 86400);
    else if (limit % 60 == 0)
        snprintf(out, outlen, "%" PRId64, limit / 60); /* minutes, as qshape */
    else
        snprintf(out, outlen, "%" PRId64 "s", limit);
}

static int cmd_summary(struct ctx *cx, int argc, char **argv)
{
    struct table t;
    struct json_object *limits = NULL;
    size_t nb = 0, n;
    int64_t tot_msgs = 0, tot_bytes = 0, tot_ages[TABLE_MAX_COLS] = {0};
    char cells[TABLE_MAX_COLS][32];
    const char *row[TABLE_MAX_COLS];
    int st = no_args(cx, argc, argv, usage_summary);

    if (st != 0)
        return st;
    cx->all = json_object_new_array();
    st = simple_call(cx, "summary", keep_cb);
    if (st != 0 || cx->o->json)
        goto done;
    n = json_object_array_length(cx->all);
    for (size_t i = 0; i < n && limits == NULL; i++) {
        struct json_object *v;
        if (json_object_object_get_ex(json_object_array_get_idx(cx->all, i), "bucket_limits", &v) &&
            json_object_is_type(v, json_type_array))
            limits = v;
    }
    nb = limits ? json_object_array_length(limits) + 1 : 1;
    if (nb + 3 > TABLE_MAX_COLS)
        nb = TABLE_MAX_COLS - 3;
    table_init(&t, nb + 3);
    for (size_t c = 1; c < nb + 3; c++)
        t.right[c] = 1;
    /* header: minutes, like qshape; the last bucket is "older than the last limit" */
    row[0] = "";
    row[1] = "T";
    row[2] = "BYTES";
    for (size_t b = 0; b < nb; b++) {
        if (limits == NULL) {
            snprintf(cells[b], sizeof(cells[b]), "all");
        } else if (b + 1 < nb) {
            bucket_label(json_object_get_int64(json_object_array_get_idx(limits, b)), cells[b],
                         sizeof(cells[b]));
        } else {
            bucket_label(json_object_get_int64(json_object_array_get_idx(limits, b - 1)), cells[b],
                         sizeof(cells[b]) - 1);
            strcat(cells[b], "+");
        }
        row[b + 3] = cells[b];
    }
    table_row(&t, row);
    for (size_t i = 0; i < n; i++) {
        struct json_object *ages;
        if (json_object_object_get_ex(json_object_array_get_idx(cx->all, i), "ages", &ages) &&
            json_object_is_type(ages, json_type_array))
            for (size_t b = 0; b < nb && b < json_object_array_length(ages); b++)
                tot_ages[b] += json_object_get_int64(json_object_array_get_idx(ages, b));
        tot_msgs += jint(json_object_array_get_idx(cx->all, i), "messages");
        tot_bytes += jint(json_object_array_get_idx(cx->all, i), "bytes");
    }
    for (size_t pass = 0; pass <= n; pass++) {
        struct json_object *rec = pass == 0 ? NULL : json_object_array_get_idx(cx->all, pass - 1);
        struct json_object *ages = NULL;
        char m[32], by[32];
        if (rec != NULL && !json_object_object_get_ex(rec, "ages", &ages))
            ages = NULL;
        row[0] = rec ? jstr0(rec, "domain") : "TOTAL";
        fmt_i64(rec ? jint(rec, "messages") : tot_msgs, m, sizeof(m));
        fmt_i64(rec ? jint(rec, "bytes") : tot_bytes, by, sizeof(by));
        row[1] = m;
        row[2] = by;
        for (size_t b = 0; b < nb; b++) {
            int64_t v = rec == NULL ? tot_ages[b]
                        : (ages && b < json_object_array_length(ages))
                            ? json_object_get_int64(json_object_array_get_idx(ages, b))
                            : 0;
            snprintf(cells[b], sizeof(cells[b]), "%" PRId64, v);
            row[b + 3] = cells[b];
        }
        table_row(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
done:
    json_object_put(cx->all);
    cx->all = NULL;
    return st;
}

/* ---- domains -------------------------------------------------------------------------------- */

static void usage_domains(FILE *fp)
{
    fprintf(fp, "usage: etrnctl domains [--json]\n");
}

static int domains_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    struct table *t = cx->table;
    char msgs[32], bytes[32], held[32], oldest[32], etrn[32], deliv[32], expiry[32], err[600];
    const char *row[11];
    const char *le = jstr0(rec, "last_error");

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    fmt_i64(jint(rec, "messages"), msgs, sizeof(msgs));
    fmt_i64(jint(rec, "bytes"), bytes, sizeof(bytes));
    fmt_i64(jint(rec, "held_messages"), held, sizeof(held));
    fmt_rel(cx, jint(rec, "oldest"), oldest, sizeof(oldest));
    fmt_rel(cx, jint(rec, "last_etrn"), etrn, sizeof(etrn));
    fmt_rel(cx, jint(rec, "last_delivery"), deliv, sizeof(deliv));
    fmt_rel(cx, jint(rec, "next_expiry"), expiry, sizeof(expiry));
    if (*le) {
        char at[32];
        fmt_rel(cx, jint(rec, "last_error_at"), at, sizeof(at));
        snprintf(err, sizeof(err), "%s: %s", at, le);
    } else {
        snprintf(err, sizeof(err), "-");
    }
    row[0] = jstr0(rec, "domain");
    row[1] = *jstr0(rec, "mode") ? jstr0(rec, "mode") : "-";
    row[2] = *jstr0(rec, "route") ? jstr0(rec, "route") : "-";
    row[3] = msgs;
    row[4] = bytes;
    row[5] = held;
    row[6] = oldest;
    row[7] = etrn;
    row[8] = deliv;
    row[9] = expiry;
    /* an unconfigured domain (bounces to senders) and a running flush are marked */
    row[10] = err;
    {
        char dom[300];
        snprintf(dom, sizeof(dom), "%s%s%s", row[0],
                 jbool(rec, "configured") ? "" : " (unconfigured)",
                 jbool(rec, "flushing") ? " *" : "");
        row[0] = dom;
        table_row(t, row);
    }
    return 0;
}

static int cmd_domains(struct ctx *cx, int argc, char **argv)
{
    static const char *const head[] = {"DOMAIN",        "MODE",    "ROUTE",     "MSGS",
                                       "BYTES",         "HELD",    "OLDEST",    "LAST-ETRN",
                                       "LAST-DELIVERY", "EXPIRES", "LAST-ERROR"};
    struct table t;
    int st = no_args(cx, argc, argv, usage_domains);

    if (st != 0)
        return st;
    table_init(&t, 11);
    t.right[3] = t.right[4] = t.right[5] = 1;
    table_row(&t, head);
    cx->table = &t;
    st = simple_call(cx, "domains", domains_cb);
    cx->table = NULL;
    if (st == 0 && !cx->o->json) {
        table_print(&t, stdout);
        if (cx->count == 0)
            printf("(no domains)\n");
    }
    table_free(&t);
    return st;
}

/* ---- show ----------------------------------------------------------------------------------- */

static void usage_show(FILE *fp)
{
    fprintf(fp, "usage: etrnctl show [--json] QUEUEID\n");
}

static int show_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    struct json_object *rcpts;
    char when[64], next[64];
    const char *body;

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    fmt_time(jint(rec, "arrival_time"), when, sizeof(when));
    printf("queue_id: %s\n", jstr0(rec, "queue_id"));
    printf("queue: %s\n", jstr0(rec, "queue_name"));
    printf("arrival: %s\n", when);
    printf("size: %" PRId64 "\n", jint(rec, "message_size"));
    printf("sender: <");
    put_clean(stdout, jstr0(rec, "sender"));
    printf(">\n");
    printf("client: ");
    put_clean(stdout, jstr0(rec, "client_helo"));
    printf(" [%s]\n", jstr0(rec, "client_addr"));
    if (*jstr0(rec, "envid")) {
        printf("envid: ");
        put_clean(stdout, jstr0(rec, "envid"));
        fputc('\n', stdout);
    }
    {
        /* RFC 3461 RET: relayd sends enum smtp_ret (0 unset, 1 FULL, 2 HDRS) */
        int64_t ret = jint(rec, "dsn_ret");
        if (ret == 1 || ret == 2)
            printf("ret: %s\n", ret == 1 ? "FULL" : "HDRS");
    }
    if (json_object_object_get_ex(rec, "recipients", &rcpts) &&
        json_object_is_type(rcpts, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(rcpts); i++) {
            struct json_object *r = json_object_array_get_idx(rcpts, i);
            fmt_rel(cx, jint(r, "next_attempt"), next, sizeof(next));
            printf("recipient: <");
            put_clean(stdout, jstr0(r, "address"));
            printf(">%s attempts=%" PRId64 " next=%s", jbool(r, "held") ? " held" : "",
                   jint(r, "attempts") < 0 ? 0 : jint(r, "attempts"),
                   jint(r, "next_attempt") <= 0 ? "now" : next);
            if (*jstr0(r, "delay_reason")) {
                printf(" reason=");
                put_clean(stdout, jstr0(r, "delay_reason"));
            }
            fputc('\n', stdout);
        }
    }
    fputc('\n', stdout);
    /* the message as stored: CRLF lines shown as the terminal's LF */
    body = jstr0(rec, "body");
    for (const char *p = body; *p; p++)
        if (!(p[0] == '\r' && p[1] == '\n'))
            fputc(*p, stdout);
    return 0;
}

static int cmd_show(struct ctx *cx, int argc, char **argv)
{
    struct ctl_client_req req;
    int st = 0;
    int c;
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (!etrnctl_global_opt(c, optarg, cx->o, usage_show)) {
            usage_show(stderr);
            return EX_USAGE;
        }
    }
    if (optind + 1 != argc)
        return usage_error(usage_show, "%s", "show takes exactly one queue id");
    if (!valid_id(argv[optind]))
        return usage_error(usage_show, "not a queue id: %s", argv[optind]);
    if (ctl_client_req_init(&req, "show") != 0 ||
        ctl_client_req_add(&req, "id", argv[optind]) != 0) {
        ctl_client_req_free(&req);
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = call(cx, &req, show_cb);
    ctl_client_req_free(&req);
    return st;
}

/* ---- flush ---------------------------------------------------------------------------------- */

static void usage_flush(FILE *fp)
{
    fprintf(fp, "usage: etrnctl flush DOMAIN | --id QUEUEID | --all\n");
}

static int flush_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    int64_t n = jint(rec, "messages");

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
    } else if (!cx->o->quiet) {
        put_clean(stdout, jstr0(rec, "domain"));
        if (n == 0)
            printf(": nothing waiting\n");
        else
            printf(": flushing %" PRId64 " message%s\n", n, n == 1 ? "" : "s");
    }
    return 0;
}

static int cmd_flush(struct ctx *cx, int argc, char **argv)
{
    enum { O_ID = ETRNCTL_OPT_FIRST_LOCAL, O_ALL };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"id", required_argument, NULL, O_ID},
                                             {"all", no_argument, NULL, O_ALL},
                                             {NULL, 0, NULL, 0}};
    struct ctl_client_req req;
    const char *id = NULL;
    int all = 0, c, st, rc;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, cx->o, usage_flush))
            continue;
        if (c == O_ID)
            id = optarg;
        else if (c == O_ALL)
            all = 1;
        else {
            usage_flush(stderr);
            return EX_USAGE;
        }
    }
    if ((optind < argc) + (id != NULL) + all != 1 || optind + 1 < argc)
        return usage_error(usage_flush, "%s", "flush takes one DOMAIN, --id QUEUEID or --all");
    if (id != NULL && !valid_id(id))
        return usage_error(usage_flush, "not a queue id: %s", id);
    rc = ctl_client_req_init(&req, "flush");
    if (rc == 0 && id != NULL)
        rc = ctl_client_req_add(&req, "id", id);
    else if (rc == 0 && all)
        rc = ctl_client_req_add(&req, "all", "1");
    else if (rc == 0)
        rc = ctl_client_req_add(&req, "domain", argv[optind]);
    if (rc != 0) {
        ctl_client_req_free(&req);
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = call(cx, &req, flush_cb);
    ctl_client_req_free(&req);
    if (st == 0 && cx->count == 0 && !cx->o->json && !cx->o->quiet)
        printf("nothing to flush\n");
    return st;
}

/* ---- hold, release, delete, bounce, requeue: ids in batches -----------------------------------
 */

struct idcmd {
    const char *name;  /* request command */
    const char *field; /* counter in the answer: "held", "deleted", ... */
    int allow_domain;  /* --domain D */
    int allow_all;     /* ALL / --all */
    int need_target;   /* ids, a domain or all are required */
};

static const struct idcmd idcmds[] = {
    {"hold", "held", 1, 0, 1},        {"release", "released", 1, 0, 1},
    {"delete", "deleted", 0, 1, 1},   {"bounce", "bounced", 0, 0, 1},
    {"requeue", "requeued", 0, 1, 0},
};

static int count_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    const struct idcmd *ic = cx->idcmd;
    int64_t n = jint(rec, ic->field);

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
    }
    if (n > 0)
        cx->sum += n;
    return 0;
}

static const struct idcmd *cur_idcmd;

static void usage_ids(FILE *fp)
{
    const struct idcmd *ic = cur_idcmd;

    if (ic == NULL || strcmp(ic->name, "delete") == 0)
        fprintf(fp, "usage: etrnctl delete QUEUEID... | - | ALL\n");
    if (ic == NULL || ic->allow_domain)
        fprintf(fp, "usage: etrnctl %s QUEUEID... | - | --domain DOMAIN\n",
                ic ? ic->name : "hold|release");
    if (ic == NULL || strcmp(ic->name, "bounce") == 0)
        fprintf(fp, "usage: etrnctl bounce QUEUEID... | -\n");
    if (ic == NULL || strcmp(ic->name, "requeue") == 0)
        fprintf(fp, "usage: etrnctl requeue [QUEUEID... | - | --all]\n");
}

/* Read queue ids from stdin, one per line (blank lines and # comments
 * skipped): what `etrnctl queue --ids-only` prints. Returns a NULL-terminated
 * malloc'ed array, or NULL on a bad line (explained). */
static char **read_ids(size_t *nout)
{
    char **ids = NULL;
    size_t n = 0, cap = 0;
    char line[256];

    while (fgets(line, sizeof(line), stdin) != NULL) {
        char *s = line, *e;
        if (strchr(line, '\n') == NULL && !feof(stdin)) {
            etrnctl_warn("stdin: line too long for a queue id");
            goto bad;
        }
        while (*s == ' ' || *s == '\t')
            s++;
        e = s + strcspn(s, " \t\r\n");
        *e = '\0';
        if (*s == '\0' || *s == '#')
            continue;
        if (!valid_id(s)) {
            etrnctl_warn("stdin: not a queue id: %s", s);
            goto bad;
        }
        if (n + 2 > cap) {
            char **p;
            cap = cap ? cap * 2 : 64;
            p = realloc(ids, cap * sizeof(*ids));
            if (p == NULL)
                goto bad;
            ids = p;
        }
        ids[n] = strdup(s);
        if (ids[n] == NULL)
            goto bad;
        n++;
        ids[n] = NULL;
    }
    if (ids == NULL)
        ids = calloc(1, sizeof(*ids));
    *nout = n;
    return ids;
bad:
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return NULL;
}

static int cmd_ids(struct ctx *cx, const struct idcmd *ic, int argc, char **argv)
{
    enum { O_DOMAIN = ETRNCTL_OPT_FIRST_LOCAL, O_ALL };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"domain", required_argument, NULL, O_DOMAIN},
                                             {"all", no_argument, NULL, O_ALL},
                                             {NULL, 0, NULL, 0}};
    const char *domain = NULL;
    char **stdin_ids = NULL, **ids;
    size_t nids, nstdin = 0, i = 0;
    int all = 0, c, st = 0, batches = 0, notfound = 0;
    char why[600] = "";

    cur_idcmd = ic;
    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, cx->o, usage_ids))
            continue;
        if (c == O_DOMAIN && ic->allow_domain) {
            domain = optarg;
        } else if (c == O_ALL && ic->allow_all) {
            all = 1;
        } else {
            usage_ids(stderr);
            return EX_USAGE;
        }
    }
    ids = argv + optind;
    nids = (size_t)(argc - optind);
    /* Postfix's postsuper -d ALL */
    if (ic->allow_all && nids == 1 && strcmp(ids[0], "ALL") == 0) {
        all = 1;
        nids = 0;
    }
    if (nids == 1 && strcmp(ids[0], "-") == 0) {
        stdin_ids = read_ids(&nstdin);
        if (stdin_ids == NULL)
            return EX_DATAERR;
        ids = stdin_ids;
        nids = nstdin;
        if (nids == 0) {
            if (!cx->o->quiet && !cx->o->json)
                printf("no queue ids on stdin: nothing %s\n", ic->field);
            goto done;
        }
    } else {
        for (size_t k = 0; k < nids; k++)
            if (!valid_id(ids[k]))
                return usage_error(usage_ids, "not a queue id: %s", ids[k]);
    }
    if ((nids > 0) + (domain != NULL) + all > 1 ||
        (ic->need_target && nids == 0 && !domain && !all))
        return usage_error(
            usage_ids, "%s: give queue ids, - (ids on stdin), or one of the other forms", ic->name);
    cx->idcmd = ic;
    /* One request per batch of ids, so no line passes the 64 KiB limit. A
     * batch none of whose ids exists any more (delivered meanwhile) is not
     * an error while another batch found some. */
    do {
        struct ctl_client_req req;
        int rc = ctl_client_req_init(&req, ic->name);

        if (rc == 0 && domain != NULL)
            rc = ctl_client_req_add(&req, "domain", domain);
        else if (rc == 0 && all)
            rc = ctl_client_req_add(&req, "all", "1");
        for (; rc == 0 && i < nids && req.len < IDS_PER_REQUEST_BYTES; i++)
            rc = ctl_client_req_add(&req, "id", ids[i]);
        if (rc != 0) {
            ctl_client_req_free(&req);
            etrnctl_warn("out of memory");
            st = EX_SOFTWARE;
            break;
        }
        why[0] = '\0';
        st = ctl_client_call(cx->o->socket, &req, CTL_TIMEOUT, cx->o->verbose, count_cb, cx, why,
                             sizeof(why));
        ctl_client_req_free(&req);
        if (st == EX_NOINPUT && nids > 0) {
            notfound++;
            st = 0;
        } else if (st != 0) {
            etrnctl_warn("%s", why);
        }
        batches++;
    } while (st == 0 && i < nids);
    fflush(stdout);
    if (st == 0 && notfound == batches) {
        etrnctl_warn("%s", why); /* not one of the ids exists */
        st = EX_NOINPUT;
    }
    if (st == 0 && !cx->o->json && !cx->o->quiet)
        printf("%s: %" PRId64 "\n", ic->field, cx->sum);
    else if (st != 0 && batches > 1)
        etrnctl_warn("%s stopped after %zu of %zu ids", ic->name, i, nids);
done:
    if (stdin_ids != NULL) {
        for (size_t k = 0; k < nstdin; k++)
            free(stdin_ids[k]);
        free(stdin_ids);
    }
    return st;
}

/* ---- stats ---------------------------------------------------------------------------------- */

static void usage_stats(FILE *fp)
{
    fprintf(fp, "usage: etrnctl stats [--prometheus | --json]\n");
}

/* Prometheus text exposition: label values escape \, " and newline. */
static void prom_label(FILE *fp, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(fp, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", fp);
        else
            fputc(*s, fp);
    }
}

static const struct {
    const char *field, *metric, *help;
} per_domain[] = {
    {"received", "relayd_received_total",
     "Recipients accepted by relayd's SMTP server since it started."},
    {"delivered", "relayd_delivered_total",
     "Recipients delivered to their site since relayd started."},
    {"deferred", "relayd_deferred_total", "Delivery attempts deferred since relayd started."},
    {"bounced", "relayd_bounced_total",
     "Recipients returned to their sender since relayd started."},
    {"etrn", "relayd_etrn_total", "ETRN requests naming the domain since relayd started."},
};

static const struct {
    const char *field, *metric, *type, *help;
} totals[] = {
    {"queue_messages", "relayd_queue_messages", "gauge", "Messages in relayd's queue."},
    {"queue_bytes", "relayd_queue_bytes", "gauge", "Bytes of messages in relayd's queue."},
    {"connections", "relayd_connections", "gauge", "SMTP connections open now."},
    {"uptime", "relayd_uptime_seconds", "gauge", "Seconds since relayd started."},
};

static int cmd_stats(struct ctx *cx, int argc, char **argv)
{
    enum { O_PROM = ETRNCTL_OPT_FIRST_LOCAL };
    static const struct option longopts[] = {
        ETRNCTL_GLOBAL_LONGOPTS, {"prometheus", no_argument, NULL, O_PROM}, {NULL, 0, NULL, 0}};
    int prom = 0, c, st;
    size_t n;
    struct json_object *tot = NULL;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, cx->o, usage_stats))
            continue;
        if (c == O_PROM) {
            prom = 1;
            continue;
        }
        usage_stats(stderr);
        return EX_USAGE;
    }
    if (optind < argc)
        return usage_error(usage_stats, "unexpected argument: %s", argv[optind]);
    if (prom && cx->o->json)
        return usage_error(usage_stats, "%s", "--prometheus and --json exclude each other");
    cx->all = json_object_new_array();
    st = simple_call(cx, "stats", keep_cb);
    if (st != 0 || cx->o->json)
        goto done;
    n = json_object_array_length(cx->all);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(cx->all, i);
        if (*jstr0(r, "domain") == '\0')
            tot = r;
    }
    if (prom) {
        /* node_exporter textfile format: every sample of a metric after its
         * HELP and TYPE lines */
        for (size_t m = 0; m < sizeof(per_domain) / sizeof(per_domain[0]); m++) {
            printf("# HELP %s %s\n# TYPE %s counter\n", per_domain[m].metric, per_domain[m].help,
                   per_domain[m].metric);
            for (size_t i = 0; i < n; i++) {
                struct json_object *r = json_object_array_get_idx(cx->all, i);
                int64_t v = jint(r, per_domain[m].field);
                if (*jstr0(r, "domain") == '\0' || v < 0)
                    continue;
                printf("%s{domain=\"", per_domain[m].metric);
                prom_label(stdout, jstr0(r, "domain"));
                printf("\"} %" PRId64 "\n", v);
            }
        }
        for (size_t m = 0; tot != NULL && m < sizeof(totals) / sizeof(totals[0]); m++) {
            int64_t v = jint(tot, totals[m].field);
            if (v < 0)
                continue;
            printf("# HELP %s %s\n# TYPE %s %s\n%s %" PRId64 "\n", totals[m].metric, totals[m].help,
                   totals[m].metric, totals[m].type, totals[m].metric, v);
        }
    } else {
        static const char *const head[] = {"DOMAIN",   "RECEIVED", "DELIVERED",
                                           "DEFERRED", "BOUNCED",  "ETRN"};
        struct table t;
        char cells[5][32];
        const char *row[6];

        table_init(&t, 6);
        for (int k = 1; k < 6; k++)
            t.right[k] = 1;
        table_row(&t, head);
        for (size_t i = 0; i < n; i++) {
            struct json_object *r = json_object_array_get_idx(cx->all, i);
            if (*jstr0(r, "domain") == '\0')
                continue;
            row[0] = jstr0(r, "domain");
            for (int k = 0; k < 5; k++) {
                fmt_i64(jint(r, per_domain[k].field), cells[k], sizeof(cells[k]));
                row[k + 1] = cells[k];
            }
            table_row(&t, row);
        }
        table_print(&t, stdout);
        table_free(&t);
        if (tot != NULL) {
            char up[32];
            etrnctl_format_age((double)jint(tot, "uptime"), up, sizeof(up));
            printf("queue: %" PRId64 " messages, %" PRId64 " bytes; connections: %" PRId64
                   "; uptime: %s\n",
                   jint(tot, "queue_messages"), jint(tot, "queue_bytes"), jint(tot, "connections"),
                   up);
        }
    }
done:
    json_object_put(cx->all);
    cx->all = NULL;
    return st;
}

/* ---- reload -----------------------------------------------------------------------------------
 */

static void usage_reload(FILE *fp)
{
    fprintf(fp, "usage: etrnctl reload\n");
}

static int reload_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;

    (void)rec;
    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
    }
    return 0;
}

static int cmd_reload(struct ctx *cx, int argc, char **argv)
{
    int st = no_args(cx, argc, argv, usage_reload);

    if (st == 0)
        st = simple_call(cx, "reload", reload_cb);
    if (st == 0 && !cx->o->json && !cx->o->quiet)
        printf("relayd is reloading its configuration\n");
    return st;
}

/* ---- check (Nagios) ---------------------------------------------------------------------------
 */

enum { NAGIOS_OK = 0, NAGIOS_WARNING = 1, NAGIOS_CRITICAL = 2, NAGIOS_UNKNOWN = 3 };

static void usage_check(FILE *fp)
{
    fprintf(fp, "usage: etrnctl check [--warn-age T] [--crit-age T] [--warn-count N] "
                "[--crit-count N]\n");
}

/* Nagios plugin: one status line, perfdata after '|', exit 0 OK, 1
 * WARNING, 2 CRITICAL, 3 UNKNOWN. relayd not running is CRITICAL; a bad
 * command line or a refused request is UNKNOWN. */
static int cmd_check(struct ctx *cx, int argc, char **argv)
{
    enum { O_WA = ETRNCTL_OPT_FIRST_LOCAL, O_CA, O_WC, O_CC };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"warn-age", required_argument, NULL, O_WA},
                                             {"crit-age", required_argument, NULL, O_CA},
                                             {"warn-count", required_argument, NULL, O_WC},
                                             {"crit-count", required_argument, NULL, O_CC},
                                             {NULL, 0, NULL, 0}};
    static const char *const names[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
    double warn_age = -1, crit_age = -1;
    int warn_count = -1, crit_count = -1, c, st, status = NAGIOS_OK;
    int64_t msgs = 0, oldest = -1, total = -1;
    const char *oldest_dom = "";
    char why[256] = "", age[32] = "", wa[32] = "", ca[32] = "", wc[32] = "", cc[32] = "";
    size_t n;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        int bad = 0;
        if (etrnctl_global_opt(c, optarg, cx->o, usage_check))
            continue;
        switch (c) {
        case O_WA:
            bad = etrnctl_parse_duration(optarg, &warn_age);
            break;
        case O_CA:
            bad = etrnctl_parse_duration(optarg, &crit_age);
            break;
        case O_WC:
            bad = etrnctl_parse_uint(optarg, &warn_count);
            break;
        case O_CC:
            bad = etrnctl_parse_uint(optarg, &crit_count);
            break;
        default:
            bad = 1;
        }
        if (bad) {
            printf("RELAYD UNKNOWN - bad option\n");
            usage_check(stderr);
            return NAGIOS_UNKNOWN;
        }
    }
    if (optind < argc) {
        printf("RELAYD UNKNOWN - unexpected argument %s\n", argv[optind]);
        return NAGIOS_UNKNOWN;
    }
    cx->all = json_object_new_array();
    cx->mode = 1; /* keep the records even with --json */
    st = simple_call(cx, "domains", keep_cb);
    if (st == 0)
        st = simple_call(cx, "stats", keep_cb); /* its totals count each message once */
    if (st != 0) {
        status = st == EX_UNAVAILABLE ? NAGIOS_CRITICAL : NAGIOS_UNKNOWN;
        snprintf(why, sizeof(why), "%s",
                 st == EX_UNAVAILABLE ? "relayd is not running"
                 : st == EX_NOPERM    ? "permission denied"
                                      : "control request failed");
        goto out;
    }
    n = json_object_array_length(cx->all);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(cx->all, i);
        int64_t m = jint(r, "messages"), o = jint(r, "oldest");
        if (jint(r, "queue_messages") >= 0)
            total = jint(r, "queue_messages");
        if (m > 0)
            msgs += m; /* a message with recipients in two domains counts twice */
        if (m > 0 && o >= 0 && (oldest < 0 || o < oldest)) {
            oldest = o;
            oldest_dom = jstr0(r, "domain");
        }
    }
    if (total >= 0)
        msgs = total;
    {
        double a = oldest < 0 ? 0 : (double)(cx->now - (time_t)oldest);
        if (a < 0)
            a = 0;
        if ((crit_age >= 0 && oldest >= 0 && a >= crit_age) ||
            (crit_count >= 0 && msgs >= crit_count))
            status = NAGIOS_CRITICAL;
        else if ((warn_age >= 0 && oldest >= 0 && a >= warn_age) ||
                 (warn_count >= 0 && msgs >= warn_count))
            status = NAGIOS_WARNING;
        etrnctl_format_age(a, age, sizeof(age));
        if (oldest >= 0)
            snprintf(why, sizeof(why), "%" PRId64 " message%s queued, oldest %s (%s)", msgs,
                     msgs == 1 ? "" : "s", age, oldest_dom);
        else
            snprintf(why, sizeof(why), "%" PRId64 " messages queued", msgs);
        snprintf(age, sizeof(age), "%.0f", a);
    }
out:
    if (warn_age >= 0)
        snprintf(wa, sizeof(wa), "%.0f", warn_age);
    if (crit_age >= 0)
        snprintf(ca, sizeof(ca), "%.0f", crit_age);
    if (warn_count >= 0)
        snprintf(wc, sizeof(wc), "%d", warn_count);
    if (crit_count >= 0)
        snprintf(cc, sizeof(cc), "%d", crit_count);
    if (cx->o->json) {
        printf("{\"status\":\"%s\",\"exit\":%d,\"messages\":%" PRId64 ",\"oldest_age\":%s}\n",
               names[status], status, msgs, *age ? age : "null");
    } else {
        printf("RELAYD %s - ", names[status]);
        put_clean(stdout, why);
        if (st == 0)
            printf(" | messages=%" PRId64 ";%s;%s;0 oldest_age=%ss;%s;%s;0", msgs, wc, cc, age, wa,
                   ca);
        fputc('\n', stdout);
    }
    json_object_put(cx->all);
    cx->all = NULL;
    return status;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static const char *const commands[] = {"queue", "summary", "domains", "show",   "flush",
                                       "hold",  "release", "delete",  "bounce", "requeue",
                                       "stats", "reload",  "check",   "mailq",  "qshape"};

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
        "  summary                      messages per domain and age (qshape)\n"
        "  domains                      per domain: mode, route, queue, last ETRN/delivery/error\n"
        "  show QUEUEID                 envelope and message\n"
        "  flush DOMAIN | --id QUEUEID | --all\n"
        "                               start delivery now (as an ETRN would)\n"
        "  hold QUEUEID... | - | --domain D      keep from delivery\n"
        "  release QUEUEID... | - | --domain D   undo hold\n"
        "  delete QUEUEID... | - | ALL   remove without notice (-: ids on stdin)\n"
        "  bounce QUEUEID... | -         return to the sender\n"
        "  requeue [QUEUEID... | - | --all]       forget retry times and attempts\n"
        "  stats [--prometheus]         counters since relayd started\n"
        "  reload                       reread relayd.conf\n"
        "  check [--warn-age T] [--crit-age T] [--warn-count N] [--crit-count N]\n"
        "                               Nagios-style health check\n");
}

int ctl_cmd_main(int argc, char **argv, struct etrnctl_opts *o)
{
    struct ctx cx = {.o = o, .now = time(NULL)};
    const char *cmd = argv[0];

    if (strcmp(cmd, "queue") == 0 || strcmp(cmd, "mailq") == 0)
        return cmd_queue(&cx, argc, argv);
    if (strcmp(cmd, "summary") == 0 || strcmp(cmd, "qshape") == 0)
        return cmd_summary(&cx, argc, argv);
    if (strcmp(cmd, "domains") == 0)
        return cmd_domains(&cx, argc, argv);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(&cx, argc, argv);
    if (strcmp(cmd, "flush") == 0)
        return cmd_flush(&cx, argc, argv);
    if (strcmp(cmd, "stats") == 0)
        return cmd_stats(&cx, argc, argv);
    if (strcmp(cmd, "reload") == 0)
        return cmd_reload(&cx, argc, argv);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(&cx, argc, argv);
    for (size_t i = 0; i < sizeof(idcmds) / sizeof(idcmds[0]); i++)
        if (strcmp(cmd, idcmds[i].name) == 0)
            return cmd_ids(&cx, &idcmds[i], argc, argv);
    etrnctl_warn("unknown command %s", cmd);
    return EX_USAGE;
}
