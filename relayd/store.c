/*
 * store: the queue in SQLite (DESIGN §2 step 4, §5). Owns the connections,
 * the schema migrations, the store (writer) thread with group commit, the
 * reader thread and the request plumbing between them and the loop; the
 * queries and changes themselves live in store_delivery.c (delivery and the
 * scheduler) and store_control.c (the operators' commands). Only store*.c
 * include sqlite3.h. It parses no SMTP, decides no policy and never makes
 * the loop thread wait for an fsync or a delivery query.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include "store.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

/* relayd/schema_sql.c, generated from schema/NNN-*.sql by tools/embed-schema.sh */
extern const char *const store_schema_migrations[];
extern const int store_schema_version;

#define STORE_CHUNK         (64 * 1024)   /* spool file -> blob, per write */
#define STORE_CHECKPOINT_AT 1000          /* WAL frames, as SQLite's own autocheckpoint */
#define STORE_UPD_RETRY_NS  1000000000ull /* a delivery outcome not written: try again */
#define QID_TIME_DIGITS     11            /* microseconds since the epoch, base 36 */
#define QID_SEQ_DIGITS      3             /* strictly increasing within one microsecond */
#define QID_SEQ_MAX         (36 * 36 * 36)

static const char *const store_stmt_sql[SS_COUNT] = {
    [SS_BEGIN] = "BEGIN IMMEDIATE",
    [SS_COMMIT] = "COMMIT",
    [SS_ROLLBACK] = "ROLLBACK",
    [SS_SAVEPOINT] = "SAVEPOINT msg",
    [SS_RELEASE] = "RELEASE msg",
    [SS_ROLLBACK_TO] = "ROLLBACK TO msg",
    [SS_INS_MESSAGE] = "INSERT INTO message (queue_id, arrival, sender, envid, dsn_ret, body_8bit,"
                       " size, client_addr, client_helo, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [SS_INS_BODY] = "INSERT INTO message_body (message_id, data) VALUES (?, ?)",
    [SS_INS_RCPT] = "INSERT INTO recipient (message_id, domain, address, orcpt, notify, rdomain)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
    [SS_DEL_RCPT] = "DELETE FROM recipient WHERE id = ?1 AND message_id = ?2",
    [SS_DEFER_RCPT] = "UPDATE recipient SET attempts = attempts + 1, next_attempt = ?1,"
                      " last_reply = ?2 WHERE id = ?3 AND message_id = ?4",
    [SS_WARN_RCPT] = "UPDATE recipient SET warned = 1 WHERE id = ?1 AND message_id = ?2",
    /* ON DELETE CASCADE takes the body along (foreign_keys is on). */
    [SS_DEL_MSG_IF_DONE] = "DELETE FROM message WHERE id = ?1"
                           " AND NOT EXISTS (SELECT 1 FROM recipient WHERE message_id = ?1)",
    [SS_EV_ETRN] = "INSERT INTO domain_state (domain, last_etrn) VALUES (?1, ?2)"
                   " ON CONFLICT (domain) DO UPDATE SET last_etrn = excluded.last_etrn",
    [SS_EV_DELIVERY] = "INSERT INTO domain_state (domain, last_delivery) VALUES (?1, ?2)"
                       " ON CONFLICT (domain) DO UPDATE SET last_delivery = excluded.last_delivery",
    [SS_EV_ERROR] =
        "INSERT INTO domain_state (domain, last_error_at, last_error) VALUES (?1, ?2, ?3)"
        " ON CONFLICT (domain) DO UPDATE SET last_error_at = excluded.last_error_at,"
        " last_error = excluded.last_error",
};

static const char *const store_rstmt_sql[RS_COUNT] = {
    [RS_BEGIN] = "BEGIN",
    [RS_END] = "COMMIT",
    [RS_ROLLBACK] = "ROLLBACK",
    [RS_FETCH] = "SELECT r.message_id, r.id, r.address, r.domain, r.orcpt, r.notify, r.attempts,"
                 " r.next_attempt, r.warned, r.last_reply, m.queue_id, m.sender, m.envid,"
                 " m.dsn_ret, m.body_8bit, m.arrival, m.size"
                 " FROM recipient AS r CROSS JOIN message AS m ON m.id = r.message_id"
                 " WHERE r.rdomain = ?1 AND r.state = 0 AND r.message_id > ?2"
                 " AND r.next_attempt <= ?3 AND m.arrival < ?4"
                 " ORDER BY r.message_id, r.id",
    [RS_BODY] = "SELECT data FROM message_body WHERE message_id = ?1",
    [RS_COUNT_EXACT] = "SELECT count(DISTINCT message_id), count(*) FROM recipient"
                       " WHERE rdomain = ?1",
    /* ?2 = reversed + ".", ?3 = reversed + "/": everything that starts with
     * the reversed domain and a dot, i.e. every subdomain ("/" follows "."). */
    [RS_COUNT_SUB] = "SELECT count(DISTINCT message_id), count(*) FROM recipient"
                     " WHERE rdomain = ?1 OR (rdomain >= ?2 AND rdomain < ?3)",
    [RS_DOMAINS_EXACT] = "SELECT domain FROM recipient WHERE rdomain = ?1 LIMIT 1",
    [RS_DOMAINS_SUB] =
        "SELECT (SELECT domain FROM recipient AS x WHERE x.rdomain = r.rdomain LIMIT 1),"
        " count(DISTINCT r.message_id) FROM recipient AS r WHERE r.rdomain = ?1"
        " OR (r.rdomain >= ?2 AND r.rdomain < ?3) GROUP BY r.rdomain",
    /* store_scan_domains: one index seek per step, never a pass over all rows */
    [RS_SCAN] = "SELECT domain FROM recipient WHERE domain > ?1 ORDER BY domain LIMIT 1",
    [RS_SCAN_DUE] = "SELECT min(next_attempt) FROM recipient WHERE domain = ?1 AND state = 0",
    [RS_SCAN_OLDEST] = "SELECT arrival FROM message WHERE id ="
                       " (SELECT min(message_id) FROM recipient WHERE rdomain = ?1 AND state = 0)",
    /* issue 4: every recipient of one message, any state (store_list) */
    [RS_LIST_RCPTS] = "SELECT id, address, domain, orcpt, notify, attempts, next_attempt, warned,"
                      " last_reply, state FROM recipient WHERE message_id = ?1 ORDER BY id",
    [RS_STATE] = "SELECT domain, last_etrn, last_delivery, last_error, last_error_at"
                 " FROM domain_state ORDER BY domain",
    /* issue 9: the report reads what schema 004/005's triggers keep, and
     * seeks instead of counting where it can (store_control.c) */
    [RS_TOTALS] = "SELECT messages, bytes FROM queue_totals WHERE id = 1",
    /* issue 7: is a message whose body cannot be opened still queued? */
    [RS_MSG_EXISTS] = "SELECT 1 FROM message WHERE id = ?1",
    [RS_USAGE] = "SELECT domain, messages, recipients, bytes, queued_messages, held_messages"
                 " FROM domain_usage WHERE messages > 0 ORDER BY domain",
    [RS_OLDEST] = "SELECT min(arrival) FROM message WHERE id IN"
                  " ((SELECT min(message_id) FROM recipient WHERE rdomain = ?1 AND state = 0),"
                  " (SELECT min(message_id) FROM recipient WHERE rdomain = ?1 AND state = 1))",
    /* two subqueries: min and max in one SELECT would scan the table */
    [RS_ID_RANGE] = "SELECT (SELECT min(id) FROM message), (SELECT max(id) FROM message)",
    [RS_ID_AT] = "SELECT id, arrival FROM message WHERE id >= ?1 ORDER BY id LIMIT 1",
    [RS_AGE_FIRST] = "SELECT min(slot) FROM domain_age WHERE domain = ?1",
    [RS_OLDEST_SCAN] = "SELECT min(m.arrival) FROM recipient AS r"
                       " CROSS JOIN message AS m ON m.id = r.message_id WHERE r.rdomain = ?1",
    [RS_AGE_SLOTS] = "SELECT slot, messages FROM domain_age WHERE domain = ?1 AND slot >= ?2",
    [RS_AGE_COUNT] = "SELECT count(DISTINCT message_id) FROM recipient WHERE rdomain = ?1"
                     " AND state IN (0, 1) AND message_id >= ?2 AND message_id < ?3",
};

static const char qid_digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

static void list_append(struct store_list *l, struct store_req *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static struct store_req *list_take(struct store_list *l)
{
    struct store_req *r = l->head;

    l->head = l->tail = NULL;
    return r;
}

void store_dmsg_clear(struct store_dmsg *m)
{
    for (size_t i = 0; i < m->nrcpts; i++) {
        free(m->rcpts[i].address);
        free(m->rcpts[i].domain);
        free(m->rcpts[i].orcpt);
        free(m->rcpts[i].last_reply);
    }
    free(m->rcpts);
    free(m->sender);
    free(m->envid);
    free(m->body);
    free(m->client_addr);
    free(m->client_helo);
}

void store_batch_free(struct store_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        store_dmsg_clear(&b->msgs[i]);
    free(b->msgs);
    free(b);
}

/* Free a request and whatever it still owns (results not yet handed over). */
void store_req_free(struct store_req *r)
{
    if (r->upd) {
        for (size_t i = 0; i < r->nupd; i++)
            free((char *)r->upd[i].reply); /* our copy */
        free(r->upd);
    }
    free(r->domain);
    free(r->text);
    store_batch_free(r->batch);
    store_count_free(r->count);
    store_scan_free(r->scan, r->nscan);
    free(r->lo_qid);
    free(r->lo_sender);
    free(r->lo_rcpt);
    store_report_free(r->report);
    for (size_t i = 0; i < r->nids; i++)
        free(r->ids[i]);
    free(r->ids);
    store_op_result_free(r->opres);
    free(r->chunk_data);
    free(r);
}

/* Map a failed SQLite call to what the client is told: a full disk or
 * database is 452 4.3.1, anything else 451 4.3.0 (RFC 3463 §3.4). SQLite
 * reports ENOSPC from write() as SQLITE_FULL itself; the errno check catches
 * the other write paths (fsync, ftruncate, shm) that fail for lack of space. */
int store_status_of(sqlite3 *db, int rc)
{
    int err;

    if ((rc & 0xff) == SQLITE_FULL)
        return STORE_ERR_FULL;
    if ((rc & 0xff) == SQLITE_IOERR) {
        err = sqlite3_system_errno(db);
        if (err == ENOSPC || err == EDQUOT)
            return STORE_ERR_FULL;
    }
    return STORE_ERR_IO;
}

/* Run a prepared statement that returns no rows and reset it. */
int store_stmt_run(struct store *st, enum store_stmt which)
{
    sqlite3_stmt *s = st->stmt[which];
    int rc;

    rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Run a one-shot statement on db and copy the first column of its first row
 * into out (a truncated string; "" when there is none). Start-up only. */
static int exec_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *s = NULL;
    const unsigned char *t;
    int rc;

    out[0] = '\0';
    rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        t = sqlite3_column_text(s, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Bind a string that lives until the statement is reset; NULL binds NULL. */
int store_bind_str(sqlite3_stmt *s, int i, const char *v)
{
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

/* Write domain d reversed character by character into out, which holds
 * strlen(d) + 1 bytes. A character is what SQLite's substr() and length()
 * count (SQLITE_SKIP_UTF8): one byte, or a byte >= 0xc0 with the
 * continuation bytes (10xxxxxx) after it, so schema 002's SQL and this
 * agree on every input, valid UTF-8 or not. */
static void domain_reverse(const char *d, char *out)
{
    size_t len = strlen(d), i = 0, o = len, n;

    out[len] = '\0';
    while (i < len) {
        n = 1;
        if ((unsigned char)d[i] >= 0xc0)
            while (i + n < len && ((unsigned char)d[i + n] & 0xc0) == 0x80)
                n++;
        o -= n;
        memcpy(out + o, d + i, n);
        i += n;
    }
}

/* domain reversed, then suffix, in a new string; NULL when out of memory. */
char *store_domain_reversed(const char *d, const char *suffix)
{
    size_t len = strlen(d), slen = strlen(suffix);
    char *out = malloc(len + slen + 1);

    if (out) {
        domain_reverse(d, out);
        memcpy(out + len, suffix, slen + 1);
    }
    return out;
}

/* Copy the spool file at m->spool_path into the (zero-filled, m->size bytes)
 * body blob of message id, STORE_CHUNK bytes at a time, so a 50 MB message
 * never sits in memory. The file must hold exactly m->size bytes. Store
 * thread. */
static int body_from_file(struct store *st, sqlite3_int64 id, const struct store_msg *m, char *why,
                          size_t whylen)
{
    sqlite3_blob *blob = NULL;
    struct stat sb;
    uint64_t off = 0;
    ssize_t got;
    char ebuf[128];
    int fd, rc, status = STORE_ERR_IO;

    fd = open(m->spool_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "spool file %s: %s", m->spool_path,
                 strerror_r(errno, ebuf, sizeof ebuf));
        goto done;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != m->size) {
        snprintf(why, whylen, "spool file %s is not a file of %llu bytes", m->spool_path,
                 (unsigned long long)m->size);
        goto done;
    }
    rc = sqlite3_blob_open(st->db, "main", "message_body", "data", id, 1, &blob);
    if (rc != SQLITE_OK) {
        status = store_status_of(st->db, rc);
        snprintf(why, whylen, "blob open: %s", sqlite3_errmsg(st->db));
        goto done;
    }
    while (off < m->size) {
        size_t want = m->size - off < STORE_CHUNK ? (size_t)(m->size - off) : STORE_CHUNK;

        got = read(fd, st->chunk, want);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            snprintf(why, whylen, "spool file %s: %s at byte %llu", m->spool_path,
                     got < 0 ? strerror_r(errno, ebuf, sizeof ebuf) : "short",
                     (unsigned long long)off);
            goto done;
        }
        /* blob offsets are int: the body's size was bound as a zeroblob,
         * which SQLite refuses past SQLITE_LIMIT_LENGTH (< 2^31). */
        rc = sqlite3_blob_write(blob, st->chunk, (int)got, (int)off);
        if (rc != SQLITE_OK) {
            status = store_status_of(st->db, rc);
            snprintf(why, whylen, "blob write: %s", sqlite3_errmsg(st->db));
            goto done;
        }
        off += (uint64_t)got;
    }
    /* The file grew after the size was taken: not the message we were given. */
    do
        got = read(fd, st->chunk, 1);
    while (got < 0 && errno == EINTR);
    if (got != 0) {
        snprintf(why, whylen, "spool file %s is longer than %llu bytes", m->spool_path,
                 (unsigned long long)m->size);
        goto done;
    }
    status = STORE_OK;
done:
    if (blob) {
        rc = sqlite3_blob_close(blob);
        if (rc != SQLITE_OK && status == STORE_OK) {
            status = store_status_of(st->db, rc);
            snprintf(why, whylen, "blob close: %s", sqlite3_errmsg(st->db));
        }
    }
    if (fd >= 0)
        close(fd);
    return status;
}

/* Undo one request's work inside the batch's transaction: back to its
 * savepoint, if the transaction still exists. An error may have ended the
 * whole transaction already (SQLITE_FULL, SQLITE_IOERR): then there is no
 * savepoint left, and the caller sees autocommit and fails the batch's
 * earlier requests too. Store thread. */
void store_savepoint_undo(struct store *st, int have_sp)
{
    if (have_sp && !sqlite3_get_autocommit(st->db)) {
        store_stmt_run(st, SS_ROLLBACK_TO);
        store_stmt_run(st, SS_RELEASE);
    }
}

/* Insert one message (envelope, body, recipients) inside the batch's
 * transaction, under a savepoint so a failure undoes only this message.
 * Returns a store_status and, on failure, the reason in why. Store thread. */
static int msg_insert(struct store *st, const struct store_msg *m, char *why, size_t whylen)
{
    sqlite3 *db = st->db;
    sqlite3_stmt *s;
    sqlite3_int64 id;
    const char *what = "savepoint";
    char rbuf[512], *rev = NULL;
    int rc, status = STORE_ERR_IO, have_sp = 0;
    size_t i;

    /* Caller bugs, refused before they reach the queue. */
    if (m->nrcpts == 0 || !m->rcpts) {
        snprintf(why, whylen, "message without recipients");
        return STORE_ERR_IO;
    }
    if ((m->spool_path && m->body_mem) || (!m->spool_path && !m->body_mem && m->size > 0)) {
        snprintf(why, whylen, "body must be in memory or in a spool file, not %s",
                 m->spool_path ? "both" : "neither");
        return STORE_ERR_IO;
    }

    rc = store_stmt_run(st, SS_SAVEPOINT);
    if (rc != SQLITE_OK)
        goto sql_fail;
    have_sp = 1;

    what = "insert message";
    s = st->stmt[SS_INS_MESSAGE];
    store_bind_str(s, 1, m->queue_id);
    sqlite3_bind_int64(s, 2, m->arrival);
    store_bind_str(s, 3, m->sender);
    store_bind_str(s, 4, m->envid);
    sqlite3_bind_int(s, 5, m->dsn_ret);
    sqlite3_bind_int(s, 6, m->body_8bit != 0);
    sqlite3_bind_int64(s, 7, (sqlite3_int64)m->size);
    store_bind_str(s, 8, m->client_addr);
    store_bind_str(s, 9, m->client_helo);
    /* Not left to SQLite, which reuses the largest id once that message is
     * gone: a delivery cursor past it would skip the new message. */
    id = st->next_msg_id++;
    sqlite3_bind_int64(s, 10, id);
    rc = store_stmt_run(st, SS_INS_MESSAGE);
    if (rc != SQLITE_OK)
        goto sql_fail;

    what = "insert body";
    s = st->stmt[SS_INS_BODY];
    sqlite3_bind_int64(s, 1, id);
    if (m->spool_path || m->size == 0)
        rc = sqlite3_bind_zeroblob64(s, 2, m->spool_path ? m->size : 0);
    else
        rc = sqlite3_bind_blob64(s, 2, m->body_mem, m->size, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = store_stmt_run(st, SS_INS_BODY);
    else
        sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK)
        goto sql_fail;
    if (m->spool_path) {
        status = body_from_file(st, id, m, why, whylen);
        if (status != STORE_OK)
            goto rollback;
    }

    what = "insert recipient";
    s = st->stmt[SS_INS_RCPT];
    for (i = 0; i < m->nrcpts; i++) {
        const struct store_rcpt *r = &m->rcpts[i];
        size_t dlen = r->domain ? strlen(r->domain) : 0;

        if (!r->domain || !r->address) {
            snprintf(why, whylen, "recipient %zu without %s", i, r->domain ? "address" : "domain");
            status = STORE_ERR_IO;
            goto rollback;
        }
        rev = dlen < sizeof rbuf ? rbuf : malloc(dlen + 1);
        if (!rev) {
            rc = SQLITE_NOMEM;
            goto sql_fail;
        }
        domain_reverse(r->domain, rev);
        sqlite3_bind_int64(s, 1, id);
        store_bind_str(s, 2, r->domain);
        store_bind_str(s, 3, r->address);
        store_bind_str(s, 4, r->orcpt);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)r->notify);
        store_bind_str(s, 6, rev);
        rc = store_stmt_run(st, SS_INS_RCPT);
        if (rev != rbuf)
            free(rev);
        rev = NULL;
        if (rc != SQLITE_OK)
            goto sql_fail;
    }

    what = "release";
    rc = store_stmt_run(st, SS_RELEASE);
    if (rc != SQLITE_OK)
        goto sql_fail;
    return STORE_OK;

sql_fail:
    status = store_status_of(db, rc);
    snprintf(why, whylen, "%s: %s", what, sqlite3_errmsg(db));
rollback:
    store_savepoint_undo(st, have_sp);
    return status;
}

/* Fail every request from first up to (not including) stop that had not
 * failed already: their transaction did not commit. Returns how many. */
static size_t fail_range(struct store_req *first, struct store_req *stop, int status)
{
    size_t n = 0;

    for (; first && first != stop; first = first->next)
        if (first->status == STORE_OK) {
            first->status = status;
            n++;
        }
    return n;
}

/*
 * One group commit: BEGIN IMMEDIATE, every message of the batch under its
 * own savepoint, COMMIT. With WAL and synchronous=FULL, COMMIT returns only
 * after the WAL is fsync'd, and only then may a message be reported
 * STORE_OK (a 250 means the message is on disk). If SQLite ends the
 * transaction on its own (disk full, I/O error), the messages already in it
 * fail and the rest of the batch starts a new one. If BEGIN fails (the
 * busy timeout ran out, the disk is gone), the rest of the batch fails at
 * once rather than waiting out the timeout once per message. Store thread.
 */
static void batch_run(struct store *st, struct store_req *batch, size_t n)
{
    struct store_req *r, *txn_first = NULL;
    char why[512];
    int rc, status, in_txn = 0;
    size_t nfail = 0;

    for (r = batch; r; r = r->next)
        r->status = STORE_OK;
    for (r = batch; r; r = r->next) {
        if (!in_txn) {
            rc = store_stmt_run(st, SS_BEGIN);
            if (rc != SQLITE_OK) {
                status = store_status_of(st->db, rc);
                log_warn("store: cannot begin a transaction: %s", sqlite3_errmsg(st->db));
                fail_range(r, NULL, status);
                break;
            }
            in_txn = 1;
            txn_first = r;
        }
        why[0] = '\0';
        if (r->kind == REQ_SUBMIT)
            r->status = msg_insert(st, r->msg, why, sizeof why);
        else if (r->kind == REQ_UPDATE)
            r->status = store_upd_apply(st, r, why, sizeof why);
        else if (r->kind == REQ_OP)
            r->status = store_op_apply(st, r, why, sizeof why);
        else
            r->status = store_event_apply(st, r, why, sizeof why);
        if (r->status != STORE_OK) {
            if (r->kind == REQ_SUBMIT)
                log_warn("%s: store failed: %s", r->msg->queue_id, why);
            else if (r->kind == REQ_UPDATE)
                log_warn("store: update of %zu recipients failed: %s", r->nupd, why);
            else if (r->kind == REQ_OP)
                log_warn("store: operator %s failed: %s", store_op_name(r->oo.op), why);
            else
                log_warn("store: %s: domain event failed: %s", r->domain, why);
            if (sqlite3_get_autocommit(st->db)) {
                log_warn("store: transaction rolled back: %s", why);
                fail_range(txn_first, r, r->status);
                in_txn = 0;
            }
        }
    }
    if (in_txn) {
        rc = store_stmt_run(st, SS_COMMIT);
        if (rc != SQLITE_OK) {
            status = store_status_of(st->db, rc);
            snprintf(why, sizeof why, "%s", sqlite3_errmsg(st->db));
            if (!sqlite3_get_autocommit(st->db))
                store_stmt_run(st, SS_ROLLBACK);
            log_warn("store: commit failed, requests=%zu: %s", fail_range(txn_first, NULL, status),
                     why);
        }
    }
    for (r = batch; r; r = r->next)
        nfail += r->status != STORE_OK;
    log_debug("store: batch requests=%zu committed=%zu failed=%zu", n, n - nfail, nfail);
}

/* The spool files of a finished batch are the store's (store.h): remove
 * them whether the message committed or failed. Store thread. */
static void batch_unlink(struct store_req *batch)
{
    struct store_req *r;
    char ebuf[128];

    for (r = batch; r; r = r->next)
        if (r->kind == REQ_SUBMIT && r->msg->spool_path && unlink(r->msg->spool_path) < 0 &&
            errno != ENOENT)
            log_warn("%s: cannot remove spool file %s: %s", r->msg->queue_id, r->msg->spool_path,
                     strerror_r(errno, ebuf, sizeof ebuf));
}

static uint64_t req_bytes(const struct store_req *r)
{
    return r->kind == REQ_SUBMIT ? r->msg->size : 0;
}

/* Take the next batch off the pending list: everything waiting, up to the
 * caps of store.h (always at least one request; an update or an event
 * counts as one message against STORE_BATCH_MAX_MSGS). *n is the number of
 * requests, *nmsgs the messages among them. Store thread, mu held. */
static struct store_req *batch_take(struct store *st, size_t *n, size_t *nmsgs)
{
    struct store_req *first = st->pending.head, *last = first;
    uint64_t bytes = req_bytes(first);

    *n = 1;
    *nmsgs = first->kind == REQ_SUBMIT;
    while (last->next && *n < STORE_BATCH_MAX_MSGS &&
           bytes + req_bytes(last->next) <= STORE_BATCH_MAX_BYTES) {
        last = last->next;
        bytes += req_bytes(last);
        (*n)++;
        *nmsgs += last->kind == REQ_SUBMIT;
    }
    st->pending.head = last->next;
    if (!st->pending.head)
        st->pending.tail = NULL;
    st->stats.pending -= *nmsgs;
    last->next = NULL;
    return first;
}

/* SQLite's WAL hook, after every commit: remember how big the WAL is. Having
 * a hook turns SQLite's autocheckpoint off; see store_thread_main. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct store *st = arg;

    (void)db;
    (void)name;
    st->wal_frames = frames;
    return SQLITE_OK;
}

/* Copy the WAL back into the database file (PASSIVE: never waits for the
 * read connection). A failure (disk full) loses nothing - the pages stay in
 * the WAL - so it is logged once, not per batch. Store thread. */
static void checkpoint(struct store *st)
{
    int rc;

    rc = sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK && !st->ckpt_failing)
        log_warn("store: checkpoint failed: %s", sqlite3_errmsg(st->db));
    else if (rc == SQLITE_OK && st->ckpt_failing)
        log_info("store: checkpoint works again");
    st->ckpt_failing = rc != SQLITE_OK;
    st->wal_frames = 0;
}

/*
 * Delivery outcomes a batch could not write (disk full, I/O error, busy):
 * the site already has those messages, so reporting the failure would leave
 * the recipients queued and the next run would deliver them again. They
 * wait here instead and go back at the head of the queue every
 * STORE_UPD_RETRY_NS until they commit; their run waits for them (it ends
 * only when its updates are answered), so nothing picks those recipients up
 * meanwhile. Only at close are they failed: the recipients stay queued and
 * are delivered again after the restart (at least once, never lost).
 * Store thread state, guarded by st->mu where it touches pending.
 */
struct upd_retry {
    struct store_req *head, *last;
    uint64_t due; /* uv_hrtime() */
    size_t n;
    int failing; /* a streak is being logged */
};

/* Put a failed update aside for another try. */
static void retry_keep(struct upd_retry *rt, struct store_req *r)
{
    r->next = NULL;
    if (rt->head == NULL) {
        rt->due = uv_hrtime() + STORE_UPD_RETRY_NS;
        rt->head = r;
    } else {
        rt->last->next = r;
    }
    rt->last = r;
    rt->n++;
}

/* Move the waiting updates back to the head of the pending list. mu held. */
static void retry_requeue(struct store *st, struct upd_retry *rt)
{
    if (rt->head == NULL)
        return;
    rt->last->next = st->pending.head;
    if (st->pending.head == NULL)
        st->pending.tail = rt->last;
    st->pending.head = rt->head;
    rt->head = rt->last = NULL;
    rt->n = 0;
}

/* Wait for work: new requests, closing, or the retry coming due. Returns
 * with mu held. */
static void wait_for_work(struct store *st, struct upd_retry *rt)
{
    uint64_t now;

    for (;;) {
        now = rt->head != NULL ? uv_hrtime() : 0;
        if (rt->head != NULL && (st->closing || now >= rt->due)) {
            retry_requeue(st, rt);
            return;
        }
        if (st->pending.head || st->closing)
            return;
        if (rt->head == NULL)
            uv_cond_wait(&st->cv, &st->mu);
        else
            (void)uv_cond_timedwait(&st->cv, &st->mu, rt->due - now);
    }
}

/*
 * The store thread: wait for submissions, commit them in batches, hand the
 * results to the loop. Exits once closing is set and nothing is pending.
 * The WAL is checkpointed here, after a batch's callbacks are on their way,
 * rather than inside COMMIT as SQLite's autocheckpoint would: the fsync of
 * the database file then never delays a 250 that is already earned.
 */
static void store_thread_main(void *arg)
{
    struct store *st = arg;
    struct store_req *batch, *r;
    struct upd_retry rt = {NULL, NULL, 0, 0, 0};
    sigset_t all;
    size_t n, nmsgs, nupd, upd_ok, upd_failed;

    /* Signals are the loop thread's business (uv_signal). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        uv_mutex_lock(&st->mu);
        wait_for_work(st, &rt);
        if (!st->pending.head) {
            uv_mutex_unlock(&st->mu);
            break;
        }
        batch = batch_take(st, &n, &nmsgs);
        uv_mutex_unlock(&st->mu);

        batch_run(st, batch, n);
        batch_unlink(batch);
        store_usage_after_batch(st);
        store_removed_after_batch(st);

        uv_mutex_lock(&st->mu);
        nupd = upd_ok = upd_failed = 0;
        while (batch) {
            r = batch;
            batch = batch->next;
            if (r->kind == REQ_EVENT) {
                store_req_free(r); /* fire and forget: no callback */
                continue;
            }
            if (r->kind == REQ_UPDATE && r->status != STORE_OK && r->status != STORE_ERR_INVALID &&
                !st->closing) {
                retry_keep(&rt, r);
                upd_failed++;
                continue;
            }
            if (r->status == STORE_ERR_INVALID)
                r->status = STORE_ERR_IO; /* what store.h promises callbacks */
            if (r->kind == REQ_UPDATE && r->status == STORE_OK)
                upd_ok++;
            nupd += r->kind == REQ_UPDATE;
            list_append(&st->done, r);
        }
        st->stats.batches++;
        st->stats.messages += nmsgs;
        st->stats.updates += nupd;
        if (nmsgs > st->stats.largest_batch)
            st->stats.largest_batch = nmsgs;
        uv_mutex_unlock(&st->mu);
        uv_async_send(st->async);
        if (upd_failed > 0 && !rt.failing) {
            rt.failing = 1;
            log_warn("store: %zu delivery results not written yet; retrying every second", rt.n);
        } else if (upd_failed == 0 && upd_ok > 0 && rt.failing) {
            rt.failing = 0;
            log_info("store: delayed delivery results written");
        }

        if (st->wal_frames >= STORE_CHECKPOINT_AT)
            checkpoint(st);
    }
}

/* Run the callback of one finished request and free the request; the
 * results go to the callback. Touches nothing of the store, which a
 * callback may close. Loop thread. */
static void run_one(struct store_req *r)
{
    struct store_batch *b;
    struct store_count *c;
    struct store_domain_info *d;
    struct store_report *rep;
    struct store_op_result *op;
    size_t nd;

    switch (r->kind) {
    case REQ_SUBMIT:
        r->cb.submit(r->msg, r->status, r->arg);
        break;
    case REQ_UPDATE:
        if (r->cb.update)
            r->cb.update(r->status, r->arg);
        break;
    case REQ_FETCH:
        b = r->batch;
        r->batch = NULL;
        r->cb.fetch(b, r->status, r->arg);
        break;
    case REQ_COUNT:
        c = r->count;
        r->count = NULL;
        r->cb.count(c, r->status, r->arg);
        break;
    case REQ_SCAN:
        d = r->scan;
        nd = r->nscan;
        r->scan = NULL;
        r->nscan = 0;
        r->cb.scan(d, nd, r->status, r->arg);
        break;
    case REQ_LIST:
        b = r->batch;
        r->batch = NULL;
        r->cb.fetch(b, r->status, r->arg);
        break;
    case REQ_REPORT:
        rep = r->report;
        r->report = NULL;
        r->cb.report(rep, r->status, r->arg);
        break;
    case REQ_OP:
        op = r->opres;
        r->opres = NULL;
        if (r->status != STORE_OK) /* e.g. a later COMMIT failed: nothing changed */
            store_opres_clear(op);
        r->cb.op(op, r->status, r->arg);
        break;
    case REQ_CHUNK:
        r->cb.chunk(r->chunk_data, r->status == STORE_OK ? r->chunk_got : 0, r->status, r->arg);
        break;
    case REQ_EVENT:
        break;
    }
    store_req_free(r);
}

/* Run the callbacks of a list of finished requests, in list order. */
static void run_callbacks(struct store_req *r)
{
    struct store_req *next;

    for (; r; r = next) {
        next = r->next;
        run_one(r);
    }
}

/* The store thread finished a batch or the reader thread a job. Callbacks
 * run one at a time, each taken off the done list first, so that a callback
 * which calls store_close leaves the rest to store_close (it sets *gone). */
static void on_async(uv_async_t *h)
{
    struct store *st = h->data;
    struct store_req *r;
    int gone = 0;

    st->async_gone = &gone;
    for (;;) {
        uv_mutex_lock(&st->mu);
        r = st->done.head;
        if (r) {
            st->done.head = r->next;
            if (!st->done.head)
                st->done.tail = NULL;
            r->next = NULL;
        }
        uv_mutex_unlock(&st->mu);
        /* a batch's usage changes were queued before its requests */
        store_usage_publish(st);
        if (!r)
            break;
        run_one(r);
        if (gone)
            return;
    }
    st->async_gone = NULL;
}

static void on_async_closed(uv_handle_t *h)
{
    free(h);
}

/* ---- the reader thread ---------------------------------------------------------- */

/* A reader statement, prepared on first use. Reader thread. */
sqlite3_stmt *store_rstmt_get(struct store *st, enum store_rstmt which)
{
    if (!st->rstmt[which] &&
        sqlite3_prepare_v3(st->xdb, store_rstmt_sql[which], -1, SQLITE_PREPARE_PERSISTENT,
                           &st->rstmt[which], NULL) != SQLITE_OK)
        return NULL;
    return st->rstmt[which];
}

/* Reset a reader statement after use and count what it cost (VM steps grow
 * with the rows a query visits: the tests use them to prove that a fetch
 * for one domain does not read the others). Reader thread. */
void store_rdone(struct store *st, sqlite3_stmt *s)
{
    st->r_steps += (uint64_t)sqlite3_stmt_status(s, SQLITE_STMTSTATUS_VM_STEP, 1);
    st->r_fullscan += (uint64_t)sqlite3_stmt_status(s, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Run a reader statement that returns no rows (BEGIN, COMMIT). */
static int rstmt_exec(struct store *st, enum store_rstmt which)
{
    sqlite3_stmt *s = store_rstmt_get(st, which);
    int rc;

    if (!s)
        return sqlite3_errcode(st->xdb);
    rc = sqlite3_step(s);
    store_rdone(st, s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Copy text column i into *out (NULL for SQL NULL). SQLITE_OK or _NOMEM. */
int store_col_dup(sqlite3_stmt *s, int i, char **out)
{
    const unsigned char *t;

    *out = NULL;
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return SQLITE_OK;
    t = sqlite3_column_text(s, i);
    if (!t || !(*out = strdup((const char *)t)))
        return SQLITE_NOMEM;
    return SQLITE_OK;
}

/* Grow an array of *cap elements of size sz to hold one more than n. */
int store_grow(void **arr, size_t *cap, size_t n, size_t sz)
{
    size_t ncap;
    void *p;

    if (n < *cap)
        return SQLITE_OK;
    ncap = *cap ? *cap * 2 : 8;
    p = reallocarray(*arr, ncap, sz);
    if (!p)
        return SQLITE_NOMEM;
    *arr = p;
    *cap = ncap;
    return SQLITE_OK;
}

/* Read message id's body with the incremental blob API, straight into a
 * buffer of its own (no second copy inside SQLite). Reader thread. */
int store_read_body(struct store *st, struct store_dmsg *m)
{
    sqlite3_blob *blob = NULL;
    int rc, len;

    rc = sqlite3_blob_open(st->xdb, "main", "message_body", "data", m->id, 0, &blob);
    if (rc != SQLITE_OK)
        goto done;
    len = sqlite3_blob_bytes(blob);
    if ((uint64_t)len != m->size) {
        log_warn("%s: stored body has %d bytes, message.size says %llu", m->queue_id, len,
                 (unsigned long long)m->size);
        m->size = (uint64_t)len; /* deliver what is there */
    }
    m->body = malloc((size_t)len + 1);
    if (!m->body) {
        rc = SQLITE_NOMEM;
        goto done;
    }
    rc = len > 0 ? sqlite3_blob_read(blob, m->body, len, 0) : SQLITE_OK;
    m->body[len] = '\0';
done:
    if (blob)
        sqlite3_blob_close(blob);
    return rc;
}

static const char *job_name(enum req_kind k)
{
    return k == REQ_FETCH    ? "fetch"
           : k == REQ_CHUNK  ? "chunk"
           : k == REQ_COUNT  ? "count"
           : k == REQ_LIST   ? "list"
           : k == REQ_REPORT ? "report"
                             : "scan";
}

/* Run one job in a read transaction of its own, so that its queries see
 * one state of the queue and no snapshot is held between jobs (that would
 * stop checkpoints). On failure the results are emptied: the callback gets
 * STORE_ERR_IO and nothing half-read. Reader thread. */
static void job_run(struct store *st, struct store_req *r)
{
    int rc;

    rc = rstmt_exec(st, RS_BEGIN);
    if (rc == SQLITE_OK) {
        if (r->kind == REQ_FETCH)
            rc = store_job_fetch(st, r);
        else if (r->kind == REQ_COUNT)
            rc = store_job_count(st, r);
        else if (r->kind == REQ_LIST)
            rc = store_job_list(st, r);
        else if (r->kind == REQ_REPORT)
            rc = r->by_sender ? store_job_senders(st, r) : store_job_report(st, r);
        else if (r->kind == REQ_CHUNK)
            rc = store_job_chunk(st, r);
        else
            rc = store_job_scan(st, r);
    }
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_INTERRUPT)
            log_debug("store: %s %s interrupted by store_close", job_name(r->kind),
                      r->domain ? r->domain : "");
        else
            log_warn("store: %s %s failed: %s", job_name(r->kind), r->domain ? r->domain : "",
                     rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(st->xdb));
    }
    if (!sqlite3_get_autocommit(st->xdb))
        rstmt_exec(st, rc == SQLITE_OK ? RS_END : RS_ROLLBACK);
    if (r->status != STORE_ERR_GONE) /* a chunk of a message that has left */
        r->status = rc == SQLITE_OK ? STORE_OK : STORE_ERR_IO;
    if (r->status != STORE_OK) {
        if (r->batch) {
            for (size_t i = 0; i < r->batch->n; i++)
                store_dmsg_clear(&r->batch->msgs[i]);
            free(r->batch->msgs);
            memset(r->batch, 0, sizeof *r->batch);
        }
        if (r->count) {
            for (size_t i = 0; i < r->count->ndomains; i++)
                free(r->count->domains[i]);
            free(r->count->domains);
            free(r->count->domain_messages);
            memset(r->count, 0, sizeof *r->count);
        }
        store_scan_free(r->scan, r->nscan);
        r->scan = NULL;
        r->nscan = 0;
        if (r->report)
            store_report_clear(r->report);
    }
}

/* The reader thread: take jobs in order, run them, hand the results to the
 * loop. Exits as soon as closing is set; store_close fails the jobs it
 * left (they were never started). */
static void reader_main(void *arg)
{
    struct store *st = arg;
    struct store_req *r;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        uv_mutex_lock(&st->mu);
        while (!st->jobs.head && !st->closing)
            uv_cond_wait(&st->rcv, &st->mu);
        if (st->closing) {
            uv_mutex_unlock(&st->mu);
            break;
        }
        r = st->jobs.head;
        st->jobs.head = r->next;
        if (!st->jobs.head)
            st->jobs.tail = NULL;
        uv_mutex_unlock(&st->mu);

        st->r_steps = st->r_fullscan = 0;
        job_run(st, r);

        uv_mutex_lock(&st->mu);
        list_append(&st->done, r);
        st->stats.reads++;
        st->stats.read_steps += st->r_steps;
        st->stats.read_fullscan_steps += st->r_fullscan;
        uv_mutex_unlock(&st->mu);
        uv_async_send(st->async);
    }
}

/* Encode v as exactly n base-36 digits (zero-padded, most significant first). */
static void qid_encode(uint64_t v, char *out, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = qid_digits[v % 36];
        v /= 36;
    }
}

/* Decode n base-36 digits; -1 if one is not [0-9A-Z]. */
static int qid_decode(const char *s, int n, uint64_t *v)
{
    const char *p;

    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!s[i] || !(p = strchr(qid_digits, s[i])))
            return -1;
        *v = *v * 36 + (uint64_t)(p - qid_digits);
    }
    return 0;
}

/* Queue ids must not repeat even if the clock went back while relayd was
 * down: start after the largest id still in the queue. Ids have a fixed
 * width, so text order is numeric order. Start-up only. */
static int qid_seed(struct store *st, char *err, size_t errlen)
{
    char last[64];
    uint64_t us, seq;
    int rc;

    rc = exec_text(st->db, "SELECT max(queue_id) FROM message", last, sizeof last);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
        return -1;
    }
    if (strlen(last) == STORE_QID_LEN && qid_decode(last, QID_TIME_DIGITS, &us) == 0 &&
        qid_decode(last + QID_TIME_DIGITS, QID_SEQ_DIGITS, &seq) == 0) {
        st->qid_us = us;
        st->qid_seq = (unsigned)seq;
    }
    return 0;
}

/* Bring the schema up to date: migration i (0-based) takes user_version
 * from i to i + 1, each in its own transaction. Start-up only. */
static int migrate(struct store *st, int v, char *err, size_t errlen)
{
    char sql[64];
    int rc;

    for (; v < store_schema_version; v++) {
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(st->db, store_schema_migrations[v], NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s: schema migration %d failed: %s", st->path, v + 1,
                     sqlite3_errmsg(st->db));
            if (!sqlite3_get_autocommit(st->db))
                sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        log_info("queue %s: schema migrated to version %d", st->path, v + 1);
    }
    return 0;
}

/* Open the write connection and set it up: WAL, synchronous=FULL (a commit
 * is on disk when COMMIT returns), foreign keys, a busy timeout, a quick
 * integrity check, the schema. Start-up only. */
static int open_write(struct store *st, char *err, size_t errlen)
{
    char buf[256];
    int rc, version;

    rc = sqlite3_open_v2(st->path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    /* Read the header before changing anything: a file that is no database
     * fails here, and a queue written by a newer relayd is refused rather
     * than guessed at. */
    rc = exec_text(st->db, "PRAGMA user_version", buf, sizeof buf);
    if (rc != SQLITE_OK)
        goto fail;
    version = atoi(buf);
    if (version > store_schema_version) {
        snprintf(err, errlen, "%s: queue schema version %d is newer than this relayd (%d)",
                 st->path, version, store_schema_version);
        return -1;
    }
    rc = exec_text(st->db, "PRAGMA journal_mode=WAL", buf, sizeof buf);
    if (rc != SQLITE_OK)
        goto fail;
    if (strcmp(buf, "wal") != 0) {
        snprintf(err, errlen, "%s: cannot use WAL journal mode (got \"%s\")", st->path, buf);
        return -1;
    }
    rc = sqlite3_exec(st->db,
                      "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                      " PRAGMA journal_size_limit=" /* keep a big WAL from staying big */
                      "67108864",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    /* The header was read above; reading the schema reads its pages (a
     * damaged one fails here). The whole-file quick_check is store_check.c's,
     * after ready: it reads every page, 1.7 s at a million messages. */
    rc = exec_text(st->db, "SELECT count(*) FROM sqlite_schema WHERE sql IS NOT NULL", buf,
                   sizeof buf);
    if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
        snprintf(err, errlen, "%s: queue is damaged (%s)", st->path, sqlite3_errmsg(st->db));
        return -1;
    }
    if (rc != SQLITE_OK)
        goto fail;
    return migrate(st, version, err, errlen);
fail:
    if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB)
        snprintf(err, errlen, "%s: queue is damaged (%s)", st->path,
                 st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    else
        snprintf(err, errlen, "%s: %s", st->path,
                 st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    return -1;
}

/* Release what store_open got so far; the thread and async are not running. */
static void store_free(struct store *st)
{
    store_usage_close(st);
    store_removed_close(st);
    for (int i = 0; i < SS_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    for (int i = 0; i < RS_COUNT; i++)
        sqlite3_finalize(st->rstmt[i]);
    /* The read connections first: the last connection to close checkpoints
     * and removes the WAL, which only the writer can do. */
    sqlite3_close(st->xdb);
    sqlite3_close(st->rdb);
    sqlite3_close(st->db);
    free(st->chunk);
    free(st->path);
    free(st);
}

int store_open(uv_loop_t *loop, const char *path, struct store **out, char *err, size_t errlen)
{
    struct store *st;
    int rc, sync_ok = 0;

    *out = NULL;
    st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path)) || !(st->chunk = malloc(STORE_CHUNK)) ||
        !(st->async = malloc(sizeof *st->async))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    st->loop = loop;
    if (open_write(st, err, errlen) < 0)
        goto fail;
    for (int i = 0; i < SS_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->db, store_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &st->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(st->db));
            goto fail;
        }
    }
    if (qid_seed(st, err, errlen) < 0)
        goto fail;
    {
        char last[32];

        rc = exec_text(st->db, "SELECT coalesce(max(id), 0) FROM message", last, sizeof last);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
            goto fail;
        }
        st->next_msg_id = strtoll(last, NULL, 10) + 1;
    }
    sqlite3_wal_hook(st->db, on_wal_commit, st);
    rc = sqlite3_open_v2(path, &st->rdb, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: read connection: %s", path,
                 st->rdb ? sqlite3_errmsg(st->rdb) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(st->rdb, 1);
    sqlite3_busy_timeout(st->rdb, STORE_BUSY_TIMEOUT_MS);
    rc = sqlite3_open_v2(path, &st->xdb, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: reader connection: %s", path,
                 st->xdb ? sqlite3_errmsg(st->xdb) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(st->xdb, 1);
    sqlite3_busy_timeout(st->xdb, STORE_BUSY_TIMEOUT_MS);

    if (uv_mutex_init(&st->mu) != 0) {
        snprintf(err, errlen, "%s: cannot create the store mutex", path);
        goto fail;
    }
    if (uv_cond_init(&st->cv) != 0) {
        uv_mutex_destroy(&st->mu);
        snprintf(err, errlen, "%s: cannot create the store condition variable", path);
        goto fail;
    }
    if (uv_cond_init(&st->rcv) != 0) {
        uv_cond_destroy(&st->cv);
        uv_mutex_destroy(&st->mu);
        snprintf(err, errlen, "%s: cannot create the store condition variable", path);
        goto fail;
    }
    sync_ok = 1;
    if (store_usage_open(st, err, errlen) < 0 || store_removed_open(st, err, errlen) < 0)
        goto fail;
    rc = uv_async_init(loop, st->async, on_async);
    if (rc != 0) {
        snprintf(err, errlen, "%s: uv_async_init: %s", path, uv_strerror(rc));
        goto fail;
    }
    st->async->data = st;
    /* From here on xdb is the reader thread's. */
    rc = uv_thread_create(&st->reader, reader_main, st);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot start reader thread: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)st->async, on_async_closed);
        st->async = NULL;
        goto fail;
    }
    /* From here on the write connection is the store thread's. */
    rc = uv_thread_create(&st->thread, store_thread_main, st);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot start store thread: %s", path, uv_strerror(rc));
        uv_mutex_lock(&st->mu);
        st->closing = 1;
        uv_cond_signal(&st->rcv);
        uv_mutex_unlock(&st->mu);
        uv_thread_join(&st->reader);
        uv_close((uv_handle_t *)st->async, on_async_closed);
        st->async = NULL;
        goto fail;
    }
    *out = st;
    return 0;
fail:
    if (st) {
        if (sync_ok) {
            uv_cond_destroy(&st->rcv);
            uv_cond_destroy(&st->cv);
            uv_mutex_destroy(&st->mu);
        }
        free(st->async);
        store_free(st);
    }
    return -1;
}

int store_submit(struct store *st, struct store_msg *msg, store_submit_cb cb, void *arg)
{
    struct store_req *r;

    if (!msg || !cb)
        return UV_EINVAL;
    r = calloc(1, sizeof *r);
    if (!r)
        return UV_ENOMEM;
    r->kind = REQ_SUBMIT;
    r->msg = msg;
    r->cb.submit = cb;
    r->arg = arg;
    uv_mutex_lock(&st->mu);
    if (st->closing) {
        uv_mutex_unlock(&st->mu);
        free(r);
        return UV_ECANCELED;
    }
    list_append(&st->pending, r);
    st->stats.pending++;
    uv_cond_signal(&st->cv);
    uv_mutex_unlock(&st->mu);
    return 0;
}

/* Microseconds since the epoch in 11 base-36 digits (good until the year
 * 6000), then a 3-digit sequence for ids within one microsecond. The pair
 * only ever grows: if the clock stands still or goes back, the sequence
 * counts on from the last id (carrying into the time part). */
void store_new_queue_id(struct store *st, char out[STORE_QID_LEN + 1])
{
    struct timespec ts;
    uint64_t now;

    clock_gettime(CLOCK_REALTIME, &ts);
    now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (now > st->qid_us) {
        st->qid_us = now;
        st->qid_seq = 0;
    } else if (++st->qid_seq >= QID_SEQ_MAX) {
        st->qid_us++;
        st->qid_seq = 0;
    }
    qid_encode(st->qid_us, out, QID_TIME_DIGITS);
    qid_encode(st->qid_seq, out + QID_TIME_DIGITS, QID_SEQ_DIGITS);
    out[STORE_QID_LEN] = '\0';
}

/* Stop taking requests, let the store thread commit what is pending and
 * exit, stop the reader (interrupting the job it runs), then run the
 * remaining callbacks here (this is the loop thread): finished requests in
 * the order they finished, then the jobs the reader never started, with
 * STORE_ERR_IO. Then release everything. The async handle is freed by its
 * close callback when the loop next runs; nothing else stays active. */
void store_close(struct store *st)
{
    struct store_req *r, *left;

    if (!st)
        return;
    uv_mutex_lock(&st->mu);
    st->closing = 1;
    uv_cond_signal(&st->cv);
    uv_cond_signal(&st->rcv);
    uv_mutex_unlock(&st->mu);
    sqlite3_interrupt(st->xdb); /* thread-safe; a no-op when nothing runs */
    store_check_cancel_all(st);
    uv_thread_join(&st->thread);
    uv_thread_join(&st->reader);

    if (st->async_gone)
        *st->async_gone = 1; /* we are inside on_async: it must stop */
    r = list_take(&st->done);
    left = list_take(&st->jobs);
    for (struct store_req *j = left; j; j = j->next)
        j->status = STORE_ERR_IO;
    /* st stays valid while they run: a request from one of them is
     * refused (UV_ECANCELED), as store.h promises. */
    run_callbacks(r);
    run_callbacks(left);
    uv_close((uv_handle_t *)st->async, on_async_closed);
    uv_cond_destroy(&st->rcv);
    uv_cond_destroy(&st->cv);
    uv_mutex_destroy(&st->mu);
    store_free(st);
}

void store_stats(struct store *st, struct store_stats *out)
{
    uv_mutex_lock(&st->mu);
    *out = st->stats;
    uv_mutex_unlock(&st->mu);
}

/* Run sql (with an optional text parameter) on the read connection and copy
 * the first row's column col... into out; see store_query_value. */
static int read_row(struct store *st, const char *sql, const char *param, int64_t *ints, int nints,
                    char **out, size_t *outlen, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    const void *v;
    int rc, len, ret = -1;

    rc = sqlite3_prepare_v2(st->rdb, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        goto done;
    if (param && (rc = sqlite3_bind_text(s, 1, param, -1, SQLITE_STATIC)) != SQLITE_OK)
        goto done;
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto done;
    for (int i = 0; i < nints; i++)
        ints[i] = rc == SQLITE_ROW ? sqlite3_column_int64(s, i) : 0;
    if (out) {
        *out = NULL;
        *outlen = 0;
        if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
            if (sqlite3_column_type(s, 0) == SQLITE_BLOB)
                v = sqlite3_column_blob(s, 0);
            else
                v = sqlite3_column_text(s, 0);
            len = sqlite3_column_bytes(s, 0);
            *out = malloc((size_t)len + 1);
            if (!*out) {
                rc = SQLITE_NOMEM;
                goto done;
            }
            if (len > 0)
                memcpy(*out, v, (size_t)len);
            (*out)[len] = '\0';
            *outlen = (size_t)len;
        }
    }
    ret = 0;
done:
    if (ret < 0 && err)
        snprintf(err, errlen, "%s", rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(st->rdb));
    sqlite3_finalize(s);
    return ret;
}

int store_count_messages(struct store *st, int64_t *n)
{
    return read_row(st, "SELECT count(*) FROM message", NULL, n, 1, NULL, NULL, NULL, 0);
}

int store_count_domain(struct store *st, const char *domain, int64_t *messages, int64_t *recipients)
{
    int64_t v[2];
    int rc;

    rc = read_row(st, "SELECT count(DISTINCT message_id), count(*) FROM recipient WHERE domain = ?",
                  domain, v, 2, NULL, NULL, NULL, 0);
    if (rc == 0) {
        *messages = v[0];
        *recipients = v[1];
    }
    return rc;
}

int store_query_value(struct store *st, const char *sql, char **out, size_t *outlen, char *err,
                      size_t errlen)
{
    return read_row(st, sql, NULL, NULL, 0, out, outlen, err, errlen);
}

/* ---- requests: how each public call reaches its thread ---- */

struct store_req *store_req_new(enum req_kind kind, void *arg)
{
    struct store_req *r = calloc(1, sizeof *r);

    if (r) {
        r->kind = kind;
        r->arg = arg;
    }
    return r;
}

/* Hand r to the reader or the store thread; on error r is freed and its
 * callback never runs. Loop thread. */
int store_req_queue(struct store *st, struct store_req *r, int reader)
{
    uv_mutex_lock(&st->mu);
    if (st->closing) {
        uv_mutex_unlock(&st->mu);
        store_req_free(r);
        return UV_ECANCELED;
    }
    if (reader) {
        list_append(&st->jobs, r);
        uv_cond_signal(&st->rcv);
    } else {
        list_append(&st->pending, r);
        uv_cond_signal(&st->cv);
    }
    uv_mutex_unlock(&st->mu);
    return 0;
}
