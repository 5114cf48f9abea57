/*
 * defaults: /etc/default/etrnctl, the site's settings for etrnctl etrn and
 * etrnctl atrn (and the link-up hook and etrnctl@.service, which read the
 * same file). KEY=value lines parsed without a shell: a value is bare,
 * "double" or 'single' quoted; $ and ` are refused, nothing is expanded.
 * It knows no key: each command takes the ones it uses.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "etrnctl.h"

/* Parse one shell-style value: "double", 'single' or bare words (no
 * expansions: $ and ` are refused). Returns a malloc'ed string, or NULL
 * with why set. */
static char *shell_value(const char *s, const char **why)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    char quote = 0;

    if (out == NULL) {
        *why = "out of memory";
        return NULL;
    }
    for (; *s; s++) {
        if (quote == '\'') {
            if (*s == '\'')
                quote = 0;
            else
                *o++ = *s;
        } else if (*s == '\'' || *s == '"') {
            if (quote == *s)
                quote = 0;
            else if (quote == 0)
                quote = *s;
            else
                *o++ = *s;
        } else if (*s == '$' || *s == '`') {
            *why = "variable or command expansion is not supported";
            goto bad;
        } else if (*s == '\\') {
            if (s[1] == '\0') {
                *why = "backslash at end of line";
                goto bad;
            }
            *o++ = *++s;
        } else if (quote == 0 && *s == '#' && (o == out || s[-1] == ' ' || s[-1] == '\t')) {
            break; /* a comment after the value */
        } else if (quote == 0 && (*s == ' ' || *s == '\t')) {
            /* end of the value: only blanks or a comment may follow */
            const char *t = s;
            while (*t == ' ' || *t == '\t')
                t++;
            if (*t != '\0' && *t != '#') {
                *why = "unquoted space in a value";
                goto bad;
            }
            break;
        } else {
            *o++ = *s;
        }
    }
    if (quote != 0) {
        *why = "unterminated quote";
        goto bad;
    }
    *o = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

int etrnctl_defaults_read(void (*take)(void *arg, const char *name, char *value), void *arg)
{
    const char *path = getenv("ETRNCTL_DEFAULTS");
    int explicit = path != NULL && *path != '\0';
    char line[4096];
    FILE *fp;
    int lineno = 0, st = 0;

    if (!explicit)
        path = ETRNCTL_DEFAULTS_FILE;
    fp = fopen(path, "re");
    if (fp == NULL) {
        if (errno == ENOENT && !explicit)
            return 0;
        etrnctl_warn("%s: %s", path, strerror(errno));
        return EX_CONFIG;
    }
    while (fgets(line, sizeof(line), fp) != NULL) {
        char *s = line, *eq, *val;
        const char *why = NULL;
        size_t n = strlen(line);

        lineno++;
        if (n > 0 && line[n - 1] != '\n' && !feof(fp)) {
            etrnctl_warn("%s:%d: line too long", path, lineno);
            st = EX_CONFIG;
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            line[--n] = '\0';
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        if (strncmp(s, "export ", 7) == 0)
            s += 7;
        eq = strchr(s, '=');
        if (eq == NULL || eq == s) {
            etrnctl_warn("%s:%d: not a NAME=value assignment", path, lineno);
            st = EX_CONFIG;
            break;
        }
        for (char *c = s; c < eq; c++) {
            if (!(isalnum((unsigned char)*c) || *c == '_') || isdigit((unsigned char)*s)) {
                etrnctl_warn("%s:%d: not a NAME=value assignment", path, lineno);
                st = EX_CONFIG;
                goto done;
            }
        }
        *eq = '\0';
        val = shell_value(eq + 1, &why);
        if (val == NULL) {
            etrnctl_warn("%s:%d: %s", path, lineno, why);
            st = EX_CONFIG;
            break;
        }
        take(arg, s, val);
    }
    if (st == 0 && ferror(fp)) {
        etrnctl_warn("%s: %s", path, strerror(errno));
        st = EX_CONFIG;
    }
done:
    fclose(fp);
    return st;
}
