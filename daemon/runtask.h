/*
 * runtask: what a handler's run (a program, a request) is given of its
 * task; each run copies what it keeps.
 */
#ifndef TASKWORKERD_RUNTASK_H
#define TASKWORKERD_RUNTASK_H

#include <stdint.h>

struct run_task {
	int64_t id;
	const char *queue;
	int attempt;			/* 1-based */
	int ncols;
	const char *const *names;	/* column names, as the row was loaded */
	const char *const *values;	/* NULL: SQL NULL */
};

#endif
