/* control_parse: the request line (control_parse.h). Every byte is hostile:
 * the line is checked whole before any word of it is used. */
#include "config.h"
#include "control_parse.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	enum control_verb verb;
	bool arg, rest; /* takes an argument; may take a reason after it */
} control_verbs[] = {
	{"status", CONTROL_STATUS, false, false}, {"sessions", CONTROL_SESSIONS, false, false},
	{"held", CONTROL_HELD, false, false},     {"limits", CONTROL_LIMITS, true, false},
	{"hold", CONTROL_HOLD, true, true},       {"release", CONTROL_RELEASE, true, false},
	{"block", CONTROL_BLOCK, true, true},     {"unblock", CONTROL_UNBLOCK, true, false},
	{"kick", CONTROL_KICK, true, false},      {"stats", CONTROL_STATS, false, false},
};

/* A login or an address as an argument: printable ASCII, no space. */
static bool control_parse_word(const char *w)
{
	size_t n = strlen(w);
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++)
		if (w[i] <= 0x20 || w[i] >= 0x7f)
			return false;
	return true;
}

bool control_parse(const char *line, size_t len, struct control_req *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	char req[CONTROL_LINE_MAX + 1];
	if (len > CONTROL_LINE_MAX) {
		snprintf(err, errlen, "request longer than %d bytes", CONTROL_LINE_MAX);
		return false;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f) {
			snprintf(err, errlen, "request holds a control or non-ASCII byte");
			return false;
		}
	memcpy(req, line, len);
	req[len] = '\0';
	char *args[2] = {NULL, NULL};
	size_t nargs = 0;
	char *p = req, *rest = NULL;
	while (*p != '\0' && nargs < 2) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		char *w = p;
		p += strcspn(p, " ");
		if (*p != '\0')
			*p++ = '\0';
		if (nargs == 0 && !r->json && strcmp(w, "json") == 0) {
			r->json = true;
			continue;
		}
		args[nargs++] = w;
		if (nargs == 2) {
			while (*p == ' ')
				p++;
			rest = *p ? p : NULL; /* a REASON may hold spaces */
		}
	}
	if (args[0] == NULL) {
		snprintf(err, errlen, "empty request");
		return false;
	}
	size_t v = 0, nv = sizeof(control_verbs) / sizeof(control_verbs[0]);
	while (v < nv && strcmp(args[0], control_verbs[v].name) != 0)
		v++;
	if (v == nv) {
		snprintf(err, errlen,
			 "unknown verb (status, sessions, held, limits, hold, release, "
			 "block, unblock, kick, stats)");
		return false;
	}
	r->verb = control_verbs[v].verb;
	r->name = control_verbs[v].name;
	if (control_verbs[v].arg != (args[1] != NULL) || (rest != NULL && !control_verbs[v].rest)) {
		snprintf(err, errlen, "%s: wrong number of arguments", r->name);
		return false;
	}
	if (args[1] != NULL && !control_parse_word(args[1])) {
		snprintf(err, errlen, "%s: bad argument", r->name);
		return false;
	}
	if (rest != NULL && strlen(rest) >= sizeof(r->rest)) {
		snprintf(err, errlen, "%s: reason longer than %zu bytes", r->name,
			 sizeof(r->rest) - 1);
		return false;
	}
	if (args[1] != NULL) {
		r->has_arg = true;
		for (size_t i = 0; args[1][i] != '\0'; i++)
			r->arg[i] = (char)tolower((unsigned char)args[1][i]);
	}
	if (rest != NULL) {
		r->has_rest = true;
		memcpy(r->rest, rest, strlen(rest) + 1);
	}
	return true;
}
