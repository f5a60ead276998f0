/* Unit tests for smtp/header: end of the header section and the fields RFC
 * 6409 §8 fix-ups and sender checks need (RFC 5322 §2.2, §2.2.3, §3.6).
 * Every case is also fed as a growing prefix, like a caller that rescans
 * with more content: once header_scan() answers, the answer must be final. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "smtp/header.h"
#include "tap.h"

struct header_case {
	const char *name;
	const char *hdr;  /* the header section (header_len bytes) */
	const char *body; /* the rest */
	bool date, msgid, from, sender;
	const char *from_v, *sender_v;
	int from_count;
};

static const struct header_case cases[] = {
	{"simple", "From: a@b.example\r\nTo: c@d.example\r\n\r\n", "body\r\n", false, false, true, false, " a@b.example", "", 1},
	{"all four, any case", "FROM: a\r\nsender: b\r\ndate: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-ID: <x@y>\r\n\r\n", "", true, true, true, true, " a", " b", 1},
	{"folded From, whole", "Subject: x\r\nFrom: \"A\"\r\n <a@b.example>\r\n\r\n", "hi\r\n", false, false, true, false, " \"A\"\r\n <a@b.example>", "", 1},
	{"folded with tab", "From: A\r\n\t<a@b.example>  \r\n\r\n", "", false, false, true, false, " A\r\n\t<a@b.example>  ", "", 1},
	{"two From fields: the first, counted", "From: first@x\r\nFrom: second@x\r\n\r\n", "", false, false, true, false, " first@x", "", 2},
	{"two Sender fields: counted", "Sender: a\r\nsender: b\r\n\r\n", "", false, false, false, true, "", " a", 0},
	{"empty From", "From:\r\n\r\n", "", false, false, true, false, "", "", 1},
	{"similar names do not count", "X-From: a\r\nResent-From: b\r\nFrom-X: c\r\nDated: d\r\n\r\n", "", false, false, false, false, "", "", 0},
	{"body without headers", "", "Hello world\r\n\r\nmore\r\n", false, false, false, false, "", "", 0},
	{"empty line first", "\r\n", "text\r\n", false, false, false, false, "", "", 0},
	{"space before colon: still a field (RFC 5322 4.5)", "From : a\r\n\r\n", "", false, false, true, false, " a", "", 1},
	{"tab before colon", "Sender\t: a\r\n\r\n", "", false, false, false, true, "", " a", 0},
	{"mbox From line is ignored, not the end", "From a@b Mon Jan 1\r\nFrom: x\r\n\r\n", "", false, false, true, false, " x", "", 1},
	{"empty field name is a field", "Subject: s\r\n: junk\r\nFrom: x\r\n\r\n", "", false, false, true, false, " x", "", 1},
	{"field then non-field line", "From: a\r\n", "this is body\r\n", false, false, true, false, " a", "", 1},
	{"continuation first is ignored, not the end", " folded\r\nFrom: a\r\n\r\n", "", false, false, true, false, " a", "", 1},
	{"continuation after an mbox line is ignored", "From x\r\n From: no\r\nFrom: a\r\n\r\n", "", false, false, true, false, " a", "", 1},
	{"8-bit name is not a field", "", "Fr\xc3\xb6m: a\r\n\r\n", false, false, false, false, "", "", 0},
	{"\"From \" line with a colon: ignored", "From x: a\r\n\r\n", "", false, false, false, false, "", "", 0},
	{"name, space, word, colon: not a field", "", "Subj x: a\r\n\r\n", false, false, false, false, "", "", 0},
	{"bare LF lines", "From: a\n\n", "body\n", false, false, true, false, " a", "", 1},
};

static char *span_str(const char *content, const struct header_span *sp)
{
	return strndup(content + sp->off, sp->len);
}

static bool same(const struct header_info *a, const struct header_info *b)
{
	return a->header_len == b->header_len && a->complete == b->complete && a->has_date == b->has_date &&
	       a->has_message_id == b->has_message_id && a->has_from == b->has_from &&
	       a->has_sender == b->has_sender && a->from_count == b->from_count &&
	       a->sender_count == b->sender_count && a->from.off == b->from.off &&
	       a->from.len == b->from.len && a->sender.off == b->sender.off &&
	       a->sender.len == b->sender.len && a->odd_line == b->odd_line;
}

static void check(const char *name, const char *content, size_t n, size_t want_len,
		  const struct header_case *c)
{
	const uint8_t *p = (const uint8_t *)content;
	struct header_info r;
	ok(header_scan(p, n, true, &r), "%s: answers at end", name);
	is_int((long long)r.header_len, (long long)want_len, "%s: header_len", name);
	ok(r.complete, "%s: complete", name);
	ok(r.has_date == c->date && r.has_message_id == c->msgid && r.has_from == c->from &&
		   r.has_sender == c->sender,
	   "%s: Date/Message-ID/From/Sender presence", name);
	char *fv = span_str(content, &r.from), *sv = span_str(content, &r.sender);
	is_str(fv, c->from_v, "%s: From value", name);
	is_str(sv, c->sender_v, "%s: Sender value", name);
	free(fv);
	free(sv);
	is_int(r.from_count, c->from_count, "%s: From count", name);

	/* Growing prefixes, not at end: an answer, once given, is final. */
	bool final = true, answered = false;
	for (size_t k = 0; k <= n; k++) {
		struct header_info q;
		if (header_scan(p, k, false, &q)) {
			answered = true;
			if (!same(&q, &r)) {
				if (final)
					diag("prefix %zu answers differently (len %zu)", k, q.header_len);
				final = false;
			}
		} else if (k > 0 && answered) {
			final = false; /* it knew, then forgot */
		}
	}
	ok(final, "%s: answers on prefixes are final", name);
}

static void test_table(void)
{
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		const struct header_case *c = &cases[t];
		size_t hl = strlen(c->hdr), bl = strlen(c->body);
		char *s = malloc(hl + bl + 1);
		memcpy(s, c->hdr, hl);
		memcpy(s + hl, c->body, bl + 1);
		check(c->name, s, hl + bl, hl, c);
		/* the empty line was found: it answers without at_end */
		if (strstr(c->hdr, "\n\n") || strstr(c->hdr, "\r\n\r\n") || strcmp(c->hdr, "\r\n") == 0) {
			struct header_info r;
			ok(header_scan((const uint8_t *)s, hl + bl, false, &r) && r.header_len == hl,
			   "%s: found before the end", c->name);
		}
		free(s);
	}
}

static void test_no_empty_line(void)
{
	/* content that is only fields: at_end decides */
	static const struct header_case c1 = {"", "", "", true, false, true, false, " a", "", 1};
	const char *s = "From: a\r\nDate: x\r\n";
	struct header_info r;
	ok(!header_scan((const uint8_t *)s, strlen(s), false, &r), "only fields: need more until the end");
	check("only fields, at end", s, strlen(s), strlen(s), &c1);
	/* the last field without CRLF */
	static const struct header_case c2 = {"", "", "", false, false, true, false, " a", "", 1};
	s = "From: a";
	check("unterminated field at end", s, strlen(s), strlen(s), &c2);
	/* a folded field may continue in the next chunk */
	s = "From: a\r\n";
	ok(!header_scan((const uint8_t *)s, strlen(s), false, &r), "field may still fold: need more");
	/* empty content */
	static const struct header_case c3 = {"", "", "", false, false, false, false, "", "", 0};
	check("empty content", "", 0, 0, &c3);
	/* a long From body is kept whole (invariant 11: nothing cut) */
	char big[2000];
	int n = snprintf(big, sizeof(big), "From: %01000d\r\n\r\n", 0);
	ok(header_scan((const uint8_t *)big, (size_t)n, false, &r) && r.from.len == 1001 &&
		   r.from.off == 5,
	   "a long From body is whole");
}

/* Lines readers disagree about are marked (1 + the offset of the first). */
static void test_odd_lines(void)
{
	static const struct {
		const char *s;
		size_t want;
	} odd[] = {
		{"From: a\r\nTo: b\r\n\r\n", 0},
		{"From: a\r\n folded\r\n\r\n", 0},
		{"Subject : obsolete but clear\r\n\r\n", 0},
		{" first line folded\r\nFrom: a\r\n\r\n", 1},
		{"From: a\r\nFrom b Sat Nov 22 2025\r\n\r\n", 10},
		{"From: a\r\n: no name\r\n\r\n", 10},
		{"From: a\r\nbody line\r\n", 0},
	};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		struct header_info r;
		header_scan((const uint8_t *)odd[i].s, strlen(odd[i].s), true, &r);
		is_int((long long)r.odd_line, (long long)odd[i].want, "odd line in %zu", i);
	}
}

int main(void)
{
	test_table();
	test_odd_lines();
	test_no_empty_line();
	return done_testing();
}
