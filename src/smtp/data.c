/* smtp/data: the DATA and BDAT content decoder (RFC 5321 §4.1.1.4, §4.5.2;
 * RFC 3030; docs/design.md invariant 7; CVE-2023-51764).
 *
 * The decoder is on the hot path of every message, so ordinary bytes are not
 * looked at one by one: memchr() finds the next LF, then the CRs before it,
 * and runs of bytes that pass unchanged (whole ordinary lines, CRLF included)
 * are copied to the output with one append. Only line starts, CRs that are
 * not part of CRLF, bare LFs and "." lines take the slow path. */
#include "config.h"
#include "smtp/data.h"

#include <string.h>

enum { SMTP_DATA_RUNNING = 0, SMTP_DATA_ENDED = 1 };

void smtp_data_decoder_init(struct smtp_data_decoder *d, enum smtp_newline_mode mode, bool bdat)
{
	memset(d, 0, sizeof(*d));
	d->mode = mode;
	d->bdat = bdat;
	d->state = SMTP_DATA_RUNNING;
	/* The command line that precedes the content ended in CRLF. */
	d->line_start = true;
}

/* Copies in[from..to), a run that passes unchanged. */
static void smtp_data_flush(const uint8_t *in, size_t from, size_t to, struct buf *out)
{
	if (to > from)
		buf_append(out, in + from, to - from);
}

static void smtp_data_eol(struct smtp_data_decoder *d, bool bare)
{
	d->line_start = true;
	d->after_bare_lf = bare;
}

/* A CR not followed by LF: never a line end (RFC 5321 §2.3.8). It becomes a
 * space, so no bare CR reaches the downstream (Postfix does the same with
 * cleanup_replace_stray_cr_lf). */
static void smtp_data_bare_cr(struct smtp_data_decoder *d, struct buf *out)
{
	d->bare_newline = true;
	buf_append(out, " ", 1);
}

/* A "." line that is not the end of data (it ends in bare LF or follows a
 * bare LF). In REJECT mode the message is refused anyway and the line is kept
 * as content; NORMALIZE drops it, as Postfix's normalize mode does. */
static void smtp_data_fake_end(struct smtp_data_decoder *d, struct buf *out)
{
	if (d->mode == SMTP_NEWLINE_REJECT)
		buf_append(out, ".\r\n", 3);
}

static bool smtp_data_any_8bit(const uint8_t *p, size_t n)
{
	size_t k = 0;
	for (; k + 32 <= n; k += 32) {
		uint64_t w[4];
		memcpy(w, p + k, sizeof(w));
		if ((w[0] | w[1] | w[2] | w[3]) & UINT64_C(0x8080808080808080))
			return true;
	}
	for (; k < n; k++)
		if (p[k] & 0x80)
			return true;
	return false;
}

enum smtp_data_status smtp_data_decode(struct smtp_data_decoder *d, const uint8_t *in, size_t n,
				       size_t *consumed_r, struct buf *out)
{
	size_t len0 = buf_len(out);
	size_t i = 0;   /* next byte to look at */
	size_t lit = 0; /* in[lit..i) is owed to out unchanged */
	enum smtp_data_status st = SMTP_DATA_NEED_MORE;

	if (d->state == SMTP_DATA_ENDED) {
		*consumed_r = 0;
		return SMTP_DATA_DONE;
	}

	while (i < n) {
		if (d->line_start) {
			d->line_start = false;
			if (!d->bdat && in[i] == '.') {
				/* RFC 5321 §4.5.2: hold the dot until we know
				 * whether the line is "." or stuffed. */
				smtp_data_flush(in, lit, i, out);
				lit = ++i;
				d->dot_line = true;
				continue;
			}
		}

		if (d->dot_line) {
			uint8_t c = in[i];
			if (d->pending_cr) {
				d->pending_cr = 0;
				d->dot_line = false;
				if (c == '\n') {
					lit = ++i;
					/* CRLF "." CRLF: the only end of data
					 * (RFC 5321 §4.1.1.4). After a bare LF it
					 * is smuggling bait, not an end. */
					if (!d->after_bare_lf) {
						d->state = SMTP_DATA_ENDED;
						st = SMTP_DATA_DONE;
						break;
					}
					smtp_data_fake_end(d, out);
					smtp_data_eol(d, false);
					continue;
				}
				/* "." CR x: a stuffed line whose dot goes; the CR is bare. */
				smtp_data_bare_cr(d, out);
			} else if (c == '\r') {
				d->pending_cr = 1;
				lit = ++i;
				continue;
			} else if (c == '\n') {
				/* "." bare LF: never an end (CVE-2023-51764). */
				d->dot_line = false;
				d->bare_newline = true;
				lit = ++i;
				smtp_data_fake_end(d, out);
				smtp_data_eol(d, true);
				continue;
			} else {
				/* "." x: stuffed, the dot goes (RFC 5321 §4.5.2). */
				d->dot_line = false;
			}
		} else if (d->pending_cr) {
			/* A CR that ended the previous input. */
			d->pending_cr = 0;
			if (in[i] == '\n') {
				buf_append(out, "\r\n", 2);
				lit = ++i;
				smtp_data_eol(d, false);
				continue;
			}
			smtp_data_bare_cr(d, out);
		}

		/* Inside a line: find its end, then the CRs in it. */
		size_t seg = i;
		const uint8_t *lf = memchr(in + i, '\n', n - i);
		size_t e = lf != NULL ? (size_t)(lf - in) : n;
		size_t j = seg;
		for (;;) {
			const uint8_t *cr = memchr(in + j, '\r', e - j);
			if (cr == NULL)
				break;
			size_t k = (size_t)(cr - in);
			if (k + 1 == e) {
				if (lf != NULL)
					break; /* CRLF */
				/* Last byte of the input: wait for the next one. */
				smtp_data_flush(in, lit, k, out);
				d->pending_cr = 1;
				lit = e;
				break;
			}
			smtp_data_flush(in, lit, k, out);
			smtp_data_bare_cr(d, out);
			lit = j = k + 1;
		}
		if (lf == NULL) {
			i = n;
			break;
		}
		if (e > seg && in[e - 1] == '\r') {
			i = e + 1; /* the line and its CRLF pass unchanged */
			smtp_data_eol(d, false);
		} else {
			/* Bare LF: a line end in content, written as CRLF; the
			 * REJECT caller refuses the message at the end. */
			smtp_data_flush(in, lit, e, out);
			buf_append(out, "\r\n", 2);
			d->bare_newline = true;
			lit = i = e + 1;
			smtp_data_eol(d, true);
		}
	}
	if (st == SMTP_DATA_NEED_MORE)
		smtp_data_flush(in, lit, i, out);
	*consumed_r = i;

	/* Everything consumed is content except dots, CRs, LFs and the end
	 * marker, none of which is 8-bit or NUL: one pass over the input says
	 * it, and stops being needed once a flag is set. */
	if (!d->has_nul && i > 0 && memchr(in, '\0', i) != NULL)
		d->has_nul = true;
	if (!d->has_8bit && smtp_data_any_8bit(in, i))
		d->has_8bit = true;
	d->size += buf_len(out) - len0;
	return st;
}

void smtp_data_finish(struct smtp_data_decoder *d, struct buf *out)
{
	if (!d->bdat || d->state == SMTP_DATA_ENDED)
		return;
	size_t len0 = buf_len(out);
	if (d->pending_cr) {
		d->pending_cr = 0;
		smtp_data_bare_cr(d, out);
		d->line_start = false;
	}
	/* A BDAT message may end inside a line; canonical content ends in CRLF
	 * so that the relay's final "." is at a line start. */
	if (!d->line_start)
		buf_append(out, "\r\n", 2);
	d->line_start = true;
	d->state = SMTP_DATA_ENDED;
	d->size += buf_len(out) - len0;
}

void smtp_data_stuff(const uint8_t *in, size_t n, bool *at_line_start, struct buf *out)
{
	bool bol = *at_line_start;
	size_t i = 0, lit = 0;
	size_t lf = 0; /* position of the next LF at or after i, or n; valid once lf_ok */
	bool lf_ok = false;

	while (i < n) {
		if (bol) {
			bol = false;
			/* RFC 5321 §4.5.2: a leading dot is doubled. The original
			 * dot stays in the unchanged run. */
			if (in[i] == '.') {
				smtp_data_flush(in, lit, i, out);
				buf_append(out, ".", 1);
				lit = i;
			}
		}
		if (!lf_ok || lf < i) {
			const uint8_t *p = memchr(in + i, '\n', n - i);
			lf = p != NULL ? (size_t)(p - in) : n;
			lf_ok = true;
		}
		const uint8_t *cr = memchr(in + i, '\r', lf - i);
		if (cr != NULL && !((size_t)(cr - in) + 1 == lf && lf < n)) {
			/* A CR that is not the first half of CRLF: defence in
			 * depth, it becomes a line end (RFC 5321 §2.3.8). */
			size_t k = (size_t)(cr - in);
			smtp_data_flush(in, lit, k, out);
			buf_append(out, "\r\n", 2);
			lit = i = k + 1;
			bol = true;
			continue;
		}
		if (lf == n) {
			i = n;
			break;
		}
		if (cr == NULL) {
			/* Bare LF: written as CRLF. */
			smtp_data_flush(in, lit, lf, out);
			buf_append(out, "\r\n", 2);
			lit = lf + 1;
		}
		i = lf + 1;
		bol = true;
	}
	smtp_data_flush(in, lit, n, out);
	*at_line_start = bol;
}
