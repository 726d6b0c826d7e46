/*
 * tap: the smallest Test Anything Protocol helper, for the unit tests.
 * ok() prints one "ok N"/"not ok N" line; done_testing() prints the plan.
 */
#ifndef TASKWORKERD_TAP_H
#define TASKWORKERD_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_run;
static int tap_failed;
static int tap_planned = -1;

static void tap_diag(const char *, ...) __attribute__((format(printf, 1, 2)));
static int tap_ok(int, const char *, int, const char *, ...)
    __attribute__((format(printf, 4, 5)));

/* Announce N tests up front; or call done_testing() at the end instead. */
static void __attribute__((unused))
plan(int n)
{
	tap_planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

/* A "# ..." comment line, shown by meson on failure. */
static void __attribute__((unused))
tap_diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static int __attribute__((unused))
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	tap_run++;
	printf("%sok %d - ", pass ? "" : "not ", tap_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	if (!pass) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
	return pass;
}

#define ok(cond, ...)	tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define diag(...)	tap_diag(__VA_ARGS__)

/* Prints the plan if none was given; returns main's exit status. */
static int __attribute__((unused))
done_testing(void)
{
	if (tap_planned < 0)
		printf("1..%d\n", tap_run);
	else if (tap_planned != tap_run) {
		printf("# planned %d tests but ran %d\n", tap_planned,
		    tap_run);
		tap_failed++;
	}
	if (tap_failed > 0)
		printf("# %d of %d tests failed\n", tap_failed, tap_run);
	fflush(stdout);
	return tap_failed > 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
