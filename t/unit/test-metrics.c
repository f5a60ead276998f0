/* core/metrics.c: shards summed across threads, bounded label slots, the
 * per-login space-saving sketch and its error bound (docs/observability.md). */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/metrics.h"
#include "tap.h"

#define THREADS 4
#define PER_THREAD 100000

static void *counter_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++) {
		metrics_inc(METRICS_MSG_ACCEPTED);
		metrics_auth(METRICS_MECH_PLAIN, METRICS_AUTH_SUCCESS);
	}
	metrics_gauge_add(METRICS_G_SESSIONS, 2);
	metrics_gauge_add(METRICS_G_SESSIONS, -1);
	return NULL;
}

int main(void)
{
	static struct metrics_snapshot m;
	pthread_t th[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, counter_thread, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	metrics_read(&m);
	is_int((long long)m.counters[METRICS_MSG_ACCEPTED], THREADS * PER_THREAD,
	       "counts of every thread's shard are summed (also after the threads ended)");
	is_int((long long)m.auth[METRICS_MECH_PLAIN][METRICS_AUTH_SUCCESS], THREADS * PER_THREAD,
	       "auth counts summed");
	is_int((long long)m.gauges[METRICS_G_SESSIONS], THREADS, "gauges add up across shards");

	/* label slots: bounded, the last one is "other" */
	char name[80];
	unsigned first = metrics_slot(METRICS_KIND_ROUTE, "[a]:25");
	is_int(metrics_slot(METRICS_KIND_ROUTE, "[a]:25"), first, "a value keeps its slot");
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "[relay%d.example]:25", i);
		metrics_slot(METRICS_KIND_ROUTE, name);
	}
	metrics_read(&m);
	is_int(m.nslots[METRICS_KIND_ROUTE], METRICS_SLOTS, "slots stop at METRICS_SLOTS");
	ok(strcmp(m.slot_names[METRICS_KIND_ROUTE][METRICS_SLOTS - 1], "other") == 0,
	   "the last slot is \"other\"");
	is_int(metrics_slot(METRICS_KIND_ROUTE, "[new]:25"), METRICS_SLOTS - 1,
	       "a new value past the bound counts under other");
	memset(name, 'x', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	unsigned l = metrics_slot(METRICS_KIND_LISTENER, name);
	metrics_read(&m);
	is_int((long long)strlen(m.slot_names[METRICS_KIND_LISTENER][l]), 63,
	       "a long value is kept to 63 bytes");
	metrics_observe(METRICS_H_LOOKUP, "table", "mysql:/etc/x.cf", 3000000); /* 3 ms */
	metrics_observe(METRICS_H_LOOKUP, "table", "mysql:/etc/x.cf", 20000000000ULL);
	unsigned ts = metrics_slot(METRICS_KIND_BACKEND, "table:mysql:/etc/x.cf");
	metrics_read(&m);
	ok(m.hist[METRICS_H_LOOKUP][ts][2] == 1 &&
		   m.hist[METRICS_H_LOOKUP][ts][METRICS_BUCKETS] == 1,
	   "3 ms lands in the 5 ms bucket, 20 s in +Inf");
	metrics_backend_up("relay", "[a]:25", true);
	metrics_backend_up("relay", "[b]:25", false);
	metrics_read(&m);
	ok(m.backend_up[metrics_slot(METRICS_KIND_BACKEND, "relay:[a]:25")] == 1 &&
		   m.backend_up[metrics_slot(METRICS_KIND_BACKEND, "relay:[b]:25")] == 0,
	   "backend health: up and down");

	char esc[64];
	metrics_label_escape(esc, sizeof(esc), "a\"b\\c\nd\x01");
	ok(strcmp(esc, "a\\\"b\\\\c\\nd?") == 0, "label values escaped: %s", esc);

	/* the sketch: heavy hitters are found, counts never below the truth,
	   above it by at most the error shown */
	for (int round = 0; round < 50; round++) {
		metrics_login_add(METRICS_TOP_MESSAGES, "heavy@example.com", 10);
		metrics_login_add(METRICS_TOP_MESSAGES, "second@example.com", 5);
		for (int i = 0; i < 20; i++) {
			snprintf(name, sizeof(name), "u%d-%d@example.com", round, i);
			metrics_login_add(METRICS_TOP_MESSAGES, name, 1);
		}
	}
	struct metrics_top_entry e[10];
	size_t n = metrics_top_read(METRICS_TOP_MESSAGES, e, 10);
	ok(n == 10 && strcmp(e[0].login, "heavy@example.com") == 0 &&
		   strcmp(e[1].login, "second@example.com") == 0,
	   "the two heavy logins come first (%s, %s)", n ? e[0].login : "",
	   n > 1 ? e[1].login : "");
	ok(e[0].count >= 500 && e[0].count - e[0].error <= 500, "heavy: %llu (+%llu) brackets 500",
	   (unsigned long long)e[0].count, (unsigned long long)e[0].error);
	/* N = 50 * 35 = 1750 in this window: error at most N/64 */
	ok(e[1].count >= 250 && e[1].error <= 1750 / METRICS_TOP_CAPACITY + 1,
	   "second: %llu (+%llu), error within N/capacity", (unsigned long long)e[1].count,
	   (unsigned long long)e[1].error);
	metrics_login_add(METRICS_TOP_REFUSED, NULL, 1);
	metrics_login_add(METRICS_TOP_REFUSED, "", 1);
	is_int((long long)metrics_top_read(METRICS_TOP_REFUSED, e, 10), 0,
	       "no login (a trusted client), nothing kept");
	memset(name, 'y', sizeof(name) - 1);
	metrics_login_add(METRICS_TOP_REFUSED, name, 1);
	n = metrics_top_read(METRICS_TOP_REFUSED, e, 10);
	ok(n == 1 && strlen(e[0].login) == 63, "a long login is kept cut to 63 bytes");
	return done_testing();
}
