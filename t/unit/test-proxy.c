/* Unit tests for net/proxy: the PROXY protocol receiver (haproxy
 * doc/proxy-protocol.txt §2.1 and §2.2; haproxy's doc/proxy-protocol.txt
 * §A; docs/design.md invariant 5: the header is bounded). Every case runs whole,
 * one byte at a time (the verdict must come exactly when it is certain:
 * a valid header at its last byte, never earlier), and followed by payload
 * (which must be left alone). */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"
#include "tap.h"

#define OK PROXY_OK
#define MORE PROXY_MORE
#define BAD PROXY_BAD

struct pcase {
	const char *name;
	const uint8_t *in;
	size_t n;
	enum proxy_status st;
	size_t len;          /* OK: header length */
	const char *src;     /* OK: "ip port", "local" */
	const char *dst;
	size_t early;        /* BAD: the verdict must come after exactly this many bytes (0: any) */
};

static void proxy_addr_text(const struct proxy_header *h, const struct sockaddr_storage *ss,
			    char *out, size_t outsz)
{
	char ip[INET6_ADDRSTRLEN];
	if (h->local) {
		snprintf(out, outsz, "local");
	} else if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
		snprintf(out, outsz, "%s %u", ip, ntohs(s->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
		snprintf(out, outsz, "%s %u", ip, ntohs(s->sin6_port));
	} else {
		snprintf(out, outsz, "family %d", ss->ss_family);
	}
}

static void run_case(const struct pcase *c)
{
	struct proxy_header h;
	enum proxy_status st = proxy_parse(c->in, c->n, &h);
	is_int(st, c->st, "%s: whole", c->name);
	if (st == BAD && h.error == NULL)
		ok(false, "%s: error text", c->name);
	if (c->st == OK && st == OK) {
		char s[80], d[80];
		is_int((long long)h.len, (long long)c->len, "%s: length", c->name);
		proxy_addr_text(&h, &h.src, s, sizeof(s));
		proxy_addr_text(&h, &h.dst, d, sizeof(d));
		is_str(s, c->src, "%s: source", c->name);
		if (!h.local)
			is_str(d, c->dst, "%s: destination", c->name);
		if (!h.local)
			is_int(h.addr_len, h.src.ss_family == AF_INET ? sizeof(struct sockaddr_in)
								      : sizeof(struct sockaddr_in6),
			       "%s: address length", c->name);
	}

	/* One byte at a time, from an exact-size copy each time. */
	size_t decided = 0;
	enum proxy_status last = MORE;
	for (size_t k = 0; k <= c->n; k++) {
		uint8_t *p = malloc(k ? k : 1);
		memcpy(p, c->in, k);
		last = proxy_parse(p, k, &h);
		free(p);
		if (last != MORE) {
			decided = k;
			break;
		}
	}
	is_int(last, c->st, "%s: byte at a time", c->name);
	if (c->st == OK)
		is_int((long long)decided, (long long)c->len, "%s: complete at its last byte", c->name);
	if (c->st == BAD && c->early != 0)
		is_int((long long)decided, (long long)c->early, "%s: refused as soon as certain",
		       c->name);

	/* Followed by the next layer's bytes: same verdict, same length. */
	if (c->st == OK) {
		static const uint8_t tail[] = "\x16\x03\x01\x02\x00\x01\x00EHLO x\r\n";
		uint8_t *p = malloc(c->n + sizeof(tail));
		memcpy(p, c->in, c->n);
		memcpy(p + c->n, tail, sizeof(tail));
		st = proxy_parse(p, c->n + sizeof(tail), &h);
		free(p);
		ok(st == OK && h.len == c->len, "%s: payload after the header is left alone", c->name);
	}
}

#define S(x) (const uint8_t *)(x), sizeof(x) - 1

/* ---- v2 header builder ---- */

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

struct v2 {
	uint8_t b[400];
	size_t n;
};

static void v2_start(struct v2 *v, uint8_t vercmd, uint8_t fam)
{
	memcpy(v->b, sig, 12);
	v->b[12] = vercmd;
	v->b[13] = fam;
	v->b[14] = v->b[15] = 0;
	v->n = 16;
}

static void v2_add(struct v2 *v, const void *p, size_t n)
{
	memcpy(v->b + v->n, p, n);
	v->n += n;
}

static void v2_tlv(struct v2 *v, uint8_t type, const void *p, size_t n)
{
	uint8_t h[3] = {type, (uint8_t)(n >> 8), (uint8_t)n};
	v2_add(v, h, 3);
	v2_add(v, p, n);
}

/* Sets the length field from what was added (plus a correction). */
static void v2_finish(struct v2 *v, int adjust)
{
	size_t len = (size_t)((int)(v->n - 16) + adjust);
	v->b[14] = (uint8_t)(len >> 8);
	v->b[15] = (uint8_t)len;
}

static void v2_tcp4(struct v2 *v)
{
	static const uint8_t a[12] = {192, 0, 2, 7, 198, 51, 100, 25, 0xC3, 0xCB, 0x02, 0x4B};
	v2_add(v, a, sizeof(a)); /* 192.0.2.7:50123 -> 198.51.100.25:587 */
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

static struct pcase v2case(const char *name, const struct v2 *v, enum proxy_status st,
			   const char *src, const char *dst, size_t early)
{
	uint8_t *copy = malloc(v->n);
	memcpy(copy, v->b, v->n);
	return (struct pcase){name, copy, v->n, st, st == OK ? v->n : 0, src, dst, early};
}

int main(void)
{
	static const struct pcase v1[] = {
		{"v1 TCP4", S("PROXY TCP4 192.0.2.7 198.51.100.25 50123 587\r\n"), OK, 46,
		 "192.0.2.7 50123", "198.51.100.25 587", 0},
		{"v1 TCP6", S("PROXY TCP6 2001:db8::7 2001:db8::25 50123 465\r\n"), OK, 47,
		 "2001:db8::7 50123", "2001:db8::25 465", 0},
		{"v1 TCP6 mapped IPv4", S("PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n"), OK, 37,
		 "::ffff:192.0.2.7 1", "::1 2", 0},
		{"v1 extremes", S("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), OK, 44,
		 "0.0.0.0 0", "255.255.255.255 65535", 0},
		{"v1 longest TCP6",
		 S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		 OK, 104, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535",
		 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535", 0},
		{"v1 UNKNOWN", S("PROXY UNKNOWN\r\n"), OK, 15, "local", NULL, 0},
		{"v1 UNKNOWN, longest line (107)",
		 S("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		 OK, 107, "local", NULL, 0},
		{"v1 UNKNOWN with anything up to CRLF", S("PROXY UNKNOWN x y z\r\n"), OK, 21, "local",
		 NULL, 0},

		{"v1 no CRLF within 107 bytes",
		 S("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655355\r\n"),
		 BAD, 0, NULL, NULL, 107},
		{"v1 leading zero in IPv4", S("PROXY TCP4 192.0.2.07 198.51.100.25 1 2\r\n"), BAD, 0,
		 NULL, NULL, 0},
		{"v1 octet > 255", S("PROXY TCP4 192.0.2.256 198.51.100.25 1 2\r\n"), BAD, 0, NULL,
		 NULL, 0},
		{"v1 three octets", S("PROXY TCP4 192.0.2 198.51.100.25 1 2\r\n"), BAD, 0, NULL, NULL,
		 0},
		{"v1 five octets", S("PROXY TCP4 192.0.2.7.1 198.51.100.25 1 2\r\n"), BAD, 0, NULL,
		 NULL, 0},
		{"v1 empty octet", S("PROXY TCP4 192.0..7 198.51.100.25 1 2\r\n"), BAD, 0, NULL, NULL,
		 0},
		{"v1 sign in address", S("PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 double space", S("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 double space after PROXY", S("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL,
		 NULL, 0},
		{"v1 trailing space", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 leading zero in port", S("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), BAD, 0, NULL,
		 NULL, 0},
		{"v1 port 65536", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 port six digits", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n"), BAD, 0, NULL,
		 NULL, 0},
		{"v1 negative port", S("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 missing port", S("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 extra field", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 IPv6 under TCP4", S("PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"), BAD, 0, NULL,
		 NULL, 0},
		{"v1 IPv4 under TCP6", S("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 two ::", S("PROXY TCP6 2001:db8::1::2 ::1 1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 IPv6 short of 128 bits", S("PROXY TCP6 2001:db8:1:2:3:4:5 ::1 1 2\r\n"), BAD, 0,
		 NULL, NULL, 0},
		{"v1 IPv6 zone", S("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 IPv6 leading zero in embedded IPv4", S("PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n"),
		 BAD, 0, NULL, NULL, 0},
		{"v1 unknown family", S("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 lower-case family", S("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL,
		 0},
		{"v1 UNKNOWNX", S("PROXY UNKNOWNX\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 TCP4 without addresses", S("PROXY TCP4\r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 empty family", S("PROXY \r\n"), BAD, 0, NULL, NULL, 0},
		{"v1 bare LF", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), BAD, 0, NULL, NULL, 31},
		{"v1 bare CR", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n"), BAD, 0, NULL, NULL, 32},
		{"v1 NUL", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n"), BAD, 0, NULL, NULL, 31},
		{"v1 8-bit byte", S("PROXY TCP4 1.2.3.\xc4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL, 18},
		{"v1 no space after PROXY", S("PROXY\r\n"), BAD, 0, NULL, NULL, 6},
		{"v1 lower-case signature", S("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL,
		 1},
		{"v1 leading space", S(" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), BAD, 0, NULL, NULL, 1},
		{"SMTP instead of a header", S("EHLO client.example\r\n"), BAD, 0, NULL, NULL, 1},
		{"TLS instead of a header", S("\x16\x03\x01\x02\x00"), BAD, 0, NULL, NULL, 1},
		{"P then garbage", S("PRONTO"), BAD, 0, NULL, NULL, 4},
	};
	for (size_t i = 0; i < sizeof(v1) / sizeof(v1[0]); i++)
		run_case(&v1[i]);

	struct proxy_header h;
	is_int(proxy_parse("", 0, &h), MORE, "nothing yet: more");
	is_int(proxy_parse("PROXY TCP4 1.2.3.4", 18, &h), MORE, "v1 prefix: more");

	/* ---- v2 ---- */
	struct pcase c[64];
	size_t nc = 0;
	struct v2 v;
	uint8_t zero[300] = {0};

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 PROXY TCP4", &v, OK, "192.0.2.7 50123", "198.51.100.25 587", 0);

	v2_start(&v, 0x21, 0x21);
	{
		uint8_t a[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 7, 0x20, 0x01, 0x0d, 0xb8, [31] = 0x25,
				 0xC3, 0xCB, 0x01, 0xD1};
		v2_add(&v, a, sizeof(a));
	}
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 PROXY TCP6", &v, OK, "2001:db8::7 50123", "2001:db8::25 465", 0);

	v2_start(&v, 0x20, 0x00);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 LOCAL", &v, OK, "local", NULL, 0);

	v2_start(&v, 0x20, 0x11);
	v2_add(&v, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 13);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 LOCAL skips its whole block", &v, OK, "local", NULL, 0);

	v2_start(&v, 0x20, 0x12);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 LOCAL ignores the family", &v, OK, "local", NULL, 0);

	v2_start(&v, 0x21, 0x00);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 PROXY UNSPEC", &v, OK, "local", NULL, 0);

	v2_start(&v, 0x21, 0x31);
	v2_add(&v, zero, 216);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 PROXY UNIX stream", &v, OK, "local", NULL, 0);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_tlv(&v, 0x01, "smtp", 4);
	v2_tlv(&v, 0x02, "mail.example.org", 16);
	v2_tlv(&v, 0x04, "", 0);
	v2_tlv(&v, 0x05, "id-1", 4);
	v2_tlv(&v, 0x20, "\x01\0\0\0\0", 5);
	v2_tlv(&v, 0xE0, "custom", 6);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 TLVs, known and unknown", &v, OK, "192.0.2.7 50123",
			 "198.51.100.25 587", 0);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_tlv(&v, 0x04, zero, 201);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 longest header (len 216)", &v, OK, "192.0.2.7 50123",
			 "198.51.100.25 587", 0);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_tlv(&v, 0x04, zero, 202);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 len 217: too long, refused at the length field", &v, BAD, NULL, NULL,
			 16);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 0);
	v.b[14] = v.b[15] = 0xFF;
	c[nc++] = v2case("v2 len 65535 refused at once", &v, BAD, NULL, NULL, 16);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_tlv(&v, 0x03, "\0\0\0\0", 4);
	v2_finish(&v, 0);
	{
		uint32_t crc = crc32c(v.b, v.n);
		v.b[v.n - 4] = (uint8_t)(crc >> 24);
		v.b[v.n - 3] = (uint8_t)(crc >> 16);
		v.b[v.n - 2] = (uint8_t)(crc >> 8);
		v.b[v.n - 1] = (uint8_t)crc;
	}
	c[nc++] = v2case("v2 CRC32C correct", &v, OK, "192.0.2.7 50123", "198.51.100.25 587", 0);
	v.b[20] ^= 1; /* a changed source address */
	c[nc++] = v2case("v2 CRC32C mismatch", &v, BAD, NULL, NULL, 0);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_tlv(&v, 0x03, "\0\0\0", 3);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 CRC32C TLV of 3 bytes", &v, BAD, NULL, NULL, 0);

	v2_start(&v, 0x11, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 version 1 nibble", &v, BAD, NULL, NULL, 13);
	v2_start(&v, 0x31, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 version 3", &v, BAD, NULL, NULL, 13);
	v2_start(&v, 0x22, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 command 2", &v, BAD, NULL, NULL, 13);
	static const uint8_t bad_fams[] = {0x12, 0x22, 0x32, 0x10, 0x20, 0x13, 0x41, 0x01, 0xFF};
	static const char *const bad_fam_names[] = {
		"v2 UDP/IPv4 refused",		"v2 UDP/IPv6 refused",	  "v2 UNIX datagram refused",
		"v2 INET, UNSPEC transport",	"v2 INET6, UNSPEC transport", "v2 transport 3",
		"v2 family 4",			"v2 UNSPEC family, STREAM",  "v2 family 0xFF"};
	for (size_t i = 0; i < sizeof(bad_fams); i++) {
		v2_start(&v, 0x21, bad_fams[i]);
		v2_add(&v, zero, 36);
		v2_finish(&v, 0);
		c[nc++] = v2case(bad_fam_names[i], &v, BAD, NULL, NULL, 14);
	}

	v2_start(&v, 0x21, 0x11);
	v2_add(&v, zero, 11);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 TCP4 with 11 address bytes", &v, BAD, NULL, NULL, 16);
	v2_start(&v, 0x21, 0x21);
	v2_add(&v, zero, 35);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 TCP6 with 35 address bytes", &v, BAD, NULL, NULL, 16);
	v2_start(&v, 0x21, 0x31);
	v2_add(&v, zero, 100);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 UNIX with 100 address bytes", &v, BAD, NULL, NULL, 16);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_add(&v, "\x04\x00", 2);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 truncated TLV header", &v, BAD, NULL, NULL, 0);
	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_add(&v, "\x02\x00\x09mail", 7);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 TLV longer than the header", &v, BAD, NULL, NULL, 0);
	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_tlv(&v, 0x20, "\x01\0\0\0\0", 5);
	v2_add(&v, "\x21", 1);
	v2_finish(&v, 0);
	c[nc++] = v2case("v2 one stray byte after the TLVs", &v, BAD, NULL, NULL, 0);

	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 0);
	v.b[4] = 0x01;
	c[nc++] = v2case("v2 signature with its NUL changed", &v, BAD, NULL, NULL, 5);
	v.b[4] = 0x00;
	v.b[11] = 0x0B;
	c[nc++] = v2case("v2 signature, last byte wrong", &v, BAD, NULL, NULL, 12);

	for (size_t i = 0; i < nc; i++) {
		run_case(&c[i]);
		free((void *)c[i].in);
	}

	/* A header whose length field promises more than has arrived. */
	v2_start(&v, 0x21, 0x11);
	v2_tcp4(&v);
	v2_finish(&v, 4);
	is_int(proxy_parse(v.b, v.n, &h), MORE, "v2 length promises more: wait");

	return done_testing();
}
