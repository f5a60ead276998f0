/* test-generic: generic_maps (relay/relay_generic.h) and the header field
 * rebuilding of smtp/addrhdr.h — shapes, lookup order, recipient_delimiter,
 * values refused at load, hostile fields. t/proto/82-generic.py compares
 * the same shapes with Postfix. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "lookup/table.h"
#include "relay/relay_generic.h"
#include "smtp/addrhdr.h"
#include "tap.h"

#define TABLE                                                                     \
	"inline:{his@localdomain.local=hisaccount@hisisp.example, "               \
	"her@localdomain.local=heraccount@herisp.example, "                       \
	"@localdomain.local=hisaccount+local@hisisp.example, "                    \
	"ext+x@ex.example=exact@ex.example, ext@ex.example=stripped@ex.example, " \
	"@keep.example=@other.example, cut@keep.example=@cut.example}"

static struct config cfg;

static const char *hdr(const char *in)
{
	static struct buf out;
	buf_free(&out);
	enum relay_generic_result r =
		relay_generic_header(&cfg, (const uint8_t *)in, strlen(in), 1 << 22, &out);
	if (r != RELAY_GENERIC_REWRITTEN)
		return r == RELAY_GENERIC_SAME ? "(unchanged)" : "(too big)";
	buf_append(&out, "", 1);
	return (const char *)buf_data(&out);
}

static const char *env(const char *addr)
{
	static char out[300];
	if (!relay_generic_addr(&cfg, addr, out, sizeof(out)))
		return "(unchanged)";
	return out;
}

static const char *load(const char *spec)
{
	static char err[600];
	struct config c = {0};
	c.generic_maps = (char *)spec;
	err[0] = '\0';
	bool ok = relay_generic_load(&c, err, sizeof(err));
	table_free(&c.generic_table);
	return ok ? "ok" : err;
}

int main(void)
{
	char err[300];
	cfg.recipient_delimiter = "+";
	cfg.generic_table = table_open(TABLE, err, sizeof(err));
	ok(cfg.generic_table != NULL, "table opens: %s", err);

	/* envelope: lookup order and the delimiter */
	is_str(env("his@localdomain.local"), "hisaccount@hisisp.example", "full address");
	is_str(env("HIS@LocalDomain.Local"), "hisaccount@hisisp.example", "case-insensitive");
	is_str(env("bob@localdomain.local"), "hisaccount+local@hisisp.example", "@domain");
	is_str(env("ext+x@ex.example"), "exact@ex.example", "user+ext@domain first");
	is_str(env("ext+y@ex.example"), "stripped@ex.example",
	       "then user@domain; the extension is not carried over");
	is_str(env("joe+y@keep.example"), "joe+y@other.example",
	       "@domain -> @other keeps the local part with its extension");
	is_str(env("cut+y@keep.example"), "cut@cut.example",
	       "user@domain -> @other keeps the local part without the cut extension");
	is_str(env("\"a b\"@keep.example"), "\"a b\"@other.example",
	       "quoted local part stays quoted");
	is_str(env("nobody@elsewhere.example"), "(unchanged)", "no entry: unchanged");
	is_str(env(""), "(unchanged)", "the null sender is never mapped");
	is_str(env("hisaccount@hisisp.example"), "(unchanged)", "one lookup: no chains");

	/* headers */
	is_str(hdr("Subject: his@localdomain.local\r\n\r\n"), "(unchanged)",
	       "not an address field");
	is_str(hdr("To: x@y.example\r\n\r\n"), "(unchanged)", "no match: untouched");
	is_str(hdr("From: His Name <his@localdomain.local>\r\n\r\n"),
	       "From: His Name <hisaccount@hisisp.example>\r\n\r\n", "Name <addr>");
	is_str(hdr("fROM: his@localdomain.local\r\n\r\n"),
	       "fROM: hisaccount@hisisp.example\r\n\r\n", "bare address, name case kept");
	is_str(hdr("From: \"Quoted, Name\" <his@localdomain.local>\r\n\r\n"),
	       "From: \"Quoted, Name\" <hisaccount@hisisp.example>\r\n\r\n", "quoted phrase");
	is_str(hdr("From: his@localdomain.local (His Name)\r\n\r\n"),
	       "From: hisaccount@hisisp.example (His Name)\r\n\r\n", "trailing comment");
	is_str(hdr("From: his(c)@localdomain.local\r\n\r\n"),
	       "From: hisaccount@hisisp.example (c)\r\n\r\n", "a comment inside moves after");
	is_str(hdr("From: John Q. Public <his@localdomain.local>\r\n\r\n"),
	       "From: John Q.Public <hisaccount@hisisp.example>\r\n\r\n",
	       "no space around a dot in a phrase");
	is_str(hdr("To: a@x.example,his@localdomain.local\r\n\r\n"),
	       "To: a@x.example, hisaccount@hisisp.example\r\n\r\n", "list: joined on one line");
	is_str(hdr("To: \"a\"@x.example, his@localdomain.local\r\n\r\n"),
	       "To: a@x.example, hisaccount@hisisp.example\r\n\r\n",
	       "the other addresses of a rewritten field are normalised");
	is_str(hdr("To: aaaaaaaaaaaaaaaaaaaa@x.example,\r\n bbbbbbbbbbbbbbbbbbbbbbbb@x.example, "
		   "his@localdomain.local\r\n\r\n"),
	       "To: aaaaaaaaaaaaaaaaaaaa@x.example,\r\n"
	       "\tbbbbbbbbbbbbbbbbbbbbbbbb@x.example, hisaccount@hisisp.example\r\n\r\n",
	       "refolded under 70 columns, TAB continuation");
	is_str(hdr("To: undisclosed-recipients:;\r\n\r\n"), "(unchanged)", "empty group untouched");
	is_str(hdr("To: friends: his@localdomain.local, b@x.example;\r\n\r\n"),
	       "To: friends: hisaccount@hisisp.example, b@x.example;\r\n\r\n", "group members");
	is_str(hdr("Resent-From: her@localdomain.local\r\nX: y\r\n\r\n"),
	       "Resent-From: heraccount@herisp.example\r\nX: y\r\n\r\n", "Resent-From");
	is_str(hdr("From: a\0b <his@localdomain.local>\r\n\r\n"), "(unchanged)",
	       "sanity: C string");
	struct buf o = BUF_INIT;
	const char nul[] = "From: a\0b <his@localdomain.local>\r\n\r\n";
	ok(relay_generic_header(&cfg, (const uint8_t *)nul, sizeof(nul) - 1, 1000, &o) ==
		   RELAY_GENERIC_SAME,
	   "a field holding NUL passes untouched");
	const char cr[] = "From: a\rb <his@localdomain.local>\r\n\r\n";
	ok(relay_generic_header(&cfg, (const uint8_t *)cr, sizeof(cr) - 1, 1000, &o) ==
		   RELAY_GENERIC_SAME,
	   "a field holding a bare CR passes untouched");
	buf_free(&o);

	/* many addresses: linear, bounded */
	struct buf big = BUF_INIT;
	buf_append_str(&big, "To: his@localdomain.local");
	for (int i = 0; i < 20000; i++)
		buf_append_str(&big, ", a@b.example");
	buf_append_str(&big, "\r\n\r\n");
	buf_append(&big, "", 1);
	const char *r = hdr((const char *)buf_data(&big));
	ok(strncmp(r, "To: hisaccount@hisisp.example, a@b.example,", 43) == 0,
	   "20000 addresses rewritten");
	/* growth past the limit is found early */
	buf_reset(&big);
	buf_append_str(&big, "To: b@localdomain.local");
	for (int i = 0; i < 20000; i++)
		buf_append_str(&big, ",b@localdomain.local");
	buf_append_str(&big, "\r\n\r\n");
	struct buf gr = BUF_INIT;
	ok(relay_generic_header(&cfg, buf_data(&big), buf_len(&big), 600000, &gr) ==
			   RELAY_GENERIC_TOO_BIG &&
		   buf_len(&gr) == 0,
	   "a section growing past the limit: TOO_BIG, nothing written");
	/* a rebuilt field never holds a line longer than RFC 5322's 998 octets:
	   here an unmatched address folded over short lines would be joined */
	buf_reset(&big);
	buf_append_str(&big, "To: his@localdomain.local, a@b");
	for (int i = 0; i < 300; i++)
		buf_append_str(&big, i % 8 ? ".label" : ".\r\n label");
	buf_append_str(&big, "\r\n\r\n");
	buf_reset(&gr);
	enum relay_generic_result lr =
		relay_generic_header(&cfg, buf_data(&big), buf_len(&big), 600000, &gr);
	size_t longest = 0, cur = 0;
	for (size_t i = 0; i < buf_len(&gr); i++)
		cur = buf_data(&gr)[i] == '\n' ? 0 : cur + 1,
		longest = cur > longest ? cur : longest;
	ok(lr == RELAY_GENERIC_TOO_BIG && buf_len(&gr) == 0,
	   "a rebuilt line past 998 octets: TOO_BIG, nothing written (longest %zu)", longest);
	buf_free(&gr);
	buf_free(&big);
	/* a long phrase is reduced to <address> (Postfix's 250-octet rule) */
	struct buf ph = BUF_INIT;
	buf_append_str(&ph, "From: ");
	for (int i = 0; i < 60; i++)
		buf_append_str(&ph, "word ");
	buf_append_str(&ph, "<his@localdomain.local>\r\n\r\n");
	buf_append(&ph, "", 1);
	is_str(hdr((const char *)buf_data(&ph)), "From: <hisaccount@hisisp.example>\r\n\r\n",
	       "more than 250 octets of phrase: <address>");
	buf_free(&ph);

	/* load-time checks */
	is_str(load("inline:{a@b.example=c@d.example}"), "ok", "a plain table loads");
	const char *sp = load("inline:{{a@b.example = c d@e.example}}");
	ok(strstr(sp, "space") != NULL, "a value with a space is refused: %s", sp);
	ok(strstr(load("inline:{a@b.example={Name <c@d.example>}}"), "refused") == NULL &&
		   strcmp(load("inline:{a@b.example={Name <c@d.example>}}"), "ok") != 0,
	   "a value with a phrase is refused");
	ok(strcmp(load("inline:{a@b.example=c@d.example,e@f.example}"), "ok") != 0,
	   "a list value is refused");
	ok(strstr(load("fail:x"), "memory") != NULL, "fail: is refused");
	ok(strstr(load("static:nodomain"), "user@domain") != NULL, "static: value checked");

	/* a CR inside a texthash value (the line ends are LF) */
	char path[] = "/tmp/test-generic-XXXXXX";
	int fd = mkstemp(path);
	const char text[] = "a@b.example c@d.example\rx\n";
	ok(fd >= 0 && write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1),
	   "texthash file written");
	close(fd);
	char spec[64];
	snprintf(spec, sizeof(spec), "texthash:%s", path);
	const char *why = load(spec);
	ok(strstr(why, "control character") != NULL, "a CR in a value is refused at load: %s", why);
	unlink(path);

	table_free(&cfg.generic_table);
	return done_testing();
}
