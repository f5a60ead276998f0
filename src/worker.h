/* worker: what one worker thread owns (DESIGN.md §2). Nothing here is
 * shared with another worker; the configuration snapshot is shared
 * read-only and reference counted. */
#ifndef SUBMITD_WORKER_H
#define SUBMITD_WORKER_H

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
	/* Sender-ownership lookups, made on first use for sl_cfg's tables. */
	struct sender_login *sl;
	struct config *sl_cfg;
	struct session *sessions;    /* doubly linked, for shutdown */
	unsigned nsessions;
	uint32_t seq;
	bool stopping;
};

/* Process-wide connection accounting, lock-free (main.c). Returns false
 * when the client must be turned away. */
bool worker_conn_acquire(const struct sockaddr *peer, const struct config *cfg,
			 const char **why_r);
void worker_conn_release(const struct sockaddr *peer);
/* Called by a session when it is gone (the worker may be stopping). */
void worker_session_gone(struct worker *w);

#endif
