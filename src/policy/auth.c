#include "config.h"
#include "policy/auth.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <gnutls/gnutls.h>

#include "core/base64.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "lookup/saslauthd.h"
#include "net/addrcount.h"
#include "policy/limits_redis.h"

/* Mechanisms whose exchange is nothing but base64 lines, so they can be
 * relayed to Dovecot unchanged. Channel-binding (-PLUS), EXTERNAL,
 * ANONYMOUS and GSSAPI are left out: they depend on the connection itself
 * or grant access without a secret. SCRAM ends with server data in
 * Dovecot's OK (resp=), which would need an extra 334 round: not yet. */
static const char *const policy_auth_relayable[] = {
	"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", NULL,
};

enum policy_auth_state { PA_IDLE, PA_DOVECOT, PA_CLIENT, PA_ANSWER };

_Static_assert(POLICY_AUTH_USER_MAX >= SASLAUTHD_MAX_FIELD,
	       "every login saslauthd accepts fits the answer whole");

struct policy_auth {
	uv_timer_t timer; /* deferred answers and failure delays */
	struct auth_backend *client;
	const struct config *cfg;
	policy_auth_cb *cb;
	void *ctx;
	struct auth_backend_request *req;
	enum policy_auth_state state;
	char mech[32];
	char login[128]; /* for logs; never the password */
	char session_id[32];
	char client_desc[80]; /* "[ip]:port" */
	const struct sockaddr *peer;
	/* The attempt under way: sent to Dovecot and not yet ended (every
	   attempt ends exactly once: OK, failure, or the backend's trouble). */
	bool attempt;
	bool charged; /* counted in the per-address budget */
	struct addrcount_key key;
	struct addrcount_auth_limits lim;
	unsigned failures;
	unsigned steps;
	uint64_t sent_ns; /* uv_hrtime() at the step sent to the backend (core/metrics.h) */
	/* the answer waiting for the timer */
	struct policy_auth_result answer;
	char answer_text[512];
	char answer_user[POLICY_AUTH_USER_MAX + 1];
};

/* ---- the attempt and the per-address budget ----
 * An attempt counts from the moment it is sent to Dovecot (net/addrcount.c
 * keeps it as pending until it ends), so a client cannot guess faster than
 * the budget by hanging up before the answer: the answer it walked away
 * from is still awaited, logged and counted (policy_auth_orphan below). */

static void policy_auth_end_attempt(struct addrcount_key *key,
				    const struct addrcount_auth_limits *lim, bool *charged,
				    bool failed)
{
	if (*charged)
		addrcount_auth_end(addrcount_global(), key, lim, failed, addrcount_now());
	if (*charged && failed)
		limits_redis_auth_failed(key, lim); /* the other instances count it too */
	*charged = false;
}

/* Every AUTH outcome is counted here, and every failure's log line ends in
 * ", cause=" and one of these words (docs/observability.md): */
static const char *const policy_auth_causes[METRICS_AUTH_RESULTS] = {
	[METRICS_AUTH_SUCCESS] = "success",
	[METRICS_AUTH_WRONG_CREDENTIALS] = "wrong_credentials",
	[METRICS_AUTH_BACKEND_UNAVAILABLE] = "backend_unavailable",
	[METRICS_AUTH_ABORTED] = "aborted",
	[METRICS_AUTH_BLOCKED] = "blocked",
	[METRICS_AUTH_UNKNOWN_MECHANISM] = "unknown_mechanism",
};

static const char *policy_auth_cause(const char *mech, enum metrics_auth_result r)
{
	metrics_auth(r == METRICS_AUTH_UNKNOWN_MECHANISM ? METRICS_MECH_UNKNOWN
							 : metrics_auth_mech(mech),
		     r);
	return policy_auth_causes[r];
}

/* The line fail2ban matches (conf/fail2ban/filter.d/submitd.conf): one per
 * attempt that did not succeed, whether or not the client saw the answer. */
static void policy_auth_log_failure(const char *session_id, const char *client_desc,
				    const char *mech, const char *login, const char *reason,
				    const char *gone, enum metrics_auth_result cause)
{
	log_warn("%s: %s: SASL %s authentication failed: login=<%s>, reason=%s%s, cause=%s",
		 session_id, client_desc, mech, login, reason ? reason : "authentication failure",
		 gone, policy_auth_cause(mech, cause));
}

/* A step still with Dovecot when its session ended: kept until Dovecot
 * answers (or the request times out), then counted and logged like any
 * other attempt. Memory: one per attempt in flight; the per-address budget
 * bounds how many an address can have, POLICY_AUTH_MAX_ORPHANS how many a
 * worker keeps, the request timeout how long. */
struct policy_auth_orphan {
	struct auth_backend *client;
	struct auth_backend_request *req;
	bool charged;
	/* The client left (a guesser may hang up to read the answer's
	   timing): anything but OK is a failure. The server ended it
	   (shutting down): only Dovecot's FAIL is. */
	bool client_left;
	struct addrcount_key key;
	struct addrcount_auth_limits lim;
	char mech[32], login[128], session_id[32], client_desc[80];
};

/* Orphans per worker at most: past that (a flood of clients from addresses
 * without a budget, client_limit_exceptions, that hang up after AUTH), the
 * request is cancelled and the attempt logged and counted as failed at
 * once, so Dovecot's work and our memory stay bounded. */
#define POLICY_AUTH_MAX_ORPHANS 256
static _Thread_local unsigned policy_auth_orphans;

#define POLICY_AUTH_GONE " (the client left before the answer)"
#define POLICY_AUTH_ENDED " (the server ended the exchange before the answer)"

static void policy_auth_orphan_cb(void *ctx, enum dovecot_auth_result r, const char *user,
				  const char *challenge, const char *reason)
{
	struct policy_auth_orphan *o = ctx;
	(void)challenge;
	policy_auth_orphans--;
	if (r == DOVECOT_AUTH_OK) {
		log_info("%s: %s: SASL %s authentication succeeded after the client left: "
			 "sasl_username=%s, cause=%s",
			 o->session_id, o->client_desc, o->mech, user,
			 policy_auth_cause(o->mech, METRICS_AUTH_SUCCESS));
		policy_auth_end_attempt(&o->key, &o->lim, &o->charged, false);
		free(o);
		return;
	}
	if (r == DOVECOT_AUTH_CONTINUE)
		auth_backend_abort(o->client, &o->req); /* nobody will answer the challenge */
	if (!o->client_left && r != DOVECOT_AUTH_FAIL) {
		log_warn("%s: %s: SASL %s authentication unavailable: %s%s, cause=%s",
			 o->session_id, o->client_desc, o->mech, reason ? reason : "no answer",
			 POLICY_AUTH_ENDED, policy_auth_cause(o->mech, METRICS_AUTH_ABORTED));
		policy_auth_end_attempt(&o->key, &o->lim, &o->charged, false);
		free(o);
		return;
	}
	policy_auth_log_failure(o->session_id, o->client_desc, o->mech, o->login,
				r == DOVECOT_AUTH_CONTINUE ? NULL : reason,
				o->client_left ? POLICY_AUTH_GONE : POLICY_AUTH_ENDED,
				r == DOVECOT_AUTH_FAIL ? METRICS_AUTH_WRONG_CREDENTIALS
						       : METRICS_AUTH_ABORTED);
	policy_auth_end_attempt(&o->key, &o->lim, &o->charged, true);
	free(o);
}

/* The exchange ends with no answer for the client to wait for: it left,
 * cancelled with "*", or sent a line that cannot go on. A step with Dovecot
 * is left to finish as an orphan; otherwise an attempt under way has failed
 * (Dovecot never got to say OK). */
static void policy_auth_let_go(struct policy_auth *pa, const char *why, bool client_left)
{
	if (pa->attempt && pa->state == PA_DOVECOT && pa->req != NULL &&
	    policy_auth_orphans < POLICY_AUTH_MAX_ORPHANS) {
		policy_auth_orphans++;
		struct policy_auth_orphan *o = xcalloc(1, sizeof(*o));
		o->client = pa->client;
		o->req = pa->req;
		o->charged = pa->charged;
		o->client_left = client_left;
		o->key = pa->key;
		o->lim = pa->lim;
		memcpy(o->mech, pa->mech, sizeof(o->mech));
		memcpy(o->login, pa->login, sizeof(o->login));
		memcpy(o->session_id, pa->session_id, sizeof(o->session_id));
		memcpy(o->client_desc, pa->client_desc, sizeof(o->client_desc));
		auth_backend_detach(pa->client, pa->req, policy_auth_orphan_cb, o);
		pa->req = NULL;
		pa->charged = false;
		pa->attempt = false;
		return;
	}
	auth_backend_abort(pa->client, &pa->req);
	if (pa->attempt) {
		policy_auth_log_failure(pa->session_id, pa->client_desc, pa->mech, pa->login, why,
					"", METRICS_AUTH_ABORTED);
		policy_auth_end_attempt(&pa->key, &pa->lim, &pa->charged, true);
		pa->attempt = false;
	}
}

/* ---- answers ---- */

static void policy_auth_timer_cb(uv_timer_t *t)
{
	struct policy_auth *pa = t->data;
	pa->state = pa->answer.code == 334 ? PA_CLIENT : PA_IDLE;
	pa->cb(pa->ctx, &pa->answer);
}

static void policy_auth_answer(struct policy_auth *pa, uint64_t delay_ms, int code, const char *enh,
			       const char *text, const char *user)
{
	snprintf(pa->answer_text, sizeof(pa->answer_text), "%s", text);
	snprintf(pa->answer_user, sizeof(pa->answer_user), "%s", user ? user : "");
	pa->answer = (struct policy_auth_result){
		.code = code,
		.enh = enh,
		.text = pa->answer_text,
		.user = user ? pa->answer_user : NULL,
		.close_after = false,
	};
	pa->state = PA_ANSWER;
	uv_timer_start(&pa->timer, policy_auth_timer_cb, delay_ms, 0);
}

struct policy_auth *policy_auth_new(uv_loop_t *loop, struct auth_backend *client,
				    const struct config *cfg, policy_auth_cb *cb, void *ctx)
{
	struct policy_auth *pa = xcalloc(1, sizeof(*pa));
	uv_timer_init(loop, &pa->timer);
	pa->timer.data = pa;
	pa->client = client;
	pa->cfg = cfg;
	pa->cb = cb;
	pa->ctx = ctx;
	return pa;
}

static void policy_auth_close_cb(uv_handle_t *h)
{
	struct policy_auth *pa = h->data;
	explicit_bzero(pa, sizeof(*pa));
	free(pa);
}

void policy_auth_free(struct policy_auth **pap)
{
	struct policy_auth *pa = *pap;
	if (pa == NULL)
		return;
	*pap = NULL;
	policy_auth_let_go(pa, "the client left before the answer", true);
	uv_timer_stop(&pa->timer);
	uv_close((uv_handle_t *)&pa->timer, policy_auth_close_cb);
}

static bool policy_auth_relayable_mech(const char *mech)
{
	for (size_t i = 0; policy_auth_relayable[i] != NULL; i++)
		if (strcasecmp(mech, policy_auth_relayable[i]) == 0)
			return true;
	return false;
}

/* What we offer before Dovecot ever answered: the mechanisms every Dovecot
 * has, so clients keep trying (and get 454) rather than give up on AUTH
 * (docs/dovecot-auth.md). */
#define POLICY_AUTH_DEFAULT_MECHS "PLAIN LOGIN"

void policy_auth_mechs(struct auth_backend *client, char *out, size_t outsz)
{
	out[0] = '\0';
	if (client == NULL)
		return;
	char copy[512];
	const char *mechs = auth_backend_mechs(client);
	snprintf(copy, sizeof(copy), "%s", mechs[0] != '\0' ? mechs : POLICY_AUTH_DEFAULT_MECHS);
	size_t o = 0;
	char *save = NULL;
	for (char *m = strtok_r(copy, " ", &save); m != NULL; m = strtok_r(NULL, " ", &save)) {
		if (!policy_auth_relayable_mech(m))
			continue;
		int n = snprintf(out + o, outsz - o, "%s%s", o ? " " : "", m);
		if (n < 0 || (size_t)n >= outsz - o)
			break;
		o += (size_t)n;
	}
}

/* Remembers the login name the client typed, for the log: PLAIN's authcid
 * or LOGIN's first response. The decoded buffer is wiped at once. */
static void policy_auth_note_login(struct policy_auth *pa, const char *b64, bool plain)
{
	if (b64 == NULL || b64[0] == '\0' || pa->login[0] != '\0')
		return;
	gnutls_datum_t in = {(unsigned char *)b64, (unsigned)strlen(b64)}, out = {NULL, 0};
	if (gnutls_base64_decode2(&in, &out) < 0)
		return;
	const char *p = (const char *)out.data;
	size_t n = out.size;
	if (plain) {
		const char *nul = memchr(p, '\0', n);
		if (nul == NULL) {
			n = 0;
		} else {
			n -= (size_t)(nul + 1 - p);
			p = nul + 1;
			const char *nul2 = memchr(p, '\0', n);
			n = nul2 ? (size_t)(nul2 - p) : 0;
		}
	}
	if (n > 0)
		log_sanitize(pa->login, sizeof(pa->login), p, n);
	explicit_bzero(out.data, out.size);
	gnutls_free(out.data);
}

static void policy_auth_failed(struct policy_auth *pa, const char *reason)
{
	pa->failures++;
	pa->attempt = false;
	policy_auth_end_attempt(&pa->key, &pa->lim, &pa->charged, true);
	policy_auth_log_failure(pa->session_id, pa->client_desc, pa->mech, pa->login, reason, "",
				METRICS_AUTH_WRONG_CREDENTIALS);
	uint64_t delay = pa->cfg->auth_failure_delay_ms;
	for (unsigned i = 1; i < pa->failures && delay < pa->cfg->auth_failure_delay_max_ms; i++)
		delay *= 2;
	if (delay > pa->cfg->auth_failure_delay_max_ms)
		delay = pa->cfg->auth_failure_delay_max_ms;
	char text[300];
	snprintf(text, sizeof(text), "Error: authentication failed: %s",
		 reason ? reason : "authentication failure");
	policy_auth_answer(pa, delay, 535, "5.7.8", text, NULL);
	if (pa->failures >= pa->cfg->auth_max_failures)
		pa->answer.close_after = true;
}

static void policy_auth_dovecot_cb(void *ctx, enum dovecot_auth_result r, const char *user,
				   const char *challenge, const char *reason)
{
	struct policy_auth *pa = ctx;
	char text[300];
	/* the backend's health and answer time, as policy sees them */
	metrics_observe(METRICS_H_LOOKUP, auth_backend_name(pa->client), NULL,
			uv_hrtime() - pa->sent_ns);
	metrics_backend_up(auth_backend_name(pa->client), NULL, r != DOVECOT_AUTH_TEMPFAIL);
	switch (r) {
	case DOVECOT_AUTH_OK:
		pa->req = NULL;
		pa->attempt = false;
		policy_auth_end_attempt(&pa->key, &pa->lim, &pa->charged, false);
		if (user == NULL || strlen(user) > POLICY_AUTH_USER_MAX) {
			/* A name cut short could be someone else's (sender
			   ownership): refused whole, as a server fault. */
			log_warn("%s: %s: SASL %s authentication unavailable: the user name "
				 "is longer than %d bytes, cause=%s",
				 pa->session_id, pa->client_desc, pa->mech, POLICY_AUTH_USER_MAX,
				 policy_auth_cause(pa->mech, METRICS_AUTH_BACKEND_UNAVAILABLE));
			policy_auth_answer(pa, 0, 454, "4.7.0",
					   "Temporary authentication failure: "
					   "user name too long",
					   NULL);
			return;
		}
		log_info("%s: client=%s, sasl_method=%s, sasl_username=%s", pa->session_id,
			 pa->client_desc, pa->mech, user);
		(void)policy_auth_cause(pa->mech, METRICS_AUTH_SUCCESS);
		policy_auth_answer(pa, 0, 235, "2.7.0", "Authentication successful", user);
		return;
	case DOVECOT_AUTH_CONTINUE:
		policy_auth_answer(pa, 0, 334, "", challenge, NULL);
		return;
	case DOVECOT_AUTH_FAIL:
		pa->req = NULL;
		policy_auth_failed(pa, reason);
		return;
	case DOVECOT_AUTH_TEMPFAIL:
		pa->req = NULL;
		/* Dovecot's trouble, not the client's: refunded. */
		pa->attempt = false;
		policy_auth_end_attempt(&pa->key, &pa->lim, &pa->charged, false);
		log_warn("%s: %s: SASL %s authentication unavailable: %s, cause=%s", pa->session_id,
			 pa->client_desc, pa->mech,
			 reason ? reason : "authentication server unavailable",
			 policy_auth_cause(pa->mech, METRICS_AUTH_BACKEND_UNAVAILABLE));
		/* 454: the client must not ask its user for a new password
		   (RFC 4954 §6, docs/design.md invariant 4). */
		snprintf(text, sizeof(text), "Temporary authentication failure%s%s",
			 reason ? ": " : "", reason ? reason : "");
		policy_auth_answer(pa, 0, 454, "4.7.0", text, NULL);
		return;
	}
}

void policy_auth_command(struct policy_auth *pa, const struct policy_auth_session *sess,
			 const char *args, size_t len)
{
	snprintf(pa->session_id, sizeof(pa->session_id), "%s", sess->session_id);
	snprintf(pa->client_desc, sizeof(pa->client_desc), "[%s]:%u", sess->remote_ip,
		 sess->remote_port);
	pa->peer = sess->peer;
	pa->login[0] = '\0';
	pa->steps = 0;

	const char *sp = memchr(args, ' ', len);
	size_t mlen = sp ? (size_t)(sp - args) : len;
	const char *ir = NULL;
	size_t irlen = 0;
	if (sp != NULL) {
		ir = sp + 1;
		irlen = len - mlen - 1;
	}
	if (mlen == 0 || mlen >= sizeof(pa->mech) ||
	    (ir != NULL && (irlen == 0 || memchr(ir, ' ', irlen)))) {
		policy_auth_answer(pa, 0, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]",
				   NULL);
		return;
	}
	memcpy(pa->mech, args, mlen);
	pa->mech[mlen] = '\0';
	for (char *c = pa->mech; *c; c++)
		*c = (char)toupper((unsigned char)*c);

	char offered[256];
	policy_auth_mechs(pa->client, offered, sizeof(offered));
	bool known = false;
	char copy[256], *save = NULL;
	snprintf(copy, sizeof(copy), "%s", offered);
	for (char *m = strtok_r(copy, " ", &save); m && !known; m = strtok_r(NULL, " ", &save))
		known = strcmp(m, pa->mech) == 0;
	if (!known) {
		/* not "failed": fail2ban's line is for guessed passwords */
		log_info("%s: %s: SASL %s authentication refused: mechanism not offered, cause=%s",
			 pa->session_id, pa->client_desc, pa->mech,
			 policy_auth_cause(pa->mech, METRICS_AUTH_UNKNOWN_MECHANISM));
		policy_auth_answer(pa, 0, 504, "5.5.4", "Unrecognized authentication type", NULL);
		return;
	}
	if (auth_backend_mechs(pa->client)[0] == '\0') {
		/* Dovecot has not answered a handshake yet: temporary. */
		auth_backend_connect(pa->client);
		log_warn("%s: %s: SASL %s authentication unavailable: no connection to %s yet, "
			 "cause=%s",
			 pa->session_id, pa->client_desc, pa->mech, auth_backend_name(pa->client),
			 policy_auth_cause(pa->mech, METRICS_AUTH_BACKEND_UNAVAILABLE));
		policy_auth_answer(
			pa, 0, 454, "4.7.0",
			"Temporary authentication failure: authentication server not available",
			NULL);
		return;
	}
	char *irbuf = NULL;
	if (ir != NULL) {
		if (irlen > DOVECOT_AUTH_MAX_RESP) {
			policy_auth_answer(pa, 0, 500, "5.5.6",
					   "Authentication Exchange line is too long", NULL);
			return;
		}
		if (!(irlen == 1 && ir[0] == '=') && !base64_valid(ir, irlen)) {
			policy_auth_answer(pa, 0, 501, "5.5.2", "Cannot decode response", NULL);
			return;
		}
	}
	pa->charged = false;
	if (!config_limit_exempt(pa->cfg, sess->peer)) {
		addrcount_key(sess->peer, pa->cfg->ipv6_client_prefix, &pa->key);
		pa->lim = (struct addrcount_auth_limits){
			.limit = pa->cfg->auth_ip_failure_limit,
			.window_ms = pa->cfg->auth_ip_failure_window_ms,
			.block_ms = pa->cfg->auth_ip_block_time_ms,
		};
		if (!addrcount_auth_begin(addrcount_global(), &pa->key, &pa->lim,
					  addrcount_now())) {
			log_warn("%s: %s: SASL %s authentication refused: too many failures from "
				 "this address, cause=%s",
				 pa->session_id, pa->client_desc, pa->mech,
				 policy_auth_cause(pa->mech, METRICS_AUTH_BLOCKED));
			policy_auth_answer(
				pa, 0, 454, "4.7.0",
				"Too many failed logins from your address, try again later", NULL);
			return;
		}
		pa->charged = pa->lim.limit > 0;
	}
	if (ir != NULL) {
		irbuf = xstrndup(ir, irlen);
		if (irlen == 1 && ir[0] == '=')
			irbuf[0] = '\0'; /* "=": an empty initial response (RFC 4954 §4) */
		policy_auth_note_login(pa, irbuf, strcmp(pa->mech, "PLAIN") == 0);
		if (strcmp(pa->mech, "LOGIN") == 0 || strcmp(pa->mech, "PLAIN") == 0)
			pa->steps++;
	}
	struct dovecot_auth_request_info info = {
		.mech = pa->mech,
		.service = "smtp",
		.session_id = sess->session_id,
		.local_ip = sess->local_ip,
		.remote_ip = sess->remote_ip,
		.local_name = sess->local_name && sess->local_name[0] ? sess->local_name : NULL,
		.local_port = sess->local_port,
		.remote_port = sess->remote_port,
		.real_remote_ip = sess->real_remote_ip,
		.real_remote_port = sess->real_remote_port,
		.secured = true, /* the server offers AUTH only under TLS */
		.initial_resp_b64 = irbuf,
	};
	pa->state = PA_DOVECOT;
	pa->attempt = true;
	pa->sent_ns = uv_hrtime();
	pa->req = auth_backend_begin(pa->client, &info, policy_auth_dovecot_cb, pa);
	if (irbuf != NULL)
		xfree_secret(&irbuf);
}

/* The client ended the exchange with an unusable line: the attempt counts
 * as failed (RFC 4954 §4 answers; the session's failure count goes up). */
static void policy_auth_client_ended(struct policy_auth *pa, const char *why, int code,
				     const char *enh, const char *text)
{
	bool counted = pa->attempt;
	policy_auth_let_go(pa, why, true);
	policy_auth_answer(pa, 0, code, enh, text, NULL);
	if (counted && ++pa->failures >= pa->cfg->auth_max_failures)
		pa->answer.close_after = true;
}

void policy_auth_response(struct policy_auth *pa, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		policy_auth_client_ended(pa, "cancelled by the client", 501, "5.7.0",
					 "Authentication aborted");
		return;
	}
	if (len > DOVECOT_AUTH_MAX_RESP) {
		policy_auth_client_ended(pa, "response line too long", 500, "5.5.6",
					 "Authentication Exchange line is too long");
		return;
	}
	if (!base64_valid(line, len)) {
		policy_auth_client_ended(pa, "response not base64", 501, "5.5.2",
					 "Cannot decode response");
		return;
	}
	char *resp = xstrndup(line, len);
	/* LOGIN's first answer is the user name; PLAIN's only one holds it. */
	if (pa->steps == 0 && (strcmp(pa->mech, "LOGIN") == 0 || strcmp(pa->mech, "PLAIN") == 0))
		policy_auth_note_login(pa, resp, strcmp(pa->mech, "PLAIN") == 0);
	pa->steps++;
	pa->state = PA_DOVECOT;
	pa->sent_ns = uv_hrtime();
	auth_backend_continue(pa->client, pa->req, resp);
	xfree_secret(&resp);
}

void policy_auth_cancel(struct policy_auth *pa)
{
	policy_auth_let_go(pa, "the exchange was ended by the server", false);
	uv_timer_stop(&pa->timer);
	pa->state = PA_IDLE;
}
