/*
 * evares: a c-ares channel driven by a libev loop: c-ares tells which
 * sockets it waits on (ev_io each) and when it next times out (ev_timer).
 */
#include <stdlib.h>

#include "evares.h"
#include "log.h"

#define EVARES_MIN_WAIT	0.001	/* s: c-ares' clock is in ms */

/* A c-ares socket, watched for what c-ares wants of it. */
struct evares_sock {
	ev_io io;			/* first: the callback casts */
	struct evares *a;
	LIST_ENTRY(evares_sock) link;
};

void
evares_arm(struct evares *a)
{
	struct timeval tv, *tvp;
	ev_tstamp after;

	ev_timer_stop(a->loop, &a->timer);
	tvp = ares_timeout(a->chan, NULL, &tv);
	if (tvp == NULL)
		return;
	/*
	 * c-ares rounds what is left down to whole ms but calls a query
	 * timed out only once it is: under 1 ms left, 0 would spin the loop.
	 */
	after = tvp->tv_sec + tvp->tv_usec / 1e6;
	if (after < EVARES_MIN_WAIT)
		after = EVARES_MIN_WAIT;
	ev_timer_set(&a->timer, after, 0.);
	ev_timer_start(a->loop, &a->timer);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct evares *a = t->data;

	(void)loop;
	(void)revents;
	ares_process_fd(a->chan, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	evares_arm(a);
}

static void
sock_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct evares_sock *s = (struct evares_sock *)io;
	struct evares *a = s->a;
	int fd = io->fd;

	(void)loop;
	/* S may be freed in here, when c-ares closes its socket. */
	ares_process_fd(a->chan, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	evares_arm(a);
}

/* c-ares opens, changes or closes (0, 0) a socket: follow with an ev_io. */
static void
sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct evares *a = data;
	struct evares_sock *s;
	int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);

	LIST_FOREACH(s, &a->socks, link)
		if (s->io.fd == fd)
			break;
	if (s == NULL) {
		if (events == 0)
			return;
		if ((s = calloc(1, sizeof(*s))) == NULL) {
			/* Its queries end by c-ares' timeout instead. */
			log_warnx("c-ares: out of memory watching a socket");
			return;
		}
		s->a = a;
		ev_io_init(&s->io, sock_cb, fd, events);
		LIST_INSERT_HEAD(&a->socks, s, link);
		ev_io_start(a->loop, &s->io);
		return;
	}
	ev_io_stop(a->loop, &s->io);
	if (events == 0) {
		LIST_REMOVE(s, link);
		free(s);
		return;
	}
	ev_io_set(&s->io, fd, events);
	ev_io_start(a->loop, &s->io);
}

int
evares_open(struct evares *a, struct ev_loop *loop, struct ares_options *opts,
    int mask)
{
	int status;

	a->loop = loop;
	LIST_INIT(&a->socks);
	ev_timer_init(&a->timer, timer_cb, 0., 0.);
	a->timer.data = a;
	if ((status = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS)
		return status;
	opts->sock_state_cb = sock_state_cb;
	opts->sock_state_cb_data = a;
	status = ares_init_options(&a->chan, opts,
	    mask | ARES_OPT_SOCK_STATE_CB);
	if (status != ARES_SUCCESS)
		ares_library_cleanup();
	return status;
}

void
evares_close(struct evares *a)
{
	struct evares_sock *s;

	ares_destroy(a->chan);		/* closes its sockets: watchers go */
	ares_library_cleanup();
	while ((s = LIST_FIRST(&a->socks)) != NULL) {
		ev_io_stop(a->loop, &s->io);
		LIST_REMOVE(s, link);
		free(s);
	}
	ev_timer_stop(a->loop, &a->timer);
}
