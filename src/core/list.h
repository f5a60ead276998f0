/* Intrusive doubly-linked lists: the one list shape in submitd.
 *
 * A list is a `struct list_link` head whose next/prev point at itself when
 * empty; elements embed a `struct list_link` and are found again with
 * list_entry(). Unlinked elements have next == NULL, so list_linked() tells
 * whether an element is on some list, and list_remove() is safe to call
 * twice. No allocation, O(1) insert and removal anywhere. */
#ifndef SUBMITD_CORE_LIST_H
#define SUBMITD_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_link {
	struct list_link *next, *prev;
};

#define list_entry(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Iterates where the body may remove (or free) pos; tmp is scratch. */
#define list_for_each_safe(pos, tmp, head)                               \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
	     (pos) = (tmp), (tmp) = (pos)->next)

static inline void list_init(struct list_link *head)
{
	head->next = head->prev = head;
}

static inline bool list_empty(const struct list_link *head)
{
	return head->next == head;
}

/* Whether an element (not a head) is on a list. Zeroed memory is unlinked. */
static inline bool list_linked(const struct list_link *l)
{
	return l->next != NULL;
}

static inline void list_insert_between(struct list_link *l, struct list_link *prev,
				       struct list_link *next)
{
	l->prev = prev;
	l->next = next;
	prev->next = l;
	next->prev = l;
}

static inline void list_add_tail(struct list_link *head, struct list_link *l)
{
	list_insert_between(l, head->prev, head);
}

static inline void list_add_head(struct list_link *head, struct list_link *l)
{
	list_insert_between(l, head, head->next);
}

/* Unlinks l from whatever list holds it; a no-op when it is on none. */
static inline void list_remove(struct list_link *l)
{
	if (l->next == NULL)
		return;
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->next = l->prev = NULL;
}

/* The first element, or NULL when the list is empty. */
static inline struct list_link *list_first(const struct list_link *head)
{
	return head->next == head ? NULL : head->next;
}

/* Moves every element of from to the tail of to; from ends up empty. */
static inline void list_splice_tail(struct list_link *to, struct list_link *from)
{
	if (list_empty(from))
		return;
	struct list_link *first = from->next, *last = from->prev;
	first->prev = to->prev;
	to->prev->next = first;
	last->next = to;
	to->prev = last;
	list_init(from);
}

#endif
