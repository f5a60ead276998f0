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

/* Whether the line s[0..len) starts a field: a name of ftext (%d33-57 /
 * %d59-126, RFC 5322 §3.6.8), possibly empty, then optional WSP (obs-optional,
 * §4.5.x), then ':'. Sets *name_len_r (without the WSP) and *colon_r. */
static bool header_field_name(const uint8_t *s, size_t len, size_t *name_len_r, size_t *colon_r)
{
	size_t i = 0;
	while (i < len && s[i] != ':' && s[i] >= 33 && s[i] <= 126)
		i++;
	size_t name = i;
	if (name > 0)
		while (i < len && header_wsp(s[i]))
			i++;
	if (i == len || s[i] != ':')
		return false;
	*name_len_r = name;
	*colon_r = i;
	return true;
}

/* Applies one complete field: name p[s..s+nl), body p[b..e) where e is the
 * end of its last line, terminator excluded. */
static void header_field(const uint8_t *p, size_t s, size_t nl, size_t b, size_t e,
			 struct header_info *r)
{
	const uint8_t *name = p + s;
	struct header_span span = {b, e > b ? e - b : 0};
	if (header_name_is(name, nl, "FROM")) {
		if (r->from_count++ == 0)
			r->from = span;
		r->has_from = true;
	} else if (header_name_is(name, nl, "SENDER")) {
		if (r->sender_count++ == 0)
			r->sender = span;
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
	/* The field being collected: name p[fs..fs+fnl), body from fb to fe
	   (the end of its last line, terminator excluded); open: there is one. */
	size_t fs = 0, fnl = 0, fb = 0, fe = 0;
	bool open = false;

	while (i < n) {
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		if (lf == NULL && !at_end)
			return false; /* the last line may still become anything */
		size_t e =
			lf != NULL ? (size_t)(lf - p) + 1 : n; /* line end, terminator included */
		size_t len = lf != NULL ? (size_t)(lf - p) - i : n - i;
		if (len > 0 && p[i + len - 1] == '\r')
			len--;

		if (len == 0) {
			/* The empty line ends the header section (RFC 5322 §2.1). */
			if (open)
				header_field(p, fs, fnl, fb, fe, r);
			r->header_len = e;
			r->complete = true;
			return true;
		}
		if (header_wsp(p[i])) {
			if (open)
				fe = i + len; /* continuation line of a folded field */
			else if (r->odd_line == 0)
				r->odd_line = i + 1; /* a continuation of nothing, ignored */
			i = e;
			continue;
		}
		size_t nl = 0, colon = 0; /* a "From " line: no field */
		bool field = header_field_name(p + i, len, &nl, &colon);
		if (!field && !(len >= 5 && memcmp(p + i, "From ", 5) == 0))
			break; /* not a field: the body starts here, without an empty line */
		if (open)
			header_field(p, fs, fnl, fb, fe, r);
		if ((!field || nl == 0) && r->odd_line == 0)
			r->odd_line = i + 1;
		open = field;
		fs = i;
		fnl = nl;
		fb = i + colon + 1;
		fe = i + len;
		i = e;
	}
	if (i == n && !at_end)
		return false; /* only fields so far: the next line may still fold or end them */
	if (open)
		header_field(p, fs, fnl, fb, fe, r);
	r->header_len = i;
	r->complete = true;
	return true;
}
