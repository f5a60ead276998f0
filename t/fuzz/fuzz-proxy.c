/* fuzz-proxy: the PROXY protocol header parser (net/proxy.c). Properties
 * checked on every input: a verdict is final (once OK or BAD for a prefix,
 * the same for every longer input, with the same length and addresses);
 * OK never claims more than it was given nor more than PROXY_MAX; "more"
 * is never answered past PROXY_MAX bytes (docs/design.md invariant 5); BAD
 * always carries a reason. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_proxy_check(const struct proxy_header *h, enum proxy_status st, size_t n)
{
	if (st == PROXY_OK) {
		if (h->len == 0 || h->len > n || h->len > PROXY_MAX || (h->version != 1 && h->version != 2))
			abort();
		if (!h->local && h->src.ss_family != h->dst.ss_family)
			abort();
		if (!h->local && h->addr_len == 0)
			abort();
	} else if (st == PROXY_BAD) {
		if (h->error == NULL)
			abort();
	} else if (n >= PROXY_MAX) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header whole, h;
	enum proxy_status st = proxy_parse(data, size, &whole);
	fuzz_proxy_check(&whole, st, size);

	/* Byte at a time, each prefix in an exact-size copy. */
	enum proxy_status first = PROXY_MORE;
	struct proxy_header fh;
	memset(&fh, 0, sizeof(fh));
	for (size_t k = 0; k <= size; k++) {
		uint8_t *p = malloc(k ? k : 1);
		if (p == NULL)
			abort();
		memcpy(p, data, k);
		enum proxy_status s = proxy_parse(p, k, &h);
		free(p);
		fuzz_proxy_check(&h, s, k);
		if (first == PROXY_MORE) {
			first = s;
			fh = h;
		} else if (s != first) {
			abort(); /* a verdict changed */
		} else if (s == PROXY_OK && (h.len != fh.len || h.local != fh.local ||
					       memcmp(&h.src, &fh.src, sizeof(h.src)) != 0 ||
					       memcmp(&h.dst, &fh.dst, sizeof(h.dst)) != 0)) {
			abort();
		}
		if (s != PROXY_MORE && k + 8 < size)
			k = size - 8; /* the verdict is known: spot-check a few longer inputs */
	}
	if (first != st)
		abort();
	return 0;
}
