/* tap.h: a tiny TAP producer for the unit tests (https://testanything.org).
 *
 * plan(n) prints "1..n" up front; without it, done_testing() prints the plan
 * at the end. Each check prints "ok N - name" or "not ok N - name".
 * done_testing() returns the exit status: non-zero if a check failed or the
 * count does not match the plan. skip_all() is for a program whose neighbour
 * (MariaDB, Dovecot) is missing: a skip, or a failure under CI=true. */
#ifndef SUBMITD_TAP_H
#define SUBMITD_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int tap_count, tap_failed, tap_planned = -1;

static inline void plan(int n)
{
	tap_planned = n;
	printf("1..%d\n", n);
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("# ", stdout);
	vprintf(fmt, ap);
	fputs("\n", stdout);
	va_end(ap);
}

static inline bool tap_vok(bool cond, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static inline bool tap_vok(bool cond, const char *fmt, va_list ap)
{
	tap_count++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_count);
	vprintf(fmt, ap);
	fputs("\n", stdout);
	return cond;
}

static inline bool ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool ok(bool cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok(cond, fmt, ap);
	va_end(ap);
	return r;
}

static inline bool is_int(long long got, long long want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline bool is_int(long long got, long long want, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok(got == want, fmt, ap);
	va_end(ap);
	if (!r)
		diag("  got: %lld, expected: %lld", got, want);
	return r;
}

/* Prints bytes with C escapes, for diagnostics. */
static inline void tap_escape(const char *label, const void *p, size_t n)
{
	const unsigned char *s = p;
	printf("#   %s: \"", label);
	for (size_t i = 0; i < n && i < 400; i++) {
		if (s[i] == '\r')
			fputs("\\r", stdout);
		else if (s[i] == '\n')
			fputs("\\n", stdout);
		else if (s[i] == '"' || s[i] == '\\')
			printf("\\%c", s[i]);
		else if (s[i] < 0x20 || s[i] >= 0x7f)
			printf("\\x%02x", s[i]);
		else
			putchar(s[i]);
	}
	fputs(n > 400 ? "\"...\n" : "\"\n", stdout);
}

static inline bool is_mem(const void *got, size_t gn, const void *want, size_t wn, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static inline bool is_mem(const void *got, size_t gn, const void *want, size_t wn, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok(gn == wn && (gn == 0 || memcmp(got, want, gn) == 0), fmt, ap);
	va_end(ap);
	if (!r) {
		tap_escape("got", got, gn);
		tap_escape("expected", want, wn);
	}
	return r;
}

static inline bool is_str(const char *got, const char *want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline bool is_str(const char *got, const char *want, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok(got != NULL && want != NULL && strcmp(got, want) == 0, fmt, ap);
	va_end(ap);
	if (!r) {
		tap_escape("got", got != NULL ? got : "(null)", got != NULL ? strlen(got) : 6);
		tap_escape("expected", want != NULL ? want : "(null)", want != NULL ? strlen(want) : 6);
	}
	return r;
}

static inline bool tap_under_ci(void)
{
	const char *ci = getenv("CI");
	return ci != NULL && (strcasecmp(ci, "true") == 0 || strcmp(ci, "1") == 0 ||
			      strcasecmp(ci, "yes") == 0);
}

/* One check that cannot run here: "ok N # SKIP why"; under CI a failure. */
static inline void skip(const char *name, const char *why)
{
	tap_count++;
	if (tap_under_ci()) {
		tap_failed++;
		printf("not ok %d - %s: skipped under CI=true: %s\n", tap_count, name, why);
	} else {
		printf("ok %d - %s # SKIP %s\n", tap_count, name, why);
	}
}

/* The whole program cannot run because a neighbour or tool it needs is
 * missing: "1..0 # SKIP why", status 0. Under CI (CI=true) that is a gap,
 * not a pass: one failing test and status 1. Use as "return skip_all(...);". */
static inline int skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int skip_all(const char *fmt, ...)
{
	bool under_ci = tap_under_ci();
	va_list ap;
	va_start(ap, fmt);
	if (under_ci) {
		tap_count++;
		tap_failed++;
		printf("not ok %d - skipped under CI=true: ", tap_count);
		vprintf(fmt, ap);
		printf("\n1..%d\n", tap_count);
	} else {
		printf("1..0 # SKIP ");
		vprintf(fmt, ap);
		fputs("\n", stdout);
	}
	va_end(ap);
	fflush(stdout);
	return under_ci ? 1 : 0;
}

static inline int done_testing(void)
{
	if (tap_planned < 0)
		printf("1..%d\n", tap_count);
	else if (tap_planned != tap_count)
		diag("planned %d tests but ran %d", tap_planned, tap_count);
	if (tap_failed > 0)
		diag("failed %d of %d", tap_failed, tap_count);
	fflush(stdout);
	return tap_failed > 0 || (tap_planned >= 0 && tap_planned != tap_count) ? 1 : 0;
}

#endif
