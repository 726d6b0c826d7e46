/*
 * test_taskid: the id parser against good ids, near misses and hostile
 * bytes; every case checks both the verdict and the reason.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskid.h"
#include "tap.h"

struct good {
	const char *s;
	int64_t id;
};

struct bad {
	const char *s;
	size_t len;		/* 0: strlen(s) */
	const char *why;
};

static const struct good goods[] = {
	{ "1", 1 },
	{ "42", 42 },
	{ "1000000", 1000000 },
	{ "9223372036854775807", INT64_MAX },
	{ "9223372036854775806", INT64_MAX - 1 },
};

static const struct bad bads[] = {
	{ "", 0, "empty" },
	{ "0", 0, "zero or negative" },
	{ "-1", 0, "zero or negative" },
	{ "-0", 0, "zero or negative" },
	{ "-", 0, "not a decimal number" },
	{ "-x", 0, "not a decimal number" },
	{ "9223372036854775808", 0, "out of range" },
	{ "18446744073709551615", 0, "out of range" },
	{ "18446744073709551616", 0, "out of range" },
	{ "99999999999999999999", 0, "out of range" },
	{ " 42", 0, "not a decimal number" },
	{ "42 ", 0, "not a decimal number" },
	{ "4 2", 0, "not a decimal number" },
	{ "42\n", 0, "not a decimal number" },
	{ "+42", 0, "not a decimal number" },
	{ "0x10", 0, "not a decimal number" },
	{ "1e3", 0, "not a decimal number" },
	{ "4.2", 0, "not a decimal number" },
	{ "007", 0, "leading zero" },
	{ "00", 0, "leading zero" },
	{ "42\0", 3, "not a decimal number" },
	{ "\0" "42", 3, "not a decimal number" },
	{ "\xff\xfe\x01", 0, "not a decimal number" },
	{ "\x80" "1", 0, "not a decimal number" },
	{ "\xd9\xa1", 0, "not a decimal number" },	/* Arabic-Indic one */
	{ "1; DROP TABLE task", 0, "not a decimal number" },
};

static void
test_good(void)
{
	const char *why;
	int64_t id;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		id = -7;
		why = "untouched";
		rc = taskid_parse(goods[i].s, strlen(goods[i].s), &id, &why);
		ok(rc == 0 && id == goods[i].id, "\"%s\" parses to %lld "
		    "(rc %d, id %lld)", goods[i].s, (long long)goods[i].id,
		    rc, (long long)id);
	}
}

static void
test_bad(void)
{
	const char *why;
	int64_t id;
	size_t i, len;
	int rc;

	for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		len = bads[i].len != 0 ? bads[i].len : strlen(bads[i].s);
		id = -7;
		why = NULL;
		rc = taskid_parse(bads[i].s, len, &id, &why);
		ok(rc == -1 && id == -7 && why != NULL &&
		    strcmp(why, bads[i].why) == 0,
		    "case %zu (%zu bytes) refused as \"%s\" (rc %d, why %s)",
		    i, len, bads[i].why, rc, why != NULL ? why : "NULL");
	}
}

/* The parser must stop at len: digits past it do not count. */
static void
test_len_bound(void)
{
	const char *why = NULL;
	char *buf;
	int64_t id = 0;
	int rc;

	rc = taskid_parse("12345", 2, &id, &why);
	ok(rc == 0 && id == 12, "only len bytes are read (id %lld)",
	    (long long)id);

	/* A buffer with no terminator at all: ASan catches an overread. */
	if ((buf = malloc(3)) == NULL)
		abort();
	memcpy(buf, "789", 3);
	id = 0;
	rc = taskid_parse(buf, 3, &id, &why);
	ok(rc == 0 && id == 789, "an unterminated buffer parses (id %lld)",
	    (long long)id);
	free(buf);

	why = NULL;
	rc = taskid_parse("5", 0, &id, &why);
	ok(rc == -1 && why != NULL && strcmp(why, "empty") == 0,
	    "len 0 is empty even if the byte is a digit (why %s)",
	    why != NULL ? why : "NULL");
}

static void
test_huge(void)
{
	const size_t len = 1024 * 1024;
	const char *why = NULL;
	char *buf;
	int64_t id = -7;
	int rc;

	if ((buf = malloc(len)) == NULL)
		abort();
	memset(buf, '9', len);
	rc = taskid_parse(buf, len, &id, &why);
	ok(rc == -1 && id == -7 && why != NULL &&
	    strcmp(why, "out of range") == 0,
	    "1 MiB of digits is out of range (why %s)",
	    why != NULL ? why : "NULL");

	buf[len - 1] = 'x';
	why = NULL;
	rc = taskid_parse(buf, len, &id, &why);
	ok(rc == -1 && why != NULL &&
	    strcmp(why, "not a decimal number") == 0,
	    "1 MiB of digits ending in a letter is not a number (why %s)",
	    why != NULL ? why : "NULL");
	free(buf);
}

/* taskid_format against printf, at the edges of int64_t. */
static void
test_format(void)
{
	static const int64_t ids[] = { 0, 1, -1, 9, 10, 42, -7, 1000000,
	    INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1 };
	char got[TASKID_TEXT_SIZE], want[32];
	int64_t back;
	const char *why;
	size_t len;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		memset(got, 'x', sizeof(got));
		len = taskid_format(got, ids[i]);
		snprintf(want, sizeof(want), "%lld", (long long)ids[i]);
		if (!ok(strcmp(got, want) == 0, "taskid_format(%s)", want))
			diag("  got: %.*s", (int)sizeof(got), got);
		ok(len == strlen(want), "its length, %zu", len);
		if (ids[i] > 0)
			ok(taskid_parse(got, len, &back, &why) == 0 &&
			    back == ids[i], "parsed back");
	}
}

int
main(void)
{
	test_format();
	test_good();
	test_bad();
	test_len_bound();
	test_huge();
	return done_testing();
}
