/* dkim_conf: the signing configuration of a snapshot (dkim_key_table,
 * dkim_signing_table, dkim_headers, dkim_canonicalization,
 * dkim_signature_expiry), loaded whole with every key read, and the choice
 * of signatures for a message. Read-only once loaded: the workers sign with
 * the same keys concurrently, as they use the same TLS credentials. */
#ifndef SUBMITD_DKIM_CONF_H
#define SUBMITD_DKIM_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dkim/dkim.h"
#include "dkim/dkim_table.h"

#define DKIM_SIGS_MAX 8 /* signatures on one message */

struct dkim_settings {
	const char *key_table;     /* [file:]PATH */
	const char *signing_table; /* [file:|refile:]PATH */
	const char *headers;       /* names, separated by ',', ':' or spaces */
	const char *canon;         /* "relaxed/relaxed", "simple", "relaxed/simple", ... */
	uint64_t expire_s;         /* x= after this many seconds; 0: none */
	const char *never_sign;    /* a field name never put in h= (relay_auth_header), or NULL */
};

struct dkim_conf {
	struct dkim_keytable kt;
	struct dkim_sigtable st;
	char **headers;
	size_t nheaders;
	enum dkim_canon hcanon, bcanon;
	uint64_t expire_s;
	size_t added_max; /* the most the signatures add to a message */
};

/* Reads both tables and every key of the KeyTable. On error returns NULL
 * with a message naming the file (and line) in err. */
struct dkim_conf *dkim_conf_new(const struct dkim_settings *s, char *err, size_t errlen);
void dkim_conf_free(struct dkim_conf **c);

/* The default dkim_headers. */
extern const char dkim_conf_default_headers[];

/* One signature to make. */
struct dkim_choice {
	const struct dkim_key *key;
	char domain[256];
	char identity[320]; /* "" : no i= */
};

/* The signatures for a message whose From: address is from (the first
 * From: mailbox, as smtp/addrlist.h returns it). At most max; 0: unsigned. */
size_t dkim_conf_choose(const struct dkim_conf *c, const char *from, struct dkim_choice *out,
			size_t max);

/* Signs the header section h[0..n) as it will be sent, with the body hash
 * bh, for each choice; appends the DKIM-Signature fields to out (the caller
 * sends them first). Returns false with err when one signature failed. */
bool dkim_conf_sign(const struct dkim_conf *c, const struct dkim_choice *ch, size_t nch,
		    const uint8_t *h, size_t n, const uint8_t *bh, time_t now, struct buf *out,
		    char *err, size_t errlen);

/* `submitd -t`: one line per key (name, domain, selector, algorithm, size)
 * and the TXT record to publish. */
void dkim_conf_describe(const struct dkim_conf *c, FILE *out);

#endif
