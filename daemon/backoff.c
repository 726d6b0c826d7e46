/*
 * backoff: the delay before the next reconnect or retry, doubling from
 * min_ms up to max_ms, with equal jitter from a xorshift64 generator.
 */
#include <stdint.h>

#include "backoff.h"

#define BACKOFF_SEED	0x9e3779b97f4a7c15ULL	/* used when given 0 */
#define BACKOFF_MAX_SHIFT	32	/* 1 << 32 exceeds any int delay */

static uint64_t
xorshift64(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* Bounds as they are used: min at least 1, max at least min. */
static void
clamp(int *min_ms, int *max_ms)
{
	if (*min_ms < 1)
		*min_ms = 1;
	if (*max_ms < *min_ms)
		*max_ms = *min_ms;
}

void
backoff_init(struct backoff *b, int min_ms, int max_ms, uint64_t seed)
{
	backoff_limits(b, min_ms, max_ms);
	b->attempt = 0;
	b->rng = seed != 0 ? seed : BACKOFF_SEED;
}

void
backoff_limits(struct backoff *b, int min_ms, int max_ms)
{
	clamp(&min_ms, &max_ms);
	b->min_ms = min_ms;
	b->max_ms = max_ms;
}

/* Uniform in [lo, hi]; a zero generator state is seeded first. */
static int64_t
uniform(uint64_t *rng, int64_t lo, int64_t hi)
{
	if (*rng == 0)
		*rng = BACKOFF_SEED;
	return lo + (int64_t)(xorshift64(rng) % (uint64_t)(hi - lo + 1));
}

/* min(max_ms, min_ms * 2^(failed-1)), FAILED below 1 counted as 1. */
static int64_t
window(int failed, int min_ms, int max_ms)
{
	int shift = failed < 1 ? 0 : failed - 1;
	int64_t d;

	d = shift >= BACKOFF_MAX_SHIFT ? max_ms : (int64_t)min_ms << shift;
	return d > max_ms ? max_ms : d;
}

/* Equal jitter: half of D for sure, the other half at random; 1 at least. */
static int
equal_jitter(uint64_t *rng, int64_t d)
{
	d = uniform(rng, d / 2, d);
	return d < 1 ? 1 : (int)d;
}

int
backoff_step(int *failed, int min_ms, int max_ms, uint64_t *rng)
{
	int n, cap = 0;

	clamp(&min_ms, &max_ms);
	/*
	 * Failures are counted only while the delay still grows, up to CAP
	 * under these bounds: the count never overflows, a count from larger
	 * bounds comes down to it, and bounds raised later go on doubling
	 * from where the delay stood instead of jumping to the new max_ms.
	 */
	while (cap < BACKOFF_MAX_SHIFT && ((int64_t)min_ms << cap) < max_ms)
		cap++;
	if (*failed > cap)
		*failed = cap;
	n = *failed < 0 ? 1 : *failed + 1;
	if (n <= cap)
		*failed = n;
	return equal_jitter(rng, window(n, min_ms, max_ms));
}

int
backoff_cut(double left_ms, int min_ms, int max_ms, uint64_t *rng)
{
	clamp(&min_ms, &max_ms);
	return left_ms <= max_ms ? 0 : equal_jitter(rng, max_ms);
}

int
backoff_next(struct backoff *b)
{
	return backoff_step(&b->attempt, b->min_ms, b->max_ms, &b->rng);
}

void
backoff_reset(struct backoff *b)
{
	b->attempt = 0;
}

int
backoff_retry_delay(int failed, int min_ms, int max_ms, uint64_t *rng)
{
	clamp(&min_ms, &max_ms);
	return (int)uniform(rng, min_ms, window(failed, min_ms, max_ms));
}
