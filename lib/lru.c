/*
 * lru: a string-keyed table with least-recently-used order; see lru.h. A
 * chained hash table (FNV-1a, power-of-two buckets grown with the entries)
 * for lookups and a doubly linked list for the order. It never allocates
 * per entry and never frees an entry: that is the owner's.
 */
#include <stdlib.h>
#include <string.h>

#include "lru.h"

#define LRU_MIN_BUCKETS 16

static unsigned lru_hash(const char *s)
{
    unsigned h = 2166136261u;

    while (*s != '\0')
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

int lru_init(struct lru *l, size_t cap)
{
    memset(l, 0, sizeof(*l));
    l->buckets = calloc(LRU_MIN_BUCKETS, sizeof(*l->buckets));
    if (l->buckets == NULL)
        return -1;
    l->nbuckets = LRU_MIN_BUCKETS;
    l->cap = cap > 0 ? cap : 1;
    return 0;
}

void lru_fini(struct lru *l)
{
    free(l->buckets);
    memset(l, 0, sizeof(*l));
}

void lru_set_cap(struct lru *l, size_t cap)
{
    l->cap = cap > 0 ? cap : 1;
}

/* Twice the buckets, once there are more entries than buckets; if memory
 * is short the chains just get longer. */
static void lru_grow(struct lru *l)
{
    size_t nb = l->nbuckets * 2;
    struct lru_node **b;

    if (nb < l->nbuckets || (b = calloc(nb, sizeof(*b))) == NULL)
        return;
    for (size_t i = 0; i < l->nbuckets; i++) {
        struct lru_node *n = l->buckets[i], *next;

        for (; n != NULL; n = next) {
            next = n->hnext;
            n->hnext = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(l->buckets);
    l->buckets = b;
    l->nbuckets = nb;
}

struct lru_node *lru_find(const struct lru *l, const char *key)
{
    unsigned h = lru_hash(key);
    struct lru_node *n;

    for (n = l->buckets[h & (l->nbuckets - 1)]; n != NULL; n = n->hnext)
        if (n->hash == h && strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

static void list_unlink(struct lru *l, struct lru_node *n)
{
    if (n->newer != NULL)
        n->newer->older = n->older;
    else
        l->newest = n->older;
    if (n->older != NULL)
        n->older->newer = n->newer;
    else
        l->oldest = n->newer;
    n->newer = n->older = NULL;
}

static void list_push(struct lru *l, struct lru_node *n)
{
    n->newer = NULL;
    n->older = l->newest;
    if (l->newest != NULL)
        l->newest->newer = n;
    else
        l->oldest = n;
    l->newest = n;
}

struct lru_node *lru_get(struct lru *l, const char *key)
{
    struct lru_node *n = lru_find(l, key);

    if (n != NULL && n != l->newest) {
        list_unlink(l, n);
        list_push(l, n);
    }
    return n;
}

void lru_add(struct lru *l, struct lru_node *node, const char *key)
{
    struct lru_node **b;

    if (l->n >= l->nbuckets)
        lru_grow(l);
    node->key = key;
    node->hash = lru_hash(key);
    b = &l->buckets[node->hash & (l->nbuckets - 1)];
    node->hnext = *b;
    *b = node;
    list_push(l, node);
    l->n++;
}

void lru_remove(struct lru *l, struct lru_node *node)
{
    struct lru_node **pp = &l->buckets[node->hash & (l->nbuckets - 1)];

    while (*pp != NULL && *pp != node)
        pp = &(*pp)->hnext;
    if (*pp == NULL)
        return; /* not in this table */
    *pp = node->hnext;
    node->hnext = NULL;
    list_unlink(l, node);
    l->n--;
}

int lru_full(const struct lru *l)
{
    return l->n >= l->cap;
}

size_t lru_count(const struct lru *l)
{
    return l->n;
}

struct lru_node *lru_victim(const struct lru *l, int (*in_use)(const struct lru_node *, void *),
                            void *arg)
{
    struct lru_node *n;

    for (n = l->oldest; n != NULL; n = n->newer)
        if (in_use == NULL || !in_use(n, arg))
            return n;
    return NULL;
}

struct lru_node *lru_newest(const struct lru *l)
{
    return l->newest;
}

struct lru_node *lru_older(const struct lru_node *node)
{
    return node->older;
}
