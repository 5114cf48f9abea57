/*
 * recipients: one recipients file as an immutable hash table, and the
 * attaching of those tables to a configuration snapshot (at start-up, or on
 * the thread pool on SIGHUP so the loop never waits for a million-line file).
 * Lines are parsed by lib/recipients_parse.c; whether an unlisted recipient
 * is refused is policy.c's question. Tables are never changed after loading,
 * so lookups need no lock; references are counted on the loop thread only.
 *
 * Layout, chosen for a million entries: the file is read into one buffer and
 * each key is written back into it in place (a key is never longer than its
 * line), so the keys cost at most the file's size; the index is an
 * open-addressing array of 32-bit offsets at a load factor of at most 1/2.
 * The hash is SipHash-2-4 under a random key per table, so a list that a
 * customer supplies cannot be crafted to collide into quadratic loading.
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "recipients.h"
#include "recipients_parse.h"

#define SLOT_EMPTY UINT32_MAX

struct recipients {
    int refs;
    char *path;
    /* what the file was when it was read: unchanged files are not re-read */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    char *keys;      /* NUL-terminated keys, back to back */
    uint32_t *slots; /* offsets into keys, SLOT_EMPTY when free */
    size_t mask;     /* slots - 1 (a power of two minus one) */
    size_t count;
    uint64_t k0, k1; /* SipHash key */
    double load_ms;
};

/* ---- SipHash-2-4 (Aumasson and Bernstein, 2012) ----------------------------------- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash(const char *s, size_t len, uint64_t k0, uint64_t k1)
{
    const unsigned char *in = (const unsigned char *)s;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56, m;
    size_t i, full = len - len % 8;

    for (i = 0; i < full; i += 8) {
        m = 0;
        for (size_t k = 0; k < 8; k++)
            m |= (uint64_t)in[i + k] << (8 * k);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t k = 0; k < len % 8; k++)
        b |= (uint64_t)in[full + k] << (8 * k);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void random_key(uint64_t *k0, uint64_t *k1)
{
    uint64_t k[2];
    struct timespec ts;

    if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
        /* no entropy yet (early boot): still different per process and load */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
        k[1] = (uint64_t)ts.tv_sec * 0xc2b2ae3d27d4eb4fULL ^ (uint64_t)(uintptr_t)k;
    }
    *k0 = k[0];
    *k1 = k[1];
}

/* ---- the table ------------------------------------------------------------------- */

/* The slot holding key, or the free slot where it belongs. */
static size_t probe(const struct recipients *r, const char *key, size_t len)
{
    size_t i = (size_t)siphash(key, len, r->k0, r->k1) & r->mask;

    while (r->slots[i] != SLOT_EMPTY && strcmp(r->keys + r->slots[i], key) != 0)
        i = (i + 1) & r->mask;
    return i;
}

static int lookup(const struct recipients *r, const char *key, size_t len)
{
    return r->slots[probe(r, key, len)] != SLOT_EMPTY;
}

int recipients_match(const struct recipients *r, const char *local, const char *domain)
{
    char key[RECIPIENTS_KEY_MAX];
    int n;

    n = recipients_key(local, domain, key, sizeof(key));
    if (n > 0 && lookup(r, key, (size_t)n))
        return 1;
    n = recipients_key("", domain, key, sizeof(key));
    return n > 0 && lookup(r, key, (size_t)n);
}

size_t recipients_count(const struct recipients *r)
{
    return r->count;
}

struct recipients *recipients_ref(struct recipients *r)
{
    r->refs++;
    return r;
}

static void table_free(struct recipients *r)
{
    if (r == NULL)
        return;
    free(r->path);
    free(r->keys);
    free(r->slots);
    free(r);
}

void recipients_unref(struct recipients *r)
{
    if (r != NULL && --r->refs == 0)
        table_free(r);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The whole file into r->keys (one spare byte for a last line without a
 * newline). A file that grows while it is read is refused, not half-taken. */
static int read_file(struct recipients *r, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    size_t got = 0;
    char extra;
    int fd, rc = -1;

    fd = open(r->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", r->path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", r->path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", r->path);
        goto done;
    }
    if ((uint64_t)st.st_size > RECIPIENTS_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %zu bytes", r->path, RECIPIENTS_FILE_MAX);
        goto done;
    }
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->size = st.st_size;
    r->mtime = st.st_mtim;
    r->keys = malloc((size_t)st.st_size + 1);
    if (r->keys == NULL) {
        snprintf(err, errlen, "%s: out of memory", r->path);
        goto done;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, r->keys + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got != (size_t)st.st_size || read(fd, &extra, 1) != 0) {
        snprintf(err, errlen, "%s: changed while it was being read", r->path);
        goto done;
    }
    *len = got;
    rc = 0;
done:
    close(fd);
    return rc;
}

int recipients_load(const char *path, struct recipients **out, char *err, size_t errlen)
{
    struct recipients *r = calloc(1, sizeof(*r));
    struct timespec t0;
    size_t len = 0, lines = 1, cap = 16, pos = 0, w = 0, lineno = 0;
    char key[RECIPIENTS_KEY_MAX];
    int rc = -1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (r == NULL || (r->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    r->refs = 1;
    if (read_file(r, &len, err, errlen) != 0)
        goto done;
    for (const char *p = r->keys; (p = memchr(p, '\n', len - (size_t)(p - r->keys))) != NULL; p++)
        lines++;
    while (cap < 2 * lines)
        cap *= 2;
    r->slots = malloc(cap * sizeof(*r->slots));
    if (r->slots == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    memset(r->slots, 0xff, cap * sizeof(*r->slots));
    r->mask = cap - 1;
    random_key(&r->k0, &r->k1);
    while (pos < len) {
        const char *line = r->keys + pos, *nl = memchr(line, '\n', len - pos);
        size_t llen = nl != NULL ? (size_t)(nl - line) : len - pos, klen, slot;
        const char *why;
        enum recipients_line kind;

        lineno++;
        kind = recipients_parse_line(line, llen, key, sizeof(key), &why);
        if (kind == RECIPIENTS_LINE_ERROR) {
            snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
            goto done;
        }
        if (kind != RECIPIENTS_LINE_BLANK) {
            klen = strlen(key);
            slot = probe(r, key, klen);
            /* the key goes where this line was (recipients_parse_line: a key is
             * never longer than its line, so w + klen <= pos + llen) */
            if (r->slots[slot] == SLOT_EMPTY) {
                memcpy(r->keys + w, key, klen + 1);
                r->slots[slot] = (uint32_t)w;
                w += klen + 1;
                r->count++;
            }
        }
        pos += llen + 1;
    }
    if (w < len + 1) {
        /* give back what comments, blanks and duplicates took; offsets stay */
        char *k = realloc(r->keys, w > 0 ? w : 1);
        if (k != NULL)
            r->keys = k;
    }
    r->load_ms = ms_since(&t0);
    *out = r;
    r = NULL;
    rc = 0;
done:
    table_free(r);
    return rc;
}

/* ---- attaching tables to a snapshot ---------------------------------------------- */

struct attach_item {
    struct cfg_domain *d;
    int first;                     /* first of the domains that share its file */
    struct recipients *loaded;     /* a new table for the file (first item owns it) */
    const struct recipients *keep; /* an old table to share instead */
    const struct cfg_domain *kept_from;
    char note[600]; /* why the file was not taken */
};

struct attach {
    uv_work_t req;
    struct config *cfg;
    const struct config *old;
    struct attach_item *items;
    size_t n;
    int status;
    char err[600];
    recipients_attach_cb cb;
    void *arg;
};

static int item_cmp(const void *a, const void *b)
{
    const struct attach_item *x = a, *y = b;

    return strcmp(x->d->recipients_file, y->d->recipients_file);
}

static int old_cmp(const void *a, const void *b)
{
    const struct cfg_domain *const *x = a, *const *y = b;

    return strcmp((*x)->recipients_file, (*y)->recipients_file);
}

static int old_key_cmp(const void *key, const void *elt)
{
    const struct cfg_domain *const *d = elt;

    return strcmp(key, (*d)->recipients_file);
}

/* Is the file at r->path still the one r was read from? */
static int unchanged(const struct recipients *r)
{
    struct stat st;

    return stat(r->path, &st) == 0 && st.st_dev == r->dev && st.st_ino == r->ino &&
           st.st_size == r->size && st.st_mtim.tv_sec == r->mtime.tv_sec &&
           st.st_mtim.tv_nsec == r->mtime.tv_nsec;
}

/* The old domain of the same name, if it had a table. */
static const struct cfg_domain *old_same_name(const struct config *old, const char *name)
{
    const struct cfg_domain *d;

    if (old == NULL)
        return NULL;
    d = config_find_domain(old, name);
    return d != NULL && strcmp(d->name, name) == 0 && d->recipients != NULL ? d : NULL;
}

/* Decide and read; touches no reference count (may run on a worker thread). */
static void attach_plan(struct attach *a)
{
    const struct cfg_domain **olds = NULL;
    size_t nolds = 0, i, j;

    a->status = 0;
    for (i = 0; i < a->cfg->ndomains; i++)
        if (a->cfg->domains[i].recipients_file != NULL)
            a->n++;
    if (a->n == 0)
        return;
    a->items = calloc(a->n, sizeof(*a->items));
    if (a->old != NULL && a->old->ndomains > 0)
        olds = calloc(a->old->ndomains, sizeof(*olds));
    if (a->items == NULL || (a->old != NULL && a->old->ndomains > 0 && olds == NULL)) {
        snprintf(a->err, sizeof(a->err), "recipients: out of memory");
        a->status = -1;
        goto done;
    }
    for (i = 0, j = 0; i < a->cfg->ndomains; i++)
        if (a->cfg->domains[i].recipients_file != NULL)
            a->items[j++].d = &a->cfg->domains[i];
    qsort(a->items, a->n, sizeof(*a->items), item_cmp);
    for (i = 0; a->old != NULL && i < a->old->ndomains; i++)
        if (a->old->domains[i].recipients != NULL)
            olds[nolds++] = &a->old->domains[i];
    if (nolds > 0)
        qsort(olds, nolds, sizeof(*olds), old_cmp);

    for (i = 0; i < a->n; i = j) {
        const char *path = a->items[i].d->recipients_file;
        const struct cfg_domain **same = NULL;
        struct recipients *loaded = NULL;
        char why[600];

        for (j = i + 1; j < a->n && strcmp(a->items[j].d->recipients_file, path) == 0; j++)
            ;
        a->items[i].first = 1;
        if (nolds > 0)
            same = bsearch(path, olds, nolds, sizeof(*olds), old_key_cmp);
        if (same != NULL && unchanged((*same)->recipients)) {
            for (size_t k = i; k < j; k++)
                a->items[k].keep = (*same)->recipients;
            continue;
        }
        if (recipients_load(path, &loaded, why, sizeof(why)) == 0) {
            for (size_t k = i; k < j; k++)
                a->items[k].loaded = loaded;
            continue;
        }
        /* a broken file: the list it replaces stays, if there is one */
        for (size_t k = i; k < j; k++) {
            struct attach_item *it = &a->items[k];
            const struct cfg_domain *from =
                same != NULL ? *same : old_same_name(a->old, it->d->name);
            if (from == NULL) {
                snprintf(a->err, sizeof(a->err), "%s", why);
                a->status = -1;
                goto done;
            }
            it->keep = from->recipients;
            it->kept_from = from;
            snprintf(it->note, sizeof(it->note), "%s", why);
        }
    }
done:
    free(olds);
}

/* Hand the tables to the domains (loop thread), or drop them on failure. */
static int attach_apply(struct attach *a, char *err, size_t errlen)
{
    size_t i;

    if (a->status != 0) {
        for (i = 0; i < a->n; i++)
            if (a->items[i].first && a->items[i].loaded != NULL)
                table_free(a->items[i].loaded);
        snprintf(err, errlen, "%s", a->err);
        free(a->items);
        return -1;
    }
    for (i = 0; i < a->n; i++) {
        struct attach_item *it = &a->items[i];
        if (it->keep != NULL) {
            it->d->recipients = recipients_ref((struct recipients *)it->keep);
            if (it->note[0] != '\0')
                log_warn("recipients: %s; domain %s keeps its previous list (%zu entries)",
                         it->note, it->d->name, recipients_count(it->keep));
        } else {
            it->d->recipients = it->first ? it->loaded : recipients_ref(it->loaded);
            if (it->first)
                log_info("recipients: %s: %zu entries loaded in %.0f ms", it->loaded->path,
                         it->loaded->count, it->loaded->load_ms);
        }
    }
    free(a->items);
    return 0;
}

int recipients_attach(struct config *cfg, const struct config *old, char *err, size_t errlen)
{
    struct attach a;

    memset(&a, 0, sizeof(a));
    a.cfg = cfg;
    a.old = old;
    attach_plan(&a);
    return attach_apply(&a, err, errlen);
}

static void attach_work(uv_work_t *req)
{
    attach_plan(req->data);
}

static void attach_after(uv_work_t *req, int status)
{
    struct attach *a = req->data;
    char err[600];
    int rc;

    (void)status; /* the work is never cancelled */
    rc = attach_apply(a, err, sizeof(err));
    a->cb(a->cfg, rc, rc == 0 ? NULL : err, a->arg);
    free(a);
}

int recipients_attach_async(uv_loop_t *loop, struct config *cfg, const struct config *old,
                            recipients_attach_cb cb, void *arg)
{
    struct attach *a = calloc(1, sizeof(*a));
    int rc;

    if (a == NULL)
        return UV_ENOMEM;
    a->cfg = cfg;
    a->old = old;
    a->cb = cb;
    a->arg = arg;
    a->req.data = a;
    rc = uv_queue_work(loop, &a->req, attach_work, attach_after);
    if (rc != 0)
        free(a);
    return rc;
}
