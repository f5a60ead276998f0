/* fuzz-dovecot-proto: the auth protocol's wire codec on its own
 * (src/lookup/dovecot_auth_proto.c), each input line by line. Properties:
 *  - a split line's fields are NUL-terminated, hold no NUL, stay inside the
 *    line and number at most DOVECOT_AUTH_MAX_FIELDS; the command is never
 *    empty; what the strict (handshake) split accepts, the lenient one
 *    accepts with every field whole;
 *  - an OK/FAIL's non-empty user= and reason= point inside their fields;
 *  - escaping then unescaping gives the value back, and an escaped value
 *    holds no TAB, CR or LF (docs/design.md invariant 8);
 *  - the start of an over-long line is judged without reading past it. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "lookup/dovecot_auth_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_inside(const char *p, size_t n, const char *base, size_t len)
{
	return p >= base && p + n <= base + len;
}

static void fuzz_split(const uint8_t *line, size_t len)
{
	struct dovecot_auth_field f[DOVECOT_AUTH_MAX_FIELDS], g[DOVECOT_AUTH_MAX_FIELDS];
	char *a = malloc(len + 1), *b = malloc(len + 1);
	memcpy(a, line, len);
	memcpy(b, line, len);
	a[len] = b[len] = '\0';
	size_t nf, ng;
	bool whole, gwhole;
	enum dovecot_auth_split_status st = dovecot_auth_split(a, len, true, f, &nf, &whole);
	enum dovecot_auth_split_status strict = dovecot_auth_split(b, len, false, g, &ng, &gwhole);
	if (strict == DOVECOT_AUTH_SPLIT_OK && (st != DOVECOT_AUTH_SPLIT_OK || !whole || !gwhole))
		abort();
	if (dovecot_auth_split_error(st) == NULL)
		abort();
	if (st == DOVECOT_AUTH_SPLIT_OK) {
		if (nf == 0 || nf > DOVECOT_AUTH_MAX_FIELDS || f[0].len == 0)
			abort();
		for (size_t i = 0; i < nf; i++)
			if (!fuzz_inside(f[i].s, f[i].len + 1, a, len + 1) || f[i].s[f[i].len] != '\0' ||
			    memchr(f[i].s, '\0', f[i].len) != NULL)
				abort();
		struct dovecot_auth_final r;
		dovecot_auth_final_parse(f, nf, &r);
		/* "name" without '=' has the empty value "" */
		if ((r.user_len > 0 && !fuzz_inside(r.user, r.user_len, a, len)) ||
		    (r.reason_len > 0 && !fuzz_inside(r.reason, r.reason_len, a, len)))
			abort();
		if (r.user != NULL)
			(void)dovecot_auth_user_valid(r.user, r.user_len);
	}
	free(a);
	free(b);
}

static void fuzz_escape(const uint8_t *data, size_t size)
{
	char *v = malloc(size + 1);
	memcpy(v, data, size);
	v[size] = '\0';
	struct buf out = BUF_INIT;
	dovecot_auth_append_param(&out, "x", v);
	size_t n = buf_len(&out);
	char *e = malloc(n + 1);
	memcpy(e, buf_data(&out), n);
	e[n] = '\0';
	if (n < 3 || memcmp(e, "\tx=", 3) != 0 || memchr(e + 1, '\t', n - 1) != NULL ||
	    memchr(e, '\n', n) != NULL || memchr(e, '\r', n) != NULL)
		abort();
	size_t vlen = n - 3;
	if (!dovecot_auth_unescape(e + 3, &vlen) || vlen != strlen(v) || memcmp(e + 3, v, vlen) != 0)
		abort();
	buf_free(&out);
	free(e);
	free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	while (p < end) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		fuzz_split(p, len);
		p += len + (nl != NULL);
	}
	fuzz_escape(data, size);
	char prefix[48];
	size_t n = size < sizeof(prefix) - 1 ? size : sizeof(prefix) - 1;
	memcpy(prefix, data, n);
	prefix[n] = '\0';
	struct dovecot_auth_field cmd;
	uint32_t id;
	if (dovecot_auth_long_prefix_parse(prefix, &id, &cmd) &&
	    !fuzz_inside(cmd.s, cmd.len, prefix, n))
		abort();
	return 0;
}
