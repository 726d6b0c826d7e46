/*
 * test_config: the config loader against the shipped example, defaults,
 * every kind of bad value and hostile files, checking each error line.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "cfgtest.h"
#include "config.h"
#include "httpreq.h"
#include "qkeys.h"

static char *
shipped_path(void)
{
	const char *root = getenv("TW_SOURCE_ROOT");
	char *path;

	if (asprintf(&path, "%s/conf/taskworkerd.conf",
	    root != NULL ? root : "../..") == -1)
		abort();
	return path;
}

static char *
slurp(const char *path)
{
	FILE *fp;
	char *buf;
	long n;

	if ((fp = fopen(path, "r")) == NULL)
		return NULL;
	if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n + 1)) ==
	    NULL || fread(buf, 1, (size_t)n, fp) != (size_t)n)
		abort();
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void
check_defaults(const char *what, const struct config *c)
{
	char host[HOST_NAME_MAX + 1] = "";

	gethostname(host, sizeof(host) - 1);

	ok(streq(c->redis.host, "127.0.0.1"), "%s: redis.host", what);
	ok(c->redis.port == 6379, "%s: redis.port %d", what, c->redis.port);
	ok(streq(c->redis.unix_socket, ""), "%s: redis.unix_socket", what);
	ok(c->redis.database == 0, "%s: redis.database", what);
	ok(streq(c->redis.username, ""), "%s: redis.username", what);
	ok(streq(c->redis.password, ""), "%s: redis.password", what);
	ok(streq(c->redis.password_file, ""), "%s: redis.password_file", what);
	ok(c->redis.nqueues == 1 && streq(c->redis.queues[0], "tasks") &&
	    c->redis.queues[1] == NULL, "%s: redis.queues", what);
	ok(c->redis.connect_timeout_ms == 2000, "%s: redis.connect_timeout_ms",
	    what);
	ok(c->redis.command_timeout_ms == 10000,
	    "%s: redis.command_timeout_ms", what);

	ok(streq(c->postgres.conninfo, "dbname=tasks"), "%s: postgres.conninfo",
	    what);
	ok(c->postgres.connections == 2, "%s: postgres.connections", what);
	ok(streq(c->postgres.table, "task"), "%s: postgres.table", what);
	ok(streq(c->postgres.id_column, "id"), "%s: postgres.id_column", what);
	ok(streq(c->postgres.status_column, "status"),
	    "%s: postgres.status_column", what);
	ok(c->postgres.ncolumns == 1 && streq(c->postgres.columns[0], "name") &&
	    c->postgres.columns[1] == NULL, "%s: postgres.columns", what);
	ok(streq(c->postgres.completed_status, "completed"),
	    "%s: postgres.completed_status", what);
	ok(c->postgres.connect_timeout_ms == 5000,
	    "%s: postgres.connect_timeout_ms", what);
	ok(c->postgres.command_timeout_ms == 30000,
	    "%s: postgres.command_timeout_ms", what);

	ok(host[0] != '\0' && streq(c->worker.id, host),
	    "%s: worker.id is the host name '%s' ('%s')", what, host,
	    c->worker.id);
	ok(c->worker.delay_ms == 1000, "%s: worker.delay_ms", what);
	ok(c->worker.concurrency == 4096, "%s: worker.concurrency", what);
	ok(c->worker.shutdown_timeout_ms == 30000,
	    "%s: worker.shutdown_timeout_ms", what);
	ok(c->worker.retry_min_ms == 100, "%s: worker.retry_min_ms", what);
	ok(c->worker.retry_max_ms == 30000, "%s: worker.retry_max_ms", what);
	ok(c->worker.missing_row_grace_ms == 3000,
	    "%s: worker.missing_row_grace_ms", what);
	ok(c->worker.max_bytes_in_flight == 268435456,
	    "%s: worker.max_bytes_in_flight", what);
	ok(c->postgres.max_row_bytes == 16777216,
	    "%s: postgres.max_row_bytes", what);
	ok(c->worker.heartbeat_ttl_ms == 15000,
	    "%s: worker.heartbeat_ttl_ms", what);

	ok(c->handler.type == HANDLER_NONE, "%s: handler.type", what);

	ok(c->log.level == LOG_INFO, "%s: log.level", what);
	ok(c->log.facility == LOG_DAEMON, "%s: log.facility", what);
	ok(streq(c->log.ident, "taskworkerd"), "%s: log.ident", what);
}

/* State for the walk over the example file. */
struct doc_check {
	const char *text;
	int nkeys;
	int missing;
	int uncommented;
};

/* Finds the body of "SECTION: {" ... "};" in TEXT. */
static const char *
section_body(const char *text, const char *section, const char **end)
{
	char head[64];
	const char *p;

	snprintf(head, sizeof(head), "\n%s: {", section);
	if ((p = strstr(text, head)) == NULL)
		return NULL;
	p += strlen(head);
	if ((*end = strstr(p, "\n};")) == NULL)
		return NULL;
	return p;
}

static void
check_documented(void *arg, const char *section, const char *key)
{
	struct doc_check *d = arg;
	const char *body, *end, *line, *next, *block, *p, *r;
	size_t klen = strlen(key);
	int found = 0, commented = 0;

	d->nkeys++;
	if ((body = section_body(d->text, section, &end)) == NULL) {
		d->missing++;
		diag("section %s: missing from the example", section);
		return;
	}
	block = NULL;	/* the comment lines right above LINE */
	for (line = body; line < end; line = next + 1) {
		if ((next = strchr(line, '\n')) == NULL || next > end)
			break;
		for (p = line; *p == '\t' || *p == ' '; p++)
			;
		if (strncmp(p, key, klen) == 0 && strncmp(p + klen, " =", 2) ==
		    0) {
			found = 1;
			commented = block != NULL &&
			    (r = strstr(block, "# Reload:")) != NULL &&
			    r < line;
			break;
		}
		if (*p == '#') {
			if (block == NULL)
				block = line;
		} else
			block = NULL;
	}
	if (!found) {
		d->missing++;
		diag("%s.%s: no '%s =' line in the example", section, key,
		    key);
	} else if (!commented) {
		d->uncommented++;
		diag("%s.%s: no '# Reload:' comment above it", section, key);
	}
}

static void
test_shipped(void)
{
	struct errs e = { NULL, 0 };
	struct config *shipped, *empty;
	struct doc_check d;
	char *path = shipped_path(), *text;

	shipped = load_ok("the shipped conf/taskworkerd.conf", path);
	if (shipped != NULL) {
		check_defaults("shipped", shipped);
		ok(streq(shipped->path, path), "cfg->path is the path given");
	}

	empty = config_load(write_conf(""), collect, &e);
	if (!ok(empty != NULL && e.n == 0, "an empty file loads"))
		errs_show(&e);
	errs_clear(&e);
	if (empty != NULL)
		check_defaults("empty file", empty);
	if (shipped != NULL && empty != NULL)
		ok(!config_redis_conn_changed(shipped, empty) &&
		    !config_postgres_changed(shipped, empty),
		    "the shipped file and the defaults agree");

	memset(&d, 0, sizeof(d));
	if ((text = slurp(path)) == NULL)
		d.text = "";
	else
		d.text = text;
	config_foreach_key(check_documented, &d);
	ok(d.nkeys == 63, "config_foreach_key walks 63 keys (%d)", d.nkeys);
	ok(text != NULL && d.missing == 0, "every key is set in the example "
	    "(%d missing)", d.missing);
	ok(text != NULL && d.uncommented == 0, "every key in the example has "
	    "a Reload: comment (%d without)", d.uncommented);

	free(text);
	free(path);
	config_free(shipped);
	config_free(empty);

	empty = load_ok("a file of comments",
	    write_conf("# nothing\n// at all\n/* here\n */\n"));
	config_free(empty);
}

static void
test_all_keys_set(void)
{
	struct config *c;
	const char *pw, *path;
	char *text;

	pw = write_temp("tw-test-pass", "s3cret\r\nsecond line\n", 20);
	if (asprintf(&text,
	    "redis: {\n"
	    "  host = \"redis.example\"; port = 6380;\n"
	    "  unix_socket = \"/run/redis.sock\"; database = 3;\n"
	    "  username = \"tw\"; password_file = \"%s\";\n"
	    "  queues = [\"high\", \"low\", \"a:b{c}\"];\n"
	    "  connect_timeout_ms = 1; command_timeout_ms = 3600000;\n"
	    "};\n"
	    "postgres: {\n"
	    "  conninfo = \"postgresql://u@127.0.0.1:5433/db\";\n"
	    "  connections = 64; table = \"jobs.Task\";\n"
	    "  id_column = \"Id\"; status_column = \"state\";\n"
	    "  columns = ( \"a\", \"b c\", \"\xc3\xa9\" );\n"
	    "  completed_status = \"done\";\n"
	    "  connect_timeout_ms = 600000; command_timeout_ms = 100;\n"
	    "};\n"
	    "worker: {\n"
	    "  id = \"w-1\"; delay_ms = 0; concurrency = 100000;\n"
	    "  shutdown_timeout_ms = 86400000; retry_min_ms = 7;\n"
	    "  retry_max_ms = 7; missing_row_grace_ms = 0;\n"
	    "};\n"
	    "handler = { type = \"none\"; };\n"
	    "log: { level = \"debug\"; facility = \"local3\"; "
	    "ident = \"tw-test\"; };\n", strrchr(pw, '/') + 1) == -1)
		abort();
	path = write_conf(text);
	free(text);

	if ((c = load_ok("a file setting every key", path)) == NULL)
		return;
	ok(streq(c->redis.host, "redis.example") && c->redis.port == 6380 &&
	    streq(c->redis.unix_socket, "/run/redis.sock") &&
	    c->redis.database == 3 && streq(c->redis.username, "tw"),
	    "redis host, port, unix_socket, database, username");
	ok(streq(c->redis.password, "s3cret"), "the password is the first "
	    "line of a relative password_file, without \\r\\n ('%s')",
	    c->redis.password);
	ok(c->redis.nqueues == 3 && streq(c->redis.queues[0], "high") &&
	    streq(c->redis.queues[1], "low") &&
	    streq(c->redis.queues[2], "a:b{c}") && c->redis.queues[3] == NULL,
	    "redis.queues in order");
	ok(c->redis.connect_timeout_ms == 1 &&
	    c->redis.command_timeout_ms == 3600000, "redis timeouts");
	ok(streq(c->postgres.conninfo, "postgresql://u@127.0.0.1:5433/db") &&
	    c->postgres.connections == 64 &&
	    streq(c->postgres.table, "jobs.Task") &&
	    streq(c->postgres.id_column, "Id") &&
	    streq(c->postgres.status_column, "state") &&
	    streq(c->postgres.completed_status, "done"),
	    "postgres strings and connections");
	ok(c->postgres.ncolumns == 3 && streq(c->postgres.columns[1], "b c") &&
	    streq(c->postgres.columns[2], "\xc3\xa9") &&
	    c->postgres.columns[3] == NULL, "postgres.columns from a ( ) list");
	ok(c->postgres.connect_timeout_ms == 600000 &&
	    c->postgres.command_timeout_ms == 100, "postgres timeouts");
	ok(streq(c->worker.id, "w-1") && c->worker.delay_ms == 0 &&
	    c->worker.concurrency == 100000 &&
	    c->worker.shutdown_timeout_ms == 86400000 &&
	    c->worker.retry_min_ms == 7 && c->worker.retry_max_ms == 7 &&
	    c->worker.missing_row_grace_ms == 0, "worker keys");
	ok(c->log.level == LOG_DEBUG && c->log.facility == LOG_LOCAL3 &&
	    streq(c->log.ident, "tw-test"), "log keys");
	config_free(c);

	c = load_ok("an empty postgres.columns",
	    write_conf("postgres: { columns = []; };\n"));
	if (c != NULL)
		ok(c->postgres.ncolumns == 0 && c->postgres.columns != NULL &&
		    c->postgres.columns[0] == NULL, "[] gives no columns");
	config_free(c);

	c = load_ok("int64 and hex integers in range",
	    write_conf("redis: { port = 0x18EB; database = 5L; };\n"));
	if (c != NULL)
		ok(c->redis.port == 6379 && c->redis.database == 5,
		    "0x18EB is 6379 and 5L is 5");
	config_free(c);
}

static void
test_types(void)
{
	expect_error("unknown key", "redis: {\n  foo = 1;\n};\n", 2,
	    "unknown key 'redis.foo'", NULL);
	expect_error("unknown section", "\n\nfoo: { host = \"x\"; };\n", 3,
	    "unknown section 'foo'", NULL);
	expect_error("a key of another section",
	    "worker: {\n\n  host = \"x\";\n};\n", 3,
	    "unknown key 'worker.host'", NULL);
	expect_error("a top-level value", "port = 6379;\n", 1,
	    "unknown section 'port'", NULL);
	expect_error("a section that is not a group", "\nredis = 5;\n", 2,
	    "redis: expected a group", NULL);
	expect_error("a section that is a list", "log = ( \"x\" );\n", 1,
	    "log: expected a group", NULL);
	expect_error("string for int", "redis: {\n port = \"6379\";\n};\n", 2,
	    "redis.port: expected an integer", NULL);
	expect_error("float for int", "worker: { concurrency = 1.5; };\n", 1,
	    "worker.concurrency: expected an integer", NULL);
	expect_error("bool for int", "worker: {\n\n\n delay_ms = true; };\n",
	    4, "worker.delay_ms: expected an integer", NULL);
	expect_error("group for int", "worker: { delay_ms = { a = 1; }; };\n",
	    1, "worker.delay_ms: expected an integer", NULL);
	expect_error("int for string", "redis: { host = 5; };\n", 1,
	    "redis.host: expected a string", NULL);
	expect_error("list for string",
	    "postgres: {\n  table = [\"a\"];\n};\n", 2,
	    "postgres.table: expected a string", NULL);
	expect_error("int for a log level", "log: { level = 7; };\n", 1,
	    "log.level: expected a string", NULL);
	expect_error("list of ints for queues",
	    "redis: {\n  queues = [1, 2];\n};\n", 2,
	    "redis.queues: expected a list of strings", NULL);
	expect_error("a string for queues", "redis: { queues = \"tasks\"; };\n",
	    1, "redis.queues: expected a list of strings", NULL);
	expect_error("a group inside columns",
	    "postgres: { columns = ( \"a\", { b = 1; } ); };\n", 1,
	    "postgres.columns: expected a list of strings", NULL);
	expect_error("a list inside queues",
	    "redis: { queues = ( \"a\", ( \"b\" ) ); };\n", 1,
	    "redis.queues: expected a list of strings", NULL);
	expect_error("a duplicate key",
	    "redis: {\n port = 1;\n port = 2;\n};\n", 3, "duplicate", NULL);
}

static void
test_ranges(void)
{
	char *text, *big;
	int i;

	expect_error("port 0", "redis: { port = 0; };\n", 1,
	    "redis.port: must be between 1 and 65535", NULL);
	expect_error("port 65536", "redis: { port = 65536; };\n", 1,
	    "redis.port: must be between 1 and 65535", NULL);
	expect_error("concurrency 0", "worker: {\n concurrency = 0;\n};\n", 2,
	    "worker.concurrency: must be between 1 and 100000", NULL);
	expect_error("concurrency 100001", "worker: { concurrency = 100001; };",
	    1, "worker.concurrency: must be between 1 and 100000", NULL);
	expect_error("negative delay", "worker: { delay_ms = -1; };\n", 1,
	    "worker.delay_ms: must be between 0 and 86400000", NULL);
	expect_error("an int64 delay", "worker: { delay_ms = 99999999999; };\n",
	    1, "worker.delay_ms: must be between 0 and 86400000", NULL);
	expect_error("an int64 that wraps to a valid int",
	    "redis: { port = 4294973675L; };\n", 1,
	    "redis.port: must be between 1 and 65535", NULL);
	expect_error("command timeout 99",
	    "postgres: { command_timeout_ms = 99; };\n", 1,
	    "postgres.command_timeout_ms: must be between 100 and 3600000",
	    NULL);
	expect_error("65 connections", "postgres: { connections = 65; };\n", 1,
	    "postgres.connections: must be between 1 and 64", NULL);
	expect_error("database 100001", "redis: { database = 100001; };\n", 1,
	    "redis.database: must be between 0 and 100000", NULL);
	expect_error("retry_min_ms 0", "worker: { retry_min_ms = 0; };\n", 1,
	    "worker.retry_min_ms: must be between 1 and 600000", NULL);
	expect_error("grace above an hour",
	    "worker: { missing_row_grace_ms = 3600001; };\n", 1,
	    "worker.missing_row_grace_ms: must be between 0 and 3600000",
	    NULL);
	expect_error("heartbeat below a second",
	    "worker: { heartbeat_ttl_ms = 999; };\n", 1,
	    "worker.heartbeat_ttl_ms: must be between 1000 and 300000", NULL);

	expect_error("no queues", "redis: { queues = []; };\n", 1,
	    "redis.queues: must have between 1 and 64 entries", NULL);
	if ((big = malloc(65 * 8 + 64)) == NULL)
		abort();
	strcpy(big, "redis: { queues = [");
	for (i = 0; i < 65; i++)
		sprintf(big + strlen(big), "%s\"q%d\"", i ? ", " : "", i);
	strcat(big, "]; };\n");
	expect_error("65 queues", big, 1,
	    "redis.queues: must have between 1 and 64 entries", NULL);
	free(big);
	expect_error("an empty queue name",
	    "redis: {\n queues = [\"a\",\n \"\"];\n};\n", 3,
	    "redis.queues[1]: must not be empty", NULL);
	expect_error("a queue name with a space",
	    "redis: { queues = [\"my queue\"]; };\n", 1,
	    "redis.queues[0]: must not contain whitespace", NULL);
	expect_error("a queue name with a control byte",
	    "redis: { queues = [\"a\\x01b\"]; };\n", 1,
	    "redis.queues[0]: must not contain whitespace", NULL);
	if ((big = malloc(300)) == NULL)
		abort();
	memset(big, 'q', 201);
	big[201] = '\0';
	if (asprintf(&text, "redis: { queues = [\"%s\"]; };\n", big) == -1)
		abort();
	expect_error("a 201-byte queue name", text, 1,
	    "redis.queues[0]: must be at most 200 bytes", NULL);
	free(text);
	big[200] = '\0';
	if (asprintf(&text, "redis: { queues = [\"%s\"]; };\n", big) == -1)
		abort();
	config_free(load_ok("a 200-byte queue name", write_conf(text)));
	free(text);
	expect_error("a duplicate queue",
	    "redis: { queues = [\"a\", \"b\",\n \"a\"]; };\n", 2,
	    "redis.queues[2]", "redis.queues[0]");
	expect_error("a duplicate column",
	    "postgres: { columns = [\"a\", \"a\"]; };\n", 1,
	    "postgres.columns[1]", "already");
	expect_error("an empty column", "postgres: { columns = [\"\"]; };\n", 1,
	    "postgres.columns[0]: must not be empty", NULL);

	expect_error("an empty host", "redis: { host = \"\"; };\n", 1,
	    "redis.host: must not be empty", NULL);
	expect_error("an empty id_column", "postgres: { id_column = \"\"; };\n",
	    1, "postgres.id_column: must not be empty", NULL);
	expect_error("an empty completed_status",
	    "postgres: { completed_status = \"\"; };\n", 1,
	    "postgres.completed_status: must not be empty", NULL);
	expect_error("the same id and status column",
	    "postgres: {\n id_column = \"s\";\n status_column = \"s\"; };\n", 3,
	    "postgres.status_column: must differ from postgres.id_column",
	    NULL);
	expect_error("an empty log.ident", "log: { ident = \"\"; };\n", 1,
	    "log.ident: must not be empty", NULL);
	expect_error("a worker id with a space", "worker: { id = \"a b\"; };\n",
	    1, "worker.id: must not contain whitespace", NULL);
	if (asprintf(&text, "worker: { id = \"%s\"; };\n", big) == -1)
		abort();
	config_free(load_ok("a 200-byte worker id", write_conf(text)));
	free(text);
	big[200] = 'x';
	if (asprintf(&text, "worker: { id = \"%s\"; };\n", big) == -1)
		abort();
	expect_error("a 201-byte worker id", text, 1,
	    "worker.id: must be at most 200 bytes", NULL);
	free(text);
	free(big);

	expect_error("bad conninfo",
	    "postgres: {\n\n conninfo = \"host=x junk\";\n};\n", 3,
	    "postgres.conninfo: missing \"=\" after \"junk\"", NULL);
	expect_error("an unknown conninfo keyword",
	    "postgres: { conninfo = \"nosuch=1\"; };\n", 1,
	    "postgres.conninfo: invalid connection option \"nosuch\"", NULL);
	expect_error("a bad conninfo URI",
	    "postgres: { conninfo = \"postgresql://h/db?nosuch=1\"; };\n", 1,
	    "postgres.conninfo: invalid URI query parameter", NULL);
	expect_error("table a.b.c", "postgres: { table = \"a.b.c\"; };\n", 1,
	    "postgres.table: must be \"name\" or \"schema.name\"", NULL);
	expect_error("table .a", "postgres: { table = \".a\"; };\n", 1,
	    "postgres.table: must be", NULL);
	expect_error("table a.", "postgres: { table = \"a.\"; };\n", 1,
	    "postgres.table: must be", NULL);
	expect_error("an empty table", "postgres: { table = \"\"; };\n", 1,
	    "postgres.table: must not be empty", NULL);

	expect_error("a handler that does not exist",
	    "handler: { type = \"shell\"; };\n", 1,
	    "handler.type: unknown value \"shell\"",
	    "(valid: none, exec, sql, http)");
	expect_error("exec without a command",
	    "handler: {\n type = \"exec\";\n};\n", 2,
	    "handler.command: required when handler.type is \"exec\"", NULL);
	expect_error("a relative command",
	    "handler: { type = \"exec\"; command = [\"sh\", \"-c\"]; };\n",
	    1, "handler.command: \"sh\" is not an absolute path", NULL);
	expect_error("a command that does not exist",
	    "handler: {\n type = \"exec\";\n command = [\"/nonexistent/x\"];\n"
	    "};\n", 3, "handler.command: /nonexistent/x: No such file", NULL);
	expect_error("a command that is not executable",
	    "handler: { type = \"exec\"; command = [\"/etc/passwd\"]; };\n",
	    1, "handler.command: /etc/passwd is not an executable file",
	    NULL);
	expect_error("a directory as command",
	    "handler: { type = \"exec\"; command = [\"/tmp\"]; };\n", 1,
	    "handler.command: /tmp is not an executable file", NULL);
	expect_error("sql without a statement",
	    "handler: { type = \"sql\"; };\n", 1,
	    "handler.statement: required when handler.type is \"sql\"",
	    NULL);
	expect_error("an environment entry without =",
	    "handler: {\n environment = [\"A=1\", \"JUNK\"];\n};\n", 2,
	    "handler.environment[1]: expected \"NAME=value\"", "JUNK");
	expect_error("an environment name with a space",
	    "handler: { environment = [\"A B=1\"]; };\n", 1,
	    "handler.environment[0]: expected", NULL);
	expect_error("a working directory that does not exist",
	    "handler: { working_directory = \"/nonexistent\"; };\n", 1,
	    "handler.working_directory: /nonexistent is not a directory",
	    NULL);
	expect_error("a negative handler timeout",
	    "handler: { timeout_ms = -1; };\n", 1,
	    "handler.timeout_ms: must be between 0 and", NULL);
	expect_error("no attempt at all", "retry: { attempts = 0; };\n", 1,
	    "retry.attempts: must be between 1 and 1000", NULL);
	expect_error("retry.max_ms below retry.min_ms",
	    "retry: {\n min_ms = 5000;\n max_ms = 100;\n};\n", 3,
	    "retry.max_ms: must not be less than retry.min_ms (5000)", NULL);
	expect_error("the attempts column is the id column",
	    "postgres: { attempts_column = \"id\"; };\n", 1,
	    "postgres.attempts_column: must differ", NULL);
	expect_error("the error column is the attempts column",
	    "postgres: { attempts_column = \"a\";\n error_column = \"a\"; };\n",
	    2, "postgres.error_column: must differ", NULL);
	expect_error("failed_status is completed_status",
	    "postgres: { failed_status = \"completed\"; };\n", 1,
	    "postgres.failed_status: must differ from postgres.completed_status",
	    NULL);
	expect_error("dead_max 0", "redis: { dead_max = 0; };\n", 1,
	    "redis.dead_max: must be between 1 and", NULL);
	expect_error("a log level that does not exist",
	    "log: { level = \"verbose\"; };\n", 1, "log.level: unknown value",
	    "debug, info, notice, warning, error");
	expect_error("a facility that does not exist",
	    "log: { facility = \"kern\"; };\n", 1, "log.facility: unknown",
	    "local7");
}

static void
test_cross_checks(void)
{
	struct errs e = { NULL, 0 };
	struct config *cfg;
	const char *path, *pw;
	char *text;

	expect_error("retry_max_ms below retry_min_ms",
	    "worker: {\n retry_min_ms = 5000;\n retry_max_ms = 1000;\n};\n", 3,
	    "worker.retry_max_ms: must not be less than worker.retry_min_ms",
	    NULL);
	expect_error("retry_min_ms above the default retry_max_ms",
	    "worker: {\n\n retry_min_ms = 60000;\n};\n", 3,
	    "worker.retry_max_ms", NULL);
	expect_error("password and password_file",
	    "redis: {\n password = \"a\";\n password_file = \"/etc/x\";\n};\n",
	    3, "redis.password_file: cannot be used together with "
	    "redis.password", NULL);
	expect_error("a missing password_file",
	    "redis: {\n password_file = \"/nonexistent/tw.pass\";\n};\n", 2,
	    "redis.password_file: cannot read /nonexistent/tw.pass",
	    "No such file or directory");

	expect_error("a password_file that is a directory",
	    "redis: {\n\n password_file = \"/tmp\";\n};\n", 3,
	    "redis.password_file: cannot read /tmp", "not a regular file");

	pw = write_temp("tw-test-pass", "\nsecret\n", 8);
	if (asprintf(&text, "redis: { password_file = \"%s\"; };\n", pw) == -1)
		abort();
	expect_error("a password_file whose first line is empty", text, 1,
	    "redis.password_file", "is empty");
	free(text);

	pw = write_temp("tw-test-pass", "", 0);
	if (asprintf(&text, "redis: { password_file = \"%s\"; };\n", pw) == -1)
		abort();
	expect_error("an empty password_file", text, 1, "redis.password_file",
	    "is empty");
	free(text);

	pw = write_temp("tw-test-pass", "pa\0ss\n", 6);
	if (asprintf(&text, "redis: { password_file = \"%s\"; };\n", pw) == -1)
		abort();
	expect_error("a password_file with a NUL byte", text, 1,
	    "redis.password_file", "holds a NUL byte");
	free(text);

	pw = write_temp("tw-test-pass", "nonl", 4);
	if (asprintf(&text, "redis: { password_file = \"%s\"; };\n", pw) == -1)
		abort();
	cfg = load_ok("a password_file without a newline", write_conf(text));
	if (cfg != NULL)
		ok(streq(cfg->redis.password, "nonl") &&
		    streq(cfg->redis.password_file, pw),
		    "the password is read, the file name kept");
	config_free(cfg);
	free(text);

	/* Two columns, one TASK_ variable: refused, not silently dropped. */
	expect_error("columns a-b and a_b",
	    "\npostgres: { columns = [\"a-b\", \"x\", \"a_b\"]; };\n", 2,
	    "postgres.columns[2]: \"a_b\" and postgres.columns[0] \"a-b\"",
	    "both be TASK_A_B");
	expect_error("columns Name and name",
	    "postgres: { columns = [\"name\", \"Name\"]; };\n", 1,
	    "postgres.columns[1]: \"Name\" and postgres.columns[0]",
	    "TASK_NAME");
	expect_error("a column that would be TASK_QUEUE",
	    "postgres: { columns = [\"Queue\"]; };\n", 1,
	    "postgres.columns[0]: \"Queue\" would be TASK_QUEUE",
	    "sets itself");
	expect_error("a column that would be TASK_ATTEMPT",
	    "postgres: { columns = [\"attempt\"]; };\n", 1,
	    "TASK_ATTEMPT", NULL);
	expect_error("a column that would be TASK_ID",
	    "postgres: { columns = [\"i.d\", \"id\"]; };\n", 1,
	    "postgres.columns[1]: \"id\" would be TASK_ID", NULL);
	config_free(load_ok("columns whose variables differ", write_conf(
	    "postgres: { columns = [\"a-b\", \"a-bc\", \"ids\", "
	    "\"attempts\", \"queue_name\"]; };\n")));

	/* All the errors of one file are reported, each on its line. */
	path = write_conf(
	    "redis: {\n"			/* 1 */
	    "  port = 0;\n"			/* 2 */
	    "  nosuch = 1;\n"			/* 3 */
	    "};\n"				/* 4 */
	    "worker: {\n"			/* 5 */
	    "  concurrency = \"many\";\n"	/* 6 */
	    "  retry_min_ms = 500;\n"		/* 7 */
	    "  retry_max_ms = 400;\n"		/* 8 */
	    "};\n"				/* 9 */
	    "bogus: { a = 1; };\n"		/* 10 */
	    "postgres: { table = \"a.b.c\";\n"	/* 11 */
	    "  columns = [ 1 ]; };\n"		/* 12 */
	    "log: { level = \"loud\"; };\n");	/* 13 */
	cfg = config_load(path, collect, &e);
	ok(cfg == NULL, "a file with many errors fails");
	if (!ok(e.n == 8 &&
	    has_error(&e, path, 2, "redis.port: must be between") &&
	    has_error(&e, path, 3, "unknown key 'redis.nosuch'") &&
	    has_error(&e, path, 6, "worker.concurrency: expected an integer") &&
	    has_error(&e, path, 8, "worker.retry_max_ms: must not be less") &&
	    has_error(&e, path, 10, "unknown section 'bogus'") &&
	    has_error(&e, path, 11, "postgres.table: must be") &&
	    has_error(&e, path, 12, "postgres.columns: expected a list") &&
	    has_error(&e, path, 13, "log.level: unknown value"),
	    "all 8 errors are reported, each with its line (%d)", e.n))
		errs_show(&e);
	errs_clear(&e);
	config_free(cfg);

	/* A refused value does not cause a second, derived error. */
	path = write_conf("worker: {\n retry_min_ms = 60000;\n"
	    " retry_max_ms = \"x\";\n};\n");
	cfg = config_load(path, collect, &e);
	if (!ok(cfg == NULL && e.n == 1 &&
	    has_error(&e, path, 3, "worker.retry_max_ms: expected an integer"),
	    "a bad retry_max_ms gives one error, not two (%d)", e.n))
		errs_show(&e);
	errs_clear(&e);
	config_free(cfg);
}

static void
test_files(void)
{
	struct errs e = { NULL, 0 };
	struct config *cfg;
	const char *path;
	char *text, *big, *shipped, *p;
	size_t i, len;
	int pass;

	cfg = config_load("/nonexistent/taskworkerd.conf", collect, &e);
	if (!ok(cfg == NULL && e.n == 1 &&
	    has_error(&e, "/nonexistent/taskworkerd.conf", 0,
	    "No such file or directory"), "a missing file: 'FILE: why'"))
		errs_show(&e);
	errs_clear(&e);

	cfg = config_load("/tmp", collect, &e);
	if (!ok(cfg == NULL && e.n == 1 && has_error(&e, "/tmp", 0,
	    "cannot read"), "a directory is refused"))
		errs_show(&e);
	errs_clear(&e);

	ok(config_load("/nonexistent/x.conf", NULL, NULL) == NULL,
	    "a NULL error function is allowed");

	expect_error("a syntax error", "redis: {\n  port = = 1;\n};\n", 2,
	    "syntax error", NULL);
	expect_error("a truncated group", "\nredis: {\n  port = 6379;\n", 4,
	    "syntax error", NULL);
	expect_error("a string cut short", "log: { ident = \"abc", 1,
	    "syntax error", NULL);
	expect_error("an @include", "# x\n@include \"/etc/passwd\"\n", 2,
	    "@include is not supported", NULL);
	expect_error("a NUL escape in a string",
	    "postgres: {\n table = \"ta\\x00ble\";\n};\n", 2,
	    "a string holds a NUL byte", NULL);
	config_free(load_ok("\\x00 in a comment and \\\\x00 in a string",
	    write_conf("# \\x00\nlog: { ident = \"a\\\\x00\"; };\n")));

	/* The shipped file cut in half. */
	text = shipped_path();
	shipped = slurp(text);
	free(text);
	if (shipped == NULL || strstr(shipped, "postgres: {") == NULL)
		abort();
	path = write_temp("tw-test-config", shipped,
	    (size_t)(strstr(shipped, "postgres: {") - shipped) + 30);
	cfg = config_load(path, collect, &e);
	if (!ok(cfg == NULL && e.n == 1 && strncmp(e.line[0], path,
	    strlen(path)) == 0 && e.line[0][strlen(path)] == ':' &&
	    strtol(e.line[0] + strlen(path) + 1, NULL, 10) > 0,
	    "the shipped file cut short fails with a line number"))
		errs_show(&e);
	errs_clear(&e);
	free(shipped);

	/* Binary garbage, without and with NUL bytes. */
	if ((big = malloc(4096)) == NULL)
		abort();
	for (i = 0; i < 4096; i++)
		big[i] = (char)(1 + (i * 7919) % 255);
	cfg = config_load(write_temp("tw-test-config", big, 4096), collect,
	    &e);
	if (!ok(cfg == NULL && e.n == 1, "binary garbage fails with one error"))
		errs_show(&e);
	errs_clear(&e);
	memcpy(big, "redis: {\n\n", 10);
	big[10] = '\0';
	path = write_temp("tw-test-config", big, 4096);
	cfg = config_load(path, collect, &e);
	if (!ok(cfg == NULL && e.n == 1 && has_error(&e, path, 3, "NUL byte"),
	    "a NUL byte is refused with its line"))
		errs_show(&e);
	errs_clear(&e);
	free(big);

	/* Exactly 1 MiB of comments loads; one byte more does not. */
	len = 1024 * 1024;
	if ((big = malloc(len + 1)) == NULL)
		abort();
	memset(big, '#', len + 1);
	for (i = 63; i < len + 1; i += 64)
		big[i] = '\n';
	config_free(load_ok("a 1 MiB file", write_temp("tw-test-config", big,
	    len)));
	path = write_temp("tw-test-config", big, len + 1);
	cfg = config_load(path, collect, &e);
	if (!ok(cfg == NULL && e.n == 1 && has_error(&e, path, 0,
	    "larger than"), "a file over 1 MiB is refused"))
		errs_show(&e);
	errs_clear(&e);

	/* Deep nesting, and a huge list, must fail or load, never crash. */
	text = big;
	strcpy(text, "redis: { queues = ");
	i = strlen(text);
	memset(text + i, '(', 200000);
	text[i + 200000] = '\0';
	cfg = config_load(write_temp("tw-test-config", text, strlen(text)),
	    collect, &e);
	if (!ok(cfg == NULL && e.n == 1,
	    "200000 open brackets fail with one error"))
		errs_show(&e);
	errs_clear(&e);
	config_free(cfg);

	strcpy(text, "redis: { queues = [\"q\"");
	p = text + strlen(text);
	for (i = 1; i < 100000; i++) {
		memcpy(p, ",\"q\"", 4);
		p += 4;
	}
	strcpy(p, "]; };\n");
	cfg = config_load(write_temp("tw-test-config", text, strlen(text)),
	    collect, &e);
	pass = cfg == NULL && e.n == 1 && has_error(&e, temps[ntemps - 1], 1,
	    "must have between 1 and 64 entries");
	if (!ok(pass, "100000 queues fail with one error"))
		errs_show(&e);
	errs_clear(&e);
	free(big);

	/* A very long unknown key is reported, shortened. */
	if ((big = malloc(200000)) == NULL)
		abort();
	strcpy(big, "log: { ");
	memset(big + 7, 'k', 100000);
	strcpy(big + 100007, " = 1; };\n");
	cfg = config_load(write_conf(big), collect, &e);
	ok(cfg == NULL && e.n == 1 && strlen(e.line[0]) < 2000 &&
	    strstr(e.line[0], "unknown key 'log.kkkk") != NULL,
	    "a 100000-byte key name gives a short error line");
	errs_clear(&e);
	free(big);

	/* Control bytes in error lines are shown escaped. */
	cfg = config_load(write_conf("handler: { type = \"a\\nb\\x1b[2J\"; };"),
	    collect, &e);
	ok(cfg == NULL && e.n == 1 && strchr(e.line[0], '\n') == NULL &&
	    strchr(e.line[0], '\x1b') == NULL &&
	    strstr(e.line[0], "a\\x0ab\\x1b[2J") != NULL,
	    "control bytes in an error line are escaped: %s",
	    e.n > 0 ? e.line[0] : "-");
	errs_clear(&e);
}

static void
test_changed(void)
{
	struct config *a, *b;

	a = load_ok("config A", write_conf("redis: { port = 1; };"));
	b = load_ok("config B", write_conf("redis: { port = 1; };"));
	if (a == NULL || b == NULL)
		return;
	ok(!config_redis_conn_changed(a, b) && !config_postgres_changed(a, b),
	    "the same settings: nothing changed");
	config_free(b);

	b = load_ok("config B", write_conf("redis: { port = 2; };"));
	ok(b != NULL && config_redis_conn_changed(a, b) &&
	    !config_postgres_changed(a, b), "another port: redis changed");
	config_free(b);

	b = load_ok("config B", write_conf("redis: { port = 1; "
	    "password = \"x\"; };"));
	ok(b != NULL && config_redis_conn_changed(a, b),
	    "another password: redis changed");
	config_free(b);

	b = load_ok("config B", write_conf("redis: { port = 1; "
	    "queues = [\"other\"]; }; worker: { delay_ms = 5; };"));
	ok(b != NULL && !config_redis_conn_changed(a, b) &&
	    !config_postgres_changed(a, b),
	    "other queues and delay: no reconnect");
	config_free(b);

	b = load_ok("config B", write_conf("redis: { port = 1; }; "
	    "postgres: { columns = [\"name\", \"x\"]; };"));
	ok(b != NULL && config_postgres_changed(a, b) &&
	    !config_redis_conn_changed(a, b), "more columns: postgres changed");
	config_free(b);

	b = load_ok("config B", write_conf("redis: { port = 1; }; "
	    "postgres: { command_timeout_ms = 100; };"));
	ok(b != NULL && config_postgres_changed(a, b),
	    "another statement timeout: postgres changed");
	config_free(b);
	config_free(a);

	ok(streq(config_level_name(LOG_DEBUG), "debug") &&
	    streq(config_level_name(LOG_NOTICE), "notice") &&
	    streq(config_level_name(LOG_ERR), "error"), "level names");
	ok(streq(config_facility_name(LOG_LOCAL7), "local7") &&
	    streq(config_facility_name(LOG_DAEMON), "daemon"),
	    "facility names");
	config_free(NULL);
	ok(1, "config_free(NULL) is harmless");
}

/* metrics.listen: literals only, never a name to look up. */
static void
test_listen(void)
{
	static const char *good[] = { "127.0.0.1:9464", "0.0.0.0:1",
	    "[::1]:9464", "[::]:65535", "/run/taskworkerd/metrics.sock" };
	static const struct { const char *s, *why; } bad[] = {
		{ "localhost:9464", "not an IPv4 address" },
		{ "127.0.0.1", "expected \"ADDRESS:PORT\"" },
		{ "127.0.0.1:0", "the port must be 1 to 65535" },
		{ "127.0.0.1:65536", "the port must be 1 to 65535" },
		{ "127.0.0.1:94x", "the port must be 1 to 65535" },
		{ "[::1]9464", "expected \"[IPv6]:PORT\"" },
		{ "[nope]:1", "not an IPv6 address" },
		{ "relative.sock", "expected \"ADDRESS:PORT\"" },
	};
	char *text, *big;
	struct config *cfg;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (asprintf(&text, "metrics: { listen = \"%s\"; };\n",
		    good[i]) == -1)
			abort();
		cfg = load_ok(good[i], write_conf(text));
		ok(cfg != NULL && streq(cfg->metrics.listen, good[i]),
		    "metrics.listen keeps \"%s\"", good[i]);
		config_free(cfg);
		free(text);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (asprintf(&text, "\nmetrics: { listen = \"%s\"; };\n",
		    bad[i].s) == -1)
			abort();
		expect_error(bad[i].s, text, 2, "metrics.listen", bad[i].why);
		free(text);
	}
	big = malloc(200);
	if (big == NULL)
		abort();
	memset(big, 'a', 199);
	big[0] = '/';
	big[199] = '\0';
	if (asprintf(&text, "metrics: { listen = \"%s\"; };\n", big) == -1)
		abort();
	expect_error("a unix socket path too long", text, 1, "metrics.listen",
	    "a unix socket path is at most 107 bytes");
	free(text);
	free(big);
	expect_error("a sample interval under 100 ms",
	    "metrics: { sample_interval_ms = 99; };\n", 1,
	    "metrics.sample_interval_ms", NULL);
}

/* Two queues never share a Redis key. */
static void
test_queue_keys(void)
{
	static const struct {
		const char *a, *b, *key;
	} meet[] = {
		{ "jobs:dead", "jobs", "jobs:dead is QUEUE of \"jobs:dead\" "
		  "and QUEUE:dead of \"jobs\"" },
		{ "jobs", "jobs:retry", "jobs:retry is QUEUE:retry of \"jobs\" "
		  "and QUEUE of \"jobs:retry\"" },
		{ "jobs:dead:reason", "jobs", "QUEUE:dead:reason of \"jobs\"" },
		{ "jobs:attempts", "jobs", "QUEUE:attempts" },
		{ "jobs:scheduled", "jobs", "QUEUE:scheduled" },
		{ "jobs:workers", "jobs", "QUEUE:workers" },
		{ "jobs:paused", "jobs", "QUEUE:paused" },
		{ "jobs:processing:w1", "jobs", "QUEUE:processing:WORKER" },
		{ "jobs:heartbeat:w1", "jobs", "QUEUE:heartbeat:WORKER" },
		{ "jobs:processing", "jobs", "jobs:processing:dead is QUEUE:dead "
		  "of \"jobs:processing\" and QUEUE:processing:WORKER" },
		{ "jobs:heartbeat", "jobs", "QUEUE:heartbeat:WORKER of \"jobs\"" },
		{ "a:processing:b:heartbeat:c", "a", "QUEUE:processing:WORKER" },
	};
	static const struct {
		const char *a, *b;
	} apart[] = {
		{ "jobs", "jobs2" }, { "jobs", "jobs-dead" }, { "a:retry", "a:retry:x" },
		{ "jobs", "jobs:" }, { "jobs", "jobs:deadx" }, { "jobs", "job" },
		{ "jobs", "jobs:processin" }, { "high", "low" }, { "x", "x" },
	};
	char why[512];
	size_t i;

	for (i = 0; i < sizeof(meet) / sizeof(meet[0]); i++) {
		int rv = qkeys_collide(meet[i].a, meet[i].b, why, sizeof(why));

		ok(rv && strstr(why, meet[i].key) != NULL, "%s and %s meet: %s",
		    meet[i].a, meet[i].b, rv ? why : "no");
		ok(qkeys_collide(meet[i].b, meet[i].a, why, sizeof(why)),
		    "%s and %s meet either way", meet[i].b, meet[i].a);
	}
	for (i = 0; i < sizeof(apart) / sizeof(apart[0]); i++)
		ok(!qkeys_collide(apart[i].a, apart[i].b, why, sizeof(why)) &&
		    !qkeys_collide(apart[i].b, apart[i].a, why, sizeof(why)),
		    "%s and %s do not meet", apart[i].a, apart[i].b);

	expect_error("queues that share keys",
	    "redis: {\n queues = [\"jobs\", \"other\", \"jobs:dead\"];\n};\n",
	    2, "redis.queues[2]: \"jobs:dead\" and redis.queues[0] \"jobs\" "
	    "share a key", "QUEUE:dead of \"jobs\"");
	{
		struct errs e = { NULL, 0 };
		const char *path = write_conf("redis: { queues = [\"jobs\", "
		    "\"jobs:dead\", \"jobs:retry\"]; };\n");
		struct config *cfg = config_load(path, collect, &e);

		if (!ok(cfg == NULL && e.n == 2 &&
		    has_error(&e, path, 1, "redis.queues[1]: \"jobs:dead\"") &&
		    has_error(&e, path, 1, "redis.queues[2]: \"jobs:retry\""),
		    "[\"jobs\", \"jobs:dead\", \"jobs:retry\"]: two errors"))
			errs_show(&e);
		config_free(cfg);
		errs_clear(&e);
	}
	config_free(load_ok("queues that share no key", write_conf(
	    "redis: { queues = [\"jobs\", \"jobs-low\", \"jobs2\", "
	    "\"jobs:\"]; };\n")));
}

/* Which sections a file has, so that a reload can see one cut short. */
static void
test_sections(void)
{
	struct config *full, *part, *empty;
	char buf[256];

	full = load_ok("every section", write_conf(
	    "redis: {}; postgres: {}; worker: {}; handler: { type = \"none\"; };\n"
	    "retry: {}; metrics: {}; log: {};\n"));
	part = load_ok("a file cut before handler", write_conf(
	    "redis: { port = 1; };\npostgres: {};\nworker: { delay_ms = 5; };\n"));
	empty = load_ok("an empty file", write_conf(""));
	if (full == NULL || part == NULL || empty == NULL)
		return;
	ok(config_sections_left_out(full, NULL, buf, sizeof(buf)) == 0 &&
	    streq(buf, ""), "every section there: none left out");
	ok(config_sections_left_out(part, full, buf, sizeof(buf)) == 4 &&
	    streq(buf, "handler, retry, metrics, log"),
	    "cut before handler: \"%s\"", buf);
	ok(config_sections_left_out(full, part, buf, sizeof(buf)) == 0,
	    "more sections than the running file: none left out");
	ok(config_sections_left_out(empty, part, buf, sizeof(buf)) == 3 &&
	    streq(buf, "redis, postgres, worker"),
	    "an empty file, against a running file: \"%s\"", buf);
	ok(config_sections_left_out(empty, NULL, buf, sizeof(buf)) == 7,
	    "an empty file leaves out all 7");
	ok(config_sections_left_out(empty, NULL, buf, 8) == 7 &&
	    strlen(buf) < 8, "a short buffer is cut, never overrun");
	ok(streq(config_handler_name(HANDLER_EXEC), "exec") &&
	    streq(config_handler_name(HANDLER_NONE), "none"), "handler names");
	config_free(full);
	config_free(part);
	config_free(empty);
}

/* No password of a conninfo reaches an error line or a log. */
static void
test_redact(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "postgresql://app:S3cretPW@[::1/db",
		  "postgresql://app:***@[::1/db" },
		{ "postgres://u:p%40ss@h/db", "postgres://u:***@h/db" },
		{ "x: \"postgresql://app:a/b@c@h:5432/db\" y",
		  "x: \"postgresql://app:***@h:5432/db\" y" },
		{ "postgresql://app@h:5432/db", "postgresql://app@h:5432/db" },
		{ "postgresql://h:5432/db", "postgresql://h:5432/db" },
		{ "host=h password=S3cret dbname=x",
		  "host=h password=*** dbname=x" },
		{ "password = 'S3c ret\\' x' user=u",
		  "password = *** user=u" },
		{ "password='unterminated and more",
		  "password=***" },
		{ "PASSWORD=a&b sslpassword=k", "PASSWORD=*** sslpassword=***" },
		{ "postgresql:///db?user=u&password=p%20w&sslmode=require",
		  "postgresql:///db?user=u&password=***&sslmode=require" },
		{ "passfile=/etc/pgpass password", "passfile=/etc/pgpass password" },
		{ "nopassword=x", "nopassword=x" },
		{ "", "" },
	};
	char out[256], small[8];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(streq(config_redact(cases[i].in, out, sizeof(out)),
		    cases[i].out), "redact \"%s\": \"%s\"", cases[i].in, out);
	ok(streq(config_redact("password=abcdefgh", small, sizeof(small)),
	    "passwor"), "a short buffer is cut, never overrun");

	expect_error("a malformed URI with a password",
	    "postgres: { conninfo = \"postgresql://app:S3cretPW@[::1/db\"; };\n",
	    1, "postgres.conninfo: ", "\"postgresql://app:***@[::1/db\"");
	{
		struct errs e = { NULL, 0 };
		const char *path = write_conf("postgres: { conninfo = "
		    "\"postgresql://app:S3cretPW@[::1/db\"; };\n");
		int leaked = 0;

		config_free(config_load(path, collect, &e));
		for (int i = 0; i < e.n; i++)
			leaked |= strstr(e.line[i], "S3cretPW") != NULL;
		ok(e.n == 1 && !leaked, "the password is in no error line");
		errs_clear(&e);
	}
}

/* handler.type = "http": its keys, checks, defaults and bearer token. */
static void
test_http(void)
{
	struct config *c;
	const char *tok = write_temp("tw-test-token", "s3cret\n", 7);
	char text[1024];

	expect_error("http without a url",
	    "handler: {\n type = \"http\";\n};\n", 2,
	    "handler.url: required when handler.type is \"http\"", NULL);
	expect_error("an ftp url",
	    "handler: { type = \"http\"; url = \"ftp://h/x\"; };\n", 1,
	    "handler.url: \"ftp://h/x\": only http:// and https://", NULL);
	expect_error("a password in the url",
	    "handler: { type = \"http\"; url = \"http://u:p@h/x\"; };\n", 1,
	    "handler.url: a user or password in the URL", NULL);
	expect_error("not a url",
	    "handler: { type = \"http\"; url = \"http://\"; };\n", 1,
	    "handler.url: \"http://\" is not a URL", NULL);
	expect_error("a GET", "handler: { type = \"http\"; url = \"http://h/\"; "
	    "method = \"GET\"; };\n", 1, "handler.method: must be POST, PUT or "
	    "PATCH", NULL);
	expect_error("a header without a colon", "handler: { type = \"http\"; "
	    "url = \"http://h/\"; headers = [\"X-A: 1\", \"junk\"]; };\n", 1,
	    "handler.headers[1]: expected \"Name: value\", not \"junk\"",
	    NULL);
	expect_error("a header set by the daemon", "handler: {\n type = "
	    "\"http\"; url = \"http://h/\";\n headers = [\"content-length: "
	    "3\"]; };\n", 3, "handler.headers[0]: Content-Length is set by "
	    "taskworkerd itself", NULL);
	expect_error("a header value with a newline", "handler: { type = "
	    "\"http\"; url = \"http://h/\"; headers = [\"X-A: 1\\r\\nX-B: 2\"]; "
	    "};\n", 1, "control characters in the value", NULL);
	expect_error("a missing ca_file", "handler: { type = \"http\"; url = "
	    "\"https://h/\"; ca_file = \"/nonexistent/ca.pem\"; };\n", 1,
	    "handler.ca_file: /nonexistent/ca.pem is not a readable file",
	    NULL);
	expect_error("http2 not a boolean", "handler: { type = \"http\"; url = "
	    "\"http://h/\"; http2 = 1; };\n", 1, "handler.http2: expected "
	    "true or false", NULL);
	snprintf(text, sizeof(text), "handler: { type = \"http\"; url = "
	    "\"http://h/\"; token_file = \"%s\";\n headers = [\"Authorization: "
	    "Basic x\"]; };\n", tok);
	expect_error("a token and an Authorization header", text, 2,
	    "handler.headers[0]: an Authorization header cannot go with a "
	    "bearer token", NULL);
	snprintf(text, sizeof(text), "handler: { type = \"http\"; url = "
	    "\"http://h/\";\n token_file = \"%s\"; };\n",
	    write_temp("tw-test-token", "ab\rcd\n", 6));
	expect_error("a token with a control byte", text, 2,
	    "handler: the bearer token holds a control byte (at byte 2)",
	    NULL);
	expect_error("a token file that does not exist", "handler: { type = "
	    "\"http\"; url = \"http://h/\"; token_file = \"/nonexistent/t\"; "
	    "};\n", 1, "handler.token_file", NULL);

	c = load_ok("an http handler with defaults", write_conf("handler: { "
	    "type = \"http\"; url = \"http://127.0.0.1:8080/tasks\"; };\n"));
	if (c != NULL) {
		ok(c->handler.type == HANDLER_HTTP && c->handler.timeout_ms ==
		    30000 && c->handler.connect_timeout_ms == 10000 &&
		    c->handler.max_connections == 64 &&
		    c->handler.max_response_bytes == 65536 &&
		    streq(c->handler.method, "POST") && !c->handler.http2 &&
		    c->handler.token == NULL, "http defaults (timeout %d)",
		    c->handler.timeout_ms);
		config_free(c);
	}
	snprintf(text, sizeof(text), "handler: { type = \"http\"; url = "
	    "\"https://h:8443/t?a=1\"; method = \"PUT\"; timeout_ms = 0; "
	    "http2 = false; token_file = \"%s\"; headers = [\"X-Team: a b\"]; "
	    "max_connections = 10000; };\n", tok);
	c = load_ok("an http handler with every key", write_conf(text));
	if (c != NULL) {
		ok(c->handler.timeout_ms == 0 && !c->handler.http2 &&
		    streq(c->handler.token, "s3cret") &&
		    streq(c->handler.method, "PUT") && c->handler.nheaders == 1 &&
		    c->handler.max_connections == 10000, "http keys as set");
		config_free(c);
	}
	c = load_ok("h2c", write_conf("handler: { type = \"http\"; "
	    "url = \"http://h/\"; http2 = true; };\n"));
	ok(c != NULL && c->handler.http2, "http2 = true");
	config_free(c);
	c = load_ok("an exec handler keeps its 30 min timeout", write_conf(
	    "handler: { type = \"exec\"; command = [\"/bin/true\"]; };\n"));
	if (c != NULL) {
		ok(c->handler.timeout_ms == 1800000 && c->handler.token == NULL,
		    "exec timeout %d, no token read", c->handler.timeout_ms);
		config_free(c);
	}
}

int
main(void)
{
	test_shipped();
	test_all_keys_set();
	test_types();
	test_ranges();
	test_cross_checks();
	test_files();
	test_changed();
	test_listen();
	test_redact();
	test_queue_keys();
	test_sections();
	test_http();
	remove_temps();
	return done_testing();
}
