/*
 * smtp_auth: SMTP AUTH (RFC 4954) as etrnctl's commands speak it to a
 * relay, over smtp_io and lib/sasl_client: read the account's password
 * from a file, run the exchange after EHLO, and say what a failure means
 * as an exit status. Never prints a secret (the dialogue is not echoed
 * while the exchange runs).
 */
#ifndef RELAYD_SMTP_AUTH_H
#define RELAYD_SMTP_AUTH_H

#include <stddef.h>

struct smtp_io;
struct smtp_io_reply;

#define SMTP_AUTH_PASSWORD_MAX 1024

/* The password: the file's first line, its line end not part of it (so
 * `echo secret > file` works). 0, or an exit status (EX_NOINPUT when the
 * file cannot be read, EX_DATAERR when it is empty or too long) with the
 * reason in why. */
int smtp_auth_read_password(const char *path, char *out, size_t outlen, char *why, size_t whylen);

/* AUTH on io after the EHLO reply ehlo (after STARTTLS when TLS is to be
 * used: PLAIN and LOGIN are never sent in clear). mech: NULL for the
 * default choice (sasl_client.h). 0 on 235 (for SCRAM only once the relay
 * has proved it knows the account), else an exit status with why:
 * EX_NOPERM for a refusal (5xx: bad credentials, mechanism refused),
 * EX_TEMPFAIL for 4xx and a broken connection, EX_UNAVAILABLE when AUTH or a
 * usable mechanism is not offered, EX_PROTOCOL for a relay that breaks the
 * exchange. */
int smtp_auth(struct smtp_io *io, const struct smtp_io_reply *ehlo, const char *user,
              const char *password, const char *mech, char *why, size_t whylen);

#endif
