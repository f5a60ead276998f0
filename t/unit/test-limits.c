/* Unit tests for policy/limits_store and the parsers of policy/limits
 * (docs/limits.md):
 *  - a window of COUNT/PERIOD accepts COUNT, refuses the next, and says when
 *    it frees up; at that time one more fits, a little before it does not;
 *  - against an exact log of timestamps over random traffic: no PERIOD ever
 *    holds more than COUNT accepted events, and a refusal only happens when
 *    the exact count over SLOTS + 1 slots (PERIOD plus about a slot) is at COUNT;
 *  - several rules are taken all or none;
 *  - four threads on one key accept exactly COUNT in all;
 *  - holds are set once, expire, and clear; blocks; kicks; a full store
 *    keeps no new counter and says so;
 *  - limit lists and login_limit_maps values parse or are refused whole;
 *  - the control socket's request parser refuses long lines, control bytes
 *    and bad arguments. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "core/buf.h"
#include "policy/hold_notice.h"
#include "policy/limits.h"
#include "policy/limits_store.h"
#include "policy/policy_service.h"
#include <uv.h>

#include "tap.h"

static void test_window_basic(void)
{
	struct limits_store *st = limits_store_memory_new(1000);
	struct limits_ask a = {"m|l|alice", 5, 60000};
	size_t which = 99;
	uint64_t wait = 0, t = 1000000;
	int accepted = 0;
	for (int i = 0; i < 5; i++)
		accepted += st->ops->take(st, &a, 1, 1, t + (uint64_t)i * 1000, &which, &wait);
	is_int(accepted, 5, "5/1m: five accepted");
	ok(!st->ops->take(st, &a, 1, 1, t + 5000, &which, &wait), "the sixth refused");
	is_int((long long)which, 0, "the refusing rule is named");
	/* The first went in at t: it stops counting about a minute later. */
	ok(wait > 54000 && wait <= 57000, "frees up when the first event leaves the window (%llu ms)",
	   (unsigned long long)wait);
	ok(!st->ops->take(st, &a, 1, 1, t + 5000 + wait - 1001, &which, &wait), "a second early: still refused");
	uint64_t w2 = 0;
	uint64_t used = st->ops->peek(st, "m|l|alice", 60000, 5, t + 5000, &w2);
	is_int((long long)used, 5, "peek: five used");
	ok(st->ops->take(st, &a, 1, 1, t + 62500, &which, &wait), "after the window moved on: fits again");
	struct limits_ask b = {"m|l|bob", 5, 60000};
	ok(st->ops->take(st, &b, 1, 1, t + 5000, &which, &wait), "another key is not affected");
	limits_store_free(&st);
	ok(st == NULL, "free clears the pointer");
}

/* Random traffic against an exact log of accepted times. */
static void test_window_exact(void)
{
	struct limits_store *st = limits_store_memory_new(1000);
	const uint64_t period = 10000, count = 20;
	struct limits_ask a = {"x", count, period};
	uint64_t *log = calloc(100000, sizeof(*log));
	size_t nlog = 0;
	unsigned seed = 12345;
	uint64_t t = 5000;
	bool over = false, early = false;
	for (int i = 0; i < 20000; i++) {
		seed = seed * 1103515245 + 12345;
		t += (seed >> 16) % 900;
		size_t which;
		uint64_t wait;
		bool yes = st->ops->take(st, &a, 1, 1, t, &which, &wait);
		/* exact count over (t - period, t] */
		uint64_t exact = 0, exact_wide = 0, slot = (period + LIMITS_WIN_SLOTS - 1) / LIMITS_WIN_SLOTS;
		for (size_t k = 0; k < nlog; k++) {
			if (log[k] + period > t)
				exact++;
			if (log[k] + (LIMITS_WIN_SLOTS + 1) * slot > t)
				exact_wide++;
		}
		if (yes) {
			if (exact + 1 > count)
				over = true;
			log[nlog++] = t;
		} else if (exact_wide < count) {
			early = true;
		}
	}
	ok(!over, "never more than COUNT within any PERIOD (%zu accepted)", nlog);
	ok(!early, "refused only when the count over SLOTS + 1 slots is at COUNT");
	free(log);
	limits_store_free(&st);
}

static void test_all_or_none(void)
{
	struct limits_store *st = limits_store_memory_new(1000);
	struct limits_ask a[2] = {{"m|l|carol", 100, 3600000}, {"m|d|example.com", 2, 3600000}};
	size_t which = 9;
	uint64_t wait;
	ok(st->ops->take(st, a, 2, 1, 1000, &which, &wait), "two rules: first take");
	ok(st->ops->take(st, a, 2, 1, 1000, &which, &wait), "two rules: second take");
	ok(!st->ops->take(st, a, 2, 1, 1000, &which, &wait), "the domain rule refuses the third");
	is_int((long long)which, 1, "and is named");
	uint64_t w;
	is_int((long long)st->ops->peek(st, "m|l|carol", 3600000, 100, 1000, &w), 2,
	       "the refused take charged no rule");
	limits_store_free(&st);
}

struct thr {
	struct limits_store *st;
	int accepted;
};

static void *thr_run(void *arg)
{
	struct thr *t = arg;
	struct limits_ask a = {"m|l|shared", 1000, 3600000};
	for (int i = 0; i < 2000; i++) {
		size_t which;
		uint64_t wait;
		char key[32];
		snprintf(key, sizeof(key), "noise|%d", i);
		struct limits_ask b = {key, 5, 60000};
		t->st->ops->take(t->st, &b, 1, 1, 1000, &which, &wait);
		t->accepted += t->st->ops->take(t->st, &a, 1, 1, 1000, &which, &wait);
	}
	return NULL;
}

static void test_threads(void)
{
	struct limits_store *st = limits_store_memory_new(100000);
	struct thr t[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		t[i] = (struct thr){st, 0};
		pthread_create(&th[i], NULL, thr_run, &t[i]);
	}
	int total = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		total += t[i].accepted;
	}
	is_int(total, 1000, "four threads, 8000 tries on one 1000/1h key: exactly 1000 accepted");
	limits_store_free(&st);
}

static void test_holds(void)
{
	struct limits_store *st = limits_store_memory_new(1000);
	uint64_t g0 = st->generation;
	struct limits_hold h = {.login = "dave@example.com", .reason = "manual", .since = 100, .until = 0};
	ok(st->ops->hold_set(st, &h, 5000), "hold set");
	ok(st->generation != g0, "a hold bumps the generation");
	ok(!st->ops->hold_set(st, &h, 6000), "held already: not set twice (one log line)");
	struct limits_hold got;
	ok(st->ops->hold_get(st, "dave@example.com", 7000, &got) && got.since_ms == 5000,
	   "hold_get returns it with its start");
	ok(!st->ops->hold_get(st, "eve@example.com", 7000, NULL), "another login is not held");
	ok(st->ops->hold_clear(st, "dave@example.com"), "released");
	ok(!st->ops->hold_get(st, "dave@example.com", 7000, NULL), "not held after release");
	ok(!st->ops->hold_clear(st, "dave@example.com"), "a second release says not held");
	struct limits_hold t = {.login = "tim", .reason = "burst", .since = 100, .until = 110};
	ok(st->ops->hold_set(st, &t, 1000), "a hold for 10 s");
	ok(st->ops->hold_get(st, "tim", 10999, NULL), "held at 9.999 s");
	ok(!st->ops->hold_get(st, "tim", 11000, NULL), "over at 10 s");
	ok(st->ops->hold_set(st, &t, 12000), "an expired hold can be set again");

	struct limits_block b = {.addr = "192.0.2.7", .since = 1, .reason = "test"};
	ok(st->ops->block_set(st, &b) && !st->ops->block_set(st, &b), "block set once");
	ok(st->ops->block_get(st, "192.0.2.7") && !st->ops->block_get(st, "192.0.2.8"), "block_get");
	ok(st->ops->block_clear(st, "192.0.2.7") && !st->ops->block_get(st, "192.0.2.7"), "unblock");

	st->ops->kick(st, "frank", 3000, 1000);
	is_int((long long)st->ops->kicked_at(st, "frank", 3500), 3000, "kicked_at");
	is_int((long long)st->ops->kicked_at(st, "frank", 4000), 0, "a kick is forgotten after keep_ms");

	is_int(st->ops->addr_seen(st, "gina", "192.0.2.1", 60000, 1000), 1, "one address");
	is_int(st->ops->addr_seen(st, "gina", "192.0.2.1", 60000, 2000), 1, "the same again");
	is_int(st->ops->addr_seen(st, "gina", "192.0.2.2", 60000, 3000), 2, "a second");
	is_int(st->ops->addr_seen(st, "gina", "192.0.2.3", 60000, 62500), 2,
	       "the first aged out of the window");
	char key[LIMITS_KEY_MAX + 10];
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	ok(!st->ops->hold_set(st, &(struct limits_hold){.login = ""}, 0) ||
		   st->ops->hold_get(st, "", 0, NULL),
	   "an empty login is a key like another");
	is_int((long long)st->ops->add(st, key, 1000, 1, 0), 0, "an over-long key is not stored");
	limits_store_free(&st);
}

static void test_full(void)
{
	struct limits_store *st = limits_store_memory_new(64); /* one entry per shard, plus one */
	size_t which;
	uint64_t wait;
	int refusedfull = 0;
	for (int i = 0; i < 1000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "k%d", i);
		struct limits_ask a = {key, 1, 3600000};
		st->ops->take(st, &a, 1, 1, 1000, &which, &wait);
	}
	struct limits_store_stats ss;
	st->ops->stats(st, &ss);
	ok(ss.entries <= 128, "a full store holds at most its bound (%llu)", (unsigned long long)ss.entries);
	ok(ss.refused_full > 0, "and counts what it did not keep (%llu)", (unsigned long long)ss.refused_full);
	refusedfull = (int)ss.refused_full;
	/* Once the windows are over, the sweep makes room again. */
	struct limits_ask a = {"late", 1, 3600000};
	ok(st->ops->take(st, &a, 1, 1, 1000 + 2 * 3600000ULL, &which, &wait), "a take after expiry");
	st->ops->stats(st, &ss);
	ok((int)ss.refused_full == refusedfull, "expired entries were swept to make room");
	limits_store_free(&st);
}

/* A rule's or an administrator's hold that the full store cannot keep is
 * not reported as "held already". */
static void test_hold_full(void)
{
	struct limits_store *st = limits_store_memory_new(64);
	limits_store_replace(st);
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	ok(limits_hold_manual(NULL, &cfg, "a@example.com", "t") == LIMITS_HOLD_SET, "a hold is set");
	ok(limits_hold_manual(NULL, &cfg, "a@example.com", "t") == LIMITS_HOLD_ALREADY,
	   "a second hold of the same login: held already");
	size_t which;
	uint64_t wait;
	for (int i = 0; i < 1000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "k%d", i);
		struct limits_ask a = {key, 1, 3600000};
		st->ops->take(st, &a, 1, 1, limits_now_ms(), &which, &wait);
	}
	int full = 0;
	for (int i = 0; i < 200; i++) {
		char login[32];
		snprintf(login, sizeof(login), "u%d@example.com", i);
		enum limits_hold_result r = limits_hold_manual(NULL, &cfg, login, "t");
		if (r == LIMITS_HOLD_FULL)
			full++;
		else if (r == LIMITS_HOLD_ALREADY)
			full = -10000;
	}
	ok(full > 0, "a full store: LIMITS_HOLD_FULL, never held already (%d)", full);
	ok(limits_hold_manual(NULL, &cfg, "a@example.com", "t") == LIMITS_HOLD_ALREADY,
	   "the login held before the store filled is still held already");
	limits_store_replace(NULL);
}

static void test_parse(void)
{
	struct limits_rules r;
	char err[200], out[200];
	ok(limits_rules_parse("200/1h, 1000/1d", &r, err, sizeof(err)) && r.n == 2 &&
		   r.r[0].count == 200 && r.r[0].period_ms == 3600000 && r.r[1].period_ms == 86400000,
	   "200/1h, 1000/1d");
	limits_rules_format(&r, out, sizeof(out));
	ok(strcmp(out, "200/1h, 1000/1d") == 0, "formatted back: %s", out);
	ok(limits_rules_parse("none", &r, err, sizeof(err)) && r.n == 0, "none");
	ok(limits_rules_parse("3/5s", &r, err, sizeof(err)) && r.r[0].period_ms == 5000, "3/5s");
	const char *bad[] = {"", "200", "/1h", "200/", "0/1h", "-1/1h", "200/1x", "200/500ms",
			     "1/1h,", "1/1h,,2/1d", "1/1h 2/1d", "99999999999/1h",
			     "1/1h,2/1h,3/1h,4/1h,5/1h", "1/1h;"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(!limits_rules_parse(bad[i], &r, err, sizeof(err)), "refused: \"%s\"", bad[i]);

	struct limits_rules m, rc;
	limits_rules_parse("200/1h", &m, err, sizeof(err));
	limits_rules_parse("1000/1h", &rc, err, sizeof(err));
	ok(limits_override_parse("message=5/1m recipient=none", &m, &rc) && m.n == 1 &&
		   m.r[0].count == 5 && rc.n == 0,
	   "override: message=5/1m recipient=none");
	limits_rules_parse("200/1h", &m, err, sizeof(err));
	limits_rules_parse("1000/1h", &rc, err, sizeof(err));
	ok(limits_override_parse("recipients=10/1h,20/1d", &m, &rc) && m.r[0].count == 200 &&
		   rc.n == 2,
	   "override: recipients only, messages keep the default");
	ok(limits_override_parse("none", &m, &rc) && m.n == 0 && rc.n == 0, "override: none");
	limits_rules_parse("200/1h", &m, err, sizeof(err));
	const char *obad[] = {"", "message", "message=", "msg=1/1h", "message=1/1h bogus",
			      "message=1/1h recipient=x"};
	for (size_t i = 0; i < sizeof(obad) / sizeof(obad[0]); i++)
		ok(!limits_override_parse(obad[i], &m, &rc) && m.r[0].count == 200,
		   "override refused whole: \"%s\"", obad[i]);
}

static void test_control_parse(void)
{
	struct buf out = BUF_INIT;
	char big[CONTROL_LINE_MAX + 10];
	memset(big, 'a', sizeof(big));
	control_answer(NULL, NULL, big, sizeof(big), &out);
	ok(strncmp((char *)buf_data(&out), "error: request longer", 21) == 0, "a long line is refused");
	const char *cases[][2] = {
		{"", "error: empty request"},
		{"frobnicate", "error: unknown verb"},
		{"status extra", "error: status: wrong number"},
		{"limits", "error: limits: wrong number"},
		{"kick a b", "error: kick: wrong number"},
		{"stat\001us", "error: request holds a control"},
		{"hold \xc3\xa9", "error: request holds a control or non-ASCII"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_reset(&out);
		control_answer(NULL, NULL, cases[i][0], strlen(cases[i][0]), &out);
		buf_append(&out, "", 1);
		ok(strncmp((char *)buf_data(&out), cases[i][1], strlen(cases[i][1])) == 0,
		   "request \"%s\" -> %.*s", cases[i][0],
		   (int)strcspn((char *)buf_data(&out), "\n"), (char *)buf_data(&out));
	}
	buf_reset(&out);
	control_answer(NULL, NULL, "st\0tus", 6, &out);
	ok(strncmp((char *)buf_data(&out), "error:", 6) == 0, "a NUL in the line is refused");
	buf_free(&out);
}

static void test_policy_parse(void)
{
	const struct {
		const char *in;
		bool ok;
		int code;
		const char *enh, *text;
	} cases[] = {
		{"action=DUNNO\n\n", true, 0, "", ""},
		{"action=ok\n\n", true, 0, "", ""},
		{"action=OK extra\nother=1\n\n", true, 0, "", ""},
		{"action=REJECT no way\n\n", true, 554, "5.7.1", "no way"},
		{"action=REJECT\n\n", true, 554, "5.7.1", "Access denied"},
		{"action=DEFER_IF_PERMIT later\n\n", true, 450, "4.7.1", "later"},
		{"action=DEFER_IF_REJECT x\n\n", true, 0, "", ""},
		{"action=550 5.1.1 gone\n\n", true, 550, "5.1.1", "gone"},
		{"action=450 slow down\n\n", true, 450, "4.7.1", "slow down"},
		{"action=451 5.1.1 mixed\n\n", true, 451, "4.7.1", "5.1.1 mixed"},
		{"action=REJECT 5.7.1 no\n\n", true, 554, "5.7.1", "no"},
		{"action=reject 5.7.26 dmarc\n\n", true, 554, "5.7.26", "dmarc"},
		{"action=REJECT 4.7.1 wrong class\n\n", true, 554, "5.7.1", "4.7.1 wrong class"},
		{"action=REJECT 5.7.1x\n\n", true, 554, "5.7.1", "5.7.1x"},
		{"action=REJECT 5.7777.1 x\n\n", true, 554, "5.7.1", "5.7777.1 x"},
		{"action=REJECT 5.7.1\n\n", true, 554, "5.7.1", "Access denied"},
		{"action=DEFER 4.7.0 later\n\n", true, 450, "4.7.0", "later"},
		{"action=550 5.1.1\n\n", true, 550, "5.1.1", "Access denied"},
		{"action=WARN hm\n\n", true, 0, "", ""},
		{"action=HOLD x\n\n", false, 0, "", ""},
		{"action=DISCARD\n\n", false, 0, "", ""},
		{"action=250 fine\n\n", false, 0, "", ""},
		{"action=OK\n", false, 0, "", ""},
		{"nothing=here\n\n", false, 0, "", ""},
		{"action=OK\naction=REJECT\n\n", false, 0, "", ""},
		{"action=REJECT \x1b[31m\n\n", false, 0, "", ""},
		{"action=\n\n", false, 0, "", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct smtp_reply r;
		char action[256];
		bool got = policy_service_parse(cases[i].in, strlen(cases[i].in), &r, action, sizeof(action));
		ok(got == cases[i].ok && (!got || (r.code == cases[i].code &&
						   (r.code == 0 || (strcmp(r.enh, cases[i].enh) == 0 &&
								    strcmp(r.text, cases[i].text) == 0)))),
		   "policy answer %zu -> %s %d %s %s", i, got ? "ok" : "refused", r.code, r.enh, r.text);
	}
}

/* What the store costs one message with the defaults (two login and two
 * domain rules at MAIL and at RCPT, the burst and refused-share counters):
 * printed for docs/limits.md, never asserted. */
static void test_cost(void)
{
	struct limits_store *st = limits_store_memory_new(1000000);
	struct limits_ask mail[4] = {{"m|l|u@example.com", 1000000000, 3600000},
				     {"m|l|u@example.com", 1000000000, 86400000},
				     {"m|d|example.com", 1000000000, 3600000},
				     {"m|d|example.com", 1000000000, 86400000}};
	struct limits_ask rcpt[4] = {{"r|l|u@example.com", 1000000000, 3600000},
				     {"r|l|u@example.com", 1000000000, 86400000},
				     {"r|d|example.com", 1000000000, 3600000},
				     {"r|d|example.com", 1000000000, 86400000}};
	const int n = 200000;
	size_t which;
	uint64_t wait, t0 = uv_hrtime();
	for (int i = 0; i < n; i++) {
		uint64_t now = 1000 + (uint64_t)i / 10;
		st->ops->take(st, mail, 4, 1, now, &which, &wait);
		st->ops->add(st, "burst|u@example.com", 600000, 1, now);
		st->ops->add(st, "burst|u@example.com", 86400000, 1, now);
		st->ops->take(st, rcpt, 4, 1, now, &which, &wait);
		st->ops->add(st, "rcpt-tried|u@example.com", 3600000, 1, now);
		st->ops->hold_get(st, "u@example.com", now, NULL);
	}
	double ns = (double)(uv_hrtime() - t0) / n;
	ok(ns > 0, "store work per one-recipient message: %.0f ns (%.4f ms)", ns, ns / 1e6);
	limits_store_free(&st);
}

/* The hold notice: attacker-chosen bytes in the login, reason and figures
 * never make a header line of their own, nor a control byte, nor a long
 * line. */
static void test_hold_notice(void)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	cfg->myhostname = "mail.example.org";
	cfg->hold_notify_recipient = "postmaster@example.org";
	struct limits_hold h;
	memset(&h, 0, sizeof(h));
	memset(h.login, 'L', sizeof(h.login) - 1);
	memcpy(h.login, "evil\r\nBcc: victim@example.net\r\n\r\nX", 34);
	memcpy(h.login + 40, "\r\nSubject: x\x01\x7f\xc3\xa9", 16);
	snprintf(h.reason, sizeof(h.reason), "manual\nX-Injected: yes");
	snprintf(h.note, sizeof(h.note), "figures\r\n.\r\nMAIL FROM:<x@y>");
	snprintf(h.client, sizeof(h.client), "192.0.2.7");
	h.since = 1700000000;
	struct buf out = BUF_INIT;
	hold_notice_format(cfg, &h, 1700000000, "1.2.3", &out);
	buf_append(&out, "", 1);
	const char *m = (const char *)buf_data(&out);
	size_t len = strlen(m);
	ok(len == buf_len(&out) - 1, "no NUL in the notice");
	bool clean = true, in_header = true;
	size_t headers = 0, longest = 0;
	for (const char *p = m; *p;) {
		const char *e = strstr(p, "\r\n");
		if (e == NULL) {
			clean = false;
			break;
		}
		for (const char *q = p; q < e; q++)
			if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
				clean = false;
		if ((size_t)(e - p) > longest)
			longest = (size_t)(e - p);
		if (in_header && e == p)
			in_header = false;
		else if (in_header)
			headers++;
		p = e + 2;
	}
	ok(clean, "every line ends in CRLF and holds printable ASCII only");
	ok(longest <= 400, "no line longer than 400 bytes (longest %zu)", longest);
	is_int((long long)headers, 9, "nine header lines, none injected");
	ok(strstr(m, "\r\nBcc:") == NULL && strstr(m, "\r\nX-Injected:") == NULL &&
		   strstr(m, "\r\n.\r\n") == NULL,
	   "no injected header line and no lone dot line");
	ok(strncmp(m, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n", 39) == 0, "Date (RFC 5322)");
	ok(strstr(m, "\r\nMessage-ID: <hold.1.2.3@mail.example.org>\r\n") != NULL, "Message-ID");
	ok(strstr(m, "\r\nFrom: Mail submission <MAILER-DAEMON@mail.example.org>\r\n") != NULL,
	   "From: MAILER-DAEMON by default");
	ok(strstr(m, "\r\nTo: <postmaster@example.org>\r\n") != NULL, "To");
	ok(strstr(m,
		  "\r\nSubject: login evil??Bcc: victim@example.net????XLLLLLL??Subject: x????L") !=
			   NULL &&
		   strstr(m, "LLLLLLLL... held: manual?X-Injected: yes\r\n") != NULL,
	   "Subject: the login cut to 64 bytes and the reason, control bytes as '?'");
	ok(strstr(m, "\r\nAuto-Submitted: auto-generated\r\n") != NULL, "Auto-Submitted");
	ok(strstr(m, "\r\nClient:  192.0.2.7\r\n") != NULL, "the figures in the body");
	ok(strstr(m, "submitctl release LOGIN (") != NULL,
	   "no ready-to-paste release command for a login a shell would read");
	cfg->hold_notify_sender = "abuse@example.org";
	snprintf(h.login, sizeof(h.login), "bob+x@example.com");
	buf_reset(&out);
	hold_notice_format(cfg, &h, 1700000000, "1", &out);
	buf_append(&out, "", 1);
	ok(strstr((char *)buf_data(&out), "\r\nFrom: Mail submission <abuse@example.org>\r\n") !=
		   NULL,
	   "From: hold_notify_sender when set");
	ok(strstr((char *)buf_data(&out), "\r\n  submitctl release bob+x@example.com\r\n") != NULL,
	   "the release command for a plain login");
	char err[160];
	cfg->hold_notify_recipient = "postmaster@example.org>\r\nRCPT TO:<x@y";
	ok(!hold_notice_conf_check(cfg, err, sizeof(err)), "a recipient with CRLF is refused: %s",
	   err);
	cfg->hold_notify_recipient = "postmaster";
	ok(!hold_notice_conf_check(cfg, err, sizeof(err)),
	   "a recipient without a domain is refused");
	cfg->hold_notify_recipient = "postmaster@example.org";
	cfg->hold_notify_sender = "a b@example.org";
	ok(!hold_notice_conf_check(cfg, err, sizeof(err)), "a bad sender is refused: %s", err);
	cfg->hold_notify_sender = "";
	ok(hold_notice_conf_check(cfg, err, sizeof(err)), "an empty sender is the null sender");
	buf_free(&out);
	free(cfg);
}

int main(void)
{
	test_window_basic();
	test_window_exact();
	test_all_or_none();
	test_threads();
	test_holds();
	test_full();
	test_hold_full();
	test_parse();
	test_control_parse();
	test_policy_parse();
	test_cost();
	test_hold_notice();
	return done_testing();
}
