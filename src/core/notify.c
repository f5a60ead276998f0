/* notify: sd_notify and the watchdog settings (see notify.h). The address is
 * used for every datagram, as libsystemd does, so a restarted manager is
 * found again; /run/systemd/notify stays writable for an unprivileged user. */
#include <config.h> /* the build's (_GNU_SOURCE), not core/config.h beside this file */

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/notify.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;
static uint64_t notify_watchdog;

static void notify_watchdog_init(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	if (usec == NULL)
		return;
	if (pid != NULL && strtoul(pid, NULL, 10) != (unsigned long)getpid())
		return;
	notify_watchdog = strtoull(usec, NULL, 10);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

void notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	if (e != NULL && (e[0] == '/' || e[0] == '@') && strlen(e) < sizeof(notify_addr.sun_path)) {
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, e, strlen(e));
		if (e[0] == '@')
			notify_addr.sun_path[0] = '\0'; /* abstract namespace */
		notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(e));
		notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	}
	/* else unset, or vsock: (not supported): notifications are no-ops */
	notify_watchdog_init();
}

bool notify_enabled(void)
{
	return notify_fd >= 0;
}

uint64_t notify_watchdog_usec(void)
{
	return notify_watchdog;
}

void notify_send(bool may_drop, const char *fmt, ...)
{
	if (notify_fd < 0)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL | (may_drop ? MSG_DONTWAIT : 0),
		   (struct sockaddr *)&notify_addr, notify_addr_len) < 0 &&
	    !may_drop)
		log_warn("sd_notify: %s", strerror(errno));
}

uint64_t notify_monotonic_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
