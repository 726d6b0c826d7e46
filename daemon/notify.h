/*
 * notify: the systemd notification protocol (READY=1, STATUS=, WATCHDOG=1)
 * spoken directly on $NOTIFY_SOCKET, so libsystemd is not needed.
 */
#ifndef TASKWORKERD_NOTIFY_H
#define TASKWORKERD_NOTIFY_H

#include <stdint.h>

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the environment. */
void notify_init(void);
void notify_close(void);
/* Sends one message, e.g. "READY=1"; does nothing without a socket. */
void notify_send(const char *msg);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval in microseconds, or 0 when none was asked for. */
uint64_t notify_watchdog_usec(void);

#endif
