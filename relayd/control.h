/*
 * control: the operators' unix socket (etrnctl queue/flush/hold/...). One
 * request line per connection, JSON records back; who may do what comes
 * from the peer's credentials. The protocol is described at the top of
 * control.c and in etrnctl(8). Queue work goes through store.c, flushes
 * through sched.c: nothing here touches SQLite or SMTP.
 */
#ifndef RELAYD_CONTROL_H
#define RELAYD_CONTROL_H

#include <stddef.h>

struct server;
struct control;

/* Create and listen on srv->cfg->control_socket (as root, before dropping
 * privileges: the socket is chowned to the relayd user). 0 or -1 with err. */
int control_open(struct server *srv, struct control **out, char *err, size_t errlen);
/* Stop listening, end open control connections; memory freed once the loop
 * has closed the handles. */
void control_close(struct control *c);

#endif
