/*
 * store: the queue in SQLite, and the only file that includes sqlite3.h.
 * A store thread owns the write connection; sessions hand it finished
 * messages and it commits everything waiting in one transaction (group
 * commit, WAL, synchronous=FULL), then wakes the loop (uv_async) and each
 * submitter's callback runs on the loop thread. The loop never waits on
 * fsync. At open the schema (schema/NNN-*.sql, compiled in) is brought up to
 * date through PRAGMA user_version.
 */
#ifndef RELAYD_STORE_H
#define RELAYD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct store;

#define STORE_QID_LEN 14

enum store_status {
    STORE_OK = 0,
    STORE_ERR_FULL = -1,     /* disk or database full: 452 4.3.1 */
    STORE_ERR_IO = -2,       /* any other failure: 451 4.3.0 */
    STORE_ERR_GONE = -3,     /* store_read_chunk: the message is no longer in the queue */
    STORE_CHECK_DAMAGED = -4 /* store_check_start: the queue file is damaged */
};

struct store_rcpt {
    char *address;   /* "local@domain" as it will be delivered */
    char *domain;    /* the recipient's domain, normalised (lower case) */
    unsigned notify; /* SMTP_NOTIFY_* bits, 0 = not given */
    char *orcpt;     /* "rfc822;..." as given, or NULL */
};

/* A finished message. The submitter fills it in and owns every pointer. */
struct store_msg {
    char queue_id[STORE_QID_LEN + 1]; /* from store_new_queue_id() */
    char *sender;                     /* envelope sender without <>; "" for the null sender */
    char *envid;                      /* DSN ENVID (xtext) or NULL */
    int dsn_ret;                      /* enum smtp_ret */
    int body_8bit;                    /* BODY=8BITMIME was given */
    char *client_addr;                /* numeric address of the client */
    char *client_helo;                /* what it said in HELO/EHLO */
    int64_t arrival;                  /* unix time */
    struct store_rcpt *rcpts;
    size_t nrcpts;
    /* The complete message as it will be delivered (Received: header first,
     * CRLF line ends, dot-unstuffed). Either in memory (body_mem, size
     * bytes) or in a spool file (spool_path, size bytes) - never both. */
    char *body_mem;
    char *spool_path;
    uint64_t size;
};

/* Called on the loop thread once msg is committed (STORE_OK) or failed. */
typedef void (*store_submit_cb)(struct store_msg *msg, int status, void *arg);

/* Open (creating if needed) the queue at path, apply migrations, start the
 * store thread. Blocking: call before the loop runs. 0, or -1 with err set. */
int store_open(uv_loop_t *loop, const char *path, struct store **out, char *err, size_t errlen);

/* Hand msg to the store thread. msg is borrowed until cb runs: keep it alive
 * and unchanged. The spool file, if any, becomes the store's: it is removed
 * once the message is committed or has failed. cb is always called exactly
 * once when this returns 0; on error (< 0: UV_ECANCELED once store_close has
 * begun, UV_ENOMEM, UV_EINVAL) it is never called. Loop thread. */
int store_submit(struct store *st, struct store_msg *msg, store_submit_cb cb, void *arg);

/* A new queue id, unique within this queue even across restarts (time based,
 * strictly increasing in this process): 14 characters [0-9A-Z]. Loop thread. */
void store_new_queue_id(struct store *st, char out[STORE_QID_LEN + 1]);

/* Commit what is pending, stop the thread, close the database. Callbacks of
 * pending submissions and updates run before this returns (called directly;
 * a store_submit from one of them fails), and so do those of reader jobs:
 * with their results when they had finished, else with STORE_ERR_IO (a job
 * running is interrupted). Loop thread, loop running or not,
 * also from inside a store_submit_cb. The async handle is released when the
 * loop next runs; after that the store holds nothing on the loop. */
void store_close(struct store *st);

/* The whole-file integrity check (PRAGMA quick_check) on a connection and a
 * pool thread of its own; relayd runs it once after ready, and
 * `etrnctl check --deep` on demand (issue 9). cb runs on the loop thread
 * with STORE_OK (detail "ok"), STORE_CHECK_DAMAGED (detail: what SQLite
 * found, one line) or STORE_ERR_IO (the check could not run, or store_close
 * stopped it). 0 or a negative libuv error (then cb never runs). */
typedef void (*store_check_cb)(int status, const char *detail, void *arg);
int store_check_start(struct store *st, store_check_cb cb, void *arg);

/* Group commit takes everything pending into one transaction, but at most
 * STORE_BATCH_MAX_MSGS messages or (past the first message) about
 * STORE_BATCH_MAX_BYTES of body, so one batch cannot grow without bound. */
#define STORE_BATCH_MAX_MSGS  512
#define STORE_BATCH_MAX_BYTES (64u * 1024 * 1024)

/* Counters since store_open, for `etrnctl stats` and tests. Any thread. */
struct store_stats {
    uint64_t batches;       /* transactions run by the store thread */
    uint64_t messages;      /* messages in them (messages / batches: group commit) */
    uint64_t largest_batch; /* most messages in one batch */
    uint64_t pending;       /* submitted, not yet taken by the store thread */
    /* issue 3 */
    uint64_t updates;             /* store_update calls committed or failed */
    uint64_t reads;               /* reader jobs run (fetch, count, scan) */
    uint64_t read_steps;          /* SQLite VM steps those jobs took: grows with rows visited */
    uint64_t read_fullscan_steps; /* of which stepping through a whole table or index */
};
void store_stats(struct store *st, struct store_stats *out);

/*
 * Reads. These use a second, read-only connection that belongs to the loop
 * thread (WAL lets it read while the store thread writes; it sees committed
 * data only), never the store thread's write connection. They block the
 * loop on the disk for the duration of the query: fine for control commands,
 * ETRN replies and tests, not for a per-message hot path.
 */

/* Messages in the queue. 0 or -1. */
int store_count_messages(struct store *st, int64_t *n);
/* Recipients for domain (exact, normalised lower case) still in the queue,
 * in any state, and the number of distinct messages they belong to: what an
 * ETRN reply counts (RFC 1985 §5, "253 <n> pending messages"). 0 or -1. */
int store_count_domain(struct store *st, const char *domain, int64_t *messages,
                       int64_t *recipients);
/* Diagnostics and tests: run one SQL statement on the read-only connection
 * and return the first column of its first row as a malloc'd copy in *out
 * (*outlen bytes, binary-safe, with a NUL after them); *out = NULL when there
 * is no row or the value is NULL. 0, or -1 with err set. */
int store_query_value(struct store *st, const char *sql, char **out, size_t *outlen, char *err,
                      size_t errlen);

/* ---- delivery (issue 3) ------------------------------------------------------------
 * Reads for delivery and scheduling run on a reader thread with its own
 * read-only connection (WAL readers do not block the writer); updates go
 * through the writer thread's group commit like submissions. Callbacks run
 * on the loop thread. */

/* recipient.state. Delivery (store_fetch) and the scheduler's scans see
 * STORE_RCPT_QUEUED only: a held recipient waits for an operator's release. */
enum store_rcpt_state { STORE_RCPT_QUEUED = 0, STORE_RCPT_HELD = 1 };

struct store_drcpt {
    int64_t id;
    char *address;
    char *domain;
    char *orcpt;
    unsigned notify;
    int attempts;
    int64_t next_attempt;
    int warned;       /* a delay warning was sent for it */
    char *last_reply; /* or NULL */
    int state;        /* enum store_rcpt_state (issue 4) */
};

/* A queued message with the recipients a fetch selected. */
struct store_dmsg {
    int64_t id;
    char queue_id[STORE_QID_LEN + 1];
    char *sender;
    char *envid;
    int dsn_ret;
    int body_8bit;
    int64_t arrival;
    uint64_t size;
    char *body; /* the stored message (size bytes), NULL when not asked for */
    struct store_drcpt *rcpts;
    size_t nrcpts;
    /* issue 4: set by store_list only (NULL from store_fetch) */
    char *client_addr;
    char *client_helo;
};

struct store_batch {
    struct store_dmsg *msgs;
    size_t n;
    int64_t last_id; /* largest message id in it: the next fetch's after_id */
};
/* Frees b itself and everything in it (b is malloc'd by the store). NULL is fine. */
void store_batch_free(struct store_batch *b);

struct store_fetch_opts {
    const char *domain;     /* recipients of this exact (normalised) domain */
    int64_t after_id;       /* only messages with id > after_id (a cursor) */
    size_t max_msgs;        /* at most this many messages */
    int64_t due_before;     /* only recipients with next_attempt <= this (INT64_MAX: all) */
    int64_t arrived_before; /* only messages that arrived before this (INT64_MAX: all) */
    int with_body;          /* every message's body */
    /* else (with_body 0): bodies of at most body_inline_max bytes, until
     * they add up to body_inline_total; the others stay NULL, for
     * store_read_chunk (a batch holds a bounded number of bytes) */
    size_t body_inline_max;
    size_t body_inline_total;
};
/* b is the callee's: free it with store_batch_free. An empty batch (n == 0)
 * means nothing (more) matches. status 0 or STORE_ERR_IO (then b is empty,
 * never NULL). Message ids only grow while the store is open, so a cursor
 * (after_id) misses nothing queued after the fetch started.
 * Recipients are in id order, messages in id order, each message at most once.
 * Returns 0 (cb runs exactly once, on the loop thread, in the order jobs were
 * started), UV_EINVAL (no domain, max_msgs 0), UV_ENOMEM or UV_ECANCELED
 * (store_close has begun); then cb is never called. The same holds for
 * store_count and store_scan_domains. */
typedef void (*store_fetch_cb)(struct store_batch *b, int status, void *arg);
int store_fetch(struct store *st, const struct store_fetch_opts *o, store_fetch_cb cb, void *arg);

/* A chunk of message msg_id's body for delivery: up to len bytes from
 * offset (fewer only at its end; 0 at or past the end), on the reader
 * thread, in a read transaction of its own that opens and closes the blob
 * inside it: nothing is held between chunks, so a slow site never holds a
 * snapshot (which would stop WAL checkpoints). cb gets the bytes (borrowed
 * for the call) with STORE_OK, STORE_ERR_GONE when the message has left
 * the queue (deleted by an operator), or STORE_ERR_IO. len is at most
 * STORE_CHUNK_MAX. Returns and calls back as store_fetch does. */
#define STORE_CHUNK_MAX (1024 * 1024)
typedef void (*store_chunk_cb)(const char *data, size_t len, int status, void *arg);
int store_read_chunk(struct store *st, int64_t msg_id, uint64_t offset, size_t len,
                     store_chunk_cb cb, void *arg);

/* Messages and recipients waiting for domain, or, with subdomains, for the
 * domain and every domain below it; domains lists the distinct recipient
 * domains that matched (for ETRN @domain), each with its own message count
 * (so ETRN can count only the domains a client may flush: a message for
 * several domains counts in each). Everything is the callee's. */
struct store_count {
    int64_t messages;
    int64_t recipients;
    char **domains;
    int64_t *domain_messages; /* the messages waiting for domains[i] */
    size_t ndomains;
};
typedef void (*store_count_cb)(struct store_count *c, int status, void *arg);
/* Frees c itself and everything in it. NULL is fine. c is never NULL in the
 * callback; on STORE_ERR_IO it is all zero. */
void store_count_free(struct store_count *c);
int store_count(struct store *st, const char *domain, int subdomains, store_count_cb cb, void *arg);

/* Every domain with queued recipients, for the scheduler (start-up, retry
 * and expiry scans). */
/* The scan seeks from domain to domain in the indexes instead of reading
 * every recipient (a full pass over a 1,000,000-message queue takes
 * seconds, and would hold up ETRN counts and fetches queued behind it on
 * the reader thread). So it does not count: recipients is 1 for every
 * domain listed, and oldest is the arrival of the domain's first queued
 * message in queue order, which is its earliest arrival because message
 * ids are handed out in arrival order. */
struct store_domain_info {
    char *domain;
    int64_t recipients;   /* 1: the domain has queued (not held) recipients */
    int64_t next_attempt; /* smallest */
    int64_t oldest;       /* arrival of its first queued message */
};
typedef void (*store_scan_cb)(struct store_domain_info *d, size_t n, int status, void *arg);
/* Frees the array d (sorted by domain) and its strings; d may be NULL when n is 0. */
void store_scan_free(struct store_domain_info *d, size_t n);
int store_scan_domains(struct store *st, store_scan_cb cb, void *arg);

/* The outcome of a delivery attempt for one recipient. */
enum store_outcome {
    STORE_DELIVERED = 0, /* remove the recipient */
    STORE_DEFERRED,      /* keep it: attempts + 1, next_attempt, last_reply */
    STORE_FAILED,        /* remove it (the caller has queued the bounce) */
    STORE_WARNED         /* keep it, mark the delay warning as sent */
};
struct store_update {
    int64_t rcpt_id;
    int64_t msg_id;
    enum store_outcome outcome;
    int64_t next_attempt; /* STORE_DEFERRED */
    const char *reply;    /* STORE_DEFERRED: copied by store_update */
};
/* Apply updates in the writer's next group commit; a message whose last
 * recipient is removed is deleted with its body. The array and strings are
 * copied. cb (may be NULL) runs on the loop thread after the commit, with
 * STORE_OK or a store_status (then none of the n updates was applied).
 * 0, or UV_EINVAL / UV_ENOMEM / UV_ECANCELED and cb is never called.
 * Updates for recipients that are gone already are no-ops. */
typedef void (*store_update_cb)(int status, void *arg);
int store_update(struct store *st, const struct store_update *u, size_t n, store_update_cb cb,
                 void *arg);

/* Record an event for a domain in domain_state (fire and forget, writer thread):
 * last ETRN time, last delivery time, or last error text. */
enum store_domain_event { STORE_EV_ETRN, STORE_EV_DELIVERY, STORE_EV_ERROR };
/* (STORE_EV_ERROR stores text in last_error and when in last_error_at.) */
void store_domain_event(struct store *st, const char *domain, enum store_domain_event ev,
                        int64_t when, const char *text);

/* ---- operator commands (issue 4) --------------------------------------------------
 * What etrnctl does over the control socket: list and show messages, report
 * per domain, and hold, release, delete, requeue. Listings and reports are
 * reader jobs (reader thread, callbacks in order with the other reader jobs,
 * results bounded per call); changes are writer jobs in the group commit.
 * Return values and callback rules are those of store_fetch. */

/* Which messages a store_list call returns. Filters combine with AND. */
struct store_list_opts {
    const char *queue_id;   /* only this message (NULL: any) */
    const char *domain;     /* with a recipient in this (normalised) domain (NULL: any) ... */
    int subdomains;         /* ... or in a domain below it */
    const char *sender;     /* the sender contains this, ASCII case-insensitive (NULL: any) */
    const char *recipient;  /* a recipient's address contains this, likewise (NULL: any) */
    int64_t arrived_before; /* only messages that arrived before this (INT64_MAX: all) */
    int held;               /* only messages with a held recipient */
    int64_t after_id;       /* only messages with id > after_id (a cursor, as for fetch) */
    size_t max_msgs;        /* at most this many messages, and no more once a batch holds
                             * STORE_LIST_MAX_RCPTS recipients (a message is never split) */
    int with_body;
};
#define STORE_LIST_MAX_RCPTS 10000
/* Messages in id order with every recipient they still have, in any state
 * (store_drcpt.state says which), and client_addr/client_helo. A batch with
 * fewer than max_msgs messages may still be followed by more when the
 * recipient cap cut it: page on with after_id = b->last_id until n == 0. */
int store_list(struct store *st, const struct store_list_opts *o, store_fetch_cb cb, void *arg);

/* The queue per recipient domain, for `etrnctl summary` and `domains`, and
 * for flushes. A message counts once in each domain it has recipients in.
 * Ages are sorted into qshape's buckets: bucket i < STORE_AGE_BUCKETS - 1
 * holds messages younger than STORE_AGE_LIMIT(i) seconds (and not younger
 * than the previous limit), the last bucket everything older. */
#define STORE_AGE_BUCKETS  10
#define STORE_AGE_LIMIT(i) ((int64_t)300 << (i)) /* 5, 10, 20 ... 1280 minutes */
struct store_domain_report {
    char *domain;
    int64_t messages;        /* with a recipient in the domain */
    int64_t queued_messages; /* ... of which with one that is not held */
    int64_t held_messages;   /* ... of which with one that is held */
    int64_t recipients;
    uint64_t bytes; /* the size of those messages */
    int64_t oldest; /* earliest arrival, 0 without mail */
    int64_t ages[STORE_AGE_BUCKETS];
    /* from domain_state; 0 / NULL: never */
    int64_t last_etrn, last_delivery, last_error_at;
    char *last_error;
};
struct store_report {
    struct store_domain_report *d; /* sorted by domain (byte order) */
    size_t n;
    int64_t messages; /* the whole queue */
    uint64_t bytes;
};
typedef void (*store_report_cb)(struct store_report *r, int status, void *arg);
/* Frees r itself and everything in it. NULL is fine. r is never NULL in the
 * callback; on STORE_ERR_IO it is empty. */
void store_report_free(struct store_report *r);
/* Every domain with queued mail or a domain_state row (domain NULL), or only
 * domain (and, with subdomains, the domains below it), or none (domain "":
 * the totals only); ages as of now. */
int store_report(struct store *st, const char *domain, int subdomains, int64_t now,
                 store_report_cb cb, void *arg);

/* The queue per sender domain (qshape -s, `etrnctl summary --senders`):
 * d[i].domain is the part of the envelope sender after its first '@',
 * lower case ("" for the null sender), with messages, bytes, oldest and
 * ages as store_report gives them per recipient domain; recipients, held
 * and the domain_state fields stay 0. The STORE_SENDERS_MAX busiest
 * domains, by messages; the totals are the whole queue's. Unlike
 * store_report this reads every message row (on the reader thread). */
#define STORE_SENDERS_MAX 1000
int store_report_senders(struct store *st, int64_t now, store_report_cb cb, void *arg);

/* Operator changes. Each applies to the recipients in scope: every recipient
 * of the messages named by queue_ids, or every recipient in domain (and
 * below it, with subdomains), or (all) every recipient in the queue. */
enum store_op {
    STORE_OP_HOLD = 0, /* queued -> held */
    STORE_OP_RELEASE,  /* held -> queued */
    STORE_OP_DELETE,   /* remove them; a message left without recipients goes too */
    STORE_OP_REQUEUE,  /* attempts = 0, next_attempt = 0, last_reply = NULL (any state) */
    STORE_OP_DUE_NOW   /* next_attempt = 0 for queued ones (operator flush of a message) */
};
struct store_op_opts {
    enum store_op op;
    const char *const *queue_ids; /* n of them, or */
    size_t nids;
    const char *domain; /* or */
    int subdomains;
    int all;
};
struct store_op_result {
    int64_t found;    /* queue_ids that named a message in the queue (else: messages) */
    int64_t messages; /* messages with a recipient the operation changed */
    char **domains;   /* the distinct domains of those recipients, sorted */
    size_t ndomains;
};
typedef void (*store_op_cb)(struct store_op_result *r, int status, void *arg);
/* Frees r itself and everything in it. NULL is fine. r is never NULL in the
 * callback; on a failure (nothing was changed) it is all zero. */
void store_op_result_free(struct store_op_result *r);
/* Exactly one scope must be given (UV_EINVAL otherwise). The opts are copied.
 * cb runs on the loop thread after the commit. */
int store_op(struct store *st, const struct store_op_opts *o, store_op_cb cb, void *arg);

/* ---- usage per domain (issue 11) ---------------------------------------------------
 * What each recipient domain holds in the queue: messages with a recipient
 * there (a message for two domains counts in each) and their bytes, kept in
 * the same transactions that change the queue. */

/* A change of domain's usage by (messages, bytes); or, from store_usage_walk,
 * its whole usage. Loop thread. */
typedef void (*store_usage_cb)(void *arg, const char *domain, int64_t messages, int64_t bytes);
/* cb gets every change after each commit, before the callbacks of the
 * requests in that commit (a 250'd message is counted when its 250 goes out). */
void store_set_usage_cb(struct store *st, store_usage_cb cb, void *arg);
/* cb gets every domain's usage now (domains at zero left out); changes not
 * yet handed to the store_set_usage_cb callback are in it and will not be. */
void store_usage_walk(struct store *st, store_usage_cb cb, void *arg);
/* Bytes of the database's free pages (reused before the file grows), as of
 * the last commit. Any thread. */
uint64_t store_free_bytes(struct store *st);

/* An online copy of the whole queue (etrnctl backup, relayd(8) BACKUP):
 * store_backup.c copies it with SQLite's backup API from its own read
 * connection, one snapshot, in steps on the thread pool while intake and
 * delivery go on, into a private file beside the queue that is unlinked
 * once complete. done runs once on the loop thread: STORE_OK with the
 * copy's size (then read it with store_backup_read), or STORE_ERR_IO and
 * why. store_backup_free may come at any time (it cancels a copy in
 * progress; done is not called after it) and must come once. */
struct store_backup;
typedef void (*store_backup_done_cb)(struct store_backup *b, int status, uint64_t size,
                                     const char *why, void *arg);
int store_backup_start(struct store *st, store_backup_done_cb done, void *arg,
                       struct store_backup **out);
/* Read at most max (<= 1 MiB) bytes of the complete copy from offset; cb
 * gets them (fewer at the end, 0 past it) or STORE_ERR_IO, on the loop
 * thread. One read at a time. 0 or < 0 (cb not called). */
typedef void (*store_backup_read_cb)(const char *data, size_t len, int status, void *arg);
int store_backup_read(struct store_backup *b, uint64_t offset, size_t max, store_backup_read_cb cb,
                      void *arg);
void store_backup_free(struct store_backup *b);

#endif
