/* relay_pool: one per worker loop — idle downstream connections, keyed by
 * destination, TLS policy, trust store and credentials; the probe that
 * learns the downstream's capabilities. (The table instances of each
 * snapshot come from the worker's lookup/table_registry.h.) */
#include "config.h"
#include "relay/relay_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/config.h"

struct relay_pool *relay_pool_new(uv_loop_t *loop, struct table_registry *tables)
{
	struct relay_pool *p = xcalloc(1, sizeof(*p));
	p->loop = loop;
	p->tables = tables;
	list_init(&p->conns);
	gnutls_certificate_allocate_credentials(&p->creds);
	gnutls_certificate_set_x509_system_trust(p->creds);
	gnutls_priority_init(&p->prio, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", NULL);
	return p;
}

void relay_pool_remove(struct relay_pool *p, struct relay_conn *rc)
{
	for (struct relay_conn **pp = &p->idle; *pp != NULL; pp = &(*pp)->next_idle) {
		if (*pp == rc) {
			*pp = rc->next_idle;
			rc->next_idle = NULL;
			return;
		}
	}
}

void relay_pool_flush(struct relay_pool *p)
{
	while (p->idle != NULL) {
		struct relay_conn *rc = p->idle;
		p->idle = rc->next_idle;
		rc->next_idle = NULL;
		relay_conn_close(rc, true);
	}
}

void relay_pool_free(struct relay_pool **pp)
{
	struct relay_pool *p = *pp;
	if (p == NULL)
		return;
	*pp = NULL;
	relay_txn_free(&p->probe);
	relay_pool_flush(p);
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &p->conns)
	{
		relay_conn_close(list_entry(l, struct relay_conn, link), false);
	}
	dns_free(&p->dns);
	p->dying = true; /* after the loop: a close that frees at once keeps p */
	relay_pool_conn_gone(p);
}

void relay_pool_conn_gone(struct relay_pool *p)
{
	if (!p->dying || !list_empty(&p->conns))
		return;
	gnutls_certificate_free_credentials(p->creds);
	gnutls_priority_deinit(p->prio);
	free(p);
}

struct dns *relay_pool_dns(struct relay_pool *p)
{
	if (p->dns == NULL)
		p->dns = dns_new(p->loop);
	return p->dns;
}

void relay_txn_mx_clear(struct relay_txn *t)
{
	free(t->mx);
	t->mx = NULL;
	t->nmx = t->mx_idx = 0;
}

bool relay_pool_caps(const struct relay_pool *p, struct smtp_caps *caps_r)
{
	if (!p->caps_known)
		return false;
	*caps_r = p->caps;
	return true;
}

void relay_pool_park(struct relay_conn *rc)
{
	rc->txn = NULL;
	if (rc->closed)
		return;
	if (rc->uses >= rc->reuse_limit || rc->idle_timeout_ms == 0 || rc->pool->dying) {
		relay_conn_close(rc, true);
		return;
	}
	rc->state = RS_READY;
	rc->next_idle = rc->pool->idle;
	rc->pool->idle = rc;
	conn_set_timeout(rc->conn, rc->idle_timeout_ms);
}

gnutls_certificate_credentials_t relay_pool_tls_creds(struct relay_pool *p,
						      const struct config *cfg)
{
	return cfg->relay_tls_ca_creds != NULL ? cfg->relay_tls_ca_creds : p->creds;
}

/* An idle connection to one of the route's destinations that was opened
 * with the same TLS policy, trust and credentials. */
struct relay_conn *relay_pool_take(struct relay_pool *p, struct relay_txn *t)
{
	gnutls_certificate_credentials_t tc = relay_pool_tls_creds(p, t->cfg);
	for (struct relay_conn **pp = &p->idle; *pp != NULL; pp = &(*pp)->next_idle) {
		struct relay_conn *rc = *pp;
		for (size_t i = 0; i < t->nroute; i++) {
			if (strcmp(rc->dest, t->route[i].text) == 0 &&
			    rc->tls_level == t->cfg->relay_tls && rc->tls_creds == tc &&
			    rc->allow_plaintext_auth == t->cfg->relay_sasl_allow_plaintext &&
			    relay_cred_equal(rc->cred, t->creds[i])) {
				*pp = rc->next_idle;
				rc->next_idle = NULL;
				conn_clear_timeout(rc->conn);
				return rc;
			}
		}
	}
	return NULL;
}

static void relay_pool_probe_cb(void *ctx, const struct smtp_reply *r)
{
	(void)r;
	struct relay_pool *pool = ctx;
	relay_txn_free(&pool->probe);
}

void relay_pool_probe(struct relay_pool *pool, struct config *cfg)
{
	/* A transaction with no owner: it connects (with the relayhost's
	   credentials), learns the capabilities and leaves the connection in
	   the pool. */
	if (pool->probe != NULL)
		return;
	pool->probe = relay_txn_new(pool, cfg, "relay probe", relay_pool_probe_cb, NULL, pool);
	pool->probe->mode = TXN_PROBE;
	relay_route_begin(pool->probe);
}
