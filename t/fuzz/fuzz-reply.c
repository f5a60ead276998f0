/* fuzz-reply: the downstream reply parser and the capability parser. The
 * stream is parsed reply after reply, whole and in chunks of a size picked by
 * the first byte; both must agree. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns the number of replies; writes a digest of them to out. */
static int fuzz_reply_run(const uint8_t *in, size_t n, size_t step, struct buf *out)
{
	struct smtp_reply_parser p;
	struct buf b = BUF_INIT;
	smtp_reply_parser_init(&p);
	int replies = 0;
	size_t off = 0;
	bool err = false;
	while (off < n && !err) {
		size_t c = n - off < step ? n - off : step;
		buf_append(&b, in + off, c);
		off += c;
		for (;;) {
			struct smtp_reply r;
			size_t used = 0;
			enum smtp_reply_status st = smtp_reply_parse(&p, buf_data(&b), buf_len(&b), &used, &r);
			if (used > buf_len(&b) || (st != SMTP_REPLY_DONE && used != 0))
				abort();
			if (st == SMTP_REPLY_ERROR) {
				buf_append_str(out, "ERR;");
				err = true;
				break;
			}
			if (st == SMTP_REPLY_NEED_MORE)
				break;
			if (r.code < 200 || r.code > 599 || r.lines < 1 || r.lines > SMTP_REPLY_MAX_LINES ||
			    strlen(r.text) >= sizeof(r.text) || strlen(r.enh) >= sizeof(r.enh) || used == 0)
				abort();
			for (const char *t = r.text; *t; t++)
				if ((unsigned char)*t < 0x20 && *t != '\n')
					abort();
			struct smtp_caps caps;
			smtp_caps_parse(&r, &caps);
			buf_printf(out, "%d/%s/%d/%s;", r.code, r.enh, r.lines, r.text);
			buf_consume(&b, used);
			replies++;
		}
	}
	if (!err && buf_len(&b) > (size_t)SMTP_REPLY_MAX_LINES * (SMTP_REPLY_LINE_MAX + 2))
		abort(); /* bounded */
	buf_free(&b);
	return replies;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = 1 + data[0] % 13;
	struct buf a = BUF_INIT, b = BUF_INIT;
	fuzz_reply_run(data + 1, size - 1, size, &a);
	fuzz_reply_run(data + 1, size - 1, step, &b);
	if (buf_len(&a) != buf_len(&b) || (buf_len(&a) > 0 && memcmp(buf_data(&a), buf_data(&b), buf_len(&a)) != 0))
		abort();
	buf_free(&a);
	buf_free(&b);
	return 0;
}
