/*
 * config: relayd.conf(5) parsed into an immutable, reference-counted
 * snapshot. One table of keys (name, type, default, field, validator) drives
 * parsing, `relayd -n` and the man page. SIGHUP builds a new snapshot and
 * swaps it in; sessions keep the one they started with.
 * Does not open sockets or databases: it only describes them.
 */
#ifndef RELAYD_CONFIG_H
#define RELAYD_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "log.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define CONFIG_DEFAULT_PATH SYSCONFDIR "/relayd/relayd.conf"

enum cfg_mode { CFG_MODE_HOLD = 0, CFG_MODE_RETRY };
/* Outbound TLS policy (RFC 3207, RFC 7435): same values as enum smtp_client_tls. */
enum cfg_tls { CFG_TLS_NONE = 0, CFG_TLS_MAY, CFG_TLS_ENCRYPT, CFG_TLS_VERIFY };

/* An address block: 192.0.2.0/24, 2001:db8::/32, or one address (full prefix).
 * In etrn_access, "auth" is an entry of family CFG_NET_AUTH, which no address
 * matches (config_net_match skips it). */
#define CFG_NET_AUTH AF_UNSPEC
struct cfg_net {
    struct sockaddr_storage addr; /* port 0 */
    unsigned prefix;
};

struct cfg_listen {
    struct sockaddr_storage addr; /* ready for uv_tcp_bind */
    char text[80];                /* "127.0.0.1:2525", "[::1]:25" */
};

struct cfg_domain {
    char *name;          /* normalised: lower case, no trailing dot */
    enum cfg_mode mode;  /* default hold */
    char *route;         /* "mx" (default) or "host[:port]" as written */
    int subdomains;      /* also relay for *.name */
    char *file;          /* where the section started, for messages */
    int line;
    /* delivery (issue 3); every value is resolved at load: a key the section
     * does not set takes the global value */
    int route_mx;                 /* route = mx */
    int route_odmr;               /* route = odmr: fetched by ATRN only, never delivered to */
    char *notify;                 /* tell this address when mail starts waiting (issue 8), or NULL */
    char *route_host;             /* route = host[:port]: the host (no brackets), else NULL */
    unsigned route_port;          /* its port, or delivery_port */
    enum cfg_tls tls;             /* default may */
    uint64_t queue_lifetime;      /* ms */
    uint64_t delay_warning;       /* ms, 0 = no delay warnings */
    uint64_t probe_interval;      /* ms, 0 = hold domains are only tried on ETRN/flush */
    unsigned max_site_connections;
    /* quotas (issue 11): this section and, with subdomains, all below it
     * together; 0 = no limit */
    unsigned max_queue_messages;
    uint64_t max_queue_bytes;
    struct cfg_net *etrn_access;  /* who may ETRN this domain; NULL/0 = anyone */
    size_t netrn_access;
    int etrn_access_auth;         /* etrn_access lists "auth": an owning account may ETRN
                                   * (credentials_owns), besides the networks listed */
    char *recipients_file;        /* recipients = FILE (absolute), NULL: any local part */
    struct recipients *recipients; /* its table, attached by relayd/recipients.c after
                                    * config_load; NULL until then or without a file */
};

struct credentials;
struct recipients;

struct cfg_queue {
    char *name;          /* [queue NAME], for ETRN #NAME */
    char **domains;      /* normalised domain names */
    size_t ndomains;
};

struct config {
    int refs;                    /* see config_ref/config_unref */
    char *path;                  /* the file it was read from */
    char *hostname;              /* our name in the greeting, EHLO and Received: */
    struct cfg_listen *listen;   /* at least one */
    size_t nlisten;
    char *database;              /* absolute path of the SQLite queue */
    uint64_t max_message_size;   /* bytes; SIZE in EHLO */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned ipv6_prefix_length; /* IPv6 clients count per network of this many bits */
    unsigned max_recipients;     /* per message */
    unsigned max_errors;         /* protocol errors before 421 */
    uint64_t command_timeout;    /* milliseconds to receive one whole command line */
    uint64_t data_timeout;       /* milliseconds, the DATA deadline's start and most idle time */
    unsigned min_data_rate;      /* bytes/s that extend the DATA deadline; 0 = no minimum */
    uint64_t session_timeout;    /* milliseconds an inbound SMTP session may last */
    uint64_t shutdown_timeout;   /* milliseconds sessions in DATA get on SIGTERM */
    unsigned hopcount_limit;     /* Received: fields allowed */
    char *tls_cert;              /* absolute paths or NULL: no STARTTLS */
    char *tls_key;
    char *user;                  /* drop privileges to this user, or NULL */
    enum log_level log_level;
    struct cfg_domain *domains;  /* sorted by name */
    size_t ndomains;
    struct cfg_queue *queues;
    size_t nqueues;
    /* delivery, resolver and ETRN (issue 3) */
    char *dns_servers;           /* "127.0.0.1:5353,[::1]:53" for c-ares, NULL = /etc/resolv.conf */
    struct cfg_net *my_addresses; /* our own addresses, for MX self-pruning (prefix = full) */
    size_t nmy_addresses;
    unsigned delivery_port;      /* port for MX delivery, default 25 */
    unsigned max_site_connections; /* default 2 */
    unsigned max_mx_addresses;   /* addresses tried per delivery run, default 5 */
    uint64_t min_backoff;        /* ms, default 5m */
    uint64_t max_backoff;        /* ms, default 4h */
    uint64_t queue_lifetime;     /* ms, default 5d */
    uint64_t delay_warning;      /* ms, default 0 = off */
    uint64_t bounce_size_limit;  /* bytes of the original a DSN returns whole, else headers */
    uint64_t connect_timeout;    /* ms, default 30s */
    uint64_t delivery_timeout;   /* ms, default 5m: greeting, EHLO, MAIL, RCPT, DATA (RFC 5321 §4.5.3.2) */
    uint64_t delivery_data_timeout; /* ms, default 10m: reply to the final dot */
    unsigned etrn_rate;          /* ETRN commands per client address ... */
    uint64_t etrn_rate_period;   /* ... per this many ms: "etrn_rate = 120/1m" */
    unsigned etrn_rate_table_size; /* client addresses the ETRN rate limit remembers */
    unsigned site_table_size;    /* sites whose delivery state the scheduler remembers */
    char *tls_ca_file;           /* CA bundle for tls = verify, NULL = system store */
    /* control socket (issue 4) */
    char *control_socket;        /* the operators' unix socket (etrnctl), NULL = none */
    unsigned control_socket_mode; /* its permission bits, default 0660 */
    char *control_socket_group;  /* its group, NULL = the primary group of user (or root's) */
    /* SMTP AUTH and accounts (issue 8) */
    char *credentials_file;      /* "credentials": absolute path, or NULL */
    struct credentials *credentials; /* its accounts, read with this snapshot; NULL when unset */
    int smtpd_auth;              /* offer AUTH on the normal listeners (default: yes when credentials) */
    unsigned auth_fail_limit;    /* failed AUTH per client address ... (0 = no limit) */
    uint64_t auth_fail_period;   /* ... per this many ms: "auth_fail_limit = 5/10m" */
    struct cfg_net *etrn_access; /* global etrn_access: the default of every [domain] */
    size_t netrn_access;
    int etrn_access_auth;        /* global etrn_access names auth: an unauthenticated ETRN from
                                  * outside its networks gets 530 whatever the domain */
    /* storage (issue 11) */
    unsigned max_queue_messages; /* per domain section, inherited; 0 = no limit */
    uint64_t max_queue_bytes;    /* likewise */
    uint64_t queue_minfree;      /* bytes, or CFG_SIZE_AUTO: see config_queue_minfree */
    /* ODMR (issue 8, RFC 2645) */
    struct cfg_listen *odmr_listen; /* where ATRN customers connect (366); NULL/0 = off */
    size_t nodmr_listen;
    int odmr_require_tls;        /* refuse AUTH (530) on the ODMR port before STARTTLS */
    /* telling held domains that mail waits (issue 8, notify.c) */
    char *notify_command;        /* run with RELAYD_DOMAIN etc. in its environment, or NULL */
    uint64_t notify_interval;    /* ms between reminders while mail waits, default 24h */
    /* Mail for destinations that are not relay domains (bounces to senders):
     * mode retry, route mx, tls may, global lifetimes. name is "". */
    struct cfg_domain other;
};

/* Read path (and what it includes) into a new snapshot with refs = 1.
 * Relative paths in values are taken relative to the config file's directory.
 * On error returns -1 and writes "file:line: problem" into err. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* Print the configuration in a form config_load reads back: the keys whose
 * value differs from their default (relayd -n, as postconf -n), or with all
 * every key with its value (relayd -n -a). */
void config_print(const struct config *cfg, FILE *fp, int all);

/* relayd -t beyond the syntax: what would make a start or reload fail (the
 * user exists, the files relayd reads are readable by it, the queue's
 * directory is usable by it and closed to others). Errors and warnings go to
 * out as "relayd: ..." lines. 0, or the exit status the start would have
 * failed with (EX_NOUSER, EX_NOPERM, EX_CONFIG, EX_CANTCREAT). */
int config_check(const struct config *cfg, FILE *out);
/* The user alone, for the start: 0 or EX_NOUSER with err set. */
int config_check_user(const struct config *cfg, char *err, size_t errlen);

/* The relay domain a normalised domain belongs to: an exact [domain] section,
 * or the closest parent with subdomains = yes. NULL if it is not ours. */
const struct cfg_domain *config_find_domain(const struct config *cfg, const char *domain);
const struct cfg_queue *config_find_queue(const struct config *cfg, const char *name);
/* The settings for delivering to a recipient domain: its relay domain, or
 * cfg->other for everything else. Never NULL. */
const struct cfg_domain *config_delivery_domain(const struct config *cfg, const char *domain);
/* A size key set to "auto". */
#define CFG_SIZE_AUTO UINT64_MAX
/* The free-space reserve in bytes: queue_minfree, or for auto 1.5 x
 * max_message_size + 64M (room for the sessions in DATA, the WAL and DSNs). */
uint64_t config_queue_minfree(const struct config *cfg);

/* Is addr inside one of the n blocks? */
int config_net_match(const struct cfg_net *nets, size_t n, const struct sockaddr *addr);
/* Does the list name "auth" (a CFG_NET_AUTH entry)? */
int config_net_has_auth(const struct cfg_net *nets, size_t n);

/* Parse "30s", "5m", "4h", "5d", "250ms" (a bare number is seconds) into
 * milliseconds, and "10M", "512k", "1G" (a bare number is bytes) into bytes.
 * 0 or -1. Exposed for the unit tests. */
int config_parse_duration(const char *s, uint64_t *ms);
int config_parse_size(const char *s, uint64_t *bytes);

#endif
