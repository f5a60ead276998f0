/* fuzz-data: the DATA/BDAT decoder (docs/design.md invariant 7). The first byte
 * picks the mode and a split point; the input is decoded whole and in two
 * parts, results must match; the end must be a real CRLF.CRLF; complete
 * content must be canonical; stuffing it and decoding again must give it
 * back. Any violation aborts. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* buf_data() of a never-allocated buf is NULL + 0, which clang's UBSan
 * reports; empty buffers get a real pointer here. */
static const uint8_t *fuzz_data_ptr(const struct buf *b)
{
	return buf_len(b) > 0 ? buf_data(b) : (const uint8_t *)"";
}

struct fuzz_data_res {
	struct buf out;
	enum smtp_data_status st;
	size_t consumed;
	struct smtp_data_decoder d;
};

static void fuzz_data_run(enum smtp_newline_mode mode, bool bdat, const uint8_t *in, size_t n,
			  size_t cut, struct fuzz_data_res *r)
{
	r->out = (struct buf)BUF_INIT;
	r->consumed = 0;
	smtp_data_decoder_init(&r->d, mode, bdat);
	size_t used;
	r->st = smtp_data_decode(&r->d, in, cut, &used, &r->out);
	r->consumed = used;
	if (r->st == SMTP_DATA_NEED_MORE) {
		if (used != cut)
			abort();
		r->st = smtp_data_decode(&r->d, in + cut, n - cut, &used, &r->out);
		r->consumed += used;
		if (r->st == SMTP_DATA_NEED_MORE && used != n - cut)
			abort();
	}
	if (bdat)
		smtp_data_finish(&r->d, &r->out);
	if (r->d.size != buf_len(&r->out))
		abort();
}

static bool fuzz_data_same(const struct buf *a, const struct buf *b)
{
	return buf_len(a) == buf_len(b) &&
	       (buf_len(a) == 0 || memcmp(fuzz_data_ptr(a), fuzz_data_ptr(b), buf_len(a)) == 0);
}

static bool fuzz_data_canonical(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum smtp_newline_mode mode = data[0] & 1 ? SMTP_NEWLINE_NORMALIZE : SMTP_NEWLINE_REJECT;
	bool bdat = (data[0] & 6) == 6;
	const uint8_t *in = data + 1;
	size_t n = size - 1;
	size_t cut = n ? ((size_t)data[0] * 131u) % (n + 1) : 0;

	struct fuzz_data_res a, b;
	fuzz_data_run(mode, bdat, in, n, n, &a);
	fuzz_data_run(mode, bdat, in, n, cut, &b);
	if (a.st != b.st || a.consumed != b.consumed || !fuzz_data_same(&a.out, &b.out) ||
	    a.d.bare_newline != b.d.bare_newline || a.d.has_8bit != b.d.has_8bit || a.d.has_nul != b.d.has_nul)
		abort();
	if (a.st == SMTP_DATA_DONE) {
		if (bdat)
			abort();
		/* Invariant 7: only CRLF "." CRLF ends DATA. */
		if (!(a.consumed == 3 && memcmp(in, ".\r\n", 3) == 0) &&
		    !(a.consumed >= 5 && memcmp(in + a.consumed - 5, "\r\n.\r\n", 5) == 0))
			abort();
	}
	if (a.st == SMTP_DATA_DONE || bdat) {
		if (!fuzz_data_canonical(fuzz_data_ptr(&a.out), buf_len(&a.out)))
			abort();
		/* Re-stuffing then decoding gives the canonical content back. */
		struct buf st = BUF_INIT;
		bool bol = true;
		size_t half = buf_len(&a.out) / 2;
		if (half > 0 && fuzz_data_ptr(&a.out)[half - 1] == '\r')
			half++; /* do not split a CRLF between calls */
		smtp_data_stuff(fuzz_data_ptr(&a.out), half, &bol, &st);
		smtp_data_stuff(fuzz_data_ptr(&a.out) + half, buf_len(&a.out) - half, &bol, &st);
		if (!fuzz_data_canonical(fuzz_data_ptr(&st), buf_len(&st)))
			abort();
		if (!bol && buf_len(&a.out) > 0)
			abort(); /* canonical content ends at a line start */
		buf_append(&st, ".\r\n", 3);
		struct fuzz_data_res c;
		fuzz_data_run(mode, false, fuzz_data_ptr(&st), buf_len(&st), buf_len(&st), &c);
		if (c.st != SMTP_DATA_DONE || c.consumed != buf_len(&st) || c.d.bare_newline ||
		    !fuzz_data_same(&c.out, &a.out))
			abort();
		buf_free(&c.out);
		buf_free(&st);
	}
	/* Stuffing arbitrary bytes never emits a bare CR or LF. */
	struct buf raw = BUF_INIT;
	bool bol = true;
	smtp_data_stuff(in, n, &bol, &raw);
	if (!fuzz_data_canonical(fuzz_data_ptr(&raw), buf_len(&raw)))
		abort();
	buf_free(&raw);
	buf_free(&a.out);
	buf_free(&b.out);
	return 0;
}
