/* dkim: DKIM signatures (RFC 6376) with rsa-sha256 and ed25519-sha256
 * (RFC 8463), made with GnuTLS; the canonicalisation is written here from
 * RFC 6376 §3.4. Design and OpenDKIM compatibility: docs/dkim.md.
 *
 * Pure: no I/O but reading key files (dkim_key_load()), no libuv. The body
 * canonicaliser is resumable at any byte (docs/design.md §9.3): the same
 * body hash whether the body comes whole or one byte at a time. */
#ifndef SUBMITD_DKIM_H
#define SUBMITD_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>

#include "core/buf.h"

enum dkim_canon { DKIM_SIMPLE, DKIM_RELAXED };
enum dkim_alg { DKIM_RSA_SHA256, DKIM_ED25519_SHA256 };

#define DKIM_HASH_LEN 32 /* SHA-256 */
#define DKIM_RSA_MIN_BITS 1024
#define DKIM_RSA_MAX_BITS 4096

/* ---- canonicalisation (RFC 6376 §3.4) ---- */

/* The body hash, fed in pieces of any size (a CRLF may be split between
 * two). Canonical form: simple (§3.4.3) drops trailing empty lines, an
 * empty body is one CRLF; relaxed (§3.4.4) also drops whitespace at line
 * ends and reduces runs of SP/HTAB to one SP, an empty body stays empty.
 * A body not ending in CRLF is hashed as if it did. Only CRLF ends a line;
 * a bare CR or LF is an ordinary octet. */
struct dkim_body {
	enum dkim_canon canon;
	gnutls_hash_hd_t hash;
	uint64_t blank;  /* empty lines held back (they may be trailing) */
	bool cr;         /* the last octet was a CR, not yet placed */
	bool wsp;        /* relaxed: a run of SP/HTAB held back */
	bool line;       /* the current line has content */
	bool any;        /* something was hashed */
	uint64_t hashed; /* octets of canonical body hashed */
	size_t n;
	uint8_t out[2048];
};

/* Returns false if GnuTLS cannot hash (out of memory). */
bool dkim_body_init(struct dkim_body *b, enum dkim_canon c);
void dkim_body_update(struct dkim_body *b, const uint8_t *p, size_t n);
/* The body hash; the hash context is gone afterwards. */
void dkim_body_final(struct dkim_body *b, uint8_t digest[DKIM_HASH_LEN]);
/* Drops an unfinished body (a message abandoned half way). */
void dkim_body_free(struct dkim_body *b);

/* Appends the canonical form of one header field f[0..n) (name, colon,
 * value, folds, with or without the CRLF that ends it) to out, ending it in
 * CRLF when crlf is true. simple: as it is; relaxed (§3.4.2): name
 * lowercased, folds unfolded, WSP runs reduced to one SP, WSP around the
 * colon and at the end dropped. */
void dkim_canon_header(enum dkim_canon c, const uint8_t *f, size_t n, bool crlf, struct buf *out);

/* One header field inside a header section: [off, off+len) including the
 * CRLF that ends it, name_len octets of name (trailing WSP excluded). */
struct dkim_field {
	size_t off, len, name_len;
};
/* Splits a header section h[0..n) (it may include the empty line and body
 * after it: the split stops there) into fields. Lines that start with WSP
 * continue the field before them (one before any field is skipped); a line
 * without a colon is skipped. Returns how many fields, at most max. */
size_t dkim_fields(const uint8_t *h, size_t n, struct dkim_field *f, size_t max);

/* ---- keys ---- */

struct dkim_key {
	char *name;     /* the KeyTable key */
	char *domain;   /* d=; "%" in the KeyTable: the From: domain */
	char *selector; /* s= */
	char *path;     /* the key file */
	enum dkim_alg alg;
	unsigned bits;
	gnutls_privkey_t priv;
	char *pub; /* p= of the DNS record, base64 */
};

/* Reads k->path (PEM: PKCS#1 or PKCS#8; RSA or Ed25519), checks the type
 * and size (RSA 1024-4096 bits) and fills alg, bits, priv and pub. On error
 * returns false with "PATH: why" in err. */
bool dkim_key_load(struct dkim_key *k, char *err, size_t errlen);
void dkim_key_clear(struct dkim_key *k);
/* "k=rsa" or "k=ed25519". */
const char *dkim_alg_name(enum dkim_alg a);
/* The TXT record to publish, one line:
 * sel._domainkey.example.org. IN TXT "v=DKIM1; k=rsa; p=..." (long values
 * split into several quoted strings of at most 255 octets, RFC 7208 §3.3's
 * habit that DNS servers and verifiers both read as one). domain replaces
 * a "%" domain. */
void dkim_key_txt(const struct dkim_key *k, const char *domain, struct buf *out);

/* ---- signing ---- */

struct dkim_sign_args {
	const struct dkim_key *key;
	const char *domain;   /* d= (the key's, or the From: domain for "%") */
	const char *identity; /* i=, or NULL */
	enum dkim_canon hcanon, bcanon;
	/* h= candidates, lowercase: a name listed k times signs each field of
	   that name present, bottom-up, and k-1 more (absent ones: over-signing
	   against added fields, RFC 6376 §8.15). A name ending in '*' is a
	   prefix ("content-*"): every field it matches, signed once each. */
	const char *const *headers;
	size_t nheaders;
	time_t now;        /* t= */
	uint64_t expire_s; /* x= now + expire_s; 0: no x= */
	const uint8_t *bh; /* the body hash */
};

/* Signs the header section h[0..n) as it will be sent (fields only or with
 * the empty line after) and appends "DKIM-Signature: ...CRLF" (folded below
 * 80 columns) to out. Returns false (err says why) when GnuTLS refuses. */
bool dkim_sign(const struct dkim_sign_args *a, const uint8_t *h, size_t n, struct buf *out,
	       char *err, size_t errlen);

/* h= holds at most this many names, each at most DKIM_NAME_MAX octets
 * (longer fields matched by a prefix are left unsigned). */
#define DKIM_H_MAX 64
#define DKIM_NAME_MAX 64

/* Longest DKIM-Signature field dkim_sign() writes with this key, a d= and
 * an i= of these lengths, whatever the header section: for SIZE=. */
size_t dkim_sign_max(const struct dkim_key *k, size_t domain_len, size_t identity_len);

#endif
