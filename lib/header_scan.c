/*
 * header_scan: one header field's value from a message stream (see
 * header_scan.h). A small state machine over bytes, so a field split across
 * any number of feeds is found the same way.
 */
#include "header_scan.h"

#include <string.h>
#include <strings.h>

enum {
    HS_LINE_START = 0, /* at the start of a line in the header section */
    HS_NAME,           /* reading a field name */
    HS_SKIP,           /* in a field that is not the one sought */
    HS_VALUE,          /* in the value of the field sought */
    HS_VALUE_EOL,      /* after a line of that value: is the next a continuation? */
    HS_CR              /* a CR at the end of an empty line */
};

void header_scan_init(struct header_scan *h, const char *want)
{
    memset(h, 0, sizeof(*h));
    h->want = want;
}

static void value_char(struct header_scan *h, char c)
{
    if (c == '\r' || c == '\n')
        return;
    if (c == '\t')
        c = ' ';
    if ((unsigned char)c < 0x20 || c == 0x7f)
        c = '?';
    if (c == ' ' && (h->vlen == 0 || h->value[h->vlen - 1] == ' '))
        return; /* leading white space, and folding, become one space */
    if (h->vlen < HEADER_SCAN_VALUE_MAX)
        h->value[h->vlen++] = c;
}

/* The field sought ended (a new line that is no continuation). */
static void value_end(struct header_scan *h)
{
    while (h->vlen > 0 && h->value[h->vlen - 1] == ' ')
        h->vlen--;
    h->value[h->vlen] = '\0';
    h->found = 1;
    h->done = 1;
}

void header_scan_feed(struct header_scan *h, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !h->done; i++) {
        char c = p[i];

        switch (h->state) {
        case HS_LINE_START:
            if (c == '\r') {
                h->state = HS_CR;
            } else if (c == '\n') {
                h->done = 1; /* the empty line: no more header fields */
            } else if (c == ' ' || c == '\t') {
                h->state = HS_SKIP; /* a continuation of a field not sought */
            } else {
                h->nlen = 0;
                h->name[h->nlen++] = c;
                h->state = HS_NAME;
            }
            break;
        case HS_CR:
            /* CR LF alone is the empty line; anything else (a bare CR) is
             * not a header line we can read: stop looking */
            h->done = 1;
            break;
        case HS_NAME:
            if (c == ':') {
                h->name[h->nlen] = '\0';
                /* by length: a NUL inside the name must not end it early */
                if (h->nlen == strlen(h->want) && strncasecmp(h->name, h->want, h->nlen) == 0) {
                    h->vlen = 0;
                    h->state = HS_VALUE;
                } else {
                    h->state = HS_SKIP;
                }
            } else if (c == '\n') {
                h->state = HS_LINE_START; /* not a field: ignore the line */
            } else if (h->nlen < HEADER_SCAN_NAME_MAX) {
                h->name[h->nlen++] = c;
            } else {
                h->state = HS_SKIP;
            }
            break;
        case HS_SKIP:
            if (c == '\n')
                h->state = HS_LINE_START;
            break;
        case HS_VALUE:
            if (c == '\n') {
                h->state = HS_VALUE_EOL;
                break;
            }
            value_char(h, c);
            break;
        case HS_VALUE_EOL:
            if (c == ' ' || c == '\t') {
                value_char(h, ' ');
                h->state = HS_VALUE;
            } else {
                value_end(h);
            }
            break;
        }
    }
}

const char *header_scan_value(struct header_scan *h)
{
    /* the message ended inside the value */
    if (!h->found && (h->state == HS_VALUE || h->state == HS_VALUE_EOL))
        value_end(h);
    return h->found ? h->value : NULL;
}
