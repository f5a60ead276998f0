/* main: the process — arguments, configuration, listeners, worker threads,
 * signals (DESIGN.md §2). The only file that knows the listeners. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "lookup/dovecot_auth.h"
#include "net/tls.h"
#include "policy/policy.h"
#include "policy/sender_login.h"
#include "relay/relay.h"
#include "session.h"
#include "worker.h"

#define DEFAULT_CONFIG SYSCONFDIR "/submitd/submitd.conf"
#define SHUTDOWN_GRACE_MS 30000

/* ---- connection accounting: lock-free, shared by all workers ----
 * Per-IP counts live in a fixed table of atomic counters indexed by a hash
 * of the address; a collision can only make a count look higher, never let
 * a client past its limit. */
#define CONN_BUCKETS 65536
static atomic_uint conn_total;
static atomic_uint conn_per_ip[CONN_BUCKETS];

static unsigned main_ip_bucket(const struct sockaddr *sa)
{
	const uint8_t *p;
	size_t n;
	if (sa->sa_family == AF_INET6) {
		p = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		n = 16;
	} else {
		p = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		n = 4;
	}
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h % CONN_BUCKETS;
}

bool worker_conn_acquire(const struct sockaddr *peer, const struct config *cfg, const char **why_r)
{
	unsigned b = main_ip_bucket(peer);
	if (atomic_fetch_add(&conn_total, 1) >= cfg->max_connections) {
		atomic_fetch_sub(&conn_total, 1);
		*why_r = "too many connections";
		return false;
	}
	if (atomic_fetch_add(&conn_per_ip[b], 1) >= cfg->max_connections_per_ip) {
		atomic_fetch_sub(&conn_per_ip[b], 1);
		atomic_fetch_sub(&conn_total, 1);
		*why_r = "too many connections from your address";
		return false;
	}
	return true;
}

void worker_conn_release(const struct sockaddr *peer)
{
	atomic_fetch_sub(&conn_per_ip[main_ip_bucket(peer)], 1);
	atomic_fetch_sub(&conn_total, 1);
}

/* ---- workers ---- */

struct listener {
	uv_tcp_t tcp;
	struct worker *w;
	size_t idx;
};

struct worker_thread {
	struct worker w;
	pthread_t thread;
	struct listener *listeners;
	size_t nlisteners;
	int *fds;
	uv_async_t wakeup;
	uv_timer_t deadline;
	atomic_int stop_requested;
};

static struct worker_thread *workers;
static unsigned nworkers;

static void main_listener_close_cb(uv_handle_t *h) { (void)h; }

static void main_on_accept(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	if (status < 0) {
		log_warn("accept on %s: %s", l->w->cfg->listens[l->idx].text, uv_strerror(status));
		return;
	}
	session_accept(l->w, server, l->idx);
}

static void main_worker_maybe_done(struct worker_thread *wt)
{
	if (!wt->w.stopping || wt->w.nsessions > 0)
		return;
	relay_pool_free(&wt->w.relay);
	if (wt->w.auth != NULL)
		dovecot_auth_client_destroy(&wt->w.auth);
	sender_login_free(&wt->w.sl);
	config_unref(&wt->w.sl_cfg);
	if (!uv_is_closing((uv_handle_t *)&wt->wakeup))
		uv_close((uv_handle_t *)&wt->wakeup, NULL);
	if (!uv_is_closing((uv_handle_t *)&wt->deadline))
		uv_close((uv_handle_t *)&wt->deadline, NULL);
}

void worker_session_gone(struct worker *w)
{
	main_worker_maybe_done((struct worker_thread *)w);
}

static void main_deadline_cb(uv_timer_t *t)
{
	struct worker_thread *wt = t->data;
	/* Sessions still in a transaction past the grace period are cut
	   off: the client never got a 250, so it will retry. Nothing is lost. */
	log_warn("worker %u: %u sessions still open at shutdown deadline, closing them", wt->w.id,
		 wt->w.nsessions);
	uv_stop(&wt->w.loop);
}

static void main_wakeup_cb(uv_async_t *a)
{
	struct worker_thread *wt = a->data;
	if (!atomic_load(&wt->stop_requested) || wt->w.stopping)
		return;
	wt->w.stopping = true;
	for (size_t i = 0; i < wt->nlisteners; i++)
		uv_close((uv_handle_t *)&wt->listeners[i].tcp, main_listener_close_cb);
	session_shutdown_all(&wt->w);
	relay_pool_flush(wt->w.relay);
	uv_timer_start(&wt->deadline, main_deadline_cb, SHUTDOWN_GRACE_MS, 0);
	main_worker_maybe_done(wt);
}

static void *main_worker_run(void *arg)
{
	struct worker_thread *wt = arg;
	struct worker *w = &wt->w;
	for (size_t i = 0; i < wt->nlisteners; i++) {
		struct listener *l = &wt->listeners[i];
		uv_tcp_init(&w->loop, &l->tcp);
		l->tcp.data = l;
		int r = uv_tcp_open(&l->tcp, wt->fds[i]);
		if (r == 0)
			r = uv_listen((uv_stream_t *)&l->tcp, 511, main_on_accept);
		if (r < 0) {
			log_err("worker %u: cannot listen on %s: %s", w->id, w->cfg->listens[i].text,
				uv_strerror(r));
			exit(1);
		}
	}
	/* Learn what Dovecot and the downstream offer before the first client asks. */
	if (w->cfg->dovecot_auth_socket != NULL) {
		w->auth = dovecot_auth_client_create(&w->loop, w->cfg->dovecot_auth_socket,
						     (unsigned)w->cfg->auth_timeout_ms);
		dovecot_auth_client_connect(w->auth);
	}
	relay_pool_probe(w->relay, w->cfg);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	return NULL;
}

static int main_listen_socket(const struct listen_cfg *l, char *err, size_t errlen)
{
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Each worker has its own socket on the same port; the kernel spreads
	   connections between them (DESIGN.md §2). */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (l->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addr_len) < 0 || listen(fd, 511) < 0) {
		snprintf(err, errlen, "listen %s: %s", l->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- signals, on the main thread's own loop ---- */

static void main_stop_workers(void)
{
	for (unsigned i = 0; i < nworkers; i++) {
		atomic_store(&workers[i].stop_requested, 1);
		uv_async_send(&workers[i].wakeup);
	}
}

static uv_signal_t main_sigterm, main_sigint;

static void main_signal_cb(uv_signal_t *sig, int signum)
{
	log_info("%s received, stopping: no new connections, open sessions finish their mail",
		 signum == SIGTERM ? "SIGTERM" : "SIGINT");
	main_stop_workers();
	uv_close((uv_handle_t *)&main_sigterm, NULL);
	uv_close((uv_handle_t *)&main_sigint, NULL);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: submitd [-c FILE] [-t] [-V]\n"
		   "  -c FILE  configuration file (default %s)\n"
		   "  -t       check the configuration and exit\n"
		   "  -V       print the version and exit\n",
		   DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	bool test_only = false;
	int opt;
	while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test_only = true;
			break;
		case 'V':
			printf("submitd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	char err[1024];
	struct config *cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "submitd: %s\n", err);
		return 1;
	}
	if (!tls_server_load(cfg, err, sizeof(err)) || !policy_load(cfg, err, sizeof(err))) {
		fprintf(stderr, "submitd: %s: %s\n", path, err);
		return 1;
	}
	if (test_only) {
		printf("submitd: configuration %s is valid\n", path);
		config_unref(&cfg);
		return 0;
	}
	log_open(cfg->syslog_facility >= 0 ? LOG_TARGET_SYSLOG : LOG_TARGET_STDERR,
		 cfg->syslog_facility >= 0 ? cfg->syslog_facility : LOG_MAIL, cfg->log_level);
	signal(SIGPIPE, SIG_IGN);

	/* Room for many connections: raise the descriptor limit to the hard one. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	nworkers = cfg->workers;
	workers = xcalloc(nworkers, sizeof(*workers));
	for (unsigned i = 0; i < nworkers; i++) {
		struct worker_thread *wt = &workers[i];
		wt->w.id = i;
		wt->w.cfg = config_ref(cfg);
		uv_loop_init(&wt->w.loop);
		wt->w.relay = relay_pool_new(&wt->w.loop);
		uv_async_init(&wt->w.loop, &wt->wakeup, main_wakeup_cb);
		wt->wakeup.data = wt;
		uv_timer_init(&wt->w.loop, &wt->deadline);
		wt->deadline.data = wt;
		wt->nlisteners = cfg->nlistens;
		wt->listeners = xcalloc(cfg->nlistens, sizeof(*wt->listeners));
		wt->fds = xcalloc(cfg->nlistens, sizeof(int));
		for (size_t j = 0; j < cfg->nlistens; j++) {
			wt->listeners[j].w = &wt->w;
			wt->listeners[j].idx = j;
			wt->fds[j] = main_listen_socket(&cfg->listens[j], err, sizeof(err));
			if (wt->fds[j] < 0) {
				log_err("%s", err);
				return 1;
			}
		}
	}

	uv_loop_t *main_loop = uv_default_loop();
	uv_signal_init(main_loop, &main_sigterm);
	uv_signal_init(main_loop, &main_sigint);
	uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
	uv_signal_start(&main_sigint, main_signal_cb, SIGINT);

	for (unsigned i = 0; i < nworkers; i++)
		pthread_create(&workers[i].thread, NULL, main_worker_run, &workers[i]);
	log_info("submitd %s started: %u workers, %zu listeners, relayhost %s", PACKAGE_VERSION,
		 nworkers, cfg->nlistens, cfg->relay[0].text);

	uv_run(main_loop, UV_RUN_DEFAULT);

	for (unsigned i = 0; i < nworkers; i++)
		pthread_join(workers[i].thread, NULL);
	log_info("submitd stopped");
	return 0;
}
