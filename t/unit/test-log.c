/* Unit tests for core/log: every log line is escaped (client and downstream
 * text must not break a line, rewrite the terminal or hide behind bidi
 * controls, CVE-2021-42574), and stderr lines carry a timestamp unless stderr
 * is the journal (JOURNAL_STREAM). */
#include "config.h"

#include <fcntl.h>
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "tap.h"

static const char *esc(const char *in, size_t n)
{
	static char out[1024];
	log_escape(out, sizeof(out), in, n);
	return out;
}

#define ESC(lit) esc(lit, sizeof(lit) - 1)

static size_t utf8_encode(uint32_t cp, unsigned char *o)
{
	if (cp < 0x80)
		return o[0] = (unsigned char)cp, 1;
	if (cp < 0x800)
		return o[0] = (unsigned char)(0xc0 | cp >> 6), o[1] = (unsigned char)(0x80 | (cp & 0x3f)), 2;
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | cp >> 12);
		o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | cp >> 18);
	o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/* What no escaped text may contain: a byte below 0x20, DEL, the UTF-8 of a C1
 * control, U+2028/9 or a bidi control, or bytes that are not UTF-8. */
static const char *forbidden(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; p[i];) {
		unsigned char c = p[i];
		if (c < 0x20 || c == 0x7f)
			return "C0 or DEL";
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
		if (len == 0)
			return "not UTF-8";
		uint32_t cp = c & (0x7f >> len);
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return "not UTF-8";
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if ((cp >= 0x80 && cp <= 0x9f) || cp == 0x61c || cp == 0x200e || cp == 0x200f ||
		    (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
			return "hidden character";
		i += len;
	}
	return NULL;
}

static void test_escapes(void)
{
	is_str(ESC("from=<alice@example.com>, to=<bob@example.net>"),
	       "from=<alice@example.com>, to=<bob@example.net>", "printable ASCII unchanged");
	is_str(ESC("j\xc3\xb6rg@b\xc3\xbc" "cher.example \xe4\xbe\x8b \xf0\x9f\x93\xa7"),
	       "j\xc3\xb6rg@b\xc3\xbc" "cher.example \xe4\xbe\x8b \xf0\x9f\x93\xa7",
	       "UTF-8 printable (2, 3 and 4 bytes) kept");
	is_str(ESC("a\x1b[31mred\x1b[0m"), "a\\x1b[31mred\\x1b[0m", "ESC (terminal escapes) -> \\x1b");
	is_str(ESC("x\ty\vz\f\b\x01"), "x\\x09y\\x0bz\\x0c\\x08\\x01", "other C0 controls -> \\xNN");
	is_str(esc("a\0b", 3), "a\\x00b", "NUL -> \\x00");
	is_str(ESC("a\x7f" "b"), "a\\x7fb", "DEL -> \\x7f");
	is_str(ESC("550-5.1.1 first\r\n550 5.1.1 second"), "550-5.1.1 first\\x0d\\x0a550 5.1.1 second",
	       "a multi-line downstream reply stays on one line");
	is_str(ESC("a\nsubmitd[1]: forged"), "a\\x0asubmitd[1]: forged", "LF: no forged second line");
	is_str(ESC("a\xc2\x85" "b"), "a\\u0085b", "NEL (U+0085) -> \\u0085");
	is_str(ESC("\xc2\x80\xc2\x9b\xc2\x9f"), "\\u0080\\u009b\\u009f", "C1 controls U+0080, U+009B (CSI), U+009F");
	is_str(ESC("\xc2\xa0ok"), "\xc2\xa0ok", "U+00A0 (first after C1) kept");
	is_str(ESC("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c"), "a\\u2028b\\u2029c", "LINE and PARAGRAPH SEPARATOR escaped");
	is_str(ESC("evil\xe2\x80\xae" "moc.elpmaxe@"), "evil\\u202emoc.elpmaxe@", "RLO (U+202E) escaped");
	is_str(ESC("\xe2\x80\xaa\xe2\x80\xab\xe2\x80\xac\xe2\x80\xad"), "\\u202a\\u202b\\u202c\\u202d",
	       "LRE, RLE, PDF, LRO escaped");
	is_str(ESC("\xe2\x80\x8e\xe2\x80\x8f"), "\\u200e\\u200f", "LRM, RLM escaped");
	is_str(ESC("\xe2\x81\xa6\xe2\x81\xa7\xe2\x81\xa8\xe2\x81\xa9"), "\\u2066\\u2067\\u2068\\u2069",
	       "LRI, RLI, FSI, PDI escaped");
	is_str(ESC("\xd8\x9c"), "\\u061c", "ARABIC LETTER MARK (U+061C) escaped");
	is_str(ESC("\xe2\x80\x8d\xe2\x80\xaf\xe2\x81\xa5"), "\xe2\x80\x8d\xe2\x80\xaf\xe2\x81\xa5",
	       "neighbours U+200D, U+202F, U+2065 kept");
	is_str(ESC("a\x80" "b\xff" "c"), "a\\x80b\\xffc", "stray continuation byte and 0xff -> \\xNN");
	is_str(ESC("\xc0\xaf"), "\\xc0\\xaf", "overlong '/' (C0 AF) -> bytes");
	is_str(ESC("\xe0\x80\xaf"), "\\xe0\\x80\\xaf", "overlong 3-byte -> bytes");
	is_str(ESC("\xed\xa0\x80"), "\\xed\\xa0\\x80", "surrogate U+D800 -> bytes");
	is_str(ESC("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80", "above U+10FFFF -> bytes");
	is_str(ESC("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf", "U+10FFFF kept");
	is_str(ESC("ab\xe2\x80"), "ab\\xe2\\x80", "UTF-8 cut off at the end -> bytes");
	is_str(ESC("\xe2\x80" "a"), "\\xe2\\x80a", "UTF-8 cut off before ASCII -> bytes, ASCII kept");
	is_str(ESC("\xc2\xe2\x80\xae"), "\\xc2\\u202e", "a lead byte does not swallow the next character");
	is_str(ESC("a\\x1b"), "a\\x1b", "a literal backslash is kept as it is");
}

static void test_truncation(void)
{
	char out[16];
	memset(out, 'Z', sizeof(out));
	size_t n = log_escape(out, sizeof(out), "abcdefghijklmnopqrstuvwxyz", 26);
	is_str(out, "abcdefghijkl...", "long text: cut with \"...\" inside the buffer");
	ok(n == strlen(out) && n < sizeof(out), "returns the length written (%zu)", n);
	n = log_escape(out, sizeof(out), "abcdefghij\x1b\x1b\x1b", 13);
	is_str(out, "abcdefghij...", "never half an escape");
	n = log_escape(out, sizeof(out), "abcdefghij\xe2\x80\xae", 13);
	is_str(out, "abcdefghij...", "never half a \\u escape");
	n = log_escape(out, sizeof(out), "abcdefghij\xf0\x9f\x93\xa7", 14);
	is_str(out, "abcdefghij\xf0\x9f\x93\xa7", "a 4-byte character that fits is whole");
	n = log_escape(out, sizeof(out), "abcdefghijkl\xf0\x9f\x93\xa7", 16);
	is_str(out, "abcdefghijkl...", "a 4-byte character that does not fit is left out whole");
	n = log_escape(out, sizeof(out), "abcdefghijklmno", 15);
	is_str(out, "abcdefghijklmno", "text that fills the buffer exactly is not cut");
	n = log_escape(out, 1, "abc", 3);
	ok(n == 0 && out[0] == '\0', "a 1-byte buffer gets the NUL only");
	n = log_escape(out, 4, "abcdef", 6);
	is_str(out, "...", "a 4-byte buffer: \"...\"");
}

/* Every code point, and every 1- and 2-byte string, comes out clean. */
static void test_exhaustive(void)
{
	char out[64];
	unsigned char in[8];
	const char *bad = NULL;
	uint32_t at = 0;
	for (uint32_t cp = 0; cp <= 0x10ffff && bad == NULL; cp++) {
		size_t n = utf8_encode(cp, in);
		in[n] = 'x';
		log_escape(out, sizeof(out), in, n + 1);
		bad = forbidden(out);
		at = cp;
	}
	ok(bad == NULL, "every code point U+0000..U+10FFFF (surrogates as bytes) escapes clean%s%s",
	   bad ? ": " : "", bad ? bad : "");
	if (bad)
		diag("at U+%04X: \"%s\"", (unsigned)at, out);
	bad = NULL;
	for (unsigned a = 0; a < 256 && bad == NULL; a++)
		for (unsigned b = 0; b < 256 && bad == NULL; b++) {
			in[0] = (unsigned char)a, in[1] = (unsigned char)b;
			log_escape(out, sizeof(out), in, 2);
			bad = forbidden(out);
			at = a << 8 | b;
		}
	ok(bad == NULL, "every 2-byte string escapes clean%s%s", bad ? ": " : "", bad ? bad : "");
	if (bad)
		diag("at %04x: \"%s\"", (unsigned)at, out);
	/* a 0xe2 0x80 prefix followed by every byte: the range of U+2028..U+202E */
	bad = NULL;
	for (unsigned c = 0; c < 256 && bad == NULL; c++) {
		in[0] = 0xe2, in[1] = 0x80, in[2] = (unsigned char)c, in[3] = '\n';
		log_escape(out, sizeof(out), in, 4);
		bad = forbidden(out);
	}
	ok(bad == NULL, "every E2 80 xx sequence escapes clean");
}

/* log_msg: the whole line escaped, one line per call, the timestamp. */
static char *read_all(const char *path)
{
	static char buf[65536];
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void test_log_msg(void)
{
	char path[] = "/tmp/submitd-test-log.XXXXXX";
	int fd = mkstemp(path);
	int saved = dup(STDERR_FILENO);
	if (!ok(fd >= 0 && saved >= 0, "temp file for stderr")) {
		unlink(path);
		return;
	}
	dup2(fd, STDERR_FILENO);
	unsetenv("JOURNAL_STREAM");
	log_open(LOG_TARGET_STDERR, LOG_MAIL, LOG_INFO);
	log_info("ABC: from=<%s>, status=bounced (%s)", "x\xe2\x80\xae@y\x1b]0;t\x07",
		 "550-a\r\n550 b\xc2\x85" "c");
	log_warn("ABC: helo=<%s>", "\xff\xfe\xe2\x80\xa8");
	struct stat st;
	fstat(fd, &st);
	char js[64];
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_open(LOG_TARGET_STDERR, LOG_MAIL, LOG_INFO);
	log_info("ABC: to the journal");
	/* a line that, escaped, is four times as long as the formatted one */
	static char ctl[3000];
	memset(ctl, 0x01, sizeof(ctl) - 1);
	log_info("ABC: long %s", ctl);
	setenv("JOURNAL_STREAM", "1:2", 1); /* inherited, but stderr is somewhere else */
	log_open(LOG_TARGET_STDERR, LOG_MAIL, LOG_INFO);
	log_info("ABC: not the journal");
	unsetenv("JOURNAL_STREAM");
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);

	char *text = read_all(path);
	unlink(path);
	char *lines[8] = {0};
	int nl = 0;
	for (char *s = text, *e; nl < 8 && (e = strchr(s, '\n')) != NULL; s = e + 1)
		*e = '\0', lines[nl++] = s;
	if (!is_int(nl, 5, "five log_msg calls, five lines"))
		return;
	const char *stamp = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}[-+][0-9]{2}:[0-9]{2} "
			    "submitd\\[[0-9]+\\]: ";
	regex_t re;
	regcomp(&re, stamp, REG_EXTENDED | REG_NOSUB);
	ok(regexec(&re, lines[0], 0, NULL, 0) == 0, "stderr without JOURNAL_STREAM: RFC 3339 timestamp first");
	const char *body = strstr(lines[0], "]: ");
	is_str(body ? body + 3 : "",
	       "ABC: from=<x\\u202e@y\\x1b]0;t\\x07>, status=bounced (550-a\\x0d\\x0a550 b\\u0085c)",
	       "log_msg escapes the whole formatted line");
	ok(regexec(&re, lines[1], 0, NULL, 0) == 0 && strstr(lines[1], "]: warning: ABC: helo=<\\xff\\xfe\\u2028>"),
	   "a warning: escaped, with its level");
	ok(strncmp(lines[2], "submitd[", 8) == 0 && strstr(lines[2], "to the journal"),
	   "stderr is the journal (JOURNAL_STREAM matches): no timestamp");
	size_t len3 = strlen(lines[3]);
	ok(strncmp(lines[3], "submitd[", 8) == 0 && len3 > 4000 && len3 < 4200 &&
		   strcmp(lines[3] + len3 - 7, "\\x01...") == 0,
	   "an overlong line: cut after a whole escape, marked \"...\" (%zu bytes)", len3);
	ok(regexec(&re, lines[4], 0, NULL, 0) == 0, "JOURNAL_STREAM names another stream: timestamp");
	regfree(&re);
	const char *bad = NULL;
	for (int i = 0; i < nl && bad == NULL; i++)
		bad = forbidden(lines[i]);
	ok(bad == NULL, "no control, bidi or invalid byte in any line");
}

int main(void)
{
	test_escapes();
	test_truncation();
	test_exhaustive();
	test_log_msg();
	return done_testing();
}
