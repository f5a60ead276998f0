/* dovecot_auth_proto: the auth protocol's wire codec; see dovecot_auth_proto.h. */
#include "config.h"
#include "lookup/dovecot_auth_proto.h"

#include <string.h>
#include <strings.h>
bool dovecot_auth_mech_name_valid(const char *s, size_t len, bool allow_lower)
{
	if (len == 0 || len > DOVECOT_AUTH_MAX_MECH_NAME)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		      ch == '_' || (allow_lower && ch >= 'a' && ch <= 'z')))
			return false;
	}
	return true;
}

bool dovecot_auth_mech_in(const char *list, const char *mech)
{
	size_t n = strlen(mech);
	const char *p = list;
	while (*p != '\0') {
		const char *e = strchr(p, ' ');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == n && strncasecmp(p, mech, n) == 0)
			return true;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return false;
}

static void dovecot_auth_append_escaped(struct buf *b, const char *s)
{
	const char *run = s;
	for (; *s != '\0'; s++) {
		char esc;
		switch (*s) {
		case '\001':
			esc = '1';
			break;
		case '\t':
			esc = 't';
			break;
		case '\n':
			esc = 'n';
			break;
		case '\r':
			esc = 'r';
			break;
		default:
			continue;
		}
		buf_append(b, run, (size_t)(s - run));
		char pair[2] = {'\001', esc};
		buf_append(b, pair, 2);
		run = s + 1;
	}
	buf_append(b, run, (size_t)(s - run));
}

void dovecot_auth_append_param(struct buf *b, const char *name, const char *value)
{
	buf_append_str(b, "\t");
	buf_append_str(b, name);
	buf_append_str(b, "=");
	dovecot_auth_append_escaped(b, value);
}

bool dovecot_auth_unescape(char *s, size_t *len_r)
{
	size_t len = *len_r, o = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '\001') {
			if (++i == len)
				return false;
			switch (s[i]) {
			case '1':
				ch = '\001';
				break;
			case 't':
				ch = '\t';
				break;
			case 'n':
				ch = '\n';
				break;
			case 'r':
				ch = '\r';
				break;
			case '0':
				return false;
			default:
				ch = s[i];
				break;
			}
		}
		s[o++] = ch;
	}
	s[o] = '\0';
	*len_r = o;
	return true;
}

bool dovecot_auth_parse_uint(const char *s, size_t len, uint32_t *r)
{
	if (len == 0)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > UINT32_MAX)
			return false;
	}
	*r = (uint32_t)v;
	return true;
}

bool dovecot_auth_all_digits(const char *s, size_t len)
{
	uint32_t v;
	return dovecot_auth_parse_uint(s, len, &v);
}

bool dovecot_auth_field_is(const struct dovecot_auth_field *f, const char *s)
{
	return f->len == strlen(s) && memcmp(f->s, s, f->len) == 0;
}

bool dovecot_auth_user_valid(const char *s, size_t len)
{
	if (len == 0 || len > DOVECOT_AUTH_MAX_USER)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

enum dovecot_auth_split_status dovecot_auth_split(char *line, size_t len, bool lenient,
						  struct dovecot_auth_field *f, size_t *nf_r,
						  bool *fields_whole_r)
{
	size_t nf = 0;
	*nf_r = 0;
	*fields_whole_r = true;
	if (memchr(line, '\0', len) != NULL)
		return DOVECOT_AUTH_SPLIT_NUL;
	char *p = line, *end = line + len;
	for (;;) {
		char *tab = memchr(p, '\t', (size_t)(end - p));
		char *fe = tab ? tab : end;
		if (nf == DOVECOT_AUTH_MAX_FIELDS)
			return DOVECOT_AUTH_SPLIT_TOO_MANY;
		f[nf].s = p;
		f[nf].len = (size_t)(fe - p);
		*fe = '\0';
		if (!dovecot_auth_unescape(f[nf].s, &f[nf].len)) {
			/* The command and id must be whole; the rest may be
			   judged per request. */
			if (nf < 2 || !lenient)
				return DOVECOT_AUTH_SPLIT_BAD_ESCAPE;
			*fields_whole_r = false;
		}
		nf++;
		if (tab == NULL)
			break;
		p = tab + 1;
	}
	*nf_r = nf;
	return f[0].len == 0 ? DOVECOT_AUTH_SPLIT_EMPTY : DOVECOT_AUTH_SPLIT_OK;
}

const char *dovecot_auth_split_error(enum dovecot_auth_split_status st)
{
	switch (st) {
	case DOVECOT_AUTH_SPLIT_OK:
		return "ok";
	case DOVECOT_AUTH_SPLIT_NUL:
		return "NUL byte in line";
	case DOVECOT_AUTH_SPLIT_TOO_MANY:
		return "too many fields";
	case DOVECOT_AUTH_SPLIT_BAD_ESCAPE:
		return "bad escape";
	case DOVECOT_AUTH_SPLIT_EMPTY:
		return "empty command";
	}
	return "?";
}

void dovecot_auth_final_parse(const struct dovecot_auth_field *f, size_t nf,
			      struct dovecot_auth_final *r)
{
	memset(r, 0, sizeof(*r));
	for (size_t i = 2; i < nf; i++) {
		const char *eq = memchr(f[i].s, '=', f[i].len);
		size_t nlen = eq ? (size_t)(eq - f[i].s) : f[i].len;
		const char *val = eq ? eq + 1 : "";
		size_t vlen = eq ? f[i].len - nlen - 1 : 0;
		if (nlen == 4 && memcmp(f[i].s, "user", 4) == 0) {
			if (r->user != NULL &&
			    (vlen != r->user_len || memcmp(r->user, val, vlen) != 0))
				r->user_conflict = true;
			r->user = val, r->user_len = vlen;
		} else if (nlen == 6 && memcmp(f[i].s, "reason", 6) == 0) {
			r->reason = val, r->reason_len = vlen;
		} else if (nlen == 4 && memcmp(f[i].s, "code", 4) == 0) {
			r->temp = r->temp || (vlen == 9 && memcmp(val, "temp_fail", 9) == 0);
		} else if (!eq && nlen == 4 && memcmp(f[i].s, "temp", 4) == 0) {
			r->temp = true; /* Dovecot <= 2.2 spelling */
		} else if ((nlen == 7 && memcmp(f[i].s, "nologin", 7) == 0) ||
			   (nlen == 5 && memcmp(f[i].s, "proxy", 5) == 0)) {
			/* nologin (possibly a referral with host=) and proxy are
			   refusals, with or without a value (passdb extra fields
			   may carry "=y"). */
			r->refused = true;
		}
	}
}

bool dovecot_auth_long_prefix_parse(char *p, uint32_t *id_r, struct dovecot_auth_field *cmd_r)
{
	char *tab = strchr(p, '\t');
	char *idend = tab ? strchr(tab + 1, '\t') : NULL;
	*cmd_r = (struct dovecot_auth_field){p, tab ? (size_t)(tab - p) : strlen(p)};
	return idend != NULL && dovecot_auth_parse_uint(tab + 1, (size_t)(idend - tab - 1), id_r) &&
	       (dovecot_auth_field_is(cmd_r, "FAIL") || dovecot_auth_field_is(cmd_r, "CONT") ||
		dovecot_auth_field_is(cmd_r, "OK"));
}
