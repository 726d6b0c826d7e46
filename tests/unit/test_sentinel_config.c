/*
 * test_sentinel_config: the redis.sentinel* keys (entries, the keys they
 * exclude or need, the sentinel password and its credential) and the
 * "HOST:PORT" parser the daemon and taskworkerctl share.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfgtest.h"
#include "config.h"
#include "netaddr.h"

static void
test_host_port(void)
{
	static const struct {
		const char *s, *host;
		int port;
	} good[] = {
		{ "127.0.0.1:26379", "127.0.0.1", 26379 },
		{ "[::1]:1", "::1", 1 },
		{ "[fd00::6]:65535", "fd00::6", 65535 },
		{ "sentinel-1.example:26379", "sentinel-1.example", 26379 },
		{ "s_2:80", "s_2", 80 },
		{ "localhost:26379", "localhost", 26379 },
	};
	char host[NETADDR_HOSTLEN + 1], buf[300], name[300];
	const char *why;
	int port;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		port = 0;
		why = netaddr_host_port(good[i].s, host, sizeof(host), &port);
		ok(why == NULL && streq(host, good[i].host) &&
		    port == good[i].port, "\"%s\" is %s and %d (%s)", good[i].s,
		    good[i].host, good[i].port, why ? why : "ok");
		ok(streq(netaddr_format(buf, sizeof(buf), host, port),
		    good[i].s), "... and formats back as \"%s\" (\"%s\")",
		    good[i].s, buf);
	}
	memset(name, 'a', sizeof(name));
	strcpy(name + 254, ":1");
	for (int i = 63; i < 254; i += 64)
		name[i] = '.';
	ok(netaddr_host_port(name, host, sizeof(host), &port) != NULL,
	    "a host name of 254 bytes is refused");
	strcpy(name + 253, ":1");
	ok(netaddr_host_port(name, host, sizeof(host), &port) == NULL &&
	    strlen(host) == 253, "one of 253 bytes is taken");
	ok(netaddr_host_port("a:1", host, 16, &port) != NULL,
	    "a HOST buffer too small is refused, not overrun");
}

/* A config whose redis section is BODY (after a blank first line). */
static char *
redis_conf(const char *body)
{
	char *text;

	if (asprintf(&text, "\nredis: {\n%s};\n", body) == -1)
		abort();
	return text;
}

static void
test_entries(void)
{
	static const struct { const char *s, *why; } bad[] = {
		{ "127.0.0.1", "expected \"HOST:PORT\"" },
		{ ":26379", "the host is missing" },
		{ "127.0.0.1:0", "the port must be 1 to 65535" },
		{ "127.0.0.1:65536", "the port must be 1 to 65535" },
		{ "h:2x", "the port must be 1 to 65535" },
		{ "::1:26379", "an IPv6 address goes in brackets" },
		{ "[::1]26379", "expected \"[IPv6]:PORT\"" },
		{ "[nope]:1", "not an IPv6 address" },
		{ "256.1.1.1:1", "not an IPv4 address" },
		{ "1.2.3:1", "not an IPv4 address" },
		{ "bad..name:1", "not a host name" },
		{ "-bad:1", "not a host name" },
		{ "ex$mple:1", "not a host name" },
		{ "a b:1", "whitespace" },
		{ "", "must not be empty" },
	};
	struct config *cfg;
	char *text, line[2048];
	size_t n;

	cfg = load_ok("three sentinels of each kind", write_conf(
	    "redis: {\n"
	    "  sentinels = [\"127.0.0.1:26379\", \"[::1]:26380\",\n"
	    "    \"sentinel-3.example:26381\"];\n"
	    "  sentinel_master = \"mymaster\";\n"
	    "  sentinel_username = \"watcher\";\n"
	    "  sentinel_password = \"s3nt\";\n"
	    "  password = \"m4ster\";\n"
	    "};\n"));
	ok(cfg != NULL && cfg->redis.nsentinels == 3 &&
	    streq(cfg->redis.sentinels[0], "127.0.0.1:26379") &&
	    streq(cfg->redis.sentinels[1], "[::1]:26380") &&
	    streq(cfg->redis.sentinels[2], "sentinel-3.example:26381") &&
	    cfg->redis.sentinels[3] == NULL,
	    "redis.sentinels kept as written, in order");
	ok(cfg != NULL && streq(cfg->redis.sentinel_master, "mymaster") &&
	    streq(cfg->redis.sentinel_username, "watcher") &&
	    streq(cfg->redis.sentinel_password, "s3nt") &&
	    streq(cfg->redis.password, "m4ster"),
	    "the master's name and both passwords, each its own");
	config_free(cfg);

	cfg = load_ok("no sentinels", write_conf(""));
	ok(cfg != NULL && cfg->redis.nsentinels == 0 &&
	    cfg->redis.sentinels != NULL && cfg->redis.sentinels[0] == NULL &&
	    streq(cfg->redis.sentinel_master, ""),
	    "by default there are none");
	config_free(cfg);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line), "  sentinels = [\"%s\"];\n"
		    "  sentinel_master = \"m\";\n", bad[i].s);
		text = redis_conf(line);
		expect_error(bad[i].s[0] ? bad[i].s : "an empty entry", text,
		    3, "redis.sentinels[0]", bad[i].why);
		free(text);
	}

	n = (size_t)snprintf(line, sizeof(line), "  sentinels = [");
	for (int i = 0; i < 17; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n,
		    "%s\"10.0.0.%d:26379\"", i ? ", " : "", i + 1);
	snprintf(line + n, sizeof(line) - n, "];\n  sentinel_master = \"m\";\n");
	text = redis_conf(line);
	expect_error("17 sentinels", text, 3, "redis.sentinels",
	    "between 0 and 16 entries");
	free(text);
	text = redis_conf("  sentinels = [\"a:1\", \"a:1\"];\n"
	    "  sentinel_master = \"m\";\n");
	expect_error("the same sentinel twice", text, 3,
	    "redis.sentinels[1]", "is already redis.sentinels[0]");
	free(text);
}

static void
test_cross(void)
{
	static const char *const direct[] = { "host = \"127.0.0.1\"",
	    "port = 6379", "unix_socket = \"\"" };
	static const char *const only[] = { "sentinel_master = \"m\"",
	    "sentinel_username = \"u\"", "sentinel_password = \"p\"",
	    "sentinel_password_file = \"/nonexistent\"" };
	char *text, body[512];

	for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
		snprintf(body, sizeof(body), "  sentinels = [\"a:1\"];\n"
		    "  sentinel_master = \"m\";\n  %s;\n", direct[i]);
		text = redis_conf(body);
		expect_error(direct[i], text, 5, "not together with "
		    "redis.sentinels", NULL);
		free(text);
	}
	text = redis_conf("  sentinels = [\"a:1\"];\n");
	expect_error("sentinels without sentinel_master", text, 3,
	    "redis.sentinel_master: required when redis.sentinels is set",
	    NULL);
	free(text);
	text = redis_conf("  sentinels = [\"a:1\"];\n"
	    "  sentinel_master = \"my master\";\n");
	expect_error("a master name with a space", text, 4,
	    "redis.sentinel_master", "whitespace");
	free(text);
	for (size_t i = 0; i < sizeof(only) / sizeof(only[0]); i++) {
		snprintf(body, sizeof(body), "  %s;\n", only[i]);
		text = redis_conf(body);
		expect_error(only[i], text, 3, "goes with redis.sentinels, "
		    "which is not set", NULL);
		free(text);
	}
	text = redis_conf("  sentinels = [];\n  sentinel_master = \"\";\n");
	config_free(load_ok("sentinels = [] with sentinel_master = \"\"",
	    write_conf(text)));
	free(text);
}

/* The sentinel password from a file, and from the systemd credential. */
static void
test_password(void)
{
	char dir[] = "/tmp/tw-test-creds-XXXXXX", path[300], *text;
	const char *pw;
	struct config *cfg;
	FILE *fp;

	pw = write_temp("tw-test-spass", "sentinel pw\nsecond\n", 19);
	if (asprintf(&text, "redis: {\n  sentinels = [\"a:1\"];\n"
	    "  sentinel_master = \"m\";\n  sentinel_password_file = \"%s\";\n"
	    "};\n", strrchr(pw, '/') + 1) == -1)
		abort();
	cfg = load_ok("a relative sentinel_password_file", write_conf(text));
	free(text);
	ok(cfg != NULL && streq(cfg->redis.sentinel_password, "sentinel pw") &&
	    streq(cfg->redis.password, ""),
	    "its first line is the sentinel password, not the master's");
	config_free(cfg);
	text = redis_conf("  sentinels = [\"a:1\"];\n  sentinel_master = \"m\";\n"
	    "  sentinel_password = \"x\";\n"
	    "  sentinel_password_file = \"/nonexistent\";\n");
	expect_error("both sentinel passwords", text, 6,
	    "redis.sentinel_password_file: cannot be used together with "
	    "redis.sentinel_password", NULL);
	free(text);
	text = redis_conf("  sentinels = [\"a:1\"];\n  sentinel_master = \"m\";\n"
	    "  sentinel_password_file = \"/nonexistent/pw\";\n");
	expect_error("a missing sentinel_password_file", text, 5,
	    "redis.sentinel_password_file: cannot read /nonexistent/pw", NULL);
	free(text);

	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/redis-sentinel-password", dir);
	if ((fp = fopen(path, "w")) == NULL || fputs("cred pw\n", fp) < 0 ||
	    fclose(fp) != 0)
		abort();
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	cfg = load_ok("sentinels and the redis-sentinel-password credential",
	    write_conf("redis: { sentinels = [\"a:1\"]; "
	    "sentinel_master = \"m\"; };\n"));
	ok(cfg != NULL && streq(cfg->redis.sentinel_password, "cred pw") &&
	    streq(cfg->redis.password, ""),
	    "the credential is the sentinel password, and only that");
	config_free(cfg);
	cfg = load_ok("a sentinel_password beside the credential",
	    write_conf("redis: { sentinels = [\"a:1\"]; "
	    "sentinel_master = \"m\"; sentinel_password = \"file pw\"; };\n"));
	ok(cfg != NULL && streq(cfg->redis.sentinel_password, "file pw"),
	    "the config's password wins over the credential");
	config_free(cfg);
	if ((fp = fopen(path, "w")) == NULL || fclose(fp) != 0)
		abort();
	cfg = load_ok("an empty credential, no sentinels", write_conf(""));
	ok(cfg != NULL && streq(cfg->redis.sentinel_password, ""),
	    "without sentinels the credential is not read");
	config_free(cfg);
	text = redis_conf("  sentinels = [\"a:1\"];\n  sentinel_master = \"m\";\n");
	expect_error("an empty credential with sentinels", text, 0,
	    "credential redis-sentinel-password: ", "is empty");
	free(text);
	unsetenv("CREDENTIALS_DIRECTORY");
	unlink(path);
	rmdir(dir);
}

static void
test_changed(void)
{
	static const char *const variants[] = {
		"sentinels = [\"a:1\", \"b:2\"]; sentinel_master = \"m\";",
		"sentinels = [\"b:2\", \"a:1\"]; sentinel_master = \"m\";",
		"sentinels = [\"a:1\"]; sentinel_master = \"m\";",
		"sentinels = [\"a:1\"]; sentinel_master = \"n\";",
		"sentinels = [\"a:1\"]; sentinel_master = \"n\"; "
		    "sentinel_password = \"p\";",
		"sentinels = [\"a:1\"]; sentinel_master = \"n\"; "
		    "sentinel_password = \"p\"; sentinel_username = \"u\";",
	};
	enum { N = sizeof(variants) / sizeof(variants[0]) };
	struct config *c[N], *again;
	char text[512];
	int all = 1;

	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "redis: { %s };\n", variants[i]);
		c[i] = config_load(write_conf(text), NULL, NULL);
		all &= c[i] != NULL;
	}
	ok(all, "every variant loads");
	for (int i = 1; all && i < N; i++)
		ok(config_redis_conn_changed(c[i - 1], c[i]),
		    "a change of the Redis connection: %s", variants[i]);
	snprintf(text, sizeof(text), "redis: { %s };\n", variants[0]);
	again = config_load(write_conf(text), NULL, NULL);
	ok(all && again != NULL && !config_redis_conn_changed(c[0], again),
	    "the same sentinels are no change");
	config_free(again);
	for (int i = 0; i < N; i++)
		config_free(c[i]);
}

int
main(void)
{
	unsetenv("CREDENTIALS_DIRECTORY");
	test_host_port();
	test_entries();
	test_cross();
	test_password();
	test_changed();
	remove_temps();
	return done_testing();
}
