#include "config.h"
#include "net/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t proxy_v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char proxy_v1_sig[6] = "PROXY ";

static enum proxy_status proxy_bad(struct proxy_header *h, const char *why)
{
	h->error = why;
	return PROXY_BAD;
}

static uint16_t proxy_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* ---- version 1 ---- */

/* A decimal number of 1..maxdigits digits without a leading zero ("0" is
 * fine), at most max. */
static bool proxy_v1_number(const char *s, size_t n, unsigned maxdigits, unsigned long max,
			    unsigned long *r)
{
	if (n == 0 || n > maxdigits || (n > 1 && s[0] == '0'))
		return false;
	unsigned long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return false;
	*r = v;
	return true;
}

static bool proxy_v1_ipv4(const char *s, size_t n, struct in_addr *out)
{
	uint8_t b[4];
	size_t start = 0;
	for (unsigned part = 0; part < 4; part++) {
		size_t end = start;
		while (end < n && s[end] != '.')
			end++;
		if ((part < 3) != (end < n))
			return false; /* too few or too many dots */
		unsigned long v;
		if (!proxy_v1_number(s + start, end - start, 3, 255, &v))
			return false;
		b[part] = (uint8_t)v;
		start = end + 1;
	}
	memcpy(out, b, 4);
	return true;
}

static bool proxy_v1_ipv6(const char *s, size_t n, struct in6_addr *out)
{
	char tmp[INET6_ADDRSTRLEN];
	if (n == 0 || n >= sizeof(tmp))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
		      c == ':' || c == '.'))
			return false;
	}
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	/* inet_pton insists on exactly 128 bits, at most one "::" and, for an
	   embedded IPv4 part, dotted quads without leading zeros. */
	return inet_pton(AF_INET6, tmp, out) == 1;
}

/* The five fields after "TCP4 "/"TCP6 ": src SP dst SP sport SP dport. */
static enum proxy_status proxy_v1_tcp(const char *s, size_t n, bool v6, struct proxy_header *h)
{
	const char *f[4];
	size_t fl[4];
	size_t start = 0;
	for (unsigned i = 0; i < 4; i++) {
		size_t end = start;
		while (end < n && s[end] != ' ')
			end++;
		if ((i < 3) != (end < n))
			return proxy_bad(h, "v1: wrong number of fields");
		if (end == start)
			return proxy_bad(h, "v1: empty field (double space)");
		f[i] = s + start;
		fl[i] = end - start;
		start = end + 1;
	}
	unsigned long sport, dport;
	if (!proxy_v1_number(f[2], fl[2], 5, 65535, &sport) ||
	    !proxy_v1_number(f[3], fl[3], 5, 65535, &dport))
		return proxy_bad(h, "v1: bad port");
	memset(&h->src, 0, sizeof(h->src));
	memset(&h->dst, 0, sizeof(h->dst));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&h->src;
		struct sockaddr_in6 *b = (struct sockaddr_in6 *)&h->dst;
		if (!proxy_v1_ipv6(f[0], fl[0], &a->sin6_addr) ||
		    !proxy_v1_ipv6(f[1], fl[1], &b->sin6_addr))
			return proxy_bad(h, "v1: bad IPv6 address");
		a->sin6_family = b->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)sport);
		b->sin6_port = htons((uint16_t)dport);
		h->addr_len = sizeof(struct sockaddr_in6);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&h->src;
		struct sockaddr_in *b = (struct sockaddr_in *)&h->dst;
		if (!proxy_v1_ipv4(f[0], fl[0], &a->sin_addr) ||
		    !proxy_v1_ipv4(f[1], fl[1], &b->sin_addr))
			return proxy_bad(h, "v1: bad IPv4 address");
		a->sin_family = b->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)sport);
		b->sin_port = htons((uint16_t)dport);
		h->addr_len = sizeof(struct sockaddr_in);
	}
	return PROXY_OK;
}

static enum proxy_status proxy_v1(const uint8_t *p, size_t n, struct proxy_header *h)
{
	h->version = 1;
	size_t sig = n < sizeof(proxy_v1_sig) ? n : sizeof(proxy_v1_sig);
	if (memcmp(p, proxy_v1_sig, sig) != 0)
		return proxy_bad(h, "v1: bad signature");
	size_t lim = n < PROXY_V1_MAX ? n : PROXY_V1_MAX, eol = 0;
	for (size_t i = 0; i < lim && eol == 0; i++) {
		if (p[i] == '\n') {
			if (i == 0 || p[i - 1] != '\r')
				return proxy_bad(h, "v1: bare LF");
			eol = i + 1;
		} else if (p[i] == '\r') {
			if (i + 1 < n && p[i + 1] != '\n')
				return proxy_bad(h, "v1: bare CR");
		} else if (p[i] < 0x20 || p[i] > 0x7e) {
			return proxy_bad(h, "v1: control or 8-bit character");
		}
	}
	if (eol == 0)
		return n >= PROXY_V1_MAX ? proxy_bad(h, "v1: no CRLF within 107 bytes")
					 : PROXY_MORE;
	h->len = eol;
	const char *s = (const char *)p + sizeof(proxy_v1_sig);
	size_t sl = eol - 2 - sizeof(proxy_v1_sig);
	size_t fam = 0;
	while (fam < sl && s[fam] != ' ')
		fam++;
	if (fam == 7 && memcmp(s, "UNKNOWN", 7) == 0) {
		/* "The receiver must ignore anything presented before the
		   CRLF is found" (spec §2.1). */
		h->local = true;
		return PROXY_OK;
	}
	if (fam == sl)
		return proxy_bad(h, "v1: missing addresses");
	if (fam == 4 && memcmp(s, "TCP4", 4) == 0)
		return proxy_v1_tcp(s + 5, sl - 5, false, h);
	if (fam == 4 && memcmp(s, "TCP6", 4) == 0)
		return proxy_v1_tcp(s + 5, sl - 5, true, h);
	return proxy_bad(h, "v1: unknown protocol family");
}

/* ---- version 2 ---- */

/* CRC-32C (Castagnoli), bit by bit: the header is at most 232 bytes. */
static uint32_t proxy_crc32c(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return ~crc;
}

#define PROXY_V2_LOCAL 0x0
#define PROXY_V2_PROXY 0x1
#define PROXY_TLV_CRC32C 0x03

static enum proxy_status proxy_v2(const uint8_t *p, size_t n, struct proxy_header *h)
{
	h->version = 2;
	size_t sig = n < sizeof(proxy_v2_sig) ? n : sizeof(proxy_v2_sig);
	if (memcmp(p, proxy_v2_sig, sig) != 0)
		return proxy_bad(h, "v2: bad signature");
	if (n < 13)
		return PROXY_MORE;
	unsigned ver = p[12] >> 4, cmd = p[12] & 0xF;
	if (ver != 2)
		return proxy_bad(h, "v2: unsupported version");
	if (cmd != PROXY_V2_LOCAL && cmd != PROXY_V2_PROXY)
		return proxy_bad(h, "v2: unknown command");
	if (n < 14)
		return PROXY_MORE;
	unsigned fam = p[13];
	size_t need = 0;
	if (cmd == PROXY_V2_PROXY) {
		switch (fam) {
		case 0x00:
			need = 0;
			break; /* UNSPEC */
		case 0x11:
			need = 12;
			break; /* TCP over IPv4 */
		case 0x21:
			need = 36;
			break; /* TCP over IPv6 */
		case 0x31:
			need = 216;
			break; /* UNIX stream */
		default:
			return proxy_bad(h, "v2: unsupported address family or transport");
		}
	}
	if (n < 16)
		return PROXY_MORE;
	size_t len = proxy_be16(p + 14);
	if (len > PROXY_V2_MAX_LEN)
		return proxy_bad(h, "v2: header too long");
	if (len < need)
		return proxy_bad(h, "v2: length shorter than the address block");
	if (n < 16 + len)
		return PROXY_MORE;
	h->len = 16 + len;
	if (cmd == PROXY_V2_LOCAL) {
		/* A health check from the proxy itself: real endpoints, and the
		   whole block is skipped whatever it holds (spec §2.2). */
		h->local = true;
		return PROXY_OK;
	}

	/* TLVs: each must lie inside the header; unknown types are ignored. */
	for (size_t off = 16 + need; off < 16 + len;) {
		if (off + 3 > 16 + len)
			return proxy_bad(h, "v2: truncated TLV");
		size_t tl = proxy_be16(p + off + 1);
		if (off + 3 + tl > 16 + len)
			return proxy_bad(h, "v2: TLV runs past the header");
		if (p[off] == PROXY_TLV_CRC32C) {
			if (tl != 4)
				return proxy_bad(h, "v2: bad CRC32C TLV");
			uint8_t copy[PROXY_MAX];
			memcpy(copy, p, 16 + len);
			memset(copy + off + 3, 0, 4);
			uint32_t want = (uint32_t)p[off + 3] << 24 | (uint32_t)p[off + 4] << 16 |
					(uint32_t)p[off + 5] << 8 | p[off + 6];
			if (proxy_crc32c(copy, 16 + len) != want)
				return proxy_bad(h, "v2: CRC32C mismatch");
		}
		off += 3 + tl;
	}

	memset(&h->src, 0, sizeof(h->src));
	memset(&h->dst, 0, sizeof(h->dst));
	const uint8_t *a = p + 16;
	if (fam == 0x11) {
		struct sockaddr_in *s = (struct sockaddr_in *)&h->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&h->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		h->addr_len = sizeof(*s);
	} else if (fam == 0x21) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&h->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		h->addr_len = sizeof(*s);
	} else {
		/* UNSPEC, or a client on a UNIX socket of the proxy: nothing
		   that could stand for a client address. */
		h->local = true;
	}
	return PROXY_OK;
}

enum proxy_status proxy_parse(const void *data, size_t n, struct proxy_header *h)
{
	const uint8_t *p = data;
	memset(h, 0, sizeof(*h));
	if (n == 0)
		return PROXY_MORE;
	if (p[0] == proxy_v2_sig[0])
		return proxy_v2(p, n, h);
	if (p[0] == (uint8_t)proxy_v1_sig[0])
		return proxy_v1(p, n, h);
	return proxy_bad(h, "no PROXY protocol signature");
}
