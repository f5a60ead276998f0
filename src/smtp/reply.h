/* smtp/reply: parsing replies from a downstream SMTP/LMTP server (RFC 5321
 * §4.2, RFC 2034, RFC 2920) and its EHLO capabilities.
 *
 * Pure codec, resumable, bounded: a reply with more than SMTP_REPLY_MAX_LINES
 * lines, a line longer than SMTP_REPLY_LINE_MAX, inconsistent codes across
 * lines, or a malformed code is an error (the relay then treats the
 * connection as broken: 451 4.4.2 to the client). */
#ifndef SUBMITD_SMTP_REPLY_H
#define SUBMITD_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_LINE_MAX 2048
#define SMTP_REPLY_MAX_LINES 64
#define SMTP_REPLY_TEXT_MAX 4096

struct smtp_reply {
	int code;     /* 200..599 */
	char enh[16]; /* enhanced status code "c.s.d" from the first line, or "" */
	/* Text of all lines joined with '\n', without code, separator and (for
	   the first line) without the enhanced code; truncated to fit, always
	   NUL-terminated, control characters replaced by '?'. */
	char text[SMTP_REPLY_TEXT_MAX];
	int lines;
};

enum smtp_reply_status {
	SMTP_REPLY_NEED_MORE,
	SMTP_REPLY_DONE,  /* *reply_r complete; *consumed_r bytes used */
	SMTP_REPLY_ERROR, /* malformed or oversized; the stream cannot be trusted */
};

struct smtp_reply_parser { /* private */
	int state;
	int code;
	int lines;
	size_t scanned; /* bytes of complete lines already checked */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);

/* Consumes whole lines from in[0..n) (lines end in CRLF; a bare LF is
 * accepted as a line end from servers). Returns DONE after the last line of a
 * reply (the one with SP, or nothing, after the code); the parser is then
 * reset for the next reply. Stops after one reply even if more bytes follow.
 * NEED_MORE and ERROR consume nothing (*consumed_r = 0): call again with the
 * same bytes plus the new ones; lines already checked are not rescanned.
 * After ERROR the parser keeps answering ERROR until it is initialised. */
enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const uint8_t *in, size_t n,
					size_t *consumed_r, struct smtp_reply *reply_r);

/* EHLO/LHLO capabilities, from a 250 reply's text lines after the first. */
struct smtp_caps {
	bool starttls, pipelining, eightbitmime, smtputf8, dsn, chunking, enhancedstatuscodes;
	bool size_present;
	uint64_t size;               /* 0 = no fixed limit */
	bool auth_plain, auth_login; /* AUTH mechanisms we can use as a client */
};

void smtp_caps_parse(const struct smtp_reply *reply, struct smtp_caps *caps_r);

#endif
