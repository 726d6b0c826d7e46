/*
 * idmap: the values held in memory, by queue and bytes, so that an id
 * taken again while held is found in O(1). Nodes live inside their owner.
 */
#ifndef TASKWORKERD_IDMAP_H
#define TASKWORKERD_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idnode {
	struct idnode *next;
	uint64_t hash;
	int qi;
	size_t len;
	const char *key;	/* the owner's bytes, kept while mapped */
};

struct idmap {
	struct idnode **b;
	size_t nb;		/* buckets, a power of two */
	size_t n;
	uint64_t seed;
};

/* -1 when out of memory. */
int idmap_init(struct idmap *m, uint64_t seed);
/* Forgets every node (the nodes are their owners'). */
void idmap_free(struct idmap *m);
struct idnode *idmap_find(const struct idmap *m, int qi, const char *key,
    size_t len);
/* N's KEY, LEN and QI are set; a node already mapped must not be added. */
void idmap_add(struct idmap *m, struct idnode *n);
void idmap_del(struct idmap *m, struct idnode *n);

#endif
