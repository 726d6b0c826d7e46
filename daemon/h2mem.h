/*
 * h2mem: nghttp2's allocator for the h2c client. A stream costs nghttp2
 * some ten small allocations, made and freed in bursts of hundreds a
 * loop turn; glibc keeps only seven freed blocks of a size at hand and
 * sorts, splits and merges the rest. Here freed blocks wait in lists by
 * size class, up to a bound in bytes, for the next stream.
 */
#ifndef TASKWORKERD_H2MEM_H
#define TASKWORKERD_H2MEM_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

#define H2MEM_KEEP	(512 * 1024)	/* bytes of freed blocks kept at most */

struct h2mem;

/*
 * A cache keeping up to KEEP bytes of freed blocks; with KEEP 0 every
 * block is malloc'd and freed at its own size.
 */
struct h2mem *h2mem_new(size_t keep);
/*
 * Whether AddressSanitizer watches: then the pool asks for KEEP 0, so
 * that it sees nghttp2's blocks as they are freed and their exact
 * bounds, which a cache would hide. (valgrind is told by the cache.)
 */
int h2mem_checked(void);
/* Frees M and the blocks it keeps: every session using it is gone. */
void h2mem_free(struct h2mem *m);
/* M as nghttp2 takes an allocator (nghttp2_session_client_new3). */
nghttp2_mem *h2mem_nghttp2(struct h2mem *m);
/* Bytes of freed blocks M keeps now. */
size_t h2mem_kept(const struct h2mem *m);

#endif
