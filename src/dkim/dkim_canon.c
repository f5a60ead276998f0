/* dkim_canon: RFC 6376 §3.4 canonicalisation of header fields and body.
 * Contracts in dkim.h. */
#include "config.h"
#include "dkim/dkim.h"

#include <string.h>

static bool dkim_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

bool dkim_body_init(struct dkim_body *b, enum dkim_canon c)
{
	memset(b, 0, sizeof(*b));
	b->canon = c;
	return gnutls_hash_init(&b->hash, GNUTLS_DIG_SHA256) == 0;
}

static void dkim_body_flush(struct dkim_body *b)
{
	if (b->n > 0)
		gnutls_hash(b->hash, b->out, b->n);
	b->hashed += b->n;
	b->n = 0;
}

static void dkim_body_put(struct dkim_body *b, const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (b->n == sizeof(b->out))
			dkim_body_flush(b);
		size_t k = sizeof(b->out) - b->n;
		if (k > n)
			k = n;
		memcpy(b->out + b->n, p, k);
		b->n += k;
		p += k;
		n -= k;
	}
	b->any = true;
}

/* Content is about to be placed on the current line: the empty lines held
 * back were not trailing after all, and a held WSP run becomes one SP. */
static void dkim_body_content(struct dkim_body *b)
{
	for (; b->blank > 0; b->blank--)
		dkim_body_put(b, (const uint8_t *)"\r\n", 2);
	if (b->wsp) {
		dkim_body_put(b, (const uint8_t *)" ", 1);
		b->wsp = false;
	}
	b->line = true;
}

/* The longest prefix of p[0..n) that canonicalisation leaves as it is,
 * with nothing held back before it: content, a single SP between content
 * (relaxed), the CRLF that ends a line with content. It stops before
 * anything that must be looked at octet by octet (a CR not followed by LF
 * in p, an empty line, a TAB or a WSP run in relaxed). *line: whether the
 * current line has content, before and after. */
static size_t dkim_body_span(bool relaxed, const uint8_t *p, size_t n, bool *line)
{
	/* 0: an octet canonicalisation keeps; 1: SP (relaxed: look at the
	   next one); 2: CR or (relaxed) TAB */
	static const uint8_t simple_cls[256] = {['\r'] = 2};
	static const uint8_t relaxed_cls[256] = {['\r'] = 2, ['\t'] = 2, [' '] = 1};
	const uint8_t *cls = relaxed ? relaxed_cls : simple_cls;
	bool ln = *line;
	size_t j = 0;
	while (j < n) {
		size_t j0 = j;
		while (j < n && cls[p[j]] == 0)
			j++;
		if (j > j0)
			ln = true;
		if (j == n)
			break;
		if (p[j] == '\r') {
			if (!ln || j + 1 >= n || p[j + 1] != '\n')
				break;
			j += 2;
			ln = false;
			continue;
		}
		/* relaxed: one SP with content after it stays */
		if (p[j] != ' ' || j + 1 >= n || cls[p[j + 1]] != 0)
			break;
		j += 2;
		ln = true;
	}
	*line = ln;
	return j;
}

void dkim_body_update(struct dkim_body *b, const uint8_t *p, size_t n)
{
	bool relaxed = b->canon == DKIM_RELAXED;
	for (size_t i = 0; i < n; i++) {
		if (!b->cr && !b->wsp && b->blank == 0) {
			bool line = b->line;
			size_t k = dkim_body_span(relaxed, p + i, n - i, &line);
			if (k > 0) {
				if (k >= 1024) { /* hashed where it is */
					dkim_body_flush(b);
					gnutls_hash(b->hash, p + i, k);
					b->hashed += k;
					b->any = true;
				} else {
					dkim_body_put(b, p + i, k);
				}
				b->line = line;
				i += k;
				if (i == n)
					break;
			}
		}
		uint8_t c = p[i];
		if (b->cr) {
			b->cr = false;
			if (c == '\n') {
				/* A line ends; trailing WSP (relaxed) is dropped. */
				b->wsp = false;
				if (b->line)
					dkim_body_put(b, (const uint8_t *)"\r\n", 2);
				else
					b->blank++;
				b->line = false;
				continue;
			}
			dkim_body_content(b); /* the CR was a bare one: content */
			dkim_body_put(b, (const uint8_t *)"\r", 1);
		}
		if (c == '\r') {
			b->cr = true;
			continue;
		}
		if (relaxed && dkim_wsp(c)) {
			b->wsp = true;
			continue;
		}
		/* A run of plain octets goes in at once. */
		size_t j = i + 1;
		while (j < n && p[j] != '\r' && !(relaxed && dkim_wsp(p[j])))
			j++;
		dkim_body_content(b);
		dkim_body_put(b, p + i, j - i);
		i = j - 1;
	}
}

void dkim_body_final(struct dkim_body *b, uint8_t digest[DKIM_HASH_LEN])
{
	if (b->cr) {
		b->cr = false;
		dkim_body_content(b);
		dkim_body_put(b, (const uint8_t *)"\r", 1);
	}
	/* A last line without CRLF gets one; trailing empty lines and WSP go. */
	b->wsp = false;
	if (b->line)
		dkim_body_put(b, (const uint8_t *)"\r\n", 2);
	else if (b->canon == DKIM_SIMPLE && !b->any)
		dkim_body_put(b, (const uint8_t *)"\r\n", 2); /* §3.4.3: an empty body is CRLF */
	dkim_body_flush(b);
	gnutls_hash_deinit(b->hash, digest);
	b->hash = NULL;
}

void dkim_body_free(struct dkim_body *b)
{
	if (b->hash != NULL)
		gnutls_hash_deinit(b->hash, NULL);
	b->hash = NULL;
}

void dkim_canon_header(enum dkim_canon c, const uint8_t *f, size_t n, bool crlf, struct buf *out)
{
	/* The field's own line end is not part of it here. */
	if (n >= 2 && f[n - 2] == '\r' && f[n - 1] == '\n')
		n -= 2;
	if (c == DKIM_SIMPLE) {
		buf_append(out, f, n);
		if (crlf)
			buf_append(out, "\r\n", 2);
		return;
	}
	const uint8_t *colon = memchr(f, ':', n);
	size_t nl = colon != NULL ? (size_t)(colon - f) : n;
	size_t ne = nl;
	while (ne > 0 && (dkim_wsp(f[ne - 1]) || f[ne - 1] == '\r' || f[ne - 1] == '\n'))
		ne--;
	uint8_t *w = buf_reserve(out, ne + 1);
	for (size_t i = 0; i < ne; i++)
		w[i] = f[i] >= 'A' && f[i] <= 'Z' ? (uint8_t)(f[i] + 32) : f[i];
	w[ne] = ':';
	buf_commit(out, ne + 1);
	/* The value: CRLFs removed (unfolding), WSP runs to one SP, none at the
	   start or the end. */
	bool wsp = false, any = false;
	size_t i = colon != NULL ? nl + 1 : n;
	w = buf_reserve(out, n - i + 2);
	size_t k = 0;
	for (; i < n; i++) {
		uint8_t ch = f[i];
		if (ch == '\r' && i + 1 < n && f[i + 1] == '\n') {
			i++;
			continue;
		}
		if (dkim_wsp(ch)) {
			wsp = true;
			continue;
		}
		if (wsp && any)
			w[k++] = ' ';
		wsp = false;
		any = true;
		w[k++] = ch;
	}
	if (crlf) {
		w[k++] = '\r';
		w[k++] = '\n';
	}
	buf_commit(out, k);
}

size_t dkim_fields(const uint8_t *h, size_t n, struct dkim_field *f, size_t max)
{
	size_t nf = 0, i = 0;
	bool open = false; /* f[nf-1] takes continuation lines */
	while (i < n) {
		const uint8_t *e = NULL;
		for (size_t j = i; j + 1 < n; j++) {
			if (h[j] == '\r' && h[j + 1] == '\n') {
				e = h + j;
				break;
			}
		}
		size_t end = e != NULL ? (size_t)(e - h) + 2 : n;
		if (end - i == 2 && e != NULL)
			break; /* the empty line */
		if (dkim_wsp(h[i])) {
			if (open)
				f[nf - 1].len = end - f[nf - 1].off;
			i = end;
			continue;
		}
		const uint8_t *colon = memchr(h + i, ':', end - i);
		open = false;
		if (colon != NULL) {
			if (nf == max)
				break;
			size_t nl = (size_t)(colon - (h + i));
			while (nl > 0 && dkim_wsp(h[i + nl - 1]))
				nl--;
			f[nf++] = (struct dkim_field){.off = i, .len = end - i, .name_len = nl};
			open = true;
		}
		i = end;
	}
	return nf;
}
