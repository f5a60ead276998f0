/* loop-wait.h: run a test's libuv loop until a condition holds or time is up
 * (shared by the unit tests that drive real event loops). */
#ifndef SUBMITD_LOOP_WAIT_H
#define SUBMITD_LOOP_WAIT_H

#include <stdint.h>
#include <uv.h>

static uv_loop_t loop_storage, *loop = &loop_storage;
/* Keeps UV_RUN_ONCE from blocking past the deadline. */
static uv_timer_t guard;

static void guard_cb(uv_timer_t *t) { (void)t; }

/* Runs the loop until cond holds or ms elapse. */
#define WAIT(cond, ms)                                                      \
	do {                                                                \
		uv_update_time(loop);                                       \
		uint64_t dl_ = uv_now(loop) + (ms);                         \
		uv_timer_start(&guard, guard_cb, (ms), 0);                  \
		while (!(cond) && uv_now(loop) < dl_)                       \
			uv_run(loop, UV_RUN_ONCE);                          \
		uv_timer_stop(&guard);                                      \
	} while (0)
#define SETTLE(ms) WAIT(0, ms)

#endif
