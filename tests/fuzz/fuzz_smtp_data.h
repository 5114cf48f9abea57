/*
 * fuzz_smtp_data: the DATA decoder checks the fuzz target runs on every
 * input (see fuzz_smtp_data.c). Test code only.
 */
#ifndef RELAYD_FUZZ_SMTP_DATA_H
#define RELAYD_FUZZ_SMTP_DATA_H

#include <stddef.h>

/* Decode in[0..n) as DATA input several ways; abort() on any disagreement. */
void fuzz_smtp_data(const char *in, size_t n);

#endif
