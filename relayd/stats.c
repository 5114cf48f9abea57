/*
 * stats: counters since start per recipient domain (`etrnctl stats`), in a
 * chained hash table that doubles as it fills. Loop thread only; no I/O, no
 * locking. The number of domains is capped so that mail to ever new
 * domains (bounces to spammers' senders) cannot grow it without bound.
 */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#define STATS_MIN_BUCKETS 64
#define STATS_MAX_DOMAINS 10000 /* past this, new domains count as STATS_OTHER */
#define STATS_OTHER       "*"   /* not a domain name: cannot clash with one */
#define STATS_DOMAIN_MAX  255   /* longer names are cut (RFC 1035 §2.3.4: 253) */

struct stats_entry {
    struct stats_entry *next; /* hash chain */
    uint64_t counters[STATS_NCOUNTERS];
    char domain[]; /* normalised */
};

struct stats {
    struct stats_entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t n;
};

/* FNV-1a: short keys, no adversary who could pick colliding names usefully
 * (the table only holds domains relayd already handles). */
static size_t hash(const char *s)
{
    size_t h = 2166136261u;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

struct stats *stats_new(void)
{
    struct stats *st = calloc(1, sizeof *st);

    if (st && !(st->buckets = calloc(STATS_MIN_BUCKETS, sizeof *st->buckets))) {
        free(st);
        return NULL;
    }
    if (st)
        st->nbuckets = STATS_MIN_BUCKETS;
    return st;
}

void stats_free(struct stats *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->nbuckets; i++) {
        struct stats_entry *e, *next;

        for (e = st->buckets[i]; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(st->buckets);
    free(st);
}

/* Double the table when it holds more entries than buckets. A failed
 * allocation only leaves the chains longer. */
static void grow(struct stats *st)
{
    size_t n = st->nbuckets * 2;
    struct stats_entry **b;

    if (st->n <= st->nbuckets || !(b = calloc(n, sizeof *b)))
        return;
    for (size_t i = 0; i < st->nbuckets; i++) {
        struct stats_entry *e, *next;

        for (e = st->buckets[i]; e; e = next) {
            size_t k = hash(e->domain) & (n - 1);

            next = e->next;
            e->next = b[k];
            b[k] = e;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = n;
}

/* The entry for name (normalised), created if missing; NULL when out of
 * memory or, with create = 0, when there is none. */
static struct stats_entry *lookup(struct stats *st, const char *name, int create)
{
    size_t k = hash(name) & (st->nbuckets - 1), len;
    struct stats_entry *e;

    for (e = st->buckets[k]; e; e = e->next)
        if (strcmp(e->domain, name) == 0)
            return e;
    if (!create)
        return NULL;
    len = strlen(name);
    e = calloc(1, sizeof *e + len + 1);
    if (!e)
        return NULL;
    memcpy(e->domain, name, len + 1);
    e->next = st->buckets[k];
    st->buckets[k] = e;
    st->n++;
    grow(st);
    return e;
}

void stats_add(struct stats *st, const char *domain, enum stats_counter c, uint64_t n)
{
    char name[STATS_DOMAIN_MAX + 1];
    struct stats_entry *e;
    size_t len = 0;

    if (!st || !domain || (unsigned)c >= STATS_NCOUNTERS)
        return;
    /* Lower case, without the trailing dot of a fully qualified name. */
    for (; domain[len] && len < STATS_DOMAIN_MAX; len++)
        name[len] = domain[len] >= 'A' && domain[len] <= 'Z' ? (char)(domain[len] - 'A' + 'a')
                                                             : domain[len];
    if (len > 0 && name[len - 1] == '.')
        len--;
    name[len] = '\0';
    e = lookup(st, name, 0);
    if (!e)
        e = lookup(st, st->n < STATS_MAX_DOMAINS ? name : STATS_OTHER, 1);
    if (e)
        e->counters[c] += n;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp((*(struct stats_entry *const *)a)->domain,
                  (*(struct stats_entry *const *)b)->domain);
}

/* In domain order ("" first), so that listings are stable; in table order
 * if there is no memory to sort. */
void stats_walk(const struct stats *st,
                void (*cb)(void *arg, const char *domain, const uint64_t *counters), void *arg)
{
    struct stats_entry **v, *e;
    size_t n = 0;

    if (!st || !cb)
        return;
    v = calloc(st->n ? st->n : 1, sizeof *v);
    if (!v) {
        for (size_t i = 0; i < st->nbuckets; i++)
            for (e = st->buckets[i]; e; e = e->next)
                cb(arg, e->domain, e->counters);
        return;
    }
    for (size_t i = 0; i < st->nbuckets; i++)
        for (e = st->buckets[i]; e; e = e->next)
            v[n++] = e;
    qsort(v, n, sizeof *v, cmp_entry);
    for (size_t i = 0; i < n; i++)
        cb(arg, v[i]->domain, v[i]->counters);
    free(v);
}
