/* fuzz-dkim: src/dkim's parsers and canonicalisers on arbitrary input. The
 * first octet picks the target:
 *   0  body hash (simple and relaxed): the same digest whole, a byte at a
 *      time and cut at a point the input chooses (docs/design.md §9.3);
 *   1  header fields: dkim_fields() stays inside the input and in order;
 *      a relaxed value has no CRLF but the last and no WSP runs;
 *   2  KeyTable, 3 SigningTable (plain and refile:) parsed, then matched
 *      against an address taken from the input;
 *   4  dkim_glob() agrees with a slow recursive reference. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "dkim/dkim.h"
#include "dkim/dkim_table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_dkim_body(const uint8_t *p, size_t n, size_t cut)
{
	for (int c = 0; c < 2; c++) {
		uint8_t a[32], b[32], d[32];
		struct dkim_body x;
		if (!dkim_body_init(&x, c ? DKIM_RELAXED : DKIM_SIMPLE))
			abort();
		dkim_body_update(&x, p, n);
		dkim_body_final(&x, a);
		dkim_body_init(&x, c ? DKIM_RELAXED : DKIM_SIMPLE);
		for (size_t i = 0; i < n; i++)
			dkim_body_update(&x, p + i, 1);
		dkim_body_final(&x, b);
		dkim_body_init(&x, c ? DKIM_RELAXED : DKIM_SIMPLE);
		dkim_body_update(&x, p, cut);
		dkim_body_update(&x, p + cut, n - cut);
		dkim_body_final(&x, d);
		if (memcmp(a, b, 32) != 0 || memcmp(a, d, 32) != 0)
			abort();
	}
}

static void fuzz_dkim_fields(const uint8_t *p, size_t n)
{
	struct dkim_field f[64];
	size_t nf = dkim_fields(p, n, f, 64);
	size_t end = 0;
	for (size_t i = 0; i < nf; i++) {
		if (f[i].off < end || f[i].off + f[i].len > n || f[i].name_len >= f[i].len)
			abort();
		end = f[i].off + f[i].len;
		struct buf b = BUF_INIT;
		dkim_canon_header(DKIM_RELAXED, p + f[i].off, f[i].len, true, &b);
		const uint8_t *c = buf_data(&b);
		size_t cl = buf_len(&b);
		if (cl < 3 || c[cl - 2] != '\r' || c[cl - 1] != '\n')
			abort();
		const uint8_t *colon = memchr(c, ':', cl);
		if (colon == NULL)
			abort();
		for (size_t k = (size_t)(colon - c); k + 2 < cl; k++) {
			if (c[k] == '\r' && c[k + 1] == '\n')
				abort(); /* unfolded */
			if ((c[k] == ' ' || c[k] == '\t') && (c[k + 1] == ' ' || c[k + 1] == '\t'))
				abort();
		}
		buf_free(&b);
	}
}

static char fuzz_lower(char c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

/* The reference: '*' any run, every other byte itself, ASCII case ignored,
 * by dynamic programming over the pattern (row[j]: the pattern so far
 * matches the first j bytes), so a pattern of many '*' cannot make the
 * reference itself exponential. */
static bool fuzz_glob_ref(const char *p, const char *s)
{
	size_t sl = strlen(s);
	bool *row = calloc(sl + 1, 1), *next = calloc(sl + 1, 1);
	if (row == NULL || next == NULL)
		abort();
	row[0] = true;
	for (; *p != '\0'; p++) {
		next[0] = *p == '*' && row[0];
		for (size_t j = 1; j <= sl; j++) {
			if (*p == '*')
				next[j] = row[j] || next[j - 1];
			else
				next[j] = row[j - 1] && fuzz_lower(*p) == fuzz_lower(s[j - 1]);
		}
		bool *t = row;
		row = next;
		next = t;
	}
	bool m = row[sl];
	free(row);
	free(next);
	return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t mode = data[0] % 5;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	char err[512];
	if (mode == 0) {
		fuzz_dkim_body(p, n, data[0] / 5 % (n + 1));
		return 0;
	}
	if (mode == 1) {
		fuzz_dkim_fields(p, n);
		return 0;
	}
	/* text: up to the first NUL; after it, the address to match */
	char *text = strndup((const char *)p, n);
	size_t tl = strlen(text);
	char *addr = tl + 1 < n ? strndup((const char *)p + tl + 1, n - tl - 1) : strdup("a@b.c");
	if (mode == 2) {
		struct dkim_keytable kt;
		if (dkim_keytable_parse(&kt, text, err, sizeof(err))) {
			for (size_t i = 0; i < kt.n; i++)
				if (dkim_keytable_find(&kt, kt.keys[i].name) == NULL)
					abort();
			dkim_keytable_clear(&kt);
		}
	} else if (mode == 3) {
		for (int re = 0; re < 2; re++) {
			struct dkim_sigtable st;
			if (!dkim_sigtable_parse(&st, text, re, err, sizeof(err)))
				continue;
			const struct dkim_signing *m[8];
			size_t k = dkim_sigtable_match(&st, addr, m, 8);
			for (size_t i = 0; i < k; i++)
				if (m[i] < st.e || m[i] >= st.e + st.n)
					abort();
			dkim_sigtable_clear(&st);
		}
	} else if (strlen(text) <= 12 && strlen(addr) <= 40) {
		/* the reference is exponential: small inputs only */
		if (dkim_glob(text, addr) != fuzz_glob_ref(text, addr))
			abort();
	}
	free(text);
	free(addr);
	return 0;
}
