/*
 * test_sentinel: the sentinel client against fake sentinels on the same
 * loop: dead and silent ones skipped, a nil answer, AUTH, the order of
 * asks, +switch-master, a lost subscription, hostile answers, sentinels
 * by name looked up off the loop, and callbacks that never run inside a
 * sentinel_* call.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "cfgtest.h"
#include "config.h"
#include "resolve.h"
#include "sentinel.h"

#define MAXCLIENTS	16

enum mode { ANSWER, SILENT };

struct fake;

struct client {
	struct fake *f;
	int fd;
	ev_io io;
	char buf[4096];
	size_t len;
	int subscribed;
};

/* One fake sentinel on 127.0.0.1. */
struct fake {
	int fd, port;
	ev_io accept_io;
	enum mode mode;
	const char *master;	/* the name it knows */
	char host[64];		/* ... and where it says it is */
	int mport;
	const char *password;	/* NULL: AUTH is refused as unset */
	int asks;		/* GET-MASTER-ADDR-BY-NAME received */
	int conns;
	struct client *c[MAXCLIENTS];
};

static struct ev_loop *loop;
static int inside;		/* a sentinel_* call is running */
static int calls, called_inside;
static char got_host[256];
static int got_port;
static int lookups;		/* host names given to getaddrinfo */
static ev_tstamp longest_turn;	/* of the loop, in run_loop() */

/*
 * hiredis looks a host name up with getaddrinfo, which blocks the loop:
 * this one, found before libc's, counts the names and passes them on.
 */
int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
	static int (*real)(const char *, const char *,
	    const struct addrinfo *, struct addrinfo **);

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
	if (node != NULL && !resolve_is_numeric(node))
		lookups++;
	return real(node, service, hints, res);
}

static void
on_master(void *arg, const char *host, int port)
{
	(void)arg;
	calls++;
	called_inside += inside;
	snprintf(got_host, sizeof(got_host), "%s", host);
	got_port = port;
}

static void
say(struct client *c, const char *s)
{
	size_t n = strlen(s);

	if (write(c->fd, s, n) != (ssize_t)n)
		diag("fake: short write");
}

static void
drop_client(struct client *c)
{
	struct fake *f = c->f;

	for (int i = 0; i < MAXCLIENTS; i++)
		if (f->c[i] == c)
			f->c[i] = NULL;
	ev_io_stop(loop, &c->io);
	close(c->fd);
	free(c);
}

/* One whole command of the buffer into ARGV (up to 4); its length, or 0. */
static size_t
parse_cmd(const char *b, size_t len, char argv[4][128], int *argc)
{
	const char *p = b, *end = b + len, *nl;
	long n, l;

	if (len < 4 || *p != '*' || (nl = memchr(p, '\n', len)) == NULL)
		return 0;
	n = strtol(p + 1, NULL, 10);
	p = nl + 1;
	*argc = 0;
	for (long i = 0; i < n; i++) {
		if (p >= end || *p != '$' ||
		    (nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			return 0;
		l = strtol(p + 1, NULL, 10);
		p = nl + 1;
		if (end - p < l + 2)
			return 0;
		if (i < 4) {
			snprintf(argv[i], 128, "%.*s", (int)l, p);
			(*argc)++;
		}
		p += l + 2;
	}
	return (size_t)(p - b);
}

static void
answer(struct client *c, char argv[4][128], int argc)
{
	struct fake *f = c->f;
	char out[512];

	if (strcasecmp(argv[0], "AUTH") == 0) {
		if (f->password != NULL &&
		    strcmp(argv[argc - 1], f->password) == 0)
			say(c, "+OK\r\n");
		else
			say(c, "-WRONGPASS invalid password\r\n");
	} else if (strcasecmp(argv[0], "SENTINEL") == 0 && argc == 3) {
		f->asks++;
		if (strcmp(argv[2], f->master) != 0) {
			say(c, "*-1\r\n");
			return;
		}
		snprintf(out, sizeof(out), "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%d\r\n",
		    strlen(f->host), f->host, (size_t)snprintf(NULL, 0, "%d",
		    f->mport), f->mport);
		say(c, out);
	} else if (strcasecmp(argv[0], "SUBSCRIBE") == 0) {
		c->subscribed = 1;
		snprintf(out, sizeof(out), "*3\r\n$9\r\nsubscribe\r\n$%zu\r\n"
		    "%s\r\n:1\r\n", strlen(argv[1]), argv[1]);
		say(c, out);
	} else
		say(c, "-ERR unknown command\r\n");
}

static void
client_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct client *c = w->data;
	char argv[4][128];
	ssize_t got;
	size_t used;
	int argc;

	(void)l;
	(void)revents;
	got = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
	if (got <= 0) {
		drop_client(c);
		return;
	}
	c->len += (size_t)got;
	if (c->f->mode == SILENT) {
		c->len = 0;
		return;
	}
	while ((used = parse_cmd(c->buf, c->len, argv, &argc)) > 0) {
		answer(c, argv, argc);
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
	}
}

static void
accept_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct fake *f = w->data;
	struct client *c;
	int fd, i;

	(void)revents;
	if ((fd = accept(f->fd, NULL, NULL)) == -1)
		return;
	for (i = 0; i < MAXCLIENTS && f->c[i] != NULL; i++)
		;
	if (i == MAXCLIENTS || (c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	f->conns++;
	c->f = f;
	c->fd = fd;
	f->c[i] = c;
	ev_io_init(&c->io, client_cb, fd, EV_READ);
	c->io.data = c;
	ev_io_start(l, &c->io);
}

static void
fake_start(struct fake *f, enum mode mode, const char *master, int mport)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int one = 1;

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->master = master;
	snprintf(f->host, sizeof(f->host), "127.0.0.1");
	f->mport = mport;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((f->fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    listen(f->fd, 16) == -1 ||
	    getsockname(f->fd, (struct sockaddr *)&sa, &len) == -1)
		abort();
	f->port = ntohs(sa.sin_port);
	ev_io_init(&f->accept_io, accept_cb, f->fd, EV_READ);
	f->accept_io.data = f;
	ev_io_start(loop, &f->accept_io);
}

static void
fake_stop(struct fake *f)
{
	for (int i = 0; i < MAXCLIENTS; i++)
		if (f->c[i] != NULL)
			drop_client(f->c[i]);
	ev_io_stop(loop, &f->accept_io);
	close(f->fd);
}

/* A port nobody listens on. */
static int
dead_port(void)
{
	struct fake f;
	int port;

	fake_start(&f, SILENT, "", 0);
	port = f.port;
	fake_stop(&f);
	return port;
}

static int
subscribers(const struct fake *f)
{
	int n = 0;

	for (int i = 0; i < MAXCLIENTS; i++)
		n += f->c[i] != NULL && f->c[i]->subscribed;
	return n;
}

static void
publish(struct fake *f, const char *msg)
{
	char out[512];

	snprintf(out, sizeof(out), "*3\r\n$7\r\nmessage\r\n$14\r\n"
	    "+switch-master\r\n$%zu\r\n%s\r\n", strlen(msg), msg);
	for (int i = 0; i < MAXCLIENTS; i++)
		if (f->c[i] != NULL && f->c[i]->subscribed)
			say(f->c[i], out);
}

static int run_loop(const int *flag, int want, double seconds);

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
}

/* Runs the loop until *FLAG reaches WANT or SECONDS pass; 1 if it did. */
static int
run_until(const int *flag, int want, double seconds)
{
	return run_loop(flag, want, seconds);
}

static void
idle(double seconds)
{
	run_loop(NULL, 0, seconds);
}

static int
run_loop(const int *flag, int want, double seconds)
{
	ev_timer tick;
	ev_tstamp end, t;

	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	ev_now_update(loop);
	end = ev_now(loop) + seconds;
	while ((flag == NULL || *flag < want) && ev_now(loop) < end) {
		t = ev_time();
		ev_run(loop, EVRUN_ONCE);
		if (ev_time() - t > longest_turn)
			longest_turn = ev_time() - t;
	}
	ev_timer_stop(loop, &tick);
	return flag != NULL && *flag >= want;
}

static struct config *
conf(const char *sentinels, const char *extra)
{
	struct errs e = { NULL, 0 };
	struct config *cfg;
	char *text;

	if (asprintf(&text, "redis: { sentinels = [%s]; sentinel_master = "
	    "\"mymaster\"; connect_timeout_ms = 200; command_timeout_ms = 300;"
	    " %s };\nworker: { retry_min_ms = 20; retry_max_ms = 100; };\n",
	    sentinels, extra) == -1)
		abort();
	cfg = config_load(write_conf(text), collect, &e);
	errs_show(&e);
	errs_clear(&e);
	free(text);
	if (cfg == NULL)
		abort();
	return cfg;
}

static struct sentinel *
start_res(const struct config *cfg, struct resolver *res)
{
	struct sentinel *s;

	calls = 0;
	inside = 1;
	s = sentinel_new(loop, cfg, res, on_master, NULL);
	inside = 0;
	ok(s != NULL && calls == 0, "sentinel_new calls nothing back");
	return s;
}

static struct sentinel *
start(const struct config *cfg)
{
	return start_res(cfg, NULL);
}

/* Dead and silent sentinels are skipped; the order of asks; sentinel_ask. */
static void
test_ask(void)
{
	struct fake silent, good, other;
	struct config *cfg;
	struct sentinel *s;
	char list[256];
	ev_tstamp t0;
	int port, asks;

	fake_start(&silent, SILENT, "mymaster", 1);
	fake_start(&other, ANSWER, "othermaster", 2);
	fake_start(&good, ANSWER, "mymaster", 6390);
	snprintf(list, sizeof(list), "\"127.0.0.1:%d\", \"127.0.0.1:%d\", "
	    "\"localhost:%d\", \"127.0.0.1:%d\"", dead_port(), silent.port,
	    other.port, good.port);
	cfg = conf(list, "");
	ev_now_update(loop);
	t0 = ev_now(loop);
	lookups = 0;
	s = start(cfg);
	ok(sentinel_master(s, &port) == NULL, "no master before an answer");
	run_until(&calls, 1, 5);
	ok(lookups > 0, "without a resolver, hiredis looks localhost up "
	    "itself (%d getaddrinfo)", lookups);
	ok(calls == 1 && streq(got_host, "127.0.0.1") && got_port == 6390,
	    "the master from the fourth sentinel (%s:%d)", got_host, got_port);
	ok(ev_now(loop) - t0 < 1.5, "a dead, a silent and an ignorant "
	    "sentinel cost about one command timeout (%.2fs)",
	    ev_now(loop) - t0);
	ok(other.asks == 1, "the one that knows another master was asked");
	ok(streq(sentinel_master(s, &port), "127.0.0.1") && port == 6390 &&
	    streq(sentinel_last_error(s), ""), "sentinel_master tells it");
	idle(0.3);
	ok(calls == 1, "no second call for the same address");

	asks = silent.conns;
	inside = 1;
	sentinel_ask(s);
	sentinel_ask(s);
	inside = 0;
	ok(calls == 1, "sentinel_ask calls nothing back itself");
	ok(run_until(&calls, 2, 2) && got_port == 6390,
	    "sentinel_ask: the answer follows even though it is the same");
	ok(silent.conns == asks, "the next round starts from the sentinel "
	    "that answered");
	idle(0.3);
	ok(calls == 2, "two sentinel_ask calls in a row give one answer");
	ok(subscribers(&good) == 1, "subscribed on the sentinel that answered");
	publish(&good, "othermaster 127.0.0.1 2 127.0.0.1 3");
	ok(!run_until(&calls, 3, 0.3), "a switch of another master is not ours");
	publish(&good, "mymaster 127.0.0.1 6390 ::1 6391");
	run_until(&calls, 3, 2);
	ok(calls == 3 && streq(got_host, "::1") && got_port == 6391,
	    "+switch-master is told at once (%s:%d)", got_host, got_port);
	ok(streq(sentinel_master(s, &port), "::1") && port == 6391,
	    "and is the master known");

	ok(called_inside == 0, "no callback ran inside a sentinel_* call");
	sentinel_free(s);
	config_free(cfg);
	fake_stop(&silent);
	fake_stop(&other);
	fake_stop(&good);
}

/* A lost subscription moves to the next sentinel and catches up. */
static void
test_resubscribe(void)
{
	struct fake a, b;
	struct config *cfg;
	struct sentinel *s;
	char list[128];

	fake_start(&a, ANSWER, "mymaster", 7001);
	fake_start(&b, ANSWER, "mymaster", 7001);
	snprintf(list, sizeof(list), "\"127.0.0.1:%d\", \"127.0.0.1:%d\"",
	    a.port, b.port);
	cfg = conf(list, "");
	s = start(cfg);
	ok(run_until(&calls, 1, 2) && got_port == 7001, "asked");
	idle(0.2);
	ok(subscribers(&a) == 1 && subscribers(&b) == 0, "subscribed on a");
	/* A failover while no one listens: a says 7002 and closes. */
	a.mport = 7002;
	b.mport = 7002;
	for (int i = 0; i < MAXCLIENTS; i++)
		if (a.c[i] != NULL)
			drop_client(a.c[i]);
	run_until(&calls, 2, 2);
	ok(calls == 2 && got_port == 7002,
	    "after the loss an ask catches the switch missed (%d)", got_port);
	idle(0.2);
	ok(subscribers(&b) == 1, "the subscription moved to the next sentinel");
	publish(&b, "mymaster 127.0.0.1 7002 127.0.0.1 7003");
	ok(run_until(&calls, 3, 2) && got_port == 7003, "and is heard there");
	ok(called_inside == 0, "no callback ran inside a sentinel_* call");
	sentinel_free(s);
	config_free(cfg);
	fake_stop(&a);
	fake_stop(&b);
}

/* Nobody knows: a backoff, a reason, and the answer once one does. */
static void
test_outage_and_auth(void)
{
	struct fake f;
	struct config *cfg;
	struct sentinel *s;
	char list[128];

	fake_start(&f, ANSWER, "nobody", 7100);
	f.password = "pw";
	snprintf(list, sizeof(list), "\"127.0.0.1:%d\", \"127.0.0.1:%d\"",
	    dead_port(), f.port);
	cfg = conf(list, "sentinel_username = \"u\"; "
	    "sentinel_password = \"pw\";");
	s = start(cfg);
	ok(!run_until(&calls, 1, 0.5), "no answer while no sentinel knows");
	ok(strstr(sentinel_last_error(s), "does not know master mymaster") !=
	    NULL, "why: %s", sentinel_last_error(s));
	ok(f.asks >= 2, "asked again after a backoff (%d asks)", f.asks);
	f.master = "mymaster";
	ok(run_until(&calls, 1, 2) && got_port == 7100,
	    "the answer once it knows (AUTH with user and password)");
	sentinel_free(s);
	config_free(cfg);

	f.master = "mymaster";
	f.password = "other";
	snprintf(list, sizeof(list), "\"127.0.0.1:%d\"", f.port);
	cfg = conf(list, "sentinel_password = \"pw\";");
	s = start(cfg);
	ok(!run_until(&calls, 1, 0.5), "a refused AUTH gives no master");
	ok(strstr(sentinel_last_error(s), "AUTH failed: WRONGPASS") != NULL,
	    "why: %s", sentinel_last_error(s));

	/* Freed with an ask out and a callback owed: nothing runs after. */
	f.password = "pw";
	f.mode = SILENT;
	inside = 1;
	sentinel_ask(s);
	sentinel_free(s);
	inside = 0;
	ok(!run_until(&calls, 1, 0.5), "sentinel_free: no callback after it");
	config_free(cfg);
	fake_stop(&f);
}

/* A reload: another master name forgets the old address and asks again. */
static void
test_reconfigure(void)
{
	struct fake f;
	struct config *cfg, *cfg2;
	struct sentinel *s;
	char list[128];
	int port;

	fake_start(&f, ANSWER, "mymaster", 7200);
	snprintf(list, sizeof(list), "\"127.0.0.1:%d\"", f.port);
	cfg = conf(list, "");
	s = start(cfg);
	ok(run_until(&calls, 1, 2) && got_port == 7200, "asked");
	cfg2 = conf(list, "dead_max = 5;");
	inside = 1;
	sentinel_reconfigure(s, cfg2);
	inside = 0;
	config_free(cfg);
	ok(!run_until(&calls, 2, 0.3), "a reload that leaves Redis alone: no ask");
	f.master = "second";
	f.mport = 7201;
	cfg = conf(list, "");
	free(cfg->redis.sentinel_master);
	cfg->redis.sentinel_master = strdup("second");
	inside = 1;
	sentinel_reconfigure(s, cfg);
	inside = 0;
	config_free(cfg2);
	ok(sentinel_master(s, &port) == NULL, "a new name forgets the address");
	ok(run_until(&calls, 2, 2) && got_port == 7201, "and asks for it");
	ok(called_inside == 0, "no callback ran inside a sentinel_* call");
	sentinel_free(s);
	config_free(cfg);
	fake_stop(&f);
}

/* Answers no master is at: a host with control bytes, ports out of range. */
static void
test_hostile(void)
{
	static const struct {
		const char *host;
		int port;
	} bad[] = {
		{ "10.0.0.1\r\nx", 6379 },
		{ "bad\033[2Jhost", 6379 },
		{ "10.0.0.1", 0 },
		{ "10.0.0.1", 99999 },
	};
	struct fake f;
	struct config *cfg;
	struct sentinel *s;
	char list[128];

	fake_start(&f, ANSWER, "mymaster", 0);
	snprintf(list, sizeof(list), "\"127.0.0.1:%d\"", f.port);
	cfg = conf(list, "");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(f.host, sizeof(f.host), "%s", bad[i].host);
		f.mport = bad[i].port;
		s = start(cfg);
		ok(!run_until(&calls, 1, 0.3) && strstr(sentinel_last_error(s),
		    "unexpected answer") != NULL, "refused: host %zu, port %d",
		    i, bad[i].port);
		sentinel_free(s);
	}
	snprintf(f.host, sizeof(f.host), "127.0.0.1");
	f.mport = 7400;
	s = start(cfg);
	ok(run_until(&calls, 1, 2) && got_port == 7400, "asked");
	idle(0.2);
	publish(&f, "mymaster 127.0.0.1 7400 10.0.0.2\r\n 7401");
	publish(&f, "mymaster 127.0.0.1 7400 10.0.0.2 0");
	publish(&f, "mymaster 127.0.0.1 7400 10.0.0.2");
	ok(!run_until(&calls, 2, 0.3) && got_port == 7400,
	    "+switch-master messages without an address are not followed");
	sentinel_free(s);
	config_free(cfg);
	fake_stop(&f);
}

/* A UDP socket on 127.0.0.1 that takes DNS queries and answers none. */
static int
silent_dns(char *csv, size_t len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t salen = sizeof(sa);
	int fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sa, &salen) == -1)
		abort();
	snprintf(csv, len, "127.0.0.1:%d", ntohs(sa.sin_port));
	return fd;
}

/*
 * Sentinels by name, with a resolver: a name whose DNS server never
 * answers costs one connect timeout and the next sentinel, "localhost"
 * (/etc/hosts), is asked and followed; getaddrinfo is never called and
 * no turn of the loop waits.
 */
static void
test_names(void)
{
	struct fake good;
	struct resolver *res;
	struct config *cfg;
	struct sentinel *s;
	char list[256], csv[32];
	ev_tstamp t0;
	int dns;

	dns = silent_dns(csv, sizeof(csv));
	res = resolver_new(loop, 5000);
	ok(res != NULL && resolver_set_servers(res, csv) == 0,
	    "a resolver whose DNS server never answers");
	fake_start(&good, ANSWER, "mymaster", 7300);
	snprintf(list, sizeof(list), "\"sentinel-1.test:26379\", "
	    "\"localhost:%d\"", good.port);
	cfg = conf(list, "");
	lookups = 0;
	longest_turn = 0;
	ev_now_update(loop);
	t0 = ev_now(loop);
	s = start_res(cfg, res);
	ok(run_until(&calls, 1, 3) && streq(got_host, "127.0.0.1") &&
	    got_port == 7300, "the master from the sentinel named localhost");
	ok(ev_now(loop) - t0 < 1.0, "the name with no answer cost about one "
	    "connect timeout (%.2fs)", ev_now(loop) - t0);
	idle(0.2);
	ok(subscribers(&good) == 1, "subscribed on it, by name too");
	publish(&good, "mymaster 127.0.0.1 7300 127.0.0.1 7301");
	ok(run_until(&calls, 2, 2) && got_port == 7301,
	    "+switch-master heard there");
	ok(lookups == 0, "no getaddrinfo (%d)", lookups);
	ok(longest_turn < 0.25, "no turn of the loop waited on a lookup "
	    "(the longest took %.3fs)", longest_turn);
	ok(called_inside == 0, "no callback ran inside a sentinel_* call");
	sentinel_free(s);
	resolver_free(res);
	config_free(cfg);
	fake_stop(&good);
	close(dns);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	unsetenv("CREDENTIALS_DIRECTORY");
	loop = EV_DEFAULT;
	{
		struct config *none = config_load(write_conf(""), NULL, NULL);

		ok(none != NULL && sentinel_new(loop, none, NULL, on_master,
		    NULL) == NULL, "no sentinels: no client");
		config_free(none);
	}
	test_ask();
	test_resubscribe();
	test_outage_and_auth();
	test_reconfigure();
	test_hostile();
	test_names();
	remove_temps();
	return done_testing();
}
