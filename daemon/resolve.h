/*
 * resolve: host names to addresses off the loop (c-ares driven by libev),
 * with a cache that honours each answer's TTL.
 */
#ifndef TASKWORKERD_RESOLVE_H
#define TASKWORKERD_RESOLVE_H

#include <ev.h>

#define RESOLVE_MAX_ADDRS	8
#define RESOLVE_ADDRLEN		46	/* INET6_ADDRSTRLEN */

struct resolve_answer {
	int n;				/* 1..RESOLVE_MAX_ADDRS */
	char addr[RESOLVE_MAX_ADDRS][RESOLVE_ADDRLEN];	/* numeric */
};

/*
 * The answer for NAME: ANSWER when found (it lives during the call), or
 * NULL and ERR saying why, in words fit for a log line ("no such name",
 * "timed out after 5000 ms", "DNS server refused the query", ...).
 * Always on a loop turn after the call that asked, never inside it. The
 * request is freed when FN returns; resolve_cancel() on it from inside FN
 * does nothing.
 */
typedef void resolve_fn(void *arg, const char *name,
    const struct resolve_answer *answer, const char *err);

struct resolver;
struct resolve_req;

/*
 * TIMEOUT_MS bounds one lookup, retries included. The DNS servers are
 * those of /etc/resolv.conf. NULL (logged) when c-ares cannot start.
 */
struct resolver *resolver_new(struct ev_loop *loop, int timeout_ms);
/*
 * Cancels every lookup out (their callbacks never run). NULL is allowed;
 * so is a call from inside a resolve_fn, which then is the last to run.
 */
void resolver_free(struct resolver *r);

/*
 * Looks NAME up (IPv4 and IPv6, /etc/hosts first). A numeric address is
 * its own answer; a name cached within its TTL is answered from the
 * cache. Lookups of one name at once share one query. Returns NULL only
 * when out of memory (FN is not called).
 *
 * The cache keeps up to 64 names, each for the smallest TTL of its
 * answer, at most 300 s; a TTL of 0, an /etc/hosts answer (c-ares gives
 * it no TTL) and a failure are not kept.
 */
struct resolve_req *resolver_lookup(struct resolver *r, const char *name,
    resolve_fn *fn, void *arg);
/* FN of REQ will not be called; REQ is freed. NULL is allowed. */
void resolve_cancel(struct resolve_req *req);
/*
 * Forgets every cached answer (a reload, or a failover to follow). A
 * query already out goes on, and its answer is kept as usual.
 */
void resolver_flush(struct resolver *r);

/*
 * Sends queries to CSV instead of /etc/resolv.conf's servers, as
 * "127.0.0.1:5353,[::1]:53" (for tests and operators); flushes the cache.
 * -1 (logged) when CSV is bad or lookups are out (c-ares refuses then).
 */
int resolver_set_servers(struct resolver *r, const char *csv);

/* 1 when NAME is a numeric IPv4 or IPv6 address. */
int resolve_is_numeric(const char *name);

#endif
