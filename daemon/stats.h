/*
 * stats: the counters the worker and the adapters increment, read by the
 * STATUS= line and by the metrics endpoint. Every number is kept here once.
 */
#ifndef TASKWORKERD_STATS_H
#define TASKWORKERD_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Why an id went to the dead list. */
enum dead_reason {
	DEAD_FAILED,		/* its last attempt failed */
	DEAD_NOT_AN_ID,
	DEAD_NO_ROW,
	DEAD_NREASONS
};

/* Which limit of a queue said no (README "Limits"). */
enum limit_kind {
	LIMIT_RATE,
	LIMIT_IN_FLIGHT,
	LIMIT_NKINDS
};

/* Upper bounds of the duration buckets, seconds; +Inf is implied. */
#define STATS_NBUCKETS	17
extern const double stats_buckets[STATS_NBUCKETS];

struct histogram {
	uint64_t count[STATS_NBUCKETS + 1];	/* per bucket, not cumulative */
	double sum;
};

/* What Redis said of one queue at the last sample, as metrics print it. */
struct qsample {
	double length, processing, retry, scheduled, dead, workers;
	double paused;		/* 0 or 1 */
	double oldest_age;	/* seconds, a lower bound (see README) */
	double at;		/* when it was taken, seconds since the epoch */
};

struct qstats {
	uint64_t taken;
	uint64_t joined;	/* taken again while held: joined that task */
	uint64_t completed;	/* rows marked completed */
	uint64_t already;	/* found completed: acknowledged only */
	uint64_t retried;	/* failed attempts moved to QUEUE:retry */
	uint64_t failed;	/* last attempts failed: marked failed, dead */
	uint64_t dead[DEAD_NREASONS];
	uint64_t reclaimed;	/* given back from workers without heartbeat */
	/*
	 * Seconds this daemon wanted ids of the queue and a limit said no:
	 * the spells that ended, and the one going on (LIMITED_NOW is its
	 * kind + 1, 0 when none) since LIMITED_SINCE (ev_now).
	 */
	double limited[LIMIT_NKINDS];
	int limited_now;
	double limited_since;
	struct histogram handler;	/* handler start to answer */
	struct histogram task;		/* taken to acknowledged */
	int sampled;		/* SAMPLE holds an answer */
	struct qsample sample;
};

/* One backend's connection. */
struct bstats {
	uint64_t reconnects;	/* sessions opened after the first */
	uint64_t errors;	/* connections lost, failed connects, errors */
	double rtt;		/* seconds, the last measured round trip */
};

struct stats {
	int nq;
	struct qstats *q;
	struct bstats redis, postgres;
	uint64_t step_retries;	/* task steps retried after a server error */
	double start_time;	/* seconds since the epoch */
};

struct stats *stats_new(int nqueues);
void stats_free(struct stats *s);
void stats_observe(struct histogram *h, double seconds);
/* A session came up; ONCE is the session's own flag: later ones count. */
void stats_connected(struct bstats *b, int *once);
/* The sum of one counter over every queue, e.g. STATS_SUM(s, completed). */
#define STATS_SUM(s, field)	stats_sum((s), offsetof(struct qstats, field))
uint64_t stats_sum(const struct stats *s, size_t off);
/*
 * A spell of KIND (-1: none) starts for queue QS at NOW; the one going on
 * ends. stats_limited_seconds: the whole time of KIND up to NOW.
 */
void stats_limited(struct qstats *qs, int kind, double now);
double stats_limited_seconds(const struct qstats *qs, int kind, double now);
/* Every id moved to a dead list, for whatever reason. */
uint64_t stats_dead_total(const struct stats *s);

#endif
