/*
 * fuzz_ctl_request: libFuzzer target for lib/ctl_request (the control
 * socket's request line, as relayd/control.c reads it). The input is what a
 * client sent before EOF; it is framed (as at EOF, and as while more may
 * come), cut into words, and each argument split and decoded. What must hold
 * for any input aborts when it does not: the line is the input up to its
 * first LF without a CR before it, NUL-free and bounded; words are non-empty,
 * space-free and no more than ctl_request_max_words; a decoded key or value
 * re-encoded as etrnctl does decodes to itself; ctl_request_in_list agrees
 * with a plain model. No I/O and no state between inputs; replay.c drives it
 * without libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Cut longer inputs: the limit itself is checked at its edge, not by size. */
#define FUZZ_MAX_INPUT (CTL_REQUEST_MAX + 4)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* etrnctl's encoding (control.c's protocol comment): %XX for space, '%',
 * '=', bytes < 0x21 and >= 0x7f. out has room for 3 * strlen(s) + 1. */
static void encode(const char *s, char *out)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x21 || c >= 0x7f || c == '%' || c == '=') {
            *out++ = '%';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        } else {
            *out++ = (char)c;
        }
    }
    *out = '\0';
}

/* A decoded string is NUL-free by construction; encoded, it decodes back. */
static void check_roundtrip(const char *decoded, size_t raw_len)
{
    size_t n = strlen(decoded);
    char *enc = malloc(3 * n + 1);

    CHECK(enc != NULL);
    CHECK(n <= raw_len); /* decoding never grows */
    encode(decoded, enc);
    CHECK(strpbrk(enc, " =") == NULL);
    CHECK(ctl_request_decode(enc) == 0);
    CHECK(strcmp(enc, decoded) == 0);
    free(enc);
}

/* ctl_request_in_list(list, word) for a non-empty word without spaces is
 * " list " containing " word ". */
static void check_in_list(const char *list, const char *word)
{
    size_t ll = strlen(list), wl = strlen(word);
    char *hay, *needle;
    int model;

    if (wl == 0 || strchr(word, ' ') != NULL)
        return;
    hay = malloc(ll + 3);
    needle = malloc(wl + 3);
    CHECK(hay != NULL && needle != NULL);
    hay[0] = ' ';
    memcpy(hay + 1, list, ll);
    memcpy(hay + 1 + ll, " ", 2);
    needle[0] = ' ';
    memcpy(needle + 1, word, wl);
    memcpy(needle + 1 + wl, " ", 2);
    model = strstr(hay, needle) != NULL;
    CHECK(ctl_request_in_list(list, word) == model);
    free(hay);
    free(needle);
}

/* The words of a framed line, as control.c's dispatch takes them. */
static void check_words(char *line, size_t len)
{
    char *copy = malloc(len + 1), *pos = line, *word, *key, *value;
    size_t max = ctl_request_max_words(line), nwords = 0;
    const char *prev_end = line;

    CHECK(copy != NULL);
    memcpy(copy, line, len + 1);
    while ((word = ctl_request_word(&pos)) != NULL) {
        size_t wl = strlen(word);
        nwords++;
        CHECK(nwords <= max);
        CHECK(word >= prev_end && word + wl <= line + len);
        CHECK(wl > 0 && strchr(word, ' ') == NULL);
        /* the word is the original text there, delimited by spaces or the ends */
        CHECK(memcmp(word, copy + (word - line), wl) == 0);
        CHECK(word == line || copy[word - line - 1] == ' ');
        CHECK(word + wl == line + len || copy[word - line + (ptrdiff_t)wl] == ' ');
        prev_end = word + wl;
        if (nwords == 1) {
            if (ctl_request_decode(word) == 0)
                check_roundtrip(word, wl);
            continue;
        }
        switch (ctl_request_arg(word, &key, &value)) {
        case CTL_REQUEST_ARG_OK:
            CHECK(key == word && value > key && value <= word + wl);
            CHECK(memchr(copy + (word - line), '=', wl) != NULL);
            check_roundtrip(key, wl);
            check_roundtrip(value, wl);
            check_in_list(copy, key);
            check_in_list(copy, value);
            break;
        case CTL_REQUEST_ARG_NO_EQUALS:
            CHECK(memchr(copy + (word - line), '=', wl) == NULL);
            break;
        case CTL_REQUEST_ARG_BAD_ESCAPE:
            CHECK(memchr(copy + (word - line), '%', wl) != NULL);
            break;
        default:
            CHECK(0);
        }
    }
    /* nothing but spaces after the last word */
    CHECK(strspn(copy + (prev_end - line), " ") == len - (size_t)(prev_end - line));
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *more;
    const uint8_t *nl;
    size_t len = 0, want, more_len = 0;
    enum ctl_request_frame fr, fr_more;

    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    buf = malloc(size + 1);
    more = malloc(size + 1);
    CHECK(buf != NULL && more != NULL);
    memcpy(buf, data, size);
    memcpy(more, data, size);

    /* as at EOF, and as while more may come: the same verdict once a LF is in */
    fr = ctl_request_frame(buf, size, 1, &len);
    fr_more = ctl_request_frame(more, size, 0, &more_len);
    nl = size > 0 ? memchr(data, '\n', size) : NULL;
    want = nl != NULL ? (size_t)(nl - data) : size;
    if (nl == NULL) {
        CHECK(fr_more == (size < CTL_REQUEST_MAX + 2 ? CTL_REQUEST_MORE : CTL_REQUEST_TOO_LONG));
    } else {
        CHECK(fr_more == fr);
        CHECK(fr != CTL_REQUEST_LINE || (more_len == len && memcmp(buf, more, len + 1) == 0));
    }
    switch (fr) {
    case CTL_REQUEST_LINE:
        if (want > 0 && data[want - 1] == '\r')
            want--;
        CHECK(len == want && len <= CTL_REQUEST_MAX);
        CHECK(memcmp(buf, data, len) == 0 && buf[len] == '\0' && strlen(buf) == len);
        check_words(buf, len);
        break;
    case CTL_REQUEST_NUL:
        CHECK(memchr(data, '\0', want) != NULL);
        break;
    case CTL_REQUEST_TOO_LONG:
        CHECK(want > CTL_REQUEST_MAX);
        break;
    default:
        CHECK(0); /* at EOF there is always a verdict */
    }
    free(buf);
    free(more);
    return 0;
}
