/*
 * defaults: reading /etc/default/etrnctl (or $ETRNCTL_DEFAULTS) without a
 * shell, for the commands of the site side. See defaults.c.
 */
#ifndef RELAYD_DEFAULTS_H
#define RELAYD_DEFAULTS_H

#define ETRNCTL_DEFAULTS_FILE "/etc/default/etrnctl"

/* Call take(arg, NAME, value) for each NAME=value line, in file order; value
 * is malloc'd and becomes take's. A missing file at the default path is
 * fine; a missing $ETRNCTL_DEFAULTS, an unreadable or malformed file is
 * EX_CONFIG (said on stderr). Lines of other programs are passed on too:
 * take ignores (and frees) what it does not use. 0 or EX_CONFIG. */
int etrnctl_defaults_read(void (*take)(void *arg, const char *name, char *value), void *arg);

#endif
