/* smtp/addr: MAIL/RCPT argument parsing (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531;
 * RFC 1870; RFC 6152; RFC 3461; RFC 4954 §5).
 *
 * Pure codec. Results point into a caller-owned struct; nothing is allocated. */
#ifndef SUBMITD_SMTP_ADDR_H
#define SUBMITD_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LOCAL_MAX 64   /* §4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255 /* §4.5.3.1.2 */
#define SMTP_PATH_MAX 256   /* §4.5.3.1.3, incl. <> */

struct smtp_path {
	/* The mailbox, without <>, without the source route, unquoted form
	 * kept as the client wrote it (quotes included) so it can be forwarded
	 * unchanged. "" for the null path <>. NUL-terminated. */
	char addr[SMTP_PATH_MAX + 1];
	size_t local_len; /* bytes of addr before the '@' (0 for <>) */
	bool utf8;        /* contains bytes >= 0x80 (needs SMTPUTF8) */
};

enum smtp_addr_error {
	SMTP_ADDR_OK = 0,
	SMTP_ADDR_SYNTAX,     /* not <path> / bad mailbox syntax -> 501 5.1.7 / 5.1.3 */
	SMTP_ADDR_TOO_LONG,   /* a length limit of §4.5.3.1 -> 501 5.1.7/5.1.3 "Path too long" */
	SMTP_ADDR_NO_DOMAIN,  /* mailbox without @domain -> 501 (RFC 6409 §4.2 wants FQDN) */
	SMTP_ADDR_BAD_DOMAIN, /* invalid domain or address literal -> 501 */
	SMTP_ADDR_BAD_PARAM,  /* malformed esmtp-param -> 501 5.5.4 */
	SMTP_ADDR_UNKNOWN_PARAM, /* unknown or not-offered parameter -> 555 5.5.4 */
	SMTP_ADDR_DUP_PARAM,     /* the same parameter twice -> 501 5.5.4 */
};

/* Parameters of MAIL FROM (only those submitd offers). */
enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

struct smtp_mail_args {
	struct smtp_path path;
	bool has_size;
	uint64_t size; /* SIZE=n, decimal, <= 20 digits and no overflow */
	enum smtp_body body;
	bool smtputf8;     /* SMTPUTF8 (no value) */
	enum smtp_ret ret; /* RET=FULL|HDRS */
	char envid
		[101]; /* ENVID=xtext, <= 100 chars, "" if absent; xtext validated, kept encoded */
	char auth[SMTP_PATH_MAX * 3 +
		  3]; /* AUTH=xtext-mailbox or "<>", kept encoded; "" if absent */
};

struct smtp_rcpt_args {
	struct smtp_path path;
	char notify[64]; /* NOTIFY=NEVER or comma list of SUCCESS,FAILURE,DELAY
	                        (case-insensitive, NEVER alone); "" if absent */
	char orcpt[501]; /* ORCPT=addr-type;xtext, <= 500 chars; "" if absent */
};

/* Parses the arguments of MAIL (everything after the verb, e.g.
 * "FROM:<a@b.example> SIZE=100"). "FROM:" is case-insensitive and one optional
 * space after the colon is tolerated, as Postfix does. A source route is
 * accepted and dropped. The null path <> is valid for MAIL only.
 * *bad_param_r (may be NULL) receives the offending parameter's keyword on
 * PARAM errors, NUL-terminated and truncated to fit 32 bytes. */
enum smtp_addr_error smtp_mail_args_parse(const char *args, size_t len, struct smtp_mail_args *r,
					  char bad_param_r[32]);

/* Same for RCPT ("TO:<a@b.example> NOTIFY=SUCCESS"). <> is refused.
 * <postmaster> (case-insensitive, no domain) is accepted (RFC 5321 §4.1.1.3). */
enum smtp_addr_error smtp_rcpt_args_parse(const char *args, size_t len, struct smtp_rcpt_args *r,
					  char bad_param_r[32]);

/* Appends the parameters back in canonical form (" SIZE=n BODY=8BITMIME
 * SMTPUTF8 RET=FULL ENVID=x AUTH=x") to out, which has room for outsz bytes,
 * NUL-terminated; returns the length or -1 if it would not fit. Used by the
 * relay to forward what the client sent. */
int smtp_mail_args_format(const struct smtp_mail_args *a, char *out, size_t outsz);
int smtp_rcpt_args_format(const struct smtp_rcpt_args *a, char *out, size_t outsz);

#endif
