/* relay: the downstream SMTP/LMTP client and its connection pool
 * (docs/design.md §7).
 *
 * One pool per worker loop. A transaction borrows a greeted connection (or
 * opens one, trying the destinations in order until one greets us), forwards
 * MAIL, each RCPT and DATA (pipelined when the downstream offers it:
 * docs/pipelining.md), and passes every downstream verdict
 * back through its callback, exactly once per call. Failures of the path
 * itself become the 4xx replies of docs/design.md §7; a downstream
 * 4xx/5xx is passed through. A transaction freed before its end is aborted
 * downstream without the final dot (docs/design.md invariant 2).
 *
 * Smarthost rules (docs/design.md §7):
 *   route        transport_maps by the first recipient (docs/routing.md),
 *                else sender_relay_maps (sender, user@domain, @domain; "<>"
 *                for the null sender; DUNNO = no answer), else relayhost; a
 *                route lists destinations tried in order until MAIL is
 *                accepted. A later recipient whose transport_maps next hop
 *                differs gets 452 4.5.3 (the client sends it in a new
 *                transaction); an error: entry refuses the recipient.
 *   TLS          relay_tls_security_level none | may | encrypt | verify |
 *                secure (Postfix's meaning); verify/secure check the chain
 *                against relay_tls_ca_file (else the system trust store) and
 *                the bracketed relay name, which is also sent as SNI (not
 *                for an address literal). Implicit TLS for :465 /
 *                :submissions and for "smtps:[host]:port". TLS required but
 *                not offered, refused or unverifiable: 451 4.7.5, never a
 *                plaintext retry.
 *   AUTH         relay_password_maps, keys in Postfix order (see
 *                relay_cred_keys); PLAIN, else LOGIN, from the EHLO after
 *                TLS; never without TLS unless relay_sasl_allow_plaintext.
 *                Refused, or impossible (no AUTH, no usable mechanism):
 *                451 4.7.0 — the relay's 535 never reaches the client.
 *   lookups      a table TEMPFAIL: 451 4.3.0; a bad route value: 451 4.3.5.
 *   unreachable  451 4.4.1 (a TLS/AUTH failure on an earlier destination
 *                wins over "unreachable" on a later one).
 *   pool         connections are shared only between transactions with the
 *                same destination, TLS level, trust store and credentials.
 * The log line of every failure names the relay and what it said. */
#ifndef SUBMITD_RELAY_H
#define SUBMITD_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "core/config.h"
#include "smtp/addr.h"
#include "smtp/reply.h"

struct relay_pool;
struct relay_txn;
struct table_registry;

/* Opens the tables of a snapshot (relay_password_maps, sender_relay_maps)
 * at load time, on the main thread, like policy_load(): a map that cannot
 * be opened refuses the configuration ("FILE:LINE: key: why"). Call it for
 * every snapshot, the listeners' too. */
bool relay_load(struct config *cfg, char *err, size_t errlen);

/* tables: the worker's table instances (lookup/table_registry.h), which
 * must outlive the pool. */
struct dns;
struct relay_pool *relay_pool_new(uv_loop_t *loop, struct table_registry *tables);
/* Closes every connection (idle ones with QUIT); transactions must be gone.
 * The pool's memory goes with its last connection's close, on the loop. */
void relay_pool_free(struct relay_pool **pool);
/* The worker's DNS resolver (lookup/dns.h), made on first use and freed
 * with the pool; also for the session's reject_unknown_*_domain. */
struct dns *relay_pool_dns(struct relay_pool *pool);
/* Opens one connection to cfg's route ahead of time, to learn the
 * downstream's capabilities and warm the pool. Called with the worker's
 * snapshot whenever it changes. */
void relay_pool_probe(struct relay_pool *pool, struct config *cfg);
/* The downstream's capabilities as last seen; false if never seen. */
bool relay_pool_caps(const struct relay_pool *pool, struct smtp_caps *caps_r);
/* Closes idle connections now (shutdown, reload). */
void relay_pool_flush(struct relay_pool *pool);

/* Called with the downstream's (or the synthesised) reply to each step. */
typedef void relay_txn_cb(void *ctx, const struct smtp_reply *reply);
/* Called when buffered content has drained below the high-water mark. */
typedef void relay_drain_cb(void *ctx);

struct relay_txn *relay_txn_new(struct relay_pool *pool, struct config *cfg, const char *log_id,
				relay_txn_cb *cb, relay_drain_cb *drain_cb, void *ctx);
/* The first recipient, which picks the route when transport_maps is set;
 * call it before relay_txn_mail() (the address is copied). */
void relay_txn_route_rcpt(struct relay_txn *t, const char *rcpt);
/* Each of these is answered through cb, never before it returns. */
void relay_txn_mail(struct relay_txn *t, const struct smtp_mail_args *a);
/* data_next: the client pipelined DATA right behind this RCPT, so DATA may
 * go downstream with it (docs/pipelining.md); relay_txn_data() still asks. */
void relay_txn_rcpt(struct relay_txn *t, const struct smtp_rcpt_args *a, bool data_next);
void relay_txn_data(struct relay_txn *t);
/* Content in canonical form; dot-stuffed on the way out. Returns true when
 * the caller should stop feeding until drain_cb (back-pressure). */
bool relay_txn_write(struct relay_txn *t, const uint8_t *p, size_t n);
void relay_txn_end(struct relay_txn *t);
/* Which destination and connection the transaction went through, for logs:
 * "127.0.0.1[127.0.0.1]:10025". */
const char *relay_txn_relay(const struct relay_txn *t);
/* Ends the transaction. If it did not finish, the downstream transaction is
 * aborted (RSET, or the connection closed during DATA). No callback after. */
void relay_txn_free(struct relay_txn **t);

/* `submitd -t`: connects to every relayhost destination with the TLS policy
 * and the relayhost credentials (no sender), authenticates if credentials
 * exist, says QUIT, and writes one line per destination to out. Runs its own
 * short-lived loop; call it from the main thread. Returns 0 when every
 * destination passed, 1 otherwise. */
int relay_check(struct config *cfg, FILE *out);

/* ---- pure helpers, exposed for tests (t/unit/test-relay-keys.c) ---- */

/* Keys for sender_relay_maps (Postfix sender_dependent_relayhost_maps via
 * mail_addr_find(): user+ext@domain, user@domain, @domain; the null sender
 * is "<>"), NUL-separated into keys. Returns how many, -1 if they do not fit. */
int relay_route_keys(const char *sender, const char *delimiters, char *keys, size_t keyssz);
/* Keys for relay_password_maps, in Postfix smtp_sasl_passwd_lookup() order:
 * the sender's keys (as relay_route_keys, never for the null sender) when
 * sender_dependent, then the relay host name, then the destination as
 * written without its transport prefix ("[mail.isp.example]:submission").
 * Returns how many, -1 if they do not fit. */
int relay_cred_keys(const struct relay_dest *d, const char *sender, bool sender_dependent,
		    const char *delimiters, char *keys, size_t keyssz);

/* Keys for transport_maps, in Postfix transport(5) order: the full address
 * user+ext@domain, user@domain without the extension (recipient_delimiter),
 * the domain, each parent domain as ".parent", then "*"; in Postfix's
 * internal (unquoted) form, lowercased. Returns how many, -1 if they do not
 * fit or the address cannot be keyed. */
int relay_transport_keys(const char *rcpt, const char *delimiters, char *keys, size_t keyssz);

/* A transport_maps value "transport:nexthop" (docs/routing.md). */
enum relay_transport {
	RELAY_TRANSPORT_DEFAULT,     /* smtp:, relay:, ":" — the sender's route */
	RELAY_TRANSPORT_DEST,        /* out: destinations in relayhost syntax */
	RELAY_TRANSPORT_ERROR,       /* error:[X.Y.Z ]text — out: the text */
	RELAY_TRANSPORT_RETRY,       /* retry:[X.Y.Z ]text — out: the text */
	RELAY_TRANSPORT_UNSUPPORTED, /* discard:, local:, ... — out: the name */
	RELAY_TRANSPORT_BAD,         /* unusable: control characters, too long */
};
enum relay_transport relay_transport_parse(const char *value, char *out, size_t outsz);

/* A relay_password_maps value "user:password", split at the first ':' (the
 * password may contain ':'; none at all: empty password, as Postfix).
 * Memory is wiped on free. */
struct relay_cred {
	const char *user;
	const char *pass;
	const char *key; /* the lookup key that found it, for logs */
	size_t size;
	char mem[];
};
struct relay_cred *relay_cred_parse(const char *value, const char *key);
void relay_cred_free(struct relay_cred **cp);

#endif
