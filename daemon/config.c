/*
 * config: read the libconfig file, check every key against one table and
 * build the immutable struct config; defaults and validation live here.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <libconfig.h>
#include <libpq-fe.h>

#include "config.h"
#include "credentials.h"
#include "httpreq.h"
#include "netaddr.h"
#include "qkeys.h"

#define CONFIG_MAX_BYTES	(1024 * 1024)
#define MSG_MAX			1024
#define H2_BLOCK_MAX		65536	/* nghttp2's max_send_header_block_length */
#define QUEUE_NAME_MAX		200

enum kind {
	K_INT,
	K_STRING,
	K_LIST,
	K_LEVEL,
	K_FACILITY,
	K_HANDLER,
	K_BOOL,
};

/* String checks, for a string key or for every entry of a list. */
#define F_NONEMPTY	0x01	/* "" is refused */
#define F_NOSPACE	0x02	/* no whitespace or control bytes */
#define F_UNIQUE	0x04	/* list entries must differ */

struct name_value {
	const char *name;
	int value;
};

/* Extra check of a string value: NULL when fine, else a message in BUF. */
typedef const char *check_fn(const char *s, char *buf, size_t size);

struct key {
	const char *section;
	const char *name;
	enum kind kind;
	size_t off;			/* the value inside struct config */
	size_t count_off;		/* K_LIST: the entry count */
	long long def_int;		/* K_INT */
	const char *def_str;		/* K_STRING and the named kinds */
	const char *const *def_list;	/* K_LIST, NULL-terminated */
	long long min, max;		/* K_INT: value; K_LIST: entries */
	size_t maxlen;			/* bytes of a string, 0: no limit */
	int flags;
	check_fn *check;
	const struct name_value *names;	/* the named kinds */
};

static const char *check_conninfo(const char *, char *, size_t);
static const char *check_table(const char *, char *, size_t);
static const char *check_listen(const char *, char *, size_t);
static const char *check_host_port(const char *, char *, size_t);

static const struct name_value level_names[] = {
	{ "debug", LOG_DEBUG },
	{ "info", LOG_INFO },
	{ "notice", LOG_NOTICE },
	{ "warning", LOG_WARNING },
	{ "error", LOG_ERR },
	{ NULL, 0 }
};

static const struct name_value facility_names[] = {
	{ "daemon", LOG_DAEMON },
	{ "user", LOG_USER },
	{ "local0", LOG_LOCAL0 },
	{ "local1", LOG_LOCAL1 },
	{ "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 },
	{ "local4", LOG_LOCAL4 },
	{ "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 },
	{ "local7", LOG_LOCAL7 },
	{ NULL, 0 }
};

static const struct name_value handler_names[] = {
	{ "none", HANDLER_NONE },
	{ "exec", HANDLER_EXEC },
	{ "sql", HANDLER_SQL },
	{ "http", HANDLER_HTTP },
	{ NULL, 0 }
};

static const char *const default_queues[] = { "tasks", NULL };
static const char *const default_columns[] = { "name", NULL };
static const char *const default_empty[] = { NULL };

#define AT(field)	offsetof(struct config, field)

#define INT(sec, key, field, def, lo, hi)				\
	{ .section = sec, .name = key, .kind = K_INT, .off = AT(field),	\
	  .def_int = def, .min = lo, .max = hi }
#define STR(sec, key, field, def, len, fl, fn)				\
	{ .section = sec, .name = key, .kind = K_STRING,		\
	  .off = AT(field), .def_str = def, .maxlen = len,		\
	  .flags = fl, .check = fn }
#define LIST(sec, key, field, nfield, def, lo, hi, len, fl)		\
	LISTC(sec, key, field, nfield, def, lo, hi, len, fl, NULL)
#define LISTC(sec, key, field, nfield, def, lo, hi, len, fl, fn)	\
	{ .section = sec, .name = key, .kind = K_LIST,			\
	  .off = AT(field),						\
	  .count_off = AT(nfield), .def_list = def, .min = lo,		\
	  .max = hi, .maxlen = len, .flags = fl, .check = fn }
#define BOOL(sec, key, field, def)					\
	{ .section = sec, .name = key, .kind = K_BOOL, .off = AT(field),	\
	  .def_int = def }
#define NAMED(sec, key, k, field, def, table)				\
	{ .section = sec, .name = key, .kind = k, .off = AT(field),	\
	  .def_str = def, .names = table }

static const struct key keys[] = {
	STR("redis", "host", redis.host, "127.0.0.1", 0, F_NONEMPTY, NULL),
	INT("redis", "port", redis.port, 6379, 1, 65535),
	STR("redis", "unix_socket", redis.unix_socket, "", 0, 0, NULL),
	INT("redis", "database", redis.database, 0, 0, 100000),
	STR("redis", "username", redis.username, "", 0, 0, NULL),
	STR("redis", "password", redis.password, "", 0, 0, NULL),
	STR("redis", "password_file", redis.password_file, "", 0, 0, NULL),
	LISTC("redis", "sentinels", redis.sentinels, redis.nsentinels,
	    default_empty, 0, 16, 300, F_NONEMPTY | F_NOSPACE | F_UNIQUE,
	    check_host_port),
	STR("redis", "sentinel_master", redis.sentinel_master, "", 200,
	    F_NOSPACE, NULL),
	STR("redis", "sentinel_username", redis.sentinel_username, "", 0, 0,
	    NULL),
	STR("redis", "sentinel_password", redis.sentinel_password, "", 0, 0,
	    NULL),
	STR("redis", "sentinel_password_file", redis.sentinel_password_file,
	    "", 0, 0, NULL),
	LIST("redis", "queues", redis.queues, redis.nqueues, default_queues,
	    1, 64, QUEUE_NAME_MAX, F_NONEMPTY | F_NOSPACE | F_UNIQUE),
	INT("redis", "dead_max", redis.dead_max, 100000, 1, 1000000000),
	INT("redis", "connect_timeout_ms", redis.connect_timeout_ms,
	    2000, 1, 600000),
	INT("redis", "command_timeout_ms", redis.command_timeout_ms,
	    10000, 100, 3600000),

	STR("postgres", "conninfo", postgres.conninfo, "dbname=tasks", 0, 0,
	    check_conninfo),
	INT("postgres", "connections", postgres.connections, 2, 1, 64),
	STR("postgres", "table", postgres.table, "task", 0, F_NONEMPTY,
	    check_table),
	STR("postgres", "id_column", postgres.id_column, "id", 0,
	    F_NONEMPTY, NULL),
	STR("postgres", "status_column", postgres.status_column, "status", 0,
	    F_NONEMPTY, NULL),
	LIST("postgres", "columns", postgres.columns, postgres.ncolumns,
	    default_columns, 0, 64, 0, F_NONEMPTY | F_UNIQUE),
	STR("postgres", "completed_status", postgres.completed_status,
	    "completed", 0, F_NONEMPTY, NULL),
	STR("postgres", "failed_status", postgres.failed_status, "failed", 0,
	    F_NONEMPTY, NULL),
	STR("postgres", "attempts_column", postgres.attempts_column, "", 0, 0,
	    NULL),
	STR("postgres", "error_column", postgres.error_column, "", 0, 0,
	    NULL),
	INT("postgres", "connect_timeout_ms", postgres.connect_timeout_ms,
	    5000, 1, 600000),
	INT("postgres", "command_timeout_ms", postgres.command_timeout_ms,
	    30000, 100, 3600000),
	INT("postgres", "max_row_bytes", postgres.max_row_bytes, 16777216,
	    1024, 1073741824),

	STR("worker", "id", worker.id, "", 200, F_NOSPACE, NULL),
	INT("worker", "delay_ms", worker.delay_ms, 1000, 0, 86400000),
	INT("worker", "concurrency", worker.concurrency, 4096, 1, 100000),
	INT("worker", "shutdown_timeout_ms", worker.shutdown_timeout_ms,
	    30000, 0, 86400000),
	INT("worker", "retry_min_ms", worker.retry_min_ms, 100, 1, 600000),
	INT("worker", "retry_max_ms", worker.retry_max_ms, 30000, 1, 3600000),
	INT("worker", "missing_row_grace_ms", worker.missing_row_grace_ms,
	    3000, 0, 3600000),
	INT("worker", "heartbeat_ttl_ms", worker.heartbeat_ttl_ms, 15000, 1000,
	    300000),
	INT("worker", "max_bytes_in_flight", worker.max_bytes_in_flight,
	    268435456, 1048576, 2147483647),

	NAMED("handler", "type", K_HANDLER, handler.type, "none",
	    handler_names),
	LIST("handler", "command", handler.command, handler.ncommand,
	    default_empty, 0, 256, 0, 0),
	LIST("handler", "environment", handler.environment,
	    handler.nenvironment, default_empty, 0, 1024, 0, F_NONEMPTY),
	STR("handler", "working_directory", handler.working_directory, "", 0,
	    0, NULL),
	INT("handler", "timeout_ms", handler.timeout_ms, 1800000, 0,
	    604800000),
	INT("handler", "kill_grace_ms", handler.kill_grace_ms, 5000, 0,
	    3600000),
	INT("handler", "max_processes", handler.max_processes, 32, 1, 100000),
	STR("handler", "statement", handler.statement, "", 0, 0, NULL),
	STR("handler", "url", handler.url, "", 8192, 0, http_check_url),
	STR("handler", "method", handler.method, "POST", 0, F_NONEMPTY,
	    http_check_method),
	LISTC("handler", "headers", handler.headers, handler.nheaders,
	    default_empty, 0, 256, 8192, F_NONEMPTY, http_check_header),
	INT("handler", "connect_timeout_ms", handler.connect_timeout_ms, 10000,
	    1, 600000),
	INT("handler", "max_connections", handler.max_connections, 64, 1,
	    100000),
	STR("handler", "ca_file", handler.ca_file, "", 0, 0, NULL),
	INT("handler", "max_response_bytes", handler.max_response_bytes, 65536,
	    0, 1073741824),
	STR("handler", "token_file", handler.token_file, "", 0, 0, NULL),
	BOOL("handler", "http2", handler.http2, 0),

	INT("retry", "attempts", retry.attempts, 5, 1, 1000),
	INT("retry", "min_ms", retry.min_ms, 1000, 1, 86400000),
	INT("retry", "max_ms", retry.max_ms, 3600000, 1, 604800000),

	STR("metrics", "listen", metrics.listen, "", 0, F_NOSPACE,
	    check_listen),
	INT("metrics", "sample_interval_ms", metrics.sample_interval_ms, 5000,
	    100, 3600000),

	NAMED("log", "level", K_LEVEL, log.level, "info", level_names),
	NAMED("log", "facility", K_FACILITY, log.facility, "daemon",
	    facility_names),
	STR("log", "ident", log.ident, "taskworkerd", 0, F_NONEMPTY, NULL),
};

#define NKEYS	(sizeof(keys) / sizeof(keys[0]))

/* One load in progress. */
struct loader {
	const char *path;
	config_error_fn *err;
	void *arg;
	int nerrors;
	struct config *cfg;
	unsigned int line[NKEYS];	/* where the file set the key, or 0 */
	unsigned char bad[NKEYS];	/* the file's value was refused */
	unsigned int limit_line[64];	/* where each entry of limits is */
};

static void set_limits(struct loader *ld, const config_setting_t *sec);

static void
report(struct loader *ld, unsigned int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Hands one error line to the caller. Control bytes are shown as \xHH so
 * a hostile file cannot forge log lines, and a password in a conninfo as
 * "***"; nothing here allocates.
 */
static void
report(struct loader *ld, unsigned int line, const char *fmt, ...)
{
	char raw[MSG_MAX], msg[MSG_MAX], out[PATH_MAX + 4 * MSG_MAX + 32];
	char pfx[64];
	const unsigned char *p;
	size_t n;
	va_list ap;

	ld->nerrors++;
	if (ld->err == NULL)
		return;

	va_start(ap, fmt);
	if (vsnprintf(raw, sizeof(raw), fmt, ap) >= (int)sizeof(raw))
		memcpy(raw + sizeof(raw) - 4, "...", 4);
	va_end(ap);
	config_redact(raw, msg, sizeof(msg));	/* a conninfo's password */

	if (line > 0)
		snprintf(pfx, sizeof(pfx), ":%u: ", line);
	else
		snprintf(pfx, sizeof(pfx), ": ");
	n = (size_t)snprintf(out, PATH_MAX, "%s", ld->path);
	if (n >= PATH_MAX)
		n = PATH_MAX - 1;
	n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", pfx);
	for (p = (const unsigned char *)msg; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			n += (size_t)snprintf(out + n, sizeof(out) - n,
			    "\\x%02x", *p);
		else
			out[n++] = (char)*p;
	}
	out[n] = '\0';
	ld->err(ld->arg, out);
}

static const struct key *
find_key(const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/*
 * The number of SECTION among the table's sections, in table order
 * (redis 0, postgres 1, ...), or -1 when the table has no such section.
 */
static int
section_index(const char *section)
{
	int n = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		if (i > 0 && strcmp(keys[i].section, keys[i - 1].section) != 0)
			n++;
		if (strcmp(keys[i].section, section) == 0)
			return n;
	}
	return -1;
}

static int
section_known(const char *section)
{
	return section_index(section) != -1;
}

static void *
field(struct config *cfg, size_t off)
{
	return (char *)cfg + off;
}

static const struct name_value *
find_name(const struct name_value *names, const char *name)
{
	for (; names->name != NULL; names++)
		if (strcmp(names->name, name) == 0)
			return names;
	return NULL;
}

static void
free_list(char **list)
{
	char **p;

	if (list == NULL)
		return;
	for (p = list; *p != NULL; p++)
		free(*p);
	free(list);
}

/* Stores V into the named field of K. */
static void
store_named(struct config *cfg, const struct key *k, int v)
{
	if (k->kind == K_HANDLER)
		*(enum handler_type *)field(cfg, k->off) = (enum handler_type)v;
	else
		*(int *)field(cfg, k->off) = v;
}

static int
set_defaults(struct config *cfg)
{
	const struct key *k;
	const struct name_value *nv;
	char **list;
	size_t i, j, n;

	for (i = 0; i < NKEYS; i++) {
		k = &keys[i];
		switch (k->kind) {
		case K_INT:
		case K_BOOL:
			*(int *)field(cfg, k->off) = (int)k->def_int;
			break;
		case K_STRING:
			if ((*(char **)field(cfg, k->off) =
			    strdup(k->def_str)) == NULL)
				return -1;
			break;
		case K_LIST:
			for (n = 0; k->def_list[n] != NULL; n++)
				;
			if ((list = calloc(n + 1, sizeof(*list))) == NULL)
				return -1;
			*(char ***)field(cfg, k->off) = list;
			for (j = 0; j < n; j++)
				if ((list[j] = strdup(k->def_list[j])) == NULL)
					return -1;
			*(int *)field(cfg, k->count_off) = (int)n;
			break;
		case K_LEVEL:
		case K_FACILITY:
		case K_HANDLER:
			nv = find_name(k->names, k->def_str);
			store_named(cfg, k, nv != NULL ? nv->value : 0);
			break;
		}
	}
	return 0;
}

/*
 * Checks one string against the flags and length limit of K. WHAT names
 * it in messages ("redis.queues[2]"). Returns 0 when fine.
 */
static int
check_string(struct loader *ld, const struct key *k, const char *what,
    unsigned int line, const char *s)
{
	char buf[MSG_MAX];
	const char *why;
	const unsigned char *p;
	int bad = 0;

	if ((k->flags & F_NONEMPTY) && *s == '\0') {
		report(ld, line, "%s: must not be empty", what);
		return -1;
	}
	if (k->maxlen > 0 && strlen(s) > k->maxlen) {
		report(ld, line, "%s: must be at most %zu bytes long", what,
		    k->maxlen);
		bad = -1;
	}
	if (k->flags & F_NOSPACE) {
		for (p = (const unsigned char *)s; *p != '\0'; p++)
			if (*p <= 0x20 || *p == 0x7f)
				break;
		if (*p != '\0') {
			report(ld, line, "%s: must not contain whitespace or "
			    "control characters", what);
			bad = -1;
		}
	}
	if (bad == 0 && k->check != NULL &&
	    (why = k->check(s, buf, sizeof(buf))) != NULL) {
		report(ld, line, "%s: %s", what, why);
		bad = -1;
	}
	return bad;
}

/* S, an integer from MIN to MAX, into *V; else -1, reported as WHAT's. */
static int
get_int(struct loader *ld, const config_setting_t *s, unsigned int line,
    const char *what, long long min, long long max, long long *v)
{
	int type = config_setting_type(s);

	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
		report(ld, line, "%s: expected an integer", what);
		return -1;
	}
	*v = config_setting_get_int64(s);
	if (*v < min || *v > max) {
		report(ld, line, "%s: must be between %lld and %lld", what, min,
		    max);
		return -1;
	}
	return 0;
}

static void
set_int(struct loader *ld, const struct key *k, const config_setting_t *s,
    unsigned int line)
{
	char what[128];
	long long v;

	snprintf(what, sizeof(what), "%s.%s", k->section, k->name);
	if (get_int(ld, s, line, what, k->min, k->max, &v) == 0)
		*(int *)field(ld->cfg, k->off) = (int)v;
}

static void
set_string(struct loader *ld, const struct key *k, const config_setting_t *s,
    unsigned int line)
{
	char what[128];
	const char *v;
	char *copy;

	if (config_setting_type(s) != CONFIG_TYPE_STRING ||
	    (v = config_setting_get_string(s)) == NULL) {
		report(ld, line, "%s.%s: expected a string", k->section,
		    k->name);
		return;
	}
	snprintf(what, sizeof(what), "%s.%s", k->section, k->name);
	if (check_string(ld, k, what, line, v) == -1)
		return;
	if ((copy = strdup(v)) == NULL) {
		report(ld, line, "%s: out of memory", what);
		return;
	}
	free(*(char **)field(ld->cfg, k->off));
	*(char **)field(ld->cfg, k->off) = copy;
}

static void
set_list(struct loader *ld, const struct key *k, const config_setting_t *s,
    unsigned int line)
{
	const config_setting_t *e;
	const char *v;
	char what[128], **list;
	int type = config_setting_type(s), n, i, j, bad = 0;

	if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
		report(ld, line, "%s.%s: expected a list of strings",
		    k->section, k->name);
		return;
	}
	n = config_setting_length(s);
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned int)i);
		if (e == NULL || config_setting_type(e) != CONFIG_TYPE_STRING ||
		    config_setting_get_string(e) == NULL) {
			report(ld, line, "%s.%s: expected a list of strings",
			    k->section, k->name);
			return;
		}
	}
	if (n < k->min || n > k->max) {
		report(ld, line, "%s.%s: must have between %lld and %lld "
		    "entries", k->section, k->name, k->min, k->max);
		return;
	}
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned int)i);
		v = config_setting_get_string(e);
		snprintf(what, sizeof(what), "%s.%s[%d]", k->section, k->name,
		    i);
		if (check_string(ld, k, what, config_setting_source_line(e),
		    v) == -1) {
			bad = 1;
			continue;
		}
		if (!(k->flags & F_UNIQUE))
			continue;
		for (j = 0; j < i; j++)
			if (strcmp(v, config_setting_get_string(
			    config_setting_get_elem(s, (unsigned int)j))) == 0)
				break;
		if (j < i) {
			report(ld, config_setting_source_line(e),
			    "%s: \"%.100s\" is already %s.%s[%d]", what, v,
			    k->section, k->name, j);
			bad = 1;
		}
	}
	if (bad)
		return;

	if ((list = calloc((size_t)n + 1, sizeof(*list))) == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		v = config_setting_get_string(config_setting_get_elem(s,
		    (unsigned int)i));
		if ((list[i] = strdup(v)) == NULL) {
			free_list(list);
			goto nomem;
		}
	}
	free_list(*(char ***)field(ld->cfg, k->off));
	*(char ***)field(ld->cfg, k->off) = list;
	*(int *)field(ld->cfg, k->count_off) = n;
	return;
nomem:
	report(ld, line, "%s.%s: out of memory", k->section, k->name);
}

static void
set_named(struct loader *ld, const struct key *k, const config_setting_t *s,
    unsigned int line)
{
	const struct name_value *nv;
	const char *v;
	char valid[256];
	size_t n = 0;

	if (config_setting_type(s) != CONFIG_TYPE_STRING ||
	    (v = config_setting_get_string(s)) == NULL) {
		report(ld, line, "%s.%s: expected a string", k->section,
		    k->name);
		return;
	}
	if ((nv = find_name(k->names, v)) != NULL) {
		store_named(ld->cfg, k, nv->value);
		return;
	}
	valid[0] = '\0';
	for (nv = k->names; nv->name != NULL && n < sizeof(valid); nv++)
		n += (size_t)snprintf(valid + n, sizeof(valid) - n, "%s%s",
		    n > 0 ? ", " : "", nv->name);
	report(ld, line, "%s.%s: unknown value \"%.100s\" (valid: %s)",
	    k->section, k->name, v, valid);
}

/* One setting inside a section group. */
static void
set_key(struct loader *ld, const char *section, const config_setting_t *s)
{
	const struct key *k;
	const char *name = config_setting_name(s);
	unsigned int line = config_setting_source_line(s);
	int nerrors = ld->nerrors;

	if (name == NULL || (k = find_key(section, name)) == NULL) {
		report(ld, line, "unknown key '%s.%s'", section,
		    name != NULL ? name : "");
		return;
	}
	ld->line[k - keys] = line;
	switch (k->kind) {
	case K_INT:
		set_int(ld, k, s, line);
		break;
	case K_BOOL:
		if (config_setting_type(s) != CONFIG_TYPE_BOOL)
			report(ld, line, "%s.%s: expected true or false",
			    k->section, k->name);
		else
			*(int *)field(ld->cfg, k->off) =
			    config_setting_get_bool(s) != 0;
		break;
	case K_STRING:
		set_string(ld, k, s, line);
		break;
	case K_LIST:
		set_list(ld, k, s, line);
		break;
	case K_LEVEL:
	case K_FACILITY:
	case K_HANDLER:
		set_named(ld, k, s, line);
		break;
	}
	if (ld->nerrors > nerrors)
		ld->bad[k - keys] = 1;
}

static void
walk(struct loader *ld, const config_t *lc)
{
	const config_setting_t *root, *sec, *s;
	const char *name;
	int i, j, n, m;

	if ((root = config_root_setting(lc)) == NULL)
		return;
	n = config_setting_length(root);
	for (i = 0; i < n; i++) {
		if ((sec = config_setting_get_elem(root, (unsigned int)i)) ==
		    NULL)
			continue;
		name = config_setting_name(sec);
		if (name != NULL && strcmp(name, "limits") == 0) {
			set_limits(ld, sec);
			continue;
		}
		if (name == NULL || !section_known(name)) {
			report(ld, config_setting_source_line(sec),
			    "unknown section '%s'", name != NULL ? name : "");
			continue;
		}
		if (config_setting_type(sec) != CONFIG_TYPE_GROUP) {
			report(ld, config_setting_source_line(sec),
			    "%s: expected a group, like %s: { ... };", name,
			    name);
			continue;
		}
		ld->cfg->sections |= 1u << section_index(name);
		m = config_setting_length(sec);
		for (j = 0; j < m; j++)
			if ((s = config_setting_get_elem(sec,
			    (unsigned int)j)) != NULL)
				set_key(ld, name, s);
	}
}

/* Appends LEN bytes of S to OUT at *N, leaving room for the NUL. */
static void
put(char *out, size_t size, size_t *n, const char *s, size_t len)
{
	if (*n + 1 >= size)
		return;
	if (len > size - 1 - *n)
		len = size - 1 - *n;
	memcpy(out + *n, s, len);
	*n += len;
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	    c == '\f' || c == '\v';
}

/*
 * At S, "password" then '=' (spaces around it allowed): the length up to
 * the value, or 0.
 */
static size_t
password_key(const char *s)
{
	size_t i = 8;

	if (strncasecmp(s, "password", 8) != 0)
		return 0;
	while (s[i] == ' ' || s[i] == '\t')
		i++;
	if (s[i] != '=')
		return 0;
	i++;
	while (s[i] == ' ' || s[i] == '\t')
		i++;
	return i;
}

/*
 * The length of the value at S: a quoted one to its closing quote (a
 * backslash escapes), else to a blank, and in a URI query (QUERY) to the
 * next '&' or '#' too.
 */
static size_t
password_value(const char *s, int query)
{
	size_t i = 0;

	if (*s == '\'') {
		for (i = 1; s[i] != '\0' && s[i] != '\''; i++)
			if (s[i] == '\\' && s[i + 1] != '\0')
				i++;
		return s[i] == '\'' ? i + 1 : i;
	}
	while (s[i] != '\0' && !is_blank(s[i]) &&
	    !(query && (s[i] == '&' || s[i] == '#')))
		i++;
	return i;
}

/*
 * At S, just after "://": the length of "user:" when a password follows
 * it up to the last '@' of the token (a malformed URI may hold a '/' in
 * its password, so the token, not the authority, bounds it); *PW_LEN is
 * the password's length. 0 when there is none.
 */
static size_t
uri_password(const char *s, size_t *pw_len)
{
	size_t end = 0, at = 0, colon = 0;
	int has_at = 0, has_colon = 0;

	for (; s[end] != '\0' && !is_blank(s[end]) && s[end] != '"' &&
	    s[end] != '\''; end++)
		if (s[end] == '@') {
			at = end;
			has_at = 1;
		}
	if (!has_at)
		return 0;
	for (colon = 0; colon < at; colon++)
		if (s[colon] == ':') {
			has_colon = 1;
			break;
		}
	if (!has_colon)
		return 0;
	*pw_len = at - colon - 1;
	return colon + 1;
}

char *
config_redact(const char *in, char *out, size_t size)
{
	size_t i = 0, n = 0, k, v;

	if (size == 0)
		return out;
	while (in[i] != '\0') {
		if (strncmp(in + i, "://", 3) == 0 &&
		    (k = uri_password(in + i + 3, &v)) > 0) {
			put(out, size, &n, in + i, 3 + k);
			put(out, size, &n, "***", 3);
			i += 3 + k + v;
		} else if ((i == 0 || !isalnum((unsigned char)in[i - 1]) ||
		    (i >= 3 && strncasecmp(in + i - 3, "ssl", 3) == 0)) &&
		    (k = password_key(in + i)) > 0) {
			int query = i > 0 && (in[i - 1] == '?' ||
			    in[i - 1] == '&');

			put(out, size, &n, in + i, k);
			v = password_value(in + i + k, query);
			if (v > 0)
				put(out, size, &n, "***", 3);
			i += k + v;
		} else
			put(out, size, &n, in + i++, 1);
	}
	out[n] = '\0';
	return out;
}

static const char *
check_conninfo(const char *s, char *buf, size_t size)
{
	PQconninfoOption *opts;
	char *errmsg = NULL;
	size_t n;

	if ((opts = PQconninfoParse(s, &errmsg)) != NULL) {
		PQconninfoFree(opts);
		return NULL;
	}
	if (errmsg == NULL)
		return "out of memory";
	/* libpq's message may quote the whole string, password and all. */
	config_redact(errmsg, buf, size);
	PQfreemem(errmsg);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
	    buf[n - 1] == ' '))
		buf[--n] = '\0';
	return buf;
}

static const char *
check_table(const char *s, char *buf, size_t size)
{
	const char *dot;

	(void)buf;
	(void)size;
	dot = strchr(s, '.');
	if (*s == '\0' || dot == s ||
	    (dot != NULL && (dot[1] == '\0' || strchr(dot + 1, '.') != NULL)))
		return "must be \"name\" or \"schema.name\"";
	return NULL;
}

static const char *
check_listen(const char *s, char *buf, size_t size)
{
	struct sockaddr_storage sa;
	socklen_t len;

	if (*s == '\0')
		return NULL;	/* off */
	return netaddr_parse(s, &sa, &len, buf, size);
}

static const char *
check_host_port(const char *s, char *buf, size_t size)
{
	char host[NETADDR_HOSTLEN + 1];
	const char *why;
	int port;

	if ((why = netaddr_host_port(s, host, sizeof(host), &port)) == NULL)
		return NULL;
	snprintf(buf, size, "\"%.100s\": %s", s, why);
	return buf;
}

/*
 * Reads at most LIMIT bytes of PATH into a new NUL-terminated buffer.
 * Returns -1 with errno set on failure; *TOOBIG when the file is longer.
 * With REGULAR, anything but a regular file (a FIFO that would block the
 * loop on reload, a device) fails with EINVAL.
 */
static int
read_file(const char *path, size_t limit, int regular, char **bufp,
    size_t *lenp, int *toobig)
{
	struct stat st;
	FILE *fp;
	char *buf;
	size_t len = 0, got;
	int fd, saved;

	*toobig = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC |
	    (regular ? O_NONBLOCK : 0))) == -1)
		return -1;
	if (regular && fstat(fd, &st) == -1)
		goto fail;
	if (regular && !S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	if ((fp = fdopen(fd, "r")) == NULL)
		goto fail;
	if ((buf = malloc(limit + 2)) == NULL) {
		fclose(fp);
		errno = ENOMEM;
		return -1;
	}
	errno = 0;
	while (len < limit + 1 &&
	    (got = fread(buf + len, 1, limit + 1 - len, fp)) > 0)
		len += got;
	if (ferror(fp)) {
		saved = errno != 0 ? errno : EIO;
		fclose(fp);
		free(buf);
		errno = saved;
		return -1;
	}
	fclose(fp);
	if (len > limit) {
		*toobig = 1;
		len = limit;
	}
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	return 0;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/*
 * libconfig would silently cut a string at an escaped NUL and would read
 * any file an @include names; refuse both before parsing.
 */
static void
prescan(struct loader *ld, const char *buf, size_t len)
{
	enum { TEXT, STRING, LINE_COMMENT, BLOCK_COMMENT } st = TEXT;
	unsigned int line = 1;
	size_t i;
	char c, next;

	for (i = 0; i < len; i++) {
		c = buf[i];
		next = i + 1 < len ? buf[i + 1] : '\0';
		if (c == '\n') {
			line++;
			if (st == LINE_COMMENT)
				st = TEXT;
			continue;
		}
		switch (st) {
		case TEXT:
			if (c == '"')
				st = STRING;
			else if (c == '#')
				st = LINE_COMMENT;
			else if (c == '/' && next == '/')
				st = LINE_COMMENT;
			else if (c == '/' && next == '*') {
				st = BLOCK_COMMENT;
				i++;
			} else if (c == '@' && len - i >= 8 &&
			    strncmp(buf + i, "@include", 8) == 0)
				report(ld, line, "@include is not supported");
			break;
		case STRING:
			if (c == '"')
				st = TEXT;
			else if (c == '\\' && (next == 'x' || next == 'X') &&
			    i + 3 < len && buf[i + 2] == '0' &&
			    buf[i + 3] == '0')
				report(ld, line, "a string holds a NUL byte "
				    "(\\x00)");
			else if (c == '\\' && next != '\0' && next != '\n' &&
			    strchr("nrtf\\\"", next) != NULL)
				i++;
			break;
		case LINE_COMMENT:
			break;
		case BLOCK_COMMENT:
			if (c == '*' && next == '/') {
				st = TEXT;
				i++;
			}
			break;
		}
	}
}

static unsigned int
line_of(const char *buf, size_t off)
{
	unsigned int line = 1;
	size_t i;

	for (i = 0; i < off; i++)
		if (buf[i] == '\n')
			line++;
	return line;
}

/* Reads the file into a libconfig tree; -1 after reporting why not. */
static int
parse(struct loader *ld, config_t *lc)
{
	const char *nul, *text;
	char *buf;
	size_t len;
	FILE *fp;
	int toobig, rc;

	if (read_file(ld->path, CONFIG_MAX_BYTES, 0, &buf, &len, &toobig) ==
	    -1) {
		report(ld, 0, "cannot read: %s", strerror(errno));
		return -1;
	}
	if (toobig) {
		report(ld, 0, "file is larger than %d bytes",
		    CONFIG_MAX_BYTES);
		free(buf);
		return -1;
	}
	if ((nul = memchr(buf, '\0', len)) != NULL) {
		report(ld, line_of(buf, (size_t)(nul - buf)),
		    "NUL byte in the file: not a text file");
		free(buf);
		return -1;
	}
	rc = ld->nerrors;
	prescan(ld, buf, len);
	if (ld->nerrors > rc || len == 0) {
		free(buf);
		return ld->nerrors > rc ? -1 : 0;
	}
	if ((fp = fmemopen(buf, len, "r")) == NULL) {
		report(ld, 0, "cannot read: %s", strerror(errno));
		free(buf);
		return -1;
	}
	rc = config_read(lc, fp);
	fclose(fp);
	free(buf);
	if (rc != CONFIG_TRUE) {
		text = config_error_text(lc);
		report(ld, config_error_line(lc) > 0 ?
		    (unsigned int)config_error_line(lc) : 0, "%s",
		    text != NULL ? text : "syntax error");
		return -1;
	}
	return 0;
}

static unsigned int
line_of_key(const struct loader *ld, const char *section, const char *name)
{
	const struct key *k = find_key(section, name);

	return k != NULL ? ld->line[k - keys] : 0;
}

static int
key_bad(const struct loader *ld, const char *section, const char *name)
{
	const struct key *k = find_key(section, name);

	return k != NULL && ld->bad[k - keys];
}

/*
 * Reads the first line of SECTION.FILE_KEY into *PW (the secret it names
 * is not in the config file itself).
 */
static void
load_password_file(struct loader *ld, const char *section,
    const char *file_key, const char *file, char **pw)
{
	const char *slash;
	unsigned int line = line_of_key(ld, section, file_key);
	char *path, *secret, what[64], msg[MSG_MAX];
	int dirlen;

	snprintf(what, sizeof(what), "%s.%s", section, file_key);
	/* A relative path is relative to the config file's directory. */
	slash = strrchr(ld->path, '/');
	if (file[0] != '/' && slash != NULL) {
		dirlen = (int)(slash - ld->path);
		if (asprintf(&path, "%.*s/%s", dirlen, ld->path, file) == -1)
			path = NULL;
	} else
		path = strdup(file);
	if (path == NULL) {
		report(ld, line, "%s: out of memory", what);
		return;
	}
	if (credentials_read_file(what, path, 0, &secret, msg, sizeof(msg)) ==
	    1) {
		free(*pw);
		*pw = secret;
	} else
		report(ld, line, "%s", msg);
	free(path);
}

/*
 * A password of redis.PW_KEY, or the first line of redis.FILE_KEY (not
 * both), or else the systemd credential CRED when the service has one.
 */
static void
load_secret(struct loader *ld, const char *pw_key, char **pw,
    const char *file_key, const char *file, const char *cred)
{
	char msg[MSG_MAX];

	if (file[0] != '\0' && !key_bad(ld, "redis", pw_key)) {
		if ((*pw)[0] != '\0')
			report(ld, line_of_key(ld, "redis", file_key),
			    "redis.%s: cannot be used together with redis.%s",
			    file_key, pw_key);
		else
			load_password_file(ld, "redis", file_key, file, pw);
	} else if ((*pw)[0] == '\0' &&
	    credentials_password(cred, pw, msg, sizeof(msg)) == -1)
		report(ld, 0, "%s", msg);
}

/*
 * With redis.sentinels the sentinels say where the master is: a host,
 * port or unix socket given as well would be ignored, so it is refused;
 * without them, a sentinel_* key would be.
 */
static void
check_sentinels(struct loader *ld)
{
	static const char *const direct[] = { "host", "port", "unix_socket" };
	static const char *const named[] = { "sentinel_master",
	    "sentinel_username", "sentinel_password",
	    "sentinel_password_file" };
	struct config *cfg = ld->cfg;
	const char *vals[] = { cfg->redis.sentinel_master,
	    cfg->redis.sentinel_username, cfg->redis.sentinel_password,
	    cfg->redis.sentinel_password_file };
	unsigned int line;

	if (key_bad(ld, "redis", "sentinels"))
		return;
	if (cfg->redis.nsentinels == 0) {
		for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
			if (vals[i][0] != '\0')
				report(ld, line_of_key(ld, "redis", named[i]),
				    "redis.%s: goes with redis.sentinels, "
				    "which is not set", named[i]);
		return;
	}
	for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++)
		if ((line = line_of_key(ld, "redis", direct[i])) != 0)
			report(ld, line, "redis.%s: not together with "
			    "redis.sentinels, which say where the master is; "
			    "leave it out", direct[i]);
	if (cfg->redis.sentinel_master[0] == '\0' &&
	    !key_bad(ld, "redis", "sentinel_master")) {
		line = line_of_key(ld, "redis", "sentinel_master");
		report(ld, line != 0 ? line : line_of_key(ld, "redis",
		    "sentinels"), "redis.sentinel_master: required when "
		    "redis.sentinels is set: the name the sentinels monitor "
		    "the master by");
	}
}

/* MIN_KEY <= MAX_KEY of SECTION, reported at whichever the file set. */
static void
check_bounds(struct loader *ld, const char *section, const char *min_key,
    int min, const char *max_key, int max)
{
	unsigned int line;

	if (max >= min || key_bad(ld, section, min_key) ||
	    key_bad(ld, section, max_key))
		return;
	line = line_of_key(ld, section, max_key);
	if (line == 0)
		line = line_of_key(ld, section, min_key);
	report(ld, line, "%s.%s: must not be less than %s.%s (%d)", section,
	    max_key, section, min_key, min);
}

/* "NAME=value" with NAME a shell-style variable name. */
static int
env_entry_ok(const char *s)
{
	const char *p = s;

	if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
		return 0;
	while (*p == '_' || (*p >= 'A' && *p <= 'Z') ||
	    (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
		p++;
	return *p == '=';
}

/*
 * The most a request's header block can come to over HTTP/2, counted as
 * nghttp2 counts it before it sends one (nghttp2_hd_deflate_bound: 12
 * bytes, then 12 a field besides its name and value; a HEADERS frame adds
 * the 5 of a priority), from above: the URL stands for both :path and
 * :authority, a byte of it that libcurl may send percent-encoded (not
 * printable ASCII) for three, a header's line for its name and value, a
 * queue name in the Idempotency-Key at its longest (a reload keeps the
 * running queues, whatever the file says), and every field the daemon
 * adds is counted.
 */
static size_t
h2_block_bound(const struct config *cfg)
{
	static const char *const ours[][2] = {
		{ ":scheme", "https" },
		{ "user-agent", HTTP_USER_AGENT },
		{ "accept", "*/*" },
		{ "content-type", "application/json" },
		{ "content-length", "18446744073709551615" },
	};
	size_t n = 12 + 5;

	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		n += 12 + strlen(ours[i][0]) + strlen(ours[i][1]);
	n += 12 + strlen(":method") + strlen(cfg->handler.method);
	n += 24 + strlen(":path") + strlen(":authority");
	for (const unsigned char *p = (const unsigned char *)cfg->handler.url;
	    *p != '\0'; p++)
		n += *p > 0x20 && *p < 0x7f ? 1 : 3;
	if (cfg->handler.token != NULL)
		n += 12 + strlen("authorization") + strlen("Bearer ") +
		    strlen(cfg->handler.token);
	for (int i = 0; i < cfg->handler.nheaders; i++)
		n += 12 + strlen(cfg->handler.headers[i]);
	/* "QUEUE:ID", an id of up to 20 characters. */
	return n + 12 + strlen("idempotency-key") + QUEUE_NAME_MAX + 1 + 20;
}

/*
 * An http handler needs a URL; its timeout defaults to 30 s rather than
 * a program's 30 min; its bearer token comes from handler.token_file or
 * the http-token credential, never from the file itself.
 */
static void
check_http(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	char msg[MSG_MAX];
	struct stat st;
	unsigned int line;
	size_t bound;

	if (cfg->handler.url[0] == '\0' && !key_bad(ld, "handler", "url")) {
		line = line_of_key(ld, "handler", "url");
		report(ld, line ? line : line_of_key(ld, "handler", "type"),
		    "handler.url: required when handler.type is \"http\"");
	}
	if (line_of_key(ld, "handler", "timeout_ms") == 0)
		cfg->handler.timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
	if (cfg->handler.ca_file[0] != '\0' &&
	    (stat(cfg->handler.ca_file, &st) == -1 || !S_ISREG(st.st_mode) ||
	    access(cfg->handler.ca_file, R_OK) == -1))
		report(ld, line_of_key(ld, "handler", "ca_file"),
		    "handler.ca_file: %s is not a readable file",
		    cfg->handler.ca_file);
	if (cfg->handler.token_file[0] != '\0')
		load_password_file(ld, "handler", "token_file",
		    cfg->handler.token_file, &cfg->handler.token);
	else if (credentials_password(CRED_HTTP_TOKEN, &cfg->handler.token,
	    msg, sizeof(msg)) == -1)
		report(ld, 0, "%s", msg);
	/* A token goes into a header line: no control byte. */
	for (const unsigned char *p = (const unsigned char *)
	    cfg->handler.token; p != NULL && *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f) {
			report(ld, line_of_key(ld, "handler", "token_file"),
			    "handler: the bearer token holds a control byte "
			    "(at byte %d)",
			    (int)(p - (const unsigned char *)cfg->handler.token));
			break;
		}
	if (cfg->handler.token != NULL)
		for (int i = 0; i < cfg->handler.nheaders; i++)
			if (strncasecmp(cfg->handler.headers[i],
			    "Authorization:", 14) == 0)
				report(ld, line_of_key(ld, "handler",
				    "headers"), "handler.headers[%d]: an "
				    "Authorization header cannot go with a "
				    "bearer token", i);
	/*
	 * Over HTTP/2 (h2c, or what an https:// server offers) nghttp2 sends
	 * no header block above 64 KiB: every request would fail.
	 */
	if ((cfg->handler.http2 ||
	    strncasecmp(cfg->handler.url, "https:", 6) == 0) &&
	    (bound = h2_block_bound(cfg)) > H2_BLOCK_MAX) {
		line = line_of_key(ld, "handler", "headers");
		report(ld, line ? line : line_of_key(ld, "handler", "url"),
		    "handler: the URL, handler.headers and the token come to "
		    "a header block of up to %zu bytes, over the %d HTTP/2 "
		    "sends (with http2 = true or an https:// URL)", bound,
		    H2_BLOCK_MAX);
	}
}

/* What the chosen handler needs; -t finds a command that cannot run. */
static void
check_handler(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	unsigned int line;
	struct stat st;

	for (int i = 0; i < cfg->handler.nenvironment; i++)
		if (!env_entry_ok(cfg->handler.environment[i]))
			report(ld, line_of_key(ld, "handler", "environment"),
			    "handler.environment[%d]: expected \"NAME=value\", "
			    "not \"%.100s\"", i, cfg->handler.environment[i]);
	if (cfg->handler.working_directory[0] != '\0' &&
	    (stat(cfg->handler.working_directory, &st) == -1 ||
	    !S_ISDIR(st.st_mode)))
		report(ld, line_of_key(ld, "handler", "working_directory"),
		    "handler.working_directory: %s is not a directory",
		    cfg->handler.working_directory);
	switch (cfg->handler.type) {
	case HANDLER_EXEC:
		line = line_of_key(ld, "handler", "command");
		if (line == 0)
			line = line_of_key(ld, "handler", "type");
		if (cfg->handler.ncommand == 0) {
			report(ld, line, "handler.command: required when "
			    "handler.type is \"exec\"");
			break;
		}
		if (cfg->handler.command[0][0] != '/')
			report(ld, line, "handler.command: \"%.200s\" is not an "
			    "absolute path", cfg->handler.command[0]);
		else if (stat(cfg->handler.command[0], &st) == -1)
			report(ld, line, "handler.command: %s: %s",
			    cfg->handler.command[0], strerror(errno));
		else if (!S_ISREG(st.st_mode) ||
		    access(cfg->handler.command[0], X_OK) == -1)
			report(ld, line, "handler.command: %s is not an "
			    "executable file", cfg->handler.command[0]);
		break;
	case HANDLER_SQL:
		if (cfg->handler.statement[0] == '\0') {
			line = line_of_key(ld, "handler", "statement");
			report(ld, line ? line : line_of_key(ld, "handler",
			    "type"), "handler.statement: required when "
			    "handler.type is \"sql\"");
		}
		break;
	case HANDLER_HTTP:
		check_http(ld);
		break;
	case HANDLER_NONE:
		break;
	}
}

/* A byte of a column name as it is in its TASK_ variable (exec.c). */
static unsigned char
env_char(unsigned char c)
{
	if (c >= 'a' && c <= 'z')
		return c - ('a' - 'A');
	if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return c;
	return '_';
}

/* Would columns A and B be the same TASK_ variable? */
static int
same_task_var(const char *a, const char *b)
{
	const unsigned char *p = (const unsigned char *)a;
	const unsigned char *q = (const unsigned char *)b;

	for (; *p != '\0' && *q != '\0'; p++, q++)
		if (env_char(*p) != env_char(*q))
			return 0;
	return *p == *q;
}

/*
 * Every column of postgres.columns reaches an exec handler as its own
 * TASK_ variable (README "Handlers"): two that would share one ("a-b" and
 * "a_b", "Name" and "name"), or one that would be a variable the daemon
 * sets itself, are refused rather than one of them silently left out.
 */
static void
check_task_vars(struct loader *ld)
{
	static const char *const own[][2] = {
		{ "id", "TASK_ID" },
		{ "queue", "TASK_QUEUE" },
		{ "attempt", "TASK_ATTEMPT" },
	};
	const struct config *cfg = ld->cfg;
	unsigned int line = line_of_key(ld, "postgres", "columns");
	size_t k;
	int i, j;

	if (key_bad(ld, "postgres", "columns"))
		return;
	for (i = 0; i < cfg->postgres.ncolumns; i++) {
		const char *c = cfg->postgres.columns[i];

		for (k = 0; k < sizeof(own) / sizeof(own[0]); k++)
			if (same_task_var(c, own[k][0]))
				break;
		if (k < sizeof(own) / sizeof(own[0])) {
			report(ld, line, "postgres.columns[%d]: \"%.100s\" "
			    "would be %s, which the daemon sets itself", i, c,
			    own[k][1]);
			continue;
		}
		for (j = 0; j < i; j++)
			if (same_task_var(c, cfg->postgres.columns[j]))
				break;
		if (j < i) {
			char var[64] = "TASK_";
			size_t n = 5;

			for (const char *p = c; *p != '\0' && n < 60; p++)
				var[n++] = (char)env_char((unsigned char)*p);
			strcpy(var + n, strlen(c) + 5 > n ? "..." : "");
			report(ld, line, "postgres.columns[%d]: \"%.100s\" and "
			    "postgres.columns[%d] \"%.100s\" would both be %s "
			    "for an exec handler", i, c, j,
			    cfg->postgres.columns[j], var);
		}
	}
}

/*
 * No two queues may share a Redis key (README "Redis keys"): with
 * ["jobs", "jobs:dead"], the dead ids of one would be the tasks of the
 * other.
 */
static void
check_queue_keys(struct loader *ld)
{
	const struct config *cfg = ld->cfg;
	char why[MSG_MAX / 2];

	if (key_bad(ld, "redis", "queues"))
		return;
	for (int i = 0; i < cfg->redis.nqueues; i++)
		for (int j = 0; j < i; j++)
			if (qkeys_collide(cfg->redis.queues[i],
			    cfg->redis.queues[j], why, sizeof(why))) {
				report(ld, line_of_key(ld, "redis", "queues"),
				    "redis.queues[%d]: \"%.200s\" and "
				    "redis.queues[%d] \"%.200s\" share a key: "
				    "%s", i, cfg->redis.queues[i], j,
				    cfg->redis.queues[j], why);
				break;
			}
}

/* The optional columns are names distinct from the id and status columns. */
static void
check_columns(struct loader *ld)
{
	const struct config *cfg = ld->cfg;
	const char *names[] = { "attempts_column", "error_column" };
	const char *vals[] = { cfg->postgres.attempts_column,
	    cfg->postgres.error_column };

	for (int i = 0; i < 2; i++) {
		if (vals[i][0] == '\0' || key_bad(ld, "postgres", names[i]))
			continue;
		if (strcmp(vals[i], cfg->postgres.id_column) == 0 ||
		    strcmp(vals[i], cfg->postgres.status_column) == 0 ||
		    (i == 1 && strcmp(vals[1], vals[0]) == 0))
			report(ld, line_of_key(ld, "postgres", names[i]),
			    "postgres.%s: must differ from the id, status and "
			    "attempts columns", names[i]);
	}
	if (strcmp(cfg->postgres.failed_status,
	    cfg->postgres.completed_status) == 0 &&
	    !key_bad(ld, "postgres", "failed_status"))
		report(ld, line_of_key(ld, "postgres", "failed_status"),
		    "postgres.failed_status: must differ from "
		    "postgres.completed_status");
}

/* ---- limits: ( { queue = "Q"; rate = N; ... }, ... ) ---- */

#define LOFF(field)	offsetof(struct limit, field)

/* The integer keys of one entry of `limits`; 0 is "not set". */
static const struct {
	const char *name;
	size_t off;
	int def, min, max;
} limit_keys[] = {
	{ "rate", LOFF(rate), 0, 1, 1000000000 },
	{ "per_ms", LOFF(per_ms), 1000, 1, 86400000 },
	{ "burst", LOFF(burst), 1, 1, 1000000 },
	{ "max_in_flight", LOFF(max_in_flight), 0, 1, 1000000 },
};

#define NLIMIT_KEYS	(sizeof(limit_keys) / sizeof(limit_keys[0]))

/* One entry of `limits`, E (a group), into L; L->queue NULL when bad. */
static void
set_limit(struct loader *ld, const config_setting_t *e, int idx,
    struct limit *l)
{
	unsigned int line = config_setting_source_line(e);
	int set_rate = 0, set_other = 0;

	for (size_t j = 0; j < NLIMIT_KEYS; j++)
		*(int *)((char *)l + limit_keys[j].off) = limit_keys[j].def;
	for (int i = 0; i < config_setting_length(e); i++) {
		const config_setting_t *s = config_setting_get_elem(e,
		    (unsigned int)i);
		const char *name = config_setting_name(s);
		unsigned int sl = config_setting_source_line(s);
		char what[64];
		size_t j;
		long long v;

		if (name != NULL && strcmp(name, "queue") == 0) {
			const char *q = config_setting_type(s) ==
			    CONFIG_TYPE_STRING ? config_setting_get_string(s) :
			    NULL;

			if (q == NULL || *q == '\0') {
				report(ld, sl, "limits[%d].queue: expected a "
				    "queue name", idx);
				continue;
			}
			free(l->queue);
			if ((l->queue = strdup(q)) == NULL)
				report(ld, sl, "limits[%d]: out of memory",
				    idx);
			continue;
		}
		for (j = 0; j < NLIMIT_KEYS; j++)
			if (name != NULL && strcmp(name, limit_keys[j].name) ==
			    0)
				break;
		if (j == NLIMIT_KEYS) {
			report(ld, sl, "limits[%d]: unknown key '%s' (valid: "
			    "queue, rate, per_ms, burst, max_in_flight)", idx,
			    name != NULL ? name : "");
			continue;
		}
		snprintf(what, sizeof(what), "limits[%d].%s", idx, name);
		if (get_int(ld, s, sl, what, limit_keys[j].min,
		    limit_keys[j].max, &v) == -1)
			continue;
		*(int *)((char *)l + limit_keys[j].off) = (int)v;
		if (strcmp(name, "rate") == 0)
			set_rate = 1;
		else if (strcmp(name, "per_ms") == 0 ||
		    strcmp(name, "burst") == 0)
			set_other = 1;
	}
	if (l->queue == NULL)
		report(ld, line, "limits[%d]: needs queue = \"NAME\"", idx);
	if (set_other && !set_rate)
		report(ld, line, "limits[%d]: per_ms and burst shape a rate: "
		    "set rate too", idx);
}

/* The top-level list `limits`. */
static void
set_limits(struct loader *ld, const config_setting_t *sec)
{
	unsigned int line = config_setting_source_line(sec);
	int n;

	if (config_setting_type(sec) != CONFIG_TYPE_LIST) {
		report(ld, line, "limits: expected a list of groups, like "
		    "limits: ( { queue = \"tasks\"; rate = 100; } );");
		return;
	}
	n = config_setting_length(sec);
	if (n > 64) {
		report(ld, line, "limits: at most 64 entries, one a queue");
		return;
	}
	if (n == 0)
		return;
	if ((ld->cfg->limits = calloc((size_t)n, sizeof(struct limit))) ==
	    NULL) {
		report(ld, line, "limits: out of memory");
		return;
	}
	ld->cfg->nlimits = n;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(sec,
		    (unsigned int)i);

		ld->limit_line[i] = e ? config_setting_source_line(e) : line;
		if (e == NULL || config_setting_type(e) != CONFIG_TYPE_GROUP) {
			report(ld, ld->limit_line[i], "limits[%d]: expected a "
			    "group, like { queue = \"tasks\"; rate = 100; }",
			    i);
			continue;
		}
		set_limit(ld, e, i, &ld->cfg->limits[i]);
	}
}

/* Each limit names a queue of redis.queues, and no queue has two. */
static void
check_limits(struct loader *ld)
{
	const struct config *cfg = ld->cfg;

	if (key_bad(ld, "redis", "queues"))
		return;
	for (int i = 0; i < cfg->nlimits; i++) {
		const char *q = cfg->limits[i].queue;
		int j;

		if (q == NULL)
			continue;
		for (j = 0; j < cfg->redis.nqueues; j++)
			if (strcmp(q, cfg->redis.queues[j]) == 0)
				break;
		if (j == cfg->redis.nqueues)
			report(ld, ld->limit_line[i], "limits[%d].queue: \"%.200s\" "
			    "is not in redis.queues", i, q);
		for (j = 0; j < i; j++)
			if (cfg->limits[j].queue != NULL &&
			    strcmp(q, cfg->limits[j].queue) == 0) {
				report(ld, ld->limit_line[i], "limits[%d].queue: "
				    "\"%.200s\" already has limits[%d]", i, q,
				    j);
				break;
			}
	}
}

const struct limit *
config_limit(const struct config *cfg, const char *queue)
{
	for (int i = 0; i < cfg->nlimits; i++)
		if (cfg->limits[i].queue != NULL &&
		    strcmp(cfg->limits[i].queue, queue) == 0)
			return cfg->limits[i].rate > 0 ||
			    cfg->limits[i].max_in_flight > 0 ?
			    &cfg->limits[i] : NULL;
	return NULL;
}

/*
 * Checks that span several keys, and fills in derived values. A key whose
 * own value was refused is left out, so one mistake gives one error.
 */
static void
finish(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	char host[HOST_NAME_MAX + 1];

	check_bounds(ld, "worker", "retry_min_ms", cfg->worker.retry_min_ms,
	    "retry_max_ms", cfg->worker.retry_max_ms);
	check_bounds(ld, "retry", "min_ms", cfg->retry.min_ms, "max_ms",
	    cfg->retry.max_ms);
	check_handler(ld);
	check_columns(ld);
	check_task_vars(ld);
	check_queue_keys(ld);
	check_limits(ld);
	if (strcmp(cfg->postgres.id_column, cfg->postgres.status_column) ==
	    0 && !key_bad(ld, "postgres", "id_column") &&
	    !key_bad(ld, "postgres", "status_column")) {
		unsigned int line = line_of_key(ld, "postgres",
		    "status_column");

		if (line == 0)
			line = line_of_key(ld, "postgres", "id_column");
		report(ld, line, "postgres.status_column: must differ from "
		    "postgres.id_column");
	}
	load_secret(ld, "password", &cfg->redis.password, "password_file",
	    cfg->redis.password_file, CRED_REDIS_PASSWORD);
	check_sentinels(ld);
	if (cfg->redis.nsentinels > 0)
		load_secret(ld, "sentinel_password",
		    &cfg->redis.sentinel_password, "sentinel_password_file",
		    cfg->redis.sentinel_password_file,
		    CRED_REDIS_SENTINEL_PASSWORD);
	if (cfg->worker.id[0] == '\0' && ld->nerrors == 0) {
		memset(host, 0, sizeof(host));
		if (gethostname(host, sizeof(host) - 1) == -1)
			report(ld, line_of_key(ld, "worker", "id"),
			    "worker.id: cannot get the host name: %s",
			    strerror(errno));
		else if (host[0] == '\0')
			report(ld, line_of_key(ld, "worker", "id"),
			    "worker.id: the host name is empty; set worker.id");
		else {
			char *id = strdup(host);

			if (id == NULL)
				report(ld, 0, "out of memory");
			else {
				free(cfg->worker.id);
				cfg->worker.id = id;
			}
		}
	}
}

struct config *
config_load(const char *path, config_error_fn *err, void *arg)
{
	struct loader ld;
	config_t lc;

	memset(&ld, 0, sizeof(ld));
	ld.path = path != NULL ? path : "(null)";
	ld.err = err;
	ld.arg = arg;
	if (path == NULL) {
		report(&ld, 0, "no config file given");
		return NULL;
	}
	if ((ld.cfg = calloc(1, sizeof(*ld.cfg))) == NULL ||
	    (ld.cfg->path = strdup(path)) == NULL ||
	    set_defaults(ld.cfg) == -1) {
		report(&ld, 0, "out of memory");
		config_free(ld.cfg);
		return NULL;
	}

	config_init(&lc);
	if (parse(&ld, &lc) == 0) {
		walk(&ld, &lc);
		finish(&ld);
	}
	config_destroy(&lc);

	if (ld.nerrors > 0) {
		config_free(ld.cfg);
		return NULL;
	}
	return ld.cfg;
}

void
config_free(struct config *cfg)
{
	const struct key *k;
	char **s;
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < NKEYS; i++) {
		k = &keys[i];
		if (k->kind == K_STRING) {
			s = (char **)field(cfg, k->off);
			if (*s != NULL && (k->off == AT(redis.password) ||
			    k->off == AT(redis.sentinel_password)))
				explicit_bzero(*s, strlen(*s));
			free(*s);
		} else if (k->kind == K_LIST)
			free_list(*(char ***)field(cfg, k->off));
	}
	for (i = 0; i < (size_t)cfg->nlimits; i++)
		free(cfg->limits[i].queue);
	free(cfg->limits);
	if (cfg->handler.token != NULL)
		explicit_bzero(cfg->handler.token, strlen(cfg->handler.token));
	free(cfg->handler.token);
	free(cfg->path);
	free(cfg);
}

int
config_sections_left_out(const struct config *cfg,
    const struct config *than, char *buf, size_t size)
{
	size_t n = 0;
	int count = 0;

	if (size > 0)
		buf[0] = '\0';
	for (size_t i = 0; i < NKEYS; i++) {
		int bit = section_index(keys[i].section);

		if (i > 0 && strcmp(keys[i].section, keys[i - 1].section) == 0)
			continue;	/* one section, many keys */
		if ((cfg->sections & 1u << bit) ||
		    (than != NULL && !(than->sections & 1u << bit)))
			continue;
		if (n < size)
			n += (size_t)snprintf(buf + n, size - n, "%s%s",
			    count > 0 ? ", " : "", keys[i].section);
		count++;
	}
	return count;
}

static int
str_differ(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a != b;
	return strcmp(a, b) != 0;
}

static int
list_differ(char *const *a, int na, char *const *b, int nb)
{
	int i;

	if (na != nb)
		return 1;
	for (i = 0; i < na; i++)
		if (str_differ(a[i], b[i]))
			return 1;
	return 0;
}

int
config_redis_conn_changed(const struct config *a, const struct config *b)
{
	return str_differ(a->redis.host, b->redis.host) ||
	    a->redis.port != b->redis.port ||
	    str_differ(a->redis.unix_socket, b->redis.unix_socket) ||
	    a->redis.database != b->redis.database ||
	    str_differ(a->redis.username, b->redis.username) ||
	    str_differ(a->redis.password, b->redis.password) ||
	    list_differ(a->redis.sentinels, a->redis.nsentinels,
	    b->redis.sentinels, b->redis.nsentinels) ||
	    str_differ(a->redis.sentinel_master, b->redis.sentinel_master) ||
	    str_differ(a->redis.sentinel_username,
	    b->redis.sentinel_username) ||
	    str_differ(a->redis.sentinel_password,
	    b->redis.sentinel_password) ||
	    a->redis.connect_timeout_ms != b->redis.connect_timeout_ms ||
	    a->redis.command_timeout_ms != b->redis.command_timeout_ms;
}

int
config_postgres_changed(const struct config *a, const struct config *b)
{
	return str_differ(a->postgres.conninfo, b->postgres.conninfo) ||
	    a->postgres.connections != b->postgres.connections ||
	    str_differ(a->postgres.table, b->postgres.table) ||
	    str_differ(a->postgres.id_column, b->postgres.id_column) ||
	    str_differ(a->postgres.status_column, b->postgres.status_column) ||
	    list_differ(a->postgres.columns, a->postgres.ncolumns,
	    b->postgres.columns, b->postgres.ncolumns) ||
	    str_differ(a->postgres.completed_status,
	    b->postgres.completed_status) ||
	    str_differ(a->postgres.failed_status, b->postgres.failed_status) ||
	    str_differ(a->postgres.attempts_column,
	    b->postgres.attempts_column) ||
	    str_differ(a->postgres.error_column, b->postgres.error_column) ||
	    a->handler.type != b->handler.type ||
	    str_differ(a->handler.statement, b->handler.statement) ||
	    (b->handler.type == HANDLER_SQL &&
	    a->handler.timeout_ms != b->handler.timeout_ms) ||
	    a->postgres.connect_timeout_ms != b->postgres.connect_timeout_ms ||
	    a->postgres.command_timeout_ms != b->postgres.command_timeout_ms;
}

static const char *
value_name(const struct name_value *names, int value)
{
	for (; names->name != NULL; names++)
		if (names->value == value)
			return names->name;
	return "unknown";
}

const char *
config_level_name(int level)
{
	return value_name(level_names, level);
}

const char *
config_handler_name(enum handler_type type)
{
	return value_name(handler_names, (int)type);
}

const char *
config_facility_name(int facility)
{
	return value_name(facility_names, facility);
}

void
config_foreach_key(void (*fn)(void *arg, const char *section,
    const char *key), void *arg)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		fn(arg, keys[i].section, keys[i].name);
}

/* Appends S to BUF as a libconfig string literal, escaping " and \. */
static size_t
quote_into(char *buf, size_t size, size_t n, const char *s)
{
	if (n < size)
		n += (size_t)snprintf(buf + n, size - n, "\"");
	for (; *s != '\0' && n < size; s++)
		n += (size_t)snprintf(buf + n, size - n, "%s%c",
		    *s == '"' || *s == '\\' ? "\\" : "", *s);
	if (n < size)
		n += (size_t)snprintf(buf + n, size - n, "\"");
	return n;
}

void
config_foreach_default(void (*fn)(void *arg, const char *section,
    const char *key, const char *default_text), void *arg)
{
	char buf[1024];
	const struct key *k;
	size_t i, j, n;

	for (i = 0; i < NKEYS; i++) {
		k = &keys[i];
		n = 0;
		switch (k->kind) {
		case K_INT:
			snprintf(buf, sizeof(buf), "%lld", k->def_int);
			break;
		case K_BOOL:
			snprintf(buf, sizeof(buf), "%s", k->def_int ? "true" :
			    "false");
			break;
		case K_STRING:
		case K_LEVEL:
		case K_FACILITY:
		case K_HANDLER:
			quote_into(buf, sizeof(buf), 0, k->def_str);
			break;
		case K_LIST:
			n = (size_t)snprintf(buf, sizeof(buf), "[");
			for (j = 0; k->def_list[j] != NULL; j++) {
				if (j > 0 && n < sizeof(buf))
					n += (size_t)snprintf(buf + n,
					    sizeof(buf) - n, ", ");
				n = quote_into(buf, sizeof(buf), n,
				    k->def_list[j]);
			}
			if (n < sizeof(buf))
				snprintf(buf + n, sizeof(buf) - n, "]");
			break;
		}
		fn(arg, k->section, k->name, buf);
	}
}
