/*
 * link: one connection's life, whatever the driver (hiredis, libpq):
 * where to, resolve, connect, handshake, ready, lost, backoff; its
 * timeouts, its once-per-outage log and its stats, as one state.
 */
#ifndef TASKWORKERD_LINK_H
#define TASKWORKERD_LINK_H

#include <ev.h>

#include "backoff.h"
#include "log.h"
#include "resolve.h"
#include "stats.h"

#define LINK_MAX_NAMES	8	/* host names of one connect (libpq: a,b,...) */

enum link_state {
	LINK_DOWN,		/* not started, or stopped */
	LINK_BACKOFF,		/* lost (or starting): the retry timer runs */
	LINK_RESOLVING,		/* its host names are being looked up */
	LINK_CONNECTING,	/* the driver opens its socket */
	LINK_HANDSHAKE,		/* the adapter's own setup (AUTH, PREPARE) */
	LINK_READY,
};

/*
 * What the adapter does for its link. The link calls these only from its
 * own timers and lookups, never inside a link_* call the adapter made
 * (next() alone, which calls nothing of the link).
 */
struct link_ops {
	/*
	 * Where the next connect goes: the host names to resolve (NAMES,
	 * up to LINK_MAX_NAMES; 0 for a unix socket). -1 when there is
	 * nowhere yet (WHY says why): the link backs off and asks again.
	 */
	int (*locate)(void *arg, const char **names, char *why, size_t len);
	/*
	 * Opens the driver's connection. ADDRS[i] is a numeric address of
	 * NAMES[i], a different one of its answers at every try, or NULL
	 * when that name had none (WHY then says why); without a resolver,
	 * the names themselves. Returns -1 (WHY filled) when it failed at
	 * once: the link backs off.
	 */
	int (*open)(void *arg, const char *const *addrs, int n, char *why,
	    size_t len);
	/*
	 * A timeout of the link's (connect, handshake or command) expired:
	 * the adapter closes its connection and calls link_lost().
	 */
	void (*expired)(void *arg, const char *why);
	/*
	 * Optional, for an adapter that walks a list of servers itself (the
	 * sentinels): the server of the last locate() failed or was lost,
	 * WHY (LEN bytes, which it may rewrite). 1: locate() the next one at
	 * once, WHY logged at debug only; 0: the list is done, and the link
	 * backs off and tells WHY once per outage. Not asked when another
	 * address of the same name is tried first. Runs inside link_lost()
	 * too.
	 */
	int (*next)(void *arg, char *why, size_t len);
};

struct link {
	struct ev_loop *loop;
	char name[48];			/* "redis command connection" */
	const struct link_ops *ops;
	void *arg;
	enum link_state state;
	struct resolver *res;		/* NULL: names go to the driver */
	struct resolve_req *rq[LINK_MAX_NAMES];
	const char *names[LINK_MAX_NAMES];	/* into namebuf */
	char namebuf[LINK_MAX_NAMES][256];
	char addrs[LINK_MAX_NAMES][RESOLVE_ADDRLEN];	/* "" if none */
	char rerr[200];			/* why a name had no address */
	int nnames, nleft;
	unsigned tries;			/* connects started: picks an address */
	int others;			/* addresses of the name not tried yet */
	ev_timer retry;
	ev_timer timeout;
	int connect_timeout_ms;
	int wait_ms;			/* of the answers awaited */
	struct backoff bo;
	struct outage outage;
	struct bstats *st;		/* NULL: not counted */
	int connected_once;
	/* "connected" logged only after an outage; not counted as one. */
	int quiet;
	char last_error[200];
};

/*
 * Sets L up, DOWN. ST (may be NULL) counts its errors and reconnects; RES
 * (may be NULL) resolves names off the loop.
 */
void link_init(struct link *l, struct ev_loop *loop, const char *name,
    const struct link_ops *ops, void *arg, struct resolver *res,
    struct bstats *st, int min_ms, int max_ms, int connect_timeout_ms);
/* New limits (a reload); the failures counted so far stay. */
void link_limits(struct link *l, int min_ms, int max_ms,
    int connect_timeout_ms);
/* Connects on the next loop turn (from DOWN or BACKOFF). */
void link_start(struct link *l);
/* Stops every timer and lookup: DOWN. The adapter closes its driver. */
void link_stop(struct link *l);

/*
 * The adapter's news. The driver's socket is open: HANDSHAKE, within
 * connect_timeout_ms, or MS for a handshake that is one command answered
 * within the command timeout (Sentinel's question).
 */
void link_handshake(struct link *l);
void link_handshake_wait(struct link *l, int ms);
/* Set up and usable: READY (logs, counts, resets the backoff). */
void link_ready(struct link *l);
/*
 * The connection is gone (the adapter has closed or lost its driver):
 * logs once per outage, counts, and retries after a backoff (AT_ONCE:
 * on the next turn, for a server known to have moved).
 */
void link_lost(struct link *l, const char *why, int at_once);

/*
 * Answers are awaited: ops->expired ("no answer within MS ms") after
 * MS + EXTRA_MS unless link_idle() or another link_wait() comes first.
 * Only while READY: until then connect_timeout_ms bounds each step.
 */
void link_wait(struct link *l, int ms, int extra_ms);
void link_idle(struct link *l);

static inline int
link_is_ready(const struct link *l)
{
	return l->state == LINK_READY;
}

/* Why it last went down, or "". */
static inline const char *
link_last_error(const struct link *l)
{
	return l->last_error;
}

#endif
