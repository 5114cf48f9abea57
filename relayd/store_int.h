/*
 * store_int: the store's internals shared by store.c, store_delivery.c and
 * store_control.c, and private to those store*.c files: nothing else may
 * include it (users include store.h). The request, the store's state and the
 * helpers each file needs from the others. sqlite3.h stays out of it (the
 * opaque types below match SQLite's own typedefs, which C11 lets repeat).
 */
#ifndef RELAYD_STORE_INT_H
#define RELAYD_STORE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

/* A request the store cannot carry out however often it is tried (a bad
 * argument): never retried; its callback sees STORE_ERR_IO. */
#define STORE_ERR_INVALID (-3)

/* Statements of the write connection, prepared once at open. */
enum store_stmt {
    SS_BEGIN,
    SS_COMMIT,
    SS_ROLLBACK,
    SS_SAVEPOINT,
    SS_RELEASE,
    SS_ROLLBACK_TO,
    SS_INS_MESSAGE,
    SS_INS_BODY,
    SS_INS_RCPT,
    SS_DEL_RCPT,
    SS_DEFER_RCPT,
    SS_WARN_RCPT,
    SS_DEL_MSG_IF_DONE,
    SS_EV_ETRN,
    SS_EV_DELIVERY,
    SS_EV_ERROR,
    SS_COUNT
};

/* Statements of the reader thread's connection, prepared on first use. All
 * recipient lookups by domain go through recipient_rdomain (schema 002):
 * ?1 is the domain reversed, so one domain is one key and a domain with all
 * its subdomains two ranges, and within one domain the index is in message
 * order. CROSS JOIN keeps recipient the outer loop. */
enum store_rstmt {
    RS_BEGIN,
    RS_END,
    RS_ROLLBACK,
    RS_FETCH,
    RS_BODY,
    RS_COUNT_EXACT,
    RS_COUNT_SUB,
    RS_DOMAINS_EXACT,
    RS_DOMAINS_SUB,
    RS_SCAN,
    RS_SCAN_DUE,
    RS_SCAN_OLDEST,
    RS_LIST_RCPTS,
    RS_STATE,
    RS_TOTALS,
    RS_MSG_EXISTS,
    RS_USAGE,
    RS_OLDEST,
    RS_ID_RANGE,
    RS_ID_AT,
    RS_AGE_COUNT,
    RS_AGE_SLOTS,
    RS_AGE_FIRST,
    RS_OLDEST_SCAN,
    RS_COUNT
};

/* What a request asks for. The writer thread takes SUBMIT, UPDATE, EVENT
 * and OP; the reader thread FETCH, CHUNK, COUNT, SCAN, LIST and REPORT. */
enum req_kind {
    REQ_SUBMIT,
    REQ_UPDATE,
    REQ_EVENT,
    REQ_FETCH,
    REQ_COUNT,
    REQ_SCAN,
    REQ_LIST,
    REQ_REPORT,
    REQ_OP,
    REQ_CHUNK
};

/* One request, from store_submit (store_update, store_fetch, ...) until its
 * callback has run. Everything but msg and the results is the request's own. */
struct store_req {
    struct store_req *next;
    enum req_kind kind;
    int status;
    void *arg;
    union {
        store_submit_cb submit;
        store_update_cb update; /* may be NULL */
        store_fetch_cb fetch;
        store_count_cb count;
        store_scan_cb scan;
        store_report_cb report;
        store_op_cb op;
        store_chunk_cb chunk;
    } cb;
    struct store_msg *msg;    /* SUBMIT: borrowed from the submitter */
    struct store_update *upd; /* UPDATE: a copy, replies too */
    size_t nupd;
    char *domain; /* EVENT, FETCH, COUNT: a copy */
    char *text;   /* EVENT */
    enum store_domain_event ev;
    int64_t when;
    struct store_fetch_opts fo; /* FETCH; fo.domain is domain */
    int subdomains;             /* COUNT */
    /* Results, handed to the callback, which owns them from then on. */
    struct store_batch *batch;      /* FETCH: allocated at the start */
    struct store_count *count;      /* COUNT: allocated at the start */
    struct store_domain_info *scan; /* SCAN */
    size_t nscan;
    /* issue 4 */
    struct store_list_opts lo; /* LIST; lo.domain is domain, the other strings below */
    char *lo_qid, *lo_sender, *lo_rcpt;
    int64_t now;                 /* REPORT */
    int by_sender;               /* REPORT: per sender domain (store_senders.c) */
    struct store_report *report; /* REPORT: allocated at the start */
    struct store_op_opts oo;     /* OP; oo.queue_ids is ids, oo.domain is domain */
    char **ids;
    size_t nids;
    struct store_op_result *opres; /* OP: allocated at the start */
    /* issue 7: CHUNK, which message, from where, how much; the bytes read */
    int64_t chunk_id;
    uint64_t chunk_off;
    size_t chunk_len;
    char *chunk_data; /* chunk_got bytes, handed to the callback */
    size_t chunk_got;
};

struct store_list {
    struct store_req *head;
    struct store_req *tail;
};

struct store {
    uv_loop_t *loop;
    char *path;
    sqlite3 *db;  /* write connection: the store thread's once it runs */
    sqlite3 *rdb; /* read-only connection: the loop thread's */
    sqlite3 *xdb; /* read-only connection: the reader thread's once it runs */
    sqlite3_stmt *stmt[SS_COUNT];
    sqlite3_stmt *rstmt[RS_COUNT]; /* xdb's, prepared on first use */
    char *chunk;                   /* STORE_CHUNK bytes: the store thread's copy buffer */

    uv_thread_t thread;
    uv_thread_t reader;
    uv_async_t *async; /* malloc'd: freed in its close callback, after st */
    int *async_gone;   /* set while on_async runs; see store_close */

    uv_mutex_t mu;             /* protects pending, jobs, done, closing, stats */
    uv_cond_t cv;              /* the store thread waits on it */
    uv_cond_t rcv;             /* the reader thread waits on it */
    struct store_list pending; /* for the store thread, not yet taken */
    struct store_list jobs;    /* for the reader thread, not yet taken */
    struct store_list done;    /* finished, callback not yet run */
    int closing;
    struct store_stats stats;
    struct store_usage_state *usage; /* store_usage.c */
    sqlite3_stmt *removed_sel;       /* store_removed.c: the write connection's */
    sqlite3_stmt *removed_del;

    /* The store thread's only. */
    int wal_frames;      /* WAL size after the last commit */
    int ckpt_failing;    /* the last checkpoint failed */
    int64_t next_msg_id; /* message ids only grow while open: fetch cursors */

    /* The reader thread's only: what the current job cost. */
    uint64_t r_steps;
    uint64_t r_fullscan;

    /* The loop thread's only: the last queue id handed out; the integrity
     * checks running (store_check.c). */
    uint64_t qid_us;
    unsigned qid_seq;
    struct store_check *checks;
};

/* store.c: how long a connection waits for a lock */
#define STORE_BUSY_TIMEOUT_MS 5000

/* store_check.c */
void store_check_cancel_all(struct store *st);

/* store.c: errors, statements, results, requests */
void store_dmsg_clear(struct store_dmsg *m);
void store_req_free(struct store_req *r);
int store_status_of(sqlite3 *db, int rc);
int store_stmt_run(struct store *st, enum store_stmt which);
int store_bind_str(sqlite3_stmt *s, int i, const char *v);
char *store_domain_reversed(const char *d, const char *suffix);
void store_savepoint_undo(struct store *st, int have_sp);
sqlite3_stmt *store_rstmt_get(struct store *st, enum store_rstmt which);
void store_rdone(struct store *st, sqlite3_stmt *s);
int store_col_dup(sqlite3_stmt *s, int i, char **out);
int store_grow(void **arr, size_t *cap, size_t n, size_t sz);
int store_read_body(struct store *st, struct store_dmsg *m);
struct store_req *store_req_new(enum req_kind kind, void *arg);
int store_req_queue(struct store *st, struct store_req *r, int reader);

/* store_delivery.c: the writer and reader jobs of delivery */
int store_upd_apply(struct store *st, const struct store_req *r, char *why, size_t whylen);
int store_event_apply(struct store *st, const struct store_req *r, char *why, size_t whylen);
int store_job_fetch(struct store *st, struct store_req *r);
int store_job_count(struct store *st, struct store_req *r);
int store_job_scan(struct store *st, struct store_req *r);
int store_job_chunk(struct store *st, struct store_req *r);

/* store_usage.c: domain_usage in memory, for quotas and the reserve */
struct store_usage_state;
/* After the mutex exists, before the threads start. */
int store_usage_open(struct store *st, char *err, size_t errlen);
void store_usage_close(struct store *st);
void store_usage_after_batch(struct store *st); /* store thread */
void store_usage_publish(struct store *st);     /* loop thread */

/* store_removed.c: "QUEUEID: removed" after the commit that removed it */
int store_removed_open(struct store *st, char *err, size_t errlen);
void store_removed_close(struct store *st);
void store_removed_after_batch(struct store *st); /* store thread */

/* store_control.c: the writer and reader jobs of the operators */
void store_report_clear(struct store_report *r);
void store_opres_clear(struct store_op_result *r);
const char *store_op_name(enum store_op op);
int store_op_apply(struct store *st, struct store_req *r, char *why, size_t whylen);
int store_job_list(struct store *st, struct store_req *r);
int store_job_report(struct store *st, struct store_req *r);

/* store_senders.c: the queue per sender domain (etrnctl summary --senders) */
int store_job_senders(struct store *st, struct store_req *r);

#endif /* RELAYD_STORE_INT_H */
