/* metrics_http: a one-request HTTP/1.x endpoint for GET /metrics
 * (metrics_http.h). Not libmicrohttpd: its connection timeout is an idle
 * timeout, so a client sending a byte now and then keeps a connection for
 * as long as the header buffer lasts; here the whole request has one
 * deadline, and the server is a few bounded states on a libuv loop like the
 * rest of submitd (docs/observability.md). */
#include "config.h"
#include "metrics_http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "core/list.h"
#include "core/log.h"

struct metrics_client {
	struct list_link link;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wr;
	uv_shutdown_t sd;
	uv_buf_t wbuf;
	struct buf out;
	char in[METRICS_HTTP_REQUEST_MAX];
	size_t inlen;
	int open;
	bool answered;
};

static struct {
	uv_loop_t loop;
	uv_tcp_t server;
	uv_async_t stop;
	uv_thread_t thread;
	bool opened, running;
	struct list_link clients;
	unsigned nclients;
} mh;

static void metrics_client_closed(uv_handle_t *h)
{
	struct metrics_client *c = h->data;
	if (--c->open > 0)
		return;
	buf_free(&c->out);
	free(c);
}

static void metrics_client_close(struct metrics_client *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	list_remove(&c->link);
	mh.nclients--;
	uv_close((uv_handle_t *)&c->tcp, metrics_client_closed);
	uv_close((uv_handle_t *)&c->timer, metrics_client_closed);
}

static void metrics_client_shut(uv_shutdown_t *sd, int status)
{
	(void)sd;
	(void)status;
}

/* The answer is out: FIN, then what the client still sends is read and
 * dropped until it closes (or the deadline), so that closing with unread
 * bytes does not reset the connection before the client has read the
 * answer. */
static void metrics_deadline(uv_timer_t *t);

static void metrics_client_written(uv_write_t *wr, int status)
{
	struct metrics_client *c = wr->data;
	if (status != 0 || uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, metrics_client_shut) != 0)
		metrics_client_close(c);
}

static void metrics_answer(struct metrics_client *c, const char *status, const char *ctype,
			   const char *extra, const struct buf *body)
{
	if (c->answered)
		return;
	c->answered = true;
	/* the deadline from now on bounds the linger (metrics_client_written) */
	uv_timer_start(&c->timer, metrics_deadline, METRICS_HTTP_LINGER_MS, 0);
	size_t blen = body ? buf_len(body) : strlen(status) + 1;
	buf_printf(&c->out,
		   "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
		   "Connection: close\r\n\r\n",
		   status, ctype, blen, extra ? extra : "");
	if (body)
		buf_append(&c->out, buf_data(body), buf_len(body));
	else
		buf_printf(&c->out, "%s\n", status);
	c->wbuf = uv_buf_init((char *)buf_data(&c->out), (unsigned)buf_len(&c->out));
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &c->wbuf, 1, metrics_client_written) != 0)
		metrics_client_close(c);
}

static void metrics_error(struct metrics_client *c, const char *status, const char *extra)
{
	metrics_answer(c, status, "text/plain; charset=utf-8", extra, NULL);
}

/* The request is complete (its header section ended within the bound):
 * only "GET /metrics" (a query string is ignored). */
static void metrics_request(struct metrics_client *c, size_t len)
{
	const char *p = c->in;
	const char *eol = memchr(p, '\n', len);
	size_t llen = (size_t)(eol - p);
	if (llen > 0 && p[llen - 1] == '\r')
		llen--;
	const char *sp1 = memchr(p, ' ', llen);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', llen - (size_t)(sp1 + 1 - p)) : NULL;
	if (sp1 == NULL || sp2 == NULL || (size_t)(p + llen - (sp2 + 1)) != 8 ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		metrics_error(c, "400 Bad Request", NULL);
		return;
	}
	size_t tlen = (size_t)(sp2 - sp1 - 1);
	const char *target = sp1 + 1;
	const char *q = memchr(target, '?', tlen);
	size_t plen = q ? (size_t)(q - target) : tlen;
	if (plen != 8 || memcmp(target, "/metrics", 8) != 0) {
		metrics_error(c, "404 Not Found", NULL);
		return;
	}
	if ((size_t)(sp1 - p) != 3 || memcmp(p, "GET", 3) != 0) {
		metrics_error(c, "405 Method Not Allowed", "Allow: GET\r\n");
		return;
	}
	/* Accept: OpenMetrics only when the client names it (RFC 9110 §12.5.1;
	   q-values are not weighed, naming it is enough). */
	bool om = false;
	for (const char *h = eol + 1; h < p + len;) {
		const char *he = memchr(h, '\n', (size_t)(p + len - h));
		if (he == NULL)
			break;
		if ((size_t)(he - h) > 7 && strncasecmp(h, "accept:", 7) == 0) {
			char v[METRICS_HTTP_REQUEST_MAX];
			snprintf(v, sizeof(v), "%.*s", (int)(he - h - 7), h + 7);
			if (strstr(v, "application/openmetrics-text") != NULL)
				om = true;
		}
		h = he + 1;
	}
	struct buf body = BUF_INIT;
	metrics_scrape(&body, om);
	metrics_answer(c, "200 OK",
		       om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
			  : "text/plain; version=0.0.4; charset=utf-8",
		       NULL, &body);
	buf_free(&body);
}

/* The end of the header section, or 0 while it has not come. */
static size_t metrics_header_end(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static void metrics_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct metrics_client *c = h->data;
	/* Reads land in the request buffer itself: never more than its room. */
	b->base = c->in + c->inlen;
	b->len = sizeof(c->in) - c->inlen;
}

static void metrics_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct metrics_client *c = st->data;
	if (n < 0) {
		metrics_client_close(c);
		return;
	}
	if (c->answered)
		c->inlen = 0; /* dropped (metrics_client_written) */
	if (n == 0 || c->answered)
		return;
	size_t old = c->inlen;
	c->inlen += (size_t)n;
	if (memchr(c->in + old, '\0', (size_t)n) != NULL) {
		metrics_error(c, "400 Bad Request", NULL);
		return;
	}
	/* rescan from just before the new bytes: a byte at a time stays linear */
	size_t from = old > 3 ? old - 3 : 0;
	size_t end = metrics_header_end(c->in + from, c->inlen - from);
	if (end > 0) {
		metrics_request(c, from + end);
		return;
	}
	if (c->inlen == sizeof(c->in))
		metrics_error(c, "431 Request Header Fields Too Large", NULL);
}

static void metrics_deadline(uv_timer_t *t)
{
	struct metrics_client *c = t->data;
	if (!c->answered)
		metrics_error(c, "408 Request Timeout", NULL);
	else
		metrics_client_close(c); /* still sending after the answer */
}

static void metrics_accept(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct metrics_client *c = xcalloc(1, sizeof(*c));
	uv_tcp_init(&mh.loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		c->open = 1;
		uv_close((uv_handle_t *)&c->tcp, metrics_client_closed);
		return;
	}
	if (mh.nclients >= METRICS_HTTP_CLIENTS_MAX) {
		/* full: no answer, so a flood costs one accept and a close each */
		c->open = 1;
		uv_close((uv_handle_t *)&c->tcp, metrics_client_closed);
		return;
	}
	uv_timer_init(&mh.loop, &c->timer);
	c->timer.data = c;
	c->open = 2;
	list_add_tail(&mh.clients, &c->link);
	mh.nclients++;
	uv_timer_start(&c->timer, metrics_deadline, METRICS_HTTP_DEADLINE_MS, 0);
	if (uv_read_start((uv_stream_t *)&c->tcp, metrics_alloc, metrics_read) != 0)
		metrics_client_close(c);
}

bool metrics_http_open(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->metrics_listen == NULL || cfg->metrics_listen[0] == '\0')
		return true;
	char host[64];
	unsigned port;
	struct sockaddr_storage ss;
	const char *colon = strrchr(cfg->metrics_listen, ':');
	size_t hlen = colon ? (size_t)(colon - cfg->metrics_listen) : 0;
	const char *h = cfg->metrics_listen;
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']')
		h++, hlen -= 2;
	char *end = NULL;
	if (colon == NULL || hlen == 0 || hlen >= sizeof(host) ||
	    (port = (unsigned)strtoul(colon + 1, &end, 10)) == 0 || port > 65535 || *end != '\0') {
		snprintf(err, errlen, "metrics_listen: want ADDR:PORT, not %s",
			 cfg->metrics_listen);
		return false;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
		snprintf(err, errlen, "metrics_listen: %s is not an IP address", host);
		return false;
	}
	uv_loop_init(&mh.loop);
	list_init(&mh.clients);
	uv_tcp_init(&mh.loop, &mh.server);
	int r = uv_tcp_bind(&mh.server, (struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&mh.server, 64, metrics_accept);
	if (r != 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", cfg->metrics_listen, uv_strerror(r));
		uv_close((uv_handle_t *)&mh.server, NULL);
		uv_run(&mh.loop, UV_RUN_DEFAULT);
		uv_loop_close(&mh.loop);
		return false;
	}
	mh.opened = true;
	log_info("metrics: serving GET /metrics on %s", cfg->metrics_listen);
	return true;
}

static void metrics_stop_cb(uv_async_t *a)
{
	(void)a;
	struct list_link *l, *next;
	for (l = mh.clients.next; l != &mh.clients; l = next) {
		next = l->next;
		metrics_client_close(list_entry(l, struct metrics_client, link));
	}
	uv_close((uv_handle_t *)&mh.server, NULL);
	uv_close((uv_handle_t *)&mh.stop, NULL);
}

static void metrics_thread(void *arg)
{
	(void)arg;
	uv_run(&mh.loop, UV_RUN_DEFAULT);
}

void metrics_http_start(void)
{
	if (!mh.opened)
		return;
	uv_async_init(&mh.loop, &mh.stop, metrics_stop_cb);
	if (uv_thread_create(&mh.thread, metrics_thread, NULL) == 0)
		mh.running = true;
}

void metrics_http_stop(void)
{
	if (!mh.running)
		return;
	uv_async_send(&mh.stop);
	uv_thread_join(&mh.thread);
	uv_loop_close(&mh.loop);
	mh.running = false;
	mh.opened = false;
}
