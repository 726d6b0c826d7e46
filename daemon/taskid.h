/*
 * taskid: parse the text of a task id as it arrives from Redis, and
 * write one back as text.
 * An id is the decimal text of a positive 64-bit integer, nothing else.
 */
#ifndef TASKWORKERD_TASKID_H
#define TASKWORKERD_TASKID_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parse LEN bytes at S (not NUL-terminated, may hold any byte) as an id.
 * Returns 0 and sets *ID, or -1 and sets *WHY to a short static reason
 * ("empty", "not a decimal number", "zero or negative", "out of range", ...).
 */
int taskid_parse(const char *s, size_t len, int64_t *id, const char **why);

/* Bytes that hold any int64_t in decimal, its sign and a NUL. */
#define TASKID_TEXT_SIZE	21

/*
 * ID in decimal at BUF (TASKID_TEXT_SIZE bytes), NUL-terminated; its
 * length. Any int64_t, negative ones too: the hot paths write every id
 * they send, and printf's machinery costs more than the digits.
 */
size_t taskid_format(char *buf, int64_t id);

#endif
