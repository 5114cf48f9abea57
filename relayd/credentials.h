/*
 * credentials: the accounts of the "credentials" file (relayd.conf(5)),
 * read when a configuration snapshot is loaded and owned by it (so SIGHUP
 * re-reads them and a session keeps the table it started with:
 * cfg->credentials). Answers: which account has this name, which domains
 * does an account own (with their subdomains where the [domain] section
 * says subdomains = yes). Lines are parsed by lib/cred_line.c.
 * Does not check secrets (relayd/auth.c does) and never logs one.
 */
#ifndef RELAYD_CREDENTIALS_H
#define RELAYD_CREDENTIALS_H

#include <stddef.h>

#include "cred_line.h"

struct config;
struct credentials;

/* The longest account name a session stores after AUTH (without the NUL). */
#define CREDENTIALS_NAME_MAX CRED_LINE_NAME_MAX

struct cred_account {
    char *name;
    char **domains; /* normalised: lower case, no trailing dot */
    size_t ndomains;
    char *crypt_hash; /* or NULL (see cred_line.h for the forms) */
    char *plain;      /* or NULL */
    unsigned long scram_iter;
    char *scram_salt, *scram_stored_key, *scram_server_key; /* base64, or NULL */
    unsigned mechs;                                         /* enum cred_line_mech bits */
    int line;                                               /* where it stood in the file */
};

/* Read path. Returns 0 and a new table, or -1 with "path:line: problem" in
 * err (a bad line fails the whole file, as a bad relayd.conf line does).
 * Duplicate names are an error. */
int credentials_load(const char *path, struct credentials **out, char *err, size_t errlen);
/* Wipes the secrets. NULL is fine. */
void credentials_free(struct credentials *c);
/* The file could be read or written by "others" when it was loaded
 * (relayd -t warns: it holds secrets). */
int credentials_others_can_read(const struct credentials *c);

size_t credentials_count(const struct credentials *c);
const struct cred_account *credentials_at(const struct credentials *c, size_t i);
/* What is wrong with the account's crypt(3) hash, for relayd -t: NULL when
 * it has none or libxcrypt knows it and finds it current; else "not a hash
 * libxcrypt knows" (PLAIN/LOGIN would answer 454) or "a legacy hash method
 * (weak)". */
const char *credentials_hash_problem(const struct cred_account *a);

/* The account called name (exact, case-sensitive), or NULL. c may be NULL. */
const struct cred_account *credentials_find(const struct credentials *c, const char *name);

/* Does account `name` (in cfg->credentials) own the normalised domain? It
 * does when the domain is one of its domains, or a subdomain of one whose
 * [domain] section has subdomains = yes. NULL name or no such account: 0. */
int credentials_owns(const struct config *cfg, const char *name, const char *domain);

#endif
