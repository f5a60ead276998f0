/* conn: one byte stream (TCP or UNIX socket), optionally with TLS in between.
 *
 * TLS is a filter under the protocol (docs/design.md §9.6): users read plaintext from
 * conn->in and write plaintext with conn_write(); whether GnuTLS sits in
 * between is invisible to them.
 *
 * Lifetimes (libuv rules, docs/design.md §9.9): memory is freed only after both the
 * stream and the timer handles are closed; on_close is the last callback and
 * the conn is freed right after it returns. Output is copied into the conn's
 * own buffer, which lives until uv_write's callback. */
#ifndef SUBMITD_CONN_H
#define SUBMITD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <gnutls/gnutls.h>
#include <uv.h>

#include "core/buf.h"

struct conn;

struct conn_handler {
	/* New plaintext is in conn->in, or conn->eof / conn->error became set,
	   or output blocked at CONN_OUT_HIGH drained while input was waiting.
	   The handler consumes what it uses with buf_consume(&conn->in, n). */
	void (*on_data)(struct conn *c, void *ctx);
	/* All output queued so far has been handed to the kernel. Optional. */
	void (*on_drain)(struct conn *c, void *ctx);
	/* The timer set by conn_set_timeout() fired. */
	void (*on_timeout)(struct conn *c, void *ctx);
	/* A handshake started by conn_tls_start() finished (err 0) or failed. */
	void (*on_tls)(struct conn *c, void *ctx, int err);
	/* Connection established (conn_connect only); err is a libuv error or 0. */
	void (*on_connect)(struct conn *c, void *ctx, int err);
	/* Last callback: handles are closed, the conn is freed after return. */
	void (*on_close)(struct conn *c, void *ctx);
};

struct conn {
	union {
		uv_tcp_t tcp;
		uv_pipe_t pipe;
		uv_handle_t handle;
		uv_stream_t stream;
	} h;
	uv_timer_t timer;
	const struct conn_handler *handler;
	void *ctx;

	struct buf in; /* plaintext received, not yet consumed */
	bool eof;      /* peer closed its side (or TLS close_notify) */
	int error;     /* first transport/TLS error (libuv or GnuTLS code), 0 if none */

	gnutls_session_t tls; /* NULL until conn_tls_start() */
	bool tls_handshaking;
	bool tls_active;   /* handshake done: data is encrypted */
	struct buf tls_in; /* ciphertext received, not yet taken by GnuTLS */

	struct buf out;        /* bytes (ciphertext when TLS) waiting for a write */
	struct buf out_flight; /* bytes handed to uv_write, alive until write_cb */
	bool writing;
	bool reading;     /* a uv read is active */
	bool read_wanted; /* the owner asked for input (conn_read_start) */
	bool out_blocked; /* CONN_OUT_HIGH reached: reading paused until it drains */
	bool closing;
	int open_handles;
	bool want_drain;
};

/* A new conn with an initialised TCP (or, unix_socket, pipe) handle. For a
 * server connection the caller then uv_accept()s into c->h.stream. */
struct conn *conn_new(uv_loop_t *loop, bool unix_socket, const struct conn_handler *handler,
		      void *ctx);
/* Starts an outgoing connection; on_connect reports the outcome. */
int conn_connect_tcp(struct conn *c, const struct sockaddr *sa);
int conn_connect_unix(struct conn *c, const char *path);

/* Output waiting in user space is bounded per connection: once this much is
 * queued, the conn stops reading input until it has drained below
 * CONN_OUT_LOW, then calls on_data so input already buffered is processed.
 * Producers that can stop (a server answering pipelined commands, content
 * streamed downstream) check conn_write_blocked() before producing more. */
#define CONN_OUT_HIGH (64 * 1024)
#define CONN_OUT_LOW (16 * 1024)

void conn_read_start(struct conn *c);
void conn_read_stop(struct conn *c);

/* Queues plaintext for the peer (encrypted when TLS is active). */
void conn_write(struct conn *c, const void *p, size_t n);
void conn_write_str(struct conn *c, const char *s);
/* Bytes queued but not yet handed to the kernel (ciphertext when TLS). */
size_t conn_pending(const struct conn *c);
/* Asks for one on_drain callback when the output queue is empty. */
void conn_want_drain(struct conn *c);
/* True while output is over CONN_OUT_HIGH: produce no more until on_data
 * (or on_drain) says it went down. */
bool conn_write_blocked(const struct conn *c);

/* Starts TLS. Any plaintext already buffered in conn->in is discarded
 * (the STARTTLS checkpoint, CVE-2011-0411): the caller must have consumed
 * everything it meant to. server_name: SNI to send (client side) or NULL.
 * verify: client side, check the peer's chain and name (server_name).
 * ticket_key (server side, may be NULL): enables session resumption with
 * tickets sealed under that key (RFC 8446 §4.6.1, RFC 5077).
 * Result via on_tls. */
int conn_tls_start(struct conn *c, bool server, gnutls_certificate_credentials_t creds,
		   gnutls_priority_t prio, const char *server_name, bool verify,
		   const gnutls_datum_t *ticket_key);

/* Hands the bytes waiting in conn->in back as ciphertext: after a PROXY
 * header, what followed it on an implicit-TLS port is the ClientHello.
 * Call right before conn_tls_start(). */
void conn_requeue_as_tls(struct conn *c);

/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" style text
 * for logs and Received: headers, written into out. */
void conn_tls_describe(const struct conn *c, char *out, size_t outsz);
/* Protocol and cipher names (static strings), NULL when no TLS. */
const char *conn_tls_version(const struct conn *c);
const char *conn_tls_cipher(const struct conn *c);
/* The SNI name the client asked for, or "" (server side). */
void conn_tls_server_name(const struct conn *c, char *out, size_t outsz);

void conn_set_timeout(struct conn *c, uint64_t ms);
void conn_clear_timeout(struct conn *c);

/* Sends TLS close_notify when TLS is up, flushes queued output (bounded
 * wait), then closes. Safe to call more than once. */
void conn_close(struct conn *c);
/* Closes at once, dropping queued output. */
void conn_abort(struct conn *c);

#endif
