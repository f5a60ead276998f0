/* test-dovecot-auth: the Dovecot auth client against a scripted fake Dovecot
 * listening on a temporary UNIX socket, driven from the same libuv loop.
 *
 * Rules defended: docs/design.md invariant 4 (Dovecot down -> TEMPFAIL, promptly,
 * and reconnect by itself), 8 (values tab-escaped, base64 validated), 9
 * (every request completes exactly once: timeouts, drops; aborted requests
 * never call back); docs/dovecot-auth.md (2.3 and 2.4 handshakes,
 * private mechanisms), §3 (AUTH line, resp= last, empty initial response),
 * §4 (OK+nologin is a refusal, code=temp_fail), §6 (multiplexing, late
 * replies). Ends by checking that no libuv handle is left open. */
#include "config.h"

#include "core/buf.h"
#include "core/log.h"
#include "lookup/dovecot_auth.h"
#include "tap.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop-wait.h"

/* ---- the fake Dovecot ---- */
enum fake_greeting {
	GREET_NONE, /* the test script writes everything itself */
	GREET_23,   /* Dovecot 2.3: everything at once, on connect */
	GREET_24,   /* Dovecot 2.4: VERSION, rest after the client's VERSION */
};

struct fake_conn {
	uv_pipe_t pipe;
	struct fake_srv *srv;
	struct fake_conn *next; /* all open connections */
	struct buf in; /* what the client sent, not yet taken */
	bool eof, closed, greeted;
};

struct fake_srv {
	uv_pipe_t listener;
	char path[108];
	bool listening;
	enum fake_greeting greeting;
	struct fake_conn *conn; /* the latest connection */
	struct fake_conn *all;
	int accepted;
};

static const char greet_rest[] =
	"MECH\tPLAIN\tplaintext\n"
	"MECH\tLOGIN\tplaintext\n"
	"MECH\tAPOP\tprivate\n"
	"MECH\tCRAM-MD5\tdictionary\tactive\n"
	"SPID\t1204\n"
	"CUID\t57\n"
	"COOKIE\t8c6b0e7fe6a49a1d4b1a0c2f3e5d7a90\n"
	"DONE\n";

static void fake_write_cb(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void fake_send(struct fake_conn *fc, const char *s)
{
	if (fc == NULL || fc->closed)
		return;
	size_t n = strlen(s);
	uv_write_t *w = xmalloc(sizeof(*w) + n);
	char *data = (char *)(w + 1);
	memcpy(data, s, n);
	uv_buf_t b = uv_buf_init(data, (unsigned)n);
	if (uv_write(w, (uv_stream_t *)&fc->pipe, &b, 1, fake_write_cb) < 0)
		free(w);
}

static void fake_conn_close_cb(uv_handle_t *h)
{
	struct fake_conn *fc = h->data;
	struct fake_conn **p = &fc->srv->all;
	while (*p != fc)
		p = &(*p)->next;
	*p = fc->next;
	buf_free(&fc->in);
	free(fc);
}

static void fake_close(struct fake_conn *fc)
{
	if (fc == NULL || fc->closed)
		return;
	fc->closed = true;
	if (fc->srv->conn == fc)
		fc->srv->conn = NULL;
	uv_close((uv_handle_t *)&fc->pipe, fake_conn_close_cb);
}

static void fake_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct fake_conn *fc = h->data;
	(void)sz;
	*b = uv_buf_init((char *)buf_reserve(&fc->in, 65536), 65536);
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct fake_conn *fc = s->data;
	(void)b;
	if (n > 0) {
		buf_commit(&fc->in, (size_t)n);
		if (fc->srv->greeting == GREET_24 && !fc->greeted &&
		    memmem(buf_data(&fc->in), buf_len(&fc->in), "VERSION\t1\t", 10) != NULL) {
			fc->greeted = true;
			fake_send(fc, greet_rest);
		}
	} else if (n < 0) {
		fc->eof = true;
		uv_read_stop(s);
	}
}

static void fake_on_connection(uv_stream_t *l, int status)
{
	struct fake_srv *srv = l->data;
	if (status < 0)
		return;
	struct fake_conn *fc = xcalloc(1, sizeof(*fc));
	fc->srv = srv;
	fc->next = srv->all;
	srv->all = fc;
	uv_pipe_init(loop, &fc->pipe, 0);
	fc->pipe.data = fc;
	if (uv_accept(l, (uv_stream_t *)&fc->pipe) < 0) {
		fake_close(fc);
		return;
	}
	/* Keep older connections open until the test closes them. */
	srv->conn = fc;
	srv->accepted++;
	uv_read_start((uv_stream_t *)&fc->pipe, fake_alloc, fake_read);
	if (srv->greeting == GREET_23)
		fake_send(fc, "VERSION\t1\t2\n"), fake_send(fc, greet_rest);
	else if (srv->greeting == GREET_24)
		fake_send(fc, "VERSION\t1\t3\n");
}

static void fake_start(struct fake_srv *srv)
{
	unlink(srv->path);
	uv_pipe_init(loop, &srv->listener, 0);
	srv->listener.data = srv;
	if (uv_pipe_bind(&srv->listener, srv->path) < 0 ||
	    uv_listen((uv_stream_t *)&srv->listener, 64, fake_on_connection) < 0) {
		printf("Bail out! cannot listen on %s\n", srv->path);
		exit(1);
	}
	srv->listening = true;
}

static void fake_listener_closed(uv_handle_t *h) { (void)h; }

static void fake_stop(struct fake_srv *srv)
{
	if (srv->listening) {
		uv_close((uv_handle_t *)&srv->listener, fake_listener_closed);
		srv->listening = false;
	}
	for (struct fake_conn *fc = srv->all; fc != NULL; fc = fc->next)
		fake_close(fc);
	unlink(srv->path);
}

/* Takes the next line the client sent (without LF) into out. */
static bool fake_line(struct fake_conn *fc, char *out, size_t outsz)
{
	if (fc == NULL)
		return false;
	const char *d = (const char *)buf_data(&fc->in);
	const char *nl = buf_len(&fc->in) ? memchr(d, '\n', buf_len(&fc->in)) : NULL;
	if (nl == NULL)
		return false;
	size_t n = (size_t)(nl - d);
	if (n >= outsz)
		n = outsz - 1;
	memcpy(out, d, n);
	out[n] = '\0';
	buf_consume(&fc->in, (size_t)(nl - d) + 1);
	return true;
}

static bool fake_has_line(struct fake_conn *fc)
{
	return fc != NULL && buf_len(&fc->in) > 0 && memchr(buf_data(&fc->in), '\n', buf_len(&fc->in)) != NULL;
}

static int fake_count_lines(struct fake_conn *fc)
{
	int n = 0;
	if (fc == NULL)
		return 0;
	const uint8_t *d = buf_data(&fc->in);
	for (size_t i = 0; i < buf_len(&fc->in); i++)
		n += d[i] == '\n';
	return n;
}

/* Waits for and returns the next client line ("" on timeout). */
static char line[20000];
static const char *next_line(struct fake_srv *srv)
{
	WAIT(fake_has_line(srv->conn), 2000);
	if (!fake_line(srv->conn, line, sizeof(line)))
		line[0] = '\0';
	return line;
}

/* The next client line that is not part of a handshake. */
static const char *next_req(struct fake_srv *srv)
{
	const char *l;
	do
		l = next_line(srv);
	while (strncmp(l, "VERSION\t", 8) == 0 || strncmp(l, "CPID\t", 5) == 0);
	return l;
}

/* ---- recording callbacks ---- */
struct rec {
	int calls;
	enum dovecot_auth_result r;
	char user[256], chal[256], reason[256];
	bool has_reason;
	struct dovecot_auth_request *req;
	int index;
};

static void rec_cb(void *ctx, enum dovecot_auth_result r, const char *user, const char *chal,
		   const char *reason)
{
	struct rec *x = ctx;
	x->calls++;
	x->r = r;
	snprintf(x->user, sizeof(x->user), "%s", user ? user : "");
	snprintf(x->chal, sizeof(x->chal), "%s", chal ? chal : "");
	snprintf(x->reason, sizeof(x->reason), "%s", reason ? reason : "");
	x->has_reason = reason != NULL;
	if (r != DOVECOT_AUTH_CONTINUE)
		x->req = NULL;
}

static struct dovecot_auth_request_info plain_info(const char *ir)
{
	struct dovecot_auth_request_info info = {
		.mech = "PLAIN", .local_ip = "192.0.2.10", .remote_ip = "198.51.100.7",
		.local_port = 587, .remote_port = 50123, .secured = true, .initial_resp_b64 = ir,
	};
	return info;
}

static unsigned auth_id(const char *l)
{
	unsigned id = 0;
	if (sscanf(l, "AUTH\t%u\t", &id) != 1 && sscanf(l, "CONT\t%u\t", &id) != 1 &&
	    sscanf(l, "CANCEL\t%u", &id) != 1)
		return 0;
	return id;
}

static void reply(struct fake_srv *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct fake_srv *srv, const char *fmt, ...)
{
	char b[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	fake_send(srv->conn, b);
}

/* ---- tests ---- */

static struct fake_srv srv;
static struct dovecot_auth_client *cl;

static void test_handshake_23_and_plain(void)
{
	struct rec a = {0};
	/* Lazy connect: the first request connects and waits for DONE. */
	struct dovecot_auth_request_info info = plain_info("AGFsaWNlAHMzY3JldA==");
	info.session_id = "Ab3xQ9";
	info.local_name = "evil\tname\nX\rY\001Z";
	ok(!dovecot_auth_client_ready(cl), "not ready before connecting");
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	ok(a.req != NULL && a.calls == 0, "begin returns a request and does not call back inside");
	char cpid[32];
	snprintf(cpid, sizeof(cpid), "CPID\t%ld", (long)getpid());
	is_str(next_line(&srv), "VERSION\t1\t2", "client sends VERSION 1 2 unprompted");
	is_str(next_line(&srv), cpid, "client sends CPID <pid>");
	is_str(next_line(&srv),
	       "AUTH\t1\tPLAIN\tservice=smtp\tsession=Ab3xQ9\tlip=192.0.2.10\trip=198.51.100.7"
	       "\tlport=587\trport=50123\tlocal_name=evil\001tname\001nX\001rY\0011Z\tsecured=tls"
	       "\tresp=AGFsaWNlAHMzY3JldA==",
	       "queued AUTH sent after DONE: hostile local_name tab-escaped, resp= last and verbatim");
	ok(dovecot_auth_client_ready(cl), "ready after a 2.3-style handshake");
	is_str(dovecot_auth_client_mechs(cl), "PLAIN LOGIN CRAM-MD5", "mechanism list without private APOP");
	ok(dovecot_auth_client_has_mech(cl, "plain") && dovecot_auth_client_has_mech(cl, "LOGIN"),
	   "has_mech is case-insensitive");
	ok(!dovecot_auth_client_has_mech(cl, "APOP") && !dovecot_auth_client_has_mech(cl, "PLAI"),
	   "has_mech refuses private and partial names");
	reply(&srv, "OK\t1\tuser=alice@example.com\toriginal_user=Alice@Example.com\n");
	WAIT(a.calls > 0, 2000);
	is_int(a.calls, 1, "PLAIN: one callback");
	is_int(a.r, DOVECOT_AUTH_OK, "PLAIN: OK");
	is_str(a.user, "alice@example.com", "PLAIN: canonical user= passed on");
}

static void test_login_cont(void)
{
	struct rec a = {0};
	struct dovecot_auth_request_info info = plain_info(NULL);
	info.mech = "login";
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	const char *l = next_line(&srv);
	unsigned id = auth_id(l);
	ok(id == 2 && strstr(l, "\tLOGIN\t") && !strstr(l, "resp="),
	   "LOGIN without initial response: upper-cased mech, no resp=");
	reply(&srv, "CONT\t%u\tVXNlcm5hbWU6\n", id);
	WAIT(a.calls > 0, 2000);
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_CONTINUE, "CONT -> CONTINUE");
	is_str(a.chal, "VXNlcm5hbWU6", "challenge passed through unchanged");
	dovecot_auth_continue(a.req, "YWxpY2U=");
	is_int(a.calls, 1, "continue does not call back inside");
	char want[64];
	snprintf(want, sizeof(want), "CONT\t%u\tYWxpY2U=", id);
	is_str(next_line(&srv), want, "client CONT carries the response");
	reply(&srv, "CONT\t%u\tUGFzc3dvcmQ6\n", id);
	WAIT(a.calls > 1, 2000);
	is_str(a.chal, "UGFzc3dvcmQ6", "second challenge");
	dovecot_auth_continue(a.req, "");
	snprintf(want, sizeof(want), "CONT\t%u\t", id);
	is_str(next_line(&srv), want, "empty response is an empty CONT field");
	reply(&srv, "OK\t%u\tuser=alice\n", id);
	WAIT(a.calls > 2, 2000);
	ok(a.calls == 3 && a.r == DOVECOT_AUTH_OK && strcmp(a.user, "alice") == 0, "LOGIN: OK after two round trips");

	/* An empty initial response ("AUTH LOGIN =") is resp= with nothing. */
	struct rec b = {0};
	info.initial_resp_b64 = "";
	b.req = dovecot_auth_begin(cl, &info, rec_cb, &b);
	l = next_line(&srv);
	size_t n = strlen(l);
	ok(n > 6 && strcmp(l + n - 6, "\tresp=") == 0, "empty initial response -> trailing \\tresp=");
	reply(&srv, "FAIL\t%u\n", auth_id(l));
	WAIT(b.calls > 0, 2000);
	ok(b.calls == 1 && b.r == DOVECOT_AUTH_FAIL && !b.has_reason, "FAIL without reason -> FAIL, reason NULL");
}

static void test_fail_variants(void)
{
	static const struct {
		const char *tail;
		enum dovecot_auth_result r;
		const char *reason;
		const char *name;
	} cases[] = {
		{"\tuser=bob\treason=Bad\001tpass\001nword", DOVECOT_AUTH_FAIL, "Bad?pass?word",
		 "FAIL reason= unescaped and sanitised (no CR/LF into SMTP replies)"},
		{"\tuser=carol\tcode=temp_fail", DOVECOT_AUTH_TEMPFAIL, NULL, "FAIL code=temp_fail -> TEMPFAIL"},
		{"\ttemp\treason=db down", DOVECOT_AUTH_TEMPFAIL, "db down", "FAIL temp (2.2 flag) -> TEMPFAIL"},
		{"\tcode=authz_fail", DOVECOT_AUTH_FAIL, NULL, "FAIL code=authz_fail -> FAIL"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec a = {0};
		struct dovecot_auth_request_info info = plain_info("AGIAeA==");
		a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
		unsigned id = auth_id(next_req(&srv));
		reply(&srv, "FAIL\t%u%s\n", id, cases[i].tail);
		WAIT(a.calls > 0, 2000);
		ok(a.calls == 1 && a.r == cases[i].r &&
		       (cases[i].reason ? strcmp(a.reason, cases[i].reason) == 0 : !a.has_reason),
		   "%s", cases[i].name);
	}
	static const struct {
		const char *tail;
		enum dovecot_auth_result r;
		const char *name;
	} oks[] = {
		{"\tuser=dave\tnologin\treason=Account disabled", DOVECOT_AUTH_FAIL, "OK + nologin -> FAIL"},
		{"\tuser=dave\tnologin\thost=10.0.0.1\tproxy", DOVECOT_AUTH_FAIL, "OK + proxy (referral) -> FAIL"},
		{"\toriginal_user=x", DOVECOT_AUTH_TEMPFAIL, "OK without user= -> TEMPFAIL"},
		{"\tuser=ev\001nil", DOVECOT_AUTH_TEMPFAIL, "OK with LF in user= -> TEMPFAIL"},
	};
	for (size_t i = 0; i < sizeof(oks) / sizeof(oks[0]); i++) {
		struct rec a = {0};
		struct dovecot_auth_request_info info = plain_info("AGIAeA==");
		a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
		unsigned id = auth_id(next_req(&srv));
		reply(&srv, "OK\t%u%s\n", id, oks[i].tail);
		WAIT(a.calls > 0, 2000);
		ok(a.calls == 1 && a.r == oks[i].r && a.user[0] == '\0', "%s", oks[i].name);
	}
	ok(dovecot_auth_client_ready(cl), "connection survived all of that");
}

static void test_local_refusals(void)
{
	struct rec a = {0}, b = {0}, c = {0};
	struct dovecot_auth_request_info info = plain_info("AGFsaWNlAHMzY3Jld\tA==");
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	info.initial_resp_b64 = "=AAA";
	b.req = dovecot_auth_begin(cl, &info, rec_cb, &b);
	info.initial_resp_b64 = NULL;
	info.mech = "DIGEST-MD5";
	c.req = dovecot_auth_begin(cl, &info, rec_cb, &c);
	ok(a.calls + b.calls + c.calls == 0, "local refusals do not call back inside begin");
	WAIT(a.calls && b.calls && c.calls, 2000);
	ok(a.r == DOVECOT_AUTH_FAIL && b.r == DOVECOT_AUTH_FAIL, "invalid base64 initial responses -> FAIL");
	ok(c.r == DOVECOT_AUTH_FAIL, "mechanism Dovecot did not announce -> FAIL");
	SETTLE(50);
	ok(!fake_has_line(srv.conn), "none of them reached Dovecot");

	/* Invalid base64 in a continuation: FAIL, and Dovecot is told. */
	struct rec d = {0};
	info = plain_info(NULL);
	d.req = dovecot_auth_begin(cl, &info, rec_cb, &d);
	unsigned id = auth_id(next_req(&srv));
	reply(&srv, "CONT\t%u\t\n", id);
	WAIT(d.calls > 0, 2000);
	is_str(d.chal, "", "PLAIN without initial response: empty challenge");
	dovecot_auth_continue(d.req, "AAAA\tno-penalty");
	WAIT(d.calls > 1, 2000);
	ok(d.calls == 2 && d.r == DOVECOT_AUTH_FAIL, "tab in continuation -> FAIL");
	char want[64];
	snprintf(want, sizeof(want), "CANCEL\t%u", id);
	is_str(next_line(&srv), want, "and CANCEL is sent instead of the data");
}

static void test_abort(void)
{
	struct rec a = {0}, b = {0};
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	unsigned id = auth_id(next_req(&srv));
	dovecot_auth_abort(&a.req);
	ok(a.req == NULL, "abort clears the caller's pointer");
	char want[64];
	snprintf(want, sizeof(want), "CANCEL\t%u", id);
	is_str(next_line(&srv), want, "abort sends CANCEL");
	reply(&srv, "OK\t%u\tuser=late\n", id);
	SETTLE(100);
	is_int(a.calls, 0, "aborted request never calls back, even on a late OK");
	ok(dovecot_auth_client_ready(cl), "late reply for an aborted id is not a protocol error");

	/* Abort right after begin, before Dovecot could answer. */
	b.req = dovecot_auth_begin(cl, &info, rec_cb, &b);
	id = auth_id(next_req(&srv));
	struct dovecot_auth_request *tmp = b.req;
	dovecot_auth_abort(&tmp);
	SETTLE(20);
	dovecot_auth_abort(&tmp); /* NULL: no-op */
	is_int(b.calls, 0, "abort right after begin: no callback");
	char want2[64];
	snprintf(want2, sizeof(want2), "CANCEL\t%u", id);
	is_str(next_line(&srv), want2, "and CANCEL is sent for it");
}

static void test_timeout(void)
{
	struct fake_conn *main_conn = srv.conn;
	struct dovecot_auth_client *c2 = dovecot_auth_client_create(loop, srv.path, 200);
	struct rec a = {0};
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(c2, &info, rec_cb, &a);
	WAIT(dovecot_auth_client_ready(c2), 2000);
	struct fake_conn *fc = srv.conn;
	const char *l = next_req(&srv);
	unsigned id = auth_id(l);
	uv_update_time(loop);
	uint64_t t0 = uv_now(loop);
	WAIT(a.calls > 0, 2000);
	uint64_t dt = uv_now(loop) - t0;
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_TEMPFAIL, "silent server: request timeout -> TEMPFAIL");
	ok(dt >= 150 && dt < 1000, "after about the request timeout (%llu ms)", (unsigned long long)dt);
	char want[64];
	snprintf(want, sizeof(want), "CANCEL\t%u", id);
	is_str(next_line(&srv), want, "timed-out request is cancelled at Dovecot");
	fake_send(fc, "FAIL\t1\n");
	SETTLE(100);
	ok(a.calls == 1 && dovecot_auth_client_ready(c2), "late FAIL after timeout ignored");
	dovecot_auth_client_destroy(&c2);
	ok(c2 == NULL, "destroy clears the pointer");
	SETTLE(50);
	ok(fc->eof, "destroy closes the connection");
	fake_close(fc);
	srv.conn = main_conn;
}

static int sum_calls(struct rec *r, int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += r[i].calls;
	return s;
}

static void test_out_of_order(void)
{
	enum { N = 50 };
	struct rec r[N];
	memset(r, 0, sizeof(r));
	for (int i = 0; i < N; i++) {
		char sess[16];
		snprintf(sess, sizeof(sess), "s%d", i);
		struct dovecot_auth_request_info info = plain_info("AGIAeA==");
		info.session_id = sess;
		r[i].index = i;
		r[i].req = dovecot_auth_begin(cl, &info, rec_cb, &r[i]);
	}
	WAIT(fake_count_lines(srv.conn) >= N, 2000);
	unsigned ids[N];
	int sess_of[N];
	for (int i = 0; i < N; i++) {
		const char *l = next_req(&srv);
		ids[i] = auth_id(l);
		const char *s = strstr(l, "\tsession=s");
		sess_of[i] = s ? atoi(s + 10) : -1;
	}
	/* Answer in a scrambled order; odd ones fail. */
	for (int k = 0; k < N; k++) {
		int i = (k * 17 + 5) % N;
		if (sess_of[i] % 2 == 0)
			reply(&srv, "OK\t%u\tuser=user%d\n", ids[i], sess_of[i]);
		else
			reply(&srv, "FAIL\t%u\tuser=user%d\treason=no%d\n", ids[i], sess_of[i], sess_of[i]);
	}
	WAIT(sum_calls(r, N) >= N, 3000);
	int good = 0;
	for (int i = 0; i < N; i++) {
		char want[32];
		snprintf(want, sizeof(want), i % 2 ? "no%d" : "user%d", i);
		if (r[i].calls == 1 && r[i].r == (i % 2 ? DOVECOT_AUTH_FAIL : DOVECOT_AUTH_OK) &&
		    strcmp(i % 2 ? r[i].reason : r[i].user, want) == 0)
			good++;
	}
	is_int(good, N, "50 concurrent requests answered out of order land on the right callbacks");
}

static void test_disconnect_20(void)
{
	enum { N = 20 };
	struct rec r[N];
	memset(r, 0, sizeof(r));
	int before = srv.accepted;
	/* One of them mid-exchange (waiting for its caller after CONTINUE). */
	for (int i = 0; i < N; i++) {
		struct dovecot_auth_request_info info = plain_info(i == 0 ? NULL : "AGIAeA==");
		r[i].req = dovecot_auth_begin(cl, &info, rec_cb, &r[i]);
	}
	WAIT(fake_count_lines(srv.conn) >= N, 2000);
	unsigned id0 = auth_id(next_req(&srv));
	reply(&srv, "CONT\t%u\t\n", id0);
	WAIT(r[0].calls > 0, 2000);
	ok(r[0].r == DOVECOT_AUTH_CONTINUE, "first one is waiting for its caller");
	fake_close(srv.conn);
	WAIT(sum_calls(r + 1, N - 1) >= N - 1, 2000);
	SETTLE(100);
	int once = 0;
	for (int i = 1; i < N; i++)
		once += r[i].calls == 1 && r[i].r == DOVECOT_AUTH_TEMPFAIL;
	is_int(once, N - 1, "connection dropped: every request in flight TEMPFAILs exactly once");
	is_int(r[0].calls, 1, "the one waiting for its caller is not called back meanwhile");
	dovecot_auth_continue(r[0].req, "AGIAeA==");
	is_int(r[0].calls, 1, "its continue does not call back inside");
	WAIT(r[0].calls > 1, 2000);
	ok(r[0].calls == 2 && r[0].r == DOVECOT_AUTH_TEMPFAIL, "and then completes with TEMPFAIL");
	WAIT(srv.accepted > before && dovecot_auth_client_ready(cl), 2000);
	ok(dovecot_auth_client_ready(cl), "reconnected after the drop");
	while (fake_has_line(srv.conn))
		next_line(&srv);
}

/* "%u" in a reply template becomes the request's id. */
static void send_with_id(struct fake_conn *fc, const char *tmpl, unsigned id)
{
	char text[512], num[16];
	snprintf(num, sizeof(num), "%u", id);
	const char *pct = strstr(tmpl, "%u");
	if (pct)
		snprintf(text, sizeof(text), "%.*s%s%s", (int)(pct - tmpl), tmpl, num, pct + 2);
	else
		snprintf(text, sizeof(text), "%s", tmpl);
	fake_send(fc, text);
}

/* Two logins in flight on the ready connection; returns the first's id,
 * the second's in *id_b. */
static unsigned begin_two(struct rec *a, struct rec *b, unsigned *id_b)
{
	WAIT(dovecot_auth_client_ready(cl), 3000);
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a->req = dovecot_auth_begin(cl, &info, rec_cb, a);
	b->req = dovecot_auth_begin(cl, &info, rec_cb, b);
	unsigned id = auth_id(next_req(&srv));
	*id_b = auth_id(next_req(&srv));
	return id;
}

/* Reply shapes Dovecot 2.3 and 2.4 send, read as Dovecot's own auth client
 * reads them: empty and unknown fields ignored (the ISPmail SQL passdb ends
 * OK with an empty field, and puts one before original_user=). */
static void test_reply_shapes(void)
{
	static const struct {
		const char *reply;
		enum dovecot_auth_result want;
		const char *user, *reason, *name;
	} cases[] = {
		{"OK\t%u\tuser=john@example.org\t\n", DOVECOT_AUTH_OK, "john@example.org", NULL,
		 "SQL passdb: trailing empty field"},
		{"OK\t%u\tuser=john@example.org\t\toriginal_user=John@Example.org\n", DOVECOT_AUTH_OK,
		 "john@example.org", NULL, "SQL passdb, other letter case: empty field in the middle"},
		{"OK\t%u\t\tuser=a\t\t\t\n", DOVECOT_AUTH_OK, "a", NULL, "several empty fields"},
		{"OK\t%u\tuser=a\tauth_user=a\tfoo=bar\tflag\t=odd\n", DOVECOT_AUTH_OK, "a", NULL,
		 "unknown fields and flags"},
		{"OK\t%u\tuser=a\tuser=a\n", DOVECOT_AUTH_OK, "a", NULL, "user= repeated with the same value"},
		{"OK\t%u\tuser=a\tnologin\treason=Go elsewhere\n", DOVECOT_AUTH_FAIL, NULL, "Go elsewhere",
		 "OK + nologin is a refusal"},
		{"OK\t%u\tuser=a\tnologin=y\thost=10.0.0.1\n", DOVECOT_AUTH_FAIL, NULL, NULL,
		 "OK + nologin=y (a referral) is a refusal"},
		{"OK\t%u\tuser=a\tproxy\thost=10.0.0.1\n", DOVECOT_AUTH_FAIL, NULL, NULL, "OK + proxy is a refusal"},
		{"FAIL\t%u\tuser=a\t\n", DOVECOT_AUTH_FAIL, NULL, NULL, "FAIL with a trailing empty field"},
		{"FAIL\t%u\n", DOVECOT_AUTH_FAIL, NULL, NULL, "FAIL with nothing"},
		{"FAIL\t%u\tuser=a\treason=Bad\001tpass\001nword\n", DOVECOT_AUTH_FAIL, NULL, "Bad?pass?word",
		 "reason= with escapes: unescaped, controls replaced"},
		{"FAIL\t%u\tuser=a\tcode=temp_fail\treason=SQL down\n", DOVECOT_AUTH_TEMPFAIL, NULL, "SQL down",
		 "code=temp_fail"},
		{"FAIL\t%u\ttemp\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "2.2 spelling: temp"},
		{"FAIL\t%u\tcode=authz_fail\n", DOVECOT_AUTH_FAIL, NULL, NULL, "code=authz_fail"},
		{"OK\t%u\tuser=a\tresp=\n", DOVECOT_AUTH_OK, "a", NULL, "OK with an empty resp="},
		{"OK\t0%u\tuser=a\n", DOVECOT_AUTH_OK, "a", NULL, "id with a leading zero (Dovecot reads it)"},
		/* One request's unusable reply fails that request only. */
		{"OK\t%u\t\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "OK without user="},
		{"OK\t%u\tuser=\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "OK with an empty user="},
		{"OK\t%u\tuser=a\001nb\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "OK with a control character in user="},
		{"OK\t%u\tuser=a\tuser=b\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "two different user= values"},
		{"OK\t%u\tuser=a\001\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "dangling escape"},
		{"OK\t%u\tuser=a\0010\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "escaped NUL"},
		{"FAIL\t%u\tuser=a\0010\n", DOVECOT_AUTH_FAIL, NULL, NULL, "FAIL with an escaped NUL is still a failure"},
		{"FAIL\t%u\tuser=a\tuser=b\n", DOVECOT_AUTH_FAIL, NULL, NULL, "FAIL with two user= is still a failure"},
		{"CONT\t%u\tnot*base64\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "CONT with invalid base64"},
		{"CANCELLED\t%u\n", DOVECOT_AUTH_TEMPFAIL, NULL, NULL, "CANCELLED for a request not cancelled"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec a = {0}, b = {0};
		int before = srv.accepted;
		unsigned id_b, id = begin_two(&a, &b, &id_b);
		struct fake_conn *fc = srv.conn;
		send_with_id(fc, cases[i].reply, id);
		WAIT(a.calls, 2000);
		bool good = a.calls == 1 && a.r == cases[i].want;
		if (good && cases[i].user)
			good = strcmp(a.user, cases[i].user) == 0;
		if (good && cases[i].reason)
			good = a.has_reason && strcmp(a.reason, cases[i].reason) == 0;
		ok(good, "%s: %s", cases[i].name,
		   cases[i].want == DOVECOT_AUTH_OK ? "OK" : cases[i].want == DOVECOT_AUTH_FAIL ? "FAIL" : "TEMPFAIL");
		/* The other request on the connection is untouched. */
		reply(&srv, "OK\t%u\tuser=other\t\n", id_b);
		WAIT(b.calls, 2000);
		ok(b.calls == 1 && b.r == DOVECOT_AUTH_OK && !fc->eof && srv.accepted == before,
		   "%s: the other login on the connection still succeeds", cases[i].name);
		while (fake_has_line(srv.conn))
			next_line(&srv); /* a CANCEL for the unusable one */
	}

	/* A reply for an id we never sent, or id 0: logged, ignored. */
	struct rec a = {0};
	int before = srv.accepted;
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	unsigned id = auth_id(next_req(&srv));
	reply(&srv, "OK\t999999\tuser=x\nFAIL\t0\nOK\t%u\tuser=me\t\n", id);
	WAIT(a.calls, 2000);
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_OK && strcmp(a.user, "me") == 0 && srv.accepted == before &&
		   !srv.conn->eof,
	   "replies for unknown ids are ignored; the connection stays");
}

/* Dovecot echoes the login in user=, escaped: a hostile login makes a
 * reply longer than any line limit. That reply fails only its own login
 * (a FAIL stays a failure), the others go on. */
static void test_long_reply(void)
{
	static const char *const kinds[] = {"FAIL", "OK", "CONT"};
	for (size_t k = 0; k < 3; k++) {
		struct rec a = {0}, b = {0};
		int before = srv.accepted;
		unsigned id_b, id = begin_two(&a, &b, &id_b);
		size_t n = DOVECOT_AUTH_MAX_LINE * 2 + 100;
		char *big = xmalloc(n + 64);
		int h = snprintf(big, 64, "%s\t%u\tuser=", kinds[k], id);
		memset(big + h, 'x', n);
		big[h + n] = '\n';
		big[h + n + 1] = '\0';
		fake_send(srv.conn, big);
		free(big);
		reply(&srv, "OK\t%u\tuser=other\n", id_b);
		WAIT(a.calls && b.calls, 3000);
		ok(a.calls == 1 && a.r == (k == 0 ? DOVECOT_AUTH_FAIL : DOVECOT_AUTH_TEMPFAIL),
		   "over-long %s: that login %s", kinds[k], k == 0 ? "fails (counted)" : "fails temporarily");
		ok(b.calls == 1 && b.r == DOVECOT_AUTH_OK && !srv.conn->eof && srv.accepted == before,
		   "over-long %s: the other login on the connection succeeds, the connection stays", kinds[k]);
		SETTLE(50); /* the CANCEL for the CONT one */
		while (fake_has_line(srv.conn))
			next_line(&srv);
	}
}

/* What makes the stream unreadable drops the connection (as Dovecot's own
 * client does); everything in flight then TEMPFAILs. */
static void test_protocol_errors(void)
{
	static const struct {
		const char *bad;
		const char *name;
	} cases[] = {
		{"HELLO WORLD\n", "garbage line"},
		{"OK\tx1\tuser=x\n", "non-numeric id"},
		{"OK\n", "reply without an id"},
		{"OK\t99999999999\tuser=x\n", "id beyond 32 bits"},
		{"CONT\t%u\n", "CONT without data"},
		{"MECH\tPLAIN\n", "MECH after the handshake"},
		{"\n", "empty line"},
		{"OK\001\t%u\tuser=a\n", "broken escape in the command"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec a = {0}, b = {0};
		int before = srv.accepted;
		unsigned id_b, id = begin_two(&a, &b, &id_b);
		(void)id_b;
		struct fake_conn *fc = srv.conn;
		send_with_id(fc, cases[i].bad, id);
		WAIT(a.calls && b.calls && fc->eof, 2000);
		ok(a.calls == 1 && b.calls == 1 && a.r == DOVECOT_AUTH_TEMPFAIL && b.r == DOVECOT_AUTH_TEMPFAIL &&
		       fc->eof,
		   "%s: connection dropped, both in flight TEMPFAIL", cases[i].name);
		fake_close(fc);
		/* It reconnected immediately or after a short backoff. */
		WAIT(srv.accepted > before && dovecot_auth_client_ready(cl), 3000);
	}
	ok(dovecot_auth_client_ready(cl), "client reconnects after protocol errors");

	/* A duplicate final reply for one id: the first counts, the second is
	 * a reply for an id no longer known, ignored. */
	struct rec a = {0};
	int before = srv.accepted;
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	unsigned id = auth_id(next_req(&srv));
	struct fake_conn *fc = srv.conn;
	reply(&srv, "OK\t%u\tuser=x\nOK\t%u\tuser=x\n", id, id);
	WAIT(a.calls, 2000);
	SETTLE(50);
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_OK && !fc->eof && srv.accepted == before,
	   "duplicate reply: first honoured, second ignored, connection kept");

	/* A second CONT before we answered the first: that request fails
	 * (TEMPFAIL, CANCEL sent), once; the connection stays. */
	struct rec b = {0};
	info = plain_info(NULL);
	b.req = dovecot_auth_begin(cl, &info, rec_cb, &b);
	id = auth_id(next_req(&srv));
	reply(&srv, "CONT\t%u\t\nCONT\t%u\t\n", id, id);
	WAIT(b.calls > 0, 1000);
	SETTLE(50);
	ok(b.calls == 1 && b.r == DOVECOT_AUTH_TEMPFAIL && !fc->eof,
	   "second CONT to one step: that login TEMPFAILs once, the connection stays");
	const char *l = next_line(&srv);
	char want[32];
	snprintf(want, sizeof(want), "CANCEL\t%u", id);
	is_str(l, want, "and Dovecot is told to forget it");
	if (b.req)
		dovecot_auth_abort(&b.req);

	/* An over-long line. */
	WAIT(srv.accepted > before && dovecot_auth_client_ready(cl), 3000);
	struct rec c = {0};
	c.req = dovecot_auth_begin(cl, &info, rec_cb, &c);
	next_req(&srv);
	fc = srv.conn;
	char *big = xmalloc(DOVECOT_AUTH_MAX_LINE + 100);
	memset(big, 'A', DOVECOT_AUTH_MAX_LINE + 99);
	big[DOVECOT_AUTH_MAX_LINE + 99] = '\0';
	fake_send(fc, big);
	free(big);
	WAIT(c.calls && fc->eof, 2000);
	ok(c.calls == 1 && c.r == DOVECOT_AUTH_TEMPFAIL && fc->eof, "line longer than 16384 bytes: dropped, TEMPFAIL");
	fake_close(fc);
	WAIT(dovecot_auth_client_ready(cl), 3000);
}

static void test_bad_handshakes(void)
{
	struct fake_conn *main_conn = srv.conn;
	static const struct {
		const char *greeting;
		const char *name;
	} cases[] = {
		{"VERSION\t2\t0\n", "major version 2"},
		{"VERSION\t1\t2\nSPID\t1\n", "SPID before MECH (auth-master/userdb socket)"},
		{"VERSION\t1\t2\nMECH\tPLAIN\nDONE\n", "DONE without COOKIE"},
		{"VERSION\t1\t2\nMECH\tPLAIN\nCOOKIE\txyz\nCOOKIE\txyz\n", "second COOKIE"},
		{"VERSION\t1\t2\nMECH\tPLAIN\nSPID\tx\n", "non-numeric SPID"},
		{"VERSION\t1\t2\nMECH\tPLAIN\nCOOKIE\nDONE\n", "COOKIE without a value, then DONE"},
		{"VERSION\t1\tx\n", "non-numeric minor version"},
		{"VERSION\t1\n", "VERSION without a minor"},
		{"VERSION\t1\t2\nFOO\n", "unknown handshake command"},
		{"MECH\tPLAIN\n", "no VERSION first"},
		{"VERSION\t1\t2\nOK\t1\tuser=x\n", "reply before DONE"},
	};
	srv.greeting = GREET_NONE;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dovecot_auth_client *c2 = dovecot_auth_client_create(loop, srv.path, 2000);
		struct rec a = {0};
		int before = srv.accepted;
		struct dovecot_auth_request_info info = plain_info("AGIAeA==");
		a.req = dovecot_auth_begin(c2, &info, rec_cb, &a);
		WAIT(srv.accepted > before, 2000);
		struct fake_conn *fc = srv.conn;
		fake_send(fc, cases[i].greeting);
		WAIT(a.calls && fc->eof, 2000);
		ok(a.calls == 1 && a.r == DOVECOT_AUTH_TEMPFAIL && fc->eof && !dovecot_auth_client_ready(c2),
		   "bad handshake (%s): dropped, queued request TEMPFAILs", cases[i].name);
		fake_close(fc);
		dovecot_auth_client_destroy(&c2);
	}
	srv.greeting = GREET_23;
	srv.conn = main_conn;
}

/* Handshake shapes Dovecot's own client accepts are accepted. */
static void test_handshake_lenient(void)
{
	struct fake_conn *main_conn = srv.conn;
	srv.greeting = GREET_NONE;
	struct dovecot_auth_client *c2 = dovecot_auth_client_create(loop, srv.path, 2000);
	int before = srv.accepted;
	dovecot_auth_client_connect(c2);
	WAIT(srv.accepted > before, 2000);
	struct fake_conn *fc = srv.conn;
	fake_send(fc, "VERSION\t1\t2\textra\n"
		      "MECH\tPLAIN\tplaintext\t\tnew-flag\n"
		      "MECH\tlogin\tplaintext\n"
		      "MECH\tSECRET\tprivate\n"
		      "MECH\tBAD NAME!\n"
		      "MECH\tPLAIN\n"
		      "SPID\t1\nSPID\t2\nCUID\t3\t\n"
		      "COOKIE\tnot-hex\n"
		      "DONE\t\n");
	WAIT(dovecot_auth_client_ready(c2), 2000);
	ok(dovecot_auth_client_ready(c2) && !fc->eof,
	   "extra fields, empty and unknown flags, a lower-case name, repeated SPID, any cookie: accepted");
	is_str(dovecot_auth_client_mechs(c2), "PLAIN LOGIN", "mechanisms: names folded, private and unusable ones left out");
	dovecot_auth_client_destroy(&c2);
	SETTLE(20);
	fake_close(fc);
	srv.greeting = GREET_23;
	srv.conn = main_conn;
}

static void test_handshake_24(void)
{
	struct fake_conn *main_conn = srv.conn;
	srv.greeting = GREET_24;
	struct dovecot_auth_client *c2 = dovecot_auth_client_create(loop, srv.path, 2000);
	dovecot_auth_client_connect(c2);
	WAIT(dovecot_auth_client_ready(c2), 2000);
	ok(dovecot_auth_client_ready(c2), "2.4-style handshake (MECH only after our VERSION) completes");
	is_str(dovecot_auth_client_mechs(c2), "PLAIN LOGIN CRAM-MD5", "2.4: mechanism list");
	struct rec a = {0};
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(c2, &info, rec_cb, &a);
	const char *l = next_req(&srv);
	reply(&srv, "OK\t%u\tuser=bob\n", auth_id(l));
	WAIT(a.calls, 2000);
	ok(a.r == DOVECOT_AUTH_OK && strcmp(a.user, "bob") == 0, "2.4: PLAIN OK");
	struct fake_conn *fc = srv.conn;
	dovecot_auth_client_destroy(&c2);
	SETTLE(20);
	fake_close(fc);
	srv.greeting = GREET_23;
	srv.conn = main_conn;
}

static void test_down_and_back(void)
{
	/* Dovecot goes away: everything TEMPFAILs promptly; it comes back: we
	 * reconnect by ourselves (invariant 4). */
	struct rec a = {0}, b = {0}, c = {0};
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(cl, &info, rec_cb, &a);
	next_req(&srv);
	fake_stop(&srv);
	WAIT(a.calls, 2000);
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_TEMPFAIL, "in flight when Dovecot stops: TEMPFAIL");
	SETTLE(50); /* the immediate reconnect fails: backoff */
	uv_update_time(loop);
	uint64_t t0 = uv_now(loop);
	b.req = dovecot_auth_begin(cl, &info, rec_cb, &b);
	is_int(b.calls, 0, "no callback inside begin while Dovecot is down");
	WAIT(b.calls, 2000);
	ok(b.r == DOVECOT_AUTH_TEMPFAIL && uv_now(loop) - t0 < 100,
	   "while Dovecot is down, requests TEMPFAIL promptly (%llu ms)",
	   (unsigned long long)(uv_now(loop) - t0));
	is_str(dovecot_auth_client_mechs(cl), "PLAIN LOGIN CRAM-MD5", "last mechanism list kept while down");
	fake_start(&srv);
	WAIT(dovecot_auth_client_ready(cl), 6000);
	ok(dovecot_auth_client_ready(cl), "reconnects when Dovecot comes back");
	c.req = dovecot_auth_begin(cl, &info, rec_cb, &c);
	const char *l = next_req(&srv);
	ok(auth_id(l) == 1, "ids restart on the new connection");
	reply(&srv, "OK\t%u\tuser=back\n", auth_id(l));
	WAIT(c.calls, 2000);
	ok(c.r == DOVECOT_AUTH_OK && strcmp(c.user, "back") == 0, "and authenticates again");
}

static void test_never_up(void)
{
	char path[128];
	snprintf(path, sizeof(path), "%s.none", srv.path);
	struct dovecot_auth_client *c2 = dovecot_auth_client_create(loop, path, 5000);
	struct rec a = {0};
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	uv_update_time(loop);
	uint64_t t0 = uv_now(loop);
	a.req = dovecot_auth_begin(c2, &info, rec_cb, &a);
	is_int(a.calls, 0, "socket missing: no callback inside begin");
	WAIT(a.calls, 2000);
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_TEMPFAIL && uv_now(loop) - t0 < 100,
	   "socket missing: TEMPFAIL on the connect error, not the 5 s timeout");
	dovecot_auth_client_destroy(&c2);
}

struct reentrant {
	struct dovecot_auth_client **c;
	struct rec *other;
	int calls;
};

static void destroy_in_cb(void *ctx, enum dovecot_auth_result r, const char *u, const char *ch,
			  const char *re)
{
	struct reentrant *x = ctx;
	(void)r, (void)u, (void)ch, (void)re;
	x->calls++;
	dovecot_auth_client_destroy(x->c);
}

static void test_destroy(void)
{
	struct fake_conn *main_conn = srv.conn;
	struct dovecot_auth_client *c2 = dovecot_auth_client_create(loop, srv.path, 2000);
	struct rec a = {0}, b = {0};
	struct dovecot_auth_request_info info = plain_info("AGIAeA==");
	a.req = dovecot_auth_begin(c2, &info, rec_cb, &a);
	WAIT(dovecot_auth_client_ready(c2), 2000);
	info.initial_resp_b64 = NULL;
	b.req = dovecot_auth_begin(c2, &info, rec_cb, &b);
	dovecot_auth_client_destroy(&c2);
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_TEMPFAIL && b.calls == 1 && b.r == DOVECOT_AUTH_TEMPFAIL,
	   "destroy completes live requests with TEMPFAIL, once each");
	SETTLE(50);
	ok(a.calls == 1 && b.calls == 1, "and never again");
	fake_close(srv.conn);

	/* Destroying the client from inside its own callback. */
	c2 = dovecot_auth_client_create(loop, srv.path, 2000);
	struct reentrant x = {&c2, NULL, 0};
	struct rec d = {0};
	info = plain_info("AGIAeA==");
	dovecot_auth_begin(c2, &info, destroy_in_cb, &x);
	d.req = dovecot_auth_begin(c2, &info, rec_cb, &d);
	const char *l = next_req(&srv);
	reply(&srv, "OK\t%u\tuser=x\n", auth_id(l));
	WAIT(x.calls, 2000);
	ok(x.calls == 1 && c2 == NULL && d.calls == 1 && d.r == DOVECOT_AUTH_TEMPFAIL,
	   "destroy from inside a callback: the other request TEMPFAILs, nothing crashes");
	SETTLE(50);
	fake_close(srv.conn);
	srv.conn = main_conn;
}

/* A Dovecot that stops reading (invariant 5): requests wait in line instead
 * of piling up in the write queue, nothing is dropped, and all go out, in
 * order, once it reads again. */
static void test_not_reading(void)
{
	enum { N = 200 };
	static struct rec r[N];
	memset(r, 0, sizeof(r));
	static char ir[12289];
	memset(ir, 'Q', 12288); /* valid base64, 12288 octets (RFC 4954 §4) */
	ir[12288] = '\0';
	while (fake_has_line(srv.conn))
		next_line(&srv);
	int before = srv.accepted;
	uv_read_stop((uv_stream_t *)&srv.conn->pipe);
	for (int i = 0; i < N; i++) {
		struct dovecot_auth_request_info info = plain_info(ir);
		r[i].req = dovecot_auth_begin(cl, &info, rec_cb, &r[i]);
	}
	SETTLE(200);
	is_int(sum_calls(r, N), 0, "Dovecot not reading 2.4 MB of requests: none failed or dropped");
	ok(dovecot_auth_client_ready(cl) && srv.accepted == before, "the connection stays up");
	uv_read_start((uv_stream_t *)&srv.conn->pipe, fake_alloc, fake_read);
	int answered = 0;
	unsigned last = 0;
	bool in_order = true;
	while (answered < N) {
		const char *l = next_req(&srv);
		unsigned id = auth_id(l);
		if (id == 0)
			break;
		in_order = in_order && id > last;
		last = id;
		reply(&srv, "OK\t%u\tuser=u%d\n", id, answered);
		answered++;
	}
	WAIT(sum_calls(r, N) >= N, 3000);
	int oks = 0;
	for (int i = 0; i < N; i++)
		oks += r[i].calls == 1 && r[i].r == DOVECOT_AUTH_OK;
	is_int(oks, N, "once it reads again every request goes out and completes");
	ok(in_order, "in the order they were made");
}

int main(void)
{
	log_open(LOG_TARGET_STDERR, 0, LOG_WARNING);
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	snprintf(srv.path, sizeof(srv.path), "/tmp/test-dovecot-auth.%ld.sock", (long)getpid());
	srv.greeting = GREET_23;
	fake_start(&srv);
	cl = dovecot_auth_client_create(loop, srv.path, 2000);

	test_handshake_23_and_plain();
	test_login_cont();
	test_fail_variants();
	test_local_refusals();
	test_abort();
	test_timeout();
	test_out_of_order();
	test_disconnect_20();
	test_reply_shapes();
	test_long_reply();
	test_not_reading();
	test_protocol_errors();
	test_bad_handshakes();
	test_handshake_lenient();
	test_handshake_24();
	test_down_and_back();
	test_never_up();
	test_destroy();

	dovecot_auth_client_destroy(&cl);
	fake_stop(&srv);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	ok(uv_loop_close(loop) == 0, "no handle left open, nothing left on the loop");
	return done_testing();
}
