/* lookup/table_backend: the interface between table.c and the table types.
 * Not for use outside src/lookup/.
 *
 * A table type is one `struct table_backend` row (its "type:" prefix and
 * its functions) in table.c's list of backends; table.c does everything
 * common (spec parsing, reading files at load time, the per-worker cache,
 * deferred completion, counters) and dispatches through the row only. A new
 * type (pgsql:, ldap:) is one file defining a row plus one line in that list
 * (docs/design.md §5).
 *
 * Two kinds:
 *   memory   answers from the parsed definition (get); table.c completes
 *            the lookup on the next loop turn. table_lookup_sync() works.
 *   async    has a per-worker instance (inst_new) that takes requests
 *            (lookup) and finishes each one exactly once with
 *            table_req_finish() or table_req_defer(), never inside lookup
 *            itself (docs/design.md §9.9).
 */
#ifndef SUBMITD_TABLE_BACKEND_H
#define SUBMITD_TABLE_BACKEND_H

#include <stdbool.h>

#include "core/defer.h"
#include "core/list.h"
#include "lookup/table.h"

enum table_req_where {
	TABLE_REQ_READY,  /* result known, waiting on the deferred queue */
	TABLE_REQ_QUEUED, /* waiting for a backend connection */
	TABLE_REQ_ACTIVE, /* being executed on a backend connection */
};

struct table_req {
	struct table_inst *ti;
	table_cb *cb; /* NULL once cancelled */
	void *ctx;
	char *key; /* lower-cased, NUL-terminated */
	enum table_req_where where;
	enum table_status status;
	char *value;             /* owned; NULL unless TABLE_OK */
	struct defer_item ready; /* READY: on the instance's deferred queue */
	struct list_link link;   /* QUEUED: on the backend's queue */
	int attempts;            /* backend tries (one retry after a stale connection) */
	uint64_t deadline;       /* uv_now() by which a QUEUED request gives up */
	uint64_t sent_ns;        /* uv_hrtime() at the lookup (core/metrics.h) */
};

struct table_backend {
	const char *type; /* the prefix before ':' */
	/* The argument names a file, read by table.c at load time; parse gets
	 * its text and the path as origin. Otherwise parse gets the argument
	 * itself (inline:{...}, static:...), origin the whole spec. */
	bool file;
	/* Parses the definition: backend data (never NULL on success: return
	 * any non-NULL pointer when there is nothing to keep), or NULL with a
	 * message in err ("origin:line: what" for files). */
	void *(*parse)(const char *text, size_t len, const char *origin, char *err, size_t errlen);
	void (*free)(void *def);
	/* memory: the answer for a lower-cased key; *value_r points into def. */
	enum table_status (*get)(const void *def, const char *key, const char **value_r);
	/* async: a per-worker instance on ti's loop. */
	void *(*inst_new)(const void *def, struct table_inst *ti);
	/* Drops every request without calling back and closes the connections;
	 * handles are counted with table_inst_handle_opened/closed. */
	void (*inst_close)(void *inst);
	/* Takes ownership of req until table_req_finish()/table_req_defer(). */
	void (*lookup)(void *inst, struct table_req *req);
	/* req is QUEUED or ACTIVE: unlink it (QUEUED) or orphan it (ACTIVE).
	 * Returns true if the caller may free req now. */
	bool (*cancel)(void *inst, struct table_req *req);
};

/* The rows (table.c lists them). */
extern const struct table_backend table_backend_texthash, table_backend_inline,
	table_backend_static, table_backend_fail, table_backend_mysql, table_backend_hash,
	table_backend_btree;

/* The immutable string→string map the memory rows answer from
 * (table_memory.c); file formats other than text (table_db.c) fill one too.
 * table_hash_put takes ownership of key and value and returns false (taking
 * nothing) when the key is there already. As a row's def: free and get. */
struct table_hash;
struct table_hash *table_hash_new(void);
bool table_hash_put(struct table_hash *h, char *key, char *value);
void table_hash_free(struct table_hash **hp);
void table_hash_free_row(void *def);
enum table_status table_hash_get_row(const void *def, const char *key, const char **value_r);
bool table_hash_each(const void *def, table_each_fn *fn, void *ctx);

/* Backend → table.c: the request is finished. Stores the answer in the cache
 * (unless cancelled or TEMPFAIL), calls the callback unless cancelled, frees
 * req. value may be NULL; it is copied. */
void table_req_finish(struct table_req *req, enum table_status status, const char *value);
/* The same, from the next loop turn (for answers known inside lookup). */
void table_req_defer(struct table_req *req, enum table_status status, const char *value);
/* Frees a request the backend drops without answering (instance closing). */
void table_req_free(struct table_req *req);

/* The loop and a handle counter: backends register every uv handle they
 * init with table_inst_handle_opened() and call table_inst_handle_closed()
 * from its close callback, so the instance is freed only after the last. */
uv_loop_t *table_inst_loop(struct table_inst *ti);
void table_inst_handle_opened(struct table_inst *ti);
void table_inst_handle_closed(struct table_inst *ti);
/* Counters (table_stats). */
void table_inst_count_backend(struct table_inst *ti);
void table_inst_count_connect(struct table_inst *ti);

/* Helpers shared by the parsers. */
void table_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
bool table_isspace(int c);
void table_lower(char *s);
uint64_t table_fnv(const char *s); /* FNV-1a, for hash tables */

/* The lines of a table file (texthash(5), mysql_table(5)): each call gives
 * the next one that is neither blank nor a '#' comment, without its '\n',
 * and how much whitespace it starts with (a continuation when > 0). */
struct table_lines {
	const char *text;
	size_t len, pos;
	unsigned lineno; /* of the line just returned */
};
bool table_lines_next(struct table_lines *it, const char **line_r, size_t *len_r, size_t *indent_r);

#endif
