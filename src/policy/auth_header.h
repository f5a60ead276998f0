/* policy/auth_header: the relay_auth_header field on the held header
 * section. "NAME: login" goes at the top, and every NAME: field the client
 * wrote is dropped, so a downstream that trusts the field cannot be fooled
 * by the submitter. Without a login only the client's copies are dropped.
 * Pure: bytes in, bytes out (policy/message.c calls it). */
#ifndef SUBMITD_POLICY_AUTH_HEADER_H
#define SUBMITD_POLICY_AUTH_HEADER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* The login as written into the field: sanitised, at most this - 1 bytes. */
#define AUTH_HEADER_USER_MAX 512

/* Appends to out the field for user (none when user is NULL or "") and then
 * h[0..n) (a header section in canonical CRLF form, possibly followed by
 * body) without the fields named name (matched case-insensitively) and
 * their continuation lines. */
void auth_header_write(const char *name, const char *user, const uint8_t *h, size_t n,
		       struct buf *out);

/* The bytes auth_header_write() adds at most (for SIZE=); 0 without a
 * name or a login. */
size_t auth_header_added(const char *name, const char *user);

/* The field removal on its own, resumable: same output whatever the chunking
 * (docs/design.md §9.3). A field is "NAME" + optional WSP (RFC 5322 §4.5.1
 * obsolete syntax) + ':'; the body after the empty line is untouched. */
struct auth_header_filter {
	const char *name;
	size_t nlen;
	int state;
	size_t matched;
	char pend[96];
	size_t npend;
};
void auth_header_filter_init(struct auth_header_filter *f, const char *name);
void auth_header_filter_run(struct auth_header_filter *f, const uint8_t *p, size_t n,
			    struct buf *out);

#endif
