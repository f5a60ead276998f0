/* policy/sender_login: "may this SASL login use this sender address?" —
 * Postfix's smtpd_sender_login_maps and reject_*_sender_login_mismatch,
 * exactly (README "Sender ownership"; RFC 6409 §6.1).
 *
 * Lookup order for one address (Postfix mail_addr_find(), MA_FIND_DEFAULT;
 * the keys come from lookup/addrkey.h):
 *   1. the full address user+ext@domain — RFC 5321-quoted ("external") form
 *      first, then the unquoted ("internal") form if it differs;
 *   2. user@domain without the extension — only when `delimiters`
 *      (Postfix recipient_delimiter) is set and the localpart contains one of
 *      its characters: cut at the first one; never for postmaster,
 *      mailer-daemon, double-bounce, nor (when '-' is a delimiter) owner-*
 *      and *-request, nor when the cut would leave an empty localpart;
 *   3. (Postfix's bare "user" step applies to local domains only; an MSA has
 *      none, so it is skipped, as the reference allows);
 *   4. @domain.
 * For each key every table is tried in order before the next key: a full
 * address hit in the second table beats an @domain hit in the first. The
 * first table that answers wins; answers are never merged. A table error
 * (TEMPFAIL) ends the search: the verdict is TEMPFAIL (invariant 4).
 * Keys are lower-cased. The answer is a list of owners separated by commas
 * and/or whitespace, each compared with the login case-insensitively
 * (ASCII; Postfix folds UTF-8 too) and otherwise exactly.
 *
 * The null sender <> is never checked (NOT_CHECKED), as in Postfix and RFC
 * 6409 §3.2. Verdict per policy (login NULL = not authenticated):
 *
 *   policy (Postfix name)                         authenticated          not authenticated
 *   reject_authenticated_sender_login_mismatch    OWNED or NOT_OWNED     NOT_CHECKED
 *                                                 (unlisted: NOT_OWNED)
 *   reject_known_sender_login_mismatch            listed: OWNED or       listed: NOT_LOGGED_IN
 *                                                 NOT_OWNED; unlisted:   unlisted: NOT_CHECKED
 *                                                 NOT_CHECKED
 *   reject_unauthenticated_sender_login_mismatch  NOT_CHECKED            as above
 *   reject_sender_login_mismatch (default)        as "authenticated"     as "unauthenticated"
 *   none                                          NOT_CHECKED            NOT_CHECKED
 *
 * Where the reply goes: the server calls this at MAIL FROM and answers with
 * sender_login_reply() (Postfix gives the same text at RCPT because of
 * smtpd_delay_reject; RFC 5321 §4.3.2 allows 553 at MAIL).
 */
#ifndef SUBMITD_SENDER_LOGIN_H
#define SUBMITD_SENDER_LOGIN_H

#include <stddef.h>
#include <uv.h>

#include "lookup/table.h"
#include "smtp/header.h"
#include "smtp/reply.h"

enum sender_login_policy {
	SENDER_LOGIN_REJECT_MISMATCH = 0,    /* reject_sender_login_mismatch */
	SENDER_LOGIN_REJECT_AUTHENTICATED,   /* reject_authenticated_sender_login_mismatch */
	SENDER_LOGIN_REJECT_KNOWN,           /* reject_known_sender_login_mismatch */
	SENDER_LOGIN_REJECT_UNAUTHENTICATED, /* reject_unauthenticated_sender_login_mismatch */
	SENDER_LOGIN_NONE,                   /* none */
};

enum sender_login_result {
	SENDER_LOGIN_OWNED,     /* login is among the owners: accept */
	SENDER_LOGIN_NOT_OWNED, /* 553 5.7.1 <addr>: Sender address rejected: not owned by user LOGIN */
	SENDER_LOGIN_NOT_LOGGED_IN, /* 553 5.7.1 <addr>: Sender address rejected: not logged in */
	SENDER_LOGIN_TEMPFAIL,      /* 451 4.3.0 <addr>: Temporary lookup failure */
	SENDER_LOGIN_NOT_CHECKED,   /* the policy does not apply: accept */
};

/* Parses a policy name; returns 0 or -1. */
int sender_login_policy_parse(const char *name, enum sender_login_policy *policy_r);
const char *sender_login_policy_name(enum sender_login_policy policy);
const char *sender_login_result_name(enum sender_login_result result);

/* ---- configuration (immutable, shared by workers) ---- */

struct sender_login_settings {
	const char *maps;       /* "TABLE, TABLE ..." (comma/space separated); "" = no check */
	const char *policy;     /* NULL or "" = reject_sender_login_mismatch */
	const char *delimiters; /* recipient_delimiter; NULL = "+", "" = no extension stripping */
	struct table_cache_opts cache; /* applied to every table; zeros = no cache */
};

struct sender_login_conf;
/* Opens the tables. NULL + err ("file:line: ...") on error. */
struct sender_login_conf *sender_login_conf_new(const struct sender_login_settings *s, char *err,
						size_t errlen);
void sender_login_conf_free(struct sender_login_conf **confp);
enum sender_login_policy sender_login_conf_policy(const struct sender_login_conf *conf);

/* ---- per worker ---- */

struct sender_login;
struct sender_login_req;

/* owners: the raw table answer (for logging), NULL if none. Valid during
 * the callback only. */
typedef void sender_login_cb(void *ctx, enum sender_login_result result, const char *owners);

struct sender_login *sender_login_new(const struct sender_login_conf *conf, uv_loop_t *loop);
/* The same on a worker's shared table instances (lookup/table_registry.h)
 * for snapshot cfg, whose sender_login conf is. */
struct table_registry;
struct config;
struct sender_login *sender_login_new_shared(const struct sender_login_conf *conf,
					     struct table_registry *tables, struct config *cfg);
/* Cancels pending checks (no callbacks) and closes the table instances (or
 * gives them back to the registry); memory goes from close callbacks, so
 * run the loop once more. Sets *slp to NULL; NULL is ignored. */
void sender_login_free(struct sender_login **slp);

/* Checks the MAIL FROM address (as the client wrote it, without <>; "" for
 * the null sender) for login (NULL when not authenticated) with the
 * configured policy. The callback never fires before this returns. The
 * handle is valid until the callback starts or sender_login_cancel(). */
struct sender_login_req *sender_login_check(struct sender_login *sl, const char *sender,
					    const char *login, sender_login_cb *cb, void *ctx);
/* Same with an explicit policy: for the From:/Sender: header check, which
 * reuses the same tables (e.g. SENDER_LOGIN_REJECT_AUTHENTICATED for "the
 * header address must be owned too"). */
struct sender_login_req *sender_login_check_policy(struct sender_login *sl,
						   enum sender_login_policy policy,
						   const char *addr, const char *login,
						   sender_login_cb *cb, void *ctx);
/* The callback will not fire. Sets *reqp to NULL; NULL is ignored. */
void sender_login_cancel(struct sender_login_req **reqp);

/* Pure helpers (no I/O), exposed for the header check and tests. */

/* (The keys for one address are addrkey_keys(), lookup/addrkey.h.) */
/* 1 if login is one of the owners (comma/whitespace separated), else 0. */
int sender_login_owner_match(const char *owners, const char *login);

/* ---- the From:/Sender: header check (pure, no I/O) ----
 *
 * What the check enforces (RFC 5322 §3.6 and §3.6.2, RFC 6854):
 *   - a header section that readers read alike: no continuation line
 *     without a field before it, no "From " line, no empty field name
 *     (header_info.odd_line);
 *   - at most one From: and at most one Sender: field;
 *   - each of them is read whole (the header section is bounded by
 *     header_size_limit; nothing is cut) as an address list (smtp/addrlist.h);
 *     a field that cannot be read, or that holds no address, is refused;
 *   - every address of both fields, at full length, is then looked up with
 *     the MAIL FROM rules (sender_login_check_policy()).
 * A NUL anywhere in the message refuses it at its end whatever this says
 * (smtp/server.c), so no field is read short of a NUL. */

#define SENDER_LOGIN_HDR_MAX 8 /* distinct addresses looked up per message */

struct sender_login_hdr_addr {
	const char *field; /* "From:" or "Sender:" */
	char *addr;        /* the whole addr-spec */
};

struct sender_login_hdr {
	struct sender_login_hdr_addr *addrs; /* distinct (case-insensitively), in order */
	size_t naddrs;
	/* "" or the refusal (reply without CRLF, for logs), when the fields
	   cannot be checked; the addresses read before the problem are still
	   listed */
	char refusal[300];
	struct smtp_reply reply; /* the same refusal to send; code 0 with "" */
};

/* Reads the From: and Sender: fields that header_scan() found (hi) in the
 * header section h[0..hi->header_len). Returns true when every address can
 * be looked up: at most SENDER_LOGIN_HDR_MAX of them. */
bool sender_login_header_read(const uint8_t *h, const struct header_info *hi,
			      struct sender_login_hdr *r);
void sender_login_header_free(struct sender_login_hdr *r);

/* The SMTP reply for a verdict, Postfix's exact text (its line, code and
 * enhanced code included, at most 510 octets); addr and login are made
 * printable. Returns false for OWNED / NOT_CHECKED (no reply: go on). */
bool sender_login_reply(enum sender_login_result result, const char *addr, const char *login,
			struct smtp_reply *reply_r);

#endif
