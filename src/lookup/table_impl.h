/* lookup/table_impl: what table.c and the backends (table_mysql.c) share.
 * Not for use outside src/lookup/. */
#ifndef SUBMITD_TABLE_IMPL_H
#define SUBMITD_TABLE_IMPL_H

#include <stdbool.h>
#include "lookup/table.h"

struct table_mysql;      /* parsed .cf (immutable) */
struct table_mysql_inst; /* per-worker connections */

enum table_req_where {
	TABLE_REQ_READY,   /* result known, waiting on the deferred queue */
	TABLE_REQ_QUEUED,  /* waiting for a backend connection */
	TABLE_REQ_ACTIVE,  /* being executed on a backend connection */
};

struct table_req {
	struct table_inst *ti;
	table_cb *cb; /* NULL once cancelled */
	void *ctx;
	char *key;    /* lower-cased, NUL-terminated */
	enum table_req_where where;
	enum table_status status;
	char *value;  /* owned; NULL unless TABLE_OK */
	struct table_req *prev, *next;
	int attempts; /* backend tries (one retry after a stale connection) */
	uint64_t deadline; /* uv_now() by which a QUEUED request gives up */
};

/* Backend → table.c: the request is finished. Stores the answer in the cache
 * (unless cancelled or TEMPFAIL), calls the callback unless cancelled, frees
 * req. value may be NULL; it is copied. */
void table_req_finish(struct table_req *req, enum table_status status, const char *value);

/* The loop and a handle counter: backends register every uv handle they
 * init with table_inst_handle_opened() and call table_inst_handle_closed()
 * from its close callback, so the instance is freed only after the last. */
uv_loop_t *table_inst_loop(struct table_inst *ti);
void table_inst_handle_opened(struct table_inst *ti);
void table_inst_handle_closed(struct table_inst *ti);
void table_inst_count_backend(struct table_inst *ti);
void table_inst_count_connect(struct table_inst *ti);
struct table_mysql_inst *table_inst_mysql(struct table_inst *ti);

/* table_mysql.c */
struct table_mysql *table_mysql_parse(const char *text, size_t len, const char *origin,
				      char *err, size_t errlen);
void table_mysql_free(struct table_mysql **mp);
struct table_mysql_inst *table_mysql_inst_new(const struct table_mysql *m, struct table_inst *ti);
/* Drops every request without calling back and closes the connections. */
void table_mysql_inst_close(struct table_mysql_inst **mip);
/* Takes ownership of req until table_req_finish(). May finish synchronously
 * only through table.c's deferral (it never calls table_req_finish inline). */
void table_mysql_lookup(struct table_mysql_inst *mi, struct table_req *req);
/* req is QUEUED or ACTIVE: unlink it (QUEUED) or orphan it (ACTIVE). Returns
 * true if the caller may free req now. */
bool table_mysql_cancel(struct table_mysql_inst *mi, struct table_req *req);
/* Deferred completion hook: finish req via the ready queue (not inline). */
void table_req_defer(struct table_req *req, enum table_status status, const char *value);

#endif
