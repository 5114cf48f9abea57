/*
 * ctl_change: the commands that change the queue: flush, and hold, release,
 * delete, bounce, requeue by ids (in batches), domain or all.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "ctl_cmd.h"

static void usage_flush(FILE *fp)
{
    fprintf(fp, "usage: etrnctl flush DOMAIN | --id QUEUEID | --all\n");
}

static int flush_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    int64_t n = ctl_jint(rec, "messages");

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
    } else if (!cx->o->quiet) {
        ctl_put_clean(stdout, ctl_jstr0(rec, "domain"));
        if (n == 0)
            printf(": nothing waiting\n");
        else
            printf(": flushing %" PRId64 " message%s\n", n, n == 1 ? "" : "s");
    }
    return 0;
}

int ctl_flush(struct ctx *cx, int argc, char **argv)
{
    enum { O_ID = ETRNCTL_OPT_FIRST_LOCAL, O_ALL };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"id", required_argument, NULL, O_ID},
                                             {"all", no_argument, NULL, O_ALL},
                                             {NULL, 0, NULL, 0}};
    struct ctl_client_req req;
    const char *id = NULL;
    int all = 0, c, st, rc;

    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, cx->o, usage_flush))
            continue;
        if (c == O_ID)
            id = optarg;
        else if (c == O_ALL)
            all = 1;
        else {
            usage_flush(stderr);
            return EX_USAGE;
        }
    }
    if ((optind < argc) + (id != NULL) + all != 1 || optind + 1 < argc)
        return ctl_usage_error(usage_flush, "%s", "flush takes one DOMAIN, --id QUEUEID or --all");
    if (id != NULL && !ctl_valid_id(id))
        return ctl_usage_error(usage_flush, "not a queue id: %s", id);
    rc = ctl_client_req_init(&req, "flush");
    if (rc == 0 && id != NULL)
        rc = ctl_client_req_add(&req, "id", id);
    else if (rc == 0 && all)
        rc = ctl_client_req_add(&req, "all", "1");
    else if (rc == 0)
        rc = ctl_client_req_add(&req, "domain", argv[optind]);
    if (rc != 0) {
        ctl_client_req_free(&req);
        etrnctl_warn("out of memory");
        return EX_SOFTWARE;
    }
    st = ctl_call(cx, &req, flush_cb);
    ctl_client_req_free(&req);
    if (st == 0 && cx->count == 0 && !cx->o->json && !cx->o->quiet)
        printf("nothing to flush\n");
    return st;
}

/* ---- hold, release, delete, bounce, requeue: ids in batches -----------------------------------
 */

/* hold, release and delete take every form, as postsuper -h/-H/-d do. */
static const struct idcmd idcmds[] = {
    {"hold", "held", 1, 1, 1},        {"release", "released", 1, 1, 1},
    {"delete", "deleted", 1, 1, 1},   {"bounce", "bounced", 0, 0, 1},
    {"requeue", "requeued", 0, 1, 0},
};

static int count_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    const struct idcmd *ic = cx->idcmd;
    int64_t n = ctl_jint(rec, ic->field);

    cx->count++;
    if (cx->o->json) {
        fputs(raw, stdout);
        fputc('\n', stdout);
    }
    if (n > 0)
        cx->sum += n;
    return 0;
}

static const struct idcmd *cur_idcmd;

static void usage_ids(FILE *fp)
{
    const struct idcmd *ic = cur_idcmd;

    if (ic == NULL || ic->allow_domain)
        fprintf(fp, "usage: etrnctl %s QUEUEID... | - | ALL | --domain DOMAIN | --held\n",
                ic ? ic->name : "hold|release|delete");
    if (ic == NULL || strcmp(ic->name, "bounce") == 0)
        fprintf(fp, "usage: etrnctl bounce QUEUEID... | -\n");
    if (ic == NULL || strcmp(ic->name, "requeue") == 0)
        fprintf(fp, "usage: etrnctl requeue [QUEUEID... | - | --all]\n");
}

/* Read queue ids from stdin, one per line (blank lines and # comments
 * skipped): what `etrnctl queue --ids-only` prints. Returns a NULL-terminated
 * malloc'ed array, or NULL on a bad line (explained). */
static char **read_ids(size_t *nout)
{
    char **ids = NULL;
    size_t n = 0, cap = 0;
    char line[256];

    while (fgets(line, sizeof(line), stdin) != NULL) {
        char *s = line, *e;
        if (strchr(line, '\n') == NULL && !feof(stdin)) {
            etrnctl_warn("stdin: line too long for a queue id");
            goto bad;
        }
        while (*s == ' ' || *s == '\t')
            s++;
        e = s + strcspn(s, " \t\r\n");
        *e = '\0';
        if (*s == '\0' || *s == '#')
            continue;
        if (!ctl_valid_id(s)) {
            etrnctl_warn("stdin: not a queue id: %s", s);
            goto bad;
        }
        if (n + 2 > cap) {
            char **p;
            cap = cap ? cap * 2 : 64;
            p = realloc(ids, cap * sizeof(*ids));
            if (p == NULL)
                goto bad;
            ids = p;
        }
        ids[n] = strdup(s);
        if (ids[n] == NULL)
            goto bad;
        n++;
        ids[n] = NULL;
    }
    if (ids == NULL)
        ids = calloc(1, sizeof(*ids));
    *nout = n;
    return ids;
bad:
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return NULL;
}

/* --held: the ids of the messages with a held recipient, from relayd's
 * listing (what `etrnctl queue --held --ids-only` prints). */
static int held_cb(void *arg, struct json_object *rec, const char *raw)
{
    struct ctx *cx = arg;
    (void)raw;
    if (cx->all == NULL && (cx->all = json_object_new_array()) == NULL)
        return -1;
    return json_object_array_add(cx->all, json_object_new_string(ctl_jstr0(rec, "queue_id")));
}

static char **held_ids(struct ctx *cx, size_t *nout, int *st)
{
    struct ctl_client_req req;
    char why[600] = "";
    char **ids = NULL;
    size_t n = 0;

    *st = ctl_client_req_init(&req, "queue") != 0 || ctl_client_req_add(&req, "held", "1") != 0
              ? EX_SOFTWARE
              : 0;
    if (*st == 0)
        *st = ctl_client_call(cx->o->socket, &req, CTL_TIMEOUT, cx->o->verbose, held_cb, cx, why,
                              sizeof(why));
    ctl_client_req_free(&req);
    if (*st != 0) {
        etrnctl_warn("%s", *why ? why : "out of memory");
        goto done;
    }
    n = cx->all ? json_object_array_length(cx->all) : 0;
    ids = calloc(n + 1, sizeof(*ids));
    for (size_t i = 0; ids != NULL && i < n; i++)
        if ((ids[i] = strdup(json_object_get_string(json_object_array_get_idx(cx->all, i)))) ==
            NULL)
            *st = EX_SOFTWARE;
    if (ids == NULL)
        *st = EX_SOFTWARE;
done:
    json_object_put(cx->all);
    cx->all = NULL;
    *nout = n;
    return ids;
}

static int run_ids(struct ctx *cx, const struct idcmd *ic, int argc, char **argv)
{
    enum { O_DOMAIN = ETRNCTL_OPT_FIRST_LOCAL, O_ALL, O_HELD };
    static const struct option longopts[] = {ETRNCTL_GLOBAL_LONGOPTS,
                                             {"domain", required_argument, NULL, O_DOMAIN},
                                             {"all", no_argument, NULL, O_ALL},
                                             {"held", no_argument, NULL, O_HELD},
                                             {NULL, 0, NULL, 0}};
    const char *domain = NULL;
    char **stdin_ids = NULL, **ids;
    size_t nids, nstdin = 0, i = 0;
    int all = 0, held = 0, c, st = 0, batches = 0, notfound = 0;
    char why[600] = "";

    cur_idcmd = ic;
    while ((c = getopt_long(argc, argv, ETRNCTL_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (etrnctl_global_opt(c, optarg, cx->o, usage_ids))
            continue;
        if (c == O_DOMAIN && ic->allow_domain) {
            domain = optarg;
        } else if (c == O_ALL && ic->allow_all) {
            all = 1;
        } else if (c == O_HELD && ic->allow_domain) {
            held = 1;
        } else {
            usage_ids(stderr);
            return EX_USAGE;
        }
    }
    ids = argv + optind;
    nids = (size_t)(argc - optind);
    /* Postfix's postsuper -d ALL */
    if (ic->allow_all && nids == 1 && strcmp(ids[0], "ALL") == 0) {
        all = 1;
        nids = 0;
    }
    if (held && (nids > 0 || domain != NULL || all))
        return ctl_usage_error(usage_ids, "%s: --held takes no other target", ic->name);
    if (held) {
        stdin_ids = held_ids(cx, &nstdin, &st);
        if (st != 0 || stdin_ids == NULL)
            goto done;
        ids = stdin_ids;
        nids = nstdin;
        if (nids == 0) {
            if (!cx->o->quiet && !cx->o->json)
                printf("no held messages: nothing %s\n", ic->field);
            goto done;
        }
    } else if (nids == 1 && strcmp(ids[0], "-") == 0) {
        stdin_ids = read_ids(&nstdin);
        if (stdin_ids == NULL)
            return EX_DATAERR;
        ids = stdin_ids;
        nids = nstdin;
        if (nids == 0) {
            if (!cx->o->quiet && !cx->o->json)
                printf("no queue ids on stdin: nothing %s\n", ic->field);
            goto done;
        }
    } else {
        for (size_t k = 0; k < nids; k++)
            if (!ctl_valid_id(ids[k]))
                return ctl_usage_error(usage_ids, "not a queue id: %s", ids[k]);
    }
    if ((nids > 0) + (domain != NULL) + all > 1 ||
        (ic->need_target && nids == 0 && !domain && !all))
        return ctl_usage_error(
            usage_ids, "%s: give queue ids, - (ids on stdin), or one of the other forms", ic->name);
    cx->idcmd = ic;
    /* One request per batch of ids, so no line passes the 64 KiB limit. A
     * batch none of whose ids exists any more (delivered meanwhile) is not
     * an error while another batch found some. */
    do {
        struct ctl_client_req req;
        int rc = ctl_client_req_init(&req, ic->name);

        if (rc == 0 && domain != NULL)
            rc = ctl_client_req_add(&req, "domain", domain);
        else if (rc == 0 && all)
            rc = ctl_client_req_add(&req, "all", "1");
        for (; rc == 0 && i < nids && req.len < IDS_PER_REQUEST_BYTES; i++)
            rc = ctl_client_req_add(&req, "id", ids[i]);
        if (rc != 0) {
            ctl_client_req_free(&req);
            etrnctl_warn("out of memory");
            st = EX_SOFTWARE;
            break;
        }
        why[0] = '\0';
        st = ctl_client_call(cx->o->socket, &req, CTL_TIMEOUT, cx->o->verbose, count_cb, cx, why,
                             sizeof(why));
        ctl_client_req_free(&req);
        if (st == EX_NOINPUT && nids > 0) {
            notfound++;
            st = 0;
        } else if (st != 0) {
            etrnctl_warn("%s", why);
        }
        batches++;
    } while (st == 0 && i < nids);
    fflush(stdout);
    if (st == 0 && notfound == batches) {
        etrnctl_warn("%s", why); /* not one of the ids exists */
        st = EX_NOINPUT;
    }
    if (st == 0 && !cx->o->json && !cx->o->quiet)
        printf("%s: %" PRId64 "\n", ic->field, cx->sum);
    else if (st != 0 && batches > 1)
        etrnctl_warn("%s stopped after %zu of %zu ids", ic->name, i, nids);
done:
    if (stdin_ids != NULL) {
        for (size_t k = 0; k < nstdin; k++)
            free(stdin_ids[k]);
        free(stdin_ids);
    }
    return st;
}

/* ---- stats ---------------------------------------------------------------------------------- */

int ctl_ids_command(struct ctx *cx, const char *name, int argc, char **argv)
{
    for (size_t i = 0; i < sizeof(idcmds) / sizeof(idcmds[0]); i++)
        if (strcmp(name, idcmds[i].name) == 0)
            return run_ids(cx, &idcmds[i], argc, argv);
    return -1;
}
