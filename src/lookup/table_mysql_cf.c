/* lookup/table_mysql_cf: the .cf file of "mysql:/path.cf" tables — Postfix
 * mysql_table(5) files used unchanged, read into an immutable definition
 * (the connections are table_mysql.c's).
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
 * Durations as everywhere in submitd (core/duration.h): s, m, h, d, w or ms
 * suffixes, seconds without one.
 *
 * Key material is escaped with mysql_real_escape_string() on the live
 * connection (its charset, and NO_BACKSLASH_ESCAPES, are honoured); the
 * query template must supply the quotes ('%s'), as in Postfix.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/duration.h"
#include "core/log.h"
#include "lookup/expand.h"
#include "lookup/table_backend.h"
#include "lookup/table_mysql.h"

#define TM_DURATION_MAX_MS (86400ULL * 1000)

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
/* .cf parsing */

struct tm_kv {
	char *key, *value;
	unsigned line;
};

static const char *const tm_known_keys[] = {
	"hosts",           "user",
	"password",        "dbname",
	"charset",         "query",
	"result_format",   "domain",
	"expansion_limit", "option_file",
	"option_group",    "tls_cert_file",
	"tls_key_file",    "tls_CAfile",
	"tls_CApath",      "tls_ciphers",
	"tls_verify_cert", "require_result_set",
	"idle_interval",   "retry_interval",
	"select_field",    "table",
	"where_field",     "additional_conditions",
	"query_timeout",   "connect_timeout",
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
	for (char *tok = strtok_r(copy, ", \t\r\n", &save); tok;
	     tok = strtok_r(NULL, ", \t\r\n", &save)) {
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
			h.numeric = inet_pton(AF_INET, hp, tmp) == 1 ||
				    inet_pton(AF_INET6, hp, tmp) == 1 ||
				    strcmp(hp, "localhost") == 0;
			h.name = xstrdup(hp);
		}
		if (m->nhosts == 16) {
			free(h.name);
			table_seterr(err, errlen, "%s:%u: hosts: at most 16 hosts", origin, line);
			free(copy);
			return false;
		}
		m->hosts = xrealloc(m->hosts, (m->nhosts + 1) * sizeof(*m->hosts));
		m->hosts[m->nhosts++] = h;
		continue;
	bad:
		table_seterr(err, errlen,
			     "%s:%u: hosts: bad host \"%s\" (want unix:/path, inet:host:port "
			     "or host[:port])",
			     origin, line, tok);
		free(copy);
		return false;
	}
	free(copy);
	if (m->nhosts == 0) {
		table_seterr(err, errlen, "%s:%u: hosts: empty list", origin, line);
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
	struct table_lines it = {.text = text, .len = len};
	const char *line;
	size_t llen, i;
	if (memchr(text, 0, len)) {
		table_seterr(err, errlen, "%s: NUL byte in file", origin);
		return false;
	}
	while (table_lines_next(&it, &line, &llen, &i)) {
		unsigned lineno = it.lineno;
		if (i > 0) {
			if (nkv == 0) {
				table_seterr(err, errlen,
					     "%s:%u: continuation line without a preceding "
					     "\"name = value\" line",
					     origin, lineno);
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
			table_seterr(err, errlen, "%s:%u: expected \"name = value\"", origin,
				     lineno);
			goto fail;
		}
		size_t nlen = (size_t)(eq - line);
		while (nlen > 0 && table_isspace((unsigned char)line[nlen - 1]))
			nlen--;
		if (nlen == 0) {
			table_seterr(err, errlen, "%s:%u: missing name before '='", origin, lineno);
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
		while (table_isspace((unsigned char)*s))
			s++;
		size_t n = strlen(s);
		while (n > 0 && table_isspace((unsigned char)s[n - 1]))
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

struct table_mysql *table_mysql_parse(const char *text, size_t len, const char *origin, char *err,
				      size_t errlen)
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

#define STR_KEY(name, field, dflt)                         \
	do {                                               \
		e = tm_kv_get(kv, nkv, name);              \
		m->field = xstrdup(e ? e->value : (dflt)); \
	} while (0)
#define OPT_KEY(name, field)                          \
	do {                                          \
		e = tm_kv_get(kv, nkv, name);         \
		if (e && *e->value)                   \
			m->field = xstrdup(e->value); \
	} while (0)

	e = tm_kv_get(kv, nkv, "hosts");
	if (!tm_parse_hosts(m, e ? e->value : "localhost", origin, e ? e->line : 0, err, errlen))
		goto out;
	STR_KEY("user", user, "");
	STR_KEY("password", password, "");
	STR_KEY("dbname", dbname, "");
	if (*m->dbname == 0) {
		table_seterr(err, errlen, "%s: missing \"dbname = ...\"", origin);
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
	m->tls = m->tls_cert_file || m->tls_key_file || m->tls_CAfile || m->tls_CApath ||
		 m->tls_ciphers;

	e = tm_kv_get(kv, nkv, "query");
	if (e) {
		m->query = xstrdup(e->value);
	} else {
		const struct tm_kv *sf = tm_kv_get(kv, nkv, "select_field");
		const struct tm_kv *tb = tm_kv_get(kv, nkv, "table");
		const struct tm_kv *wf = tm_kv_get(kv, nkv, "where_field");
		const struct tm_kv *ac = tm_kv_get(kv, nkv, "additional_conditions");
		if (!sf || !tb || !wf) {
			table_seterr(err, errlen, "%s: missing \"query = ...\"", origin);
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
	const char *why = expand_check(m->query);
	if (why == NULL && *m->query == 0)
		why = "empty query";
	if (why) {
		table_seterr(err, errlen, "%s:%u: query: %s", origin, e->line, why);
		goto out;
	}
	if ((why = expand_check(m->result_format)) != NULL) {
		e = tm_kv_get(kv, nkv, "result_format");
		table_seterr(err, errlen, "%s:%u: result_format: %s", origin, e ? e->line : 0, why);
		goto out;
	}
	e = tm_kv_get(kv, nkv, "domain");
	if (e && *e->value) {
		char *copy = xstrdup(e->value), *save = NULL;
		for (char *tok = strtok_r(copy, ", \t\r\n", &save); tok;
		     tok = strtok_r(NULL, ", \t\r\n", &save)) {
			if (strchr(tok, ':') || strchr(tok, '/')) {
				table_seterr(err, errlen,
					     "%s:%u: domain: \"%s\": lookup tables are not "
					     "supported here; list the domain names",
					     origin, e->line, tok);
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
		/* At most a day: deadlines are uv_now() plus these, and MySQL's own
		 * timeouts take whole seconds in an unsigned int. */
		if (e && (!duration_parse(e->value, durs[i].field) ||
			  *durs[i].field > TM_DURATION_MAX_MS)) {
			table_seterr(err, errlen, "%s:%u: %s: bad time value \"%s\" (at most 1d)",
				     origin, e->line, durs[i].name, e->value);
			goto out;
		}
	}
	if (m->query_timeout_ms == 0 || m->connect_timeout_ms == 0) {
		table_seterr(err, errlen, "%s: query_timeout and connect_timeout must be > 0",
			     origin);
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
		if (*e->value < '0' || *e->value > '9' || *end || errno || v < nums[i].min ||
		    v > nums[i].max) {
			table_seterr(err, errlen, "%s:%u: %s: bad number \"%s\" (%u..%u)", origin,
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
			table_seterr(err, errlen, "%s:%u: %s: expected yes or no, not \"%s\"",
				     origin, e->line, bools[i].name, e->value);
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
