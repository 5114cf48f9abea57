/*
 * base64: RFC 4648 §4 base64 (the standard alphabet, '=' padding) for
 * bytes that must cross a text channel, such as the queue copy that
 * `etrnctl backup` reads over the control socket's JSON records. Pure: no
 * I/O, no allocation; the caller sizes the buffers.
 */
#ifndef RELAYD_BASE64_H
#define RELAYD_BASE64_H

#include <stddef.h>

/* Characters base64_encode writes for n bytes (without the NUL). */
#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)
/* Bytes base64_decode may write for n characters, at most. */
#define BASE64_DECODED_MAX(n) (((n) / 4) * 3)

/* Encode n bytes of in into out, which must hold BASE64_ENCODED_LEN(n) + 1
 * bytes; out is NUL-terminated. Returns the length written. */
size_t base64_encode(const void *in, size_t n, char *out);

/* Decode n characters of in (padded, no white space) into out, which must
 * hold BASE64_DECODED_MAX(n) bytes. Returns the bytes written, or -1 when
 * in is not canonical base64 (RFC 4648 §3.5: a length not a multiple of
 * 4, a character outside the alphabet, padding anywhere but at the end, or
 * non-zero bits in the padding). */
long base64_decode(const char *in, size_t n, unsigned char *out);

#endif
