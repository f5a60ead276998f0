/* relay: the transaction API of relay/relay.h and `submitd -t`; the
 * connection, pool and route live in the other files (relay/relay_int.h). */
#include "config.h"
#include "relay/relay_int.h"
#include "relay/relay_generic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/conn.h"
#include "smtp/data.h"

/* Stop feeding content when this much is queued toward the downstream: the
 * connection's own output bound (docs/design.md invariant 5). */
#define RELAY_HIGH_WATER CONN_OUT_HIGH

void relay_reply_make(struct smtp_reply *r, int code, const char *enh, const char *fmt, ...)
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

void relay_txn_answer(struct relay_txn *t, const struct smtp_reply *r)
{
	/* Last thing a handler does: the owner may free t inside. */
	if (t->end_ns != 0) { /* the reply to the final dot, by route */
		metrics_observe(METRICS_H_DOWNSTREAM, t->end_route, NULL, uv_hrtime() - t->end_ns);
		t->end_ns = 0;
	}
	t->cb(t->ctx, r);
}

static void relay_txn_defer_cb(uv_timer_t *timer)
{
	struct relay_txn *t = timer->data;
	relay_txn_answer(t, &t->deferred);
}

/* Answers on the next loop iteration: a completion never fires inside the
 * call that started it (docs/design.md §9.9). */
void relay_txn_answer_later(struct relay_txn *t, const struct smtp_reply *r)
{
	t->deferred = *r;
	uv_timer_start(&t->defer_timer, relay_txn_defer_cb, 0, 0);
}

void relay_txn_connect(struct relay_txn *t)
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
	relay_txn_mx_clear(t);
	relay_conn_start(t);
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
	/* this snapshot's instances, shared on the worker (lookup/table_registry.h) */
	if (cfg->relay_password_table != NULL)
		t->maps.passwords =
			table_registry_get(pool->tables, cfg, cfg->relay_password_table);
	if (cfg->sender_relay_table != NULL)
		t->maps.routes = table_registry_get(pool->tables, cfg, cfg->sender_relay_table);
	if (cfg->transport_table != NULL)
		t->maps.transports = table_registry_get(pool->tables, cfg, cfg->transport_table);
	return t;
}

const char *relay_txn_relay(const struct relay_txn *t)
{
	return t->relay_desc[0] ? t->relay_desc : "none";
}

/* The MAIL line for rc, passing on only what the downstream announced
 * (docs/design.md §7). */
static void relay_txn_mail_line(struct relay_txn *t, struct buf *b)
{
	const struct smtp_caps *caps = &t->rc->caps;
	struct smtp_mail_args a = t->mail;
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
	   policy/message.c adds to the header section. */
	char params[1024];
	if (smtp_mail_args_format(&a, params, sizeof(params)) < 0)
		params[0] = '\0';
	/* generic_maps: the address as it leaves (docs/generic.md) */
	char mapped[RELAY_GENERIC_ADDR_MAX];
	const char *addr = relay_generic_addr(t->cfg, a.path.addr, mapped, sizeof(mapped))
				   ? mapped
				   : a.path.addr;
	buf_printf(b, "MAIL FROM:<%s>%s", addr, params);
}

static void relay_txn_rcpt_line(struct relay_txn *t, struct buf *b)
{
	struct smtp_rcpt_args a = t->rcpt;
	if (!t->rc->caps.dsn) {
		a.notify[0] = '\0';
		a.orcpt[0] = '\0';
	}
	char params[1024];
	if (smtp_rcpt_args_format(&a, params, sizeof(params)) < 0)
		params[0] = '\0';
	/* after routing, which used the address as the client gave it, as
	   Postfix's SMTP client does; ORCPT keeps it too */
	char mapped[RELAY_GENERIC_ADDR_MAX];
	const char *addr = relay_generic_addr(t->cfg, a.path.addr, mapped, sizeof(mapped))
				   ? mapped
				   : a.path.addr;
	buf_printf(b, "RCPT TO:<%s>%s", addr, params);
}

static bool relay_txn_pipelining(const struct relay_txn *t)
{
	return t->cfg->relay_pipelining && t->rc->caps.pipelining;
}

static void relay_txn_data_begin(struct relay_txn *t)
{
	t->at_line_start = true;
	t->wrote_content = false;
	t->ends_crlf = false;
	t->content_failed = false;
	t->lmtp_ok = t->lmtp_fail = 0;
}

/* One write (RFC 2920 §3.1): [MAIL] RCPT [DATA]; DATA only when the client
 * pipelined its own, as the last command of the group. */
static void relay_txn_send_pipelined(struct relay_txn *t)
{
	enum relay_state st[3];
	unsigned n = 0;
	struct buf b = BUF_INIT;
	if (!t->mail_sent) {
		relay_txn_mail_line(t, &b);
		buf_append_str(&b, "\r\n");
		st[n++] = RS_MAIL;
		t->mail_sent = true;
		t->mail_refused = false;
	}
	relay_txn_rcpt_line(t, &b);
	buf_append_str(&b, "\r\n");
	st[n++] = RS_RCPT;
	t->data_sent = t->data_next;
	t->data_asked = false;
	t->has_data_reply = false;
	if (t->data_sent) {
		relay_txn_data_begin(t);
		buf_append_str(&b, "DATA\r\n");
		st[n++] = RS_DATA;
	}
	relay_conn_send_batch(t->rc, st, n, &b);
	buf_free(&b);
}

void relay_txn_send_mail(struct relay_txn *t)
{
	/* a connection of its own now: nothing of the transaction is on it */
	t->mail_sent = false;
	t->mail_refused = false;
	t->data_sent = false;
	t->has_data_reply = false;
	if (relay_txn_pipelining(t)) {
		if (t->rcpt_pending) {
			relay_txn_send_pipelined(t);
		} else {
			/* MAIL waits for the first RCPT, to go out with it:
			   the session hears the downstream's verdict on MAIL
			   as its verdict on that RCPT. */
			struct smtp_reply r;
			relay_reply_make(&r, 250, "2.1.0", "Ok");
			relay_txn_answer_later(t, &r);
		}
		return;
	}
	struct buf b = BUF_INIT;
	relay_txn_mail_line(t, &b);
	t->mail_sent = true;
	relay_conn_send(t->rc, RS_MAIL, "%.*s", (int)buf_len(&b), (const char *)buf_data(&b));
	buf_free(&b);
}

void relay_txn_send_rcpt(struct relay_txn *t)
{
	t->rcpt_pending = false;
	struct buf b = BUF_INIT;
	relay_txn_rcpt_line(t, &b);
	relay_conn_send(t->rc, RS_RCPT, "%.*s", (int)buf_len(&b), (const char *)buf_data(&b));
	buf_free(&b);
}

void relay_txn_mail(struct relay_txn *t, const struct smtp_mail_args *a)
{
	t->mail = *a;
	t->mail_accepted = false;
	t->mail_sent = false;
	t->rcpt_pending = false;
	t->mail_refused = false;
	t->data_sent = false;
	t->nrcpt_ok = 0;
	relay_route_begin(t);
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

void relay_txn_route_rcpt(struct relay_txn *t, const char *rcpt)
{
	free(t->route_rcpt);
	t->route_rcpt = xstrdup(rcpt);
}

void relay_txn_rcpt(struct relay_txn *t, const struct smtp_rcpt_args *a, bool data_next)
{
	t->data_next = data_next;
	if (t->maps.transports != NULL && t->mode == TXN_NORMAL) {
		relay_route_rcpt(t, a); /* the next hop first (relay_route.c) */
		return;
	}
	t->rcpt = *a;
	relay_txn_rcpt_go(t);
}

void relay_txn_rcpt_go(struct relay_txn *t)
{
	if (!relay_txn_usable(t))
		return;
	if (relay_txn_pipelining(t)) {
		t->rcpt_pending = !t->mail_sent;
		relay_txn_send_pipelined(t);
		return;
	}
	relay_txn_send_rcpt(t);
}

void relay_txn_data(struct relay_txn *t)
{
	if (t->data_sent) {
		/* DATA went out behind the last RCPT: its reply, now or when
		   it comes (relay_conn.c). */
		t->data_asked = true;
		bool alive = t->rc != NULL && !t->rc->closed;
		/* a 354 from a connection lost since is no go-ahead */
		if (t->has_data_reply && (alive || t->data_reply.code != 354)) {
			t->has_data_reply = false;
			t->data_sent = false;
			relay_txn_answer_later(t, &t->data_reply);
			return;
		}
		if (alive && t->rc->state == RS_DATA)
			return;
		t->has_data_reply = false;
		t->data_sent = false;
		struct smtp_reply r;
		relay_reply_make(&r, 451, "4.4.2", "Error: lost connection with downstream");
		relay_txn_answer_later(t, &r);
		return;
	}
	if (!relay_txn_usable(t))
		return;
	relay_txn_data_begin(t);
	relay_conn_command(t->rc, RS_DATA);
}

bool relay_txn_write(struct relay_txn *t, const uint8_t *p, size_t n)
{
	if (t->rc == NULL || t->rc->closed || t->rc->state != RS_BODY || n == 0)
		return false;
	buf_reset(&t->stuffed);
	smtp_data_stuff(p, n, &t->at_line_start, &t->stuffed);
	if (buf_len(&t->stuffed) > 0) {
		conn_write(t->rc->conn, buf_data(&t->stuffed), buf_len(&t->stuffed));
		t->wrote_content = true;
		t->ends_crlf = t->at_line_start;
	}
	if (t->stuffed.cap > 256 * 1024)
		buf_free(&t->stuffed);
	/* The whole message must reach the downstream within the relay
	   timeout of its last write, and within relay_data_timeout in all. */
	conn_set_timeout(t->rc->conn, relay_conn_wait_ms(t->rc, t->rc->timeout_ms));
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
		relay_txn_answer_later(t, t->content_failed ? &t->content_fail : &r);
		return;
	}
	struct relay_conn *rc = t->rc;
	if (t->wrote_content && !t->ends_crlf)
		conn_write(rc->conn, "\r\n", 2);
	rc->lmtp_expect = rc->lmtp ? t->nrcpt_ok : 1;
	t->end_ns = uv_hrtime();
	snprintf(t->end_route, sizeof(t->end_route), "%s", rc->dest); /* as configured */
	relay_conn_command(rc, RS_DATA_END);
}

/* LMTP answers once per recipient (RFC 2033 §4.2). The client gets one
 * reply: all delivered → the first 250; none → the first failure; mixed →
 * 451, because a 250 would lose the failed ones and a queue-less server
 * cannot send a bounce (docs/design.md §7). */
void relay_txn_lmtp_reply(struct relay_txn *t, const struct smtp_reply *r)
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
	relay_pool_park(rc);
	t->rc = NULL;
	struct smtp_reply out;
	if (t->lmtp_fail == 0) {
		out = t->lmtp_first_ok;
	} else if (t->lmtp_ok == 0) {
		out = t->lmtp_first_fail;
	} else {
		log_warn("%s: relay=%s: %u of %u recipients refused after end of data (first: %d "
			 "%s); "
			 "answering 451 so the client retries",
			 t->log_id, t->relay_desc, t->lmtp_fail, t->lmtp_ok + t->lmtp_fail,
			 t->lmtp_first_fail.code, t->lmtp_first_fail.text);
		relay_reply_make(
			&out, 451, "4.3.0",
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
	table_cancel(&t->req);
	struct relay_conn *rc = t->rc;
	if (rc != NULL && !rc->closed) {
		rc->txn = NULL;
		if (rc->state == RS_READY && !t->mail_accepted) {
			relay_pool_park(rc);
		} else if (rc->state == RS_READY) {
			/* Between commands: abandon the transaction politely. */
			relay_conn_command(rc, RS_RSET);
		} else {
			/* Waiting for a reply or inside DATA: closing the
			   connection is the only abort without a final dot. */
			relay_conn_close(rc, false);
		}
	}
	relay_route_clear(t);
	relay_txn_mx_clear(t);
	/* The last user of an older snapshot's tables closes them (and their
	   MySQL connections) now rather than at the next reload. */
	table_registry_put(t->pool->tables, &t->maps.passwords);
	table_registry_put(t->pool->tables, &t->maps.routes);
	table_registry_put(t->pool->tables, &t->maps.transports);
	free(t->route_rcpt);
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

void relay_check_finish(struct relay_txn *t, bool ok, const struct smtp_reply *r)
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
	struct table_registry *tables = table_registry_new(&loop);
	table_registry_set_current(tables, cfg);
	struct relay_pool *pool = relay_pool_new(&loop, tables);
	int failed = 0;
	static const char *const levels[] = {"none", "may", "encrypt", "verify", "secure"};
	for (size_t i = 0; i < cfg->nrelay; i++) {
		struct relay_txn *t =
			relay_txn_new(pool, cfg, "relay check", relay_check_cb, NULL, NULL);
		t->ctx = t;
		t->mode = TXN_CHECK;
		/* one destination at a time: no failover, each is reported */
		relay_route_clear(t);
		t->dest_idx = 0;
		t->route = &cfg->relay[i];
		t->nroute = 1;
		t->creds = xcalloc(1, sizeof(*t->creds));
		relay_route_creds_next(t);
		while (!t->check_done)
			uv_run(&loop, UV_RUN_ONCE);
		fprintf(out, "relay %s (relay_tls_security_level %s): ", cfg->relay[i].text,
			levels[cfg->relay_tls]);
		if (t->check_ok) {
			fprintf(out, "ok, %s, %s\n", t->check_tls[0] ? t->check_tls : "no TLS",
				t->check_login[0]
					? t->check_login
					: "no login (no credentials in relay_password_maps)");
		} else {
			failed = 1;
			fprintf(out, "FAILED: %s (clients would get %d %s)\n",
				t->last_why[0] ? t->last_why : t->check_reply.text,
				t->check_reply.code, t->check_reply.enh);
		}
		relay_txn_free(&t);
	}
	if (cfg->sender_relay_table != NULL)
		fprintf(out, "sender_relay_maps %s: routes are checked when used\n",
			table_name(cfg->sender_relay_table));
	if (cfg->transport_table != NULL)
		fprintf(out, "transport_maps %s: routes are checked when used\n",
			table_name(cfg->transport_table));
	relay_pool_free(&pool);
	table_registry_free(&tables);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return failed;
}
