/* smtp/reply: parsing downstream replies (RFC 5321 §4.2, RFC 2034, RFC 2920)
 * and EHLO capabilities (RFC 5321 §4.1.1.1). */
#include "config.h"
#include "smtp/reply.h"

#include <string.h>

enum { SMTP_REPLY_OK = 0, SMTP_REPLY_BROKEN = 1 };

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
}

static bool smtp_reply_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* Reply-line = Reply-code [ SP / "-" textstring ], Reply-code = %x32-35
 * %x30-35 %x30-39 (RFC 5321 §4.2). "250" alone is a last line. */
static bool smtp_reply_code(const uint8_t *s, size_t len, int *code_r, bool *last_r)
{
	if (len < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '5' ||
	    !smtp_reply_digit(s[2]))
		return false;
	*code_r = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	if (len == 3) {
		*last_r = true;
		return true;
	}
	if (s[3] != ' ' && s[3] != '-')
		return false;
	*last_r = s[3] == ' ';
	return true;
}

/* Length of an enhanced status code "class.subject.detail" (RFC 3463 §2:
 * class 2/4/5 matching the reply, subject and detail 1-3 digits) at s,
 * followed by SP or the end; 0 if there is none. */
static size_t smtp_reply_enh(const uint8_t *s, size_t len, int code)
{
	if (len < 5 || s[0] != '0' + code / 100 || s[1] != '.')
		return 0;
	size_t i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < len && smtp_reply_digit(s[i]) && d < 4) {
			i++;
			d++;
		}
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	return i == len || s[i] == ' ' ? i : 0;
}

/* Line length without its terminator (CRLF or bare LF at in[e]). */
static size_t smtp_reply_line_len(const uint8_t *in, size_t start, size_t e)
{
	return e > start && in[e - 1] == '\r' ? e - 1 - start : e - start;
}

/* Fills *r from the complete, already checked reply in in[0..end). */
static void smtp_reply_build(const uint8_t *in, size_t end, int code, int lines,
			     struct smtp_reply *r)
{
	size_t t = 0;
	r->code = code;
	r->lines = lines;
	r->enh[0] = '\0';
	for (size_t i = 0; i < end;) {
		const uint8_t *lf = memchr(in + i, '\n', end - i);
		size_t e = (size_t)(lf - in);
		size_t len = smtp_reply_line_len(in, i, e);
		size_t a = len > 4 ? 4 : len;
		if (i == 0) {
			size_t el = smtp_reply_enh(in + a, len - a, code);
			if (el > 0) {
				memcpy(r->enh, in + a, el);
				r->enh[el] = '\0';
				a += el;
				while (a < len && in[a] == ' ')
					a++;
			}
		} else if (t < sizeof(r->text) - 1) {
			r->text[t++] = '\n';
		}
		for (size_t k = i + a; k < i + len && t < sizeof(r->text) - 1; k++) {
			uint8_t c = in[k];
			r->text[t++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
		}
		i = e + 1;
	}
	r->text[t] = '\0';
}

enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const uint8_t *in, size_t n,
					size_t *consumed_r, struct smtp_reply *reply_r)
{
	*consumed_r = 0;
	if (p->state == SMTP_REPLY_BROKEN)
		return SMTP_REPLY_ERROR;
	if (p->scanned > n) /* not the bytes we saw before: start over */
		smtp_reply_parser_init(p);

	size_t i = p->scanned;
	for (;;) {
		const uint8_t *lf = n > i ? memchr(in + i, '\n', n - i) : NULL;
		if (lf == NULL) {
			/* Too long as soon as the partial line surely is. */
			size_t part = n - i;
			if (part > SMTP_REPLY_LINE_MAX + 1 ||
			    (part == SMTP_REPLY_LINE_MAX + 1 && in[n - 1] != '\r'))
				break;
			p->scanned = i;
			return SMTP_REPLY_NEED_MORE;
		}
		size_t e = (size_t)(lf - in);
		size_t len = smtp_reply_line_len(in, i, e);
		int code;
		bool last;
		if (len > SMTP_REPLY_LINE_MAX || !smtp_reply_code(in + i, len, &code, &last))
			break;
		/* RFC 5321 §4.2.1: every line of a reply has the same code. */
		if (p->lines > 0 && code != p->code)
			break;
		p->code = code;
		if (++p->lines > SMTP_REPLY_MAX_LINES)
			break;
		i = e + 1;
		if (last) {
			smtp_reply_build(in, i, code, p->lines, reply_r);
			*consumed_r = i;
			smtp_reply_parser_init(p);
			return SMTP_REPLY_DONE;
		}
	}
	smtp_reply_parser_init(p);
	p->state = SMTP_REPLY_BROKEN;
	return SMTP_REPLY_ERROR;
}

static int smtp_reply_upper(int c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

/* Case-insensitive: s[0..n) equals the upper-case word. */
static bool smtp_reply_word(const char *s, size_t n, const char *word)
{
	size_t i = 0;
	for (; i < n && word[i] != '\0'; i++)
		if (smtp_reply_upper((unsigned char)s[i]) != word[i])
			return false;
	return i == n && word[i] == '\0';
}

/* Marks the mechanisms we can use from a space-separated list. */
static void smtp_caps_auth(const char *s, size_t n, struct smtp_caps *c)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && s[i] == ' ')
			i++;
		size_t w = i;
		while (i < n && s[i] != ' ')
			i++;
		if (smtp_reply_word(s + w, i - w, "PLAIN"))
			c->auth_plain = true;
		else if (smtp_reply_word(s + w, i - w, "LOGIN"))
			c->auth_login = true;
	}
}

/* ehlo-line = ehlo-keyword *( SP ehlo-param ) (RFC 5321 §4.1.1.1). */
static void smtp_caps_line(const char *s, size_t n, struct smtp_caps *c)
{
	/* Tolerate a server that puts an enhanced code on every line. */
	int code = 250;
	size_t el = smtp_reply_enh((const uint8_t *)s, n, code);
	if (el > 0) {
		s += el;
		n -= el;
		while (n > 0 && *s == ' ') {
			s++;
			n--;
		}
	}
	size_t kl = 0;
	while (kl < n && s[kl] != ' ')
		kl++;
	const char *arg = s + kl;
	size_t al = n - kl;

	/* "AUTH=LOGIN PLAIN": the pre-RFC 2554 form some servers still send. */
	if (kl >= 5 && smtp_reply_word(s, 5, "AUTH=")) {
		smtp_caps_auth(s + 5, n - 5, c);
		return;
	}
	if (smtp_reply_word(s, kl, "AUTH"))
		smtp_caps_auth(arg, al, c);
	else if (smtp_reply_word(s, kl, "STARTTLS"))
		c->starttls = true;
	else if (smtp_reply_word(s, kl, "PIPELINING"))
		c->pipelining = true;
	else if (smtp_reply_word(s, kl, "8BITMIME"))
		c->eightbitmime = true;
	else if (smtp_reply_word(s, kl, "SMTPUTF8"))
		c->smtputf8 = true;
	else if (smtp_reply_word(s, kl, "DSN"))
		c->dsn = true;
	else if (smtp_reply_word(s, kl, "CHUNKING"))
		c->chunking = true;
	else if (smtp_reply_word(s, kl, "ENHANCEDSTATUSCODES"))
		c->enhancedstatuscodes = true;
	else if (smtp_reply_word(s, kl, "SIZE")) {
		/* RFC 1870 §4: "SIZE" [SP number]; 0 or none = no fixed
		 * limit. A value we cannot read counts as none. */
		c->size_present = true;
		c->size = 0;
		size_t i = 0;
		while (i < al && arg[i] == ' ')
			i++;
		uint64_t v = 0;
		size_t d = 0;
		for (; i < al && arg[i] >= '0' && arg[i] <= '9'; i++, d++) {
			unsigned x = (unsigned)(arg[i] - '0');
			if (v > (UINT64_MAX - x) / 10)
				return;
			v = v * 10 + x;
		}
		if (d > 0 && (i == al || arg[i] == ' '))
			c->size = v;
	}
}

void smtp_caps_parse(const struct smtp_reply *reply, struct smtp_caps *caps_r)
{
	memset(caps_r, 0, sizeof(*caps_r));
	if (reply->code != 250)
		return;
	/* The first line is the greeting ("host Hello ..."), not a keyword. */
	const char *nl = strchr(reply->text, '\n');
	while (nl != NULL) {
		const char *line = nl + 1;
		nl = strchr(line, '\n');
		size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
		smtp_caps_line(line, len, caps_r);
	}
}
