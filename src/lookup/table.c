/* lookup/table: table definitions, the per-worker runtime (deferred
 * completions, cache, counters) and dispatch to the backends through their
 * rows (table_backend.h). Contract in table.h. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "lookup/table.h"
#include "lookup/table_backend.h"

/* Every table type; table_open() picks the row by the spec's prefix. */
static const struct table_backend *const table_backends[] = {
	&table_backend_texthash, &table_backend_inline, &table_backend_static, &table_backend_fail,
	&table_backend_mysql,    &table_backend_hash,   &table_backend_btree,
};
#define TABLE_NBACKENDS (sizeof(table_backends) / sizeof(table_backends[0]))

struct table {
	char *spec;
	const struct table_backend *be;
	void *def; /* the backend's parsed definition */
	struct table_cache_opts cache;
};

struct table_cache_entry {
	char *key;
	enum table_status status; /* OK or NOTFOUND */
	char *value;
	uint64_t expires;
	struct table_cache_entry *hnext; /* bucket chain */
	struct list_link age;            /* on table_cache.by_age */
};

struct table_cache {
	size_t nbuckets, count;
	struct table_cache_entry **buckets;
	struct list_link by_age; /* oldest first; evicted from the front */
};

struct table_inst {
	const struct table *t;
	uv_loop_t *loop;
	struct defer_queue ready; /* answers delivered on the next loop turn */
	struct table_cache cache;
	void *be_inst; /* the backend's instance (async backends) */
	struct table_stats stats;
	table_clock_fn *clock;
	void *clock_ctx;
	unsigned handles; /* uv handles not yet closed */
	bool closing;
	void (*closed)(void *ctx);
	void *closed_ctx;
};

/* ------------------------------------------------------------------ */
/* helpers shared with the backends */

uint64_t table_fnv(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void table_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

bool table_isspace(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

void table_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

bool table_lines_next(struct table_lines *it, const char **line_r, size_t *len_r, size_t *indent_r)
{
	while (it->pos < it->len) {
		const char *nl = memchr(it->text + it->pos, '\n', it->len - it->pos);
		size_t end = nl ? (size_t)(nl - it->text) : it->len;
		const char *line = it->text + it->pos;
		size_t llen = end - it->pos;
		it->pos = nl ? end + 1 : it->len;
		it->lineno++;
		size_t i = 0;
		while (i < llen && table_isspace((unsigned char)line[i]))
			i++;
		if (i == llen || line[i] == '#')
			continue; /* blank or comment: skipped, even inside a continuation */
		*line_r = line;
		*len_r = llen;
		*indent_r = i;
		return true;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* open / free */

static const struct table_backend *table_backend_find(const char *type, size_t len)
{
	for (size_t i = 0; i < TABLE_NBACKENDS; i++)
		if (strlen(table_backends[i]->type) == len &&
		    memcmp(table_backends[i]->type, type, len) == 0)
			return table_backends[i];
	return NULL;
}

static struct table *table_parse(const struct table_backend *be, const char *spec, const char *text,
				 size_t len, const char *origin, char *err, size_t errlen)
{
	void *def = be->parse(text, len, origin, err, errlen);
	if (def == NULL)
		return NULL;
	struct table *t = xcalloc(1, sizeof(*t));
	t->spec = xstrdup(spec);
	t->be = be;
	t->def = def;
	return t;
}

static bool table_read_file(const char *path, struct buf *out, char *err, size_t errlen)
{
	/* Called at configuration load on the main thread, never on a worker loop. */
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		table_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return false;
	}
	for (;;) {
		uint8_t *w = buf_reserve(out, 8192);
		size_t n = fread(w, 1, 8192, f);
		buf_commit(out, n);
		if (n < 8192)
			break;
		if (buf_len(out) > (64u << 20)) {
			table_seterr(err, errlen, "%s: file too large", path);
			fclose(f);
			return false;
		}
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		table_seterr(err, errlen, "%s: read error", path);
		return false;
	}
	return true;
}

struct table *table_open_text(const char *type, const char *text, size_t len, const char *origin,
			      char *err, size_t errlen)
{
	const struct table_backend *be = table_backend_find(type, strlen(type));
	if (be == NULL || !be->file) {
		table_seterr(err, errlen, "%s: unsupported table type \"%s\"", origin, type);
		return NULL;
	}
	char spec[512];
	snprintf(spec, sizeof(spec), "%s:%s", type, origin);
	return table_parse(be, spec, text, len, origin, err, errlen);
}

struct table *table_open(const char *spec, char *err, size_t errlen)
{
	const char *colon = strchr(spec, ':');
	if (colon == NULL || colon == spec) {
		char types[256] = "";
		for (size_t i = 0; i < TABLE_NBACKENDS; i++)
			snprintf(types + strlen(types), sizeof(types) - strlen(types), "%s%s",
				 i ? ", " : "", table_backends[i]->type);
		table_seterr(err, errlen, "%s: table name must be type:name (%s)", spec, types);
		return NULL;
	}
	size_t tlen = (size_t)(colon - spec);
	const char *arg = colon + 1;
	const struct table_backend *be = table_backend_find(spec, tlen);
	if (be == NULL) {
		/* Postfix's other indexed types: point at what does the same job. */
		static const char *const postmapped[] = {"dbm", "sdbm", "lmdb", "cdb"};
		const char *hint = "";
		for (size_t i = 0; i < sizeof(postmapped) / sizeof(postmapped[0]); i++)
			if (strlen(postmapped[i]) == tlen &&
			    strncasecmp(spec, postmapped[i], tlen) == 0)
				hint = " (run postmap hash:FILE and name hash:FILE, or name the "
				       "source file as texthash:FILE)";
		table_seterr(err, errlen, "%s: unsupported table type \"%.*s\"%s", spec, (int)tlen,
			     spec, hint);
		return NULL;
	}
	if (!be->file)
		return table_parse(be, spec, arg, strlen(arg), spec, err, errlen);
	if (*arg == 0) {
		table_seterr(err, errlen, "%s: missing file name", spec);
		return NULL;
	}
	struct buf b = BUF_INIT;
	struct table *t = NULL;
	if (table_read_file(arg, &b, err, errlen))
		t = table_parse(be, spec, buf_len(&b) ? (const char *)buf_data(&b) : "",
				buf_len(&b), arg, err, errlen);
	buf_wipe(&b); /* a .cf file holds a password */
	return t;
}

void table_free(struct table **tp)
{
	struct table *t = *tp;
	if (t == NULL)
		return;
	t->be->free(t->def);
	free(t->spec);
	free(t);
	*tp = NULL;
}

const char *table_name(const struct table *t)
{
	return t->spec;
}

int table_is_memory(const struct table *t)
{
	return t->be->get != NULL;
}

void table_set_cache(struct table *t, const struct table_cache_opts *opts)
{
	t->cache = *opts;
	if (t->cache.max_entries == 0)
		t->cache.max_entries = 1000;
}

enum table_status table_lookup_sync(const struct table *t, const char *key, const char **value_r)
{
	*value_r = NULL;
	if (t->be->get == NULL)
		return TABLE_TEMPFAIL;
	char *lkey = xstrdup(key);
	table_lower(lkey);
	enum table_status st = t->be->get(t->def, lkey, value_r);
	free(lkey);
	return st;
}

bool table_each_value(const struct table *t, table_each_fn *fn, void *ctx)
{
	if (t->be->get == table_hash_get_row)
		return table_hash_each(t->def, fn, ctx);
	const char *value;
	if (t->be == &table_backend_static && t->be->get(t->def, "", &value) == TABLE_OK)
		return fn(ctx, "*", value);
	return true;
}

/* ------------------------------------------------------------------ */
/* cache */

static uint64_t table_inst_now(struct table_inst *ti)
{
	return ti->clock ? ti->clock(ti->clock_ctx) : uv_now(ti->loop);
}

static void table_cache_unlink(struct table_cache *c, struct table_cache_entry *e)
{
	size_t b = (size_t)table_fnv(e->key) & (c->nbuckets - 1);
	struct table_cache_entry **pp = &c->buckets[b];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	list_remove(&e->age);
	c->count--;
	free(e->key);
	free(e->value);
	free(e);
}

static struct table_cache_entry *table_cache_find(struct table_inst *ti, const char *key)
{
	struct table_cache *c = &ti->cache;
	if (c->nbuckets == 0)
		return NULL;
	size_t b = (size_t)table_fnv(key) & (c->nbuckets - 1);
	for (struct table_cache_entry *e = c->buckets[b]; e; e = e->hnext) {
		if (strcmp(e->key, key) != 0)
			continue;
		if (e->expires <= table_inst_now(ti)) {
			table_cache_unlink(c, e);
			return NULL;
		}
		return e;
	}
	return NULL;
}

static void table_cache_store(struct table_inst *ti, const char *key, enum table_status st,
			      const char *value)
{
	const struct table_cache_opts *o = &ti->t->cache;
	uint64_t ttl = st == TABLE_OK         ? o->positive_ttl_ms
		       : st == TABLE_NOTFOUND ? o->negative_ttl_ms
					      : 0;
	if (ttl == 0)
		return;
	struct table_cache *c = &ti->cache;
	if (c->nbuckets == 0) {
		c->nbuckets = 64;
		while (c->nbuckets < o->max_entries && c->nbuckets < (1u << 20))
			c->nbuckets *= 2;
		c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
		list_init(&c->by_age);
	}
	size_t b = (size_t)table_fnv(key) & (c->nbuckets - 1);
	for (struct table_cache_entry *e = c->buckets[b]; e; e = e->hnext) {
		if (strcmp(e->key, key) == 0) {
			table_cache_unlink(c, e);
			break;
		}
	}
	struct list_link *oldest;
	while (c->count >= o->max_entries && (oldest = list_first(&c->by_age)) != NULL)
		table_cache_unlink(c, list_entry(oldest, struct table_cache_entry, age));
	struct table_cache_entry *e = xcalloc(1, sizeof(*e));
	e->key = xstrdup(key);
	e->status = st;
	e->value = value ? xstrdup(value) : NULL;
	e->expires = table_inst_now(ti) + ttl;
	e->hnext = c->buckets[b];
	c->buckets[b] = e;
	list_add_tail(&c->by_age, &e->age);
	c->count++;
}

static void table_cache_clear(struct table_cache *c)
{
	struct list_link *l;
	while (c->nbuckets != 0 && (l = list_first(&c->by_age)) != NULL)
		table_cache_unlink(c, list_entry(l, struct table_cache_entry, age));
	free(c->buckets);
	c->buckets = NULL;
	c->nbuckets = 0;
}

/* ------------------------------------------------------------------ */
/* instance */

static void table_inst_maybe_free(struct table_inst *ti)
{
	if (ti->closing && ti->handles == 0) {
		void (*closed)(void *ctx) = ti->closed;
		void *ctx = ti->closed_ctx;
		table_cache_clear(&ti->cache);
		free(ti);
		if (closed != NULL)
			closed(ctx);
	}
}

void table_inst_handle_opened(struct table_inst *ti)
{
	ti->handles++;
}

void table_inst_handle_closed(struct table_inst *ti)
{
	ti->handles--;
	table_inst_maybe_free(ti);
}

uv_loop_t *table_inst_loop(struct table_inst *ti)
{
	return ti->loop;
}

void table_inst_count_backend(struct table_inst *ti)
{
	ti->stats.backend++;
}

void table_inst_count_connect(struct table_inst *ti)
{
	ti->stats.connects++;
}

static void table_inst_ready_closed(struct defer_queue *q)
{
	table_inst_handle_closed(list_entry(q, struct table_inst, ready));
}

struct table_inst *table_inst_new(const struct table *t, uv_loop_t *loop)
{
	struct table_inst *ti = xcalloc(1, sizeof(*ti));
	ti->t = t;
	ti->loop = loop;
	defer_queue_init(&ti->ready, loop);
	table_inst_handle_opened(ti);
	if (t->be->inst_new != NULL)
		ti->be_inst = t->be->inst_new(t->def, ti);
	return ti;
}

const struct table *table_inst_table(const struct table_inst *ti)
{
	return ti->t;
}

void table_req_free(struct table_req *req)
{
	free(req->key);
	free(req->value);
	free(req);
}

static void table_free_ready(struct list_link *head)
{
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, head)
	{
		struct defer_item *item = list_entry(l, struct defer_item, link);
		defer_cancel(item);
		table_req_free(list_entry(item, struct table_req, ready));
	}
}

void table_inst_close_notify(struct table_inst **tip, void (*closed)(void *ctx), void *ctx)
{
	struct table_inst *ti = *tip;
	if (ti == NULL)
		return;
	*tip = NULL;
	ti->closing = true;
	ti->closed = closed;
	ti->closed_ctx = ctx;
	/* the answers not yet delivered go without a callback */
	table_free_ready(&ti->ready.running);
	table_free_ready(&ti->ready.queued);
	if (ti->be_inst != NULL)
		ti->t->be->inst_close(ti->be_inst);
	ti->be_inst = NULL;
	defer_queue_close(&ti->ready, table_inst_ready_closed);
}

void table_inst_close(struct table_inst **tip)
{
	table_inst_close_notify(tip, NULL, NULL);
}

void table_inst_stats(const struct table_inst *ti, struct table_stats *stats_r)
{
	*stats_r = ti->stats;
}

void table_inst_set_clock(struct table_inst *ti, table_clock_fn *fn, void *ctx)
{
	ti->clock = fn;
	ti->clock_ctx = ctx;
}

/* The answer's turn has come (core/defer.h: only what was ready when the
 * turn began runs in it). */
static void table_req_ready_cb(struct defer_item *item)
{
	struct table_req *req = list_entry(item, struct table_req, ready);
	if (req->cb)
		req->cb(req->ctx, req->status, req->value);
	table_req_free(req);
}

/* submitd_lookup_latency_seconds and submitd_backend_up for a table that
 * is asked over the network (a memory table answers at once). */
static void table_metrics(struct table_req *req, enum table_status status)
{
	if (req->sent_ns == 0)
		return; /* answered from the cache */
	metrics_observe(METRICS_H_LOOKUP, "table", table_name(req->ti->t),
			uv_hrtime() - req->sent_ns);
	metrics_backend_up("table", table_name(req->ti->t), status != TABLE_TEMPFAIL);
	req->sent_ns = 0;
}

void table_req_defer(struct table_req *req, enum table_status status, const char *value)
{
	struct table_inst *ti = req->ti;
	req->status = status;
	free(req->value);
	req->value = value ? xstrdup(value) : NULL;
	if (status == TABLE_TEMPFAIL)
		ti->stats.tempfails++;
	if (ti->t->be->get == NULL) /* an external backend's answer or failure */
		table_metrics(req, status);
	req->where = TABLE_REQ_READY;
	defer_push(&ti->ready, &req->ready, table_req_ready_cb);
}

void table_req_finish(struct table_req *req, enum table_status status, const char *value)
{
	struct table_inst *ti = req->ti;
	table_cache_store(ti, req->key, status, value);
	if (status == TABLE_TEMPFAIL)
		ti->stats.tempfails++;
	table_metrics(req, status);
	if (req->cb)
		req->cb(req->ctx, status, value);
	table_req_free(req);
}

struct table_req *table_lookupn(struct table_inst *ti, const char *key, size_t keylen, table_cb *cb,
				void *ctx)
{
	struct table_req *req = xcalloc(1, sizeof(*req));
	req->ti = ti;
	req->cb = cb;
	req->ctx = ctx;
	req->key = xstrndup(key, keylen);
	table_lower(req->key);
	ti->stats.lookups++;

	if (memchr(key, 0, keylen) != NULL) {
		table_req_defer(req, TABLE_NOTFOUND, NULL);
		return req;
	}
	struct table_cache_entry *e = table_cache_find(ti, req->key);
	if (e != NULL) {
		ti->stats.cache_hits++;
		table_req_defer(req, e->status, e->value);
		return req;
	}
	const struct table *t = ti->t;
	if (t->be->get != NULL) {
		const char *value = NULL;
		enum table_status st = t->be->get(t->def, req->key, &value);
		table_cache_store(ti, req->key, st, value);
		table_req_defer(req, st, value);
		return req;
	}
	req->sent_ns = uv_hrtime();
	t->be->lookup(ti->be_inst, req);
	return req;
}

struct table_req *table_lookup(struct table_inst *ti, const char *key, table_cb *cb, void *ctx)
{
	return table_lookupn(ti, key, strlen(key), cb, ctx);
}

void table_cancel(struct table_req **rp)
{
	struct table_req *req = *rp;
	if (req == NULL)
		return;
	*rp = NULL;
	struct table_inst *ti = req->ti;
	req->cb = NULL;
	switch (req->where) {
	case TABLE_REQ_READY:
		defer_cancel(&req->ready);
		table_req_free(req);
		break;
	case TABLE_REQ_QUEUED:
	case TABLE_REQ_ACTIVE:
		if (ti->t->be->cancel(ti->be_inst, req))
			table_req_free(req);
		break;
	}
}
