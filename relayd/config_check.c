/*
 * config_check: what `relayd -t` checks beyond the syntax config_load has
 * already checked, as `postfix check` does: the things that would make a
 * start or a reload fail. The user exists; every file relayd reads (keys
 * marked F_READ) is readable by that user; the queue's directory is usable
 * by it and closed to others; a relay domain without a recipients list is
 * worth a warning (backscatter). It reports; it changes nothing and opens no
 * socket or database. Permissions are judged from the mode bits, owner and
 * groups (ACLs are not read).
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "config_int.h"
#include "credentials.h"

#define CHECK_MAX_GROUPS 256

/* Whose access is judged: relayd's user after the privilege drop. */
struct who {
    uid_t uid;
    gid_t groups[CHECK_MAX_GROUPS];
    int ngroups;
    const char *name;
};

struct report {
    FILE *out;
    int status; /* the first error's exit status, 0 without one */
    int warnings;
};

static void error(struct report *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void error(struct report *r, int status, const char *fmt, ...)
{
    va_list ap;

    fputs("relayd: ", r->out);
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fputc('\n', r->out);
    if (r->status == 0)
        r->status = status;
}

static void warning(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warning(struct report *r, const char *fmt, ...)
{
    va_list ap;

    fputs("relayd: warning: ", r->out);
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fputc('\n', r->out);
    r->warnings++;
}

/* want: 4 read, 2 write, 1 search/execute, combined. */
static int may(const struct who *w, const struct stat *st, unsigned want)
{
    unsigned bits;

    if (w->uid == 0)
        return (want & 1) == 0 || (st->st_mode & 0111) || S_ISDIR(st->st_mode);
    if (st->st_uid == w->uid) {
        bits = (st->st_mode >> 6) & 7;
    } else {
        int in_group = 0;
        for (int i = 0; i < w->ngroups; i++)
            in_group |= w->groups[i] == st->st_gid;
        bits = in_group ? (st->st_mode >> 3) & 7 : st->st_mode & 7;
    }
    return (bits & want) == want;
}

/* Every directory on the way to path (absolute) must be searchable. Returns
 * 0, or -1 with the directory that is not in blocked. */
static int may_reach(const struct who *w, const char *path, char *blocked, size_t len)
{
    char dir[PATH_MAX];
    struct stat st;

    if (strlen(path) >= sizeof(dir))
        return -1;
    for (const char *p = strchr(path + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        size_t n = (size_t)(p - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
        if (stat(dir, &st) == 0 && !may(w, &st, 1)) {
            snprintf(blocked, len, "%s", dir);
            return -1;
        }
    }
    if (stat("/", &st) == 0 && !may(w, &st, 1)) {
        snprintf(blocked, len, "/");
        return -1;
    }
    return 0;
}

static void check_readable(struct report *r, const struct who *w, const char *what,
                           const char *path)
{
    char blocked[PATH_MAX];
    struct stat st;

    if (stat(path, &st) != 0) {
        error(r, EX_CONFIG, "%s %s: %s", what, path, strerror(errno));
        return;
    }
    if (may_reach(w, path, blocked, sizeof(blocked)) != 0)
        error(r, EX_CONFIG, "%s %s: user %s cannot enter %s", what, path, w->name, blocked);
    else if (!may(w, &st, 4))
        error(r, EX_CONFIG, "%s %s: not readable by user %s (mode %04o, owner %u)", what, path,
              w->name, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
}

static void check_read_keys(struct report *r, const struct who *w, const void *base,
                            const struct cfg_key *keys, size_t n, const char *section)
{
    for (size_t i = 0; i < n; i++) {
        const char *path;
        char what[300];
        /* only F_READ keys are T_PATH: read the field as a pointer after the test */
        if (!(keys[i].flags & F_READ))
            continue;
        path = *(char *const *)((const char *)base + keys[i].off);
        if (path == NULL)
            continue;
        snprintf(what, sizeof(what), "%s%s%s", section, section[0] ? " " : "", keys[i].name);
        check_readable(r, w, what, path);
    }
}

/* What a start as root refuses (datadir.c, spool.c; relayd(8) SECURITY
 * CONSIDERATIONS): a directory reached through a symbolic link or owned by
 * neither root nor the user, and a spool that is a symbolic link, not a
 * directory, or owned by someone else. 0, or -1 after reporting it. */
static int check_as_root(struct report *r, const struct who *w, const char *db, const char *dir,
                         const struct stat *st)
{
    char spool[PATH_MAX];
    struct stat lst;

    if (lstat(dir, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        error(r, EX_CANTCREAT, "database %s: %s is a symbolic link: name the real directory", db,
              dir);
        return -1;
    }
    if (st->st_uid != 0 && st->st_uid != w->uid) {
        error(r, EX_CANTCREAT, "database %s: %s belongs to uid %u, neither root nor user %s", db,
              dir, (unsigned)st->st_uid, w->name);
        return -1;
    }
    if (snprintf(spool, sizeof(spool), "%s.spool", db) >= (int)sizeof(spool) ||
        lstat(spool, &lst) != 0)
        return 0;
    if (!S_ISDIR(lst.st_mode)) {
        error(r, EX_CANTCREAT, "database %s: %s is %s", db, spool,
              S_ISLNK(lst.st_mode) ? "a symbolic link" : "not a directory");
        return -1;
    }
    if (lst.st_uid != w->uid && !(lst.st_uid == 0 && !(lst.st_mode & 022))) {
        error(r, EX_CANTCREAT, "database %s: %s belongs to uid %u, not to user %s", db, spool,
              (unsigned)lst.st_uid, w->name);
        return -1;
    }
    return 0;
}

/* The database's directory: relayd creates what is missing (as root before
 * dropping privileges, or as the user), and takes over a directory that is
 * root's and writable by nobody else, as systemd's StateDirectory= makes
 * it. Anything else must already let the user write. */
static void check_database(struct report *r, const struct who *w, const char *db, int as_root)
{
    char dir[PATH_MAX], blocked[PATH_MAX];
    struct stat st;
    char *slash;
    int exists = 1; /* the database's own directory, not an ancestor */

    if (strlen(db) >= sizeof(dir))
        return;
    strcpy(dir, db);
    slash = strrchr(dir, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    if (dir[0] == '\0')
        strcpy(dir, "/");
    /* the nearest directory that exists: relayd creates the rest */
    while (stat(dir, &st) != 0) {
        if (errno != ENOENT) {
            error(r, EX_CANTCREAT, "database %s: %s: %s", db, dir, strerror(errno));
            return;
        }
        slash = strrchr(dir, '/');
        if (slash == NULL || slash == dir) {
            strcpy(dir, "/");
            if (stat(dir, &st) != 0)
                return;
            break;
        }
        *slash = '\0';
        exists = 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        error(r, EX_CANTCREAT, "database %s: %s is not a directory", db, dir);
        return;
    }
    if (exists && geteuid() == 0 && check_as_root(r, w, db, dir, &st) != 0)
        return;
    if (st.st_mode & S_IWOTH) {
        error(r, EX_CANTCREAT, "database %s: %s is writable by everyone (mode %04o)", db, dir,
              (unsigned)(st.st_mode & 07777));
        return;
    }
    if (may_reach(w, dir, blocked, sizeof(blocked)) != 0) {
        error(r, EX_CANTCREAT, "database %s: user %s cannot enter %s", db, w->name, blocked);
        return;
    }
    if (!may(w, &st, 2 | 1) && !(as_root && st.st_uid == 0 && !(st.st_mode & 022)))
        error(r, EX_CANTCREAT, "database %s: user %s cannot write in %s (mode %04o, owner %u)", db,
              w->name, dir, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
    else if (exists && (st.st_mode & 007))
        warning(r, "database %s: %s is open to others (mode %04o): make it 0700 or 0750", db, dir,
                (unsigned)(st.st_mode & 07777));
    if (stat(db, &st) == 0 && !may(w, &st, 4 | 2) && !(as_root && st.st_uid == 0))
        error(r, EX_CANTCREAT, "database %s: not readable and writable by user %s", db, w->name);
}

/* The accounts: the file holds secrets, so others must not read it; each
 * account's mechanisms (a crypt hash serves PLAIN and LOGIN only), and
 * domains it owns that relayd does not relay (nothing to ETRN or ATRN). */
static void check_credentials(struct report *r, const struct config *cfg)
{
    const struct credentials *c = cfg->credentials;
    int auth_etrn = cfg->etrn_access_auth;

    for (size_t i = 0; i < cfg->ndomains; i++)
        auth_etrn |= cfg->domains[i].etrn_access_auth;
    /* etrn_access = auth needs an account, and AUTH where ETRN is spoken */
    if (auth_etrn && c == NULL)
        warning(r, "etrn_access lists auth but credentials is not set: only the listed "
                   "networks can ETRN those domains");
    else if (auth_etrn && !cfg->smtpd_auth)
        warning(r, "etrn_access lists auth but smtpd_auth = no: nobody can authenticate where "
                   "ETRN is taken");
    /* RFC 2645: ATRN needs an account that owns the domain */
    if (cfg->nodmr_listen > 0 && c == NULL)
        warning(r, "odmr_listen is set but credentials is not: every ATRN gets 530");
    for (size_t i = 0; i < cfg->ndomains; i++) {
        const struct cfg_domain *d = &cfg->domains[i];
        int owned = 0;
        for (size_t k = 0; c != NULL && k < credentials_count(c) && !owned; k++)
            owned = credentials_owns(cfg, credentials_at(c, k)->name, d->name);
        if (d->route_odmr && (!owned || cfg->nodmr_listen == 0))
            warning(r, "[domain %s] has route = odmr but %s: its mail can only wait and expire",
                    d->name,
                    cfg->nodmr_listen == 0 ? "odmr_listen is not set" : "no account owns it");
    }
    if (c == NULL)
        return;
    if (credentials_others_can_read(c))
        warning(r, "credentials %s: readable or writable by others: make it 0640 or 0600",
                cfg->credentials_file);
    for (size_t i = 0; i < credentials_count(c); i++) {
        const struct cred_account *a = credentials_at(c, i);
        char mechs[128];
        cred_line_mech_names(a->mechs, mechs, sizeof(mechs));
        const char *problem = credentials_hash_problem(a);
        fprintf(r->out, "relayd: credentials %s:%d: account %s can use %s\n", cfg->credentials_file,
                a->line, a->name, mechs);
        if (problem != NULL)
            warning(r, "credentials %s:%d: account %s: %s", cfg->credentials_file, a->line, a->name,
                    problem);
        for (size_t j = 0; j < a->ndomains; j++) {
            if (config_find_domain(cfg, a->domains[j]) == NULL)
                warning(r, "credentials %s:%d: account %s owns %s, which is not a relay domain",
                        cfg->credentials_file, a->line, a->name, a->domains[j]);
        }
    }
}

int config_check(const struct config *cfg, FILE *out)
{
    struct report r = {out, 0, 0};
    struct who w;
    int as_root = geteuid() == 0;

    memset(&w, 0, sizeof(w));
    if (cfg->user != NULL) {
        struct passwd *pw = getpwnam(cfg->user);
        if (pw == NULL) {
            error(&r, EX_NOUSER, "user %s: no such user", cfg->user);
            return r.status;
        }
        if (!as_root && pw->pw_uid != geteuid()) {
            error(&r, EX_NOPERM, "user %s: relayd must be started as root to become it", cfg->user);
            return r.status;
        }
        w.uid = pw->pw_uid;
        w.name = cfg->user;
        w.ngroups = CHECK_MAX_GROUPS;
        if (getgrouplist(pw->pw_name, pw->pw_gid, w.groups, &w.ngroups) < 0) {
            w.groups[0] = pw->pw_gid;
            w.ngroups = 1;
        }
    } else {
        struct passwd *pw = getpwuid(geteuid());
        w.uid = geteuid();
        w.name = pw != NULL ? pw->pw_name : "(this user)";
        w.ngroups = getgroups(CHECK_MAX_GROUPS - 1, w.groups);
        if (w.ngroups < 0)
            w.ngroups = 0;
        w.groups[w.ngroups++] = getegid();
    }
    check_read_keys(&r, &w, cfg, config_global_keys, config_nglobal, "");
    for (size_t i = 0; i < cfg->ndomains; i++) {
        char section[300];
        snprintf(section, sizeof(section), "[domain %s]", cfg->domains[i].name);
        check_read_keys(&r, &w, &cfg->domains[i], config_domain_keys, config_ndomain, section);
        if (cfg->domains[i].recipients_file == NULL)
            warning(&r,
                    "domain %s has no recipients list: every local part is accepted, and "
                    "what the site refuses is bounced to the sender (backscatter)",
                    cfg->domains[i].name);
    }
    check_database(&r, &w, cfg->database, as_root && cfg->user != NULL);
    check_credentials(&r, cfg);
    return r.status;
}

int config_check_user(const struct config *cfg, char *err, size_t errlen)
{
    if (cfg->user != NULL && getpwnam(cfg->user) == NULL) {
        snprintf(err, errlen, "user %s: no such user", cfg->user);
        return EX_NOUSER;
    }
    return 0;
}
