/*
 * termsafe: bytes made safe to write to a terminal. A message body shown to
 * an operator (etrnctl show) is written by strangers: an ESC or a C1
 * control (CSI, OSC) in it would be a command to the operator's terminal
 * (retitle it, move the cursor, hide text, on some terminals answer back).
 * Everything that is not printable text becomes visible:
 *
 *   CR LF            a line end: "\n" (the terminal's)
 *   TAB              as it is
 *   other C0, DEL    caret notation, as cat -v: ESC -> "^[", a lone CR -> "^M",
 *                    a lone LF -> "^J", DEL -> "^?"
 *   UTF-8 text       as it is (RFC 3629 §4: no overlong forms, no surrogates)
 *   C1 controls      (U+0080..U+009F) and any byte that is not part of
 *                    well-formed UTF-8: "\xNN" per byte
 *
 * Input may arrive in pieces (a streamed body): a CR or a UTF-8 sequence
 * cut at the end of one piece is held until the next. Pure: no I/O.
 */
#ifndef RELAYD_TERMSAFE_H
#define RELAYD_TERMSAFE_H

#include <stddef.h>

struct termsafe {
    unsigned char pend[4]; /* a CR, or the start of a UTF-8 sequence */
    size_t npend;
};

/* Room termsafe_put and termsafe_end need for n input bytes: each byte
 * becomes at most 4 ("\xNN"), and up to 3 held bytes may come out first. */
#define TERMSAFE_OUT_MAX(n) (4 * ((n) + 4))

void termsafe_init(struct termsafe *t);
/* Encode n bytes of in into out (TERMSAFE_OUT_MAX(n) bytes); the count
 * written, no NUL added. */
size_t termsafe_put(struct termsafe *t, const char *in, size_t n, char *out);
/* The end of the input: what is held comes out escaped (TERMSAFE_OUT_MAX(0)). */
size_t termsafe_end(struct termsafe *t, char *out);

#endif
