/*
 * ctl_request: the request line of the operators' control socket
 * (relayd/control.c serves it, etrnctl(8) is its client): where the line
 * ends, its words, and the percent-encoded key=value arguments. Pure: no
 * I/O, no allocation; everything is cut and decoded in place in the
 * caller's buffer. Which commands exist, who may run them and which keys
 * each takes is relayd/control*.c's business, not this file's.
 *
 *   request   COMMAND [key=value ...] LF   words separated by spaces;
 *             keys and values percent-encoded (%XX) for space, '%', '=',
 *             bytes < 0x21 and >= 0x7f; at most CTL_REQUEST_MAX bytes;
 *             a CR before the LF is ignored; EOF also ends the line.
 */
#ifndef RELAYD_CTL_REQUEST_H
#define RELAYD_CTL_REQUEST_H

#include <stddef.h>

/* Bytes in a request line, LF (and a CR before it) excluded. */
#define CTL_REQUEST_MAX (64 * 1024)

enum ctl_request_frame {
    CTL_REQUEST_MORE = 0, /* no line end yet, and there is room for more */
    CTL_REQUEST_LINE,     /* a whole line, NUL-terminated in place */
    CTL_REQUEST_TOO_LONG, /* longer than CTL_REQUEST_MAX */
    CTL_REQUEST_NUL       /* a NUL byte before the line end */
};

/*
 * Look for the request line in the len bytes read so far into buf, which
 * has room for len + 1 bytes. eof: nothing more will come, so what came is
 * the line. On CTL_REQUEST_LINE the LF (or buf[len] at EOF) and a CR before
 * it become NUL and *line_len is the line's length. A reader stops reading
 * at anything but CTL_REQUEST_MORE; it must offer at least
 * CTL_REQUEST_MAX + 2 bytes before it gets CTL_REQUEST_TOO_LONG for a line
 * without LF.
 */
enum ctl_request_frame ctl_request_frame(char *buf, size_t len, int eof, size_t *line_len);

/*
 * The number of words line can hold at most (its spaces plus one), to size
 * the arrays a parse fills.
 */
size_t ctl_request_max_words(const char *line);

/*
 * The next word of the line (runs of spaces separate words, as strtok_r),
 * NUL-terminated in place, or NULL after the last. Set *pos to the line
 * before the first call; the line is changed.
 */
char *ctl_request_word(char **pos);

/* Decode %XX in s in place. 0, or -1 on a bad escape or %00 (values are C
 * strings); s is then partly decoded. */
int ctl_request_decode(char *s);

enum ctl_request_arg {
    CTL_REQUEST_ARG_OK = 0,
    CTL_REQUEST_ARG_NO_EQUALS, /* a word without '=' */
    CTL_REQUEST_ARG_BAD_ESCAPE /* key or value is not valid percent-encoding */
};

/* Split an argument word at its first '=' into *key and *value, both
 * decoded in place. */
enum ctl_request_arg ctl_request_arg(char *word, char **key, char **value);

/* Is word one of the space separated words of list? 1 or 0. */
int ctl_request_in_list(const char *list, const char *word);

#endif /* RELAYD_CTL_REQUEST_H */
