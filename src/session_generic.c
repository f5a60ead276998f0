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
	if (!relay_generic_header(s->cfg, h, hi->header_len, out))
		return h;
	/* A rebuilt field can be longer than the client's: refused like a
	   section that was too long to begin with, never cut. */
	if (buf_len(out) > s->cfg->header_size_limit) {
		log_info("%s: generic_maps: the rewritten header section is %zu octets, more than "
			 "header_size_limit (%llu): refused",
			 s->id, buf_len(out), (unsigned long long)s->cfg->header_size_limit);
		return NULL;
	}
	header_scan(buf_data(out), buf_len(out), true, hi);
	return buf_data(out);
}
