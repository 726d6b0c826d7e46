/*
 * config: the libconfig file turned into one immutable struct config.
 * Every key, its default and its validation live in config.c's table.
 */
#ifndef TASKWORKERD_CONFIG_H
#define TASKWORKERD_CONFIG_H

#include <stddef.h>

enum handler_type {
	HANDLER_NONE = 0,
	HANDLER_EXEC,
	HANDLER_SQL,
	HANDLER_HTTP,
};

/*
 * The limits of one queue (the top-level list `limits`): at most RATE ids
 * taken per PER_MS ms with BURST taken at once, and at most MAX_IN_FLIGHT
 * held by every worker together; 0 is no such limit.
 */
struct limit {
	char *queue;
	int rate;
	int per_ms;
	int burst;
	int max_in_flight;
};

struct config {
	char *path;
	unsigned int sections;	/* bit N: the file has section N (below) */

	struct {
		char *host;
		int port;
		char *unix_socket;	/* "" when TCP is used */
		int database;
		char *username;
		char *password;		/* from password or password_file */
		char *password_file;
		/*
		 * Redis Sentinel: "HOST:PORT" each (none: host and port
		 * name the server); they tell where SENTINEL_MASTER is.
		 */
		char **sentinels;
		int nsentinels;
		char *sentinel_master;
		char *sentinel_username;
		char *sentinel_password;	/* or from its file */
		char *sentinel_password_file;
		char **queues;
		int nqueues;
		int dead_max;		/* QUEUE:dead keeps the newest this many */
		int connect_timeout_ms;
		int command_timeout_ms;
	} redis;

	struct {
		char *conninfo;
		int connections;
		char *table;		/* as written, may be "schema.table" */
		char *id_column;
		char *status_column;
		char **columns;
		int ncolumns;
		char *completed_status;
		char *failed_status;
		char *attempts_column;	/* "" when not recorded */
		char *error_column;	/* "" when not recorded */
		int connect_timeout_ms;
		int command_timeout_ms;
		int max_row_bytes;	/* a larger row fails its task */
	} postgres;

	struct {
		char *id;		/* hostname when the file leaves it "" */
		int delay_ms;
		int concurrency;
		int shutdown_timeout_ms;
		int retry_min_ms;
		int retry_max_ms;
		int missing_row_grace_ms;
		int heartbeat_ttl_ms;	/* a silent worker's ids are reclaimed */
		int max_bytes_in_flight;	/* of loaded rows; then no new ids */
	} worker;

	struct {
		enum handler_type type;
		char **command;		/* exec: argv, NULL-terminated */
		int ncommand;
		char **environment;	/* exec: "KEY=value" */
		int nenvironment;
		char *working_directory;
		int timeout_ms;		/* 0: no limit */
		int kill_grace_ms;
		int max_processes;
		char *statement;	/* sql: $1 is the id */
		char *url;		/* http: where each task is sent */
		char *method;		/* http: POST, PUT or PATCH */
		char **headers;		/* http: "Name: value" */
		int nheaders;
		int connect_timeout_ms;
		int max_connections;	/* http: in all; more requests wait */
		char *ca_file;		/* http: "" for the system's CAs */
		int max_response_bytes;	/* http: read of a body; more is cut */
		char *token_file;
		int http2;		/* http: h2c by prior knowledge */
		char *token;		/* http: from token_file or the
					   http-token credential; NULL: none */
	} handler;

	struct {
		int attempts;		/* runs in all */
		int min_ms;
		int max_ms;
	} retry;

	struct {
		char *listen;		/* "" when off */
		int sample_interval_ms;	/* queue sizes are read this often */
	} metrics;

	struct limit *limits;		/* one a queue, each named in queues */
	int nlimits;

	struct {
		int level;		/* syslog priority, LOG_DEBUG..LOG_ERR */
		int facility;		/* syslog facility, LOG_DAEMON... */
		char *ident;
	} log;
};

/* Called once per error with a full line: "FILE:LINE: message". */
typedef void config_error_fn(void *arg, const char *line);

/*
 * Parse and validate PATH. On success returns a new config; on failure
 * calls ERR for every problem found and returns NULL. Never connects.
 */
struct config *config_load(const char *path, config_error_fn *err, void *arg);
void config_free(struct config *cfg);

/*
 * The sections (redis, postgres, ...) that CFG's file leaves out but
 * THAN's has (every one it leaves out when THAN is NULL), as "handler,
 * log" in BUF of SIZE; their count. A file cut short, or emptied, loads
 * with defaults for what is gone: a reload must not take that for a
 * change.
 */
int config_sections_left_out(const struct config *cfg,
    const struct config *than, char *buf, size_t size);

/* The limits of QUEUE, or NULL when it has neither a rate nor a bound. */
const struct limit *config_limit(const struct config *cfg, const char *queue);

/* Nonzero when the Redis connection settings of A and B differ. */
int config_redis_conn_changed(const struct config *a, const struct config *b);
/* Nonzero when anything that shapes the PostgreSQL sessions differs. */
int config_postgres_changed(const struct config *a, const struct config *b);

/*
 * Copies IN to OUT (SIZE bytes, always terminated) with every password of
 * a libpq conninfo hidden as "***": the value of password= and
 * sslpassword= (keyword form, quoted or not, or a URI query parameter)
 * and the part after "user:" of a URI's "user:pass@". For any message
 * that may hold a conninfo, before it is printed or logged. Returns OUT.
 */
char *config_redact(const char *in, char *out, size_t size);

/* Names for log levels, facilities and handler types, for messages. */
const char *config_level_name(int level);
const char *config_handler_name(enum handler_type type);
const char *config_facility_name(int facility);

/* Calls FN once for every key the file may hold, in table order. */
void config_foreach_key(void (*fn)(void *arg, const char *section,
    const char *key), void *arg);

/*
 * Calls FN once for every key, in table order, with its default as the
 * file would spell it: 6379, "127.0.0.1", ["tasks"], []. For the tests
 * that keep the documentation in step with the table.
 */
void config_foreach_default(void (*fn)(void *arg, const char *section,
    const char *key, const char *default_text), void *arg);

#endif
