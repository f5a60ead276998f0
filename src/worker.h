/* worker: what one worker thread owns (docs/design.md §3). Nothing here is
 * shared with another worker; the configuration snapshot is shared
 * read-only and reference counted. */
#ifndef SUBMITD_WORKER_H
#define SUBMITD_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"

struct session;
struct relay_pool;
struct dovecot_auth_client;
struct sender_login;

struct worker {
	uv_loop_t loop;
	unsigned id;
	struct config *cfg;          /* current snapshot for new sessions */
	struct relay_pool *relay;
	struct dovecot_auth_client *auth; /* NULL without dovecot_auth_socket */
	/* Sender-ownership lookups, one per configuration snapshot still in
	   use by a session (session.c); made on first use. */
	struct worker_sl {
		struct config *cfg;
		struct sender_login *sl;     /* NULL once retired */
		unsigned users;              /* sessions that used it */
		struct worker_sl *next;
	} *sl_list;
	struct session *sessions;    /* doubly linked, for shutdown */
	unsigned nsessions;
	unsigned refusing;           /* refused clients getting their 421 inside TLS */
	uint32_t seq;
	bool stopping;
	/* Counters for systemd's STATUS= line: written by this worker only
	   (worker_stat_add), read by the main thread. */
	atomic_ulong stats[3];
};

enum worker_stat {
	WORKER_STAT_SENT,      /* final 250 passed on after the downstream's 250 */
	WORKER_STAT_DEFERRED,  /* end of DATA answered 4xx */
	WORKER_STAT_REJECTED,  /* end of DATA answered 5xx */
};

static inline void worker_stat_add(struct worker *w, enum worker_stat which)
{
	atomic_fetch_add_explicit(&w->stats[which], 1, memory_order_relaxed);
}

/* Process-wide connection accounting (main.c, net/addrcount.c). Returns false
 * when the client must be turned away. */
bool worker_conn_acquire(const struct sockaddr *peer, const struct config *cfg,
			 const char **why_r);
void worker_conn_release(const struct sockaddr *peer, const struct config *cfg);
/* Called by a session when it is gone (the worker may be stopping). */
void worker_session_gone(struct worker *w);

#endif
