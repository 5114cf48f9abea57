/*
 * smtp_reply: one server reply read line by line (see smtp_reply.h). Pure:
 * no I/O, no allocation; the line syntax itself is lib/smtp_parse.c's.
 */
#include "smtp_reply.h"
#include "smtp_parse.h"

#include <string.h>
#include <strings.h>

void smtp_reply_init(struct smtp_reply_reader *rd)
{
    memset(rd, 0, sizeof(*rd));
}

size_t smtp_reply_enh_len(const char *t, size_t len, int cls)
{
    size_t i = 0;

    if (len < 5 || t[0] != (char)('0' + cls) || t[1] != '.')
        return 0;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < len && i - start < 4 && t[i] >= '0' && t[i] <= '9')
            i++;
        if (i == start || i - start > 3)
            return 0;
        if (part == 0) {
            if (i >= len || t[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < len && t[i] != ' ')
        return 0;
    return i;
}

void smtp_reply_copy_text(char *dst, size_t dstlen, const char *src, size_t len)
{
    size_t n = len < dstlen - 1 ? len : dstlen - 1;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : (char)ch;
    }
    dst[n] = '\0';
}

/* One EHLO keyword line (RFC 5321 §4.1.1.1: keyword, then parameters). */
static void ehlo_keyword(struct smtp_reply_reader *rd, const char *t, size_t len)
{
    size_t kw = 0;

    while (kw < len && t[kw] != ' ')
        kw++;
#define KW(s) (kw == sizeof(s) - 1 && strncasecmp(t, s, kw) == 0)
    if (KW("PIPELINING")) {
        rd->rd_ext |= SMTP_EXT_PIPELINING;
    } else if (KW("STARTTLS")) {
        rd->rd_ext |= SMTP_EXT_STARTTLS;
    } else if (KW("8BITMIME")) {
        rd->rd_ext |= SMTP_EXT_8BITMIME;
    } else if (KW("DSN")) {
        rd->rd_ext |= SMTP_EXT_DSN;
    } else if (KW("ENHANCEDSTATUSCODES")) {
        rd->rd_ext |= SMTP_EXT_ENHANCED;
    } else if (KW("SIZE")) {
        /* RFC 1870 §4: "SIZE" alone or "SIZE 0" means no fixed limit. */
        uint64_t n = 0;
        size_t i = kw;
        while (i < len && t[i] == ' ')
            i++;
        for (; i < len && t[i] >= '0' && t[i] <= '9'; i++) {
            if (n > (UINT64_MAX - 9) / 10) {
                n = 0; /* absurd: treat as no limit */
                break;
            }
            n = n * 10 + (uint64_t)(t[i] - '0');
        }
        rd->rd_ext |= SMTP_EXT_SIZE;
        rd->rd_size = n;
    }
#undef KW
}

/* A reply is complete at the line whose separator is ' ' (RFC 5321
 * §4.2.1); its code and text are the last line's. */
enum smtp_reply_status smtp_reply_line(struct smtp_reply_reader *rd, const char *line, size_t len,
                                       int ehlo)
{
    struct smtp_reply_line rl;
    size_t el;

    if (smtp_parse_reply_line(line, len, &rl) != SMTP_PARSE_OK)
        return SMTP_REPLY_MALFORMED;
    rd->lines++;
    rd->bytes += len + 2;
    if (rd->lines > SMTP_REPLY_MAX_LINES || rd->bytes > SMTP_REPLY_MAX_BYTES)
        return SMTP_REPLY_TOO_LONG;
    if (ehlo && rd->lines > 1)
        ehlo_keyword(rd, rl.text, rl.text_len);
    if (!rl.last)
        return SMTP_REPLY_MORE;

    rd->code = rl.code;
    rd->enh[0] = '\0';
    /* RFC 2034 §3: the status code leads the text; taken when it is of the
     * reply's class, whether or not ENHANCEDSTATUSCODES was announced. */
    el = smtp_reply_enh_len(rl.text, rl.text_len, rl.code / 100);
    if (el > 0) {
        smtp_reply_copy_text(rd->enh, sizeof(rd->enh), rl.text, el);
        while (el < rl.text_len && rl.text[el] == ' ')
            el++;
    }
    smtp_reply_copy_text(rd->text, sizeof(rd->text), rl.text + el, rl.text_len - el);
    rd->ext = rd->rd_ext;
    rd->size = rd->rd_size;
    rd->lines = 0;
    rd->bytes = 0;
    rd->rd_ext = 0;
    rd->rd_size = 0;
    return SMTP_REPLY_DONE;
}
