/*
 * cfgtest: what the config unit tests share: temporary config files, the
 * error lines of a load, and checks on them. Header-only, as tap.h is.
 */
#ifndef TASKWORKERD_CFGTEST_H
#define TASKWORKERD_CFGTEST_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

#define MAX_TEMPS	1024

/* The error lines of one load. */
struct errs {
	char **line;
	int n;
};

static char *temps[MAX_TEMPS];
static int ntemps;

static void __attribute__((unused))
collect(void *arg, const char *line)
{
	struct errs *e = arg;

	e->line = realloc(e->line, sizeof(*e->line) * (size_t)(e->n + 1));
	if (e->line == NULL || (e->line[e->n] = strdup(line)) == NULL)
		abort();
	e->n++;
}

static void __attribute__((unused))
errs_clear(struct errs *e)
{
	int i;

	for (i = 0; i < e->n; i++)
		free(e->line[i]);
	free(e->line);
	e->line = NULL;
	e->n = 0;
}

static void __attribute__((unused))
errs_show(const struct errs *e)
{
	int i;

	for (i = 0; i < e->n; i++)
		diag("  error: %s", e->line[i]);
}

/* Writes LEN bytes to a new file under /tmp; returns its path. */
static const char * __attribute__((unused))
write_temp(const char *prefix, const char *text, size_t len)
{
	char *path;
	FILE *fp;
	int fd;

	if (asprintf(&path, "/tmp/%s-XXXXXX", prefix) == -1)
		abort();
	if ((fd = mkstemp(path)) == -1 || (fp = fdopen(fd, "w")) == NULL) {
		perror("mkstemp");
		abort();
	}
	if (fwrite(text, 1, len, fp) != len || fclose(fp) != 0) {
		perror("write");
		abort();
	}
	if (ntemps == MAX_TEMPS)
		abort();
	temps[ntemps++] = path;
	return path;
}

static const char * __attribute__((unused))
write_conf(const char *text)
{
	return write_temp("tw-test-config", text, strlen(text));
}

static void __attribute__((unused))
remove_temps(void)
{
	int i;

	for (i = 0; i < ntemps; i++) {
		unlink(temps[i]);
		free(temps[i]);
	}
	ntemps = 0;
}

/* Is there an error "PATH:LINE: ..." ("PATH: ..." for LINE 0) with NEEDLE? */
static int __attribute__((unused))
has_error(const struct errs *e, const char *path, int line,
    const char *needle)
{
	char prefix[PATH_MAX + 32];
	int i;

	if (line > 0)
		snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", path);
	for (i = 0; i < e->n; i++)
		if (strncmp(e->line[i], prefix, strlen(prefix)) == 0 &&
		    strstr(e->line[i] + strlen(prefix), needle) != NULL)
			return 1;
	return 0;
}

/*
 * Loads TEXT and expects exactly one error, on LINE, that contains every
 * one of the (up to two) needles.
 */
static void __attribute__((unused))
expect_error(const char *what, const char *text, int line, const char *n1,
    const char *n2)
{
	struct errs e = { NULL, 0 };
	struct config *cfg;
	const char *path = write_conf(text);
	int pass;

	cfg = config_load(path, collect, &e);
	pass = cfg == NULL && e.n == 1 && has_error(&e, path, line, n1) &&
	    (n2 == NULL || has_error(&e, path, line, n2));
	if (!ok(pass, "%s: one error at line %d naming '%s'", what, line, n1))
		errs_show(&e);
	config_free(cfg);
	errs_clear(&e);
}

static struct config * __attribute__((unused))
load_ok(const char *what, const char *path)
{
	struct errs e = { NULL, 0 };
	struct config *cfg;

	cfg = config_load(path, collect, &e);
	if (!ok(cfg != NULL && e.n == 0, "%s loads without errors", what))
		errs_show(&e);
	errs_clear(&e);
	return cfg;
}

static int __attribute__((unused))
streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

#endif
