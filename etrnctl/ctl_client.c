/*
 * ctl_client: one request, one connection to relayd's control socket
 * (protocol in relayd/control.c and etrnctl(8)). Owns the socket and the
 * read buffer for the duration of a call; records are parsed with json-c
 * and passed to the caller. Formats nothing for the user.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ctl_client.h"
#include "etrnctl.h"

/* A record can hold a whole message (show: the body as a JSON string, up
 * to 6 bytes per byte when escaped): allow big lines, but not unbounded. */
#define LINE_HARD_MAX ((size_t)1 << 30)

static int needs_escape(unsigned char c)
{
    return c < 0x21 || c >= 0x7f || c == '%' || c == '=';
}

long ctl_client_encode(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (needs_escape(*p)) {
            if (o + 3 >= outlen)
                return -1;
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            if (o + 1 >= outlen)
                return -1;
            out[o++] = (char)*p;
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return (long)o;
}

static int req_append(struct ctl_client_req *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        char *p;
        while (cap < r->len + n + 1)
            cap *= 2;
        p = realloc(r->line, cap);
        if (p == NULL)
            return -1;
        r->line = p;
        r->cap = cap;
    }
    memcpy(r->line + r->len, s, n);
    r->len += n;
    r->line[r->len] = '\0';
    return 0;
}

static int req_append_encoded(struct ctl_client_req *r, const char *s)
{
    size_t need = strlen(s) * 3 + 1;
    char *tmp = malloc(need);
    long n;
    int rc = -1;

    if (tmp == NULL)
        return -1;
    n = ctl_client_encode(s, tmp, need);
    if (n >= 0)
        rc = req_append(r, tmp, (size_t)n);
    free(tmp);
    return rc;
}

int ctl_client_req_init(struct ctl_client_req *r, const char *command)
{
    memset(r, 0, sizeof(*r));
    return req_append(r, command, strlen(command));
}

int ctl_client_req_add(struct ctl_client_req *r, const char *key, const char *value)
{
    if (req_append(r, " ", 1) != 0 || req_append_encoded(r, key) != 0 ||
        req_append(r, "=", 1) != 0 || req_append_encoded(r, value) != 0)
        return -1;
    return 0;
}

void ctl_client_req_free(struct ctl_client_req *r)
{
    free(r->line);
    memset(r, 0, sizeof(*r));
}

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for fd to be ready; 0, or -1 on timeout/error (explained). */
static int wait_fd(int fd, short events, double timeout, const char *path)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    double deadline = mono() + timeout;

    for (;;) {
        double left = deadline - mono();
        int rc;
        if (left <= 0) {
            etrnctl_warn("%s: relayd did not answer within %.0fs", path, timeout);
            return -1;
        }
        rc = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR) {
            etrnctl_warn("%s: poll: %s", path, strerror(errno));
            return -1;
        }
    }
}

static int connect_socket(const char *path, int *out)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        etrnctl_warn("%s: socket path too long", path);
        return EX_USAGE;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        etrnctl_warn("socket: %s", strerror(errno));
        return EX_SOFTWARE;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        int e = errno;
        close(fd);
        if (e == EACCES || e == EPERM) {
            etrnctl_warn("%s: %s (not in the socket's group?)", path, strerror(e));
            return EX_NOPERM;
        }
        etrnctl_warn("%s: %s: is relayd running?", path, strerror(e));
        return EX_UNAVAILABLE;
    }
    *out = fd;
    return 0;
}

/* The final line: {"ok":true} or {"ok":false,"code":...,"error":...}.
 * Returns -1 when obj is not a status line (a record), else the call's
 * exit status; relayd's reason goes to err, or to stderr when err is NULL. */
static int final_status(struct json_object *obj, int verbose, char *err, size_t errlen)
{
    struct json_object *ok, *code, *text;
    const char *c, *e;
    char why[600];

    if (!json_object_object_get_ex(obj, "ok", &ok))
        return -1;
    if (json_object_get_boolean(ok)) {
        if (verbose)
            etrnctl_warn("relayd: ok");
        return 0;
    }
    c = json_object_object_get_ex(obj, "code", &code) ? json_object_get_string(code) : NULL;
    e = json_object_object_get_ex(obj, "error", &text) ? json_object_get_string(text) : NULL;
    if (c == NULL)
        c = "";
    if (e != NULL && *e != '\0')
        snprintf(why, sizeof(why), "relayd: %.500s (%s)", e, *c ? c : "failed");
    else
        snprintf(why, sizeof(why), "relayd: request failed (%.80s)", *c ? c : "no reason given");
    for (char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    if (err != NULL)
        snprintf(err, errlen, "%s", why);
    else
        etrnctl_warn("%s", why);
    if (strcmp(c, "denied") == 0)
        return EX_NOPERM;
    if (strcmp(c, "usage") == 0)
        return EX_USAGE;
    if (strcmp(c, "notfound") == 0)
        return EX_NOINPUT;
    return EX_SOFTWARE;
}

/* Hand one line to json-c and then to the caller or to final_status().
 * Returns -1 to go on reading, or the call's result. */
static int handle_line(const char *line, size_t len, int verbose, ctl_client_record_cb cb,
                       void *arg, char *err, size_t errlen, int *done)
{
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *obj;
    int rc = -1;

    if (tok == NULL) {
        etrnctl_warn("out of memory");
        *done = 1;
        return EX_SOFTWARE;
    }
    obj = json_tokener_parse_ex(tok, line, (int)len);
    if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        tok->char_offset != (int)len || !json_object_is_type(obj, json_type_object)) {
        etrnctl_warn("relayd sent something that is not a JSON object: %.80s", line);
        *done = 1;
        rc = EX_SOFTWARE;
        goto out;
    }
    rc = final_status(obj, verbose, err, errlen);
    if (rc >= 0) {
        *done = 1;
        goto out;
    }
    rc = cb ? cb(arg, obj, line) : 0;
    if (rc != 0)
        *done = 1;
    else
        rc = -1;
out:
    if (obj != NULL)
        json_object_put(obj);
    json_tokener_free(tok);
    return rc;
}

int ctl_client_call(const char *path, const struct ctl_client_req *req, double timeout, int verbose,
                    ctl_client_record_cb cb, void *arg, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap = 0, scan = 0, start;
    int fd = -1, rc, done = 0;
    const char *p;
    size_t left;

    if (req->len + 1 > CTL_CLIENT_LINE_MAX) {
        etrnctl_warn("request longer than %d bytes", CTL_CLIENT_LINE_MAX);
        return EX_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = connect_socket(path, &fd);
    if (rc != 0)
        return rc;
    if (verbose)
        etrnctl_warn("%s: -> %s", path, req->line);

    /* the request and its newline; the server answers after the whole line */
    for (int part = 0; part < 2; part++) {
        p = part == 0 ? req->line : "\n";
        left = part == 0 ? req->len : 1;
        while (left > 0) {
            ssize_t w = send(fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                p += w;
                left -= (size_t)w;
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(fd, POLLOUT, timeout, path) != 0) {
                    rc = EX_SOFTWARE;
                    goto out;
                }
            } else {
                etrnctl_warn("%s: send: %s", path, strerror(errno));
                rc = EX_SOFTWARE;
                goto out;
            }
        }
    }

    rc = EX_SOFTWARE;
    while (!done) {
        char *nl;
        ssize_t n;

        if (cap - len < 65536) {
            size_t ncap = cap ? cap * 2 : 131072;
            char *nb;
            if (ncap > LINE_HARD_MAX + 65536) {
                etrnctl_warn("relayd sent a line longer than %zu bytes", LINE_HARD_MAX);
                goto out;
            }
            nb = realloc(buf, ncap);
            if (nb == NULL) {
                etrnctl_warn("out of memory");
                rc = EX_SOFTWARE;
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        if (wait_fd(fd, POLLIN, timeout, path) != 0)
            goto out;
        n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) {
            etrnctl_warn("%s: recv: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            etrnctl_warn("%s: relayd closed the connection without a status line", path);
            goto out;
        }
        len += (size_t)n;
        /* every complete line: a record or the final status; then one move */
        start = 0;
        while (!done && (nl = memchr(buf + scan, '\n', len - scan)) != NULL) {
            size_t ll = (size_t)(nl - (buf + start));
            int r;
            *nl = '\0';
            r = handle_line(buf + start, ll, verbose, cb, arg, err, errlen, &done);
            if (done)
                rc = r;
            start += ll + 1;
            scan = start;
        }
        memmove(buf, buf + start, len - start);
        len -= start;
        scan = len;
    }
out:
    free(buf);
    close(fd);
    return rc;
}
