/*
 * log: one line per event, to syslog (facility mail) or to stderr (-d).
 * Severity means something (STYLE.md): info = events an operator counts,
 * warn = trouble that was handled, error = trouble that was not, fatal =
 * start-up only. Mail events: queue id first, then Postfix-style key=value.
 */
#ifndef RELAYD_LOG_H
#define RELAYD_LOG_H

enum log_level { LOGL_ERROR = 0, LOGL_WARN, LOGL_INFO, LOGL_DEBUG };

/* Postfix tags each line with its program, postfix/smtpd[pid], and log tools
 * (pflogsumm, fail2ban's postfix filters) select lines by it. relayd is one
 * process, so each source file names the service its lines belong to:
 * `#define LOG_SERVICE "smtpd"` before its first #include, and the tag is
 * ident/service[pid] ("relayd/smtpd[1234]:"). Without it: ident[pid]. */
#ifndef LOG_SERVICE
#define LOG_SERVICE NULL
#endif

/* Start logging as ident. to_stderr: lines go to stderr (with a timestamp)
 * instead of syslog(LOG_MAIL). May be called again (e.g. after -d is seen). */
void log_open(const char *ident, int to_stderr);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warn", "info" or "debug". 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);

/* Emit one line tagged with service (NULL: none). warn/error/fatal lines are
 * prefixed "warning: ", "error: ", "fatal: " as Postfix does, so existing
 * log tools classify them. */
void log_emit(const char *service, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Start-up failure: log and exit(status). */
void log_fatal_svc(const char *service, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define log_error(...)     log_emit(LOG_SERVICE, LOGL_ERROR, __VA_ARGS__)
#define log_warn(...)      log_emit(LOG_SERVICE, LOGL_WARN, __VA_ARGS__)
#define log_info(...)      log_emit(LOG_SERVICE, LOGL_INFO, __VA_ARGS__)
#define log_debug(...)     log_emit(LOG_SERVICE, LOGL_DEBUG, __VA_ARGS__)
#define log_fatal(st, ...) log_fatal_svc(LOG_SERVICE, st, __VA_ARGS__)

#endif
