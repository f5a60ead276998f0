/* worker: the worker threads (docs/design.md §3). Each runs its own libuv
 * loop with its listening sockets (net/listener.c) and its sessions. The main
 * thread talks to a worker only through the worker's uv_async (stop, new
 * configuration, watchdog ping) and a few atomics; a worker tells the main
 * thread that it started or finished through the main loop's uv_async. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/buf.h"
#include "core/log.h"
#include "lookup/auth_backend.h"
#include "lookup/table_registry.h"
#include "net/listener.h"
#include "policy/limits_redis.h"
#include "policy/hold_notice.h"
#include "relay/relay.h"
#include "session.h"
#include "worker.h"

/* While stopping, what is still open is logged this often. */
#define SHUTDOWN_REPORT_MS 5000

/* A worker and what only the thread plumbing needs: sessions see the
 * struct worker inside it (worker_thread_of() finds the way back). */
struct worker_thread {
	struct worker w;
	pthread_t thread;
	struct listener *listeners;
	size_t nlisteners;
	uv_async_t wakeup;
	uv_timer_t deadline;
	uint64_t stop_started; /* loop time of the stop request */
	atomic_int stop_requested;
	_Atomic(struct config *) pending_cfg; /* a new snapshot to swap in */
	atomic_uint ping;                     /* watchdog: asked by main */
	atomic_uint pong;                     /* watchdog: answered by the worker */
};

static struct worker_thread *worker_threads;
static unsigned worker_nthreads;
static uv_async_t *worker_main_async; /* a worker started or finished */
static atomic_uint worker_nstarted, worker_nfinished;

static struct worker_thread *worker_thread_of(struct worker *w)
{
	return (struct worker_thread *)((char *)w - offsetof(struct worker_thread, w));
}

static void worker_maybe_done(struct worker_thread *wt)
{
	if (!wt->w.stopping || wt->w.nsessions > 0)
		return;
	hold_notice_cancel(&wt->w.loop); /* no session is left to make a hold */
	relay_pool_free(&wt->w.relay);
	if (wt->w.auth != NULL)
		auth_backend_destroy(&wt->w.auth);
	table_registry_free(&wt->w.tables); /* no session or transaction is left */
	limits_redis_thread_done();
	if (!uv_is_closing((uv_handle_t *)&wt->wakeup))
		uv_close((uv_handle_t *)&wt->wakeup, NULL);
	if (!uv_is_closing((uv_handle_t *)&wt->deadline))
		uv_close((uv_handle_t *)&wt->deadline, NULL);
}

void worker_session_gone(struct worker *w)
{
	worker_maybe_done(worker_thread_of(w));
}

static void worker_deadline_cb(uv_timer_t *t)
{
	struct worker_thread *wt = t->data;
	if (uv_now(&wt->w.loop) - wt->stop_started < WORKER_SHUTDOWN_GRACE_MS) {
		session_log_waiting(&wt->w, "stopping, still waiting for");
		return;
	}
	uv_timer_stop(t);
	/* Sessions still in a transaction past the grace period are cut
	   off: the client never got a 250, so it will retry. Nothing is lost. */
	log_warn("worker %u: %u sessions still open at shutdown deadline, closing them", wt->w.id,
		 wt->w.nsessions);
	uv_stop(&wt->w.loop);
}

/* Runs on the worker right after w->cfg became the new snapshot; the old one
 * is still valid during the call. Per-worker state that depends on the
 * configuration follows it from here (sessions keep their own snapshot). */
static void worker_reconfigure(struct worker_thread *wt, const struct config *old)
{
	struct worker *w = &wt->w;
	/* Pooled downstream connections were opened under the old route and
	   settings: close the idle ones and learn the (maybe new) downstream's
	   capabilities before the next client asks. */
	relay_pool_flush(w->relay);
	relay_pool_probe(w->relay, w->cfg);
	/* older snapshots' tables close once no session uses them */
	table_registry_set_current(w->tables, w->cfg);
	const char *a = old->dovecot_auth_socket, *b = w->cfg->dovecot_auth_socket;
	if (w->id == 0 && ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0)))
		log_warn("reload: dovecot_auth_socket changed; it takes effect after a restart");
	a = old->saslauthd_socket, b = w->cfg->saslauthd_socket;
	if (w->id == 0 && ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0)))
		log_warn("reload: saslauthd_socket changed; it takes effect after a restart");
}

static void worker_wakeup_cb(uv_async_t *a)
{
	struct worker_thread *wt = a->data;
	struct config *next = atomic_exchange(&wt->pending_cfg, NULL);
	if (next != NULL) {
		struct config *old = wt->w.cfg;
		wt->w.cfg = next;
		worker_reconfigure(wt, old);
		config_unref(&old);
	}
	atomic_store(&wt->pong, atomic_load(&wt->ping));
	if (!atomic_load(&wt->stop_requested) || wt->w.stopping)
		return;
	wt->w.stopping = true;
	listener_close(wt->listeners, wt->nlisteners);
	session_shutdown_all(&wt->w);
	relay_pool_flush(wt->w.relay);
	wt->stop_started = uv_now(&wt->w.loop);
	session_log_waiting(&wt->w, "stopping, waiting for");
	uv_timer_start(&wt->deadline, worker_deadline_cb,
		       SHUTDOWN_REPORT_MS < WORKER_SHUTDOWN_GRACE_MS ? SHUTDOWN_REPORT_MS
								     : WORKER_SHUTDOWN_GRACE_MS,
		       SHUTDOWN_REPORT_MS);
	worker_maybe_done(wt);
}

static void *worker_run(void *arg)
{
	struct worker_thread *wt = arg;
	struct worker *w = &wt->w;
	listener_start(wt->listeners, wt->nlisteners);
	/* Learn what Dovecot and the downstream offer before the first client
	   asks; readiness does not wait for them (they are runtime
	   dependencies, and a hang there must not block boot). */
	if (w->cfg->dovecot_auth_socket != NULL) {
		w->auth = auth_backend_dovecot(&w->loop, w->cfg->dovecot_auth_socket,
					       (unsigned)w->cfg->auth_timeout_ms);
		auth_backend_connect(w->auth);
	} else if (w->cfg->saslauthd_socket != NULL) {
		w->auth = auth_backend_saslauthd(&w->loop, w->cfg->saslauthd_socket,
						 w->cfg->saslauthd_service, w->cfg->saslauthd_realm,
						 (unsigned)w->cfg->auth_timeout_ms);
	}
	relay_pool_probe(w->relay, w->cfg);
	limits_redis_thread_start(&w->loop, false);
	atomic_fetch_add(&worker_nstarted, 1);
	uv_async_send(worker_main_async);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	atomic_fetch_add(&worker_nfinished, 1);
	uv_async_send(worker_main_async);
	return NULL;
}

/* ---- the set of workers, main thread ---- */

bool worker_create_all(struct config *cfg, char *err, size_t errlen)
{
	worker_nthreads = cfg->workers;
	worker_threads = xcalloc(worker_nthreads, sizeof(*worker_threads));
	for (unsigned i = 0; i < worker_nthreads; i++) {
		struct worker_thread *wt = &worker_threads[i];
		wt->w.id = i;
		wt->w.cfg = config_ref(cfg);
		list_init(&wt->w.sessions);
		uv_loop_init(&wt->w.loop);
		wt->w.tables = table_registry_new(&wt->w.loop);
		table_registry_set_current(wt->w.tables, wt->w.cfg);
		wt->w.relay = relay_pool_new(&wt->w.loop, wt->w.tables);
		uv_async_init(&wt->w.loop, &wt->wakeup, worker_wakeup_cb);
		wt->wakeup.data = wt;
		uv_timer_init(&wt->w.loop, &wt->deadline);
		wt->deadline.data = wt;
		wt->nlisteners = listener_count();
		if (!listener_open(&wt->w, cfg, &wt->listeners, err, errlen))
			return false;
	}
	listener_plan_done();
	return true;
}

void worker_start_all(uv_async_t *main_async)
{
	worker_main_async = main_async;
	for (unsigned i = 0; i < worker_nthreads; i++)
		pthread_create(&worker_threads[i].thread, NULL, worker_run, &worker_threads[i]);
}

unsigned worker_count(void)
{
	return worker_nthreads;
}

unsigned worker_started_count(void)
{
	return atomic_load(&worker_nstarted);
}

unsigned worker_finished_count(void)
{
	return atomic_load(&worker_nfinished);
}

void worker_reconfigure_all(struct config *next)
{
	/* Each worker swaps the snapshot in on its own loop. A worker that has
	   not taken the previous one yet gets this one. */
	for (unsigned i = 0; i < worker_nthreads; i++) {
		struct worker_thread *wt = &worker_threads[i];
		struct config *old = atomic_exchange(&wt->pending_cfg, config_ref(next));
		config_unref(&old);
		uv_async_send(&wt->wakeup);
	}
}

void worker_stop_all(void)
{
	for (unsigned i = 0; i < worker_nthreads; i++) {
		atomic_store(&worker_threads[i].stop_requested, 1);
		uv_async_send(&worker_threads[i].wakeup);
	}
}

unsigned long worker_stat_total(enum worker_stat which)
{
	unsigned long n = 0;
	for (unsigned i = 0; i < worker_nthreads; i++)
		n += atomic_load_explicit(&worker_threads[i].w.stats[which], memory_order_relaxed);
	return n;
}

int worker_first_silent(void)
{
	for (unsigned i = 0; i < worker_nthreads; i++)
		if (atomic_load(&worker_threads[i].pong) != atomic_load(&worker_threads[i].ping))
			return (int)i;
	return -1;
}

void worker_ping_all(void)
{
	for (unsigned i = 0; i < worker_nthreads; i++) {
		atomic_fetch_add(&worker_threads[i].ping, 1);
		uv_async_send(&worker_threads[i].wakeup);
	}
}

void worker_join_all(void)
{
	for (unsigned i = 0; i < worker_nthreads; i++)
		pthread_join(worker_threads[i].thread, NULL);
}
