/* policy/restrictions: Postfix's smtpd restriction lists, for the
 * restrictions the guides use (docs/restrictions.md), with Postfix's names,
 * reply codes and reply texts, so fail2ban filters and habits carry over.
 *
 * sender_restrictions run at MAIL, recipient_restrictions at each RCPT
 * (Postfix runs both at RCPT: smtpd_delay_reject; the texts are the same).
 * A list is evaluated in order; the first restriction that permits or
 * rejects decides; the end of the list permits.
 *
 * Pure: no I/O. The *_sender_login_mismatch restrictions need the
 * (asynchronous) sender_login_maps lookup: evaluation stops and hands them
 * back (RESTRICTIONS_LOGIN); the caller runs the check and, when it passes,
 * resumes at *next_r. check_*_access tables are in memory (texthash:,
 * inline:), looked up synchronously; check_client_access looks up the
 * address only (no reverse DNS), check_helo_access the HELO name. */
#ifndef SUBMITD_POLICY_RESTRICTIONS_H
#define SUBMITD_POLICY_RESTRICTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "lookup/dns_cache.h"
#include "policy/sender_login.h"
#include "smtp/reply.h"

struct restrictions;

enum restrictions_stage { RESTRICTIONS_SENDER, RESTRICTIONS_RECIPIENT };

/* Parses a Postfix restriction list ("reject_non_fqdn_recipient,
 * permit_sasl_authenticated, reject"; commas and/or spaces). key names the
 * setting in errors. An empty text is an empty list. NULL on error, with
 * why in err. */
struct restrictions *restrictions_parse(const char *key, const char *text,
					enum restrictions_stage stage, char *err, size_t errlen);
void restrictions_free(struct restrictions **r);
/* Whether the list names a *_sender_login_mismatch restriction (it then
 * needs sender_login_maps). Such a check adds to sender_login_policy's,
 * which the session always runs first for a logged-in user: never instead
 * of it. */
bool restrictions_has_login_check(const struct restrictions *r);
size_t restrictions_count(const struct restrictions *r);

/* What the restrictions look at. */
struct restrictions_facts {
	const char *sender;      /* MAIL FROM address without <> ("" for <>) */
	const char *recipient;   /* RCPT TO address; NULL at MAIL */
	const char *login;       /* the SASL login, NULL when not logged in */
	bool mynetworks;         /* the client address is in mynetworks */
	bool trusted;            /* a trusted listener's mynetworks client */
	bool smtputf8;           /* the transaction declared SMTPUTF8 */
	const char *delimiters;  /* recipient_delimiter ("" for none) */
	const char *client_addr; /* the client's IP address (check_client_access) */
	const char *helo;        /* the HELO/EHLO name, NULL before one (check_helo_access) */
};

enum restrictions_verdict {
	RESTRICTIONS_PERMIT, /* permitted, or the end of the list */
	RESTRICTIONS_REJECT, /* *reply_r holds Postfix's reply */
	RESTRICTIONS_LOGIN,  /* run the ownership check with *policy_r; resume at *next_r */
	RESTRICTIONS_DNS,    /* reject_unknown_*_domain: look the domain up, resume at *next_r */
};

/* Evaluates r from item start (0 at first). */
enum restrictions_verdict restrictions_eval(const struct restrictions *r, size_t start,
					    const struct restrictions_facts *f,
					    struct smtp_reply *reply_r, size_t *next_r,
					    enum sender_login_policy *policy_r);

/* After RESTRICTIONS_DNS (next: *next_r): the address whose domain is
 * asked about, whether it is the recipient, and the domain (in addr). */
const char *restrictions_dns_address(const struct restrictions *r, size_t next,
				     const struct restrictions_facts *f, bool *recipient_r,
				     const char **domain_r);
/* Postfix's reply to reject_unknown_*_domain given the DNS answer
 * (lookup/dns.h dns_domain_check, its null_mx and malformed): false when
 * the domain passes. */
bool restrictions_unknown_domain_reply(const char *addr, const char *domain, bool recipient,
				       unsigned reject_code, enum dns_status st, bool null_mx,
				       bool malformed, struct smtp_reply *out);

/* Postfix's reject_non_fqdn_* test on one address: true when its domain is
 * a fully qualified host name (an address literal passes). */
bool restrictions_fqdn(const char *addr, bool smtputf8);

#endif
