/* server-fake.h: an in-memory transport and a fake backend for the SMTP
 * server state machine (src/smtp/server.h), shared by t/unit/test-server.c
 * and t/fuzz/fuzz-session.c.
 *
 * The transport captures every byte written to the client in f->out and
 * counts io->starttls / io->close (and any write after close). The backend
 * records every call: counts, a readable call log ("mail <a@b>\n",
 * "rcpt <c@d>\n", "data\n", "data_end 12\n", "reset\n", ...), the last
 * MAIL/RCPT arguments and the content bytes, concatenated.
 *
 * Two answering modes:
 *   synchronous: each backend call is completed inside the call, with the
 *                reply fake_reply_for() chooses (per-call overrides in
 *                f->reply[]);
 *   deferred:    the call is only recorded as pending; the test answers it
 *                with fake_complete() (the default reply) or
 *                fake_complete_with() (any reply). This is how pipelining
 *                stalls and reply order are tested (RFC 2920 §3.2).
 *
 * Default replies (fake_reply_default): MAIL 250 2.1.0 (550 5.7.1 for an
 * address containing "reject"); RCPT 250 2.1.5, but 550 5.1.1 when the
 * address contains "reject" and 450 4.2.0 when it contains "tempfail";
 * DATA 354; end of data 250 2.0.0; AUTH PLAIN with an initial response
 * 235, other mechanisms "334 " then 235 (501 for "*", 535 for "bad").
 *
 * Everything is static inline so each including file uses what it needs
 * without unused-function warnings. */
#ifndef SUBMITD_T_SERVER_FAKE_H
#define SUBMITD_T_SERVER_FAKE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/server.h"

enum fake_call {
	FAKE_NONE = 0,
	FAKE_MAIL,
	FAKE_RCPT,
	FAKE_DATA,
	FAKE_DATA_END,
	FAKE_AUTH,
	FAKE_AUTH_RESPONSE,
	FAKE_NCALLS
};

struct fake_reply {
	int code; /* 0: use the default */
	const char *enh;
	const char *text;
};

struct fake {
	struct smtp_server *s;
	struct smtp_server_settings set;
	struct smtp_server_io io;
	struct smtp_server_backend be;
	struct buf in;      /* the server's input buffer (plaintext from the client) */
	struct buf out;     /* everything the server wrote */
	struct buf log;     /* backend and io calls, one line each (content excluded) */
	struct buf content; /* all content bytes passed to backend->content */

	bool deferred;            /* answer backend calls only in fake_complete() */
	enum fake_call pending;   /* deferred: the call waiting for an answer */
	struct fake_reply reply[FAKE_NCALLS]; /* overrides of the default replies */
	const char *auth_mechs;   /* what backend->auth_mechs returns */

	unsigned n_mail, n_rcpt, n_data, n_content, n_data_end, n_reset;
	unsigned n_auth, n_auth_response;
	unsigned n_write, n_starttls, n_close, n_writes_after_close;
	size_t out_at_close;      /* f->out length when io->close was called */
	size_t out_cap;           /* io->write_blocked once f->out is this long (0: never) */
	bool closed, tls_requested;
	bool content_open;        /* data() answered 354, no data_end/reset since */
	struct smtp_mail_args last_mail;
	struct smtp_rcpt_args last_rcpt;
	struct smtp_server_data_info last_info;
	char last_auth[128];      /* AUTH arguments or the last AUTH response */
	size_t last_auth_len;     /* their whole length */

	/* Hooks (the fuzzer's): choose replaces the reply choice; on_call runs
	   at the start of every answered backend call. */
	struct fake_reply (*choose)(struct fake *f, enum fake_call c, const char *arg);
	void (*on_call)(struct fake *f, enum fake_call c);
	void *user;
};

/* ---- transport ---- */

static inline void fake_io_write(void *ctx, const void *p, size_t n)
{
	struct fake *f = ctx;
	f->n_write++;
	if (f->closed)
		f->n_writes_after_close++;
	buf_append(&f->out, p, n);
}

/* A client that reads nothing: blocked once f->out holds out_cap bytes
 * (0: never blocked). */
static inline bool fake_io_write_blocked(void *ctx)
{
	struct fake *f = ctx;
	return f->out_cap > 0 && buf_len(&f->out) >= f->out_cap;
}

static inline void fake_io_starttls(void *ctx)
{
	struct fake *f = ctx;
	f->n_starttls++;
	f->tls_requested = true;
	buf_append_str(&f->log, "starttls\n");
}

static inline void fake_io_close(void *ctx)
{
	struct fake *f = ctx;
	f->n_close++;
	f->closed = true;
	f->out_at_close = buf_len(&f->out);
	buf_append_str(&f->log, "close\n");
}

/* ---- backend ---- */

/* The default reply to a call; arg is the address for MAIL/RCPT, the
 * arguments for AUTH, the line for an AUTH response. */
static inline struct fake_reply fake_reply_default(enum fake_call c, const char *arg)
{
	switch (c) {
	case FAKE_MAIL:
		if (arg != NULL && strstr(arg, "reject") != NULL)
			return (struct fake_reply){550, "5.7.1", "Sender address rejected"};
		return (struct fake_reply){250, "2.1.0", "Ok"};
	case FAKE_RCPT:
		if (arg != NULL && strstr(arg, "reject") != NULL)
			return (struct fake_reply){550, "5.1.1", "Recipient address rejected: User unknown"};
		if (arg != NULL && strstr(arg, "tempfail") != NULL)
			return (struct fake_reply){450, "4.2.0", "Recipient address rejected: try later"};
		return (struct fake_reply){250, "2.1.5", "Ok"};
	case FAKE_DATA:
		return (struct fake_reply){354, NULL, "End data with <CR><LF>.<CR><LF>"};
	case FAKE_DATA_END:
		return (struct fake_reply){250, "2.0.0", "Ok: queued as FAKE1"};
	case FAKE_AUTH:
		/* "PLAIN <initial response>" succeeds at once; any other
		   mechanism gets an empty challenge. */
		if (arg != NULL && strncmp(arg, "PLAIN ", 6) == 0)
			return (struct fake_reply){235, "2.7.0", "Authentication successful"};
		return (struct fake_reply){334, NULL, ""};
	case FAKE_AUTH_RESPONSE:
		if (arg != NULL && strcmp(arg, "*") == 0)
			return (struct fake_reply){501, "5.7.0", "Authentication aborted"};
		if (arg != NULL && strcmp(arg, "bad") == 0)
			return (struct fake_reply){535, "5.7.8", "Error: authentication failed"};
		return (struct fake_reply){235, "2.7.0", "Authentication successful"};
	default:
		return (struct fake_reply){451, "4.3.0", "fake: no reply"};
	}
}

/* The reply the fake gives: f->choose if set, else the per-call override
 * in f->reply[], else the default. */
static inline struct fake_reply fake_reply_for(struct fake *f, enum fake_call c, const char *arg)
{
	if (f->choose != NULL)
		return f->choose(f, c, arg);
	if (f->reply[c].code != 0)
		return f->reply[c];
	return fake_reply_default(c, arg);
}

/* The argument fake_reply_for() gets for the pending call. */
static inline const char *fake_call_arg(const struct fake *f, enum fake_call c)
{
	switch (c) {
	case FAKE_MAIL:
		return f->last_mail.path.addr;
	case FAKE_RCPT:
		return f->last_rcpt.path.addr;
	case FAKE_AUTH:
	case FAKE_AUTH_RESPONSE:
		return f->last_auth;
	default:
		return NULL;
	}
}

/* Gives reply r to the server for call c. A successful AUTH sets the user
 * first, as the real backend does (server.h). */
static inline void fake_give(struct fake *f, enum fake_call c, struct fake_reply r)
{
	if (r.code == 235 && (c == FAKE_AUTH || c == FAKE_AUTH_RESPONSE))
		smtp_server_set_user(f->s, "user@example.org");
	if (c == FAKE_DATA && r.code == 354)
		f->content_open = true;
	smtp_server_complete(f->s, r.code, r.enh, r.text);
}

/* Answers now (synchronous mode) or records the call as pending. */
static inline void fake_answer(struct fake *f, enum fake_call c)
{
	if (f->on_call != NULL)
		f->on_call(f, c);
	if (f->deferred) {
		f->pending = c;
		return;
	}
	fake_give(f, c, fake_reply_for(f, c, fake_call_arg(f, c)));
}

static inline void fake_be_mail(void *ctx, const struct smtp_mail_args *a)
{
	struct fake *f = ctx;
	f->n_mail++;
	f->last_mail = *a;
	buf_printf(&f->log, "mail <%s>\n", a->path.addr);
	fake_answer(f, FAKE_MAIL);
}

static inline void fake_be_rcpt(void *ctx, const struct smtp_rcpt_args *a)
{
	struct fake *f = ctx;
	f->n_rcpt++;
	f->last_rcpt = *a;
	buf_printf(&f->log, "rcpt <%s>\n", a->path.addr);
	fake_answer(f, FAKE_RCPT);
}

static inline void fake_be_data(void *ctx)
{
	struct fake *f = ctx;
	f->n_data++;
	buf_append_str(&f->log, "data\n");
	fake_answer(f, FAKE_DATA);
}

static inline void fake_be_content(void *ctx, const uint8_t *p, size_t n)
{
	struct fake *f = ctx;
	f->n_content++;
	buf_append(&f->content, p, n);
}

static inline void fake_be_data_end(void *ctx, const struct smtp_server_data_info *info)
{
	struct fake *f = ctx;
	f->n_data_end++;
	f->last_info = *info;
	f->content_open = false;
	buf_printf(&f->log, "data_end %llu\n", (unsigned long long)info->size);
	fake_answer(f, FAKE_DATA_END);
}

static inline void fake_be_reset(void *ctx)
{
	struct fake *f = ctx;
	f->n_reset++;
	f->content_open = false;
	buf_append_str(&f->log, "reset\n");
}

static inline void fake_be_auth(void *ctx, const char *args, size_t len)
{
	struct fake *f = ctx;
	f->n_auth++;
	f->last_auth_len = len;
	snprintf(f->last_auth, sizeof(f->last_auth), "%.*s", (int)len, args);
	buf_append_str(&f->log, "auth\n");
	fake_answer(f, FAKE_AUTH);
}

static inline void fake_be_auth_response(void *ctx, const char *line, size_t len)
{
	struct fake *f = ctx;
	f->n_auth_response++;
	f->last_auth_len = len;
	snprintf(f->last_auth, sizeof(f->last_auth), "%.*s", (int)len, line);
	buf_append_str(&f->log, "auth_response\n");
	fake_answer(f, FAKE_AUTH_RESPONSE);
}

static inline const char *fake_be_auth_mechs(void *ctx)
{
	struct fake *f = ctx;
	return f->auth_mechs;
}

/* ---- set-up ---- */

/* Settings of a submission listener with STARTTLS (port 587), the default. */
static inline struct smtp_server_settings fake_settings(void)
{
	return (struct smtp_server_settings){
		.hostname = "mail.test.example",
		.size_limit = 10 * 1024 * 1024,
		.line_limit = 512,
		.recipient_limit = 100,
		.error_limit = 20,
		.newline_mode = SMTP_NEWLINE_REJECT,
		.starttls_offered = true,
		.tls_active = false,
		.relay_trusted = false,
		.eightbitmime = true,
		.smtputf8 = true,
		.dsn = true,
	};
}

/* Builds the fake and the server (no greeting yet). set may be NULL for
 * fake_settings(). The backend has AUTH ("PLAIN LOGIN") unless the test
 * clears f->be.auth before fake_start(). */
static inline void fake_init(struct fake *f, const struct smtp_server_settings *set)
{
	memset(f, 0, sizeof(*f));
	f->set = set != NULL ? *set : fake_settings();
	f->io = (struct smtp_server_io){
		.write = fake_io_write,
		.write_blocked = fake_io_write_blocked,
		.starttls = fake_io_starttls,
		.close = fake_io_close,
	};
	f->be = (struct smtp_server_backend){
		.mail = fake_be_mail,
		.rcpt = fake_be_rcpt,
		.data = fake_be_data,
		.content = fake_be_content,
		.data_end = fake_be_data_end,
		.reset = fake_be_reset,
		.auth = fake_be_auth,
		.auth_response = fake_be_auth_response,
		.auth_mechs = fake_be_auth_mechs,
	};
	f->auth_mechs = "PLAIN LOGIN";
}

/* Creates the server and sends the greeting. */
static inline void fake_start(struct fake *f)
{
	f->s = smtp_server_new(&f->set, &f->io, &f->be, f, &f->in, "FAKEID", "client.example[192.0.2.1]");
	smtp_server_greet(f->s);
}

static inline void fake_new(struct fake *f, const struct smtp_server_settings *set)
{
	fake_init(f, set);
	fake_start(f);
}

static inline void fake_free(struct fake *f)
{
	smtp_server_free(&f->s);
	buf_free(&f->in);
	buf_free(&f->out);
	buf_free(&f->log);
	buf_free(&f->content);
}

/* ---- driving ---- */

/* Appends p[0..n) to the input and lets the server run, whole or one byte
 * at a time (each byte its own read, as a slow client would send it). */
static inline void fake_feed_mem(struct fake *f, const void *p, size_t n, bool bytewise)
{
	const uint8_t *b = p;
	if (!bytewise) {
		buf_append(&f->in, b, n);
		smtp_server_input(f->s);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		buf_append(&f->in, b + i, 1);
		smtp_server_input(f->s);
	}
}

static inline void fake_feed(struct fake *f, const char *str)
{
	fake_feed_mem(f, str, strlen(str), false);
}

static inline void fake_feed_bytes(struct fake *f, const char *str)
{
	fake_feed_mem(f, str, strlen(str), true);
}

/* Deferred mode: answers the pending call with r (code 0: the reply
 * fake_reply_for() chooses); returns false if nothing was pending. */
static inline bool fake_complete_reply(struct fake *f, struct fake_reply r)
{
	enum fake_call c = f->pending;
	if (c == FAKE_NONE)
		return false;
	f->pending = FAKE_NONE;
	if (r.code == 0)
		r = fake_reply_for(f, c, fake_call_arg(f, c));
	fake_give(f, c, r);
	return true;
}

static inline bool fake_complete(struct fake *f)
{
	return fake_complete_reply(f, (struct fake_reply){0, NULL, NULL});
}

static inline bool fake_complete_with(struct fake *f, int code, const char *enh, const char *text)
{
	return fake_complete_reply(f, (struct fake_reply){code, enh, text});
}

/* The output as a NUL-terminated string (it is kept NUL-terminated past
 * its length; the server never writes NUL bytes). */
static inline const char *fake_out(struct fake *f)
{
	buf_reserve(&f->out, 1)[0] = '\0';
	return (const char *)buf_data(&f->out);
}

static inline const char *fake_log(struct fake *f)
{
	buf_reserve(&f->log, 1)[0] = '\0';
	return (const char *)buf_data(&f->log);
}

/* Forgets what was written so far (the next check sees only new output). */
static inline void fake_clear_out(struct fake *f)
{
	buf_reset(&f->out);
	if (f->closed)
		f->out_at_close = 0;
}

/* ---- reply checking ---- */

/* Splits the output into reply lines; calls fn(line, len, arg) for each,
 * len excluding CRLF. Returns false if the output does not end in CRLF or
 * contains a line not ending in CRLF. */
static inline bool fake_each_line(const uint8_t *p, size_t n,
				  void (*fn)(const char *line, size_t len, void *arg), void *arg)
{
	size_t i = 0;
	while (i < n) {
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		if (lf == NULL)
			return false;
		size_t e = (size_t)(lf - p);
		if (e == i || p[e - 1] != '\r')
			return false;
		fn((const char *)p + i, e - 1 - i, arg);
		i = e + 1;
	}
	return true;
}

/* A reply line is well formed: 3 digits (2-5 first), then ' ' or '-', then
 * text of HT and printable ASCII only (RFC 5321 §4.2 textstring: no CR, LF,
 * NUL or 8-bit bytes echoed from the client), at most 512 octets with CRLF
 * (§4.5.3.1.5). */
static inline bool fake_line_well_formed(const char *l, size_t len)
{
	if (len < 4 || len + 2 > 512)
		return false;
	if (l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9')
		return false;
	if (l[3] != ' ' && l[3] != '-')
		return false;
	for (size_t i = 4; i < len; i++) {
		unsigned char c = (unsigned char)l[i];
		if (c != '\t' && (c < 0x20 || c > 0x7e))
			return false;
	}
	return true;
}

#endif
