/* dovecot_auth: async client for Dovecot's auth client socket.
 * Contracts are in dovecot_auth.h; protocol facts in docs/dovecot-auth.md.
 *
 * Lifetimes (libuv docs/src/handle.rst): a request owns a uv_timer_t and is
 * freed only in that timer's close callback; the connection's pipe is freed in
 * its close callback; the client is freed when it has been destroyed and the
 * last of its handles has closed (c->handles). Write buffers are owned by
 * their uv_write_t and wiped in the write callback.
 *
 * Re-entrancy: user callbacks run only from a request's own timer callback
 * (or from dovecot_auth_client_destroy()), never while this file is in the
 * middle of parsing or of an API call, so the parser and the connection code
 * never see the world change under them. */
#include "config.h"
#include "lookup/dovecot_auth.h"
#include "lookup/dovecot_auth_proto.h"

#include "core/base64.h"
#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <sys/un.h>
#include <unistd.h>

#define DOVECOT_AUTH_HASH_SIZE 256u /* ids are sequential: id % size spreads evenly */
#define DOVECOT_AUTH_HANDSHAKE_MS 10000
#define DOVECOT_AUTH_BACKOFF_MIN_MS 100
#define DOVECOT_AUTH_BACKOFF_MAX_MS 5000
/* A connection must have been up this long before its loss earns an
 * immediate reconnect; a server that accepts and drops gets the backoff. */
#define DOVECOT_AUTH_STABLE_MS 1000
#define DOVECOT_AUTH_MAX_MECHS 32
#define DOVECOT_AUTH_MAX_REASON 200
#define DOVECOT_AUTH_WRITE_QUEUE_MAX (1024 * 1024)
/* Above this, new requests wait in c->queue until Dovecot has read what
 * was written (docs/design.md invariant 5); the MAX above is the backstop for
 * the short CONT and CANCEL lines, which are never held back. */
#define DOVECOT_AUTH_WRITE_QUEUE_HIGH (64 * 1024)
/* Ids we cancelled are remembered this long (and at most this many), so
 * that a reply already on its way when CANCEL left is recognised as late,
 * not as a protocol violation. */
#define DOVECOT_AUTH_ZOMBIE_MS 60000
#define DOVECOT_AUTH_MAX_ZOMBIES 65536
#define DOVECOT_AUTH_READ_CHUNK 8192

enum dovecot_auth_conn_state {
	DOVECOT_AUTH_IDLE,       /* no connection, nothing scheduled */
	DOVECOT_AUTH_CONNECTING, /* uv_pipe_connect() under way */
	DOVECOT_AUTH_HANDSHAKE,  /* connected, waiting for DONE */
	DOVECOT_AUTH_READY,      /* handshake done */
	DOVECOT_AUTH_BACKOFF,    /* waiting to retry after a failure */
};

enum dovecot_auth_req_state {
	DOVECOT_AUTH_REQ_QUEUED,   /* waiting for the handshake: c->queue, step timer */
	DOVECOT_AUTH_REQ_SENT,     /* waiting for Dovecot: c->sent, in hash, step timer */
	DOVECOT_AUTH_REQ_DEFERRED, /* result stored, zero timer: c->deferred */
	DOVECOT_AUTH_REQ_WAITING,  /* CONTINUE delivered, caller's turn: c->waiting, in hash */
	DOVECOT_AUTH_REQ_LOST,     /* as WAITING, but the connection is gone: c->waiting */
	DOVECOT_AUTH_REQ_CLOSING,  /* timer closing, freed in its close callback */
};

struct dovecot_auth_request {
	struct list_link link; /* in the list its state names */
	struct dovecot_auth_request *hnext;
	struct dovecot_auth_client *c;
	uv_timer_t timer;
	enum dovecot_auth_req_state state;
	bool in_hash;
	uint32_t id;
	dovecot_auth_cb *cb;
	void *ctx;
	char mech[DOVECOT_AUTH_MAX_MECH_NAME + 1];
	/* Escaped parameters after the mechanism, "\tservice=smtp...[\tresp=..]";
	 * holds the initial response: wiped once sent. */
	struct buf params;
	/* The stored result of a DEFERRED request. */
	enum dovecot_auth_result result;
	char *user, *challenge, *reason;
};

struct dovecot_auth_zombie {
	struct list_link fifo;
	struct dovecot_auth_zombie *hnext;
	uint32_t id;
	uint64_t expires;
};

struct dovecot_auth_conn {
	uv_pipe_t pipe;
	uv_connect_t connect_req;
	struct dovecot_auth_client *c; /* NULL once the client let go of it */
};

struct dovecot_auth_write {
	uv_write_t req;
	size_t len;
	char data[];
};

struct dovecot_auth_client {
	uv_loop_t *loop;
	char *path;
	unsigned timeout_ms;
	enum dovecot_auth_conn_state state;
	bool destroyed;
	bool fake;        /* dovecot_auth_client_fake_connect(): no socket */
	unsigned handles; /* open handles that point at us: the timer, each request */
	struct dovecot_auth_conn *conn;
	uv_timer_t timer; /* handshake timeout, or the backoff delay */
	unsigned backoff_ms;
	uint64_t ready_since;
	unsigned generation; /* bumped whenever a connection ends */
	struct buf in;

	/* handshake progress */
	bool got_version, got_cookie;
	unsigned n_mechs; /* MECH lines seen, private ones included */
	char mechs_new[DOVECOT_AUTH_MAX_MECHS * (DOVECOT_AUTH_MAX_MECH_NAME + 1) + 1];
	/* published by the last DONE */
	char mechs[DOVECOT_AUTH_MAX_MECHS * (DOVECOT_AUTH_MAX_MECH_NAME + 1) + 1];

	/* A reply longer than DOVECOT_AUTH_MAX_LINE (Dovecot echoes the
	 * client's login in user=, escaped: a hostile login can make it huge)
	 * is skipped to its LF; its start says whose it was. */
	bool skipping;
	char long_prefix[48];
	size_t long_prefix_len;

	uint32_t next_id;
	bool ids_wrapped;
	struct dovecot_auth_request *hash[DOVECOT_AUTH_HASH_SIZE];
	struct dovecot_auth_zombie *zhash[DOVECOT_AUTH_HASH_SIZE];
	unsigned n_zombies;
	struct list_link zombies;

	struct list_link queue, sent, deferred, waiting;
};

/* ---- small helpers ---- */

static struct dovecot_auth_request *dovecot_auth_list_req(struct list_link *l)
{
	return list_entry(l, struct dovecot_auth_request, link);
}

static void dovecot_auth_free_result(struct dovecot_auth_request *req)
{
	xfree_secret(&req->user);
	xfree_secret(&req->challenge);
	xfree_secret(&req->reason);
}

/* ---- id tables ---- */

static struct dovecot_auth_request *dovecot_auth_hash_find(struct dovecot_auth_client *c,
							   uint32_t id)
{
	struct dovecot_auth_request *r = c->hash[id % DOVECOT_AUTH_HASH_SIZE];
	while (r != NULL && r->id != id)
		r = r->hnext;
	return r;
}

static void dovecot_auth_hash_add(struct dovecot_auth_client *c, struct dovecot_auth_request *req)
{
	struct dovecot_auth_request **h = &c->hash[req->id % DOVECOT_AUTH_HASH_SIZE];
	req->hnext = *h;
	*h = req;
	req->in_hash = true;
}

static void dovecot_auth_hash_del(struct dovecot_auth_client *c, struct dovecot_auth_request *req)
{
	if (!req->in_hash)
		return;
	struct dovecot_auth_request **p = &c->hash[req->id % DOVECOT_AUTH_HASH_SIZE];
	while (*p != req)
		p = &(*p)->hnext;
	*p = req->hnext;
	req->hnext = NULL;
	req->in_hash = false;
}

static void dovecot_auth_zombie_del(struct dovecot_auth_client *c, struct dovecot_auth_zombie *z)
{
	struct dovecot_auth_zombie **p = &c->zhash[z->id % DOVECOT_AUTH_HASH_SIZE];
	while (*p != z)
		p = &(*p)->hnext;
	*p = z->hnext;
	list_remove(&z->fifo);
	c->n_zombies--;
	free(z);
}

static struct dovecot_auth_zombie *dovecot_auth_zombie_oldest(struct dovecot_auth_client *c)
{
	if (list_empty(&c->zombies))
		return NULL;
	return list_entry(c->zombies.next, struct dovecot_auth_zombie, fifo);
}

static void dovecot_auth_zombie_expire(struct dovecot_auth_client *c)
{
	uint64_t now = uv_now(c->loop);
	struct dovecot_auth_zombie *z;
	while ((z = dovecot_auth_zombie_oldest(c)) != NULL &&
	       (z->expires <= now || c->n_zombies > DOVECOT_AUTH_MAX_ZOMBIES))
		dovecot_auth_zombie_del(c, z);
}

static struct dovecot_auth_zombie *dovecot_auth_zombie_find(struct dovecot_auth_client *c,
							    uint32_t id)
{
	struct dovecot_auth_zombie *z = c->zhash[id % DOVECOT_AUTH_HASH_SIZE];
	while (z != NULL && z->id != id)
		z = z->hnext;
	return z;
}

static void dovecot_auth_zombie_add(struct dovecot_auth_client *c, uint32_t id)
{
	struct dovecot_auth_zombie *z = xcalloc(1, sizeof(*z));
	z->id = id;
	z->expires = uv_now(c->loop) + DOVECOT_AUTH_ZOMBIE_MS;
	z->hnext = c->zhash[id % DOVECOT_AUTH_HASH_SIZE];
	c->zhash[id % DOVECOT_AUTH_HASH_SIZE] = z;
	list_add_tail(&c->zombies, &z->fifo);
	c->n_zombies++;
	dovecot_auth_zombie_expire(c);
}

static void dovecot_auth_zombie_clear(struct dovecot_auth_client *c)
{
	struct dovecot_auth_zombie *z;
	while ((z = dovecot_auth_zombie_oldest(c)) != NULL)
		dovecot_auth_zombie_del(c, z);
}

static uint32_t dovecot_auth_alloc_id(struct dovecot_auth_client *c)
{
	for (;;) {
		uint32_t id = c->next_id++;
		if (c->next_id == 0) {
			c->next_id = 1;
			c->ids_wrapped = true;
		}
		if (!c->ids_wrapped || (dovecot_auth_hash_find(c, id) == NULL &&
					dovecot_auth_zombie_find(c, id) == NULL))
			return id;
	}
}

/* ---- lifetimes ---- */

static void dovecot_auth_client_maybe_free(struct dovecot_auth_client *c)
{
	if (!c->destroyed || c->handles > 0)
		return;
	buf_wipe(&c->in);
	free(c->path);
	free(c);
}

static void dovecot_auth_request_close_cb(uv_handle_t *h)
{
	struct dovecot_auth_request *req = h->data;
	struct dovecot_auth_client *c = req->c;
	explicit_bzero(req, sizeof(*req));
	free(req);
	c->handles--;
	dovecot_auth_client_maybe_free(c);
}

static void dovecot_auth_request_close(struct dovecot_auth_request *req)
{
	if (req->state == DOVECOT_AUTH_REQ_CLOSING)
		return;
	dovecot_auth_hash_del(req->c, req);
	list_remove(&req->link);
	req->state = DOVECOT_AUTH_REQ_CLOSING;
	buf_wipe(&req->params);
	dovecot_auth_free_result(req);
	uv_close((uv_handle_t *)&req->timer, dovecot_auth_request_close_cb);
}

static void dovecot_auth_request_timer_cb(uv_timer_t *t);

/* Stores a result to be delivered from the loop (never inside the caller's
 * call). A CONTINUE stays in the hash: Dovecot waits for our CONT. */
static void dovecot_auth_request_complete(struct dovecot_auth_request *req,
					  enum dovecot_auth_result result, const char *user,
					  const char *challenge, const char *reason)
{
	struct dovecot_auth_client *c = req->c;
	if (result != DOVECOT_AUTH_CONTINUE)
		dovecot_auth_hash_del(c, req);
	list_remove(&req->link);
	dovecot_auth_free_result(req);
	req->state = DOVECOT_AUTH_REQ_DEFERRED;
	req->result = result;
	req->user = user ? xstrdup(user) : NULL;
	req->challenge = challenge ? xstrdup(challenge) : NULL;
	req->reason = reason ? xstrdup(reason) : NULL;
	list_add_tail(&c->deferred, &req->link);
	uv_timer_start(&req->timer, dovecot_auth_request_timer_cb, 0, 0);
}

/* ---- connection ---- */

static void dovecot_auth_conn_start(struct dovecot_auth_client *c);
static void dovecot_auth_conn_process(struct dovecot_auth_client *c);
static void dovecot_auth_conn_drop(struct dovecot_auth_client *c, const char *why);
static void dovecot_auth_client_timer_cb(uv_timer_t *t);

static void dovecot_auth_pipe_close_cb(uv_handle_t *h)
{
	/* The client let go of it (conn->c == NULL) before closing it, so
	 * this never touches the client, which may be gone by now. */
	free(h->data);
}

static void dovecot_auth_timer_close_cb(uv_handle_t *h)
{
	struct dovecot_auth_client *c = h->data;
	c->handles--;
	dovecot_auth_client_maybe_free(c);
}

static bool dovecot_auth_write_full(struct dovecot_auth_client *c)
{
	if (c->fake || c->conn == NULL)
		return false;
	uv_stream_t *s = (uv_stream_t *)&c->conn->pipe;
	return uv_stream_get_write_queue_size(s) >= DOVECOT_AUTH_WRITE_QUEUE_HIGH;
}

static void dovecot_auth_request_send(struct dovecot_auth_request *req, bool restart_timer);

/* Sends the requests held back by dovecot_auth_write_full(), in order. */
static void dovecot_auth_send_queued(struct dovecot_auth_client *c)
{
	unsigned gen = c->generation;
	while (c->generation == gen && c->state == DOVECOT_AUTH_READY && !list_empty(&c->queue) &&
	       !dovecot_auth_write_full(c))
		dovecot_auth_request_send(dovecot_auth_list_req(c->queue.next), false);
}

static void dovecot_auth_write_cb(uv_write_t *w, int status)
{
	struct dovecot_auth_write *wr = list_entry(w, struct dovecot_auth_write, req);
	struct dovecot_auth_conn *conn = w->handle->data;
	explicit_bzero(wr->data, wr->len);
	free(wr);
	if (status < 0 && status != UV_ECANCELED && conn->c != NULL && conn->c->conn == conn) {
		char why[128];
		snprintf(why, sizeof(why), "write failed: %s", uv_strerror(status));
		dovecot_auth_conn_drop(conn->c, why);
		return;
	}
	if (status == 0 && conn->c != NULL && conn->c->conn == conn)
		dovecot_auth_send_queued(conn->c);
}

/* Queues bytes for Dovecot; the copy is wiped once written. Returns false
 * if the connection was dropped meanwhile. */
static bool dovecot_auth_conn_send(struct dovecot_auth_client *c, const void *data, size_t len)
{
	if (c->fake)
		return true;
	if (c->conn == NULL)
		return false;
	struct dovecot_auth_write *wr = xmalloc(sizeof(*wr) + len);
	wr->len = len;
	memcpy(wr->data, data, len);
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
	uv_stream_t *s = (uv_stream_t *)&c->conn->pipe;
	int r = uv_write(&wr->req, s, &b, 1, dovecot_auth_write_cb);
	if (r < 0) {
		explicit_bzero(wr->data, len);
		free(wr);
		char why[128];
		snprintf(why, sizeof(why), "write failed: %s", uv_strerror(r));
		dovecot_auth_conn_drop(c, why);
		return false;
	}
	if (uv_stream_get_write_queue_size(s) > DOVECOT_AUTH_WRITE_QUEUE_MAX) {
		dovecot_auth_conn_drop(c, "server is not reading what we send");
		return false;
	}
	return true;
}

static void dovecot_auth_send_cancel(struct dovecot_auth_client *c, uint32_t id)
{
	char line[32];
	int n = snprintf(line, sizeof(line), "CANCEL\t%u\n", (unsigned)id);
	dovecot_auth_zombie_add(c, id);
	dovecot_auth_conn_send(c, line, (size_t)n);
}

/* Writes the request's AUTH line and waits for Dovecot. restart_timer is
 * false when it leaves the queue: the wait there counted against its time. */
static void dovecot_auth_request_send(struct dovecot_auth_request *req, bool restart_timer)
{
	struct dovecot_auth_client *c = req->c;
	if (!dovecot_auth_mech_in(c->mechs, req->mech)) {
		/* Never forward an unannounced mechanism: Dovecot would drop the
		 * connection and every session on it with it. */
		dovecot_auth_request_complete(req, DOVECOT_AUTH_FAIL, NULL, NULL,
					      "Unsupported authentication mechanism");
		return;
	}
	req->id = dovecot_auth_alloc_id(c);
	dovecot_auth_hash_add(c, req);
	list_remove(&req->link);
	list_add_tail(&c->sent, &req->link);
	req->state = DOVECOT_AUTH_REQ_SENT;
	if (restart_timer)
		uv_timer_start(&req->timer, dovecot_auth_request_timer_cb, c->timeout_ms, 0);

	struct buf line = BUF_INIT;
	buf_printf(&line, "AUTH\t%u\t%s", (unsigned)req->id, req->mech);
	buf_append(&line, buf_data(&req->params), buf_len(&req->params));
	buf_append(&line, "\n", 1);
	buf_wipe(&req->params);
	dovecot_auth_conn_send(c, buf_data(&line), buf_len(&line));
	buf_wipe(&line);
}

static void dovecot_auth_fail_list(struct list_link *list, const char *reason)
{
	while (!list_empty(list)) {
		struct dovecot_auth_request *req = dovecot_auth_list_req(list->next);
		dovecot_auth_request_complete(req, DOVECOT_AUTH_TEMPFAIL, NULL, NULL, reason);
	}
}

/* Ends the connection (or attempt): every step waiting for Dovecot becomes
 * TEMPFAIL (delivered from the loop), callers mid-exchange learn it at their
 * next continue, and a reconnect is scheduled. why (logged) may be NULL. */
static void dovecot_auth_conn_drop(struct dovecot_auth_client *c, const char *why)
{
	if (why != NULL)
		log_warn("dovecot auth: %s: %s", c->path, why);
	metrics_backend_up("Dovecot", NULL, false);
	bool was_ready = c->state == DOVECOT_AUTH_READY;
	const char *reason = was_ready ? "Connection lost to authentication server"
				       : "Can't connect to authentication server";
	if (c->conn != NULL) {
		c->conn->c = NULL;
		uv_close((uv_handle_t *)&c->conn->pipe, dovecot_auth_pipe_close_cb);
		c->conn = NULL;
	}
	c->generation++;
	buf_wipe(&c->in);
	if (!c->destroyed)
		uv_timer_stop(&c->timer);
	c->state = DOVECOT_AUTH_IDLE;

	dovecot_auth_fail_list(&c->sent, reason);
	dovecot_auth_fail_list(&c->queue, reason);
	/* A challenge not yet delivered cannot be answered any more. */
	for (struct list_link *l = c->deferred.next; l != &c->deferred; l = l->next) {
		struct dovecot_auth_request *req = dovecot_auth_list_req(l);
		if (req->result == DOVECOT_AUTH_CONTINUE) {
			dovecot_auth_hash_del(c, req);
			dovecot_auth_free_result(req);
			req->result = DOVECOT_AUTH_TEMPFAIL;
			req->reason = xstrdup(reason);
		}
	}
	for (struct list_link *l = c->waiting.next; l != &c->waiting; l = l->next) {
		struct dovecot_auth_request *req = dovecot_auth_list_req(l);
		dovecot_auth_hash_del(c, req);
		req->state = DOVECOT_AUTH_REQ_LOST;
	}
	dovecot_auth_zombie_clear(c);
	c->next_id = 1;
	c->ids_wrapped = false;

	if (c->destroyed)
		return;
	if (c->fake) {
		c->fake = false;
		return;
	}
	if (was_ready && uv_now(c->loop) - c->ready_since >= DOVECOT_AUTH_STABLE_MS) {
		c->backoff_ms = 0;
		dovecot_auth_conn_start(c);
		return;
	}
	c->backoff_ms = c->backoff_ms == 0 ? DOVECOT_AUTH_BACKOFF_MIN_MS : c->backoff_ms * 2;
	if (c->backoff_ms > DOVECOT_AUTH_BACKOFF_MAX_MS)
		c->backoff_ms = DOVECOT_AUTH_BACKOFF_MAX_MS;
	c->state = DOVECOT_AUTH_BACKOFF;
	uv_timer_start(&c->timer, dovecot_auth_client_timer_cb, c->backoff_ms, 0);
}

static void dovecot_auth_client_timer_cb(uv_timer_t *t)
{
	struct dovecot_auth_client *c = t->data;
	switch (c->state) {
	case DOVECOT_AUTH_CONNECTING:
	case DOVECOT_AUTH_HANDSHAKE:
		dovecot_auth_conn_drop(c, "handshake timed out");
		break;
	case DOVECOT_AUTH_BACKOFF:
		dovecot_auth_conn_start(c);
		break;
	default:
		break;
	}
}

static void dovecot_auth_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct dovecot_auth_conn *conn = h->data;
	(void)suggested;
	if (conn->c == NULL) {
		*b = uv_buf_init(NULL, 0);
		return;
	}
	struct buf *in = &conn->c->in;
	uint8_t *p = buf_reserve(in, DOVECOT_AUTH_READ_CHUNK);
	*b = uv_buf_init((char *)p, DOVECOT_AUTH_READ_CHUNK);
}

static void dovecot_auth_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct dovecot_auth_conn *conn = s->data;
	struct dovecot_auth_client *c = conn->c;
	(void)b;
	if (c == NULL || c->conn != conn)
		return;
	if (nread > 0) {
		buf_commit(&c->in, (size_t)nread);
		dovecot_auth_conn_process(c);
	} else if (nread == UV_EOF) {
		dovecot_auth_conn_drop(c, "connection closed by the server");
	} else if (nread < 0) {
		char why[128];
		snprintf(why, sizeof(why), "read failed: %s", uv_strerror((int)nread));
		dovecot_auth_conn_drop(c, why);
	}
}

static void dovecot_auth_connect_cb(uv_connect_t *creq, int status)
{
	struct dovecot_auth_conn *conn = list_entry(creq, struct dovecot_auth_conn, connect_req);
	struct dovecot_auth_client *c = conn->c;
	if (c == NULL || c->conn != conn || status == UV_ECANCELED)
		return;
	if (status < 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(status));
		dovecot_auth_conn_drop(c, why);
		return;
	}
	c->state = DOVECOT_AUTH_HANDSHAKE;
	int r = uv_read_start((uv_stream_t *)&conn->pipe, dovecot_auth_alloc_cb,
			      dovecot_auth_read_cb);
	if (r < 0) {
		char why[128];
		snprintf(why, sizeof(why), "read failed: %s", uv_strerror(r));
		dovecot_auth_conn_drop(c, why);
		return;
	}
	/* Sent unprompted: Dovecot 2.4 sends its MECH list only after our
	 * VERSION. Minor 2: an empty resp= is an empty initial response. CPID
	 * is checked for uniqueness only on login listeners, so every worker
	 * may send the same pid. */
	char hello[64];
	int n = snprintf(hello, sizeof(hello), "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
	dovecot_auth_conn_send(c, hello, (size_t)n);
}

static void dovecot_auth_handshake_reset(struct dovecot_auth_client *c)
{
	c->got_version = c->got_cookie = false;
	c->skipping = false;
	c->n_mechs = 0;
	c->mechs_new[0] = '\0';
	c->next_id = 1;
	c->ids_wrapped = false;
}

static void dovecot_auth_conn_start(struct dovecot_auth_client *c)
{
	dovecot_auth_handshake_reset(c);
	uv_timer_start(&c->timer, dovecot_auth_client_timer_cb, DOVECOT_AUTH_HANDSHAKE_MS, 0);
	c->state = DOVECOT_AUTH_CONNECTING;
	if (strlen(c->path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		/* libuv would silently truncate it and connect elsewhere. */
		dovecot_auth_conn_drop(c, "socket path too long");
		return;
	}
	struct dovecot_auth_conn *conn = xcalloc(1, sizeof(*conn));
	conn->c = c;
	int r = uv_pipe_init(c->loop, &conn->pipe, 0);
	if (r < 0) {
		free(conn);
		char why[128];
		snprintf(why, sizeof(why), "socket: %s", uv_strerror(r));
		dovecot_auth_conn_drop(c, why);
		return;
	}
	conn->pipe.data = conn;
	c->conn = conn;
	/* Errors, even immediate ones, come back through the callback. */
	uv_pipe_connect(&conn->connect_req, &conn->pipe, c->path, dovecot_auth_connect_cb);
}

/* ---- parsing what Dovecot sends ---- */

/* A protocol violation: drop the connection. Only the command name is
 * logged (sanitised, up to the first TAB, at most 16 bytes): lines may carry
 * user names and passdb fields. */
static void dovecot_auth_violation(struct dovecot_auth_client *c,
				   const struct dovecot_auth_field *cmd, const char *what)
{
	char name[24], why[160];
	size_t n = cmd->len < 16 ? cmd->len : 16;
	const char *tab = memchr(cmd->s, '\t', n);
	log_sanitize(name, sizeof(name), cmd->s, tab ? (size_t)(tab - cmd->s) : n);
	snprintf(why, sizeof(why), "protocol error: %s (command \"%s\")", what, name);
	dovecot_auth_conn_drop(c, why);
}

/* MECH NAME [FLAG...]. Dovecot's own client accepts any name and ignores
 * unknown (and empty) flags; we do the same, but only names we could offer
 * on the SMTP side (RFC 4422 §3.1, folded to upper case) join the list:
 * others, and any beyond DOVECOT_AUTH_MAX_MECHS, are skipped, not fatal. */
static bool dovecot_auth_handle_mech(struct dovecot_auth_client *c, struct dovecot_auth_field *f,
				     size_t nf)
{
	if (nf < 2) {
		dovecot_auth_violation(c, &f[0], "MECH without a name");
		return false;
	}
	c->n_mechs++;
	bool private = false;
	for (size_t i = 2; i < nf; i++)
		if (dovecot_auth_field_is(&f[i], "private"))
	private = true;
	char name[DOVECOT_AUTH_MAX_MECH_NAME + 1];
	if (private || !dovecot_auth_mech_name_valid(f[1].s, f[1].len, true)) {
		if (!private)
			log_debug("dovecot auth: %s: mechanism with an unusable name skipped",
				  c->path);
		return true;
	}
	for (size_t i = 0; i <= f[1].len; i++)
		name[i] = (char)toupper((unsigned char)f[1].s[i]);
	if (dovecot_auth_mech_in(c->mechs_new, name))
		return true;
	size_t used = strlen(c->mechs_new);
	if (used + 1 + f[1].len + 1 > sizeof(c->mechs_new)) {
		log_debug("dovecot auth: %s: more mechanisms than we keep; %s skipped", c->path,
			  name);
		return true;
	}
	if (used != 0)
		c->mechs_new[used++] = ' ';
	memcpy(c->mechs_new + used, name, f[1].len + 1);
	return true;
}

static bool dovecot_auth_handle_done(struct dovecot_auth_client *c, struct dovecot_auth_field *f,
				     size_t nf)
{
	(void)nf; /* extra fields are ignored, as Dovecot's own client does */
	if (c->n_mechs == 0 || !c->got_cookie) {
		dovecot_auth_violation(c, &f[0],
				       c->n_mechs == 0 ? "no MECH before DONE"
						       : "no COOKIE before DONE");
		return false;
	}
	memcpy(c->mechs, c->mechs_new, sizeof(c->mechs));
	c->state = DOVECOT_AUTH_READY;
	c->ready_since = uv_now(c->loop);
	c->backoff_ms = 0;
	uv_timer_stop(&c->timer);
	metrics_backend_up("Dovecot", NULL, true);
	log_info("dovecot auth: %s: connected, mechanisms: %s", c->path,
		 c->mechs[0] ? c->mechs : "(none public)");
	unsigned gen = c->generation;
	dovecot_auth_send_queued(c);
	return c->generation == gen;
}

/* The handshake, checked as Dovecot's own client (lib-auth-client) checks
 * it: VERSION needs a major of 1 and a numeric minor (more fields are
 * ignored); SPID and CUID must be numbers; COOKIE may come once; DONE needs
 * a MECH and a COOKIE; anything else is a violation. One check of ours is
 * stricter: SPID before any MECH means an auth-master or userdb socket,
 * which never sends MECH; we say so at once instead of timing out. */
static bool dovecot_auth_handle_handshake(struct dovecot_auth_client *c,
					  struct dovecot_auth_field *f, size_t nf)
{
	if (!c->got_version) {
		/* Major 1 only; the minor (2 on Dovecot 2.3, 3 and 4 on 2.4) only
		 * says which optional replies the server may send us. */
		if (!dovecot_auth_field_is(&f[0], "VERSION") || nf < 3 ||
		    !dovecot_auth_field_is(&f[1], "1") ||
		    !dovecot_auth_all_digits(f[2].s, f[2].len)) {
			dovecot_auth_violation(c, &f[0], "expected VERSION 1.x first");
			return false;
		}
		c->got_version = true;
		return true;
	}
	if (dovecot_auth_field_is(&f[0], "MECH"))
		return dovecot_auth_handle_mech(c, f, nf);
	if (dovecot_auth_field_is(&f[0], "SPID")) {
		if (c->n_mechs == 0) {
			dovecot_auth_violation(c, &f[0],
					       "no MECH before SPID (not an auth client socket?)");
			return false;
		}
		if (nf < 2 || !dovecot_auth_all_digits(f[1].s, f[1].len)) {
			dovecot_auth_violation(c, &f[0], "bad SPID");
			return false;
		}
		return true;
	}
	if (dovecot_auth_field_is(&f[0], "CUID")) {
		if (nf < 2 || !dovecot_auth_all_digits(f[1].s, f[1].len)) {
			dovecot_auth_violation(c, &f[0], "bad CUID");
			return false;
		}
		return true;
	}
	if (dovecot_auth_field_is(&f[0], "COOKIE")) {
		/* Only master logins use the cookie; its form is not ours to judge. */
		if (c->got_cookie) {
			dovecot_auth_violation(c, &f[0], "second COOKIE");
			return false;
		}
		c->got_cookie = nf >= 2;
		return true;
	}
	if (dovecot_auth_field_is(&f[0], "DONE"))
		return dovecot_auth_handle_done(c, f, nf);
	dovecot_auth_violation(c, &f[0], "unexpected command during handshake");
	return false;
}

/* A reply we cannot use for one request fails that request only (TEMPFAIL:
 * the password was never judged), never the others on the connection.
 * dovecot_waits: the reply was a CONT, so Dovecot waits for our answer and
 * must be told to forget the request. */
static void dovecot_auth_reply_unusable(struct dovecot_auth_client *c,
					struct dovecot_auth_request *req, const char *what,
					bool dovecot_waits)
{
	uint32_t id = req->id;
	log_warn("dovecot auth: %s: request %u: %s; this login fails temporarily", c->path,
		 (unsigned)id, what);
	dovecot_auth_request_complete(req, DOVECOT_AUTH_TEMPFAIL, NULL, NULL,
				      "Authentication server sent an unusable reply");
	if (dovecot_waits)
		dovecot_auth_send_cancel(c, id);
}

/* OK and FAIL: "name" or "name=value" parameters after the id, read as
 * Dovecot's own client reads them: empty fields (the SQL passdb ends its OK
 * with one, and puts one before original_user=) and unknown names are
 * ignored. What we act on must be whole: one user= (or repeats of the same
 * value), a usable user name on OK. */
static void dovecot_auth_handle_final(struct dovecot_auth_client *c,
				      struct dovecot_auth_request *req, bool ok,
				      const struct dovecot_auth_field *f, size_t nf)
{
	struct dovecot_auth_final r;
	dovecot_auth_final_parse(f, nf, &r);
	if (ok && r.user_conflict) {
		dovecot_auth_reply_unusable(c, req, "two different user= values", false);
		return;
	}
	char reason_buf[DOVECOT_AUTH_MAX_REASON + 1];
	const char *why = NULL;
	if (r.reason != NULL)
		why = log_sanitize(reason_buf, sizeof(reason_buf), r.reason, r.reason_len);
	enum dovecot_auth_result result;
	if (!ok)
		result = r.temp ? DOVECOT_AUTH_TEMPFAIL : DOVECOT_AUTH_FAIL;
	else if (r.refused)
		result = DOVECOT_AUTH_FAIL;
	else if (r.user == NULL || !dovecot_auth_user_valid(r.user, r.user_len)) {
		dovecot_auth_reply_unusable(c, req, "OK without a usable user name", false);
		return;
	} else
		result = DOVECOT_AUTH_OK;
	dovecot_auth_request_complete(req, result, result == DOVECOT_AUTH_OK ? r.user : NULL, NULL,
				      why);
}

/* Replies after the handshake. Like Dovecot's own client, the connection
 * is dropped only for what makes the stream itself unreadable: an unknown
 * command, a missing or non-numeric id, a CONT without data. A reply for an
 * id we do not know is logged and ignored; a reply we cannot use for a known
 * request fails that request alone. */
static bool dovecot_auth_handle_reply(struct dovecot_auth_client *c,
				      const struct dovecot_auth_field *f, size_t nf,
				      bool fields_whole)
{
	enum {
		DOVECOT_AUTH_REPLY_OK,
		DOVECOT_AUTH_REPLY_FAIL,
		DOVECOT_AUTH_REPLY_CONT,
		DOVECOT_AUTH_REPLY_CANCELLED
	} kind;
	if (dovecot_auth_field_is(&f[0], "OK"))
		kind = DOVECOT_AUTH_REPLY_OK;
	else if (dovecot_auth_field_is(&f[0], "FAIL"))
		kind = DOVECOT_AUTH_REPLY_FAIL;
	else if (dovecot_auth_field_is(&f[0], "CONT"))
		kind = DOVECOT_AUTH_REPLY_CONT;
	else if (dovecot_auth_field_is(&f[0], "CANCELLED"))
		kind = DOVECOT_AUTH_REPLY_CANCELLED;
	else {
		dovecot_auth_violation(c, &f[0], "unknown command");
		return false;
	}
	uint32_t id;
	if (nf < 2 || !dovecot_auth_parse_uint(f[1].s, f[1].len, &id)) {
		dovecot_auth_violation(c, &f[0], "bad request id");
		return false;
	}
	if (kind == DOVECOT_AUTH_REPLY_CONT && nf < 3) {
		dovecot_auth_violation(c, &f[0], "CONT without data");
		return false;
	}
	struct dovecot_auth_request *req = id != 0 ? dovecot_auth_hash_find(c, id) : NULL;
	if (req == NULL) {
		dovecot_auth_zombie_expire(c);
		struct dovecot_auth_zombie *z = dovecot_auth_zombie_find(c, id);
		if (z != NULL) {
			/* A late answer to a request we cancelled: expected. A
			 * CONT or a final reply ends Dovecot's side of it. */
			dovecot_auth_zombie_del(c, z);
			return true;
		}
		log_warn("dovecot auth: %s: reply for an unknown request id %u ignored", c->path,
			 (unsigned)id);
		return true;
	}
	bool cont = kind == DOVECOT_AUTH_REPLY_CONT;
	if (req->state != DOVECOT_AUTH_REQ_SENT) {
		dovecot_auth_reply_unusable(c, req, "a second reply to one step", cont);
		return true;
	}
	if (!fields_whole && kind == DOVECOT_AUTH_REPLY_FAIL) {
		/* A failure whatever its fields say: it must count. */
		dovecot_auth_request_complete(req, DOVECOT_AUTH_FAIL, NULL, NULL, NULL);
		return true;
	}
	if (!fields_whole) {
		dovecot_auth_reply_unusable(c, req, "a field with a broken escape", cont);
		return true;
	}
	switch (kind) {
	case DOVECOT_AUTH_REPLY_CONT:
		if (!base64_valid(f[2].s, f[2].len))
			dovecot_auth_reply_unusable(c, req, "a challenge that is not base64", true);
		else
			dovecot_auth_request_complete(req, DOVECOT_AUTH_CONTINUE, NULL, f[2].s,
						      NULL);
		return true;
	case DOVECOT_AUTH_REPLY_OK:
	case DOVECOT_AUTH_REPLY_FAIL:
		dovecot_auth_handle_final(c, req, kind == DOVECOT_AUTH_REPLY_OK, f, nf);
		return true;
	case DOVECOT_AUTH_REPLY_CANCELLED:
	default:
		dovecot_auth_reply_unusable(c, req, "CANCELLED for a request not cancelled", false);
		return true;
	}
}

/* One line without its LF, NUL-terminated in place. Returns false when the
 * connection was dropped. */
static bool dovecot_auth_handle_line(struct dovecot_auth_client *c, char *line, size_t len)
{
	struct dovecot_auth_field f[DOVECOT_AUTH_MAX_FIELDS];
	/* For errors before the fields exist: the command is the prefix. */
	char cmd[17];
	size_t clen = strcspn(line, "\t");
	if (clen > 16)
		clen = 16;
	memcpy(cmd, line, clen);
	cmd[clen] = '\0';
	struct dovecot_auth_field whole = {cmd, clen};
	size_t nf;
	bool fields_whole;
	enum dovecot_auth_split_status st = dovecot_auth_split(
		line, len, c->state == DOVECOT_AUTH_READY, f, &nf, &fields_whole);
	if (st != DOVECOT_AUTH_SPLIT_OK) {
		dovecot_auth_violation(c, &whole, dovecot_auth_split_error(st));
		return false;
	}
	if (c->state == DOVECOT_AUTH_READY)
		return dovecot_auth_handle_reply(c, f, nf, fields_whole);
	return dovecot_auth_handle_handshake(c, f, nf);
}

/* The start of an over-long line: "OK|FAIL|CONT <TAB> id <TAB>", or the
 * stream is unreadable (false, connection dropped). */
static bool dovecot_auth_long_prefix(struct dovecot_auth_client *c, uint32_t *id_r,
				     struct dovecot_auth_field *cmd_r)
{
	c->long_prefix[c->long_prefix_len] = '\0';
	if (!dovecot_auth_long_prefix_parse(c->long_prefix, id_r, cmd_r)) {
		dovecot_auth_violation(c, cmd_r, "line too long");
		return false;
	}
	return true;
}

/* The end of an over-long reply has arrived: judge it by its start. Only
 * its own request suffers: a FAIL stays a failure (it must count against
 * the client), an OK or CONT cannot be read whole and fails temporarily. */
static bool dovecot_auth_handle_long_reply(struct dovecot_auth_client *c)
{
	struct dovecot_auth_field cmd;
	uint32_t id;
	if (!dovecot_auth_long_prefix(c, &id, &cmd))
		return false;
	bool fail = dovecot_auth_field_is(&cmd, "FAIL"), cont = dovecot_auth_field_is(&cmd, "CONT");
	struct dovecot_auth_request *req = id != 0 ? dovecot_auth_hash_find(c, id) : NULL;
	if (req == NULL || req->state != DOVECOT_AUTH_REQ_SENT) {
		log_warn("dovecot auth: %s: over-long reply for request %u ignored", c->path,
			 (unsigned)id);
		if (req != NULL)
			dovecot_auth_reply_unusable(c, req, "a second reply to one step", cont);
		return true;
	}
	if (fail) {
		log_warn("dovecot auth: %s: request %u: over-long FAIL, read as a failure", c->path,
			 (unsigned)id);
		dovecot_auth_request_complete(req, DOVECOT_AUTH_FAIL, NULL, NULL, NULL);
	} else {
		dovecot_auth_reply_unusable(c, req, "an over-long reply", cont);
	}
	return true;
}

static void dovecot_auth_conn_process(struct dovecot_auth_client *c)
{
	unsigned gen = c->generation;
	while (c->generation == gen) {
		char *data = (char *)buf_data(&c->in);
		size_t len = buf_len(&c->in);
		char *nl = len ? memchr(data, '\n', len) : NULL;
		if (c->skipping) {
			size_t n = nl ? (size_t)(nl - data) + 1 : len;
			explicit_bzero(data, n);
			buf_consume(&c->in, n);
			if (nl == NULL)
				return;
			c->skipping = false;
			if (!dovecot_auth_handle_long_reply(c) || c->generation != gen)
				return;
			continue;
		}
		size_t llen = nl ? (size_t)(nl - data) : len;
		if (llen + 1 > DOVECOT_AUTH_MAX_LINE) {
			if (c->state != DOVECOT_AUTH_READY) {
				struct dovecot_auth_field cmd = {data, 16};
				dovecot_auth_violation(c, &cmd, "line too long");
				return;
			}
			c->long_prefix_len = sizeof(c->long_prefix) - 1;
			memcpy(c->long_prefix, data, c->long_prefix_len);
			struct dovecot_auth_field cmd;
			uint32_t id;
			if (!dovecot_auth_long_prefix(c, &id, &cmd))
				return;
			c->skipping = true;
			continue;
		}
		if (nl == NULL)
			return;
		*nl = '\0';
		if (!dovecot_auth_handle_line(c, data, llen) || c->generation != gen)
			return;
		explicit_bzero(data, llen + 1);
		buf_consume(&c->in, llen + 1);
	}
}

/* ---- requests ---- */

static void dovecot_auth_request_deliver(struct dovecot_auth_request *req)
{
	enum dovecot_auth_result result = req->result;
	char *user = req->user, *challenge = req->challenge, *reason = req->reason;
	dovecot_auth_cb *cb = req->cb;
	void *ctx = req->ctx;
	req->user = req->challenge = req->reason = NULL;
	list_remove(&req->link);
	if (result == DOVECOT_AUTH_CONTINUE) {
		req->state = DOVECOT_AUTH_REQ_WAITING;
		list_add_tail(&req->c->waiting, &req->link);
	} else {
		dovecot_auth_request_close(req);
	}
	/* The request's memory lives until its close callback, a later loop
	 * phase, whatever the callback does; nothing below touches it. */
	cb(ctx, result, user, challenge, reason);
	xfree_secret(&user);
	xfree_secret(&challenge);
	xfree_secret(&reason);
}

static void dovecot_auth_request_timer_cb(uv_timer_t *t)
{
	struct dovecot_auth_request *req = t->data;
	struct dovecot_auth_client *c = req->c;
	switch (req->state) {
	case DOVECOT_AUTH_REQ_DEFERRED:
		dovecot_auth_request_deliver(req);
		break;
	case DOVECOT_AUTH_REQ_QUEUED:
		log_warn("dovecot auth: %s: request timed out waiting for the connection", c->path);
		dovecot_auth_request_complete(req, DOVECOT_AUTH_TEMPFAIL, NULL, NULL,
					      "Authentication server timed out");
		break;
	case DOVECOT_AUTH_REQ_SENT: {
		uint32_t id = req->id;
		log_warn("dovecot auth: %s: request %u timed out", c->path, (unsigned)id);
		dovecot_auth_request_complete(req, DOVECOT_AUTH_TEMPFAIL, NULL, NULL,
					      "Authentication server timed out");
		dovecot_auth_send_cancel(c, id);
		break;
	}
	default:
		break;
	}
}

struct dovecot_auth_client *dovecot_auth_client_create(uv_loop_t *loop, const char *socket_path,
						       unsigned request_timeout_ms)
{
	struct dovecot_auth_client *c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->path = xstrdup(socket_path);
	c->timeout_ms = request_timeout_ms ? request_timeout_ms : 1;
	c->state = DOVECOT_AUTH_IDLE;
	c->next_id = 1;
	list_init(&c->queue);
	list_init(&c->sent);
	list_init(&c->deferred);
	list_init(&c->waiting);
	list_init(&c->zombies);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->handles = 1;
	return c;
}

void dovecot_auth_client_destroy(struct dovecot_auth_client **cp)
{
	struct dovecot_auth_client *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	if (c->destroyed)
		return;
	c->destroyed = true;
	dovecot_auth_conn_drop(c, NULL);
	uv_close((uv_handle_t *)&c->timer, dovecot_auth_timer_close_cb);
	/* Everything still live completes now, here: there is no loop turn
	 * left to defer to. */
	struct list_link *lists[] = {&c->deferred, &c->waiting, &c->queue, &c->sent};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		while (!list_empty(lists[i])) {
			struct dovecot_auth_request *req = dovecot_auth_list_req(lists[i]->next);
			dovecot_auth_cb *cb = req->cb;
			void *ctx = req->ctx;
			dovecot_auth_request_close(req);
			cb(ctx, DOVECOT_AUTH_TEMPFAIL, NULL, NULL,
			   "Authentication client shut down");
		}
	}
}

void dovecot_auth_client_connect(struct dovecot_auth_client *c)
{
	if (!c->destroyed && c->state == DOVECOT_AUTH_IDLE)
		dovecot_auth_conn_start(c);
}

bool dovecot_auth_client_ready(const struct dovecot_auth_client *c)
{
	return c->state == DOVECOT_AUTH_READY;
}

const char *dovecot_auth_client_mechs(const struct dovecot_auth_client *c)
{
	return c->mechs;
}

bool dovecot_auth_client_has_mech(const struct dovecot_auth_client *c, const char *mech)
{
	size_t len = strlen(mech);
	return dovecot_auth_mech_name_valid(mech, len, true) &&
	       dovecot_auth_mech_in(c->mechs, mech);
}

static void dovecot_auth_build_params(struct dovecot_auth_request *req,
				      const struct dovecot_auth_request_info *info)
{
	struct buf *b = &req->params;
	/* service= works on every version (2.4.1+ also knows protocol=). */
	dovecot_auth_append_param(b, "service", info->service ? info->service : "smtp");
	if (info->session_id)
		dovecot_auth_append_param(b, "session", info->session_id);
	if (info->local_ip)
		dovecot_auth_append_param(b, "lip", info->local_ip);
	if (info->remote_ip)
		dovecot_auth_append_param(b, "rip", info->remote_ip);
	if (info->local_port > 0 && info->local_port <= 65535)
		buf_printf(b, "\tlport=%u", info->local_port);
	if (info->remote_port > 0 && info->remote_port <= 65535)
		buf_printf(b, "\trport=%u", info->remote_port);
	if (info->real_remote_ip)
		dovecot_auth_append_param(b, "real_rip", info->real_remote_ip);
	if (info->real_remote_port > 0 && info->real_remote_port <= 65535)
		buf_printf(b, "\treal_rport=%u", info->real_remote_port);
	if (info->local_name)
		dovecot_auth_append_param(b, "local_name", info->local_name);
	if (info->secured)
		buf_append_str(b, "\tsecured=tls");
	/* resp= must come last. With protocol minor >= 2 an empty value is an
	 * empty initial response (SMTP "="), distinct from none at all. */
	if (info->initial_resp_b64) {
		buf_append_str(b, "\tresp=");
		buf_append_str(b, info->initial_resp_b64);
	}
}

struct dovecot_auth_request *dovecot_auth_begin(struct dovecot_auth_client *c,
						const struct dovecot_auth_request_info *info,
						dovecot_auth_cb *cb, void *ctx)
{
	if (c->destroyed)
		return NULL;
	struct dovecot_auth_request *req = xcalloc(1, sizeof(*req));
	req->c = c;
	req->cb = cb;
	req->ctx = ctx;
	req->state = DOVECOT_AUTH_REQ_QUEUED;
	uv_timer_init(c->loop, &req->timer);
	req->timer.data = req;
	c->handles++;

	size_t mlen = info->mech ? strlen(info->mech) : 0;
	if (!dovecot_auth_mech_name_valid(info->mech ? info->mech : "", mlen, true)) {
		dovecot_auth_request_complete(req, DOVECOT_AUTH_FAIL, NULL, NULL,
					      "Unsupported authentication mechanism");
		return req;
	}
	for (size_t i = 0; i <= mlen; i++)
		req->mech[i] = (info->mech[i] >= 'a' && info->mech[i] <= 'z')
				       ? (char)(info->mech[i] - 32)
				       : info->mech[i];
	if (info->initial_resp_b64) {
		size_t rlen = strlen(info->initial_resp_b64);
		if (rlen > DOVECOT_AUTH_MAX_RESP || !base64_valid(info->initial_resp_b64, rlen)) {
			dovecot_auth_request_complete(req, DOVECOT_AUTH_FAIL, NULL, NULL,
						      "Invalid base64 data in initial response");
			return req;
		}
	}
	dovecot_auth_build_params(req, info);

	switch (c->state) {
	case DOVECOT_AUTH_READY:
		if (list_empty(&c->queue) && !dovecot_auth_write_full(c)) {
			dovecot_auth_request_send(req, true);
			break;
		}
		/* Dovecot is behind: wait in line (dovecot_auth_send_queued). */
		list_add_tail(&c->queue, &req->link);
		uv_timer_start(&req->timer, dovecot_auth_request_timer_cb, c->timeout_ms, 0);
		break;
	case DOVECOT_AUTH_BACKOFF:
		/* Dovecot is down: say so now, not after the timeout. */
		dovecot_auth_request_complete(req, DOVECOT_AUTH_TEMPFAIL, NULL, NULL,
					      "Can't connect to authentication server");
		break;
	case DOVECOT_AUTH_IDLE:
	case DOVECOT_AUTH_CONNECTING:
	case DOVECOT_AUTH_HANDSHAKE:
		list_add_tail(&c->queue, &req->link);
		uv_timer_start(&req->timer, dovecot_auth_request_timer_cb, c->timeout_ms, 0);
		if (c->state == DOVECOT_AUTH_IDLE)
			dovecot_auth_conn_start(c);
		break;
	}
	return req;
}

void dovecot_auth_continue(struct dovecot_auth_request *req, const char *response_b64)
{
	struct dovecot_auth_client *c = req->c;
	if (c->destroyed)
		return; /* it was completed with TEMPFAIL already */
	if (req->state == DOVECOT_AUTH_REQ_LOST) {
		dovecot_auth_request_complete(req, DOVECOT_AUTH_TEMPFAIL, NULL, NULL,
					      "Connection lost to authentication server");
		return;
	}
	if (req->state != DOVECOT_AUTH_REQ_WAITING) {
		/* A caller bug; the step under way still answers once. */
		log_err("dovecot auth: BUG: continue without a pending challenge");
		return;
	}
	size_t len = strlen(response_b64);
	if (len > DOVECOT_AUTH_MAX_RESP || !base64_valid(response_b64, len)) {
		uint32_t id = req->id;
		dovecot_auth_request_complete(req, DOVECOT_AUTH_FAIL, NULL, NULL,
					      "Invalid base64 data in continued response");
		dovecot_auth_send_cancel(c, id);
		return;
	}
	list_remove(&req->link);
	list_add_tail(&c->sent, &req->link);
	req->state = DOVECOT_AUTH_REQ_SENT;
	uv_timer_start(&req->timer, dovecot_auth_request_timer_cb, c->timeout_ms, 0);

	struct buf line = BUF_INIT;
	buf_printf(&line, "CONT\t%u\t", (unsigned)req->id);
	buf_append(&line, response_b64, len);
	buf_append(&line, "\n", 1);
	dovecot_auth_conn_send(c, buf_data(&line), buf_len(&line));
	buf_wipe(&line);
}

void dovecot_auth_abort(struct dovecot_auth_request **reqp)
{
	struct dovecot_auth_request *req = *reqp;
	if (req == NULL)
		return;
	*reqp = NULL;
	if (req->state == DOVECOT_AUTH_REQ_CLOSING)
		return;
	struct dovecot_auth_client *c = req->c;
	bool known = req->in_hash;
	uint32_t id = req->id;
	dovecot_auth_request_close(req);
	/* Dovecot knows the request: tell it, and remember the id so a reply
	 * already on its way is recognised as late, not as garbage. */
	if (known)
		dovecot_auth_send_cancel(c, id);
}

void dovecot_auth_detach(struct dovecot_auth_request *req, dovecot_auth_cb *cb, void *ctx)
{
	req->cb = cb;
	req->ctx = ctx;
}

void dovecot_auth_client_fake_connect(struct dovecot_auth_client *c)
{
	if (c->destroyed || c->state != DOVECOT_AUTH_IDLE)
		return;
	dovecot_auth_handshake_reset(c);
	c->fake = true;
	c->state = DOVECOT_AUTH_HANDSHAKE;
}

void dovecot_auth_client_feed(struct dovecot_auth_client *c, const void *data, size_t len)
{
	if (c->destroyed || !c->fake ||
	    (c->state != DOVECOT_AUTH_HANDSHAKE && c->state != DOVECOT_AUTH_READY))
		return;
	buf_append(&c->in, data, len);
	dovecot_auth_conn_process(c);
}
