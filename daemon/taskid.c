/*
 * taskid: turn the bytes of a Redis list entry into a task id, or say
 * in a few words why they are not one.
 */
#include <stddef.h>
#include <stdint.h>

#include "taskid.h"

#define TASKID_MAX_DIGITS	19	/* INT64_MAX has 19 digits */

static int
all_digits(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static int
reject(const char **why, const char *reason)
{
	if (why != NULL)
		*why = reason;
	return -1;
}

int
taskid_parse(const char *s, size_t len, int64_t *id, const char **why)
{
	uint64_t v = 0;
	size_t i;

	if (s == NULL || len == 0)
		return reject(why, "empty");
	if (s[0] == '-' && len > 1 && all_digits(s + 1, len - 1))
		return reject(why, "zero or negative");
	if (!all_digits(s, len))
		return reject(why, "not a decimal number");
	if (s[0] == '0')
		return reject(why, len == 1 ? "zero or negative" :
		    "leading zero");
	if (len > TASKID_MAX_DIGITS)
		return reject(why, "out of range");
	for (i = 0; i < len; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	if (v > (uint64_t)INT64_MAX)
		return reject(why, "out of range");
	if (id != NULL)
		*id = (int64_t)v;
	return 0;
}

size_t
taskid_format(char *buf, int64_t id)
{
	char rev[TASKID_TEXT_SIZE];
	uint64_t u = id < 0 ? -(uint64_t)id : (uint64_t)id;
	size_t n = 0, len = 0;

	do {
		rev[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u > 0);
	if (id < 0)
		buf[len++] = '-';
	while (n > 0)
		buf[len++] = rev[--n];
	buf[len] = '\0';
	return len;
}
