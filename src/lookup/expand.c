/* lookup/expand: Postfix db_common_expand() templates. Contract in expand.h. */
#include "config.h"
#include "lookup/expand.h"

#include <string.h>

const char *expand_check(const char *fmt)
{
	for (const char *p = fmt; *p; p++) {
		if (*p != '%')
			continue;
		p++;
		if (*p == 0)
			return "template ends in '%'";
		if (strchr("%sudSUD123456789", *p) == NULL)
			return "invalid %-sequence in template (use %%, %s, %u, %d, %S, %U, %D, "
			       "%1-%9)";
	}
	return NULL;
}

/* Label want (1 = rightmost) of the domain dom; false when it is missing. */
static bool expand_label(const char *dom, int want, const char **p_r, size_t *n_r)
{
	const char *end = dom + strlen(dom);
	for (int i = 1;; i++) {
		const char *dot = end;
		while (dot > dom && dot[-1] != '.')
			dot--;
		if (i == want) {
			if (dot == end)
				return false; /* empty label */
			*p_r = dot;
			*n_r = (size_t)(end - dot);
			return true;
		}
		if (dot == dom)
			return false; /* not enough labels */
		end = dot - 1;
	}
}

/* The part of s selected by s/u/d/1-9; false when it is missing. */
static bool expand_part(const char *s, char what, const char **p_r, size_t *n_r)
{
	const char *at = strrchr(s, '@');
	if (what == 's' || (what == 'u' && at == NULL)) {
		*p_r = s;
		*n_r = strlen(s);
		return true;
	}
	if (what == 'u') {
		if (at == s)
			return false;
		*p_r = s;
		*n_r = (size_t)(at - s);
		return true;
	}
	if (at == NULL || at[1] == 0)
		return false;
	if (what == 'd') {
		*p_r = at + 1;
		*n_r = strlen(at + 1);
		return true;
	}
	return expand_label(at + 1, what - '0', p_r, n_r);
}

bool expand(struct buf *out, const char *fmt, const char *value, const char *key,
	    expand_escape_fn *escape, void *escape_ctx)
{
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			if (out)
				buf_append(out, p, 1);
			continue;
		}
		char c = *++p;
		if (c == 0)
			return false; /* expand_check() refuses it; never read past the end */
		if (c == '%') {
			if (out)
				buf_append(out, "%", 1);
			continue;
		}
		const char *src = value;
		if (c == 'S' || c == 'U' || c == 'D' || (c >= '1' && c <= '9')) {
			if (key)
				src = key;
			if (c >= 'A' && c <= 'Z')
				c = (char)(c - 'A' + 'a');
		}
		if (strchr("sud123456789", c) == NULL)
			return false;
		const char *part;
		size_t n;
		if (!expand_part(src, c, &part, &n))
			return false;
		if (out == NULL)
			continue;
		if (escape) {
			char *w = (char *)buf_reserve(out, 2 * n + 1);
			buf_commit(out, escape(escape_ctx, w, part, n));
		} else {
			buf_append(out, part, n);
		}
	}
	return true;
}

bool expand_domain_ok(char *const *domains, size_t ndomains, const char *key)
{
	if (ndomains == 0)
		return true;
	const char *at = strrchr(key, '@');
	if (at == NULL || at == key)
		return false;
	for (size_t i = 0; i < ndomains; i++)
		if (strcmp(at + 1, domains[i]) == 0)
			return true;
	return false;
}

void expand_result_init(struct expand_result *r)
{
	memset(r, 0, sizeof(*r));
	r->out = (struct buf)BUF_INIT;
}

void expand_result_free(struct expand_result *r)
{
	buf_free(&r->out);
	r->nvalues = 0;
	r->found = r->too_many = false;
}

bool expand_result_add(struct expand_result *r, const char *result_format, unsigned limit,
		       const char *value, const char *key)
{
	if (r->too_many)
		return false;
	if (value == NULL || value[0] == 0)
		return true; /* NULL columns skipped; Postfix skips empty values */
	struct buf one = BUF_INIT;
	if (!expand(&one, result_format, value, key, NULL, NULL)) {
		buf_free(&one);
		return true;
	}
	if (limit && ++r->nvalues > limit) {
		r->too_many = true;
		buf_free(&one);
		return false;
	}
	if (buf_len(&r->out))
		buf_append(&r->out, ",", 1);
	if (buf_len(&one))
		buf_append(&r->out, buf_data(&one), buf_len(&one));
	buf_free(&one);
	r->found = true;
	return true;
}
