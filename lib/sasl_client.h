/*
 * sasl_client: the client side of SMTP AUTH (RFC 4954) through GNU SASL,
 * for etrnctl etrn and etrnctl atrn. Picks a mechanism from what the server
 * advertised, then turns each 334 challenge into the next line to send. No
 * I/O: the caller owns the connection and the SMTP dialogue.
 */
#ifndef RELAYD_SASL_CLIENT_H
#define RELAYD_SASL_CLIENT_H

#include <stddef.h>

struct sasl_client;

/* Longest line sasl_client_start()/sasl_client_step() write, CRLF excluded. */
#define SASL_CLIENT_LINE_MAX 2048

/* Prepare an exchange for user/password (authzid empty). offered is the
 * EHLO AUTH keyword's argument ("SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN").
 * mech: the mechanism wanted, or NULL for the default choice: SCRAM-SHA-256
 * when offered, else PLAIN (then LOGIN) when tls is on, else CRAM-MD5.
 * PLAIN and LOGIN are never chosen nor allowed without TLS. cb_tls_exporter
 * (base64, or NULL) enables SCRAM-SHA-256-PLUS when offered and mech allows
 * (and makes plain SCRAM say "y", RFC 5802 §6, when -PLUS is not offered).
 * 0, or -1 with a reason in err (no common mechanism, library error). */
int sasl_client_new(const char *user, const char *password, const char *offered, const char *mech,
                    int tls, const char *cb_tls_exporter, struct sasl_client **out, char *err,
                    size_t errlen);
/* The mechanism chosen. */
const char *sasl_client_mechanism(const struct sasl_client *c);
/* The AUTH command line: "AUTH MECH [initial-response]" (no CRLF). 0 or -1. */
int sasl_client_start(struct sasl_client *c, char *line, size_t linelen, char *err, size_t errlen);
/* The text of a 334 reply (base64, after "334 ") in, the next client line
 * out (base64, no CRLF). 0, or -1 with a reason (e.g. the server's SCRAM
 * signature does not verify: do not trust a 235 that follows). */
int sasl_client_step(struct sasl_client *c, const char *challenge, char *line, size_t linelen,
                     char *err, size_t errlen);
/* After the server's 235: did the mechanism finish (SCRAM verified the
 * server)? 1 or 0. */
int sasl_client_done(const struct sasl_client *c);
/* End the exchange; GNU SASL frees its copy of the password. NULL is fine. */
void sasl_client_free(struct sasl_client *c);

#endif
