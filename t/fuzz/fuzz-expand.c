/* fuzz-expand: the query/result templates of database tables
 * (src/lookup/expand.c) on arbitrary bytes. Input: TEMPLATE NUL VALUE NUL
 * KEY (missing parts are empty). Properties: no crash, leak or overread
 * (an unchecked template too); expand() with and without an output buffer
 * agree; the output is never longer than the template plus, per sequence,
 * the longer of value and key (twice that through an escaping function);
 * a template expand_check() accepts never yields a '%' that came from
 * nowhere: with value and key free of '%', '%' in the output come from "%%";
 * the result collector respects expansion_limit. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lookup/expand.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t fuzz_escape(void *ctx, char *dst, const char *src, size_t n)
{
	(void)ctx;
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (src[i] == '\'' || src[i] == '\\')
			dst[w++] = '\\';
		dst[w++] = src[i];
	}
	return w;
}

static size_t count(const char *s, size_t n, char c)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += s[i] == c;
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 3);
	memcpy(in, data, size);
	in[size] = in[size + 1] = in[size + 2] = 0;
	const char *fmt = in;
	const char *value = fmt + strlen(fmt) + 1;
	if (value > in + size)
		value = in + size + 1;
	const char *key = value + strlen(value) + 1;
	if (key > in + size + 1)
		key = in + size + 2;

	bool checked = expand_check(fmt) == NULL;
	size_t flen = strlen(fmt), longest = strlen(value) > strlen(key) ? strlen(value) : strlen(key);
	size_t seqs = count(fmt, flen, '%');
	struct buf a = BUF_INIT, b = BUF_INIT;
	bool ra = expand(&a, fmt, value, key, NULL, NULL);
	bool rn = expand(NULL, fmt, value, key, NULL, NULL);
	bool rb = expand(&b, fmt, value, key, fuzz_escape, NULL);
	if (ra != rn || ra != rb)
		abort();
	if (ra && buf_len(&a) > flen + seqs * longest)
		abort();
	if (rb && buf_len(&b) > flen + seqs * 2 * longest)
		abort();
	if (ra && checked && strchr(value, '%') == NULL && strchr(key, '%') == NULL) {
		/* "%%" is the only way to a '%' */
		size_t pct = 0;
		for (size_t i = 0; i + 1 < flen; i++)
			if (fmt[i] == '%') {
				pct += fmt[i + 1] == '%';
				i++;
			}
		if (count((const char *)buf_data(&a), buf_len(&a), '%') != pct)
			abort();
	}
	buf_free(&a);
	buf_free(&b);

	char *doms[] = {(char *)key, "example.com"};
	(void)expand_domain_ok(doms, 2, value);

	if (checked) {
		unsigned limit = size ? data[0] % 4 : 0;
		struct expand_result r;
		expand_result_init(&r);
		bool r1 = expand_result_add(&r, fmt, limit, value, key);
		bool r2 = expand_result_add(&r, fmt, limit, key, value);
		bool r3 = expand_result_add(&r, fmt, limit, value, value);
		if (limit && r.nvalues > limit + 1)
			abort();
		if (!r1 && (r2 || r3))
			abort(); /* once over the limit, it stays over */
		if (r.too_many != !(r1 && r2 && r3))
			abort();
		expand_result_free(&r);
	}
	free(in);
	return 0;
}
