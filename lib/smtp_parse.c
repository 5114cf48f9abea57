/*
 * smtp_parse: pure parsing of SMTP command lines, paths, ESMTP parameters,
 * ETRN arguments and reply lines (see smtp_parse.h for the contract).
 * No I/O, no allocation, no globals: results point into the caller's input or
 * fill fixed-size fields. Relay policy is not judged here (lib/addr.c).
 */
#include "smtp_parse.h"

#include <string.h>

#include "addr.h"

/* ---- character classes (ASCII only; the locale never matters) -------------------------- */

static int is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 5321 §4.1.2 Let-dig */
static int is_letdig(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

static unsigned char to_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* RFC 5322 §3.2.3 atext, as RFC 5321 §4.1.2 uses it for Atom. */
static int is_atext(unsigned char c)
{
    return is_letdig(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* RFC 5321 §4.1.2 qtextSMTP: printable ASCII and SP, except '"' and '\'. */
static int is_qtext(unsigned char c)
{
    return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

/* RFC 5321 §4.1.3 dcontent: printable US-ASCII except '[', '\' and ']'. */
static int is_dcontent(unsigned char c)
{
    return c >= 33 && c <= 126 && c != '[' && c != '\\' && c != ']';
}

/* RFC 5321 §4.1.2 esmtp-value characters: printable ASCII except '='. */
static int is_esmtp_value_char(unsigned char c)
{
    return c >= 33 && c <= 126 && c != '=';
}

/* Compare s[0..n) with the NUL-terminated lit, ignoring ASCII case. */
static int ci_equal(const char *s, size_t n, const char *lit)
{
    size_t i;

    if (strlen(lit) != n)
        return 0;
    for (i = 0; i < n; i++)
        if (to_lower((unsigned char)s[i]) != to_lower((unsigned char)lit[i]))
            return 0;
    return 1;
}

/* ---- command lines ---------------------------------------------------------------------- */

static const char *const verb_names[SMTP_CMD_COUNT] = {
    [SMTP_CMD_UNKNOWN] = "UNKNOWN",   [SMTP_CMD_HELO] = "HELO", [SMTP_CMD_EHLO] = "EHLO",
    [SMTP_CMD_MAIL] = "MAIL",         [SMTP_CMD_RCPT] = "RCPT", [SMTP_CMD_DATA] = "DATA",
    [SMTP_CMD_RSET] = "RSET",         [SMTP_CMD_NOOP] = "NOOP", [SMTP_CMD_QUIT] = "QUIT",
    [SMTP_CMD_VRFY] = "VRFY",         [SMTP_CMD_EXPN] = "EXPN", [SMTP_CMD_HELP] = "HELP",
    [SMTP_CMD_STARTTLS] = "STARTTLS", [SMTP_CMD_ETRN] = "ETRN", [SMTP_CMD_AUTH] = "AUTH",
    [SMTP_CMD_ATRN] = "ATRN",         [SMTP_CMD_BDAT] = "BDAT",
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((int)verb < 0 || verb >= SMTP_CMD_COUNT)
        return verb_names[SMTP_CMD_UNKNOWN];
    return verb_names[verb];
}

/*
 * Split a command line into verb and argument. Every byte is checked first:
 * NUL and controls other than HTAB are refused outright (RFC 5321 §4.1.1 and
 * the smuggling tricks that hide CR/LF/NUL in a line). 8-bit bytes are left to
 * the argument parsers. Trailing SP/HTAB are dropped; the verb ends at the
 * first SP, so "MAILX" or "MAIL\tFROM:" is SMTP_CMD_UNKNOWN.
 */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out)
{
    size_t i, vlen;
    int v;

    out->verb = SMTP_CMD_UNKNOWN;
    out->arg = line;
    out->arg_len = 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 32 && c != '\t') || c == 127)
            return SMTP_PARSE_BAD_CHAR;
    }
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    if (len == 0)
        return SMTP_PARSE_EMPTY;

    for (vlen = 0; vlen < len && line[vlen] != ' ';)
        vlen++;
    for (v = SMTP_CMD_UNKNOWN + 1; v < SMTP_CMD_COUNT; v++) {
        if (ci_equal(line, vlen, verb_names[v])) {
            out->verb = (enum smtp_verb)v;
            break;
        }
    }
    i = vlen;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    out->arg = line + i;
    out->arg_len = len - i;
    return SMTP_PARSE_OK;
}

const char *smtp_parse_strerror(int status)
{
    switch (status) {
    case SMTP_PARSE_OK:
        return "ok";
    case SMTP_PARSE_EMPTY:
        return "empty command";
    case SMTP_PARSE_BAD_CHAR:
        return "bad character in command";
    case SMTP_PARSE_SYNTAX:
        return "syntax error";
    case SMTP_PARSE_BAD_ADDRESS:
        return "bad address syntax";
    case SMTP_PARSE_TOO_LONG:
        return "address too long";
    case SMTP_PARSE_BAD_PARAM:
        return "bad parameter value";
    case SMTP_PARSE_UNKNOWN_PARAM:
        return "unsupported parameter";
    case SMTP_PARSE_DUP_PARAM:
        return "duplicate parameter";
    default:
        return "unknown error";
    }
}

/* ---- paths (RFC 5321 §4.1.2) ------------------------------------------------------------ */

/*
 * Domain = sub-domain *("." sub-domain) ["."]; sub-domain = Let-dig [Ldh-str],
 * so a label starts and ends with a letter or digit. Label and total lengths are
 * the addr layer's business (RFC 1123), only the octet limit is checked by the
 * caller. Advances *pos past the domain; 0 or -1.
 */
static int scan_domain(const char *s, size_t len, size_t *pos)
{
    size_t i = *pos;
    unsigned char last;

    for (;;) {
        if (i >= len || !is_letdig((unsigned char)s[i]))
            return -1;
        last = (unsigned char)s[i++];
        while (i < len && (is_letdig((unsigned char)s[i]) || s[i] == '-'))
            last = (unsigned char)s[i++];
        if (last == '-')
            return -1;
        if (i < len && s[i] == '.') {
            i++;
            /* one trailing dot (an absolute name, "example.org.") is not RFC
             * 5321 syntax, but MTAs send it; the addr layer removes it */
            if (i >= len || !is_letdig((unsigned char)s[i]))
                break;
            continue;
        }
        break;
    }
    *pos = i;
    return 0;
}

/* IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT, 0..255. */
static int ipv4_ok(const char *s, size_t n)
{
    size_t i = 0;
    int part, digits, val;

    for (part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
        for (digits = 0, val = 0; i < n && is_digit((unsigned char)s[i]) && digits < 4; digits++)
            val = val * 10 + (s[i++] - '0');
        if (digits < 1 || digits > 3 || val > 255)
            return 0;
    }
    return i == n;
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * IPv6-addr = IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp (RFC 5321
 * §4.1.3): 8 groups of 1..4 hex digits (an IPv4 tail counts as two), or at
 * most 6 around a single "::", which stands for at least two zero groups.
 */
static int ipv6_ok(const char *s, size_t n)
{
    size_t i = 0, t, k;
    int groups = 0, dbl = 0, dotted;

    if (n >= 2 && s[0] == ':' && s[1] == ':') {
        dbl = 1;
        i = 2;
        if (i == n)
            return 1;
    }
    while (i < n) {
        dotted = 0;
        for (t = i; t < n && s[t] != ':'; t++)
            if (s[t] == '.')
                dotted = 1;
        if (dotted) {
            /* the IPv4 tail must be last */
            if (t != n || !ipv4_ok(s + i, t - i))
                return 0;
            groups += 2;
            i = n;
            break;
        }
        if (t == i || t - i > 4)
            return 0;
        for (k = i; k < t; k++)
            if (!is_hex((unsigned char)s[k]))
                return 0;
        groups++;
        if (groups > 8)
            return 0;
        i = t;
        if (i == n)
            break;
        i++; /* the ':' */
        if (i < n && s[i] == ':') {
            if (dbl)
                return 0;
            dbl = 1;
            i++;
            if (i == n)
                break;
        } else if (i == n) {
            return 0; /* a single trailing ':' */
        }
    }
    return dbl ? groups <= 6 : groups == 8;
}

/*
 * address-literal = "[" ( IPv4 / "IPv6:" IPv6-addr / Standardized-tag ":"
 * 1*dcontent ) "]" (RFC 5321 §4.1.3). s[*pos] is '['; advances past ']'.
 */
static int scan_literal(const char *s, size_t len, size_t *pos)
{
    size_t start = *pos + 1, end, colon, k;
    const char *c;

    for (end = start; end < len && is_dcontent((unsigned char)s[end]);)
        end++;
    if (end >= len || s[end] != ']' || end == start)
        return -1;
    c = s + start;
    if (ipv4_ok(c, end - start)) {
        *pos = end + 1;
        return 0;
    }
    for (colon = start; colon < end && s[colon] != ':';)
        colon++;
    if (colon == end || colon == start || colon + 1 == end)
        return -1;
    /* Standardized-tag = Ldh-str: letters, digits, '-', ending in a Let-dig */
    for (k = start; k < colon; k++)
        if (!is_letdig((unsigned char)s[k]) && s[k] != '-')
            return -1;
    if (s[colon - 1] == '-')
        return -1;
    if (ci_equal(c, colon - start, "IPv6") && !ipv6_ok(s + colon + 1, end - colon - 1))
        return -1;
    *pos = end + 1;
    return 0;
}

/* How parse_path treats the special forms. */
#define PATH_ALLOW_NULL       0x1 /* "<>" (Reverse-path) */
#define PATH_ALLOW_POSTMASTER 0x2 /* "<postmaster>" (RCPT, RFC 5321 §4.1.1.3) */

/*
 * Parse one Path starting at s[0] == '<' into mb (which the caller zeroed).
 * *is_null is set for "<>" when allowed; *consumed gets the octets up to and
 * including '>'. Lengths are checked on the written form (RFC 5321
 * §4.5.3.1.1-3: local part 64, domain 255, path 256 with its brackets), and
 * the local part is abandoned as soon as it is too long, so no input can
 * overrun mb->local. Returns an smtp_parse_status.
 */
static int parse_path(const char *s, size_t len, int flags, struct smtp_mailbox *mb, int *is_null,
                      size_t *consumed)
{
    size_t i = 1, lstart, dstart, n = 0;

    *is_null = 0;
    if (i < len && s[i] == '>') {
        if (!(flags & PATH_ALLOW_NULL))
            return SMTP_PARSE_BAD_ADDRESS;
        *is_null = 1;
        *consumed = 2;
        return SMTP_PARSE_OK;
    }

    /* A-d-l ":" - accepted and dropped (RFC 5321 §4.1.2, Appendix C) */
    if (i < len && s[i] == '@') {
        for (;;) {
            i++; /* the '@' */
            if (scan_domain(s, len, &i) < 0)
                return SMTP_PARSE_BAD_ADDRESS;
            if (i < len && s[i] == ',') {
                i++;
                if (i >= len || s[i] != '@')
                    return SMTP_PARSE_BAD_ADDRESS;
                continue;
            }
            if (i < len && s[i] == ':') {
                i++;
                break;
            }
            return SMTP_PARSE_BAD_ADDRESS;
        }
        mb->source_route = 1;
    }

    /* Local-part = Dot-string / Quoted-string */
    lstart = i;
    if (i < len && s[i] == '"') {
        mb->quoted = 1;
        i++;
        for (;;) {
            unsigned char c;
            if (i >= len)
                return SMTP_PARSE_BAD_ADDRESS;
            if (i - lstart >= SMTP_LOCAL_MAX)
                return SMTP_PARSE_TOO_LONG;
            c = (unsigned char)s[i];
            if (c == '"') {
                i++;
                break;
            }
            if (c == '\\') { /* quoted-pairSMTP = '\' %d32-126 */
                i++;
                if (i >= len)
                    return SMTP_PARSE_BAD_ADDRESS;
                c = (unsigned char)s[i];
                if (c < 32 || c > 126)
                    return SMTP_PARSE_BAD_ADDRESS;
            } else if (!is_qtext(c)) {
                return SMTP_PARSE_BAD_ADDRESS;
            }
            mb->local[n++] = (char)c;
            i++;
        }
    } else {
        /* Dot-string = Atom *("." Atom) */
        for (;;) {
            size_t astart = i;
            while (i < len && is_atext((unsigned char)s[i])) {
                if (i - lstart >= SMTP_LOCAL_MAX)
                    return SMTP_PARSE_TOO_LONG;
                mb->local[n++] = s[i++];
            }
            if (i == astart)
                return SMTP_PARSE_BAD_ADDRESS;
            if (i < len && s[i] == '.') {
                if (i - lstart >= SMTP_LOCAL_MAX)
                    return SMTP_PARSE_TOO_LONG;
                mb->local[n++] = s[i++];
                continue;
            }
            break;
        }
    }
    mb->local[n] = '\0';

    /* "<postmaster>" without a domain (RFC 5321 §4.1.1.3; case-insensitive §4.5.1) */
    if (i < len && s[i] == '>' && (flags & PATH_ALLOW_POSTMASTER) && !mb->source_route &&
        !mb->quoted && ci_equal(mb->local, n, "postmaster")) {
        *consumed = i + 1;
        return SMTP_PARSE_OK;
    }

    if (i >= len || s[i] != '@')
        return SMTP_PARSE_BAD_ADDRESS;
    i++;
    dstart = i;
    if (i < len && s[i] == '[') {
        if (scan_literal(s, len, &i) < 0)
            return SMTP_PARSE_BAD_ADDRESS;
        mb->literal = 1;
    } else if (scan_domain(s, len, &i) < 0) {
        return SMTP_PARSE_BAD_ADDRESS;
    }
    if (i - dstart > SMTP_DOMAIN_MAX)
        return SMTP_PARSE_TOO_LONG;
    if (i >= len || s[i] != '>')
        return SMTP_PARSE_BAD_ADDRESS;
    i++;
    if (i > SMTP_PATH_MAX)
        return SMTP_PARSE_TOO_LONG;
    memcpy(mb->domain, s + dstart, i - 1 - dstart);
    mb->domain[i - 1 - dstart] = '\0';
    *consumed = i;
    return SMTP_PARSE_OK;
}

/*
 * The common front of MAIL and RCPT: `kw` ("FROM:" / "TO:", any case), at
 * most one SP (RFC 5321 §4.1.1.2 has none; many clients send one), then the
 * path. rest and rest_len get what follows the closing '>'.
 */
static int parse_cmd_path(const char *arg, size_t len, const char *kw, int flags,
                          struct smtp_mailbox *mb, int *is_null, const char **rest,
                          size_t *rest_len)
{
    size_t kwlen = strlen(kw), i, consumed = 0;
    int rc;

    if (len < kwlen || !ci_equal(arg, kwlen, kw))
        return SMTP_PARSE_SYNTAX;
    i = kwlen;
    if (i < len && arg[i] == ' ')
        i++;
    if (i >= len || arg[i] != '<')
        return SMTP_PARSE_SYNTAX;
    rc = parse_path(arg + i, len - i, flags, mb, is_null, &consumed);
    if (rc != SMTP_PARSE_OK)
        return rc;
    i += consumed;
    *rest = arg + i;
    *rest_len = len - i;
    return SMTP_PARSE_OK;
}

/* ---- ESMTP parameters ------------------------------------------------------------------- */

/* One esmtp-param token split as keyword and optional value (RFC 5321 §4.1.2). */
struct param {
    const char *tok; /* the whole token */
    size_t tok_len;
    const char *kw;
    size_t kw_len;
    const char *val; /* NULL when there is no '=' */
    size_t val_len;
};

/*
 * Take the next SP-separated token of s[*pos..len) as an esmtp-param.
 * Returns 1 with *p filled, 0 at the end, or -SMTP_PARSE_SYNTAX when the
 * keyword is not esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
 */
static int next_param(const char *s, size_t len, size_t *pos, struct param *p)
{
    size_t i = *pos, k;
    const char *eq;

    while (i < len && s[i] == ' ')
        i++;
    if (i >= len) {
        *pos = i;
        return 0;
    }
    p->tok = s + i;
    while (i < len && s[i] != ' ')
        i++;
    p->tok_len = (size_t)(s + i - p->tok);
    *pos = i;
    eq = memchr(p->tok, '=', p->tok_len);
    p->kw = p->tok;
    p->kw_len = eq ? (size_t)(eq - p->tok) : p->tok_len;
    p->val = eq ? eq + 1 : NULL;
    p->val_len = eq ? p->tok_len - p->kw_len - 1 : 0;
    if (p->kw_len == 0 || !is_letdig((unsigned char)p->kw[0]))
        return -SMTP_PARSE_SYNTAX;
    for (k = 1; k < p->kw_len; k++)
        if (!is_letdig((unsigned char)p->kw[k]) && p->kw[k] != '-')
            return -SMTP_PARSE_SYNTAX;
    return 1;
}

/* A value that is a valid esmtp-value: 1*(printable ASCII except '='). */
static int value_ok(const struct param *p)
{
    size_t k;

    if (p->val == NULL || p->val_len == 0)
        return 0;
    for (k = 0; k < p->val_len; k++)
        if (!is_esmtp_value_char((unsigned char)p->val[k]))
            return 0;
    return 1;
}

/*
 * RFC 3461 §4: xtext = *( xchar / hexchar ); xchar is printable ASCII except
 * '+' and '='; hexchar is '+' and two upper-case hex digits.
 */
static int xtext_ok(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            size_t k;
            if (n - i < 3)
                return 0;
            for (k = 1; k <= 2; k++) {
                unsigned char h = (unsigned char)s[i + k];
                if (!is_digit(h) && !(h >= 'A' && h <= 'F'))
                    return 0;
            }
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return 0;
        }
    }
    return 1;
}

/* SIZE=1*20DIGIT that fits a uint64_t (RFC 1870 §3). */
static int parse_size(const struct param *p, uint64_t *out)
{
    uint64_t v = 0;
    size_t k;

    if (p->val == NULL || p->val_len == 0 || p->val_len > 20)
        return -1;
    for (k = 0; k < p->val_len; k++) {
        unsigned d;
        if (!is_digit((unsigned char)p->val[k]))
            return -1;
        d = (unsigned)(p->val[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) (RFC 3461 §4.1). */
static int parse_notify(const struct param *p, unsigned *out)
{
    unsigned bits = 0, bit;
    size_t i = 0, start;

    if (!value_ok(p))
        return -1;
    if (ci_equal(p->val, p->val_len, "NEVER")) {
        *out = SMTP_NOTIFY_NEVER;
        return 0;
    }
    while (i <= p->val_len) {
        start = i;
        while (i < p->val_len && p->val[i] != ',')
            i++;
        if (ci_equal(p->val + start, i - start, "SUCCESS"))
            bit = SMTP_NOTIFY_SUCCESS;
        else if (ci_equal(p->val + start, i - start, "FAILURE"))
            bit = SMTP_NOTIFY_FAILURE;
        else if (ci_equal(p->val + start, i - start, "DELAY"))
            bit = SMTP_NOTIFY_DELAY;
        else
            return -1; /* empty, unknown, or NEVER in a list */
        if (bits & bit)
            return -1;
        bits |= bit;
        i++; /* past the ',' (or the end) */
    }
    *out = bits;
    return 0;
}

/*
 * ORCPT=addr-type ";" xtext (RFC 3461 §4.2), at most 500 octets. addr-type is
 * an RFC 822 atom: printable ASCII except specials. The xtext must not be empty.
 */
static int orcpt_ok(const struct param *p)
{
    const char *semi;
    size_t k, tlen;

    if (!value_ok(p) || p->val_len > SMTP_ORCPT_MAX)
        return 0;
    semi = memchr(p->val, ';', p->val_len);
    if (semi == NULL)
        return 0;
    tlen = (size_t)(semi - p->val);
    if (tlen == 0 || tlen + 1 == p->val_len)
        return 0;
    for (k = 0; k < tlen; k++)
        if (strchr("()<>@,;:\\\".[]", p->val[k]) != NULL)
            return 0;
    return xtext_ok(semi + 1, p->val_len - tlen - 1);
}

/* Record the offending token for the caller's "555 ... NAME" reply. */
static int param_fail(int status, const struct param *p, const char **bad, size_t *bad_len)
{
    *bad = p->tok;
    *bad_len = p->tok_len;
    return status;
}

/* MAIL parameters: SIZE, BODY, RET, ENVID, AUTH. The first problem wins. */
static int parse_mail_params(const char *s, size_t len, struct smtp_mail_args *out)
{
    enum { SEEN_SIZE = 1, SEEN_BODY = 2, SEEN_RET = 4, SEEN_ENVID = 8, SEEN_AUTH = 16 };
    unsigned seen = 0, bit;
    size_t pos = 0;
    struct param p;
    int rc;

    while ((rc = next_param(s, len, &pos, &p)) > 0) {
        if (ci_equal(p.kw, p.kw_len, "SIZE"))
            bit = SEEN_SIZE;
        else if (ci_equal(p.kw, p.kw_len, "BODY"))
            bit = SEEN_BODY;
        else if (ci_equal(p.kw, p.kw_len, "RET"))
            bit = SEEN_RET;
        else if (ci_equal(p.kw, p.kw_len, "ENVID"))
            bit = SEEN_ENVID;
        else if (ci_equal(p.kw, p.kw_len, "AUTH"))
            bit = SEEN_AUTH;
        else
            return param_fail(SMTP_PARSE_UNKNOWN_PARAM, &p, &out->param, &out->param_len);
        if (seen & bit)
            return param_fail(SMTP_PARSE_DUP_PARAM, &p, &out->param, &out->param_len);
        seen |= bit;
        if (!value_ok(&p))
            return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
        switch (bit) {
        case SEEN_SIZE:
            if (parse_size(&p, &out->size) < 0)
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
            out->has_size = 1;
            break;
        case SEEN_BODY: /* RFC 6152 §2 */
            if (ci_equal(p.val, p.val_len, "7BIT"))
                out->body = SMTP_BODY_7BIT;
            else if (ci_equal(p.val, p.val_len, "8BITMIME"))
                out->body = SMTP_BODY_8BITMIME;
            else
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
            break;
        case SEEN_RET: /* RFC 3461 §4.3 */
            if (ci_equal(p.val, p.val_len, "FULL"))
                out->ret = SMTP_RET_FULL;
            else if (ci_equal(p.val, p.val_len, "HDRS"))
                out->ret = SMTP_RET_HDRS;
            else
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
            break;
        case SEEN_AUTH:
            /* RFC 4954 §5: AUTH=xtext (a mailbox, or "<>"); a server that
             * offers AUTH must take it. Its value is not kept: relayd does
             * not vouch for who submitted a message, as if it were <>. */
            if (p.val_len > SMTP_AUTH_PARAM_MAX || !xtext_ok(p.val, p.val_len))
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
            out->has_auth = 1;
            break;
        default: /* ENVID, RFC 3461 §4.4 */
            if (p.val_len > SMTP_ENVID_MAX || !xtext_ok(p.val, p.val_len))
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
            memcpy(out->envid, p.val, p.val_len);
            out->envid[p.val_len] = '\0';
            break;
        }
    }
    return rc < 0 ? -rc : SMTP_PARSE_OK;
}

/* RCPT parameters: NOTIFY, ORCPT. */
static int parse_rcpt_params(const char *s, size_t len, struct smtp_rcpt_args *out)
{
    int seen_notify = 0, seen_orcpt = 0;
    size_t pos = 0;
    struct param p;
    int rc;

    while ((rc = next_param(s, len, &pos, &p)) > 0) {
        if (ci_equal(p.kw, p.kw_len, "NOTIFY")) {
            if (seen_notify++)
                return param_fail(SMTP_PARSE_DUP_PARAM, &p, &out->param, &out->param_len);
            if (parse_notify(&p, &out->notify) < 0)
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
        } else if (ci_equal(p.kw, p.kw_len, "ORCPT")) {
            if (seen_orcpt++)
                return param_fail(SMTP_PARSE_DUP_PARAM, &p, &out->param, &out->param_len);
            if (!orcpt_ok(&p))
                return param_fail(SMTP_PARSE_BAD_PARAM, &p, &out->param, &out->param_len);
            memcpy(out->orcpt, p.val, p.val_len);
            out->orcpt[p.val_len] = '\0';
        } else {
            return param_fail(SMTP_PARSE_UNKNOWN_PARAM, &p, &out->param, &out->param_len);
        }
    }
    return rc < 0 ? -rc : SMTP_PARSE_OK;
}

/* After the path: nothing, or SP and parameters (RFC 5321 §4.1.1.2). */
static int params_start_ok(const char *rest, size_t rest_len)
{
    return rest_len == 0 || rest[0] == ' ';
}

/*
 * MAIL FROM:<reverse-path> [SP Mail-parameters] (RFC 5321 §4.1.1.2).
 */
int smtp_parse_mail(const char *arg, size_t len, struct smtp_mail_args *out)
{
    const char *rest = NULL;
    size_t rest_len = 0;
    int rc, is_null = 0;

    memset(out, 0, sizeof(*out));
    rc = parse_cmd_path(arg, len, "FROM:", PATH_ALLOW_NULL, &out->from, &is_null, &rest, &rest_len);
    if (rc != SMTP_PARSE_OK)
        goto done;
    out->null_sender = is_null;
    if (!params_start_ok(rest, rest_len)) {
        rc = SMTP_PARSE_SYNTAX;
        goto done;
    }
    rc = parse_mail_params(rest, rest_len, out);
done:
    if (rc != SMTP_PARSE_OK) {
        /* no half-parsed mailbox or parameters leak out */
        const char *param = out->param;
        size_t param_len = out->param_len;
        memset(out, 0, sizeof(*out));
        out->param = param;
        out->param_len = param_len;
    }
    return rc;
}

/*
 * RCPT TO:<forward-path> [SP Rcpt-parameters] (RFC 5321 §4.1.1.3).
 */
int smtp_parse_rcpt(const char *arg, size_t len, struct smtp_rcpt_args *out)
{
    const char *rest = NULL;
    size_t rest_len = 0;
    int rc, is_null = 0;

    memset(out, 0, sizeof(*out));
    rc = parse_cmd_path(arg, len, "TO:", PATH_ALLOW_POSTMASTER, &out->to, &is_null, &rest,
                        &rest_len);
    if (rc != SMTP_PARSE_OK)
        goto done;
    if (!params_start_ok(rest, rest_len)) {
        rc = SMTP_PARSE_SYNTAX;
        goto done;
    }
    rc = parse_rcpt_params(rest, rest_len, out);
done:
    if (rc != SMTP_PARSE_OK) {
        const char *param = out->param;
        size_t param_len = out->param_len;
        memset(out, 0, sizeof(*out));
        out->param = param;
        out->param_len = param_len;
    }
    return rc;
}

/* ---- formatting ------------------------------------------------------------------------- */

/* Is s a Dot-string (RFC 5321 §4.1.2), i.e. writable without quotes? */
static int is_dot_string(const char *s)
{
    size_t i, n = strlen(s);

    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return 0;
        } else if (!is_atext((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/*
 * local@domain, the local part re-quoted when it is not a Dot-string, with
 * quoted-pairs only for '"' and '\' (the shortest form). Besides a short
 * buffer, -1 also refuses a local part or domain with a byte that no path can
 * carry (controls, 8-bit), so a hand-built mailbox can never inject CR/LF into
 * a command or a log line.
 */
int smtp_mailbox_format(const struct smtp_mailbox *mb, char *out, size_t outlen)
{
    size_t n = 0, i, dlen = strnlen(mb->domain, sizeof(mb->domain));
    size_t llen = strnlen(mb->local, sizeof(mb->local));
    int quote;

    if (llen == sizeof(mb->local) || dlen == sizeof(mb->domain))
        return -1; /* not NUL-terminated */
    for (i = 0; i < llen; i++)
        if ((unsigned char)mb->local[i] < 32 || (unsigned char)mb->local[i] > 126)
            return -1;
    for (i = 0; i < dlen; i++)
        if ((unsigned char)mb->domain[i] <= 32 || (unsigned char)mb->domain[i] > 126)
            return -1;
    quote = !is_dot_string(mb->local);

#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (n + 1 >= outlen)                                                                       \
            return -1;                                                                             \
        out[n++] = (ch);                                                                           \
    } while (0)

    if (quote)
        PUT('"');
    for (i = 0; i < llen; i++) {
        if (quote && (mb->local[i] == '"' || mb->local[i] == '\\'))
            PUT('\\');
        PUT(mb->local[i]);
    }
    if (quote)
        PUT('"');
    if (dlen > 0) {
        PUT('@');
        for (i = 0; i < dlen; i++)
            PUT(mb->domain[i]);
    }
#undef PUT
    if (n >= outlen)
        return -1;
    out[n] = '\0';
    return (int)n;
}

/* ---- ETRN (RFC 1985 §3) ----------------------------------------------------------------- */

/*
 * "domain", "@domain" (the domain and its subdomains) or "#queue". Domains
 * must be hostnames (addr_domain_normalize: RFC 1123 labels, lower-cased,
 * trailing dot dropped); queue names are 1..64 of [A-Za-z0-9._-], so an ETRN
 * argument can never carry quoting, '%' or separators into a query or a log.
 */
int smtp_parse_etrn(const char *arg, size_t len, struct smtp_etrn_arg *out)
{
    size_t i;
    int rc = SMTP_PARSE_SYNTAX;

    memset(out, 0, sizeof(*out));
    if (len == 0)
        goto done;
    if (arg[0] == '#') {
        if (len - 1 < 1 || len - 1 > 64)
            goto done;
        for (i = 1; i < len; i++) {
            unsigned char c = (unsigned char)arg[i];
            if (!is_letdig(c) && c != '.' && c != '_' && c != '-')
                goto done;
        }
        out->kind = SMTP_ETRN_QUEUE;
        memcpy(out->name, arg + 1, len - 1);
        out->name[len - 1] = '\0';
        rc = SMTP_PARSE_OK;
        goto done;
    }
    out->kind = SMTP_ETRN_DOMAIN;
    if (arg[0] == '@') {
        out->kind = SMTP_ETRN_SUBDOMAINS;
        arg++;
        len--;
    }
    if (addr_domain_normalize(arg, len, out->name, sizeof(out->name)) == 0)
        rc = SMTP_PARSE_OK;
done:
    if (rc != SMTP_PARSE_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

int smtp_parse_atrn(const char *arg, size_t len, struct smtp_atrn_arg *out)
{
    size_t pos = 0;
    int rc = SMTP_PARSE_OK;

    memset(out, 0, sizeof(*out));
    while (len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'))
        len--;
    while (pos < len && rc == SMTP_PARSE_OK) {
        size_t start, end, i;
        char name[SMTP_DOMAIN_MAX + 1];
        int dup = 0;

        while (pos < len && (arg[pos] == ' ' || arg[pos] == '\t'))
            pos++;
        start = pos;
        while (pos < len && arg[pos] != ',')
            pos++;
        end = pos;
        while (end > start && (arg[end - 1] == ' ' || arg[end - 1] == '\t'))
            end--;
        if (pos < len)
            pos++; /* the comma */
        if (end == start || (pos == len && arg[len - 1] == ',') ||
            addr_domain_normalize(arg + start, end - start, name, sizeof(name)) != 0) {
            rc = SMTP_PARSE_SYNTAX;
            break;
        }
        for (i = 0; i < out->n; i++)
            if (strcmp(out->names[i], name) == 0)
                dup = 1;
        if (dup)
            continue;
        if (out->n == SMTP_ATRN_MAX) {
            rc = SMTP_PARSE_TOO_LONG;
            break;
        }
        memcpy(out->names[out->n++], name, sizeof(name));
    }
    if (rc != SMTP_PARSE_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- replies (RFC 5321 §4.2) ------------------------------------------------------------ */

/*
 * Reply-line = Reply-code [ SP / "-" text ]. The code is three digits, the
 * first 2..5 (1yz is never used by SMTP); '-' means more lines follow.
 */
int smtp_parse_reply_line(const char *line, size_t len, struct smtp_reply_line *out)
{
    memset(out, 0, sizeof(*out));
    out->text = line;
    if (len < 3 || line[0] < '2' || line[0] > '5' || !is_digit((unsigned char)line[1]) ||
        !is_digit((unsigned char)line[2]))
        return SMTP_PARSE_SYNTAX;
    if (len > 3 && line[3] != ' ' && line[3] != '-')
        return SMTP_PARSE_SYNTAX;
    out->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    out->last = len == 3 || line[3] == ' ';
    out->text = line + (len > 3 ? 4 : 3);
    out->text_len = len > 3 ? len - 4 : 0;
    return SMTP_PARSE_OK;
}
