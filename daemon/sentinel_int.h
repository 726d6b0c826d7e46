/*
 * sentinel_int: what the files of the sentinel client share: its state,
 * a connection to one sentinel on its link, and what the subscription
 * tells the asking.
 */
#ifndef TASKWORKERD_SENTINEL_INT_H
#define TASKWORKERD_SENTINEL_INT_H

#include <stddef.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "link.h"
#include "netaddr.h"
#include "rconnect.h"
#include "sentinel.h"

#define NAMELEN		(NETADDR_HOSTLEN + 10)	/* "[host]:port" */

struct sentinel;

/* One connection to a sentinel (the ask, or the subscription). */
struct sconn {
	struct sentinel *s;
	struct link link;
	redisAsyncContext *ac;	/* NULL: closed */
	int idx;		/* the sentinel of the last locate */
};

struct saddr {
	char host[NETADDR_HOSTLEN + 1];
	int port;
	char name[NAMELEN];	/* as messages write it */
};

struct sentinel {
	struct ev_loop *loop;
	const struct config *cfg;
	struct resolver *res;	/* NULL: names go to hiredis */
	sentinel_fn *on_master;
	void *arg;
	struct saddr *addrs;
	int n;

	/* A round asks each sentinel once, from START, until one answers. */
	struct sconn ask;
	int asking;		/* a round is out */
	int start;		/* the sentinel that last answered */
	int tried;		/* sentinels that failed this round */
	int force;		/* sentinel_ask(): tell the next answer anyway */

	/* The subscription to +switch-master, on one sentinel. */
	struct sconn sub;
	int sub_next;		/* where it goes next */

	char host[NETADDR_HOSTLEN + 1];	/* the master known */
	int port;
	int known;
	char last_error[400];

	ev_timer defer;		/* on_master owed, on a turn of its own */
	int owed;
};

/* sentinel.c: the connections, whose owner's link says where to. */
void sc_init(struct sconn *c, struct sentinel *s, const char *name,
    const struct link_ops *ops);
int sc_locate(struct sconn *c, int idx, const char **names);
/*
 * Opens C to ADDRS[0] (the name of the last locate, resolved), sends
 * AUTH when the sentinels want it and ARGV with FN for its replies. -1
 * (WHY filled) when that failed at once.
 */
int sc_open(struct sconn *c, const char *const *addrs, int n, int argc,
    const char **argv, redisCallbackFn *fn, char *why, size_t len);
/* C of a callback's context, or NULL for one being torn down. */
struct sconn *sc_of(const redisAsyncContext *ac);
/* Closes C's context on purpose: link_stop() or link_ready() follows. */
void sc_close(struct sconn *c);
/* C failed: closed, and its link is told. */
void sc_drop(struct sconn *c, const char *why);
/* The link_ops' expired() of both. */
void sc_expired(void *arg, const char *why);

/* sentinel.c: the master and the asking. */
void sn_learn(struct sentinel *s, const char *host, int port, int force,
    const char *from);
int sn_parse_addr(const char *h, size_t hlen, const char *p, char *host,
    int *port);
/* A round now unless one is out (the subscription may have missed one). */
void sn_recheck(struct sentinel *s);

/* sentinel_sub.c: the subscription. */
void sub_init(struct sentinel *s);
/* Subscribes on sentinel IDX, unless up, on its way or waiting to retry. */
void sub_follow(struct sentinel *s, int idx);

#endif
