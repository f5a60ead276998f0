/* session_conn: a session's connection, from accept to close — the PROXY
 * header, the connection limits and their 421, TLS, the idle and session
 * timers, and the transport the SMTP server writes through. What happens
 * between the server and the downstream is session.c's. */
#include "config.h"
#include "session_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "net/listener.h"
#include "net/proxy.h"

static void session_conn_on_data_do(struct conn *c, void *ctx);
static void session_conn_refuse(struct session *s, const char *why);

/* ---- the server's transport ---- */

static void session_conn_io_write(void *ctx, const void *p, size_t n)
{
	struct session *s = ctx;
	conn_write(s->conn, p, n);
}

static void session_conn_io_starttls(void *ctx)
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

static void session_conn_io_close(void *ctx)
{
	struct session *s = ctx;
	conn_close(s->conn);
}

static bool session_conn_io_write_blocked(void *ctx)
{
	struct session *s = ctx;
	return conn_write_blocked(s->conn);
}

static void session_conn_io_input_wanted(void *ctx)
{
	struct session *s = ctx;
	if (!s->input_full)
		return;
	s->input_full = false;
	if (!s->input_paused)
		conn_read_start(s->conn);
}

static const struct smtp_server_io session_conn_io = {
	.write = session_conn_io_write,
	.write_blocked = session_conn_io_write_blocked,
	.input_wanted = session_conn_io_input_wanted,
	.starttls = session_conn_io_starttls,
	.close = session_conn_io_close,
};

/* ---- connection events ---- */

/* The idle limit for what the client owes us next (command_timeout, or
 * data_timeout inside message content), never past the session's end. */
static void session_conn_arm_timer(struct session *s)
{
	uint64_t ms = smtp_server_in_content(s->server) ? s->cfg->data_timeout_ms
							: s->cfg->command_timeout_ms;
	uint64_t now = uv_now(&s->w->loop);
	uint64_t left = s->deadline > now ? s->deadline - now : 0;
	conn_set_timeout(s->conn, ms < left ? ms : left);
}

static void session_conn_proxy_input(struct session *s);

static void session_conn_on_data_do(struct conn *c, void *ctx)
{
	struct session *s = ctx;
	if (s->refusing != NULL) {
		buf_consume(&c->in, buf_len(&c->in)); /* it gets its 421, nothing else */
		return;
	}
	if (s->proxy_wait) {
		session_conn_proxy_input(s);
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
	session_conn_arm_timer(s);
	/* A client that pipelines faster than we answer waits in the kernel,
	   not in our memory (docs/design.md invariant 5). */
	if (smtp_server_busy(s->server) && buf_len(&c->in) > 65536) {
		s->input_full = true; /* until session_conn_io_input_wanted() */
		conn_read_stop(c);
	}
}

static void session_conn_on_timeout(struct conn *c, void *ctx)
{
	struct session *s = ctx;
	if (s->proxy_wait) {
		log_info("%s: no complete PROXY header from %s within proxy_timeout", s->id,
			 s->client);
		conn_abort(c);
		return;
	}
	if (s->refusing != NULL) {
		log_info("%s: no TLS handshake from refused client %s in time", s->id, s->client);
		conn_abort(c);
		return;
	}
	if (uv_now(&s->w->loop) >= s->deadline)
		log_info("%s: session time limit (session_timeout) reached for %s", s->id,
			 s->client);
	smtp_server_timeout(s->server);
}

static void session_conn_on_tls(struct conn *c, void *ctx, int err)
{
	struct session *s = ctx;
	session_metrics_tls(s, err);
	if (err != 0) {
		log_info("%s: TLS handshake failed for %s: %s", s->id, s->client,
			 gnutls_strerror(err));
		smtp_server_disconnected(s->server);
		conn_close(c);
		return;
	}
	if (s->refusing != NULL) {
		session_conn_refuse(s, s->refusing);
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

static void session_conn_on_close(struct conn *c, void *ctx)
{
	struct session *s = ctx;
	char counters[256] = "commands=0";
	if (s->server != NULL)
		smtp_server_counters(s->server, counters, sizeof(counters));
	log_info("%s: disconnect from %s %s", s->id, s->client, counters);
	session_txn_reset(s);
	policy_auth_free(&s->auth);
	limits_session_end(&s->lim);
	smtp_server_free(&s->server);
	buf_free(&s->header);
	if (s->refusing != NULL)
		s->w->refusing--;
	if (s->counted)
		listener_conn_release((struct sockaddr *)&s->peer, s->cfg);
	struct worker *w = s->w;
	list_remove(&s->link);
	w->nsessions--;
	session_metrics_open(-1);
	sender_login_free(&s->sl); /* gives the tables back to w->tables */
	config_unref(&s->cfg);
	free(s);
	worker_session_gone(w);
}

static void session_conn_on_data(struct conn *c, void *ctx)
{
	SESSION_TIMED(ctx, session_conn_on_data_do(c, ctx));
}

static const struct conn_handler session_conn_handler = {
	.on_data = session_conn_on_data,
	.on_timeout = session_conn_on_timeout,
	.on_tls = session_conn_on_tls,
	.on_close = session_conn_on_close,
};

static void session_conn_format_addr(const union session_addr *ss, char *ip, size_t iplen,
				     uint16_t *port_r)
{
	if (ss->sa.sa_family == AF_INET6) {
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

static void session_conn_describe_peer(struct session *s)
{
	session_conn_format_addr(&s->peer, s->ip, sizeof(s->ip), &s->port);
	session_conn_format_addr(&s->local, s->local_ip, sizeof(s->local_ip), &s->local_port);
	snprintf(s->client, sizeof(s->client), "[%s]:%u", s->ip, s->port);
}

static void session_conn_begin(struct session *s);

/* A proxy listener: the PROXY header (v1 or v2) must arrive first, from an
 * address in proxy_networks; then the session starts with the client the
 * header names, for logs, mynetworks, limits and Dovecot's rip. */
static void session_conn_proxy_input(struct session *s)
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
	snprintf(s->proxy_ip, sizeof(s->proxy_ip), "%s", s->ip);
	s->proxy_port = s->port;
	if (!h.local) {
		memcpy(&s->peer, &h.src, sizeof(s->peer)); /* AF_INET or AF_INET6 */
		memcpy(&s->local, &h.dst, sizeof(s->local));
		session_conn_describe_peer(s);
	}
	session_conn_begin(s);
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
	list_add_head(&w->sessions, &s->link);
	w->nsessions++;
	session_metrics_open(1);

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
	session_conn_describe_peer(s);
	if (s->listen->proxy) {
		if (!config_cidr_match(s->cfg->proxy_networks, s->cfg->nproxy_networks,
				       (struct sockaddr *)&s->peer)) {
			log_warn("%s: refusing %s on proxy listener %s: not in proxy_networks",
				 s->id, s->client, s->listen->text);
			session_metrics_conn(s, false);
			conn_abort(s->conn);
			return;
		}
		s->proxy_wait = true;
		conn_read_start(s->conn);
		conn_set_timeout(s->conn, s->cfg->proxy_timeout_ms);
		return;
	}
	session_conn_begin(s);
}

/* Refusal handshakes in flight per worker, and how long one may take. */
#define SESSION_CONN_REFUSE_TLS_MAX 32
#define SESSION_CONN_REFUSE_TLS_TIMEOUT_MS 10000

/* No greeting for a client over a connection limit: 421 and close
 * (RFC 5321 §3.8). */
static void session_conn_refuse(struct session *s, const char *why)
{
	char line[160];
	snprintf(line, sizeof(line), "421 4.7.0 %s Error: %s, try again later\r\n",
		 s->cfg->myhostname, why);
	conn_write_str(s->conn, line);
	smtp_server_disconnected(s->server);
	conn_close(s->conn);
}

/* Starts the SMTP session once the client is known. */
static void session_conn_begin(struct session *s)
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
		.relay_trusted =
			s->listen->trusted && config_cidr_match(cfg->mynetworks, cfg->nmynetworks,
								(struct sockaddr *)&s->peer),
		/* Never offer more than the downstream path takes
		   (downstream-relay.md §7); optimistic until first seen. */
		.eightbitmime = !known || caps.eightbitmime,
		.smtputf8 = !known || caps.smtputf8,
		.dsn = !known || caps.dsn,
		.vrfy_disabled = cfg->disable_vrfy,
	};
	if (known && caps.size_present && caps.size > 0 && caps.size < set.size_limit)
		set.size_limit = caps.size;
	s->server = smtp_server_new(&set, &session_conn_io, &session_backend, s, &s->conn->in,
				    s->id, s->client);
	limits_session_start(&s->lim, s->id, s->ip, w->id);
	s->trusted_client = set.relay_trusted;

	static const char *const modes[] = {"plain", "starttls", "tls"};
	char via[INET6_ADDRSTRLEN + 24] = "";
	if (s->proxy_ip[0])
		snprintf(via, sizeof(via), ", via proxy [%s]:%u", s->proxy_ip, s->proxy_port);
	log_info("%s: connect from %s to %s (%s%s%s)", s->id, s->client, s->listen->text,
		 modes[s->listen->mode], set.relay_trusted ? ", trusted" : "", via);

	const char *why = NULL;
	if (!listener_conn_acquire((struct sockaddr *)&s->peer, cfg, &why)) {
		log_warn("%s: refusing %s: %s", s->id, s->client, why);
		session_metrics_conn(s, false);
		/* On an implicit-TLS listener the 421 is only readable inside TLS,
		   so the handshake is done first — for a bounded number at a
		   time, so a flood cannot turn refusals into handshake work; past
		   that the connection is closed without a word. */
		if (s->listen->mode == LISTEN_TLS) {
			if (w->refusing >= SESSION_CONN_REFUSE_TLS_MAX) {
				smtp_server_disconnected(s->server);
				conn_abort(s->conn);
				return;
			}
			w->refusing++;
			s->refusing = why;
			conn_read_start(s->conn);
			conn_set_timeout(s->conn, SESSION_CONN_REFUSE_TLS_TIMEOUT_MS);
			conn_requeue_as_tls(s->conn);
			if (conn_tls_start(s->conn, true, cfg->tls_creds, cfg->tls_prio, NULL,
					   false, &cfg->tls_ticket_key) < 0) {
				smtp_server_disconnected(s->server);
				conn_abort(s->conn);
			}
			return;
		}
		session_conn_refuse(s, why);
		return;
	}
	s->counted = true;
	session_metrics_conn(s, true);
	s->deadline = uv_now(&w->loop) + cfg->session_timeout_ms;
	conn_read_start(s->conn);
	session_conn_arm_timer(s);
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
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &w->sessions)
	{
		struct session *s = list_entry(l, struct session, link);
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
		log_info("worker %u: %s: %u session%s in DATA (oldest %s, %lld s), %u other%s",
			 w->id, what, in_data, in_data == 1 ? "" : "s", oldest_id,
			 (long long)(now - oldest), other, other == 1 ? "" : "s");
	else if (other > 0)
		log_info("worker %u: %s: %u session%s, none in DATA", w->id, what, other,
			 other == 1 ? "" : "s");
}

void session_shutdown_all(struct worker *w)
{
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &w->sessions)
	{
		struct session *s = list_entry(l, struct session, link);
		if (s->server != NULL)
			smtp_server_shutdown(s->server);
	}
}
