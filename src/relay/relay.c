#include "config.h"
#include "relay/relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/conn.h"
#include "smtp/data.h"

/* Stop feeding content when this much is queued toward the downstream. */
#define RELAY_HIGH_WATER (1024 * 1024)

enum relay_state {
	RS_RESOLVING,
	RS_CONNECTING,
	RS_TLS_WRAP,   /* implicit TLS handshake before the greeting */
	RS_GREETING,
	RS_EHLO,
	RS_STARTTLS,
	RS_TLS,        /* STARTTLS handshake */
	RS_EHLO2,
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
	[RS_RESOLVING] = "resolving",	[RS_CONNECTING] = "connect",
	[RS_TLS_WRAP] = "TLS handshake", [RS_GREETING] = "greeting",
	[RS_EHLO] = "EHLO",		[RS_STARTTLS] = "STARTTLS",
	[RS_TLS] = "TLS handshake",	[RS_EHLO2] = "EHLO after STARTTLS",
	[RS_READY] = "idle",		[RS_MAIL] = "MAIL FROM",
	[RS_RCPT] = "RCPT TO",		[RS_DATA] = "DATA",
	[RS_BODY] = "message content",	[RS_DATA_END] = "end of data",
	[RS_RSET] = "RSET",		[RS_QUIT] = "QUIT",
};

struct relay_conn {
	struct relay_pool *pool;
	struct conn *conn;
	struct relay_txn *txn;        /* NULL while pooled */
	struct relay_conn *next_idle;
	enum relay_state state;
	struct smtp_reply_parser rp;
	struct smtp_caps caps;
	char *dest;                   /* the destination as written */
	char *sni;                    /* host name for SNI, or NULL */
	bool lmtp;
	bool unix_socket;
	bool implicit_tls;
	bool use_tls;                 /* relay_tls_security_level allows it */
	bool closed;
	bool reused;
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

struct relay_pool {
	uv_loop_t *loop;
	gnutls_certificate_credentials_t creds;
	gnutls_priority_t prio;
	struct relay_conn *idle;
	struct smtp_caps caps;
	bool caps_known;
};

struct relay_txn {
	struct relay_pool *pool;
	struct config *cfg;
	char *log_id;
	relay_txn_cb *cb;
	relay_drain_cb *drain_cb;
	void *ctx;
	struct relay_conn *rc;
	size_t dest_idx;
	bool retried;                 /* a reused connection failed: one fresh try */
	struct smtp_mail_args mail;
	bool mail_accepted;
	unsigned nrcpt_ok;
	bool at_line_start;
	bool wrote_content;
	bool ends_crlf;
	bool blocked;
	/* LMTP: one reply per accepted recipient after the dot (RFC 2033 §4.2) */
	unsigned lmtp_ok, lmtp_fail;
	struct smtp_reply lmtp_first_ok, lmtp_first_fail;
	struct smtp_reply deferred;   /* a synthesised reply waiting for the timer */
	uv_timer_t defer_timer;
	char relay_desc[200];
	struct buf stuffed;
};

static void relay_conn_start(struct relay_txn *t);
static void relay_conn_close(struct relay_conn *rc, bool quit);
static void relay_txn_send_mail(struct relay_txn *t);

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
 * call that started it (STYLE.md 9). */
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
	relay_pool_flush(p);
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

static struct relay_conn *relay_pool_take(struct relay_pool *p, struct config *cfg)
{
	for (struct relay_conn **pp = &p->idle; *pp != NULL; pp = &(*pp)->next_idle) {
		struct relay_conn *rc = *pp;
		for (size_t i = 0; i < cfg->nrelay; i++) {
			if (strcmp(rc->dest, cfg->relay[i].text) == 0 &&
			    rc->use_tls == (cfg->relay_tls != RELAY_TLS_NONE)) {
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
		if (!rc->gai_pending) {
			free(rc->dest);
			free(rc->sni);
			free(rc);
		}
		return;
	}
	if (quit && rc->state == RS_READY && rc->conn->error == 0 && !rc->conn->eof)
		conn_write_str(rc->conn, "QUIT\r\n");
	conn_close(rc->conn);
}

static void relay_conn_on_close(struct conn *c, void *ctx)
{
	struct relay_conn *rc = ctx;
	free(rc->dest);
	free(rc->sni);
	free(rc);
}

/* The path failed before or during a command: try the next destination if
 * the downstream has not accepted MAIL yet (DESIGN.md §4), else tell the
 * client what happened with a 4xx (downstream-relay.md §6). */
static void relay_conn_fail(struct relay_conn *rc, const char *why)
{
	struct relay_txn *t = rc->txn;
	enum relay_state st = rc->state;
	const char *log_id = t != NULL ? t->log_id : "relay";
	log_warn("%s: relay=%s: %s during %s", log_id, rc->peer[0] ? rc->peer : rc->dest, why,
		 relay_state_names[st]);
	bool reused = rc->reused;
	relay_conn_close(rc, false);
	if (t == NULL || t->cb == NULL)
		return; /* an idle or probing connection: nobody to tell */
	struct smtp_reply r;
	if (st <= RS_EHLO2 || (st == RS_MAIL && !t->mail_accepted)) {
		if (reused && !t->retried) {
			/* A pooled connection may have been closed by the
			   other side while idle: one fresh try. */
			t->retried = true;
			t->dest_idx = 0;
			relay_conn_start(t);
			return;
		}
		if (t->dest_idx + 1 < t->cfg->nrelay) {
			t->dest_idx++;
			relay_conn_start(t);
			return;
		}
		relay_reply_make(&r, 451, "4.4.1",
				 "Error: downstream server unavailable, try again later");
	} else if (st == RS_DATA_END) {
		/* The message may or may not have been accepted: a
		   duplicate is better than a loss, so the client retries. */
		relay_reply_make(&r, 451, "4.4.2",
				 "Error: lost connection with downstream after end of data");
	} else {
		relay_reply_make(&r, 451, "4.4.2", "Error: lost connection with downstream");
	}
	relay_txn_answer_later(t, &r);
}

static void relay_conn_ready(struct relay_conn *rc)
{
	rc->pool->caps = rc->caps;
	rc->pool->caps_known = true;
	rc->state = RS_READY;
	conn_clear_timeout(rc->conn);
	if (rc->txn == NULL) {
		relay_conn_park(rc);
		return;
	}
	relay_txn_send_mail(rc->txn);
}

static void relay_conn_ehlo(struct relay_conn *rc, enum relay_state next)
{
	relay_conn_send(rc, next, "%s %s", rc->lmtp ? "LHLO" : "EHLO", rc->helo_name);
}

static void relay_txn_lmtp_reply(struct relay_txn *t, const struct smtp_reply *r);

static void relay_conn_on_reply(struct relay_conn *rc, const struct smtp_reply *r)
{
	struct relay_txn *t = rc->txn;
	bool ok = r->code >= 200 && r->code < 300;
	char why[600];
	log_debug("relay=%s: %s: %d %.*s", rc->peer, relay_state_names[rc->state], r->code,
		  (int)strcspn(r->text, "\n"), r->text);
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
		   (RFC 3207 §4.2). */
		smtp_caps_parse(r, &rc->caps);
		if (rc->state == RS_EHLO && rc->caps.starttls && rc->use_tls &&
		    !rc->conn->tls_active) {
			relay_conn_send(rc, RS_STARTTLS, "STARTTLS");
			return;
		}
		relay_conn_ready(rc);
		return;
	case RS_STARTTLS:
		if (r->code != 220) {
			/* Opportunistic TLS: carry on in plaintext. */
			relay_conn_ready(rc);
			return;
		}
		rc->state = RS_TLS;
		/* conn_tls_start drops anything buffered after the 220: the
		   client-side twin of CVE-2011-0411 (downstream-relay.md §3). */
		if (conn_tls_start(rc->conn, false, rc->pool->creds, rc->pool->prio, rc->sni, false) < 0)
			relay_conn_fail(rc, "cannot start TLS");
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
			relay_conn_fail(rc, "malformed reply");
			return;
		}
		relay_conn_on_reply(rc, &r);
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
	relay_conn_fail(rc, "timeout");
}

static void relay_conn_on_tls(struct conn *c, void *ctx, int err)
{
	struct relay_conn *rc = ctx;
	if (err != 0) {
		char why[160];
		snprintf(why, sizeof(why), "TLS handshake failed: %s", gnutls_strerror(err));
		relay_conn_fail(rc, why);
		return;
	}
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
		rc->state = RS_TLS_WRAP;
		if (conn_tls_start(c, false, rc->pool->creds, rc->pool->prio, rc->sni, false) < 0)
			relay_conn_fail(rc, "cannot start TLS");
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
		free(rc->dest);
		free(rc->sni);
		free(rc);
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
	const struct relay_dest *d = &t->cfg->relay[t->dest_idx];
	struct relay_conn *rc = xcalloc(1, sizeof(*rc));
	rc->pool = t->pool;
	rc->txn = t;
	t->rc = rc;
	rc->dest = xstrdup(d->text);
	rc->lmtp = d->proto == RELAY_LMTP;
	rc->unix_socket = d->unix_path != NULL;
	rc->implicit_tls = d->implicit_tls;
	rc->use_tls = t->cfg->relay_tls != RELAY_TLS_NONE;
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
		rc->sni = xstrdup(d->host);
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

void relay_pool_probe(struct relay_pool *pool, struct config *cfg)
{
	/* A transaction with no owner: it connects, learns the
	   capabilities and leaves the connection in the pool. */
	struct relay_txn probe = {0};
	probe.pool = pool;
	probe.cfg = cfg;
	relay_conn_start(&probe);
	if (probe.rc != NULL)
		probe.rc->txn = NULL;
}

/* ---- the transaction ---- */

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
	return t;
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
	/* We vouch for no one downstream yet (RFC 4954 §5). */
	a.auth[0] = '\0';
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
	struct relay_conn *rc = relay_pool_take(t->pool, t->cfg);
	if (rc != NULL) {
		rc->txn = t;
		rc->reused = true;
		t->rc = rc;
		snprintf(t->relay_desc, sizeof(t->relay_desc), "%s", rc->peer);
		relay_txn_send_mail(t);
		return;
	}
	t->dest_idx = 0;
	relay_conn_start(t);
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
	t->lmtp_ok = t->lmtp_fail = 0;
	relay_conn_send(t->rc, RS_DATA, "DATA");
}

bool relay_txn_write(struct relay_txn *t, const uint8_t *p, size_t n)
{
	if (t->rc == NULL || t->rc->closed || t->rc->state != RS_BODY || n == 0)
		return false;
	buf_reset(&t->stuffed);
	smtp_data_stuff(p, n, &t->at_line_start, &t->stuffed);
	conn_write(t->rc->conn, buf_data(&t->stuffed), buf_len(&t->stuffed));
	if (t->stuffed.cap > 256 * 1024)
		buf_free(&t->stuffed);
	t->wrote_content = true;
	t->ends_crlf = t->at_line_start;
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
	free(t->log_id);
	free(t);
}

void relay_txn_free(struct relay_txn **tp)
{
	struct relay_txn *t = *tp;
	if (t == NULL)
		return;
	*tp = NULL;
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
	config_unref(&t->cfg);
	uv_timer_stop(&t->defer_timer);
	uv_close((uv_handle_t *)&t->defer_timer, relay_txn_close_cb);
}
