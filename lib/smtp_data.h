/*
 * smtp_data: the DATA phase decoder (RFC 5321 §4.1.1.4, §4.5.2), pure.
 * End of data is <CRLF>.<CRLF> and nothing else: a bare LF or a bare CR never
 * ends it (SMTP smuggling). Bare LF and bare CR inside the body are
 * normalised to CRLF, so what is stored has only CRLF line ends and a later
 * hop, which dot-stuffs every line, can never see an early end of data.
 * Dot-unstuffing applies to lines that began after a real CRLF.
 * It also counts Received: header fields (hop count, RFC 5321 §6.3).
 */
#ifndef RELAYD_SMTP_DATA_H
#define RELAYD_SMTP_DATA_H

#include <stddef.h>

struct smtp_data_dec {
    int state;          /* private: where the input stands (line start, CR pending, ...) */
    int hdr_state;      /* private: header-section scan over the decoded output */
    unsigned hdr_match; /* private: bytes of "Received" matched on the current line */
    unsigned received;  /* Received: fields seen in the header section */
};

void smtp_data_init(struct smtp_data_dec *d);

/* Bytes of output space smtp_data_feed may need for in_len bytes of input. */
#define SMTP_DATA_OUT_MAX(in_len) (2 * (in_len) + 8)

/* Decode DATA input. Writes the decoded message bytes to out (capacity at
 * least SMTP_DATA_OUT_MAX(in_len)) and their count to *out_len. Returns how
 * many input bytes were consumed: all of them, or, when the terminating
 * <CRLF>.<CRLF> is found, up to and including it, with *done set to 1; the
 * rest (pipelined commands) is the caller's. The message never ends with the
 * terminator's CRLF removed: a message ending "abc<CRLF>.<CRLF>" decodes to
 * "abc<CRLF>"; a message with no final CRLF before the dot cannot occur since
 * the terminator needs one. Input may be split anywhere. */
size_t smtp_data_feed(struct smtp_data_dec *d, const char *in, size_t in_len, char *out,
                      size_t *out_len, int *done);

/* Received: header fields counted so far. */
unsigned smtp_data_received_count(const struct smtp_data_dec *d);

#endif
