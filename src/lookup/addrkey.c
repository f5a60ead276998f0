/* lookup/addrkey: the lookup keys for one mail address, in Postfix
 * mail_addr_find() order (MA_FIND_DEFAULT), shared by the sender ownership
 * check (policy/sender_login.h) and the relay's sender_relay_maps and
 * relay_password_maps (relay/relay.h). */
#include "config.h"
#include "lookup/addrkey.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"

static bool addrkey_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80)
		return true;
	return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != 0;
}

/* buf_data() of an empty buf is NULL + 0; keep that arithmetic away. */
static const char *addrkey_bufstr(const struct buf *b)
{
	return buf_len(b) ? (const char *)buf_data(b) : "";
}

/* Appends local (internal form) in RFC 5321 form: as is when it is a
 * dot-atom, else quoted with " and \ escaped (Postfix quote_822_local). */
static void addrkey_quote_local(struct buf *out, const char *local, size_t n)
{
	bool need = n == 0 || local[0] == '.' || local[n - 1] == '.';
	for (size_t i = 0; i < n && !need; i++) {
		unsigned char c = (unsigned char)local[i];
		if (c == '.') {
			if (i + 1 < n && local[i + 1] == '.')
				need = true;
		} else if (!addrkey_atext(c)) {
			need = true;
		}
	}
	if (!need) {
		buf_append(out, local, n);
		return;
	}
	buf_append(out, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (local[i] == '"' || local[i] == '\\')
			buf_append(out, "\\", 1);
		buf_append(out, local + i, 1);
	}
	buf_append(out, "\"", 1);
}

/* Postfix split_addr(): where to cut the localpart, or 0 for "don't". */
static size_t addrkey_split(const char *local, size_t n, const char *delims)
{
	if (*delims == 0)
		return 0;
	if ((n == 10 && strncasecmp(local, "postmaster", 10) == 0) ||
	    (n == 13 && strncasecmp(local, "mailer-daemon", 13) == 0) ||
	    (n == 13 && strncasecmp(local, "double-bounce", 13) == 0))
		return 0;
	if (strchr(delims, '-') != NULL) {
		/* owner_request_special = yes (Postfix default) */
		if (n >= 6 && strncasecmp(local, "owner-", 6) == 0)
			return 0;
		if (n > 8 && strncasecmp(local + n - 8, "-request", 8) == 0)
			return 0;
	}
	size_t cut = 0;
	while (cut < n && strchr(delims, local[cut]) == NULL)
		cut++;
	if (cut == 0 || cut == n)
		return 0;
	return cut;
}

static int addrkey_add_key(struct buf *keys, int *count, const char *k, size_t n)
{
	/* skip a key equal to one already listed (external == internal form) */
	const char *p = addrkey_bufstr(keys), *end = p + buf_len(keys);
	while (p < end) {
		size_t l = strlen(p);
		if (l == n && strncasecmp(p, k, n) == 0)
			return 0;
		p += l + 1;
	}
	if (n)
		buf_append(keys, k, n);
	buf_append(keys, "", 1);
	(*count)++;
	return 0;
}

/* Adds local@domain in its external (RFC 5321-quoted) form, then in its
 * internal form; k is scratch. */
static void addrkey_add_forms(struct buf *keys, int *count, struct buf *k, const char *local,
			      size_t n, const char *domain)
{
	for (int form = 0; form < 2; form++) {
		buf_reset(k);
		if (form == 0)
			addrkey_quote_local(k, local, n);
		else
			buf_append(k, local, n);
		if (domain) {
			buf_append(k, "@", 1);
			buf_append_str(k, domain);
		}
		addrkey_add_key(keys, count, addrkey_bufstr(k), buf_len(k));
	}
}

/* addr's localpart in internal (unquoted) form into internal; *domain_r
 * gets the domain (after the last '@' outside quotes), NULL if none. */
static void addrkey_parse(const char *addr, struct buf *internal, const char **domain_r)
{
	size_t len = strlen(addr);
	/* find the '@' that separates the domain: the last one outside quotes */
	const char *at = NULL;
	bool quoted = false;
	for (size_t i = 0; i < len; i++) {
		if (quoted && addr[i] == '\\' && i + 1 < len) {
			i++;
			continue;
		}
		if (addr[i] == '"')
			quoted = !quoted;
		else if (addr[i] == '@' && !quoted)
			at = addr + i;
	}
	size_t llen = at ? (size_t)(at - addr) : len;
	*domain_r = at ? at + 1 : NULL;
	quoted = false;
	for (size_t i = 0; i < llen; i++) {
		if (addr[i] == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted && addr[i] == '\\' && i + 1 < llen)
			i++;
		buf_append(internal, addr + i, 1);
	}
}

int addrkey_internal(const char *addr, const char *delimiters, char *out, size_t outsz,
		     size_t *local_r, size_t *cut_r)
{
	struct buf internal = BUF_INIT;
	const char *domain;
	addrkey_parse(addr, &internal, &domain);
	size_t ilen = buf_len(&internal);
	*local_r = ilen;
	*cut_r = addrkey_split(addrkey_bufstr(&internal), ilen, delimiters ? delimiters : "");
	if (domain != NULL) {
		buf_append(&internal, "@", 1);
		buf_append_str(&internal, domain);
	}
	int ret = 0;
	if (buf_len(&internal) >= outsz ||
	    memchr(addrkey_bufstr(&internal), '\0', buf_len(&internal)) != NULL) {
		ret = -1;
	} else {
		memcpy(out, addrkey_bufstr(&internal), buf_len(&internal));
		out[buf_len(&internal)] = '\0';
	}
	buf_free(&internal);
	return ret;
}

int addrkey_keys(const char *addr, const char *delimiters, char *keys_out, size_t keyssz)
{
	struct buf internal = BUF_INIT;
	const char *domain;
	addrkey_parse(addr, &internal, &domain);
	const char *ilocal = addrkey_bufstr(&internal);
	size_t ilen = buf_len(&internal);

	struct buf keys = BUF_INIT, k = BUF_INIT;
	int count = 0;
	/* 1. full address: external form, then internal form */
	addrkey_add_forms(&keys, &count, &k, ilocal, ilen, domain);
	/* 2. without the extension */
	size_t cut = addrkey_split(ilocal, ilen, delimiters);
	if (cut)
		addrkey_add_forms(&keys, &count, &k, ilocal, cut, domain);
	/* 4. @domain */
	if (domain && *domain) {
		buf_reset(&k);
		buf_append(&k, "@", 1);
		buf_append_str(&k, domain);
		addrkey_add_key(&keys, &count, addrkey_bufstr(&k), buf_len(&k));
	}
	int ret = count;
	if (buf_len(&keys) > keyssz)
		ret = -1;
	else
		memcpy(keys_out, addrkey_bufstr(&keys), buf_len(&keys));
	buf_free(&keys);
	buf_free(&k);
	buf_free(&internal);
	return ret;
}
