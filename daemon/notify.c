/*
 * notify: sd_notify(3) over an AF_UNIX datagram socket, including the
 * abstract-namespace form ("@name") systemd may hand us.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "notify.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen;
static uint64_t watchdog_usec;

void
notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");
	const char *wdpid = getenv("WATCHDOG_PID");
	size_t len;

	if (wd != NULL && (wdpid == NULL || strtol(wdpid, NULL, 10) == getpid()))
		watchdog_usec = strtoull(wd, NULL, 10);

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof(notify_addr.sun_path)) {
		log_warnx("NOTIFY_SOCKET is too long, not notifying systemd");
		return;
	}
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, len);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0';
	notify_addrlen = offsetof(struct sockaddr_un, sun_path) + len +
	    (path[0] == '/');
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify_fd == -1)
		log_warn("notify socket");
}

void
notify_close(void)
{
	if (notify_fd != -1)
		close(notify_fd);
	notify_fd = -1;
}

void
notify_send(const char *msg)
{
	if (notify_fd == -1)
		return;
	if (sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&notify_addr, notify_addrlen) == -1 &&
	    errno != EAGAIN)
		log_debug("notify %s: %s", msg, strerror(errno));
}

void
notify_status(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	if (notify_fd == -1)
		return;
	n = snprintf(msg, sizeof(msg), "STATUS=");
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - n, fmt, ap);
	va_end(ap);
	notify_send(msg);
}

uint64_t
notify_watchdog_usec(void)
{
	return watchdog_usec;
}
