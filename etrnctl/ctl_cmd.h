/*
 * ctl_cmd: what the operator's commands share (private to etrnctl/ctl_*.c):
 * the per-command context, JSON field access, a small aligned table, the
 * call to relayd's control socket and the formatting of times and counts.
 */
#ifndef RELAYD_CTL_CMD_H
#define RELAYD_CTL_CMD_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <json-c/json.h>

#include "ctl_client.h"
#include "etrnctl.h"

#define CTL_TIMEOUT 60.0 /* seconds of silence from relayd before giving up */
/* Ids per request for `delete -` and friends: well under the 64 KiB line. */
#define IDS_PER_REQUEST_BYTES 60000

#define TABLE_MAX_COLS 16

struct table {
    size_t ncols;
    size_t nrows;
    size_t cap;
    char **cells;                  /* nrows * ncols, owned */
    int right[TABLE_MAX_COLS];     /* right-align this column (numbers) */
    int wide_only[TABLE_MAX_COLS]; /* shown only with --wide */
    int shrink[TABLE_MAX_COLS];    /* may be cut to fit the width (text) */
};

struct idcmd {
    const char *name;  /* request command */
    const char *field; /* counter in the answer: "held", "deleted", ... */
    int allow_domain;  /* --domain D */
    int allow_all;     /* ALL / --all */
    int need_target;   /* ids, a domain or all are required */
};

struct ctx {
    struct etrnctl_opts *o;
    int count;               /* records seen */
    struct json_object *all; /* records kept for a second pass (array), or NULL */
    int mode;                /* per command */
    int64_t sum;
    time_t now;
    struct table *table;       /* domains: rows collected while records arrive */
    const struct idcmd *idcmd; /* hold/release/...: which counter to add up */
    int content_only;          /* show --headers/--body: no envelope lines */
};

/* ctl_cmd.c: plumbing */
const char *ctl_jstr(struct json_object *o, const char *key);
const char *ctl_jstr0(struct json_object *o, const char *key);
int64_t ctl_jint(struct json_object *o, const char *key);
int ctl_jbool(struct json_object *o, const char *key);
void ctl_put_clean(FILE *fp, const char *s);
void ctl_table_init(struct table *t, size_t ncols);
int ctl_table_row(struct table *t, const char *const *cols);
/* Print the table; width 0: as wide as the contents, else fit it into
 * width columns by leaving out wide_only columns and cutting shrink ones
 * (a cut cell ends in '~'). */
void ctl_table_print(const struct table *t, FILE *fp, size_t width);
#define CTL_TABLE_WIDTH 80
void ctl_table_free(struct table *t);
int ctl_keep_cb(void *arg, struct json_object *rec, const char *raw);
int ctl_call(struct ctx *cx, const struct ctl_client_req *req, ctl_client_record_cb cb);
int ctl_simple_call(struct ctx *cx, const char *command, ctl_client_record_cb cb);
void ctl_fmt_time(int64_t t, char *out, size_t outlen);
void ctl_fmt_rel(const struct ctx *cx, int64_t t, char *out, size_t outlen);
void ctl_fmt_i64(int64_t v, char *out, size_t outlen);
int ctl_usage_error(void (*usage)(FILE *), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int ctl_valid_id(const char *s);
/* How full a domain record's quota is, in percent of the fuller of its
 * two limits; -1 without a quota. */
double ctl_quota_percent(struct json_object *rec);
int ctl_no_args(struct ctx *cx, int argc, char **argv, void (*usage)(FILE *));

/* ctl_list.c: what is queued */
int ctl_queue(struct ctx *cx, int argc, char **argv);
int ctl_summary(struct ctx *cx, int argc, char **argv);
int ctl_domains(struct ctx *cx, int argc, char **argv);
int ctl_show(struct ctx *cx, int argc, char **argv);

/* ctl_change.c: changing the queue */
int ctl_flush(struct ctx *cx, int argc, char **argv);
/* hold, release, delete, bounce, requeue; -1 when name is none of them */
int ctl_ids_command(struct ctx *cx, const char *name, int argc, char **argv);

/* ctl_health.c: counters and checks */
int ctl_stats(struct ctx *cx, int argc, char **argv);
int ctl_reload(struct ctx *cx, int argc, char **argv);
int ctl_check(struct ctx *cx, int argc, char **argv);

/* ctl_backup.c: an online copy of the queue */
int ctl_backup(struct ctx *cx, int argc, char **argv);

#endif
