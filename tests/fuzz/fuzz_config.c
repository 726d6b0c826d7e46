/*
 * fuzz_config: libFuzzer target for the config loader. Each input is
 * written to one temp file under /tmp and loaded with config_load(); every
 * error line must be a NUL-terminated string that starts with the path
 * followed by ':'. Reads outside any buffer are left to ASan, leaks to LSan.
 *
 * The file is /tmp/fuzz_config-PID-XXXXXX, removed at exit; libFuzzer
 * leaves with _exit after a finding, so scripts/fuzz removes it by PID.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static size_t pathlen;
static int fd = -1;

static void
remove_temp(void)
{
	if (fd != -1) {
		close(fd);
		unlink(path);
		fd = -1;
	}
}

static void
open_temp(void)
{
	snprintf(path, sizeof(path), "/tmp/fuzz_config-%ld-XXXXXX",
	    (long)getpid());
	if ((fd = mkstemp(path)) == -1) {
		perror("fuzz_config: mkstemp");
		abort();
	}
	pathlen = strlen(path);
	if (atexit(remove_temp) != 0) {
		remove_temp();
		abort();
	}
}

/* Discards LINE after checking its shape; strlen lets ASan see the NUL. */
static void
check_line(void *arg, const char *line)
{
	size_t n;

	(void)arg;
	if (line == NULL)
		__builtin_trap();
	n = strlen(line);
	if (n <= pathlen || memcmp(line, path, pathlen) != 0 ||
	    line[pathlen] != ':')
		__builtin_trap();
}

static void
write_temp(const uint8_t *data, size_t size)
{
	size_t off = 0;
	ssize_t n;

	while (off < size) {
		n = pwrite(fd, data + off, size - off, (off_t)off);
		if (n <= 0) {
			perror("fuzz_config: pwrite");
			abort();
		}
		off += (size_t)n;
	}
	if (ftruncate(fd, (off_t)size) == -1) {
		perror("fuzz_config: ftruncate");
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;

	if (fd == -1)
		open_temp();
	write_temp(data, size);
	cfg = config_load(path, check_line, NULL);
	config_free(cfg);
	return 0;
}
