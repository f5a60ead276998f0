/* lookup/table_mysql: "mysql:/path.cf" tables — Postfix mysql_table(5) files
 * used unchanged, queried through MariaDB Connector/C's non-blocking API
 * driven by uv_poll (docs/design.md invariant 1: connect, query and result fetch
 * never block the loop).
 *
 * .cf keys (Postfix names and defaults):
 *   hosts          list of unix:/path, inet:host:port, host[:port]
 *                  (default "localhost"). Tried as Postfix does: UNIX
 *                  sockets first, then TCP hosts, each group in random
 *                  order; a host that failed is skipped for retry_interval
 *                  (default 60s), like Postfix; but while every host is
 *                  skipped, one probe connection is tried, 0.5 s apart
 *                  growing to 2 s (at most retry_interval apart), so an
 *                  outage ends within seconds of the database's return. As in
 *                  libmysqlclient, the host name "localhost" means the
 *                  default UNIX socket; write 127.0.0.1 for TCP. Host names
 *                  are resolved with uv_getaddrinfo (thread pool), never by
 *                  Connector/C on the loop.
 *   user, password, dbname (required), charset (utf8mb4)
 *   query          with %s %u %d %S %U %D %1-%9 %% (db_common_expand rules:
 *                  a key lacking the needed part is "not found" without a
 *                  query). Legacy select_field/table/where_field/
 *                  additional_conditions build the query when query is unset.
 *   result_format  (%s), domain (list of domain names; tables are not
 *                  supported), expansion_limit (0), require_result_set (yes),
 *   option_file, option_group: read by Connector/C at connect time — only
 *                  when set in the .cf (Postfix ≥3.2 reads the [client]
 *                  group of the default my.cnf by default; we don't, so a
 *                  stray my.cnf cannot change where submitd connects).
 *   tls_cert_file, tls_key_file, tls_CAfile, tls_CApath, tls_ciphers,
 *                  tls_verify_cert (no): mapped to mysql_ssl_set() and
 *                  MYSQL_OPT_SSL_VERIFY_SERVER_CERT; any of them enables TLS.
 *   idle_interval  (60s) close a connection idle this long.
 * submitd additions (Postfix ignores unknown keys, so the file still works
 * with Postfix):
 *   query_timeout  (5s) per statement, incl. fetching the result; then the
 *                  lookup is TEMPFAIL and the connection is dropped.
 *   connect_timeout (5s) per host attempt.
 *   max_connections (2) per worker.
 * Durations take s, m, h, d, w or ms suffixes (seconds without one).
 *
 * Key material is escaped with mysql_real_escape_string() on the live
 * connection (its charset, and NO_BACKSLASH_ESCAPES, are honoured); the
 * query template must supply the quotes ('%s'), as in Postfix.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <mysql.h>
#include <errmsg.h>

#include "core/buf.h"
#include "core/log.h"
#include "lookup/table.h"
#include "lookup/table_impl.h"

enum tm_host_kind { TM_HOST_UNIX, TM_HOST_INET };

struct tm_host {
	enum tm_host_kind kind;
	char *name;      /* socket path or host name */
	unsigned port;   /* inet; 0 = Connector/C default */
	bool numeric;    /* name is a literal address: no resolution needed */
};

/* Whether a host is down, shared by every worker's instance of the table (the
 * only mutable part of a parsed table): the outage is logged once when the
 * first instance sees it and once when the last one sees the host again. */
struct tm_health {
	atomic_uint ndown;          /* instances that consider the host down */
	atomic_ullong since_ms;     /* when the first of them saw it fail */
	atomic_ulong refused;       /* lookups answered TEMPFAIL meanwhile */
};

struct table_mysql {
	char *origin;
	struct tm_host *hosts;
	size_t nhosts;
	struct tm_health *health;   /* per host */
	char *user, *password, *dbname, *charset;
	char *query, *result_format;
	char **domains;
	size_t ndomains;
	unsigned expansion_limit;
	char *option_file, *option_group;
	char *tls_cert_file, *tls_key_file, *tls_CAfile, *tls_CApath, *tls_ciphers;
	bool tls, tls_verify_cert, require_result_set;
	uint64_t idle_interval_ms, retry_interval_ms, query_timeout_ms, connect_timeout_ms;
	unsigned max_connections;
};

enum tm_link_state {
	TM_RESOLVING,
	TM_CONNECTING,
	TM_IDLE,
	TM_QUERY,
	TM_STORE,
	TM_NEXT,
	TM_NEXT_STORE,
	TM_DEAD,
};

struct tm_poll {
	uv_poll_t h;
	struct table_inst *ti;
	struct tm_link *link;
};

struct tm_resolve {
	uv_getaddrinfo_t req;
	struct tm_link *link; /* NULL once the link gave up on it */
};

/* One connection (one MYSQL handle, one socket). */
struct tm_link {
	struct table_mysql_inst *mi;
	struct table_inst *ti;
	MYSQL db;
	bool db_inited;
	struct tm_poll *poll;
	int fd;
	uv_timer_t wait_timer; /* MYSQL_WAIT_TIMEOUT from Connector/C */
	uv_timer_t deadline;   /* connect/query timeout; idle_interval when idle */
	unsigned open_timers;
	enum tm_link_state state;
	struct table_req *req;
	struct tm_resolve *resolve;
	size_t order[16], norder, order_pos; /* host indexes still to try */
	char addr[INET6_ADDRSTRLEN];
	bool used;             /* has served a query (a stale-connection error may be retried) */
	bool probe;            /* tries hosts in their retry interval too */
	/* result being collected */
	struct buf result;
	unsigned nvalues;
	enum table_status answer;
	struct tm_link *prev, *next;
};

struct table_mysql_inst {
	const struct table_mysql *m;
	struct table_inst *ti;
	struct tm_link *links;
	unsigned nlinks, nconnecting;
	struct table_req *qhead, *qtail;
	unsigned nqueued;
	uv_timer_t queue_timer;
	uint64_t *dead_until; /* per host */
	bool closing;
	unsigned open_timers;
	/* While every host is in its retry interval, one probe connection at
	   a time, from TM_PROBE_MIN_MS growing to TM_PROBE_MAX_MS (never more
	   than retry_interval), so a recovery is noticed within seconds. */
	bool *down;           /* per host: this instance counts it in ndown */
	uv_timer_t probe_timer;
	uint64_t probe_ms;
	bool probing;
	unsigned long probes_failed;
};

#define TM_PROBE_MIN_MS 500
#define TM_PROBE_MAX_MS 2000

static void tm_link_run(struct tm_link *l, int mstatus, bool start);
static void tm_dispatch(struct table_mysql_inst *mi);
static void tm_link_drop(struct tm_link *l, bool healthy);
static bool tm_link_try_next_host(struct tm_link *l);
static void tm_count_refused(struct table_mysql_inst *mi);

/* ------------------------------------------------------------------ */
/* helpers */

static void tm_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void tm_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool tm_isspace(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Parses a Postfix time value: digits with an optional unit (s default). */
static bool tm_parse_duration(const char *s, uint64_t *ms_r)
{
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || v > 1000000000ULL)
		return false;
	uint64_t mul;
	if (*end == 0 || strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "m") == 0)
		mul = 60000;
	else if (strcmp(end, "h") == 0)
		mul = 3600000;
	else if (strcmp(end, "d") == 0)
		mul = 86400000;
	else if (strcmp(end, "w") == 0)
		mul = 604800000;
	else
		return false;
	*ms_r = v * mul;
	return true;
}

static bool tm_parse_bool(const char *s, bool *r)
{
	if (strcasecmp(s, "yes") == 0 || strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0)
		*r = true;
	else if (strcasecmp(s, "no") == 0 || strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0)
		*r = false;
	else
		return false;
	return true;
}

/* ------------------------------------------------------------------ */
/* expansion (Postfix db_common_expand semantics) */

/* Checks a template; returns an error string or NULL. */
static const char *tm_check_template(const char *fmt)
{
	for (const char *p = fmt; *p; p++) {
		if (*p != '%')
			continue;
		p++;
		if (*p == 0)
			return "template ends in '%'";
		if (strchr("%sudSUD123456789", *p) == NULL)
			return "invalid %-sequence in template (use %%, %s, %u, %d, %S, %U, %D, %1-%9)";
	}
	return NULL;
}

/* The part of s selected by one of u/d/1-9; returns false if it is missing
 * (the expansion is then suppressed). */
static bool tm_part(const char *s, char what, const char **p_r, size_t *n_r)
{
	const char *at = strrchr(s, '@');
	if (what == 's') {
		*p_r = s;
		*n_r = strlen(s);
		return true;
	}
	if (what == 'u') {
		if (at == NULL) {
			*p_r = s;
			*n_r = strlen(s);
			return true;
		}
		if (at == s)
			return false;
		*p_r = s;
		*n_r = (size_t)(at - s);
		return true;
	}
	if (at == NULL || at[1] == 0)
		return false;
	const char *dom = at + 1;
	if (what == 'd') {
		*p_r = dom;
		*n_r = strlen(dom);
		return true;
	}
	/* %1..%9: labels counted from the right */
	int want = what - '0';
	const char *end = dom + strlen(dom);
	for (int i = 1;; i++) {
		const char *dot = end;
		while (dot > dom && dot[-1] != '.')
			dot--;
		if (i == want) {
			if (dot == end)
				return false; /* empty label */
			*p_r = dot;
			*n_r = (size_t)(end - dot);
			return true;
		}
		if (dot == dom)
			return false; /* not enough labels */
		end = dot - 1;
	}
}

/* Expands fmt into out (if out is not NULL). value supplies %s %u %d; key
 * supplies %S %U %D and %1-%9 (value when key is NULL). With db, every
 * substituted piece is escaped for a '...' SQL literal. Returns false when a
 * needed part is missing. */
static bool tm_expand(struct buf *out, const char *fmt, const char *value, const char *key,
		      MYSQL *db)
{
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			if (out)
				buf_append(out, p, 1);
			continue;
		}
		char c = *++p;
		if (c == '%') {
			if (out)
				buf_append(out, "%", 1);
			continue;
		}
		const char *src = value;
		if (c == 'S' || c == 'U' || c == 'D' || (c >= '1' && c <= '9')) {
			if (key)
				src = key;
			if (c >= 'A' && c <= 'Z')
				c = (char)(c - 'A' + 'a');
		}
		const char *part;
		size_t n;
		if (!tm_part(src, c, &part, &n))
			return false;
		if (out == NULL)
			continue;
		if (db) {
			uint8_t *w = buf_reserve(out, 2 * n + 1);
			unsigned long e = mysql_real_escape_string(db, (char *)w, part, (unsigned long)n);
			buf_commit(out, e);
		} else {
			buf_append(out, part, n);
		}
	}
	return true;
}

/* Postfix db_common_check_domain: with "domain" set, only full addresses
 * with a localpart in a listed domain are looked up. */
static bool tm_domain_ok(const struct table_mysql *m, const char *key)
{
	if (m->ndomains == 0)
		return true;
	const char *at = strrchr(key, '@');
	if (at == NULL || at == key)
		return false;
	for (size_t i = 0; i < m->ndomains; i++)
		if (strcmp(at + 1, m->domains[i]) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* .cf parsing */

struct tm_kv {
	char *key, *value;
	unsigned line;
};

static const char *const tm_known_keys[] = {
	"hosts", "user", "password", "dbname", "charset", "query", "result_format",
	"domain", "expansion_limit", "option_file", "option_group", "tls_cert_file",
	"tls_key_file", "tls_CAfile", "tls_CApath", "tls_ciphers", "tls_verify_cert",
	"require_result_set", "idle_interval", "retry_interval", "select_field", "table",
	"where_field", "additional_conditions", "query_timeout", "connect_timeout",
	"max_connections", NULL,
};

static void tm_free_hosts(struct table_mysql *m)
{
	for (size_t i = 0; i < m->nhosts; i++)
		free(m->hosts[i].name);
	free(m->hosts);
	m->hosts = NULL;
	m->nhosts = 0;
}

static bool tm_parse_hosts(struct table_mysql *m, const char *list, const char *origin,
			   unsigned line, char *err, size_t errlen)
{
	char *copy = xstrdup(list), *save = NULL;
	tm_free_hosts(m);
	for (char *tok = strtok_r(copy, ", \t\r\n", &save); tok; tok = strtok_r(NULL, ", \t\r\n", &save)) {
		struct tm_host h = {0};
		if (strncmp(tok, "unix:", 5) == 0 || tok[0] == '/') {
			/* a bare absolute path is taken as a socket too */
			const char *path = tok[0] == '/' ? tok : tok + 5;
			h.kind = TM_HOST_UNIX;
			if (path[0] != '/')
				goto bad;
			h.name = xstrdup(path);
		} else {
			char *hp = tok;
			h.kind = TM_HOST_INET;
			if (strncmp(hp, "inet:", 5) == 0)
				hp += 5;
			char *port = NULL;
			if (*hp == '[') {
				char *rb = strchr(hp, ']');
				if (rb == NULL)
					goto bad;
				*rb = 0;
				if (rb[1] == ':')
					port = rb + 2;
				else if (rb[1] != 0)
					goto bad;
				hp++;
			} else {
				char *colon = strchr(hp, ':');
				if (colon && strchr(colon + 1, ':') == NULL) {
					*colon = 0;
					port = colon + 1;
				}
			}
			if (*hp == 0)
				goto bad;
			if (port) {
				char *end;
				unsigned long pv = strtoul(port, &end, 10);
				if (*port == 0 || *end || pv == 0 || pv > 65535)
					goto bad;
				h.port = (unsigned)pv;
			}
			unsigned char tmp[16];
			h.numeric = inet_pton(AF_INET, hp, tmp) == 1 || inet_pton(AF_INET6, hp, tmp) == 1
				    || strcmp(hp, "localhost") == 0;
			h.name = xstrdup(hp);
		}
		if (m->nhosts == 16) {
			free(h.name);
			tm_seterr(err, errlen, "%s:%u: hosts: at most 16 hosts", origin, line);
			free(copy);
			return false;
		}
		m->hosts = xrealloc(m->hosts, (m->nhosts + 1) * sizeof(*m->hosts));
		m->hosts[m->nhosts++] = h;
		continue;
bad:
		tm_seterr(err, errlen, "%s:%u: hosts: bad host \"%s\" (want unix:/path, inet:host:port "
			  "or host[:port])", origin, line, tok);
		free(copy);
		return false;
	}
	free(copy);
	if (m->nhosts == 0) {
		tm_seterr(err, errlen, "%s:%u: hosts: empty list", origin, line);
		return false;
	}
	return true;
}

void table_mysql_free(struct table_mysql **mp)
{
	struct table_mysql *m = *mp;
	if (m == NULL)
		return;
	tm_free_hosts(m);
	free(m->health);
	free(m->origin);
	free(m->user);
	xfree_secret(&m->password);
	free(m->dbname);
	free(m->charset);
	free(m->query);
	free(m->result_format);
	for (size_t i = 0; i < m->ndomains; i++)
		free(m->domains[i]);
	free(m->domains);
	free(m->option_file);
	free(m->option_group);
	free(m->tls_cert_file);
	free(m->tls_key_file);
	free(m->tls_CAfile);
	free(m->tls_CApath);
	free(m->tls_ciphers);
	free(m);
	*mp = NULL;
}

/* Reads "name = value" lines (Postfix cfg_parser: '#' comments, leading
 * whitespace continues the previous line, the last setting wins). */
static bool tm_read_kv(const char *text, size_t len, const char *origin, struct tm_kv **kv_r,
		       size_t *nkv_r, char *err, size_t errlen)
{
	struct tm_kv *kv = NULL;
	size_t nkv = 0;
	unsigned lineno = 0;
	size_t pos = 0;
	if (memchr(text, 0, len)) {
		tm_seterr(err, errlen, "%s: NUL byte in file", origin);
		return false;
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		const char *line = text + pos;
		size_t llen = end - pos;
		pos = nl ? end + 1 : len;
		lineno++;
		size_t i = 0;
		while (i < llen && tm_isspace((unsigned char)line[i]))
			i++;
		if (i == llen || line[i] == '#')
			continue;
		if (i > 0) {
			if (nkv == 0) {
				tm_seterr(err, errlen, "%s:%u: continuation line without a preceding "
					  "\"name = value\" line", origin, lineno);
				goto fail;
			}
			struct buf b = BUF_INIT;
			buf_append_str(&b, kv[nkv - 1].value);
			buf_append(&b, " ", 1);
			buf_append(&b, line + i, llen - i);
			buf_append(&b, "", 1);
			free(kv[nkv - 1].value);
			kv[nkv - 1].value = xstrdup((char *)buf_data(&b));
			buf_wipe(&b);
			continue;
		}
		const char *eq = memchr(line, '=', llen);
		if (eq == NULL) {
			tm_seterr(err, errlen, "%s:%u: expected \"name = value\"", origin, lineno);
			goto fail;
		}
		size_t nlen = (size_t)(eq - line);
		while (nlen > 0 && tm_isspace((unsigned char)line[nlen - 1]))
			nlen--;
		if (nlen == 0) {
			tm_seterr(err, errlen, "%s:%u: missing name before '='", origin, lineno);
			goto fail;
		}
		kv = xrealloc(kv, (nkv + 1) * sizeof(*kv));
		kv[nkv].key = xstrndup(line, nlen);
		kv[nkv].value = xstrndup(eq + 1, llen - (size_t)(eq - line) - 1);
		kv[nkv].line = lineno;
		nkv++;
	}
	/* trim values */
	for (size_t k = 0; k < nkv; k++) {
		char *v = kv[k].value, *s = v;
		while (tm_isspace((unsigned char)*s))
			s++;
		size_t n = strlen(s);
		while (n > 0 && tm_isspace((unsigned char)s[n - 1]))
			n--;
		memmove(v, s, n);
		v[n] = 0;
	}
	*kv_r = kv;
	*nkv_r = nkv;
	return true;
fail:
	for (size_t k = 0; k < nkv; k++) {
		free(kv[k].key);
		xfree_secret(&kv[k].value);
	}
	free(kv);
	return false;
}

static const struct tm_kv *tm_kv_get(const struct tm_kv *kv, size_t nkv, const char *name)
{
	for (size_t k = nkv; k-- > 0;)
		if (strcmp(kv[k].key, name) == 0)
			return &kv[k];
	return NULL;
}

struct table_mysql *table_mysql_parse(const char *text, size_t len, const char *origin,
				      char *err, size_t errlen)
{
	struct tm_kv *kv = NULL;
	size_t nkv = 0;
	if (!tm_read_kv(text, len, origin, &kv, &nkv, err, errlen))
		return NULL;

	struct table_mysql *m = xcalloc(1, sizeof(*m));
	m->origin = xstrdup(origin);
	m->require_result_set = true;
	m->idle_interval_ms = 60000;
	m->retry_interval_ms = 60000;
	m->query_timeout_ms = 5000;
	m->connect_timeout_ms = 5000;
	m->max_connections = 2;
	bool ok = false;
	const struct tm_kv *e;

	for (size_t k = 0; k < nkv; k++) {
		bool known = false;
		for (size_t j = 0; tm_known_keys[j]; j++)
			known = known || strcmp(kv[k].key, tm_known_keys[j]) == 0;
		if (!known) {
			char safe[80];
			log_warn("%s:%u: unknown parameter \"%s\" ignored", origin, kv[k].line,
				 log_sanitize(safe, sizeof(safe), kv[k].key, strlen(kv[k].key)));
		}
	}

#define STR_KEY(name, field, dflt) do { \
		e = tm_kv_get(kv, nkv, name); \
		m->field = xstrdup(e ? e->value : (dflt)); \
	} while (0)
#define OPT_KEY(name, field) do { \
		e = tm_kv_get(kv, nkv, name); \
		if (e && *e->value) m->field = xstrdup(e->value); \
	} while (0)

	e = tm_kv_get(kv, nkv, "hosts");
	if (!tm_parse_hosts(m, e ? e->value : "localhost", origin, e ? e->line : 0, err, errlen))
		goto out;
	STR_KEY("user", user, "");
	STR_KEY("password", password, "");
	STR_KEY("dbname", dbname, "");
	if (*m->dbname == 0) {
		tm_seterr(err, errlen, "%s: missing \"dbname = ...\"", origin);
		goto out;
	}
	STR_KEY("charset", charset, "utf8mb4");
	STR_KEY("result_format", result_format, "%s");
	OPT_KEY("option_file", option_file);
	OPT_KEY("option_group", option_group);
	OPT_KEY("tls_cert_file", tls_cert_file);
	OPT_KEY("tls_key_file", tls_key_file);
	OPT_KEY("tls_CAfile", tls_CAfile);
	OPT_KEY("tls_CApath", tls_CApath);
	OPT_KEY("tls_ciphers", tls_ciphers);
	m->tls = m->tls_cert_file || m->tls_key_file || m->tls_CAfile || m->tls_CApath
		 || m->tls_ciphers;

	e = tm_kv_get(kv, nkv, "query");
	if (e) {
		m->query = xstrdup(e->value);
	} else {
		const struct tm_kv *sf = tm_kv_get(kv, nkv, "select_field");
		const struct tm_kv *tb = tm_kv_get(kv, nkv, "table");
		const struct tm_kv *wf = tm_kv_get(kv, nkv, "where_field");
		const struct tm_kv *ac = tm_kv_get(kv, nkv, "additional_conditions");
		if (!sf || !tb || !wf) {
			tm_seterr(err, errlen, "%s: missing \"query = ...\"", origin);
			goto out;
		}
		struct buf q = BUF_INIT;
		buf_printf(&q, "SELECT %s FROM %s WHERE %s='%%s' %s", sf->value, tb->value,
			   wf->value, ac ? ac->value : "");
		buf_append(&q, "", 1);
		m->query = xstrdup((char *)buf_data(&q));
		buf_free(&q);
		e = sf;
	}
	const char *why = tm_check_template(m->query);
	if (why == NULL && *m->query == 0)
		why = "empty query";
	if (why) {
		tm_seterr(err, errlen, "%s:%u: query: %s", origin, e->line, why);
		goto out;
	}
	if ((why = tm_check_template(m->result_format)) != NULL) {
		e = tm_kv_get(kv, nkv, "result_format");
		tm_seterr(err, errlen, "%s:%u: result_format: %s", origin, e ? e->line : 0, why);
		goto out;
	}
	e = tm_kv_get(kv, nkv, "domain");
	if (e && *e->value) {
		char *copy = xstrdup(e->value), *save = NULL;
		for (char *tok = strtok_r(copy, ", \t\r\n", &save); tok;
		     tok = strtok_r(NULL, ", \t\r\n", &save)) {
			if (strchr(tok, ':') || strchr(tok, '/')) {
				tm_seterr(err, errlen, "%s:%u: domain: \"%s\": lookup tables are not "
					  "supported here; list the domain names", origin, e->line, tok);
				free(copy);
				goto out;
			}
			for (char *c = tok; *c; c++)
				if (*c >= 'A' && *c <= 'Z')
					*c = (char)(*c - 'A' + 'a');
			m->domains = xrealloc(m->domains, (m->ndomains + 1) * sizeof(char *));
			m->domains[m->ndomains++] = xstrdup(tok);
		}
		free(copy);
	}

	struct {
		const char *name;
		uint64_t *field;
	} durs[] = {
		{"idle_interval", &m->idle_interval_ms},
		{"retry_interval", &m->retry_interval_ms},
		{"query_timeout", &m->query_timeout_ms},
		{"connect_timeout", &m->connect_timeout_ms},
	};
	for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
		e = tm_kv_get(kv, nkv, durs[i].name);
		if (e && !tm_parse_duration(e->value, durs[i].field)) {
			tm_seterr(err, errlen, "%s:%u: %s: bad time value \"%s\"", origin, e->line,
				  durs[i].name, e->value);
			goto out;
		}
	}
	if (m->query_timeout_ms == 0 || m->connect_timeout_ms == 0) {
		tm_seterr(err, errlen, "%s: query_timeout and connect_timeout must be > 0", origin);
		goto out;
	}
	struct {
		const char *name;
		unsigned *field;
		unsigned min, max;
	} nums[] = {
		{"expansion_limit", &m->expansion_limit, 0, 1000000},
		{"max_connections", &m->max_connections, 1, 64},
	};
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		e = tm_kv_get(kv, nkv, nums[i].name);
		if (!e)
			continue;
		char *end;
		errno = 0;
		unsigned long v = strtoul(e->value, &end, 10);
		if (*e->value < '0' || *e->value > '9' || *end || errno || v < nums[i].min
		    || v > nums[i].max) {
			tm_seterr(err, errlen, "%s:%u: %s: bad number \"%s\" (%u..%u)", origin,
				  e->line, nums[i].name, e->value, nums[i].min, nums[i].max);
			goto out;
		}
		*nums[i].field = (unsigned)v;
	}
	struct {
		const char *name;
		bool *field;
	} bools[] = {
		{"tls_verify_cert", &m->tls_verify_cert},
		{"require_result_set", &m->require_result_set},
	};
	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		e = tm_kv_get(kv, nkv, bools[i].name);
		if (e && !tm_parse_bool(e->value, bools[i].field)) {
			tm_seterr(err, errlen, "%s:%u: %s: expected yes or no, not \"%s\"", origin,
				  e->line, bools[i].name, e->value);
			goto out;
		}
	}
	if (m->tls_verify_cert)
		m->tls = true;
	m->health = xcalloc(m->nhosts, sizeof(*m->health));
	ok = true;
#undef STR_KEY
#undef OPT_KEY
out:
	for (size_t k = 0; k < nkv; k++) {
		free(kv[k].key);
		xfree_secret(&kv[k].value);
	}
	free(kv);
	if (!ok)
		table_mysql_free(&m);
	return m;
}

/* ------------------------------------------------------------------ */
/* per-worker runtime */

static uint64_t tm_now(struct table_mysql_inst *mi)
{
	return uv_now(table_inst_loop(mi->ti));
}

static void tm_queue_push(struct table_mysql_inst *mi, struct table_req *req, bool front)
{
	req->where = TABLE_REQ_QUEUED;
	req->prev = req->next = NULL;
	if (front) {
		req->next = mi->qhead;
		if (mi->qhead)
			mi->qhead->prev = req;
		else
			mi->qtail = req;
		mi->qhead = req;
	} else {
		req->prev = mi->qtail;
		if (mi->qtail)
			mi->qtail->next = req;
		else
			mi->qhead = req;
		mi->qtail = req;
	}
	mi->nqueued++;
}

static void tm_queue_unlink(struct table_mysql_inst *mi, struct table_req *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		mi->qhead = req->next;
	if (req->next)
		req->next->prev = req->prev;
	else
		mi->qtail = req->prev;
	req->prev = req->next = NULL;
	mi->nqueued--;
}

static void tm_queue_timer_cb(uv_timer_t *t)
{
	struct table_mysql_inst *mi = t->data;
	uint64_t now = tm_now(mi);
	while (mi->qhead && mi->qhead->deadline <= now) {
		struct table_req *req = mi->qhead;
		tm_queue_unlink(mi, req);
		log_warn("%s: no database connection within %llu ms", mi->m->origin,
			 (unsigned long long)mi->m->query_timeout_ms);
		tm_count_refused(mi);
		table_req_finish(req, TABLE_TEMPFAIL, NULL);
	}
	tm_dispatch(mi);
}

/* Dispatches from the next loop turn, never inside the caller's call. */
static void tm_dispatch_soon(struct table_mysql_inst *mi)
{
	uv_timer_start(&mi->queue_timer, tm_queue_timer_cb, 0, 0);
}

static void tm_queue_timer_closed(uv_handle_t *h)
{
	struct table_mysql_inst *mi = h->data;
	struct table_inst *ti = mi->ti;
	if (--mi->open_timers == 0) {
		free(mi->dead_until);
		free(mi->down);
		free(mi);
	}
	table_inst_handle_closed(ti);
}

struct table_mysql_inst *table_mysql_inst_new(const struct table_mysql *m, struct table_inst *ti)
{
	struct table_mysql_inst *mi = xcalloc(1, sizeof(*mi));
	mi->m = m;
	mi->ti = ti;
	mi->dead_until = xcalloc(m->nhosts, sizeof(uint64_t));
	mi->down = xcalloc(m->nhosts, sizeof(bool));
	mi->probe_ms = TM_PROBE_MIN_MS;
	uv_timer_init(table_inst_loop(ti), &mi->queue_timer);
	mi->queue_timer.data = mi;
	table_inst_handle_opened(ti);
	uv_timer_init(table_inst_loop(ti), &mi->probe_timer);
	mi->probe_timer.data = mi;
	table_inst_handle_opened(ti);
	mi->open_timers = 2;
	return mi;
}

/* --- host health --- */

static uint64_t tm_mono_ms(void)
{
	return uv_hrtime() / 1000000u;
}

static bool tm_link_new(struct table_mysql_inst *mi, bool probe);

static bool tm_all_dead(struct table_mysql_inst *mi)
{
	uint64_t now = tm_now(mi);
	for (size_t i = 0; i < mi->m->nhosts; i++)
		if (mi->dead_until[i] <= now)
			return false;
	return true;
}

static void tm_probe_cb(uv_timer_t *t)
{
	struct table_mysql_inst *mi = t->data;
	if (mi->probing || !tm_all_dead(mi))
		return; /* a host is out of its retry interval: normal traffic finds it */
	mi->probing = true;
	if (!tm_link_new(mi, true))
		mi->probing = false;
}

/* While every host is in its retry interval, arms the next probe. */
static void tm_probe_schedule(struct table_mysql_inst *mi)
{
	if (mi->closing || mi->probing || uv_is_active((uv_handle_t *)&mi->probe_timer) ||
	    !tm_all_dead(mi))
		return;
	uint64_t ms = mi->probe_ms;
	if (ms > mi->m->retry_interval_ms)
		ms = mi->m->retry_interval_ms;
	uv_timer_start(&mi->probe_timer, tm_probe_cb, ms, 0);
}

/* A connection to host hi failed: skip it for retry_interval, and log the
 * outage once (the first failure any worker sees), not every attempt. */
static void tm_host_failed(struct table_mysql_inst *mi, size_t hi, const char *why)
{
	const struct table_mysql *m = mi->m;
	struct tm_health *h = &m->health[hi];
	char safe[300];
	log_sanitize(safe, sizeof(safe), why, strlen(why));
	mi->dead_until[hi] = tm_now(mi) + m->retry_interval_ms;
	if (!mi->down[hi]) {
		mi->down[hi] = true;
		if (atomic_fetch_add(&h->ndown, 1) == 0) {
			atomic_store(&h->since_ms, tm_mono_ms());
			atomic_store(&h->refused, 0);
			log_warn("%s: MySQL host %s is down: %s", m->origin, m->hosts[hi].name, safe);
			tm_probe_schedule(mi);
			return;
		}
	}
	log_debug("%s: MySQL host %s: %s", m->origin, m->hosts[hi].name, safe);
	/* Probing goes on without traffic too, so every worker sees the
	   host come back (and the recovery is logged). */
	tm_probe_schedule(mi);
}

static void tm_host_up(struct table_mysql_inst *mi, size_t hi)
{
	const struct table_mysql *m = mi->m;
	struct tm_health *h = &m->health[hi];
	mi->dead_until[hi] = 0;
	mi->probe_ms = TM_PROBE_MIN_MS;
	mi->probes_failed = 0;
	if (!mi->down[hi])
		return;
	mi->down[hi] = false;
	if (atomic_fetch_sub(&h->ndown, 1) == 1)
		log_info("%s: MySQL host %s is up again after %.1f s (%lu lookups failed meanwhile)",
			 m->origin, m->hosts[hi].name,
			 (double)(tm_mono_ms() - atomic_load(&h->since_ms)) / 1000.0,
			 atomic_load(&h->refused));
}

/* A lookup was answered TEMPFAIL for want of a connection. */
static void tm_count_refused(struct table_mysql_inst *mi)
{
	for (size_t i = 0; i < mi->m->nhosts; i++)
		if (mi->down[i])
			atomic_fetch_add(&mi->m->health[i].refused, 1);
}

/* --- link lifetime --- */

static void tm_poll_closed(uv_handle_t *h)
{
	struct tm_poll *p = h->data;
	struct table_inst *ti = p->ti;
	free(p);
	table_inst_handle_closed(ti);
}

static void tm_link_stop_poll(struct tm_link *l)
{
	if (l->poll == NULL)
		return;
	/* Stop and close before mysql_close() invalidates the fd. */
	uv_poll_stop(&l->poll->h);
	uv_close((uv_handle_t *)&l->poll->h, tm_poll_closed);
	l->poll = NULL;
	l->fd = -1;
}

static void tm_link_timer_closed(uv_handle_t *h)
{
	struct tm_link *l = h->data;
	struct table_inst *ti = l->ti;
	if (--l->open_timers == 0) {
		buf_free(&l->result);
		free(l);
	}
	table_inst_handle_closed(ti);
}

static void tm_link_close_db(struct tm_link *l, bool healthy)
{
	tm_link_stop_poll(l);
	if (l->db_inited) {
		/* A healthy idle link gets a polite COM_QUIT (a few bytes into an
		 * empty socket buffer: does not block). Anything else is cut
		 * first, so mysql_close() cannot wait on a dead peer. */
		if (!healthy)
			mariadb_cancel(&l->db);
		mysql_close(&l->db);
		l->db_inited = false;
	}
}

static void tm_link_unlink(struct tm_link *l)
{
	struct table_mysql_inst *mi = l->mi;
	if (l->prev)
		l->prev->next = l->next;
	else
		mi->links = l->next;
	if (l->next)
		l->next->prev = l->prev;
	mi->nlinks--;
	if (l->state == TM_CONNECTING || l->state == TM_RESOLVING)
		mi->nconnecting--;
}

/* Removes the link from the instance and frees it (asynchronously). Its
 * request, if any, must have been dealt with by the caller. */
static void tm_link_drop(struct tm_link *l, bool healthy)
{
	struct table_mysql_inst *mi = l->mi;
	tm_link_unlink(l);
	if (l->probe) {
		/* the probe found no host: the next one waits longer */
		l->probe = false;
		mi->probing = false;
		mi->probes_failed++;
		mi->probe_ms = mi->probe_ms * 2 < TM_PROBE_MAX_MS ? mi->probe_ms * 2 : TM_PROBE_MAX_MS;
		tm_probe_schedule(mi);
	}
	l->state = TM_DEAD;
	if (l->resolve) {
		l->resolve->link = NULL;
		uv_cancel((uv_req_t *)&l->resolve->req);
		l->resolve = NULL;
	}
	tm_link_close_db(l, healthy);
	uv_timer_stop(&l->wait_timer);
	uv_timer_stop(&l->deadline);
	uv_close((uv_handle_t *)&l->wait_timer, tm_link_timer_closed);
	uv_close((uv_handle_t *)&l->deadline, tm_link_timer_closed);
}

/* Fails the link's request (TEMPFAIL, or a retry on a fresh connection) and
 * drops the link. */
static void tm_link_fail(struct tm_link *l, bool retry, const char *what)
{
	struct table_mysql_inst *mi = l->mi;
	struct table_req *req = l->req;
	char safe[300];
	const char *why = l->db_inited ? mysql_error(&l->db) : "";
	log_warn("%s: %s%s%s", mi->m->origin, what, *why ? ": " : "",
		 log_sanitize(safe, sizeof(safe), why, strlen(why)));
	l->req = NULL;
	tm_link_drop(l, false);
	if (req) {
		if (retry && req->cb && req->attempts < 2) {
			req->deadline = tm_now(mi) + mi->m->query_timeout_ms;
			tm_queue_push(mi, req, true);
		} else {
			table_req_finish(req, TABLE_TEMPFAIL, NULL);
		}
	}
	tm_dispatch(mi);
}

static void tm_poll_cb(uv_poll_t *h, int status, int events)
{
	struct tm_poll *p = h->data;
	struct tm_link *l = p->link; /* a poll is closed before its link goes */
	int ms = 0;
	if (status < 0)
		ms = MYSQL_WAIT_READ | MYSQL_WAIT_WRITE; /* let Connector/C find the error */
	if (events & UV_READABLE)
		ms |= MYSQL_WAIT_READ;
	if (events & UV_WRITABLE)
		ms |= MYSQL_WAIT_WRITE;
	if (events & UV_PRIORITIZED)
		ms |= MYSQL_WAIT_EXCEPT;
	uv_poll_stop(h);
	uv_timer_stop(&l->wait_timer);
	tm_link_run(l, ms, false);
}

static void tm_wait_timer_cb(uv_timer_t *t)
{
	struct tm_link *l = t->data;
	if (l->poll)
		uv_poll_stop(&l->poll->h);
	tm_link_run(l, MYSQL_WAIT_TIMEOUT, false);
}

/* Arms the poll/timer for what Connector/C waits on. */
static void tm_link_wait(struct tm_link *l, int mstatus)
{
	int fd = (int)mysql_get_socket(&l->db);
	if (l->poll && fd != l->fd)
		tm_link_stop_poll(l);
	if (l->poll == NULL && fd >= 0) {
		l->poll = xcalloc(1, sizeof(*l->poll));
		l->poll->ti = l->ti;
		l->poll->link = l;
		l->poll->h.data = l->poll;
		if (uv_poll_init(table_inst_loop(l->ti), &l->poll->h, fd) != 0) {
			free(l->poll);
			l->poll = NULL;
		} else {
			table_inst_handle_opened(l->ti);
			l->fd = fd;
		}
	}
	int ev = 0;
	if (mstatus & MYSQL_WAIT_READ)
		ev |= UV_READABLE;
	if (mstatus & MYSQL_WAIT_WRITE)
		ev |= UV_WRITABLE;
	if (mstatus & MYSQL_WAIT_EXCEPT)
		ev |= UV_PRIORITIZED;
	if (ev && l->poll)
		uv_poll_start(&l->poll->h, ev, tm_poll_cb);
	if (mstatus & MYSQL_WAIT_TIMEOUT)
		uv_timer_start(&l->wait_timer, tm_wait_timer_cb, mysql_get_timeout_value_ms(&l->db), 0);
	else if (!ev || !l->poll)
		/* nothing to wait on: should not happen; poke it on the next turn */
		uv_timer_start(&l->wait_timer, tm_wait_timer_cb, 0, 0);
}

static void tm_deadline_cb(uv_timer_t *t)
{
	struct tm_link *l = t->data;
	struct table_mysql_inst *mi = l->mi;
	switch (l->state) {
	case TM_IDLE:
		/* idle_interval reached */
		tm_link_drop(l, true);
		return;
	case TM_RESOLVING:
	case TM_CONNECTING:
		if (l->resolve) {
			l->resolve->link = NULL;
			uv_cancel((uv_req_t *)&l->resolve->req);
			l->resolve = NULL;
		}
		tm_host_failed(mi, l->order[l->order_pos],
			       l->state == TM_RESOLVING ? "name resolution timed out"
							: "connect timed out");
		l->order_pos++;
		if (!tm_link_try_next_host(l))
			tm_dispatch(mi);
		return;
	case TM_DEAD:
		return;
	default:
		tm_link_fail(l, false, "query timeout");
		return;
	}
}

/* --- connecting --- */

static void tm_link_init_db(struct tm_link *l)
{
	const struct table_mysql *m = l->mi->m;
	unsigned int tmo;
	my_bool no = 0, verify = m->tls_verify_cert;
	mysql_init(&l->db);
	l->db_inited = true;
	mysql_options(&l->db, MYSQL_OPT_NONBLOCK, 0);
	tmo = (unsigned)((m->connect_timeout_ms + 999) / 1000);
	mysql_options(&l->db, MYSQL_OPT_CONNECT_TIMEOUT, &tmo);
	tmo = (unsigned)((m->query_timeout_ms + 999) / 1000);
	mysql_options(&l->db, MYSQL_OPT_READ_TIMEOUT, &tmo);
	mysql_options(&l->db, MYSQL_OPT_WRITE_TIMEOUT, &tmo);
	mysql_options(&l->db, MYSQL_OPT_LOCAL_INFILE, &no);
	mysql_options(&l->db, MYSQL_SET_CHARSET_NAME, m->charset);
	if (m->option_file)
		mysql_options(&l->db, MYSQL_READ_DEFAULT_FILE, m->option_file);
	if (m->option_group || m->option_file)
		mysql_options(&l->db, MYSQL_READ_DEFAULT_GROUP,
			      m->option_group ? m->option_group : "client");
	if (m->tls) {
		mysql_ssl_set(&l->db, m->tls_key_file, m->tls_cert_file, m->tls_CAfile,
			      m->tls_CApath, m->tls_ciphers);
		mysql_options(&l->db, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
	}
}

static void tm_link_connect_start(struct tm_link *l, const char *addr)
{
	const struct table_mysql *m = l->mi->m;
	const struct tm_host *h = &m->hosts[l->order[l->order_pos]];
	tm_link_init_db(l);
	l->state = TM_CONNECTING;
	MYSQL *ret = NULL;
	int st;
	if (h->kind == TM_HOST_UNIX)
		st = mysql_real_connect_start(&ret, &l->db, "localhost", m->user, m->password,
					      m->dbname, 0, h->name, CLIENT_MULTI_RESULTS);
	else
		st = mysql_real_connect_start(&ret, &l->db, addr, m->user, m->password, m->dbname,
					      h->port, NULL, CLIENT_MULTI_RESULTS);
	if (st) {
		tm_link_wait(l, st);
		return;
	}
	/* finished at once (typically: refused); handled by the common path */
	l->state = TM_CONNECTING;
	if (ret == NULL) {
		tm_link_run(l, -1, false);
		return;
	}
	tm_link_run(l, -2, false);
}

static void tm_resolve_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct tm_resolve *r = req->data;
	struct tm_link *l = r->link;
	char addr[INET6_ADDRSTRLEN] = "";
	if (status == 0 && res) {
		if (res->ai_family == AF_INET)
			uv_ip4_name((struct sockaddr_in *)res->ai_addr, addr, sizeof(addr));
		else if (res->ai_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, addr, sizeof(addr));
	}
	if (res)
		uv_freeaddrinfo(res);
	free(r);
	if (l == NULL)
		return; /* the link gave up (dropped or closed) */
	l->resolve = NULL;
	if (*addr == 0) {
		char why[200];
		snprintf(why, sizeof(why), "cannot resolve: %s",
			 status ? uv_strerror(status) : "no address");
		tm_host_failed(l->mi, l->order[l->order_pos], why);
		l->order_pos++;
		if (!tm_link_try_next_host(l))
			tm_dispatch(l->mi);
		return;
	}
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	tm_link_connect_start(l, l->addr);
}

/* Starts connecting to the host at order_pos (skipping dead ones). Returns
 * false (after dropping the link and failing its work) when no host is left. */
static bool tm_link_try_next_host(struct tm_link *l)
{
	struct table_mysql_inst *mi = l->mi;
	const struct table_mysql *m = mi->m;
	tm_link_close_db(l, false);
	uint64_t now = tm_now(mi);
	while (l->order_pos < l->norder && !l->probe && mi->dead_until[l->order[l->order_pos]] > now)
		l->order_pos++;
	if (l->order_pos >= l->norder) {
		tm_link_drop(l, false);
		/* Nobody left to serve the queue: fail it now rather than at its
		 * deadline (docs/design.md invariant 4: an outage is a prompt 4xx). */
		if (mi->nlinks == 0) {
			while (mi->qhead) {
				struct table_req *req = mi->qhead;
				tm_queue_unlink(mi, req);
				table_req_finish(req, TABLE_TEMPFAIL, NULL);
			}
		}
		return false;
	}
	const struct tm_host *h = &m->hosts[l->order[l->order_pos]];
	uv_timer_start(&l->deadline, tm_deadline_cb, m->connect_timeout_ms, 0);
	if (h->kind == TM_HOST_INET && !h->numeric) {
		struct tm_resolve *r = xcalloc(1, sizeof(*r));
		struct addrinfo hints = {0};
		char port[8];
		hints.ai_socktype = SOCK_STREAM;
		snprintf(port, sizeof(port), "%u", h->port ? h->port : 3306);
		r->link = l;
		r->req.data = r;
		l->state = TM_RESOLVING;
		if (uv_getaddrinfo(table_inst_loop(l->ti), &r->req, tm_resolve_cb, h->name, port,
				   &hints) != 0) {
			free(r);
			tm_host_failed(mi, l->order[l->order_pos], "cannot start name resolution");
			l->order_pos++;
			return tm_link_try_next_host(l);
		}
		l->resolve = r;
		return true;
	}
	tm_link_connect_start(l, h->name);
	return true;
}

static void tm_shuffle(size_t *a, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)rand() % i; /* load spreading only, not security */
		size_t t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* Opens one more connection. Returns false if every host is in its retry
 * interval (nothing started); a probe tries those hosts too. */
static bool tm_link_new(struct table_mysql_inst *mi, bool probe)
{
	const struct table_mysql *m = mi->m;
	struct tm_link *l = xcalloc(1, sizeof(*l));
	uint64_t now = tm_now(mi);
	/* UNIX sockets first, then TCP, each group shuffled (mysql_table(5)). */
	for (int pass = 0; pass < 2; pass++) {
		size_t start = l->norder;
		for (size_t i = 0; i < m->nhosts; i++)
			if ((m->hosts[i].kind == TM_HOST_UNIX) == (pass == 0) &&
			    (probe || mi->dead_until[i] <= now))
				l->order[l->norder++] = i;
		tm_shuffle(l->order + start, l->norder - start);
	}
	if (l->norder == 0) {
		free(l);
		return false;
	}
	l->mi = mi;
	l->ti = mi->ti;
	l->fd = -1;
	l->probe = probe;
	uv_timer_init(table_inst_loop(mi->ti), &l->wait_timer);
	uv_timer_init(table_inst_loop(mi->ti), &l->deadline);
	l->wait_timer.data = l->deadline.data = l;
	l->open_timers = 2;
	table_inst_handle_opened(mi->ti);
	table_inst_handle_opened(mi->ti);
	l->next = mi->links;
	if (mi->links)
		mi->links->prev = l;
	mi->links = l;
	mi->nlinks++;
	mi->nconnecting++;
	l->state = TM_CONNECTING;
	tm_link_try_next_host(l);
	return true;
}

/* --- queries --- */

static void tm_link_start_query(struct tm_link *l, struct table_req *req)
{
	const struct table_mysql *m = l->mi->m;
	struct buf q = BUF_INIT;
	l->req = req;
	req->where = TABLE_REQ_ACTIVE;
	req->attempts++;
	/* Expanded on this connection, so the escaping uses its charset. */
	tm_expand(&q, m->query, req->key, NULL, &l->db);
	buf_reset(&l->result);
	l->nvalues = 0;
	l->answer = TABLE_NOTFOUND;
	l->state = TM_QUERY;
	uv_timer_stop(&l->deadline);
	uv_timer_start(&l->deadline, tm_deadline_cb, m->query_timeout_ms, 0);
	table_inst_count_backend(l->ti);
	int err = 0;
	int st = mysql_real_query_start(&err, &l->db, buf_len(&q) ? (const char *)buf_data(&q) : "",
					(unsigned long)buf_len(&q));
	buf_free(&q);
	if (st) {
		tm_link_wait(l, st);
		return;
	}
	/* done at once: continue with the result as if the poll had fired */
	if (err) {
		bool stale = l->used && (mysql_errno(&l->db) == CR_SERVER_GONE_ERROR
					 || mysql_errno(&l->db) == CR_SERVER_LOST);
		if (mysql_errno(&l->db) >= 2000)
			tm_link_fail(l, stale, "query failed");
		else {
			/* an SQL error: keep the connection */
			char safe[300];
			const char *why = mysql_error(&l->db);
			log_warn("%s: query failed: %s", m->origin,
				 log_sanitize(safe, sizeof(safe), why, strlen(why)));
			l->req = NULL;
			l->state = TM_IDLE;
			table_req_finish(req, TABLE_TEMPFAIL, NULL);
			tm_dispatch(l->mi);
		}
		return;
	}
	l->state = TM_STORE;
	tm_link_run(l, 0, true);
}

/* Collects the rows of a stored result into l->result per result_format. */
static void tm_link_collect(struct tm_link *l, MYSQL_RES *res)
{
	const struct table_mysql *m = l->mi->m;
	const char *key = l->req ? l->req->key : "";
	unsigned nf = mysql_num_fields(res);
	MYSQL_ROW row;
	while ((row = mysql_fetch_row(res)) != NULL) {
		for (unsigned i = 0; i < nf; i++) {
			if (row[i] == NULL)
				continue; /* NULL columns are skipped */
			if (row[i][0] == 0)
				continue; /* Postfix skips empty values (with a warning) */
			struct buf one = BUF_INIT;
			if (!tm_expand(&one, m->result_format, row[i], key, NULL)) {
				buf_free(&one);
				continue;
			}
			if (m->expansion_limit && ++l->nvalues > m->expansion_limit) {
				log_warn("%s: result exceeds expansion_limit %u", m->origin,
					 m->expansion_limit);
				l->answer = TABLE_TEMPFAIL;
				buf_free(&one);
				return;
			}
			if (buf_len(&l->result))
				buf_append(&l->result, ",", 1);
			if (buf_len(&one))
				buf_append(&l->result, buf_data(&one), buf_len(&one));
			buf_free(&one);
			l->answer = TABLE_OK;
		}
	}
}

static void tm_link_query_done(struct tm_link *l)
{
	struct table_req *req = l->req;
	const struct table_mysql *m = l->mi->m;
	l->req = NULL;
	l->used = true;
	l->state = TM_IDLE;
	uv_timer_stop(&l->deadline);
	uv_timer_start(&l->deadline, tm_deadline_cb, m->idle_interval_ms ? m->idle_interval_ms : 1, 0);
	if (req) {
		buf_append(&l->result, "", 1);
		table_req_finish(req, l->answer,
				 l->answer == TABLE_OK ? (const char *)buf_data(&l->result) : NULL);
	}
	buf_reset(&l->result);
	tm_dispatch(l->mi);
}

/* Drives the state machine. start: call the *_start() of the current state;
 * else *_cont() with mstatus. (mstatus -1/-2 are internal: connect already
 * finished with failure/success.) */
static void tm_link_run(struct tm_link *l, int mstatus, bool start)
{
	struct table_mysql_inst *mi = l->mi;
	const struct table_mysql *m = mi->m;
	for (;;) {
		int st = 0;
		switch (l->state) {
		case TM_CONNECTING: {
			MYSQL *ret = NULL;
			if (mstatus == -1)
				ret = NULL;
			else if (mstatus == -2)
				ret = &l->db;
			else if ((st = mysql_real_connect_cont(&ret, &l->db, mstatus)) != 0) {
				tm_link_wait(l, st);
				return;
			}
			if (ret == NULL) {
				tm_host_failed(mi, l->order[l->order_pos], mysql_error(&l->db));
				l->order_pos++;
				if (!tm_link_try_next_host(l))
					tm_dispatch(mi);
				return;
			}
			mi->nconnecting--;
			table_inst_count_connect(l->ti);
			if (l->probe) {
				l->probe = false;
				mi->probing = false;
			}
			tm_host_up(mi, l->order[l->order_pos]);
			l->state = TM_IDLE;
			uv_timer_stop(&l->deadline);
			uv_timer_start(&l->deadline, tm_deadline_cb,
				       m->idle_interval_ms ? m->idle_interval_ms : 1, 0);
			tm_dispatch(mi);
			return;
		}
		case TM_QUERY: {
			int err = 0;
			if ((st = mysql_real_query_cont(&err, &l->db, mstatus)) != 0) {
				tm_link_wait(l, st);
				return;
			}
			if (err) {
				unsigned no = mysql_errno(&l->db);
				bool stale = l->used && (no == CR_SERVER_GONE_ERROR || no == CR_SERVER_LOST);
				if (no >= 2000) {
					tm_link_fail(l, stale, "query failed");
				} else {
					char safe[300];
					const char *why = mysql_error(&l->db);
					struct table_req *req = l->req;
					log_warn("%s: query failed: %s", m->origin,
						 log_sanitize(safe, sizeof(safe), why, strlen(why)));
					l->req = NULL;
					if (req)
						table_req_finish(req, TABLE_TEMPFAIL, NULL);
					l->req = NULL;
					l->answer = TABLE_TEMPFAIL;
					tm_link_query_done(l);
				}
				return;
			}
			l->state = TM_STORE;
			start = true;
			continue;
		}
		case TM_STORE:
		case TM_NEXT_STORE: {
			MYSQL_RES *res = NULL;
			st = start ? mysql_store_result_start(&res, &l->db)
				   : mysql_store_result_cont(&res, &l->db, mstatus);
			if (st) {
				tm_link_wait(l, st);
				return;
			}
			if (res == NULL) {
				if (mysql_errno(&l->db)) {
					tm_link_fail(l, false, "fetching the result failed");
					return;
				}
				if (l->state == TM_STORE && m->require_result_set) {
					log_warn("%s: query returned no result set", m->origin);
					l->answer = TABLE_TEMPFAIL;
				}
			} else {
				if (l->state == TM_STORE && l->answer != TABLE_TEMPFAIL)
					tm_link_collect(l, res);
				mysql_free_result(res); /* stored: no I/O */
			}
			if (mysql_more_results(&l->db)) {
				l->state = TM_NEXT;
				start = true;
				continue;
			}
			tm_link_query_done(l);
			return;
		}
		case TM_NEXT: {
			int ret = 0;
			st = start ? mysql_next_result_start(&ret, &l->db)
				   : mysql_next_result_cont(&ret, &l->db, mstatus);
			if (st) {
				tm_link_wait(l, st);
				return;
			}
			if (ret > 0) {
				tm_link_fail(l, false, "reading further results failed");
				return;
			}
			if (ret == 0) {
				l->state = TM_NEXT_STORE;
				start = true;
				continue;
			}
			tm_link_query_done(l);
			return;
		}
		case TM_RESOLVING:
		case TM_IDLE:
		case TM_DEAD:
			return;
		}
	}
}

static void tm_dispatch(struct table_mysql_inst *mi)
{
	while (mi->qhead) {
		struct tm_link *idle = NULL;
		for (struct tm_link *l = mi->links; l; l = l->next)
			if (l->state == TM_IDLE) {
				idle = l;
				break;
			}
		if (idle) {
			struct table_req *req = mi->qhead;
			tm_queue_unlink(mi, req);
			tm_link_start_query(idle, req);
			continue;
		}
		if (mi->nconnecting < mi->nqueued && mi->nlinks < mi->m->max_connections) {
			if (tm_link_new(mi, false))
				continue;
			if (mi->nlinks == 0) {
				/* every host is in its retry interval */
				while (mi->qhead) {
					struct table_req *req = mi->qhead;
					tm_queue_unlink(mi, req);
					tm_count_refused(mi);
					table_req_defer(req, TABLE_TEMPFAIL, NULL);
				}
				tm_probe_schedule(mi);
			}
		}
		break;
	}
	if (mi->qhead) {
		uint64_t now = tm_now(mi), d = mi->qhead->deadline;
		uv_timer_start(&mi->queue_timer, tm_queue_timer_cb, d > now ? d - now : 0, 0);
	} else {
		uv_timer_stop(&mi->queue_timer);
	}
}

void table_mysql_lookup(struct table_mysql_inst *mi, struct table_req *req)
{
	const struct table_mysql *m = mi->m;
	/* Keys that the query cannot use are "not found" without a query, as
	 * in Postfix (domain restriction, %u on "@domain", %d on a bare name). */
	if (!tm_domain_ok(m, req->key) || !tm_expand(NULL, m->query, req->key, NULL, NULL)) {
		table_req_defer(req, TABLE_NOTFOUND, NULL);
		return;
	}
	req->deadline = tm_now(mi) + m->query_timeout_ms;
	tm_queue_push(mi, req, false);
	/* Not tm_dispatch(): a connect or query can fail synchronously, and the
	 * completion must not fire inside table_lookup(). */
	tm_dispatch_soon(mi);
}

bool table_mysql_cancel(struct table_mysql_inst *mi, struct table_req *req)
{
	if (req->where == TABLE_REQ_QUEUED) {
		tm_queue_unlink(mi, req);
		return true;
	}
	/* ACTIVE: the link keeps the request until the statement ends; with
	 * cb == NULL the answer goes nowhere. */
	return false;
}

void table_mysql_inst_close(struct table_mysql_inst **mip)
{
	struct table_mysql_inst *mi = *mip;
	if (mi == NULL)
		return;
	*mip = NULL;
	mi->closing = true;
	for (size_t i = 0; i < mi->m->nhosts; i++)
		if (mi->down[i])
			atomic_fetch_sub(&mi->m->health[i].ndown, 1);
	while (mi->qhead) {
		struct table_req *req = mi->qhead;
		tm_queue_unlink(mi, req);
		free(req->key);
		free(req->value);
		free(req);
	}
	while (mi->links) {
		struct tm_link *l = mi->links;
		struct table_req *req = l->req;
		bool healthy = l->state == TM_IDLE;
		l->req = NULL;
		tm_link_drop(l, healthy);
		if (req) {
			free(req->key);
			free(req->value);
			free(req);
		}
	}
	uv_timer_stop(&mi->probe_timer);
	uv_close((uv_handle_t *)&mi->probe_timer, tm_queue_timer_closed);
	uv_timer_stop(&mi->queue_timer);
	uv_close((uv_handle_t *)&mi->queue_timer, tm_queue_timer_closed);
}
