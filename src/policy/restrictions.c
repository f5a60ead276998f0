#include "config.h"
#include "policy/restrictions.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "smtp/server.h"

enum restriction_kind {
	R_PERMIT,
	R_REJECT,
	R_DEFER,
	R_PERMIT_MYNETWORKS,
	R_PERMIT_SASL,
	R_NON_FQDN_SENDER,
	R_NON_FQDN_RECIPIENT,
	R_UNAUTH_DESTINATION,
	R_SENDER_ACCESS,
	R_RECIPIENT_ACCESS,
	R_LOGIN_MISMATCH,
	R_UNKNOWN_SENDER_DOMAIN,    /* DNS: the caller asks (RESTRICTIONS_DNS) */
	R_UNKNOWN_RECIPIENT_DOMAIN, /* likewise */
	R_CLIENT_ACCESS,
	R_HELO_ACCESS,
};

struct restriction {
	enum restriction_kind kind;
	enum sender_login_policy policy; /* R_LOGIN_MISMATCH */
	struct table *table;             /* R_*_ACCESS */
};

struct restrictions {
	enum restrictions_stage stage;
	size_t n;
	struct restriction items[];
};

#define RESTRICTIONS_MAX 64

static const struct {
	const char *name;
	enum restriction_kind kind;
} restrictions_names[] = {
	{"permit", R_PERMIT},
	{"reject", R_REJECT},
	{"defer", R_DEFER},
	{"permit_mynetworks", R_PERMIT_MYNETWORKS},
	{"permit_sasl_authenticated", R_PERMIT_SASL},
	{"reject_non_fqdn_sender", R_NON_FQDN_SENDER},
	{"reject_non_fqdn_recipient", R_NON_FQDN_RECIPIENT},
	{"reject_unauth_destination", R_UNAUTH_DESTINATION},
	{"check_sender_access", R_SENDER_ACCESS},
	{"check_recipient_access", R_RECIPIENT_ACCESS},
	{"reject_unknown_sender_domain", R_UNKNOWN_SENDER_DOMAIN},
	{"reject_unknown_recipient_domain", R_UNKNOWN_RECIPIENT_DOMAIN},
	{"check_client_access", R_CLIENT_ACCESS},
	{"check_helo_access", R_HELO_ACCESS},
};

/* Postfix restrictions that need what submitd does not have yet: named in
 * the error, so a copied line fails loudly rather than silently differing. */
static const char *const restrictions_later[] = {
	"reject_rbl_client",
	"reject_rhsbl_sender",
	"reject_unknown_client_hostname",
	"reject_unknown_helo_hostname",
	NULL,
};

static bool restrictions_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static bool restrictions_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

void restrictions_free(struct restrictions **rp)
{
	struct restrictions *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	for (size_t i = 0; i < r->n; i++)
		table_free(&r->items[i].table);
	free(r);
}

/* The next word of a list: separated by commas and white space, except
 * inside braces (a table written inline:{ k=v, { k = text } }), as in
 * Postfix's main.cf. NULL at the end; *p moves past it. */
static char *restrictions_word(char **p)
{
	char *s = *p;
	while (*s == ',' || *s == ' ' || *s == '\t')
		s++;
	if (*s == '\0')
		return NULL;
	char *w = s;
	int depth = 0;
	for (; *s != '\0'; s++) {
		if (*s == '{')
			depth++;
		else if (*s == '}' && depth > 0)
			depth--;
		else if (depth == 0 && (*s == ',' || *s == ' ' || *s == '\t'))
			break;
	}
	if (*s != '\0')
		*s++ = '\0';
	*p = s;
	return w;
}

static bool restrictions_item(struct restrictions *r, const char *name, char **save,
			      const char *key, char *err, size_t errlen)
{
	struct restriction *it = &r->items[r->n];
	enum sender_login_policy pol;
	if (sender_login_policy_parse(name, &pol) == 0 && pol != SENDER_LOGIN_NONE) {
		it->kind = R_LOGIN_MISMATCH;
		it->policy = pol;
		r->n++;
		return true;
	}
	for (size_t i = 0; i < sizeof(restrictions_names) / sizeof(restrictions_names[0]); i++) {
		if (strcasecmp(name, restrictions_names[i].name) != 0)
			continue;
		it->kind = restrictions_names[i].kind;
		if (it->kind == R_SENDER_ACCESS || it->kind == R_RECIPIENT_ACCESS ||
		    it->kind == R_CLIENT_ACCESS || it->kind == R_HELO_ACCESS) {
			const char *spec = restrictions_word(save);
			if (spec == NULL)
				return restrictions_err(err, errlen, "%s: %s needs a table", key,
							name);
			char why[512];
			it->table = table_open(spec, why, sizeof(why));
			if (it->table == NULL)
				return restrictions_err(err, errlen, "%s: %s %s: %s", key, name,
							spec, why);
			/* Looked up inline, at MAIL/RCPT: it must not need I/O. */
			if (!table_is_memory(it->table)) {
				table_free(&it->table);
				return restrictions_err(err, errlen,
							"%s: %s %s: use a texthash:, hash: "
							"or inline: table",
							key, name, spec);
			}
		}
		r->n++;
		return true;
	}
	/* A submission server relays every recipient and keeps no local
	   recipient tables; who may send as whom is sender_login_maps'. */
	if (strcasecmp(name, "reject_unlisted_sender") == 0 ||
	    strcasecmp(name, "reject_unlisted_recipient") == 0)
		return restrictions_err(err, errlen,
					"%s: %s is not offered: submitd keeps no local "
					"recipient tables; sender_login_maps decides which "
					"senders a login may use (docs/restrictions.md)",
					key, name);
	for (size_t i = 0; restrictions_later[i] != NULL; i++)
		if (strcasecmp(name, restrictions_later[i]) == 0)
			return restrictions_err(err, errlen,
						"%s: %s is not supported yet "
						"(docs/restrictions.md)",
						key, name);
	return restrictions_err(err, errlen,
				"%s: unknown restriction \"%s\" (docs/restrictions.md "
				"lists those submitd knows)",
				key, name);
}

struct restrictions *restrictions_parse(const char *key, const char *text,
					enum restrictions_stage stage, char *err, size_t errlen)
{
	struct restrictions *r =
		xcalloc(1, sizeof(*r) + RESTRICTIONS_MAX * sizeof(struct restriction));
	r->stage = stage;
	char *copy = xstrdup(text ? text : ""), *save = copy;
	bool ok = true;
	for (char *name = restrictions_word(&save); ok && name != NULL;
	     name = restrictions_word(&save)) {
		if (r->n == RESTRICTIONS_MAX)
			ok = restrictions_err(err, errlen, "%s: more than %d restrictions", key,
					      RESTRICTIONS_MAX);
		else
			ok = restrictions_item(r, name, &save, key, err, errlen);
	}
	free(copy);
	if (!ok)
		restrictions_free(&r);
	return r;
}

bool restrictions_has_login_check(const struct restrictions *r)
{
	for (size_t i = 0; r != NULL && i < r->n; i++)
		if (r->items[i].kind == R_LOGIN_MISMATCH)
			return true;
	return false;
}

size_t restrictions_count(const struct restrictions *r)
{
	return r != NULL ? r->n : 0;
}

/* ---- Postfix's checks ---- */

/* Postfix's valid_hostname(): labels of letters, digits, '_' and inner
 * '-', 1..63 bytes, 255 in all, not all digits. With SMTPUTF8, UTF-8
 * letters count as letters (Postfix converts them with IDNA). */
static bool restrictions_hostname(const char *name, size_t len, bool utf8)
{
	if (len == 0 || len > 255)
		return false;
	size_t label = 0;
	bool non_numeric = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (isalnum(ch) || ch == '_' || (utf8 && ch >= 0x80)) {
			if (++label > 63)
				return false;
			if (!isdigit(ch))
				non_numeric = true;
		} else if (ch == '.') {
			if (label == 0 || i + 1 == len)
				return false;
			label = 0;
		} else if (ch == '-') {
			non_numeric = true;
			label++;
			if (label == 1 || i + 1 == len || name[i + 1] == '.')
				return false;
		} else {
			return false;
		}
	}
	return non_numeric;
}

bool restrictions_fqdn(const char *addr, bool smtputf8)
{
	const char *at = strrchr(addr, '@');
	const char *dom = at ? at + 1 : "";
	size_t len = strlen(dom);
	if (len > 0 && dom[0] == '[' && dom[len - 1] == ']')
		return true;
	/* a name ending in one dot (not two) is taken without it */
	if (len > 1 && dom[len - 1] == '.' && dom[len - 2] != '.')
		len--;
	return len > 0 && restrictions_hostname(dom, len, smtputf8) &&
	       memchr(dom, '.', len) != NULL;
}

/* Postfix's smtpd_check_reject(): the enhanced code's class follows the
 * reply code's. */
static void restrictions_reply(struct smtp_reply *out, int code, const char *enh, const char *fmt,
			       ...) __attribute__((format(printf, 4, 5)));
static void restrictions_reply(struct smtp_reply *out, int code, const char *enh, const char *fmt,
			       ...)
{
	out->code = code;
	snprintf(out->enh, sizeof(out->enh), "%s", enh);
	out->enh[0] = (char)('0' + code / 100);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->text, sizeof(out->text), fmt, ap);
	va_end(ap);
}

/* "d.ddd.ddd " at the start of an access table's text (RFC 3463). */
static size_t restrictions_dsn_len(const char *t)
{
	size_t i = 0;
	if (t[i] != '2' && t[i] != '4' && t[i] != '5')
		return 0;
	i++;
	for (int part = 0; part < 2; part++) {
		if (t[i++] != '.')
			return 0;
		size_t d = 0;
		while (isdigit((unsigned char)t[i]) && d < 3)
			i++, d++;
		if (d == 0)
			return 0;
	}
	return t[i] == ' ' || t[i] == '\0' ? i : 0;
}

enum restriction_result { RR_DUNNO, RR_PERMIT, RR_REJECT };

/* What an access table's value means (Postfix access(5)): OK, RELAY or all
 * digits permit; REJECT, DEFER, 4NN/5NN with text reject; DUNNO goes on.
 * Anything else is Postfix's "Server configuration error". */
static enum restriction_result restrictions_action(const char *value, const char *name,
						   const char *class, struct smtp_reply *out)
{
	size_t cmd = strcspn(value, " \t");
	const char *text = value + cmd;
	while (*text == ' ' || *text == '\t')
		text++;
	bool alldig = cmd > 0;
	for (size_t i = 0; i < cmd; i++)
		alldig = alldig && isdigit((unsigned char)value[i]);
#define IS(word) (cmd == strlen(word) && strncasecmp(value, word, cmd) == 0)
	if (IS("DUNNO"))
		return RR_DUNNO;
	if (IS("OK") || IS("RELAY") || IS("PERMIT") || (alldig && value[cmd] == '\0'))
		return RR_PERMIT;
	int code = 0;
	const char *def = "5.7.1";
	if (IS("REJECT")) {
		code = 554;
	} else if (IS("DEFER")) {
		code = 450;
		def = "4.7.1";
	} else if (cmd == 3 && *text && (value[0] == '4' || value[0] == '5') &&
		   isdigit((unsigned char)value[1]) && isdigit((unsigned char)value[2])) {
		code = atoi(value);
		def = value[0] == '4' ? "4.7.1" : "5.7.1";
	}
#undef IS
	if (code == 0) {
		restrictions_reply(out, 451, "4.3.5", "Server configuration error");
		return RR_REJECT;
	}
	char enh[16];
	size_t dl = restrictions_dsn_len(text);
	if (dl > 0 && dl < sizeof(enh)) {
		memcpy(enh, text, dl);
		enh[dl] = '\0';
		text += dl;
		while (*text == ' ')
			text++;
	} else {
		snprintf(enh, sizeof(enh), "%s", def);
	}
	restrictions_reply(out, code, enh, "<%s>: %s rejected: %s", name, class,
			   *text ? text : "Access denied");
	return RR_REJECT;
}

/* An address as Postfix's restrictions see it: its internal (unquoted)
 * form, so <"user"@domain> meets the entries for user@domain and is named
 * <user@domain> in replies, as Postfix names it (lookup/addrkey.h). */
struct restrictions_addr {
	char full[600];
	size_t local; /* the localpart's length */
	size_t cut;   /* where recipient_delimiter cuts it; 0 = not */
};

/* Postfix's check_mail_access() order: user+ext@domain, user@domain,
 * domain and its parent domains, user+ext@, user@. */
static enum restriction_result restrictions_access(const struct table *t,
						   const struct restrictions_addr *a,
						   const char *class, struct smtp_reply *out)
{
	const char *value;
	const char *full = a->full;
	if (full[0] == '\0') {
		/* Postfix's smtpd_null_access_lookup_key */
		if (table_lookup_sync(t, "<>", &value) == TABLE_OK)
			return restrictions_action(value, full, class, out);
		return RR_DUNNO;
	}
	const char *at = full[a->local] == '@' ? full + a->local : NULL;
	const char *keys[4 + 128];
	char store[3][sizeof(a->full)];
	size_t nk = 0;
	keys[nk++] = full;
	if (a->cut > 0 && at != NULL) {
		snprintf(store[0], sizeof(store[0]), "%.*s%s", (int)a->cut, full, at);
		keys[nk++] = store[0];
	}
	for (const char *d = at ? at + 1 : NULL; d != NULL && *d && nk < 4 + 120;) {
		keys[nk++] = d;
		const char *dot = strchr(d + 1, '.');
		d = dot ? dot + 1 : NULL;
	}
	snprintf(store[1], sizeof(store[1]), "%.*s@", (int)a->local, full);
	keys[nk++] = store[1];
	if (a->cut > 0) {
		snprintf(store[2], sizeof(store[2]), "%.*s@", (int)a->cut, full);
		keys[nk++] = store[2];
	}
	for (size_t i = 0; i < nk; i++) {
		enum table_status st = table_lookup_sync(t, keys[i], &value);
		if (st == TABLE_OK)
			return restrictions_action(value, full, class, out);
		if (st == TABLE_TEMPFAIL) {
			restrictions_reply(out, 451, "4.3.0", "<%s>: Temporary lookup failure",
					   full);
			return RR_REJECT;
		}
	}
	return RR_DUNNO;
}

/* ---- check_client_access, check_helo_access ---- */

/* One key of a client or HELO lookup: the action, or a lookup failure. */
static bool restrictions_key(const struct table *t, const char *key, const char *name,
			     const char *class, struct smtp_reply *out,
			     enum restriction_result *res_r)
{
	const char *value;
	enum table_status st = table_lookup_sync(t, key, &value);
	if (st == TABLE_OK) {
		*res_r = restrictions_action(value, name, class, out);
		return true;
	}
	if (st == TABLE_TEMPFAIL) {
		restrictions_reply(out, 451, "4.3.0", "<%s>: Temporary lookup failure", name);
		*res_r = RR_REJECT;
		return true;
	}
	return false;
}

/* Postfix's check_namadr_access(): the client's name and its parent
 * domains, then its address and the shorter prefixes of it (IPv4 by
 * octet, IPv6 by ":" from the compressed form, as access(5) says).
 * submitd looks up no client names (no reverse DNS): the name is always
 * "unknown", looked up as Postfix with smtpd_peername_lookup = no does,
 * and replies name unknown[ADDR]. */
static enum restriction_result restrictions_client_access(const struct table *t, const char *client,
							  struct smtp_reply *out)
{
	if (client == NULL || client[0] == '\0')
		return RR_DUNNO;
	unsigned char bin[16];
	char key[64], name[80];
	int af = strchr(client, ':') != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(af, client, bin) != 1 || inet_ntop(af, bin, key, sizeof(key)) == NULL)
		return RR_DUNNO; /* not an address (a UNIX socket client) */
	snprintf(name, sizeof(name), "unknown[%s]", key);
	char delim = af == AF_INET6 ? ':' : '.';
	enum restriction_result res;
	if (restrictions_key(t, "unknown", name, "Client host", out, &res))
		return res;
	for (;;) {
		if (restrictions_key(t, key, name, "Client host", out, &res))
			return res;
		char *cut = strrchr(key, delim);
		if (cut == NULL)
			return RR_DUNNO;
		*cut = '\0';
	}
}

/* Postfix's check_domain_access() on the HELO name: the name, then its
 * parent domains (parent_domain_matches_subdomains names smtpd_access_maps
 * by default); an address literal, or a bare address, is looked up as
 * written. */
static enum restriction_result restrictions_helo_access(const struct table *t, const char *helo,
							struct smtp_reply *out)
{
	if (helo == NULL || helo[0] == '\0')
		return RR_DUNNO;
	char name[SMTP_SERVER_HELO_MAX + 1];
	size_t n = strlen(helo);
	if (n >= SMTP_SERVER_HELO_MAX) {
		/* maybe cut by smtp/server.c: looked up whole or not at all */
		restrictions_reply(out, 501, "5.5.2", "Error: HELO name too long");
		return RR_REJECT;
	}
	for (size_t i = 0; i < n; i++)
		name[i] = (char)tolower((unsigned char)helo[i]);
	name[n] = '\0';
	enum restriction_result res;
	for (const char *d = name; d != NULL;) {
		if (restrictions_key(t, d, helo, "Helo command", out, &res))
			return res;
		unsigned char bin[16];
		/* a bare address has no parent domains (Postfix neither) */
		if (name[0] == '[' || inet_pton(AF_INET, name, bin) == 1 ||
		    inet_pton(AF_INET6, name, bin) == 1)
			break;
		const char *dot = strchr(d + 1, '.');
		d = dot != NULL && dot[1] != '\0' ? dot + 1 : NULL;
	}
	return RR_DUNNO;
}

#define CLASS_SENDER "Sender address"
#define CLASS_RECIPIENT "Recipient address"

static enum restriction_result restrictions_non_fqdn(const char *addr, const char *class,
						     bool smtputf8, struct smtp_reply *out)
{
	if (restrictions_fqdn(addr, smtputf8))
		return RR_DUNNO;
	restrictions_reply(out, 504, "5.5.2", "<%s>: %s rejected: need fully-qualified address",
			   addr, class);
	return RR_REJECT;
}

/* The domain reject_unknown_*_domain looks up in addr, or NULL. */
static const char *restrictions_dns_domain(const char *addr)
{
	const char *at = addr != NULL ? strrchr(addr, '@') : NULL;
	if (at == NULL || at[1] == '\0' || at[1] == '[')
		return NULL;
	return at + 1;
}

const char *restrictions_dns_address(const struct restrictions *r, size_t next,
				     const struct restrictions_facts *f, bool *recipient_r,
				     const char **domain_r)
{
	*recipient_r =
		next > 0 && next <= r->n && r->items[next - 1].kind == R_UNKNOWN_RECIPIENT_DOMAIN;
	const char *addr = *recipient_r ? f->recipient : f->sender;
	*domain_r = restrictions_dns_domain(addr);
	return addr;
}

bool restrictions_unknown_domain_reply(const char *addr, const char *domain, bool recipient,
				       unsigned reject_code, enum dns_status st, bool null_mx,
				       bool malformed, struct smtp_reply *out)
{
	const char *class = recipient ? CLASS_RECIPIENT : CLASS_SENDER;
	if (st == DNS_OK)
		return false;
	if (null_mx) {
		/* RFC 7505 §4.2/§4.3, with Postfix's codes and text */
		restrictions_reply(out, recipient ? 556 : 550, recipient ? "5.1.10" : "5.7.27",
				   "<%s>: %s rejected: Domain %s does not accept mail (nullMX)",
				   addr, class, domain);
		return true;
	}
	/* Postfix: unknown_address_reject_code for a domain that does not
	   exist or has no MX/A/AAAA, 450 for a DNS failure; the enhanced code's
	   class follows the reply code. */
	int code = st == DNS_TEMPFAIL ? 450 : (int)reject_code;
	char enh[8];
	snprintf(enh, sizeof(enh), "%c.1.%c", code >= 500 ? '5' : '4', recipient ? '2' : '8');
	restrictions_reply(out, code, enh, "<%s>: %s rejected: %s", addr, class,
			   st != DNS_TEMPFAIL && malformed ? "Malformed DNS server reply"
							   : "Domain not found");
	return true;
}

enum restrictions_verdict restrictions_eval(const struct restrictions *r, size_t start,
					    const struct restrictions_facts *f,
					    struct smtp_reply *out, size_t *next_r,
					    enum sender_login_policy *policy_r)
{
	bool rcpt_stage = r->stage == RESTRICTIONS_RECIPIENT;
	struct restrictions_addr sa, ra;
	const char *sender = NULL, *recipient = NULL;
	if (addrkey_internal(f->sender, f->delimiters, sa.full, sizeof(sa.full), &sa.local,
			     &sa.cut) == 0)
		sender = sa.full;
	if (f->recipient != NULL && addrkey_internal(f->recipient, f->delimiters, ra.full,
						     sizeof(ra.full), &ra.local, &ra.cut) == 0)
		recipient = ra.full;
	if (sender == NULL || (f->recipient != NULL && recipient == NULL)) {
		/* longer than the parser lets through: no check sees a part */
		restrictions_reply(out, 501, "5.1.3", "Error: address too long");
		return RESTRICTIONS_REJECT;
	}
	/* The list's own address, for permit/reject/defer replies. */
	const char *name = rcpt_stage ? recipient : sender;
	const char *class = rcpt_stage ? CLASS_RECIPIENT : CLASS_SENDER;
	for (size_t i = start; i < r->n; i++) {
		const struct restriction *it = &r->items[i];
		enum restriction_result res = RR_DUNNO;
		switch (it->kind) {
		case R_PERMIT:
			res = RR_PERMIT;
			break;
		case R_REJECT:
			restrictions_reply(out, 554, "5.7.1", "<%s>: %s rejected: Access denied",
					   name, class);
			res = RR_REJECT;
			break;
		case R_DEFER:
			restrictions_reply(out, 450, "4.3.2", "<%s>: %s rejected: Try again later",
					   name, class);
			res = RR_REJECT;
			break;
		case R_PERMIT_MYNETWORKS:
			res = f->mynetworks ? RR_PERMIT : RR_DUNNO;
			break;
		case R_PERMIT_SASL:
			res = f->login != NULL ? RR_PERMIT : RR_DUNNO;
			break;
		case R_NON_FQDN_SENDER:
			/* the null sender is exempt */
			if (sender[0] != '\0')
				res = restrictions_non_fqdn(sender, CLASS_SENDER, f->smtputf8, out);
			break;
		case R_NON_FQDN_RECIPIENT:
			if (recipient != NULL)
				res = restrictions_non_fqdn(recipient, CLASS_RECIPIENT, f->smtputf8,
							    out);
			break;
		case R_UNAUTH_DESTINATION:
			/* On a submission server every destination is relayed,
			   for logged-in users and trusted clients only: the rest
			   is relaying (docs/design.md invariant 10). */
			if (recipient != NULL && f->login == NULL && !f->trusted) {
				restrictions_reply(out, 554, "5.7.1", "<%s>: Relay access denied",
						   recipient);
				res = RR_REJECT;
			}
			break;
		case R_SENDER_ACCESS:
			res = restrictions_access(it->table, &sa, CLASS_SENDER, out);
			break;
		case R_RECIPIENT_ACCESS:
			if (recipient != NULL)
				res = restrictions_access(it->table, &ra, CLASS_RECIPIENT, out);
			break;
		case R_CLIENT_ACCESS:
			res = restrictions_client_access(it->table, f->client_addr, out);
			break;
		case R_HELO_ACCESS:
			res = restrictions_helo_access(it->table, f->helo, out);
			break;
		case R_LOGIN_MISMATCH:
			*policy_r = it->policy;
			*next_r = i + 1;
			return RESTRICTIONS_LOGIN;
		case R_UNKNOWN_SENDER_DOMAIN:
		case R_UNKNOWN_RECIPIENT_DOMAIN:
			/* the null sender, a bare name and an address literal
			   have no domain to look up (as Postfix) */
			if (restrictions_dns_domain(it->kind == R_UNKNOWN_RECIPIENT_DOMAIN
							    ? f->recipient
							    : f->sender) != NULL) {
				*next_r = i + 1;
				return RESTRICTIONS_DNS;
			}
			break;
		}
		if (res == RR_PERMIT)
			return RESTRICTIONS_PERMIT;
		if (res == RR_REJECT)
			return RESTRICTIONS_REJECT;
	}
	return RESTRICTIONS_PERMIT;
}
