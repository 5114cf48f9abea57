/*
 * smtpd_cmd: what each SMTP command means to the server, dispatched from one
 * table that says in which session states the command is legal (Postfix's
 * smtpd_cmd_table habit). Handlers check arguments (lib/smtp_parse.c), ask
 * policy, build the transaction and reply. They do no I/O of their own
 * beyond queueing replies; reading, DATA and commits are smtpd_session.c's.
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "config.h"
#include "etrn.h"
#include "log.h"
#include "odmr.h"
#include "policy.h"
#include "quota.h"
#include "server.h"
#include "smtpd.h"

#define B(s) SMTPD_STATE_BIT(SMTPD_##s)
#define ANY  (B(GREETED) | B(READY) | B(MAIL) | B(RCPT))

typedef void (*smtpd_cmd_fn)(struct smtpd_session *s, const struct smtp_cmd *cmd);

struct smtpd_cmd_def {
    enum smtp_verb verb;
    unsigned legal; /* states in which the command may run */
    smtpd_cmd_fn run;
};

/* The refusal for a command given in the wrong state (RFC 5321 §4.1.4). */
static void refuse_out_of_order(struct smtpd_session *s, enum smtp_verb verb)
{
    const char *why = "Error: bad sequence of commands";

    if (s->state == SMTPD_GREETED &&
        (verb == SMTP_CMD_MAIL || verb == SMTP_CMD_RCPT || verb == SMTP_CMD_DATA ||
         verb == SMTP_CMD_ETRN || verb == SMTP_CMD_AUTH))
        why = "Error: send HELO/EHLO first";
    else if (verb == SMTP_CMD_ETRN || verb == SMTP_CMD_AUTH)
        /* RFC 1985 §5, RFC 4954 §4: not inside a mail transaction */
        why = "Error: MAIL transaction in progress";
    else if (verb == SMTP_CMD_MAIL)
        why = "Error: nested MAIL command";
    else if (verb == SMTP_CMD_RCPT || (verb == SMTP_CMD_DATA && s->state != SMTPD_MAIL))
        why = "Error: need MAIL command";
    else if (verb == SMTP_CMD_DATA)
        why = "Error: need RCPT command";
    smtpd_reply(s, 503, "5.5.1", "%s", why);
    smtpd_protocol_error(s);
}

/* The keyword of an offending "KEYWORD=value" parameter, for the 555 reply;
 * the value is the client's text and need not be echoed. */
static size_t param_name_len(const char *param, size_t len)
{
    size_t n = 0;

    if (param == NULL)
        return 0;
    while (n < len && n < 64 && param[n] != '=')
        n++;
    return n;
}

static int arg_is_empty(const struct smtp_cmd *cmd)
{
    return cmd->arg_len == 0;
}

static void do_helo(struct smtpd_session *s, const struct smtp_cmd *cmd, int esmtp)
{
    size_t n = cmd->arg_len;

    if (n == 0) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        smtpd_protocol_error(s);
        return;
    }
    if (n >= sizeof(s->helo))
        n = sizeof(s->helo) - 1;
    memcpy(s->helo, cmd->arg, n);
    s->helo[n] = '\0';
    s->esmtp = esmtp;
    /* RFC 5321 §4.1.4: HELO/EHLO resets any transaction in progress */
    smtpd_txn_reset(s);
    smtpd_enter_state(s, SMTPD_READY);
    if (esmtp && s->odmr) {
        odmr_ehlo(s);
        return;
    }
    if (!esmtp) {
        smtpd_reply(s, 250, NULL, "%s", s->cfg->hostname);
        return;
    }
    {
        char line[300];
        snprintf(line, sizeof(line), "250-%s\r\n", s->cfg->hostname);
        smtpd_reply_raw(s, line);
        smtpd_reply_raw(s, "250-PIPELINING\r\n");
        snprintf(line, sizeof(line), "250-SIZE %llu\r\n",
                 (unsigned long long)s->cfg->max_message_size);
        smtpd_reply_raw(s, line);
        if (s->srv->tls != NULL && !s->tls)
            smtpd_reply_raw(s, "250-STARTTLS\r\n");
        {
            char mechs[160];
            /* RFC 4954 §3; PLAIN and LOGIN appear only once TLS is on */
            if (smtpd_auth_offered(s, mechs, sizeof(mechs))) {
                snprintf(line, sizeof(line), "250-AUTH %s\r\n", mechs);
                smtpd_reply_raw(s, line);
            }
        }
        smtpd_reply_raw(s, "250-ETRN\r\n");
        smtpd_reply_raw(s, "250-8BITMIME\r\n");
        smtpd_reply_raw(s, "250-ENHANCEDSTATUSCODES\r\n");
        smtpd_reply_raw(s, "250 DSN\r\n");
    }
}

static void cmd_helo(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    s->n.helo++;
    do_helo(s, cmd, 0);
}

static void cmd_ehlo(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    s->n.ehlo++;
    do_helo(s, cmd, 1);
}

static void cmd_mail(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    struct smtp_mail_args a;
    struct smtpd_txn *t = &s->txn;
    char sender[SMTP_PATH_MAX * 2 + 8];
    int rc;

    s->n.mail++;
    rc = smtp_parse_mail(cmd->arg, cmd->arg_len, &a);
    switch (rc) {
    case SMTP_PARSE_OK:
        break;
    case SMTP_PARSE_BAD_ADDRESS:
    case SMTP_PARSE_TOO_LONG:
        smtpd_reply(s, 501, "5.1.7", "Bad sender address syntax");
        smtpd_protocol_error(s);
        return;
    case SMTP_PARSE_UNKNOWN_PARAM:
        smtpd_reply(s, 555, "5.5.4", "Unsupported option: %.*s",
                    (int)param_name_len(a.param, a.param_len), a.param != NULL ? a.param : "");
        smtpd_protocol_error(s);
        return;
    case SMTP_PARSE_BAD_PARAM:
    case SMTP_PARSE_DUP_PARAM:
        smtpd_reply(s, 501, "5.5.4", "Bad MAIL parameter: %s", smtp_parse_strerror(rc));
        smtpd_protocol_error(s);
        return;
    default:
        smtpd_reply(s, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        smtpd_protocol_error(s);
        return;
    }
    /* RFC 1870 §6.1: refuse at MAIL what will not fit, before any data flows */
    if (a.has_size && a.size > s->cfg->max_message_size) {
        smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
        smtpd_log_reject(s, "MAIL", "552 5.3.4 Message size exceeds fixed limit", NULL);
        return;
    }
    if (a.null_sender)
        sender[0] = '\0';
    else if (smtp_mailbox_format(&a.from, sender, sizeof(sender)) < 0) {
        smtpd_reply(s, 501, "5.1.7", "Bad sender address syntax");
        smtpd_protocol_error(s);
        return;
    }
    smtpd_txn_reset(s);
    /* The free-space reserve (issue 11): refuse before anything is written,
     * so the disk never fills in the middle of a commit. */
    if (s->srv->quota != NULL && quota_mail_check(s->srv->quota, s->cfg) < 0) {
        smtpd_reply(s, 452, "4.3.1", "Insufficient system storage");
        smtpd_log_reject(s, "MAIL", "452 4.3.1 Insufficient system storage", NULL);
        return;
    }
    t->size_declared = a.has_size ? a.size : 0;
    t->reserve_bytes = a.has_size ? a.size : s->cfg->max_message_size;
    if (s->srv->quota != NULL)
        quota_mail_begin(s->srv->quota, t->reserve_bytes);
    t->msg.sender = strdup(sender);
    t->msg.envid = a.envid[0] != '\0' ? strdup(a.envid) : NULL;
    t->msg.dsn_ret = (int)a.ret;
    t->msg.body_8bit = a.body == SMTP_BODY_8BITMIME;
    if (t->msg.sender == NULL || (a.envid[0] != '\0' && t->msg.envid == NULL)) {
        smtpd_reply(s, 451, "4.3.0", "Error: out of memory");
        smtpd_txn_reset(s);
        return;
    }
    store_new_queue_id(s->srv->store, t->msg.queue_id);
    s->n.mail_ok++;
    smtpd_enter_state(s, SMTPD_MAIL);
    smtpd_reply(s, 250, "2.1.0", "Ok");
}

/* The section's queue quota (issue 11): the first recipient of a section in
 * a transaction reserves one message (and its declared size) there; more
 * recipients in the same section ride on it, as the message is stored once.
 * 0, or -1 with the 452 sent. */
static int quota_hold(struct smtpd_session *s, const struct cfg_domain *dom, const char *addr)
{
    struct smtpd_txn *t = &s->txn;
    char why[300], reply[SMTP_PATH_MAX * 2 + 400];
    char **v;

    if (s->srv->quota == NULL)
        return 0;
    for (size_t i = 0; i < t->nquota_sections; i++)
        if (strcmp(t->quota_sections[i], dom->name) == 0)
            return 0;
    if (quota_rcpt_check(s->srv->quota, dom, t->size_declared, why, sizeof(why)) < 0) {
        /* 452: the sender keeps the message and retries, as for a full mailbox */
        snprintf(reply, sizeof(reply), "452 4.2.2 <%s>: %s", addr, why);
        smtpd_reply(s, 452, "4.2.2", "<%s>: %s", addr, why);
        smtpd_log_reject(s, "RCPT", reply, addr);
        return -1;
    }
    v = realloc(t->quota_sections, (t->nquota_sections + 1) * sizeof(*v));
    if (v == NULL || (v[t->nquota_sections] = strdup(dom->name)) == NULL) {
        if (v != NULL)
            t->quota_sections = v;
        smtpd_reply(s, 452, "4.3.0", "Error: out of memory");
        return -1;
    }
    t->quota_sections = v;
    t->nquota_sections++;
    quota_reserve(s->srv->quota, dom->name, t->size_declared);
    return 0;
}

static void cmd_rcpt(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    struct smtp_rcpt_args a;
    struct smtpd_txn *t = &s->txn;
    const struct cfg_domain *dom = NULL;
    struct policy_reply pr;
    char norm[SMTP_DOMAIN_MAX + 1];
    char addr[SMTP_PATH_MAX * 2 + 8];
    char reply[SMTP_PATH_MAX * 2 + 300];
    struct store_rcpt *r;
    int rc;

    s->n.rcpt++;
    rc = smtp_parse_rcpt(cmd->arg, cmd->arg_len, &a);
    if (rc == SMTP_PARSE_BAD_ADDRESS || rc == SMTP_PARSE_TOO_LONG) {
        smtpd_reply(s, 501, "5.1.3", "Bad recipient address syntax");
        smtpd_protocol_error(s);
        return;
    }
    if (rc == SMTP_PARSE_UNKNOWN_PARAM) {
        smtpd_reply(s, 555, "5.5.4", "Unsupported option: %.*s",
                    (int)param_name_len(a.param, a.param_len), a.param != NULL ? a.param : "");
        smtpd_protocol_error(s);
        return;
    }
    if (rc == SMTP_PARSE_BAD_PARAM || rc == SMTP_PARSE_DUP_PARAM) {
        smtpd_reply(s, 501, "5.5.4", "Bad RCPT parameter: %s", smtp_parse_strerror(rc));
        smtpd_protocol_error(s);
        return;
    }
    if (rc != SMTP_PARSE_OK) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        smtpd_protocol_error(s);
        return;
    }
    if (smtp_mailbox_format(&a.to, addr, sizeof(addr)) < 0)
        snprintf(addr, sizeof(addr), "(unprintable)");
    if (t->msg.nrcpts >= s->cfg->max_recipients) {
        /* RFC 5321 §4.5.3.1.10: 452, the client sends the rest later */
        smtpd_reply(s, 452, "4.5.3", "Error: too many recipients");
        smtpd_log_reject(s, "RCPT", "452 4.5.3 Error: too many recipients", addr);
        return;
    }
    if (policy_check_rcpt(s->cfg, &a.to, &dom, norm, sizeof(norm), &pr) != 0) {
        snprintf(reply, sizeof(reply), "%d %s <%s>: %s", pr.code, pr.enh, addr, pr.text);
        smtpd_reply(s, pr.code, pr.enh, "<%s>: %s", addr, pr.text);
        smtpd_log_reject(s, "RCPT", reply, addr);
        smtpd_protocol_error(s);
        return;
    }
    if (dom != NULL && quota_hold(s, dom, addr) < 0)
        return;
    /* store the normalised domain so the queue index groups the site's mail */
    snprintf(a.to.domain, sizeof(a.to.domain), "%s", norm);
    if (smtp_mailbox_format(&a.to, addr, sizeof(addr)) < 0) {
        smtpd_reply(s, 501, "5.1.3", "Bad recipient address syntax");
        smtpd_protocol_error(s);
        return;
    }
    if (t->msg.nrcpts == t->rcpt_cap) {
        size_t cap = t->rcpt_cap ? t->rcpt_cap * 2 : 8;
        struct store_rcpt *nr = realloc(t->msg.rcpts, cap * sizeof(*nr));
        if (nr == NULL) {
            smtpd_reply(s, 452, "4.3.0", "Error: out of memory");
            return;
        }
        t->msg.rcpts = nr;
        t->rcpt_cap = cap;
    }
    r = &t->msg.rcpts[t->msg.nrcpts];
    memset(r, 0, sizeof(*r));
    r->address = strdup(addr);
    r->domain = strdup(norm);
    r->notify = a.notify;
    r->orcpt = a.orcpt[0] != '\0' ? strdup(a.orcpt) : NULL;
    if (r->address == NULL || r->domain == NULL || (a.orcpt[0] != '\0' && r->orcpt == NULL)) {
        free(r->address);
        free(r->domain);
        free(r->orcpt);
        smtpd_reply(s, 452, "4.3.0", "Error: out of memory");
        return;
    }
    t->msg.nrcpts++;
    s->n.rcpt_ok++;
    if (!t->client_logged) {
        /* Postfix's smtpd logs this when the queue file is made: the line
         * that ties a queue id to its client (and pflogsumm counts) */
        t->client_logged = 1;
        if (s->auth_account[0])
            log_info("%s: client=%s, sasl_username=%s", t->msg.queue_id, s->peer, s->auth_account);
        else
            log_info("%s: client=%s", t->msg.queue_id, s->peer);
    }
    smtpd_enter_state(s, SMTPD_RCPT);
    smtpd_reply(s, 250, "2.1.5", "Ok");
}

static void cmd_data(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    if (!arg_is_empty(cmd)) {
        s->n.data++;
        smtpd_reply(s, 501, "5.5.4", "Syntax: DATA");
        smtpd_protocol_error(s);
        return;
    }
    smtpd_data_begin(s);
}

static void cmd_rset(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    s->n.rset++;
    smtpd_txn_reset(s);
    if (s->state != SMTPD_GREETED)
        smtpd_enter_state(s, SMTPD_READY);
    smtpd_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_noop(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    s->n.noop++;
    smtpd_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_quit(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    s->n.quit++;
    smtpd_quit(s);
}

static void cmd_vrfy(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    /* RFC 5321 §3.5.3: 252 answers without confirming or denying anyone */
    s->n.vrfy++;
    if (cmd->arg_len == 0) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: VRFY address");
        smtpd_protocol_error(s);
        return;
    }
    smtpd_reply(s, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    /* mailing list contents are nobody's business */
    smtpd_reply(s, 502, "5.5.1", "Error: EXPN not available");
    smtpd_protocol_error(s);
}

static void cmd_help(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    char mechs[160];

    smtpd_reply(
        s, 214, "2.0.0",
        "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY ETRN HELP%s%s; see RFC 5321",
        s->srv->tls != NULL ? " STARTTLS" : "",
        smtpd_auth_offered(s, mechs, sizeof(mechs)) ? " AUTH" : "");
}

static void cmd_starttls(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    s->n.starttls++;
    if (s->srv->tls == NULL) {
        smtpd_reply(s, 502, "5.5.1", "Error: command not implemented");
        smtpd_protocol_error(s);
        return;
    }
    if (s->tls) {
        smtpd_reply(s, 503, "5.5.1", "Error: TLS already active");
        smtpd_protocol_error(s);
        return;
    }
    if (!arg_is_empty(cmd)) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
        smtpd_protocol_error(s);
        return;
    }
    smtpd_reply(s, 220, "2.0.0", "Ready to start TLS");
    smtpd_starttls_begin(s);
}

static void cmd_not_implemented(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    smtpd_reply(s, 502, "5.5.1", "Error: command not implemented");
    smtpd_protocol_error(s);
}

/* Where each command is legal. STARTTLS only outside a transaction (RFC 3207
 * §4); DATA only after RCPT; HELO/EHLO anywhere outside DATA. */
static const struct smtpd_cmd_def cmd_table[] = {
    {SMTP_CMD_HELO, ANY, cmd_helo},
    {SMTP_CMD_EHLO, ANY, cmd_ehlo},
    {SMTP_CMD_MAIL, B(READY), cmd_mail},
    {SMTP_CMD_RCPT, B(MAIL) | B(RCPT), cmd_rcpt},
    {SMTP_CMD_DATA, B(RCPT), cmd_data},
    {SMTP_CMD_RSET, ANY, cmd_rset},
    {SMTP_CMD_NOOP, ANY, cmd_noop},
    {SMTP_CMD_QUIT, ANY, cmd_quit},
    {SMTP_CMD_VRFY, ANY, cmd_vrfy},
    {SMTP_CMD_EXPN, ANY, cmd_expn},
    {SMTP_CMD_HELP, ANY, cmd_help},
    {SMTP_CMD_STARTTLS, B(GREETED) | B(READY), cmd_starttls},
    {SMTP_CMD_ETRN, B(READY), etrn_cmd},
    /* RFC 4954 §4: not during a mail transaction (503) */
    {SMTP_CMD_AUTH, B(READY), smtpd_auth_cmd},
    {SMTP_CMD_ATRN, B(READY), odmr_atrn_cmd},
    {SMTP_CMD_BDAT, ANY, cmd_not_implemented},
};

void smtpd_cmd_dispatch(struct smtpd_session *s, const char *line, size_t len)
{
    struct smtp_cmd cmd;
    const struct smtpd_cmd_def *def = NULL;
    size_t i;
    int rc;

    s->n.commands++;
    rc = smtp_cmd_parse(line, len, &cmd);
    /* for "too many errors after CMD" (Postfix's words; fail2ban reads them) */
    s->last_verb = rc == SMTP_PARSE_OK ? smtp_verb_name(cmd.verb) : "UNKNOWN";
    if (rc == SMTP_PARSE_BAD_CHAR) {
        smtpd_reply(s, 500, "5.5.2", "Error: bad character in command");
        smtpd_protocol_error(s);
        return;
    }
    if (rc != SMTP_PARSE_OK) {
        s->n.unknown++;
        smtpd_reply(s, 500, "5.5.2", "Error: bad syntax");
        smtpd_protocol_error(s);
        return;
    }
    for (i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++) {
        if (cmd_table[i].verb == cmd.verb) {
            def = &cmd_table[i];
            break;
        }
    }
    if (def == NULL) {
        s->n.unknown++;
        smtpd_reply(s, 500, "5.5.2", "Error: command not recognized");
        smtpd_protocol_error(s);
        return;
    }
    /* the ODMR service takes its own few commands, SMTP none of them */
    if (!odmr_cmd_check(s, cmd.verb))
        return;
    if (!(def->legal & SMTPD_STATE_BIT(s->state))) {
        if (cmd.verb == SMTP_CMD_MAIL)
            s->n.mail++;
        else if (cmd.verb == SMTP_CMD_RCPT)
            s->n.rcpt++;
        else if (cmd.verb == SMTP_CMD_DATA)
            s->n.data++;
        else if (cmd.verb == SMTP_CMD_ETRN)
            s->n.etrn++;
        else if (cmd.verb == SMTP_CMD_AUTH)
            s->n.auth++;
        refuse_out_of_order(s, cmd.verb);
        return;
    }
    def->run(s, &cmd);
}
