/*
 * main: relayd's start-up, signals and shutdown. It parses the command line,
 * loads the configuration snapshot; while still root it checks and locks the
 * queue's directory (datadir, queue_lock) and binds the listeners; then it
 * drops privileges, opens the queue as that user, runs the one libuv loop,
 * and on SIGHUP swaps in a new snapshot; on SIGTERM it stops accepting, lets
 * messages in DATA finish (bounded) and commits before exiting 0.
 * It does no protocol work itself.
 */
#define LOG_SERVICE "master" /* log lines are tagged relayd/master */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "control.h"
#include "datadir.h"
#include "etrn.h"
#include "me.h"
#include "resolver.h"
#include "sched.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "queue_lock.h"
#include "recipients.h"
#include "server.h"
#include "smtpd_session.h"
#include "spool.h"
#include "stats.h"
#include "quota.h"
#include "store.h"
#include "tls.h"

struct relayd_main {
    struct server srv;
    const char *config_path;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t shutdown_timer;
    int shutdown_timer_open;
    struct control *control;
    /* SIGHUP: the new snapshot's recipients lists are read on the thread
     * pool; one reload at a time, a SIGHUP meanwhile runs another after it */
    int reloading, reload_again;
    struct config *reload_old; /* the snapshot the new one is compared with */
    int lock_fd;               /* queue_lock: held until exit */
    /* the certificate and key files srv->tls was read from, as they were
     * then: a reload reads them again only when they changed */
    struct stat tls_cert_st, tls_key_st;
    int exit_status;           /* 0, or EX_SOFTWARE once the queue was found damaged */
};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: relayd [-dtV] [-n [-a]] [-f file]\n"
                "  -f file  configuration file (default " CONFIG_DEFAULT_PATH ")\n"
                "  -d       stay in the foreground, log to stderr\n"
                "  -n       print the keys that differ from their defaults and exit\n"
                "  -a       with -n: print every key, defaults included\n"
                "  -t       check the configuration and exit\n"
                "  -V       print the version and exit\n");
}

/* The user named by `user`, looked up while still root. */
struct run_user {
    int set; /* root with `user` set: drop to it */
    uid_t uid;
    gid_t gid;
    char name[256];
};

static int lookup_user(const char *user, struct run_user *ru)
{
    struct passwd *pw;

    memset(ru, 0, sizeof(*ru));
    ru->uid = (uid_t)-1;
    ru->gid = (gid_t)-1;
    if (user == NULL || geteuid() != 0)
        return 0;
    pw = getpwnam(user);
    if (pw == NULL || strlen(pw->pw_name) >= sizeof(ru->name))
        return -1;
    ru->set = 1;
    ru->uid = pw->pw_uid;
    ru->gid = pw->pw_gid;
    memcpy(ru->name, pw->pw_name, strlen(pw->pw_name) + 1);
    return 0;
}

/* Nothing is chowned here: the queue's directory was given to the user by
 * datadir_open, and the queue and spool are created after this, by it. */
static int drop_privileges(const struct run_user *ru)
{
    if (!ru->set)
        return 0;
    /* glibc applies set*id to every thread */
    if (initgroups(ru->name, ru->gid) != 0 || setgid(ru->gid) != 0 || setuid(ru->uid) != 0) {
        log_error("cannot switch to user %s: %s", ru->name, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        log_error("privileges could be regained after dropping them");
        return -1;
    }
    log_info("running as user %s", ru->name);
    return 0;
}

/* systemd Type=notify (sd_notify protocol), without linking libsystemd. */
static void notify_systemd(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    socklen_t len;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sun.sun_path))
        return;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0';
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    (void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, len);
    close(fd);
}

/* sd_notify(3) around a reload: RELOADING=1 with the monotonic time when it
 * starts (what Type=notify-reload also asks for), READY=1 when the new
 * configuration is in place or the old one was kept. */
static void notify_reloading(void)
{
    struct timespec ts;
    char msg[64];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify_systemd(msg);
}

static int same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static struct tls_ctx *load_tls(const struct config *cfg, char *err, size_t errlen)
{
    if (cfg->tls_cert == NULL)
        return NULL;
    return tls_ctx_new_server(cfg->tls_cert, cfg->tls_key, err, errlen);
}

/* What stat(2) says of the server certificate and key files (the key may
 * be in the certificate's file); zeroes for a file that is not there. */
static void tls_files_stat(const struct config *cfg, struct stat *cert, struct stat *key)
{
    memset(cert, 0, sizeof(*cert));
    memset(key, 0, sizeof(*key));
    if (cfg->tls_cert == NULL)
        return;
    if (stat(cfg->tls_cert, cert) != 0)
        memset(cert, 0, sizeof(*cert));
    if (stat(cfg->tls_key != NULL ? cfg->tls_key : cfg->tls_cert, key) != 0)
        memset(key, 0, sizeof(*key));
}

static int same_file_state(const struct stat *a, const struct stat *b)
{
    return a->st_ino != 0 && a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
           a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The new snapshot is complete (recipients lists attached): swap it in. */
static void reload_apply(struct relayd_main *m, struct config *ncfg)
{
    struct server *srv = &m->srv;
    struct config *old = srv->cfg;
    struct stat cert_st, key_st;
    char err[512];
    size_t i;
    int listen_changed = old->nlisten != 0;

    /* read the files again when they changed, even under the old names: a
     * certificate is usually renewed in place (certbot, acme.sh) and then
     * SIGHUP is sent. Stat before reading: a change in between is seen by
     * the next reload. Unchanged files keep the context (each replaced one
     * is kept until exit for the sessions that use it). */
    tls_files_stat(ncfg, &cert_st, &key_st);
    if (!same_str(ncfg->tls_cert, old->tls_cert) || !same_str(ncfg->tls_key, old->tls_key) ||
        (ncfg->tls_cert != NULL && (!same_file_state(&cert_st, &m->tls_cert_st) ||
                                    !same_file_state(&key_st, &m->tls_key_st)))) {
        struct tls_ctx *t = NULL;
        if (ncfg->tls_cert != NULL && (t = load_tls(ncfg, err, sizeof(err))) == NULL) {
            log_warn("reload failed: TLS: %s; keeping the old configuration", err);
            config_unref(ncfg);
            return;
        }
        m->tls_cert_st = cert_st;
        m->tls_key_st = key_st;
        if (srv->tls != NULL) {
            /* sessions in TLS may still use it: keep it until exit */
            struct tls_ctx **r = realloc(srv->tls_retired, (srv->ntls_retired + 1) * sizeof(*r));
            if (r != NULL) {
                srv->tls_retired = r;
                r[srv->ntls_retired++] = srv->tls;
            }
        }
        srv->tls = t;
    }
    /* the CAs for tls = verify: read again too (bundles are updated in
     * place); the old context stays for connections that still use it, and
     * delivery gives no verify domain's mail to those (issue 7) */
    {
        struct tls_ctx *v = tls_ctx_new_client(1, ncfg->tls_ca_file, err, sizeof(err));
        struct tls_ctx **r;
        if (v == NULL) {
            log_warn("reload failed: tls_ca_file: %s; keeping the old configuration", err);
            config_unref(ncfg);
            return;
        }
        r = srv->tls_client_verify != NULL
                ? realloc(srv->tls_retired, (srv->ntls_retired + 1) * sizeof(*r))
                : NULL;
        if (r != NULL) {
            srv->tls_retired = r;
            r[srv->ntls_retired++] = srv->tls_client_verify;
        } else if (srv->tls_client_verify != NULL) {
            tls_ctx_free(v); /* cannot keep the old one safely: keep using it */
            v = srv->tls_client_verify;
        }
        srv->tls_client_verify = v;
    }
    if (ncfg->nlisten == old->nlisten && ncfg->nodmr_listen == old->nodmr_listen) {
        listen_changed = 0;
        for (i = 0; i < ncfg->nlisten; i++)
            if (strcmp(ncfg->listen[i].text, old->listen[i].text) != 0)
                listen_changed = 1;
        for (i = 0; i < ncfg->nodmr_listen; i++)
            if (strcmp(ncfg->odmr_listen[i].text, old->odmr_listen[i].text) != 0)
                listen_changed = 1;
    } else {
        listen_changed = 1;
    }
    if (listen_changed)
        log_warn("reload: listen addresses changed; restart relayd to apply");
    if (strcmp(ncfg->database, old->database) != 0)
        log_warn("reload: database changed; restart relayd to apply");
    if (!same_str(ncfg->user, old->user))
        log_warn("reload: user changed; restart relayd to apply");
    /* who we are: interface addresses come and go (RFC 5321 §5.1 pruning) */
    if (me_refresh(srv->me, ncfg, err, sizeof(err)) != 0)
        log_error("reload: %s; mail to this host's other addresses may loop", err);
    if (resolver_set_servers(srv->resolver, ncfg->dns_servers, err, sizeof(err)) != 0)
        log_error("reload: dns_servers: %s; keeping the servers in use", err);
    srv->cfg = ncfg;
    config_unref(old);
    resolver_flush_cache(srv->resolver);
    if (srv->quota != NULL)
        quota_reload(srv->quota); /* sections may have come or gone */
    log_set_level(ncfg->log_level);
    log_info("configuration reloaded from %s (%zu domains)", m->config_path, ncfg->ndomains);
}

static void reload(struct relayd_main *m);

static void reload_attached(struct config *ncfg, int status, const char *err, void *arg)
{
    struct relayd_main *m = arg;

    m->reloading = 0;
    if (status != 0) {
        log_warn("reload failed: %s; keeping the old configuration", err);
        config_unref(ncfg);
    } else if (m->srv.stopping) {
        config_unref(ncfg);
    } else {
        reload_apply(m, ncfg);
    }
    config_unref(m->reload_old);
    m->reload_old = NULL;
    if (m->reload_again && !m->srv.stopping) {
        m->reload_again = 0;
        reload(m);
        return;
    }
    if (!m->srv.stopping)
        notify_systemd("READY=1");
}

/* SIGHUP: read the file now (small), the recipients lists on the thread pool. */
static void reload(struct relayd_main *m)
{
    struct server *srv = &m->srv;
    struct config *ncfg = NULL;
    char err[512];
    int rc;

    if (m->reloading) {
        m->reload_again = 1;
        return;
    }
    notify_reloading();
    if (config_load(m->config_path, &ncfg, err, sizeof(err)) != 0) {
        log_warn("reload failed: %s; keeping the old configuration", err);
        notify_systemd("READY=1");
        return;
    }
    m->reload_old = config_ref(srv->cfg);
    rc = recipients_attach_async(srv->loop, ncfg, m->reload_old, reload_attached, m);
    if (rc != 0) {
        log_warn("reload failed: %s; keeping the old configuration", uv_strerror(rc));
        config_unref(ncfg);
        config_unref(m->reload_old);
        m->reload_old = NULL;
        notify_systemd("READY=1");
        return;
    }
    m->reloading = 1;
}

/* etrnctl reload: the same as SIGHUP. */
static void reload_srv(struct server *srv)
{
    reload((struct relayd_main *)srv);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Deliveries have ended: commit what is pending and let the loop end. */
static void deliveries_stopped(struct server *srv)
{
    struct relayd_main *m = (struct relayd_main *)srv;

    if (m->shutdown_timer_open) {
        m->shutdown_timer_open = 0;
        close_handle((uv_handle_t *)&m->shutdown_timer);
    }
    close_handle((uv_handle_t *)&m->sig_term);
    close_handle((uv_handle_t *)&m->sig_int);
    close_handle((uv_handle_t *)&m->sig_hup);
    quota_free(srv->quota);
    srv->quota = NULL;
    store_close(srv->store);
    srv->store = NULL;
    auth_close(srv->auth); /* every session has gone */
    srv->auth = NULL;
    resolver_close(srv->resolver);
    srv->resolver = NULL;
}

/* Every session is gone: stop the deliveries (bounded by their timeouts). */
static void finish_shutdown(struct server *srv)
{
    srv->on_sessions_gone = NULL;
    sched_stop(srv->sched, deliveries_stopped);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct relayd_main *m = t->data;

    log_warn("shutdown: sessions still busy after shutdown_timeout; closing them");
    smtpd_session_abort_all(&m->srv);
}

static void begin_shutdown(struct relayd_main *m, const char *why)
{
    struct server *srv = &m->srv;

    if (srv->stopping)
        return;
    srv->stopping = 1;
    log_info("relayd stopping (%s)", why);
    notify_systemd("STOPPING=1");
    listener_stop(srv->listener);
    control_close(m->control);
    notify_close(srv->notify);
    m->control = NULL;
    srv->on_sessions_gone = finish_shutdown;
    smtpd_session_shutdown_all(srv);
    if (srv->nsessions == 0) {
        finish_shutdown(srv);
        return;
    }
    uv_timer_init(srv->loop, &m->shutdown_timer);
    m->shutdown_timer.data = m;
    m->shutdown_timer_open = 1;
    uv_timer_start(&m->shutdown_timer, on_shutdown_timeout, srv->cfg->shutdown_timeout, 0);
}

/* The integrity check (store_check_start) found the queue damaged, in the
 * background after ready or by `etrnctl check --deep`: as at start-up, relayd
 * does not go on with a damaged queue. It stops as on SIGTERM (what is in
 * flight finishes or is kept) and exits 70. */
static void queue_damaged(struct server *srv, const char *detail)
{
    struct relayd_main *m = (struct relayd_main *)srv;

    log_error("queue %s is damaged (quick_check: %s); stopping", srv->cfg->database, detail);
    m->exit_status = EX_SOFTWARE;
    begin_shutdown(m, "queue damaged");
}

/* The check started once relayd is ready. */
static void on_start_check(int status, const char *detail, void *arg)
{
    struct relayd_main *m = arg;

    if (status == STORE_OK)
        log_info("queue %s: integrity check ok", m->srv.cfg->database);
    else if (status == STORE_CHECK_DAMAGED)
        queue_damaged(&m->srv, detail);
    else if (!m->srv.stopping)
        log_warn("queue %s: integrity check did not run: %s", m->srv.cfg->database, detail);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct relayd_main *m = h->data;

    if (signum == SIGHUP) {
        if (!m->srv.stopping)
            reload(m);
        return;
    }
    begin_shutdown(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

int main(int argc, char **argv)
{
    struct relayd_main m;
    struct server *srv = &m.srv;
    struct run_user ru;
    struct datadir dd;
    char err[1024];
    int foreground = 0, check_only = 0, print_only = 0, print_all = 0;
    int ch, i, rc;

    /* Whatever relayd creates (queue, WAL, spool) grants nothing to other
     * users, whatever umask it was started with. */
    umask(027);
    memset(&m, 0, sizeof(m));
    m.lock_fd = -1;
    m.config_path = CONFIG_DEFAULT_PATH;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("relayd %s\n", PACKAGE_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    }
    while ((ch = getopt(argc, argv, "adf:ntVh")) != -1) {
        switch (ch) {
        case 'a':
            print_all = 1;
            break;
        case 'd':
            foreground = 1;
            break;
        case 'f':
            m.config_path = optarg;
            break;
        case 'n':
            print_only = 1;
            break;
        case 't':
            check_only = 1;
            break;
        case 'V':
            printf("relayd %s\n", PACKAGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return EX_USAGE;
    }
    log_open("relayd", foreground || check_only || print_only);

    if (config_load(m.config_path, &srv->cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "relayd: %s\n", err);
        return EX_CONFIG;
    }
    if (print_only) {
        config_print(srv->cfg, stdout, print_all);
        config_unref(srv->cfg);
        return 0;
    }
    tls_files_stat(srv->cfg, &m.tls_cert_st, &m.tls_key_st);
    if (srv->cfg->tls_cert != NULL && (srv->tls = load_tls(srv->cfg, err, sizeof(err))) == NULL) {
        fprintf(stderr, "relayd: %s: TLS: %s\n", m.config_path, err);
        config_unref(srv->cfg);
        return EX_CONFIG;
    }
    if (recipients_attach(srv->cfg, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "relayd: %s\n", err);
        tls_ctx_free(srv->tls);
        config_unref(srv->cfg);
        return EX_CONFIG;
    }
    if (check_only) {
        int status = config_check(srv->cfg, stderr);
        if (status == 0)
            fprintf(stderr, "relayd: configuration %s is valid\n", m.config_path);
        tls_ctx_free(srv->tls);
        config_unref(srv->cfg);
        return status;
    }
    {
        /* the same status as -t gives, before anything is opened */
        int status = config_check_user(srv->cfg, err, sizeof(err));
        if (status != 0)
            log_fatal(status, "%s", err);
    }
    log_set_level(srv->cfg->log_level);
    signal(SIGPIPE, SIG_IGN);

    srv->loop = uv_default_loop();
    srv->stats = stats_new();
    if (srv->stats == NULL)
        log_fatal(EX_SOFTWARE, "out of memory");
    srv->reload = reload_srv;
    if (lookup_user(srv->cfg->user, &ru) != 0)
        log_fatal(EX_NOUSER, "user %s: no such user", srv->cfg->user);
    /* As root only bind, open and drop: the queue's directory is checked on
     * a descriptor, and the queue is locked before anything listens, so a
     * second relayd on the same database stops here. */
    rc = datadir_open(srv->cfg->database, ru.uid, ru.gid, &dd, err, sizeof(err));
    if (rc != 0)
        log_fatal(rc, "queue %s: %s", srv->cfg->database, err);
    rc = queue_lock_take(dd.fd, dd.name, srv->cfg->database, ru.uid, ru.gid, &m.lock_fd, err,
                         sizeof(err));
    if (rc != 0)
        log_fatal(rc, "%s", err);
    if (listener_start(srv, &srv->listener, err, sizeof(err)) != 0)
        log_fatal(EX_OSERR, "%s", err);
    if (control_open(srv, &m.control, err, sizeof(err)) != 0)
        log_fatal(EX_OSERR, "control socket: %s", err);
    /* outbound TLS: opportunistic, and verifying for tls = verify domains
     * (the CA file may be readable by root only) */
    srv->tls_client = tls_ctx_new_client(0, NULL, err, sizeof(err));
    if (srv->tls_client == NULL)
        log_warn("outbound TLS unavailable: %s", err);
    srv->tls_client_verify = tls_ctx_new_client(1, srv->cfg->tls_ca_file, err, sizeof(err));
    if (srv->tls_client_verify == NULL)
        log_warn("verified outbound TLS unavailable: %s", err);
    if (drop_privileges(&ru) != 0)
        log_fatal(EX_NOPERM, "cannot drop privileges");
    /* From here on as the user: what it creates is its own. */
    rc = datadir_check_queue(&dd, err, sizeof(err));
    if (rc != 0)
        log_fatal(rc, "queue %s: %s", srv->cfg->database, err);
    if (spool_dir_init(dd.fd, dd.name, srv->cfg->database, srv->spool_dir,
                       sizeof(srv->spool_dir)) != 0)
        log_fatal(EX_CANTCREAT, "cannot set up the spool directory for %s", srv->cfg->database);
    datadir_close(&dd);
    if (store_open(srv->loop, srv->cfg->database, &srv->store, err, sizeof(err)) != 0)
        log_fatal(EX_SOFTWARE, "cannot open the queue %s: %s", srv->cfg->database, err);
    if (quota_open(srv, &srv->quota) != 0)
        log_fatal(EX_SOFTWARE, "out of memory");
    srv->me = me_new();
    if (srv->me == NULL)
        log_fatal(EX_SOFTWARE, "out of memory");
    if (me_refresh(srv->me, srv->cfg, err, sizeof(err)) != 0)
        log_error("%s; mail to this host's other addresses may loop", err);
    if (resolver_open(srv->loop, srv->cfg->dns_servers, srv->me, &srv->resolver, err,
                      sizeof(err)) != 0)
        log_fatal(EX_SOFTWARE, "cannot start the resolver: %s", err);
    if (etrn_open(srv, &srv->etrn) != 0 || sched_open(srv, &srv->sched) != 0 ||
        notify_open(srv, &srv->notify) != 0)
        log_fatal(EX_SOFTWARE, "out of memory");
    if (auth_open(srv->loop, &srv->auth) != 0)
        log_fatal(EX_SOFTWARE, "cannot start the authentication thread");

    uv_signal_init(srv->loop, &m.sig_term);
    uv_signal_init(srv->loop, &m.sig_int);
    uv_signal_init(srv->loop, &m.sig_hup);
    m.sig_term.data = m.sig_int.data = m.sig_hup.data = &m;
    uv_signal_start(&m.sig_term, on_signal, SIGTERM);
    uv_signal_start(&m.sig_int, on_signal, SIGINT);
    uv_signal_start(&m.sig_hup, on_signal, SIGHUP);

    {
        char addrs[512] = "";
        size_t n = 0, k;
        for (k = 0; k < srv->cfg->nlisten && n < sizeof(addrs); k++)
            n += (size_t)snprintf(addrs + n, sizeof(addrs) - n, "%s%s", k ? ", " : "",
                                  srv->cfg->listen[k].text);
        for (k = 0; k < srv->cfg->nodmr_listen && n < sizeof(addrs); k++)
            n += (size_t)snprintf(addrs + n, sizeof(addrs) - n, ", %s (ODMR)",
                                  srv->cfg->odmr_listen[k].text);
        log_info("relayd ready: version %s, listening on %s, queue %s", PACKAGE_VERSION, addrs,
                 srv->cfg->database);
    }
    notify_systemd("READY=1");
    srv->queue_damaged = queue_damaged;
    /* The whole-file check after ready (issue 9); the header and the schema
     * were checked by store_open. */
    if ((rc = store_check_start(srv->store, on_start_check, &m)) != 0)
        log_warn("queue %s: cannot start the integrity check: %s", srv->cfg->database,
                 uv_strerror(rc));

    uv_run(srv->loop, UV_RUN_DEFAULT);

    listener_free(srv->listener);
    uv_run(srv->loop, UV_RUN_DEFAULT); /* let the listener's close callbacks run */
    if (uv_loop_close(srv->loop) != 0)
        log_warn("loop closed with handles still open");
    sched_free(srv->sched);
    notify_free(srv->notify);
    etrn_free(srv->etrn);
    stats_free(srv->stats);
    me_free(srv->me);
    tls_ctx_free(srv->tls);
    tls_ctx_free(srv->tls_client);
    tls_ctx_free(srv->tls_client_verify);
    for (size_t k = 0; k < srv->ntls_retired; k++)
        tls_ctx_free(srv->tls_retired[k]);
    free(srv->tls_retired);
    config_unref(srv->cfg);
    /* the queue is closed and committed: another relayd may have it now */
    close(m.lock_fd);
    log_info("relayd stopped");
    return m.exit_status;
}
