/*
 * control_backup: the `backup` command of the operators' socket (etrnctl
 * backup; root and relayd's user only, as the command table says). It asks
 * store_backup.c for an online copy of the queue and streams it: one record
 * {"backup_size":N}, then records {"offset":O,"data":"BASE64"} of at most
 * CTL_BACKUP_CHUNK bytes of the copy each (RFC 4648 base64: JSON carries
 * text), each read only once the client has taken the one before, then the
 * final {"ok":true}. No SQLite and no file I/O here; the loop never waits.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

#include "base64.h"
#include "control_int.h"
#include "log.h"
#include "server.h"
#include "store.h"

/* Bytes of the copy per record: 64 KiB of base64, one read on the pool. */
#define CTL_BACKUP_CHUNK (48 * 1024)

static void backup_next(struct ctl_conn *k);

static void on_backup_chunk(const char *data, size_t len, int status, void *arg)
{
    struct ctl_conn *k = arg;
    char *enc;
    struct jw w;

    if (!ctl_back(k))
        return; /* the connection went: its end frees the copy */
    if (status != STORE_OK || (len == 0 && k->backup_off < k->backup_size)) {
        log_warn("control: backup for uid %u: cannot read the copy", (unsigned)k->uid);
        ctl_finish(k, "internal", "cannot read the copy");
        return;
    }
    enc = malloc(BASE64_ENCODED_LEN(len) + 1);
    if (enc == NULL) {
        ctl_finish(k, "internal", "out of memory");
        return;
    }
    base64_encode(data, len, enc);
    jw_begin(&w, k);
    jw_int(&w, "offset", (int64_t)k->backup_off);
    jw_str(&w, "data", enc);
    jw_end(&w);
    free(enc);
    k->backup_off += len;
    if (k->backup_off >= k->backup_size) {
        log_info("control: backup by uid %u: %" PRIu64 " bytes sent", (unsigned)k->uid,
                 k->backup_size);
        ctl_finish(k, NULL, NULL);
        return;
    }
    k->on_drain = backup_next; /* the next piece once this one is written */
    ctl_pump(k);
}

static void backup_next(struct ctl_conn *k)
{
    uint64_t left = k->backup_size - k->backup_off;
    int rc = store_backup_read(k->backup, k->backup_off,
                               left < CTL_BACKUP_CHUNK ? (size_t)left : CTL_BACKUP_CHUNK,
                               on_backup_chunk, k);

    if (rc != 0) {
        ctl_finish(k, "internal", "cannot read the copy: %s", uv_strerror(rc));
        return;
    }
    k->busy++;
}

static void on_backup_done(struct store_backup *b, int status, uint64_t size, const char *why,
                           void *arg)
{
    struct ctl_conn *k = arg;
    struct jw w;

    (void)b;
    if (!ctl_back(k))
        return;
    if (status != STORE_OK || size == 0) {
        log_warn("control: backup for uid %u failed: %s", (unsigned)k->uid,
                 why != NULL ? why : "empty copy");
        ctl_finish(k, "internal", "backup failed: %s", why != NULL ? why : "empty copy");
        return;
    }
    k->backup_size = size;
    k->backup_off = 0;
    jw_begin(&w, k);
    jw_int(&w, "backup_size", (int64_t)size);
    jw_end(&w);
    k->on_drain = backup_next;
    ctl_pump(k);
}

void ctl_cmd_backup(struct ctl_conn *k)
{
    struct store *st = k->c->srv->store;
    int rc = st != NULL ? store_backup_start(st, on_backup_done, k, &k->backup) : UV_ECANCELED;

    if (rc != 0) {
        ctl_finish(k, "internal", "cannot start the backup: %s", uv_strerror(rc));
        return;
    }
    log_info("control: backup by uid %u (pid %d) started", (unsigned)k->uid, (int)k->pid);
    k->busy++;
}
