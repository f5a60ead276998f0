/* log: one line per event, to stderr (default) or syslog.
 *
 * Lines look like Postfix's so existing greps and fail2ban filters carry over:
 *   submitd[PID]: SESSIONID: client=host[IP]:PORT, ...
 * Callers pass only the event; session context is formatted by session code.
 * Client-supplied text must go through log_sanitize() first. */
#ifndef SUBMITD_LOG_H
#define SUBMITD_LOG_H

#include <stddef.h>
#include <syslog.h>

enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG };

void log_open(enum log_target target, int facility, int min_level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Copies at most n bytes of untrusted text into out (size outsz, always
 * NUL-terminated), replacing control and non-printable bytes with '?', and
 * truncating with "..." if needed. Returns out. */
char *log_sanitize(char *out, size_t outsz, const void *in, size_t n);

#endif
