/*
 * quota: per-section queue quotas and the free-space reserve (quota.h).
 * Loop thread only. The queue's usage per recipient domain comes from the
 * store (schema 004's domain_usage, handed over as changes after each
 * commit); this file adds it up per section of the current configuration,
 * in a table keyed by section name so that sessions holding an older
 * snapshot still find their section. Nothing here touches the disk on the
 * loop: statfs runs on libuv's threadpool.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include "quota.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "stats.h"
#include "store.h"

#define QUOTA_MIN_BUCKETS  64
#define QUOTA_STATFS_EVERY 1000 /* ms: the reserve is at most this stale */

struct section {
    struct section *next;            /* hash chain */
    int64_t messages, bytes;         /* queued */
    int64_t res_messages, res_bytes; /* reserved by sessions receiving now */
    int over;                        /* at or over its quota: logged once */
    char name[];
};

struct quota {
    struct server *srv;
    struct section **buckets;
    size_t nbuckets, n; /* nbuckets: a power of two */
    uv_timer_t timer;
    uv_fs_t statfs_req;
    int statfs_busy;
    int closing;
    char *dir;        /* the queue's directory, for statfs */
    uint64_t fs_free; /* bytes free to unprivileged users there, at the last statfs */
    /* Disk the queue has taken since that statfs, as estimated from what was
     * committed: a message is written to the WAL and again to the database
     * by the checkpoint, so twice its size. Between two statfs (a second)
     * intake cannot run past the reserve on a stale figure. */
    uint64_t written, written_at_req, written_at_sample;
    uint64_t pending;  /* what open transactions may still write */
    int below_reserve; /* logged once per crossing */
};

/* FNV-1a: section names are the operator's own configuration. */
static size_t hash(const char *s)
{
    size_t h = 2166136261u;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static struct section *find(const struct quota *q, const char *name)
{
    struct section *e;

    for (e = q->buckets[hash(name) & (q->nbuckets - 1)]; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

static void grow(struct quota *q)
{
    size_t n = q->nbuckets * 2;
    struct section **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct section *e, *next;
        for (e = q->buckets[i]; e; e = next) {
            size_t k = hash(e->name) & (n - 1);
            next = e->next;
            e->next = b[k];
            b[k] = e;
        }
    }
    free(q->buckets);
    q->buckets = b;
    q->nbuckets = n;
}

/* The entry for a section, made on first use (one per configured section
 * that ever had mail: bounded by the configuration). NULL: out of memory. */
static struct section *get(struct quota *q, const char *name)
{
    struct section *e = find(q, name);
    size_t k;

    if (e != NULL)
        return e;
    if (q->n >= q->nbuckets)
        grow(q);
    e = calloc(1, sizeof(*e) + strlen(name) + 1);
    if (e == NULL)
        return NULL;
    strcpy(e->name, name);
    k = hash(name) & (q->nbuckets - 1);
    e->next = q->buckets[k];
    q->buckets[k] = e;
    q->n++;
    return e;
}

/* Log when a section reaches its quota and when it leaves it: once each,
 * not per message. */
static void note_level(struct section *e, const struct cfg_domain *d)
{
    int over = (d->max_queue_messages && e->messages >= (int64_t)d->max_queue_messages) ||
               (d->max_queue_bytes && e->bytes >= (int64_t)d->max_queue_bytes);

    if (over && !e->over)
        log_warn("quota: %s reached its queue quota (messages=%" PRId64 "/%u, bytes=%" PRId64
                 "/%" PRIu64 "): new mail for it gets 452 4.2.2",
                 e->name, e->messages, d->max_queue_messages, e->bytes, d->max_queue_bytes);
    else if (!over && e->over)
        log_info("quota: %s is below its queue quota again (messages=%" PRId64 ", bytes=%" PRId64
                 ")",
                 e->name, e->messages, e->bytes);
    e->over = over;
}

/* A change of one recipient domain's usage, from the store. */
static void on_usage(void *arg, const char *domain, int64_t messages, int64_t bytes)
{
    struct quota *q = arg;
    const struct cfg_domain *d = config_find_domain(q->srv->cfg, domain);
    struct section *e;

    if (d == NULL || (e = get(q, d->name)) == NULL)
        return; /* not a relay domain (bounces to senders): no quota */
    e->messages += messages;
    e->bytes += bytes;
    note_level(e, d);
}

/* Every change from the store: count what was written, for the reserve. */
static void on_store_usage(void *arg, const char *domain, int64_t messages, int64_t bytes)
{
    struct quota *q = arg;

    if (bytes > 0)
        q->written += 2 * (uint64_t)bytes;
    on_usage(arg, domain, messages, bytes);
}

static void recount(struct quota *q)
{
    for (size_t i = 0; i < q->nbuckets; i++)
        for (struct section *e = q->buckets[i]; e; e = e->next)
            e->messages = e->bytes = 0;
    store_usage_walk(q->srv->store, on_usage, q);
}

static void on_statfs(uv_fs_t *req)
{
    struct quota *q = req->data;

    q->statfs_busy = 0;
    if (req->result == 0 && req->ptr != NULL) {
        const uv_statfs_t *s = req->ptr;
        q->fs_free = s->f_bavail * s->f_bsize;
        q->written_at_sample = q->written_at_req;
    }
    uv_fs_req_cleanup(req);
    if (q->closing)
        free(q); /* quota_free waited for us */
}

static void on_tick(uv_timer_t *t)
{
    struct quota *q = t->data;

    if (q->statfs_busy)
        return;
    q->statfs_req.data = q;
    q->written_at_req = q->written;
    if (uv_fs_statfs(q->srv->loop, &q->statfs_req, q->dir, on_statfs) == 0)
        q->statfs_busy = 1;
}

int quota_open(struct server *srv, struct quota **out)
{
    struct quota *q = calloc(1, sizeof(*q));
    struct statvfs sv;
    char *slash;

    *out = NULL;
    if (q == NULL || (q->buckets = calloc(QUOTA_MIN_BUCKETS, sizeof(*q->buckets))) == NULL ||
        (q->dir = strdup(srv->cfg->database)) == NULL) {
        if (q != NULL)
            free(q->buckets);
        free(q);
        return -1;
    }
    q->nbuckets = QUOTA_MIN_BUCKETS;
    q->srv = srv;
    slash = strrchr(q->dir, '/');
    if (slash != NULL)
        slash[slash == q->dir] = '\0';
    /* once here, at start, so the first MAIL does not wait for the timer */
    if (statvfs(q->dir, &sv) == 0)
        q->fs_free = (uint64_t)sv.f_bavail * sv.f_frsize;
    store_set_usage_cb(srv->store, on_store_usage, q);
    recount(q);
    uv_timer_init(srv->loop, &q->timer);
    q->timer.data = q;
    uv_timer_start(&q->timer, on_tick, QUOTA_STATFS_EVERY, QUOTA_STATFS_EVERY);
    uv_unref((uv_handle_t *)&q->timer);
    *out = q;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct quota *q = h->data;

    if (!q->statfs_busy)
        free(q);
    else
        q->closing = 1; /* on_statfs frees */
}

void quota_free(struct quota *q)
{
    if (q == NULL)
        return;
    store_set_usage_cb(q->srv->store, NULL, NULL);
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct section *e, *next;
        for (e = q->buckets[i]; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(q->buckets);
    q->buckets = NULL;
    free(q->dir);
    q->dir = NULL;
    uv_close((uv_handle_t *)&q->timer, on_timer_closed);
}

void quota_reload(struct quota *q)
{
    recount(q);
}

static uint64_t free_now(const struct quota *q)
{
    uint64_t f = q->fs_free + store_free_bytes(q->srv->store);
    uint64_t used = q->pending + (q->written - q->written_at_sample);

    return f > used ? f - used : 0;
}

int quota_mail_check(struct quota *q, const struct config *cfg)
{
    uint64_t minfree = config_queue_minfree(cfg), avail = free_now(q);
    int below = avail < minfree;

    if (below && !q->below_reserve)
        log_warn("quota: free space for the queue is below queue_minfree (%" PRIu64 " of %" PRIu64
                 " bytes): new mail gets 452 4.3.1",
                 avail, minfree);
    else if (!below && q->below_reserve)
        log_info("quota: free space for the queue is above queue_minfree again (%" PRIu64 " bytes)",
                 avail);
    q->below_reserve = below;
    if (below)
        stats_add(q->srv->stats, "", STATS_NOSPACE, 1);
    return below ? -1 : 0;
}

void quota_mail_begin(struct quota *q, uint64_t bytes)
{
    q->pending += bytes;
}

void quota_mail_end(struct quota *q, uint64_t bytes)
{
    q->pending = q->pending > bytes ? q->pending - bytes : 0;
}

int quota_rcpt_check(struct quota *q, const struct cfg_domain *dom, uint64_t size, char *why,
                     size_t whylen)
{
    const struct section *e;
    int64_t m, b;

    if (dom->max_queue_messages == 0 && dom->max_queue_bytes == 0)
        return 0;
    e = find(q, dom->name);
    m = e ? e->messages + e->res_messages : 0;
    b = e ? e->bytes + e->res_bytes : 0;
    if (dom->max_queue_messages && m >= (int64_t)dom->max_queue_messages) {
        snprintf(why, whylen, "Queue quota of %s exceeded (%u messages): try again later",
                 dom->name, dom->max_queue_messages);
    } else if (dom->max_queue_bytes && (b >= (int64_t)dom->max_queue_bytes ||
                                        (size > 0 && (uint64_t)b + size > dom->max_queue_bytes))) {
        snprintf(why, whylen, "Queue quota of %s exceeded (%" PRIu64 " bytes): try again later",
                 dom->name, dom->max_queue_bytes);
    } else {
        return 0;
    }
    stats_add(q->srv->stats, dom->name, STATS_QUOTA, 1);
    return -1;
}

void quota_reserve(struct quota *q, const char *section, uint64_t size)
{
    struct section *e = get(q, section);

    if (e != NULL) {
        e->res_messages++;
        e->res_bytes += (int64_t)size;
    }
}

void quota_release(struct quota *q, const char *section, uint64_t size)
{
    struct section *e = find(q, section);

    if (e != NULL) {
        e->res_messages--;
        e->res_bytes -= (int64_t)size;
    }
}

void quota_usage(const struct quota *q, const char *section, int64_t *messages, int64_t *bytes)
{
    const struct section *e = find(q, section);

    *messages = e ? e->messages : 0;
    *bytes = e ? e->bytes : 0;
}

int quota_percent(const struct quota *q, const struct cfg_domain *dom)
{
    int64_t m, b;
    uint64_t pct = 0;

    if (dom->max_queue_messages == 0 && dom->max_queue_bytes == 0)
        return -1;
    quota_usage(q, dom->name, &m, &b);
    if (m < 0)
        m = 0;
    if (b < 0)
        b = 0;
    if (dom->max_queue_messages != 0)
        pct = (uint64_t)m * 100 / dom->max_queue_messages;
    /* bytes * 100 would overflow only beyond 2^57 bytes queued: divide first there */
    if (dom->max_queue_bytes != 0) {
        uint64_t pb = (uint64_t)b <= UINT64_MAX / 100
                          ? (uint64_t)b * 100 / dom->max_queue_bytes
                          : (uint64_t)b / (dom->max_queue_bytes / 100 + 1);
        if (pb > pct)
            pct = pb;
    }
    return pct > INT32_MAX ? INT32_MAX : (int)pct;
}

void quota_storage(const struct quota *q, uint64_t *free_bytes, uint64_t *minfree)
{
    *free_bytes = free_now(q);
    *minfree = config_queue_minfree(q->srv->cfg);
}
