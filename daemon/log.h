/*
 * log: messages to syslog, and to stderr as well with -v or before the
 * daemon runs. log_warn/log_error add strerror(errno); the x forms do not.
 */
#ifndef TASKWORKERD_LOG_H
#define TASKWORKERD_LOG_H

#include <syslog.h>

#define PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))

/* Start logging to syslog; STDERR nonzero also copies every line there. */
void log_open(const char *ident, int facility, int level, int to_stderr);
/* Change the level (and syslog identity) after a reload. */
void log_reconfigure(const char *ident, int facility, int level);
void log_close(void);

void log_debug(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_info(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_notice(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_warn(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_warnx(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_error(const char *fmt, ...) PRINTFLIKE(1, 2);
void log_errorx(const char *fmt, ...) PRINTFLIKE(1, 2);

/*
 * A connection's outage as the log tells it: a warning when it starts and
 * again only when its reason changes, not one per retry.
 */
struct outage {
	int down;
	char why[256];
};

/* Records WHY; nonzero when it is news that deserves a warning. */
int outage_note(struct outage *o, const char *why);
/* The connection is back; nonzero when it had been down. */
int outage_end(struct outage *o);

#endif
