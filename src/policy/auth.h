/* policy/auth: the SMTP AUTH exchange (RFC 4954) in front of Dovecot or
 * saslauthd (lookup/auth_backend.h: the same answers, replies and log lines
 * for both), and the brute-force rules.
 *
 * This is the one place that turns Dovecot's answers into SMTP replies
 * (docs/dovecot-auth.md). The server has already refused AUTH
 * outside TLS, after a successful AUTH and inside a transaction.
 *
 * Brute force, designed so an attacker cannot lock a real user out:
 *  - each failed attempt in a session is answered after a growing delay
 *    (auth_failure_delay, doubling, capped at auth_failure_delay_max);
 *  - after auth_max_failures failures the session is closed (421 4.7.0);
 *  - every client IP address has a failure budget (auth_ip_failure_limit
 *    within auth_ip_failure_window); when it is spent that address gets
 *    454 for auth_ip_block_time without Dovecot being asked. An attempt
 *    counts from the moment it is sent to Dovecot (net/addrcount.c), and
 *    every attempt that does not end in OK is a logged failure: cancelled,
 *    broken off, or abandoned by a client that hung up before the answer
 *    (the answer is still awaited, logged and counted). Clients in
 *    client_limit_exceptions have no budget.
 * Nothing is ever counted per user name, so failures from an attacker's
 * addresses never stop the real user logging in from theirs. */
#ifndef SUBMITD_POLICY_AUTH_H
#define SUBMITD_POLICY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/config.h"
#include "lookup/auth_backend.h"

struct policy_auth;

/* What Dovecot should know about the session (see dovecot_auth_request_info). */
struct policy_auth_session {
	const char *session_id;
	const char *remote_ip;
	unsigned remote_port;
	const char *local_ip;
	unsigned local_port;
	const char *local_name;     /* TLS SNI, may be "" */
	const char *real_remote_ip; /* the PROXY-protocol proxy, or NULL */
	unsigned real_remote_port;
	const struct sockaddr *peer; /* for the per-IP budget */
};

/* The longest user name an OK may carry; at least saslauthd's field
 * (SASLAUTHD_MAX_FIELD), so every login it accepts is kept whole. */
#define POLICY_AUTH_USER_MAX 512

struct policy_auth_result {
	int code; /* 235, 334, 454, 501, 504, 535, ... */
	const char *enh;
	const char *text; /* for 334: the challenge, base64 */
	const char *user; /* on 235: Dovecot's canonical user (at most
					POLICY_AUTH_USER_MAX bytes: a longer one is
					refused with 454, never cut) */
	bool close_after; /* too many failures: 421 and close after this reply */
};

typedef void policy_auth_cb(void *ctx, const struct policy_auth_result *r);

struct policy_auth *policy_auth_new(uv_loop_t *loop, struct auth_backend *client,
				    const struct config *cfg, policy_auth_cb *cb, void *ctx);
/* Aborts any exchange in flight; no callback afterwards. */
void policy_auth_free(struct policy_auth **pa);

/* The mechanisms to offer in EHLO: Dovecot's, limited to those that can be
 * relayed safely ("" when Dovecot was never reached). Written into out. */
void policy_auth_mechs(struct auth_backend *client, char *out, size_t outsz);

/* "AUTH <args>": answers through cb, never inside this call. */
void policy_auth_command(struct policy_auth *pa, const struct policy_auth_session *sess,
			 const char *args, size_t len);
/* The client's line after a 334. */
void policy_auth_response(struct policy_auth *pa, const char *line, size_t len);
/* The server ended the exchange itself: forget it, no callback. */
void policy_auth_cancel(struct policy_auth *pa);

#endif
