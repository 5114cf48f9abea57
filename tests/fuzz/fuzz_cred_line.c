/*
 * fuzz_cred_line: libFuzzer target for lib/cred_line (the lines of relayd's
 * credentials file). The input is split on '\n' as credentials.c reads a
 * file; each line is parsed in place, and what must hold for any input
 * aborts when it does not: a known verdict, a reason exactly on error,
 * every part inside the line and NUL-terminated, the mechanisms the forms
 * allow, and a line rebuilt from the parts that parses to the same account.
 * No I/O and no state between inputs; replay.c drives it without libFuzzer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cred_line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT 65536
#define FUZZ_MAX_LINES 256

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static int inside(const char *p, const char *base, size_t len)
{
    return p >= base && p < base + len + 1 && strlen(p) <= len - (size_t)(p - base);
}

static void check_line(const char *in, size_t len)
{
    char *line = malloc(len + 1), *again = NULL;
    struct cred_line c, d;
    const char *why = (const char *)1;
    unsigned want = 0;
    size_t n, cap;
    int r;

    CHECK(line != NULL);
    memcpy(line, in, len);
    line[len] = '\0';
    r = cred_line_parse(line, &c, &why);
    CHECK(r >= -1 && r <= 1);
    CHECK((r == -1) == (why != NULL));
    if (r != 1)
        goto done;
    CHECK(inside(c.name, line, len) && c.name[0] != '\0' && strlen(c.name) <= CRED_LINE_NAME_MAX);
    CHECK(strchr(c.name, ':') == NULL);
    CHECK(c.ndomains >= 1 && c.ndomains <= CRED_LINE_DOMAINS_MAX);
    for (size_t i = 0; i < c.ndomains; i++)
        CHECK(inside(c.domains[i], line, len) && c.domains[i][0] != '\0' &&
              strpbrk(c.domains[i], ":,; ") == NULL);
    if (c.crypt_hash != NULL) {
        CHECK(inside(c.crypt_hash, line, len) && c.crypt_hash[0] == '$');
        want |= CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN;
    }
    if (c.scram_salt != NULL) {
        CHECK(inside(c.scram_salt, line, len) && c.scram_iter >= 4096);
        CHECK(strlen(c.scram_stored_key) == 44 && strlen(c.scram_server_key) == 44);
        want |= CRED_LINE_MECH_SCRAM_SHA_256;
    }
    if (c.plain != NULL) {
        CHECK(inside(c.plain, line, len) && c.plain[0] != '\0');
        want = CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN | CRED_LINE_MECH_CRAM_MD5 |
               CRED_LINE_MECH_SCRAM_SHA_256;
    }
    CHECK(want != 0 && c.mechs == want);
    /* the parts make a line that reads back the same: SCRAM, crypt, plain last */
    cap = len + 64;
    again = malloc(cap);
    CHECK(again != NULL);
    n = (size_t)snprintf(again, cap, "%s:", c.name);
    if (c.scram_salt != NULL)
        n += (size_t)snprintf(again + n, cap - n, "{SCRAM-SHA-256}%lu,%s,%s,%s;", c.scram_iter,
                              c.scram_salt, c.scram_stored_key, c.scram_server_key);
    if (c.crypt_hash != NULL)
        n += (size_t)snprintf(again + n, cap - n, "%s;", c.crypt_hash);
    if (c.plain != NULL)
        n += (size_t)snprintf(again + n, cap - n, "{plain}%s;", c.plain);
    again[n - 1] = ':'; /* the last ';' ends the secret */
    for (size_t i = 0; i < c.ndomains && n < cap; i++)
        n += (size_t)snprintf(again + n, cap - n, "%s%s", i ? "," : "", c.domains[i]);
    CHECK(n < cap);
    if (strlen(again) <= CRED_LINE_MAX && (c.plain == NULL || strchr(c.plain, '\r') == NULL)) {
        CHECK(cred_line_parse(again, &d, &why) == 1);
        CHECK(d.mechs == c.mechs && d.ndomains == c.ndomains && d.scram_iter == c.scram_iter);
    }
done : {
    char names[16]; /* too small on purpose: must truncate, never overflow */
    cred_line_mech_names((unsigned)len, names, sizeof(names));
    CHECK(strlen(names) < sizeof(names));
}
    free(again);
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t start = 0, lines = 0;

    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    for (size_t i = 0; i <= size && lines < FUZZ_MAX_LINES; i++) {
        if (i == size || s[i] == '\n') {
            check_line(s + start, i - start);
            start = i + 1;
            lines++;
        }
    }
    return 0;
}
