/* dkim_sign: the DKIM-Signature field (RFC 6376 §3.5, §3.7, §5). Contracts
 * in dkim.h. */
#include "config.h"
#include "dkim/dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base64.h"

#define DKIM_COLUMNS 78

/* Writes the field folded: a token goes on the current line when it fits,
 * else on a new one that starts with a TAB. */
struct dkim_fold {
	struct buf *out;
	size_t col;
};

static void dkim_fold_add(struct dkim_fold *f, const char *tok, size_t n, bool space)
{
	if (f->col + (space ? 1 : 0) + n > DKIM_COLUMNS && f->col > 1) {
		buf_append(f->out, "\r\n\t", 3);
		f->col = 1;
	} else if (space) {
		buf_append(f->out, " ", 1);
		f->col++;
	}
	buf_append(f->out, tok, n);
	f->col += n;
}

/* "tag=value;" as one token. */
static void dkim_fold_tag(struct dkim_fold *f, const char *tag, const char *v)
{
	char tok[512];
	int n = snprintf(tok, sizeof(tok), "%s=%s;", tag, v);
	if (n < 0 || (size_t)n >= sizeof(tok))
		n = (int)sizeof(tok) - 1;
	dkim_fold_add(f, tok, (size_t)n, true);
}

static bool dkim_name_eq(const uint8_t *h, const struct dkim_field *fl, const char *name, size_t nl)
{
	return fl->name_len == nl && strncasecmp((const char *)h + fl->off, name, nl) == 0;
}

/* A field name fit for h= (no ';', ':' or WSP that would break the tag). */
static bool dkim_name_ok(const uint8_t *p, size_t n)
{
	if (n == 0 || n > DKIM_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '_' || p[i] == '.'))
			return false;
	return true;
}

struct dkim_hlist {
	char name[DKIM_H_MAX][DKIM_NAME_MAX + 1];
	size_t n;
};

static void dkim_hlist_add(struct dkim_hlist *l, const uint8_t *name, size_t n)
{
	if (l->n == DKIM_H_MAX || !dkim_name_ok(name, n))
		return;
	for (size_t i = 0; i < n; i++)
		l->name[l->n][i] =
			name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] + 32) : (char)name[i];
	l->name[l->n][n] = '\0';
	l->n++;
}

/* The h= list for this header section (dkim.h: listed k times = present
 * ones and k-1 more; "prefix*": each present field once). */
static void dkim_hlist_build(const struct dkim_sign_args *a, const uint8_t *h,
			     const struct dkim_field *fl, size_t nf, struct dkim_hlist *l)
{
	for (size_t i = 0; i < a->nheaders; i++) {
		const char *nm = a->headers[i];
		size_t nl = strlen(nm);
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			seen = seen || strcasecmp(a->headers[j], nm) == 0;
		if (seen)
			continue; /* counted with its first listing */
		if (nl > 0 && nm[nl - 1] == '*') {
			/* Each field name the prefix matches, every instance; a
			   name already in the list is not added again. At most
			   DKIM_H_MAX names are ever added, so this stays linear
			   in the number of fields. */
			for (size_t f = 0; f < nf && l->n < DKIM_H_MAX; f++) {
				const char *fn = (const char *)h + fl[f].off;
				size_t fnl = fl[f].name_len;
				if (fnl < nl - 1 || strncasecmp(fn, nm, nl - 1) != 0 ||
				    !dkim_name_ok((const uint8_t *)fn, fnl))
					continue;
				bool dup = false;
				for (size_t g = 0; g < l->n && !dup; g++)
					dup = strlen(l->name[g]) == fnl &&
					      strncasecmp(l->name[g], fn, fnl) == 0;
				for (size_t g = f; g < nf && !dup; g++)
					if (fl[g].name_len == fnl &&
					    strncasecmp((const char *)h + fl[g].off, fn, fnl) == 0)
						dkim_hlist_add(l, (const uint8_t *)fn, fnl);
			}
			continue;
		}
		size_t listed = 0, present = 0;
		for (size_t j = i; j < a->nheaders; j++)
			listed += strcasecmp(a->headers[j], nm) == 0;
		for (size_t f = 0; f < nf; f++)
			present += dkim_name_eq(h, &fl[f], nm, nl);
		for (size_t k = 0; k < present + listed - 1; k++)
			dkim_hlist_add(l, (const uint8_t *)nm, nl);
	}
}

static const char *dkim_canon_name(enum dkim_canon c)
{
	return c == DKIM_RELAXED ? "relaxed" : "simple";
}

bool dkim_sign(const struct dkim_sign_args *a, const uint8_t *h, size_t n, struct buf *out,
	       char *err, size_t errlen)
{
	size_t maxf = n / 2 + 2;
	struct dkim_field *fl = xcalloc(maxf, sizeof(*fl));
	size_t nf = dkim_fields(h, n, fl, maxf);
	struct dkim_hlist *l = xcalloc(1, sizeof(*l));
	dkim_hlist_build(a, h, fl, nf, l);

	/* The field, b= empty. */
	struct buf sig = BUF_INIT;
	struct dkim_fold f = {.out = &sig, .col = 0};
	dkim_fold_add(&f, "DKIM-Signature: v=1;", 20, false);
	dkim_fold_tag(&f, "a",
		      a->key->alg == DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256");
	char c[32];
	snprintf(c, sizeof(c), "%s/%s", dkim_canon_name(a->hcanon), dkim_canon_name(a->bcanon));
	dkim_fold_tag(&f, "c", c);
	dkim_fold_tag(&f, "d", a->domain);
	dkim_fold_tag(&f, "s", a->key->selector);
	if (a->identity != NULL)
		dkim_fold_tag(&f, "i", a->identity);
	char t[32];
	snprintf(t, sizeof(t), "%lld", (long long)a->now);
	dkim_fold_tag(&f, "t", t);
	if (a->expire_s > 0) {
		snprintf(t, sizeof(t), "%llu",
			 (unsigned long long)a->now + (unsigned long long)a->expire_s);
		dkim_fold_tag(&f, "x", t);
	}
	for (size_t i = 0; i < l->n; i++) {
		char tok[DKIM_NAME_MAX + 4];
		int k = snprintf(tok, sizeof(tok), "%s%s%s", i == 0 ? "h=" : "", l->name[i],
				 i + 1 < l->n ? ":" : ";");
		dkim_fold_add(&f, tok, (size_t)k, i == 0);
	}
	struct buf bh = BUF_INIT;
	base64_encode(&bh, a->bh, DKIM_HASH_LEN);
	buf_append(&bh, "", 1);
	dkim_fold_tag(&f, "bh", (const char *)buf_data(&bh));
	buf_free(&bh);
	dkim_fold_add(&f, "b=", 2, true);

	/* RFC 6376 §3.7: the signed fields, bottom-up per name, then this
	   field without its b= value and without a final CRLF. */
	struct buf in = BUF_INIT;
	bool *used = xcalloc(nf + 1, sizeof(bool));
	for (size_t i = 0; i < l->n; i++) {
		size_t nl = strlen(l->name[i]);
		for (size_t j = nf; j-- > 0;) {
			if (!used[j] && dkim_name_eq(h, &fl[j], l->name[i], nl)) {
				used[j] = true;
				dkim_canon_header(a->hcanon, h + fl[j].off, fl[j].len, true, &in);
				break;
			}
		}
	}
	dkim_canon_header(a->hcanon, buf_data(&sig), buf_len(&sig), false, &in);
	free(used);
	free(fl);
	free(l);

	gnutls_datum_t s = {NULL, 0};
	int r;
	if (a->key->alg == DKIM_ED25519_SHA256) {
		/* RFC 8463 §3: PureEdDSA over the SHA-256 of the input. */
		uint8_t d[DKIM_HASH_LEN];
		r = gnutls_hash_fast(GNUTLS_DIG_SHA256, buf_data(&in), buf_len(&in), d);
		gnutls_datum_t dd = {.data = d, .size = sizeof(d)};
		if (r == 0)
			r = gnutls_privkey_sign_data2(a->key->priv, GNUTLS_SIGN_EDDSA_ED25519, 0,
						      &dd, &s);
	} else {
		gnutls_datum_t dd = {.data = buf_data(&in), .size = (unsigned)buf_len(&in)};
		r = gnutls_privkey_sign_data2(a->key->priv, GNUTLS_SIGN_RSA_SHA256, 0, &dd, &s);
	}
	buf_free(&in);
	if (r < 0) {
		snprintf(err, errlen, "signing with %s failed: %s", a->key->path,
			 gnutls_strerror(r));
		buf_free(&sig);
		return false;
	}
	struct buf b = BUF_INIT;
	base64_encode(&b, s.data, s.size);
	gnutls_free(s.data);
	/* b= fills the line, then lines of 72. */
	const char *p = (const char *)buf_data(&b);
	size_t left = buf_len(&b);
	size_t room = f.col < DKIM_COLUMNS ? DKIM_COLUMNS - f.col : 0;
	for (;;) {
		size_t k = left < room ? left : room;
		buf_append(&sig, p, k);
		p += k;
		left -= k;
		if (left == 0)
			break;
		buf_append(&sig, "\r\n\t", 3);
		room = 72;
	}
	buf_append(&sig, "\r\n", 2);
	buf_free(&b);
	buf_append(out, buf_data(&sig), buf_len(&sig));
	buf_free(&sig);
	return true;
}

size_t dkim_sign_max(const struct dkim_key *k, size_t domain_len, size_t identity_len)
{
	size_t sig = k->alg == DKIM_ED25519_SHA256 ? 64 : (k->bits + 7) / 8;
	size_t b64 = (sig + 2) / 3 * 4;
	size_t text = 200 + domain_len + identity_len + strlen(k->selector) + b64 +
		      DKIM_H_MAX * (DKIM_NAME_MAX + 1);
	/* every line may fold: 3 octets a fold, a fold at least every 20 */
	return text + text / 20 * 3;
}
