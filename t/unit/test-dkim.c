/* Unit tests for src/dkim: RFC 6376 §3.4 canonicalisation (whole, a byte at
 * a time and split at every point: docs/design.md §9.3), header field
 * splitting, OpenDKIM KeyTable/SigningTable parsing and matching, key
 * loading (sizes, types) and the DKIM-Signature field's shape. The
 * signatures themselves are checked by real verifiers in
 * t/proto/62-dkim.py. */
#include "config.h"

#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>
#include <gnutls/x509.h>

#include "dkim/dkim.h"
#include "dkim/dkim_conf.h"
#include "dkim/dkim_table.h"
#include "tap.h"

static void hash_of(const char *s, size_t n, uint8_t d[32])
{
	gnutls_hash_fast(GNUTLS_DIG_SHA256, s, n, d);
}

/* The body hash of in, fed in pieces cut at a and b (a <= b). */
static void body_hash(enum dkim_canon c, const char *in, size_t n, size_t a, size_t b, uint8_t d[32])
{
	struct dkim_body bd;
	dkim_body_init(&bd, c);
	dkim_body_update(&bd, (const uint8_t *)in, a);
	dkim_body_update(&bd, (const uint8_t *)in + a, b - a);
	dkim_body_update(&bd, (const uint8_t *)in + b, n - b);
	dkim_body_final(&bd, d);
}

static void body_case(enum dkim_canon c, const char *in, const char *want, const char *name)
{
	size_t n = strlen(in);
	uint8_t w[32], d[32];
	hash_of(want, strlen(want), w);
	bool good = true;
	for (size_t a = 0; a <= n && good; a++)
		for (size_t b = a; b <= n && good; b++) {
			body_hash(c, in, n, a, b, d);
			good = memcmp(w, d, 32) == 0;
			if (!good)
				diag("cut at %zu and %zu", a, b);
		}
	struct dkim_body bd;
	dkim_body_init(&bd, c);
	for (size_t i = 0; i < n; i++)
		dkim_body_update(&bd, (const uint8_t *)in + i, 1);
	dkim_body_final(&bd, d);
	good = good && memcmp(w, d, 32) == 0;
	ok(good, "%s body: %s (every split, byte by byte)", c == DKIM_RELAXED ? "relaxed" : "simple", name);
}

static void header_case(enum dkim_canon c, const char *in, const char *want, const char *name)
{
	struct buf b = BUF_INIT;
	dkim_canon_header(c, (const uint8_t *)in, strlen(in), true, &b);
	bool good = buf_len(&b) == strlen(want) && memcmp(buf_data(&b), want, buf_len(&b)) == 0;
	if (!good)
		diag("got [%.*s]", (int)buf_len(&b), (const char *)buf_data(&b));
	ok(good, "%s header: %s", c == DKIM_RELAXED ? "relaxed" : "simple", name);
	buf_free(&b);
}

static void test_canon(void)
{
	/* RFC 6376 §3.4.5's examples. */
	body_case(DKIM_RELAXED, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n", "RFC 6376 3.4.5");
	body_case(DKIM_SIMPLE, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", "RFC 6376 3.4.5");
	header_case(DKIM_RELAXED, "A: X\r\n", "a:X\r\n", "RFC 6376 3.4.5 A");
	header_case(DKIM_RELAXED, "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n", "RFC 6376 3.4.5 B");
	header_case(DKIM_SIMPLE, "B : Y\t\r\n\tZ  \r\n", "B : Y\t\r\n\tZ  \r\n", "kept as is");
	header_case(DKIM_RELAXED, "Subject:\r\n", "subject:\r\n", "empty value");
	header_case(DKIM_RELAXED, "X-Y:  a\r\n  b\r\n", "x-y:a b\r\n", "fold at the start");
	header_case(DKIM_RELAXED, "To: a\rb\n\r\n", "to:a\rb\n\r\n", "bare CR and LF stay");
	header_case(DKIM_RELAXED, "Subject: \xc3\xa9t\xc3\xa9  \r\n", "subject:\xc3\xa9t\xc3\xa9\r\n", "8-bit value");

	body_case(DKIM_SIMPLE, "", "\r\n", "empty body is CRLF");
	body_case(DKIM_RELAXED, "", "", "empty body stays empty");
	body_case(DKIM_SIMPLE, "\r\n\r\n\r\n", "\r\n", "only empty lines");
	body_case(DKIM_RELAXED, "\r\n \r\n\t\r\n", "", "only blank lines");
	body_case(DKIM_SIMPLE, "abc", "abc\r\n", "no final CRLF");
	body_case(DKIM_RELAXED, "abc  ", "abc\r\n", "no final CRLF, trailing WSP");
	body_case(DKIM_SIMPLE, "a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n", "inner empty line kept");
	body_case(DKIM_RELAXED, "a\r\n \r\nb \r\n", "a\r\n\r\nb\r\n", "inner blank line kept, emptied");
	body_case(DKIM_RELAXED, "  x\t\ty  \r\n", " x y\r\n", "leading WSP becomes one SP");
	body_case(DKIM_SIMPLE, "a\rb\nc\r\r\n", "a\rb\nc\r\r\n", "bare CR and LF are octets");
	body_case(DKIM_RELAXED, "a \rb \n \r\r\n", "a \rb \n \r\r\n", "bare CR and LF are not WSP");
	body_case(DKIM_SIMPLE, "x\r", "x\r\r\n", "ends in a bare CR");
	body_case(DKIM_RELAXED, "\r\n\r\nx\r\n", "\r\n\r\nx\r\n", "leading empty lines kept");
	body_case(DKIM_SIMPLE, "..\r\n.\r\n", "..\r\n.\r\n", "dots are content (unstuffed before)");

	/* A long body: the batch buffer fills and empties many times. */
	struct buf in = BUF_INIT, want = BUF_INIT;
	for (int i = 0; i < 2000; i++) {
		buf_printf(&in, "line %d \t with   spaces  \r\n%s", i, i % 7 ? "" : "\r\n \r\n");
		buf_printf(&want, "line %d with spaces\r\n%s", i, i % 7 ? "" : "\r\n\r\n");
	}
	buf_append(&in, "\r\n\r\n", 4);
	uint8_t w[32], d[32];
	hash_of((const char *)buf_data(&want), buf_len(&want), w);
	struct dkim_body bd;
	dkim_body_init(&bd, DKIM_RELAXED);
	for (size_t i = 0; i < buf_len(&in); i += 777)
		dkim_body_update(&bd, buf_data(&in) + i, buf_len(&in) - i < 777 ? buf_len(&in) - i : 777);
	dkim_body_final(&bd, d);
	ok(memcmp(w, d, 32) == 0, "relaxed body: 2000 lines in 777-octet pieces");
	buf_free(&in);
	buf_free(&want);

	/* Abandoned half way: freed without a digest. */
	dkim_body_init(&bd, DKIM_SIMPLE);
	dkim_body_update(&bd, (const uint8_t *)"x", 1);
	dkim_body_free(&bd);
	dkim_body_free(&bd);
	ok(bd.hash == NULL, "an abandoned body hash is freed (twice is harmless)");
}

static void test_fields(void)
{
	const char *h = " junk\r\nFrom: a\r\n b\r\nnocolon\r\n cont\r\nTo : c\r\n\r\nBody: x\r\n";
	struct dkim_field f[8];
	size_t n = dkim_fields((const uint8_t *)h, strlen(h), f, 8);
	ok(n == 2, "fields: two (a leading continuation and a line without colon skipped)");
	ok(n == 2 && f[0].len == strlen("From: a\r\n b\r\n") && f[0].name_len == 4, "fields: From folded");
	ok(n == 2 && f[1].name_len == 2 && memcmp(h + f[1].off, "To : c\r\n", f[1].len) == 0,
	   "fields: To, WSP before the colon not in the name; body not read");
	ok(dkim_fields((const uint8_t *)h, strlen(h), f, 1) == 1, "fields: at most max");
	ok(dkim_fields((const uint8_t *)"A: b", 4, f, 8) == 1 && f[0].len == 4, "fields: last line without CRLF");
}

static void test_tables(void)
{
	struct dkim_keytable kt;
	char err[256];
	ok(dkim_keytable_parse(&kt,
			       "# OpenDKIM KeyTable\n\nrsa  example.org:s2024:/etc/k/rsa.private\n"
			       "ed\texample.org:ed2024:/etc/k/ed.private # comment\n"
			       "any %:mail:./any.key\n",
			       err, sizeof(err)) &&
		   kt.n == 3,
	   "KeyTable: three keys, comments and blank lines skipped");
	ok(kt.n == 3 && strcmp(kt.keys[1].selector, "ed2024") == 0 &&
		   strcmp(kt.keys[1].path, "/etc/k/ed.private") == 0 &&
		   strcmp(kt.keys[2].domain, "%") == 0,
	   "KeyTable: fields split at the first two colons, %% kept");
	ok(dkim_keytable_find(&kt, "ED") == &kt.keys[1], "KeyTable: names case-insensitive");
	dkim_keytable_clear(&kt);
	static const char *const bad[] = {
		"k example.org:sel\n", "k example.org:sel:keydata\n", "k exa mple.org:s:/k\n",
		"k example..org:s:/k\n", "k e.org:s:/a\nk e.org:t:/b\n", "k e.org:s:/a\x01\n",
		"k :s:/k\n", "k e.org::/k\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool r = dkim_keytable_parse(&kt, bad[i], err, sizeof(err));
		ok(!r && strncmp(err, i == 4 ? "2:" : "1:", 2) == 0,
		   "KeyTable refused: case %zu (%s)", i, r ? "accepted" : err);
		if (r)
			dkim_keytable_clear(&kt);
	}

	struct dkim_sigtable st;
	ok(dkim_sigtable_parse(&st,
			       "alice@example.org alice\n"
			       "example.org rsa\n"
			       "bob@.example.org sub\n"
			       ".org dotorg\n"
			       "carol@* carol @example.org\n"
			       "* all\n"
			       "example.org ed\n",
			       false, err, sizeof(err)),
	   "SigningTable (plain) parsed");
	const struct dkim_signing *m[16];
	size_t n = dkim_sigtable_match(&st, "alice@example.org", m, 16);
	ok(n == 5 && strcmp(m[0]->name, "alice") == 0 && strcmp(m[1]->name, "rsa") == 0 &&
		   strcmp(m[2]->name, "ed") == 0 && strcmp(m[3]->name, "dotorg") == 0 &&
		   strcmp(m[4]->name, "all") == 0,
	   "plain: user@host, host (both entries), .parent, * in OpenDKIM's order");
	n = dkim_sigtable_match(&st, "bob@mail.example.org", m, 16);
	ok(n == 3 && strcmp(m[0]->name, "sub") == 0 && strcmp(m[1]->name, "dotorg") == 0 &&
		   strcmp(m[2]->name, "all") == 0,
	   "plain: user@.parent before .parent");
	n = dkim_sigtable_match(&st, "Carol@Other.NET", m, 16);
	ok(n == 2 && strcmp(m[0]->name, "carol") == 0 && strcmp(m[0]->signer, "@example.org") == 0,
	   "plain: user@*, case-insensitive, signer kept");
	ok(dkim_sigtable_match(&st, "x@y.net", m, 1) == 1, "plain: at most max");
	dkim_sigtable_clear(&st);

	ok(dkim_sigtable_parse(&st,
			       "*@example.org rsa\n*@example.org ed\n*@*.example.net sub\n"
			       "*@nowhere.invalid none\n",
			       true, err, sizeof(err)),
	   "SigningTable (refile) parsed");
	n = dkim_sigtable_match(&st, "someone@EXAMPLE.org", m, 16);
	ok(n == 2 && strcmp(m[0]->name, "rsa") == 0 && strcmp(m[1]->name, "ed") == 0,
	   "refile: every pattern that matches, in file order (dual signing)");
	ok(dkim_sigtable_match(&st, "a@b.example.net", m, 16) == 1 &&
		   dkim_sigtable_match(&st, "a@example.net", m, 16) == 0 &&
		   dkim_sigtable_match(&st, "a@example.org.evil", m, 16) == 0,
	   "refile: patterns are anchored");
	dkim_sigtable_clear(&st);
	ok(!dkim_sigtable_parse(&st, "a@b\n", false, err, sizeof(err)) &&
		   !dkim_sigtable_parse(&st, "a@b k s extra\n", false, err, sizeof(err)),
	   "SigningTable refused: no key name, too many fields");

	ok(dkim_glob("*", "") && dkim_glob("a*b*c", "aXXbYYc") && !dkim_glob("a*b", "ab.") &&
		   dkim_glob("*@*.org", "x@y.z.org") && !dkim_glob("a?", "ab"),
	   "glob: only * is special");
	bool refile;
	const char *path;
	ok(dkim_table_spec("refile:/x", &refile, &path, err, sizeof(err)) && refile &&
		   strcmp(path, "/x") == 0 && dkim_table_spec("/etc/a:b", &refile, &path, err, sizeof(err)) &&
		   !refile && !dkim_table_spec("mysql:/x", &refile, &path, err, sizeof(err)) &&
		   !dkim_table_spec("file:", &refile, &path, err, sizeof(err)),
	   "table types: file:, refile:, none; others refused");
}

static char *write_key(gnutls_pk_algorithm_t pk, unsigned bits)
{
	gnutls_x509_privkey_t k;
	gnutls_x509_privkey_init(&k);
	if (gnutls_x509_privkey_generate(k, pk, bits, 0) < 0) {
		gnutls_x509_privkey_deinit(k);
		return NULL;
	}
	gnutls_datum_t pem;
	gnutls_x509_privkey_export2_pkcs8(k, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &pem);
	char *path = strdup("/tmp/test-dkim-key-XXXXXX");
	int fd = mkstemp(path);
	if (write(fd, pem.data, pem.size) != (ssize_t)pem.size)
		abort();
	close(fd);
	gnutls_free(pem.data);
	gnutls_x509_privkey_deinit(k);
	return path;
}

static void test_keys(void)
{
	struct dkim_key k = {0};
	char err[512];
	char *p512 = write_key(GNUTLS_PK_RSA, 512);
	if (p512 != NULL) {
		k.path = p512;
		ok(!dkim_key_load(&k, err, sizeof(err)) && strstr(err, "512 bits") != NULL,
		   "an RSA key of 512 bits is refused (%s)", err);
		unlink(p512);
		free(p512);
	} else {
		ok(1, "GnuTLS will not even make a 512-bit key");
	}
	k.path = (char *)"/nonexistent/key";
	ok(!dkim_key_load(&k, err, sizeof(err)) && strstr(err, "/nonexistent/key") != NULL,
	   "a missing key file is named");
	k.path = (char *)"/etc/hostname";
	ok(!dkim_key_load(&k, err, sizeof(err)) && strstr(err, "not a PEM") != NULL,
	   "a file that is no key is refused");
	char *pe = write_key(GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1));
	k.path = pe;
	ok(!dkim_key_load(&k, err, sizeof(err)) && strstr(err, "neither") != NULL,
	   "an ECDSA key is refused");
	unlink(pe);
	free(pe);

	struct {
		gnutls_pk_algorithm_t pk;
		unsigned bits;
		const char *name;
	} kinds[] = {{GNUTLS_PK_RSA, 1024, "rsa"}, {GNUTLS_PK_EDDSA_ED25519, 256, "ed25519"}};
	for (size_t i = 0; i < 2; i++) {
		struct dkim_key key = {0};
		key.path = write_key(kinds[i].pk, kinds[i].bits);
		key.name = strdup("k");
		key.domain = strdup("example.org");
		key.selector = strdup("sel");
		bool loaded = dkim_key_load(&key, err, sizeof(err));
		ok(loaded && key.bits == kinds[i].bits, "%s key loaded (%s)", kinds[i].name,
		   loaded ? "ok" : err);
		if (!loaded) {
			unlink(key.path);
			dkim_key_clear(&key);
			continue;
		}
		struct buf txt = BUF_INIT;
		dkim_key_txt(&key, "example.org", &txt);
		buf_append(&txt, "", 1);
		char want[64];
		snprintf(want, sizeof(want), "sel._domainkey.example.org. IN TXT \"v=DKIM1; k=%s; p=",
			 kinds[i].name);
		ok(strncmp((char *)buf_data(&txt), want, strlen(want)) == 0, "%s TXT record: %.60s...",
		   kinds[i].name, (char *)buf_data(&txt));
		if (i == 1)
			ok(strlen(key.pub) == 44, "ed25519 p= is the bare 32-octet key (RFC 8463 §4)");
		buf_free(&txt);

		const char *hdr = "Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
				  "From: a@example.org\r\nTo: b@example.net\r\nContent-Type: text/plain\r\n"
				  "Content-Transfer-Encoding: 8bit\r\nSubject: hi\r\n\r\n";
		static const char *const hl[] = {"from", "from", "to", "cc", "subject", "content-*"};
		uint8_t bh[32] = {0};
		struct dkim_sign_args a = {.key = &key, .domain = "example.org", .identity = "@example.org",
					   .hcanon = DKIM_RELAXED, .bcanon = DKIM_SIMPLE, .headers = hl,
					   .nheaders = 6, .now = 1700000000, .expire_s = 3600, .bh = bh};
		struct buf out = BUF_INIT;
		ok(dkim_sign(&a, (const uint8_t *)hdr, strlen(hdr), &out, err, sizeof(err)), "%s: signed",
		   kinds[i].name);
		buf_append(&out, "", 1);
		const char *s = (const char *)buf_data(&out);
		char *u = strdup(s); /* unfolded */
		size_t ul = 0;
		for (const char *q = s; *q; q++)
			if (*q != '\r' && *q != '\n' && *q != '\t')
				u[ul++] = *q;
		u[ul] = '\0';
		if (strstr(u, "h=from:from:to:subject:content-type:content-transfer-encoding;") == NULL)
			diag("%s", s);
		ok(strstr(u, "h=from:from:to:subject:content-type:content-transfer-encoding;") != NULL,
		   "%s: h= has From twice, present fields, content-* expanded, no Cc", kinds[i].name);
		ok(strstr(u, "t=1700000000;") && strstr(u, "x=1700003600;") && strstr(u, "i=@example.org;") &&
			   strstr(u, "c=relaxed/simple;") && strstr(u, "d=example.org;") && strstr(u, "s=sel;"),
		   "%s: t=, x=, i=, c=, d=, s=", kinds[i].name);
		bool short_lines = true;
		for (const char *l = s; *l; ) {
			const char *e = strstr(l, "\r\n");
			if (e == NULL || e - l > 78)
				short_lines = false;
			if (e == NULL)
				break;
			l = e + 2;
			if (*l && *l != '\t')
				short_lines = false;
		}
		ok(short_lines, "%s: folded below 79 columns, continuation lines start with TAB", kinds[i].name);
		free(u);
		ok(out.len < dkim_sign_max(&key, 11, 12) + 1, "%s: within dkim_sign_max()", kinds[i].name);
		buf_free(&out);
		unlink(key.path);
		dkim_key_clear(&key);
	}
}

/* A header section built to make h= selection quadratic: 20000 fields of
 * one Content- name and 5000 of distinct ones. */
static void test_many_fields(void)
{
	struct buf h = BUF_INIT;
	buf_append_str(&h, "From: a@example.org\r\n");
	for (int i = 0; i < 20000; i++)
		buf_append_str(&h, "Content-Foo: x\r\n");
	for (int i = 0; i < 5000; i++)
		buf_printf(&h, "Content-N%d: x\r\n", i);
	buf_append_str(&h, "\r\n");
	struct dkim_key key = {0};
	char err[512];
	key.path = write_key(GNUTLS_PK_EDDSA_ED25519, 256);
	key.selector = strdup("s");
	if (!dkim_key_load(&key, err, sizeof(err))) {
		ok(0, "ed25519 key for the big header (%s)", err);
		return;
	}
	static const char *const hl[] = {"from", "from", "content-*", "to"};
	uint8_t bh[32] = {0};
	struct dkim_sign_args a = {.key = &key, .domain = "example.org", .hcanon = DKIM_RELAXED,
				   .bcanon = DKIM_RELAXED, .headers = hl, .nheaders = 4, .now = 1, .bh = bh};
	struct buf out = BUF_INIT;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool signed_ok = dkim_sign(&a, buf_data(&h), buf_len(&h), &out, err, sizeof(err));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	size_t names = 0;
	for (size_t i = 0; i + 1 < buf_len(&out); i++)
		names += buf_data(&out)[i] == ':' && i > 20;
	ok(signed_ok && s < 2.0, "25000 Content- fields: signed in %.3f s (linear h= selection)", s);
	ok(names <= DKIM_H_MAX + 1, "h= holds at most %d names (%zu colons)", DKIM_H_MAX, names);
	ok(out.len < dkim_sign_max(&key, 11, 0), "still within dkim_sign_max()");
	buf_free(&out);
	buf_free(&h);
	unlink(key.path);
	dkim_key_clear(&key);
}

int main(void)
{
	test_canon();
	test_fields();
	test_tables();
	test_keys();
	test_many_fields();
	return done_testing();
}
