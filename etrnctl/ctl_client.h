/*
 * ctl_client: the client end of relayd's control socket (relayd/control.c):
 * builds one percent-encoded request line, sends it over the unix socket and
 * hands each JSON record line back, parsed with json-c. It knows nothing of
 * what the commands mean (ctl_cmd.c) and prints only diagnostics.
 */
#ifndef RELAYD_CTL_CLIENT_H
#define RELAYD_CTL_CLIENT_H

#include <stddef.h>

struct json_object;

/* The protocol's limit on one request line, newline included. */
#define CTL_CLIENT_LINE_MAX 65536

/* A request being built: "COMMAND key=value ...". Owns line. */
struct ctl_client_req {
    char *line;
    size_t len;
    size_t cap;
};

/* Start a request for command. 0 or -1 (out of memory). */
int ctl_client_req_init(struct ctl_client_req *r, const char *command);
/* Append " key=value", both percent-encoded (space, '%', '=', bytes < 0x21
 * and >= 0x7f). 0 or -1 (out of memory). */
int ctl_client_req_add(struct ctl_client_req *r, const char *key, const char *value);
void ctl_client_req_free(struct ctl_client_req *r);
/* Percent-encode s into out (NUL-terminated). Returns the length, or -1 when
 * outlen is too small. */
long ctl_client_encode(const char *s, char *out, size_t outlen);

/* Called for every record line before the final status line. rec is owned
 * by the caller (valid during the call); raw is the line as relayd sent it,
 * without its newline. Return 0 to go on, non-zero to stop reading (that
 * value becomes ctl_client_call's result). */
typedef int (*ctl_client_record_cb)(void *arg, struct json_object *rec, const char *raw);

/* Connect to the socket at path, send the request, read records until the
 * final {"ok":...} line. timeout: seconds of silence tolerated. verbose: the
 * request and the status line are shown on stderr.
 * Returns an exit status: 0 ok; EX_UNAVAILABLE relayd not running (no
 * socket, refused); EX_NOPERM the socket or relayd refused ("denied");
 * EX_USAGE relayd called the request wrong; EX_NOINPUT no such message or
 * domain ("notfound"); EX_SOFTWARE "internal" or a broken answer. A failure
 * is explained on stderr, except relayd's own refusal when err is given:
 * then its text goes to err (errlen bytes) for the caller to judge. */
int ctl_client_call(const char *path, const struct ctl_client_req *req, double timeout, int verbose,
                    ctl_client_record_cb cb, void *arg, char *err, size_t errlen);

#endif
