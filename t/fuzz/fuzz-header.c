/* fuzz-header: header_scan() on arbitrary content, whole and as a growing
 * prefix (the way the caller rescans): an answer given early must be the
 * final one, and header_len stays within the content. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "smtp/header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_header_same(const struct header_info *a, const struct header_info *b)
{
	return a->header_len == b->header_len && a->complete == b->complete &&
	       a->has_date == b->has_date && a->has_message_id == b->has_message_id &&
	       a->has_from == b->has_from && a->has_sender == b->has_sender &&
	       a->from_count == b->from_count && a->sender_count == b->sender_count &&
	       a->from.off == b->from.off && a->from.len == b->from.len &&
	       a->sender.off == b->sender.off && a->sender.len == b->sender.len &&
	       a->odd_line == b->odd_line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct header_info whole, part;
	if (!header_scan(data, size, true, &whole))
		abort(); /* at_end always answers */
	if (whole.header_len > size || !whole.complete || (whole.from_count > 0) != whole.has_from ||
	    (whole.sender_count > 0) != whole.has_sender ||
	    whole.from.off + whole.from.len > whole.header_len ||
	    whole.sender.off + whole.sender.len > whole.header_len || whole.odd_line > whole.header_len)
		abort();
	/* prefixes at a few points (every one would be quadratic) */
	size_t stride = size / 16 + 1;
	for (size_t k = 0; k <= size; k += stride) {
		if (header_scan(data, k, false, &part) && !fuzz_header_same(&part, &whole))
			abort();
	}
	return 0;
}
