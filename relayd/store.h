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
    char *sender;      /* envelope sender without <>; "" for the null sender */
    char *envid;       /* DSN ENVID (xtext) or NULL */
    int dsn_ret;       /* enum smtp_ret */
    int body_8bit;     /* BODY=8BITMIME was given */
    char *client_addr; /* numeric address of the client */
    char *client_helo; /* what it said in HELO/EHLO */
    int64_t arrival;   /* unix time */
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
 * once when this returns 0; on error (< 0, store closing) it is never called. */
int store_submit(struct store *st, struct store_msg *msg, store_submit_cb cb, void *arg);

/* A new queue id, unique within this queue even across restarts (time based,
 * strictly increasing in this process): 14 characters [0-9A-Z]. Loop thread. */
void store_new_queue_id(struct store *st, char out[STORE_QID_LEN + 1]);

/* Commit what is pending, stop the thread, close the database. Callbacks of
 * pending submissions run before this returns. Loop thread, loop not running
 * or running (it spins the loop's async itself if needed). */
void store_close(struct store *st);

#endif
