#include "config.h"
#include "session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "lookup/dovecot_auth.h"
#include "net/conn.h"
#include "net/proxy.h"
#include "policy/auth.h"
#include "policy/message.h"
#include "policy/policy.h"
#include "policy/sender_login.h"
#include "relay/relay.h"
#include "smtp/header.h"
#include "smtp/server.h"

struct session {
	struct worker *w;
	struct config *cfg;
	struct session *next, *prev;
	const struct listen_cfg *listen;
	struct conn *conn;
	struct smtp_server *server;
	struct relay_txn *relay;
	struct policy_auth *auth;
	char auth_mechs[256];
	struct worker_sl *sl_entry;      /* the sender-ownership instance it uses */

	char id[20];
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	char client[INET6_ADDRSTRLEN + 16]; /* "[ip]:port" for logs */
	struct sockaddr_storage peer;    /* the client (as the PROXY header says, if any) */
	struct sockaddr_storage local;   /* the address it connected to */
	char local_ip[INET6_ADDRSTRLEN];
	uint16_t local_port;
	bool proxy_wait;                 /* a proxy listener: the header comes first */
	bool trusted_client;             /* trusted listener, client in mynetworks */
	char proxied_by[INET6_ADDRSTRLEN + 16];  /* "[ip]:port" of the proxy, for logs */
	char proxy_ip[INET6_ADDRSTRLEN];
	uint16_t proxy_port;
	bool counted;
	const char *refusing;            /* refused on an implicit-TLS listener: why */

	/* the transaction */
	struct smtp_mail_args mail;
	struct smtp_rcpt_args rcpt;      /* the RCPT waiting for the downstream MAIL */
	bool rcpt_waits_for_mail;
	unsigned nrcpt;
	char first_rcpt[SMTP_PATH_MAX + 1];
	enum { RELAY_IDLE, RELAY_MAIL, RELAY_RCPT, RELAY_DATA, RELAY_END } relay_step;

	/* sender ownership: MAIL FROM, then From:/Sender: (policy/) */
	struct sender_login_req *sender_req;
	struct message_check hdr_check;
	bool end_waiting;                /* end of data seen, header checks still out */

	/* content */
	struct buf header;               /* held until the header section is complete */
	bool header_done;
	bool header_too_big;
	bool input_paused;               /* back-pressure from the downstream */
	bool input_full;                 /* reading stopped while the server was busy */
	time_t data_time;
	uint64_t msg_size;
	uint64_t deadline;               /* loop time when session_timeout ends it */
	/* The time submitd's own handlers spent on this session since the last
	   message (docs/benchmarks.md: the latency submitd adds, without the waits
	   for Dovecot, MySQL and the downstream), logged per message. */
	uint64_t busy_ns;
	uint64_t busy_t0;
};

/* ---- helpers ---- */


/* ---- timing submitd's own work (see busy_ns) ---- */

static void session_busy_begin(struct session *s) { s->busy_t0 = uv_hrtime(); }
static void session_busy_end(struct session *s) { s->busy_ns += uv_hrtime() - s->busy_t0; }
/* The own time so far, including the handler now running; restarts the count. */
static uint64_t session_busy_take(struct session *s)
{
	uint64_t now = uv_hrtime(), t = s->busy_ns + (now - s->busy_t0);
	s->busy_ns = 0;
	s->busy_t0 = now;
	return t;
}

static void session_hdr_cb_do(struct session *s, void *slot, enum sender_login_result res);
static void session_relay_cb_do(void *ctx, const struct smtp_reply *r);
static void session_relay_drain_do(void *ctx);
static void session_auth_cb_do(void *ctx, const struct policy_auth_result *r);
static void session_sender_cb_do(void *ctx, enum sender_login_result res, const char *owners);
static void session_on_data_do(struct conn *c, void *ctx);
static void session_refuse(struct session *s, const char *why);

#define SESSION_TIMED(s, call)                                                                 \
	do {                                                                                   \
		struct session *timed_ = (s);                                                  \
		session_busy_begin(timed_);                                                    \
		call;                                                                          \
		session_busy_end(timed_);                                                      \
	} while (0)

static void session_hdr_cb(void *ctx, enum sender_login_result res, const char *owners);
static void session_auth_cb(void *ctx, const struct policy_auth_result *r);
static void session_sender_cb(void *ctx, enum sender_login_result res, const char *owners);
static void session_on_data(struct conn *c, void *ctx);

static void session_log_delivery(struct session *s, const struct smtp_reply *r)
{
	worker_stat_add(s->w, r->code < 300   ? WORKER_STAT_SENT
			      : r->code < 500 ? WORKER_STAT_DEFERRED
					      : WORKER_STAT_REJECTED);
	uint64_t own = session_busy_take(s);
	log_info("%s: from=<%s>, to=<%s>%s, size=%llu, nrcpt=%u, relay=%s, own=%llu.%03llums, "
		 "status=%s (%d %s %s)",
		 s->id, s->mail.path.addr, s->first_rcpt, s->nrcpt > 1 ? ",..." : "",
		 (unsigned long long)s->msg_size, s->nrcpt, s->relay ? relay_txn_relay(s->relay) : "none",
		 (unsigned long long)(own / 1000000), (unsigned long long)(own / 1000 % 1000),
		 r->code < 300 ? "sent" : (r->code < 500 ? "deferred" : "refused"), r->code, r->enh,
		 r->text);
}

static void session_txn_reset(struct session *s)
{
	sender_login_cancel(&s->sender_req);
	message_check_reset(&s->hdr_check);
	s->end_waiting = false;
	relay_txn_free(&s->relay);
	s->relay_step = RELAY_IDLE;
	s->rcpt_waits_for_mail = false;
	s->nrcpt = 0;
	s->first_rcpt[0] = '\0';
	buf_free(&s->header);
	s->header_done = false;
	s->header_too_big = false;
	s->msg_size = 0;
	if (s->input_paused) {
		s->input_paused = false;
		conn_read_start(s->conn);
	}
}

static void session_complete(struct session *s, const struct smtp_reply *r)
{
	smtp_server_complete(s->server, r->code, r->enh, r->text);
}

/* What the Received: field says of this session (policy/message.h). */
static struct message_trace session_trace(struct session *s, char *tls, size_t tlssz)
{
	if (s->conn->tls_active)
		conn_tls_describe(s->conn, tls, tlssz);
	return (struct message_trace){
		.helo = smtp_server_helo(s->server),
		.ip = s->ip,
		.tls = s->conn->tls_active ? tls : NULL,
		.user = smtp_server_user(s->server),
		.esmtp = smtp_server_esmtp(s->server),
		.smtputf8 = smtp_server_smtputf8(s->server),
		.by = s->cfg->myhostname,
		.id = s->id,
		.rcpt = s->nrcpt == 1 ? s->first_rcpt : NULL,
	};
}

static void session_relay_write(struct session *s, const uint8_t *p, size_t n)
{
	if (s->relay == NULL || n == 0)
		return;
	if (relay_txn_write(s->relay, p, n) && !s->input_paused) {
		s->input_paused = true;
		conn_read_stop(s->conn);
	}
}

static void session_finish_data(struct session *s);
static struct sender_login *session_sender_login(struct session *s);

/* Sends the held header section as policy/message.c writes it, and starts
 * the From:/Sender: checks (their verdict waits for the end of data). */
static void session_emit_header(struct session *s, bool at_end)
{
	struct header_info hi;
	if (!header_scan(buf_data(&s->header), buf_len(&s->header), at_end, &hi))
		return;
	if (hi.header_len > s->cfg->header_size_limit) {
		s->header_too_big = true; /* refused at the end of data */
		buf_free(&s->header);
		return;
	}
	s->header_done = true;
	struct message_check_args ca = {
		.cfg = s->cfg,
		.sl = session_sender_login(s),
		.user = smtp_server_user(s->server),
		.id = s->id,
		.cb = session_hdr_cb,
		.ctx = s,
	};
	message_check_start(&s->hdr_check, &ca, buf_data(&s->header), &hi);
	const uint8_t *h = buf_data(&s->header);
	size_t hlen = hi.header_len;
	char tls[160];
	struct message_trace t = session_trace(s, tls, sizeof(tls));
	struct buf out = BUF_INIT;
	message_header(&t, s->data_time, h, &hi, hlen < buf_len(&s->header), &out);
	session_relay_write(s, buf_data(&out), buf_len(&out));
	buf_free(&out);
	session_relay_write(s, h + hlen, buf_len(&s->header) - hlen);
	buf_free(&s->header);
}

/* ---- the server's backend: policy and relay ---- */

static void session_relay_cb(void *ctx, const struct smtp_reply *r);
static void session_relay_drain(void *ctx);

/* The worker's lookup instance for sender ownership for this session's
 * configuration snapshot, or NULL when no sender_login_maps is configured.
 * After a reload, sessions still on the old snapshot keep using its tables. */
static struct sender_login *session_sender_login(struct session *s)
{
	struct worker *w = s->w;
	if (s->cfg->sender_login == NULL)
		return NULL;
	if (s->sl_entry != NULL) {
		if (s->sl_entry->sl != NULL)
			return s->sl_entry->sl;
		s->sl_entry->users--; /* retired under it (the worker stops) */
		s->sl_entry = NULL;
	}
	struct worker_sl *i;
	for (i = w->sl_list; i != NULL; i = i->next)
		if (i->cfg == s->cfg && i->sl != NULL)
			break;
	if (i == NULL) {
		i = xcalloc(1, sizeof(*i));
		i->cfg = config_ref(s->cfg);
		i->sl = sender_login_new(s->cfg->sender_login, &w->loop);
		i->next = w->sl_list;
		w->sl_list = i;
	}
	s->sl_entry = i;
	i->users++;
	return i->sl;
}

/* Retires the instances of older snapshots that none of this worker's
 * sessions uses (the snapshot may still be held by another worker: each
 * worker has its own instances and MySQL connections). Their tables close
 * through the loop, so the snapshot itself is let go one pass later. */
static void session_sl_collect(struct worker *w, bool all)
{
	for (struct worker_sl **pp = &w->sl_list; *pp != NULL;) {
		struct worker_sl *i = *pp;
		if (i->sl == NULL && i->users == 0) {
			*pp = i->next;
			config_unref(&i->cfg);
			free(i);
			continue;
		}
		if (i->sl != NULL && (all || (!config_is_part_of(w->cfg, i->cfg) && i->users == 0)))
			sender_login_free(&i->sl);
		pp = &i->next;
	}
}

void session_worker_reconfigured(struct worker *w)
{
	session_sl_collect(w, false);
}

void session_worker_done(struct worker *w)
{
	session_sl_collect(w, true);
}

static void session_sender_cb_do(void *ctx, enum sender_login_result res, const char *owners)
{
	struct session *s = ctx;
	s->sender_req = NULL;
	struct smtp_reply no;
	if (sender_login_reply(res, s->mail.path.addr, smtp_server_user(s->server), &no)) {
		session_complete(s, &no);
		return;
	}
	struct smtp_reply r = {.code = 250, .enh = "2.1.0", .text = "Ok"};
	session_complete(s, &r);
}

static void session_be_mail(void *ctx, const struct smtp_mail_args *a)
{
	struct session *s = ctx;
	session_txn_reset(s);
	s->mail = *a;
	struct sender_login *sl = session_sender_login(s);
	/* A trusted listener's own clients (webmail on localhost) may send
	   without logging in, as the guides' port 25 with permit_mynetworks:
	   their sender is not checked unless the listen line sets
	   sender_login_policy. Logged-in users are always held to it. */
	bool trusted_anonymous = s->trusted_client && smtp_server_user(s->server) == NULL &&
				 !s->listen->sender_policy_set;
	if (sl != NULL && !trusted_anonymous) {
		/* Does the login own the envelope sender? (RFC 6409 §6.1,
		   Postfix's reject_sender_login_mismatch) */
		s->sender_req = sender_login_check(sl, a->path.addr, smtp_server_user(s->server),
						   session_sender_cb, s);
		return;
	}
	struct smtp_reply r = {.code = 250, .enh = "2.1.0", .text = "Ok"};
	session_complete(s, &r);
}

static void session_be_rcpt(void *ctx, const struct smtp_rcpt_args *a)
{
	struct session *s = ctx;
	s->rcpt = *a;
	if (s->relay == NULL) {
		/* The downstream transaction opens with the first recipient
		   that passed local policy (docs/design.md §7). */
		s->relay = relay_txn_new(s->w->relay, s->cfg, s->id, session_relay_cb, session_relay_drain, s);
		relay_txn_set_user(s->relay, smtp_server_user(s->server)); /* relay_auth_header */
		s->relay_step = RELAY_MAIL;
		s->rcpt_waits_for_mail = true;
		struct smtp_mail_args m = s->mail;
		if (m.has_size) {
			char tls[160];
			struct message_trace t = session_trace(s, tls, sizeof(tls));
			m.size += message_added_max(&t);
		}
		relay_txn_mail(s->relay, &m);
		return;
	}
	s->relay_step = RELAY_RCPT;
	relay_txn_rcpt(s->relay, a);
}

static void session_be_data(void *ctx)
{
	struct session *s = ctx;
	if (s->relay == NULL) {
		struct smtp_reply r = {.code = 451, .enh = "4.4.2", .text = "Error: lost connection with downstream"};
		session_complete(s, &r);
		return;
	}
	s->relay_step = RELAY_DATA;
	relay_txn_data(s->relay);
}

static void session_be_content(void *ctx, const uint8_t *p, size_t n)
{
	struct session *s = ctx;
	if (s->header_too_big || s->relay == NULL)
		return;
	if (s->header_done) {
		session_relay_write(s, p, n);
		return;
	}
	buf_append(&s->header, p, n);
	session_emit_header(s, false);
	if (!s->header_done && buf_len(&s->header) > s->cfg->header_size_limit) {
		s->header_too_big = true;
		buf_free(&s->header);
	}
}

static void session_be_data_end(void *ctx, const struct smtp_server_data_info *info)
{
	struct session *s = ctx;
	s->msg_size = info->size;
	if (!s->header_done && !s->header_too_big)
		session_emit_header(s, true);
	if (message_check_pending(&s->hdr_check)) {
		s->end_waiting = true; /* the last header check finishes the message */
		return;
	}
	session_finish_data(s);
}

/* The end of the message, once every local check has answered: refuse it
 * (the downstream never sees the final dot) or send the dot. */
static void session_finish_data(struct session *s)
{
	s->end_waiting = false;
	if (s->header_too_big) {
		session_txn_reset(s);
		struct smtp_reply r = {.code = 552, .enh = "5.3.4", .text = "Error: message header size exceeds limit"};
		session_complete(s, &r);
		return;
	}
	const struct smtp_reply *verdict = message_check_verdict(&s->hdr_check);
	if (verdict != NULL) {
		struct smtp_reply r = *verdict;
		session_txn_reset(s);
		session_complete(s, &r);
		return;
	}
	if (s->relay == NULL) {
		struct smtp_reply r = {.code = 451, .enh = "4.4.2", .text = "Error: lost connection with downstream"};
		session_complete(s, &r);
		return;
	}
	s->relay_step = RELAY_END;
	relay_txn_end(s->relay);
}

static void session_be_reset(void *ctx)
{
	struct session *s = ctx;
	session_txn_reset(s);
}

static void session_relay_cb_do(void *ctx, const struct smtp_reply *r)
{
	struct session *s = ctx;
	bool ok = r->code >= 200 && r->code < 300;
	switch (s->relay_step) {
	case RELAY_MAIL:
		if (!ok) {
			/* The client hears the downstream's refusal of MAIL
			   as the answer to its RCPT; the next RCPT retries. */
			relay_txn_free(&s->relay);
			s->relay_step = RELAY_IDLE;
			session_complete(s, r);
			return;
		}
		s->relay_step = RELAY_RCPT;
		relay_txn_rcpt(s->relay, &s->rcpt);
		return;
	case RELAY_RCPT:
		if (ok && s->nrcpt++ == 0)
			snprintf(s->first_rcpt, sizeof(s->first_rcpt), "%s", s->rcpt.path.addr);
		s->relay_step = RELAY_IDLE;
		session_complete(s, r);
		return;
	case RELAY_DATA:
		s->relay_step = RELAY_IDLE;
		if (r->code == 354) {
			s->data_time = time(NULL);
			struct smtp_reply go = {.code = 354, .text = "End data with <CR><LF>.<CR><LF>"};
			session_complete(s, &go);
			return;
		}
		session_complete(s, r);
		return;
	case RELAY_END:
		session_log_delivery(s, r);
		s->relay_step = RELAY_IDLE;
		relay_txn_free(&s->relay);
		session_txn_reset(s);
		session_complete(s, r);
		return;
	case RELAY_IDLE:
		break;
	}
}

static void session_relay_drain_do(void *ctx)
{
	struct session *s = ctx;
	if (s->input_paused) {
		s->input_paused = false;
		conn_read_start(s->conn);
		smtp_server_input(s->server);
	}
}

/* ---- AUTH: policy/auth.c talks to Dovecot and decides the replies ---- */

static void session_auth_cb_do(void *ctx, const struct policy_auth_result *r)
{
	struct session *s = ctx;
	if (r->code == 235)
		smtp_server_set_user(s->server, r->user);
	if (r->close_after) {
		smtp_server_complete_and_close(s->server, r->code, r->enh, r->text, 421, "4.7.0",
					       "Error: too many failed authentication attempts");
		return;
	}
	smtp_server_complete(s->server, r->code, r->enh, r->text);
}

static void session_be_auth(void *ctx, const char *args, size_t len)
{
	struct session *s = ctx;
	if (s->w->auth == NULL) {
		smtp_server_complete(s->server, 503, "5.5.1", "Error: authentication not enabled");
		return;
	}
	if (s->auth == NULL)
		s->auth = policy_auth_new(&s->w->loop, s->w->auth, s->cfg, session_auth_cb, s);
	char sni[256];
	conn_tls_server_name(s->conn, sni, sizeof(sni));
	struct policy_auth_session sess = {
		.session_id = s->id,
		.remote_ip = s->ip,
		.remote_port = s->port,
		.local_ip = s->local_ip,
		.local_port = s->local_port,
		.local_name = sni,
		.real_remote_ip = s->proxy_ip[0] && strcmp(s->proxy_ip, s->ip) != 0 ? s->proxy_ip : NULL,
		.real_remote_port = s->proxy_ip[0] ? s->proxy_port : 0,
		.peer = (struct sockaddr *)&s->peer,
	};
	policy_auth_command(s->auth, &sess, args, len);
}

static void session_be_auth_response(void *ctx, const char *line, size_t len)
{
	struct session *s = ctx;
	policy_auth_response(s->auth, line, len);
}

static void session_be_auth_abort(void *ctx)
{
	struct session *s = ctx;
	if (s->auth != NULL)
		policy_auth_cancel(s->auth);
}

static const char *session_be_auth_mechs(void *ctx)
{
	struct session *s = ctx;
	policy_auth_mechs(s->w->auth, s->auth_mechs, sizeof(s->auth_mechs));
	return s->auth_mechs;
}

static const struct smtp_server_backend session_backend = {
	.mail = session_be_mail,
	.rcpt = session_be_rcpt,
	.data = session_be_data,
	.content = session_be_content,
	.data_end = session_be_data_end,
	.reset = session_be_reset,
	.auth = session_be_auth,
	.auth_response = session_be_auth_response,
	.auth_abort = session_be_auth_abort,
	.auth_mechs = session_be_auth_mechs,
};

/* ---- the server's transport ---- */

static void session_io_write(void *ctx, const void *p, size_t n)
{
	struct session *s = ctx;
	conn_write(s->conn, p, n);
}

static void session_io_starttls(void *ctx)
{
	struct session *s = ctx;
	int r = conn_tls_start(s->conn, true, s->cfg->tls_creds, s->cfg->tls_prio, NULL, false,
			       &s->cfg->tls_ticket_key);
	if (r < 0) {
		log_warn("%s: cannot start TLS: %s", s->id, gnutls_strerror(r));
		smtp_server_disconnected(s->server);
		conn_close(s->conn);
	}
}

static void session_io_close(void *ctx)
{
	struct session *s = ctx;
	conn_close(s->conn);
}

static bool session_io_write_blocked(void *ctx)
{
	struct session *s = ctx;
	return conn_write_blocked(s->conn);
}

static void session_io_input_wanted(void *ctx)
{
	struct session *s = ctx;
	if (!s->input_full)
		return;
	s->input_full = false;
	if (!s->input_paused)
		conn_read_start(s->conn);
}

static const struct smtp_server_io session_io = {
	.write = session_io_write,
	.write_blocked = session_io_write_blocked,
	.input_wanted = session_io_input_wanted,
	.starttls = session_io_starttls,
	.close = session_io_close,
};

/* ---- connection events ---- */

/* The idle limit for what the client owes us next (command_timeout, or
 * data_timeout inside message content), never past the session's end. */
static void session_arm_timer(struct session *s)
{
	uint64_t ms = smtp_server_in_content(s->server) ? s->cfg->data_timeout_ms
							 : s->cfg->command_timeout_ms;
	uint64_t now = uv_now(&s->w->loop);
	uint64_t left = s->deadline > now ? s->deadline - now : 0;
	conn_set_timeout(s->conn, ms < left ? ms : left);
}

static void session_proxy_input(struct session *s);

static void session_on_data_do(struct conn *c, void *ctx)
{
	struct session *s = ctx;
	if (s->refusing != NULL) {
		buf_consume(&c->in, buf_len(&c->in)); /* it gets its 421, nothing else */
		return;
	}
	if (s->proxy_wait) {
		session_proxy_input(s);
		return;
	}
	if (buf_len(&c->in) > 0)
		smtp_server_input(s->server);
	/* While output is blocked the conn does not read, so the end of the
	   input is seen only once what came before it has been answered. */
	if (c->eof || c->error != 0) {
		smtp_server_disconnected(s->server);
		conn_close(c);
		return;
	}
	session_arm_timer(s);
	/* A client that pipelines faster than we answer waits in the kernel,
	   not in our memory (docs/design.md invariant 5). */
	if (smtp_server_busy(s->server) && buf_len(&c->in) > 65536) {
		s->input_full = true; /* until session_io_input_wanted() */
		conn_read_stop(c);
	}
}

static void session_on_timeout(struct conn *c, void *ctx)
{
	struct session *s = ctx;
	if (s->proxy_wait) {
		log_info("%s: no complete PROXY header from %s within proxy_timeout", s->id, s->client);
		conn_abort(c);
		return;
	}
	if (s->refusing != NULL) {
		log_info("%s: no TLS handshake from refused client %s in time", s->id, s->client);
		conn_abort(c);
		return;
	}
	if (uv_now(&s->w->loop) >= s->deadline)
		log_info("%s: session time limit (session_timeout) reached for %s", s->id, s->client);
	smtp_server_timeout(s->server);
}

static void session_on_tls(struct conn *c, void *ctx, int err)
{
	struct session *s = ctx;
	if (err != 0) {
		log_info("%s: TLS handshake failed for %s: %s", s->id, s->client, gnutls_strerror(err));
		smtp_server_disconnected(s->server);
		conn_close(c);
		return;
	}
	if (s->refusing != NULL) {
		session_refuse(s, s->refusing);
		return;
	}
	char desc[160];
	conn_tls_describe(c, desc, sizeof(desc));
	bool implicit = s->listen->mode == LISTEN_TLS;
	log_info("%s: %s: %s", s->id, implicit ? "tls" : "starttls", desc);
	smtp_server_tls_done(s->server, true);
	if (implicit)
		smtp_server_greet(s->server);
}

static void session_on_close(struct conn *c, void *ctx)
{
	struct session *s = ctx;
	char counters[256] = "commands=0";
	if (s->server != NULL)
		smtp_server_counters(s->server, counters, sizeof(counters));
	log_info("%s: disconnect from %s %s", s->id, s->client, counters);
	session_txn_reset(s);
	policy_auth_free(&s->auth);
	smtp_server_free(&s->server);
	buf_free(&s->header);
	if (s->refusing != NULL)
		s->w->refusing--;
	if (s->counted)
		worker_conn_release((struct sockaddr *)&s->peer, s->cfg);
	struct worker *w = s->w;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	w->nsessions--;
	if (s->sl_entry != NULL)
		s->sl_entry->users--;
	config_unref(&s->cfg);
	free(s);
	session_sl_collect(w, false);
	worker_session_gone(w);
}

static void session_hdr_cb_do(struct session *s, void *slot, enum sender_login_result res)
{
	if (message_check_answer(slot, res) && s->end_waiting)
		session_finish_data(s);
}

static void session_hdr_cb(void *ctx, enum sender_login_result res, const char *owners)
{
	(void)owners;
	struct session *s = message_check_ctx(ctx);
	SESSION_TIMED(s, session_hdr_cb_do(s, ctx, res));
}

static void session_relay_cb(void *ctx, const struct smtp_reply *r)
{
	SESSION_TIMED(ctx, session_relay_cb_do(ctx, r));
}

static void session_relay_drain(void *ctx) { SESSION_TIMED(ctx, session_relay_drain_do(ctx)); }

static void session_auth_cb(void *ctx, const struct policy_auth_result *r)
{
	SESSION_TIMED(ctx, session_auth_cb_do(ctx, r));
}

static void session_sender_cb(void *ctx, enum sender_login_result res, const char *owners)
{
	SESSION_TIMED(ctx, session_sender_cb_do(ctx, res, owners));
}

static void session_on_data(struct conn *c, void *ctx) { SESSION_TIMED(ctx, session_on_data_do(c, ctx)); }

static const struct conn_handler session_conn_handler = {
	.on_data = session_on_data,
	.on_timeout = session_on_timeout,
	.on_tls = session_on_tls,
	.on_close = session_on_close,
};

static void session_format_addr(const struct sockaddr_storage *ss, char *ip, size_t iplen,
				uint16_t *port_r)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, (socklen_t)iplen);
		*port_r = ntohs(sin6->sin6_port);
		/* Show IPv4-mapped addresses as IPv4. */
		if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') != NULL)
			memmove(ip, ip + 7, strlen(ip + 7) + 1);
	} else {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, (socklen_t)iplen);
		*port_r = ntohs(sin->sin_port);
	}
}

static void session_describe_peer(struct session *s)
{
	session_format_addr(&s->peer, s->ip, sizeof(s->ip), &s->port);
	session_format_addr(&s->local, s->local_ip, sizeof(s->local_ip), &s->local_port);
	snprintf(s->client, sizeof(s->client), "[%s]:%u", s->ip, s->port);
}

static void session_begin(struct session *s);

/* A proxy listener: the PROXY header (v1 or v2) must arrive first, from an
 * address in proxy_networks; then the session starts with the client the
 * header names, for logs, mynetworks, limits and Dovecot's rip. */
static void session_proxy_input(struct session *s)
{
	struct conn *c = s->conn;
	struct proxy_header h;
	enum proxy_status st = proxy_parse(buf_data(&c->in), buf_len(&c->in), &h);
	if (st == PROXY_MORE) {
		if (c->eof || c->error != 0)
			conn_close(c);
		return;
	}
	if (st == PROXY_BAD) {
		log_warn("%s: bad PROXY header from %s: %s", s->id, s->client, h.error);
		conn_abort(c);
		return;
	}
	buf_consume(&c->in, h.len);
	s->proxy_wait = false;
	snprintf(s->proxied_by, sizeof(s->proxied_by), "%s", s->client);
	snprintf(s->proxy_ip, sizeof(s->proxy_ip), "%s", s->ip);
	s->proxy_port = s->port;
	if (!h.local) {
		memcpy(&s->peer, &h.src, sizeof(h.src));
		memcpy(&s->local, &h.dst, sizeof(h.dst));
		session_describe_peer(s);
	}
	session_begin(s);
}

void session_accept(struct worker *w, int fd, size_t listen_idx)
{
	struct session *s = xcalloc(1, sizeof(*s));
	s->w = w;
	s->cfg = config_ref(config_for_listener(w->cfg, listen_idx));
	s->listen = &s->cfg->listens[listen_idx];
	s->conn = conn_new(&w->loop, false, &session_conn_handler, s);
	snprintf(s->id, sizeof(s->id), "%08X%X%04X", (unsigned)time(NULL), w->id & 0xf,
		 (unsigned)(w->seq++ & 0xffff));
	s->next = w->sessions;
	if (w->sessions != NULL)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;

	if (uv_tcp_open(&s->conn->h.tcp, fd) != 0) {
		close(fd);
		conn_abort(s->conn); /* nothing to talk to; the close callback cleans up */
		return;
	}
	uv_tcp_nodelay(&s->conn->h.tcp, 1);
	int len = sizeof(s->peer);
	uv_tcp_getpeername(&s->conn->h.tcp, (struct sockaddr *)&s->peer, &len);
	len = sizeof(s->local);
	uv_tcp_getsockname(&s->conn->h.tcp, (struct sockaddr *)&s->local, &len);
	session_describe_peer(s);
	if (s->listen->proxy) {
		if (!config_cidr_match(s->cfg->proxy_networks, s->cfg->nproxy_networks,
				       (struct sockaddr *)&s->peer)) {
			log_warn("%s: refusing %s on proxy listener %s: not in proxy_networks", s->id,
				 s->client, s->listen->text);
			conn_abort(s->conn);
			return;
		}
		s->proxy_wait = true;
		conn_read_start(s->conn);
		conn_set_timeout(s->conn, s->cfg->proxy_timeout_ms);
		return;
	}
	session_begin(s);
}

/* Refusal handshakes in flight per worker, and how long one may take. */
#define SESSION_REFUSE_TLS_MAX 32
#define SESSION_REFUSE_TLS_TIMEOUT_MS 10000

/* No greeting for a client over a connection limit: 421 and close
 * (RFC 5321 §3.8). */
static void session_refuse(struct session *s, const char *why)
{
	char line[160];
	snprintf(line, sizeof(line), "421 4.7.0 %s Error: %s, try again later\r\n",
		 s->cfg->myhostname, why);
	conn_write_str(s->conn, line);
	smtp_server_disconnected(s->server);
	conn_close(s->conn);
}

/* Starts the SMTP session once the client is known. */
static void session_begin(struct session *s)
{
	struct worker *w = s->w;
	const struct config *cfg = s->cfg;
	struct smtp_caps caps;
	bool known = relay_pool_caps(w->relay, &caps);
	struct smtp_server_settings set = {
		.hostname = cfg->myhostname,
		.size_limit = cfg->message_size_limit,
		.line_limit = cfg->line_length_limit,
		.recipient_limit = cfg->recipient_limit,
		.error_limit = cfg->error_limit,
		.newline_mode = cfg->bare_newline == BARE_NEWLINE_NORMALIZE ? SMTP_NEWLINE_NORMALIZE
									     : SMTP_NEWLINE_REJECT,
		.starttls_offered = s->listen->mode == LISTEN_STARTTLS,
		.tls_active = false,
		.relay_trusted = s->listen->trusted &&
				 config_cidr_match(cfg->mynetworks, cfg->nmynetworks,
						   (struct sockaddr *)&s->peer),
		/* Never offer more than the downstream path takes
		   (downstream-relay.md §7); optimistic until first seen. */
		.eightbitmime = !known || caps.eightbitmime,
		.smtputf8 = !known || caps.smtputf8,
		.dsn = !known || caps.dsn,
	};
	if (known && caps.size_present && caps.size > 0 && caps.size < set.size_limit)
		set.size_limit = caps.size;
	s->server = smtp_server_new(&set, &session_io, &session_backend, s, &s->conn->in, s->id,
				    s->client);
	s->trusted_client = set.relay_trusted;

	static const char *const modes[] = {"plain", "starttls", "tls"};
	log_info("%s: connect from %s to %s (%s%s%s%s)", s->id, s->client, s->listen->text,
		 modes[s->listen->mode], set.relay_trusted ? ", trusted" : "",
		 s->proxied_by[0] ? ", via proxy " : "", s->proxied_by);

	const char *why = NULL;
	if (!worker_conn_acquire((struct sockaddr *)&s->peer, cfg, &why)) {
		log_warn("%s: refusing %s: %s", s->id, s->client, why);
		/* On an implicit-TLS listener the 421 is only readable inside TLS,
		   so the handshake is done first — for a bounded number at a
		   time, so a flood cannot turn refusals into handshake work; past
		   that the connection is closed without a word. */
		if (s->listen->mode == LISTEN_TLS) {
			if (w->refusing >= SESSION_REFUSE_TLS_MAX) {
				smtp_server_disconnected(s->server);
				conn_abort(s->conn);
				return;
			}
			w->refusing++;
			s->refusing = why;
			conn_read_start(s->conn);
			conn_set_timeout(s->conn, SESSION_REFUSE_TLS_TIMEOUT_MS);
			conn_requeue_as_tls(s->conn);
			if (conn_tls_start(s->conn, true, cfg->tls_creds, cfg->tls_prio, NULL, false,
					   &cfg->tls_ticket_key) < 0) {
				smtp_server_disconnected(s->server);
				conn_abort(s->conn);
			}
			return;
		}
		session_refuse(s, why);
		return;
	}
	s->counted = true;
	s->deadline = uv_now(&w->loop) + cfg->session_timeout_ms;
	conn_read_start(s->conn);
	session_arm_timer(s);
	if (s->listen->mode == LISTEN_TLS) {
		conn_requeue_as_tls(s->conn); /* what followed a PROXY header */
		int r = conn_tls_start(s->conn, true, cfg->tls_creds, cfg->tls_prio, NULL, false,
				   &cfg->tls_ticket_key);
		if (r < 0) {
			log_warn("%s: cannot start TLS: %s", s->id, gnutls_strerror(r));
			smtp_server_disconnected(s->server);
			conn_close(s->conn);
		}
		return;
	}
	smtp_server_greet(s->server);
	/* Bytes that came with a PROXY header: the client spoke first. */
	if (buf_len(&s->conn->in) > 0)
		smtp_server_input(s->server);
}

void session_log_waiting(struct worker *w, const char *what)
{
	unsigned in_data = 0, other = 0;
	time_t now = time(NULL), oldest = now;
	const char *oldest_id = "";
	for (struct session *s = w->sessions; s != NULL; s = s->next) {
		if ((s->server != NULL && smtp_server_in_content(s->server)) ||
		    s->relay_step == RELAY_END) {
			in_data++;
			if (s->data_time != 0 && s->data_time <= oldest) {
				oldest = s->data_time;
				oldest_id = s->id;
			}
		} else {
			other++;
		}
	}
	if (in_data > 0)
		log_info("worker %u: %s: %u session%s in DATA (oldest %s, %lld s), %u other%s", w->id,
			 what, in_data, in_data == 1 ? "" : "s", oldest_id, (long long)(now - oldest),
			 other, other == 1 ? "" : "s");
	else if (other > 0)
		log_info("worker %u: %s: %u session%s, none in DATA", w->id, what, other,
			 other == 1 ? "" : "s");
}

void session_shutdown_all(struct worker *w)
{
	for (struct session *s = w->sessions, *next; s != NULL; s = next) {
		next = s->next;
		if (s->server != NULL)
			smtp_server_shutdown(s->server);
	}
}
