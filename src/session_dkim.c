/* session_dkim: a message to sign is held whole before it goes to the
 * downstream (dkim/dkim_hold.h); this is the session's side of that. */
#include "config.h"
#include "session_impl.h"

#include "core/log.h"
#include "dkim/dkim_hold.h"
#include "policy/message.h"
#include "smtp/header.h"

static bool session_dkim_out(void *ctx, const uint8_t *p, size_t n);
static void session_dkim_resume(void *ctx);
static void session_dkim_done(void *ctx, bool ok, const char *why);

struct dkim_hold *session_dkim_start(struct session *s, const uint8_t *h,
				     const struct header_info *hi, const struct buf *out)
{
	char from[SMTP_PATH_MAX + 1];
	if (s->cfg->dkim == NULL || !dkim_hold_from(h, hi, from, sizeof(from)))
		return NULL;
	/* A login's message carries the domain's signature only when its From:
	   is held to the login; a trusted client without a login (webmail) is
	   signed as the listener's configuration trusts it. */
	const char *user = smtp_server_user(s->server);
	if (user != NULL && !message_from_enforced(s->cfg, user)) {
		log_info("%s: dkim: not signed: the From: of user %s is not enforced "
			 "(header_from_policy, header_from_exempt_maps or sender_login_maps)",
			 s->id, user);
		return NULL;
	}
	struct dkim_hold_args a = {
		.loop = &s->w->loop,
		.conf = s->cfg->dkim,
		.tmpdir = s->cfg->dkim_temp_directory,
		.mem_limit = s->cfg->dkim_hold_memory,
		.max_size = s->cfg->message_size_limit + s->cfg->header_size_limit,
		.log_id = s->id,
		.cbs = {.out = session_dkim_out,
			.resume = session_dkim_resume,
			.done = session_dkim_done},
		.ctx = s,
	};
	return dkim_hold_start(&a, from, buf_data(out), buf_len(out));
}

static bool session_dkim_out(void *ctx, const uint8_t *p, size_t n)
{
	struct session *s = ctx;
	return s->relay != NULL && relay_txn_write(s->relay, p, n);
}

static void session_dkim_done_do(void *ctx, bool ok, const char *why)
{
	struct session *s = ctx;
	dkim_hold_free(&s->dkim);
	if (!ok || s->relay == NULL) {
		if (!ok)
			log_warn("%s: dkim: message not sent: %s", s->id, why);
		session_txn_reset(s);
		struct smtp_reply r = {.code = 451,
				       .enh = "4.4.2",
				       .text = "Error: lost connection with downstream"};
		struct smtp_reply u = {
			.code = 451,
			.enh = "4.3.0",
			.text = "Error: the message could not be signed, try again later"};
		if (ok) /* signed, but the downstream connection is gone */
			session_metrics_downstream(s, false, &r);
		session_complete(s, ok ? &r : &u);
		return;
	}
	session_relay_end(s);
}

/* The hold took what it was given: reading goes on as after a drain. */
static void session_dkim_resume(void *ctx)
{
	SESSION_TIMED(ctx, session_relay_drain_do(ctx));
}

static void session_dkim_done(void *ctx, bool ok, const char *why)
{
	SESSION_TIMED(ctx, session_dkim_done_do(ctx, ok, why));
}
