/*
 * auth: SMTP AUTH (RFC 4954) for relayd's listeners, through GNU SASL. One
 * auth_session is one client's exchange: the session hands it the AUTH
 * argument and each answer to a 334, and gets back the reply to send. Every
 * GNU SASL call for a session, and every secret check, runs on the auth
 * worker (auth_worker.c); replies come back on the loop thread. Also asks
 * and feeds the failures per client (auth_fail.c: auth_fail_limit, like
 * Postfix's anvil) and writes the failure line fail2ban's postfix-sasl
 * filter reads.
 * Does not read the accounts file (credentials.c) and does no I/O.
 */
#define LOG_SERVICE "smtpd" /* log lines are tagged relayd/smtpd */
#include "auth.h"

#include <errno.h>
#include <gsasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth_fail.h"
#include "auth_worker.h"
#include "config.h"
#include "log.h"

struct auth {
    uv_loop_t *loop;
    struct auth_worker *worker;
    Gsasl *gsasl;            /* used on the worker thread only, once open */
    struct auth_fail *fails; /* auth_fail_limit */
};

/* What the exchange is doing between two calls. */
enum as_phase {
    AS_IDLE,    /* no exchange, or the last one ended */
    AS_RUNNING, /* a job is on the worker */
    AS_WAITING, /* 334 sent: waiting for the client's line */
    AS_FINAL,   /* the mechanism succeeded and sent its last data in a 334
                 * (SCRAM server-final): the client answers an empty line */
    AS_DONE,    /* authenticated */
};

struct step_job;

struct auth_session {
    struct auth *a;
    struct config *cfg;
    auth_cb cb;
    void *udata;
    char addr[64];
    char key[64]; /* auth_fail_limit's name for the client */
    char service[16];
    int tls;
    char *cb_exporter, *cb_unique;
    char mech[GSASL_MAX_MECHANISM_SIZE + 1];
    char account[CREDENTIALS_NAME_MAX + 1];
    enum as_phase phase;
    Gsasl_session *gs;    /* touched only on the worker thread */
    struct step_job *job; /* in flight, or NULL */
};

/* One trip to the worker and back. */
struct step_job {
    struct auth_job base;
    struct auth_session *as; /* NULL once the session has gone */
    struct auth *a;
    struct config *cfg; /* a reference of the job's own */
    Gsasl_session *gs;
    int start;  /* gsasl_server_start() first */
    int prime;  /* then one empty step, its challenge dropped (LOGIN with the
                 * user name as initial response) */
    int finish; /* only gsasl_finish() (the session went away) */
    char mech[GSASL_MAX_MECHANISM_SIZE + 1];
    char *input;                   /* base64 from the client, NULL for a server-first start */
    char *cb_exporter, *cb_unique; /* copies: the session may go while the job runs */
    /* results, written on the worker */
    int rc;       /* GNU SASL's */
    char *output; /* base64 to send in a 334 */
    char authid[CREDENTIALS_NAME_MAX + 1];
    int authid_too_long;
    int weak;        /* the account exists but lacks the form the mechanism needs */
    int internal;    /* a temporary failure (memory, crypt error) */
    int authzid_bad; /* a different authorization identity was asked for */
    /* a reply decided on the loop, taking the trip only to be asynchronous */
    struct auth_reply ready;
    int has_ready;
    enum as_phase next_phase; /* of the session once the ready reply is given */
};

static int mech_is_cleartext(const char *m)
{
    return strcmp(m, "PLAIN") == 0 || strcmp(m, "LOGIN") == 0;
}

/* ---- the mechanisms offered --------------------------------------------------------- */

/* Which mechanisms some account of the table can use. */
static unsigned table_mechs(const struct config *cfg)
{
    unsigned m = 0;

    for (size_t i = 0; i < credentials_count(cfg->credentials); i++)
        m |= credentials_at(cfg->credentials, i)->mechs;
    return m;
}

size_t auth_mechanisms(const struct config *cfg, int tls, int have_cb, char *out, size_t outlen)
{
    unsigned m = cfg->credentials != NULL ? table_mechs(cfg) : 0;
    size_t len = 0;

    if (outlen > 0)
        out[0] = '\0';
    if (m == 0 || outlen == 0)
        return 0;
#define ADD(name)                                                                                  \
    do {                                                                                           \
        int w_ = snprintf(out + len, outlen - len, "%s%s", len ? " " : "", name);                  \
        if (w_ > 0 && (size_t)w_ < outlen - len)                                                   \
            len += (size_t)w_;                                                                     \
    } while (0)
    if ((m & CRED_LINE_MECH_SCRAM_SHA_256) && tls && have_cb)
        ADD("SCRAM-SHA-256-PLUS");
    if (m & CRED_LINE_MECH_SCRAM_SHA_256)
        ADD("SCRAM-SHA-256");
    if (m & CRED_LINE_MECH_CRAM_MD5)
        ADD("CRAM-MD5");
    /* RFC 4954 §4 and RFC 4616 §6: a password in clear only inside TLS */
    if ((m & CRED_LINE_MECH_PLAIN) && tls)
        ADD("PLAIN");
    if ((m & CRED_LINE_MECH_LOGIN) && tls)
        ADD("LOGIN");
#undef ADD
    return len;
}

/* ---- the worker side: GNU SASL's callback -------------------------------------------- */

/* Constant-time comparison of two NUL-terminated secrets. */
static int secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;

    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* PLAIN and LOGIN: the password against the account's {plain} or crypt(3)
 * form; the unknown account costs a crypt too. */
static int validate_simple(struct step_job *j, const struct cred_account *acct,
                           const char *password)
{
    if (acct == NULL) {
        auth_worker_crypt_dummy(password);
        return GSASL_AUTHENTICATION_ERROR;
    }
    if (acct->plain != NULL)
        return secret_equal(acct->plain, password) ? GSASL_OK : GSASL_AUTHENTICATION_ERROR;
    if (acct->crypt_hash != NULL) {
        int ok = auth_worker_crypt_check(password, acct->crypt_hash);
        if (ok < 0) {
            j->internal = 1;
            log_error("credentials: the hash of account %s is not one libxcrypt knows", acct->name);
        }
        return ok == 1 ? GSASL_OK : GSASL_AUTHENTICATION_ERROR;
    }
    /* SCRAM keys only: they cannot check a password in clear */
    j->weak = 1;
    return GSASL_AUTHENTICATION_ERROR;
}

static int gsasl_cb(Gsasl *ctx, Gsasl_session *gs, Gsasl_property prop)
{
    struct step_job *j = gsasl_session_hook_get(gs);
    const char *authid = gsasl_property_fast(gs, GSASL_AUTHID);
    const struct cred_account *acct = NULL;
    char iter[24];

    (void)ctx;
    if (j == NULL)
        return GSASL_NO_CALLBACK;
    if (authid != NULL)
        acct = credentials_find(j->cfg->credentials, authid);
    switch (prop) {
    case GSASL_PASSWORD: /* CRAM-MD5, and SCRAM for a {plain} account */
        if (acct != NULL && acct->plain != NULL)
            return gsasl_property_set(gs, prop, acct->plain);
        if (acct != NULL)
            j->weak = 1;
        return GSASL_NO_CALLBACK;
    case GSASL_SCRAM_ITER:
        if (acct == NULL || acct->scram_salt == NULL)
            return GSASL_NO_CALLBACK; /* GNU SASL's default, from the password */
        snprintf(iter, sizeof(iter), "%lu", acct->scram_iter);
        return gsasl_property_set(gs, prop, iter);
    case GSASL_SCRAM_SALT:
        if (acct == NULL || acct->scram_salt == NULL)
            return GSASL_NO_CALLBACK;
        return gsasl_property_set(gs, prop, acct->scram_salt);
    case GSASL_SCRAM_STOREDKEY:
        if (acct == NULL || acct->scram_stored_key == NULL)
            return GSASL_NO_CALLBACK;
        /* base64, as gsasl --mkpasswd prints them (GNU SASL 2.2 reads
         * these two in base64, whatever gsasl.h's comment says) */
        return gsasl_property_set(gs, prop, acct->scram_stored_key);
    case GSASL_SCRAM_SERVERKEY:
        if (acct == NULL || acct->scram_server_key == NULL)
            return GSASL_NO_CALLBACK;
        return gsasl_property_set(gs, prop, acct->scram_server_key);
    case GSASL_CB_TLS_EXPORTER:
        return j->cb_exporter != NULL ? gsasl_property_set(gs, prop, j->cb_exporter)
                                      : GSASL_NO_CALLBACK;
    case GSASL_CB_TLS_UNIQUE:
        return j->cb_unique != NULL ? gsasl_property_set(gs, prop, j->cb_unique)
                                    : GSASL_NO_CALLBACK;
    case GSASL_VALIDATE_SIMPLE: {
        const char *authzid = gsasl_property_fast(gs, GSASL_AUTHZID);
        const char *pw = gsasl_property_fast(gs, GSASL_PASSWORD);
        if (authid == NULL || pw == NULL)
            return GSASL_AUTHENTICATION_ERROR;
        if (authzid != NULL && authzid[0] != '\0' && strcmp(authzid, authid) != 0) {
            j->authzid_bad = 1;
            return GSASL_AUTHENTICATION_ERROR;
        }
        return validate_simple(j, acct, pw);
    }
    default:
        return GSASL_NO_CALLBACK;
    }
}

static void job_run(struct auth_job *base)
{
    struct step_job *j = (struct step_job *)base;
    const char *authid;

    if (j->finish) {
        if (j->gs != NULL)
            gsasl_finish(j->gs);
        j->gs = NULL;
        return;
    }
    if (j->start) {
        j->rc = gsasl_server_start(j->a->gsasl, j->mech, &j->gs);
        if (j->rc != GSASL_OK) {
            j->gs = NULL;
            return;
        }
    }
    gsasl_session_hook_set(j->gs, j);
    if (j->prime) {
        j->rc = gsasl_step64(j->gs, "", &j->output);
        gsasl_free(j->output);
        j->output = NULL;
    }
    if (!j->prime || j->rc == GSASL_NEEDS_MORE)
        j->rc = gsasl_step64(j->gs, j->input != NULL ? j->input : "", &j->output);
    gsasl_session_hook_set(j->gs, NULL);
    authid = gsasl_property_fast(j->gs, GSASL_AUTHID);
    if (authid != NULL) {
        if (strlen(authid) >= sizeof(j->authid))
            j->authid_too_long = 1;
        snprintf(j->authid, sizeof(j->authid), "%s", authid);
    }
    if (j->rc == GSASL_OK) {
        /* SCRAM and CRAM-MD5 do not ask the application about an
         * authorization identity: only the account itself may be named */
        const char *authzid = gsasl_property_fast(j->gs, GSASL_AUTHZID);
        if (authzid != NULL && authzid[0] != '\0' && authid != NULL && strcmp(authzid, authid))
            j->authzid_bad = 1;
    }
}

/* ---- the loop side -------------------------------------------------------------------- */

static void job_free(struct step_job *j)
{
    if (j->input != NULL) {
        explicit_bzero(j->input, strlen(j->input));
        free(j->input);
    }
    gsasl_free(j->output);
    free(j->cb_exporter);
    free(j->cb_unique);
    config_unref(j->cfg);
    free(j);
}

static void set_reply(struct auth_reply *r, enum auth_status st, int code, const char *enh,
                      const char *text)
{
    memset(r, 0, sizeof(*r));
    r->status = st;
    r->code = code;
    r->enh = enh;
    snprintf(r->text, sizeof(r->text), "%s", text);
}

/* A refused AUTH: the reply, counted toward the session's error limit.
 * Wrong credentials (535, 534) also get the Postfix-shaped log line
 * fail2ban's postfix-sasl filter matches ("warning: unknown[ADDR]: SASL
 * MECH authentication failed: REASON") and count toward auth_fail_limit;
 * a refusal of the command itself (501, 504, 538) is no guess at a password. */
static void failed(struct auth_session *as, struct auth_reply *r, int code, const char *enh,
                   const char *text, const char *reason, const char *user)
{
    set_reply(r, AUTH_FAILURE, code, enh, text);
    r->count_error = 1;
    if (code == 454) {
        log_warn("unknown[%s]: SASL %s authentication aborted: %s", as->addr, as->mech, reason);
        return;
    }
    if (code != 535 && code != 534) {
        log_info("%s: unknown[%s]: AUTH %s refused: %d %s (%s)", as->service, as->addr,
                 as->mech[0] ? as->mech : "-", code, enh, reason);
        return;
    }
    log_warn("unknown[%s]: SASL %s authentication failed: %s%s%s", as->addr, as->mech, reason,
             user != NULL ? ", sasl_username=" : "", user != NULL ? user : "");
    auth_fail_add(as->a->fails, as->key, uv_now(as->a->loop), as->cfg->auth_fail_period);
}

/* Turn a finished job into the session's reply. */
static void job_reply(struct auth_session *as, struct step_job *j, struct auth_reply *r)
{
    const char *user = j->authid[0] != '\0' ? j->authid : NULL;

    as->phase = AS_IDLE;
    if (j->internal || j->rc == GSASL_MALLOC_ERROR || j->rc == GSASL_CRYPTO_ERROR) {
        failed(as, r, 454, "4.7.0", "Temporary authentication failure", "internal error", user);
        return;
    }
    if (j->rc == GSASL_BASE64_ERROR) {
        failed(as, r, 501, "5.5.2", "Cannot decode response", "cannot decode response", user);
        return;
    }
    if (j->rc == GSASL_NEEDS_MORE && !j->authzid_bad) {
        set_reply(r, AUTH_CONTINUE, 334, NULL, j->output != NULL ? j->output : "");
        as->phase = AS_WAITING;
        return;
    }
    if (j->rc == GSASL_OK && !j->authzid_bad && !j->authid_too_long && user != NULL &&
        credentials_find(as->cfg->credentials, user) != NULL) {
        snprintf(as->account, sizeof(as->account), "%s", user);
        if (j->output != NULL && j->output[0] != '\0') {
            /* RFC 4954 §4: additional data with the success goes in a 334
             * the client answers with an empty line (SCRAM's server-final) */
            set_reply(r, AUTH_CONTINUE, 334, NULL, j->output);
            as->phase = AS_FINAL;
            return;
        }
        set_reply(r, AUTH_SUCCESS, 235, "2.7.0", "Authentication successful");
        as->phase = AS_DONE;
        log_info("%s: unknown[%s]: sasl_method=%s, sasl_username=%s", as->service, as->addr,
                 as->mech, as->account);
        return;
    }
    as->account[0] = '\0';
    if (j->weak && strcmp(as->mech, "CRAM-MD5") == 0) {
        /* RFC 4954 §6: the account has no secret CRAM-MD5 can use */
        failed(as, r, 534, "5.7.9", "Authentication mechanism is too weak",
               "mechanism too weak for this account", user);
        return;
    }
    failed(as, r, 535, "5.7.8", "Error: authentication failed", "authentication failure", user);
}

static void job_done(struct auth_job *base)
{
    struct step_job *j = (struct step_job *)base;
    struct auth_session *as = j->as;
    struct auth_reply r;

    if (as == NULL || j->finish) {
        /* the session has gone, or this was its last trip: the GNU SASL
         * session, if any, is finished on the worker */
        if (j->gs != NULL && j->finish) {
            /* not run: the worker stopped (auth_close joined its thread) */
            gsasl_finish(j->gs);
        } else if (j->gs != NULL) {
            j->finish = 1;
            j->as = NULL;
            j->base.run = job_run;
            if (auth_worker_submit(j->a->worker, &j->base) == 0)
                return;
            /* the worker is stopping and its thread gone: finish here */
            gsasl_finish(j->gs);
        }
        job_free(j);
        return;
    }
    as->job = NULL;
    if (j->has_ready) {
        r = j->ready;
        as->phase = j->next_phase;
    } else {
        as->gs = j->gs;
        job_reply(as, j, &r);
    }
    j->gs = NULL;
    job_free(j);
    as->cb(as, &r, as->udata);
}

/* A reply decided at once, still given from the loop (the contract); next
 * is the session's phase once it is given. */
static int post_ready(struct auth_session *as, const struct auth_reply *r, enum as_phase next)
{
    struct step_job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return -1;
    j->base.done = job_done;
    j->as = as;
    j->a = as->a;
    j->cfg = config_ref(as->cfg);
    j->ready = *r;
    j->has_ready = 1;
    j->next_phase = next;
    if (auth_worker_submit(as->a->worker, &j->base) != 0) {
        job_free(j);
        return -1;
    }
    as->job = j;
    as->phase = AS_RUNNING;
    return 0;
}

static int post_failure(struct auth_session *as, int code, const char *enh, const char *text,
                        const char *reason)
{
    struct auth_reply r;

    failed(as, &r, code, enh, text, reason, NULL);
    return post_ready(as, &r, AS_IDLE);
}

/* Send input (base64, or NULL to start a server-first mechanism) to GNU SASL. */
static int post_step(struct auth_session *as, const char *input, size_t len, int start, int prime)
{
    struct step_job *j = calloc(1, sizeof(*j));
    struct auth_reply r;

    if (j == NULL)
        goto busy;
    j->base.run = job_run;
    j->base.done = job_done;
    j->as = as;
    j->a = as->a;
    j->cfg = config_ref(as->cfg);
    j->start = start;
    j->prime = prime;
    j->gs = as->gs;
    snprintf(j->mech, sizeof(j->mech), "%s", as->mech);
    if ((input != NULL && (j->input = strndup(input, len)) == NULL) ||
        (as->cb_exporter != NULL && (j->cb_exporter = strdup(as->cb_exporter)) == NULL) ||
        (as->cb_unique != NULL && (j->cb_unique = strdup(as->cb_unique)) == NULL)) {
        job_free(j);
        goto busy;
    }
    if (auth_worker_submit(as->a->worker, &j->base) != 0) {
        job_free(j);
        goto busy;
    }
    as->gs = NULL; /* the job carries it */
    as->job = j;
    as->phase = AS_RUNNING;
    return 0;
busy:
    /* RFC 4954 §6: 454 when the server cannot check now */
    failed(as, &r, 454, "4.7.0", "Temporary authentication failure", "too many checks queued",
           NULL);
    return post_ready(as, &r, AS_IDLE);
}

/* The GNU SASL session of an exchange that is over goes to the worker to be
 * finished there (GNU SASL is used by one thread only). */
static void finish_gs(struct auth *a, struct config *cfg, Gsasl_session *gs)
{
    struct step_job *j;

    if (gs == NULL)
        return;
    j = calloc(1, sizeof(*j));
    if (j != NULL) {
        j->base.run = job_run;
        j->base.done = job_done;
        j->a = a;
        j->cfg = config_ref(cfg);
        j->finish = 1;
        j->gs = gs;
        if (auth_worker_submit(a->worker, &j->base) == 0)
            return;
        j->gs = NULL;
        job_free(j);
    }
    /* the worker is full or stopping: its thread never touches this
     * session, and GNU SASL sessions do not share state */
    gsasl_finish(gs);
}

int auth_open(uv_loop_t *loop, struct auth **out)
{
    struct auth *a = calloc(1, sizeof(*a));
    int rc;

    *out = NULL;
    if (a == NULL)
        return UV_ENOMEM;
    a->loop = loop;
    a->fails = auth_fail_new();
    if (a->fails == NULL || gsasl_init(&a->gsasl) != GSASL_OK) {
        auth_fail_free(a->fails);
        free(a);
        return UV_ENOMEM;
    }
    gsasl_callback_set(a->gsasl, gsasl_cb);
    rc = auth_worker_open(loop, &a->worker);
    if (rc != 0) {
        gsasl_done(a->gsasl);
        auth_fail_free(a->fails);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void auth_close(struct auth *a)
{
    if (a == NULL)
        return;
    auth_worker_close(a->worker); /* joins the thread: GNU SASL is ours again */
    gsasl_done(a->gsasl);
    auth_fail_free(a->fails);
    free(a);
}

int auth_session_new(struct auth *a, struct config *cfg, const struct auth_peer *peer, auth_cb cb,
                     void *udata, struct auth_session **out)
{
    struct auth_session *as = calloc(1, sizeof(*as));

    *out = NULL;
    if (as == NULL)
        return -ENOMEM;
    as->a = a;
    as->cfg = config_ref(cfg);
    as->cb = cb;
    as->udata = udata;
    snprintf(as->addr, sizeof(as->addr), "%s", peer->addr != NULL ? peer->addr : "?");
    snprintf(as->key, sizeof(as->key), "%s", peer->key != NULL ? peer->key : as->addr);
    snprintf(as->service, sizeof(as->service), "%s",
             peer->service != NULL ? peer->service : "smtpd");
    as->tls = peer->tls;
    if ((peer->cb_tls_exporter != NULL &&
         (as->cb_exporter = strdup(peer->cb_tls_exporter)) == NULL) ||
        (peer->cb_tls_unique != NULL && (as->cb_unique = strdup(peer->cb_tls_unique)) == NULL)) {
        auth_session_free(as);
        return -ENOMEM;
    }
    *out = as;
    return 0;
}

/* Is the client's base64 well formed? (GNU SASL would say so too, but only
 * after the trip to the worker.) "" is an empty response. */
static int b64_ok(const char *s, size_t n)
{
    size_t pad = 0;

    if (n % 4 != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '=' && i >= n - 2) {
            pad++;
            continue;
        }
        if (pad > 0 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

int auth_session_start(struct auth_session *as, const char *arg, size_t len)
{
    char offered[160];
    const char *sp = memchr(arg, ' ', len);
    size_t mlen = sp != NULL ? (size_t)(sp - arg) : len;
    const char *ir = sp != NULL ? sp + 1 : NULL;
    size_t irlen = sp != NULL ? len - mlen - 1 : 0;
    int server_first;

    if (as->phase == AS_RUNNING)
        return -1;
    as->account[0] = '\0';
    as->mech[0] = '\0';
    /* a new exchange after a failed one: the old GNU SASL session goes */
    finish_gs(as->a, as->cfg, as->gs);
    as->gs = NULL;
    if (auth_fail_count(as->a->fails, as->key, uv_now(as->a->loop), as->cfg->auth_fail_period) >=
        as->cfg->auth_fail_limit) {
        /* auth_fail_limit: Postfix's anvil answers 421 and closes, so does this */
        struct auth_reply r;
        set_reply(&r, AUTH_FAILURE, 421, "4.7.0",
                  "Error: too many failed authentications, try again later");
        r.close = 1;
        log_warn("%s: unknown[%s]: too many failed authentications (auth_fail_limit)", as->service,
                 as->addr);
        return post_ready(as, &r, AS_IDLE);
    }
    if (mlen == 0 || mlen > GSASL_MAX_MECHANISM_SIZE) {
        if (mlen > 0)
            return post_failure(as, 504, "5.5.4", "Unrecognized authentication type",
                                "unknown mechanism");
        return post_failure(as, 501, "5.5.4", "Syntax: AUTH mechanism", "no mechanism");
    }
    for (size_t i = 0; i < mlen; i++)
        as->mech[i] = (char)((arg[i] >= 'a' && arg[i] <= 'z') ? arg[i] - 32 : arg[i]);
    as->mech[mlen] = '\0';
    auth_mechanisms(as->cfg, 1, as->cb_exporter != NULL || as->cb_unique != NULL, offered,
                    sizeof(offered));
    {
        /* a word of the list the session could offer, with TLS assumed */
        size_t n = strlen(as->mech);
        const char *p = offered;
        int found = 0;
        while (*p != '\0' && !found) {
            size_t w = strcspn(p, " ");
            found = w == n && strncmp(p, as->mech, n) == 0;
            p += w;
            while (*p == ' ')
                p++;
        }
        if (!found || !gsasl_server_support_p(as->a->gsasl, as->mech)) {
            as->mech[0] = '\0';
            return post_failure(as, 504, "5.5.4", "Unrecognized authentication type",
                                "unknown mechanism");
        }
    }
    if (mech_is_cleartext(as->mech) && !as->tls)
        /* RFC 4954 §6: 538 */
        return post_failure(as, 538, "5.7.11",
                            "Encryption required for requested authentication mechanism",
                            "encryption required");
    if (strcmp(as->mech, "SCRAM-SHA-256-PLUS") == 0 && !as->tls)
        return post_failure(as, 538, "5.7.11",
                            "Encryption required for requested authentication mechanism",
                            "encryption required");
    server_first = strcmp(as->mech, "CRAM-MD5") == 0 || strcmp(as->mech, "LOGIN") == 0;
    if (ir != NULL) {
        if (irlen == 1 && ir[0] == '=')
            irlen = 0; /* RFC 4954 §4: "=" is an empty initial response */
        else if (irlen == 1 && ir[0] == '*')
            return post_failure(as, 501, "5.0.0", "Authentication aborted", "aborted by client");
        else if (!b64_ok(ir, irlen))
            return post_failure(as, 501, "5.5.2", "Cannot decode response",
                                "cannot decode initial response");
        if (server_first && irlen > 0 && strcmp(as->mech, "CRAM-MD5") == 0)
            /* RFC 2195: the server speaks first */
            return post_failure(as, 501, "5.5.2", "CRAM-MD5 takes no initial response",
                                "initial response to CRAM-MD5");
        if (strcmp(as->mech, "LOGIN") == 0 && irlen > 0)
            /* LOGIN with the user name as initial response (as many clients
             * send it): start, then take it as the answer to "Username:" */
            return post_step(as, ir, irlen, 1, 1);
        return post_step(as, server_first ? NULL : ir, server_first ? 0 : irlen, 1, 0);
    }
    if (!server_first) {
        /* RFC 4954 §4: no initial response to a client-first mechanism: an
         * empty 334; the client's first line starts the mechanism (as->gs
         * stays NULL until then) */
        struct auth_reply r;
        set_reply(&r, AUTH_CONTINUE, 334, NULL, "");
        return post_ready(as, &r, AS_WAITING);
    }
    return post_step(as, NULL, 0, 1, 0);
}

int auth_session_step(struct auth_session *as, const char *line, size_t len)
{
    if (as->phase == AS_RUNNING)
        return -1;
    if (len == 1 && line[0] == '*')
        /* RFC 4954 §4 */
        return post_failure(as, 501, "5.0.0", "Authentication aborted", "aborted by client");
    if (as->phase == AS_FINAL) {
        struct auth_reply r;
        if (len != 0) {
            as->account[0] = '\0';
            return post_failure(as, 535, "5.7.8", "Error: authentication failed",
                                "data after the final message");
        }
        set_reply(&r, AUTH_SUCCESS, 235, "2.7.0", "Authentication successful");
        log_info("%s: unknown[%s]: sasl_method=%s, sasl_username=%s", as->service, as->addr,
                 as->mech, as->account);
        return post_ready(as, &r, AS_DONE);
    }
    if (as->phase != AS_WAITING)
        return -1;
    if (!b64_ok(line, len))
        return post_failure(as, 501, "5.5.2", "Cannot decode response", "cannot decode response");
    /* as->gs is NULL when the mechanism has not started yet (a client-first
     * mechanism without initial response) */
    return post_step(as, line, len, as->gs == NULL, 0);
}

const char *auth_session_account(const struct auth_session *as)
{
    return as != NULL && as->phase == AS_DONE && as->account[0] != '\0' ? as->account : NULL;
}

const char *auth_session_mechanism(const struct auth_session *as)
{
    return as != NULL && as->phase == AS_DONE ? as->mech : NULL;
}

void auth_session_free(struct auth_session *as)
{
    if (as == NULL)
        return;
    if (as->job != NULL) {
        /* not run if it has not started (a client gone while a hundred
         * checks wait must not cost a hundred checks); its done() finishes
         * the GNU SASL session */
        as->job->as = NULL;
        auth_worker_cancel(as->a->worker, &as->job->base);
        as->job = NULL;
    } else {
        finish_gs(as->a, as->cfg, as->gs);
    }
    free(as->cb_exporter);
    free(as->cb_unique);
    config_unref(as->cfg);
    free(as);
}
