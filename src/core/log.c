#include "config.h"
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum log_target log_target = LOG_TARGET_STDERR;
static int log_min_level = LOG_INFO;
static long log_pid;       /* one getpid() per process, not per line */
static int log_stamp = -1; /* prefix a timestamp on stderr; -1: not decided yet */
static atomic_bool log_json;

/* journald stamps each line itself; JOURNAL_STREAM ("DEV:INODE") says stderr
 * is connected to it, but only while stderr is still that very stream (a
 * child with redirected stderr inherits the variable too). */
static bool log_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_open(enum log_target target, int facility, int min_level)
{
	log_target = target;
	log_min_level = min_level;
	log_pid = (long)getpid();
	log_stamp = !log_stderr_is_journal();
	tzset(); /* read the zone now: after a chroot /etc/localtime may be gone */
	if (target == LOG_TARGET_SYSLOG)
		openlog("submitd", LOG_PID | LOG_NDELAY, facility);
}

void log_set_json(bool on)
{
	atomic_store_explicit(&log_json, on, memory_order_relaxed);
}

/* "2026-12-06T08:00:34.123+01:00 " (RFC 3339, local time); returns its length. */
static int log_timestamp(char *out, size_t outsz)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (localtime_r(&ts.tv_sec, &tm) == NULL)
		return 0;
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	int n = snprintf(out, outsz, "%04d-%02d-%02dT%02d:%02d:%02d.%03ld%c%02ld:%02ld ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, sign, off / 60, off % 60);
	return n > 0 && (size_t)n < outsz ? n : 0;
}

/* Appends s (n bytes) to out as the inside of a JSON string. s has been
 * through log_escape(): no control characters, only well-formed UTF-8, so
 * only the quote and the backslash need escaping. */
static size_t log_json_str(char *out, size_t o, size_t outsz, const char *s, size_t n)
{
	for (size_t i = 0; i < n && o + 3 < outsz; i++) {
		if (s[i] == '"' || s[i] == '\\')
			out[o++] = '\\';
		out[o++] = s[i];
	}
	return o;
}

#define LOG_JSON_FIELD_MAX 512

static size_t log_json_field(char *out, size_t o, size_t outsz, const char *key, const char *v,
			     size_t n)
{
	if (n > LOG_JSON_FIELD_MAX && strcmp(key, "msg") != 0) {
		n = LOG_JSON_FIELD_MAX; /* never half a character */
		while (n > 0 && ((unsigned char)v[n] & 0xc0) == 0x80)
			n--;
	}
	int m = snprintf(out + o, outsz - o, ",\"%s\":\"", key);
	if (m < 0 || (size_t)m >= outsz - o)
		return o;
	o = log_json_str(out, o + (size_t)m, outsz - 2, v, n);
	out[o++] = '"';
	return o;
}

static bool log_starts(const char *t, const char *prefix)
{
	return strncmp(t, prefix, strlen(prefix)) == 0;
}

/* The last ", status=" of a delivery line: the line's own, after the
 * addresses a client chose. */
static const char *log_json_status(const char *t)
{
	const char *st = NULL;
	for (const char *p = strstr(t, ", status="); p != NULL; p = strstr(p + 1, ", status="))
		st = p;
	return st ? st + 9 : NULL;
}

/* What a line is about, from its fixed words only, never from text a
 * client put in it (t: the line after the session id; the events are
 * listed in docs/observability.md). */
static const char *log_json_event(const char *t)
{
	static const struct {
		const char *prefix, *event;
	} start[] = {
		{"connect from ", "connect"},
		{"disconnect from ", "disconnect"},
		{"refusing ", "connection_refused"},
		{"tls: ", "tls"},
		{"starttls: ", "tls"},
		{"TLS handshake failed", "tls_failed"},
	};
	for (size_t i = 0; i < sizeof(start) / sizeof(start[0]); i++)
		if (log_starts(t, start[i].prefix))
			return start[i].event;
	if (log_starts(t, "client=") && strstr(t, ", sasl_username=") != NULL)
		return "auth_success";
	if (t[0] == '[') { /* "[IP]:PORT: SASL MECH authentication VERB" */
		const char *p = strstr(t, "]:");
		if (p != NULL && (p = strchr(p, ' ')) != NULL && log_starts(p, " SASL ") &&
		    (p = strchr(p + 6, ' ')) != NULL) {
			static const struct {
				const char *verb, *event;
			} verbs[] = {
				{" authentication failed:", "auth_failed"},
				{" authentication unavailable:", "auth_unavailable"},
				{" authentication refused:", "auth_refused"},
				{" authentication succeeded", "auth_success"},
			};
			for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
				if (log_starts(p, verbs[i].verb))
					return verbs[i].event;
		}
	}
	const char *st = log_starts(t, "from=<") ? log_json_status(t) : NULL;
	if (st != NULL) {
		if (log_starts(st, "sent "))
			return "delivered";
		if (log_starts(st, "deferred "))
			return "deferred";
		if (log_starts(st, "refused "))
			return "refused";
	}
	return "message";
}

/* One JSON object for a line already escaped (safe): fixed keys ts, level,
 * pid, session, event, msg, then the fields found as "key=value" in it
 * (client, login, mechanism, from, to, size, nrcpt, relay, own_ms, status,
 * reply, reason, cause). */
static size_t log_json_line(char *out, size_t outsz, int level, const char *safe)
{
	static const char *const names[] = {"emerg",   "alert",  "crit", "error",
					    "warning", "notice", "info", "debug"};
	static const struct {
		const char *key, *as;
	} keys[] = {
		{"client=", "client"}, {"sasl_username=", "login"},
		{"login=", "login"},   {"sasl_method=", "mechanism"},
		{"from=", "from"},     {"to=", "to"},
		{"size=", "size"},     {"nrcpt=", "nrcpt"},
		{"relay=", "relay"},   {"own=", "own"},
		{"reason=", "reason"},
	};
	char ts[64];
	int tn = log_timestamp(ts, sizeof(ts));
	if (tn > 0)
		ts[tn - 1] = '\0'; /* its trailing space */
	size_t o = (size_t)snprintf(out, outsz, "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%ld",
				    tn > 0 ? ts : "", names[level & 7],
				    log_pid ? log_pid : (long)getpid());
	const char *t = safe;
	size_t idlen = strspn(t, "0123456789ABCDEF");
	if (idlen == 13 && t[13] == ':' && t[14] == ' ') {
		o = log_json_field(out, o, outsz, "session", t, 13);
		t += 15;
	} else
		o += (size_t)snprintf(out + o, outsz - o, ",\"session\":null");
	o += (size_t)snprintf(out + o, outsz - o, ",\"event\":\"%s\"", log_json_event(t));
	/* A field once, from its first "key=" (those of the line's own come
	   before the text a client chose, except the cause and the status,
	   which end the line and are taken from there); msg is the whole line. */
	const char *seen[sizeof(keys) / sizeof(keys[0]) + 1];
	size_t nseen = 0;
	const char *from = log_starts(t, "connect from ")      ? t + 13
			   : log_starts(t, "disconnect from ") ? t + 16
							       : NULL;
	if (t[0] == '[') { /* "[IP]:PORT: " opens the AUTH lines */
		size_t cl = strcspn(t, " ");
		if (cl > 1 && t[cl - 1] == ':') {
			o = log_json_field(out, o, outsz, "client", t, cl - 1);
			seen[nseen++] = "client";
		}
	} else if (from != NULL) {
		o = log_json_field(out, o, outsz, "client", from, strcspn(from, " "));
		seen[nseen++] = "client";
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		bool dup = false;
		for (size_t j = 0; j < nseen; j++)
			dup = dup || strcmp(seen[j], keys[i].as) == 0;
		if (dup)
			continue;
		const char *k = strstr(t, keys[i].key);
		/* a key starts the text or follows ", " or " " */
		while (k != NULL && k != t && k[-1] != ' ')
			k = strstr(k + 1, keys[i].key);
		if (k == NULL)
			continue;
		const char *v = k + strlen(keys[i].key);
		size_t n = strcspn(v, ",");
		if (strcmp(keys[i].as, "client") == 0 || strcmp(keys[i].as, "login") == 0 ||
		    strcmp(keys[i].as, "mechanism") == 0 || strcmp(keys[i].as, "size") == 0 ||
		    strcmp(keys[i].as, "nrcpt") == 0 || strcmp(keys[i].as, "own") == 0)
			n = strcspn(v, ", ");
		if (v[0] == '<') { /* <...>: to the first ">," or the end */
			const char *gt = strstr(v, ">,");
			n = gt ? (size_t)(gt - v) + 1 : strlen(v);
			if (n >= 2 && v[n - 1] == '>')
				v++, n -= 2;
		}
		o = log_json_field(out, o, outsz, keys[i].as, v, n);
		seen[nseen++] = keys[i].as;
	}
	const char *cause = strstr(t, ", cause=");
	while (cause != NULL && strstr(cause + 1, ", cause=") != NULL)
		cause = strstr(cause + 1, ", cause=");
	if (cause != NULL && strspn(cause + 8, "abcdefghijklmnopqrstuvwxyz_") == strlen(cause + 8))
		o = log_json_field(out, o, outsz, "cause", cause + 8, strlen(cause + 8));
	const char *st = log_starts(t, "from=<") ? log_json_status(t) : NULL;
	if (st != NULL && (st = strchr(st, '(')) != NULL) {
		size_t n = strlen(st + 1);
		o = log_json_field(out, o, outsz, "reply", st + 1, n > 0 ? n - 1 : 0);
	}
	o = log_json_field(out, o, outsz - 2, "msg", t, strlen(t));
	if (o + 3 > outsz)
		o = outsz - 3; /* not reached: outsz leaves room for the fields */
	out[o++] = '}';
	out[o++] = '\n';
	out[o] = '\0';
	return o;
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
	/* Every line, whatever its call site put in it: client and downstream
	 * text can carry line breaks, terminal escapes and bidi overrides. */
	char safe[4096];
	log_escape(safe, sizeof(safe), line, strlen(line));
	if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
		/* room for the escaped line (twice its size at most) and 14
		   fields of LOG_JSON_FIELD_MAX, escaped */
		static _Thread_local char js[2 * sizeof(safe) + 15 * 2 * LOG_JSON_FIELD_MAX];
		size_t n = log_json_line(js, sizeof(js), level, safe);
		if (log_target == LOG_TARGET_SYSLOG)
			syslog(level, "%.*s", (int)(n - 1), js);
		else if (write(STDERR_FILENO, js, n) < 0) {
			/* nowhere left to report it */
		}
		return;
	}
	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(level, "%s", safe);
		return;
	}
	static const char *const names[] = {"emerg",   "alert",  "crit", "error",
					    "warning", "notice", "info", "debug"};
	if (log_stamp < 0)
		log_stamp = !log_stderr_is_journal();
	/* One write per line so lines from worker threads never interleave. */
	char out[sizeof(safe) + 128];
	int n = log_stamp ? log_timestamp(out, sizeof(out)) : 0;
	int m;
	if (level <= LOG_WARNING)
		m = snprintf(out + n, sizeof(out) - (size_t)n, "submitd[%ld]: %s: %s\n",
			     log_pid ? log_pid : (long)getpid(), names[level & 7], safe);
	else
		m = snprintf(out + n, sizeof(out) - (size_t)n, "submitd[%ld]: %s\n",
			     log_pid ? log_pid : (long)getpid(), safe);
	if (m < 0)
		return;
	n += m;
	if (n > (int)sizeof(out) - 1) {
		n = (int)sizeof(out) - 1;
		out[n - 1] = '\n';
	}
	if (write(STDERR_FILENO, out, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

/* Length of the well-formed UTF-8 sequence at p (at most n bytes) and its code
 * point, or 0 if it is not one (RFC 3629 §4: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static size_t log_utf8(const unsigned char *p, size_t n, uint32_t *cp_r)
{
	unsigned char c = p[0];
	size_t len;
	uint32_t cp;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3, cp = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, cp = c & 0x07;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (len > n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	*cp_r = cp;
	return len;
}

/* Characters that are valid but must not reach a log reader raw: C1 controls
 * (NEL among them) and line/paragraph separators break or rewrite lines;
 * bidi controls make a line read differently from its bytes (CVE-2021-42574). */
static bool log_cp_hidden(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
	       (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t log_escape(char *out, size_t outsz, const void *in, size_t n)
{
	const unsigned char *p = in;
	size_t o = 0, mark = 0; /* mark: the last unit boundary with room for "..." */
	if (outsz == 0)
		return 0;
	for (size_t i = 0; i < n;) {
		char unit[8];
		size_t ulen, adv;
		uint32_t cp;
		unsigned char c = p[i];
		if (c >= 0x20 && c < 0x7f) {
			unit[0] = (char)c;
			ulen = 1, adv = 1;
		} else if (c >= 0x80 && (adv = log_utf8(p + i, n - i, &cp)) > 0) {
			if (log_cp_hidden(cp))
				ulen = (size_t)snprintf(unit, sizeof(unit), "\\u%04x",
							(unsigned)cp);
			else
				memcpy(unit, p + i, adv), ulen = adv;
		} else {
			/* C0, DEL, a stray or truncated UTF-8 byte */
			ulen = (size_t)snprintf(unit, sizeof(unit), "\\x%02x", c);
			adv = 1;
		}
		if (o + ulen + 1 > outsz) {
			/* never half an escape or half a character */
			if (outsz >= 4)
				memcpy(out + mark, "...", 3), o = mark + 3;
			break;
		}
		memcpy(out + o, unit, ulen);
		o += ulen;
		i += adv;
		if (o + 4 <= outsz)
			mark = o;
	}
	out[o] = '\0';
	return o;
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
