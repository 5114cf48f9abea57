/*
 * dns: c-ares 1.18 on the libuv loop. Owns the channel, one uv_poll_t per
 * c-ares socket (socket-state callback) and one uv_timer re-armed from
 * ares_timeout() after every call into c-ares. The only file that includes
 * ares.h. Does no caching and no policy (relayd/resolver.c does both);
 * whether a raw answer may be acted on is lib/dns_answer.c's (pure).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <ares.h>

#include "dns.h"
#include "dns_answer.h"

#define DNS_NAME_MAX  DNS_ANSWER_NAME_MAX
#define DNS_MAX_ADDRS 64 /* addresses kept per A or AAAA answer */

/* Per try; c-ares doubles it on each round over the servers, so with two
 * tries one silent server costs 1 s + 2 s before the lookup is TEMPFAIL.
 * Short on purpose: a deferred delivery is retried, a stuck one holds a
 * connection slot. A resolver still working on a cold name keeps going
 * and has the answer cached for the next attempt. */
#define DNS_TIMEOUT_MS 1000
#define DNS_TRIES      2

/* One c-ares socket and the poll handle watching it. Freed in its close
 * callback only. */
struct dns_sock {
    uv_poll_t poll;
    struct dns *d;
    ares_socket_t fd;
    struct dns_sock *next;
};

struct dns {
    uv_loop_t *loop;
    ares_channel channel; /* NULL once destroyed */
    uv_timer_t timer;
    struct dns_sock *socks; /* sockets c-ares has open */
    unsigned handles;       /* initialised handles whose close callback has not run */
    int depth;              /* calls into c-ares in progress (callbacks may nest) */
    int closing;            /* dns_close() was called */
    int retiring;           /* dns_retire() was called: close when inflight is 0 */
    unsigned inflight;      /* ares_query() calls whose callback has not run */
};

/* An A/AAAA lookup for AF_UNSPEC is two queries; their answers meet here. */
struct dns_pair {
    dns_addr_cb cb;
    void *arg;
    int pending;
    int status[2]; /* [0] AAAA, [1] A */
    struct dns_addr *addrs[2];
    size_t n[2];
    uint32_t ttl[2];
    char why[2][DNS_WHY_MAX];
};

/* One query in flight: what to call with its answer. */
struct dns_query {
    struct dns *d;
    int type;
    dns_mx_cb mx_cb;
    dns_addr_cb addr_cb;
    void *arg;
    struct dns_pair *pair; /* AF_UNSPEC: the pair this half belongs to */
    int half;              /* its index in pair */
    char name[DNS_NAME_MAX + 2];
};

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_SUCCESS;

static void library_init(void)
{
    library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* ---- small helpers ----------------------------------------------------------------------- */

static int map_status(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS:
        return DNS_OK;
    case ARES_ENOTFOUND:
        return DNS_NXDOMAIN;
    case ARES_ENODATA:
        return DNS_NODATA;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return DNS_CANCELLED;
    case ARES_ENOMEM:
    case ARES_EBADNAME:
    case ARES_EBADFAMILY:
        return DNS_ERR;
    default:
        /* ESERVFAIL, ETIMEOUT, ECONNREFUSED, EREFUSED, ENOTIMP, EFORMERR,
         * EBADRESP, ...: the answer may be different next time. */
        return DNS_TEMPFAIL;
    }
}

const char *dns_strerror(int status)
{
    switch (status) {
    case DNS_OK:
        return "success";
    case DNS_NXDOMAIN:
        return "host or domain name not found";
    case DNS_NODATA:
        return "no records of the requested type";
    case DNS_TEMPFAIL:
        return "temporary DNS failure";
    case DNS_CANCELLED:
        return "DNS lookup cancelled";
    case DNS_ERR:
        return "bad name or out of memory";
    default:
        return "unknown DNS status";
    }
}

/* What went wrong, as an operator reads it: the rcode c-ares saw, or how
 * the exchange failed. */
static const char *ares_detail(int ares_status)
{
    switch (ares_status) {
    case ARES_ENOTFOUND:
        return "NXDOMAIN";
    case ARES_ENODATA:
        return "no records";
    case ARES_ESERVFAIL:
        return "SERVFAIL";
    case ARES_EREFUSED:
        return "REFUSED";
    case ARES_ENOTIMP:
        return "NOTIMP";
    case ARES_EFORMERR:
        return "FORMERR";
    case ARES_ETIMEOUT:
        return "timed out";
    case ARES_ECONNREFUSED:
        return "connection refused";
    case ARES_EBADRESP:
        return "malformed answer";
    default:
        return ares_strerror(ares_status);
    }
}

static const char *type_name(int type)
{
    switch (type) {
    case DNS_TYPE_A:
        return "A";
    case DNS_TYPE_AAAA:
        return "AAAA";
    case DNS_TYPE_MX:
        return "MX";
    default:
        return "?";
    }
}

static void set_why(char *why, size_t len, int type, const char *name, const char *detail)
{
    snprintf(why, len, "DNS lookup of %s for %.253s failed: %s", type_name(type), name, detail);
}

/* A name c-ares may be asked about: 1..253 octets of printable ASCII
 * without spaces, one trailing dot allowed. Syntax beyond that is the
 * server's business; a label that cannot exist just gets NXDOMAIN. */
static int valid_name(const char *name)
{
    size_t len = strlen(name);

    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* ---- the loop side: polls and the timer -------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct dns *d;

    if (h->type == UV_POLL) {
        struct dns_sock *s = h->data;
        d = s->d;
        free(s);
    } else {
        d = h->data;
    }
    if (--d->handles == 0 && d->closing)
        free(d);
}

static void close_sock(struct dns *d, struct dns_sock *s)
{
    for (struct dns_sock **pp = &d->socks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    /* Stop watching before c-ares closes the descriptor (it does so right
     * after this callback), so a reused number is never polled twice. */
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

static void on_timer(uv_timer_t *t);
static void finish_close(struct dns *d);

/* Ask c-ares when it next needs us, and set the timer for then. */
static void rearm(struct dns *d)
{
    struct timeval tv, *tvp;
    uint64_t ms;

    if (d->channel == NULL)
        return;
    tvp = ares_timeout(d->channel, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&d->timer);
        return;
    }
    ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&d->timer, on_timer, ms, 0);
}

/* Every call into c-ares is bracketed by enter/leave. Callbacks run inside
 * c-ares, and c-ares must not be destroyed from one of its own callbacks, so
 * a dns_close() made there takes effect in leave(). */
static void enter(struct dns *d)
{
    d->depth++;
}

static void leave(struct dns *d)
{
    if (--d->depth > 0)
        return;
    if (d->closing && d->channel != NULL)
        finish_close(d);
    else
        rearm(d);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct dns_sock *s = h->data;
    struct dns *d = s->d;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

    if (d->channel == NULL)
        return;
    /* On a poll error let c-ares try both directions and meet the error
     * itself: it then closes the socket and moves on to the next server. */
    if (status < 0 || (events & UV_READABLE))
        rfd = s->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wfd = s->fd;
    enter(d);
    ares_process_fd(d->channel, rfd, wfd);
    leave(d);
}

static void on_timer(uv_timer_t *t)
{
    struct dns *d = t->data;

    if (d->channel == NULL)
        return;
    enter(d);
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    leave(d);
}

/* c-ares' socket-state callback: start, change or stop watching fd. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock *s;
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);

    for (s = d->socks; s != NULL && s->fd != fd; s = s->next)
        ;
    if (events == 0) {
        if (s != NULL)
            close_sock(d, s);
        return;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return; /* the query times out through the timer */
        if (uv_poll_init_socket(d->loop, &s->poll, fd) != 0) {
            free(s);
            return;
        }
        s->poll.data = s;
        s->d = d;
        s->fd = fd;
        s->next = d->socks;
        d->socks = s;
        d->handles++;
        /* An idle socket c-ares keeps open must not hold the loop open;
         * while a query is pending the timer (referenced) does. */
        uv_unref((uv_handle_t *)&s->poll);
    }
    if (uv_poll_start(&s->poll, events, on_poll) != 0)
        close_sock(d, s);
}

/* ---- open and close ---------------------------------------------------------------------- */

int dns_open(uv_loop_t *loop, const char *servers, struct dns **out, char *err, size_t errlen)
{
    struct dns *d = NULL;
    struct ares_options o;
    int rc, optmask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;

    *out = NULL;
    pthread_once(&library_once, library_init);
    if (library_status != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(library_status));
        return -1;
    }
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    d->loop = loop;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    o.timeout = DNS_TIMEOUT_MS;
    o.tries = DNS_TRIES;
    /* Hand SERVFAIL, REFUSED and NOTIMP answers to us as they came, rcode
     * and all: c-ares 1.18 otherwise moves on and, with no server left,
     * reports each of them as "connection refused", and the deferral must
     * say what the server said. The next server is still asked when one
     * does not answer or cannot be reached. */
    o.flags = ARES_FLAG_NOCHECKRESP;
    rc = ares_init_options(&d->channel, &o, optmask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        free(d);
        return -1;
    }
    if (servers != NULL && (rc = ares_set_servers_ports_csv(d->channel, servers)) != ARES_SUCCESS) {
        snprintf(err, errlen, "DNS servers '%s': %s", servers, ares_strerror(rc));
        ares_destroy(d->channel);
        free(d);
        return -1;
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->handles = 1;
    *out = d;
    return 0;
}

/* Destroy the channel (every pending callback runs with DNS_CANCELLED and
 * every socket is reported closed), then close the timer; d is freed by
 * the last close callback. */
static void finish_close(struct dns *d)
{
    ares_channel ch = d->channel;

    d->depth++;
    ares_destroy(ch);
    d->channel = NULL;
    d->depth--;
    while (d->socks != NULL)
        close_sock(d, d->socks);
    uv_close((uv_handle_t *)&d->timer, on_handle_closed);
}

void dns_close(struct dns *d)
{
    if (d == NULL || d->closing)
        return;
    d->closing = 1;
    if (d->depth == 0)
        finish_close(d);
}

void dns_retire(struct dns *d)
{
    if (d == NULL || d->closing)
        return;
    d->retiring = 1;
    if (d->inflight == 0)
        dns_close(d);
}

/* A query's callback has run: a retiring channel closes after its last. */
static void query_done(struct dns *d)
{
    d->inflight--;
    if (d->retiring && d->inflight == 0)
        dns_close(d);
}

/* Usable for a new query? */
static int open_for_queries(const struct dns *d)
{
    return d != NULL && !d->closing && !d->retiring && d->channel != NULL;
}

/* ---- MX ---------------------------------------------------------------------------------- */

struct mx_order {
    unsigned pref;
    size_t idx;
};

static int cmp_mx_order(const void *a, const void *b)
{
    const struct mx_order *x = a, *y = b;

    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* stable */
}

/* The answer as a dns_mx array sorted by preference. A null MX's target
 * "." (RFC 7505) comes out as host "". */
static int build_mx(struct ares_mx_reply *head, struct dns_mx **out, size_t *nout)
{
    size_t n = 0, k = 0;
    struct dns_mx *tmp = NULL, *mx = NULL;
    struct mx_order *ord = NULL;
    int rc = -1;

    for (struct ares_mx_reply *r = head; r != NULL; r = r->next)
        n++;
    tmp = calloc(n ? n : 1, sizeof(*tmp));
    mx = calloc(n ? n : 1, sizeof(*mx));
    ord = calloc(n ? n : 1, sizeof(*ord));
    if (tmp == NULL || mx == NULL || ord == NULL)
        goto done;
    for (struct ares_mx_reply *r = head; r != NULL; r = r->next) {
        const char *h = r->host ? r->host : "";
        size_t len = strlen(h);
        if (len > 0 && h[len - 1] == '.')
            len--;
        if (len >= sizeof(tmp[k].host))
            continue; /* cannot be a host name */
        memcpy(tmp[k].host, h, len);
        tmp[k].host[len] = '\0';
        tmp[k].pref = r->priority;
        ord[k].pref = r->priority;
        ord[k].idx = k;
        k++;
    }
    qsort(ord, k, sizeof(*ord), cmp_mx_order);
    for (size_t i = 0; i < k; i++)
        mx[i] = tmp[ord[i].idx];
    *out = mx;
    *nout = k;
    mx = NULL;
    rc = 0;
done:
    free(tmp);
    free(mx);
    free(ord);
    return rc;
}

/* Check a NOERROR answer (SUCCESS or NODATA from c-ares) before parsing:
 * DNS_TEMPFAIL with why set if it cannot be used. */
static int checked(const struct dns_query *q, int st, const unsigned char *abuf, int alen,
                   char *why, size_t whylen)
{
    const char *detail = NULL;

    if ((st == DNS_OK || st == DNS_NODATA) &&
        dns_answer_check(abuf, alen > 0 ? (size_t)alen : 0, q->name, q->type, &detail) != 0) {
        set_why(why, whylen, q->type, q->name, detail);
        return DNS_TEMPFAIL;
    }
    return st;
}

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns *d = q->d;
    struct ares_mx_reply *head = NULL;
    struct dns_mx *mx = NULL;
    size_t n = 0;
    uint32_t ttl = 0, neg = 0;
    int st = map_status(status);
    char why[DNS_WHY_MAX];

    (void)timeouts;
    set_why(why, sizeof(why), DNS_TYPE_MX, q->name, ares_detail(status));
    dns_answer_ttls(abuf, alen > 0 ? (size_t)alen : 0, DNS_TYPE_MX, &ttl, &neg);
    st = checked(q, st, abuf, alen, why, sizeof(why));
    if (st == DNS_OK) {
        int r = ares_parse_mx_reply(abuf, alen, &head);
        if (r == ARES_ENODATA) {
            st = DNS_NODATA; /* e.g. only a CNAME */
        } else if (r != ARES_SUCCESS) {
            st = map_status(r) == DNS_ERR ? DNS_ERR : DNS_TEMPFAIL;
            set_why(why, sizeof(why), DNS_TYPE_MX, q->name, ares_detail(r));
        } else if (build_mx(head, &mx, &n) < 0) {
            st = DNS_ERR;
            set_why(why, sizeof(why), DNS_TYPE_MX, q->name, "out of memory");
        } else if (n == 0) {
            /* MX records whose targets cannot be host names: the domain
             * has MX records, so implicit MX does not apply (RFC 5321
             * §5.1); only its owner can repair this. */
            st = DNS_TEMPFAIL;
            set_why(why, sizeof(why), DNS_TYPE_MX, q->name, "no usable MX target");
        }
    }
    if (st == DNS_NODATA)
        set_why(why, sizeof(why), DNS_TYPE_MX, q->name, "no records");
    if (st == DNS_NODATA || st == DNS_NXDOMAIN)
        ttl = neg;
    else if (st != DNS_OK)
        ttl = 0;
    q->mx_cb(q->arg, st, st == DNS_OK ? mx : NULL, st == DNS_OK ? n : 0, ttl,
             st == DNS_OK ? NULL : why);
    if (head != NULL)
        ares_free_data(head);
    free(mx);
    free(q);
    query_done(d);
}

/* Callbacks run exactly once when this returns 0, usually from the loop but
 * possibly before it returns (when c-ares fails the query at once). On
 * failure (bad name, out of memory, closing) they never run. */
int dns_query_mx(struct dns *d, const char *name, dns_mx_cb cb, void *arg)
{
    struct dns_query *q;

    if (!open_for_queries(d) || name == NULL || !valid_name(name))
        return DNS_ERR;
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return DNS_ERR;
    q->d = d;
    q->type = DNS_TYPE_MX;
    q->mx_cb = cb;
    q->arg = arg;
    snprintf(q->name, sizeof(q->name), "%s", name);
    d->inflight++;
    enter(d);
    ares_query(d->channel, name, DNS_CLASS_IN, DNS_TYPE_MX, on_mx, q);
    leave(d);
    return 0;
}

/* ---- A / AAAA ---------------------------------------------------------------------------- */

/* The addresses of an A or AAAA answer; *status may turn into NODATA when
 * the answer held only a CNAME. */
static struct dns_addr *parse_addrs(int type, const unsigned char *abuf, int alen, size_t *n,
                                    uint32_t *ttl, int *status)
{
    struct dns_addr *out = NULL;
    int cnt = DNS_MAX_ADDRS, r;
    int have = 0;

    *n = 0;
    *ttl = 0;
    if (type == DNS_TYPE_A) {
        struct ares_addrttl t[DNS_MAX_ADDRS];
        r = ares_parse_a_reply(abuf, alen, NULL, t, &cnt);
        if (r == ARES_SUCCESS && cnt > 0 && (out = calloc((size_t)cnt, sizeof(*out))) != NULL) {
            for (int i = 0; i < cnt; i++) {
                struct sockaddr_in *sin = (struct sockaddr_in *)&out[i].addr;
                uint32_t tt = t[i].ttl < 0 ? 0 : (uint32_t)t[i].ttl;
                sin->sin_family = AF_INET;
                sin->sin_addr = t[i].ipaddr;
                if (!have || tt < *ttl)
                    *ttl = tt;
                have = 1;
            }
        }
    } else {
        struct ares_addr6ttl t[DNS_MAX_ADDRS];
        r = ares_parse_aaaa_reply(abuf, alen, NULL, t, &cnt);
        if (r == ARES_SUCCESS && cnt > 0 && (out = calloc((size_t)cnt, sizeof(*out))) != NULL) {
            for (int i = 0; i < cnt; i++) {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[i].addr;
                uint32_t tt = t[i].ttl < 0 ? 0 : (uint32_t)t[i].ttl;
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, &t[i].ip6addr, sizeof(sin6->sin6_addr));
                if (!have || tt < *ttl)
                    *ttl = tt;
                have = 1;
            }
        }
    }
    if (r == ARES_SUCCESS && cnt > 0 && out == NULL)
        *status = DNS_ERR;
    else if (r == ARES_SUCCESS && cnt > 0)
        *n = (size_t)cnt;
    else if (r == ARES_SUCCESS || r == ARES_ENODATA)
        *status = DNS_NODATA;
    else
        *status = map_status(r) == DNS_ERR ? DNS_ERR : DNS_TEMPFAIL;
    return out;
}

/* Both halves of an AF_UNSPEC lookup are in: addresses if either has some
 * (IPv6 first), else the more telling failure, named by its half. */
static void pair_done(struct dns_pair *p)
{
    struct dns_addr *all = NULL;
    size_t n = p->n[0] + p->n[1];
    uint32_t ttl = 0;
    int st, have = 0, blame = 0;

    if (n > 0) {
        all = calloc(n, sizeof(*all));
        st = all != NULL ? DNS_OK : DNS_ERR;
        for (int h = 0; all != NULL && h < 2; h++) {
            if (p->n[h] == 0)
                continue;
            memcpy(all + (h ? p->n[0] : 0), p->addrs[h], p->n[h] * sizeof(*all));
            if (!have || p->ttl[h] < ttl)
                ttl = p->ttl[h];
            have = 1;
        }
    } else if (p->status[0] == DNS_CANCELLED || p->status[1] == DNS_CANCELLED) {
        st = DNS_CANCELLED;
        blame = p->status[0] == DNS_CANCELLED ? 0 : 1;
    } else if (p->status[0] == DNS_NXDOMAIN || p->status[1] == DNS_NXDOMAIN) {
        st = DNS_NXDOMAIN; /* the name does not exist, whatever the type */
        blame = p->status[0] == DNS_NXDOMAIN ? 0 : 1;
        ttl = p->ttl[blame];
    } else if (p->status[0] == DNS_NODATA && p->status[1] == DNS_NODATA) {
        st = DNS_NODATA;
        blame = 1; /* "no records" for A reads best */
        ttl = p->ttl[0] < p->ttl[1] ? p->ttl[0] : p->ttl[1];
    } else if (p->status[0] == DNS_ERR || p->status[1] == DNS_ERR) {
        st = DNS_ERR;
        blame = p->status[0] == DNS_ERR ? 0 : 1;
    } else {
        /* one half NODATA, the other failed for now: unknown */
        st = DNS_TEMPFAIL;
        blame = p->status[0] == DNS_TEMPFAIL ? 0 : 1;
    }
    p->cb(p->arg, st, st == DNS_OK ? all : NULL, st == DNS_OK ? n : 0,
          st == DNS_OK || st == DNS_NXDOMAIN || st == DNS_NODATA ? ttl : 0,
          st == DNS_OK ? NULL : p->why[blame]);
    free(all);
    free(p->addrs[0]);
    free(p->addrs[1]);
    free(p);
}

/* One half's answer into its pair. */
static void pair_half(struct dns_pair *p, int half, int st, struct dns_addr *addrs, size_t n,
                      uint32_t ttl, const char *why)
{
    p->status[half] = st;
    p->addrs[half] = addrs;
    p->n[half] = n;
    p->ttl[half] = ttl;
    snprintf(p->why[half], sizeof(p->why[half]), "%s", why != NULL ? why : "");
    if (--p->pending == 0)
        pair_done(p);
}

static void on_addr(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns *d = q->d;
    struct dns_addr *addrs = NULL;
    size_t n = 0;
    uint32_t ttl = 0, ans, neg;
    int st = map_status(status);
    char why[DNS_WHY_MAX];

    (void)timeouts;
    set_why(why, sizeof(why), q->type, q->name, ares_detail(status));
    dns_answer_ttls(abuf, alen > 0 ? (size_t)alen : 0, q->type, &ans, &neg);
    st = checked(q, st, abuf, alen, why, sizeof(why));
    if (st == DNS_OK) {
        addrs = parse_addrs(q->type, abuf, alen, &n, &ttl, &st);
        if (st != DNS_OK)
            set_why(why, sizeof(why), q->type, q->name,
                    st == DNS_NODATA ? "no records" : "malformed answer");
    }
    if (st == DNS_NODATA || st == DNS_NXDOMAIN)
        ttl = neg;
    else if (st != DNS_OK)
        ttl = 0;
    if (q->pair != NULL) {
        pair_half(q->pair, q->half, st, addrs, n, ttl, st == DNS_OK ? NULL : why); /* takes addrs */
        addrs = NULL;
    } else {
        q->addr_cb(q->arg, st, st == DNS_OK ? addrs : NULL, st == DNS_OK ? n : 0, ttl,
                   st == DNS_OK ? NULL : why);
    }
    free(addrs);
    free(q);
    query_done(d);
}

/* A literal address answers at once, without a query (RFC 5321 §4.1.3
 * address literals and route = [addr] need no DNS). 1 if name was one. */
static int answer_literal(const char *name, int family, dns_addr_cb cb, void *arg)
{
    struct dns_addr a;
    struct in_addr a4;
    struct in6_addr a6;
    char why[DNS_WHY_MAX];

    memset(&a, 0, sizeof(a));
    if (inet_pton(AF_INET, name, &a4) == 1) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.addr;
        sin->sin_family = AF_INET;
        sin->sin_addr = a4;
    } else if (inet_pton(AF_INET6, name, &a6) == 1) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.addr;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = a6;
    } else {
        return 0;
    }
    if (family != AF_UNSPEC && family != a.addr.ss_family) {
        set_why(why, sizeof(why), family == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA, name,
                "no records");
        cb(arg, DNS_NODATA, NULL, 0, 0, why);
    } else {
        cb(arg, DNS_OK, &a, 1, 0, NULL);
    }
    return 1;
}

static struct dns_query *new_addr_query(struct dns *d, int type, const char *name, dns_addr_cb cb,
                                        void *arg, struct dns_pair *pair, int half)
{
    struct dns_query *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->d = d;
    q->type = type;
    q->addr_cb = cb;
    q->arg = arg;
    q->pair = pair;
    q->half = half;
    snprintf(q->name, sizeof(q->name), "%s", name);
    return q;
}

/* As dns_query_mx: 0 and exactly one callback (before this returns for a
 * literal), or DNS_ERR and none. */
int dns_query_addr(struct dns *d, const char *name, int family, dns_addr_cb cb, void *arg)
{
    struct dns_query *q[2] = {NULL, NULL};
    struct dns_pair *p = NULL;
    int types[2] = {DNS_TYPE_AAAA, DNS_TYPE_A};

    if (!open_for_queries(d) || name == NULL ||
        (family != AF_INET && family != AF_INET6 && family != AF_UNSPEC))
        return DNS_ERR;
    if (answer_literal(name, family, cb, arg))
        return 0;
    if (!valid_name(name))
        return DNS_ERR;
    if (family != AF_UNSPEC) {
        q[0] = new_addr_query(d, family == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA, name, cb, arg,
                              NULL, 0);
        if (q[0] == NULL)
            return DNS_ERR;
        d->inflight++;
        enter(d);
        ares_query(d->channel, name, DNS_CLASS_IN, q[0]->type, on_addr, q[0]);
        leave(d);
        return 0;
    }
    p = calloc(1, sizeof(*p));
    if (p != NULL) {
        q[0] = new_addr_query(d, types[0], name, NULL, NULL, p, 0);
        q[1] = new_addr_query(d, types[1], name, NULL, NULL, p, 1);
    }
    if (p == NULL || q[0] == NULL || q[1] == NULL) {
        free(p);
        free(q[0]);
        free(q[1]);
        return DNS_ERR;
    }
    p->cb = cb;
    p->arg = arg;
    p->pending = 2;
    enter(d);
    for (int h = 0; h < 2; h++) {
        /* A callback of the first half may have closed d: the second is
         * then never asked, and counts as cancelled. */
        if (d->closing) {
            char why[DNS_WHY_MAX];
            set_why(why, sizeof(why), types[h], name, "DNS lookup cancelled");
            free(q[h]);
            pair_half(p, h, DNS_CANCELLED, NULL, 0, 0, why);
            continue;
        }
        d->inflight++;
        ares_query(d->channel, name, DNS_CLASS_IN, types[h], on_addr, q[h]);
    }
    leave(d);
    return 0;
}
