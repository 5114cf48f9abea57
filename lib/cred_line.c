/*
 * cred_line: split one credentials line, "NAME:SECRET:DOMAIN[,DOMAIN...]",
 * in place (see cred_line.h for the secret forms). Checks the shape of
 * every part so the daemon never hands a malformed hash or key to crypt(3)
 * or GNU SASL; does not verify anything and never echoes a secret in a
 * reason (relayd -t prints the reasons).
 */
#include "cred_line.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static char *trim(char *s)
{
    size_t n;

    while (is_space(*s))
        s++;
    n = strlen(s);
    while (n > 0 && is_space(s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int is_b64(const char *s)
{
    size_t n = 0, pad = 0;

    for (; *s != '\0'; s++, n++) {
        if (*s == '=') {
            pad++;
            continue;
        }
        if (pad > 0)
            return 0;
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '+' || *s == '/'))
            return 0;
    }
    return n > 0 && n % 4 == 0 && pad <= 2;
}

/* A domain as written: letters, digits, '-', '.', 1..253 bytes, no empty
 * label. Normalising (case, trailing dot) is the table's job. */
static int domain_ok(const char *d)
{
    size_t n = strlen(d), label = 0, i;

    if (n == 0 || n > 254 || d[0] == '.')
        return 0;
    for (i = 0; i < n; i++) {
        char c = d[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return 0;
        if (++label > 63)
            return 0;
    }
    return 1;
}

/* "ITER,SALT,STOREDKEY,SERVERKEY" as gsasl --mkpasswd prints it (RFC 5802
 * §3 names). The keys of SCRAM-SHA-256 are 32 bytes: 44 base64 characters. */
static int parse_scram(char *s, struct cred_line *out, const char **why)
{
    char *f[4];
    unsigned long iter = 0;
    size_t i;

    for (i = 0; i < 4; i++) {
        f[i] = s;
        s = strchr(s, ',');
        if (i < 3) {
            if (s == NULL) {
                *why = "SCRAM-SHA-256 keys need ITER,SALT,STOREDKEY,SERVERKEY";
                return -1;
            }
            *s++ = '\0';
        } else if (s != NULL) {
            *why = "SCRAM-SHA-256 keys have more than four fields";
            return -1;
        }
    }
    if (f[0][0] == '\0' || strlen(f[0]) > 9) {
        *why = "SCRAM-SHA-256 iteration count out of range";
        return -1;
    }
    for (s = f[0]; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            *why = "SCRAM-SHA-256 iteration count is not a number";
            return -1;
        }
        iter = iter * 10 + (unsigned long)(*s - '0');
    }
    /* RFC 7677 §4: at least 4096 */
    if (iter < 4096) {
        *why = "SCRAM-SHA-256 iteration count below 4096 (RFC 7677)";
        return -1;
    }
    if (!is_b64(f[1]) || !is_b64(f[2]) || !is_b64(f[3]) || strlen(f[2]) != 44 ||
        strlen(f[3]) != 44) {
        *why = "SCRAM-SHA-256 salt or keys are not base64 of the right length";
        return -1;
    }
    out->scram_iter = iter;
    out->scram_salt = f[1];
    out->scram_stored_key = f[2];
    out->scram_server_key = f[3];
    return 0;
}

static int parse_secret(char *s, struct cred_line *out, const char **why)
{
    static const char plain_tag[] = "{plain}", scram_tag[] = "{SCRAM-SHA-256}";

    if (*s == '\0') {
        *why = "empty secret";
        return -1;
    }
    while (s != NULL) {
        char *next = NULL;

        if (strncasecmp(s, plain_tag, sizeof(plain_tag) - 1) == 0) {
            /* the shared secret runs to the end: it may hold ';' */
            if (out->plain != NULL) {
                *why = "two {plain} secrets";
                return -1;
            }
            out->plain = s + sizeof(plain_tag) - 1;
            if (out->plain[0] == '\0') {
                *why = "empty {plain} secret";
                return -1;
            }
            break;
        }
        next = strchr(s, ';');
        if (next != NULL)
            *next++ = '\0';
        if (strncasecmp(s, scram_tag, sizeof(scram_tag) - 1) == 0) {
            if (out->scram_salt != NULL) {
                *why = "two {SCRAM-SHA-256} secrets";
                return -1;
            }
            if (parse_scram(s + sizeof(scram_tag) - 1, out, why) < 0)
                return -1;
        } else if (s[0] == '$') {
            const char *p;
            if (out->crypt_hash != NULL) {
                *why = "two crypt(3) hashes";
                return -1;
            }
            /* crypt(3) hashes use "./0-9A-Za-z" plus '$', and '=' ',' in
             * parameters ("$6$rounds=5000$") */
            for (p = s; *p != '\0'; p++) {
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '.' || *p == '/' || *p == '$' ||
                      *p == '=' || *p == ',' || *p == '+' || *p == '-')) {
                    *why = "crypt(3) hash has a character no hash uses";
                    return -1;
                }
            }
            if (strlen(s) < 4 || strchr(s + 1, '$') == NULL) {
                *why = "crypt(3) hash too short";
                return -1;
            }
            out->crypt_hash = s;
        } else if (s[0] == '{') {
            *why = "unknown {SCHEME} (use {plain} or {SCRAM-SHA-256})";
            return -1;
        } else {
            *why = "secret is neither a crypt(3) hash, {plain} nor {SCRAM-SHA-256}";
            return -1;
        }
        s = next;
    }
    if (out->crypt_hash != NULL)
        out->mechs |= CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN;
    if (out->scram_salt != NULL)
        out->mechs |= CRED_LINE_MECH_SCRAM_SHA_256;
    if (out->plain != NULL)
        out->mechs |= CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN | CRED_LINE_MECH_CRAM_MD5 |
                      CRED_LINE_MECH_SCRAM_SHA_256;
    return 0;
}

int cred_line_parse(char *line, struct cred_line *out, const char **why)
{
    char *name, *secret, *doms, *colon, *p;
    size_t n;

    memset(out, 0, sizeof(*out));
    *why = NULL;
    line = trim(line);
    if (*line == '\0' || *line == '#')
        return 0;
    if (strlen(line) > CRED_LINE_MAX) {
        *why = "line too long";
        return -1;
    }
    colon = strchr(line, ':');
    doms = strrchr(line, ':');
    if (colon == NULL || doms == colon) {
        *why = "expected NAME:SECRET:DOMAIN[,DOMAIN...]";
        return -1;
    }
    name = line;
    *colon = '\0';
    secret = colon + 1;
    *doms++ = '\0';
    name = trim(name);
    n = strlen(name);
    if (n == 0 || n > CRED_LINE_NAME_MAX) {
        *why = "account name empty or longer than 64 bytes";
        return -1;
    }
    for (p = name; *p != '\0'; p++) {
        /* printable ASCII without space: it is logged and sent as a SASL
         * authentication identity */
        if (*p <= ' ' || *p > '~') {
            *why = "account name has a space or a non-printable character";
            return -1;
        }
    }
    out->name = name;
    if (parse_secret(secret, out, why) < 0)
        return -1;
    while (doms != NULL) {
        char *next = strchr(doms, ',');
        char *d;
        if (next != NULL)
            *next++ = '\0';
        d = trim(doms);
        if (!domain_ok(d)) {
            *why = "bad domain name";
            return -1;
        }
        if (out->ndomains == CRED_LINE_DOMAINS_MAX) {
            *why = "too many domains on one line";
            return -1;
        }
        out->domains[out->ndomains++] = d;
        doms = next;
    }
    return 1;
}

void cred_line_mech_names(unsigned mechs, char *out, size_t outlen)
{
    static const struct {
        unsigned bit;
        const char *names;
    } tab[] = {
        {CRED_LINE_MECH_SCRAM_SHA_256, "SCRAM-SHA-256 SCRAM-SHA-256-PLUS"},
        {CRED_LINE_MECH_CRAM_MD5, "CRAM-MD5"},
        {CRED_LINE_MECH_PLAIN, "PLAIN"},
        {CRED_LINE_MECH_LOGIN, "LOGIN"},
    };
    size_t i, len = 0;

    if (outlen == 0)
        return;
    out[0] = '\0';
    for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        int w;
        if (!(mechs & tab[i].bit))
            continue;
        w = snprintf(out + len, outlen - len, "%s%s", len > 0 ? " " : "", tab[i].names);
        if (w < 0 || (size_t)w >= outlen - len)
            return;
        len += (size_t)w;
    }
}
