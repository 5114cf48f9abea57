/*
 * buf: a growable byte buffer with a hard maximum.
 * Owns its memory; every append checks the cap so no peer can make it grow
 * without bound. No I/O.
 */
#ifndef RELAYD_BUF_H
#define RELAYD_BUF_H

#include <stddef.h>

struct buf {
    char *data;  /* owned; NULL until the first append */
    size_t len;  /* bytes in use */
    size_t cap;  /* bytes allocated */
    size_t max;  /* appends that would exceed this fail with -ENOBUFS */
};

/* Prepare an empty buffer that may hold at most max bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t max);
/* Append n bytes. 0, -ENOBUFS (would exceed max; nothing appended) or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Append formatted text (printf). Same return values as buf_append. */
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes (n <= len), keeping the rest. */
void buf_consume(struct buf *b, size_t n);
/* Forget the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Release the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Find the first CRLF-terminated line: returns its length without the CRLF, or -1. */
long buf_find_crlf(const struct buf *b);

#endif
