/*
 * fuzz_smtp_reply: libFuzzer target for lib/smtp_reply (a site's replies as
 * relayd's delivery client reads them). The input is what a server sent:
 * split into lines as lib/smtp_client.c splits it (LF, a CR before it
 * dropped, a line over 2048 bytes ends the session), read once as replies
 * to EHLO and once as replies to other commands. What must hold for any
 * input aborts when it does not: MORE exactly on continuation lines; the
 * reply limits exactly as documented; a code of 200..599; the enhanced code
 * and the keywords and SIZE as a plain model of RFC 3463 and RFC 5321
 * §4.1.1.1 reads them; text free of control characters (it goes to logs and
 * DSNs), NUL-terminated, bounded. No I/O and no state between inputs;
 * replay.c drives it without libFuzzer.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"
#include "smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT (256 * 1024)
#define FUZZ_LINE_MAX  2048 /* lib/smtp_client.c CL_LINE_MAX */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* What the model expects of the reply being read. */
struct model {
    int lines;
    size_t bytes;
    unsigned ext;
    uint64_t size;
};

/* RFC 3463 status-code: class "." subject "." detail, 1-3 digits each,
 * class the reply's; then a space or the end. Its length or 0. */
static size_t model_enh(const char *t, size_t len, int cls)
{
    size_t i = 0, digits;

    if (len < 1 || t[0] != '0' + cls)
        return 0;
    i = 1;
    for (int part = 0; part < 2; part++) {
        if (i >= len || t[i] != '.')
            return 0;
        i++;
        for (digits = 0; i < len && isdigit((unsigned char)t[i]); i++)
            digits++;
        if (digits < 1 || digits > 3)
            return 0;
    }
    return i < len && t[i] != ' ' ? 0 : i;
}

/* The keyword of one EHLO line (up to the first space), upper-cased. */
static void model_keyword(struct model *m, const char *t, size_t len)
{
    char kw[24];
    size_t n = 0, i;
    uint64_t v = 0;

    while (n < len && t[n] != ' ')
        n++;
    if (n >= sizeof(kw) || memchr(t, '\0', n) != NULL)
        return; /* no keyword we know is that long or holds a NUL */
    for (i = 0; i < n; i++)
        kw[i] = (char)toupper((unsigned char)t[i]);
    kw[n] = '\0';
    if (strcmp(kw, "PIPELINING") == 0)
        m->ext |= SMTP_EXT_PIPELINING;
    else if (strcmp(kw, "STARTTLS") == 0)
        m->ext |= SMTP_EXT_STARTTLS;
    else if (strcmp(kw, "8BITMIME") == 0)
        m->ext |= SMTP_EXT_8BITMIME;
    else if (strcmp(kw, "DSN") == 0)
        m->ext |= SMTP_EXT_DSN;
    else if (strcmp(kw, "ENHANCEDSTATUSCODES") == 0)
        m->ext |= SMTP_EXT_ENHANCED;
    else if (strcmp(kw, "SIZE") == 0) {
        /* RFC 1870 §4: the first run of digits after the blanks; a value
         * past 2^64 counts as no limit (0), as does none */
        for (i = n; i < len && t[i] == ' '; i++)
            ;
        for (; i < len && isdigit((unsigned char)t[i]); i++) {
            if (__builtin_mul_overflow(v, 10, &v) ||
                __builtin_add_overflow(v, (uint64_t)(t[i] - '0'), &v)) {
                v = 0;
                break;
            }
        }
        /* the reader stops before a multiplication could overflow, so
         * 18446744073709551610 and up are no limit too */
        if (v > (UINT64_MAX - 9) / 10 * 10 + 9)
            v = 0;
        m->ext |= SMTP_EXT_SIZE;
        m->size = v;
    }
}

static void check_text(const char *s, size_t size)
{
    size_t n = strnlen(s, size);

    CHECK(n < size);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
    }
}

/* The reply's last line: what the reader must have made of it. */
static void check_done(const struct smtp_reply_reader *rd, const struct smtp_reply_line *rl,
                       const struct model *m, int ehlo)
{
    size_t el = model_enh(rl->text, rl->text_len, rl->code / 100);
    size_t tl, want;

    CHECK(rd->code == rl->code && rd->code >= 200 && rd->code <= 599);
    check_text(rd->enh, sizeof(rd->enh));
    check_text(rd->text, sizeof(rd->text));
    CHECK(strlen(rd->enh) == el && memcmp(rd->enh, rl->text, el) == 0);
    while (el > 0 && el < rl->text_len && rl->text[el] == ' ')
        el++;
    tl = rl->text_len - el;
    want = tl < sizeof(rd->text) - 1 ? tl : sizeof(rd->text) - 1;
    CHECK(strlen(rd->text) == want);
    for (size_t i = 0; i < want; i++) {
        unsigned char c = (unsigned char)rl->text[el + i];
        CHECK(rd->text[i] == ((c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c));
    }
    CHECK(rd->ext == (ehlo ? m->ext : 0u));
    CHECK(rd->size == (ehlo ? m->size : 0u));
    CHECK((rd->ext & SMTP_EXT_SIZE) || rd->size == 0);
    /* the next reply starts from nothing */
    CHECK(rd->lines == 0 && rd->bytes == 0);
}

static void run(const char *s, size_t n, int ehlo)
{
    struct smtp_reply_reader rd;
    struct model m;
    size_t start, end;

    smtp_reply_init(&rd);
    memset(&m, 0, sizeof(m));
    for (start = 0; start < n; start = end + 1) {
        const char *nl = memchr(s + start, '\n', n - start);
        struct smtp_reply_line rl;
        enum smtp_reply_status st;
        size_t len;
        int parsed;

        if (nl == NULL)
            break; /* an unterminated line waits for more */
        end = (size_t)(nl - s);
        len = end - start;
        if (len > 0 && s[end - 1] == '\r')
            len--;
        if (len > FUZZ_LINE_MAX)
            break;
        parsed = smtp_parse_reply_line(s + start, len, &rl) == SMTP_PARSE_OK;
        st = smtp_reply_line(&rd, s + start, len, ehlo);
        if (!parsed) {
            CHECK(st == SMTP_REPLY_MALFORMED);
            return;
        }
        m.lines++;
        m.bytes += len + 2;
        if (m.lines > SMTP_REPLY_MAX_LINES || m.bytes > SMTP_REPLY_MAX_BYTES) {
            CHECK(st == SMTP_REPLY_TOO_LONG);
            return;
        }
        if (ehlo && m.lines > 1)
            model_keyword(&m, rl.text, rl.text_len);
        if (!rl.last) {
            CHECK(st == SMTP_REPLY_MORE);
            CHECK(rd.lines == m.lines && rd.bytes == m.bytes);
            continue;
        }
        CHECK(st == SMTP_REPLY_DONE);
        check_done(&rd, &rl, &m, ehlo);
        memset(&m, 0, sizeof(m));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (size > FUZZ_MAX_INPUT)
        size = FUZZ_MAX_INPUT;
    /* an exact-size copy, so ASan sees a read past the input */
    s = malloc(size > 0 ? size : 1);
    CHECK(s != NULL);
    memcpy(s, data, size);
    run(s, size, 1);
    run(s, size, 0);
    free(s);
    return 0;
}
