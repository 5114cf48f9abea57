/*
 * store_removed: "QUEUEID: removed" when a message leaves the queue, as
 * Postfix's qmgr logs it, so a queue id's story in the log has an end
 * (delivered, bounced or deleted by an operator). A temporary trigger on the
 * write connection notes the queue id of every message row deleted; the
 * note is part of the transaction, so after a commit the ids are read back
 * and logged, and after a rollback there is nothing to read. Store thread.
 */
#define LOG_SERVICE "qmgr" /* log lines are tagged relayd/qmgr */
#include "store.h"
#include "store_int.h"

#include <stdio.h>

#include <sqlite3.h>

#include "log.h"

int store_removed_open(struct store *st, char *err, size_t errlen)
{
    static const char *const sql =
        "PRAGMA temp_store=MEMORY;"
        "CREATE TEMP TABLE removed_log (queue_id TEXT NOT NULL);"
        "CREATE TEMP TRIGGER removed_note AFTER DELETE ON main.message"
        " BEGIN INSERT INTO removed_log (queue_id) VALUES (OLD.queue_id); END;";
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(st->db, "SELECT queue_id FROM removed_log", -1,
                                SQLITE_PREPARE_PERSISTENT, &st->removed_sel, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(st->db, "DELETE FROM removed_log", -1, SQLITE_PREPARE_PERSISTENT,
                                &st->removed_del, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: removed_log: %s", st->path, sqlite3_errmsg(st->db));
        return -1;
    }
    return 0;
}

void store_removed_close(struct store *st)
{
    sqlite3_finalize(st->removed_sel);
    sqlite3_finalize(st->removed_del);
    st->removed_sel = st->removed_del = NULL;
}

void store_removed_after_batch(struct store *st)
{
    int n = 0;

    if (st->removed_sel == NULL)
        return;
    while (sqlite3_step(st->removed_sel) == SQLITE_ROW) {
        log_info("%s: removed", (const char *)sqlite3_column_text(st->removed_sel, 0));
        n++;
    }
    sqlite3_reset(st->removed_sel);
    if (n > 0) {
        sqlite3_step(st->removed_del); /* the temp database: no fsync */
        sqlite3_reset(st->removed_del);
    }
}
