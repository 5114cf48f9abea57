/*
 * smtp_reply: a server's reply as the delivery client (lib/smtp_client.c)
 * reads it, line by line: the multiline reply (RFC 5321 §4.2.1), its
 * enhanced status code (RFC 2034 §3, RFC 3463), the EHLO keywords the
 * client acts on (RFC 5321 §4.1.1.1 and the extensions' RFCs) and the text,
 * made safe for logs and DSNs. Pure: no I/O, no allocation, no state beyond
 * the reader struct. Splitting the byte stream into lines (and the line
 * length limit) stays with the client, which owns the buffer.
 */
#ifndef RELAYD_SMTP_REPLY_H
#define RELAYD_SMTP_REPLY_H

#include <stddef.h>
#include <stdint.h>

/* Bounds on one reply (a reply is read whole before use). */
#define SMTP_REPLY_MAX_LINES 100
#define SMTP_REPLY_MAX_BYTES (64 * 1024) /* counting 2 bytes of line end per line */

#define SMTP_REPLY_ENH_SIZE  16  /* "5.1.1" and its NUL, with room */
#define SMTP_REPLY_TEXT_SIZE 400 /* text kept of the last line, NUL included */

/* EHLO keywords the client acts on (RFC 2920, 1870, 3207, 6152, 3461, 2034). */
enum {
    SMTP_EXT_PIPELINING = 1 << 0,
    SMTP_EXT_SIZE = 1 << 1,
    SMTP_EXT_STARTTLS = 1 << 2,
    SMTP_EXT_8BITMIME = 1 << 3,
    SMTP_EXT_DSN = 1 << 4,
    SMTP_EXT_ENHANCED = 1 << 5,
};

struct smtp_reply_reader {
    /* the reply being read */
    int lines;
    size_t bytes;
    unsigned rd_ext;
    uint64_t rd_size;
    /* the last complete reply: code, enhanced code ("" if none), text (of
     * its last line, after the enhanced code, control characters as '?'),
     * and for an EHLO reply the SMTP_EXT_* keywords and the SIZE value
     * (0: none or no limit) */
    int code;
    char enh[SMTP_REPLY_ENH_SIZE];
    char text[SMTP_REPLY_TEXT_SIZE];
    unsigned ext;
    uint64_t size;
};

enum smtp_reply_status {
    SMTP_REPLY_MORE = 0,  /* a continuation line: the reply goes on */
    SMTP_REPLY_DONE,      /* the reply is complete: see code, enh, text, ext, size */
    SMTP_REPLY_MALFORMED, /* not a reply line */
    SMTP_REPLY_TOO_LONG   /* more than SMTP_REPLY_MAX_LINES or _MAX_BYTES */
};

/* Zero the reader; a zeroed struct is a reader too. */
void smtp_reply_init(struct smtp_reply_reader *rd);

/*
 * One line of a reply, without its line end. ehlo: the reply answers EHLO,
 * so its lines after the first name keywords. After MALFORMED or TOO_LONG
 * the session cannot go on (where the next reply starts is unknown).
 */
enum smtp_reply_status smtp_reply_line(struct smtp_reply_reader *rd, const char *line, size_t len,
                                       int ehlo);

/* Length of the RFC 3463 status code of class cls ("5.1.1") that t starts
 * with, followed by a space or the end, or 0. */
size_t smtp_reply_enh_len(const char *t, size_t len, int cls);

/* Copy len bytes of reply text into dst (NUL-terminated, cut to dstlen - 1)
 * with control characters other than TAB as '?': it ends up in logs and
 * DSNs. */
void smtp_reply_copy_text(char *dst, size_t dstlen, const char *src, size_t len);

#endif /* RELAYD_SMTP_REPLY_H */
