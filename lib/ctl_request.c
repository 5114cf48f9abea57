/*
 * ctl_request: framing and words of a control socket request line (see
 * ctl_request.h). Pure: no I/O, no allocation, no knowledge of commands.
 */
#include "ctl_request.h"

#include <string.h>

enum ctl_request_frame ctl_request_frame(char *buf, size_t len, int eof, size_t *line_len)
{
    char *nl = memchr(buf, '\n', len);

    if (nl == NULL && !eof)
        return len < CTL_REQUEST_MAX + 2 ? CTL_REQUEST_MORE : CTL_REQUEST_TOO_LONG;
    if (nl == NULL) /* EOF without LF: the request is what came */
        nl = buf + len;
    if (memchr(buf, '\0', (size_t)(nl - buf)) != NULL)
        return CTL_REQUEST_NUL;
    *nl = '\0';
    if (nl > buf && nl[-1] == '\r')
        *--nl = '\0';
    if ((size_t)(nl - buf) > CTL_REQUEST_MAX)
        return CTL_REQUEST_TOO_LONG;
    *line_len = (size_t)(nl - buf);
    return CTL_REQUEST_LINE;
}

size_t ctl_request_max_words(const char *line)
{
    size_t n = 1;

    for (const char *p = line; *p; p++)
        n += *p == ' ';
    return n;
}

char *ctl_request_word(char **pos)
{
    char *w = *pos, *end;

    w += strspn(w, " ");
    if (*w == '\0') {
        *pos = w;
        return NULL;
    }
    end = w + strcspn(w, " ");
    if (*end != '\0')
        *end++ = '\0';
    *pos = end;
    return w;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int ctl_request_decode(char *s)
{
    char *o = s;
    int hi, lo;

    for (; *s; s++) {
        if (*s != '%') {
            *o++ = *s;
            continue;
        }
        /* s[2] is looked at only when s[1] is a hex digit, so not past the NUL */
        if ((hi = hexval(s[1])) < 0 || (lo = hexval(s[2])) < 0 || (hi == 0 && lo == 0))
            return -1;
        *o++ = (char)(hi * 16 + lo);
        s += 2;
    }
    *o = '\0';
    return 0;
}

enum ctl_request_arg ctl_request_arg(char *word, char **key, char **value)
{
    char *eq = strchr(word, '=');

    if (eq == NULL)
        return CTL_REQUEST_ARG_NO_EQUALS;
    *eq = '\0';
    if (ctl_request_decode(word) < 0 || ctl_request_decode(eq + 1) < 0)
        return CTL_REQUEST_ARG_BAD_ESCAPE;
    *key = word;
    *value = eq + 1;
    return CTL_REQUEST_ARG_OK;
}

int ctl_request_in_list(const char *list, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = list; *p;) {
        size_t l = strcspn(p, " ");
        if (l == n && strncmp(p, word, n) == 0)
            return 1;
        p += l;
        p += *p == ' ';
    }
    return 0;
}
