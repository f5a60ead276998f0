#include "config.h"
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_target log_target = LOG_TARGET_STDERR;
static int log_min_level = LOG_INFO;
static long log_pid; /* one getpid() per process, not per line */

void log_open(enum log_target target, int facility, int min_level)
{
	log_target = target;
	log_min_level = min_level;
	log_pid = (long)getpid();
	if (target == LOG_TARGET_SYSLOG)
		openlog("submitd", LOG_PID | LOG_NDELAY, facility);
}

void log_msg(int level, const char *fmt, ...)
{
	if (level > log_min_level)
		return;
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(level, "%s", line);
		return;
	}
	static const char *const names[] = {"emerg", "alert", "crit", "error",
					    "warning", "notice", "info", "debug"};
	/* One write per line so lines from worker threads never interleave. */
	char out[2200];
	int n;
	if (level <= LOG_WARNING)
		n = snprintf(out, sizeof(out), "submitd[%ld]: %s: %s\n", log_pid ? log_pid : (long)getpid(),
			     names[level & 7], line);
	else
		n = snprintf(out, sizeof(out), "submitd[%ld]: %s\n", log_pid ? log_pid : (long)getpid(),
			     line);
	if (n > (int)sizeof(out) - 1)
		n = (int)sizeof(out) - 1;
	if (n > 0 && write(STDERR_FILENO, out, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

char *log_sanitize(char *out, size_t outsz, const void *in, size_t n)
{
	const unsigned char *p = in;
	size_t o = 0;
	if (outsz == 0)
		return out;
	for (size_t i = 0; i < n; i++) {
		if (o + 1 >= outsz) {
			if (outsz > 4)
				memcpy(out + outsz - 4, "...", 3), o = outsz - 1;
			break;
		}
		unsigned char c = p[i];
		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	out[o] = '\0';
	return out;
}
