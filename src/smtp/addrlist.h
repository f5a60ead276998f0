/* smtp/addrlist: the addresses of an RFC 5322 address-list field body
 * (From:, Sender:, To:, ...; RFC 5322 §3.4 with the obsolete syntax of §4.4,
 * groups also in From:/Sender: as RFC 6854 allows, UTF-8 as RFC 6532 allows).
 *
 * Pure codec, resumable at any byte: feeding a body whole or one byte at a
 * time gives the same addresses and the same verdict. It holds no limit of
 * its own (no fixed buffer, nothing cut): the caller bounds the input, the
 * way the header section is bounded by header_size_limit.
 *
 * What it returns is what a mail reader shows as the addresses: each mailbox's
 * addr-spec with comments, folding and whitespace removed (display names,
 * routes and group names dropped), quoted local parts kept quoted
 * ("a b"@example.org). Anything it cannot read unambiguously is an error,
 * never a guess: a check built on it refuses what it cannot see.
 *
 * Stricter than the grammar on purpose, where readers are known to disagree
 * with it (each one an error):
 *   - control characters (NUL included) and DEL anywhere, CR or LF other than
 *     in a fold (CRLF WSP);
 *   - "=?" anywhere in an addr-spec (RFC 2047 §5 (3): no encoded-word there;
 *     some readers decode it, "=?utf-8?q?ceo?=@example.org");
 *   - an encoded-word in a display name whose "?=" does not end inside the
 *     same atom or quoted string: readers that decode it (Python's email,
 *     for one) would read across a quote or an angle bracket and see
 *     another address than the grammar does;
 *   - quoted-pairs in domain literals, a backslash before CR or LF, nested
 *     groups, an empty angle address <>, a mailbox without a domain. */
#ifndef SUBMITD_SMTP_ADDRLIST_H
#define SUBMITD_SMTP_ADDRLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum addrlist_error {
	ADDRLIST_OK = 0,
	ADDRLIST_E_CHAR,    /* a control character, NUL, DEL, or CR/LF outside a fold */
	ADDRLIST_E_QUOTE,   /* unterminated quoted string */
	ADDRLIST_E_COMMENT, /* unterminated comment, or ')' without '(' */
	ADDRLIST_E_LITERAL, /* bad or unterminated domain literal, stray '[' or ']' */
	ADDRLIST_E_ENCODED, /* an encoded-word in an address or across a token */
	ADDRLIST_E_SYNTAX,  /* a token where the grammar has none (e.g. two addresses
	                         without a comma, a backslash outside quotes) */
	ADDRLIST_E_PHRASE,  /* a display name (or a local part) without an address */
	ADDRLIST_E_DOMAIN,  /* missing or malformed domain */
	ADDRLIST_E_LOCAL,   /* malformed local part (empty, leading/trailing/double dot) */
	ADDRLIST_E_ANGLE,   /* unterminated or empty angle address, bad route */
	ADDRLIST_E_GROUP,   /* nested or unterminated group */
	ADDRLIST_E_EMPTY,   /* no address and no group at all */
};

struct addrlist {
	/* outputs */
	struct buf addrs; /* the addresses in order, each NUL-terminated */
	size_t naddrs;
	enum addrlist_error error;
	size_t error_at; /* offset of the octet where the error was found */
	/* private: the lexer */
	size_t pos;       /* octets fed so far */
	int lex;          /* lexer state */
	int lex_resume;   /* state to go back to after a fold */
	size_t depth;     /* comment nesting */
	struct buf tok;   /* the atom, quoted string or literal being read */
	bool tok_ew_open; /* quoted string: an encoded-word may start here */
	/* private: the grammar */
	int gram;     /* grammar state */
	int dom;      /* domain sub-state */
	int dom_next; /* grammar state after the domain */
	bool in_group;
	bool any;       /* an address or a group was seen */
	bool last_dot;  /* the last word-level token was a '.' */
	bool local_ok;  /* the words so far form word *("." word) */
	bool local_ew;  /* one of those words holds "=?" */
	struct buf cur; /* local part being built, then "@domain" */
};

void addrlist_init(struct addrlist *a);
void addrlist_free(struct addrlist *a);

/* Feeds the next octets of a field body: the text after the colon, folds
 * (CRLF followed by WSP) included, without the CRLF that ends the field.
 * Returns false once the body is known to be unreadable (a->error); the
 * rest is then ignored. */
bool addrlist_feed(struct addrlist *a, const uint8_t *p, size_t n);

/* The end of the body. True when it was a well-formed address list; the
 * addresses are then in a->addrs (a->naddrs may be 0: only empty groups). */
bool addrlist_finish(struct addrlist *a);

/* addrlist_feed() and addrlist_finish() on a whole body. */
bool addrlist_parse(struct addrlist *a, const uint8_t *p, size_t n);

/* Iterates the addresses: addrlist_next(a, NULL) is the first, NULL after
 * the last. */
const char *addrlist_next(const struct addrlist *a, const char *prev);

/* A short English description of an error, for replies and logs. */
const char *addrlist_strerror(enum addrlist_error e);

#endif
