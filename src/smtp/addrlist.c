/* smtp/addrlist: RFC 5322 §3.4 address lists, resumable byte by byte.
 *
 * Two small machines: a lexer (folds, comments, quoted strings, atoms,
 * domain literals, specials) hands whole tokens to the grammar, which
 * decides between display name, local part and group name only when the
 * token that settles it arrives ('<', '@' or ':'), so nothing is ever
 * re-read. Words are collected in the form a local part needs; display
 * names are only checked, not kept. Contract and strictness: addrlist.h. */
#include "config.h"
#include "smtp/addrlist.h"

#include <string.h>

enum {
	L_TOP, /* between tokens */
	L_ATOM,
	L_QUOTED,
	L_QUOTED_QP, /* after a backslash in a quoted string */
	L_COMMENT,
	L_COMMENT_QP,
	L_LITERAL,
	L_CR,   /* CR seen: a fold must go on with LF */
	L_LF,   /* CRLF seen: a fold must go on with WSP */
	L_DONE, /* error, or finished */
};

/* Tokens: the specials are passed as their character. */
enum { T_ATOM = 256, T_QSTR, T_LIT, T_END };

enum {
	G_START,       /* an address may start here */
	G_WORDS,       /* words and dots: a display name, a local part or a group name */
	G_ANGLE,       /* after '<' */
	G_ROUTE_LEAD,  /* obs-route: commas before the first "@domain" */
	G_ROUTE_SEP,   /* obs-route: after a domain, ',' or ':' */
	G_ANGLE_LOCAL, /* the local part inside <> */
	G_DOMAIN,      /* the domain sub-machine runs */
	G_AFTER_ANGLE, /* after '>' */
	G_AFTER_GROUP, /* after ';' */
};

enum { D_FIRST, D_ATOM, D_DOT, D_LIT };
enum { NEXT_BARE, NEXT_ANGLE, NEXT_ROUTE };

static const char *const addrlist_errors[] = {
	[ADDRLIST_OK] = "ok",
	[ADDRLIST_E_CHAR] = "control character or bare CR/LF",
	[ADDRLIST_E_QUOTE] = "unterminated quoted string",
	[ADDRLIST_E_COMMENT] = "unbalanced comment",
	[ADDRLIST_E_LITERAL] = "malformed domain literal",
	[ADDRLIST_E_ENCODED] = "encoded-word in an address or across a token",
	[ADDRLIST_E_SYNTAX] = "unexpected character",
	[ADDRLIST_E_PHRASE] = "display name without an address",
	[ADDRLIST_E_DOMAIN] = "missing or malformed domain",
	[ADDRLIST_E_LOCAL] = "malformed local part",
	[ADDRLIST_E_ANGLE] = "malformed angle address",
	[ADDRLIST_E_GROUP] = "nested or unterminated group",
	[ADDRLIST_E_EMPTY] = "no address",
};

const char *addrlist_strerror(enum addrlist_error e)
{
	if ((size_t)e >= sizeof(addrlist_errors) / sizeof(addrlist_errors[0]))
		return "?";
	return addrlist_errors[e];
}

void addrlist_init(struct addrlist *a)
{
	memset(a, 0, sizeof(*a));
	a->lex = L_TOP;
	a->gram = G_START;
}

void addrlist_free(struct addrlist *a)
{
	buf_free(&a->addrs);
	buf_free(&a->tok);
	buf_free(&a->cur);
	a->naddrs = 0;
}

const char *addrlist_next(const struct addrlist *a, const char *prev)
{
	const char *p = (const char *)buf_data(&a->addrs);
	if (a->naddrs == 0 || p == NULL)
		return NULL;
	if (prev == NULL)
		return p;
	const char *next = prev + strlen(prev) + 1;
	return next < p + buf_len(&a->addrs) ? next : NULL;
}

static void addrlist_fail(struct addrlist *a, enum addrlist_error e)
{
	if (a->error == ADDRLIST_OK) {
		a->error = e;
		a->error_at = a->pos;
	}
	a->lex = L_DONE;
}

/* RFC 5322 §3.2.3 atext, plus UTF-8 (RFC 6532 §3.2). */
static bool addrlist_atext(unsigned c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80)
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", (int)c) != NULL;
}

static bool addrlist_wsp(unsigned c)
{
	return c == ' ' || c == '\t';
}

/* Controls other than HTAB, and DEL: never inside an address list. */
static bool addrlist_ctl(unsigned c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static bool addrlist_xdigit(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static const uint8_t *addrlist_find_qe(const uint8_t *s, size_t from, size_t n)
{
	for (size_t i = from; i + 1 < n; i++)
		if (s[i] == '?' && s[i + 1] == '=')
			return s + i;
	return NULL;
}

/* Where a reader that decodes "=?...?=" greedily takes the encoded-word
 * starting at s[p] to end: at the first "?=" after the "=?", or one further
 * when the text starts with a hex escape right after the encoding letter
 * ("=?cs?q?=41?="); Python's email reads it so. False when that end is not
 * inside s[0..n): the reader would read past the token. */
static bool addrlist_ew_end(const uint8_t *s, size_t n, size_t p, size_t *end_r)
{
	const uint8_t *q = addrlist_find_qe(s, p + 2, n);
	if (q == NULL)
		return false;
	size_t qi = (size_t)(q - s);
	size_t marks = 0;
	for (size_t i = p + 2; i < qi; i++)
		marks += s[i] == '?';
	if (marks < 2 && qi + 3 < n && addrlist_xdigit(s[qi + 2]) && addrlist_xdigit(s[qi + 3])) {
		q = addrlist_find_qe(s, qi + 2, n);
		if (q == NULL)
			return false;
		qi = (size_t)(q - s);
	}
	*end_r = qi + 2;
	return true;
}

/* An atom or quoted-string content s[0..n) holds an encoded-word that a
 * greedy reader would extend past it. Such readers look for "=?" at the
 * start of an atom, and in a quoted string at its start, after whitespace
 * and right after another encoded-word. */
static bool addrlist_ew_escapes(const uint8_t *s, size_t n, bool quoted)
{
	bool at = true;
	for (size_t i = 0; i < n;) {
		if (at && i + 1 < n && s[i] == '=' && s[i + 1] == '?') {
			size_t end;
			if (!addrlist_ew_end(s, n, i, &end))
				return true;
			i = end;
			continue;
		}
		at = quoted && addrlist_wsp(s[i]);
		if (!quoted && !at)
			return false;
		i++;
	}
	return false;
}

static bool addrlist_has_ew(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (s[i] == '=' && s[i + 1] == '?')
			return true;
	return false;
}

/* ---- the grammar ---- */

static void addrlist_commit(struct addrlist *a)
{
	buf_append(&a->addrs, buf_data(&a->cur), buf_len(&a->cur));
	buf_append(&a->addrs, "", 1);
	a->naddrs++;
	a->any = true;
	buf_reset(&a->cur);
}

static void addrlist_word(struct addrlist *a)
{
	buf_append(&a->cur, buf_data(&a->tok), buf_len(&a->tok));
	if (addrlist_has_ew(buf_data(&a->tok), buf_len(&a->tok)))
		a->local_ew = true;
	a->last_dot = false;
}

static void addrlist_start_domain(struct addrlist *a, int next)
{
	if (next != NEXT_ROUTE) {
		if (a->local_ew) {
			addrlist_fail(a, ADDRLIST_E_ENCODED);
			return;
		}
		buf_append(&a->cur, "@", 1);
	}
	a->dom = D_FIRST;
	a->dom_next = next;
	a->gram = G_DOMAIN;
}

/* A mailbox or group ended with ',' ';' or the end of the body (t). */
static void addrlist_separator(struct addrlist *a, int t, int code_other)
{
	switch (t) {
	case ',':
		a->gram = G_START;
		return;
	case ';':
		if (!a->in_group) {
			addrlist_fail(a, ADDRLIST_E_SYNTAX);
			return;
		}
		a->in_group = false;
		a->gram = G_AFTER_GROUP;
		return;
	case T_END:
		if (a->in_group)
			addrlist_fail(a, ADDRLIST_E_GROUP);
		return;
	default:
		addrlist_fail(a, (enum addrlist_error)code_other);
	}
}

static void addrlist_domain_done(struct addrlist *a, int t)
{
	switch (a->dom_next) {
	case NEXT_BARE:
		if (t != ',' && t != ';' && t != T_END) {
			addrlist_fail(a, ADDRLIST_E_SYNTAX);
			return;
		}
		addrlist_commit(a);
		addrlist_separator(a, t, ADDRLIST_E_SYNTAX);
		return;
	case NEXT_ANGLE:
		if (t != '>') {
			addrlist_fail(a, ADDRLIST_E_ANGLE);
			return;
		}
		addrlist_commit(a);
		a->gram = G_AFTER_ANGLE;
		return;
	case NEXT_ROUTE:
		if (t == ',')
			a->gram = G_ROUTE_SEP;
		else if (t == ':') {
			a->gram = G_ANGLE_LOCAL;
			a->last_dot = true; /* a word must come first */
			a->local_ew = false;
			buf_reset(&a->cur);
		} else
			addrlist_fail(a, ADDRLIST_E_ANGLE);
		return;
	}
}

static void addrlist_domain(struct addrlist *a, int t)
{
	bool store = a->dom_next != NEXT_ROUTE;
	const uint8_t *tk = buf_data(&a->tok);
	size_t tn = buf_len(&a->tok);
	switch (a->dom) {
	case D_FIRST:
	case D_DOT:
		if (t == T_ATOM || (t == T_LIT && a->dom == D_FIRST)) {
			if (addrlist_has_ew(tk, tn)) {
				addrlist_fail(a, ADDRLIST_E_ENCODED);
				return;
			}
			if (store)
				buf_append(&a->cur, tk, tn);
			a->dom = t == T_ATOM ? D_ATOM : D_LIT;
			return;
		}
		addrlist_fail(a, ADDRLIST_E_DOMAIN);
		return;
	case D_ATOM:
		if (t == '.') {
			if (store)
				buf_append(&a->cur, ".", 1);
			a->dom = D_DOT;
			return;
		}
		addrlist_domain_done(a, t);
		return;
	case D_LIT:
		addrlist_domain_done(a, t);
		return;
	}
}

static void addrlist_token(struct addrlist *a, int t)
{
	bool word = t == T_ATOM || t == T_QSTR;
	switch (a->gram) {
	case G_START:
		if (word) {
			buf_reset(&a->cur);
			a->local_ok = true;
			a->local_ew = false;
			addrlist_word(a);
			a->gram = G_WORDS;
		} else if (t == '<') {
			a->gram = G_ANGLE;
		} else if (t == ',' || t == ';') {
			/* obs-addr-list / obs-group-list: empty elements */
			addrlist_separator(a, t, ADDRLIST_E_SYNTAX);
		} else if (t == T_END) {
			if (a->in_group)
				addrlist_fail(a, ADDRLIST_E_GROUP);
			else if (!a->any)
				addrlist_fail(a, ADDRLIST_E_EMPTY);
		} else if (t == '@' || t == '.') {
			addrlist_fail(a, ADDRLIST_E_LOCAL);
		} else {
			addrlist_fail(a, t == ':' ? ADDRLIST_E_GROUP : ADDRLIST_E_SYNTAX);
		}
		return;
	case G_WORDS:
		if (word) {
			if (!a->last_dot)
				a->local_ok = false; /* two words in a row: a display name */
			addrlist_word(a);
		} else if (t == '.') {
			if (a->last_dot)
				a->local_ok = false;
			buf_append(&a->cur, ".", 1);
			a->last_dot = true;
		} else if (t == '<') {
			/* what came before was a display name (obs-phrase allows
			   dots after its first word) */
			buf_reset(&a->cur);
			a->gram = G_ANGLE;
		} else if (t == '@') {
			if (!a->local_ok || a->last_dot)
				addrlist_fail(a, ADDRLIST_E_LOCAL);
			else
				addrlist_start_domain(a, NEXT_BARE);
		} else if (t == ':') {
			if (a->in_group) {
				addrlist_fail(a, ADDRLIST_E_GROUP);
				return;
			}
			a->in_group = true;
			a->any = true;
			buf_reset(&a->cur);
			a->gram = G_START;
		} else if (t == ',' || t == ';' || t == T_END) {
			addrlist_fail(a, ADDRLIST_E_PHRASE);
		} else {
			addrlist_fail(a, ADDRLIST_E_SYNTAX);
		}
		return;
	case G_ANGLE:
		buf_reset(&a->cur);
		a->local_ew = false;
		if (word) {
			addrlist_word(a);
			a->gram = G_ANGLE_LOCAL;
		} else if (t == '@') {
			addrlist_start_domain(a, NEXT_ROUTE);
		} else if (t == ',') {
			a->gram = G_ROUTE_LEAD;
		} else if (t == '.') {
			addrlist_fail(a, ADDRLIST_E_LOCAL);
		} else {
			addrlist_fail(a, ADDRLIST_E_ANGLE);
		}
		return;
	case G_ROUTE_LEAD:
	case G_ROUTE_SEP:
		if (t == ',')
			return;
		if (t == '@')
			addrlist_start_domain(a, NEXT_ROUTE);
		else if (t == ':' && a->gram == G_ROUTE_SEP)
			addrlist_domain_done(a, t);
		else
			addrlist_fail(a, ADDRLIST_E_ANGLE);
		return;
	case G_ANGLE_LOCAL:
		if (word) {
			if (!a->last_dot) {
				addrlist_fail(a, ADDRLIST_E_LOCAL);
				return;
			}
			addrlist_word(a);
		} else if (t == '.') {
			if (a->last_dot) {
				addrlist_fail(a, ADDRLIST_E_LOCAL);
				return;
			}
			buf_append(&a->cur, ".", 1);
			a->last_dot = true;
		} else if (t == '@') {
			if (a->last_dot)
				addrlist_fail(a, ADDRLIST_E_LOCAL);
			else
				addrlist_start_domain(a, NEXT_ANGLE);
		} else if (t == '>') {
			addrlist_fail(a, ADDRLIST_E_DOMAIN);
		} else {
			addrlist_fail(a, ADDRLIST_E_ANGLE);
		}
		return;
	case G_DOMAIN:
		addrlist_domain(a, t);
		return;
	case G_AFTER_ANGLE:
		addrlist_separator(a, t, ADDRLIST_E_SYNTAX);
		return;
	case G_AFTER_GROUP:
		if (t == ';')
			addrlist_fail(a, ADDRLIST_E_SYNTAX);
		else
			addrlist_separator(a, t, ADDRLIST_E_SYNTAX);
		return;
	}
}

/* ---- the lexer ---- */

static void addrlist_end_atom(struct addrlist *a)
{
	if (addrlist_ew_escapes(buf_data(&a->tok), buf_len(&a->tok), false)) {
		addrlist_fail(a, ADDRLIST_E_ENCODED);
		return;
	}
	a->lex = L_TOP;
	addrlist_token(a, T_ATOM);
}

static void addrlist_end_quoted(struct addrlist *a)
{
	buf_append(&a->tok, "\"", 1);
	/* the content, raw, between the quotes */
	if (addrlist_ew_escapes(buf_data(&a->tok) + 1, buf_len(&a->tok) - 2, true)) {
		addrlist_fail(a, ADDRLIST_E_ENCODED);
		return;
	}
	a->lex = L_TOP;
	addrlist_token(a, T_QSTR);
}

static void addrlist_fold(struct addrlist *a)
{
	a->lex_resume = a->lex;
	a->lex = L_CR;
}

/* One octet; an atom ends at the first octet that is not atext, which is
 * then read again in L_TOP. */
static void addrlist_byte(struct addrlist *a, uint8_t c)
{
	for (;;) {
		switch (a->lex) {
		case L_DONE:
			return;
		case L_CR:
			if (c == '\n')
				a->lex = L_LF;
			else
				addrlist_fail(a, ADDRLIST_E_CHAR);
			return;
		case L_LF:
			if (!addrlist_wsp(c)) {
				addrlist_fail(a, ADDRLIST_E_CHAR);
				return;
			}
			a->lex = a->lex_resume;
			continue; /* the WSP belongs to where the fold is */
		case L_ATOM:
			if (addrlist_atext(c)) {
				buf_append(&a->tok, &c, 1);
				return;
			}
			addrlist_end_atom(a);
			continue;
		case L_QUOTED:
			if (c == '"')
				addrlist_end_quoted(a);
			else if (c == '\\') {
				buf_append(&a->tok, &c, 1);
				a->lex = L_QUOTED_QP;
			} else if (c == '\r')
				addrlist_fold(a);
			else if (addrlist_ctl(c))
				addrlist_fail(a, ADDRLIST_E_CHAR);
			else
				buf_append(&a->tok, &c, 1);
			return;
		case L_QUOTED_QP:
		case L_COMMENT_QP:
			/* quoted-pair = "\" (VCHAR / WSP), RFC 5322 §3.2.1; not
			   the obsolete controls, CR or LF */
			if (addrlist_ctl(c)) {
				addrlist_fail(a, ADDRLIST_E_CHAR);
				return;
			}
			if (a->lex == L_QUOTED_QP) {
				buf_append(&a->tok, &c, 1);
				a->lex = L_QUOTED;
			} else {
				a->lex = L_COMMENT;
			}
			return;
		case L_COMMENT:
			if (c == '(')
				a->depth++;
			else if (c == ')') {
				if (--a->depth == 0)
					a->lex = L_TOP;
			} else if (c == '\\')
				a->lex = L_COMMENT_QP;
			else if (c == '\r')
				addrlist_fold(a);
			else if (addrlist_ctl(c))
				addrlist_fail(a, ADDRLIST_E_CHAR);
			return;
		case L_LITERAL:
			if (c == ']') {
				buf_append(&a->tok, &c, 1);
				a->lex = L_TOP;
				addrlist_token(a, T_LIT);
			} else if (addrlist_wsp(c)) {
				/* FWS inside a domain literal is not part of it */
			} else if (c == '\r') {
				addrlist_fold(a);
			} else if (addrlist_ctl(c)) {
				addrlist_fail(a, ADDRLIST_E_CHAR);
			} else if (c == '[' || c == '\\') {
				addrlist_fail(a, ADDRLIST_E_LITERAL);
			} else {
				buf_append(&a->tok, &c, 1);
			}
			return;
		case L_TOP:
			if (addrlist_wsp(c))
				return;
			if (c == '\r') {
				addrlist_fold(a);
				return;
			}
			if (addrlist_ctl(c)) {
				addrlist_fail(a, ADDRLIST_E_CHAR);
				return;
			}
			if (addrlist_atext(c)) {
				buf_reset(&a->tok);
				buf_append(&a->tok, &c, 1);
				a->lex = L_ATOM;
				return;
			}
			switch (c) {
			case '(':
				a->depth = 1;
				a->lex = L_COMMENT;
				return;
			case '"':
				buf_reset(&a->tok);
				buf_append(&a->tok, &c, 1);
				a->lex = L_QUOTED;
				return;
			case '[':
				buf_reset(&a->tok);
				buf_append(&a->tok, &c, 1);
				a->lex = L_LITERAL;
				return;
			case ')':
				addrlist_fail(a, ADDRLIST_E_COMMENT);
				return;
			case ']':
				addrlist_fail(a, ADDRLIST_E_LITERAL);
				return;
			case '<':
			case '>':
			case '@':
			case ',':
			case ';':
			case ':':
			case '.':
				addrlist_token(a, c);
				return;
			default: /* '\\' */
				addrlist_fail(a, ADDRLIST_E_SYNTAX);
				return;
			}
		}
	}
}

bool addrlist_feed(struct addrlist *a, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && a->lex != L_DONE; i++) {
		addrlist_byte(a, p[i]);
		a->pos++;
	}
	return a->error == ADDRLIST_OK;
}

bool addrlist_finish(struct addrlist *a)
{
	switch (a->lex) {
	case L_DONE:
		break;
	case L_ATOM:
		addrlist_end_atom(a);
		break;
	case L_QUOTED:
	case L_QUOTED_QP:
		addrlist_fail(a, ADDRLIST_E_QUOTE);
		break;
	case L_COMMENT:
	case L_COMMENT_QP:
		addrlist_fail(a, ADDRLIST_E_COMMENT);
		break;
	case L_LITERAL:
		addrlist_fail(a, ADDRLIST_E_LITERAL);
		break;
	case L_CR:
	case L_LF:
		addrlist_fail(a, ADDRLIST_E_CHAR);
		break;
	default:
		break;
	}
	if (a->error == ADDRLIST_OK && a->lex != L_DONE)
		addrlist_token(a, T_END);
	a->lex = L_DONE;
	if (a->error != ADDRLIST_OK) {
		buf_free(&a->addrs);
		a->naddrs = 0;
	}
	return a->error == ADDRLIST_OK;
}

bool addrlist_parse(struct addrlist *a, const uint8_t *p, size_t n)
{
	addrlist_feed(a, p, n);
	return addrlist_finish(a);
}
