/* lookup/table_mysql: "mysql:/path.cf" tables at run time — per-worker
 * connections through MariaDB Connector/C's non-blocking API driven by
 * uv_poll (docs/design.md invariant 1: connect, query and result fetch never
 * block the loop). The .cf keys and the deviations from Postfix are in
 * table_mysql_cf.c; the query and result templates in expand.c.
 *
 * Hosts are tried as Postfix does: UNIX sockets first, then TCP hosts, each
 * group in random order; a host that failed is skipped for retry_interval,
 * but while every host is skipped one probe connection is tried, 0.5 s apart
 * growing to 2 s (at most retry_interval apart), so an outage ends within
 * seconds of the database's return. Host names are resolved with
 * uv_getaddrinfo (thread pool), never by Connector/C on the loop.
 *
 * Key material is escaped with mysql_real_escape_string() on the live
 * connection (its charset, and NO_BACKSLASH_ESCAPES, are honoured); the
 * query template must supply the quotes ('%s'), as in Postfix.
 */
#include "config.h"

#include <netdb.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <mysql.h>
#include <errmsg.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"
#include "lookup/expand.h"
#include "lookup/table.h"
#include "lookup/table_backend.h"
#include "lookup/table_mysql.h"

enum tm_link_state {
	TM_RESOLVING,
	TM_CONNECTING,
	TM_IDLE,
	TM_QUERY,
	TM_STORE,
	TM_NEXT,
	TM_NEXT_STORE,
	TM_DEAD,
};

struct tm_poll {
	uv_poll_t h;
	struct table_inst *ti;
	struct tm_link *link;
};

struct tm_resolve {
	uv_getaddrinfo_t req;
	struct tm_link *link; /* NULL once the link gave up on it */
};

/* One connection (one MYSQL handle, one socket). */
struct tm_link {
	struct table_mysql_inst *mi;
	struct table_inst *ti;
	MYSQL db;
	bool db_inited;
	struct tm_poll *poll;
	int fd;
	uv_timer_t wait_timer; /* MYSQL_WAIT_TIMEOUT from Connector/C */
	uv_timer_t deadline;   /* connect/query timeout; idle_interval when idle */
	unsigned open_timers;
	enum tm_link_state state;
	struct table_req *req;
	struct tm_resolve *resolve;
	size_t order[16], norder, order_pos; /* host indexes still to try */
	char addr[INET6_ADDRSTRLEN];
	bool used;  /* has served a query (a stale-connection error may be retried) */
	bool probe; /* tries hosts in their retry interval too */
	/* result being collected */
	struct expand_result result;
	enum table_status answer;
	struct list_link link; /* on the instance's links */
};

struct table_mysql_inst {
	const struct table_mysql *m;
	struct table_inst *ti;
	struct list_link links; /* struct tm_link */
	unsigned nlinks, nconnecting;
	struct list_link queue; /* struct table_req, QUEUED, oldest first */
	unsigned nqueued;
	uv_timer_t queue_timer;
	uint64_t *dead_until; /* per host */
	bool closing;
	unsigned open_timers;
	/* While every host is in its retry interval, one probe connection at
	   a time, from TM_PROBE_MIN_MS growing to TM_PROBE_MAX_MS (never more
	   than retry_interval), so a recovery is noticed within seconds. */
	bool *down; /* per host: this instance counts it in ndown */
	uv_timer_t probe_timer;
	uint64_t probe_ms;
	bool probing;
	unsigned long probes_failed;
};

#define TM_PROBE_MIN_MS 500
#define TM_PROBE_MAX_MS 2000

static void tm_link_run(struct tm_link *l, int mstatus, bool start);
static void tm_dispatch(struct table_mysql_inst *mi);
static void tm_link_drop(struct tm_link *l, bool healthy);
static bool tm_link_try_next_host(struct tm_link *l);
static void tm_count_refused(struct table_mysql_inst *mi);

/* ------------------------------------------------------------------ */
/* per-worker runtime */

static uint64_t tm_now(struct table_mysql_inst *mi)
{
	return uv_now(table_inst_loop(mi->ti));
}

static void tm_queue_push(struct table_mysql_inst *mi, struct table_req *req, bool front)
{
	req->where = TABLE_REQ_QUEUED;
	if (front)
		list_add_head(&mi->queue, &req->link);
	else
		list_add_tail(&mi->queue, &req->link);
	mi->nqueued++;
}

static void tm_queue_unlink(struct table_mysql_inst *mi, struct table_req *req)
{
	list_remove(&req->link);
	mi->nqueued--;
}

/* The oldest queued request, or NULL. */
static struct table_req *tm_queue_first(const struct table_mysql_inst *mi)
{
	struct list_link *l = list_first(&mi->queue);
	return l ? list_entry(l, struct table_req, link) : NULL;
}

static void tm_queue_timer_cb(uv_timer_t *t)
{
	struct table_mysql_inst *mi = t->data;
	uint64_t now = tm_now(mi);
	struct table_req *req;
	while ((req = tm_queue_first(mi)) != NULL && req->deadline <= now) {
		tm_queue_unlink(mi, req);
		log_warn("%s: no database connection within %llu ms", mi->m->origin,
			 (unsigned long long)mi->m->query_timeout_ms);
		tm_count_refused(mi);
		table_req_finish(req, TABLE_TEMPFAIL, NULL);
	}
	tm_dispatch(mi);
}

/* Dispatches from the next loop turn, never inside the caller's call. */
static void tm_dispatch_soon(struct table_mysql_inst *mi)
{
	uv_timer_start(&mi->queue_timer, tm_queue_timer_cb, 0, 0);
}

static void tm_queue_timer_closed(uv_handle_t *h)
{
	struct table_mysql_inst *mi = h->data;
	struct table_inst *ti = mi->ti;
	if (--mi->open_timers == 0) {
		free(mi->dead_until);
		free(mi->down);
		free(mi);
	}
	table_inst_handle_closed(ti);
}

static void *tm_inst_new(const void *def, struct table_inst *ti)
{
	const struct table_mysql *m = def;
	struct table_mysql_inst *mi = xcalloc(1, sizeof(*mi));
	list_init(&mi->links);
	list_init(&mi->queue);
	mi->m = m;
	mi->ti = ti;
	mi->dead_until = xcalloc(m->nhosts, sizeof(uint64_t));
	mi->down = xcalloc(m->nhosts, sizeof(bool));
	mi->probe_ms = TM_PROBE_MIN_MS;
	uv_timer_init(table_inst_loop(ti), &mi->queue_timer);
	mi->queue_timer.data = mi;
	table_inst_handle_opened(ti);
	uv_timer_init(table_inst_loop(ti), &mi->probe_timer);
	mi->probe_timer.data = mi;
	table_inst_handle_opened(ti);
	mi->open_timers = 2;
	return mi;
}

/* --- host health --- */

static uint64_t tm_mono_ms(void)
{
	return uv_hrtime() / 1000000u;
}

static bool tm_link_new(struct table_mysql_inst *mi, bool probe);

static bool tm_all_dead(struct table_mysql_inst *mi)
{
	uint64_t now = tm_now(mi);
	for (size_t i = 0; i < mi->m->nhosts; i++)
		if (mi->dead_until[i] <= now)
			return false;
	return true;
}

static void tm_probe_cb(uv_timer_t *t)
{
	struct table_mysql_inst *mi = t->data;
	if (mi->probing || !tm_all_dead(mi))
		return; /* a host is out of its retry interval: normal traffic finds it */
	mi->probing = true;
	if (!tm_link_new(mi, true))
		mi->probing = false;
}

/* While every host is in its retry interval, arms the next probe. */
static void tm_probe_schedule(struct table_mysql_inst *mi)
{
	if (mi->closing || mi->probing || uv_is_active((uv_handle_t *)&mi->probe_timer) ||
	    !tm_all_dead(mi))
		return;
	uint64_t ms = mi->probe_ms;
	if (ms > mi->m->retry_interval_ms)
		ms = mi->m->retry_interval_ms;
	uv_timer_start(&mi->probe_timer, tm_probe_cb, ms, 0);
}

/* A connection to host hi failed: skip it for retry_interval, and log the
 * outage once (the first failure any worker sees), not every attempt. */
static void tm_host_failed(struct table_mysql_inst *mi, size_t hi, const char *why)
{
	const struct table_mysql *m = mi->m;
	struct tm_health *h = &m->health[hi];
	char safe[300];
	log_sanitize(safe, sizeof(safe), why, strlen(why));
	mi->dead_until[hi] = tm_now(mi) + m->retry_interval_ms;
	if (!mi->down[hi]) {
		mi->down[hi] = true;
		if (atomic_fetch_add(&h->ndown, 1) == 0) {
			atomic_store(&h->since_ms, tm_mono_ms());
			atomic_store(&h->refused, 0);
			log_warn("%s: MySQL host %s is down: %s", m->origin, m->hosts[hi].name,
				 safe);
			tm_probe_schedule(mi);
			return;
		}
	}
	log_debug("%s: MySQL host %s: %s", m->origin, m->hosts[hi].name, safe);
	/* Probing goes on without traffic too, so every worker sees the
	   host come back (and the recovery is logged). */
	tm_probe_schedule(mi);
}

static void tm_host_up(struct table_mysql_inst *mi, size_t hi)
{
	const struct table_mysql *m = mi->m;
	struct tm_health *h = &m->health[hi];
	mi->dead_until[hi] = 0;
	mi->probe_ms = TM_PROBE_MIN_MS;
	mi->probes_failed = 0;
	if (!mi->down[hi])
		return;
	mi->down[hi] = false;
	if (atomic_fetch_sub(&h->ndown, 1) == 1)
		log_info(
			"%s: MySQL host %s is up again after %.1f s (%lu lookups failed meanwhile)",
			m->origin, m->hosts[hi].name,
			(double)(tm_mono_ms() - atomic_load(&h->since_ms)) / 1000.0,
			atomic_load(&h->refused));
}

/* A lookup was answered TEMPFAIL for want of a connection. */
static void tm_count_refused(struct table_mysql_inst *mi)
{
	for (size_t i = 0; i < mi->m->nhosts; i++)
		if (mi->down[i])
			atomic_fetch_add(&mi->m->health[i].refused, 1);
}

/* --- link lifetime --- */

static void tm_poll_closed(uv_handle_t *h)
{
	struct tm_poll *p = h->data;
	struct table_inst *ti = p->ti;
	free(p);
	table_inst_handle_closed(ti);
}

static void tm_link_stop_poll(struct tm_link *l)
{
	if (l->poll == NULL)
		return;
	/* Stop and close before mysql_close() invalidates the fd. */
	uv_poll_stop(&l->poll->h);
	uv_close((uv_handle_t *)&l->poll->h, tm_poll_closed);
	l->poll = NULL;
	l->fd = -1;
}

static void tm_link_timer_closed(uv_handle_t *h)
{
	struct tm_link *l = h->data;
	struct table_inst *ti = l->ti;
	if (--l->open_timers == 0) {
		expand_result_free(&l->result);
		free(l);
	}
	table_inst_handle_closed(ti);
}

static void tm_link_close_db(struct tm_link *l, bool healthy)
{
	tm_link_stop_poll(l);
	if (l->db_inited) {
		/* A healthy idle link gets a polite COM_QUIT (a few bytes into an
		 * empty socket buffer: does not block). Anything else is cut
		 * first, so mysql_close() cannot wait on a dead peer. */
		if (!healthy)
			mariadb_cancel(&l->db);
		mysql_close(&l->db);
		l->db_inited = false;
	}
}

static void tm_link_unlink(struct tm_link *l)
{
	struct table_mysql_inst *mi = l->mi;
	list_remove(&l->link);
	mi->nlinks--;
	if (l->state == TM_CONNECTING || l->state == TM_RESOLVING)
		mi->nconnecting--;
}

/* Removes the link from the instance and frees it (asynchronously). Its
 * request, if any, must have been dealt with by the caller. */
static void tm_link_drop(struct tm_link *l, bool healthy)
{
	struct table_mysql_inst *mi = l->mi;
	tm_link_unlink(l);
	if (l->probe) {
		/* the probe found no host: the next one waits longer */
		l->probe = false;
		mi->probing = false;
		mi->probes_failed++;
		mi->probe_ms =
			mi->probe_ms * 2 < TM_PROBE_MAX_MS ? mi->probe_ms * 2 : TM_PROBE_MAX_MS;
		tm_probe_schedule(mi);
	}
	l->state = TM_DEAD;
	if (l->resolve) {
		l->resolve->link = NULL;
		uv_cancel((uv_req_t *)&l->resolve->req);
		l->resolve = NULL;
	}
	tm_link_close_db(l, healthy);
	uv_timer_stop(&l->wait_timer);
	uv_timer_stop(&l->deadline);
	uv_close((uv_handle_t *)&l->wait_timer, tm_link_timer_closed);
	uv_close((uv_handle_t *)&l->deadline, tm_link_timer_closed);
}

/* Fails the link's request (TEMPFAIL, or a retry on a fresh connection) and
 * drops the link. */
static void tm_link_fail(struct tm_link *l, bool retry, const char *what)
{
	struct table_mysql_inst *mi = l->mi;
	struct table_req *req = l->req;
	char safe[300];
	const char *why = l->db_inited ? mysql_error(&l->db) : "";
	log_warn("%s: %s%s%s", mi->m->origin, what, *why ? ": " : "",
		 log_sanitize(safe, sizeof(safe), why, strlen(why)));
	l->req = NULL;
	tm_link_drop(l, false);
	if (req) {
		if (retry && req->cb && req->attempts < 2) {
			req->deadline = tm_now(mi) + mi->m->query_timeout_ms;
			tm_queue_push(mi, req, true);
		} else {
			table_req_finish(req, TABLE_TEMPFAIL, NULL);
		}
	}
	tm_dispatch(mi);
}

static void tm_poll_cb(uv_poll_t *h, int status, int events)
{
	struct tm_poll *p = h->data;
	struct tm_link *l = p->link; /* a poll is closed before its link goes */
	int ms = 0;
	if (status < 0)
		ms = MYSQL_WAIT_READ | MYSQL_WAIT_WRITE; /* let Connector/C find the error */
	if (events & UV_READABLE)
		ms |= MYSQL_WAIT_READ;
	if (events & UV_WRITABLE)
		ms |= MYSQL_WAIT_WRITE;
	if (events & UV_PRIORITIZED)
		ms |= MYSQL_WAIT_EXCEPT;
	uv_poll_stop(h);
	uv_timer_stop(&l->wait_timer);
	tm_link_run(l, ms, false);
}

static void tm_wait_timer_cb(uv_timer_t *t)
{
	struct tm_link *l = t->data;
	if (l->poll)
		uv_poll_stop(&l->poll->h);
	tm_link_run(l, MYSQL_WAIT_TIMEOUT, false);
}

/* Arms the poll/timer for what Connector/C waits on. */
static void tm_link_wait(struct tm_link *l, int mstatus)
{
	int fd = (int)mysql_get_socket(&l->db);
	if (l->poll && fd != l->fd)
		tm_link_stop_poll(l);
	if (l->poll == NULL && fd >= 0) {
		l->poll = xcalloc(1, sizeof(*l->poll));
		l->poll->ti = l->ti;
		l->poll->link = l;
		l->poll->h.data = l->poll;
		if (uv_poll_init(table_inst_loop(l->ti), &l->poll->h, fd) != 0) {
			free(l->poll);
			l->poll = NULL;
		} else {
			table_inst_handle_opened(l->ti);
			l->fd = fd;
		}
	}
	int ev = 0;
	if (mstatus & MYSQL_WAIT_READ)
		ev |= UV_READABLE;
	if (mstatus & MYSQL_WAIT_WRITE)
		ev |= UV_WRITABLE;
	if (mstatus & MYSQL_WAIT_EXCEPT)
		ev |= UV_PRIORITIZED;
	if (ev && l->poll)
		uv_poll_start(&l->poll->h, ev, tm_poll_cb);
	if (mstatus & MYSQL_WAIT_TIMEOUT)
		uv_timer_start(&l->wait_timer, tm_wait_timer_cb, mysql_get_timeout_value_ms(&l->db),
			       0);
	else if (!ev || !l->poll)
		/* nothing to wait on: should not happen; poke it on the next turn */
		uv_timer_start(&l->wait_timer, tm_wait_timer_cb, 0, 0);
}

static void tm_deadline_cb(uv_timer_t *t)
{
	struct tm_link *l = t->data;
	struct table_mysql_inst *mi = l->mi;
	switch (l->state) {
	case TM_IDLE:
		/* idle_interval reached */
		tm_link_drop(l, true);
		return;
	case TM_RESOLVING:
	case TM_CONNECTING:
		if (l->resolve) {
			l->resolve->link = NULL;
			uv_cancel((uv_req_t *)&l->resolve->req);
			l->resolve = NULL;
		}
		tm_host_failed(mi, l->order[l->order_pos],
			       l->state == TM_RESOLVING ? "name resolution timed out"
							: "connect timed out");
		l->order_pos++;
		if (!tm_link_try_next_host(l))
			tm_dispatch(mi);
		return;
	case TM_DEAD:
		return;
	default:
		tm_link_fail(l, false, "query timeout");
		return;
	}
}

/* --- connecting --- */

static void tm_link_init_db(struct tm_link *l)
{
	const struct table_mysql *m = l->mi->m;
	unsigned int tmo;
	my_bool no = 0, verify = m->tls_verify_cert;
	mysql_init(&l->db);
	l->db_inited = true;
	mysql_options(&l->db, MYSQL_OPT_NONBLOCK, 0);
	tmo = (unsigned)((m->connect_timeout_ms + 999) / 1000);
	mysql_options(&l->db, MYSQL_OPT_CONNECT_TIMEOUT, &tmo);
	tmo = (unsigned)((m->query_timeout_ms + 999) / 1000);
	mysql_options(&l->db, MYSQL_OPT_READ_TIMEOUT, &tmo);
	mysql_options(&l->db, MYSQL_OPT_WRITE_TIMEOUT, &tmo);
	mysql_options(&l->db, MYSQL_OPT_LOCAL_INFILE, &no);
	mysql_options(&l->db, MYSQL_SET_CHARSET_NAME, m->charset);
	if (m->option_file)
		mysql_options(&l->db, MYSQL_READ_DEFAULT_FILE, m->option_file);
	if (m->option_group || m->option_file)
		mysql_options(&l->db, MYSQL_READ_DEFAULT_GROUP,
			      m->option_group ? m->option_group : "client");
	if (m->tls) {
		mysql_ssl_set(&l->db, m->tls_key_file, m->tls_cert_file, m->tls_CAfile,
			      m->tls_CApath, m->tls_ciphers);
		mysql_options(&l->db, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
	}
}

static void tm_link_connect_start(struct tm_link *l, const char *addr)
{
	const struct table_mysql *m = l->mi->m;
	const struct tm_host *h = &m->hosts[l->order[l->order_pos]];
	tm_link_init_db(l);
	l->state = TM_CONNECTING;
	MYSQL *ret = NULL;
	int st;
	if (h->kind == TM_HOST_UNIX)
		st = mysql_real_connect_start(&ret, &l->db, "localhost", m->user, m->password,
					      m->dbname, 0, h->name, CLIENT_MULTI_RESULTS);
	else
		st = mysql_real_connect_start(&ret, &l->db, addr, m->user, m->password, m->dbname,
					      h->port, NULL, CLIENT_MULTI_RESULTS);
	if (st) {
		tm_link_wait(l, st);
		return;
	}
	/* finished at once (typically: refused); handled by the common path */
	l->state = TM_CONNECTING;
	if (ret == NULL) {
		tm_link_run(l, -1, false);
		return;
	}
	tm_link_run(l, -2, false);
}

static void tm_resolve_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct tm_resolve *r = req->data;
	struct tm_link *l = r->link;
	char addr[INET6_ADDRSTRLEN] = "";
	if (status == 0 && res) {
		if (res->ai_family == AF_INET)
			uv_ip4_name((struct sockaddr_in *)res->ai_addr, addr, sizeof(addr));
		else if (res->ai_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, addr, sizeof(addr));
	}
	if (res)
		uv_freeaddrinfo(res);
	free(r);
	if (l == NULL)
		return; /* the link gave up (dropped or closed) */
	l->resolve = NULL;
	if (*addr == 0) {
		char why[200];
		snprintf(why, sizeof(why), "cannot resolve: %s",
			 status ? uv_strerror(status) : "no address");
		tm_host_failed(l->mi, l->order[l->order_pos], why);
		l->order_pos++;
		if (!tm_link_try_next_host(l))
			tm_dispatch(l->mi);
		return;
	}
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	tm_link_connect_start(l, l->addr);
}

/* Starts connecting to the host at order_pos (skipping dead ones). Returns
 * false (after dropping the link and failing its work) when no host is left. */
static bool tm_link_try_next_host(struct tm_link *l)
{
	struct table_mysql_inst *mi = l->mi;
	const struct table_mysql *m = mi->m;
	tm_link_close_db(l, false);
	uint64_t now = tm_now(mi);
	while (l->order_pos < l->norder && !l->probe &&
	       mi->dead_until[l->order[l->order_pos]] > now)
		l->order_pos++;
	if (l->order_pos >= l->norder) {
		tm_link_drop(l, false);
		/* Nobody left to serve the queue: fail it now rather than at its
		 * deadline (docs/design.md invariant 4: an outage is a prompt 4xx). */
		if (mi->nlinks == 0) {
			struct table_req *req;
			while ((req = tm_queue_first(mi)) != NULL) {
				tm_queue_unlink(mi, req);
				table_req_finish(req, TABLE_TEMPFAIL, NULL);
			}
		}
		return false;
	}
	const struct tm_host *h = &m->hosts[l->order[l->order_pos]];
	uv_timer_start(&l->deadline, tm_deadline_cb, m->connect_timeout_ms, 0);
	if (h->kind == TM_HOST_INET && !h->numeric) {
		struct tm_resolve *r = xcalloc(1, sizeof(*r));
		struct addrinfo hints = {0};
		char port[8];
		hints.ai_socktype = SOCK_STREAM;
		snprintf(port, sizeof(port), "%u", h->port ? h->port : 3306);
		r->link = l;
		r->req.data = r;
		l->state = TM_RESOLVING;
		if (uv_getaddrinfo(table_inst_loop(l->ti), &r->req, tm_resolve_cb, h->name, port,
				   &hints) != 0) {
			free(r);
			tm_host_failed(mi, l->order[l->order_pos], "cannot start name resolution");
			l->order_pos++;
			return tm_link_try_next_host(l);
		}
		l->resolve = r;
		return true;
	}
	tm_link_connect_start(l, h->name);
	return true;
}

static void tm_shuffle(size_t *a, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)rand() % i; /* load spreading only, not security */
		size_t t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* Opens one more connection. Returns false if every host is in its retry
 * interval (nothing started); a probe tries those hosts too. */
static bool tm_link_new(struct table_mysql_inst *mi, bool probe)
{
	const struct table_mysql *m = mi->m;
	struct tm_link *l = xcalloc(1, sizeof(*l));
	uint64_t now = tm_now(mi);
	/* UNIX sockets first, then TCP, each group shuffled (mysql_table(5)). */
	for (int pass = 0; pass < 2; pass++) {
		size_t start = l->norder;
		for (size_t i = 0; i < m->nhosts; i++)
			if ((m->hosts[i].kind == TM_HOST_UNIX) == (pass == 0) &&
			    (probe || mi->dead_until[i] <= now))
				l->order[l->norder++] = i;
		tm_shuffle(l->order + start, l->norder - start);
	}
	if (l->norder == 0) {
		free(l);
		return false;
	}
	l->mi = mi;
	l->ti = mi->ti;
	l->fd = -1;
	l->probe = probe;
	uv_timer_init(table_inst_loop(mi->ti), &l->wait_timer);
	uv_timer_init(table_inst_loop(mi->ti), &l->deadline);
	l->wait_timer.data = l->deadline.data = l;
	l->open_timers = 2;
	table_inst_handle_opened(mi->ti);
	table_inst_handle_opened(mi->ti);
	list_add_head(&mi->links, &l->link);
	mi->nlinks++;
	mi->nconnecting++;
	l->state = TM_CONNECTING;
	tm_link_try_next_host(l);
	return true;
}

/* --- queries --- */

static size_t tm_escape(void *ctx, char *dst, const char *src, size_t n)
{
	return mysql_real_escape_string(ctx, dst, src, (unsigned long)n);
}

static void tm_link_start_query(struct tm_link *l, struct table_req *req)
{
	const struct table_mysql *m = l->mi->m;
	struct buf q = BUF_INIT;
	l->req = req;
	req->where = TABLE_REQ_ACTIVE;
	req->attempts++;
	/* Expanded on this connection, so the escaping uses its charset. */
	expand(&q, m->query, req->key, NULL, tm_escape, &l->db);
	expand_result_free(&l->result);
	l->answer = TABLE_NOTFOUND;
	l->state = TM_QUERY;
	uv_timer_stop(&l->deadline);
	uv_timer_start(&l->deadline, tm_deadline_cb, m->query_timeout_ms, 0);
	table_inst_count_backend(l->ti);
	int err = 0;
	int st = mysql_real_query_start(&err, &l->db, buf_len(&q) ? (const char *)buf_data(&q) : "",
					(unsigned long)buf_len(&q));
	buf_free(&q);
	if (st) {
		tm_link_wait(l, st);
		return;
	}
	/* done at once: continue with the result as if the poll had fired */
	if (err) {
		bool stale = l->used && (mysql_errno(&l->db) == CR_SERVER_GONE_ERROR ||
					 mysql_errno(&l->db) == CR_SERVER_LOST);
		if (mysql_errno(&l->db) >= 2000)
			tm_link_fail(l, stale, "query failed");
		else {
			/* an SQL error: keep the connection */
			char safe[300];
			const char *why = mysql_error(&l->db);
			log_warn("%s: query failed: %s", m->origin,
				 log_sanitize(safe, sizeof(safe), why, strlen(why)));
			l->req = NULL;
			l->state = TM_IDLE;
			table_req_finish(req, TABLE_TEMPFAIL, NULL);
			tm_dispatch(l->mi);
		}
		return;
	}
	l->state = TM_STORE;
	tm_link_run(l, 0, true);
}

/* Collects the rows of a stored result into l->result per result_format. */
static void tm_link_collect(struct tm_link *l, MYSQL_RES *res)
{
	const struct table_mysql *m = l->mi->m;
	const char *key = l->req ? l->req->key : "";
	unsigned nf = mysql_num_fields(res);
	MYSQL_ROW row;
	while ((row = mysql_fetch_row(res)) != NULL) {
		for (unsigned i = 0; i < nf; i++) {
			if (!expand_result_add(&l->result, m->result_format, m->expansion_limit,
					       row[i], key)) {
				log_warn("%s: result exceeds expansion_limit %u", m->origin,
					 m->expansion_limit);
				l->answer = TABLE_TEMPFAIL;
				return;
			}
		}
	}
	if (l->result.found)
		l->answer = TABLE_OK;
}

static void tm_link_query_done(struct tm_link *l)
{
	struct table_req *req = l->req;
	const struct table_mysql *m = l->mi->m;
	l->req = NULL;
	l->used = true;
	l->state = TM_IDLE;
	uv_timer_stop(&l->deadline);
	uv_timer_start(&l->deadline, tm_deadline_cb, m->idle_interval_ms ? m->idle_interval_ms : 1,
		       0);
	if (req) {
		buf_append(&l->result.out, "", 1);
		table_req_finish(req, l->answer,
				 l->answer == TABLE_OK ? (const char *)buf_data(&l->result.out)
						       : NULL);
	}
	expand_result_free(&l->result);
	tm_dispatch(l->mi);
}

/* Drives the state machine. start: call the *_start() of the current state;
 * else *_cont() with mstatus. (mstatus -1/-2 are internal: connect already
 * finished with failure/success.) */
static void tm_link_run(struct tm_link *l, int mstatus, bool start)
{
	struct table_mysql_inst *mi = l->mi;
	const struct table_mysql *m = mi->m;
	for (;;) {
		int st = 0;
		switch (l->state) {
		case TM_CONNECTING: {
			MYSQL *ret = NULL;
			if (mstatus == -1)
				ret = NULL;
			else if (mstatus == -2)
				ret = &l->db;
			else if ((st = mysql_real_connect_cont(&ret, &l->db, mstatus)) != 0) {
				tm_link_wait(l, st);
				return;
			}
			if (ret == NULL) {
				tm_host_failed(mi, l->order[l->order_pos], mysql_error(&l->db));
				l->order_pos++;
				if (!tm_link_try_next_host(l))
					tm_dispatch(mi);
				return;
			}
			mi->nconnecting--;
			table_inst_count_connect(l->ti);
			if (l->probe) {
				l->probe = false;
				mi->probing = false;
			}
			tm_host_up(mi, l->order[l->order_pos]);
			l->state = TM_IDLE;
			uv_timer_stop(&l->deadline);
			uv_timer_start(&l->deadline, tm_deadline_cb,
				       m->idle_interval_ms ? m->idle_interval_ms : 1, 0);
			tm_dispatch(mi);
			return;
		}
		case TM_QUERY: {
			int err = 0;
			if ((st = mysql_real_query_cont(&err, &l->db, mstatus)) != 0) {
				tm_link_wait(l, st);
				return;
			}
			if (err) {
				unsigned no = mysql_errno(&l->db);
				bool stale = l->used &&
					     (no == CR_SERVER_GONE_ERROR || no == CR_SERVER_LOST);
				if (no >= 2000) {
					tm_link_fail(l, stale, "query failed");
				} else {
					char safe[300];
					const char *why = mysql_error(&l->db);
					struct table_req *req = l->req;
					log_warn(
						"%s: query failed: %s", m->origin,
						log_sanitize(safe, sizeof(safe), why, strlen(why)));
					l->req = NULL;
					if (req)
						table_req_finish(req, TABLE_TEMPFAIL, NULL);
					l->req = NULL;
					l->answer = TABLE_TEMPFAIL;
					tm_link_query_done(l);
				}
				return;
			}
			l->state = TM_STORE;
			start = true;
			continue;
		}
		case TM_STORE:
		case TM_NEXT_STORE: {
			MYSQL_RES *res = NULL;
			st = start ? mysql_store_result_start(&res, &l->db)
				   : mysql_store_result_cont(&res, &l->db, mstatus);
			if (st) {
				tm_link_wait(l, st);
				return;
			}
			if (res == NULL) {
				if (mysql_errno(&l->db)) {
					tm_link_fail(l, false, "fetching the result failed");
					return;
				}
				if (l->state == TM_STORE && m->require_result_set) {
					log_warn("%s: query returned no result set", m->origin);
					l->answer = TABLE_TEMPFAIL;
				}
			} else {
				if (l->state == TM_STORE && l->answer != TABLE_TEMPFAIL)
					tm_link_collect(l, res);
				mysql_free_result(res); /* stored: no I/O */
			}
			if (mysql_more_results(&l->db)) {
				l->state = TM_NEXT;
				start = true;
				continue;
			}
			tm_link_query_done(l);
			return;
		}
		case TM_NEXT: {
			int ret = 0;
			st = start ? mysql_next_result_start(&ret, &l->db)
				   : mysql_next_result_cont(&ret, &l->db, mstatus);
			if (st) {
				tm_link_wait(l, st);
				return;
			}
			if (ret > 0) {
				tm_link_fail(l, false, "reading further results failed");
				return;
			}
			if (ret == 0) {
				l->state = TM_NEXT_STORE;
				start = true;
				continue;
			}
			tm_link_query_done(l);
			return;
		}
		case TM_RESOLVING:
		case TM_IDLE:
		case TM_DEAD:
			return;
		}
	}
}

static void tm_dispatch(struct table_mysql_inst *mi)
{
	struct table_req *req;
	while ((req = tm_queue_first(mi)) != NULL) {
		struct tm_link *idle = NULL;
		struct list_link *pos, *tmp;
		list_for_each_safe(pos, tmp, &mi->links)
		{
			struct tm_link *l = list_entry(pos, struct tm_link, link);
			if (l->state == TM_IDLE) {
				idle = l;
				break;
			}
		}
		if (idle) {
			tm_queue_unlink(mi, req);
			tm_link_start_query(idle, req);
			continue;
		}
		if (mi->nconnecting < mi->nqueued && mi->nlinks < mi->m->max_connections) {
			if (tm_link_new(mi, false))
				continue;
			if (mi->nlinks == 0) {
				/* every host is in its retry interval */
				while ((req = tm_queue_first(mi)) != NULL) {
					tm_queue_unlink(mi, req);
					tm_count_refused(mi);
					table_req_defer(req, TABLE_TEMPFAIL, NULL);
				}
				tm_probe_schedule(mi);
			}
		}
		break;
	}
	if ((req = tm_queue_first(mi)) != NULL) {
		uint64_t now = tm_now(mi), d = req->deadline;
		uv_timer_start(&mi->queue_timer, tm_queue_timer_cb, d > now ? d - now : 0, 0);
	} else {
		uv_timer_stop(&mi->queue_timer);
	}
}

static void tm_lookup(void *inst, struct table_req *req)
{
	struct table_mysql_inst *mi = inst;
	const struct table_mysql *m = mi->m;
	/* Keys that the query cannot use are "not found" without a query, as
	 * in Postfix (domain restriction, %u on "@domain", %d on a bare name). */
	if (!expand_domain_ok(m->domains, m->ndomains, req->key) ||
	    !expand(NULL, m->query, req->key, NULL, NULL, NULL)) {
		table_req_defer(req, TABLE_NOTFOUND, NULL);
		return;
	}
	req->deadline = tm_now(mi) + m->query_timeout_ms;
	tm_queue_push(mi, req, false);
	/* Not tm_dispatch(): a connect or query can fail synchronously, and the
	 * completion must not fire inside table_lookup(). */
	tm_dispatch_soon(mi);
}

static bool tm_cancel(void *inst, struct table_req *req)
{
	if (req->where == TABLE_REQ_QUEUED) {
		tm_queue_unlink(inst, req);
		return true;
	}
	/* ACTIVE: the link keeps the request until the statement ends; with
	 * cb == NULL the answer goes nowhere. */
	return false;
}

static void tm_inst_close(void *inst)
{
	struct table_mysql_inst *mi = inst;
	mi->closing = true;
	for (size_t i = 0; i < mi->m->nhosts; i++)
		if (mi->down[i])
			atomic_fetch_sub(&mi->m->health[i].ndown, 1);
	struct table_req *req;
	while ((req = tm_queue_first(mi)) != NULL) {
		tm_queue_unlink(mi, req);
		table_req_free(req);
	}
	struct list_link *pos, *tmp;
	list_for_each_safe(pos, tmp, &mi->links)
	{
		struct tm_link *l = list_entry(pos, struct tm_link, link);
		req = l->req;
		l->req = NULL;
		tm_link_drop(l, l->state == TM_IDLE);
		if (req)
			table_req_free(req);
	}
	uv_timer_stop(&mi->probe_timer);
	uv_close((uv_handle_t *)&mi->probe_timer, tm_queue_timer_closed);
	uv_timer_stop(&mi->queue_timer);
	uv_close((uv_handle_t *)&mi->queue_timer, tm_queue_timer_closed);
}

static void *tm_parse(const char *text, size_t len, const char *origin, char *err, size_t errlen)
{
	return table_mysql_parse(text, len, origin, err, errlen);
}

static void tm_free(void *def)
{
	struct table_mysql *m = def;
	table_mysql_free(&m);
}

const struct table_backend table_backend_mysql = {
	.type = "mysql",
	.file = true,
	.parse = tm_parse,
	.free = tm_free,
	.inst_new = tm_inst_new,
	.inst_close = tm_inst_close,
	.lookup = tm_lookup,
	.cancel = tm_cancel,
};
