/*
 * test_backoff: delays double from min to max with equal jitter, stay
 * within [d/2, d], never reach 0 and survive a thousand failures.
 */
#include <limits.h>
#include <stdint.h>

#include "backoff.h"
#include "tap.h"

/* The ceiling of the window for the Nth failure, worked out slowly. */
static int64_t
window(int min_ms, int max_ms, int n)
{
	int64_t d = min_ms;

	while (n-- > 0 && d < max_ms)
		d *= 2;
	return d > max_ms ? max_ms : d;
}

static void
test_windows(int min_ms, int max_ms, uint64_t seed, int rounds)
{
	struct backoff b;
	int64_t d;
	int i, v, inside = 1, first_bad = -1, bad_v = 0;

	backoff_init(&b, min_ms, max_ms, seed);
	for (i = 0; i < rounds; i++) {
		d = window(min_ms, max_ms, i);
		v = backoff_next(&b);
		if (v < d / 2 || v > d || v < 1) {
			if (inside) {
				first_bad = i;
				bad_v = v;
			}
			inside = 0;
		}
	}
	ok(inside, "min %d max %d seed %llu: %d delays inside [d/2, d] "
	    "(first miss at %d: %d)", min_ms, max_ms,
	    (unsigned long long)seed, rounds, first_bad, bad_v);
}

static void
test_growth(void)
{
	struct backoff b;
	int i, v, hi = 0, lo = INT_MAX;

	backoff_init(&b, 100, 30000, 1);
	v = backoff_next(&b);
	ok(v >= 50 && v <= 100, "first delay in [50, 100]: %d", v);
	v = backoff_next(&b);
	ok(v >= 100 && v <= 200, "second delay in [100, 200]: %d", v);
	v = backoff_next(&b);
	ok(v >= 200 && v <= 400, "third delay in [200, 400]: %d", v);

	for (i = 0; i < 20; i++)
		backoff_next(&b);
	for (i = 0; i < 200; i++) {
		v = backoff_next(&b);
		if (v > hi)
			hi = v;
		if (v < lo)
			lo = v;
	}
	ok(lo >= 15000 && hi <= 30000, "capped delays in [15000, 30000]: "
	    "%d..%d", lo, hi);
	ok(hi - lo > 1000, "capped delays are jittered: %d..%d", lo, hi);
	ok(b.attempt < 32, "attempt stops growing at the cap: %d", b.attempt);

	backoff_reset(&b);
	ok(b.attempt == 0, "reset clears the attempt count: %d", b.attempt);
	v = backoff_next(&b);
	ok(v >= 50 && v <= 100, "after reset the delay is back in [50, 100]: "
	    "%d", v);
}

static void
test_extremes(void)
{
	struct backoff b;
	int i, v, bad = 0, zero = 0;

	backoff_init(&b, 1, INT_MAX, 12345);
	for (i = 0; i < 1000; i++) {
		b.attempt = i;	/* past the cap, as if never stopped */
		v = backoff_next(&b);
		if (v < 1)
			zero++;
		if (i >= 40 && v < INT_MAX / 2)
			bad++;
	}
	ok(zero == 0 && bad == 0, "1 .. INT_MAX: 1000 attempts, no zero "
	    "(%d) and no overflow (%d)", zero, bad);

	backoff_init(&b, 1, 1, 7);
	for (i = 0; i < 1000; i++)
		if (backoff_next(&b) != 1)
			bad++;
	ok(bad == 0, "min = max = 1 always gives 1 (%d misses)", bad);

	backoff_init(&b, 2, 3, 7);
	zero = 0;
	for (i = 0; i < 1000; i++) {
		v = backoff_next(&b);
		if (v < 1 || v > 3)
			zero++;
	}
	ok(zero == 0, "min 2 max 3 stays in [1, 3] (%d misses)", zero);
}

static void
test_seed(void)
{
	struct backoff a, b;
	int i, same = 1, differ = 0;

	backoff_init(&a, 100, 100000, 0);
	ok(a.rng != 0, "seed 0 is replaced by a nonzero state: %llx",
	    (unsigned long long)a.rng);

	backoff_init(&a, 1000, 1000, 99);
	backoff_init(&b, 1000, 1000, 99);
	for (i = 0; i < 100; i++)
		if (backoff_next(&a) != backoff_next(&b))
			same = 0;
	ok(same, "the same seed gives the same delays");

	backoff_init(&a, 1000, 1000, 1);
	backoff_init(&b, 1000, 1000, 2);
	for (i = 0; i < 100; i++)
		if (backoff_next(&a) != backoff_next(&b))
			differ++;
	ok(differ > 50, "different seeds give different delays (%d of 100)",
	    differ);
}

/* A reload changes the bounds; the failures counted so far still count. */
static void
test_limits(void)
{
	struct backoff b;
	int v;

	backoff_init(&b, 100, 100000, 5);
	for (int i = 0; i < 5; i++)
		backoff_next(&b);
	backoff_limits(&b, 100, 500);
	ok(b.attempt == 5, "new limits keep the attempt count: %d", b.attempt);
	v = backoff_next(&b);
	ok(v >= 250 && v <= 500, "the new cap applies at once: %d", v);
	backoff_limits(&b, 0, -3);
	ok(b.min_ms == 1 && b.max_ms == 1, "limits are clamped: %d..%d",
	    b.min_ms, b.max_ms);
}

/* Task retries: full jitter inside [min, min(max, min * 2^(failed-1))]. */
static void
test_retry_delay(void)
{
	uint64_t rng = 0;
	int lo_seen = 0, hi_seen = 0, bad = 0;

	for (int failed = 1; failed <= 40; failed++) {
		int64_t hi = failed > 20 ? 3600000 : (int64_t)1000 << (failed - 1);
		int got_min = INT_MAX, got_max = 0;

		if (hi > 3600000)
			hi = 3600000;
		for (int i = 0; i < 2000; i++) {
			int d = backoff_retry_delay(failed, 1000, 3600000, &rng);

			bad += d < 1000 || d > hi;
			got_min = d < got_min ? d : got_min;
			got_max = d > got_max ? d : got_max;
		}
		/* Full jitter: the whole window is used, not only its top. */
		lo_seen += got_min < 1000 + (hi - 1000) / 10 + 1;
		hi_seen += got_max > hi - (hi - 1000) / 10 - 1;
	}
	ok(bad == 0, "retry delays stay inside their window (%d outside)", bad);
	ok(lo_seen == 40 && hi_seen == 40, "the whole window is drawn from "
	    "(%d low ends, %d high ends of 40)", lo_seen, hi_seen);
	ok(backoff_retry_delay(1, 50, 50, &rng) == 50,
	    "min == max gives exactly that");
	ok(backoff_retry_delay(0, 100, 400, &rng) <= 100,
	    "no failure counted yet: the shortest wait");
	ok(backoff_retry_delay(1000, 100, 400, &rng) <= 400,
	    "a huge failure count is capped at max");
	rng = 0;
	ok(backoff_retry_delay(3, 10, 20, &rng) >= 10 && rng != 0,
	    "a zero generator state is seeded");
}

/*
 * Step retries of a task keep their own count: backoff_step on it gives
 * what backoff_next gives from the same generator state, far past the
 * cap; hostile counts and bounds give neither 0 nor an overflow; bounds
 * raised later go on doubling from where the delay stood.
 */
static void
test_step(void)
{
	struct backoff b;
	uint64_t rng = 4242;
	int n = 0, differ = 0, zero = 0, bad = 0, v;

	backoff_init(&b, 7, 90000, 4242);
	for (int i = 0; i < 1000; i++)
		differ += backoff_next(&b) != backoff_step(&n, 7, 90000, &rng);
	ok(differ == 0 && n == b.attempt, "backoff_step on its own count "
	    "gives backoff_next's delays (%d differ), count %d", differ, n);

	rng = 0;
	for (int i = 0; i < 2000; i++) {
		int hostile[] = { INT_MIN, -1, 0, 31, 32, 33, INT_MAX };

		n = hostile[i % 7];
		v = backoff_step(&n, i % 3 ? 1 : -5, i % 5 ? INT_MAX : INT_MIN,
		    &rng);
		zero += v < 1;
		bad += n != hostile[i % 7] && (n < 0 || n > 32);
	}
	ok(zero == 0 && bad == 0 && rng != 0, "hostile counts and bounds: no "
	    "zero delay (%d), a count changed only to 0..32 (%d), the zero "
	    "state seeded", zero, bad);

	n = 0;
	for (int i = 0; i < 50; i++)
		backoff_step(&n, 100, 30000, &rng);
	v = backoff_step(&n, 100, 3600000, &rng);
	ok(n <= 10 && v <= 2 * 30000 && v >= 100 * (1 << 8) / 2, "max raised "
	    "after 50 failures: the next delay doubles from the old cap, no "
	    "jump to the new one (%d ms, count %d)", v, n);
	v = backoff_step(&n, 100, 3600000, &rng);
	ok(v <= 4 * 30000, "and the one after doubles again (%d ms)", v);

	/* Counted up under an hour, lowered to 30 s, then raised to 5 min. */
	n = 0;
	for (int i = 0; i < 20; i++)
		backoff_step(&n, 100, 3600000, &rng);
	for (int i = 0; i < 5; i++)
		backoff_step(&n, 100, 30000, &rng);
	v = backoff_step(&n, 100, 300000, &rng);
	ok(n <= 10 && v <= 2 * 30000, "bounds lowered then raised: the count "
	    "came down to the lower cap (%d) and the delay doubles from it "
	    "(%d ms), no jump to the raised one", n, v);

	bad = zero = 0;
	for (int i = 0; i < 1000; i++) {
		bad += (v = backoff_cut(701 + i, 100, 700, &rng)) < 350 ||
		    v > 700;
		bad += backoff_cut(700 - i % 700, 100, 700, &rng) != 0;
		zero += backoff_cut(5 + i, i % 2 ? 0 : INT_MIN, -1, &rng) != 1;
	}
	ok(bad == 0 && zero == 0, "a wait longer than max is cut into [max/2, "
	    "max], one within it is left (%d wrong); bounds below 1 cut to 1 "
	    "(%d not)", bad, zero);
}

int
main(void)
{
	test_retry_delay();
	test_windows(100, 30000, 1, 1000);
	test_windows(100, 30000, 0, 1000);
	test_windows(1, 1000, 42, 1000);
	test_windows(7, 3600000, 0xdeadbeef, 1000);
	test_windows(1000, INT_MAX, 3, 1000);
	test_growth();
	test_extremes();
	test_seed();
	test_limits();
	test_step();
	return done_testing();
}
