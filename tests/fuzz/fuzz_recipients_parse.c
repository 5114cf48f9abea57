/*
 * fuzz_recipients_parse: libFuzzer target for lib/recipients_parse (the
 * lines of a relay domain's recipients file). The input is split on '\n' as
 * the loader splits a file; each line is parsed, and what must hold for any
 * input aborts when it does not: a known verdict, a reason exactly on
 * error, a NUL-terminated key no longer than its line, holding an '@', in
 * lower case, that the RCPT-side recipients_key() rebuilds from its parts,
 * and a "@domain" key that parses back to itself.
 * No I/O and no state between inputs; replay.c drives it without libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recipients_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT 65536
#define FUZZ_MAX_LINES 256

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_line(const char *line, size_t len)
{
    char key[RECIPIENTS_KEY_MAX], again[RECIPIENTS_KEY_MAX], local[RECIPIENTS_KEY_MAX];
    const char *why = (const char *)1, *at;
    enum recipients_line r;
    size_t klen;

    r = recipients_parse_line(line, len, key, sizeof(key), &why);
    CHECK(r >= RECIPIENTS_LINE_BLANK && r <= RECIPIENTS_LINE_ERROR);
    CHECK((r == RECIPIENTS_LINE_ERROR) == (why != NULL));
    if (r == RECIPIENTS_LINE_ERROR || r == RECIPIENTS_LINE_BLANK)
        return;
    klen = strnlen(key, sizeof(key));
    CHECK(klen < sizeof(key) && klen <= len);
    at = strrchr(key, '@');
    CHECK(at != NULL && at[1] != '\0');
    for (size_t i = 0; i < klen; i++)
        CHECK(!(key[i] >= 'A' && key[i] <= 'Z'));
    CHECK((r == RECIPIENTS_LINE_DOMAIN) == (at == key));
    memcpy(local, key, (size_t)(at - key));
    local[at - key] = '\0';
    CHECK(recipients_key(local, at + 1, again, sizeof(again)) == (int)klen);
    CHECK(strcmp(again, key) == 0);
    if (r == RECIPIENTS_LINE_DOMAIN) {
        CHECK(recipients_parse_line(key, klen, again, sizeof(again), &why) ==
              RECIPIENTS_LINE_DOMAIN);
        CHECK(strcmp(again, key) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t pos = 0, lines = 0;

    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    /* the whole input as one line, then line by line */
    check_line(s, size);
    while (pos < size && lines++ < FUZZ_MAX_LINES) {
        const char *nl = memchr(s + pos, '\n', size - pos);
        size_t len = nl != NULL ? (size_t)(nl - (s + pos)) : size - pos;
        check_line(s + pos, len);
        pos += len + 1;
    }
    return 0;
}
