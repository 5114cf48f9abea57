/*
 * buf: a growable byte buffer with a hard maximum (see buf.h).
 * Owns b->data; grows by doubling and never allocates more than b->max bytes,
 * so no peer can make it grow without bound. Does no I/O.
 */
#include "buf.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first allocation; small enough for a command line, doubled from there. */
#define BUF_MIN_CAP 64

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/*
 * Make room for b->len + n bytes. Capacity doubles from BUF_MIN_CAP until it
 * fits and is then clamped to b->max, so the allocation never exceeds the cap.
 * 0, -ENOBUFS (the contents would exceed max) or -ENOMEM; on failure the
 * buffer is unchanged.
 */
static int buf_reserve(struct buf *b, size_t n)
{
    size_t want, cap;
    char *p;

    if (n > b->max || b->len > b->max - n)
        return -ENOBUFS;
    want = b->len + n;
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < want && cap <= b->max / 2)
        cap *= 2;
    if (cap < want || cap > b->max)
        cap = b->max; /* want <= max, so this still fits */
    p = realloc(b->data, cap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    int rc;

    if (n == 0)
        return 0;
    rc = buf_reserve(b, n);
    if (rc == 0) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
    return rc;
}

/*
 * Two passes of vsnprintf: measure, make room, format. vsnprintf always
 * writes a NUL, which is not part of the contents; when the text fills the
 * buffer exactly to max there is no room for it in place, so the text is
 * formatted in a temporary and copied. -EINVAL when vsnprintf fails.
 */
int buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, rc;
    char *tmp = NULL;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        rc = -EINVAL;
        goto done;
    }
    if (n == 0) {
        rc = 0;
        goto done;
    }
    rc = buf_reserve(b, (size_t)n);
    if (rc != 0)
        goto done;
    if (b->cap - b->len > (size_t)n) {
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    } else {
        tmp = malloc((size_t)n + 1);
        if (tmp == NULL) {
            rc = -ENOMEM;
            goto done;
        }
        va_start(ap, fmt);
        vsnprintf(tmp, (size_t)n + 1, fmt, ap);
        va_end(ap);
        memcpy(b->data + b->len, tmp, (size_t)n);
    }
    b->len += (size_t)n;
done:
    free(tmp);
    return rc;
}

void buf_consume(struct buf *b, size_t n)
{
    assert(n <= b->len);
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* The first "\r\n": a CR alone (bare, or last byte so far) does not count. */
long buf_find_crlf(const struct buf *b)
{
    const char *p = b->data, *end = b->data + b->len;

    if (b->len < 2)
        return -1;
    while (p < end - 1) {
        const char *cr = memchr(p, '\r', (size_t)(end - 1 - p));

        if (cr == NULL)
            break;
        if (cr[1] == '\n')
            return (long)(cr - b->data);
        p = cr + 1;
    }
    return -1;
}
