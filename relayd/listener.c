/*
 * listener: the listening TCP sockets and the connection limits. It counts
 * connections globally and per client address so one client cannot take
 * every slot (max_connections, max_connections_per_ip); an IPv6 client is
 * counted by its network (ipv6_prefix_length, lib/ipkey.c). It does not
 * speak SMTP: new connections go straight to smtpd_session_accept(), those
 * on an odmr_listen socket as ODMR sessions (RFC 2645).
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ipkey.h"
#include "listener.h"
#include "log.h"
#include "server.h"
#include "smtpd_session.h"

#define IP_BUCKETS 256

struct ip_count {
    struct ip_count *next;
    unsigned count;
    char ip[IPKEY_MAX];
};

struct listener {
    struct server *srv;
    uv_tcp_t *socks; /* one per listen address, then one per odmr_listen address */
    size_t nsocks;
    size_t nsmtp; /* socks[0 .. nsmtp - 1] are the SMTP listeners */
    size_t nopen; /* handles not yet closed */
    int stopped;
    int free_pending;
    unsigned total;
    struct ip_count *ips[IP_BUCKETS];
};

static unsigned ip_hash(const char *ip)
{
    unsigned h = 5381;

    while (*ip != '\0')
        h = h * 33u + (unsigned char)*ip++;
    return h % IP_BUCKETS;
}

static struct ip_count **ip_slot(struct listener *l, const char *ip)
{
    struct ip_count **pp = &l->ips[ip_hash(ip)];

    while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

enum listener_verdict listener_admit(struct listener *l, const struct sockaddr *peer, char *key,
                                     size_t keylen)
{
    const struct config *cfg = l->srv->cfg;
    struct ip_count **pp;
    struct ip_count *e;
    const char *ip = key;

    if (ipkey_format(peer, cfg->ipv6_prefix_length, key, keylen) != 0)
        snprintf(key, keylen, "?"); /* not IP (cannot happen on TCP): one shared count */
    pp = ip_slot(l, ip);
    e = *pp;
    if (l->total >= cfg->max_connections)
        return LISTENER_TOO_MANY;
    if (e != NULL && e->count >= cfg->max_connections_per_ip)
        return LISTENER_TOO_MANY_FROM_IP;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return LISTENER_TOO_MANY;
        snprintf(e->ip, sizeof(e->ip), "%s", ip);
        *pp = e;
    }
    e->count++;
    l->total++;
    return LISTENER_ADMIT;
}

void listener_release(struct listener *l, const char *ip)
{
    struct ip_count **pp = ip_slot(l, ip);
    struct ip_count *e = *pp;

    if (e == NULL)
        return;
    l->total--;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}

static void on_connection(uv_stream_t *stream, int status)
{
    struct listener *l = stream->data;

    if (status < 0) {
        /* EMFILE and friends: handled by refusing this one, not by dying */
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    smtpd_session_accept(l->srv, stream, (size_t)((uv_tcp_t *)stream - l->socks) >= l->nsmtp);
}

static void listener_really_free(struct listener *l)
{
    size_t i;

    for (i = 0; i < IP_BUCKETS; i++) {
        while (l->ips[i] != NULL) {
            struct ip_count *e = l->ips[i];
            l->ips[i] = e->next;
            free(e);
        }
    }
    free(l->socks);
    free(l);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct listener *l = h->data;

    if (--l->nopen == 0 && l->free_pending)
        listener_really_free(l);
}

int listener_start(struct server *srv, struct listener **out, char *err, size_t errlen)
{
    const struct config *cfg = srv->cfg;
    struct listener *l = calloc(1, sizeof(*l));
    size_t i;
    int rc = -1;

    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    l->srv = srv;
    l->socks = calloc(cfg->nlisten + cfg->nodmr_listen, sizeof(*l->socks));
    if (l->socks == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    l->nsmtp = cfg->nlisten;
    for (i = 0; i < cfg->nlisten + cfg->nodmr_listen; i++) {
        const struct cfg_listen *a =
            i < cfg->nlisten ? &cfg->listen[i] : &cfg->odmr_listen[i - cfg->nlisten];
        uv_tcp_t *t = &l->socks[i];
        /* [::]:25 must not swallow 0.0.0.0:25, so both can be listed */
        unsigned flags = a->addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
        int r;

        uv_tcp_init(srv->loop, t);
        t->data = l;
        l->nsocks++;
        l->nopen++;
        r = uv_tcp_bind(t, (const struct sockaddr *)&a->addr, flags);
        if (r == 0)
            r = uv_listen((uv_stream_t *)t, 511, on_connection);
        if (r != 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", a->text, uv_strerror(r));
            goto done;
        }
    }
    rc = 0;
done:
    if (rc != 0) {
        l->stopped = 1;
        for (i = 0; i < l->nsocks; i++)
            uv_close((uv_handle_t *)&l->socks[i], on_sock_closed);
        l->free_pending = 1;
        if (l->nopen == 0)
            listener_really_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

void listener_stop(struct listener *l)
{
    size_t i;

    if (l->stopped)
        return;
    l->stopped = 1;
    for (i = 0; i < l->nsocks; i++)
        uv_close((uv_handle_t *)&l->socks[i], on_sock_closed);
}

void listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    listener_stop(l);
    l->free_pending = 1;
    if (l->nopen == 0)
        listener_really_free(l);
}
