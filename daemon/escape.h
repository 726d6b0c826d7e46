/*
 * escape: bytes of any kind written as a JSON string or as text that is
 * safe for a terminal.
 */
#ifndef TASKWORKERD_ESCAPE_H
#define TASKWORKERD_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

/*
 * S as a JSON string, quoted; bytes that are not UTF-8, and the C1
 * controls, become \u00XX.
 */
void escape_json(FILE *f, const char *s, size_t len);
/* The same, each piece of text handed to PUT with ARG. */
typedef void escape_put_fn(void *arg, const char *s, size_t n);
void escape_json_to(escape_put_fn *put, void *arg, const char *s,
    size_t len);
/*
 * S for a terminal: control bytes (C0, DEL and the C1 U+0080..U+009F),
 * backslashes and bytes that are not UTF-8 escaped as \xNN.
 */
void escape_text(FILE *f, const char *s, size_t len);

#endif
