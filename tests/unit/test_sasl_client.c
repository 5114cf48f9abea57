/*
 * test_sasl_client: lib/sasl_client.c against GNU SASL's own server side in
 * process: the mechanism it picks from an EHLO AUTH list (never PLAIN or
 * LOGIN without TLS), the AUTH line with its initial response, every
 * mechanism's exchange to success, and a wrong password failing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <gsasl.h>
#include <stdio.h>
#include <string.h>

#include "sasl_client.h"

static int server_cb(Gsasl *ctx, Gsasl_session *s, Gsasl_property prop)
{
    const char *user = gsasl_property_fast(s, GSASL_AUTHID);

    (void)ctx;
    if (prop == GSASL_PASSWORD && user != NULL && strcmp(user, "site1") == 0)
        return gsasl_property_set(s, GSASL_PASSWORD, "s3cret");
    if (prop == GSASL_VALIDATE_SIMPLE) {
        const char *pw = gsasl_property_fast(s, GSASL_PASSWORD);
        return user != NULL && pw != NULL && strcmp(user, "site1") == 0 && strcmp(pw, "s3cret") == 0
                   ? GSASL_OK
                   : GSASL_AUTHENTICATION_ERROR;
    }
    return GSASL_NO_CALLBACK;
}

/* Run one exchange as an SMTP server would: returns 235 or 535. */
static int exchange(const char *password, const char *offered, int tls, char *mech_out)
{
    struct sasl_client *c = NULL;
    Gsasl *ctx = NULL;
    Gsasl_session *srv = NULL;
    char line[SASL_CLIENT_LINE_MAX], err[256], input[SASL_CLIENT_LINE_MAX];
    char *out = NULL, *sp;
    int rc, result = 535, rounds = 0;

    assert_int_equal(
        sasl_client_new("site1", password, offered, NULL, tls, NULL, &c, err, sizeof(err)), 0);
    strcpy(mech_out, sasl_client_mechanism(c));
    assert_int_equal(sasl_client_start(c, line, sizeof(line), err, sizeof(err)), 0);
    assert_int_equal(strncmp(line, "AUTH ", 5), 0);
    sp = strchr(line + 5, ' ');
    if (sp != NULL) {
        *sp = '\0';
        snprintf(input, sizeof(input), "%s", strcmp(sp + 1, "=") == 0 ? "" : sp + 1);
    } else {
        input[0] = '\0';
    }
    assert_string_equal(line + 5, mech_out);
    assert_int_equal(gsasl_init(&ctx), GSASL_OK);
    gsasl_callback_set(ctx, server_cb);
    assert_int_equal(gsasl_server_start(ctx, mech_out, &srv), GSASL_OK);
    for (;;) {
        assert_true(++rounds < 10);
        rc = gsasl_step64(srv, input, &out);
        if (rc != GSASL_OK && rc != GSASL_NEEDS_MORE)
            break; /* 535 */
        if (rc == GSASL_OK && out[0] == '\0') {
            result = 235;
            break;
        }
        /* 334 with the challenge (or SCRAM's server-final message) */
        if (sasl_client_step(c, out, input, sizeof(input), err, sizeof(err)) < 0)
            break;
        if (rc == GSASL_OK) {
            assert_string_equal(input, ""); /* RFC 4954: the client answers empty */
            result = 235;
            break;
        }
        gsasl_free(out);
        out = NULL;
    }
    if (result == 235)
        assert_true(sasl_client_done(c));
    gsasl_free(out);
    gsasl_finish(srv);
    gsasl_done(ctx);
    sasl_client_free(c);
    return result;
}

static void test_each_mechanism(void **state)
{
    char mech[32];

    (void)state;
    assert_int_equal(exchange("s3cret", "PLAIN", 1, mech), 235);
    assert_string_equal(mech, "PLAIN");
    assert_int_equal(exchange("s3cret", "LOGIN", 1, mech), 235);
    assert_string_equal(mech, "LOGIN");
    assert_int_equal(exchange("s3cret", "CRAM-MD5", 0, mech), 235);
    assert_string_equal(mech, "CRAM-MD5");
    assert_int_equal(exchange("s3cret", "SCRAM-SHA-256", 0, mech), 235);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(exchange("wrong", "PLAIN", 1, mech), 535);
    assert_int_equal(exchange("wrong", "LOGIN", 1, mech), 535);
    assert_int_equal(exchange("wrong", "CRAM-MD5", 0, mech), 535);
    assert_int_equal(exchange("wrong", "SCRAM-SHA-256", 0, mech), 535);
}

static const char *pick(const char *offered, const char *want, int tls, const char *cb, char *err,
                        size_t errlen)
{
    static char mech[32];
    struct sasl_client *c = NULL;

    if (sasl_client_new("u", "p", offered, want, tls, cb, &c, err, errlen) < 0)
        return NULL;
    snprintf(mech, sizeof(mech), "%s", sasl_client_mechanism(c));
    sasl_client_free(c);
    return mech;
}

static void test_choice(void **state)
{
    char err[256];

    (void)state;
    assert_string_equal(pick("PLAIN LOGIN CRAM-MD5", NULL, 0, NULL, err, sizeof(err)), "CRAM-MD5");
    assert_string_equal(pick("PLAIN LOGIN CRAM-MD5", NULL, 1, NULL, err, sizeof(err)), "PLAIN");
    assert_string_equal(pick("CRAM-MD5 scram-sha-256 PLAIN", NULL, 1, NULL, err, sizeof(err)),
                        "SCRAM-SHA-256");
    assert_string_equal(pick("LOGIN", NULL, 1, NULL, err, sizeof(err)), "LOGIN");
    /* -PLUS only with channel binding data */
    assert_string_equal(pick("SCRAM-SHA-256-PLUS SCRAM-SHA-256", NULL, 1, NULL, err, sizeof(err)),
                        "SCRAM-SHA-256");
    assert_string_equal(pick("SCRAM-SHA-256-PLUS SCRAM-SHA-256", NULL, 1, "AAAA", err, sizeof(err)),
                        "SCRAM-SHA-256-PLUS");
    /* never a password in clear */
    assert_null(pick("PLAIN LOGIN", NULL, 0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "STARTTLS"));
    assert_null(pick("PLAIN CRAM-MD5", "PLAIN", 0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "in clear"));
    /* an explicit choice must be offered */
    assert_null(pick("PLAIN", "CRAM-MD5", 1, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "does not offer CRAM-MD5"));
    assert_string_equal(pick("PLAIN CRAM-MD5", "cram-md5", 0, NULL, err, sizeof(err)), "CRAM-MD5");
    assert_null(pick("", NULL, 1, NULL, err, sizeof(err)));
    assert_null(pick(NULL, NULL, 1, NULL, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_mechanism),
        cmocka_unit_test(test_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
