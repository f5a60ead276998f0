/* smtp/header: finding the end of a message's header section and the fields
 * submission cares about (RFC 5322 §2.2, §3.6; RFC 6409 §8).
 *
 * Pure codec, used on canonical content (CRLF lines, unstuffed). */
#ifndef SUBMITD_SMTP_HEADER_H
#define SUBMITD_SMTP_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct header_info {
	size_t header_len;  /* bytes of the header section incl. the empty line
	                       (CRLF CRLF) that ends it, or, when the content has
	                       no empty line, the bytes of leading field lines */
	bool complete;      /* the empty line (or end of content) was found */
	bool has_date, has_message_id, has_from, has_sender;
	/* The first From: and Sender: field bodies, unfolded, trimmed,
	   NUL-terminated, truncated to fit (for ownership checks later). */
	char from[512];
	char sender[512];
	int from_count;     /* number of From: fields */
};

/* Scans p[0..n). When at_end is false and no empty line was found yet,
 * returns false (need more content); otherwise fills *r and returns true.
 * A line that is not a field (no ':' before any space/control, and not a
 * continuation line) ends the header section there (the rest is body).
 * Field names are matched case-insensitively. */
bool header_scan(const uint8_t *p, size_t n, bool at_end, struct header_info *r);

#endif
