/*
 * metrics: an HTTP endpoint on the loop. libmicrohttpd runs in epoll mode
 * without threads: one ev_io on its epoll descriptor, one ev_timer for
 * its timeouts and for work it has buffered. Connections, memory and time per client are bounded.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <netinet/in.h>

#include <microhttpd.h>

#include "log.h"
#include "metrics.h"
#include "netaddr.h"

#define MAX_CONNECTIONS	64	/* more are accepted and closed at once */
#define PER_IP_LIMIT	16
#define CONN_TIMEOUT	10	/* seconds a connection may sit idle */
#define CONN_MEMORY	(32 * 1024)	/* request line and headers fit */

struct metrics {
	struct ev_loop *loop;
	const struct config *cfg;
	const struct stats *st;
	struct worker *w;
	struct MHD_Daemon *mhd;
	int fd;			/* the listening socket */
	char *unix_path;	/* removed when the endpoint closes */
	ev_io io;		/* MHD's epoll descriptor */
	ev_timer timer;		/* MHD's next timeout; 0: work is buffered */
	long ticks;		/* clock ticks per second */
	long page;
};

/* ---- the exposition ---- */

/* A label value: backslash, double quote and newline escaped. */
static void
put_label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void
family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{queue="Q"[,EXTRA]} */
static void
qline(FILE *f, const char *name, const char *queue, const char *extra)
{
	fprintf(f, "%s{queue=\"", name);
	put_label(f, queue);
	fprintf(f, "\"%s%s} ", extra ? "," : "", extra ? extra : "");
}

static void
histogram(FILE *f, const char *name, const char *queue,
    const struct histogram *h)
{
	char le[64], bucket[256];
	uint64_t n = 0;

	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	for (int i = 0; i <= STATS_NBUCKETS; i++) {
		n += h->count[i];
		if (i < STATS_NBUCKETS)
			snprintf(le, sizeof(le), "le=\"%g\"", stats_buckets[i]);
		else
			snprintf(le, sizeof(le), "le=\"+Inf\"");
		qline(f, bucket, queue, le);
		fprintf(f, "%llu\n", (unsigned long long)n);
	}
	snprintf(bucket, sizeof(bucket), "%s_sum", name);
	qline(f, bucket, queue, NULL);
	fprintf(f, "%.9g\n", h->sum);
	snprintf(bucket, sizeof(bucket), "%s_count", name);
	qline(f, bucket, queue, NULL);
	fprintf(f, "%llu\n", (unsigned long long)n);
}

/* A counter with a value per queue, the uint64_t at OFF of qstats. */
static void
per_queue(FILE *f, const struct metrics *m, const char *name,
    const char *help, size_t off)
{
	const struct stats *st = m->st;

	family(f, name, "counter", help);
	for (int i = 0; i < st->nq; i++) {
		qline(f, name, m->cfg->redis.queues[i], NULL);
		fprintf(f, "%llu\n", (unsigned long long)*(const uint64_t *)
		    ((const char *)&st->q[i] + off));
	}
}

#define SOFF(field)	offsetof(struct qsample, field)

/* The gauges of the last queue sample; a queue not sampled yet has none. */
static void
sampled(FILE *f, const struct metrics *m)
{
	static const struct { const char *name, *help; size_t off; } g[] = {
		{ "taskworkerd_queue_length",
		    "Ids waiting in the queue, sampled.", SOFF(length) },
		{ "taskworkerd_queue_processing",
		    "Ids held by every registered worker, sampled.",
		    SOFF(processing) },
		{ "taskworkerd_queue_retry",
		    "Ids waiting for their next attempt, sampled.",
		    SOFF(retry) },
		{ "taskworkerd_queue_scheduled",
		    "Ids scheduled for later, sampled.", SOFF(scheduled) },
		{ "taskworkerd_queue_dead",
		    "Ids in the dead list, sampled.", SOFF(dead) },
		{ "taskworkerd_queue_paused",
		    "1 while QUEUE:paused exists, sampled.", SOFF(paused) },
		{ "taskworkerd_queue_oldest_age_seconds",
		    "How long the oldest waiting id has waited, as far as "
		    "sampling tells (a lower bound).", SOFF(oldest_age) },
		{ "taskworkerd_workers_alive",
		    "Registered workers whose heartbeat is alive, sampled.",
		    SOFF(workers) },
		{ "taskworkerd_queue_sample_timestamp_seconds",
		    "When the queue gauges were last sampled, in seconds "
		    "since the epoch: they are as old as this.", SOFF(at) },
	};
	const struct stats *st = m->st;

	for (size_t j = 0; j < sizeof(g) / sizeof(g[0]); j++) {
		family(f, g[j].name, "gauge", g[j].help);
		for (int i = 0; i < st->nq; i++) {
			if (!st->q[i].sampled)
				continue;
			qline(f, g[j].name, m->cfg->redis.queues[i], NULL);
			fprintf(f, "%.15g\n", *(const double *)
			    ((const char *)&st->q[i].sample + g[j].off));
		}
	}
}

static void
backend(FILE *f, const char *name, const char *type, const char *help,
    double redis, double postgres)
{
	family(f, name, type, help);
	fprintf(f, "%s{backend=\"redis\"} %.9g\n", name, redis);
	fprintf(f, "%s{backend=\"postgres\"} %.9g\n", name, postgres);
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own descriptor */
}

static void
process_metrics(FILE *f, const struct metrics *m)
{
	unsigned long long utime = 0, stime = 0, vsize = 0, rss = 0;
	struct rlimit rl;
	char buf[1024], *p;
	ssize_t n;
	int fd, fds;

	/* /proc/self/stat: fields 14, 15, 23 and 24 follow "(comm) ". */
	if ((fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC)) != -1) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		if ((p = strrchr(buf, ')')) != NULL)
			sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
			    "%*u %llu %llu %*d %*d %*d %*d %*d %*d %*u %llu "
			    "%llu", &utime, &stime, &vsize, &rss);
	}
	family(f, "process_cpu_seconds_total", "counter",
	    "User and system CPU time spent, in seconds.");
	fprintf(f, "process_cpu_seconds_total %.2f\n",
	    (double)(utime + stime) / (double)m->ticks);
	family(f, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.");
	fprintf(f, "process_resident_memory_bytes %llu\n",
	    rss * (unsigned long long)m->page);
	family(f, "process_virtual_memory_bytes", "gauge",
	    "Virtual memory size in bytes.");
	fprintf(f, "process_virtual_memory_bytes %llu\n", vsize);
	if ((fds = count_fds()) >= 0) {
		family(f, "process_open_fds", "gauge",
		    "Number of open file descriptors.");
		fprintf(f, "process_open_fds %d\n", fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		family(f, "process_max_fds", "gauge",
		    "Maximum number of open file descriptors.");
		fprintf(f, "process_max_fds %llu\n",
		    (unsigned long long)rl.rlim_cur);
	}
	family(f, "process_start_time_seconds", "gauge",
	    "Start time of the process since the epoch, in seconds.");
	fprintf(f, "process_start_time_seconds %.3f\n", m->st->start_time);
}

/* The limits of each queue (README "Limits") and the time they said no. */
static void
limits(FILE *f, const struct metrics *m)
{
	static const char *const kind[LIMIT_NKINDS] = {
		"limit=\"rate\"", "limit=\"in_flight\"",
	};
	static const struct { const char *name, *help; } g[] = {
		{ "taskworkerd_queue_limit_rate",
		    "limits: ids a queue may give per second, from rate and "
		    "per_ms." },
		{ "taskworkerd_queue_limit_burst",
		    "limits: ids a queue may give at once after a quiet spell." },
		{ "taskworkerd_queue_limit_max_in_flight",
		    "limits: ids of a queue every worker together may hold." },
	};
	const struct stats *st = m->st;
	double now = ev_now(m->loop);

	family(f, "taskworkerd_queue_limited_seconds_total", "counter",
	    "Time this daemon wanted ids of the queue and a limit said no.");
	for (int i = 0; i < st->nq; i++)
		for (int k = 0; k < LIMIT_NKINDS; k++) {
			qline(f, "taskworkerd_queue_limited_seconds_total",
			    m->cfg->redis.queues[i], kind[k]);
			fprintf(f, "%.6f\n", stats_limited_seconds(&st->q[i], k,
			    now));
		}
	/* A family only where some queue has that limit. */
	for (size_t j = 0; j < sizeof(g) / sizeof(g[0]); j++) {
		int shown = 0;

		for (int i = 0; i < st->nq; i++) {
			const struct limit *l = config_limit(m->cfg,
			    m->cfg->redis.queues[i]);
			double v;

			if (l == NULL || (j < 2 && l->rate == 0) ||
			    (j == 2 && l->max_in_flight == 0))
				continue;
			v = j == 0 ? l->rate * 1000.0 / l->per_ms : j == 1 ?
			    l->burst : l->max_in_flight;
			if (!shown++)
				family(f, g[j].name, "gauge", g[j].help);
			qline(f, g[j].name, m->cfg->redis.queues[i], NULL);
			fprintf(f, "%.9g\n", v);
		}
	}
}

#define QOFF(field)	offsetof(struct qstats, field)

static const char *const dead_names[DEAD_NREASONS] = {
	"failed", "not_an_id", "no_row",
};

/* The whole page. Returns a malloc'ed buffer, or NULL. */
static char *
render(const struct metrics *m, size_t *len)
{
	const struct stats *st = m->st;
	struct worker_gauges g;
	char *buf = NULL;
	FILE *f;

	if ((f = open_memstream(&buf, len)) == NULL)
		return NULL;
	worker_gauges(m->w, &g);
	family(f, "taskworkerd_build_info", "gauge",
	    "The version of taskworkerd running, as a label; always 1.");
	fprintf(f, "taskworkerd_build_info{version=\"%s\"} 1\n",
	    TASKWORKERD_VERSION);

	per_queue(f, m, "taskworkerd_tasks_taken_total",
	    "Ids taken off the queue.", QOFF(taken));
	family(f, "taskworkerd_tasks_finished_total", "counter",
	    "Tasks finished, by outcome: completed, already_completed "
	    "(acknowledged only), retried (an attempt failed, another "
	    "follows) and failed (the last attempt failed).");
	for (int i = 0; i < st->nq; i++) {
		static const struct { const char *label; size_t off; } o[] = {
			{ "outcome=\"completed\"", QOFF(completed) },
			{ "outcome=\"already_completed\"", QOFF(already) },
			{ "outcome=\"retried\"", QOFF(retried) },
			{ "outcome=\"failed\"", QOFF(failed) },
		};

		for (size_t j = 0; j < sizeof(o) / sizeof(o[0]); j++) {
			qline(f, "taskworkerd_tasks_finished_total",
			    m->cfg->redis.queues[i], o[j].label);
			fprintf(f, "%llu\n", (unsigned long long)*(const
			    uint64_t *)((const char *)&st->q[i] + o[j].off));
		}
	}
	family(f, "taskworkerd_tasks_dead_total", "counter",
	    "Ids moved to the dead list, by reason: failed (last attempt "
	    "failed), not_an_id, no_row.");
	for (int i = 0; i < st->nq; i++)
		for (int r = 0; r < DEAD_NREASONS; r++) {
			char label[64];

			snprintf(label, sizeof(label), "reason=\"%s\"",
			    dead_names[r]);
			qline(f, "taskworkerd_tasks_dead_total",
			    m->cfg->redis.queues[i], label);
			fprintf(f, "%llu\n",
			    (unsigned long long)st->q[i].dead[r]);
		}

	family(f, "taskworkerd_tasks_in_flight", "gauge",
	    "Tasks held by this daemon, taken and not yet acknowledged.");
	fprintf(f, "taskworkerd_tasks_in_flight %d\n", g.in_flight);
	family(f, "taskworkerd_tasks_waiting", "gauge",
	    "Tasks taken that wait for a slot of worker.concurrency.");
	fprintf(f, "taskworkerd_tasks_waiting %d\n", g.waiting);
	family(f, "taskworkerd_tasks_running", "gauge",
	    "Tasks whose handler runs now.");
	fprintf(f, "taskworkerd_tasks_running %d\n", g.running);
	family(f, "taskworkerd_tasks_handler_waiting", "gauge",
	    "Tasks whose handler waits to start: for a process "
	    "(handler.max_processes) or a connection "
	    "(handler.max_connections).");
	fprintf(f, "taskworkerd_tasks_handler_waiting %d\n",
	    g.handler_waiting);

	family(f, "taskworkerd_handler_duration_seconds", "histogram",
	    "Time from the handler's start to its answer.");
	for (int i = 0; i < st->nq; i++)
		histogram(f, "taskworkerd_handler_duration_seconds",
		    m->cfg->redis.queues[i], &st->q[i].handler);
	family(f, "taskworkerd_task_duration_seconds", "histogram",
	    "Time from the id taken to its acknowledgement (completed, "
	    "retried or dead).");
	for (int i = 0; i < st->nq; i++)
		histogram(f, "taskworkerd_task_duration_seconds",
		    m->cfg->redis.queues[i], &st->q[i].task);

	sampled(f, m);
	limits(f, m);
	per_queue(f, m, "taskworkerd_reclaimed_ids_total",
	    "Ids given back to the queue from workers without a heartbeat.",
	    QOFF(reclaimed));

	backend(f, "taskworkerd_backend_up", "gauge",
	    "1 when the backend is connected and usable.", g.redis_up,
	    g.postgres_up);
	backend(f, "taskworkerd_backend_reconnects_total", "counter",
	    "Sessions opened again after a loss.",
	    (double)st->redis.reconnects, (double)st->postgres.reconnects);
	backend(f, "taskworkerd_backend_errors_total", "counter",
	    "Connections lost or refused, and command errors.",
	    (double)st->redis.errors, (double)st->postgres.errors);
	backend(f, "taskworkerd_backend_rtt_seconds", "gauge",
	    "The last measured round trip: the queue sample for redis, a "
	    "row load for postgres.", st->redis.rtt, st->postgres.rtt);
	family(f, "taskworkerd_step_retries_total", "counter",
	    "Task steps tried again after a passing server error.");
	fprintf(f, "taskworkerd_step_retries_total %llu\n",
	    (unsigned long long)st->step_retries);
	process_metrics(f, m);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- HTTP ---- */

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned int code, const char *text,
    char *owned, size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (owned)
		r = MHD_create_response_from_buffer(len, owned,
		    MHD_RESPMEM_MUST_FREE);
	else
		r = MHD_create_response_from_buffer(strlen(text),
		    (void *)text, MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		free(owned);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, owned ?
	    "text/plain; version=0.0.4; charset=utf-8" :
	    "text/plain; charset=utf-8");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **req)
{
	struct metrics *m = cls;
	char *page;
	size_t len;

	(void)version;
	(void)upload_data;
	(void)req;
	/* A request body is never wanted: answered before it is read. */
	*upload_data_size = 0;
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "only GET and HEAD\n", NULL, 0);
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND,
		    "not found; try /metrics\n", NULL, 0);
	if ((page = render(m, &len)) == NULL)
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
		    "out of memory\n", NULL, 0);
	return reply(conn, MHD_HTTP_OK, NULL, page, len);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[256];
	size_t n;

	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	/* A hostile client must not flood the log: debug only. */
	log_debug("metrics: %s", buf);
}

/* Runs MHD, then arms the timer for what it asks next. */
static void
run(struct metrics *m)
{
	MHD_UNSIGNED_LONG_LONG ms;

	MHD_run(m->mhd);
	ev_timer_stop(m->loop, &m->timer);
	if (MHD_get_timeout(m->mhd, &ms) != MHD_YES)
		return;
	/*
	 * 0: data already buffered, run again on the next turn of the loop
	 * (a timer, not an idle watcher, which busy tasks would starve).
	 */
	ev_timer_set(&m->timer, ms / 1000.0, 0.);
	ev_timer_start(m->loop, &m->timer);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	run(w->data);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	run(w->data);
}

static int
open_listener(const char *listen_on, char **unix_path)
{
	struct sockaddr_storage sa;
	socklen_t len;
	char why[128];
	const char *err;
	int fd, one = 1;

	*unix_path = NULL;
	if ((err = netaddr_parse(listen_on, &sa, &len, why, sizeof(why)))) {
		log_errorx("metrics.listen %s: %s", listen_on, err);
		return -1;
	}
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1) {
		log_error("metrics: socket");
		return -1;
	}
	if (sa.ss_family == AF_UNIX) {
		struct stat st;

		/* A socket left by an earlier run is replaced; a file is not. */
		if (lstat(listen_on, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(listen_on);
	} else
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, len) == -1 ||
	    listen(fd, 64) == -1) {
		int e = errno;

		log_errorx("metrics: cannot listen on %s: %s", listen_on,
		    strerror(e));
		close(fd);
		errno = e;
		return -1;
	}
	if (sa.ss_family == AF_UNIX && (*unix_path = strdup(listen_on)) == NULL) {
		close(fd);
		return -1;
	}
	return fd;
}

struct metrics *
metrics_new(struct ev_loop *loop, const struct config *cfg,
    const struct stats *st, struct worker *w)
{
	struct metrics *m = calloc(1, sizeof(*m));
	const union MHD_DaemonInfo *info;
	int inet;

	if (m == NULL)
		return NULL;
	m->loop = loop;
	m->cfg = cfg;
	m->st = st;
	m->w = w;
	m->ticks = sysconf(_SC_CLK_TCK);
	m->page = sysconf(_SC_PAGESIZE);
	if (m->ticks <= 0)
		m->ticks = 100;
	if ((m->fd = open_listener(cfg->metrics.listen, &m->unix_path)) == -1) {
		int e = errno;

		free(m);
		errno = e;
		return NULL;
	}
	inet = m->unix_path == NULL;
	m->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0,
	    NULL, NULL, handle, m,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)m->fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)MAX_CONNECTIONS,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    (unsigned int)(inet ? PER_IP_LIMIT : 0),
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
	    MHD_OPTION_END);
	if (m->mhd == NULL ||
	    (info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_EPOLL_FD)) ==
	    NULL) {
		log_errorx("metrics: cannot start the HTTP server on %s",
		    cfg->metrics.listen);
		metrics_free(m);
		errno = EADDRINUSE;	/* a passing trouble, as far as we know */
		return NULL;
	}
	m->fd = -1;	/* MHD closes it when it stops */
	ev_io_init(&m->io, io_cb, info->epoll_fd, EV_READ);
	m->io.data = m;
	ev_io_start(loop, &m->io);
	ev_init(&m->timer, timer_cb);
	m->timer.data = m;
	log_info("metrics: serving /metrics on %s", cfg->metrics.listen);
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->mhd) {
		ev_io_stop(m->loop, &m->io);
		ev_timer_stop(m->loop, &m->timer);
		MHD_stop_daemon(m->mhd);
	}
	if (m->fd != -1)
		close(m->fd);
	if (m->unix_path) {
		unlink(m->unix_path);
		free(m->unix_path);
	}
	free(m);
}

void
metrics_reconfigure(struct metrics *m, const struct config *cfg)
{
	/* main keeps metrics.listen and the queues until a restart. */
	if (m != NULL)
		m->cfg = cfg;
}
