/*
 * etrnctl: command dispatch. Parses the global options, picks the command
 * family (etrn_cmd.c and atrn_cmd.c for the site side, credentials_cmd.c for
 * a line of relayd's accounts file, ctl_cmd.c for the operator's
 * control-socket commands) and owns the helpers they share (exit-status
 * order, durations). It does no network or socket I/O itself.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "etrnctl.h"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: etrnctl [--json] [-q|-v] [-S socket] command [arguments]\n"
                "       etrnctl RELAY[:PORT] DOMAIN...     (short for: etrn -H RELAY DOMAIN...)\n"
                "\n"
                "Site side (RFC 1985 ETRN, RFC 2645 ATRN):\n");
    etrn_cmd_usage(fp);
    atrn_cmd_usage(fp);
    fprintf(fp, "  pull [options] [DOMAIN...]\n"
                "      etrn or atrn, as ETRN_MODE in " ETRNCTL_DEFAULTS_FILE " says (default etrn)\n");
    fprintf(fp, "\nAccounts (relayd's credentials file):\n");
    credentials_cmd_usage(fp);
    fprintf(fp, "\nOperator commands (relayd control socket):\n");
    ctl_cmd_usage(fp);
    fprintf(fp, "\nGlobal options:\n"
                "  --json            one JSON object per line on stdout\n"
                "  -q, --quiet       print nothing on success\n"
                "  -v, --verbose     show the SMTP dialogue, attempts and requests on stderr\n"
                "  -S, --socket PATH relayd's control socket (default $ETRNCTL_SOCKET or\n"
                "                    " ETRNCTL_DEFAULT_SOCKET ")\n"
                "  -h, --help        this text;  -V, --version  the version\n"
                "See etrnctl(8).\n");
}

static void version(void)
{
    printf("etrnctl (relayd) %s\n", PACKAGE_VERSION);
}

void etrnctl_warn(const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "etrnctl: %s\n", line);
}

int etrnctl_global_opt(int c, const char *arg, struct etrnctl_opts *o, void (*cmd_usage)(FILE *fp))
{
    switch (c) {
    case ETRNCTL_OPT_JSON:
        o->json = 1;
        return 1;
    case ETRNCTL_OPT_WIDE:
        o->wide = 1;
        return 1;
    case 'q':
        o->quiet = 1;
        o->verbose = 0;
        return 1;
    case 'v':
        o->verbose++;
        o->quiet = 0;
        return 1;
    case 'S':
        o->socket = arg;
        return 1;
    case 'h':
        (cmd_usage ? cmd_usage : usage)(stdout);
        exit(0);
    case 'V':
    case ETRNCTL_OPT_VERSION:
        version();
        exit(0);
    default:
        return 0;
    }
}

/* Rank of an exit status: the higher, the more a script must act on it.
 * Permanent problems outrank temporary ones: a retry cannot fix them, and a
 * hook that retries on 75 would otherwise hide them for ever. */
static int rank(int status)
{
    switch (status) {
    case 0:
        return 0;
    case EX_TEMPFAIL:
        return 1;
    case EX_PROTOCOL:
        return 2;
    case EX_UNAVAILABLE:
        return 3;
    case EX_NOPERM:
        return 4;
    case EX_SOFTWARE:
        return 5;
    case EX_CONFIG:
        return 6;
    case EX_USAGE:
        return 7;
    default:
        return 5; /* anything unexpected counts as internal */
    }
}

int etrnctl_worse(int a, int b)
{
    return rank(b) > rank(a) ? b : a;
}

int etrnctl_parse_duration(const char *s, double *out)
{
    char *end;
    double v, mult = 1;

    if (s == NULL || *s == '\0' || (!(*s >= '0' && *s <= '9') && *s != '.'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || !isfinite(v) || v < 0)
        return -1;
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
        mult = 1;
    else if (strcmp(end, "ms") == 0)
        mult = 0.001;
    else if (strcmp(end, "m") == 0)
        mult = 60;
    else if (strcmp(end, "h") == 0)
        mult = 3600;
    else if (strcmp(end, "d") == 0)
        mult = 86400;
    else
        return -1;
    v *= mult;
    if (v > 1e9) /* 30 years: nobody means more, and it keeps time_t sums safe */
        return -1;
    *out = v;
    return 0;
}

int etrnctl_parse_uint(const char *s, int *out)
{
    char *end;
    long v;

    if (s == NULL || !(*s >= '0' && *s <= '9'))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > 1000000000L)
        return -1;
    *out = (int)v;
    return 0;
}

void etrnctl_format_age(double seconds, char *out, size_t outlen)
{
    long s = seconds < 0 ? 0 : (long)(seconds + 0.5);

    if (s < 60)
        snprintf(out, outlen, "%lds", s);
    else if (s < 3600)
        snprintf(out, outlen, "%ldm", s / 60);
    else if (s < 86400)
        snprintf(out, outlen, "%ldh%02ldm", s / 3600, s % 3600 / 60);
    else
        snprintf(out, outlen, "%ldd%02ldh", s / 86400, s % 86400 / 3600);
}

/* ETRN_MODE from the defaults file, for `etrnctl pull`. */
static void take_mode(void *arg, const char *name, char *value)
{
    char **mode = arg;

    if (strcmp(name, "ETRN_MODE") == 0) {
        free(*mode);
        *mode = value;
    } else {
        free(value);
    }
}

/* `etrnctl pull ...`: `etrn ...` or `atrn ...` as ETRN_MODE in the
 * defaults file says, so one timer unit and one hook serve both ways of
 * pulling. */
static int pull(int argc, char **argv, struct etrnctl_opts *o)
{
    char *mode = NULL;
    int st = etrnctl_defaults_read(take_mode, &mode);

    if (st != 0)
        return st;
    if (mode == NULL || *mode == '\0' || strcmp(mode, "etrn") == 0) {
        argv[0] = "etrn";
        st = etrn_cmd_main(argc, argv, o);
    } else if (strcmp(mode, "atrn") == 0) {
        argv[0] = "atrn";
        st = atrn_cmd_main(argc, argv, o);
    } else {
        etrnctl_warn("ETRN_MODE=%s in %s: expected etrn or atrn", mode, ETRNCTL_DEFAULTS_FILE);
        st = EX_CONFIG;
    }
    free(mode);
    return st;
}

/* `etrnctl RELAY DOMAIN...`: the Solaris etrn(1M) form. Rewritten as
 * `etrn -H RELAY DOMAIN...` so one code path handles both. */
static int short_form(int argc, char **argv, struct etrnctl_opts *o)
{
    char **nargv = calloc((size_t)argc + 3, sizeof(*nargv));
    int st;

    if (nargv == NULL) {
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    nargv[0] = "etrn";
    nargv[1] = "-H";
    nargv[2] = argv[0];
    for (int i = 1; i < argc; i++)
        nargv[i + 2] = argv[i];
    st = etrn_cmd_main(argc + 2, nargv, o);
    free(nargv);
    return st;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};
    struct etrnctl_opts o = {0};
    const char *cmd;
    int c;

    o.socket = getenv("ETRNCTL_SOCKET");
    if (o.socket == NULL || *o.socket == '\0')
        o.socket = ETRNCTL_DEFAULT_SOCKET;

    /* Called as mailq (a link), as sendmail's and Postfix's mailq: the
     * queue listing, with queue's options. */
    {
        const char *base = strrchr(argv[0], '/');
        base = base != NULL ? base + 1 : argv[0];
        if (strcmp(base, "mailq") == 0) {
            argv[0] = "queue";
            return ctl_cmd_main(argc, argv, &o);
        }
    }

    /* '+': stop at the command name; the command parses the rest, global
     * options included, so `etrnctl queue --json` works as well. */
    opterr = 1;
    while ((c = getopt_long(argc, argv, "+" ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (!etrnctl_global_opt(c, optarg, &o, NULL)) {
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EX_USAGE;
    }
    argc -= optind;
    argv += optind;
    cmd = argv[0];
    optind = 0; /* glibc: re-initialise, and permute again for the command */

    if (strcmp(cmd, "etrn") == 0)
        return etrn_cmd_main(argc, argv, &o);
    if (strcmp(cmd, "credentials") == 0)
        return credentials_cmd_main(argc, argv, &o);
    if (strcmp(cmd, "atrn") == 0)
        return atrn_cmd_main(argc, argv, &o);
    if (strcmp(cmd, "pull") == 0)
        return pull(argc, argv, &o);
    if (ctl_cmd_known(cmd))
        return ctl_cmd_main(argc, argv, &o);
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0) {
        version();
        return 0;
    }
    if (argc >= 2)
        return short_form(argc, argv, &o);
    etrnctl_warn("unknown command '%s' (a relay needs at least one domain after it)", cmd);
    usage(stderr);
    return EX_USAGE;
}
