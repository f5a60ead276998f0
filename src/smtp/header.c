/* smtp/header: the end of the header section and the fields submission needs
 * (RFC 5322 §2.2, §3.6; RFC 6409 §8). Stateless: the caller rescans from the
 * start with more content; the header section is bounded by policy. */
#include "config.h"
#include "smtp/header.h"

#include <string.h>

static int header_upper(int c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

static bool header_name_is(const uint8_t *s, size_t n, const char *word)
{
	size_t i = 0;
	for (; i < n && word[i] != '\0'; i++)
		if (header_upper(s[i]) != word[i])
			return false;
	return i == n && word[i] == '\0';
}

static bool header_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* Length of the field name if the line is a field: ftext = %d33-57 /
 * %d59-126 up to a ':' (RFC 5322 §3.6.8); 0 otherwise. */
static size_t header_field_name(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == ':')
			return i;
		if (s[i] < 33 || s[i] > 126)
			return 0;
	}
	return 0;
}

/* Copies the field body p[from..to) unfolded (RFC 5322 §2.2.3: a CRLF
 * followed by WSP is removed) and trimmed into dst[dstsz]. */
static void header_copy_body(const uint8_t *p, size_t from, size_t to, char *dst, size_t dstsz)
{
	size_t o = 0;
	for (size_t i = from; i < to && o < dstsz - 1; i++) {
		if (p[i] == '\r' || p[i] == '\n')
			continue;
		if (o == 0 && header_wsp(p[i]))
			continue;
		dst[o++] = (char)p[i];
	}
	while (o > 0 && header_wsp((uint8_t)dst[o - 1]))
		o--;
	dst[o] = '\0';
}

/* Applies one complete field (name p[s..s+nl), whole field p[s..e)). */
static void header_field(const uint8_t *p, size_t s, size_t nl, size_t e, struct header_info *r)
{
	const uint8_t *name = p + s;
	size_t body = s + nl + 1;
	if (header_name_is(name, nl, "FROM")) {
		if (r->from_count++ == 0)
			header_copy_body(p, body, e, r->from, sizeof(r->from));
		r->has_from = true;
	} else if (header_name_is(name, nl, "SENDER")) {
		if (!r->has_sender)
			header_copy_body(p, body, e, r->sender, sizeof(r->sender));
		r->has_sender = true;
	} else if (header_name_is(name, nl, "DATE")) {
		r->has_date = true;
	} else if (header_name_is(name, nl, "MESSAGE-ID")) {
		r->has_message_id = true;
	}
}

bool header_scan(const uint8_t *p, size_t n, bool at_end, struct header_info *r)
{
	memset(r, 0, sizeof(*r));
	size_t i = 0;
	/* The field being collected: p[fs..fe), name length fnl; fnl == 0: none. */
	size_t fs = 0, fe = 0, fnl = 0;

	while (i < n) {
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		if (lf == NULL && !at_end)
			return false; /* the last line may still become anything */
		size_t e = lf != NULL ? (size_t)(lf - p) + 1 : n; /* line end, terminator included */
		size_t len = lf != NULL ? (size_t)(lf - p) - i : n - i;
		if (len > 0 && p[i + len - 1] == '\r')
			len--;

		if (len == 0) {
			/* The empty line ends the header section (RFC 5322 §2.1). */
			if (fnl > 0)
				header_field(p, fs, fnl, fe, r);
			r->header_len = e;
			r->complete = true;
			return true;
		}
		if (header_wsp(p[i]) && fnl > 0) {
			fe = e; /* continuation line of a folded field */
			i = e;
			continue;
		}
		size_t nl = header_field_name(p + i, len);
		if (nl == 0)
			break; /* not a field: the body starts here, without an empty line */
		if (fnl > 0)
			header_field(p, fs, fnl, fe, r);
		fs = i;
		fnl = nl;
		fe = e;
		i = e;
	}
	if (i == n && !at_end)
		return false; /* only fields so far: the next line may still fold or end them */
	if (fnl > 0)
		header_field(p, fs, fnl, fe, r);
	r->header_len = i;
	r->complete = true;
	return true;
}
