/*
 * stats: counters and duration histograms, one set per queue, plus the
 * backends' connection figures. Plain numbers: the readers format them.
 */
#include <stddef.h>
#include <stdlib.h>
#include <sys/time.h>

#include "stats.h"

const double stats_buckets[STATS_NBUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
	10, 30, 60, 300, 1800,
};

struct stats *
stats_new(int nqueues)
{
	struct stats *s;
	struct timeval tv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	if ((s->q = calloc((size_t)nqueues, sizeof(*s->q))) == NULL) {
		free(s);
		return NULL;
	}
	s->nq = nqueues;
	gettimeofday(&tv, NULL);
	s->start_time = (double)tv.tv_sec + tv.tv_usec / 1e6;
	return s;
}

void
stats_free(struct stats *s)
{
	if (s == NULL)
		return;
	free(s->q);
	free(s);
}

void
stats_observe(struct histogram *h, double seconds)
{
	int i = 0;

	if (seconds < 0)
		seconds = 0;
	while (i < STATS_NBUCKETS && seconds > stats_buckets[i])
		i++;
	h->count[i]++;
	h->sum += seconds;
}

void
stats_connected(struct bstats *b, int *once)
{
	if (*once)
		b->reconnects++;
	*once = 1;
}

uint64_t
stats_sum(const struct stats *s, size_t off)
{
	uint64_t n = 0;

	for (int i = 0; i < s->nq; i++)
		n += *(const uint64_t *)((const char *)&s->q[i] + off);
	return n;
}

uint64_t
stats_dead_total(const struct stats *s)
{
	uint64_t n = 0;

	for (int i = 0; i < s->nq; i++)
		for (int r = 0; r < DEAD_NREASONS; r++)
			n += s->q[i].dead[r];
	return n;
}

void
stats_limited(struct qstats *qs, int kind, double now)
{
	if (qs->limited_now == kind + 1)
		return;		/* the same spell goes on */
	if (qs->limited_now > 0 && now > qs->limited_since)
		qs->limited[qs->limited_now - 1] += now - qs->limited_since;
	qs->limited_now = kind + 1;
	qs->limited_since = now;
}

double
stats_limited_seconds(const struct qstats *qs, int kind, double now)
{
	double s = qs->limited[kind];

	if (qs->limited_now == kind + 1 && now > qs->limited_since)
		s += now - qs->limited_since;
	return s;
}
