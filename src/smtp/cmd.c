/* smtp/cmd: command-line framing and verb recognition (RFC 5321 §2.3.8, §4.1). */
#include "config.h"
#include "smtp/cmd.h"

#include <string.h>

void smtp_line_reader_init(struct smtp_line_reader *r, size_t max)
{
	r->max = max;
	r->skipping = false;
	r->reported = false;
}

/* Drops an over-long line: everything before the next LF is consumed now, the
 * LF itself is left for the next call, which then reports SKIPPED. Leaving the
 * LF behind makes the status sequence the same however the bytes arrive. */
static enum smtp_line_status smtp_line_too_long(struct smtp_line_reader *r, const uint8_t *in,
						size_t n, size_t *consumed_r)
{
	const uint8_t *lf = memchr(in, '\n', n);
	*consumed_r = lf != NULL ? (size_t)(lf - in) : n;
	r->skipping = true;
	r->reported = true;
	return SMTP_LINE_TOO_LONG;
}

enum smtp_line_status smtp_line_next(struct smtp_line_reader *r, const uint8_t *in, size_t n,
				     size_t *line_len_r, size_t *consumed_r, bool *bare_lf_r)
{
	*line_len_r = 0;
	*consumed_r = 0;
	*bare_lf_r = false;
	if (n == 0)
		return SMTP_LINE_NEED_MORE; /* in may be NULL (an empty buf) */

	if (r->skipping) {
		/* Inside an over-long line: drop bytes up to and including the LF. */
		const uint8_t *lf = memchr(in, '\n', n);
		if (lf == NULL) {
			*consumed_r = n;
			return SMTP_LINE_NEED_MORE;
		}
		*consumed_r = (size_t)(lf - in) + 1;
		r->skipping = false;
		r->reported = false;
		return SMTP_LINE_SKIPPED;
	}

	/* A line of max bytes needs at most max + 2 with its CRLF: never look
	 * further, so a flood without LF costs O(max) per call. */
	size_t lim = n;
	if (r->max <= SIZE_MAX - 2 && lim > r->max + 2)
		lim = r->max + 2;
	const uint8_t *lf = memchr(in, '\n', lim);
	if (lf != NULL) {
		size_t pos = (size_t)(lf - in);
		bool bare = pos == 0 || in[pos - 1] != '\r';
		size_t len = bare ? pos : pos - 1;
		if (len > r->max)
			return smtp_line_too_long(r, in, n, consumed_r);
		*line_len_r = len;
		*consumed_r = pos + 1;
		*bare_lf_r = bare;
		return SMTP_LINE_OK;
	}
	/* No LF yet: too long as soon as the content surely exceeds max. A CR
	 * in position max may still be the first half of the CRLF. */
	if (r->max >= SIZE_MAX - 1)
		return SMTP_LINE_NEED_MORE;
	if (n > r->max + 1 || (n == r->max + 1 && in[r->max] != '\r'))
		return smtp_line_too_long(r, in, n, consumed_r);
	return SMTP_LINE_NEED_MORE;
}

static const struct {
	const char *name;
	size_t len;
} smtp_cmd_verbs[SMTP_VERB_COUNT] = {
	[SMTP_VERB_UNKNOWN] = {"UNKNOWN", 0}, [SMTP_VERB_HELO] = {"HELO", 4},
	[SMTP_VERB_EHLO] = {"EHLO", 4},       [SMTP_VERB_STARTTLS] = {"STARTTLS", 8},
	[SMTP_VERB_AUTH] = {"AUTH", 4},       [SMTP_VERB_MAIL] = {"MAIL", 4},
	[SMTP_VERB_RCPT] = {"RCPT", 4},       [SMTP_VERB_DATA] = {"DATA", 4},
	[SMTP_VERB_BDAT] = {"BDAT", 4},       [SMTP_VERB_RSET] = {"RSET", 4},
	[SMTP_VERB_NOOP] = {"NOOP", 4},       [SMTP_VERB_QUIT] = {"QUIT", 4},
	[SMTP_VERB_HELP] = {"HELP", 4},       [SMTP_VERB_VRFY] = {"VRFY", 4},
	[SMTP_VERB_EXPN] = {"EXPN", 4},       [SMTP_VERB_ETRN] = {"ETRN", 4},
};

/* ASCII only: verbs must not depend on the locale (RFC 5321 §2.4). */
static int smtp_cmd_upper(int c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

static bool smtp_cmd_space(char c)
{
	return c == ' ' || c == '\t';
}

void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd_r)
{
	/* The verb is the token up to the first SP (RFC 5321 §4.1.1: verb SP
	 * args); a tab or any other byte makes it a different token. */
	const char *sp = len > 0 ? memchr(line, ' ', len) : NULL;
	size_t vlen = sp != NULL ? (size_t)(sp - line) : len;

	cmd_r->verb = SMTP_VERB_UNKNOWN;
	for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
		if (smtp_cmd_verbs[v].len != vlen)
			continue;
		size_t i = 0;
		while (i < vlen &&
		       smtp_cmd_upper((unsigned char)line[i]) == smtp_cmd_verbs[v].name[i])
			i++;
		if (i == vlen) {
			cmd_r->verb = (enum smtp_verb)v;
			break;
		}
	}

	/* Arguments: after the SPs that follow the verb, trailing blanks
	 * dropped. Also filled for an unknown verb, for logging. */
	size_t a = vlen;
	while (a < len && smtp_cmd_space(line[a]))
		a++;
	size_t e = len;
	while (e > a && smtp_cmd_space(line[e - 1]))
		e--;
	cmd_r->args = line + a;
	cmd_r->args_len = e - a;
}

const char *smtp_verb_name(enum smtp_verb verb)
{
	if ((int)verb <= SMTP_VERB_UNKNOWN || verb >= SMTP_VERB_COUNT)
		return "UNKNOWN";
	return smtp_cmd_verbs[verb].name;
}
