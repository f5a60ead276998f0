/* session internals, shared by session.c (the chain: server -> policy ->
 * relay) and session_conn.c (the connection: accept, PROXY, TLS, timers,
 * the server's transport, close). Not for other files. */
#ifndef SUBMITD_SESSION_IMPL_H
#define SUBMITD_SESSION_IMPL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "net/conn.h"
#include "lookup/dns.h"
#include "policy/auth.h"
#include "policy/limits.h"
#include "policy/policy_service.h"
#include "policy/message.h"
#include "policy/sender_login.h"
#include "relay/relay.h"
#include "session.h"
#include "smtp/server.h"

struct dkim_hold;

/* A listener's peer is IPv4 or IPv6: a sockaddr_storage would be 100 bytes
 * more per session, twice. */
union session_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* What only a transaction needs, allocated at MAIL and freed at its end
 * (docs/benchmarks.md: an idle session's memory). */
struct session_txn {
	struct smtp_mail_args mail;
	struct smtp_rcpt_args rcpt; /* the RCPT waiting for the downstream */
	char first_rcpt[SMTP_PATH_MAX + 1];
};

struct session {
	struct worker *w;
	struct config *cfg;
	struct list_link link; /* on w->sessions */
	const struct listen_cfg *listen;
	struct conn *conn;
	struct smtp_server *server;
	struct relay_txn *relay;
	struct policy_auth *auth;
	struct sender_login *sl; /* sender ownership, on the worker's tables */

	char id[20];
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	char client[INET6_ADDRSTRLEN + 16]; /* "[ip]:port" for logs */
	union session_addr peer;            /* the client (as the PROXY header says, if any) */
	union session_addr local;           /* the address it connected to */
	char local_ip[INET6_ADDRSTRLEN];
	uint16_t local_port;
	bool proxy_wait;     /* a proxy listener: the header comes first */
	bool trusted_client; /* trusted listener, client in mynetworks */
	char proxy_ip[INET6_ADDRSTRLEN];
	uint16_t proxy_port;
	bool counted;
	const char *refusing;                  /* refused on an implicit-TLS listener: why */
	struct limits_session lim;             /* per-login limits and holds (policy/limits.h) */
	struct policy_service_req *policy_req; /* check_policy_service in flight */
	bool policy_eom;                       /* it was asked at END-OF-MESSAGE */

	/* the transaction */
	struct session_txn *txn; /* from MAIL to its end; NULL while idle */
	bool rcpt_waits_for_mail;
	unsigned nrcpt;
	enum { RELAY_IDLE, RELAY_MAIL, RELAY_RCPT, RELAY_DATA, RELAY_END } relay_step;

	/* sender ownership: MAIL FROM, then From:/Sender: (policy/) */
	struct sender_login_req *sender_req;
	struct message_check *hdr_check; /* while a header section is checked */
	bool end_waiting;                /* end of data seen, header checks still out */
	/* sender_restrictions / recipient_restrictions under way (policy/restrictions.h) */
	bool restr_rcpt;   /* the RCPT list, else the MAIL list */
	size_t restr_next; /* where to resume after an ownership check */
	/* reject_unknown_*_domain's lookup (session_dns.c) */
	struct dns_req *dns_req;
	bool dns_rcpt; /* ...for the recipient, else the sender */
	/* defer_if_permit: the reply a permit gets instead; NULL: none. Made
	   only when needed: an idle session keeps no reply text. */
	struct smtp_reply *dns_deferred;

	/* content */
	struct buf header; /* held until the header section is complete */
	bool header_done;
	bool header_too_big;
	bool input_paused;      /* back-pressure from the downstream */
	bool input_full;        /* reading stopped while the server was busy */
	struct dkim_hold *dkim; /* the message held for signing (dkim/dkim_hold.h) */
	time_t data_time;
	uint64_t msg_size;
	uint64_t deadline; /* loop time when session_timeout ends it */
	/* The time submitd's own handlers spent on this session since the last
	   message (docs/benchmarks.md: the latency submitd adds, without the waits
	   for Dovecot, MySQL and the downstream), logged per message. */
	uint64_t busy_ns;
	uint64_t busy_t0;
};

/* ---- timing submitd's own work (see busy_ns) ---- */

static inline void session_busy_begin(struct session *s)
{
	s->busy_t0 = uv_hrtime();
}
static inline void session_busy_end(struct session *s)
{
	s->busy_ns += uv_hrtime() - s->busy_t0;
}
/* The own time so far, including the handler now running; restarts the count. */
static inline uint64_t session_busy_take(struct session *s)
{
	uint64_t now = uv_hrtime(), t = s->busy_ns + (now - s->busy_t0);
	s->busy_ns = 0;
	s->busy_t0 = now;
	return t;
}

#define SESSION_TIMED(s, call)                \
	do {                                  \
		struct session *timed_ = (s); \
		session_busy_begin(timed_);   \
		call;                         \
		session_busy_end(timed_);     \
	} while (0)

/* ---- session.c, for session_conn.c ---- */

/* What the server calls for MAIL, RCPT, DATA, AUTH ... */
extern const struct smtp_server_backend session_backend;
/* Ends the transaction: lookups cancelled, the relay transaction aborted,
 * held content freed, reading resumed. */
void session_txn_reset(struct session *s);
/* Answers the command the server is waiting on. */
void session_complete(struct session *s, const struct smtp_reply *r);
/* The downstream (or the DKIM hold) took what it was given: reading resumes. */
void session_relay_drain_do(void *ctx);
/* The message's final end downstream, after the hold re-check. */
void session_relay_end(struct session *s);

/* Runs this stage's restriction list from item start (session.c). */
void session_restr_run(struct session *s, size_t start);

/* ---- session_dns.c ---- */

struct restrictions;
struct restrictions_facts;
/* reject_unknown_*_domain: looks the domain up on the worker's resolver,
 * then refuses or resumes the list at s->restr_next. */
void session_dns_check(struct session *s, const struct restrictions *list,
		       const struct restrictions_facts *f);
/* The list permitted: true when a DNS failure deferred (then answered
 * 450), Postfix's defer_if_permit. */
bool session_dns_deferred(struct session *s);

/* ---- session_metrics.c: what a reply counts (core/metrics.h) ---- */

enum session_why { SESSION_WHY_POLICY, SESSION_WHY_SENDER, SESSION_WHY_FROM, SESSION_WHY_SIZE };
/* A local refusal (r->code >= 400) of a recipient (rcpt) or of the message;
 * other codes count nothing. */
void session_metrics_refused(struct session *s, bool rcpt, enum session_why why,
			     const struct smtp_reply *r);
/* The downstream's (or its absence's) reply to MAIL/RCPT (rcpt) or to DATA
 * or the final dot: accepted recipients and messages, downstream refusals. */
void session_metrics_downstream(struct session *s, bool rcpt, const struct smtp_reply *r);
/* Connections (a refusal by limits or proxy_networks), TLS handshakes
 * (session_conn.c). */
void session_metrics_conn(struct session *s, bool accepted);
void session_metrics_tls(struct session *s, int err);
void session_metrics_open(int delta); /* submitd_sessions_open */

/* ---- session_dkim.c ---- */

struct header_info;
/* Starts holding a message to sign, or NULL when it is not signed (it then
 * goes out as it is); out is the header section submitd writes first. */
/* session_generic.c: h[0..hi->header_len) with generic_maps applied: h
 * itself when nothing matched, else the rebuilt section in out (hi scanned
 * again), NULL when it grew beyond header_size_limit. */
const uint8_t *session_generic_header(struct session *s, const uint8_t *h, struct header_info *hi,
				      struct buf *out);
struct dkim_hold *session_dkim_start(struct session *s, const uint8_t *h,
				     const struct header_info *hi, const struct buf *out);

#endif
