/* policy/limits_redis: the shared part of the limits store when
 * `limit_store = redis:HOST:PORT` or `redis:unix:PATH` (docs/limits.md
 * "Redis"). The memory store (limits_store.h) stays the local authority
 * that always answers; Redis adds what several instances share:
 *
 *   - the message limits at MAIL: one EVAL per decision (holds, address
 *     block and every COUNT/PERIOD rule at once), answered through a
 *     callback, within limit_store_timeout;
 *   - holds, releases, address blocks, kicks and AUTH failures, written to
 *     Redis and announced on the channel PREFIX "events", which every
 *     instance's subscriber (on the main loop) applies to its memory store.
 *
 * Connections: one per thread that asks (each worker's loop, and the main
 * loop for the control socket), plus the subscriber. All asynchronous
 * (hiredis' libuv adapter); a call not answered within the timeout answers
 * "unavailable" and drops the connection, which reconnects with backoff.
 * While Redis is unreachable the caller uses its local counters; one warning
 * is logged per outage and one line when Redis is back.
 *
 * Calls use the calling thread's connection (limits_redis_thread_start);
 * a thread without one answers locally. */
#ifndef SUBMITD_POLICY_LIMITS_REDIS_H
#define SUBMITD_POLICY_LIMITS_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/addrcount.h"
#include "policy/limits_store.h"

/* Key prefix at most this long (limit_store_prefix). */
#define LIMITS_REDIS_PREFIX_MAX 64

/* Parses the value of limit_store: "memory" (*redis_r false) or
 * "redis:HOST:PORT" / "redis:unix:PATH". False with the reason in err. */
bool limits_redis_parse(const char *spec, bool *redis_r, char *err, size_t errlen);

/* Sets the process's Redis from the first configuration (spec as
 * accepted above, prefix, timeout per call). Later calls (reloads) keep the
 * first settings and say so in the log when they differ; auth, this
 * instance's AUTH failure budget, applies to other instances' failures and
 * follows every call. */
void limits_redis_configure(const char *spec, const char *prefix, uint64_t timeout_ms,
			    const struct addrcount_auth_limits *auth);
bool limits_redis_enabled(void);
/* The limit_store value, and whether Redis is taken as reachable now. */
const char *limits_redis_spec(void);
bool limits_redis_up(void);
/* Opens the calling thread's connection on its loop (each worker at its
 * start; the main thread for the control socket, with start_subscriber). */
void limits_redis_thread_start(uv_loop_t *loop, bool start_subscriber);
/* Closes the calling thread's connection (a worker whose loop ends). */
void limits_redis_thread_done(void);

/* Rules of one kind at most (2 * LIMITS_RULES_MAX, policy/limits.h). */
#define LIMITS_REDIS_RULES_MAX 8

/* What the MAIL script said. */
struct limits_redis_verdict {
	bool over; /* a rule is over: which, wait_ms (UINT64_MAX: never fits) */
	size_t which;
	uint64_t wait_ms;
	bool held; /* the login is held in Redis: hold */
	struct limits_hold hold;
	bool blocked; /* the client address is blocked in Redis */
	/* per recipient rule asked: the recipients Redis counts in its window
	   now, and ms until its oldest counted part leaves (0: none counted) */
	size_t rn;
	uint64_t rused[LIMITS_REDIS_RULES_MAX], rwait[LIMITS_REDIS_RULES_MAX];
};

/* ok false: no answer (Redis down, slow, or a reply that did not parse):
 * decide locally. */
typedef void limits_redis_cb(void *ctx, bool ok, const struct limits_redis_verdict *v);

struct limits_redis_req;

/* Asks Redis about a message: login's hold (login "" : none), ip's block,
 * and takes amount from every rule of asks at once (or from none); reads
 * the counters of the recipient rules rasks (the verdict's rused). NULL
 * when no connection is up (the caller decides locally, now); otherwise cb
 * answers exactly once on a later loop turn, within the timeout, unless
 * limits_redis_cancel comes first. */
struct limits_redis_req *limits_redis_take(const char *login, const char *ip,
					   const struct limits_ask *asks, size_t n,
					   const struct limits_ask *rasks, size_t rn,
					   uint64_t amount, limits_redis_cb *cb, void *ctx);
/* Adds amount to the counters of asks in Redis, fire and forget (the
 * recipients a transaction took; dropped while Redis is down). */
void limits_redis_add(const struct limits_ask *asks, size_t n, uint64_t amount);
/* Its callback never fires; *req becomes NULL. */
void limits_redis_cancel(struct limits_redis_req **req);

/* Announcements through the calling thread's connection: written to Redis
 * and published (fire and forget; dropped while Redis is down). */
void limits_redis_hold(const struct limits_hold *h);
void limits_redis_release(const char *login);
void limits_redis_block(const struct limits_block *b);
void limits_redis_unblock(const char *addr);
void limits_redis_kick(const char *login);
void limits_redis_auth_failed(const struct addrcount_key *key,
			      const struct addrcount_auth_limits *lim);

/* ---- pure parts, for t/unit/test-limits-redis.c ---- */

struct redisReply;
/* Decodes the MAIL script's reply for n asks and rn recipient rules; false
 * when it is not exactly what the script returns (type, size, ranges). */
bool limits_redis_decode(const struct redisReply *r, size_t n, size_t rn,
			 struct limits_redis_verdict *v_r);

/* An event on the channel. */
enum limits_redis_event_kind {
	LRE_HOLD,
	LRE_RELEASE,
	LRE_BLOCK,
	LRE_UNBLOCK,
	LRE_KICK,
	LRE_AUTHFAIL,
};
struct limits_redis_event {
	enum limits_redis_event_kind kind;
	char origin[17];           /* the instance that sent it */
	struct limits_hold hold;   /* LRE_HOLD; login for RELEASE and KICK */
	struct limits_block block; /* LRE_BLOCK; addr for UNBLOCK */
	struct addrcount_key key;  /* LRE_AUTHFAIL */
	struct addrcount_auth_limits lim;
};
/* Writes an event as one line of fields separated by tabs; false when a
 * field holds a control character or the line would not fit. */
bool limits_redis_event_format(const struct limits_redis_event *e, char *out, size_t outsz);
/* Parses one (len bytes, not NUL-terminated); false unless it is exactly
 * what limits_redis_event_format writes. */
bool limits_redis_event_parse(const char *s, size_t len, struct limits_redis_event *e_r);

#endif
