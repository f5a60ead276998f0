/* lookup/expand: Postfix db_common_expand() rules for the query and
 * result_format templates, the "domain" restriction and expansion_limit
 * (mysql_table(5)), without a database. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lookup/expand.h"
#include "tap.h"

/* The expansion of fmt, or "(suppressed)". Static buffer: one at a time. */
static const char *ex(const char *fmt, const char *value, const char *key)
{
	static char out[1024];
	struct buf b = BUF_INIT;
	bool okay = expand(&b, fmt, value, key, NULL, NULL);
	bool possible = expand(NULL, fmt, value, key, NULL, NULL);
	if (okay != possible)
		snprintf(out, sizeof(out), "(expand(NULL) disagrees)");
	else if (!okay)
		snprintf(out, sizeof(out), "(suppressed)");
	else
		snprintf(out, sizeof(out), "%.*s", (int)buf_len(&b), (const char *)buf_data(&b));
	buf_free(&b);
	return out;
}

static void test_check(void)
{
	ok(expand_check("SELECT x FROM t WHERE a='%s' AND b='%u' AND c='%d'") == NULL,
	   "check: %%s %%u %%d accepted");
	ok(expand_check("%S %U %D %1 %9 %% plain") == NULL, "check: %%S %%U %%D %%1-%%9 %%%% accepted");
	ok(expand_check("") == NULL, "check: an empty template is a template");
	ok(expand_check("abc%") != NULL, "check: a trailing '%%' is refused");
	ok(expand_check("%x") != NULL, "check: %%x is refused");
	ok(expand_check("%0") != NULL, "check: %%0 is refused");
	ok(expand_check("%s%") != NULL, "check: '%%' at the end after a good sequence is refused");
}

static void test_parts(void)
{
	is_str(ex("%s", "User+x@Example.COM", NULL), "User+x@Example.COM", "%%s: the input as is");
	is_str(ex("%u", "alice@example.com", NULL), "alice", "%%u: the localpart");
	is_str(ex("%u", "alice", NULL), "alice", "%%u of a bare name: the whole name");
	is_str(ex("%u", "@example.com", NULL), "(suppressed)", "%%u of @domain: suppressed");
	is_str(ex("%d", "alice@example.com", NULL), "example.com", "%%d: the domain");
	is_str(ex("%d", "alice", NULL), "(suppressed)", "%%d of a bare name: suppressed");
	is_str(ex("%d", "alice@", NULL), "(suppressed)", "%%d of an empty domain: suppressed");
	is_str(ex("%u", "a@b@c.example", NULL), "a@b", "the last '@' splits");
	is_str(ex("%1", "a@mail.example.com", NULL), "com", "%%1: the top-level label");
	is_str(ex("%2", "a@mail.example.com", NULL), "example", "%%2: the next one");
	is_str(ex("%3", "a@mail.example.com", NULL), "mail", "%%3");
	is_str(ex("%4", "a@mail.example.com", NULL), "(suppressed)", "%%4: too few labels");
	is_str(ex("%1", "a@example.", NULL), "(suppressed)", "%%1 of a trailing dot: empty label");
	is_str(ex("%2", "a@x..com", NULL), "(suppressed)", "an empty label in the middle");
	is_str(ex("%1", "alice", NULL), "(suppressed)", "%%1 of a bare name: suppressed");
	is_str(ex("100%% %s", "v", NULL), "100% v", "%%%% is a percent sign");
	is_str(ex("no sequences", "v", NULL), "no sequences", "a template without sequences");
	is_str(ex("%x", "v", NULL), "(suppressed)", "an unchecked bad sequence: suppressed");
	is_str(ex("abc%", "v", NULL), "(suppressed)", "an unchecked trailing '%%' stops, no overread");
}

static void test_key_vs_value(void)
{
	/* result_format: lower case from the value, upper case and digits from the key */
	is_str(ex("%s|%S", "row@db.example", "key@in.example"), "row@db.example|key@in.example",
	       "%%s value, %%S key");
	is_str(ex("%u|%U|%d|%D", "r@db.example", "k@in.example"), "r|k|db.example|in.example",
	       "%%u %%d value, %%U %%D key");
	is_str(ex("%1", "r@db.example", "k@in.test"), "test", "%%1 comes from the key");
	is_str(ex("%U", "r@db.example", "@in.example"), "(suppressed)",
	       "a missing part of the key suppresses too");
	is_str(ex("%S", "value", NULL), "value", "without a key, %%S is the value");
}

static size_t esc_quote(void *ctx, char *dst, const char *src, size_t n)
{
	int *calls = ctx;
	(*calls)++;
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (src[i] == '\'' || src[i] == '\\')
			dst[w++] = '\\';
		dst[w++] = src[i];
	}
	dst[w] = 0;
	return w;
}

static void test_escape(void)
{
	struct buf b = BUF_INIT;
	int calls = 0;
	ok(expand(&b, "WHERE a='%s' AND d='%d'", "o'brien\\@ex'ample.com", NULL, esc_quote, &calls),
	   "escape: expanded");
	is_mem(buf_data(&b), buf_len(&b), "WHERE a='o\\'brien\\\\@ex\\'ample.com' AND d='ex\\'ample.com'",
	       strlen("WHERE a='o\\'brien\\\\@ex\\'ample.com' AND d='ex\\'ample.com'"),
	       "escape: every substituted piece escaped, the template not");
	is_int(calls, 2, "escape: called once per substitution");
	buf_free(&b);
}

static void test_domain(void)
{
	char *doms[] = {"example.com", "example.org"};
	ok(expand_domain_ok(NULL, 0, "anything"), "domain: no list, everything looked up");
	ok(expand_domain_ok(doms, 2, "a@example.org"), "domain: a listed domain");
	ok(!expand_domain_ok(doms, 2, "a@example.net"), "domain: another domain is not");
	ok(!expand_domain_ok(doms, 2, "a@sub.example.com"), "domain: a subdomain is not");
	ok(!expand_domain_ok(doms, 2, "@example.com"), "domain: @domain (no localpart) is not");
	ok(!expand_domain_ok(doms, 2, "example.com"), "domain: a bare name is not");
	ok(expand_domain_ok(doms, 2, "a@b@example.com"), "domain: the last '@' counts");
}

static void test_result(void)
{
	struct expand_result r;
	expand_result_init(&r);
	ok(expand_result_add(&r, "%s", 0, "alice", "k"), "result: add");
	ok(expand_result_add(&r, "%s", 0, NULL, "k"), "result: a NULL column is skipped");
	ok(expand_result_add(&r, "%s", 0, "", "k"), "result: an empty value is skipped");
	ok(expand_result_add(&r, "%s", 0, "bob", "k"), "result: add another");
	is_mem(buf_data(&r.out), buf_len(&r.out), "alice,bob", 9, "result: joined with ','");
	ok(r.found && !r.too_many, "result: found");
	expand_result_free(&r);
	ok(!r.found && buf_len(&r.out) == 0, "result: free resets");

	expand_result_init(&r);
	ok(expand_result_add(&r, "%u", 0, "@x.example", "k"), "result: suppressed value is not an error");
	ok(!r.found, "result: ...and not a value");
	ok(expand_result_add(&r, "smtp:[%d]", 0, "a@relay.example", "k"), "result: format applied");
	is_mem(buf_data(&r.out), buf_len(&r.out), "smtp:[relay.example]", 20, "result: formatted");
	expand_result_free(&r);

	expand_result_init(&r);
	ok(expand_result_add(&r, "%s", 2, "a", "k") && expand_result_add(&r, "%s", 2, "b", "k"),
	   "limit 2: two values fit");
	ok(!expand_result_add(&r, "%s", 2, "c", "k") && r.too_many, "limit 2: the third fails");
	ok(!expand_result_add(&r, "%s", 2, "d", "k"), "limit: nothing more is added");
	is_mem(buf_data(&r.out), buf_len(&r.out), "a,b", 3, "limit: what came before stays");
	expand_result_free(&r);

	expand_result_init(&r);
	ok(expand_result_add(&r, "", 0, "a", "k") && r.found, "empty result_format: a value, empty");
	ok(expand_result_add(&r, "%s", 0, "b", "k"), "empty result_format: next");
	is_mem(buf_data(&r.out), buf_len(&r.out), "b", 1,
	       "an empty first value takes no separator (as before the module existed)");
	expand_result_free(&r);
}

static void test_long(void)
{
	/* longer than any fixed buffer: the output grows */
	size_t n = 100000;
	char *v = malloc(n + 1);
	memset(v, 'x', n);
	v[n / 2] = '@';
	v[n] = 0;
	struct buf b = BUF_INIT;
	ok(expand(&b, "%u%d%s", v, NULL, NULL, NULL), "long input expands");
	is_int((long long)buf_len(&b), (long long)(2 * n - 1), "long input: whole length");
	buf_free(&b);
	free(v);
}

int main(void)
{
	test_check();
	test_parts();
	test_key_vs_value();
	test_escape();
	test_domain();
	test_result();
	test_long();
	return done_testing();
}
