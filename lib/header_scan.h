/*
 * header_scan: find one header field's value in a message as it streams by
 * (RFC 5322 §2.2: "Name: value", continued on lines that start with white
 * space, ending at the first empty line), without holding the message. The
 * SMTP server feeds it what it stores, so the log can name the Message-ID
 * as Postfix's cleanup does. Pure: no I/O, no allocation; fuzzable.
 */
#ifndef RELAYD_HEADER_SCAN_H
#define RELAYD_HEADER_SCAN_H

#include <stddef.h>

#define HEADER_SCAN_NAME_MAX  64  /* longer names cannot be the one sought */
#define HEADER_SCAN_VALUE_MAX 256 /* the value is cut here (a Message-ID is short) */

struct header_scan {
    const char *want; /* the field name sought, e.g. "Message-ID" (not copied) */
    int state;        /* private */
    int found;        /* the field was seen: value holds it */
    int done;         /* the header section is over (or the field was found) */
    size_t nlen;
    char name[HEADER_SCAN_NAME_MAX + 1];
    size_t vlen;
    char value[HEADER_SCAN_VALUE_MAX + 1]; /* unfolded, white space trimmed */
};

/* Look for the first field named want (matched ignoring case). */
void header_scan_init(struct header_scan *h, const char *want);
/* The next n bytes of the message, lines ending in CRLF or LF. */
void header_scan_feed(struct header_scan *h, const char *p, size_t n);
/* The value found (NUL-terminated, without control characters), or NULL;
 * call it once the message has been fed (a value cut short by the end of
 * the message counts). */
const char *header_scan_value(struct header_scan *h);

#endif
