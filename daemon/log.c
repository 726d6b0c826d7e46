/*
 * log: syslog with an optional copy on stderr; errno is preserved so a
 * caller can log and then still look at it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>

#include "log.h"

static int cur_level = LOG_INFO;
static int use_stderr = 1;
static int use_syslog;
static char *cur_ident;

void
log_open(const char *ident, int facility, int level, int to_stderr)
{
	free(cur_ident);
	cur_ident = strdup(ident);
	cur_level = level;
	use_stderr = to_stderr;
	use_syslog = 1;
	openlog(cur_ident, LOG_PID | LOG_NDELAY, facility);
}

void
log_reconfigure(const char *ident, int facility, int level)
{
	cur_level = level;
	if (!use_syslog)
		return;
	/* openlog keeps the pointer: the old identity lives until then. */
	closelog();
	free(cur_ident);
	cur_ident = strdup(ident);
	openlog(cur_ident, LOG_PID | LOG_NDELAY, facility);
}

void
log_close(void)
{
	if (use_syslog)
		closelog();
	use_syslog = 0;
	free(cur_ident);
	cur_ident = NULL;
}

static const char *
prio_name(int prio)
{
	switch (prio) {
	case LOG_DEBUG: return "debug";
	case LOG_INFO: return "info";
	case LOG_NOTICE: return "notice";
	case LOG_WARNING: return "warning";
	default: return "error";
	}
}

static void
vlog(int prio, int with_errno, const char *fmt, va_list ap)
{
	int saved = errno;
	char msg[8192];		/* a handler line of 4 KiB, escaped, fits */
	int n;

	if (prio > cur_level)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (with_errno && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
	if (use_syslog)
		syslog(prio, "%s", msg);
	if (use_stderr) {
		struct timeval tv;
		struct tm tm;
		char ts[32];

		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld %s[%s]: %s\n", ts,
		    (long)(tv.tv_usec / 1000),
		    cur_ident ? cur_ident : "taskworkerd", prio_name(prio), msg);
	}
	errno = saved;
}

#define LOGFN(name, prio, with_errno)			\
	void name(const char *fmt, ...)			\
	{						\
		va_list ap;				\
		va_start(ap, fmt);			\
		vlog(prio, with_errno, fmt, ap);	\
		va_end(ap);				\
	}

LOGFN(log_debug, LOG_DEBUG, 0)
LOGFN(log_info, LOG_INFO, 0)
LOGFN(log_notice, LOG_NOTICE, 0)
LOGFN(log_warn, LOG_WARNING, 1)
LOGFN(log_warnx, LOG_WARNING, 0)
LOGFN(log_error, LOG_ERR, 1)
LOGFN(log_errorx, LOG_ERR, 0)

int
outage_note(struct outage *o, const char *why)
{
	int news = !o->down || strcmp(o->why, why) != 0;

	o->down = 1;
	snprintf(o->why, sizeof(o->why), "%s", why);
	return news;
}

int
outage_end(struct outage *o)
{
	int was = o->down;

	o->down = 0;
	return was;
}
