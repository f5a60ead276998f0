/* policy/restrictions.c: Postfix's restriction lists, item by item, with
 * Postfix's reply texts (docs/restrictions.md); the FQDN test as Postfix's
 * valid_hostname() draws it; access tables in Postfix's lookup order. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "policy/restrictions.h"
#include "tap.h"

struct verdict {
	enum restrictions_verdict v;
	struct smtp_reply r;
	size_t next;
	enum sender_login_policy pol;
};

static struct verdict eval(const char *list, enum restrictions_stage stage,
			   const struct restrictions_facts *f)
{
	char err[512];
	struct verdict out = {0};
	struct restrictions *r = restrictions_parse("test", list, stage, err, sizeof(err));
	if (r == NULL) {
		diag("parse %s: %s", list, err);
		out.v = RESTRICTIONS_REJECT;
		snprintf(out.r.text, sizeof(out.r.text), "PARSE: %s", err);
		return out;
	}
	out.v = restrictions_eval(r, 0, f, &out.r, &out.next, &out.pol);
	restrictions_free(&r);
	return out;
}

static const char *line(const struct verdict *v, char *buf, size_t n)
{
	if (v->v == RESTRICTIONS_PERMIT)
		return "permit";
	if (v->v == RESTRICTIONS_LOGIN)
		return "login";
	snprintf(buf, n, "%d %s %s", v->r.code, v->r.enh, v->r.text);
	return buf;
}

/* reject_unknown_*_domain: the list hands the lookup back (session_dns.c
 * runs it), then Postfix's reply for each answer. */
static void test_unknown_domain(void)
{
	struct restrictions_facts f = {
		.sender = "alice@example.com", .recipient = "bob@example.net", .delimiters = "+"};
	struct verdict v = eval("permit_mynetworks, reject_unknown_sender_domain, reject",
				RESTRICTIONS_SENDER, &f);
	ok(v.v == RESTRICTIONS_DNS && v.next == 2,
	   "reject_unknown_sender_domain: DNS, resume at 2");
	char err[200];
	struct restrictions *r = restrictions_parse(
		"x", "reject_unknown_sender_domain reject_unknown_recipient_domain",
		RESTRICTIONS_RECIPIENT, err, sizeof(err));
	bool rcpt = true;
	const char *domain = NULL;
	const char *addr = restrictions_dns_address(r, 1, &f, &rcpt, &domain);
	ok(!rcpt && strcmp(addr, "alice@example.com") == 0 && strcmp(domain, "example.com") == 0,
	   "item 1 asks about the sender's domain");
	addr = restrictions_dns_address(r, 2, &f, &rcpt, &domain);
	ok(rcpt && strcmp(domain, "example.net") == 0, "item 2 about the recipient's");
	restrictions_free(&r);
	f.sender = "";
	v = eval("reject_unknown_sender_domain", RESTRICTIONS_SENDER, &f);
	ok(v.v == RESTRICTIONS_PERMIT, "the null sender is not looked up");
	f.sender = "alice@[192.0.2.1]";
	v = eval("reject_unknown_sender_domain", RESTRICTIONS_SENDER, &f);
	ok(v.v == RESTRICTIONS_PERMIT, "an address literal is not looked up");
	f.sender = "alice";
	v = eval("reject_unknown_sender_domain", RESTRICTIONS_SENDER, &f);
	ok(v.v == RESTRICTIONS_PERMIT, "no domain: not looked up");
	f.recipient = NULL; /* as at MAIL */
	v = eval("reject_unknown_recipient_domain", RESTRICTIONS_SENDER, &f);
	ok(v.v == RESTRICTIONS_PERMIT, "the recipient restriction at MAIL: nothing to ask");

	struct smtp_reply out;
	ok(!restrictions_unknown_domain_reply("a@x.test", "x.test", false, 450, DNS_OK, false,
					      false, &out),
	   "found: passes");
	static const struct {
		bool rcpt;
		unsigned code;
		enum dns_status st;
		bool null_mx;
		const char *want;
		bool malformed;
	} cases[] = {
		{false, 450, DNS_NXDOMAIN, false,
		 "450 4.1.8 <a@x.test>: Sender address rejected: Domain not found", false},
		{true, 450, DNS_NODATA, false,
		 "450 4.1.2 <a@x.test>: Recipient address rejected: Domain not found", false},
		{false, 550, DNS_NXDOMAIN, false,
		 "550 5.1.8 <a@x.test>: Sender address rejected: Domain not found", false},
		{true, 550, DNS_TEMPFAIL, false,
		 "450 4.1.2 <a@x.test>: Recipient address rejected: Domain not found", false},
		{false, 450, DNS_NODATA, true,
		 "550 5.7.27 <a@x.test>: Sender address rejected: Domain x.test does not accept "
		 "mail "
		 "(nullMX)",
		 false},
		{true, 450, DNS_NODATA, true,
		 "556 5.1.10 <a@x.test>: Recipient address rejected: Domain x.test does not accept "
		 "mail (nullMX)",
		 false},
		/* Postfix's DNS_INVAL: unknown_address_reject_code, its own text */
		{false, 450, DNS_NODATA, false,
		 "450 4.1.8 <a@x.test>: Sender address rejected: Malformed DNS server reply", true},
		{true, 550, DNS_NODATA, false,
		 "550 5.1.2 <a@x.test>: Recipient address rejected: Malformed DNS server reply",
		 true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[600];
		restrictions_unknown_domain_reply("a@x.test", "x.test", cases[i].rcpt,
						  cases[i].code, cases[i].st, cases[i].null_mx,
						  cases[i].malformed, &out);
		snprintf(buf, sizeof(buf), "%d %s %s", out.code, out.enh, out.text);
		ok(strcmp(buf, cases[i].want) == 0, "unknown domain reply %zu: %s", i, buf);
	}
}

static void check(const char *list, enum restrictions_stage stage,
		  const struct restrictions_facts *f, const char *want, const char *name)
{
	char buf[600];
	struct verdict v = eval(list, stage, f);
	is_str(line(&v, buf, sizeof(buf)), want, "%s", name);
}

int main(void)
{
	/* the FQDN rule */
	static const struct {
		const char *addr;
		bool fqdn;
	} fq[] = {
		{"a@example.com", true}, {"a@example.com.", true}, {"a@example.com..", false},
		{"a@localhost", false}, {"a", false}, {"a@", false}, {"a@[192.0.2.1]", true},
		{"a@[IPv6:2001:db8::1]", true}, {"a@123.456", false}, {"a@1x.2", true},
		{"a@-x.example", false}, {"a@x-.example", false}, {"a@x_y.example", true},
		{"a@x..example", false}, {"a@.example", false}, {"\"a@b\"@example.com", true},
		{"a@b@localhost", false},
	};
	for (size_t i = 0; i < sizeof(fq) / sizeof(fq[0]); i++)
		ok(restrictions_fqdn(fq[i].addr, false) == fq[i].fqdn, "fqdn(%s) = %d", fq[i].addr,
		   fq[i].fqdn);
	char label[80];
	memset(label, 'a', 63);
	snprintf(label + 63, sizeof(label) - 63, ".example");
	char addr[200];
	snprintf(addr, sizeof(addr), "x@%s", label);
	ok(restrictions_fqdn(addr, false), "a 63-byte label is fine");
	snprintf(addr, sizeof(addr), "x@a%s", label);
	ok(!restrictions_fqdn(addr, false), "a 64-byte label is not");
	ok(!restrictions_fqdn("a@b\xc3\xa9.example", false), "UTF-8 domain without SMTPUTF8: not FQDN");
	ok(restrictions_fqdn("a@b\xc3\xa9.example", true), "UTF-8 domain with SMTPUTF8: FQDN");

	struct restrictions_facts f = {
		.sender = "alice@example.com", .recipient = "bob@localhost",
		.login = "alice@example.com", .delimiters = "+",
	};
	enum restrictions_stage R = RESTRICTIONS_RECIPIENT, S = RESTRICTIONS_SENDER;
	check("reject_non_fqdn_recipient", R, &f,
	      "504 5.5.2 <bob@localhost>: Recipient address rejected: need fully-qualified address",
	      "reject_non_fqdn_recipient: Postfix's reply");
	f.recipient = "bob@example.net";
	check("reject_non_fqdn_recipient", R, &f, "permit", "... an FQDN passes");
	f.sender = "alice@host";
	check("reject_non_fqdn_sender", S, &f,
	      "504 5.5.2 <alice@host>: Sender address rejected: need fully-qualified address",
	      "reject_non_fqdn_sender at MAIL");
	check("reject_non_fqdn_sender", R, &f,
	      "504 5.5.2 <alice@host>: Sender address rejected: need fully-qualified address",
	      "reject_non_fqdn_sender in the recipient list: about the sender");
	f.sender = "";
	check("reject_non_fqdn_sender", S, &f, "permit", "the null sender is exempt");
	f.sender = "alice@example.com";
	f.recipient = NULL;
	check("reject_non_fqdn_recipient", S, &f, "permit", "no recipient at MAIL: nothing to check");

	f.recipient = "bob@example.net";
	check("permit_sasl_authenticated, reject", R, &f, "permit", "permit_sasl_authenticated, logged in");
	f.login = NULL;
	check("permit_sasl_authenticated, reject", R, &f,
	      "554 5.7.1 <bob@example.net>: Recipient address rejected: Access denied",
	      "reject: Postfix's generic reply (recipient)");
	check("permit_sasl_authenticated reject", S, &f,
	      "554 5.7.1 <alice@example.com>: Sender address rejected: Access denied",
	      "reject in the sender list: about the sender; spaces separate too");
	check("defer", S, &f, "450 4.3.2 <alice@example.com>: Sender address rejected: Try again later",
	      "defer");
	f.mynetworks = true;
	check("permit_mynetworks,reject", R, &f, "permit", "permit_mynetworks");
	f.mynetworks = false;
	check("reject_unauth_destination", R, &f, "554 5.7.1 <bob@example.net>: Relay access denied",
	      "reject_unauth_destination: neither logged in nor trusted");
	f.trusted = true;
	check("reject_unauth_destination", R, &f, "permit", "... a trusted client");
	f.trusted = false;
	f.login = "alice@example.com";
	check("reject_unauth_destination", R, &f, "permit", "... a logged-in user");

	/* access tables, Postfix's order and actions */
	const char *tbl = "check_recipient_access inline:{ bob+x@example.net=REJECT, "
			  "bob@example.net=OK, { example.org = 550 5.1.1 no such domain }, "
			  "x@=DUNNO, example.edu=REJECT, x@sub.example.edu=DEFER }, reject";
	f.recipient = "bob+x@example.net";
	check(tbl, R, &f, "554 5.7.1 <bob+x@example.net>: Recipient address rejected: Access denied",
	      "check_recipient_access: full address first, REJECT");
	f.recipient = "bob+y@Example.NET";
	check(tbl, R, &f, "permit", "... then without the extension (case folded): OK");
	f.recipient = "carol@a.b.example.org";
	check(tbl, R, &f, "550 5.1.1 <carol@a.b.example.org>: Recipient address rejected: no such domain",
	      "... then the parent domains; 5NN with its enhanced code");
	f.recipient = "x@sub.example.edu";
	check(tbl, R, &f, "450 4.7.1 <x@sub.example.edu>: Recipient address rejected: Access denied",
	      "... the full address before its domain; DEFER");
	f.recipient = "x@other.example.edu";
	check(tbl, R, &f, "554 5.7.1 <x@other.example.edu>: Recipient address rejected: Access denied",
	      "... the parent domain before user@ (x@ is DUNNO: the list's reject would say the same)");
	f.recipient = "x@example.com";
	check(tbl, R, &f, "554 5.7.1 <x@example.com>: Recipient address rejected: Access denied",
	      "... user@ DUNNO goes on to the next restriction");
	check("check_sender_access inline:{ { <> = REJECT empty sender } }", S,
	      &(struct restrictions_facts){.sender = ""},
	      "554 5.7.1 <>: Sender address rejected: empty sender", "<> is looked up for the null sender");
	check("check_sender_access inline:{ { example.com = 451 4.7.1 later } }", S, &f,
	      "451 4.7.1 <alice@example.com>: Sender address rejected: later", "4NN text");
	check("check_sender_access inline:{ { example.com = 550 4.7.1 mixed } }", S, &f,
	      "550 5.7.1 <alice@example.com>: Sender address rejected: mixed",
	      "the enhanced code's class follows the reply code");
	check("check_sender_access inline:{ example.com=FROBNICATE }", S, &f,
	      "451 4.3.5 Server configuration error", "an unknown action");
	check("check_sender_access inline:{ alice@=12345 }, reject", S, &f, "permit",
	      "all digits permit; user@ is looked up");

	/* quoted localparts: looked up and named unquoted, as Postfix does */
	f.recipient = "\"bob+x\"@example.net";
	check(tbl, R, &f, "554 5.7.1 <bob+x@example.net>: Recipient address rejected: Access denied",
	      "\"bob+x\"@example.net meets bob+x@example.net");
	f.recipient = "\"b\\ob\"+y@example.net";
	check(tbl, R, &f, "permit", "a quoted pair is unquoted; the extension cut after it");
	f.recipient = "\"x\"@sub.example.edu";
	check(tbl, R, &f, "450 4.7.1 <x@sub.example.edu>: Recipient address rejected: Access denied",
	      "\"x\"@sub.example.edu meets x@sub.example.edu");
	f.recipient = "\"x@sub.example.edu\"@example.com";
	check(tbl, R, &f, "554 5.7.1 <x@sub.example.edu@example.com>: Recipient address rejected: "
			  "Access denied", "an '@' inside quotes is not the domain's");
	check("check_sender_access inline:{ alice@example.com=REJECT }", S,
	      &(struct restrictions_facts){.sender = "\"alice\"@example.com"},
	      "554 5.7.1 <alice@example.com>: Sender address rejected: Access denied",
	      "check_sender_access: \"alice\"@example.com meets alice@example.com");
	check("reject_non_fqdn_sender", S, &(struct restrictions_facts){.sender = "\"a b\"@localhost"},
	      "504 5.5.2 <a b@localhost>: Sender address rejected: need fully-qualified address",
	      "other replies name the unquoted form too");
	char longaddr[700];
	memset(longaddr, 'a', 650);
	strcpy(longaddr + 650, "@example.com");
	check("check_sender_access inline:{ example.com=OK }", S,
	      &(struct restrictions_facts){.sender = longaddr},
	      "501 5.1.3 Error: address too long", "an address longer than any check sees: refused");
	f.recipient = "x@example.com";

	/* ownership in the list */
	struct verdict v = eval("permit_mynetworks, reject_sender_login_mismatch, reject", S, &f);
	ok(v.v == RESTRICTIONS_LOGIN && v.next == 2 && v.pol == SENDER_LOGIN_REJECT_MISMATCH,
	   "reject_sender_login_mismatch hands the check back, resume at 2");
	v = eval("reject_authenticated_sender_login_mismatch", S, &f);
	ok(v.v == RESTRICTIONS_LOGIN && v.pol == SENDER_LOGIN_REJECT_AUTHENTICATED,
	   "reject_authenticated_sender_login_mismatch");

	/* parse errors */
	char err[512];
	struct restrictions *r;
	r = restrictions_parse("recipient_restrictions", "reject_rbl_client", R, err, sizeof(err));
	ok(r == NULL && strstr(err, "not supported yet"), "not built yet: refused, named: %s", err);
	test_unknown_domain();
	r = restrictions_parse("recipient_restrictions", "frobnicate", R, err, sizeof(err));
	ok(r == NULL && strstr(err, "unknown restriction \"frobnicate\""), "unknown: %s", err);
	r = restrictions_parse("x", "check_sender_access", S, err, sizeof(err));
	ok(r == NULL && strstr(err, "needs a table"), "check_sender_access without a table: %s", err);
	/* check_client_access: the address, then shorter prefixes; no names */
	f.recipient = "bob@example.net";
	f.client_addr = "192.0.2.17";
	f.helo = "Mail.Sub.Example.COM";
	f.login = "alice@example.com";
	const char *ca = "check_client_access inline:{ 192.0.2.17=REJECT, 198.51=OK, "
			 "{ 203.0.113 = 554 5.7.0 go away }, 2001:db8:1:=DEFER }, "
			 "reject";
	check(ca, R, &f, "554 5.7.1 <unknown[192.0.2.17]>: Client host rejected: Access denied",
	      "check_client_access: the full address");
	f.client_addr = "198.51.100.9";
	check(ca, R, &f, "permit", "check_client_access: a two-octet prefix (OK)");
	f.client_addr = "203.0.113.250";
	check(ca, S, &f, "554 5.7.0 <unknown[203.0.113.250]>: Client host rejected: go away",
	      "check_client_access: a three-octet prefix, its own code and text");
	f.client_addr = "2001:DB8:1::5";
	check(ca, R, &f, "450 4.7.1 <unknown[2001:db8:1::5]>: Client host rejected: Access denied",
	      "check_client_access: IPv6, compressed form, cut at ':' (2001:db8:1:)");
	f.client_addr = "192.0.2.170";
	check(ca, R, &f, "554 5.7.1 <bob@example.net>: Recipient address rejected: Access denied",
	      "check_client_access: 192.0.2.170 is not 192.0.2.17");
	check("check_client_access inline:{ unknown=REJECT, 192.0.2.170=OK }", R, &f,
	      "554 5.7.1 <unknown[192.0.2.170]>: Client host rejected: Access denied",
	      "check_client_access: the name \"unknown\" first, as Postfix without reverse names");
	f.client_addr = NULL;
	check("check_client_access inline:{ 1=REJECT }", R, &f, "permit", "no client address: DUNNO");
	f.client_addr = "192.0.2.17";

	/* check_helo_access: the name, then its parent domains, case-blind */
	const char *ha = "check_helo_access inline:{ example.com=REJECT, "
			 "{ bad.example.net = 550 5.7.1 forged HELO }, [192.0.2.1]=OK }, reject";
	check(ha, R, &f,
	      "554 5.7.1 <Mail.Sub.Example.COM>: Helo command rejected: Access denied",
	      "check_helo_access: a parent domain matches, the reply names the HELO as sent");
	f.helo = "bad.example.net";
	check(ha, S, &f, "550 5.7.1 <bad.example.net>: Helo command rejected: forged HELO",
	      "check_helo_access: 5NN text");
	f.helo = "good.example.net";
	check(ha, R, &f, "554 5.7.1 <bob@example.net>: Recipient address rejected: Access denied",
	      "check_helo_access: no entry: the next restriction");
	f.helo = "[192.0.2.1]";
	check(ha, R, &f, "permit", "check_helo_access: an address literal as written");
	f.helo = NULL;
	check("check_helo_access inline:{ com=REJECT }", R, &f, "permit", "no HELO: DUNNO");

	/* hash: is read (lookup/table_db.c); the other indexed types are refused with
	   what to write instead */
	r = restrictions_parse("x", "check_client_access hash:/nonexistent/client_access", S, err,
			       sizeof(err));
	ok(r == NULL && strstr(err, "client_access.db") && strstr(err, "run postmap"),
	   "hash: without its .db: the hint to run postmap: %s", err);
	r = restrictions_parse("x", "check_client_access lmdb:/etc/postfix/client_access", S, err,
			       sizeof(err));
	ok(r == NULL && strstr(err, "texthash:FILE"), "lmdb: refused with the texthash hint: %s", err);
	r = restrictions_parse("x", "reject_unlisted_recipient", R, err, sizeof(err));
	ok(r == NULL && strstr(err, "reject_unlisted_recipient"), "reject_unlisted_recipient refused: %s",
	   err);
	r = restrictions_parse("x", "", S, err, sizeof(err));
	ok(r != NULL && restrictions_count(r) == 0, "empty list");
	check("", S, &f, "permit", "an empty list permits");
	restrictions_free(&r);
	return done_testing();
}
