/*
 * rhello: what a Redis connection says first (AUTH, SELECT, CLIENT
 * SETNAME), described once for the daemon and for taskworkerctl.
 */
#ifndef TASKWORKERD_RHELLO_H
#define TASKWORKERD_RHELLO_H

#include "config.h"

#define RHELLO_MAX	3

struct rhello_cmd {
	const char *what;	/* as a log line names it: "AUTH" */
	int argc;
	const char *argv[3];
	int optional;		/* an error answer is no reason to give up */
};

/* The strings the commands point into. */
struct rhello_buf {
	char db[16];
	char name[300];
};

/*
 * Fills CMDS with what a connection to CFG's Redis sends before anything
 * else, naming itself CLIENT_NAME (no spaces); returns how many.
 */
int rhello(const struct config *cfg, const char *client_name,
    struct rhello_cmd cmds[RHELLO_MAX], struct rhello_buf *buf);

#endif
