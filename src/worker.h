/* worker: what one worker thread owns (docs/design.md §3). Nothing here is
 * shared with another worker; the configuration snapshot is shared
 * read-only and reference counted. */
#ifndef SUBMITD_WORKER_H
#define SUBMITD_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/list.h"

struct session;
struct relay_pool;
struct auth_backend;
struct table_registry;

struct worker {
	uv_loop_t loop;
	unsigned id;
	struct config *cfg; /* current snapshot for new sessions */
	struct relay_pool *relay;
	struct auth_backend *auth; /* NULL without dovecot_auth_socket or saslauthd_socket */
	/* Table instances per configuration snapshot, shared by the sessions
	   and relay transactions of that snapshot (lookup/table_registry.h). */
	struct table_registry *tables;
	struct list_link sessions; /* struct session.link, for shutdown */
	unsigned nsessions;
	unsigned refusing; /* refused clients getting their 421 inside TLS */
	uint32_t seq;
	bool stopping;
	/* Counters for systemd's STATUS= line: written by this worker only
	   (worker_stat_add), read by the main thread. */
	atomic_ulong stats[3];
};

enum worker_stat {
	WORKER_STAT_SENT,     /* final 250 passed on after the downstream's 250 */
	WORKER_STAT_DEFERRED, /* end of DATA answered 4xx */
	WORKER_STAT_REJECTED, /* end of DATA answered 5xx */
};

static inline void worker_stat_add(struct worker *w, enum worker_stat which)
{
	atomic_fetch_add_explicit(&w->stats[which], 1, memory_order_relaxed);
}

/* Called by a session when it is gone (the worker may be stopping). */
void worker_session_gone(struct worker *w);

/* ---- the worker threads, main thread only ---- */

/* How long a stopping worker lets its sessions finish their mail. */
#define WORKER_SHUTDOWN_GRACE_MS 30000

/* Creates cfg->workers workers, each with its own loop, relay pool and
 * listeners (net/listener.h, planned before); nothing runs yet. False, with
 * err filled in and errno set, when a listener cannot be opened. */
bool worker_create_all(struct config *cfg, char *err, size_t errlen);
/* Starts the threads. Each signals main_async (from its thread) once it
 * listens and once its loop has ended. */
void worker_start_all(uv_async_t *main_async);
unsigned worker_count(void);
/* Workers listening so far, and workers whose loop has ended. */
unsigned worker_started_count(void);
unsigned worker_finished_count(void);
/* Hands every worker the new snapshot (it takes its own reference); each
 * swaps it in on its own loop, and its new sessions use it. */
void worker_reconfigure_all(struct config *next);
/* Graceful stop: no new connections, open sessions finish their mail within
 * WORKER_SHUTDOWN_GRACE_MS, then each loop ends. */
void worker_stop_all(void);
/* One counter summed over the workers (for STATUS=). */
unsigned long worker_stat_total(enum worker_stat which);
/* Watchdog: the first worker that has not answered the previous ping, or -1;
 * then worker_ping_all() asks again. */
int worker_first_silent(void);
void worker_ping_all(void);
/* Waits for every thread to end. */
void worker_join_all(void);

#endif
