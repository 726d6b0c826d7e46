/*
 * wbuf: a growing buffer that never leaves a copy of its bytes behind in
 * freed memory (glibc's open_memstream and realloc() do).
 */
#include <stdlib.h>
#include <string.h>

#include "taskid.h"
#include "wbuf.h"

#define WBUF_FIRST	512

/* Room for N more bytes: 0, or -1 (and failed) when there is no memory. */
static int
grow(struct wbuf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : WBUF_FIRST;
	char *p;

	if (b->failed)
		return -1;
	if (n <= b->cap - b->len)
		return 0;
	while (cap - b->len < n) {
		if (cap > SIZE_MAX / 2) {
			b->failed = 1;
			return -1;
		}
		cap *= 2;
	}
	if ((p = malloc(cap)) == NULL) {
		b->failed = 1;
		return -1;
	}
	if (b->p != NULL) {
		memcpy(p, b->p, b->len);
		explicit_bzero(b->p, b->cap);
		free(b->p);
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

/* wbuf_put's way when the bytes do not fit (or it failed before). */
void
wbuf_put_grow(struct wbuf *b, const char *s, size_t n)
{
	if (grow(b, n) == -1)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void
wbuf_puts(struct wbuf *b, const char *s)
{
	wbuf_put(b, s, strlen(s));
}

void
wbuf_put_i64(struct wbuf *b, int64_t v)
{
	char text[TASKID_TEXT_SIZE];

	wbuf_put(b, text, taskid_format(text, v));
}

void
wbuf_reset(struct wbuf *b)
{
	b->len = 0;
	b->failed = 0;
}

void
wbuf_free(struct wbuf *b)
{
	if (b->p != NULL) {
		explicit_bzero(b->p, b->cap);
		free(b->p);
	}
	memset(b, 0, sizeof(*b));
}
