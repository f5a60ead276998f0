/* dovecot_auth: async client for Dovecot's auth client socket.
 *
 * Speaks the "auth-client" protocol v1.2 (docs/dovecot-auth.md) with
 * Dovecot 2.3 and 2.4: VERSION/CPID sent unprompted on connect, then
 * VERSION, MECH*, SPID, CUID, COOKIE, DONE from the server; AUTH/CONT/CANCEL
 * out, OK/CONT/FAIL(/CANCELLED) in. Many requests are multiplexed by id over
 * one connection.
 *
 * Threading: one client per worker loop. Nothing here is shared between
 * clients and nothing takes a lock; a client and its requests must only be
 * touched from the thread running its loop.
 *
 * Connection: lazy. dovecot_auth_client_connect() (or the first
 * dovecot_auth_begin()) starts it. After a connection that had completed its
 * handshake drops, the client reconnects at once; failed attempts (connect
 * error, bad handshake, handshake timeout) back off from 100 ms to 5 s and
 * keep retrying in the background. While an attempt is under way requests
 * queue (bounded by their timeout); while waiting out a backoff delay they
 * fail with TEMPFAIL at once (docs/design.md invariant 4: Dovecot down -> 454
 * promptly).
 *
 * Completions (docs/design.md invariant 9 and §9.8, §9.9):
 *  - A request started with dovecot_auth_begin() calls its callback exactly
 *    once per step: once after begin, and once after each
 *    dovecot_auth_continue(). The callback never fires inside begin, continue
 *    or abort; it fires from the loop, later (deferred with a zero timer).
 *  - OK, FAIL and TEMPFAIL are final: after that callback returns, the request
 *    is gone and the caller must drop its pointer (no abort needed).
 *  - CONTINUE hands back a challenge; the request stays alive and waits for
 *    the caller, without a timer (the caller's command timeout owns that wait).
 *    The caller must then call dovecot_auth_continue() or dovecot_auth_abort().
 *    If the connection dropped meanwhile, the continue completes with TEMPFAIL.
 *  - Every step that waits for Dovecot has the client's request timeout; on
 *    expiry the step completes with TEMPFAIL and CANCEL is sent to Dovecot.
 *  - When the connection drops or the handshake fails, every step in flight
 *    completes with TEMPFAIL.
 *  - dovecot_auth_abort() never calls back; a late reply from Dovecot for an
 *    aborted (or timed-out) request is ignored.
 *  - Inside a callback the caller may begin, continue or abort any request
 *    and may destroy the client.
 *
 * Input from Dovecot is hostile until parsed, and read as Dovecot's own
 * auth client reads it (docs/dovecot-auth.md): lines are bounded
 * (DOVECOT_AUTH_MAX_LINE) and every field is unescaped. Empty and unknown
 * fields and flags are ignored (Dovecot's SQL passdb sends empty ones). What
 * makes the stream unreadable (a line too long or holding a NUL, an unknown
 * command, a reply without a numeric id, a broken handshake) is logged and
 * drops the connection, which fails the steps in flight as TEMPFAIL. A reply
 * for an unknown id is logged and ignored. A reply that cannot be used for
 * its request (no usable user= on OK, two different user= values, a
 * challenge that is not base64, a broken escape, a second reply to one step)
 * fails that request alone with TEMPFAIL; the others go on.
 *
 * Output (docs/design.md invariant 8): every value is tab-escaped, mechanism names
 * must be announced by Dovecot, base64 is validated strictly before it is
 * forwarded, and every buffer that held an AUTH or CONT line is wiped after
 * use. Nothing here logs credentials or AUTH payloads.
 */
#ifndef SUBMITD_DOVECOT_AUTH_H
#define SUBMITD_DOVECOT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

/* Longest line accepted from Dovecot, LF included (Dovecot's own limit,
 * AUTH_CLIENT_MAX_LINE_LENGTH). */
#define DOVECOT_AUTH_MAX_LINE 16384
/* Longest base64 accepted for one SASL step, so the AUTH/CONT line always
 * fits the server's 16384-byte limit (RFC 4954 §4 suggests 12288; Postfix
 * smtpd_sasl_resp_limit). The SMTP side should refuse longer lines itself
 * with 500 5.5.6. */
#define DOVECOT_AUTH_MAX_RESP 12288

enum dovecot_auth_result {
	DOVECOT_AUTH_OK,       /* authenticated; user is set */
	DOVECOT_AUTH_CONTINUE, /* challenge_b64 is set (may be ""): send "334 <it>" */
	DOVECOT_AUTH_FAIL,     /* credentials refused (also OK+nologin/proxy): 535 */
	DOVECOT_AUTH_TEMPFAIL, /* Dovecot down, timeout, code=temp_fail: 454 4.7.0 */
};

struct dovecot_auth_client;
struct dovecot_auth_request;

/* Everything Dovecot should know about the SMTP session. Strings are copied
 * (and tab-escaped) by dovecot_auth_begin(); NULL means "not sent". */
struct dovecot_auth_request_info {
	const char *mech;       /* required; must be announced (see has_mech) */
	const char *service;    /* NULL: "smtp" */
	const char *session_id; /* session=, for correlating Dovecot's logs */
	const char *local_ip;   /* lip=, e.g. "192.0.2.1" or "2001:db8::1" */
	const char *remote_ip;  /* rip=; always give it (Dovecot's per-IP penalty) */
	const char *local_name; /* local_name=, the TLS SNI the client asked for */
	unsigned local_port;    /* lport=, 0: not sent */
	unsigned remote_port;   /* rport=, 0: not sent */
	/* Behind a PROXY-protocol proxy: the proxy's own address and port
	 * (real_rip=, real_rport=); NULL / 0 when the client came directly. */
	const char *real_remote_ip;
	unsigned real_remote_port;
	bool secured; /* "secured=tls": the connection is under TLS */
	/* The SMTP initial response: NULL when the client gave none, "" when it
	 * gave "=" (an empty response, RFC 4954 §4), else its base64 as typed. */
	const char *initial_resp_b64;
};

/* One step's result. Strings are valid only during the callback:
 *  user          OK: Dovecot's canonical user= (post auth_username_format);
 *                checked to be non-empty and free of control characters.
 *  challenge_b64 CONTINUE: the challenge, strict base64, possibly "".
 *  reason        FAIL/TEMPFAIL: Dovecot's reason= (meant for the client;
 *                control characters replaced by '?', at most 200 bytes), or a
 *                short English description of a local failure ("Connection
 *                lost to authentication server", "Authentication server timed
 *                out", ...), or NULL. */
typedef void dovecot_auth_cb(void *ctx, enum dovecot_auth_result result, const char *user,
			     const char *challenge_b64, const char *reason);

/* Creates a client for the auth socket at socket_path (a UNIX socket of
 * listener type "auth"), on loop. request_timeout_ms bounds every step that
 * waits for Dovecot, including connecting; it should be >= 30 s in production
 * (Dovecot delays failures by 2 s and penalises an IP by up to 15 s) and
 * shorter than the SMTP command timeout. Does not connect yet. */
struct dovecot_auth_client *dovecot_auth_client_create(uv_loop_t *loop, const char *socket_path,
						       unsigned request_timeout_ms);

/* Completes every live request with TEMPFAIL (synchronously, inside this call:
 * the only exception to "never inside the call"), closes the connection and
 * timers, and sets *c to NULL. Memory is released by the loop's close
 * callbacks: keep running the loop (uv_run) after this. Safe to call from a
 * callback. Requests begun from callbacks fired here are refused (NULL). */
void dovecot_auth_client_destroy(struct dovecot_auth_client **c);

/* Starts connecting if no connection or attempt exists and no backoff delay
 * is running. Workers call it at start so the mechanism list is there for
 * the first EHLO. */
void dovecot_auth_client_connect(struct dovecot_auth_client *c);

/* True while connected with the handshake done. */
bool dovecot_auth_client_ready(const struct dovecot_auth_client *c);

/* The mechanisms of the last completed handshake, space-separated, upper-case,
 * in Dovecot's order, without those flagged "private"; "" before the first
 * handshake. Kept while the connection is down: keep advertising them and
 * answer AUTH with 454 (reference §6). The SMTP server should offer only the
 * intersection with what it supports (PLAIN LOGIN). Valid until the next
 * handshake completes; copy it if you keep it. */
const char *dovecot_auth_client_mechs(const struct dovecot_auth_client *c);

/* Whether mech (case-insensitive) is in dovecot_auth_client_mechs(). */
bool dovecot_auth_client_has_mech(const struct dovecot_auth_client *c, const char *mech);

/* Starts an authentication; cb(ctx, ...) answers later (see the contract
 * above). Never returns NULL, except from callbacks fired by
 * dovecot_auth_client_destroy(). Problems found here answer through the
 * callback too: a mechanism Dovecot did not announce or malformed
 * initial_resp_b64 -> FAIL; Dovecot unreachable -> TEMPFAIL. */
struct dovecot_auth_request *dovecot_auth_begin(struct dovecot_auth_client *c,
						const struct dovecot_auth_request_info *info,
						dovecot_auth_cb *cb, void *ctx);

/* Answers a CONTINUE with the client's base64 line (possibly ""), and starts
 * the next step. Only valid after a CONTINUE callback, once. The SMTP "*"
 * cancel is not a response: call dovecot_auth_abort() and reply 501 yourself.
 * Malformed base64 -> FAIL (the server should have answered 501 5.5.2). */
void dovecot_auth_continue(struct dovecot_auth_request *req, const char *response_b64);

/* Cancels a live request (not needed after a final callback): no callback
 * will fire for it, CANCEL is sent to Dovecot if it knows the request, and
 * *req is set to NULL. NULL *req is a no-op. */
void dovecot_auth_abort(struct dovecot_auth_request **req);

/* Hands a request whose step is still with Dovecot to another owner: the
 * answer to that step (and every later callback) goes to cb(ctx) instead,
 * under the same contract (never inside this call, the step's timeout still
 * runs). For a session that ends while Dovecot is judging a password: the
 * attempt is still answered, so it can be counted and logged. */
void dovecot_auth_detach(struct dovecot_auth_request *req, dovecot_auth_cb *cb, void *ctx);

/* Test and fuzz hooks, not for production code: puts an unconnected client
 * into "handshake in progress" state without a socket (its writes are
 * discarded), then feeds it bytes as if they came from Dovecot. */
void dovecot_auth_client_fake_connect(struct dovecot_auth_client *c);
void dovecot_auth_client_feed(struct dovecot_auth_client *c, const void *data, size_t len);

#endif
