#include "config.h"
#include "smtp/server.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"

#define SMTP_SERVER_AUTH_LINE_MAX 12288
/* The AUTH command carries an initial response as long as a continuation
 * line (RFC 4954 §4): "AUTH " mechanism (at most 20, RFC 4422 §3.1) " ". */
#define SMTP_SERVER_AUTH_CMD_MAX (5 + 20 + 1 + SMTP_SERVER_AUTH_LINE_MAX)
/* Replies to a pipeline are handed to the transport in batches of this
 * size at most, so the transport can say when the client stops reading. */
#define SMTP_SERVER_OUT_BATCH 4096

enum smtp_server_state {
	SMTP_ST_COMMAND,
	SMTP_ST_WAIT, /* a backend call or the TLS handshake is pending */
	SMTP_ST_DATA, /* reading DATA content */
	SMTP_ST_BDAT, /* reading a BDAT chunk */
	SMTP_ST_AUTH, /* the next line is an AUTH response */
	SMTP_ST_CLOSED,
};

enum smtp_server_wait {
	SMTP_W_NONE,
	SMTP_W_MAIL,
	SMTP_W_RCPT,
	SMTP_W_DATA,
	SMTP_W_BDAT_OPEN,
	SMTP_W_DATA_END,
	SMTP_W_AUTH,
	SMTP_W_TLS,
};

struct smtp_server {
	struct smtp_server_settings set;
	const struct smtp_server_io *io;
	const struct smtp_server_backend *backend;
	void *ctx;
	struct buf *in;
	struct buf out;
	const char *log_id; /* the owner's, for logs */
	const char *client;

	enum smtp_server_state state;
	enum smtp_server_wait wait;
	bool in_run;
	bool shutting_down;
	bool tls;
	bool helo_done;
	bool esmtp;
	char *helo; /* NULL until HELO/EHLO */
	char *user;

	/* the transaction */
	bool mail_done;
	bool txn_smtputf8;
	/* for the reject log lines; NULL when none (an idle session keeps no
	   copies: docs/benchmarks.md) */
	char *mail_from;
	char *last_rcpt;
	unsigned nrcpt;
	unsigned overshoot; /* 452 4.5.3 replies in this transaction */
	bool content_open;  /* backend accepted DATA/first BDAT */
	bool bdat_used;
	bool bdat_failed;

	/* content */
	struct smtp_data_decoder dec;
	struct buf content;
	bool too_big;
	uint64_t bdat_remaining;
	bool bdat_last;
	bool bdat_discard;

	unsigned errors;
	unsigned counts[SMTP_VERB_COUNT];
	unsigned unknown;
	unsigned commands;
	struct smtp_line_reader lr;
};

/* ---- replies ---- */

static void smtp_server_flush(struct smtp_server *s)
{
	if (buf_len(&s->out) == 0 || s->state == SMTP_ST_CLOSED)
		return;
	s->io->write(s->ctx, buf_data(&s->out), buf_len(&s->out));
	buf_free(&s->out); /* replies are small; an idle session keeps no buffer */
}

static void smtp_server_close(struct smtp_server *s);
static void smtp_server_bdat_skip(struct smtp_server *s, const char *line, size_t len);
static bool smtp_server_bdat_args(const char *p, size_t n, uint64_t *size_r, bool *last_r);

/* Writes one reply; text may hold several lines separated by '\n'. Every
 * reply but the greeting carries an enhanced status code (RFC 2034 §4). */
static void smtp_server_write_reply(struct smtp_server *s, int code, const char *enh,
				    const char *text)
{
	char enhbuf[16];
	if (enh == NULL || enh[0] == '\0') {
		snprintf(enhbuf, sizeof(enhbuf), "%d.0.0", code / 100);
		enh = enhbuf;
	}
	const char *p = text;
	for (;;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		/* Reply lines stay within 512 octets (RFC 5321 §4.5.3.1.5). */
		if (len > 480)
			len = 480;
		buf_printf(&s->out, "%d%c%s %.*s\r\n", code, nl ? '-' : ' ', enh, (int)len, p);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
}

static void smtp_server_reply(struct smtp_server *s, int code, const char *enh, const char *fmt,
			      ...) __attribute__((format(printf, 4, 5)));
static void smtp_server_reply(struct smtp_server *s, int code, const char *enh, const char *fmt,
			      ...)
{
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	smtp_server_write_reply(s, code, enh, text);
	/* "Too many recipients" asks for the rest in a new transaction (RFC 5321
	   §4.5.3.1.10, docs/routing.md): no error until a transaction had
	   recipient_limit of them (Postfix's smtpd_recipient_overshoot_limit). */
	bool overshoot = code == 452 && enh != NULL && strcmp(enh, "4.5.3") == 0 &&
			 s->overshoot++ < s->set.recipient_limit;
	if (code >= 400 && code != 421 && !overshoot && ++s->errors >= s->set.error_limit) {
		log_info("%s: too many errors after %u commands from %s", s->log_id, s->commands,
			 s->client);
		smtp_server_write_reply(s, 421, "4.7.0", "Error: too many errors");
		smtp_server_close(s);
	}
}

/* Replaces *p with a copy of n bytes of v (NULL: none). */
static void smtp_server_set_str(char **p, const char *v, size_t n)
{
	free(*p);
	*p = v != NULL ? xstrndup(v, n) : NULL;
}

/* Logs a refusal the way Postfix does, so existing greps keep working. */
static void smtp_server_log_reject(struct smtp_server *s, const char *verb, int code,
				   const char *enh, const char *text)
{
	char helo[80];
	const char *h = smtp_server_helo(s), *to = s->last_rcpt ? s->last_rcpt : "";
	log_sanitize(helo, sizeof(helo), h, strlen(h));
	log_info("%s: reject: %s from %s: %d %s %s; from=<%s>%s%s%s proto=%s helo=<%s>", s->log_id,
		 verb, s->client, code, enh && *enh ? enh : "", text,
		 s->mail_from ? s->mail_from : "", to[0] ? " to=<" : "", to, to[0] ? ">" : "",
		 s->esmtp ? "ESMTP" : "SMTP", helo);
}

/* ---- transaction state ---- */

static void smtp_server_txn_clear(struct smtp_server *s)
{
	s->mail_done = false;
	s->txn_smtputf8 = false;
	smtp_server_set_str(&s->mail_from, NULL, 0);
	smtp_server_set_str(&s->last_rcpt, NULL, 0);
	s->nrcpt = 0;
	s->overshoot = 0;
	s->content_open = false;
	s->bdat_used = false;
	s->bdat_failed = false;
	s->too_big = false;
	buf_reset(&s->content);
}

/* Aborts the transaction, telling the backend so the downstream never sees
 * a final dot for it (docs/design.md invariant 2). */
static void smtp_server_txn_abort(struct smtp_server *s)
{
	if (s->mail_done || s->content_open)
		s->backend->reset(s->ctx);
	smtp_server_txn_clear(s);
}

static void smtp_server_close(struct smtp_server *s)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	smtp_server_txn_abort(s);
	smtp_server_flush(s);
	s->state = SMTP_ST_CLOSED;
	s->wait = SMTP_W_NONE;
	s->io->close(s->ctx);
}

/* ---- commands ---- */

enum {
	CMD_PRE_TLS = 1 << 0, /* allowed before STARTTLS on a starttls listener */
	CMD_NEED_HELO = 1 << 1,
	CMD_NEED_AUTH = 1 << 2, /* authenticated, or a trusted relay client */
	CMD_NO_ARGS = 1 << 3,
	CMD_NEED_MAIL = 1 << 4,
};

struct smtp_server_cmd_def {
	void (*handler)(struct smtp_server *s, const struct smtp_cmd *cmd);
	unsigned flags;
	const char *syntax; /* for 501 replies */
};

/* What this listener offers in this state; EHLO and HELP both say it. */
static bool smtp_server_starttls_offered(const struct smtp_server *s)
{
	return s->set.starttls_offered && !s->tls;
}

/* The mechanisms to advertise, or NULL: AUTH only inside TLS (docs/design.md
 * invariant 3, RFC 4954 §4) and not once authenticated. */
static const char *smtp_server_auth_offered(struct smtp_server *s)
{
	if (!s->tls || s->user != NULL || s->backend->auth == NULL ||
	    s->backend->auth_mechs == NULL)
		return NULL;
	const char *mechs = s->backend->auth_mechs(s->ctx);
	return mechs != NULL && mechs[0] != '\0' ? mechs : NULL;
}

static void smtp_server_send_ehlo(struct smtp_server *s)
{
	buf_printf(&s->out, "250-%s\r\n", s->set.hostname);
	buf_append_str(&s->out, "250-PIPELINING\r\n");
	buf_printf(&s->out, "250-SIZE %llu\r\n", (unsigned long long)s->set.size_limit);
	if (smtp_server_starttls_offered(s))
		buf_append_str(&s->out, "250-STARTTLS\r\n");
	const char *mechs = smtp_server_auth_offered(s);
	if (mechs != NULL)
		buf_printf(&s->out, "250-AUTH %s\r\n", mechs);
	buf_append_str(&s->out, "250-ENHANCEDSTATUSCODES\r\n");
	if (s->set.eightbitmime)
		buf_append_str(&s->out, "250-8BITMIME\r\n");
	if (s->set.dsn)
		buf_append_str(&s->out, "250-DSN\r\n");
	/* SMTPUTF8 requires 8BITMIME (RFC 6531 §3.1). */
	if (s->set.smtputf8 && s->set.eightbitmime)
		buf_append_str(&s->out, "250-SMTPUTF8\r\n");
	buf_append_str(&s->out, "250 CHUNKING\r\n");
}

static void smtp_server_cmd_helo(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	bool ehlo = cmd->verb == SMTP_VERB_EHLO;
	if (cmd->args_len == 0) {
		smtp_server_reply(s, 501, "5.5.4", "Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		return;
	}
	/* A new EHLO is an implicit RSET (RFC 5321 §4.1.4). */
	smtp_server_txn_abort(s);
	/* kept whole up to SMTP_SERVER_HELO_MAX: a longer name is cut there, and a
	   check that needs it whole refuses it (policy/restrictions.c) */
	smtp_server_set_str(&s->helo, cmd->args,
			    cmd->args_len < SMTP_SERVER_HELO_MAX ? cmd->args_len
								 : SMTP_SERVER_HELO_MAX);
	s->helo_done = true;
	s->esmtp = ehlo;
	if (ehlo)
		smtp_server_send_ehlo(s);
	else
		buf_printf(&s->out, "250 %s\r\n", s->set.hostname);
}

static void smtp_server_cmd_starttls(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	if (s->tls) {
		smtp_server_reply(s, 554, "5.5.1", "Error: TLS already active");
		return;
	}
	if (!s->set.starttls_offered) {
		smtp_server_reply(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (cmd->args_len != 0) {
		smtp_server_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	smtp_server_txn_abort(s);
	smtp_server_reply(s, 220, "2.0.0", "Ready to start TLS");
	smtp_server_flush(s);
	/* The checkpoint (CVE-2011-0411, docs/design.md invariant 6): whatever the
	   client pipelined after STARTTLS is dropped unread, and everything
	   learned before TLS is forgotten (RFC 3207 §4.2). */
	buf_reset(s->in);
	s->helo_done = false;
	s->esmtp = false;
	smtp_server_set_str(&s->helo, NULL, 0);
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_TLS;
	s->io->starttls(s->ctx);
}

static bool smtp_server_param_offered(struct smtp_server *s, const struct smtp_mail_args *a,
				      const char **what_r)
{
	if (a->body == SMTP_BODY_8BITMIME && !s->set.eightbitmime)
		*what_r = "BODY";
	else if (a->smtputf8 && !(s->set.smtputf8 && s->set.eightbitmime))
		*what_r = "SMTPUTF8";
	else if ((a->ret != SMTP_RET_NONE || a->envid[0]) && !s->set.dsn)
		*what_r = a->ret != SMTP_RET_NONE ? "RET" : "ENVID";
	else
		return true;
	return false;
}

static void smtp_server_addr_error(struct smtp_server *s, const char *verb, enum smtp_addr_error e,
				   const char *bad_param, bool sender)
{
	int code = 501;
	const char *enh = sender ? "5.1.7" : "5.1.3";
	char text[256];
	/* The keyword is client text: it goes into a reply and a log line. */
	char safe[40];
	bad_param = log_sanitize(safe, sizeof(safe), bad_param, strlen(bad_param));
	switch (e) {
	case SMTP_ADDR_TOO_LONG:
		snprintf(text, sizeof(text), "Error: path too long");
		break;
	case SMTP_ADDR_NO_DOMAIN:
	case SMTP_ADDR_BAD_DOMAIN:
		snprintf(text, sizeof(text), "Error: %s address must be a fully qualified address",
			 sender ? "sender" : "recipient");
		break;
	case SMTP_ADDR_BAD_PARAM:
		enh = "5.5.4";
		snprintf(text, sizeof(text), "Error: bad %s parameter syntax", bad_param);
		break;
	case SMTP_ADDR_DUP_PARAM:
		enh = "5.5.4";
		snprintf(text, sizeof(text), "Error: multiple %s parameters", bad_param);
		break;
	case SMTP_ADDR_UNKNOWN_PARAM:
		code = 555;
		enh = "5.5.4";
		snprintf(text, sizeof(text), "Unsupported option: %s", bad_param);
		break;
	default:
		snprintf(text, sizeof(text), "Bad %s address syntax",
			 sender ? "sender" : "recipient");
		break;
	}
	smtp_server_log_reject(s, verb, code, enh, text);
	smtp_server_reply(s, code, enh, "%s", text);
}

static void smtp_server_cmd_mail(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	if (s->mail_done) {
		smtp_server_reply(s, 503, "5.5.1", "Error: nested MAIL command");
		return;
	}
	struct smtp_mail_args a;
	char bad[32] = "";
	enum smtp_addr_error e = smtp_mail_args_parse(cmd->args, cmd->args_len, &a, bad);
	if (e != SMTP_ADDR_OK) {
		smtp_server_addr_error(s, "MAIL", e, bad, true);
		return;
	}
	const char *what;
	if (!smtp_server_param_offered(s, &a, &what)) {
		smtp_server_reply(s, 555, "5.5.4", "Unsupported option: %s", what);
		return;
	}
	smtp_server_set_str(&s->mail_from, a.path.addr, strlen(a.path.addr));
	if (a.path.utf8 && !a.smtputf8) {
		smtp_server_log_reject(s, "MAIL", 550, "5.6.7",
				       "Must declare SMTPUTF8 to send unicode address");
		smtp_server_reply(s, 550, "5.6.7", "Must declare SMTPUTF8 to send unicode address");
		smtp_server_set_str(&s->mail_from, NULL, 0);
		return;
	}
	if (a.has_size && a.size > s->set.size_limit) {
		smtp_server_log_reject(s, "MAIL", 552, "5.3.4", "Message size exceeds fixed limit");
		metrics_inc(METRICS_MSG_SIZE);
		smtp_server_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
		smtp_server_set_str(&s->mail_from, NULL, 0);
		return;
	}
	s->txn_smtputf8 = a.smtputf8;
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_MAIL;
	s->backend->mail(s->ctx, &a);
}

static void smtp_server_cmd_rcpt(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	if (s->bdat_used) {
		smtp_server_reply(s, 503, "5.5.1", "Error: RCPT after BDAT");
		return;
	}
	struct smtp_rcpt_args a;
	char bad[32] = "";
	enum smtp_addr_error e = smtp_rcpt_args_parse(cmd->args, cmd->args_len, &a, bad);
	if (e != SMTP_ADDR_OK) {
		smtp_server_addr_error(s, "RCPT", e, bad, false);
		return;
	}
	if ((a.notify[0] || a.orcpt[0]) && !s->set.dsn) {
		smtp_server_reply(s, 555, "5.5.4", "Unsupported option: %s",
				  a.notify[0] ? "NOTIFY" : "ORCPT");
		return;
	}
	smtp_server_set_str(&s->last_rcpt, a.path.addr, strlen(a.path.addr));
	if (a.path.utf8 && !s->txn_smtputf8) {
		smtp_server_log_reject(s, "RCPT", 553, "5.6.7",
				       "Must declare SMTPUTF8 to send unicode address");
		smtp_server_reply(s, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address");
		return;
	}
	if (s->nrcpt >= s->set.recipient_limit) {
		smtp_server_reply(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_RCPT;
	s->backend->rcpt(s->ctx, &a);
}

static bool smtp_server_need_rcpt(struct smtp_server *s)
{
	if (s->nrcpt == 0) {
		/* Postfix's wording, which clients and admins know. */
		if (s->mail_done)
			smtp_server_reply(s, 554, "5.5.1", "Error: no valid recipients");
		else
			smtp_server_reply(s, 503, "5.5.1", "Error: need RCPT command");
		return false;
	}
	return true;
}

static void smtp_server_cmd_data(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	if (s->bdat_used) {
		smtp_server_reply(s, 503, "5.5.1", "Error: DATA after BDAT");
		return;
	}
	if (!smtp_server_need_rcpt(s))
		return;
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_DATA;
	s->backend->data(s->ctx);
}

static void smtp_server_content_begin(struct smtp_server *s, bool bdat)
{
	s->content_open = true;
	s->too_big = false;
	smtp_data_decoder_init(&s->dec, s->set.newline_mode, bdat);
	buf_reset(&s->content);
}

/* Parses "count [LAST]" (RFC 3030 §2). */
static bool smtp_server_bdat_args(const char *p, size_t n, uint64_t *size_r, bool *last_r)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < n && isdigit((unsigned char)p[i])) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(p[i] - '0');
		i++;
	}
	if (i == 0 || i > 20)
		return false;
	*size_r = v;
	*last_r = false;
	if (i == n)
		return true;
	if (p[i] != ' ')
		return false;
	while (i < n && p[i] == ' ')
		i++;
	if (n - i == 4 && strncasecmp(p + i, "LAST", 4) == 0) {
		*last_r = true;
		return true;
	}
	return false;
}

static void smtp_server_cmd_bdat(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	uint64_t size;
	bool last;
	if (!smtp_server_bdat_args(cmd->args, cmd->args_len, &size, &last)) {
		/* The chunk's length is unknown, so the stream cannot be
		   resynchronised: reply and close (521 is not allowed on
		   submission, RFC 6409 §7). */
		smtp_server_write_reply(s, 501, "5.5.4", "Syntax: BDAT count [LAST]");
		smtp_server_write_reply(s, 421, "4.5.0", "Error: closing, cannot resynchronise");
		smtp_server_close(s);
		return;
	}
	s->bdat_remaining = size;
	s->bdat_last = last;
	s->bdat_discard = false;
	s->state = SMTP_ST_BDAT;
	/* The chunk is read (and dropped) even when the command is refused
	   (RFC 3030 §2). */
	if (!s->mail_done || s->nrcpt == 0 || s->bdat_failed) {
		s->bdat_discard = true;
		if (s->bdat_failed)
			smtp_server_reply(s, 503, "5.5.1", "Error: transaction failed, send RSET");
		else
			smtp_server_need_rcpt(s);
		return;
	}
	s->bdat_used = true;
	if (s->content_open)
		return;
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_BDAT_OPEN;
	s->backend->data(s->ctx);
}

static void smtp_server_cmd_rset(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	smtp_server_txn_abort(s);
	smtp_server_reply(s, 250, "2.0.0", "Ok");
}

static void smtp_server_cmd_noop(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, 250, "2.0.0", "Ok");
}

static void smtp_server_cmd_quit(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, 221, "2.0.0", "Bye");
	smtp_server_close(s);
}

static void smtp_server_cmd_help(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, 214, "2.0.0",
			  "Commands: EHLO HELO%s%s MAIL RCPT DATA BDAT RSET NOOP QUIT HELP%s",
			  smtp_server_starttls_offered(s) ? " STARTTLS" : "",
			  smtp_server_auth_offered(s) != NULL ? " AUTH" : "",
			  s->set.vrfy_disabled ? "" : " VRFY");
}

static void smtp_server_cmd_vrfy(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	/* Answers without looking anything up: VRFY must not tell a
	   harvester which addresses exist (RFC 5321 §3.5.3, §7.3). */
	if (s->set.vrfy_disabled) {
		smtp_server_reply(s, 502, "5.5.1", "VRFY command is disabled");
		return;
	}
	if (cmd->args_len == 0) {
		smtp_server_reply(s, 501, "5.5.4", "Syntax: VRFY address");
		return;
	}
	smtp_server_reply(s, 252, "2.0.0",
			  "Cannot VRFY user, but will accept message and attempt delivery");
}

static void smtp_server_cmd_disabled(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, 502, "5.5.1", "Error: command not implemented");
}

static void smtp_server_cmd_auth(struct smtp_server *s, const struct smtp_cmd *cmd)
{
	if (s->backend->auth == NULL) {
		smtp_server_reply(s, 503, "5.5.1", "Error: authentication not enabled");
		return;
	}
	if (!s->tls) {
		/* Never accepted outside TLS (docs/design.md invariant 3, RFC 4954 §6). */
		smtp_server_reply(s, 538, "5.7.11",
				  "Encryption required for requested authentication mechanism");
		return;
	}
	if (s->user != NULL) {
		smtp_server_reply(s, 503, "5.5.1", "Error: already authenticated");
		return;
	}
	if (s->mail_done) {
		smtp_server_reply(s, 503, "5.5.1", "Error: MAIL transaction in progress");
		return;
	}
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_AUTH;
	s->backend->auth(s->ctx, cmd->args, cmd->args_len);
}

static const struct smtp_server_cmd_def smtp_server_cmds[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = {smtp_server_cmd_helo, CMD_PRE_TLS, NULL},
	[SMTP_VERB_EHLO] = {smtp_server_cmd_helo, CMD_PRE_TLS, NULL},
	[SMTP_VERB_STARTTLS] = {smtp_server_cmd_starttls, CMD_PRE_TLS | CMD_NEED_HELO, NULL},
	[SMTP_VERB_AUTH] = {smtp_server_cmd_auth, CMD_NEED_HELO, NULL},
	[SMTP_VERB_MAIL] = {smtp_server_cmd_mail, CMD_NEED_HELO | CMD_NEED_AUTH, NULL},
	[SMTP_VERB_RCPT] = {smtp_server_cmd_rcpt, CMD_NEED_MAIL, NULL},
	[SMTP_VERB_DATA] = {smtp_server_cmd_data, CMD_NEED_MAIL | CMD_NO_ARGS, "DATA"},
	[SMTP_VERB_BDAT] = {smtp_server_cmd_bdat, 0, NULL},
	[SMTP_VERB_RSET] = {smtp_server_cmd_rset, CMD_PRE_TLS | CMD_NO_ARGS, "RSET"},
	[SMTP_VERB_NOOP] = {smtp_server_cmd_noop, CMD_PRE_TLS, NULL},
	[SMTP_VERB_QUIT] = {smtp_server_cmd_quit, CMD_PRE_TLS | CMD_NO_ARGS, "QUIT"},
	[SMTP_VERB_HELP] = {smtp_server_cmd_help, CMD_PRE_TLS, NULL},
	[SMTP_VERB_VRFY] = {smtp_server_cmd_vrfy, 0, NULL},
	[SMTP_VERB_EXPN] = {smtp_server_cmd_disabled, 0, NULL},
	/* ETRN MUST NOT be offered on submission (RFC 6409 §7). */
	[SMTP_VERB_ETRN] = {smtp_server_cmd_disabled, 0, NULL},
};

/* The gate: one place decides whether a command may run now. */
static bool smtp_server_gate(struct smtp_server *s, const struct smtp_cmd *cmd,
			     const struct smtp_server_cmd_def *def)
{
	if (s->set.starttls_offered && !s->tls && !(def->flags & CMD_PRE_TLS)) {
		smtp_server_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		return false;
	}
	if ((def->flags & CMD_NO_ARGS) && cmd->args_len != 0) {
		smtp_server_reply(s, 501, "5.5.4", "Syntax: %s", def->syntax);
		return false;
	}
	if ((def->flags & CMD_NEED_HELO) && !s->helo_done) {
		smtp_server_reply(s, 503, "5.5.1", "Error: send HELO/EHLO first");
		return false;
	}
	if ((def->flags & CMD_NEED_AUTH) && s->user == NULL && !s->set.relay_trusted) {
		/* Never an open relay (docs/design.md invariant 10, RFC 6409 §4.3). */
		struct smtp_mail_args a;
		char bad[32];
		char from[SMTP_PATH_MAX + 1];
		if (smtp_mail_args_parse(cmd->args, cmd->args_len, &a, bad) == SMTP_ADDR_OK) {
			log_sanitize(from, sizeof(from), a.path.addr, strlen(a.path.addr));
			smtp_server_set_str(&s->mail_from, from, strlen(from));
		}
		smtp_server_log_reject(s, "MAIL", 530, "5.7.0", "Authentication required");
		smtp_server_set_str(&s->mail_from, NULL, 0);
		smtp_server_reply(s, 530, "5.7.0", "Authentication required");
		return false;
	}
	if ((def->flags & CMD_NEED_MAIL) && !s->mail_done) {
		smtp_server_reply(s, 503, "5.5.1", "Error: need MAIL command");
		return false;
	}
	return true;
}

static void smtp_server_command(struct smtp_server *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;
	s->commands++;
	if (memchr(line, '\0', len) != NULL) {
		s->unknown++;
		smtp_server_reply(s, 500, "5.5.2", "Error: NUL character in command");
		return;
	}
	smtp_cmd_parse(line, len, &cmd);
	const struct smtp_server_cmd_def *def =
		cmd.verb != SMTP_VERB_UNKNOWN ? &smtp_server_cmds[cmd.verb] : NULL;
	if (def == NULL || def->handler == NULL) {
		s->unknown++;
		smtp_server_reply(s, 500, "5.5.2", "Error: command not recognized");
		return;
	}
	s->counts[cmd.verb]++;
	char why[160];
	if (s->backend->admit != NULL && !s->backend->admit(s->ctx, why, sizeof(why))) {
		smtp_server_log_reject(s, "CONNECT", 421, "4.7.1", why);
		smtp_server_write_reply(s, 421, "4.7.1", why);
		smtp_server_close(s);
		return;
	}
	if (!smtp_server_gate(s, &cmd, def)) {
		smtp_server_bdat_skip(s, line, len);
		return;
	}
	def->handler(s, &cmd);
}

/* ---- content ---- */

static void smtp_server_content_end(struct smtp_server *s)
{
	s->state = SMTP_ST_COMMAND;
	if (s->too_big) {
		metrics_inc(METRICS_MSG_SIZE);
		smtp_server_log_reject(s, "END-OF-MESSAGE", 552, "5.3.4",
				       "Message size exceeds fixed limit");
		smtp_server_txn_clear(s);
		smtp_server_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return;
	}
	if (s->dec.bare_newline && s->set.newline_mode == SMTP_NEWLINE_REJECT) {
		/* SMTP smuggling defence (docs/design.md invariant 7): the message is
		   refused whole; nothing goes downstream. */
		smtp_server_log_reject(s, "END-OF-MESSAGE", 550, "5.5.2",
				       "Error: bare <LF> received");
		smtp_server_txn_abort(s);
		smtp_server_reply(s, 550, "5.5.2", "Error: bare <LF> received");
		return;
	}
	if (s->dec.has_nul) {
		/* NUL is content only under BODY=BINARYMIME (RFC 3030), which
		   is not offered (RFC 6152 §3, RFC 5322 §2.1); a NUL would
		   also let a header check and a reader see different fields
		   (docs/design.md invariant 11). Refused whole, like bare LF. */
		smtp_server_log_reject(s, "END-OF-MESSAGE", 550, "5.6.0",
				       "Error: NUL character in message");
		smtp_server_txn_abort(s);
		smtp_server_reply(s, 550, "5.6.0", "Error: NUL character in message");
		return;
	}
	struct smtp_server_data_info info = {s->dec.size, s->dec.has_8bit};
	s->state = SMTP_ST_WAIT;
	s->wait = SMTP_W_DATA_END;
	s->backend->data_end(s->ctx, &info);
}

/* Passes decoded content on, unless the message is already too big. */
static void smtp_server_content_out(struct smtp_server *s)
{
	if (buf_len(&s->content) == 0)
		return;
	if (!s->too_big && s->dec.size > s->set.size_limit) {
		/* Stop forwarding and abort downstream, but keep reading to
		   the end so the session stays in step (RFC 1870 §6.3). */
		s->too_big = true;
		s->backend->reset(s->ctx);
		s->content_open = false;
	}
	if (!s->too_big)
		s->backend->content(s->ctx, buf_data(&s->content), buf_len(&s->content));
	buf_reset(&s->content);
}

static bool smtp_server_run_data(struct smtp_server *s)
{
	size_t consumed;
	enum smtp_data_status st =
		smtp_data_decode(&s->dec, buf_data(s->in), buf_len(s->in), &consumed, &s->content);
	buf_consume(s->in, consumed);
	smtp_server_content_out(s);
	if (st == SMTP_DATA_NEED_MORE)
		return false;
	smtp_server_content_end(s);
	return true;
}

static bool smtp_server_run_bdat(struct smtp_server *s)
{
	size_t avail = buf_len(s->in);
	size_t take = s->bdat_remaining < avail ? (size_t)s->bdat_remaining : avail;
	if (take > 0 && !s->bdat_discard) {
		size_t consumed;
		smtp_data_decode(&s->dec, buf_data(s->in), take, &consumed, &s->content);
		smtp_server_content_out(s);
	}
	buf_consume(s->in, take);
	s->bdat_remaining -= take;
	if (s->bdat_remaining > 0)
		return false;
	s->state = SMTP_ST_COMMAND;
	if (s->bdat_discard) {
		if (s->bdat_last)
			smtp_server_txn_abort(s);
		return true;
	}
	if (s->bdat_last) {
		smtp_data_finish(&s->dec, &s->content);
		smtp_server_content_out(s);
		smtp_server_content_end(s);
		return true;
	}
	if (s->too_big) {
		s->bdat_failed = true;
		smtp_server_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return true;
	}
	smtp_server_reply(s, 250, "2.0.0", "Ok: %llu octets", (unsigned long long)s->dec.size);
	return true;
}

/* Command lines are read up to the AUTH command's room; every other
 * command is held to line_limit after the line is read (both bounded). */
static void smtp_server_read_commands(struct smtp_server *s)
{
	size_t max = s->set.line_limit;
	if (max < SMTP_SERVER_AUTH_CMD_MAX)
		max = SMTP_SERVER_AUTH_CMD_MAX;
	smtp_line_reader_init(&s->lr, max);
}

static bool smtp_server_line_too_long(const struct smtp_server *s, const char *line, size_t len)
{
	if (len <= s->set.line_limit || s->state != SMTP_ST_COMMAND)
		return false;
	struct smtp_cmd cmd;
	smtp_cmd_parse(line, len, &cmd);
	return cmd.verb != SMTP_VERB_AUTH;
}

/* Ends an AUTH exchange the server refuses to continue (RFC 4954 §4). */
static void smtp_server_auth_end(struct smtp_server *s)
{
	s->state = SMTP_ST_COMMAND;
	smtp_server_read_commands(s);
	if (s->backend->auth_abort != NULL)
		s->backend->auth_abort(s->ctx);
}

/* A refused BDAT still announces its chunk: read and drop it so the bytes
 * are never taken for commands (RFC 3030 §2). */
static void smtp_server_bdat_skip(struct smtp_server *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;
	uint64_t size;
	bool last;
	smtp_cmd_parse(line, len, &cmd);
	if (cmd.verb != SMTP_VERB_BDAT || s->state == SMTP_ST_CLOSED)
		return;
	if (!smtp_server_bdat_args(cmd.args, cmd.args_len, &size, &last)) {
		smtp_server_write_reply(s, 421, "4.5.0", "Error: closing, cannot resynchronise");
		smtp_server_close(s);
		return;
	}
	s->bdat_remaining = size;
	s->bdat_last = false;
	s->bdat_discard = true;
	s->state = SMTP_ST_BDAT;
}

/* Reads one line; returns false when more input is needed. */
static bool smtp_server_run_line(struct smtp_server *s)
{
	size_t len, consumed;
	bool bare_lf;
	enum smtp_line_status st =
		smtp_line_next(&s->lr, buf_data(s->in), buf_len(s->in), &len, &consumed, &bare_lf);
	switch (st) {
	case SMTP_LINE_NEED_MORE:
		/* Inside an over-long line the reader drops what it skipped:
		   the input stays bounded (docs/design.md invariant 5). */
		buf_consume(s->in, consumed);
		return false;
	case SMTP_LINE_TOO_LONG:
		buf_consume(s->in, consumed);
		return true;
	case SMTP_LINE_SKIPPED:
		buf_consume(s->in, consumed);
		s->commands++;
		if (s->state == SMTP_ST_AUTH) {
			smtp_server_auth_end(s);
			smtp_server_reply(s, 500, "5.5.6",
					  "Authentication Exchange line is too long");
		} else {
			smtp_server_reply(s, 500, "5.5.2", "Error: line too long");
		}
		return true;
	case SMTP_LINE_OK:
		break;
	}
	/* Copy: handlers may reset the input buffer (STARTTLS). */
	char *copy = xstrndup((const char *)buf_data(s->in), len);
	buf_consume(s->in, consumed);
	if (smtp_server_line_too_long(s, copy, len)) {
		s->commands++;
		smtp_server_reply(s, 500, "5.5.2", "Error: line too long");
	} else if (bare_lf && s->set.newline_mode == SMTP_NEWLINE_REJECT) {
		s->commands++;
		if (s->state == SMTP_ST_AUTH)
			smtp_server_auth_end(s);
		smtp_server_reply(s, 500, "5.5.2", "Error: bare <LF> received");
		smtp_server_bdat_skip(s, copy, len);
	} else if (s->state == SMTP_ST_AUTH) {
		s->state = SMTP_ST_WAIT;
		s->wait = SMTP_W_AUTH;
		s->backend->auth_response(s->ctx, copy, len);
	} else {
		smtp_server_command(s, copy, len);
	}
	explicit_bzero(copy, len); /* may have been an AUTH response */
	free(copy);
	return true;
}

/* Stopping: once no transaction is open, the next thing the client hears
 * is 421 (RFC 5321 §3.8). */
static bool smtp_server_stop_if_idle(struct smtp_server *s)
{
	if (!s->shutting_down || s->state != SMTP_ST_COMMAND || s->mail_done)
		return false;
	smtp_server_write_reply(s, 421, "4.3.2", "Service shutting down");
	smtp_server_close(s);
	return true;
}

/* A client that pipelines commands and never reads the replies stops
 * being read (docs/design.md invariant 5): its commands wait in the kernel, the
 * replies already queued stay few. RFC 2920 §3.2 lets the server send its
 * replies in batches as its buffer fills. */
static bool smtp_server_out_full(struct smtp_server *s)
{
	if (buf_len(&s->out) >= SMTP_SERVER_OUT_BATCH)
		smtp_server_flush(s);
	return s->io->write_blocked != NULL && s->io->write_blocked(s->ctx);
}

void smtp_server_input(struct smtp_server *s)
{
	if (s->in_run)
		return;
	s->in_run = true;
	bool progress = true;
	while (progress && buf_len(s->in) > 0) {
		if (smtp_server_stop_if_idle(s) || smtp_server_out_full(s))
			break;
		switch (s->state) {
		case SMTP_ST_COMMAND:
		case SMTP_ST_AUTH:
			progress = smtp_server_run_line(s);
			break;
		case SMTP_ST_DATA:
			progress = smtp_server_run_data(s);
			break;
		case SMTP_ST_BDAT:
			progress = smtp_server_run_bdat(s);
			break;
		case SMTP_ST_WAIT:
		case SMTP_ST_CLOSED:
			progress = false;
			break;
		}
	}
	/* A zero-length BDAT chunk needs no input to complete. */
	if (s->state == SMTP_ST_BDAT && s->bdat_remaining == 0)
		smtp_server_run_bdat(s);
	s->in_run = false;
	if (smtp_server_stop_if_idle(s))
		return;
	/* Replies go out when the input is used up or we must wait
	   (RFC 2920 §3.2). */
	smtp_server_flush(s);
	if (!smtp_server_busy(s) && s->io->input_wanted != NULL)
		s->io->input_wanted(s->ctx);
}

bool smtp_server_in_content(const struct smtp_server *s)
{
	return s->state == SMTP_ST_DATA || s->state == SMTP_ST_BDAT;
}

bool smtp_server_data_pipelined(const struct smtp_server *s)
{
	/* A whole "DATA" line, already read, is next: only a clean line start
	   (not inside an over-long line) and exactly the verb (RFC 2920 §3.1). */
	return s->state == SMTP_ST_WAIT && s->wait == SMTP_W_RCPT && !s->lr.skipping &&
	       buf_len(s->in) >= 6 &&
	       strncasecmp((const char *)buf_data(s->in), "DATA\r\n", 6) == 0;
}

bool smtp_server_busy(const struct smtp_server *s)
{
	return s->state == SMTP_ST_WAIT || s->state == SMTP_ST_CLOSED;
}

void smtp_server_complete(struct smtp_server *s, int code, const char *enh, const char *text)
{
	if (s->state != SMTP_ST_WAIT || s->wait == SMTP_W_NONE || s->wait == SMTP_W_TLS)
		return; /* nothing pending: a late answer for a closed session */
	enum smtp_server_wait w = s->wait;
	s->wait = SMTP_W_NONE;
	s->state = SMTP_ST_COMMAND;
	bool ok = code >= 200 && code < 300;
	switch (w) {
	case SMTP_W_MAIL:
		if (ok)
			s->mail_done = true;
		else {
			smtp_server_log_reject(s, "MAIL", code, enh, text);
			smtp_server_set_str(&s->mail_from, NULL, 0);
		}
		break;
	case SMTP_W_RCPT:
		if (ok)
			s->nrcpt++;
		else
			smtp_server_log_reject(s, "RCPT", code, enh, text);
		break;
	case SMTP_W_DATA:
		if (code == 354) {
			smtp_server_content_begin(s, false);
			s->state = SMTP_ST_DATA;
		}
		break;
	case SMTP_W_BDAT_OPEN:
		if (code == 354) {
			smtp_server_content_begin(s, true);
			s->state = SMTP_ST_BDAT;
			goto resume; /* the BDAT chunk gets its reply when read */
		}
		s->bdat_failed = true;
		s->bdat_discard = true;
		s->state = SMTP_ST_BDAT;
		break;
	case SMTP_W_DATA_END:
		if (!ok)
			smtp_server_log_reject(s, "END-OF-MESSAGE", code, enh, text);
		smtp_server_txn_clear(s);
		break;
	case SMTP_W_AUTH:
		if (code == 334) {
			s->state = SMTP_ST_AUTH;
			/* Responses may be long (RFC 4954 §4 suggests 12288). */
			if (s->set.line_limit < SMTP_SERVER_AUTH_LINE_MAX)
				smtp_line_reader_init(&s->lr, SMTP_SERVER_AUTH_LINE_MAX);
		} else {
			smtp_server_read_commands(s);
		}
		break;
	default:
		break;
	}
	if (code == 334)
		buf_printf(&s->out, "334 %s\r\n", text);
	else if (code == 354)
		buf_printf(&s->out, "354 %s\r\n", text);
	else
		smtp_server_reply(s, code, enh, "%s", text);
	if (code == 421) {
		smtp_server_close(s);
		return;
	}
resume:
	if (!s->in_run)
		smtp_server_input(s);
}

void smtp_server_complete_and_close(struct smtp_server *s, int code, const char *enh,
				    const char *text, int close_code, const char *close_enh,
				    const char *close_text)
{
	if (s->state != SMTP_ST_WAIT || s->wait == SMTP_W_NONE || s->wait == SMTP_W_TLS)
		return;
	s->wait = SMTP_W_NONE;
	s->state = SMTP_ST_COMMAND;
	smtp_server_write_reply(s, code, enh, text);
	smtp_server_write_reply(s, close_code, close_enh, close_text);
	smtp_server_close(s);
}

void smtp_server_tls_done(struct smtp_server *s, bool ok)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	if (s->wait != SMTP_W_TLS) {
		/* Implicit TLS: the handshake precedes the greeting. */
		s->tls = ok;
		return;
	}
	if (!ok) {
		s->state = SMTP_ST_CLOSED;
		s->wait = SMTP_W_NONE;
		return;
	}
	s->tls = true;
	s->wait = SMTP_W_NONE;
	s->state = SMTP_ST_COMMAND;
	smtp_server_input(s);
}

void smtp_server_set_user(struct smtp_server *s, const char *user)
{
	free(s->user);
	s->user = xstrdup(user);
}

const char *smtp_server_user(const struct smtp_server *s)
{
	return s->user;
}

void smtp_server_timeout(struct smtp_server *s)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	log_info("%s: timeout after %s from %s", s->log_id,
		 s->state == SMTP_ST_DATA || s->state == SMTP_ST_BDAT ? "DATA" : "command",
		 s->client);
	smtp_server_write_reply(s, 421, "4.4.2", "Error: timeout exceeded");
	smtp_server_close(s);
}

void smtp_server_shutdown(struct smtp_server *s)
{
	s->shutting_down = true;
	/* A login in progress is no transaction: end it now rather than
	   wait for Dovecot. */
	if (s->state == SMTP_ST_AUTH || (s->state == SMTP_ST_WAIT && s->wait == SMTP_W_AUTH)) {
		smtp_server_auth_end(s);
		smtp_server_write_reply(s, 421, "4.3.2", "Service shutting down");
		smtp_server_close(s);
		return;
	}
	if (s->state == SMTP_ST_COMMAND && !s->mail_done) {
		smtp_server_write_reply(s, 421, "4.3.2", "Service shutting down");
		smtp_server_close(s);
	}
}

void smtp_server_disconnected(struct smtp_server *s)
{
	if (s->state == SMTP_ST_CLOSED)
		return;
	smtp_server_txn_abort(s);
	s->state = SMTP_ST_CLOSED;
	s->wait = SMTP_W_NONE;
}

void smtp_server_greet(struct smtp_server *s)
{
	buf_printf(&s->out, "220 %s ESMTP submitd\r\n", s->set.hostname);
	smtp_server_flush(s);
}

struct smtp_server *smtp_server_new(const struct smtp_server_settings *settings,
				    const struct smtp_server_io *io,
				    const struct smtp_server_backend *backend, void *ctx,
				    struct buf *input, const char *log_id, const char *client)
{
	struct smtp_server *s = xcalloc(1, sizeof(*s));
	s->set = *settings;
	s->io = io;
	s->backend = backend;
	s->ctx = ctx;
	s->in = input;
	s->log_id = log_id;
	s->client = client;
	s->tls = settings->tls_active;
	s->state = SMTP_ST_COMMAND;
	smtp_server_read_commands(s);
	return s;
}

void smtp_server_free(struct smtp_server **sp)
{
	struct smtp_server *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	buf_free(&s->out);
	buf_free(&s->content);
	free(s->helo);
	free(s->mail_from);
	free(s->last_rcpt);
	free(s->user);
	free(s);
}

const char *smtp_server_helo(const struct smtp_server *s)
{
	return s->helo != NULL ? s->helo : "";
}
bool smtp_server_esmtp(const struct smtp_server *s)
{
	return s->esmtp;
}
bool smtp_server_smtputf8(const struct smtp_server *s)
{
	return s->txn_smtputf8;
}

void smtp_server_counters(const struct smtp_server *s, char *out, size_t outsz)
{
	static const char *const names[SMTP_VERB_COUNT] = {
		[SMTP_VERB_HELO] = "helo",         [SMTP_VERB_EHLO] = "ehlo",
		[SMTP_VERB_STARTTLS] = "starttls", [SMTP_VERB_AUTH] = "auth",
		[SMTP_VERB_MAIL] = "mail",         [SMTP_VERB_RCPT] = "rcpt",
		[SMTP_VERB_DATA] = "data",         [SMTP_VERB_BDAT] = "bdat",
		[SMTP_VERB_RSET] = "rset",         [SMTP_VERB_NOOP] = "noop",
		[SMTP_VERB_QUIT] = "quit",         [SMTP_VERB_HELP] = "help",
		[SMTP_VERB_VRFY] = "vrfy",         [SMTP_VERB_EXPN] = "expn",
		[SMTP_VERB_ETRN] = "etrn"};
	size_t o = 0;
	out[0] = '\0';
	for (int v = 1; v < SMTP_VERB_COUNT; v++) {
		if (s->counts[v] == 0 || names[v] == NULL)
			continue;
		int n = snprintf(out + o, outsz - o, "%s=%u ", names[v], s->counts[v]);
		if (n < 0 || (size_t)n >= outsz - o)
			return;
		o += (size_t)n;
	}
	if (s->unknown > 0 && o < outsz) {
		int n = snprintf(out + o, outsz - o, "unknown=%u ", s->unknown);
		if (n > 0 && (size_t)n < outsz - o)
			o += (size_t)n;
	}
	if (o < outsz)
		snprintf(out + o, outsz - o, "commands=%u", s->commands);
}
