/*
 * smtpload: an SMTP submission load generator (libuv + GnuTLS).
 *
 * Opens N concurrent client sessions against a submission server: implicit
 * TLS (port 465 style) or STARTTLS (587), AUTH PLAIN, then K messages per
 * connection of a given size, over and over, for a duration or a message
 * count. Or, in idle mode, opens N sessions through AUTH and holds them.
 * Every reply code is checked; every step has a timeout; the result is one
 * JSON line on stdout (see bench/README.md for the fields).
 *
 *   smtpload -H 127.0.0.1 -p 465 --tls -u alice@example.com -w secret \
 *            -f alice@example.com -t rcpt@[192.0.2.10] -c 50 -k 1 -s 5000 -d 10
 *
 * Build: make -C bench (needs libuv1-dev, libgnutls28-dev).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* ------------------------------------------------------------ options */

static struct opt {
	const char *host;
	int port;
	int implicit_tls;     /* 1: TLS from the first byte; 0: STARTTLS */
	const char *user, *password;
	const char *from, *to;
	const char *ehlo;
	const char *priority; /* GnuTLS priority string */
	int conns;            /* concurrent connections */
	int per_conn;         /* messages per connection */
	size_t size;          /* message size in bytes */
	double duration;      /* seconds (0: use count) */
	double warmup;        /* seconds excluded from rates and latencies */
	long count;           /* total messages (when duration is 0) */
	int pipelining;       /* MAIL, RCPT, DATA in one write */
	double idle;          /* idle mode: hold seconds (0: off) */
	int ramp;             /* idle mode: sessions in set-up at once */
	const char *ready_file;
	double timeout;       /* per step, seconds */
	int threads;
	int no_auth;
	int resume;           /* TLS session resumption: each thread reuses its last ticket */
	const char *label;
	int sources; /* connect from 127.0.0.2 .. 127.0.0.N+1 in turn (0: the kernel's choice) */
} o = {
	.host = "127.0.0.1",
	.port = 587,
	.ehlo = "loadgen.bench.example",
	.priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM:-GROUP-ALL:+GROUP-X25519",
	.conns = 1,
	.per_conn = 1,
	.size = 5000,
	.duration = 0,
	.count = 0,
	.ramp = 64,
	.timeout = 30,
	.threads = 1,
};

/* ------------------------------------------------------------ helpers */

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (!b->p) {
		perror("realloc");
		exit(2);
	}
	b->cap = cap;
}

static void buf_add(struct buf *b, const void *d, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

struct lat {
	uint32_t *v; /* microseconds */
	size_t n, cap;
};

static void lat_add(struct lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v) {
			perror("realloc");
			exit(2);
		}
	}
	uint64_t us = ns / 1000;
	l->v[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void lat_merge(struct lat *into, const struct lat *from)
{
	for (size_t i = 0; i < from->n; i++)
		lat_add(into, (uint64_t)from->v[i] * 1000);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

#define NPHASE 14
enum phase {
	PH_CONNECT,
	PH_TLS,
	PH_GREETING,
	PH_EHLO,
	PH_STARTTLS,
	PH_EHLO2,
	PH_AUTH,
	PH_MAIL,
	PH_RCPT,
	PH_DATA,
	PH_DOT,
	PH_QUIT,
	PH_IDLE,
	PH_DONE,
};
static const char *const phase_name[NPHASE] = {
	"connect", "tls", "greeting", "ehlo", "starttls", "ehlo_tls", "auth",
	"mail", "rcpt", "data", "dot", "quit", "idle", "done",
};

#define MAXFAIL 64
struct fails {
	struct {
		char key[64];
		uint64_t n;
	} e[MAXFAIL];
	int n;
	uint64_t total;
};

static void fails_add(struct fails *f, const char *key, uint64_t n)
{
	f->total += n;
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->e[i].key, key) == 0) {
			f->e[i].n += n;
			return;
		}
	int i = f->n < MAXFAIL ? f->n++ : MAXFAIL - 1;
	snprintf(f->e[i].key, sizeof(f->e[i].key), "%s", i == MAXFAIL - 1 ? "other" : key);
	f->e[i].n += n;
}

/* ------------------------------------------------------------ shared, read-only */

static char *message;     /* the wire form of one message, CRLF.CRLF included */
static size_t message_len;
static char auth_line[1024];
static char mail_line[600], rcpt_line[600], ehlo_line[300], pipe_line[1400];
static gnutls_certificate_credentials_t xcred;
static gnutls_priority_t prio;
static struct sockaddr_storage peer;
static uint64_t t0;       /* start, uv_hrtime() */
static char tls_desc[256];
static uv_mutex_t desc_mu;

/* ------------------------------------------------------------ per thread */

struct conn;

struct worker {
	int id;
	uv_loop_t loop;
	uv_thread_t th;
	uv_timer_t tick;   /* refill after failures; end of duration; idle hold */
	char rbuf[65536];  /* read buffer shared by the thread's connections */
	char pbuf[32768];  /* decrypted data */
	int target;        /* connections to keep open */
	int active;        /* connections alive */
	int in_setup;
	long limit;        /* messages (count mode), per thread */
	long reserved;     /* messages promised to connections */
	int stopping;
	int refill_pending;
	struct conn *head; /* all live connections */
	/* idle mode */
	int idle_attempted, idle_held, idle_phase; /* 0 ramp, 1 hold, 2 closing */
	/* results */
	uint64_t msgs_ok, msgs_ok_total, msgs_failed, conns_ok, conns_ok_total,
	    conns_failed, conns_started;
	uint64_t bytes_sent;
	uint64_t last_done;
	struct lat msg_lat, setup_lat, sess_lat;
	struct fails fails;
	int held_end;
	gnutls_datum_t ticket; /* --resume: the session data of the last connection */
	uint64_t resumed;      /* handshakes that resumed a session */
};

struct conn {
	struct worker *w;
	struct conn *prev, *next;
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_timer_t timer;
	int open_handles;
	gnutls_session_t tls;
	int tls_state; /* 0 none, 1 handshaking, 2 up */
	struct buf tin; /* ciphertext received, not yet pulled */
	size_t tin_off;
	struct buf wout; /* bytes to write (cipher or plain) */
	size_t wq;       /* bytes queued in uv_write */
	struct buf line; /* partial reply */
	enum phase ph;
	int pipelined_left;
	int quota, done;
	int failed, closing, idle_held;
	size_t body_off;
	int sending_body;
	uint64_t t_start, t_msg, t_setup_done;
};

struct wreq {
	uv_write_t req;
	char *base;
	size_t len;
	struct conn *c;
};

static uint64_t now_ns(void)
{
	return uv_hrtime();
}

static int in_window(uint64_t t)
{
	uint64_t s = t - t0;
	if (s < (uint64_t)(o.warmup * 1e9))
		return 0;
	if (o.duration > 0 && s > (uint64_t)((o.warmup + o.duration) * 1e9))
		return 0;
	return 1;
}

static void conn_close(struct conn *c);
static void conn_new(struct worker *w);
static void conn_send(struct conn *c, const char *d, size_t n);
static void conn_flush(struct conn *c);
static void worker_check_done(struct worker *w);

static void conn_fail(struct conn *c, const char *why)
{
	if (c->closing)
		return;
	char key[64];
	snprintf(key, sizeof(key), "%s:%s", phase_name[c->ph], why);
	fails_add(&c->w->fails, key, 1);
	c->failed = 1;
	if (c->ph >= PH_MAIL && c->ph <= PH_DOT)
		c->w->msgs_failed++;
	if (c->ph < PH_MAIL || c->ph == PH_IDLE)
		c->w->conns_failed++;
	conn_close(c);
}

static void on_timeout(uv_timer_t *t)
{
	conn_fail(t->data, "timeout");
}

static void arm(struct conn *c)
{
	uv_timer_start(&c->timer, on_timeout, (uint64_t)(o.timeout * 1000), 0);
}

/* ------------------------------------------------------------ writing */

static void on_write(uv_write_t *r, int status)
{
	struct wreq *wr = (struct wreq *)r;
	struct conn *c = wr->c;
	c->wq -= wr->len;
	free(wr->base);
	free(wr);
	if (c->closing)
		return;
	if (status < 0) {
		conn_fail(c, uv_err_name(status));
		return;
	}
	if (c->sending_body)
		conn_flush(c); /* pump more body */
}

static void pump_body(struct conn *c);

static void conn_flush(struct conn *c)
{
	if (c->sending_body)
		pump_body(c);
	if (c->wout.len == 0 || c->closing)
		return;
	struct wreq *wr = malloc(sizeof(*wr));
	wr->base = c->wout.p;
	wr->len = c->wout.len;
	wr->c = c;
	c->wout.p = NULL;
	c->wout.len = c->wout.cap = 0;
	uv_buf_t b = uv_buf_init(wr->base, (unsigned)wr->len);
	c->wq += wr->len;
	c->w->bytes_sent += wr->len;
	int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc < 0) {
		c->wq -= wr->len;
		free(wr->base);
		free(wr);
		conn_fail(c, uv_err_name(rc));
	}
}

static ssize_t tls_push(gnutls_transport_ptr_t p, const void *d, size_t n)
{
	struct conn *c = p;
	buf_add(&c->wout, d, n);
	return (ssize_t)n;
}

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *d, size_t n)
{
	struct conn *c = p;
	size_t avail = c->tin.len - c->tin_off;
	if (avail == 0) {
		gnutls_transport_set_errno(c->tls, EAGAIN);
		return -1;
	}
	if (n > avail)
		n = avail;
	memcpy(d, c->tin.p + c->tin_off, n);
	c->tin_off += n;
	if (c->tin_off == c->tin.len)
		c->tin_off = c->tin.len = 0;
	return (ssize_t)n;
}

static void conn_send(struct conn *c, const char *d, size_t n)
{
	if (c->tls_state != 2) {
		buf_add(&c->wout, d, n);
		return;
	}
	while (n > 0) {
		ssize_t r = gnutls_record_send(c->tls, d, n);
		if (r < 0) {
			if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
				continue;
			conn_fail(c, "tls_send");
			return;
		}
		d += r;
		n -= (size_t)r;
	}
}

static void send_cmd(struct conn *c, const char *line, enum phase ph)
{
	c->ph = ph;
	conn_send(c, line, strlen(line));
	if (!c->closing) {
		conn_flush(c);
		arm(c);
	}
}

#define BODY_QUEUE (256 * 1024)
#define BODY_CHUNK (64 * 1024)

static void pump_body(struct conn *c)
{
	while (c->sending_body && c->wq + c->wout.len < BODY_QUEUE && !c->closing) {
		size_t n = message_len - c->body_off;
		if (n > BODY_CHUNK)
			n = BODY_CHUNK;
		conn_send(c, message + c->body_off, n);
		c->body_off += n;
		if (c->body_off == message_len)
			c->sending_body = 0;
	}
}

/* ------------------------------------------------------------ the dialogue */

static void start_message(struct conn *c)
{
	struct worker *w = c->w;
	int more = c->done < c->quota && !w->stopping;
	if (!more) {
		send_cmd(c, "QUIT\r\n", PH_QUIT);
		return;
	}
	c->t_msg = now_ns();
	if (o.pipelining) {
		c->pipelined_left = 3;
		send_cmd(c, pipe_line, PH_MAIL);
	} else {
		send_cmd(c, mail_line, PH_MAIL);
	}
}

static void tls_start(struct conn *c);

static void setup_done(struct conn *c)
{
	struct worker *w = c->w;
	uint64_t t = now_ns();
	c->t_setup_done = t;
	w->in_setup--;
	w->conns_ok_total++;
	if (o.idle > 0 || in_window(t)) {
		w->conns_ok++;
		lat_add(&w->setup_lat, t - c->t_start);
	}
	if (o.idle > 0) {
		c->ph = PH_IDLE;
		c->idle_held = 1;
		w->idle_held++;
		uv_timer_stop(&c->timer);
		conn_new(w); /* ramp on */
		worker_check_done(w);
		return;
	}
	start_message(c);
}

static void on_reply(struct conn *c, int code, const char *text)
{
	struct worker *w = c->w;
	char why[16];
	snprintf(why, sizeof(why), "%d", code);
	(void)text;
	switch (c->ph) {
	case PH_GREETING:
		if (code != 220)
			return conn_fail(c, why);
		if (c->tls_state == 2)
			send_cmd(c, ehlo_line, PH_EHLO2);
		else
			send_cmd(c, ehlo_line, PH_EHLO);
		return;
	case PH_EHLO:
		if (code != 250)
			return conn_fail(c, why);
		send_cmd(c, "STARTTLS\r\n", PH_STARTTLS);
		return;
	case PH_STARTTLS:
		if (code != 220)
			return conn_fail(c, why);
		tls_start(c);
		return;
	case PH_EHLO2:
		if (code != 250)
			return conn_fail(c, why);
		if (o.no_auth) {
			setup_done(c);
			return;
		}
		send_cmd(c, auth_line, PH_AUTH);
		return;
	case PH_AUTH:
		if (code != 235)
			return conn_fail(c, why);
		setup_done(c);
		return;
	case PH_MAIL:
		if (code != 250)
			return conn_fail(c, why);
		if (o.pipelining)
			c->ph = PH_RCPT;
		else
			send_cmd(c, rcpt_line, PH_RCPT);
		return;
	case PH_RCPT:
		if (code != 250 && code != 251)
			return conn_fail(c, why);
		if (o.pipelining)
			c->ph = PH_DATA;
		else
			send_cmd(c, "DATA\r\n", PH_DATA);
		return;
	case PH_DATA:
		if (code != 354)
			return conn_fail(c, why);
		c->ph = PH_DOT;
		c->body_off = 0;
		c->sending_body = 1;
		conn_flush(c);
		arm(c);
		return;
	case PH_DOT: {
		if (code != 250)
			return conn_fail(c, why);
		uint64_t t = now_ns();
		c->done++;
		w->msgs_ok_total++;
		w->last_done = t;
		if (in_window(t)) {
			w->msgs_ok++;
			lat_add(&w->msg_lat, t - c->t_msg);
			if (c->done == c->quota || w->stopping)
				lat_add(&w->sess_lat, t - c->t_start);
		}
		start_message(c);
		return;
	}
	case PH_QUIT:
		if (code != 221)
			return conn_fail(c, why);
		if (o.resume && c->tls) {
			/* the server's ticket arrived with the replies before this one */
			gnutls_datum_t d;
			if (gnutls_session_get_data2(c->tls, &d) == 0) {
				gnutls_free(c->w->ticket.data);
				c->w->ticket = d;
			}
		}
		c->ph = PH_DONE;
		conn_close(c);
		return;
	default:
		return conn_fail(c, "unexpected");
	}
}

static void feed_plain(struct conn *c, const char *d, size_t n)
{
	buf_add(&c->line, d, n);
	size_t start = 0;
	while (!c->closing && c->ph != PH_TLS) {
		char *nl = memchr(c->line.p + start, '\n', c->line.len - start);
		if (!nl)
			break;
		char *l = c->line.p + start;
		size_t ll = (size_t)(nl - l);
		start += ll + 1;
		if (ll > 0 && l[ll - 1] == '\r')
			ll--;
		if (ll >= 4 && l[3] == '-')
			continue;
		if (ll < 3 || l[0] < '1' || l[0] > '5') {
			conn_fail(c, "garbage");
			break;
		}
		int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		l[ll] = 0;
		on_reply(c, code, l);
	}
	if (c->closing || c->ph == PH_TLS) {
		c->line.len = 0;
		return;
	}
	memmove(c->line.p, c->line.p + start, c->line.len - start);
	c->line.len -= start;
	if (c->line.len > 65536)
		conn_fail(c, "long_line");
}

static void tls_handshake_step(struct conn *c)
{
	int r = gnutls_handshake(c->tls);
	conn_flush(c);
	if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
		return;
	if (r < 0) {
		char why[48];
		snprintf(why, sizeof(why), "%s", gnutls_strerror_name(r));
		conn_fail(c, why);
		return;
	}
	c->tls_state = 2;
	if (gnutls_session_is_resumed(c->tls))
		c->w->resumed++;
	if (!tls_desc[0]) {
		char *desc = gnutls_session_get_desc(c->tls);
		uv_mutex_lock(&desc_mu);
		if (!tls_desc[0] && desc)
			snprintf(tls_desc, sizeof(tls_desc), "%s", desc);
		uv_mutex_unlock(&desc_mu);
		gnutls_free(desc);
	}
	if (o.implicit_tls) {
		c->ph = PH_GREETING;
		arm(c);
	} else {
		send_cmd(c, ehlo_line, PH_EHLO2);
	}
}

static void tls_start(struct conn *c)
{
	c->ph = PH_TLS;
	c->tls_state = 1;
	gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK | (o.resume ? 0 : GNUTLS_NO_TICKETS));
	gnutls_priority_set(c->tls, prio);
	if (o.resume && c->w->ticket.data)
		gnutls_session_set_data(c->tls, c->w->ticket.data, c->w->ticket.size);
	gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, xcred);
	gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, "mail.test.example", 17);
	gnutls_transport_set_ptr(c->tls, c);
	gnutls_transport_set_push_function(c->tls, tls_push);
	gnutls_transport_set_pull_function(c->tls, tls_pull);
	arm(c);
	tls_handshake_step(c);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct conn *c = h->data;
	(void)sz;
	*b = uv_buf_init(c->w->rbuf, sizeof(c->w->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;
	if (n == 0 || c->closing)
		return;
	if (n < 0) {
		conn_fail(c, n == UV_EOF ? "eof" : uv_err_name((int)n));
		return;
	}
	if (c->tls_state == 0) {
		feed_plain(c, b->base, (size_t)n);
		return;
	}
	buf_add(&c->tin, b->base, (size_t)n);
	if (c->tls_state == 1) {
		tls_handshake_step(c);
		if (c->closing || c->tls_state != 2)
			return;
	}
	for (int spins = 0;;) {
		ssize_t r = gnutls_record_recv(c->tls, c->w->pbuf, sizeof(c->w->pbuf));
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
			/* GnuTLS says AGAIN after a post-handshake message (a TLS 1.3
			 * session ticket) even when more records are buffered */
			if ((c->tin.len > c->tin_off || gnutls_record_check_pending(c->tls) > 0) &&
			    ++spins < 1000)
				continue;
			break;
		}
		if (r == 0) {
			conn_fail(c, "eof");
			break;
		}
		if (r < 0) {
			if (!gnutls_error_is_fatal((int)r))
				continue;
			conn_fail(c, gnutls_strerror_name((int)r));
			break;
		}
		feed_plain(c, c->w->pbuf, (size_t)r);
		if (c->closing)
			break;
	}
	conn_flush(c);
}

static void on_connect(uv_connect_t *r, int status)
{
	struct conn *c = r->data;
	if (c->closing)
		return;
	if (status < 0) {
		conn_fail(c, uv_err_name(status));
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (o.implicit_tls) {
		tls_start(c);
	} else {
		c->ph = PH_GREETING;
		arm(c);
	}
}

/* ------------------------------------------------------------ lifecycle */

static void worker_check_done(struct worker *w);

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	if (--c->open_handles > 0)
		return;
	struct worker *w = c->w;
	if (c->tls)
		gnutls_deinit(c->tls);
	buf_free(&c->tin);
	buf_free(&c->wout);
	buf_free(&c->line);
	free(c);
	worker_check_done(w);
}

static void on_refill(uv_timer_t *t);

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	struct worker *w = c->w;
	c->closing = 1;
	c->sending_body = 0;
	if (c->ph < PH_MAIL && c->ph != PH_IDLE)
		w->in_setup--;
	if (c->idle_held)
		w->idle_held--;
	/* messages promised but not sent go back to the pool (count mode) */
	if (c->quota > c->done)
		w->reserved -= c->quota - c->done;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->active--;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_closed);
	if (o.idle > 0) {
		if (w->idle_phase == 0)
			conn_new(w);
		return;
	}
	if (!w->stopping) {
		if (c->failed) {
			/* after a failure, reconnect a little later (no busy loop) */
			w->refill_pending++;
			if (!uv_is_active((uv_handle_t *)&w->tick))
				uv_timer_start(&w->tick, on_refill, 10, 0);
		} else {
			conn_new(w);
		}
	}
}

static void conn_new(struct worker *w)
{
	if (w->stopping)
		return;
	if (o.idle > 0) {
		if (w->idle_phase != 0 || w->idle_attempted >= w->target || w->in_setup >= o.ramp)
			return;
		w->idle_attempted++;
	} else {
		if (w->active >= w->target)
			return;
		if (o.duration <= 0 && w->reserved >= w->limit)
			return;
		if (o.duration <= 0 && w->fails.total > (uint64_t)w->limit + 100) {
			w->stopping = 1; /* give up: everything fails */
			return;
		}
	}
	struct conn *c = calloc(1, sizeof(*c));
	c->w = w;
	c->quota = o.per_conn;
	if (o.duration <= 0 && o.idle <= 0) {
		long left = w->limit - w->reserved;
		if (c->quota > left)
			c->quota = (int)left;
	}
	w->reserved += c->quota;
	c->ph = PH_CONNECT;
	c->t_start = now_ns();
	uv_tcp_init(&w->loop, &c->tcp);
	uv_timer_init(&w->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->creq.data = c;
	c->open_handles = 2;
	c->next = w->head;
	if (w->head)
		w->head->prev = c;
	w->head = c;
	w->active++;
	w->in_setup++;
	w->conns_started++;
	arm(c);
	if (o.sources > 0) {
		/* several loopback sources: more than one address's ~28,000
		   ephemeral ports to the same server port; 127.0.0.1's are left
		   to everything else on the machine */
		static _Thread_local unsigned next;
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000002u + next++ % (unsigned)o.sources);
		int br = uv_tcp_bind(&c->tcp, (struct sockaddr *)&src, 0);
		if (br < 0) {
			conn_fail(c, uv_err_name(br));
			return;
		}
	}
	int rc = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&peer, on_connect);
	if (rc < 0)
		conn_fail(c, uv_err_name(rc));
}

static void on_refill(uv_timer_t *t)
{
	struct worker *w = t->data;
	int n = w->refill_pending;
	w->refill_pending = 0;
	while (n-- > 0 && !w->stopping)
		conn_new(w);
	worker_check_done(w);
}

static void on_stop(uv_timer_t *t);

static void idle_hold_end(uv_timer_t *t)
{
	struct worker *w = t->data;
	w->held_end = w->idle_held;
	w->idle_phase = 2;
	w->stopping = 1;
	for (struct conn *c = w->head; c; c = c->next) {
		if (c->ph == PH_IDLE && !c->closing) {
			c->idle_held = 0;
			w->idle_held--;
			send_cmd(c, "QUIT\r\n", PH_QUIT);
		}
	}
	worker_check_done(w);
}

static void worker_check_done(struct worker *w)
{
	if (o.idle > 0 && w->idle_phase == 0 && w->idle_attempted >= w->target &&
	    w->in_setup == 0) {
		/* everyone is set up: hold */
		w->idle_phase = 1;
		if (o.ready_file) {
			FILE *f = fopen(o.ready_file, "w");
			if (f) {
				fprintf(f, "%d\n", w->idle_held);
				fclose(f);
			}
		}
		fprintf(stderr, "smtpload: %d sessions held for %.1f s\n", w->idle_held, o.idle);
		uv_timer_start(&w->tick, idle_hold_end, (uint64_t)(o.idle * 1000), 0);
		return;
	}
	if (w->active == 0 && (w->stopping || (o.duration <= 0 && o.idle <= 0 &&
						 w->reserved >= w->limit && w->refill_pending == 0))) {
		w->stopping = 1;
		uv_stop(&w->loop);
	}
}

static void on_stop(uv_timer_t *t)
{
	struct worker *w = t->data;
	w->stopping = 1;
	worker_check_done(w);
}

static void worker_run(void *arg)
{
	struct worker *w = arg;
	uv_timer_t stop;
	uv_timer_init(&w->loop, &w->tick);
	w->tick.data = w;
	uv_timer_init(&w->loop, &stop);
	stop.data = w;
	if (o.duration > 0 && o.idle <= 0)
		uv_timer_start(&stop, on_stop, (uint64_t)((o.warmup + o.duration) * 1000), 0);
	int n = o.idle > 0 ? (w->target < o.ramp ? w->target : o.ramp) : w->target;
	for (int i = 0; i < n; i++)
		conn_new(w);
	worker_check_done(w);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&w->tick, NULL);
	uv_close((uv_handle_t *)&stop, NULL);
	/* drain closes still pending */
	for (struct conn *c = w->head; c; c = c->next)
		conn_close(c);
	uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* ------------------------------------------------------------ set-up */

static void b64(const unsigned char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i = 0, j = 0;
	while (i + 2 < n) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[j++] = t[v >> 18 & 63];
		out[j++] = t[v >> 12 & 63];
		out[j++] = t[v >> 6 & 63];
		out[j++] = t[v & 63];
		i += 3;
	}
	if (i < n) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
		out[j++] = t[v >> 18 & 63];
		out[j++] = t[v >> 12 & 63];
		out[j++] = i + 1 < n ? t[v >> 6 & 63] : '=';
		out[j++] = '=';
	}
	out[j] = 0;
}

static void build_message(void)
{
	struct buf b = {0};
	char hdr[2048];
	int hn = snprintf(hdr, sizeof(hdr),
			  "From: <%s>\r\n"
			  "To: <%s>\r\n"
			  "Subject: smtpload test message\r\n"
			  "Date: Sat, 22 Nov 2025 12:00:00 +0000\r\n"
			  "Message-ID: <smtpload.%ld@bench.example>\r\n"
			  "MIME-Version: 1.0\r\n"
			  "Content-Type: text/plain; charset=us-ascii\r\n"
			  "\r\n",
			  o.from, o.to, (long)getpid());
	buf_add(&b, hdr, (size_t)hn);
	static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
	unsigned seed = 1;
	while (b.len + 3 < o.size) {
		char l[80];
		size_t want = o.size - 3 - b.len;
		size_t ll = want < 78 ? want : 76;
		if (ll < 2)
			ll = 2;
		for (size_t i = 0; i + 2 < ll; i++) {
			seed = seed * 1103515245 + 12345;
			l[i] = (i % 9 == 8) ? ' ' : alpha[(seed >> 16) % 62];
		}
		l[ll - 2] = '\r';
		l[ll - 1] = '\n';
		buf_add(&b, l, ll);
	}
	buf_add(&b, ".\r\n", 3);
	message = b.p;
	message_len = b.len;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: smtpload [options]\n"
		"  -H, --host ADDR          server address (127.0.0.1)\n"
		"  -p, --port N             server port (587)\n"
		"      --tls                implicit TLS (465 style); default STARTTLS\n"
		"  -u, --user U / -w, --password P   AUTH PLAIN credentials\n"
		"      --no-auth            skip AUTH (trusted listener)\n"
		"  -f, --from ADDR / -t, --to ADDR   envelope (and header) addresses\n"
		"  -c, --conns N            concurrent connections (1)\n"
		"  -k, --per-conn K         messages per connection (1)\n"
		"  -s, --size BYTES         message size (5000)\n"
		"  -d, --duration S         run for S seconds (after warm-up)\n"
		"      --warmup S           seconds excluded from rates/latencies (0)\n"
		"  -n, --count M            send M messages in total (if no duration)\n"
		"  -P, --pipelining         MAIL+RCPT+DATA in one write\n"
		"      --priority STR       GnuTLS priority string\n"
		"      --resume             TLS session resumption (each thread reuses its last ticket)\n"
		"      --idle S             idle mode: open N sessions through AUTH, hold S seconds\n"
		"      --ramp N             idle mode: sessions in set-up at once (64)\n"
		"      --ready-file PATH    idle mode: written when all sessions are up\n"
		"      --sources N          connect from 127.0.0.2 .. 127.0.0.N+1 in turn (100,000 sessions)\n"
		"      --timeout S          per-step timeout (30)\n"
		"      --threads T          event-loop threads (1)\n"
		"      --ehlo NAME          EHLO name\n"
		"      --label STR          copied into the JSON line\n");
	exit(2);
}

static void pct_json(FILE *f, const char *name, struct lat *l)
{
	if (l->n == 0) {
		fprintf(f, "\"%s\":null", name);
		return;
	}
	qsort(l->v, l->n, sizeof(*l->v), cmp_u32);
	double sum = 0;
	for (size_t i = 0; i < l->n; i++)
		sum += l->v[i];
#define P(q) (l->v[(size_t)((q) * (double)(l->n - 1) + 0.5)] / 1000.0)
	fprintf(f,
		"\"%s\":{\"n\":%zu,\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
		"\"max\":%.3f}",
		name, l->n, sum / (double)l->n / 1000.0, P(0.50), P(0.90), P(0.99),
		l->v[l->n - 1] / 1000.0);
#undef P
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

int main(int argc, char **argv)
{
	enum { O_TLS = 256, O_PRIO, O_IDLE, O_RAMP, O_READY, O_TIMEOUT, O_THREADS, O_EHLO,
	       O_LABEL, O_WARMUP, O_NOAUTH, O_RESUME, O_SOURCES };
	static const struct option lo[] = {
		{"host", 1, 0, 'H'},	    {"port", 1, 0, 'p'},	{"tls", 0, 0, O_TLS},
		{"user", 1, 0, 'u'},	    {"password", 1, 0, 'w'},	{"from", 1, 0, 'f'},
		{"to", 1, 0, 't'},	    {"conns", 1, 0, 'c'},	{"per-conn", 1, 0, 'k'},
		{"size", 1, 0, 's'},	    {"duration", 1, 0, 'd'},	{"count", 1, 0, 'n'},
		{"pipelining", 0, 0, 'P'},  {"priority", 1, 0, O_PRIO},	{"idle", 1, 0, O_IDLE},
		{"ramp", 1, 0, O_RAMP},	    {"ready-file", 1, 0, O_READY},
		{"timeout", 1, 0, O_TIMEOUT}, {"threads", 1, 0, O_THREADS},
		{"ehlo", 1, 0, O_EHLO},	    {"label", 1, 0, O_LABEL},	{"warmup", 1, 0, O_WARMUP},
		{"no-auth", 0, 0, O_NOAUTH}, {"resume", 0, 0, O_RESUME},
		{"sources", 1, 0, O_SOURCES}, {"help", 0, 0, 'h'},
		{0, 0, 0, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "H:p:u:w:f:t:c:k:s:d:n:Ph", lo, NULL)) != -1) {
		switch (ch) {
		case 'H': o.host = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case O_TLS: o.implicit_tls = 1; break;
		case 'u': o.user = optarg; break;
		case 'w': o.password = optarg; break;
		case 'f': o.from = optarg; break;
		case 't': o.to = optarg; break;
		case 'c': o.conns = atoi(optarg); break;
		case 'k': o.per_conn = atoi(optarg); break;
		case 's': o.size = (size_t)strtoull(optarg, NULL, 10); break;
		case 'd': o.duration = atof(optarg); break;
		case 'n': o.count = atol(optarg); break;
		case 'P': o.pipelining = 1; break;
		case O_PRIO: o.priority = optarg; break;
		case O_IDLE: o.idle = atof(optarg); break;
		case O_RAMP: o.ramp = atoi(optarg); break;
		case O_READY: o.ready_file = optarg; break;
		case O_SOURCES: o.sources = atoi(optarg); break;
		case O_TIMEOUT: o.timeout = atof(optarg); break;
		case O_THREADS: o.threads = atoi(optarg); break;
		case O_EHLO: o.ehlo = optarg; break;
		case O_LABEL: o.label = optarg; break;
		case O_WARMUP: o.warmup = atof(optarg); break;
		case O_NOAUTH: o.no_auth = 1; break;
		case O_RESUME: o.resume = 1; break;
		default: usage();
		}
	}
	if (o.conns < 1 || o.per_conn < 1 || o.threads < 1 || o.ramp < 1 || o.timeout <= 0)
		usage();
	if (!o.no_auth && (!o.user || !o.password)) {
		fprintf(stderr, "smtpload: --user and --password are required (or --no-auth)\n");
		usage();
	}
	if (!o.from)
		o.from = o.user ? o.user : "loadgen@bench.example";
	if (!o.to)
		o.to = "rcpt@[192.0.2.10]";
	if (o.idle > 0)
		o.threads = 1;
	if (o.idle <= 0 && o.duration <= 0 && o.count <= 0)
		o.count = (long)o.conns * o.per_conn;
	if (o.threads > o.conns)
		o.threads = o.conns;

	/* enough descriptors for the connections */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)o.conns + 64)
		fprintf(stderr, "smtpload: warning: RLIMIT_NOFILE %llu < connections %d\n",
			(unsigned long long)rl.rlim_cur, o.conns);

	if (uv_ip4_addr(o.host, o.port, (struct sockaddr_in *)&peer) != 0 &&
	    uv_ip6_addr(o.host, o.port, (struct sockaddr_in6 *)&peer) != 0) {
		fprintf(stderr, "smtpload: bad address %s\n", o.host);
		return 2;
	}

	gnutls_global_init();
	gnutls_certificate_allocate_credentials(&xcred);
	const char *err = NULL;
	if (gnutls_priority_init(&prio, o.priority, &err) < 0) {
		fprintf(stderr, "smtpload: bad priority string at: %s\n", err ? err : "?");
		return 2;
	}
	uv_mutex_init(&desc_mu);

	snprintf(ehlo_line, sizeof(ehlo_line), "EHLO %s\r\n", o.ehlo);
	snprintf(mail_line, sizeof(mail_line), "MAIL FROM:<%s> SIZE=%zu\r\n", o.from, o.size);
	snprintf(rcpt_line, sizeof(rcpt_line), "RCPT TO:<%s>\r\n", o.to);
	snprintf(pipe_line, sizeof(pipe_line), "%s%sDATA\r\n", mail_line, rcpt_line);
	if (!o.no_auth) {
		unsigned char raw[600];
		size_t ul = strlen(o.user), pl = strlen(o.password);
		if (ul + pl + 2 > sizeof(raw) - 1) {
			fprintf(stderr, "smtpload: credentials too long\n");
			return 2;
		}
		raw[0] = 0;
		memcpy(raw + 1, o.user, ul);
		raw[1 + ul] = 0;
		memcpy(raw + 2 + ul, o.password, pl);
		char enc[900];
		b64(raw, ul + pl + 2, enc);
		snprintf(auth_line, sizeof(auth_line), "AUTH PLAIN %s\r\n", enc);
	}
	build_message();

	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	t0 = now_ns();

	struct worker *ws = calloc((size_t)o.threads, sizeof(*ws));
	for (int i = 0; i < o.threads; i++) {
		struct worker *w = &ws[i];
		w->id = i;
		uv_loop_init(&w->loop);
		w->target = o.conns / o.threads + (i < o.conns % o.threads);
		w->limit = o.count / o.threads + (i < o.count % o.threads);
	}
	if (o.threads == 1) {
		worker_run(&ws[0]);
	} else {
		for (int i = 0; i < o.threads; i++)
			uv_thread_create(&ws[i].th, worker_run, &ws[i]);
		for (int i = 0; i < o.threads; i++)
			uv_thread_join(&ws[i].th);
	}
	uint64_t t1 = now_ns();
	getrusage(RUSAGE_SELF, &ru1);

	/* merge */
	struct worker tot = {0};
	uint64_t last = 0;
	for (int i = 0; i < o.threads; i++) {
		struct worker *w = &ws[i];
		tot.msgs_ok += w->msgs_ok;
		tot.msgs_ok_total += w->msgs_ok_total;
		tot.msgs_failed += w->msgs_failed;
		tot.conns_ok += w->conns_ok;
		tot.conns_ok_total += w->conns_ok_total;
		tot.conns_failed += w->conns_failed;
		tot.conns_started += w->conns_started;
		tot.bytes_sent += w->bytes_sent;
		tot.held_end += w->held_end;
		tot.resumed += w->resumed;
		if (w->last_done > last)
			last = w->last_done;
		lat_merge(&tot.msg_lat, &w->msg_lat);
		lat_merge(&tot.setup_lat, &w->setup_lat);
		lat_merge(&tot.sess_lat, &w->sess_lat);
		for (int j = 0; j < w->fails.n; j++)
			fails_add(&tot.fails, w->fails.e[j].key, w->fails.e[j].n);
	}
	double elapsed = (double)(t1 - t0) / 1e9;
	double window;
	if (o.duration > 0)
		window = o.duration;
	else
		window = last > t0 ? (double)(last - t0) / 1e9 - o.warmup : elapsed;
	if (window <= 0)
		window = elapsed;
	double cpu_u = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
		       (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
	double cpu_s = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
		       (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;

	FILE *f = stdout;
	fprintf(f, "{");
	if (o.label) {
		fprintf(f, "\"label\":");
		json_str(f, o.label);
		fprintf(f, ",");
	}
	fprintf(f,
		"\"mode\":\"%s\",\"port\":%d,\"conns\":%d,\"per_conn\":%d,\"size\":%zu,"
		"\"pipelining\":%s,\"threads\":%d,\"elapsed_s\":%.3f,\"window_s\":%.3f,",
		o.idle > 0 ? (o.implicit_tls ? "idle-tls" : "idle-starttls")
			   : (o.implicit_tls ? "tls" : "starttls"),
		o.port, o.conns, o.per_conn, message_len, o.pipelining ? "true" : "false",
		o.threads, elapsed, window);
	fprintf(f, "\"tls\":");
	json_str(f, tls_desc);
	fprintf(f, ",\"tls_resumed\":%" PRIu64, tot.resumed);
	fprintf(f,
		",\"messages_ok\":%" PRIu64 ",\"messages_ok_total\":%" PRIu64
		",\"messages_failed\":%" PRIu64 ",\"msgs_per_s\":%.2f,"
		"\"conns_started\":%" PRIu64 ",\"conns_ok\":%" PRIu64 ",\"conns_ok_total\":%" PRIu64
		",\"conns_failed\":%" PRIu64 ",\"conns_per_s\":%.2f,\"bytes_sent\":%" PRIu64 ",",
		tot.msgs_ok, tot.msgs_ok_total, tot.msgs_failed,
		o.idle > 0 ? 0.0 : (double)tot.msgs_ok / window, tot.conns_started, tot.conns_ok,
		tot.conns_ok_total, tot.conns_failed,
		o.idle > 0 ? 0.0 : (double)tot.conns_ok / window, tot.bytes_sent);
	if (o.idle > 0)
		fprintf(f, "\"idle_target\":%d,\"idle_held\":%d,\"idle_hold_s\":%.1f,", o.conns,
			tot.held_end, o.idle);
	pct_json(f, "msg_latency_ms", &tot.msg_lat);
	fputc(',', f);
	pct_json(f, "setup_latency_ms", &tot.setup_lat);
	fputc(',', f);
	pct_json(f, "session_latency_ms", &tot.sess_lat);
	fprintf(f, ",\"failures\":{");
	for (int j = 0; j < tot.fails.n; j++) {
		if (j)
			fputc(',', f);
		json_str(f, tot.fails.e[j].key);
		fprintf(f, ":%" PRIu64, tot.fails.e[j].n);
	}
	fprintf(f, "},\"failures_total\":%" PRIu64, tot.fails.total);
	fprintf(f, ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_util\":%.3f}\n", cpu_u, cpu_s,
		(cpu_u + cpu_s) / elapsed);
	fflush(f);
	return tot.fails.total > 0 ? 1 : 0;
}
