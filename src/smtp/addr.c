/* smtp/addr: MAIL/RCPT argument parsing (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531;
 * RFC 1870; RFC 6152; RFC 3461; RFC 4954 §5). */
#include "config.h"
#include "smtp/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* ASCII helpers: nothing here may depend on the locale. */
static bool smtp_addr_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool smtp_addr_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int smtp_addr_upper(int c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

/* Case-insensitive comparison of s[0..n) with the NUL-terminated upper-case word. */
static bool smtp_addr_word(const char *s, size_t n, const char *word)
{
	size_t i = 0;
	for (; i < n && word[i] != '\0'; i++)
		if (smtp_addr_upper((unsigned char)s[i]) != word[i])
			return false;
	return i == n && word[i] == '\0';
}

/* atext (RFC 5322 §3.2.3), as used by Dot-string (RFC 5321 §4.1.2). */
static bool smtp_addr_atext(unsigned char c)
{
	return smtp_addr_alpha(c) || smtp_addr_digit(c) ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Well-formed UTF-8 (RFC 3629 §4: no overlongs, no surrogates, <= U+10FFFF);
 * RFC 6531 §3.3 admits only UTF8-non-ascii in addresses. */
static bool smtp_addr_utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t need;
		unsigned char lo = 0x80, hi = 0xbf;
		if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else
			return false;
		if (n - i - 1 < need)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		i += need + 1;
	}
	return true;
}

/* Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]
 * (RFC 5321 §4.1.2), U-labels allowed (RFC 6531 §3.3). The 63-octet label
 * limit (RFC 1035 §2.3.4) applies to ASCII labels only: the limit of a U-label
 * is on its A-label form, which we do not compute. */
static bool smtp_addr_hostname(const char *s, size_t n)
{
	if (n == 0)
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.') {
			unsigned char c = (unsigned char)s[i];
			if (!smtp_addr_alpha(c) && !smtp_addr_digit(c) && c != '-' && c < 0x80)
				return false;
			continue;
		}
		size_t len = i - start;
		if (len == 0 || s[start] == '-' || s[i - 1] == '-')
			return false;
		bool ascii = true;
		for (size_t k = start; k < i; k++)
			if ((unsigned char)s[k] >= 0x80)
				ascii = false;
		if (ascii && len > 63)
			return false;
		start = i + 1;
	}
	return true;
}

/* IPv4-address-literal = Snum 3("." Snum), Snum = 1*3DIGIT, 0..255. */
static bool smtp_addr_ipv4(const char *s, size_t n)
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
		unsigned v = 0, digits = 0;
		while (i < n && smtp_addr_digit((unsigned char)s[i]) && digits < 3) {
			v = v * 10 + (unsigned)(s[i] - '0');
			digits++;
			i++;
		}
		if (digits == 0 || v > 255)
			return false;
	}
	return i == n;
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General ) "]" (RFC 5321
 * §4.1.3). No General-address-literal tag is registered, so none is valid. */
static bool smtp_addr_literal(const char *s, size_t n)
{
	if (n < 3 || s[0] != '[' || s[n - 1] != ']')
		return false;
	s++;
	n -= 2;
	if (n > 5 && smtp_addr_word(s, 5, "IPV6:")) {
		char tmp[64];
		struct in6_addr a6;
		if (n - 5 >= sizeof(tmp) || memchr(s + 5, '\0', n - 5) != NULL)
			return false;
		memcpy(tmp, s + 5, n - 5);
		tmp[n - 5] = '\0';
		return inet_pton(AF_INET6, tmp, &a6) == 1;
	}
	return smtp_addr_ipv4(s, n);
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">" (RFC 5321 §4.1.2); also "<>" when
 * null_ok and "<postmaster>" when postmaster_ok. On success *pos is just
 * after the '>'. */
static enum smtp_addr_error smtp_addr_path(const char *s, size_t n, size_t *pos, bool null_ok,
					   bool postmaster_ok, struct smtp_path *path)
{
	size_t i = *pos;
	if (i >= n || s[i] != '<')
		return SMTP_ADDR_SYNTAX;
	size_t open = i++;
	if (i < n && s[i] == '>') {
		if (!null_ok)
			return SMTP_ADDR_SYNTAX;
		*pos = i + 1;
		return SMTP_ADDR_OK;
	}

	/* Source route: accepted and dropped (RFC 5321 §4.1.1.3, appendix C). */
	if (i < n && s[i] == '@') {
		for (;;) {
			size_t d = ++i;
			while (i < n && s[i] != ',' && s[i] != ':' && s[i] != '>')
				i++;
			if (i >= n || s[i] == '>' || !smtp_addr_hostname(s + d, i - d))
				return SMTP_ADDR_SYNTAX;
			if (s[i] == ':') {
				i++;
				break;
			}
			i++; /* ',' */
			if (i >= n || s[i] != '@')
				return SMTP_ADDR_SYNTAX;
		}
	}

	/* Local-part = Dot-string / Quoted-string (RFC 5321 §4.1.2). Dots are
	 * not checked for placement: Postfix accepts "a..b" and real addresses
	 * (old Japanese carriers) use it. */
	size_t mbox = i;
	if (i < n && s[i] == '"') {
		i++;
		for (;;) {
			if (i >= n)
				return SMTP_ADDR_SYNTAX;
			unsigned char c = (unsigned char)s[i];
			if (c == '"')
				break;
			if (c == '\\') {
				/* quoted-pairSMTP = "\" %d32-126 */
				if (i + 1 >= n || (unsigned char)s[i + 1] < 32 ||
				    (unsigned char)s[i + 1] > 126)
					return SMTP_ADDR_SYNTAX;
				i += 2;
				continue;
			}
			/* qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii */
			if (c < 32 || c == 127)
				return SMTP_ADDR_SYNTAX;
			i++;
		}
		i++; /* closing quote */
	} else {
		while (i < n && (smtp_addr_atext((unsigned char)s[i]) || s[i] == '.' ||
				 (unsigned char)s[i] >= 0x80))
			i++;
		if (i == mbox)
			return SMTP_ADDR_SYNTAX;
	}
	size_t local_len = i - mbox;
	if (local_len > SMTP_LOCAL_MAX)
		return SMTP_ADDR_TOO_LONG;

	size_t gt;
	if (i < n && s[i] == '>') {
		/* RFC 5321 §4.1.1.3: <postmaster> without a domain. */
		if (!postmaster_ok || !smtp_addr_word(s + mbox, local_len, "POSTMASTER"))
			return SMTP_ADDR_NO_DOMAIN;
		gt = i;
	} else {
		if (i >= n || s[i] != '@')
			return SMTP_ADDR_SYNTAX;
		size_t dom = ++i;
		const char *e = memchr(s + dom, '>', n - dom);
		if (e == NULL)
			return SMTP_ADDR_SYNTAX;
		gt = (size_t)(e - s);
		if (gt - dom > SMTP_DOMAIN_MAX || gt - open + 1 > SMTP_PATH_MAX)
			return SMTP_ADDR_TOO_LONG;
		bool ok = gt > dom && s[dom] == '[' ? smtp_addr_literal(s + dom, gt - dom)
						    : smtp_addr_hostname(s + dom, gt - dom);
		if (!ok)
			return SMTP_ADDR_BAD_DOMAIN;
	}
	if (gt - open + 1 > SMTP_PATH_MAX)
		return SMTP_ADDR_TOO_LONG;
	if (!smtp_addr_utf8_valid((const unsigned char *)s + mbox, gt - mbox))
		return SMTP_ADDR_SYNTAX;

	memcpy(path->addr, s + mbox, gt - mbox);
	path->addr[gt - mbox] = '\0';
	path->local_len = local_len;
	path->utf8 = false;
	for (size_t k = mbox; k < gt; k++)
		if ((unsigned char)s[k] >= 0x80)
			path->utf8 = true;
	*pos = gt + 1;
	return SMTP_ADDR_OK;
}

/* xtext (RFC 3461 §4): xchar = "!".."~" except "+" and "=", hexchar =
 * "+" 2 upper-case hex digits. */
static bool smtp_addr_xtext(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '+') {
			for (int k = 1; k <= 2; k++) {
				if (i + (size_t)k >= n)
					return false;
				unsigned char h = (unsigned char)s[i + (size_t)k];
				if (!smtp_addr_digit(h) && !(h >= 'A' && h <= 'F'))
					return false;
			}
			i += 2;
		} else if (c < 33 || c > 126 || c == '=')
			return false;
	}
	return true;
}

static void smtp_addr_set_bad(char bad_param_r[32], const char *kw, size_t n)
{
	if (bad_param_r == NULL)
		return;
	if (n > 31)
		n = 31;
	memcpy(bad_param_r, kw, n);
	bad_param_r[n] = '\0';
}

static void smtp_addr_copy(char *dst, const char *s, size_t n)
{
	memcpy(dst, s, n);
	dst[n] = '\0';
}

/* One esmtp-param, split: kw[0..klen), value[0..vlen) or value == NULL. */
struct smtp_addr_param {
	const char *kw;
	size_t klen;
	const char *val; /* NULL: no "=" */
	size_t vlen;
};

static enum smtp_addr_error smtp_addr_mail_param(const struct smtp_addr_param *p, unsigned *seen,
						 struct smtp_mail_args *r)
{
	static const char *const names[] = {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"};
	unsigned k = 0;
	while (k < sizeof(names) / sizeof(names[0]) && !smtp_addr_word(p->kw, p->klen, names[k]))
		k++;
	if (k == sizeof(names) / sizeof(names[0]))
		return SMTP_ADDR_UNKNOWN_PARAM;
	if (*seen & (1u << k))
		return SMTP_ADDR_DUP_PARAM;
	*seen |= 1u << k;

	const char *v = p->val;
	size_t n = p->vlen;
	switch (k) {
	case 0: { /* SIZE=1*20DIGIT (RFC 1870 §3) */
		if (v == NULL || n > 20)
			return SMTP_ADDR_BAD_PARAM;
		uint64_t x = 0;
		for (size_t i = 0; i < n; i++) {
			if (!smtp_addr_digit((unsigned char)v[i]))
				return SMTP_ADDR_BAD_PARAM;
			unsigned d = (unsigned)(v[i] - '0');
			if (x > (UINT64_MAX - d) / 10)
				return SMTP_ADDR_BAD_PARAM;
			x = x * 10 + d;
		}
		r->has_size = true;
		r->size = x;
		return SMTP_ADDR_OK;
	}
	case 1: /* BODY=7BIT|8BITMIME (RFC 6152 §2); BINARYMIME is not offered */
		if (v != NULL && smtp_addr_word(v, n, "7BIT"))
			r->body = SMTP_BODY_7BIT;
		else if (v != NULL && smtp_addr_word(v, n, "8BITMIME"))
			r->body = SMTP_BODY_8BITMIME;
		else
			return SMTP_ADDR_BAD_PARAM;
		return SMTP_ADDR_OK;
	case 2: /* SMTPUTF8 takes no value (RFC 6531 §3.4) */
		if (v != NULL)
			return SMTP_ADDR_BAD_PARAM;
		r->smtputf8 = true;
		return SMTP_ADDR_OK;
	case 3: /* RET=FULL|HDRS (RFC 3461 §4.3) */
		if (v != NULL && smtp_addr_word(v, n, "FULL"))
			r->ret = SMTP_RET_FULL;
		else if (v != NULL && smtp_addr_word(v, n, "HDRS"))
			r->ret = SMTP_RET_HDRS;
		else
			return SMTP_ADDR_BAD_PARAM;
		return SMTP_ADDR_OK;
	case 4: /* ENVID=xtext, at most 100 characters (RFC 3461 §4.4) */
		if (v == NULL || n > 100 || !smtp_addr_xtext(v, n))
			return SMTP_ADDR_BAD_PARAM;
		smtp_addr_copy(r->envid, v, n);
		return SMTP_ADDR_OK;
	default: /* AUTH=xtext (RFC 4954 §5), kept encoded */
		if (v == NULL || n >= sizeof(r->auth) || !smtp_addr_xtext(v, n))
			return SMTP_ADDR_BAD_PARAM;
		smtp_addr_copy(r->auth, v, n);
		return SMTP_ADDR_OK;
	}
}

/* NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) (RFC 3461 §4.1). */
static bool smtp_addr_notify(const char *v, size_t n)
{
	static const char *const words[] = {"NEVER", "SUCCESS", "FAILURE", "DELAY"};
	unsigned seen = 0, count = 0;
	size_t i = 0;
	for (;;) {
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		unsigned k = 0;
		while (k < 4 && !smtp_addr_word(v + s, i - s, words[k]))
			k++;
		if (k == 4 || (seen & (1u << k)))
			return false;
		seen |= 1u << k;
		count++;
		if (i == n)
			break;
		i++;
	}
	return !((seen & 1u) && count > 1);
}

static enum smtp_addr_error smtp_addr_rcpt_param(const struct smtp_addr_param *p, unsigned *seen,
						 struct smtp_rcpt_args *r)
{
	if (smtp_addr_word(p->kw, p->klen, "NOTIFY")) {
		if (*seen & 1u)
			return SMTP_ADDR_DUP_PARAM;
		*seen |= 1u;
		if (p->val == NULL || p->vlen >= sizeof(r->notify) ||
		    !smtp_addr_notify(p->val, p->vlen))
			return SMTP_ADDR_BAD_PARAM;
		smtp_addr_copy(r->notify, p->val, p->vlen);
		return SMTP_ADDR_OK;
	}
	if (smtp_addr_word(p->kw, p->klen, "ORCPT")) {
		if (*seen & 2u)
			return SMTP_ADDR_DUP_PARAM;
		*seen |= 2u;
		/* ORCPT=addr-type ";" xtext, addr-type an atom, <= 500 chars
		 * (RFC 3461 §4.2). */
		if (p->val == NULL || p->vlen > 500)
			return SMTP_ADDR_BAD_PARAM;
		const char *semi = memchr(p->val, ';', p->vlen);
		if (semi == NULL || semi == p->val)
			return SMTP_ADDR_BAD_PARAM;
		size_t tlen = (size_t)(semi - p->val);
		for (size_t i = 0; i < tlen; i++)
			if (!smtp_addr_atext((unsigned char)p->val[i]))
				return SMTP_ADDR_BAD_PARAM;
		if (!smtp_addr_xtext(semi + 1, p->vlen - tlen - 1))
			return SMTP_ADDR_BAD_PARAM;
		smtp_addr_copy(r->orcpt, p->val, p->vlen);
		return SMTP_ADDR_OK;
	}
	return SMTP_ADDR_UNKNOWN_PARAM;
}

/* Splits s[i..n) into esmtp-params (RFC 5321 §4.1.2: esmtp-keyword =
 * (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), esmtp-value = 1*(%d33-60 /
 * %d62-126)) and hands each to the MAIL or RCPT handler. */
static enum smtp_addr_error smtp_addr_params(const char *s, size_t n, size_t i, bool mail,
					     void *args, char bad_param_r[32])
{
	unsigned seen = 0;
	if (i == n)
		return SMTP_ADDR_OK;
	if (s[i] != ' ')
		return SMTP_ADDR_SYNTAX;
	for (;;) {
		while (i < n && s[i] == ' ')
			i++;
		if (i == n)
			return SMTP_ADDR_OK;
		size_t ts = i;
		while (i < n && s[i] != ' ')
			i++;
		struct smtp_addr_param p = {s + ts, i - ts, NULL, 0};
		const char *eq = memchr(p.kw, '=', p.klen);
		if (eq != NULL) {
			p.val = eq + 1;
			p.vlen = p.klen - (size_t)(eq - p.kw) - 1;
			p.klen = (size_t)(eq - p.kw);
		}
		enum smtp_addr_error err = SMTP_ADDR_OK;
		if (p.klen == 0 || !(smtp_addr_alpha((unsigned char)p.kw[0]) ||
				     smtp_addr_digit((unsigned char)p.kw[0])))
			err = SMTP_ADDR_BAD_PARAM;
		for (size_t k = 1; err == SMTP_ADDR_OK && k < p.klen; k++) {
			unsigned char c = (unsigned char)p.kw[k];
			if (!smtp_addr_alpha(c) && !smtp_addr_digit(c) && c != '-')
				err = SMTP_ADDR_BAD_PARAM;
		}
		if (err == SMTP_ADDR_OK && p.val != NULL) {
			if (p.vlen == 0)
				err = SMTP_ADDR_BAD_PARAM;
			for (size_t k = 0; k < p.vlen; k++) {
				unsigned char c = (unsigned char)p.val[k];
				if (c < 33 || c > 126 || c == '=')
					err = SMTP_ADDR_BAD_PARAM;
			}
		}
		if (err == SMTP_ADDR_OK)
			err = mail ? smtp_addr_mail_param(&p, &seen, args)
				   : smtp_addr_rcpt_param(&p, &seen, args);
		if (err != SMTP_ADDR_OK) {
			smtp_addr_set_bad(bad_param_r, p.kw, p.klen);
			return err;
		}
	}
}

/* "FROM:" / "TO:", then one optional SP (Postfix tolerates "MAIL FROM: <a>"). */
static bool smtp_addr_prefix(const char *s, size_t n, const char *word, size_t *pos)
{
	size_t wl = strlen(word);
	if (n < wl || !smtp_addr_word(s, wl, word))
		return false;
	*pos = wl;
	if (*pos < n && s[*pos] == ' ')
		(*pos)++;
	return true;
}

enum smtp_addr_error smtp_mail_args_parse(const char *args, size_t len, struct smtp_mail_args *r,
					  char bad_param_r[32])
{
	memset(r, 0, sizeof(*r));
	if (bad_param_r != NULL)
		bad_param_r[0] = '\0';
	size_t i;
	if (!smtp_addr_prefix(args, len, "FROM:", &i))
		return SMTP_ADDR_SYNTAX;
	enum smtp_addr_error err = smtp_addr_path(args, len, &i, true, false, &r->path);
	if (err != SMTP_ADDR_OK)
		return err;
	return smtp_addr_params(args, len, i, true, r, bad_param_r);
}

enum smtp_addr_error smtp_rcpt_args_parse(const char *args, size_t len, struct smtp_rcpt_args *r,
					  char bad_param_r[32])
{
	memset(r, 0, sizeof(*r));
	if (bad_param_r != NULL)
		bad_param_r[0] = '\0';
	size_t i;
	if (!smtp_addr_prefix(args, len, "TO:", &i))
		return SMTP_ADDR_SYNTAX;
	enum smtp_addr_error err = smtp_addr_path(args, len, &i, false, true, &r->path);
	if (err != SMTP_ADDR_OK)
		return err;
	return smtp_addr_params(args, len, i, false, r, bad_param_r);
}

/* Bounded appender for the format functions. */
struct smtp_addr_out {
	char *p;
	size_t size, len;
	bool full;
};

static void smtp_addr_put(struct smtp_addr_out *o, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (o->full || o->size - o->len <= la + lb) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->len, a, la);
	memcpy(o->p + o->len + la, b, lb);
	o->len += la + lb;
	o->p[o->len] = '\0';
}

static int smtp_addr_done(struct smtp_addr_out *o)
{
	if (o->full) {
		if (o->size > 0)
			o->p[0] = '\0';
		return -1;
	}
	return (int)o->len;
}

int smtp_mail_args_format(const struct smtp_mail_args *a, char *out, size_t outsz)
{
	struct smtp_addr_out o = {out, outsz, 0, outsz == 0};
	if (outsz > 0)
		out[0] = '\0';
	if (a->has_size) {
		char num[24];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)a->size);
		smtp_addr_put(&o, " SIZE=", num);
	}
	if (a->body == SMTP_BODY_7BIT)
		smtp_addr_put(&o, " BODY=7BIT", "");
	else if (a->body == SMTP_BODY_8BITMIME)
		smtp_addr_put(&o, " BODY=8BITMIME", "");
	if (a->smtputf8)
		smtp_addr_put(&o, " SMTPUTF8", "");
	if (a->ret == SMTP_RET_FULL)
		smtp_addr_put(&o, " RET=FULL", "");
	else if (a->ret == SMTP_RET_HDRS)
		smtp_addr_put(&o, " RET=HDRS", "");
	if (a->envid[0] != '\0')
		smtp_addr_put(&o, " ENVID=", a->envid);
	if (a->auth[0] != '\0')
		smtp_addr_put(&o, " AUTH=", a->auth);
	return smtp_addr_done(&o);
}

int smtp_rcpt_args_format(const struct smtp_rcpt_args *a, char *out, size_t outsz)
{
	struct smtp_addr_out o = {out, outsz, 0, outsz == 0};
	if (outsz > 0)
		out[0] = '\0';
	if (a->notify[0] != '\0')
		smtp_addr_put(&o, " NOTIFY=", a->notify);
	if (a->orcpt[0] != '\0')
		smtp_addr_put(&o, " ORCPT=", a->orcpt);
	return smtp_addr_done(&o);
}
