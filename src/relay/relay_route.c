/* relay_route: where a transaction goes and as whom — sender_relay_maps,
 * else relayhost; relay_password_maps per destination — with the keys of
 * both in Postfix's order (relay/relay.h). */
#include "config.h"
#include "relay/relay_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "lookup/addrkey.h"
#include "lookup/table.h"

/* ---- loading: the tables of a snapshot ---- */

static void relay_unload(struct config *cfg)
{
	table_free(&cfg->relay_password_table);
	table_free(&cfg->sender_relay_table);
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
				&cfg->sender_relay_table, err, errlen);
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

/* Route (sender_relay_maps, else relayhost), then credentials, then a
 * pooled or a new connection. Everything completes later. */
void relay_route_begin(struct relay_txn *t)
{
	relay_route_clear(t);
	t->has_policy_fail = false;
	t->retried = false;
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
