/*
 * smtp_data: decodes the DATA byte stream (after 354) into the message as stored.
 * Owns end-of-data detection, bare CR/LF normalisation, dot-unstuffing and the
 * Received: count. Pure: no I/O, no allocation, never consumes past the terminator.
 *
 * The exact rule (RFC 5321 §2.3.8, §4.1.1.4, §4.5.2), on the raw input:
 *  - A "real CRLF" is a CR immediately followed by LF. A CR not followed by LF
 *    is a bare CR; an LF not preceded by CR is a bare LF. Each bare CR and each
 *    bare LF is written out as CRLF, so the output has only CRLF line ends.
 *  - A "real line" starts at the very start of the DATA stream or right after a
 *    real CRLF, and only there. A bare CR or bare LF ends the output line but
 *    does not start a real line: the bytes after it are copied as they are, a
 *    leading dot included, and they can never end the data.
 *  - If a real line starts with ".", that dot is removed (unstuffing). If the
 *    real line is exactly "." followed by a real CRLF, that is the end of data:
 *    the dot and that CRLF are consumed and not written; the CRLF before the
 *    dot stays in the message. Hence only <CRLF>.<CRLF> ends data (or ".<CRLF>"
 *    at the very start: an empty message), and for input from a conforming
 *    sender this is exactly the inverse of §4.5.2 dot-stuffing.
 *  - Consequence for non-conforming input: a real line "." followed by a bare
 *    CR or bare LF loses its dot like any other real line ("\r\n.\nX" gives
 *    "\r\n\r\nX"), while a "." after a bare LF/CR is kept ("\n.\r\n" gives
 *    "\r\n.\r\n"). Both are safe to store: the next hop dot-stuffs every line.
 *  - Received: fields are counted on the decoded output (what is stored and
 *    what later hops see), up to its first empty line.
 */
#include "smtp_data.h"

/* Input side: what has been seen that still decides how the next byte reads. */
enum dstate {
    DS_BOL = 0, /* at the start of a real line (stream start or after real CRLF) */
    DS_MID,     /* inside a line, or right after a normalised bare CR/LF */
    DS_CR,      /* a CR is pending: real CRLF or bare CR depends on the next byte */
    DS_DOT,     /* a real line began with "."; the dot has been dropped */
    DS_DOT_CR,  /* a real line began with ".<CR>": the end of data if LF follows */
    DS_DONE     /* the terminator has been consumed; feed() consumes nothing more */
};

/* Header scan over the decoded output, which has only CRLF line ends. */
enum hstate {
    HS_LINE = 0, /* at the start of an output line in the header section */
    HS_NAME,     /* matching "Received" case-insensitively; hdr_match bytes so far */
    HS_WSP,      /* after "Received": optional SP/HTAB, then ':' makes it a field */
    HS_SKIP,     /* the rest of a line that cannot (or can no longer) count */
    HS_CR,       /* CR in a line: LF follows, then a new line starts */
    HS_EMPTY_CR, /* CR at the start of a line: an empty line, the header section ends */
    HS_BODY      /* past the header section: nothing more to count */
};

static const char received_name[] = "received";
#define RECEIVED_LEN (sizeof(received_name) - 1)

void smtp_data_init(struct smtp_data_dec *d)
{
    d->state = DS_BOL;
    d->hdr_state = HS_LINE;
    d->hdr_match = 0;
    d->received = 0;
}

unsigned smtp_data_received_count(const struct smtp_data_dec *d)
{
    return d->received;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/*
 * Advance the header scan over decoded output bytes. A field counts when an
 * output line starts with "Received", any case (RFC 5322 §1.2.2), followed by
 * optional SP/HTAB and ':' (the obsolete WSP before the colon, RFC 5322 §4.5).
 * Lines starting with SP/HTAB are continuations (RFC 5322 §2.2.3), not fields.
 * Keeps only a match index, so memory stays fixed however long a line is.
 */
static void scan_headers(struct smtp_data_dec *d, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n && d->hdr_state != HS_BODY; i++) {
        unsigned char c = p[i];

        switch (d->hdr_state) {
        case HS_LINE:
            if (c == '\r') {
                d->hdr_state = HS_EMPTY_CR;
            } else if (ascii_lower(c) == (unsigned char)received_name[0]) {
                d->hdr_match = 1;
                d->hdr_state = HS_NAME;
            } else {
                d->hdr_state = HS_SKIP; /* continuation or another field */
            }
            break;
        case HS_NAME:
            if (c == '\r') {
                d->hdr_state = HS_CR;
            } else if (ascii_lower(c) == (unsigned char)received_name[d->hdr_match]) {
                if (++d->hdr_match == RECEIVED_LEN)
                    d->hdr_state = HS_WSP;
            } else {
                d->hdr_state = HS_SKIP;
            }
            break;
        case HS_WSP:
            if (c == ':') {
                d->received++;
                d->hdr_state = HS_SKIP;
            } else if (c == '\r') {
                d->hdr_state = HS_CR;
            } else if (c != ' ' && c != '\t') {
                d->hdr_state = HS_SKIP; /* e.g. "Received-SPF:" */
            }
            break;
        case HS_SKIP:
            if (c == '\r')
                d->hdr_state = HS_CR;
            break;
        case HS_CR:
            /* The decoder writes CR only as part of CRLF, so this is the LF. */
            d->hdr_state = (c == '\n') ? HS_LINE : HS_SKIP;
            break;
        case HS_EMPTY_CR:
            /* RFC 5322 §2.1: the first empty line ends the header section. */
            d->hdr_state = (c == '\n') ? HS_BODY : HS_SKIP;
            break;
        default:
            break;
        }
    }
}

/*
 * Decode one chunk. Every input byte is examined once by the state machine
 * above; a CR (or ".<CR>" at a real line start) at the end of a chunk stays
 * pending in d->state and produces no output until the next byte is known.
 * Per input byte at most 3 output bytes appear (a pending bare CR's CRLF plus
 * the byte itself) and only when that pending CR produced none, so the output
 * never exceeds 2 * in_len + 1 <= SMTP_DATA_OUT_MAX(in_len).
 */
size_t smtp_data_feed(struct smtp_data_dec *d, const char *in, size_t in_len, char *out,
                      size_t *out_len, int *done)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, o = 0;
    int st = d->state;

    *done = 0;
    if (st == DS_DONE) {
        *done = 1;
        goto finish;
    }

    for (; i < in_len; i++) {
        unsigned char c = p[i];

        /* A pending CR is resolved by this byte: LF makes it a real CRLF,
         * anything else makes it a bare CR written as CRLF, after which c is
         * read as an ordinary byte in the middle of a line. */
        if (st == DS_CR || st == DS_DOT_CR) {
            if (c == '\n') {
                if (st == DS_DOT_CR) {
                    st = DS_DONE; /* <CRLF>.<CRLF>: RFC 5321 §4.1.1.4 */
                    i++;
                    break;
                }
                out[o++] = '\r';
                out[o++] = '\n';
                st = DS_BOL;
                continue;
            }
            out[o++] = '\r';
            out[o++] = '\n';
            st = DS_MID;
        }

        switch (c) {
        case '\r':
            st = (st == DS_DOT) ? DS_DOT_CR : DS_CR;
            break;
        case '\n':
            /* Bare LF: normalised, but it does not start a real line. */
            out[o++] = '\r';
            out[o++] = '\n';
            st = DS_MID;
            break;
        case '.':
            if (st == DS_BOL) {
                st = DS_DOT; /* RFC 5321 §4.5.2: drop the first dot of the line */
                break;
            }
            out[o++] = '.';
            st = DS_MID;
            break;
        default:
            out[o++] = (char)c;
            st = DS_MID;
            break;
        }
    }

    d->state = st;
    if (st == DS_DONE)
        *done = 1;
    scan_headers(d, (const unsigned char *)out, o);

finish:
    *out_len = o;
    return i;
}
