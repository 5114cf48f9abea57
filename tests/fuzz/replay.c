/*
 * replay: runs a libFuzzer target's LLVMFuzzerTestOneInput over saved inputs
 * without libFuzzer, so `make check` replays the corpus under whatever
 * sanitizers the build has. Each argument is a file or a directory of files
 * (not recursive). Progress goes to stderr; exit 1 only if an input cannot be read.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Larger inputs are not corpus material; refuse rather than allocate wildly. */
#define REPLAY_MAX_FILE (16u * 1024 * 1024)

/*
 * Read one file into an exactly sized heap buffer (so ASan catches a target
 * reading one byte past the input) and run the target on it. 0 or -1.
 */
static int replay_file(const char *path)
{
    FILE *f = NULL;
    struct stat st;
    uint8_t *data = NULL;
    size_t size;
    int rc = -1;

    f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > REPLAY_MAX_FILE) {
        fprintf(stderr, "replay: %s: too large\n", path);
        goto done;
    }
    size = (size_t)st.st_size;
    data = malloc(size > 0 ? size : 1);
    if (data == NULL) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        goto done;
    }
    if (size > 0 && fread(data, 1, size, f) != size) {
        fprintf(stderr, "replay: %s: short read\n", path);
        goto done;
    }
    LLVMFuzzerTestOneInput(data, size);
    rc = 0;
done:
    free(data);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Every regular file directly in dir, in name order. Adds to *count; 0 or -1. */
static int replay_dir(const char *dir, unsigned long *count)
{
    struct dirent **names = NULL;
    char path[4096];
    struct stat st;
    int n, i, rc = 0;

    n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (names[i]->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) >= sizeof(path)) {
            fprintf(stderr, "replay: %s/%s: path too long\n", dir, names[i]->d_name);
            rc = -1;
            continue;
        }
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (replay_file(path) < 0)
            rc = -1;
        else
            (*count)++;
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned long count = 0;
    struct stat st;
    int i, rc = 0;

    for (i = 1; i < argc; i++) {
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            rc = 1;
        } else if (S_ISDIR(st.st_mode)) {
            if (replay_dir(argv[i], &count) < 0)
                rc = 1;
        } else if (replay_file(argv[i]) < 0) {
            rc = 1;
        } else {
            count++;
        }
        fprintf(stderr, "replay: %s done (%lu inputs so far)\n", argv[i], count);
    }
    fprintf(stderr, "replay: %lu inputs replayed\n", count);
    return rc;
}
