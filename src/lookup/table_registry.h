/* lookup/table_registry: a worker's table instances, one per (configuration
 * snapshot, table), shared by every session and transaction of that
 * snapshot on the worker (docs/design.md §3).
 *
 * Lifetime, the one rule: an instance lives while a user holds a reference
 * (table_registry_get() until table_registry_put()) or while its snapshot is
 * the worker's current one (or one of its listener snapshots,
 * config_is_part_of()). Once neither holds, it closes; the registry holds a
 * reference on the snapshot (which owns the table definition) until the
 * instance's memory is gone, so a definition never goes before its
 * instances (lookup/table.h). Only ever used on the worker's loop. */
#ifndef SUBMITD_TABLE_REGISTRY_H
#define SUBMITD_TABLE_REGISTRY_H

#include <uv.h>

#include "core/config.h"
#include "lookup/table.h"

struct table_registry;

struct table_registry *table_registry_new(uv_loop_t *loop);
/* Closes every instance. Every reference must have been put back; memory
 * goes from close callbacks, so run the loop once more. Sets *rp to NULL. */
void table_registry_free(struct table_registry **rp);

/* The worker's snapshot for new sessions is now cur (NULL: none). Unused
 * instances of other snapshots close now. */
void table_registry_set_current(struct table_registry *r, const struct config *cur);

/* A reference to the worker's instance of t, a table of snapshot cfg (made
 * on first use). Never NULL. */
struct table_inst *table_registry_get(struct table_registry *r, struct config *cfg,
				      const struct table *t);
/* Gives a reference back; the caller's requests on it must be finished or
 * cancelled. Sets *tip to NULL; a NULL *tip is ignored. */
void table_registry_put(struct table_registry *r, struct table_inst **tip);

uv_loop_t *table_registry_loop(const struct table_registry *r);
/* Instances open now (for tests and the shutdown log). */
unsigned table_registry_count(const struct table_registry *r);

#endif
