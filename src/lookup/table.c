/* lookup/table: table definitions, memory tables, the per-worker runtime
 * (deferred completions, cache) and dispatch to backends. Contract in table.h. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "lookup/table.h"
#include "lookup/table_impl.h"

enum table_kind {
	TABLE_KIND_TEXTHASH,
	TABLE_KIND_INLINE,
	TABLE_KIND_STATIC,
	TABLE_KIND_FAIL,
	TABLE_KIND_MYSQL,
};

/* An immutable string→string map (open addressing, linear probing). */
struct table_hash {
	size_t count, cap; /* cap: power of two, > 2 * count */
	char **keys;
	char **values;
};

struct table {
	char *spec;
	enum table_kind kind;
	struct table_hash *hash;   /* texthash, inline */
	char *static_value;        /* static */
	struct table_mysql *mysql; /* mysql */
	struct table_cache_opts cache;
};

struct table_cache_entry {
	char *key;
	enum table_status status; /* OK or NOTFOUND */
	char *value;
	uint64_t expires;
	struct table_cache_entry *hnext;       /* bucket chain */
	struct table_cache_entry *older, *newer; /* insertion order */
};

struct table_cache {
	size_t nbuckets, count;
	struct table_cache_entry **buckets;
	struct table_cache_entry *oldest, *newest;
};

struct table_inst {
	const struct table *t;
	uv_loop_t *loop;
	uv_idle_t idle;           /* drains the ready queue on the next loop turn */
	struct table_req *ready_head, *ready_tail;
	struct table_cache cache;
	struct table_mysql_inst *mysql;
	struct table_stats stats;
	table_clock_fn *clock;
	void *clock_ctx;
	unsigned handles;         /* uv handles not yet closed */
	bool closing;
};

/* ------------------------------------------------------------------ */
/* helpers */

static uint64_t table_fnv(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static void table_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

static bool table_isspace(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static void table_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void table_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ */
/* table_hash */

static struct table_hash *table_hash_new(void)
{
	struct table_hash *h = xcalloc(1, sizeof(*h));
	h->cap = 16;
	h->keys = xcalloc(h->cap, sizeof(char *));
	h->values = xcalloc(h->cap, sizeof(char *));
	return h;
}

static size_t table_hash_slot(const struct table_hash *h, const char *key)
{
	size_t i = (size_t)table_fnv(key) & (h->cap - 1);
	while (h->keys[i] != NULL && strcmp(h->keys[i], key) != 0)
		i = (i + 1) & (h->cap - 1);
	return i;
}

static const char *table_hash_get(const struct table_hash *h, const char *key)
{
	size_t i = table_hash_slot(h, key);
	return h->keys[i] ? h->values[i] : NULL;
}

/* Takes ownership of key and value. Returns false (and frees nothing) if the
 * key exists. */
static bool table_hash_put(struct table_hash *h, char *key, char *value)
{
	if (2 * (h->count + 1) > h->cap) {
		struct table_hash old = *h;
		h->cap *= 2;
		h->keys = xcalloc(h->cap, sizeof(char *));
		h->values = xcalloc(h->cap, sizeof(char *));
		for (size_t j = 0; j < old.cap; j++) {
			if (old.keys[j] == NULL)
				continue;
			size_t k = table_hash_slot(h, old.keys[j]);
			h->keys[k] = old.keys[j];
			h->values[k] = old.values[j];
		}
		free(old.keys);
		free(old.values);
	}
	size_t i = table_hash_slot(h, key);
	if (h->keys[i] != NULL)
		return false;
	h->keys[i] = key;
	h->values[i] = value;
	h->count++;
	return true;
}

static void table_hash_free(struct table_hash **hp)
{
	struct table_hash *h = *hp;
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->cap; i++) {
		free(h->keys[i]);
		free(h->values[i]);
	}
	free(h->keys);
	free(h->values);
	free(h);
	*hp = NULL;
}

/* ------------------------------------------------------------------ */
/* texthash parser */

/* Splits one logical line into key and value the way Postfix's texthash
 * does: the key ends at the first unquoted, unescaped whitespace; the value
 * is the rest, trimmed. Returns an error string or NULL. */
static const char *table_split_line(char *line, char **key_r, char **value_r)
{
	bool quoted = false;
	char *p;
	for (p = line; *p; p++) {
		if (*p == '\\') {
			if (p[1] == 0)
				break;
			p++;
		} else if (*p == '"') {
			quoted = !quoted;
		} else if (table_isspace((unsigned char)*p) && !quoted) {
			break;
		}
	}
	if (quoted)
		return "unbalanced '\"' in key";
	char *value = p;
	if (*value)
		*value++ = 0;
	while (table_isspace((unsigned char)*value))
		value++;
	size_t vlen = strlen(value);
	while (vlen > 0 && table_isspace((unsigned char)value[vlen - 1]))
		value[--vlen] = 0;
	if (*line == 0 || *value == 0)
		return "expected format: key whitespace value";
	*key_r = line;
	*value_r = value;
	return NULL;
}

static bool table_hash_add_line(struct table_hash *h, char *line, const char *origin,
				unsigned lineno, char *err, size_t errlen)
{
	char *key, *value;
	const char *why = table_split_line(line, &key, &value);
	if (why != NULL) {
		table_seterr(err, errlen, "%s:%u: %s", origin, lineno, why);
		return false;
	}
	size_t klen = strlen(key);
	/* Postfix accepts "key: value" too (with a warning); the colon then is part of the key,
	 * which is never what was meant, so we drop it. */
	if (klen > 1 && key[klen - 1] == ':')
		key[--klen] = 0;
	char *k = xstrdup(key);
	table_lower(k);
	char *v = xstrdup(value);
	if (!table_hash_put(h, k, v)) {
		/* Postfix warns and keeps the first; for an ownership map a second
		 * line is almost always a mistake that would silently lock someone
		 * out, so it is an error here. */
		table_seterr(err, errlen,
			     "%s:%u: duplicate key \"%s\" (put several values on one line, "
			     "separated by commas)", origin, lineno, k);
		free(k);
		free(v);
		return false;
	}
	return true;
}

static struct table_hash *table_hash_parse(const char *text, size_t len, const char *origin,
					   char *err, size_t errlen)
{
	struct table_hash *h = table_hash_new();
	struct buf logical = BUF_INIT;
	unsigned logical_line = 0, lineno = 0;
	size_t pos = 0;
	bool ok = true;

	if (memchr(text, 0, len) != NULL) {
		/* find the line for the message */
		const char *z = memchr(text, 0, len);
		unsigned ln = 1;
		for (const char *q = text; q < z; q++)
			ln += *q == '\n';
		table_seterr(err, errlen, "%s:%u: NUL byte in file", origin, ln);
		table_hash_free(&h);
		return NULL;
	}
	while (ok && pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		const char *line = text + pos;
		size_t llen = end - pos;
		pos = nl ? end + 1 : len;
		lineno++;
		if (llen > 0 && line[llen - 1] == '\r')
			llen--;
		size_t i = 0;
		while (i < llen && table_isspace((unsigned char)line[i]))
			i++;
		if (i == llen || line[i] == '#')
			continue; /* blank or comment: skipped, even inside a continuation */
		if (i > 0) {
			if (logical_line == 0) {
				table_seterr(err, errlen,
					     "%s:%u: continuation line (starts with whitespace) "
					     "without a preceding line", origin, lineno);
				ok = false;
				break;
			}
			buf_append(&logical, " ", 1);
			buf_append(&logical, line + i, llen - i);
			continue;
		}
		if (logical_line != 0) {
			buf_append(&logical, "", 1);
			ok = table_hash_add_line(h, (char *)buf_data(&logical), origin, logical_line,
						 err, errlen);
			buf_reset(&logical);
		}
		logical_line = lineno;
		buf_append(&logical, line, llen);
	}
	if (ok && logical_line != 0) {
		buf_append(&logical, "", 1);
		ok = table_hash_add_line(h, (char *)buf_data(&logical), origin, logical_line, err,
					 errlen);
	}
	buf_free(&logical);
	if (!ok)
		table_hash_free(&h);
	return h;
}

/* ------------------------------------------------------------------ */
/* inline:{...} and static:{...} */

/* Strips one level of { } around s (in place) if present; returns NULL on
 * unbalanced braces. Whitespace around and inside the braces is trimmed. */
static char *table_unbrace(char *s)
{
	while (table_isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && table_isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	if (*s != '{')
		return s;
	if (n < 2 || s[n - 1] != '}')
		return NULL;
	s[n - 1] = 0;
	s++;
	while (table_isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n > 0 && table_isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

static struct table_hash *table_inline_parse(const char *arg, char *err, size_t errlen)
{
	char *copy = xstrdup(arg);
	char *body = NULL;
	struct table_hash *h = table_hash_new();
	if (copy[strspn(copy, " \t")] != '{' || (body = table_unbrace(copy)) == NULL) {
		table_seterr(err, errlen, "inline:%s: expected inline:{ key=value, ... }", arg);
		goto fail;
	}
	char *p = body;
	while (*p) {
		while (*p == ',' || table_isspace((unsigned char)*p))
			p++;
		if (*p == 0)
			break;
		char *item = p;
		if (*p == '{') {
			int depth = 0;
			for (; *p; p++) {
				if (*p == '{')
					depth++;
				else if (*p == '}' && --depth == 0)
					break;
			}
			if (*p != '}') {
				table_seterr(err, errlen, "inline:%s: unbalanced '{'", arg);
				goto fail;
			}
			*p++ = 0;
			item++;
		} else {
			while (*p && *p != ',' && !table_isspace((unsigned char)*p)) {
				if (*p == '{' || *p == '}') {
					table_seterr(err, errlen, "inline:%s: unexpected brace", arg);
					goto fail;
				}
				p++;
			}
			if (*p)
				*p++ = 0;
		}
		char *eq = strchr(item, '=');
		if (eq == NULL) {
			table_seterr(err, errlen, "inline:%s: missing '=' in \"%s\"", arg, item);
			goto fail;
		}
		*eq = 0;
		char *k = table_unbrace(item), *v = table_unbrace(eq + 1);
		if (k == NULL || v == NULL || *k == 0 || *v == 0) {
			table_seterr(err, errlen, "inline:%s: empty key or value", arg);
			goto fail;
		}
		char *kk = xstrdup(k), *vv = xstrdup(v);
		table_lower(kk);
		if (!table_hash_put(h, kk, vv)) {
			/* table_hash_put leaves ownership with us on failure */
			table_seterr(err, errlen, "inline:%s: duplicate key \"%s\"", arg, kk);
			free(kk);
			free(vv);
			goto fail;
		}
	}
	free(copy);
	return h;
fail:
	free(copy);
	table_hash_free(&h);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* open / free */

static struct table *table_new(const char *spec, enum table_kind kind)
{
	struct table *t = xcalloc(1, sizeof(*t));
	t->spec = xstrdup(spec);
	t->kind = kind;
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

struct table *table_open_text(const char *type, const char *text, size_t len,
			      const char *origin, char *err, size_t errlen)
{
	char spec[512];
	snprintf(spec, sizeof(spec), "%s:%s", type, origin);
	if (strcmp(type, "texthash") == 0) {
		struct table_hash *h = table_hash_parse(text, len, origin, err, errlen);
		if (h == NULL)
			return NULL;
		struct table *t = table_new(spec, TABLE_KIND_TEXTHASH);
		t->hash = h;
		return t;
	}
	if (strcmp(type, "mysql") == 0) {
		struct table_mysql *m = table_mysql_parse(text, len, origin, err, errlen);
		if (m == NULL)
			return NULL;
		struct table *t = table_new(spec, TABLE_KIND_MYSQL);
		t->mysql = m;
		return t;
	}
	table_seterr(err, errlen, "%s: unsupported table type \"%s\"", origin, type);
	return NULL;
}

struct table *table_open(const char *spec, char *err, size_t errlen)
{
	const char *colon = strchr(spec, ':');
	if (colon == NULL || colon == spec) {
		table_seterr(err, errlen,
			     "%s: table name must be type:name (texthash, inline, static, fail, mysql)",
			     spec);
		return NULL;
	}
	size_t tlen = (size_t)(colon - spec);
	const char *arg = colon + 1;
	struct table *t = NULL;

#define TYPE_IS(s) (tlen == sizeof(s) - 1 && memcmp(spec, s, tlen) == 0)
	if (TYPE_IS("texthash") || TYPE_IS("mysql")) {
		if (*arg == 0) {
			table_seterr(err, errlen, "%s: missing file name", spec);
			return NULL;
		}
		struct buf b = BUF_INIT;
		if (!table_read_file(arg, &b, err, errlen)) {
			buf_free(&b);
			return NULL;
		}
		char type[16];
		memcpy(type, spec, tlen);
		type[tlen] = 0;
		t = table_open_text(type, buf_len(&b) ? (const char *)buf_data(&b) : "", buf_len(&b),
				    arg, err, errlen);
		buf_wipe(&b); /* a .cf file holds a password */
		if (t != NULL) {
			free(t->spec);
			t->spec = xstrdup(spec);
		}
		return t;
	}
	if (TYPE_IS("inline")) {
		struct table_hash *h = table_inline_parse(arg, err, errlen);
		if (h == NULL)
			return NULL;
		t = table_new(spec, TABLE_KIND_INLINE);
		t->hash = h;
		return t;
	}
	if (TYPE_IS("static")) {
		char *copy = xstrdup(arg);
		char *v = table_unbrace(copy);
		if (v == NULL || *v == 0) {
			table_seterr(err, errlen, "%s: expected static:value or static:{ value }", spec);
			free(copy);
			return NULL;
		}
		t = table_new(spec, TABLE_KIND_STATIC);
		t->static_value = xstrdup(v);
		free(copy);
		return t;
	}
	if (TYPE_IS("fail"))
		return table_new(spec, TABLE_KIND_FAIL);
#undef TYPE_IS
	table_seterr(err, errlen, "%s: unsupported table type \"%.*s\"", spec, (int)tlen, spec);
	return NULL;
}

void table_free(struct table **tp)
{
	struct table *t = *tp;
	if (t == NULL)
		return;
	table_hash_free(&t->hash);
	free(t->static_value);
	if (t->mysql)
		table_mysql_free(&t->mysql);
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
	return t->kind != TABLE_KIND_MYSQL;
}

void table_set_cache(struct table *t, const struct table_cache_opts *opts)
{
	t->cache = *opts;
	if (t->cache.max_entries == 0)
		t->cache.max_entries = 1000;
}

static enum table_status table_memory_get(const struct table *t, const char *lkey,
					  const char **value_r)
{
	*value_r = NULL;
	switch (t->kind) {
	case TABLE_KIND_TEXTHASH:
	case TABLE_KIND_INLINE:
		*value_r = table_hash_get(t->hash, lkey);
		return *value_r ? TABLE_OK : TABLE_NOTFOUND;
	case TABLE_KIND_STATIC:
		*value_r = t->static_value;
		return TABLE_OK;
	case TABLE_KIND_FAIL:
	case TABLE_KIND_MYSQL:
		break;
	}
	return TABLE_TEMPFAIL;
}

enum table_status table_lookup_sync(const struct table *t, const char *key, const char **value_r)
{
	char *lkey = xstrdup(key);
	table_lower(lkey);
	enum table_status st = table_memory_get(t, lkey, value_r);
	free(lkey);
	return st;
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
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
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
	uint64_t ttl = st == TABLE_OK ? o->positive_ttl_ms
		     : st == TABLE_NOTFOUND ? o->negative_ttl_ms : 0;
	if (ttl == 0)
		return;
	struct table_cache *c = &ti->cache;
	if (c->nbuckets == 0) {
		c->nbuckets = 64;
		while (c->nbuckets < o->max_entries && c->nbuckets < (1u << 20))
			c->nbuckets *= 2;
		c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
	}
	size_t b = (size_t)table_fnv(key) & (c->nbuckets - 1);
	for (struct table_cache_entry *e = c->buckets[b]; e; e = e->hnext) {
		if (strcmp(e->key, key) == 0) {
			table_cache_unlink(c, e);
			break;
		}
	}
	while (c->count >= o->max_entries && c->oldest)
		table_cache_unlink(c, c->oldest);
	struct table_cache_entry *e = xcalloc(1, sizeof(*e));
	e->key = xstrdup(key);
	e->status = st;
	e->value = value ? xstrdup(value) : NULL;
	e->expires = table_inst_now(ti) + ttl;
	e->hnext = c->buckets[b];
	c->buckets[b] = e;
	e->older = c->newest;
	if (c->newest)
		c->newest->newer = e;
	else
		c->oldest = e;
	c->newest = e;
	c->count++;
}

static void table_cache_clear(struct table_cache *c)
{
	while (c->oldest)
		table_cache_unlink(c, c->oldest);
	free(c->buckets);
	c->buckets = NULL;
	c->nbuckets = 0;
}

/* ------------------------------------------------------------------ */
/* instance */

static void table_inst_maybe_free(struct table_inst *ti)
{
	if (ti->closing && ti->handles == 0) {
		table_cache_clear(&ti->cache);
		free(ti);
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

struct table_mysql_inst *table_inst_mysql(struct table_inst *ti)
{
	return ti->mysql;
}

static void table_inst_idle_closed(uv_handle_t *h)
{
	table_inst_handle_closed(h->data);
}

struct table_inst *table_inst_new(const struct table *t, uv_loop_t *loop)
{
	struct table_inst *ti = xcalloc(1, sizeof(*ti));
	ti->t = t;
	ti->loop = loop;
	uv_idle_init(loop, &ti->idle);
	ti->idle.data = ti;
	table_inst_handle_opened(ti);
	if (t->kind == TABLE_KIND_MYSQL)
		ti->mysql = table_mysql_inst_new(t->mysql, ti);
	return ti;
}

const struct table *table_inst_table(const struct table_inst *ti)
{
	return ti->t;
}

static void table_ready_unlink(struct table_inst *ti, struct table_req *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		ti->ready_head = req->next;
	if (req->next)
		req->next->prev = req->prev;
	else
		ti->ready_tail = req->prev;
	req->prev = req->next = NULL;
}

static void table_req_free(struct table_req *req)
{
	free(req->key);
	free(req->value);
	free(req);
}

void table_inst_close(struct table_inst **tip)
{
	struct table_inst *ti = *tip;
	if (ti == NULL)
		return;
	*tip = NULL;
	ti->closing = true;
	while (ti->ready_head) {
		struct table_req *req = ti->ready_head;
		table_ready_unlink(ti, req);
		table_req_free(req);
	}
	if (ti->mysql)
		table_mysql_inst_close(&ti->mysql);
	uv_idle_stop(&ti->idle);
	uv_close((uv_handle_t *)&ti->idle, table_inst_idle_closed);
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

/* Runs the callbacks of every request that was ready when this turn began;
 * requests made ready by those callbacks wait for the next turn, so a
 * callback that starts a new lookup never sees it complete inside itself. */
static void table_inst_idle_cb(uv_idle_t *h)
{
	struct table_inst *ti = h->data;
	struct table_req *last = ti->ready_tail;
	while (ti->ready_head) {
		struct table_req *req = ti->ready_head;
		bool was_last = req == last;
		table_ready_unlink(ti, req);
		if (req->cb)
			req->cb(req->ctx, req->status, req->value);
		table_req_free(req);
		if (was_last)
			break;
	}
	if (ti->ready_head == NULL)
		uv_idle_stop(&ti->idle);
}

void table_req_defer(struct table_req *req, enum table_status status, const char *value)
{
	struct table_inst *ti = req->ti;
	req->status = status;
	free(req->value);
	req->value = value ? xstrdup(value) : NULL;
	if (status == TABLE_TEMPFAIL)
		ti->stats.tempfails++;
	req->where = TABLE_REQ_READY;
	req->next = NULL;
	req->prev = ti->ready_tail;
	if (ti->ready_tail)
		ti->ready_tail->next = req;
	else
		ti->ready_head = req;
	ti->ready_tail = req;
	uv_idle_start(&ti->idle, table_inst_idle_cb);
}

void table_req_finish(struct table_req *req, enum table_status status, const char *value)
{
	struct table_inst *ti = req->ti;
	table_cache_store(ti, req->key, status, value);
	if (status == TABLE_TEMPFAIL)
		ti->stats.tempfails++;
	if (req->cb)
		req->cb(req->ctx, status, value);
	table_req_free(req);
}

struct table_req *table_lookupn(struct table_inst *ti, const char *key, size_t keylen,
				table_cb *cb, void *ctx)
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
	if (ti->t->kind != TABLE_KIND_MYSQL) {
		const char *value;
		enum table_status st = table_memory_get(ti->t, req->key, &value);
		table_cache_store(ti, req->key, st, value);
		table_req_defer(req, st, value);
		return req;
	}
	table_mysql_lookup(ti->mysql, req);
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
		table_ready_unlink(ti, req);
		table_req_free(req);
		if (ti->ready_head == NULL)
			uv_idle_stop(&ti->idle);
		break;
	case TABLE_REQ_QUEUED:
	case TABLE_REQ_ACTIVE:
		if (table_mysql_cancel(ti->mysql, req))
			table_req_free(req);
		break;
	}
}
