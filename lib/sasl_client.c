/*
 * sasl_client: the client side of SMTP AUTH (RFC 4954) over GNU SASL. It
 * chooses a mechanism among those the server offered, makes the AUTH
 * command with its initial response (RFC 4954 §4) and answers each 334
 * challenge. It never sends PLAIN or LOGIN without TLS and wipes the
 * password when freed. No I/O: etrnctl's SMTP code carries the lines.
 */
#include "sasl_client.h"

#include <gsasl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sasl_client {
    Gsasl *ctx;
    Gsasl_session *sess;
    char mech[GSASL_MAX_MECHANISM_SIZE + 1];
    int done; /* the mechanism reported GSASL_OK: finished (SCRAM: server verified) */
};

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Is mech a word of the space-separated list (case-insensitive, RFC 4422 §3.1)? */
static int offered_has(const char *offered, const char *mech)
{
    size_t n = strlen(mech);
    const char *p = offered;

    while (p != NULL && *p != '\0') {
        size_t w;
        while (*p == ' ')
            p++;
        w = strcspn(p, " ");
        if (w == n && strncasecmp(p, mech, n) == 0)
            return 1;
        p += w;
    }
    return 0;
}

static int is_cleartext(const char *mech)
{
    return strcasecmp(mech, "PLAIN") == 0 || strcasecmp(mech, "LOGIN") == 0;
}

int sasl_client_new(const char *user, const char *password, const char *offered, const char *mech,
                    int tls, const char *cb_tls_exporter, struct sasl_client **out, char *err,
                    size_t errlen)
{
    static const char *const order[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN",
                                        "CRAM-MD5"};
    struct sasl_client *c = NULL;
    const char *pick = NULL;
    int rc;

    *out = NULL;
    if (offered == NULL)
        offered = "";
    if (mech != NULL) {
        if (!offered_has(offered, mech)) {
            fail(err, errlen, "the server does not offer %s (it offers: %s)", mech,
                 offered[0] ? offered : "nothing");
            return -1;
        }
        if (is_cleartext(mech) && !tls) {
            fail(err, errlen, "%s would send the password in clear: use STARTTLS", mech);
            return -1;
        }
        if (strcasecmp(mech, "SCRAM-SHA-256-PLUS") == 0 && cb_tls_exporter == NULL) {
            fail(err, errlen, "SCRAM-SHA-256-PLUS needs TLS channel binding");
            return -1;
        }
        pick = mech;
    } else {
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && pick == NULL; i++) {
            if (!offered_has(offered, order[i]))
                continue;
            if (is_cleartext(order[i]) && !tls)
                continue;
            if (strcmp(order[i], "SCRAM-SHA-256-PLUS") == 0 && cb_tls_exporter == NULL)
                continue;
            pick = order[i];
        }
        if (pick == NULL) {
            fail(err, errlen, "no usable mechanism among those offered (%s)%s",
                 offered[0] ? offered : "none",
                 !tls && (offered_has(offered, "PLAIN") || offered_has(offered, "LOGIN"))
                     ? "; PLAIN and LOGIN need STARTTLS"
                     : "");
            return -1;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        fail(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; pick[i] != '\0' && i < GSASL_MAX_MECHANISM_SIZE; i++)
        c->mech[i] = (char)((pick[i] >= 'a' && pick[i] <= 'z') ? pick[i] - 32 : pick[i]);
    rc = gsasl_init(&c->ctx);
    if (rc != GSASL_OK) {
        fail(err, errlen, "GNU SASL: %s", gsasl_strerror(rc));
        goto bad;
    }
    if (!gsasl_client_support_p(c->ctx, c->mech)) {
        fail(err, errlen, "GNU SASL has no client for %s", c->mech);
        goto bad;
    }
    rc = gsasl_client_start(c->ctx, c->mech, &c->sess);
    if (rc != GSASL_OK) {
        fail(err, errlen, "GNU SASL: %s: %s", c->mech, gsasl_strerror(rc));
        goto bad;
    }
    /* RFC 5802 §6: the channel binding goes to -PLUS; to plain SCRAM only
     * when the server offers no -PLUS (the client then says "y": it could
     * bind, which exposes a downgrade). Plain SCRAM chosen although -PLUS is
     * offered says "n". */
    if (cb_tls_exporter != NULL && strncmp(c->mech, "SCRAM-", 6) == 0 &&
        strstr(c->mech, "-PLUS") == NULL) {
        char plus[GSASL_MAX_MECHANISM_SIZE + 8];
        snprintf(plus, sizeof(plus), "%s-PLUS", c->mech);
        if (offered_has(offered, plus))
            cb_tls_exporter = NULL;
    }
    if (gsasl_property_set(c->sess, GSASL_AUTHID, user) != GSASL_OK ||
        gsasl_property_set(c->sess, GSASL_PASSWORD, password) != GSASL_OK ||
        (cb_tls_exporter != NULL &&
         gsasl_property_set(c->sess, GSASL_CB_TLS_EXPORTER, cb_tls_exporter) != GSASL_OK)) {
        fail(err, errlen, "out of memory");
        goto bad;
    }
    *out = c;
    return 0;
bad:
    sasl_client_free(c);
    return -1;
}

const char *sasl_client_mechanism(const struct sasl_client *c)
{
    return c->mech;
}

/* One gsasl step: base64 in (NULL for the first, client-first output),
 * base64 out into line. */
static int step(struct sasl_client *c, const char *in, char *line, size_t linelen, char *err,
                size_t errlen)
{
    char *b64 = NULL;
    int rc = gsasl_step64(c->sess, in, &b64);

    if (rc != GSASL_OK && rc != GSASL_NEEDS_MORE) {
        fail(err, errlen, "%s: %s", c->mech, gsasl_strerror(rc));
        gsasl_free(b64);
        return -1;
    }
    if (rc == GSASL_OK)
        c->done = 1;
    if (b64 == NULL || strlen(b64) >= linelen) {
        fail(err, errlen, "%s: response too long", c->mech);
        gsasl_free(b64);
        return -1;
    }
    snprintf(line, linelen, "%s", b64);
    gsasl_free(b64);
    return 0;
}

int sasl_client_start(struct sasl_client *c, char *line, size_t linelen, char *err, size_t errlen)
{
    char first[SASL_CLIENT_LINE_MAX];
    int n;

    /* LOGIN and CRAM-MD5 are server-first: no initial response */
    if (strcmp(c->mech, "LOGIN") == 0 || strcmp(c->mech, "CRAM-MD5") == 0) {
        n = snprintf(line, linelen, "AUTH %s", c->mech);
        return n < 0 || (size_t)n >= linelen ? -1 : 0;
    }
    if (step(c, "", first, sizeof(first), err, errlen) < 0)
        return -1;
    /* RFC 4954 §4: an empty initial response is sent as "=" */
    n = snprintf(line, linelen, "AUTH %s %s", c->mech, first[0] ? first : "=");
    explicit_bzero(first, sizeof(first));
    if (n < 0 || (size_t)n >= linelen) {
        fail(err, errlen, "AUTH line too long");
        return -1;
    }
    return 0;
}

int sasl_client_step(struct sasl_client *c, const char *challenge, char *line, size_t linelen,
                     char *err, size_t errlen)
{
    if (c->done) {
        /* the mechanism is over; only an empty line may answer a 334 now
         * (SCRAM's server-final message came in one) */
        fail(err, errlen, "%s: the server asked for more after the exchange ended", c->mech);
        return -1;
    }
    return step(c, challenge, line, linelen, err, errlen);
}

int sasl_client_done(const struct sasl_client *c)
{
    return c->done;
}

void sasl_client_free(struct sasl_client *c)
{
    if (c == NULL)
        return;
    if (c->sess != NULL)
        gsasl_finish(c->sess); /* frees its properties, the password with them */
    if (c->ctx != NULL)
        gsasl_done(c->ctx);
    free(c);
}
