/*
 * odmr: the provider side of On-Demand Mail Relay (RFC 2645). A session on
 * an odmr_listen socket is an smtpd_session with the ODMR flavour: before
 * the turn it takes EHLO/HELO, STARTTLS, AUTH, ATRN, RSET, NOOP and QUIT
 * only. ATRN checks that the account (AUTH) owns every domain named, counts
 * what waits, and asks sched for the turn, which marks the domains running
 * (so ETRN, retries and flushes keep off them) and hands the connection to
 * delivery's client. This file never delivers, never connects anywhere and
 * never touches the queue but to count it.
 */
#define LOG_SERVICE "odmr" /* log lines are tagged relayd/odmr */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "conn.h"
#include "credentials.h"
#include "delivery.h"
#include "log.h"
#include "odmr.h"
#include "sched.h"
#include "server.h"
#include "smtpd.h"
#include "store.h"

/* The turn of one session, from ATRN's count to the connection's close. */
struct odmr_turn {
    struct smtpd_session *s;
    char arg[600];   /* the ATRN argument as logged */
    char **domains;  /* what the counts found waiting (distinct) */
    size_t ndomains;
    size_t pending;  /* store_count calls out */
    int failed;      /* a count failed: 451 */
    int64_t messages;
    struct delivery_turn *dt; /* once the turn runs */
    time_t started;
};

/* RFC 2645 §4.1: before the turn the ODMR service is not an MTA: no mail
 * transaction, no VRFY/EXPN, no ETRN. And ATRN is not SMTP's. */
int odmr_cmd_check(struct smtpd_session *s, enum smtp_verb verb)
{
    int ok;

    if (!s->odmr) {
        ok = verb != SMTP_CMD_ATRN;
    } else {
        switch (verb) {
        case SMTP_CMD_HELO:
        case SMTP_CMD_EHLO:
        case SMTP_CMD_STARTTLS:
        case SMTP_CMD_AUTH:
        case SMTP_CMD_ATRN:
        case SMTP_CMD_RSET:
        case SMTP_CMD_NOOP:
        case SMTP_CMD_QUIT:
            ok = 1;
            break;
        default:
            ok = 0;
            break;
        }
    }
    if (!ok) {
        smtpd_reply(s, 502, "5.5.1", "Error: command not available on this %s",
                    s->odmr ? "ODMR service" : "port");
        smtpd_protocol_error(s);
        return 0;
    }
    if (s->odmr && verb == SMTP_CMD_AUTH && s->cfg->odmr_require_tls && !s->tls) {
        /* RFC 3207 §4 / RFC 4954 §4: the account's secret only under TLS */
        smtpd_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        smtpd_protocol_error(s);
        return 0;
    }
    return 1;
}

void odmr_ehlo(struct smtpd_session *s)
{
    char line[600], mechs[400];

    snprintf(line, sizeof(line), "250-%s\r\n", s->cfg->hostname);
    smtpd_reply_raw(s, line);
    if (s->srv->tls != NULL && !s->tls)
        smtpd_reply_raw(s, "250-STARTTLS\r\n");
    /* odmr_require_tls: AUTH is not offered where it would be refused */
    if (smtpd_auth_offered(s, mechs, sizeof(mechs))) {
        snprintf(line, sizeof(line), "250-AUTH %s\r\n", mechs);
        smtpd_reply_raw(s, line);
    }
    smtpd_reply_raw(s, "250-ATRN\r\n");
    smtpd_reply_raw(s, "250 ENHANCEDSTATUSCODES\r\n");
}

/* "ATRN from [addr]:port: account=<x> arg=<...> result=N count=N" */
static void atrn_log(struct smtpd_session *s, const char *arg, int code, int64_t count,
                     const char *why)
{
    log_info("ATRN from %s: account=<%s> arg=<%s> result=%d count=%" PRId64 "%s%s", s->peer,
             s->auth_account, arg, code, count, why != NULL ? " reason=" : "",
             why != NULL ? why : "");
}

static void turn_free(struct odmr_turn *t)
{
    size_t i;

    for (i = 0; i < t->ndomains; i++)
        free(t->domains[i]);
    free(t->domains);
    free(t);
}

static void turn_add_domain(struct odmr_turn *t, const char *d)
{
    char **nd;
    size_t i;

    for (i = 0; i < t->ndomains; i++)
        if (strcmp(t->domains[i], d) == 0)
            return;
    nd = realloc(t->domains, (t->ndomains + 1) * sizeof(*nd));
    if (nd == NULL) {
        t->failed = 1;
        return;
    }
    t->domains = nd;
    if ((t->domains[t->ndomains] = strdup(d)) == NULL)
        t->failed = 1;
    else
        t->ndomains++;
}

/* The turn is over: every outcome committed, the connection closed. */
static void turn_over(void *arg, const struct delivery_result *total)
{
    struct odmr_turn *t = arg;
    struct smtpd_session *s = t->s;

    log_info("ATRN turn with %s ended: account=<%s> delivered=%" PRIu64 " deferred=%" PRIu64
             " bounced=%" PRIu64 " duration=%llds%s%s",
             s->peer, s->auth_account, total->delivered, total->deferred, total->bounced,
             (long long)(time(NULL) - t->started), total->why[0] ? " last_error=" : "",
             total->why);
    turn_free(t);
    smtpd_turn_over(s);
}

/* Every count is in: refuse, or reply 250 and turn the connection round. */
static void atrn_decide(struct odmr_turn *t)
{
    struct smtpd_session *s = t->s;
    struct server *srv = s->srv;
    char peer_name[CREDENTIALS_NAME_MAX + 8];
    struct conn *c;
    size_t i;
    int rc;

    s->turn = NULL;
    if (s->closed) {
        turn_free(t);
        smtpd_async_done(s);
        return;
    }
    if (t->failed || srv->stopping || srv->sched == NULL) {
        smtpd_reply(s, 451, "4.3.0", "Unable to process ATRN request now");
        atrn_log(s, t->arg, 451, 0, srv->stopping ? "shutting down" : "queue not readable");
        goto refused;
    }
    if (t->messages == 0 || t->ndomains == 0) {
        /* RFC 2645 §4.3 */
        smtpd_reply(s, 453, "4.0.0", "You have no mail");
        atrn_log(s, t->arg, 453, 0, NULL);
        goto refused;
    }
    for (i = 0; i < t->ndomains; i++) {
        if (sched_busy(srv->sched, t->domains[i])) {
            smtpd_reply(s, 451, "4.3.0",
                        "Unable to process ATRN request now: mail for %s is being delivered",
                        t->domains[i]);
            atrn_log(s, t->arg, 451, t->messages, "domain busy");
            goto refused;
        }
    }
    /* RFC 2645 §4.3: the reply text is the RFC's own */
    smtpd_reply_raw(s, "250 OK now reversing the connection\r\n");
    atrn_log(s, t->arg, 250, t->messages, NULL);
    snprintf(peer_name, sizeof(peer_name), "odmr:%s", s->auth_account);
    t->started = time(NULL);
    s->turn = t;
    c = smtpd_turn_begin(s);
    rc = sched_turn(srv->sched, c, peer_name, t->domains, t->ndomains, turn_over, t, &t->dt);
    if (rc != 0) {
        /* cannot happen after the checks above but for memory: the 250 is
         * out, so all that is left is to end the session */
        log_warn("ATRN turn with %s could not start", s->peer);
        s->turn = NULL;
        turn_free(t);
        conn_close(c); /* the session's own on_closed ends it */
    }
    return;
refused:
    turn_free(t);
    smtpd_enter_state(s, SMTPD_READY);
    smtpd_async_done(s);
}

static void counted(struct store_count *c, int status, void *arg)
{
    struct odmr_turn *t = arg;
    size_t i;

    if (status != 0 || c == NULL) {
        t->failed = 1;
    } else {
        t->messages += c->messages;
        for (i = 0; i < c->ndomains; i++)
            turn_add_domain(t, c->domains[i]);
    }
    store_count_free(c);
    if (--t->pending == 0)
        atrn_decide(t);
}

void odmr_atrn_cmd(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
    struct server *srv = s->srv;
    const struct config *cfg = s->cfg;
    struct smtp_atrn_arg *a = NULL;
    const struct cred_account *acct;
    struct odmr_turn *t = NULL;
    char shown[sizeof(t->arg)];
    size_t i, n;

    s->n.atrn++;
    snprintf(shown, sizeof(shown), "%.*s", (int)(cmd->arg_len < 500 ? cmd->arg_len : 500),
             cmd->arg);
    if (s->auth_account[0] == '\0') {
        /* RFC 2645 §4.3 */
        smtpd_reply(s, 530, "5.7.0", "Authentication required");
        atrn_log(s, shown, 530, 0, "not authenticated");
        smtpd_protocol_error(s);
        return;
    }
    a = malloc(sizeof(*a));
    t = calloc(1, sizeof(*t));
    if (a == NULL || t == NULL) {
        smtpd_reply(s, 451, "4.3.0", "Unable to process ATRN request now");
        goto done;
    }
    if (smtp_parse_atrn(cmd->arg, cmd->arg_len, a) != SMTP_PARSE_OK) {
        smtpd_reply(s, 501, "5.5.4", "Syntax: ATRN [domain[,domain...]]");
        smtpd_protocol_error(s);
        goto done;
    }
    acct = credentials_find(cfg->credentials, s->auth_account);
    if (acct == NULL) {
        /* the account went away with a reload since AUTH */
        smtpd_reply(s, 450, "4.7.1", "Access denied to you");
        atrn_log(s, shown, 450, 0, "account no longer exists");
        goto done;
    }
    /* RFC 2645 §4.3: a domain the client may not have refuses the whole
     * command, not just that domain */
    for (i = 0; i < a->n; i++) {
        if (!credentials_owns(cfg, s->auth_account, a->names[i])) {
            smtpd_reply(s, 450, "4.7.1", "Access denied to you for <%s>", a->names[i]);
            atrn_log(s, shown, 450, 0, "domain not owned by the account");
            smtpd_protocol_error(s);
            goto done;
        }
    }
    if (srv->stopping || srv->sched == NULL) {
        smtpd_reply(s, 451, "4.3.0", "Unable to process ATRN request now");
        atrn_log(s, shown, 451, 0, "shutting down");
        goto done;
    }
    t->s = s;
    snprintf(t->arg, sizeof(t->arg), "%s", shown);
    n = a->n > 0 ? a->n : acct->ndomains;
    if (n == 0) {
        smtpd_reply(s, 453, "4.0.0", "You have no mail");
        atrn_log(s, shown, 453, 0, "the account owns no domain");
        goto done;
    }
    t->pending = n;
    s->turn = t;
    s->etrn_pending = 1;
    smtpd_enter_state(s, SMTPD_ATRN);
    for (i = 0; i < n; i++) {
        const char *name = a->n > 0 ? a->names[i] : acct->domains[i];
        const struct cfg_domain *d = config_find_domain(cfg, name);
        /* no argument: every domain of the account, with the subdomains
         * its section relays for; a domain named: that domain */
        int sub = a->n == 0 && d != NULL && d->subdomains && strcmp(d->name, name) == 0;

        if (store_count(srv->store, name, sub, counted, t) != 0) {
            t->failed = 1;
            if (--t->pending == 0) {
                free(a);
                atrn_decide(t);
                return;
            }
        }
    }
    free(a);
    return;
done:
    free(a);
    free(t);
}

void odmr_turn_stop(struct smtpd_session *s)
{
    if (s->turn != NULL && s->turn->dt != NULL)
        delivery_turn_stop(s->turn->dt);
}

void odmr_turn_abort(struct smtpd_session *s)
{
    if (s->turn != NULL && s->turn->dt != NULL)
        delivery_turn_abort(s->turn->dt);
}
