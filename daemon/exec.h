/*
 * exec: runs the handler program of a task in its own process group,
 * posix_spawn'ed, its output logged line by line, bounded in time.
 */
#ifndef TASKWORKERD_EXEC_H
#define TASKWORKERD_EXEC_H

#include <stddef.h>
#include <stdint.h>
#include <ev.h>

#include "runtask.h"

struct exec_conf;	/* settings of one config generation, refcounted */
struct exec_pool;	/* every child of the daemon, and the max_processes bound */
struct exec_run;

enum exec_result {
	EXEC_DONE,	/* exit status 0 */
	EXEC_FAILED,	/* REASON says why */
	EXEC_STOPPED,	/* exec_stop ended it (or it never started) */
};

/* Runs once per run, never from inside exec_start/exec_stop. REASON lives during the call. */
typedef void exec_done_fn(void *arg, enum exec_result res, const char *reason);

/*
 * COMMAND (NULL-terminated, [0] an absolute path), ENVIRONMENT ("KEY=value",
 * NULL-terminated, may be NULL), WORKDIR ("" or NULL: inherit), TIMEOUT_MS (0: none),
 * KILL_GRACE_MS. Everything is copied. NULL when out of memory.
 */
struct exec_conf *exec_conf_new(char *const *command, char *const *environment,
    const char *workdir, int timeout_ms, int kill_grace_ms);
void exec_conf_ref(struct exec_conf *c);
void exec_conf_unref(struct exec_conf *c);

struct exec_pool *exec_pool_new(struct ev_loop *loop, int max_processes);
void exec_pool_set_max(struct exec_pool *p, int max_processes);
/* SIGKILLs every process group still running and frees everything; no callback runs. */
void exec_pool_free(struct exec_pool *p);
int exec_pool_running(const struct exec_pool *p);	/* children alive */
int exec_pool_waiting(const struct exec_pool *p);	/* runs waiting for a slot */

/* Starts (or queues, past max_processes) a run; holds a ref on CONF until it ends. NULL: out of memory. */
struct exec_run *exec_start(struct exec_pool *p, struct exec_conf *conf,
    const struct run_task *t, exec_done_fn *fn, void *arg);
/*
 * Asks a run to end: a waiting run ends at once (FN with EXEC_STOPPED on the next
 * loop turn); a running child's group gets SIGTERM, then SIGKILL after kill_grace_ms;
 * FN runs once the child is reaped (EXEC_STOPPED, or its own result if it ended first).
 */
void exec_stop(struct exec_run *r);
/* Forgets a run: FN never runs; a child's group is SIGKILLed and reaped in the background. */
void exec_cancel(struct exec_run *r);

/* "Name" -> "TASK_NAME": upper-cased, every byte not [A-Z0-9] becomes '_'. BUF of SIZE. Returns BUF. (exported for the unit test) */
char *exec_env_name(const char *column, char *buf, size_t size);

#endif
