/* lookup/expand: the query and result templates of database tables, with
 * Postfix's db_common_expand() rules (mysql_table(5) "query",
 * "result_format", "domain", "expansion_limit"). Pure: no I/O, no libuv, no
 * database; the backend passes its escaping function in.
 *
 * Sequences: %% a '%'; %s the input; %u its localpart (the whole input when
 * it has no '@'); %d its domain; %1..%9 the domain's labels counted from
 * the right (%1 the top-level one). In a result_format the upper-case %S %U
 * %D and %1..%9 take the lookup key, the lower-case ones the value. When a
 * needed part is missing (%u of "@dom", %d of a bare name, %3 of "a.b") the
 * expansion is suppressed: for a query that means "not found" without
 * asking the database; for a result value, that value is skipped. */
#ifndef SUBMITD_LOOKUP_EXPAND_H
#define SUBMITD_LOOKUP_EXPAND_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Checks a template: NULL when it is usable, else why not. */
const char *expand_check(const char *fmt);

/* Writes n escaped bytes of src to dst (room for 2 * n + 1) and returns the
 * length written (mysql_real_escape_string's contract). */
typedef size_t expand_escape_fn(void *ctx, char *dst, const char *src, size_t n);

/* Expands fmt into out (when out is not NULL; NULL only tests that the
 * expansion is possible). value supplies %s %u %d; key supplies %S %U %D
 * and %1-%9 (value when key is NULL). Every substituted piece goes through
 * escape when it is not NULL. Returns false when a needed part is missing
 * (out may then hold a partial expansion). fmt must pass expand_check(). */
bool expand(struct buf *out, const char *fmt, const char *value, const char *key,
	    expand_escape_fn *escape, void *escape_ctx);

/* Postfix's "domain" restriction: with a domain list (lower-case names),
 * only full addresses with a non-empty localpart in one of the domains are
 * looked up. True when key may be looked up. */
bool expand_domain_ok(char *const *domains, size_t ndomains, const char *key);

/* The values of one lookup, collected per result_format: each non-empty
 * column value is expanded and appended, ','-separated, as Postfix does. */
struct expand_result {
	struct buf out;
	unsigned nvalues;
	bool found;    /* at least one value was added */
	bool too_many; /* expansion_limit exceeded: the lookup fails */
};

void expand_result_init(struct expand_result *r);
void expand_result_free(struct expand_result *r);
/* Adds one column value (NULL or "" are skipped, as a value whose
 * expansion is suppressed). limit: expansion_limit, 0 = none. Returns false
 * once the limit is exceeded (r->too_many; nothing more is added). */
bool expand_result_add(struct expand_result *r, const char *result_format, unsigned limit,
		       const char *value, const char *key);

#endif
