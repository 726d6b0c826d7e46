/*
 * ctlredis: the one synchronous Redis connection of taskworkerctl, opened
 * with the daemon's settings, and the key names of a queue.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ctl.h"
#include "netaddr.h"
#include "rhello.h"

static char last_error[1024];

void
ctl_errx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	fflush(stdout);
	fprintf(stderr, "taskworkerctl: %s\n", last_error);
}

const char *
ctl_last_error(void)
{
	return last_error;
}

struct timeval
ctl_ms_tv(int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	return tv;
}

static const char *
where(const struct ctl *c, char *buf, size_t size)
{
	if (c->cfg->redis.unix_socket[0])
		snprintf(buf, size, "%s", c->cfg->redis.unix_socket);
	else
		netaddr_format(buf, size, c->host, c->port);
	return buf;
}

/* A handshake step; 0, or 69 after a message. */
static int
handshake(struct ctl *c, const struct rhello_cmd *cmd)
{
	const char *argv[3] = { cmd->argv[0], cmd->argv[1], cmd->argv[2] };
	redisReply *r = redisCommandArgv(c->rc, cmd->argc, argv, NULL);
	const char *what = cmd->what;
	char at[300];
	int rv = 0;

	if (r == NULL) {
		ctl_errx("Redis at %s: %s: %s", where(c, at, sizeof(at)),
		    what, c->rc->errstr[0] ? c->rc->errstr : "no answer");
		return EXIT_UNAVAILABLE;
	}
	if (r->type == REDIS_REPLY_ERROR && !cmd->optional) {
		ctl_errx("Redis at %s: %s failed: %s",
		    where(c, at, sizeof(at)), what, r->str);
		rv = EXIT_UNAVAILABLE;
	}
	freeReplyObject(r);
	return rv;
}

int
ctl_connect(struct ctl *c)
{
	const struct config *cfg = c->cfg;
	struct timeval tv = ctl_ms_tv(cfg->redis.connect_timeout_ms);
	struct rhello_cmd hello[RHELLO_MAX];
	struct rhello_buf buf;
	char at[300];
	int rv, n;

	/* With sentinels, the master is wherever they say it is now. */
	if (cfg->redis.nsentinels > 0) {
		if ((rv = ctl_sentinel_master(cfg, c->host, sizeof(c->host),
		    &c->port)) != 0)
			return rv;
	} else {
		snprintf(c->host, sizeof(c->host), "%s", cfg->redis.host);
		c->port = cfg->redis.port;
	}
	if (cfg->redis.unix_socket[0])
		c->rc = redisConnectUnixWithTimeout(cfg->redis.unix_socket, tv);
	else
		c->rc = redisConnectWithTimeout(c->host, c->port, tv);
	if (c->rc == NULL || c->rc->err) {
		ctl_errx("cannot connect to Redis at %s: %s",
		    where(c, at, sizeof(at)),
		    c->rc ? c->rc->errstr : "out of memory");
		ctl_disconnect(c);
		return EXIT_UNAVAILABLE;
	}
	if (redisSetTimeout(c->rc, ctl_ms_tv(cfg->redis.command_timeout_ms))
	    != REDIS_OK) {
		ctl_errx("Redis at %s: cannot set the command timeout",
		    where(c, at, sizeof(at)));
		ctl_disconnect(c);
		return EXIT_UNAVAILABLE;
	}
	/* What the daemon says first, under a name of its own. */
	n = rhello(cfg, "taskworkerctl", hello, &buf);
	rv = 0;
	for (int i = 0; rv == 0 && i < n; i++)
		rv = handshake(c, &hello[i]);
	if (rv != 0)
		ctl_disconnect(c);
	return rv;
}

void
ctl_disconnect(struct ctl *c)
{
	if (c->rc)
		redisFree(c->rc);
	c->rc = NULL;
}

redisReply *
ctl_command(struct ctl *c, int argc, const char **argv, const size_t *lens)
{
	redisReply *r;

	if (c->rc == NULL || c->rc->err) {
		c->status = EXIT_UNAVAILABLE;
		return NULL;
	}
	r = redisCommandArgv(c->rc, argc, argv, lens);
	if (r == NULL) {
		ctl_errx("Redis: %s", c->rc->errstr[0] ? c->rc->errstr :
		    "connection lost");
		c->status = EXIT_UNAVAILABLE;
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		ctl_errx("Redis: %s: %s", argv[0], r->str);
		freeReplyObject(r);
		if (c->status == 0)
			c->status = EXIT_FAIL;
		return NULL;
	}
	return r;
}

redisReply *
ctl_eval(struct ctl *c, const char *script, int nkeys, const char **keys,
    int nargs, const char **args, const size_t *lens)
{
	int argc = 3 + nkeys + nargs;
	const char **argv = calloc(argc, sizeof(*argv));
	size_t *argl = calloc(argc, sizeof(*argl));
	char nk[16];
	redisReply *r = NULL;

	if (argv == NULL || argl == NULL) {
		ctl_errx("out of memory");
		c->status = EXIT_FAIL;
		goto out;
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVAL";
	argv[1] = script;
	argv[2] = nk;
	for (int i = 0; i < nkeys; i++)
		argv[3 + i] = keys[i];
	for (int i = 0; i < nargs; i++) {
		argv[3 + nkeys + i] = args[i];
		argl[3 + nkeys + i] = lens ? lens[i] : strlen(args[i]);
	}
	for (int i = 0; i < 3 + nkeys; i++)
		argl[i] = strlen(argv[i]);
	r = ctl_command(c, argc, argv, argl);
out:
	free(argv);
	free(argl);
	return r;
}

long long
ctl_now_ms(struct ctl *c)
{
	const char *argv[] = { "TIME" };
	redisReply *r = ctl_command(c, 1, argv, NULL);
	long long ms = -1;

	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_STRING &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		ms = strtoll(r->element[0]->str, NULL, 10) * 1000 +
		    strtoll(r->element[1]->str, NULL, 10) / 1000;
	else {
		ctl_errx("Redis: TIME: unexpected reply");
		c->status = EXIT_FAIL;
	}
	freeReplyObject(r);
	return ms;
}
