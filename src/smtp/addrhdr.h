/* smtp/addrhdr: an address header field taken apart and rebuilt the way
 * Postfix's SMTP client rebuilds it when smtp_generic_maps rewrites an
 * address in it (docs/generic.md): the field is tokenized (comments moved
 * after the address they follow, no spaces around '.' or '@' in phrases,
 * atoms with specials quoted), each address is offered to a mapping, and if
 * one of them matched the field is written again, one address per line,
 * lines joined while they stay under 70 columns, continuation lines indented
 * with a TAB. A field where nothing matched is left as it was.
 *
 * Pure codec. Input is canonical content (CRLF line ends). */
#ifndef SUBMITD_ADDRHDR_H
#define SUBMITD_ADDRHDR_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Whether the field name[0..len) is one Postfix rewrites (its sender and
 * recipient header fields: From, Sender, Reply-To, To, Cc, Bcc, Resent-*,
 * Errors-To, Return-Path, Mail-Followup-To, ...), case-insensitively. */
bool addrhdr_is_address_field(const char *name, size_t len);

/* The mapping: internal is one address in Postfix's internal form (the
 * local part unquoted). Returns true and appends the replacement, in
 * internal form, to out when the address is to be rewritten. */
typedef bool addrhdr_map_fn(void *ctx, const char *internal, struct buf *out);

/* field[0..len) is one whole field, "Name:value" with its folds, without
 * the CRLF that ends it; the name is followed directly by ':'. Offers each
 * address to map; when one matched, appends the rebuilt field with its
 * CRLF line ends (the last line's CRLF included) to out and returns true.
 * Otherwise appends nothing and returns false (also for a field holding NUL
 * or a bare CR or LF, which is passed on as it is). */
bool addrhdr_rewrite(const char *field, size_t len, addrhdr_map_fn *map, void *ctx,
		     struct buf *out);

/* Appends internal (an address in internal form) in external form: the
 * local part as it is when it is a dot-string, else quoted (Postfix's
 * quote_822_local; octets above 127 are left as they are). */
void addrhdr_quote_local(const char *internal, struct buf *out);

#endif
