/* Unit tests for smtp/cmd: line framing (RFC 5321 §2.3.8, §4.5.3.1.4) and
 * verb recognition (§4.1, §2.4). Every framing case runs whole, one byte at a
 * time and split at every point; the event sequences must be identical. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/cmd.h"
#include "tap.h"

/* Events as text: "OK[line]" (+"/lf" for a bare LF), "TOO_LONG", "SKIPPED",
 * then "|REST[bytes left unconsumed]". */
static void ev_add(struct buf *ev, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r')
			buf_append_str(ev, "\\r");
		else if (c < 0x20 || c >= 0x7f)
			buf_printf(ev, "\\x%02x", c);
		else
			buf_append(ev, &c, 1);
	}
}

/* Feeds in[0..n) in chunks of the given sizes (0-terminated list, the last
 * size repeats), like a server appending reads to its input buffer. */
static void run_lines(const char *in, size_t n, size_t max, const size_t *chunks, struct buf *ev)
{
	struct smtp_line_reader r;
	struct buf pend = BUF_INIT;
	smtp_line_reader_init(&r, max);
	size_t off = 0, ci = 0;
	while (off < n) {
		size_t c = chunks[ci];
		if (chunks[ci + 1] != 0)
			ci++;
		if (c > n - off)
			c = n - off;
		buf_append(&pend, in + off, c);
		off += c;
		for (;;) {
			size_t len, used;
			bool bare;
			enum smtp_line_status st =
				smtp_line_next(&r, buf_data(&pend), buf_len(&pend), &len, &used, &bare);
			if (used > buf_len(&pend)) {
				buf_append_str(ev, "OVERRUN");
				used = buf_len(&pend);
			}
			if (st == SMTP_LINE_OK) {
				buf_append_str(ev, "OK[");
				ev_add(ev, (const char *)buf_data(&pend), len);
				buf_append_str(ev, bare ? "]/lf " : "] ");
			} else if (st == SMTP_LINE_TOO_LONG)
				buf_append_str(ev, "TOO_LONG ");
			else if (st == SMTP_LINE_SKIPPED)
				buf_append_str(ev, "SKIPPED ");
			else if (st == SMTP_LINE_NEED_MORE && used != 0 && !r.skipping)
				buf_append_str(ev, "NEED_MORE-CONSUMED ");
			buf_consume(&pend, used);
			if (st == SMTP_LINE_NEED_MORE)
				break;
		}
	}
	buf_append_str(ev, "|REST[");
	ev_add(ev, (const char *)buf_data(&pend), buf_len(&pend));
	buf_append_str(ev, "]");
	buf_free(&pend);
}

struct line_case {
	const char *name;
	size_t max;
	const char *in; /* NULL: generated, see main */
	const char *want;
};

static char *repeat(char c, size_t n, const char *tail)
{
	size_t tl = strlen(tail);
	char *s = malloc(n + tl + 1);
	memset(s, c, n);
	memcpy(s + n, tail, tl + 1);
	return s;
}

static void test_lines(void)
{
	char *huge = repeat('x', 5000, "\r\nNOOP\r\n");
	char *two_long = repeat('y', 30, "\r\nzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\nQUIT\r\n");
	const struct line_case cases[] = {
		{"CRLF line", 512, "MAIL FROM:<a@b.example>\r\n", "OK[MAIL FROM:<a@b.example>] |REST[]"},
		{"bare LF reported (§2.3.8)", 512, "NOOP\n", "OK[NOOP]/lf |REST[]"},
		{"empty CRLF line", 512, "\r\n", "OK[] |REST[]"},
		{"empty bare LF line", 512, "\n", "OK[]/lf |REST[]"},
		{"CR inside a line is content", 512, "A\rB\r\n", "OK[A\\rB] |REST[]"},
		{"CR CR LF keeps one CR", 512, "A\r\r\n", "OK[A\\r] |REST[]"},
		{"two lines", 512, "EHLO x\r\nQUIT\r\n", "OK[EHLO x] OK[QUIT] |REST[]"},
		{"partial line not consumed", 512, "EHLO x\r\nNOOP", "OK[EHLO x] |REST[NOOP]"},
		{"partial line ending in CR", 512, "NOOP\r", "|REST[NOOP\\r]"},
		{"NUL is passed through", 512, "NO\0OP\r\n", "OK[NO\\x00OP] |REST[]"},
		{"exactly max with CRLF", 10, "0123456789\r\n", "OK[0123456789] |REST[]"},
		{"exactly max with LF", 10, "0123456789\n", "OK[0123456789]/lf |REST[]"},
		{"exactly max, CR pending", 10, "0123456789\r", "|REST[0123456789\\r]"},
		{"max+1 with CRLF", 10, "01234567890\r\n", "TOO_LONG SKIPPED |REST[]"},
		{"max+1 with LF", 10, "01234567890\n", "TOO_LONG SKIPPED |REST[]"},
		{"max plus CR CR LF", 10, "0123456789\r\r\n", "TOO_LONG SKIPPED |REST[]"},
		{"max+1 without LF yet", 10, "01234567890", "TOO_LONG |REST[]"},
		{"too long then next line (§4.5.3.1.4)", 10, NULL, "TOO_LONG SKIPPED OK[NOOP] |REST[]"},
		{"two over-long lines", 10, NULL, "TOO_LONG SKIPPED TOO_LONG SKIPPED OK[QUIT] |REST[]"},
		{"max 0: empty line ok", 0, "\r\n", "OK[] |REST[]"},
		{"max 0: one byte too long", 0, "a\r\n", "TOO_LONG SKIPPED |REST[]"},
	};
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		const struct line_case *c = &cases[t];
		const char *in = c->in;
		size_t n;
		if (in == NULL)
			in = strstr(c->name, "two") != NULL ? two_long : huge;
		n = strcmp(c->name, "NUL is passed through") == 0 ? 7 : strlen(in);

		struct buf whole = BUF_INIT, bytes = BUF_INIT;
		static const size_t all[] = {SIZE_MAX, 0}, one[] = {1, 0};
		run_lines(in, n, c->max, all, &whole);
		buf_append(&whole, "", 1);
		is_str((const char *)buf_data(&whole), c->want, "line: %s (whole)", c->name);
		run_lines(in, n, c->max, one, &bytes);
		buf_append(&bytes, "", 1);
		is_str((const char *)buf_data(&bytes), c->want, "line: %s (byte at a time)", c->name);
		bool same = true;
		for (size_t k = 1; k < n && n <= 200; k++) {
			struct buf sp = BUF_INIT;
			size_t ch[] = {k, SIZE_MAX, 0};
			run_lines(in, n, c->max, ch, &sp);
			buf_append(&sp, "", 1);
			if (strcmp((const char *)buf_data(&sp), c->want) != 0) {
				if (same)
					diag("split at %zu: %s", k, (const char *)buf_data(&sp));
				same = false;
			}
			buf_free(&sp);
		}
		ok(same, "line: %s (every split point)", c->name);
		buf_free(&whole);
		buf_free(&bytes);
	}
	free(huge);
	free(two_long);
}

static void test_skip_state(void)
{
	/* The documented sequence, step by step: TOO_LONG once, NEED_MORE
	 * (dropping bytes) until the LF, then SKIPPED once. */
	struct smtp_line_reader r;
	size_t len, used;
	bool bare;
	smtp_line_reader_init(&r, 4);
	const uint8_t *a = (const uint8_t *)"abcdefgh";
	is_int(smtp_line_next(&r, a, 8, &len, &used, &bare), SMTP_LINE_TOO_LONG, "skip: TOO_LONG first");
	is_int(used, 8, "skip: TOO_LONG consumes what it has");
	ok(r.skipping && r.reported, "skip: reader in skip state");
	is_int(smtp_line_next(&r, a, 3, &len, &used, &bare), SMTP_LINE_NEED_MORE, "skip: NEED_MORE while skipping");
	is_int(used, 3, "skip: bytes dropped while skipping");
	const uint8_t *b = (const uint8_t *)"xy\r\nQUIT\r\n";
	is_int(smtp_line_next(&r, b, 10, &len, &used, &bare), SMTP_LINE_SKIPPED, "skip: SKIPPED at the LF");
	is_int(used, 4, "skip: SKIPPED consumes through the LF");
	is_int(smtp_line_next(&r, b + 4, 6, &len, &used, &bare), SMTP_LINE_OK, "skip: next line OK");
	is_int(len, 4, "skip: next line length");
	ok(!r.skipping && !r.reported, "skip: state cleared");
	is_int(smtp_line_next(&r, b, 0, &len, &used, &bare), SMTP_LINE_NEED_MORE, "empty input: NEED_MORE");
	is_int(used, 0, "empty input: nothing consumed");
}

struct cmd_case {
	const char *line;
	enum smtp_verb verb;
	const char *args;
};

static void test_parse(void)
{
	const struct cmd_case cases[] = {
		{"MAIL FROM:<a@b.example>", SMTP_VERB_MAIL, "FROM:<a@b.example>"},
		{"mail from:<a@b.example>", SMTP_VERB_MAIL, "from:<a@b.example>"},
		{"MaIl FROM:<a@b.example>   ", SMTP_VERB_MAIL, "FROM:<a@b.example>"},
		{"MAIL    FROM:<a@b.example> \t ", SMTP_VERB_MAIL, "FROM:<a@b.example>"},
		{"MAILX FROM:<a@b.example>", SMTP_VERB_UNKNOWN, "FROM:<a@b.example>"},
		{"MAI", SMTP_VERB_UNKNOWN, ""},
		{"MAIL", SMTP_VERB_MAIL, ""},
		{"MAIL ", SMTP_VERB_MAIL, ""},
		{"MAIL\tFROM:<a@b>", SMTP_VERB_UNKNOWN, ""},
		{" MAIL FROM:<a@b>", SMTP_VERB_UNKNOWN, "MAIL FROM:<a@b>"},
		{"", SMTP_VERB_UNKNOWN, ""},
		{"RCPT TO:<c@d.example> NOTIFY=NEVER", SMTP_VERB_RCPT, "TO:<c@d.example> NOTIFY=NEVER"},
		{"rcpt to:<c@d>", SMTP_VERB_RCPT, "to:<c@d>"},
		{"EHLO client.example", SMTP_VERB_EHLO, "client.example"},
		{"helo client", SMTP_VERB_HELO, "client"},
		{"STARTTLS", SMTP_VERB_STARTTLS, ""},
		{"starttls", SMTP_VERB_STARTTLS, ""},
		{"STARTTLSX", SMTP_VERB_UNKNOWN, ""},
		{"AUTH PLAIN AGFAYg==", SMTP_VERB_AUTH, "PLAIN AGFAYg=="},
		{"DATA", SMTP_VERB_DATA, ""},
		{"DATAX", SMTP_VERB_UNKNOWN, ""},
		{"data x", SMTP_VERB_DATA, "x"},
		{"BDAT 100 LAST", SMTP_VERB_BDAT, "100 LAST"},
		{"RSET", SMTP_VERB_RSET, ""},
		{"NOOP  anything at all ", SMTP_VERB_NOOP, "anything at all"},
		{"QUIT", SMTP_VERB_QUIT, ""},
		{"HELP", SMTP_VERB_HELP, ""},
		{"VRFY postmaster", SMTP_VERB_VRFY, "postmaster"},
		{"EXPN list", SMTP_VERB_EXPN, "list"},
		{"ETRN example.org", SMTP_VERB_ETRN, "example.org"},
		{"UNKNOWN", SMTP_VERB_UNKNOWN, ""},
		{"GET / HTTP/1.1", SMTP_VERB_UNKNOWN, "/ HTTP/1.1"},
	};
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		const struct cmd_case *c = &cases[t];
		struct smtp_cmd cmd;
		smtp_cmd_parse(c->line, strlen(c->line), &cmd);
		is_int(cmd.verb, c->verb, "parse \"%s\": verb %s", c->line, smtp_verb_name(c->verb));
		if (c->verb != SMTP_VERB_UNKNOWN || c->args[0] != '\0') {
			char a[128];
			snprintf(a, sizeof(a), "%.*s", (int)cmd.args_len, cmd.args);
			is_str(a, c->args, "parse \"%s\": args", c->line);
		}
	}
	/* The argument pointer points into the line. */
	const char *l = "VRFY x";
	struct smtp_cmd cmd;
	smtp_cmd_parse(l, 6, &cmd);
	ok(cmd.args == l + 5 && cmd.args_len == 1, "args point into the line");
	/* Only len bytes are looked at. */
	smtp_cmd_parse("QUITTER", 4, &cmd);
	is_int(cmd.verb, SMTP_VERB_QUIT, "parse honours len");

	for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);
		smtp_cmd_parse(name, strlen(name), &cmd);
		is_int(cmd.verb, v, "verb name %s parses back", name);
	}
	is_str(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN", "name of UNKNOWN");
	is_str(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN", "name out of range");
}

int main(void)
{
	test_lines();
	test_skip_state();
	test_parse();
	return done_testing();
}
