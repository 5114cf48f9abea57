/*
 * config_value: the typed values of relayd.conf(5): parse a value of each
 * key type into its field (with the range and the words it accepts), and
 * print it back the way the parser reads it (relayd -n). Pure: no files
 * read here, no knowledge of which keys exist (that is config_keys.c) or of
 * sections and includes (config.c).
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

#include "addr.h"
#include "config_int.h"
#include "recipients.h"
#include "smtp_parse.h"

static const char *const level_names[] = {
    [LOGL_ERROR] = "error",
    [LOGL_WARN] = "warn",
    [LOGL_INFO] = "info",
    [LOGL_DEBUG] = "debug",
};

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
void config_format_duration(uint64_t ms, char *buf, size_t len)
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
int config_valid_hostname(const char *s)
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
int config_normalise_domain(const char *in, char *out, size_t outlen)
{
    size_t len = strlen(in);

    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len >= outlen)
        return -1;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[len] = '\0';
    return config_valid_hostname(out) ? 0 : -1;
}

int config_parse_port(const char *s, unsigned *port)
{
    uint64_t v;
    const char *end;

    if (parse_digits(s, &v, &end) < 0 || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *port = (unsigned)v;
    return 0;
}

/* "mx", "odmr", "host", "host:port", "192.0.2.1[:port]" or "[2001:db8::1][:port]". */
int config_valid_route(const char *s, char *why, size_t whylen)
{
    char host[CFG_HOST_MAX + 2];
    const char *port = NULL, *colon;
    size_t hlen;
    unsigned p;
    struct in6_addr a6;
    struct in_addr a4;

    if (strcasecmp(s, "mx") == 0 || strcasecmp(s, "odmr") == 0)
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
        if (inet_pton(AF_INET, host, &a4) != 1 && !config_valid_hostname(host)) {
            snprintf(why, whylen, "expected mx, or host[:port] with a host name, IPv4 or [IPv6]");
            return -1;
        }
        port = colon ? colon + 1 : NULL;
    }
    if (port != NULL && config_parse_port(port, &p) < 0) {
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
    if (config_parse_port(portstr, &port) < 0) {
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
char *config_make_abs(const char *dir, const char *path)
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
char *config_dir_of(const char *abs)
{
    const char *slash = strrchr(abs, '/');
    size_t len = slash && slash != abs ? (size_t)(slash - abs) : 1;

    return strndup(abs, len);
}

/* ---- values --------------------------------------------------------------------------- */

void config_free_listen(struct cfg_listen *l)
{
    free(l);
}

/* What a cfg_domain owns (sections and cfg->other alike). */
void config_free_domain(struct cfg_domain *d)
{
    free(d->name);
    free(d->route);
    free(d->file);
    free(d->route_host);
    free(d->notify);
    free(d->etrn_access);
    free(d->recipients_file);
    recipients_unref(d->recipients);
}

void config_free_strv(char **v, size_t n)
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
    if (ntok == 0 && !(k->flags & F_OPTIONAL)) {
        snprintf(why, whylen, "expected at least one addr:port");
        goto done;
    }
    l = calloc(2 * ntok + 1, sizeof(*l));
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
    config_free_listen(*(struct cfg_listen **)((char *)base + k->off));
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
        if (config_normalise_domain(tok[n], name, sizeof(name)) < 0) {
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
    config_free_strv(*(char ***)((char *)base + k->off), *(size_t *)((char *)base + k->off2));
    *(char ***)((char *)base + k->off) = v;
    *(size_t *)((char *)base + k->off2) = n;
    v = NULL;
    rc = 0;
done:
    config_free_strv(v, n);
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
int config_addr_bytes(const struct sockaddr *sa, uint8_t out[16], int *family, unsigned *prefix)
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
int config_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
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
    int rc = -1, nets = k->type == T_NETS, auth = 0;
    size_t t;

    copy = split_list(value, &tok, &ntok);
    if (copy == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    if (ntok == 0 && nets) {
        snprintf(why, whylen, "expected any, or a list of auth, addresses and networks");
        goto done;
    }
    if (nets && ntok == 1 && strcasecmp(tok[0], "any") == 0)
        ntok = 0;
    if (ntok > 0 && (v = calloc(ntok, sizeof(*v))) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (t = 0; t < ntok; t++) {
        if (nets && strcasecmp(tok[t], "any") == 0) {
            snprintf(why, whylen, "'any' cannot be combined with a list");
            goto done;
        }
        if (nets && strcasecmp(tok[t], "auth") == 0) {
            /* an authenticated account that owns the domain (credentials) */
            if (auth++) {
                snprintf(why, whylen, "auth is listed twice");
                goto done;
            }
            memset(&v[n], 0, sizeof(v[n]));
            v[n].addr.ss_family = CFG_NET_AUTH;
            n++;
            continue;
        }
        if (parse_net(tok[t], &v[n], nets, why, whylen) < 0)
            goto done;
        for (size_t m = 0; m < n; m++) {
            if (v[m].prefix == v[n].prefix &&
                memcmp(&v[m].addr, &v[n].addr, sizeof(v[m].addr)) == 0) {
                snprintf(why, whylen, "%s is listed twice", tok[t]);
                goto done;
            }
        }
        n++;
    }
    free(*(struct cfg_net **)((char *)base + k->off));
    *(struct cfg_net **)((char *)base + k->off) = n > 0 ? v : NULL;
    *(size_t *)((char *)base + k->off2) = n;
    if (n == 0)
        free(v);
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
        if (port != NULL && config_parse_port(port, &p) < 0) {
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
int config_set_value(void *base, const struct cfg_key *k, const char *value, const char *dir,
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
        if (!config_valid_hostname(value)) {
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
        s = config_make_abs(dir, value);
        break;
    case T_MAILBOX: {
        /* the SMTP path parser decides what a mailbox is (RFC 5321 §4.1.2) */
        struct smtp_rcpt_args ra;
        char norm[SMTP_DOMAIN_MAX + 1], addr[SMTP_PATH_MAX * 2 + 8];
        char *line = NULL;

        if (asprintf(&line, "TO:<%s>", value) < 0) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        v = (uint64_t)smtp_parse_rcpt(line, strlen(line), &ra);
        free(line);
        if (v != SMTP_PARSE_OK || ra.to.domain[0] == '\0' || ra.to.literal ||
            addr_domain_normalize(ra.to.domain, strlen(ra.to.domain), norm, sizeof(norm)) != 0) {
            snprintf(why, whylen, "expected an address, local@domain");
            return -1;
        }
        snprintf(ra.to.domain, sizeof(ra.to.domain), "%s", norm);
        if (smtp_mailbox_format(&ra.to, addr, sizeof(addr)) < 0) {
            snprintf(why, whylen, "address too long");
            return -1;
        }
        s = strdup(addr);
        break;
    }
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
        if (config_valid_route(value, why, whylen) < 0)
            return -1;
        s = strdup(strcasecmp(value, "mx") == 0 ? "mx" : value);
        break;
    case T_SIZE:
        if ((k->flags & F_AUTO) && strcasecmp(value, "auto") == 0) {
            *(uint64_t *)field = CFG_SIZE_AUTO;
            return 0;
        }
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
            config_format_duration(k->min, buf, sizeof(buf));
            config_format_duration(k->max, buf2, sizeof(buf2));
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
            config_format_duration(k->min, buf, sizeof(buf));
            config_format_duration(k->max, buf2, sizeof(buf2));
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
    case T_MAILBOX:
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
        config_format_duration(*(const uint64_t *)field, buf, sizeof(buf));
        s = buf;
        break;
    case T_RATE: {
        char per[32];
        config_format_duration(*(const uint64_t *)((const char *)base + k->off2), per, sizeof(per));
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
            if (v[i].addr.ss_family == CFG_NET_AUTH)
                snprintf(nb, sizeof(nb), "auth");
            else
                format_net(&v[i], nb, sizeof(nb));
            fprintf(fp, "%s%s", i ? ", " : " ", nb);
        }
        return;
    }
    case T_SIZE:
        if ((k->flags & F_AUTO) && *(const uint64_t *)field == CFG_SIZE_AUTO) {
            s = "auto";
            break;
        }
        format_size(*(const uint64_t *)field, buf, sizeof(buf));
        s = buf;
        break;
    case T_DURATION:
        config_format_duration(*(const uint64_t *)field, buf, sizeof(buf));
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

void config_print_scope(FILE *fp, const void *base, const struct cfg_key *keys, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++) {
        fprintf(fp, "# %s\n%s", keys[i].doc, keys[i].name);
        print_value(fp, base, &keys[i]);
        fputc('\n', fp);
    }
}

/* Free what the field of key k in the object at base owns, and clear it, so a
 * scratch object filled by config_set_value can be thrown away. */
void config_free_value(void *base, const struct cfg_key *k)
{
    char *field = (char *)base + k->off;

    switch (k->type) {
    case T_HOSTNAME:
    case T_PATH:
    case T_USER:
    case T_GROUP:
    case T_MAILBOX:
    case T_ROUTE:
    case T_SERVERS:
    case T_ADDRS:
    case T_NETS:
    case T_LISTEN:
        free(*(void **)field);
        *(void **)field = NULL;
        break;
    case T_DOMAINS:
        config_free_strv(*(char ***)field, *(size_t *)((char *)base + k->off2));
        *(char ***)field = NULL;
        break;
    default:
        break;
    }
}

/* The text config_print writes after the key's name, malloc'd. */
char *config_value_text(const void *base, const struct cfg_key *k)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);

    if (fp == NULL)
        return NULL;
    print_value(fp, base, k);
    if (fclose(fp) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
