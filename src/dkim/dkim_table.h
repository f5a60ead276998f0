/* dkim_table: OpenDKIM's KeyTable and SigningTable, read unchanged
 * (opendkim.conf(5), "DATA SETS"; docs/dkim.md has the semantics).
 *
 *   KeyTable      NAME DOMAIN:SELECTOR:/path/to/key   (DOMAIN "%": the From: domain)
 *   SigningTable  KEY  NAME [SIGNER]                  (NAME "%": the From: domain;
 *                                                      "%" in SIGNER too)
 * Files: '#' starts a comment, empty lines are skipped, the key is the first
 * word, the value the rest of the line. A SigningTable written
 * "refile:PATH" has glob patterns ('*' = any string) as keys, tried in
 * file order; otherwise the keys tried are, in order, user@host, host,
 * user@.parent for each parent domain, .parent for each, user@*, and *.
 * Every match is a signature (OpenDKIM's MultipleSignatures), the same
 * key and domain only once. Addresses and keys compare case-insensitively.
 * Pure: the parsers take text; dkim_table_read() reads a file. */
#ifndef SUBMITD_DKIM_TABLE_H
#define SUBMITD_DKIM_TABLE_H

#include <stdbool.h>
#include <stddef.h>

#include "dkim/dkim.h"

#define DKIM_TABLE_MAX_LINES 100000

struct dkim_keytable {
	struct dkim_key *keys;
	size_t n;
};

struct dkim_signing {
	char *key;    /* the address, domain or pattern (lowercase) */
	char *name;   /* the KeyTable name, or "%" */
	char *signer; /* i= ("%" replaced at signing), or NULL */
};

struct dkim_sigtable {
	bool refile;
	struct dkim_signing *e;
	size_t n;
};

/* "[file:|refile:]PATH": what kind and where. Returns false for other types
 * (err says which are known). */
bool dkim_table_spec(const char *spec, bool *refile_r, const char **path_r, char *err,
		     size_t errlen);
/* Reads a whole table file (at most 16 MiB) into *text_r (NUL-terminated). */
bool dkim_table_read(const char *path, char **text_r, char *err, size_t errlen);

/* Parse text; errors say "LINE: what". Key files are not read here. */
bool dkim_keytable_parse(struct dkim_keytable *kt, const char *text, char *err, size_t errlen);
bool dkim_sigtable_parse(struct dkim_sigtable *st, const char *text, bool refile, char *err,
			 size_t errlen);
void dkim_keytable_clear(struct dkim_keytable *kt);
void dkim_sigtable_clear(struct dkim_sigtable *st);

const struct dkim_key *dkim_keytable_find(const struct dkim_keytable *kt, const char *name);

/* The entries that apply to addr ("user@host"), in order, at most max. */
size_t dkim_sigtable_match(const struct dkim_sigtable *st, const char *addr,
			   const struct dkim_signing **out, size_t max);

/* '*' matches any string (also empty), everything else itself, ASCII case
 * folded. Linear in practice (greedy with one backtrack point). */
bool dkim_glob(const char *pat, const char *s);

#endif
