/*
 * fuzz_config: libFuzzer target for relayd.conf(5) as relayd/config.c reads
 * it (lines, sections, includes, every key's value parser, the checks
 * across keys, and the credentials file the configuration names).
 * config_load reads a file, so each input is written to relayd.conf in a
 * private directory (under /dev/shm, else TMPDIR) that also holds what a
 * configuration may name: an include directory, a file to include, a
 * credentials file, a recipients file and a certificate. Inputs that name
 * anything outside it are skipped: a value of `include` or of a path key
 * containing '/' or "..". What must hold: a load fails with a
 * "file:line: problem" message, or succeeds and what `relayd -n` and
 * `relayd -n -a` print loads back to the same configuration.
 * State between inputs: only the directory; replay.c drives it too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Longer inputs are cut: a line is at most CFG_MAX_LINE, and a few lines
 * past it say all there is to say. */
#define FUZZ_MAX_INPUT (3 * CFG_MAX_LINE)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static char dir[4096]; /* the private directory, "" until made */

/* What a configuration may name, relative to its own directory. */
static const struct {
    const char *name; /* ends in '/': a directory */
    const char *text;
} fixtures[] = {
    {"inc/", NULL},
    {"inc/10-customer.conf", "[domain inc.example]\nmode = retry\nroute = mx\n"},
    {"inc/20-queue.conf", "[queue incq]\ndomains = inc.example\n"},
    {"inc/notes.txt", "not a config file\n"},
    {"extra.conf", "max_connections = 77\n# a comment\n"},
    {"creds", "site1:{plain}secret:example.org,inc.example\n"
              "site2:$6$salt$hash:example.net\n"},
    {"rcpts", "bob@example.org\n@example.net\n"},
    {"cert.pem", "not really a certificate\n"},
};

static void write_file(const char *path, const void *text, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    CHECK(fd >= 0);
    CHECK(write(fd, text, len) == (ssize_t)len);
    CHECK(close(fd) == 0);
}

static void path_of(char *out, size_t outlen, const char *name)
{
    CHECK((size_t)snprintf(out, outlen, "%s/%s", dir, name) < outlen);
}

/* Remove the directory at exit (in reverse order: files before their dir). */
static void cleanup(void)
{
    char p[4200];

    path_of(p, sizeof(p), "relayd.conf");
    unlink(p);
    path_of(p, sizeof(p), "printed.conf");
    unlink(p);
    for (size_t i = sizeof(fixtures) / sizeof(fixtures[0]); i-- > 0;) {
        path_of(p, sizeof(p), fixtures[i].name);
        if (fixtures[i].text == NULL)
            rmdir(p);
        else
            unlink(p);
    }
    rmdir(dir);
}

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    struct stat st;
    char p[4200];

    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
        base = "/dev/shm";
    else if (base == NULL || *base == '\0')
        base = "/tmp";
    CHECK((size_t)snprintf(dir, sizeof(dir), "%s/fuzz_config.XXXXXX", base) < sizeof(dir));
    CHECK(mkdtemp(dir) != NULL);
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
        path_of(p, sizeof(p), fixtures[i].name);
        if (fixtures[i].text == NULL)
            CHECK(mkdir(p, 0700) == 0);
        else
            write_file(p, fixtures[i].text, strlen(fixtures[i].text));
    }
    atexit(cleanup);
}

/* Is key (trimmed as config.c trims it) one that names a file? */
static int names_file(const char *key, size_t len)
{
    const struct {
        const struct cfg_key *keys;
        const size_t *n;
    } scopes[] = {{config_global_keys, &config_nglobal},
                  {config_domain_keys, &config_ndomain},
                  {config_queue_keys, &config_nqueue}};

    while (len > 0 && (*key == ' ' || *key == '\t'))
        key++, len--;
    while (len > 0 && (key[len - 1] == ' ' || key[len - 1] == '\t'))
        len--;
    if (len == 7 && memcmp(key, "include", 7) == 0)
        return 1;
    for (size_t s = 0; s < sizeof(scopes) / sizeof(scopes[0]); s++)
        for (size_t i = 0; i < *scopes[s].n; i++)
            if (scopes[s].keys[i].type == T_PATH && strlen(scopes[s].keys[i].name) == len &&
                memcmp(scopes[s].keys[i].name, key, len) == 0)
                return 1;
    return 0;
}

/* Does any line give a file key a value that may leave the directory?
 * Stricter than config.c: the whole rest of the line counts as the value. */
static int leaves_dir(const char *s, size_t n)
{
    size_t start = 0;

    while (start < n) {
        const char *nl = memchr(s + start, '\n', n - start);
        size_t end = nl ? (size_t)(nl - s) : n;
        const char *eq = memchr(s + start, '=', end - start);
        if (eq != NULL && names_file(s + start, (size_t)(eq - (s + start)))) {
            const char *v = eq + 1;
            size_t vl = (size_t)(s + end - v);
            if (memchr(v, '/', vl) != NULL)
                return 1;
            for (size_t i = 0; i + 1 < vl; i++)
                if (v[i] == '.' && v[i + 1] == '.')
                    return 1;
        }
        start = end + 1;
    }
    return 0;
}

/* relayd -n (all = 0) or -n -a (all = 1) of cfg, as a malloc'd string. */
static char *print(const struct config *cfg, int all, size_t *len)
{
    char *text = NULL;
    FILE *fp = open_memstream(&text, len);

    CHECK(fp != NULL);
    config_print(cfg, fp, all);
    CHECK(fclose(fp) == 0);
    return text;
}

/* Load text as a configuration of its own; its -n -a must be want. */
static void reload(const char *text, size_t len, const char *want)
{
    char p[4200], err[1024];
    struct config *again = NULL;
    char *got;
    size_t glen;

    path_of(p, sizeof(p), "printed.conf");
    write_file(p, text, len);
    if (config_load(p, &again, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_config: printed configuration does not load: %s\n", err);
        abort();
    }
    got = print(again, 1, &glen);
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "fuzz_config: printed configuration loads differently:\n%s\n---\n%s\n",
                want, got);
        abort();
    }
    free(got);
    config_unref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char p[4200], err[1024];
    struct config *cfg = NULL;
    char *all, *changed;
    size_t alen, clen;

    if (dir[0] == '\0')
        setup();
    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    if (leaves_dir((const char *)data, size))
        return 0;
    path_of(p, sizeof(p), "relayd.conf");
    write_file(p, data, size);
    err[0] = 'x';
    if (config_load(p, &cfg, err, sizeof(err)) != 0) {
        /* "file:line: problem" or "file: problem", and nothing loaded */
        CHECK(cfg == NULL && err[0] == '/' && strchr(err, ':') != NULL);
        CHECK(strnlen(err, sizeof(err)) < sizeof(err));
        return 0;
    }
    CHECK(cfg != NULL && err[0] == '\0');
    all = print(cfg, 1, &alen);
    changed = print(cfg, 0, &clen);
    reload(all, alen, all);
    reload(changed, clen, all);
    free(all);
    free(changed);
    config_unref(cfg);
    return 0;
}
