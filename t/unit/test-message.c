/* Unit tests for src/policy/message.c: the header section as it goes
 * downstream (RFC 5321 §4.4 Received:, RFC 6409 §8.2/§8.3 Date: and
 * Message-ID: added only when missing) and the From:/Sender: ownership
 * check's structured replies, one per verdict (RFC 6409 §8.1,
 * header_from_policy), and the relay_auth_header field
 * (src/policy/auth_header.c): the client's copies go, whole buffer and one
 * byte at a time. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "lookup/table.h"
#include "policy/auth_header.h"
#include "policy/message.h"
#include "policy/policy.h"
#include "policy/sender_login.h"
#include "smtp/addr.h"
#include "smtp/header.h"
#include "tap.h"

static uv_loop_t loop;

static const struct message_trace trace = {
	.helo = "client.example",
	.ip = "192.0.2.1",
	.tls = NULL,
	.user = "alice",
	.esmtp = true,
	.by = "msa.example",
	.id = "ABCDEF0123",
	.rcpt = "bob@example.org",
};

/* 2001-09-09 01:46:40 UTC */
#define T0 ((time_t)1000000000)

/* The header section hdr as message_header() writes it, NUL-terminated. */
static char *fixup(const struct message_trace *t, const char *hdr, bool at_end)
{
	struct header_info hi;
	const uint8_t *h = (const uint8_t *)hdr;
	if (!header_scan(h, strlen(hdr), at_end, &hi))
		return strdup("(incomplete)");
	struct buf out = BUF_INIT;
	message_header(t, T0, h, &hi, hi.header_len < strlen(hdr), &out);
	char *s = strndup((const char *)buf_data(&out), buf_len(&out));
	buf_free(&out);
	return s;
}

static int count(const char *s, const char *what)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
		n++;
	return n;
}

static void test_fixups(void)
{
	char *s = fixup(&trace, "From: a@x\r\nSubject: hi\r\n\r\n", false);
	is_str(s,
	       "Received: from client.example ([192.0.2.1])\r\n"
	       "\t(Authenticated sender: alice)\r\n"
	       "\tby msa.example (submitd) with ESMTPA id ABCDEF0123\r\n"
	       "\tfor <bob@example.org>; Sun, 9 Sep 2001 01:46:40 +0000\r\n"
	       "From: a@x\r\nSubject: hi\r\n"
	       "Date: Sun, 9 Sep 2001 01:46:40 +0000\r\n"
	       "Message-ID: <20010909014640.ABCDEF0123@msa.example>\r\n"
	       "\r\n",
	       "Received: in front, Date: and Message-ID: added at the end of the fields when missing");
	free(s);

	s = fixup(&trace, "Date: Mon, 1 Jan 2001 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\n", false);
	ok(count(s, "Date:") == 1 && strstr(s, "Date: Mon, 1 Jan 2001") != NULL,
	   "a Date: of the client's is kept, none added");
	ok(count(s, "Message-ID:") == 1 && strstr(s, "Message-ID: <x@y>") != NULL,
	   "a Message-ID: of the client's is kept, none added");
	free(s);

	s = fixup(&trace, "date: x\r\nmessage-id: <x@y>\r\n\r\n", false);
	ok(count(s, "Date:") == 0 && count(s, "Message-ID:") == 0,
	   "field names match case-insensitively: nothing added");
	free(s);

	s = fixup(&trace, "Message-ID: <x@y>\r\n\r\n", false);
	ok(count(s, "Date:") == 1 && count(s, "Message-ID:") == 1, "only the missing Date: is added");
	free(s);

	s = fixup(&trace, "Subject: hi", true);
	ok(strstr(s, "Subject: hi\r\nDate: ") != NULL, "an unterminated last field (BDAT) gets its CRLF");
	ok(strlen(s) > 4 && strcmp(s + strlen(s) - 4, ">\r\n\r\n") != 0 &&
	       strcmp(s + strlen(s) - 2, "\r\n") == 0,
	   "no empty line added when nothing follows and none was sent");
	free(s);

	s = fixup(&trace, "Subject: hi\r\nbody line\r\n", true);
	ok(strcmp(s + strlen(s) - 4, "\r\n\r\n") == 0, "a body sent without an empty line gets one");
	free(s);

	struct message_trace t = trace;
	t.rcpt = NULL;
	t.user = NULL;
	t.esmtp = false;
	t.tls = "TLS1.3 (X)";
	t.ip = "2001:db8::1";
	s = fixup(&t, "\r\n", false);
	ok(strstr(s, "Received: from client.example ([IPv6:2001:db8::1])\r\n\t(using TLS1.3 (X))\r\n"
		     "\tby msa.example (submitd) with SMTPS id ABCDEF0123; ") == s,
	   "Received: IPv6 literal, TLS, no login, no \"for\" without a single recipient");
	ok(strstr(s, "(Authenticated sender") == NULL, "no Authenticated sender without a login");
	free(s);

	t = trace;
	t.smtputf8 = true;
	t.helo = "evil\r\nX-Injected: 1";
	s = fixup(&t, "\r\n", false);
	ok(strstr(s, "with UTF8SMTPA id") != NULL, "RFC 3848 protocol name for SMTPUTF8");
	ok(strstr(s, "\r\nX-Injected") == NULL, "the HELO argument cannot start a field");
	free(s);
}

static void test_added_max(void)
{
	struct message_trace t = trace;
	char rcpt[SMTP_PATH_MAX + 1];
	memset(rcpt, 'r', SMTP_PATH_MAX);
	rcpt[SMTP_PATH_MAX] = '\0';
	t.rcpt = rcpt;
	const char *hdr = "Subject: hi";
	char *s = fixup(&t, hdr, true);
	uint64_t added = strlen(s) - strlen(hdr);
	ok(added <= message_added_max(&t),
	   "SIZE= bound covers the longest addition (RFC 1870 §6): %llu <= %llu",
	   (unsigned long long)added, (unsigned long long)message_added_max(&t));
	free(s);
	struct message_trace u = t;
	u.rcpt = NULL;
	ok(message_added_max(&u) == message_added_max(&t), "the bound does not depend on the recipients");
}

/* ---- relay_auth_header ---- */

static void filter(const char *in, const char *want, const char *what)
{
	struct auth_header_filter f;
	struct buf out = BUF_INIT;
	auth_header_filter_init(&f, "X-AuthUser");
	auth_header_filter_run(&f, (const uint8_t *)in, strlen(in), &out);
	is_mem(buf_data(&out), buf_len(&out), want, strlen(want), "filter, whole: %s", what);
	buf_free(&out);
	/* docs/design.md §9.3: resumable, same result one byte at a time */
	auth_header_filter_init(&f, "X-AuthUser");
	for (size_t i = 0; in[i] != '\0'; i++)
		auth_header_filter_run(&f, (const uint8_t *)in + i, 1, &out);
	is_mem(buf_data(&out), buf_len(&out), want, strlen(want), "filter, bytewise: %s", what);
	buf_free(&out);
}

static void test_auth_header(void)
{
	/* relay_auth_header: the client's copies go, everything else stays */
	filter("From: a\r\nX-AuthUser: evil\r\nTo: b\r\n\r\nbody\r\n",
	       "From: a\r\nTo: b\r\n\r\nbody\r\n", "one field removed");
	filter("x-authuser: evil\r\n\tmore evil\r\n folded\r\nTo: b\r\n\r\nX-AuthUser: body\r\n",
	       "To: b\r\n\r\nX-AuthUser: body\r\n",
	       "case-insensitive, continuation lines too, body untouched");
	filter("X-AuthUser \t: evil\r\nSubject: s\r\n\r\n", "Subject: s\r\n\r\n",
	       "white space before the colon (RFC 5322 §4.5.1)");
	filter("X-AuthUser-Extra: keep\r\nX-Auth: keep\r\nX-AuthUse\r\n\tfold\r\n\r\nb",
	       "X-AuthUser-Extra: keep\r\nX-Auth: keep\r\nX-AuthUse\r\n\tfold\r\n\r\nb",
	       "other names kept, with their continuations");
	filter("Subject: X-AuthUser: no\r\n\r\n", "Subject: X-AuthUser: no\r\n\r\n",
	       "only at the start of a field");
	filter("\r\nX-AuthUser: body\r\n", "\r\nX-AuthUser: body\r\n", "no header section");

	struct message_trace t = trace;
	t.auth_header = "X-AuthUser";
	char *s = fixup(&t, "X-AuthUser: evil\r\nSubject: hi\r\n\r\n", false);
	const char *top = "X-AuthUser: alice\r\nReceived: from client.example";
	ok(strncmp(s, top, strlen(top)) == 0 &&
	       count(s, "X-AuthUser") == 1,
	   "the field for the login at the top, the client's copy gone");
	free(s);
	t.user = "al\r\nice";
	s = fixup(&t, "Subject: hi\r\n\r\n", false);
	top = "X-AuthUser: al??ice\r\n";
	ok(strncmp(s, top, strlen(top)) == 0, "the login is sanitised in the field");
	free(s);
	t.user = NULL;
	s = fixup(&t, "x-authuser: evil\r\n\tmore\r\nSubject: hi\r\n\r\n", false);
	ok(strncmp(s, "Received: ", 10) == 0 && count(s, "evil") == 0 && count(s, "more") == 0,
	   "without a login: no field, and the client's copies still gone");
	free(s);
	t = trace;
	t.auth_header = "X-AuthUser";
	struct message_trace plain = trace;
	ok(message_added_max(&t) == message_added_max(&plain) + strlen("X-AuthUser: alice\r\n"),
	   "SIZE= bound counts the field");
}

/* ---- the ownership check ---- */

struct run {
	struct message_check mc;
	int answers;
	bool last;
};

static void hdr_cb(void *slot, enum sender_login_result res, const char *owners)
{
	(void)owners;
	struct run *r = message_check_ctx(slot);
	r->answers++;
	r->last = message_check_answer(slot, res);
}

/* Checks hdr for user with mode; the verdict as "code enh text" or "". */
static void verdict(struct sender_login *sl, int mode, const char *user, const char *hdr,
		    char *out, size_t outsz, int *answers_r)
{
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.header_from_mode = mode;
	struct run r;
	memset(&r, 0, sizeof(r));
	struct header_info hi;
	header_scan((const uint8_t *)hdr, strlen(hdr), true, &hi);
	struct message_check_args a = {
		.cfg = &cfg, .sl = sl, .user = user, .id = "ID", .cb = hdr_cb, .ctx = &r};
	message_check_start(&r.mc, &a, (const uint8_t *)hdr, &hi);
	if (r.answers != 0)
		ok(0, "no answer inside message_check_start");
	uv_run(&loop, UV_RUN_DEFAULT);
	if (r.answers > 0 && !r.last)
		ok(0, "the last answer says so");
	if (message_check_pending(&r.mc))
		ok(0, "nothing pending after the loop ran");
	const struct smtp_reply *v = message_check_verdict(&r.mc);
	if (v == NULL)
		out[0] = '\0';
	else
		snprintf(out, outsz, "%d %s %s", v->code, v->enh, v->text);
	*answers_r = r.answers;
	message_check_reset(&r.mc);
	ok(message_check_verdict(&r.mc) == NULL && !message_check_pending(&r.mc),
	   "reset: back to idle");
}

static void test_check(void)
{
	char err[256], out[700];
	int n;
	struct sender_login_settings set = {
		.maps = "inline:{ alice@example.com=alice, bob@example.com=bob }, fail:down"};
	struct sender_login_conf *conf = sender_login_conf_new(&set, err, sizeof(err));
	if (!ok(conf != NULL, "maps load: %s", conf ? "" : err))
		return;
	struct sender_login *sl = sender_login_new(conf, &loop);

	verdict(sl, POLICY_HEADER_REJECT, "alice", "From: A <alice@example.com>\r\n\r\n", out,
		sizeof(out), &n);
	is_str(out, "", "owned From: no reply");
	ok(n == 1, "one lookup per address");

	verdict(sl, POLICY_HEADER_REJECT, "alice",
		"From: alice@example.com\r\nSender: bob@example.com\r\n\r\n", out, sizeof(out), &n);
	is_str(out, "550 5.7.1 <bob@example.com>: Sender: header address rejected: not owned by user alice",
	       "a Sender: not owned: 550 5.7.1");
	ok(n == 2, "both fields looked up");

	verdict(sl, POLICY_HEADER_REJECT, "alice", "From: carol@example.net\r\n\r\n", out,
		sizeof(out), &n);
	is_str(out, "451 4.3.0 <carol@example.net>: Temporary lookup failure",
	       "a lookup failure: 451 4.3.0 (invariant 4)");

	verdict(sl, POLICY_HEADER_REJECT, "alice",
		"From: carol@example.net, bob@example.com\r\n\r\n", out, sizeof(out), &n);
	is_str(out, "550 5.7.1 <bob@example.com>: From: header address rejected: not owned by user alice",
	       "a refusal beats a lookup failure");

	verdict(sl, POLICY_HEADER_REJECT, "alice",
		"From: alice@example.com\r\nFrom: bob@example.com\r\n\r\n", out, sizeof(out), &n);
	is_str(out, "550 5.6.0 Error: more than one From: header field",
	       "a field that comes twice: 550 5.6.0 from the header reader");
	ok(n == 0, "refused before any lookup");

	verdict(sl, POLICY_HEADER_REJECT, "alice", "From: undisclosed:;\r\n\r\n", out, sizeof(out),
		&n);
	is_str(out, "550 5.6.0 Error: From: header field has no address", "no address: 550 5.6.0");

	verdict(sl, POLICY_HEADER_WARN, "alice", "From: bob@example.com\r\n\r\n", out, sizeof(out),
		&n);
	is_str(out, "", "header_from_policy = warn: logged, no reply");
	ok(n == 1, "warn still looks up");

	verdict(sl, POLICY_HEADER_WARN, "alice",
		"From: alice@example.com\r\nFrom: alice@example.com\r\n\r\n", out, sizeof(out), &n);
	is_str(out, "", "warn: an unreadable header section is logged, no reply");
	ok(n == 1, "warn: what could be read is still looked up");

	verdict(sl, POLICY_HEADER_OFF, "alice", "From: bob@example.com\r\n\r\n", out, sizeof(out), &n);
	is_str(out, "", "header_from_policy = off: no reply");
	ok(n == 0, "off: no lookup");

	verdict(sl, POLICY_HEADER_REJECT, NULL, "From: bob@example.com\r\n\r\n", out, sizeof(out), &n);
	ok(out[0] == '\0' && n == 0, "no login (a trusted client): not checked");

	verdict(NULL, POLICY_HEADER_REJECT, "alice", "From: bob@example.com\r\n\r\n", out,
		sizeof(out), &n);
	ok(out[0] == '\0' && n == 0, "no sender_login_maps: not checked");

	char big[1200];
	int k = snprintf(big, sizeof(big), "From: ");
	memset(big + k, 'b', 500);
	snprintf(big + k + 500, sizeof(big) - (size_t)k - 500, "@example.com\r\n\r\n");
	verdict(sl, POLICY_HEADER_REJECT, "alice", big, out, sizeof(out), &n);
	ok(strstr(out, "bbb...>: Temporary lookup failure") != NULL && strlen(out) < 600,
	   "a long address is shortened in the reply");

	sender_login_free(&sl);
	uv_run(&loop, UV_RUN_DEFAULT);
	sender_login_conf_free(&conf);
}

int main(void)
{
	setenv("TZ", "UTC", 1);
	tzset();
	uv_loop_init(&loop);
	test_fixups();
	test_added_max();
	test_auth_header();
	test_check();
	uv_loop_close(&loop);
	return done_testing();
}
