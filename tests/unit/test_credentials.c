/*
 * test_credentials: secrets from a systemd credentials directory: what is
 * read, what is refused, and how they combine with the config file.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "credentials.h"
#include "tap.h"

static char dir[] = "/tmp/tw-test-cred-XXXXXX";

static char *
in_dir(const char *name)
{
	char *path;

	if (asprintf(&path, "%s/%s", dir, name) == -1)
		abort();
	return path;
}

static void
put(const char *name, const char *text, size_t len)
{
	char *path = in_dir(name);
	FILE *fp;

	if ((fp = fopen(path, "w")) == NULL ||
	    fwrite(text, 1, len, fp) != len || fclose(fp) != 0) {
		perror(path);
		abort();
	}
	free(path);
}

static void
drop(const char *name)
{
	char *path = in_dir(name);

	if (unlink(path) == -1 && rmdir(path) == -1)
		perror(path);
	free(path);
}

static int
streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The verdict of reading redis-password holding TEXT. */
static int
read_text(const char *text, size_t len, char **secret, char *err,
    size_t errsize)
{
	int rc;

	put(CRED_REDIS_PASSWORD, text, len);
	*secret = NULL;
	err[0] = '\0';
	rc = credentials_read(dir, CRED_REDIS_PASSWORD, secret, err, errsize);
	drop(CRED_REDIS_PASSWORD);
	return rc;
}

static void
test_read(void)
{
	static const struct {
		const char *text;
		size_t len;
		const char *want;
	} goods[] = {
		{ "s3cret", 6, "s3cret" },
		{ "s3cret\n", 7, "s3cret" },
		{ "s3cret\r\nsecond line\n", 20, "s3cret" },
		{ " spaces kept \n", 14, " spaces kept " },
	};
	static const struct {
		const char *text;
		size_t len;
		const char *why;
	} bads[] = {
		{ "", 0, "is empty" },
		{ "\n", 1, "is empty" },
		{ "\r\nx\n", 4, "is empty" },
		{ "a\0b\n", 4, "holds a NUL byte" },
	};
	char err[256], *s;
	size_t i;
	int rc;

	ok(credentials_read(NULL, CRED_REDIS_PASSWORD, &s, err,
	    sizeof(err)) == 0, "no directory: no credential");
	ok(credentials_read("", CRED_REDIS_PASSWORD, &s, err,
	    sizeof(err)) == 0, "an empty directory name: no credential");
	ok(credentials_read(dir, CRED_REDIS_PASSWORD, &s, err,
	    sizeof(err)) == 0, "a directory without it: no credential");
	for (i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		rc = read_text(goods[i].text, goods[i].len, &s, err,
		    sizeof(err));
		ok(rc == 1 && streq(s, goods[i].want), "read '%s' (%d, %s)",
		    goods[i].want, rc, err);
		free(s);
	}
	for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		rc = read_text(bads[i].text, bads[i].len, &s, err,
		    sizeof(err));
		ok(rc == -1 && s == NULL && strstr(err, bads[i].why) != NULL &&
		    strstr(err, "credential redis-password: ") == err,
		    "refused: %s (%d, %s)", bads[i].why, rc, err);
	}

	s = in_dir(CRED_REDIS_PASSWORD);
	if (mkdir(s, 0700) == -1)
		abort();
	free(s);
	rc = credentials_read(dir, CRED_REDIS_PASSWORD, &s, err, sizeof(err));
	ok(rc == -1 && strstr(err, "not a regular file") != NULL,
	    "refused: a directory (%s)", err);
	drop(CRED_REDIS_PASSWORD);
}

/* Loads a config file holding TEXT; NULL when refused. */
static struct config *
load(const char *text)
{
	char *path = in_dir("tw.conf");
	struct config *c;

	put("tw.conf", text, strlen(text));
	c = config_load(path, NULL, NULL);
	drop("tw.conf");
	free(path);
	return c;
}

static void
test_config(void)
{
	struct config *c;
	char *pw;

	if (setenv("CREDENTIALS_DIRECTORY", dir, 1) == -1)
		abort();
	c = load("# no password\n");
	ok(c != NULL && streq(c->redis.password, ""),
	    "no credential: no password");
	config_free(c);

	put(CRED_REDIS_PASSWORD, "from-cred\n", 10);
	c = load("# no password\n");
	ok(c != NULL && streq(c->redis.password, "from-cred"),
	    "the config gives none: the credential is the password");
	config_free(c);
	c = load("redis: { password = \"from-conf\"; };\n");
	ok(c != NULL && streq(c->redis.password, "from-conf"),
	    "redis.password wins over the credential");
	config_free(c);
	put("pw", "from-file\n", 10);
	c = load("redis: { password_file = \"pw\"; };\n");
	ok(c != NULL && streq(c->redis.password, "from-file"),
	    "redis.password_file wins over the credential");
	config_free(c);
	drop("pw");

	put(CRED_REDIS_PASSWORD, "", 0);
	c = load("# no password\n");
	ok(c == NULL, "an empty credential fails the load");
	config_free(c);
	drop(CRED_REDIS_PASSWORD);

	/* Outside a unit nothing changes, whatever the directory holds. */
	put(CRED_REDIS_PASSWORD, "from-cred\n", 10);
	if (unsetenv("CREDENTIALS_DIRECTORY") == -1)
		abort();
	c = load("# no password\n");
	ok(c != NULL && streq(c->redis.password, ""),
	    "no CREDENTIALS_DIRECTORY: no password");
	config_free(c);

	pw = NULL;
	ok(credentials_redis_password(&pw, NULL, 0) == 0 && pw == NULL,
	    "no CREDENTIALS_DIRECTORY: the password is left alone");
	drop(CRED_REDIS_PASSWORD);
}

static void
test_pgpass(void)
{
	char *path = in_dir(CRED_PGPASS);

	if (unsetenv("PGPASSFILE") == -1)
		abort();
	ok(credentials_export_pgpass(NULL) == 0 && getenv("PGPASSFILE") == NULL,
	    "no directory: PGPASSFILE stays unset");
	ok(credentials_export_pgpass(dir) == 0 && getenv("PGPASSFILE") == NULL,
	    "no pgpass credential: PGPASSFILE stays unset");
	put(CRED_PGPASS, "*:*:*:*:pw\n", 11);
	ok(credentials_export_pgpass(dir) == 1 &&
	    streq(getenv("PGPASSFILE"), path),
	    "a pgpass credential becomes PGPASSFILE (%s)", path);
	if (setenv("PGPASSFILE", "/etc/tw/pgpass", 1) == -1)
		abort();
	ok(credentials_export_pgpass(dir) == 0 &&
	    streq(getenv("PGPASSFILE"), "/etc/tw/pgpass"),
	    "a PGPASSFILE already given is kept");
	drop(CRED_PGPASS);
	free(path);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_read();
	test_config();
	test_pgpass();
	rmdir(dir);
	return done_testing();
}
