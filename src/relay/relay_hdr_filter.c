/* relay_hdr_filter: drops the client's relay_auth_header fields from the
 * header section as it streams by (relay/relay.h). */
#include "config.h"
#include "relay/relay.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"

enum { HF_LINE_START, HF_MATCH, HF_PASS, HF_SKIP, HF_BODY };

void relay_hdr_filter_init(struct relay_hdr_filter *f, const char *name)
{
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->nlen = strlen(name);
	f->state = HF_LINE_START;
}

/* A field is "NAME" + optional WSP (RFC 5322 §4.5.1 obsolete syntax) + ':',
 * matched case-insensitively (§1.2.2); continuation lines belong to it. */
void relay_hdr_filter_run(struct relay_hdr_filter *f, const uint8_t *p, size_t n, struct buf *out)
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

