/*
 * backoff: exponential delays with equal jitter (a delay in [d/2, d]) for reconnects and retries.
 * Pure arithmetic; the caller owns the timer.
 */
#ifndef TASKWORKERD_BACKOFF_H
#define TASKWORKERD_BACKOFF_H

#include <stdint.h>

struct backoff {
	int min_ms;
	int max_ms;
	int attempt;		/* failures since the last success */
	uint64_t rng;		/* xorshift state, never 0 */
};

void backoff_init(struct backoff *b, int min_ms, int max_ms, uint64_t seed);
/*
 * New bounds (a reload); the count of failures is kept, down to what the
 * new bounds can count.
 */
void backoff_limits(struct backoff *b, int min_ms, int max_ms);
/* The delay before the next attempt; counts one more failure. */
int backoff_next(struct backoff *b);
/*
 * backoff_next on a count the caller keeps (FAILED, 0 at first) and
 * bounds it passes each time (a reload's new ones apply at once): the
 * delay of the next try, and *FAILED counts one more failure while the
 * delay still grows (a count from larger bounds comes down to what these
 * can count). RNG is xorshift state (0 is replaced by a fixed seed).
 */
int backoff_step(int *failed, int min_ms, int max_ms, uint64_t *rng);
/*
 * A wait armed under earlier bounds has LEFT_MS to go: 0 when that is
 * within these bounds, else the delay it is cut to, drawn at the cap in
 * [max_ms/2, max_ms] (so the waits a reload cuts do not all end at once).
 */
int backoff_cut(double left_ms, int min_ms, int max_ms, uint64_t *rng);
/* A success: the next delay starts from min_ms again. */
void backoff_reset(struct backoff *b);

/*
 * The wait before a task's next run after FAILED runs failed (1 or more):
 * full jitter, uniform in [min_ms, min(max_ms, min_ms * 2^(failed-1))].
 * RNG is xorshift state (0 is replaced by a fixed seed).
 */
int backoff_retry_delay(int failed, int min_ms, int max_ms, uint64_t *rng);

#endif
