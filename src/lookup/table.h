/* lookup/table: Postfix-style lookup tables ("type:name"), answered async.
 *
 * Two halves, by lifetime (docs/design.md §3):
 *
 *   struct table       the parsed, validated, immutable definition. Built by
 *                      table_open() at configuration load (or reload) on the
 *                      main thread, then shared read-only by every worker.
 *                      Freed with table_free() after every instance is gone.
 *   struct table_inst  the per-worker runtime: MySQL connections, the cache,
 *                      the deferred-completion queue. Lives on one uv_loop_t
 *                      and is only ever touched from that loop's thread.
 *
 * Types:
 *   texthash:/path   flat "key value" file, read into memory at open.
 *                    Postfix texthash(5) format: '#' comment lines (first
 *                    non-blank character), blank lines ignored, a line that
 *                    starts with whitespace continues the previous one, key
 *                    and value separated by whitespace (or "key: value"),
 *                    keys lower-cased, a repeated key is an error.
 *   inline:{k=v, { k = v with spaces }, ...}
 *                    the same, written inline (Postfix inline_table(5)).
 *   static:value     every key maps to value ("static:{a b}" for spaces).
 *   fail:name        every lookup is a temporary failure (for tests and for
 *                    parking a map; Postfix fail_table(5)).
 *   mysql:/path.cf   a Postfix mysql_table(5) file, used unchanged; see
 *                    table_mysql_cf.c for the keys and the few documented
 *                    deviations.
 * Each type is a row of the backend interface (table_backend.h).
 *
 * Keys are lower-cased (ASCII) before the lookup, as Postfix does for maps
 * opened with DICT_FLAG_FOLD_FIX. A key containing NUL (table_lookupn) is
 * answered NOTFOUND without asking the backend: no Postfix table can hold one.
 *
 * Results (docs/design.md §9.7): TABLE_OK with the value, TABLE_NOTFOUND, or
 * TABLE_TEMPFAIL (backend down, slow, or erroring: the caller answers 4xx,
 * docs/design.md invariant 4). A lookup returning several values (several SQL rows
 * or columns) yields them joined with ',' as Postfix does.
 *
 * Async contract (docs/design.md §9.8, §9.9 and invariant 9):
 *   - table_lookup() never calls the callback before it returns, not even for
 *     a cache or in-memory hit: the completion is deferred to the loop.
 *   - Every request completes exactly once, unless cancelled first; after
 *     table_cancel() the callback never fires.
 *   - Every backend request has a deadline; when a connection drops, every
 *     request on it completes with TABLE_TEMPFAIL.
 *   - The request handle is valid from table_lookup() until the callback
 *     starts or table_cancel() returns; do not cancel from inside the
 *     request's own callback.
 *   - The value string passed to the callback is valid only during it.
 */
#ifndef SUBMITD_TABLE_H
#define SUBMITD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum table_status {
	TABLE_OK = 0,
	TABLE_NOTFOUND,
	TABLE_TEMPFAIL,
};

struct table;
struct table_inst;
struct table_req;

typedef void table_cb(void *ctx, enum table_status status, const char *value);

/* Parses "type:name" and loads/validates the table. On error returns NULL
 * and writes a message into err (for files: "path:line: what"). */
struct table *table_open(const char *spec, char *err, size_t errlen);
/* Frees a definition. All instances made from it must be closed and their
 * loops run until the close completed. Sets *tp to NULL. */
void table_free(struct table **tp);
/* The spec as given to table_open(), e.g. "mysql:/etc/submitd/x.cf". */
const char *table_name(const struct table *t);
/* Nonzero for tables that answer from memory (texthash, inline, static, fail). */
int table_is_memory(const struct table *t);

/* Result cache in front of the table, per worker instance. TTLs in ms;
 * 0 disables caching that kind of answer. TEMPFAIL is never cached.
 * max_entries bounds the memory (oldest entries are evicted first).
 * Call before the table is shared (at configuration time). Default: off. */
struct table_cache_opts {
	uint64_t positive_ttl_ms;
	uint64_t negative_ttl_ms;
	size_t max_entries;
};
void table_set_cache(struct table *t, const struct table_cache_opts *opts);

/* Creates a per-worker instance on loop (no I/O yet: MySQL connects lazily).
 * t must outlive the instance. */
struct table_inst *table_inst_new(const struct table *t, uv_loop_t *loop);
/* Cancels every pending request (their callbacks never fire), closes the
 * connections and handles. Memory is released from the close callbacks, so
 * the loop must run once more. Sets *tip to NULL. */
void table_inst_close(struct table_inst **tip);
/* The same, then closed(ctx) once the instance's memory is gone (its last
 * close callback ran): from then on its table may be freed. */
void table_inst_close_notify(struct table_inst **tip, void (*closed)(void *ctx), void *ctx);
const struct table *table_inst_table(const struct table_inst *ti);

/* Starts a lookup of the NUL-terminated key. Never returns NULL. */
struct table_req *table_lookup(struct table_inst *ti, const char *key, table_cb *cb, void *ctx);
/* Same with an explicit length (a key containing NUL is NOTFOUND). */
struct table_req *table_lookupn(struct table_inst *ti, const char *key, size_t keylen, table_cb *cb,
				void *ctx);
/* Cancels a pending request; its callback will not fire. Sets *rp to NULL.
 * A NULL *rp is ignored. */
void table_cancel(struct table_req **rp);

/* Counters, per instance, for tests and the status line. */
struct table_stats {
	uint64_t lookups;    /* table_lookup() calls */
	uint64_t cache_hits; /* answered from the cache */
	uint64_t backend;    /* queries sent to the backend (SQL statements) */
	uint64_t tempfails;  /* answered TEMPFAIL */
	uint64_t connects;   /* backend connections established */
};
void table_inst_stats(const struct table_inst *ti, struct table_stats *stats_r);

/* Replaces the clock the cache uses (default uv_now(loop)). For tests. */
typedef uint64_t table_clock_fn(void *ctx);
void table_inst_set_clock(struct table_inst *ti, table_clock_fn *fn, void *ctx);

/* Synchronous lookup for memory tables only (texthash, inline, static, fail):
 * returns the status and points *value_r at the stored value (valid while
 * t lives). For a mysql table returns TABLE_TEMPFAIL. Used by config checks
 * and by tests; the key is lower-cased first. */
enum table_status table_lookup_sync(const struct table *t, const char *key, const char **value_r);

/* Calls fn with every key and value of a memory table (texthash, hash,
 * btree, inline; static: "*" and its one value), in no particular order,
 * until fn returns false; returns false then, else true. Other types: true
 * without a call. For checks at load time (generic_maps' values). */
typedef bool table_each_fn(void *ctx, const char *key, const char *value);
bool table_each_value(const struct table *t, table_each_fn *fn, void *ctx);

/* Parses the text of a table file without touching the file system (the
 * fuzz target and tests use this): type is "texthash" or "mysql", origin is
 * the name used in error messages. Same result as table_open(). */
struct table *table_open_text(const char *type, const char *text, size_t len, const char *origin,
			      char *err, size_t errlen);

#endif
