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
	if (min_ms < 1)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
	b->min_ms = min_ms;
	b->max_ms = max_ms;
}

/* Equal jitter in [d/2, d], d = min(max_ms, min_ms * 2^(failed-1)). */
static int
step_delay(int failed, int min_ms, int max_ms, uint64_t *rng)
{
	int64_t d, lo;
	int shift = failed < 1 ? 0 : failed - 1;

	d = shift >= BACKOFF_MAX_SHIFT ? max_ms : (int64_t)min_ms << shift;
	if (d > max_ms)
		d = max_ms;
	if (*rng == 0)
		*rng = BACKOFF_SEED;

	/* Equal jitter: half of d for sure, the other half at random. */
	lo = d / 2;
	d = lo + (int64_t)(xorshift64(rng) % (uint64_t)(d - lo + 1));
	return d < 1 ? 1 : (int)d;
}

int
backoff_step(int *failed, int min_ms, int max_ms, uint64_t *rng)
{
	int n, cap = 0;

	if (min_ms < 1)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
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
	return step_delay(n, min_ms, max_ms, rng);
}

int
backoff_at_cap(int min_ms, int max_ms, uint64_t *rng)
{
	int past_cap = BACKOFF_MAX_SHIFT;	/* comes down to the cap */

	return backoff_step(&past_cap, min_ms, max_ms, rng);
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
	int64_t hi;
	int shift = failed - 1;

	if (min_ms < 1)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
	if (shift < 0)
		shift = 0;
	hi = shift >= BACKOFF_MAX_SHIFT ? max_ms : (int64_t)min_ms << shift;
	if (hi > max_ms)
		hi = max_ms;
	if (*rng == 0)
		*rng = BACKOFF_SEED;
	return min_ms + (int)(xorshift64(rng) % (uint64_t)(hi - min_ms + 1));
}
