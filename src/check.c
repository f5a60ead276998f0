#include "config.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/buf.h"
#include "lookup/dovecot_auth.h"
#include "lookup/table.h"
#include "relay/relay.h"

#define CHECK_TIMEOUT_MS 5000

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

/* Runs loop until *done or the timeout; returns false on timeout. */
static bool check_run(uv_loop_t *loop, struct check_wait *cw, bool (*done)(void *), void *arg)
{
	uv_timer_init(loop, &cw->timer);
	cw->timer.data = cw;
	cw->expired = false;
	uv_timer_start(&cw->timer, check_timer_cb, CHECK_TIMEOUT_MS, 0);
	while (!done(arg) && !cw->expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_timer_stop(&cw->timer);
	uv_close((uv_handle_t *)&cw->timer, NULL);
	return done(arg);
}

static bool check_dovecot_ready(void *arg) { return dovecot_auth_client_ready(arg); }

static int check_dovecot(struct config *cfg, FILE *out)
{
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
		fprintf(out, "dovecot_auth_socket %s: ok, mechanisms: %s\n", cfg->dovecot_auth_socket,
			dovecot_auth_client_mechs(c));
	else
		fprintf(out, "dovecot_auth_socket %s: FAILED: no auth handshake (is Dovecot running, "
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

static bool check_table_done(void *arg) { return ((struct check_wait *)arg)->done; }

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

int check_neighbours(struct config *cfg, FILE *out)
{
	int failures = check_dovecot(cfg, out);
	failures += check_tables("sender_login_maps", cfg->sender_login_maps, out);
	failures += check_tables("header_from_exempt_maps", cfg->header_from_exempt_maps, out);
	if (cfg->relay_password_maps != NULL)
		failures += check_table("relay_password_maps", cfg->relay_password_maps, out);
	if (cfg->sender_relay_maps != NULL)
		failures += check_table("sender_relay_maps", cfg->sender_relay_maps, out);
	failures += relay_check(cfg, out) != 0;
	return failures;
}
