/* proxy: the PROXY protocol header (HAProxy, versions 1 and 2), receiver
 * side. A pure codec: no I/O, no libuv, no configuration.
 *
 * Rules enforced (haproxy doc/proxy-protocol.txt, our
 * haproxy's doc/proxy-protocol.txt):
 * - the header is required on a listener marked "proxy" and never guessed
 *   elsewhere; who may send it (proxy_networks) is the caller's check;
 * - v2 if the 12-byte signature is there, v1 if the line starts "PROXY ",
 *   anything else is refused at the first byte that cannot match;
 * - v1: one CRLF-terminated line of at most PROXY_V1_MAX bytes, single
 *   spaces, dotted quads without leading zeros, ports 0-65535 without
 *   leading zeros, the family decides the address syntax; "UNKNOWN" means
 *   "keep the real endpoints";
 * - v2: version 2 only, command LOCAL or PROXY, TCP over IPv4/IPv6, UNIX
 *   stream (kept as the real endpoints) or UNSPEC; datagram transports are
 *   refused; LOCAL skips its whole block whatever the family; the length
 *   must cover the address block, is capped at PROXY_V2_MAX_LEN (docs/design.md
 *   invariant 5), and every TLV must lie inside it; a CRC32C TLV is checked.
 * - The SSL TLV is ignored: submitd terminates TLS itself and never treats a
 *   connection as encrypted because a proxy says so.
 *
 * Resumable the simple way: the caller keeps the bytes it has received and
 * calls proxy_parse() again on the whole prefix when more arrive. The header
 * is small (at most 232 bytes), and a verdict comes as soon as it is
 * certain: PROXY_MORE never hides a header that can no longer be valid
 * (a wrong signature byte, a lone LF, an over-long v1 line or v2 length are
 * refused at once). */
#ifndef SUBMITD_PROXY_H
#define SUBMITD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107     /* longest legal v1 line, CRLF included */
#define PROXY_V2_MAX_LEN 216 /* cap on v2 "len": the UNIX address block */
#define PROXY_MAX (16 + PROXY_V2_MAX_LEN)

enum proxy_status {
	PROXY_MORE, /* a valid prefix: wait for more bytes (with a timeout) */
	PROXY_OK,   /* a complete header of h->len bytes */
	PROXY_BAD,  /* not a valid header: drop the connection, no reply */
};

struct proxy_header {
	unsigned version; /* 1 or 2 */
	/* True for v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or UNIX: the addresses
	   below are unset; use the real connection's endpoints. */
	bool local;
	struct sockaddr_storage src; /* the client as the proxy saw it */
	struct sockaddr_storage dst; /* the address the client connected to */
	socklen_t addr_len;          /* of src and dst (same family) */
	size_t len;                  /* bytes of the header; the rest is payload */
	const char *error;           /* PROXY_BAD: static text for the log */
};

/* Parses the header at the start of p[0..n). Never reads past n and never
 * looks past the header's end: bytes after h->len belong to the next layer
 * (TLS ClientHello on an implicit-TLS port, or early SMTP input). */
enum proxy_status proxy_parse(const void *p, size_t n, struct proxy_header *h);

#endif
