/* lookup/dns: c-ares on the worker loop (lookup/dns.h, docs/dns.md). */
#include "config.h"
#include "lookup/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/defer.h"
#include "core/list.h"
#include "core/log.h"

#define dns_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct dns_poll {
	uv_poll_t h;
	struct dns *d;
	ares_socket_t fd;
	bool counted; /* closed after dns_free: counted in closing */
	struct dns_poll *next;
};

struct dns {
	uv_loop_t *loop;
	ares_channel ch;
	bool ch_ok;
	/* the settings the channel was made with */
	char servers[1024];
	uint64_t timeout_ms;
	unsigned tries;
	uv_timer_t timer;
	struct dns_poll *polls;
	struct dns_cache *cache;
	size_t cache_max;
	struct list_link reqs;     /* struct dns_req.link */
	struct dns_query *queries; /* handed to c-ares */
	unsigned nqueries;         /* handed to c-ares, not answered yet */
	struct defer_queue defer;
	unsigned closing; /* handles still closing after dns_free */
	bool freed;
	/* inside a c-ares call: its callbacks may start requests, but the
	   channel must not be destroyed under it (dns_channel) */
	unsigned busy;
};

struct dns_host {
	char name[DNS_NAME_MAX];
	struct in_addr a[DNS_ADDRS_PER_HOST];
	struct in6_addr aaaa[DNS_ADDRS_PER_HOST];
	unsigned na, naaaa;
};

enum dns_mode { DNS_MODE_TARGETS, DNS_MODE_EXISTS };

struct dns_req {
	struct dns *d;
	struct list_link link;
	enum dns_mode mode;
	dns_cb *cb;
	void *ctx;
	char domain[DNS_NAME_MAX];
	struct defer_item start;
	unsigned pending; /* queries out, plus one while a step issues them */
	bool temp;        /* a lookup failed temporarily */
	bool null_mx;
	bool malformed; /* MX records, none with a valid host name */
	bool done_mx;
	enum dns_status mx_status;
	struct dns_host hosts[DNS_MX_MAX];
	size_t nhosts;
	char why[200];
};

/* One c-ares query; outlives a cancelled request (req then NULL). */
struct dns_query {
	struct dns *d;
	struct dns_req *req;
	struct dns_query *next; /* the request's, for cancelling */
	int type;
	size_t host; /* index into req->hosts (A/AAAA) */
	char name[DNS_NAME_MAX];
};

static pthread_once_t dns_once = PTHREAD_ONCE_INIT;
static int dns_lib_status = ARES_SUCCESS;

static void dns_lib_init(void)
{
	dns_lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* ---- the channel on the loop ---- */

static void dns_timer_cb(uv_timer_t *t);

static void dns_timer_update(struct dns *d)
{
	if (!d->ch_ok || d->freed)
		return;
	struct timeval tv;
	if (ares_timeout(d->ch, NULL, &tv) == NULL) {
		uv_timer_stop(&d->timer);
		return;
	}
	uint64_t ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 + 1;
	uv_timer_start(&d->timer, dns_timer_cb, ms, 0);
}

static void dns_timer_cb(uv_timer_t *t)
{
	struct dns *d = t->data;
	if (d->ch_ok) {
		d->busy++;
		ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
		d->busy--;
	}
	dns_timer_update(d);
}

static void dns_poll_cb(uv_poll_t *h, int status, int events)
{
	struct dns_poll *p = h->data;
	struct dns *d = p->d;
	ares_socket_t fd = p->fd;
	/* p may be freed inside (the socket closed): use copies */
	d->busy++;
	if (status < 0)
		ares_process_fd(d->ch, fd, fd);
	else
		ares_process_fd(d->ch, events & UV_READABLE ? fd : ARES_SOCKET_BAD,
				events & UV_WRITABLE ? fd : ARES_SOCKET_BAD);
	d->busy--;
	dns_timer_update(d);
}

static void dns_handle_closed(uv_handle_t *h)
{
	struct dns *d = h->data;
	bool counted = true;
	if (h->type == UV_POLL) {
		struct dns_poll *p = dns_of((uv_poll_t *)h, struct dns_poll, h);
		counted = p->counted;
		free(p);
	}
	if (counted && --d->closing == 0)
		free(d);
}

static void dns_poll_close(struct dns *d, struct dns_poll *p)
{
	uv_poll_stop(&p->h);
	p->h.data = d; /* dns_handle_closed wants the resolver */
	p->counted = d->freed;
	if (d->freed)
		d->closing++;
	uv_close((uv_handle_t *)&p->h, dns_handle_closed);
}

/* c-ares opens, watches and closes its sockets through this. */
static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_poll **pp = &d->polls;
	while (*pp != NULL && (*pp)->fd != fd)
		pp = &(*pp)->next;
	struct dns_poll *p = *pp;
	if (!readable && !writable) {
		if (p != NULL) {
			*pp = p->next;
			dns_poll_close(d, p);
		}
		return;
	}
	if (p == NULL) {
		p = xcalloc(1, sizeof(*p));
		p->d = d;
		p->fd = fd;
		if (uv_poll_init_socket(d->loop, &p->h, fd) != 0) {
			free(p);
			return; /* the query times out */
		}
		p->h.data = p;
		p->next = d->polls;
		d->polls = p;
	}
	uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
		      dns_poll_cb);
}

/* A channel with cfg's settings. The one in use is kept while queries are
 * out (c-ares changes servers only on an idle channel) and while c-ares is
 * running a callback (it uses the channel after the callback returns). */
static void dns_channel(struct dns *d, const struct config *cfg)
{
	char servers[sizeof(d->servers)] = "", err[200];
	if (cfg->dns_servers != NULL &&
	    !dns_servers_parse(cfg->dns_servers, servers, sizeof(servers), err, sizeof(err)))
		servers[0] = '\0'; /* relay_load() refused it already */
	if (d->ch_ok && (d->nqueries > 0 || d->busy > 0 ||
			 (strcmp(servers, d->servers) == 0 &&
			  d->timeout_ms == cfg->dns_timeout_ms && d->tries == cfg->dns_tries)))
		return;
	if (d->cache_max != cfg->dns_cache_size) {
		dns_cache_free(&d->cache);
		d->cache = dns_cache_new(cfg->dns_cache_size);
		d->cache_max = cfg->dns_cache_size;
	} else if (d->ch_ok) {
		/* other servers may give other answers */
		dns_cache_free(&d->cache);
		d->cache = dns_cache_new(d->cache_max);
	}
	if (d->ch_ok) {
		ares_destroy(d->ch);
		d->ch_ok = false;
		/* a socket c-ares did not report closed: its descriptor may
		   come back under the new channel */
		while (d->polls != NULL) {
			struct dns_poll *p = d->polls;
			d->polls = p->next;
			dns_poll_close(d, p);
		}
	}
	pthread_once(&dns_once, dns_lib_init);
	if (dns_lib_status != ARES_SUCCESS)
		return;
	struct ares_options o;
	memset(&o, 0, sizeof(o));
	o.timeout = (int)cfg->dns_timeout_ms;
	o.tries = (int)cfg->dns_tries;
	o.sock_state_cb = dns_sock_state_cb;
	o.sock_state_cb_data = d;
	/* /etc/resolv.conf is read here, once per channel (servers, and
	   options such as ndots that ares_query does not use) */
	int r = ares_init_options(&d->ch, &o,
				  ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB);
	if (r != ARES_SUCCESS) {
		log_err("dns: cannot create a resolver: %s", ares_strerror(r));
		return;
	}
	if (servers[0] != '\0' &&
	    (r = ares_set_servers_ports_csv(d->ch, servers)) != ARES_SUCCESS) {
		log_err("dns: cannot use dns_servers: %s", ares_strerror(r));
		ares_destroy(d->ch);
		return;
	}
	d->ch_ok = true;
	snprintf(d->servers, sizeof(d->servers), "%s", servers);
	d->timeout_ms = cfg->dns_timeout_ms;
	d->tries = cfg->dns_tries;
}

struct dns *dns_new(uv_loop_t *loop)
{
	struct dns *d = xcalloc(1, sizeof(*d));
	d->loop = loop;
	uv_timer_init(loop, &d->timer);
	d->timer.data = d;
	list_init(&d->reqs);
	defer_queue_init(&d->defer, loop);
	return d;
}

/* ---- requests ---- */

static void dns_req_free(struct dns_req *req)
{
	defer_cancel(&req->start);
	list_remove(&req->link);
	free(req);
}

/* Detaches the request from its queries still out: they finish inside
 * c-ares and find no request. */
static void dns_req_detach(struct dns_req *req)
{
	for (struct dns_query *q = req->d->queries; q != NULL; q = q->next)
		if (q->req == req)
			q->req = NULL;
}

static void dns_req_finish(struct dns_req *req)
{
	struct dns_target *t = NULL;
	size_t n = 0;
	struct dns_result r = {.why = req->why};
	if (req->mode == DNS_MODE_TARGETS && !req->null_mx) {
		t = xcalloc(DNS_TARGETS_MAX, sizeof(*t));
		for (size_t i = 0; i < req->nhosts; i++) {
			struct dns_host *h = &req->hosts[i];
			for (unsigned k = 0; k < h->na; k++, n++) {
				struct sockaddr_in *sin = (struct sockaddr_in *)&t[n].addr;
				sin->sin_family = AF_INET;
				sin->sin_addr = h->a[k];
				snprintf(t[n].host, sizeof(t[n].host), "%s", h->name);
			}
			for (unsigned k = 0; k < h->naaaa; k++, n++) {
				struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t[n].addr;
				sin6->sin6_family = AF_INET6;
				sin6->sin6_addr = h->aaaa[k];
				snprintf(t[n].host, sizeof(t[n].host), "%s", h->name);
			}
		}
	} else if (req->mode == DNS_MODE_EXISTS && req->mx_status == DNS_OK) {
		n = 1;
	} else {
		for (size_t i = 0; i < req->nhosts; i++)
			n += req->hosts[i].na + req->hosts[i].naaaa;
	}
	r.null_mx = req->null_mx;
	r.malformed = req->malformed && n == 0 && !req->null_mx && !req->temp;
	if (req->null_mx)
		r.status = DNS_NODATA;
	else if (n > 0)
		r.status = DNS_OK;
	else if (req->temp)
		r.status = DNS_TEMPFAIL;
	else
		r.status = req->mx_status == DNS_NXDOMAIN ? DNS_NXDOMAIN : DNS_NODATA;
	if (r.status == DNS_OK)
		req->why[0] = '\0';
	else if (req->why[0] == '\0')
		snprintf(req->why, sizeof(req->why), "%s: %s", req->domain,
			 req->mx_status == DNS_NXDOMAIN ? "no such domain (NXDOMAIN)"
			 : req->mode == DNS_MODE_EXISTS ? "no MX, A or AAAA record"
							: "no address for its mail servers");
	r.targets = t;
	r.ntargets = req->mode == DNS_MODE_TARGETS ? n : 0;
	dns_cb *cb = req->cb;
	void *ctx = req->ctx;
	req->cb = NULL;
	dns_req_detach(req);
	/* the callback may start or cancel other requests: req is gone first,
	   why and targets live until it returns */
	char why[sizeof(req->why)];
	memcpy(why, req->why, sizeof(why));
	r.why = why;
	dns_req_free(req);
	cb(ctx, &r);
	free(t);
}

static void dns_req_step_done(struct dns_req *req)
{
	if (--req->pending == 0)
		dns_req_finish(req);
}

static void dns_query_start(struct dns_req *req, const char *name, int type, size_t host);

static void dns_why(struct dns_req *req, const char *name, int type, const char *what)
{
	if (req->why[0] == '\0')
		snprintf(req->why, sizeof(req->why), "%s/%s: %s", name,
			 type == ns_t_mx  ? "MX"
			 : type == ns_t_a ? "A"
					  : "AAAA",
			 what);
}

/* Looks up the hosts' addresses (the MX hosts, or the domain itself). */
static void dns_req_addresses(struct dns_req *req)
{
	for (size_t i = 0; i < req->nhosts; i++) {
		dns_query_start(req, req->hosts[i].name, ns_t_a, i);
		dns_query_start(req, req->hosts[i].name, ns_t_aaaa, i);
	}
}

/* No MX record: the domain's own address (RFC 5321 §5.1). */
static void dns_req_own_address(struct dns_req *req)
{
	req->mx_status = DNS_NODATA;
	snprintf(req->hosts[0].name, sizeof(req->hosts[0].name), "%s", req->domain);
	req->nhosts = 1;
	dns_req_addresses(req);
}

static void dns_req_mx_answer(struct dns_req *req, enum dns_status st, const unsigned char *abuf,
			      size_t alen)
{
	req->mx_status = st;
	if (st == DNS_TEMPFAIL) {
		req->temp = true;
		return;
	}
	if (st == DNS_NXDOMAIN)
		return; /* no such domain: no address either */
	if (st == DNS_NODATA) {
		dns_req_own_address(req);
		return;
	}
	struct dns_mx *list = xcalloc(DNS_MX_SCAN_MAX, sizeof(*list));
	size_t bad = 0;
	bool root = false;
	int got = dns_mx_parse(abuf, alen, list, DNS_MX_SCAN_MAX, &root, &bad);
	if (got < 0) {
		free(list);
		req->temp = true;
		req->mx_status = DNS_TEMPFAIL;
		dns_why(req, req->domain, ns_t_mx, "malformed answer");
		return;
	}
	size_t n = (size_t)got;
	if (root && n == 0) {
		req->null_mx = true;
		dns_why(req, req->domain, ns_t_mx, "null MX (RFC 7505)");
	} else if (n == 0 && bad == 0) {
		/* an answer without MX record (only the CNAME of an alias
		   whose target has none): as NODATA, the alias's address */
		dns_req_own_address(req);
	} else if (n == 0) {
		req->mx_status = DNS_NODATA;
		req->malformed = true;
		dns_why(req, req->domain, ns_t_mx, "malformed MX host name");
	} else if (req->mode == DNS_MODE_TARGETS) {
		dns_mx_order(list, n, arc4random_uniform);
		if (n > DNS_MX_MAX)
			n = DNS_MX_MAX;
		for (size_t i = 0; i < n; i++)
			snprintf(req->hosts[i].name, sizeof(req->hosts[i].name), "%s",
				 list[i].host);
		req->nhosts = n;
		dns_req_addresses(req);
	}
	free(list);
}

static void dns_req_addr_answer(struct dns_req *req, size_t host, int type, enum dns_status st,
				const unsigned char *abuf, size_t alen)
{
	struct dns_host *h = &req->hosts[host];
	if (st == DNS_TEMPFAIL) {
		req->temp = true;
		return;
	}
	if (st != DNS_OK)
		return;
	int n = DNS_ADDRS_PER_HOST, r;
	if (type == ns_t_a) {
		struct ares_addrttl at[DNS_ADDRS_PER_HOST];
		r = ares_parse_a_reply(abuf, (int)alen, NULL, at, &n);
		for (int i = 0; r == ARES_SUCCESS && i < n && i < DNS_ADDRS_PER_HOST; i++)
			h->a[h->na++] = at[i].ipaddr;
	} else {
		struct ares_addr6ttl at[DNS_ADDRS_PER_HOST];
		r = ares_parse_aaaa_reply(abuf, (int)alen, NULL, at, &n);
		for (int i = 0; r == ARES_SUCCESS && i < n && i < DNS_ADDRS_PER_HOST; i++)
			memcpy(&h->aaaa[h->naaaa++], &at[i].ip6addr, sizeof(struct in6_addr));
	}
	if (r != ARES_SUCCESS && r != ARES_ENODATA) {
		req->temp = true;
		dns_why(req, h->name, type, "malformed answer");
	}
}

/* An answer (from c-ares or the cache) for one of req's queries. */
static void dns_req_answer(struct dns_req *req, int type, size_t host, enum dns_status st,
			   const unsigned char *abuf, size_t alen)
{
	if (type == ns_t_mx)
		dns_req_mx_answer(req, st, abuf, alen);
	else
		dns_req_addr_answer(req, host, type, st, abuf, alen);
	dns_req_step_done(req);
}

static enum dns_status dns_status_of(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENOTFOUND:
		return DNS_NXDOMAIN;
	case ARES_ENODATA:
		return DNS_NODATA;
	default:
		return DNS_TEMPFAIL;
	}
}

static void dns_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	struct dns_query *q = arg;
	struct dns *d = q->d;
	d->nqueries--;
	enum dns_status st = dns_status_of(status);
	if (abuf == NULL || alen < 0)
		alen = 0;
	if (st != DNS_TEMPFAIL && abuf != NULL && d->cache != NULL)
		dns_cache_put(d->cache, q->name, q->type, st, abuf, (size_t)alen,
			      dns_answer_ttl(abuf, (size_t)alen, st), uv_now(d->loop));
	/* unlink from the list of queries out */
	for (struct dns_query **pp = &d->queries; *pp != NULL; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	struct dns_req *req = q->req;
	if (req != NULL) {
		if (st == DNS_TEMPFAIL)
			dns_why(req, q->name, q->type, ares_strerror(status));
		dns_req_answer(req, q->type, q->host, st, abuf, (size_t)alen);
	}
	free(q);
}

static void dns_query_start(struct dns_req *req, const char *name, int type, size_t host)
{
	struct dns *d = req->d;
	enum dns_status st;
	const unsigned char *abuf;
	size_t alen;
	req->pending++;
	if (d->cache != NULL &&
	    dns_cache_get(d->cache, name, type, uv_now(d->loop), &st, &abuf, &alen)) {
		dns_req_answer(req, type, host, st, abuf, alen);
		return;
	}
	if (!d->ch_ok) {
		req->temp = true;
		dns_why(req, name, type, "no resolver");
		dns_req_step_done(req);
		return;
	}
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->d = d;
	q->req = req;
	q->type = type;
	q->host = host;
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->next = d->queries;
	d->queries = q;
	d->nqueries++;
	/* ares_query, not ares_search: the name is complete, no search list */
	d->busy++; /* a failure is answered from inside */
	ares_query(d->ch, q->name, ns_c_in, type, dns_query_cb, q);
	d->busy--;
	dns_timer_update(d);
}

static void dns_req_start_cb(struct defer_item *item)
{
	struct dns_req *req = dns_of(item, struct dns_req, start);
	/* one hold while the first step issues its queries (answers from the
	   cache arrive inside) */
	req->pending = 1;
	dns_query_start(req, req->domain, ns_t_mx, 0);
	dns_req_step_done(req);
}

static void dns_req_invalid_cb(struct defer_item *item)
{
	dns_req_step_done(dns_of(item, struct dns_req, start));
}

static struct dns_req *dns_req_new(struct dns *d, const struct config *cfg, const char *domain,
				   enum dns_mode mode, dns_cb *cb, void *ctx)
{
	dns_channel(d, cfg);
	struct dns_req *req = xcalloc(1, sizeof(*req));
	req->d = d;
	req->mode = mode;
	req->cb = cb;
	req->ctx = ctx;
	list_add_tail(&d->reqs, &req->link);
	size_t n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n >= sizeof(req->domain))
		n = 0; /* invalid below */
	memcpy(req->domain, domain, n);
	req->domain[n] = '\0';
	if (!dns_name_valid(req->domain)) {
		/* nothing to ask: answered on the next turn as not found */
		snprintf(req->why, sizeof(req->why), "not a valid domain name");
		req->mx_status = DNS_NXDOMAIN;
		req->pending = 1;
		defer_push(&d->defer, &req->start, dns_req_invalid_cb);
		return req;
	}
	defer_push(&d->defer, &req->start, dns_req_start_cb);
	return req;
}

struct dns_req *dns_resolve_mx(struct dns *d, const struct config *cfg, const char *domain,
			       dns_cb *cb, void *ctx)
{
	return dns_req_new(d, cfg, domain, DNS_MODE_TARGETS, cb, ctx);
}

struct dns_req *dns_domain_check(struct dns *d, const struct config *cfg, const char *domain,
				 dns_cb *cb, void *ctx)
{
	return dns_req_new(d, cfg, domain, DNS_MODE_EXISTS, cb, ctx);
}

void dns_cancel(struct dns_req **rp)
{
	struct dns_req *req = *rp;
	if (req == NULL)
		return;
	*rp = NULL;
	dns_req_detach(req);
	dns_req_free(req);
}

static void dns_defer_closed(struct defer_queue *q)
{
	struct dns *d = dns_of(q, struct dns, defer);
	if (--d->closing == 0)
		free(d);
}

void dns_free(struct dns **dp)
{
	struct dns *d = *dp;
	if (d == NULL)
		return;
	*dp = NULL;
	/* every request is answered once, also now */
	while (!list_empty(&d->reqs)) {
		struct dns_req *req = list_entry(list_first(&d->reqs), struct dns_req, link);
		req->temp = true;
		req->null_mx = false;
		req->mx_status = DNS_TEMPFAIL;
		req->nhosts = 0;
		snprintf(req->why, sizeof(req->why), "resolver shut down");
		dns_req_finish(req);
	}
	d->freed = true;
	d->closing = 2; /* the timer and the defer queue */
	if (d->ch_ok) {
		d->ch_ok = false;
		ares_destroy(d->ch); /* queries out end with ARES_EDESTRUCTION */
	}
	while (d->polls != NULL) {
		struct dns_poll *p = d->polls;
		d->polls = p->next;
		dns_poll_close(d, p);
	}
	dns_cache_free(&d->cache);
	uv_timer_stop(&d->timer);
	uv_close((uv_handle_t *)&d->timer, dns_handle_closed);
	defer_queue_close(&d->defer, dns_defer_closed);
}

bool dns_servers_parse(const char *spec, char *csv, size_t csvlen, char *err, size_t errlen)
{
	size_t len = 0, count = 0;
	csv[0] = '\0';
	const char *s = spec;
	while (*s != '\0') {
		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		if (*s == '\0')
			break;
		size_t n = strcspn(s, " \t,");
		char item[80], host[INET6_ADDRSTRLEN + 1];
		if (n >= sizeof(item)) {
			snprintf(err, errlen, "dns_servers: entry too long");
			return false;
		}
		memcpy(item, s, n);
		item[n] = '\0';
		s += n;
		const char *port = NULL;
		bool v6 = false;
		if (item[0] == '[') {
			char *close = strchr(item, ']');
			if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
				snprintf(err, errlen, "dns_servers: bad entry \"%s\"", item);
				return false;
			}
			*close = '\0';
			port = close[1] == ':' ? close + 2 : NULL;
			snprintf(host, sizeof(host), "%s", item + 1);
			v6 = true;
		} else {
			char *colon = strchr(item, ':');
			if (colon != NULL && strchr(colon + 1, ':') != NULL) {
				snprintf(err, errlen,
					 "dns_servers: IPv6 address needs brackets: \"%s\"", item);
				return false;
			}
			if (colon != NULL) {
				*colon = '\0';
				port = colon + 1;
			}
			snprintf(host, sizeof(host), "%s", item);
		}
		unsigned char bin[sizeof(struct in6_addr)];
		if (inet_pton(v6 ? AF_INET6 : AF_INET, host, bin) != 1) {
			snprintf(err, errlen, "dns_servers: \"%s\" is not an IP address", host);
			return false;
		}
		unsigned long p = 53;
		if (port != NULL) {
			char *end;
			p = strtoul(port, &end, 10);
			if (*port == '\0' || *end != '\0' || p == 0 || p > 65535) {
				snprintf(err, errlen, "dns_servers: bad port in \"%s\"", item);
				return false;
			}
		}
		int w = snprintf(csv + len, csvlen - len, "%s%s%s%s:%lu", count ? "," : "",
				 v6 ? "[" : "", host, v6 ? "]" : "", p);
		if (w < 0 || (size_t)w >= csvlen - len || ++count > 8) {
			snprintf(err, errlen, "dns_servers: at most 8 servers");
			return false;
		}
		len += (size_t)w;
	}
	if (count == 0) {
		snprintf(err, errlen, "dns_servers: no server");
		return false;
	}
	return true;
}
