/* lookup/saslauthd.c against an in-process fake saslauthd on the same loop:
 * the contract of lookup/saslauthd.h (never a callback inside begin or
 * continue, one per step, abort silent, destroy completes what is live,
 * every wait bounded), PLAIN and LOGIN, the request as four counted
 * strings, and no handle left behind (docs/design.md invariant 9). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/base64.h"
#include "core/buf.h"
#include "core/log.h"
#include "lookup/saslauthd.h"
#include "loop-wait.h"
#include "tap.h"

enum fake_mode { FAKE_OK, FAKE_NO, FAKE_SILENT };

static struct fake {
	uv_pipe_t server;
	char path[108];
	enum fake_mode mode;
	char fields[4][300];
	unsigned requests;
	uv_pipe_t *held; /* a SILENT connection, closed at the end */
} fk;

struct fake_conn {
	uv_pipe_t pipe;
	uv_write_t wr;
	unsigned char in[2048];
	size_t len;
	bool answered;
};

static void fake_close_cb(uv_handle_t *h) { free(h->data); }

static void fake_write_cb(uv_write_t *w, int status)
{
	(void)status;
	struct fake_conn *fc = w->data;
	uv_close((uv_handle_t *)&fc->pipe, fake_close_cb);
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct fake_conn *fc = h->data;
	*b = uv_buf_init((char *)fc->in + fc->len, (unsigned)(sizeof(fc->in) - fc->len));
}

/* Whether the four counted strings are all there; copies them out. */
static bool fake_parse(struct fake_conn *fc)
{
	size_t off = 0;
	for (int i = 0; i < 4; i++) {
		if (fc->len < off + 2)
			return false;
		size_t n = (size_t)fc->in[off] << 8 | fc->in[off + 1];
		if (fc->len < off + 2 + n || n >= sizeof(fk.fields[i]))
			return false;
		memcpy(fk.fields[i], fc->in + off + 2, n);
		fk.fields[i][n] = '\0';
		off += 2 + n;
	}
	return true;
}

static void fake_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	(void)b;
	struct fake_conn *fc = s->data;
	if (nread < 0) {
		if (!uv_is_closing((uv_handle_t *)s)) {
			if (fk.held == &fc->pipe)
				fk.held = NULL;
			uv_close((uv_handle_t *)s, fake_close_cb);
		}
		return;
	}
	fc->len += (size_t)nread;
	if (fc->answered || !fake_parse(fc))
		return;
	fc->answered = true;
	fk.requests++;
	if (fk.mode == FAKE_SILENT) {
		fk.held = &fc->pipe;
		return;
	}
	static char ok[] = "\0\x0bOK Success", no[] = "\0\x02NO";
	uv_buf_t r = fk.mode == FAKE_OK ? uv_buf_init(ok, 13) : uv_buf_init(no, 4);
	fc->wr.data = fc;
	uv_write(&fc->wr, s, &r, 1, fake_write_cb);
}

static void fake_conn_cb(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct fake_conn *fc = calloc(1, sizeof(*fc));
	uv_pipe_init(loop, &fc->pipe, 0);
	fc->pipe.data = fc;
	uv_accept(server, (uv_stream_t *)&fc->pipe);
	uv_read_start((uv_stream_t *)&fc->pipe, fake_alloc, fake_read);
}

static void fake_start(void)
{
	snprintf(fk.path, sizeof(fk.path), "/tmp/test-saslauthd.%ld.sock", (long)getpid());
	unlink(fk.path);
	uv_pipe_init(loop, &fk.server, 0);
	uv_pipe_bind(&fk.server, fk.path);
	uv_listen((uv_stream_t *)&fk.server, 16, fake_conn_cb);
}

/* ---- the client side ---- */

static struct answer {
	unsigned calls;
	enum dovecot_auth_result res;
	char user[300];
	char challenge[64];
	char reason[128];
} an;

static void cb(void *ctx, enum dovecot_auth_result res, const char *user, const char *challenge,
	       const char *reason)
{
	struct answer *a = ctx;
	a->calls++;
	a->res = res;
	snprintf(a->user, sizeof(a->user), "%s", user ? user : "");
	snprintf(a->challenge, sizeof(a->challenge), "%s", challenge ? challenge : "");
	snprintf(a->reason, sizeof(a->reason), "%s", reason ? reason : "");
}

static struct saslauthd_request *begin(struct saslauthd_client *c, const char *mech,
				       const char *ir)
{
	memset(&an, 0, sizeof(an));
	struct dovecot_auth_request_info info = {.mech = mech, .initial_resp_b64 = ir};
	return saslauthd_begin(c, &info, cb, &an);
}

int main(void)
{
	log_open(LOG_TARGET_STDERR, 0, LOG_ERR);
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	fake_start();
	struct saslauthd_client *c = saslauthd_client_create(loop, fk.path, "smtp", "realm.example",
							     300);
	is_str(saslauthd_client_mechs(c), "PLAIN LOGIN", "mechanisms");

	/* PLAIN with an initial response: "\0alice\0secret" */
	begin(c, "PLAIN", "AGFsaWNlAHNlY3JldA==");
	is_int(an.calls, 0, "PLAIN: no callback inside begin");
	WAIT(an.calls > 0, 2000);
	ok(an.calls == 1 && an.res == DOVECOT_AUTH_OK, "PLAIN: OK");
	is_str(an.user, "alice", "... the user is the login as typed");
	is_str(fk.fields[0], "alice", "request: login");
	is_str(fk.fields[1], "secret", "request: password");
	is_str(fk.fields[2], "smtp", "request: service");
	is_str(fk.fields[3], "realm.example", "request: the configured realm (login without '@')");

	/* "\0bob@example.org\0pw": the realm comes from the login */
	begin(c, "PLAIN", "AGJvYkBleGFtcGxlLm9yZwBwdw==");
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_OK && !strcmp(fk.fields[0], "bob") &&
	   !strcmp(fk.fields[3], "example.org"), "user@realm is sent as user and realm");
	is_str(an.user, "bob@example.org", "... the user stays as typed");

	/* LOGIN, step by step */
	struct saslauthd_request *r = begin(c, "LOGIN", NULL);
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_CONTINUE, "LOGIN: CONTINUE");
	is_str(an.challenge, "VXNlcm5hbWU6", "... Username:");
	an.calls = 0;
	saslauthd_continue(r, "Y2Fyb2w="); /* carol */
	is_int(an.calls, 0, "no callback inside continue");
	WAIT(an.calls > 0, 2000);
	is_str(an.challenge, "UGFzc3dvcmQ6", "... Password:");
	an.calls = 0;
	fk.mode = FAKE_NO;
	saslauthd_continue(r, "d3Jvbmc="); /* wrong */
	WAIT(an.calls > 0, 2000);
	ok(an.calls == 1 && an.res == DOVECOT_AUTH_FAIL, "LOGIN: NO is FAIL");
	is_str(fk.fields[0], "carol", "... the name from the first step");

	/* refused without asking */
	unsigned before = fk.requests;
	begin(c, "PLAIN", "YQBiAGM="); /* "a\0b\0c": authzid a != authcid b */
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_FAIL && fk.requests == before, "PLAIN acting as another: FAIL, not sent");
	begin(c, "CRAM-MD5", NULL);
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_FAIL, "a mechanism saslauthd cannot feed: FAIL");

	/* the longest of each field: sent whole, the login kept whole */
	char big[SASLAUTHD_MAX_FIELD + 2];
	memset(big, 'u', SASLAUTHD_MAX_FIELD + 1);
	big[SASLAUTHD_MAX_FIELD + 1] = '\0';
	struct buf plain = BUF_INIT, b64 = BUF_INIT;
	buf_append(&plain, "", 1);
	buf_append(&plain, big, SASLAUTHD_MAX_FIELD); /* login: 256 bytes */
	buf_append(&plain, "", 1);
	buf_append(&plain, big, SASLAUTHD_MAX_FIELD); /* password: 256 bytes */
	base64_encode(&b64, buf_data(&plain), buf_len(&plain));
	buf_append(&b64, "", 1);
	char svc[SASLAUTHD_MAX_FIELD + 1];
	memset(svc, 's', SASLAUTHD_MAX_FIELD);
	svc[SASLAUTHD_MAX_FIELD] = '\0';
	struct saslauthd_client *cbig = saslauthd_client_create(loop, fk.path, svc, svc, 300);
	fk.mode = FAKE_OK;
	begin(cbig, "PLAIN", (const char *)buf_data(&b64));
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_OK && strlen(an.user) == SASLAUTHD_MAX_FIELD,
	   "four 256-byte fields: sent, OK, the user whole (%zu bytes)", strlen(an.user));
	ok(strlen(fk.fields[0]) == SASLAUTHD_MAX_FIELD && strlen(fk.fields[3]) == SASLAUTHD_MAX_FIELD,
	   "... every field arrived whole");
	saslauthd_client_destroy(&cbig);
	/* a service or realm longer than saslauthd takes (config_load()
	   refuses it; the client must not write past its buffer either) */
	char huge[3001];
	memset(huge, 'h', 3000);
	huge[3000] = '\0';
	cbig = saslauthd_client_create(loop, fk.path, huge, huge, 300);
	before = fk.requests;
	begin(cbig, "PLAIN", (const char *)buf_data(&b64));
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_TEMPFAIL && fk.requests == before,
	   "a 3000-byte service and realm: TEMPFAIL, nothing sent");
	saslauthd_client_destroy(&cbig);
	/* a 257-byte login: refused, never cut */
	buf_reset(&plain);
	buf_reset(&b64);
	buf_append(&plain, "", 1);
	buf_append(&plain, big, SASLAUTHD_MAX_FIELD + 1);
	buf_append(&plain, "\0pw", 3);
	base64_encode(&b64, buf_data(&plain), buf_len(&plain));
	buf_append(&b64, "", 1);
	begin(c, "PLAIN", (const char *)buf_data(&b64));
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_FAIL && fk.requests == before, "a 257-byte login: FAIL, not sent");
	buf_free(&plain);
	buf_free(&b64);

	/* silent saslauthd: the timeout */
	fk.mode = FAKE_SILENT;
	begin(c, "PLAIN", "AGFsaWNlAHNlY3JldA==");
	WAIT(an.calls > 0, 3000);
	ok(an.calls == 1 && an.res == DOVECOT_AUTH_TEMPFAIL, "no answer: TEMPFAIL after the timeout");
	is_str(an.reason, "Authentication server timed out", "... reason");

	/* abort while saslauthd judges: no callback, ever */
	r = begin(c, "PLAIN", "AGFsaWNlAHNlY3JldA==");
	SETTLE(50);
	saslauthd_abort(&r);
	ok(r == NULL, "abort clears the pointer");
	SETTLE(500);
	is_int(an.calls, 0, "aborted: no callback, not even the timeout");

	/* destroy: what is live completes inside destroy */
	begin(c, "PLAIN", "AGFsaWNlAHNlY3JldA==");
	SETTLE(50);
	saslauthd_client_destroy(&c);
	ok(an.calls == 1 && an.res == DOVECOT_AUTH_TEMPFAIL && c == NULL,
	   "destroy: the live request gets TEMPFAIL at once");

	/* saslauthd not there */
	c = saslauthd_client_create(loop, "/nonexistent/saslauthd/mux", NULL, NULL, 300);
	begin(c, "PLAIN", "AGFsaWNlAHNlY3JldA==");
	WAIT(an.calls > 0, 2000);
	ok(an.res == DOVECOT_AUTH_TEMPFAIL, "no socket: TEMPFAIL");
	is_str(an.reason, "authentication server not available", "... reason");
	saslauthd_client_destroy(&c);

	if (fk.held != NULL)
		uv_close((uv_handle_t *)fk.held, fake_close_cb);
	uv_close((uv_handle_t *)&fk.server, NULL);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	unlink(fk.path);
	ok(uv_loop_close(loop) == 0, "no handle left open, nothing left on the loop");
	return done_testing();
}
