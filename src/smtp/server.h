/* smtp/server: the SMTP submission server state machine (RFC 5321, RFC 6409,
 * RFC 3207, RFC 2920, RFC 1870, RFC 3030, RFC 6531, RFC 3461).
 *
 * Knows nothing of sockets, TLS libraries, Dovecot or the downstream: it reads
 * plaintext from an input buffer, writes replies through io->write, and asks
 * its backend (policy + relay, wired by session.c) for every decision that
 * may take time. Each backend call is answered exactly once with
 * smtp_server_complete(), now or later; until then the server processes no
 * further input, so pipelined commands are answered in order (RFC 2920 §3.2).
 *
 * One command table, one gate (docs/design.md §9.1): whether a command is allowed
 * before TLS, before HELO, or without authentication is a flag in the table,
 * checked in one place. */
#ifndef SUBMITD_SMTP_SERVER_H
#define SUBMITD_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "smtp/addr.h"
#include "smtp/cmd.h"
#include "smtp/data.h"

struct smtp_server;

/* The HELO/EHLO name kept: a longer one is cut to this many bytes (no
 * domain name is that long, RFC 1035 §2.3.4). */
#define SMTP_SERVER_HELO_MAX 255

struct smtp_server_settings {
	const char *hostname; /* myhostname */
	uint64_t size_limit;  /* message_size_limit */
	unsigned line_limit;  /* longest command line, CRLF excluded */
	unsigned recipient_limit;
	unsigned error_limit; /* 4xx/5xx replies before 421 and close */
	enum smtp_newline_mode newline_mode;
	bool starttls_offered; /* a starttls listener: STARTTLS offered, and
	                                required before mail commands */
	bool tls_active;       /* implicit TLS listener: TLS from the start */
	bool relay_trusted;    /* trusted listener and client in mynetworks:
	                                MAIL allowed without AUTH */
	bool vrfy_disabled;    /* disable_vrfy_command: VRFY gets 502 */
	/* What the downstream path supports (docs/design.md §7). */
	bool eightbitmime, smtputf8, dsn;
};

struct smtp_server_io {
	/* Sends bytes to the client. */
	void (*write)(void *ctx, const void *p, size_t n);
	/* True while the client is not taking what was written: the server
	   then stops processing input, and the transport calls
	   smtp_server_input() again once the output has drained. May be NULL. */
	bool (*write_blocked)(void *ctx);
	/* The server has used what it could of the input and is ready for
	   more (no backend call pending): a transport that stopped reading
	   while the server was busy resumes. May be NULL. */
	void (*input_wanted)(void *ctx);
	/* "220 Ready to start TLS" has been written: start the handshake. The
	   server has already discarded buffered input; answer with
	   smtp_server_tls_done(). */
	void (*starttls)(void *ctx);
	/* The session is over (QUIT, 421, fatal protocol error): close after
	   the queued replies are sent. */
	void (*close)(void *ctx);
};

struct smtp_server_data_info {
	uint64_t size; /* canonical octets (RFC 1870 §5) */
	bool has_8bit;
};

struct smtp_server_backend {
	/* Each of these is answered by smtp_server_complete(). */
	void (*mail)(void *ctx, const struct smtp_mail_args *a);
	void (*rcpt)(void *ctx, const struct smtp_rcpt_args *a);
	/* Open the content phase (DATA or the first BDAT): complete with 354
	   to go on, anything else to refuse. */
	void (*data)(void *ctx);
	/* Content, canonical (CRLF lines, unstuffed); no answer expected. */
	void (*content)(void *ctx, const uint8_t *p, size_t n);
	/* End of content: complete with the final reply (250 only when the
	   downstream has the message, docs/design.md invariant 2). */
	void (*data_end)(void *ctx, const struct smtp_server_data_info *info);
	/* Forget the transaction (RSET, EHLO, STARTTLS, QUIT, a refused
	   message, disconnect). No answer; the downstream transaction must be
	   aborted without its final dot. */
	void (*reset)(void *ctx);
	/* AUTH mech [initial-response]: complete with 235, 334 (then the
	   next line goes to auth_response), or an error. NULL: no AUTH. */
	void (*auth)(void *ctx, const char *args, size_t len);
	void (*auth_response)(void *ctx, const char *line, size_t len);
	/* The server ended the exchange itself (an over-long or malformed
	   response line): forget it, no answer expected. May be NULL. */
	void (*auth_abort)(void *ctx);
	/* Mechanisms to advertise after TLS ("PLAIN LOGIN"), or NULL/"". */
	const char *(*auth_mechs)(void *ctx);
	/* Before each command: false ends the session with 421 4.7.1 and
	   the text written into why (a held or kicked login, a blocked
	   address: policy/limits.h). May be NULL. */
	bool (*admit)(void *ctx, char *why, size_t whylen);
};

/* log_id and client (for logs) are borrowed: they must outlive the server. */
struct smtp_server *smtp_server_new(const struct smtp_server_settings *settings,
				    const struct smtp_server_io *io,
				    const struct smtp_server_backend *backend, void *ctx,
				    struct buf *input, const char *log_id, const char *client);
void smtp_server_free(struct smtp_server **s);

/* Sends the greeting (after the TLS handshake on implicit-TLS listeners). */
void smtp_server_greet(struct smtp_server *s);
/* Processes what is in the input buffer, as far as possible. */
void smtp_server_input(struct smtp_server *s);
/* True while the server waits for the backend or has closed: input should
 * not be read faster than it is processed. */
bool smtp_server_busy(const struct smtp_server *s);
/* While a RCPT waits for the backend: the client pipelined a DATA line right
 * behind it (RFC 2920), so the backend may send its DATA downstream now. A
 * hint only: the DATA is still gated and answered as usual. */
bool smtp_server_data_pipelined(const struct smtp_server *s);
/* True while message content (DATA or a BDAT chunk) is being read. */
bool smtp_server_in_content(const struct smtp_server *s);

/* Answers the pending backend call. text is one line or several separated
 * by '\n' (sent as a multi-line reply); enh may be NULL or "". */
void smtp_server_complete(struct smtp_server *s, int code, const char *enh, const char *text);

/* The STARTTLS handshake finished; ok false means the connection is lost. */
void smtp_server_tls_done(struct smtp_server *s, bool ok);
/* AUTH succeeded for user (backend calls this before completing 235). */
void smtp_server_set_user(struct smtp_server *s, const char *user);
const char *smtp_server_user(const struct smtp_server *s);

/* Answers the pending backend call, then sends a final reply and closes
 * (e.g. 535 then 421 4.7.0 after too many failed logins). */
void smtp_server_complete_and_close(struct smtp_server *s, int code, const char *enh,
				    const char *text, int close_code, const char *close_enh,
				    const char *close_text);

/* The client sent nothing for too long: 421 4.4.2 and close. */
void smtp_server_timeout(struct smtp_server *s);
/* Graceful stop: 421 4.3.2 now if idle, else after the current transaction. */
void smtp_server_shutdown(struct smtp_server *s);
/* The connection is gone: abort any transaction, no more output. */
void smtp_server_disconnected(struct smtp_server *s);

/* For logs and the Received: header; SMTP_SERVER_HELO_MAX bytes at most. */
const char *smtp_server_helo(const struct smtp_server *s);
bool smtp_server_esmtp(const struct smtp_server *s);
bool smtp_server_smtputf8(const struct smtp_server *s);
/* "ehlo=1 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=6" (Postfix's
 * disconnect line). */
void smtp_server_counters(const struct smtp_server *s, char *out, size_t outsz);

#endif
