/*
 * smtp_parse: pure parsing of SMTP protocol text (RFC 5321, RFC 1870 SIZE,
 * RFC 6152 8BITMIME, RFC 3461 DSN, RFC 2920, RFC 1985 ETRN). No I/O, no
 * allocation: results point into the caller's input or fill fixed-size
 * fields. Fuzzed (tests/fuzz) and unit-tested (tests/unit).
 * It says what the text means; whether a mailbox may be relayed is policy
 * (lib/addr.h, relayd/policy.c).
 */
#ifndef RELAYD_SMTP_PARSE_H
#define RELAYD_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO,
    SMTP_CMD_EHLO,
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_RSET,
    SMTP_CMD_NOOP,
    SMTP_CMD_QUIT,
    SMTP_CMD_VRFY,
    SMTP_CMD_EXPN,
    SMTP_CMD_HELP,
    SMTP_CMD_STARTTLS,
    SMTP_CMD_ETRN,
    SMTP_CMD_AUTH,
    SMTP_CMD_ATRN,
    SMTP_CMD_BDAT,
    SMTP_CMD_COUNT
};

/* One command line. arg points into the caller's line (not NUL-terminated). */
struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg; /* text after the verb and its separating spaces; trailing
                        spaces removed; arg_len 0 when there is none */
    size_t arg_len;
};

enum smtp_parse_status {
    SMTP_PARSE_OK = 0,
    SMTP_PARSE_EMPTY,         /* empty line */
    SMTP_PARSE_BAD_CHAR,      /* NUL or other control character in a command line */
    SMTP_PARSE_SYNTAX,        /* e.g. "MAIL" without "FROM:", garbage around the path */
    SMTP_PARSE_BAD_ADDRESS,   /* the path/mailbox does not parse (RFC 5321 §4.1.2) */
    SMTP_PARSE_TOO_LONG,      /* local part > 64, domain > 255 or path > 256 octets */
    SMTP_PARSE_BAD_PARAM,     /* known ESMTP parameter with a bad value */
    SMTP_PARSE_UNKNOWN_PARAM, /* ESMTP parameter we do not support (555 5.5.4) */
    SMTP_PARSE_DUP_PARAM      /* the same parameter twice */
};

/* Split a command line (without its CRLF) into verb and argument. The verb is
 * matched case-insensitively and must be followed by a space or the end.
 * Returns SMTP_PARSE_OK (verb may be SMTP_CMD_UNKNOWN), SMTP_PARSE_EMPTY or
 * SMTP_PARSE_BAD_CHAR (a NUL, or a control character other than HTAB). */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out);
/* "MAIL", "RCPT", ... ; "UNKNOWN" for SMTP_CMD_UNKNOWN. Static storage. */
const char *smtp_verb_name(enum smtp_verb verb);

#define SMTP_LOCAL_MAX  64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX   256
#define SMTP_ENVID_MAX  100
#define SMTP_AUTH_PARAM_MAX 500 /* AUTH=xtext of MAIL (RFC 4954 §5) */
#define SMTP_ORCPT_MAX  500

/* A mailbox as parsed from a Reverse-path or Forward-path. */
struct smtp_mailbox {
    /* Local part, decoded: surrounding quotes and quoted-pair backslashes
     * removed. "a b"@x gives `a b` with quoted = 1. NUL-terminated. */
    char local[SMTP_LOCAL_MAX * 2 + 1];
    /* Domain as written (an address literal keeps its brackets), NUL-terminated. */
    char domain[SMTP_DOMAIN_MAX + 1];
    unsigned quoted : 1;       /* local part was a Quoted-string */
    unsigned source_route : 1; /* an A-d-l source route ("@a,@b:") preceded it */
    unsigned literal : 1;      /* domain is an address literal "[...]" */
};

/* Write the mailbox as local@domain, re-quoting the local part when it is not
 * a Dot-string. Returns the length, or -1 if out (outlen bytes) is too small. */
int smtp_mailbox_format(const struct smtp_mailbox *mb, char *out, size_t outlen);

enum smtp_body { SMTP_BODY_UNSET = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_UNSET = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

/* RFC 3461 NOTIFY bits; 0 = not given. */
#define SMTP_NOTIFY_NEVER   0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY   0x8u

struct smtp_mail_args {
    int null_sender;           /* MAIL FROM:<> */
    struct smtp_mailbox from;  /* unset when null_sender */
    int has_size;
    uint64_t size;             /* SIZE=n (RFC 1870) */
    enum smtp_body body;       /* BODY=7BIT|8BITMIME (RFC 6152) */
    enum smtp_ret ret;         /* RET=FULL|HDRS (RFC 3461) */
    char envid[SMTP_ENVID_MAX + 1]; /* ENVID=xtext, kept in xtext form; "" if absent */
    int has_auth;              /* AUTH=xtext (RFC 4954 §5) given; its value is not kept */
    /* On SMTP_PARSE_BAD_PARAM, _UNKNOWN_PARAM or _DUP_PARAM: the offending
     * "KEYWORD[=value]" token, into the caller's arg (not NUL-terminated), for
     * "555 5.5.4 Unsupported option: NAME"; NULL and 0 otherwise. */
    const char *param;
    size_t param_len;
};

struct smtp_rcpt_args {
    struct smtp_mailbox to;
    unsigned notify;                /* SMTP_NOTIFY_* bits; NEVER excludes the others */
    char orcpt[SMTP_ORCPT_MAX + 1]; /* ORCPT=addr-type;xtext as given; "" if absent */
    /* On SMTP_PARSE_BAD_PARAM, _UNKNOWN_PARAM or _DUP_PARAM: the offending
     * "KEYWORD[=value]" token, into the caller's arg (not NUL-terminated), for
     * "555 5.5.4 Unsupported option: NAME"; NULL and 0 otherwise. */
    const char *param;
    size_t param_len;
};

/* Parse the argument of MAIL ("FROM:<path> params"), as struct smtp_cmd gives
 * it. "FROM:" is case-insensitive; one space after the colon is tolerated.
 * Returns an smtp_parse_status. */
int smtp_parse_mail(const char *arg, size_t len, struct smtp_mail_args *out);
/* Parse the argument of RCPT ("TO:<path> params"). "<postmaster>" without a
 * domain is accepted with domain "". Returns an smtp_parse_status. */
int smtp_parse_rcpt(const char *arg, size_t len, struct smtp_rcpt_args *out);
/* A short English phrase for a status, for replies and logs. Static storage. */
const char *smtp_parse_strerror(int status);

/* RFC 1985 ETRN argument forms. */
enum smtp_etrn_kind { SMTP_ETRN_DOMAIN, SMTP_ETRN_SUBDOMAINS, SMTP_ETRN_QUEUE };
struct smtp_etrn_arg {
    enum smtp_etrn_kind kind;       /* "dom", "@dom", "#name" */
    char name[SMTP_DOMAIN_MAX + 1]; /* the domain (lower-cased, trailing dot removed)
                                       or the queue name, without '@'/'#' */
};
/* Parse an ETRN argument; the domain must be a syntactically valid hostname. */
int smtp_parse_etrn(const char *arg, size_t len, struct smtp_etrn_arg *out);

/* RFC 2645 §4.3 ATRN argument: nothing (every domain of the account), or
 * domain *("," domain); blanks around the commas are tolerated. Each name
 * is normalised (lower case, trailing dot removed) and listed once. More
 * than SMTP_ATRN_MAX names is SMTP_PARSE_TOO_LONG; an empty or invalid name
 * SMTP_PARSE_SYNTAX. */
#define SMTP_ATRN_MAX 32
struct smtp_atrn_arg {
    size_t n; /* 0: no argument */
    char names[SMTP_ATRN_MAX][SMTP_DOMAIN_MAX + 1];
};
int smtp_parse_atrn(const char *arg, size_t len, struct smtp_atrn_arg *out);

/* One line of a server reply ("250-PIPELINING", "250 ok"), for SMTP clients. */
struct smtp_reply_line {
    int code;          /* 200..599 */
    int last;          /* 1 when the separator was ' ' (or the line is just the code) */
    const char *text;  /* after the separator, into the caller's line */
    size_t text_len;
};
/* Parse one reply line without its CRLF. SMTP_PARSE_OK or SMTP_PARSE_SYNTAX. */
int smtp_parse_reply_line(const char *line, size_t len, struct smtp_reply_line *out);

#endif
