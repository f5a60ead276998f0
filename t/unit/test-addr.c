/* Unit tests for smtp/addr: MAIL/RCPT arguments (RFC 5321 §4.1.2,
 * §4.5.3.1; RFC 6531; RFC 1870; RFC 6152; RFC 3461; RFC 4954 §5). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "smtp/addr.h"
#include "tap.h"

#define OK SMTP_ADDR_OK
#define SYN SMTP_ADDR_SYNTAX
#define LONG SMTP_ADDR_TOO_LONG
#define NODOM SMTP_ADDR_NO_DOMAIN
#define BADDOM SMTP_ADDR_BAD_DOMAIN
#define BADP SMTP_ADDR_BAD_PARAM
#define UNKP SMTP_ADDR_UNKNOWN_PARAM
#define DUPP SMTP_ADDR_DUP_PARAM

struct addr_case {
	bool mail;
	const char *args;
	enum smtp_addr_error err;
	const char *addr;  /* expected path on OK */
	const char *extra; /* OK: expected formatted params; error: expected bad_param keyword */
};

static const struct addr_case cases[] = {
	/* paths (RFC 5321 §4.1.2) */
	{true, "FROM:<a@b.example>", OK, "a@b.example", ""},
	{true, "from:<a@b.example>", OK, "a@b.example", ""},
	{true, "FROM: <a@b.example>", OK, "a@b.example", ""},
	{true, "FROM:  <a@b.example>", SYN, "", ""},
	{true, "FROM:a@b.example", SYN, "", ""},
	{true, "FROM:<a@b.example", SYN, "", ""},
	{true, "FROM <a@b.example>", SYN, "", ""},
	{true, "TO:<a@b.example>", SYN, "", ""},
	{true, "FROM:<>", OK, "", ""},
	{false, "TO:<>", SYN, "", ""},
	{true, "FROM:<@x.example,@y.example:a@b.example>", OK, "a@b.example", ""},
	{true, "FROM:<@x.example:a@b.example>", OK, "a@b.example", ""},
	{true, "FROM:<@x.example,y.example:a@b.example>", SYN, "", ""},
	{true, "FROM:<@:a@b.example>", SYN, "", ""},
	{true, "FROM:<\"a b\"@c.example>", OK, "\"a b\"@c.example", ""},
	{true, "FROM:<\"a\\\"b\"@c.example>", OK, "\"a\\\"b\"@c.example", ""},
	{true, "FROM:<\"a b@c.example>", SYN, "", ""},
	{true, "FROM:<a b@c.example>", SYN, "", ""},
	{true, "FROM:<First.Last+tag@Example.COM>", OK, "First.Last+tag@Example.COM", ""},
	{true, "FROM:<a..b@docomo.ne.jp>", OK, "a..b@docomo.ne.jp", ""},
	{true, "FROM:<a@b.example>x", SYN, "", ""},
	{true, "FROM:<a@b.example> ", OK, "a@b.example", ""},
	{true, "FROM:<a>", NODOM, "", ""},
	{true, "FROM:<postmaster>", NODOM, "", ""},
	{false, "TO:<postmaster>", OK, "postmaster", ""},
	{false, "TO:<PostMaster>", OK, "PostMaster", ""},
	{false, "TO:<postmaster2>", NODOM, "", ""},
	{true, "FROM:<@b.example>", SYN, "", ""},
	{true, "FROM:<a@>", BADDOM, "", ""},
	/* domains */
	{true, "FROM:<a@b-c.example>", OK, "a@b-c.example", ""},
	{true, "FROM:<a@-b.example>", BADDOM, "", ""},
	{true, "FROM:<a@b-.example>", BADDOM, "", ""},
	{true, "FROM:<a@b..example>", BADDOM, "", ""},
	{true, "FROM:<a@b.example.>", BADDOM, "", ""},
	{true, "FROM:<a@b_c.example>", BADDOM, "", ""},
	{true, "FROM:<a@b c.example>", BADDOM, "", ""},
	{true, "FROM:<a@localhost>", OK, "a@localhost", ""},
	{true, "FROM:<a@[192.0.2.1]>", OK, "a@[192.0.2.1]", ""},
	{true, "FROM:<a@[192.0.2.256]>", BADDOM, "", ""},
	{true, "FROM:<a@[192.0.2]>", BADDOM, "", ""},
	{true, "FROM:<a@[1.2.3.4.5]>", BADDOM, "", ""},
	{true, "FROM:<a@[IPv6:2001:db8::1]>", OK, "a@[IPv6:2001:db8::1]", ""},
	{true, "FROM:<a@[ipv6:::1]>", OK, "a@[ipv6:::1]", ""},
	{true, "FROM:<a@[IPv6:2001:db8::g]>", BADDOM, "", ""},
	{true, "FROM:<a@[IPv6:1.2.3.4]>", BADDOM, "", ""},
	{true, "FROM:<a@[x-tag:foo]>", BADDOM, "", ""},
	{true, "FROM:<a@[]>", BADDOM, "", ""},
	/* UTF-8 (RFC 6531 §3.3) */
	{true, "FROM:<j\xc3\xb6rg@b\xc3\xbc\x63her.example>", OK, "j\xc3\xb6rg@b\xc3\xbc\x63her.example", ""},
	{true, "FROM:<\xff@b.example>", SYN, "", ""},
	{true, "FROM:<\xc3@b.example>", SYN, "", ""},
	{true, "FROM:<\xed\xa0\x80@b.example>", SYN, "", ""},
	{true, "FROM:<\xc0\xaf@b.example>", SYN, "", ""},
	/* MAIL parameters */
	{true, "FROM:<a@b.example> SIZE=1000", OK, "a@b.example", " SIZE=1000"},
	{true, "FROM:<a@b.example> size=0", OK, "a@b.example", " SIZE=0"},
	{true, "FROM:<a@b.example> SIZE=18446744073709551615", OK, "a@b.example", " SIZE=18446744073709551615"},
	{true, "FROM:<a@b.example> SIZE=18446744073709551616", BADP, "", "SIZE"},
	{true, "FROM:<a@b.example> SIZE=000000000000000000001", BADP, "", "SIZE"},
	{true, "FROM:<a@b.example> SIZE=12a", BADP, "", "SIZE"},
	{true, "FROM:<a@b.example> SIZE=-1", BADP, "", "SIZE"},
	{true, "FROM:<a@b.example> SIZE", BADP, "", "SIZE"},
	{true, "FROM:<a@b.example> SIZE=", BADP, "", "SIZE"},
	{true, "FROM:<a@b.example> BODY=8BITMIME", OK, "a@b.example", " BODY=8BITMIME"},
	{true, "FROM:<a@b.example> body=7bit", OK, "a@b.example", " BODY=7BIT"},
	{true, "FROM:<a@b.example> BODY=BINARYMIME", BADP, "", "BODY"},
	{true, "FROM:<a@b.example> SMTPUTF8", OK, "a@b.example", " SMTPUTF8"},
	{true, "FROM:<a@b.example> SMTPUTF8=yes", BADP, "", "SMTPUTF8"},
	{true, "FROM:<a@b.example> RET=HDRS", OK, "a@b.example", " RET=HDRS"},
	{true, "FROM:<a@b.example> ret=full", OK, "a@b.example", " RET=FULL"},
	{true, "FROM:<a@b.example> RET=BOTH", BADP, "", "RET"},
	{true, "FROM:<a@b.example> ENVID=QQ314159+2B", OK, "a@b.example", " ENVID=QQ314159+2B"},
	{true, "FROM:<a@b.example> ENVID=bad+2", BADP, "", "ENVID"},
	{true, "FROM:<a@b.example> ENVID=bad+zz", BADP, "", "ENVID"},
	{true, "FROM:<a@b.example> ENVID=a=b", BADP, "", "ENVID"},
	{true, "FROM:<a@b.example> AUTH=<>", OK, "a@b.example", " AUTH=<>"},
	{true, "FROM:<a@b.example> AUTH=user+40example.org", OK, "a@b.example", " AUTH=user+40example.org"},
	{true, "FROM:<a@b.example> AUTH=", BADP, "", "AUTH"},
	{true, "FROM:<a@b.example> AUTH=<> AUTH=<>", DUPP, "", "AUTH"},
	{true, "FROM:<a@b.example> SIZE=1 size=2", DUPP, "", "size"},
	{true, "FROM:<a@b.example> FOO=bar", UNKP, "", "FOO"},
	{true, "FROM:<a@b.example> NOTIFY=NEVER", UNKP, "", "NOTIFY"},
	{true, "FROM:<a@b.example> XVERYLONGPARAMETERNAMETHATGOESONANDON=1", UNKP, "", "XVERYLONGPARAMETERNAMETHATGOESO"},
	{true, "FROM:<a@b.example> -X=1", BADP, "", "-X"},
	{true, "FROM:<a@b.example> =1", BADP, "", ""},
	{true, "FROM:<a@b.example> SIZE=1  BODY=8BITMIME", OK, "a@b.example", " SIZE=1 BODY=8BITMIME"},
	{true, "FROM:<a@b.example> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x AUTH=<>", OK, "a@b.example",
	 " SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x AUTH=<>"},
	/* RCPT parameters (RFC 3461 §4.1, §4.2) */
	{false, "TO:<c@d.example> NOTIFY=NEVER", OK, "c@d.example", " NOTIFY=NEVER"},
	{false, "TO:<c@d.example> NOTIFY=SUCCESS,FAILURE,DELAY", OK, "c@d.example", " NOTIFY=SUCCESS,FAILURE,DELAY"},
	{false, "TO:<c@d.example> notify=failure,delay", OK, "c@d.example", " NOTIFY=failure,delay"},
	{false, "TO:<c@d.example> NOTIFY=NEVER,SUCCESS", BADP, "", "NOTIFY"},
	{false, "TO:<c@d.example> NOTIFY=SUCCESS,SUCCESS", BADP, "", "NOTIFY"},
	{false, "TO:<c@d.example> NOTIFY=SUCCESS,", BADP, "", "NOTIFY"},
	{false, "TO:<c@d.example> NOTIFY=SOMETIMES", BADP, "", "NOTIFY"},
	{false, "TO:<c@d.example> NOTIFY", BADP, "", "NOTIFY"},
	{false, "TO:<c@d.example> ORCPT=rfc822;c+40d.example", OK, "c@d.example", " ORCPT=rfc822;c+40d.example"},
	{false, "TO:<c@d.example> ORCPT=c@d.example", BADP, "", "ORCPT"},
	{false, "TO:<c@d.example> ORCPT=;c", BADP, "", "ORCPT"},
	{false, "TO:<c@d.example> ORCPT=rfc822;a+4", BADP, "", "ORCPT"},
	{false, "TO:<c@d.example> NOTIFY=NEVER NOTIFY=NEVER", DUPP, "", "NOTIFY"},
	{false, "TO:<c@d.example> SIZE=1", UNKP, "", "SIZE"},
	{false, "to:<c@d.example>", OK, "c@d.example", ""},
	{false, "TO: <c@d.example>", OK, "c@d.example", ""},
	{false, "FROM:<c@d.example>", SYN, "", ""},
};

static char *path_of(size_t local, size_t domain_label_total, bool route)
{
	/* <local@ddd...d.example> with labels of 60 to reach the size */
	char *s = malloc(local + domain_label_total + 400);
	size_t o = 0;
	o += (size_t)sprintf(s + o, "FROM:<");
	if (route)
		o += (size_t)sprintf(s + o, "@r.example:");
	memset(s + o, 'l', local);
	o += local;
	s[o++] = '@';
	size_t left = domain_label_total;
	while (left > 0) {
		size_t l = left > 60 ? 60 : left;
		memset(s + o, 'd', l);
		o += l;
		left -= l;
		if (left > 0) {
			s[o++] = '.';
			left--;
		}
	}
	o += (size_t)sprintf(s + o, ">");
	s[o] = '\0';
	return s;
}

static void test_table(void)
{
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		const struct addr_case *c = &cases[t];
		char bad[32] = "junk";
		char fmt[1024];
		enum smtp_addr_error err;
		const struct smtp_path *path;
		int flen;
		struct smtp_mail_args ma;
		struct smtp_rcpt_args ra;
		char again[1400];
		if (c->mail) {
			err = smtp_mail_args_parse(c->args, strlen(c->args), &ma, bad);
			path = &ma.path;
			flen = smtp_mail_args_format(&ma, fmt, sizeof(fmt));
			if (err == OK) {
				/* round trip: path + formatted params parse back to the same */
				struct smtp_mail_args mb;
				snprintf(again, sizeof(again), "FROM:<%s>%s", ma.path.addr, fmt);
				enum smtp_addr_error e2 = smtp_mail_args_parse(again, strlen(again), &mb, NULL);
				ok(e2 == OK && strcmp(ma.path.addr, mb.path.addr) == 0 && ma.has_size == mb.has_size &&
					   ma.size == mb.size && ma.body == mb.body && ma.smtputf8 == mb.smtputf8 &&
					   ma.ret == mb.ret && strcmp(ma.envid, mb.envid) == 0 && strcmp(ma.auth, mb.auth) == 0,
				   "MAIL %s: format round-trips", c->args);
			}
		} else {
			err = smtp_rcpt_args_parse(c->args, strlen(c->args), &ra, bad);
			path = &ra.path;
			flen = smtp_rcpt_args_format(&ra, fmt, sizeof(fmt));
			if (err == OK) {
				struct smtp_rcpt_args rb;
				snprintf(again, sizeof(again), "TO:<%s>%s", ra.path.addr, fmt);
				enum smtp_addr_error e2 = smtp_rcpt_args_parse(again, strlen(again), &rb, NULL);
				ok(e2 == OK && strcmp(ra.path.addr, rb.path.addr) == 0 && strcmp(ra.notify, rb.notify) == 0 &&
					   strcmp(ra.orcpt, rb.orcpt) == 0,
				   "RCPT %s: format round-trips", c->args);
			}
		}
		is_int(err, c->err, "%s %s: verdict", c->mail ? "MAIL" : "RCPT", c->args);
		if (err == OK && c->err == OK) {
			is_str(path->addr, c->addr, "%s: address", c->args);
			const char *at = strrchr(path->addr, '@');
			is_int((long long)path->local_len, at ? at - path->addr : (long long)strlen(path->addr),
			       "%s: local_len", c->args);
			bool hi = false;
			for (const char *p = c->addr; *p; p++)
				hi |= (unsigned char)*p >= 0x80;
			is_int(path->utf8, hi, "%s: utf8 flag", c->args);
			is_int(flen, (long long)strlen(c->extra), "%s: format length", c->args);
			is_str(fmt, c->extra, "%s: formatted params", c->args);
		} else if (err == BADP || err == UNKP || err == DUPP) {
			is_str(bad, c->extra, "%s: offending keyword", c->args);
		}
	}
}

static void test_limits(void)
{
	struct smtp_mail_args a;
	char *s;
	/* §4.5.3.1.1 local-part 64 */
	s = path_of(64, 20, false);
	is_int(smtp_mail_args_parse(s, strlen(s), &a, NULL), OK, "local part of 64 ok");
	free(s);
	s = path_of(65, 20, false);
	is_int(smtp_mail_args_parse(s, strlen(s), &a, NULL), LONG, "local part of 65 too long");
	free(s);
	/* §4.5.3.1.3 path 256 incl. <>: local 10 + @ + domain 243 + <> = 256 */
	s = path_of(10, 243, false);
	is_int(smtp_mail_args_parse(s, strlen(s), &a, NULL), OK, "path of 256 ok");
	is_int((long long)strlen(a.path.addr), 254, "path of 256: mailbox of 254");
	free(s);
	s = path_of(10, 244, false);
	is_int(smtp_mail_args_parse(s, strlen(s), &a, NULL), LONG, "path of 257 too long");
	free(s);
	/* the source route counts toward the path (punctuation included) */
	s = path_of(10, 243, true);
	is_int(smtp_mail_args_parse(s, strlen(s), &a, NULL), LONG, "source route counts toward the path");
	free(s);
	/* §4.5.3.1.2 domain 255 */
	s = path_of(1, 300, false);
	is_int(smtp_mail_args_parse(s, strlen(s), &a, NULL), LONG, "domain of 300 too long");
	free(s);
	/* a 64-octet DNS label is invalid (RFC 1035 §2.3.4) */
	char lbl[128];
	snprintf(lbl, sizeof(lbl), "FROM:<a@%064d.example>", 0);
	is_int(smtp_mail_args_parse(lbl, strlen(lbl), &a, NULL), BADDOM, "label of 64 refused");
	snprintf(lbl, sizeof(lbl), "FROM:<a@%063d.example>", 0);
	is_int(smtp_mail_args_parse(lbl, strlen(lbl), &a, NULL), OK, "label of 63 ok");

	/* ENVID <= 100, ORCPT <= 500 (RFC 3461 §4.4, §4.2) */
	char buf[1200];
	snprintf(buf, sizeof(buf), "FROM:<a@b.example> ENVID=%0100d", 0);
	is_int(smtp_mail_args_parse(buf, strlen(buf), &a, NULL), OK, "ENVID of 100 ok");
	snprintf(buf, sizeof(buf), "FROM:<a@b.example> ENVID=%0101d", 0);
	is_int(smtp_mail_args_parse(buf, strlen(buf), &a, NULL), BADP, "ENVID of 101 refused");
	struct smtp_rcpt_args r;
	snprintf(buf, sizeof(buf), "TO:<a@b.example> ORCPT=rfc822;%0493d", 0);
	is_int(smtp_rcpt_args_parse(buf, strlen(buf), &r, NULL), OK, "ORCPT of 500 ok");
	snprintf(buf, sizeof(buf), "TO:<a@b.example> ORCPT=rfc822;%0494d", 0);
	is_int(smtp_rcpt_args_parse(buf, strlen(buf), &r, NULL), BADP, "ORCPT of 501 refused");
	/* AUTH= up to the field's size */
	snprintf(buf, sizeof(buf), "FROM:<a@b.example> AUTH=%0770d", 0);
	is_int(smtp_mail_args_parse(buf, strlen(buf), &a, NULL), OK, "AUTH of 770 ok");
	snprintf(buf, sizeof(buf), "FROM:<a@b.example> AUTH=%0771d", 0);
	is_int(smtp_mail_args_parse(buf, strlen(buf), &a, NULL), BADP, "AUTH of 771 refused");

	/* only len bytes are read */
	is_int(smtp_mail_args_parse("FROM:<a@b.example>JUNK", 18, &a, NULL), OK, "parse honours len");
	/* NUL inside is not an end */
	is_int(smtp_mail_args_parse("FROM:<a\0@b.example>", 19, &a, NULL), SYN, "NUL in the path refused");

	/* format: too small buffers */
	smtp_mail_args_parse("FROM:<a@b.example> SIZE=100", 27, &a, NULL);
	char small[10];
	is_int(smtp_mail_args_format(&a, small, sizeof(small)), 9, "format fits exactly");
	is_int(smtp_mail_args_format(&a, small, 9), -1, "format one byte short");
	is_int(smtp_mail_args_format(&a, small, 0), -1, "format into nothing");
}

int main(void)
{
	test_table();
	test_limits();
	return done_testing();
}
