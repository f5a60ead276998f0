/* relay_generic: generic_maps, the addresses of a message rewritten as it
 * leaves (contract in relay_generic.h, docs/generic.md). */
#include "config.h"
#include "relay/relay_generic.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "smtp/addr.h"
#include "smtp/addrhdr.h"

/* RFC 5322 §2.1.1: a line is at most 998 octets without its CRLF. */
#define RELAY_GENERIC_LINE_MAX 998

/* ---- loading ---- */

static void relay_generic_unload(struct config *cfg)
{
	table_free(&cfg->generic_table);
}

static bool relay_generic_domain(const char *s)
{
	if (*s == '[') {
		size_t n = strlen(s);
		return n > 2 && s[n - 1] == ']' && strcspn(s + 1, "[]\\") == n - 2;
	}
	if (*s == '\0' || *s == '.')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '-'))
			return false;
	return true;
}

/* What a value must be: one address (local part a dot-string or a quoted
 * string) or "@domain", printable ASCII, at most 254 octets. Postfix would
 * also take "Name <a@b>" or a list (using the first): refused here rather
 * than guessed at. Returns why not, or NULL. */
static const char *relay_generic_value_error(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > 254)
		return "longer than 254 octets";
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127)
			return "holds a space, a control character or a non-ASCII octet";
	const char *at = strrchr(v, '@');
	if (at == NULL || !relay_generic_domain(at + 1))
		return "is not user@domain nor @domain";
	if (at == v)
		return NULL;
	if (v[0] == '"') {
		if (at - v < 2 || at[-1] != '"')
			return "has an unterminated quoted local part";
		for (const char *p = v + 1; p < at - 1; p++) {
			if (*p == '\\' && p + 1 < at - 1)
				p++;
			else if (*p == '"' || *p == '\\')
				return "has a stray '\"' or '\\' in its quoted local part";
		}
		return NULL;
	}
	for (const char *p = v; p < at; p++)
		if (strchr("()<>@,;:\\\"[]", *p) != NULL)
			return "has a special character in its local part (quote it)";
	return NULL;
}

struct relay_generic_check {
	char *err;
	size_t errlen;
	const char *origin, *name;
};

static bool relay_generic_check_value(void *ctx, const char *key, const char *value)
{
	struct relay_generic_check *c = ctx;
	const char *why = relay_generic_value_error(value);
	if (why == NULL)
		return true;
	char shown[120];
	size_t j = 0;
	for (const char *p = key; *p && j + 1 < sizeof(shown); p++)
		shown[j++] = (unsigned char)*p < ' ' || (unsigned char)*p >= 127 ? '?' : *p;
	shown[j] = '\0';
	snprintf(c->err, c->errlen, "%s: generic_maps: %s: the value of \"%s\" %s", c->origin,
		 c->name, shown, why);
	return false;
}

bool relay_generic_load(struct config *cfg, char *err, size_t errlen)
{
	config_on_free(cfg, relay_generic_unload);
	if (cfg->generic_maps == NULL)
		return true;
	char why[400], where[300];
	const char *origin = config_key_origin(cfg, "generic_maps", where, sizeof(where));
	cfg->generic_table = table_open(cfg->generic_maps, why, sizeof(why));
	if (cfg->generic_table == NULL) {
		snprintf(err, errlen, "%s: generic_maps: %s", origin, why);
		return false;
	}
	if (!table_is_memory(cfg->generic_table) || strncmp(cfg->generic_maps, "fail:", 5) == 0) {
		snprintf(
			err, errlen,
			"%s: generic_maps: %s: only tables answered from memory (texthash:, hash:, "
			"btree:, inline:, static:) can be used: header fields are rewritten as "
			"they stream through, one lookup per address with no waiting",
			origin, cfg->generic_maps);
		return false;
	}
	struct relay_generic_check c = {err, errlen, origin, cfg->generic_maps};
	return table_each_value(cfg->generic_table, relay_generic_check_value, &c);
}

/* ---- mapping ---- */

/* internal (Postfix internal form) mapped: true with the new address in
 * internal form appended to out. */
static bool relay_generic_map_cfg(const struct config *cfg, const char *internal, struct buf *out)
{
	const char *delims = cfg->recipient_delimiter != NULL ? cfg->recipient_delimiter : "";
	struct buf ext = BUF_INIT;
	addrhdr_quote_local(internal, &ext);
	buf_append(&ext, "", 1);
	const char *addr = (const char *)buf_data(&ext);
	char keys[4 * (SMTP_PATH_MAX + 2) * 2], full[2 * SMTP_PATH_MAX + 2];
	size_t local = 0, cut = 0;
	int n = -1;
	if (addrkey_internal(addr, delims, full, sizeof(full), &local, &cut) == 0)
		n = addrkey_keys(addr, delims, keys, sizeof(keys));
	bool found = false;
	const char *k = keys;
	for (int i = 0; i < n && !found; i++, k += strlen(k) + 1) {
		const char *v;
		if (table_lookup_sync(cfg->generic_table, k, &v) != TABLE_OK ||
		    relay_generic_value_error(v) != NULL)
			continue;
		found = true;
		if (v[0] != '@') {
			char in[2 * SMTP_PATH_MAX + 2];
			size_t l, c;
			if (addrkey_internal(v, "", in, sizeof(in), &l, &c) == 0)
				buf_append_str(out, in);
			else
				found = false;
			continue;
		}
		/* @otherdomain: the local part stays, without an extension
		   only user@domain (the cut key) matched */
		bool cut_key = cut > 0 && k[0] != '@' && strlen(k) < strlen(full) &&
			       strncasecmp(k, full, cut) == 0 && k[cut] == '@';
		buf_append(out, full, cut_key ? cut : local);
		buf_append_str(out, v);
	}
	buf_free(&ext);
	return found;
}

bool relay_generic_addr(const struct config *cfg, const char *addr, char *out, size_t outsz)
{
	if (cfg->generic_table == NULL || addr[0] == '\0')
		return false;
	char in[2 * SMTP_PATH_MAX + 2];
	size_t local, cut;
	if (addrkey_internal(addr, "", in, sizeof(in), &local, &cut) != 0)
		return false;
	struct buf to = BUF_INIT, ext = BUF_INIT;
	bool ok = relay_generic_map_cfg(cfg, in, &to);
	if (ok) {
		buf_append(&to, "", 1);
		addrhdr_quote_local((const char *)buf_data(&to), &ext);
		ok = buf_len(&ext) < outsz;
		if (ok) {
			memcpy(out, buf_data(&ext), buf_len(&ext));
			out[buf_len(&ext)] = '\0';
		}
	}
	buf_free(&to);
	buf_free(&ext);
	return ok;
}

/* The header section's mapping: stops mapping once the replacements alone
 * would pass the limit (a table can turn each 3-octet address of a field
 * into 254 octets: memory stays bounded by what would be refused anyway). */
struct relay_generic_hdr {
	const struct config *cfg;
	size_t added, limit;
	bool too_big;
};

static bool relay_generic_map(void *ctx, const char *internal, struct buf *out)
{
	struct relay_generic_hdr *g = ctx;
	if (g->too_big)
		return false;
	size_t before = buf_len(out);
	if (!relay_generic_map_cfg(g->cfg, internal, out))
		return false;
	g->added += buf_len(out) - before;
	g->too_big = g->added > g->limit;
	return true;
}

/* A rebuilt field joins what the client folded (an address or quoted
 * string over several lines): a line past RFC 5322's 998 octets is refused
 * like a section past the limit, never cut or sent. */
static bool relay_generic_long_line(const uint8_t *p, size_t n)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		col = p[i] == '\n' ? 0 : col + 1;
		if (col > RELAY_GENERIC_LINE_MAX + 1) /* the CR counted */
			return true;
	}
	return false;
}

enum relay_generic_result relay_generic_header(const struct config *cfg, const uint8_t *h,
					       size_t len, size_t limit, struct buf *out)
{
	if (cfg->generic_table == NULL)
		return RELAY_GENERIC_SAME;
	struct relay_generic_hdr g = {.cfg = cfg, .limit = limit};
	const char *p = (const char *)h, *end = p + len;
	struct buf o = BUF_INIT;
	bool did = false;
	while (p < end && !g.too_big) {
		/* one field: up to a CRLF not followed by WSP */
		const char *f = p, *q = p;
		for (;;) {
			const char *lf = memchr(q, '\n', (size_t)(end - q));
			q = lf ? lf + 1 : end;
			if (q >= end || (*q != ' ' && *q != '\t'))
				break;
		}
		size_t flen = (size_t)(q - f);
		size_t body = flen;
		if (body >= 2 && f[body - 2] == '\r' && f[body - 1] == '\n')
			body -= 2;
		const char *colon = memchr(f, ':', body);
		bool rewritten = false;
		size_t at = buf_len(&o);
		if (colon != NULL && addrhdr_is_address_field(f, (size_t)(colon - f)))
			rewritten = addrhdr_rewrite(f, body, relay_generic_map, &g, &o);
		if (rewritten && relay_generic_long_line(buf_data(&o) + at, buf_len(&o) - at))
			g.too_big = true;
		if (!rewritten)
			buf_append(&o, f, flen);
		did |= rewritten;
		g.too_big |= buf_len(&o) > limit;
		p = q;
	}
	enum relay_generic_result r = g.too_big ? RELAY_GENERIC_TOO_BIG
				      : did     ? RELAY_GENERIC_REWRITTEN
						: RELAY_GENERIC_SAME;
	if (r == RELAY_GENERIC_REWRITTEN)
		buf_append(out, buf_data(&o), buf_len(&o));
	buf_free(&o);
	return r;
}
