/* Unit tests: lookup tables (texthash/inline/static/fail, the cache, the
 * async contract) and the sender ownership policy over fake in-memory
 * tables. Each block names the rule it defends. */
#include "config.h"

#include <db.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "policy/sender_login.h"
#include "tap.h"

static uv_loop_t loop;
static char tmpdir[] = "/tmp/submitd-test-table-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

/* ---- table lookups ---- */

struct answer {
	int calls;
	enum table_status status;
	char value[512];
};

static void answer_cb(void *ctx, enum table_status st, const char *value)
{
	struct answer *a = ctx;
	a->calls++;
	a->status = st;
	snprintf(a->value, sizeof(a->value), "%s", value ? value : "");
}

static struct answer lookup(struct table_inst *ti, const char *key)
{
	struct answer a = {0};
	table_lookup(ti, key, answer_cb, &a);
	/* docs/design.md §9.9: a completion never fires inside the call that started it */
	ok(a.calls == 0, "lookup %s: no callback inside table_lookup()", key);
	uv_run(&loop, UV_RUN_DEFAULT);
	return a;
}

static void test_texthash(void)
{
	char err[512];
	const char *path = write_file("owners",
		"# sender owners\n"
		"alice@example.com   alice@example.com\n"
		"Sales@Example.COM   alice@example.com,\n"
		"    bob@example.com\n"
		"\n"
		"  # an indented comment inside nothing\n"
		"@example.org\tcatchall@example.org\r\n"
		"\"john doe\"@example.com john\n"
		"legacy: value\n");
	struct table *t = table_open(path[0] ? "" : "", err, sizeof(err));
	ok(t == NULL, "empty spec is an error");
	char spec[600];
	snprintf(spec, sizeof(spec), "texthash:%s", path);
	t = table_open(spec, err, sizeof(err));
	if (!ok(t != NULL, "texthash loads"))
		diag("%s", err);
	if (t == NULL)
		return;
	const char *v;
	ok(table_lookup_sync(t, "alice@example.com", &v) == TABLE_OK && strcmp(v, "alice@example.com") == 0,
	   "plain key");
	ok(table_lookup_sync(t, "sales@example.com", &v) == TABLE_OK
	   && strcmp(v, "alice@example.com, bob@example.com") == 0,
	   "keys are lower-cased; a line starting with whitespace continues the value");
	ok(table_lookup_sync(t, "SALES@example.com", &v) == TABLE_OK, "lookup key is lower-cased too");
	ok(table_lookup_sync(t, "@example.org", &v) == TABLE_OK && strcmp(v, "catchall@example.org") == 0,
	   "tab separator, CRLF line end");
	ok(table_lookup_sync(t, "\"john doe\"@example.com", &v) == TABLE_OK && strcmp(v, "john") == 0,
	   "quoted key keeps its space");
	ok(table_lookup_sync(t, "legacy", &v) == TABLE_OK, "\"key: value\" accepted");
	ok(table_lookup_sync(t, "nobody@example.com", &v) == TABLE_NOTFOUND, "missing key");
	is_str(table_name(t), spec, "table_name is the spec");

	/* async path */
	struct table_inst *ti = table_inst_new(t, &loop);
	struct answer a = lookup(ti, "Alice@Example.com");
	ok(a.calls == 1 && a.status == TABLE_OK && strcmp(a.value, "alice@example.com") == 0,
	   "async hit after one loop turn");
	a = lookup(ti, "x@y");
	ok(a.calls == 1 && a.status == TABLE_NOTFOUND, "async miss");
	a = (struct answer){0};
	table_lookupn(ti, "alice@example.com\0evil", 22, answer_cb, &a);
	uv_run(&loop, UV_RUN_DEFAULT);
	ok(a.calls == 1 && a.status == TABLE_NOTFOUND, "a key containing NUL is not found");

	/* cancel: docs/design.md invariant 9 / docs/design.md §9.8 */
	a = (struct answer){0};
	struct table_req *r = table_lookup(ti, "alice@example.com", answer_cb, &a);
	table_cancel(&r);
	ok(r == NULL, "cancel clears the handle");
	uv_run(&loop, UV_RUN_DEFAULT);
	ok(a.calls == 0, "a cancelled lookup never calls back");
	table_inst_close(&ti);
	uv_run(&loop, UV_RUN_DEFAULT);
	table_free(&t);
	ok(t == NULL, "table_free clears the pointer");
}

/* hash:/btree: files written here directly, in shapes postmap never
 * writes: a table built elsewhere is input like any other. */
static const char *write_db(const char *name, DBTYPE type, const char *const *kv,
			    const size_t *lens, size_t n)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s.db", tmpdir, name);
	unlink(path);
	DB *db;
	if (db_create(&db, NULL, 0) != 0 ||
	    db->open(db, NULL, path, NULL, type, DB_CREATE, 0600) != 0)
		abort();
	for (size_t i = 0; i + 1 < n; i += 2) {
		DBT k, v;
		memset(&k, 0, sizeof(k));
		memset(&v, 0, sizeof(v));
		k.data = (void *)kv[i];
		k.size = (u_int32_t)lens[i];
		v.data = (void *)kv[i + 1];
		v.size = (u_int32_t)lens[i + 1];
		db->put(db, NULL, &k, &v, 0);
	}
	db->close(db, 0);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	return path;
}

static void test_db(void)
{
	char err[512], spec[600];
	/* postmap -N writes a trailing NUL after key and value, -n does not */
	const char *kv[] = {"Alice@Example.com", "alice", "bob@example.com\0", "bob\0", "x@y", ""};
	const size_t lens[] = {17, 5, 16, 4, 3, 0};
	const char *path = write_db("mixed", DB_HASH, kv, lens, 6);
	snprintf(spec, sizeof(spec), "hash:%s", path);
	struct table *t = table_open(spec, err, sizeof(err));
	if (!ok(t != NULL, "hash: with and without trailing NULs loads"))
		diag("%s", err);
	const char *v;
	ok(t && table_lookup_sync(t, "alice@example.com", &v) == TABLE_OK &&
		   strcmp(v, "alice") == 0,
	   "an upper-case key is found lower-cased");
	ok(t && table_lookup_sync(t, "bob@example.com", &v) == TABLE_OK && strcmp(v, "bob") == 0,
	   "one trailing NUL is dropped from key and value");
	ok(t && table_lookup_sync(t, "x@y", &v) == TABLE_OK && strcmp(v, "") == 0,
	   "an empty value is a value");
	table_free(&t);

	snprintf(spec, sizeof(spec), "btree:%s", path);
	t = table_open(spec, err, sizeof(err));
	ok(t == NULL && strstr(err, "not a btree file") != NULL,
	   "btree: on a hash file is refused");

	const char *nul_in_value[] = {"k@x", "a\0b"};
	size_t l2[] = {3, 3};
	path = write_db("nulvalue", DB_BTREE, nul_in_value, l2, 2);
	snprintf(spec, sizeof(spec), "btree:%s", path);
	t = table_open(spec, err, sizeof(err));
	ok(t == NULL && strstr(err, "a value with a NUL inside") != NULL,
	   "a NUL inside a value is refused, not cut short");
	const char *nul_in_key[] = {"k\0@evil", "v"};
	size_t l3[] = {8, 1};
	path = write_db("nulkey", DB_HASH, nul_in_key, l3, 2);
	snprintf(spec, sizeof(spec), "hash:%s", path);
	t = table_open(spec, err, sizeof(err));
	ok(t == NULL && strstr(err, "a key with a NUL inside") != NULL,
	   "a NUL inside a key is refused, not cut short");
	const char *empty_key[] = {"", "v"};
	size_t l4[] = {0, 1};
	path = write_db("emptykey", DB_HASH, empty_key, l4, 2);
	snprintf(spec, sizeof(spec), "hash:%s", path);
	t = table_open(spec, err, sizeof(err));
	ok(t == NULL && strstr(err, "empty key") != NULL, "an empty key is refused");
	path = write_file("notadb.db", "this is text, not Berkeley DB\n");
	t = table_open("hash:/nonexistent/dir/x", err, sizeof(err));
	ok(t == NULL && strstr(err, "run postmap") != NULL,
	   "a missing .db: the hint to run postmap");
	char stem[512];
	snprintf(stem, sizeof(stem), "hash:%.*s", (int)(strlen(path) - 3), path);
	t = table_open(stem, err, sizeof(err));
	ok(t == NULL && strstr(err, "notadb.db") != NULL,
	   "a file that is not Berkeley DB is refused");
}

static void expect_error(const char *name, const char *text, const char *want)
{
	char err[512] = "", spec[600];
	const char *path = write_file(name, text);
	snprintf(spec, sizeof(spec), "texthash:%s", path);
	struct table *t = table_open(spec, err, sizeof(err));
	char full[600];
	snprintf(full, sizeof(full), "%s:%s", path, want);
	ok(t == NULL && strncmp(err, full, strlen(full)) == 0, "error names file:line for %s", name);
	if (t || strncmp(err, full, strlen(full)) != 0)
		diag("got \"%s\", want prefix \"%s\"", err, full);
	table_free(&t);
}

static void test_texthash_errors(void)
{
	expect_error("novalue", "# c\na b\nlonely\n", "3: expected format");
	expect_error("dup", "a b\n\nA c\n", "3: duplicate key \"a\"");
	expect_error("cont", "  starts indented\n", "1: continuation line");
	expect_error("quote", "x y\n\"unbalanced@x value\n", "2: unbalanced");
	char err[256];
	struct table *t = table_open("texthash:/nonexistent/file", err, sizeof(err));
	ok(t == NULL && strstr(err, "/nonexistent/file") != NULL, "missing file: error names it");
	t = table_open("cdb:/etc/x", err, sizeof(err));
	ok(t == NULL && strstr(err, "unsupported table type") != NULL, "unknown type refused");
	t = table_open("noprefix", err, sizeof(err));
	ok(t == NULL, "name without type refused");
	t = table_open_text("texthash", "a b\0c d\n", 8, "blob", err, sizeof(err));
	ok(t == NULL && strncmp(err, "blob:1: NUL", 11) == 0, "NUL byte refused with line");
	t = table_open_text("texthash", "", 0, "empty", err, sizeof(err));
	ok(t != NULL, "empty file is an empty table");
	table_free(&t);
}

static void test_inline_static_fail(void)
{
	char err[256];
	const char *v;
	struct table *t = table_open("inline:{ a@x=alice, { b@x = bob carol }, C@X=c }", err, sizeof(err));
	if (!ok(t != NULL, "inline table"))
		diag("%s", err);
	ok(t && table_lookup_sync(t, "a@x", &v) == TABLE_OK && strcmp(v, "alice") == 0, "inline a");
	ok(t && table_lookup_sync(t, "b@x", &v) == TABLE_OK && strcmp(v, "bob carol") == 0,
	   "inline braces keep spaces");
	ok(t && table_lookup_sync(t, "c@x", &v) == TABLE_OK, "inline keys lower-cased");
	table_free(&t);
	ok(table_open("inline:{ a }", err, sizeof(err)) == NULL, "inline without = refused");
	ok(table_open("inline:a=b", err, sizeof(err)) == NULL, "inline without braces refused");
	t = table_open("static:{ x y }", err, sizeof(err));
	ok(t && table_lookup_sync(t, "anything", &v) == TABLE_OK && strcmp(v, "x y") == 0, "static");
	table_free(&t);
	t = table_open("fail:down", err, sizeof(err));
	struct table_inst *ti = table_inst_new(t, &loop);
	struct answer a = lookup(ti, "k");
	ok(a.status == TABLE_TEMPFAIL, "fail: table is TEMPFAIL");
	table_inst_close(&ti);
	uv_run(&loop, UV_RUN_DEFAULT);
	table_free(&t);
}

/* ---- mysql_table(5) files: parsed without a server ---- */

static void cf_error(const char *text, const char *want, const char *what)
{
	char err[512] = "";
	struct table *t = table_open_text("mysql", text, strlen(text), "x.cf", err, sizeof(err));
	ok(t == NULL && strstr(err, want) != NULL, "mysql .cf: %s", what);
	if (t != NULL || strstr(err, want) == NULL)
		diag("got \"%s\", want \"%s\"", err, want);
	table_free(&t);
}

static void test_mysql_cf(void)
{
	char err[512];
	const char *good =
		"# ISPmail\n"
		"hosts = unix:/run/mysqld/mysqld.sock inet:127.0.0.1:3306, [::1]:3307 db.example\n"
		"user = mailuser\npassword = secret\ndbname = mailserver\n"
		"query = SELECT destination FROM virtual_aliases\n"
		"   WHERE source='%s'\n"
		"result_format = %u %%\nexpansion_limit = 5\nretry_interval = 2m\n"
		"query_timeout = 500ms\ntls_verify_cert = yes\nunknown_key = ignored\n";
	struct table *t = table_open_text("mysql", good, strlen(good), "good.cf", err, sizeof(err));
	if (!ok(t != NULL, "mysql .cf: a Postfix file parses (continuation, 4 host forms)"))
		diag("%s", err);
	ok(t && !table_is_memory(t), "mysql table is not a memory table");
	table_free(&t);
	const char *legacy = "dbname = d\nselect_field = email\ntable = virtual_users\nwhere_field = email\n";
	t = table_open_text("mysql", legacy, strlen(legacy), "legacy.cf", err, sizeof(err));
	ok(t != NULL, "mysql .cf: legacy select_field/table/where_field");
	table_free(&t);
	cf_error("user = x\nquery = SELECT 1\n", "missing \"dbname", "dbname required");
	cf_error("dbname = d\n", "missing \"query", "query required");
	cf_error("dbname = d\n\nquery = SELECT '%x'\n", "x.cf:3: query: invalid %-sequence", "bad %-sequence names the line");
	cf_error("dbname = d\nquery = SELECT '%s'\nresult_format = %\n", "x.cf:3: result_format", "bad result_format");
	cf_error("dbname = d\nquery = q\nhosts = unix:relative\n", "x.cf:3: hosts: bad host", "bad host");
	cf_error("dbname = d\nquery = q\nhosts = 1.2.3.4:99999\n", "x.cf:3: hosts: bad host", "bad port");
	cf_error("dbname = d\nquery = q\nquery_timeout = soon\n", "x.cf:3: query_timeout: bad time", "bad duration");
	cf_error("dbname = d\nquery = q\nquery_timeout = 18446744073709551\n",
		 "x.cf:3: query_timeout: bad time value \"18446744073709551\" (at most 1d)",
		 "a duration that would wrap a deadline is refused");
	cf_error("dbname = d\nquery = q\nretry_interval = 2d\n", "x.cf:3: retry_interval: bad time",
		 "durations are at most a day");
	cf_error("dbname = d\nquery = q\nmax_connections = 0\n", "x.cf:3: max_connections", "bounded numbers");
	cf_error("dbname = d\nquery = q\ntls_verify_cert = maybe\n", "x.cf:3: tls_verify_cert", "booleans");
	cf_error("dbname = d\nquery = q\ndomain = hash:/etc/x\n", "x.cf:3: domain", "domain tables refused");
	cf_error("  indented first\n", "x.cf:1: continuation", "leading continuation");
	cf_error("dbname d\n", "x.cf:1: expected \"name = value\"", "line without =");
	t = table_open("mysql:/nonexistent.cf", err, sizeof(err));
	ok(t == NULL && strstr(err, "/nonexistent.cf") != NULL, "mysql: missing file named");
}

/* ---- cache ---- */

static uint64_t fake_now;
static uint64_t fake_clock(void *ctx)
{
	return fake_now;
}

static void test_cache(void)
{
	char err[256];
	struct table *t = table_open("inline:{a=1}", err, sizeof(err));
	struct table_cache_opts o = {.positive_ttl_ms = 1000, .negative_ttl_ms = 100, .max_entries = 2};
	table_set_cache(t, &o);
	struct table_inst *ti = table_inst_new(t, &loop);
	table_inst_set_clock(ti, fake_clock, NULL);
	struct table_stats st;
	fake_now = 5000;
	lookup(ti, "a");
	table_inst_stats(ti, &st);
	is_int((long long)st.cache_hits, 0, "first lookup is not from the cache");
	fake_now += 999;
	struct answer a = lookup(ti, "A");
	table_inst_stats(ti, &st);
	ok(st.cache_hits == 1 && a.status == TABLE_OK && strcmp(a.value, "1") == 0,
	   "positive answer cached within its TTL");
	fake_now += 1;
	lookup(ti, "a");
	table_inst_stats(ti, &st);
	is_int((long long)st.cache_hits, 1, "positive entry expires after positive TTL");
	lookup(ti, "zz");
	fake_now += 99;
	a = lookup(ti, "zz");
	table_inst_stats(ti, &st);
	ok(st.cache_hits == 2 && a.status == TABLE_NOTFOUND, "negative answer cached");
	fake_now += 1;
	lookup(ti, "zz");
	table_inst_stats(ti, &st);
	is_int((long long)st.cache_hits, 2, "negative entry expires after negative TTL");
	/* max_entries = 2: a third key evicts the oldest */
	lookup(ti, "b");
	lookup(ti, "c");
	table_inst_stats(ti, &st);
	uint64_t h0 = st.cache_hits;
	lookup(ti, "c");
	table_inst_stats(ti, &st);
	is_int((long long)(st.cache_hits - h0), 1, "recent entry still cached");
	lookup(ti, "zz");
	table_inst_stats(ti, &st);
	is_int((long long)(st.cache_hits - h0), 1, "oldest entry evicted at max_entries");
	table_inst_close(&ti);
	uv_run(&loop, UV_RUN_DEFAULT);

	o.positive_ttl_ms = 0;
	o.negative_ttl_ms = 0;
	table_set_cache(t, &o);
	ti = table_inst_new(t, &loop);
	lookup(ti, "a");
	lookup(ti, "a");
	table_inst_stats(ti, &st);
	is_int((long long)st.cache_hits, 0, "TTL 0 = cache off");
	table_inst_close(&ti);
	uv_run(&loop, UV_RUN_DEFAULT);

	/* TEMPFAIL is never cached */
	struct table *f = table_open("fail:x", err, sizeof(err));
	o.positive_ttl_ms = o.negative_ttl_ms = 100000;
	table_set_cache(f, &o);
	ti = table_inst_new(f, &loop);
	lookup(ti, "a");
	lookup(ti, "a");
	table_inst_stats(ti, &st);
	ok(st.cache_hits == 0 && st.tempfails == 2, "TEMPFAIL is not cached");
	table_inst_close(&ti);
	uv_run(&loop, UV_RUN_DEFAULT);
	table_free(&f);
	table_free(&t);
}

/* ---- sender_login ---- */

static void test_keys(void)
{
	char keys[2048];
	struct {
		const char *addr, *delims, *want; /* want: keys joined with | */
	} cases[] = {
		{"alice@example.com", "+", "alice@example.com|@example.com"},
		{"Alice+News@Example.COM", "+", "Alice+News@Example.COM|Alice@Example.COM|@Example.COM"},
		{"alice+news@example.com", "", "alice+news@example.com|@example.com"},
		{"a+b-c@d", "-+", "a+b-c@d|a@d|@d"},
		{"a-b+c@d", "+-", "a-b+c@d|a@d|@d"},
		{"+foo@d", "+", "+foo@d|@d"},
		{"foo+@d", "+", "foo+@d|foo@d|@d"},
		{"postmaster+x@d", "+", "postmaster+x@d|postmaster@d|@d"},
		{"postmaster@d", "+", "postmaster@d|@d"},
		{"owner-list@d", "-", "owner-list@d|@d"},
		{"list-request@d", "-", "list-request@d|@d"},
		{"list-request@d", "+", "list-request@d|@d"},
		{"\"alice\"@d", "+", "alice@d|@d"},
		{"\"john doe\"@d", "+", "\"john doe\"@d|john doe@d|@d"},
		{"\"a\\\"b\"@d", "+", "\"a\\\"b\"@d|a\"b@d|@d"},
		{"\"x@y\"@d", "+", "\"x@y\"@d|x@y@d|@d"},
		{"bare", "+", "bare"},
		{"bare+ext", "+", "bare+ext|bare"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int n = addrkey_keys(cases[i].addr, cases[i].delims, keys, sizeof(keys));
		char joined[2048] = "";
		const char *p = keys;
		for (int k = 0; k < n; k++) {
			if (k)
				strcat(joined, "|");
			strcat(joined, p);
			p += strlen(p) + 1;
		}
		is_str(joined, cases[i].want, "lookup order for %s (delimiters \"%s\")", cases[i].addr,
		       cases[i].delims);
	}
	ok(sender_login_owner_match("alice@x, bob@x\tcarol@x\n", "carol@x"), "owners split on comma/space/tab");
	ok(sender_login_owner_match("alice@x,bob@x", "BOB@X"), "owner match is case-insensitive");
	ok(!sender_login_owner_match("alice@x", "alice"), "no partial match");
	ok(!sender_login_owner_match("alice@x", "alice@x.evil"), "no prefix match");
	ok(!sender_login_owner_match("", "alice@x"), "empty owners match nobody");
}

struct verdict {
	int calls;
	enum sender_login_result r;
	char owners[256];
};

static void verdict_cb(void *ctx, enum sender_login_result r, const char *owners)
{
	struct verdict *v = ctx;
	v->calls++;
	v->r = r;
	snprintf(v->owners, sizeof(v->owners), "%s", owners ? owners : "");
}

static enum sender_login_result check(struct sender_login *sl, enum sender_login_policy pol,
				      const char *sender, const char *login)
{
	struct verdict v = {0};
	sender_login_check_policy(sl, pol, sender, login, verdict_cb, &v);
	if (v.calls != 0)
		ok(0, "callback inside sender_login_check for %s", sender);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (v.calls != 1)
		ok(0, "exactly one callback for %s (got %d)", sender, v.calls);
	return v.r;
}

static struct sender_login_conf *conf_new(const char *maps, const char *policy)
{
	char err[256];
	struct sender_login_settings s = {.maps = maps, .policy = policy};
	struct sender_login_conf *c = sender_login_conf_new(&s, err, sizeof(err));
	if (c == NULL)
		diag("conf: %s", err);
	return c;
}

#define R(x) SENDER_LOGIN_##x

static void test_policy(void)
{
	/* email2email + aliases, the ISPmail layout (reference §6) */
	struct sender_login_conf *c = conf_new(
		"inline:{ @example.com=catchall@example.com, { sales@example.com = alice@example.com, bob@example.com } },"
		" inline:{ alice@example.com=alice@example.com, bob@example.com=bob@example.com,"
		" @example.com=nobody-here, shadow@example.net=second }"
		" inline:{ shadow@example.net=third, @example.net=net-owner }", NULL);
	if (!ok(c != NULL, "conf with three tables"))
		return;
	ok(sender_login_conf_policy(c) == SENDER_LOGIN_REJECT_MISMATCH, "default policy is reject_sender_login_mismatch");
	struct sender_login *sl = sender_login_new(c, &loop);
	const enum sender_login_policy P = SENDER_LOGIN_REJECT_MISMATCH;

	ok(check(sl, P, "alice@example.com", "alice@example.com") == R(OWNED), "own address");
	ok(check(sl, P, "Alice@EXAMPLE.com", "ALICE@example.COM") == R(OWNED), "case-insensitive key and login");
	ok(check(sl, P, "alice+lists@example.com", "alice@example.com") == R(OWNED), "+extension stripped");
	ok(check(sl, P, "sales@example.com", "alice@example.com") == R(OWNED), "alias, first owner");
	ok(check(sl, P, "sales@example.com", "bob@example.com") == R(OWNED), "alias, second owner");
	ok(check(sl, P, "sales@example.com", "carol@example.com") == R(NOT_OWNED), "alias, not an owner");
	ok(check(sl, P, "bob@example.com", "alice@example.com") == R(NOT_OWNED), "someone else's address");
	ok(check(sl, P, "alice@example.com", "catchall@example.com") == R(NOT_OWNED),
	   "full-address hit in table 2 beats @domain in table 1 (key precedence)");
	ok(check(sl, P, "random@example.com", "catchall@example.com") == R(OWNED), "catch-all @domain");
	ok(check(sl, P, "random@example.com", "nobody-here") == R(NOT_OWNED),
	   "first table that answers wins, answers never merged");
	ok(check(sl, P, "shadow@example.net", "second") == R(OWNED), "table order for the same key");
	ok(check(sl, P, "shadow@example.net", "third") == R(NOT_OWNED), "later table not consulted");
	ok(check(sl, P, "x@example.net", "net-owner") == R(OWNED), "@domain from the third table");
	ok(check(sl, P, "x@unlisted.org", "alice@example.com") == R(NOT_OWNED), "unlisted sender rejected (authenticated)");
	ok(check(sl, P, "", "alice@example.com") == R(NOT_CHECKED), "null sender never checked");
	ok(check(sl, P, "", NULL) == R(NOT_CHECKED), "null sender never checked (unauthenticated)");
	ok(check(sl, P, "alice@example.com", NULL) == R(NOT_LOGGED_IN), "listed sender, not logged in");
	ok(check(sl, P, "x@unlisted.org", NULL) == R(NOT_CHECKED), "unlisted sender, not logged in: passes");
	ok(check(sl, P, "alice@example.com", "alice") == R(NOT_OWNED), "bare login never matches an address owner");

	/* the policy matrix (reference §1) */
	struct {
		enum sender_login_policy p;
		const char *sender, *login;
		enum sender_login_result want;
		const char *what;
	} m[] = {
		{R(REJECT_AUTHENTICATED), "alice@example.com", "alice@example.com", R(OWNED), "auth: owner"},
		{R(REJECT_AUTHENTICATED), "alice@example.com", "bob@example.com", R(NOT_OWNED), "auth: not owner"},
		{R(REJECT_AUTHENTICATED), "x@unlisted.org", "bob@example.com", R(NOT_OWNED), "auth: unlisted rejected"},
		{R(REJECT_AUTHENTICATED), "alice@example.com", NULL, R(NOT_CHECKED), "auth: no-op without login"},
		{R(REJECT_KNOWN), "alice@example.com", "alice@example.com", R(OWNED), "known: owner"},
		{R(REJECT_KNOWN), "alice@example.com", "bob@example.com", R(NOT_OWNED), "known: listed, not owner"},
		{R(REJECT_KNOWN), "x@unlisted.org", "bob@example.com", R(NOT_CHECKED), "known: unlisted allowed"},
		{R(REJECT_KNOWN), "alice@example.com", NULL, R(NOT_LOGGED_IN), "known: listed needs login"},
		{R(REJECT_KNOWN), "x@unlisted.org", NULL, R(NOT_CHECKED), "known: unlisted, no login"},
		{R(REJECT_UNAUTHENTICATED), "alice@example.com", "bob@example.com", R(NOT_CHECKED), "unauth: no-op with login"},
		{R(REJECT_UNAUTHENTICATED), "alice@example.com", NULL, R(NOT_LOGGED_IN), "unauth: listed rejected"},
		{R(REJECT_UNAUTHENTICATED), "x@unlisted.org", NULL, R(NOT_CHECKED), "unauth: unlisted passes"},
		{R(NONE), "alice@example.com", "bob@example.com", R(NOT_CHECKED), "none: never checks"},
		{R(NONE), "alice@example.com", NULL, R(NOT_CHECKED), "none: never checks (no login)"},
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		enum sender_login_result got = check(sl, m[i].p, m[i].sender, m[i].login);
		if (!ok(got == m[i].want, "%s: %s", sender_login_policy_name(m[i].p), m[i].what))
			diag("got %s", sender_login_result_name(got));
	}

	/* cancel before the answer */
	struct verdict v = {0};
	struct sender_login_req *r = sender_login_check(sl, "alice@example.com", "alice@example.com", verdict_cb, &v);
	sender_login_cancel(&r);
	struct sender_login_req *r2 = sender_login_check(sl, "", "a", verdict_cb, &v);
	sender_login_cancel(&r2);
	uv_run(&loop, UV_RUN_DEFAULT);
	ok(v.calls == 0 && r == NULL && r2 == NULL, "cancelled checks never call back");
	/* free with a check in flight: no callback, no leak */
	sender_login_check(sl, "alice@example.com", "alice@example.com", verdict_cb, &v);
	sender_login_free(&sl);
	uv_run(&loop, UV_RUN_DEFAULT);
	ok(v.calls == 0 && sl == NULL, "free cancels checks in flight");
	sender_login_conf_free(&c);

	/* a table error ends the search: TEMPFAIL (invariant 4) */
	c = conf_new("inline:{ alice@example.com=alice@example.com }, fail:db", NULL);
	sl = sender_login_new(c, &loop);
	ok(check(sl, P, "alice@example.com", "alice@example.com") == R(OWNED), "answer before the failing table");
	ok(check(sl, P, "bob@example.com", "bob@example.com") == R(TEMPFAIL), "failing table: TEMPFAIL");
	ok(check(sl, P, "alice+x@example.com", "alice@example.com") == R(TEMPFAIL),
	   "failing table on the full key stops before the stripped key");
	sender_login_free(&sl);
	uv_run(&loop, UV_RUN_DEFAULT);
	sender_login_conf_free(&c);

	/* delimiters off / several */
	char err[256];
	struct sender_login_settings s = {.maps = "inline:{ a@x=a@x }", .delimiters = ""};
	c = sender_login_conf_new(&s, err, sizeof(err));
	sl = sender_login_new(c, &loop);
	ok(check(sl, P, "a+b@x", "a@x") == R(NOT_OWNED), "no recipient_delimiter: no stripping");
	sender_login_free(&sl);
	uv_run(&loop, UV_RUN_DEFAULT);
	sender_login_conf_free(&c);

	/* configuration errors */
	s = (struct sender_login_settings){.maps = "inline:{a=b}", .policy = "reject_everything"};
	ok(sender_login_conf_new(&s, err, sizeof(err)) == NULL && strstr(err, "reject_everything"),
	   "unknown policy refused");
	s = (struct sender_login_settings){.maps = "texthash:/no/such/file"};
	ok(sender_login_conf_new(&s, err, sizeof(err)) == NULL && strstr(err, "/no/such/file"),
	   "missing table file refused");
	enum sender_login_policy pp;
	ok(sender_login_policy_parse("reject_known_sender_login_mismatch", &pp) == 0
	   && pp == R(REJECT_KNOWN), "policy names are Postfix's");

	/* no maps: the restriction is ignored, like Postfix (with a warning) */
	s = (struct sender_login_settings){.maps = ""};
	c = sender_login_conf_new(&s, err, sizeof(err));
	sl = sender_login_new(c, &loop);
	ok(check(sl, P, "a@x", "b@y") == R(NOT_CHECKED), "no sender_login_maps: not checked");
	sender_login_free(&sl);
	uv_run(&loop, UV_RUN_DEFAULT);
	sender_login_conf_free(&c);
}

/* The reply as the client reads it, without CRLF; "" for none. */
static size_t reply_line(enum sender_login_result res, const char *addr, const char *login,
			 char *out, size_t outsz)
{
	struct smtp_reply r;
	if (!sender_login_reply(res, addr, login, &r)) {
		out[0] = '\0';
		return 0;
	}
	return (size_t)snprintf(out, outsz, "%d %s %s", r.code, r.enh, r.text);
}

static void test_replies(void)
{
	char out[600];
	reply_line(R(NOT_OWNED), "bob@example.com", "alice@example.com", out, sizeof(out));
	is_str(out, "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice@example.com",
	       "NOT_OWNED reply is Postfix's text");
	reply_line(R(NOT_LOGGED_IN), "bob@example.com", NULL, out, sizeof(out));
	is_str(out, "553 5.7.1 <bob@example.com>: Sender address rejected: not logged in",
	       "NOT_LOGGED_IN reply");
	reply_line(R(TEMPFAIL), "bob@example.com", "x", out, sizeof(out));
	is_str(out, "451 4.3.0 <bob@example.com>: Temporary lookup failure", "TEMPFAIL reply (reject_dict_retry)");
	ok(reply_line(R(OWNED), "a", "b", out, sizeof(out)) == 0, "OWNED: no reply");
	ok(reply_line(R(NOT_CHECKED), "a", "b", out, sizeof(out)) == 0, "NOT_CHECKED: no reply");
	reply_line(R(NOT_OWNED), "a\r\nb@x", "l\x01", out, sizeof(out));
	is_str(out, "553 5.7.1 <a??b@x>: Sender address rejected: not owned by user l?",
	       "control characters made printable");
	char big[1000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	ok(reply_line(R(NOT_OWNED), big, big, out, sizeof(out)) <= 510, "reply bounded to 510 octets");
}

int main(void)
{
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	uv_loop_init(&loop);
	test_texthash();
	test_texthash_errors();
	test_db();
	test_inline_static_fail();
	test_mysql_cf();
	test_cache();
	test_keys();
	test_policy();
	test_replies();
	ok(uv_loop_close(&loop) == 0, "no handle left open on the loop (docs/design.md §9.13)");
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		diag("could not remove %s", tmpdir);
	return done_testing();
}
