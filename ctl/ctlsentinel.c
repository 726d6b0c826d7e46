/*
 * ctlsentinel: where the Redis master is, asked of the config's sentinels
 * in turn, synchronously and within the config's timeouts, before
 * taskworkerctl connects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ctl.h"
#include "netaddr.h"

/* A command to sentinel RC; its reply, or NULL with WHY filled. */
static redisReply *
ask(redisContext *rc, int argc, const char **argv, char *why, size_t len)
{
	redisReply *r = redisCommandArgv(rc, argc, argv, NULL);

	if (r == NULL) {
		snprintf(why, len, "%s", rc->errstr[0] ? rc->errstr :
		    "no answer");
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(why, len, "%s failed: %s", argv[0], r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/*
 * Asks the sentinel at HOST:PORT; 0 with the master in MHOST and *MPORT,
 * or -1 with WHY filled.
 */
static int
ask_one(const struct config *cfg, const char *host, int port, char *mhost,
    size_t size, int *mport, char *why, size_t len)
{
	const char *auth[3] = { "AUTH" };
	const char *get[] = { "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
	    cfg->redis.sentinel_master };
	redisContext *rc;
	redisReply *r = NULL;
	char *end;
	long v;
	int n = 1, rv = -1;

	rc = redisConnectWithTimeout(host, port,
	    ctl_ms_tv(cfg->redis.connect_timeout_ms));
	if (rc == NULL || rc->err) {
		snprintf(why, len, "%s", rc ? rc->errstr : "out of memory");
		goto out;
	}
	if (redisSetTimeout(rc, ctl_ms_tv(cfg->redis.command_timeout_ms)) !=
	    REDIS_OK) {
		snprintf(why, len, "cannot set the command timeout");
		goto out;
	}
	if (cfg->redis.sentinel_password[0] != '\0') {
		if (cfg->redis.sentinel_username[0] != '\0')
			auth[n++] = cfg->redis.sentinel_username;
		auth[n++] = cfg->redis.sentinel_password;
		if ((r = ask(rc, n, auth, why, len)) == NULL)
			goto out;
		freeReplyObject(r);
	}
	if ((r = ask(rc, 3, get, why, len)) == NULL)
		goto out;
	if (r->type == REDIS_REPLY_NIL) {
		snprintf(why, len, "does not know master %s",
		    cfg->redis.sentinel_master);
		goto out;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[0]->len == 0 || r->element[0]->len >= size) {
		snprintf(why, len, "unexpected answer to SENTINEL "
		    "GET-MASTER-ADDR-BY-NAME");
		goto out;
	}
	v = strtol(r->element[1]->str, &end, 10);
	if (*end != '\0' || v < 1 || v > 65535) {
		snprintf(why, len, "answered a port of %.20s",
		    r->element[1]->str);
		goto out;
	}
	memcpy(mhost, r->element[0]->str, r->element[0]->len + 1);
	*mport = (int)v;
	rv = 0;
out:
	if (r != NULL)
		freeReplyObject(r);
	if (rc != NULL)
		redisFree(rc);
	return rv;
}

int
ctl_sentinel_master(const struct config *cfg, char *host, size_t size,
    int *port)
{
	char shost[NETADDR_HOSTLEN + 1], name[NETADDR_HOSTLEN + 10];
	char why[300], all[1024] = "";
	const char *bad;
	size_t n = 0;
	int sport;

	for (int i = 0; i < cfg->redis.nsentinels; i++) {
		bad = netaddr_host_port(cfg->redis.sentinels[i], shost,
		    sizeof(shost), &sport);
		if (bad != NULL)	/* config.c refuses it first */
			snprintf(why, sizeof(why), "%s", bad);
		else if (ask_one(cfg, shost, sport, host, size, port, why,
		    sizeof(why)) == 0)
			return 0;
		if (n < sizeof(all))
			n += (size_t)snprintf(all + n, sizeof(all) - n,
			    "%s%s: %s", n > 0 ? "; " : "",
			    bad ? cfg->redis.sentinels[i] :
			    netaddr_format(name, sizeof(name), shost, sport),
			    why);
	}
	ctl_errx("no sentinel answered for master %s: %s",
	    cfg->redis.sentinel_master, all);
	return EXIT_UNAVAILABLE;
}
