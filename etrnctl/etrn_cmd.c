/*
 * etrn_cmd: the site side. `etrnctl etrn` asks relays to start delivering a
 * site's queued mail (RFC 1985 ETRN): relays from -H, /etc/default/etrnctl or
 * every MX host (--all-mx, c-ares through lib/dns on a uv loop), one session
 * per relay, one ETRN per domain, with retries, --wait polling and a lock.
 * It is a short-lived client: the SMTP sessions use plain sockets with
 * poll() deadlines (lib/tls for STARTTLS); it never talks to relayd's socket.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "defaults.h"
#include "dns.h"
#include "etrnctl.h"
#include "smtp_auth.h"
#include "smtp_io.h"
#include "smtp_parse.h"
#include "tls.h"

#define DEFAULT_LOCK_DIR "/run/lock"
#define MAX_DOMAINS      256
#define MAX_RELAYS       64
#define MAX_ADDRS        16
#define WAIT_DEFAULT     300.0 /* seconds */
#define WAIT_CAP         30.0  /* the --wait interval grows 1, 2, 4 ... up to this */

/* One (relay, domain) question and the last answer to it. */
struct pair {
    int status;       /* exit status this answer stands for (0 = fine) */
    int code;         /* reply code, 0 when no reply was had */
    long count;       /* messages the relay reported (253), -1 unknown */
    int again;        /* to be asked (again) in the next attempt or round */
    int answered;     /* got a reply to ETRN in the latest attempt */
    const char *what; /* short meaning ("flushing", "nothing waiting", ...) */
    char reply[512];  /* the reply line, or why there was none */
};

struct relay {
    char label[300]; /* "host:port" as printed */
    char host[256];  /* without brackets */
    int port;
    int from_mx; /* found by --all-mx: addresses come from lib/dns */
    struct sockaddr_storage addrs[MAX_ADDRS];
    size_t naddrs;
    char resolve_err[400]; /* why an MX host has no address */
    size_t ndom;
    int dom[MAX_DOMAINS]; /* indices into run->domains */
    struct pair pairs[MAX_DOMAINS];
};

struct run {
    struct etrnctl_opts *o;
    /* options */
    const char *relay_args[MAX_RELAYS];
    size_t nrelay_args;
    int all_mx;
    const char *self[16];
    size_t nself;
    int port;
    const char *dns_servers;
    int starttls; /* 0 no, 1 required, 2 required and verified */
    const char *tls_ca;
    const char *user; /* --user: AUTH as this account before ETRN (etrn_access = auth) */
    const char *password_file;
    const char *mech;
    char password[SMTP_AUTH_PASSWORD_MAX];
    const char *helo;
    int retries;
    double retry_delay;
    int wait;
    double wait_timeout;
    const char *wait_local;
    double timeout;
    const char *lock_dir;
    /* state */
    char *domains[MAX_DOMAINS];
    struct smtp_etrn_arg parsed[MAX_DOMAINS];
    int dom_status[MAX_DOMAINS]; /* outcomes that concern a domain, not a pair */
    size_t ndomains;
    struct relay *relays[MAX_RELAYS];
    size_t nrelays;
    struct tls_ctx *tls;
    char helo_buf[256];
    char self_buf[256];    /* the host name, as --self's default */
    char *defaults_relays; /* owned strings from the defaults file */
    char *defaults_domains;
    char *defaults_user;
    char *defaults_password_file;
    int round;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void sleep_for(double seconds)
{
    struct timespec ts, rem;

    if (seconds <= 0)
        return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
}

static void fmt_secs(double s, char *out, size_t outlen)
{
    if (s == (double)(long)s)
        snprintf(out, outlen, "%lds", (long)s);
    else
        snprintf(out, outlen, "%.1fs", s);
}

static void verbose(const struct run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void verbose(const struct run *run, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (run->o->verbose == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "etrnctl: %s\n", line);
}

static int name_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

static void make_label(struct relay *r)
{
    if (strchr(r->host, ':') != NULL)
        snprintf(r->label, sizeof(r->label), "[%s]:%d", r->host, r->port);
    else
        snprintf(r->label, sizeof(r->label), "%s:%d", r->host, r->port);
}

/* ---- one session with one relay -------------------------------------------------------- */

/* What an ETRN reply means (RFC 1985 §5, DESIGN.md §3). */
static void classify(struct pair *p, const struct smtp_io_reply *r)
{
    p->code = r->code;
    p->count = -1;
    p->answered = 1;
    snprintf(p->reply, sizeof(p->reply), "%s", r->line);
    if (r->code == 253) {
        /* "253 [2.0.0] <n> pending messages for node <x> started", or
         * RFC 1985's own "253 OK, <n> pending ...": the first word that is
         * all digits (an enhanced code has dots) */
        const char *t = r->line + 3;
        while (*t != '\0' && p->count < 0) {
            size_t n;
            while (*t == ' ')
                t++;
            n = strcspn(t, " ");
            if (n > 0 && n < 10 && strspn(t, "0123456789") == n)
                p->count = strtol(t, NULL, 10);
            t += n;
        }
        p->status = 0;
        p->what = p->count == 0 ? "nothing waiting" : "flushing";
    } else if (r->code == 251) {
        p->count = 0;
        p->status = 0;
        p->what = "nothing waiting";
    } else if (r->code == 252) {
        p->status = 0;
        p->what = "flush started, count unknown";
    } else if (r->code / 100 == 2) {
        /* 250 (Postfix, sendmail): started; whether anything waits is not said */
        p->status = 0;
        p->what = "started, count unknown";
    } else if (r->code == 459) {
        /* RFC 1985: a 4yz code, but "node not allowed" will not change by
         * retrying: a refusal */
        p->status = EX_NOPERM;
        p->what = "refused";
    } else if (r->code == 458) {
        p->status = EX_TEMPFAIL;
        p->what = "relay cannot start a flush now";
    } else if (r->code == 421) {
        p->status = EX_TEMPFAIL;
        p->what = "relay closed the session";
    } else if (r->code / 100 == 4) {
        p->status = EX_TEMPFAIL;
        p->what = "temporary failure";
    } else if (r->code == 500 || r->code == 502 || r->code == 504) {
        p->status = EX_UNAVAILABLE; /* command unrecognized / not implemented */
        p->what = "relay does not support ETRN";
    } else if (r->code == 530) {
        /* RFC 4954 §6: the relay wants an account (etrn_access = auth) */
        p->status = EX_NOPERM;
        p->what = "authentication required (--user, --password-file)";
    } else if (r->code / 100 == 5) {
        p->status = EX_NOPERM;
        p->what = "refused";
    } else {
        p->status = EX_PROTOCOL;
        p->what = "unexpected reply";
    }
}

/* Mark every pair still to be asked with a failure that ended the session. */
static void fail_pending(struct relay *rl, int status, const char *what, const char *why)
{
    for (size_t i = 0; i < rl->ndom; i++) {
        struct pair *p = &rl->pairs[i];
        if (!p->again || p->answered)
            continue;
        p->status = status;
        p->code = 0;
        p->count = -1;
        p->what = what;
        snprintf(p->reply, sizeof(p->reply), "%s", why);
    }
}

static void fail_reply(struct relay *rl, const struct smtp_io_reply *r, const char *stage)
{
    char why[600];
    int st = r->code / 100 == 4 ? EX_TEMPFAIL : r->code / 100 == 5 ? EX_NOPERM : EX_PROTOCOL;

    snprintf(why, sizeof(why), "%s", r->line);
    fail_pending(rl, st, stage, why);
}

/* One SMTP session: greeting, EHLO, optional STARTTLS, one ETRN per pair
 * marked `again`, QUIT. Outcomes land in the pairs; nothing is printed but
 * -v's dialogue. */
static void session(struct run *run, struct relay *rl)
{
    struct smtp_io *io = calloc(1, sizeof(*io));
    struct smtp_io_reply r;
    char line[600];

    if (io == NULL) {
        fail_pending(rl, EX_SOFTWARE, "internal error", "out of memory");
        return;
    }
    for (size_t i = 0; i < rl->ndom; i++)
        rl->pairs[i].answered = 0;
    smtp_io_init(io, rl->label, run->timeout, run->o->verbose > 0);
    if (rl->from_mx && rl->naddrs == 0) {
        fail_pending(rl, EX_TEMPFAIL, "cannot connect", rl->resolve_err);
        goto done;
    }
    if (smtp_io_connect(io, rl->host, rl->port, rl->from_mx ? rl->addrs : NULL, rl->naddrs) != 0) {
        fail_pending(rl, EX_TEMPFAIL, "cannot connect", io->err);
        goto done;
    }
    if (smtp_io_read_reply(io, &r) != 0) {
        fail_pending(rl, EX_TEMPFAIL, "no greeting", io->err);
        goto done;
    }
    if (r.code != 220) {
        fail_reply(rl, &r, "relay refused the connection");
        goto done;
    }
    snprintf(line, sizeof(line), "EHLO %s", run->helo);
    if (smtp_io_cmd(io, line) != 0 || smtp_io_read_reply(io, &r) != 0) {
        fail_pending(rl, EX_TEMPFAIL, "session failed", io->err);
        goto done;
    }
    if (r.code / 100 == 5) {
        /* No ESMTP, so no keyword list, so no ETRN (RFC 1985 §3): a HELO
         * fallback could not tell us anything. */
        fail_pending(rl, EX_UNAVAILABLE, "relay does not offer ETRN", r.line);
        goto done;
    }
    if (r.code != 250) {
        fail_reply(rl, &r, "EHLO failed");
        goto done;
    }
    if (run->starttls) {
        if (!smtp_io_has_keyword(&r, "STARTTLS")) {
            fail_pending(rl, EX_UNAVAILABLE, "relay does not offer STARTTLS",
                         "STARTTLS not in the EHLO reply");
            goto done;
        }
        if (smtp_io_cmd(io, "STARTTLS") != 0 || smtp_io_read_reply(io, &r) != 0) {
            fail_pending(rl, EX_TEMPFAIL, "session failed", io->err);
            goto done;
        }
        if (r.code != 220) {
            fail_reply(rl, &r, "STARTTLS refused");
            goto done;
        }
        if (smtp_io_starttls(io, run->tls, rl->host, run->starttls == 2) != 0) {
            fail_pending(rl, EX_PROTOCOL, "TLS failed", io->err);
            goto done;
        }
        /* RFC 3207 §4.2: forget what was learnt in the clear and ask again */
        if (smtp_io_cmd(io, line) != 0 || smtp_io_read_reply(io, &r) != 0) {
            fail_pending(rl, EX_TEMPFAIL, "session failed", io->err);
            goto done;
        }
        if (r.code != 250) {
            fail_reply(rl, &r, "EHLO failed");
            goto done;
        }
    }
    if (!smtp_io_has_keyword(&r, "ETRN")) {
        fail_pending(rl, EX_UNAVAILABLE, "relay does not offer ETRN", "ETRN not in the EHLO reply");
        goto done;
    }
    if (run->user != NULL) {
        /* RFC 4954: AUTH before ETRN, for a relay whose etrn_access wants
         * the account that owns the domain */
        char why[300];
        int st = smtp_auth(io, &r, run->user, run->password, run->mech, why, sizeof(why));
        if (st != 0) {
            fail_pending(rl, st, st == EX_NOPERM ? "authentication refused" : "AUTH failed", why);
            goto done;
        }
        verbose(run, "%s: authenticated as %s", rl->label, run->user);
    }
    /* One ETRN per domain, and on to the next whatever the answer: a 251
     * for one domain says nothing about the others (unlike fetchmail). */
    for (size_t i = 0; i < rl->ndom; i++) {
        struct pair *p = &rl->pairs[i];
        if (!p->again)
            continue;
        snprintf(line, sizeof(line), "ETRN %s", run->domains[rl->dom[i]]);
        if (smtp_io_cmd(io, line) != 0 || smtp_io_read_reply(io, &r) != 0) {
            fail_pending(rl, EX_TEMPFAIL, "session failed", io->err);
            goto done;
        }
        classify(p, &r);
        if (r.code == 421) { /* the relay is closing the channel (RFC 5321 §3.8) */
            fail_pending(rl, EX_TEMPFAIL, "relay closed the session", r.line);
            goto done;
        }
    }
    if (smtp_io_cmd(io, "QUIT") == 0)
        (void)smtp_io_read_reply(io, &r);
done:
    smtp_io_close(io);
    free(io);
}

/* ---- reporting -------------------------------------------------------------------------- */

static void json_str(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(fp, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            fprintf(fp, "\\u%04x", *p);
        else
            fputc(*p, fp);
    }
    fputc('"', fp);
}

/* Print one pair's outcome: a JSON record, or a text line (stdout for
 * success, stderr for trouble). progress: a --wait repetition. */
static void report(const struct run *run, const struct relay *rl, const struct pair *p,
                   const char *domain, int progress)
{
    FILE *fp = stdout;

    if (run->o->json) {
        fprintf(fp, "{\"relay\":");
        json_str(fp, rl->label);
        fprintf(fp, ",\"domain\":");
        json_str(fp, domain);
        fprintf(fp, ",\"round\":%d,\"code\":", run->round);
        if (p->code)
            fprintf(fp, "%d", p->code);
        else
            fprintf(fp, "null");
        fprintf(fp, ",\"count\":");
        if (p->count >= 0)
            fprintf(fp, "%ld", p->count);
        else
            fprintf(fp, "null");
        fprintf(fp, ",\"result\":");
        json_str(fp, p->what ? p->what : "");
        fprintf(fp, ",\"reply\":");
        json_str(fp, p->reply);
        fprintf(fp, ",\"status\":%d}\n", p->status);
        fflush(fp);
        return;
    }
    if (p->status != 0) {
        fprintf(stderr, "etrnctl: %s: %s: %s (%s)\n", rl->label, domain, p->what, p->reply);
        return;
    }
    if (run->o->quiet)
        return;
    if (progress && p->count >= 0)
        fprintf(fp, "%s: %s: %ld waiting", rl->label, domain, p->count);
    else if (progress)
        fprintf(fp, "%s: %s: %s", rl->label, domain, p->what);
    else if (p->code == 253 && p->count < 0)
        fprintf(fp, "%s: %s: flush started, count unknown", rl->label, domain);
    else if (p->code == 253 && p->count > 0)
        fprintf(fp, "%s: %s: flushing %ld message%s", rl->label, domain, p->count,
                p->count == 1 ? "" : "s");
    else
        fprintf(fp, "%s: %s: %s", rl->label, domain, p->what);
    if (run->o->verbose)
        fprintf(fp, " (%s)", p->reply);
    fputc('\n', fp);
    fflush(fp);
}

/* ---- the defaults file ------------------------------------------------------------------ */

/* ETRN_RELAYS, ETRN_DOMAINS, ETRN_USER and ETRN_PASSWORD_FILE from the
 * defaults file (etrnctl_defaults_read). */
static void take_default(void *arg, const char *name, char *value)
{
    struct run *run = arg;

    if (strcmp(name, "ETRN_RELAYS") == 0) {
        free(run->defaults_relays);
        run->defaults_relays = value;
    } else if (strcmp(name, "ETRN_DOMAINS") == 0) {
        free(run->defaults_domains);
        run->defaults_domains = value;
    } else if (strcmp(name, "ETRN_USER") == 0) {
        free(run->defaults_user);
        run->defaults_user = value;
    } else if (strcmp(name, "ETRN_PASSWORD_FILE") == 0) {
        free(run->defaults_password_file);
        run->defaults_password_file = value;
    } else {
        free(value);
    }
}

/* Split a space-separated list in place into ptrs[]. Returns the count or
 * -1 when there are more than max words. */
static int split_words(char *s, const char **ptrs, size_t have, size_t max)
{
    size_t n = have;

    for (char *tok = strtok(s, " \t,"); tok != NULL; tok = strtok(NULL, " \t,")) {
        if (n >= max)
            return -1;
        ptrs[n++] = tok;
    }
    return (int)n;
}

/* ---- relays ------------------------------------------------------------------------------ */

static struct relay *relay_find(struct run *run, const char *host, int port)
{
    for (size_t i = 0; i < run->nrelays; i++)
        if (run->relays[i]->port == port && name_eq(run->relays[i]->host, host))
            return run->relays[i];
    return NULL;
}

static struct relay *relay_add(struct run *run, const char *host, int port, int from_mx)
{
    struct relay *rl = relay_find(run, host, port);

    if (rl != NULL)
        return rl;
    if (run->nrelays >= MAX_RELAYS) {
        etrnctl_warn("more than %d relays", MAX_RELAYS);
        return NULL;
    }
    rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        etrnctl_warn("out of memory");
        return NULL;
    }
    snprintf(rl->host, sizeof(rl->host), "%s", host);
    rl->port = port;
    rl->from_mx = from_mx;
    make_label(rl);
    run->relays[run->nrelays++] = rl;
    return rl;
}

static void relay_add_domain(struct relay *rl, int dom)
{
    for (size_t i = 0; i < rl->ndom; i++)
        if (rl->dom[i] == dom)
            return;
    rl->dom[rl->ndom] = dom;
    rl->pairs[rl->ndom].again = 1;
    rl->pairs[rl->ndom].count = -1;
    rl->ndom++;
}

/* ---- --all-mx: MX hosts of every domain, through lib/dns on a uv loop -------------------- */

struct mx_state {
    struct run *run;
    struct dns *dns;
    uv_timer_t timer;
    int outstanding;
    int timed_out;
};

struct mx_query {
    struct mx_state *st;
    int dom;             /* for MX queries */
    struct relay *relay; /* for address queries */
};

static int is_self(const struct run *run, const char *host)
{
    for (size_t i = 0; i < run->nself; i++)
        if (name_eq(run->self[i], host))
            return 1;
    return 0;
}

static void mx_done_one(struct mx_state *st)
{
    if (--st->outstanding == 0) {
        uv_timer_stop(&st->timer);
        uv_close((uv_handle_t *)&st->timer, NULL);
    }
}

static void on_addr(void *arg, int status, const struct dns_addr *addrs, size_t n, uint32_t ttl,
                    const char *why)
{
    struct mx_query *q = arg;
    struct relay *rl = q->relay;

    (void)ttl;
    (void)why;
    if (status == DNS_OK) {
        for (size_t i = 0; i < n && rl->naddrs < MAX_ADDRS; i++)
            rl->addrs[rl->naddrs++] = addrs[i].addr;
    } else {
        snprintf(rl->resolve_err, sizeof(rl->resolve_err), "cannot resolve %s: %s", rl->host,
                 dns_strerror(status));
    }
    mx_done_one(q->st);
    free(q);
}

static void on_mx(void *arg, int status, const struct dns_mx *mx, size_t n, uint32_t ttl,
                  const char *why)
{
    struct mx_query *q = arg;
    struct mx_state *st = q->st;
    struct run *run = st->run;
    const char *dom = run->parsed[q->dom].name;
    int asked = 0;

    (void)ttl;
    (void)why;
    if (status != DNS_OK) {
        int s = status == DNS_TEMPFAIL || status == DNS_CANCELLED ? EX_TEMPFAIL : EX_UNAVAILABLE;
        etrnctl_warn("%s: MX lookup: %s", dom, dns_strerror(status));
        run->dom_status[q->dom] = etrnctl_worse(run->dom_status[q->dom], s);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        struct relay *rl;
        struct mx_query *aq;

        if (mx[i].host[0] == '\0') /* null MX (RFC 7505): no relay holds mail for it */
            continue;
        if (is_self(run, mx[i].host)) {
            verbose(run, "%s: MX %u %s is this site: skipped", dom, mx[i].pref, mx[i].host);
            continue;
        }
        verbose(run, "%s: MX %u %s", dom, mx[i].pref, mx[i].host);
        rl = relay_find(run, mx[i].host, run->port);
        if (rl == NULL) {
            rl = relay_add(run, mx[i].host, run->port, 1);
            if (rl == NULL)
                continue;
            aq = calloc(1, sizeof(*aq));
            if (aq == NULL)
                continue;
            aq->st = st;
            aq->relay = rl;
            st->outstanding++;
            if (dns_query_addr(st->dns, mx[i].host, AF_UNSPEC, on_addr, aq) != 0) {
                snprintf(rl->resolve_err, sizeof(rl->resolve_err), "cannot resolve %s", mx[i].host);
                st->outstanding--;
                free(aq);
            }
        }
        relay_add_domain(rl, q->dom);
        asked = 1;
    }
    if (!asked && run->nrelay_args == 0) {
        etrnctl_warn("%s: no MX host other than this site: no relay to ask", dom);
        run->dom_status[q->dom] = etrnctl_worse(run->dom_status[q->dom], EX_UNAVAILABLE);
    }
done:
    mx_done_one(st);
    free(q);
}

static void on_mx_timeout(uv_timer_t *t)
{
    struct mx_state *st = t->data;

    st->timed_out = 1;
    dns_close(st->dns); /* every query answers DNS_CANCELLED */
    st->dns = NULL;
}

/* Find the MX hosts of every domain and their addresses. 0, or an exit
 * status for a failure that stops everything. */
static int find_mx_relays(struct run *run)
{
    uv_loop_t loop;
    struct mx_state st = {.run = run};
    char err[256];
    int rc = 0;

    if (uv_loop_init(&loop) != 0) {
        etrnctl_warn("cannot start an event loop");
        return EX_SOFTWARE;
    }
    if (dns_open(&loop, run->dns_servers, &st.dns, err, sizeof(err)) != 0) {
        etrnctl_warn("DNS: %s", err);
        rc = EX_CONFIG;
        goto done;
    }
    uv_timer_init(&loop, &st.timer);
    st.timer.data = &st;
    st.outstanding = 1; /* held until every MX query is issued */
    for (size_t i = 0; i < run->ndomains; i++) {
        struct mx_query *q = calloc(1, sizeof(*q));
        if (q == NULL)
            continue;
        q->st = &st;
        q->dom = (int)i;
        st.outstanding++;
        if (dns_query_mx(st.dns, run->parsed[i].name, on_mx, q) != 0) {
            etrnctl_warn("%s: cannot look up its MX hosts", run->parsed[i].name);
            run->dom_status[i] = etrnctl_worse(run->dom_status[i], EX_TEMPFAIL);
            st.outstanding--;
            free(q);
        }
    }
    uv_timer_start(&st.timer, on_mx_timeout, (uint64_t)(run->timeout * 1000), 0);
    mx_done_one(&st);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (st.dns != NULL)
        dns_close(st.dns);
    if (!uv_is_closing((uv_handle_t *)&st.timer))
        uv_close((uv_handle_t *)&st.timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (st.timed_out)
        etrnctl_warn("DNS lookups did not finish within %.0fs", run->timeout);
done:
    uv_loop_close(&loop);
    return rc;
}

/* ---- lock file -------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcasecmp(*(char *const *)a, *(char *const *)b);
}

/* One lock per set of domains, so two runs for the same site (cron and a
 * link-up hook) never overlap; the second exits with EX_TEMPFAIL at once.
 * Returns the open fd (kept until exit), -1 when no lock could be made
 * (warned; the run goes on), or -2 when another run holds it. */
static int take_lock(struct run *run)
{
    char *sorted[MAX_DOMAINS];
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64 */
    char path[4096], pid[32];
    const char *dir = run->lock_dir;
    int fd, n;

    memcpy(sorted, run->domains, run->ndomains * sizeof(*sorted));
    qsort(sorted, run->ndomains, sizeof(*sorted), cmp_str);
    for (size_t i = 0; i < run->ndomains; i++) {
        for (const char *p = sorted[i]; *p; p++) {
            h ^= (unsigned char)tolower((unsigned char)*p);
            h *= 1099511628211ULL;
        }
        h ^= ' ';
        h *= 1099511628211ULL;
    }
    if (dir == NULL || *dir == '\0')
        dir = getenv("ETRNCTL_LOCK_DIR");
    if (dir == NULL || *dir == '\0') {
        dir = DEFAULT_LOCK_DIR;
        if (access(dir, W_OK) != 0 && getenv("XDG_RUNTIME_DIR") != NULL)
            dir = getenv("XDG_RUNTIME_DIR");
    }
    snprintf(path, sizeof(path), "%s/etrnctl-%016llx.lock", dir, (unsigned long long)h);
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        etrnctl_warn("lock %s: %s (going on without a lock)", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char other[32] = "";
        ssize_t r = pread(fd, other, sizeof(other) - 1, 0);
        if (r > 0) {
            other[r] = '\0';
            other[strcspn(other, "\n")] = '\0';
        }
        close(fd);
        if (errno == EWOULDBLOCK || errno == EAGAIN || r >= 0) {
            etrnctl_warn("another etrnctl%s%s is already running for these domains (%s)",
                         other[0] ? " pid " : "", other, path);
            return -2;
        }
        etrnctl_warn("lock %s: %s (going on without a lock)", path, strerror(errno));
        return -1;
    }
    verbose(run, "lock %s", path);
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0)
        verbose(run, "lock %s: cannot record the pid", path);
    return fd;
}

/* ---- --wait-local ----------------------------------------------------------------------- */

/* Wait until the site's own MTA greets with 220 on host:port, so the relay
 * does not connect back before the site can take mail. 0 or EX_TEMPFAIL. */
static int wait_local(struct run *run, double deadline)
{
    char host[256];
    int port;
    struct smtp_io *io = calloc(1, sizeof(*io));
    int st = EX_TEMPFAIL;
    char why[600] = "not tried";

    if (io == NULL)
        return EX_SOFTWARE;
    if (smtp_io_parse_hostport(run->wait_local, 25, host, sizeof(host), &port) != 0) {
        free(io);
        return EX_USAGE;
    }
    for (int tries = 1; tries < 100000; tries++) {
        struct smtp_io_reply r = {0};
        double left = deadline - smtp_io_now();

        smtp_io_init(io, run->wait_local, left < 5 ? (left > 0.1 ? left : 0.1) : 5,
                     run->o->verbose > 0);
        io->peer_name = "the local MTA";
        if (smtp_io_connect(io, host, port, NULL, 0) == 0 && smtp_io_read_reply(io, &r) == 0 &&
            r.code == 220) {
            if (smtp_io_cmd(io, "QUIT") == 0)
                (void)smtp_io_read_reply(io, &r);
            smtp_io_close(io);
            verbose(run, "%s: local MTA answers", run->wait_local);
            st = 0;
            break;
        }
        snprintf(why, sizeof(why), "%s", io->fd >= 0 && r.code ? r.line : io->err);
        smtp_io_close(io);
        verbose(run, "%s: local MTA not ready: %s", run->wait_local, why);
        if (smtp_io_now() + 1 >= deadline)
            break;
        sleep_for(1);
    }
    if (st != 0)
        etrnctl_warn("local MTA at %s did not answer in time: %s", run->wait_local, why);
    free(io);
    return st;
}

/* ---- rounds and the exit status ---------------------------------------------------------- */

/* Ask one relay, retrying connection failures and 4xx answers (--retry).
 * attempts_left counts the first attempt. */
static void ask_relay(struct run *run, struct relay *rl, int attempts)
{
    char d[32];

    fmt_secs(run->retry_delay, d, sizeof(d));
    for (int a = 1; a <= attempts; a++) {
        int temp = 0;

        verbose(run, "%s: connecting (attempt %d of %d)", rl->label, a, attempts);
        session(run, rl);
        for (size_t i = 0; i < rl->ndom; i++) {
            struct pair *p = &rl->pairs[i];
            p->again = p->again && p->status == EX_TEMPFAIL;
            temp |= p->again;
        }
        if (!temp)
            break;
        if (a < attempts) {
            for (size_t i = 0; i < rl->ndom; i++)
                if (rl->pairs[i].again)
                    verbose(run, "%s: %s: attempt %d of %d failed: %s (%s); retrying in %s",
                            rl->label, run->domains[rl->dom[i]], a, attempts, rl->pairs[i].what,
                            rl->pairs[i].reply, d);
            sleep_for(run->retry_delay);
        }
    }
}

/* Whether --wait must ask this pair again: the relay said mail is still
 * pending (253 n > 0, 252), or the question failed for now. A bare 250
 * (Postfix) never turns into 251, so it is not repeated. */
static int wants_again(const struct pair *p)
{
    if (p->status == EX_TEMPFAIL)
        return 1;
    return p->status == 0 && (p->code == 252 || (p->code == 253 && p->count != 0));
}

static void report_all(struct run *run, int progress)
{
    for (size_t r = 0; r < run->nrelays; r++) {
        struct relay *rl = run->relays[r];
        for (size_t i = 0; i < rl->ndom; i++) {
            const struct pair *p = &rl->pairs[i];
            /* --wait rounds: progress for what was asked; a failure that
             * the next round retries only with -v (the end reports it) */
            if (progress && (!p->again || (p->status == EX_TEMPFAIL && !run->o->verbose)))
                continue;
            report(run, rl, p, run->domains[rl->dom[i]], progress);
        }
    }
}

static int run_rounds(struct run *run)
{
    double start = smtp_io_now(), interval = 1;
    double deadline = start + run->wait_timeout;
    int st = 0;

    run->round = 1;
    for (size_t r = 0; r < run->nrelays; r++) {
        struct relay *rl = run->relays[r];
        if (rl->ndom > 0)
            ask_relay(run, rl, run->retries + 1);
    }
    report_all(run, 0);
    while (run->wait) {
        int more = 0;
        for (size_t r = 0; r < run->nrelays; r++) {
            struct relay *rl = run->relays[r];
            for (size_t i = 0; i < rl->ndom; i++) {
                rl->pairs[i].again = wants_again(&rl->pairs[i]);
                more |= rl->pairs[i].again;
            }
        }
        if (!more)
            break;
        if (smtp_io_now() >= deadline) {
            char t[32];
            fmt_secs(run->wait_timeout, t, sizeof(t));
            for (size_t r = 0; r < run->nrelays; r++) {
                struct relay *rl = run->relays[r];
                for (size_t i = 0; i < rl->ndom; i++) {
                    struct pair *p = &rl->pairs[i];
                    if (!p->again)
                        continue;
                    if (p->status == 0) {
                        p->status = EX_TEMPFAIL;
                        p->what = "still waiting when --wait timed out";
                        p->answered = 0;
                        snprintf(p->reply + strlen(p->reply), sizeof(p->reply) - strlen(p->reply),
                                 "; after %s", t);
                    }
                    report(run, rl, p, run->domains[rl->dom[i]], 0);
                }
            }
            break;
        }
        sleep_for(interval < deadline - smtp_io_now() ? interval : deadline - smtp_io_now());
        interval = interval * 2 > WAIT_CAP ? WAIT_CAP : interval * 2;
        run->round++;
        for (size_t r = 0; r < run->nrelays; r++) {
            struct relay *rl = run->relays[r];
            int any = 0;
            for (size_t i = 0; i < rl->ndom; i++)
                any |= rl->pairs[i].again;
            if (any)
                session(run, rl);
        }
        report_all(run, 1);
    }

    /* The exit status: the worst outcome. A relay that does not offer ETRN
     * is ignored for a domain another relay took the ETRN for (with
     * --all-mx, backup MX hosts are often plain MTAs). */
    for (size_t d = 0; d < run->ndomains; d++)
        st = etrnctl_worse(st, run->dom_status[d]);
    for (size_t r = 0; r < run->nrelays; r++) {
        struct relay *rl = run->relays[r];
        for (size_t i = 0; i < rl->ndom; i++) {
            int ps = rl->pairs[i].status;
            if (ps == EX_UNAVAILABLE) {
                int other_ok = 0;
                for (size_t r2 = 0; r2 < run->nrelays; r2++)
                    for (size_t j = 0; j < run->relays[r2]->ndom; j++)
                        if (run->relays[r2]->dom[j] == rl->dom[i] &&
                            run->relays[r2]->pairs[j].status == 0)
                            other_ok = 1;
                if (other_ok)
                    continue;
            }
            st = etrnctl_worse(st, ps);
        }
    }
    return st;
}

/* ---- command line ------------------------------------------------------------------------ */

void etrn_cmd_usage(FILE *fp)
{
    fprintf(
        fp,
        "  etrn [-H RELAY[:PORT]]... [--all-mx [--self NAME]... [--dns SERVERS]] [--port PORT]\n"
        "       [--starttls[=verify]] [--tls-ca FILE] [--user NAME --password-file FILE\n"
        "       [--mech MECHANISM]] [--helo NAME] [--retry N]\n"
        "       [--retry-delay D] [--wait[=TIMEOUT]] [--wait-local HOST:PORT]\n"
        "       [--timeout D] [--lock-dir DIR] [--json] [-q|-v] [DOMAIN...]\n"
        "      ask each relay to deliver each domain's mail (ETRN); relays and domains\n"
        "      default to ETRN_RELAYS and ETRN_DOMAINS in " ETRNCTL_DEFAULTS_FILE "\n");
}

static void usage_etrn(FILE *fp)
{
    fprintf(fp, "usage: etrnctl etrn [options] DOMAIN...\n");
    etrn_cmd_usage(fp);
}

enum {
    OPT_ALL_MX = ETRNCTL_OPT_FIRST_LOCAL,
    OPT_SELF,
    OPT_PORT,
    OPT_DNS,
    OPT_STARTTLS,
    OPT_TLS_CA,
    OPT_HELO,
    OPT_RETRY,
    OPT_RETRY_DELAY,
    OPT_WAIT,
    OPT_WAIT_LOCAL,
    OPT_TIMEOUT,
    OPT_LOCK_DIR,
    OPT_USER,
    OPT_PASSWORD_FILE,
    OPT_MECH
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    etrnctl_warn("%s", msg);
    usage_etrn(stderr);
    return EX_USAGE;
}

static int parse_args(struct run *run, int argc, char **argv)
{
    static const struct option longopts[] = {
        ETRNCTL_GLOBAL_LONGOPTS,
        {"relay", required_argument, NULL, 'H'},
        {"host", required_argument, NULL, 'H'},
        {"all-mx", no_argument, NULL, OPT_ALL_MX},
        {"self", required_argument, NULL, OPT_SELF},
        {"port", required_argument, NULL, OPT_PORT},
        {"dns", required_argument, NULL, OPT_DNS},
        {"starttls", optional_argument, NULL, OPT_STARTTLS},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"helo", required_argument, NULL, OPT_HELO},
        {"retry", required_argument, NULL, OPT_RETRY},
        {"retry-delay", required_argument, NULL, OPT_RETRY_DELAY},
        {"wait", optional_argument, NULL, OPT_WAIT},
        {"wait-local", required_argument, NULL, OPT_WAIT_LOCAL},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"lock-dir", required_argument, NULL, OPT_LOCK_DIR},
        {"user", required_argument, NULL, OPT_USER},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"mech", required_argument, NULL, OPT_MECH},
        {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS "H:", longopts, NULL)) != -1) {
        double d;

        if (etrnctl_global_opt(c, optarg, run->o, usage_etrn))
            continue;
        switch (c) {
        case 'H':
            if (run->nrelay_args >= MAX_RELAYS)
                return usage_error("too many relays (at most %s)", "64");
            run->relay_args[run->nrelay_args++] = optarg;
            break;
        case OPT_ALL_MX:
            run->all_mx = 1;
            break;
        case OPT_SELF:
            if (run->nself >= sizeof(run->self) / sizeof(run->self[0]))
                return usage_error("too many --self names: %s", optarg);
            run->self[run->nself++] = optarg;
            break;
        case OPT_PORT:
            if (etrnctl_parse_uint(optarg, &run->port) != 0 || run->port < 1 || run->port > 65535)
                return usage_error("bad --port: %s", optarg);
            break;
        case OPT_DNS:
            run->dns_servers = optarg;
            break;
        case OPT_STARTTLS:
            if (optarg == NULL)
                run->starttls = 1;
            else if (strcmp(optarg, "verify") == 0)
                run->starttls = 2;
            else
                return usage_error("bad --starttls=%s (only =verify)", optarg);
            break;
        case OPT_TLS_CA:
            run->tls_ca = optarg;
            break;
        case OPT_HELO:
            run->helo = optarg;
            break;
        case OPT_RETRY:
            if (etrnctl_parse_uint(optarg, &run->retries) != 0 || run->retries > 1000)
                return usage_error("bad --retry: %s", optarg);
            break;
        case OPT_RETRY_DELAY:
            if (etrnctl_parse_duration(optarg, &run->retry_delay) != 0)
                return usage_error("bad --retry-delay: %s", optarg);
            break;
        case OPT_WAIT:
            run->wait = 1;
            if (optarg == NULL && optind < argc && etrnctl_parse_duration(argv[optind], &d) == 0) {
                /* `--wait 120`: a following word that is a duration is the
                 * timeout (no domain looks like "120" or "5m") */
                optarg = argv[optind++];
            }
            if (optarg != NULL) {
                if (etrnctl_parse_duration(optarg, &run->wait_timeout) != 0)
                    return usage_error("bad --wait timeout: %s", optarg);
            }
            break;
        case OPT_WAIT_LOCAL: {
            char h[256];
            int p;
            if (smtp_io_parse_hostport(optarg, 25, h, sizeof(h), &p) != 0)
                return usage_error("bad --wait-local address: %s", optarg);
            run->wait_local = optarg;
            break;
        }
        case OPT_TIMEOUT:
            if (etrnctl_parse_duration(optarg, &run->timeout) != 0 || run->timeout <= 0)
                return usage_error("bad --timeout: %s", optarg);
            break;
        case OPT_LOCK_DIR:
            run->lock_dir = optarg;
            break;
        case OPT_USER:
            run->user = optarg;
            break;
        case OPT_PASSWORD_FILE:
            run->password_file = optarg;
            break;
        case OPT_MECH:
            run->mech = optarg;
            break;
        default:
            usage_etrn(stderr);
            return EX_USAGE;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (run->ndomains >= MAX_DOMAINS)
            return usage_error("too many domains (at most %s)", "256");
        run->domains[run->ndomains++] = argv[i];
    }
    return 0;
}

/* Fill relays and domains from the defaults file where the command line
 * gave none, then validate them. 0 or an exit status. */
static int settle_args(struct run *run)
{
    int st;

    if ((run->nrelay_args == 0 && !run->all_mx) || run->ndomains == 0) {
        st = etrnctl_defaults_read(take_default, run);
        if (st != 0)
            return st;
        if (run->nrelay_args == 0 && !run->all_mx && run->defaults_relays != NULL) {
            int n = split_words(run->defaults_relays, run->relay_args, 0, MAX_RELAYS);
            if (n < 0) {
                etrnctl_warn("ETRN_RELAYS: more than %d relays", MAX_RELAYS);
                return EX_CONFIG;
            }
            run->nrelay_args = (size_t)n;
        }
        if (run->ndomains == 0 && run->defaults_domains != NULL) {
            const char *words[MAX_DOMAINS];
            int n = split_words(run->defaults_domains, words, 0, MAX_DOMAINS);
            if (n < 0) {
                etrnctl_warn("ETRN_DOMAINS: more than %d domains", MAX_DOMAINS);
                return EX_CONFIG;
            }
            for (int i = 0; i < n; i++)
                run->domains[run->ndomains++] = (char *)words[i];
        }
        /* the account goes with the relays of the same file */
        if (run->user == NULL && run->password_file == NULL && run->defaults_user != NULL &&
            run->defaults_user[0] != '\0') {
            run->user = run->defaults_user;
            run->password_file = run->defaults_password_file;
        }
    }
    if (run->ndomains == 0)
        return usage_error("no domain given (and no ETRN_DOMAINS in %s)", ETRNCTL_DEFAULTS_FILE);
    if (run->nrelay_args == 0 && !run->all_mx)
        return usage_error("no relay given: -H RELAY, --all-mx or ETRN_RELAYS in %s",
                           ETRNCTL_DEFAULTS_FILE);
    if ((run->user != NULL) != (run->password_file != NULL && run->password_file[0] != '\0'))
        return usage_error("--user and --password-file go together (ETRN_USER and "
                           "ETRN_PASSWORD_FILE in %s)",
                           ETRNCTL_DEFAULTS_FILE);
    if (run->mech != NULL && run->user == NULL)
        return usage_error("--mech needs --user");
    for (size_t i = 0; i < run->ndomains; i++) {
        if (smtp_parse_etrn(run->domains[i], strlen(run->domains[i]), &run->parsed[i]) !=
            SMTP_PARSE_OK)
            return usage_error("not a domain, @domain or #queue: %s", run->domains[i]);
        if (run->all_mx && run->parsed[i].kind == SMTP_ETRN_QUEUE)
            return usage_error("--all-mx: a #queue has no MX hosts: %s", run->domains[i]);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(run->domains[i], run->domains[j]) == 0)
                return usage_error("domain given twice: %s", run->domains[i]);
    }
    for (size_t i = 0; i < run->nrelay_args; i++) {
        char host[256];
        int port;
        struct relay *rl;

        if (smtp_io_parse_hostport(run->relay_args[i], run->port, host, sizeof(host), &port) != 0)
            return usage_error("bad relay: %s (RELAY or RELAY:PORT)", run->relay_args[i]);
        rl = relay_add(run, host, port, 0);
        if (rl == NULL)
            return EX_USAGE;
        for (size_t d = 0; d < run->ndomains; d++)
            relay_add_domain(rl, (int)d);
    }
    return 0;
}

int etrn_cmd_main(int argc, char **argv, struct etrnctl_opts *o)
{
    struct run *run = calloc(1, sizeof(*run));
    char err[256];
    char host[256];
    int st, lockfd = -1;

    if (run == NULL) {
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    signal(SIGPIPE, SIG_IGN);
    run->o = o;
    run->port = 25;
    run->retry_delay = 10;
    run->wait_timeout = WAIT_DEFAULT;
    run->timeout = 30;
    st = parse_args(run, argc, argv);
    if (st == 0)
        st = settle_args(run);
    if (st != 0)
        goto done;

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    if (run->helo == NULL) {
        snprintf(run->helo_buf, sizeof(run->helo_buf), "%s", host);
        run->helo = run->helo_buf;
    }
    if (run->nself == 0) { /* without --self, this site is its host name */
        snprintf(run->self_buf, sizeof(run->self_buf), "%s", host);
        run->self[run->nself++] = run->self_buf;
        if (run->helo != run->helo_buf && strchr(run->helo, '.') != NULL)
            run->self[run->nself++] = run->helo; /* --helo names this site too */
    }
    if (run->password_file != NULL) {
        /* read once, before any relay is asked (a password on the command
         * line would be visible to every user in ps) */
        st = smtp_auth_read_password(run->password_file, run->password, sizeof(run->password), err,
                                     sizeof(err));
        if (st != 0) {
            etrnctl_warn("%s", err);
            goto done;
        }
    }
    if (run->starttls) {
        run->tls = tls_ctx_new_client(run->starttls == 2, run->tls_ca, err, sizeof(err));
        if (run->tls == NULL) {
            etrnctl_warn("TLS: %s", err);
            st = EX_CONFIG;
            goto done;
        }
    }

    lockfd = take_lock(run);
    if (lockfd == -2) {
        st = EX_TEMPFAIL;
        goto done;
    }
    if (run->wait_local != NULL) {
        st = wait_local(run, smtp_io_now() + run->wait_timeout);
        if (st != 0)
            goto done;
    }
    if (run->all_mx) {
        st = find_mx_relays(run);
        if (st != 0)
            goto done;
    }
    st = run_rounds(run);
done:
    if (lockfd >= 0)
        close(lockfd);
    if (run->tls != NULL)
        tls_ctx_free(run->tls);
    for (size_t i = 0; i < run->nrelays; i++)
        free(run->relays[i]);
    free(run->defaults_relays);
    free(run->defaults_domains);
    free(run->defaults_user);
    free(run->defaults_password_file);
    explicit_bzero(run->password, sizeof(run->password));
    free(run);
    return st;
}
