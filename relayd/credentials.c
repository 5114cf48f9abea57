/*
 * credentials: the accounts file behind SMTP AUTH, ETRN with etrn_access =
 * auth and ATRN: read once per configuration snapshot (so SIGHUP re-reads
 * it), kept sorted by name, and asked which account owns which domain.
 * Each line is split by lib/cred_line.c. Does not check secrets (auth.c and
 * auth_worker.c do; it only asks libxcrypt whether it knows a hash's
 * method, for relayd -t) and never logs or prints one.
 */
#include "credentials.h"

#include <crypt.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"

struct credentials {
    struct cred_account *v; /* sorted by name */
    size_t n, cap;
    int others; /* mode had o+r or o+w */
};

static void wipe(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void account_free(struct cred_account *a)
{
    free(a->name);
    for (size_t i = 0; i < a->ndomains; i++)
        free(a->domains[i]);
    free(a->domains);
    wipe(a->crypt_hash);
    wipe(a->plain);
    wipe(a->scram_salt);
    wipe(a->scram_stored_key);
    wipe(a->scram_server_key);
}

void credentials_free(struct credentials *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        account_free(&c->v[i]);
    free(c->v);
    free(c);
}

static char *dup_or_null(const char *s, int *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

/* Lower case, one trailing dot dropped: the form config.c and the queue use. */
static char *normalise_domain(const char *d)
{
    size_t n = strlen(d);
    char *out;

    if (n > 0 && d[n - 1] == '.')
        n--;
    out = strndup(d, n);
    if (out != NULL)
        for (size_t i = 0; i < n; i++)
            out[i] = (char)tolower((unsigned char)out[i]);
    return out;
}

/* Copy a parsed line into the table (the line buffer is reused). */
static int add_account(struct credentials *c, const struct cred_line *l, int lineno)
{
    struct cred_account a;
    int oom = 0;

    memset(&a, 0, sizeof(a));
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct cred_account *v = realloc(c->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        c->v = v;
        c->cap = cap;
    }
    a.line = lineno;
    a.mechs = l->mechs;
    a.scram_iter = l->scram_iter;
    a.name = dup_or_null(l->name, &oom);
    a.crypt_hash = dup_or_null(l->crypt_hash, &oom);
    a.plain = dup_or_null(l->plain, &oom);
    a.scram_salt = dup_or_null(l->scram_salt, &oom);
    a.scram_stored_key = dup_or_null(l->scram_stored_key, &oom);
    a.scram_server_key = dup_or_null(l->scram_server_key, &oom);
    a.domains = calloc(l->ndomains, sizeof(*a.domains));
    if (a.domains == NULL)
        oom = 1;
    for (size_t i = 0; !oom && i < l->ndomains; i++) {
        a.domains[i] = normalise_domain(l->domains[i]);
        if (a.domains[i] == NULL)
            oom = 1;
        else
            a.ndomains++;
    }
    if (oom) {
        account_free(&a);
        return -1;
    }
    c->v[c->n++] = a;
    return 0;
}

static int cmp_account(const void *a, const void *b)
{
    return strcmp(((const struct cred_account *)a)->name, ((const struct cred_account *)b)->name);
}

static int cmp_account_key(const void *key, const void *elem)
{
    return strcmp(key, ((const struct cred_account *)elem)->name);
}

int credentials_load(const char *path, struct credentials **out, char *err, size_t errlen)
{
    struct credentials *c = NULL;
    struct cred_line l;
    struct stat st;
    FILE *fp = NULL;
    char *buf = NULL;
    int lineno = 0, rc = -1;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    buf = malloc(CRED_LINE_MAX + 2);
    c = calloc(1, sizeof(*c));
    if (buf == NULL || c == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    fp = fopen(path, "re");
    if (fp == NULL || fstat(fileno(fp), &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto done;
    }
    c->others = (st.st_mode & (S_IROTH | S_IWOTH)) != 0;
    while (fgets(buf, CRED_LINE_MAX + 2, fp) != NULL) {
        size_t len = strlen(buf);
        const char *why = NULL;
        int r;

        lineno++;
        if (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        else if (!feof(fp)) {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes", path, lineno, CRED_LINE_MAX);
            goto done;
        }
        if (memchr(buf, '\0', len) != NULL || strlen(buf) != len) {
            snprintf(err, errlen, "%s:%d: NUL byte in line", path, lineno);
            goto done;
        }
        r = cred_line_parse(buf, &l, &why);
        if (r < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            goto done;
        }
        if (r == 0)
            continue;
        if (add_account(c, &l, lineno) < 0) {
            snprintf(err, errlen, "%s:%d: out of memory", path, lineno);
            goto done;
        }
    }
    if (ferror(fp)) {
        snprintf(err, errlen, "%s: read error", path);
        goto done;
    }
    if (c->n > 1)
        qsort(c->v, c->n, sizeof(c->v[0]), cmp_account);
    for (size_t i = 1; i < c->n; i++) {
        if (strcmp(c->v[i - 1].name, c->v[i].name) == 0) {
            int a = c->v[i - 1].line, b = c->v[i].line;
            snprintf(err, errlen, "%s:%d: account %s already defined on line %d", path,
                     a > b ? a : b, c->v[i].name, a < b ? a : b);
            goto done;
        }
    }
    *out = c;
    c = NULL;
    rc = 0;
done:
    if (buf != NULL) {
        explicit_bzero(buf, CRED_LINE_MAX + 2);
        free(buf);
    }
    explicit_bzero(&l, sizeof(l));
    if (fp != NULL)
        fclose(fp);
    credentials_free(c);
    return rc;
}

const char *credentials_hash_problem(const struct cred_account *a)
{
    if (a->crypt_hash == NULL)
        return NULL;
    switch (crypt_checksalt(a->crypt_hash)) {
    case CRYPT_SALT_OK:
        return NULL;
    case CRYPT_SALT_METHOD_LEGACY:
        return "a legacy hash method (weak): make a new one with etrnctl credentials";
    default:
        return "not a hash libxcrypt knows: PLAIN and LOGIN would answer 454";
    }
}

int credentials_others_can_read(const struct credentials *c)
{
    return c != NULL && c->others;
}

size_t credentials_count(const struct credentials *c)
{
    return c != NULL ? c->n : 0;
}

const struct cred_account *credentials_at(const struct credentials *c, size_t i)
{
    return c != NULL && i < c->n ? &c->v[i] : NULL;
}

const struct cred_account *credentials_find(const struct credentials *c, const char *name)
{
    if (c == NULL || c->n == 0 || name == NULL)
        return NULL;
    return bsearch(name, c->v, c->n, sizeof(c->v[0]), cmp_account_key);
}

int credentials_owns(const struct config *cfg, const char *name, const char *domain)
{
    const struct cred_account *a = credentials_find(cfg->credentials, name);
    char *d;
    int owns = 0;

    if (a == NULL || domain == NULL)
        return 0;
    d = normalise_domain(domain);
    if (d == NULL)
        return 0;
    for (size_t i = 0; i < a->ndomains && !owns; i++) {
        size_t dl = strlen(d), ol = strlen(a->domains[i]);
        if (strcmp(d, a->domains[i]) == 0) {
            owns = 1;
        } else if (dl > ol + 1 && d[dl - ol - 1] == '.' &&
                   strcmp(d + dl - ol, a->domains[i]) == 0) {
            /* a subdomain is owned only where the relay domain takes
             * subdomains itself (config_find_domain walks whole labels) */
            const struct cfg_domain *cd = config_find_domain(cfg, d);
            owns = cd != NULL && strcmp(cd->name, a->domains[i]) == 0 && cd->subdomains;
        }
    }
    free(d);
    return owns;
}
