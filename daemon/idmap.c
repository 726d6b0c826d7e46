/*
 * idmap: a chained hash table of values held, keyed by queue and bytes,
 * seeded per process and doubled as it fills (amortized O(1) a step).
 */
#include <stdlib.h>
#include <string.h>

#include "idmap.h"

#define MIN_BUCKETS	64

static uint64_t
hash_of(const struct idmap *m, int qi, const char *key, size_t len)
{
	uint64_t h = m->seed ^ 0xcbf29ce484222325ULL ^ (uint64_t)qi;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 0x100000001b3ULL;
	}
	/* A final mix, so the low bits that choose a bucket depend on all. */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

int
idmap_init(struct idmap *m, uint64_t seed)
{
	memset(m, 0, sizeof(*m));
	m->b = calloc(MIN_BUCKETS, sizeof(*m->b));
	if (m->b == NULL)
		return -1;
	m->nb = MIN_BUCKETS;
	m->seed = seed;
	return 0;
}

void
idmap_free(struct idmap *m)
{
	free(m->b);
	memset(m, 0, sizeof(*m));
}

struct idnode *
idmap_find(const struct idmap *m, int qi, const char *key, size_t len)
{
	uint64_t h = hash_of(m, qi, key, len);
	struct idnode *n;

	for (n = m->b[h & (m->nb - 1)]; n != NULL; n = n->next)
		if (n->hash == h && n->qi == qi && n->len == len &&
		    memcmp(n->key, key, len) == 0)
			return n;
	return NULL;
}

/* Twice the buckets; when memory is short the chains just grow longer. */
static void
grow(struct idmap *m)
{
	size_t nb = m->nb * 2;
	struct idnode **b = calloc(nb, sizeof(*b));

	if (b == NULL)
		return;
	for (size_t i = 0; i < m->nb; i++) {
		struct idnode *n, *next;

		for (n = m->b[i]; n != NULL; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

void
idmap_add(struct idmap *m, struct idnode *n)
{
	struct idnode **head;

	if (m->n >= m->nb)
		grow(m);
	n->hash = hash_of(m, n->qi, n->key, n->len);
	head = &m->b[n->hash & (m->nb - 1)];
	n->next = *head;
	*head = n;
	m->n++;
}

void
idmap_del(struct idmap *m, struct idnode *n)
{
	struct idnode **p = &m->b[n->hash & (m->nb - 1)];

	for (; *p != NULL; p = &(*p)->next)
		if (*p == n) {
			*p = n->next;
			m->n--;
			return;
		}
}
