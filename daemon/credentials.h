/*
 * credentials: secrets systemd hands the service in $CREDENTIALS_DIRECTORY
 * (LoadCredential=), so no file readable by others has to hold them.
 */
#ifndef TASKWORKERD_CREDENTIALS_H
#define TASKWORKERD_CREDENTIALS_H

#include <stddef.h>

#define CRED_REDIS_PASSWORD	"redis-password"
#define CRED_REDIS_SENTINEL_PASSWORD	"redis-sentinel-password"
#define CRED_PGPASS		"pgpass"
#define CRED_HTTP_TOKEN		"http-token"

/*
 * Reads the first line of the file PATH (at most 64 KiB, without its "\n"
 * or "\r\n") into *SECRETP, a new string. Returns 1 when read; 0 when
 * PATH does not exist and MISSING_OK; -1 with "WHAT: why" in ERR when it
 * cannot be used (unreadable, not a regular file, empty, a NUL byte).
 */
int credentials_read_file(const char *what, const char *path, int missing_ok,
    char **secretp, char *err, size_t errsize);

/*
 * Reads the first line of credential NAME in DIR (without its "\n" or
 * "\r\n") into *SECRETP, a new string. Returns 1 when read; 0 when DIR is
 * NULL or "" or holds no NAME; -1 with a message in ERR when NAME exists
 * but cannot be used (unreadable, not a regular file, empty, a NUL byte).
 */
int credentials_read(const char *dir, const char *name, char **secretp,
    char *err, size_t errsize);

/*
 * A password from the credential NAME (redis-password,
 * redis-sentinel-password), if the service was given one: replaces
 * *PASSWORDP and returns 1; 0 when there is none; -1 with a message in
 * ERR.
 */
int credentials_password(const char *name, char **passwordp, char *err,
    size_t errsize);
/* credentials_password() of redis-password. */
int credentials_redis_password(char **passwordp, char *err, size_t errsize);

/*
 * Points libpq at the credential pgpass in DIR by setting PGPASSFILE,
 * unless PGPASSFILE is set already. Returns 1 when set; 0 when DIR holds
 * no pgpass or PGPASSFILE was given; -1 with errno set on failure.
 */
int credentials_export_pgpass(const char *dir);

#endif
