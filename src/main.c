/* main: the process — arguments, configuration, listeners (own or from
 * systemd), privileges, worker threads, signals, reload, sd_notify
 * (docs/design.md §3). The only file that knows the listeners and the process.
 *
 * Threads: the main thread runs its own loop (signals, reload, certificate
 * watch, systemd notifications); each worker runs a loop with its listening
 * sockets and sessions. They talk only through each worker's uv_async
 * (stop, new configuration, watchdog ping) and the main loop's uv_async
 * (a worker started or finished), plus a few atomics. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "lookup/dovecot_auth.h"
#include "net/addrcount.h"
#include "net/tls.h"
#include "policy/policy.h"
#include "relay/relay.h"
#include "session.h"
#include "worker.h"

#define DEFAULT_CONFIG SYSCONFDIR "/submitd/submitd.conf"
#define SHUTDOWN_GRACE_MS 30000
/* While stopping, what is still open is logged this often. */
#define SHUTDOWN_REPORT_MS 5000
#define RELOAD_MIN_INTERVAL_MS 1000
/* The main thread's own deadline: the process ends even if a worker loop
   cannot (a loop that never returns, a callback stuck in a library). */
#define SHUTDOWN_HARD_MS (SHUTDOWN_GRACE_MS + 3000)
#define STATUS_INTERVAL_MS 5000
/* Certificate files are polled: inotify on Let's Encrypt's symlinks and
   their targets is fragile, and a stat every two seconds costs nothing. A
   change is acted on once the files have stayed the same for one more
   poll, so a renewal caught half-way does not log a spurious mismatch. */
#define CERT_POLL_MS 2000

/* ---- connection accounting, shared by all workers ----
 * The total is one atomic counter. Per address, the counts are exact
 * (net/addrcount.c: keyed hash, whole-address match), so no client can make
 * another look busier than it is. Clients in client_limit_exceptions
 * (mynetworks by default: a webmail or a NAT gateway speaks for many users)
 * count only towards the total. The same snapshot (the session's) decides
 * at acquire and release, so both always agree. */
static atomic_uint conn_total;

bool worker_conn_acquire(const struct sockaddr *peer, const struct config *cfg, const char **why_r)
{
	if (atomic_fetch_add(&conn_total, 1) >= cfg->max_connections) {
		atomic_fetch_sub(&conn_total, 1);
		*why_r = "too many connections";
		return false;
	}
	if (config_limit_exempt(cfg, peer))
		return true;
	struct addrcount_key key;
	addrcount_key(peer, cfg->ipv6_client_prefix, &key);
	if (!addrcount_conn_acquire(addrcount_global(), &key, cfg->max_connections_per_ip,
				    addrcount_now())) {
		atomic_fetch_sub(&conn_total, 1);
		*why_r = "too many connections from your address";
		return false;
	}
	return true;
}

void worker_conn_release(const struct sockaddr *peer, const struct config *cfg)
{
	if (!config_limit_exempt(cfg, peer)) {
		struct addrcount_key key;
		addrcount_key(peer, cfg->ipv6_client_prefix, &key);
		addrcount_conn_release(addrcount_global(), &key, addrcount_now());
	}
	atomic_fetch_sub(&conn_total, 1);
}

/* ---- sd_notify, without libsystemd (man sd_notify: the protocol is one
 * datagram of "VAR=value" lines to $NOTIFY_SOCKET, and reimplementations
 * are explicitly allowed). One code path whether libsystemd is installed or
 * not. The address is used for every datagram, as libsystemd does, so a
 * restarted manager is found again; /run/systemd/notify stays writable for
 * an unprivileged user. ---- */

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;

static void main_notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	if (e == NULL || (e[0] != '/' && e[0] != '@') || strlen(e) >= sizeof(notify_addr.sun_path))
		return; /* unset, or vsock: (not supported): notifications are no-ops */
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, e, strlen(e));
	if (e[0] == '@')
		notify_addr.sun_path[0] = '\0'; /* abstract namespace */
	notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(e));
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

static void main_notify(bool may_drop, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void main_notify(bool may_drop, const char *fmt, ...)
{
	if (notify_fd < 0)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	/* Periodic messages (STATUS, WATCHDOG) never block the main loop;
	   state changes (READY, RELOADING, STOPPING) wait for room. */
	if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL | (may_drop ? MSG_DONTWAIT : 0),
		   (struct sockaddr *)&notify_addr, notify_addr_len) < 0 &&
	    !may_drop)
		log_warn("sd_notify: %s", strerror(errno));
}

static uint64_t main_monotonic_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- socket activation (man sd_listen_fds), without libsystemd ----
 *
 * Inherited sockets are matched to "listen" lines:
 *   1. a line with name=NAME takes every socket whose FileDescriptorName=
 *      is NAME;
 *   2. any other line takes the sockets bound to exactly its address, or,
 *      when its address is a wildcard (0.0.0.0 or [::]), the wildcard
 *      sockets on its port whatever their family (systemd's ListenStream=587
 *      is [::]:587 dual-stack).
 * A line without a socket from systemd gets its own sockets as usual; an
 * inherited socket no line wants is closed with a warning. */

struct main_sdfd {
	int fd;
	char name[256];
	struct sockaddr_storage addr;
	bool used;
};

static struct main_sdfd *main_sdfds;
static size_t main_nsdfds;

static void main_listen_fds(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	char *end;
	if (pid == NULL || fds == NULL)
		goto out;
	errno = 0;
	unsigned long p = strtoul(pid, &end, 10);
	if (errno != 0 || *end != '\0' || p != (unsigned long)getpid())
		goto out; /* meant for another process */
	unsigned long n = strtoul(fds, &end, 10);
	if (errno != 0 || *end != '\0' || n == 0 || n > 1024)
		goto out;
	main_sdfds = xcalloc(n, sizeof(*main_sdfds));
	const char *np = names;
	for (unsigned long i = 0; i < n; i++) {
		struct main_sdfd *s = &main_sdfds[main_nsdfds];
		int fd = 3 + (int)i;
		size_t nl = 0;
		if (np != NULL) {
			const char *colon = strchr(np, ':');
			nl = colon ? (size_t)(colon - np) : strlen(np);
			snprintf(s->name, sizeof(s->name), "%.*s", (int)nl, np);
			np = colon ? colon + 1 : NULL;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		int type = 0, listening = 0;
		socklen_t tl = sizeof(type), ll = sizeof(listening);
		socklen_t al = sizeof(s->addr);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM ||
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0 || !listening ||
		    getsockname(fd, (struct sockaddr *)&s->addr, &al) < 0 ||
		    (s->addr.ss_family != AF_INET && s->addr.ss_family != AF_INET6)) {
			log_warn("systemd socket %d (%s) is not a listening TCP socket; closing it", fd,
				 s->name[0] ? s->name : "unnamed");
			close(fd);
			continue;
		}
		s->fd = fd;
		main_nsdfds++;
	}
out:
	/* Children must not think the sockets are theirs (sd_listen_fds with
	   unset_environment). */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
}

static bool main_addr_is_any(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (a->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
	return false;
}

static uint16_t main_addr_port(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)a)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

static bool main_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family || main_addr_port(a) != main_addr_port(b))
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static bool main_sdfd_matches(const struct main_sdfd *s, const struct listen_cfg *l)
{
	if (l->fdname != NULL)
		return strcmp(s->name, l->fdname) == 0;
	if (main_addr_equal(&s->addr, &l->addr))
		return true;
	return main_addr_is_any(&l->addr) && main_addr_is_any(&s->addr) &&
	       main_addr_port(&l->addr) == main_addr_port(&s->addr);
}

/* ---- listening sockets: one entry per (listen line, socket) ---- */

struct main_sock {
	size_t idx;      /* listen line */
	int fd;          /* inherited from systemd, or -1: each worker binds its own */
};

static struct main_sock *main_socks;
static size_t main_nsocks;

static bool main_plan_sockets(const struct config *cfg, char *err, size_t errlen)
{
	/* Named lines first, so a named socket is never taken by address. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < cfg->nlistens; i++) {
			const struct listen_cfg *l = &cfg->listens[i];
			if ((pass == 0) != (l->fdname != NULL))
				continue;
			size_t found = 0;
			for (size_t k = 0; k < main_nsdfds; k++) {
				struct main_sdfd *s = &main_sdfds[k];
				if (s->used || !main_sdfd_matches(s, l))
					continue;
				s->used = true;
				found++;
				main_socks = xrealloc(main_socks, (main_nsocks + 1) * sizeof(*main_socks));
				main_socks[main_nsocks++] = (struct main_sock){i, s->fd};
			}
			if (found == 0 && l->fdname != NULL && main_nsdfds > 0) {
				snprintf(err, errlen, "listen %s name=%s: systemd passed no socket named \"%s\"",
					 l->text, l->fdname, l->fdname);
				return false;
			}
			/* "listen = 0.0.0.0:587" and "listen = [::]:587" with one
			   dual-stack [::]:587 from systemd: the second line is
			   served by the socket the first one took; binding it
			   again would fail. */
			for (size_t k = 0; found == 0 && l->fdname == NULL && k < main_nsdfds; k++) {
				if (main_sdfds[k].used && main_addr_is_any(&l->addr) &&
				    main_addr_is_any(&main_sdfds[k].addr) &&
				    main_addr_port(&main_sdfds[k].addr) == main_addr_port(&l->addr)) {
					log_info("listen %s: served by the systemd socket %d on the same port",
						 l->text, main_sdfds[k].fd);
					found = (size_t)-1;
				}
			}
			if (found == (size_t)-1)
				continue;
			if (found == 0) {
				main_socks = xrealloc(main_socks, (main_nsocks + 1) * sizeof(*main_socks));
				main_socks[main_nsocks++] = (struct main_sock){i, -1};
			} else {
				log_info("listen %s: using %zu socket%s from systemd", l->text, found,
					 found == 1 ? "" : "s");
			}
		}
	}
	for (size_t k = 0; k < main_nsdfds; k++) {
		if (!main_sdfds[k].used) {
			log_warn("systemd socket %d (%s, port %u) matches no \"listen\" line; closing it",
				 main_sdfds[k].fd, main_sdfds[k].name[0] ? main_sdfds[k].name : "unnamed",
				 main_addr_port(&main_sdfds[k].addr));
			close(main_sdfds[k].fd);
		}
	}
	return true;
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
	   connections between them (docs/design.md §3). */
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

/* ---- workers ---- */

/* Accepting is done here rather than by uv_listen(): when the process is out
 * of descriptors (or the kernel out of memory for a socket), libuv's accept
 * loop retries at once and never returns to the event loop. Instead the
 * listener stops polling for a short back-off, growing while the shortage
 * lasts; connections wait in the kernel's backlog meanwhile, open sessions
 * are served, and one line is logged when an episode starts and one when it
 * ends. */
#define ACCEPT_BATCH 64            /* per poll event, so other work gets a turn */
#define ACCEPT_BACKOFF_MIN_MS 20
#define ACCEPT_BACKOFF_MAX_MS 1000

struct listener {
	uv_poll_t poll;
	uv_timer_t backoff;
	struct worker *w;
	size_t idx;
	int fd;
	unsigned open_handles;
	/* the current shortage episode (episode_started == 0: none) */
	uint64_t episode_started;
	uint64_t backoff_ms;
	unsigned long episode_failures;
};

struct worker_thread {
	struct worker w;
	pthread_t thread;
	struct listener *listeners;
	size_t nlisteners;
	int *fds;
	uv_async_t wakeup;
	uv_timer_t deadline;
	uint64_t stop_started;                 /* loop time of the stop request */
	atomic_int stop_requested;
	_Atomic(struct config *) pending_cfg; /* a new snapshot to swap in */
	atomic_uint ping;                      /* watchdog: asked by main */
	atomic_uint pong;                      /* watchdog: answered by the worker */
};

static struct worker_thread *workers;
static unsigned nworkers;
static uv_async_t main_async;          /* a worker started or finished */
static atomic_uint workers_started, workers_finished;

static void main_listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	if (--l->open_handles == 0 && l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}

static void main_listener_close(struct listener *l)
{
	if (l->open_handles == 0 || uv_is_closing((uv_handle_t *)&l->poll))
		return;
	uv_close((uv_handle_t *)&l->poll, main_listener_closed);
	uv_close((uv_handle_t *)&l->backoff, main_listener_closed);
}

static void main_on_accept(uv_poll_t *h, int status, int events);

static void main_backoff_cb(uv_timer_t *t)
{
	struct listener *l = t->data;
	uv_poll_start(&l->poll, UV_READABLE, main_on_accept);
}

static unsigned long long main_nofile_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	return (unsigned long long)rl.rlim_cur;
}

/* accept() failed for want of a resource: pause this listener. */
static void main_accept_backoff(struct listener *l, int err)
{
	if (l->episode_started == 0) {
		l->episode_started = uv_now(&l->w->loop) | 1;
		l->backoff_ms = ACCEPT_BACKOFF_MIN_MS;
		l->episode_failures = 0;
		log_warn("worker %u: accept on %s: %s; pausing new connections (sessions open: %u "
			 "here, %u in all; descriptor limit %llu)",
			 l->w->id, l->w->cfg->listens[l->idx].text, strerror(err), l->w->nsessions,
			 atomic_load(&conn_total), main_nofile_limit());
	} else if (l->backoff_ms < ACCEPT_BACKOFF_MAX_MS) {
		l->backoff_ms = l->backoff_ms * 2 < ACCEPT_BACKOFF_MAX_MS ? l->backoff_ms * 2
									 : ACCEPT_BACKOFF_MAX_MS;
	}
	l->episode_failures++;
	uv_poll_stop(&l->poll);
	uv_timer_start(&l->backoff, main_backoff_cb, l->backoff_ms, 0);
}

static void main_on_accept(uv_poll_t *h, int status, int events)
{
	struct listener *l = h->data;
	if (status < 0) {
		main_accept_backoff(l, -status);
		return;
	}
	for (int i = 0; i < ACCEPT_BATCH && !l->w->stopping; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			switch (errno) {
			case EAGAIN:
#if EAGAIN != EWOULDBLOCK
			case EWOULDBLOCK:
#endif
				return;
			/* The new connection's own trouble (accept(2) passes
			   network errors on): that client is gone, take the next. */
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			case ENOPROTOOPT:
			case EHOSTDOWN:
			case ENONET:
			case EHOSTUNREACH:
			case EOPNOTSUPP:
			case ENETDOWN:
			case ENETUNREACH:
			case ETIMEDOUT:
				continue;
			default:
				/* EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything
				   unexpected: retrying at once would only spin. */
				main_accept_backoff(l, errno);
				return;
			}
		}
		if (l->episode_started != 0) {
			log_info("worker %u: accepting on %s again after %.1f s (%lu attempts failed)",
				 l->w->id, l->w->cfg->listens[l->idx].text,
				 (double)(uv_now(&l->w->loop) - l->episode_started) / 1000.0,
				 l->episode_failures);
			l->episode_started = 0;
		}
		session_accept(l->w, fd, l->idx);
	}
}

static void main_worker_maybe_done(struct worker_thread *wt)
{
	if (!wt->w.stopping || wt->w.nsessions > 0)
		return;
	relay_pool_free(&wt->w.relay);
	if (wt->w.auth != NULL)
		dovecot_auth_client_destroy(&wt->w.auth);
	session_worker_done(&wt->w);
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
	if (uv_now(&wt->w.loop) - wt->stop_started < SHUTDOWN_GRACE_MS) {
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
static void main_worker_reconfigure(struct worker_thread *wt, const struct config *old)
{
	struct worker *w = &wt->w;
	/* Pooled downstream connections were opened under the old route and
	   settings: close the idle ones and learn the (maybe new) downstream's
	   capabilities before the next client asks. */
	relay_pool_flush(w->relay);
	relay_pool_probe(w->relay, w->cfg);
	session_worker_reconfigured(w);
	const char *a = old->dovecot_auth_socket, *b = w->cfg->dovecot_auth_socket;
	if (w->id == 0 && ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0)))
		log_warn("reload: dovecot_auth_socket changed; it takes effect after a restart");
}

static void main_wakeup_cb(uv_async_t *a)
{
	struct worker_thread *wt = a->data;
	struct config *next = atomic_exchange(&wt->pending_cfg, NULL);
	if (next != NULL) {
		struct config *old = wt->w.cfg;
		wt->w.cfg = next;
		main_worker_reconfigure(wt, old);
		config_unref(&old);
	}
	atomic_store(&wt->pong, atomic_load(&wt->ping));
	if (!atomic_load(&wt->stop_requested) || wt->w.stopping)
		return;
	wt->w.stopping = true;
	for (size_t i = 0; i < wt->nlisteners; i++)
		main_listener_close(&wt->listeners[i]);
	session_shutdown_all(&wt->w);
	relay_pool_flush(wt->w.relay);
	wt->stop_started = uv_now(&wt->w.loop);
	session_log_waiting(&wt->w, "stopping, waiting for");
	uv_timer_start(&wt->deadline, main_deadline_cb,
		       SHUTDOWN_REPORT_MS < SHUTDOWN_GRACE_MS ? SHUTDOWN_REPORT_MS : SHUTDOWN_GRACE_MS,
		       SHUTDOWN_REPORT_MS);
	main_worker_maybe_done(wt);
}

static void *main_worker_run(void *arg)
{
	struct worker_thread *wt = arg;
	struct worker *w = &wt->w;
	for (size_t i = 0; i < wt->nlisteners; i++) {
		struct listener *l = &wt->listeners[i];
		l->fd = wt->fds[i];
		int r = uv_poll_init(&w->loop, &l->poll, l->fd);
		if (r == 0) {
			l->poll.data = l->backoff.data = l;
			uv_timer_init(&w->loop, &l->backoff);
			l->open_handles = 2;
			r = uv_poll_start(&l->poll, UV_READABLE, main_on_accept);
		}
		if (r < 0) {
			log_err("worker %u: cannot listen on %s: %s", w->id,
				w->cfg->listens[l->idx].text, uv_strerror(r));
			exit(1);
		}
	}
	/* Learn what Dovecot and the downstream offer before the first client
	   asks; readiness does not wait for them (they are runtime
	   dependencies, and a hang there must not block boot). */
	if (w->cfg->dovecot_auth_socket != NULL) {
		w->auth = dovecot_auth_client_create(&w->loop, w->cfg->dovecot_auth_socket,
						     (unsigned)w->cfg->auth_timeout_ms);
		dovecot_auth_client_connect(w->auth);
	}
	relay_pool_probe(w->relay, w->cfg);
	atomic_fetch_add(&workers_started, 1);
	uv_async_send(&main_async);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	atomic_fetch_add(&workers_finished, 1);
	uv_async_send(&main_async);
	return NULL;
}

/* ---- privileges ---- */

static bool main_caps_clear(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	/* Nothing held (the usual case under systemd with User=): done, and
	   no capset() that a SystemCallFilter= might refuse. */
	if (syscall(SYS_capget, &hdr, data) == 0 && !data[0].effective && !data[0].permitted &&
	    !data[0].inheritable && !data[1].effective && !data[1].permitted &&
	    !data[1].inheritable)
		return true;
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0) {
		snprintf(err, errlen, "cannot drop capabilities: %s", strerror(errno));
		return false;
	}
	if (syscall(SYS_capget, &hdr, data) < 0 || data[0].effective || data[0].permitted ||
	    data[1].effective || data[1].permitted) {
		snprintf(err, errlen, "capabilities are still held after dropping them");
		return false;
	}
	return true;
}

/* After the sockets are bound and the keys read: become cfg->user for good
 * (real, effective and saved IDs, supplementary groups from the group
 * database, e.g. ssl-cert), keep no capability, and check that root cannot
 * be regained. Without "user" a non-root process only sheds capabilities it
 * may have been given (AmbientCapabilities=); root stays root, with a
 * warning. */
static bool main_drop_privileges(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->user == NULL) {
		if (geteuid() == 0) {
			log_warn("running as root: set \"user = submitd\" (or User= in the systemd unit)");
			return true;
		}
		return main_caps_clear(err, errlen);
	}
	errno = 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		snprintf(err, errlen, "user %s: %s", cfg->user, errno ? strerror(errno) : "no such user");
		return false;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (geteuid() != 0) {
		if (geteuid() != uid) {
			snprintf(err, errlen, "user = %s: started as uid %ld, cannot switch without root",
				 cfg->user, (long)geteuid());
			return false;
		}
		return main_caps_clear(err, errlen);
	}
	if (initgroups(pw->pw_name, gid) < 0 || setresgid(gid, gid, gid) < 0 ||
	    setresuid(uid, uid, uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", cfg->user, strerror(errno));
		return false;
	}
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != uid ||
	    eu != uid || su != uid || rg != gid || eg != gid || sg != gid) {
		snprintf(err, errlen, "user %s: IDs did not all change", cfg->user);
		return false;
	}
	if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || setegid(0) == 0)) {
		snprintf(err, errlen, "user %s: root could be regained after dropping it", cfg->user);
		return false;
	}
	/* Never regain anything through exec either (we exec nothing). */
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (uid == 0)
		return true;
	return main_caps_clear(err, errlen);
}

/* ---- configuration checks shared by start, -t and reload ---- */

static bool main_check_config(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nlistens; i++) {
		if (cfg->listens[i].proxy && cfg->nproxy_networks == 0) {
			snprintf(err, errlen, "%s: listen %s is marked proxy but proxy_networks is empty",
				 cfg->path, cfg->listens[i].text);
			return false;
		}
	}
	if (cfg->user != NULL && getpwnam(cfg->user) == NULL) {
		snprintf(err, errlen, "%s: user %s does not exist", cfg->path, cfg->user);
		return false;
	}
	return true;
}

/* ---- certificate watch ---- */

struct main_fsig {
	int err;
	dev_t dev;
	ino_t ino, link_ino;
	off_t size;
	struct timespec mtime, ctime, link_mtime;
};

struct main_watch {
	char *path;
	struct main_fsig loaded;  /* as when the current snapshot was built */
	struct main_fsig seen;    /* at the previous poll */
};

static struct main_watch *main_watches;
static size_t main_nwatches;

static void main_fsig_get(const char *path, struct main_fsig *s)
{
	struct stat st, lst;
	memset(s, 0, sizeof(*s));
	if (stat(path, &st) < 0) {
		s->err = errno;
		return;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
	s->ctime = st.st_ctim;
	/* The link itself too: certbot swaps symlinks in live/. */
	if (lstat(path, &lst) == 0) {
		s->link_ino = lst.st_ino;
		s->link_mtime = lst.st_mtim;
	}
}

static bool main_fsig_equal(const struct main_fsig *a, const struct main_fsig *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->link_ino == b->link_ino && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
	       a->ctime.tv_nsec == b->ctime.tv_nsec && a->link_mtime.tv_sec == b->link_mtime.tv_sec &&
	       a->link_mtime.tv_nsec == b->link_mtime.tv_nsec;
}

static void main_watch_free(struct main_watch *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(w[i].path);
	free(w);
}

static void main_watch_add(struct main_watch **w, size_t *n, const char *path)
{
	if (path == NULL)
		return;
	*w = xrealloc(*w, (*n + 1) * sizeof(**w));
	struct main_watch *e = &(*w)[(*n)++];
	e->path = xstrdup(path);
	main_fsig_get(path, &e->loaded);
	e->seen = e->loaded;
}

/* The files a snapshot's credentials come from, with their state now:
 * called before the files are read, so a change that races with loading
 * is seen at the next poll rather than missed. */
static void main_watch_build(const struct config *cfg, struct main_watch **w_r, size_t *n_r)
{
	struct main_watch *w = NULL;
	size_t n = 0;
	main_watch_add(&w, &n, cfg->tls_cert_file);
	main_watch_add(&w, &n, cfg->tls_key_file);
	for (size_t i = 0; i < cfg->ntls_sni; i++) {
		main_watch_add(&w, &n, cfg->tls_sni[i].cert_file);
		main_watch_add(&w, &n, cfg->tls_sni[i].key_file);
	}
	*w_r = w;
	*n_r = n;
}

/* ---- main loop: signals, reload, status, watchdog ---- */

static const char *main_config_path;
static struct config *main_cfg;       /* the current snapshot */
static bool main_stopping, main_ready;
static uv_signal_t main_sigterm, main_sigint, main_sighup;
static uv_timer_t main_status_timer, main_watchdog_timer, main_cert_timer, main_stop_timer;
static uv_timer_t main_reload_timer;
static uint64_t main_watchdog_usec;
static bool main_watchdog_warned;

static void main_status(void)
{
	unsigned long sent = 0, deferred = 0, rejected = 0;
	for (unsigned i = 0; i < nworkers; i++) {
		sent += atomic_load_explicit(&workers[i].w.stats[WORKER_STAT_SENT], memory_order_relaxed);
		deferred += atomic_load_explicit(&workers[i].w.stats[WORKER_STAT_DEFERRED],
						 memory_order_relaxed);
		rejected += atomic_load_explicit(&workers[i].w.stats[WORKER_STAT_REJECTED],
						 memory_order_relaxed);
	}
	main_notify(true, "STATUS=%s%u sessions, %lu messages sent, %lu deferred, %lu rejected",
		    main_stopping ? "stopping: " : "", atomic_load(&conn_total), sent, deferred,
		    rejected);
}

static void main_status_cb(uv_timer_t *t) { main_status(); }

static void main_watchdog_cb(uv_timer_t *t)
{
	/* WATCHDOG=1 only while every worker loop answers its pings: a wedged
	   worker stops the keep-alives and systemd restarts us. */
	bool alive = true;
	for (unsigned i = 0; !main_stopping && i < nworkers; i++) {
		if (atomic_load(&workers[i].pong) != atomic_load(&workers[i].ping)) {
			alive = false;
			if (!main_watchdog_warned)
				log_err("worker %u does not answer: withholding the watchdog keep-alive", i);
			main_watchdog_warned = true;
		}
	}
	if (alive) {
		main_watchdog_warned = false;
		main_notify(true, "WATCHDOG=1");
	}
	for (unsigned i = 0; !main_stopping && i < nworkers; i++) {
		atomic_fetch_add(&workers[i].ping, 1);
		uv_async_send(&workers[i].wakeup);
	}
}

/* New listen lines cannot be bound after privileges are gone: the snapshot
 * keeps the listen lines it started with (same count, addresses and order),
 * but their flags and modes may change. Anything else is ignored with a
 * warning until a restart. */
static void main_reload_listeners(const struct config *cur, struct config *next)
{
	bool same = cur->nlistens == next->nlistens;
	for (size_t i = 0; same && i < cur->nlistens; i++)
		same = main_addr_equal(&cur->listens[i].addr, &next->listens[i].addr) &&
		       ((cur->listens[i].fdname == NULL) == (next->listens[i].fdname == NULL)) &&
		       (cur->listens[i].fdname == NULL ||
			strcmp(cur->listens[i].fdname, next->listens[i].fdname) == 0);
	if (same)
		return;
	log_warn("reload: the \"listen\" lines changed; keeping the current listeners until a restart");
	for (size_t i = 0; i < next->nlistens; i++)
		config_listen_clear(&next->listens[i]);
	free(next->listens);
	next->listens = xcalloc(cur->nlistens, sizeof(*next->listens));
	for (size_t i = 0; i < cur->nlistens; i++)
		config_listen_copy(&next->listens[i], &cur->listens[i]);
	next->nlistens = cur->nlistens;
}

/* Everything a snapshot needs besides its file: the per-listener snapshots
 * (once the listeners are final), TLS credentials and policy tables, for
 * the snapshot and each of its listeners'. */
static bool main_snapshot_load(struct config *cfg, char *err, size_t errlen)
{
	if (!config_listeners_load(cfg, err, errlen) || !tls_server_load(cfg, err, errlen) ||
	    !policy_load(cfg, err, errlen))
		return false;
	for (size_t i = 0; i < cfg->nlistens; i++) {
		struct config *l = cfg->listens[i].cfg;
		char why[768];
		if (l != NULL && (!tls_server_load(l, why, sizeof(why)) || !policy_load(l, why, sizeof(why)))) {
			snprintf(err, errlen, "listen %s: %s", cfg->listens[i].text, why);
			return false;
		}
	}
	return true;
}

static uint64_t main_last_reload;     /* loop time of the last reload */
static unsigned main_reload_requests;  /* SIGHUPs not yet acted on */

static void main_reload(const char *why)
{
	char err[1024], desc[512];
	main_notify(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading (%s)",
		    (unsigned long long)main_monotonic_usec(), why);
	log_info("reloading %s (%s)", main_config_path, why);
	main_last_reload = uv_now(uv_default_loop());
	struct main_watch *watch = NULL;
	size_t nwatch = 0;
	struct config *next = config_load(main_config_path, err, sizeof(err));
	bool ok = next != NULL;
	if (ok) {
		main_watch_build(next, &watch, &nwatch);
		main_reload_listeners(main_cfg, next);
		ok = main_snapshot_load(next, err, sizeof(err)) && main_check_config(next, err, sizeof(err));
	}
	if (!ok) {
		log_err("reload refused: %s; still serving with the previous configuration", err);
		config_unref(&next);
		/* Do not retry until one of the files changes again. */
		for (size_t i = 0; i < main_nwatches; i++) {
			bool found = false;
			for (size_t k = 0; k < nwatch && !found; k++)
				if (strcmp(watch[k].path, main_watches[i].path) == 0) {
					main_watches[i].loaded = main_watches[i].seen = watch[k].loaded;
					found = true;
				}
			if (!found) {
				main_fsig_get(main_watches[i].path, &main_watches[i].loaded);
				main_watches[i].seen = main_watches[i].loaded;
			}
		}
		main_watch_free(watch, nwatch);
		main_notify(false, "READY=1\nSTATUS=reload refused, serving the previous configuration");
		return;
	}
	if (next->workers != main_cfg->workers)
		log_warn("reload: \"workers\" changed; it takes effect after a restart");
	if ((next->user == NULL) != (main_cfg->user == NULL) ||
	    (next->user != NULL && strcmp(next->user, main_cfg->user) != 0))
		log_warn("reload: \"user\" changed; it takes effect after a restart");
	if (next->log_level != main_cfg->log_level ||
	    next->syslog_facility != main_cfg->syslog_facility)
		log_warn("reload: log_level/syslog_facility changed; they take effect after a restart");

	/* Hand the snapshot to every worker; each swaps it in on its own loop.
	   A worker that has not taken the previous one yet gets this one. */
	for (unsigned i = 0; i < nworkers; i++) {
		struct config *old = atomic_exchange(&workers[i].pending_cfg, config_ref(next));
		config_unref(&old);
		uv_async_send(&workers[i].wakeup);
	}
	config_unref(&main_cfg);
	main_cfg = next;
	main_watch_free(main_watches, main_nwatches);
	main_watches = watch;
	main_nwatches = nwatch;
	tls_server_describe(main_cfg, desc, sizeof(desc));
	log_info("configuration reloaded: %s", desc);
	main_notify(false, "READY=1");
	main_status();
}

static void main_cert_cb(uv_timer_t *t)
{
	bool changed = false, settled = true;
	const char *which = NULL;
	for (size_t i = 0; i < main_nwatches; i++) {
		struct main_watch *w = &main_watches[i];
		struct main_fsig now;
		main_fsig_get(w->path, &now);
		if (!main_fsig_equal(&now, &w->loaded)) {
			changed = true;
			if (which == NULL)
				which = w->path;
		}
		if (!main_fsig_equal(&now, &w->seen))
			settled = false;
		w->seen = now;
	}
	if (changed && settled) {
		char why[600];
		snprintf(why, sizeof(why), "%s changed", which);
		main_reload(why);
	}
}

/* Reload storms (a configuration-management run, a renewal loop) are
 * coalesced: at most one reload per RELOAD_MIN_INTERVAL_MS, the signals that
 * arrive meanwhile become one reload at its end, which reads the files as
 * they are then. */
static void main_reload_timer_cb(uv_timer_t *t)
{
	if (main_reload_requests > 1)
		log_info("reload requests coalesced: %u SIGHUPs since the last reload",
			 main_reload_requests);
	main_reload_requests = 0;
	main_reload("SIGHUP");
}

static void main_sighup_cb(uv_signal_t *sig, int signum)
{
	main_reload_requests++;
	if (uv_is_active((uv_handle_t *)&main_reload_timer))
		return;
	uint64_t now = uv_now(sig->loop), due = main_last_reload + RELOAD_MIN_INTERVAL_MS;
	uv_timer_start(&main_reload_timer, main_reload_timer_cb,
		       main_last_reload != 0 && due > now ? due - now : 0, 0);
}

static void main_stop_workers(void)
{
	for (unsigned i = 0; i < nworkers; i++) {
		atomic_store(&workers[i].stop_requested, 1);
		uv_async_send(&workers[i].wakeup);
	}
}

static void main_stop_timer_cb(uv_timer_t *t)
{
	unsigned done = atomic_load(&workers_finished);
	log_err("%u of %u workers did not stop within %d s: exiting without them", nworkers - done,
		nworkers, SHUTDOWN_HARD_MS / 1000);
	_exit(1);
}

static void main_signal_cb(uv_signal_t *sig, int signum)
{
	if (main_stopping)
		return;
	main_stopping = true;
	main_notify(false, "STOPPING=1\nSTATUS=stopping: open sessions finish their mail");
	log_info("%s received, stopping: no new connections, open sessions finish their mail",
		 signum == SIGTERM ? "SIGTERM" : "SIGINT");
	main_stop_workers();
	uv_close((uv_handle_t *)&main_sighup, NULL);
	uv_timer_stop(&main_cert_timer);
	uv_timer_stop(&main_reload_timer);
	uv_timer_start(&main_stop_timer, main_stop_timer_cb, SHUTDOWN_HARD_MS, 0);
}

static void main_async_cb(uv_async_t *a)
{
	unsigned started = atomic_load(&workers_started);
	if (!main_ready && started == nworkers) {
		/* Listening on every socket, configuration and keys loaded,
		   privileges dropped, SIGHUP handled: ready. */
		main_ready = true;
		char desc[512];
		tls_server_describe(main_cfg, desc, sizeof(desc));
		log_info("submitd %s ready: %u workers, %zu listeners, relayhost %s; %s",
			 PACKAGE_VERSION, nworkers, main_cfg->nlistens, main_cfg->relay[0].text, desc);
		main_notify(false, "READY=1\nMAINPID=%ld", (long)getpid());
		main_status();
	}
	/* Every worker is done. The handles are closed after the threads are
	   joined, so that no worker can still be signalling main_async. */
	if (atomic_load(&workers_finished) == nworkers)
		uv_stop(a->loop);
}

static void main_close_handles(uv_loop_t *loop)
{
	uv_handle_t *hs[] = {(uv_handle_t *)&main_async,	  (uv_handle_t *)&main_sigterm,
			     (uv_handle_t *)&main_sigint,	  (uv_handle_t *)&main_sighup,
			     (uv_handle_t *)&main_status_timer,   (uv_handle_t *)&main_watchdog_timer,
			     (uv_handle_t *)&main_cert_timer,	  (uv_handle_t *)&main_stop_timer,
			     (uv_handle_t *)&main_reload_timer};
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		if (!uv_is_closing(hs[i]))
			uv_close(hs[i], NULL);
	uv_run(loop, UV_RUN_DEFAULT);
}

static void main_watchdog_init(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	if (usec == NULL)
		return;
	if (pid != NULL && strtoul(pid, NULL, 10) != (unsigned long)getpid())
		return;
	main_watchdog_usec = strtoull(usec, NULL, 10);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

/* -t -u LOGIN: the password comes from standard input (never from the
 * command line, where ps shows it), without echo on a terminal. */
static int main_check_login(struct config *cfg, const char *login, const char *sender)
{
	struct termios saved;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	if (tty) {
		struct termios quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		fprintf(stderr, "password for %s: ", login);
	}
	char password[1024];
	bool got = fgets(password, sizeof(password), stdin) != NULL;
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fputc('\n', stderr);
	}
	if (!got) {
		printf("login %s: FAILED: no password on standard input\n", login);
		return 1;
	}
	password[strcspn(password, "\r\n")] = '\0';
	int problems = check_login(cfg, login, password, sender, stdout);
	explicit_bzero(password, sizeof(password));
	return problems;
}

/* Descriptors per worker besides its sessions: its listening sockets, the
 * loop's own (epoll, eventfd, timers), the Dovecot connection, MySQL
 * connections, idle downstream connections in the pool. An estimate. */
#define NOFILE_PER_WORKER 48
#define NOFILE_PROCESS 32 /* stdio, logging, sd_notify, the main loop */

/* Room for max_connections: each session holds its client's socket and,
 * while it sends, one to the downstream. The soft limit is raised to the hard
 * one; if that is still short, say so with numbers: past the limit, new
 * clients wait in the backlog (main_on_accept). */
static void main_nofile_check(const struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	unsigned long long need = 2ULL * cfg->max_connections +
				  (unsigned long long)cfg->workers * (NOFILE_PER_WORKER + main_nsocks) +
				  NOFILE_PROCESS;
	unsigned long long before = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) {
		if (rl.rlim_cur != before)
			log_info("descriptor limit raised from %llu to %llu for max_connections %u",
				 before, (unsigned long long)rl.rlim_cur, cfg->max_connections);
		return;
	}
	unsigned long long fit = rl.rlim_cur > need - 2ULL * cfg->max_connections
					 ? (rl.rlim_cur - (need - 2ULL * cfg->max_connections)) / 2
					 : 0;
	log_warn("max_connections %u needs about %llu file descriptors (2 per session, %u per worker "
		 "for listeners, backends and the relay pool), but the limit is %llu (hard limit "
		 "%llu): about %llu sessions fit; raise LimitNOFILE= (or ulimit -n) or lower "
		 "max_connections",
		 cfg->max_connections, need, NOFILE_PER_WORKER + (unsigned)main_nsocks,
		 (unsigned long long)rl.rlim_cur,
		 rl.rlim_max == RLIM_INFINITY ? 0ULL : (unsigned long long)rl.rlim_max, fit);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: submitd [-c FILE] [-t [-u LOGIN [-s ADDRESS]]] [-V]\n"
		   "  -c FILE     configuration file (default %s)\n"
		   "  -t          check the configuration and its neighbours, and exit\n"
		   "  -u LOGIN    with -t: also log in as LOGIN through Dovecot (password read\n"
		   "              from standard input) and check it owns its sender address\n"
		   "  -s ADDRESS  with -u: the sender address to check (default: the login)\n"
		   "  -V          print the version and exit\n",
		   DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	bool test_only = false;
	const char *test_login = NULL, *test_sender = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "c:tu:s:Vh")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'u':
			test_login = optarg;
			break;
		case 's':
			test_sender = optarg;
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
	if (optind != argc || ((test_login || test_sender) && !test_only) || (test_sender && !test_login)) {
		usage(stderr);
		return 2;
	}

	char err[1024];
	main_config_path = path;
	struct main_watch *watch = NULL;
	size_t nwatch = 0;
	struct config *cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "submitd: %s\n", err);
		return 1;
	}
	main_watch_build(cfg, &watch, &nwatch);
	bool loaded = main_snapshot_load(cfg, err, sizeof(err));
	if (!loaded || !main_check_config(cfg, err, sizeof(err))) {
		/* main_check_config()'s messages name the file themselves */
		if (loaded)
			fprintf(stderr, "submitd: %s\n", err);
		else
			fprintf(stderr, "submitd: %s: %s\n", path, err);
		config_unref(&cfg);
		main_watch_free(watch, nwatch);
		return 1;
	}
	if (test_only) {
		/* The file is sound; now the neighbours it names (docs/design.md §8). */
		printf("submitd: %s: syntax, certificates and tables: ok\n", path);
		fflush(stdout);
		int problems = check_neighbours(cfg, stdout);
		if (test_login != NULL)
			problems += main_check_login(cfg, test_login, test_sender);
		if (problems == 0)
			printf("submitd: configuration %s is valid\n", path);
		else
			printf("submitd: %s: %d problem%s with the neighbours above\n", path, problems,
			       problems == 1 ? "" : "s");
		config_unref(&cfg);
		main_watch_free(watch, nwatch);
		return problems == 0 ? 0 : 1;
	}
	main_cfg = cfg;
	main_watches = watch;
	main_nwatches = nwatch;
	log_open(cfg->syslog_facility >= 0 ? LOG_TARGET_SYSLOG : LOG_TARGET_STDERR,
		 cfg->syslog_facility >= 0 ? cfg->syslog_facility : LOG_MAIL, cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	main_notify_init();
	main_watchdog_init();

	main_listen_fds();
	if (!main_plan_sockets(cfg, err, sizeof(err))) {
		log_err("%s", err);
		main_notify(false, "STATUS=%s\nERRNO=%d", err, EINVAL);
		return 1;
	}
	main_nofile_check(cfg);
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
		wt->nlisteners = main_nsocks;
		wt->listeners = xcalloc(main_nsocks, sizeof(*wt->listeners));
		wt->fds = xcalloc(main_nsocks, sizeof(int));
		for (size_t j = 0; j < main_nsocks; j++) {
			wt->listeners[j].w = &wt->w;
			wt->listeners[j].idx = main_socks[j].idx;
			/* A socket from systemd is shared: every worker listens
			   on its own descriptor of it. */
			if (main_socks[j].fd >= 0)
				wt->fds[j] = fcntl(main_socks[j].fd, F_DUPFD_CLOEXEC, 3);
			else
				wt->fds[j] = main_listen_socket(&cfg->listens[main_socks[j].idx], err,
								sizeof(err));
			if (wt->fds[j] < 0) {
				if (main_socks[j].fd >= 0)
					snprintf(err, sizeof(err), "dup: %s", strerror(errno));
				log_err("%s", err);
				main_notify(false, "STATUS=%s\nERRNO=%d", err, errno);
				return 1;
			}
			/* Accepting must never block (shared with systemd's
			   copy, which does not accept: Accept=no). */
			fcntl(wt->fds[j], F_SETFL, fcntl(wt->fds[j], F_GETFL) | O_NONBLOCK);
		}
	}
	for (size_t j = 0; j < main_nsocks; j++)
		if (main_socks[j].fd >= 0)
			close(main_socks[j].fd);

	/* Sockets bound, keys and configuration read: drop privileges before
	   any thread, client or backend connection exists. */
	if (!main_drop_privileges(cfg, err, sizeof(err))) {
		log_err("%s", err);
		main_notify(false, "STATUS=%s\nERRNO=%d", err, EPERM);
		return 1;
	}

	uv_loop_t *main_loop = uv_default_loop();
	uv_async_init(main_loop, &main_async, main_async_cb);
	uv_signal_init(main_loop, &main_sigterm);
	uv_signal_init(main_loop, &main_sigint);
	uv_signal_init(main_loop, &main_sighup);
	uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
	uv_signal_start(&main_sigint, main_signal_cb, SIGINT);
	/* Before READY=1: a reload request must never find us without a
	   handler (Type=notify-reload). */
	uv_signal_start(&main_sighup, main_sighup_cb, SIGHUP);
	uv_timer_init(main_loop, &main_status_timer);
	uv_timer_init(main_loop, &main_watchdog_timer);
	uv_timer_init(main_loop, &main_cert_timer);
	uv_timer_init(main_loop, &main_stop_timer);
	uv_timer_init(main_loop, &main_reload_timer);
	if (notify_fd >= 0)
		uv_timer_start(&main_status_timer, main_status_cb, STATUS_INTERVAL_MS,
			       STATUS_INTERVAL_MS);
	if (main_watchdog_usec > 0) {
		uint64_t ms = main_watchdog_usec / 2000;
		uv_timer_start(&main_watchdog_timer, main_watchdog_cb, 0, ms > 0 ? ms : 1);
	}
	if (main_nwatches > 0)
		uv_timer_start(&main_cert_timer, main_cert_cb, CERT_POLL_MS, CERT_POLL_MS);

	for (unsigned i = 0; i < nworkers; i++)
		pthread_create(&workers[i].thread, NULL, main_worker_run, &workers[i]);

	uv_run(main_loop, UV_RUN_DEFAULT);

	for (unsigned i = 0; i < nworkers; i++)
		pthread_join(workers[i].thread, NULL);
	main_close_handles(main_loop);
	log_info("submitd stopped");
	return 0;
}
