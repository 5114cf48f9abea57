/*
 * server: the one context object of the daemon, passed to every part that
 * needs the loop, the current configuration snapshot or the queue. There are
 * no other globals. Owned by main.c.
 */
#ifndef RELAYD_SERVER_H
#define RELAYD_SERVER_H

#include <limits.h>
#include <uv.h>

struct config;
struct store;
struct tls_ctx;
struct listener;
struct smtpd_session;
struct sched;
struct resolver;
struct me;
struct etrn;
struct stats;
struct auth;
struct quota;
struct notify;

struct server {
    uv_loop_t *loop;
    struct config *cfg; /* current snapshot; sessions hold their own ref */
    struct store *store;
    struct tls_ctx *tls;          /* server TLS context, NULL when no tls_cert */
    struct tls_ctx **tls_retired; /* contexts replaced by a reload, freed at exit */
    size_t ntls_retired;
    struct tls_ctx *tls_client;        /* outbound, no verification (tls = may/encrypt) */
    struct tls_ctx *tls_client_verify; /* outbound, verifying (tls = verify) */
    struct listener *listener;
    struct sched *sched;
    struct resolver *resolver;
    struct me *me;     /* this host's addresses: never deliver to ourselves */
    struct etrn *etrn; /* ETRN rate limits */
    struct auth *auth; /* SMTP AUTH: its worker thread and auth_fail_limit (issue 8) */
    char spool_dir[PATH_MAX];
    struct smtpd_session *sessions; /* every live session, for shutdown */
    unsigned nsessions;
    unsigned long long next_session_id;
    int stopping;                                 /* SIGTERM seen: no new work */
    void (*on_sessions_gone)(struct server *srv); /* set during shutdown */
    /* issue 4 */
    struct stats *stats;                /* counters since start (etrnctl stats) */
    void (*reload)(struct server *srv); /* what SIGHUP does, for etrnctl reload; may be NULL */
    /* issue 11 */
    struct quota *quota; /* per-section queue quotas and the free-space reserve */
    /* issue 9: the integrity check found the queue damaged: stop, exit 70 */
    void (*queue_damaged)(struct server *srv, const char *detail);
    struct notify *notify; /* "mail is waiting" for held domains (issue 8) */
};

#endif
