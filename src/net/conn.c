#include "config.h"
#include "net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* Reads land in one buffer per thread: libuv calls read_cb right after
 * alloc_cb, and every byte is copied out before read_cb returns, so idle
 * connections hold no read buffer at all. */
#define CONN_READ_SIZE 65536
static _Thread_local char conn_read_buf[CONN_READ_SIZE];

/* How long a closing connection may wait for its last bytes to drain. */
#define CONN_CLOSE_LINGER_MS 5000

/* Records are decrypted here first, then copied out by their real size, so
 * the per-connection plaintext buffer never has to hold a full record's room. */
static _Thread_local uint8_t conn_plain_buf[16384 + 256];

static void conn_flush(struct conn *c);
static void conn_finish_close(struct conn *c);

/* Empty buffers are given back to the allocator: an idle session holds no
 * I/O memory at all (docs/benchmarks.md: 10,000 idle sessions in little memory). */
static void conn_trim(struct buf *b)
{
	if (buf_len(b) == 0 && b->cap > 0)
		buf_free(b);
}

static void conn_close_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	if (--c->open_handles > 0)
		return;
	if (c->handler->on_close != NULL)
		c->handler->on_close(c, c->ctx);
	if (c->tls != NULL)
		gnutls_deinit(c->tls);
	buf_free(&c->in);
	buf_free(&c->tls_in);
	buf_free(&c->out);
	buf_free(&c->out_flight);
	free(c);
}

static void conn_timer_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->closing) {
		conn_finish_close(c);
		return;
	}
	if (c->handler->on_timeout != NULL)
		c->handler->on_timeout(c, c->ctx);
}

struct conn *conn_new(uv_loop_t *loop, bool unix_socket, const struct conn_handler *handler,
		      void *ctx)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->handler = handler;
	c->ctx = ctx;
	if (unix_socket)
		uv_pipe_init(loop, &c->h.pipe, 0);
	else
		uv_tcp_init(loop, &c->h.tcp);
	c->h.handle.data = c;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->open_handles = 2;
	return c;
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	free(req);
	if (c->closing)
		return;
	if (status < 0 && c->error == 0)
		c->error = status;
	c->handler->on_connect(c, c->ctx, status);
}

/* Requests live from their start to their callback only: an accepted
 * connection never has one, and an idle one no write under way. */
int conn_connect_tcp(struct conn *c, const struct sockaddr *sa)
{
	uv_connect_t *req = xcalloc(1, sizeof(*req));
	req->data = c;
	uv_tcp_nodelay(&c->h.tcp, 1);
	int r = uv_tcp_connect(req, &c->h.tcp, sa, conn_connect_cb);
	if (r < 0)
		free(req); /* no callback */
	return r;
}

int conn_connect_unix(struct conn *c, const char *path)
{
	uv_connect_t *req = xcalloc(1, sizeof(*req));
	req->data = c;
	uv_pipe_connect(req, &c->h.pipe, path, conn_connect_cb);
	return 0;
}

/* ---- GnuTLS transport: memory in, memory out ---- */

static ssize_t conn_tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t size)
{
	struct conn *c = ptr;
	size_t n = buf_len(&c->tls_in);
	if (n == 0) {
		if (c->eof)
			return 0;
		gnutls_transport_set_errno(c->tls, EAGAIN);
		return -1;
	}
	if (n > size)
		n = size;
	memcpy(data, buf_data(&c->tls_in), n);
	buf_consume(&c->tls_in, n);
	return (ssize_t)n;
}

static ssize_t conn_tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t size)
{
	struct conn *c = ptr;
	buf_append(&c->out, data, size);
	return (ssize_t)size;
}

static ssize_t conn_tls_push_vec(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct conn *c = ptr;
	ssize_t total = 0;
	for (int i = 0; i < iovcnt; i++) {
		buf_append(&c->out, iov[i].iov_base, iov[i].iov_len);
		total += (ssize_t)iov[i].iov_len;
	}
	return total;
}

static void conn_set_error(struct conn *c, int err)
{
	if (c->error == 0)
		c->error = err;
}

/* Decrypts every complete record waiting in tls_in into c->in. */
static void conn_tls_read_records(struct conn *c)
{
	for (;;) {
		size_t before = buf_len(&c->tls_in);
		ssize_t r = gnutls_record_recv(c->tls, conn_plain_buf, sizeof(conn_plain_buf));
		if (r > 0) {
			buf_append(&c->in, conn_plain_buf, (size_t)r);
			continue;
		}
		if (r == 0) {
			c->eof = true; /* close_notify */
			break;
		}
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
			/* After a post-handshake message (a TLS 1.3 session
			   ticket) GnuTLS says "again" although more records
			   may be waiting: go on while it still takes bytes. */
			if (buf_len(&c->tls_in) > 0 && buf_len(&c->tls_in) < before)
				continue;
			break;
		}
		if (r == GNUTLS_E_PREMATURE_TERMINATION && c->eof)
			break;
		if (!gnutls_error_is_fatal((int)r))
			continue;
		conn_set_error(c, (int)r);
		break;
	}
}

/* Runs the handshake or record layer on whatever ciphertext arrived.
 * Returns true when the caller should tell the handler about new data. */
static bool conn_tls_process(struct conn *c)
{
	if (c->tls_handshaking) {
		int r = gnutls_handshake(c->tls);
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
			conn_flush(c);
			if (c->eof) {
				conn_set_error(c, GNUTLS_E_PREMATURE_TERMINATION);
				c->tls_handshaking = false;
				c->handler->on_tls(c, c->ctx, GNUTLS_E_PREMATURE_TERMINATION);
			}
			return false;
		}
		c->tls_handshaking = false;
		if (r < 0) {
			conn_set_error(c, r);
			conn_flush(c); /* the alert, if any */
			c->handler->on_tls(c, c->ctx, r);
			return false;
		}
		c->tls_active = true;
		conn_flush(c);
		c->handler->on_tls(c, c->ctx, 0);
		if (c->closing)
			return false;
	}
	if (c->tls_active)
		conn_tls_read_records(c);
	return true;
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	b->base = conn_read_buf;
	b->len = sizeof(conn_read_buf);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = s->data;
	if (c->closing || nread == 0)
		return;
	if (nread < 0) {
		if (nread == UV_EOF)
			c->eof = true;
		else
			conn_set_error(c, (int)nread);
		uv_read_stop(s);
		c->reading = false;
		if (c->tls != NULL && c->tls_handshaking) {
			conn_tls_process(c);
			return;
		}
		c->handler->on_data(c, c->ctx);
		return;
	}
	if (c->tls != NULL) {
		buf_append(&c->tls_in, b->base, (size_t)nread);
		if (!conn_tls_process(c))
			return;
		conn_trim(&c->tls_in);
	} else {
		buf_append(&c->in, b->base, (size_t)nread);
	}
	c->handler->on_data(c, c->ctx);
	conn_trim(&c->in);
}

void conn_read_start(struct conn *c)
{
	if (c->closing || c->eof || c->error)
		return;
	c->read_wanted = true;
	if (c->reading || c->out_blocked)
		return;
	c->reading = true;
	uv_read_start(&c->h.stream, conn_alloc_cb, conn_read_cb);
}

static void conn_read_pause(struct conn *c)
{
	if (!c->reading)
		return;
	c->reading = false;
	uv_read_stop(&c->h.stream);
}

void conn_read_stop(struct conn *c)
{
	c->read_wanted = false;
	conn_read_pause(c);
}

/* ---- the output bound (docs/design.md invariant 5) ----
 *
 * A peer that sends and never reads must not make us queue its replies
 * without end: over CONN_OUT_HIGH the conn stops reading, so the peer's
 * bytes wait in the kernel (and then in the peer) instead of in our memory.
 * Only the write callback lifts the pause, so the handler is never called
 * back from inside its own conn_write(). */

static void conn_block_check(struct conn *c)
{
	if (c->out_blocked || !c->writing || conn_pending(c) < CONN_OUT_HIGH)
		return;
	c->out_blocked = true;
	conn_read_pause(c);
}

static void conn_unblock(struct conn *c)
{
	c->out_blocked = false;
	if (c->read_wanted)
		conn_read_start(c);
	/* Records GnuTLS still holds are plaintext the handler has not seen. */
	if (c->tls_active && c->error == 0 &&
	    (buf_len(&c->tls_in) > 0 || gnutls_record_check_pending(c->tls) > 0))
		conn_tls_read_records(c);
	/* Input read before the pause (a pipeline the handler stopped in the
	   middle of) is processed now: nothing else would wake it. */
	if (buf_len(&c->in) > 0 && !c->tls_handshaking)
		c->handler->on_data(c, c->ctx);
}

bool conn_write_blocked(const struct conn *c)
{
	return c->out_blocked;
}

/* ---- output ---- */

static void conn_write_cb(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	free(req);
	c->writing = false;
	buf_reset(&c->out_flight);
	conn_trim(&c->out_flight);
	if (status < 0) {
		conn_set_error(c, status);
		if (c->closing) {
			conn_finish_close(c);
			return;
		}
		buf_reset(&c->out);
		/* Reading will report the error; make sure the owner hears of it. */
		if (status != UV_ECANCELED)
			c->handler->on_data(c, c->ctx);
		return;
	}
	if (buf_len(&c->out) > 0)
		conn_flush(c);
	if (c->out_blocked && !c->closing && conn_pending(c) < CONN_OUT_LOW)
		conn_unblock(c);
	if (c->writing || c->error != 0)
		return;
	conn_trim(&c->out);
	if (c->closing) {
		conn_finish_close(c);
		return;
	}
	if (c->want_drain) {
		c->want_drain = false;
		if (c->handler->on_drain != NULL)
			c->handler->on_drain(c, c->ctx);
	}
}

static void conn_flush(struct conn *c)
{
	if (c->writing || buf_len(&c->out) == 0 || c->error != 0)
		return;
	if (uv_is_closing(&c->h.handle))
		return;
	/* Most writes complete at once (loopback, LAN): try that first. A
	   queued uv_write that completes costs a trip through libuv's pending
	   queue and, with libuv 1.44, an epoll_ctl(EPOLL_CTL_MOD) re-arming the
	   same events (uv__drain); that is one extra syscall per reply. Not
	   while closing or when the owner waits for on_drain: those keep
	   the queued path and its callback. */
	if (!c->closing && !c->want_drain) {
		uv_buf_t tb = uv_buf_init((char *)buf_data(&c->out), (unsigned)buf_len(&c->out));
		int n = uv_try_write(&c->h.stream, &tb, 1);
		if (n > 0)
			buf_consume(&c->out, (size_t)n);
		/* errors (and EAGAIN) fall through: uv_write reports them as before */
		if (buf_len(&c->out) == 0) {
			conn_trim(&c->out);
			return;
		}
	}
	struct buf tmp = c->out_flight;
	c->out_flight = c->out;
	c->out = tmp;
	uv_buf_t b =
		uv_buf_init((char *)buf_data(&c->out_flight), (unsigned)buf_len(&c->out_flight));
	uv_write_t *req = xcalloc(1, sizeof(*req));
	req->data = c;
	c->writing = true;
	int r = uv_write(req, &c->h.stream, &b, 1, conn_write_cb);
	if (r < 0) {
		free(req); /* no callback */
		c->writing = false;
		conn_set_error(c, r);
		buf_reset(&c->out_flight);
	}
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	if (c->closing || c->error != 0 || n == 0)
		return;
	if (c->tls_active) {
		const uint8_t *q = p;
		while (n > 0) {
			size_t chunk = n > 16384 ? 16384 : n;
			ssize_t r = gnutls_record_send(c->tls, q, chunk);
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
				continue;
			if (r < 0) {
				conn_set_error(c, (int)r);
				return;
			}
			q += r;
			n -= (size_t)r;
		}
	} else {
		buf_append(&c->out, p, n);
	}
	conn_flush(c);
	conn_block_check(c);
}

void conn_write_str(struct conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

size_t conn_pending(const struct conn *c)
{
	return buf_len(&c->out) + buf_len(&c->out_flight);
}

void conn_want_drain(struct conn *c)
{
	c->want_drain = true;
}

/* ---- TLS ---- */

int conn_tls_start(struct conn *c, bool server, gnutls_certificate_credentials_t creds,
		   gnutls_priority_t prio, const char *server_name, bool verify,
		   const gnutls_datum_t *ticket_key)
{
	/* The checkpoint: plaintext that arrived before the handshake is
	   never interpreted (CVE-2011-0411, docs/design.md invariant 6). */
	buf_reset(&c->in);
	int r = gnutls_init(&c->tls, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
	if (r < 0)
		return r;
	if ((r = gnutls_priority_set(c->tls, prio)) < 0 ||
	    (r = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, creds)) < 0)
		return r;
	/* Mail programs reconnect every few minutes: a ticket spares them
	   (and us) the full handshake, a third of a new connection's cost. */
	if (server && ticket_key != NULL && ticket_key->data != NULL &&
	    (r = gnutls_session_ticket_enable_server(c->tls, ticket_key)) < 0)
		return r;
	if (!server && server_name != NULL && server_name[0] != '\0') {
		/* RFC 6066 §3: an address literal is never sent as SNI, but it
		   is still what the certificate must name (iPAddress SAN). */
		unsigned char ip[16];
		if (inet_pton(AF_INET, server_name, ip) != 1 &&
		    inet_pton(AF_INET6, server_name, ip) != 1) {
			r = gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, server_name,
						   strlen(server_name));
			if (r < 0)
				return r;
		}
		if (verify)
			gnutls_session_set_verify_cert(c->tls, server_name, 0);
	} else if (!server && verify) {
		gnutls_session_set_verify_cert(c->tls, NULL, 0);
	}
	gnutls_transport_set_ptr(c->tls, c);
	gnutls_transport_set_pull_function(c->tls, conn_tls_pull);
	gnutls_transport_set_push_function(c->tls, conn_tls_push);
	gnutls_transport_set_vec_push_function(c->tls, conn_tls_push_vec);
	gnutls_handshake_set_timeout(c->tls, 0);
	c->tls_handshaking = true;
	/* A client speaks first; a server may already hold the ClientHello. */
	conn_tls_process(c);
	conn_trim(&c->tls_in);
	return 0;
}

void conn_requeue_as_tls(struct conn *c)
{
	buf_append(&c->tls_in, buf_data(&c->in), buf_len(&c->in));
	buf_free(&c->in);
}

const char *conn_tls_version(const struct conn *c)
{
	if (!c->tls_active)
		return NULL;
	switch (gnutls_protocol_get_version(c->tls)) {
	case GNUTLS_TLS1_3:
		return "TLSv1.3";
	case GNUTLS_TLS1_2:
		return "TLSv1.2";
	case GNUTLS_TLS1_1:
		return "TLSv1.1";
	case GNUTLS_TLS1_0:
		return "TLSv1";
	default:
		return "TLS";
	}
}

const char *conn_tls_cipher(const struct conn *c)
{
	if (!c->tls_active)
		return NULL;
	const char *name = gnutls_ciphersuite_get(c->tls);
	return name != NULL ? name : gnutls_cipher_get_name(gnutls_cipher_get(c->tls));
}

void conn_tls_describe(const struct conn *c, char *out, size_t outsz)
{
	if (!c->tls_active) {
		snprintf(out, outsz, "none");
		return;
	}
	unsigned bits = (unsigned)gnutls_cipher_get_key_size(gnutls_cipher_get(c->tls)) * 8;
	snprintf(out, outsz, "%s with cipher %s (%u/%u bits)", conn_tls_version(c),
		 conn_tls_cipher(c), bits, bits);
}

void conn_tls_server_name(const struct conn *c, char *out, size_t outsz)
{
	out[0] = '\0';
	if (c->tls == NULL || outsz == 0)
		return;
	size_t len = outsz - 1;
	unsigned type;
	if (gnutls_server_name_get(c->tls, out, &len, &type, 0) < 0 || type != GNUTLS_NAME_DNS)
		out[0] = '\0';
	else
		out[len < outsz ? len : outsz - 1] = '\0';
}

/* ---- timers and closing ---- */

void conn_set_timeout(struct conn *c, uint64_t ms)
{
	if (c->closing)
		return;
	uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

void conn_clear_timeout(struct conn *c)
{
	if (!c->closing)
		uv_timer_stop(&c->timer);
}

static void conn_finish_close(struct conn *c)
{
	if (uv_is_closing(&c->h.handle))
		return;
	uv_timer_stop(&c->timer);
	uv_close(&c->h.handle, conn_close_cb);
	uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	conn_read_stop(c);
	if (c->tls_active && c->error == 0)
		gnutls_bye(c->tls, GNUTLS_SHUT_WR); /* close_notify, RFC 8314 §3.4 */
	conn_flush(c);
	if (!c->writing) {
		conn_finish_close(c);
		return;
	}
	uv_timer_start(&c->timer, conn_timer_cb, CONN_CLOSE_LINGER_MS, 0);
}

void conn_abort(struct conn *c)
{
	c->closing = true;
	conn_read_stop(c);
	conn_finish_close(c);
}
