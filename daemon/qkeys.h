/*
 * qkeys: the names of one queue's Redis keys (README "Redis keys"), built
 * in one place for the daemon and taskworkerctl.
 */
#ifndef TASKWORKERD_QKEYS_H
#define TASKWORKERD_QKEYS_H

struct qkeys {
	char *queue;
	char *processing;	/* QUEUE:processing:WORKER (NULL: no worker) */
	char *processing_of;	/* QUEUE:processing: (any worker's, a prefix) */
	char *heartbeat_of;	/* QUEUE:heartbeat: (a prefix) */
	char *dead;		/* QUEUE:dead */
	char *reason;		/* QUEUE:dead:reason */
	char *attempts;		/* QUEUE:attempts */
	char *retry;		/* QUEUE:retry */
	char *scheduled;	/* QUEUE:scheduled */
	char *workers;		/* QUEUE:workers */
	char *heartbeat;	/* QUEUE:heartbeat:WORKER (NULL: no worker) */
	char *paused;		/* QUEUE:paused */
	char *limit;		/* QUEUE:limit, the rate's state */
};

/* The keys of QUEUE, and of WORKER's own when not NULL. -1: no memory. */
int qkeys_make(struct qkeys *k, const char *queue, const char *worker);
void qkeys_free(struct qkeys *k);

/*
 * Nonzero when queues A and B, two names, would share a Redis key: one
 * is a key of the other ("jobs:dead" beside "jobs"), or a key of one is
 * a worker's key of the other ("jobs:processing" beside "jobs": its
 * jobs:processing:dead is the processing set of a worker "dead"). WHY
 * (SIZE bytes) then names the key and what it is to each queue.
 */
int qkeys_collide(const char *a, const char *b, char *why, size_t size);

#endif
