/*
 * targets: which addresses a delivery tries, and in which order (RFC 5321
 * §5.1, RFC 7505 is the resolver's). Pure: given the hosts and their
 * addresses, and a way to tell whether an address is this relay, it prunes
 * and orders; it never looks anything up.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "targets.h"

static void set_port(struct sockaddr_storage *a, unsigned port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
    else if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
}

/* Host indexes sorted by preference, stable (insertion sort: at most a few
 * dozen hosts). */
static void sort_hosts(const struct targets_host *h, size_t n, size_t *idx)
{
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && h[idx[j - 1]].pref > h[i].pref) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
}

int targets_plan(const struct targets_host *hosts, size_t nhosts, int mx, unsigned mypref,
                 targets_is_me is_me, void *arg, unsigned port, size_t per_host,
                 struct resolver_target **out, size_t *nout, size_t *blame)
{
    struct resolver_target *t = NULL;
    size_t *idx = NULL, n = 0, cap = 0;
    size_t first_kept = SIZE_MAX, first_temp = SIZE_MAX;
    int self = 0, rc = -1;

    *out = NULL;
    *nout = 0;
    *blame = SIZE_MAX;
    if (nhosts > 0 && (idx = malloc(nhosts * sizeof(*idx))) == NULL)
        goto done;
    sort_hosts(hosts, nhosts, idx);
    /* RFC 5321 §5.1: an MX host that is us by one of its addresses sets our
     * preference as a match by name does. */
    for (size_t i = 0; i < nhosts; i++) {
        const struct targets_host *h = &hosts[i];
        for (size_t j = 0; h->lookup == TARGETS_FOUND && j < h->naddrs; j++) {
            if (is_me(arg, &h->addrs[j])) {
                self = 1;
                if (h->pref < mypref)
                    mypref = h->pref;
            }
        }
    }
    if (mx && mypref != ~0u)
        self = 1;
    for (size_t k = 0; k < nhosts; k++) {
        const struct targets_host *h = &hosts[idx[k]];
        size_t taken = 0;
        /* "...MUST discard all MX records with the same or higher
         * preference value than its own": they would hand the mail back
         * to us, or to a peer that forwards it to the better hosts. */
        if (mx && h->pref >= mypref)
            continue;
        if (first_kept == SIZE_MAX)
            first_kept = idx[k];
        if (h->lookup == TARGETS_TEMP && first_temp == SIZE_MAX)
            first_temp = idx[k];
        for (size_t j = 0; h->lookup == TARGETS_FOUND && j < h->naddrs && taken < per_host; j++) {
            if (is_me(arg, &h->addrs[j]))
                continue; /* a route host that is us */
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 8;
                struct resolver_target *nt = realloc(t, nc * sizeof(*t));
                if (nt == NULL)
                    goto done;
                t = nt;
                cap = nc;
            }
            memset(&t[n], 0, sizeof(t[n]));
            snprintf(t[n].host, sizeof(t[n].host), "%s", h->name);
            t[n].addr = h->addrs[j];
            set_port(&t[n].addr, port);
            t[n].pref = h->pref;
            n++;
            taken++;
        }
    }
    if (n > 0) {
        *out = t;
        *nout = n;
        t = NULL;
        rc = TARGETS_OK;
    } else if (first_temp == SIZE_MAX && self) {
        rc = TARGETS_LOOP;
    } else {
        *blame = first_temp != SIZE_MAX ? first_temp : first_kept;
        rc = TARGETS_NONE;
    }
done:
    free(t);
    free(idx);
    return rc;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s; /* xorshift64* */

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Shuffle the hosts of t[from..to) (all of one preference). */
static void shuffle_group(struct resolver_target *t, size_t from, size_t to, uint64_t *rng,
                          struct resolver_target *tmp, size_t *start, size_t *len)
{
    size_t nh = 0, k = 0;

    for (size_t i = from; i < to; i++) {
        if (i == from || strcmp(t[i].host, t[i - 1].host) != 0) {
            start[nh] = i;
            len[nh] = 0;
            nh++;
        }
        len[nh - 1]++;
    }
    if (nh < 2)
        return;
    for (size_t i = nh - 1; i > 0; i--) { /* Fisher-Yates over the hosts */
        size_t j = (size_t)(rng_next(rng) % (i + 1));
        size_t s = start[i], l = len[i];
        start[i] = start[j];
        len[i] = len[j];
        start[j] = s;
        len[j] = l;
    }
    for (size_t i = 0; i < nh; i++) {
        memcpy(&tmp[k], &t[start[i]], len[i] * sizeof(*t));
        k += len[i];
    }
    memcpy(&t[from], tmp, k * sizeof(*t));
}

size_t targets_order(struct resolver_target *t, size_t n, size_t max, uint64_t *rng)
{
    struct resolver_target *tmp = n > 1 ? malloc(n * sizeof(*tmp)) : NULL;
    size_t *start = n > 1 ? malloc(n * sizeof(*start)) : NULL;
    size_t *len = n > 1 ? malloc(n * sizeof(*len)) : NULL;

    /* Out of memory only costs the shuffle: the order stays by preference. */
    if (tmp != NULL && start != NULL && len != NULL) {
        for (size_t i = 0, j; i < n; i = j) {
            for (j = i + 1; j < n && t[j].pref == t[i].pref; j++)
                ;
            shuffle_group(t, i, j, rng, tmp, start, len);
        }
    }
    free(tmp);
    free(start);
    free(len);
    return n < max ? n : max;
}
