/* log: one line per event, to stderr (default) or syslog.
 *
 * Lines look like Postfix's so existing greps and fail2ban filters carry over:
 *   submitd[PID]: SESSIONID: client=host[IP]:PORT, ...
 * Callers pass only the event; session context is formatted by session code.
 * Every line (stderr and syslog) goes through log_escape() here, so client or
 * downstream text in it can neither break the line nor hide in it; call sites
 * need not sanitise for the log. On stderr each line starts with a timestamp
 * unless stderr is the journal (JOURNAL_STREAM), which stamps lines itself. */
#ifndef SUBMITD_LOG_H
#define SUBMITD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG };

void log_open(enum log_target target, int facility, int min_level);
/* log_format = json: each line one JSON object (docs/observability.md),
 * built from the same escaped text, so it is valid JSON whatever the
 * client sent. May change at any time (a reload). */
void log_set_json(bool on);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Copies n bytes of text into out (size outsz, always NUL-terminated) for a
 * log line: printable ASCII and well-formed UTF-8 are kept; C0 controls, DEL
 * and bytes that are not well-formed UTF-8 become \xNN; C1 controls (NEL
 * too), U+2028/U+2029 and the bidi controls (U+061C, U+200E/F, U+202A..E,
 * U+2066..9) become \uNNNN. Only whole escapes and characters are written;
 * if the text does not fit it ends in "...". Returns the length written. */
size_t log_escape(char *out, size_t outsz, const void *in, size_t n);

/* For client text that goes into replies and header fields (ASCII only):
 * copies at most n bytes into out (size outsz, always NUL-terminated),
 * replacing control and non-ASCII bytes with '?', and truncating with "..."
 * if needed. Returns out. Log lines need not use it: log_msg escapes them. */
char *log_sanitize(char *out, size_t outsz, const void *in, size_t n);

#endif
