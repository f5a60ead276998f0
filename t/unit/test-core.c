/* The generic helpers in src/core: list.h, defer.c, duration.c. */
#include "config.h"

#include <stdlib.h>

#include "core/defer.h"
#include "core/duration.h"
#include "core/list.h"
#include "loop-wait.h"
#include "tap.h"

struct elem {
	int v;
	struct list_link link;
};

static void test_list(void)
{
	struct list_link head;
	list_init(&head);
	ok(list_empty(&head) && list_first(&head) == NULL, "new list is empty");
	struct elem e[4] = {{.v = 0}, {.v = 1}, {.v = 2}, {.v = 3}};
	ok(!list_linked(&e[0].link), "zeroed element is unlinked");
	list_add_tail(&head, &e[1].link);
	list_add_tail(&head, &e[2].link);
	list_add_head(&head, &e[0].link);
	list_add_tail(&head, &e[3].link);
	int seen = 0, order = 0;
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &head) {
		struct elem *x = list_entry(l, struct elem, link);
		order = order * 10 + x->v;
		seen++;
		if (x->v == 1)
			list_remove(l); /* removal while iterating */
	}
	is_int(seen, 4, "iterates every element");
	is_int(order, 123, "in order 0 1 2 3");
	ok(!list_linked(&e[1].link), "removed element is unlinked");
	list_remove(&e[1].link);
	ok(true, "removing twice is harmless");
	struct list_link other;
	list_init(&other);
	list_splice_tail(&other, &head);
	ok(list_empty(&head), "splice empties the source");
	is_int(list_entry(list_first(&other), struct elem, link)->v, 0, "splice keeps order");
	is_int(list_entry(other.prev, struct elem, link)->v, 3, "splice keeps the tail");
}

struct job {
	struct defer_item item;
	struct defer_queue *q;
	int *log;
	int id;
	struct job *cancel;  /* cancels this one when it runs */
	struct job *requeue; /* queues this one when it runs */
	bool close_queue;
};

static int runs;
static int closed_calls;

static void job_cb(struct defer_item *item)
{
	struct job *j = (struct job *)(void *)((char *)item - offsetof(struct job, item));
	j->log[runs++] = j->id;
	if (j->cancel)
		defer_cancel(&j->cancel->item);
	if (j->requeue)
		defer_push(j->q, &j->requeue->item, job_cb);
	if (j->close_queue)
		defer_queue_close(j->q, NULL);
}

static void queue_closed(struct defer_queue *q)
{
	(void)q;
	closed_calls++;
}

static void test_defer(void)
{
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	struct defer_queue q;
	defer_queue_init(&q, loop);
	int log[16] = {0};
	struct job a = {.q = &q, .log = log, .id = 1}, b = {.q = &q, .log = log, .id = 2},
		   c = {.q = &q, .log = log, .id = 3}, d = {.q = &q, .log = log, .id = 4};
	a.cancel = &c;   /* c is in the same turn's batch */
	b.requeue = &d;  /* d waits for the next turn */
	defer_push(&q, &a.item, job_cb);
	defer_push(&q, &b.item, job_cb);
	defer_push(&q, &c.item, job_cb);
	is_int(runs, 0, "nothing runs inside defer_push");
	ok(defer_pending(&a.item), "pushed item is pending");
	uv_run(loop, UV_RUN_NOWAIT);
	is_int(runs, 2, "one turn runs what was queued when it began, minus the cancelled");
	ok(log[0] == 1 && log[1] == 2, "in queue order");
	ok(defer_pending(&d.item), "item queued by a callback waits for the next turn");
	uv_run(loop, UV_RUN_NOWAIT);
	is_int(runs, 3, "next turn runs it");
	is_int(log[2], 4, "the requeued item");
	ok(!uv_is_active((uv_handle_t *)&q.idle), "idle handle stops when the queue is empty");

	/* Closing from inside a callback drops the rest of the turn. */
	struct job e = {.q = &q, .log = log, .id = 5, .close_queue = true},
		   f = {.q = &q, .log = log, .id = 6};
	defer_push(&q, &e.item, job_cb);
	defer_push(&q, &f.item, job_cb);
	uv_run(loop, UV_RUN_NOWAIT);
	is_int(runs, 4, "close inside a callback stops the turn");
	ok(!defer_pending(&f.item), "dropped items are unlinked");
	SETTLE(10);

	struct defer_queue q2;
	defer_queue_init(&q2, loop);
	struct job g = {.q = &q2, .log = log, .id = 7};
	defer_push(&q2, &g.item, job_cb);
	defer_queue_close(&q2, queue_closed);
	SETTLE(10);
	is_int(runs, 4, "close drops queued items");
	is_int(closed_calls, 1, "closed callback runs once the handle is closed");
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	ok(uv_loop_close(loop) == 0, "no handle left behind");
}

static void test_duration(void)
{
	static const struct {
		const char *in;
		bool ok;
		uint64_t ms;
	} cases[] = {
		{"30", true, 30000},    {"30s", true, 30000},   {"250ms", true, 250},
		{"2m", true, 120000},   {"1h", true, 3600000},  {"1d", true, 86400000},
		{"1w", true, 604800000}, {"5S", true, 5000},    {"0", true, 0},
		{"", false, 0},         {"s", false, 0},        {"-1", false, 0},
		{"+1", false, 0},       {" 1", false, 0},       {"1 s", false, 0},
		{"1x", false, 0},       {"1.5s", false, 0},     {"1sec", false, 0},
		{"18446744073709551615", false, 0},             {"18446744073709551616ms", false, 0},
		{"99999999999999999999999", false, 0},          {"30000000000000000w", false, 0},
		{"18446744073709551615ms", true, UINT64_MAX},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 12345;
		bool r = duration_parse(cases[i].in, &ms);
		if (cases[i].ok)
			ok(r && ms == cases[i].ms, "duration '%s' = %llu ms", cases[i].in,
			   (unsigned long long)cases[i].ms);
		else
			ok(!r && ms == 12345, "duration '%s' refused, output untouched", cases[i].in);
	}
}

int main(void)
{
	test_list();
	test_defer();
	test_duration();
	return done_testing();
}
