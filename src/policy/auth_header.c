/* policy/auth_header: the relay_auth_header field (auth_header.h). */
#include "config.h"
#include "policy/auth_header.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "core/log.h"

enum { HF_LINE_START, HF_MATCH, HF_PASS, HF_SKIP, HF_BODY };

void auth_header_filter_init(struct auth_header_filter *f, const char *name)
{
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->nlen = strlen(name);
	f->state = HF_LINE_START;
}

/* A field is "NAME" + optional WSP (RFC 5322 §4.5.1 obsolete syntax) + ':',
 * matched case-insensitively (§1.2.2); continuation lines belong to it. */
void auth_header_filter_run(struct auth_header_filter *f, const uint8_t *p, size_t n,
			    struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		switch (f->state) {
		case HF_BODY:
			buf_append(out, p + i, n - i);
			return;
		case HF_LINE_START:
			if (c == '\r' || c == '\n') {
				/* the empty line: the header section ends */
				f->state = HF_BODY;
				buf_append(out, p + i, n - i);
				return;
			}
			if (c == ' ' || c == '\t') {
				/* a continuation: it follows its field's fate */
				f->state = f->matched == SIZE_MAX ? HF_SKIP : HF_PASS;
				if (f->state == HF_PASS)
					buf_append(out, &c, 1);
				continue;
			}
			f->matched = 0;
			f->npend = 0;
			f->state = HF_MATCH;
			/* fall through */
		case HF_MATCH:
			if (f->matched < f->nlen) {
				if (tolower(c) == tolower((unsigned char)f->name[f->matched])) {
					f->pend[f->npend++] = (char)c;
					f->matched++;
					continue;
				}
			} else if (c == ':') {
				f->npend = 0;
				f->matched = SIZE_MAX; /* dropped: so are its continuations */
				f->state = HF_SKIP;
				continue;
			} else if ((c == ' ' || c == '\t') && f->npend < sizeof(f->pend)) {
				f->pend[f->npend++] = (char)c;
				continue;
			}
			/* not our field: give back what was held */
			buf_append(out, f->pend, f->npend);
			f->npend = 0;
			f->matched = 0;
			f->state = HF_PASS;
			buf_append(out, &c, 1);
			if (c == '\n')
				f->state = HF_LINE_START;
			continue;
		case HF_PASS:
			buf_append(out, &c, 1);
			if (c == '\n') {
				f->state = HF_LINE_START;
				f->matched = 0;
			}
			continue;
		case HF_SKIP:
			if (c == '\n')
				f->state = HF_LINE_START; /* matched stays SIZE_MAX */
			continue;
		}
	}
}

/* A header field body: no line breaks, no controls (as the Received: field
 * shows the login). */
static const char *auth_header_user(const char *user, char *tmp, size_t tmpsz)
{
	if (user == NULL || user[0] == '\0')
		return NULL;
	return log_sanitize(tmp, tmpsz, user, strlen(user));
}

size_t auth_header_added(const char *name, const char *user)
{
	char tmp[AUTH_HEADER_USER_MAX];
	const char *u = auth_header_user(user, tmp, sizeof(tmp));
	if (name == NULL || u == NULL)
		return 0;
	return strlen(name) + strlen(u) + 4;
}

void auth_header_write(const char *name, const char *user, const uint8_t *h, size_t n,
		       struct buf *out)
{
	char tmp[AUTH_HEADER_USER_MAX];
	const char *u = auth_header_user(user, tmp, sizeof(tmp));
	if (u != NULL)
		buf_printf(out, "%s: %s\r\n", name, u);
	struct auth_header_filter f;
	auth_header_filter_init(&f, name);
	auth_header_filter_run(&f, h, n, out);
}
