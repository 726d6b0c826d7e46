/*
 * rhello: what a Redis connection says first, described once.
 */
#include <stdio.h>

#include "rhello.h"

static void
add(struct rhello_cmd *c, const char *what, int optional, int argc,
    const char *a0, const char *a1, const char *a2)
{
	c->what = what;
	c->optional = optional;
	c->argc = argc;
	c->argv[0] = a0;
	c->argv[1] = a1;
	c->argv[2] = a2;
}

int
rhello(const struct config *cfg, const char *client_name,
    struct rhello_cmd cmds[RHELLO_MAX], struct rhello_buf *buf)
{
	int n = 0;

	if (cfg->redis.password[0]) {
		if (cfg->redis.username[0])
			add(&cmds[n++], "AUTH", 0, 3, "AUTH",
			    cfg->redis.username, cfg->redis.password);
		else
			add(&cmds[n++], "AUTH", 0, 2, "AUTH",
			    cfg->redis.password, NULL);
	}
	if (cfg->redis.database != 0) {
		snprintf(buf->db, sizeof(buf->db), "%d", cfg->redis.database);
		add(&cmds[n++], "SELECT", 0, 2, "SELECT", buf->db, NULL);
	}
	/* A name for CLIENT LIST; a server that refuses it is still usable. */
	snprintf(buf->name, sizeof(buf->name), "%s", client_name);
	add(&cmds[n++], "CLIENT SETNAME", 1, 3, "CLIENT", "SETNAME", buf->name);
	return n;
}
