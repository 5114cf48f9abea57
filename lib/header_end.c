/*
 * header_end: find the empty line that ends a message's header section
 * (RFC 5322 §2.1) across pieces of the stored message. Pure: no I/O.
 */
#include "header_end.h"

#define CRLF     0x0d0au
#define CRLFCRLF 0x0d0a0d0au

void header_end_init(struct header_end *h)
{
    h->pos = 0;
    h->tail = 0;
    h->found = 0;
    h->hdr_len = 0;
    h->body_off = 0;
}

void header_end_feed(struct header_end *h, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !h->found; i++) {
        h->tail = h->tail << 8 | (unsigned char)p[i];
        h->pos++;
        if (h->pos == 2 && (h->tail & 0xffffu) == CRLF) {
            /* an empty first line: no header fields at all */
            h->found = 1;
            h->hdr_len = 0;
            h->body_off = 2;
        } else if (h->pos >= 4 && h->tail == CRLFCRLF) {
            h->found = 1;
            h->hdr_len = h->pos - 2;
            h->body_off = h->pos;
        }
    }
}
