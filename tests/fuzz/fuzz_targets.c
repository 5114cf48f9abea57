/*
 * fuzz_targets: libFuzzer target for relayd/targets.c, where the MX hosts
 * and addresses lib/dns hands on (from a DNS server that may be hostile)
 * become the addresses a delivery tries (RFC 5321 §5.1). The input encodes
 * the hosts (name, preference, how the lookup went, addresses), this
 * relay's own preference, the per-host and per-run limits and the shuffle's
 * seed; an address is "me" when it is 127/8 or fe00::/8. What must hold:
 * the plan is exactly a plain model's (hosts at or after my preference
 * pruned, me never a target, per-host limits, a stable order by
 * preference, the outcome and the host blamed), and a run's order only
 * permutes targets within one preference before cutting to the limit.
 * No I/O and no state between inputs; replay.c drives it without libFuzzer.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_HOSTS 24
#define FUZZ_MAX_ADDRS 8 /* per host */
#define FUZZ_PORT      2525

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

struct input {
    const uint8_t *p;
    size_t n;
};

static unsigned take(struct input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static int is_me(void *arg, const struct sockaddr_storage *a)
{
    (void)arg;
    if (a->ss_family == AF_INET)
        return ((const uint8_t *)&((const struct sockaddr_in *)a)->sin_addr)[0] == 127;
    return ((const struct sockaddr_in6 *)a)->sin6_addr.s6_addr[0] == 0xfe;
}

/* Same address, port ignored. */
static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static unsigned port_of(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

struct model_target {
    size_t host;
    size_t addr;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    struct targets_host hosts[FUZZ_MAX_HOSTS];
    char names[FUZZ_MAX_HOSTS][17];
    struct sockaddr_storage addrs[FUZZ_MAX_HOSTS][FUZZ_MAX_ADDRS];
    struct model_target want[FUZZ_MAX_HOSTS * FUZZ_MAX_ADDRS];
    struct resolver_target *t = NULL, *before = NULL;
    size_t nhosts = 0, n = 0, nwant = 0, blame, per_host, max, kept_n;
    size_t first_kept = SIZE_MAX, first_temp = SIZE_MAX;
    unsigned flags, mypref, eff;
    uint64_t rng = 0;
    int mx, self = 0, rc, want_rc;

    flags = take(&in);
    mx = flags & 1;
    per_host = 1 + ((flags >> 1) & 7);
    mypref = take(&in);
    mypref = mypref == 255 ? ~0u : mypref * 4;
    max = take(&in);
    for (int i = 0; i < 8; i++)
        rng = rng << 8 | take(&in);
    if (rng == 0)
        rng = 1;
    while (in.n > 0 && nhosts < FUZZ_MAX_HOSTS) {
        struct targets_host *h = &hosts[nhosts];
        size_t nl = take(&in) % 17, k;
        for (k = 0; k < nl && in.n > 0; k++)
            names[nhosts][k] = (char)(take(&in) | 0x20); /* no NUL inside */
        names[nhosts][k] = '\0';
        h->name = names[nhosts];
        h->pref = take(&in) % 8 * 4; /* few values: ties are the interesting part */
        h->lookup = (enum targets_lookup)(take(&in) % 3);
        h->naddrs = take(&in) % (FUZZ_MAX_ADDRS + 1);
        h->addrs = addrs[nhosts];
        for (size_t j = 0; j < h->naddrs; j++) {
            struct sockaddr_storage *a = &addrs[nhosts][j];
            memset(a, 0, sizeof(*a));
            if (take(&in) & 1) {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)a;
                s6->sin6_family = AF_INET6;
                for (int b = 0; b < 16; b++)
                    s6->sin6_addr.s6_addr[b] = (uint8_t)take(&in);
            } else {
                struct sockaddr_in *s4 = (struct sockaddr_in *)a;
                s4->sin_family = AF_INET;
                for (int b = 0; b < 4; b++)
                    ((uint8_t *)&s4->sin_addr)[b] = (uint8_t)take(&in);
            }
        }
        nhosts++;
    }

    /* The model: my preference lowered by any address of mine under a host
     * whose lookup found addresses; then hosts by preference, stable. */
    eff = mypref;
    for (size_t i = 0; i < nhosts; i++)
        for (size_t j = 0; hosts[i].lookup == TARGETS_FOUND && j < hosts[i].naddrs; j++)
            if (is_me(NULL, &hosts[i].addrs[j])) {
                self = 1;
                if (hosts[i].pref < eff)
                    eff = hosts[i].pref;
            }
    if (mx && eff != ~0u)
        self = 1;
    for (unsigned p = 0; p < 32; p += 4) {
        for (size_t i = 0; i < nhosts; i++) {
            size_t taken = 0;
            if (hosts[i].pref != p || (mx && p >= eff))
                continue;
            if (first_kept == SIZE_MAX)
                first_kept = i;
            if (hosts[i].lookup == TARGETS_TEMP && first_temp == SIZE_MAX)
                first_temp = i;
            for (size_t j = 0; hosts[i].lookup == TARGETS_FOUND && j < hosts[i].naddrs; j++) {
                if (is_me(NULL, &hosts[i].addrs[j]) || taken == per_host)
                    continue;
                want[nwant].host = i;
                want[nwant++].addr = j;
                taken++;
            }
        }
    }
    want_rc = nwant > 0 ? TARGETS_OK : first_temp == SIZE_MAX && self ? TARGETS_LOOP : TARGETS_NONE;

    rc = targets_plan(hosts, nhosts, mx, mypref, is_me, NULL, FUZZ_PORT, per_host, &t, &n, &blame);
    CHECK(rc == want_rc);
    if (rc != TARGETS_OK) {
        CHECK(t == NULL && n == 0);
        CHECK(blame == (rc == TARGETS_LOOP       ? SIZE_MAX
                        : first_temp != SIZE_MAX ? first_temp
                                                 : first_kept));
        return 0;
    }
    CHECK(n == nwant && blame == SIZE_MAX);
    for (size_t k = 0; k < n; k++) {
        const struct targets_host *h = &hosts[want[k].host];
        CHECK(strcmp(t[k].host, h->name) == 0 && t[k].pref == h->pref);
        CHECK(same_addr(&t[k].addr, &h->addrs[want[k].addr]));
        CHECK(port_of(&t[k].addr) == FUZZ_PORT && !is_me(NULL, &t[k].addr));
    }

    /* One run's order: a permutation within each preference, then the cut. */
    before = malloc(n * sizeof(*before));
    CHECK(before != NULL);
    memcpy(before, t, n * sizeof(*t));
    kept_n = targets_order(t, n, max, &rng);
    CHECK(kept_n == (n < max ? n : max));
    for (size_t k = 0; k < n; k++) {
        size_t same_before = 0, same_after = 0;
        CHECK(k == 0 || t[k - 1].pref <= t[k].pref);
        CHECK(t[k].pref == before[k].pref);
        for (size_t m = 0; m < n; m++) {
            same_before += memcmp(&before[m], &before[k], sizeof(*t)) == 0;
            same_after += memcmp(&t[m], &before[k], sizeof(*t)) == 0;
        }
        CHECK(same_before == same_after);
    }
    free(before);
    free(t);
    return 0;
}
