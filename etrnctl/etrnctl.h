/*
 * etrnctl.h: what the command families share: the global options, exit
 * statuses (sysexits.h) and how several outcomes combine, duration parsing
 * and diagnostics. No I/O beyond stderr; no JSON (json-c stays in ctl_*).
 */
#ifndef RELAYD_ETRNCTL_H
#define RELAYD_ETRNCTL_H

#include <getopt.h>
#include <stdio.h>
#include <sysexits.h>

/* Where relayd listens for control requests unless -S or $ETRNCTL_SOCKET say
 * otherwise (relayd.conf's control_socket default). */
#define ETRNCTL_DEFAULT_SOCKET RUNSTATEDIR "/relayd/control.sock"

/* Options every command accepts, before or after its name. */
struct etrnctl_opts {
    int json;           /* --json: one JSON object per line on stdout */
    int verbose;        /* -v (repeatable): dialogue and attempts on stderr */
    int quiet;          /* -q: nothing on stdout for success */
    const char *socket; /* -S / $ETRNCTL_SOCKET / ETRNCTL_DEFAULT_SOCKET */
    int wide;           /* --wide: tables as wide as their contents (else 80 columns) */
};

/* Long-option values of the global options that have no short letter. */
enum {
    ETRNCTL_OPT_JSON = 1000,
    ETRNCTL_OPT_HELP,
    ETRNCTL_OPT_VERSION,
    ETRNCTL_OPT_WIDE,
    ETRNCTL_OPT_FIRST_LOCAL
};

/* The global entries of a command's getopt_long table (no terminator), and
 * their short letters; a command appends its own. */
#define ETRNCTL_GLOBAL_LONGOPTS                                                                    \
    {"json", no_argument, NULL, ETRNCTL_OPT_JSON}, {"quiet", no_argument, NULL, 'q'},              \
        {"verbose", no_argument, NULL, 'v'}, {"socket", required_argument, NULL, 'S'},             \
        {"help", no_argument, NULL, 'h'}, {"wide", no_argument, NULL, ETRNCTL_OPT_WIDE},           \
    {                                                                                              \
        "version", no_argument, NULL, ETRNCTL_OPT_VERSION                                          \
    }
#define ETRNCTL_GLOBAL_SHORTOPTS "qvS:hV"

/* Handle one global option seen by a command's getopt loop. Returns 1 if c
 * was a global option and has been applied, 0 if it is not one; -h and
 * --version print and exit here (help via the command's usage function). */
int etrnctl_global_opt(int c, const char *arg, struct etrnctl_opts *o, void (*usage)(FILE *fp));

/* Combine two exit statuses: the one a script must act on first wins.
 * Order (worst first): 64 usage > 78 config > 70 internal > 77 refused >
 * 69 unavailable > 76 protocol > 75 temporary > 0. See etrnctl(8) EXIT STATUS. */
int etrnctl_worse(int a, int b);

/* "10", "10s", "0.2", "500ms", "5m", "2h", "1d" -> seconds (>= 0).
 * 0 or -1 on anything else. */
int etrnctl_parse_duration(const char *s, double *out);
/* A non-negative integer that fits an int; 0 or -1. */
int etrnctl_parse_uint(const char *s, int *out);
/* Short human form of a number of seconds: "45s", "12m", "3h20m", "2d4h". */
void etrnctl_format_age(double seconds, char *out, size_t outlen);

/* "etrnctl: " + message + newline on stderr. */
void etrnctl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The command families: argv[0] is the command name; they return an exit
 * status. */
int etrn_cmd_main(int argc, char **argv, struct etrnctl_opts *o);
void etrn_cmd_usage(FILE *fp);
int atrn_cmd_main(int argc, char **argv, struct etrnctl_opts *o);
void atrn_cmd_usage(FILE *fp);
/* credentials_cmd.c: a line for relayd's credentials file */
int credentials_cmd_main(int argc, char **argv, struct etrnctl_opts *o);
void credentials_cmd_usage(FILE *fp);
/* Whether name is an operator command ctl_cmd_main() handles. */
int ctl_cmd_known(const char *name);
int ctl_cmd_main(int argc, char **argv, struct etrnctl_opts *o);
void ctl_cmd_usage(FILE *fp);

#endif
