/* Completion on the next loop turn.
 *
 * An asynchronous API must never call its callback from inside the call that
 * started the operation (docs/design.md §9): the caller may still be in the
 * middle of changing its own state. A lookup that can answer at once (a cache
 * hit, a refusal) pushes its item here instead, and the queue runs it on the
 * next turn of the loop.
 *
 * One queue per owner (a worker's table instance, a policy module); items
 * live inside the owner's requests. A turn runs only the items that were
 * queued when it began: an item queued by a callback waits for the next turn,
 * so a callback that starts a new operation never sees it complete inside
 * itself. Items may be cancelled at any time, also by a callback of the same
 * turn. */
#ifndef SUBMITD_CORE_DEFER_H
#define SUBMITD_CORE_DEFER_H

#include <stdbool.h>
#include <uv.h>

#include "core/list.h"

struct defer_item;
typedef void defer_cb(struct defer_item *item);

struct defer_item {
	struct list_link link; /* zeroed: not queued */
	defer_cb *cb;
};

struct defer_queue {
	uv_idle_t idle;
	struct list_link queued;  /* waiting for the next turn */
	struct list_link running; /* this turn's batch, while it runs */
	bool closing;
	void (*closed)(struct defer_queue *q); /* after defer_queue_close */
};

void defer_queue_init(struct defer_queue *q, uv_loop_t *loop);

/* Drops every queued item without running it (their owners free them) and
 * closes the handle; q's memory must stay valid until closed(q) is called
 * (closed may be NULL when q lives in memory that outlasts the loop turn).
 * Safe to call from inside an item's callback: the rest of the turn is
 * dropped too. */
void defer_queue_close(struct defer_queue *q, void (*closed)(struct defer_queue *q));

/* Queues item to run cb(item) on the next loop turn. item must not be queued. */
void defer_push(struct defer_queue *q, struct defer_item *item, defer_cb *cb);

/* Unqueues item if it is queued; its callback will not run. */
void defer_cancel(struct defer_item *item);

static inline bool defer_pending(const struct defer_item *item)
{
	return list_linked(&item->link);
}

#endif
