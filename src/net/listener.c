/* listener: see listener.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/addrcount.h"
#include "net/listener.h"
#include "session.h"
#include "worker.h"

/* ---- connection accounting, shared by all workers ----
 * The total is one atomic counter. Per address, the counts are exact
 * (net/addrcount.c: keyed hash, whole-address match), so no client can make
 * another look busier than it is. Clients in client_limit_exceptions
 * (mynetworks by default: a webmail or a NAT gateway speaks for many users)
 * count only towards the total. The same snapshot (the session's) decides
 * at acquire and release, so both always agree. */
static atomic_uint listener_conn_count;

bool listener_conn_acquire(const struct sockaddr *peer, const struct config *cfg,
			   const char **why_r)
{
	if (atomic_fetch_add(&listener_conn_count, 1) >= cfg->max_connections) {
		atomic_fetch_sub(&listener_conn_count, 1);
		*why_r = "too many connections";
		return false;
	}
	if (config_limit_exempt(cfg, peer))
		return true;
	struct addrcount_key key;
	addrcount_key(peer, cfg->ipv6_client_prefix, &key);
	if (!addrcount_conn_acquire(addrcount_global(), &key, cfg->max_connections_per_ip,
				    addrcount_now())) {
		atomic_fetch_sub(&listener_conn_count, 1);
		*why_r = "too many connections from your address";
		return false;
	}
	return true;
}

void listener_conn_release(const struct sockaddr *peer, const struct config *cfg)
{
	if (!config_limit_exempt(cfg, peer)) {
		struct addrcount_key key;
		addrcount_key(peer, cfg->ipv6_client_prefix, &key);
		addrcount_conn_release(addrcount_global(), &key, addrcount_now());
	}
	atomic_fetch_sub(&listener_conn_count, 1);
}

unsigned listener_conn_total(void)
{
	return atomic_load(&listener_conn_count);
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

struct listener_sdfd {
	int fd;
	char name[256];
	struct sockaddr_storage addr;
	bool used;
};

static struct listener_sdfd *listener_sdfds;
static size_t listener_nsdfds;

void listener_inherit(void)
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
	listener_sdfds = xcalloc(n, sizeof(*listener_sdfds));
	const char *np = names;
	for (unsigned long i = 0; i < n; i++) {
		struct listener_sdfd *s = &listener_sdfds[listener_nsdfds];
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
			log_warn("systemd socket %d (%s) is not a listening TCP socket; closing it",
				 fd, s->name[0] ? s->name : "unnamed");
			close(fd);
			continue;
		}
		s->fd = fd;
		listener_nsdfds++;
	}
out:
	/* Children must not think the sockets are theirs (sd_listen_fds with
	   unset_environment). */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
}

static bool listener_addr_is_any(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (a->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
	return false;
}

static uint16_t listener_addr_port(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)a)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

static bool listener_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family || listener_addr_port(a) != listener_addr_port(b))
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static bool listener_sdfd_matches(const struct listener_sdfd *s, const struct listen_cfg *l)
{
	if (l->fdname != NULL)
		return strcmp(s->name, l->fdname) == 0;
	if (listener_addr_equal(&s->addr, &l->addr))
		return true;
	return listener_addr_is_any(&l->addr) && listener_addr_is_any(&s->addr) &&
	       listener_addr_port(&l->addr) == listener_addr_port(&s->addr);
}

/* ---- listening sockets: one entry per (listen line, socket) ---- */

struct listener_sock {
	size_t idx; /* listen line */
	int fd;     /* inherited from systemd, or -1: each worker binds its own */
};

static struct listener_sock *listener_socks;
static size_t listener_nsocks;

static void listener_plan_add(size_t idx, int fd)
{
	listener_socks = xrealloc(listener_socks, (listener_nsocks + 1) * sizeof(*listener_socks));
	listener_socks[listener_nsocks++] = (struct listener_sock){idx, fd};
}

bool listener_plan(const struct config *cfg, char *err, size_t errlen)
{
	/* Named lines first, so a named socket is never taken by address. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < cfg->nlistens; i++) {
			const struct listen_cfg *l = &cfg->listens[i];
			if ((pass == 0) != (l->fdname != NULL))
				continue;
			size_t found = 0;
			for (size_t k = 0; k < listener_nsdfds; k++) {
				struct listener_sdfd *s = &listener_sdfds[k];
				if (s->used || !listener_sdfd_matches(s, l))
					continue;
				s->used = true;
				found++;
				listener_plan_add(i, s->fd);
			}
			if (found == 0 && l->fdname != NULL && listener_nsdfds > 0) {
				snprintf(err, errlen,
					 "listen %s name=%s: systemd passed no socket named \"%s\"",
					 l->text, l->fdname, l->fdname);
				return false;
			}
			/* "listen = 0.0.0.0:587" and "listen = [::]:587" with one
			   dual-stack [::]:587 from systemd: the second line is
			   served by the socket the first one took; binding it
			   again would fail. */
			for (size_t k = 0; found == 0 && l->fdname == NULL && k < listener_nsdfds;
			     k++) {
				const struct listener_sdfd *s = &listener_sdfds[k];
				if (s->used && listener_addr_is_any(&l->addr) &&
				    listener_addr_is_any(&s->addr) &&
				    listener_addr_port(&s->addr) == listener_addr_port(&l->addr)) {
					log_info("listen %s: served by the systemd socket %d on "
						 "the same port",
						 l->text, s->fd);
					found = (size_t)-1;
				}
			}
			if (found == (size_t)-1)
				continue;
			if (found == 0) {
				listener_plan_add(i, -1);
			} else {
				log_info("listen %s: using %zu socket%s from systemd", l->text,
					 found, found == 1 ? "" : "s");
			}
		}
	}
	for (size_t k = 0; k < listener_nsdfds; k++) {
		const struct listener_sdfd *s = &listener_sdfds[k];
		if (!s->used) {
			log_warn("systemd socket %d (%s, port %u) matches no \"listen\" line; "
				 "closing it",
				 s->fd, s->name[0] ? s->name : "unnamed",
				 listener_addr_port(&s->addr));
			close(s->fd);
		}
	}
	return true;
}

static int listener_socket(const struct listen_cfg *l, char *err, size_t errlen)
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

/* Accepting is done here rather than by uv_listen(): when the process is out
 * of descriptors (or the kernel out of memory for a socket), libuv's accept
 * loop retries at once and never returns to the event loop. Instead the
 * listener stops polling for a short back-off, growing while the shortage
 * lasts; connections wait in the kernel's backlog meanwhile, open sessions
 * are served, and one line is logged when an episode starts and one when it
 * ends. */
#define ACCEPT_BATCH 64 /* per poll event, so other work gets a turn */
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

static void listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	if (--l->open_handles == 0 && l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}

static void listener_close_one(struct listener *l)
{
	if (l->open_handles == 0 || uv_is_closing((uv_handle_t *)&l->poll))
		return;
	uv_close((uv_handle_t *)&l->poll, listener_closed);
	uv_close((uv_handle_t *)&l->backoff, listener_closed);
}

static void listener_on_accept(uv_poll_t *h, int status, int events);

static void listener_backoff_cb(uv_timer_t *t)
{
	struct listener *l = t->data;
	uv_poll_start(&l->poll, UV_READABLE, listener_on_accept);
}

static unsigned long long listener_nofile_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	return (unsigned long long)rl.rlim_cur;
}

/* accept() failed for want of a resource: pause this listener. */
static void listener_accept_backoff(struct listener *l, int err)
{
	if (l->episode_started == 0) {
		l->episode_started = uv_now(&l->w->loop) | 1;
		l->backoff_ms = ACCEPT_BACKOFF_MIN_MS;
		l->episode_failures = 0;
		log_warn("worker %u: accept on %s: %s; pausing new connections (sessions open: %u "
			 "here, %u in all; descriptor limit %llu)",
			 l->w->id, l->w->cfg->listens[l->idx].text, strerror(err), l->w->nsessions,
			 atomic_load(&listener_conn_count), listener_nofile_limit());
	} else if (l->backoff_ms < ACCEPT_BACKOFF_MAX_MS) {
		l->backoff_ms = l->backoff_ms * 2 < ACCEPT_BACKOFF_MAX_MS ? l->backoff_ms * 2
									  : ACCEPT_BACKOFF_MAX_MS;
	}
	l->episode_failures++;
	uv_poll_stop(&l->poll);
	uv_timer_start(&l->backoff, listener_backoff_cb, l->backoff_ms, 0);
}

static void listener_on_accept(uv_poll_t *h, int status, int events)
{
	struct listener *l = h->data;
	if (status < 0) {
		listener_accept_backoff(l, -status);
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
				listener_accept_backoff(l, errno);
				return;
			}
		}
		if (l->episode_started != 0) {
			log_info("worker %u: accepting on %s again after %.1f s (%lu attempts "
				 "failed)",
				 l->w->id, l->w->cfg->listens[l->idx].text,
				 (double)(uv_now(&l->w->loop) - l->episode_started) / 1000.0,
				 l->episode_failures);
			l->episode_started = 0;
		}
		session_accept(l->w, fd, l->idx);
	}
}

size_t listener_count(void)
{
	return listener_nsocks;
}

bool listener_open(struct worker *w, const struct config *cfg, struct listener **ls_r, char *err,
		   size_t errlen)
{
	struct listener *ls = xcalloc(listener_nsocks, sizeof(*ls));
	*ls_r = ls;
	for (size_t j = 0; j < listener_nsocks; j++) {
		ls[j].w = w;
		const struct listen_cfg *lc = &cfg->listens[listener_socks[j].idx];
		ls[j].idx = listener_socks[j].idx;
		/* A socket from systemd is shared: every worker listens on its
		   own descriptor of it. */
		if (listener_socks[j].fd >= 0)
			ls[j].fd = fcntl(listener_socks[j].fd, F_DUPFD_CLOEXEC, 3);
		else
			ls[j].fd = listener_socket(lc, err, errlen);
		if (ls[j].fd < 0) {
			if (listener_socks[j].fd >= 0)
				snprintf(err, errlen, "dup: %s", strerror(errno));
			return false;
		}
		/* Accepting must never block (shared with systemd's copy,
		   which does not accept: Accept=no). */
		fcntl(ls[j].fd, F_SETFL, fcntl(ls[j].fd, F_GETFL) | O_NONBLOCK);
	}
	return true;
}

void listener_plan_done(void)
{
	for (size_t j = 0; j < listener_nsocks; j++)
		if (listener_socks[j].fd >= 0)
			close(listener_socks[j].fd);
}

void listener_start(struct listener *ls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct listener *l = &ls[i];
		struct worker *w = l->w;
		int r = uv_poll_init(&w->loop, &l->poll, l->fd);
		if (r == 0) {
			l->poll.data = l->backoff.data = l;
			uv_timer_init(&w->loop, &l->backoff);
			l->open_handles = 2;
			r = uv_poll_start(&l->poll, UV_READABLE, listener_on_accept);
		}
		if (r < 0) {
			log_err("worker %u: cannot listen on %s: %s", w->id,
				w->cfg->listens[l->idx].text, uv_strerror(r));
			exit(1);
		}
	}
}

void listener_close(struct listener *ls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		listener_close_one(&ls[i]);
}

/* Descriptors per worker besides its sessions: its listening sockets, the
 * loop's own (epoll, eventfd, timers), the Dovecot connection, MySQL
 * connections, idle downstream connections in the pool. An estimate. */
#define NOFILE_PER_WORKER 48
#define NOFILE_PROCESS 32 /* stdio, logging, sd_notify, the main loop */

/* Room for max_connections: each session holds its client's socket and,
 * while it sends, one to the downstream. The soft limit is raised to the hard
 * one; if that is still short, say so with numbers: past the limit, new
 * clients wait in the backlog (listener_on_accept). */
void listener_nofile_check(const struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	unsigned long long per_worker = NOFILE_PER_WORKER + listener_nsocks;
	unsigned long long need = 2ULL * cfg->max_connections +
				  (unsigned long long)cfg->workers * per_worker + NOFILE_PROCESS;
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
	log_warn("max_connections %u needs about %llu file descriptors (2 per session, %u per "
		 "worker "
		 "for listeners, backends and the relay pool), but the limit is %llu (hard limit "
		 "%llu): about %llu sessions fit; raise LimitNOFILE= (or ulimit -n) or lower "
		 "max_connections",
		 cfg->max_connections, need, NOFILE_PER_WORKER + (unsigned)listener_nsocks,
		 (unsigned long long)rl.rlim_cur,
		 rl.rlim_max == RLIM_INFINITY ? 0ULL : (unsigned long long)rl.rlim_max, fit);
}

/* New listen lines cannot be bound after privileges are gone: the snapshot
 * keeps the listen lines it started with (same count, addresses and order),
 * but their flags and modes may change. Anything else is ignored with a
 * warning until a restart. */
void listener_reload_keep(const struct config *cur, struct config *next)
{
	bool same = cur->nlistens == next->nlistens;
	for (size_t i = 0; same && i < cur->nlistens; i++)
		same = listener_addr_equal(&cur->listens[i].addr, &next->listens[i].addr) &&
		       ((cur->listens[i].fdname == NULL) == (next->listens[i].fdname == NULL)) &&
		       (cur->listens[i].fdname == NULL ||
			strcmp(cur->listens[i].fdname, next->listens[i].fdname) == 0);
	if (same)
		return;
	log_warn("reload: the \"listen\" lines changed; keeping the current listeners until a "
		 "restart");
	config_listens_copy(next, cur);
}
