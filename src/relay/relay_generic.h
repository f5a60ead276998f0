/* relay/relay_generic: generic_maps (Postfix smtp_generic_maps, generic(5)):
 * the addresses of a message rewritten as it leaves — the envelope sender
 * and recipients on the downstream MAIL and RCPT lines, and the address
 * header fields (smtp/addrhdr.h) — docs/generic.md.
 *
 * Lookup order for user+ext@domain (recipient_delimiter "+"): the full
 * address (quoted form, then internal form), user@domain, @domain; Postfix's
 * bare "user" steps apply to its local domains only, an MSA has none. The
 * first answer wins, one lookup per address, never applied twice. A value
 * "@otherdomain" keeps the local part (without an extension that was cut
 * off); any other value replaces the address; an extension is not carried
 * over (Postfix's propagate_unmatched_extensions leaves generic out).
 *
 * Memory tables only (texthash:, hash:, btree:, inline:, static:): headers
 * stream through and each lookup is synchronous. relay_generic_load()
 * refuses other types and any value that is not one plain address. */
#ifndef SUBMITD_RELAY_GENERIC_H
#define SUBMITD_RELAY_GENERIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "smtp/addr.h"

/* Opens cfg->generic_maps into cfg->generic_table (freed with cfg). */
bool relay_generic_load(struct config *cfg, char *err, size_t errlen);

/* addr (an envelope address as written, without <>) mapped: true with the
 * new address, local part quoted where needed, in out. False: not in the
 * table, the null sender, or the result does not fit outsz. An out of
 * RELAY_GENERIC_ADDR_MAX octets holds any result for an addr that fits a
 * path (a local part of 254 octets quoted, "@" and a 254-octet value): the
 * result may pass the path limit the client was held to, and is sent so
 * (the downstream may refuse it) rather than the address it was to hide. */
#define RELAY_GENERIC_ADDR_MAX (3 * SMTP_PATH_MAX)
bool relay_generic_addr(const struct config *cfg, const char *addr, char *out, size_t outsz);

/* The header section h[0..len) with every address field that holds a
 * matching address rebuilt: REWRITTEN with the whole new section in out;
 * SAME (out untouched) when nothing matched; TOO_BIG (out untouched) when
 * the new section would be longer than limit octets — found out early,
 * without building it whole — or a rebuilt field would hold a line longer
 * than 998 octets (RFC 5322 §2.1.1). */
enum relay_generic_result {
	RELAY_GENERIC_SAME,
	RELAY_GENERIC_REWRITTEN,
	RELAY_GENERIC_TOO_BIG,
};
enum relay_generic_result relay_generic_header(const struct config *cfg, const uint8_t *h,
					       size_t len, size_t limit, struct buf *out);

#endif
