/*
 * ctl_list: the commands that read the queue: queue (mailq), summary
 * (qshape), domains and show. They change nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ctl_cmd.h"
#include "termsafe.h"

/* ---- queue ---------------------------------------------------------------------------------- */

enum { Q_TEXT = 0, Q_IDS, Q_COUNT };

/* A recipient's attempts and what comes next (issue 9): the next attempt
 * of a retry domain, or "waiting for ETRN" / "waiting for ATRN" for a hold
 * domain, whose mail has no retry time. Nothing for mail never tried that
 * is simply due. */
static void rcpt_progress(struct ctx *cx, struct json_object *r)
{
    const char *waiting = ctl_jstr0(r, "waiting");
    int64_t attempts = ctl_jint(r, "attempts"), next = ctl_jint(r, "next_attempt");
    char when[64];

    if (attempts < 0)
        attempts = 0;
    if (!*waiting && attempts == 0)
        return;
    printf("%46s", "");
    if (*waiting) {
        printf("attempts=%" PRId64 ", waiting for ", attempts);
        ctl_put_clean(stdout, waiting);
    } else {
        ctl_fmt_rel(cx, next, when, sizeof(when));
        printf("attempts=%" PRId64 ", next %s", attempts, next <= 0 ? "now" : when);
    }
    fputc('\n', stdout);
}

static void queue_print_text(struct ctx *cx, struct json_object *rec)
{
    struct json_object *rcpts;
    char when[64];
    const char *sender = ctl_jstr0(rec, "sender");
    const char *qname = ctl_jstr0(rec, "queue_name");
    int held = strcmp(qname, "hold") == 0;
    size_t n;

    if (cx->count == 1)
        printf("-Queue ID-----  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    ctl_fmt_time(ctl_jint(rec, "arrival_time"), when, sizeof(when));
    /* Postfix marks a held message with '!' after its id */
    printf("%-14s%c %8" PRId64 " %-20s  ", ctl_jstr0(rec, "queue_id"), held ? '!' : ' ',
           ctl_jint(rec, "message_size"), when);
    ctl_put_clean(stdout, *sender ? sender : "MAILER-DAEMON");
    fputc('\n', stdout);
    if (!json_object_object_get_ex(rec, "recipients", &rcpts) ||
        !json_object_is_type(rcpts, json_type_array))
        return;
    n = json_object_array_length(rcpts);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(rcpts, i);
        const char *why = ctl_jstr0(r, "delay_reason");
        if (*why) {
            printf("%47s", "(");
            ctl_put_clean(stdout, why);
            printf(")\n");
        }
        printf("%46s", "");
        ctl_put_clean(stdout, ctl_jstr0(r, "address"));
        if (ctl_jbool(r, "held") && !held)
            printf(" (held)");
        fputc('\n', stdout);
        rcpt_progress(cx, r);
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
        ctl_put_clean(stdout, ctl_jstr0(rec, "queue_id"));
        fputc('\n', stdout);
        return 0;
    }
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    cx->sum += ctl_jint(rec, "message_size") > 0 ? ctl_jint(rec, "message_size") : 0;
    queue_print_text(cx, rec);
    return 0;
}

static void usage_queue(FILE *fp)
{
    fprintf(fp,
            "usage: etrnctl queue [DOMAIN] [--domain D] [--sender S] [--recipient R]\n"
            "                     [--older-than T] [--held] [--limit N] [--ids-only | --count]\n");
}

int ctl_queue(struct ctx *cx, int argc, char **argv)
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
                return ctl_usage_error(usage_queue, "bad --older-than: %s", optarg);
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
                return ctl_usage_error(usage_queue, "bad --limit: %s", optarg);
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
        return ctl_usage_error(usage_queue, "unexpected argument: %s", argv[optind]);
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
    st = ctl_call(cx, &req, queue_cb);
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
    fprintf(fp, "usage: etrnctl summary [--json] [--senders]\n");
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

int ctl_summary(struct ctx *cx, int argc, char **argv)
{
    struct table t;
    struct json_object *limits = NULL;
    size_t nb = 0, n;
    int64_t tot_msgs = 0, tot_bytes = 0, tot_ages[TABLE_MAX_COLS] = {0};
    char cells[TABLE_MAX_COLS][32];
    const char *row[TABLE_MAX_COLS];
    enum { O_SENDERS = ETRNCTL_OPT_FIRST_LOCAL };
    static const struct option longopts[] = {
        ETRNCTL_GLOBAL_LONGOPTS, {"senders", no_argument, NULL, O_SENDERS}, {NULL, 0, NULL, 0}};
    struct ctl_client_req req;
    int st = 0, senders = 0, c;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == O_SENDERS) {
            senders = 1;
        } else if (!etrnctl_global_opt(c, optarg, cx->o, usage_summary)) {
            usage_summary(stderr);
            return EX_USAGE;
        }
    }
    if (optind < argc)
        return ctl_usage_error(usage_summary, "unexpected argument: %s", argv[optind]);
    cx->all = json_object_new_array();
    /* --senders: qshape -s, the same table by the envelope sender's domain */
    if (ctl_client_req_init(&req, "summary") != 0 ||
        (senders && ctl_client_req_add(&req, "senders", "1") != 0)) {
        ctl_client_req_free(&req);
        etrnctl_warn("out of memory");
        st = EX_SOFTWARE;
        goto done;
    }
    st = ctl_call(cx, &req, ctl_keep_cb);
    ctl_client_req_free(&req);
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
    ctl_table_init(&t, nb + 3);
    for (size_t col = 1; col < nb + 3; col++)
        t.right[col] = 1;
    t.shrink[0] = 1;
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
    ctl_table_row(&t, row);
    for (size_t i = 0; i < n; i++) {
        struct json_object *ages;
        if (json_object_object_get_ex(json_object_array_get_idx(cx->all, i), "ages", &ages) &&
            json_object_is_type(ages, json_type_array))
            for (size_t b = 0; b < nb && b < json_object_array_length(ages); b++)
                tot_ages[b] += json_object_get_int64(json_object_array_get_idx(ages, b));
        tot_msgs += ctl_jint(json_object_array_get_idx(cx->all, i), "messages");
        tot_bytes += ctl_jint(json_object_array_get_idx(cx->all, i), "bytes");
    }
    for (size_t pass = 0; pass <= n; pass++) {
        struct json_object *rec = pass == 0 ? NULL : json_object_array_get_idx(cx->all, pass - 1);
        struct json_object *ages = NULL;
        char m[32], by[32];
        if (rec != NULL && !json_object_object_get_ex(rec, "ages", &ages))
            ages = NULL;
        row[0] = rec ? ctl_jstr0(rec, "domain") : "TOTAL";
        if (rec && senders && !row[0][0])
            row[0] = "MAILER-DAEMON"; /* the null sender, as qshape names it */
        ctl_fmt_i64(rec ? ctl_jint(rec, "messages") : tot_msgs, m, sizeof(m));
        ctl_fmt_i64(rec ? ctl_jint(rec, "bytes") : tot_bytes, by, sizeof(by));
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
        ctl_table_row(&t, row);
    }
    ctl_table_print(&t, stdout, cx->o->wide ? 0 : CTL_TABLE_WIDTH);
    ctl_table_free(&t);
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
    char quota[32];
    const char *row[12];
    double pct = ctl_quota_percent(rec);
    const char *le = ctl_jstr0(rec, "last_error");

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    ctl_fmt_i64(ctl_jint(rec, "messages"), msgs, sizeof(msgs));
    ctl_fmt_i64(ctl_jint(rec, "bytes"), bytes, sizeof(bytes));
    ctl_fmt_i64(ctl_jint(rec, "held_messages"), held, sizeof(held));
    ctl_fmt_rel(cx, ctl_jint(rec, "oldest"), oldest, sizeof(oldest));
    ctl_fmt_rel(cx, ctl_jint(rec, "last_etrn"), etrn, sizeof(etrn));
    ctl_fmt_rel(cx, ctl_jint(rec, "last_delivery"), deliv, sizeof(deliv));
    ctl_fmt_rel(cx, ctl_jint(rec, "next_expiry"), expiry, sizeof(expiry));
    if (*le) {
        char at[32];
        ctl_fmt_rel(cx, ctl_jint(rec, "last_error_at"), at, sizeof(at));
        snprintf(err, sizeof(err), "%s: %s", at, le);
    } else {
        snprintf(err, sizeof(err), "-");
    }
    row[0] = ctl_jstr0(rec, "domain");
    row[1] = *ctl_jstr0(rec, "mode") ? ctl_jstr0(rec, "mode") : "-";
    row[2] = *ctl_jstr0(rec, "route") ? ctl_jstr0(rec, "route") : "-";
    row[3] = msgs;
    row[4] = bytes;
    row[5] = held;
    if (pct < 0)
        snprintf(quota, sizeof(quota), "-");
    else
        snprintf(quota, sizeof(quota), "%.0f%%", pct);
    row[6] = quota;
    row[7] = oldest;
    row[8] = etrn;
    row[9] = deliv;
    row[10] = expiry;
    /* an unconfigured domain (bounces to senders) and a running flush are marked */
    row[11] = err;
    {
        char dom[300];
        snprintf(dom, sizeof(dom), "%s%s%s", row[0],
                 ctl_jbool(rec, "configured") ? "" : " (unconfigured)",
                 ctl_jbool(rec, "flushing") ? " *" : "");
        row[0] = dom;
        ctl_table_row(t, row);
    }
    return 0;
}

int ctl_domains(struct ctx *cx, int argc, char **argv)
{
    static const char *const head[] = {"DOMAIN",    "MODE",          "ROUTE",   "MSGS",
                                       "BYTES",     "HELD",          "QUOTA",   "OLDEST",
                                       "LAST-ETRN", "LAST-DELIVERY", "EXPIRES", "LAST-ERROR"};
    struct table t;
    int st = ctl_no_args(cx, argc, argv, usage_domains);

    if (st != 0)
        return st;
    ctl_table_init(&t, 12);
    t.right[3] = t.right[4] = t.right[5] = t.right[6] = 1;
    /* 80 columns: ROUTE, LAST-DELIVERY and EXPIRES only with --wide */
    t.wide_only[2] = t.wide_only[9] = t.wide_only[10] = 1;
    t.shrink[0] = t.shrink[11] = 1;
    ctl_table_row(&t, head);
    cx->table = &t;
    st = ctl_simple_call(cx, "domains", domains_cb);
    cx->table = NULL;
    if (st == 0 && !cx->o->json) {
        ctl_table_print(&t, stdout, cx->o->wide ? 0 : CTL_TABLE_WIDTH);
        if (cx->count == 0)
            printf("(no domains)\n");
    }
    ctl_table_free(&t);
    return st;
}

/* ---- show ----------------------------------------------------------------------------------- */

enum { SHOW_PLAIN = 0, SHOW_ESCAPED };

static void usage_show(FILE *fp)
{
    fprintf(fp, "usage: etrnctl show [--json] [--raw] [--headers] [--body] QUEUEID\n");
}

/* Write the body: with SHOW_ESCAPED made safe for a terminal (lib/termsafe:
 * a stranger's ESC or CSI must not reach the operator's terminal), else as
 * stored but with CRLF line ends as the terminal's LF. */
static void show_body(struct ctx *cx, const char *body, size_t len)
{
    char out[TERMSAFE_OUT_MAX(1024)];
    struct termsafe t;
    size_t n;

    if (cx->mode != SHOW_ESCAPED) {
        for (size_t i = 0; i < len; i++)
            if (!(body[i] == '\r' && i + 1 < len && body[i + 1] == '\n'))
                fputc(body[i], stdout);
        return;
    }
    termsafe_init(&t);
    for (size_t off = 0; off < len; off += n) {
        n = len - off < 1024 ? len - off : 1024;
        fwrite(out, 1, termsafe_put(&t, body + off, n, out), stdout);
    }
    fwrite(out, 1, termsafe_end(&t, out), stdout);
}

static int show_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    struct json_object *rcpts, *body;
    char when[64], next[64];

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
        return 0;
    }
    if (cx->content_only) /* --headers, --body: the content only, as postcat -h, -b */
        goto content;
    ctl_fmt_time(ctl_jint(rec, "arrival_time"), when, sizeof(when));
    printf("queue_id: %s\n", ctl_jstr0(rec, "queue_id"));
    printf("queue: %s\n", ctl_jstr0(rec, "queue_name"));
    printf("arrival: %s\n", when);
    printf("size: %" PRId64 "\n", ctl_jint(rec, "message_size"));
    printf("sender: <");
    ctl_put_clean(stdout, ctl_jstr0(rec, "sender"));
    printf(">\n");
    printf("client: ");
    ctl_put_clean(stdout, ctl_jstr0(rec, "client_helo"));
    printf(" [%s]\n", ctl_jstr0(rec, "client_addr"));
    if (*ctl_jstr0(rec, "envid")) {
        printf("envid: ");
        ctl_put_clean(stdout, ctl_jstr0(rec, "envid"));
        fputc('\n', stdout);
    }
    {
        /* RFC 3461 RET: relayd sends enum smtp_ret (0 unset, 1 FULL, 2 HDRS) */
        int64_t ret = ctl_jint(rec, "dsn_ret");
        if (ret == 1 || ret == 2)
            printf("ret: %s\n", ret == 1 ? "FULL" : "HDRS");
    }
    if (json_object_object_get_ex(rec, "recipients", &rcpts) &&
        json_object_is_type(rcpts, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(rcpts); i++) {
            struct json_object *r = json_object_array_get_idx(rcpts, i);
            const char *waiting = ctl_jstr0(r, "waiting");
            ctl_fmt_rel(cx, ctl_jint(r, "next_attempt"), next, sizeof(next));
            printf("recipient: <");
            ctl_put_clean(stdout, ctl_jstr0(r, "address"));
            printf(">%s attempts=%" PRId64, ctl_jbool(r, "held") ? " held" : "",
                   ctl_jint(r, "attempts") < 0 ? 0 : ctl_jint(r, "attempts"));
            if (*waiting) { /* a hold domain: no retry time (issue 9) */
                printf(" waiting for ");
                ctl_put_clean(stdout, waiting);
            } else {
                printf(" next=%s", ctl_jint(r, "next_attempt") <= 0 ? "now" : next);
            }
            if (*ctl_jstr0(r, "delay_reason")) {
                printf(" reason=");
                ctl_put_clean(stdout, ctl_jstr0(r, "delay_reason"));
            }
            fputc('\n', stdout);
        }
    }
    fputc('\n', stdout);
content:
    if (json_object_object_get_ex(rec, "body", &body) &&
        json_object_is_type(body, json_type_string))
        show_body(cx, json_object_get_string(body), (size_t)json_object_get_string_len(body));
    return 0;
}

int ctl_show(struct ctx *cx, int argc, char **argv)
{
    enum { O_RAW = ETRNCTL_OPT_FIRST_LOCAL, O_HEADERS, O_BODY };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"raw", no_argument, NULL, O_RAW},
                                             {"headers", no_argument, NULL, O_HEADERS},
                                             {"body", no_argument, NULL, O_BODY},
                                             {NULL, 0, NULL, 0}};
    struct ctl_client_req req;
    int st = 0, raw = 0, headers = 0, bodyonly = 0;
    const char *part;
    int c;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == O_RAW) {
            raw = 1;
        } else if (c == O_HEADERS) {
            headers = 1;
        } else if (c == O_BODY) {
            bodyonly = 1;
        } else if (!etrnctl_global_opt(c, optarg, cx->o, usage_show)) {
            usage_show(stderr);
            return EX_USAGE;
        }
    }
    /* Escaped only for a person: a pipe or a file gets the bytes. */
    cx->mode = !raw && isatty(STDOUT_FILENO) ? SHOW_ESCAPED : SHOW_PLAIN;
    if (optind + 1 != argc)
        return ctl_usage_error(usage_show, "%s", "show takes exactly one queue id");
    if (!ctl_valid_id(argv[optind]))
        return ctl_usage_error(usage_show, "not a queue id: %s", argv[optind]);
    /* both: the whole message without the envelope (postcat -hb); relayd
     * sends only the part asked for */
    part = headers && !bodyonly ? "header" : bodyonly && !headers ? "body" : "all";
    cx->content_only = headers || bodyonly;
    if (ctl_client_req_init(&req, "show") != 0 ||
        ctl_client_req_add(&req, "id", argv[optind]) != 0 ||
        (strcmp(part, "all") != 0 && ctl_client_req_add(&req, "part", part) != 0)) {
        ctl_client_req_free(&req);
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = ctl_call(cx, &req, show_cb);
    ctl_client_req_free(&req);
    return st;
}

/* ---- flush ---------------------------------------------------------------------------------- */
