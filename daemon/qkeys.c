/*
 * qkeys: QUEUE and its suffixes, the one spelling of every key name that
 * C code sends; scripts are given every key they touch, none is built
 * inside them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkeys.h"

static char *
name(const char *queue, const char *suffix, const char *worker)
{
	char *s;

	return asprintf(&s, "%s%s%s", queue, suffix, worker ? worker : "") ==
	    -1 ? NULL : s;
}

int
qkeys_make(struct qkeys *k, const char *queue, const char *worker)
{
	memset(k, 0, sizeof(*k));
	k->queue = strdup(queue);
	k->processing_of = name(queue, ":processing:", NULL);
	k->heartbeat_of = name(queue, ":heartbeat:", NULL);
	k->dead = name(queue, ":dead", NULL);
	k->reason = name(queue, ":dead:reason", NULL);
	k->attempts = name(queue, ":attempts", NULL);
	k->retry = name(queue, ":retry", NULL);
	k->scheduled = name(queue, ":scheduled", NULL);
	k->workers = name(queue, ":workers", NULL);
	k->paused = name(queue, ":paused", NULL);
	k->limit = name(queue, ":limit", NULL);
	if (worker != NULL) {
		k->processing = name(queue, ":processing:", worker);
		k->heartbeat = name(queue, ":heartbeat:", worker);
	}
	if (!k->queue || !k->processing_of || !k->heartbeat_of || !k->dead ||
	    !k->reason || !k->attempts || !k->retry || !k->scheduled ||
	    !k->workers || !k->paused || !k->limit || (worker != NULL && (!k->processing ||
	    !k->heartbeat))) {
		qkeys_free(k);
		return -1;
	}
	return 0;
}

void
qkeys_free(struct qkeys *k)
{
	free(k->queue);
	free(k->processing);
	free(k->processing_of);
	free(k->heartbeat_of);
	free(k->dead);
	free(k->reason);
	free(k->attempts);
	free(k->retry);
	free(k->scheduled);
	free(k->workers);
	free(k->heartbeat);
	free(k->paused);
	free(k->limit);
	memset(k, 0, sizeof(*k));
}

/* ---- names that collide ---- */

/* The keys of one queue: QUEUE and its suffixes, as qkeys_make spells them. */
static const char *const exact[] = { "", ":dead", ":dead:reason",
    ":attempts", ":retry", ":scheduled", ":workers", ":paused",
    ":limit" };
/* ...and those of every worker, QUEUE:processing:WORKER and its heartbeat. */
static const char *const per_worker[] = { ":processing:", ":heartbeat:" };

#define NEXACT		(sizeof(exact) / sizeof(exact[0]))
#define NPER		(sizeof(per_worker) / sizeof(per_worker[0]))

/* Does QUEUE SUFFIX spell S (LEN bytes) exactly, or begin it (PREFIX)? */
static int
spells(const char *s, size_t len, const char *queue, const char *suffix,
    int prefix)
{
	size_t ql = strlen(queue), sl = strlen(suffix);

	if (len < ql + sl || (!prefix && len != ql + sl))
		return 0;
	return memcmp(s, queue, ql) == 0 && memcmp(s + ql, suffix, sl) == 0;
}

static void
describe(char *why, size_t size, const char *key, const char *worker,
    const char *a, const char *sa, int wa, const char *b, const char *sb,
    int wb)
{
	snprintf(why, size, "%s%s is QUEUE%s%s of \"%s\" and QUEUE%s%s of "
	    "\"%s\"", key, worker, sa, wa ? "WORKER" : "", a, sb,
	    wb ? "WORKER" : "", b);
}

int
qkeys_collide(const char *a, const char *b, char *why, size_t size)
{
	char ka[1024], kb[1024];
	size_t i, j, la, lb;

	if (strcmp(a, b) == 0)
		return 0;	/* one queue, listed twice: not ours to judge */
	for (i = 0; i < NEXACT + NPER; i++) {
		const char *sa = i < NEXACT ? exact[i] : per_worker[i - NEXACT];
		int wa = i >= NEXACT;

		la = (size_t)snprintf(ka, sizeof(ka), "%s%s", a, sa);
		if (la >= sizeof(ka))
			continue;
		for (j = 0; j < NEXACT + NPER; j++) {
			const char *sb = j < NEXACT ? exact[j] :
			    per_worker[j - NEXACT];
			int wb = j >= NEXACT;

			lb = (size_t)snprintf(kb, sizeof(kb), "%s%s", b, sb);
			if (lb >= sizeof(kb))
				continue;
			/*
			 * A fixed key meets a fixed key when they are equal;
			 * a worker's key (any nonempty WORKER) meets a key
			 * that is longer than its prefix and starts with it;
			 * two workers' keys meet when one prefix starts the
			 * other.
			 */
			if (!wa && !wb && la == lb && memcmp(ka, kb, la) == 0) {
				describe(why, size, ka, "", a, sa, 0, b, sb, 0);
				return 1;
			}
			if (!wa && wb && la > lb && spells(ka, la, b, sb, 1)) {
				describe(why, size, ka, "", a, sa, 0, b, sb, 1);
				return 1;
			}
			if (wa && !wb && lb > la && spells(kb, lb, a, sa, 1)) {
				describe(why, size, kb, "", a, sa, 1, b, sb, 0);
				return 1;
			}
			if (wa && wb && (spells(ka, la, b, sb, 1) ||
			    spells(kb, lb, a, sa, 1))) {
				describe(why, size, la > lb ? ka : kb, "ID", a,
				    sa, 1, b, sb, 1);
				return 1;
			}
		}
	}
	return 0;
}
