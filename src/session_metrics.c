/* session_metrics: what a session's replies and events count
 * (core/metrics.h, docs/observability.md). The chain in session.c and
 * session_conn.c calls these in one line each. */
#include "config.h"
#include "session_impl.h"

#include <gnutls/gnutls.h>

#include "core/metrics.h"

void session_metrics_refused(struct session *s, bool rcpt, enum session_why why,
			     const struct smtp_reply *r)
{
	if (r->code < 400)
		return;
	if (rcpt) {
		metrics_inc(METRICS_RCPT_POLICY); /* a sender check at RCPT is policy too */
		metrics_login_add(METRICS_TOP_REFUSED, smtp_server_user(s->server), 1);
		return;
	}
	static const enum metrics_counter by_why[] = {
		[SESSION_WHY_POLICY] = METRICS_MSG_POLICY,
		[SESSION_WHY_SENDER] = METRICS_MSG_SENDER_NOT_OWNED,
		[SESSION_WHY_FROM] = METRICS_MSG_FROM_NOT_OWNED,
		[SESSION_WHY_SIZE] = METRICS_MSG_SIZE,
	};
	/* A 4xx from an ownership check: the table could not answer. */
	if (r->code < 500 && (why == SESSION_WHY_SENDER || why == SESSION_WHY_FROM))
		metrics_inc(METRICS_MSG_LOOKUP_UNAVAILABLE);
	else
		metrics_inc(by_why[why]);
}

void session_metrics_downstream(struct session *s, bool rcpt, const struct smtp_reply *r)
{
	if (r->code == 354)
		return;
	if (r->code >= 200 && r->code < 300) {
		if (rcpt) {
			metrics_inc(METRICS_RCPT_ACCEPTED);
			return;
		}
		metrics_inc(METRICS_MSG_ACCEPTED);
		metrics_add(METRICS_RELAYED_BYTES, s->msg_size);
		metrics_login_add(METRICS_TOP_MESSAGES, smtp_server_user(s->server), 1);
		return;
	}
	bool perm = r->code >= 500;
	if (rcpt) {
		metrics_inc(perm ? METRICS_RCPT_DOWNSTREAM_REFUSED
				 : METRICS_RCPT_DOWNSTREAM_UNAVAILABLE);
		metrics_login_add(METRICS_TOP_REFUSED, smtp_server_user(s->server), 1);
	} else
		metrics_inc(perm ? METRICS_MSG_DOWNSTREAM_REFUSED
				 : METRICS_MSG_DOWNSTREAM_UNAVAILABLE);
}

void session_metrics_conn(struct session *s, bool accepted)
{
	metrics_conn(s->listen->text, accepted ? METRICS_CONN_ACCEPTED : METRICS_CONN_REFUSED);
}

void session_metrics_open(int delta)
{
	metrics_gauge_add(METRICS_G_SESSIONS, delta);
}

void session_metrics_tls(struct session *s, int err)
{
	if (err != 0 || s->conn->tls == NULL) {
		metrics_inc(METRICS_TLS_FAILED);
		return;
	}
	gnutls_protocol_t v = gnutls_protocol_get_version(s->conn->tls);
	metrics_inc(v == GNUTLS_TLS1_3   ? METRICS_TLS_OK_13
		    : v == GNUTLS_TLS1_2 ? METRICS_TLS_OK_12
					 : METRICS_TLS_OK_OTHER);
	if (gnutls_session_is_resumed(s->conn->tls))
		metrics_inc(METRICS_TLS_RESUMED);
}
