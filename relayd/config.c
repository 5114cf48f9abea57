/*
 * config: relayd.conf(5) and its includes into an immutable, refcounted
 * snapshot, and back out (relayd -n): lines, sections, includes, defaults,
 * inheritance and the checks across keys. The keys themselves are in
 * config_keys.c, how each type of value is read in config_value.c.
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

#include "config_int.h"
#include "credentials.h"

enum scope_kind { SC_GLOBAL = 0, SC_DOMAIN, SC_QUEUE };

static const struct {
    const struct cfg_key *keys;
    const size_t *nkeys;
    const char *where; /* "it belongs ..." in messages */
} scopes[] = {
    [SC_GLOBAL] = {config_global_keys, &config_nglobal, "before any [section]"},
    [SC_DOMAIN] = {config_domain_keys, &config_ndomain, "in a [domain NAME] section"},
    [SC_QUEUE] = {config_queue_keys, &config_nqueue, "in a [queue NAME] section"},
};

/* Where a key was set; file points into build.files. */
struct seen {
    const char *file;
    int line;
};

struct queue_extra {
    struct seen seen[CFG_MAX_KEYS];
    const char *file; /* where the section started */
    int line;
};

/* State while reading: the snapshot being filled and what only the parser
 * needs (where each key was set, which files are open). */
struct build {
    struct config *cfg;
    struct seen gseen[CFG_MAX_KEYS];
    struct seen (*dseen)[CFG_MAX_KEYS]; /* parallel to cfg->domains until sorted */
    struct queue_extra *qx;             /* parallel to cfg->queues */
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
    path = config_make_abs(dir, value);
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
    config_free_strv(names, n);
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
        if (config_normalise_domain(name, norm, sizeof(norm)) < 0)
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

    k = find_key(scopes[*kind].keys, *scopes[*kind].nkeys, key);
    if (k == NULL) {
        for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
            if (find_key(scopes[i].keys, *scopes[i].nkeys, key) != NULL)
                return fail(b, file, line, "key '%s' is not valid %s (it belongs %s)", key,
                            scope_label(b, *kind, *idx, label, sizeof(label)), scopes[i].where);
        }
        return fail(b, file, line, "unknown key '%.64s'", key);
    }
    if (*kind == SC_DOMAIN) {
        seen = &b->dseen[*idx][k - config_domain_keys];
        base = &b->cfg->domains[*idx];
    } else if (*kind == SC_QUEUE) {
        seen = &b->qx[*idx].seen[k - config_queue_keys];
        base = &b->cfg->queues[*idx];
    } else {
        seen = &b->gseen[k - config_global_keys];
        base = b->cfg;
    }
    if (seen->file != NULL)
        return fail(b, file, line, "duplicate key '%s' %s (first set at %s:%d)", key,
                    scope_label(b, *kind, *idx, label, sizeof(label)), seen->file, seen->line);
    if (config_set_value(base, k, value, dir, why, sizeof(why)) < 0)
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
    dir = config_dir_of(name);
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

/* Fill every key nobody set from its default text, through config_set_value. */
/* The system's host name, as the hostname key defaults to it. */
static const char *default_hostname(char *host, size_t len)
{
    /* Not every system name is a valid EHLO name; then say localhost. */
    if (gethostname(host, len) == 0) {
        host[len - 1] = '\0';
        if (config_valid_hostname(host))
            return host;
    }
    return "localhost";
}

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
        if (keys[i].flags & F_DEF_HOSTNAME)
            def = default_hostname(host, sizeof(host));
        if (def == NULL || config_set_value(base, &keys[i], def, NULL, why, sizeof(why)) < 0)
            return fail(b, NULL, 0, "built-in default of %s: %s", keys[i].name,
                        def ? why : "missing");
    }
    return 0;
}

/* Domain keys the section did not set take the global value. Runs after the
 * whole file is read: globals may come after the sections in include order. */
static int inherit_globals(const struct config *cfg, struct cfg_domain *d, const struct seen *seen)
{
    for (size_t i = 0; i < config_ndomain; i++) {
        const struct cfg_key *k = &config_domain_keys[i];
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
        case T_NETS: {
            /* off2 is the count here: the global is the key of the same name;
             * "auth" (CFG_NET_AUTH) is copied with the networks */
            const struct cfg_key *g = find_key(config_global_keys, config_nglobal, k->name);
            const struct cfg_net *v = *(struct cfg_net *const *)((const char *)cfg + g->off);
            size_t n = *(const size_t *)((const char *)cfg + g->off2);
            struct cfg_net *copy = NULL;
            if (n > 0 && (copy = malloc(n * sizeof(*copy))) == NULL)
                return -1;
            if (n > 0)
                memcpy(copy, v, n * sizeof(*copy));
            free(*(struct cfg_net **)to);
            *(struct cfg_net **)to = copy;
            *(size_t *)((char *)d + k->off2) = n;
            break;
        }
        default:
            assert(0 && "F_INHERIT on a type inherit_globals does not copy");
        }
    }
    return 0;
}

/* route (already checked by config_valid_route) into route_mx / route_host /
 * route_port; a route without a port, and route = mx, use delivery_port. */
static int resolve_route(struct build *b, struct cfg_domain *d)
{
    const char *r = d->route, *port = NULL;
    size_t hlen;

    d->route_mx = 0;
    d->route_odmr = 0;
    d->route_port = b->cfg->delivery_port;
    free(d->route_host);
    d->route_host = NULL;
    if (r == NULL || strcmp(r, "mx") == 0) {
        d->route_mx = 1;
        return 0;
    }
    if (strcasecmp(r, "odmr") == 0) {
        /* RFC 2645: only ever fetched by ATRN; never a connection of ours */
        d->route_odmr = 1;
        if (d->mode == CFG_MODE_RETRY)
            return fail(b, d->file, d->line,
                        "[domain %s] has route = odmr: its mail waits for ATRN, so mode = retry "
                        "cannot apply",
                        d->name);
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
    if (port != NULL && config_parse_port(port, &d->route_port) < 0)
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
    return &b->gseen[find_key(config_global_keys, config_nglobal, name) - config_global_keys];
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
    const struct seen *cert =
        &b->gseen[find_key(config_global_keys, config_nglobal, "tls_cert") - config_global_keys];
    const struct seen *key =
        &b->gseen[find_key(config_global_keys, config_nglobal, "tls_key") - config_global_keys];

    if (apply_defaults(b, cfg, config_global_keys, config_nglobal, b->gseen) < 0)
        return -1;
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        const struct seen *s = cfg->tls_cert ? cert : key;
        return fail(b, s->file, s->line, "%s is set but %s is not: set both or neither",
                    cfg->tls_cert ? "tls_cert" : "tls_key", cfg->tls_cert ? "tls_key" : "tls_cert");
    }
    if (cfg->tls_cert != NULL && (check_readable(b, "tls_cert", cfg->tls_cert, cert) < 0 ||
                                  check_readable(b, "tls_key", cfg->tls_key, key) < 0))
        return -1;
    if (cfg->odmr_require_tls && cfg->tls_cert == NULL) {
        const struct seen *s = global_seen(b, "odmr_require_tls");
        return fail(b, s->file, s->line,
                    "odmr_require_tls = yes needs tls_cert and tls_key: without a certificate "
                    "no customer could ever authenticate");
    }
    if (cfg->tls_ca_file != NULL &&
        check_readable(b, "tls_ca_file", cfg->tls_ca_file, global_seen(b, "tls_ca_file")) < 0)
        return -1;
    if (cfg->credentials_file != NULL) {
        char why[512];
        const struct seen *s = global_seen(b, "credentials");
        if (credentials_load(cfg->credentials_file, &cfg->credentials, why, sizeof(why)) < 0)
            return fail(b, s->file, s->line, "credentials %s", why);
    }
    if (cfg->max_backoff < cfg->min_backoff) {
        const struct seen *s = global_seen(b, "max_backoff");
        char lo[32], hi[32];
        if (s->file == NULL)
            s = global_seen(b, "min_backoff");
        config_format_duration(cfg->min_backoff, lo, sizeof(lo));
        config_format_duration(cfg->max_backoff, hi, sizeof(hi));
        return fail(b, s->file, s->line, "max_backoff (%s) is less than min_backoff (%s)", hi, lo);
    }

    for (size_t i = 0; i < cfg->ndomains; i++) {
        if (apply_defaults(b, &cfg->domains[i], config_domain_keys, config_ndomain, b->dseen[i]) <
            0)
            return -1;
        if (inherit_globals(cfg, &cfg->domains[i], b->dseen[i]) < 0)
            return fail(b, cfg->domains[i].file, cfg->domains[i].line, "out of memory");
        if (resolve_route(b, &cfg->domains[i]) < 0)
            return -1;
    }
    cfg->etrn_access_auth = config_net_has_auth(cfg->etrn_access, cfg->netrn_access);
    for (size_t i = 0; i < cfg->ndomains; i++)
        cfg->domains[i].etrn_access_auth =
            config_net_has_auth(cfg->domains[i].etrn_access, cfg->domains[i].netrn_access);
    if (fill_other(b) < 0)
        return -1;
    if (sort_domains(b) < 0)
        return -1;
    /* a notification must not wait in a held queue itself (a loop that
     * never tells anyone anything) */
    for (size_t i = 0; i < cfg->ndomains; i++) {
        const struct cfg_domain *d = &cfg->domains[i], *to;
        if (d->notify == NULL)
            continue;
        to = config_find_domain(cfg, strrchr(d->notify, '@') + 1);
        if (to != NULL && (to->mode == CFG_MODE_HOLD || to->route_odmr))
            return fail(b, d->file, d->line,
                        "[domain %s] notify = %s: %s is held here itself, so the notification "
                        "would wait beside the mail it announces",
                        d->name, d->notify, to->name);
    }
    if (cfg->notify_command != NULL && access(cfg->notify_command, X_OK) != 0) {
        const struct seen *s = global_seen(b, "notify_command");
        return fail(b, s->file, s->line, "notify_command %s: %s", cfg->notify_command,
                    strerror(errno));
    }

    for (size_t i = 0; i < cfg->nqueues; i++) {
        struct cfg_queue *q = &cfg->queues[i];
        const struct seen *ds =
            &b->qx[i]
                 .seen[find_key(config_queue_keys, config_nqueue, "domains") - config_queue_keys];
        if (apply_defaults(b, q, config_queue_keys, config_nqueue, b->qx[i].seen) < 0)
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
    b.cfg->path = config_make_abs(NULL, path);
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
    config_free_strv(b.files, b.nfiles);
    return rc;
}

uint64_t config_queue_minfree(const struct config *cfg)
{
    if (cfg->queue_minfree != CFG_SIZE_AUTO)
        return cfg->queue_minfree;
    return cfg->max_message_size + cfg->max_message_size / 2 + ((uint64_t)64 << 20);
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

    if (nets == NULL || config_addr_bytes(addr, peer, &pf, NULL) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned prefix = nets[i].prefix;
        if (config_addr_bytes((const struct sockaddr *)&nets[i].addr, block, &bf, &prefix) < 0)
            continue;
        if (bf == pf && prefix <= (bf == AF_INET ? 32u : 128u) &&
            config_prefix_equal(peer, block, prefix))
            return 1;
    }
    return 0;
}

int config_net_has_auth(const struct cfg_net *nets, size_t n)
{
    for (size_t i = 0; nets != NULL && i < n; i++)
        if (nets[i].addr.ss_family == CFG_NET_AUTH)
            return 1;
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
    config_free_listen(cfg->listen);
    config_free_listen(cfg->odmr_listen);
    free(cfg->database);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->user);
    free(cfg->dns_servers);
    free(cfg->my_addresses);
    free(cfg->tls_ca_file);
    free(cfg->control_socket);
    free(cfg->control_socket_group);
    free(cfg->credentials_file);
    free(cfg->etrn_access);
    free(cfg->notify_command);
    credentials_free(cfg->credentials);
    for (size_t i = 0; i < cfg->ndomains; i++)
        config_free_domain(&cfg->domains[i]);
    free(cfg->domains);
    config_free_domain(&cfg->other);
    for (size_t i = 0; i < cfg->nqueues; i++) {
        free(cfg->queues[i].name);
        config_free_strv(cfg->queues[i].domains, cfg->queues[i].ndomains);
    }
    free(cfg->queues);
    free(cfg);
}

/* Does the value of k in the object at base differ from what it would be had
 * the file not set it? For an inherited domain key that is the global value. */
static int differs_from_default(const struct config *cfg, const void *base, const struct cfg_key *k)
{
    union {
        struct config c;
        struct cfg_domain d;
        struct cfg_queue q;
    } scratch;
    char host[256], why[512];
    char *have, *def = NULL;
    int differs = 1;

    if (k->flags & F_REQUIRED)
        return 1;
    memset(&scratch, 0, sizeof(scratch));
    if ((k->flags & F_INHERIT) && k->type == T_NETS) {
        def = config_value_text(cfg, find_key(config_global_keys, config_nglobal, k->name));
    } else if (k->flags & F_INHERIT) {
        struct cfg_key global = *k;
        global.off = k->off2;
        def = config_value_text(cfg, &global);
    } else if (k->def != NULL || (k->flags & F_DEF_HOSTNAME)) {
        const char *text = k->def;
        if (k->flags & F_DEF_HOSTNAME)
            text = default_hostname(host, sizeof(host));
        if (config_set_value(&scratch, k, text, NULL, why, sizeof(why)) == 0)
            def = config_value_text(&scratch, k);
        config_free_value(&scratch, k);
    } else {
        def = strdup(" ="); /* optional, unset by default */
    }
    have = config_value_text(base, k);
    if (have != NULL && def != NULL)
        differs = strcmp(have, def) != 0;
    free(have);
    free(def);
    return differs;
}

static void print_keys(const struct config *cfg, FILE *fp, const void *base,
                       const struct cfg_key *keys, size_t nkeys, int all)
{
    for (size_t i = 0; i < nkeys; i++) {
        if (!all && !differs_from_default(cfg, base, &keys[i]))
            continue;
        config_print_scope(fp, base, &keys[i], 1);
    }
}

void config_print(const struct config *cfg, FILE *fp, int all)
{
    fputs(all ? "# relayd effective configuration: every key, defaults included\n"
              : "# relayd configuration: the keys that differ from their defaults\n",
          fp);
    print_keys(cfg, fp, cfg, config_global_keys, config_nglobal, all);
    for (size_t i = 0; i < cfg->ndomains; i++) {
        fprintf(fp, "\n[domain %s]\n", cfg->domains[i].name);
        print_keys(cfg, fp, &cfg->domains[i], config_domain_keys, config_ndomain, all);
    }
    for (size_t i = 0; i < cfg->nqueues; i++) {
        fprintf(fp, "\n[queue %s]\n", cfg->queues[i].name);
        print_keys(cfg, fp, &cfg->queues[i], config_queue_keys, config_nqueue, all);
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
