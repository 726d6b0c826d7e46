/*
 * fuzz_taskid: libFuzzer target for the id parser. Traps when an accepted
 * input is not the canonical "%lld" text of an id >= 1, when a refusal
 * gives no reason, or when the canonical text of a positive int64 is
 * refused.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Nonzero when the SIZE bytes at DATA are exactly "%lld" of a value >= 1. */
static int
canonical_positive(const uint8_t *data, size_t size)
{
	char in[32], out[32];
	long long v;
	char *end;

	if (size == 0 || size >= sizeof(in) ||
	    memchr(data, '\0', size) != NULL)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	errno = 0;
	v = strtoll(in, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1)
		return 0;
	snprintf(out, sizeof(out), "%lld", v);
	return strcmp(in, out) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[32];
	const char *why = NULL;
	int64_t id = 0;
	int n;

	if (taskid_parse((const char *)data, size, &id, &why) == 0) {
		if (id < 1)
			__builtin_trap();
		n = snprintf(buf, sizeof(buf), "%lld", (long long)id);
		if (n < 0 || (size_t)n != size || memcmp(buf, data, size) != 0)
			__builtin_trap();
	} else {
		if (why == NULL || why[0] == '\0')
			__builtin_trap();
		if (canonical_positive(data, size))
			__builtin_trap();
	}
	return 0;
}
