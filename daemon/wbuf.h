/*
 * wbuf: a growing byte buffer for text that may be confidential (a task's
 * row on its way to an HTTP service). What it outgrows is wiped before it
 * is freed, and so is all it ever held when it goes.
 */
#ifndef TASKWORKERD_WBUF_H
#define TASKWORKERD_WBUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct wbuf {
	char *p;
	size_t len;		/* bytes written since the last reset */
	size_t cap;
	int failed;		/* out of memory: what came after is lost */
};

/* The way of wbuf_put when the bytes do not fit, or it failed before. */
void wbuf_put_grow(struct wbuf *b, const char *s, size_t n);

/* Appends N bytes at S (nothing once failed); S is not in B itself. */
static inline void
wbuf_put(struct wbuf *b, const char *s, size_t n)
{
	if (n > 0 && n <= b->cap - b->len && !b->failed) {
		memcpy(b->p + b->len, s, n);
		b->len += n;
	} else if (n > 0) {
		wbuf_put_grow(b, s, n);
	}
}

static inline void
wbuf_putc(struct wbuf *b, char c)
{
	wbuf_put(b, &c, 1);
}

void wbuf_puts(struct wbuf *b, const char *s);
/* V in decimal. */
void wbuf_put_i64(struct wbuf *b, int64_t v);
/* Empty again, its storage kept for the next text (and not wiped). */
void wbuf_reset(struct wbuf *b);
/* Wipes all of its storage and frees it: the buffer is empty and new. */
void wbuf_free(struct wbuf *b);

#endif
