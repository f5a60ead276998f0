/* policy/message: header checks and fix-ups on the held header section.
 * Contracts in message.h. */
#include "config.h"
#include "policy/message.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "policy/auth_header.h"
#include "policy/policy.h"
#include "smtp/addr.h"

/* ---- RFC 6409 §8 fix-ups and the Received: header (RFC 5321 §4.4) ---- */

void message_date(time_t t, char *out, size_t outsz)
{
	struct tm tm;
	localtime_r(&t, &tm);
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	snprintf(out, outsz, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday],
		 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 sign, off / 60, off % 60);
}

void message_received(const struct message_trace *t, const char *date, struct buf *out)
{
	char helo[128];
	log_sanitize(helo, sizeof(helo), t->helo, strlen(t->helo));
	/* RFC 3848 protocol names. */
	const char *proto = t->smtputf8 ? "UTF8SMTP" : t->esmtp ? "ESMTP" : "SMTP";
	bool v6 = strchr(t->ip, ':') != NULL;
	buf_printf(out, "Received: from %s ([%s%s])\r\n", helo, v6 ? "IPv6:" : "", t->ip);
	if (t->tls != NULL)
		buf_printf(out, "\t(using %s)\r\n", t->tls);
	if (t->user != NULL) {
		char u[128];
		log_sanitize(u, sizeof(u), t->user, strlen(t->user));
		buf_printf(out, "\t(Authenticated sender: %s)\r\n", u);
	}
	buf_printf(out, "\tby %s (submitd) with %s%s%s id %s", t->by, proto,
		   t->tls != NULL ? "S" : "", t->user != NULL ? "A" : "", t->id);
	/* "for" only with a single recipient: it would disclose Bcc's. */
	if (t->rcpt != NULL)
		buf_printf(out, "\r\n\tfor <%s>", t->rcpt);
	buf_printf(out, "; %s\r\n", date);
}

uint64_t message_added_max(const struct message_trace *t)
{
	struct message_trace any = *t;
	any.rcpt = NULL;
	struct buf b = BUF_INIT;
	message_received(&any, "", &b);
	uint64_t n = buf_len(&b);
	buf_free(&b);
	const size_t date = MESSAGE_DATE_MAX - 1;
	n += date + sizeof("\r\n\tfor <>") - 1 + SMTP_PATH_MAX;
	n += sizeof("Date: \r\n") - 1 + date;
	n += sizeof("Message-ID: <YYYYmmddHHMMSS.@>\r\n") - 1 + strlen(t->id) + strlen(t->by);
	n += auth_header_added(t->auth_header, t->user);
	return n + 4; /* CRLF closing an unterminated field, CRLF before a bare body */
}

static void message_header_fixed(const struct message_trace *t, time_t data_time, const uint8_t *h,
				 const struct header_info *hi, bool more_follows, struct buf *out)
{
	size_t hlen = hi->header_len;
	/* Where the header fields end: before the empty line if there is one. */
	size_t fields_end = hlen;
	bool has_empty = false;
	if (hlen >= 2 && h[hlen - 2] == '\r' && h[hlen - 1] == '\n' &&
	    (hlen == 2 || (hlen >= 4 && h[hlen - 4] == '\r' && h[hlen - 3] == '\n'))) {
		fields_end = hlen - 2;
		has_empty = true;
	}
	char date[MESSAGE_DATE_MAX];
	message_date(data_time, date, sizeof(date));
	message_received(t, date, out);
	buf_append(out, h, fields_end);
	if (fields_end > 0 && !(h[fields_end - 1] == '\n'))
		buf_append(out, "\r\n", 2); /* unterminated last field (BDAT) */
	if (!hi->has_date)
		buf_printf(out, "Date: %s\r\n", date);
	if (!hi->has_message_id) {
		struct tm tm;
		gmtime_r(&data_time, &tm);
		char stamp[32];
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		buf_printf(out, "Message-ID: <%s.%s@%s>\r\n", stamp, t->id, t->by);
	}
	/* A body that began without an empty line gets one, so it stays body. */
	if (has_empty || more_follows)
		buf_append(out, "\r\n", 2);
}

void message_header(const struct message_trace *t, time_t data_time, const uint8_t *h,
		    const struct header_info *hi, bool more_follows, struct buf *out)
{
	if (t->auth_header == NULL) {
		message_header_fixed(t, data_time, h, hi, more_follows, out);
		return;
	}
	struct buf fixed = BUF_INIT;
	message_header_fixed(t, data_time, h, hi, more_follows, &fixed);
	auth_header_write(t->auth_header, t->user, buf_data(&fixed), buf_len(&fixed), out);
	buf_free(&fixed);
}

/* ---- From:/Sender: must belong to the login too (header_from_policy) ---- */

/* An address for a reply or a log line: sanitised, and shortened (the
 * check itself always used the whole address). */
static void message_show(char *out, size_t outsz, const char *addr)
{
	size_t n = strlen(addr);
	log_sanitize(out, outsz, addr, n > 300 ? 300 : n);
	if (n > 300)
		snprintf(out + strlen(out), outsz - strlen(out), "...");
}

/* The replies' texts are bounded as the 600-octet lines they were first
 * written into ("550 5.7.1 " and the text). */
#define MESSAGE_TEXT_MAX (600 - sizeof("550 5.7.1 ") + 1)

static void message_check_refuse(struct message_check *mc, int code, const char *enh)
{
	mc->verdict.code = code;
	snprintf(mc->verdict.enh, sizeof(mc->verdict.enh), "%s", enh);
}

bool message_from_enforced(const struct config *cfg, const char *user)
{
	return cfg->header_from_mode == POLICY_HEADER_REJECT && cfg->sender_login != NULL &&
	       !policy_header_exempt(cfg, user);
}

void message_check_start(struct message_check *mc, const struct message_check_args *a,
			 const uint8_t *h, const struct header_info *hi)
{
	mc->ctx = a->ctx;
	mc->cfg = a->cfg;
	mc->user = a->user;
	mc->id = a->id;
	const char *user = a->user;
	if (a->cfg->header_from_mode == POLICY_HEADER_OFF || user == NULL || a->sl == NULL ||
	    policy_header_exempt(a->cfg, user))
		return;
	if (!sender_login_header_read(h, hi, &mc->hdr)) {
		char why[sizeof(mc->hdr.refusal)];
		log_sanitize(why, sizeof(why), mc->hdr.refusal, strlen(mc->hdr.refusal));
		if (a->cfg->header_from_mode == POLICY_HEADER_REJECT) {
			log_info("%s: header check for user %s: %s", a->id, user, why);
			mc->verdict = mc->hdr.reply;
			return;
		}
		log_warn("%s: header check for user %s: %s (header_from_policy = warn)", a->id,
			 user, why);
	}
	for (unsigned i = 0; i < mc->hdr.naddrs; i++) {
		mc->slot[i] = (struct message_check_slot){mc, i};
		mc->pending++;
		mc->req[i] =
			sender_login_check_policy(a->sl, SENDER_LOGIN_REJECT_AUTHENTICATED,
						  mc->hdr.addrs[i].addr, user, a->cb, &mc->slot[i]);
	}
}

void *message_check_ctx(void *slot)
{
	return ((struct message_check_slot *)slot)->mc->ctx;
}

bool message_check_answer(void *slot, enum sender_login_result res)
{
	struct message_check *mc = ((struct message_check_slot *)slot)->mc;
	unsigned i = ((struct message_check_slot *)slot)->idx;
	mc->req[i] = NULL;
	mc->pending--;
	const char *field = mc->hdr.addrs[i].field;
	char addr[400];
	message_show(addr, sizeof(addr), mc->hdr.addrs[i].addr);
	bool refused = res == SENDER_LOGIN_NOT_OWNED || res == SENDER_LOGIN_NOT_LOGGED_IN;
	if (res == SENDER_LOGIN_TEMPFAIL && mc->verdict.code == 0) {
		message_check_refuse(mc, 451, "4.3.0");
		snprintf(mc->verdict.text, MESSAGE_TEXT_MAX, "<%s>: Temporary lookup failure",
			 addr);
	} else if (refused) {
		if (mc->cfg->header_from_mode == POLICY_HEADER_WARN) {
			log_warn("%s: header %s <%s> not owned by user %s (header_from_policy = "
				 "warn)",
				 mc->id, field, addr, mc->user);
		} else if (mc->verdict.code == 0 || mc->verdict.code == 451) {
			message_check_refuse(mc, 550, "5.7.1");
			snprintf(mc->verdict.text, MESSAGE_TEXT_MAX,
				 "<%s>: %s header address rejected: not owned by user %s", addr,
				 field, mc->user);
		}
	}
	return mc->pending == 0;
}

bool message_check_pending(const struct message_check *mc)
{
	return mc->pending > 0;
}

const struct smtp_reply *message_check_verdict(const struct message_check *mc)
{
	return mc->verdict.code != 0 ? &mc->verdict : NULL;
}

void message_check_reset(struct message_check *mc)
{
	for (unsigned i = 0; i < SENDER_LOGIN_HDR_MAX; i++)
		sender_login_cancel(&mc->req[i]);
	sender_login_header_free(&mc->hdr);
	mc->pending = 0;
	mc->verdict = (struct smtp_reply){0};
}
