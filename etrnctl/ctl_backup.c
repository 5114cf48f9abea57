/*
 * ctl_backup: `etrnctl backup [--force] FILE`, an online copy of relayd's
 * queue. relayd makes the copy (SQLite's backup API, one snapshot, while
 * mail flows) and streams it as base64 records; this file writes them to a
 * private temporary file beside FILE (0600), checks the copy, makes it
 * durable and only then gives it FILE's name (link, or rename with
 * --force), so FILE is never a part of a copy. It links no SQLite: the
 * check is structural (see verify_copy); relayd(8) BACKUP says how to run
 * PRAGMA integrity_check on it and how to restore.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base64.h"
#include "ctl_cmd.h"

/* A copy of a big queue takes a while before its first byte: relayd says
 * nothing until the snapshot is copied. */
#define BACKUP_TIMEOUT 3600.0

struct backup {
    struct ctx *cx;
    int fd;
    uint64_t size; /* announced */
    uint64_t got;  /* written */
    int sized;
    unsigned char *dec;
    size_t decmax;
};

static void usage_backup(FILE *fp)
{
    fprintf(fp, "usage: etrnctl backup [--force] FILE\n");
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* {"backup_size":N} first, then {"offset":O,"data":"..."} in order. */
static int backup_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct backup *b = arg;
    struct json_object *data;
    const char *s;
    size_t len;
    long n;

    (void)raw;
    if (!b->sized) {
        if (ctl_jint(rec, "backup_size") <= 0) {
            etrnctl_warn("relayd sent no backup size");
            return EX_PROTOCOL;
        }
        b->size = (uint64_t)ctl_jint(rec, "backup_size");
        b->sized = 1;
        return 0;
    }
    if (!json_object_object_get_ex(rec, "data", &data) ||
        !json_object_is_type(data, json_type_string) || ctl_jint(rec, "offset") < 0 ||
        (uint64_t)ctl_jint(rec, "offset") != b->got) {
        etrnctl_warn("relayd sent a piece of the copy out of order");
        return EX_PROTOCOL;
    }
    s = json_object_get_string(data);
    len = (size_t)json_object_get_string_len(data);
    if (BASE64_DECODED_MAX(len) > b->decmax) {
        unsigned char *p = realloc(b->dec, BASE64_DECODED_MAX(len));
        if (p == NULL) {
            etrnctl_warn("out of memory");
            return EX_SOFTWARE;
        }
        b->dec = p;
        b->decmax = BASE64_DECODED_MAX(len);
    }
    n = base64_decode(s, len, b->dec);
    if (n < 0 || b->got + (uint64_t)n > b->size) {
        etrnctl_warn("relayd sent a damaged piece of the copy");
        return EX_PROTOCOL;
    }
    if (write_all(b->fd, b->dec, (size_t)n) != 0) {
        etrnctl_warn("cannot write the copy: %s", strerror(errno));
        return EX_IOERR;
    }
    b->got += (uint64_t)n;
    return 0;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * The copy is a whole SQLite database (https://sqlite.org/fileformat.html
 * §1.3): the 16-byte magic string, a page size that is a power of two from
 * 512 to 65536, an in-header page count that is valid (the version-valid-for
 * number equals the change counter) and that, times the page size, is the
 * file's size, which is also what relayd announced and sent. What it does
 * not check - every page's contents - PRAGMA integrity_check does.
 */
static int verify_copy(int fd, uint64_t size, char *why, size_t whylen)
{
    unsigned char h[100];
    uint32_t page, pages;
    struct stat sb;

    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != size) {
        snprintf(why, whylen, "its size is not the %" PRIu64 " bytes relayd sent", size);
        return -1;
    }
    if (size < sizeof(h) || pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
        memcmp(h, "SQLite format 3", 16) != 0) {
        snprintf(why, whylen, "it does not start with an SQLite header");
        return -1;
    }
    page = (uint32_t)h[16] << 8 | h[17];
    if (page == 1)
        page = 65536;
    if (page < 512 || (page & (page - 1)) != 0) {
        snprintf(why, whylen, "its page size %" PRIu32 " is not valid", page);
        return -1;
    }
    pages = be32(h + 28);
    if (be32(h + 24) != be32(h + 92) || (uint64_t)pages * page != size) {
        snprintf(why, whylen,
                 "its header says %" PRIu32 " pages of %" PRIu32 " bytes, not %" PRIu64 " bytes",
                 pages, page, size);
        return -1;
    }
    return 0;
}

/* The directory of path, for the temporary file and the fsync after the
 * name changes. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int ctl_backup(struct ctx *cx, int argc, char **argv)
{
    enum { O_FORCE = ETRNCTL_OPT_FIRST_LOCAL };
    static const struct option longopts[] = {
        ETRNCTL_GLOBAL_LONGOPTS, {"force", no_argument, NULL, O_FORCE}, {NULL, 0, NULL, 0}};
    struct backup b = {.cx = cx, .fd = -1};
    struct ctl_client_req req = {0};
    struct stat sb;
    char *dir = NULL, *tmp = NULL, why[160];
    const char *file;
    int force = 0, c, st = EX_SOFTWARE, dfd;
    size_t n;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == O_FORCE) {
            force = 1;
        } else if (!etrnctl_global_opt(c, optarg, cx->o, usage_backup)) {
            usage_backup(stderr);
            return EX_USAGE;
        }
    }
    if (optind + 1 != argc)
        return ctl_usage_error(usage_backup, "%s", "backup takes exactly one FILE");
    file = argv[optind];
    if (!force && lstat(file, &sb) == 0) {
        etrnctl_warn("%s exists; --force replaces it", file);
        return EX_CANTCREAT;
    }
    dir = dir_of(file);
    n = strlen(file) + 16;
    tmp = malloc(n);
    if (dir == NULL || tmp == NULL) {
        etrnctl_warn("out of memory");
        goto done;
    }
    /* beside FILE, so the rename stays on one file system; mkstemp makes
     * it 0600 and new (O_EXCL) */
    snprintf(tmp, n, "%s.tmpXXXXXX", file);
    b.fd = mkstemp(tmp);
    if (b.fd < 0) {
        etrnctl_warn("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        st = EX_CANTCREAT;
        goto done;
    }
    if (fchmod(b.fd, 0600) != 0 || ctl_client_req_init(&req, "backup") != 0) {
        etrnctl_warn("cannot prepare %s: %s", tmp, strerror(errno));
        goto done;
    }
    st = ctl_client_call(cx->o->socket, &req, BACKUP_TIMEOUT, cx->o->verbose, backup_cb, &b, NULL,
                         0);
    if (st != 0)
        goto done;
    if (!b.sized || b.got != b.size) {
        etrnctl_warn("relayd sent %" PRIu64 " of %" PRIu64 " bytes", b.got, b.size);
        st = EX_PROTOCOL;
        goto done;
    }
    if (verify_copy(b.fd, b.size, why, sizeof(why)) != 0) {
        etrnctl_warn("the copy is not a whole database: %s", why);
        st = EX_DATAERR;
        goto done;
    }
    if (fsync(b.fd) != 0) {
        etrnctl_warn("cannot write %s: %s", tmp, strerror(errno));
        st = EX_IOERR;
        goto done;
    }
    /* without --force, link() fails if FILE appeared meanwhile: never
     * replace what the operator did not ask to replace */
    if (force ? rename(tmp, file) != 0 : link(tmp, file) != 0) {
        etrnctl_warn("cannot create %s: %s", file, strerror(errno));
        st = errno == EEXIST ? EX_CANTCREAT : EX_IOERR;
        goto done;
    }
    if (!force)
        unlink(tmp);
    free(tmp);
    tmp = NULL;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the new name is durable too */
        fsync(dfd);
        close(dfd);
    }
    if (!cx->o->quiet)
        printf("%s: %" PRIu64 " bytes, a whole SQLite database\n", file, b.size);
    st = 0;
done:
    if (b.fd >= 0)
        close(b.fd);
    if (tmp != NULL)
        unlink(tmp);
    free(tmp);
    free(dir);
    free(b.dec);
    ctl_client_req_free(&req);
    fflush(stdout);
    return st;
}
