/*
 * h2mem: a block carries a 16-byte head, its class (or BIG and the size
 * asked) before what the caller gets, so a free knows its list; blocks
 * are 16-byte aligned as malloc's are.
 *
 * valgrind's memcheck is told what a cache hides from it: a kept block,
 * and the part of a block past the size asked, may not be touched. Under
 * AddressSanitizer the pool keeps nothing (h2mem_checked), so that it
 * sees every block freed and its exact size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_NOACCESS(p, n)	((void)0)
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n)	((void)0)
#define VALGRIND_MAKE_MEM_DEFINED(p, n)	((void)0)
#endif

#include "h2mem.h"

#define STEP	32		/* bytes between two classes */
#define NCLASS	32		/* classes: blocks up to STEP * NCLASS */
#define BIG	NCLASS		/* a block malloc'd for its size alone */

struct head {
	uint32_t cls;
	size_t size;		/* the size asked */
};

union block_head {
	struct head h;
	char pad[16];
};

_Static_assert(sizeof(union block_head) == 16,
    "a block's head keeps malloc's 16-byte alignment");

struct free_block {
	struct free_block *next;
};

struct h2mem {
	nghttp2_mem mem;
	size_t keep;		/* 0: every block malloc'd at its size */
	struct free_block *free[NCLASS];
	size_t kept;		/* bytes of the blocks in the lists */
};

/* What a block of class C can hold. */
static size_t
room(uint32_t c)
{
	return (size_t)STEP * (c + 1);
}

/* Whether a block of SIZE is malloc'd for its size alone. */
static int
is_big(const struct h2mem *m, size_t size)
{
	return m->keep == 0 || size > room(NCLASS - 1);
}

/* A BIG block of SIZE, B's bytes moved in (B NULL: a new one). */
static void *
big(union block_head *b, size_t size)
{
	if (size > SIZE_MAX - sizeof(*b) ||
	    (b = realloc(b, sizeof(*b) + size)) == NULL)
		return NULL;
	b->h.cls = BIG;
	b->h.size = size;
	return b + 1;
}

static void *
mem_malloc(size_t size, void *user)
{
	struct h2mem *m = user;
	union block_head *b;
	struct free_block *f;
	uint32_t c;

	if (is_big(m, size))
		return big(NULL, size);
	c = size == 0 ? 0 : (uint32_t)((size - 1) / STEP);
	if ((f = m->free[c]) != NULL) {
		VALGRIND_MAKE_MEM_DEFINED(&f->next, sizeof(f->next));
		m->free[c] = f->next;
		m->kept -= sizeof(*b) + room(c);
		VALGRIND_MAKE_MEM_UNDEFINED(f, size);
		b = (union block_head *)f - 1;
	} else {
		if ((b = malloc(sizeof(*b) + room(c))) == NULL)
			return NULL;
		b->h.cls = c;
		VALGRIND_MAKE_MEM_NOACCESS((char *)(b + 1) + size,
		    room(c) - size);
	}
	b->h.size = size;
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
	if (c == BIG || m->kept + sizeof(*b) + room(c) > m->keep) {
		free(b);
		return;
	}
	VALGRIND_MAKE_MEM_UNDEFINED(f, sizeof(*f));
	f->next = m->free[c];
	m->free[c] = f;
	m->kept += sizeof(*b) + room(c);
	VALGRIND_MAKE_MEM_NOACCESS(f, room(c));
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
	struct h2mem *m = user;
	union block_head *b;
	size_t had;
	void *p;

	if (ptr == NULL)
		return mem_malloc(size, user);
	b = (union block_head *)ptr - 1;
	had = b->h.size;
	if (b->h.cls != BIG && size <= room(b->h.cls)) {
		/* It fits where it is. */
		if (size > had)
			VALGRIND_MAKE_MEM_UNDEFINED((char *)ptr + had,
			    size - had);
		else
			VALGRIND_MAKE_MEM_NOACCESS((char *)ptr + size,
			    had - size);
		b->h.size = size;
		return ptr;
	}
	if (b->h.cls == BIG && is_big(m, size))
		return big(b, size);
	if ((p = mem_malloc(size, user)) == NULL)
		return NULL;
	memcpy(p, ptr, had < size ? had : size);
	mem_free(ptr, user);
	return p;
}

int
h2mem_checked(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return 1;
#endif
#endif
	return 0;
}

struct h2mem *
h2mem_new(size_t keep)
{
	struct h2mem *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	m->keep = keep;
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
			VALGRIND_MAKE_MEM_DEFINED(&f->next, sizeof(f->next));
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
