/* lookup/table_registry: a worker's table instances per snapshot. Contract
 * in table_registry.h. A worker has a handful of entries (tables times live
 * snapshots), so they are a list searched in full. */
#include "config.h"
#include "lookup/table_registry.h"

#include <stdlib.h>

#include "core/buf.h"
#include "core/list.h"

struct table_registry_entry {
	struct list_link link;
	struct config *cfg; /* referenced until the instance is gone */
	const struct table *t;
	struct table_inst *ti;
	unsigned refs;
};

struct table_registry {
	uv_loop_t *loop;
	struct list_link entries;
	unsigned n;
	const struct config *current;
};

struct table_registry *table_registry_new(uv_loop_t *loop)
{
	struct table_registry *r = xcalloc(1, sizeof(*r));
	r->loop = loop;
	list_init(&r->entries);
	return r;
}

static void table_registry_closed(void *ctx)
{
	struct table_registry_entry *e = ctx;
	config_unref(&e->cfg);
	free(e);
}

static void table_registry_close(struct table_registry *r, struct table_registry_entry *e)
{
	list_remove(&e->link);
	r->n--;
	table_inst_close_notify(&e->ti, table_registry_closed, e);
}

static bool table_registry_retired(const struct table_registry *r,
				   const struct table_registry_entry *e)
{
	return e->refs == 0 && (r->current == NULL || !config_is_part_of(r->current, e->cfg));
}

void table_registry_set_current(struct table_registry *r, const struct config *cur)
{
	r->current = cur;
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &r->entries)
	{
		struct table_registry_entry *e = list_entry(l, struct table_registry_entry, link);
		if (table_registry_retired(r, e))
			table_registry_close(r, e);
	}
}

struct table_inst *table_registry_get(struct table_registry *r, struct config *cfg,
				      const struct table *t)
{
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &r->entries)
	{
		struct table_registry_entry *e = list_entry(l, struct table_registry_entry, link);
		if (e->cfg == cfg && e->t == t) {
			e->refs++;
			return e->ti;
		}
	}
	struct table_registry_entry *e = xcalloc(1, sizeof(*e));
	e->cfg = config_ref(cfg);
	e->t = t;
	e->ti = table_inst_new(t, r->loop);
	e->refs = 1;
	list_add_tail(&r->entries, &e->link);
	r->n++;
	return e->ti;
}

void table_registry_put(struct table_registry *r, struct table_inst **tip)
{
	struct table_inst *ti = *tip;
	if (ti == NULL)
		return;
	*tip = NULL;
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &r->entries)
	{
		struct table_registry_entry *e = list_entry(l, struct table_registry_entry, link);
		if (e->ti != ti)
			continue;
		e->refs--;
		if (table_registry_retired(r, e))
			table_registry_close(r, e);
		return;
	}
	abort(); /* not one of ours: a programming error */
}

uv_loop_t *table_registry_loop(const struct table_registry *r)
{
	return r->loop;
}

unsigned table_registry_count(const struct table_registry *r)
{
	return r->n;
}

void table_registry_free(struct table_registry **rp)
{
	struct table_registry *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &r->entries)
		table_registry_close(r, list_entry(l, struct table_registry_entry, link));
	free(r);
}
