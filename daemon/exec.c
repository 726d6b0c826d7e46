/*
 * exec: the handler program of a task, posix_spawn'ed in its own process
 * group with the task in its environment, its output logged line by line,
 * reaped by an ev_child, bounded by a timeout and by max_processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "exec.h"
#include "log.h"

#define EXEC_LINE	4096		/* longest line logged whole */
#define EXEC_CHUNK	1024		/* bytes per read(2) */
#define EXEC_READ	65536		/* most bytes read per callback... */
#define EXEC_LINES	256		/* ...or, give or take a chunk, lines logged */
#define EXEC_DRAIN	(1024 * 1024)	/* most bytes read once the child ended */
#define EXEC_VAR_MAX	131072		/* MAX_ARG_STRLEN, NUL included */
#define EXEC_WHY	512

extern char **environ;

struct exec_conf {
	int refs;
	char **command;		/* NULL-terminated */
	int ncommand;
	char **env;		/* environ and ENVIRONMENT, no TASK_* */
	int nenv;
	char **taskenv;		/* ENVIRONMENT's TASK_*: a task's own value wins */
	int ntaskenv;
	char *workdir;		/* NULL: inherit */
	int timeout_ms;
	int kill_grace_ms;
};

enum rstate {
	R_WAITING,	/* in the pool's FIFO */
	R_ENDING,	/* never ran or stopped waiting; the timer delivers */
	R_RUNNING,	/* child alive, FN due */
	R_CANCELLED,	/* child alive, FN forgotten; reaped and freed */
	R_DRAINING,	/* child reaped, its pipes not yet empty */
	R_DONE,		/* FN running; freed when it returns */
};

struct runlist {
	struct exec_run *head, *tail;
	int n;
};

/* One pipe from the child: a line being assembled and what is left of it. */
struct stream {
	ev_io io;
	struct exec_run *r;
	int fd;			/* -1: closed */
	int discard;		/* a cut line: drop bytes up to its newline */
	size_t len;
	size_t drained;		/* bytes read since the child ended */
	char *line;		/* EXEC_LINE bytes */
};

struct exec_run {
	struct exec_run *prev, *next;
	struct runlist *list;	/* the pool's list this run is on */
	struct exec_pool *pool;
	struct exec_conf *conf;
	enum rstate state;
	exec_done_fn *fn;
	void *arg;
	int64_t id;
	char **argv;		/* until the spawn */
	char **envp;
	char *vars;		/* the task's own "TASK_...=" strings */
	pid_t pid;
	ev_child child;
	ev_timer timer;		/* timeout, grace, deferred result, drain step */
	struct stream out, err;
	char *lines;		/* both streams' line buffers */
	int status;		/* the child's wait status, once reaped */
	int stopping;		/* exec_stop asked for it */
	int term_sent;
	int timed_out;
	enum exec_result res;	/* R_ENDING's result */
	char idstr[24];
	char why[EXEC_WHY];
};

struct exec_pool {
	struct ev_loop *loop;
	int max;
	int running;		/* children alive, cancelled ones too */
	struct runlist waiting;	/* FIFO of runs past max */
	struct runlist live;	/* R_RUNNING and R_CANCELLED */
	struct runlist ending;	/* R_ENDING */
	struct runlist draining;	/* R_DRAINING */
	ev_timer fill;		/* starts waiting runs on the next turn */
	posix_spawnattr_t attr;
	unsigned long lines;	/* lines logged, to bound a callback's work */
	char rbuf[EXEC_CHUNK];
	char esc[EXEC_LINE * 4 + 1];
};

static void child_cb(struct ev_loop *, ev_child *, int);
static void fill_cb(struct ev_loop *, ev_timer *, int);
static void timer_cb(struct ev_loop *, ev_timer *, int);
static void io_cb(struct ev_loop *, ev_io *, int);

/* ---- lists ---- */

static void
list_push(struct runlist *l, struct exec_run *r)
{
	r->list = l;
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
	l->n++;
}

static void
list_remove(struct exec_run *r)
{
	struct runlist *l = r->list;

	if (l == NULL)
		return;
	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	l->n--;
	r->prev = r->next = NULL;
	r->list = NULL;
}

/* ---- configuration ---- */

static size_t
name_len(const char *s)
{
	const char *eq = strchr(s, '=');

	return eq ? (size_t)(eq - s) : strlen(s);
}

static int
same_name(const char *a, const char *b)
{
	size_t la = name_len(a);

	return la == name_len(b) && memcmp(a, b, la) == 0;
}

static int
is_task_var(const char *s)
{
	return strncmp(s, "TASK_", 5) == 0;
}

/*
 * What systemd and credentials.c gave the daemon itself, not its
 * handlers: the notify socket (a handler could report READY or STOPPING
 * for it), the watchdog, socket activation, and the daemon's own pgpass
 * file. Left out of what a handler inherits; an entry of the configured
 * environment that names one is the operator's choice and is kept.
 */
static int
is_daemon_var(const char *s)
{
	static const char *const names[] = { "NOTIFY_SOCKET", "WATCHDOG_USEC",
	    "WATCHDOG_PID", "PGPASSFILE" };
	size_t len = name_len(s);

	if (strncmp(s, "LISTEN_", 7) == 0)
		return 1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (len == strlen(names[i]) && memcmp(s, names[i], len) == 0)
			return 1;
	return 0;
}

static void
strv_free(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

static int
strv_len(char *const *v)
{
	int n = 0;

	while (v != NULL && v[n] != NULL)
		n++;
	return n;
}

struct exec_conf *
exec_conf_new(char *const *command, char *const *environment,
    const char *workdir, int timeout_ms, int kill_grace_ms)
{
	struct exec_conf *c;
	int i, j, ne = strv_len(environ), nc = strv_len(environment);

	if (command == NULL || command[0] == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->refs = 1;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	c->kill_grace_ms = kill_grace_ms > 0 ? kill_grace_ms : 0;
	c->ncommand = strv_len(command);
	c->command = calloc(c->ncommand + 1, sizeof(char *));
	c->env = calloc(ne + nc + 1, sizeof(char *));
	c->taskenv = calloc(nc + 1, sizeof(char *));
	if (c->command == NULL || c->env == NULL || c->taskenv == NULL)
		goto fail;
	for (i = 0; i < c->ncommand; i++)
		if ((c->command[i] = strdup(command[i])) == NULL)
			goto fail;
	if (workdir != NULL && workdir[0] != '\0' &&
	    (c->workdir = strdup(workdir)) == NULL)
		goto fail;

	/* The daemon's own, less TASK_*, its own and what ENVIRONMENT sets. */
	for (i = 0; i < ne; i++) {
		if (is_task_var(environ[i]) || is_daemon_var(environ[i]))
			continue;
		for (j = 0; j < nc; j++)
			if (same_name(environ[i], environment[j]))
				break;
		if (j < nc)
			continue;
		if ((c->env[c->nenv] = strdup(environ[i])) == NULL)
			goto fail;
		c->nenv++;
	}
	/* Then ENVIRONMENT, the last of a name winning. */
	for (i = 0; i < nc; i++) {
		for (j = i + 1; j < nc; j++)
			if (same_name(environment[i], environment[j]))
				break;
		if (j < nc)
			continue;
		if (is_task_var(environment[i])) {
			if ((c->taskenv[c->ntaskenv] = strdup(environment[i])) ==
			    NULL)
				goto fail;
			c->ntaskenv++;
		} else {
			if ((c->env[c->nenv] = strdup(environment[i])) == NULL)
				goto fail;
			c->nenv++;
		}
	}
	return c;
fail:
	exec_conf_unref(c);
	return NULL;
}

void
exec_conf_ref(struct exec_conf *c)
{
	if (c != NULL)
		c->refs++;
}

void
exec_conf_unref(struct exec_conf *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	strv_free(c->command);
	strv_free(c->env);
	strv_free(c->taskenv);
	free(c->workdir);
	free(c);
}

char *
exec_env_name(const char *column, char *buf, size_t size)
{
	static const char prefix[] = "TASK_";
	size_t o = 0;

	if (size == 0)
		return buf;
	for (const char *p = prefix; *p != '\0' && o + 1 < size; p++)
		buf[o++] = *p;
	for (const unsigned char *p = (const unsigned char *)column;
	    *p != '\0' && o + 1 < size; p++) {
		unsigned char ch = *p;

		if (ch >= 'a' && ch <= 'z')
			ch -= 'a' - 'A';
		else if (!(ch >= 'A' && ch <= 'Z') && !(ch >= '0' && ch <= '9'))
			ch = '_';
		buf[o++] = ch;
	}
	buf[o] = '\0';
	return buf;
}

/* ---- output ---- */

/* One line to the log, control bytes shown as \xHH. */
static void
emit(struct exec_run *r, const char *line, size_t len, int cut)
{
	static const char hex[] = "0123456789abcdef";
	char *esc = r->pool->esc;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = line[i];

		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			esc[o++] = '\\';
			esc[o++] = 'x';
			esc[o++] = hex[ch >> 4];
			esc[o++] = hex[ch & 0xf];
		} else
			esc[o++] = ch;
	}
	esc[o] = '\0';
	r->pool->lines++;
	log_info("task %lld: %s%s", (long long)r->id, esc, cut ? " [cut]" : "");
}

/* Bytes from the pipe: whole lines logged, a long one cut, the rest kept. */
static void
feed(struct stream *s, const char *p, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t seg = nl ? (size_t)(nl - p) : n;
		size_t room = EXEC_LINE - s->len;

		if (s->discard) {
			if (nl == NULL)
				return;
			s->discard = 0;
		} else if (seg <= room) {
			memcpy(s->line + s->len, p, seg);
			s->len += seg;
			if (nl == NULL)
				return;
			emit(s->r, s->line, s->len, 0);
			s->len = 0;
		} else {
			memcpy(s->line + s->len, p, room);
			emit(s->r, s->line, EXEC_LINE, 1);
			s->len = 0;
			s->discard = 1;
			p += room;
			n -= room;
			continue;
		}
		p += seg + 1;
		n -= seg + 1;
	}
}

static void
stream_close(struct stream *s, int flush)
{
	if (s->fd == -1)
		return;
	ev_io_stop(s->r->pool->loop, &s->io);
	close(s->fd);
	s->fd = -1;
	if (flush && !s->discard && s->len > 0)
		emit(s->r, s->line, s->len, 0);
	s->len = 0;
	s->discard = 0;
}

/*
 * Reads until the pipe is empty or closed, or a callback's share is done.
 * Once the child has ended an empty pipe counts as closed.
 */
static void
stream_pull(struct stream *s)
{
	struct exec_pool *p = s->r->pool;
	int draining = s->r->state == R_DRAINING;
	unsigned long lines = p->lines;
	size_t got = 0;
	ssize_t n;

	while (s->fd != -1 && got < EXEC_READ &&
	    p->lines - lines < EXEC_LINES) {
		if (draining && s->drained >= EXEC_DRAIN) {
			stream_close(s, 1);
			break;
		}
		n = read(s->fd, p->rbuf, sizeof(p->rbuf));
		if (n > 0) {
			feed(s, p->rbuf, n);
			got += n;
			if (draining)
				s->drained += n;
		} else if (n == 0)
			stream_close(s, 1);
		else if (errno == EINTR)
			continue;
		else {
			if (errno != EAGAIN) {
				log_warn("task %lld: reading its output",
				    (long long)s->r->id);
				stream_close(s, 1);
			} else if (draining)
				stream_close(s, 1);
			break;
		}
	}
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	stream_pull(w->data);
}

/* ---- runs ---- */

static void
run_free(struct exec_run *r)
{
	free(r->lines);
	free(r->argv);
	free(r->envp);
	free(r->vars);
	exec_conf_unref(r->conf);
	free(r);
}

/*
 * The child's group; the child itself if it left its group, unless libev
 * reaped it already (its pid may be someone else's by now).
 */
static void
signal_group(struct exec_run *r, int sig)
{
	int alive = ev_is_active(&r->child) && !ev_is_pending(&r->child);

	if (kill(-r->pid, sig) == 0)
		return;
	if (errno == ESRCH && alive && kill(r->pid, sig) == 0)
		return;
	if (errno != ESRCH)
		log_warn("task %lld: cannot send SIG%s to process group %ld",
		    (long long)r->id, sigabbrev_np(sig), (long)r->pid);
}

/* The timer fires MS from now, not from the loop's cached time. */
static void
arm(struct exec_run *r, int ms)
{
	struct ev_loop *loop = r->pool->loop;

	ev_timer_stop(loop, &r->timer);
	ev_now_update(loop);
	ev_timer_set(&r->timer, ms / 1000.0, 0.);
	ev_timer_start(loop, &r->timer);
}

/* SIGTERM now, SIGKILL after the grace period. */
static void
terminate(struct exec_run *r)
{
	struct ev_loop *loop = r->pool->loop;

	r->term_sent = 1;
	signal_group(r, SIGTERM);
	signal_group(r, SIGCONT);
	ev_timer_stop(loop, &r->timer);
	if (r->conf->kill_grace_ms == 0)
		signal_group(r, SIGKILL);
	else
		arm(r, r->conf->kill_grace_ms);
}

/* The result is known before any child: FN runs on the next loop turn. */
static void
defer(struct exec_run *r, enum exec_result res, const char *why)
{
	struct exec_pool *p = r->pool;

	free(r->argv);
	free(r->envp);
	free(r->vars);
	r->argv = r->envp = NULL;
	r->vars = NULL;
	list_remove(r);
	list_push(&p->ending, r);
	r->state = R_ENDING;
	r->res = res;
	if (why != r->why)
		snprintf(r->why, sizeof(r->why), "%s", why);
	ev_timer_stop(p->loop, &r->timer);
	ev_timer_set(&r->timer, 0., 0.);
	ev_timer_start(p->loop, &r->timer);
}

/* FN, then the run's memory; the pool may be gone once FN returns. */
static void
finish(struct exec_run *r, enum exec_result res, const char *why)
{
	r->state = R_DONE;
	r->fn(r->arg, res, why);
	run_free(r);
}

/*
 * The task's own variables after the configured environment: 0, -1 out of
 * memory, 1 with WHY set when a variable is too big for the kernel.
 */
static int
run_prepare(struct exec_run *r, const struct run_task *t)
{
	struct exec_conf *c = r->conf;
	const char *queue = t->queue ? t->queue : "";
	size_t size, len;
	char *o;
	int i, j, k, nvars = 3, first;

	size = sizeof("TASK_ID=") + 21 + sizeof("TASK_QUEUE=") + strlen(queue) +
	    sizeof("TASK_ATTEMPT=") + 12;
	for (i = 0; i < t->ncols; i++) {
		if (t->values[i] == NULL)
			continue;
		size += sizeof("TASK_=") + strlen(t->names[i]) +
		    strlen(t->values[i]);
		nvars++;
	}
	r->vars = malloc(size);
	r->envp = calloc(c->nenv + nvars + c->ntaskenv + 1, sizeof(char *));
	r->argv = calloc(c->ncommand + 2, sizeof(char *));
	if (r->vars == NULL || r->envp == NULL || r->argv == NULL)
		return -1;

	for (i = 0; i < c->ncommand; i++)
		r->argv[i] = c->command[i];
	r->argv[i] = r->idstr;
	for (i = 0; i < c->nenv; i++)
		r->envp[i] = c->env[i];

	first = k = c->nenv;
	o = r->vars;
	r->envp[k++] = o;
	o += sprintf(o, "TASK_ID=%lld", (long long)t->id) + 1;
	r->envp[k++] = o;
	o += sprintf(o, "TASK_QUEUE=%s", queue) + 1;
	r->envp[k++] = o;
	o += sprintf(o, "TASK_ATTEMPT=%d", t->attempt) + 1;
	for (i = 0; i < t->ncols; i++) {
		if (t->values[i] == NULL)
			continue;
		len = strlen(t->names[i]) + sizeof("TASK_");
		exec_env_name(t->names[i], o, len);
		o[len - 1] = '=';
		for (j = first; j < k; j++)
			if (same_name(r->envp[j], o))
				break;
		if (j < k) {
			log_debug("task %lld: column \"%s\" left out: %.*s is "
			    "set already", (long long)r->id, t->names[i],
			    (int)(len - 1), o);
			continue;
		}
		r->envp[k++] = o;
		o += len;
		len = strlen(t->values[i]) + 1;
		memcpy(o, t->values[i], len);
		o += len;
	}
	for (j = first; j < k; j++) {
		if ((len = strlen(r->envp[j]) + 1) > EXEC_VAR_MAX) {
			snprintf(r->why, sizeof(r->why), "%.*s is %zu bytes, "
			    "more than the environment takes (%d)",
			    (int)name_len(r->envp[j]), r->envp[j], len,
			    EXEC_VAR_MAX);
			return 1;
		}
	}
	for (i = 0; i < c->ntaskenv; i++) {
		for (j = first; j < k; j++)
			if (same_name(r->envp[j], c->taskenv[i]))
				break;
		if (j == k)
			r->envp[k++] = c->taskenv[i];
	}
	r->envp[k] = NULL;
	return 0;
}

/* A pipe for the child's output: nonblocking only on our end, fds >= 3. */
static int
make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) == -1)
		return -1;
	for (int i = 0; i < 2; i++) {
		if (fds[i] < 3) {
			int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);

			if (fd == -1) {
				close(fds[0]);
				close(fds[1]);
				return -1;
			}
			close(fds[i]);
			fds[i] = fd;
		}
	}
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) == -1) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	return 0;
}

static size_t
exec_size(char *const *v)
{
	size_t n = 0;

	for (; *v != NULL; v++)
		n += strlen(*v) + 1 + sizeof(char *);
	return n;
}

static void
stream_open(struct exec_run *r, struct stream *s, int fd, char *line)
{
	s->r = r;
	s->fd = fd;
	s->line = line;
	s->len = 0;
	s->discard = 0;
	ev_io_init(&s->io, io_cb, fd, EV_READ);
	s->io.data = s;
	ev_io_start(r->pool->loop, &s->io);
}

/* 0 with the child running, or -1 with WHY set. */
static int
run_spawn(struct exec_run *r)
{
	struct exec_pool *p = r->pool;
	struct exec_conf *c = r->conf;
	posix_spawn_file_actions_t fa;
	int out[2], err[2], e;
	const char *what = NULL;
	pid_t pid;

	/*
	 * posix_spawn reports these too, but not under valgrind, which turns
	 * its vfork into a fork: the same reason either way.
	 */
	if (faccessat(AT_FDCWD, c->command[0], X_OK, AT_EACCESS) == -1) {
		snprintf(r->why, sizeof(r->why), "cannot run %s: %s",
		    c->command[0], strerror(errno));
		return -1;
	}
	if (c->workdir != NULL &&
	    faccessat(AT_FDCWD, c->workdir, X_OK, AT_EACCESS) == -1) {
		snprintf(r->why, sizeof(r->why), "cannot run %s: working "
		    "directory %s: %s", c->command[0], c->workdir,
		    strerror(errno));
		return -1;
	}
	if ((r->lines = malloc(2 * EXEC_LINE)) == NULL) {
		snprintf(r->why, sizeof(r->why), "cannot run %s: out of memory",
		    c->command[0]);
		return -1;
	}
	if (make_pipe(out) == -1) {
		e = errno;
		goto pipefail;
	}
	if (make_pipe(err) == -1) {
		e = errno;
		close(out[0]);
		close(out[1]);
		goto pipefail;
	}
	if ((e = posix_spawn_file_actions_init(&fa)) == 0) {
		e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
		    O_RDONLY, 0);
		if (e == 0)
			e = posix_spawn_file_actions_adddup2(&fa, out[1], 1);
		if (e == 0)
			e = posix_spawn_file_actions_adddup2(&fa, err[1], 2);
		if (e == 0)
			e = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
		if (e == 0 && c->workdir != NULL)
			e = posix_spawn_file_actions_addchdir_np(&fa,
			    c->workdir);
		if (e == 0)
			e = posix_spawn(&pid, c->command[0], &fa, &p->attr,
			    r->argv, r->envp);
		else
			what = "spawn file actions";
		posix_spawn_file_actions_destroy(&fa);
	} else
		what = "spawn file actions";
	close(out[1]);
	close(err[1]);
	if (e != 0) {
		close(out[0]);
		close(err[0]);
		if (what != NULL)
			snprintf(r->why, sizeof(r->why), "cannot run %s: %s: %s",
			    c->command[0], what, strerror(e));
		else if (e == E2BIG)
			snprintf(r->why, sizeof(r->why), "cannot run %s: %s "
			    "(arguments and environment: %zu bytes)",
			    c->command[0], strerror(e),
			    exec_size(r->argv) + exec_size(r->envp));
		else
			snprintf(r->why, sizeof(r->why), "cannot run %s: %s",
			    c->command[0], strerror(e));
		return -1;
	}

	r->pid = pid;
	ev_child_init(&r->child, child_cb, pid, 0);
	r->child.data = r;
	ev_child_start(p->loop, &r->child);
	stream_open(r, &r->out, out[0], r->lines);
	stream_open(r, &r->err, err[0], r->lines + EXEC_LINE);
	if (c->timeout_ms > 0)
		arm(r, c->timeout_ms);
	free(r->argv);
	free(r->envp);
	free(r->vars);
	r->argv = r->envp = NULL;
	r->vars = NULL;
	log_debug("task %lld: %s runs as pid %ld", (long long)r->id,
	    c->command[0], (long)pid);
	return 0;

pipefail:
	snprintf(r->why, sizeof(r->why), "cannot run %s: pipe: %s",
	    c->command[0], strerror(e));
	return -1;
}

/* A run leaves the queue: a child, or a failure for the next loop turn. */
static void
run_launch(struct exec_run *r)
{
	struct exec_pool *p = r->pool;

	if (run_spawn(r) == -1) {
		defer(r, EXEC_FAILED, r->why);
		return;
	}
	list_remove(r);
	list_push(&p->live, r);
	r->state = R_RUNNING;
	p->running++;
}

/* Free slots go to the oldest waiting runs. */
static void
pool_fill(struct exec_pool *p)
{
	struct exec_run *r;

	while (p->running < p->max && (r = p->waiting.head) != NULL) {
		list_remove(r);
		run_launch(r);
	}
}

static enum exec_result
outcome(struct exec_run *r, int status, char *why, size_t len)
{
	const char *abbrev;

	if (r->timed_out) {
		snprintf(why, len, "timed out after %d ms", r->conf->timeout_ms);
		return EXEC_FAILED;
	}
	if (r->stopping) {
		snprintf(why, len, "stopped");
		return EXEC_STOPPED;
	}
	if (WIFEXITED(status)) {
		snprintf(why, len, "exit %d", WEXITSTATUS(status));
		return WEXITSTATUS(status) == 0 ? EXEC_DONE : EXEC_FAILED;
	}
	if (WIFSIGNALED(status)) {
		if ((abbrev = sigabbrev_np(WTERMSIG(status))) != NULL)
			snprintf(why, len, "killed by SIG%s", abbrev);
		else
			snprintf(why, len, "killed by signal %d",
			    WTERMSIG(status));
		return EXEC_FAILED;
	}
	snprintf(why, len, "ended with wait status %#x", status);
	return EXEC_FAILED;
}

/*
 * What the child left in its pipes, a callback's share at a time; once
 * both are empty or closed FN learns how it ended.
 */
static void
drain(struct exec_run *r)
{
	enum exec_result res;
	char why[EXEC_WHY];

	stream_pull(&r->out);
	stream_pull(&r->err);
	if (r->out.fd != -1 || r->err.fd != -1) {
		arm(r, 0);
		return;
	}
	list_remove(r);
	res = outcome(r, r->status, why, sizeof(why));
	log_debug("task %lld: pid %ld ended: %s", (long long)r->id,
	    (long)r->pid, why);
	finish(r, res, why);
}

static void
child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct exec_run *r = w->data;
	struct exec_pool *p = r->pool;

	(void)revents;
	ev_child_stop(loop, w);
	/* Whatever it left behind in its group dies with it. */
	signal_group(r, SIGKILL);
	list_remove(r);
	p->running--;
	/*
	 * The next child starts on the next loop turn: libev reaps one child
	 * per turn, and spawning from here would keep it reaping and spawning
	 * while the sockets wait.
	 */
	if (!ev_is_active(&p->fill))
		ev_timer_start(loop, &p->fill);
	if (r->state == R_CANCELLED) {
		run_free(r);
		return;
	}
	ev_timer_stop(loop, &r->timer);
	r->status = w->rstatus;
	r->state = R_DRAINING;
	list_push(&p->draining, r);
	ev_io_stop(loop, &r->out.io);
	ev_io_stop(loop, &r->err.io);
	drain(r);
}

static void
fill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	pool_fill(w->data);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct exec_run *r = w->data;

	(void)loop;
	(void)revents;
	if (r->state == R_ENDING) {
		list_remove(r);
		finish(r, r->res, r->why);
		return;
	}
	if (r->state == R_DRAINING) {
		drain(r);
		return;
	}
	if (!r->term_sent) {
		r->timed_out = 1;
		log_debug("task %lld: timed out after %d ms, SIGTERM to "
		    "process group %ld", (long long)r->id, r->conf->timeout_ms,
		    (long)r->pid);
		terminate(r);
		return;
	}
	log_warnx("task %lld: still running %d ms after SIGTERM, sending "
	    "SIGKILL to process group %ld", (long long)r->id,
	    r->conf->kill_grace_ms, (long)r->pid);
	signal_group(r, SIGKILL);
}

/* The child exited and awaits its ev_child: exec_stop leaves it be. */
static int
child_ended(struct exec_run *r)
{
	siginfo_t si;

	if (ev_is_pending(&r->child))
		return 1;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, r->pid, &si, WEXITED | WNOHANG | WNOWAIT) == -1)
		return errno == ECHILD;
	return si.si_pid == r->pid;
}

/* ---- the interface ---- */

/* LOOP is the default loop: only there does libev reap children. */
struct exec_pool *
exec_pool_new(struct ev_loop *loop, int max_processes)
{
	struct exec_pool *p;
	sigset_t none, all;
	int e;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->loop = loop;
	ev_timer_init(&p->fill, fill_cb, 0., 0.);
	p->fill.data = p;
	p->max = max_processes > 0 ? max_processes : 1;
	if ((e = posix_spawnattr_init(&p->attr)) != 0) {
		free(p);
		errno = e;
		return NULL;
	}
	sigemptyset(&none);
	sigemptyset(&all);
	for (int sig = 1; sig < NSIG; sig++)
		sigaddset(&all, sig);	/* glibc's own ones are refused */
	e = posix_spawnattr_setflags(&p->attr, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	if (e == 0)
		e = posix_spawnattr_setsigmask(&p->attr, &none);
	if (e == 0)
		e = posix_spawnattr_setsigdefault(&p->attr, &all);
	if (e == 0)
		e = posix_spawnattr_setpgroup(&p->attr, 0);
	if (e != 0) {
		posix_spawnattr_destroy(&p->attr);
		free(p);
		errno = e;
		return NULL;
	}
	return p;
}

void
exec_pool_set_max(struct exec_pool *p, int max_processes)
{
	p->max = max_processes > 0 ? max_processes : 1;
	pool_fill(p);
}

void
exec_pool_free(struct exec_pool *p)
{
	struct exec_run *r;

	if (p == NULL)
		return;
	ev_timer_stop(p->loop, &p->fill);
	while ((r = p->waiting.head) != NULL) {
		list_remove(r);
		run_free(r);
	}
	while ((r = p->ending.head) != NULL) {
		ev_timer_stop(p->loop, &r->timer);
		list_remove(r);
		run_free(r);
	}
	while ((r = p->draining.head) != NULL) {
		ev_timer_stop(p->loop, &r->timer);
		stream_close(&r->out, 0);
		stream_close(&r->err, 0);
		list_remove(r);
		run_free(r);
	}
	/* Every group killed first, then each child waited for. */
	for (r = p->live.head; r != NULL; r = r->next)
		signal_group(r, SIGKILL);
	while ((r = p->live.head) != NULL) {
		int reaped = ev_is_pending(&r->child);

		ev_child_stop(p->loop, &r->child);
		ev_timer_stop(p->loop, &r->timer);
		stream_close(&r->out, 0);
		stream_close(&r->err, 0);
		while (!reaped && waitpid(r->pid, NULL, 0) == -1 &&
		    errno == EINTR)
			;
		list_remove(r);
		p->running--;
		run_free(r);
	}
	posix_spawnattr_destroy(&p->attr);
	free(p);
}

int
exec_pool_running(const struct exec_pool *p)
{
	return p->running;
}

int
exec_pool_waiting(const struct exec_pool *p)
{
	return p->waiting.n;
}

struct exec_run *
exec_start(struct exec_pool *p, struct exec_conf *conf,
    const struct run_task *t, exec_done_fn *fn, void *arg)
{
	struct exec_run *r;
	int rc;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->pool = p;
	r->conf = conf;
	exec_conf_ref(conf);
	r->fn = fn;
	r->arg = arg;
	r->id = t->id;
	r->pid = -1;
	r->out.fd = r->err.fd = -1;
	r->out.r = r->err.r = r;
	snprintf(r->idstr, sizeof(r->idstr), "%lld", (long long)t->id);
	ev_init(&r->timer, timer_cb);
	r->timer.data = r;
	if ((rc = run_prepare(r, t)) == -1) {
		run_free(r);
		return NULL;
	}
	if (rc == 1)
		defer(r, EXEC_FAILED, r->why);
	else if (p->running < p->max && p->waiting.head == NULL)
		run_launch(r);
	else {
		r->state = R_WAITING;
		list_push(&p->waiting, r);
	}
	return r;
}

void
exec_stop(struct exec_run *r)
{
	if (r == NULL)
		return;
	switch (r->state) {
	case R_WAITING:
		defer(r, EXEC_STOPPED, "stopped before it started");
		break;
	case R_RUNNING:
		if (r->stopping || child_ended(r))
			break;
		r->stopping = 1;
		if (!r->term_sent) {
			log_debug("task %lld: stopping, SIGTERM to process "
			    "group %ld", (long long)r->id, (long)r->pid);
			terminate(r);
		}
		break;
	case R_ENDING:		/* its result is known already */
	case R_DRAINING:	/* it ended first */
	case R_CANCELLED:
	case R_DONE:
		break;
	}
}

void
exec_cancel(struct exec_run *r)
{
	struct exec_pool *p;

	if (r == NULL)
		return;
	p = r->pool;
	switch (r->state) {
	case R_WAITING:
		list_remove(r);
		run_free(r);
		break;
	case R_ENDING:
		ev_timer_stop(p->loop, &r->timer);
		list_remove(r);
		run_free(r);
		break;
	case R_RUNNING:
		/* Only the ev_child is left; child_cb frees the rest. */
		signal_group(r, SIGKILL);
		ev_timer_stop(p->loop, &r->timer);
		stream_close(&r->out, 1);
		stream_close(&r->err, 1);
		free(r->lines);
		r->lines = NULL;
		exec_conf_unref(r->conf);
		r->conf = NULL;
		r->state = R_CANCELLED;
		break;
	case R_DRAINING:
		ev_timer_stop(p->loop, &r->timer);
		stream_close(&r->out, 1);
		stream_close(&r->err, 1);
		list_remove(r);
		run_free(r);
		break;
	case R_CANCELLED:
	case R_DONE:
		break;
	}
}
