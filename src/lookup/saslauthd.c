#include "config.h"
#include "lookup/saslauthd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <gnutls/gnutls.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"

/* LOGIN's two prompts, "Username:" and "Password:", in base64 (as Postfix
 * and Cyrus send them). */
#define SASLAUTHD_PROMPT_USER "VXNlcm5hbWU6"
#define SASLAUTHD_PROMPT_PASS "UGFzc3dvcmQ6"

#define SASLAUTHD_LOST "Connection lost to authentication server"
#define SASLAUTHD_DOWN "authentication server not available"
#define SASLAUTHD_SLOW "Authentication server timed out"
#define SASLAUTHD_BAD "invalid reply from authentication server"

struct saslauthd_client {
	uv_loop_t *loop;
	char *path, *service, *realm;
	unsigned timeout_ms;
	struct list_link live; /* requests not yet final */
	bool destroying;
};

enum saslauthd_state {
	SA_DEFER,  /* an answer waits for the zero timer */
	SA_CLIENT, /* CONTINUE given: waiting for saslauthd_continue() */
	SA_IO,     /* the pair is with saslauthd */
	SA_DEAD,   /* final or aborted: waiting for the handles to close */
};

struct saslauthd_request {
	struct list_link link;
	struct saslauthd_client *c;
	dovecot_auth_cb *cb;
	void *ctx;
	enum saslauthd_state state;
	bool plain;       /* else LOGIN */
	bool have_login;  /* LOGIN: the user name came */
	unsigned handles; /* open libuv handles; freed when 0 */
	uv_timer_t timer; /* deferred answers, then the request timeout */
	uv_pipe_t pipe;
	bool pipe_used;
	uv_connect_t conn;
	uv_write_t wr;
	/* the deferred answer */
	enum dovecot_auth_result res;
	const char *challenge;
	const char *reason;
	char login[SASLAUTHD_MAX_FIELD + 1];
	char password[SASLAUTHD_MAX_FIELD + 1];
	uint8_t out[4 * (2 + SASLAUTHD_MAX_FIELD)];
	size_t out_len;
	uint8_t in[2 + SASLAUTHD_MAX_REPLY];
	size_t in_len;
};

struct saslauthd_client *saslauthd_client_create(uv_loop_t *loop, const char *socket_path,
						 const char *service, const char *realm,
						 unsigned request_timeout_ms)
{
	struct saslauthd_client *c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->path = xstrdup(socket_path);
	c->service = xstrdup(service ? service : "smtp");
	c->realm = xstrdup(realm ? realm : "");
	c->timeout_ms = request_timeout_ms;
	list_init(&c->live);
	return c;
}

const char *saslauthd_client_mechs(const struct saslauthd_client *c)
{
	(void)c;
	return "PLAIN LOGIN";
}

/* ---- ending a request ---- */

static void saslauthd_close_cb(uv_handle_t *h)
{
	struct saslauthd_request *r = h->data;
	if (--r->handles > 0)
		return;
	explicit_bzero(r, sizeof(*r));
	free(r);
}

/* Final: no more callbacks from the loop, secrets wiped, handles closing.
 * The memory (and so login) lives until the close callbacks run. */
static void saslauthd_release(struct saslauthd_request *r)
{
	list_remove(&r->link);
	r->state = SA_DEAD;
	explicit_bzero(r->password, sizeof(r->password));
	explicit_bzero(r->out, sizeof(r->out));
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->timer, saslauthd_close_cb);
	if (r->pipe_used)
		uv_close((uv_handle_t *)&r->pipe, saslauthd_close_cb);
}

static void saslauthd_deliver(struct saslauthd_request *r, enum dovecot_auth_result res,
			      const char *challenge, const char *reason)
{
	if (res == DOVECOT_AUTH_CONTINUE) {
		r->state = SA_CLIENT;
		r->cb(r->ctx, res, NULL, challenge, NULL);
		return;
	}
	saslauthd_release(r);
	r->cb(r->ctx, res, res == DOVECOT_AUTH_OK ? r->login : NULL, NULL, reason);
}

static void saslauthd_timer_cb(uv_timer_t *t)
{
	struct saslauthd_request *r = t->data;
	if (r->state == SA_DEFER)
		saslauthd_deliver(r, r->res, r->challenge, r->reason);
	else if (r->state == SA_IO)
		saslauthd_deliver(r, DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_SLOW);
}

/* Answers on the next loop turn, never inside the caller's call. */
static void saslauthd_defer(struct saslauthd_request *r, enum dovecot_auth_result res,
			    const char *challenge, const char *reason)
{
	r->state = SA_DEFER;
	r->res = res;
	r->challenge = challenge;
	r->reason = reason;
	uv_timer_start(&r->timer, saslauthd_timer_cb, 0, 0);
}

/* ---- talking to saslauthd ---- */

/* Appends one counted string; false (nothing written) if it is longer than
 * saslauthd takes or would not fit the request buffer. */
static bool saslauthd_put(struct saslauthd_request *r, const char *s)
{
	size_t n = strlen(s);
	if (n > SASLAUTHD_MAX_FIELD || r->out_len > sizeof(r->out) ||
	    sizeof(r->out) - r->out_len < 2 + n)
		return false;
	r->out[r->out_len++] = (uint8_t)(n >> 8);
	r->out[r->out_len++] = (uint8_t)n;
	memcpy(r->out + r->out_len, s, n);
	r->out_len += n;
	return true;
}

static void saslauthd_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)hint;
	struct saslauthd_request *r = h->data;
	*buf = uv_buf_init((char *)r->in + r->in_len, (unsigned)(sizeof(r->in) - r->in_len));
}

static void saslauthd_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct saslauthd_request *r = s->data;
	if (r->state != SA_IO)
		return;
	if (nread < 0) {
		/* EOF before a whole answer, or an error: nothing was decided. */
		if (r->in_len > 0)
			log_warn("saslauthd %s: answer cut short after %zu bytes", r->c->path,
				 r->in_len);
		saslauthd_deliver(r, DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_LOST);
		return;
	}
	r->in_len += (size_t)nread;
	if (r->in_len < 2)
		return;
	size_t n = (size_t)r->in[0] << 8 | r->in[1];
	if (n > SASLAUTHD_MAX_REPLY) {
		log_warn("saslauthd %s: answer of %zu bytes is longer than %d", r->c->path, n,
			 SASLAUTHD_MAX_REPLY);
		saslauthd_deliver(r, DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_BAD);
		return;
	}
	if (r->in_len < 2 + n)
		return;
	const char *text = (const char *)r->in + 2;
	bool word = n >= 2 && (n == 2 || text[2] == ' ');
	if (word && memcmp(text, "OK", 2) == 0) {
		saslauthd_deliver(r, DOVECOT_AUTH_OK, NULL, NULL);
	} else if (word && memcmp(text, "NO", 2) == 0) {
		/* Its text ("authentication failed") is for the log of
		   saslauthd; the client gets the usual 535. */
		saslauthd_deliver(r, DOVECOT_AUTH_FAIL, NULL, NULL);
	} else {
		char shown[64];
		log_sanitize(shown, sizeof(shown), text, n < 40 ? n : 40);
		log_warn("saslauthd %s: answer is neither OK nor NO: \"%s\"", r->c->path, shown);
		saslauthd_deliver(r, DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_BAD);
	}
}

static void saslauthd_write_cb(uv_write_t *w, int status)
{
	/* A failed write shows as EOF or the timeout on the read side. */
	(void)status;
	struct saslauthd_request *r = w->data;
	explicit_bzero(r->out, sizeof(r->out));
}

static void saslauthd_connect_cb(uv_connect_t *cr, int status)
{
	struct saslauthd_request *r = cr->data;
	if (r->state != SA_IO)
		return;
	if (status < 0) {
		saslauthd_deliver(r, DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_DOWN);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)r->out, (unsigned)r->out_len);
	r->wr.data = r;
	int rc = uv_write(&r->wr, (uv_stream_t *)&r->pipe, &b, 1, saslauthd_write_cb);
	if (rc == 0)
		rc = uv_read_start((uv_stream_t *)&r->pipe, saslauthd_alloc_cb, saslauthd_read_cb);
	if (rc < 0)
		saslauthd_deliver(r, DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_LOST);
}

/* One connection per request, as saslauthd expects. */
static void saslauthd_start(struct saslauthd_request *r)
{
	struct saslauthd_client *c = r->c;
	/* As Cyrus SASL's own client does: "user@realm" is sent as user and
	   realm; a login without '@' gets the configured realm. */
	char user[SASLAUTHD_MAX_FIELD + 1];
	const char *realm = c->realm;
	memcpy(user, r->login, sizeof(user));
	char *at = strrchr(user, '@');
	if (at != NULL) {
		*at = '\0';
		realm = at + 1;
	}
	r->out_len = 0;
	bool fits = saslauthd_put(r, user) && saslauthd_put(r, r->password) &&
		    saslauthd_put(r, c->service) && saslauthd_put(r, realm);
	explicit_bzero(r->password, sizeof(r->password));
	if (!fits) {
		/* config_load() refuses a longer service or realm: not reached */
		explicit_bzero(r->out, sizeof(r->out));
		saslauthd_defer(r, DOVECOT_AUTH_TEMPFAIL, NULL, "saslauthd request too long");
		return;
	}
	r->state = SA_IO;
	uv_pipe_init(c->loop, &r->pipe, 0);
	r->pipe.data = r;
	r->pipe_used = true;
	r->handles++;
	r->conn.data = r;
	uv_pipe_connect(&r->conn, &r->pipe, c->path, saslauthd_connect_cb);
	uv_timer_start(&r->timer, saslauthd_timer_cb, c->timeout_ms, 0);
}

/* ---- the mechanisms ---- */

/* A login or password saslauthd can take: 1..256 bytes, no NUL (it reads C
 * strings: "a\0b" would be checked as "a"); a login without control
 * characters (it is logged and becomes the session's user). */
static bool saslauthd_take(char *dst, const uint8_t *p, size_t n, bool login)
{
	if (n == 0 || n > SASLAUTHD_MAX_FIELD || memchr(p, '\0', n) != NULL)
		return false;
	if (login)
		for (size_t i = 0; i < n; i++)
			if (p[i] < 0x20 || p[i] == 0x7f)
				return false;
	memcpy(dst, p, n);
	dst[n] = '\0';
	return true;
}

/* RFC 4616: authzid NUL authcid NUL passwd. An authzid other than the
 * authcid would be acting as another user, which saslauthd cannot judge. */
static bool saslauthd_plain(struct saslauthd_request *r, const uint8_t *p, size_t n)
{
	const uint8_t *nul1 = memchr(p, '\0', n);
	if (nul1 == NULL)
		return false;
	const uint8_t *authc = nul1 + 1;
	const uint8_t *nul2 = memchr(authc, '\0', n - (size_t)(authc - p));
	if (nul2 == NULL)
		return false;
	size_t zlen = (size_t)(nul1 - p), clen = (size_t)(nul2 - authc);
	const uint8_t *pw = nul2 + 1;
	size_t pwlen = n - (size_t)(pw - p);
	if (zlen > 0 && (zlen != clen || memcmp(p, authc, clen) != 0))
		return false;
	return saslauthd_take(r->login, authc, clen, true) &&
	       saslauthd_take(r->password, pw, pwlen, false);
}

/* One client response (base64, already checked by the caller or not). */
static void saslauthd_step(struct saslauthd_request *r, const char *b64)
{
	gnutls_datum_t out = {NULL, 0};
	size_t blen = strlen(b64);
	if (blen > 0) {
		gnutls_datum_t in = {(unsigned char *)b64, (unsigned)blen};
		if (gnutls_base64_decode2(&in, &out) < 0) {
			saslauthd_defer(r, DOVECOT_AUTH_FAIL, NULL, NULL);
			return;
		}
	}
	const uint8_t *p = out.data ? out.data : (const uint8_t *)"";
	bool ok;
	bool ready = true;
	if (r->plain) {
		ok = saslauthd_plain(r, p, out.size);
	} else if (!r->have_login) {
		/* An unusable name still gets the password prompt: the
		   answer must not tell names apart. */
		ok = true;
		if (!saslauthd_take(r->login, p, out.size, true))
			r->login[0] = '\0';
		r->have_login = true;
		ready = false;
	} else {
		ok = r->login[0] != '\0' && saslauthd_take(r->password, p, out.size, false);
	}
	if (out.data != NULL) {
		explicit_bzero(out.data, out.size);
		gnutls_free(out.data);
	}
	if (!ok)
		saslauthd_defer(r, DOVECOT_AUTH_FAIL, NULL, NULL);
	else if (!ready)
		saslauthd_defer(r, DOVECOT_AUTH_CONTINUE, SASLAUTHD_PROMPT_PASS, NULL);
	else
		saslauthd_start(r);
}

struct saslauthd_request *saslauthd_begin(struct saslauthd_client *c,
					  const struct dovecot_auth_request_info *info,
					  dovecot_auth_cb *cb, void *ctx)
{
	if (c->destroying)
		return NULL;
	struct saslauthd_request *r = xcalloc(1, sizeof(*r));
	r->c = c;
	r->cb = cb;
	r->ctx = ctx;
	uv_timer_init(c->loop, &r->timer);
	r->timer.data = r;
	r->handles = 1;
	list_add_tail(&c->live, &r->link);
	r->plain = strcasecmp(info->mech, "PLAIN") == 0;
	if (!r->plain && strcasecmp(info->mech, "LOGIN") != 0)
		saslauthd_defer(r, DOVECOT_AUTH_FAIL, NULL, NULL);
	else if (info->initial_resp_b64 != NULL)
		saslauthd_step(r, info->initial_resp_b64);
	else
		saslauthd_defer(r, DOVECOT_AUTH_CONTINUE, r->plain ? "" : SASLAUTHD_PROMPT_USER,
				NULL);
	return r;
}

void saslauthd_continue(struct saslauthd_request *r, const char *response_b64)
{
	if (r->state == SA_DEAD)
		return;
	if (r->state != SA_CLIENT) {
		/* a second continue for one challenge: the caller's bug */
		saslauthd_defer(r, DOVECOT_AUTH_TEMPFAIL, NULL, "out of sequence");
		return;
	}
	saslauthd_step(r, response_b64);
}

void saslauthd_abort(struct saslauthd_request **rp)
{
	struct saslauthd_request *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	if (r->state != SA_DEAD)
		saslauthd_release(r);
}

void saslauthd_detach(struct saslauthd_request *r, dovecot_auth_cb *cb, void *ctx)
{
	r->cb = cb;
	r->ctx = ctx;
}

void saslauthd_client_destroy(struct saslauthd_client **cp)
{
	struct saslauthd_client *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	c->destroying = true;
	/* One at a time: a callback may abort any other request. */
	struct list_link *pos;
	while ((pos = list_first(&c->live)) != NULL)
		saslauthd_deliver(list_entry(pos, struct saslauthd_request, link),
				  DOVECOT_AUTH_TEMPFAIL, NULL, SASLAUTHD_LOST);
	free(c->path);
	free(c->service);
	free(c->realm);
	free(c);
}
