/* notify: systemd's service notifications and watchdog, without libsystemd
 * (man sd_notify: the protocol is one datagram of "VAR=value" lines to
 * $NOTIFY_SOCKET, and reimplementations are explicitly allowed). One code
 * path whether libsystemd is installed or not. Main thread only. */
#ifndef SUBMITD_NOTIFY_H
#define SUBMITD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Reads $NOTIFY_SOCKET, and $WATCHDOG_USEC/$WATCHDOG_PID (which it unsets so
 * that children do not take them for theirs). Without a socket every
 * notification is a no-op. */
void notify_init(void);
/* True when there is a manager to notify. */
bool notify_enabled(void);
/* The watchdog interval systemd asked for, in microseconds; 0: none. */
uint64_t notify_watchdog_usec(void);
/* Sends one notification. may_drop: a periodic message (STATUS, WATCHDOG)
 * that never blocks and is dropped when the socket is full; otherwise (READY,
 * RELOADING, STOPPING) it waits for room and a failure is logged. */
void notify_send(bool may_drop, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= wants it. */
uint64_t notify_monotonic_usec(void);

#endif
