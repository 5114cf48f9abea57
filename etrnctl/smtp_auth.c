/*
 * smtp_auth: etrnctl's side of SMTP AUTH (RFC 4954): the password file, and
 * the AUTH exchange over smtp_io with lib/sasl_client choosing the
 * mechanism and answering the challenges. What a failure means for a
 * script is an exit status (etrnctl(8)). No secret reaches stdout or
 * stderr.
 */
#include "smtp_auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "sasl_client.h"
#include "smtp_io.h"
#include "tls.h"

int smtp_auth_read_password(const char *path, char *out, size_t outlen, char *why, size_t whylen)
{
    FILE *fp = fopen(path, "re");
    size_t n;
    int st = 0;

    if (fp == NULL) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        return EX_NOINPUT;
    }
    n = fread(out, 1, outlen - 1, fp);
    out[n] = '\0';
    if (ferror(fp)) {
        snprintf(why, whylen, "%s: read error", path);
        st = EX_NOINPUT;
    } else if (n == outlen - 1 && strcspn(out, "\r\n") == n && fgetc(fp) != EOF) {
        snprintf(why, whylen, "%s: password longer than %zu bytes", path, outlen - 2);
        st = EX_DATAERR;
    }
    fclose(fp);
    out[strcspn(out, "\r\n")] = '\0';
    if (st == 0 && out[0] == '\0') {
        snprintf(why, whylen, "%s: empty password", path);
        st = EX_DATAERR;
    }
    if (st != 0)
        explicit_bzero(out, outlen);
    return st;
}

int smtp_auth(struct smtp_io *io, const struct smtp_io_reply *ehlo, const char *user,
              const char *password, const char *mech, char *why, size_t whylen)
{
    struct sasl_client *sc = NULL;
    struct smtp_io_reply rep;
    char offered[512], line[SASL_CLIENT_LINE_MAX + 8], err[256], cb[64];
    int st = EX_PROTOCOL, verbose = io->verbose, have_cb = 0;

    if (!smtp_io_keyword_params(ehlo, "AUTH", offered, sizeof(offered))) {
        snprintf(why, whylen, "the relay does not offer AUTH%s",
                 io->tls == NULL && smtp_io_has_keyword(ehlo, "STARTTLS") ? " (try --starttls)"
                                                                          : "");
        return EX_UNAVAILABLE;
    }
    /* RFC 9266: with TLS 1.3, SCRAM-SHA-256-PLUS binds the exchange to this
     * very TLS connection (a relay in the middle cannot pass it on) */
    if (io->tls != NULL && tls_conn_channel_binding(io->tls, cb, sizeof(cb)) == 0)
        have_cb = 1;
    if (sasl_client_new(user, password, offered, mech, io->tls != NULL, have_cb ? cb : NULL, &sc,
                        err, sizeof(err)) != 0) {
        snprintf(why, whylen, "%s", err);
        return EX_UNAVAILABLE;
    }
    if (sasl_client_start(sc, line, sizeof(line), err, sizeof(err)) != 0) {
        snprintf(why, whylen, "%s", err);
        st = EX_SOFTWARE;
        goto done;
    }
    if (verbose)
        fprintf(stderr, "%s: AUTH %s as %s (exchange not shown)\n", io->label,
                sasl_client_mechanism(sc), user);
    io->verbose = 0; /* the lines carry the password or what stands for it */
    for (int steps = 0; steps < 16; steps++) {
        if (smtp_io_cmd(io, line) != 0 || smtp_io_read_reply(io, &rep) != 0) {
            snprintf(why, whylen, "%s", io->err);
            st = EX_TEMPFAIL;
            goto done;
        }
        if (rep.code == 235) {
            if (!sasl_client_done(sc)) {
                /* SCRAM: a 235 before the relay's proof is worth nothing */
                snprintf(why, whylen, "the relay said 235 without proving it knows the account");
                st = EX_PROTOCOL;
                goto done;
            }
            st = 0;
            goto done;
        }
        if (rep.code != 334) {
            snprintf(why, whylen, "%s", rep.line);
            st = rep.code / 100 == 5 ? EX_NOPERM : rep.code / 100 == 4 ? EX_TEMPFAIL : EX_PROTOCOL;
            goto done;
        }
        {
            const char *ch = rep.line + 3;
            while (*ch == ' ')
                ch++;
            if (sasl_client_step(sc, ch, line, sizeof(line), err, sizeof(err)) != 0) {
                snprintf(why, whylen, "%s", err);
                st = EX_NOPERM;
                /* RFC 4954 §4: cancel the exchange */
                if (smtp_io_cmd(io, "*") == 0)
                    (void)smtp_io_read_reply(io, &rep);
                goto done;
            }
        }
    }
    snprintf(why, whylen, "the relay asked for too many AUTH steps");
done:
    io->verbose = verbose;
    explicit_bzero(line, sizeof(line));
    sasl_client_free(sc);
    return st;
}
