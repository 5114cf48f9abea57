/*
 * log: one line per event to syslog (facility mail) or stderr (see log.h).
 * Owns the process-wide log settings (ident, destination, level): the only
 * mutable globals here. Thread-safe; formats on the caller's stack, never
 * into a shared buffer, and writes each stderr line with a single write(2).
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* One line, timestamp and prefix included; longer messages end in "...". */
#define LOG_LINE_MAX  2048
#define LOG_IDENT_MAX 64

/* Severity of log_fatal lines; below LOGL_ERROR so a level never hides them. */
#define LOG_SEV_FATAL (-1)

/* The process-wide settings. level and to_stderr are read on every call from
 * any thread, hence atomic; ident is copied under log_mu, which also keeps
 * openlog() from swapping the ident while syslog() reads it. */
static _Atomic int log_level_cur = LOGL_INFO;
static _Atomic int log_to_stderr = 1;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_ident[LOG_IDENT_MAX] = "relayd";
static int log_syslog_open; /* under log_mu */
/* What openlog() was given: syslog(3) reads it on every call, so under
 * log_mu it is rewritten to "ident/service" before each line. */
static char log_tag[LOG_IDENT_MAX * 2];

/* vprintf-style helpers, declared so the compiler checks their callers' formats. */
static size_t format_message(char *line, size_t size, size_t used, const char *prefix,
                             const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static void emit_stderr(const char *service, int sev, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void emit_syslog(const char *service, int sev, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void log_vemit(const char *service, int sev, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static const char *const level_names[] = {
    [LOGL_ERROR] = "error",
    [LOGL_WARN] = "warn",
    [LOGL_INFO] = "info",
    [LOGL_DEBUG] = "debug",
};

void log_open(const char *ident, int to_stderr)
{
    pthread_mutex_lock(&log_mu);
    if (log_syslog_open) {
        closelog();
        log_syslog_open = 0;
    }
    snprintf(log_ident, sizeof(log_ident), "%s", ident ? ident : "relayd");
    snprintf(log_tag, sizeof(log_tag), "%s", log_ident);
    if (!to_stderr) {
        /* LOG_NDELAY: connect now, before a chroot or privilege drop. */
        openlog(log_tag, LOG_PID | LOG_NDELAY, LOG_MAIL);
        log_syslog_open = 1;
    }
    atomic_store(&log_to_stderr, to_stderr ? 1 : 0);
    pthread_mutex_unlock(&log_mu);
}

void log_set_level(enum log_level level)
{
    atomic_store(&log_level_cur, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level_cur);
}

int log_level_parse(const char *s, enum log_level *out)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {
        {"error", LOGL_ERROR}, {"warn", LOGL_WARN},   {"warning", LOGL_WARN},
        {"info", LOGL_INFO},   {"debug", LOGL_DEBUG},
    };

    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level level)
{
    if ((int)level < 0 || (size_t)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

static const char *sev_prefix(int sev)
{
    switch (sev) {
    case LOG_SEV_FATAL:
        return "fatal: ";
    case LOGL_ERROR:
        return "error: ";
    case LOGL_WARN:
        return "warning: ";
    default:
        return "";
    }
}

static int sev_syslog_priority(int sev)
{
    switch (sev) {
    case LOG_SEV_FATAL:
    case LOGL_ERROR:
        return LOG_ERR;
    case LOGL_WARN:
        return LOG_WARNING;
    case LOGL_INFO:
        return LOG_INFO;
    default:
        return LOG_DEBUG;
    }
}

/* Control characters in a message (peer-supplied text is logged) would let
 * a peer forge log lines; they become '?'. */
static void sanitize(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            s[i] = '?';
    }
}

/* Format prefix + message into line[0..size), ending in "..." when it did not
 * fit. Returns the length (size - 1 at most). */
static size_t format_message(char *line, size_t size, size_t used, const char *prefix,
                             const char *fmt, va_list ap)
{
    int n;
    size_t start = used;

    n = snprintf(line + used, size - used, "%s", prefix);
    if (n > 0)
        used += (size_t)n < size - used ? (size_t)n : size - used - 1;
    n = vsnprintf(line + used, size - used, fmt, ap);
    if (n < 0) {
        n = snprintf(line + used, size - used, "(bad log format)");
        if (n < 0)
            n = 0;
    }
    if ((size_t)n >= size - used) {
        used = size - 1;
        memcpy(line + used - 3, "...", 3);
    } else {
        used += (size_t)n;
    }
    line[used] = '\0';
    sanitize(line + start, used - start);
    return used;
}

/* stderr: "YYYY-mm-ddTHH:MM:SS.mmmZ ident[pid]: prefix message\n", one write(2)
 * so lines from concurrent threads never interleave. */
static void emit_stderr(const char *service, int sev, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ident[LOG_IDENT_MAX];
    struct timespec ts;
    struct tm tm;
    size_t used = 0;
    int n;

    pthread_mutex_lock(&log_mu);
    memcpy(ident, log_ident, sizeof(ident));
    pthread_mutex_unlock(&log_mu);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    used = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line + used, sizeof(line) - used, ".%03ldZ %s%s%s[%ld]: ", ts.tv_nsec / 1000000L,
                 ident, service ? "/" : "", service ? service : "", (long)getpid());
    if (n > 0)
        used += (size_t)n;
    /* Leave one byte for the newline that replaces the NUL. */
    used = format_message(line, sizeof(line) - 1, used, sev_prefix(sev), fmt, ap);
    line[used++] = '\n';

    for (size_t off = 0; off < used;) {
        ssize_t w = write(STDERR_FILENO, line + off, used - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere else to report it */
        off += (size_t)w;
    }
}

static void emit_syslog(const char *service, int sev, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];

    format_message(line, sizeof(line), 0, sev_prefix(sev), fmt, ap);
    pthread_mutex_lock(&log_mu);
    snprintf(log_tag, sizeof(log_tag), "%s%s%s", log_ident, service ? "/" : "",
             service ? service : "");
    syslog(sev_syslog_priority(sev), "%s", line);
    pthread_mutex_unlock(&log_mu);
}

static void log_vemit(const char *service, int sev, const char *fmt, va_list ap)
{
    int saved = errno; /* callers may log between a failure and reading errno */

    if (atomic_load(&log_to_stderr))
        emit_stderr(service, sev, fmt, ap);
    else
        emit_syslog(service, sev, fmt, ap);
    errno = saved;
}

void log_emit(const char *service, enum log_level level, const char *fmt, ...)
{
    va_list ap;

    /* Cheap early out: nothing is formatted for a dropped message. */
    if ((int)level > atomic_load_explicit(&log_level_cur, memory_order_relaxed))
        return;
    va_start(ap, fmt);
    log_vemit(service, (int)level, fmt, ap);
    va_end(ap);
}

void log_fatal_svc(const char *service, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(service, LOG_SEV_FATAL, fmt, ap);
    va_end(ap);
    exit(status);
}
