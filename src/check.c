#include "config.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/base64.h"
#include "core/buf.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lookup/auth_backend.h"
#include "dkim/dkim_conf.h"
#include "lookup/dovecot_auth.h"
#include "lookup/table.h"
#include "net/tls.h"
#include "policy/sender_login.h"
#include "relay/relay.h"

#define CHECK_TIMEOUT_MS 5000
/* Dovecot answers a wrong password after auth_failure_delay (2 s), plus up
 * to 15 s of per-address penalty after earlier failures. */
#define CHECK_AUTH_TIMEOUT_MS 20000

struct check_wait {
	uv_timer_t timer;
	bool expired;
	bool done;
	enum table_status status;
};

static void check_timer_cb(uv_timer_t *t)
{
	struct check_wait *cw = t->data;
	cw->expired = true;
}

/* Runs loop until *done or timeout_ms; returns false on timeout. */
static bool check_run_ms(uv_loop_t *loop, struct check_wait *cw, bool (*done)(void *), void *arg,
			 uint64_t timeout_ms)
{
	uv_timer_init(loop, &cw->timer);
	cw->timer.data = cw;
	cw->expired = false;
	uv_timer_start(&cw->timer, check_timer_cb, timeout_ms, 0);
	while (!done(arg) && !cw->expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_timer_stop(&cw->timer);
	uv_close((uv_handle_t *)&cw->timer, NULL);
	return done(arg);
}

static bool check_run(uv_loop_t *loop, struct check_wait *cw, bool (*done)(void *), void *arg)
{
	return check_run_ms(loop, cw, done, arg, CHECK_TIMEOUT_MS);
}

static bool check_dovecot_ready(void *arg)
{
	return dovecot_auth_client_ready(arg);
}

/* saslauthd takes one request per connection and says nothing first: a
 * connection it accepts is all that can be seen without a password. */
static int check_saslauthd(struct config *cfg, FILE *out)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	const char *path = cfg->saslauthd_socket;
	int fd = -1, rc = -1;
	if (strlen(path) < sizeof(sun.sun_path)) {
		memcpy(sun.sun_path, path, strlen(path) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0)
			rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	}
	if (rc == 0)
		fprintf(out, "saslauthd_socket %s: ok, mechanisms: PLAIN LOGIN\n", path);
	else
		fprintf(out,
			"saslauthd_socket %s: FAILED: cannot connect (is saslauthd running, "
			"with -m naming this directory, and may this user open it?)\n",
			path);
	if (fd >= 0)
		close(fd);
	return rc == 0 ? 0 : 1;
}

static int check_dovecot(struct config *cfg, FILE *out)
{
	if (cfg->saslauthd_socket != NULL)
		return check_saslauthd(cfg, out);
	if (cfg->dovecot_auth_socket == NULL) {
		fprintf(out, "dovecot_auth_socket: not set: AUTH is not offered\n");
		return 0;
	}
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct dovecot_auth_client *c =
		dovecot_auth_client_create(&loop, cfg->dovecot_auth_socket, CHECK_TIMEOUT_MS);
	dovecot_auth_client_connect(c);
	struct check_wait cw;
	bool ok = check_run(&loop, &cw, check_dovecot_ready, c);
	if (ok)
		fprintf(out, "dovecot_auth_socket %s: ok, mechanisms: %s\n",
			cfg->dovecot_auth_socket, dovecot_auth_client_mechs(c));
	else
		fprintf(out,
			"dovecot_auth_socket %s: FAILED: no auth handshake (is Dovecot running, "
			"and may this user open the socket?)\n",
			cfg->dovecot_auth_socket);
	dovecot_auth_client_destroy(&c);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return ok ? 0 : 1;
}

static void check_table_cb(void *ctx, enum table_status status, const char *value)
{
	struct check_wait *cw = ctx;
	cw->status = status;
	cw->done = true;
}

static bool check_table_done(void *arg)
{
	return ((struct check_wait *)arg)->done;
}

/* One query for an address nobody owns: any answer but TEMPFAIL proves the
 * table (and its database) is there. */
static int check_table(const char *key, const struct table *t, FILE *out)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct table_inst *ti = table_inst_new(t, &loop);
	struct check_wait cw = {.done = false, .status = TABLE_TEMPFAIL};
	struct table_req *req = table_lookup(ti, "submitd-check@invalid", check_table_cb, &cw);
	bool answered = check_run(&loop, &cw, check_table_done, &cw);
	if (!answered)
		table_cancel(&req);
	bool ok = answered && cw.status != TABLE_TEMPFAIL;
	if (ok)
		fprintf(out, "%s %s: ok\n", key, table_name(t));
	else
		fprintf(out, "%s %s: FAILED: %s\n", key, table_name(t),
			answered ? "lookup failed (database unreachable or query error?)"
				 : "no answer within 5s");
	table_inst_close(&ti);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return ok ? 0 : 1;
}

static int check_tables(const char *key, const char *specs, FILE *out)
{
	if (specs == NULL || specs[0] == '\0')
		return 0;
	int failures = 0;
	char *copy = xstrdup(specs), *save = NULL;
	for (char *spec = strtok_r(copy, ", \t", &save); spec != NULL;
	     spec = strtok_r(NULL, ", \t", &save)) {
		char err[512];
		struct table *t = table_open(spec, err, sizeof(err));
		if (t == NULL) {
			fprintf(out, "%s %s: FAILED: %s\n", key, spec, err);
			failures++;
			continue;
		}
		failures += check_table(key, t, out);
		table_free(&t);
	}
	free(copy);
	return failures;
}

/* ---- a real login, then the sender ownership of that login ---- */

struct check_auth {
	bool done;
	enum dovecot_auth_result result;
	char user[513];
	char reason[256];
};

static void check_auth_cb(void *ctx, enum dovecot_auth_result result, const char *user,
			  const char *challenge_b64, const char *reason)
{
	(void)challenge_b64;
	struct check_auth *ca = ctx;
	ca->done = true;
	ca->result = result;
	snprintf(ca->user, sizeof(ca->user), "%s", user ? user : "");
	snprintf(ca->reason, sizeof(ca->reason), "%s", reason ? reason : "");
}

static bool check_auth_done(void *arg)
{
	return ((struct check_auth *)arg)->done;
}

/* PLAIN's initial response, base64 and NUL-terminated in b64 (the caller
 * wipes it): authzid NUL authcid NUL password (RFC 4616). */
static void check_plain_resp(struct buf *b64, const char *login, const char *password)
{
	struct buf raw = BUF_INIT;
	buf_append(&raw, "", 1);
	buf_append(&raw, login, strlen(login) + 1);
	buf_append(&raw, password, strlen(password));
	base64_encode(b64, buf_data(&raw), buf_len(&raw));
	buf_append(b64, "", 1);
	buf_wipe(&raw);
}

/* The saslauthd side of -t -u: PLAIN through the same client the workers
 * use; on success user_r gets the login. */
static bool check_auth_saslauthd(struct config *cfg, const char *login, const char *password,
				 char *user_r, size_t usersz, FILE *out)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct auth_backend *b =
		auth_backend_saslauthd(&loop, cfg->saslauthd_socket, cfg->saslauthd_service,
				       cfg->saslauthd_realm, CHECK_AUTH_TIMEOUT_MS);
	struct buf b64 = BUF_INIT;
	check_plain_resp(&b64, login, password);
	struct dovecot_auth_request_info info = {.mech = "PLAIN",
						 .initial_resp_b64 = (const char *)buf_data(&b64)};
	struct check_auth ca = {0};
	struct check_wait cw;
	auth_backend_begin(b, &info, check_auth_cb, &ca);
	buf_wipe(&b64);
	check_run_ms(&loop, &cw, check_auth_done, &ca, CHECK_AUTH_TIMEOUT_MS + 1000);
	bool ok = ca.done && ca.result == DOVECOT_AUTH_OK;
	if (ok) {
		fprintf(out, "login %s: ok (saslauthd)\n", login);
		snprintf(user_r, usersz, "%s", ca.user);
	} else if (ca.done && ca.result == DOVECOT_AUTH_FAIL) {
		fprintf(out,
			"login %s: FAILED: saslauthd refused it. Check the password, and "
			"testsaslauthd -f %s -s %s%s%s -u %s -p ...\n",
			login, cfg->saslauthd_socket, cfg->saslauthd_service,
			cfg->saslauthd_realm[0] ? " -r " : "", cfg->saslauthd_realm, login);
	} else {
		fprintf(out, "login %s: FAILED: saslauthd could not check it%s%s\n", login,
			ca.reason[0] ? ": " : "", ca.reason);
	}
	auth_backend_destroy(&b);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return ok;
}

/* AUTH PLAIN through Dovecot; on success user_r gets Dovecot's user=. */
static bool check_auth_plain(struct config *cfg, const char *login, const char *password,
			     char *user_r, size_t usersz, FILE *out)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct dovecot_auth_client *c =
		dovecot_auth_client_create(&loop, cfg->dovecot_auth_socket, CHECK_AUTH_TIMEOUT_MS);
	dovecot_auth_client_connect(c);
	struct check_wait cw_ready, cw_auth;
	bool ok = false;
	struct check_auth ca = {0};
	if (!check_run(&loop, &cw_ready, check_dovecot_ready, c)) {
		fprintf(out, "login %s: FAILED: no handshake on %s\n", login,
			cfg->dovecot_auth_socket);
	} else if (!dovecot_auth_client_has_mech(c, "PLAIN")) {
		fprintf(out,
			"login %s: FAILED: Dovecot does not offer PLAIN (it offers: %s); set "
			"\"auth_mechanisms = plain login\" in Dovecot\n",
			login, dovecot_auth_client_mechs(c));
	} else {
		struct buf b64 = BUF_INIT;
		check_plain_resp(&b64, login, password);
		struct dovecot_auth_request_info info = {.mech = "PLAIN",
							 .local_ip = "127.0.0.1",
							 .remote_ip = "127.0.0.1",
							 .secured = true,
							 .initial_resp_b64 =
								 (const char *)buf_data(&b64)};
		dovecot_auth_begin(c, &info, check_auth_cb, &ca);
		buf_wipe(&b64);
		check_run_ms(&loop, &cw_auth, check_auth_done, &ca, CHECK_AUTH_TIMEOUT_MS + 1000);
	}
	if (ca.done) {
		switch (ca.result) {
		case DOVECOT_AUTH_OK:
			fprintf(out, "login %s: ok, Dovecot's user name is %s\n", login, ca.user);
			snprintf(user_r, usersz, "%s", ca.user);
			ok = true;
			break;
		case DOVECOT_AUTH_FAIL:
			fprintf(out,
				"login %s: FAILED: Dovecot refused it%s%s. Check the password; "
				"that "
				"Dovecot's passdb finds this user (doveadm auth test %s); and, for "
				"hashes stored without a {SCHEME} prefix, default_pass_scheme\n",
				login, ca.reason[0] ? ": " : "", ca.reason, login);
			break;
		case DOVECOT_AUTH_TEMPFAIL:
		case DOVECOT_AUTH_CONTINUE:
		default:
			fprintf(out,
				"login %s: FAILED: Dovecot could not check it%s%s (its passdb, "
				"e.g. "
				"the SQL database, may be down: see Dovecot's log)\n",
				login, ca.reason[0] ? ": " : "", ca.reason);
			break;
		}
	} else if (dovecot_auth_client_ready(c)) {
		fprintf(out, "login %s: FAILED: no answer from Dovecot within %d s\n", login,
			CHECK_AUTH_TIMEOUT_MS / 1000);
	}
	dovecot_auth_client_destroy(&c);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return ok;
}

struct check_owner {
	bool done;
	enum sender_login_result result;
	char owners[512];
};

static void check_owner_cb(void *ctx, enum sender_login_result result, const char *owners)
{
	struct check_owner *co = ctx;
	co->done = true;
	co->result = result;
	snprintf(co->owners, sizeof(co->owners), "%s", owners ? owners : "");
}

static bool check_owner_done(void *arg)
{
	return ((struct check_owner *)arg)->done;
}

static bool check_owner(struct config *cfg, const char *sender, const char *user, FILE *out)
{
	if (cfg->sender_login == NULL) {
		fprintf(out,
			"sender %s: not checked: sender_login_maps is not set (anyone may use "
			"any address)\n",
			sender);
		return true;
	}
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct sender_login *sl = sender_login_new(cfg->sender_login, &loop);
	struct check_owner co = {0};
	struct check_wait cw;
	struct sender_login_req *req = sender_login_check_policy(
		sl, SENDER_LOGIN_REJECT_AUTHENTICATED, sender, user, check_owner_cb, &co);
	if (!check_run(&loop, &cw, check_owner_done, &co))
		sender_login_cancel(&req);
	bool ok = co.done && co.result == SENDER_LOGIN_OWNED;
	if (!co.done)
		fprintf(out, "sender %s: FAILED: sender_login_maps gave no answer within 5 s\n",
			sender);
	else if (ok)
		fprintf(out, "sender %s: ok, owned by %s (sender_login_maps: %s)\n", sender, user,
			co.owners);
	else if (co.result == SENDER_LOGIN_TEMPFAIL)
		fprintf(out,
			"sender %s: FAILED: sender_login_maps lookup failed (database down or "
			"query error?)\n",
			sender);
	else if (co.owners[0] == '\0')
		fprintf(out,
			"sender %s: FAILED: sender_login_maps has no entry for it (an empty SQL "
			"result?): the query must return the login %s for this address\n",
			sender, user);
	else
		fprintf(out,
			"sender %s: FAILED: sender_login_maps says it belongs to \"%s\", not to "
			"the login %s (Dovecot's user name, compared case-insensitively)\n",
			sender, co.owners, user);
	sender_login_free(&sl);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return ok;
}

int check_login(struct config *cfg, const char *login, const char *password, const char *sender,
		FILE *out)
{
	char user[513];
	if (cfg->saslauthd_socket != NULL) {
		if (!check_auth_saslauthd(cfg, login, password, user, sizeof(user), out))
			return 1;
	} else if (cfg->dovecot_auth_socket == NULL) {
		fprintf(out, "login %s: FAILED: dovecot_auth_socket is not set\n", login);
		return 1;
	} else if (!check_auth_plain(cfg, login, password, user, sizeof(user), out)) {
		return 1;
	}
	if (sender == NULL)
		sender = strchr(user, '@') ? user : NULL;
	if (sender == NULL) {
		fprintf(out,
			"sender: not checked: the login has no domain; name an address with -s\n");
		return 0;
	}
	return check_owner(cfg, sender, user, out) ? 0 : 1;
}

/* Every certificate/key pair, in the order GnuTLS tries them (net/tls.h). */
static void check_tls_pairs(const struct config *cfg, FILE *out)
{
	for (size_t i = 0; i < tls_server_npairs(cfg); i++) {
		char desc[512];
		tls_server_describe_pair(cfg, i, desc, sizeof(desc));
		if (i < cfg->ntls_cert_files)
			fprintf(out, "tls: pair %zu: %s\n", i + 1, desc);
		else
			fprintf(out, "tls: SNI pair %zu: %s\n", i + 1 - cfg->ntls_cert_files, desc);
	}
}

int check_neighbours(struct config *cfg, FILE *out)
{
	check_tls_pairs(cfg, out);
	int failures = check_dovecot(cfg, out);
	failures += check_tables("sender_login_maps", cfg->sender_login_maps, out);
	failures += check_tables("header_from_exempt_maps", cfg->header_from_exempt_maps, out);
	if (cfg->relay_password_table != NULL)
		failures += check_table("relay_password_maps", cfg->relay_password_table, out);
	if (cfg->sender_relay_table != NULL)
		failures += check_table("sender_relay_maps", cfg->sender_relay_table, out);
	if (cfg->transport_table != NULL)
		failures += check_table("transport_maps", cfg->transport_table, out);
	failures += relay_check(cfg, out) != 0;
	/* the keys were read and checked at load; what to publish */
	if (cfg->dkim != NULL)
		dkim_conf_describe(cfg->dkim, out);
	return failures;
}
