/* Unit tests for the header part of src/policy/sender_login.c: which
 * From:/Sender: addresses the ownership check looks up, and what it refuses
 * before any lookup (RFC 5322 §3.6, RFC 6854, RFC 6409 §8; docs/design.md
 * invariant 11: the whole field or a refusal). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "policy/sender_login.h"
#include "smtp/header.h"
#include "tap.h"

/* The addresses as "field addr|field addr", and the refusal (or ""). */
static void run(const char *hdr, char *addrs, size_t asz, char *refusal, size_t rsz)
{
	struct header_info hi;
	const uint8_t *h = (const uint8_t *)hdr;
	header_scan(h, strlen(hdr), true, &hi);
	struct sender_login_hdr r;
	bool okay = sender_login_header_read(h, &hi, &r);
	addrs[0] = '\0';
	for (size_t i = 0; i < r.naddrs; i++) {
		size_t n = strlen(addrs);
		snprintf(addrs + n, asz - n, "%s%s %s", i ? "|" : "", r.addrs[i].field, r.addrs[i].addr);
	}
	snprintf(refusal, rsz, "%s", r.refusal);
	if (okay != (r.refusal[0] == '\0'))
		snprintf(refusal, rsz, "return value and refusal disagree");
	sender_login_header_free(&r);
}

static void check(const char *name, const char *hdr, const char *want_addrs, const char *want_refusal)
{
	char addrs[4096], refusal[400];
	run(hdr, addrs, sizeof(addrs), refusal, sizeof(refusal));
	is_str(addrs, want_addrs, "%s: addresses", name);
	is_str(refusal, want_refusal, "%s: refusal", name);
}

int main(void)
{
	check("display name and angle address", "From: Alice <alice@example.com>\r\n\r\n",
	      "From: alice@example.com", "");
	check("a comma inside a quoted display name does not split",
	      "From: \"Boss, The\" <bob@example.com>\r\n\r\n", "From: bob@example.com", "");
	check("a display name that looks like an address is not the address",
	      "From: \"alice@example.com\" <mallory@evil.example>\r\n\r\n", "From: mallory@evil.example", "");
	check("From: and Sender:", "From: a@x.example, B <b@y.example>\r\nSender: c@z.example\r\n\r\n",
	      "From: a@x.example|From: b@y.example|Sender: c@z.example", "");
	check("a group", "From: team: a@x.example, b@y.example;\r\n\r\n",
	      "From: a@x.example|From: b@y.example", "");
	check("the same address twice is looked up once",
	      "From: a@x.example\r\nSender: A@X.example\r\n\r\n", "From: a@x.example", "");
	check("a folded field is read whole", "From: \"A\"\r\n <a@x.example>,\r\n\tb@y.example\r\n\r\n",
	      "From: a@x.example|From: b@y.example", "");
	check("a second From: field", "From: a@x.example\r\nFrom: b@y.example\r\n\r\n",
	      "From: a@x.example",
	      "550 5.6.0 Error: more than one From: header field");
	check("a second Sender: field", "From: a@x.example\r\nSender: a@x.example\r\nSender: c@evil.example\r\n\r\n",
	      "From: a@x.example", "550 5.6.0 Error: more than one Sender: header field");
	check("From : (obsolete space) counts as a second From:",
	      "From: a@x.example\r\nFrom : c@evil.example\r\n\r\n", "From: a@x.example",
	      "550 5.6.0 Error: more than one From: header field");
	check("an empty From:", "From:\r\n\r\n", "", "550 5.6.0 Error: From: header field unreadable: no address at octet 1");
	check("only an empty group", "From: undisclosed-recipients:;\r\n\r\n", "",
	      "550 5.6.0 Error: From: header field has no address");
	check("no address at all", "From: Jane Doe\r\n\r\n", "",
	      "550 5.6.0 Error: From: header field unreadable: display name without an address at octet 10");
	check("unreadable Sender:", "From: a@x.example\r\nSender: <b@y.example\r\n\r\n", "From: a@x.example",
	      "550 5.6.0 Error: Sender: header field unreadable: malformed angle address at octet 14");

	/* The bypasses of a fixed 511-octet copy: everything is read. */
	char big[3000];
	char pad[701];
	memset(pad, 'x', 600);
	pad[600] = '\0';
	snprintf(big, sizeof(big), "From: (%s) <ceo@victim.example>\r\n\r\n", pad);
	check("600-octet comment before the address", big, "From: ceo@victim.example", "");
	memset(pad, ' ', 600);
	snprintf(big, sizeof(big), "From: <%sceo@victim.example>\r\n\r\n", pad);
	check("600 spaces inside <>", big, "From: ceo@victim.example", "");
	memset(pad, 'x', 600);
	snprintf(big, sizeof(big), "From: jane@example.net, (%s) ceo@victim.example\r\n\r\n", pad);
	check("a second address after 600 octets", big, "From: jane@example.net|From: ceo@victim.example", "");
	snprintf(big, sizeof(big), "From: \"%s\" <john@example.org>\r\n\r\n", pad);
	check("a 600-octet display name", big, "From: john@example.org", "");
	char want[400];
	memset(pad, 'a', 244);
	pad[244] = '\0';
	snprintf(big, sizeof(big), "From: <%s@example.net.au>\r\n\r\n", pad);
	snprintf(want, sizeof(want), "From: %s@example.net.au", pad);
	check("a 259-octet address is whole", big, want, "");

	/* More addresses than are looked up */
	check("nine addresses",
	      "From: a@x.example, b@x.example, c@x.example, d@x.example, e@x.example, f@x.example, "
	      "g@x.example, h@x.example, i@x.example\r\n\r\n",
	      "From: a@x.example|From: b@x.example|From: c@x.example|From: d@x.example|"
	      "From: e@x.example|From: f@x.example|From: g@x.example|From: h@x.example",
	      "550 5.7.1 Error: too many From:/Sender: addresses to check");
	check("no From: at all", "Subject: x\r\n\r\n", "", "");
	check("a continuation line first", " x\r\nFrom: a@x.example\r\n\r\n", "From: a@x.example",
	      "550 5.6.0 Error: malformed header section at octet 1");
	check("an mbox \"From \" line", "From: a@x.example\r\nFrom c@evil.example\r\n\r\n",
	      "From: a@x.example", "550 5.6.0 Error: malformed header section at octet 20");
	return done_testing();
}
