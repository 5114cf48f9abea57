/*
 * me: this relay's own addresses and name, so that delivery never connects
 * to relayd itself (RFC 5321 §5.1). The interface list comes from
 * getifaddrs() and is re-read on every reload (an address added since the
 * start counts from the next SIGHUP); the rest is copied out of the
 * configuration, so no snapshot is held. Does no DNS and no I/O but
 * getifaddrs().
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "me.h"

/* An SMTP listen address of ours: a specific address, or a wildcard. */
struct me_listen {
    struct sockaddr_storage addr; /* port 0, v4-mapped made plain IPv4 */
    unsigned port;
    int wildcard;
};

struct me {
    struct sockaddr_storage *ifaddrs; /* port 0, plain IPv4 for v4-mapped */
    size_t nif;
    struct me_listen *listen; /* from the first config only: relayd binds at start */
    size_t nlisten;
    int have_listen;
    struct cfg_net *mine; /* my_addresses */
    size_t nmine;
    unsigned delivery_port;
    char hostname[256]; /* lower case, no trailing dot */
};

struct me *me_new(void)
{
    return calloc(1, sizeof(struct me));
}

static void clear(struct me *m)
{
    free(m->ifaddrs);
    free(m->mine);
    m->ifaddrs = NULL;
    m->mine = NULL;
    m->nif = m->nmine = 0;
}

void me_free(struct me *m)
{
    if (m == NULL)
        return;
    clear(m);
    free(m->listen);
    free(m);
}

/* addr without its port, and ::ffff:a.b.c.d as a.b.c.d (RFC 4291 §2.5.5.2:
 * the same host, whichever way it is written). 0, or -1 if not IP. */
static int normalise(const struct sockaddr *addr, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (addr->sa_family == AF_INET) {
        struct sockaddr_in *o = (struct sockaddr_in *)out;
        o->sin_family = AF_INET;
        o->sin_addr = ((const struct sockaddr_in *)addr)->sin_addr;
        return 0;
    }
    if (addr->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            struct sockaddr_in *o = (struct sockaddr_in *)out;
            o->sin_family = AF_INET;
            memcpy(&o->sin_addr, &a6->s6_addr[12], 4);
        } else {
            struct sockaddr_in6 *o = (struct sockaddr_in6 *)out;
            o->sin6_family = AF_INET6;
            o->sin6_addr = *a6;
        }
        return 0;
    }
    return -1;
}

static unsigned port_of(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return 0;
}

/* Both normalised. */
static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* 0.0.0.0 or :: (normalised): "this host" to connect(), never a peer. */
static int unspecified(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

/* 127.0.0.0/8 (RFC 1122 §3.2.1.3) or ::1 (normalised). */
static int loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

/* An address this host answers on: loopback or one of its interfaces. */
static int local(const struct me *m, const struct sockaddr_storage *a)
{
    if (loopback(a) || unspecified(a))
        return 1;
    for (size_t i = 0; i < m->nif; i++)
        if (same_addr(&m->ifaddrs[i], a))
            return 1;
    return 0;
}

int me_set(struct me *m, const struct config *cfg, const struct sockaddr_storage *ifaddrs,
           size_t nif)
{
    const char *hn = cfg->hostname != NULL ? cfg->hostname : "";
    size_t len = 0;

    clear(m);
    for (; hn[len] != '\0' && len + 1 < sizeof(m->hostname); len++)
        m->hostname[len] = (char)tolower((unsigned char)hn[len]);
    if (len > 0 && m->hostname[len - 1] == '.')
        len--;
    m->hostname[len] = '\0';
    m->delivery_port = cfg->delivery_port;
    if (nif > 0 && (m->ifaddrs = calloc(nif, sizeof(*m->ifaddrs))) == NULL)
        goto nomem;
    for (size_t i = 0; i < nif; i++)
        if (normalise((const struct sockaddr *)&ifaddrs[i], &m->ifaddrs[m->nif]) == 0)
            m->nif++;
    if (!m->have_listen && cfg->nlisten > 0 &&
        (m->listen = calloc(cfg->nlisten, sizeof(*m->listen))) == NULL)
        goto nomem;
    for (size_t i = 0; !m->have_listen && i < cfg->nlisten; i++) {
        struct me_listen *l = &m->listen[m->nlisten];
        if (normalise((const struct sockaddr *)&cfg->listen[i].addr, &l->addr) != 0)
            continue;
        l->port = port_of(&cfg->listen[i].addr);
        l->wildcard = unspecified(&l->addr);
        m->nlisten++;
    }
    m->have_listen = 1;
    if (cfg->nmy_addresses > 0) {
        m->mine = malloc(cfg->nmy_addresses * sizeof(*m->mine));
        if (m->mine == NULL)
            goto nomem;
        memcpy(m->mine, cfg->my_addresses, cfg->nmy_addresses * sizeof(*m->mine));
        m->nmine = cfg->nmy_addresses;
    }
    return 0;
nomem:
    clear(m);
    return -1;
}

int me_refresh(struct me *m, const struct config *cfg, char *err, size_t errlen)
{
    struct ifaddrs *ifa = NULL;
    struct sockaddr_storage *list = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (getifaddrs(&ifa) != 0) {
        snprintf(err, errlen, "cannot list this host's addresses (getifaddrs): %s",
                 strerror(errno));
        rc = -1;
    }
    for (struct ifaddrs *i = ifa; i != NULL; i = i->ifa_next) {
        if (i->ifa_addr == NULL ||
            (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            struct sockaddr_storage *nl = realloc(list, nc * sizeof(*nl));
            if (nl == NULL)
                break;
            list = nl;
            cap = nc;
        }
        memset(&list[n], 0, sizeof(list[n]));
        memcpy(&list[n], i->ifa_addr,
               i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                 : sizeof(struct sockaddr_in6));
        n++;
    }
    if (ifa != NULL)
        freeifaddrs(ifa);
    if (me_set(m, cfg, list, n) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    free(list);
    return rc;
}

int me_is_addr(const struct me *m, const struct sockaddr *addr, unsigned port, int mx)
{
    struct sockaddr_storage a;

    if (normalise(addr, &a) != 0)
        return 0;
    if (unspecified(&a))
        return 1;
    if ((mx || port == m->delivery_port) &&
        config_net_match(m->mine, m->nmine, (const struct sockaddr *)&a))
        return 1;
    for (size_t i = 0; i < m->nlisten; i++) {
        const struct me_listen *l = &m->listen[i];
        if (l->port != port)
            continue;
        /* A wildcard listener answers on every address of this host; a
         * specific one on its own address, and loopback on that port is
         * taken as us too: no site of ours is ever reached that way. */
        if (l->wildcard ? local(m, &a) : (same_addr(&l->addr, &a) || loopback(&a)))
            return 1;
    }
    return 0;
}

int me_is_name(const struct me *m, const char *host)
{
    size_t la = strlen(host), lb = strlen(m->hostname);

    if (la > 0 && host[la - 1] == '.')
        la--;
    return la > 0 && la == lb && strncasecmp(host, m->hostname, la) == 0;
}

size_t me_count(const struct me *m)
{
    return m->nif;
}
