/*
 * qkeys: QUEUE and its suffixes, the one spelling of every key name that
 * C code sends (the Lua scripts derive the per-worker ones from these).
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
	k->dead = name(queue, ":dead", NULL);
	k->reason = name(queue, ":dead:reason", NULL);
	k->attempts = name(queue, ":attempts", NULL);
	k->retry = name(queue, ":retry", NULL);
	k->scheduled = name(queue, ":scheduled", NULL);
	k->workers = name(queue, ":workers", NULL);
	k->paused = name(queue, ":paused", NULL);
	if (worker != NULL) {
		k->processing = name(queue, ":processing:", worker);
		k->heartbeat = name(queue, ":heartbeat:", worker);
	}
	if (!k->queue || !k->processing_of || !k->dead || !k->reason ||
	    !k->attempts || !k->retry || !k->scheduled || !k->workers ||
	    !k->paused || (worker != NULL && (!k->processing ||
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
	free(k->dead);
	free(k->reason);
	free(k->attempts);
	free(k->retry);
	free(k->scheduled);
	free(k->workers);
	free(k->heartbeat);
	free(k->paused);
	memset(k, 0, sizeof(*k));
}
