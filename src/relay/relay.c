#include "config.h"
#include "relay/relay.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base64.h"
#include "core/buf.h"
#include "core/log.h"
#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "net/conn.h"
#include "smtp/data.h"

/* Stop feeding content when this much is queued toward the downstream: the
 * connection's own output bound (docs/design.md invariant 5). */
#define RELAY_HIGH_WATER CONN_OUT_HIGH
/* RFC 4954 §4: a command line, initial response included, stays within 512. */
#define RELAY_AUTH_LINE_MAX 512
#define RELAY_KEYS_MAX 2048

enum relay_state {
	RS_RESOLVING,
	RS_CONNECTING,
	RS_TLS_WRAP,   /* implicit TLS handshake before the greeting */
	RS_GREETING,
	RS_EHLO,
	RS_STARTTLS,
	RS_TLS,        /* STARTTLS handshake */
	RS_EHLO2,
	RS_AUTH_PLAIN,      /* AUTH PLAIN sent (with or without the response) */
	RS_AUTH_PLAIN_RESP, /* PLAIN response sent after an empty 334 */
	RS_AUTH_LOGIN,      /* AUTH LOGIN sent, waiting for the user name challenge */
	RS_AUTH_LOGIN_USER, /* user name sent, waiting for the password challenge */
	RS_AUTH_LOGIN_PASS, /* password sent */
	RS_AUTH_CANCEL,     /* "*" sent after a bad challenge (RFC 4954 §4) */
	RS_READY,      /* greeted; idle in the pool or between commands */
	RS_MAIL,
	RS_RCPT,
	RS_DATA,
	RS_BODY,
	RS_DATA_END,
	RS_RSET,
	RS_QUIT,
};

static const char *const relay_state_names[] = {
	[RS_RESOLVING] = "resolving",
	[RS_CONNECTING] = "connect",
	[RS_TLS_WRAP] = "TLS handshake",
	[RS_GREETING] = "greeting",
	[RS_EHLO] = "EHLO",
	[RS_STARTTLS] = "STARTTLS",
	[RS_TLS] = "TLS handshake",
	[RS_EHLO2] = "EHLO after STARTTLS",
	[RS_AUTH_PLAIN] = "AUTH PLAIN",
	[RS_AUTH_PLAIN_RESP] = "AUTH PLAIN",
	[RS_AUTH_LOGIN] = "AUTH LOGIN",
	[RS_AUTH_LOGIN_USER] = "AUTH LOGIN",
	[RS_AUTH_LOGIN_PASS] = "AUTH LOGIN",
	[RS_AUTH_CANCEL] = "AUTH",
	[RS_READY] = "idle",
	[RS_MAIL] = "MAIL FROM",
	[RS_RCPT] = "RCPT TO",
	[RS_DATA] = "DATA",
	[RS_BODY] = "message content",
	[RS_DATA_END] = "end of data",
	[RS_RSET] = "RSET",
	[RS_QUIT] = "QUIT",
};

/* What went wrong on the path, for the reply to the client
 * (downstream-relay.md §6 mapping table). */
enum relay_fail {
	RELAY_FAIL_PATH, /* connect, greeting, EHLO, lost connection: 4.4.x */
	RELAY_FAIL_TLS,  /* TLS required but unavailable or unverifiable: 4.7.5 */
	RELAY_FAIL_AUTH, /* the relay refused our login, or we could not offer it: 4.7.0 */
};

struct relay_conn {
	struct relay_pool *pool;
	struct conn *conn;
	struct relay_txn *txn;        /* NULL while pooled */
	struct relay_conn *next_idle;
	enum relay_state state;
	struct smtp_reply_parser rp;
	struct smtp_caps caps;
	char *dest;                   /* the destination as written: part of the pool key */
	char *sni;                    /* the relay's name: SNI and the name verified */
	bool lmtp;
	bool unix_socket;
	bool implicit_tls;
	/* Pool key, with dest: two transactions share a connection only when
	   all of these agree (different relay accounts never share one). */
	enum relay_tls_level tls_level;
	gnutls_certificate_credentials_t tls_creds;
	struct relay_cred *cred;      /* NULL: no AUTH */
	bool allow_plaintext_auth;
	bool closed;
	bool reused;
	bool authenticated;
	bool auth_offered;            /* the last EHLO listed AUTH */
	char auth_mechs[96];          /* ...with these mechanisms (for logs) */
	char tls_trust[12];           /* "Verified", "Trusted", "Untrusted" */
	char tls_desc[160];
	unsigned uses;
	unsigned reuse_limit;
	uint64_t timeout_ms;
	uint64_t idle_timeout_ms;
	unsigned lmtp_expect;
	char helo_name[256];
	char peer[160];
	uv_getaddrinfo_t gai;
	bool gai_pending;
	uint16_t port;
};

/* Per-worker instances of one configuration snapshot's tables; they keep
 * the snapshot (which owns the table definitions) alive. */
struct relay_maps {
	struct relay_maps *next;
	struct config *cfg;
	unsigned users;               /* transactions using it */
	struct table_inst *passwords;
	struct table_inst *routes;
};

struct relay_pool {
	uv_loop_t *loop;
	gnutls_certificate_credentials_t creds; /* system trust */
	gnutls_priority_t prio;
	struct relay_conn *idle;
	struct smtp_caps caps;
	bool caps_known;
	struct relay_maps *maps;
	struct relay_txn *probe;
	/* The worker's current snapshot (set by relay_pool_probe() whenever it
	 * changes): its table sets stay open while unused. */
	const struct config *current;
};

enum relay_txn_mode { TXN_NORMAL, TXN_PROBE, TXN_CHECK };

typedef void relay_lookup_done(struct relay_txn *t, enum table_status st, const char *value,
			       const char *key);

struct relay_txn {
	struct relay_pool *pool;
	struct config *cfg;
	char *log_id;
	relay_txn_cb *cb;
	relay_drain_cb *drain_cb;
	void *ctx;
	enum relay_txn_mode mode;
	struct relay_conn *rc;
	size_t dest_idx;
	bool retried;                 /* a reused connection failed: one fresh try */
	uint64_t attempts_until;      /* no new connection attempt after this (loop time) */
	struct smtp_mail_args mail;
	bool mail_accepted;
	unsigned nrcpt_ok;
	bool at_line_start;
	bool wrote_content;
	bool ends_crlf;
	bool blocked;
	/* the route (docs/design.md §7): cfg->relay, or parsed from sender_relay_maps */
	const struct relay_dest *route;
	size_t nroute;
	struct relay_dest *own_route;
	size_t nown_route;
	struct relay_cred **creds;    /* per destination of the route; NULL: none */
	size_t cred_idx;
	struct relay_maps *maps;
	/* the table lookup in flight: keys tried in order, first hit wins */
	struct table_req *req;
	struct table_inst *lookup_ti;
	relay_lookup_done *lookup_done;
	char keys[RELAY_KEYS_MAX];
	const char *key;
	int keys_left;
	/* the first TLS or AUTH failure beats a later "unreachable" */
	struct smtp_reply policy_fail;
	bool has_policy_fail;
	char last_why[640];
	/* relay_auth_header */
	char *user;
	bool content_started;
	struct relay_hdr_filter hf;
	struct buf filtered;
	/* LMTP: one reply per accepted recipient after the dot (RFC 2033 §4.2) */
	unsigned lmtp_ok, lmtp_fail;
	struct smtp_reply lmtp_first_ok, lmtp_first_fail;
	struct smtp_reply deferred;   /* a synthesised reply waiting for the timer */
	uv_timer_t defer_timer;
	char relay_desc[200];
	struct buf stuffed;
	/* relay_check() */
	bool check_done;
	bool check_ok;
	struct smtp_reply check_reply;
	char check_tls[180];
	char check_login[400];
};

static void relay_conn_start(struct relay_txn *t);
static void relay_conn_close(struct relay_conn *rc, bool quit);
static void relay_txn_send_mail(struct relay_txn *t);
static void relay_txn_connect(struct relay_txn *t);

static void relay_reply_make(struct smtp_reply *r, int code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void relay_reply_make(struct smtp_reply *r, int code, const char *enh, const char *fmt, ...)
{
	memset(r, 0, sizeof(*r));
	r->code = code;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof(r->text), fmt, ap);
	va_end(ap);
	r->lines = 1;
}

/* ---- pure helpers: keys, credentials, header filter ---- */

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

static struct relay_cred *relay_cred_dup(const struct relay_cred *c)
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

static bool relay_cred_equal(const struct relay_cred *a, const struct relay_cred *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a->user, b->user) == 0 && strcmp(a->pass, b->pass) == 0;
}

enum { HF_LINE_START, HF_MATCH, HF_PASS, HF_SKIP, HF_BODY };

void relay_hdr_filter_init(struct relay_hdr_filter *f, const char *name)
{
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->nlen = strlen(name);
	f->state = HF_LINE_START;
}

/* A field is "NAME" + optional WSP (RFC 5322 §4.5.1 obsolete syntax) + ':',
 * matched case-insensitively (§1.2.2); continuation lines belong to it. */
void relay_hdr_filter_run(struct relay_hdr_filter *f, const uint8_t *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		switch (f->state) {
		case HF_BODY:
			buf_append(out, p + i, n - i);
			return;
		case HF_LINE_START:
			if (c == '\r' || c == '\n') {
				/* the empty line: the header section ends */
				f->state = HF_BODY;
				buf_append(out, p + i, n - i);
				return;
			}
			if (c == ' ' || c == '\t') {
				/* a continuation: it follows its field's fate */
				f->state = f->matched == SIZE_MAX ? HF_SKIP : HF_PASS;
				if (f->state == HF_PASS)
					buf_append(out, &c, 1);
				continue;
			}
			f->matched = 0;
			f->npend = 0;
			f->state = HF_MATCH;
			/* fall through */
		case HF_MATCH:
			if (f->matched < f->nlen) {
				if (tolower(c) == tolower((unsigned char)f->name[f->matched])) {
					f->pend[f->npend++] = (char)c;
					f->matched++;
					continue;
				}
			} else if (c == ':') {
				f->npend = 0;
				f->matched = SIZE_MAX; /* dropped: so are its continuations */
				f->state = HF_SKIP;
				continue;
			} else if ((c == ' ' || c == '\t') && f->npend < sizeof(f->pend)) {
				f->pend[f->npend++] = (char)c;
				continue;
			}
			/* not our field: give back what was held */
			buf_append(out, f->pend, f->npend);
			f->npend = 0;
			f->matched = 0;
			f->state = HF_PASS;
			buf_append(out, &c, 1);
			if (c == '\n')
				f->state = HF_LINE_START;
			continue;
		case HF_PASS:
			buf_append(out, &c, 1);
			if (c == '\n') {
				f->state = HF_LINE_START;
				f->matched = 0;
			}
			continue;
		case HF_SKIP:
			if (c == '\n')
				f->state = HF_LINE_START; /* matched stays SIZE_MAX */
			continue;
		}
	}
}

/* ---- delivering answers to the transaction's owner ---- */

static void relay_txn_answer(struct relay_txn *t, const struct smtp_reply *r)
{
	/* Last thing a handler does: the owner may free t inside. */
	t->cb(t->ctx, r);
}

static void relay_txn_defer_cb(uv_timer_t *timer)
{
	struct relay_txn *t = timer->data;
	relay_txn_answer(t, &t->deferred);
}

/* Answers on the next loop iteration: a completion never fires inside the
 * call that started it (docs/design.md §9.9). */
static void relay_txn_answer_later(struct relay_txn *t, const struct smtp_reply *r)
{
	t->deferred = *r;
	uv_timer_start(&t->defer_timer, relay_txn_defer_cb, 0, 0);
}

/* ---- the pool ---- */

struct relay_pool *relay_pool_new(uv_loop_t *loop)
{
	struct relay_pool *p = xcalloc(1, sizeof(*p));
	p->loop = loop;
	gnutls_certificate_allocate_credentials(&p->creds);
	gnutls_certificate_set_x509_system_trust(p->creds);
	gnutls_priority_init(&p->prio, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", NULL);
	return p;
}

/* The snapshots are released one loop iteration after their table
 * instances were closed: table_free() wants the instances' close
 * callbacks to have run (lookup/table.h). */
struct relay_reaper {
	uv_timer_t timer;
	struct config **cfgs;
	size_t n;
};

static void relay_reaper_close_cb(uv_handle_t *h)
{
	struct relay_reaper *r = h->data;
	free(r->cfgs);
	free(r);
}

static void relay_reaper_cb(uv_timer_t *timer)
{
	struct relay_reaper *r = timer->data;
	for (size_t i = 0; i < r->n; i++)
		config_unref(&r->cfgs[i]);
	uv_close((uv_handle_t *)&r->timer, relay_reaper_close_cb);
}

/* Closes one snapshot's instances; the snapshot goes a loop turn later. */
static void relay_maps_close(struct relay_pool *p, struct relay_maps *m)
{
	if (m->passwords != NULL)
		table_inst_close(&m->passwords);
	if (m->routes != NULL)
		table_inst_close(&m->routes);
	struct relay_reaper *r = xcalloc(1, sizeof(*r));
	r->cfgs = xcalloc(1, sizeof(*r->cfgs));
	r->cfgs[r->n++] = m->cfg;
	uv_timer_init(p->loop, &r->timer);
	r->timer.data = r;
	uv_timer_start(&r->timer, relay_reaper_cb, 0, 0);
	free(m);
}

static struct relay_maps *relay_pool_maps(struct relay_pool *p, struct config *cfg)
{
	if (cfg->relay_password_maps == NULL && cfg->sender_relay_maps == NULL)
		return NULL;
	for (struct relay_maps *m = p->maps; m != NULL; m = m->next)
		if (m->cfg == cfg)
			return m;
	/* One set per snapshot: a reloaded configuration gets its own, so a
	   table never outlives its definition (lookup/table.h). Sets of
	   older snapshots that no transaction uses any more go now. */
	for (struct relay_maps **pp = &p->maps; *pp != NULL;) {
		struct relay_maps *old = *pp;
		if (old->users == 0 && !config_is_part_of(p->current, old->cfg)) {
			*pp = old->next;
			relay_maps_close(p, old);
		} else {
			pp = &old->next;
		}
	}
	struct relay_maps *m = xcalloc(1, sizeof(*m));
	m->cfg = config_ref(cfg);
	if (cfg->relay_password_maps != NULL)
		m->passwords = table_inst_new(cfg->relay_password_maps, p->loop);
	if (cfg->sender_relay_maps != NULL)
		m->routes = table_inst_new(cfg->sender_relay_maps, p->loop);
	m->next = p->maps;
	p->maps = m;
	return m;
}

static void relay_pool_remove(struct relay_pool *p, struct relay_conn *rc)
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
	while (p->maps != NULL) {
		struct relay_maps *m = p->maps;
		p->maps = m->next;
		relay_maps_close(p, m);
	}
	gnutls_certificate_free_credentials(p->creds);
	gnutls_priority_deinit(p->prio);
	free(p);
}

bool relay_pool_caps(const struct relay_pool *p, struct smtp_caps *caps_r)
{
	if (!p->caps_known)
		return false;
	*caps_r = p->caps;
	return true;
}

static void relay_conn_park(struct relay_conn *rc)
{
	rc->txn = NULL;
	if (rc->closed)
		return;
	if (rc->uses >= rc->reuse_limit || rc->idle_timeout_ms == 0) {
		relay_conn_close(rc, true);
		return;
	}
	rc->state = RS_READY;
	rc->next_idle = rc->pool->idle;
	rc->pool->idle = rc;
	conn_set_timeout(rc->conn, rc->idle_timeout_ms);
}

static gnutls_certificate_credentials_t relay_tls_creds(struct relay_pool *p,
							const struct config *cfg)
{
	return cfg->relay_tls_ca_creds != NULL ? cfg->relay_tls_ca_creds : p->creds;
}

/* An idle connection to one of the route's destinations that was opened
 * with the same TLS policy, trust and credentials. */
static struct relay_conn *relay_pool_take(struct relay_pool *p, struct relay_txn *t)
{
	gnutls_certificate_credentials_t tc = relay_tls_creds(p, t->cfg);
	for (struct relay_conn **pp = &p->idle; *pp != NULL; pp = &(*pp)->next_idle) {
		struct relay_conn *rc = *pp;
		for (size_t i = 0; i < t->nroute; i++) {
			if (strcmp(rc->dest, t->route[i].text) == 0 && rc->tls_level == t->cfg->relay_tls &&
			    rc->tls_creds == tc &&
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

/* ---- one downstream connection ---- */

static void relay_conn_send(struct relay_conn *rc, enum relay_state next, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void relay_conn_send(struct relay_conn *rc, enum relay_state next, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || n > (int)sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	rc->state = next;
	conn_write(rc->conn, line, (size_t)n);
	conn_set_timeout(rc->conn, rc->timeout_ms);
}

/* A line carrying credentials: built in b, which is wiped after the write
 * (docs/design.md invariant 8). With TLS only ciphertext is queued. */
static void relay_conn_send_secret(struct relay_conn *rc, enum relay_state next, struct buf *b)
{
	buf_append(b, "\r\n", 2);
	rc->state = next;
	conn_write(rc->conn, buf_data(b), buf_len(b));
	buf_wipe(b);
	conn_set_timeout(rc->conn, rc->timeout_ms);
}

static void relay_conn_free(struct relay_conn *rc)
{
	relay_cred_free(&rc->cred);
	free(rc->dest);
	free(rc->sni);
	free(rc);
}

static void relay_conn_close(struct relay_conn *rc, bool quit)
{
	if (rc->closed)
		return;
	rc->closed = true;
	if (rc->txn != NULL)
		rc->txn->rc = NULL;
	rc->txn = NULL;
	relay_pool_remove(rc->pool, rc);
	if (rc->conn == NULL) {
		/* still resolving: the getaddrinfo callback frees it */
		if (!rc->gai_pending)
			relay_conn_free(rc);
		return;
	}
	if (quit && rc->state == RS_READY && rc->conn->error == 0 && !rc->conn->eof)
		conn_write_str(rc->conn, "QUIT\r\n");
	conn_close(rc->conn);
}

static void relay_conn_on_close(struct conn *c, void *ctx)
{
	(void)c;
	relay_conn_free(ctx);
}

/* The path failed before or during a command: try the next destination if
 * the downstream has not accepted MAIL yet (docs/design.md §7), else tell the
 * client what happened with a 4xx (downstream-relay.md §6). The log line
 * names the relay and what it said, for the admin; the client hears only
 * the class of the problem. */
#define RELAY_WHY_TIMEOUT "timeout"

static void relay_conn_fail_as(struct relay_conn *rc, enum relay_fail kind, const char *why)
{
	bool timeout = strcmp(why, RELAY_WHY_TIMEOUT) == 0;
	struct relay_txn *t = rc->txn;
	enum relay_state st = rc->state;
	const char *log_id = t != NULL ? t->log_id : "relay";
	log_warn("%s: relay=%s: %s during %s", log_id, rc->peer[0] ? rc->peer : rc->dest, why,
		 relay_state_names[st]);
	bool reused = rc->reused;
	relay_conn_close(rc, false);
	if (t == NULL || t->cb == NULL)
		return; /* an idle connection: nobody to tell */
	snprintf(t->last_why, sizeof(t->last_why), "%s during %s", why, relay_state_names[st]);
	struct smtp_reply r;
	if (kind != RELAY_FAIL_PATH && !t->has_policy_fail) {
		t->has_policy_fail = true;
		if (kind == RELAY_FAIL_TLS)
			relay_reply_make(&t->policy_fail, 451, "4.7.5",
					 "Error: cannot establish a secure connection with the "
					 "downstream server, try again later");
		else
			relay_reply_make(&t->policy_fail, 451, "4.7.0",
					 "Error: cannot authenticate to the downstream server, try "
					 "again later");
	}
	/* The client waits for the connection: once relay_timeout has passed
	   since the first attempt, the next one would only add to its wait. */
	bool more = uv_now(t->pool->loop) < t->attempts_until;
	if (st < RS_READY || (st == RS_MAIL && !t->mail_accepted)) {
		if (more && reused && !t->retried && kind == RELAY_FAIL_PATH) {
			/* A pooled connection may have been closed by the
			   other side while idle: one fresh try. */
			t->retried = true;
			t->dest_idx = 0;
			relay_conn_start(t);
			return;
		}
		if (more && t->dest_idx + 1 < t->nroute) {
			t->dest_idx++;
			relay_conn_start(t);
			return;
		}
		if (t->has_policy_fail)
			r = t->policy_fail;
		else
			relay_reply_make(&r, 451, "4.4.1",
					 timeout ? "Error: timeout waiting for the downstream server, "
						   "try again later"
						 : "Error: downstream server unavailable, try again later");
	} else if (st == RS_DATA_END) {
		/* The message may or may not have been accepted: a
		   duplicate is better than a loss, so the client retries. */
		relay_reply_make(&r, 451, "4.4.2",
				 timeout ? "Error: timeout waiting for the downstream's reply to "
					   "end of data"
					 : "Error: lost connection with downstream after end of data");
	} else {
		relay_reply_make(&r, 451, "4.4.2",
				 timeout ? "Error: timeout waiting for the downstream server"
					 : "Error: lost connection with downstream");
	}
	relay_txn_answer_later(t, &r);
}

static void relay_conn_fail(struct relay_conn *rc, const char *why)
{
	relay_conn_fail_as(rc, RELAY_FAIL_PATH, why);
}

static void relay_check_finish(struct relay_txn *t, bool ok, const struct smtp_reply *r);

static void relay_conn_ready(struct relay_conn *rc)
{
	rc->pool->caps = rc->caps;
	rc->pool->caps_known = true;
	rc->state = RS_READY;
	conn_clear_timeout(rc->conn);
	struct relay_txn *t = rc->txn;
	if (t == NULL) {
		relay_conn_park(rc);
		return;
	}
	switch (t->mode) {
	case TXN_NORMAL:
		relay_txn_send_mail(t);
		return;
	case TXN_PROBE:
		/* learned the capabilities; the connection waits in the pool */
		t->rc = NULL;
		relay_conn_park(rc);
		relay_txn_free(&rc->pool->probe);
		return;
	case TXN_CHECK:
		if (rc->tls_desc[0] != '\0')
			snprintf(t->check_tls, sizeof(t->check_tls), "%s TLS: %s", rc->tls_trust,
				 rc->tls_desc);
		if (rc->authenticated)
			snprintf(t->check_login, sizeof(t->check_login),
				 "logged in as %s (relay_password_maps key %s)", rc->cred->user,
				 rc->cred->key);
		t->rc = NULL;
		rc->txn = NULL;
		relay_conn_close(rc, true);
		relay_check_finish(t, true, NULL);
		return;
	}
}

static void relay_conn_ehlo(struct relay_conn *rc, enum relay_state next)
{
	relay_conn_send(rc, next, "%s %s", rc->lmtp ? "LHLO" : "EHLO", rc->helo_name);
}

/* Remembers whether the EHLO reply listed AUTH at all, and with which
 * mechanisms, so a failure can say exactly what the relay offered. */
static void relay_conn_scan_auth(struct relay_conn *rc, const struct smtp_reply *r)
{
	rc->auth_offered = false;
	rc->auth_mechs[0] = '\0';
	const char *s = r->text;
	while (*s != '\0') {
		size_t n = strcspn(s, "\n");
		if (n >= 4 && strncasecmp(s, "AUTH", 4) == 0 &&
		    (n == 4 || s[4] == ' ' || s[4] == '=')) {
			rc->auth_offered = true;
			size_t m = n > 5 ? n - 5 : 0;
			if (m >= sizeof(rc->auth_mechs))
				m = sizeof(rc->auth_mechs) - 1;
			memcpy(rc->auth_mechs, n > 5 ? s + 5 : "", m);
			rc->auth_mechs[m] = '\0';
		}
		s += n;
		if (*s == '\n')
			s++;
	}
}

/* A UNIX socket (lmtp:unix:) never leaves the host: no TLS there, and it
 * counts as private enough for credentials. */
static bool relay_conn_want_tls(const struct relay_conn *rc)
{
	return !rc->unix_socket && rc->tls_level != RELAY_TLS_NONE;
}

static bool relay_conn_tls_required(const struct relay_conn *rc)
{
	return !rc->unix_socket && rc->tls_level >= RELAY_TLS_ENCRYPT;
}

static void relay_conn_tls_begin(struct relay_conn *rc)
{
	/* verify and secure check the chain and the relay's name; with a
	   bracketed relay the name is the next hop for both (§3). */
	bool verify = rc->tls_level >= RELAY_TLS_VERIFY;
	int r = conn_tls_start(rc->conn, false, rc->tls_creds, rc->pool->prio, rc->sni, verify, NULL);
	if (r < 0) {
		char why[160];
		snprintf(why, sizeof(why), "cannot start TLS: %s", gnutls_strerror(r));
		relay_conn_fail_as(rc, RELAY_FAIL_TLS, why);
	}
}

/* After the last EHLO: log in if we have credentials (RFC 4954), else the
 * connection is ready for MAIL. */
static void relay_conn_auth_begin(struct relay_conn *rc)
{
	struct relay_cred *c = rc->cred;
	if (c == NULL) {
		relay_conn_ready(rc);
		return;
	}
	char why[400];
	if (!rc->conn->tls_active && !rc->unix_socket && !rc->allow_plaintext_auth) {
		snprintf(why, sizeof(why),
			 "will not send the credentials of %s (relay_password_maps key %s) without TLS "
			 "(set relay_sasl_allow_plaintext = yes to allow it)",
			 c->user, c->key);
		relay_conn_fail_as(rc, RELAY_FAIL_AUTH, why);
		return;
	}
	if (!rc->auth_offered) {
		snprintf(why, sizeof(why),
			 "credentials for %s exist (relay_password_maps key %s) but the server "
			 "offered no AUTH",
			 c->user, c->key);
		relay_conn_fail_as(rc, RELAY_FAIL_AUTH, why);
		return;
	}
	struct buf b = BUF_INIT;
	if (rc->caps.auth_plain) {
		/* authzid empty, authcid, password (RFC 4616 §2) */
		struct buf raw = BUF_INIT;
		buf_append(&raw, "", 1);
		buf_append(&raw, c->user, strlen(c->user));
		buf_append(&raw, "", 1);
		buf_append(&raw, c->pass, strlen(c->pass));
		buf_append_str(&b, "AUTH PLAIN ");
		base64_encode(&b, buf_data(&raw), buf_len(&raw));
		buf_wipe(&raw);
		if (buf_len(&b) + 2 > RELAY_AUTH_LINE_MAX) {
			/* too long for an initial response: send it after
			   the empty challenge (RFC 4954 §4) */
			buf_wipe(&b);
			relay_conn_send(rc, RS_AUTH_PLAIN, "AUTH PLAIN");
			return;
		}
		relay_conn_send_secret(rc, RS_AUTH_PLAIN, &b);
		return;
	}
	if (rc->caps.auth_login) {
		relay_conn_send(rc, RS_AUTH_LOGIN, "AUTH LOGIN");
		return;
	}
	snprintf(why, sizeof(why),
		 "server offered no compatible authentication mechanism (offered: %s; we use "
		 "PLAIN, LOGIN)",
		 rc->auth_mechs[0] ? rc->auth_mechs : "none");
	relay_conn_fail_as(rc, RELAY_FAIL_AUTH, why);
}

static void relay_conn_auth_send(struct relay_conn *rc, enum relay_state next, const char *s,
				 const char *s2)
{
	struct buf raw = BUF_INIT, b = BUF_INIT;
	buf_append(&raw, s, strlen(s));
	if (s2 != NULL) {
		buf_append(&raw, "", 1);
		buf_append(&raw, s2, strlen(s2));
	}
	base64_encode(&b, buf_data(&raw), buf_len(&raw));
	buf_wipe(&raw);
	if (buf_len(&b) == 0)
		buf_append(&b, "=", 1); /* an empty response (RFC 4954 §4) */
	relay_conn_send_secret(rc, next, &b);
}

static void relay_conn_on_auth_reply(struct relay_conn *rc, const struct smtp_reply *r)
{
	struct relay_cred *c = rc->cred;
	char why[SMTP_REPLY_TEXT_MAX + 300];
	if (r->code == 235 && rc->state != RS_AUTH_CANCEL) {
		rc->authenticated = true;
		log_info("relay=%s: authenticated as %s (relay_password_maps key %s)", rc->peer,
			 c->user, c->key);
		relay_conn_ready(rc);
		return;
	}
	if (r->code == 334 && rc->state != RS_AUTH_LOGIN_PASS && rc->state != RS_AUTH_CANCEL &&
	    rc->state != RS_AUTH_PLAIN_RESP) {
		/* A challenge must be valid base64; else the client cancels
		   with "*" (RFC 4954 §4). Its content is not interpreted:
		   LOGIN asks for the user name, then the password. */
		if (!base64_valid(r->text, strlen(r->text))) {
			relay_conn_send(rc, RS_AUTH_CANCEL, "*");
			return;
		}
		switch (rc->state) {
		case RS_AUTH_PLAIN: {
			struct buf raw = BUF_INIT, b = BUF_INIT;
			buf_append(&raw, "", 1);
			buf_append(&raw, c->user, strlen(c->user));
			buf_append(&raw, "", 1);
			buf_append(&raw, c->pass, strlen(c->pass));
			base64_encode(&b, buf_data(&raw), buf_len(&raw));
			buf_wipe(&raw);
			relay_conn_send_secret(rc, RS_AUTH_PLAIN_RESP, &b);
			return;
		}
		case RS_AUTH_LOGIN:
			relay_conn_auth_send(rc, RS_AUTH_LOGIN_USER, c->user, NULL);
			return;
		case RS_AUTH_LOGIN_USER:
			relay_conn_auth_send(rc, RS_AUTH_LOGIN_PASS, c->pass, NULL);
			return;
		default:
			break;
		}
	}
	if (rc->state == RS_AUTH_CANCEL)
		snprintf(why, sizeof(why), "authentication as %s abandoned: malformed challenge",
			 c->user);
	else
		snprintf(why, sizeof(why),
			 "authentication as %s (relay_password_maps key %s) refused: %d %s%s%s", c->user,
			 c->key, r->code, r->enh, r->enh[0] ? " " : "", r->text);
	relay_conn_fail_as(rc, RELAY_FAIL_AUTH, why);
}

static void relay_txn_lmtp_reply(struct relay_txn *t, const struct smtp_reply *r);

/* The replies a transaction's commands may get (RFC 5321 §4.3.2): DATA
 * goes on only with 354, MAIL, RCPT and the final dot with 2xx; 4xx and 5xx
 * always. Anything else (a 250 to DATA would have the client's content read
 * as commands) is a downstream we cannot follow: it becomes the client's
 * 451 4.4.2 and the connection is dropped, never reused. */
static bool relay_reply_expected(enum relay_state st, int code)
{
	if (code >= 400)
		return true;
	if (st == RS_DATA)
		return code == 354;
	if (st == RS_MAIL || st == RS_RCPT || st == RS_DATA_END)
		return code >= 200 && code < 300;
	return true;
}

static void relay_conn_on_reply(struct relay_conn *rc, const struct smtp_reply *r)
{
	struct relay_txn *t = rc->txn;
	bool ok = r->code >= 200 && r->code < 300;
	char why[SMTP_REPLY_TEXT_MAX + 100];
	log_debug("relay=%s: %s: %d %.*s", rc->peer, relay_state_names[rc->state], r->code,
		  (int)strcspn(r->text, "\n"), r->text);
	if (t != NULL && !relay_reply_expected(rc->state, r->code)) {
		snprintf(why, sizeof(why), "protocol error: reply %d %.*s", r->code,
			 (int)strcspn(r->text, "\n"), r->text);
		relay_conn_fail(rc, why);
		return;
	}
	switch (rc->state) {
	case RS_GREETING:
		if (r->code != 220) {
			snprintf(why, sizeof(why), "refused us: %d %s", r->code, r->text);
			relay_conn_fail(rc, why);
			return;
		}
		relay_conn_ehlo(rc, RS_EHLO);
		return;
	case RS_EHLO:
	case RS_EHLO2:
		if (r->code != 250) {
			snprintf(why, sizeof(why), "%s refused: %d %s", rc->lmtp ? "LHLO" : "EHLO",
				 r->code, r->text);
			relay_conn_fail(rc, why);
			return;
		}
		/* After STARTTLS the old capability list is forgotten
		   (RFC 3207 §4.2): AUTH comes from the new one. */
		smtp_caps_parse(r, &rc->caps);
		relay_conn_scan_auth(rc, r);
		if (rc->state == RS_EHLO && !rc->conn->tls_active && relay_conn_want_tls(rc)) {
			if (rc->caps.starttls) {
				relay_conn_send(rc, RS_STARTTLS, "STARTTLS");
				return;
			}
			if (relay_conn_tls_required(rc)) {
				relay_conn_fail_as(rc, RELAY_FAIL_TLS,
						   "TLS is required, but was not offered by the server");
				return;
			}
		}
		relay_conn_auth_begin(rc);
		return;
	case RS_STARTTLS:
		if (r->code != 220) {
			if (relay_conn_tls_required(rc)) {
				snprintf(why, sizeof(why), "TLS is required, but STARTTLS was refused: %d %s",
					 r->code, r->text);
				relay_conn_fail_as(rc, RELAY_FAIL_TLS, why);
				return;
			}
			/* Opportunistic TLS: carry on in plaintext. */
			relay_conn_auth_begin(rc);
			return;
		}
		rc->state = RS_TLS;
		/* conn_tls_start drops anything buffered after the 220: the
		   client-side twin of CVE-2011-0411 (downstream-relay.md §3). */
		relay_conn_tls_begin(rc);
		return;
	case RS_AUTH_PLAIN:
	case RS_AUTH_PLAIN_RESP:
	case RS_AUTH_LOGIN:
	case RS_AUTH_LOGIN_USER:
	case RS_AUTH_LOGIN_PASS:
	case RS_AUTH_CANCEL:
		relay_conn_on_auth_reply(rc, r);
		return;
	case RS_MAIL:
		if (t == NULL)
			break;
		rc->state = RS_READY;
		conn_clear_timeout(rc->conn);
		if (ok)
			t->mail_accepted = true;
		relay_txn_answer(t, r);
		return;
	case RS_RCPT:
		if (t == NULL)
			break;
		rc->state = RS_READY;
		conn_clear_timeout(rc->conn);
		if (ok)
			t->nrcpt_ok++;
		relay_txn_answer(t, r);
		return;
	case RS_DATA:
		if (t == NULL)
			break;
		if (r->code == 354) {
			rc->state = RS_BODY;
			conn_clear_timeout(rc->conn);
		} else {
			rc->state = RS_READY;
			conn_clear_timeout(rc->conn);
		}
		relay_txn_answer(t, r);
		return;
	case RS_DATA_END:
		if (t == NULL)
			break;
		if (rc->lmtp) {
			relay_txn_lmtp_reply(t, r);
			return;
		}
		rc->uses++;
		relay_conn_park(rc);
		t->rc = NULL;
		relay_txn_answer(t, r);
		return;
	case RS_RSET:
		if (ok) {
			relay_conn_park(rc);
			return;
		}
		relay_conn_close(rc, false);
		return;
	case RS_READY:
		/* Unsolicited, e.g. "421 idle timeout": drop the connection. */
		relay_conn_close(rc, false);
		return;
	default:
		break;
	}
	snprintf(why, sizeof(why), "unexpected reply %d %s", r->code, r->text);
	relay_conn_fail(rc, why);
}

static void relay_conn_on_data(struct conn *c, void *ctx)
{
	struct relay_conn *rc = ctx;
	struct smtp_reply r;
	while (!rc->closed && buf_len(&c->in) > 0) {
		size_t consumed = 0;
		enum smtp_reply_status st =
			smtp_reply_parse(&rc->rp, buf_data(&c->in), buf_len(&c->in), &consumed, &r);
		buf_consume(&c->in, consumed);
		if (st == SMTP_REPLY_NEED_MORE)
			break;
		if (st == SMTP_REPLY_ERROR) {
			relay_conn_fail(rc, "malformed or oversized reply");
			return;
		}
		enum relay_state before = rc->state;
		relay_conn_on_reply(rc, &r);
		/* We never pipeline: one command, one reply. Anything after it
		   (except LMTP's further replies to the dot) was not asked for,
		   and a server out of step could make us take its answer to
		   one command for the answer to the next. */
		if (!rc->closed && buf_len(&c->in) > 0 &&
		    !(before == RS_DATA_END && rc->state == RS_DATA_END)) {
			relay_conn_fail(rc, "unsolicited data after a reply");
			return;
		}
	}
	if (rc->closed)
		return;
	if (c->error != 0 || c->eof) {
		char why[128];
		snprintf(why, sizeof(why), "connection %s",
			 c->eof ? "closed by downstream"
				: (c->error < -1000 ? gnutls_strerror(c->error) : uv_strerror(c->error)));
		if (rc->state == RS_READY && rc->txn == NULL)
			relay_conn_close(rc, false); /* idle connection went away */
		else
			relay_conn_fail(rc, why);
	}
}

static void relay_conn_on_drain(struct conn *c, void *ctx)
{
	(void)c;
	struct relay_conn *rc = ctx;
	struct relay_txn *t = rc->txn;
	if (t != NULL && t->blocked) {
		t->blocked = false;
		if (t->drain_cb != NULL)
			t->drain_cb(t->ctx);
	}
}

static void relay_conn_on_timeout(struct conn *c, void *ctx)
{
	(void)c;
	struct relay_conn *rc = ctx;
	if (rc->state == RS_READY && rc->txn == NULL) {
		relay_conn_close(rc, true); /* idle too long */
		return;
	}
	if (rc->state == RS_CONNECTING && rc->conn->error != 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(rc->conn->error));
		relay_conn_fail(rc, why);
		return;
	}
	/* A stalled downstream, not a pooled connection the other side closed
	   while idle: a fresh connection to it would make the client wait
	   relay_timeout once more. */
	if (rc->txn != NULL)
		rc->txn->retried = true;
	relay_conn_fail_as(rc, rc->state == RS_TLS || rc->state == RS_TLS_WRAP ? RELAY_FAIL_TLS
									      : RELAY_FAIL_PATH,
			   RELAY_WHY_TIMEOUT);
}

static void relay_conn_on_tls(struct conn *c, void *ctx, int err)
{
	struct relay_conn *rc = ctx;
	if (err != 0) {
		char why[512];
		if (err == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR && c->tls != NULL) {
			/* say which check failed: issuer unknown, name
			   mismatch, expired... */
			gnutls_datum_t out = {NULL, 0};
			unsigned status = gnutls_session_get_verify_cert_status(c->tls);
			gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
			snprintf(why, sizeof(why), "server certificate not verified for \"%s\": %s",
				 rc->sni ? rc->sni : "?", out.data ? (const char *)out.data : "?");
			gnutls_free(out.data);
		} else {
			snprintf(why, sizeof(why), "TLS handshake failed: %s", gnutls_strerror(err));
		}
		relay_conn_fail_as(rc, RELAY_FAIL_TLS, why);
		return;
	}
	/* Postfix's words for what the handshake proved: "Verified" (chain
	   and name checked), "Trusted" (chain good), "Untrusted". */
	unsigned status = 1;
	if (rc->tls_level >= RELAY_TLS_VERIFY)
		status = 0;
	else if (gnutls_certificate_verify_peers3(c->tls, rc->sni, &status) < 0)
		status = 1;
	snprintf(rc->tls_trust, sizeof(rc->tls_trust), "%s",
		 rc->tls_level >= RELAY_TLS_VERIFY ? "Verified" : status == 0 ? "Trusted" : "Untrusted");
	conn_tls_describe(c, rc->tls_desc, sizeof(rc->tls_desc));
	log_info("relay=%s: %s TLS connection established: %s", rc->peer, rc->tls_trust,
		 rc->tls_desc);
	if (rc->state == RS_TLS_WRAP) {
		rc->state = RS_GREETING;
		conn_set_timeout(rc->conn, rc->timeout_ms);
		return;
	}
	relay_conn_ehlo(rc, RS_EHLO2);
}

static void relay_conn_on_connect(struct conn *c, void *ctx, int err)
{
	struct relay_conn *rc = ctx;
	if (err != 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(err));
		relay_conn_fail(rc, why);
		return;
	}
	conn_read_start(c);
	conn_set_timeout(c, rc->timeout_ms);
	if (rc->implicit_tls) {
		/* RFC 8314 §3.3: TLS first, then the greeting inside it */
		rc->state = RS_TLS_WRAP;
		relay_conn_tls_begin(rc);
		return;
	}
	rc->state = RS_GREETING;
}

static const struct conn_handler relay_conn_handler = {
	.on_data = relay_conn_on_data,
	.on_drain = relay_conn_on_drain,
	.on_timeout = relay_conn_on_timeout,
	.on_tls = relay_conn_on_tls,
	.on_connect = relay_conn_on_connect,
	.on_close = relay_conn_on_close,
};

static void relay_conn_connect_addr(struct relay_conn *rc, const struct sockaddr *sa)
{
	rc->conn = conn_new(rc->pool->loop, false, &relay_conn_handler, rc);
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
	snprintf(rc->peer, sizeof(rc->peer), "%s[%s]:%u", rc->sni ? rc->sni : ip, ip, rc->port);
	if (rc->txn != NULL)
		snprintf(rc->txn->relay_desc, sizeof(rc->txn->relay_desc), "%s", rc->peer);
	rc->state = RS_CONNECTING;
	conn_set_timeout(rc->conn, rc->timeout_ms);
	int r = conn_connect_tcp(rc->conn, sa);
	if (r < 0) {
		/* Report from the loop, not from inside this call. */
		rc->conn->error = r;
		rc->conn->eof = false;
		conn_set_timeout(rc->conn, 0);
	}
}

static void relay_conn_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct relay_conn *rc = req->data;
	rc->gai_pending = false;
	if (rc->closed) {
		uv_freeaddrinfo(res);
		relay_conn_free(rc);
		return;
	}
	if (status != 0 || res == NULL) {
		char why[160];
		snprintf(why, sizeof(why), "cannot resolve host: %s", uv_strerror(status));
		uv_freeaddrinfo(res);
		/* relay_conn_fail frees rc through close(): no conn yet. */
		relay_conn_fail(rc, why);
		return;
	}
	relay_conn_connect_addr(rc, res->ai_addr);
	uv_freeaddrinfo(res);
}

/* Opens a connection to the transaction's current destination. */
static void relay_conn_start(struct relay_txn *t)
{
	const struct relay_dest *d = &t->route[t->dest_idx];
	struct relay_conn *rc = xcalloc(1, sizeof(*rc));
	rc->pool = t->pool;
	rc->txn = t;
	t->rc = rc;
	rc->dest = xstrdup(d->text);
	rc->lmtp = d->proto == RELAY_LMTP;
	rc->unix_socket = d->unix_path != NULL;
	rc->implicit_tls = d->implicit_tls;
	rc->tls_level = t->cfg->relay_tls;
	rc->tls_creds = relay_tls_creds(t->pool, t->cfg);
	rc->cred = relay_cred_dup(t->creds != NULL ? t->creds[t->dest_idx] : NULL);
	rc->allow_plaintext_auth = t->cfg->relay_sasl_allow_plaintext;
	rc->timeout_ms = t->cfg->relay_timeout_ms;
	rc->idle_timeout_ms = t->cfg->relay_idle_timeout_ms;
	rc->reuse_limit = t->cfg->relay_reuse_limit;
	rc->port = d->port;
	snprintf(rc->helo_name, sizeof(rc->helo_name), "%s", t->cfg->myhostname);
	smtp_reply_parser_init(&rc->rp);
	if (rc->unix_socket) {
		rc->conn = conn_new(t->pool->loop, true, &relay_conn_handler, rc);
		snprintf(rc->peer, sizeof(rc->peer), "unix:%s", d->unix_path);
		snprintf(t->relay_desc, sizeof(t->relay_desc), "%s", rc->peer);
		rc->state = RS_CONNECTING;
		conn_set_timeout(rc->conn, t->cfg->relay_connect_timeout_ms);
		conn_connect_unix(rc->conn, d->unix_path);
		return;
	}
	/* The relay's name as written between the brackets: the SNI and the
	   name its certificate must carry (§3; an address literal is checked
	   against the certificate's IP addresses and sent as no SNI). */
	rc->sni = xstrdup(d->host);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, d->host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(d->port);
	} else if (inet_pton(AF_INET6, d->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(d->port);
	} else {
		rc->state = RS_RESOLVING;
		rc->gai.data = rc;
		rc->gai_pending = true;
		char port[8];
		snprintf(port, sizeof(port), "%u", d->port);
		struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
		if (uv_getaddrinfo(t->pool->loop, &rc->gai, relay_conn_gai_cb, d->host, port, &hints) < 0) {
			rc->gai_pending = false;
			relay_conn_fail(rc, "cannot resolve host");
		}
		return;
	}
	relay_conn_connect_addr(rc, (struct sockaddr *)&ss);
	conn_set_timeout(rc->conn, t->cfg->relay_connect_timeout_ms);
}

/* ---- the transaction: route, credentials, connection ---- */

static const char *relay_delimiters(const struct config *cfg)
{
	return cfg->recipient_delimiter != NULL ? cfg->recipient_delimiter : "";
}

static void relay_txn_lookup_cb(void *ctx, enum table_status st, const char *value);

static void relay_txn_lookup_next(struct relay_txn *t)
{
	t->req = table_lookup(t->lookup_ti, t->key, relay_txn_lookup_cb, t);
}

static void relay_txn_lookup_cb(void *ctx, enum table_status st, const char *value)
{
	struct relay_txn *t = ctx;
	t->req = NULL;
	if (st == TABLE_NOTFOUND && --t->keys_left > 0) {
		t->key += strlen(t->key) + 1;
		relay_txn_lookup_next(t);
		return;
	}
	t->lookup_done(t, st, value, t->key);
}

/* Looks the keys (already in t->keys) up in order; the first answer that is
 * not NOTFOUND ends the search. Completes through done, never inside this
 * call (table_lookup defers). nkeys > 0. */
static void relay_txn_lookup(struct relay_txn *t, struct table_inst *ti, int nkeys,
			     relay_lookup_done *done)
{
	t->lookup_ti = ti;
	t->lookup_done = done;
	t->key = t->keys;
	t->keys_left = nkeys;
	relay_txn_lookup_next(t);
}

static void relay_txn_fail_later(struct relay_txn *t, int code, const char *enh, const char *text)
{
	struct smtp_reply r;
	relay_reply_make(&r, code, enh, "%s", text);
	relay_txn_answer_later(t, &r);
}

static void relay_txn_route_clear(struct relay_txn *t)
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

static void relay_txn_creds_next(struct relay_txn *t);

static void relay_txn_cred_done(struct relay_txn *t, enum table_status st, const char *value,
				const char *key)
{
	if (st == TABLE_TEMPFAIL) {
		log_warn("%s: relay_password_maps %s: temporary lookup failure for %s", t->log_id,
			 table_name(t->cfg->relay_password_maps), key);
		relay_txn_fail_later(t, 451, "4.3.0", "Error: temporary lookup failure, try again later");
		return;
	}
	if (st == TABLE_OK)
		t->creds[t->cred_idx] = relay_cred_parse(value, key);
	t->cred_idx++;
	relay_txn_creds_next(t);
}

/* Credentials for each destination of the route, before any connection:
 * they are part of the pool key. */
static void relay_txn_creds_next(struct relay_txn *t)
{
	while (t->maps != NULL && t->maps->passwords != NULL && t->cred_idx < t->nroute) {
		int n = relay_cred_keys(&t->route[t->cred_idx], t->mail.path.addr,
					t->cfg->sender_dependent_authentication,
					relay_delimiters(t->cfg), t->keys, sizeof(t->keys));
		if (n > 0) {
			relay_txn_lookup(t, t->maps->passwords, n, relay_txn_cred_done);
			return;
		}
		t->cred_idx++;
	}
	relay_txn_connect(t);
}

static void relay_txn_route_set(struct relay_txn *t, const struct relay_dest *d, size_t n)
{
	t->route = d;
	t->nroute = n;
	t->creds = xcalloc(n, sizeof(*t->creds));
	t->cred_idx = 0;
	relay_txn_creds_next(t);
}

static void relay_txn_route_done(struct relay_txn *t, enum table_status st, const char *value,
				 const char *key)
{
	const char *maps = table_name(t->cfg->sender_relay_maps);
	if (st == TABLE_TEMPFAIL) {
		log_warn("%s: sender_relay_maps %s: temporary lookup failure for %s", t->log_id, maps,
			 key);
		relay_txn_fail_later(t, 451, "4.3.0", "Error: temporary lookup failure, try again later");
		return;
	}
	/* DUNNO stops the search without an answer (Postfix access(5)). */
	if (st == TABLE_NOTFOUND || strcasecmp(value, "DUNNO") == 0) {
		relay_txn_route_set(t, t->cfg->relay, t->cfg->nrelay);
		return;
	}
	char err[300];
	if (!config_relay_parse(value, &t->own_route, &t->nown_route, err, sizeof(err))) {
		char v[200];
		log_sanitize(v, sizeof(v), value, strlen(value));
		log_err("%s: sender_relay_maps %s: bad destination for %s: \"%s\": %s", t->log_id, maps,
			key, v, err);
		relay_txn_fail_later(t, 451, "4.3.5", "Error: server configuration problem");
		return;
	}
	log_debug("%s: sender_relay_maps: %s -> %s", t->log_id, key, value);
	relay_txn_route_set(t, t->own_route, t->nown_route);
}

/* Route (sender_relay_maps, else relayhost), then credentials, then a
 * pooled or a new connection. Everything completes later. */
static void relay_txn_begin(struct relay_txn *t)
{
	relay_txn_route_clear(t);
	t->has_policy_fail = false;
	t->retried = false;
	if (t->mode == TXN_NORMAL && t->maps != NULL && t->maps->routes != NULL) {
		int n = relay_route_keys(t->mail.path.addr, relay_delimiters(t->cfg), t->keys,
					 sizeof(t->keys));
		if (n > 0) {
			relay_txn_lookup(t, t->maps->routes, n, relay_txn_route_done);
			return;
		}
	}
	relay_txn_route_set(t, t->cfg->relay, t->cfg->nrelay);
}

static void relay_txn_connect(struct relay_txn *t)
{
	t->attempts_until = uv_now(t->pool->loop) + t->cfg->relay_timeout_ms;
	if (t->mode == TXN_NORMAL) {
		struct relay_conn *rc = relay_pool_take(t->pool, t);
		if (rc != NULL) {
			rc->txn = t;
			rc->reused = true;
			t->rc = rc;
			snprintf(t->relay_desc, sizeof(t->relay_desc), "%s", rc->peer);
			relay_txn_send_mail(t);
			return;
		}
	}
	t->dest_idx = 0;
	relay_conn_start(t);
}

static void relay_probe_cb(void *ctx, const struct smtp_reply *r)
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
	pool->current = cfg;
	if (pool->probe != NULL)
		return;
	pool->probe = relay_txn_new(pool, cfg, "relay probe", relay_probe_cb, NULL, pool);
	pool->probe->mode = TXN_PROBE;
	relay_txn_begin(pool->probe);
}

struct relay_txn *relay_txn_new(struct relay_pool *pool, struct config *cfg, const char *log_id,
				relay_txn_cb *cb, relay_drain_cb *drain_cb, void *ctx)
{
	struct relay_txn *t = xcalloc(1, sizeof(*t));
	t->pool = pool;
	t->cfg = config_ref(cfg);
	t->log_id = xstrdup(log_id);
	t->cb = cb;
	t->drain_cb = drain_cb;
	t->ctx = ctx;
	t->at_line_start = true;
	uv_timer_init(pool->loop, &t->defer_timer);
	t->defer_timer.data = t;
	t->maps = relay_pool_maps(pool, cfg);
	if (t->maps != NULL)
		t->maps->users++;
	return t;
}

void relay_txn_set_user(struct relay_txn *t, const char *user)
{
	free(t->user);
	t->user = NULL;
	if (user == NULL || user[0] == '\0')
		return;
	/* a header field body: no line breaks, no controls */
	char tmp[512];
	log_sanitize(tmp, sizeof(tmp), user, strlen(user));
	t->user = xstrdup(tmp);
}

const char *relay_txn_relay(const struct relay_txn *t)
{
	return t->relay_desc[0] ? t->relay_desc : "none";
}

static void relay_txn_send_mail(struct relay_txn *t)
{
	struct relay_conn *rc = t->rc;
	const struct smtp_caps *caps = &rc->caps;
	struct smtp_mail_args a = t->mail;
	/* Pass on only what the downstream announced (downstream-relay.md §7). */
	if (!caps->size_present)
		a.has_size = false;
	if (!caps->eightbitmime)
		a.body = SMTP_BODY_NONE;
	if (!caps->smtputf8)
		a.smtputf8 = false;
	if (!caps->dsn) {
		a.ret = SMTP_RET_NONE;
		a.envid[0] = '\0';
	}
	/* We vouch for no one downstream (RFC 4954 §5: AUTH= is optional). */
	a.auth[0] = '\0';
	/* The size that will be sent (RFC 1870 §6): the session counted what
	   it adds; relay_auth_header adds one field (and drops the client's
	   of that name, so this stays an upper bound). */
	if (a.has_size && t->cfg->relay_auth_header != NULL && t->user != NULL)
		a.size += strlen(t->cfg->relay_auth_header) + strlen(t->user) + 4;
	char params[1024];
	if (smtp_mail_args_format(&a, params, sizeof(params)) < 0)
		params[0] = '\0';
	relay_conn_send(rc, RS_MAIL, "MAIL FROM:<%s>%s", a.path.addr, params);
}

void relay_txn_mail(struct relay_txn *t, const struct smtp_mail_args *a)
{
	t->mail = *a;
	t->mail_accepted = false;
	t->nrcpt_ok = 0;
	relay_txn_begin(t);
}

static bool relay_txn_usable(struct relay_txn *t)
{
	if (t->rc != NULL && !t->rc->closed && t->rc->state == RS_READY)
		return true;
	struct smtp_reply r;
	relay_reply_make(&r, 451, "4.4.2", "Error: lost connection with downstream");
	relay_txn_answer_later(t, &r);
	return false;
}

void relay_txn_rcpt(struct relay_txn *t, const struct smtp_rcpt_args *a)
{
	if (!relay_txn_usable(t))
		return;
	struct smtp_rcpt_args b = *a;
	if (!t->rc->caps.dsn) {
		b.notify[0] = '\0';
		b.orcpt[0] = '\0';
	}
	char params[1024];
	if (smtp_rcpt_args_format(&b, params, sizeof(params)) < 0)
		params[0] = '\0';
	relay_conn_send(t->rc, RS_RCPT, "RCPT TO:<%s>%s", b.path.addr, params);
}

void relay_txn_data(struct relay_txn *t)
{
	if (!relay_txn_usable(t))
		return;
	t->at_line_start = true;
	t->wrote_content = false;
	t->ends_crlf = false;
	t->content_started = false;
	t->lmtp_ok = t->lmtp_fail = 0;
	relay_conn_send(t->rc, RS_DATA, "DATA");
}

bool relay_txn_write(struct relay_txn *t, const uint8_t *p, size_t n)
{
	if (t->rc == NULL || t->rc->closed || t->rc->state != RS_BODY || n == 0)
		return false;
	buf_reset(&t->stuffed);
	const char *hname = t->cfg->relay_auth_header;
	if (hname != NULL) {
		if (!t->content_started) {
			/* Our field first, then the message without any
			   field of that name the client wrote. */
			t->content_started = true;
			relay_hdr_filter_init(&t->hf, hname);
			if (t->user != NULL) {
				struct buf h = BUF_INIT;
				buf_printf(&h, "%s: %s\r\n", hname, t->user);
				smtp_data_stuff(buf_data(&h), buf_len(&h), &t->at_line_start, &t->stuffed);
				buf_free(&h);
			}
		}
		buf_reset(&t->filtered);
		relay_hdr_filter_run(&t->hf, p, n, &t->filtered);
		smtp_data_stuff(buf_data(&t->filtered), buf_len(&t->filtered), &t->at_line_start,
				&t->stuffed);
		if (t->filtered.cap > 256 * 1024)
			buf_free(&t->filtered);
	} else {
		smtp_data_stuff(p, n, &t->at_line_start, &t->stuffed);
	}
	if (buf_len(&t->stuffed) > 0) {
		conn_write(t->rc->conn, buf_data(&t->stuffed), buf_len(&t->stuffed));
		t->wrote_content = true;
		t->ends_crlf = t->at_line_start;
	}
	if (t->stuffed.cap > 256 * 1024)
		buf_free(&t->stuffed);
	/* The whole message must reach the downstream within the relay
	   timeout of its last write. */
	conn_set_timeout(t->rc->conn, t->rc->timeout_ms);
	if (conn_pending(t->rc->conn) > RELAY_HIGH_WATER) {
		t->blocked = true;
		conn_want_drain(t->rc->conn);
		return true;
	}
	return false;
}

void relay_txn_end(struct relay_txn *t)
{
	if (t->rc == NULL || t->rc->closed || t->rc->state != RS_BODY) {
		struct smtp_reply r;
		relay_reply_make(&r, 451, "4.4.2", "Error: lost connection with downstream");
		relay_txn_answer_later(t, &r);
		return;
	}
	struct relay_conn *rc = t->rc;
	if (t->wrote_content && !t->ends_crlf)
		conn_write(rc->conn, "\r\n", 2);
	rc->lmtp_expect = rc->lmtp ? t->nrcpt_ok : 1;
	relay_conn_send(rc, RS_DATA_END, ".");
}

/* LMTP answers once per recipient (RFC 2033 §4.2). The client gets one
 * reply: all delivered → the first 250; none → the first failure; mixed →
 * 451, because a 250 would lose the failed ones and a queue-less server
 * cannot send a bounce (downstream-relay.md §6). */
static void relay_txn_lmtp_reply(struct relay_txn *t, const struct smtp_reply *r)
{
	struct relay_conn *rc = t->rc;
	if (r->code >= 200 && r->code < 300) {
		if (t->lmtp_ok++ == 0)
			t->lmtp_first_ok = *r;
	} else if (t->lmtp_fail++ == 0) {
		t->lmtp_first_fail = *r;
	}
	if (t->lmtp_ok + t->lmtp_fail < rc->lmtp_expect)
		return;
	rc->uses++;
	relay_conn_park(rc);
	t->rc = NULL;
	struct smtp_reply out;
	if (t->lmtp_fail == 0) {
		out = t->lmtp_first_ok;
	} else if (t->lmtp_ok == 0) {
		out = t->lmtp_first_fail;
	} else {
		log_warn("%s: relay=%s: %u of %u recipients refused after end of data (first: %d %s); "
			 "answering 451 so the client retries",
			 t->log_id, t->relay_desc, t->lmtp_fail, t->lmtp_ok + t->lmtp_fail,
			 t->lmtp_first_fail.code, t->lmtp_first_fail.text);
		relay_reply_make(&out, 451, "4.3.0",
				 "Error: some recipients were refused by the downstream, try again");
	}
	relay_txn_answer(t, &out);
}

static void relay_txn_close_cb(uv_handle_t *h)
{
	struct relay_txn *t = h->data;
	buf_free(&t->stuffed);
	buf_free(&t->filtered);
	free(t->user);
	free(t->log_id);
	free(t);
}

void relay_txn_free(struct relay_txn **tp)
{
	struct relay_txn *t = *tp;
	if (t == NULL)
		return;
	*tp = NULL;
	table_cancel(&t->req);
	struct relay_conn *rc = t->rc;
	if (rc != NULL && !rc->closed) {
		rc->txn = NULL;
		if (rc->state == RS_READY && !t->mail_accepted) {
			relay_conn_park(rc);
		} else if (rc->state == RS_READY) {
			/* Between commands: abandon the transaction politely. */
			relay_conn_send(rc, RS_RSET, "RSET");
		} else {
			/* Waiting for a reply or inside DATA: closing the
			   connection is the only abort without a final dot. */
			relay_conn_close(rc, false);
		}
	}
	relay_txn_route_clear(t);
	/* The last user of an older snapshot's tables: close them (and their
	   MySQL connections) now rather than at the next reload. */
	if (t->maps != NULL && --t->maps->users == 0 &&
	    !config_is_part_of(t->pool->current, t->maps->cfg)) {
		for (struct relay_maps **pp = &t->pool->maps; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == t->maps) {
				*pp = t->maps->next;
				relay_maps_close(t->pool, t->maps);
				break;
			}
		}
	}
	t->maps = NULL;
	config_unref(&t->cfg);
	uv_timer_stop(&t->defer_timer);
	uv_close((uv_handle_t *)&t->defer_timer, relay_txn_close_cb);
}

/* ---- submitd -t: every relayhost destination, once ---- */

static void relay_check_cb(void *ctx, const struct smtp_reply *r)
{
	struct relay_txn *t = ctx;
	relay_check_finish(t, false, r);
}

static void relay_check_finish(struct relay_txn *t, bool ok, const struct smtp_reply *r)
{
	t->check_done = true;
	t->check_ok = ok;
	if (r != NULL)
		t->check_reply = *r;
}

int relay_check(struct config *cfg, FILE *out)
{
	uv_loop_t loop;
	if (uv_loop_init(&loop) != 0) {
		fprintf(out, "relay check: cannot create an event loop\n");
		return 1;
	}
	struct relay_pool *pool = relay_pool_new(&loop);
	int failed = 0;
	static const char *const levels[] = {"none", "may", "encrypt", "verify", "secure"};
	for (size_t i = 0; i < cfg->nrelay; i++) {
		struct relay_txn *t = relay_txn_new(pool, cfg, "relay check", relay_check_cb, NULL, NULL);
		t->ctx = t;
		t->mode = TXN_CHECK;
		/* one destination at a time: no failover, each is reported */
		relay_txn_route_clear(t);
		t->dest_idx = 0;
		t->route = &cfg->relay[i];
		t->nroute = 1;
		t->creds = xcalloc(1, sizeof(*t->creds));
		relay_txn_creds_next(t);
		while (!t->check_done)
			uv_run(&loop, UV_RUN_ONCE);
		fprintf(out, "relay %s (relay_tls_security_level %s): ", cfg->relay[i].text,
			levels[cfg->relay_tls]);
		if (t->check_ok) {
			fprintf(out, "ok, %s, %s\n", t->check_tls[0] ? t->check_tls : "no TLS",
				t->check_login[0] ? t->check_login
						  : "no login (no credentials in relay_password_maps)");
		} else {
			failed = 1;
			fprintf(out, "FAILED: %s (clients would get %d %s)\n",
				t->last_why[0] ? t->last_why : t->check_reply.text, t->check_reply.code,
				t->check_reply.enh);
		}
		relay_txn_free(&t);
	}
	if (cfg->sender_relay_maps != NULL)
		fprintf(out, "sender_relay_maps %s: routes are checked when used\n",
			table_name(cfg->sender_relay_maps));
	relay_pool_free(&pool);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return failed;
}
