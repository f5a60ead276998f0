/* session: the order of the chain, server -> policy -> relay (session.h);
 * the connection around it is session_conn.c's. */
#include "config.h"
#include "session_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "dkim/dkim_hold.h"
#include "lookup/dovecot_auth.h"
#include "policy/policy.h"
#include "policy/restrictions.h"
#include "policy/policy_service.h"
#include "smtp/header.h"

static void session_hdr_cb_do(struct session *s, void *slot, enum sender_login_result res);
static void session_relay_cb_do(void *ctx, const struct smtp_reply *r);
static void session_auth_cb_do(void *ctx, const struct policy_auth_result *r);
static void session_restr_cb_do(void *ctx, enum sender_login_result res, const char *owners);

static void session_hdr_cb(void *ctx, enum sender_login_result res, const char *owners);
static void session_auth_cb(void *ctx, const struct policy_auth_result *r);
static void session_restr_cb(void *ctx, enum sender_login_result res, const char *owners);
static void session_rcpt_go(struct session *s);
static void session_mail_limits(struct session *s);
static void session_send_end(struct session *s);
static void session_limits_cb(void *ctx, const struct smtp_reply *r);
static void session_policy_cb(void *ctx, const struct smtp_reply *r);

static void session_log_delivery(struct session *s, const struct smtp_reply *r)
{
	worker_stat_add(s->w, r->code < 300   ? WORKER_STAT_SENT
			      : r->code < 500 ? WORKER_STAT_DEFERRED
					      : WORKER_STAT_REJECTED);
	uint64_t own = session_busy_take(s);
	log_info("%s: from=<%s>, to=<%s>%s, size=%llu, nrcpt=%u, relay=%s, own=%llu.%03llums, "
		 "status=%s (%d %s %s)",
		 s->id, s->txn->mail.path.addr, s->txn->first_rcpt, s->nrcpt > 1 ? ",..." : "",
		 (unsigned long long)s->msg_size, s->nrcpt,
		 s->relay ? relay_txn_relay(s->relay) : "none", (unsigned long long)(own / 1000000),
		 (unsigned long long)(own / 1000 % 1000),
		 r->code < 300 ? "sent" : (r->code < 500 ? "deferred" : "refused"), r->code, r->enh,
		 r->text);
}

void session_txn_reset(struct session *s)
{
	sender_login_cancel(&s->sender_req);
	dns_cancel(&s->dns_req);
	free(s->dns_deferred);
	s->dns_deferred = NULL;
	policy_service_cancel(&s->policy_req);
	s->policy_eom = false;
	if (s->hdr_check != NULL) { /* per message: an idle session keeps none */
		message_check_reset(s->hdr_check);
		free(s->hdr_check);
		s->hdr_check = NULL;
	}
	dkim_hold_free(&s->dkim);
	s->end_waiting = false;
	relay_txn_free(&s->relay);
	s->relay_step = RELAY_IDLE;
	s->rcpt_waits_for_mail = false;
	s->nrcpt = 0;
	free(s->txn); /* per transaction: an idle session keeps none */
	s->txn = NULL;
	buf_free(&s->header);
	s->header_done = false;
	s->header_too_big = false;
	s->msg_size = 0;
	if (s->input_paused) {
		s->input_paused = false;
		conn_read_start(s->conn);
	}
}

void session_complete(struct session *s, const struct smtp_reply *r)
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
		.rcpt = s->nrcpt == 1 ? s->txn->first_rcpt : NULL,
		.auth_header = s->cfg->relay_auth_header,
	};
}

static void session_relay_write(struct session *s, const uint8_t *p, size_t n)
{
	if (s->relay == NULL || n == 0)
		return;
	bool stop =
		s->dkim != NULL ? dkim_hold_write(s->dkim, p, n) : relay_txn_write(s->relay, p, n);
	if (stop && !s->input_paused) {
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
	struct buf gen = BUF_INIT; /* generic_maps: the fields as they leave */
	struct header_info ghi = hi;
	const uint8_t *gh = session_generic_header(s, buf_data(&s->header), &ghi, &gen);
	if (gh == NULL) {
		s->header_too_big = true;
		buf_free(&s->header);
		buf_free(&gen);
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
	if (s->hdr_check == NULL)
		s->hdr_check = xcalloc(1, sizeof(*s->hdr_check));
	message_check_start(s->hdr_check, &ca, buf_data(&s->header), &hi);
	const uint8_t *h = buf_data(&s->header);
	size_t hlen = hi.header_len;
	char tls[160];
	struct message_trace t = session_trace(s, tls, sizeof(tls));
	struct buf out = BUF_INIT;
	message_header(&t, s->data_time, gh, &ghi, hlen < buf_len(&s->header), &out);
	/* A message to sign is held from here on (dkim/dkim_hold.h). */
	s->dkim = session_dkim_start(s, gh, &ghi, &out);
	buf_free(&gen);
	if (s->dkim == NULL)
		session_relay_write(s, buf_data(&out), buf_len(&out));
	buf_free(&out);
	session_relay_write(s, h + hlen, buf_len(&s->header) - hlen);
	buf_free(&s->header);
}

/* ---- the server's backend: policy and relay ---- */

static void session_relay_cb(void *ctx, const struct smtp_reply *r);
static void session_relay_drain(void *ctx);

/* This session's sender-ownership checker, or NULL when no sender_login_maps
 * is configured. Its tables are the worker's instances for the session's
 * snapshot (lookup/table_registry.h): after a reload, sessions still on the
 * old snapshot keep using its tables. */
static struct sender_login *session_sender_login(struct session *s)
{
	if (s->cfg->sender_login == NULL)
		return NULL;
	if (s->sl == NULL)
		s->sl = sender_login_new_shared(s->cfg->sender_login, s->w->tables, s->cfg);
	return s->sl;
}

/* ---- sender ownership, sender_restrictions, recipient_restrictions ---- */

/* Runs this stage's list from item start; its verdict completes MAIL (250)
 * or lets RCPT go on to the relay. An ownership check in the list is
 * asynchronous: the list resumes after it in session_restr_cb_do(). */
void session_restr_run(struct session *s, size_t start)
{
	const struct restrictions *list =
		s->restr_rcpt ? s->cfg->recipient_restr : s->cfg->sender_restr;
	bool by_default =
		s->restr_rcpt ? s->cfg->recipient_restr_default : s->cfg->sender_restr_default;
	if (by_default && s->listen->mode == LISTEN_PLAIN)
		list = NULL; /* the default is for submission listeners */
	struct restrictions_facts f = {
		.sender = s->txn->mail.path.addr,
		.recipient = s->restr_rcpt ? s->txn->rcpt.path.addr : NULL,
		.login = smtp_server_user(s->server),
		.mynetworks = config_cidr_match(s->cfg->mynetworks, s->cfg->nmynetworks,
						(struct sockaddr *)&s->peer),
		.trusted = s->trusted_client,
		.smtputf8 = s->txn->mail.smtputf8,
		.delimiters = s->cfg->recipient_delimiter,
		.client_addr = s->ip,
		.helo = smtp_server_helo(s->server),
	};
	struct smtp_reply r;
	enum sender_login_policy pol = SENDER_LOGIN_NONE;
	if (start == 0) {
		free(s->dns_deferred);
		s->dns_deferred = NULL;
	}
	enum restrictions_verdict v =
		list == NULL ? RESTRICTIONS_PERMIT
			     : restrictions_eval(list, start, &f, &r, &s->restr_next, &pol);
	if (v == RESTRICTIONS_REJECT) {
		session_metrics_refused(s, s->restr_rcpt, SESSION_WHY_POLICY, &r);
		session_complete(s, &r);
		return;
	}
	if (v == RESTRICTIONS_DNS) {
		session_dns_check(s, list, &f); /* session_dns.c */
		return;
	}
	struct sender_login *sl = session_sender_login(s);
	if (v == RESTRICTIONS_LOGIN && sl != NULL) {
		s->sender_req = sender_login_check_policy(sl, pol, s->txn->mail.path.addr, f.login,
							  session_restr_cb, s);
		return;
	}
	if (v == RESTRICTIONS_LOGIN) {
		/* policy_load() refuses the list without sender_login_maps */
		session_restr_run(s, s->restr_next);
		return;
	}
	if (session_dns_deferred(s))
		return;
	if (s->restr_rcpt) {
		session_rcpt_go(s);
		return;
	}
	session_mail_limits(s);
}

/* MAIL passed the sender check and sender_restrictions: limits and holds
 * answer it (policy/limits.h). */
static void session_mail_limits(struct session *s)
{
	struct smtp_reply r;
	bool anonymous = s->trusted_client && smtp_server_user(s->server) == NULL;
	if (limits_mail(&s->lim, s->cfg, s->w->tables, anonymous, session_limits_cb, s, &r))
		session_complete(s, &r);
}

/* An ownership check answered (sender_login_policy's, or one in a list):
 * refuse, or go on with the list at restr_next. */
static void session_restr_cb_do(void *ctx, enum sender_login_result res, const char *owners)
{
	(void)owners;
	struct session *s = ctx;
	s->sender_req = NULL;
	struct smtp_reply no;
	if (sender_login_reply(res, s->txn->mail.path.addr, smtp_server_user(s->server), &no)) {
		session_metrics_refused(s, s->restr_rcpt, SESSION_WHY_SENDER, &no);
		session_complete(s, &no);
		return;
	}
	session_restr_run(s, s->restr_next);
}

static void session_be_mail(void *ctx, const struct smtp_mail_args *a)
{
	struct session *s = ctx;
	session_txn_reset(s);
	s->txn = xcalloc(1, sizeof(*s->txn));
	s->txn->mail = *a;
	struct sender_login *sl = session_sender_login(s);
	/* A trusted listener's own clients (webmail on localhost) may send
	   without logging in, as the guides' port 25 with permit_mynetworks:
	   their sender is not checked unless the listen line sets
	   sender_login_policy. Logged-in users are always held to it. */
	bool trusted_anonymous = s->trusted_client && smtp_server_user(s->server) == NULL &&
				 !s->listen->sender_policy_set;
	s->restr_rcpt = false;
	s->restr_next = 0;
	/* sender_login_policy runs first, whatever sender_restrictions says:
	   a *_sender_login_mismatch in the list only adds a check (for those
	   this one leaves alone), and nothing in it permits before this. */
	if (sl != NULL && !trusted_anonymous) {
		/* Does the login own the envelope sender? (RFC 6409 §6.1,
		   Postfix's reject_sender_login_mismatch) */
		s->sender_req = sender_login_check(sl, a->path.addr, smtp_server_user(s->server),
						   session_restr_cb, s);
		return;
	}
	session_restr_run(s, 0);
}

/* Asks check_policy_service (policy/policy_service.h) at RCPT or
 * END-OF-MESSAGE, as Postfix does; false when none is configured. */
static bool session_policy_ask(struct session *s, const char *state)
{
	if (!policy_service_configured(s->cfg))
		return false;
	char tls[160] = "", local[INET6_ADDRSTRLEN + 8];
	if (s->conn->tls_active) {
		conn_tls_describe(s->conn, tls, sizeof(tls));
		tls[strcspn(tls, " ")] = '\0';
	}
	snprintf(local, sizeof(local), "%s", s->local_ip);
	bool eom = strcmp(state, "END-OF-MESSAGE") == 0;
	struct policy_service_attrs a = {
		.protocol_state = state,
		.protocol_name = smtp_server_esmtp(s->server) ? "ESMTP" : "SMTP",
		.helo_name = smtp_server_helo(s->server),
		.queue_id = s->id,
		.sender = s->txn->mail.path.addr,
		.recipient = eom ? "" : s->txn->rcpt.path.addr,
		.recipient_count = eom ? s->nrcpt : 0,
		.client_address = s->ip,
		.server_address = local,
		.server_port = s->local_port,
		.instance = s->id,
		.sasl_username = smtp_server_user(s->server),
		.size = eom ? s->msg_size : (s->txn->mail.has_size ? s->txn->mail.size : 0),
		.encryption_protocol = tls,
	};
	s->policy_req = policy_service_ask(&s->w->loop, s->cfg, &a, session_policy_cb, s);
	return true;
}

static void session_rcpt_relay(struct session *s);

static void session_be_rcpt(void *ctx, const struct smtp_rcpt_args *a)
{
	struct session *s = ctx;
	s->txn->rcpt = *a;
	/* <postmaster> is exempt from every restriction (RFC 5321 §4.5.1; as
	   Postfix does) */
	if (strcasecmp(a->path.addr, "postmaster") == 0) {
		session_rcpt_go(s);
		return;
	}
	s->restr_rcpt = true;
	session_restr_run(s, 0);
}

/* The recipient passed local policy: on to the downstream. */
static void session_rcpt_go(struct session *s)
{
	struct smtp_reply over;
	if (!limits_rcpt(&s->lim, s->cfg, &s->w->loop, &over)) {
		session_complete(s, &over);
		return;
	}
	if (session_policy_ask(s, "RCPT"))
		return;
	session_rcpt_relay(s);
}

/* ... and limits and the policy daemon: the downstream hears of it. */
static void session_rcpt_relay(struct session *s)
{
	const struct smtp_rcpt_args *a = &s->txn->rcpt;
	if (s->relay == NULL) {
		/* The downstream transaction opens with the first recipient
		   that passed local policy (docs/design.md §7). */
		s->relay = relay_txn_new(s->w->relay, s->cfg, s->id, session_relay_cb,
					 session_relay_drain, s);
		relay_txn_route_rcpt(s->relay, a->path.addr); /* transport_maps */
		s->relay_step = RELAY_MAIL;
		s->rcpt_waits_for_mail = true;
		struct smtp_mail_args m = s->txn->mail;
		if (m.has_size) {
			char tls[160];
			struct message_trace t = session_trace(s, tls, sizeof(tls));
			m.size += message_added_max(&t) +
				  (s->cfg->dkim ? s->cfg->dkim->added_max : 0);
		}
		relay_txn_mail(s->relay, &m);
		return;
	}
	s->relay_step = RELAY_RCPT;
	relay_txn_rcpt(s->relay, a, smtp_server_data_pipelined(s->server));
}

static void session_policy_cb_do(void *ctx, const struct smtp_reply *r)
{
	struct session *s = ctx;
	s->policy_req = NULL;
	session_metrics_refused(s, !s->policy_eom, SESSION_WHY_POLICY, r);
	if (s->policy_eom) {
		if (r->code != 0) {
			session_log_delivery(s, r);
			session_txn_reset(s);
			session_complete(s, r);
			return;
		}
		session_send_end(s);
		return;
	}
	if (r->code != 0) {
		session_complete(s, r);
		return;
	}
	session_rcpt_relay(s);
}

static void session_be_data(void *ctx)
{
	struct session *s = ctx;
	if (s->relay == NULL) {
		struct smtp_reply r = {.code = 451,
				       .enh = "4.4.2",
				       .text = "Error: lost connection with downstream"};
		session_metrics_downstream(s, false, &r);
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
	if (s->hdr_check != NULL && message_check_pending(s->hdr_check)) {
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
		struct smtp_reply r = {.code = 552,
				       .enh = "5.3.4",
				       .text = "Error: message header size exceeds limit"};
		session_metrics_refused(s, false, SESSION_WHY_SIZE, &r);
		session_complete(s, &r);
		return;
	}
	const struct smtp_reply *verdict =
		s->hdr_check ? message_check_verdict(s->hdr_check) : NULL;
	if (verdict != NULL) {
		struct smtp_reply r = *verdict;
		session_metrics_refused(s, false, SESSION_WHY_FROM, &r);
		session_txn_reset(s);
		session_complete(s, &r);
		return;
	}
	if (s->relay == NULL) {
		struct smtp_reply r = {.code = 451,
				       .enh = "4.4.2",
				       .text = "Error: lost connection with downstream"};
		session_metrics_downstream(s, false, &r);
		session_complete(s, &r);
		return;
	}
	struct smtp_reply lr;
	if (!limits_session_data_end(&s->lim, &lr)) {
		/* Held or kicked while the message came in: it goes no further. */
		session_txn_reset(s);
		session_complete(s, &lr);
		return;
	}
	s->policy_eom = true;
	if (session_policy_ask(s, "END-OF-MESSAGE"))
		return;
	session_send_end(s);
}

/* The message is complete and passed every check: the downstream gets its
 * end (a held message is signed and sent first, then session_dkim_done). */
static void session_send_end(struct session *s)
{
	if (s->dkim != NULL) {
		dkim_hold_end(s->dkim, time(NULL));
		return;
	}
	session_relay_end(s);
}

/* The downstream's final dot. A hold, kick or block made during the
 * END-OF-MESSAGE steps (policy daemon, signing) still stops the message. */
void session_relay_end(struct session *s)
{
	struct smtp_reply lr;
	if (!limits_session_data_end(&s->lim, &lr)) {
		session_txn_reset(s); /* aborts the downstream transaction */
		session_complete(s, &lr);
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
			session_metrics_downstream(s, true, r);
			/* The client hears the downstream's refusal of MAIL
			   as the answer to its RCPT; the next RCPT retries. */
			relay_txn_free(&s->relay);
			s->relay_step = RELAY_IDLE;
			session_complete(s, r);
			return;
		}
		s->relay_step = RELAY_RCPT;
		relay_txn_rcpt(s->relay, &s->txn->rcpt, smtp_server_data_pipelined(s->server));
		return;
	case RELAY_RCPT:
		session_metrics_downstream(s, true, r);
		limits_rcpt_result(&s->lim, s->cfg, &s->w->loop, r->code);
		if (ok && s->nrcpt++ == 0)
			snprintf(s->txn->first_rcpt, sizeof(s->txn->first_rcpt), "%s",
				 s->txn->rcpt.path.addr);
		s->relay_step = RELAY_IDLE;
		session_complete(s, r);
		return;
	case RELAY_DATA:
		session_metrics_downstream(s, false, r);
		s->relay_step = RELAY_IDLE;
		if (r->code == 354) {
			s->data_time = time(NULL);
			struct smtp_reply go = {.code = 354,
						.text = "End data with <CR><LF>.<CR><LF>"};
			session_complete(s, &go);
			return;
		}
		session_complete(s, r);
		return;
	case RELAY_END:
		session_metrics_downstream(s, false, r);
		session_log_delivery(s, r);
		s->relay_step = RELAY_IDLE;
		relay_txn_free(&s->relay);
		session_txn_reset(s);
		session_complete(s, r);
		return;
	case RELAY_IDLE:
		/* The downstream failed during content: a held message on its
		   way out stops waiting for a drain; relay_txn_end() answers. */
		if (s->dkim != NULL)
			dkim_hold_drain(s->dkim);
		break;
	}
}

void session_relay_drain_do(void *ctx)
{
	struct session *s = ctx;
	if (s->dkim != NULL && dkim_hold_drain(s->dkim))
		return; /* the held message is on its way out */
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
	if (r->code == 235) {
		smtp_server_set_user(s->server, r->user);
		limits_session_login(&s->lim, s->cfg, &s->w->loop, r->user);
	}
	if (r->close_after) {
		smtp_server_complete_and_close(s->server, r->code, r->enh, r->text, 421, "4.7.0",
					       "Error: too many failed authentication attempts");
		return;
	}
	smtp_server_complete(s->server, r->code, r->enh, r->text);
	if (r->code == 235) /* no second AUTH: an idle session keeps no auth state */
		policy_auth_free(&s->auth);
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
		.real_remote_ip =
			s->proxy_ip[0] && strcmp(s->proxy_ip, s->ip) != 0 ? s->proxy_ip : NULL,
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
	static _Thread_local char mechs[256]; /* the worker's: used at once by EHLO/HELP */
	policy_auth_mechs(s->w->auth, mechs, sizeof(mechs));
	return mechs;
}

static bool session_be_admit(void *ctx, char *why, size_t whylen)
{
	struct session *s = ctx;
	return limits_session_admit(&s->lim, why, whylen);
}

const struct smtp_server_backend session_backend = {
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
	.admit = session_be_admit,
};

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

static void session_relay_drain(void *ctx)
{
	SESSION_TIMED(ctx, session_relay_drain_do(ctx));
}

static void session_auth_cb(void *ctx, const struct policy_auth_result *r)
{
	SESSION_TIMED(ctx, session_auth_cb_do(ctx, r));
}

static void session_restr_cb(void *ctx, enum sender_login_result res, const char *owners)
{
	SESSION_TIMED(ctx, session_restr_cb_do(ctx, res, owners));
}

static void session_limits_cb(void *ctx, const struct smtp_reply *r)
{
	SESSION_TIMED(ctx, session_complete(ctx, r));
}

static void session_policy_cb(void *ctx, const struct smtp_reply *r)
{
	SESSION_TIMED(ctx, session_policy_cb_do(ctx, r));
}
