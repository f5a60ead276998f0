/* smtp/data: the DATA and BDAT content decoder (RFC 5321 §4.1.1.4, §4.5.2;
 * RFC 3030; docs/design.md invariant 7; CVE-2023-51764 "SMTP smuggling").
 *
 * Input: the raw bytes the client sends after 354 (or a BDAT chunk).
 * Output: the message in canonical form: every line ends in CRLF, dots
 * unstuffed. The relay re-stuffs on output. Pure codec, resumable at any
 * byte boundary: feeding a stream whole or one byte at a time gives the
 * same output and the same verdict. */
#ifndef SUBMITD_SMTP_DATA_H
#define SUBMITD_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum smtp_newline_mode {
	SMTP_NEWLINE_REJECT, /* bare CR or LF marks the message bad (reply 550 5.5.2 at the end) */
	SMTP_NEWLINE_NORMALIZE, /* bare LF becomes CRLF, bare CR becomes a space;
	                           never an end of data */
};

enum smtp_data_status {
	SMTP_DATA_NEED_MORE, /* all input consumed, end not reached */
	SMTP_DATA_DONE,      /* end of data reached; *consumed_r bytes include it */
};

struct smtp_data_decoder {
	enum smtp_newline_mode mode;
	bool bdat; /* BDAT chunk content: no dot handling, no end marker */
	/* outputs, valid at any time */
	uint64_t size;     /* octets of canonical content produced (RFC 1870 §5) */
	bool bare_newline; /* a bare CR or LF was seen (REJECT mode: message is bad) */
	bool has_8bit;     /* a byte >= 0x80 was seen */
	bool has_nul;      /* a NUL byte was seen */
	/* private state */
	int state;
	uint8_t pending_cr; /* a CR held back until we know what follows it */
	bool line_start;
	bool after_bare_lf; /* the previous line ended in a bare LF */
	bool dot_line;      /* current line started with a single '.' so far */
};

void smtp_data_decoder_init(struct smtp_data_decoder *d, enum smtp_newline_mode mode, bool bdat);

/* Decodes in[0..n), appending canonical content to out. Returns DONE when the
 * line "." terminated by CRLF is reached at a line start that followed CRLF
 * (the terminating CRLF of the previous line belongs to the content, RFC 5321
 * §4.1.1.4). Every other "." line (ending in bare LF or CR, or after a bare
 * LF) is not an end: in REJECT mode it is content (and the message is bad),
 * in NORMALIZE mode it is dropped, as Postfix does.
 * In bdat mode the function never returns DONE; call smtp_data_finish() after
 * the last chunk so a trailing bare CR is accounted for. */
enum smtp_data_status smtp_data_decode(struct smtp_data_decoder *d, const uint8_t *in, size_t n,
				       size_t *consumed_r, struct buf *out);

/* BDAT only: flushes held state at the end of the LAST chunk: a trailing CR
 * is a bare CR (a space, bare_newline set), and an unterminated last line gets
 * its CRLF so the content is canonical. No-op in DATA mode. */
void smtp_data_finish(struct smtp_data_decoder *d, struct buf *out);

/* Appends content (canonical, CRLF lines) to out dot-stuffed for the DATA
 * command: a '.' at a line start is doubled. *at_line_start carries the state
 * across calls; start it true. Never emits bare CR or LF: any CR or LF not in
 * a CRLF pair is turned into CRLF (defence in depth). Do not split a CRLF
 * between two calls (decoder output never ends between CR and LF): a CR at the
 * end of in is taken as a stray CR. */
void smtp_data_stuff(const uint8_t *in, size_t n, bool *at_line_start, struct buf *out);

#endif
