#include "config.h"
#include "core/base64.h"

#include "core/buf.h"

/* RFC 4648 §4 */
void base64_encode(struct buf *out, const uint8_t *p, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63],
			     i + 1 < n ? tab[(v >> 6) & 63] : '=', i + 2 < n ? tab[v & 63] : '='};
		buf_append(out, q, 4);
	}
}

bool base64_valid(const char *s, size_t len)
{
	if (len % 4 != 0)
		return false;
	size_t pad = 0;
	if (len > 0 && s[len - 1] == '=')
		pad = (len > 1 && s[len - 2] == '=') ? 2 : 1;
	for (size_t i = 0; i < len - pad; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
			return false;
	}
	return true;
}
