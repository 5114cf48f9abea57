/*
 * lru: a table of entries by string key that remembers which were used
 * least recently, for state relayd keeps per outside party (a site, a
 * client address) and must not let grow without bound. The owner embeds a
 * struct lru_node in its entry and frees the entry; the table only links
 * nodes (intrusive, no allocation per entry). Capacity is advisory: lru_full
 * says when an entry should go before the next is added, and lru_victim
 * names the least recently used one the owner does not mark as in use. So
 * an entry that something still points to (a delivery run) is never chosen,
 * and the table exceeds its capacity only while more entries than that are
 * in use at once. Pure: no I/O, no clock.
 */
#ifndef RELAYD_LRU_H
#define RELAYD_LRU_H

#include <stddef.h>

struct lru_node {
    struct lru_node *hnext;         /* hash chain */
    struct lru_node *newer, *older; /* recency list */
    const char *key;                /* the owner's, as long as the node is in a table */
    unsigned hash;
};

struct lru {
    struct lru_node **buckets;
    size_t nbuckets; /* a power of two; grows with the entries */
    struct lru_node *newest, *oldest;
    size_t n;
    size_t cap;
};

/* The entry of type that holds node as member. */
#define LRU_ENTRY(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

/* An empty table of capacity cap (at least 1). 0, or -1 when out of memory. */
int lru_init(struct lru *l, size_t cap);
/* Frees the table's own memory; the entries are the owner's. */
void lru_fini(struct lru *l);
/* A new capacity (a reload); entries over it go as the owner evicts them. */
void lru_set_cap(struct lru *l, size_t cap);

/* The entry for key, or NULL; lru_get also makes it the most recently used. */
struct lru_node *lru_find(const struct lru *l, const char *key);
struct lru_node *lru_get(struct lru *l, const char *key);
/* Add node (not in any table) under key, which must not be in l, as the
 * most recently used. Never fails (a table that cannot grow its hash keeps
 * longer chains). */
void lru_add(struct lru *l, struct lru_node *node, const char *key);
void lru_remove(struct lru *l, struct lru_node *node);

/* Does l hold cap entries or more? */
int lru_full(const struct lru *l);
size_t lru_count(const struct lru *l);
/* The least recently used entry for which in_use(node, arg) is 0 (in_use
 * NULL: any), or NULL when every entry is in use. Does not remove it. */
struct lru_node *lru_victim(const struct lru *l, int (*in_use)(const struct lru_node *, void *),
                            void *arg);

/* Walk from the most recently used: lru_newest, then lru_older until NULL.
 * The walk may remove the node it is on after taking lru_older of it. */
struct lru_node *lru_newest(const struct lru *l);
struct lru_node *lru_older(const struct lru_node *node);

#endif
