/* Unit tests for smtp/reply: downstream replies (RFC 5321 §4.2, §4.2.1,
 * RFC 2034, RFC 3463) and EHLO capabilities. Every case runs whole, one byte
 * at a time and split at every point. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/reply.h"
#include "tap.h"

struct outcome {
	enum smtp_reply_status st;
	size_t consumed;
	struct smtp_reply r;
};

/* Like the relay: append each read to a buffer, parse until not NEED_MORE. */
static void run(const char *in, size_t n, size_t step, size_t first, struct outcome *o)
{
	struct smtp_reply_parser p;
	struct buf b = BUF_INIT;
	smtp_reply_parser_init(&p);
	memset(o, 0, sizeof(*o));
	o->st = SMTP_REPLY_NEED_MORE;
	size_t off = 0;
	while (off < n) {
		size_t c = off == 0 && first ? first : step;
		if (c > n - off)
			c = n - off;
		buf_append(&b, in + off, c);
		off += c;
		size_t used = 0;
		o->st = smtp_reply_parse(&p, buf_data(&b), buf_len(&b), &used, &o->r);
		if (o->st == SMTP_REPLY_NEED_MORE && used != 0)
			o->consumed = (size_t)-1; /* contract: nothing consumed */
		if (o->st != SMTP_REPLY_NEED_MORE) {
			o->consumed = used;
			break;
		}
	}
	buf_free(&b);
}

static bool same(const struct outcome *a, const struct outcome *b)
{
	if (a->st != b->st || a->consumed != b->consumed)
		return false;
	if (a->st != SMTP_REPLY_DONE)
		return true;
	return a->r.code == b->r.code && a->r.lines == b->r.lines && strcmp(a->r.enh, b->r.enh) == 0 &&
	       strcmp(a->r.text, b->r.text) == 0;
}

#define DONE SMTP_REPLY_DONE
#define MORE SMTP_REPLY_NEED_MORE
#define ERR SMTP_REPLY_ERROR

struct reply_case {
	const char *name;
	const char *in;
	enum smtp_reply_status st;
	size_t consumed; /* 0: whole input on DONE */
	int code;
	const char *enh, *text;
	int lines;
};

static const struct reply_case cases[] = {
	{"single line", "250 OK\r\n", DONE, 0, 250, "", "OK", 1},
	{"enhanced code", "250 2.1.0 Ok\r\n", DONE, 0, 250, "2.1.0", "Ok", 1},
	{"enhanced code only", "250 2.1.0\r\n", DONE, 0, 250, "2.1.0", "", 1},
	{"enhanced code, 3-digit parts", "550 5.100.999 x\r\n", DONE, 0, 550, "5.100.999", "x", 1},
	{"enhanced class must match", "250 5.1.1 odd\r\n", DONE, 0, 250, "", "5.1.1 odd", 1},
	{"not an enhanced code", "250 2.1.0x y\r\n", DONE, 0, 250, "", "2.1.0x y", 1},
	{"4-digit subject is text", "451 4.1000.1 y\r\n", DONE, 0, 451, "", "4.1000.1 y", 1},
	{"multi-line (§4.2.1)", "250-mx.example Hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n", DONE, 0, 250, "",
	 "mx.example Hello\nPIPELINING\n8BITMIME", 3},
	{"code alone", "250\r\n", DONE, 0, 250, "", "", 1},
	{"code alone after continuation", "250-a\r\n250\r\n", DONE, 0, 250, "", "a\n", 2},
	{"bare LF from a server", "220 hi\n", DONE, 0, 220, "", "hi", 1},
	{"354", "354 End data with <CR><LF>.<CR><LF>\r\n", DONE, 0, 354, "", "End data with <CR><LF>.<CR><LF>", 1},
	{"only the first reply", "250 A\r\n250 B\r\n", DONE, 7, 250, "", "A", 1},
	{"control chars replaced", "250 a\tb\x01\x7f" "c\r\n", DONE, 0, 250, "", "a?b??c", 1},
	{"CR inside a line", "250 a\rb\r\n", DONE, 0, 250, "", "a?b", 1},
	{"incomplete", "250-a\r\n250 b", MORE, 0, 0, "", "", 0},
	{"incomplete CR", "250 OK\r", MORE, 0, 0, "", "", 0},
	{"short code", "25\r\n", ERR, 0, 0, "", "", 0},
	{"4-digit code", "2500 x\r\n", ERR, 0, 0, "", "", 0},
	{"letters", "abc\r\n", ERR, 0, 0, "", "", 0},
	{"099", "099 x\r\n", ERR, 0, 0, "", "", 0},
	{"600", "600 x\r\n", ERR, 0, 0, "", "", 0},
	{"second digit 6", "260 x\r\n", ERR, 0, 0, "", "", 0},
	{"code glued to text", "250x\r\n", ERR, 0, 0, "", "", 0},
	{"empty line", "\r\n", ERR, 0, 0, "", "", 0},
	{"inconsistent codes", "250-a\r\n251 b\r\n", ERR, 0, 0, "", "", 0},
	{"inconsistent codes, same class", "250-a\r\n250-b\r\n220 c\r\n", ERR, 0, 0, "", "", 0},
};

static void test_table(void)
{
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		const struct reply_case *c = &cases[t];
		size_t n = strlen(c->in);
		struct outcome whole, bytes;
		run(c->in, n, n, 0, &whole);
		is_int(whole.st, c->st, "%s: status", c->name);
		if (c->st == DONE) {
			is_int((long long)whole.consumed, (long long)(c->consumed ? c->consumed : n), "%s: consumed", c->name);
			is_int(whole.r.code, c->code, "%s: code", c->name);
			is_str(whole.r.enh, c->enh, "%s: enhanced code", c->name);
			is_str(whole.r.text, c->text, "%s: text", c->name);
			is_int(whole.r.lines, c->lines, "%s: lines", c->name);
		} else {
			is_int((long long)whole.consumed, 0, "%s: nothing consumed", c->name);
		}
		run(c->in, n, 1, 0, &bytes);
		ok(same(&whole, &bytes), "%s: one byte at a time gives the same", c->name);
		bool all = true;
		for (size_t k = 1; k < n; k++) {
			struct outcome sp;
			run(c->in, n, n, k, &sp);
			all &= same(&whole, &sp);
		}
		ok(all, "%s: every split point gives the same", c->name);
	}
}

static void test_bounds(void)
{
	struct buf b = BUF_INIT;
	struct outcome w, o;

	/* line length (SMTP_REPLY_LINE_MAX, text excluded CRLF) */
	buf_append_str(&b, "250 ");
	for (int k = 0; k < SMTP_REPLY_LINE_MAX - 4; k++)
		buf_append(&b, "x", 1);
	buf_append_str(&b, "\r\n");
	run((const char *)buf_data(&b), buf_len(&b), buf_len(&b), 0, &w);
	is_int(w.st, DONE, "line of LINE_MAX ok");
	run((const char *)buf_data(&b), buf_len(&b), 1, 0, &o);
	ok(same(&w, &o), "line of LINE_MAX ok byte by byte");
	buf_reset(&b);
	buf_append_str(&b, "250 ");
	for (int k = 0; k < SMTP_REPLY_LINE_MAX - 3; k++)
		buf_append(&b, "x", 1);
	buf_append_str(&b, "\r\n");
	run((const char *)buf_data(&b), buf_len(&b), buf_len(&b), 0, &w);
	is_int(w.st, ERR, "line of LINE_MAX+1 is an error");
	run((const char *)buf_data(&b), buf_len(&b), 1, 0, &o);
	is_int(o.st, ERR, "line of LINE_MAX+1 is an error byte by byte");
	/* An endless line without LF is refused before it ends. */
	run((const char *)buf_data(&b), buf_len(&b) - 2, 1, 0, &o);
	is_int(o.st, ERR, "endless line refused without waiting for LF");

	/* number of lines */
	buf_reset(&b);
	for (int k = 0; k < SMTP_REPLY_MAX_LINES - 1; k++)
		buf_append_str(&b, "250-x\r\n");
	buf_append_str(&b, "250 y\r\n");
	run((const char *)buf_data(&b), buf_len(&b), buf_len(&b), 0, &w);
	ok(w.st == DONE && w.r.lines == SMTP_REPLY_MAX_LINES, "MAX_LINES lines ok");
	buf_reset(&b);
	for (int k = 0; k < SMTP_REPLY_MAX_LINES; k++)
		buf_append_str(&b, "250-x\r\n");
	buf_append_str(&b, "250 y\r\n");
	run((const char *)buf_data(&b), buf_len(&b), buf_len(&b), 0, &w);
	is_int(w.st, ERR, "MAX_LINES+1 lines is an error");
	run((const char *)buf_data(&b), buf_len(&b), 1, 0, &o);
	is_int(o.st, ERR, "MAX_LINES+1 lines is an error byte by byte");

	/* text is truncated, NUL-terminated */
	buf_reset(&b);
	for (int k = 0; k < 40; k++) {
		buf_append_str(&b, "250-");
		for (int j = 0; j < 200; j++)
			buf_append(&b, "t", 1);
		buf_append_str(&b, "\r\n");
	}
	buf_append_str(&b, "250 end\r\n");
	run((const char *)buf_data(&b), buf_len(&b), buf_len(&b), 0, &w);
	ok(w.st == DONE && strlen(w.r.text) == SMTP_REPLY_TEXT_MAX - 1, "long text truncated to fit");

	/* ERROR is sticky until init */
	struct smtp_reply_parser p;
	struct smtp_reply r;
	size_t used;
	smtp_reply_parser_init(&p);
	is_int(smtp_reply_parse(&p, (const uint8_t *)"xyz\r\n", 5, &used, &r), ERR, "error");
	is_int(smtp_reply_parse(&p, (const uint8_t *)"250 ok\r\n", 8, &used, &r), ERR, "error is sticky");
	smtp_reply_parser_init(&p);
	is_int(smtp_reply_parse(&p, (const uint8_t *)"250 ok\r\n", 8, &used, &r), DONE, "init clears the error");
	/* after DONE, the next reply parses from scratch */
	const char *two = "250-a\r\n250 b\r\n354 go\r\n";
	smtp_reply_parser_init(&p);
	is_int(smtp_reply_parse(&p, (const uint8_t *)two, strlen(two), &used, &r), DONE, "first of two");
	is_int(smtp_reply_parse(&p, (const uint8_t *)two + used, strlen(two) - used, &used, &r), DONE, "second of two");
	ok(r.code == 354 && strcmp(r.text, "go") == 0, "second reply is the 354");
	buf_free(&b);
}

static void caps_of(const char *in, struct smtp_caps *c)
{
	struct outcome o;
	run(in, strlen(in), strlen(in), 0, &o);
	if (o.st != DONE)
		diag("caps input did not parse");
	smtp_caps_parse(&o.r, c);
}

static void test_caps(void)
{
	struct smtp_caps c;
	caps_of("250-mx.example Hello\r\n250-STARTTLS\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
		"250-DSN\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 1000\r\n250 AUTH PLAIN LOGIN\r\n",
		&c);
	ok(c.starttls && c.pipelining && c.eightbitmime && c.smtputf8 && c.dsn && c.chunking &&
		   c.enhancedstatuscodes,
	   "caps: all keywords");
	ok(c.size_present && c.size == 1000, "caps: SIZE 1000");
	ok(c.auth_plain && c.auth_login, "caps: AUTH PLAIN LOGIN");

	caps_of("250-mx\r\n250-starttls\r\n250-Pipelining\r\n250 auth login\r\n", &c);
	ok(c.starttls && c.pipelining && c.auth_login && !c.auth_plain, "caps: case-insensitive");
	ok(!c.size_present && !c.dsn && !c.chunking, "caps: absent ones false");

	caps_of("250-mx\r\n250-SIZE\r\n250 AUTH=LOGIN\r\n", &c);
	ok(c.size_present && c.size == 0, "caps: SIZE without value = no fixed limit");
	ok(c.auth_login && !c.auth_plain, "caps: old AUTH=LOGIN form");

	caps_of("250-mx\r\n250-AUTH=PLAIN LOGIN\r\n250 SIZE abc\r\n", &c);
	ok(c.auth_login && c.auth_plain, "caps: AUTH= form with two mechanisms");
	ok(c.size_present && c.size == 0, "caps: unreadable SIZE = no fixed limit");

	caps_of("250-mx\r\n250 SIZE 18446744073709551616\r\n", &c);
	ok(c.size_present && c.size == 0, "caps: overflowing SIZE = no fixed limit");

	caps_of("250 STARTTLS\r\n", &c);
	ok(!c.starttls, "caps: the first line is the greeting, not a keyword");

	caps_of("250-mx\r\n250-STARTTLSX\r\n250-AUTH CRAM-MD5 PLAINX\r\n250 XPIPELINING\r\n", &c);
	ok(!c.starttls && !c.auth_plain && !c.auth_login && !c.pipelining, "caps: whole words only");

	caps_of("250-mx\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 DSN\r\n", &c);
	ok(c.pipelining && c.dsn, "caps: enhanced codes on each line tolerated");

	caps_of("550-mx\r\n550 STARTTLS\r\n", &c);
	ok(!c.starttls, "caps: only from a 250 reply");
}

int main(void)
{
	test_table();
	test_bounds();
	test_caps();
	return done_testing();
}
