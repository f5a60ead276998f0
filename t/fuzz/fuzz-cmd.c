/* fuzz-cmd: the command line reader, the verb parser and MAIL/RCPT arguments.
 * The first byte picks the line limit and the read size, so the reader is
 * exercised with its over-long-line states at every chunking. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/addr.h"
#include "smtp/cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_cmd_line(const uint8_t *line, size_t len)
{
	struct smtp_cmd cmd;
	smtp_cmd_parse((const char *)line, len, &cmd);
	if (cmd.args_len > len || (cmd.args_len > 0 && (cmd.args < (const char *)line ||
						       cmd.args + cmd.args_len > (const char *)line + len)))
		abort();
	(void)smtp_verb_name(cmd.verb);
	char bad[32];
	char out[2048];
	if (cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_UNKNOWN) {
		struct smtp_mail_args m;
		if (smtp_mail_args_parse(cmd.args, cmd.args_len, &m, bad) == SMTP_ADDR_OK) {
			if (strlen(m.path.addr) > SMTP_PATH_MAX || m.path.local_len > strlen(m.path.addr))
				abort();
			int n = smtp_mail_args_format(&m, out, sizeof(out));
			if (n < 0)
				abort();
			/* round trip */
			char again[2400];
			int k = snprintf(again, sizeof(again), "FROM:<%s>%s", m.path.addr, out);
			struct smtp_mail_args m2;
			if (k > 0 && (size_t)k < sizeof(again) &&
			    (smtp_mail_args_parse(again, (size_t)k, &m2, NULL) != SMTP_ADDR_OK ||
			     strcmp(m.path.addr, m2.path.addr) != 0 || m.size != m2.size ||
			     strcmp(m.envid, m2.envid) != 0 || strcmp(m.auth, m2.auth) != 0))
				abort();
		} else if (strlen(bad) > 31)
			abort();
	}
	if (cmd.verb == SMTP_VERB_RCPT || cmd.verb == SMTP_VERB_UNKNOWN) {
		struct smtp_rcpt_args r;
		if (smtp_rcpt_args_parse(cmd.args, cmd.args_len, &r, bad) == SMTP_ADDR_OK) {
			if (r.path.addr[0] == '\0')
				abort(); /* <> is MAIL only */
			if (smtp_rcpt_args_format(&r, out, sizeof(out)) < 0)
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t max = 16 + (data[0] & 0x3f) * 16;
	size_t step = (data[0] >> 6) == 0 ? 1 : (data[0] >> 6) * 7;
	data++;
	size--;

	struct smtp_line_reader r;
	struct buf in = BUF_INIT;
	smtp_line_reader_init(&r, max);
	size_t off = 0;
	while (off < size) {
		size_t c = size - off < step ? size - off : step;
		buf_append(&in, data + off, c);
		off += c;
		for (;;) {
			size_t len, used;
			bool bare;
			enum smtp_line_status st = smtp_line_next(&r, buf_data(&in), buf_len(&in), &len, &used, &bare);
			if (used > buf_len(&in) || len > max)
				abort();
			if (st == SMTP_LINE_OK) {
				if (len >= used)
					abort();
				fuzz_cmd_line(buf_data(&in), len);
			}
			buf_consume(&in, used);
			if (st == SMTP_LINE_NEED_MORE)
				break;
		}
		/* never holds more than a line and its CRLF */
		if (buf_len(&in) > max + 1)
			abort();
	}
	/* The whole input as one line too (the address parser sees everything). */
	fuzz_cmd_line(data, size);
	buf_free(&in);
	return 0;
}
