/* policy/sender_login: sender ownership (Postfix smtpd_sender_login_maps).
 * Semantics and their sources are in sender_login.h. */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/defer.h"
#include "core/list.h"
#include "core/log.h"
#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "lookup/table_registry.h"
#include "policy/sender_login.h"
#include "smtp/addrlist.h"

#define SENDER_LOGIN_MAX_TABLES 16
#define SENDER_LOGIN_KEYS_MAX 2048 /* 5 keys of <= 256 bytes, quoted */

struct sender_login_conf {
	struct table *tables[SENDER_LOGIN_MAX_TABLES];
	size_t ntables;
	enum sender_login_policy policy;
	char delimiters[32];
};

struct sender_login {
	const struct sender_login_conf *conf;
	struct table_registry *tables; /* NULL: the instances are its own */
	struct table_inst *inst[SENDER_LOGIN_MAX_TABLES];
	uv_loop_t *loop;
	struct defer_queue ready; /* verdicts that needed no lookup */
	struct list_link live;    /* every request not yet finished */
};

struct sender_login_req {
	struct sender_login *sl;
	sender_login_cb *cb;
	void *ctx;
	enum sender_login_policy policy;
	char *login; /* NULL: not authenticated */
	char keys[SENDER_LOGIN_KEYS_MAX];
	int nkeys;
	const char *key; /* current key inside keys */
	int ki;
	size_t tix;
	struct table_req *tr;
	enum sender_login_result result;
	struct defer_item ready;
	struct list_link live;
};

static const char *const sender_login_policy_names[] = {
	[SENDER_LOGIN_REJECT_MISMATCH] = "reject_sender_login_mismatch",
	[SENDER_LOGIN_REJECT_AUTHENTICATED] = "reject_authenticated_sender_login_mismatch",
	[SENDER_LOGIN_REJECT_KNOWN] = "reject_known_sender_login_mismatch",
	[SENDER_LOGIN_REJECT_UNAUTHENTICATED] = "reject_unauthenticated_sender_login_mismatch",
	[SENDER_LOGIN_NONE] = "none",
};

int sender_login_policy_parse(const char *name, enum sender_login_policy *policy_r)
{
	for (size_t i = 0; i < sizeof(sender_login_policy_names) / sizeof(char *); i++) {
		if (strcasecmp(name, sender_login_policy_names[i]) == 0) {
			*policy_r = (enum sender_login_policy)i;
			return 0;
		}
	}
	return -1;
}

const char *sender_login_policy_name(enum sender_login_policy policy)
{
	return sender_login_policy_names[policy];
}

const char *sender_login_result_name(enum sender_login_result result)
{
	switch (result) {
	case SENDER_LOGIN_OWNED:
		return "owned";
	case SENDER_LOGIN_NOT_OWNED:
		return "not-owned";
	case SENDER_LOGIN_NOT_LOGGED_IN:
		return "not-logged-in";
	case SENDER_LOGIN_TEMPFAIL:
		return "tempfail";
	case SENDER_LOGIN_NOT_CHECKED:
		return "not-checked";
	}
	return "?";
}

int sender_login_owner_match(const char *owners, const char *login)
{
	size_t llen = strlen(login);
	const char *p = owners;
	while (*p) {
		p += strspn(p, ", \t\r\n");
		size_t n = strcspn(p, ", \t\r\n");
		if (n == 0)
			break;
		if (n == llen && strncasecmp(p, login, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* the From:/Sender: header fields */

/* The first refusal wins: as a line for logs and as the reply to send. */
static void sender_login_hdr_refuse(struct sender_login_hdr *r, const char *enh, const char *fmt,
				    ...) __attribute__((format(printf, 3, 4)));
static void sender_login_hdr_refuse(struct sender_login_hdr *r, const char *enh, const char *fmt,
				    ...)
{
	if (r->refusal[0] != '\0')
		return;
	int n = snprintf(r->refusal, sizeof(r->refusal), "550 %s ", enh);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->refusal + n, sizeof(r->refusal) - (size_t)n, fmt, ap);
	va_end(ap);
	r->reply.code = 550;
	snprintf(r->reply.enh, sizeof(r->reply.enh), "%s", enh);
	snprintf(r->reply.text, sizeof(r->reply.text), "%s", r->refusal + n);
}

static void sender_login_hdr_add(struct sender_login_hdr *r, const char *field, const char *addr)
{
	for (size_t i = 0; i < r->naddrs; i++)
		if (strcasecmp(r->addrs[i].addr, addr) == 0)
			return; /* one lookup answers both */
	if (r->naddrs == SENDER_LOGIN_HDR_MAX) {
		sender_login_hdr_refuse(r, "5.7.1",
					"Error: too many From:/Sender: addresses to check");
		return;
	}
	r->addrs = xrealloc(r->addrs, (r->naddrs + 1) * sizeof(*r->addrs));
	r->addrs[r->naddrs].field = field;
	r->addrs[r->naddrs].addr = xstrdup(addr);
	r->naddrs++;
}

/* A quoted local part holding what delimits addresses ("john+ceo@victim.
 * example"@example.org, "x<ceo@victim.example>"@example.org): readers
 * disagree on what it shows, and the owner lookup would strip the quotes
 * and the extension and find the login's own address. Refused, never
 * guessed. */
static bool sender_login_quoted_ambiguous(const char *addr)
{
	bool quoted = false;
	for (const char *p = addr; *p != '\0'; p++) {
		if (quoted && *p == '\\' && p[1] != '\0')
			p++; /* a quoted-pair: the next character is text */
		else if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == '@')
			return false; /* the domain: no quoted strings there */
		if (quoted && strchr("@<>,;:[]()", *p) != NULL)
			return true;
	}
	return false;
}

static void sender_login_hdr_field(struct sender_login_hdr *r, const char *field,
				   const uint8_t *body, size_t len)
{
	struct addrlist al;
	addrlist_init(&al);
	if (!addrlist_parse(&al, body, len)) {
		sender_login_hdr_refuse(r, "5.6.0",
					"Error: %s header field unreadable: %s at octet %zu", field,
					addrlist_strerror(al.error), al.error_at + 1);
	} else if (al.naddrs == 0) {
		sender_login_hdr_refuse(r, "5.6.0", "Error: %s header field has no address", field);
	}
	for (const char *a = addrlist_next(&al, NULL); a != NULL; a = addrlist_next(&al, a)) {
		if (sender_login_quoted_ambiguous(a)) {
			sender_login_hdr_refuse(r, "5.6.0",
						"Error: %s header field unreadable: a quoted local "
						"part that reads as another address",
						field);
			continue;
		}
		sender_login_hdr_add(r, field, a);
	}
	addrlist_free(&al);
}

bool sender_login_header_read(const uint8_t *h, const struct header_info *hi,
			      struct sender_login_hdr *r)
{
	memset(r, 0, sizeof(*r));
	/* RFC 5322 §3.6: From: once, Sender: at most once */
	if (hi->odd_line > 0)
		/* readers disagree where its fields are: one may show a From:
		   that another, or this check, never sees as one */
		sender_login_hdr_refuse(r, "5.6.0", "Error: malformed header section at octet %zu",
					hi->odd_line);
	else if (hi->from_count > 1)
		sender_login_hdr_refuse(r, "5.6.0", "Error: more than one From: header field");
	else if (hi->sender_count > 1)
		sender_login_hdr_refuse(r, "5.6.0", "Error: more than one Sender: header field");
	if (hi->from_count > 0)
		sender_login_hdr_field(r, "From:", h + hi->from.off, hi->from.len);
	if (hi->sender_count > 0)
		sender_login_hdr_field(r, "Sender:", h + hi->sender.off, hi->sender.len);
	return r->refusal[0] == '\0';
}

void sender_login_header_free(struct sender_login_hdr *r)
{
	for (size_t i = 0; i < r->naddrs; i++)
		free(r->addrs[i].addr);
	free(r->addrs);
	r->addrs = NULL;
	r->naddrs = 0;
	r->refusal[0] = '\0';
	r->reply.code = 0;
	r->reply.enh[0] = '\0';
	r->reply.text[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* replies */

static void sender_login_printable(char *out, size_t outsz, const char *in)
{
	/* Postfix printable(): anything not printable becomes '?' */
	size_t i = 0;
	for (; in[i] && i + 1 < outsz; i++) {
		unsigned char c = (unsigned char)in[i];
		out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[i] = 0;
}

/* RFC 5321 §4.5.3.1.5: 512 octets incl. CRLF; Postfix truncates the line at
 * 510, so the text after "553 5.7.1 " at 500. */
#define SENDER_LOGIN_REPLY_TEXT (510 - (sizeof("553 5.7.1 ") - 1) + 1)

bool sender_login_reply(enum sender_login_result result, const char *addr, const char *login,
			struct smtp_reply *reply_r)
{
	char a[300], l[300];
	sender_login_printable(a, sizeof(a), addr ? addr : "");
	sender_login_printable(l, sizeof(l), login ? login : "");
	reply_r->lines = 0;
	switch (result) {
	case SENDER_LOGIN_NOT_OWNED:
		reply_r->code = 553;
		snprintf(reply_r->enh, sizeof(reply_r->enh), "5.7.1");
		snprintf(reply_r->text, SENDER_LOGIN_REPLY_TEXT,
			 "<%s>: Sender address rejected: not owned by user %s", a, l);
		return true;
	case SENDER_LOGIN_NOT_LOGGED_IN:
		reply_r->code = 553;
		snprintf(reply_r->enh, sizeof(reply_r->enh), "5.7.1");
		snprintf(reply_r->text, SENDER_LOGIN_REPLY_TEXT,
			 "<%s>: Sender address rejected: not logged in", a);
		return true;
	case SENDER_LOGIN_TEMPFAIL:
		/* Postfix reject_dict_retry() text, unchanged (fail2ban filters know it) */
		reply_r->code = 451;
		snprintf(reply_r->enh, sizeof(reply_r->enh), "4.3.0");
		snprintf(reply_r->text, SENDER_LOGIN_REPLY_TEXT, "<%s>: Temporary lookup failure",
			 a);
		return true;
	case SENDER_LOGIN_OWNED:
	case SENDER_LOGIN_NOT_CHECKED:
		break;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* configuration */

struct sender_login_conf *sender_login_conf_new(const struct sender_login_settings *s, char *err,
						size_t errlen)
{
	struct sender_login_conf *conf = xcalloc(1, sizeof(*conf));
	const char *delims = s->delimiters ? s->delimiters : "+";
	if (strlen(delims) >= sizeof(conf->delimiters)) {
		snprintf(err, errlen, "recipient_delimiter: too many characters");
		goto fail;
	}
	strcpy(conf->delimiters, delims);
	conf->policy = SENDER_LOGIN_REJECT_MISMATCH;
	if (s->policy && *s->policy && sender_login_policy_parse(s->policy, &conf->policy) != 0) {
		snprintf(err, errlen,
			 "sender_login_policy: unknown \"%s\" (reject_sender_login_mismatch, "
			 "reject_authenticated_sender_login_mismatch, "
			 "reject_known_sender_login_mismatch, "
			 "reject_unauthenticated_sender_login_mismatch, none)",
			 s->policy);
		goto fail;
	}
	/* Split the list on commas and whitespace, keeping inline:{...} and
	 * static:{...} together (braces may hold both). */
	const char *p = s->maps ? s->maps : "";
	while (*p) {
		p += strspn(p, ", \t\r\n");
		if (*p == 0)
			break;
		const char *start = p;
		int depth = 0;
		for (; *p; p++) {
			if (*p == '{')
				depth++;
			else if (*p == '}' && depth > 0)
				depth--;
			else if (depth == 0 && strchr(", \t\r\n", *p))
				break;
		}
		if (conf->ntables == SENDER_LOGIN_MAX_TABLES) {
			snprintf(err, errlen, "sender_login_maps: more than %d tables",
				 SENDER_LOGIN_MAX_TABLES);
			goto fail;
		}
		char *spec = xstrndup(start, (size_t)(p - start));
		struct table *t = table_open(spec, err, errlen);
		free(spec);
		if (t == NULL)
			goto fail;
		table_set_cache(t, &s->cache);
		conf->tables[conf->ntables++] = t;
	}
	if (conf->ntables == 0 && conf->policy != SENDER_LOGIN_NONE)
		log_warn("restriction %s ignored: no definition of sender_login_maps",
			 sender_login_policy_name(conf->policy));
	return conf;
fail:
	sender_login_conf_free(&conf);
	return NULL;
}

void sender_login_conf_free(struct sender_login_conf **confp)
{
	struct sender_login_conf *conf = *confp;
	if (conf == NULL)
		return;
	for (size_t i = 0; i < conf->ntables; i++)
		table_free(&conf->tables[i]);
	free(conf);
	*confp = NULL;
}

enum sender_login_policy sender_login_conf_policy(const struct sender_login_conf *conf)
{
	return conf->policy;
}

/* ------------------------------------------------------------------ */
/* per worker */

static void sender_login_closed(struct defer_queue *q)
{
	free(list_entry(q, struct sender_login, ready));
}

static struct sender_login *sender_login_make(const struct sender_login_conf *conf, uv_loop_t *loop,
					      struct table_registry *tables, struct config *cfg)
{
	struct sender_login *sl = xcalloc(1, sizeof(*sl));
	sl->conf = conf;
	sl->tables = tables;
	for (size_t i = 0; i < conf->ntables; i++)
		sl->inst[i] = tables ? table_registry_get(tables, cfg, conf->tables[i])
				     : table_inst_new(conf->tables[i], loop);
	sl->loop = loop;
	defer_queue_init(&sl->ready, loop);
	list_init(&sl->live);
	return sl;
}

struct sender_login *sender_login_new(const struct sender_login_conf *conf, uv_loop_t *loop)
{
	return sender_login_make(conf, loop, NULL, NULL);
}

struct sender_login *sender_login_new_shared(const struct sender_login_conf *conf,
					     struct table_registry *tables, struct config *cfg)
{
	return sender_login_make(conf, table_registry_loop(tables), tables, cfg);
}

static void sender_login_req_free(struct sender_login_req *req)
{
	defer_cancel(&req->ready);
	list_remove(&req->live);
	free(req->login);
	free(req);
}

void sender_login_free(struct sender_login **slp)
{
	struct sender_login *sl = *slp;
	if (sl == NULL)
		return;
	*slp = NULL;
	/* Safe inside a verdict's callback: the rest of that turn is dropped,
	   and sl's memory lives until the queue is closed. */
	defer_queue_close(&sl->ready, sender_login_closed);
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &sl->live)
	{
		struct sender_login_req *req = list_entry(l, struct sender_login_req, live);
		table_cancel(&req->tr);
		sender_login_req_free(req);
	}
	for (size_t i = 0; i < sl->conf->ntables; i++) {
		if (sl->tables != NULL)
			table_registry_put(sl->tables, &sl->inst[i]);
		else
			table_inst_close(&sl->inst[i]);
	}
}

static void sender_login_ready_cb(struct defer_item *item)
{
	struct sender_login_req *req = list_entry(item, struct sender_login_req, ready);
	sender_login_cb *cb = req->cb;
	void *ctx = req->ctx;
	enum sender_login_result result = req->result;
	sender_login_req_free(req);
	cb(ctx, result, NULL);
}

static void sender_login_defer(struct sender_login_req *req, enum sender_login_result result)
{
	req->result = result;
	defer_push(&req->sl->ready, &req->ready, sender_login_ready_cb);
}

/* The verdict once the owner search is over (owners NULL: not listed). */
static enum sender_login_result sender_login_verdict(const struct sender_login_req *req,
						     const char *owners)
{
	bool authenticated = req->login != NULL;
	switch (req->policy) {
	case SENDER_LOGIN_NONE:
		return SENDER_LOGIN_NOT_CHECKED;
	case SENDER_LOGIN_REJECT_UNAUTHENTICATED:
		if (authenticated)
			return SENDER_LOGIN_NOT_CHECKED;
		break;
	case SENDER_LOGIN_REJECT_AUTHENTICATED:
		if (!authenticated)
			return SENDER_LOGIN_NOT_CHECKED;
		break;
	case SENDER_LOGIN_REJECT_KNOWN:
	case SENDER_LOGIN_REJECT_MISMATCH:
		break;
	}
	if (!authenticated)
		return owners ? SENDER_LOGIN_NOT_LOGGED_IN : SENDER_LOGIN_NOT_CHECKED;
	if (owners == NULL)
		return req->policy == SENDER_LOGIN_REJECT_KNOWN ? SENDER_LOGIN_NOT_CHECKED
								: SENDER_LOGIN_NOT_OWNED;
	return sender_login_owner_match(owners, req->login) ? SENDER_LOGIN_OWNED
							    : SENDER_LOGIN_NOT_OWNED;
}

static void sender_login_next(struct sender_login_req *req);

/* Frees req first, then calls back: the callback may free everything. */
static void sender_login_finish(struct sender_login_req *req, enum sender_login_result result,
				const char *owners)
{
	sender_login_cb *cb = req->cb;
	void *ctx = req->ctx;
	sender_login_req_free(req);
	cb(ctx, result, owners);
}

/* One line per SENDER_LOGIN_TEMPFAIL_LOG_MS and worker, with the count of
 * failures since the previous line: during an outage every MAIL fails, and
 * the table itself logs why (the host that is down, and when it is back). */
#define SENDER_LOGIN_TEMPFAIL_LOG_MS 10000

static void sender_login_log_tempfail(struct sender_login_req *req)
{
	static _Thread_local uint64_t last;
	static _Thread_local unsigned long quiet;
	uint64_t now = uv_now(req->sl->loop);
	if (last != 0 && now - last < SENDER_LOGIN_TEMPFAIL_LOG_MS) {
		quiet++;
		return;
	}
	if (quiet > 0)
		log_warn("%s: lookup of a sender address failed (and %lu more in the last %.0f s)",
			 table_name(table_inst_table(req->sl->inst[req->tix])), quiet,
			 (double)(now - last) / 1000.0);
	else
		log_warn("%s: lookup of a sender address failed",
			 table_name(table_inst_table(req->sl->inst[req->tix])));
	last = now;
	quiet = 0;
}

static void sender_login_table_cb(void *ctx, enum table_status status, const char *value)
{
	struct sender_login_req *req = ctx;
	req->tr = NULL;
	if (status == TABLE_OK || status == TABLE_TEMPFAIL) {
		enum sender_login_result r = status == TABLE_TEMPFAIL
						     ? SENDER_LOGIN_TEMPFAIL
						     : sender_login_verdict(req, value);
		if (status == TABLE_TEMPFAIL)
			sender_login_log_tempfail(req);
		sender_login_finish(req, r, value);
		return;
	}
	/* not found: next table for this key, then the next key */
	if (++req->tix >= req->sl->conf->ntables) {
		req->tix = 0;
		req->key += strlen(req->key) + 1;
		req->ki++;
	}
	sender_login_next(req);
}

static void sender_login_next(struct sender_login_req *req)
{
	if (req->ki >= req->nkeys) {
		sender_login_finish(req, sender_login_verdict(req, NULL), NULL);
		return;
	}
	req->tr = table_lookup(req->sl->inst[req->tix], req->key, sender_login_table_cb, req);
}

struct sender_login_req *sender_login_check_policy(struct sender_login *sl,
						   enum sender_login_policy policy,
						   const char *addr, const char *login,
						   sender_login_cb *cb, void *ctx)
{
	struct sender_login_req *req = xcalloc(1, sizeof(*req));
	req->sl = sl;
	req->cb = cb;
	req->ctx = ctx;
	req->policy = policy;
	req->login = login ? xstrdup(login) : NULL;
	list_add_head(&sl->live, &req->live);

	bool applies = policy != SENDER_LOGIN_NONE && sl->conf->ntables > 0 &&
		       !(policy == SENDER_LOGIN_REJECT_AUTHENTICATED && !login) &&
		       !(policy == SENDER_LOGIN_REJECT_UNAUTHENTICATED && login);
	/* The null sender is never checked (Postfix; RFC 6409 §3.2). */
	if (!applies || addr == NULL || *addr == 0) {
		sender_login_defer(req, SENDER_LOGIN_NOT_CHECKED);
		return req;
	}
	req->nkeys = addrkey_keys(addr, sl->conf->delimiters, req->keys, sizeof(req->keys));
	if (req->nkeys <= 0) {
		/* longer than any valid path (RFC 5321 §4.5.3.1.3): nobody owns it */
		sender_login_defer(req, login || policy == SENDER_LOGIN_REJECT_KNOWN
						? sender_login_verdict(req, NULL)
						: SENDER_LOGIN_NOT_CHECKED);
		return req;
	}
	req->key = req->keys;
	/* table_lookup() defers its completion, so this cannot call back now */
	sender_login_next(req);
	return req;
}

struct sender_login_req *sender_login_check(struct sender_login *sl, const char *sender,
					    const char *login, sender_login_cb *cb, void *ctx)
{
	return sender_login_check_policy(sl, sl->conf->policy, sender, login, cb, ctx);
}

void sender_login_cancel(struct sender_login_req **reqp)
{
	struct sender_login_req *req = *reqp;
	if (req == NULL)
		return;
	*reqp = NULL;
	table_cancel(&req->tr);
	sender_login_req_free(req); /* also takes it off the ready queue */
}
