/*
 * test_h2mem: nghttp2's allocator for the h2c client: blocks of a size
 * class come back for the next allocation, the bound on what is kept,
 * big blocks, realloc keeping the bytes, calloc's zeroes and overflow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2mem.h"
#include "tap.h"

#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>

/* Under memcheck: whether N bytes at P may be touched (-1: not watched). */
static int
addressable(const void *p, size_t n)
{
	char vbits[64];

	if (!RUNNING_ON_VALGRIND || n > sizeof(vbits))
		return -1;
	return VALGRIND_GET_VBITS(p, vbits, n) == 1;
}
#else
static int
addressable(const void *p, size_t n)
{
	(void)p;
	(void)n;
	return -1;
}
#endif

/*
 * What memcheck is told (when the test runs under it): a kept block may
 * not be touched, nor a block past the size asked; a block handed out
 * again may be.
 */
static void
test_memcheck_told(void)
{
	struct h2mem *m = h2mem_new(H2MEM_KEEP);
	nghttp2_mem *a = h2mem_nghttp2(m);
	unsigned char *p, *q;

	if (addressable(m, 1) == -1) {
		ok(1, "what memcheck is told # SKIP not under valgrind's memcheck");
		h2mem_free(m);
		return;
	}
	p = a->malloc(20, a->mem_user_data);
	ok(addressable(p, 20) == 1 && addressable(p + 20, 1) == 0,
	    "a new block: its 20 bytes, not its class's 32");
	q = a->realloc(p, 30, a->mem_user_data);
	ok(q == p && addressable(q, 30) == 1 && addressable(q + 30, 1) == 0,
	    "grown in place: 30 bytes");
	a->free(q, a->mem_user_data);
	ok(addressable(q, 1) == 0, "a kept block may not be touched");
	p = a->malloc(8, a->mem_user_data);
	ok(p == q && addressable(p, 8) == 1 && addressable(p + 8, 1) == 0,
	    "handed out again: the 8 bytes asked");
	a->free(p, a->mem_user_data);
	h2mem_free(m);
}

static void
test_reuse(void)
{
	struct h2mem *m = h2mem_new(H2MEM_KEEP);
	nghttp2_mem *a = h2mem_nghttp2(m);
	void *p, *q, *r;

	p = a->malloc(40, a->mem_user_data);
	ok(p != NULL && ((uintptr_t)p & 15) == 0, "a block, 16-byte aligned");
	memset(p, 0xab, 40);
	a->free(p, a->mem_user_data);
	ok(h2mem_kept(m) > 0, "a freed block is kept (%zu bytes)", h2mem_kept(m));
	q = a->malloc(64, a->mem_user_data);
	ok(q == p, "the next of its class reuses it");
	ok(h2mem_kept(m) == 0, "and is no longer counted as kept");
	r = a->malloc(65, a->mem_user_data);
	ok(r != NULL && r != q, "a larger class gets another block");
	a->free(q, a->mem_user_data);
	a->free(r, a->mem_user_data);
	a->free(NULL, a->mem_user_data);
	ok(1, "free(NULL) does nothing");
	p = a->malloc(0, a->mem_user_data);
	ok(p != NULL, "malloc(0) gives a block");
	a->free(p, a->mem_user_data);
	h2mem_free(m);
}

static void
test_bound(void)
{
	enum { N = 4 * H2MEM_KEEP / 1024 };
	struct h2mem *m = h2mem_new(H2MEM_KEEP);
	nghttp2_mem *a = h2mem_nghttp2(m);
	void **ps = calloc(N, sizeof(*ps));

	for (int i = 0; i < N; i++)
		ps[i] = a->malloc(1000, a->mem_user_data);
	for (int i = 0; i < N; i++)
		a->free(ps[i], a->mem_user_data);
	ok(h2mem_kept(m) <= H2MEM_KEEP && h2mem_kept(m) > H2MEM_KEEP / 2,
	    "no more than H2MEM_KEEP kept (%zu of %d bytes freed)",
	    h2mem_kept(m), N * 1000);
	free(ps);
	h2mem_free(m);
}

static void
test_big_and_realloc(void)
{
	struct h2mem *m = h2mem_new(H2MEM_KEEP);
	nghttp2_mem *a = h2mem_nghttp2(m);
	unsigned char *p, *q;
	int same = 1;

	p = a->malloc(100000, a->mem_user_data);
	ok(p != NULL && ((uintptr_t)p & 15) == 0, "a big block, aligned");
	a->free(p, a->mem_user_data);
	ok(h2mem_kept(m) == 0, "a big block is not kept");

	p = a->malloc(10, a->mem_user_data);
	for (int i = 0; i < 10; i++)
		p[i] = (unsigned char)i;
	q = a->realloc(p, 20, a->mem_user_data);
	ok(q == p, "a realloc within the class stays in place");
	q = a->realloc(q, 300, a->mem_user_data);
	for (int i = 0; i < 10; i++)
		same &= q[i] == i;
	ok(q != NULL && same, "a realloc to a larger class keeps the bytes");
	memset(q, 7, 300);
	q = a->realloc(q, 50000, a->mem_user_data);
	same = q != NULL;
	for (int i = 0; same && i < 300; i++)
		same &= q[i] == 7;
	ok(same, "to a big block too");
	memset(q, 9, 50000);
	q = a->realloc(q, 200000, a->mem_user_data);
	same = q != NULL;
	for (int i = 0; same && i < 50000; i++)
		same &= q[i] == 9;
	ok(same, "and from big to bigger");
	q = a->realloc(q, 16, a->mem_user_data);
	ok(q != NULL && q[0] == 9 && q[15] == 9, "and back to a small one");
	a->free(q, a->mem_user_data);
	q = a->realloc(NULL, 24, a->mem_user_data);
	ok(q != NULL, "realloc(NULL) allocates");
	a->free(q, a->mem_user_data);
	h2mem_free(m);
}

static void
test_calloc(void)
{
	struct h2mem *m = h2mem_new(H2MEM_KEEP);
	nghttp2_mem *a = h2mem_nghttp2(m);
	unsigned char *p;
	int zero = 1;

	p = a->malloc(96, a->mem_user_data);
	memset(p, 0xff, 96);
	a->free(p, a->mem_user_data);
	p = a->calloc(12, 8, a->mem_user_data);
	for (int i = 0; i < 96; i++)
		zero &= p[i] == 0;
	ok(p != NULL && zero, "calloc zeroes a reused block");
	a->free(p, a->mem_user_data);
	ok(a->calloc(SIZE_MAX / 2, 4, a->mem_user_data) == NULL,
	    "calloc refuses a size that overflows");
	ok(a->malloc(SIZE_MAX - 8, a->mem_user_data) == NULL,
	    "malloc refuses a size its head overflows");
	h2mem_free(m);
}

/* KEEP 0, as under a memory checker: nothing kept, every size exact. */
static void
test_keep_none(void)
{
	struct h2mem *m = h2mem_new(0);
	nghttp2_mem *a = h2mem_nghttp2(m);
	unsigned char *p, *q;

	p = a->malloc(40, a->mem_user_data);
	memset(p, 3, 40);
	q = a->realloc(p, 20, a->mem_user_data);
	ok(q != NULL && q[19] == 3, "a realloc down keeps the bytes");
	q = a->realloc(q, 700, a->mem_user_data);
	ok(q != NULL && q[0] == 3 && q[19] == 3, "and up");
	a->free(q, a->mem_user_data);
	ok(h2mem_kept(m) == 0, "nothing kept");
	h2mem_free(m);
}

int
main(void)
{
	test_keep_none();
	test_memcheck_told();
	test_reuse();
	test_bound();
	test_big_and_realloc();
	test_calloc();
	return done_testing();
}
