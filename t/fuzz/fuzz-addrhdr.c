/* fuzz-addrhdr: the address field rebuilder (src/smtp/addrhdr.c) on
 * arbitrary field bodies behind "To:". Properties (abort() when broken):
 *   - a mapping that matches nothing leaves the field alone (false, nothing
 *     written);
 *   - a mapping that matches every address: the result starts "To: ",
 *     holds no NUL, every CR is followed by LF and every LF follows a CR,
 *     it ends in CRLF, and each line after the first starts with SP or TAB
 *     (one field, never a new one); its size is bounded by a multiple of
 *     the input's (each address takes one input octet at least). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "smtp/addrhdr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_addrhdr_none(void *ctx, const char *internal, struct buf *out)
{
	(void)ctx;
	(void)internal;
	(void)out;
	return false;
}

static bool fuzz_addrhdr_all(void *ctx, const char *internal, struct buf *out)
{
	(void)ctx;
	buf_append_str(out, strlen(internal) % 2 ? "new@example.org" : "\"a b\"@example.org");
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf f = BUF_INIT, out = BUF_INIT;
	buf_append_str(&f, "To:");
	buf_append(&f, data, size);
	const char *field = (const char *)buf_data(&f);
	if (addrhdr_rewrite(field, buf_len(&f), fuzz_addrhdr_none, NULL, &out) || buf_len(&out))
		abort();
	if (addrhdr_rewrite(field, buf_len(&f), fuzz_addrhdr_all, NULL, &out)) {
		const char *o = (const char *)buf_data(&out);
		size_t n = buf_len(&out);
		if (n < 6 || memcmp(o, "To: ", 4) != 0 || memchr(o, 0, n) != NULL ||
		    memcmp(o + n - 2, "\r\n", 2) != 0 || n > 24 * buf_len(&f) + 64)
			abort();
		for (size_t i = 0; i < n; i++) {
			if (o[i] == '\r' && (i + 1 == n || o[i + 1] != '\n'))
				abort();
			if (o[i] == '\n' && (i == 0 || o[i - 1] != '\r'))
				abort();
			if (o[i] == '\n' && i + 1 < n && o[i + 1] != ' ' && o[i + 1] != '\t')
				abort();
		}
	}
	buf_free(&f);
	buf_free(&out);
	return 0;
}
