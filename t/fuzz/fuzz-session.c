/* fuzz-session: a whole SMTP server session (src/smtp/server.c) over the
 * in-memory transport and fake backend of t/unit/server-fake.h.
 *
 * Input layout:
 *   byte 0  settings: bits 0-1 listener (0, 3 starttls; 1 implicit TLS;
 *           2 plain), bit 2 trusted (mynetworks), bit 3 newline NORMALIZE
 *           (else REJECT), bit 4 deferred backend, bit 5 small limits,
 *           bit 6 no 8BITMIME/SMTPUTF8/DSN downstream, bit 7 no AUTH backend
 *   byte 1  chunking: 0 feeds the session in one piece; otherwise chunk
 *           sizes 1..byte1 from a generator seeded with it
 *   byte 2  replies: 0 the fake's default replies (RCPT to "reject..." gets
 *           550 ...); otherwise a generator seeded with it picks each reply
 *           (successes, refusals, temporary failures, 421, multi-line)
 *   byte 3  events: bit 0 timeout at the end, bit 1 shutdown after chunk
 *           (byte3 >> 4), bit 2 the STARTTLS handshake fails, bit 3 in
 *           deferred mode feed the next chunk before answering
 *   rest    what the client sends
 * STARTTLS is followed by smtp_server_tls_done(); the session ends with
 * smtp_server_disconnected(), a late answer if one is pending, and free.
 *
 * Properties (abort() when broken):
 *   - backend->mail only when authenticated or trusted, and never before
 *     TLS on a starttls listener (docs/design.md invariants 3, 10);
 *   - AUTH reaches the backend only inside TLS (invariant 3);
 *   - backend calls follow the transaction: RCPT only inside MAIL, DATA only
 *     with an accepted RCPT, content and data_end only after 354 and before
 *     reset; no MAIL while one is open;
 *   - content at data_end is canonical (no bare CR/LF, invariant 7), its size
 *     is what data_end is told and within size_limit (RFC 1870);
 *   - no 2xx to the end of DATA unless it is the backend's data_end answer
 *     (invariant 2);
 *   - the input buffer is empty when the TLS handshake starts
 *     (CVE-2011-0411, invariant 6);
 *   - every reply line: 3 digits then ' ' or '-', CRLF, <= 512 octets, the
 *     same code on every line of a multi-line reply (RFC 5321 §4.2);
 *   - nothing written after io->close or after the disconnect. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "../unit/server-fake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	uint32_t chunk_rng, reply_rng;
	unsigned max_chunk;
	bool random_replies;
	bool tls_ok;        /* TLS is up (implicit, or STARTTLS finished) */
	bool txn_open;      /* MAIL accepted, no reset / data_end answer since */
	unsigned rcpt_ok;   /* accepted RCPTs in the open transaction */
	size_t content_mark; /* f->content length when content opened */
	unsigned data_end_ok; /* data_end answered 2xx */
};

static uint32_t fz_next(uint32_t *r)
{
	*r = *r * 1103515245u + 12345u;
	return (*r >> 16) & 0x7fff;
}

static bool fz_canonical(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

static const struct fake_reply fz_mail_replies[] = {
	{250, "2.1.0", "Ok"},
	{550, "5.7.1", "Sender address rejected: not owned by user"},
	{451, "4.3.0", "Temporary lookup failure"},
	{553, "5.7.1", "first line\nsecond line"},
	{421, "4.3.0", "Service not available"},
};
static const struct fake_reply fz_rcpt_replies[] = {
	{250, "2.1.5", "Ok"},
	{550, "5.1.1", "User unknown"},
	{450, "4.2.0", "Try later"},
	{452, "4.5.3", "Too many recipients"},
	{421, "4.4.2", "Downstream lost"},
};
static const struct fake_reply fz_data_replies[] = {
	{354, NULL, "End data with <CR><LF>.<CR><LF>"},
	{451, "4.3.0", "Temporary failure"},
	{554, "5.5.1", "Error: no valid recipients"},
};
static const struct fake_reply fz_data_end_replies[] = {
	{250, "2.0.0", "Ok: queued as D"},
	{451, "4.4.1", "Downstream unreachable"},
	{554, "5.7.1", "Message rejected\nby policy"},
	{552, "5.3.4", "Message too big"},
	{421, "4.4.2", "Downstream lost"},
};
static const struct fake_reply fz_auth_replies[] = {
	{235, "2.7.0", "Authentication successful"},
	{334, NULL, "VXNlcm5hbWU6"},
	{535, "5.7.8", "Error: authentication failed"},
	{454, "4.7.0", "Temporary authentication failure"},
	{501, "5.5.2", "Invalid base64"},
};

#define FZ_N(a) (sizeof(a) / sizeof((a)[0]))

/* Half the time the first (successful) reply, else any. */
static struct fake_reply fz_pick(struct fz *z, const struct fake_reply *t, size_t n)
{
	uint32_t v = fz_next(&z->reply_rng);
	if (v & 1)
		return t[0];
	return t[(v >> 1) % n];
}

/* Chooses the reply and keeps the model of the backend's transaction. */
static struct fake_reply fz_choose(struct fake *f, enum fake_call c, const char *arg)
{
	struct fz *z = f->user;
	struct fake_reply r;
	if (!z->random_replies) {
		r = fake_reply_default(c, arg);
		if (c == FAKE_DATA_END && r.code == 250)
			r.text = "Ok: queued as D";
	} else {
		switch (c) {
		case FAKE_MAIL:
			r = fz_pick(z, fz_mail_replies, FZ_N(fz_mail_replies));
			break;
		case FAKE_RCPT:
			r = fz_pick(z, fz_rcpt_replies, FZ_N(fz_rcpt_replies));
			break;
		case FAKE_DATA:
			r = fz_pick(z, fz_data_replies, FZ_N(fz_data_replies));
			break;
		case FAKE_DATA_END:
			r = fz_pick(z, fz_data_end_replies, FZ_N(fz_data_end_replies));
			break;
		default:
			r = fz_pick(z, fz_auth_replies, FZ_N(fz_auth_replies));
			break;
		}
	}
	bool ok = r.code >= 200 && r.code < 300;
	switch (c) {
	case FAKE_MAIL:
		z->txn_open = ok;
		z->rcpt_ok = 0;
		break;
	case FAKE_RCPT:
		if (ok)
			z->rcpt_ok++;
		break;
	case FAKE_DATA:
		if (r.code == 354)
			z->content_mark = buf_len(&f->content);
		break;
	case FAKE_DATA_END:
		/* The transaction ends with the backend's verdict. */
		z->txn_open = false;
		z->rcpt_ok = 0;
		if (ok)
			z->data_end_ok++;
		break;
	default:
		break;
	}
	return r;
}

/* Runs when the server calls the backend (before the answer). */
static void fz_on_call(struct fake *f, enum fake_call c)
{
	struct fz *z = f->user;
	switch (c) {
	case FAKE_MAIL:
		/* Never an open relay (invariants 3 and 10). */
		if (smtp_server_user(f->s) == NULL && !f->set.relay_trusted)
			abort();
		if (f->set.starttls_offered && !z->tls_ok)
			abort();
		if (z->txn_open)
			abort(); /* nested MAIL reached the backend */
		break;
	case FAKE_RCPT:
		if (!z->txn_open)
			abort();
		break;
	case FAKE_DATA:
		if (!z->txn_open || z->rcpt_ok == 0 || f->content_open)
			abort();
		break;
	case FAKE_AUTH:
	case FAKE_AUTH_RESPONSE:
		if (!z->tls_ok)
			abort(); /* AUTH outside TLS (invariant 3) */
		break;
	default:
		break;
	}
}

static void fz_content(void *ctx, const uint8_t *p, size_t n)
{
	struct fake *f = ctx;
	if (!f->content_open || n == 0)
		abort(); /* content without an accepted DATA/BDAT, or after reset */
	fake_be_content(ctx, p, n);
}

static void fz_data_end(void *ctx, const struct smtp_server_data_info *info)
{
	struct fake *f = ctx;
	struct fz *z = f->user;
	if (!f->content_open || !z->txn_open)
		abort();
	size_t n = buf_len(&f->content) - z->content_mark;
	if (info->size != n || info->size > f->set.size_limit)
		abort(); /* RFC 1870 §5 size, and never more than the limit */
	if (n > 0 && !fz_canonical(buf_data(&f->content) + z->content_mark, n))
		abort(); /* a bare CR or LF would go downstream (invariant 7) */
	fake_be_data_end(ctx, info);
}

static void fz_reset(void *ctx)
{
	struct fake *f = ctx;
	struct fz *z = f->user;
	z->txn_open = false;
	z->rcpt_ok = 0;
	fake_be_reset(ctx);
}

/* Answers pending calls and finishes requested handshakes until the server
 * waits for the client again. */
static void fz_settle(struct fake *f, bool tls_fails)
{
	struct fz *z = f->user;
	for (int guard = 0; guard < 100000; guard++) {
		if (f->tls_requested) {
			f->tls_requested = false;
			/* The checkpoint: no plaintext may survive (CVE-2011-0411). */
			if (buf_len(&f->in) != 0)
				abort();
			z->tls_ok = !tls_fails;
			smtp_server_tls_done(f->s, !tls_fails);
			continue;
		}
		if (f->pending != FAKE_NONE) {
			fake_complete(f);
			continue;
		}
		return;
	}
	abort(); /* the server keeps asking forever */
}

/* Checks every reply line, and that a 2xx to the end of DATA is the
 * backend's data_end verdict. */
static void fz_check_output(struct fake *f)
{
	struct fz *z = f->user;
	const uint8_t *p = buf_data(&f->out);
	size_t n = buf_len(&f->out);
	size_t i = 0;
	bool after_354 = false;
	char code[3] = {0, 0, 0};
	bool in_multi = false;
	unsigned queued = 0;
	while (i < n) {
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		if (lf == NULL)
			abort(); /* a reply line without CRLF */
		size_t e = (size_t)(lf - p);
		if (e == i || p[e - 1] != '\r')
			abort();
		const char *l = (const char *)p + i;
		size_t len = e - 1 - i;
		if (!fake_line_well_formed(l, len))
			abort();
		if (in_multi && memcmp(code, l, 3) != 0)
			abort(); /* multi-line reply changes its code (RFC 5321 §4.2.1) */
		memcpy(code, l, 3);
		in_multi = l[3] == '-';
		if (!in_multi) {
			bool queued_line = len >= 15 && memmem(l, len, "queued as D", 11) != NULL;
			if (queued_line)
				queued++;
			if (after_354 && l[0] == '2' && !queued_line)
				abort(); /* a 250 for the end of DATA nobody downstream gave */
			after_354 = memcmp(l, "354", 3) == 0;
		}
		i = e + 1;
	}
	if (in_multi)
		abort(); /* output ends inside a multi-line reply */
	if (queued > z->data_end_ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	static bool log_quiet;
	if (!log_quiet) {
		log_open(LOG_TARGET_STDERR, 0, LOG_ERR);
		log_quiet = true;
	}
	uint8_t sb = data[0], cb = data[1], rb = data[2], eb = data[3];

	struct smtp_server_settings set = fake_settings();
	unsigned kind = sb & 3;
	set.starttls_offered = kind == 0 || kind == 3;
	set.tls_active = kind == 1;
	set.relay_trusted = (sb & 4) != 0;
	set.newline_mode = (sb & 8) ? SMTP_NEWLINE_NORMALIZE : SMTP_NEWLINE_REJECT;
	if (sb & 32) {
		set.size_limit = 300;
		set.line_limit = 100;
		set.recipient_limit = 3;
		set.error_limit = 10;
	} else {
		set.size_limit = 20000;
		set.error_limit = 50;
	}
	if (sb & 64)
		set.eightbitmime = set.smtputf8 = set.dsn = false;

	struct fz z = {0};
	z.chunk_rng = cb;
	z.max_chunk = cb;
	z.reply_rng = rb;
	z.random_replies = rb != 0;
	z.tls_ok = set.tls_active;

	struct fake f;
	fake_init(&f, &set);
	f.deferred = (sb & 16) != 0;
	f.user = &z;
	f.choose = fz_choose;
	f.on_call = fz_on_call;
	f.be.content = fz_content;
	f.be.data_end = fz_data_end;
	f.be.reset = fz_reset;
	if (sb & 128) {
		f.be.auth = NULL;
		f.be.auth_response = NULL;
	}
	fake_start(&f);

	bool tls_fails = (eb & 4) != 0;
	bool feed_first = (eb & 8) != 0;
	int shutdown_at = (eb & 2) ? (eb >> 4) : -1;
	const uint8_t *in = data + 4;
	size_t n = size - 4, off = 0;
	int idx = 0;
	while (off < n) {
		size_t k = n - off;
		if (z.max_chunk > 0) {
			size_t c = 1 + fz_next(&z.chunk_rng) % z.max_chunk;
			if (c < k)
				k = c;
		}
		fake_feed_mem(&f, in + off, k, false);
		off += k;
		if (f.tls_requested && buf_len(&f.in) != 0)
			abort(); /* plaintext kept past STARTTLS (CVE-2011-0411) */
		/* Deferred: sometimes let the next chunk arrive while a call is
		   still pending (pipelining stalls, RFC 2920). */
		if (!(feed_first && f.deferred && (fz_next(&z.reply_rng) & 1)) || f.tls_requested)
			fz_settle(&f, tls_fails);
		if (idx++ == shutdown_at) {
			smtp_server_shutdown(f.s);
			fz_settle(&f, tls_fails);
		}
		if (f.closed)
			break;
	}
	fz_settle(&f, tls_fails);
	if (eb & 1)
		smtp_server_timeout(f.s);

	char counters[256];
	smtp_server_counters(f.s, counters, sizeof(counters));
	(void)smtp_server_busy(f.s);

	size_t before = buf_len(&f.out);
	smtp_server_disconnected(f.s);
	/* A late answer to a call pending at the disconnect goes nowhere. */
	if (f.pending != FAKE_NONE)
		fake_complete(&f);
	fake_feed(&f, "NOOP\r\n");
	if (buf_len(&f.out) != before)
		abort(); /* written after the disconnect */
	if (f.n_writes_after_close != 0)
		abort();
	if (f.n_close > 1)
		abort();
	fz_check_output(&f);
	fake_free(&f);
	return 0;
}
