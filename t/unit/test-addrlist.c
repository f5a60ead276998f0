/* Unit tests for smtp/addrlist: RFC 5322 §3.4 address lists (with the
 * obsolete syntax of §4.4, RFC 6854 groups in From:, RFC 2047 §5 encoded
 * words in display names only). Every case runs whole, one octet at a time
 * and split at every point: the addresses, the verdict and the error offset
 * must not depend on how the body arrives. docs/design.md invariant 11: an
 * address is returned whole or the body is refused. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/addrlist.h"
#include "tap.h"

#define E(x) ADDRLIST_E_##x
#define OK ADDRLIST_OK

struct ac {
	const char *name;
	const char *in;
	enum addrlist_error err; /* OK: want is the addresses joined with '|' */
	const char *want;
};

static const struct ac cases[] = {
	/* plain forms */
	{"bare addr-spec", "jane@example.net", OK, "jane@example.net"},
	{"leading space", " jane@example.net", OK, "jane@example.net"},
	{"angle address", "<jane@example.net>", OK, "jane@example.net"},
	{"display name", "Jane Doe <jane@example.net>", OK, "jane@example.net"},
	{"quoted display name with specials", "\"Doe, Jane <x@y>\" <jane@example.net>", OK, "jane@example.net"},
	{"display name looking like an address", "\"ceo@victim.example\" <jane@example.net>", OK, "jane@example.net"},
	{"two mailboxes", "a@x.example, B <b@y.example>", OK, "a@x.example|b@y.example"},
	{"no spaces", "A<a@x.example>,\"B\"<b@y.example>,c@z.example", OK, "a@x.example|b@y.example|c@z.example"},
	{"case kept", "<Jane@Example.NET>", OK, "Jane@Example.NET"},
	{"+extension", "jane+tag@example.net", OK, "jane+tag@example.net"},
	{"every atext", "!#$%&'*+-/=^_?`{|}~@example.net", OK, "!#$%&'*+-/=^_?`{|}~@example.net"},
	/* comments */
	{"comment after", "jane@example.net (Jane)", OK, "jane@example.net"},
	{"comments everywhere", "(a)jane(b)@(c)example.net(d)", OK, "jane@example.net"},
	{"nested comments", "jane@example.net (a (b (c) \\) d) e)", OK, "jane@example.net"},
	{"comment with an address in it", "(ceo@victim.example) <jane@example.net>", OK, "jane@example.net"},
	{"comment as display name", "(Jane) <jane@example.net>", OK, "jane@example.net"},
	{"escaped paren in a comment", "Jane (x\\) <ceo@victim.example>) <jane@example.net>", OK, "jane@example.net"},
	{"unterminated comment", "(Jane <jane@example.net>", E(COMMENT), NULL},
	{"stray close paren", "jane@example.net)", E(COMMENT), NULL},
	/* quoted strings */
	{"quoted local part", "\"jane doe\"@example.net", OK, "\"jane doe\"@example.net"},
	{"quoted local part with escapes", "\"a\\\"b\\\\c\"@example.net", OK, "\"a\\\"b\\\\c\"@example.net"},
	{"escaped space", "\"a\\ b\"@example.net", OK, "\"a\\ b\"@example.net"},
	{"quoted local part in <>", "<\"x y\"@example.net>", OK, "\"x y\"@example.net"},
	{"escaped quote in a display name", "\"J \\\" <ceo@victim.example> \\\"\" <jane@example.net>", OK, "jane@example.net"},
	{"unterminated quoted string", "\"Jane <jane@example.net>", E(QUOTE), NULL},
	{"backslash at the end", "\"Jane\\", E(QUOTE), NULL},
	{"quoted address in a quoted local part", "\"ceo@victim.example\"@example.net", OK, "\"ceo@victim.example\"@example.net"},
	/* folding and whitespace */
	{"folded", "Jane\r\n <jane@example.net>", OK, "jane@example.net"},
	{"folded inside a quoted string", "\"Ja\r\n ne\" <jane@example.net>", OK, "jane@example.net"},
	{"folded inside a quoted local part", "<\"ja\r\n\tne\"@example.net>", OK, "\"ja\tne\"@example.net"},
	{"folded inside a comment", "(a\r\n b) jane@example.net", OK, "jane@example.net"},
	{"whitespace-only continuation (obs-FWS)", "Jane\r\n \r\n <jane@example.net>", OK, "jane@example.net"},
	{"tabs", "\tJane\t\t<jane@example.net>\t", OK, "jane@example.net"},
	{"CRLF without WSP", "Jane\r\n<jane@example.net>", E(CHAR), NULL},
	{"bare CR", "Jane\r <jane@example.net>", E(CHAR), NULL},
	{"bare LF", "Jane\n <jane@example.net>", E(CHAR), NULL},
	{"CR at the end", "jane@example.net\r", E(CHAR), NULL},
	{"NUL hides nothing", "jane@example.net\0<ceo@victim.example>", E(CHAR), NULL},
	{"NUL in a quoted string", "\"a\0\" <jane@example.net>", E(CHAR), NULL},
	{"NUL in a comment", "(a\0) jane@example.net", E(CHAR), NULL},
	{"control character", "jane@exam\x01ple.net", E(CHAR), NULL},
	{"DEL", "jane\x7f@example.net", E(CHAR), NULL},
	{"form feed", "Jane\f<jane@example.net>", E(CHAR), NULL},
	/* obsolete syntax (RFC 5322 §4.4) */
	{"obs-local-part with spaces", "jane . doe@example.net", OK, "jane.doe@example.net"},
	{"obs-local-part with quoted words", "a.\"b c\".d@example.net", OK, "a.\"b c\".d@example.net"},
	{"obs-domain with spaces", "jane@example . net", OK, "jane@example.net"},
	{"spaces around @", "jane @ example.net", OK, "jane@example.net"},
	{"obs-phrase with dots", "Jane Q. Doe <jane@example.net>", OK, "jane@example.net"},
	{"obs-route", "<@a.example,@b.example:jane@example.net>", OK, "jane@example.net"},
	{"obs-route with spaces and empty elements", "Jane < , @a.example , , @b.example : jane@example.net >", OK, "jane@example.net"},
	{"obs-route without ':'", "<@a.example jane@example.net>", E(ANGLE), NULL},
	{"obs-route without a domain", "<,:jane@example.net>", E(ANGLE), NULL},
	{"empty list elements", ", a@x.example, , b@y.example,", OK, "a@x.example|b@y.example"},
	/* groups */
	{"group", "team: a@x.example, B <b@y.example>;", OK, "a@x.example|b@y.example"},
	{"empty group", "undisclosed-recipients:;", OK, ""},
	{"empty group with comment", "g: (none) ;", OK, ""},
	{"group then mailbox", "g: a@x.example;, c@z.example", OK, "a@x.example|c@z.example"},
	{"group with trailing comment", "g: a@x.example; (c)", OK, "a@x.example"},
	{"quoted group name", "\"the team\": a@x.example;", OK, "a@x.example"},
	{"unterminated group", "g: a@x.example", E(GROUP), NULL},
	{"nested group", "a: b: c@d.example;;", E(GROUP), NULL},
	{"two groups without a comma", "g: a@x.example; h: b@y.example;", E(SYNTAX), NULL},
	{"';' outside a group", "a@x.example;", E(SYNTAX), NULL},
	{"group without a name", ": a@x.example;", E(GROUP), NULL},
	/* domain literals */
	{"domain literal", "jane@[192.0.2.1]", OK, "jane@[192.0.2.1]"},
	{"domain literal with spaces", "jane@[ 192.0.2.1 ]", OK, "jane@[192.0.2.1]"},
	{"IPv6 literal", "<jane@[IPv6:2001:db8::1]>", OK, "jane@[IPv6:2001:db8::1]"},
	{"quoted-pair in a literal", "jane@[a\\]b]", E(LITERAL), NULL},
	{"unterminated literal", "jane@[1.2.3.4", E(LITERAL), NULL},
	{"literal as local part", "[1.2.3.4]@example.net", E(SYNTAX), NULL},
	{"literal then atom", "jane@[1.2.3.4].net", E(SYNTAX), NULL},
	/* encoded words (RFC 2047) */
	{"encoded display name", "=?utf-8?q?J=C3=A4ne?= <jane@example.net>", OK, "jane@example.net"},
	{"encoded display name, base64", "=?utf-8?b?SmFuZQ==?= <jane@example.net>", OK, "jane@example.net"},
	{"two encoded words in one atom", "=?utf-8?q?a?==?utf-8?q?b?= <jane@example.net>", OK, "jane@example.net"},
	{"encoded word with a hex escape first", "=?utf-8?q?=41?= <jane@example.net>", OK, "jane@example.net"},
	{"encoded word in a quoted display name", "\"=?utf-8?q?J=C3=A4ne?= Doe\" <jane@example.net>", OK, "jane@example.net"},
	{"\"=?\" inside an atom, not first", "a=?b <jane@example.net>", OK, "jane@example.net"},
	{"encoded word in the local part", "=?utf-8?q?ceo?=@victim.example", E(ENCODED), NULL},
	{"encoded word in the domain", "ceo@=?utf-8?q?victim.example?=", E(ENCODED), NULL},
	{"encoded word in a quoted local part", "\"=?utf-8?q?ceo?=\"@victim.example", E(ENCODED), NULL},
	{"\"=?\" inside a local part", "a=?b@example.net", E(ENCODED), NULL},
	{"encoded word read across a quote", "=?utf-8?q?\"?= <ceo@victim.example> \"x <jane@example.net>", E(ENCODED), NULL},
	{"encoded word read across the closing quote", "\"=?utf-8?q?\"?=\" <ceo@victim.example> \"x <jane@example.net>", E(ENCODED), NULL},
	{"unterminated encoded word", "=?utf-8?q?abc <jane@example.net>", E(ENCODED), NULL},
	{"hex-escape encoded word read across", "=?utf-8?q?=41 <ceo@victim.example> ?= <jane@example.net>", E(ENCODED), NULL},
	/* not addresses */
	{"empty", "", E(EMPTY), NULL},
	{"only spaces", "   ", E(EMPTY), NULL},
	{"only a comment", "(nobody)", E(EMPTY), NULL},
	{"only commas", " , ,", E(EMPTY), NULL},
	{"display name only", "Jane Doe", E(PHRASE), NULL},
	{"local part only", "jane", E(PHRASE), NULL},
	{"empty angle", "<>", E(ANGLE), NULL},
	{"display name and empty angle", "Jane <>", E(ANGLE), NULL},
	{"no domain", "<jane>", E(DOMAIN), NULL},
	{"no domain after @", "jane@", E(DOMAIN), NULL},
	{"no local part", "@example.net", E(LOCAL), NULL},
	{"trailing dot in domain", "jane@example.net.", E(DOMAIN), NULL},
	{"double dot in domain", "jane@example..net", E(DOMAIN), NULL},
	{"leading dot in local part", ".jane@example.net", E(LOCAL), NULL},
	{"double dot in local part", "ja..ne@example.net", E(LOCAL), NULL},
	{"trailing dot in local part", "<jane.@example.net>", E(LOCAL), NULL},
	{"two words as local part", "Jane Doe jane@example.net", E(LOCAL), NULL},
	{"two @", "a@b@c.example", E(SYNTAX), NULL},
	{"space inside a domain", "jane@ex ample.net", E(SYNTAX), NULL},
	{"addr-spec then angle", "jane@example.net <ceo@victim.example>", E(SYNTAX), NULL},
	{"addr-spec then angle, no space", "jane@example.net<ceo@victim.example>", E(SYNTAX), NULL},
	{"two angles", "Jane <ceo@victim.example> <jane@example.net>", E(SYNTAX), NULL},
	{"angle then text", "<jane@example.net>x", E(SYNTAX), NULL},
	{"unterminated angle", "<jane@example.net", E(ANGLE), NULL},
	{"stray '>'", "jane@example.net>", E(SYNTAX), NULL},
	{"backslash outside quotes", "Jane \\<ceo@victim.example>", E(SYNTAX), NULL},
	{"comment inside an atom", "<ja(c)ne@example.net>", E(LOCAL), NULL},
	{"colon in angle", "<jane:ceo@victim.example>", E(ANGLE), NULL},
	{"UTF-8 (RFC 6532)", "J\xc3\xa4ne <j\xc3\xa4ne@b\xc3\xbc" "cher.example>", OK, "j\xc3\xa4ne@b\xc3\xbc" "cher.example"},
};

static void joined(const struct addrlist *a, char *out, size_t outsz)
{
	out[0] = '\0';
	for (const char *p = addrlist_next(a, NULL); p != NULL; p = addrlist_next(a, p)) {
		size_t n = strlen(out);
		snprintf(out + n, outsz - n, "%s%s", n ? "|" : "", p);
	}
}

static size_t case_len(const struct ac *c)
{
	/* cases with a NUL byte: its length is up to the last character */
	if (strstr(c->name, "NUL") != NULL)
		return strlen(c->in) + 1 + strlen(c->in + strlen(c->in) + 1);
	return strlen(c->in);
}

static void run_case(const struct ac *c)
{
	const uint8_t *in = (const uint8_t *)c->in;
	size_t n = case_len(c);
	char whole[4096], part[4096];
	struct addrlist a;
	addrlist_init(&a);
	bool good = addrlist_parse(&a, in, n);
	joined(&a, whole, sizeof(whole));
	size_t err_at = a.error_at;
	enum addrlist_error err = a.error;
	if (c->err == OK) {
		ok(good, "%s: read (%s at %zu)", c->name, addrlist_strerror(err), err_at);
		is_str(whole, c->want, "%s: addresses", c->name);
	} else {
		ok(!good && err == c->err, "%s: refused: %s (got %s at %zu)", c->name,
		   addrlist_strerror(c->err), good ? "ok" : addrlist_strerror(err), err_at);
		is_int((long long)a.naddrs, 0, "%s: no addresses when refused", c->name);
	}
	addrlist_free(&a);

	/* one octet at a time */
	addrlist_init(&a);
	for (size_t i = 0; i < n; i++)
		addrlist_feed(&a, in + i, 1);
	bool good1 = addrlist_finish(&a);
	joined(&a, part, sizeof(part));
	ok(good1 == good && a.error == err && a.error_at == err_at && strcmp(part, whole) == 0,
	   "%s: one octet at a time: same", c->name);
	addrlist_free(&a);

	/* split in two at every point */
	bool same = true;
	for (size_t k = 0; k <= n; k++) {
		addrlist_init(&a);
		addrlist_feed(&a, in, k);
		addrlist_feed(&a, in + k, n - k);
		bool g = addrlist_finish(&a);
		joined(&a, part, sizeof(part));
		if (g != good || a.error != err || a.error_at != err_at || strcmp(part, whole) != 0) {
			if (same)
				diag("split at %zu differs", k);
			same = false;
		}
		addrlist_free(&a);
	}
	ok(same, "%s: split anywhere: same", c->name);
}

/* Long input: nothing is cut, whatever the length (invariant 11). */
static void test_long(void)
{
	size_t big = 100000;
	char *s = malloc(big + 200);
	struct addrlist a;
	char want[400];

	memset(s, 'x', big);
	memcpy(s, "(", 1);
	snprintf(s + big, 200, ") <ceo@victim.example>");
	addrlist_init(&a);
	ok(addrlist_parse(&a, (const uint8_t *)s, strlen(s)) && a.naddrs == 1 &&
		   strcmp(addrlist_next(&a, NULL), "ceo@victim.example") == 0,
	   "an address after a 100000-octet comment");
	addrlist_free(&a);

	memset(s, ' ', big);
	snprintf(s + big, 200, "<ceo@victim.example>");
	addrlist_init(&a);
	ok(addrlist_parse(&a, (const uint8_t *)s, strlen(s)) && a.naddrs == 1,
	   "an address after 100000 spaces");
	addrlist_free(&a);

	/* 1000 nested comments */
	size_t k = 0;
	for (int i = 0; i < 1000; i++)
		s[k++] = '(';
	for (int i = 0; i < 1000; i++)
		s[k++] = ')';
	snprintf(s + k, 200, " jane@example.net");
	addrlist_init(&a);
	ok(addrlist_parse(&a, (const uint8_t *)s, strlen(s)) && a.naddrs == 1, "1000 nested comments");
	addrlist_free(&a);

	memset(want, 'a', 244);
	snprintf(want + 244, sizeof(want) - 244, "@example.net.au");
	snprintf(s, big, "<%s>", want);
	addrlist_init(&a);
	ok(addrlist_parse(&a, (const uint8_t *)s, strlen(s)) && a.naddrs == 1 &&
		   strcmp(addrlist_next(&a, NULL), want) == 0,
	   "a 259-octet address is returned whole");
	addrlist_free(&a);

	/* 5000 addresses */
	k = 0;
	for (int i = 0; i < 5000; i++)
		k += (size_t)sprintf(s + k, "%su%d@example.net", i ? "," : "", i);
	addrlist_init(&a);
	ok(addrlist_parse(&a, (const uint8_t *)s, k) && a.naddrs == 5000, "5000 addresses");
	addrlist_free(&a);
	free(s);
}

static void test_strerror(void)
{
	for (int e = ADDRLIST_OK; e <= ADDRLIST_E_EMPTY; e++)
		ok(strcmp(addrlist_strerror((enum addrlist_error)e), "?") != 0, "error %d has a text", e);
	is_str(addrlist_strerror((enum addrlist_error)999), "?", "unknown error");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i]);
	test_long();
	test_strerror();
	return done_testing();
}
