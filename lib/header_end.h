/*
 * header_end: where a stored message's header section ends and its body
 * begins (RFC 5322 §2.1: the first empty line), found as the message
 * streams by in pieces, so `etrnctl show --headers` and `--body` (as
 * postcat -h and -b) get their part without anyone holding the message.
 * Lines end in CRLF (the stored form). Pure: no I/O, no allocation.
 */
#ifndef RELAYD_HEADER_END_H
#define RELAYD_HEADER_END_H

#include <stddef.h>
#include <stdint.h>

struct header_end {
    uint64_t pos;      /* bytes fed so far */
    uint32_t tail;     /* the last four of them */
    int found;         /* the empty line was seen */
    uint64_t hdr_len;  /* when found: the header section's bytes, the CRLF
                        * of its last line included */
    uint64_t body_off; /* when found: where the body starts (after the
                        * empty line) */
};

void header_end_init(struct header_end *h);
/* The next n bytes of the message. Once found, further bytes are ignored. */
void header_end_feed(struct header_end *h, const char *p, size_t n);

#endif
