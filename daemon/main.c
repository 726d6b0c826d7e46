/*
 * main: the command line, startup, signals as loop events, reload and the
 * order of shutdown. Everything else happens in the worker.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <ev.h>

#include "config.h"
#include "credentials.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "stats.h"
#include "worker.h"

#define EXIT_USAGE	64
#define EXIT_UNAVAILABLE 69
#define EXIT_SOFTWARE	70
#define EXIT_CONFIG	78

struct daemon {
	struct ev_loop *loop;
	const char *path;
	int verbose;
	struct config *cfg;
	struct worker *worker;
	struct stats *stats;
	struct metrics *metrics;
	int exit_code;
	int stop_requests;
	ev_signal sigterm, sigint, sighup;
	ev_timer status;
	ev_timer watchdog;
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: taskworkerd [-c FILE] [-t] [-v] [-V] [-h]\n"
	    "  -c, --config FILE   config file (default %s)\n"
	    "  -t, --check-config  check the config file and exit\n"
	    "  -v, --verbose       log at debug level, to stderr as well\n"
	    "  -V, --version       print the version and exit\n"
	    "  -h, --help          this text\n", TASKWORKERD_DEFAULT_CONFIG);
}

static void
print_error(void *arg, const char *line)
{
	(void)arg;
	fprintf(stderr, "%s\n", line);
}

static void
log_config_error(void *arg, const char *line)
{
	(void)arg;
	log_errorx("%s", line);
}

static void
on_exit_request(void *arg, int code)
{
	struct daemon *d = arg;

	d->exit_code = code;
	ev_break(d->loop, EVBREAK_ALL);
}

static void
apply_log(const struct daemon *d, const struct config *cfg)
{
	log_reconfigure(cfg->log.ident, cfg->log.facility,
	    d->verbose ? LOG_DEBUG : cfg->log.level);
}

/* A key that only a restart may change keeps its running value. */
static void
keep_fixed(struct config *next, const struct config *cur)
{
	int same = next->redis.nqueues == cur->redis.nqueues;

	for (int i = 0; same && i < cur->redis.nqueues; i++)
		same = strcmp(next->redis.queues[i], cur->redis.queues[i]) == 0;
	if (!same) {
		log_warnx("reload: redis.queues changes only on restart; "
		    "keeping the running list");
		for (int i = 0; i < next->redis.nqueues; i++)
			free(next->redis.queues[i]);
		free(next->redis.queues);
		next->redis.nqueues = cur->redis.nqueues;
		next->redis.queues = calloc(cur->redis.nqueues + 1,
		    sizeof(char *));
		for (int i = 0; next->redis.queues &&
		    i < cur->redis.nqueues; i++)
			next->redis.queues[i] = strdup(cur->redis.queues[i]);
	}
	if (strcmp(next->worker.id, cur->worker.id) != 0) {
		log_warnx("reload: worker.id changes only on restart; "
		    "keeping \"%s\"", cur->worker.id);
		free(next->worker.id);
		next->worker.id = strdup(cur->worker.id);
	}
	if (strcmp(next->metrics.listen, cur->metrics.listen) != 0) {
		log_warnx("reload: metrics.listen changes only on restart; "
		    "keeping \"%s\"", cur->metrics.listen);
		free(next->metrics.listen);
		next->metrics.listen = strdup(cur->metrics.listen);
	}
}

/* Where the Redis of CFG is, for messages. */
static void
redis_where(const struct config *cfg, char *buf, size_t size)
{
	if (cfg->redis.unix_socket[0] != '\0')
		snprintf(buf, size, "%s db %d", cfg->redis.unix_socket,
		    cfg->redis.database);
	else
		snprintf(buf, size, "%s port %d db %d", cfg->redis.host,
		    cfg->redis.port, cfg->redis.database);
}

/*
 * A reload that changes what the tasks do, or the servers they live on,
 * is said loudly: a file edited for one thing may have changed another.
 */
static void
warn_big_changes(const struct config *next, const struct config *cur)
{
	char a[1024], b[1024];

	if (next->handler.type != cur->handler.type)
		log_warnx("reload: handler.type changes from %s to %s for the "
		    "tasks that start from now on",
		    config_handler_name(cur->handler.type),
		    config_handler_name(next->handler.type));
	redis_where(cur, a, sizeof(a));
	redis_where(next, b, sizeof(b));
	if (strcmp(a, b) != 0)
		log_warnx("reload: the Redis server changes from %s to %s", a,
		    b);
	if (strcmp(cur->postgres.conninfo, next->postgres.conninfo) != 0) {
		config_redact(cur->postgres.conninfo, a, sizeof(a));
		config_redact(next->postgres.conninfo, b, sizeof(b));
		log_warnx("reload: postgres.conninfo changes from \"%s\" to "
		    "\"%s\"", a, b);
	}
}

static void
reload(struct daemon *d)
{
	struct config *next;
	char gone[256];
	int n;

	notify_send("RELOADING=1");
	log_info("reloading %s", d->path);
	next = config_load(d->path, log_config_error, NULL);
	if (next == NULL) {
		log_errorx("reload failed: keeping the running configuration");
	} else if ((n = config_sections_left_out(next, d->cfg, gone,
	    sizeof(gone))) > 0) {
		/* Cut short or emptied: its defaults are not what was meant. */
		log_errorx("reload refused: %s has no %s section%s, which the "
		    "running configuration has (a file cut short or emptied?); "
		    "keeping the running configuration", d->path, gone,
		    n > 1 ? "s" : "");
		config_free(next);
	} else {
		warn_big_changes(next, d->cfg);
		keep_fixed(next, d->cfg);
		if (next->redis.queues == NULL || next->worker.id == NULL ||
		    next->metrics.listen == NULL) {
			log_errorx("reload: out of memory, keeping the "
			    "running configuration");
			config_free(next);
		} else {
			apply_log(d, next);
			worker_reconfigure(d->worker, next);
			metrics_reconfigure(d->metrics, next);
			config_free(d->cfg);
			d->cfg = next;
			log_info("reloaded: delay %d ms, concurrency %d, log "
			    "level %s", next->worker.delay_ms,
			    next->worker.concurrency,
			    config_level_name(next->log.level));
		}
	}
	notify_send("READY=1");
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	(void)loop;
	(void)revents;
	if (w->signum == SIGHUP) {
		reload(d);
		return;
	}
	if (d->stop_requests++ == 0) {
		notify_send("STOPPING=1");
		log_info("received %s, stopping", strsignal(w->signum));
		worker_stop(d->worker, 0);
	} else {
		log_info("received %s again, stopping now",
		    strsignal(w->signum));
		worker_stop(d->worker, 1);
	}
}

static void
status_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = w->data;

	(void)loop;
	(void)revents;
	worker_update_status(d->worker);
}

static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	notify_send("WATCHDOG=1");
}

static void
signal_watch(struct daemon *d, ev_signal *w, int signum)
{
	ev_signal_init(w, signal_cb, signum);
	w->data = d;
	ev_signal_start(d->loop, w);
}

/*
 * Open files up to the hard limit: each request of an http handler holds
 * a socket, and systemd's soft limit of 1024 would cap max_connections.
 */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("cannot raise the open files limit");
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon d = { .path = TASKWORKERD_DEFAULT_CONFIG };
	int check = 0, ch;
	uint64_t wd;
	sigset_t stop;

	/*
	 * A stop or reload that comes while the configuration is read waits
	 * for its watcher instead of ending the process by the default
	 * action.
	 */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	sigprocmask(SIG_BLOCK, &stop, NULL);

	while ((ch = getopt_long(argc, argv, "c:tvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			d.path = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'v':
			d.verbose = 1;
			break;
		case 'V':
			printf("taskworkerd %s\n", TASKWORKERD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "taskworkerd: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}

	/* Before any thread: libcurl's resolver runs in threads of its own. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "taskworkerd: libcurl cannot start\n");
		return EXIT_SOFTWARE;
	}
	d.cfg = config_load(d.path, print_error, NULL);
	if (d.cfg == NULL)
		return EXIT_CONFIG;
	if (check) {
		char gone[256];
		int n;

		/* Not an error, but a reload of it would be refused. */
		if ((n = config_sections_left_out(d.cfg, NULL, gone,
		    sizeof(gone))) > 0)
			fprintf(stderr, "%s: note: no %s section%s: the "
			    "defaults apply; a reload that leaves out a section "
			    "the running file has is refused\n", d.path, gone,
			    n > 1 ? "s" : "");
		printf("configuration OK\n");
		config_free(d.cfg);
		return 0;
	}

	log_open(d.cfg->log.ident, d.cfg->log.facility,
	    d.verbose ? LOG_DEBUG : d.cfg->log.level, d.verbose);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	notify_init();

	d.loop = ev_default_loop(EVFLAG_AUTO);
	if (d.loop == NULL) {
		log_errorx("cannot start the event loop");
		return EXIT_SOFTWARE;
	}
	signal_watch(&d, &d.sigterm, SIGTERM);
	signal_watch(&d, &d.sigint, SIGINT);
	signal_watch(&d, &d.sighup, SIGHUP);
	sigprocmask(SIG_UNBLOCK, &stop, NULL);	/* a signal held comes now */

	log_info("starting taskworkerd %s: worker %s, queues %d, "
	    "concurrency %d, delay %d ms", TASKWORKERD_VERSION, d.cfg->worker.id,
	    d.cfg->redis.nqueues, d.cfg->worker.concurrency,
	    d.cfg->worker.delay_ms);
	if (credentials_export_pgpass(getenv("CREDENTIALS_DIRECTORY")) == 1)
		log_info("PGPASSFILE: the credential %s", CRED_PGPASS);
	d.stats = stats_new(d.cfg->redis.nqueues);
	if (d.stats)
		d.worker = worker_new(d.loop, d.cfg, d.stats, on_exit_request,
		    &d);
	if (d.worker == NULL) {
		log_errorx("cannot start: out of memory");
		return EXIT_SOFTWARE;
	}
	if (d.cfg->metrics.listen[0] != '\0' &&
	    (d.metrics = metrics_new(d.loop, d.cfg, d.stats, d.worker)) ==
	    NULL) {
		/* In use may pass (a restart retries); anything else will not. */
		int code = errno == EADDRINUSE ? EXIT_UNAVAILABLE : EXIT_CONFIG;

		worker_free(d.worker);
		stats_free(d.stats);
		config_free(d.cfg);
		return code;
	}

	ev_timer_init(&d.status, status_cb, 1., 1.);
	d.status.data = &d;
	ev_timer_start(d.loop, &d.status);
	wd = notify_watchdog_usec();
	if (wd > 0) {
		ev_timer_init(&d.watchdog, watchdog_cb, wd / 2e6, wd / 2e6);
		ev_timer_start(d.loop, &d.watchdog);
		notify_send("WATCHDOG=1");
	}
	notify_send("READY=1");

	ev_run(d.loop, 0);

	if (d.stop_requests == 0)
		notify_send("STOPPING=1");	/* leaving for another reason */
	ev_timer_stop(d.loop, &d.status);
	ev_timer_stop(d.loop, &d.watchdog);
	metrics_free(d.metrics);
	worker_free(d.worker);
	stats_free(d.stats);
	ev_signal_stop(d.loop, &d.sigterm);
	ev_signal_stop(d.loop, &d.sigint);
	ev_signal_stop(d.loop, &d.sighup);
	ev_loop_destroy(d.loop);
	log_info("exiting with status %d", d.exit_code);
	config_free(d.cfg);
	notify_close();
	log_close();
	return d.exit_code;
}
