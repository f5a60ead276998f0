/* policy/limits: per-login and per-domain limits, the rules that hold a
 * login that looks compromised, and what happens to a held login
 * (README "When an account is compromised", docs/limits.md).
 *
 * Settings are parsed once per configuration snapshot (limits_conf_load
 * from policy_load); the counters, holds and blocks live in one process-wide
 * store (policy/limits_store.h) that outlives reloads.
 *
 * A session embeds a struct limits_session and calls, one call per decision
 * point (session.c, session_conn.c):
 *   limits_session_start / _end   the connection (and the `sessions` list)
 *   limits_session_admit          before every command: a held, kicked or
 *                                 blocked session ends here
 *   limits_session_login          AUTH succeeded (distinct-address rule)
 *   limits_mail                   MAIL: hold (554 5.7.1), message limits
 *                                 (450 4.7.1), asynchronous (overrides)
 *   limits_rcpt                   RCPT: recipient limits (450 4.7.1)
 *   limits_rcpt_result            the downstream's verdict on a recipient
 *   limits_session_data_end       the message's end: held (554 5.7.1),
 *                                 kicked or blocked (421 4.7.1)
 *
 * Replies come back as struct smtp_reply (docs/design.md §9.7). */
#ifndef SUBMITD_POLICY_LIMITS_H
#define SUBMITD_POLICY_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "core/config.h"
#include "core/list.h"
#include "lookup/table.h"
#include "policy/limits_store.h"
#include "smtp/reply.h"

#define LIMITS_RULES_MAX 4

/* COUNT/PERIOD[, COUNT/PERIOD...]; n == 0: none. */
struct limits_rules {
	struct {
		uint64_t count;
		uint64_t period_ms;
	} r[LIMITS_RULES_MAX];
	size_t n;
};

/* Parses a limit list ("100/1h, 1000/1d" or "none"; PERIOD by
 * core/duration.h, at least 1s). False with the reason in err. */
bool limits_rules_parse(const char *s, struct limits_rules *r, char *err, size_t errlen);
/* Writes "100/1h, 1000/1d" (or "none"). */
void limits_rules_format(const struct limits_rules *r, char *out, size_t outsz);

/* A login_limit_maps value: whitespace-separated "message=LIST" and
 * "recipient=LIST" (LIST as above, or none); "none" alone: no limits.
 * Keys not given keep the defaults in r_msg / r_rcpt. */
bool limits_override_parse(const char *v, struct limits_rules *r_msg, struct limits_rules *r_rcpt);

/* Opens login_limit_maps and parses every limit and hold setting of cfg;
 * creates the process store on first use. False with "key: why" in err. */
bool limits_conf_load(struct config *cfg, char *err, size_t errlen);
void limits_conf_free(struct config *cfg);

/* The process store (NULL before the first limits_conf_load). */
struct limits_store *limits_store(void);
/* Replaces the process store (freeing the old one); for tests that need a
 * small one. */
void limits_store_replace(struct limits_store *st);
/* Frees the store and the session registry at exit. */
void limits_shutdown(void);

/* ---- sessions ---- */

typedef void limits_cb(void *ctx, const struct smtp_reply *r);

struct table_registry;
struct table_inst;
struct limits_redis_req;
struct limits_rshare;

struct limits_session {
	struct list_link link; /* in the registry (the `sessions` verb) */
	char id[24];
	char ip[46];       /* INET6_ADDRSTRLEN */
	const char *login; /* "" until AUTH, then owned (an idle session keeps no 256 bytes) */
	unsigned worker;
	time_t started;
	uint64_t login_ms; /* monotonic time of the AUTH, 0: none */
	uint64_t gen_seen; /* store generation at the last check */
	/* the override of this login, once known */
	bool have_rules;
	struct limits_rules *rules; /* [0] messages, [1] recipients; made at first lookup */
	/* the lookup in flight (limits_mail) */
	struct table_registry *tables;
	struct table_inst *ti; /* a registry reference while req is in flight */
	struct table_req *req;
	const struct config *cfg;
	uv_loop_t *loop;
	limits_cb *cb;
	void *cb_ctx;
	bool anonymous;
	struct limits_redis_req *rreq; /* the shared store's MAIL call in flight */
	struct limits_rshare *rshare;  /* recipient counts it gave at MAIL, or NULL */
};

void limits_session_start(struct limits_session *ls, const char *id, const char *ip,
			  unsigned worker);
/* Cancels a lookup in flight (its callback never fires) and unregisters. */
void limits_session_end(struct limits_session *ls);
/* False when the session must end now (held or kicked since it logged in,
 * or its address blocked); why gets the reply text for a 421 4.7.1. */
bool limits_session_admit(struct limits_session *ls, char *why, size_t whylen);
/* The message's end, before it goes downstream: true to send it; false
 * with 554 5.7.1 in r when the login is held now, or 421 4.7.1 (end the
 * session) when it was kicked or the address blocked meanwhile. */
bool limits_session_data_end(struct limits_session *ls, struct smtp_reply *r);
/* AUTH succeeded: records the login and runs the distinct-address rule. */
void limits_session_login(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			  const char *login);
/* MAIL passed the other checks: a held login gets 554 5.7.1, one over a
 * message limit 450 4.7.1 (the message counts once this answers 250).
 * tables: the worker's registry (login_limit_maps).
 * anonymous: a trusted listener's client without AUTH, limited per
 * address. True: answered now, in r. False: the login_limit_maps lookup
 * or the shared store (limits_redis.h) is asked and cb answers on a later
 * loop turn, unless limits_session_end cancels it first. */
bool limits_mail(struct limits_session *ls, const struct config *cfg, struct table_registry *tables,
		 bool anonymous, limits_cb *cb, void *ctx, struct smtp_reply *r);
/* RCPT passed the other checks: true to go on, false with the 450 4.7.1
 * in r. */
bool limits_rcpt(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
		 struct smtp_reply *r);
/* The downstream answered a recipient with code. */
void limits_rcpt_result(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			int code);

/* ---- the control socket (control.c) ---- */

enum limits_hold_result {
	LIMITS_HOLD_SET,
	LIMITS_HOLD_ALREADY, /* held before: nothing changed */
	LIMITS_HOLD_FULL,    /* the store has no room (logged once per episode) */
};

/* Holds login by hand (reason as given); logs and notifies as a rule does. */
enum limits_hold_result limits_hold_manual(uv_loop_t *loop, const struct config *cfg,
					   const char *login, const char *reason);
bool limits_release(const char *login);
bool limits_block(const char *addr, const char *reason);
bool limits_unblock(const char *addr);
/* Ends login's sessions at their next command; returns how many were open. */
unsigned limits_kick(const char *login);

struct limits_session_info {
	char id[24];
	char ip[64];
	char login[256];
	unsigned worker;
	time_t started;
};
typedef void limits_session_each_cb(void *ctx, const struct limits_session_info *i);
void limits_session_each(limits_session_each_cb *cb, void *ctx);
unsigned limits_session_count(void);

/* One line of `submitctl limits LOGIN`. */
struct limits_usage {
	const char *what; /* "login_message_limit", ... */
	uint64_t count, period_ms, used, wait_ms;
};
typedef void limits_usage_cb(void *ctx, const struct limits_usage *u);
/* The default limits of login (not its override) and their use now. */
void limits_usage_each(const struct config *cfg, const char *login, limits_usage_cb *cb, void *ctx);

/* Monotonic milliseconds (the store's clock). */
uint64_t limits_now_ms(void);

#endif
