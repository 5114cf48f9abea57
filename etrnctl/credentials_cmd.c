/*
 * credentials_cmd: `etrnctl credentials NAME DOMAIN...` makes one line of
 * relayd's credentials file (relayd.conf(5)) without the password ever
 * being on a command line: it is read from the terminal without echo
 * (twice), or as the first line of standard input. The line holds SCRAM-
 * SHA-256 stored keys (RFC 5802, RFC 7677) and a yescrypt hash, so every
 * mechanism but CRAM-MD5 works and no password is kept in clear. It writes
 * the line on standard output and nothing else anywhere.
 */
#include <crypt.h>
#include <errno.h>
#include <gsasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cred_line.h"
#include "etrnctl.h"

#define PASSWORD_MAX 1024
/* RFC 7677 §4 asks for at least 4096; gsasl --mkpasswd uses 65536. */
#define SCRAM_ITERATIONS 65536
#define SCRAM_SALT_LEN   16

void credentials_cmd_usage(FILE *fp)
{
    fprintf(fp, "  credentials NAME DOMAIN...\n"
                "      print a line for relayd's credentials file: SCRAM-SHA-256 keys and a\n"
                "      yescrypt hash of a password read from the terminal (or standard input)\n");
}

/* One line from fp into buf, its line end dropped. 0, or -1 at EOF/error
 * or when it does not fit. */
static int read_line(FILE *fp, char *buf, size_t len)
{
    size_t n;

    if (fgets(buf, (int)len, fp) == NULL)
        return -1;
    n = strcspn(buf, "\r\n");
    if (buf[n] == '\0' && n == len - 1)
        return -1; /* longer than the buffer */
    buf[n] = '\0';
    return 0;
}

/* Ask on the terminal with echo off. 0 or -1. */
static int ask(FILE *tty, const char *prompt, char *buf, size_t len)
{
    struct termios old, quiet;
    int fd = fileno(tty), rc;

    /* echo off before the prompt: what is typed once the prompt shows
     * must neither be echoed nor flushed away */
    if (tcgetattr(fd, &old) != 0)
        return -1;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0)
        return -1;
    fputs(prompt, stderr);
    fflush(stderr);
    rc = read_line(tty, buf, len);
    tcsetattr(fd, TCSAFLUSH, &old);
    return rc;
}

/* The password: twice from the terminal when standard input is one, else
 * the first line of standard input. 0 or an exit status. */
static int get_password(char *pw, size_t len)
{
    char again[PASSWORD_MAX + 2];
    int st = 0;

    if (isatty(STDIN_FILENO)) {
        if (ask(stdin, "Password: ", pw, len) != 0 ||
            ask(stdin, "Password again: ", again, sizeof(again)) != 0) {
            etrnctl_warn("credentials: cannot read the password from the terminal");
            st = EX_IOERR;
        } else if (strcmp(pw, again) != 0) {
            etrnctl_warn("credentials: the passwords differ");
            st = EX_DATAERR;
        }
        explicit_bzero(again, sizeof(again));
    } else if (read_line(stdin, pw, len) != 0) {
        etrnctl_warn("credentials: no password on standard input (or longer than %d bytes)",
                     PASSWORD_MAX);
        st = EX_DATAERR;
    }
    if (st == 0 && pw[0] == '\0') {
        etrnctl_warn("credentials: empty password");
        st = EX_DATAERR;
    }
    return st;
}

/* "{SCRAM-SHA-256}ITER,SALT,STOREDKEY,SERVERKEY" as gsasl --mkpasswd prints
 * it, salt and keys in base64. 0 or -1. */
static int scram_keys(const char *pw, char *out, size_t len)
{
    char salt[SCRAM_SALT_LEN], salted[GSASL_HASH_MAX_SIZE], client[GSASL_HASH_MAX_SIZE],
        server[GSASL_HASH_MAX_SIZE], stored[GSASL_HASH_MAX_SIZE];
    char *b_salt = NULL, *b_stored = NULL, *b_server = NULL;
    size_t n, hl = GSASL_HASH_SHA256_SIZE;
    int rc = -1;

    if (gsasl_nonce(salt, sizeof(salt)) != GSASL_OK ||
        gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, pw, SCRAM_ITERATIONS, salt,
                                          sizeof(salt), salted, client, server, stored) != GSASL_OK)
        goto done;
    if (gsasl_base64_to(salt, sizeof(salt), &b_salt, &n) != GSASL_OK ||
        gsasl_base64_to(stored, hl, &b_stored, &n) != GSASL_OK ||
        gsasl_base64_to(server, hl, &b_server, &n) != GSASL_OK)
        goto done;
    n = (size_t)snprintf(out, len, "{SCRAM-SHA-256}%d,%s,%s,%s", SCRAM_ITERATIONS, b_salt, b_stored,
                         b_server);
    rc = n < len ? 0 : -1;
done:
    explicit_bzero(salted, sizeof(salted));
    explicit_bzero(client, sizeof(client));
    gsasl_free(b_salt);
    gsasl_free(b_stored);
    gsasl_free(b_server);
    return rc;
}

/* A yescrypt hash at libxcrypt's default cost. 0 or -1. */
static int yescrypt_hash(const char *pw, char *out, size_t len)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    const char *h;
    int rc = -1;

    if (cd == NULL)
        return -1;
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) != NULL) {
        h = crypt_r(pw, setting, cd);
        if (h != NULL && h[0] == '$' && strlen(h) < len) {
            snprintf(out, len, "%s", h);
            rc = 0;
        }
    }
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return rc;
}

int credentials_cmd_main(int argc, char **argv, struct etrnctl_opts *o)
{
    char pw[PASSWORD_MAX + 2], scram[256], hash[256], line[CRED_LINE_MAX + 1],
        check[CRED_LINE_MAX + 1];
    struct cred_line parsed;
    const char *why = NULL;
    size_t n;
    int st, c;
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, o, credentials_cmd_usage))
            continue;
        credentials_cmd_usage(stderr);
        return EX_USAGE;
    }
    if (argc - optind < 2) {
        etrnctl_warn("credentials: NAME and at least one DOMAIN");
        credentials_cmd_usage(stderr);
        return EX_USAGE;
    }
    /* the name and domains are checked as relayd will read them, before
     * the password is asked for */
    n = (size_t)snprintf(line, sizeof(line), "%s:{plain}x:", argv[optind]);
    for (int i = optind + 1; i < argc && n < sizeof(line); i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", i > optind + 1 ? "," : "",
                              argv[i]);
    if (n >= sizeof(line) || cred_line_parse(line, &parsed, &why) != 1) {
        etrnctl_warn("credentials: %s", why != NULL ? why : "line too long");
        return EX_USAGE;
    }
    if (strchr(argv[optind], ':') != NULL) {
        etrnctl_warn("credentials: a name cannot contain ':'");
        return EX_USAGE;
    }
    st = get_password(pw, sizeof(pw));
    if (st != 0)
        goto done;
    if (scram_keys(pw, scram, sizeof(scram)) != 0 || yescrypt_hash(pw, hash, sizeof(hash)) != 0) {
        etrnctl_warn("credentials: cannot derive the keys");
        st = EX_SOFTWARE;
        goto done;
    }
    n = (size_t)snprintf(line, sizeof(line), "%s:%s;%s:", argv[optind], scram, hash);
    for (int i = optind + 1; i < argc && n < sizeof(line); i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", i > optind + 1 ? "," : "",
                              argv[i]);
    /* what relayd would make of it */
    snprintf(check, sizeof(check), "%s", line);
    if (n >= sizeof(line) || cred_line_parse(check, &parsed, &why) != 1 ||
        parsed.mechs !=
            (CRED_LINE_MECH_SCRAM_SHA_256 | CRED_LINE_MECH_PLAIN | CRED_LINE_MECH_LOGIN)) {
        etrnctl_warn("credentials: made a line relayd would not read: %s", why ? why : "?");
        st = EX_SOFTWARE;
        goto done;
    }
    printf("%s\n", line);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        etrnctl_warn("credentials: cannot write: %s", strerror(errno));
        st = EX_IOERR;
    }
done:
    explicit_bzero(pw, sizeof(pw));
    explicit_bzero(line, sizeof(line));
    explicit_bzero(check, sizeof(check));
    return st;
}
