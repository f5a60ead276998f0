/* dkim_conf: the signing configuration and the choice of signatures.
 * Contracts in dkim_conf.h. */
#include "config.h"
#include "dkim/dkim_conf.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 6376 §5.4.1's list, less what changes in transit (Received:,
 * Return-Path:), with From: twice: the second, absent, From: is signed as
 * empty, so a From: added later breaks the signature (§8.15). */
const char dkim_conf_default_headers[] =
	"from, from, reply-to, sender, to, cc, subject, date, message-id, in-reply-to, "
	"references, mime-version, content-*, list-id, list-unsubscribe, list-unsubscribe-post";

static bool dkim_conf_canon(const char *s, struct dkim_conf *c)
{
	char h[16] = "", b[16] = "";
	const char *slash = strchr(s, '/');
	size_t hl = slash ? (size_t)(slash - s) : strlen(s);
	if (hl >= sizeof(h) || (slash && strlen(slash + 1) >= sizeof(b)))
		return false;
	memcpy(h, s, hl);
	/* RFC 6376 §3.5: "c=relaxed" means relaxed/simple. */
	snprintf(b, sizeof(b), "%s", slash ? slash + 1 : "simple");
	if (strcmp(h, "relaxed") != 0 && strcmp(h, "simple") != 0)
		return false;
	if (strcmp(b, "relaxed") != 0 && strcmp(b, "simple") != 0)
		return false;
	c->hcanon = h[0] == 'r' ? DKIM_RELAXED : DKIM_SIMPLE;
	c->bcanon = b[0] == 'r' ? DKIM_RELAXED : DKIM_SIMPLE;
	return true;
}

static bool dkim_conf_headers(struct dkim_conf *c, const char *list, const char *never, char *err,
			      size_t errlen)
{
	bool from = false;
	for (const char *p = list; *p != '\0';) {
		while (*p == ',' || *p == ':' || isspace((unsigned char)*p))
			p++;
		size_t n = 0;
		while (p[n] != '\0' && p[n] != ',' && p[n] != ':' && !isspace((unsigned char)p[n]))
			n++;
		if (n == 0)
			break;
		for (size_t i = 0; i < n; i++) {
			bool star = p[i] == '*' && i == n - 1 && n > 1;
			if (!star && !(isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '_' ||
				       p[i] == '.')) {
				snprintf(err, errlen, "dkim_headers: \"%.*s\" is not a field name",
					 (int)n, p);
				return false;
			}
		}
		if (n > DKIM_NAME_MAX || c->nheaders >= DKIM_H_MAX) {
			snprintf(err, errlen,
				 "dkim_headers: at most %d names of at most %d characters",
				 DKIM_H_MAX, DKIM_NAME_MAX);
			return false;
		}
		char *name = xstrndup(p, n);
		for (size_t i = 0; i < n; i++)
			name[i] = (char)tolower((unsigned char)name[i]);
		p += n;
		if (strcmp(name, "dkim-signature") == 0 ||
		    (never != NULL && strcasecmp(name, never) == 0)) {
			/* relay_auth_header is rewritten by the relay after signing */
			snprintf(err, errlen, "dkim_headers: %s cannot be signed", name);
			free(name);
			return false;
		}
		from = from || strcmp(name, "from") == 0;
		c->headers = xrealloc(c->headers, (c->nheaders + 1) * sizeof(char *));
		c->headers[c->nheaders++] = name;
	}
	if (!from) {
		snprintf(err, errlen, "dkim_headers: must list from (RFC 6376 §5.4)");
		return false;
	}
	return true;
}

static bool dkim_conf_table(const char *what, const char *spec, bool key, struct dkim_conf *c,
			    char *err, size_t errlen)
{
	bool refile;
	const char *path;
	char why[512];
	if (!dkim_table_spec(spec, &refile, &path, why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s", what, why);
		return false;
	}
	if (key && refile) {
		snprintf(err, errlen, "%s: a KeyTable is not a refile:", what);
		return false;
	}
	char *text;
	if (!dkim_table_read(path, &text, why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s", what, why);
		return false;
	}
	bool ok = key ? dkim_keytable_parse(&c->kt, text, why, sizeof(why))
		      : dkim_sigtable_parse(&c->st, text, refile, why, sizeof(why));
	free(text);
	if (!ok)
		snprintf(err, errlen, "%s: %s:%s", what, path, why);
	return ok;
}

struct dkim_conf *dkim_conf_new(const struct dkim_settings *s, char *err, size_t errlen)
{
	struct dkim_conf *c = xcalloc(1, sizeof(*c));
	c->expire_s = s->expire_s;
	if (!dkim_conf_canon(s->canon != NULL ? s->canon : "relaxed/relaxed", c)) {
		snprintf(err, errlen,
			 "dkim_canonicalization: want relaxed or simple, or two of them "
			 "with a / (header/body)");
		goto fail;
	}
	if (!dkim_conf_headers(c, s->headers != NULL ? s->headers : dkim_conf_default_headers,
			       s->never_sign, err, errlen))
		goto fail;
	if (!dkim_conf_table("dkim_key_table", s->key_table, true, c, err, errlen) ||
	    !dkim_conf_table("dkim_signing_table", s->signing_table, false, c, err, errlen))
		goto fail;
	for (size_t i = 0; i < c->st.n; i++) {
		if (strcmp(c->st.e[i].name, "%") != 0 &&
		    dkim_keytable_find(&c->kt, c->st.e[i].name) == NULL) {
			snprintf(err, errlen,
				 "dkim_signing_table: %s: no key \"%s\" in the KeyTable",
				 c->st.e[i].key, c->st.e[i].name);
			goto fail;
		}
	}
	size_t big = 0;
	for (size_t i = 0; i < c->kt.n; i++) {
		char why[768];
		if (!dkim_key_load(&c->kt.keys[i], why, sizeof(why))) {
			snprintf(err, errlen, "dkim_key_table: key %s: %s", c->kt.keys[i].name,
				 why);
			goto fail;
		}
		size_t m = dkim_sign_max(&c->kt.keys[i], 255, 320);
		big = m > big ? m : big;
	}
	c->added_max = big * (c->st.n < DKIM_SIGS_MAX ? c->st.n : DKIM_SIGS_MAX);
	return c;
fail:
	dkim_conf_free(&c);
	return NULL;
}

void dkim_conf_free(struct dkim_conf **cp)
{
	struct dkim_conf *c = *cp;
	if (c == NULL)
		return;
	dkim_keytable_clear(&c->kt);
	dkim_sigtable_clear(&c->st);
	for (size_t i = 0; i < c->nheaders; i++)
		free(c->headers[i]);
	free(c->headers);
	free(c);
	*cp = NULL;
}

/* "%" becomes the From: domain. */
static void dkim_conf_subst(const char *s, const char *domain, char *out, size_t outsz)
{
	size_t k = 0;
	for (; *s != '\0' && k + 1 < outsz; s++) {
		if (*s == '%') {
			size_t n = strlen(domain);
			if (k + n + 1 > outsz)
				break;
			memcpy(out + k, domain, n);
			k += n;
		} else {
			out[k++] = *s;
		}
	}
	out[k] = '\0';
}

static bool dkim_conf_dns_ok(const char *d)
{
	size_t n = strlen(d);
	if (n == 0 || n > 253 || d[0] == '.' || d[n - 1] == '.' || strstr(d, "..") != NULL)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)d[i]) || d[i] == '-' || d[i] == '.' || d[i] == '_'))
			return false;
	return true;
}

/* RFC 6376 §3.5: i='s domain is d= or one of its subdomains. */
static bool dkim_conf_identity_ok(const char *i, const char *d)
{
	const char *at = strrchr(i, '@');
	if (at == NULL)
		return false;
	for (const char *p = i; p < at; p++)
		if ((unsigned char)*p <= ' ' || *p == ';' || (unsigned char)*p >= 127)
			return false;
	const char *id = at + 1;
	size_t il = strlen(id), dl = strlen(d);
	if (!dkim_conf_dns_ok(id))
		return false;
	return strcasecmp(id, d) == 0 ||
	       (il > dl && id[il - dl - 1] == '.' && strcasecmp(id + il - dl, d) == 0);
}

size_t dkim_conf_choose(const struct dkim_conf *c, const char *from, struct dkim_choice *out,
			size_t max)
{
	const char *at = strrchr(from, '@');
	if (at == NULL || strlen(from) > 512)
		return 0;
	char fromdom[256];
	snprintf(fromdom, sizeof(fromdom), "%s", at + 1);
	for (char *p = fromdom; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	const struct dkim_signing *m[DKIM_SIGS_MAX * 4];
	size_t nm = dkim_sigtable_match(&c->st, from, m, sizeof(m) / sizeof(m[0]));
	size_t n = 0;
	for (size_t i = 0; i < nm && n < max; i++) {
		const struct dkim_key *k = dkim_keytable_find(
			&c->kt, strcmp(m[i]->name, "%") == 0 ? fromdom : m[i]->name);
		if (k == NULL)
			continue; /* "%": the From: domain has no key of that name */
		struct dkim_choice ch = {.key = k};
		dkim_conf_subst(k->domain, fromdom, ch.domain, sizeof(ch.domain));
		if (!dkim_conf_dns_ok(ch.domain))
			continue;
		if (m[i]->signer != NULL) {
			dkim_conf_subst(m[i]->signer, fromdom, ch.identity, sizeof(ch.identity));
			if (!dkim_conf_identity_ok(ch.identity, ch.domain))
				ch.identity[0] = '\0'; /* as OpenDKIM: left out */
		}
		bool dup = false;
		for (size_t j = 0; j < n && !dup; j++)
			dup = out[j].key == k && strcmp(out[j].domain, ch.domain) == 0;
		if (!dup)
			out[n++] = ch;
	}
	return n;
}

bool dkim_conf_sign(const struct dkim_conf *c, const struct dkim_choice *ch, size_t nch,
		    const uint8_t *h, size_t n, const uint8_t *bh, time_t now, struct buf *out,
		    char *err, size_t errlen)
{
	for (size_t i = 0; i < nch; i++) {
		struct dkim_sign_args a = {
			.key = ch[i].key,
			.domain = ch[i].domain,
			.identity = ch[i].identity[0] ? ch[i].identity : NULL,
			.hcanon = c->hcanon,
			.bcanon = c->bcanon,
			.headers = (const char *const *)c->headers,
			.nheaders = c->nheaders,
			.now = now,
			.expire_s = c->expire_s,
			.bh = bh,
		};
		if (!dkim_sign(&a, h, n, out, err, errlen))
			return false;
	}
	return true;
}

void dkim_conf_describe(const struct dkim_conf *c, FILE *out)
{
	for (size_t i = 0; i < c->kt.n; i++) {
		const struct dkim_key *k = &c->kt.keys[i];
		const char *d = strcmp(k->domain, "%") == 0 ? "DOMAIN" : k->domain;
		fprintf(out, "dkim key %s: %s, selector %s, domain %s, %s-sha256, %u bits\n",
			k->name, k->path, k->selector, d, dkim_alg_name(k->alg), k->bits);
		struct buf b = BUF_INIT;
		dkim_key_txt(k, d, &b);
		fprintf(out, "  %.*s\n", (int)buf_len(&b), (const char *)buf_data(&b));
		buf_free(&b);
	}
}
