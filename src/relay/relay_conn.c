/* relay_conn: one downstream SMTP/LMTP connection — connect, TLS (implicit
 * or STARTTLS), EHLO/LHLO, AUTH, then the transaction's commands, MAIL,
 * RCPT and DATA pipelined when the downstream offers it (docs/pipelining.md)
 * — driven by relay_conn_states[]. */
#include "config.h"
#include "relay/relay_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base64.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/conn.h"

/* RFC 4954 §4: a command line, initial response included, stays within 512. */
#define RELAY_AUTH_LINE_MAX 512

/* The client state machine (Postfix smtp_proto.c keeps the same kind of
 * table): a state's name for logs, the fixed line that enters it, and its
 * timer. Every command waits relay_timeout for its reply. Two timers are not
 * in the table: connecting (relay_connect_timeout for an address literal,
 * a UNIX socket or each address of an MX lookup, relay_timeout once a
 * bracketed name was resolved: relay_conn_start; an MX address's greeting
 * also gets relay_connect_timeout while another address is left),
 * and an idle pooled connection (relay_idle_timeout: relay_pool_park). The
 * STARTTLS handshake runs within the STARTTLS command's relay_timeout; each
 * write of content restarts relay_timeout (relay_txn_write). From the 354
 * to the reply to the final dot every timer also stops at one total
 * deadline, relay_data_timeout (relay_conn_wait_ms): a downstream that
 * reads a byte now and then cannot hold the session for ever. */
const struct relay_conn_state relay_conn_states[] = {
	[RS_RESOLVING] = {"resolving", NULL, RT_KEEP},
	[RS_CONNECTING] = {"connect", NULL, RT_KEEP},
	[RS_TLS_WRAP] = {"TLS handshake", NULL, RT_REPLY},
	[RS_GREETING] = {"greeting", NULL, RT_REPLY},
	[RS_EHLO] = {"EHLO", NULL, RT_REPLY},
	[RS_STARTTLS] = {"STARTTLS", "STARTTLS", RT_REPLY},
	[RS_TLS] = {"TLS handshake", NULL, RT_KEEP},
	[RS_EHLO2] = {"EHLO after STARTTLS", NULL, RT_REPLY},
	[RS_AUTH_PLAIN] = {"AUTH PLAIN", "AUTH PLAIN", RT_REPLY},
	[RS_AUTH_PLAIN_RESP] = {"AUTH PLAIN", NULL, RT_REPLY},
	[RS_AUTH_LOGIN] = {"AUTH LOGIN", "AUTH LOGIN", RT_REPLY},
	[RS_AUTH_LOGIN_USER] = {"AUTH LOGIN", NULL, RT_REPLY},
	[RS_AUTH_LOGIN_PASS] = {"AUTH LOGIN", NULL, RT_REPLY},
	[RS_AUTH_CANCEL] = {"AUTH", "*", RT_REPLY},
	[RS_READY] = {"idle", NULL, RT_CLEAR},
	[RS_MAIL] = {"MAIL FROM", NULL, RT_REPLY},
	[RS_RCPT] = {"RCPT TO", NULL, RT_REPLY},
	[RS_DATA] = {"DATA", "DATA", RT_REPLY},
	[RS_BODY] = {"message content", NULL, RT_CLEAR},
	[RS_DATA_END] = {"end of data", ".", RT_REPLY},
	[RS_RSET] = {"RSET", "RSET", RT_REPLY},
	[RS_QUIT] = {"QUIT", NULL, RT_KEEP},
};

uint64_t relay_conn_wait_ms(const struct relay_conn *rc, uint64_t ms)
{
	if (rc->data_deadline == 0)
		return ms;
	uint64_t now = uv_now(rc->pool->loop);
	uint64_t left = rc->data_deadline > now ? rc->data_deadline - now : 1;
	return ms != 0 && ms < left ? ms : left;
}

/* Sets the timer the current state asks for. */
static void relay_conn_arm(struct relay_conn *rc)
{
	if (rc->state != RS_BODY && rc->state != RS_DATA_END)
		rc->data_deadline = 0;
	uint64_t ms;
	switch (relay_conn_states[rc->state].timer) {
	case RT_KEEP:
		break;
	case RT_REPLY:
		ms = rc->timeout_ms;
		if (rc->state == RS_GREETING && rc->greet_timeout_ms != 0 &&
		    rc->greet_timeout_ms < ms)
			ms = rc->greet_timeout_ms;
		conn_set_timeout(rc->conn, relay_conn_wait_ms(rc, ms));
		break;
	case RT_CLEAR:
		if ((ms = relay_conn_wait_ms(rc, 0)) != 0)
			conn_set_timeout(rc->conn, ms);
		else
			conn_clear_timeout(rc->conn);
		break;
	}
}

static void relay_conn_enter(struct relay_conn *rc, enum relay_state st)
{
	rc->state = st;
	relay_conn_arm(rc);
}

/* What went wrong on the path, for the reply to the client
 * (docs/design.md §7). */
enum relay_fail {
	RELAY_FAIL_PATH, /* connect, greeting, EHLO, lost connection: 4.4.x */
	RELAY_FAIL_TLS,  /* TLS required but unavailable or unverifiable: 4.7.5 */
	RELAY_FAIL_AUTH, /* the relay refused our login, or we could not offer it: 4.7.0 */
};

void relay_conn_send(struct relay_conn *rc, enum relay_state next, const char *fmt, ...)
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
	rc->npipe = 0;
	conn_write(rc->conn, line, (size_t)n);
	relay_conn_arm(rc);
}

void relay_conn_send_batch(struct relay_conn *rc, const enum relay_state *states, unsigned n,
			   const struct buf *b)
{
	rc->npipe = 0;
	for (unsigned i = 1; i < n && rc->npipe < sizeof(rc->pipe) / sizeof(rc->pipe[0]); i++)
		rc->pipe[rc->npipe++] = states[i];
	rc->state = states[0];
	conn_write(rc->conn, buf_data(b), buf_len(b));
	relay_conn_arm(rc);
}

/* The reply to the current command came: the next pipelined one, if any,
 * is now the one waited for. */
static bool relay_conn_pop(struct relay_conn *rc)
{
	if (rc->npipe == 0)
		return false;
	enum relay_state st = rc->pipe[0];
	for (unsigned i = 1; i < rc->npipe; i++)
		rc->pipe[i - 1] = rc->pipe[i];
	rc->npipe--;
	relay_conn_enter(rc, st);
	return true;
}

void relay_conn_command(struct relay_conn *rc, enum relay_state next)
{
	relay_conn_send(rc, next, "%s", relay_conn_states[next].line);
}

/* A line carrying credentials: built in b, which is wiped after the write
 * (docs/design.md invariant 8). With TLS only ciphertext is queued. */
static void relay_conn_send_secret(struct relay_conn *rc, enum relay_state next, struct buf *b)
{
	buf_append(b, "\r\n", 2);
	rc->state = next;
	conn_write(rc->conn, buf_data(b), buf_len(b));
	buf_wipe(b);
	relay_conn_arm(rc);
}

static void relay_conn_free(struct relay_conn *rc)
{
	struct relay_pool *p = rc->pool;
	list_remove(&rc->link);
	relay_cred_free(&rc->cred);
	free(rc->dest);
	free(rc->sni);
	free(rc);
	relay_pool_conn_gone(p);
}

void relay_conn_close(struct relay_conn *rc, bool quit)
{
	if (rc->closed)
		return;
	rc->closed = true;
	if (rc->txn != NULL)
		rc->txn->rc = NULL;
	rc->txn = NULL;
	relay_pool_remove(rc->pool, rc);
	if (rc->conn == NULL) {
		dns_cancel(&rc->dns_req);
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
 * client what happened with a 4xx (docs/design.md §7). The log line
 * names the relay and what it said, for the admin; the client hears only
 * the class of the problem. */
#define RELAY_WHY_TIMEOUT "timeout"
#define RELAY_WHY_DATA_TIMEOUT "timeout (relay_data_timeout)"

static void relay_conn_fail_dns(struct relay_conn *rc, enum relay_fail kind, const char *why,
				bool rc_dns_temp)
{
	bool timeout =
		strcmp(why, RELAY_WHY_TIMEOUT) == 0 || strcmp(why, RELAY_WHY_DATA_TIMEOUT) == 0;
	struct relay_txn *t = rc->txn;
	enum relay_state st = rc->state;
	const char *log_id = t != NULL ? t->log_id : "relay";
	log_warn("%s: relay=%s: %s during %s", log_id, rc->peer[0] ? rc->peer : rc->dest, why,
		 relay_conn_states[st].name);
	metrics_backend_up("relay", rc->dest, false);
	bool reused = rc->reused;
	relay_conn_close(rc, false);
	if (t == NULL || t->cb == NULL)
		return; /* an idle connection: nobody to tell */
	snprintf(t->last_why, sizeof(t->last_why), "%s during %s", why, relay_conn_states[st].name);
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
		if (more && t->mx != NULL && t->mx_dest == t->dest_idx && t->mx_idx + 1 < t->nmx) {
			/* the next address of the destination's MX hosts, before
			   MAIL was accepted (docs/dns.md) */
			t->mx_idx++;
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
		else if (st == RS_RESOLVING && rc_dns_temp)
			relay_reply_make(&r, 451, "4.4.3",
					 "Error: cannot look up the downstream server (DNS), try "
					 "again later");
		else
			relay_reply_make(
				&r, 451, "4.4.1",
				timeout ? "Error: timeout waiting for the downstream server, "
					  "try again later"
					: "Error: downstream server unavailable, try again later");
	} else if (st == RS_DATA_END) {
		/* The message may or may not have been accepted: a
		   duplicate is better than a loss, so the client retries. */
		relay_reply_make(
			&r, 451, "4.4.2",
			timeout ? "Error: timeout waiting for the downstream's reply to "
				  "end of data"
				: "Error: lost connection with downstream after end of data");
	} else {
		relay_reply_make(&r, 451, "4.4.2",
				 timeout ? "Error: timeout waiting for the downstream server"
					 : "Error: lost connection with downstream");
	}
	if ((st == RS_DATA || st == RS_BODY) && t->data_sent && !t->data_asked) {
		/* A pipelined DATA the session has not reached: its DATA
		   finds the connection gone (relay_txn_data). */
		return;
	}
	if (st == RS_BODY) {
		/* No command is out: the client hears it at its final dot, and
		   what it still sends is read and dropped. */
		t->content_failed = true;
		t->content_fail = r;
		if (t->blocked) {
			t->blocked = false;
			if (t->drain_cb != NULL)
				t->drain_cb(t->ctx);
		}
		return;
	}
	relay_txn_answer_later(t, &r);
}

static void relay_conn_fail_as(struct relay_conn *rc, enum relay_fail kind, const char *why)
{
	relay_conn_fail_dns(rc, kind, why, false);
}

static void relay_conn_fail(struct relay_conn *rc, const char *why)
{
	relay_conn_fail_as(rc, RELAY_FAIL_PATH, why);
}

static void relay_conn_ready(struct relay_conn *rc)
{
	rc->pool->caps = rc->caps;
	rc->pool->caps_known = true;
	relay_conn_enter(rc, RS_READY);
	struct relay_txn *t = rc->txn;
	if (t == NULL) {
		relay_pool_park(rc);
		return;
	}
	switch (t->mode) {
	case TXN_NORMAL:
		relay_txn_send_mail(t);
		return;
	case TXN_PROBE:
		/* learned the capabilities; the connection waits in the pool */
		t->rc = NULL;
		relay_pool_park(rc);
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
	int r = conn_tls_start(rc->conn, false, rc->tls_creds, rc->pool->prio, rc->sni, verify,
			       NULL);
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
			 "will not send the credentials of %s (relay_password_maps key %s) without "
			 "TLS "
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
			relay_conn_command(rc, RS_AUTH_PLAIN);
			return;
		}
		relay_conn_send_secret(rc, RS_AUTH_PLAIN, &b);
		return;
	}
	if (rc->caps.auth_login) {
		relay_conn_command(rc, RS_AUTH_LOGIN);
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
			relay_conn_command(rc, RS_AUTH_CANCEL);
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
			 "authentication as %s (relay_password_maps key %s) refused: %d %s%s%s",
			 c->user, c->key, r->code, r->enh, r->enh[0] ? " " : "", r->text);
	relay_conn_fail_as(rc, RELAY_FAIL_AUTH, why);
}

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
	log_debug("relay=%s: %s: %d %.*s", rc->peer, relay_conn_states[rc->state].name, r->code,
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
		metrics_backend_up("relay", rc->dest, true);
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
				relay_conn_command(rc, RS_STARTTLS);
				return;
			}
			if (relay_conn_tls_required(rc)) {
				relay_conn_fail_as(
					rc, RELAY_FAIL_TLS,
					"TLS is required, but was not offered by the server");
				return;
			}
		}
		relay_conn_auth_begin(rc);
		return;
	case RS_STARTTLS:
		if (r->code != 220) {
			if (relay_conn_tls_required(rc)) {
				snprintf(why, sizeof(why),
					 "TLS is required, but STARTTLS was refused: %d %s",
					 r->code, r->text);
				relay_conn_fail_as(rc, RELAY_FAIL_TLS, why);
				return;
			}
			/* Opportunistic TLS: carry on in plaintext. */
			relay_conn_auth_begin(rc);
			return;
		}
		relay_conn_enter(rc, RS_TLS);
		/* conn_tls_start drops anything buffered after the 220: the
		   client-side twin of CVE-2011-0411 (docs/design.md §7). */
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
		if (ok)
			t->mail_accepted = true;
		if (!t->rcpt_pending) {
			relay_conn_enter(rc, RS_READY);
			relay_txn_answer(t, r);
			return;
		}
		/* MAIL for a waiting RCPT: the RCPT's verdict comes next */
		if (relay_conn_pop(rc)) {
			if (!ok) {
				t->mail_refused = true;
				t->mail_refusal = *r;
			}
			return;
		}
		relay_conn_enter(rc, RS_READY);
		if (ok) {
			relay_txn_send_rcpt(t); /* a downstream without PIPELINING */
			return;
		}
		t->rcpt_pending = false;
		t->mail_sent = false;
		relay_txn_answer(t, r);
		return;
	case RS_RCPT:
		if (t == NULL)
			break;
		if (t->mail_refused && ok) {
			/* a recipient for a refused MAIL: never the client's 250 */
			relay_conn_fail(rc, "protocol error: RCPT accepted after MAIL was refused");
			return;
		}
		if (!relay_conn_pop(rc))
			relay_conn_enter(rc, RS_READY);
		t->rcpt_pending = false;
		if (t->mail_refused) {
			/* The next RCPT sends MAIL again, as a new transaction
			   would. */
			t->mail_refused = false;
			t->mail_sent = false;
			relay_txn_answer(t, &t->mail_refusal);
			return;
		}
		if (ok)
			t->nrcpt_ok++;
		relay_txn_answer(t, r);
		return;
	case RS_DATA:
		if (t == NULL)
			break;
		if (r->code == 354 && t->nrcpt_ok == 0) {
			/* RFC 2920 §3.1: DATA after no accepted RCPT must fail */
			relay_conn_fail(rc, "protocol error: 354 without an accepted recipient");
			return;
		}
		if (r->code == 354)
			rc->data_deadline = uv_now(rc->pool->loop) + t->cfg->relay_data_timeout_ms;
		relay_conn_enter(rc, r->code == 354 ? RS_BODY : RS_READY);
		if (t->data_sent && !t->data_asked) {
			/* pipelined: kept until the client's DATA is handled */
			t->has_data_reply = true;
			t->data_reply = *r;
			return;
		}
		t->data_sent = false;
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
		relay_pool_park(rc);
		t->rc = NULL;
		relay_txn_answer(t, r);
		return;
	case RS_RSET:
		if (ok) {
			relay_pool_park(rc);
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
		bool pipelined = rc->npipe > 0;
		relay_conn_on_reply(rc, &r);
		/* One reply per command sent: anything after the last one
		   (except LMTP's further replies to the dot) was not asked for,
		   and a server out of step could make us take its answer to
		   one command for the answer to the next. */
		if (!rc->closed && buf_len(&c->in) > 0 && !pipelined &&
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
				: (c->error < -1000 ? gnutls_strerror(c->error)
						    : uv_strerror(c->error)));
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
	bool data_deadline = rc->data_deadline != 0 && uv_now(rc->pool->loop) >= rc->data_deadline;
	if (data_deadline)
		conn_abort(rc->conn); /* no flushing the rest into a downstream we gave up on */
	relay_conn_fail_as(rc,
			   rc->state == RS_TLS || rc->state == RS_TLS_WRAP ? RELAY_FAIL_TLS
									   : RELAY_FAIL_PATH,
			   data_deadline ? RELAY_WHY_DATA_TIMEOUT : RELAY_WHY_TIMEOUT);
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
			gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out,
								     0);
			snprintf(why, sizeof(why), "server certificate not verified for \"%s\": %s",
				 rc->sni ? rc->sni : "?", out.data ? (const char *)out.data : "?");
			gnutls_free(out.data);
		} else {
			snprintf(why, sizeof(why), "TLS handshake failed: %s",
				 gnutls_strerror(err));
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
		 rc->tls_level >= RELAY_TLS_VERIFY ? "Verified"
		 : status == 0                     ? "Trusted"
						   : "Untrusted");
	conn_tls_describe(c, rc->tls_desc, sizeof(rc->tls_desc));
	log_info("relay=%s: %s TLS connection established: %s", rc->peer, rc->tls_trust,
		 rc->tls_desc);
	if (rc->state == RS_TLS_WRAP) {
		relay_conn_enter(rc, RS_GREETING);
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
	if (rc->implicit_tls) {
		/* RFC 8314 §3.3: TLS first, then the greeting inside it */
		relay_conn_enter(rc, RS_TLS_WRAP);
		relay_conn_tls_begin(rc);
		return;
	}
	relay_conn_enter(rc, RS_GREETING);
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

/* Whether host is domain or a name under it (Postfix's nexthop and
 * dot-nexthop), without case; one trailing dot on domain is ignored. */
static bool relay_conn_in_domain(const char *host, const char *domain)
{
	size_t h = strlen(host), d = strlen(domain);
	if (d > 0 && domain[d - 1] == '.')
		d--;
	if (d == 0 || h < d || strncasecmp(host + h - d, domain, d) != 0)
		return false;
	return h == d || host[h - d - 1] == '.';
}

/* Connects to one address of an unbracketed destination: the MX host's
 * name (or the domain's, without MX) is the SNI and the name verified
 * (docs/dns.md), as Postfix's smtp_tls_security_level = verify does. At
 * secure that name came from DNS, which can be forged: as Postfix's
 * smtp_tls_secure_cert_match = nexthop, dot-nexthop it must be the next-hop
 * domain or a host in it, else the next address is tried. */
static void relay_conn_connect_target(struct relay_conn *rc, const struct dns_target *target)
{
	struct relay_txn *t = rc->txn;
	const char *nexthop = t->route[t->mx_dest].host;
	if (rc->tls_level == RELAY_TLS_SECURE && !rc->unix_socket &&
	    !relay_conn_in_domain(target->host, nexthop)) {
		char why[DNS_NAME_MAX * 2 + 80];
		snprintf(why, sizeof(why), "secure: MX host %s is not in the next-hop domain %s",
			 target->host, nexthop);
		rc->state = RS_CONNECTING;
		relay_conn_fail_as(rc, RELAY_FAIL_TLS, why);
		return;
	}
	struct sockaddr_storage ss = target->addr;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(rc->port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(rc->port);
	free(rc->sni);
	rc->sni = xstrdup(target->host);
	/* a host that accepts and never greets would take all of
	   relay_timeout, the budget of every address (relay_conn_fail_dns):
	   while another is left, its greeting gets relay_connect_timeout */
	if (t->mx_idx + 1 < t->nmx)
		rc->greet_timeout_ms = t->cfg->relay_connect_timeout_ms;
	relay_conn_connect_addr(rc, (struct sockaddr *)&ss);
	/* relay_connect_timeout per address: a silent MX leaves time for the next */
	conn_set_timeout(rc->conn, rc->txn->cfg->relay_connect_timeout_ms);
}

static void relay_conn_mx_cb(void *ctx, const struct dns_result *r)
{
	struct relay_conn *rc = ctx;
	struct relay_txn *t = rc->txn;
	rc->dns_req = NULL;
	if (r->status != DNS_OK) {
		char why[300];
		snprintf(why, sizeof(why), "cannot find the mail servers of %s: %s%s",
			 t->route[t->dest_idx].host,
			 r->status == DNS_TEMPFAIL ? "temporary DNS failure: " : "", r->why);
		relay_conn_fail_dns(rc, RELAY_FAIL_PATH, why, r->status == DNS_TEMPFAIL);
		return;
	}
	relay_txn_mx_clear(t);
	t->mx = xcalloc(r->ntargets, sizeof(*t->mx));
	memcpy(t->mx, r->targets, r->ntargets * sizeof(*t->mx));
	t->nmx = r->ntargets;
	t->mx_dest = t->dest_idx;
	relay_conn_connect_target(rc, &t->mx[0]);
}

/* Opens a connection to the transaction's current destination. */
void relay_conn_start(struct relay_txn *t)
{
	const struct relay_dest *d = &t->route[t->dest_idx];
	struct relay_conn *rc = xcalloc(1, sizeof(*rc));
	rc->pool = t->pool;
	list_add_tail(&t->pool->conns, &rc->link);
	rc->txn = t;
	t->rc = rc;
	rc->dest = xstrdup(d->text);
	rc->lmtp = d->proto == RELAY_LMTP;
	rc->unix_socket = d->unix_path != NULL;
	rc->implicit_tls = d->implicit_tls;
	rc->tls_level = t->cfg->relay_tls;
	rc->tls_creds = relay_pool_tls_creds(t->pool, t->cfg);
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
	if (d->mx) {
		/* Without brackets: the domain's MX hosts, resolved once per
		   attempt, then one address after the other (docs/dns.md). */
		if (t->mx != NULL && t->mx_dest == t->dest_idx && t->mx_idx < t->nmx) {
			relay_conn_connect_target(rc, &t->mx[t->mx_idx]);
			return;
		}
		relay_txn_mx_clear(t);
		rc->state = RS_RESOLVING;
		rc->dns_req = dns_resolve_mx(relay_pool_dns(t->pool), t->cfg, d->host,
					     relay_conn_mx_cb, rc);
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
		if (uv_getaddrinfo(t->pool->loop, &rc->gai, relay_conn_gai_cb, d->host, port,
				   &hints) < 0) {
			rc->gai_pending = false;
			relay_conn_fail(rc, "cannot resolve host");
		}
		return;
	}
	relay_conn_connect_addr(rc, (struct sockaddr *)&ss);
	conn_set_timeout(rc->conn, t->cfg->relay_connect_timeout_ms);
}
