/*
 * auth_fail: the failed-AUTH table behind auth_fail_limit (see
 * auth_fail.h): a hash of client keys, each with the start of its window
 * and its failures in it. No clock of its own, no I/O, no SASL.
 */
#include "auth_fail.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024

/* Has the window that began at since passed by now? (A clock that went
 * back leaves the window open.) */
static int passed(uint64_t since, uint64_t now, uint64_t period)
{
    return now >= since && now - since >= period;
}

struct entry {
    struct entry *next;
    char key[AUTH_FAIL_KEY_MAX];
    uint64_t since; /* start of the window */
    unsigned count; /* failures in it */
};

struct auth_fail {
    struct entry *b[BUCKETS];
    size_t n;
};

struct auth_fail *auth_fail_new(void)
{
    return calloc(1, sizeof(struct auth_fail));
}

void auth_fail_free(struct auth_fail *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < BUCKETS; i++) {
        while (f->b[i] != NULL) {
            struct entry *e = f->b[i];
            f->b[i] = e->next;
            free(e);
        }
    }
    free(f);
}

/* Where key is, or where it would be added. key compared as stored (cut). */
static struct entry **slot(struct auth_fail *f, const char *key)
{
    char k[AUTH_FAIL_KEY_MAX];
    unsigned h = 5381;
    struct entry **pp;

    snprintf(k, sizeof(k), "%s", key);
    for (const char *p = k; *p != '\0'; p++)
        h = h * 33u + (unsigned char)*p;
    for (pp = &f->b[h % BUCKETS]; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->key, k) == 0)
            break;
    return pp;
}

unsigned auth_fail_count(struct auth_fail *f, const char *key, uint64_t now, uint64_t period)
{
    struct entry *e = *slot(f, key);

    if (e == NULL || passed(e->since, now, period))
        return 0;
    return e->count;
}

/* Make room: windows that have passed go; if the table is still over 7/8
 * full, the oldest window of each bucket goes, round after round, so a
 * flood of new clients costs one scan per AUTH_FAIL_MAX / 8 of them. */
static void prune(struct auth_fail *f, uint64_t now, uint64_t period)
{
    const size_t target = AUTH_FAIL_MAX - AUTH_FAIL_MAX / 8;

    for (size_t i = 0; i < BUCKETS; i++) {
        for (struct entry **pp = &f->b[i]; *pp != NULL;) {
            struct entry *e = *pp;
            if (passed(e->since, now, period)) {
                *pp = e->next;
                free(e);
                f->n--;
            } else {
                pp = &e->next;
            }
        }
    }
    while (f->n > target) {
        for (size_t i = 0; i < BUCKETS && f->n > target; i++) {
            struct entry **oldest = NULL;
            for (struct entry **pp = &f->b[i]; *pp != NULL; pp = &(*pp)->next)
                if (oldest == NULL || (*pp)->since < (*oldest)->since)
                    oldest = pp;
            if (oldest != NULL) {
                struct entry *e = *oldest;
                *oldest = e->next;
                free(e);
                f->n--;
            }
        }
    }
}

void auth_fail_add(struct auth_fail *f, const char *key, uint64_t now, uint64_t period)
{
    struct entry **pp = slot(f, key), *e = *pp;

    if (e == NULL) {
        if (f->n >= AUTH_FAIL_MAX) {
            prune(f, now, period);
            pp = slot(f, key);
        }
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return;
        snprintf(e->key, sizeof(e->key), "%s", key);
        e->since = now;
        *pp = e;
        f->n++;
    }
    if (passed(e->since, now, period)) {
        e->since = now;
        e->count = 0;
    }
    e->count++;
}

size_t auth_fail_size(const struct auth_fail *f)
{
    return f->n;
}
