/* dkim_table: OpenDKIM KeyTable and SigningTable. Contracts in dkim_table.h. */
#include "config.h"
#include "dkim/dkim_table.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DKIM_TABLE_FILE_MAX (16u << 20)

bool dkim_table_spec(const char *spec, bool *refile_r, const char **path_r, char *err,
		     size_t errlen)
{
	*refile_r = false;
	if (strncmp(spec, "refile:", 7) == 0) {
		*refile_r = true;
		*path_r = spec + 7;
	} else if (strncmp(spec, "file:", 5) == 0) {
		*path_r = spec + 5;
	} else {
		const char *colon = strchr(spec, ':');
		const char *slash = strchr(spec, '/');
		if (colon != NULL && (slash == NULL || colon < slash)) {
			snprintf(err, errlen, "\"%.*s\": unknown table type (file: or refile:)",
				 (int)(colon - spec + 1), spec);
			return false;
		}
		*path_r = spec;
	}
	if (**path_r == '\0') {
		snprintf(err, errlen, "no file name");
		return false;
	}
	return true;
}

bool dkim_table_read(const char *path, char **text_r, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > DKIM_TABLE_FILE_MAX) {
		snprintf(err, errlen, "%s: not a regular file of at most 16 MiB", path);
		close(fd);
		return false;
	}
	struct buf b = BUF_INIT;
	for (;;) {
		uint8_t *w = buf_reserve(&b, 65536);
		ssize_t r = read(fd, w, 65536);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || buf_len(&b) + (size_t)r > DKIM_TABLE_FILE_MAX) {
			bool bad = r != 0;
			if (bad)
				snprintf(err, errlen, "%s: %s", path,
					 r < 0 ? strerror(errno) : "larger than 16 MiB");
			close(fd);
			if (bad) {
				buf_free(&b);
				return false;
			}
			break;
		}
		buf_commit(&b, (size_t)r);
	}
	buf_append(&b, "", 1);
	if (memchr(buf_data(&b), '\0', buf_len(&b) - 1) != NULL) {
		snprintf(err, errlen, "%s: holds a NUL octet", path);
		buf_free(&b);
		return false;
	}
	*text_r = xstrdup((const char *)buf_data(&b));
	buf_free(&b);
	return true;
}

static char *dkim_table_lower(const char *s, size_t n)
{
	char *r = xstrndup(s, n);
	for (size_t i = 0; i < n; i++)
		r[i] = (char)tolower((unsigned char)r[i]);
	return r;
}

/* Calls fn on each line's key and value (value_len 0: none). Comments and
 * blank lines are skipped. */
typedef bool dkim_table_line_fn(void *ctx, size_t lineno, const char *k, size_t kl, const char *v,
				size_t vl, char *err, size_t errlen);

static bool dkim_table_lines(const char *text, dkim_table_line_fn *fn, void *ctx, char *err,
			     size_t errlen)
{
	size_t lineno = 0;
	for (const char *p = text; *p != '\0';) {
		const char *e = strchr(p, '\n');
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
		lineno++;
		if (lineno > DKIM_TABLE_MAX_LINES) {
			snprintf(err, errlen, "more than %u lines", DKIM_TABLE_MAX_LINES);
			return false;
		}
		const char *hash = memchr(p, '#', len);
		size_t l = hash != NULL ? (size_t)(hash - p) : len;
		while (l > 0 && isspace((unsigned char)p[l - 1]))
			l--;
		size_t i = 0;
		while (i < l && isspace((unsigned char)p[i]))
			i++;
		if (i < l) {
			for (size_t j = i; j < l; j++) {
				if ((unsigned char)p[j] < 32 && p[j] != '\t') {
					snprintf(err, errlen, "%zu: a control character", lineno);
					return false;
				}
			}
			size_t k = i;
			while (k < l && !isspace((unsigned char)p[k]))
				k++;
			size_t v = k;
			while (v < l && isspace((unsigned char)p[v]))
				v++;
			if (!fn(ctx, lineno, p + i, k - i, p + v, l - v, err, errlen))
				return false;
		}
		p += len;
		if (*p == '\n')
			p++;
	}
	return true;
}

/* A domain or selector as DNS takes it: LDH labels, dots between. */
static bool dkim_table_dns_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' ||
		      (s[i] == '.' && s[i - 1] != '.')))
			return false;
	return true;
}

static bool dkim_keytable_line(void *ctx, size_t lineno, const char *k, size_t kl, const char *v,
			       size_t vl, char *err, size_t errlen)
{
	struct dkim_keytable *kt = ctx;
	const char *c1 = memchr(v, ':', vl);
	const char *c2 = c1 != NULL ? memchr(c1 + 1, ':', vl - (size_t)(c1 + 1 - v)) : NULL;
	if (c2 == NULL) {
		snprintf(err, errlen, "%zu: want \"NAME DOMAIN:SELECTOR:KEYFILE\"", lineno);
		return false;
	}
	size_t dl = (size_t)(c1 - v), sl = (size_t)(c2 - c1 - 1), pl = vl - (size_t)(c2 + 1 - v);
	if (!(dl == 1 && v[0] == '%') && !dkim_table_dns_ok(v, dl)) {
		snprintf(err, errlen, "%zu: \"%.*s\" is not a domain", lineno, (int)dl, v);
		return false;
	}
	if (!dkim_table_dns_ok(c1 + 1, sl)) {
		snprintf(err, errlen, "%zu: \"%.*s\" is not a selector", lineno, (int)sl, c1 + 1);
		return false;
	}
	if (pl == 0 || (c2[1] != '/' && c2[1] != '.')) {
		snprintf(err, errlen,
			 "%zu: the key must be a file name starting with / or . (inline keys are "
			 "not supported)",
			 lineno);
		return false;
	}
	for (size_t i = 0; i < kt->n; i++) {
		if (strlen(kt->keys[i].name) == kl && strncasecmp(kt->keys[i].name, k, kl) == 0) {
			snprintf(err, errlen, "%zu: \"%.*s\" is listed twice", lineno, (int)kl, k);
			return false;
		}
	}
	kt->keys = xrealloc(kt->keys, (kt->n + 1) * sizeof(*kt->keys));
	struct dkim_key *key = &kt->keys[kt->n++];
	memset(key, 0, sizeof(*key));
	key->name = dkim_table_lower(k, kl);
	key->domain = dkim_table_lower(v, dl);
	key->selector = dkim_table_lower(c1 + 1, sl);
	key->path = xstrndup(c2 + 1, pl);
	return true;
}

bool dkim_keytable_parse(struct dkim_keytable *kt, const char *text, char *err, size_t errlen)
{
	memset(kt, 0, sizeof(*kt));
	if (!dkim_table_lines(text, dkim_keytable_line, kt, err, errlen)) {
		dkim_keytable_clear(kt);
		return false;
	}
	return true;
}

static bool dkim_sigtable_line(void *ctx, size_t lineno, const char *k, size_t kl, const char *v,
			       size_t vl, char *err, size_t errlen)
{
	struct dkim_sigtable *st = ctx;
	if (vl == 0) {
		snprintf(err, errlen, "%zu: want \"%s KEYNAME [SIGNER]\"", lineno,
			 st->refile ? "PATTERN" : "ADDRESS");
		return false;
	}
	size_t nl = 0;
	while (nl < vl && !isspace((unsigned char)v[nl]))
		nl++;
	size_t s = nl;
	while (s < vl && isspace((unsigned char)v[s]))
		s++;
	size_t se = s;
	while (se < vl && !isspace((unsigned char)v[se]))
		se++;
	if (se < vl) {
		snprintf(err, errlen, "%zu: more than KEYNAME and SIGNER", lineno);
		return false;
	}
	st->e = xrealloc(st->e, (st->n + 1) * sizeof(*st->e));
	struct dkim_signing *e = &st->e[st->n++];
	e->key = dkim_table_lower(k, kl);
	e->name = dkim_table_lower(v, nl);
	e->signer = se > s ? xstrndup(v + s, se - s) : NULL;
	return true;
}

bool dkim_sigtable_parse(struct dkim_sigtable *st, const char *text, bool refile, char *err,
			 size_t errlen)
{
	memset(st, 0, sizeof(*st));
	st->refile = refile;
	if (!dkim_table_lines(text, dkim_sigtable_line, st, err, errlen)) {
		dkim_sigtable_clear(st);
		return false;
	}
	return true;
}

void dkim_keytable_clear(struct dkim_keytable *kt)
{
	for (size_t i = 0; i < kt->n; i++)
		dkim_key_clear(&kt->keys[i]);
	free(kt->keys);
	memset(kt, 0, sizeof(*kt));
}

void dkim_sigtable_clear(struct dkim_sigtable *st)
{
	for (size_t i = 0; i < st->n; i++) {
		free(st->e[i].key);
		free(st->e[i].name);
		free(st->e[i].signer);
	}
	free(st->e);
	memset(st, 0, sizeof(*st));
}

const struct dkim_key *dkim_keytable_find(const struct dkim_keytable *kt, const char *name)
{
	for (size_t i = 0; i < kt->n; i++)
		if (strcasecmp(kt->keys[i].name, name) == 0)
			return &kt->keys[i];
	return NULL;
}

bool dkim_glob(const char *pat, const char *s)
{
	const char *star = NULL, *mark = NULL;
	while (*s != '\0') {
		if (*pat == '*') {
			star = pat++;
			mark = s;
		} else if (*pat != '\0' &&
			   tolower((unsigned char)*pat) == tolower((unsigned char)*s)) {
			pat++;
			s++;
		} else if (star != NULL) {
			pat = star + 1;
			s = ++mark;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == '\0';
}

static size_t dkim_sigtable_add(const struct dkim_sigtable *st, const char *key,
				const struct dkim_signing **out, size_t n, size_t max)
{
	for (size_t i = 0; i < st->n && n < max; i++)
		if (strcasecmp(st->e[i].key, key) == 0)
			out[n++] = &st->e[i];
	return n;
}

size_t dkim_sigtable_match(const struct dkim_sigtable *st, const char *addr,
			   const struct dkim_signing **out, size_t max)
{
	size_t n = 0;
	if (st->refile) {
		for (size_t i = 0; i < st->n && n < max; i++)
			if (dkim_glob(st->e[i].key, addr))
				out[n++] = &st->e[i];
		return n;
	}
	const char *at = strrchr(addr, '@');
	if (at == NULL || strlen(addr) > 512)
		return 0;
	char user[520], key[1040];
	snprintf(user, sizeof(user), "%.*s", (int)(at - addr), addr);
	const char *host = at + 1;
	n = dkim_sigtable_add(st, addr, out, n, max);
	n = dkim_sigtable_add(st, host, out, n, max);
	for (const char *d = strchr(host, '.'); d != NULL; d = strchr(d + 1, '.')) {
		snprintf(key, sizeof(key), "%s@%s", user, d);
		n = dkim_sigtable_add(st, key, out, n, max);
	}
	for (const char *d = strchr(host, '.'); d != NULL; d = strchr(d + 1, '.'))
		n = dkim_sigtable_add(st, d, out, n, max);
	snprintf(key, sizeof(key), "%s@*", user);
	n = dkim_sigtable_add(st, key, out, n, max);
	return dkim_sigtable_add(st, "*", out, n, max);
}
