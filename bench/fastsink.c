/*
 * fastsink: a fast, discarding downstream SMTP server for benchmarks (libuv).
 *
 * Speaks just enough ESMTP for an MTA's SMTP client: EHLO/HELO/LHLO, MAIL,
 * RCPT, DATA, RSET, NOOP, QUIT (PIPELINING advertised and handled: every
 * reply of one read is sent in one write). Message content is scanned for
 * the final dot and thrown away; each message is answered 250 (LMTP: one
 * 250 per RCPT) and counted.
 *
 *   fastsink --listen 127.0.0.1:10025 [--stats FILE] [--lmtp]
 *
 * --stats FILE is rewritten (atomically) every 100 ms while the count
 * changes: "messages N\nconnections N\nbytes N\nlast_message_unix T\nflushes N\n"
 * (flushes: writes of replies, one per round trip of the client).
 * SIGTERM/SIGINT: exit (the stats file is written once more).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <uv.h>

static uv_loop_t *loop;
static char rbuf[256 * 1024];
static uint64_t n_msgs, n_conns, n_bytes, written_msgs = (uint64_t)-1;
/* writes of replies: one per round trip of the client (bench/compare's
 * downstream round trips per message) */
static uint64_t n_flushes;
static double last_msg_unix;
static const char *stats_path;
static int lmtp;

struct sess {
	uv_tcp_t tcp;
	char line[2048];
	size_t ll;
	int in_data;
	int dstate; /* 0 mid-line, 1 line start, 2 ".", 3 ".\r" */
	int rcpts;
	int quit;
	char *out;
	size_t olen, ocap;
};

static double unix_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static void out_add(struct sess *s, const char *d)
{
	size_t n = strlen(d);
	if (s->olen + n > s->ocap) {
		s->ocap = (s->olen + n) * 2 + 256;
		s->out = realloc(s->out, s->ocap);
	}
	memcpy(s->out + s->olen, d, n);
	s->olen += n;
}

static void on_closed(uv_handle_t *h)
{
	struct sess *s = h->data;
	free(s->out);
	free(s);
}

static void on_written(uv_write_t *r, int status)
{
	(void)status;
	free(r->data);
	free(r);
}

static void flush(struct sess *s)
{
	if (s->olen == 0)
		return;
	n_flushes++;
	uv_write_t *r = malloc(sizeof(*r));
	r->data = s->out;
	uv_buf_t b = uv_buf_init(s->out, (unsigned)s->olen);
	s->out = NULL;
	s->olen = s->ocap = 0;
	if (uv_write(r, (uv_stream_t *)&s->tcp, &b, 1, on_written) < 0) {
		free(r->data);
		free(r);
	}
}

static int verb(const char *l, const char *v)
{
	size_t n = strlen(v);
	return strncasecmp(l, v, n) == 0 && (l[n] == 0 || l[n] == ' ' || l[n] == ':');
}

static void command(struct sess *s, char *l)
{
	if (verb(l, "EHLO") || verb(l, "LHLO")) {
		out_add(s, "250-fastsink.bench.example\r\n250-PIPELINING\r\n250-SIZE 1073741824\r\n"
			   "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 DSN\r\n");
	} else if (verb(l, "HELO")) {
		out_add(s, "250 fastsink.bench.example\r\n");
	} else if (verb(l, "MAIL")) {
		s->rcpts = 0;
		out_add(s, "250 2.1.0 Ok\r\n");
	} else if (verb(l, "RCPT")) {
		s->rcpts++;
		out_add(s, "250 2.1.5 Ok\r\n");
	} else if (verb(l, "DATA")) {
		if (s->rcpts == 0) {
			out_add(s, "554 5.5.1 No valid recipients\r\n");
			return;
		}
		out_add(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
		s->in_data = 1;
		s->dstate = 1;
	} else if (verb(l, "RSET")) {
		s->rcpts = 0;
		out_add(s, "250 2.0.0 Ok\r\n");
	} else if (verb(l, "NOOP")) {
		out_add(s, "250 2.0.0 Ok\r\n");
	} else if (verb(l, "QUIT")) {
		out_add(s, "221 2.0.0 Bye\r\n");
		s->quit = 1;
	} else {
		out_add(s, "502 5.5.2 Command not recognized\r\n");
	}
}

static void message_done(struct sess *s)
{
	n_msgs++;
	last_msg_unix = unix_now();
	int n = lmtp ? s->rcpts : 1;
	for (int i = 0; i < n; i++)
		out_add(s, "250 2.0.0 Ok: discarded\r\n");
	s->in_data = 0;
	s->rcpts = 0;
}

/* Scans message content for CRLF.CRLF; returns bytes consumed. */
static size_t data_scan(struct sess *s, const char *p, size_t n)
{
	const char *q = p, *end = p + n;
	while (q < end) {
		switch (s->dstate) {
		case 0: {
			const char *nl = memchr(q, '\n', (size_t)(end - q));
			if (!nl)
				return n;
			q = nl + 1;
			s->dstate = 1;
			break;
		}
		case 1:
			if (*q == '.') {
				s->dstate = 2;
				q++;
			} else {
				s->dstate = 0;
			}
			break;
		case 2:
			if (*q == '\r') {
				s->dstate = 3;
				q++;
			} else if (*q == '\n') { /* bare ".\n" */
				message_done(s);
				return (size_t)(q + 1 - p);
			} else {
				s->dstate = 0;
			}
			break;
		case 3:
			if (*q == '\n') {
				message_done(s);
				return (size_t)(q + 1 - p);
			}
			s->dstate = 0;
			break;
		}
	}
	return n;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	(void)h;
	(void)sz;
	*b = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	struct sess *s = st->data;
	if (nread < 0) {
		if (!uv_is_closing((uv_handle_t *)st))
			uv_close((uv_handle_t *)st, on_closed);
		return;
	}
	n_bytes += (uint64_t)nread;
	const char *p = b->base;
	size_t n = (size_t)nread;
	while (n > 0 && !s->quit) {
		if (s->in_data) {
			size_t k = data_scan(s, p, n);
			p += k;
			n -= k;
			continue;
		}
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) + 1 : n;
		if (s->ll + take < sizeof(s->line)) {
			memcpy(s->line + s->ll, p, take);
			s->ll += take;
		} else {
			s->ll = sizeof(s->line) - 1; /* overlong: truncated */
		}
		p += take;
		n -= take;
		if (!nl)
			break;
		size_t ll = s->ll;
		while (ll > 0 && (s->line[ll - 1] == '\n' || s->line[ll - 1] == '\r'))
			ll--;
		s->line[ll] = 0;
		s->ll = 0;
		command(s, s->line);
	}
	flush(s);
	if (s->quit && !uv_is_closing((uv_handle_t *)st))
		uv_close((uv_handle_t *)st, on_closed);
}

static void on_conn(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct sess *s = calloc(1, sizeof(*s));
	uv_tcp_init(loop, &s->tcp);
	s->tcp.data = s;
	if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
		uv_close((uv_handle_t *)&s->tcp, on_closed);
		return;
	}
	n_conns++;
	uv_tcp_nodelay(&s->tcp, 1);
	out_add(s, "220 fastsink.bench.example ESMTP\r\n");
	flush(s);
	uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

static void write_stats(void)
{
	if (!stats_path || written_msgs == n_msgs)
		return;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "messages %" PRIu64 "\nconnections %" PRIu64 "\nbytes %" PRIu64
		   "\nlast_message_unix %.6f\nflushes %" PRIu64 "\n",
		n_msgs, n_conns, n_bytes, last_msg_unix, n_flushes);
	fclose(f);
	rename(tmp, stats_path);
	written_msgs = n_msgs;
}

static void on_tick(uv_timer_t *t)
{
	(void)t;
	write_stats();
}

static void on_signal(uv_signal_t *h, int sig)
{
	(void)sig;
	write_stats();
	uv_stop(h->loop);
}

int main(int argc, char **argv)
{
	const char *listen = "127.0.0.1:10025";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
			listen = argv[++i];
		else if (strcmp(argv[i], "--stats") == 0 && i + 1 < argc)
			stats_path = argv[++i];
		else if (strcmp(argv[i], "--lmtp") == 0)
			lmtp = 1;
		else {
			fprintf(stderr, "usage: fastsink [--listen HOST:PORT] [--stats FILE] [--lmtp]\n");
			return 2;
		}
	}
	char host[256];
	const char *colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
		fprintf(stderr, "fastsink: bad --listen %s\n", listen);
		return 2;
	}
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = 0;
	char *h = host;
	if (h[0] == '[') {
		h++;
		h[strlen(h) - 1] = 0;
	}
	int port = atoi(colon + 1);
	struct sockaddr_storage sa;
	if (uv_ip4_addr(h, port, (struct sockaddr_in *)&sa) != 0 &&
	    uv_ip6_addr(h, port, (struct sockaddr_in6 *)&sa) != 0) {
		fprintf(stderr, "fastsink: bad address %s\n", h);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	loop = uv_default_loop();
	uv_tcp_t server;
	uv_tcp_init(loop, &server);
	int rc = uv_tcp_bind(&server, (struct sockaddr *)&sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&server, 4096, on_conn);
	if (rc != 0) {
		fprintf(stderr, "fastsink: listen %s: %s\n", listen, uv_strerror(rc));
		return 1;
	}
	uv_timer_t tick;
	uv_timer_init(loop, &tick);
	uv_timer_start(&tick, on_tick, 100, 100);
	uv_signal_t s1, s2;
	uv_signal_init(loop, &s1);
	uv_signal_init(loop, &s2);
	uv_signal_start(&s1, on_signal, SIGTERM);
	uv_signal_start(&s2, on_signal, SIGINT);
	write_stats();
	uv_run(loop, UV_RUN_DEFAULT);
	return 0;
}
