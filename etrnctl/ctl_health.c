/*
 * ctl_health: counters and checks: stats (text, JSON, Prometheus textfile),
 * reload, and check (Nagios plugin shape and exit statuses).
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
    {"quota_refused", "relayd_quota_refused_total",
     "Recipients refused by the domain's queue quota since relayd started."},
};
#define NPER_DOMAIN (sizeof(per_domain) / sizeof(per_domain[0]))

static const struct {
    const char *field, *metric, *type, *help;
} totals[] = {
    {"queue_messages", "relayd_queue_messages", "gauge", "Messages in relayd's queue."},
    {"queue_bytes", "relayd_queue_bytes", "gauge", "Bytes of messages in relayd's queue."},
    {"connections", "relayd_connections", "gauge", "SMTP connections open now."},
    {"uptime", "relayd_uptime_seconds", "gauge", "Seconds since relayd started."},
    {"free_bytes", "relayd_free_bytes", "gauge",
     "Free bytes for the queue, as the free-space reserve counts them."},
    {"queue_minfree", "relayd_queue_minfree_bytes", "gauge",
     "The free-space reserve: below it new mail is refused."},
    {"nospace_refused", "relayd_nospace_refused_total", "counter",
     "Transactions refused by the free-space reserve since relayd started."},
};

int ctl_stats(struct ctx *cx, int argc, char **argv)
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
        return ctl_usage_error(usage_stats, "unexpected argument: %s", argv[optind]);
    if (prom && cx->o->json)
        return ctl_usage_error(usage_stats, "%s", "--prometheus and --json exclude each other");
    cx->all = json_object_new_array();
    st = ctl_simple_call(cx, "stats", ctl_keep_cb);
    if (st != 0 || cx->o->json)
        goto done;
    n = json_object_array_length(cx->all);
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(cx->all, i);
        if (*ctl_jstr0(r, "domain") == '\0')
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
                int64_t v = ctl_jint(r, per_domain[m].field);
                if (*ctl_jstr0(r, "domain") == '\0' || v < 0)
                    continue;
                printf("%s{domain=\"", per_domain[m].metric);
                prom_label(stdout, ctl_jstr0(r, "domain"));
                printf("\"} %" PRId64 "\n", v);
            }
        }
        for (size_t m = 0; tot != NULL && m < sizeof(totals) / sizeof(totals[0]); m++) {
            int64_t v = ctl_jint(tot, totals[m].field);
            if (v < 0)
                continue;
            printf("# HELP %s %s\n# TYPE %s %s\n%s %" PRId64 "\n", totals[m].metric, totals[m].help,
                   totals[m].metric, totals[m].type, totals[m].metric, v);
        }
    } else {
        static const char *const head[] = {"DOMAIN",  "RECEIVED", "DELIVERED", "DEFERRED",
                                           "BOUNCED", "ETRN",     "OVERQUOTA"};
        struct table t;
        char cells[NPER_DOMAIN][32];
        const char *row[NPER_DOMAIN + 1];

        ctl_table_init(&t, NPER_DOMAIN + 1);
        for (size_t k = 1; k < NPER_DOMAIN + 1; k++)
            t.right[k] = 1;
        t.shrink[0] = 1;
        ctl_table_row(&t, head);
        for (size_t i = 0; i < n; i++) {
            struct json_object *r = json_object_array_get_idx(cx->all, i);
            if (*ctl_jstr0(r, "domain") == '\0')
                continue;
            row[0] = ctl_jstr0(r, "domain");
            for (size_t k = 0; k < NPER_DOMAIN; k++) {
                ctl_fmt_i64(ctl_jint(r, per_domain[k].field), cells[k], sizeof(cells[k]));
                row[k + 1] = cells[k];
            }
            ctl_table_row(&t, row);
        }
        ctl_table_print(&t, stdout, cx->o->wide ? 0 : CTL_TABLE_WIDTH);
        ctl_table_free(&t);
        if (tot != NULL) {
            char up[32];
            etrnctl_format_age((double)ctl_jint(tot, "uptime"), up, sizeof(up));
            printf("queue: %" PRId64 " messages, %" PRId64 " bytes; connections: %" PRId64
                   "; uptime: %s\n",
                   ctl_jint(tot, "queue_messages"), ctl_jint(tot, "queue_bytes"),
                   ctl_jint(tot, "connections"), up);
            if (ctl_jint(tot, "free_bytes") >= 0)
                printf("storage: %" PRId64 " bytes free, reserve %" PRId64
                       " bytes; refused for space: %" PRId64 "\n",
                       ctl_jint(tot, "free_bytes"), ctl_jint(tot, "queue_minfree"),
                       ctl_jint(tot, "nospace_refused") > 0 ? ctl_jint(tot, "nospace_refused") : 0);
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

int ctl_reload(struct ctx *cx, int argc, char **argv)
{
    int st = ctl_no_args(cx, argc, argv, usage_reload);

    if (st == 0)
        st = ctl_simple_call(cx, "reload", reload_cb);
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
                "[--crit-count N] [--deep]\n");
}

/* Nagios plugin: one status line, perfdata after '|', exit 0 OK, 1
 * WARNING, 2 CRITICAL, 3 UNKNOWN. relayd not running is CRITICAL; a bad
 * command line or a refused request is UNKNOWN. */
int ctl_check(struct ctx *cx, int argc, char **argv)
{
    enum { O_WA = ETRNCTL_OPT_FIRST_LOCAL, O_CA, O_WC, O_CC, O_DEEP };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"warn-age", required_argument, NULL, O_WA},
                                             {"crit-age", required_argument, NULL, O_CA},
                                             {"warn-count", required_argument, NULL, O_WC},
                                             {"crit-count", required_argument, NULL, O_CC},
                                             {"deep", no_argument, NULL, O_DEEP},
                                             {NULL, 0, NULL, 0}};
    static const char *const names[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
    double warn_age = -1, crit_age = -1;
    int warn_count = -1, crit_count = -1, c, st, status = NAGIOS_OK, deep = 0;
    int64_t msgs = 0, oldest = -1, total = -1;
    const char *oldest_dom = "";
    double worst_pct = 0;
    char worst[300] = "";
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
        case O_DEEP:
            deep = 1;
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
    st = ctl_simple_call(cx, "domains", ctl_keep_cb);
    if (st == 0)
        st = ctl_simple_call(cx, "stats", ctl_keep_cb); /* its totals count each message once */
    /* --deep: relayd reads the whole queue file (PRAGMA quick_check) and
     * answers when it is done; damage also stops relayd (exit 70). */
    if (st == 0 && deep)
        st = ctl_simple_call(cx, "integrity", ctl_keep_cb);
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
        int64_t m = ctl_jint(r, "messages"), o = ctl_jint(r, "oldest");
        if (ctl_jint(r, "queue_messages") >= 0)
            total = ctl_jint(r, "queue_messages");
        if (m > 0)
            msgs += m; /* a message with recipients in two domains counts twice */
        if (m > 0 && o >= 0 && (oldest < 0 || o < oldest)) {
            oldest = o;
            oldest_dom = ctl_jstr0(r, "domain");
        }
    }
    if (total >= 0)
        msgs = total;
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(cx->all, i);
        const char *integ = ctl_jstr0(r, "integrity");
        if (strcmp(integ, "damaged") == 0)
            snprintf(worst, sizeof(worst), "queue damaged: %s", ctl_jstr0(r, "detail"));
    }
    /* Storage (issue 11): a domain's quota or the free-space reserve is
     * WARNING from 80 % used, CRITICAL at 100 %. */
    for (size_t i = 0; i < n; i++) {
        struct json_object *r = json_object_array_get_idx(cx->all, i);
        double pct = ctl_quota_percent(r);
        int64_t fb = ctl_jint(r, "free_bytes"), mf = ctl_jint(r, "queue_minfree");
        if (fb >= 0 && mf > 0) {
            /* 100 %: free space is down to the reserve; 80 %: within 1/0.8 of it */
            double rp = fb > 0 ? 100.0 * (double)mf / (double)fb : 100.0;
            if (rp >= 80 && rp > worst_pct) {
                worst_pct = rp;
                snprintf(worst, sizeof(worst), "free space %" PRId64 " bytes, reserve %" PRId64, fb,
                         mf);
            }
        }
        if (pct >= 80 && pct > worst_pct) {
            worst_pct = pct;
            snprintf(worst, sizeof(worst), "%s at %.0f%% of its quota", ctl_jstr0(r, "domain"),
                     pct);
        }
    }
    {
        double a = oldest < 0 ? 0 : (double)(cx->now - (time_t)oldest);
        if (a < 0)
            a = 0;
        if ((crit_age >= 0 && oldest >= 0 && a >= crit_age) ||
            (crit_count >= 0 && msgs >= crit_count) || worst_pct >= 100 ||
            strncmp(worst, "queue damaged", 13) == 0)
            status = NAGIOS_CRITICAL;
        else if ((warn_age >= 0 && oldest >= 0 && a >= warn_age) ||
                 (warn_count >= 0 && msgs >= warn_count) || worst_pct >= 80)
            status = NAGIOS_WARNING;
        etrnctl_format_age(a, age, sizeof(age));
        if (oldest >= 0)
            snprintf(why, sizeof(why), "%" PRId64 " message%s queued, oldest %s (%s)", msgs,
                     msgs == 1 ? "" : "s", age, oldest_dom);
        else
            snprintf(why, sizeof(why), "%" PRId64 " messages queued", msgs);
        if (worst[0]) {
            size_t l = strlen(why);
            snprintf(why + l, sizeof(why) - l, "; %s", worst);
        }
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
        ctl_put_clean(stdout, why);
        if (st == 0)
            printf(" | messages=%" PRId64 ";%s;%s;0 oldest_age=%ss;%s;%s;0", msgs, wc, cc, age, wa,
                   ca);
        fputc('\n', stdout);
    }
    json_object_put(cx->all);
    cx->all = NULL;
    return status;
}
