/* smtp/header: finding the end of a message's header section and the fields
 * submission cares about (RFC 5322 §2.2, §3.6; RFC 6409 §8).
 *
 * Pure codec, used on canonical content (CRLF lines, unstuffed). */
#ifndef SUBMITD_SMTP_HEADER_H
#define SUBMITD_SMTP_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A field body inside the scanned content: the octets after the colon up
 * to the line end that ends the field (folds included, that line end not). */
struct header_span {
	size_t off, len;
};

struct header_info {
	size_t header_len; /* bytes of the header section incl. the empty line
	                       (CRLF CRLF) that ends it, or, when the content has
	                       no empty line, the bytes of leading field lines */
	bool complete;     /* the empty line (or end of content) was found */
	bool has_date, has_message_id, has_from, has_sender;
	int from_count;   /* number of From: fields */
	int sender_count; /* number of Sender: fields */
	/* The first From: and Sender: field bodies, whole (the caller bounds
	   the content; nothing is cut here). */
	struct header_span from, sender;
	/* 1 + the offset of the first line readers disagree about (a
	   continuation of nothing, a "From " line, an empty field name), or 0 */
	size_t odd_line;
};

/* Scans p[0..n). When at_end is false and no empty line was found yet,
 * returns false (need more content); otherwise fills *r and returns true.
 * Field names are matched case-insensitively.
 *
 * The header section ends at the empty line, or before the first line that
 * no mail reader takes for part of it. It goes on over lines that some
 * readers keep reading past, so that a field after them is seen too:
 *   - a field name followed by WSP before the colon ("From : x", the
 *     obsolete syntax of RFC 5322 §4.5): a field of that name;
 *   - an empty field name (": x"): a field no check looks at;
 *   - a continuation line with no field before it, and a line starting
 *     "From " (an mbox separator): ignored, as Python's email does.
 * Any other line ends the header section there (the rest is body). */
bool header_scan(const uint8_t *p, size_t n, bool at_end, struct header_info *r);

#endif
