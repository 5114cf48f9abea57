/*
 * recipients_parse: one line of a recipients file to a lookup key, and the
 * same key for a RCPT TO mailbox (see recipients_parse.h for the format).
 * Pure: the mailbox syntax is lib/smtp_parse.c's, the domain rules
 * lib/addr.c's, so a line means exactly what the same text in RCPT TO means.
 */
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "recipients_parse.h"
#include "smtp_parse.h"

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

int recipients_key(const char *local, const char *domain, char *key, size_t keylen)
{
    size_t ll = strlen(local), dl = strlen(domain), i;

    if (ll + 1 + dl + 1 > keylen)
        return -1;
    for (i = 0; i < ll; i++)
        key[i] = lower(local[i]);
    key[ll] = '@';
    for (i = 0; i < dl; i++)
        key[ll + 1 + i] = lower(domain[i]);
    key[ll + 1 + dl] = '\0';
    return (int)(ll + 1 + dl);
}

/* The address token: up to the first blank outside a Quoted-string. */
static size_t token_end(const char *s, size_t len)
{
    size_t i = 0;
    int quoted = 0;

    while (i < len) {
        if (quoted && s[i] == '\\' && i + 1 < len) {
            i += 2;
            continue;
        }
        if (s[i] == '"')
            quoted = !quoted;
        else if (!quoted && is_blank(s[i]))
            break;
        i++;
    }
    return i;
}

static enum recipients_line fail(const char **why, const char *text)
{
    *why = text;
    return RECIPIENTS_LINE_ERROR;
}

static enum recipients_line parse_domain(const char *s, size_t len, char *key, size_t keylen,
                                         const char **why)
{
    char norm[SMTP_DOMAIN_MAX + 1];

    if (len == 0)
        return fail(why, "no domain after '@'");
    if (addr_domain_normalize(s, len, norm, sizeof(norm)) != 0)
        return fail(why, "not a valid domain name");
    if (recipients_key("", norm, key, keylen) < 0)
        return fail(why, "entry too long");
    return RECIPIENTS_LINE_DOMAIN;
}

/* local@domain, parsed as the mailbox of an RCPT TO forward-path so that the
 * file and the command agree on quoting and lengths (RFC 5321 §4.1.2). */
static enum recipients_line parse_mailbox(const char *s, size_t len, char *key, size_t keylen,
                                          const char **why)
{
    char path[SMTP_PATH_MAX + 8];
    char norm[SMTP_DOMAIN_MAX + 1];
    struct smtp_rcpt_args a;
    int rc;

    if (len + 2 > SMTP_PATH_MAX)
        return fail(why, "address too long");
    memcpy(path, "TO:<", 4);
    memcpy(path + 4, s, len);
    path[4 + len] = '>';
    rc = smtp_parse_rcpt(path, len + 5, &a);
    if (rc == SMTP_PARSE_TOO_LONG)
        return fail(why, "address too long");
    if (rc != SMTP_PARSE_OK || a.to.source_route)
        return fail(why, "not an address (local@domain or @domain)");
    if (a.to.domain[0] == '\0')
        return fail(why, "address without a domain");
    if (a.to.literal)
        return fail(why, "address literals are not relay domains");
    if (a.to.local[0] == '\0')
        /* ""@domain would read as the whole domain */
        return fail(why, "empty local part");
    if (addr_domain_normalize(a.to.domain, strlen(a.to.domain), norm, sizeof(norm)) != 0)
        return fail(why, "not a valid domain name");
    if (recipients_key(a.to.local, norm, key, keylen) < 0)
        return fail(why, "entry too long");
    return RECIPIENTS_LINE_MAILBOX;
}

enum recipients_line recipients_parse_line(const char *line, size_t len, char *key, size_t keylen,
                                           const char **why)
{
    size_t start = 0, end, rest;

    *why = NULL;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > RECIPIENTS_LINE_MAX)
        return fail(why, "line too long");
    while (start < len && is_blank(line[start]))
        start++;
    if (start == len || line[start] == '#')
        return RECIPIENTS_LINE_BLANK;
    end = start + token_end(line + start, len - start);
    rest = end;
    while (rest < len && is_blank(line[rest]))
        rest++;
    if (rest < len && line[rest] != '#')
        return fail(why, "unexpected text after the address");
    if (memchr(line + start, '\0', end - start) != NULL)
        return fail(why, "NUL byte in the line");
    if (line[start] == '@')
        return parse_domain(line + start + 1, end - start - 1, key, keylen, why);
    return parse_mailbox(line + start, end - start, key, keylen, why);
}
