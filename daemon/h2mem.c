/*
 * h2mem: a block carries a 16-byte head, its class (or BIG and the size
 * asked) before what the caller gets, so a free knows its list; blocks
 * are 16-byte aligned as malloc's are.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2mem.h"

#define STEP	32		/* bytes between two classes */
#define NCLASS	32		/* classes: blocks up to STEP * NCLASS */
#define BIG	NCLASS		/* a block malloc'd for its size alone */

struct head {
	uint32_t cls;
	size_t size;		/* BIG: the size asked */
};

union block_head {
	struct head h;
	char pad[16];
};

struct free_block {
	struct free_block *next;
};

struct h2mem {
	nghttp2_mem mem;
	struct free_block *free[NCLASS];
	size_t kept;		/* bytes of the blocks in the lists */
};

/* What a block of class C can hold. */
static size_t
room(uint32_t c)
{
	return (size_t)STEP * (c + 1);
}

static void *
mem_malloc(size_t size, void *user)
{
	struct h2mem *m = user;
	union block_head *b;
	struct free_block *f;
	uint32_t c;

	if (size > room(NCLASS - 1)) {
		if (size > SIZE_MAX - sizeof(*b) ||
		    (b = malloc(sizeof(*b) + size)) == NULL)
			return NULL;
		b->h.cls = BIG;
		b->h.size = size;
		return b + 1;
	}
	c = size == 0 ? 0 : (uint32_t)((size - 1) / STEP);
	if ((f = m->free[c]) != NULL) {
		m->free[c] = f->next;
		m->kept -= sizeof(*b) + room(c);
		return f;
	}
	if ((b = malloc(sizeof(*b) + room(c))) == NULL)
		return NULL;
	b->h.cls = c;
	b->h.size = 0;
	return b + 1;
}

static void
mem_free(void *ptr, void *user)
{
	struct h2mem *m = user;
	union block_head *b;
	struct free_block *f = ptr;
	uint32_t c;

	if (ptr == NULL)
		return;
	b = (union block_head *)ptr - 1;
	c = b->h.cls;
	if (c == BIG || m->kept + sizeof(*b) + room(c) > H2MEM_KEEP) {
		free(b);
		return;
	}
	f->next = m->free[c];
	m->free[c] = f;
	m->kept += sizeof(*b) + room(c);
}

static void *
mem_calloc(size_t n, size_t size, void *user)
{
	void *p;

	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	if ((p = mem_malloc(n * size, user)) != NULL)
		memset(p, 0, n * size);
	return p;
}

static void *
mem_realloc(void *ptr, size_t size, void *user)
{
	union block_head *b;
	size_t had;
	void *p;

	if (ptr == NULL)
		return mem_malloc(size, user);
	b = (union block_head *)ptr - 1;
	had = b->h.cls == BIG ? b->h.size : room(b->h.cls);
	if (b->h.cls != BIG && size <= had)
		return ptr;		/* it fits where it is */
	if (b->h.cls == BIG && size > room(NCLASS - 1)) {
		if (size > SIZE_MAX - sizeof(*b) ||
		    (b = realloc(b, sizeof(*b) + size)) == NULL)
			return NULL;
		b->h.size = size;
		return b + 1;
	}
	if ((p = mem_malloc(size, user)) == NULL)
		return NULL;
	memcpy(p, ptr, had < size ? had : size);
	mem_free(ptr, user);
	return p;
}

struct h2mem *
h2mem_new(void)
{
	struct h2mem *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	m->mem = (nghttp2_mem){ .mem_user_data = m, .malloc = mem_malloc,
	    .free = mem_free, .calloc = mem_calloc, .realloc = mem_realloc };
	return m;
}

void
h2mem_free(struct h2mem *m)
{
	struct free_block *f;

	if (m == NULL)
		return;
	for (int c = 0; c < NCLASS; c++)
		while ((f = m->free[c]) != NULL) {
			m->free[c] = f->next;
			free((union block_head *)f - 1);
		}
	free(m);
}

nghttp2_mem *
h2mem_nghttp2(struct h2mem *m)
{
	return &m->mem;
}

size_t
h2mem_kept(const struct h2mem *m)
{
	return m->kept;
}
