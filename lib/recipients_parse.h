/*
 * recipients_parse: the lines of a relay domain's recipients file
 * (relayd.conf(5) `recipients = FILE`) and the lookup key both the file and
 * RCPT TO reduce to. Pure: no I/O, no allocation, no configuration. The hash
 * table that holds a file's keys is relayd/recipients.c; this is what it and
 * the fuzz target share.
 *
 * A line is one of
 *   local@domain   that mailbox (RFC 5321 §4.1.2 Mailbox: Dot-string or
 *                  Quoted-string local part, a hostname domain)
 *   @domain        any local part at that domain
 *   # text         a comment; blank lines are ignored too
 * with optional blanks around it and an optional "# comment" after it.
 *
 * Keys compare local parts case-insensitively (ASCII). RFC 5321 §2.4 lets a
 * site treat local parts as case-sensitive, but the sites relayd relays for
 * match them without case in practice (Postfix, Exim and Exchange do), and a
 * list that accepted "Bob" but refused "bob" would lose mail.
 */
#ifndef RELAYD_RECIPIENTS_PARSE_H
#define RELAYD_RECIPIENTS_PARSE_H

#include <stddef.h>

/* A key: lower-case local part, '@', normalised domain, NUL. "@domain" for a
 * whole domain. Local part 64 octets decoded at most, domain 253. */
#define RECIPIENTS_KEY_MAX (64 + 1 + 255 + 1)
/* Longer lines are refused: no valid entry comes near it. */
#define RECIPIENTS_LINE_MAX 1024

enum recipients_line {
    RECIPIENTS_LINE_BLANK = 0, /* empty, blanks only or a comment: nothing to add */
    RECIPIENTS_LINE_MAILBOX,   /* key holds "local@domain" */
    RECIPIENTS_LINE_DOMAIN,    /* key holds "@domain" */
    RECIPIENTS_LINE_ERROR      /* *why says what is wrong */
};

/*
 * Parse one line of a recipients file, without its line end (a trailing CR
 * is ignored). On RECIPIENTS_LINE_MAILBOX or _DOMAIN the key is written into
 * key (keylen >= RECIPIENTS_KEY_MAX is always enough); it is never longer
 * than the line. On RECIPIENTS_LINE_ERROR *why is set to a short English
 * phrase in static storage.
 */
enum recipients_line recipients_parse_line(const char *line, size_t len, char *key, size_t keylen,
                                           const char **why);

/*
 * The key of a decoded local part (as struct smtp_mailbox holds it) at a
 * normalised domain (lib/addr.c addr_domain_normalize), for the lookup at
 * RCPT time. local "" gives the domain key "@domain". Returns the key's
 * length, or -1 if it does not fit into keylen.
 */
int recipients_key(const char *local, const char *domain, char *key, size_t keylen);

#endif
