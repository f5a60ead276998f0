/* Completion on the next loop turn: see defer.h. */
#include "config.h"
#include "core/defer.h"

static void defer_queue_idle_cb(uv_idle_t *h)
{
	struct defer_queue *q = h->data;
	/* Only what was queued when this turn began. */
	list_splice_tail(&q->running, &q->queued);
	struct list_link *l;
	while (!q->closing && (l = list_first(&q->running)) != NULL) {
		struct defer_item *item = list_entry(l, struct defer_item, link);
		list_remove(l);
		item->cb(item);
	}
	if (!q->closing && list_empty(&q->queued))
		uv_idle_stop(&q->idle);
}

void defer_queue_init(struct defer_queue *q, uv_loop_t *loop)
{
	list_init(&q->queued);
	list_init(&q->running);
	q->closing = false;
	q->closed = NULL;
	uv_idle_init(loop, &q->idle);
	q->idle.data = q;
}

static void defer_unlink_all(struct list_link *head)
{
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, head) list_remove(l);
}

static void defer_queue_closed_cb(uv_handle_t *h)
{
	struct defer_queue *q = h->data;
	if (q->closed != NULL)
		q->closed(q);
}

void defer_queue_close(struct defer_queue *q, void (*closed)(struct defer_queue *q))
{
	defer_unlink_all(&q->queued);
	defer_unlink_all(&q->running);
	q->closing = true;
	q->closed = closed;
	uv_idle_stop(&q->idle);
	uv_close((uv_handle_t *)&q->idle, defer_queue_closed_cb);
}

void defer_push(struct defer_queue *q, struct defer_item *item, defer_cb *cb)
{
	item->cb = cb;
	list_add_tail(&q->queued, &item->link);
	uv_idle_start(&q->idle, defer_queue_idle_cb);
}

void defer_cancel(struct defer_item *item)
{
	list_remove(&item->link);
}
