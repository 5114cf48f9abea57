/*
 * auth_worker: one thread of its own for SMTP AUTH, fed by a bounded FIFO
 * and reporting back to the loop through a uv_async (libuv's threadpool
 * is shared with the spool's writes: a hundred bcrypt checks there would
 * delay other clients' 250s). Also the crypt(3) check (libxcrypt). Knows
 * nothing of SASL or sessions: a job is two function pointers.
 */
#include "auth_worker.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

struct auth_worker {
    uv_loop_t *loop;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;
    uv_async_t async;
    struct auth_job *todo, *todo_tail; /* waiting for the thread (FIFO) */
    struct auth_job *done, *done_tail; /* waiting for the loop (FIFO) */
    unsigned njobs;                    /* in todo, running, or in done */
    int stop;
    int thread_started;
};

static void push(struct auth_job **head, struct auth_job **tail, struct auth_job *j)
{
    j->next = NULL;
    if (*tail != NULL)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static struct auth_job *pop(struct auth_job **head, struct auth_job **tail)
{
    struct auth_job *j = *head;

    if (j != NULL) {
        *head = j->next;
        if (*head == NULL)
            *tail = NULL;
        j->next = NULL;
    }
    return j;
}

static void worker_main(void *arg)
{
    struct auth_worker *w = arg;

    uv_mutex_lock(&w->mu);
    for (;;) {
        struct auth_job *j;
        while (w->todo == NULL && !w->stop)
            uv_cond_wait(&w->cond, &w->mu);
        if (w->stop)
            break;
        j = pop(&w->todo, &w->todo_tail);
        uv_mutex_unlock(&w->mu);
        if (j->run != NULL)
            j->run(j);
        uv_mutex_lock(&w->mu);
        push(&w->done, &w->done_tail, j);
        uv_async_send(&w->async);
    }
    uv_mutex_unlock(&w->mu);
}

/* Loop thread: hand finished jobs to their owners, in order. */
static void on_async(uv_async_t *h)
{
    struct auth_worker *w = h->data;
    struct auth_job *list, *j;

    uv_mutex_lock(&w->mu);
    list = w->done;
    w->done = w->done_tail = NULL;
    uv_mutex_unlock(&w->mu);
    while ((j = list) != NULL) {
        list = j->next;
        uv_mutex_lock(&w->mu);
        w->njobs--;
        uv_mutex_unlock(&w->mu);
        j->done(j); /* may submit the session's next job */
    }
}

int auth_worker_open(uv_loop_t *loop, struct auth_worker **out)
{
    struct auth_worker *w = calloc(1, sizeof(*w));
    int rc;

    *out = NULL;
    if (w == NULL)
        return UV_ENOMEM;
    w->loop = loop;
    if ((rc = uv_mutex_init(&w->mu)) != 0) {
        free(w);
        return rc;
    }
    if ((rc = uv_cond_init(&w->cond)) != 0) {
        uv_mutex_destroy(&w->mu);
        free(w);
        return rc;
    }
    if ((rc = uv_async_init(loop, &w->async, on_async)) != 0) {
        uv_cond_destroy(&w->cond);
        uv_mutex_destroy(&w->mu);
        free(w);
        return rc;
    }
    w->async.data = w;
    if ((rc = uv_thread_create(&w->thread, worker_main, w)) != 0) {
        /* the async handle is open: free through the close callback */
        w->stop = 1;
        auth_worker_close(w);
        return rc;
    }
    w->thread_started = 1;
    *out = w;
    return 0;
}

int auth_worker_submit(struct auth_worker *w, struct auth_job *j)
{
    int rc = -1;

    uv_mutex_lock(&w->mu);
    if (!w->stop && w->njobs < AUTH_WORKER_MAX_JOBS) {
        w->njobs++;
        if (j->run == NULL) {
            push(&w->done, &w->done_tail, j);
            uv_async_send(&w->async);
        } else {
            push(&w->todo, &w->todo_tail, j);
            uv_cond_signal(&w->cond);
        }
        rc = 0;
    }
    uv_mutex_unlock(&w->mu);
    return rc;
}

void auth_worker_cancel(struct auth_worker *w, struct auth_job *j)
{
    struct auth_job **pp, *prev = NULL;

    uv_mutex_lock(&w->mu);
    for (pp = &w->todo; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            if (w->todo_tail == j)
                w->todo_tail = prev;
            j->run = NULL;
            push(&w->done, &w->done_tail, j);
            uv_async_send(&w->async);
            break;
        }
    }
    uv_mutex_unlock(&w->mu);
}

static void on_closed(uv_handle_t *h)
{
    struct auth_worker *w = h->data;

    uv_cond_destroy(&w->cond);
    uv_mutex_destroy(&w->mu);
    free(w);
}

void auth_worker_close(struct auth_worker *w)
{
    struct auth_job *j;

    if (w == NULL)
        return;
    uv_mutex_lock(&w->mu);
    w->stop = 1;
    uv_cond_signal(&w->cond);
    uv_mutex_unlock(&w->mu);
    if (w->thread_started)
        uv_thread_join(&w->thread);
    w->thread_started = 0;
    /* the thread is gone: what it did not run, and what it finished but the
     * loop has not seen, goes back to the owners now */
    while ((j = pop(&w->done, &w->done_tail)) != NULL)
        j->done(j);
    while ((j = pop(&w->todo, &w->todo_tail)) != NULL)
        j->done(j);
    uv_close((uv_handle_t *)&w->async, on_closed);
}

int auth_worker_crypt_check(const char *password, const char *hash)
{
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    const char *out;
    size_t n;
    int rc = -1;

    if (cd == NULL)
        return -1;
    out = crypt_r(password, hash, cd);
    /* libxcrypt returns a string starting with '*' on failure */
    if (out != NULL && out[0] != '*') {
        n = strlen(hash);
        /* compare every byte whatever the first difference */
        if (strlen(out) == n) {
            unsigned char diff = 0;
            for (size_t i = 0; i < n; i++)
                diff |= (unsigned char)(out[i] ^ hash[i]);
            rc = diff == 0;
        } else {
            rc = 0;
        }
    }
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return rc;
}

void auth_worker_crypt_dummy(const char *password)
{
    /* a yescrypt setting at libxcrypt's default cost, like mkpasswd's */
    static const char setting[] = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$";

    (void)auth_worker_crypt_check(password, setting);
}
