/* Unit tests for smtp/data: the DATA/BDAT decoder and dot-stuffing.
 *
 * Defends docs/design.md invariant 7 ("only CRLF.CRLF ends DATA"), RFC 5321
 * §4.1.1.4 (end of data, the CRLF before the dot belongs to the content),
 * §4.5.2 (dot transparency), §2.3.8 (no bare CR/LF) and CVE-2023-51764 (SMTP
 * smuggling). Every case runs whole, one byte at a time and split at every
 * point; a random differential test compares the decoder with a slow,
 * line-by-line reference written independently below. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/data.h"
#include "tap.h"

#define REJ SMTP_NEWLINE_REJECT
#define NRM SMTP_NEWLINE_NORMALIZE

struct result {
	struct buf out;
	bool done;
	size_t consumed; /* total bytes consumed */
	bool bare, has_8bit, has_nul, all_consumed_ok;
	uint64_t size;
};

/* Feeds in[0..n) split at the given offsets (sorted, < n), like a server
 * handing each read to the decoder; stops at DONE. */
static void run_decode(enum smtp_newline_mode mode, bool bdat, const uint8_t *in, size_t n,
		       const size_t *cuts, size_t ncuts, bool finish, struct result *r)
{
	struct smtp_data_decoder d;
	smtp_data_decoder_init(&d, mode, bdat);
	r->out = (struct buf)BUF_INIT;
	r->done = false;
	r->consumed = 0;
	r->all_consumed_ok = true;
	size_t off = 0;
	for (size_t c = 0; c <= ncuts && !r->done; c++) {
		size_t end = c < ncuts ? cuts[c] : n;
		if (end < off)
			continue;
		size_t used = 0;
		enum smtp_data_status st = smtp_data_decode(&d, in + off, end - off, &used, &r->out);
		r->consumed += used;
		if (st == SMTP_DATA_DONE)
			r->done = true;
		else if (used != end - off)
			r->all_consumed_ok = false; /* NEED_MORE must take everything */
		off = end;
	}
	if (finish)
		smtp_data_finish(&d, &r->out);
	r->bare = d.bare_newline;
	r->has_8bit = d.has_8bit;
	r->has_nul = d.has_nul;
	r->size = d.size;
}

static bool same_result(const struct result *a, const struct result *b)
{
	return a->done == b->done && a->consumed == b->consumed && a->bare == b->bare &&
	       a->has_8bit == b->has_8bit && a->has_nul == b->has_nul && a->size == b->size &&
	       buf_len(&a->out) == buf_len(&b->out) &&
	       (buf_len(&a->out) == 0 || memcmp(buf_data(&a->out), buf_data(&b->out), buf_len(&a->out)) == 0);
}

/* No CR without LF after it, no LF without CR before it (RFC 5321 §2.3.8). */
static bool canonical(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

/* ---- reference decoder: whole input, line by line, no cleverness ---- */

static void ref_text(const uint8_t *s, size_t n, struct buf *out, bool *bare)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r') {
			buf_append(out, " ", 1);
			*bare = true;
		} else
			buf_append(out, &s[i], 1);
	}
}

static void ref_decode(enum smtp_newline_mode mode, bool bdat, const uint8_t *in, size_t n,
		       bool finish, struct result *r)
{
	r->out = (struct buf)BUF_INIT;
	r->done = false;
	r->bare = false;
	r->all_consumed_ok = true;
	bool prev_bare = false;
	size_t i = 0;
	while (i < n) {
		const uint8_t *lf = memchr(in + i, '\n', n - i);
		if (lf == NULL)
			break;
		size_t e = (size_t)(lf - in);
		bool crlf = e > i && in[e - 1] == '\r';
		const uint8_t *c = in + i;
		size_t cl = (crlf ? e - 1 : e) - i;
		i = e + 1;
		if (!bdat && cl >= 1 && c[0] == '.') {
			if (cl == 1) {
				if (crlf && !prev_bare) {
					r->done = true;
					break;
				}
				if (!crlf)
					r->bare = true;
				if (mode == REJ)
					buf_append(&r->out, ".\r\n", 3);
				prev_bare = !crlf;
				continue;
			}
			c++;
			cl--;
		}
		ref_text(c, cl, &r->out, &r->bare);
		buf_append(&r->out, "\r\n", 2);
		if (!crlf)
			r->bare = true;
		prev_bare = !crlf;
	}
	if (!r->done) {
		/* Incomplete last line: a trailing CR waits; a lone "." waits. */
		const uint8_t *c = in + i;
		size_t cl = n - i;
		bool pend_cr = cl > 0 && c[cl - 1] == '\r';
		if (pend_cr)
			cl--;
		bool started = n - i > 0;
		if (!bdat && cl >= 1 && c[0] == '.') {
			c++;
			cl--;
			if (cl == 0 && pend_cr) {
				/* ".\r": still undecided */
				pend_cr = false;
				started = false;
			} else if (cl == 0) {
				started = false;
			} else if (cl > 0 && c[0] == '\r') {
				/* ".\rX": the dot went, the CR is bare */
			}
		}
		ref_text(c, cl, &r->out, &r->bare);
		if (bdat && finish) {
			if (pend_cr) {
				buf_append(&r->out, " ", 1);
				r->bare = true;
			}
			if (started)
				buf_append(&r->out, "\r\n", 2);
		}
		i = n;
	}
	r->consumed = i;
	r->has_8bit = false;
	r->has_nul = false;
	for (size_t k = 0; k < i; k++) {
		if (in[k] >= 0x80)
			r->has_8bit = true;
		if (in[k] == 0)
			r->has_nul = true;
	}
	r->size = buf_len(&r->out);
}

/* ---- table ---- */

struct data_case {
	const char *name;
	enum smtp_newline_mode mode;
	bool bdat;
	const char *in;
	bool done;
	const char *rest; /* bytes left after DONE */
	const char *out;
	bool bare;
	size_t in_len, rest_len, out_len; /* 0: strlen (for strings with NUL) */
};

#define SMUGGLE_TAIL "MAIL FROM:<evil@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: ceo@bank.example\r\n\r\nsend money\r\n"

static const struct data_case data_cases[] = {
	/* RFC 5321 §4.1.1.4 basics */
	{"empty message", REJ, false, ".\r\n", true, "", "", false, 0, 0, 0},
	{"empty message, next command stays", REJ, false, ".\r\nQUIT\r\n", true, "QUIT\r\n", "", false, 0, 0, 0},
	{"one line", REJ, false, "a\r\n.\r\n", true, "", "a\r\n", false, 0, 0, 0},
	{"CRLF before the dot belongs to content", NRM, false, "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n", true, "QUIT\r\n", "Subject: x\r\n\r\nbody\r\n", false, 0, 0, 0},
	{"empty line then end", REJ, false, "\r\n.\r\n", true, "", "\r\n", false, 0, 0, 0},
	{"no end yet", REJ, false, "a\r\nb\r\n", false, "", "a\r\nb\r\n", false, 0, 0, 0},
	{"dot not at line start", REJ, false, "a.\r\n.\r\n", true, "", "a.\r\n", false, 0, 0, 0},
	{"space dot line is content", REJ, false, " .\r\n.\r\n", true, "", " .\r\n", false, 0, 0, 0},
	/* §4.5.2 transparency */
	{"..x unstuffed", REJ, false, "..x\r\n.\r\n", true, "", ".x\r\n", false, 0, 0, 0},
	{".. line becomes .", REJ, false, "..\r\n.\r\n", true, "", ".\r\n", false, 0, 0, 0},
	{"... line becomes ..", REJ, false, "...\r\n.\r\n", true, "", "..\r\n", false, 0, 0, 0},
	{".x loses its dot", REJ, false, ".x\r\n.\r\n", true, "", "x\r\n", false, 0, 0, 0},
	{"dot space loses its dot", REJ, false, ". \r\n.\r\n", true, "", " \r\n", false, 0, 0, 0},
	{"mixed stuffing", REJ, false, "a\r\n.b\r\n..\r\n.\r\n", true, "", "a\r\nb\r\n.\r\n", false, 0, 0, 0},
	{"dot CR CR LF is not the end", NRM, false, "a\r\n.\r\r\n.\r\n", true, "", "a\r\n \r\n", true, 0, 0, 0},
	/* CVE-2023-51764 smuggling variants, REJECT mode: content, bad, one real end */
	{"smuggle LF.LF (reject)", REJ, false, "hello\n.\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n.\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CR.CR (reject)", REJ, false, "hello\r.\r" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello . " SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle LF.CRLF (reject)", REJ, false, "hello\n.\r\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n.\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CRLF.CR (reject)", REJ, false, "hello\r\n.\r" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n " SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CRLF.LF (reject)", REJ, false, "hello\r\n.\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n.\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CR.CRLF (reject)", REJ, false, "hello\r.\r\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello .\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	/* the same in NORMALIZE mode: fake dot lines dropped, LF -> CRLF, CR -> SP */
	{"smuggle LF.LF (normalize)", NRM, false, "hello\n.\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CR.CR (normalize)", NRM, false, "hello\r.\r" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello . " SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle LF.CRLF (normalize)", NRM, false, "hello\n.\r\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CRLF.CR (normalize)", NRM, false, "hello\r\n.\r" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n " SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CRLF.LF (normalize)", NRM, false, "hello\r\n.\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	{"smuggle CR.CRLF (normalize)", NRM, false, "hello\r.\r\n" SMUGGLE_TAIL ".\r\nQUIT\r\n", true, "QUIT\r\n", "hello .\r\n" SMUGGLE_TAIL, true, 0, 0, 0},
	/* a fake end alone never ends the data */
	{"LF.LF alone is not an end", NRM, false, "hello\n.\n", false, "", "hello\r\n", true, 0, 0, 0},
	{"LF.CRLF alone is not an end", REJ, false, "hello\n.\r\n", false, "", "hello\r\n.\r\n", true, 0, 0, 0},
	{"CRLF.LF alone is not an end", NRM, false, "hello\r\n.\n", false, "", "hello\r\n", true, 0, 0, 0},
	{"LF.LF at the start is not an end", NRM, false, ".\n", false, "", "", true, 0, 0, 0},
	{"dot line after bare-LF line, then real end", NRM, false, "a\n.\r\n.\r\n", true, "", "a\r\n", true, 0, 0, 0},
	{"two fake dots in a row", NRM, false, "a\n.\n.\r\nb\r\n.\r\n", true, "", "a\r\nb\r\n", true, 0, 0, 0},
	{"bare LF then CRLF line then end", REJ, false, "a\n\r\n.\r\n", true, "", "a\r\n\r\n", true, 0, 0, 0},
	{"bare CR at line start then dot", NRM, false, "\r.\r\n.\r\n", true, "", " .\r\n", true, 0, 0, 0},
	{"dot CR x (stuffed, CR bare)", NRM, false, ".\rx\r\n.\r\n", true, "", " x\r\n", true, 0, 0, 0},
	{"CR CR LF", NRM, false, "a\r\r\n.\r\n", true, "", "a \r\n", true, 0, 0, 0},
	{"bare LF in content (normalize)", NRM, false, "a\nb\r\n.\r\n", true, "", "a\r\nb\r\n", true, 0, 0, 0},
	{"trailing CR waits", REJ, false, "abc\r", false, "", "abc", false, 0, 0, 0},
	/* RFC 1870 §5 / RFC 6152 flags */
	{"8-bit detected", REJ, false, "caf\xc3\xa9\r\n.\r\n", true, "", "caf\xc3\xa9\r\n", false, 0, 0, 0},
	{"NUL detected", REJ, false, "a\0b\r\n.\r\n", true, "", "a\0b\r\n", false, 8, 0, 5},
	{"bytes after the end do not count", REJ, false, ".\r\n\xff\0", true, "\xff\0", "", false, 5, 2, 0},
	/* RFC 3030 BDAT: no dots, no end, same CR/LF rules */
	{"bdat plain", REJ, true, "a\r\nb\r\n", false, "", "a\r\nb\r\n", false, 0, 0, 0},
	{"bdat keeps dots", REJ, true, ".\r\n..x\r\n.\r\n", false, "", ".\r\n..x\r\n.\r\n", false, 0, 0, 0},
	{"bdat bare LF and CR", NRM, true, "a\nb\rc\r\n", false, "", "a\r\nb c\r\n", true, 0, 0, 0},
	{"bdat trailing CR at finish", REJ, true, "a\r\nb\r", false, "", "a\r\nb \r\n", true, 0, 0, 0},
	{"bdat unterminated last line", NRM, true, "a\r\nbc", false, "", "a\r\nbc\r\n", false, 0, 0, 0},
	{"bdat empty", NRM, true, "", false, "", "", false, 0, 0, 0},
};

static void test_table(void)
{
	for (size_t t = 0; t < sizeof(data_cases) / sizeof(data_cases[0]); t++) {
		const struct data_case *c = &data_cases[t];
		const uint8_t *in = (const uint8_t *)c->in;
		size_t n = c->in_len ? c->in_len : strlen(c->in);
		size_t rest_len = c->rest_len ? c->rest_len : strlen(c->rest);
		size_t out_len = c->out_len ? c->out_len : strlen(c->out);
		const char *want_out = c->out;
		bool finish = c->bdat;

		struct result whole;
		run_decode(c->mode, c->bdat, in, n, NULL, 0, finish, &whole);
		is_int(whole.done, c->done, "%s: %s", c->name, c->done ? "DONE" : "not done");
		is_int(n - whole.consumed, rest_len, "%s: bytes left after it", c->name);
		is_mem(buf_data(&whole.out), buf_len(&whole.out), want_out, out_len, "%s: content", c->name);
		is_int(whole.bare, c->bare, "%s: bare_newline", c->name);
		is_int((long long)whole.size, (long long)buf_len(&whole.out), "%s: size counts canonical octets", c->name);
		ok(whole.all_consumed_ok, "%s: NEED_MORE consumes everything", c->name);
		if (whole.done || finish)
			ok(canonical(buf_data(&whole.out), buf_len(&whole.out)), "%s: content has no bare CR/LF", c->name);
		if (strstr(c->name, "8-bit"))
			ok(whole.has_8bit && !whole.has_nul, "%s: has_8bit", c->name);
		else if (strstr(c->name, "NUL"))
			ok(whole.has_nul && !whole.has_8bit, "%s: has_nul", c->name);
		else
			ok(!whole.has_8bit && !whole.has_nul, "%s: no 8-bit, no NUL", c->name);

		/* byte at a time and every split point: identical */
		size_t *cuts = malloc((n + 1) * sizeof(*cuts));
		for (size_t k = 0; k < n; k++)
			cuts[k] = k + 1;
		struct result bytes;
		run_decode(c->mode, c->bdat, in, n, cuts, n, finish, &bytes);
		ok(same_result(&whole, &bytes), "%s: one byte at a time gives the same", c->name);
		buf_free(&bytes.out);
		bool same = true;
		for (size_t k = 1; k < n; k++) {
			struct result sp;
			size_t cut = k;
			run_decode(c->mode, c->bdat, in, n, &cut, 1, finish, &sp);
			if (!same_result(&whole, &sp)) {
				if (same)
					diag("differs when split at %zu", k);
				same = false;
			}
			buf_free(&sp.out);
		}
		ok(same, "%s: every split point gives the same", c->name);
		struct result ref;
		ref_decode(c->mode, c->bdat, in, n, finish, &ref);
		ok(same_result(&whole, &ref), "%s: matches the reference decoder", c->name);
		buf_free(&ref.out);
		free(cuts);
		buf_free(&whole.out);
	}
}

/* The end is recognised only at CRLF "." CRLF (invariant 7), checked on the
 * raw bytes, independent of any decoder logic. */
static bool end_is_real(const uint8_t *in, size_t consumed)
{
	if (consumed == 3)
		return memcmp(in, ".\r\n", 3) == 0;
	return consumed >= 5 && memcmp(in + consumed - 5, "\r\n.\r\n", 5) == 0;
}

static void test_random(void)
{
	static const char alpha[] = "a.\r\n\r\n..\x80\x00";
	uint32_t seed = 12345;
	int bad_ref = 0, bad_split = 0, bad_end = 0, bad_canon = 0, bad_restuff = 0, runs = 0;
	for (int iter = 0; iter < 30000; iter++) {
		uint8_t in[48];
		seed = seed * 1103515245u + 12345u;
		size_t n = (seed >> 16) % sizeof(in);
		for (size_t k = 0; k < n; k++) {
			seed = seed * 1103515245u + 12345u;
			in[k] = (uint8_t)alpha[(seed >> 16) % (sizeof(alpha) - 1)];
		}
		enum smtp_newline_mode mode = iter & 1 ? NRM : REJ;
		bool bdat = (iter % 7) == 3;
		struct result a, b, ref;
		run_decode(mode, bdat, in, n, NULL, 0, bdat, &a);
		size_t cuts[3];
		for (int k = 0; k < 3; k++) {
			seed = seed * 1103515245u + 12345u;
			cuts[k] = n ? (seed >> 16) % n : 0;
		}
		if (cuts[0] > cuts[1]) { size_t x = cuts[0]; cuts[0] = cuts[1]; cuts[1] = x; }
		if (cuts[1] > cuts[2]) { size_t x = cuts[1]; cuts[1] = cuts[2]; cuts[2] = x; }
		if (cuts[0] > cuts[1]) { size_t x = cuts[0]; cuts[0] = cuts[1]; cuts[1] = x; }
		run_decode(mode, bdat, in, n, cuts, 3, bdat, &b);
		ref_decode(mode, bdat, in, n, bdat, &ref);
		runs++;
		if (!same_result(&a, &ref)) {
			if (bad_ref++ == 0) {
				diag("reference differs (mode %d bdat %d):", mode, bdat);
				tap_escape("input", in, n);
				tap_escape("decoder", buf_data(&a.out), buf_len(&a.out));
				tap_escape("reference", buf_data(&ref.out), buf_len(&ref.out));
			}
		}
		if (!same_result(&a, &b))
			bad_split++;
		if (a.done && !end_is_real(in, a.consumed))
			bad_end++;
		/* Output is canonical once complete (DONE, or BDAT finished). */
		if ((a.done || bdat) && !canonical(buf_data(&a.out), buf_len(&a.out)))
			bad_canon++;
		/* Re-stuffing the content and decoding it gives it back. */
		if (a.done || bdat) {
			struct buf st = BUF_INIT;
			bool bol = true;
			smtp_data_stuff(buf_data(&a.out), buf_len(&a.out), &bol, &st);
			buf_append(&st, ".\r\n", 3);
			struct result back;
			run_decode(mode, false, buf_data(&st), buf_len(&st), NULL, 0, false, &back);
			if (!back.done || back.consumed != buf_len(&st) || back.bare ||
			    buf_len(&back.out) != buf_len(&a.out) ||
			    (buf_len(&a.out) > 0 && memcmp(buf_data(&back.out), buf_data(&a.out), buf_len(&a.out)) != 0))
				bad_restuff++;
			buf_free(&back.out);
			buf_free(&st);
		}
		buf_free(&a.out);
		buf_free(&b.out);
		buf_free(&ref.out);
	}
	diag("%d random inputs", runs);
	is_int(bad_ref, 0, "random: decoder equals the reference decoder");
	is_int(bad_split, 0, "random: split input gives the same result");
	is_int(bad_end, 0, "random: DONE only right after CRLF.CRLF (invariant 7)");
	is_int(bad_canon, 0, "random: complete content never has bare CR/LF");
	is_int(bad_restuff, 0, "random: stuff then decode gives the content back");
}

struct stuff_case {
	const char *in, *out;
	bool start, end_state;
};

static void test_stuff(void)
{
	const struct stuff_case cases[] = {
		{"a\r\n.b\r\n", "a\r\n..b\r\n", true, true},
		{".\r\n", "..\r\n", true, true},
		{"..\r\n", "...\r\n", true, true},
		{"a.b\r\n.\r\n", "a.b\r\n..\r\n", true, true},
		{".x", ".x", false, false},
		{".x", "..x", true, false},
		{"a\nb\r\n", "a\r\nb\r\n", true, true},
		{"a\rb\r\n", "a\r\nb\r\n", true, true},
		{"a\r.b", "a\r\n..b", true, false},
		{"\n.\n", "\r\n..\r\n", true, true},
		{"\r\r\n", "\r\n\r\n", true, true},
		{"x\r", "x\r\n", true, true},
		{"", "", true, true},
		{"", "", false, false},
	};
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		const struct stuff_case *c = &cases[t];
		size_t n = strlen(c->in);
		struct buf out = BUF_INIT;
		bool bol = c->start;
		smtp_data_stuff((const uint8_t *)c->in, n, &bol, &out);
		is_mem(buf_data(&out), buf_len(&out), c->out, strlen(c->out), "stuff %zu: output", t);
		is_int(bol, c->end_state, "stuff %zu: line-start state after", t);
		ok(canonical(buf_data(&out), buf_len(&out)) || !c->end_state, "stuff %zu: no bare CR/LF", t);
		/* Any split that does not cut a CRLF gives the same output. */
		bool same = true;
		for (size_t k = 1; k < n; k++) {
			if (c->in[k - 1] == '\r' && c->in[k] == '\n')
				continue;
			struct buf o2 = BUF_INIT;
			bool b2 = c->start;
			smtp_data_stuff((const uint8_t *)c->in, k, &b2, &o2);
			smtp_data_stuff((const uint8_t *)c->in + k, n - k, &b2, &o2);
			if (buf_len(&o2) != buf_len(&out) ||
			    (buf_len(&out) > 0 && memcmp(buf_data(&o2), buf_data(&out), buf_len(&out)) != 0) ||
			    b2 != bol)
				same = false;
			buf_free(&o2);
		}
		ok(same, "stuff %zu: line-start state carried across calls", t);
		buf_free(&out);
	}

	/* Round trip, both modes: canonical content -> stuff -> decode. */
	static const char *const contents[] = {
		"", "a\r\n", ".\r\n", "..\r\n", ".\r\n.\r\n", "From: a\r\n\r\n.hidden\r\n\r\n.\r\n",
		"\r\n\r\n", " .\r\n",
	};
	for (size_t t = 0; t < sizeof(contents) / sizeof(contents[0]); t++) {
		for (int m = 0; m < 2; m++) {
			struct buf st = BUF_INIT;
			bool bol = true;
			size_t n = strlen(contents[t]);
			smtp_data_stuff((const uint8_t *)contents[t], n, &bol, &st);
			buf_append(&st, ".\r\n", 3);
			struct result r;
			run_decode(m ? NRM : REJ, false, buf_data(&st), buf_len(&st), NULL, 0, false, &r);
			ok(r.done && r.consumed == buf_len(&st) && !r.bare &&
				   buf_len(&r.out) == n && (n == 0 || memcmp(buf_data(&r.out), contents[t], n) == 0),
			   "round trip %zu (%s)", t, m ? "normalize" : "reject");
			buf_free(&r.out);
			buf_free(&st);
		}
	}
}

static void test_misc(void)
{
	/* DONE is sticky: the decoder takes nothing more. */
	struct smtp_data_decoder d;
	struct buf out = BUF_INIT;
	size_t used;
	smtp_data_decoder_init(&d, REJ, false);
	is_int(smtp_data_decode(&d, (const uint8_t *)".\r\n", 3, &used, &out), SMTP_DATA_DONE, "sticky: DONE");
	is_int(smtp_data_decode(&d, (const uint8_t *)"x\r\n", 3, &used, &out), SMTP_DATA_DONE, "sticky: DONE again");
	is_int(used, 0, "sticky: nothing consumed after DONE");
	is_int(buf_len(&out), 0, "sticky: nothing written after DONE");

	/* finish is a no-op in DATA mode */
	smtp_data_decoder_init(&d, REJ, false);
	smtp_data_decode(&d, (const uint8_t *)"ab", 2, &used, &out);
	smtp_data_finish(&d, &out);
	is_mem(buf_data(&out), buf_len(&out), "ab", 2, "finish does nothing in DATA mode");
	buf_free(&out);

	/* A big message: many lines, a stuffed one in the middle, in 4 KiB reads. */
	struct buf msg = BUF_INIT, want = BUF_INIT;
	for (int k = 0; k < 20000; k++) {
		if (k == 10000) {
			buf_append_str(&msg, "..leading dot\r\n");
			buf_append_str(&want, ".leading dot\r\n");
		}
		buf_printf(&msg, "line %d: the quick brown fox jumps over the lazy dog\r\n", k);
		buf_printf(&want, "line %d: the quick brown fox jumps over the lazy dog\r\n", k);
	}
	buf_append_str(&msg, ".\r\n");
	size_t n = buf_len(&msg);
	size_t ncuts = n / 4096;
	size_t *cuts = malloc((ncuts + 1) * sizeof(*cuts));
	for (size_t k = 0; k < ncuts; k++)
		cuts[k] = (k + 1) * 4096;
	struct result r;
	run_decode(REJ, false, buf_data(&msg), n, cuts, ncuts, false, &r);
	ok(r.done && r.consumed == n && !r.bare, "big message: ends at the end");
	is_mem(buf_data(&r.out), buf_len(&r.out), buf_data(&want), buf_len(&want), "big message: content");
	free(cuts);
	buf_free(&r.out);
	buf_free(&msg);
	buf_free(&want);
}

int main(void)
{
	test_table();
	test_random();
	test_stuff();
	test_misc();
	return done_testing();
}
