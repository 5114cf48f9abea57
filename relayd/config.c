/*
 * config: relayd.conf(5) and its includes into an immutable, refcounted
 * snapshot, and back out (relayd -n); one table per scope drives both.
 * Must not open sockets or the queue, nor log: errors go back "file:line: problem".
 */
#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR "/var"
#endif
#ifndef RUNSTATEDIR
#define RUNSTATEDIR "/run"
#endif

#define CFG_MAX_LINE  8192 /* bytes in one line, newline excluded */
#define CFG_MAX_DEPTH 8    /* nested includes below the top file */
#define CFG_HOST_MAX  253  /* RFC 1035 §2.3.4, without the trailing dot */
#define CFG_LABEL_MAX 63
#define CFG_USER_MAX  32

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

#define MS_SECOND ((uint64_t)1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR   (60 * MS_MINUTE)
#define MS_DAY    (24 * MS_HOUR)
#define MS_WEEK   (7 * MS_DAY)

/* How a value is written and where it is stored. */
enum cfg_type {
    T_HOSTNAME,     /* char *: a host name (LDH labels) */
    T_LISTEN,       /* struct cfg_listen * + size_t count */
    T_PATH,         /* char *: made absolute against the file's directory */
    T_SIZE,         /* uint64_t bytes: 10M, 512k, 1G, 1048576 */
    T_UINT,         /* unsigned: decimal */
    T_DURATION,     /* uint64_t milliseconds: 250ms, 30s, 5m, 4h, 5d, 2w */
    T_LOGLEVEL,     /* enum log_level */
    T_USER,         /* char *: a login name */
    T_MODE,         /* enum cfg_mode */
    T_ROUTE,        /* char *: "mx" or host[:port] */
    T_BOOL,         /* int 0/1 */
    T_DOMAINS,      /* char ** + size_t count: normalised domain names */
    T_OFF_DURATION, /* uint64_t ms like T_DURATION, but 0 or "off" means off */
    T_RATE,         /* unsigned count + uint64_t ms period: "120/1m" */
    T_SERVERS,      /* char *: addr[:port] list as the c-ares CSV "127.0.0.1:53,[::1]:53" */
    T_ADDRS,        /* struct cfg_net * + size_t count: addresses (full prefix); empty: none */
    T_NETS,         /* struct cfg_net * + size_t count: "any" (none) or networks */
    T_TLS,          /* enum cfg_tls */
    T_OCTAL,        /* unsigned: file permission bits in octal, 0660 */
    T_GROUP,        /* char *: a group name */
};

#define F_OPTIONAL                                                                                 \
    0x1                    /* an empty value means "not set" (NULL); that is the default           \
                            * unless the key has one */
#define F_REQUIRED     0x2 /* no default: the section must set it */
#define F_DEF_HOSTNAME 0x4 /* the default is the system's host name (gethostname) */
#define F_INHERIT      0x8 /* domain key: unset takes the global key's value (off2) */

/* One key of one scope. The default is text and goes through the same parser
 * as a value in a file, so the table cannot hold a default the parser would
 * refuse (and config_print writes back exactly what the parser reads). */
struct cfg_key {
    const char *name;
    enum cfg_type type;
    const char *def; /* NULL: see flags */
    size_t off;      /* of the field in struct config / cfg_domain / cfg_queue */
    size_t off2;     /* list types: of the size_t count; T_RATE: of the uint64_t period;
                      * F_INHERIT: of the global field (struct config) of the same type */
    uint64_t min;    /* T_UINT, T_SIZE, T_DURATION: inclusive range */
    uint64_t max;
    unsigned flags;
    const char *doc; /* one line; relayd.conf(5) says the same at more length */
};

#define G(f) offsetof(struct config, f)
#define D(f) offsetof(struct cfg_domain, f)
#define Q(f) offsetof(struct cfg_queue, f)

static const struct cfg_key global_keys[] = {
    {"hostname", T_HOSTNAME, NULL, G(hostname), 0, 0, 0, F_DEF_HOSTNAME,
     "our name in the greeting, the EHLO reply and Received: fields"},
    {"listen", T_LISTEN, "*:25", G(listen), G(nlisten), 0, 0, 0,
     "where to accept SMTP: addr:port, [ipv6]:port or *:port, comma separated"},
    {"database", T_PATH, LOCALSTATEDIR "/lib/relayd/queue.db", G(database), 0, 0, 0, 0,
     "the SQLite queue file"},
    /* The body is one SQLite blob (limit about 1e9 bytes), so stay well under. */
    {"max_message_size", T_SIZE, "10M", G(max_message_size), 0, KIB, 512 * MIB, 0,
     "largest message accepted, in bytes (SIZE in the EHLO reply)"},
    {"max_connections", T_UINT, "200", G(max_connections), 0, 1, 100000, 0,
     "SMTP sessions open at once"},
    {"max_connections_per_ip", T_UINT, "50", G(max_connections_per_ip), 0, 1, 100000, 0,
     "SMTP sessions open at once from one client address"},
    /* RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients. */
    {"max_recipients", T_UINT, "1000", G(max_recipients), 0, 100, 1000000, 0,
     "recipients accepted per message"},
    {"max_errors", T_UINT, "10", G(max_errors), 0, 1, 1000, 0,
     "protocol errors in a session before it is closed with 421"},
    /* RFC 5321 §4.5.3.2.7: the server timeout should be at least 5 minutes. */
    {"command_timeout", T_DURATION, "5m", G(command_timeout), 0, MS_SECOND, MS_DAY, 0,
     "how long to wait for the next command"},
    {"data_timeout", T_DURATION, "10m", G(data_timeout), 0, MS_SECOND, MS_DAY, 0,
     "how long to wait between reads during DATA"},
    {"shutdown_timeout", T_DURATION, "30s", G(shutdown_timeout), 0, 0, MS_HOUR, 0,
     "how long sessions in DATA may take to finish on SIGTERM"},
    /* RFC 5321 §6.3: a loop threshold of at least 100 Received: fields. */
    {"hopcount_limit", T_UINT, "100", G(hopcount_limit), 0, 1, 1000, 0,
     "Received: header fields a message may carry"},
    {"tls_cert", T_PATH, NULL, G(tls_cert), 0, 0, 0, F_OPTIONAL,
     "PEM certificate chain for STARTTLS; empty: no STARTTLS"},
    {"tls_key", T_PATH, NULL, G(tls_key), 0, 0, 0, F_OPTIONAL, "PEM private key for tls_cert"},
    {"user", T_USER, NULL, G(user), 0, 0, 0, F_OPTIONAL,
     "drop root privileges to this user after binding; empty: stay as started"},
    {"log_level", T_LOGLEVEL, "info", G(log_level), 0, 0, 0, 0,
     "least severe log lines written: error, warn, info or debug"},
    /* ---- delivery, resolver and ETRN (issue 3) ---- */
    {"dns_servers", T_SERVERS, NULL, G(dns_servers), 0, 0, 0, F_OPTIONAL,
     "resolvers to ask, addr[:port] or [ipv6]:port; empty: those in /etc/resolv.conf"},
    {"my_addresses", T_ADDRS, "", G(my_addresses), G(nmy_addresses), 0, 0, 0,
     "our own addresses: MX hosts with one of them are this relay (self-pruning)"},
    {"delivery_port", T_UINT, "25", G(delivery_port), 0, 1, 65535, 0,
     "port to deliver to for route = mx and for routes without a port"},
    {"max_site_connections", T_UINT, "2", G(max_site_connections), 0, 1, 1000, 0,
     "delivery connections open at once to one site"},
    {"min_backoff", T_DURATION, "5m", G(min_backoff), 0, 100, MS_DAY, 0,
     "wait after the first failed attempt to reach a site"},
    {"max_backoff", T_DURATION, "4h", G(max_backoff), 0, 100, 30 * MS_DAY, 0,
     "longest wait between attempts to reach a site (at least min_backoff)"},
    {"queue_lifetime", T_DURATION, "5d", G(queue_lifetime), 0, MS_SECOND, 365 * MS_DAY, 0,
     "how long mail may wait before it is returned to the sender"},
    {"delay_warning", T_OFF_DURATION, "off", G(delay_warning), 0, MS_SECOND, 365 * MS_DAY, 0,
     "tell the sender when mail has waited this long; off: never"},
    /* RFC 5321 §4.5.3.2: the client timeouts, initial 220 to final dot. */
    {"connect_timeout", T_DURATION, "30s", G(connect_timeout), 0, 100, MS_HOUR, 0,
     "how long a delivery connection may take to open"},
    {"delivery_timeout", T_DURATION, "5m", G(delivery_timeout), 0, 100, MS_HOUR, 0,
     "how long to wait for the greeting and each reply before DATA ends"},
    {"delivery_data_timeout", T_DURATION, "10m", G(delivery_data_timeout), 0, 100, MS_HOUR, 0,
     "how long to wait for the reply to the end of the message"},
    {"etrn_rate", T_RATE, "120/1m", G(etrn_rate), G(etrn_rate_period), 1, 1000000, 0,
     "ETRN commands one client address may give per period: N/duration"},
    {"tls_ca_file", T_PATH, NULL, G(tls_ca_file), 0, 0, 0, F_OPTIONAL,
     "PEM CA certificates for tls = verify; empty: the system's store"},
    /* ---- control socket (issue 4) ---- */
    {"control_socket", T_PATH, RUNSTATEDIR "/relayd/control.sock", G(control_socket), 0, 0, 0,
     F_OPTIONAL, "unix socket for etrnctl's operator commands; empty: none"},
    {"control_socket_mode", T_OCTAL, "0660", G(control_socket_mode), 0, 0, 0777, 0,
     "permissions of the control socket (octal): who may connect at all"},
    {"control_socket_group", T_GROUP, NULL, G(control_socket_group), 0, 0, 0, F_OPTIONAL,
     "group of the control socket; empty: the primary group of user"},
};

static const struct cfg_key domain_keys[] = {
    {"mode", T_MODE, "hold", D(mode), 0, 0, 0, 0,
     "hold: deliver on ETRN, ATRN or flush; retry: also retry on a schedule"},
    {"route", T_ROUTE, "mx", D(route), 0, 0, 0, 0,
     "where mail goes: mx (look up MX records) or host[:port]"},
    {"subdomains", T_BOOL, "no", D(subdomains), 0, 0, 0, 0,
     "also relay for every subdomain of this domain"},
    {"tls", T_TLS, "may", D(tls), 0, 0, 0, 0,
     "STARTTLS when delivering: none, may, encrypt or verify"},
    {"queue_lifetime", T_DURATION, NULL, D(queue_lifetime), G(queue_lifetime), MS_SECOND,
     365 * MS_DAY, F_INHERIT, "how long mail may wait before it is returned; unset: global"},
    {"delay_warning", T_OFF_DURATION, NULL, D(delay_warning), G(delay_warning), MS_SECOND,
     365 * MS_DAY, F_INHERIT, "tell the sender after this long; off: never; unset: global"},
    {"probe_interval", T_OFF_DURATION, "off", D(probe_interval), 0, MS_SECOND, 30 * MS_DAY, 0,
     "hold mode: also try delivery this often; off: only on ETRN, ATRN or flush"},
    {"max_site_connections", T_UINT, NULL, D(max_site_connections), G(max_site_connections), 1,
     1000, F_INHERIT, "delivery connections open at once to this site; unset: global"},
    {"etrn_access", T_NETS, "any", D(etrn_access), D(netrn_access), 0, 0, 0,
     "who may ETRN this domain: any, or a list of addresses and networks"},
};

static const struct cfg_key queue_keys[] = {
    {"domains", T_DOMAINS, NULL, Q(domains), Q(ndomains), 0, 0, F_REQUIRED,
     "the relay domains ETRN #NAME starts delivery for"},
};

#define NGLOBAL (sizeof(global_keys) / sizeof(global_keys[0]))
#define NDOMAIN (sizeof(domain_keys) / sizeof(domain_keys[0]))
#define NQUEUE  (sizeof(queue_keys) / sizeof(queue_keys[0]))

enum scope_kind { SC_GLOBAL = 0, SC_DOMAIN, SC_QUEUE };

static const struct {
    const struct cfg_key *keys;
    size_t nkeys;
    const char *where; /* "it belongs ..." in messages */
} scopes[] = {
    [SC_GLOBAL] = {global_keys, NGLOBAL, "before any [section]"},
    [SC_DOMAIN] = {domain_keys, NDOMAIN, "in a [domain NAME] section"},
    [SC_QUEUE] = {queue_keys, NQUEUE, "in a [queue NAME] section"},
};

static const char *const level_names[] = {
    [LOGL_ERROR] = "error",
    [LOGL_WARN] = "warn",
    [LOGL_INFO] = "info",
    [LOGL_DEBUG] = "debug",
};

/* Where a key was set; file points into build.files. */
struct seen {
    const char *file;
    int line;
};

struct queue_extra {
    struct seen seen[NQUEUE];
    const char *file; /* where the section started */
    int line;
};

/* State while reading: the snapshot being filled and what only the parser
 * needs (where each key was set, which files are open). */
struct build {
    struct config *cfg;
    struct seen gseen[NGLOBAL];
    struct seen (*dseen)[NDOMAIN]; /* parallel to cfg->domains until sorted */
    struct queue_extra *qx;        /* parallel to cfg->queues */
    size_t dcap, qcap;
    char **files; /* every file name read; owned here */
    size_t nfiles;
    struct {
        dev_t dev;
        ino_t ino;
    } open[CFG_MAX_DEPTH + 1]; /* files being read, outermost first */
    int depth;
    char *err;
    size_t errlen;
    int failed;
};

/* Record the first problem as "file:line: msg" (or "file: msg" without a
 * line) and return -1, so callers can `return fail(...)`. */
static int fail(struct build *b, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct build *b, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (b->failed)
        return -1;
    b->failed = 1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (b->err == NULL || b->errlen == 0)
        return -1;
    if (file != NULL && line > 0)
        snprintf(b->err, b->errlen, "%s:%d: %s", file, line, msg);
    else if (file != NULL)
        snprintf(b->err, b->errlen, "%s: %s", file, msg);
    else
        snprintf(b->err, b->errlen, "%s", msg);
    return -1;
}

/* ---- small pure parsers --------------------------------------------------------------- */

/* Unsigned decimal prefix of s: at least one digit, no sign, no overflow.
 * *end is left at the first non-digit. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
    uint64_t n = 0;
    const char *p = s;

    if (s == NULL || !isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *v = n;
    *end = p;
    return 0;
}

/* A number followed by one of the suffixes (case-insensitive), scaled. */
struct unit {
    const char *suffix;
    uint64_t mult;
};

static int parse_scaled(const char *s, const struct unit *units, size_t nunits, uint64_t *out)
{
    uint64_t v;
    const char *end;

    if (parse_digits(s, &v, &end) < 0)
        return -1;
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(end, units[i].suffix) != 0)
            continue;
        if (v > UINT64_MAX / units[i].mult)
            return -1;
        *out = v * units[i].mult;
        return 0;
    }
    return -1;
}

/* Durations: a bare number is seconds, as in most MTA configs. */
static const struct unit duration_units[] = {
    {"", MS_SECOND}, {"ms", 1},     {"s", MS_SECOND}, {"m", MS_MINUTE},
    {"h", MS_HOUR},  {"d", MS_DAY}, {"w", MS_WEEK},
};

/* Sizes are 1024-based, like Postfix and Exim. */
static const struct unit size_units[] = {
    {"", 1},
    {"k", KIB},
    {"m", MIB},
    {"g", GIB},
};

int config_parse_duration(const char *s, uint64_t *ms)
{
    return parse_scaled(s, duration_units, sizeof(duration_units) / sizeof(duration_units[0]), ms);
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    return parse_scaled(s, size_units, sizeof(size_units) / sizeof(size_units[0]), bytes);
}

/* The largest unit that divides v exactly, so printing loses nothing. */
static void format_duration(uint64_t ms, char *buf, size_t len)
{
    static const struct unit units[] = {
        {"w", MS_WEEK}, {"d", MS_DAY}, {"h", MS_HOUR}, {"m", MS_MINUTE}, {"s", MS_SECOND},
    };

    if (ms == 0) {
        snprintf(buf, len, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].mult == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", ms / units[i].mult, units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void format_size(uint64_t v, char *buf, size_t len)
{
    if (v != 0 && v % GIB == 0)
        snprintf(buf, len, "%" PRIu64 "G", v / GIB);
    else if (v != 0 && v % MIB == 0)
        snprintf(buf, len, "%" PRIu64 "M", v / MIB);
    else if (v != 0 && v % KIB == 0)
        snprintf(buf, len, "%" PRIu64 "K", v / KIB);
    else
        snprintf(buf, len, "%" PRIu64, v);
}

/* RFC 1123 §2.1 host name: dot-separated LDH labels of 1..63 octets, at most
 * 253 octets, no trailing dot. The last label may not be all digits, so
 * "10.1.2" is not mistaken for a name (RFC 3696 §2). */
static int valid_hostname(const char *s)
{
    size_t len = strlen(s), label = 0;
    int alldigits = 1;

    if (len == 0 || len > CFG_HOST_MAX)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            if (c == '\0')
                break;
            label = 0;
            alldigits = 1;
            continue;
        }
        if (!isalnum((unsigned char)c) && c != '-')
            return 0;
        if (label == 0 && c == '-')
            return 0;
        if (++label > CFG_LABEL_MAX)
            return 0;
        if (!isdigit((unsigned char)c))
            alldigits = 0;
    }
    return !alldigits;
}

/* Lower-case name into out (CFG_HOST_MAX + 1 bytes), drop one trailing dot
 * (the root, RFC 1034 §3.1) and check the rest is a host name. */
static int normalise_domain(const char *in, char *out, size_t outlen)
{
    size_t len = strlen(in);

    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len >= outlen)
        return -1;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[len] = '\0';
    return valid_hostname(out) ? 0 : -1;
}

static int parse_port(const char *s, unsigned *port)
{
    uint64_t v;
    const char *end;

    if (parse_digits(s, &v, &end) < 0 || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *port = (unsigned)v;
    return 0;
}

/* "mx", "host", "host:port", "192.0.2.1[:port]" or "[2001:db8::1][:port]". */
static int valid_route(const char *s, char *why, size_t whylen)
{
    char host[CFG_HOST_MAX + 2];
    const char *port = NULL, *colon;
    size_t hlen;
    unsigned p;
    struct in6_addr a6;
    struct in_addr a4;

    if (strcasecmp(s, "mx") == 0)
        return 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            snprintf(why, whylen, "expected [IPv6] or [IPv6]:port");
            return -1;
        }
        hlen = (size_t)(close - s - 1);
        if (hlen >= sizeof(host)) {
            snprintf(why, whylen, "IPv6 address too long");
            return -1;
        }
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            snprintf(why, whylen, "'%s' is not an IPv6 address", host);
            return -1;
        }
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        colon = strchr(s, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            snprintf(why, whylen, "an IPv6 address must be written in brackets: [addr]:port");
            return -1;
        }
        hlen = colon ? (size_t)(colon - s) : strlen(s);
        if (hlen >= sizeof(host)) {
            snprintf(why, whylen, "host name longer than %d characters", CFG_HOST_MAX);
            return -1;
        }
        memcpy(host, s, hlen);
        host[hlen] = '\0';
        if (strcasecmp(host, "mx") == 0) {
            snprintf(why, whylen, "'mx' means an MX lookup and takes no port");
            return -1;
        }
        if (inet_pton(AF_INET, host, &a4) != 1 && !valid_hostname(host)) {
            snprintf(why, whylen, "expected mx, or host[:port] with a host name, IPv4 or [IPv6]");
            return -1;
        }
        port = colon ? colon + 1 : NULL;
    }
    if (port != NULL && parse_port(port, &p) < 0) {
        snprintf(why, whylen, "port must be a number from 1 to 65535");
        return -1;
    }
    return 0;
}

/* Login names as useradd(8) takes them; existence is checked when privileges
 * are dropped, not here. */
static int valid_user(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > CFG_USER_MAX || s[0] == '-')
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && strchr("._-", s[i]) == NULL)
            return 0;
    }
    return 1;
}

/* One listen token into out[0] (and out[1] for "*:port", which means every
 * IPv4 and every IPv6 address). Returns how many entries it wrote, or -1. */
static int parse_listen_one(const char *tok, struct cfg_listen out[2], char *why, size_t whylen)
{
    char host[64];
    const char *portstr;
    unsigned port;
    size_t hlen;
    int v6 = 0;

    if (tok[0] == '[') {
        const char *close = strchr(tok, ']');
        if (close == NULL) {
            snprintf(why, whylen, "'%s': missing ']' after the IPv6 address", tok);
            return -1;
        }
        if (close[1] != ':') {
            snprintf(why, whylen, "'%s': missing port (expected [addr]:port)", tok);
            return -1;
        }
        hlen = (size_t)(close - tok - 1);
        portstr = close + 2;
        v6 = 1;
        if (hlen >= sizeof(host)) {
            snprintf(why, whylen, "'%s': address too long", tok);
            return -1;
        }
        memcpy(host, tok + 1, hlen);
    } else {
        const char *colon = strrchr(tok, ':');
        if (colon == NULL) {
            snprintf(why, whylen, "'%s': missing port (expected addr:port)", tok);
            return -1;
        }
        hlen = (size_t)(colon - tok);
        portstr = colon + 1;
        if (memchr(tok, ':', hlen) != NULL) {
            snprintf(why, whylen, "'%s': an IPv6 address must be written [addr]:port", tok);
            return -1;
        }
        if (hlen >= sizeof(host)) {
            snprintf(why, whylen, "'%s': address too long", tok);
            return -1;
        }
        memcpy(host, tok, hlen);
    }
    host[hlen] = '\0';
    if (parse_port(portstr, &port) < 0) {
        snprintf(why, whylen, "'%s': port must be a number from 1 to 65535", tok);
        return -1;
    }

    memset(out, 0, 2 * sizeof(out[0]));
    if (!v6 && strcmp(host, "*") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out[0].addr;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[1].addr;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_any;
        sin6->sin6_port = htons((uint16_t)port);
        snprintf(out[0].text, sizeof(out[0].text), "0.0.0.0:%u", port);
        snprintf(out[1].text, sizeof(out[1].text), "[::]:%u", port);
        return 2;
    }
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[0].addr;
        char buf[INET6_ADDRSTRLEN];
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            snprintf(why, whylen, "'%s': '%s' is not an IPv6 address", tok, host);
            return -1;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
        snprintf(out[0].text, sizeof(out[0].text), "[%s]:%u", buf, port);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out[0].addr;
        char buf[INET_ADDRSTRLEN];
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            snprintf(why, whylen, "'%s': expected an IPv4 address, [IPv6] or * before the port",
                     tok);
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
        snprintf(out[0].text, sizeof(out[0].text), "%s:%u", buf, port);
    }
    return 1;
}

/* ---- paths ---------------------------------------------------------------------------- */

/* path made absolute against dir (or the working directory when dir is NULL),
 * with empty and "." components removed. ".." is kept: it cannot be resolved
 * by looking at the text when a component may be a symlink. NULL on error. */
static char *make_abs(const char *dir, const char *path)
{
    char *joined = NULL, *out = NULL, *cwd = NULL;
    size_t n = 0;

    if (path[0] != '/') {
        if (dir == NULL) {
            cwd = getcwd(NULL, 0);
            if (cwd == NULL)
                goto done;
            dir = cwd;
        }
        if (asprintf(&joined, "%s/%s", dir, path) < 0) {
            joined = NULL;
            goto done;
        }
        path = joined;
    }
    out = malloc(strlen(path) + 2);
    if (out == NULL)
        goto done;
    for (const char *p = path; *p != '\0';) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0 && !(len == 1 && p[0] == '.')) {
            out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        p += len;
        if (*p == '/')
            p++;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
done:
    free(joined);
    free(cwd);
    return out;
}

/* The directory part of an absolute, cleaned path ("/" for files in the root). */
static char *dir_of(const char *abs)
{
    const char *slash = strrchr(abs, '/');
    size_t len = slash && slash != abs ? (size_t)(slash - abs) : 1;

    return strndup(abs, len);
}

/* ---- values --------------------------------------------------------------------------- */

static void free_listen(struct cfg_listen *l)
{
    free(l);
}

/* What a cfg_domain owns (sections and cfg->other alike). */
static void free_domain(struct cfg_domain *d)
{
    free(d->name);
    free(d->route);
    free(d->file);
    free(d->route_host);
    free(d->etrn_access);
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

/* Split a list value on commas and white space; empty items are skipped. The
 * returned copy owns the strings *items points into. */
static char *split_list(const char *value, char ***items, size_t *n)
{
    char *copy = strdup(value), *save = NULL, *tok;
    char **v = NULL;
    size_t cnt = 0;

    *items = NULL;
    *n = 0;
    if (copy == NULL)
        return NULL;
    for (tok = strtok_r(copy, ", \t", &save); tok != NULL; tok = strtok_r(NULL, ", \t", &save)) {
        char **nv = realloc(v, (cnt + 1) * sizeof(*v));
        if (nv == NULL) {
            free(v);
            free(copy);
            return NULL;
        }
        v = nv;
        v[cnt++] = tok;
    }
    *items = v;
    *n = cnt;
    return copy;
}

static int set_listen(void *base, const struct cfg_key *k, const char *value, char *why,
                      size_t whylen)
{
    char **tok = NULL, *copy;
    size_t ntok = 0, n = 0;
    struct cfg_listen *l = NULL;
    int rc = -1;

    copy = split_list(value, &tok, &ntok);
    if (copy == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    if (ntok == 0) {
        snprintf(why, whylen, "expected at least one addr:port");
        goto done;
    }
    l = calloc(2 * ntok, sizeof(*l));
    if (l == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ntok; i++) {
        int got = parse_listen_one(tok[i], l + n, why, whylen);
        if (got < 0)
            goto done;
        for (int j = 0; j < got; j++) {
            for (size_t m = 0; m < n; m++) {
                if (strcmp(l[m].text, l[n].text) == 0) {
                    snprintf(why, whylen, "%s is listed twice", l[n].text);
                    goto done;
                }
            }
            /* Keep the entries packed even when "*:port" wrote two. */
            n++;
        }
    }
    free_listen(*(struct cfg_listen **)((char *)base + k->off));
    *(struct cfg_listen **)((char *)base + k->off) = l;
    *(size_t *)((char *)base + k->off2) = n;
    l = NULL;
    rc = 0;
done:
    free(l);
    free(tok);
    free(copy);
    return rc;
}

static int set_domains(void *base, const struct cfg_key *k, const char *value, char *why,
                       size_t whylen)
{
    char **tok = NULL, *copy, **v = NULL;
    size_t ntok = 0, n = 0;
    int rc = -1;

    copy = split_list(value, &tok, &ntok);
    if (copy == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    if (ntok == 0) {
        snprintf(why, whylen, "expected at least one domain name");
        goto done;
    }
    v = calloc(ntok, sizeof(*v));
    if (v == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (; n < ntok; n++) {
        char name[CFG_HOST_MAX + 1];
        if (normalise_domain(tok[n], name, sizeof(name)) < 0) {
            snprintf(why, whylen, "'%s' is not a domain name", tok[n]);
            goto done;
        }
        for (size_t m = 0; m < n; m++) {
            if (strcmp(v[m], name) == 0) {
                snprintf(why, whylen, "%s is listed twice", name);
                goto done;
            }
        }
        v[n] = strdup(name);
        if (v[n] == NULL) {
            snprintf(why, whylen, "out of memory");
            goto done;
        }
    }
    free_strv(*(char ***)((char *)base + k->off), *(size_t *)((char *)base + k->off2));
    *(char ***)((char *)base + k->off) = v;
    *(size_t *)((char *)base + k->off2) = n;
    v = NULL;
    rc = 0;
done:
    free_strv(v, n);
    free(tok);
    free(copy);
    return rc;
}

/* ---- addresses and networks ----------------------------------------------------------- */

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* The address bytes of sa for prefix comparison: 4 for IPv4, 16 for IPv6.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) is taken
 * as the IPv4 address it carries, so a dual-stack listener's peers match
 * IPv4 blocks. *prefix (if not NULL) is shortened the same way. 0 or -1. */
static int addr_bytes(const struct sockaddr *sa, uint8_t out[16], int *family, unsigned *prefix)
{
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *family = AF_INET;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(b, v4mapped_prefix, 12) == 0 && (prefix == NULL || *prefix >= 96)) {
            memcpy(out, b + 12, 4);
            *family = AF_INET;
            if (prefix != NULL)
                *prefix -= 96;
            return 0;
        }
        memcpy(out, b, 16);
        *family = AF_INET6;
        return 0;
    }
    return -1;
}

/* Do the first bits of a and b agree? */
static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;

    if (memcmp(a, b, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[whole] ^ b[whole]) & (uint8_t)(0xff00 >> rest)) == 0;
}

/* "192.0.2.0/24", "2001:db8::/32" or one address (full prefix) into out.
 * with_prefix = 0: an address only. The bits after the prefix must be zero,
 * so a typo such as 192.0.2.1/16 is caught rather than guessed at. */
static int parse_net(const char *tok, struct cfg_net *out, int with_prefix, char *why,
                     size_t whylen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(tok, '/');
    size_t hlen = slash ? (size_t)(slash - tok) : strlen(tok);
    unsigned full;
    uint64_t v;
    const char *end;
    uint8_t bytes[16];

    memset(out, 0, sizeof(*out));
    if (hlen == 0 || hlen >= sizeof(host) || (slash != NULL && !with_prefix))
        goto bad;
    memcpy(host, tok, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&out->addr)->sin_addr) == 1) {
        out->addr.ss_family = AF_INET;
        full = 32;
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&out->addr)->sin6_addr) == 1) {
        out->addr.ss_family = AF_INET6;
        full = 128;
    } else
        goto bad;
    out->prefix = full;
    if (slash != NULL) {
        if (parse_digits(slash + 1, &v, &end) < 0 || *end != '\0' || v > full) {
            snprintf(why, whylen, "'%s': the prefix length must be from 0 to %u", tok, full);
            return -1;
        }
        out->prefix = (unsigned)v;
    }
    /* Bytes as written (no IPv4-mapped folding) for the host-bits check. */
    if (full == 32)
        memcpy(bytes, &((struct sockaddr_in *)&out->addr)->sin_addr, 4);
    else
        memcpy(bytes, &((struct sockaddr_in6 *)&out->addr)->sin6_addr, 16);
    for (unsigned i = out->prefix; i < full; i++) {
        if (bytes[i / 8] & (0x80 >> (i % 8))) {
            snprintf(why, whylen, "'%s' has bits set after the first %u: write the network address",
                     tok, out->prefix);
            return -1;
        }
    }
    return 0;
bad:
    snprintf(why, whylen, "'%s' is not an %s", tok,
             with_prefix ? "IPv4 or IPv6 address or network (addr/len)" : "IPv4 or IPv6 address");
    return -1;
}

/* Network as config_load reads it back: the address, and "/len" unless it
 * is a single address. */
static void format_net(const struct cfg_net *n, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];
    unsigned full = n->addr.ss_family == AF_INET ? 32 : 128;
    const void *src = n->addr.ss_family == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)&n->addr)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)&n->addr)->sin6_addr;

    if (inet_ntop(n->addr.ss_family, src, a, sizeof(a)) == NULL)
        snprintf(a, sizeof(a), "?");
    if (n->prefix < full)
        snprintf(buf, len, "%s/%u", a, n->prefix);
    else
        snprintf(buf, len, "%s", a);
}

/* my_addresses (T_ADDRS: addresses, empty = none) and etrn_access (T_NETS:
 * "any" = none, else networks). A block listed twice is an error. */
static int set_nets(void *base, const struct cfg_key *k, const char *value, char *why,
                    size_t whylen)
{
    char **tok = NULL, *copy;
    size_t ntok = 0, n = 0;
    struct cfg_net *v = NULL;
    int rc = -1, nets = k->type == T_NETS;

    copy = split_list(value, &tok, &ntok);
    if (copy == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    if (ntok == 0 && nets) {
        snprintf(why, whylen, "expected any, or a list of addresses and networks");
        goto done;
    }
    if (nets && ntok == 1 && strcasecmp(tok[0], "any") == 0)
        ntok = 0;
    if (ntok > 0 && (v = calloc(ntok, sizeof(*v))) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (; n < ntok; n++) {
        if (nets && strcasecmp(tok[n], "any") == 0) {
            snprintf(why, whylen, "'any' cannot be combined with a list");
            goto done;
        }
        if (parse_net(tok[n], &v[n], nets, why, whylen) < 0)
            goto done;
        for (size_t m = 0; m < n; m++) {
            if (v[m].prefix == v[n].prefix &&
                memcmp(&v[m].addr, &v[n].addr, sizeof(v[m].addr)) == 0) {
                snprintf(why, whylen, "%s is listed twice", tok[n]);
                goto done;
            }
        }
    }
    free(*(struct cfg_net **)((char *)base + k->off));
    *(struct cfg_net **)((char *)base + k->off) = v;
    *(size_t *)((char *)base + k->off2) = n;
    v = NULL;
    rc = 0;
done:
    free(v);
    free(tok);
    free(copy);
    return rc;
}

/* dns_servers: each of "192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53",
 * "[2001:db8::53]" or "2001:db8::53" into c-ares's CSV form, always with a
 * port (53 when none is given) so the text is never ambiguous for IPv6.
 * Names are refused: the resolvers cannot be found through themselves. */
static int set_servers(void *base, const struct cfg_key *k, const char *value, char *why,
                       size_t whylen)
{
    char **tok = NULL, *copy, *csv = NULL;
    size_t ntok = 0, used = 0, cap;
    int rc = -1;

    copy = split_list(value, &tok, &ntok);
    if (copy == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    cap = ntok * (INET6_ADDRSTRLEN + 10) + 1;
    csv = malloc(cap);
    if (csv == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    csv[0] = '\0';
    for (size_t i = 0; i < ntok; i++) {
        char host[INET6_ADDRSTRLEN + 1], norm[INET6_ADDRSTRLEN];
        const char *t = tok[i], *port = NULL;
        unsigned p = 53;
        size_t hlen;
        int v6;
        unsigned char bin[16];

        if (t[0] == '[') {
            const char *close = strchr(t, ']');
            if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
                snprintf(why, whylen, "'%s': expected [ipv6] or [ipv6]:port", t);
                goto done;
            }
            hlen = (size_t)(close - t - 1);
            t++;
            port = close[1] == ':' ? close + 2 : NULL;
            v6 = 1;
        } else if (strchr(t, ':') != NULL && strchr(t, ':') != strrchr(t, ':')) {
            hlen = strlen(t); /* a bare IPv6 address: no port */
            v6 = 1;
        } else {
            const char *colon = strchr(t, ':');
            hlen = colon ? (size_t)(colon - t) : strlen(t);
            port = colon ? colon + 1 : NULL;
            v6 = 0;
        }
        if (hlen == 0 || hlen >= sizeof(host))
            goto badaddr;
        memcpy(host, t, hlen);
        host[hlen] = '\0';
        if (inet_pton(v6 ? AF_INET6 : AF_INET, host, bin) != 1 ||
            inet_ntop(v6 ? AF_INET6 : AF_INET, bin, norm, sizeof(norm)) == NULL)
            goto badaddr;
        if (port != NULL && parse_port(port, &p) < 0) {
            snprintf(why, whylen, "'%s': port must be a number from 1 to 65535", tok[i]);
            goto done;
        }
        used += (size_t)snprintf(csv + used, cap - used, v6 ? "%s[%s]:%u" : "%s%s:%u", i ? "," : "",
                                 norm, p);
        continue;
    badaddr:
        snprintf(why, whylen, "'%s': expected an IPv4 address or [IPv6], with an optional :port",
                 tok[i]);
        goto done;
    }
    if (ntok == 0) {
        free(csv); /* nothing listed: /etc/resolv.conf */
        csv = NULL;
    }
    free(*(char **)((char *)base + k->off));
    *(char **)((char *)base + k->off) = csv;
    csv = NULL;
    rc = 0;
done:
    free(csv);
    free(tok);
    free(copy);
    return rc;
}

/* etrn_rate: "N/duration", N from k->min to k->max, the period from 1s to 1d. */
static int set_rate(void *base, const struct cfg_key *k, const char *value, char *why,
                    size_t whylen)
{
    uint64_t n, period;
    const char *end;

    if (parse_digits(value, &n, &end) < 0 || *end != '/' || n < k->min || n > k->max ||
        config_parse_duration(end + 1, &period) < 0 || period < MS_SECOND || period > MS_DAY) {
        snprintf(why, whylen,
                 "expected count/duration such as 120/1m, count from %" PRIu64 " to %" PRIu64
                 ", duration from 1s to 1d",
                 k->min, k->max);
        return -1;
    }
    *(unsigned *)((char *)base + k->off) = (unsigned)n;
    *(uint64_t *)((char *)base + k->off2) = period;
    return 0;
}

static const char *const tls_names[] = {
    [CFG_TLS_NONE] = "none",
    [CFG_TLS_MAY] = "may",
    [CFG_TLS_ENCRYPT] = "encrypt",
    [CFG_TLS_VERIFY] = "verify",
};

/* Parse value for key k into the object at base (struct config, cfg_domain
 * or cfg_queue). dir is the directory of the file the value came from,
 * NULL for a built-in default. On failure writes what was expected into why
 * and leaves the field as it was. */
static int set_value(void *base, const struct cfg_key *k, const char *value, const char *dir,
                     char *why, size_t whylen)
{
    char *field = (char *)base + k->off;
    char buf[64], buf2[64];
    char *s = NULL;
    uint64_t v;
    const char *end;

    if ((k->flags & F_OPTIONAL) && value[0] == '\0') {
        free(*(char **)field);
        *(char **)field = NULL;
        return 0;
    }
    switch (k->type) {
    case T_HOSTNAME:
        if (!valid_hostname(value)) {
            snprintf(why, whylen, "expected a host name (letters, digits, '-', dot-separated)");
            return -1;
        }
        s = strdup(value);
        break;
    case T_PATH:
        if (value[0] == '\0') {
            snprintf(why, whylen, "expected a path");
            return -1;
        }
        s = make_abs(dir, value);
        break;
    case T_USER:
    case T_GROUP:
        if (!valid_user(value)) {
            snprintf(why, whylen, "expected a %s name of letters, digits, '.', '_', '-'",
                     k->type == T_USER ? "user" : "group");
            return -1;
        }
        s = strdup(value);
        break;
    case T_OCTAL:
        /* Permission bits only: no setuid, setgid or sticky bit on a socket. */
        if (value[0] == '\0' || value[strspn(value, "01234567")] != '\0' || strlen(value) > 4 ||
            (v = strtoull(value, NULL, 8)) > k->max) {
            snprintf(why, whylen,
                     "expected octal permission bits from 0 to %04" PRIo64 ", like 0660", k->max);
            return -1;
        }
        *(unsigned *)field = (unsigned)v;
        return 0;
    case T_ROUTE:
        if (valid_route(value, why, whylen) < 0)
            return -1;
        s = strdup(strcasecmp(value, "mx") == 0 ? "mx" : value);
        break;
    case T_SIZE:
        if (config_parse_size(value, &v) < 0 || v < k->min || v > k->max) {
            format_size(k->min, buf, sizeof(buf));
            format_size(k->max, buf2, sizeof(buf2));
            snprintf(why, whylen, "expected a size like 10M, 512K or 1048576 from %s to %s", buf,
                     buf2);
            return -1;
        }
        *(uint64_t *)field = v;
        return 0;
    case T_DURATION:
        if (config_parse_duration(value, &v) < 0 || v < k->min || v > k->max) {
            format_duration(k->min, buf, sizeof(buf));
            format_duration(k->max, buf2, sizeof(buf2));
            snprintf(why, whylen, "expected a duration like 250ms, 30s, 5m, 4h from %s to %s", buf,
                     buf2);
            return -1;
        }
        *(uint64_t *)field = v;
        return 0;
    case T_UINT:
        if (parse_digits(value, &v, &end) < 0 || *end != '\0' || v < k->min || v > k->max) {
            snprintf(why, whylen, "expected a whole number from %" PRIu64 " to %" PRIu64, k->min,
                     k->max);
            return -1;
        }
        *(unsigned *)field = (unsigned)v;
        return 0;
    case T_LOGLEVEL:
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
            if (strcasecmp(value, level_names[i]) == 0) {
                *(enum log_level *)field = (enum log_level)i;
                return 0;
            }
        }
        snprintf(why, whylen, "expected error, warn, info or debug");
        return -1;
    case T_MODE:
        if (strcasecmp(value, "hold") == 0)
            *(enum cfg_mode *)field = CFG_MODE_HOLD;
        else if (strcasecmp(value, "retry") == 0)
            *(enum cfg_mode *)field = CFG_MODE_RETRY;
        else {
            snprintf(why, whylen, "expected hold or retry");
            return -1;
        }
        return 0;
    case T_BOOL: {
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *(int *)field = strcasecmp(value, yes[i]) == 0;
                return 0;
            }
        }
        snprintf(why, whylen, "expected yes or no");
        return -1;
    }
    case T_OFF_DURATION:
        if (strcasecmp(value, "off") == 0) {
            *(uint64_t *)field = 0;
            return 0;
        }
        if (config_parse_duration(value, &v) < 0 || (v != 0 && (v < k->min || v > k->max))) {
            format_duration(k->min, buf, sizeof(buf));
            format_duration(k->max, buf2, sizeof(buf2));
            snprintf(why, whylen, "expected off, or a duration like 30s, 4h, 2d from %s to %s", buf,
                     buf2);
            return -1;
        }
        *(uint64_t *)field = v;
        return 0;
    case T_TLS:
        for (size_t i = 0; i < sizeof(tls_names) / sizeof(tls_names[0]); i++) {
            if (strcasecmp(value, tls_names[i]) == 0) {
                *(enum cfg_tls *)field = (enum cfg_tls)i;
                return 0;
            }
        }
        snprintf(why, whylen, "expected none, may, encrypt or verify");
        return -1;
    case T_RATE:
        return set_rate(base, k, value, why, whylen);
    case T_SERVERS:
        return set_servers(base, k, value, why, whylen);
    case T_ADDRS:
    case T_NETS:
        return set_nets(base, k, value, why, whylen);
    case T_LISTEN:
        return set_listen(base, k, value, why, whylen);
    case T_DOMAINS:
        return set_domains(base, k, value, why, whylen);
    }
    if (s == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    free(*(char **)field);
    *(char **)field = s;
    return 0;
}

/* The value of key k in the object at base, as config_load reads it back. */
static void print_value(FILE *fp, const void *base, const struct cfg_key *k)
{
    const char *field = (const char *)base + k->off;
    char buf[64];
    const char *s = NULL;

    switch (k->type) {
    case T_HOSTNAME:
    case T_PATH:
    case T_USER:
    case T_GROUP:
    case T_ROUTE:
    case T_SERVERS:
        s = *(char *const *)field;
        break;
    case T_OCTAL:
        snprintf(buf, sizeof(buf), "%04o", *(const unsigned *)field);
        s = buf;
        break;
    case T_OFF_DURATION:
        if (*(const uint64_t *)field == 0) {
            s = "off";
            break;
        }
        format_duration(*(const uint64_t *)field, buf, sizeof(buf));
        s = buf;
        break;
    case T_RATE: {
        char per[32];
        format_duration(*(const uint64_t *)((const char *)base + k->off2), per, sizeof(per));
        snprintf(buf, sizeof(buf), "%u/%s", *(const unsigned *)field, per);
        s = buf;
        break;
    }
    case T_TLS: {
        unsigned t = (unsigned)*(const enum cfg_tls *)field;
        s = t < sizeof(tls_names) / sizeof(tls_names[0]) ? tls_names[t] : "may";
        break;
    }
    case T_ADDRS:
    case T_NETS: {
        const struct cfg_net *v = *(struct cfg_net *const *)field;
        size_t n = *(const size_t *)((const char *)base + k->off2);
        if (n == 0 && k->type == T_NETS) {
            s = "any";
            break;
        }
        fputs(" =", fp);
        for (size_t i = 0; i < n; i++) {
            char nb[INET6_ADDRSTRLEN + 8];
            format_net(&v[i], nb, sizeof(nb));
            fprintf(fp, "%s%s", i ? ", " : " ", nb);
        }
        return;
    }
    case T_SIZE:
        format_size(*(const uint64_t *)field, buf, sizeof(buf));
        s = buf;
        break;
    case T_DURATION:
        format_duration(*(const uint64_t *)field, buf, sizeof(buf));
        s = buf;
        break;
    case T_UINT:
        snprintf(buf, sizeof(buf), "%u", *(const unsigned *)field);
        s = buf;
        break;
    case T_LOGLEVEL: {
        unsigned lv = (unsigned)*(const enum log_level *)field;
        s = lv < sizeof(level_names) / sizeof(level_names[0]) ? level_names[lv] : "info";
        break;
    }
    case T_MODE:
        s = *(const enum cfg_mode *)field == CFG_MODE_RETRY ? "retry" : "hold";
        break;
    case T_BOOL:
        s = *(const int *)field ? "yes" : "no";
        break;
    case T_LISTEN: {
        const struct cfg_listen *l = *(struct cfg_listen *const *)field;
        size_t n = *(const size_t *)((const char *)base + k->off2);
        fputs(" =", fp);
        for (size_t i = 0; i < n; i++)
            fprintf(fp, "%s%s", i ? ", " : " ", l[i].text);
        return;
    }
    case T_DOMAINS: {
        char *const *v = *(char **const *)field;
        size_t n = *(const size_t *)((const char *)base + k->off2);
        fputs(" =", fp);
        for (size_t i = 0; i < n; i++)
            fprintf(fp, "%s%s", i ? ", " : " ", v[i]);
        return;
    }
    }
    if (s != NULL && s[0] != '\0')
        fprintf(fp, " = %s", s);
    else
        fputs(" =", fp);
}

static void print_scope(FILE *fp, const void *base, const struct cfg_key *keys, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++) {
        fprintf(fp, "# %s\n%s", keys[i].doc, keys[i].name);
        print_value(fp, base, &keys[i]);
        fputc('\n', fp);
    }
}

/* ---- reading files -------------------------------------------------------------------- */

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    *e = '\0';
    return s;
}

static const struct cfg_key *find_key(const struct cfg_key *keys, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

static int parse_file(struct build *b, const char *path, const char *from, int fromline);

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* include = PATH: a file, or every *.conf in a directory in byte order, so
 * per-customer files like 10-alpha.conf load in a predictable sequence. */
static int do_include(struct build *b, const char *file, int line, const char *dir,
                      const char *value)
{
    char *path = NULL, **names = NULL;
    size_t n = 0;
    DIR *dp = NULL;
    struct dirent *de;
    struct stat st;
    int rc = -1;

    if (value[0] == '\0')
        return fail(b, file, line, "include needs a file or directory");
    path = make_abs(dir, value);
    if (path == NULL) {
        fail(b, file, line, "out of memory");
        goto done;
    }
    if (stat(path, &st) < 0) {
        fail(b, file, line, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = parse_file(b, path, file, line);
        goto done;
    }
    dp = opendir(path);
    if (dp == NULL) {
        fail(b, file, line, "%s: %s", path, strerror(errno));
        goto done;
    }
    while ((de = readdir(dp)) != NULL) {
        size_t len = strlen(de->d_name);
        char **nn;
        if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".conf") != 0)
            continue;
        nn = realloc(names, (n + 1) * sizeof(*names));
        if (nn == NULL) {
            fail(b, file, line, "out of memory");
            goto done;
        }
        names = nn;
        if (asprintf(&names[n], "%s/%s", strcmp(path, "/") ? path : "", de->d_name) < 0) {
            fail(b, file, line, "out of memory");
            goto done;
        }
        n++;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (stat(names[i], &st) < 0) {
            fail(b, file, line, "%s: %s", names[i], strerror(errno));
            goto done;
        }
        if (S_ISDIR(st.st_mode))
            continue; /* not recursive */
        if (parse_file(b, names[i], file, line) < 0)
            goto done;
    }
    rc = 0;
done:
    if (dp != NULL)
        closedir(dp);
    free_strv(names, n);
    free(path);
    return rc;
}

/* [domain NAME] or [queue NAME]: start a new section in *kind / *idx. */
static int open_section(struct build *b, const char *file, int line, char *s, enum scope_kind *kind,
                        size_t *idx)
{
    struct config *cfg = b->cfg;
    char *type, *name, *end = s + strlen(s) - 1;
    char norm[CFG_HOST_MAX + 1];

    if (*end != ']')
        return fail(b, file, line, "expected ']' at the end of the section header");
    *end = '\0';
    type = trim(s + 1);
    name = type + strcspn(type, " \t");
    if (*name != '\0')
        *name++ = '\0';
    name = trim(name);
    if (strcmp(type, "domain") != 0 && strcmp(type, "queue") != 0)
        return fail(b, file, line, "unknown section type '%s' (expected domain or queue)", type);
    if (name[0] == '\0' || strpbrk(name, " \t") != NULL)
        return fail(b, file, line, "expected [%s NAME]", type);

    if (strcmp(type, "domain") == 0) {
        struct cfg_domain *d;
        if (normalise_domain(name, norm, sizeof(norm)) < 0)
            return fail(b, file, line, "'%s' is not a domain name", name);
        if (cfg->ndomains == b->dcap) {
            size_t cap = b->dcap ? 2 * b->dcap : 16;
            struct cfg_domain *nd = realloc(cfg->domains, cap * sizeof(*nd));
            if (nd == NULL)
                return fail(b, file, line, "out of memory");
            cfg->domains = nd;
            void *ns = realloc(b->dseen, cap * sizeof(*b->dseen));
            if (ns == NULL)
                return fail(b, file, line, "out of memory");
            b->dseen = ns;
            b->dcap = cap;
        }
        d = &cfg->domains[cfg->ndomains];
        memset(d, 0, sizeof(*d));
        memset(b->dseen[cfg->ndomains], 0, sizeof(b->dseen[0]));
        d->name = strdup(norm);
        d->file = strdup(file);
        d->line = line;
        cfg->ndomains++; /* counted now so config_unref frees it on any error */
        if (d->name == NULL || d->file == NULL)
            return fail(b, file, line, "out of memory");
        *kind = SC_DOMAIN;
        *idx = cfg->ndomains - 1;
        return 0;
    }

    /* RFC 1985 §3: ETRN #queue names are ours to choose; keep them to a
     * safe character set so they print and compare plainly. */
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && strchr("._-", *p) == NULL)
            return fail(b, file, line, "queue name '%s': use letters, digits, '.', '_', '-'", name);
    }
    for (size_t i = 0; i < cfg->nqueues; i++) {
        if (strcmp(cfg->queues[i].name, name) == 0)
            return fail(b, file, line, "duplicate [queue %s] (first at %s:%d)", name, b->qx[i].file,
                        b->qx[i].line);
    }
    if (cfg->nqueues == b->qcap) {
        size_t cap = b->qcap ? 2 * b->qcap : 4;
        struct cfg_queue *nq = realloc(cfg->queues, cap * sizeof(*nq));
        if (nq == NULL)
            return fail(b, file, line, "out of memory");
        cfg->queues = nq;
        struct queue_extra *nx = realloc(b->qx, cap * sizeof(*nx));
        if (nx == NULL)
            return fail(b, file, line, "out of memory");
        b->qx = nx;
        b->qcap = cap;
    }
    memset(&cfg->queues[cfg->nqueues], 0, sizeof(cfg->queues[0]));
    memset(&b->qx[cfg->nqueues], 0, sizeof(b->qx[0]));
    cfg->queues[cfg->nqueues].name = strdup(name);
    b->qx[cfg->nqueues].file = file;
    b->qx[cfg->nqueues].line = line;
    cfg->nqueues++;
    if (cfg->queues[cfg->nqueues - 1].name == NULL)
        return fail(b, file, line, "out of memory");
    *kind = SC_QUEUE;
    *idx = cfg->nqueues - 1;
    return 0;
}

static const char *scope_label(struct build *b, enum scope_kind kind, size_t idx, char *buf,
                               size_t len)
{
    if (kind == SC_DOMAIN)
        snprintf(buf, len, "in [domain %s]", b->cfg->domains[idx].name);
    else if (kind == SC_QUEUE)
        snprintf(buf, len, "in [queue %s]", b->cfg->queues[idx].name);
    else
        snprintf(buf, len, "at global level");
    return buf;
}

/* One line of a file: comment, blank, section header, include or key = value. */
static int parse_line(struct build *b, const char *file, const char *dir, int line, char *s,
                      enum scope_kind *kind, size_t *idx)
{
    const struct cfg_key *k;
    struct seen *seen;
    void *base;
    char *eq, *key, *value, why[512], label[CFG_HOST_MAX + 32];

    s = trim(s);
    if (*s == '\0' || *s == '#')
        return 0;
    /* A trailing comment needs white space before '#', so values such as
     * paths may contain '#'. */
    for (char *p = s + 1; *p != '\0'; p++) {
        if (*p == '#' && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    }
    s = trim(s);
    if (*s == '[')
        return open_section(b, file, line, s, kind, idx);

    eq = strchr(s, '=');
    if (eq == NULL)
        return fail(b, file, line, "expected 'key = value' or '[section NAME]' (no '=')");
    *eq = '\0';
    key = trim(s);
    value = trim(eq + 1);
    if (*key == '\0')
        return fail(b, file, line, "missing key before '='");
    if (strcmp(key, "include") == 0)
        return do_include(b, file, line, dir, value);

    k = find_key(scopes[*kind].keys, scopes[*kind].nkeys, key);
    if (k == NULL) {
        for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
            if (find_key(scopes[i].keys, scopes[i].nkeys, key) != NULL)
                return fail(b, file, line, "key '%s' is not valid %s (it belongs %s)", key,
                            scope_label(b, *kind, *idx, label, sizeof(label)), scopes[i].where);
        }
        return fail(b, file, line, "unknown key '%.64s'", key);
    }
    if (*kind == SC_DOMAIN) {
        seen = &b->dseen[*idx][k - domain_keys];
        base = &b->cfg->domains[*idx];
    } else if (*kind == SC_QUEUE) {
        seen = &b->qx[*idx].seen[k - queue_keys];
        base = &b->cfg->queues[*idx];
    } else {
        seen = &b->gseen[k - global_keys];
        base = b->cfg;
    }
    if (seen->file != NULL)
        return fail(b, file, line, "duplicate key '%s' %s (first set at %s:%d)", key,
                    scope_label(b, *kind, *idx, label, sizeof(label)), seen->file, seen->line);
    if (set_value(base, k, value, dir, why, sizeof(why)) < 0)
        return fail(b, file, line, "bad value '%.80s' for %s: %s", value, key, why);
    seen->file = file;
    seen->line = line;
    return 0;
}

/* Read one line of at most CFG_MAX_LINE bytes into buf (newline dropped).
 * 1: a line; 0: end of file; -1: line too long; -2: NUL or control byte. */
static int read_line(FILE *fp, char *buf, size_t size)
{
    size_t n = 0;
    int c, bad = 0;

    while ((c = getc(fp)) != EOF && c != '\n') {
        if (n + 1 >= size)
            return -1;
        if (c == '\0' || (c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
            bad = 1;
        buf[n++] = (char)c;
    }
    if (c == EOF && n == 0)
        return 0;
    /* CRLF line ends are fine; a CR anywhere else is not. */
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (memchr(buf, '\r', n) != NULL)
        bad = 1;
    buf[n] = '\0';
    return bad ? -2 : 1;
}

/* Read one file, from the top, at global level. from/fromline: the include
 * line that named it (NULL for the top file). */
static int parse_file(struct build *b, const char *path, const char *from, int fromline)
{
    FILE *fp = NULL;
    struct stat st;
    char *buf = NULL, *dir = NULL, *name, **nf;
    enum scope_kind kind = SC_GLOBAL;
    size_t idx = 0;
    int line = 0, rc = -1, r, pushed = 0;

    if (b->depth > CFG_MAX_DEPTH)
        return fail(b, from, fromline, "include nested more than %d levels deep at %s",
                    CFG_MAX_DEPTH, path);
    fp = fopen(path, "re");
    if (fp == NULL || fstat(fileno(fp), &st) < 0) {
        if (from != NULL)
            fail(b, from, fromline, "%s: %s", path, strerror(errno));
        else
            fail(b, path, 0, "%s", strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        if (from != NULL)
            fail(b, from, fromline, "%s: %s", path, strerror(EISDIR));
        else
            fail(b, path, 0, "%s", strerror(EISDIR));
        goto done;
    }
    for (int i = 0; i < b->depth; i++) {
        if (b->open[i].dev == st.st_dev && b->open[i].ino == st.st_ino) {
            fail(b, from, fromline, "include loop: %s is already being read", path);
            goto done;
        }
    }
    b->open[b->depth].dev = st.st_dev;
    b->open[b->depth].ino = st.st_ino;
    b->depth++;
    pushed = 1;

    nf = realloc(b->files, (b->nfiles + 1) * sizeof(*nf));
    if (nf == NULL) {
        fail(b, path, 0, "out of memory");
        goto done;
    }
    b->files = nf;
    name = b->files[b->nfiles] = strdup(path);
    buf = malloc(CFG_MAX_LINE + 2);
    if (name == NULL || buf == NULL) {
        fail(b, path, 0, "out of memory");
        goto done;
    }
    b->nfiles++;
    dir = dir_of(name);
    if (dir == NULL) {
        fail(b, path, 0, "out of memory");
        goto done;
    }

    while ((r = read_line(fp, buf, CFG_MAX_LINE + 2)) != 0) {
        line++;
        if (r == -1) {
            fail(b, name, line, "line longer than %d bytes", CFG_MAX_LINE);
            goto done;
        }
        if (r == -2) {
            fail(b, name, line, "control character or NUL byte in line");
            goto done;
        }
        if (parse_line(b, name, dir, line, buf, &kind, &idx) < 0)
            goto done;
    }
    if (ferror(fp)) {
        fail(b, name, 0, "%s", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (pushed)
        b->depth--;
    if (fp != NULL)
        fclose(fp);
    free(buf);
    free(dir);
    return rc;
}

/* ---- after the last line -------------------------------------------------------------- */

/* Fill every key nobody set from its default text, through set_value. */
static int apply_defaults(struct build *b, void *base, const struct cfg_key *keys, size_t n,
                          const struct seen *seen)
{
    char why[512];

    for (size_t i = 0; i < n; i++) {
        const char *def = keys[i].def;
        char host[256];
        if (seen[i].file != NULL || (keys[i].flags & (F_REQUIRED | F_INHERIT)) ||
            ((keys[i].flags & F_OPTIONAL) && def == NULL))
            continue;
        if (keys[i].flags & F_DEF_HOSTNAME) {
            /* Not every system name is a valid EHLO name; then say localhost. */
            def = "localhost";
            if (gethostname(host, sizeof(host)) == 0) {
                host[sizeof(host) - 1] = '\0';
                if (valid_hostname(host))
                    def = host;
            }
        }
        if (def == NULL || set_value(base, &keys[i], def, NULL, why, sizeof(why)) < 0)
            return fail(b, NULL, 0, "built-in default of %s: %s", keys[i].name,
                        def ? why : "missing");
    }
    return 0;
}

/* Domain keys the section did not set take the global value. Runs after the
 * whole file is read: globals may come after the sections in include order. */
static void inherit_globals(const struct config *cfg, struct cfg_domain *d, const struct seen *seen)
{
    for (size_t i = 0; i < NDOMAIN; i++) {
        const struct cfg_key *k = &domain_keys[i];
        const char *from = (const char *)cfg + k->off2;
        char *to = (char *)d + k->off;
        if (seen[i].file != NULL || !(k->flags & F_INHERIT))
            continue;
        switch (k->type) {
        case T_DURATION:
        case T_OFF_DURATION:
        case T_SIZE:
            *(uint64_t *)to = *(const uint64_t *)from;
            break;
        case T_UINT:
            *(unsigned *)to = *(const unsigned *)from;
            break;
        default:
            assert(0 && "F_INHERIT on a type inherit_globals does not copy");
        }
    }
}

/* route (already checked by valid_route) into route_mx / route_host /
 * route_port; a route without a port, and route = mx, use delivery_port. */
static int resolve_route(struct build *b, struct cfg_domain *d)
{
    const char *r = d->route, *port = NULL;
    size_t hlen;

    d->route_mx = 0;
    d->route_port = b->cfg->delivery_port;
    free(d->route_host);
    d->route_host = NULL;
    if (r == NULL || strcmp(r, "mx") == 0) {
        d->route_mx = 1;
        return 0;
    }
    if (r[0] == '[') {
        const char *close = strchr(r, ']');
        hlen = (size_t)(close - r - 1);
        r++;
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        const char *colon = strchr(r, ':');
        hlen = colon ? (size_t)(colon - r) : strlen(r);
        port = colon ? colon + 1 : NULL;
    }
    d->route_host = strndup(r, hlen);
    if (d->route_host == NULL)
        return fail(b, d->file, d->line, "out of memory");
    if (port != NULL && parse_port(port, &d->route_port) < 0)
        return fail(b, d->file, d->line, "bad port in route %s", d->route);
    return 0;
}

/* cfg->other: how mail for destinations that are not relay domains (bounces
 * to senders) is delivered: always retried, by MX, with the global limits.
 * name and route are allocated like a section's, and freed the same way. */
static int fill_other(struct build *b)
{
    struct config *cfg = b->cfg;
    struct cfg_domain *o = &cfg->other;

    memset(o, 0, sizeof(*o));
    o->name = strdup("");
    o->route = strdup("mx");
    if (o->name == NULL || o->route == NULL)
        return fail(b, NULL, 0, "out of memory");
    o->mode = CFG_MODE_RETRY;
    o->route_mx = 1;
    o->route_port = cfg->delivery_port;
    o->tls = CFG_TLS_MAY;
    o->queue_lifetime = cfg->queue_lifetime;
    o->delay_warning = cfg->delay_warning;
    o->probe_interval = 0;
    o->max_site_connections = cfg->max_site_connections;
    return 0;
}

static const struct seen *global_seen(struct build *b, const char *name)
{
    return &b->gseen[find_key(global_keys, NGLOBAL, name) - global_keys];
}

/* The files named by tls_cert and tls_key must be there and readable now:
 * better a refused reload than a STARTTLS that fails for every client. */
static int check_readable(struct build *b, const char *key, const char *path,
                          const struct seen *seen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int err = errno;

    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        err = EISDIR;
    else if (fd >= 0)
        err = 0;
    if (fd >= 0)
        close(fd);
    if (err != 0)
        return fail(b, seen->file, seen->line, "%s %s: %s", key, path, strerror(err));
    return 0;
}

struct order {
    const char *name;
    size_t idx;
};

static int cmp_order(const void *a, const void *b)
{
    const struct order *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_domain_key(const void *key, const void *elem)
{
    return strcmp(key, ((const struct cfg_domain *)elem)->name);
}

static int cmp_queue_key(const void *key, const void *elem)
{
    return strcmp(key, ((const struct cfg_queue *)elem)->name);
}

static int cmp_queue(const void *a, const void *b)
{
    return strcmp(((const struct cfg_queue *)a)->name, ((const struct cfg_queue *)b)->name);
}

/* Sort the domains by name for bsearch; a name twice is an error at the
 * later section. Sorting first keeps this O(n log n) for large sites. */
static int sort_domains(struct build *b)
{
    struct config *cfg = b->cfg;
    struct order *ord = NULL;
    struct cfg_domain *sorted = NULL;
    int rc = -1;

    if (cfg->ndomains == 0)
        return 0;
    ord = calloc(cfg->ndomains, sizeof(*ord));
    sorted = calloc(cfg->ndomains, sizeof(*sorted));
    if (ord == NULL || sorted == NULL) {
        fail(b, NULL, 0, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < cfg->ndomains; i++) {
        ord[i].name = cfg->domains[i].name;
        ord[i].idx = i;
    }
    qsort(ord, cfg->ndomains, sizeof(*ord), cmp_order);
    for (size_t i = 1; i < cfg->ndomains; i++) {
        if (strcmp(ord[i].name, ord[i - 1].name) == 0) {
            const struct cfg_domain *dup = &cfg->domains[ord[i].idx];
            const struct cfg_domain *first = &cfg->domains[ord[i - 1].idx];
            fail(b, dup->file, dup->line, "duplicate [domain %s] (first at %s:%d)", dup->name,
                 first->file, first->line);
            goto done;
        }
    }
    for (size_t i = 0; i < cfg->ndomains; i++)
        sorted[i] = cfg->domains[ord[i].idx];
    free(cfg->domains);
    cfg->domains = sorted;
    sorted = NULL;
    free(b->dseen); /* no longer parallel */
    b->dseen = NULL;
    rc = 0;
done:
    free(ord);
    free(sorted);
    return rc;
}

/* Cross-key checks, defaults, sorting: the snapshot becomes what config.h
 * promises. */
static int finish(struct build *b)
{
    struct config *cfg = b->cfg;
    const struct seen *cert = &b->gseen[find_key(global_keys, NGLOBAL, "tls_cert") - global_keys];
    const struct seen *key = &b->gseen[find_key(global_keys, NGLOBAL, "tls_key") - global_keys];

    if (apply_defaults(b, cfg, global_keys, NGLOBAL, b->gseen) < 0)
        return -1;
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        const struct seen *s = cfg->tls_cert ? cert : key;
        return fail(b, s->file, s->line, "%s is set but %s is not: set both or neither",
                    cfg->tls_cert ? "tls_cert" : "tls_key", cfg->tls_cert ? "tls_key" : "tls_cert");
    }
    if (cfg->tls_cert != NULL && (check_readable(b, "tls_cert", cfg->tls_cert, cert) < 0 ||
                                  check_readable(b, "tls_key", cfg->tls_key, key) < 0))
        return -1;
    if (cfg->tls_ca_file != NULL &&
        check_readable(b, "tls_ca_file", cfg->tls_ca_file, global_seen(b, "tls_ca_file")) < 0)
        return -1;
    if (cfg->max_backoff < cfg->min_backoff) {
        const struct seen *s = global_seen(b, "max_backoff");
        char lo[32], hi[32];
        if (s->file == NULL)
            s = global_seen(b, "min_backoff");
        format_duration(cfg->min_backoff, lo, sizeof(lo));
        format_duration(cfg->max_backoff, hi, sizeof(hi));
        return fail(b, s->file, s->line, "max_backoff (%s) is less than min_backoff (%s)", hi, lo);
    }

    for (size_t i = 0; i < cfg->ndomains; i++) {
        if (apply_defaults(b, &cfg->domains[i], domain_keys, NDOMAIN, b->dseen[i]) < 0)
            return -1;
        inherit_globals(cfg, &cfg->domains[i], b->dseen[i]);
        if (resolve_route(b, &cfg->domains[i]) < 0)
            return -1;
    }
    if (fill_other(b) < 0)
        return -1;
    if (sort_domains(b) < 0)
        return -1;

    for (size_t i = 0; i < cfg->nqueues; i++) {
        struct cfg_queue *q = &cfg->queues[i];
        const struct seen *ds =
            &b->qx[i].seen[find_key(queue_keys, NQUEUE, "domains") - queue_keys];
        if (apply_defaults(b, q, queue_keys, NQUEUE, b->qx[i].seen) < 0)
            return -1;
        if (ds->file == NULL)
            return fail(b, b->qx[i].file, b->qx[i].line, "[queue %s] needs a domains key", q->name);
        for (size_t j = 0; j < q->ndomains; j++) {
            if (cfg->ndomains == 0 || bsearch(q->domains[j], cfg->domains, cfg->ndomains,
                                              sizeof(cfg->domains[0]), cmp_domain_key) == NULL)
                return fail(b, ds->file, ds->line,
                            "[queue %s] names %s, which has no [domain] section", q->name,
                            q->domains[j]);
        }
    }
    if (cfg->nqueues > 1)
        qsort(cfg->queues, cfg->nqueues, sizeof(cfg->queues[0]), cmp_queue);
    return 0;
}

/* ---- the interface -------------------------------------------------------------------- */

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    struct build b;
    int rc = -1;

    memset(&b, 0, sizeof(b));
    b.err = err;
    b.errlen = errlen;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    *out = NULL;
    b.cfg = calloc(1, sizeof(*b.cfg));
    if (b.cfg == NULL) {
        fail(&b, path, 0, "out of memory");
        goto done;
    }
    b.cfg->refs = 1;
    b.cfg->path = make_abs(NULL, path);
    if (b.cfg->path == NULL) {
        fail(&b, path, 0, "%s", strerror(errno ? errno : ENOMEM));
        goto done;
    }
    if (parse_file(&b, b.cfg->path, NULL, 0) < 0 || finish(&b) < 0)
        goto done;
    *out = b.cfg;
    b.cfg = NULL;
    rc = 0;
done:
    config_unref(b.cfg);
    free(b.dseen);
    free(b.qx);
    free_strv(b.files, b.nfiles);
    return rc;
}

const struct cfg_domain *config_delivery_domain(const struct config *cfg, const char *domain)
{
    const struct cfg_domain *d = config_find_domain(cfg, domain);

    return d != NULL ? d : &cfg->other;
}

int config_net_match(const struct cfg_net *nets, size_t n, const struct sockaddr *addr)
{
    uint8_t peer[16], block[16];
    int pf, bf;

    if (nets == NULL || addr_bytes(addr, peer, &pf, NULL) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned prefix = nets[i].prefix;
        if (addr_bytes((const struct sockaddr *)&nets[i].addr, block, &bf, &prefix) < 0)
            continue;
        if (bf == pf && prefix <= (bf == AF_INET ? 32u : 128u) && prefix_equal(peer, block, prefix))
            return 1;
    }
    return 0;
}

struct config *config_ref(struct config *cfg)
{
    cfg->refs++;
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg == NULL || --cfg->refs > 0)
        return;
    free(cfg->path);
    free(cfg->hostname);
    free_listen(cfg->listen);
    free(cfg->database);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->user);
    free(cfg->dns_servers);
    free(cfg->my_addresses);
    free(cfg->tls_ca_file);
    free(cfg->control_socket);
    free(cfg->control_socket_group);
    for (size_t i = 0; i < cfg->ndomains; i++)
        free_domain(&cfg->domains[i]);
    free(cfg->domains);
    free_domain(&cfg->other);
    for (size_t i = 0; i < cfg->nqueues; i++) {
        free(cfg->queues[i].name);
        free_strv(cfg->queues[i].domains, cfg->queues[i].ndomains);
    }
    free(cfg->queues);
    free(cfg);
}

void config_print(const struct config *cfg, FILE *fp)
{
    fputs("# relayd effective configuration: every key, defaults included\n", fp);
    print_scope(fp, cfg, global_keys, NGLOBAL);
    for (size_t i = 0; i < cfg->ndomains; i++) {
        fprintf(fp, "\n[domain %s]\n", cfg->domains[i].name);
        print_scope(fp, &cfg->domains[i], domain_keys, NDOMAIN);
    }
    for (size_t i = 0; i < cfg->nqueues; i++) {
        fprintf(fp, "\n[queue %s]\n", cfg->queues[i].name);
        print_scope(fp, &cfg->queues[i], queue_keys, NQUEUE);
    }
}

const struct cfg_domain *config_find_domain(const struct config *cfg, const char *domain)
{
    char name[CFG_HOST_MAX + 2];
    size_t len = strlen(domain);
    const struct cfg_domain *d;

    /* Tolerate what policy may hand us: upper case and one trailing dot. */
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0 || len >= sizeof(name) || cfg->ndomains == 0)
        return NULL;
    for (size_t i = 0; i < len; i++)
        name[i] = (char)tolower((unsigned char)domain[i]);
    name[len] = '\0';
    if (name[0] == '.' || strstr(name, "..") != NULL)
        return NULL;

    d = bsearch(name, cfg->domains, cfg->ndomains, sizeof(*d), cmp_domain_key);
    if (d != NULL)
        return d;
    /* Walk up whole labels only, so badexample.org never matches example.org. */
    for (const char *p = strchr(name, '.'); p != NULL; p = strchr(p + 1, '.')) {
        d = bsearch(p + 1, cfg->domains, cfg->ndomains, sizeof(*d), cmp_domain_key);
        if (d != NULL && d->subdomains)
            return d;
    }
    return NULL;
}

const struct cfg_queue *config_find_queue(const struct config *cfg, const char *name)
{
    if (cfg->nqueues == 0)
        return NULL;
    return bsearch(name, cfg->queues, cfg->nqueues, sizeof(cfg->queues[0]), cmp_queue_key);
}
