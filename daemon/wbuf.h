/*
 * wbuf: a growing byte buffer for text that may be confidential (a task's
 * row on its way to an HTTP service). What it outgrows is wiped before it
 * is freed, and so is all it ever held when it goes.
 */
#ifndef TASKWORKERD_WBUF_H
#define TASKWORKERD_WBUF_H

#include <stddef.h>
#include <stdint.h>

struct wbuf {
	char *p;
	size_t len;		/* bytes written since the last reset */
	size_t cap;
	int failed;		/* out of memory: what came after is lost */
};

/* Appends N bytes at S (nothing once failed). */
void wbuf_put(struct wbuf *b, const char *s, size_t n);
void wbuf_putc(struct wbuf *b, char c);
void wbuf_puts(struct wbuf *b, const char *s);
/* V in decimal. */
void wbuf_put_i64(struct wbuf *b, int64_t v);
/* Empty again, its storage kept for the next text (and not wiped). */
void wbuf_reset(struct wbuf *b);
/* Wipes all of its storage and frees it: the buffer is empty and new. */
void wbuf_free(struct wbuf *b);

#endif
