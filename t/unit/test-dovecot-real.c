/* test-dovecot-real: the Dovecot auth client against a real Dovecot.
 *
 * Needs DOVECOT_AUTH_SOCKET naming the auth client socket of a private
 * Dovecot started by t/lib/dovecot.py (its demo users), and
 * DOVECOT_PASSDB=sql when that Dovecot runs the ISPmail guide's SQL passdb
 * (every user SHA512-CRYPT, no nologin user). t/run starts both deployments
 * and runs this program against each; by hand:
 *   eval "$(python3 t/lib/neighbours.py start DIR)"
 *   DOVECOT_AUTH_SOCKET=$DOVECOT_SQL_AUTH_SOCKET DOVECOT_PASSDB=sql build/t/unit/test-dovecot-real
 *   python3 t/lib/neighbours.py stop DIR
 * Without a socket it skips (a failure under CI=true).
 *
 * Checks what a scripted fake cannot: that Dovecot 2.3/2.4 really accepts our
 * handshake, our AUTH lines (escaped values, resp= forms) and CONT/CANCEL,
 * and answers as docs/dovecot-auth.md say. */
#include "config.h"

#include "core/log.h"
#include "lookup/dovecot_auth.h"
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop-wait.h"

struct rec {
	int calls;
	enum dovecot_auth_result r;
	char user[256], chal[256], reason[256];
	struct dovecot_auth_request *req;
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
	if (r != DOVECOT_AUTH_CONTINUE)
		x->req = NULL;
}

static const char *b64(const char *s, size_t n)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static char out[512];
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)(unsigned char)s[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)s[i + 2];
		out[o++] = tbl[(v >> 18) & 63];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tbl[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static const char *plain_ir(const char *user, const char *pass)
{
	char raw[256];
	int n = snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, pass);
	return b64(raw, (size_t)n);
}

static struct dovecot_auth_request_info info_for(const char *mech, const char *ir)
{
	struct dovecot_auth_request_info info = {
		.mech = mech, .session_id = "realtest", .local_ip = "127.0.0.1", .remote_ip = "127.0.0.2",
		.local_port = 587, .remote_port = 40000, .secured = true,
		.local_name = "mail.test.example\tno-penalty", .initial_resp_b64 = ir,
	};
	return info;
}

/* The next step of an exchange, only while it is still under way (a failed
 * step must fail its checks, not crash the program). */
static void step(struct rec *x, const char *resp_b64)
{
	if (x->req != NULL && x->r == DOVECOT_AUTH_CONTINUE)
		dovecot_auth_continue(x->req, resp_b64);
}

static struct rec run_plain(struct dovecot_auth_client *c, const char *user, const char *pass)
{
	struct rec a = {0};
	char ir[512];
	snprintf(ir, sizeof(ir), "%s", plain_ir(user, pass));
	struct dovecot_auth_request_info info = info_for("PLAIN", ir);
	a.req = dovecot_auth_begin(c, &info, rec_cb, &a);
	WAIT(a.calls > 0, 20000);
	return a;
}

int main(void)
{
	const char *path = getenv("DOVECOT_AUTH_SOCKET");
	if (path == NULL || *path == '\0')
		return skip_all("DOVECOT_AUTH_SOCKET not set (t/run starts a private Dovecot)");
	const char *passdb = getenv("DOVECOT_PASSDB");
	bool sql = passdb != NULL && strcmp(passdb, "sql") == 0;
	diag("Dovecot passdb: %s", sql ? "sql (ISPmail)" : "passwd-file");
	log_open(LOG_TARGET_STDERR, 0, LOG_WARNING);
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	struct dovecot_auth_client *c = dovecot_auth_client_create(loop, path, 30000);
	dovecot_auth_client_connect(c);
	WAIT(dovecot_auth_client_ready(c), 10000);
	ok(dovecot_auth_client_ready(c), "handshake with the real Dovecot");
	ok(dovecot_auth_client_has_mech(c, "PLAIN") && dovecot_auth_client_has_mech(c, "LOGIN"),
	   "Dovecot announces PLAIN and LOGIN (mechs: %s)", dovecot_auth_client_mechs(c));

	struct rec a = run_plain(c, "alice@example.com", "alice-secret");
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_OK, "PLAIN alice (SHA512-CRYPT): OK");
	is_str(a.user, "alice@example.com", "user= is the canonical name");

	/* The SQL passdb answers this one "user=alice@example.com<TAB><TAB>
	 * original_user=Alice@Example.COM" (an empty field in the middle). */
	a = run_plain(c, "Alice@Example.COM", "alice-secret");
	ok(a.r == DOVECOT_AUTH_OK && strcmp(a.user, "alice@example.com") == 0,
	   "login typed in another letter case: OK as Dovecot's canonical alice@example.com");

	a = run_plain(c, "alice@example.com", "wrong");
	ok(a.calls == 1 && a.r == DOVECOT_AUTH_FAIL, "PLAIN wrong password: FAIL");

	a = run_plain(c, "carol@example.com", "carol-secret");
	if (sql) {
		/* the guide's password_query returns no extra fields: no nologin */
		ok(a.calls == 1 && a.r == DOVECOT_AUTH_FAIL, "carol is not in virtual_users: FAIL");
	} else {
		ok(a.calls == 1 && a.r == DOVECOT_AUTH_FAIL, "OK + nologin from the passdb: refused (FAIL)");
		is_str(a.reason, "disabled", "with the passdb's reason");
	}

	a = run_plain(c, "nobody@example.com", "x");
	ok(a.r == DOVECOT_AUTH_FAIL, "unknown user: FAIL");

	/* LOGIN, no initial response: Username:, Password: */
	struct rec l = {0};
	struct dovecot_auth_request_info info = info_for("LOGIN", NULL);
	l.req = dovecot_auth_begin(c, &info, rec_cb, &l);
	WAIT(l.calls > 0, 10000);
	ok(l.r == DOVECOT_AUTH_CONTINUE, "LOGIN: first step continues");
	is_str(l.chal, "VXNlcm5hbWU6", "with the Username: prompt");
	step(&l, b64("bob@example.com", 15));
	WAIT(l.calls > 1, 10000);
	is_str(l.chal, "UGFzc3dvcmQ6", "then the Password: prompt");
	step(&l, b64("bob-secret", 10));
	WAIT(l.calls > 2, 10000);
	ok(l.r == DOVECOT_AUTH_OK && strcmp(l.user, "bob@example.com") == 0, "LOGIN bob (%s): OK",
	   sql ? "SHA512-CRYPT" : "SSHA256");

	/* LOGIN with the user name as initial response goes to Password:. */
	struct rec m = {0};
	char ir[128];
	snprintf(ir, sizeof(ir), "%s", b64("bob@example.com", 15));
	info = info_for("LOGIN", ir);
	m.req = dovecot_auth_begin(c, &info, rec_cb, &m);
	WAIT(m.calls > 0, 10000);
	ok(m.r == DOVECOT_AUTH_CONTINUE && strcmp(m.chal, "UGFzc3dvcmQ6") == 0,
	   "LOGIN with initial response: straight to Password:");
	step(&m, b64("bob-secret", 10));
	WAIT(m.calls > 1, 10000);
	ok(m.r == DOVECOT_AUTH_OK, "and OK");

	/* Empty initial response ("AUTH LOGIN ="): resp= with nothing. */
	struct rec e = {0};
	info = info_for("LOGIN", "");
	e.req = dovecot_auth_begin(c, &info, rec_cb, &e);
	WAIT(e.calls > 0, 10000);
	ok(e.r == DOVECOT_AUTH_CONTINUE && strcmp(e.chal, "VXNlcm5hbWU6") == 0,
	   "LOGIN with empty initial response: Username: prompt (empty, not absent, and accepted)");
	/* Abort it mid-exchange: Dovecot takes the CANCEL without a fuss. */
	if (e.req != NULL)
		dovecot_auth_abort(&e.req);
	/* For PLAIN, empty and absent differ: absent gets a challenge, an empty
	 * response is a malformed PLAIN message. */
	struct rec ep = {0};
	info = info_for("PLAIN", "");
	ep.req = dovecot_auth_begin(c, &info, rec_cb, &ep);
	WAIT(ep.calls > 0, 10000);
	ok(ep.calls == 1 && ep.r == DOVECOT_AUTH_FAIL, "PLAIN with empty initial response: Dovecot saw it empty (FAIL)");

	/* PLAIN without initial response: empty challenge, then the data. */
	struct rec p = {0};
	info = info_for("PLAIN", NULL);
	p.req = dovecot_auth_begin(c, &info, rec_cb, &p);
	WAIT(p.calls > 0, 10000);
	ok(p.r == DOVECOT_AUTH_CONTINUE && p.chal[0] == '\0', "PLAIN without initial response: empty challenge");
	char resp[512];
	snprintf(resp, sizeof(resp), "%s", plain_ir("bob@example.com", "bob-secret"));
	step(&p, resp);
	WAIT(p.calls > 1, 10000);
	ok(p.r == DOVECOT_AUTH_OK, "then OK");

	/* Twenty at once, one connection. */
	enum { N = 20 };
	struct rec many[N];
	memset(many, 0, sizeof(many));
	snprintf(resp, sizeof(resp), "%s", plain_ir("alice@example.com", "alice-secret"));
	for (int i = 0; i < N; i++) {
		info = info_for("PLAIN", resp);
		many[i].req = dovecot_auth_begin(c, &info, rec_cb, &many[i]);
	}
	int done = 0;
	for (int i = 0; i < N; i++) {
		WAIT(many[i].calls > 0, 20000);
		done += many[i].calls == 1 && many[i].r == DOVECOT_AUTH_OK;
	}
	is_int(done, N, "20 concurrent PLAIN logins multiplexed on one connection: all OK");
	ok(dovecot_auth_client_ready(c), "connection still up (no protocol error on either side)");

	dovecot_auth_client_destroy(&c);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	ok(uv_loop_close(loop) == 0, "no handle left open");
	return done_testing();
}
