/*
 * test_resolve: lookups on a real loop against a DNS server of the test's
 * own on 127.0.0.1, answered inside the same loop: numbers and cache hits
 * come a turn later, TTLs are followed, errors read well, lookups of one
 * name share a query, cancel and free never call back.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ev.h>

#include "resolve.h"
#include "tap.h"

#define T_A		1
#define T_AAAA		28
#define MAX_RECORDS	8
#define MAX_SEEN	256

/* The fake server's data: NAME ("*.x" matches any name under x). */
struct record {
	char name[64];
	int type;
	unsigned char addr[16];
	uint32_t ttl;
};

struct fakedns {
	int fd;
	ev_io io;
	char csv[32];			/* "127.0.0.1:PORT" */
	int silent;			/* reads queries, answers none */
	struct record rec[MAX_RECORDS];
	int nrec;
	struct {
		char name[256];
		int type;
	} seen[MAX_SEEN];
	int nseen;
};

/* What a lookup brought, and on which loop turn. */
struct result {
	int called;
	int turn;
	int found;
	struct resolve_answer a;
	char err[128];
	ev_tstamp at;
	struct resolver *free_me;	/* freed from inside the callback */
};

static int turns;			/* loop iterations, from an ev_prepare */

static void
count_turn(struct ev_loop *loop, ev_prepare *p, int revents)
{
	(void)loop;
	(void)p;
	(void)revents;
	turns++;
}

static int
name_matches(const char *pattern, const char *name)
{
	size_t n = strlen(name), m;

	if (pattern[0] != '*')
		return strcasecmp(pattern, name) == 0;
	m = strlen(pattern + 1);
	return n > m && strcasecmp(name + n - m, pattern + 1) == 0;
}

/* Sets NAME's record of ADDR's family (replacing it), TTL seconds. */
static void
fake_set(struct fakedns *d, const char *name, const char *addr, uint32_t ttl)
{
	struct record *rec = NULL;
	int i, type = strchr(addr, ':') != NULL ? T_AAAA : T_A;

	for (i = 0; i < d->nrec; i++)
		if (strcmp(d->rec[i].name, name) == 0 && d->rec[i].type == type)
			rec = &d->rec[i];
	if (rec == NULL && d->nrec < MAX_RECORDS)
		rec = &d->rec[d->nrec++];
	if (rec == NULL)
		return;
	snprintf(rec->name, sizeof(rec->name), "%s", name);
	rec->type = type;
	rec->ttl = ttl;
	inet_pton(type == T_A ? AF_INET : AF_INET6, addr, rec->addr);
}

/* How many queries of TYPE for NAME the server has seen. */
static int
fake_count(const struct fakedns *d, const char *name, int type)
{
	int i, n = 0;

	for (i = 0; i < d->nseen; i++)
		if (d->seen[i].type == type &&
		    strcasecmp(d->seen[i].name, name) == 0)
			n++;
	return n;
}

/* The question's name as text; *OFF moves past it. -1 when malformed. */
static int
read_qname(const unsigned char *p, size_t len, size_t *off, char *out,
    size_t outlen)
{
	size_t o = *off, w = 0, l;

	while (o < len && (l = p[o]) != 0) {
		if (l > 63 || o + 1 + l > len || w + l + 2 > outlen)
			return -1;
		if (w > 0)
			out[w++] = '.';
		memcpy(out + w, p + o + 1, l);
		w += l;
		o += 1 + l;
	}
	if (o >= len)
		return -1;
	out[w] = '\0';
	*off = o + 1;
	return 0;
}

static void
put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void
fake_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct fakedns *d = io->data;
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	unsigned char q[512], a[512];
	char name[256];
	size_t off = 12, alen;
	ssize_t n;
	int i, type, known = 0, an = 0;

	(void)loop;
	(void)revents;
	n = recvfrom(d->fd, q, sizeof(q), 0, (struct sockaddr *)&from,
	    &fromlen);
	if (n < 12 || read_qname(q, (size_t)n, &off, name, sizeof(name)) ||
	    off + 4 > (size_t)n)
		return;
	type = q[off] << 8 | q[off + 1];
	off += 4;
	if (d->nseen < MAX_SEEN) {
		snprintf(d->seen[d->nseen].name, sizeof(d->seen[0].name), "%s",
		    name);
		d->seen[d->nseen++].type = type;
	}
	if (d->silent)
		return;

	/* Header and question as asked (no EDNS), then the answers. */
	memcpy(a, q, off);
	alen = off;
	for (i = 0; i < d->nrec; i++) {
		const struct record *rec = &d->rec[i];
		unsigned rdlen = rec->type == T_A ? 4 : 16;

		if (!name_matches(rec->name, name))
			continue;
		known = 1;
		if (rec->type != type || alen + 12 + rdlen > sizeof(a))
			continue;
		put16(a + alen, 0xc00c);	/* the question's name */
		put16(a + alen + 2, (unsigned)type);
		put16(a + alen + 4, 1);		/* IN */
		put16(a + alen + 6, rec->ttl >> 16);
		put16(a + alen + 8, rec->ttl & 0xffff);
		put16(a + alen + 10, rdlen);
		memcpy(a + alen + 12, rec->addr, rdlen);
		alen += 12 + rdlen;
		an++;
	}
	a[2] = (unsigned char)(0x80 | (q[2] & 0x79));	/* QR, opcode, RD */
	a[3] = (unsigned char)(0x80 | (known ? 0 : 3));	/* RA, NXDOMAIN */
	put16(a + 4, 1);
	put16(a + 6, (unsigned)an);
	put16(a + 8, 0);
	put16(a + 10, 0);
	sendto(d->fd, a, alen, 0, (struct sockaddr *)&from, fromlen);
}

static int
fake_start(struct ev_loop *loop, struct fakedns *d)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(d, 0, sizeof(*d));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0)) == -1 ||
	    bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(d->fd, (struct sockaddr *)&sin, &len) == -1)
		return -1;
	snprintf(d->csv, sizeof(d->csv), "127.0.0.1:%u", ntohs(sin.sin_port));
	ev_io_init(&d->io, fake_cb, d->fd, EV_READ);
	d->io.data = d;
	ev_io_start(loop, &d->io);
	return 0;
}

static void
fake_stop(struct ev_loop *loop, struct fakedns *d)
{
	ev_io_stop(loop, &d->io);
	close(d->fd);
}

static void
got(void *arg, const char *name, const struct resolve_answer *answer,
    const char *err)
{
	struct result *res = arg;

	(void)name;
	res->called++;
	res->turn = turns;
	res->found = answer != NULL;
	if (answer != NULL)
		res->a = *answer;
	snprintf(res->err, sizeof(res->err), "%s", err != NULL ? err : "");
	if (res->free_me != NULL)
		resolver_free(res->free_me);
}

static void
guard_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)t;
	(void)revents;
}

/* Runs the loop until *FLAG (NULL: never) or SECONDS have passed. */
static void
run_until(struct ev_loop *loop, const int *flag, double seconds)
{
	ev_timer guard;

	ev_timer_init(&guard, guard_cb, seconds, 0.);
	ev_timer_start(loop, &guard);
	while ((flag == NULL || !*flag) && ev_is_active(&guard))
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &guard);
}

static int
has_addr(const struct result *res, const char *addr)
{
	int i;

	for (i = 0; res->found && i < res->a.n; i++)
		if (strcmp(res->a.addr[i], addr) == 0)
			return 1;
	return 0;
}

/* A resolver that asks D only, so no query leaves the machine. */
static struct resolver *
resolver_at(struct ev_loop *loop, struct fakedns *d, int timeout_ms)
{
	struct resolver *r = resolver_new(loop, timeout_ms);

	if (r != NULL && resolver_set_servers(r, d->csv) == -1) {
		resolver_free(r);
		r = NULL;
	}
	return r;
}

/* Looks NAME up and runs the loop until it is answered (2 s at most). */
static void
lookup_wait(struct ev_loop *loop, struct resolver *r, const char *name,
    struct result *res)
{
	int before = turns;

	memset(res, 0, sizeof(*res));
	resolver_lookup(r, name, got, res);
	ok(res->called == 0, "%s: not answered inside the call", name);
	run_until(loop, &res->called, 2.);
	ok(res->called == 1 && res->turn > before, "%s: answered once, on a "
	    "later turn (%d > %d)", name, res->turn, before);
}

static void
test_numeric(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result res;

	lookup_wait(loop, r, "192.0.2.7", &res);
	ok(res.found && res.a.n == 1 && has_addr(&res, "192.0.2.7"),
	    "an IPv4 number is its own answer");
	lookup_wait(loop, r, "2001:db8::7", &res);
	ok(res.found && res.a.n == 1 && has_addr(&res, "2001:db8::7"),
	    "an IPv6 number is its own answer");
	ok(d->nseen == 0, "numbers ask no server (%d queries)", d->nseen);
	ok(resolve_is_numeric("10.1.2.3") && resolve_is_numeric("::1") &&
	    !resolve_is_numeric("db.example.test") &&
	    !resolve_is_numeric("[::1]") && !resolve_is_numeric(""),
	    "resolve_is_numeric tells numbers from names");
	resolver_free(r);
}

static void
test_localhost(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result res;

	lookup_wait(loop, r, "localhost", &res);
	ok(has_addr(&res, "127.0.0.1") || has_addr(&res, "::1"),
	    "localhost is a loopback address (%s)", res.found ?
	    res.a.addr[0] : res.err);
	ok(fake_count(d, "localhost", T_A) == 0, "localhost asks no server");
	resolver_free(r);
}

static void
test_ttl(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result res;

	fake_set(d, "db.example.test", "192.0.2.1", 1);
	lookup_wait(loop, r, "db.example.test", &res);
	ok(res.found && res.a.n == 1 && has_addr(&res, "192.0.2.1"),
	    "an A answer: %s", res.found ? res.a.addr[0] : res.err);
	ok(fake_count(d, "db.example.test", T_A) == 1, "one query");

	lookup_wait(loop, r, "DB.example.test", &res);
	ok(has_addr(&res, "192.0.2.1") &&
	    fake_count(d, "db.example.test", T_A) == 1,
	    "within the TTL the cache answers (any case), no query");

	fake_set(d, "db.example.test", "192.0.2.2", 1);
	run_until(loop, NULL, 1.1);
	lookup_wait(loop, r, "db.example.test", &res);
	ok(has_addr(&res, "192.0.2.2") && !has_addr(&res, "192.0.2.1") &&
	    fake_count(d, "db.example.test", T_A) == 2,
	    "past the TTL it asks again and follows the change: %s",
	    res.found ? res.a.addr[0] : res.err);

	fake_set(d, "zero.example.test", "192.0.2.3", 0);
	lookup_wait(loop, r, "zero.example.test", &res);
	lookup_wait(loop, r, "zero.example.test", &res);
	ok(has_addr(&res, "192.0.2.3") &&
	    fake_count(d, "zero.example.test", T_A) == 2,
	    "a TTL of 0 is not kept (%d queries)",
	    fake_count(d, "zero.example.test", T_A));

	fake_set(d, "flush.example.test", "192.0.2.4", 60);
	lookup_wait(loop, r, "flush.example.test", &res);
	resolver_flush(r);
	lookup_wait(loop, r, "flush.example.test", &res);
	ok(has_addr(&res, "192.0.2.4") &&
	    fake_count(d, "flush.example.test", T_A) == 2,
	    "resolver_flush forgets the cache");
	resolver_free(r);
}

static void
test_answers(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result res;

	fake_set(d, "v6.example.test", "192.0.2.5", 60);
	fake_set(d, "v6.example.test", "2001:db8::5", 60);
	lookup_wait(loop, r, "v6.example.test", &res);
	ok(res.found && res.a.n == 2 && has_addr(&res, "192.0.2.5") &&
	    has_addr(&res, "2001:db8::5"), "IPv4 and IPv6 in one answer");
	ok(fake_count(d, "v6.example.test", T_AAAA) == 1, "AAAA was asked");

	lookup_wait(loop, r, "nx.example.test", &res);
	ok(!res.found && strcmp(res.err, "no such name") == 0,
	    "NXDOMAIN: \"%s\"", res.err);
	lookup_wait(loop, r, "nx.example.test", &res);
	ok(fake_count(d, "nx.example.test", T_A) == 2,
	    "a failure is not kept");
	lookup_wait(loop, r, "", &res);
	ok(!res.found && strcmp(res.err, "not a valid host name") == 0,
	    "an empty name: \"%s\"", res.err);
	resolver_free(r);
}

static void
test_shared(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result a, b, c;
	struct resolve_req *rc;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	fake_set(d, "pair.example.test", "192.0.2.6", 60);
	resolver_lookup(r, "pair.example.test", got, &a);
	rc = resolver_lookup(r, "pair.example.test", got, &c);
	resolver_lookup(r, "pair.example.test", got, &b);
	resolve_cancel(rc);
	run_until(loop, &b.called, 2.);
	ok(a.called == 1 && b.called == 1 && has_addr(&a, "192.0.2.6") &&
	    has_addr(&b, "192.0.2.6"), "two lookups at once both answered");
	ok(fake_count(d, "pair.example.test", T_A) == 1,
	    "they made one query (%d)", fake_count(d, "pair.example.test",
	    T_A));
	run_until(loop, NULL, 0.05);
	ok(c.called == 0, "a lookup cancelled while asking is not answered");

	memset(&c, 0, sizeof(c));
	resolve_cancel(resolver_lookup(r, "192.0.2.8", got, &c));
	resolve_cancel(resolver_lookup(r, "pair.example.test", got, &c));
	resolve_cancel(NULL);
	run_until(loop, NULL, 0.05);
	ok(c.called == 0, "cancelled numeric and cached lookups are not "
	    "answered");
	resolver_free(r);
}

/*
 * A lookup every waiter gave up on is dropped: the next one asks anew,
 * and the server, silent for the first query, answers it at once rather
 * than at the first query's next try (a third of the bound: 1 s).
 */
static void
test_abandoned(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 3000);
	struct result a, b;
	ev_tstamp t0;

	memset(&a, 0, sizeof(a));
	fake_set(d, "back.example.test", "192.0.2.13", 60);
	d->silent = 1;
	resolve_cancel(resolver_lookup(r, "back.example.test", got, &a));
	run_until(loop, NULL, 0.1);
	d->silent = 0;
	ev_now_update(loop);
	t0 = ev_now(loop);
	lookup_wait(loop, r, "back.example.test", &b);
	ok(has_addr(&b, "192.0.2.13") && ev_now(loop) - t0 < 0.5,
	    "asked anew after the last waiter left: answered in %.3f s",
	    ev_now(loop) - t0);
	ok(fake_count(d, "back.example.test", T_A) == 2,
	    "two queries (%d)", fake_count(d, "back.example.test", T_A));
	ok(a.called == 0, "the lookup given up is not answered");
	resolver_free(r);
}

/* More names than the cache keeps: the oldest is asked again. */
static void
test_bounded(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result res[80];
	char name[64];
	int i, all = 1;

	fake_set(d, "*.wild.test", "192.0.2.9", 60);
	for (i = 0; i < 80; i++) {
		snprintf(name, sizeof(name), "n%d.wild.test", i);
		memset(&res[i], 0, sizeof(res[i]));
		resolver_lookup(r, name, got, &res[i]);
	}
	run_until(loop, &res[79].called, 2.);
	run_until(loop, NULL, 0.05);
	for (i = 0; i < 80; i++)
		all &= res[i].called == 1 && has_addr(&res[i], "192.0.2.9");
	ok(all, "80 names at once all answered");
	lookup_wait(loop, r, "n79.wild.test", &res[0]);
	ok(fake_count(d, "n79.wild.test", T_A) == 1, "a recent name is kept");
	lookup_wait(loop, r, "n0.wild.test", &res[0]);
	ok(has_addr(&res[0], "192.0.2.9") &&
	    fake_count(d, "n0.wild.test", T_A) == 2,
	    "the oldest of 80 names was let go");
	resolver_free(r);
}

static void
test_timeout(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 300);
	struct result res;
	ev_tstamp t0;
	int turns0 = turns;

	d->silent = 1;
	ev_now_update(loop);
	t0 = ev_now(loop);
	lookup_wait(loop, r, "slow.example.test", &res);
	ok(!res.found && strcmp(res.err, "timed out after 300 ms") == 0,
	    "a silent server: \"%s\"", res.err);
	ok(ev_now(loop) - t0 >= 0.25 && ev_now(loop) - t0 < 0.8,
	    "within the bound and some slack: %.3f s", ev_now(loop) - t0);
	ok(turns - turns0 < 50, "the loop slept while waiting (%d turns)",
	    turns - turns0);
	ok(fake_count(d, "slow.example.test", T_A) >= 1, "it did ask");

	memset(&res, 0, sizeof(res));
	resolver_lookup(r, "slow.example.test", got, &res);
	ok(resolver_set_servers(r, d->csv) == -1,
	    "servers stay while a lookup is out");
	resolver_free(r);
	run_until(loop, NULL, 0.4);
	ok(res.called == 0, "freeing with a lookup out calls nothing back");
	d->silent = 0;
}

static void
test_refused(struct ev_loop *loop)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct resolver *r;
	struct result res;
	char csv[32];
	int fd;

	/* A port that was free a moment ago: nobody listens there. */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &len);
	close(fd);
	snprintf(csv, sizeof(csv), "127.0.0.1:%u", ntohs(sin.sin_port));

	r = resolver_new(loop, 1000);
	ok(resolver_set_servers(r, csv) == 0, "servers set to %s", csv);
	lookup_wait(loop, r, "db.example.test", &res);
	ok(!res.found && strncmp(res.err, "DNS server refused", 18) == 0,
	    "nobody listening: \"%s\"", res.err);
	resolver_free(r);
}

static void
test_free(struct ev_loop *loop, struct fakedns *d)
{
	struct resolver *r = resolver_at(loop, d, 1000);
	struct result a, b;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	resolver_lookup(r, "192.0.2.10", got, &a);
	resolver_lookup(r, "db.example.test", got, &b);
	resolver_free(r);
	run_until(loop, NULL, 0.05);
	ok(a.called == 0 && b.called == 0,
	    "freeing with answers ready calls nothing back");

	r = resolver_at(loop, d, 1000);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.free_me = r;
	resolver_lookup(r, "192.0.2.11", got, &a);
	resolver_lookup(r, "192.0.2.12", got, &b);
	run_until(loop, NULL, 0.05);
	ok(a.called == 1 && b.called == 0,
	    "freed inside a callback: no callback after it");
	resolver_free(NULL);
}

int
main(void)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct fakedns d;
	ev_prepare prep;

	ev_prepare_init(&prep, count_turn);
	ev_prepare_start(loop, &prep);
	if (fake_start(loop, &d) == -1) {
		printf("Bail out! cannot open a UDP socket on 127.0.0.1\n");
		return 1;
	}
	test_numeric(loop, &d);
	test_localhost(loop, &d);
	test_ttl(loop, &d);
	test_answers(loop, &d);
	test_shared(loop, &d);
	test_abandoned(loop, &d);
	test_bounded(loop, &d);
	test_timeout(loop, &d);
	test_refused(loop);
	test_free(loop, &d);
	fake_stop(loop, &d);
	ev_prepare_stop(loop, &prep);
	return done_testing();
}
