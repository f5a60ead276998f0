/* policy/message: what submitd does to and asks of a message's header
 * section once it is held whole (docs/design.md §2, "header checks,
 * fix-ups"):
 *   - the trace and the RFC 6409 §8 fix-ups: a Received: field in front
 *     (RFC 5321 §4.4), Date: and Message-ID: at the end of the fields when
 *     the client left them out (RFC 6409 §8.2, §8.3);
 *   - the relay_auth_header field (policy/auth_header.h);
 *   - the From:/Sender: ownership check (header_from_policy, RFC 6409 §8.1),
 *     which looks every address up with the MAIL FROM rules and ends in a
 *     structured reply, or none.
 * No I/O of its own: the lookups go through policy/sender_login.h, and what
 * the session knows of the client comes in as plain values. */
#ifndef SUBMITD_POLICY_MESSAGE_H
#define SUBMITD_POLICY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "core/config.h"
#include "policy/sender_login.h"
#include "smtp/header.h"
#include "smtp/reply.h"

/* ---- the trace field and the fix-ups ---- */

/* What the Received: field says; every string is the caller's. */
struct message_trace {
	const char *helo; /* the EHLO/HELO argument, as sent (made printable here) */
	const char *ip;   /* the client's address, without brackets */
	const char *tls;  /* the TLS session (conn_tls_describe()), or NULL */
	const char *user; /* the login, or NULL */
	bool esmtp, smtputf8;
	const char *by;   /* myhostname */
	const char *id;   /* the session's queue id */
	const char *rcpt; /* the only recipient, or NULL (several: "for" would disclose Bcc's) */
	const char *auth_header; /* relay_auth_header, or NULL */
};

/* Dates as RFC 5322 §3.3 writes them, in local time with its offset. */
#define MESSAGE_DATE_MAX 64
void message_date(time_t t, char *out, size_t outsz);

/* Appends the Received: field (RFC 5321 §4.4, RFC 3848 protocol names),
 * ending in CRLF. */
void message_received(const struct message_trace *t, const char *date, struct buf *out);

/* What message_header() adds at most, for the SIZE= declared downstream
 * (RFC 1870 §6: the size that will be sent, not the client's). Known before
 * the header section is read and before the recipients are final, so the
 * date, "for <rcpt>", Date: and Message-ID: are counted at their longest:
 * an upper bound, never an underestimate. t->rcpt is not used. */
uint64_t message_added_max(const struct message_trace *t);

/* Writes the header section h[0..hi->header_len) as it goes downstream:
 * Received: first, the client's fields, a CRLF closing an unterminated last
 * field (BDAT), Date: and Message-ID: when hi says they are missing (dated
 * data_time, the time DATA was accepted), then the empty line — also when
 * body follows without one (more_follows), so that it stays body. With
 * t->auth_header, all of it goes through auth_header_write(): the field for
 * t->user first, and no field of that name from the client. */
void message_header(const struct message_trace *t, time_t data_time, const uint8_t *h,
		    const struct header_info *hi, bool more_follows, struct buf *out);

/* ---- the From:/Sender: ownership check ---- */

/* One check per message; all zeros is the idle state. Private but for the
 * caller's storage. */
struct message_check {
	struct sender_login_hdr hdr; /* the addresses, whole */
	struct sender_login_req *req[SENDER_LOGIN_HDR_MAX];
	struct message_check_slot {
		struct message_check *mc;
		unsigned idx;
	} slot[SENDER_LOGIN_HDR_MAX];
	unsigned pending;
	void *ctx;
	const struct config *cfg;
	const char *user, *id;
	struct smtp_reply verdict; /* code 0: none (yet) */
};

struct message_check_args {
	const struct config *cfg; /* header_from_policy, header_from_exempt_maps */
	struct sender_login *sl;  /* NULL: no sender_login_maps, nothing checked */
	const char *user;         /* NULL: not logged in, nothing checked */
	const char *id;           /* for log lines */
	/* Receives every lookup's answer (the caller's wrapper, e.g. to time
	   its own work), with ctx a slot to hand to message_check_answer(). */
	sender_login_cb *cb;
	void *ctx; /* what message_check_ctx() gives back */
};

/* Whether a message of user can only leave with a From: that user owns:
 * header_from_policy = reject, sender_login_maps set, user not exempt. What
 * may be signed with a domain's DKIM key (docs/dkim.md). */
bool message_from_enforced(const struct config *cfg, const char *user);

/* Starts the checks of the header section h that header_scan() read into
 * hi. a->user, a->id and a->cfg must outlive the check. Every address of
 * both fields is looked up whole; a field that cannot be read, holds no
 * address or comes twice refuses the message (550, sender_login.h) or, with
 * header_from_policy = warn, is logged. Nothing is checked with
 * header_from_policy = off, without a login or maps, or for an exempt login.
 * The verdict may be known at once (message_check_pending() is false). */
void message_check_start(struct message_check *mc, const struct message_check_args *a,
			 const uint8_t *h, const struct header_info *hi);

/* The args' ctx of the check that a slot (the cb's ctx) belongs to. */
void *message_check_ctx(void *slot);

/* Records one lookup's answer (call from the cb, with its ctx): a temporary
 * failure is 451 4.3.0 unless a refusal is known; an address the login does
 * not own is 550 5.7.1 (or a log line with header_from_policy = warn).
 * Returns true when it was the last one out. */
bool message_check_answer(void *slot, enum sender_login_result res);

bool message_check_pending(const struct message_check *mc);

/* The reply refusing the message, or NULL: it may go on. */
const struct smtp_reply *message_check_verdict(const struct message_check *mc);

/* Cancels the lookups still out (no more callbacks) and frees; back to idle. */
void message_check_reset(struct message_check *mc);

#endif
