/*
 * evares: a c-ares channel driven by a libev loop, as pgbouncer drives it:
 * an ev_io for each socket c-ares opens, one ev_timer from ares_timeout.
 */
#ifndef TASKWORKERD_EVARES_H
#define TASKWORKERD_EVARES_H

#include <sys/queue.h>

#include <ares.h>
#include <ev.h>

struct evares_sock;

struct evares {
	struct ev_loop *loop;
	ares_channel chan;
	ev_timer timer;			/* c-ares' next timeout */
	LIST_HEAD(, evares_sock) socks;
};

/*
 * Opens A's channel with OPTS and MASK (its socket callback is ours) and
 * the library. Returns an ares status; A is set up only on ARES_SUCCESS.
 */
int evares_open(struct evares *a, struct ev_loop *loop,
    struct ares_options *opts, int mask);
/* Call after every ares_* call that may start a query: rearms the timer. */
void evares_arm(struct evares *a);
/* ares_destroy (every query's callback runs, ARES_EDESTRUCTION), then ours. */
void evares_close(struct evares *a);

#endif
