/*
 * control_int: what control.c (the protocol: socket, connections, framing,
 * request parsing, JSON records, permissions) and control_cmd.c (the
 * commands) share; private to those control*.c files, nothing else may
 * include it (users include control.h). The connection, the command table's
 * entry type, the JSON record writer (jw_*) and the helpers a command uses
 * to read its arguments and to answer.
 */
#ifndef RELAYD_CONTROL_INT_H
#define RELAYD_CONTROL_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "buf.h"
#include "header_end.h"
#include "store.h"

struct ctl_conn;

/* What `show` sends of the message (part=): all of it, the header section
 * (postcat -h) or the body (postcat -b). */
enum { CTL_SHOW_ALL = 0, CTL_SHOW_HEADER, CTL_SHOW_BODY };

/* One command: its name, whether only root (and relayd's own user) may run
 * it, the keys it takes (space separated), and what runs it. */
struct ctl_cmd {
    const char *name;
    int root_only;
    const char *keys;
    void (*run)(struct ctl_conn *k);
};

struct ctl_arg {
    char *key; /* decoded, NUL-terminated, inside the request buffer */
    char *value;
};

struct control {
    struct server *srv;
    uv_pipe_t pipe;
    int pipe_open; /* the listening handle is not yet closed */
    int closing;   /* control_close was called */
    char *path;
    dev_t dev; /* the socket file we made: unlinked at close only if */
    ino_t ino; /* it is still ours */
    struct ctl_conn *conns;
    unsigned nconns;
    unsigned long long next_id;
    int64_t started; /* for `stats` uptime */
};

/* A record being written: commas between members come from first. */
struct jw {
    struct ctl_conn *k;
    int first[4];
    int depth;
};

/* One connection, from accept until both handles are closed and no store
 * or bounce callback is outstanding (busy). */
struct ctl_conn {
    struct ctl_conn *next, *prev;
    struct control *c;
    unsigned long long id;
    uv_pipe_t pipe;
    uv_timer_t timer;
    int handles; /* open handles: the conn is freed when 0 and busy is 0 */
    int busy;    /* callbacks outstanding (store, bounce) */
    int closed;  /* ctl_close ran: nothing new may start */
    int reading;
    int working; /* the command runs: no timeout */
    uid_t uid;
    pid_t pid;
    int privileged;
    /* the request: req is malloc'd, args point into it */
    char *req;
    size_t reqlen;
    const struct ctl_cmd *cmd;
    struct ctl_arg *args;
    size_t nargs;
    /* output: records are appended to out; wout is being written */
    struct buf out, wout;
    size_t woff, wlen;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int writing;
    int lingering; /* all written: reading what is left until the client closes */
    int finished;  /* the final line is in out: close once it is written */
    int out_failed;
    void (*on_drain)(struct ctl_conn *k); /* continue once out is written */
    /* command state */
    const char **ids; /* the id= values */
    size_t nids, idx;
    struct store_list_opts lo;
    int64_t remaining; /* records a listing may still write */
    char *domain;      /* normalised domain argument (malloc'd) */
    int subdomains;
    enum store_op op; /* hold, release, delete, requeue */
    char **fdomains;  /* flush id=: the domains of the named messages, sorted */
    size_t nfdomains;
    int64_t count;
    int64_t found;
    struct store_batch *batch; /* bounce: the message being returned */
    struct jw sw;              /* show: the record, open while its body streams */
    int64_t show_id;           /* show: the message, and how much of its body is out */
    uint64_t show_off;
    int show_part;               /* show: CTL_SHOW_ALL, _HEADER or _BODY */
    struct header_end show_he;   /* show: where the header ends, once seen */
    struct store_backup *backup; /* backup: the copy being made or sent, */
    uint64_t backup_size;        /* its size, */
    uint64_t backup_off;         /* and how much of it is out */
};

/* control.c: connections and their end */
void ctl_close(struct ctl_conn *k);
void ctl_conn_maybe_free(struct ctl_conn *k);
void ctl_pump(struct ctl_conn *k);
void ctl_finish(struct ctl_conn *k, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int ctl_back(struct ctl_conn *k);
int64_t ctl_now_unix(void);

/* control.c: the request's arguments */
const char *ctl_arg_value(const struct ctl_conn *k, const char *key);
int ctl_parse_num(const char *s, int64_t *v);
int ctl_parse_flag(const char *s);
int ctl_take_domain(struct ctl_conn *k, const char *d);

/* control.c: one JSON record into the connection's output (RFC 8259) */
void jw_begin(struct jw *w, struct ctl_conn *k);
void jw_end(struct jw *w);
void jw_open(struct jw *w, const char *key, char ch);
void jw_close(struct jw *w, char ch);
void jw_strn(struct jw *w, const char *key, const char *s, size_t len);
void jw_str(struct jw *w, const char *key, const char *s);
void jw_int(struct jw *w, const char *key, int64_t v);
void jw_time(struct jw *w, const char *key, int64_t v);
void jw_bool(struct jw *w, const char *key, int v);
void jw_str_open(struct jw *w, const char *key);
/* Escapes s into the record, holding back a UTF-8 sequence cut at its end
 * while more follows; returns the bytes of s written. */
size_t jw_str_part(struct jw *w, const char *s, size_t len, int more);
void jw_str_close(struct jw *w);

/* control_backup.c: etrnctl backup */
void ctl_cmd_backup(struct ctl_conn *k);

/* control_cmd.c: the command called name, or NULL */
const struct ctl_cmd *ctl_cmd_find(const char *name);

#endif /* RELAYD_CONTROL_INT_H */
