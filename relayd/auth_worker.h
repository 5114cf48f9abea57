/*
 * auth_worker: the thread SMTP AUTH runs on, so a crypt(3) check (a
 * bcrypt's 100 ms, a yescrypt's 30 MB) or a SCRAM key derivation never
 * runs on the loop and never queues on libuv's shared threadpool, where
 * the spool's writes wait. One thread, a bounded FIFO of jobs, results
 * handed back to the loop thread through one uv_async. Also the crypt(3)
 * check itself. Private to auth.c.
 */
#ifndef RELAYD_AUTH_WORKER_H
#define RELAYD_AUTH_WORKER_H

#include <uv.h>

struct auth_worker;

/* Jobs waiting or running at once; a step beyond this is refused (454). */
#define AUTH_WORKER_MAX_JOBS 1024

struct auth_job {
    struct auth_job *next;            /* the worker's lists */
    void (*run)(struct auth_job *j);  /* on the worker thread; NULL: nothing to run */
    void (*done)(struct auth_job *j); /* then on the loop thread, exactly once */
};

/* Start the thread. 0, or a negative libuv code (nothing started). */
int auth_worker_open(uv_loop_t *loop, struct auth_worker **out);
/* Queue j: run() on the thread, then done() on the loop. A job without run
 * only takes the trip back to the loop (a reply decided at once is still
 * given from the loop, never from inside the caller). 0, or -1 when the
 * queue is full or the worker is stopping (j untouched, done never called). */
int auth_worker_submit(struct auth_worker *w, struct auth_job *j);
/* The job's owner has gone: if j has not started, it will not run (its
 * done() still comes, on the loop). A running or finished job is left be. */
void auth_worker_cancel(struct auth_worker *w, struct auth_job *j);
/* Stop: the job running finishes, jobs not yet run are not run; done() is
 * called for every job still held, then the handle is freed once the loop
 * has closed it. */
void auth_worker_close(struct auth_worker *w);

/* Is password the one hash was made from (crypt(3), libxcrypt)? 1 yes,
 * 0 no, -1 the hash is not one libxcrypt knows. Slow by design: call it on
 * the worker thread only. */
int auth_worker_crypt_check(const char *password, const char *hash);
/* The same cost for an unknown account, so the time taken does not tell
 * whether an account exists. */
void auth_worker_crypt_dummy(const char *password);

#endif
