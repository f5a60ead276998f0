/* session_generic: generic_maps on the header section (docs/generic.md),
 * between the ownership check (on the fields as the client wrote them) and
 * the DKIM signature (on the fields as they leave). */
#include "config.h"
#include "session_impl.h"

#include "core/log.h"
#include "relay/relay_generic.h"
#include "smtp/header.h"

const uint8_t *session_generic_header(struct session *s, const uint8_t *h, struct header_info *hi,
				      struct buf *out)
{
	enum relay_generic_result r =
		relay_generic_header(s->cfg, h, hi->header_len, s->cfg->header_size_limit, out);
	if (r == RELAY_GENERIC_SAME)
		return h;
	/* A rebuilt field can be longer than the client's: refused like a
	   section that was too long to begin with, never cut. */
	if (r == RELAY_GENERIC_TOO_BIG) {
		log_info("%s: generic_maps: the rewritten header section would be longer than "
			 "header_size_limit (%llu) or hold a line longer than 998 octets: refused",
			 s->id, (unsigned long long)s->cfg->header_size_limit);
		return NULL;
	}
	header_scan(buf_data(out), buf_len(out), true, hi);
	return buf_data(out);
}
