/* smtp/cmd: command-line framing and verb recognition (RFC 5321 §2.3.8, §4.1).
 *
 * Pure codec: no I/O, no libuv. Resumable: smtp_line_next() may be called with
 * whatever bytes have arrived so far; it never consumes a partial line. */
#ifndef SUBMITD_SMTP_CMD_H
#define SUBMITD_SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_line_status {
	SMTP_LINE_NEED_MORE, /* no complete line yet; nothing consumed */
	SMTP_LINE_OK,        /* a line: *line_len_r bytes, terminator excluded */
	SMTP_LINE_TOO_LONG,  /* a line longer than max: *consumed_r bytes dropped.
	                        The reader stays in "skip until LF" state, so the
	                        next call drops the rest of that line and returns
	                        SMTP_LINE_NEED_MORE until the LF, then
	                        SMTP_LINE_SKIPPED once (reply 500 5.5.2 then). */
	SMTP_LINE_SKIPPED,   /* the end of an over-long line was consumed */
};

struct smtp_line_reader {
	size_t max;    /* longest accepted line, terminator excluded */
	bool skipping; /* inside an over-long line */
	bool reported; /* TOO_LONG already returned for the current over-long line */
};

void smtp_line_reader_init(struct smtp_line_reader *r, size_t max);

/* Looks for one line in in[0..n). A line ends at LF. On SMTP_LINE_OK,
 * *line_len_r excludes the CRLF (or the bare LF), *consumed_r includes it, and
 * *bare_lf_r tells whether the LF was not preceded by CR (RFC 5321 §2.3.8:
 * only CRLF ends a line; the caller decides whether to refuse). */
enum smtp_line_status smtp_line_next(struct smtp_line_reader *r, const uint8_t *in, size_t n,
				     size_t *line_len_r, size_t *consumed_r, bool *bare_lf_r);

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_HELP,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_ETRN,
	SMTP_VERB_COUNT
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *args; /* after the verb and the spaces that follow it; points into the line */
	size_t args_len;  /* trailing spaces removed */
};

/* Splits a line (terminator excluded) into verb and arguments. Verbs are
 * case-insensitive. A verb must be followed by SP or end of line
 * ("MAILX" is UNKNOWN). Never fails: an empty or unrecognised line gives
 * SMTP_VERB_UNKNOWN. (NUL bytes are the caller's concern: it refuses lines
 * containing them before parsing.) */
void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd_r);

const char *smtp_verb_name(enum smtp_verb verb);

#endif
