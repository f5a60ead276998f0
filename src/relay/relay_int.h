/* relay/relay_int.h: what the files of relay/ share and nothing outside
 * them includes (the interface is relay/relay.h).
 *
 *   relay.c             the transaction API (relay_txn_*) and `submitd -t`
 *   relay_conn.c        one downstream SMTP/LMTP connection: the client
 *                       state machine, driven by relay_conn_states[]
 *   relay_pool.c        idle connections, the per-snapshot table instances,
 *                       the probe
 *   relay_route.c       route (transport_maps, sender_relay_maps, relayhost)
 *                       and credentials
 *                       (relay_password_maps), their keys and lookups
 *
 * Ownership: a pool owns its idle connections; a transaction owns the
 * connection it borrowed (t->rc, rc->txn point at each other) until it parks
 * it again or it closes. */
#ifndef SUBMITD_RELAY_INT_H
#define SUBMITD_RELAY_INT_H

#include <gnutls/gnutls.h>

#include "core/buf.h"
#include "lookup/dns.h"
#include "core/list.h"
#include "lookup/table.h"
#include "lookup/table_registry.h"
#include "net/conn.h"
#include "relay/relay.h"

#define RELAY_KEYS_MAX 2048
#define RELAY_HOP_MAX 512 /* a transport_maps destination */

enum relay_state {
	RS_RESOLVING,
	RS_CONNECTING,
	RS_TLS_WRAP, /* implicit TLS handshake before the greeting */
	RS_GREETING,
	RS_EHLO,
	RS_STARTTLS,
	RS_TLS, /* STARTTLS handshake */
	RS_EHLO2,
	RS_AUTH_PLAIN,      /* AUTH PLAIN sent (with or without the response) */
	RS_AUTH_PLAIN_RESP, /* PLAIN response sent after an empty 334 */
	RS_AUTH_LOGIN,      /* AUTH LOGIN sent, waiting for the user name challenge */
	RS_AUTH_LOGIN_USER, /* user name sent, waiting for the password challenge */
	RS_AUTH_LOGIN_PASS, /* password sent */
	RS_AUTH_CANCEL,     /* "*" sent after a bad challenge (RFC 4954 §4) */
	RS_READY,           /* greeted; idle in the pool or between commands */
	RS_MAIL,
	RS_RCPT,
	RS_DATA,
	RS_BODY,
	RS_DATA_END,
	RS_RSET,
	RS_QUIT,
};

/* One row per state: the name in logs, the fixed command line sent on
 * entering it (NULL: none, or one with arguments), and what happens to the
 * connection's timer on entering it (relay_conn.c). */
enum relay_timer {
	RT_KEEP,  /* left as it is */
	RT_REPLY, /* relay_timeout: waiting for the downstream */
	RT_CLEAR, /* stopped: waiting for our side */
};
struct relay_conn_state {
	const char *name;
	const char *line;
	enum relay_timer timer;
};
extern const struct relay_conn_state relay_conn_states[];

struct relay_conn {
	struct relay_pool *pool;
	struct list_link link; /* on pool->conns until freed */
	struct conn *conn;
	struct relay_txn *txn; /* NULL while pooled */
	struct relay_conn *next_idle;
	enum relay_state state;
	/* Pipelined (RFC 2920): the commands written after the one whose reply
	   rc->state waits for, in order; their replies follow it. */
	enum relay_state pipe[2];
	unsigned npipe;
	struct smtp_reply_parser rp;
	struct smtp_caps caps;
	char *dest; /* the destination as written: part of the pool key */
	char *sni;  /* the relay's name: SNI and the name verified */
	bool lmtp;
	bool unix_socket;
	bool implicit_tls;
	/* Pool key, with dest: two transactions share a connection only when
	   all of these agree (different relay accounts never share one). */
	enum relay_tls_level tls_level;
	gnutls_certificate_credentials_t tls_creds;
	struct relay_cred *cred; /* NULL: no AUTH */
	bool allow_plaintext_auth;
	bool closed;
	bool reused;
	bool authenticated;
	bool auth_offered;   /* the last EHLO listed AUTH */
	char auth_mechs[96]; /* ...with these mechanisms (for logs) */
	char tls_trust[12];  /* "Verified", "Trusted", "Untrusted" */
	char tls_desc[160];
	unsigned uses;
	unsigned reuse_limit;
	uint64_t timeout_ms;
	/* the greeting's wait when another MX address is left (0: timeout_ms) */
	uint64_t greet_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t data_deadline; /* loop time relay_data_timeout ends DATA; 0: none */
	unsigned lmtp_expect;
	char helo_name[256];
	char peer[160];
	uv_getaddrinfo_t gai;
	bool gai_pending;
	struct dns_req *dns_req; /* MX lookup for an unbracketed destination */
	uint16_t port;
};

/* A transaction's references to its snapshot's table instances (from the
 * worker's lookup/table_registry.h); NULL: the map is not configured. */
struct relay_maps {
	struct table_inst *passwords;
	struct table_inst *routes;
	struct table_inst *transports;
};

struct relay_pool {
	uv_loop_t *loop;
	gnutls_certificate_credentials_t creds; /* system trust */
	gnutls_priority_t prio;
	struct relay_conn *idle;
	struct smtp_caps caps;
	bool caps_known;
	struct table_registry *tables; /* the worker's; not owned */
	struct relay_txn *probe;
	struct dns *dns; /* the worker's resolver (relay_pool_dns) */
	/* Every connection not yet freed, idle or not: one in RSET after its
	   transaction was freed still points here, so relay_pool_free() closes
	   them all and the pool itself goes with the last one. */
	struct list_link conns;
	bool dying;
};

/* Frees a dying pool once its last connection is gone. */
void relay_pool_conn_gone(struct relay_pool *p);

enum relay_txn_mode { TXN_NORMAL, TXN_PROBE, TXN_CHECK };

typedef void relay_route_lookup_done(struct relay_txn *t, enum table_status st, const char *value,
				     const char *key);

struct relay_txn {
	uint64_t end_ns;    /* uv_hrtime() at the final dot, until its reply (core/metrics.h) */
	char end_route[64]; /* its destination, the route label */
	struct relay_pool *pool;
	struct config *cfg;
	char *log_id;
	relay_txn_cb *cb;
	relay_drain_cb *drain_cb;
	void *ctx;
	enum relay_txn_mode mode;
	struct relay_conn *rc;
	size_t dest_idx;
	bool retried;            /* a reused connection failed: one fresh try */
	uint64_t attempts_until; /* no new connection attempt after this (loop time) */
	struct smtp_mail_args mail;
	bool mail_accepted;
	unsigned nrcpt_ok;
	/* Pipelining (docs/pipelining.md): MAIL goes out with the first RCPT,
	   DATA behind a RCPT when the client pipelined its own DATA. */
	bool mail_sent;                 /* MAIL is out on this connection */
	bool rcpt_pending;              /* rcpt waits for MAIL (sent with it, or after it) */
	bool mail_refused;              /* ...and the MAIL in its pipeline was refused: */
	struct smtp_reply mail_refusal; /* the recipient's verdict */
	bool data_next;                 /* the client's next command is DATA */
	bool data_sent;                 /* DATA went out before the client's DATA was handled */
	bool data_asked;                /* ...which the session has now asked for */
	bool has_data_reply;
	struct smtp_reply data_reply; /* its reply, until the session asks */
	struct smtp_rcpt_args rcpt;
	bool at_line_start;
	bool wrote_content;
	bool ends_crlf;
	bool blocked;
	/* the connection failed during content: the answer to the final dot */
	bool content_failed;
	struct smtp_reply content_fail;
	/* the route (docs/design.md §7): cfg->relay, or parsed from sender_relay_maps */
	const struct relay_dest *route;
	size_t nroute;
	struct relay_dest *own_route;
	size_t nown_route;
	struct relay_cred **creds; /* per destination of the route; NULL: none */
	/* An unbracketed destination's addresses (docs/dns.md), in the order
	   tried: resolved for route[mx_dest], tried from mx_idx on. */
	struct dns_target *mx;
	size_t nmx, mx_idx, mx_dest;
	/* transport_maps: the first recipient's next hop fixes the route; ""
	   is the sender's route (docs/routing.md) */
	char *route_rcpt;
	char route_hop[RELAY_HOP_MAX];
	size_t cred_idx;
	struct relay_maps maps;
	/* the table lookup in flight: keys tried in order, first hit wins */
	struct table_req *req;
	struct table_inst *lookup_ti;
	relay_route_lookup_done *lookup_done;
	char keys[RELAY_KEYS_MAX];
	const char *key;
	int keys_left;
	/* the first TLS or AUTH failure beats a later "unreachable" */
	struct smtp_reply policy_fail;
	bool has_policy_fail;
	char last_why[640];
	/* LMTP: one reply per accepted recipient after the dot (RFC 2033 §4.2) */
	unsigned lmtp_ok, lmtp_fail;
	struct smtp_reply lmtp_first_ok, lmtp_first_fail;
	struct smtp_reply deferred; /* a synthesised reply waiting for the timer */
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

/* ---- relay.c: answering the transaction's owner ---- */

void relay_reply_make(struct smtp_reply *r, int code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Passes r to the owner now: the last thing a handler does, the owner may
 * free t inside. */
void relay_txn_answer(struct relay_txn *t, const struct smtp_reply *r);
/* Passes r to the owner on the next loop iteration. */
void relay_txn_answer_later(struct relay_txn *t, const struct smtp_reply *r);
/* Route and credentials known: a pooled connection, else a new one. */
void relay_txn_connect(struct relay_txn *t);
/* The borrowed connection is ready: MAIL FROM with what it announced (with
 * pipelining: MAIL with the waiting RCPT, or a 250 until one comes). */
void relay_txn_send_mail(struct relay_txn *t);
/* The MAIL for a waiting RCPT was accepted without pipelining: the RCPT. */
/* t->rcpt goes downstream: pipelined behind MAIL, or alone (relay_route.c
 * calls it once the recipient's next hop is known). */
void relay_txn_rcpt_go(struct relay_txn *t);
void relay_txn_send_rcpt(struct relay_txn *t);
/* One LMTP reply after the dot (RFC 2033 §4.2). */
void relay_txn_lmtp_reply(struct relay_txn *t, const struct smtp_reply *r);
/* `submitd -t`: the destination passed (ok) or failed with r. */
void relay_check_finish(struct relay_txn *t, bool ok, const struct smtp_reply *r);

/* ---- relay_conn.c: one downstream connection ---- */

/* Opens a connection to t's current destination (t->route[t->dest_idx]). */
void relay_conn_start(struct relay_txn *t);
/* Closes it (QUIT first when quit and it is idle and healthy); it is freed
 * from its close callback. The transaction, if any, loses it. */
void relay_conn_close(struct relay_conn *rc, bool quit);
/* Sends one command line and enters next (its timer: relay_conn_states[]). */
void relay_conn_send(struct relay_conn *rc, enum relay_state next, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Writes the lines in b at once (RFC 2920) and waits for the replies of
 * states[0..n) in order. */
void relay_conn_send_batch(struct relay_conn *rc, const enum relay_state *states, unsigned n,
			   const struct buf *b);
/* Sends the fixed line relay_conn_states[next].line and enters next. */
void relay_conn_command(struct relay_conn *rc, enum relay_state next);
/* How long a wait of ms (0: unbounded) may last: never past the DATA
 * deadline (relay_data_timeout) while the message is under way. */
uint64_t relay_conn_wait_ms(const struct relay_conn *rc, uint64_t ms);

/* ---- relay_pool.c ---- */

/* Puts a connection whose transaction is done back in the pool, or closes
 * it (reuse limit, no idle timeout, closed). rc->txn becomes NULL. */
void relay_pool_park(struct relay_conn *rc);
/* Takes an idle connection t may use (see relay_pool_take's comment). */
struct relay_conn *relay_pool_take(struct relay_pool *p, struct relay_txn *t);
void relay_pool_remove(struct relay_pool *p, struct relay_conn *rc);
/* Forgets t's MX addresses (a new attempt resolves again, from the cache). */
void relay_txn_mx_clear(struct relay_txn *t);
/* The trust store for cfg: relay_tls_ca_file's, else the system's. */
gnutls_certificate_credentials_t relay_pool_tls_creds(struct relay_pool *p,
						      const struct config *cfg);

/* ---- relay_route.c ---- */

/* Route (sender_relay_maps, else relayhost), then credentials, then
 * relay_txn_connect(); a lookup failure answers the owner instead.
 * Everything completes later. */
void relay_route_begin(struct relay_txn *t);
/* Credentials for t->route[t->cred_idx..], then relay_txn_connect(). */
void relay_route_creds_next(struct relay_txn *t);
/* A recipient after the first: its transport_maps next hop must be the
 * route's, else 452 4.5.3; then relay_txn_send_rcpt(). */
void relay_route_rcpt(struct relay_txn *t, const struct smtp_rcpt_args *a);
/* Forgets the route and its credentials. */
void relay_route_clear(struct relay_txn *t);
struct relay_cred *relay_cred_dup(const struct relay_cred *c);
/* Same account (both NULL: both without AUTH). */
bool relay_cred_equal(const struct relay_cred *a, const struct relay_cred *b);

#endif
