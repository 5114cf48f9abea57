/*
 * cred_line: one line of the credentials file (relayd.conf(5) "credentials"),
 * "NAME:SECRET:DOMAIN[,DOMAIN...]", split into its parts. Pure: no I/O, no
 * crypto, no allocation; the line is parsed in place. The table of accounts
 * and what owning a domain means are relayd/credentials.c's job.
 *
 * SECRET is one or more forms separated by ';'; each SASL mechanism uses the
 * form it needs:
 *   $y$... $6$... $2b$... (any crypt(3) hash): PLAIN and LOGIN only
 *   {plain}TEXT: every mechanism, CRAM-MD5 included. TEXT runs to the end of
 *                SECRET (it may hold ';' and ':'), so it must be the last form
 *   {SCRAM-SHA-256}ITER,SALT,STOREDKEY,SERVERKEY (as `gsasl --mkpasswd`
 *                prints it; SALT and the keys in base64): SCRAM-SHA-256(-PLUS)
 */
#ifndef RELAYD_CRED_LINE_H
#define RELAYD_CRED_LINE_H

#include <stddef.h>

#define CRED_LINE_NAME_MAX    64  /* account name, bytes */
#define CRED_LINE_DOMAINS_MAX 256 /* domains on one line */
#define CRED_LINE_MAX         8192

/* SASL mechanisms a secret can serve (bit set). */
enum cred_line_mech {
    CRED_LINE_MECH_PLAIN = 1u << 0,
    CRED_LINE_MECH_LOGIN = 1u << 1,
    CRED_LINE_MECH_CRAM_MD5 = 1u << 2,
    CRED_LINE_MECH_SCRAM_SHA_256 = 1u << 3, /* and SCRAM-SHA-256-PLUS */
};

struct cred_line {
    char *name;       /* the account (SASL authentication identity) */
    char *crypt_hash; /* a crypt(3) hash, or NULL */
    char *plain;      /* the shared secret of {plain}, or NULL */
    /* {SCRAM-SHA-256}: iteration count and the base64 fields, or NULL salt */
    unsigned long scram_iter;
    char *scram_salt, *scram_stored_key, *scram_server_key;
    char *domains[CRED_LINE_DOMAINS_MAX]; /* as written (not normalised) */
    size_t ndomains;
    unsigned mechs; /* enum cred_line_mech bits the forms above allow */
};

/* Parse the NUL-terminated line (no line end) in place: separators become
 * NULs and out's pointers point into line. Returns 1 for an account, 0 for a
 * blank or '#' comment line, -1 for a bad line with a reason in *why (a
 * static string that never quotes the secret). */
int cred_line_parse(char *line, struct cred_line *out, const char **why);

/* "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN" for a mechs bit set (for relayd -t). */
void cred_line_mech_names(unsigned mechs, char *out, size_t outlen);

#endif
