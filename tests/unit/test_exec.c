/*
 * test_exec: column names as environment names, then real children on the
 * default loop: results and reasons, environment, output lines, timeouts,
 * max_processes, left-behind grandchildren, output read after the child
 * ended, stop, cancel and pool free in each state.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "exec.h"
#include "log.h"
#include "tap.h"

struct result {
	int done;
	enum exec_result res;
	char why[512];
	double at;
};

static struct ev_loop *loop;
static struct exec_pool *pool;
static ev_timer tick;
static int max_seen;		/* most children alive at a tick */
static int ticks;
static int in_api;		/* inside exec_start/exec_stop */
static int reentered;		/* FN ran inside them */
static char dir[] = "/tmp/test_exec.XXXXXX";
static char *captured;		/* the log lines of the last capture() */

static void
done_cb(void *arg, enum exec_result res, const char *reason)
{
	struct result *r = arg;

	if (in_api)
		reentered++;
	r->done++;
	r->res = res;
	snprintf(r->why, sizeof(r->why), "%s", reason ? reason : "(null)");
	r->at = ev_time();
}

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	ticks++;
	if (exec_pool_running(pool) > max_seen)
		max_seen = exec_pool_running(pool);
}

/* Runs the loop until COUNT reaches WANT or MAX_S seconds pass. */
static void
wait_for(const int *count, int want, double max_s)
{
	double end = ev_time() + max_s;

	while (*count < want && ev_time() < end)
		ev_run(loop, EVRUN_ONCE);
}

static void
spin(double s)
{
	double end = ev_time() + s;

	while (ev_time() < end)
		ev_run(loop, EVRUN_ONCE);
}

static struct exec_run *
start(struct exec_pool *p, struct exec_conf *c, const struct run_task *t,
    struct result *res)
{
	struct exec_run *r;
	static const struct run_task plain = { 1, "q", 1, 0, NULL, NULL };

	memset(res, 0, sizeof(*res));
	in_api = 1;
	r = exec_start(p, c, t ? t : &plain, done_cb, res);
	in_api = 0;
	return r;
}

static void
stop(struct exec_run *r)
{
	in_api = 1;
	exec_stop(r);
	in_api = 0;
}

static struct exec_conf *
sh(const char *script, char *const *env, const char *workdir, int timeout_ms,
    int grace_ms)
{
	char *cmd[] = { "/bin/sh", "-c", (char *)script, NULL };

	return exec_conf_new(cmd, env, workdir, timeout_ms, grace_ms);
}

/* Runs SCRIPT once to the end; its result in RES. */
static void
run_sh(const char *script, char *const *env, const struct run_task *t,
    struct result *res)
{
	struct exec_conf *c = sh(script, env, NULL, 0, 0);

	start(pool, c, t, res);
	exec_conf_unref(c);
	wait_for(&res->done, 1, 10);
}

/* The process is gone, or a zombie nobody reaps (PID 1 may not). */
static int
dead(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	int n;

	if (kill(pid, 0) == -1 && errno == ESRCH)
		return 1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n > 0 ? n : 0] = '\0';
	if ((p = strrchr(buf, ')')) == NULL)
		return 0;
	return p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static int
dead_soon(pid_t pid)
{
	for (int i = 0; i < 100; i++) {
		if (dead(pid))
			return 1;
		spin(0.01);
	}
	return 0;
}

static pid_t
read_pid(const char *name, double max_s)
{
	char path[256];
	double end = ev_time() + max_s;
	long pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	while (ev_time() < end) {
		if ((f = fopen(path, "r")) != NULL) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
			if (pid > 0)
				return pid;
		}
		spin(0.01);
	}
	return -1;
}

static void
test_env_name(void)
{
	char buf[64], small[8];

	ok(strcmp(exec_env_name("name", buf, sizeof(buf)), "TASK_NAME") == 0,
	    "name -> %s", buf);
	ok(strcmp(exec_env_name("MiXed", buf, sizeof(buf)), "TASK_MIXED") == 0,
	    "MiXed -> %s", buf);
	ok(strcmp(exec_env_name("due-at time.x", buf, sizeof(buf)),
	    "TASK_DUE_AT_TIME_X") == 0, "dashes, spaces, dots -> %s", buf);
	ok(strcmp(exec_env_name("col42_9", buf, sizeof(buf)),
	    "TASK_COL42_9") == 0, "digits and '_' kept -> %s", buf);
	ok(strcmp(exec_env_name("caf\xc3\xa9", buf, sizeof(buf)),
	    "TASK_CAF__") == 0, "each non-ASCII byte -> '_': %s", buf);
	ok(strcmp(exec_env_name("", buf, sizeof(buf)), "TASK_") == 0,
	    "empty -> %s", buf);
	ok(strcmp(exec_env_name("abcdef", small, sizeof(small)), "TASK_AB") ==
	    0, "cut to 8 bytes -> %s", small);
	ok(strcmp(exec_env_name("abc", small, 3), "TA") == 0,
	    "cut inside the prefix -> %s", small);
	small[0] = 'z';
	exec_env_name("abc", small, 0);
	ok(small[0] == 'z', "size 0 writes nothing");
}

static void
test_results(void)
{
	char *missing[] = { "/nonexistent/handler", NULL };
	char noexec_path[256], *noexec[] = { noexec_path, NULL };
	struct run_task t = { 42, "q", 1, 0, NULL, NULL };
	struct exec_conf *c;
	struct exec_run *r;
	struct result res;

	run_sh("exit 0", NULL, NULL, &res);
	ok(res.done == 1 && res.res == EXEC_DONE, "exit 0: done (%s)", res.why);
	run_sh("exit 3", NULL, NULL, &res);
	ok(res.res == EXEC_FAILED && strcmp(res.why, "exit 3") == 0,
	    "exit 3: failed, \"%s\"", res.why);
	run_sh("kill -SEGV $$", NULL, NULL, &res);
	ok(res.res == EXEC_FAILED && strcmp(res.why, "killed by SIGSEGV") == 0,
	    "SIGSEGV: \"%s\"", res.why);
	run_sh("test \"$0\" = 42 && test $# = 0", NULL, &t, &res);
	ok(res.res == EXEC_DONE, "the id is the last argument (%s)", res.why);

	c = exec_conf_new(missing, NULL, NULL, 0, 0);
	r = start(pool, c, NULL, &res);
	exec_conf_unref(c);
	ok(r != NULL && res.done == 0, "a missing program: FN not yet run");
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_FAILED && strcmp(res.why, "cannot run "
	    "/nonexistent/handler: No such file or directory") == 0,
	    "then \"%s\"", res.why);

	snprintf(noexec_path, sizeof(noexec_path), "%s/noexec", dir);
	close(open(noexec_path, O_WRONLY | O_CREAT, 0644));
	c = exec_conf_new(noexec, NULL, NULL, 0, 0);
	start(pool, c, NULL, &res);
	exec_conf_unref(c);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_FAILED && strstr(res.why, "Permission denied"),
	    "not executable: \"%s\"", res.why);
	unlink(noexec_path);
	ok(exec_pool_running(pool) == 0 && exec_pool_waiting(pool) == 0,
	    "nothing left running or waiting");
}

static void
test_env(void)
{
	char *env[] = { "EXTRA=x y", "HOME=/from/conf", "HOME=/last/wins",
	    "EXPECT_NAME=a\nb", "EXPECT_W=\"q'\xff $x", "TASK_QUEUE=conf",
	    "TASK_CONFONLY=c", NULL };
	const char *names[] = { "name", "x", "Id", "a-b", "a.b",
	    "weird \xc3\xa9", "empty" };
	const char *values[] = { "a\nb", NULL, "999", "first", "second",
	    "\"q'\xff $x", "" };
	struct run_task t = { 7, "jobs", 2, 7, names, values };
	struct result res;

	setenv("TASK_LEAK", "daemon", 1);
	setenv("HOME", "/from/daemon", 1);
	run_sh("test \"$TASK_ID\" = 7 && test \"$TASK_QUEUE\" = jobs && "
	    "test \"$TASK_ATTEMPT\" = 2", env, &t, &res);
	ok(res.res == EXEC_DONE, "TASK_ID, TASK_QUEUE (the task's), "
	    "TASK_ATTEMPT (%s)", res.why);
	run_sh("test \"$TASK_NAME\" = \"$EXPECT_NAME\" && "
	    "test \"$TASK_WEIRD___\" = \"$EXPECT_W\"", env, &t, &res);
	ok(res.res == EXEC_DONE, "values with a newline, quotes and non-UTF-8 "
	    "bytes pass as they are (%s)", res.why);
	run_sh("test -z \"${TASK_X+set}\" && test -n \"${TASK_EMPTY+set}\"",
	    env, &t, &res);
	ok(res.res == EXEC_DONE, "NULL leaves TASK_X unset, \"\" sets "
	    "TASK_EMPTY (%s)", res.why);
	run_sh("test \"$TASK_A_B\" = first && "
	    "test $(env | grep -c '^TASK_A_B=') = 1 && "
	    "test $(env | grep -c '^TASK_ID=') = 1", env, &t, &res);
	ok(res.res == EXEC_DONE, "the first column of a name wins; Id does "
	    "not replace TASK_ID (%s)", res.why);
	run_sh("test -z \"${TASK_LEAK+set}\" && test \"$TASK_CONFONLY\" = c && "
	    "test \"$EXTRA\" = 'x y' && test \"$HOME\" = /last/wins && "
	    "test $(env | grep -c '^HOME=') = 1 && test -n \"$PATH\"",
	    env, &t, &res);
	ok(res.res == EXEC_DONE, "daemon's TASK_* dropped, ENVIRONMENT added "
	    "over the daemon's, PATH inherited (%s)", res.why);
	unsetenv("TASK_LEAK");
}

/* What systemd and credentials.c set for the daemon stays the daemon's. */
static void
test_daemon_env(void)
{
	static const char *const own[] = { "NOTIFY_SOCKET", "WATCHDOG_USEC",
	    "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
	    "PGPASSFILE" };
	char *none[] = { NULL };
	char *env[] = { "PGPASSFILE=/handler/pgpass", NULL };
	struct result res;

	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		setenv(own[i], "daemon", 1);
	setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tw", 1);
	setenv("NOTIFY_SOCKETS_NOT", "kept", 1);
	run_sh("test -z \"$(env | grep -E '^(NOTIFY_SOCKET|WATCHDOG_[A-Z]*|"
	    "LISTEN_[A-Z]*|PGPASSFILE)=')\" && "
	    "test \"$CREDENTIALS_DIRECTORY\" = /run/credentials/tw && "
	    "test \"$NOTIFY_SOCKETS_NOT\" = kept", none, NULL, &res);
	ok(res.res == EXEC_DONE, "NOTIFY_SOCKET, WATCHDOG_*, LISTEN_* and "
	    "PGPASSFILE are not inherited; CREDENTIALS_DIRECTORY is (%s)",
	    res.why);
	run_sh("test \"$PGPASSFILE\" = /handler/pgpass && "
	    "test $(env | grep -c '^PGPASSFILE=') = 1 && "
	    "test -z \"${NOTIFY_SOCKET+set}\"", env, NULL, &res);
	ok(res.res == EXEC_DONE, "handler.environment may set PGPASSFILE "
	    "itself (%s)", res.why);
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		unsetenv(own[i]);
	unsetenv("CREDENTIALS_DIRECTORY");
	unsetenv("NOTIFY_SOCKETS_NOT");
}

static void
test_big_env(void)
{
	const char *names[80], *values[80];
	struct run_task t = { 9, "q", 1, 1, names, values };
	size_t fit = 131071 - strlen("TASK_BIG=");
	char *big = malloc(fit + 2), *chunk = malloc(100001);
	const char *preload = getenv("LD_PRELOAD");
	struct result res;

	memset(big, 'b', fit + 1);
	big[fit] = '\0';
	names[0] = "big";
	values[0] = big;
	run_sh("test ${#TASK_BIG} -gt 131000", NULL, &t, &res);
	ok(res.res == EXEC_DONE, "a 131071-byte TASK_BIG=... passes (%s)",
	    res.why);
	big[fit] = 'b';
	big[fit + 1] = '\0';
	run_sh("exit 0", NULL, &t, &res);
	ok(res.res == EXEC_FAILED && strcmp(res.why, "TASK_BIG is 131073 "
	    "bytes, more than the environment takes (131072)") == 0,
	    "one byte more fails: \"%s\"", res.why);

	memset(chunk, 'c', 100000);
	chunk[100000] = '\0';
	for (int i = 0; i < 80; i++) {
		static char nbuf[80][8];

		snprintf(nbuf[i], sizeof(nbuf[i]), "c%d", i);
		names[i] = nbuf[i];
		values[i] = chunk;
	}
	t.ncols = 80;
	run_sh("exit 0", NULL, &t, &res);
	/* valgrind forks where glibc would vfork: the exec fails in a child. */
	if (preload != NULL && strstr(preload, "vgpreload") != NULL)
		ok(1, "8 MB in all # SKIP valgrind hides E2BIG: \"%s\"",
		    res.why);
	else
		ok(res.res == EXEC_FAILED && strncmp(res.why, "cannot run "
		    "/bin/sh: Argument list too long", 42) == 0,
		    "8 MB in all: \"%s\"", res.why);
	free(big);
	free(chunk);
}

static void
test_process(void)
{
	char script[512], marker[256];
	char *env[] = { NULL };
	struct exec_conf *c;
	struct result res;
	sigset_t set, old;
	int fd;

	/* A descriptor the daemon forgot to mark close-on-exec. */
	fd = dup2(1, 50);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, &old);
	signal(SIGINT, SIG_IGN);
	run_sh("test ! -e /proc/$$/fd/50 && test ! -e /proc/$$/fd/3 && "
	    "test \"$(readlink /proc/$$/fd/0)\" = /dev/null", env, NULL, &res);
	ok(res.res == EXEC_DONE, "stdin /dev/null, no inherited descriptor "
	    "(%s)", res.why);
	run_sh("set -- $(cat /proc/$$/stat) && test \"$5\" = $$", env, NULL,
	    &res);
	ok(res.res == EXEC_DONE, "its own process group (%s)", res.why);
	/* glibc's own 32 and 33 are out of reach: they stay as they were. */
	run_sh("s=/proc/$$/status; "
	    "blk=$(sed -n 's/^SigBlk:[[:space:]]*//p' $s); "
	    "ign=$(sed -n 's/^SigIgn:[[:space:]]*//p' $s); "
	    "test $((0x$blk)) = 0 && test $((0x$ign & 0x7fffffff)) = 0",
	    env, NULL, &res);
	ok(res.res == EXEC_DONE, "no blocked and no ignored signal (%s)",
	    res.why);
	signal(SIGINT, SIG_DFL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(fd);

	snprintf(marker, sizeof(marker), "%s/marker", dir);
	close(open(marker, O_WRONLY | O_CREAT, 0600));
	c = sh("test -e marker", NULL, dir, 0, 0);
	start(pool, c, NULL, &res);
	exec_conf_unref(c);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_DONE, "runs in the working directory (%s)",
	    res.why);
	unlink(marker);
	c = sh("exit 0", NULL, "/nonexistent/dir", 0, 0);
	start(pool, c, NULL, &res);
	exec_conf_unref(c);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_FAILED && strcmp(res.why, "cannot run /bin/sh: "
	    "working directory /nonexistent/dir: No such file or directory") ==
	    0,
	    "a missing working directory: \"%s\"", res.why);

	snprintf(script, sizeof(script), "sleep 30 & echo $! > %s/gc; exit 0",
	    dir);
	run_sh(script, NULL, NULL, &res);
	ok(res.res == EXEC_DONE, "a child that leaves a grandchild is done "
	    "(%s)", res.why);
	ok(dead_soon(read_pid("gc", 1)), "and the grandchild is killed");
}

/* Log lines go to stderr: catch them in a file. */
static int capture_fd = -1, capture_saved = -1;

static void
capture_begin(void)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/log", dir);
	capture_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	unlink(path);
	capture_saved = dup(2);
	dup2(capture_fd, 2);
}

static char *
capture_end(void)
{
	struct stat st;
	ssize_t n = 0;

	dup2(capture_saved, 2);
	close(capture_saved);
	free(captured);
	captured = NULL;
	if (fstat(capture_fd, &st) == 0 &&
	    (captured = malloc(st.st_size + 1)) != NULL)
		n = pread(capture_fd, captured, st.st_size, 0);
	if (captured != NULL)
		captured[n > 0 ? n : 0] = '\0';
	close(capture_fd);
	return captured ? captured : "";
}

static char *
capture(const char *script, int64_t id, struct result *res)
{
	struct run_task t = { id, "q", 1, 0, NULL, NULL };

	capture_begin();
	run_sh(script, NULL, &t, res);
	return capture_end();
}

/* Occurrences of NEEDLE, by hand: ASan's strstr reads all of HAY each call. */
static int
count(const char *hay, const char *needle)
{
	size_t m = strlen(needle);
	int n = 0;

	for (; *hay != '\0'; hay++)
		if (*hay == *needle && strncmp(hay, needle, m) == 0)
			n++;
	return n;
}

static void
test_output(void)
{
	struct result res;
	const char *log;
	int before;
	double t0;

	log = capture("echo out; echo err >&2; printf 'a\\001b\\tc\\177\\n'; "
	    "head -c 5000 /dev/zero | tr '\\0' x; echo; echo after; "
	    "printf '\\n'; printf tail", 501, &res);
	ok(res.res == EXEC_DONE, "output run done (%s)", res.why);
	ok(strstr(log, "task 501: out\n") && strstr(log, "task 501: err\n"),
	    "stdout and stderr lines logged");
	ok(strstr(log, "task 501: a\\x01b\tc\\x7f\n") != NULL,
	    "control bytes as \\xHH, tab kept");
	ok(count(log, "task 501: xxxx") == 1 && strstr(log, "task 501: after\n"),
	    "a 5000-byte line logged once, cut; its rest dropped");
	ok(strstr(log, "task 501: \n") && strstr(log, "task 501: tail\n"),
	    "an empty line, and a last one without newline");
	if (!res.done)
		diag("log: %s", log);

	/* A flood without newlines: bounded memory, the loop still turns. */
	before = ticks;
	t0 = ev_time();
	log = capture("head -c 300000000 /dev/zero", 502, &res);
	ok(res.res == EXEC_DONE && count(log, "task 502: \\x00") == 1,
	    "300 MB without a newline: one cut line (%s, %.2f s)", res.why,
	    ev_time() - t0);
	ok(ticks - before >= (ev_time() - t0) / 0.01 / 4,
	    "the loop kept turning: %d ticks", ticks - before);
	t0 = ev_time();
	log = capture("yes | head -n 20000", 503, &res);
	ok(res.res == EXEC_DONE && count(log, "task 503: y\n") == 20000,
	    "20000 short lines, each logged (%d, %.2f s)",
	    count(log, "task 503: y\n"), ev_time() - t0);
	free(captured);
	captured = NULL;
}

/*
 * The child ends with 60000 lines still in its pipe; the loop has not
 * turned. One turn reaps it; its lines take many more.
 */
static struct exec_run *
ended_with_backlog(struct exec_pool *p, struct exec_conf *c, int64_t id,
    struct result *res)
{
	struct run_task t = { id, "q", 1, 0, NULL, NULL };
	struct exec_run *r = start(p, c, &t, res);

	usleep(300000);
	for (int i = 0; i < 100 && exec_pool_running(p) > 0; i++)
		ev_run(loop, EVRUN_ONCE);
	return r;
}

static void
test_drain(void)
{
	struct exec_conf *c = sh("head -c 60000 /dev/zero | tr '\\0' '\\n'; "
	    "exit 3", NULL, NULL, 0, 0);
	struct exec_pool *p;
	struct exec_run *r;
	struct result res;
	const char *log;

	capture_begin();
	r = ended_with_backlog(pool, c, 601, &res);
	ok(exec_pool_running(pool) == 0 && res.done == 0, "reaped, its "
	    "output not yet all read (%d running, FN %d)",
	    exec_pool_running(pool), res.done);
	stop(r);
	wait_for(&res.done, 1, 10);
	log = capture_end();
	ok(res.res == EXEC_FAILED && strcmp(res.why, "exit 3") == 0,
	    "a stop while draining keeps its result: \"%s\"", res.why);
	ok(count(log, "task 601: \n") == 60000, "and all 60000 lines are "
	    "logged: %d", count(log, "task 601: \n"));

	capture_begin();
	r = ended_with_backlog(pool, c, 602, &res);
	exec_cancel(r);
	spin(0.1);
	capture_end();
	ok(res.done == 0 && exec_pool_running(pool) == 0, "cancel while "
	    "draining: no FN");

	p = exec_pool_new(loop, 2);
	capture_begin();
	ended_with_backlog(p, c, 603, &res);
	exec_pool_free(p);
	spin(0.1);
	capture_end();
	ok(res.done == 0, "pool freed while draining: no FN");
	exec_conf_unref(c);
}

static void
test_timeout(void)
{
	struct exec_conf *c;
	struct result res;
	double t0 = ev_time();

	c = sh("trap '' TERM; sleep 5", NULL, NULL, 200, 200);
	start(pool, c, NULL, &res);
	exec_conf_unref(c);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_FAILED && strcmp(res.why,
	    "timed out after 200 ms") == 0, "SIGTERM ignored: \"%s\"", res.why);
	ok(res.at - t0 >= 0.35 && res.at - t0 < 2, "ended by SIGKILL after "
	    "the grace: %.2f s", res.at - t0);

	t0 = ev_time();
	c = sh("sleep 5", NULL, NULL, 200, 5000);
	start(pool, c, NULL, &res);
	exec_conf_unref(c);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_FAILED && strcmp(res.why,
	    "timed out after 200 ms") == 0 && res.at - t0 < 1,
	    "SIGTERM obeyed: \"%s\" in %.2f s", res.why, res.at - t0);
}

static void
test_max(void)
{
	struct exec_conf *c = sh("sleep 0.2", NULL, NULL, 0, 0);
	struct exec_pool *p;
	struct result res[6];
	int done = 0, i, all;
	double t0 = ev_time();

	max_seen = 0;
	for (i = 0; i < 6; i++)
		start(pool, c, NULL, &res[i]);
	ok(exec_pool_running(pool) == 2 && exec_pool_waiting(pool) == 4,
	    "6 runs, max 2: %d running, %d waiting", exec_pool_running(pool),
	    exec_pool_waiting(pool));
	for (double end = t0 + 5; done < 6 && ev_time() < end;) {
		ev_run(loop, EVRUN_ONCE);
		for (done = i = 0; i < 6; i++)
			done += res[i].done;
	}
	for (all = 1, i = 0; i < 6; i++)
		if (res[i].res != EXEC_DONE)
			all = 0;
	ok(done == 6 && all, "all 6 done");
	ok(max_seen <= 2, "never more than 2 alive: %d", max_seen);
	ok(ev_time() - t0 >= 0.6, "in three rounds: %.2f s", ev_time() - t0);
	ok(res[0].at <= res[2].at && res[2].at <= res[4].at &&
	    res[1].at <= res[5].at, "waiting runs start in order");

	/* A reload raises the bound: the waiting ones start at once. */
	p = exec_pool_new(loop, 1);
	for (i = 0; i < 4; i++)
		start(p, c, NULL, &res[i]);
	ok(exec_pool_running(p) == 1 && exec_pool_waiting(p) == 3,
	    "max 1: %d running, %d waiting", exec_pool_running(p),
	    exec_pool_waiting(p));
	exec_pool_set_max(p, 4);
	ok(exec_pool_running(p) == 4 && exec_pool_waiting(p) == 0,
	    "max raised to 4: %d running, %d waiting", exec_pool_running(p),
	    exec_pool_waiting(p));
	exec_pool_set_max(p, 1);
	start(p, c, NULL, &res[4]);
	ok(exec_pool_waiting(p) == 1, "lowered to 1: the next one waits");
	wait_for(&res[4].done, 1, 5);
	ok(res[0].done + res[1].done + res[2].done + res[3].done == 4 &&
	    res[4].res == EXEC_DONE, "and runs when the others ended");
	exec_pool_free(p);
	exec_conf_unref(c);
}

static void
test_stop(void)
{
	struct exec_conf *c, *t;
	struct exec_run *r, *w, *f;
	struct result res, wres, fres;
	char *missing[] = { "/nonexistent/x", NULL };
	double t0;

	c = sh("sleep 10", NULL, NULL, 0, 5000);
	r = start(pool, c, NULL, &res);
	spin(0.1);
	t0 = ev_time();
	stop(r);
	ok(res.done == 0, "exec_stop does not call FN itself");
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_STOPPED && res.at - t0 < 1, "a running child "
	    "stopped: \"%s\" in %.2f s", res.why, res.at - t0);
	exec_conf_unref(c);

	c = sh("trap '' TERM; sleep 10", NULL, NULL, 0, 200);
	r = start(pool, c, NULL, &res);
	spin(0.1);
	t0 = ev_time();
	stop(r);
	stop(r);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_STOPPED && res.done == 1 && res.at - t0 >= 0.15 &&
	    res.at - t0 < 1, "SIGTERM ignored: SIGKILL after the grace, "
	    "\"%s\" in %.2f s", res.why, res.at - t0);

	/* Both slots busy: the third waits, then is stopped. */
	r = start(pool, c, NULL, &res);
	f = start(pool, c, NULL, &fres);
	w = start(pool, c, NULL, &wres);
	ok(exec_pool_waiting(pool) == 1, "third run waits");
	stop(w);
	ok(wres.done == 0 && exec_pool_waiting(pool) == 0, "stopped waiting "
	    "run leaves the queue, FN not yet run");
	stop(r);
	stop(f);
	wait_for(&wres.done, 1, 5);
	ok(wres.res == EXEC_STOPPED, "then FN: \"%s\"", wres.why);
	wait_for(&fres.done, 1, 5);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_STOPPED && fres.res == EXEC_STOPPED,
	    "both running ones stopped");
	exec_conf_unref(c);

	/* A spawn failure not yet reported keeps its own result. */
	t = exec_conf_new(missing, NULL, NULL, 0, 0);
	f = start(pool, t, NULL, &fres);
	stop(f);
	wait_for(&fres.done, 1, 5);
	ok(fres.done == 1 && fres.res == EXEC_FAILED, "stop after a failed "
	    "spawn: \"%s\"", fres.why);
	exec_conf_unref(t);

	/* It ended before the stop: its own result. */
	c = sh("exit 4", NULL, NULL, 0, 0);
	r = start(pool, c, NULL, &res);
	usleep(200000);
	stop(r);
	wait_for(&res.done, 1, 5);
	ok(res.res == EXEC_FAILED && strcmp(res.why, "exit 4") == 0,
	    "a child that ended first keeps its result: \"%s\"", res.why);
	exec_conf_unref(c);
	ok(reentered == 0, "FN never ran inside exec_start or exec_stop");
}

static void
test_cancel(void)
{
	char script[256], *missing[] = { "/nonexistent/x", NULL };
	struct exec_conf *c, *m;
	struct exec_pool *p;
	struct exec_run *r, *w, *f;
	struct result res, wres, fres;
	pid_t pid, pid2;

	snprintf(script, sizeof(script), "echo $$ > %s/c1; exec sleep 30",
	    dir);
	c = sh(script, NULL, NULL, 0, 0);
	m = exec_conf_new(missing, NULL, NULL, 0, 0);
	p = exec_pool_new(loop, 1);
	r = start(p, c, NULL, &res);
	w = start(p, c, NULL, &wres);
	f = start(p, m, NULL, &fres);
	pid = read_pid("c1", 5);
	ok(pid > 0, "running child wrote its pid");
	exec_cancel(f);
	exec_cancel(w);
	ok(exec_pool_waiting(p) == 0, "cancelled waiting run left the queue");
	exec_cancel(r);
	ok(exec_pool_running(p) == 1, "the cancelled child counts until "
	    "reaped");
	spin(0.3);
	ok(exec_pool_running(p) == 0 && dead(pid), "then it is reaped, "
	    "its group dead");
	ok(res.done + wres.done + fres.done == 0, "no FN for a cancelled run");

	/* Pool free: a running child, a waiting run, a failed spawn. */
	snprintf(script, sizeof(script), "%s/c1", dir);
	unlink(script);
	start(p, c, NULL, &res);
	start(p, c, NULL, &wres);
	start(p, m, NULL, &fres);
	pid2 = read_pid("c1", 5);
	ok(pid2 > 0 && pid2 != pid, "another child runs");
	exec_pool_free(p);
	ok(dead(pid2), "exec_pool_free killed and reaped it");
	spin(0.1);
	ok(res.done + wres.done + fres.done == 0, "no FN after pool free");
	exec_conf_unref(c);
	exec_conf_unref(m);
}

/* FN may stop or cancel its own run, and start another. */
static struct exec_run *self;
static struct exec_conf *chain_conf;
static struct result chained;

static void
chain_cb(void *arg, enum exec_result res, const char *reason)
{
	(void)arg;
	(void)res;
	(void)reason;
	exec_stop(self);
	exec_cancel(self);
	exec_start(pool, chain_conf, &(struct run_task){ 5, "q", 2, 0, NULL,
	    NULL }, done_cb, &chained);
}

/* FN frees the whole pool its run came from. */
static void
free_cb(void *arg, enum exec_result res, const char *reason)
{
	struct exec_pool **pp = arg;

	(void)res;
	(void)reason;
	exec_pool_free(*pp);
	*pp = NULL;
}

static void
test_reentry(void)
{
	struct run_task t = { 4, "q", 1, 0, NULL, NULL };
	struct exec_conf *quick, *slow;
	struct exec_pool *p;
	struct result res, wres;

	chain_conf = sh("test $TASK_ATTEMPT = 2", NULL, NULL, 0, 0);
	memset(&chained, 0, sizeof(chained));
	self = exec_start(pool, chain_conf, &t, chain_cb, NULL);
	wait_for(&chained.done, 1, 5);
	ok(chained.res == EXEC_DONE, "a run started from FN (%s)",
	    chained.why);
	exec_conf_unref(chain_conf);

	quick = sh("exit 0", NULL, NULL, 0, 0);
	slow = sh("sleep 30", NULL, NULL, 0, 0);
	p = exec_pool_new(loop, 2);
	exec_start(p, quick, &t, free_cb, &p);
	start(p, slow, NULL, &res);
	start(p, slow, NULL, &wres);
	for (double end = ev_time() + 5; p != NULL && ev_time() < end;)
		ev_run(loop, EVRUN_ONCE);
	spin(0.05);
	ok(p == NULL && res.done + wres.done == 0, "FN may free the pool; "
	    "the other runs end silently");
	exec_conf_unref(quick);
	exec_conf_unref(slow);
}

static void
cleanup(void)
{
	static const char *const files[] = { "gc", "c1", "marker", "noexec",
	    "log" };
	char path[256];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

int
main(void)
{
	log_open("test_exec", LOG_USER, LOG_DEBUG, 1);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_env_name();

	loop = ev_default_loop(0);
	pool = exec_pool_new(loop, 2);
	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);

	test_results();
	test_env();
	test_daemon_env();
	test_big_env();
	test_process();
	test_output();
	test_drain();
	test_timeout();
	test_max();
	test_stop();
	test_cancel();
	test_reentry();

	ok(exec_pool_running(pool) == 0 && exec_pool_waiting(pool) == 0,
	    "the pool is empty at the end");
	ev_timer_stop(loop, &tick);
	exec_pool_free(pool);
	ev_loop_destroy(loop);
	free(captured);
	cleanup();
	log_close();
	return done_testing();
}
