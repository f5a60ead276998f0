/* mysql: tables against a real private MariaDB (t/lib/mariadb.py start DIR,
 * then export the SUBMITD_TEST_MYSQL_* lines it prints). Skipped without it.
 * Defends docs/design.md invariants 1 (never block the loop), 4 (outage = 4xx,
 * reconnect by itself) and 9 (every request has a timeout), and that no key
 * can change the query. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mysql.h>

#include "lookup/table.h"
#include "policy/sender_login.h"
#include "tap.h"

static uv_loop_t loop;
static char tmpdir[] = "/tmp/submitd-test-mysql-XXXXXX";
static const char *sock, *port, *user, *password, *dbname, *dir, *py;
static MYSQL *admin;

#define QUERY "SELECT owner FROM sender_login_owners WHERE address='%s' ORDER BY owner"

static char sockhost[600];

static const char *write_cf(const char *name, const char *hosts, const char *query,
			    const char *extra)
{
	if (hosts == sock)
		hosts = sockhost;
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	fprintf(f, "# test\nhosts = %s\nuser = %s\npassword = %s\ndbname = %s\nquery = %s\n%s",
		hosts, user, password, dbname, query, extra ? extra : "");
	fclose(f);
	return path;
}

static struct table *open_cf(const char *path)
{
	char spec[600], err[512];
	snprintf(spec, sizeof(spec), "mysql:%s", path);
	struct table *t = table_open(spec, err, sizeof(err));
	if (t == NULL)
		diag("table_open: %s", err);
	return t;
}

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
	/* the answer may come in any loop phase: stop the loop so a poll phase
	 * does not then block until the next (idle) timer */
	uv_stop(&loop);
	snprintf(a->value, sizeof(a->value), "%s", value ? value : "");
}

static struct answer lookupn(struct table_inst *ti, const char *key, size_t n)
{
	struct answer a = {0};
	uv_update_time(&loop);
	table_lookupn(ti, key, n, answer_cb, &a);
	if (a.calls)
		ok(0, "completion inside table_lookup()");
	while (a.calls == 0)
		uv_run(&loop, UV_RUN_DEFAULT);
	return a;
}

static struct answer lookup(struct table_inst *ti, const char *key)
{
	return lookupn(ti, key, strlen(key));
}

static void admin_sql(const char *q)
{
	if (mysql_query(admin, q) != 0)
		diag("admin query failed: %s", mysql_error(admin));
	MYSQL_RES *r = mysql_store_result(admin);
	if (r)
		mysql_free_result(r);
}

/* The statements the submitd user sent since the last call. */
static int logged_queries(char *last, size_t lastsz)
{
	admin_sql("SET SESSION sql_log_off = 1");
	if (mysql_query(admin, "SELECT argument FROM mysql.general_log WHERE command_type='Query' "
			       "AND user_host LIKE 'submitd[%'") != 0) {
		diag("general_log: %s", mysql_error(admin));
		return -1;
	}
	MYSQL_RES *r = mysql_store_result(admin);
	int n = 0;
	MYSQL_ROW row;
	unsigned long *len;
	*last = 0;
	while ((row = mysql_fetch_row(r)) != NULL) {
		len = mysql_fetch_lengths(r);
		size_t c = len[0] < lastsz - 1 ? len[0] : lastsz - 1;
		memcpy(last, row[0], c);
		last[c] = 0;
		n++;
	}
	mysql_free_result(r);
	admin_sql("TRUNCATE TABLE mysql.general_log");
	return n;
}

static void test_lookups(struct table_inst *ti)
{
	struct answer a = lookup(ti, "alice@example.com");
	ok(a.status == TABLE_OK && strcmp(a.value, "alice@example.com") == 0, "own address");
	a = lookup(ti, "sales@example.com");
	ok(a.status == TABLE_OK && strcmp(a.value, "alice@example.com,bob@example.com") == 0,
	   "two rows joined with a comma (Postfix)");
	a = lookup(ti, "ALICE@Example.COM");
	ok(a.status == TABLE_OK && strcmp(a.value, "alice@example.com") == 0, "key lower-cased");
	a = lookup(ti, "@example.org");
	ok(a.status == TABLE_OK && strcmp(a.value, "john@example.org") == 0, "catch-all row");
	a = lookup(ti, "nobody@example.com");
	ok(a.status == TABLE_NOTFOUND, "no rows: not found");
}

static void test_hostile(struct table_inst *ti)
{
	char buf[20000];
	static char longkey[12000];
	memset(longkey, 'a', sizeof(longkey) - 3);
	strcpy(longkey + sizeof(longkey) - 3, "'\\");
	const char *keys[] = {
		"' OR '1'='1",
		"x'; DROP TABLE virtual_users; --",
		"\\' OR 1=1 -- ",
		"alice@example.com' -- ",
		"alice@example.com'#",
		"%",
		"%@example.com",
		"_lice@example.com",
		"a\\",
		"\xbf' OR 1=1 -- ",
		"\"quoted\"@example.com",
		"alice@example.com\r\nSELECT 1",
		longkey,
	};
	logged_queries(buf, sizeof(buf));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		struct answer a = lookup(ti, keys[i]);
		char lower[sizeof(longkey)], esc[2 * sizeof(longkey) + 1], want[sizeof(esc) + 200];
		size_t n = strlen(keys[i]);
		for (size_t j = 0; j <= n; j++)
			lower[j] = (char)((keys[i][j] >= 'A' && keys[i][j] <= 'Z') ? keys[i][j] + 32 : keys[i][j]);
		mysql_real_escape_string(admin, esc, lower, (unsigned long)n);
		snprintf(want, sizeof(want), "SELECT owner FROM sender_login_owners WHERE address='%s' ORDER BY owner", esc);
		int q = logged_queries(buf, sizeof(buf));
		/* the general log shows an invalid UTF-8 byte as the text \xBF */
		char *hx = strstr(buf, "\\xBF");
		if (hx) {
			*hx = (char)0xbf;
			memmove(hx + 1, hx + 4, strlen(hx + 4) + 1);
		}
		char name[40];
		snprintf(name, sizeof(name), "%.30s", keys[i]);
		for (char *c = name; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
		ok(a.status == TABLE_NOTFOUND, "hostile key \"%s\": not found", name);
		ok(q == 1 && strcmp(buf, want) == 0, "hostile key \"%s\": one statement, key only inside the literal", name);
		if (q != 1 || strcmp(buf, want) != 0)
			diag("statements %d, last: %.200s", q, buf);
	}
	struct answer a = lookupn(ti, "alice@example.com\0' OR 1=1", 27);
	ok(a.status == TABLE_NOTFOUND && logged_queries(buf, sizeof(buf)) == 0, "key with NUL: not found, no query");
	mysql_query(admin, "SELECT COUNT(*) FROM mailserver.virtual_users");
	MYSQL_RES *r = mysql_store_result(admin);
	MYSQL_ROW row = mysql_fetch_row(r);
	ok(row && strcmp(row[0], "3") == 0, "tables unchanged after hostile keys");
	mysql_free_result(r);
}

struct verdict {
	int calls;
	enum sender_login_result r;
};

static void verdict_cb(void *ctx, enum sender_login_result r, const char *owners)
{
	struct verdict *v = ctx;
	v->calls++;
	v->r = r;
	uv_stop(&loop);
}

static enum sender_login_result check(struct sender_login *sl, const char *sender, const char *login)
{
	struct verdict v = {0};
	uv_update_time(&loop);
	sender_login_check(sl, sender, login, verdict_cb, &v);
	while (v.calls == 0)
		uv_run(&loop, UV_RUN_DEFAULT);
	return v.r;
}

static void test_policy(const char *cf)
{
	char err[512], maps[600];
	snprintf(maps, sizeof(maps), "mysql:%s", cf);
	struct sender_login_settings s = {.maps = maps};
	struct sender_login_conf *c = sender_login_conf_new(&s, err, sizeof(err));
	if (!ok(c != NULL, "sender_login over mysql"))
		return diag("%s", err);
	struct sender_login *sl = sender_login_new(c, &loop);
	ok(check(sl, "alice@example.com", "alice@example.com") == SENDER_LOGIN_OWNED, "own address");
	ok(check(sl, "info@example.com", "alice@example.com") == SENDER_LOGIN_OWNED, "alias");
	ok(check(sl, "sales@example.com", "bob@example.com") == SENDER_LOGIN_OWNED, "alias, second owner");
	ok(check(sl, "sales@example.com", "john@example.org") == SENDER_LOGIN_NOT_OWNED, "alias, not owner");
	ok(check(sl, "whatever@example.org", "john@example.org") == SENDER_LOGIN_OWNED, "catch-all @domain");
	ok(check(sl, "whatever@example.org", "alice@example.com") == SENDER_LOGIN_NOT_OWNED, "catch-all, other login");
	ok(check(sl, "alice+news@example.com", "alice@example.com") == SENDER_LOGIN_OWNED, "+extension");
	ok(check(sl, "Alice@Example.COM", "ALICE@example.com") == SENDER_LOGIN_OWNED, "case");
	ok(check(sl, "bob@example.com", "bob@example.com") == SENDER_LOGIN_OWNED,
	   "a forward to the outside does not lock the mailbox out");
	ok(check(sl, "bob@example.com", "alice@example.com") == SENDER_LOGIN_NOT_OWNED, "someone else's");
	ok(check(sl, "x@unknown.example", "alice@example.com") == SENDER_LOGIN_NOT_OWNED, "unlisted");
	ok(check(sl, "", "alice@example.com") == SENDER_LOGIN_NOT_CHECKED, "null sender");
	sender_login_free(&sl);
	sender_login_conf_free(&c);
}

static void test_cache(const char *cf)
{
	char buf[4096];
	struct table *t = open_cf(cf);
	struct table_cache_opts o = {.positive_ttl_ms = 60000, .negative_ttl_ms = 60000};
	table_set_cache(t, &o);
	struct table_inst *ti = table_inst_new(t, &loop);
	logged_queries(buf, sizeof(buf));
	lookup(ti, "alice@example.com");
	struct answer a = lookup(ti, "alice@example.com");
	lookup(ti, "nobody@example.com");
	struct answer b = lookup(ti, "nobody@example.com");
	struct table_stats st;
	table_inst_stats(ti, &st);
	ok(a.status == TABLE_OK && b.status == TABLE_NOTFOUND, "cached answers are right");
	ok(st.backend == 2 && st.cache_hits == 2, "cache hits avoid queries (table counter)");
	is_int(logged_queries(buf, sizeof(buf)), 2, "cache hits avoid queries (server's general log)");
	table_inst_close(&ti);
	table_free(&t);
}

static int ticks;
static void tick_cb(uv_timer_t *t)
{
	ticks++;
}

static void test_slow(void)
{
	const char *cf = write_cf("slow.cf", sock, "SELECT IF(SLEEP(2) = 0, '%s', NULL)",
				  "query_timeout = 500ms\n");
	struct table *t = open_cf(cf);
	struct table_inst *ti = table_inst_new(t, &loop);
	uv_timer_t tick;
	uv_timer_init(&loop, &tick);
	uv_timer_start(&tick, tick_cb, 10, 10);
	ticks = 0;
	uint64_t t0 = uv_hrtime();
	struct answer a = lookup(ti, "alice@example.com");
	double ms = (double)(uv_hrtime() - t0) / 1e6;
	uv_timer_stop(&tick);
	uv_close((uv_handle_t *)&tick, NULL);
	ok(a.status == TABLE_TEMPFAIL, "query slower than query_timeout: TEMPFAIL (invariant 9)");
	ok(ms >= 450 && ms < 1500, "answered at the timeout (%.0f ms)", ms);
	ok(ticks >= 30, "a 10 ms timer kept ticking during the query: the loop never blocked (%d ticks)", ticks);
	struct table_stats st;
	table_inst_stats(ti, &st);
	a = lookup(ti, "next");
	ok(a.status == TABLE_TEMPFAIL, "the next slow query times out too (on a new connection)");
	table_inst_close(&ti);
	table_free(&t);
}

static int run_py(const char *what)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "python3 %s %s %s >/dev/null", py, what, dir);
	return system(cmd);
}

static void test_outage(const char *cf)
{
	struct table *t = open_cf(cf);
	struct table_inst *ti = table_inst_new(t, &loop);
	struct answer a = lookup(ti, "alice@example.com");
	if (!ok(a.status == TABLE_OK, "before the outage"))
		diag("status %d value %s", a.status, a.value);
	if (run_py("stop") != 0) {
		ok(0, "could not stop MariaDB");
		goto out;
	}
	uint64_t t0 = uv_hrtime();
	a = lookup(ti, "alice@example.com");
	double ms = (double)(uv_hrtime() - t0) / 1e6;
	ok(a.status == TABLE_TEMPFAIL, "MariaDB stopped: TEMPFAIL (invariant 4)");
	ok(ms < 1000, "promptly (%.0f ms)", ms);
	t0 = uv_hrtime();
	a = lookup(ti, "bob@example.com");
	ms = (double)(uv_hrtime() - t0) / 1e6;
	ok(a.status == TABLE_TEMPFAIL && ms < 100, "within retry_interval: TEMPFAIL at once (%.0f ms)", ms);
	if (run_py("start") != 0) {
		ok(0, "could not start MariaDB");
		goto out;
	}
	usleep(1100 * 1000); /* retry_interval = 1s */
	struct table_stats before, after;
	table_inst_stats(ti, &before);
	a = lookup(ti, "alice@example.com");
	table_inst_stats(ti, &after);
	ok(a.status == TABLE_OK, "MariaDB back: works again with the same table instance");
	ok(after.connects == before.connects + 1, "by reconnecting on its own");
out:
	table_inst_close(&ti);
	table_free(&t);
}

static void test_hosts(void)
{
	char hosts[600];
	snprintf(hosts, sizeof(hosts), "inet:127.0.0.1:%s", port);
	struct table *t = open_cf(write_cf("tcp.cf", hosts, QUERY, NULL));
	struct table_inst *ti = table_inst_new(t, &loop);
	struct answer a = lookup(ti, "alice@example.com");
	ok(a.status == TABLE_OK, "TCP host");
	table_inst_close(&ti);
	table_free(&t);

	snprintf(hosts, sizeof(hosts), "unix:%s/nonexistent.sock, 127.0.0.1:%s", tmpdir, port);
	t = open_cf(write_cf("failover.cf", hosts, QUERY, NULL));
	ti = table_inst_new(t, &loop);
	a = lookup(ti, "alice@example.com");
	ok(a.status == TABLE_OK, "failover: dead UNIX socket first, then TCP");
	table_inst_close(&ti);
	table_free(&t);

	/* %u / %d / domain rules: no query at all */
	t = open_cf(write_cf("user.cf", sock, "SELECT '%u' FROM DUAL WHERE '%d' <> ''", "domain = example.com\n"));
	ti = table_inst_new(t, &loop);
	a = lookup(ti, "alice@example.com");
	ok(a.status == TABLE_OK && strcmp(a.value, "alice") == 0, "%%u and %%d expand");
	a = lookup(ti, "@example.com");
	ok(a.status == TABLE_NOTFOUND, "domain restriction: no @domain lookups");
	a = lookup(ti, "alice@example.org");
	ok(a.status == TABLE_NOTFOUND, "domain restriction: unlisted domain");
	struct table_stats st;
	table_inst_stats(ti, &st);
	is_int((long long)st.backend, 1, "only the allowed key was queried");
	table_inst_close(&ti);
	table_free(&t);

	t = open_cf(write_cf("fmt.cf", sock, "SELECT email FROM virtual_users WHERE email LIKE '%%@%d' ORDER BY email",
			     "result_format = <%s>\nexpansion_limit = 1\n"));
	ti = table_inst_new(t, &loop);
	a = lookup(ti, "x@example.org");
	ok(a.status == TABLE_OK && strcmp(a.value, "<john@example.org>") == 0, "result_format and %%%%");
	a = lookup(ti, "x@example.com");
	ok(a.status == TABLE_TEMPFAIL, "over expansion_limit: TEMPFAIL");
	table_inst_close(&ti);
	table_free(&t);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	sock = getenv("SUBMITD_TEST_MYSQL_SOCKET");
	if (sock == NULL || *sock == 0) {
		return skip_all("no MariaDB: SUBMITD_TEST_MYSQL_SOCKET not set (t/run starts one; "
				"by hand: t/lib/neighbours.py start DIR and export its output)");
	}
	port = getenv("SUBMITD_TEST_MYSQL_PORT");
	user = getenv("SUBMITD_TEST_MYSQL_USER");
	password = getenv("SUBMITD_TEST_MYSQL_PASSWORD");
	dbname = getenv("SUBMITD_TEST_MYSQL_DB");
	dir = getenv("SUBMITD_TEST_MYSQL_DIR");
	py = getenv("SUBMITD_TEST_MARIADB_PY");
	if (!user)
		user = "submitd";
	if (!password)
		password = "submitd-test-pw";
	if (!dbname)
		dbname = "mailserver";
	snprintf(sockhost, sizeof(sockhost), "unix:%s", sock);
	admin = mysql_init(NULL);
	mysql_options(admin, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	if (!mysql_real_connect(admin, "localhost", "root", NULL, NULL, 0, sock, 0))
		return skip_all("cannot connect as root to %s: %s", sock, mysql_error(admin));
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	admin_sql("SET GLOBAL general_log = 1");
	admin_sql("SET GLOBAL log_output = 'TABLE'");
	uv_loop_init(&loop);

	static char cf[600];
	snprintf(cf, sizeof(cf), "%s", write_cf("main.cf", sock, QUERY, "retry_interval = 1s\nquery_timeout = 2s\n"));
	struct table *t = open_cf(cf);
	if (!ok(t != NULL, "open %s", cf))
		return done_testing();
	struct table_inst *ti = table_inst_new(t, &loop);
	test_lookups(ti);
	test_hostile(ti);
	table_inst_close(&ti);
	table_free(&t);
	test_policy(cf);
	test_cache(cf);
	test_hosts();
	test_slow();
	if (dir && py) {
		mysql_close(admin);
		admin = NULL;
		test_outage(cf);
	} else {
		skip("MariaDB outage", "SUBMITD_TEST_MYSQL_DIR/SUBMITD_TEST_MARIADB_PY not set");
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	ok(uv_loop_close(&loop) == 0, "no handle left open (docs/design.md §9.13)");
	if (admin)
		mysql_close(admin);
	mysql_library_end();
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		diag("could not remove %s", tmpdir);
	return done_testing();
}
