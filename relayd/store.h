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
    STORE_ERR_FULL = -1, /* disk or database full: 452 4.3.1 */
    STORE_ERR_IO = -2    /* any other failure: 451 4.3.0 */
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
 * pending submissions run before this returns (called directly; a
 * store_submit from one of them fails). Loop thread, loop running or not,
 * also from inside a store_submit_cb. The async handle is released when the
 * loop next runs; after that the store holds nothing on the loop. */
void store_close(struct store *st);

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

#endif
