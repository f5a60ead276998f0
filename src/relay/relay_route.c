/* relay_route: where a transaction goes and as whom — transport_maps by
 * the first recipient, else sender_relay_maps, else relayhost;
 * relay_password_maps per destination — with the keys of each in Postfix's
 * order (relay/relay.h, docs/routing.md). */
#include "config.h"
#include "relay/relay_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "relay/relay_generic.h"

/* ---- loading: the tables of a snapshot ---- */

static void relay_unload(struct config *cfg)
{
	table_free(&cfg->relay_password_table);
	table_free(&cfg->sender_relay_table);
	table_free(&cfg->transport_table);
}

/* Opens one of the maps; errors read like the configuration parser's
 * ("FILE:LINE: key: why"), as they did when the parser opened them. */
static bool relay_load_table(struct config *cfg, const char *key, const char *spec,
			     struct table **slot, char *err, size_t errlen)
{
	if (spec == NULL)
		return true;
	char why[400], where[300];
	*slot = table_open(spec, why, sizeof(why));
	if (*slot == NULL) {
		snprintf(err, errlen, "%s: %s: %s",
			 config_key_origin(cfg, key, where, sizeof(where)), key, why);
		return false;
	}
	return true;
}

bool relay_load(struct config *cfg, char *err, size_t errlen)
{
	config_on_free(cfg, relay_unload);
	char csv[1024], why[200], where[300];
	if (cfg->dns_servers != NULL &&
	    !dns_servers_parse(cfg->dns_servers, csv, sizeof(csv), why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s",
			 config_key_origin(cfg, "dns_servers", where, sizeof(where)), why);
		return false;
	}
	return relay_load_table(cfg, "relay_password_maps", cfg->relay_password_maps,
				&cfg->relay_password_table, err, errlen) &&
	       relay_load_table(cfg, "sender_relay_maps", cfg->sender_relay_maps,
				&cfg->sender_relay_table, err, errlen) &&
	       relay_load_table(cfg, "transport_maps", cfg->transport_maps, &cfg->transport_table,
				err, errlen) &&
	       relay_generic_load(cfg, err, errlen);
}

/* ---- keys and credentials (pure) ---- */

int relay_route_keys(const char *sender, const char *delimiters, char *keys, size_t keyssz)
{
	if (sender[0] == '\0') {
		/* Postfix empty_address_relayhost_maps_lookup_key */
		if (keyssz < 3)
			return -1;
		memcpy(keys, "<>", 3);
		return 1;
	}
	return addrkey_keys(sender, delimiters, keys, keyssz);
}

/* The next hop as the admin wrote it, without a transport prefix: Postfix
 * looks up "[host]:port", never "smtp:[host]:port". */
static const char *relay_dest_nexthop(const struct relay_dest *d)
{
	const char *s = d->text;
	static const char *const prefixes[] = {"lmtp:inet:", "lmtp:", "smtps:", "smtp:"};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t n = strlen(prefixes[i]);
		if (strncmp(s, prefixes[i], n) == 0)
			return s + n;
	}
	return s;
}

static int relay_keys_add(char *keys, size_t keyssz, size_t *used, const char *k)
{
	size_t n = strlen(k) + 1;
	if (*used + n > keyssz)
		return -1;
	memcpy(keys + *used, k, n);
	*used += n;
	return 0;
}

int relay_cred_keys(const struct relay_dest *d, const char *sender, bool sender_dependent,
		    const char *delimiters, char *keys, size_t keyssz)
{
	size_t used = 0;
	int n = 0;
	/* 1. the sender, when the admin asked for per-sender accounts */
	if (sender_dependent && sender != NULL && sender[0] != '\0') {
		int k = addrkey_keys(sender, delimiters, keys, keyssz);
		if (k < 0)
			return -1;
		for (int i = 0; i < k; i++)
			used += strlen(keys + used) + 1;
		n = k;
	}
	if (d->unix_path != NULL) {
		if (relay_keys_add(keys, keyssz, &used, relay_dest_nexthop(d)) < 0)
			return -1;
		return n + 1;
	}
	/* 2. the host name, 3. the destination as written (smtp_sasl_glue.c) */
	if (relay_keys_add(keys, keyssz, &used, d->host) < 0)
		return -1;
	n++;
	const char *hop = relay_dest_nexthop(d);
	if (strcasecmp(hop, d->host) != 0) {
		if (relay_keys_add(keys, keyssz, &used, hop) < 0)
			return -1;
		n++;
	}
	return n;
}

/* ---- transport_maps (pure) ---- */

int relay_transport_keys(const char *rcpt, const char *delimiters, char *keys, size_t keyssz)
{
	char addr[SMTP_PATH_MAX + 1];
	size_t local, cut;
	if (addrkey_internal(rcpt, delimiters, addr, sizeof(addr), &local, &cut) < 0)
		return -1;
	for (char *p = addr; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t used = 0;
	int n = 0;
	/* 1. the full address, 2. without the extension (Postfix transport(5)) */
	if (relay_keys_add(keys, keyssz, &used, addr) < 0)
		return -1;
	n++;
	const char *domain = addr[local] == '@' ? addr + local + 1 : NULL;
	if (cut > 0 && domain != NULL) {
		char k[SMTP_PATH_MAX + 1];
		snprintf(k, sizeof(k), "%.*s%s", (int)cut, addr, addr + local);
		if (relay_keys_add(keys, keyssz, &used, k) < 0)
			return -1;
		n++;
	}
	/* 3. the domain, 4. ".parent" for each parent domain */
	if (domain != NULL && domain[0] != '\0') {
		if (relay_keys_add(keys, keyssz, &used, domain) < 0)
			return -1;
		n++;
		/* an address literal has no parents */
		for (const char *dot = domain[0] == '[' ? NULL : strchr(domain + 1, '.');
		     dot != NULL && dot[1] != '\0'; dot = strchr(dot + 1, '.')) {
			if (relay_keys_add(keys, keyssz, &used, dot) < 0)
				return -1;
			n++;
		}
	}
	/* 5. the wild card, unique to transport tables */
	if (relay_keys_add(keys, keyssz, &used, "*") < 0)
		return -1;
	return n + 1;
}

/* "X.Y.Z " at the start of an error: text (error(8)): its length, else 0. */
static size_t relay_transport_dsn(const char *s, char cls)
{
	const char *p = s;
	if (*p++ != cls || *p++ != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t digits = 0;
		while (isdigit((unsigned char)p[digits]) && digits < 3)
			digits++;
		if (digits == 0)
			return 0;
		p += digits;
		if (part == 0 && *p++ != '.')
			return 0;
	}
	return *p == ' ' || *p == '\0' ? (size_t)(p - s) : 0;
}

enum relay_transport relay_transport_parse(const char *value, char *out, size_t outsz)
{
	while (*value == ' ' || *value == '\t')
		value++;
	size_t len = strlen(value);
	while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	/* A value becomes a reply text or a destination: printable ASCII only. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e)
			return RELAY_TRANSPORT_BAD;
	const char *colon = memchr(value, ':', len);
	size_t tl = colon != NULL ? (size_t)(colon - value) : len;
	const char *hop = colon != NULL ? colon + 1 : value + len;
	size_t hl = len - (size_t)(hop - value);
	while (hl > 0 && (*hop == ' ' || *hop == '\t'))
		hop++, hl--;
	const char *prefix = NULL;
	if (tl == 0 || (tl == 4 && strncasecmp(value, "smtp", 4) == 0) ||
	    (tl == 5 && strncasecmp(value, "relay", 5) == 0)) {
		if (hl == 0)
			return RELAY_TRANSPORT_DEFAULT;
		prefix = "smtp:";
	} else if (tl == 4 && strncasecmp(value, "lmtp", 4) == 0) {
		prefix = "lmtp:";
	} else if (tl == 5 && strncasecmp(value, "smtps", 5) == 0) {
		prefix = "smtps:";
	} else if ((tl == 5 && strncasecmp(value, "error", 5) == 0) ||
		   (tl == 5 && strncasecmp(value, "retry", 5) == 0)) {
		if ((size_t)snprintf(out, outsz, "%.*s", (int)hl, hop) >= outsz)
			return RELAY_TRANSPORT_BAD;
		return tolower((unsigned char)value[0]) == 'e' ? RELAY_TRANSPORT_ERROR
							       : RELAY_TRANSPORT_RETRY;
	} else {
		if ((size_t)snprintf(out, outsz, "%.*s", (int)tl, value) >= outsz)
			return RELAY_TRANSPORT_BAD;
		return RELAY_TRANSPORT_UNSUPPORTED;
	}
	if (hl == 0 || (size_t)snprintf(out, outsz, "%s%.*s", prefix, (int)hl, hop) >= outsz)
		return RELAY_TRANSPORT_BAD;
	return RELAY_TRANSPORT_DEST;
}

struct relay_cred *relay_cred_parse(const char *value, const char *key)
{
	size_t vl = strlen(value), kl = strlen(key);
	size_t size = vl + 2 + kl + 1;
	struct relay_cred *c = xcalloc(1, sizeof(*c) + size);
	c->size = size;
	memcpy(c->mem, value, vl);
	/* split at the first ':' (smtp_sasl_password_result_delimiter) */
	char *colon = memchr(c->mem, ':', vl);
	if (colon != NULL) {
		*colon = '\0';
		c->pass = colon + 1;
	} else {
		c->pass = c->mem + vl + 1; /* "" */
	}
	c->user = c->mem;
	char *k = c->mem + vl + 2;
	memcpy(k, key, kl);
	c->key = k;
	return c;
}

void relay_cred_free(struct relay_cred **cp)
{
	struct relay_cred *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	explicit_bzero(c, sizeof(*c) + c->size);
	free(c);
}

struct relay_cred *relay_cred_dup(const struct relay_cred *c)
{
	if (c == NULL)
		return NULL;
	struct relay_cred *d = xmalloc(sizeof(*d) + c->size);
	memcpy(d, c, sizeof(*d) + c->size);
	d->user = d->mem + (c->user - c->mem);
	d->pass = d->mem + (c->pass - c->mem);
	d->key = d->mem + (c->key - c->mem);
	return d;
}

bool relay_cred_equal(const struct relay_cred *a, const struct relay_cred *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a->user, b->user) == 0 && strcmp(a->pass, b->pass) == 0;
}

/* ---- the lookups: route, then credentials, then a connection ---- */

static const char *relay_route_delimiters(const struct config *cfg)
{
	return cfg->recipient_delimiter != NULL ? cfg->recipient_delimiter : "";
}

static void relay_route_lookup_cb(void *ctx, enum table_status st, const char *value);

static void relay_route_lookup_next(struct relay_txn *t)
{
	t->req = table_lookup(t->lookup_ti, t->key, relay_route_lookup_cb, t);
}

static void relay_route_lookup_cb(void *ctx, enum table_status st, const char *value)
{
	struct relay_txn *t = ctx;
	t->req = NULL;
	if (st == TABLE_NOTFOUND && --t->keys_left > 0) {
		t->key += strlen(t->key) + 1;
		relay_route_lookup_next(t);
		return;
	}
	t->lookup_done(t, st, value, t->key);
}

/* Looks the keys (already in t->keys) up in order; the first answer that is
 * not NOTFOUND ends the search. Completes through done, never inside this
 * call (table_lookup defers). nkeys > 0. */
static void relay_route_lookup(struct relay_txn *t, struct table_inst *ti, int nkeys,
			       relay_route_lookup_done *done)
{
	t->lookup_ti = ti;
	t->lookup_done = done;
	t->key = t->keys;
	t->keys_left = nkeys;
	relay_route_lookup_next(t);
}

static void relay_route_fail_later(struct relay_txn *t, int code, const char *enh, const char *text)
{
	struct smtp_reply r;
	relay_reply_make(&r, code, enh, "%s", text);
	relay_txn_answer_later(t, &r);
}

void relay_route_clear(struct relay_txn *t)
{
	if (t->creds != NULL) {
		for (size_t i = 0; i < t->nroute; i++)
			relay_cred_free(&t->creds[i]);
		free(t->creds);
		t->creds = NULL;
	}
	if (t->own_route != NULL)
		config_relay_free(t->own_route, t->nown_route);
	t->own_route = NULL;
	t->nown_route = 0;
	t->route = NULL;
	t->nroute = 0;
}

static void relay_route_cred_done(struct relay_txn *t, enum table_status st, const char *value,
				  const char *key)
{
	if (st == TABLE_TEMPFAIL) {
		log_warn("%s: relay_password_maps %s: temporary lookup failure for %s", t->log_id,
			 table_name(t->cfg->relay_password_table), key);
		relay_route_fail_later(t, 451, "4.3.0",
				       "Error: temporary lookup failure, try again later");
		return;
	}
	if (st == TABLE_OK)
		t->creds[t->cred_idx] = relay_cred_parse(value, key);
	t->cred_idx++;
	relay_route_creds_next(t);
}

/* Credentials for each destination of the route, before any connection:
 * they are part of the pool key. */
void relay_route_creds_next(struct relay_txn *t)
{
	while (t->maps.passwords != NULL && t->cred_idx < t->nroute) {
		int n = relay_cred_keys(&t->route[t->cred_idx], t->mail.path.addr,
					t->cfg->sender_dependent_authentication,
					relay_route_delimiters(t->cfg), t->keys, sizeof(t->keys));
		if (n > 0) {
			relay_route_lookup(t, t->maps.passwords, n, relay_route_cred_done);
			return;
		}
		t->cred_idx++;
	}
	relay_txn_connect(t);
}

static void relay_route_set(struct relay_txn *t, const struct relay_dest *d, size_t n)
{
	t->route = d;
	t->nroute = n;
	t->creds = xcalloc(n, sizeof(*t->creds));
	t->cred_idx = 0;
	relay_route_creds_next(t);
}

static void relay_route_done(struct relay_txn *t, enum table_status st, const char *value,
			     const char *key)
{
	const char *maps = table_name(t->cfg->sender_relay_table);
	if (st == TABLE_TEMPFAIL) {
		log_warn("%s: sender_relay_maps %s: temporary lookup failure for %s", t->log_id,
			 maps, key);
		relay_route_fail_later(t, 451, "4.3.0",
				       "Error: temporary lookup failure, try again later");
		return;
	}
	/* DUNNO stops the search without an answer (Postfix access(5)). */
	if (st == TABLE_NOTFOUND || strcasecmp(value, "DUNNO") == 0) {
		relay_route_set(t, t->cfg->relay, t->cfg->nrelay);
		return;
	}
	char err[300];
	if (!config_relay_parse(value, &t->own_route, &t->nown_route, err, sizeof(err))) {
		char v[200];
		log_sanitize(v, sizeof(v), value, strlen(value));
		log_err("%s: sender_relay_maps %s: bad destination for %s: \"%s\": %s", t->log_id,
			maps, key, v, err);
		relay_route_fail_later(t, 451, "4.3.5", "Error: server configuration problem");
		return;
	}
	log_debug("%s: sender_relay_maps: %s -> %s", t->log_id, key, value);
	relay_route_set(t, t->own_route, t->nown_route);
}

/* The sender's route: sender_relay_maps, else relayhost. */
static void relay_route_sender(struct relay_txn *t)
{
	if (t->mode == TXN_NORMAL && t->maps.routes != NULL) {
		int n = relay_route_keys(t->mail.path.addr, relay_route_delimiters(t->cfg), t->keys,
					 sizeof(t->keys));
		if (n > 0) {
			relay_route_lookup(t, t->maps.routes, n, relay_route_done);
			return;
		}
	}
	relay_route_set(t, t->cfg->relay, t->cfg->nrelay);
}

/* A transport_maps answer for t->key as one decision: hop_r gets the next
 * hop ("" = the sender's route), or *refusal_r the reply for the recipient.
 * Returns false when the recipient is refused. */
static bool relay_route_transport_decide(struct relay_txn *t, enum table_status st,
					 const char *value, char *hop_r, size_t hopsz,
					 struct smtp_reply *refusal_r)
{
	const char *maps = table_name(t->cfg->transport_table);
	hop_r[0] = '\0';
	if (st == TABLE_TEMPFAIL) {
		log_warn("%s: transport_maps %s: temporary lookup failure for %s", t->log_id, maps,
			 t->key);
		relay_reply_make(refusal_r, 451, "4.3.0",
				 "Error: temporary lookup failure, try again later");
		return false;
	}
	if (st == TABLE_NOTFOUND)
		return true;
	char out[RELAY_HOP_MAX], v[200];
	enum relay_transport kind = relay_transport_parse(value, out, sizeof(out));
	switch (kind) {
	case RELAY_TRANSPORT_DEFAULT:
		return true;
	case RELAY_TRANSPORT_DEST:
		snprintf(hop_r, hopsz, "%s", out);
		return true;
	case RELAY_TRANSPORT_ERROR:
	case RELAY_TRANSPORT_RETRY: {
		bool perm = kind == RELAY_TRANSPORT_ERROR;
		size_t dl = relay_transport_dsn(out, perm ? '5' : '4');
		const char *text = out + dl + (out[dl] == ' ');
		char enh[16];
		snprintf(enh, sizeof(enh), "%.*s", dl ? (int)dl : 5,
			 dl     ? out
			 : perm ? "5.0.0"
				: "4.0.0");
		log_info("%s: transport_maps %s: %s -> %s: refused", t->log_id, maps, t->key,
			 perm ? "error" : "retry");
		relay_reply_make(refusal_r, perm ? 550 : 450, enh, "Error: %s",
				 text[0] ? text : "mail for this destination is not accepted");
		return false;
	}
	case RELAY_TRANSPORT_UNSUPPORTED:
	case RELAY_TRANSPORT_BAD:
		break;
	}
	log_sanitize(v, sizeof(v), value, strlen(value));
	log_err("%s: transport_maps %s: %s for %s: \"%s\" (docs/routing.md)", t->log_id, maps,
		kind == RELAY_TRANSPORT_BAD ? "unusable value" : "unsupported transport", t->key,
		v);
	relay_reply_make(refusal_r, 451, "4.3.5", "Error: server configuration problem");
	return false;
}

static void relay_route_transport_done(struct relay_txn *t, enum table_status st, const char *value,
				       const char *key)
{
	(void)key;
	struct smtp_reply refusal;
	if (!relay_route_transport_decide(t, st, value, t->route_hop, sizeof(t->route_hop),
					  &refusal)) {
		/* The owner hears it as MAIL's answer; later, as it may free t
		   and with it the table instance whose callback this is. */
		relay_txn_answer_later(t, &refusal);
		return;
	}
	if (t->route_hop[0] == '\0') {
		relay_route_sender(t);
		return;
	}
	char err[300];
	if (!config_relay_parse(t->route_hop, &t->own_route, &t->nown_route, err, sizeof(err))) {
		log_err("%s: transport_maps %s: bad destination for %s: \"%s\": %s", t->log_id,
			table_name(t->cfg->transport_table), t->key, t->route_hop, err);
		relay_route_fail_later(t, 451, "4.3.5", "Error: server configuration problem");
		return;
	}
	log_debug("%s: transport_maps: %s -> %s", t->log_id, t->key, t->route_hop);
	relay_route_set(t, t->own_route, t->nown_route);
}

/* The keys of a domain with more labels than RELAY_KEYS_MAX holds (each
 * parent is a key): refused rather than routed without its entry. */
static void relay_route_too_many_keys(struct relay_txn *t)
{
	relay_route_fail_later(t, 550, "5.1.2", "Error: too many labels in the recipient's domain");
}

/* Route (transport_maps by the first recipient, else sender_relay_maps,
 * else relayhost), then credentials, then a pooled or a new connection.
 * Everything completes later. */
void relay_route_begin(struct relay_txn *t)
{
	relay_route_clear(t);
	t->has_policy_fail = false;
	t->retried = false;
	t->route_hop[0] = '\0';
	if (t->mode == TXN_NORMAL && t->maps.transports != NULL && t->route_rcpt != NULL) {
		int n = relay_transport_keys(t->route_rcpt, relay_route_delimiters(t->cfg), t->keys,
					     sizeof(t->keys));
		if (n < 0) {
			relay_route_too_many_keys(t);
			return;
		}
		relay_route_lookup(t, t->maps.transports, n, relay_route_transport_done);
		return;
	}
	relay_route_sender(t);
}

/* ---- a recipient after the first: same next hop, or a new transaction ---- */

static void relay_route_rcpt_done(struct relay_txn *t, enum table_status st, const char *value,
				  const char *key)
{
	(void)key;
	char hop[RELAY_HOP_MAX];
	struct smtp_reply r;
	if (!relay_route_transport_decide(t, st, value, hop, sizeof(hop), &r)) {
		relay_txn_answer_later(t, &r);
		return;
	}
	if (strcasecmp(hop, t->route_hop) != 0) {
		/* One client transaction is one downstream transaction: a
		   recipient for another next hop goes in the client's next
		   transaction (RFC 5321 §3.3, §4.5.3.1.10; docs/routing.md). */
		log_info("%s: transport_maps: <%s> goes to %s, this transaction to %s: 452",
			 t->log_id, t->rcpt.path.addr, hop[0] ? hop : "the default route",
			 t->route_hop[0] ? t->route_hop : "the default route");
		relay_reply_make(&r, 452, "4.5.3",
				 "Error: too many recipients for one transaction; send the rest "
				 "in a new transaction");
		relay_txn_answer_later(t, &r);
		return;
	}
	relay_txn_rcpt_go(t);
}

void relay_route_rcpt(struct relay_txn *t, const struct smtp_rcpt_args *a)
{
	t->rcpt = *a;
	/* The first recipient's lookup chose the route already. */
	int n = t->route_rcpt != NULL && strcmp(a->path.addr, t->route_rcpt) == 0
			? 0
			: relay_transport_keys(a->path.addr, relay_route_delimiters(t->cfg),
					       t->keys, sizeof(t->keys));
	if (n == 0) {
		relay_txn_rcpt_go(t);
		return;
	}
	if (n < 0) {
		relay_route_too_many_keys(t);
		return;
	}
	relay_route_lookup(t, t->maps.transports, n, relay_route_rcpt_done);
}
