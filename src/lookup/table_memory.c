/* lookup/table_memory: the table types answered from memory — texthash:
 * files, inline:{...}, static:value and fail:name (contract in table.h),
 * as rows of the backend interface (table_backend.h). */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "lookup/table_backend.h"

/* The map of table_backend.h: open addressing, linear probing. */
struct table_hash {
	size_t count, cap; /* cap: power of two, > 2 * count */
	char **keys;
	char **values;
};

/* ------------------------------------------------------------------ */
/* table_hash */

struct table_hash *table_hash_new(void)
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

bool table_hash_put(struct table_hash *h, char *key, char *value)
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

bool table_hash_each(const void *def, table_each_fn *fn, void *ctx)
{
	const struct table_hash *h = def;
	for (size_t i = 0; i < h->cap; i++)
		if (h->keys[i] != NULL && !fn(ctx, h->keys[i], h->values[i]))
			return false;
	return true;
}

void table_hash_free(struct table_hash **hp)
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
			     "separated by commas)",
			     origin, lineno, k);
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
	unsigned logical_line = 0;
	struct table_lines it = {.text = text, .len = len};
	const char *line;
	size_t llen, i;
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
	while (ok && table_lines_next(&it, &line, &llen, &i)) {
		if (line[llen - 1] == '\r')
			llen--;
		if (i > 0) {
			if (logical_line == 0) {
				table_seterr(err, errlen,
					     "%s:%u: continuation line (starts with whitespace) "
					     "without a preceding line",
					     origin, it.lineno);
				ok = false;
				break;
			}
			buf_append(&logical, " ", 1);
			buf_append(&logical, line + i, llen - i);
			continue;
		}
		if (logical_line != 0) {
			buf_append(&logical, "", 1);
			ok = table_hash_add_line(h, (char *)buf_data(&logical), origin,
						 logical_line, err, errlen);
			buf_reset(&logical);
		}
		logical_line = it.lineno;
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
					table_seterr(err, errlen, "inline:%s: unexpected brace",
						     arg);
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
/* the rows */

static void *table_texthash_parse(const char *text, size_t len, const char *origin, char *err,
				  size_t errlen)
{
	return table_hash_parse(text, len, origin, err, errlen);
}

static void *table_inline_parse_row(const char *text, size_t len, const char *origin, char *err,
				    size_t errlen)
{
	(void)len;
	(void)origin;
	return table_inline_parse(text, err, errlen);
}

void table_hash_free_row(void *def)
{
	struct table_hash *h = def;
	table_hash_free(&h);
}

enum table_status table_hash_get_row(const void *def, const char *key, const char **value_r)
{
	*value_r = table_hash_get(def, key);
	return *value_r ? TABLE_OK : TABLE_NOTFOUND;
}

const struct table_backend table_backend_texthash = {
	.type = "texthash",
	.file = true,
	.parse = table_texthash_parse,
	.free = table_hash_free_row,
	.get = table_hash_get_row,
};

const struct table_backend table_backend_inline = {
	.type = "inline",
	.parse = table_inline_parse_row,
	.free = table_hash_free_row,
	.get = table_hash_get_row,
};

static void *table_static_parse(const char *text, size_t len, const char *origin, char *err,
				size_t errlen)
{
	(void)len;
	char *copy = xstrdup(text);
	char *v = table_unbrace(copy);
	char *value = v != NULL && *v != 0 ? xstrdup(v) : NULL;
	free(copy);
	if (value == NULL)
		table_seterr(err, errlen, "%s: expected static:value or static:{ value }", origin);
	return value;
}

static enum table_status table_static_get(const void *def, const char *key, const char **value_r)
{
	(void)key;
	*value_r = def;
	return TABLE_OK;
}

const struct table_backend table_backend_static = {
	.type = "static",
	.parse = table_static_parse,
	.free = free,
	.get = table_static_get,
};

static void *table_fail_parse(const char *text, size_t len, const char *origin, char *err,
			      size_t errlen)
{
	(void)text, (void)len, (void)origin, (void)err, (void)errlen;
	static char nothing;
	return &nothing; /* nothing to keep */
}

static void table_fail_free(void *def)
{
	(void)def;
}

static enum table_status table_fail_get(const void *def, const char *key, const char **value_r)
{
	(void)def, (void)key;
	*value_r = NULL;
	return TABLE_TEMPFAIL;
}

const struct table_backend table_backend_fail = {
	.type = "fail",
	.parse = table_fail_parse,
	.free = table_fail_free,
	.get = table_fail_get,
};
