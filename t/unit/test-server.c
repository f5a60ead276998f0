/* Unit tests for smtp/server: the SMTP submission state machine, run over the
 * in-memory transport and the fake backend of server-fake.h.
 *
 * Each test names the rule it defends: RFC 5321 (sequencing, limits), RFC
 * 3207 and CVE-2011-0411 (STARTTLS checkpoint), RFC 4954 (AUTH only inside
 * TLS), RFC 2920 (pipelining: replies in order, stall on pending answers),
 * RFC 1870 / 6152 / 6531 / 3461 (parameters), RFC 3030 (BDAT), RFC 2034 §4
 * (enhanced status codes), CVE-2023-51764 (SMTP smuggling) and the docs/design.md
 * §3 invariants (3: no AUTH without TLS, 2: 250 only after the backend's
 * verdict, 5: bounded input, 6: STARTTLS checkpoint, 7: only CRLF.CRLF ends
 * DATA, 10: never an open relay).
 *
 * Checks marked "# TODO" (todo_ok, todo_str) document behaviour server.c
 * gets wrong at the time of writing; they assert the correct behaviour. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "server-fake.h"
#include "smtp/server.h"
#include "tap.h"

#define HOST "mail.test.example"
#define EHLO "EHLO client.example\r\n"

/* ---- helpers ---- */

static bool ok_named(bool cond, const char *name) { return ok(cond, "%s", name); }
static bool is_str_named(const char *got, const char *want, const char *name)
{
	return is_str(got, want, "%s", name);
}


/* Codes of the complete replies in out, multi-line replies counted once:
 * "250 354 250". Lines that are not replies show as "?". */
static const char *codes(const char *out)
{
	static char ring[4][4096];
	static int next;
	char *r = ring[next++ & 3];
	size_t o = 0;
	r[0] = '\0';
	const char *p = out;
	while (*p != '\0') {
		const char *e = strstr(p, "\r\n");
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
		bool cont = len > 3 && p[3] == '-';
		if (!cont && o + 5 < sizeof(ring[0])) {
			if (len >= 3)
				o += (size_t)snprintf(r + o, sizeof(ring[0]) - o, "%s%.3s", o ? " " : "", p);
			else
				o += (size_t)snprintf(r + o, sizeof(ring[0]) - o, "%s?", o ? " " : "");
		}
		if (e == NULL)
			break;
		p = e + 2;
	}
	return r;
}

/* The line of out that starts with prefix (up to CRLF), or NULL. */
static const char *line_with(const char *out, const char *prefix)
{
	static char line[1024];
	size_t pl = strlen(prefix);
	const char *p = out;
	while (*p != '\0') {
		const char *e = strstr(p, "\r\n");
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
		if (len >= pl && memcmp(p, prefix, pl) == 0) {
			snprintf(line, sizeof(line), "%.*s", (int)len, p);
			return line;
		}
		if (e == NULL)
			break;
		p = e + 2;
	}
	return NULL;
}

static bool has_line(const char *out, const char *exact)
{
	const char *l = line_with(out, exact);
	return l != NULL && strcmp(l, exact) == 0;
}

/* Feeds str and returns only the output it produced. */
static const char *step(struct fake *f, const char *str)
{
	fake_clear_out(f);
	fake_feed(f, str);
	return fake_out(f);
}

/* An implicit-TLS listener (port 465) with a trusted client: MAIL is
 * allowed without AUTH; the session has said EHLO. */
static struct smtp_server_settings set_ready(void)
{
	struct smtp_server_settings set = fake_settings();
	set.starttls_offered = false;
	set.tls_active = true;
	set.relay_trusted = true;
	return set;
}

static void ready(struct fake *f, const struct smtp_server_settings *set)
{
	struct smtp_server_settings def = set_ready();
	fake_new(f, set != NULL ? set : &def);
	fake_feed(f, EHLO);
	fake_clear_out(f);
}

/* An enhanced status code after the reply code, of the same class
 * (RFC 2034 §4, RFC 3463 §2: class "." 1*3digit "." 1*3digit). */
static bool enh_ok(const char *l, size_t len)
{
	if (len < 9 || (l[3] != ' ' && l[3] != '-'))
		return false;
	size_t i = 4;
	if (l[i] != l[0] || l[i + 1] != '.')
		return false;
	i += 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < len && l[i] >= '0' && l[i] <= '9' && d < 4)
			i++, d++;
		if (d == 0 || d > 3)
			return false;
		if (part == 0) {
			if (i >= len || l[i] != '.')
				return false;
			i++;
		}
	}
	return i == len || l[i] == ' ';
}

struct enh_check {
	unsigned lines, bad;
	char first_bad[200];
};

static void enh_line(const char *l, size_t len, void *arg)
{
	struct enh_check *c = arg;
	c->lines++;
	/* 334 and 354 are intermediate replies without an enhanced code. */
	if (len >= 3 && (memcmp(l, "334", 3) == 0 || memcmp(l, "354", 3) == 0))
		return;
	if (!enh_ok(l, len)) {
		if (c->bad++ == 0)
			snprintf(c->first_bad, sizeof(c->first_bad), "%.*s", (int)len, l);
	}
}

struct wf_check {
	unsigned lines, bad;
};

static void wf_line(const char *l, size_t len, void *arg)
{
	struct wf_check *c = arg;
	c->lines++;
	if (!fake_line_well_formed(l, len))
		c->bad++;
}

/* All output is CRLF-terminated, well-formed reply lines. */
static bool output_well_formed(struct fake *f)
{
	struct wf_check c = {0, 0};
	bool crlf = fake_each_line(buf_data(&f->out), buf_len(&f->out), wf_line, &c);
	return crlf && c.bad == 0;
}

/* Content has no CR or LF outside CRLF pairs. */
static bool canonical(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

static bool mem_has(const struct buf *b, const char *needle)
{
	size_t nl = strlen(needle);
	const uint8_t *p = buf_data(b);
	size_t n = buf_len(b);
	for (size_t i = 0; i + nl <= n; i++)
		if (memcmp(p + i, needle, nl) == 0)
			return true;
	return false;
}

/* ---- greeting, EHLO, AUTH before TLS (RFC 5321 §4.2, RFC 2034 §4,
 * RFC 3207, RFC 4954, invariant 3) ---- */

static void test_greeting_and_ehlo(void)
{
	struct fake f;
	fake_new(&f, NULL);
	const char *out = fake_out(&f);
	ok(strncmp(out, "220 " HOST " ESMTP", strlen("220 " HOST " ESMTP")) == 0,
	   "greeting is 220 <host> ESMTP (RFC 5321 §4.3.1)");
	ok(!enh_ok(out, strcspn(out, "\r")), "greeting carries no enhanced status code (RFC 2034 §4)");
	is_str(codes(out), "220", "greeting is one reply line, CRLF-terminated");

	out = step(&f, EHLO);
	is_str(codes(out), "250", "EHLO: one multi-line 250 reply (RFC 5321 §4.1.1.1)");
	ok(strncmp(out, "250-" HOST "\r\n", strlen(HOST) + 6) == 0, "EHLO reply starts with our hostname");
	ok(has_line(out, "250-STARTTLS"), "STARTTLS offered on a starttls listener (RFC 3207 §2)");
	ok(strstr(out, "AUTH") == NULL,
	   "no AUTH advertised before TLS even with an auth backend (invariant 3, RFC 4954 §4)");
	ok(has_line(out, "250-PIPELINING") && has_line(out, "250-ENHANCEDSTATUSCODES") &&
	       has_line(out, "250-SIZE 10485760") && has_line(out, "250-8BITMIME") &&
	       has_line(out, "250-DSN") && has_line(out, "250-SMTPUTF8"),
	   "EHLO lists PIPELINING, SIZE <limit>, ENHANCEDSTATUSCODES, 8BITMIME, DSN, SMTPUTF8 (RFC 6409 §7)");
	ok(strstr(out, "ETRN") == NULL, "ETRN never advertised on submission (RFC 6409 §7)");

	out = step(&f, "AUTH PLAIN AGFAYg==\r\n");
	ok(strncmp(out, "530 5.7.0 Must issue a STARTTLS command first", 45) == 0,
	   "AUTH before STARTTLS on a starttls listener refused with 530 5.7.0 (RFC 3207 §4, invariant 3)");
	is_int(f.n_auth, 0, "backend->auth not called before TLS (invariant 3)");

	step(&f, "STARTTLS\r\n");
	is_int(f.n_starttls, 1, "STARTTLS starts the handshake");
	smtp_server_tls_done(f.s, true);
	out = step(&f, EHLO);
	ok(strstr(out, "STARTTLS") == NULL, "STARTTLS not offered after TLS (RFC 3207 §4.2)");
	ok(has_line(out, "250-AUTH PLAIN LOGIN"), "AUTH PLAIN LOGIN offered inside TLS (RFC 4954 §3)");

	out = step(&f, "AUTH PLAIN AGFAYg==\r\n");
	ok(strncmp(out, "235 2.7.0", 9) == 0 && f.n_auth == 1, "AUTH accepted inside TLS");
	is_str(smtp_server_user(f.s), "user@example.org", "the user is known after AUTH");
	out = step(&f, EHLO);
	ok(strstr(out, "AUTH") == NULL, "AUTH not offered once authenticated");
	out = step(&f, "AUTH PLAIN AGFAYg==\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0 && f.n_auth == 1,
	   "a second AUTH gets 503 (RFC 4954 §4)");
	fake_free(&f);

	/* A plain listener (no STARTTLS, no TLS) with an auth backend. */
	struct smtp_server_settings set = fake_settings();
	set.starttls_offered = false;
	fake_new(&f, &set);
	out = step(&f, EHLO);
	ok(strstr(out, "AUTH") == NULL && strstr(out, "STARTTLS") == NULL,
	   "plain listener: neither AUTH nor STARTTLS advertised (invariant 3)");
	out = step(&f, "AUTH PLAIN AGFAYg==\r\n");
	ok((strncmp(out, "538 5.7.11", 10) == 0 || strncmp(out, "503 5.5.1", 9) == 0),
	   "plain listener: AUTH refused with 538 5.7.11 (RFC 4954 §6) or 503 (invariant 3)");
	is_int(f.n_auth, 0, "plain listener: backend->auth never called without TLS (invariant 3)");
	fake_free(&f);

	/* Implicit TLS without an auth backend: no AUTH advertised. */
	set = set_ready();
	set.relay_trusted = false;
	fake_init(&f, &set);
	f.be.auth = NULL;
	f.be.auth_response = NULL;
	fake_start(&f);
	out = step(&f, EHLO);
	ok(strstr(out, "AUTH") == NULL, "no auth backend: AUTH not advertised even inside TLS");
	out = step(&f, "AUTH PLAIN AGFAYg==\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0, "no auth backend: AUTH gets 503");
	fake_free(&f);

	/* HELO gets a one-line reply, not the EHLO list (RFC 5321 §3.2). */
	fake_new(&f, NULL);
	out = step(&f, "HELO client.example\r\n");
	is_str(out, "250 " HOST "\r\n", "HELO gets a one-line 250 (RFC 5321 §4.1.1.1)");
	ok(!smtp_server_esmtp(f.s), "HELO session is not ESMTP");
	is_str(smtp_server_helo(f.s), "client.example", "HELO name kept for Received:");
	out = step(&f, "EHLO\r\n");
	ok(strncmp(out, "501 5.5.4", 9) == 0, "EHLO without a name gets 501 (RFC 5321 §4.1.1.1)");
	fake_free(&f);
}

/* ---- the STARTTLS checkpoint (invariant 6, CVE-2011-0411, RFC 3207) ---- */

static void test_starttls_checkpoint(void)
{
	struct fake f;
	fake_new(&f, NULL);
	fake_clear_out(&f);
	fake_feed(&f, "EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	const char *out = fake_out(&f);
	is_str(codes(out), "250 220",
	       "STARTTLS injection: only the EHLO reply and the 220 (CVE-2011-0411)");
	size_t ol = strlen(out);
	const char *tail = "\r\n220 2.0.0 Ready to start TLS\r\n";
	ok(ol > strlen(tail) && strcmp(out + ol - strlen(tail), tail) == 0,
	   "the last reply is exactly 220 2.0.0 Ready to start TLS (RFC 3207 §4)");
	is_int(f.n_starttls, 1, "io->starttls called once");
	is_int((long long)buf_len(&f.in), 0,
	       "plaintext after STARTTLS discarded from the input buffer (invariant 6)");
	is_int(f.n_mail + f.n_rcpt, 0, "injected MAIL/RCPT never reach the backend (CVE-2011-0411)");
	ok(smtp_server_busy(f.s), "server is busy while the handshake runs");

	fake_clear_out(&f);
	smtp_server_tls_done(f.s, true);
	is_str(fake_out(&f), "", "nothing is answered after the handshake (the injection is gone)");
	is_int(f.n_mail, 0, "backend->mail still not called after the handshake");
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0,
	   "after TLS, MAIL without a new EHLO gets 503 5.5.1 (RFC 3207 §4.2, invariant 6)");
	is_str(smtp_server_helo(f.s), "", "the pre-TLS EHLO name is forgotten (RFC 3207 §4.2)");
	step(&f, EHLO);
	out = step(&f, "STARTTLS\r\n");
	ok(strncmp(out, "554 5.5.1", 9) == 0, "second STARTTLS after TLS: 554 5.5.1 (Postfix)");
	is_int(f.n_starttls, 1, "no second handshake");
	fake_free(&f);

	fake_new(&f, NULL);
	step(&f, EHLO);
	out = step(&f, "STARTTLS now\r\n");
	ok(strncmp(out, "501 ", 4) == 0 && enh_ok(out, strcspn(out, "\r")),
	   "STARTTLS with arguments: 501 (RFC 3207 §4)");
	is_int(f.n_starttls, 0, "no handshake after a refused STARTTLS");
	fake_free(&f);

	struct smtp_server_settings set = fake_settings();
	set.starttls_offered = false;
	fake_new(&f, &set);
	step(&f, EHLO);
	out = step(&f, "STARTTLS\r\n");
	ok(strncmp(out, "502 ", 4) == 0 && enh_ok(out, strcspn(out, "\r")),
	   "STARTTLS on a plain listener: 502 (RFC 5321 §4.2.4)");
	is_int(f.n_starttls, 0, "plain listener: no handshake");
	fake_free(&f);

	/* A failed handshake ends the session: no plaintext fallback
	 * (reference §5 "Handshake failure → close the connection"). */
	fake_new(&f, NULL);
	step(&f, EHLO);
	step(&f, "STARTTLS\r\n");
	fake_clear_out(&f);
	smtp_server_tls_done(f.s, false);
	fake_feed(&f, "NOOP\r\n");
	is_str(fake_out(&f), "", "failed handshake: nothing more is answered in plaintext");
	fake_free(&f);
}

/* ---- the gate: TLS and authentication before MAIL (RFC 3207 §4,
 * RFC 4954 §6, RFC 6409 §4.3, invariants 3 and 10) ---- */

static void test_gate(void)
{
	struct fake f;
	fake_new(&f, NULL);
	step(&f, EHLO);
	const char *out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	is_str(out, "530 5.7.0 Must issue a STARTTLS command first\r\n",
	       "starttls listener before TLS: MAIL gets 530 5.7.0 (RFC 3207 §4)");
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	ok(strncmp(out, "530 5.7.0", 9) == 0 || strncmp(out, "503 5.5.1", 9) == 0,
	   "starttls listener before TLS: RCPT refused");
	out = step(&f, "NOOP\r\n");
	ok(strncmp(out, "250 2.0.0", 9) == 0, "NOOP allowed before TLS (RFC 3207 §4)");
	is_int(f.n_mail + f.n_rcpt, 0, "no backend call before TLS");

	step(&f, "STARTTLS\r\n");
	smtp_server_tls_done(f.s, true);
	step(&f, EHLO);
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	is_str(out, "530 5.7.0 Authentication required\r\n",
	       "TLS, not trusted, not authenticated: MAIL gets 530 5.7.0 (RFC 4954 §6, invariant 10)");
	is_int(f.n_mail, 0, "backend->mail not called without AUTH (invariant 10)");
	out = step(&f, "RCPT TO:<c@d.example>\r\nDATA\r\nBDAT 3 LAST\r\nabc");
	is_int(f.n_rcpt + f.n_data + f.n_data_end, 0,
	       "RCPT/DATA/BDAT without MAIL never reach the backend (invariant 10)");
	ok(strncmp(codes(out), "503 503 503", 11) == 0, "RCPT, DATA, BDAT without MAIL: 503s");

	smtp_server_set_user(f.s, "user@example.org");
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 2.1.0", 9) == 0 && f.n_mail == 1,
	   "after smtp_server_set_user() MAIL goes to the backend");
	fake_free(&f);

	/* Trusted (mynetworks on a trusted listener): MAIL without AUTH. */
	struct smtp_server_settings set = fake_settings();
	set.relay_trusted = true;
	fake_new(&f, &set);
	step(&f, EHLO);
	step(&f, "STARTTLS\r\n");
	smtp_server_tls_done(f.s, true);
	step(&f, EHLO);
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0 && f.n_mail == 1,
	   "relay_trusted: MAIL goes to the backend without AUTH (invariant 3 exception)");
	fake_free(&f);

	/* Implicit TLS, untrusted: still needs AUTH. */
	set = set_ready();
	set.relay_trusted = false;
	fake_new(&f, &set);
	step(&f, EHLO);
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	is_str(out, "530 5.7.0 Authentication required\r\n",
	       "implicit TLS, untrusted: MAIL needs AUTH (invariant 10)");
	is_int(f.n_mail, 0, "implicit TLS, untrusted: backend->mail not called");
	/* A failed AUTH does not open the gate. */
	out = step(&f, "AUTH LOGIN\r\n");
	ok(strncmp(out, "334 ", 4) == 0, "AUTH LOGIN: 334 challenge (RFC 4954 §4)");
	out = step(&f, "bad\r\n");
	ok(strncmp(out, "535 5.7.8", 9) == 0, "bad credentials: 535 5.7.8 (RFC 4954 §6)");
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "530 5.7.0", 9) == 0 && f.n_mail == 0,
	   "after a failed AUTH MAIL is still refused (invariant 10)");
	out = step(&f, "AUTH LOGIN\r\n*\r\n");
	ok(strcmp(codes(out), "334 501") == 0, "AUTH cancelled with * gets 501 (RFC 4954 §4)");
	out = step(&f, "NOOP\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "after the cancelled AUTH, commands are commands again");
	fake_free(&f);

	/* AUTH pipelined with MAIL (RFC 4954 §4): the MAIL is evaluated only
	 * after the AUTH result is known. */
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	step(&f, EHLO);
	out = step(&f, "AUTH PLAIN AGFAYg==\r\nMAIL FROM:<a@b.example>\r\n");
	is_str(out, "", "AUTH pending: no reply yet (RFC 2920 §3.2)");
	is_int(f.n_mail, 0, "MAIL after a pending AUTH waits (RFC 4954 §4)");
	fake_clear_out(&f);
	fake_complete_with(&f, 535, "5.7.8", "Error: authentication failed");
	out = fake_out(&f);
	is_str(codes(out), "535 530", "failed AUTH then the pipelined MAIL gets 530 (invariant 10)");
	is_int(f.n_mail, 0, "backend->mail not called after a failed pipelined AUTH");
	fake_clear_out(&f);
	fake_feed(&f, "AUTH PLAIN AGFAYg==\r\nMAIL FROM:<a@b.example>\r\n");
	fake_complete(&f); /* 235, user set */
	is_int(f.n_mail, 1, "successful AUTH: the pipelined MAIL reaches the backend");
	fake_complete(&f);
	is_str(codes(fake_out(&f)), "235 250", "replies in order: 235 then 250");
	fake_free(&f);
}

/* ---- sequencing and per-command replies (RFC 5321 §3.3, §4.1.1, §4.1.4,
 * §4.3.2) ---- */

static void test_sequencing(void)
{
	struct fake f;
	struct smtp_server_settings set = set_ready();
	fake_new(&f, &set);
	const char *out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0, "MAIL before EHLO: 503 (RFC 5321 §4.1.1.1)");
	is_int(f.n_mail, 0, "MAIL before EHLO not passed to the backend");
	step(&f, EHLO);
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0, "RCPT before MAIL: 503 (RFC 5321 §3.3)");
	out = step(&f, "DATA\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0, "DATA before MAIL: 503 (RFC 5321 §3.3)");
	is_int(f.n_rcpt + f.n_data, 0, "nothing reached the backend");

	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "MAIL accepted");
	out = step(&f, "DATA\r\n");
	ok(strncmp(out, "554 5.5.1", 9) == 0, "DATA with MAIL but no RCPT: 554 5.5.1 (Postfix)");
	out = step(&f, "MAIL FROM:<x@b.example>\r\n");
	ok(strncmp(out, "503 5.5.1", 9) == 0, "nested MAIL: 503 (RFC 5321 §4.1.4)");
	is_int(f.n_mail, 1, "nested MAIL not passed to the backend");
	out = step(&f, "RCPT TO:<reject@d.example>\r\n");
	ok(strncmp(out, "550 5.1.1", 9) == 0, "refused RCPT: the backend's 550 5.1.1 passed on");
	out = step(&f, "DATA\r\n");
	ok(strncmp(out, "554 5.5.1", 9) == 0, "DATA with only refused RCPTs: 554 5.5.1");
	is_int(f.n_data, 0, "backend->data not called without an accepted RCPT");

	out = step(&f, "DATA x\r\n");
	ok(strncmp(out, "501 ", 4) == 0 && enh_ok(out, strcspn(out, "\r")),
	   "DATA with arguments: 501 (RFC 5321 §4.1.1.4)");
	out = step(&f, "RSET x\r\n");
	ok(strncmp(out, "501 ", 4) == 0, "RSET with arguments: 501 (RFC 5321 §4.1.1.5)");
	unsigned resets = f.n_reset;
	out = step(&f, "RSET\r\n");
	ok(strncmp(out, "250 2.0.0", 9) == 0, "RSET: 250 (RFC 5321 §4.1.1.5)");
	is_int(f.n_reset, resets + 1, "RSET with an open transaction: backend->reset (invariant 2)");
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	ok(strncmp(out, "503 ", 4) == 0, "after RSET the transaction is gone: RCPT gets 503");
	out = step(&f, "RSET\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "RSET when idle: 250 too");
	out = step(&f, "NOOP\r\n");
	is_str(out, "250 2.0.0 Ok\r\n", "NOOP: 250 (RFC 5321 §4.1.1.9)");
	out = step(&f, "NOOP with args\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "NOOP ignores its arguments (RFC 5321 §4.1.1.9)");
	out = step(&f, "VRFY postmaster\r\n");
	ok(strncmp(out, "252 2.", 6) == 0, "VRFY: 252, nothing disclosed (RFC 5321 §3.5.3)");
	out = step(&f, "EXPN staff\r\n");
	ok(strncmp(out, "502 5.", 6) == 0, "EXPN: 502 (RFC 5321 §3.5.3)");
	out = step(&f, "ETRN example.org\r\n");
	ok(strncmp(out, "502 5.", 6) == 0, "ETRN: 502 (RFC 6409 §7 MUST NOT)");
	out = step(&f, "XYZZY\r\n");
	ok(strncmp(out, "500 5.5.2", 9) == 0, "unknown command: 500 5.5.2 (RFC 5321 §4.2.4)");
	out = step(&f, "MAILX FROM:<a@b.example>\r\n");
	ok(strncmp(out, "500 5.5.2", 9) == 0, "MAILX is not MAIL: 500");
	out = step(&f, "mail from:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "verbs are case-insensitive (RFC 5321 §2.4)");
	out = step(&f, "HELO client.example\r\n");
	is_str(out, "250 " HOST "\r\n", "HELO later: one-line 250 (RFC 5321 §3.2)");
	is_int(f.n_reset, resets + 2, "HELO/EHLO later in the session is an implicit RSET (RFC 5321 §4.1.4)");
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	ok(strncmp(out, "503 ", 4) == 0, "after the implicit RSET RCPT gets 503");
	out = step(&f, "QUIT now\r\n");
	ok(strncmp(out, "501 ", 4) == 0 && f.n_close == 0, "QUIT with arguments: 501, still open");
	out = step(&f, "QUIT\r\n");
	ok(strncmp(out, "221 2.0.0", 9) == 0, "QUIT: 221 (RFC 5321 §4.1.1.10)");
	is_int(f.n_close, 1, "QUIT: io->close");
	out = step(&f, "NOOP\r\n");
	is_str(out, "", "nothing answered after QUIT");
	is_int(f.n_writes_after_close, 0, "nothing written after io->close");
	fake_free(&f);

	/* QUIT inside a transaction aborts it downstream (invariant 2). */
	ready(&f, NULL);
	fake_feed(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	resets = f.n_reset;
	out = step(&f, "QUIT\r\n");
	ok(strncmp(out, "221 ", 4) == 0 && f.n_reset == resets + 1,
	   "QUIT inside a transaction: backend->reset, no final dot (invariant 2)");
	fake_free(&f);
}

/* ---- MAIL/RCPT parameters (RFC 1870, RFC 6152, RFC 6531, RFC 3461,
 * RFC 5321 §4.1.1.11, §4.5.3.1.10) ---- */

static void test_parameters(void)
{
	struct fake f;
	struct smtp_server_settings set = set_ready();
	set.size_limit = 1000;
	ready(&f, &set);
	const char *out = step(&f, "MAIL FROM:<a@b.example> SIZE=99999999999\r\n");
	ok(strncmp(out, "552 5.3.4", 9) == 0, "SIZE above the limit: 552 5.3.4 (RFC 1870 §6.1)");
	is_int(f.n_mail, 0, "oversized MAIL not passed to the backend");
	out = step(&f, "MAIL FROM:<a@b.example> SIZE=1000\r\n");
	ok(strncmp(out, "250 ", 4) == 0 && f.last_mail.size == 1000,
	   "SIZE equal to the limit accepted, passed to the backend");
	step(&f, "RSET\r\n");
	out = step(&f, "MAIL FROM:<a@b.example> FOO=BAR\r\n");
	ok(strncmp(out, "555 5.5.4", 9) == 0, "unknown MAIL parameter: 555 (RFC 5321 §4.1.1.11)");
	out = step(&f, "MAIL FROM:<a@b.example> SIZE=abc\r\n");
	ok(strncmp(out, "501 5.5.4", 9) == 0, "bad SIZE syntax: 501 5.5.4");
	/* Client bytes must not reach the reply raw (found by fuzz-session). */
	fake_clear_out(&f);
	fake_feed(&f, "MAIL FROM:<a@b.example> SIZE\xe3" "050\r\r\nMAIL FROM:<a@b.example> X\xff\x01Y=1\r\n");
	out = fake_out(&f);
	ok(strlen(codes(out)) == 7 && codes(out)[0] == '5' && codes(out)[4] == '5',
	   "parameters with CR/8-bit keywords: two 5xx replies (RFC 5321 §4.1.1.11)");
	ok_named(output_well_formed(&f),
		"a bad parameter keyword is not echoed raw: no bare CR or 8-bit byte in the reply "
		"(RFC 5321 §4.2 textstring)");
	out = step(&f, "MAIL FROM:<ü@b.example>\r\n");
	ok(strncmp(out, "550 5.6.7", 9) == 0, "UTF-8 sender without SMTPUTF8: 550 5.6.7 (RFC 6531 §3.5)");
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "MAIL accepted after the refused ones");
	out = step(&f, "RCPT TO:<ü@d.example>\r\n");
	ok(strncmp(out, "553 5.6.7", 9) == 0, "UTF-8 recipient without SMTPUTF8: 553 5.6.7 (RFC 6531 §3.5)");
	out = step(&f, "RCPT TO:<c@d.example> BAR=1\r\n");
	ok(strncmp(out, "555 5.5.4", 9) == 0, "unknown RCPT parameter: 555");
	out = step(&f, "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example\r\n");
	ok(strncmp(out, "250 ", 4) == 0 && strcmp(f.last_rcpt.notify, "SUCCESS,FAILURE") == 0,
	   "DSN parameters accepted when DSN is offered and passed on (RFC 3461 §4)");
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	is_int(f.n_rcpt, 2, "RCPT calls counted");
	step(&f, "RSET\r\n");
	out = step(&f, "MAIL FROM:<ü@b.example> SMTPUTF8\r\nRCPT TO:<ü@d.example>\r\n");
	is_str(codes(out), "250 250", "with SMTPUTF8 UTF-8 addresses are accepted (RFC 6531 §3.4)");
	ok(smtp_server_smtputf8(f.s), "the transaction is SMTPUTF8");
	fake_free(&f);

	set = set_ready();
	set.eightbitmime = false;
	set.smtputf8 = true;
	set.dsn = false;
	ready(&f, &set);
	out = step(&f, "MAIL FROM:<a@b.example> BODY=8BITMIME\r\n");
	ok(strncmp(out, "555 ", 4) == 0, "BODY=8BITMIME when not offered: 555 (RFC 6152, RFC 5321 §4.1.1.11)");
	out = step(&f, "MAIL FROM:<a@b.example> SMTPUTF8\r\n");
	ok(strncmp(out, "555 ", 4) == 0, "SMTPUTF8 not offered without 8BITMIME: 555 (RFC 6531 §3.1)");
	out = step(&f, "MAIL FROM:<a@b.example> RET=HDRS\r\n");
	ok(strncmp(out, "555 ", 4) == 0, "RET when DSN not offered: 555 (RFC 3461)");
	out = step(&f, "MAIL FROM:<a@b.example> BODY=7BIT\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "BODY=7BIT always fine");
	out = step(&f, "RCPT TO:<c@d.example> NOTIFY=NEVER\r\n");
	ok(strncmp(out, "555 ", 4) == 0, "NOTIFY when DSN not offered: 555 (RFC 3461)");
	is_int(f.n_rcpt, 0, "refused RCPT not passed on");
	fake_free(&f);

	set = set_ready();
	set.recipient_limit = 2;
	ready(&f, &set);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c1@d.example>\r\nRCPT TO:<reject@d.example>\r\n"
		       "RCPT TO:<c2@d.example>\r\nRCPT TO:<c3@d.example>\r\n");
	is_str(codes(out), "250 250 550 250 452", "recipient_limit: a refused RCPT does not count");
	ok(line_with(out, "452 4.5.3") != NULL, "too many recipients: 452 4.5.3 (RFC 5321 §4.5.3.1.10)");
	is_int(f.n_rcpt, 3, "the RCPT over the limit is not passed to the backend");
	fake_free(&f);

	/* 452 4.5.3 asks for a new transaction: not an error until a transaction
	   had recipient_limit of them (docs/routing.md) */
	set = set_ready();
	set.recipient_limit = 3;
	set.error_limit = 3;
	ready(&f, &set);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c1@d.example>\r\nRCPT TO:<c2@d.example>\r\n"
		       "RCPT TO:<c3@d.example>\r\nRCPT TO:<c4@d.example>\r\nRCPT TO:<c5@d.example>\r\n"
		       "RCPT TO:<c6@d.example>\r\nRCPT TO:<c7@d.example>\r\n");
	is_str(codes(out), "250 250 250 250 452 452 452 452",
	       "four 452 4.5.3 with error_limit 3: the first three are no error, no 421");
	out = step(&f, "RCPT TO:<c8@d.example>\r\nRCPT TO:<c9@d.example>\r\nRCPT TO:<c10@d.example>\r\n");
	is_str(codes(out), "452 452 421", "past recipient_limit of them they count as errors");
	fake_free(&f);
}

/* ---- pipelining (RFC 2920 §3.2: replies in order, a pending answer
 * stalls the queue, no reply before its turn) ---- */

static void test_pipelining(void)
{
	struct fake f;
	struct smtp_server_settings set = set_ready();
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_clear_out(&f);
	fake_feed(&f, "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
		      "RCPT TO:<reject@d.example>\r\nDATA\r\n");
	const char *out = fake_out(&f);
	is_str(codes(out), "250", "pipelined group: only the EHLO reply before MAIL is answered");
	ok(f.pending == FAKE_MAIL && f.n_rcpt == 0, "MAIL pending; RCPT not yet passed on");
	ok(smtp_server_busy(f.s), "busy while the backend has not answered");
	fake_complete(&f);
	is_str(codes(fake_out(&f)), "250 250", "MAIL answered: its reply released");
	ok(f.pending == FAKE_RCPT && f.n_rcpt == 1, "then the first RCPT is pending");
	fake_complete(&f);
	is_str(codes(fake_out(&f)), "250 250 250", "first RCPT answered");
	ok(f.pending == FAKE_RCPT && f.n_rcpt == 2, "second RCPT pending");
	fake_complete(&f);
	is_str(codes(fake_out(&f)), "250 250 250 550", "second RCPT refused, in order");
	ok(f.pending == FAKE_DATA && f.n_data == 1, "DATA pending");
	fake_complete(&f);
	is_str(codes(fake_out(&f)), "250 250 250 550 354", "354 after all the envelope replies");
	ok(!smtp_server_busy(f.s), "not busy while reading content");

	fake_clear_out(&f);
	fake_feed(&f, "Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n");
	is_str(fake_out(&f), "", "end of data pending: no reply yet, QUIT not answered (invariant 2)");
	is_int(f.n_data_end, 1, "data_end called once");
	is_int((long long)f.last_info.size, 20, "data_end gets the canonical size (RFC 1870 §5)");
	is_int(f.n_close, 0, "QUIT waits behind end of data");
	fake_complete(&f);
	out = fake_out(&f);
	is_str(codes(out), "250 221", "final order: 250 for the data, then 221 (RFC 2920 §3.2)");
	is_int(f.n_close, 1, "closed after QUIT");
	fake_complete(&f);
	is_int(f.n_writes_after_close, 0, "nothing written after close");
	fake_free(&f);

	/* The same in synchronous mode, everything in one feed. */
	ready(&f, NULL);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
		       "hello\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
		       "again\r\n.\r\nQUIT\r\n");
	is_str(codes(out), "250 250 354 250 250 250 354 250 221",
	       "two pipelined transactions in one read: every reply, in order");
	is_int(f.n_data_end, 2, "two messages");
	ok(buf_len(&f.content) == 14 && memcmp(buf_data(&f.content), "hello\r\nagain\r\n", 14) == 0,
	   "both contents passed on, nothing of the commands in them");
	fake_free(&f);

	/* Replies are written in one batch per read when no call is pending
	 * (RFC 2920 §3.2 "may batch"), but never before their turn. */
	ready(&f, NULL);
	unsigned w = f.n_write;
	fake_feed(&f, "NOOP\r\nNOOP\r\nNOOP\r\n");
	is_int(f.n_write, w + 1, "three pipelined NOOPs answered in one write");
	fake_free(&f);
}

/* ---- DATA content (RFC 5321 §4.1.1.4, §4.5.2, RFC 1870 §5) ---- */

static void test_data_content(void)
{
	struct fake f;
	ready(&f, NULL);
	const char *out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	ok(has_line(out, "354 End data with <CR><LF>.<CR><LF>"), "354 with the backend's text");
	ok(line_with(out, "354 ") != NULL && !enh_ok(line_with(out, "354 "), strlen(line_with(out, "354 "))),
	   "354 carries no enhanced code (RFC 2034 §4: only 2xx/4xx/5xx)");
	const char *msg = "Subject: t\r\n\r\n..x\r\n...\r\n.\r\n";
	out = step(&f, msg);
	const char *canon = "Subject: t\r\n\r\n.x\r\n..\r\n";
	is_mem(buf_data(&f.content), buf_len(&f.content), canon, strlen(canon),
	       "content passed on unstuffed and canonical (RFC 5321 §4.5.2)");
	is_int((long long)f.last_info.size, (long long)strlen(canon),
	       "size = canonical octets, stuffed dots and final dot excluded (RFC 1870 §5)");
	ok(!f.last_info.has_8bit, "7-bit content");
	is_str(out, "250 2.0.0 Ok: queued as FAKE1\r\n", "the backend's end-of-data verdict passed on (invariant 2)");
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0 && f.n_mail == 2,
	   "after the 250 the transaction is over: new MAIL without RSET (RFC 5321 §4.1.1.4)");
	out = step(&f, "RCPT TO:<c@d.example>\r\nDATA\r\n\xc3\xa9t\xc3\xa9\r\n.\r\n");
	ok(f.last_info.has_8bit, "8-bit content flagged");

	/* A refused end of data: the verdict is passed on, nothing else. */
	buf_reset(&f.content);
	f.reply[FAKE_DATA_END] = (struct fake_reply){451, "4.4.1", "downstream unreachable"};
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\n");
	ok(line_with(out, "451 4.4.1") != NULL && line_with(out, "250 2.0.0 Ok: queued") == NULL,
	   "end of data refused by the backend: its 451 is passed on, never a 250 (invariant 2)");
	f.reply[FAKE_DATA_END] = (struct fake_reply){0, NULL, NULL};
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "after a refused message the transaction is over too");
	step(&f, "RSET\r\n");

	/* DATA refused by the backend (no 354): stays in command mode. */
	f.reply[FAKE_DATA] = (struct fake_reply){451, "4.3.0", "Temporary lookup failure"};
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nNOOP\r\n");
	is_str(codes(out), "250 250 451 250", "DATA refused: following lines are commands again");
	f.reply[FAKE_DATA] = (struct fake_reply){0, NULL, NULL};
	fake_free(&f);

	/* A lone "." line with nothing before: empty message. */
	ready(&f, NULL);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n.\r\n");
	ok(f.n_data_end == 1 && f.last_info.size == 0 && buf_len(&f.content) == 0,
	   "the first line being \".\" ends an empty message (RFC 5321 §4.1.1.4)");
	fake_free(&f);
}

/* ---- SMTP smuggling (invariant 7, CVE-2023-51764, RFC 5321 §4.1.1.4) ---- */

static void test_smuggling(void)
{
	static const struct {
		const char *name, *seq;
	} variants[] = {
		{"\\n.\\n", "\n.\n"},         {"\\r.\\r", "\r.\r"},
		{"\\n.\\r\\n", "\n.\r\n"},   {"\\r\\n.\\r", "\r\n.\r"},
		{"\\r\\n.\\n", "\r\n.\n"},   {"\\r.\\r\\n", "\r.\r\n"},
	};
	const char *smuggled = "MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\nevil\r\n";
	for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
		for (int mode = 0; mode < 2; mode++) {
			for (int bytewise = 0; bytewise < 2; bytewise++) {
				struct smtp_server_settings set = set_ready();
				set.newline_mode = mode == 0 ? SMTP_NEWLINE_REJECT : SMTP_NEWLINE_NORMALIZE;
				struct fake f;
				ready(&f, &set);
				struct buf in = BUF_INIT;
				buf_append_str(&in, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
						    "Subject: hi\r\n\r\nhello");
				buf_append_str(&in, variants[v].seq);
				buf_append_str(&in, smuggled);
				/* the real end of data, then a command */
				buf_append_str(&in, ".\r\nNOOP\r\n");
				fake_feed_mem(&f, buf_data(&in), buf_len(&in), bytewise);
				const char *out = fake_out(&f);
				const char *how = bytewise ? "bytewise" : "whole";
				if (mode == 0) {
					is_str(codes(out), "250 250 354 550 250",
					       "smuggling %s REJECT %s: one 550 at the real end, then NOOP 250 "
					       "(invariant 7)", variants[v].name, how);
					ok(line_with(out, "550 5.5.2") != NULL,
					   "smuggling %s REJECT %s: the refusal is 550 5.5.2", variants[v].name, how);
					ok(f.n_data_end == 0 && f.n_reset >= 1,
					   "smuggling %s REJECT %s: data_end never called, backend reset "
					   "(CVE-2023-51764)", variants[v].name, how);
				} else {
					is_str(codes(out), "250 250 354 250 250",
					       "smuggling %s NORMALIZE %s: one message, then NOOP 250 (invariant 7)",
					       variants[v].name, how);
					is_int(f.n_data_end, 1, "smuggling %s NORMALIZE %s: data_end called once",
					       variants[v].name, how);
					ok(canonical(buf_data(&f.content), buf_len(&f.content)),
					   "smuggling %s NORMALIZE %s: no bare CR or LF passed on (invariant 7)",
					   variants[v].name, how);
					ok(mem_has(&f.content, "MAIL FROM:<evil@x.example>\r\n") &&
						   mem_has(&f.content, "evil\r\n"),
					   "smuggling %s NORMALIZE %s: the smuggled commands are content",
					   variants[v].name, how);
					is_int((long long)f.last_info.size, (long long)buf_len(&f.content),
					       "smuggling %s NORMALIZE %s: size matches content", variants[v].name, how);
				}
				is_int(f.n_mail, 1, "smuggling %s %s %s: backend->mail called once in total",
				       variants[v].name, mode == 0 ? "REJECT" : "NORMALIZE", how);
				buf_free(&in);
				fake_free(&f);
			}
		}
	}

	/* A bare LF ending a command line (RFC 5321 §2.3.8). */
	struct fake f;
	ready(&f, NULL);
	const char *out = step(&f, "NOOP\n");
	ok(strncmp(out, "500 5.5.2", 9) == 0, "REJECT: a command ending in bare LF gets 500 5.5.2 (RFC 5321 §2.3.8)");
	out = step(&f, "MAIL FROM:<a@b.example>\n");
	ok(strncmp(out, "500 5.5.2", 9) == 0 && f.n_mail == 0, "REJECT: MAIL ending in bare LF not executed");
	fake_free(&f);
	struct smtp_server_settings set = set_ready();
	set.newline_mode = SMTP_NEWLINE_NORMALIZE;
	ready(&f, &set);
	out = step(&f, "NOOP\n");
	ok(strncmp(out, "250 ", 4) == 0, "NORMALIZE: a command ending in bare LF is accepted (Postfix normalize)");
	fake_free(&f);
}

/* ---- message size (RFC 1870 §6.3, invariant 5) ---- */

static void test_size(void)
{
	struct fake f;
	struct smtp_server_settings set = set_ready();
	set.size_limit = 1000;
	ready(&f, &set);
	step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	struct buf in = BUF_INIT;
	for (int i = 0; i < 100; i++)
		buf_append_str(&in, "0123456789012345678901234567890123456789012345678\r\n");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), false);
	is_int(f.n_reset, 1, "content over size_limit: backend->reset during content (RFC 1870 §6.3)");
	is_str(fake_out(&f), "", "no reply before the end of data");
	ok(buf_len(&f.content) <= 1000, "no more than size_limit octets passed on");
	const char *out = step(&f, ".\r\n");
	ok(strncmp(out, "552 5.3.4", 9) == 0, "oversized message: 552 5.3.4 at the end (RFC 1870 §6.3)");
	is_int(f.n_data_end, 0, "oversized message: data_end never called (invariant 2)");
	out = step(&f, "NOOP\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "session continues after 552");
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	ok(strncmp(out, "503 ", 4) == 0, "the oversized transaction is over");
	fake_free(&f);

	/* One byte at a time: the limit is still enforced. */
	ready(&f, &set);
	step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), true);
	ok(f.n_reset == 1 && buf_len(&f.content) <= 1000,
	   "bytewise: reset once, at most size_limit octets passed on");
	out = step(&f, ".\r\n");
	ok(strncmp(out, "552 5.3.4", 9) == 0 && f.n_data_end == 0, "bytewise: 552 5.3.4, no data_end");
	fake_free(&f);

	/* Exactly at the limit is fine. */
	ready(&f, &set);
	step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	buf_reset(&in);
	for (int i = 0; i < 20; i++)
		buf_append_str(&in, "012345678901234567890123456789012345678901234567\r\n");
	buf_append_str(&in, ".\r\n");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), false);
	ok(strncmp(fake_out(&f), "250 ", 4) == 0 && f.last_info.size == 1000,
	   "a message of exactly size_limit octets is accepted (RFC 1870 §6.3)");
	buf_free(&in);
	fake_free(&f);
}

/* ---- BDAT (RFC 3030) ---- */

static void test_bdat(void)
{
	struct fake f;
	ready(&f, NULL);
	const char *out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 5\r\nhello");
	is_str(codes(out), "250 250 250", "BDAT 5: one 250 for the chunk, no 354 (RFC 3030 §2)");
	is_int(f.n_data, 1, "the first BDAT opens the content phase once");
	out = step(&f, "BDAT 0 LAST\r\n");
	ok(strncmp(out, "250 2.0.0 Ok: queued", 20) == 0, "BDAT 0 LAST: the backend's end-of-data verdict");
	is_int(f.n_data_end, 1, "data_end once");
	ok(buf_len(&f.content) >= 5 && memcmp(buf_data(&f.content), "hello", 5) == 0 &&
		   canonical(buf_data(&f.content), buf_len(&f.content)),
	   "content is \"hello\" (made canonical with a final CRLF, data.h)");
	is_int((long long)f.last_info.size, (long long)buf_len(&f.content), "BDAT size matches the content");
	out = step(&f, "MAIL FROM:<a@b.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0, "after BDAT LAST the transaction is over");
	fake_free(&f);

	ready(&f, NULL);
	out = step(&f, "BDAT 6\r\nQUIT\r\nNOOP\r\n");
	is_str(codes(out), "503 250", "BDAT before MAIL: 503, its chunk consumed unread, NOOP 250 (RFC 3030 §2)");
	is_int(f.n_close, 0, "the chunk \"QUIT\\r\\n\" was not executed");
	out = step(&f, "MAIL FROM:<a@b.example>\r\nBDAT 4 LAST\r\nQUIT");
	is_str(codes(out), "250 554", "BDAT without RCPT: refused, chunk consumed");
	is_int(f.n_close + f.n_data, 0, "refused chunk neither executed nor passed on");
	fake_free(&f);

	ready(&f, NULL);
	out = step(&f, "BDAT x\r\n");
	ok(strncmp(out, "501 ", 4) == 0, "BDAT x: 501 (RFC 3030 §2)");
	is_int(f.n_close, 1, "BDAT x: the stream cannot be resynchronised, closed");
	fake_free(&f);

	ready(&f, NULL);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 3\r\nabcDATA\r\n");
	is_str(codes(out), "250 250 250 503", "DATA after BDAT: 503 (Postfix, RFC 3030 §2)");
	out = step(&f, "RCPT TO:<e@d.example>\r\n");
	ok(strncmp(out, "503 ", 4) == 0, "RCPT after BDAT: 503");
	out = step(&f, "RSET\r\n");
	ok(strncmp(out, "250 ", 4) == 0 && f.n_reset >= 1 && f.n_data_end == 0,
	   "RSET after BDAT: transaction aborted, no data_end (invariant 2)");
	fake_free(&f);

	/* Chunks split anywhere, even byte by byte. */
	ready(&f, NULL);
	fake_feed_bytes(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 8\r\nab\r\ncd\r\n"
			    "BDAT 4 LAST\r\nef\r\n");
	is_str(codes(fake_out(&f)), "250 250 250 250", "bytewise BDAT: every chunk answered");
	is_mem(buf_data(&f.content), buf_len(&f.content), "ab\r\ncd\r\nef\r\n", 12,
	       "bytewise BDAT: content intact (no dot or CRLF processing but canonical)");
	fake_free(&f);

	/* A CRLF split between two chunks is a CRLF (RFC 3030 §2: chunks are
	 * arbitrary octet ranges); dots mean nothing in BDAT. */
	ready(&f, NULL);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 6\r\n.\r\ncd\r"
		       "BDAT 3 LAST\r\n\nef");
	is_str(codes(out), "250 250 250 250", "BDAT: CRLF split across chunks accepted in REJECT mode");
	is_mem(buf_data(&f.content), buf_len(&f.content), ".\r\ncd\r\nef\r\n", 11,
	       "BDAT: a \".\" line is content, not an end (RFC 3030 §2)");
	fake_free(&f);

	/* A BDAT refused by the gate still has its chunk consumed
	 * (RFC 3030 §2: "MUST consume ... even when rejecting"). */
	fake_new(&f, NULL);
	step(&f, EHLO);
	out = step(&f, "BDAT 6\r\nNOOP\r\n");
	is_str_named(codes(out), "530",
		 "BDAT refused before STARTTLS: one reply, its chunk consumed unread (RFC 3030 §2)");
	fake_free(&f);

	/* BDAT deferred: the content phase waits for the backend. */
	struct smtp_server_settings set = set_ready();
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_feed(&f, EHLO "MAIL FROM:<a@b.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "RCPT TO:<c@d.example>\r\n");
	fake_complete(&f);
	fake_clear_out(&f);
	fake_feed(&f, "BDAT 2 LAST\r\nhi");
	ok(f.pending == FAKE_DATA && strcmp(fake_out(&f), "") == 0, "BDAT: content phase opening pending");
	fake_complete(&f);
	ok(f.pending == FAKE_DATA_END && strcmp(fake_out(&f), "") == 0,
	   "BDAT: no 354 sent to the client; end of data pending");
	fake_complete(&f);
	is_str(codes(fake_out(&f)), "250", "BDAT LAST: one reply");
	fake_free(&f);
}

/* ---- limits: lines, garbage, errors (RFC 5321 §4.5.3.1.4, invariant 5) ---- */

static void test_limits(void)
{
	struct fake f;
	ready(&f, NULL);
	struct buf in = BUF_INIT;
	for (int i = 0; i < 5000; i++)
		buf_append(&in, "A", 1);
	buf_append_str(&in, "\r\nNOOP\r\n");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), false);
	const char *out = fake_out(&f);
	is_str(codes(out), "500 250", "over-long line: one 500, then NOOP 250 (RFC 5321 §4.5.3.1.4)");
	ok(line_with(out, "500 5.5.2") != NULL, "over-long line: 500 5.5.2");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), true);
	is_str(codes(fake_out(&f)), "500 250", "over-long line bytewise: one 500, then 250");
	/* A 512-octet line is not too long (RFC 5321 §4.3.2: never for < 512). */
	buf_reset(&in);
	buf_append_str(&in, "NOOP ");
	for (int i = 0; i < 505; i++)
		buf_append(&in, "x", 1);
	buf_append_str(&in, "\r\n");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), false);
	ok(strncmp(fake_out(&f), "250 ", 4) == 0, "a 512-octet command line (CRLF included) is accepted");
	fake_free(&f);

	/* The input buffer stays bounded while an endless line is dropped
	 * (invariant 5). */
	ready(&f, NULL);
	char chunk[1000];
	memset(chunk, 'A', sizeof(chunk));
	size_t maxlen = 0;
	for (int i = 0; i < 200; i++) {
		fake_feed_mem(&f, chunk, sizeof(chunk), false);
		if (buf_len(&f.in) > maxlen)
			maxlen = buf_len(&f.in);
	}
	/* The reader looks as far as an AUTH command may reach (RFC 4954 §4). */
	if (maxlen > 12288 + 1024)
		diag("input buffer held %zu bytes after 200000 bytes of one line", maxlen);
	ok_named(maxlen <= 12288 + 1024,
		 "endless command line: the input buffer stays bounded (invariant 5)");
	fake_clear_out(&f);
	fake_feed(&f, "\r\nNOOP\r\n");
	is_str(codes(fake_out(&f)), "500 250", "endless line: one 500 at its end, then NOOP 250");
	fake_free(&f);

	/* Binary garbage, NUL bytes included. */
	struct smtp_server_settings set = set_ready();
	set.error_limit = 100000;
	ready(&f, &set);
	srand(5);
	buf_reset(&in);
	for (int i = 0; i < 20000; i++) {
		uint8_t c = (uint8_t)rand();
		buf_append(&in, &c, 1);
	}
	buf_append(&in, "\0\r\n\0\0\n", 6);
	buf_append_str(&in, "\r\nNOOP\r\n");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), false);
	out = fake_out(&f);
	ok(output_well_formed(&f), "garbage: every reply line well formed");
	const char *c = codes(out);
	size_t cl = strlen(c);
	ok(cl >= 3 && strcmp(c + cl - 3, "250") == 0, "garbage: the final NOOP still gets 250");
	is_int(f.n_close, 0, "garbage: the session is still open");
	fake_clear_out(&f);
	fake_feed_mem(&f, "NOOP\0x\r\n", 8, false);
	out = fake_out(&f);
	ok(strncmp(out, "500 5.5.2", 9) == 0, "NUL in a command: 500 5.5.2");
	fake_free(&f);

	/* The error limit (invariant 5). */
	set = set_ready();
	set.error_limit = 5;
	ready(&f, &set);
	out = step(&f, "XYZZY\r\nXYZZY\r\nRCPT TO:<c@d.example>\r\nXYZZY\r\nNOOP\r\nXYZZY\r\nNOOP\r\n");
	is_str(codes(out), "500 500 503 500 250 500 421", "error_limit 5: after the 5th error, 421");
	ok(line_with(out, "421 4.7.0") != NULL, "too many errors: 421 4.7.0");
	is_int(f.n_close, 1, "too many errors: io->close");
	out = step(&f, "NOOP\r\n");
	is_str(out, "", "nothing answered after the 421");
	fake_free(&f);

	/* Backend refusals count as errors too. */
	ready(&f, &set);
	out = step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<reject1@d.example>\r\nRCPT TO:<reject2@d.example>\r\n"
		       "RCPT TO:<reject3@d.example>\r\nRCPT TO:<reject4@d.example>\r\nRCPT TO:<reject5@d.example>\r\n"
		       "RCPT TO:<c@d.example>\r\n");
	is_str(codes(out), "250 550 550 550 550 550 421", "refused RCPTs count towards error_limit");
	is_int(f.n_rcpt, 5, "no RCPT passed on after the 421");
	is_int(f.n_reset, 1, "the transaction is aborted on the 421 close (invariant 2)");
	fake_free(&f);
	buf_free(&in);
}

/* ---- AUTH exchange bounds (RFC 4954 §4, invariant 5) ---- */

/* Feeds prefix, n 'Q's and suffix in one read; returns the output. */
static const char *step_long(struct fake *f, struct buf *in, const char *prefix, size_t n,
			     const char *suffix)
{
	buf_reset(in);
	buf_append_str(in, prefix);
	memset(buf_reserve(in, n), 'Q', n);
	buf_commit(in, n);
	buf_append_str(in, suffix);
	fake_clear_out(f);
	fake_feed_mem(f, buf_data(in), buf_len(in), false);
	return fake_out(f);
}

static void test_auth_exchange(void)
{
	struct fake f;
	struct smtp_server_settings set = set_ready();
	set.relay_trusted = false;
	ready(&f, &set);
	const char *out = step(&f, "AUTH LOGIN\r\n");
	ok(strcmp(out, "334 \r\n") == 0, "AUTH LOGIN: an empty challenge is exactly \"334 \" (RFC 4954 §4)");
	struct buf in = BUF_INIT;
	for (int i = 0; i < 20000; i++)
		buf_append(&in, "Q", 1);
	buf_append_str(&in, "\r\n");
	fake_clear_out(&f);
	fake_feed_mem(&f, buf_data(&in), buf_len(&in), false);
	out = fake_out(&f);
	ok(strncmp(out, "500 5.5.", 8) == 0, "over-long AUTH response: 500 (RFC 4954 §4)");
	out = step(&f, "NOOP\r\n");
	ok_named(strncmp(out, "250 ", 4) == 0 && f.n_auth_response == 0,
		"after an over-long AUTH response the exchange is over: the next line is a command, "
		"not a credential (RFC 4954 §4)");
	fake_free(&f);

	/* The AUTH command line takes a 12288-octet initial response (RFC
	 * 4954 §4: OAuth bearer tokens are often 2-8 KB); every other
	 * command keeps line_limit. */
	ready(&f, &set);
	out = step_long(&f, &in, "AUTH PLAIN ", 12288, "\r\n");
	ok_named(f.n_auth == 1 && f.last_auth_len == 6 + 12288 && strncmp(out, "235 ", 4) == 0,
		 "AUTH with a 12288-octet initial response reaches the backend (RFC 4954 §4)");
	fake_free(&f);
	ready(&f, &set);
	out = step_long(&f, &in, "AUTH PLAIN ", 13000, "\r\nNOOP\r\n");
	ok_named(f.n_auth == 0 && strncmp(out, "500 5.5.2", 9) == 0 &&
		 strstr(out, "\r\n250 ") != NULL,
		 "AUTH over that room: 500, and the session stays in step");
	out = step_long(&f, &in, "NOOP ", 600, "\r\nNOOP\r\n");
	is_str(codes(out), "500 250", "a 605-octet NOOP is still over line_limit: 500, then in step");
	buf_free(&in);
	fake_free(&f);
}

/* ---- one long scripted session: enhanced codes on every reply, and the
 * same bytes and calls whole or one byte at a time ---- */

struct script_step {
	const char *in;
	bool exempt; /* EHLO/HELO reply: no enhanced codes (RFC 2034 §4) */
};

static const struct script_step script[] = {
	{"EHLO client.example\r\n", true},
	{"MAIL FROM:<a@b.example>\r\n", false},
	{"NOOP\r\n", false},
	{"STARTTLS\r\n", false},
	{"EHLO client.example\r\n", true},
	{"MAIL FROM:<a@b.example>\r\n", false},
	{"AUTH LOGIN\r\n", false},
	{"dXNlcg==\r\n", false},
	{"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n", false},
	{"RCPT TO:<c@d.example>\r\n", false},
	{"RCPT TO:<reject@d.example>\r\n", false},
	{"RCPT TO:<tempfail@d.example>\r\n", false},
	{"RCPT TO:<bad address>\r\n", false},
	{"RCPT TO:<e@f.example> FOO=BAR\r\n", false},
	{"RCPT TO:<ü@d.example>\r\n", false},
	{"DATA\r\n", false},
	{"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n", false},
	{"MAIL FROM:<> BODY=8BITMIME\r\n", false},
	{"RCPT TO:<c@d.example> NOTIFY=SUCCESS\r\n", false},
	{"BDAT 5\r\nhello", false},
	{"BDAT 8 LAST\r\n world\r\n", false},
	{"VRFY x\r\n", false},
	{"EXPN x\r\n", false},
	{"ETRN x\r\n", false},
	{"HELP\r\n", false},
	{"XYZZY\r\n", false},
	{"RSET\r\n", false},
	{"DATA x\r\n", false},
	{"RCPT TO:<c@d.example>\r\n", false},
	{"DATA\r\n", false},
	{"MAIL FROM:<a@b.example>\r\n", false},
	{"MAIL FROM:<a@b.example>\r\n", false},
	{"DATA\r\n", false},
	{"AUTH PLAIN AGFAYg==\r\n", false},
	{"STARTTLS\r\n", false},
	{"NOOP\n", false},
	{"HELO client.example\r\n", true},
	{"MAIL FROM:<a@b.example> SIZE=99999999999\r\n", false},
	{"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", false},
	{"MAIL FROM:<a@b.example>\r\n", false},
	{"RCPT TO:<c@d.example>\r\n", false},
	{"DATA\r\n", false},
	{"line with bare\nLF\r\n.\r\n", false},
	{"QUIT\r\n", false},
};

struct script_result {
	struct buf out, log, content;
	unsigned lines, bad;
	char first_bad[200];
};

static void run_script(bool bytewise, struct script_result *r)
{
	struct fake f;
	struct smtp_server_settings set = fake_settings();
	set.error_limit = 100;
	set.size_limit = 1000;
	fake_new(&f, &set);
	struct enh_check ec = {0, 0, ""};
	for (size_t i = 0; i < sizeof(script) / sizeof(script[0]); i++) {
		size_t mark = buf_len(&f.out);
		fake_feed_mem(&f, script[i].in, strlen(script[i].in), bytewise);
		if (f.tls_requested) {
			f.tls_requested = false;
			smtp_server_tls_done(f.s, true);
		}
		if (!script[i].exempt)
			fake_each_line(buf_data(&f.out) + mark, buf_len(&f.out) - mark, enh_line, &ec);
	}
	r->out = f.out;
	r->log = f.log;
	r->content = f.content;
	f.out = (struct buf)BUF_INIT;
	f.log = (struct buf)BUF_INIT;
	f.content = (struct buf)BUF_INIT;
	r->lines = ec.lines;
	r->bad = ec.bad;
	memcpy(r->first_bad, ec.first_bad, sizeof(r->first_bad));
	fake_free(&f);
}

static void test_script(void)
{
	struct script_result whole, bytes;
	run_script(false, &whole);
	run_script(true, &bytes);
	char *out = xstrndup((const char *)buf_data(&whole.out), buf_len(&whole.out));
	is_str(codes(out),
	       "220 250 530 250 220 250 530 334 235 250 250 550 450 501 555 553 354 250 250 250 250 250 "
	       "252 502 502 214 500 250 501 503 503 250 503 554 503 554 500 250 552 501 250 250 354 550 221",
	       "scripted session: the expected reply codes");
	free(out);
	ok(whole.lines > 40 && whole.bad == 0,
	   "every reply but greeting, EHLO/HELO, 334, 354 has an enhanced code of its class "
	   "(RFC 2034 §4; %u lines checked)", whole.lines);
	if (whole.bad > 0)
		diag("first bad line: %s", whole.first_bad);
	struct fake tmp = {.out = whole.out};
	ok(output_well_formed(&tmp), "scripted session: all reply lines well formed (RFC 5321 §4.2)");
	is_mem(buf_data(&bytes.out), buf_len(&bytes.out), buf_data(&whole.out), buf_len(&whole.out),
	       "one byte at a time: the same output bytes (docs/design.md §9.3)");
	is_mem(buf_data(&bytes.log), buf_len(&bytes.log), buf_data(&whole.log), buf_len(&whole.log),
	       "one byte at a time: the same backend calls");
	is_mem(buf_data(&bytes.content), buf_len(&bytes.content), buf_data(&whole.content),
	       buf_len(&whole.content), "one byte at a time: the same content");
	buf_free(&whole.out);
	buf_free(&whole.log);
	buf_free(&whole.content);
	buf_free(&bytes.out);
	buf_free(&bytes.log);
	buf_free(&bytes.content);
}

/* ---- disconnect, timeout, shutdown (RFC 5321 §3.8, §4.5.3.2.7;
 * invariants 2 and 9) ---- */

static void test_end_of_session(void)
{
	struct fake f;
	ready(&f, NULL);
	step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\npart of the mes");
	unsigned resets = f.n_reset;
	fake_clear_out(&f);
	smtp_server_disconnected(f.s);
	is_int(f.n_reset, resets + 1, "disconnect mid-DATA: backend->reset (invariant 2)");
	fake_feed(&f, "sage\r\n.\r\nNOOP\r\n");
	is_str(fake_out(&f), "", "nothing written after the disconnect");
	is_int(f.n_data_end, 0, "no data_end after the disconnect");
	fake_free(&f);

	/* A late answer after the disconnect (invariant 9, docs/design.md §9.8). */
	struct smtp_server_settings set = set_ready();
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_feed(&f, EHLO "MAIL FROM:<a@b.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "RCPT TO:<c@d.example>\r\n");
	ok(f.pending == FAKE_RCPT, "RCPT pending");
	fake_clear_out(&f);
	smtp_server_disconnected(f.s);
	ok(f.n_reset == 1, "disconnect with a pending call: transaction aborted");
	fake_complete(&f);
	is_str(fake_out(&f), "", "a late smtp_server_complete() after disconnect writes nothing");
	fake_free(&f);

	/* data_end pending when the client disconnects. */
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_feed(&f, EHLO "MAIL FROM:<a@b.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "RCPT TO:<c@d.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "DATA\r\n");
	fake_complete(&f);
	fake_feed(&f, "x\r\n.\r\n");
	ok(f.pending == FAKE_DATA_END, "end of data pending");
	fake_clear_out(&f);
	smtp_server_disconnected(f.s);
	fake_complete(&f);
	is_str(fake_out(&f), "", "late end-of-data verdict after disconnect: nothing written");
	fake_free(&f);

	/* Timeout (RFC 5321 §4.5.3.2.7, Postfix 421 4.4.2). */
	ready(&f, NULL);
	smtp_server_timeout(f.s);
	ok(strncmp(fake_out(&f), "421 4.4.2", 9) == 0, "timeout: 421 4.4.2");
	is_int(f.n_close, 1, "timeout: io->close");
	fake_free(&f);

	/* Timeout mid-transaction with a pending call: aborted, late answer
	 * ignored. */
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_feed(&f, EHLO "MAIL FROM:<a@b.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "RCPT TO:<c@d.example>\r\n");
	fake_clear_out(&f);
	smtp_server_timeout(f.s);
	ok(strncmp(fake_out(&f), "421 4.4.2", 9) == 0 && f.n_close == 1 && f.n_reset == 1,
	   "timeout with a pending RCPT: 421, close, transaction aborted");
	fake_complete(&f);
	is_int(f.n_writes_after_close, 0, "late answer after timeout: nothing written");
	fake_free(&f);

	/* Shutdown when idle (RFC 5321 §3.8). */
	ready(&f, NULL);
	smtp_server_shutdown(f.s);
	ok(strncmp(fake_out(&f), "421 4.3.2", 9) == 0, "shutdown when idle: 421 4.3.2");
	is_int(f.n_close, 1, "shutdown when idle: io->close");
	fake_free(&f);

	/* Shutdown inside a transaction: after its final reply. */
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_feed(&f, EHLO "MAIL FROM:<a@b.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "RCPT TO:<c@d.example>\r\n");
	fake_complete(&f);
	fake_feed(&f, "DATA\r\n");
	fake_complete(&f);
	fake_feed(&f, "some content\r\n");
	fake_clear_out(&f);
	smtp_server_shutdown(f.s);
	is_str(fake_out(&f), "", "shutdown mid-DATA: nothing sent yet");
	is_int(f.n_close, 0, "shutdown mid-DATA: not closed yet");
	fake_feed(&f, ".\r\nNOOP\r\n");
	is_str(fake_out(&f), "", "end of data pending: still nothing");
	fake_complete(&f);
	const char *out = fake_out(&f);
	is_str(codes(out), "250 421", "shutdown: the message's 250, then 421");
	ok(line_with(out, "421 4.3.2") != NULL && f.n_close == 1, "shutdown: 421 4.3.2 and close after the transaction");
	fake_free(&f);

	/* Shutdown between MAIL and DATA: the transaction may finish. */
	ready(&f, NULL);
	step(&f, "MAIL FROM:<a@b.example>\r\n");
	smtp_server_shutdown(f.s);
	out = step(&f, "RCPT TO:<c@d.example>\r\n");
	ok(strncmp(out, "250 ", 4) == 0 && f.n_close == 0, "shutdown inside a transaction: RCPT still answered");
	out = step(&f, "DATA\r\nx\r\n.\r\n");
	is_str(codes(out), "354 250 421", "shutdown: 421 right after the transaction's final reply");
	fake_free(&f);

	/* Shutdown, then the transaction ends by RSET. */
	ready(&f, NULL);
	step(&f, "MAIL FROM:<a@b.example>\r\n");
	smtp_server_shutdown(f.s);
	out = step(&f, "RSET\r\n");
	is_str_named(codes(out), "250 421", "shutdown: a transaction ended by RSET is followed by 421 (RFC 5321 §3.8)");
	fake_free(&f);

	/* Shutdown, then the message is refused locally (too big). */
	set = set_ready();
	set.size_limit = 10;
	ready(&f, &set);
	step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	smtp_server_shutdown(f.s);
	out = step(&f, "this is more than ten octets\r\n.\r\n");
	is_str_named(codes(out), "552 421",
		 "shutdown: a message refused locally (552) is followed by 421 (RFC 5321 §3.8)");
	fake_free(&f);

	/* Too many failed logins: the answer, then 421 and close. */
	set = set_ready();
	set.relay_trusted = false;
	fake_init(&f, &set);
	f.deferred = true;
	fake_start(&f);
	fake_feed(&f, EHLO "AUTH LOGIN\r\nNOOP\r\n");
	fake_clear_out(&f);
	ok(f.pending == FAKE_AUTH, "AUTH pending");
	f.pending = FAKE_NONE;
	smtp_server_complete_and_close(f.s, 535, "5.7.8", "Error: authentication failed", 421, "4.7.0",
				       "Error: too many authentication failures");
	out = fake_out(&f);
	is_str(codes(out), "535 421", "complete_and_close: the answer, then 421; the pipelined NOOP dropped");
	is_int(f.n_close, 1, "complete_and_close: io->close");
	fake_free(&f);

	/* Counters for the disconnect log line. */
	ready(&f, NULL);
	step(&f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\nXYZZY\r\nQUIT\r\n");
	char cnt[256];
	smtp_server_counters(f.s, cnt, sizeof(cnt));
	is_str(cnt, "ehlo=1 mail=1 rcpt=1 data=1 quit=1 unknown=1 commands=6",
	       "counters in Postfix's disconnect-line form");
	fake_free(&f);
}

/* ---- a client that does not read its replies (docs/design.md invariant 5) ---- */

/* Linear in the haystack: strstr() in a loop is quadratic under ASan, whose
 * interceptor measures the whole rest of the string on every call. */
static size_t count_str(const char *hay, const char *needle)
{
	size_t n = 0, nl = strlen(needle);
	for (const char *p = hay; *p != '\0'; p++)
		if (*p == needle[0] && strncmp(p, needle, nl) == 0) {
			n++;
			p += nl - 1;
		}
	return n;
}

static void test_output_bound(void)
{
	struct fake f;
	ready(&f, NULL);
	fake_clear_out(&f);
	f.out_cap = 65536;
	/* 1 MiB of EHLO: unbounded, the replies would be 25 times that. */
	struct buf flood = BUF_INIT;
	unsigned n = 0;
	while (buf_len(&flood) < 1024 * 1024) {
		buf_append_str(&flood, "EHLO x\r\n");
		n++;
	}
	buf_append_str(&flood, "QUIT\r\n");
	fake_feed_mem(&f, buf_data(&flood), buf_len(&flood), false);
	size_t queued = buf_len(&f.out);
	ok(queued >= 65536 && queued < 65536 + 8192,
	   "transport blocked: replies stop near the bound (%zu bytes queued)", queued);
	ok(buf_len(&f.in) > 900 * 1024, "the rest of the input waits unprocessed (%zu bytes)",
	   buf_len(&f.in));
	smtp_server_input(f.s);
	is_int((long long)buf_len(&f.out), (long long)queued, "still blocked: nothing more produced");
	is_int(f.n_close, 0, "QUIT not reached yet");
	/* The client reads: each drain lets the server go on. */
	unsigned rounds = 0;
	while (buf_len(&f.in) > 0 && rounds++ < 10000) {
		f.out_cap = buf_len(&f.out) + 65536;
		smtp_server_input(f.s);
	}
	const char *out = fake_out(&f);
	is_int((long long)count_str(out, "250 CHUNKING\r\n"), n, "every EHLO answered once drained");
	ok(strstr(out, "221 2.0.0") != NULL && f.n_close == 1, "then QUIT, in order");
	buf_free(&flood);
	fake_free(&f);
}

/* ---- HELP lists what EHLO offers, no more (RFC 5321 §4.1.1.8) ---- */

static void test_help(void)
{
	struct fake f;
	struct smtp_server_settings set = set_ready();
	set.tls_active = false; /* a plain listener */
	ready(&f, &set);
	const char *out = step(&f, "HELP\r\n");
	ok_named(strncmp(out, "214 ", 4) == 0 && strstr(out, "STARTTLS") == NULL &&
		 strstr(out, "AUTH") == NULL && strstr(out, "MAIL") != NULL,
		 "plain listener: HELP lists neither STARTTLS nor AUTH");
	fake_free(&f);

	fake_new(&f, NULL); /* a starttls listener, before TLS */
	out = step(&f, "EHLO c.example\r\nHELP\r\n");
	out = strstr(out, "214 ");
	ok_named(out != NULL && strstr(out, " STARTTLS") != NULL && strstr(out, " AUTH") == NULL,
		 "before STARTTLS: HELP lists STARTTLS, not AUTH");
	fake_free(&f);

	set = set_ready();
	set.relay_trusted = false;
	ready(&f, &set); /* inside TLS */
	out = step(&f, "HELP\r\n");
	ok_named(strstr(out, " AUTH") != NULL && strstr(out, "STARTTLS") == NULL,
		 "inside TLS: HELP lists AUTH, not STARTTLS");
	step(&f, "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
	out = step(&f, "HELP\r\n");
	ok_named(strncmp(out, "214 ", 4) == 0 && strstr(out, " AUTH") == NULL,
		 "once authenticated: HELP no longer lists AUTH");
	fake_free(&f);
	fake_init(&f, &set);
	f.be.auth = NULL;
	fake_start(&f);
	out = step(&f, "HELP\r\n");
	ok_named(strncmp(out, "214 ", 4) == 0 && strstr(out, " AUTH") == NULL,
		 "no auth backend: HELP does not list AUTH");
	fake_free(&f);
}

int main(void)
{
	log_open(LOG_TARGET_STDERR, 0, LOG_WARNING);
	test_greeting_and_ehlo();
	test_starttls_checkpoint();
	test_gate();
	test_sequencing();
	test_parameters();
	test_pipelining();
	test_data_content();
	test_smuggling();
	test_size();
	test_bdat();
	test_limits();
	test_auth_exchange();
	test_script();
	test_end_of_session();
	test_output_bound();
	test_help();
	return done_testing();
}
