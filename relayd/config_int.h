/*
 * config_int: what config.c (files, sections, includes), config_keys.c (the
 * key tables) and config_value.c (typed values) share. Private to config*.c.
 */
#ifndef RELAYD_CONFIG_INT_H
#define RELAYD_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
    T_NETS,         /* struct cfg_net * + size_t count: "any" (none) or networks, and
                     * "auth" among them: an entry of family CFG_NET_AUTH */
    T_TLS,          /* enum cfg_tls */
    T_OCTAL,        /* unsigned: file permission bits in octal, 0660 */
    T_GROUP,        /* char *: a group name */
    T_MAILBOX,      /* char *: an address local@domain, the domain normalised */
};

#define F_OPTIONAL                                                                                 \
    0x1                     /* an empty value means "not set" (NULL); that is the default          \
                             * unless the key has one */
#define F_REQUIRED     0x2  /* no default: the section must set it */
#define F_DEF_HOSTNAME 0x4  /* the default is the system's host name (gethostname) */
#define F_INHERIT      0x8  /* domain key: unset takes the global key's value (off2; for
                             * T_NETS, whose off2 is the count: the global key of that name) */
#define F_READ         0x10 /* T_PATH: a file relayd reads; relayd -t checks its user can */
#define F_AUTO         0x20 /* T_SIZE: "auto" is a value (CFG_SIZE_AUTO), worked out at use */

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

#define CFG_MAX_KEYS 96 /* keys in one scope; config_keys.c checks */

extern const struct cfg_key config_global_keys[];
extern const struct cfg_key config_domain_keys[];
extern const struct cfg_key config_queue_keys[];
extern const size_t config_nglobal, config_ndomain, config_nqueue;

/* config_value.c */
/* Parse value for key k into the object at base (struct config, cfg_domain
 * or cfg_queue); dir is the directory of the file it came from (NULL for a
 * built-in default). 0, or -1 with what was expected in why. */
int config_set_value(void *base, const struct cfg_key *k, const char *value, const char *dir,
                     char *why, size_t whylen);
/* "# doc" and "key = value" for each of the nkeys keys of the object at base. */
void config_print_scope(FILE *fp, const void *base, const struct cfg_key *keys, size_t nkeys);
/* Free what the field of k owns (for scratch objects). */
void config_free_value(void *base, const struct cfg_key *k);
/* " = value" as config_print writes it for k's field at base; malloc'd, NULL if out of memory. */
char *config_value_text(const void *base, const struct cfg_key *k);
void config_format_duration(uint64_t ms, char *buf, size_t len);
int config_valid_hostname(const char *s);
int config_normalise_domain(const char *in, char *out, size_t outlen);
int config_parse_port(const char *s, unsigned *port);
int config_valid_route(const char *s, char *why, size_t whylen);
/* path made absolute against dir (malloc'd; NULL when out of memory). */
char *config_make_abs(const char *dir, const char *path);
/* The directory part of an absolute path (malloc'd). */
char *config_dir_of(const char *abs);
void config_free_listen(struct cfg_listen *l);
void config_free_domain(struct cfg_domain *d);
void config_free_strv(char **v, size_t n);
int config_addr_bytes(const struct sockaddr *sa, uint8_t out[16], int *family, unsigned *prefix);
int config_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits);

#endif
