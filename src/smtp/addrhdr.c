/* smtp/addrhdr: address header fields rebuilt as Postfix's generic(5)
 * rewriting rebuilds them (contract in addrhdr.h, docs/generic.md).
 *
 * The field body becomes a token list, then, scanning it from right to
 * left, a list in which each address is one ADDR node holding its tokens;
 * anything not understood stays where it was. Nodes live in one array and
 * refer to each other by index (0 = none), so the list costs O(length). */
#include "config.h"

#include "smtp/addrhdr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
	AH_ATOM = 256,
	AH_QSTRING,
	AH_COMMENT,
	AH_DOMLIT,
	AH_ADDR,
	AH_STARTGRP,
};

#define AH_WORD (1 << 0)  /* a word may come next */
#define AH_GROUP (1 << 1) /* inside a group (name: members;) */

/* single-character operators: RFC 822 specials and Postfix's |%! */
static const char addrhdr_ops[] = "|%!()<>@,;:\\\".[]";
/* Non-address text allowed per comma-separated element before it is
 * reduced to <address> (Postfix's guard for old Sendmail buffers). */
#define AH_NONADDR_MAX 250
/* Rebuilt lines are joined while they stay shorter than this. */
#define AH_FOLD_COLUMNS 70

struct ah_node {
	int type; /* an operator character, an AH_* or 0 (a sentinel) */
	uint32_t prev, next, head, tail, owner;
	uint32_t text; /* offset of the NUL-terminated text in the pool */
	bool mapped;   /* ADDR: text is the replacement, in internal form */
};

struct ah {
	struct ah_node *n;
	uint32_t count, cap;
	struct buf pool;
};

static bool addrhdr_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool addrhdr_op(int c)
{
	return c != 0 && strchr(addrhdr_ops, c) != NULL;
}

static uint32_t addrhdr_new(struct ah *a, int type)
{
	if (a->count == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 64;
		a->n = xrealloc(a->n, a->cap * sizeof(*a->n));
	}
	uint32_t i = a->count++;
	memset(&a->n[i], 0, sizeof(a->n[i]));
	a->n[i].type = type;
	a->n[i].text = (uint32_t)buf_len(&a->pool);
	buf_append(&a->pool, "", 1);
	return i;
}

static const char *addrhdr_text(const struct ah *a, uint32_t i)
{
	return (const char *)buf_data(&a->pool) + a->n[i].text;
}

/* The text of the node being scanned grows at the end of the pool (its NUL
 * is rewritten each time). */
static void addrhdr_addch(struct ah *a, int c)
{
	a->pool.len--;
	char two[2] = {(char)c, 0};
	buf_append(&a->pool, two, 2);
}

/* ---- list surgery (indices; node 0 is "none") ---- */

#define N(i) (a->n[i])

static uint32_t addrhdr_unlink(struct ah *a, uint32_t t)
{
	uint32_t prev = N(t).prev, next = N(t).next;
	if (prev)
		N(prev).next = next;
	if (next)
		N(next).prev = prev;
	N(t).prev = N(t).next = 0;
	return prev;
}

/* Puts the single node t2 before t1. */
static uint32_t addrhdr_prepend(struct ah *a, uint32_t t1, uint32_t t2)
{
	uint32_t prev = N(t1).prev;
	if (prev)
		N(prev).next = t2;
	N(t2).prev = prev;
	N(t2).owner = N(t1).owner;
	N(t2).next = t1;
	N(t1).prev = t2;
	return t2;
}

static void addrhdr_cut_before(struct ah *a, uint32_t t)
{
	uint32_t prev = N(t).prev;
	if (prev) {
		N(prev).next = 0;
		N(t).prev = 0;
	}
}

/* Puts the list t2... after t1. The lists handed over here are either one
 * fresh node or the rest of the top-level list, whose owner is already
 * t1's: only a lone node needs its owner set, so no walk is needed. */
static void addrhdr_append(struct ah *a, uint32_t t1, uint32_t t2)
{
	uint32_t next = N(t1).next;
	N(t1).next = t2;
	N(t2).prev = t1;
	if (N(t2).next == 0) {
		N(t2).owner = N(t1).owner;
		N(t2).next = next;
		if (next)
			N(next).prev = t2;
	}
	/* else next is 0: t2 came after a cut, t1 was the list's end */
}

/* Clusters the nodes strictly between left and right under a new node of
 * type; with sync, a ',' goes before it. Returns left. */
static uint32_t addrhdr_group(struct ah *a, int type, uint32_t left, uint32_t right, int sync)
{
	uint32_t first;
	if (left == right || (first = N(left).next) == right)
		return left;
	addrhdr_cut_before(a, right);
	addrhdr_cut_before(a, first);
	uint32_t g = addrhdr_new(a, type);
	N(g).head = first;
	uint32_t t = first;
	for (;;) {
		N(t).owner = g;
		if (N(t).next == 0)
			break;
		t = N(t).next;
	}
	N(g).tail = t;
	addrhdr_append(a, left, g);
	addrhdr_append(a, g, right);
	if (sync)
		addrhdr_append(a, left, addrhdr_new(a, sync));
	return left;
}

/* ---- tokens ---- */

/* Collects into node t from s: a backslash takes the next octet as it is,
 * whitespace becomes a space; stops before an octet for which stop() is
 * true (the end included). */
static const char *addrhdr_collect(struct ah *a, const char *s, const char *end,
				   bool (*stop)(int c, int arg), int arg)
{
	while (s < end) {
		int c = (unsigned char)*s;
		if (c == '\\') {
			if (++s == end)
				break;
			c = (unsigned char)*s;
		} else if (stop(c, arg)) {
			break;
		}
		addrhdr_addch(a, addrhdr_space(c) ? ' ' : c);
		s++;
	}
	return s;
}

static bool addrhdr_stop_at(int c, int arg)
{
	return c == arg;
}

static bool addrhdr_stop_atom(int c, int arg)
{
	(void)arg;
	return addrhdr_space(c) || addrhdr_op(c);
}

/* Comments are kept in their external form, nested ones and backslash
 * pairs included. */
static const char *addrhdr_comment(struct ah *a, const char *s, const char *end)
{
	int level = 1;
	addrhdr_addch(a, '(');
	while (s < end) {
		int c = (unsigned char)*s++;
		addrhdr_addch(a, c);
		if (c == '(') {
			level++;
		} else if (c == ')') {
			if (--level == 0)
				break;
		} else if (c == '\\') {
			if (s == end)
				break;
			addrhdr_addch(a, (unsigned char)*s++);
		}
	}
	return s;
}

/* An atom holding a space, a control or an operator is written quoted
 * (octets above 127 are left alone). */
static void addrhdr_quote_atom(struct ah *a, uint32_t t)
{
	for (const char *p = addrhdr_text(a, t); *p; p++) {
		int c = (unsigned char)*p;
		if (c == ' ' || c < 32 || c == 127 || addrhdr_op(c)) {
			N(t).type = AH_QSTRING;
			return;
		}
	}
}

/* Tokenizes s[0..end) into a list; returns its first node (0: empty) and
 * its last in *tail_r. */
static uint32_t addrhdr_scan(struct ah *a, const char *s, const char *end, uint32_t *tail_r)
{
	uint32_t head = 0, tail = 0;
	while (s < end) {
		int c = (unsigned char)*s++;
		uint32_t t;
		if (addrhdr_space(c))
			continue;
		if (c == '(') {
			t = addrhdr_new(a, AH_COMMENT);
			s = addrhdr_comment(a, s, end);
		} else if (c == '[' || c == '"') {
			t = addrhdr_new(a, c == '[' ? AH_DOMLIT : AH_QSTRING);
			s = addrhdr_collect(a, s, end, addrhdr_stop_at, c == '[' ? ']' : '"');
			if (s < end)
				s++;
		} else if (c != '\\' && addrhdr_op(c)) {
			t = addrhdr_new(a, c);
		} else {
			t = addrhdr_new(a, AH_ATOM);
			s = addrhdr_collect(a, s - 1, end, addrhdr_stop_atom, 0);
			addrhdr_quote_atom(a, t);
		}
		if (head == 0) {
			head = t;
		} else {
			N(tail).next = t;
			N(t).prev = tail;
		}
		tail = t;
	}
	*tail_r = tail;
	return head;
}

/* ---- the parse: right to left, as Postfix's tok822_parse ---- */

static bool addrhdr_word(int type)
{
	return type == AH_ATOM || type == AH_QSTRING || type == AH_DOMLIT;
}

/* Returns the first node of the parsed list (0: empty). */
static uint32_t addrhdr_parse(struct ah *a, const char *s, const char *end)
{
	uint32_t last;
	uint32_t first = addrhdr_scan(a, s, end, &last);
	if (first == 0)
		return 0;
	uint32_t head = addrhdr_new(a, 0), tail = addrhdr_new(a, 0);
	N(head).next = first;
	N(first).prev = head;
	N(last).next = tail;
	N(tail).prev = last;

	int state = AH_WORD;
	uint32_t right = tail, tp = N(tail).prev;
	while (N(tp).type) {
		int type = N(tp).type;
		if (type == AH_COMMENT) { /* moved to the side */
			uint32_t prev = addrhdr_unlink(a, tp);
			right = addrhdr_prepend(a, right, tp);
			tp = prev;
			continue;
		} else if (type == ';') { /* the end of a group */
			right = addrhdr_group(a, AH_ADDR, tp, right, ',');
			state = AH_GROUP | AH_WORD;
		} else if (type == ':' && (state & AH_GROUP)) {
			N(tp).type = AH_STARTGRP;
			addrhdr_group(a, AH_ADDR, tp, right, 0);
			while (N(tp).type && N(tp).type != ',')
				tp = N(tp).prev;
			right = tp;
			continue;
		} else if (type == '>') { /* the end of a <route-addr> */
			right = addrhdr_group(a, AH_ADDR, tp, right, ',');
			while (N(tp).type && N(tp).type != '<') {
				if (N(tp).type == AH_COMMENT) {
					uint32_t prev = addrhdr_unlink(a, tp);
					right = addrhdr_prepend(a, right, tp);
					tp = prev;
					continue;
				}
				tp = N(tp).prev;
			}
			addrhdr_group(a, AH_ADDR, tp, right, 0);
			while (N(tp).type &&
			       (N(tp).type > 0xff || strchr(">;,:", N(tp).type) == NULL))
				tp = N(tp).prev;
			right = tp;
			state |= AH_WORD;
			continue;
		} else if (addrhdr_word(type)) {
			if ((state & AH_WORD) == 0) {
				/* a->n may move inside addrhdr_group() */
				uint32_t left = addrhdr_group(a, AH_ADDR, tp, right, ',');
				right = N(left).next;
			}
			state &= ~AH_WORD;
		} else if (type == ',') {
			right = addrhdr_group(a, AH_ADDR, tp, right, 0);
			state |= AH_WORD;
		} else {
			state |= AH_WORD;
		}
		tp = N(tp).prev;
	}
	addrhdr_group(a, AH_ADDR, tp, right, 0);
	/* drop the sentinels */
	uint32_t list = N(head).next != tail ? N(head).next : 0;
	if (list) {
		N(list).prev = 0;
		N(N(tail).prev).next = 0;
	}
	return list;
}

/* ---- writing ---- */

/* The tokens of one address, as Postfix's internal form: no spaces. */
static void addrhdr_internalize(const struct ah *a, uint32_t t, struct buf *out)
{
	for (; t; t = N(t).next) {
		switch (N(t).type) {
		case AH_ADDR:
			addrhdr_internalize(a, N(t).head, out);
			break;
		case AH_COMMENT:
		case AH_ATOM:
		case AH_QSTRING:
			buf_append_str(out, addrhdr_text(a, t));
			break;
		case AH_DOMLIT:
			buf_printf(out, "[%s]", addrhdr_text(a, t));
			break;
		case AH_STARTGRP:
			buf_append_str(out, ":");
			break;
		default: {
			char c = (char)N(t).type;
			buf_append(out, &c, 1);
		}
		}
	}
}

static void addrhdr_addr_internal(const struct ah *a, uint32_t addr, struct buf *out)
{
	if (N(addr).mapped)
		buf_append_str(out, addrhdr_text(a, addr));
	else if (N(addr).type == AH_ADDR)
		addrhdr_internalize(a, N(addr).head, out);
}

static bool addrhdr_plain(int type)
{
	return type == AH_ATOM || type == AH_QSTRING || type == AH_COMMENT || type == AH_DOMLIT ||
	       type == AH_ADDR;
}

static bool addrhdr_space_after(const struct ah *a, uint32_t t)
{
	uint32_t next = N(t).next;
	if (next == 0 || N(t).owner != 0)
		return false;
	if (N(t).type == ',' || N(t).type == AH_STARTGRP || N(next).type == '<')
		return true;
	return addrhdr_plain(N(t).type) && addrhdr_plain(N(next).type);
}

static void addrhdr_copy_quoted(struct buf *out, const char *s, const char *special)
{
	for (; *s; s++) {
		if (strchr(special, *s) != NULL)
			buf_append(out, "\\", 1);
		buf_append(out, s, 1);
	}
}

static bool addrhdr_dot_string(const char *s, const char *end)
{
	if (s == end || *s == '.')
		return false;
	for (const char *p = s; p < end; p++) {
		int c = (unsigned char)*p;
		if (c == '.' && p + 1 < end && p[1] == '.')
			return false;
		if (c == ' ' || c < 32 || c == 127 || strchr("()<>@,;:\\\"[]", c) != NULL)
			return false;
	}
	return end[-1] != '.';
}

void addrhdr_quote_local(const char *internal, struct buf *out)
{
	const char *start = internal, *colon;
	/* a source route before the local part stays as it is */
	if (internal[0] == '@' && (colon = strchr(internal, ':')) != NULL)
		start = colon + 1;
	const char *end = strrchr(start, '@');
	if (end == NULL)
		end = start + strlen(start);
	if (addrhdr_dot_string(start, end)) {
		buf_append_str(out, internal);
		return;
	}
	buf_append(out, internal, (size_t)(start - internal));
	buf_append(out, "\"", 1);
	for (const char *p = start; p < end; p++) {
		if (*p == '"' || *p == '\\' || *p == '\r')
			buf_append(out, "\\", 1);
		buf_append(out, p, 1);
	}
	buf_append(out, "\"", 1);
	buf_append_str(out, end);
}

/* An element (text between commas) with more than AH_NONADDR_MAX octets
 * besides its address is reduced to <address>. */
struct ah_elem {
	size_t start;  /* where the element began in out */
	uint32_t addr; /* its address node, or its "<" of "<>"; 0: none yet */
	size_t addr_len;
};

static void addrhdr_enforce(const struct ah *a, struct ah_elem *e, struct buf *out)
{
	if (e->addr == 0 || buf_len(out) - e->addr_len <= e->start + AH_NONADDR_MAX)
		return;
	out->len = e->start;
	buf_append(out, "<", 1);
	struct buf in = BUF_INIT;
	addrhdr_addr_internal(a, e->addr, &in);
	buf_append(&in, "", 1);
	addrhdr_quote_local((const char *)buf_data(&in), out);
	buf_free(&in);
	buf_append(out, ">", 1);
}

/* The list in external form, a '\n' after each ',' (Postfix's
 * tok822_externalize with TOK822_STR_HEAD). */
static void addrhdr_externalize(const struct ah *a, uint32_t t, struct buf *out)
{
	struct ah_elem e = {.start = buf_len(out)};
	for (; t; t = N(t).next) {
		switch (N(t).type) {
		case ',':
			addrhdr_enforce(a, &e, out);
			buf_append(out, ",\n", 2);
			e = (struct ah_elem){.start = buf_len(out)};
			continue;
		case AH_ADDR: {
			e.addr = t;
			struct buf in = BUF_INIT;
			addrhdr_addr_internal(a, t, &in);
			buf_append(&in, "", 1);
			size_t before = buf_len(out);
			addrhdr_quote_local((const char *)buf_data(&in), out);
			e.addr_len = buf_len(out) - before;
			buf_free(&in);
			break;
		}
		case AH_ATOM:
		case AH_COMMENT:
			buf_append_str(out, addrhdr_text(a, t));
			break;
		case AH_QSTRING:
			buf_append(out, "\"", 1);
			addrhdr_copy_quoted(out, addrhdr_text(a, t), "\"\\\r\n");
			buf_append(out, "\"", 1);
			break;
		case AH_DOMLIT:
			buf_append(out, "[", 1);
			addrhdr_copy_quoted(out, addrhdr_text(a, t), "\\\r\n");
			buf_append(out, "]", 1);
			break;
		case AH_STARTGRP:
			buf_append(out, ":", 1);
			break;
		case '<':
			if (N(t).next && N(N(t).next).type == '>') {
				e.addr = t;
				e.addr_len = 0;
			}
			buf_append(out, "<", 1);
			break;
		default: {
			char c = (char)N(t).type;
			buf_append(out, &c, 1);
		}
		}
		if (addrhdr_space_after(a, t))
			buf_append(out, " ", 1);
	}
	addrhdr_enforce(a, &e, out);
}

/* Joins the '\n'-separated lines of s while the joined line stays under
 * AH_FOLD_COLUMNS, then writes them with CRLF, a TAB before a continuation
 * line that does not start with whitespace. */
static void addrhdr_fold(char *s, size_t len, struct buf *out)
{
	char *end = s + len, *start = s;
	for (char *line = s; line != NULL;) {
		char *eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		if (line > start) {
			if (eol - start < AH_FOLD_COLUMNS)
				line[-1] = ' ';
			else
				start = line;
		}
		line = eol < end ? eol + 1 : NULL;
	}
	for (char *line = s; line != NULL;) {
		char *eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		if (line > s && (line == end || (*line != ' ' && *line != '\t')))
			buf_append(out, "\t", 1);
		buf_append(out, line, (size_t)(eol - line));
		buf_append(out, "\r\n", 2);
		line = eol < end ? eol + 1 : NULL;
	}
}

bool addrhdr_rewrite(const char *field, size_t len, addrhdr_map_fn *map, void *ctx, struct buf *out)
{
	const char *colon = memchr(field, ':', len);
	if (colon == NULL || memchr(field, 0, len) != NULL)
		return false;
	/* the folds as Postfix holds them: "\n" before each continuation */
	struct buf body = BUF_INIT;
	for (const char *p = colon + 1; p < field + len; p++) {
		if (*p == '\r' && p + 1 < field + len && p[1] == '\n')
			continue;
		if ((*p == '\r' || *p == '\n') &&
		    !(*p == '\n' && p > colon + 1 && p[-1] == '\r' && p + 1 < field + len &&
		      (p[1] == ' ' || p[1] == '\t'))) {
			buf_free(&body);
			return false;
		}
		buf_append(&body, p, 1);
	}
	if (buf_len(&body) == 0)
		return false;
	const char *s = (const char *)buf_data(&body);
	struct ah a = {0};
	addrhdr_new(&a, 0); /* node 0: none */
	uint32_t list = addrhdr_parse(&a, s, s + buf_len(&body));
	bool did = false;
	struct buf in = BUF_INIT, to = BUF_INIT;
	for (uint32_t t = list; t; t = a.n[t].next) {
		if (a.n[t].type != AH_ADDR)
			continue;
		buf_reset(&in);
		addrhdr_internalize(&a, a.n[t].head, &in);
		buf_append(&in, "", 1);
		buf_reset(&to);
		if (!map(ctx, (const char *)buf_data(&in), &to))
			continue;
		did = true;
		buf_append(&to, "", 1);
		a.n[t].text = (uint32_t)buf_len(&a.pool);
		a.n[t].mapped = true;
		buf_append(&a.pool, buf_data(&to), buf_len(&to));
	}
	if (did) {
		struct buf text = BUF_INIT;
		buf_append(&text, field, (size_t)(colon - field));
		buf_append(&text, ": ", 2);
		addrhdr_externalize(&a, list, &text);
		addrhdr_fold((char *)buf_data(&text), buf_len(&text), out);
		buf_free(&text);
	}
	buf_free(&in);
	buf_free(&to);
	buf_free(&body);
	buf_free(&a.pool);
	free(a.n);
	return did;
}

bool addrhdr_is_address_field(const char *name, size_t len)
{
	static const char *const names[] = {
		"Apparently-To",
		"Bcc",
		"Cc",
		"Disposition-Notification-To",
		"Errors-To",
		"From",
		"Mail-Followup-To",
		"Reply-To",
		"Resent-Bcc",
		"Resent-Cc",
		"Resent-From",
		"Resent-Reply-To",
		"Resent-Sender",
		"Resent-To",
		"Return-Path",
		"Return-Receipt-To",
		"Sender",
		"To",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
			return true;
	return false;
}
