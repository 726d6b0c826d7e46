/*
 * credentials: the Redis and Sentinel passwords and a pgpass file from
 * systemd credentials. The unit loads them with LoadCredential=; outside
 * a unit there is no $CREDENTIALS_DIRECTORY and nothing here does
 * anything.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "credentials.h"

#define SECRET_MAX	(64 * 1024)

/* DIR/NAME as a new string, or NULL (errno ENOMEM). */
static char *
join(const char *dir, const char *name)
{
	char *path;

	if (asprintf(&path, "%s/%s", dir, name) == -1) {
		errno = ENOMEM;
		return NULL;
	}
	return path;
}

int
credentials_read_file(const char *what, const char *path, int missing_ok,
    char **secretp, char *err, size_t errsize)
{
	struct stat st;
	char *buf = NULL, *secret, *nl;
	ssize_t got;
	size_t len = 0, n;
	int fd, rc = -1;

	/* O_NONBLOCK: a FIFO put there must not stall the loop on reload. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1) {
		if (errno == ENOENT && missing_ok)
			rc = 0;
		else
			snprintf(err, errsize, "%s: cannot read %s: %s", what,
			    path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errsize, "%s: cannot read %s: %s", what, path,
		    strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errsize, "%s: cannot read %s: not a regular "
		    "file", what, path);
		goto out;
	}
	if ((buf = malloc(SECRET_MAX + 1)) == NULL) {
		snprintf(err, errsize, "%s: out of memory", what);
		goto out;
	}
	while (len < SECRET_MAX &&
	    (got = read(fd, buf + len, SECRET_MAX - len)) != 0) {
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			snprintf(err, errsize, "%s: cannot read %s: %s", what,
			    path, strerror(errno));
			goto out;
		}
		len += (size_t)got;
	}
	buf[len] = '\0';
	n = (nl = memchr(buf, '\n', len)) != NULL ? (size_t)(nl - buf) : len;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (memchr(buf, '\0', n) != NULL)
		snprintf(err, errsize, "%s: %s holds a NUL byte", what, path);
	else if (n == 0)
		snprintf(err, errsize, "%s: %s is empty", what, path);
	else if ((secret = strndup(buf, n)) == NULL)
		snprintf(err, errsize, "%s: out of memory", what);
	else {
		*secretp = secret;
		rc = 1;
	}
out:
	if (buf != NULL) {
		explicit_bzero(buf, len);
		free(buf);
	}
	if (fd != -1)
		close(fd);
	return rc;
}

int
credentials_read(const char *dir, const char *name, char **secretp,
    char *err, size_t errsize)
{
	char *path, what[64];
	int rc;

	if (dir == NULL || dir[0] == '\0')
		return 0;
	snprintf(what, sizeof(what), "credential %s", name);
	if ((path = join(dir, name)) == NULL) {
		snprintf(err, errsize, "%s: out of memory", what);
		return -1;
	}
	rc = credentials_read_file(what, path, 1, secretp, err, errsize);
	free(path);
	return rc;
}

int
credentials_redis_password(char **passwordp, char *err, size_t errsize)
{
	return credentials_password(CRED_REDIS_PASSWORD, passwordp, err,
	    errsize);
}

int
credentials_password(const char *name, char **passwordp, char *err,
    size_t errsize)
{
	char *pw;
	int rc;

	rc = credentials_read(getenv("CREDENTIALS_DIRECTORY"), name, &pw, err,
	    errsize);
	if (rc == 1) {
		if (*passwordp != NULL)
			explicit_bzero(*passwordp, strlen(*passwordp));
		free(*passwordp);
		*passwordp = pw;
	}
	return rc;
}

int
credentials_export_pgpass(const char *dir)
{
	char *path;
	int rc;

	if (dir == NULL || dir[0] == '\0' || getenv("PGPASSFILE") != NULL)
		return 0;
	if ((path = join(dir, CRED_PGPASS)) == NULL)
		return -1;
	if (access(path, F_OK) == -1)
		rc = errno == ENOENT ? 0 : -1;
	else
		rc = setenv("PGPASSFILE", path, 0) == 0 ? 1 : -1;
	free(path);
	return rc;
}
