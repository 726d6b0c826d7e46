/*
 * taskworkerctl: the operator's command line for taskworkerd. It reads
 * the daemon's config, opens one Redis connection and runs one command.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "taskid.h"

enum ids { IDS_NONE, IDS_OR_ALL, IDS_REQUIRED };

static const struct command {
	const char *name;
	const char *sub;
	int (*fn)(struct ctl *);
	enum ids ids;
	int limit;		/* takes --limit */
} commands[] = {
	{ "dead", "list", cmd_dead_list, IDS_NONE, 1 },
	{ "dead", "requeue", cmd_dead_requeue, IDS_OR_ALL, 0 },
	{ "dead", "purge", cmd_dead_purge, IDS_OR_ALL, 0 },
	{ "retry", "list", cmd_retry_list, IDS_NONE, 1 },
	{ "retry", "now", cmd_retry_now, IDS_REQUIRED, 0 },
	{ "scheduled", "list", cmd_scheduled_list, IDS_NONE, 1 },
	{ "pause", NULL, cmd_pause, IDS_NONE, 0 },
	{ "resume", NULL, cmd_resume, IDS_NONE, 0 },
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: taskworkerctl [-c FILE] [-j] [-q QUEUE] COMMAND [ARGS]\n"
	    "       taskworkerctl -h | -V\n"
	    "commands (QUEUE may be left out when the config has one queue):\n"
	    "  status [QUEUE...]                  sizes, pause, workers with "
	    "heartbeats;\n"
	    "                                     all queues of the config "
	    "by default\n"
	    "  dead list [QUEUE] [-n N]           dead ids, oldest first, when "
	    "and why\n"
	    "                                     (-n: the newest N)\n"
	    "  dead requeue [QUEUE] (ID...|-a)    back to the tail of QUEUE, "
	    "reason and\n"
	    "                                     attempt count cleared\n"
	    "  dead purge [QUEUE] (ID...|-a)      forget dead ids and their "
	    "reasons\n"
	    "  retry list [QUEUE] [-n N]          ids waiting for their next "
	    "attempt, due\n"
	    "                                     time (local), failed "
	    "attempts (-n: first N)\n"
	    "  retry now [QUEUE] ID...            make waiting retries due "
	    "at once\n"
	    "  scheduled list [QUEUE] [-n N]      ids scheduled for later, "
	    "due time (local)\n"
	    "  pause [QUEUE]                      daemons take no new ids "
	    "from QUEUE;\n"
	    "                                     tasks in flight finish\n"
	    "  resume [QUEUE]                     daemons take ids from "
	    "QUEUE again\n"
	    "options:\n"
	    "  -c, --config FILE   the daemon's config file (default %s)\n"
	    "  -j, --json          print JSON on stdout instead of text\n"
	    "  -q, --queue QUEUE   the queue; every argument is then an ID\n"
	    "  -n, --limit N       list at most N ids (0, the default: all)\n"
	    "  -a, --all           requeue or purge every id dead when the "
	    "command starts\n"
	    "  -V, --version       print the version and exit\n"
	    "  -h, --help          this text\n"
	    "A first argument that names a queue of the config, or is not a "
	    "task id, is\n"
	    "the QUEUE. A queue not in the config is used, with a warning.\n"
	    "exit status: 0 done; 1 an ID named was not found (the others were "
	    "done) or\n"
	    "another error; 64 bad command line; 69 Redis unreachable or "
	    "refused AUTH or\n"
	    "SELECT; 78 bad config.\n", TASKWORKERD_DEFAULT_CONFIG);
}

static void
short_usage(void)
{
	fprintf(stderr, "usage: taskworkerctl [-c FILE] [-j] [-q QUEUE] "
	    "COMMAND [ARGS] (-h: the commands)\n");
}

static int
bad_usage(const char *fmt, const char *arg)
{
	fflush(stdout);
	fputs("taskworkerctl: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\n", stderr);
	short_usage();
	return EXIT_USAGE;
}

static void
print_error(void *arg, const char *line)
{
	(void)arg;
	fprintf(stderr, "%s\n", line);
}

static int
configured(const struct config *cfg, const char *queue)
{
	for (int i = 0; i < cfg->redis.nqueues; i++)
		if (strcmp(cfg->redis.queues[i], queue) == 0)
			return 1;
	return 0;
}

static int
is_task_id(const char *s)
{
	int64_t id;
	const char *why;

	return taskid_parse(s, strlen(s), &id, &why) == 0;
}

/* The queue when none was named: the config's only one. 0 or 64. */
static int
default_queue(struct ctl *c)
{
	const struct config *cfg = c->cfg;

	if (cfg->redis.nqueues == 1) {
		c->queue = cfg->redis.queues[0];
		return 0;
	}
	fflush(stdout);
	fprintf(stderr, "taskworkerctl: %s has %d queues (", cfg->path,
	    cfg->redis.nqueues);
	for (int i = 0; i < cfg->redis.nqueues; i++)
		fprintf(stderr, "%s%s", i ? ", " : "", cfg->redis.queues[i]);
	fprintf(stderr, "): name one\n");
	return EXIT_USAGE;
}

static void
warn_unknown(const struct ctl *c, const char *queue)
{
	if (!configured(c->cfg, queue))
		ctl_errx("warning: queue %s is not in redis.queues of %s",
		    queue, c->cfg->path);
}

/*
 * A queue named on the command line that would share a key with a queue
 * of the config (or another one named) is refused: "dead requeue
 * jobs:dead -a" would push jobs:dead:dead onto the dead list of "jobs".
 * 0 or 64 after a message.
 */
static int
check_keys(const struct ctl *c, char **queues, int nqueues)
{
	const struct config *cfg = c->cfg;
	char why[600];

	for (int i = 0; i < nqueues; i++) {
		for (int j = 0; j < cfg->redis.nqueues; j++)
			if (qkeys_collide(queues[i], cfg->redis.queues[j], why,
			    sizeof(why))) {
				ctl_errx("queue %s would share a key with "
				    "queue %s of %s: %s", queues[i],
				    cfg->redis.queues[j], cfg->path, why);
				return EXIT_USAGE;
			}
		for (int j = 0; j < i; j++)
			if (qkeys_collide(queues[i], queues[j], why,
			    sizeof(why))) {
				ctl_errx("queues %s and %s would share a key: "
				    "%s", queues[i], queues[j], why);
				return EXIT_USAGE;
			}
	}
	return 0;
}

/* Drops repeated IDs, keeping the first of each. */
static void
dedup_ids(struct ctl *c)
{
	int n = 0;

	for (int i = 0; i < c->nids; i++) {
		int j;

		for (j = 0; j < n; j++)
			if (strcmp(c->ids[j], c->ids[i]) == 0)
				break;
		if (j == n)
			c->ids[n++] = c->ids[i];
	}
	c->nids = n;
}

/*
 * Sorts out QUEUE and IDs from the arguments after the command words;
 * 0 or 64 after a message.
 */
static int
resolve(struct ctl *c, const struct command *cmd, char **rest, int nrest,
    const char *qopt)
{
	int rv;

	if (qopt == NULL && nrest > 0 && (cmd->ids == IDS_NONE ||
	    configured(c->cfg, rest[0]) || !is_task_id(rest[0]))) {
		qopt = rest[0];
		rest++;
		nrest--;
	}
	if (qopt == NULL) {
		if ((rv = default_queue(c)) != 0)
			return rv;
	} else {
		if (qopt[0] == '\0')
			return bad_usage("%san empty queue name", "");
		c->queue = qopt;
		if ((rv = check_keys(c, (char **)&c->queue, 1)) != 0)
			return rv;
		warn_unknown(c, qopt);
	}
	if (cmd->ids == IDS_NONE && nrest > 0)
		return bad_usage("unexpected argument '%s'", rest[0]);
	c->ids = rest;
	c->nids = nrest;
	if (cmd->ids != IDS_NONE && !c->all && nrest == 0)
		return bad_usage("name the IDs%s", cmd->ids == IDS_OR_ALL ?
		    " (or --all)" : "");
	if (c->all && nrest > 0)
		return bad_usage("--all and the ID '%s' exclude each other",
		    rest[0]);
	dedup_ids(c);
	return 0;
}

/* Connects and runs CMD (NULL: status of QUEUES); its exit status. */
static int
run(struct ctl *c, const struct command *cmd, char **queues, int nqueues)
{
	int rv = ctl_connect(c);

	if (rv != 0)
		return rv;
	return cmd ? cmd->fn(c) : cmd_status(c, queues, nqueues);
}

/*
 * With --json, what a command prints is held until it is whole: a command
 * stopped halfway (a key of the wrong type, a lost connection) prints
 * {"error": "..."} instead of half an object. Text goes out as it comes.
 */
static int
run_json(struct ctl *c, const struct command *cmd, char **queues,
    int nqueues)
{
	FILE *out = stdout, *mem;
	char *buf = NULL;
	size_t len = 0;
	int rv;

	if (!c->json)
		return run(c, cmd, queues, nqueues);
	if ((mem = open_memstream(&buf, &len)) == NULL) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	stdout = mem;
	rv = run(c, cmd, queues, nqueues);
	stdout = out;
	if (fclose(mem) != 0 || buf == NULL) {
		free(buf);
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	if (c->whole)
		fwrite(buf, 1, len, stdout);
	else {
		fputs("{\"error\":", stdout);
		escape_json(stdout, ctl_last_error(),
		    strlen(ctl_last_error()));
		fputs("}\n", stdout);
		if (rv == 0)
			rv = EXIT_FAIL;
	}
	free(buf);
	return rv;
}

static const struct command *
find_command(char **args, int nargs, int *used)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *cmd = &commands[i];

		if (strcmp(args[0], cmd->name) != 0)
			continue;
		if (cmd->sub == NULL) {
			*used = 1;
			return cmd;
		}
		if (nargs > 1 && strcmp(args[1], cmd->sub) == 0) {
			*used = 2;
			return cmd;
		}
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "queue", required_argument, NULL, 'q' },
		{ "limit", required_argument, NULL, 'n' },
		{ "all", no_argument, NULL, 'a' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl c = { 0 };
	const struct command *cmd = NULL;
	const char *path = TASKWORKERD_DEFAULT_CONFIG, *qopt = NULL;
	struct config *cfg;
	char **args, *end;
	int nargs, used = 0, status = 0, has_limit = 0, ch, rv;

	while ((ch = getopt_long(argc, argv, "c:jq:n:aVh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			c.json = 1;
			break;
		case 'q':
			qopt = optarg;
			break;
		case 'n':
			errno = 0;
			c.limit = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || c.limit < 0)
				return bad_usage("--limit wants a number of "
				    "ids, not '%s'", optarg);
			has_limit = 1;
			break;
		case 'a':
			c.all = 1;
			break;
		case 'V':
			printf("taskworkerctl %s\n", TASKWORKERD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			short_usage();
			return EXIT_USAGE;
		}
	}
	args = argv + optind;
	nargs = argc - optind;
	if (nargs == 0)
		return bad_usage("%sno command given", "");
	if (strcmp(args[0], "status") == 0)
		used = 1;
	else if ((cmd = find_command(args, nargs, &used)) == NULL)
		return bad_usage(nargs > 1 && (strcmp(args[0], "dead") == 0 ||
		    strcmp(args[0], "retry") == 0 ||
		    strcmp(args[0], "scheduled") == 0) ?
		    "unknown command '%s ...'" : "unknown command '%s'",
		    args[0]);
	if (c.all && (cmd == NULL || cmd->ids != IDS_OR_ALL))
		return bad_usage("--all goes with dead requeue and dead "
		    "purge%s", "");
	if (has_limit && (cmd == NULL || !cmd->limit))
		return bad_usage("--limit goes with the list commands%s", "");

	if ((cfg = config_load(path, print_error, NULL)) == NULL)
		return EXIT_CONFIG;
	c.cfg = cfg;
	args += used;
	nargs -= used;
	if (cmd == NULL) {
		/* status: the queues named, or every queue of the config. */
		if (qopt != NULL) {
			if (nargs > 0)
				rv = bad_usage("unexpected argument '%s'",
				    args[0]);
			else
				rv = 0;
			args = (char **)&qopt;
			nargs = 1;
		} else if (nargs == 0) {
			args = cfg->redis.queues;
			nargs = cfg->redis.nqueues;
			rv = 0;
		} else
			rv = 0;
		if (rv == 0)
			rv = check_keys(&c, args, nargs);
		for (int i = 0; rv == 0 && i < nargs; i++)
			warn_unknown(&c, args[i]);
	} else
		rv = resolve(&c, cmd, args, nargs, qopt);
	if (rv == 0) {
		status = run_json(&c, cmd, args, nargs);
		if (fflush(stdout) == EOF || ferror(stdout)) {
			ctl_errx("cannot write the output: %s",
			    strerror(errno));
			if (status == 0)
				status = EXIT_FAIL;
		}
		rv = status;
	}
	ctl_disconnect(&c);
	config_free(cfg);
	return rv;
}
