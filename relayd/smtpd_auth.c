/*
 * smtpd_auth: SMTP AUTH (RFC 4954) in the SMTP server session: where AUTH
 * is legal, what the EHLO keyword offers, and the exchange's lines and
 * replies. The exchange itself (GNU SASL, secrets, auth_fail_limit, the
 * failure log line) is auth.c's; this file only carries lines between it
 * and the client and records the account on success.
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "smtpd.h"

/* RFC 9266 tls-exporter of the session's TLS, for SCRAM-SHA-256-PLUS. */
static int channel_binding(const struct smtpd_session *s, char *cb, size_t len)
{
    return s->tls && conn_tls_channel_binding(s->conn, cb, len) == 0;
}

int smtpd_auth_offered(const struct smtpd_session *s, char *mechs, size_t len)
{
    char cb[64];

    /* smtpd_auth governs the SMTP listeners; the ODMR service is AUTH and
     * ATRN (RFC 2645 §4.1), before TLS unless odmr_require_tls */
    if (s->srv->auth == NULL || s->cfg->credentials == NULL ||
        (s->odmr ? s->cfg->odmr_require_tls && !s->tls : !s->cfg->smtpd_auth))
        return 0;
    return auth_mechanisms(s->cfg, s->tls, channel_binding(s, cb, sizeof(cb)), mechs, len) > 0;
}

void smtpd_auth_reset(struct smtpd_session *s)
{
    auth_session_free(s->auth);
    s->auth = NULL;
    s->auth_pending = 0;
    s->auth_account[0] = '\0';
}

/* The outcome of one step, on the loop thread. */
static void on_auth(struct auth_session *as, const struct auth_reply *r, void *udata)
{
    struct smtpd_session *s = udata;
    const char *account;

    (void)as;
    s->auth_pending = 0;
    if (s->closed) {
        /* the session ended while the step ran: nothing to say */
        smtpd_async_done(s);
        return;
    }
    switch (r->status) {
    case AUTH_CONTINUE:
        smtpd_reply(s, 334, NULL, "%s", r->text);
        break;
    case AUTH_SUCCESS:
        account = auth_session_account(s->auth);
        snprintf(s->auth_account, sizeof(s->auth_account), "%s", account ? account : "");
        s->n.auth_ok++;
        smtpd_enter_state(s, SMTPD_READY);
        smtpd_reply(s, r->code, r->enh, "%s", r->text);
        break;
    case AUTH_FAILURE:
        smtpd_enter_state(s, SMTPD_READY);
        if (r->close) {
            smtpd_close_421(s, r->enh, r->text);
            break;
        }
        smtpd_reply(s, r->code, r->enh, "%s", r->text);
        if (r->count_error)
            smtpd_protocol_error(s);
        break;
    }
    smtpd_async_done(s);
}

static void start_failed(struct smtpd_session *s)
{
    smtpd_enter_state(s, SMTPD_READY);
    smtpd_reply(s, 454, "4.7.0", "Temporary authentication failure");
}

void smtpd_auth_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    char mechs[160];

    s->n.auth++;
    if (!smtpd_auth_offered(s, mechs, sizeof(mechs))) {
        smtpd_reply(s, 502, "5.5.1", "Error: authentication not enabled");
        smtpd_protocol_error(s);
        return;
    }
    if (!s->esmtp) {
        /* RFC 4954 §4: AUTH is an ESMTP extension, announced by EHLO */
        smtpd_reply(s, 503, "5.5.1", "Error: send EHLO first");
        smtpd_protocol_error(s);
        return;
    }
    if (s->auth_account[0] != '\0') {
        /* RFC 4954 §4: once authenticated, AUTH is refused */
        smtpd_reply(s, 503, "5.5.1", "Error: already authenticated");
        smtpd_protocol_error(s);
        return;
    }
    if (cmd->arg_len == 0) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: AUTH mechanism");
        smtpd_protocol_error(s);
        return;
    }
    if (s->auth == NULL) {
        char cb[64];
        struct auth_peer peer = {
            .addr = s->addr, .key = s->ipkey, .service = s->odmr ? "odmr" : "smtpd", .tls = s->tls};
        if (channel_binding(s, cb, sizeof(cb)))
            peer.cb_tls_exporter = cb;
        if (auth_session_new(s->srv->auth, s->cfg, &peer, on_auth, s, &s->auth) != 0) {
            smtpd_reply(s, 454, "4.7.0", "Temporary authentication failure");
            return;
        }
    }
    smtpd_enter_state(s, SMTPD_AUTH);
    s->auth_pending = 1;
    if (auth_session_start(s->auth, cmd->arg, cmd->arg_len) != 0) {
        s->auth_pending = 0;
        start_failed(s);
    }
}

void smtpd_auth_line(struct smtpd_session *s, const char *line, size_t len)
{
    s->auth_pending = 1;
    if (auth_session_step(s->auth, line, len) != 0) {
        s->auth_pending = 0;
        start_failed(s);
    }
}
